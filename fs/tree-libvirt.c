/* vmdiskfs - the libvirt provider (the default mode; -o connect=URI):
 * one directory per persistent domain, running or shut off:
 *
 *   /<domain>/domain.xml                     virsh dumpxml --inactive
 *   /<domain>/<target>.img                   each <disk device='disk'>
 *   /<domain>/snapshots/<snapshot>/domain.xml   the definition stored with
 *   /<domain>/snapshots/<snapshot>/snapshot.xml the snapshot, its XML
 *   /<domain>/snapshots/<snapshot>/<target>.img that disk at the snapshot
 *
 * Disks: type file and block are opened at their <source> with the
 * format of <driver type> (raw when absent; never probed: a raw disk
 * whose guest wrote a qcow2 header stays raw); type volume is resolved
 * through its storage pool (virStorageVolGetPath).  CD-ROMs, floppies
 * and LUN passthrough are not disks and are not shown; network disks and
 * other types are logged and not shown.  A disk that fails to open
 * (missing, unreadable, unsupported format) is shown empty, logged, and
 * fails to open with EIO.
 *
 * Snapshots: every libvirt snapshot (virDomainListAllSnapshots).  For a
 * disk it took internally, <target>.img is the qcow2 snapshot of the same
 * name in that disk's image (the path from the snapshot's own domain
 * XML, else the current one), at the size recorded in it; for a disk
 * it took externally, the file the domain used before (now the overlay's
 * backing file).  Internal qcow2 snapshots libvirt does not know (made
 * with qemu-img snapshot) are shown too, by tag, with only their disks.
 * Disks on LVM logical volumes (type block, or volume in a logical
 * pool): their LVM snapshots, as
 * snapshotter/ lists them (lvm_snapshotter, liblvm2cmd in a forked
 * child), in directories of the names it gives, merged with a libvirt or
 * qemu-img snapshot of the same name; a snapshot that needs activation
 * (thin) is activated when opened and deactivated after LVM_IDLE_MS
 * without use (checked by a timer of the event loop), and at exit.
 *
 * Times: a disk has its image file's (or device's) mtime; a snapshot
 * directory and everything in it the snapshot's creation time; a domain
 * directory, its domain.xml and snapshots/ the mtime of libvirt's config
 * file /etc/libvirt/qemu/<name>.xml for qemu:///system, else the time
 * the daemon first saw that definition.  Modes: directories 0555, XML
 * files 0400 (root's), disks the read bits of their image file or device.
 *
 * Keeping up to date, cheaply (tree.c calls stale() on every access to a
 * node, refresh() when it says so):
 *  - the root is relisted (one virConnectListAllDomains) when a lifecycle
 *    event said a domain was defined or undefined, and at most every
 *    ROOT_RECHECK_MS otherwise;
 *  - a domain is refetched from libvirt (XML, snapshot list, new
 *    snapshots' XML) when an event named it or after a reconnect; its
 *    snapshot list is compared (one virDomainListAllSnapshots), since
 *    snapshot metadata changes send no event: for qemu:///system when
 *    libvirt's snapshot metadata directory of the domain changes
 *    (/var/lib/libvirt/qemu/snapshot/<name>, one stat), else at most
 *    every DOM_RECHECK_MS (for qemu:///system too, every
 *    LOCAL_RECHECK_MS, in case that directory moves);
 *    its disks are reopened when an image file's stat changes (qemu-img
 *    snapshot, a running guest), at most every DISK_MIN_RESCAN_MS, with no
 *    libvirt call beyond the snapshot list; a domain with a disk on LVM
 *    is rebuilt every LVM_CACHE_MS while used (LVM snapshots made by
 *    others leave no trace to watch; one lvs answers for all domains);
 *  - the kernel is told about removed entries and changed files by tree.c.
 * No libvirt call is ever made on the read path: disks are read from
 * their files, XML from memory.  Images are opened on demand (open,
 * getattr's allocation count) and closed with their last reader, so 1,000
 * domains do not hold 1,000 open images.
 *
 * Snapshots are made and deleted by mkdir and rmdir (libvirt-dirs.c).
 * The connection, events and fetches are libvirt-source.c's; the model
 * of a domain's tree libvirt-scan.c's, put into the tree by
 * libvirt-apply.c; LVM's answers and activations libvirt-lvm.c's.
 *
 * Threads:
 *  - the FUSE threads call stale() (tree_lock read) and, serialized by
 *    tree.c's refresh_lock, refresh() and start(); open_disk(), mkdir()
 *    and rmdir() from any thread without locks (the last two call
 *    domsnap, which holds the domain's lock (a flock) for the create or
 *    delete, then refresh_lock through tree_refresh);
 *  - one event thread runs libvirt's default event loop: keepalive, the
 *    close callback and lifecycle events, whose callbacks only set
 *    atomics, add names to the dirty set (dirty_lock, a leaf lock) and
 *    queue kernel invalidations (tree.c's notify queue): they never take
 *    tree or connection locks, and never call libvirt;
 *    and the LVM idle timer (libvirt-lvm.c), which takes act_lock, then
 *    inode_lock and node->lock (one at a time) to see whether a snapshot
 *    is open, and runs lvm in a helper child.
 * What protects what: libvirt-priv.h, field by field; the lock order is
 * vmdiskfs.h's.
 *
 * The active disk of a running domain is opened with VD_OPEN_LIVE (when
 * the formats library has it): crash-consistent reads while qemu writes;
 * snapshots are immutable and opened plainly.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "escape.h"
#include "log.h"

static void
watch_free (struct virt_watch *w, size_t n)
{
  size_t i;

  if (!w)
    return;
  for (i = 0; i < n; i++)
    free (w[i].path);
  free (w);
}

static void
dom_priv_free (void *p)
{
  struct virt_dom *d = p;

  if (!d)
    return;
  free (d->name);
  watch_free (d->watch, d->nwatch);
  free (d->meta.path);
  if (d->dom)
    virDomainFree (d->dom);
  fs_blob_unref (d->xml);
  virt_snaps_free (d->snaps, d->nsnaps);
  virt_pre_free (d->pre);     /* no thread fetches: it holds the node */
  free (d);
}

