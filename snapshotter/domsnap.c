/* vmdiskfs - snapshots of a whole libvirt domain (domsnap.h says what a
 * domain snapshot is made of and in which order it is made): names,
 * create, delete, and the undo of a failed create.  The other files of
 * domsnap are listed in domsnap-int.h.
 *
 * The parts, and the tools that make them:
 *
 *   qcow2 disks, libvirt path  virDomainSnapshotCreateXML (all writable
 *                              disks are qcow2: libvirt accepts it)
 *   qcow2 disks, own path      shut off: `qemu-img snapshot -c NAME` per
 *                              disk (qemu-img.c); running: one QMP
 *                              "transaction" of
 *                              blockdev-snapshot-internal-sync actions
 *                              (qmp.c); then the libvirt snapshot is
 *                              registered with
 *                              VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
 *   logical volumes            lvm_snapshotter.create (lvm.c)
 *   RBD images                 vd_rbd_snap_create (formats/rbd.c), one
 *                              per image while the domain is paused (or
 *                              frozen, or shut off)
 *
 * ds_create runs in phases, one function each: check the arguments,
 * take the lock, resolve the domain and classify its disks, check the
 * name is free, freeze (quiesce), pause, LVM snapshots, the qcow2 part,
 * resume and thaw.  Whatever a failed ds_create made is undone before it
 * returns (undo()): the libvirt metadata, internal snapshot tags (QMP or
 * qemu-img), LVM snapshots; a domain it paused is resumed, frozen
 * filesystems thawed.
 *
 * Threads: no state outside a call; libvirt errors are per thread.
 * ds_create and ds_delete of one domain exclude each other, across
 * threads and processes, by the flock of domsnap-lock.c (domsnap.h).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "domsnap-int.h"
#include "lvm.h"
#include "virt.h"
#include "log.h"
#include "cleanup.h"

#define NAME_MAX_BYTES 200

/* ---- Names. ---- */

