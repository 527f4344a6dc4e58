/* vmdiskfs - the libvirt provider's model of a domain's tree: from the
 * domain XML (domxml.c), libvirt's snapshots, the images' own snapshot
 * tables and LVM's answer to a struct build, which libvirt-apply.c puts
 * into the tree.  No locks and no libvirt call (a volume disk's path is
 * asked through b->volume_path): a build belongs to the thread making
 * it, and tests/unit/test-libvirt-scan.c makes them from XML strings and
 * images of its own.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "escape.h"
#include "log.h"

/* XML from libvirt as virsh prints it (one more newline), so that
 * "virsh dumpxml --inactive D | cmp - D/domain.xml" holds. */
struct fs_blob *
scan_virsh_blob (const char *x, size_t n)
{
  char *t = malloc (n + 1);
  struct fs_blob *b;

  if (!t)
    return NULL;
  memcpy (t, x, n);
  t[n] = '\n';
  b = fs_blob_new (t, n + 1);
  free (t);
  return b;
}

static void
disk_scan_clear (struct disk_scan *s)
{
  free (s->fname);
  free (s->path);
  free (s->format);
  free (s->snap_id);
  free (s->lvm_id);
  vd_policy_free (s->policy);
  vd_netsrc_free (s->net);
}

void
scan_free (struct build *b)
{
  size_t i, j;

  for (i = 0; i < b->nimgs; i++) {
    free (b->imgs[i].path);
    free (b->imgs[i].format);
    vd_snapshots_free (b->imgs[i].snaps, b->imgs[i].nsnaps);
  }
  free (b->imgs);
  for (i = 0; i < b->ndisks; i++)
    disk_scan_clear (&b->disks[i]);
  free (b->disks);
  for (i = 0; i < b->nsnaps; i++) {
    free (b->snaps[i].ename);
    fs_blob_unref (b->snaps[i].domxml);
    fs_blob_unref (b->snaps[i].snapxml);
    for (j = 0; j < b->snaps[i].ndisks; j++)
      disk_scan_clear (&b->snaps[i].disks[j]);
    free (b->snaps[i].disks);
  }
  free (b->snaps);
  free (b->last_dx);
}

/* Is path inside our own mount? */
bool
scan_inside_mount (const char *path)
{
  const char *m = fs_config.mountpoint;
  size_t n = m ? strlen (m) : 0;

  return n > 0 && strncmp (path, m, n) == 0
    && (path[n] == '/' || path[n] == '\0' || strcmp (m, "/") == 0);
}

/* The image at path opened once per build (then closed): its size and
 * snapshots.  NULL on ENOMEM only; an image that fails has err set. */
static struct img_info *
image_info (struct build *b, const char *path, const char *format,
            const struct vd_policy *pol, const struct vd_netsrc *net)
{
  struct img_info *ii, *t;
  struct vd_image *img;
  size_t i;

  for (i = 0; i < b->nimgs; i++)
    if (strcmp (b->imgs[i].path, path) == 0
        && strcmp (b->imgs[i].format, format) == 0)
      return &b->imgs[i];
  t = vd_vec_grow (b->imgs, &b->capimgs, b->nimgs, 1, sizeof *t);
  if (!t)
    return NULL;
  b->imgs = t;
  ii = &b->imgs[b->nimgs];
  memset (ii, 0, sizeof *ii);
  ii->path = strdup (path);
  ii->format = strdup (format);
  if (!ii->path || !ii->format) {
    free (ii->path);
    free (ii->format);
    return NULL;
  }
  b->nimgs++;
  if (net) {
    size_t h;

    /* A unix socket inside the mount: connecting would be a request to
     * ourselves. */
    for (h = 0; h < net->nhosts; h++)
      if (net->hosts[h].socket && scan_inside_mount (net->hosts[h].socket)) {
        vd_error ("domain %s: %s: its socket is inside the mount: not "
                  "opened (its disk is shown empty and fails to open)",
                  b->dname, path);
        ii->err = ELOOP;
        return ii;
      }
    ii->read_mode = 0400;
    errno = 0;
    img = vd_net_open (net, 0);
    if (!img) {
      ii->err = errno ? errno : EIO;
      vd_error ("domain %s: %s: cannot open: %s (its disk is shown empty "
                "and fails to open)", b->dname, path, strerror (ii->err));
      return ii;
    }
    /* Its times: the server's (RBD), else the time it was scanned, which
     * moves with every rescan: never a constant that would let rsync's
     * quick check skip a changed disk. */
    ii->st.st_mode = S_IFREG | 0400;
    if (img->mtime.tv_sec > 0)
      ii->st.st_mtim = img->mtime;
    else
      clock_gettime (CLOCK_REALTIME, &ii->st.st_mtim);
    ii->st.st_atim = ii->st.st_ctim = ii->st.st_mtim;
    ii->have_st = true;
    goto opened;
  }
  if (scan_inside_mount (path)) {
    /* Opening it would be a request to ourselves, under refresh_lock. */
    vd_error ("domain %s: %s is inside the mount: not opened (its disk "
              "is shown empty and fails to open)", b->dname, path);
    ii->err = ELOOP;
    return ii;
  }
  /* Not stat(2): a symlink into our mount would be a request to
   * ourselves. */
  ii->have_st = vd_stat_checked (path, NULL, &ii->st) == 0;
  ii->read_mode = ii->have_st ? ii->st.st_mode & 0444 : 0400;
  errno = 0;
  img = vd_image_open_policy (path, format, 0, pol);
  if (!img) {
    ii->err = errno ? errno : EIO;
    vd_error ("domain %s: %s: cannot open as %s: %s (its disk is shown "
              "empty and fails to open)", b->dname, path, format,
              strerror (ii->err));
    return ii;
  }
  ii->read_mode = img->read_mode;
 opened:
  ii->size = vd_image_size (img);
  if (vd_image_list_snapshots (img, &ii->snaps, &ii->nsnaps) < 0) {
    ii->snaps = NULL;
    ii->nsnaps = 0;
  }
  vd_image_close (img);
  return ii;
}