static bool
one_changed (const struct virt_watch *w)
{
  struct stat st;
  int err;

  if (!w->path)
    return false;
  err = stat (w->path, &st) < 0 ? errno : 0;
  return err != w->err || (!err && vd_stat_changed (&st, &w->st));
}

/* tree_lock held.  Did a watched file change? */
static bool
watch_changed (const struct virt_dom *d)
{
  size_t i;

  for (i = 0; i < d->nwatch; i++) {
    struct stat st;
    int err = stat (d->watch[i].path, &st) < 0 ? errno : 0;
    if (err != d->watch[i].err || (!err && vd_stat_changed (&st, &d->watch[i].st)))
      return true;
  }
  return false;
}

/* The domain's definition time (see the header). */
static int64_t
domain_time (struct virt_dom *d)
{
  if (virt_system_uri) {
    CLEANUP_FREE char *p = NULL;
    struct stat st;
    if (asprintf (&p, "/etc/libvirt/qemu/%s.xml", d->name) >= 0
        && stat (p, &st) == 0)
      return st.st_mtim.tv_sec;
  }
  return d->first_seen;
}

/* Build the domain's tree from d's cached libvirt data (refresh_lock
 * held, no tree_lock), opening its images; then apply it. */
static void
rebuild (struct fs_node *node, struct virt_dom *d, virConnectPtr c, bool log)
{
  struct build b = {
    .dname = d->name, .c = c, .volume_path = virt_volume_path,
    .netsrc = virt_build_netsrc, .log = log,
  };
  struct domxml_disk *cur = NULL;
  struct virt_watch *watch = NULL;
  size_t ncur = 0, i, nw = 0, nactive_disks;
  int64_t dsec = domain_time (d);
  struct fs_blob *px = d->xml ? fs_blob_plain (d->xml) : NULL;

  if (px && domxml_parse_domain (px->data, px->len, &cur, &ncur) < 0) {
    vd_error ("domain %s: cannot parse its XML: %s (no disks shown)",
              d->name, strerror (errno));
    cur = NULL;
    ncur = 0;
  }
  if (scan_domain (&b, cur, ncur, d->running, d->snaps, d->nsnaps) < 0)
    goto nomem;
  /* LVM snapshots of disks on block devices (type block, or a volume
   * of a logical pool), after the others (merged by name). */
  for (i = 0, nactive_disks = b.ndisks; i < nactive_disks; i++) {
    const struct disk_scan *ds = &b.disks[i];
    const struct snap_list *l;

    if (!ds->path || !ds->have_st || !S_ISBLK (ds->st.st_mode))
      continue;
    l = lvm_cache_snaps (ds->path);
    if (scan_lvm_snapshots (&b, ds->fname, ds->path, l, l ? 0 : errno) < 0)
      goto nomem;
  }

  /* The UEFI variable store: a current disk, after the LVM snapshots
   * (never part of a snapshot). */
  if (px && scan_nvram (&b, px->data, px->len, d->running) < 0)
    goto nomem;

  /* Watch the current disks' files. */
  watch = calloc (b.ndisks ? b.ndisks : 1, sizeof *watch);
  if (!watch)
    goto nomem;
  for (i = 0; i < b.ndisks; i++) {
    if (!b.disks[i].path || b.disks[i].net
        || scan_inside_mount (b.disks[i].path))
      continue;
    watch[nw].path = strdup (b.disks[i].path);
    if (!watch[nw].path)
      goto nomem;
    /* The state the build saw, so that a change meanwhile is seen. */
    if (b.disks[i].have_st)
      watch[nw].st = b.disks[i].st;
    else
      watch[nw].err = stat (watch[nw].path, &watch[nw].st) < 0 ? errno : 0;
    nw++;
  }

  tree_wrlock ();
  if (node->attached) {
    apply_domain (node, d, &b, dsec);
    d->on_lvm = b.on_lvm;
    watch_free (d->watch, d->nwatch);
    d->watch = watch;
    d->nwatch = nw;
    watch = NULL;
  }
  tree_unlock ();
  goto out;

 nomem:
  vd_error ("domain %s: out of memory", d->name);
 out:
  watch_free (watch, nw);
  domxml_disks_free (cur, ncur);
  fs_blob_unref (px);
  scan_free (&b);
}

