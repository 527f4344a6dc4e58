/* vmdiskfs - restoring whole VMs by copying their directories in
 * (DESIGN.md "Writing"): pending directories, and what happens when a
 * file being restored is complete.
 *
 * Pending directories.  `cp -a /backup/web MOUNT/` first makes the
 * directory web, which libvirt does not know: mkdir makes a pending
 * directory (the provider's may_pend says whether name may be one:
 * libvirt, a name it does not know, in the root).  Inside it, mkdir
 * makes snapshots/ and snapshots/<name>/, pending too, and every file
 * created is a staging file (staging.c).  Pending directories live
 * outside the tree, as staging files do: lookup and readdir find them
 * here, by the inode their path gives (inode.c), which is the inode the
 * tree gives the same path once the domain is defined, so the kernel's
 * view carries over.  rmdir (rm -rf) or unmount removes a pending
 * directory with every file staged in it: nothing stays on the host.
 *
 * Complete files.  A staging file is complete when its writer closes it
 * (flush; every close(2) reaches us), fsyncs it, or renames it to its
 * final name (rsync, sed -i).  Then the provider's complete says what it
 * means where it is: domain.xml defines the domain, a disk is written
 * (the disk's image created first if the domain names one that does not
 * exist), a snapshot's files recreate the snapshot ...  or that it must
 * wait (a disk of a domain not yet defined): it stays staged, marked
 * complete, and every time something of its domain is applied, the
 * waiting files of that domain are offered again, definitions first.
 * So files may arrive in any order (cp follows readdir's).
 *
 * Overlays.  A file of the tree opened for writing (domain.xml with
 * O_TRUNC, a snapshot's disk) gets an overlay: a staging file holding its
 * new bytes, never found by name, applied at each complete close and
 * removed with its last handle.
 *
 * Threads: pending_lock guards the list; a leaf (inode_lock, taken by
 * inode_get_node, is never held across it).  Applying runs with no lock
 * held: the provider takes what it needs.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmdiskfs.h"
#include "ops-priv.h"
#include "clock.h"
#include "log.h"

#define MAX_ROUNDS 16

/* The program that made a directory here (cp -a, tar -x: one process
 * each) creates every file in it with O_EXCL, which the kernel fails
 * with EEXIST by itself when our lookup finds the name.  But names
 * appear in such a directory as the copy goes on: the domain.xml copied
 * first defines the domain, which brings its disks and snapshots/; a
 * snapshot directory made by mkdir holds the snapshot of now.  So to the
 * process that made the directory (and only to it, as long as it runs),
 * lookup hides the tree's names it has not made itself yet
 * (restore_hides): its create then replaces them.  Every other process
 * sees the tree as it is.  (rsync makes directories in one process and
 * files in another, but writes temporary names and renames them over
 * the tree's, which needs no hiding.) */

struct pending {
  struct fs_node *node;         /* a reference; FS_NODE_DIR */
  fuse_ino_t parent;
  pid_t maker;                  /* the process that made it */
  bool adopted;                 /* a directory of the tree (mkdir made
                                   a snapshot), not a pending one */
  uint64_t last_ms;             /* last file made, renamed or applied */
  char **revealed;              /* names the copy made in it */
  size_t nrevealed;
  struct pending *next;
};

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pending *pendings;
static unsigned npending;       /* atomic read without the lock */

/* pending_lock held: the record of node, or NULL. */
static struct pending **
find_locked (fuse_ino_t ino)
{
  struct pending **pp;

  for (pp = &pendings; *pp; pp = &(*pp)->next)
    if ((*pp)->node->ino == ino)
      return pp;
  return NULL;
}

static bool
attached (struct fs_node *node)
{
  bool r;

  tree_rdlock ();
  r = node->attached;
  tree_unlock ();
  return r;
}

bool
restore_is_pending (struct fs_node *node)
{
  bool r;

  if (__atomic_load_n (&npending, __ATOMIC_RELAXED) == 0
      || node->type != FS_NODE_DIR)
    return false;
  struct pending **pp;

  pthread_mutex_lock (&pending_lock);
  pp = find_locked (node->ino);
  r = pp && !(*pp)->adopted;
  pthread_mutex_unlock (&pending_lock);
  return r && !attached (node);
}