/* Where a disk's bytes are, for a disk domxml_disk_classify says is one:
 * *path (malloc'd) for file, block and volume disks; 0.  -1 for a disk
 * that is not shown (network ...), logged when b->log.  *path NULL with
 * 0: a disk without a usable source (shown with EIO). */
static int
disk_path (struct build *b, const struct domxml_disk *d,
           const struct domxml_class *dc, char **path,
           struct vd_netsrc **net)
{
  *path = NULL;
  *net = NULL;
  switch (dc->src) {
  case DOMXML_SRC_FILE:
  case DOMXML_SRC_BLOCK:
    if (dc->path && (*path = strdup (dc->path)) == NULL)
      return -1;
    return 0;
  case DOMXML_SRC_VOLUME:
    if (!d->pool || !d->volume || !b->c || !b->volume_path)
      return 0;
    *path = b->volume_path (b, d);
    return 0;
  case DOMXML_SRC_NETWORK: {
    enum vd_net_proto proto;

    if (vd_net_proto_parse (d->protocol, &proto) < 0)
      break;                            /* http, gluster ...: not shown */
    if (strcmp (dc->format, "raw") != 0) {
      if (b->log)
        vd_warn ("domain %s: disk %s: %s disk in format %s is not shown "
                 "(network disks are read raw)", b->dname,
                 d->target ? d->target : "?", d->protocol, dc->format);
      return -1;
    }
    if (!b->netsrc)
      return 0;
    *net = b->netsrc (b, d);
    if (!*net)
      return errno == ENOTSUP ? -1 : 0;
    *path = vd_net_describe (*net);
    if (!*path) {
      vd_netsrc_free (*net);
      *net = NULL;
      errno = ENOMEM;
      return -1;
    }
    return 0;
  }
  case DOMXML_SRC_OTHER:
    break;
  }
  if (b->log)
    vd_warn ("domain %s: disk %s: type %s%s%s%s%s is not shown (not "
             "readable by vmdiskfs yet)", b->dname,
             d->target ? d->target : "?", dc->type,
             d->protocol ? " protocol " : "", d->protocol ? d->protocol : "",
             d->name ? " " : "", d->name ? d->name : "");
  return -1;
}

/* Fill s for the file fname (malloc'd, taken) showing target's disk at
 * path (may be NULL) in format; snapshot name snap (NULL: the image
 * itself). */