static void refresh_root (struct fs_node *root);

/* Bring a domain directory up to date (refresh_lock held). */
static void
refresh_domain (struct fs_node *node)
{
  struct virt_dom *d;
  virConnectPtr c;
  bool scanned, full, recheck, changed, build, meta_changed, dirty;
  struct virt_watch meta = { NULL, { 0 }, 0 };
  unsigned ep = __atomic_load_n (&virt_epoch, __ATOMIC_ACQUIRE), dep;
  uint64_t now = vd_now_ms (), checked, disks_ms;

  tree_rdlock ();
  d = node->priv;
  if (!node->attached || !d) {
    tree_unlock ();
    return;
  }
  scanned = d->scanned;
  dep = d->epoch;
  checked = d->checked_ms;
  disks_ms = d->disks_ms;
  /* LVM snapshots made by others send nothing: a domain on LVM is
   * rebuilt every LVM_CACHE_MS when used (one lvs for all of them). */
  changed = (d->on_lvm && now - disks_ms >= LVM_CACHE_MS)
    || (now - disks_ms >= DISK_MIN_RESCAN_MS && watch_changed (d));
  meta_changed = one_changed (&d->meta);
  tree_unlock ();

  full = !scanned || dep != ep;
  dirty = virt_is_dirty (d->name, true);
  full |= dirty;
  recheck = full || changed || meta_changed
    || now - checked >= (virt_system_uri ? LOCAL_RECHECK_MS : DOM_RECHECK_MS);
  if (recheck && virt_system_uri) {
    /* Before looking, so that a change meanwhile is seen next time. */
    if (asprintf (&meta.path, "/var/lib/libvirt/qemu/snapshot/%s",
                  d->name) < 0)
      meta.path = NULL;
    else
      meta.err = stat (meta.path, &meta.st) < 0 ? errno : 0;
  }
  build = full || changed;

  c = recheck ? virt_get_conn () : NULL;
  if (c && !scanned && virt_prefetch_take (d, ep, !dirty))
    ;                           /* fetched ahead, in this epoch */
  else if (c) {
    /* Looked up again after an event: the name may stand for another
     * domain now (undefined and defined again). */
    if (!d->dom || d->dom_epoch != ep || full) {
      if (d->dom)
        virDomainFree (d->dom);
      d->dom = virDomainLookupByName (c, d->name);
      d->dom_epoch = ep;
      if (!d->dom) {
        if (virt_last_code () == VIR_ERR_NO_DOMAIN)
          goto gone;
        virt_error ("domain %s", d->name);
        goto done;
      }
    }
    if (full) {
      if (virt_fetch_domain (d, !scanned || dep != ep) < 0) {
        if (errno == ENOENT)
          goto gone;
        goto done;
      }
    }
    else {
      struct virt_snap *v;
      size_t n;
      if (virt_fetch_snapshots (d, false, false, &v, &n) == 0) {
        if (!virt_same_names (d, v, n)) {
          build = true;
          virt_snaps_free (v, n);
          if (virt_fetch_domain (d, false) < 0 && errno == ENOENT)
            goto gone;
        }
        else
          virt_snaps_free (v, n);
      }
    }
  }
  else if (recheck && !scanned)
    vd_error ("domain %s: not connected to %s (shown empty)", d->name, virt_uri);

 done:
  if (build || !scanned)
    rebuild (node, d, c, full);
  tree_wrlock ();
  d->scanned = true;
  if (c)
    d->epoch = ep;
  if (recheck) {
    d->checked_ms = now;
    if (meta.path) {
      free (d->meta.path);
      d->meta = meta;
      meta.path = NULL;
    }
  }
  if (build)
    d->disks_ms = now;
  tree_unlock ();
  if (c)
    virConnectClose (c);
  free (meta.path);
  return;

 gone:
  /* Undefined meanwhile: the root's listing drops it. */
  if (d->dom)
    virDomainFree (d->dom);
  d->dom = NULL;
  if (c)
    virConnectClose (c);
  free (meta.path);
  __atomic_store_n (&virt_root_dirty, 1, __ATOMIC_RELEASE);
  refresh_root (tree_root ());
}

