/* vmdiskfs - unit test of the tree (fs/tree.c) with a provider of its
 * own: children kept sorted and found by name, nodes leaving the tree
 * detached with everything under them, generations bumped by a new disk
 * or new content, images opened through the provider once and cached only
 * when asked, allocation counted once per generation, in-memory files
 * compressed and given back plain, and revalidation asking the right
 * point.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmdiskfs.h"
#include "test.h"

static int failures;

static char image_path[] = "/tmp/vd-test-tree-XXXXXX";
static bool stale_answer;
static unsigned nstale, nrefresh, nopen, nstop;
static struct fs_node *refreshed;

static int
t_start (struct fs_node *root)
{
  tree_set_attr (&root->attr, S_IFDIR | 0555, 2, 0, 0, 0, 1000, 5);
  return 0;
}

static void
t_refresh (struct fs_node *node)
{
  nrefresh++;
  refreshed = node;
}

static bool
t_stale (struct fs_node *node)
{
  nstale++;
  return stale_answer;
}

static struct fs_disk *
t_open_disk (struct fs_node *node)
{
  struct vd_image *img;

  nopen++;
  img = vd_image_open_policy (image_path, "raw", 0, NULL);
  return img ? fs_disk_new (img) : NULL;
}

static void
t_stop (void)
{
  nstop++;
}

static const struct fs_provider test_provider = {
  .name = "test",
  .start = t_start,
  .refresh = t_refresh,
  .stale = t_stale,
  .open_disk = t_open_disk,
  .stop = t_stop,
};

/* 1 MiB, its first 64 KiB data, the rest a hole. */
static void
make_image (void)
{
  char buf[65536];
  int fd = mkstemp (image_path);

  REQUIRE (fd >= 0);
  memset (buf, 'x', sizeof buf);
  REQUIRE (pwrite (fd, buf, sizeof buf, 0) == (ssize_t) sizeof buf);
  REQUIRE (ftruncate (fd, 1 << 20) == 0);
  close (fd);
}

static struct fs_node *
child (const char *fmt, const char *name, enum fs_node_type type)
{
  struct fs_node *n = tree_get_node (type, fmt, name);

  REQUIRE (n != NULL);
  return n;
}

static void
test_shape (void)
{
  struct fs_node *root = tree_root (), *b, *c, *a, *bx, **kids, *keep_b;

  REQUIRE (root != NULL);
  CHECK (root->ino == FUSE_ROOT_ID);
  CHECK (root->attached);
  CHECK (root->attr.st_mtim.tv_sec == 1000 && root->attr.st_mtim.tv_nsec == 5);
  CHECK (tree_provider () == &test_provider);

  /* Given out of order: kept sorted, attached, parented. */
  kids = calloc (3, sizeof *kids);
  REQUIRE (kids != NULL);
  kids[0] = c = child ("/%s", "c", FS_NODE_DIR);
  kids[1] = a = child ("/%s", "a", FS_NODE_DIR);
  kids[2] = b = child ("/%s", "b", FS_NODE_DIR);
  tree_wrlock ();
  tree_set_children (root, kids, 3);
  CHECK (root->nchildren == 3);
  CHECK (root->children[0] == a && root->children[1] == b
         && root->children[2] == c);
  CHECK (tree_find_child (root, "a") == a);
  CHECK (tree_find_child (root, "b") == b);
  CHECK (tree_find_child (root, "c") == c);
  CHECK (tree_find_child (root, "d") == NULL);
  CHECK (tree_find_child (root, "") == NULL);
  CHECK (a->attached && b->attached && c->attached);
  CHECK (b->parent_ino == FUSE_ROOT_ID);

  /* b/x, belonging to image directory b. */
  kids = calloc (1, sizeof *kids);
  REQUIRE (kids != NULL);
  kids[0] = bx = child ("/b/%s", "x", FS_NODE_FILE);
  tree_set_image (bx, b);
  tree_set_children (b, kids, 1);
  CHECK (bx->parent_ino == b->ino);
  CHECK (bx->image == b);
  CHECK (b->refs == 2);         /* root's children, bx->image */
  tree_unlock ();

  /* b leaves: detached with its child, which lets go of b. */
  keep_b = inode_ref (b);
  inode_ref (bx);
  kids = calloc (2, sizeof *kids);
  REQUIRE (kids != NULL);
  kids[0] = inode_ref (c);
  kids[1] = inode_ref (a);
  tree_wrlock ();
  tree_set_children (root, kids, 2);
  CHECK (root->nchildren == 2);
  CHECK (tree_find_child (root, "b") == NULL);
  CHECK (tree_find_child (root, "a") == a);
  CHECK (!b->attached && !bx->attached);
  CHECK (b->nchildren == 0);
  CHECK (bx->image == NULL);
  CHECK (a->attached && c->attached);
  tree_unlock ();
  CHECK (keep_b->refs == 1);
  inode_unref (bx);
  inode_unref (keep_b);
}