struct fs_node *
restore_lookup (struct fs_node *dir, const char *name)
{
  struct pending *p;
  struct fs_node *n = NULL;

  if (__atomic_load_n (&npending, __ATOMIC_RELAXED) == 0)
    return NULL;
  pthread_mutex_lock (&pending_lock);
  for (p = pendings; p; p = p->next)
    if (!p->adopted && p->parent == dir->ino
        && strcmp (p->node->name, name) == 0) {
      n = inode_ref (p->node);
      break;
    }
  pthread_mutex_unlock (&pending_lock);
  /* Defined meanwhile: the tree's node (the same one) answers. */
  if (n && attached (n)) {
    inode_unref (n);
    n = NULL;
  }
  return n;
}

/* pending_lock held: is name revealed in rec? */
static bool
revealed_locked (const struct pending *rec, const char *name)
{
  size_t i;

  for (i = 0; i < rec->nrevealed; i++)
    if (strcmp (rec->revealed[i], name) == 0)
      return true;
  return false;
}

void
restore_touch (fuse_ino_t dir, const char *name)
{
  struct pending **pp;

  if (__atomic_load_n (&npending, __ATOMIC_RELAXED) == 0)
    return;
  pthread_mutex_lock (&pending_lock);
  pp = find_locked (dir);
  if (pp) {
    struct pending *rec = *pp;
    rec->last_ms = vd_now_ms ();
    if (name && !revealed_locked (rec, name)) {
      char **v = realloc (rec->revealed,
                          (rec->nrevealed + 1) * sizeof *v);
      if (v) {
        rec->revealed = v;
        if ((v[rec->nrevealed] = strdup (name)) != NULL)
          rec->nrevealed++;
      }
    }
  }
  pthread_mutex_unlock (&pending_lock);
}

/* pending_lock held: does the process that made rec's directory still
 * run? */
static bool
maker_alive (const struct pending *rec)
{
  return rec->maker > 0 && (kill (rec->maker, 0) == 0 || errno == EPERM);
}

static void
free_rec (struct pending *rec)
{
  size_t i;

  inode_unref (rec->node);
  for (i = 0; i < rec->nrevealed; i++)
    free (rec->revealed[i]);
  free (rec->revealed);
  free (rec);
}

/* pending_lock held: forget the records whose directory is the tree's
 * and whose maker is gone: they hide nothing any more. */
static void
prune_locked (void)
{
  struct pending **pp = &pendings;

  while (*pp) {
    struct pending *rec = *pp;
    if ((rec->adopted || rec->node->attached) && !maker_alive (rec)) {
      *pp = rec->next;
      __atomic_sub_fetch (&npending, 1, __ATOMIC_RELAXED);
      free_rec (rec);
      continue;
    }
    pp = &rec->next;
  }
}

bool
restore_hides (struct fs_node *dir, const char *name, pid_t pid)
{
  static uint64_t pruned_ms;     /* pending_lock */
  struct pending **pp;
  bool r = false;

  if (__atomic_load_n (&npending, __ATOMIC_RELAXED) == 0)
    return false;
  pthread_mutex_lock (&pending_lock);
  /* Every lookup asks: forget the records that hide nothing any more (at
   * most once a second), so that once the copies are done lookups are
   * back to the lock-free test above. */
  if (vd_now_ms () - pruned_ms >= 1000) {
    pruned_ms = vd_now_ms ();
    prune_locked ();
  }
  pp = find_locked (dir->ino);
  if (pp && pid == (*pp)->maker && !revealed_locked (*pp, name)
      && maker_alive (*pp))
    r = true;
  pthread_mutex_unlock (&pending_lock);
  return r;
}

/* Is dir a pending directory, or one made by the process pid, which
 * still fills it (a domain being restored, defined by its domain.xml
 * meanwhile)? */
static bool
restoring (struct fs_node *dir, pid_t pid)
{
  struct pending **pp;
  bool r;

  if (__atomic_load_n (&npending, __ATOMIC_RELAXED) == 0
      || dir->type != FS_NODE_DIR)
    return false;
  pthread_mutex_lock (&pending_lock);
  pp = find_locked (dir->ino);
  r = pp && ((!(*pp)->adopted && !attached ((*pp)->node))
             || (pid == (*pp)->maker && maker_alive (*pp)));
  pthread_mutex_unlock (&pending_lock);
  return r;
}

/* The number of components of path ("/" 0, "/a" 1, "/a/b" 2). */
static unsigned
depth (const char *path)
{
  unsigned d = 0;

  for (; *path; path++)
    d += *path == '/' && path[1];
  return d;
}

