/* vmdiskfs - the libvirt provider's source: the connection to libvirt,
 * its events, the set of domains they named ("dirty"), and the fetches
 * of a domain's XML and snapshots.
 *
 * The connection is read-write unless -o ro (snapshots); when libvirt
 * refuses that (not root, polkit) it is read-only, with one warning, and
 * mkdir and rmdir fail with EACCES.  It is opened on
 * first use after the daemon forked (libvirt's state and threads do not
 * survive fork: start() only checks that it can connect), and reopened
 * when libvirt says it closed (libvirtd restarted) at the next access,
 * at most every RECONNECT_MS; everything is then refetched.
 *
 * Events: one event thread runs libvirt's default event loop
 * (virt_events_start): keepalive, the close callback and lifecycle
 * events, whose callbacks only set atomics, add names to the dirty set
 * (dirty_lock, a leaf lock) and queue kernel invalidations (tree.c's
 * notify queue): they never take tree or connection locks, and never call
 * libvirt.  The LVM idle timer (libvirt-lvm.c) runs there too.
 *
 * What protects what: conn_lock the connection, its mode and callback
 * ids; dirty_lock the dirty set; the rest is atomic or constant after
 * start.  libvirt objects are thread-safe.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "libvirt-priv.h"
#include "domsnap.h"
#include "cleanup.h"
#include "escape.h"
#include "log.h"

#define RECONNECT_MS        1000
#define MAX_DIRTY           1024   /* more: everything is refetched */

char *virt_uri;                    /* constant after start */
bool virt_system_uri;              /* qemu:///system: config file times */

/* The connection: conn_lock. */
static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static virConnectPtr conn;
static bool conn_ro;               /* conn is read-only (fallback)       */
static bool rw_warned;             /* the fallback was reported          */
static int lifecycle_id = -1;
static uint64_t last_connect_ms;
static bool connect_failing;

/* Atomics. */
unsigned virt_epoch = 1;           /* bumped: every domain is refetched  */
static int conn_broken;            /* set by the close callback          */
int virt_root_dirty;               /* a domain was defined or undefined  */
static int events_on;              /* the event loop runs                */
static int event_quit;

/* The event thread: mounted and stop (one thread, in turn). */
static pthread_t event_thread;
static bool event_started;

/* Domains named by events since their last refetch: dirty_lock. */
static pthread_mutex_t dirty_lock = PTHREAD_MUTEX_INITIALIZER;
static char *dirty[MAX_DIRTY];
static size_t ndirty;              /* also read atomically without lock */

/* ---- libvirt errors: logged with the URI, errno by snapshotter/virt.c's
 * table (a vanished domain or snapshot is ENOENT, all else EIO). ---- */

void
virt_silent (void *opaque, virErrorPtr e)
{
  /* libvirt would print every error to stderr; virt_error logs them. */
}

/* Log what failed with libvirt's last error of this thread; errno is
 * ENOENT for a domain or snapshot that no longer exists, else EIO. */
void
virt_error (const char *fmt, ...)
{
  virErrorPtr e = virGetLastError ();
  CLEANUP_FREE char *what = NULL;
  int code = e ? e->code : VIR_ERR_OK;
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&what, fmt, ap) < 0)
    what = NULL;
  va_end (ap);
  vd_error ("%s: %s: %s", virt_uri, what ? what : "libvirt",
            e && e->message ? e->message : "unknown libvirt error");
  errno = virt_errno (code, VIRT_NOENT);
}

/* ---- Events. ---- */

void
virt_mark_dirty (const char *name)
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
      __atomic_add_fetch (&virt_epoch, 1, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock (&dirty_lock);
}

bool
virt_is_dirty (const char *name, bool take)
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
void
virt_prune_dirty (struct fs_node *root)
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

/* At exit. */
void
virt_dirty_clear (void)
{
  size_t i;

  pthread_mutex_lock (&dirty_lock);
  for (i = 0; i < ndirty; i++)
    free (dirty[i]);
  ndirty = 0;
  pthread_mutex_unlock (&dirty_lock);
}