static void
test_disk (void)
{
  struct fs_node *root = tree_root (), *a = tree_find_child (root, "a"), *d;
  struct fs_node **kids;
  struct fs_disk *k1, *k2;
  uint64_t gen, bytes = 0;

  REQUIRE (a != NULL);
  d = child ("/a/%s", "vda.img", FS_NODE_DISK);
  kids = calloc (1, sizeof *kids);
  REQUIRE (kids != NULL);
  kids[0] = d;
  tree_wrlock ();
  tree_set_attr (&d->attr, S_IFREG | 0444, 1, 1 << 20, 0, 0, 7, 0);
  tree_set_image (d, a);
  tree_set_children (a, kids, 1);
  tree_unlock ();

  /* Opened through the provider; cached only when kept. */
  nopen = 0;
  k1 = tree_get_disk (d, false);
  REQUIRE (k1 != NULL);
  CHECK (nopen == 1);
  CHECK (d->disk == NULL);
  CHECK (vd_image_size (k1->img) == 1 << 20);
  fs_disk_unref (k1);
  k1 = tree_get_disk (d, true);
  REQUIRE (k1 != NULL);
  CHECK (nopen == 2);
  CHECK (d->disk == k1);
  k2 = tree_get_disk (d, true);
  CHECK (k2 == k1);
  CHECK (nopen == 2);
  fs_disk_unref (k2);
  fs_disk_unref (k1);

  /* A new disk: a new generation, the cached image dropped. */
  gen = d->gen;
  tree_wrlock ();
  tree_set_disk (d, NULL, 0);
  tree_unlock ();
  CHECK (d->gen == gen + 1);
  CHECK (d->disk == NULL);

  /* A disk that failed: its errno, the provider not asked. */
  tree_wrlock ();
  tree_set_disk (d, NULL, EIO);
  tree_unlock ();
  nopen = 0;
  errno = 0;
  CHECK (tree_get_disk (d, true) == NULL);
  CHECK (errno == EIO);
  CHECK (nopen == 0);
  tree_wrlock ();
  tree_set_disk (d, NULL, 0);
  tree_unlock ();

  /* Allocation: counted once per generation (64 KiB of 1 MiB). */
  nopen = 0;
  CHECK (tree_allocated (d, 1 << 20, &bytes) == 0);
  CHECK (bytes == 65536);
  CHECK (nopen == 1);
  CHECK (tree_allocated (d, 1 << 20, &bytes) == 0);
  CHECK (bytes == 65536);
  CHECK (nopen == 1);
  gen = d->gen;
  tree_wrlock ();
  tree_changed_content (d);
  tree_unlock ();
  CHECK (d->gen == gen + 1);
  CHECK (tree_allocated (d, 1 << 20, &bytes) == 0);
  CHECK (nopen == 2);
  /* Known without a walk (a block device): as given. */
  tree_set_allocated (d, 12345);
  CHECK (tree_allocated (d, 1 << 20, &bytes) == 0);
  CHECK (bytes == 12345);
  CHECK (nopen == 2);
}

