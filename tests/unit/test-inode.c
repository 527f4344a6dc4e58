/* vmdiskfs - unit test of the inode table (fs/inode.c): numbers are the
 * 64-bit FNV-1a hash of the path (stable across remounts), "/" is 1, a
 * number taken by another path or type is probed past, a node lives while
 * the tree (refs) or the kernel (nlookup) holds it, and a path that comes
 * back while the kernel remembers it gets its old node.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdiskfs.h"
#include "test.h"

static int failures;

/* FNV-1a, 64 bit, as written down in inode.c's head comment. */
static uint64_t
fnv1a (const char *s)
{
  uint64_t h = UINT64_C (0xcbf29ce484222325);

  for (; *s; s++) {
    h ^= (unsigned char) *s;
    h *= UINT64_C (0x100000001b3);
  }
  return h;
}

static void
test_numbers (void)
{
  struct fs_node *root, *a, *a2, *af, *f;
  fuse_ino_t ino;

  inode_init ();
  root = inode_get_node ("/", FS_NODE_DIR);
  REQUIRE (root != NULL);
  CHECK (root->ino == FUSE_ROOT_ID);
  CHECK (strcmp (root->path, "/") == 0);

  a = inode_get_node ("/dom/vda.img", FS_NODE_DISK);
  REQUIRE (a != NULL);
  CHECK (a->ino == fnv1a ("/dom/vda.img"));
  CHECK (strcmp (a->name, "vda.img") == 0);
  CHECK (a->type == FS_NODE_DISK);
  CHECK (a->refs == 1 && a->nlookup == 0);
  CHECK (!a->attached);

  /* The same path and type: the same node, one more reference. */
  a2 = inode_get_node ("/dom/vda.img", FS_NODE_DISK);
  CHECK (a2 == a);
  CHECK (a->refs == 2);
  inode_unref (a2);
  CHECK (a->refs == 1);

  /* Found by number, with a reference. */
  f = inode_find (a->ino);
  CHECK (f == a);
  CHECK (a->refs == 2);
  inode_unref (f);
  CHECK (inode_find (a->ino + 12345) == NULL);

  /* The same path as another type: the number is taken, the next one is
   * tried. */
  af = inode_get_node ("/dom/vda.img", FS_NODE_DIR);
  REQUIRE (af != NULL);
  CHECK (af != a);
  CHECK (af->ino == a->ino + 1);
  CHECK (inode_find (af->ino) == af);
  inode_unref (af);             /* inode_find's */
  inode_unref (af);             /* gone */
  CHECK (inode_find (a->ino + 1) == NULL);

  /* Stable across a "remount": the same number from a fresh table. */
  ino = a->ino;
  inode_unref (a);
  inode_unref (root);
  inode_fini ();
  inode_init ();
  a = inode_get_node ("/dom/vda.img", FS_NODE_DISK);
  REQUIRE (a != NULL);
  CHECK (a->ino == ino);
  inode_unref (a);
  CHECK (inode_find (ino) == NULL);
  inode_fini ();
}

static void
test_lookups (void)
{
  struct fs_node *n, *again, *dir;
  fuse_ino_t ino;

  inode_init ();
  n = inode_get_node ("/d/snapshots/s1", FS_NODE_DIR);
  REQUIRE (n != NULL);
  ino = n->ino;

  /* The kernel's reference keeps it after the tree lets go. */
  inode_lookup_inc (n);
  inode_lookup_inc (n);
  CHECK (n->nlookup == 2);
  inode_unref (n);
  n = inode_find (ino);
  REQUIRE (n != NULL);
  CHECK (n->refs == 1 && n->nlookup == 2);
  inode_unref (n);

  /* The path comes back while the kernel remembers it: the old node. */
  again = inode_get_node ("/d/snapshots/s1", FS_NODE_DIR);
  CHECK (again == n);
  CHECK (again->refs == 1);
  inode_unref (again);

  /* Forgotten partly, then all: gone. */
  inode_forget (ino, 1);
  n = inode_find (ino);
  REQUIRE (n != NULL);
  CHECK (n->nlookup == 1);
  inode_unref (n);
  inode_forget (ino, 1);
  CHECK (inode_find (ino) == NULL);

  /* More forgotten than looked up (logged): clamped, gone. */
  n = inode_get_node ("/x", FS_NODE_FILE);
  REQUIRE (n != NULL);
  ino = n->ino;
  inode_lookup_inc (n);
  inode_unref (n);
  inode_forget (ino, 5);
  CHECK (inode_find (ino) == NULL);

  /* A forget of a number nobody has: nothing. */
  inode_forget (ino, 1);

  /* A node's image reference goes with it. */
  dir = inode_get_node ("/d", FS_NODE_DIR);
  n = inode_get_node ("/d/domain.xml", FS_NODE_FILE);
  REQUIRE (dir != NULL && n != NULL);
  n->image = inode_ref (dir);
  CHECK (dir->refs == 2);
  inode_unref (n);
  CHECK (dir->refs == 1);
  inode_unref (dir);
  inode_fini ();
}

/* Many nodes: the table grows, every number stays found. */
static void
test_many (void)
{
  enum { N = 5000 };
  struct fs_node **v = calloc (N, sizeof *v);
  char path[64];
  size_t i, j;

  REQUIRE (v != NULL);
  inode_init ();
  for (i = 0; i < N; i++) {
    snprintf (path, sizeof path, "/dom%zu/vda.img", i);
    v[i] = inode_get_node (path, FS_NODE_DISK);
    REQUIRE (v[i] != NULL);
    CHECK (v[i]->ino == fnv1a (path));
  }
  for (i = 0; i < N; i++) {
    struct fs_node *f = inode_find (v[i]->ino);
    CHECK (f == v[i]);
    if (f)
      inode_unref (f);
  }
  /* Distinct numbers (FNV-1a does not collide on these). */
  for (i = 0; i < N; i += 97)
    for (j = i + 1; j < N; j++)
      CHECK (v[i]->ino != v[j]->ino);
  /* Half of them dropped: the rest still found, the others not. */
  for (i = 0; i < N; i += 2) {
    fuse_ino_t ino = v[i]->ino;
    inode_unref (v[i]);
    CHECK (inode_find (ino) == NULL);
  }
  for (i = 1; i < N; i += 2) {
    struct fs_node *f = inode_find (v[i]->ino);
    CHECK (f == v[i]);
    if (f)
      inode_unref (f);
    inode_unref (v[i]);
  }
  inode_fini ();
  free (v);
}

int
main (void)
{
  test_numbers ();
  test_lookups ();
  test_many ();
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return 1;
  }
  return 0;
}
