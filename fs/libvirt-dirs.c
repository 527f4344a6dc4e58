/* vmdiskfs - the libvirt provider's directories made and removed:
 *
 * Snapshots by mkdir and rmdir in <domain>/snapshots/ (ops.c calls
 * libvirt_mkdir and libvirt_rmdir): libvirt_snapshotter's dom_create and
 * dom_delete (snapshotter/snapshotter.h; domsnap.h says what they do)
 * with the shown name unescaped, serialized per domain by domsnap's own
 * lock, across threads and processes (dom_create takes seconds: no tree or refresh lock is held meanwhile), then the
 * domain is refreshed at once, so that
 * the reply already shows the result.  While a snapshot is deleted its
 * files refuse opens (node->removing, EBUSY); one that is open makes
 * rmdir fail with EBUSY.
 *
 * Threads: mkdir and rmdir run in any FUSE thread with no lock held;
 * domsnap holds the domain's lock (/run/vmdiskfs/<uuid>.lock, a flock)
 * for the create or delete, and lets it go before the refresh after
 * (refresh_lock, through tree_refresh).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libvirt-priv.h"
#include "domsnap.h"
#include "cleanup.h"
#include "escape.h"
#include "log.h"

/* If dir is a domain's snapshots/ directory: the domain's node (a
 * reference) and its name (*name, malloc'd).  Else NULL with errno
 * EPERM (nothing can be made or removed there; ENOMEM). */
static struct fs_node *
snapshots_domain (struct fs_node *dir, char **name)
{
  struct fs_node *dom = NULL;
  struct virt_dom *d;

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

/* Is a disk of the domain node dom open for writing here (write.c)?  Then
 * what (mkdir or rmdir of a snapshot) is refused with a log line: our own
 * writer holds the domain's lock until its last close, and waiting for it
 * would hold the request in the kernel, unkillable. */
static bool
writing (struct fs_node *dom, const char *domain, const char *what)
{
  size_t i;
  bool r = false;

  tree_rdlock ();
  for (i = 0; dom->attached && i < dom->nchildren && !r; i++) {
    struct fs_node *k = dom->children[i];
    if (k->type != FS_NODE_DISK)
      continue;
    pthread_mutex_lock (&k->lock);
    r = k->writer != NULL;
    pthread_mutex_unlock (&k->lock);
  }
  tree_unlock ();
  if (r)
    vd_error ("domain %s: %s: a disk of the domain is open for writing "
              "in this mount (a restore): try again when it is closed",
              domain, what);
  return r;
}

/* The domain changed through us: refetch it now (its snapshot list and
 * XML, and LVM's answer), so that the reply shows the result. */
static void
refresh_now (struct fs_node *dom, const char *domain)
{
  virt_mark_dirty (domain);
  lvm_cache_flush ();
  tree_refresh (dom);
}

/* The connection for mkdir/rmdir of a snapshot of domain: read-write,
 * with a new reference.  NULL with errno (logged). */
static virConnectPtr
snap_conn (const char *domain, const char *what)
{
  virConnectPtr c;
  bool ro = false;

  c = virt_get_conn_mode (&ro);
  if (!c) {
    vd_error ("domain %s: %s: not connected to %s", domain, what, virt_uri);
    errno = EIO;
    return NULL;
  }
  if (ro) {
    vd_error ("domain %s: %s: the connection to %s is read-only (see the "
              "warning at start)", domain, what, virt_uri);
    virConnectClose (c);
    errno = EACCES;
    return NULL;
  }
  return c;
}

/* mkdir <domain>/snapshots/<ename>: a snapshot of every disk of the
 * domain, called by the unescaped name. */
int
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
  if (writing (dom, domain, what)) {
    inode_unref (dom);
    errno = EBUSY;
    return -1;
  }
  c = snap_conn (domain, what);
  if (!c)
    err = errno;
  else if (libvirt_snapshotter.dom_create (c, domain, name, &opts,
                                           &done) < 0)
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
  uint64_t until = vd_now_ms () + RMDIR_BUSY_MS;

  while (mark_removing (sn, out, nout) < 0) {
    if (errno != EBUSY || vd_now_ms () >= until)
      return -1;
    usleep (20 * 1000);
  }
  return 0;
}

/* rmdir <domain>/snapshots/<ename>: delete that snapshot. */
int
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
  if (writing (dom, domain, what)) {
    inode_unref (dom);
    errno = EBUSY;
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
    if (libvirt_snapshotter.dom_delete (c, domain, name) < 0)
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