static void
test_blob (void)
{
  struct fs_node *root = tree_root (), *a = tree_find_child (root, "a"), *f;
  struct fs_node **kids;
  struct fs_blob *small, *big, *big2, *plain, *got;
  char data[8192];
  size_t i;
  uint64_t gen;

  for (i = 0; i < sizeof data; i++)
    data[i] = "<domain>\n"[i % 9];
  small = fs_blob_new ("<x/>\n", 5);
  big = fs_blob_new (data, sizeof data);
  big2 = fs_blob_new (data, sizeof data);
  REQUIRE (small && big && big2);
  CHECK (small->zlen == 0 && small->len == 5);
  CHECK (strcmp (small->data, "<x/>\n") == 0);
  CHECK (big->len == sizeof data);
  CHECK (big->zlen > 0 && big->zlen < sizeof data);
  CHECK (fs_blob_equal (big, big2));    /* deterministic */
  CHECK (!fs_blob_equal (big, small));
  CHECK (!fs_blob_equal (big, NULL));
  plain = fs_blob_plain (big);
  REQUIRE (plain != NULL);
  CHECK (plain->zlen == 0 && plain->len == sizeof data);
  CHECK (memcmp (plain->data, data, sizeof data) == 0);
  CHECK (plain->data[sizeof data] == '\0');
  fs_blob_unref (plain);

  REQUIRE (a != NULL);
  f = child ("/a/%s", "domain.xml", FS_NODE_FILE);
  tree_wrlock ();
  kids = calloc (a->nchildren + 1, sizeof *kids);
  REQUIRE (kids != NULL);
  for (i = 0; i < a->nchildren; i++)
    kids[i] = inode_ref (a->children[i]);
  kids[i] = f;
  tree_set_children (a, kids, a->nchildren + 1);
  CHECK (tree_find_child (a, "domain.xml") == f);
  CHECK (tree_find_child (a, "vda.img") != NULL);
  tree_set_blob (f, big);
  gen = f->gen;
  tree_set_blob (f, big2);      /* the same bytes: no new generation */
  CHECK (f->gen == gen);
  tree_set_blob (f, small);
  CHECK (f->gen == gen + 1);
  tree_unlock ();
  got = tree_get_blob (f);
  REQUIRE (got != NULL);
  CHECK (got->len == 5 && memcmp (got->data, "<x/>\n", 5) == 0);
  fs_blob_unref (got);
  tree_wrlock ();
  tree_set_blob (f, big);
  tree_unlock ();
  got = tree_get_blob (f);
  REQUIRE (got != NULL);
  CHECK (got->zlen == 0 && got->len == sizeof data
         && memcmp (got->data, data, sizeof data) == 0);
  fs_blob_unref (got);
  fs_blob_unref (small);
  fs_blob_unref (big);
  fs_blob_unref (big2);
}

static void
test_revalidate (void)
{
  struct fs_node *root = tree_root (), *a = tree_find_child (root, "a"), *d;
  struct fs_node *gone;

  REQUIRE (a != NULL);
  d = tree_find_child (a, "vda.img");
  REQUIRE (d != NULL);

  nstale = nrefresh = 0;
  stale_answer = false;
  tree_revalidate (d);
  CHECK (nstale == 1 && nrefresh == 0);
  stale_answer = true;
  tree_revalidate (d);          /* its point: the image directory */
  CHECK (nrefresh == 1 && refreshed == a);
  tree_revalidate (a);
  CHECK (nrefresh == 2 && refreshed == a);
  tree_revalidate (root);
  CHECK (nrefresh == 3 && refreshed == root);
  tree_refresh (a);             /* whether stale or not */
  CHECK (nrefresh == 4 && refreshed == a);

  /* A detached node: nothing to ask. */
  gone = tree_get_node (FS_NODE_DIR, "/gone");
  REQUIRE (gone != NULL);
  nstale = 0;
  tree_revalidate (gone);
  CHECK (nstale == 0 && nrefresh == 4);
  inode_unref (gone);
  stale_answer = false;
}

int
main (void)
{
  make_image ();
  inode_init ();
  REQUIRE (tree_start (&test_provider) == 0);
  test_shape ();
  test_disk ();
  test_blob ();
  test_revalidate ();
  tree_stop ();
  CHECK (nstop == 1);
  CHECK (tree_root () == NULL);
  inode_fini ();
  unlink (image_path);
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return 1;
  }
  return 0;
}