int
restore_mkdir (struct fs_node *dir, const char *name, mode_t mode,
               uid_t uid, gid_t gid, pid_t pid, struct fs_node **out)
{
  const struct fs_provider *p = tree_provider ();
  struct pending *rec;
  struct fs_node *node;
  struct timespec now;
  char *path = NULL;
  bool pend;

  *out = NULL;
  /* Still pending, or defined by its domain.xml while the copy goes on:
   * a snapshot directory copied in is pending too (not a snapshot of
   * the disk as it is now). */
  pend = restoring (dir, pid);
  if (pend) {
    /* Inside a pending domain: snapshots/ and the snapshots in it. */
    unsigned dd = depth (dir->path);
    if (!(dd == 1 && strcmp (name, "snapshots") == 0)
        && !(dd == 2 && strcmp (dir->name, "snapshots") == 0)) {
      errno = EPERM;
      return -1;
    }
  }
  else if (dir == tree_root () && p->may_pend) {
    if (p->may_pend (dir, name) < 0)
      return -1;
  }
  else
    return 1;
  if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0) {
    errno = EINVAL;
    return -1;
  }
  if ((node = restore_lookup (dir, name)) != NULL) {
    inode_unref (node);
    errno = EEXIST;
    return -1;
  }
  if (asprintf (&path, "%s/%s", strcmp (dir->path, "/") ? dir->path : "",
                name) < 0) {
    errno = ENOMEM;
    return -1;
  }
  node = inode_get_node (path, FS_NODE_DIR);
  free (path);
  rec = calloc (1, sizeof *rec);
  if (!node || !rec) {
    if (node)
      inode_unref (node);
    free (rec);
    errno = ENOMEM;
    return -1;
  }
  if (attached (node)) {        /* the tree has it after all */
    inode_unref (node);
    free (rec);
    errno = EEXIST;
    return -1;
  }
  clock_gettime (CLOCK_REALTIME, &now);
  tree_wrlock ();
  node->parent_ino = dir->ino;
  tree_set_attr (&node->attr, S_IFDIR | (mode & 0777 ? mode & 0777 : 0755),
                 2, 0, uid, gid, now.tv_sec, now.tv_nsec);
  tree_unlock ();
  rec->node = inode_ref (node);
  rec->parent = dir->ino;
  rec->maker = pid;
  rec->last_ms = vd_now_ms ();
  pthread_mutex_lock (&pending_lock);
  prune_locked ();
  rec->next = pendings;
  pendings = rec;
  __atomic_add_fetch (&npending, 1, __ATOMIC_RELAXED);
  pthread_mutex_unlock (&pending_lock);
  restore_touch (dir->ino, name);
  vd_info ("%s: pending: copy a VM's directory (domain.xml, disks, "
           "snapshots/) into it to restore it", node->path);
  *out = node;
  return 0;
}