/* Relist the domains (refresh_lock held). */
static void
refresh_root (struct fs_node *root)
{
  struct virt_root *r = root->priv;
  virDomainPtr *doms = NULL;
  struct fs_node **kids = NULL, **fresh = NULL;
  virConnectPtr c;
  int n = 0, i;
  size_t k = 0, nfresh = 0;
  uint64_t now = vd_now_ms ();

  __atomic_store_n (&virt_root_dirty, 0, __ATOMIC_RELEASE);
  c = virt_get_conn ();
  if (!c)
    goto done;
  n = virConnectListAllDomains (c, &doms, VIR_CONNECT_LIST_DOMAINS_PERSISTENT);
  if (n < 0) {
    virt_error ("cannot list domains (showing the last listing)");
    goto done;
  }
  kids = calloc (n ? n : 1, sizeof *kids);
  fresh = calloc (n ? n : 1, sizeof *fresh);
  if (!kids || !fresh) {
    vd_error ("out of memory");
    free (kids);
    goto done;
  }
  tree_wrlock ();
  for (i = 0; i < n; i++) {
    const char *name = virDomainGetName (doms[i]);
    CLEANUP_FREE char *ename = name ? vd_name_escape (name) : NULL;
    struct fs_node *node;
    struct virt_dom *d;

    if (!ename)
      continue;
    node = tree_find_child (root, ename);
    if (node && node->priv) {
      kids[k++] = inode_ref (node);
      if (!((struct virt_dom *) node->priv)->scanned)
        fresh[nfresh++] = inode_ref (node);
      continue;
    }
    node = tree_get_node (FS_NODE_DIR, "/%s", ename);
    if (!node)
      continue;
    d = calloc (1, sizeof *d);
    if (!d || (d->name = strdup (name)) == NULL) {
      free (d);
      inode_unref (node);
      continue;
    }
    /* A node the kernel remembered from before: start afresh. */
    if (node->priv_free)
      node->priv_free (node->priv);
    node->priv = d;
    node->priv_free = dom_priv_free;
    d->dom = doms[i];
    d->dom_epoch = __atomic_load_n (&virt_epoch, __ATOMIC_ACQUIRE);
    d->first_seen = time (NULL);
    doms[i] = NULL;
    tree_set_attr (&node->attr, S_IFDIR | 0555, 3, 0, 0, 0, d->first_seen, 0);
    kids[k++] = node;
    fresh[nfresh++] = inode_ref (node);
  }
  tree_set_children (root, kids, k);
  root->attr.st_nlink = 2 + k;
  r->scanned = true;
  virt_prune_dirty (root);
  tree_unlock ();
  vd_debug ("%s: %zu domains", virt_uri, k);
  /* Their first scans' libvirt calls, made ahead several at a time. */
  virt_prefetch (fresh, nfresh);
 done:
  free (fresh);
  tree_wrlock ();
  r->listed_ms = now;
  tree_unlock ();
  if (doms) {
    for (i = 0; i < n; i++)
      if (doms[i])
        virDomainFree (doms[i]);
    free (doms);
  }
  if (c)
    virConnectClose (c);
}