static int
fill_named (struct build *b, struct disk_scan *s, char *fname,
            const char *target, const char *path, const char *format,
            const char *snap, bool live, const struct domxml_disk *x,
            const struct vd_netsrc *net)
{
  struct img_info *ii;
  size_t i;

  memset (s, 0, sizeof *s);
  s->fname = fname;
  if (!s->fname)
    return -1;
  s->format = strdup (format);
  if (!s->format)
    return -1;
  s->live = live && !snap;
  if (!path) {
    vd_error ("domain %s: disk %s has no source (shown empty, fails to "
              "open)", b->dname, target);
    s->err = EIO;
    return 0;
  }
  s->path = strdup (path);
  if (!s->path)
    return -1;
  if (net && (s->net = vd_netsrc_dup (net)) == NULL)
    return -1;
  if (x && !net && (x->nbacking || x->backing_end)) {
    /* The backing chain the domain XML records: the image's own must
     * agree (safe-open.c). */
    struct vd_policy pol = {
      .expect = x->backing, .nexpect = x->nbacking,
      .expect_end = x->backing_end,
    };
    s->policy = vd_policy_dup (&pol);
    if (!s->policy)
      return -1;
  }
  ii = image_info (b, path, format, s->policy, s->net);
  if (!ii)
    return -1;
  s->st = ii->st;
  s->have_st = ii->have_st;
  s->read_mode = ii->read_mode;
  if (ii->err) {
    s->err = EIO;
    return 0;
  }
  if (!snap) {
    s->size = ii->size;
    return 0;
  }
  for (i = 0; i < ii->nsnaps; i++)
    if (strcmp (ii->snaps[i].name, snap) == 0)
      break;
  if (i == ii->nsnaps) {
    vd_error ("domain %s: snapshot %s: disk %s: %s has no internal "
              "snapshot of that name (shown empty, fails to open)",
              b->dname, snap, target, path);
    s->err = EIO;
    return 0;
  }
  s->snap_id = strdup (ii->snaps[i].id);
  if (!s->snap_id)
    return -1;
  s->size = ii->snaps[i].disk_size;
  return 0;
}

/* fill_named for <target>.img. */
static int
fill_disk (struct build *b, struct disk_scan *s, const char *target,
           const char *path, const char *format, const char *snap,
           bool live, const struct domxml_disk *x,
           const struct vd_netsrc *net)
{
  CLEANUP_FREE char *et = vd_name_escape (target);
  char *fname;

  if (!et || asprintf (&fname, "%s.img", et) < 0)
    fname = NULL;
  return fill_named (b, s, fname, target, path, format, snap, live, x,
                     net);
}

static struct snap_scan *
add_snap (struct build *b)
{
  struct snap_scan *t = vd_vec_grow (b->snaps, &b->capsnaps, b->nsnaps, 1,
                                     sizeof *t);

  if (!t)
    return NULL;
  b->snaps = t;
  memset (&t[b->nsnaps], 0, sizeof *t);
  return &t[b->nsnaps++];
}

static struct disk_scan *
add_disk (struct disk_scan **v, size_t *n, size_t *cap)
{
  struct disk_scan *t = vd_vec_grow (*v, cap, *n, 1, sizeof *t);

  if (!t)
    return NULL;
  *v = t;
  memset (&t[*n], 0, sizeof *t);
  return &t[(*n)++];
}

static bool
snap_shown (const struct build *b, const char *ename)
{
  size_t i;

  for (i = 0; i < b->nsnaps; i++)
    if (strcmp (b->snaps[i].ename, ename) == 0)
      return true;
  return false;
}

