/* vmdiskfs - domain snapshots: the domain model.  ds_dom_open looks the
 * domain up, reads its XML (the live XML of a running domain), sorts its
 * disks by what domxml_disk_classify says into qcow2 images, logical
 * volume candidates (one LVM question for all of them) and left-out
 * disks (domsnap.h: "Disks are classified ..."); ds_tag_exists reads a
 * qcow2 image's internal snapshot tags with the formats library.
 *
 * Threads: a struct dom belongs to its caller; no state outside it.
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
#include "netsrc.h"
#include "virt.h"
#include "vdformat.h"
#include "log.h"

/* ---- Small helpers. ---- */

long
ds_env_seconds (const char *var, long dflt)
{
  const char *e = getenv (var);
  char *end;
  long v;

  if (!e || !*e)
    return dflt;
  errno = 0;
  v = strtol (e, &end, 10);
  return errno || *end || v < 0 ? dflt : v;
}

void
ds_sleep_ms (long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

void
ds_buf_xml (struct vd_buf *b, const char *s)
{
  for (; *s; s++)
    switch (*s) {
    case '&': vd_buf_str (b, "&amp;"); break;
    case '<': vd_buf_str (b, "&lt;"); break;
    case '>': vd_buf_str (b, "&gt;"); break;
    case '\'': vd_buf_str (b, "&apos;"); break;
    case '"': vd_buf_str (b, "&quot;"); break;
    default: vd_buf_add (b, s, 1);
    }
}

/* ---- The domain and its disks. ---- */

void
ds_dom_close (struct dom *m)
{
  size_t i;

  for (i = 0; m->dk && i < m->nxd; i++) {
    free (m->dk[i].path);
    free (m->dk[i].node);
    snap_list_free (m->dk[i].lvm_snaps, m->dk[i].nlvm_snaps);
    snap_info_clear (&m->dk[i].lvm_snap);
    vd_netsrc_free (m->dk[i].net);
    vd_snapshots_free (m->dk[i].rbd_snaps, m->dk[i].nrbd_snaps);
  }
  free (m->dk);
  domxml_disks_free (m->xd, m->nxd);
  free (m->xml);
  if (m->d)
    virDomainFree (m->d);
  memset (m, 0, sizeof *m);
}

char *
ds_volume_path (virConnectPtr c, const char *pool, const char *volume)
{
  virStoragePoolPtr p;
  virStorageVolPtr vol = NULL;
  char *path = NULL;

  p = virStoragePoolLookupByName (c, pool);
  if (p)
    vol = virStorageVolLookupByName (p, volume);
  if (vol)
    path = virStorageVolGetPath (vol);
  if (vol)
    virStorageVolFree (vol);
  if (p)
    virStoragePoolFree (p);
  return path;
}

/* The path of a type='volume' disk (NULL when it cannot be resolved:
 * logged). */
static char *
volume_path (struct dom *m, const struct domxml_disk *x)
{
  char *path;

  if (!x->pool || !x->volume)
    return NULL;
  path = ds_volume_path (m->c, x->pool, x->volume);
  if (!path)
    vd_error ("domain %s: disk %s: volume %s of pool %s: %s", m->name,
              x->target ? x->target : "?", x->volume, x->pool,
              virGetLastErrorMessage ());
  return path;
}

/* Disk k, an RBD image: its source (the secret read) and its snapshots.
 * 0, or -1 (logged). */
static int
rbd_disk (struct dom *m, struct dk *k)
{
  struct vd_image *img;

  k->net = ds_netsrc (m->c, m->name, k->x);
  if (!k->net)
    return -1;
  free (k->net->snapshot);      /* <snapshot name>: the image itself */
  k->net->snapshot = NULL;
  img = vd_net_open (k->net, 0);
  if (!img || vd_image_list_snapshots (img, &k->rbd_snaps,
                                       &k->nrbd_snaps) < 0) {
    vd_error ("domain %s: disk %s: RBD image %s: cannot read its "
              "snapshots", m->name, k->target, k->x->name);
    vd_image_close (img);
    errno = EIO;
    return -1;
  }
  vd_image_close (img);
  return 0;
}

int
ds_dom_open (virConnectPtr c, const char *name, bool strict, struct dom *m)
{
  const char **lvm_paths = NULL;
  size_t *lvm_idx = NULL, nlvm = 0, i;
  struct snap_list *lists = NULL;
  int r = -1, reason;

  memset (m, 0, sizeof *m);
  m->c = c;
  m->name = name;
  m->d = virDomainLookupByName (c, name);
  if (!m->d) {
    virt_fail (VIRT_ALL, "domain %s: lookup", name);
    return -1;
  }
  if (virDomainGetState (m->d, &m->state, &reason, 0) < 0) {
    virt_fail (VIRT_ALL, "domain %s: state", name);
    goto out;
  }
  m->active = m->state != VIR_DOMAIN_SHUTOFF;
  m->xml = virDomainGetXMLDesc (m->d, 0);
  if (!m->xml) {
    virt_fail (VIRT_ALL, "domain %s: XML", name);
    goto out;
  }
  if (domxml_parse_domain (m->xml, strlen (m->xml), &m->xd, &m->nxd) < 0) {
    vd_error ("domain %s: its XML cannot be parsed", name);
    errno = EIO;
    goto out;
  }
  m->dk = calloc (m->nxd ? m->nxd : 1, sizeof *m->dk);
  lvm_paths = calloc (m->nxd ? m->nxd : 1, sizeof *lvm_paths);
  lvm_idx = calloc (m->nxd ? m->nxd : 1, sizeof *lvm_idx);
  if (!m->dk || !lvm_paths || !lvm_idx) {
    errno = ENOMEM;
    goto out;
  }
  for (i = 0; i < m->nxd; i++) {
    const struct domxml_disk *x = &m->xd[i];
    struct dk *k = &m->dk[i];
    struct domxml_class dc;

    domxml_disk_classify (x, &dc);
    k->x = x;
    k->target = x->target ? x->target : "?";
    if (!dc.is_disk || !dc.written)
      continue;                 /* not written: nothing to snapshot */
    if (dc.left_out) {
      k->blocks_libvirt = true;
      continue;
    }
    if (dc.path && !(k->path = strdup (dc.path))) {
      errno = ENOMEM;
      goto out;
    }
    else if (dc.src == DOMXML_SRC_VOLUME) {
      k->path = volume_path (m, x);
      if (!k->path && strict) {   /* logged: pool inactive, no volume ... */
        errno = EIO;
        goto out;
      }
    }
    if (k->path && dc.qcow2) {
      k->kind = DK_QCOW2;
      m->nqcow2++;
      continue;
    }
    if (dc.src == DOMXML_SRC_NETWORK && x->protocol
        && strcmp (x->protocol, "rbd") == 0 && strcmp (dc.format, "raw") == 0) {
      /* An RBD image: RBD snapshots (librbd), listed now; libvirt could
       * not make an internal snapshot of the domain with it. */
      if (rbd_disk (m, k) == 0) {
        k->kind = DK_RBD;
        k->blocks_libvirt = true;
        m->nrbd++;
        continue;
      }
      if (strict)
        goto out;                       /* logged */
      k->blocks_libvirt = true;
      continue;
    }
    if (k->path && dc.lvm_candidate) {
      lvm_idx[nlvm] = i;
      lvm_paths[nlvm++] = k->path;
      continue;
    }
    k->blocks_libvirt = true;
    if (strict) {
      vd_error ("domain %s: disk %s (type %s, format %s%s%s) cannot be "
                "snapshotted: only qcow2 images, logical volumes and RBD images can; "
                "mark it <disk ... snapshot='no'> to leave it out of "
                "snapshots", name, k->target, dc.type,
                x->driver_type ? x->driver_type : "?",
                k->path ? ", " : "", k->path ? k->path : "");
      errno = ENOTSUP;
      goto out;
    }
  }

  /* One LVM question for every candidate. */
  if (nlvm > 0) {
    lists = calloc (nlvm, sizeof *lists);
    if (!lists) {
      errno = ENOMEM;
      goto out;
    }
    if (lvm_snapshotter.list_many (lvm_paths, nlvm, lists) < 0) {
      vd_error ("domain %s: LVM could not be asked about its block disks",
                name);
      free (lists);
      lists = NULL;
      goto out;
    }
    for (i = 0; i < nlvm; i++) {
      struct dk *k = &m->dk[lvm_idx[i]];
      if (lists[i].err == 0) {
        k->kind = DK_LVM;
        k->lvm_snaps = lists[i].snaps;
        k->nlvm_snaps = lists[i].n;
        lists[i].snaps = NULL;
        lists[i].n = 0;
        m->nlvm++;
        continue;
      }
      k->blocks_libvirt = true;
      if (strict && lists[i].err == ENOTSUP) {
        vd_error ("domain %s: disk %s (%s) is neither a qcow2 image nor a "
                  "logical volume: it cannot be snapshotted; mark it "
                  "<disk ... snapshot='no'> to leave it out of snapshots",
                  name, k->target, k->path);
        errno = ENOTSUP;
        goto out;
      }
      if (strict) {
        vd_error ("domain %s: disk %s (%s): %s", name, k->target, k->path,
                  strerror (lists[i].err));
        errno = lists[i].err == ENOENT ? EIO : lists[i].err;
        goto out;
      }
    }
  }
  for (i = 0; i < m->nxd; i++)
    if (m->dk[i].blocks_libvirt)
      m->blocked = true;
  r = 0;

 out:
  if (lists) {
    for (i = 0; i < nlvm; i++)
      snap_list_free (lists[i].snaps, lists[i].n);
    free (lists);
  }
  free (lvm_paths);
  free (lvm_idx);
  if (r < 0) {
    int e = errno;
    ds_dom_close (m);
    errno = e;
  }
  return r;
}

/* ---- qcow2 internal snapshot tags. ---- */

int
ds_tag_exists (const struct dom *m, const struct dk *k, const char *name)
{
  struct vd_image *img = vd_image_open (k->path, VD_OPEN_NO_BACKING);
  struct vd_snapshot *s = NULL;
  size_t n = 0, i;
  int r = 0;

  if (!img) {
    vd_error ("domain %s: disk %s: %s: cannot open it to read its "
              "snapshots: %m", m->name, k->target, k->path);
    errno = EIO;
    return -1;
  }
  if (vd_image_list_snapshots (img, &s, &n) < 0) {
    vd_error ("domain %s: disk %s: %s: cannot read its snapshots: %m",
              m->name, k->target, k->path);
    vd_image_close (img);
    errno = EIO;
    return -1;
  }
  for (i = 0; i < n; i++)
    if (s[i].name && strcmp (s[i].name, name) == 0)
      r = 1;
  vd_snapshots_free (s, n);
  vd_image_close (img);
  return r;
}
