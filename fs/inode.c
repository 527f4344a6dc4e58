/* vmdiskfs - the inode table: inode numbers, nodes, lookup counts.
 *
 * Inode numbers must be stable across remounts (DESIGN.md: backup tools
 * such as rsync --link-dest, tar --listed-incremental and find -newer
 * notice renumbering).  The schemes considered:
 *
 *  - A counter in discovery order (passthrough_ll, most FUSE file
 *    systems): simplest, but the numbers depend on the order in which the
 *    kernel looked things up, so they change at each mount.
 *  - The image file's own st_ino, combined with a small index for the
 *    files inside its directory (squashfuse uses the on-disk inode number,
 *    which is stable because the image is immutable): stable only while
 *    the image file is never rewritten; qemu-img convert, a restore with cp
 *    or rsync's temp-file-and-rename all give the image a new st_ino, and
 *    snapshots have no number of their own at all.
 *  - A hash of the path inside the mount (what this file does): stable for
 *    as long as the names are, which is what users see, independent of the
 *    order of lookups and of how the image file was rewritten.  The price
 *    is collisions, handled by probing: if the number is taken by another
 *    live path, the next one is tried.  With 64-bit FNV-1a a collision is
 *    practically impossible (about n^2/2^65 for n paths), and only then can
 *    a number depend on the order in which the paths were met.
 *
 * Numbers 0 and 1 are reserved (1 = FUSE_ROOT_ID = "/").  A 64-bit st_ino
 * can give EOVERFLOW to 32-bit programs without large-file support.
 *
 * A node stays in the table while the tree refers to it (refs) or the
 * kernel does (nlookup, dropped by forget).  A path that disappears and
 * comes back while the kernel still remembers it gets its old node back,
 * so the same number.
 *
 * Threads: every function here may be called from any thread; inode_lock
 * protects the table and the counters of every node.  It is the innermost
 * lock (see vmdiskfs.h) and is never held while calling out.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmdiskfs.h"
#include "log.h"

static pthread_mutex_t inode_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_node **table;        /* chained by hash_next; inode_lock */
static size_t table_size;             /* power of two                     */
static size_t table_count;

static uint64_t
path_hash (const char *path)
{
  uint64_t h = UINT64_C (0xcbf29ce484222325);   /* FNV-1a, 64 bit */

  for (; *path; path++) {
    h ^= (unsigned char) *path;
    h *= UINT64_C (0x100000001b3);
  }
  return h;
}

static size_t
bucket_of (fuse_ino_t ino)
{
  /* The numbers are hashes already; fold the high bits in anyway. */
  return (size_t) (ino ^ (ino >> 32)) & (table_size - 1);
}

/* inode_lock held. */
static struct fs_node *
table_lookup (fuse_ino_t ino)
{
  struct fs_node *n;

  for (n = table[bucket_of (ino)]; n; n = n->hash_next)
    if (n->ino == ino)
      return n;
  return NULL;
}

/* inode_lock held.  Grows the table when it gets full; 0 or -1. */
static int
table_insert (struct fs_node *node)
{
  size_t b;

  if (table_count + 1 > table_size) {
    size_t new_size = table_size * 2, i;
    struct fs_node **t = calloc (new_size, sizeof *t);

    if (t) {
      for (i = 0; i < table_size; i++) {
        struct fs_node *n = table[i], *next;
        for (; n; n = next) {
          next = n->hash_next;
          b = (size_t) (n->ino ^ (n->ino >> 32)) & (new_size - 1);
          n->hash_next = t[b];
          t[b] = n;
        }
      }
      free (table);
      table = t;
      table_size = new_size;
    }
    /* On ENOMEM just keep the longer chains. */
  }
  b = bucket_of (node->ino);
  node->hash_next = table[b];
  table[b] = node;
  table_count++;
  return 0;
}

/* inode_lock held. */
static void
table_remove (struct fs_node *node)
{
  struct fs_node **pp;

  for (pp = &table[bucket_of (node->ino)]; *pp; pp = &(*pp)->hash_next)
    if (*pp == node) {
      *pp = node->hash_next;
      table_count--;
      return;
    }
}

void
inode_init (void)
{
  table_size = 64;
  table = calloc (table_size, sizeof *table);
  if (!table) {
    vd_error ("out of memory");
    abort ();
  }
}

/* The node of path (an escaped path in the mount), created if needed,
 * with a new reference for the caller.  NULL with errno on ENOMEM. */