bool
ds_valid_name (const char *name)
{
  const unsigned char *p = (const unsigned char *) name;
  size_t len = strlen (name);
  bool digits = true;

  if (len == 0 || len > NAME_MAX_BYTES || name[0] == '-' || name[0] == '.')
    return false;
  while (*p) {
    unsigned c = *p, need, cp, min;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f || c == '/' || c == '"' || c == '\\')
        return false;
      if (c < '0' || c > '9')
        digits = false;
      p++;
      continue;
    }
    digits = false;
    if (c >= 0xc2 && c <= 0xdf)
      need = 1, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
      need = 2, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
      need = 3, cp = c & 0x07, min = 0x10000;
    else
      return false;
    p++;
    for (; need; need--, p++) {
      if ((*p & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (*p & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
        (cp >= 0x80 && cp <= 0x9f))       /* C1 controls */
      return false;
  }
  return !digits;
}

char *
ds_default_name (int64_t t)
{
  time_t tt = (time_t) t;
  struct tm tm;
  char buf[64];

  if (!localtime_r (&tt, &tm) ||
      strftime (buf, sizeof buf, "snap-%Y%m%d-%H%M%S", &tm) == 0) {
    errno = EINVAL;
    return NULL;
  }
  return strdup (buf);
}

/* ---- Internal snapshot tags. ---- */

/* Delete the tag name of disk k however the domain runs now. */
static int
delete_tag (struct dom *m, struct dk *k, const char *name)
{
  if (m->active) {
    if (!k->node) {
      bool *want = calloc (m->nxd, sizeof *want);
      int r;
      if (!want)
        return -1;
      want[k - m->dk] = true;
      r = qmp_find_nodes (m, want);
      free (want);
      if (r < 0)
        return -1;
    }
    return qmp_delete_tag (m, k, name);
  }
  return qemu_img_snapshot (m, k, "-d", name);
}

/* ---- Create. ---- */

/* Tests make one step of ds_create fail to see that everything made
 * before it is undone: VMDISKFS_DOMSNAP_FAIL=lvm (after the LVM
 * snapshots), tags (after the own path's internal snapshots, before the
 * redefine), resume (everything made, before resuming). */
static bool
inject_failure (const char *dname, const char *step)
{
  const char *e = getenv ("VMDISKFS_DOMSNAP_FAIL");

  if (!e || strcmp (e, step) != 0)
    return false;
  vd_error ("domain %s: failing after step \"%s\" "
            "(VMDISKFS_DOMSNAP_FAIL)", dname, step);
  errno = EIO;
  return true;
}

struct create {
  struct dom m;
  bool opened;                  /* m was opened (ds_dom_open)             */
  const char *name;
  const struct ds_create_opts *opts;
  char *desc;                   /* the <description>                      */
  bool own;                     /* the own path (domsnap.h)               */
  bool memory;                  /* the libvirt part holds VM state        */
  unsigned dn;                  /* DS_DONE_* so far                       */
  virDomainSnapshotPtr snap;    /* the libvirt part, once made            */
  bool snap_redefined;          /* made by redefine: metadata only        */
  bool paused, frozen;
};

static void
undo (struct create *cr)
{
  struct dom *m = &cr->m;
  size_t i;
  int e = errno;

  if (cr->snap) {
    /* A libvirt snapshot whose tags are missing cannot be deleted
     * whole: then its metadata at least. */
    if (virDomainSnapshotDelete (cr->snap, cr->snap_redefined
                                 ? VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
                                 : 0) < 0 &&
        (cr->snap_redefined ||
         virDomainSnapshotDelete (cr->snap,
                                  VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
         < 0))
      virt_fail (VIRT_ALL, "domain %s: undo: deleting snapshot %s", m->name,
                 cr->name);
    virDomainSnapshotFree (cr->snap);
    cr->snap = NULL;
  }
  for (i = m->nxd; i-- > 0;) {
    struct dk *k = &m->dk[i];
    if (k->tag_made) {
      if (delete_tag (m, k, cr->name) < 0)
        vd_error ("domain %s: disk %s: undo: internal snapshot %s of %s "
                  "is left behind", m->name, k->target, cr->name, k->path);
      k->tag_made = false;
    }
    if (k->lvm_made) {
      if (lvm_snapshotter.remove (&k->lvm_snap) < 0)
        vd_error ("domain %s: disk %s: undo: LVM snapshot %s is left "
                  "behind", m->name, k->target, k->lvm_snap.id);
      k->lvm_made = false;
    }
    if (k->rbd_made) {
      if (vd_rbd_snap_remove (k->net, cr->name) < 0)
        vd_error ("domain %s: disk %s: undo: RBD snapshot %s@%s is left "
                  "behind", m->name, k->target, k->x->name, cr->name);
      k->rbd_made = false;
    }
  }
  if (cr->paused) {
    if (virDomainResume (m->d) < 0)
      virt_fail (VIRT_ALL, "domain %s: undo: resuming it", m->name);
    cr->paused = false;
  }
  if (cr->frozen) {
    guest_thaw (m, "undo");
    cr->frozen = false;
  }
  errno = e;
}

/* The libvirt path: libvirt makes the internal snapshots itself. */
static int
create_libvirt (struct create *cr)
{
  cr->snap = ds_meta_create (&cr->m, cr->name, cr->desc);
  return cr->snap ? 0 : -1;
}

/* The own path: tags by qemu-img or QMP, then the metadata. */
static int
create_own (struct create *cr)
{
  struct dom *m = &cr->m;
  CLEANUP_FREE char *dxml = NULL, *parent = NULL;
  time_t now = time (NULL);
  size_t i;

  if (ds_meta_prepare (m, &dxml, &parent) < 0)
    return -1;
  if (m->active) {
    if (qmp_find_nodes (m, NULL) < 0 || qmp_create_tags (m, cr->name) < 0)
      return -1;
  }
  else
    for (i = 0; i < m->nxd; i++) {
      struct dk *k = &m->dk[i];
      if (k->kind != DK_QCOW2)
        continue;
      if (qemu_img_snapshot (m, k, "-c", cr->name) < 0)
        return -1;
      k->tag_made = true;
    }
  if (inject_failure (m->name, "tags"))
    return -1;
  cr->snap = ds_meta_redefine (m, cr->name, cr->desc, dxml, parent, now);
  if (!cr->snap)
    return -1;
  cr->snap_redefined = true;
  return 0;
}

/* Phase 1: the name and options, before anything is asked (EINVAL). */
static int
create_check_args (struct create *cr, const char *domain)
{
  if (!ds_valid_name (cr->name)) {
    vd_error ("domain %s: \"%s\" is not possible as a snapshot name (1-200 "
              "bytes of UTF-8, no '/', '\"', '\\' or control characters, "
              "not starting with '-' or '.', not all digits)", domain,
              cr->name);
    errno = EINVAL;
    return -1;
  }
  if (cr->opts->cow_percent > 100) {
    vd_error ("domain %s: copy-on-write space of %u%%: at most 100",
              domain, cr->opts->cow_percent);
    errno = EINVAL;
    return -1;
  }
  cr->desc = ds_meta_description (cr->opts);
  return cr->desc ? 0 : -1;
}

/* Phase 2: resolve the domain and classify its disks (ds_dom_open,
 * under the lock): something to snapshot, and a name LVM can carry when
 * there are LV disks. */
static int
create_resolve (struct create *cr, virConnectPtr c, const char *domain)
{
  struct dom *m = &cr->m;

  if (ds_dom_open (c, domain, true, m) < 0)
    return -1;
  cr->opened = true;
  if (m->nqcow2 + m->nlvm + m->nrbd == 0) {
    vd_error ("domain %s: no disk to snapshot (no qcow2 image, logical "
              "volume or RBD image that is not left out)", domain);
    errno = ENOTSUP;
    return -1;
  }
  if (m->nlvm && !lvm_snapshot_name_ok (cr->name)) {
    vd_error ("domain %s: \"%s\" is not possible as the name of an LVM "
              "snapshot (letters, digits and +_.-=!:&# only)", domain,
              cr->name);
    errno = EINVAL;
    return -1;
  }
  return 0;
}

/* Phase 3: the name must be free everywhere (EEXIST): libvirt's
 * snapshots, every qcow2 disk's tags, every LV disk's snapshots. */
static int
create_check_free (struct create *cr)
{
  struct dom *m = &cr->m;
  const char *name = cr->name;
  virDomainSnapshotPtr old;
  size_t i, j;

  old = virDomainSnapshotLookupByName (m->d, name, 0);
  if (old) {
    virDomainSnapshotFree (old);
    vd_error ("domain %s: snapshot %s exists already", m->name, name);
    errno = EEXIST;
    return -1;
  }
  if (virt_last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT) {
    virt_fail (VIRT_ALL, "domain %s: looking up snapshot %s", m->name,
               name);
    return -1;
  }
  for (i = 0; i < m->nxd; i++) {
    struct dk *k = &m->dk[i];
    if (k->kind == DK_QCOW2) {
      int t = ds_tag_exists (m, k, name);
      if (t < 0)
        return -1;
      if (t) {
        vd_error ("domain %s: disk %s (%s) has an internal snapshot %s "
                  "already (unknown to libvirt)", m->name, k->target,
                  k->path, name);
        errno = EEXIST;
        return -1;
      }
    }
    for (j = 0; k->kind == DK_LVM && j < k->nlvm_snaps; j++)
      if (strcmp (k->lvm_snaps[j].name, name) == 0) {
        vd_error ("domain %s: disk %s (%s) has an LVM snapshot %s already "
                  "(%s)", m->name, k->target, k->path, name,
                  k->lvm_snaps[j].id);
        errno = EEXIST;
        return -1;
      }
    for (j = 0; k->kind == DK_RBD && j < k->nrbd_snaps; j++)
      if (strcmp (k->rbd_snaps[j].name, name) == 0) {
        vd_error ("domain %s: disk %s (RBD image %s) has a snapshot %s "
                  "already", m->name, k->target, k->x->name, name);
        errno = EEXIST;
        return -1;
      }
  }
  return 0;
}

/* Phase 4: which path, and quiesce.  libvirt makes it when every written
 * disk is a qcow2 one; else our own path (domsnap.h).  Backups read the
 * disks only, so they must be consistent themselves, VM state or not.
 * Frozen, the snapshot holds no VM state (a guest saved frozen would
 * come back frozen after a revert): a running qcow2-only domain then
 * takes the own path, disk-only.  No agent: as without quiesce. */
static void
create_freeze (struct create *cr)
{
  struct dom *m = &cr->m;

  cr->own = m->nqcow2 > 0 && (m->blocked || m->nlvm + m->nrbd > 0);
  cr->memory = m->nqcow2 > 0 && !cr->own && m->active;
  if (!cr->opts->quiesce)
    return;
  if (m->state == VIR_DOMAIN_RUNNING) {
    if (guest_freeze (m) < 0) {
      vd_warn ("domain %s: filesystems not frozen, the guest agent did "
               "not do it (%s): snapshot %s is only crash-consistent%s",
               m->name, virGetLastErrorMessage (), cr->name,
               cr->memory ? " on its disks (it holds the VM state)" : "");
      cr->dn |= DS_DONE_NO_AGENT;
    }
    else {
      cr->frozen = true;
      if (cr->memory) {
        cr->own = true;
        cr->memory = false;
      }
    }
  }
  else if (m->active) {
    vd_warn ("domain %s: filesystems not frozen, the domain is paused or "
             "suspended (its guest agent cannot answer): snapshot %s is "
             "only crash-consistent", m->name, cr->name);
    cr->dn |= DS_DONE_NO_AGENT;
  }
  else {
    vd_info ("domain %s: shut off: snapshot %s is consistent without "
             "freezing filesystems", m->name, cr->name);
    cr->dn |= DS_DONE_NOT_NEEDED;
  }
}

/* Phase 5: all disks at one point in time: pause a running domain that
 * takes the own path, or has LV disks and more than one disk. */
static int
create_pause (struct create *cr)
{
  struct dom *m = &cr->m;

  if (m->state != VIR_DOMAIN_RUNNING ||
      !(cr->own || (m->nlvm + m->nrbd > 0
                    && m->nqcow2 + m->nlvm + m->nrbd > 1)))
    return 0;
  if (virDomainSuspend (m->d) < 0) {
    virt_fail (VIRT_ALL, "domain %s: pausing it for snapshot %s", m->name,
               cr->name);
    return -1;
  }
  cr->paused = true;
  cr->dn |= DS_DONE_PAUSED;
  return 0;
}

/* Phase 6: the LVM snapshots, one per LV disk. */
static int
create_lvm (struct create *cr)
{
  struct dom *m = &cr->m;
  const struct ds_create_opts *opts = cr->opts;
  size_t i;

  for (i = 0; i < m->nxd; i++) {
    struct dk *k = &m->dk[i];
    struct snap_create_opts lo = {
      .cow_bytes = opts->cow_bytes,
      .cow_percent = opts->cow_percent,
      .extra_tag = opts->by == DS_BY_CLI ? BY_CLI : NULL,
    };
    if (k->kind != DK_LVM)
      continue;
    if (lvm_snapshotter.create (k->path, cr->name, &lo, &k->lvm_snap) < 0) {
      int e = errno;
      vd_error ("domain %s: disk %s (%s): LVM snapshot %s not made: %s",
                m->name, k->target, k->path, cr->name, strerror (e));
      errno = e == EEXIST || e == EINVAL || e == ENOTSUP ? e
        : e == ENOSPC ? ENOSPC : EIO;
      return -1;
    }
    k->lvm_made = true;
    cr->dn |= DS_DONE_LVM;
  }
  return inject_failure (m->name, "lvm") ? -1 : 0;
}

/* Phase 6b: the RBD snapshots, one per RBD image (a domain with only
 * one disk needs no pause: an RBD snapshot is atomic for its image). */
static int
create_rbd (struct create *cr)
{
  struct dom *m = &cr->m;
  size_t i;

  for (i = 0; i < m->nxd; i++) {
    struct dk *k = &m->dk[i];

    if (k->kind != DK_RBD)
      continue;
    if (vd_rbd_snap_create (k->net, cr->name,
                            cr->opts->by == DS_BY_CLI ? BY_CLI
                            : cr->opts->by == DS_BY_MOUNT ? BY_MOUNT
                            : NULL) < 0) {
      int e = errno;
      vd_error ("domain %s: disk %s (RBD image %s): snapshot %s not made: "
                "%s", m->name, k->target, k->x->name, cr->name,
                strerror (e));
      errno = e == EEXIST || e == EACCES ? e : EIO;
      return -1;
    }
    k->rbd_made = true;
    cr->dn |= DS_DONE_RBD;
  }
  return inject_failure (m->name, "rbd") ? -1 : 0;
}

/* Phase 7: the qcow2 part and its libvirt metadata.  libvirt may say it
 * made one and have qemu fail quietly (savevm through the human
 * monitor): every qcow2 disk must have the tag. */
static int
create_qcow2 (struct create *cr)
{
  struct dom *m = &cr->m;
  size_t i;

  if (m->nqcow2 == 0)
    return 0;
  if ((cr->own ? create_own (cr) : create_libvirt (cr)) < 0)
    return -1;
  for (i = 0; i < m->nxd; i++) {
    int t;
    if (m->dk[i].kind != DK_QCOW2)
      continue;
    t = ds_tag_exists (m, &m->dk[i], cr->name);
    if (t < 0)
      return -1;
    if (t == 0) {
      vd_error ("domain %s: disk %s (%s): no internal snapshot %s after "
                "making it", m->name, m->dk[i].target, m->dk[i].path,
                cr->name);
      errno = EIO;
      return -1;
    }
  }
  cr->dn |= DS_DONE_LIBVIRT;
  if (cr->memory)
    cr->dn |= DS_DONE_MEMORY;
  return 0;
}

/* Phase 8: resume what phase 5 paused, then thaw (the agent answers only
 * while the guest runs).  A failed thaw is logged; the snapshot stays. */
static int
create_resume_thaw (struct create *cr)
{
  struct dom *m = &cr->m;

  if (inject_failure (m->name, "resume"))
    return -1;
  if (cr->paused) {
    if (virDomainResume (m->d) < 0) {
      virt_fail (VIRT_ALL, "domain %s: resuming it after snapshot %s",
                 m->name, cr->name);
      return -1;
    }
    cr->paused = false;
  }
  if (cr->frozen) {
    CLEANUP_FREE char *when = NULL;
    cr->frozen = false;
    if (asprintf (&when, "after snapshot %s (which is made)", cr->name) < 0)
      when = NULL;
    if (guest_thaw (m, when ? when : "after the snapshot") == 0)
      cr->dn |= DS_DONE_QUIESCED;
  }
  return 0;
}

int
ds_create (virConnectPtr c, const char *domain, const char *name,
           const struct ds_create_opts *opts, unsigned *done)
{
  static const struct ds_create_opts none = { 0 };
  struct create cr = { .name = name, .opts = opts ? opts : &none };
  struct ds_lock lock;
  int r = -1, e;

  if (done)
    *done = 0;
  if (create_check_args (&cr, domain) < 0 ||
      ds_lock_take (c, domain, &lock) < 0) {
    e = errno;
    free (cr.desc);
    errno = e;
    return -1;
  }
  ds_hold_for_tests (domain);
  if (create_resolve (&cr, c, domain) < 0 || create_check_free (&cr) < 0)
    goto out;
  create_freeze (&cr);
  if (create_pause (&cr) < 0 || create_lvm (&cr) < 0 ||
      create_rbd (&cr) < 0 || create_qcow2 (&cr) < 0
      || create_resume_thaw (&cr) < 0) {
    undo (&cr);
    cr.dn &= DS_DONE_NO_AGENT | DS_DONE_NOT_NEEDED;
    goto out;
  }
  vd_info ("domain %s: snapshot %s made (%s%s%s%s%s%s)", domain, name,
           cr.dn & DS_DONE_LIBVIRT ? (cr.own ? "qcow2 by own path"
                                      : "qcow2 by libvirt") : "",
           cr.dn & DS_DONE_LIBVIRT && cr.dn & DS_DONE_LVM ? ", " : "",
           cr.dn & DS_DONE_LVM ? "LVM" : "",
           cr.dn & (DS_DONE_LIBVIRT | DS_DONE_LVM)
           && cr.dn & DS_DONE_RBD ? ", " : "",
           cr.dn & DS_DONE_RBD ? "RBD" : "",
           cr.dn & DS_DONE_MEMORY ? ", with VM state" : "");
  r = 0;

 out:
  e = errno;
  if (cr.snap)
    virDomainSnapshotFree (cr.snap);
  if (cr.opened)
    ds_dom_close (&cr.m);
  ds_lock_release (&lock);
  free (cr.desc);
  if (done)
    *done = cr.dn;
  errno = e;
  return r;
}

/* ---- Delete. ---- */

struct del {
  struct dom m;
  const char *name;
  virDomainSnapshotPtr snap;    /* the libvirt part, or NULL              */
  struct domxml_snapshot sx;    /* its XML                                */
  bool *tagdisk;                /* m.nxd: the qcow2 disks with its tag    */
  bool any_tag;
  size_t nlvm;                  /* LV snapshots of that shown name        */
  size_t nrbd;                  /* RBD snapshots of that name             */
};

/* Phase 1: the libvirt part and the disks its tags are in: by target
 * among today's qcow2 disks (where libvirt looks for them too). */
static int
delete_find_libvirt (struct del *dl)
{
  struct dom *m = &dl->m;
  const char *name = dl->name;
  CLEANUP_FREE char *xml = NULL;
  size_t i, j;

  dl->snap = virDomainSnapshotLookupByName (m->d, name, 0);
  if (!dl->snap && virt_last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT) {
    virt_fail (VIRT_ALL, "domain %s: looking up snapshot %s", m->name,
               name);
    return -1;
  }
  if (!dl->snap)
    return 0;
  xml = virDomainSnapshotGetXMLDesc (dl->snap, 0);
  if (!xml) {
    virt_fail (VIRT_ALL, "domain %s: snapshot %s: XML", m->name, name);
    return -1;
  }
  if (domxml_parse_snapshot (xml, strlen (xml), &dl->sx) < 0) {
    vd_error ("domain %s: snapshot %s: its XML cannot be parsed", m->name,
              name);
    errno = EIO;
    return -1;
  }
  for (i = 0; i < dl->sx.nsnapdisks; i++) {
    const struct domxml_disk *sd = &dl->sx.snapdisks[i];
    if (!sd->snapshot || strcmp (sd->snapshot, "internal") != 0 ||
        !sd->target)
      continue;
    for (j = 0; j < m->nxd; j++)
      if (m->dk[j].kind == DK_QCOW2 &&
          strcmp (m->dk[j].target, sd->target) == 0)
        break;
    if (j == m->nxd) {
      vd_warn ("domain %s: snapshot %s: its disk %s is no qcow2 disk of "
               "the domain now: its internal snapshot is not looked for",
               m->name, name, sd->target);
      continue;
    }
    dl->tagdisk[j] = true;
    dl->any_tag = true;
  }
  return 0;
}

/* Phase 2: something to delete?  ENOENT when nothing has that name;
 * ENOTSUP when only a qcow2 tag has it, unknown to libvirt. */
static int
delete_check_found (struct del *dl)
{
  struct dom *m = &dl->m;
  size_t i, j;

  for (i = 0; i < m->nxd; i++)
    for (j = 0; m->dk[i].kind == DK_LVM && j < m->dk[i].nlvm_snaps; j++)
      if (strcmp (m->dk[i].lvm_snaps[j].name, dl->name) == 0)
        dl->nlvm++;
  for (i = 0; i < m->nxd; i++)
    for (j = 0; m->dk[i].kind == DK_RBD && j < m->dk[i].nrbd_snaps; j++)
      if (strcmp (m->dk[i].rbd_snaps[j].name, dl->name) == 0)
        dl->nrbd++;
  if (dl->snap || dl->nlvm > 0 || dl->nrbd > 0)
    return 0;
  for (i = 0; i < m->nxd; i++) {
    int t;
    if (m->dk[i].kind != DK_QCOW2)
      continue;
    t = ds_tag_exists (m, &m->dk[i], dl->name);
    if (t < 0)
      return -1;
    if (t) {
      vd_error ("domain %s: snapshot %s exists only as an internal "
                "snapshot of disk %s (%s), unknown to libvirt: not "
                "deleted (use qemu-img snapshot -d)", m->name, dl->name,
                m->dk[i].target, m->dk[i].path);
      errno = ENOTSUP;
      return -1;
    }
  }
  vd_error ("domain %s: no snapshot %s", m->name, dl->name);
  errno = ENOENT;
  return -1;
}

/* Phase 3: the LV snapshots of that shown name; every one is tried. */
static int
delete_lvm (struct del *dl)
{
  struct dom *m = &dl->m;
  size_t i, j;
  int e = 0;

  for (i = 0; i < m->nxd; i++)
    for (j = 0; m->dk[i].kind == DK_LVM && j < m->dk[i].nlvm_snaps; j++) {
      const struct snap_info *s = &m->dk[i].lvm_snaps[j];
      if (strcmp (s->name, dl->name) != 0)
        continue;
      if (lvm_snapshotter.remove (s) < 0) {
        int le = errno;
        vd_error ("domain %s: disk %s: LVM snapshot %s (%s) not deleted: "
                  "%s", m->name, m->dk[i].target, dl->name, s->id,
                  strerror (le));
        if (!e)
          e = le == ENOSPC ? ENOSPC : le == EACCES ? EACCES : EIO;
      }
    }
  if (e) {
    errno = e;
    return -1;
  }
  return 0;
}

/* Phase 3b: the RBD snapshots of that name; every one is tried. */
static int
delete_rbd (struct del *dl)
{
  struct dom *m = &dl->m;
  size_t i, j;
  int e = 0;

  for (i = 0; i < m->nxd; i++)
    for (j = 0; m->dk[i].kind == DK_RBD && j < m->dk[i].nrbd_snaps; j++) {
      if (strcmp (m->dk[i].rbd_snaps[j].name, dl->name) != 0)
        continue;
      if (vd_rbd_snap_remove (m->dk[i].net, dl->name) < 0) {
        int re = errno;
        vd_error ("domain %s: disk %s: RBD snapshot %s@%s not deleted: %s",
                  m->name, m->dk[i].target, m->dk[i].x->name, dl->name,
                  strerror (re));
        if (!e)
          e = re == EBUSY || re == EACCES ? re : EIO;
      }
    }
  if (e) {
    errno = e;
    return -1;
  }
  return 0;
}

/* Phase 4: the libvirt part.  libvirt deletes the tags of snapshots it
 * made; of one redefined while running (state disk-snapshot) only the
 * metadata: the tags left are deleted here. */
static int
delete_libvirt (struct del *dl)
{
  struct dom *m = &dl->m;
  size_t i;
  int e = 0;

  if (!dl->snap)
    return 0;
  if (virDomainSnapshotDelete (dl->snap, 0) < 0) {
    virt_fail (VIRT_ALL, "domain %s: deleting snapshot %s", m->name,
               dl->name);
    return -1;
  }
  for (i = 0; i < m->nxd; i++) {
    int t;
    if (!dl->tagdisk[i])
      continue;
    t = ds_tag_exists (m, &m->dk[i], dl->name);
    if (t > 0) {
      vd_debug ("domain %s: disk %s: deleting internal snapshot %s",
                m->name, m->dk[i].target, dl->name);
      if (delete_tag (m, &m->dk[i], dl->name) < 0)
        t = -1;
      else if ((t = ds_tag_exists (m, &m->dk[i], dl->name)) > 0) {
        vd_error ("domain %s: disk %s (%s): internal snapshot %s is "
                  "still there after deleting it", m->name,
                  m->dk[i].target, m->dk[i].path, dl->name);
        t = -1;
      }
    }
    if (t < 0 && !e)
      e = EIO;
  }
  if (e) {
    errno = e;
    return -1;
  }
  return 0;
}

int
ds_delete (virConnectPtr c, const char *domain, const char *name)
{
  struct del dl = { .name = name };
  struct ds_lock lock;
  int r = -1, e;

  if (ds_lock_take (c, domain, &lock) < 0)
    return -1;
  ds_hold_for_tests (domain);
  if (ds_dom_open (c, domain, false, &dl.m) < 0) {
    e = errno;
    ds_lock_release (&lock);
    errno = e;
    return -1;
  }
  dl.tagdisk = calloc (dl.m.nxd ? dl.m.nxd : 1, sizeof *dl.tagdisk);
  if (!dl.tagdisk) {
    errno = ENOMEM;
    goto out;
  }
  if (delete_find_libvirt (&dl) < 0 || delete_check_found (&dl) < 0)
    goto out;
  /* Every part found before anything goes: a running domain's tags are
   * deleted through qemu, by node name. */
  if (dl.m.active && dl.any_tag && qmp_find_nodes (&dl.m, dl.tagdisk) < 0)
    goto out;
  if (delete_lvm (&dl) < 0 || delete_rbd (&dl) < 0
      || delete_libvirt (&dl) < 0)
    goto out;
  vd_info ("domain %s: snapshot %s deleted", domain, name);
  r = 0;

 out:
  e = errno;
  if (dl.snap)
    virDomainSnapshotFree (dl.snap);
  domxml_snapshot_clear (&dl.sx);
  free (dl.tagdisk);
  ds_dom_close (&dl.m);
  ds_lock_release (&lock);
  errno = e;
  return r;
}

/* ---- The provider. ---- */

static int
ds_dom_lock (virConnectPtr c, const char *domain, long wait_s, void **token)
{
  struct ds_lock *lk = malloc (sizeof *lk);

  if (!lk)
    return -1;
  if (ds_lock_take_wait (c, domain, lk, wait_s) < 0) {
    int e = errno;
    free (lk);
    errno = e;
    return -1;
  }
  *token = lk;
  return 0;
}

static void
ds_dom_unlock (void *token)
{
  struct ds_lock *lk = token;

  if (lk) {
    ds_lock_release (lk);
    free (lk);
  }
}

const struct vd_snapshotter libvirt_snapshotter = {
  .name = "libvirt",
  .dom_list = ds_list,
  .dom_list_free = ds_list_free,
  .dom_create = ds_create,
  .dom_delete = ds_delete,
  .dom_lock = ds_dom_lock,
  .dom_unlock = ds_dom_unlock,
};