/* Event thread. */
static int
lifecycle_cb (virConnectPtr c, virDomainPtr dom, int event, int detail,
              void *opaque)
{
  const char *name = virDomainGetName (dom);

  vd_debug ("%s: event %d detail %d on %s", virt_uri, event, detail,
            name ? name : "?");
  if (event == VIR_DOMAIN_EVENT_DEFINED
      || event == VIR_DOMAIN_EVENT_UNDEFINED)
    __atomic_store_n (&virt_root_dirty, 1, __ATOMIC_RELEASE);
  if (name) {
    char *e = vd_name_escape (name);
    virt_mark_dirty (name);
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
  __atomic_store_n (&virt_root_dirty, 1, __ATOMIC_RELEASE);
}

static void *
event_main (void *arg)
{
  while (!__atomic_load_n (&event_quit, __ATOMIC_ACQUIRE))
    if (virEventRunDefaultImpl () < 0) {
      virt_error ("event loop");
      sleep (1);
    }
  return NULL;
}

static void
wake_cb (int timer, void *opaque)
{
  virEventRemoveTimeout (timer);
}

/* Start the event thread (the daemon runs: see the provider's mounted).
 * 0, or -1 (logged): no events. */
int
virt_events_start (void)
{
  int e;

  if (virEventRegisterDefaultImpl () < 0) {
    virt_error ("no event loop (changes show within %d s)",
              DOM_RECHECK_MS / 1000);
    return -1;
  }
  __atomic_store_n (&events_on, 1, __ATOMIC_RELEASE);
  e = pthread_create (&event_thread, NULL, event_main, NULL);
  if (e) {
    vd_error ("cannot start the libvirt event thread: %s", strerror (e));
    __atomic_store_n (&events_on, 0, __ATOMIC_RELEASE);
    return -1;
  }
  event_started = true;
  return 0;
}

void
virt_events_stop (void)
{
  if (event_started) {
    __atomic_store_n (&event_quit, 1, __ATOMIC_RELEASE);
    if (virEventAddTimeout (0, wake_cb, NULL, NULL) >= 0)
      pthread_join (event_thread, NULL);
    event_started = false;
  }
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
    return virConnectOpenReadOnly (virt_uri);
  c = virConnectOpen (virt_uri);
  if (c) {
    *ro = false;
    return c;
  }
  e = virGetLastError ();
  *why = strdup (e && e->message ? e->message : "unknown libvirt error");
  return virConnectOpenReadOnly (virt_uri);
}

/* At start, before fork: can we connect?  Only a check (see the
 * header); the fallback to a read-only connection is reported here,
 * once, on the terminal.  0, or -1 (said on stderr). */
int
virt_check_connect (void)
{
  CLEANUP_FREE char *why = NULL;
  bool ro;
  virConnectPtr c = connect_rw_or_ro (&ro, &why);

  if (!c) {
    virErrorPtr e = virGetLastError ();
    fprintf (stderr, "vmdiskfs: cannot connect to %s: %s\n", virt_uri,
             e && e->message ? e->message : "unknown libvirt error");
    return -1;
  }
  if (ro && !fs_config.ro) {
    fprintf (stderr, "vmdiskfs: warning: cannot connect to %s read-write "
             "(%s): connected read-only, mkdir and rmdir of snapshots "
             "fail with EACCES\n", virt_uri, why ? why : "?");
    rw_warned = true;
  }
  virConnectClose (c);
  return 0;
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
             "mkdir and rmdir of snapshots fail with EACCES", virt_uri,
             why ? why : "?");
    rw_warned = true;
  }
  if (!c) {
    if (!quiet)
      virt_error ("cannot connect (retrying at the next access)");
    return -1;
  }
  if (virConnectRegisterCloseCallback (c, close_cb, NULL, NULL) < 0)
    virt_error ("cannot watch the connection");
  if (__atomic_load_n (&events_on, __ATOMIC_ACQUIRE)) {
    lifecycle_id = virConnectDomainEventRegisterAny
      (c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
       VIR_DOMAIN_EVENT_CALLBACK (lifecycle_cb), NULL, NULL);
    if (lifecycle_id < 0)
      virt_error ("no domain events (changes show within %d s)",
                DOM_RECHECK_MS / 1000);
    if (virConnectSetKeepAlive (c, 5, 3) < 0)
      virResetLastError ();     /* not supported by every driver */
  }
  __atomic_store_n (&conn_broken, 0, __ATOMIC_RELEASE);
  __atomic_add_fetch (&virt_epoch, 1, __ATOMIC_RELEASE);
  __atomic_store_n (&virt_root_dirty, 1, __ATOMIC_RELEASE);
  conn = c;
  conn_ro = ro;
  return 0;
}