struct fs_node *
inode_get_node (const char *path, enum fs_node_type type)
{
  fuse_ino_t ino;
  struct fs_node *n;

  ino = strcmp (path, "/") == 0 ? FUSE_ROOT_ID : path_hash (path);
  pthread_mutex_lock (&inode_lock);
  for (;;) {
    if (ino <= FUSE_ROOT_ID && strcmp (path, "/") != 0) {
      ino = FUSE_ROOT_ID + 1;
      continue;
    }
    n = table_lookup (ino);
    if (!n)
      break;
    if (strcmp (n->path, path) == 0 && n->type == type) {
      n->refs++;
      pthread_mutex_unlock (&inode_lock);
      return n;
    }
    vd_debug ("inode number %#llx of %s taken by %s, probing",
              (unsigned long long) ino, path, n->path);
    ino++;
  }

  n = calloc (1, sizeof *n);
  if (!n || (n->path = strdup (path)) == NULL) {
    pthread_mutex_unlock (&inode_lock);
    free (n);
    errno = ENOMEM;
    return NULL;
  }
  n->ino = ino;
  n->name = strrchr (n->path, '/') + 1;
  n->type = type;
  n->refs = 1;
  pthread_mutex_init (&n->lock, NULL);
  table_insert (n);
  pthread_mutex_unlock (&inode_lock);
  return n;
}

/* The node numbered ino with a new reference, or NULL. */
struct fs_node *
inode_find (fuse_ino_t ino)
{
  struct fs_node *n;

  pthread_mutex_lock (&inode_lock);
  n = table_lookup (ino);
  if (n)
    n->refs++;
  pthread_mutex_unlock (&inode_lock);
  return n;
}

struct fs_node *
inode_ref (struct fs_node *node)
{
  pthread_mutex_lock (&inode_lock);
  node->refs++;
  pthread_mutex_unlock (&inode_lock);
  return node;
}

/* Free a node nobody refers to any more (out of the table already).  The
 * tree detached it before its last reference went (tree.c), so it has no
 * children left; its image reference and disk are dropped here. */
static void
node_free (struct fs_node *node)
{
  struct fs_node *image = node->image;

  free (node->children);
  if (node->priv_free)
    node->priv_free (node->priv);
  free (node->snap_id);
  fs_blob_unref (node->blob);
  if (node->disk)
    fs_disk_unref (node->disk);
  pthread_mutex_destroy (&node->lock);
  free (node->path);
  free (node);
  if (image)
    inode_unref (image);
}

void
inode_unref (struct fs_node *node)
{
  bool gone;

  pthread_mutex_lock (&inode_lock);
  gone = --node->refs == 0 && node->nlookup == 0;
  if (gone)
    table_remove (node);
  pthread_mutex_unlock (&inode_lock);
  if (gone)
    node_free (node);
}

/* One more kernel reference (a successful lookup reply). */
void
inode_lookup_inc (struct fs_node *node)
{
  pthread_mutex_lock (&inode_lock);
  node->nlookup++;
  pthread_mutex_unlock (&inode_lock);
}

/* Does the kernel hold node (a lookup it has not forgotten)?  Without
 * one it has no inode of that number, hence nothing of it cached: no
 * dentry, no attributes, no pages.  A lookup's count is taken before
 * its reply is sent, so false cannot miss one under way. */
bool
inode_known (struct fs_node *node)
{
  bool r;

  pthread_mutex_lock (&inode_lock);
  r = node->nlookup > 0;
  pthread_mutex_unlock (&inode_lock);
  return r;
}

void
inode_forget (fuse_ino_t ino, uint64_t nlookup)
{
  struct fs_node *n;
  bool gone = false;

  pthread_mutex_lock (&inode_lock);
  n = table_lookup (ino);
  if (n) {
    if (nlookup > n->nlookup) {
      vd_warn ("forget of %s: %llu references, %llu forgotten", n->path,
               (unsigned long long) n->nlookup,
               (unsigned long long) nlookup);
      nlookup = n->nlookup;
    }
    n->nlookup -= nlookup;
    gone = n->nlookup == 0 && n->refs == 0;
    if (gone)
      table_remove (n);
  }
  pthread_mutex_unlock (&inode_lock);
  if (gone)
    node_free (n);
}

/* At exit, after the tree dropped its references: free what the kernel
 * never forgot (it does not send forgets at unmount). */
void
inode_fini (void)
{
  size_t i;

  for (i = 0; i < table_size; i++) {
    struct fs_node *n = table[i], *next;
    for (; n; n = next) {
      next = n->hash_next;
      n->image = NULL;          /* freed by this loop too */
      node_free (n);
    }
  }
  free (table);
  table = NULL;
  table_size = table_count = 0;
}