/* One libvirt snapshot into b. */
static int
build_libvirt_snapshot (struct build *b, const struct virt_snap *ls,
                        const struct domxml_disk *cur, size_t ncur)
{
  struct domxml_snapshot sx;
  struct snap_scan *ss;
  struct fs_blob *px = fs_blob_plain (ls->xml);
  CLEANUP_FREE char *dx = NULL;
  size_t dxlen = 0, i, j;
  const struct domxml_disk *rec;
  struct vd_netsrc *net = NULL;
  int ret = -1;

  if (!px)
    return -1;
  if (domxml_parse_snapshot (px->data, px->len, &sx) < 0) {
    fs_blob_unref (px);
    if (errno == ENOMEM)
      return -1;
    vd_error ("domain %s: snapshot %s: cannot parse its XML (not shown)",
              b->dname, ls->name);
    return 0;
  }
  ss = add_snap (b);
  if (!ss)
    goto out;
  ss->name = ls->name;
  ss->ename = vd_name_escape (ls->name);
  if (!ss->ename)
    goto out;
  ss->sec = sx.creation_time;
  ss->snapxml = fs_blob_ref (ls->xml);
  dx = domxml_snapshot_domain (px->data, px->len, &dxlen);
  /* Snapshots of one definition share its bytes: one copy in memory
   * (some 6 MiB for 1,000 domains with 10 snapshots each).  The usual
   * case, the previous snapshot's definition again, is seen before
   * compressing (a deflate per snapshot was a tenth of the daemon's CPU
   * in the first listing of bench/many-domains.sh). */
  if (dx && b->last_dx && dxlen == b->last_dxlen
      && memcmp (dx, b->last_dx, dxlen) == 0)
    ss->domxml = fs_blob_ref (b->last_domxml);
  else if (dx) {
    if ((ss->domxml = scan_virsh_blob (dx, dxlen)) == NULL)
      goto out;
    for (i = 0; i + 1 < b->nsnaps; i++)
      if (fs_blob_equal (b->snaps[i].domxml, ss->domxml)) {
        fs_blob_unref (ss->domxml);
        ss->domxml = fs_blob_ref (b->snaps[i].domxml);
        break;
      }
    free (b->last_dx);
    b->last_dx = dx;
    b->last_dxlen = dxlen;
    b->last_domxml = ss->domxml;
    dx = NULL;
  }

  for (i = 0; i < sx.ndisks; i++) {
    const struct domxml_disk *d = &sx.disks[i];
    const char *mode = NULL, *format;
    CLEANUP_FREE char *path = NULL;
    struct disk_scan *ds;
    struct domxml_class dc;

    domxml_disk_classify (d, &dc);
    if (!dc.is_disk || !d->target)
      continue;
    format = dc.format;
    for (j = 0; j < sx.nsnapdisks; j++)
      if (streq (sx.snapdisks[j].target, d->target))
        mode = sx.snapdisks[j].snapshot;
    if (!mode)
      mode = dc.qcow2 ? "internal" : "no";
    if (strcmp (mode, "no") == 0)
      continue;
    if (strcmp (mode, "internal") != 0 && strcmp (mode, "external") != 0) {
      if (b->log)
        vd_warn ("domain %s: snapshot %s: disk %s (snapshot='%s') is not "
                 "shown", b->dname, ls->name, d->target, mode);
      continue;
    }
    vd_netsrc_free (net);
    if (disk_path (b, d, &dc, &path, &net) < 0) {
      if (errno == ENOMEM)
        goto out;
      continue;
    }
    if (!path) {
      /* Fall back to the current definition's disk of that target. */
      for (j = 0; j < ncur; j++)
        if (streq (cur[j].target, d->target) && cur[j].source
            && (path = strdup (cur[j].source)) == NULL)
          goto out;
    }
    ds = add_disk (&ss->disks, &ss->ndisks, &ss->capdisks);
    if (!ds)
      goto out;
    /* An internal snapshot of the current disk's image: the chain the
     * current definition records applies to it too. */
    rec = NULL;
    if (strcmp (mode, "internal") == 0)
      for (j = 0; j < ncur; j++)
        if (streq (cur[j].target, d->target) && streq (cur[j].source, path))
          rec = &cur[j];
    /* External: the file the domain used then, now the backing file of
     * the overlay the snapshot created; it no longer changes. */
    if (fill_disk (b, ds, d->target, path, format,
                   strcmp (mode, "internal") == 0 ? ls->name : NULL,
                   false, rec, net) < 0)
      goto out;
    ds->sec = ss->sec;
  }
  ret = 0;
 out:
  vd_netsrc_free (net);
  if (ret < 0)
    errno = ENOMEM;
  fs_blob_unref (px);
  domxml_snapshot_clear (&sx);
  return ret;
}