/* ---- The provider. ---- */

/* Does virt_uri name another host?  Disk paths are opened here. */
static bool
remote_uri (const char *u)
{
  const char *p = strstr (u, "://");

  return p && p[3] && p[3] != '/';
}

static int
libvirt_start (struct fs_node *root)
{
  const char *u = fs_config.connect;
  struct virt_root *r;
  time_t now = time (NULL);

  if (!u || !*u)
    u = getenv ("LIBVIRT_DEFAULT_URI");
  if (!u || !*u)
    u = "qemu:///system";
  virt_uri = strdup (u);
  if (!virt_uri)
    return -1;
  virt_system_uri = strcmp (virt_uri, "qemu:///system") == 0;
  virSetErrorFunc (NULL, virt_silent);
  if (virInitialize () < 0) {
    fprintf (stderr, "vmdiskfs: cannot initialise libvirt\n");
    return -1;
  }
  domxml_init ();
  if (virt_check_connect () < 0)
    return -1;
  if (remote_uri (virt_uri))
    fprintf (stderr, "vmdiskfs: warning: %s names another host: the disk "
             "paths it gives are opened on this one (shared storage)\n", virt_uri);

  r = calloc (1, sizeof *r);
  if (!r)
    return -1;
  root->priv = r;
  root->priv_free = free;
  tree_set_attr (&root->attr, S_IFDIR | 0555, 2, 0, 0, 0, now, 0);
  return 0;
}

static void
libvirt_mounted (void)
{
  /* Before the event loop exists (see virt_prefetch_open); a remote
   * host's connections cost more to open than they save. */
  if (!remote_uri (virt_uri))
    virt_prefetch_open ();
  if (virt_events_start () == 0)
    lvm_idle_start ();
}

static bool
libvirt_stale (struct fs_node *node)
{
  uint64_t now = vd_now_ms ();

  if (node == tree_root ()) {
    struct virt_root *r = node->priv;
    return !r->scanned || __atomic_load_n (&virt_root_dirty, __ATOMIC_ACQUIRE)
      || now - r->listed_ms >= ROOT_RECHECK_MS;
  }
  else {
    struct virt_dom *d = node->priv;
    if (!d || !d->scanned
        || d->epoch != __atomic_load_n (&virt_epoch, __ATOMIC_ACQUIRE)
        || now - d->checked_ms >= (virt_system_uri ? LOCAL_RECHECK_MS
                                   : DOM_RECHECK_MS)
        || virt_is_dirty (d->name, false) || one_changed (&d->meta))
      return true;
    return now - d->disks_ms >= (d->on_lvm ? LVM_CACHE_MS
                                 : DISK_MIN_RESCAN_MS)
      && (d->on_lvm || watch_changed (d));
  }
}

