/* vmdiskfs - the tree: directories of nodes, kept up to date by a
 * provider (tree-images.c for -o images=DIR, tree-libvirt.c for libvirt).
 *
 * The tree is rebuilt lazily: every callback that touches a node first
 * calls tree_revalidate, which asks the provider whether the source of
 * the node's "revalidation point" (the root, or the image directory the
 * node belongs to) changed, with one stat, and if so lets the provider
 * rescan it.  No background polling: an idle mount costs nothing.
 *
 * When something disappears or changes, the kernel is told through
 * fuse_lowlevel_notify_inval_entry / _inode.  These must not be called
 * from inside a request on the same directory (the kernel holds the
 * directory's lock while it waits for our reply: deadlock), so they are
 * queued here and sent by one notify thread.
 *
 * Threads: tree_lock (rwlock) protects the shape of the tree and node
 * attributes; refresh_lock serializes rescans; node->lock protects a
 * node's open disk and allocation cache; notify_lock the queue.  Their
 * order is vmdiskfs.h's.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vmdiskfs.h"
#include "log.h"
#include "cleanup.h"

pthread_rwlock_t tree_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t refresh_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct fs_provider *provider;
static struct fs_node *root;

/* ---- Shared open images. ---- */

bool
fs_disk_changed (const struct vd_image *img, const struct stat *scanned,
                 mode_t shown)
{
  if (scanned->st_ino != 0
      && (img->dev != scanned->st_dev || img->ino != scanned->st_ino)) {
    vd_error ("%s: replaced since it was scanned: refused until it is "
              "scanned again", img->path);
    return true;
  }
  if (shown & ~img->read_mode) {
    vd_error ("%s: its backing chain grants less than it did when it was "
              "scanned (%03o, not %03o): refused until it is scanned again",
              img->path, (unsigned) img->read_mode, (unsigned) shown);
    return true;
  }
  return false;
}

struct fs_disk *
fs_disk_new (struct vd_image *img)
{
  struct fs_disk *d = malloc (sizeof *d);

  if (!d) {
    vd_image_close (img);
    errno = ENOMEM;
    return NULL;
  }
  d->refs = 1;
  d->img = img;
  return d;
}

struct fs_disk *
fs_disk_ref (struct fs_disk *d)
{
  __atomic_add_fetch (&d->refs, 1, __ATOMIC_RELAXED);
  return d;
}