/* The connection with a new reference (virConnectClose it), reconnecting
 * if it was lost; NULL with errno ENOTCONN.  *ro (if not NULL): it is
 * read-only. */
virConnectPtr
virt_get_conn_mode (bool *ro)
{
  virConnectPtr c = NULL;
  uint64_t now = vd_now_ms ();

  pthread_mutex_lock (&conn_lock);
  if (conn && (__atomic_load_n (&conn_broken, __ATOMIC_ACQUIRE)
               || virConnectIsAlive (conn) != 1)) {
    vd_warn ("%s: connection lost, reconnecting", virt_uri);
    drop_conn ();
  }
  if (!conn && (last_connect_ms == 0
                || now - last_connect_ms >= RECONNECT_MS)) {
    last_connect_ms = now;
    if (open_conn (connect_failing) == 0) {
      if (connect_failing)
        vd_info ("%s: connected again", virt_uri);
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

virConnectPtr
virt_get_conn (void)
{
  return virt_get_conn_mode (NULL);
}

/* At exit. */
void
virt_conn_close (void)
{
  pthread_mutex_lock (&conn_lock);
  drop_conn ();
  pthread_mutex_unlock (&conn_lock);
}

/* b->volume_path: the volume's path in its pool, through b->c. */
char *
virt_volume_path (struct build *b, const struct domxml_disk *d)
{
  char *path = ds_volume_path (b->c, d->pool, d->volume);

  if (!path)
    virt_error ("domain %s: disk %s: volume %s in pool %s", b->dname,
                d->target ? d->target : "?", d->volume, d->pool);
  return path;
}

/* ---- Fetches. ---- */

void
virt_snaps_free (struct virt_snap *s, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    free (s[i].name);
    fs_blob_unref (s[i].xml);
  }
  free (s);
}


static int
virt_snap_cmp (const void *a, const void *b)
{
  const struct virt_snap *x = a, *y = b;

  return strcmp (x->name, y->name);
}

/* The domain's snapshots: names, sorted, with the XML of those not in
 * old (unless refetch).  0, or -1 (logged). */
int
virt_fetch_snapshots (struct virt_dom *d, bool xml, bool refetch,
                 struct virt_snap **out, size_t *nout)
{
  virDomainSnapshotPtr *snaps = NULL;
  struct virt_snap *v;
  int n, i;
  size_t k = 0;

  n = virDomainListAllSnapshots (d->dom, &snaps, 0);
  if (n < 0) {
    virt_error ("domain %s: cannot list snapshots", d->name);
    return -1;
  }
  v = calloc (n ? n : 1, sizeof *v);
  for (i = 0; i < n; i++) {
    const char *name = virDomainSnapshotGetName (snaps[i]);
    struct virt_snap key, *old;
    char *x;

    if (!v || !name || (v[k].name = strdup (name)) == NULL)
      goto next;
    if (xml) {
      key.name = v[k].name;
      old = refetch ? NULL : bsearch (&key, d->snaps, d->nsnaps,
                                      sizeof *d->snaps, virt_snap_cmp);
      if (old)
        v[k].xml = fs_blob_ref (old->xml);
      else if ((x = virDomainSnapshotGetXMLDesc (snaps[i], 0)) != NULL) {
        v[k].xml = scan_virsh_blob (x, strlen (x));
        free (x);
      }
      else if (virt_last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT)
        virt_error ("domain %s: snapshot %s", d->name, name);
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
  qsort (v, k, sizeof *v, virt_snap_cmp);
  *out = v;
  *nout = k;
  return 0;
}

/* Same snapshot names as cached? */
bool
virt_same_names (const struct virt_dom *d, const struct virt_snap *v, size_t n)
{
  size_t i;

  if (n != d->nsnaps)
    return false;
  for (i = 0; i < n; i++)
    if (strcmp (v[i].name, d->snaps[i].name) != 0)
      return false;
  return true;
}

/* virt_fetch_domain; running: the domain's state as its virDomainPtr
 * came (a listing's, just made: one call less), or -1 to ask. */
static int
fetch_domain (struct virt_dom *d, bool refetch, int running)
{
  struct virt_snap *v;
  size_t n;
  char *x;
  int active;

  x = virDomainGetXMLDesc (d->dom, VIR_DOMAIN_XML_INACTIVE);
  if (!x) {
    if (virt_last_code () == VIR_ERR_NO_DOMAIN) {
      errno = ENOENT;
      return -1;
    }
    virt_error ("domain %s: cannot get its XML", d->name);
    return -1;
  }
  {
    struct fs_blob *nb = scan_virsh_blob (x, strlen (x));
    if (nb && !fs_blob_equal (nb, d->xml)) {
      fs_blob_unref (d->xml);
      d->xml = nb;
      d->first_seen = time (NULL);
    }
    else
      fs_blob_unref (nb);
  }
  free (x);
  active = running >= 0 ? running : virDomainIsActive (d->dom);
  if (active >= 0)
    d->running = active == 1;
  if (virt_fetch_snapshots (d, true, refetch, &v, &n) == 0) {
    virt_snaps_free (d->snaps, d->nsnaps);
    d->snaps = v;
    d->nsnaps = n;
  }
  return 0;
}

/* Fetch everything of the domain from libvirt into d (refresh_lock). 0,
 * or -1: the domain is gone (errno ENOENT) or libvirt failed (logged). */
int
virt_fetch_domain (struct virt_dom *d, bool refetch)
{
  return fetch_domain (d, refetch, -1);
}

/* ---- Prefetch.  The first scan of a domain costs some 4 + S libvirt
 * calls (S snapshots), each a round trip to libvirtd; ls -R asks for one
 * domain after the other, so a mount of 1,000 domains spent seconds
 * waiting for them one at a time.  When the root's listing shows domains
 * never scanned, PREFETCH_THREADS threads fetch their data (virt_fetch_
 * domain, the same calls) ahead, in name order, several at a time:
 * libvirt's client has many calls in flight on one connection and
 * libvirtd answers them with several workers.  refresh_domain takes a
 * domain's data from there for its first scan (virt_prefetch_take),
 * waiting for a fetch under way, instead of calling libvirt itself; the
 * rest of the scan (images, the tree) is unchanged.
 *
 * pre_lock protects the queue and every struct virt_pre (d->pre); it is
 * taken with refresh_lock held or alone, and no lock is taken under it.
 * A queued domain's node is held by a reference of the queue's, then of
 * the thread fetching it, so its struct virt_dom outlives the fetch. ---- */

#define PREFETCH_THREADS 4

static pthread_mutex_t pre_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pre_cond = PTHREAD_COND_INITIALIZER;   /* queued  */
static pthread_cond_t pre_done = PTHREAD_COND_INITIALIZER;   /* fetched */
static struct fs_node **pre_queue;     /* [pre_head, pre_n) queued */
static size_t pre_head, pre_n, pre_cap;
static pthread_t pre_threads[PREFETCH_THREADS];
static size_t pre_nthreads;
static bool pre_quit;
static unsigned pre_batch;             /* bumped by each virt_prefetch */

/* Each prefetch thread's own connection (virt_prefetch_open), made
 * before the event loop is registered, so that libvirt watches it with
 * no event handle: on the shared connection every call takes the
 * socket from the event thread and gives it back (two wakeups of that
 * thread, each a write to its pipe, a poll and a read), and calls of
 * several threads queue behind one another (libvirt's client passes the
 * socket from thread to thread, more wakeups) and behind libvirtd's
 * limit of requests per client (max_client_requests, 5).  Measured with
 * 1,000 domains of 10 snapshots (bench/many-domains.sh): the event
 * thread alone took a fifth of the daemon's CPU in the first ls -R.
 * The domains fetched are looked up in the thread's own listing of its
 * connection (one virConnectListAllDomains per batch); the virDomainPtr
 * kept for later scans is the shared connection's.  A connection that
 * breaks (libvirtd restarted) is closed, and its thread uses the shared
 * one from then on.  The thread's alone: no lock. */
struct pre_conn {
  virConnectPtr c;                     /* NULL: use the shared one */
  virDomainPtr *doms;                  /* c's listing, sorted by name */
  int ndoms;
  unsigned batch;                      /* pre_batch it was listed for */
  bool listed;
};
static struct pre_conn pre_conns[PREFETCH_THREADS];

void
virt_pre_free (struct virt_pre *p)
{
  if (!p)
    return;
  if (p->dom)
    virDomainFree (p->dom);
  fs_blob_unref (p->xml);
  virt_snaps_free (p->snaps, p->nsnaps);
  free (p);
}

/* The next node whose fetch is to be made (a reference of the caller's),
 * or NULL to stop.  pre_lock held. */
static struct fs_node *
pre_next (void)
{
  while (!pre_quit) {
    if (pre_head < pre_n) {
      struct fs_node *node = pre_queue[pre_head++];
      if (pre_head == pre_n)
        pre_head = pre_n = 0;
      return node;
    }
    pthread_cond_wait (&pre_cond, &pre_lock);
  }
  return NULL;
}

static void
pre_conn_unlist (struct pre_conn *pc)
{
  int i;

  for (i = 0; i < pc->ndoms; i++)
    virDomainFree (pc->doms[i]);
  free (pc->doms);
  pc->doms = NULL;
  pc->ndoms = 0;
  pc->listed = false;
}

/* Close pc's connection.  Its socket may be dead without libvirt having
 * noticed (no event handle watches it: libvirtd restarted), and libvirt
 * writes its close request with write(2): the SIGPIPE that raises is
 * kept to this thread and taken here (libfuse ignores SIGPIPE only while
 * the session runs; the last close comes after). */
static void
pre_conn_drop (struct pre_conn *pc)
{
  struct timespec zero = { 0, 0 };
  sigset_t pipe, old;

  pre_conn_unlist (pc);
  if (!pc->c)
    return;
  sigemptyset (&pipe);
  sigaddset (&pipe, SIGPIPE);
  pthread_sigmask (SIG_BLOCK, &pipe, &old);
  virConnectClose (pc->c);
  pc->c = NULL;
  while (sigtimedwait (&pipe, NULL, &zero) > 0)
    ;
  pthread_sigmask (SIG_SETMASK, &old, NULL);
}

static int
dom_name_cmp (const void *a, const void *b)
{
  const char *x = virDomainGetName (*(virDomainPtr const *) a);
  const char *y = virDomainGetName (*(virDomainPtr const *) b);

  return strcmp (x ? x : "", y ? y : "");
}

/* The domain called name on pc's own connection (not a new reference),
 * listed once per batch; NULL: use the shared connection. */
static virDomainPtr
pre_conn_dom (struct pre_conn *pc, const char *name, unsigned batch)
{
  int lo, hi;

  if (!pc->c)
    return NULL;
  if (!pc->listed || pc->batch != batch) {
    pre_conn_unlist (pc);
    pc->batch = batch;
    pc->ndoms = virConnectListAllDomains (pc->c, &pc->doms,
                                          VIR_CONNECT_LIST_DOMAINS_PERSISTENT);
    if (pc->ndoms < 0) {
      pc->ndoms = 0;
      pc->doms = NULL;
      if (virConnectIsAlive (pc->c) != 1) {
        vd_debug ("%s: a prefetch connection closed: using the shared one",
                  virt_uri);
        pre_conn_drop (pc);
      }
      virResetLastError ();
      return NULL;
    }
    qsort (pc->doms, pc->ndoms, sizeof *pc->doms, dom_name_cmp);
    pc->listed = true;
  }
  for (lo = 0, hi = pc->ndoms; lo < hi; ) {
    int mid = (lo + hi) / 2;
    const char *n = virDomainGetName (pc->doms[mid]);
    int r = strcmp (name, n ? n : "");
    if (r == 0)
      return pc->doms[mid];
    if (r < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;                  /* defined since the listing */
}

static void *
pre_main (void *arg)
{
  struct pre_conn *pc = arg;
  struct fs_node *node;
  sigset_t pipe;

  /* A call on a connection whose socket died raises SIGPIPE in the
   * calling thread (pre_conn_drop): blocked here, the call fails with
   * EPIPE instead, and what stays pending goes with the thread. */
  sigemptyset (&pipe);
  sigaddset (&pipe, SIGPIPE);
  pthread_sigmask (SIG_BLOCK, &pipe, NULL);
  pthread_mutex_lock (&pre_lock);
  while ((node = pre_next ()) != NULL) {
    struct virt_dom *d, tmp;
    struct virt_pre *p;
    virConnectPtr c;
    virDomainPtr own;
    unsigned batch = pre_batch;
    int err = 0;

    tree_rdlock ();
    d = node->priv;
    tree_unlock ();
    p = d ? d->pre : NULL;
    if (!p || p->state != PRE_QUEUED) {
      /* Scanned meanwhile (virt_prefetch_take dropped it). */
      pthread_mutex_unlock (&pre_lock);
      inode_unref (node);
      pthread_mutex_lock (&pre_lock);
      continue;
    }
    p->state = PRE_RUNNING;
    memset (&tmp, 0, sizeof tmp);
    tmp.name = d->name;         /* constant */
    tmp.dom = p->dom;           /* p is ours while PRE_RUNNING */
    pthread_mutex_unlock (&pre_lock);

    own = pre_conn_dom (pc, tmp.name, batch);
    if (own) {
      /* The listing's domain (just now) says whether it runs: a start or
       * stop since sent an event, which drops this. */
      tmp.dom = own;
      if (fetch_domain (&tmp, true,
                        virDomainGetID (own) != (unsigned) -1) < 0) {
        err = errno ? errno : EIO;
        if (virConnectIsAlive (pc->c) != 1)
          pre_conn_drop (pc);
      }
      tmp.dom = p->dom;
    }
    else if ((c = virt_get_conn ()) == NULL)
      err = ENOTCONN;
    else {
      /* The listing's domain (refresh_root, just now), as above. */
      if (fetch_domain (&tmp, true,
                        virDomainGetID (tmp.dom) != (unsigned) -1) < 0)
        err = errno ? errno : EIO;
      virConnectClose (c);
    }

    pthread_mutex_lock (&pre_lock);
    p->err = err;
    p->xml = tmp.xml;
    p->running = tmp.running;
    p->snaps = tmp.snaps;
    p->nsnaps = tmp.nsnaps;
    p->state = PRE_DONE;
    pthread_cond_broadcast (&pre_done);
    pthread_mutex_unlock (&pre_lock);
    inode_unref (node);
    pthread_mutex_lock (&pre_lock);
  }
  pthread_mutex_unlock (&pre_lock);
  pre_conn_drop (pc);
  return NULL;
}

static int
pre_node_cmp (const void *a, const void *b)
{
  const struct fs_node *x = *(struct fs_node *const *) a;
  const struct fs_node *y = *(struct fs_node *const *) b;

  return strcmp (x->name, y->name);
}

/* refresh_lock held, not tree_lock: queue the fetch of the domains of
 * nodes never scanned nor queued yet.  nodes holds references of the
 * caller's, all given here (nodes is reordered). */
void
virt_prefetch (struct fs_node **nodes, size_t n)
{
  unsigned ep = __atomic_load_n (&virt_epoch, __ATOMIC_ACQUIRE);
  size_t i, k = 0;

  /* In the order of ls's listing. */
  qsort (nodes, n, sizeof *nodes, pre_node_cmp);
  pthread_mutex_lock (&pre_lock);
  for (i = 0; i < n; i++) {
    struct virt_dom *d;
    struct virt_pre *p = NULL;
    struct fs_node **t;

    tree_rdlock ();
    d = nodes[i]->priv;
    tree_unlock ();
    if (pre_quit || !d || d->scanned || d->pre || !d->dom)
      continue;
    t = vd_vec_grow (pre_queue, &pre_cap, pre_n, 1, sizeof *t);
    if (t)
      pre_queue = t;
    if (!t || (p = calloc (1, sizeof *p)) == NULL)
      continue;
    p->state = PRE_QUEUED;
    p->epoch = ep;
    p->dom = d->dom;
    virDomainRef (p->dom);
    d->pre = p;
    pre_queue[pre_n++] = nodes[i];
    nodes[i] = NULL;            /* the queue's reference now */
    k++;
  }
  while (k && !pre_quit && pre_nthreads < PREFETCH_THREADS
         && pthread_create (&pre_threads[pre_nthreads], NULL, pre_main,
                            &pre_conns[pre_nthreads]) == 0)
    pre_nthreads++;
  if (k) {
    pre_batch++;
    pthread_cond_broadcast (&pre_cond);
  }
  pthread_mutex_unlock (&pre_lock);
  for (i = 0; i < n; i++)
    if (nodes[i])
      inode_unref (nodes[i]);
}

/* refresh_lock held (refresh_domain, a first scan): d's data fetched
 * ahead into d (its XML, state, snapshots and domain), if fetched in
 * epoch ep without error: true.  A fetch under way is waited for; one
 * queued is dropped (false: the caller fetches; its thread skips it).
 * use false: whatever there is is dropped (an event named the domain since: it may have
 * changed after the fetch). */
bool
virt_prefetch_take (struct virt_dom *d, unsigned ep, bool use)
{
  struct virt_pre *p;
  bool ok = false;

  pthread_mutex_lock (&pre_lock);
  p = d->pre;
  if (p && p->state == PRE_RUNNING)
    while (p->state == PRE_RUNNING)
      pthread_cond_wait (&pre_done, &pre_lock);
  if (p) {
    d->pre = NULL;
    if (use && p->state == PRE_DONE && p->epoch == ep && !p->err) {
      fs_blob_unref (d->xml);
      d->xml = p->xml;
      p->xml = NULL;
      d->first_seen = time (NULL);
      d->running = p->running;
      virt_snaps_free (d->snaps, d->nsnaps);
      d->snaps = p->snaps;
      d->nsnaps = p->nsnaps;
      p->snaps = NULL;
      p->nsnaps = 0;
      if (d->dom)
        virDomainFree (d->dom);
      d->dom = p->dom;
      d->dom_epoch = p->epoch;
      p->dom = NULL;
      ok = true;
    }
  }
  pthread_mutex_unlock (&pre_lock);
  virt_pre_free (p);
  return ok;
}

/* The daemon runs, before virt_events_start: open the prefetch threads'
 * own connections (struct pre_conn).  One that fails leaves its thread
 * on the shared connection. */
void
virt_prefetch_open (void)
{
  size_t i;

  for (i = 0; i < PREFETCH_THREADS; i++) {
    CLEANUP_FREE char *why = NULL;
    bool ro;

    pre_conns[i].c = connect_rw_or_ro (&ro, &why);
    if (!pre_conns[i].c) {
      vd_debug ("%s: no prefetch connection: %s", virt_uri,
                why ? why : "?");
      virResetLastError ();
    }
  }
}

/* At exit, before the connection goes. */
void
virt_prefetch_stop (void)
{
  size_t i;

  pthread_mutex_lock (&pre_lock);
  pre_quit = true;
  pthread_cond_broadcast (&pre_cond);
  pthread_mutex_unlock (&pre_lock);
  for (i = 0; i < pre_nthreads; i++)
    pthread_join (pre_threads[i], NULL);
  pre_nthreads = 0;
  for (i = 0; i < PREFETCH_THREADS; i++)
    pre_conn_drop (&pre_conns[i]);
  for (i = pre_head; i < pre_n; i++)
    inode_unref (pre_queue[i]);
  free (pre_queue);
  pre_queue = NULL;
  pre_head = pre_n = pre_cap = 0;
}