static void
libvirt_refresh (struct fs_node *node)
{
  if (node == tree_root ())
    refresh_root (node);
  else
    refresh_domain (node);
}

/* Open a disk node's image: the active disk (LIVE while its domain
 * runs), or a snapshot of it. */
static struct fs_disk *
libvirt_open_disk (struct fs_node *node)
{
  CLEANUP_FREE char *path = NULL, *format = NULL, *snap = NULL;
  CLEANUP_FREE char *lvm_id = NULL;
  struct vd_policy *pol = NULL;
  struct vd_netsrc *net = NULL;
  unsigned lvm_flags = 0;
  struct stat scanned;
  mode_t shown = 0;
  struct virt_disk *k;
  struct vd_image *img, *s;
  unsigned flags = 0;
  int err = 0;

  tree_rdlock ();
  k = node->priv;
  if (!k)
    err = ENOENT;
  else if (k->err || !k->path)
    err = EIO;
  else {
    path = strdup (k->path);
    format = strdup (k->format);
    snap = k->snap_id ? strdup (k->snap_id) : NULL;
    lvm_id = k->lvm_id ? strdup (k->lvm_id) : NULL;
    lvm_flags = k->lvm_flags;
    pol = vd_policy_dup (k->policy);
    net = k->net ? vd_netsrc_dup (k->net) : NULL;
    scanned = k->st;
    shown = node->attr.st_mode & 0444;
    if (!path || !format || (k->snap_id && !snap) || (k->lvm_id && !lvm_id)
        || (k->policy && !pol) || (k->net && !net))
      err = ENOMEM;
#ifdef VD_OPEN_LIVE
    if (k->live)
      flags |= VD_OPEN_LIVE;
#endif
  }
  tree_unlock ();
  if (err) {
    vd_policy_free (pol);
    vd_netsrc_free (net);
    errno = err;
    return NULL;
  }
  if (net) {
    /* A network disk (formats/netdisk.h): no file to check. */
    img = vd_net_open (net, 0);
    vd_netsrc_free (net);
    vd_policy_free (pol);
    if (img && snap) {
      s = vd_image_open_snapshot (img, snap);
      vd_image_close (img);
      img = s;
    }
    return img ? fs_disk_new (img) : NULL;
  }
  if (lvm_id && lvm_use (lvm_id, lvm_flags, node->ino) < 0) {
    vd_policy_free (pol);
    errno = EIO;
    return NULL;
  }
  img = vd_image_open_policy (path, format, flags, pol);
  vd_policy_free (pol);
  if (!img)
    return NULL;
  if (snap) {
    s = vd_image_open_snapshot (img, snap);
    vd_image_close (img);
    if (!s)
      return NULL;
    img = s;
  }
  if (!lvm_id && fs_disk_changed (img, &scanned, shown)) {
    vd_image_close (img);
    errno = EIO;
    return NULL;
  }
  return fs_disk_new (img);
}

static void
libvirt_stop (void)
{
  virt_prefetch_stop ();
  virt_conn_close ();
  lvm_idle_stop ();
  virt_events_stop ();
  virt_dirty_clear ();
  lvm_active_stop ();
  lvm_cache_clear ();
  free (virt_uri);
  virt_uri = NULL;
}

const struct fs_provider tree_libvirt_provider = {
  .name = "libvirt",
  .start = libvirt_start,
  .refresh = libvirt_refresh,
  .stale = libvirt_stale,
  .open_disk = libvirt_open_disk,
  .stop = libvirt_stop,
  .mounted = libvirt_mounted,
  .mkdir = libvirt_mkdir,
  .rmdir = libvirt_rmdir,
  .open_write = libvirt_open_write,
  .close_write = libvirt_close_write,
  .may_stage = libvirt_may_stage,
  .may_pend = libvirt_may_pend,
  .complete = libvirt_complete,
};
