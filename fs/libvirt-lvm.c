/* vmdiskfs - the libvirt provider's LVM part: LVM's answer for many
 * disks at once, cached for LVM_CACHE_MS (refresh_lock), and the LVM
 * snapshots this daemon activated to read them (act_lock), deactivated
 * after LVM_IDLE_MS without use by a timer of the event loop, and at
 * exit.  lvm runs in a helper child (snapshotter/lvm.c).
 *
 * The idle timer takes act_lock, then inode_lock and node->lock (one at a
 * time) to see whether a snapshot is open.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <unistd.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "log.h"

static int lvm_flush;              /* atomic: forget the cached answers  */

/* LVM's answer for many disks at once, for LVM_CACHE_MS: asking costs
 * a helper child and an lvs run (50 ms and more), and the first listing
 * of a host with many domains on LVM rebuilds them one after the other.
 * Each question asks for the disk wanted and every active LV
 * (/dev/mapper), keyed by the resolved device path.  refresh_lock. */
struct lvm_cached {
  char *path;                       /* realpath */
  struct snap_list l;
};
static struct lvm_cached *lvc;
static size_t nlvc;
static uint64_t lvc_ms;

void
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

/* mkdir and rmdir: the next question is asked anew (any thread). */
void
lvm_cache_flush (void)
{
  __atomic_store_n (&lvm_flush, 1, __ATOMIC_RELEASE);
}

/* The snapshots of the block device at path (owned by the cache, valid
 * until the next call), or NULL with errno. */
const struct snap_list *
lvm_cache_snaps (const char *path)
{
  CLEANUP_FREE char *real = realpath (path, NULL);
  struct lvm_cached *v = NULL;
  const char **disks = NULL;
  struct snap_list *out = NULL;
  size_t n = 0, cap = 16, i, nask;
  struct dirent *de;
  DIR *dir;
  uint64_t now = vd_now_ms ();

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
      struct lvm_cached *t = vd_vec_grow (v, &cap, n, 1, sizeof *t);
      if (!t) {
        free (r);
        break;
      }
      v = t;
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

/* LVM snapshots this daemon activated: act_lock (taken without any other
 * lock, held across lvm calls: activations are serialized). */
struct lvm_active {
  char *id;
  unsigned flags;
  fuse_ino_t ino;                  /* the disk node reading it        */
  uint64_t used_ms;
};
static pthread_mutex_t act_lock = PTHREAD_MUTEX_INITIALIZER;
static struct lvm_active *active;
static size_t nactive, capactive;
static int idle_timer = -1;        /* mounted and stop (one thread) */

/* Make an LVM snapshot readable for node (open_disk).  0 or -1. */
int
lvm_use (const char *id, unsigned flags, fuse_ino_t ino)
{
  struct snap_info si = { 0 };
  size_t i;
  int r = 0;

  pthread_mutex_lock (&act_lock);
  for (i = 0; i < nactive; i++)
    if (strcmp (active[i].id, id) == 0) {
      char dev[PATH_MAX];
      /* A snapshot removed (rmdir) and made again under its name is
       * not active any more: its record goes, and it is activated. */
      snprintf (dev, sizeof dev, "/dev/%s", id);
      if (access (dev, F_OK) < 0 && errno == ENOENT) {
        free (active[i].id);
        active[i] = active[--nactive];
        break;
      }
      active[i].used_ms = vd_now_ms ();
      goto out;
    }
  si.id = (char *) id;
  si.flags = flags;
  r = lvm_snapshotter.activate (&si);
  if (r == 0) {
    struct lvm_active *t = vd_vec_grow (active, &capactive, nactive, 1,
                                        sizeof *t);
    char *s = strdup (id);
    if (t && s) {
      active = t;
      t[nactive].id = s;
      t[nactive].flags = si.flags;
      t[nactive].ino = ino;
      t[nactive].used_ms = vd_now_ms ();
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
  uint64_t now = vd_now_ms ();
  size_t i;

  pthread_mutex_lock (&act_lock);
  for (i = 0; i < nactive; ) {
    struct lvm_active *a = &active[i];
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

/* The event loop runs (libvirt-source.c): check for idle snapshots every
 * half LVM_IDLE_MS. */
void
lvm_idle_start (void)
{
  idle_timer = virEventAddTimeout (LVM_IDLE_MS / 2, idle_cb, NULL, NULL);
}

void
lvm_idle_stop (void)
{
  if (idle_timer >= 0)
    virEventRemoveTimeout (idle_timer);
  idle_timer = -1;
}

/* At exit (the event loop stopped): deactivate what we activated. */
void
lvm_active_stop (void)
{
  lvm_idle (true);
  free (active);
  active = NULL;
  nactive = capactive = 0;
}
