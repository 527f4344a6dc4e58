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
 * Snapshots by mkdir and rmdir in <domain>/snapshots/ (ops.c calls
 * libvirt_mkdir and libvirt_rmdir): ds_create and ds_delete
 * (snapshotter/domsnap.h) with the shown name unescaped, serialized per
 * domain by domsnap's own lock, across threads and processes (ds_create
 * takes seconds: no tree or refresh lock is held meanwhile), then the
 * domain is refreshed at once, so that
 * the reply already shows the result.  While a snapshot is deleted its
 * files refuse opens (node->removing, EBUSY); one that is open makes
 * rmdir fail with EBUSY.
 *
 * The connection is read-write unless -o ro (snapshots); when libvirt
 * refuses that (not root, polkit) it is read-only, with one warning, and
 * mkdir and rmdir fail with EACCES.  It is opened on
 * first use after the daemon forked (libvirt's state and threads do not
 * survive fork: start() only checks that it can connect), and reopened
 * when libvirt says it closed (libvirtd restarted) at the next access,
 * at most every RECONNECT_MS; everything is then refetched.
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
 *    and the LVM idle timer, which takes act_lock, then inode_lock and
 *    node->lock (one at a time) to see whether a snapshot is open, and
 *    runs lvm in a helper child.
 * What protects what: conn_lock the connection, its mode and callback
 * ids; tree_lock the nodes and the fields of struct lv_dom that stale()
 * reads;
 * refresh_lock the rest of struct lv_dom (the libvirt data cached for
 * rebuilds); act_lock the list of LVM snapshots we activated (open_disk
 * takes it with no other lock held).  libvirt objects are thread-safe.
 * Lock order: domsnap's domain lock, refresh_lock, conn_lock, tree_lock,
 * node->lock, inode_lock;
 * act_lock before node->lock and inode_lock; dirty_lock is a leaf.
 *
 * The active disk of a running domain is opened with VD_OPEN_LIVE (when
 * the formats library has it): crash-consistent reads while qemu writes;
 * snapshots are immutable and opened plainly.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "vmdiskfs.h"
#include "domsnap.h"
#include "domxml.h"
#include "snapshotter.h"
#include "cleanup.h"
#include "escape.h"
#include "log.h"

#define ROOT_RECHECK_MS     2000
#define DOM_RECHECK_MS      3000
#define LOCAL_RECHECK_MS    600000
#define DISK_MIN_RESCAN_MS  1000
#define RECONNECT_MS        1000
#define MAX_DIRTY           1024   /* more: everything is refetched */
#define LVM_IDLE_MS         60000  /* deactivate a snapshot idle so long */

static char *uri;                  /* constant after start */
static bool system_uri;            /* qemu:///system: config file times */

/* The connection: conn_lock. */
static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static virConnectPtr conn;
static bool conn_ro;               /* conn is read-only (fallback)       */
static bool rw_warned;             /* the fallback was reported          */
static int lifecycle_id = -1;
static uint64_t last_connect_ms;
static bool connect_failing;

/* Atomics. */
static unsigned epoch = 1;         /* bumped: every domain is refetched  */
static int conn_broken;            /* set by the close callback          */
static int root_dirty;             /* a domain was defined or undefined  */
static int lvm_flush;              /* forget the cached LVM answers      */
static int events_on;              /* the event loop runs                */
static int event_quit;

static pthread_t event_thread;
static bool event_started;

/* Domains named by events since their last refetch: dirty_lock. */
static pthread_mutex_t dirty_lock = PTHREAD_MUTEX_INITIALIZER;
static char *dirty[MAX_DIRTY];
static size_t ndirty;              /* also read atomically without lock */

/* root->priv; tree_lock. */
struct lv_root {
  bool scanned;
  uint64_t listed_ms;
};

/* A file whose stat tells whether a domain's disks changed. */
struct lv_watch {
  char *path;
  struct stat st;
  int err;
};

/* A libvirt snapshot as fetched. */
struct lv_snap {
  char *name;
  struct fs_blob *xml;
};

/* priv of a domain directory. */
struct lv_dom {
  char *name;                      /* constant */

  /* tree_lock (read by stale()). */
  bool scanned;
  unsigned epoch;                  /* epoch of the last fetch            */
  uint64_t checked_ms;             /* last look at libvirt               */
  uint64_t disks_ms;               /* last reopening of the disks        */
  struct lv_watch *watch;
  size_t nwatch;
  struct lv_watch meta;            /* qemu:///system: snapshot metadata  */
  bool on_lvm;                     /* a disk is an LV: poll its snapshots */

  /* refresh_lock: libvirt's data, kept for rebuilds. */
  virDomainPtr dom;
  unsigned dom_epoch;
  struct fs_blob *xml;             /* NULL: never fetched                */
  bool running;
  struct lv_snap *snaps;           /* sorted by name                     */
  size_t nsnaps;
  int64_t first_seen;              /* when xml last changed              */
};

/* priv of a disk node: how to open it; tree_lock. */
struct lv_disk {
  char *path;
  char *format;
  char *snap_id;                   /* qcow2 snapshot id, or NULL         */
  bool live;                       /* a running domain's active disk     */
  char *lvm_id;                    /* LVM snapshot needing activation    */
  unsigned lvm_flags;
  struct stat st;                  /* the image file at the last scan    */
  int err;
  uint64_t size;
  struct vd_policy *policy;        /* the <backingStore> record, or NULL */
};

static uint64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- libvirt errors: the one helper. ---- */

static void
lv_silent (void *opaque, virErrorPtr e)
{
  /* libvirt would print every error to stderr; lv_error logs them. */
}

/* Log what failed with libvirt's last error of this thread; errno is
 * ENOENT for a domain or snapshot that no longer exists, else EIO. */
static void lv_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

static void
lv_error (const char *fmt, ...)
{
  virErrorPtr e = virGetLastError ();
  CLEANUP_FREE char *what = NULL;
  int code = e ? e->code : VIR_ERR_OK;
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&what, fmt, ap) < 0)
    what = NULL;
  va_end (ap);
  vd_error ("%s: %s: %s", uri, what ? what : "libvirt",
            e && e->message ? e->message : "unknown libvirt error");
  errno = code == VIR_ERR_NO_DOMAIN || code == VIR_ERR_NO_DOMAIN_SNAPSHOT
    ? ENOENT : EIO;
}

static int
lv_last_code (void)
{
  virErrorPtr e = virGetLastError ();

  return e ? e->code : VIR_ERR_OK;
}

/* ---- Events. ---- */