void
restore_adopt (struct fs_node *dir, struct fs_node *node, pid_t pid)
{
  struct pending **pp, *rec;

  restore_touch (dir->ino, node->name);
  pthread_mutex_lock (&pending_lock);
  pp = find_locked (node->ino);
  if (pp) {
    (*pp)->maker = pid;
    pthread_mutex_unlock (&pending_lock);
    return;
  }
  prune_locked ();
  rec = calloc (1, sizeof *rec);
  if (rec) {
    rec->adopted = true;
    rec->node = inode_ref (node);
    rec->parent = dir->ino;
    rec->maker = pid;
    rec->last_ms = vd_now_ms ();
    rec->next = pendings;
    pendings = rec;
    __atomic_add_fetch (&npending, 1, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock (&pending_lock);
}

static void
drop_staged (void *opaque, fuse_ino_t ino, const char *name)
{
  struct fs_staging ***v = opaque;
  struct fs_staging *s = staging_by_node (ino);

  (void) name;
  if (s) {
    **v = s;
    (*v)++;
  }
}

/* Remove the pending directory node and what is in it (pending_lock not
 * held). */
static void
remove_pending (struct fs_node *node)
{
  struct pending **pp, *rec = NULL;
  fuse_ino_t kids[64];
  size_t nkids = 0, i;

  pthread_mutex_lock (&pending_lock);
  pp = find_locked (node->ino);
  if (pp) {
    rec = *pp;
    *pp = rec->next;
    __atomic_sub_fetch (&npending, 1, __ATOMIC_RELAXED);
  }
  for (pp = &pendings; *pp && nkids < 64; pp = &(*pp)->next)
    if ((*pp)->parent == node->ino)
      kids[nkids++] = (*pp)->node->ino;
  pthread_mutex_unlock (&pending_lock);
  for (i = 0; i < nkids; i++) {
    struct fs_node *k = inode_find (kids[i]);
    if (k) {
      remove_pending (k);
      inode_unref (k);
    }
  }
  /* Its staging files (staging_list holds staging_lock while it calls:
   * collect them first). */
  {
    struct fs_staging *v[256], **end = v;
    size_t n;
    /* At most 256 per round; repeat until none is left. */
    do {
      end = v;
      staging_list (node->ino, drop_staged, &end);
      n = end - v;
      for (i = 0; i < n; i++) {
        staging_remove (v[i], 0);
        staging_unref (v[i]);
      }
    } while (n == 256);
  }
  if (rec) {
    if (!rec->adopted)
      vd_info ("%s: pending directory removed", node->path);
    free_rec (rec);
  }
}

int
restore_rmdir (struct fs_node *dir, const char *name)
{
  struct fs_node *node = restore_lookup (dir, name);

  if (!node)
    return 1;
  remove_pending (node);
  inode_unref (node);
  return 0;
}

struct entries {
  void (*add) (void *opaque, fuse_ino_t ino, mode_t type, const char *name);
  void *opaque;
};

static void
add_staged (void *opaque, fuse_ino_t ino, const char *name)
{
  struct entries *e = opaque;

  e->add (e->opaque, ino, S_IFREG, name);
}

void
restore_entries (struct fs_node *dir,
                 void (*add) (void *opaque, fuse_ino_t ino, mode_t type,
                              const char *name),
                 void *opaque)
{
  struct entries e = { add, opaque };
  struct pending *p;

  if (__atomic_load_n (&npending, __ATOMIC_RELAXED)) {
    pthread_mutex_lock (&pending_lock);
    for (p = pendings; p; p = p->next)
      if (!p->adopted && p->parent == dir->ino && !p->node->attached)
        add (opaque, p->node->ino, S_IFDIR, p->node->name);
    pthread_mutex_unlock (&pending_lock);
  }
  staging_list (dir->ino, add_staged, &e);
}

bool
restore_may_stage (struct fs_node *dir)
{
  const struct fs_provider *p = tree_provider ();

  if (restore_is_pending (dir))
    return true;
  return p->may_stage && p->may_stage (dir);
}

static bool
has_record (fuse_ino_t ino)
{
  bool r;

  if (__atomic_load_n (&npending, __ATOMIC_RELAXED) == 0)
    return false;
  pthread_mutex_lock (&pending_lock);
  r = find_locked (ino) != NULL;
  pthread_mutex_unlock (&pending_lock);
  return r;
}

/* The first component of path, with its slash ("/web" of
 * "/web/snapshots/s1"): malloc'd. */
static char *
domain_of (const char *path)
{
  const char *e = strchr (path + 1, '/');

  return e ? strndup (path, e - path) : strdup (path);
}

/* Offer s to the provider where it is now.  RESTORE_KEEP (waits),
 * RESTORE_DONE (applied), or -1 with errno.  *dom: the domain's path,
 * malloc'd, when applied. */
static int
offer (struct fs_staging *s, char **dom)
{
  const struct fs_provider *p = tree_provider ();
  struct fs_node *dir, *t;
  char *name = NULL;
  int r, e = 0;

  if (dom)
    *dom = NULL;
  dir = inode_find (s->dir);
  if (!dir) {
    errno = ENOENT;
    return -1;
  }
  name = strdup (s->name);
  if (!name) {
    inode_unref (dir);
    errno = ENOMEM;
    return -1;
  }
  if (!p->complete) {
    r = RESTORE_KEEP;
    goto out;
  }
  errno = 0;
  r = p->complete (dir->path, name, s->fd);
  if (r < 0) {
    e = errno ? errno : EIO;
    goto out;
  }
  if (r == RESTORE_DISK) {
    /* The provider made sure the tree has the disk now. */
    t = child_of (dir, name);
    if (!t || t->type != FS_NODE_DISK) {
      if (t)
        inode_unref (t);
      vd_error ("%s/%s: the disk is not in the tree: not restored",
                dir->path, name);
      r = -1;
      e = EIO;
      goto out;
    }
    if (write_apply_staging (t, s) < 0) {
      e = errno ? errno : EIO;
      inode_unref (t);
      r = -1;
      goto out;
    }
    hidden_take (dir->ino, name);
    if (!s->overlay)
      staging_remove (s, t->ino);
    inode_unref (t);
    vd_info ("%s/%s: restored", dir->path, name);
    r = RESTORE_DONE;
  }
  else if (r == RESTORE_DONE) {
    hidden_take (dir->ino, name);
    if (!s->overlay) {
      t = child_of (dir, name);
      staging_remove (s, t ? t->ino : 0);
      if (t)
        inode_unref (t);
    }
  }
  if (r == RESTORE_DONE) {
    restore_touch (dir->ino, name);
    __atomic_store_n (&s->complete, false, __ATOMIC_RELAXED);
    if (!s->overlay)
      tree_notify_entry (dir->ino, name);
    if (dom)
      *dom = domain_of (dir->path);
  }
 out:
  if (r < 0 && !s->overlay) {
    /* Refused: if it replaced a file of the tree (tar: unlink, create),
     * that file shows again and the refused bytes go, as for cp and
     * rename. */
    t = child_of (dir, name);
    if (t && hidden_test (dir->ino, name)) {
      hidden_take (dir->ino, name);
      staging_remove (s, 0);
      tree_notify_entry (dir->ino, name);
    }
    if (t)
      inode_unref (t);
  }
  /* It waits for the rest of its VM where one is being restored (a
   * pending directory, or one a copy made); elsewhere (an rsync
   * temporary file before its rename) it is an ordinary staging file. */
  if (r == RESTORE_KEEP && !s->overlay && has_record (dir->ino))
    __atomic_store_n (&s->complete, true, __ATOMIC_RELAXED);
  else if (r < 0)
    __atomic_store_n (&s->complete, false, __ATOMIC_RELAXED);
  inode_unref (dir);
  free (name);
  errno = e;
  return r;
}

/* The order waiting files are offered in: definitions before disks,
 * a domain before its snapshots. */
struct waiting {
  struct fs_staging *s;
  unsigned rank;
};

static int
cmp_waiting (const void *a, const void *b)
{
  const struct waiting *x = a, *y = b;

  return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Offer again the waiting files of the domain at path dom, until none
 * is applied any more. */
static void
retry (const char *dom)
{
  size_t dl = strlen (dom);
  int round;

  for (round = 0; round < MAX_ROUNDS; round++) {
    struct fs_staging **v;
    struct waiting *w;
    size_t n, i, m = 0;
    bool progress = false;

    staging_waiting (&v, &n);
    if (!n) {
      free (v);
      return;
    }
    w = calloc (n, sizeof *w);
    for (i = 0; i < n; i++) {
      struct fs_node *dir = w ? inode_find (v[i]->dir) : NULL;
      if (dir && strncmp (dir->path, dom, dl) == 0
          && (dir->path[dl] == '/' || dir->path[dl] == '\0')) {
        bool def = strcmp (v[i]->name, "domain.xml") == 0
          || strcmp (v[i]->name, "snapshot.xml") == 0;
        w[m].s = v[i];
        w[m].rank = depth (dir->path) * 2 + !def;
        m++;
      }
      else
        staging_unref (v[i]);
      if (dir)
        inode_unref (dir);
    }
    free (v);
    if (w)
      qsort (w, m, sizeof *w, cmp_waiting);
    for (i = 0; i < m; i++) {
      if (__atomic_load_n (&w[i].s->complete, __ATOMIC_RELAXED)
          && !w[i].s->applied) {
        int r = offer (w[i].s, NULL);
        if (r == RESTORE_DONE)
          progress = true;
        else if (r < 0)
          vd_error ("%s: %s: not restored: %s", dom, w[i].s->name,
                    strerror (errno));
      }
      staging_unref (w[i].s);
    }
    free (w);
    if (!progress)
      return;
  }
}

int
restore_complete (struct fs_staging *s)
{
  char *dom = NULL;
  int r;

  __atomic_store_n (&s->dirty, false, __ATOMIC_RELAXED);
  r = offer (s, &dom);
  if (r < 0)
    return -1;
  if (dom) {
    retry (dom);
    free (dom);
  }
  return 0;
}