/* qcow2 snapshots of the current disks that libvirt does not know. */
static int
build_image_snapshots (struct build *b, const struct virt_snap *snaps,
                       size_t nsnaps)
{
  size_t i, k, j, nlibvirt = b->nsnaps;

  for (i = 0; i < b->ndisks; i++) {
    const struct disk_scan *ad = &b->disks[i];
    struct img_info *ii;

    if (!ad->path || ad->err)
      continue;
    ii = image_info (b, ad->path, ad->format, ad->policy, ad->net);
    if (!ii)
      return -1;
    for (k = 0; k < ii->nsnaps; k++) {
      const struct vd_snapshot *vs = &ii->snaps[k];
      CLEANUP_FREE char *ename = NULL;
      struct snap_scan *ss = NULL;
      struct disk_scan *ds;
      bool known = false;

      for (j = 0; j < nsnaps; j++)
        if (strcmp (snaps[j].name, vs->name) == 0)
          known = true;
      if (known)
        continue;
      /* As images mode: the first of equal tags in this image as is,
       * the others with their id; an empty tag by id. */
      for (j = 0; j < k; j++)
        if (strcmp (ii->snaps[j].name, vs->name) == 0)
          known = true;
      if (vs->name[0] == '\0') {
        if (asprintf (&ename, "(id %s)", vs->id) < 0) {
          ename = NULL;
          return -1;
        }
      }
      else if ((ename = vd_name_escape (vs->name)) == NULL)
        return -1;
      else if (known) {
        char *t;
        if (asprintf (&t, "%s (id %s)", ename, vs->id) < 0)
          return -1;
        free (ename);
        ename = t;
      }
      for (j = nlibvirt; j < b->nsnaps; j++)
        if (strcmp (b->snaps[j].ename, ename) == 0)
          ss = &b->snaps[j];
      if (!ss) {
        if (snap_shown (b, ename)) {
          vd_warn ("domain %s: %s: snapshot %s clashes with a libvirt "
                   "snapshot's name, not shown", b->dname, ad->path, ename);
          continue;
        }
        ss = add_snap (b);
        if (!ss)
          return -1;
        ss->ename = ename;
        ename = NULL;
        ss->name = vs->name;
        ss->sec = vs->date_sec;
        ss->nsec = vs->date_nsec;
      }
      ds = add_disk (&ss->disks, &ss->ndisks, &ss->capdisks);
      if (!ds)
        return -1;
      memset (ds, 0, sizeof *ds);
      if (asprintf (&ds->fname, "%s", ad->fname) < 0
          || (ds->path = strdup (ad->path)) == NULL
          || (ds->format = strdup (ad->format)) == NULL
          || (ds->snap_id = strdup (vs->id)) == NULL
          || (ad->net && (ds->net = vd_netsrc_dup (ad->net)) == NULL))
        return -1;
      ds->st = ii->st;
      ds->have_st = ii->have_st;
      ds->read_mode = ii->read_mode;
      ds->size = vs->disk_size;
      ds->sec = ss->sec;
      ds->nsec = ss->nsec;
    }
  }
  return 0;
}

/* The LVM snapshots of a block disk (a logical volume), LVM's answer l
 * (libvirt-lvm.c; NULL: it failed with err), into b, merged with
 * snapshots of the same name already there.  Not a logical volume
 * (ENOTSUP): nothing.  ENOMEM: -1. */
int
scan_lvm_snapshots (struct build *b, const char *fname, const char *path,
                    const struct snap_list *l, int err)
{
  const struct snap_info *v;
  size_t n, i, j;

  if (!l || l->err) {
    int e = l ? l->err : err;
    if (e != ENOTSUP && e != ENOENT && b->log)
      vd_warn ("domain %s: %s: %s: cannot list its LVM snapshots",
               b->dname, fname, path);
    return 0;
  }
  v = l->snaps;
  n = l->n;
  b->on_lvm = true;
  for (i = 0; i < n; i++) {
    const struct snap_info *si = &v[i];
    CLEANUP_FREE char *ename = vd_name_escape (si->name);
    struct snap_scan *ss = NULL;
    struct disk_scan *ds;
    bool dup = false;

    if (!ename)
      return -1;
    for (j = 0; j < b->nsnaps; j++)
      if (strcmp (b->snaps[j].ename, ename) == 0)
        ss = &b->snaps[j];
    if (ss) {
      for (j = 0; j < ss->ndisks; j++)
        dup |= strcmp (ss->disks[j].fname, fname) == 0;
      if (dup) {
        vd_warn ("domain %s: LVM snapshot %s of %s: its snapshot directory "
                 "has a %s already, not shown", b->dname, si->id, path,
                 fname);
        continue;
      }
    }
    else {
      ss = add_snap (b);
      if (!ss)
        return -1;
      ss->ename = ename;
      ename = NULL;
      ss->name = NULL;
      ss->sec = si->ctime_sec;
    }
    ds = add_disk (&ss->disks, &ss->ndisks, &ss->capdisks);
    if (!ds || (ds->fname = strdup (fname)) == NULL
        || (ds->format = strdup ("raw")) == NULL
        || (ds->path = strdup (si->device)) == NULL)
      return -1;
    ds->size = si->size;
    ds->sec = ss->sec;
    ds->nsec = ss->nsec;
    if (si->flags & SNAP_INVALID) {
      vd_error ("domain %s: LVM snapshot %s of %s is invalid (overflowed): "
                "shown empty, fails to open", b->dname, si->id, path);
      ds->err = EIO;
      ds->size = 0;
    }
    else if (si->flags & SNAP_NEEDS_ACTIVATION) {
      ds->lvm_id = strdup (si->id);
      if (!ds->lvm_id)
        return -1;
      ds->lvm_flags = si->flags;
    }
    else {
      ds->have_st = stat (si->device, &ds->st) == 0;
      ds->read_mode = ds->st.st_mode & 0444;
    }
  }
  return 0;
}