static void
mark_dirty (const char *name)
{
  size_t i;

  pthread_mutex_lock (&dirty_lock);
  for (i = 0; i < ndirty; i++)
    if (strcmp (dirty[i], name) == 0)
      break;
  if (i == ndirty) {
    char *s = strdup (name);
    if (s && ndirty < MAX_DIRTY)
      dirty[__atomic_add_fetch (&ndirty, 1, __ATOMIC_RELEASE) - 1] = s;
    else {
      /* Too many (or no memory): refetch everything. */
      free (s);
      __atomic_add_fetch (&epoch, 1, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock (&dirty_lock);
}

static bool
is_dirty (const char *name, bool take)
{
  bool found = false;
  size_t i;

  if (__atomic_load_n (&ndirty, __ATOMIC_ACQUIRE) == 0)
    return false;
  pthread_mutex_lock (&dirty_lock);
  for (i = 0; i < ndirty; i++)
    if (strcmp (dirty[i], name) == 0) {
      found = true;
      if (take) {
        free (dirty[i]);
        dirty[i] = dirty[ndirty - 1];
        __atomic_sub_fetch (&ndirty, 1, __ATOMIC_RELEASE);
      }
      break;
    }
  pthread_mutex_unlock (&dirty_lock);
  return found;
}

/* tree_lock held.  Forget dirty names of domains that are gone, so that
 * undefined domains do not fill the set. */
static void
prune_dirty (struct fs_node *root)
{
  size_t i;

  if (__atomic_load_n (&ndirty, __ATOMIC_ACQUIRE) == 0)
    return;
  pthread_mutex_lock (&dirty_lock);
  for (i = 0; i < ndirty; ) {
    CLEANUP_FREE char *e = vd_name_escape (dirty[i]);
    if (e && !tree_find_child (root, e)) {
      free (dirty[i]);
      dirty[i] = dirty[ndirty - 1];
      __atomic_sub_fetch (&ndirty, 1, __ATOMIC_RELEASE);
    }
    else
      i++;
  }
  pthread_mutex_unlock (&dirty_lock);
}

/* Event thread. */
static int
lifecycle_cb (virConnectPtr c, virDomainPtr dom, int event, int detail,
              void *opaque)
{
  const char *name = virDomainGetName (dom);

  vd_debug ("%s: event %d detail %d on %s", uri, event, detail,
            name ? name : "?");
  if (event == VIR_DOMAIN_EVENT_DEFINED
      || event == VIR_DOMAIN_EVENT_UNDEFINED)
    __atomic_store_n (&root_dirty, 1, __ATOMIC_RELEASE);
  if (name) {
    char *e = vd_name_escape (name);
    mark_dirty (name);
    /* The kernel forgets the domain's directory entry now instead of
     * trusting it for FS_ENTRY_TIMEOUT: the next access looks it up,
     * which refreshes it (or finds it gone). */
    if (e)
      tree_notify_entry (FUSE_ROOT_ID, e);
    free (e);
  }
  return 0;
}

/* Event thread. */
static void
close_cb (virConnectPtr c, int reason, void *opaque)
{
  __atomic_store_n (&conn_broken, 1, __ATOMIC_RELEASE);
  __atomic_store_n (&root_dirty, 1, __ATOMIC_RELEASE);
}

static void *
event_main (void *arg)
{
  while (!__atomic_load_n (&event_quit, __ATOMIC_ACQUIRE))
    if (virEventRunDefaultImpl () < 0) {
      lv_error ("event loop");
      sleep (1);
    }
  return NULL;
}

static void
wake_cb (int timer, void *opaque)
{
  virEventRemoveTimeout (timer);
}

/* ---- The connection. ---- */

/* conn_lock held. */
static void
drop_conn (void)
{
  if (!conn)
    return;
  if (lifecycle_id >= 0)
    virConnectDomainEventDeregisterAny (conn, lifecycle_id);
  lifecycle_id = -1;
  virConnectUnregisterCloseCallback (conn, close_cb);
  virResetLastError ();
  virConnectClose (conn);
  conn = NULL;
}

/* Connect read-write (unless -o ro), else read-only; *ro says which.
 * NULL when neither works (libvirt's error is the read-only one's). */
static virConnectPtr
connect_rw_or_ro (bool *ro, char **why)
{
  virConnectPtr c;
  virErrorPtr e;

  *ro = true;
  *why = NULL;
  if (fs_config.ro)
    return virConnectOpenReadOnly (uri);
  c = virConnectOpen (uri);
  if (c) {
    *ro = false;
    return c;
  }
  e = virGetLastError ();
  *why = strdup (e && e->message ? e->message : "unknown libvirt error");
  return virConnectOpenReadOnly (uri);
}

/* conn_lock held.  0 or -1 (logged unless quiet). */
static int
open_conn (bool quiet)
{
  CLEANUP_FREE char *why = NULL;
  bool ro;
  virConnectPtr c = connect_rw_or_ro (&ro, &why);

  if (c && ro && !fs_config.ro && !rw_warned) {
    vd_warn ("%s: cannot connect read-write (%s): connected read-only, "
             "mkdir and rmdir of snapshots fail with EACCES", uri,
             why ? why : "?");
    rw_warned = true;
  }
  if (!c) {
    if (!quiet)
      lv_error ("cannot connect (retrying at the next access)");
    return -1;
  }
  if (virConnectRegisterCloseCallback (c, close_cb, NULL, NULL) < 0)
    lv_error ("cannot watch the connection");
  if (__atomic_load_n (&events_on, __ATOMIC_ACQUIRE)) {
    lifecycle_id = virConnectDomainEventRegisterAny
      (c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
       VIR_DOMAIN_EVENT_CALLBACK (lifecycle_cb), NULL, NULL);
    if (lifecycle_id < 0)
      lv_error ("no domain events (changes show within %d s)",
                DOM_RECHECK_MS / 1000);
    if (virConnectSetKeepAlive (c, 5, 3) < 0)
      virResetLastError ();     /* not supported by every driver */
  }
  __atomic_store_n (&conn_broken, 0, __ATOMIC_RELEASE);
  __atomic_add_fetch (&epoch, 1, __ATOMIC_RELEASE);
  __atomic_store_n (&root_dirty, 1, __ATOMIC_RELEASE);
  conn = c;
  conn_ro = ro;
  return 0;
}

/* The connection with a new reference (virConnectClose it), reconnecting
 * if it was lost; NULL with errno ENOTCONN.  *ro (if not NULL): it is
 * read-only. */
static virConnectPtr
get_conn_mode (bool *ro)
{
  virConnectPtr c = NULL;
  uint64_t now = now_ms ();

  pthread_mutex_lock (&conn_lock);
  if (conn && (__atomic_load_n (&conn_broken, __ATOMIC_ACQUIRE)
               || virConnectIsAlive (conn) != 1)) {
    vd_warn ("%s: connection lost, reconnecting", uri);
    drop_conn ();
  }
  if (!conn && (last_connect_ms == 0
                || now - last_connect_ms >= RECONNECT_MS)) {
    last_connect_ms = now;
    if (open_conn (connect_failing) == 0) {
      if (connect_failing)
        vd_info ("%s: connected again", uri);
      connect_failing = false;
    }
    else
      connect_failing = true;
  }
  if (conn) {
    virConnectRef (conn);
    c = conn;
    if (ro)
      *ro = conn_ro;
  }
  pthread_mutex_unlock (&conn_lock);
  if (!c)
    errno = ENOTCONN;
  return c;
}

static virConnectPtr
get_conn (void)
{
  return get_conn_mode (NULL);
}

/* ---- Small helpers. ---- */

static bool
same_stat (const struct stat *a, const struct stat *b)
{
  return a->st_dev == b->st_dev && a->st_ino == b->st_ino
    && a->st_size == b->st_size && a->st_mode == b->st_mode
    && a->st_mtim.tv_sec == b->st_mtim.tv_sec
    && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec
    && a->st_ctim.tv_sec == b->st_ctim.tv_sec
    && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static bool
streq (const char *a, const char *b)
{
  return a == b || (a && b && strcmp (a, b) == 0);
}

static void
snaps_free (struct lv_snap *s, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    free (s[i].name);
    fs_blob_unref (s[i].xml);
  }
  free (s);
}

static void
watch_free (struct lv_watch *w, size_t n)
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
  struct lv_dom *d = p;

  if (!d)
    return;
  free (d->name);
  watch_free (d->watch, d->nwatch);
  free (d->meta.path);
  if (d->dom)
    virDomainFree (d->dom);
  fs_blob_unref (d->xml);
  snaps_free (d->snaps, d->nsnaps);
  free (d);
}

static void
disk_priv_free (void *p)
{
  struct lv_disk *k = p;

  if (k) {
    free (k->path);
    free (k->format);
    free (k->snap_id);
    free (k->lvm_id);
    vd_policy_free (k->policy);
    free (k);
  }
}

static bool
one_changed (const struct lv_watch *w)
{
  struct stat st;
  int err;

  if (!w->path)
    return false;
  err = stat (w->path, &st) < 0 ? errno : 0;
  return err != w->err || (!err && !same_stat (&st, &w->st));
}

/* tree_lock held.  Did a watched file change? */
static bool
watch_changed (const struct lv_dom *d)
{
  size_t i;

  for (i = 0; i < d->nwatch; i++) {
    struct stat st;
    int err = stat (d->watch[i].path, &st) < 0 ? errno : 0;
    if (err != d->watch[i].err || (!err && !same_stat (&st, &d->watch[i].st)))
      return true;
  }
  return false;
}

/* ---- A domain's tree, built from libvirt's data and its images. ---- */

/* An image file opened during a build: its size and snapshot table. */
struct img_info {
  char *path;
  char *format;
  int err;
  struct stat st;
  bool have_st;
  uint64_t size;
  mode_t read_mode;
  struct vd_snapshot *snaps;
  size_t nsnaps;
};

/* One <target>.img to show. */
struct disk_scan {
  char *fname;
  char *path;                       /* NULL: no source          */
  char *format;
  char *snap_id;
  bool live;
  char *lvm_id;                     /* LVM snapshot to activate */
  unsigned lvm_flags;
  struct stat st;
  bool have_st;
  int err;
  uint64_t size;
  mode_t read_mode;                 /* of every file it reads   */
  struct vd_policy *policy;         /* <backingStore>, or NULL  */
  int64_t sec;                      /* times (snapshots)        */
  long nsec;
};

/* One snapshots/<name>/. */
struct snap_scan {
  char *ename;
  const char *name;                 /* unescaped (libvirt's or the tag) */
  int64_t sec;
  long nsec;
  struct fs_blob *domxml, *snapxml; /* NULL for qemu-img snapshots */
  struct disk_scan *disks;
  size_t ndisks;
};

struct build {
  const char *dname;                /* domain name, for messages */
  bool on_lvm;                      /* a disk is a logical volume */
  virConnectPtr c;                  /* NULL when disconnected    */
  bool log;                         /* log skipped disks (fetches) */
  struct img_info *imgs;
  size_t nimgs;
  struct disk_scan *disks;
  size_t ndisks;
  struct snap_scan *snaps;
  size_t nsnaps;
};

static void
disk_scan_clear (struct disk_scan *s)
{
  free (s->fname);
  free (s->path);
  free (s->format);
  free (s->snap_id);
  free (s->lvm_id);
  vd_policy_free (s->policy);
}

static void
build_free (struct build *b)
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
}

/* Is path inside our own mount? */
static bool
inside_mount (const char *path)
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
            const struct vd_policy *pol)
{
  struct img_info *ii, *t;
  struct vd_image *img;
  size_t i;

  for (i = 0; i < b->nimgs; i++)
    if (strcmp (b->imgs[i].path, path) == 0
        && strcmp (b->imgs[i].format, format) == 0)
      return &b->imgs[i];
  t = realloc (b->imgs, (b->nimgs + 1) * sizeof *t);
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
  if (inside_mount (path)) {
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
  ii->size = vd_image_size (img);
  ii->read_mode = img->read_mode;
  if (vd_image_list_snapshots (img, &ii->snaps, &ii->nsnaps) < 0) {
    ii->snaps = NULL;
    ii->nsnaps = 0;
  }
  vd_image_close (img);
  return ii;
}

static bool
same_policy (const struct vd_policy *a, const struct vd_policy *b)
{
  size_t i;

  if (!a || !b)
    return a == b;
  if (a->nexpect != b->nexpect || a->expect_end != b->expect_end)
    return false;
  for (i = 0; i < a->nexpect; i++)
    if (strcmp (a->expect[i], b->expect[i]) != 0)
      return false;
  return true;
}

static bool
is_disk_device (const struct domxml_disk *d)
{
  return !d->device || strcmp (d->device, "disk") == 0;
}

/* Where a disk's bytes are: *path (malloc'd) for file, block and volume
 * disks; 0.  -1 for a disk that is not shown (network ...), logged when
 * b->log.  *path NULL with 0: a disk without a usable source (shown
 * with EIO). */
static int
disk_path (struct build *b, const struct domxml_disk *d, char **path)
{
  const char *type = d->type ? d->type : "file";

  *path = NULL;
  if (strcmp (type, "file") == 0 || strcmp (type, "block") == 0) {
    if (d->source && (*path = strdup (d->source)) == NULL)
      return -1;
    return 0;
  }
  if (strcmp (type, "volume") == 0) {
    if (!d->pool || !d->volume || !b->c)
      return 0;
    *path = ds_volume_path (b->c, d->pool, d->volume);
    if (!*path)
      lv_error ("domain %s: disk %s: volume %s in pool %s", b->dname,
                d->target ? d->target : "?", d->volume, d->pool);
    return 0;
  }
  if (b->log)
    vd_warn ("domain %s: disk %s: type %s%s%s%s%s is not shown (not "
             "readable by vmdiskfs yet)", b->dname,
             d->target ? d->target : "?", type,
             d->protocol ? " protocol " : "", d->protocol ? d->protocol : "",
             d->name ? " " : "", d->name ? d->name : "");
  return -1;
}

/* Fill s for target's disk at path (may be NULL) in format; snapshot
 * name snap (NULL: the image itself). */
static int
fill_disk (struct build *b, struct disk_scan *s, const char *target,
           const char *path, const char *format, const char *snap,
           bool live, const struct domxml_disk *x)
{
  CLEANUP_FREE char *et = vd_name_escape (target);
  struct img_info *ii;
  size_t i;

  memset (s, 0, sizeof *s);
  if (!et || asprintf (&s->fname, "%s.img", et) < 0) {
    s->fname = NULL;
    return -1;
  }
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
  if (x && (x->nbacking || x->backing_end)) {
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
  ii = image_info (b, path, format, s->policy);
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

static struct fs_blob *virsh_blob (const char *x, size_t n);

static struct snap_scan *add_snap (struct build *b);
static struct disk_scan *add_disk (struct disk_scan **v, size_t *n);

/* LVM's answer for many disks at once, for LVM_CACHE_MS: asking costs
 * a helper child and an lvs run (50 ms and more), and the first listing
 * of a host with many domains on LVM rebuilds them one after the other.
 * Each question asks for the disk wanted and every active LV
 * (/dev/mapper), keyed by the resolved device path.  refresh_lock. */
#define LVM_CACHE_MS 3000
struct lvm_cached {
  char *path;                       /* realpath */
  struct snap_list l;
};
static struct lvm_cached *lvc;
static size_t nlvc;
static uint64_t lvc_ms;

static void
lvm_cache_clear (void)
{
  size_t i;

  for (i = 0; i < nlvc; i++) {
    free (lvc[i].path);
    snap_list_free (lvc[i].l.snaps, lvc[i].l.n);
  }
  free (lvc);
  lvc = NULL;
  nlvc = 0;
}

/* The snapshots of the block device at path (owned by the cache, valid
 * until the next call), or NULL with errno. */
static const struct snap_list *
lvm_snaps_of (const char *path)
{
  CLEANUP_FREE char *real = realpath (path, NULL);
  struct lvm_cached *v = NULL;
  const char **disks = NULL;
  struct snap_list *out = NULL;
  size_t n = 0, cap = 16, i, nask;
  struct dirent *de;
  DIR *dir;
  uint64_t now = now_ms ();

  if (!real)
    return NULL;
  /* mkdir and rmdir want their own LVM snapshots seen at once. */
  if (__atomic_exchange_n (&lvm_flush, 0, __ATOMIC_ACQ_REL))
    lvc_ms = 0;
  if (now - lvc_ms < LVM_CACHE_MS)
    for (i = 0; i < nlvc; i++)
      if (strcmp (lvc[i].path, real) == 0)
        return &lvc[i].l;
  v = calloc (cap, sizeof *v);
  if (!v)
    return NULL;
  v[n++].path = real;
  real = NULL;
  dir = opendir ("/dev/mapper");
  while (dir && (de = readdir (dir)) != NULL) {
    CLEANUP_FREE char *p = NULL;
    char *r;
    if (de->d_name[0] == '.' || strcmp (de->d_name, "control") == 0
        || asprintf (&p, "/dev/mapper/%s", de->d_name) < 0)
      continue;
    r = realpath (p, NULL);
    if (!r || strcmp (r, v[0].path) == 0) {
      free (r);
      continue;
    }
    if (n == cap) {
      struct lvm_cached *t = realloc (v, 2 * cap * sizeof *t);
      if (!t) {
        free (r);
        break;
      }
      v = t;
      cap *= 2;
    }
    memset (&v[n], 0, sizeof v[n]);
    v[n++].path = r;
  }
  if (dir)
    closedir (dir);
  disks = calloc (n, sizeof *disks);
  out = calloc (n, sizeof *out);
  if (!disks || !out)
    goto fail;
  for (i = 0; i < n; i++)
    disks[i] = v[i].path;
  nask = n;
  if (lvm_snapshotter.list_many) {
    if (lvm_snapshotter.list_many (disks, n, out) < 0)
      goto fail;
  }
  else {
    nask = 1;
    if (lvm_snapshotter.list (disks[0], &out[0].snaps, &out[0].n) < 0)
      out[0].err = errno;
  }
  lvm_cache_clear ();
  for (i = 0; i < nask; i++)
    v[i].l = out[i];
  for (; i < n; i++)
    free (v[i].path);
  lvc = v;
  nlvc = nask;
  lvc_ms = now;
  free (disks);
  free (out);
  return &lvc[0].l;

 fail:
  {
    int e = errno;
    for (i = 0; i < n; i++)
      free (v[i].path);
    free (v);
    free (disks);
    free (out);
    errno = e;
  }
  return NULL;
}

/* The LVM snapshots of a block disk (a logical volume) into b, merged
 * with snapshots of the same name already there.  Not a logical volume
 * (ENOTSUP): nothing.  ENOMEM: -1. */
static int
block_snapshots (struct build *b, const char *fname, const char *path)
{
  const struct snap_list *l = lvm_snaps_of (path);
  const struct snap_info *v;
  size_t n, i, j;

  if (!l || l->err) {
    int e = l ? l->err : errno;
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
    ds = add_disk (&ss->disks, &ss->ndisks);
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

/* LVM snapshots this daemon activated: act_lock (taken without any other
 * lock, held across lvm calls: activations are serialized). */
struct lv_active {
  char *id;
  unsigned flags;
  fuse_ino_t ino;                  /* the disk node reading it        */
  uint64_t used_ms;
};
static pthread_mutex_t act_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lv_active *active;
static size_t nactive;
static int idle_timer = -1;

/* Make an LVM snapshot readable for node (open_disk).  0 or -1. */
static int
lvm_use (const char *id, unsigned flags, fuse_ino_t ino)
{
  struct snap_info si = { 0 };
  size_t i;
  int r = 0;

  pthread_mutex_lock (&act_lock);
  for (i = 0; i < nactive; i++)
    if (strcmp (active[i].id, id) == 0) {
      active[i].used_ms = now_ms ();
      goto out;
    }
  si.id = (char *) id;
  si.flags = flags;
  r = lvm_snapshotter.activate (&si);
  if (r == 0) {
    struct lv_active *t = realloc (active, (nactive + 1) * sizeof *t);
    char *s = strdup (id);
    if (t && s) {
      active = t;
      t[nactive].id = s;
      t[nactive].flags = si.flags;
      t[nactive].ino = ino;
      t[nactive].used_ms = now_ms ();
      nactive++;
    }
    else {
      free (s);
      if (t)
        active = t;
      vd_warn ("lvm: %s: out of memory: stays active", id);
    }
  }
 out:
  pthread_mutex_unlock (&act_lock);
  return r;
}

/* Deactivate what we activated and nobody used for LVM_IDLE_MS (all of
 * it when all). */
static void
lvm_idle (bool all)
{
  uint64_t now = now_ms ();
  size_t i;

  pthread_mutex_lock (&act_lock);
  for (i = 0; i < nactive; ) {
    struct lv_active *a = &active[i];
    struct fs_node *node = inode_find (a->ino);
    unsigned nopen = 0;

    if (node) {
      pthread_mutex_lock (&node->lock);
      nopen = node->nopen + (node->disk != NULL);
      pthread_mutex_unlock (&node->lock);
      inode_unref (node);
    }
    if (nopen == 0 && (all || now - a->used_ms >= LVM_IDLE_MS)) {
      struct snap_info si = { .id = a->id, .flags = a->flags };
      if (lvm_snapshotter.deactivate (&si) < 0)
        vd_warn ("lvm: %s: cannot deactivate it", a->id);
      free (a->id);
      active[i] = active[--nactive];
      continue;
    }
    if (nopen)
      a->used_ms = now;
    i++;
  }
  pthread_mutex_unlock (&act_lock);
}

/* Event thread: every half LVM_IDLE_MS. */
static void
idle_cb (int timer, void *opaque)
{
  lvm_idle (false);
}

static struct snap_scan *
add_snap (struct build *b)
{
  struct snap_scan *t = realloc (b->snaps, (b->nsnaps + 1) * sizeof *t);

  if (!t)
    return NULL;
  b->snaps = t;
  memset (&t[b->nsnaps], 0, sizeof *t);
  return &t[b->nsnaps++];
}

static struct disk_scan *
add_disk (struct disk_scan **v, size_t *n)
{
  struct disk_scan *t = realloc (*v, (*n + 1) * sizeof *t);

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
build_libvirt_snapshot (struct build *b, const struct lv_snap *ls,
                        const struct domxml_disk *cur, size_t ncur)
{
  struct domxml_snapshot sx;
  struct snap_scan *ss;
  struct fs_blob *px = fs_blob_plain (ls->xml);
  CLEANUP_FREE char *dx = NULL;
  size_t dxlen = 0, i, j;
  const struct domxml_disk *rec;
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
  if (dx && (ss->domxml = virsh_blob (dx, dxlen)) == NULL)
    goto out;

  for (i = 0; i < sx.ndisks; i++) {
    const struct domxml_disk *d = &sx.disks[i];
    const char *mode = NULL, *format = d->driver_type ? d->driver_type
      : "raw";
    CLEANUP_FREE char *path = NULL;
    struct disk_scan *ds;

    if (!is_disk_device (d) || !d->target)
      continue;
    for (j = 0; j < sx.nsnapdisks; j++)
      if (streq (sx.snapdisks[j].target, d->target))
        mode = sx.snapdisks[j].snapshot;
    if (!mode)
      mode = strcmp (format, "qcow2") == 0 ? "internal" : "no";
    if (strcmp (mode, "no") == 0)
      continue;
    if (strcmp (mode, "internal") != 0 && strcmp (mode, "external") != 0) {
      if (b->log)
        vd_warn ("domain %s: snapshot %s: disk %s (snapshot='%s') is not "
                 "shown", b->dname, ls->name, d->target, mode);
      continue;
    }
    if (disk_path (b, d, &path) < 0) {
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
    ds = add_disk (&ss->disks, &ss->ndisks);
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
                   false, rec) < 0)
      goto out;
    ds->sec = ss->sec;
  }
  ret = 0;
 out:
  if (ret < 0)
    errno = ENOMEM;
  fs_blob_unref (px);
  domxml_snapshot_clear (&sx);
  return ret;
}

/* qcow2 snapshots of the current disks that libvirt does not know. */
static int
build_image_snapshots (struct build *b, const struct lv_dom *d,
                       const struct domxml_disk *cur, size_t ncur)
{
  size_t i, k, j, nlibvirt = b->nsnaps;

  for (i = 0; i < b->ndisks; i++) {
    const struct disk_scan *ad = &b->disks[i];
    struct img_info *ii;

    if (!ad->path || ad->err)
      continue;
    ii = image_info (b, ad->path, ad->format, ad->policy);
    if (!ii)
      return -1;
    for (k = 0; k < ii->nsnaps; k++) {
      const struct vd_snapshot *vs = &ii->snaps[k];
      CLEANUP_FREE char *ename = NULL;
      struct snap_scan *ss = NULL;
      struct disk_scan *ds;
      bool known = false;

      for (j = 0; j < d->nsnaps; j++)
        if (strcmp (d->snaps[j].name, vs->name) == 0)
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
      ds = add_disk (&ss->disks, &ss->ndisks);
      if (!ds)
        return -1;
      memset (ds, 0, sizeof *ds);
      if (asprintf (&ds->fname, "%s", ad->fname) < 0
          || (ds->path = strdup (ad->path)) == NULL
          || (ds->format = strdup (ad->format)) == NULL
          || (ds->snap_id = strdup (vs->id)) == NULL)
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

/* tree_lock held for writing.  A disk node as s says; reference. */
static struct fs_node *
apply_disk (struct fs_node *dom, const char *dir, const struct disk_scan *s,
            int64_t sec, long nsec, bool snapshot)
{
  struct fs_node *n = tree_get_node (FS_NODE_DISK, "%s/%s", dir, s->fname);
  struct lv_disk *k;
  bool unchanged;

  if (!n)
    return NULL;
  k = n->priv;
  unchanged = n->attached && k && streq (k->path, s->path)
    && streq (k->format, s->format) && streq (k->snap_id, s->snap_id)
    && streq (k->lvm_id, s->lvm_id)
    && k->live == s->live && k->err == s->err && k->size == s->size
    && same_stat (&k->st, &s->st);
  if (unchanged && !same_policy (k->policy, s->policy)) {
    /* The <backingStore> record changed, not the image: the open image
     * (checked against the old record) is dropped. */
    struct vd_policy *np = vd_policy_dup (s->policy);
    if (s->policy && !np) {
      inode_unref (n);
      return NULL;
    }
    vd_policy_free (k->policy);
    k->policy = np;
    tree_set_disk (n, NULL, s->err);     /* reopened under the new one */
  }
  if (!unchanged) {
    struct lv_disk *nk = calloc (1, sizeof *nk);
    char *sid = strdup (s->snap_id ? s->snap_id : "");

    if (!nk || !sid || (s->path && !(nk->path = strdup (s->path)))
        || !(nk->format = strdup (s->format))
        || (s->snap_id && !(nk->snap_id = strdup (s->snap_id)))
        || (s->lvm_id && !(nk->lvm_id = strdup (s->lvm_id)))) {
      disk_priv_free (nk);
      free (sid);
      inode_unref (n);
      return NULL;
    }
    nk->live = s->live;
    nk->lvm_flags = s->lvm_flags;
    if (s->policy && (nk->policy = vd_policy_dup (s->policy)) == NULL) {
      disk_priv_free (nk);
      free (sid);
      inode_unref (n);
      return NULL;
    }
    nk->st = s->st;
    nk->err = s->err;
    nk->size = s->size;
    if (n->priv_free)
      n->priv_free (n->priv);
    n->priv = nk;
    n->priv_free = disk_priv_free;
    /* Every disk node has a snap_id, so that fs_release closes its
     * image with the last reader: idle disks hold no open files. */
    free (n->snap_id);
    n->snap_id = sid;
    tree_set_disk (n, NULL, s->err);
    tree_changed_content (n);
    if (s->lvm_id) {
      /* A device is all data; st_blocks must not activate it. */
      tree_set_allocated (n, s->size);
    }
  }
  if (!snapshot) {
    sec = s->have_st ? s->st.st_mtim.tv_sec : 0;
    nsec = s->have_st ? s->st.st_mtim.tv_nsec : 0;
  }
  tree_set_attr (&n->attr,
                 S_IFREG | (s->have_st ? s->read_mode : 0400),
                 1, s->size, s->have_st ? s->st.st_uid : 0,
                 s->have_st ? s->st.st_gid : 0, sec, nsec);
  tree_set_image (n, dom);
  return n;
}

/* tree_lock held for writing.  An XML file node; reference. */
static struct fs_node *
apply_file (struct fs_node *dom, const char *dir, const char *name,
            struct fs_blob *blob, int64_t sec, long nsec)
{
  struct fs_node *n = tree_get_node (FS_NODE_FILE, "%s/%s", dir, name);

  if (!n)
    return NULL;
  tree_set_attr (&n->attr, S_IFREG | 0400, 1, blob->len, 0, 0, sec, nsec);
  tree_set_image (n, dom);
  tree_set_blob (n, blob);
  return n;
}

/* Add n to the array kids (room reserved by the caller). */
#define PUSH(kids, k, n)  do { if (n) (kids)[(k)++] = (n); } while (0)

/* tree_lock held for writing.  Make the domain directory what b says. */
static void
apply_domain (struct fs_node *node, struct lv_dom *d, struct build *b,
              int64_t dsec)
{
  struct fs_node **kids, **skids, *sdir;
  size_t nk = 0, ns = 0, i, j;
  const char *dir = node->path;

  kids = calloc (b->ndisks + 2, sizeof *kids);
  skids = calloc (b->nsnaps + 1, sizeof *skids);
  sdir = tree_get_node (FS_NODE_DIR, "%s/snapshots", dir);
  if (!kids || !skids || !sdir) {
    free (kids);
    free (skids);
    if (sdir)
      inode_unref (sdir);
    vd_error ("domain %s: out of memory", d->name);
    return;
  }
  tree_set_attr (&node->attr, S_IFDIR | 0555, 3, 0, 0, 0, dsec, 0);
  if (d->xml)
    PUSH (kids, nk, apply_file (node, dir, "domain.xml", d->xml, dsec, 0));
  for (i = 0; i < b->ndisks; i++)
    PUSH (kids, nk, apply_disk (node, dir, &b->disks[i], 0, 0, false));

  for (i = 0; i < b->nsnaps; i++) {
    struct snap_scan *ss = &b->snaps[i];
    CLEANUP_FREE char *spath = NULL;
    struct fs_node *sn, **fk;
    size_t nf = 0;

    if (asprintf (&spath, "%s/snapshots/%s", dir, ss->ename) < 0) {
      spath = NULL;
      continue;
    }
    sn = tree_get_node (FS_NODE_DIR, "%s", spath);
    fk = calloc (ss->ndisks + 2, sizeof *fk);
    if (!sn || !fk) {
      if (sn)
        inode_unref (sn);
      free (fk);
      continue;
    }
    tree_set_attr (&sn->attr, S_IFDIR | 0555, 2, 0, 0, 0, ss->sec, ss->nsec);
    tree_set_image (sn, node);
    if (ss->domxml)
      PUSH (fk, nf, apply_file (node, spath, "domain.xml", ss->domxml,
                                ss->sec, ss->nsec));
    if (ss->snapxml)
      PUSH (fk, nf, apply_file (node, spath, "snapshot.xml", ss->snapxml,
                                ss->sec, ss->nsec));
    for (j = 0; j < ss->ndisks; j++) {
      bool dup = false;
      size_t m;
      for (m = 0; m < j; m++)
        dup |= strcmp (ss->disks[m].fname, ss->disks[j].fname) == 0;
      if (!dup)
        PUSH (fk, nf, apply_disk (node, spath, &ss->disks[j], ss->sec,
                                  ss->nsec, true));
    }
    tree_set_children (sn, fk, nf);
    skids[ns++] = sn;
  }
  /* Writable (mkdir makes snapshots) unless -o ro. */
  tree_set_attr (&sdir->attr, S_IFDIR | (fs_config.ro ? 0555 : 0755), 2 + ns,
                 0, 0, 0, dsec, 0);
  tree_set_image (sdir, node);
  tree_set_children (sdir, skids, ns);
  kids[nk++] = sdir;
  tree_set_children (node, kids, nk);
}

/* XML from libvirt as virsh prints it (one more newline), so that
 * "virsh dumpxml --inactive D | cmp - D/domain.xml" holds. */
static struct fs_blob *
virsh_blob (const char *x, size_t n)
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

/* The domain's definition time (see the header). */
static int64_t
domain_time (struct lv_dom *d)
{
  if (system_uri) {
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
rebuild (struct fs_node *node, struct lv_dom *d, virConnectPtr c, bool log)
{
  struct build b = { .dname = d->name, .c = c, .log = log };
  struct domxml_disk *cur = NULL;
  struct lv_watch *watch = NULL;
  size_t ncur = 0, i, nw = 0, nactive_disks;
  int64_t dsec = domain_time (d);
  struct fs_blob *px = d->xml ? fs_blob_plain (d->xml) : NULL;

  if (px && domxml_parse_domain (px->data, px->len, &cur, &ncur) < 0) {
    vd_error ("domain %s: cannot parse its XML: %s (no disks shown)",
              d->name, strerror (errno));
    cur = NULL;
    ncur = 0;
  }
  for (i = 0; i < ncur; i++) {
    const struct domxml_disk *x = &cur[i];
    CLEANUP_FREE char *path = NULL;
    struct disk_scan *ds;

    if (!is_disk_device (x) || !x->target)
      continue;
    if (disk_path (&b, x, &path) < 0)
      continue;
    ds = add_disk (&b.disks, &b.ndisks);
    if (!ds || fill_disk (&b, ds, x->target, path,
                          x->driver_type ? x->driver_type : "raw", NULL,
                          d->running, x) < 0)
      goto nomem;
  }
  for (i = 0; i < d->nsnaps; i++)
    if (build_libvirt_snapshot (&b, &d->snaps[i], cur, ncur) < 0)
      goto nomem;
  if (build_image_snapshots (&b, d, cur, ncur) < 0)
    goto nomem;
  /* LVM snapshots of disks on block devices (type block, or a volume
   * of a logical pool), after the others (merged by name). */
  for (i = 0, nactive_disks = b.ndisks; i < nactive_disks; i++) {
    const struct disk_scan *ds = &b.disks[i];
    if (ds->path && ds->have_st && S_ISBLK (ds->st.st_mode)
        && block_snapshots (&b, ds->fname, ds->path) < 0)
      goto nomem;
  }

  /* Watch the current disks' files. */
  watch = calloc (b.ndisks ? b.ndisks : 1, sizeof *watch);
  if (!watch)
    goto nomem;
  for (i = 0; i < b.ndisks; i++) {
    if (!b.disks[i].path || inside_mount (b.disks[i].path))
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
  build_free (&b);
}

static int
lv_snap_cmp (const void *a, const void *b)
{
  const struct lv_snap *x = a, *y = b;

  return strcmp (x->name, y->name);
}

/* The domain's snapshots: names, sorted, with the XML of those not in
 * old (unless refetch).  0, or -1 (logged). */
static int
fetch_snapshots (struct lv_dom *d, bool xml, bool refetch,
                 struct lv_snap **out, size_t *nout)
{
  virDomainSnapshotPtr *snaps = NULL;
  struct lv_snap *v;
  int n, i;
  size_t k = 0;

  n = virDomainListAllSnapshots (d->dom, &snaps, 0);
  if (n < 0) {
    lv_error ("domain %s: cannot list snapshots", d->name);
    return -1;
  }
  v = calloc (n ? n : 1, sizeof *v);
  for (i = 0; i < n; i++) {
    const char *name = virDomainSnapshotGetName (snaps[i]);
    struct lv_snap key, *old;
    char *x;

    if (!v || !name || (v[k].name = strdup (name)) == NULL)
      goto next;
    if (xml) {
      key.name = v[k].name;
      old = refetch ? NULL : bsearch (&key, d->snaps, d->nsnaps,
                                      sizeof *d->snaps, lv_snap_cmp);
      if (old)
        v[k].xml = fs_blob_ref (old->xml);
      else if ((x = virDomainSnapshotGetXMLDesc (snaps[i], 0)) != NULL) {
        v[k].xml = virsh_blob (x, strlen (x));
        free (x);
      }
      else if (lv_last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT)
        lv_error ("domain %s: snapshot %s", d->name, name);
      if (!v[k].xml) {
        free (v[k].name);
        goto next;
      }
    }
    k++;
  next:
    virDomainSnapshotFree (snaps[i]);
  }
  free (snaps);
  if (!v) {
    vd_error ("domain %s: out of memory", d->name);
    return -1;
  }
  qsort (v, k, sizeof *v, lv_snap_cmp);
  *out = v;
  *nout = k;
  return 0;
}

/* Same snapshot names as cached? */
static bool
same_names (const struct lv_dom *d, const struct lv_snap *v, size_t n)
{
  size_t i;

  if (n != d->nsnaps)
    return false;
  for (i = 0; i < n; i++)
    if (strcmp (v[i].name, d->snaps[i].name) != 0)
      return false;
  return true;
}

/* Fetch everything of the domain from libvirt into d (refresh_lock). 0,
 * or -1: the domain is gone (errno ENOENT) or libvirt failed (logged). */
static int
fetch_domain (struct lv_dom *d, bool refetch)
{
  struct lv_snap *v;
  size_t n;
  char *x;
  int active;

  x = virDomainGetXMLDesc (d->dom, VIR_DOMAIN_XML_INACTIVE);
  if (!x) {
    if (lv_last_code () == VIR_ERR_NO_DOMAIN) {
      errno = ENOENT;
      return -1;
    }
    lv_error ("domain %s: cannot get its XML", d->name);
    return -1;
  }
  {
    struct fs_blob *nb = virsh_blob (x, strlen (x));
    if (nb && !fs_blob_equal (nb, d->xml)) {
      fs_blob_unref (d->xml);
      d->xml = nb;
      d->first_seen = time (NULL);
    }
    else
      fs_blob_unref (nb);
  }
  free (x);
  active = virDomainIsActive (d->dom);
  if (active >= 0)
    d->running = active == 1;
  if (fetch_snapshots (d, true, refetch, &v, &n) == 0) {
    snaps_free (d->snaps, d->nsnaps);
    d->snaps = v;
    d->nsnaps = n;
  }
  return 0;
}

static void refresh_root (struct fs_node *root);

/* Bring a domain directory up to date (refresh_lock held). */
static void
refresh_domain (struct fs_node *node)
{
  struct lv_dom *d;
  virConnectPtr c;
  bool scanned, full, recheck, changed, build, meta_changed;
  struct lv_watch meta = { NULL, { 0 }, 0 };
  unsigned ep = __atomic_load_n (&epoch, __ATOMIC_ACQUIRE), dep;
  uint64_t now = now_ms (), checked, disks_ms;

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
  full |= is_dirty (d->name, true);
  recheck = full || changed || meta_changed
    || now - checked >= (system_uri ? LOCAL_RECHECK_MS : DOM_RECHECK_MS);
  if (recheck && system_uri) {
    /* Before looking, so that a change meanwhile is seen next time. */
    if (asprintf (&meta.path, "/var/lib/libvirt/qemu/snapshot/%s",
                  d->name) < 0)
      meta.path = NULL;
    else
      meta.err = stat (meta.path, &meta.st) < 0 ? errno : 0;
  }
  build = full || changed;

  c = recheck ? get_conn () : NULL;
  if (c) {
    /* Looked up again after an event: the name may stand for another
     * domain now (undefined and defined again). */
    if (!d->dom || d->dom_epoch != ep || full) {
      if (d->dom)
        virDomainFree (d->dom);
      d->dom = virDomainLookupByName (c, d->name);
      d->dom_epoch = ep;
      if (!d->dom) {
        if (lv_last_code () == VIR_ERR_NO_DOMAIN)
          goto gone;
        lv_error ("domain %s", d->name);
        goto done;
      }
    }
    if (full) {
      if (fetch_domain (d, !scanned || dep != ep) < 0) {
        if (errno == ENOENT)
          goto gone;
        goto done;
      }
    }
    else {
      struct lv_snap *v;
      size_t n;
      if (fetch_snapshots (d, false, false, &v, &n) == 0) {
        if (!same_names (d, v, n)) {
          build = true;
          snaps_free (v, n);
          if (fetch_domain (d, false) < 0 && errno == ENOENT)
            goto gone;
        }
        else
          snaps_free (v, n);
      }
    }
  }
  else if (recheck && !scanned)
    vd_error ("domain %s: not connected to %s (shown empty)", d->name, uri);

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
  __atomic_store_n (&root_dirty, 1, __ATOMIC_RELEASE);
  refresh_root (tree_root ());
}

/* Relist the domains (refresh_lock held). */
static void
refresh_root (struct fs_node *root)
{
  struct lv_root *r = root->priv;
  virDomainPtr *doms = NULL;
  struct fs_node **kids = NULL;
  virConnectPtr c;
  int n = 0, i;
  size_t k = 0;
  uint64_t now = now_ms ();

  __atomic_store_n (&root_dirty, 0, __ATOMIC_RELEASE);
  c = get_conn ();
  if (!c)
    goto done;
  n = virConnectListAllDomains (c, &doms, VIR_CONNECT_LIST_DOMAINS_PERSISTENT);
  if (n < 0) {
    lv_error ("cannot list domains (showing the last listing)");
    goto done;
  }
  kids = calloc (n ? n : 1, sizeof *kids);
  if (!kids) {
    vd_error ("out of memory");
    goto done;
  }
  tree_wrlock ();
  for (i = 0; i < n; i++) {
    const char *name = virDomainGetName (doms[i]);
    CLEANUP_FREE char *ename = name ? vd_name_escape (name) : NULL;
    struct fs_node *node;
    struct lv_dom *d;

    if (!ename)
      continue;
    node = tree_find_child (root, ename);
    if (node && node->priv) {
      kids[k++] = inode_ref (node);
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
    d->dom_epoch = __atomic_load_n (&epoch, __ATOMIC_ACQUIRE);
    d->first_seen = time (NULL);
    doms[i] = NULL;
    tree_set_attr (&node->attr, S_IFDIR | 0555, 3, 0, 0, 0, d->first_seen, 0);
    kids[k++] = node;
  }
  tree_set_children (root, kids, k);
  root->attr.st_nlink = 2 + k;
  r->scanned = true;
  prune_dirty (root);
  tree_unlock ();
  vd_debug ("%s: %zu domains", uri, k);
 done:
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

/* Does uri name another host?  Disk paths are opened here. */
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
  struct lv_root *r;
  virConnectPtr c;
  time_t now = time (NULL);

  if (!u || !*u)
    u = getenv ("LIBVIRT_DEFAULT_URI");
  if (!u || !*u)
    u = "qemu:///system";
  uri = strdup (u);
  if (!uri)
    return -1;
  system_uri = strcmp (uri, "qemu:///system") == 0;
  virSetErrorFunc (NULL, lv_silent);
  if (virInitialize () < 0) {
    fprintf (stderr, "vmdiskfs: cannot initialise libvirt\n");
    return -1;
  }
  domxml_init ();
  /* Only a check, before fork (see the header); the fallback to a
   * read-only connection is reported here, once, on the terminal. */
  {
    CLEANUP_FREE char *why = NULL;
    bool ro;

    c = connect_rw_or_ro (&ro, &why);
    if (!c) {
      virErrorPtr e = virGetLastError ();
      fprintf (stderr, "vmdiskfs: cannot connect to %s: %s\n", uri,
               e && e->message ? e->message : "unknown libvirt error");
      return -1;
    }
    if (ro && !fs_config.ro) {
      fprintf (stderr, "vmdiskfs: warning: cannot connect to %s read-write "
               "(%s): connected read-only, mkdir and rmdir of snapshots "
               "fail with EACCES\n", uri, why ? why : "?");
      rw_warned = true;
    }
    virConnectClose (c);
  }
  if (remote_uri (uri))
    fprintf (stderr, "vmdiskfs: warning: %s names another host: the disk "
             "paths it gives are opened on this one (shared storage)\n", uri);

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
  int e;

  if (virEventRegisterDefaultImpl () < 0) {
    lv_error ("no event loop (changes show within %d s)",
              DOM_RECHECK_MS / 1000);
    return;
  }
  __atomic_store_n (&events_on, 1, __ATOMIC_RELEASE);
  e = pthread_create (&event_thread, NULL, event_main, NULL);
  if (e) {
    vd_error ("cannot start the libvirt event thread: %s", strerror (e));
    __atomic_store_n (&events_on, 0, __ATOMIC_RELEASE);
    return;
  }
  event_started = true;
  idle_timer = virEventAddTimeout (LVM_IDLE_MS / 2, idle_cb, NULL, NULL);
}

static bool
libvirt_stale (struct fs_node *node)
{
  uint64_t now = now_ms ();

  if (node == tree_root ()) {
    struct lv_root *r = node->priv;
    return !r->scanned || __atomic_load_n (&root_dirty, __ATOMIC_ACQUIRE)
      || now - r->listed_ms >= ROOT_RECHECK_MS;
  }
  else {
    struct lv_dom *d = node->priv;
    if (!d || !d->scanned
        || d->epoch != __atomic_load_n (&epoch, __ATOMIC_ACQUIRE)
        || now - d->checked_ms >= (system_uri ? LOCAL_RECHECK_MS
                                   : DOM_RECHECK_MS)
        || is_dirty (d->name, false) || one_changed (&d->meta))
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
  unsigned lvm_flags = 0;
  struct stat scanned;
  mode_t shown = 0;
  struct lv_disk *k;
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
    scanned = k->st;
    shown = node->attr.st_mode & 0444;
    if (!path || !format || (k->snap_id && !snap) || (k->lvm_id && !lvm_id)
        || (k->policy && !pol))
      err = ENOMEM;
#ifdef VD_OPEN_LIVE
    if (k->live)
      flags |= VD_OPEN_LIVE;
#endif
  }
  tree_unlock ();
  if (err) {
    vd_policy_free (pol);
    errno = err;
    return NULL;
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

/* ---- Snapshots by mkdir and rmdir. ---- */

/* If dir is a domain's snapshots/ directory: the domain's node (a
 * reference) and its name (*name, malloc'd).  Else NULL with errno
 * EPERM (nothing can be made or removed there; ENOMEM). */
static struct fs_node *
snapshots_domain (struct fs_node *dir, char **name)
{
  struct fs_node *dom = NULL;
  struct lv_dom *d;

  *name = NULL;
  errno = EPERM;
  tree_rdlock ();
  if (dir->attached && dir->type == FS_NODE_DIR && dir->image
      && dir->image->attached && dir->parent_ino == dir->image->ino
      && strcmp (dir->name, "snapshots") == 0
      && (d = dir->image->priv) != NULL) {
    *name = strdup (d->name);
    if (*name)
      dom = inode_ref (dir->image);
    else
      errno = ENOMEM;
  }
  tree_unlock ();
  return dom;
}

/* The domain changed through us: refetch it now (its snapshot list and
 * XML, and LVM's answer), so that the reply shows the result. */
static void
refresh_now (struct fs_node *dom, const char *domain)
{
  mark_dirty (domain);
  __atomic_store_n (&lvm_flush, 1, __ATOMIC_RELEASE);
  tree_refresh (dom);
}

/* The connection for mkdir/rmdir of a snapshot of domain: read-write,
 * with a new reference.  NULL with errno (logged). */
static virConnectPtr
snap_conn (const char *domain, const char *what)
{
  virConnectPtr c;
  bool ro = false;

  c = get_conn_mode (&ro);
  if (!c) {
    vd_error ("domain %s: %s: not connected to %s", domain, what, uri);
    errno = EIO;
    return NULL;
  }
  if (ro) {
    vd_error ("domain %s: %s: the connection to %s is read-only (see the "
              "warning at start)", domain, what, uri);
    virConnectClose (c);
    errno = EACCES;
    return NULL;
  }
  return c;
}

/* mkdir <domain>/snapshots/<ename>: a snapshot of every disk of the
 * domain, called by the unescaped name. */
static int
libvirt_mkdir (struct fs_node *dir, const char *ename, struct fs_node **out)
{
  CLEANUP_FREE char *domain = NULL, *name = NULL, *what = NULL;
  struct ds_create_opts opts = {
    .by = DS_BY_MOUNT,
    .cow_bytes = fs_config.cow_bytes,
    .cow_percent = fs_config.cow_percent,
  };
  struct fs_node *dom, *sdir, *sn = NULL;
  virConnectPtr c;
  unsigned done = 0;
  int err = 0;

  dom = snapshots_domain (dir, &domain);
  if (!dom)
    return -1;
  name = vd_name_unescape (ename);
  if (!name || !ds_valid_name (name)) {
    err = name || errno != ENOMEM ? EINVAL : ENOMEM;
    if (err == EINVAL)
      vd_error ("domain %s: mkdir snapshots/%s: not a valid snapshot name "
                "(see vmdiskfs(1))", domain, ename);
    inode_unref (dom);
    errno = err;
    return -1;
  }
  if (asprintf (&what, "mkdir snapshots/%s", ename) < 0) {
    what = NULL;
    inode_unref (dom);
    errno = ENOMEM;
    return -1;
  }
  c = snap_conn (domain, what);
  if (!c)
    err = errno;
  else if (ds_create (c, domain, name, &opts, &done) < 0)
    err = errno ? errno : EIO;      /* logged by domsnap */
  else {
    vd_info ("domain %s: snapshot %s made (mkdir)%s%s%s", domain, name,
             done & DS_DONE_MEMORY ? ", with VM state" : "",
             done & DS_DONE_LVM ? ", with LVM snapshots" : "",
             done & DS_DONE_PAUSED ? ", the domain paused meanwhile" : "");
    refresh_now (dom, domain);
    tree_rdlock ();
    sdir = dom->attached ? tree_find_child (dom, "snapshots") : NULL;
    sn = sdir ? tree_find_child (sdir, ename) : NULL;
    if (sn)
      inode_ref (sn);
    tree_unlock ();
    if (!sn) {
      vd_error ("domain %s: snapshot %s was made, but is not seen in its "
                "snapshots (see the messages above)", domain, name);
      err = EIO;
    }
  }
  if (c)
    virConnectClose (c);
  inode_unref (dom);
  *out = sn;
  errno = err;
  return err ? -1 : 0;
}

/* Clear the removing marks set by mark_removing and drop its
 * references. */
static void
unmark_removing (struct fs_node **v, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    pthread_mutex_lock (&v[i]->lock);
    v[i]->removing = false;
    pthread_mutex_unlock (&v[i]->lock);
    inode_unref (v[i]);
  }
  free (v);
}

/* Mark the files in snapshot directory sn as being removed, so that
 * opens fail; *out (references) is what to give unmark_removing after,
 * as the refresh takes them out of sn, but the kernel may keep them
 * (and a new snapshot of the same name get them back).  -1 with errno
 * EBUSY, nothing marked, when one of them is open. */
static int
mark_removing (struct fs_node *sn, struct fs_node ***out, size_t *nout)
{
  struct fs_node **v = NULL;
  size_t n = 0, i;
  bool nomem = false;

  tree_rdlock ();
  if (sn->nchildren && (v = calloc (sn->nchildren, sizeof *v)) == NULL)
    nomem = true;
  else
    for (n = 0; n < sn->nchildren; n++)
      v[n] = inode_ref (sn->children[n]);
  tree_unlock ();
  if (nomem) {
    errno = ENOMEM;
    return -1;
  }
  for (i = 0; i < n; i++) {
    bool busy;

    pthread_mutex_lock (&v[i]->lock);
    busy = v[i]->nopen > 0;
    if (!busy)
      v[i]->removing = true;
    pthread_mutex_unlock (&v[i]->lock);
    if (busy) {
      size_t j;
      /* Unmark the ones before, drop every reference. */
      for (j = i; j < n; j++)
        inode_unref (v[j]);
      unmark_removing (v, i);
      errno = EBUSY;
      return -1;
    }
  }
  *out = v;
  *nout = n;
  return 0;
}

/* mark_removing, waiting up to RMDIR_BUSY_MS for files that were closed
 * a moment ago: close(2) returns before the kernel sends their release
 * (it is asynchronous), so "cp ...; rmdir" would often find one still
 * open. */
#define RMDIR_BUSY_MS 1000
static int
mark_removing_wait (struct fs_node *sn, struct fs_node ***out, size_t *nout)
{
  uint64_t until = now_ms () + RMDIR_BUSY_MS;

  while (mark_removing (sn, out, nout) < 0) {
    if (errno != EBUSY || now_ms () >= until)
      return -1;
    usleep (20 * 1000);
  }
  return 0;
}

/* rmdir <domain>/snapshots/<ename>: delete that snapshot. */
static int
libvirt_rmdir (struct fs_node *dir, const char *ename, struct fs_node *sn)
{
  CLEANUP_FREE char *domain = NULL, *name = NULL, *what = NULL;
  struct fs_node *dom, **marked = NULL;
  size_t nmarked = 0;
  virConnectPtr c;
  int err = 0;

  dom = snapshots_domain (dir, &domain);
  if (!dom)
    return -1;
  name = vd_name_unescape (ename);
  if (!name || asprintf (&what, "rmdir snapshots/%s", ename) < 0) {
    what = NULL;
    inode_unref (dom);
    errno = ENOMEM;
    return -1;
  }
  c = snap_conn (domain, what);
  if (!c)
    err = errno;
  else if (mark_removing_wait (sn, &marked, &nmarked) < 0) {
    err = errno;
    if (err == EBUSY)
      vd_info ("domain %s: %s: a file in it is open", domain, what);
  }
  else {
    if (ds_delete (c, domain, name) < 0)
      err = errno ? errno : EIO;    /* logged by domsnap */
    else
      vd_info ("domain %s: snapshot %s deleted (rmdir)", domain, name);
    /* Failed too: part of it may be gone.  The marks stay until the
     * tree no longer shows what was deleted (no open can reach a
     * snapshot id qemu may give to the next snapshot). */
    refresh_now (dom, domain);
    unmark_removing (marked, nmarked);
  }
  if (c)
    virConnectClose (c);
  inode_unref (dom);
  errno = err;
  return err ? -1 : 0;
}

static void
libvirt_stop (void)
{
  size_t i;

  pthread_mutex_lock (&conn_lock);
  drop_conn ();
  pthread_mutex_unlock (&conn_lock);
  if (idle_timer >= 0)
    virEventRemoveTimeout (idle_timer);
  idle_timer = -1;
  if (event_started) {
    __atomic_store_n (&event_quit, 1, __ATOMIC_RELEASE);
    if (virEventAddTimeout (0, wake_cb, NULL, NULL) >= 0)
      pthread_join (event_thread, NULL);
    event_started = false;
  }
  pthread_mutex_lock (&dirty_lock);
  for (i = 0; i < ndirty; i++)
    free (dirty[i]);
  ndirty = 0;
  pthread_mutex_unlock (&dirty_lock);
  lvm_idle (true);
  lvm_cache_clear ();
  free (active);
  active = NULL;
  free (uri);
  uri = NULL;
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
};