void
fs_disk_unref (struct fs_disk *d)
{
  if (d && __atomic_sub_fetch (&d->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    vd_image_close (d->img);
    free (d);
  }
}

/* ---- In-memory files. ---- */

static struct fs_blob *
blob_plain (const char *data, size_t len)
{
  struct fs_blob *b = malloc (sizeof *b + len + 1);

  if (!b) {
    errno = ENOMEM;
    return NULL;
  }
  b->refs = 1;
  b->len = len;
  b->zlen = 0;
  memcpy (b->data, data, len);
  b->data[len] = '\0';
  return b;
}

/* zlib streams kept per thread.  compress2 and uncompress set up and
 * free a stream per call: deflate's is some 270 KiB, allocated, cleared
 * and given back to the kernel (madvise, a TLB shootdown on every CPU)
 * each time, which made up two thirds of the daemon's CPU time for the
 * first listing of 200 domains with 10 snapshots each (bench/many-
 * domains.sh).  The files are XML of a few KiB: an 8 KiB window and a
 * small hash (memLevel 5) compress them as well, in some 40 KiB reset in
 * place. */
#define BLOB_WBITS    13
#define BLOB_MEMLEVEL 5

struct blob_z {
  z_stream def, inf;
  bool def_ok, inf_ok;
};

static pthread_key_t blob_z_key;
static pthread_once_t blob_z_once = PTHREAD_ONCE_INIT;

static void
blob_z_free (void *p)
{
  struct blob_z *z = p;

  if (z->def_ok)
    deflateEnd (&z->def);
  if (z->inf_ok)
    inflateEnd (&z->inf);
  free (z);
}

static void
blob_z_init (void)
{
  if (pthread_key_create (&blob_z_key, blob_z_free) != 0)
    abort ();
}

/* This thread's streams, or NULL (ENOMEM). */
static struct blob_z *
blob_z (void)
{
  struct blob_z *z;

  pthread_once (&blob_z_once, blob_z_init);
  z = pthread_getspecific (blob_z_key);
  if (z)
    return z;
  z = calloc (1, sizeof *z);
  if (z && pthread_setspecific (blob_z_key, z) != 0) {
    free (z);
    z = NULL;
  }
  return z;
}

/* A blob of data, compressed when that saves space (deterministic: the
 * same bytes give the same blob, so tree_set_blob can compare). */
struct fs_blob *
fs_blob_new (const char *data, size_t len)
{
  uLongf zlen = deflateBound (NULL, len);
  struct fs_blob *b, *t;
  struct blob_z *z;
  int r;

  if (len < 256 || len > UINT_MAX / 2 || (z = blob_z ()) == NULL)
    return blob_plain (data, len);
  if (!z->def_ok) {
    if (deflateInit2 (&z->def, 6, Z_DEFLATED, BLOB_WBITS, BLOB_MEMLEVEL,
                      Z_DEFAULT_STRATEGY) != Z_OK)
      return blob_plain (data, len);
    z->def_ok = true;
  }
  else if (deflateReset (&z->def) != Z_OK)
    return blob_plain (data, len);
  b = malloc (sizeof *b + zlen);
  if (!b) {
    errno = ENOMEM;
    return NULL;
  }
  z->def.next_in = (Bytef *) data;
  z->def.avail_in = len;
  z->def.next_out = (Bytef *) b->data;
  z->def.avail_out = zlen;
  r = deflate (&z->def, Z_FINISH);
  zlen = z->def.total_out;
  if (r != Z_STREAM_END || zlen >= len) {
    free (b);
    return blob_plain (data, len);
  }
  b->refs = 1;
  b->len = len;
  b->zlen = zlen;
  t = realloc (b, sizeof *b + zlen);
  return t ? t : b;
}

/* A plain blob of b's bytes (a new reference), or NULL with errno. */
struct fs_blob *
fs_blob_plain (struct fs_blob *b)
{
  struct fs_blob *p;
  struct blob_z *z;
  int r = Z_MEM_ERROR;

  if (!b->zlen)
    return fs_blob_ref (b);
  p = malloc (sizeof *p + b->len + 1);
  z = blob_z ();
  if (!p || !z) {
    free (p);
    errno = ENOMEM;
    return NULL;
  }
  if (!z->inf_ok)
    z->inf_ok = inflateInit (&z->inf) == Z_OK;
  else if (inflateReset (&z->inf) != Z_OK) {
    inflateEnd (&z->inf);
    z->inf_ok = inflateInit (&z->inf) == Z_OK;
  }
  if (z->inf_ok) {
    z->inf.next_in = (Bytef *) b->data;
    z->inf.avail_in = b->zlen;
    z->inf.next_out = (Bytef *) p->data;
    z->inf.avail_out = b->len;
    r = inflate (&z->inf, Z_FINISH);
  }
  if (r != Z_STREAM_END || z->inf.total_out != b->len) {
    vd_error ("in-memory file of %zu bytes does not inflate", b->len);
    free (p);
    errno = r == Z_MEM_ERROR ? ENOMEM : EIO;
    return NULL;
  }
  p->refs = 1;
  p->len = b->len;
  p->zlen = 0;
  p->data[p->len] = '\0';
  return p;
}

struct fs_blob *
fs_blob_ref (struct fs_blob *b)
{
  __atomic_add_fetch (&b->refs, 1, __ATOMIC_RELAXED);
  return b;
}

void
fs_blob_unref (struct fs_blob *b)
{
  if (b && __atomic_sub_fetch (&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
    free (b);
}

bool
fs_blob_equal (const struct fs_blob *a, const struct fs_blob *b)
{
  return a && b && a->len == b->len && a->zlen == b->zlen
    && memcmp (a->data, b->data, a->zlen ? a->zlen : a->len) == 0;
}

/* ---- Locks. ---- */

void
tree_rdlock (void)
{
  pthread_rwlock_rdlock (&tree_lock);
}

void
tree_wrlock (void)
{
  pthread_rwlock_wrlock (&tree_lock);
}

void
tree_unlock (void)
{
  pthread_rwlock_unlock (&tree_lock);
}

/* ---- Deferred kernel invalidations. ---- */

struct notify_item {
  struct notify_item *next;
  fuse_ino_t ino;                 /* inval_inode, or the parent       */
  char *name;                     /* inval_entry when non-NULL        */
};

static pthread_mutex_t notify_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t notify_cond = PTHREAD_COND_INITIALIZER;
static struct notify_item *notify_head, **notify_tail = &notify_head;
static bool notify_running, notify_quit;
static pthread_t notify_thread;

static void
notify_queue (fuse_ino_t ino, const char *name)
{
  struct notify_item *it;

  pthread_mutex_lock (&notify_lock);
  if (!notify_running) {
    /* Not mounted yet (initial scan), or unmounting: nothing to tell. */
    pthread_mutex_unlock (&notify_lock);
    return;
  }
  it = calloc (1, sizeof *it);
  if (it && name && (it->name = strdup (name)) == NULL) {
    free (it);
    it = NULL;
  }
  if (it) {
    it->ino = ino;
    *notify_tail = it;
    notify_tail = &it->next;
    pthread_cond_signal (&notify_cond);
  }
  /* On ENOMEM the 1 s kernel timeouts still bound staleness. */
  pthread_mutex_unlock (&notify_lock);
}

static void *
notify_main (void *arg)
{
  pthread_mutex_lock (&notify_lock);
  for (;;) {
    struct notify_item *it;
    int r;

    while (!notify_head && !notify_quit)
      pthread_cond_wait (&notify_cond, &notify_lock);
    if (notify_quit)
      break;
    it = notify_head;
    notify_head = it->next;
    if (!notify_head)
      notify_tail = &notify_head;
    pthread_mutex_unlock (&notify_lock);

    if (it->name)
      r = fuse_lowlevel_notify_inval_entry (fs_session, it->ino, it->name,
                                            strlen (it->name));
    else
      r = fuse_lowlevel_notify_inval_inode (fs_session, it->ino, 0, 0);
    /* -ENOENT: the kernel did not know it, nothing was cached. */
    if (r < 0 && r != -ENOENT)
      vd_debug ("invalidate %llu %s: %s", (unsigned long long) it->ino,
                it->name ? it->name : "", strerror (-r));
    free (it->name);
    free (it);
    pthread_mutex_lock (&notify_lock);
  }
  pthread_mutex_unlock (&notify_lock);
  return NULL;
}

void
tree_notify_start (void)
{
  int e;

  notify_running = true;
  e = pthread_create (&notify_thread, NULL, notify_main, NULL);
  if (e) {
    vd_warn ("cannot start the notify thread: %s", strerror (e));
    notify_running = false;
  }
}

void
tree_notify_stop (void)
{
  struct notify_item *it, *next;

  pthread_mutex_lock (&notify_lock);
  if (!notify_running) {
    pthread_mutex_unlock (&notify_lock);
    return;
  }
  notify_quit = true;
  notify_running = false;
  pthread_cond_signal (&notify_cond);
  pthread_mutex_unlock (&notify_lock);
  pthread_join (notify_thread, NULL);
  for (it = notify_head; it; it = next) {
    next = it->next;
    free (it->name);
    free (it);
  }
  notify_head = NULL;
  notify_tail = &notify_head;
}

/* Tell the kernel to forget the entry name of directory parent (it is
 * looked up again at the next access).  Any thread, no lock needed. */
void
tree_notify_entry (fuse_ino_t parent, const char *name)
{
  notify_queue (parent, name);
}

/* ---- The tree. ---- */

struct fs_node *
tree_root (void)
{
  return root;
}

const struct fs_provider *
tree_provider (void)
{
  return provider;
}

struct fs_node *
tree_get_node (enum fs_node_type type, const char *fmt, ...)
{
  CLEANUP_FREE char *path = NULL;
  va_list ap;
  int r;

  va_start (ap, fmt);
  r = vasprintf (&path, fmt, ap);
  va_end (ap);
  if (r < 0) {
    path = NULL;
    return NULL;
  }
  return inode_get_node (path, type);
}

void
tree_set_attr (struct stat *st, mode_t mode, nlink_t nlink, uint64_t size,
               uid_t uid, gid_t gid, time_t sec, long nsec)
{
  memset (st, 0, sizeof *st);
  st->st_mode = mode;
  st->st_nlink = nlink;
  st->st_size = (off_t) size;
  st->st_uid = uid;
  st->st_gid = gid;
  st->st_blksize = 4096;
  st->st_atim.tv_sec = st->st_mtim.tv_sec = st->st_ctim.tv_sec = sec;
  st->st_atim.tv_nsec = st->st_mtim.tv_nsec = st->st_ctim.tv_nsec = nsec;
}

int
tree_start (const struct fs_provider *p)
{
  provider = p;
  root = inode_get_node ("/", FS_NODE_DIR);
  if (!root)
    return -1;
  root->attached = true;
  root->parent_ino = FUSE_ROOT_ID;
  root->attr.st_mode = S_IFDIR | 0555;
  root->attr.st_nlink = 2;
  return provider->start (root);
}

static void detach (struct fs_node *node);

/* tree_lock held for writing.  Drop the children of dir (its listing
 * changes: the kernel's copy goes at the next opendir, as in
 * tree_set_children; a shell's working directory can still list it). */
static void
drop_children (struct fs_node *dir)
{
  size_t i;

  if (dir->nchildren) {
    pthread_mutex_lock (&dir->lock);
    dir->gen++;
    pthread_mutex_unlock (&dir->lock);
  }
  for (i = 0; i < dir->nchildren; i++) {
    detach (dir->children[i]);
    inode_unref (dir->children[i]);
  }
  free (dir->children);
  dir->children = NULL;
  dir->nchildren = 0;
}

/* tree_lock held for writing.  node left the tree: so does everything
 * under it, and it lets go of what it holds (a node the kernel still
 * remembers stays in the inode table, answering getattr from its last
 * attributes, until forgotten). */
static void
detach (struct fs_node *node)
{
  struct fs_node *image;

  node->attached = false;
  drop_children (node);
  image = node->image;
  node->image = NULL;
  if (image)
    inode_unref (image);
  pthread_mutex_lock (&node->lock);
  if (node->disk)
    fs_disk_unref (node->disk);
  node->disk = NULL;
  node->alloc_valid = false;
  pthread_mutex_unlock (&node->lock);
}

static int
child_cmp (const void *a, const void *b)
{
  const struct fs_node *const *x = a, *const *y = b;

  return strcmp ((*x)->name, (*y)->name);
}

/* tree_lock held for writing.  Make children[0..n) (references passed in,
 * names unique) the children of dir.  Old children not among them leave
 * the tree, and the kernel is told (if it holds them: inode_known).  When
 * the listing changes, dir's gen moves on: the kernel's cached listing of
 * it is dropped at the next opendir (ops.c struct fs_dirh). */
void
tree_set_children (struct fs_node *dir, struct fs_node **children, size_t n)
{
  struct fs_node **old = dir->children;
  size_t nold = dir->nchildren, i;
  bool same = n == nold;

  qsort (children, n, sizeof *children, child_cmp);
  /* Both sorted by name; a name's node is one object for its life. */
  for (i = 0; same && i < n; i++)
    same = children[i] == old[i];
  if (!same) {
    pthread_mutex_lock (&dir->lock);
    dir->gen++;
    pthread_mutex_unlock (&dir->lock);
  }
  for (i = 0; i < n; i++) {
    children[i]->attached = true;
    children[i]->parent_ino = dir->ino;
  }
  for (i = 0; i < nold; i++) {
    if (!bsearch (&old[i], children, n, sizeof *children, child_cmp)) {
      if (inode_known (old[i]))
        notify_queue (dir->ino, old[i]->name);
      detach (old[i]);
    }
    inode_unref (old[i]);
  }
  free (old);
  dir->children = children;
  dir->nchildren = n;
}

/* tree_lock held (read or write).  The child of dir named name, or NULL. */
struct fs_node *
tree_find_child (struct fs_node *dir, const char *name)
{
  size_t lo = 0, hi = dir->nchildren;

  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp (name, dir->children[mid]->name);
    if (c == 0)
      return dir->children[mid];
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

/* tree_lock held for writing. */
void
tree_set_image (struct fs_node *node, struct fs_node *image)
{
  struct fs_node *old = node->image;

  node->image = image ? inode_ref (image) : NULL;
  if (old)
    inode_unref (old);
}

/* tree_lock held for writing.  The open image of node (a new reference
 * is taken) or the errno of its failed open; NULL, 0 means "open on
 * demand".  A new generation: the allocation count goes stale. */
void
tree_set_disk (struct fs_node *node, struct fs_disk *disk, int err)
{
  pthread_mutex_lock (&node->lock);
  if (node->disk)
    fs_disk_unref (node->disk);
  node->disk = disk ? fs_disk_ref (disk) : NULL;
  node->disk_err = err;
  node->gen++;
  pthread_mutex_unlock (&node->lock);
}

/* tree_lock held for writing.  The bytes of the disk node changed: new
 * opens must not keep the kernel's page cache, and the kernel is told,
 * if it holds the node at all: a disk scanned for the first time is not
 * (eleven per domain in the first listing of 1,000 domains, each a wakeup
 * of the notify thread and a write to the device answered ENOENT). */
void
tree_changed_content (struct fs_node *node)
{
  pthread_mutex_lock (&node->lock);
  node->gen++;
  pthread_mutex_unlock (&node->lock);
  if (inode_known (node))
    notify_queue (node->ino, NULL);
}

/* tree_lock held for writing.  The content of a file node (a new
 * reference is taken); when the bytes differ from the old ones, new
 * opens drop the kernel's page cache and the kernel is told. */
void
tree_set_blob (struct fs_node *node, struct fs_blob *blob)
{
  struct fs_blob *old = node->blob;
  bool same = fs_blob_equal (old, blob);

  node->blob = blob ? fs_blob_ref (blob) : NULL;
  fs_blob_unref (old);
  if (!same && old)
    tree_changed_content (node);
}

/* The content of a file node, plain, a new reference, or NULL with
 * errno. */
struct fs_blob *
tree_get_blob (struct fs_node *node)
{
  struct fs_blob *b, *p;

  tree_rdlock ();
  b = node->blob ? fs_blob_ref (node->blob) : NULL;
  tree_unlock ();
  if (!b) {
    errno = ENOENT;
    return NULL;
  }
  p = fs_blob_plain (b);
  fs_blob_unref (b);
  return p;
}

/* The daemon runs: let the provider start its threads. */
void
tree_mounted (void)
{
  if (provider && provider->mounted)
    provider->mounted ();
}

/* Bring node's revalidation point up to date.  No lock held. */
void
tree_revalidate (struct fs_node *node)
{
  struct fs_node *point;
  bool stale;

  tree_rdlock ();
  if (node == root)
    point = root;
  else if (node->image)
    point = node->image;
  else if (node->attached && node->parent_ino == FUSE_ROOT_ID)
    point = node;               /* an image directory */
  else
    point = NULL;               /* detached: nothing to refresh */
  stale = point && point->attached && provider->stale (point);
  if (stale)
    inode_ref (point);
  tree_unlock ();

  if (stale) {
    pthread_mutex_lock (&refresh_lock);
    /* Another thread may have done it meanwhile: providers recheck. */
    provider->refresh (point);
    pthread_mutex_unlock (&refresh_lock);
    inode_unref (point);
  }
}

/* Rescan point (the root or an image directory) now, whether or not it
 * looks stale: after mkdir and rmdir, whose result must be visible when
 * they answer.  No lock held. */
void
tree_refresh (struct fs_node *point)
{
  pthread_mutex_lock (&refresh_lock);
  provider->refresh (point);
  pthread_mutex_unlock (&refresh_lock);
}

/* The open image of a disk node, with a new reference, opening it
 * through the provider if needed (snapshots are opened on demand).  When
 * keep, an image opened here stays cached in the node (open files);
 * otherwise it is closed with the caller's last reference (getattr of a
 * snapshot nobody has open).  NULL with errno. */
struct fs_disk *
tree_get_disk (struct fs_node *node, bool keep)
{
  struct fs_disk *d;
  uint64_t gen;

  pthread_mutex_lock (&node->lock);
  if (node->disk) {
    d = fs_disk_ref (node->disk);
    pthread_mutex_unlock (&node->lock);
    return d;
  }
  if (node->disk_err) {
    errno = node->disk_err;
    pthread_mutex_unlock (&node->lock);
    return NULL;
  }
  gen = node->gen;
  pthread_mutex_unlock (&node->lock);

  d = provider->open_disk (node);
  if (!d)
    return NULL;
  if (keep) {
    pthread_mutex_lock (&node->lock);
    if (node->gen == gen && !node->disk)
      node->disk = fs_disk_ref (d);
    pthread_mutex_unlock (&node->lock);
  }
  return d;
}

/* Who is counting which node's allocation (node->alloc_walking), so
 * that a storm of stats of one disk walks its extents once per
 * generation, not once per stat.  A leaf lock. */
static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t alloc_cond = PTHREAD_COND_INITIALIZER;

/* Allocated bytes of a disk node of apparent size size, counted once per
 * generation of the node (node->gen: bumped when the provider saw its
 * image change; a running VM's disk at most once a second), by one
 * thread: others wait for it, or answer the previous generation's count
 * while it runs.
 *
 * The walk is bounded (FS_EXTENT_BUDGET block_status calls): beyond it
 * the answer is vd_image_allocated_bounded's estimate, the data counted
 * so far plus the image file's own allocated size for the rest (at least
 * 512 bytes, at most the rest), never "no data" for a range not seen.
 * When they cannot be counted (the image or snapshot fails to open, a
 * corrupt table) the answer is size, never 0: tar --sparse takes
 * st_blocks 0 for "all holes" and would archive zeros without reading;
 * reads still fail.  A failed open is not remembered (it may be
 * EMFILE); a failed walk is, for the generation. */
int
tree_allocated (struct fs_node *node, uint64_t size, uint64_t *bytes)
{
  struct fs_disk *d;
  uint64_t gen, a, old = 0;
  bool have_old, exact = true;
  int ret = 0;

  for (;;) {
    pthread_mutex_lock (&node->lock);
    gen = node->gen;
    if (node->alloc_valid && node->alloc_gen == gen) {
      *bytes = node->alloc;
      pthread_mutex_unlock (&node->lock);
      return 0;
    }
    have_old = node->alloc_valid;
    old = node->alloc;
    pthread_mutex_unlock (&node->lock);

    pthread_mutex_lock (&alloc_lock);
    if (!node->alloc_walking) {
      node->alloc_walking = true;
      pthread_mutex_unlock (&alloc_lock);
      break;
    }
    if (have_old) {
      /* Being counted for a newer generation: the last count will do. */
      pthread_mutex_unlock (&alloc_lock);
      *bytes = old;
      return 0;
    }
    pthread_cond_wait (&alloc_cond, &alloc_lock);
    pthread_mutex_unlock (&alloc_lock);
  }

  /* Ours to count; it may have been counted just before we took it. */
  pthread_mutex_lock (&node->lock);
  gen = node->gen;
  if (node->alloc_valid && node->alloc_gen == gen) {
    *bytes = node->alloc;
    pthread_mutex_unlock (&node->lock);
    goto done;
  }
  pthread_mutex_unlock (&node->lock);

  d = tree_get_disk (node, false);
  if (!d) {
    *bytes = size;
    ret = -1;
    goto done;
  }
  if (vd_image_allocated_bounded (d->img, FS_EXTENT_BUDGET, &a, &exact) < 0) {
    /* Logged by the driver. */
    a = size;
    ret = -1;
  }
  else if (!exact)
    vd_debug ("%s: extent map longer than %d calls: st_blocks is an "
              "estimate (%" PRIu64 " bytes)", node->path, FS_EXTENT_BUDGET,
              a);
  fs_disk_unref (d);
  pthread_mutex_lock (&node->lock);
  if (node->gen == gen) {
    node->alloc = a;
    node->alloc_gen = gen;
    node->alloc_valid = true;
  }
  pthread_mutex_unlock (&node->lock);
  *bytes = a;

 done:
  pthread_mutex_lock (&alloc_lock);
  node->alloc_walking = false;
  pthread_cond_broadcast (&alloc_cond);
  pthread_mutex_unlock (&alloc_lock);
  return ret;
}

/* tree_lock held for writing.  The allocation of node (of its current
 * generation) is known without a walk: bytes (a block device is all
 * data). */
void
tree_set_allocated (struct fs_node *node, uint64_t bytes)
{
  pthread_mutex_lock (&node->lock);
  node->alloc = bytes;
  node->alloc_gen = node->gen;
  node->alloc_valid = true;
  pthread_mutex_unlock (&node->lock);
}

void
tree_stop (void)
{
  if (!root)
    return;
  if (provider->stop)
    provider->stop ();
  tree_wrlock ();
  detach (root);
  tree_unlock ();
  inode_unref (root);
  root = NULL;
}