/* The model of a domain into b: its current disks (cur, from its XML;
 * running: the domain runs), libvirt's snapshots (snaps, sorted by name)
 * and the qcow2 snapshots of the current disks that libvirt does not
 * know.  0, or -1 (ENOMEM). */
int
scan_domain (struct build *b, const struct domxml_disk *cur, size_t ncur,
             bool running, const struct virt_snap *snaps, size_t nsnaps)
{
  size_t i;

  for (i = 0; i < ncur; i++) {
    const struct domxml_disk *x = &cur[i];
    CLEANUP_FREE char *path = NULL;
    struct disk_scan *ds;
    struct domxml_class dc;

    /* Every disk of the definition is shown: snapshot='no', <readonly/>
     * and <shareable/> (dc.left_out, dc.written) are domsnap's, not the
     * tree's. */
    domxml_disk_classify (x, &dc);
    if (!dc.is_disk || !x->target)
      continue;
    struct vd_netsrc *net = NULL;
    int r;

    if (disk_path (b, x, &dc, &path, &net) < 0)
      continue;
    ds = add_disk (&b->disks, &b->ndisks, &b->capdisks);
    r = !ds ? -1 : fill_disk (b, ds, x->target, path, dc.format, NULL,
                              running, x, net);
    vd_netsrc_free (net);
    if (r < 0)
      return -1;
  }
  for (i = 0; i < nsnaps; i++)
    if (build_libvirt_snapshot (b, &snaps[i], cur, ncur) < 0)
      return -1;
  if (build_image_snapshots (b, snaps, nsnaps) < 0)
    return -1;
  return 0;
}

/* The domain's UEFI variable store (<os><nvram> of its XML xml) as
 * nvram.fd among its current disks: a raw disk like the others (read,
 * written by restores under the same locks, its size and mtime the
 * file's), never part of a snapshot (libvirt's internal snapshots do not
 * cover it).  <os firmware='efi'> without <nvram>: at libvirt's default
 * path (libvirt-nvram.c).  No <nvram>, a network one: nothing.  A file
 * that does not exist (yet): nothing either, as a file manager expects
 * of a file that is not there (libvirt makes it from the template at the
 * first start, whose lifecycle event rescans the domain); a backup never
 * fails on it.  Any other failure to open it: shown empty, failing with
 * EIO, as a disk.  0, or -1 (ENOMEM). */
int
scan_nvram (struct build *b, const char *xml, size_t len, bool running)
{
  struct domxml_nvram nv;
  struct disk_scan *ds;
  struct stat st;
  const char *format;
  int r = 0;

  if (domxml_parse_nvram (xml, len, &nv) < 0)
    return errno == ENOMEM ? -1 : 0;   /* unparsable: rebuild logged it */
  if (!nv.path && !nv.type && streq (nv.firmware, "efi")) {
    /* Firmware chosen by libvirt at start: the store, if the firmware has
     * one, is at libvirt's default path. */
    nv.path = libvirt_nvram_default (b->dname);
  }
  if (!nv.path) {
    if (nv.type && b->log)
      vd_warn ("domain %s: its NVRAM (<nvram type='%s'>) is not shown (not "
               "readable by vmdiskfs yet)", b->dname, nv.type);
    goto out;
  }
  /* Not stat(2) (a symlink into our mount), and nothing inside the mount
   * touched: such a path is left to fill_named (shown with EIO). */
  if (!scan_inside_mount (nv.path)
      && vd_stat_checked (nv.path, NULL, &st) < 0 && errno == ENOENT) {
    if (b->log)
      vd_info ("domain %s: its NVRAM %s does not exist yet (nvram.fd not "
               "shown)", b->dname, nv.path);
    goto out;
  }
  format = nv.format ? nv.format : "raw";
  ds = add_disk (&b->disks, &b->ndisks, &b->capdisks);
  if (!ds || fill_named (b, ds, strdup ("nvram.fd"), "nvram", nv.path,
                         format, NULL, running, NULL, NULL) < 0)
    r = -1;
 out:
  domxml_nvram_clear (&nv);
  return r;
}
