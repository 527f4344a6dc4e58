/* vmdiskfs - the images provider (-o images=DIR): every regular file of
 * DIR is an image shown as a directory:
 *
 *   /<image file name>/disk.img                     the guest disk
 *   /<image file name>/snapshots/<tag>/disk.img     each internal snapshot
 *
 * Choices (documented in vmdiskfs.1 too):
 *  - Every regular, non-hidden file is shown; anything that matches no
 *    other format is a raw image.  Hidden files (".name") and everything
 *    that is not a regular file (after following symlinks) are skipped.
 *  - A file that fails to open (corrupt header, unsupported feature) is
 *    still shown, with a zero-sized disk.img and no snapshots; opening
 *    that disk.img fails with EIO (ops.c: whatever the reason), and the
 *    failure is logged, so the administrator sees the broken image
 *    instead of silently missing it.
 *  - Images are opened lazily, so that a directory of thousands of them
 *    needs no more file descriptors than the files being read: a scan
 *    opens an image, reads its virtual size and snapshot table, and
 *    closes it; opening a disk.img (or counting its allocation for
 *    st_blocks) opens the image again, and the last release closes it
 *    (every disk node has a snap_id, "" for the image itself, which is
 *    what tells ops.c's release to close).  An open file holds its own
 *    reference to the opened image, so reads cost what they did.  An
 *    image that cannot be opened then (removed, replaced by a corrupt
 *    one, EMFILE) gives EIO to the reader, with a log line; an image
 *    that failed at the scan for lack of resources (EMFILE, ENFILE,
 *    ENOMEM) is scanned again at the next access after a second.
 *    main.c raises the descriptor limit to its hard limit at start,
 *    for the backing files of images read at once.
 *  - Names are escaped with vd_name_escape.  Snapshots are shown by tag; a
 *    tag that appears more than once keeps its plain name for the first of
 *    them in snapshot-table order, the others get " (id N)" appended (N is
 *    the snapshot id); an empty tag is shown as "(id N)".
 *  - Modes: the root has DIR's mode less the write bits (an image in a
 *    0700 DIR stays root's), other directories 0555; a disk.img has the
 *    read bits every file of its chain grants (vd_image's read_mode:
 *    image, backing and data files; 0444 at most), so that with
 *    allow_other (which implies default_permissions, main.c) a user who
 *    cannot read a file of the chain cannot read its disks either.
 *  - Untrusted names (safe-open.c): images, backing and data files must
 *    resolve inside DIR unless -o backing=any; entries of DIR are stat'ed
 *    without the kernel following symlinks (entry_stat), so a symlink into
 *    our own mount is never a request to ourselves.  -o probe=no: only
 *    files named *.qcow2, *.qed, *.qcow are probed, all else is raw.
 *  - Times: an image directory, its disk.img and snapshots/ have the image
 *    file's mtime (as atime, mtime and ctime); a snapshot directory and
 *    its disk.img have the snapshot's date; the root has DIR's times.
 *
 * Changes in DIR show without remount: the root is rescanned when DIR's
 * mtime or ctime changed, an image when its file's identity, size, mtime
 * or ctime changed (qemu-img snapshot rewrites the file), checked with a
 * stat on each access (tree_revalidate); an image at most once a second
 * (IMAGE_MIN_RESCAN_MS), so a running VM's disk is not reopened and
 * re-walked on every access.
 *
 * Threads: the provider callbacks are serialized by tree.c's refresh_lock;
 * they open images without tree_lock, then take it to change nodes.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmdiskfs.h"
#include "clock.h"
#include "filestat.h"
#include "vec.h"
#include "cleanup.h"
#include "escape.h"
#include "log.h"

static char *images_dir;              /* absolute; constant after start */
/* Where names may lead: inside images_dir unless -o backing=any.
 * Constant after start. */
static struct vd_policy images_policy;

/* The status of DIR's entry path without following a symlink the kernel's
 * way: a symlink is resolved by vd_stat_checked (never through our mount,
 * never out of DIR unless -o backing=any); one that it refuses keeps its
 * own lstat, so it is shown and its open is refused with a log line. */
static int
entry_stat (const char *path, struct stat *st)
{
  struct stat t;

  if (lstat (path, st) < 0)
    return -1;
  if (S_ISLNK (st->st_mode)) {
    if (vd_stat_checked (path, &images_policy, &t) == 0)
      *st = t;
    else if (errno == EACCES || errno == ELOOP)
      st->st_mode = S_IFREG | (st->st_mode & 07777);
    else
      return -1;
  }
  return 0;
}

/* -o probe=no: only files named as an image format are probed. */
static const char *
scan_format (const char *path)
{
  static const char *const suffixes[] = { ".qcow2", ".qed", ".qcow" };
  size_t n = strlen (path), i;

  if (!fs_config.probe_no)
    return NULL;
  for (i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    size_t k = strlen (suffixes[i]);
    if (n > k && strcmp (path + n - k, suffixes[i]) == 0)
      return NULL;
  }
  return "raw";
}

/* root->priv; tree_lock. */
struct images_root {
  bool scanned;
  struct stat st;                     /* DIR at the last scan */
};

/* priv of an image directory node; tree_lock. */
struct images_image {
  char *path;                         /* the image file                  */
  struct stat st;                     /* the file at the last scan       */
  uint64_t scanned_ms;                /* monotonic time of that scan     */
};

/* An image that keeps changing (the disk of a running VM) is rescanned
 * at most this often: each rescan reopens it and, on the next getattr,
 * walks its whole extent map again for st_blocks. */
#define IMAGE_MIN_RESCAN_MS 1000

static void
image_priv_free (void *p)
{
  struct images_image *ii = p;

  if (ii) {
    free (ii->path);
    free (ii);
  }
}

/* What one image file holds, gathered without tree_lock. */
struct image_scan {
  char *ename;                        /* escaped file name               */
  char *path;
  struct stat st;
  struct fs_node *keep;               /* unchanged: the existing node    */
  uint64_t size;                      /* virtual size, when !err         */
  int err;                            /* the failed open's errno or 0    */
  struct vd_snapshot *snaps;
  size_t nsnaps;
  mode_t read_mode;                   /* of every file the disk reads    */
};

static void
scan_free (struct image_scan *s)
{
  free (s->ename);
  free (s->path);
  if (s->keep)
    inode_unref (s->keep);
  vd_snapshots_free (s->snaps, s->nsnaps);
}

/* A failed open that may work later: not the image's fault. */
static bool
transient_errno (int e)
{
  return e == EMFILE || e == ENFILE || e == ENOMEM;
}

/* Open the image (no lock held), read its virtual size and snapshot
 * table, and close it again (images are opened lazily). */
static void
scan_open (struct image_scan *s)
{
  struct vd_image *img;

  s->read_mode = s->st.st_mode & 0444;
  errno = 0;
  img = vd_image_open_policy (s->path, scan_format (s->path), 0,
                              &images_policy);
  if (!img) {
    s->err = errno ? errno : EIO;
    vd_error ("%s: cannot open as an image: %s (its disk.img is shown "
              "empty and fails to open)", s->path, strerror (s->err));
    return;
  }
  s->read_mode = img->read_mode;
  s->size = vd_image_size (img);
  if (vd_image_list_snapshots (img, &s->snaps, &s->nsnaps) < 0) {
    vd_warn ("%s: cannot list snapshots: %m", s->path);
    s->snaps = NULL;
    s->nsnaps = 0;
  }
  vd_image_close (img);
}

static void
set_attr (struct stat *st, mode_t mode, nlink_t nlink, uint64_t size,
          const struct stat *owner, time_t sec, long nsec)
{
  tree_set_attr (st, mode, nlink, size, owner->st_uid, owner->st_gid, sec,
                 nsec);
}

/* The names snapshots are shown under, in table order: NULL for one that
 * cannot be shown (a name clash even after the " (id N)" suffix). */
struct snap_name {
  char *name;
  size_t index;
};

static int
snap_name_cmp (const void *a, const void *b)
{
  const struct snap_name *x = a, *y = b;
  int c = strcmp (x->name, y->name);

  if (c)
    return c;
  return x->index < y->index ? -1 : x->index > y->index;
}

static char **
snapshot_names (const char *path, const struct vd_snapshot *snaps, size_t n)
{
  struct snap_name *v;
  char **names;
  size_t i, j;

  names = calloc (n ? n : 1, sizeof *names);
  v = calloc (n ? n : 1, sizeof *v);
  if (!names || !v)
    goto fail;
  for (i = 0; i < n; i++) {
    v[i].index = i;
    if (snaps[i].name[0] == '\0') {
      if (asprintf (&v[i].name, "(id %s)", snaps[i].id) < 0)
        v[i].name = NULL;
    }
    else
      v[i].name = vd_name_escape (snaps[i].name);
    if (!v[i].name)
      goto fail;
  }
  /* Equal tags: all but the first (in table order) get the id. */
  qsort (v, n, sizeof *v, snap_name_cmp);
  for (i = 1; i < n; i++) {
    for (j = i; j < n && strcmp (v[j].name, v[i - 1].name) == 0; j++)
      ;
    for (; i < j; i++) {
      char *s;
      if (asprintf (&s, "%s (id %s)", v[i].name,
                    snaps[v[i].index].id) < 0)
        goto fail;
      free (v[i].name);
      v[i].name = s;
    }
  }
  /* Still clashing (a tag that looks like "x (id N)"): drop later ones. */
  qsort (v, n, sizeof *v, snap_name_cmp);
  for (i = 0; i < n; i++) {
    if (i > 0 && names[v[i - 1].index]
        && strcmp (v[i].name, v[i - 1].name) == 0) {
      vd_warn ("%s: snapshot id %s: name \"%s\" clashes, not shown",
               path, snaps[v[i].index].id, v[i].name);
      free (v[i].name);
    }
    else
      names[v[i].index] = v[i].name;
  }
  free (v);
  return names;

 fail:
  if (v)
    for (i = 0; i < n; i++)
      free (v[i].name);
  free (v);
  free (names);
  return NULL;
}

/* tree_lock held for writing.  The snapshot directory and its disk.img;
 * a reference to the directory, or NULL. */
static struct fs_node *
apply_snapshot (struct fs_node *image, const struct image_scan *s,
                bool same_file, const struct vd_snapshot *snap,
                const char *name)
{
  struct fs_node *dir, *disk, **kids;
  bool unchanged;

  dir = tree_get_node (FS_NODE_DIR, "/%s/snapshots/%s", s->ename, name);
  if (!dir)
    return NULL;
  disk = tree_get_node (FS_NODE_DISK, "/%s/snapshots/%s/disk.img",
                        s->ename, name);
  kids = malloc (sizeof *kids);
  if (!disk || !kids) {
    if (disk)
      inode_unref (disk);
    free (kids);
    inode_unref (dir);
    return NULL;
  }
  set_attr (&dir->attr, S_IFDIR | 0555, 2, 0, &s->st,
            snap->date_sec,
            snap->date_nsec);
  tree_set_image (dir, image);

  /* The snapshot's bytes never change; keep its open image and the
   * kernel's cache unless this is not the same snapshot any more. */
  unchanged = same_file && disk->attached && disk->snap_id
    && strcmp (disk->snap_id, snap->id) == 0
    && disk->attr.st_mtim.tv_sec == snap->date_sec
    && disk->attr.st_mtim.tv_nsec == (long) snap->date_nsec
    && (uint64_t) disk->attr.st_size == snap->disk_size;
  set_attr (&disk->attr, S_IFREG | s->read_mode, 1,
            snap->disk_size, &s->st, snap->date_sec, snap->date_nsec);
  tree_set_image (disk, image);
  if (!unchanged) {
    free (disk->snap_id);
    disk->snap_id = strdup (snap->id);
    tree_set_disk (disk, NULL, disk->snap_id ? 0 : ENOMEM);
    tree_changed_content (disk);
  }
  kids[0] = disk;
  tree_set_children (dir, kids, 1);
  return dir;
}

/* tree_lock held for writing.  Make the image directory of s what s says;
 * a reference to it, or NULL with errno (ENOMEM). */
static struct fs_node *
apply_image (struct image_scan *s)
{
  struct fs_node *node, *disk = NULL, *sdir = NULL, **kids = NULL,
    **snapkids = NULL;
  struct images_image *ii;
  CLEANUP_FREE char **names = NULL;
  bool same_file;
  size_t i, n = 0;
  uint64_t size = s->err ? 0 : s->size;

  node = tree_get_node (FS_NODE_DIR, "/%s", s->ename);
  if (!node)
    return NULL;
  ii = node->priv;
  if (!ii) {
    ii = calloc (1, sizeof *ii);
    if (!ii)
      goto fail;
    node->priv = ii;
    node->priv_free = image_priv_free;
  }
  same_file = node->attached && ii->path
    && ii->st.st_dev == s->st.st_dev && ii->st.st_ino == s->st.st_ino;
  free (ii->path);
  ii->path = strdup (s->path);
  if (!ii->path)
    goto fail;
  ii->st = s->st;
  if (transient_errno (s->err)) {
    /* Not the image's fault: look again at the next access (after
     * IMAGE_MIN_RESCAN_MS), as if it had changed. */
    ii->st.st_mtim.tv_sec = -1;
  }
  ii->scanned_ms = vd_now_ms ();

  names = snapshot_names (s->path, s->snaps, s->nsnaps);
  disk = tree_get_node (FS_NODE_DISK, "/%s/disk.img", s->ename);
  sdir = tree_get_node (FS_NODE_DIR, "/%s/snapshots", s->ename);
  kids = calloc (2, sizeof *kids);
  snapkids = calloc (s->nsnaps ? s->nsnaps : 1, sizeof *snapkids);
  if (!names || !disk || !sdir || !kids || !snapkids)
    goto fail;

  set_attr (&node->attr, S_IFDIR | 0555, 3, 0, &s->st,
            s->st.st_mtim.tv_sec, s->st.st_mtim.tv_nsec);

  set_attr (&disk->attr, S_IFREG | s->read_mode, 1, size,
            &s->st, s->st.st_mtim.tv_sec, s->st.st_mtim.tv_nsec);
  tree_set_image (disk, node);
  /* "": the image itself, opened on demand and closed with its last
   * reader (see the top). */
  if (!disk->snap_id && (disk->snap_id = strdup ("")) == NULL)
    goto fail;
  tree_set_disk (disk, NULL, transient_errno (s->err) ? 0 : s->err);
  tree_changed_content (disk);

  for (i = 0; i < s->nsnaps; i++) {
    struct fs_node *d;
    if (!names[i])
      continue;
    d = apply_snapshot (node, s, same_file, &s->snaps[i], names[i]);
    if (d)
      snapkids[n++] = d;
  }
  for (i = 0; i < s->nsnaps; i++)
    free (names[i]);
  set_attr (&sdir->attr, S_IFDIR | 0555, 2 + n, 0,
            &s->st,
            s->st.st_mtim.tv_sec, s->st.st_mtim.tv_nsec);
  tree_set_image (sdir, node);
  tree_set_children (sdir, snapkids, n);

  kids[0] = disk;
  kids[1] = sdir;
  tree_set_children (node, kids, 2);
  return node;

 fail:
  if (names)
    for (i = 0; i < s->nsnaps; i++)
      free (names[i]);
  free (kids);
  free (snapkids);
  if (disk)
    inode_unref (disk);
  if (sdir)
    inode_unref (sdir);
  inode_unref (node);
  vd_error ("%s: out of memory", s->path);
  errno = ENOMEM;
  return NULL;
}

static int
scan_cmp (const void *a, const void *b)
{
  const struct image_scan *x = a, *y = b;

  return strcmp (x->ename, y->ename);
}

/* A broken images directory (removed, unmounted, no permission) is
 * logged once per distinct error, not at every access; the last listing
 * stays.  refresh_lock held. */
static int last_dir_errno;

static void
dir_error (const char *what)
{
  int e = errno;

  if (e != last_dir_errno)
    vd_error ("%s: %s: %s (showing its last listing)", images_dir, what,
              strerror (e));
  last_dir_errno = e;
  errno = e;
}

/* Rescan DIR (refresh_lock held). */
static int
refresh_root (struct fs_node *root, bool force)
{
  struct images_root *r = root->priv;
  struct image_scan *scans = NULL;
  struct fs_node **kids = NULL;
  struct stat dst;
  struct dirent *de;
  size_t n = 0, cap = 0, i, k = 0;
  DIR *dir;
  int ret = -1;

  if (stat (images_dir, &dst) < 0) {
    dir_error ("stat");
    return -1;
  }
  tree_rdlock ();
  if (!force && r->scanned && !vd_stat_changed (&r->st, &dst)) {
    tree_unlock ();
    return 0;
  }
  tree_unlock ();

  dir = opendir (images_dir);
  if (!dir) {
    dir_error ("opendir");
    return -1;
  }
  last_dir_errno = 0;
  while ((errno = 0, de = readdir (dir)) != NULL) {
    struct image_scan *s;
    struct stat st;
    struct fs_node *old;
    char *path;

    if (de->d_name[0] == '.')
      continue;
    if (asprintf (&path, "%s/%s", images_dir, de->d_name) < 0)
      goto nomem;
    if (entry_stat (path, &st) < 0 || !S_ISREG (st.st_mode)) {
      free (path);
      path = NULL;
      continue;
    }
    if (n == cap) {
      struct image_scan *t = vd_vec_grow (scans, &cap, n, 1, sizeof *scans);
      if (!t)
        goto nomem;
      scans = t;
    }
    s = &scans[n];
    memset (s, 0, sizeof *s);
    s->st = st;
    s->ename = vd_name_escape (de->d_name);
    s->path = path;
    path = NULL;
    if (!s->ename) {
      free (s->path);
      goto nomem;
    }
    n++;

    tree_rdlock ();
    old = tree_find_child (root, s->ename);
    if (old && old->priv
        && !vd_stat_changed (&((struct images_image *) old->priv)->st, &st))
      s->keep = inode_ref (old);
    tree_unlock ();
    if (!s->keep)
      scan_open (s);
  }
  if (errno) {
    vd_error ("%s: readdir: %m", images_dir);
    goto out;
  }
  qsort (scans, n, sizeof *scans, scan_cmp);

  kids = calloc (n ? n : 1, sizeof *kids);
  if (!kids)
    goto nomem;
  tree_wrlock ();
  for (i = 0; i < n; i++) {
    struct fs_node *node;
    if (scans[i].keep)
      node = inode_ref (scans[i].keep);
    else
      node = apply_image (&scans[i]);
    if (node)
      kids[k++] = node;
  }
  tree_set_children (root, kids, k);
  /* The mode of DIR, less the write bits: who cannot list DIR on the
   * host cannot list its images here. */
  set_attr (&root->attr, S_IFDIR | (dst.st_mode & 0555), 2 + k, 0, &dst,
            dst.st_mtim.tv_sec, dst.st_mtim.tv_nsec);
  r->st = dst;
  r->scanned = true;
  tree_unlock ();
  vd_debug ("%s: %zu images", images_dir, k);
  ret = 0;
  goto out;

 nomem:
  vd_error ("%s: out of memory", images_dir);
  errno = ENOMEM;
 out:
  closedir (dir);
  for (i = 0; i < n; i++)
    scan_free (&scans[i]);
  free (scans);
  return ret;
}

/* Rescan one image directory (refresh_lock held). */
static void
refresh_image (struct fs_node *node)
{
  struct image_scan s = { 0 };
  struct images_image *ii;
  struct fs_node *n;
  bool gone;

  tree_rdlock ();
  ii = node->priv;
  if (!node->attached || !ii) {
    tree_unlock ();
    return;
  }
  s.path = strdup (ii->path);
  s.ename = strdup (node->name);
  tree_unlock ();
  if (!s.path || !s.ename)
    goto out;

  gone = entry_stat (s.path, &s.st) < 0 || !S_ISREG (s.st.st_mode);
  if (gone) {
    /* Removed or replaced by something else: DIR changed too. */
    refresh_root (tree_root (), true);
    goto out;
  }
  tree_rdlock ();
  if (node->attached && !vd_stat_changed (&ii->st, &s.st)) {
    tree_unlock ();
    goto out;
  }
  tree_unlock ();

  scan_open (&s);
  tree_wrlock ();
  if (node->attached) {
    n = apply_image (&s);
    if (n)
      inode_unref (n);
  }
  tree_unlock ();
 out:
  scan_free (&s);
}

static int
images_start (struct fs_node *root)
{
  struct images_root *r;
  char *dir;
  struct stat st;

  dir = realpath (fs_config.images, NULL);
  if (!dir || stat (dir, &st) < 0) {
    fprintf (stderr, "vmdiskfs: -o images=%s: %m\n", fs_config.images);
    free (dir);
    return -1;
  }
  if (!S_ISDIR (st.st_mode)) {
    fprintf (stderr, "vmdiskfs: -o images=%s: not a directory\n",
             fs_config.images);
    free (dir);
    return -1;
  }
  images_dir = dir;
  images_policy.confine = fs_config.backing_any ? NULL : images_dir;
  r = calloc (1, sizeof *r);
  if (!r)
    return -1;
  root->priv = r;
  root->priv_free = free;
  return refresh_root (root, true);
}

static bool
images_stale (struct fs_node *node)
{
  struct stat st;

  if (node == tree_root ()) {
    struct images_root *r = node->priv;
    return stat (images_dir, &st) < 0 || !r->scanned
      || vd_stat_changed (&r->st, &st);
  }
  else {
    struct images_image *ii = node->priv;
    if (!ii || entry_stat (ii->path, &st) < 0)
      return true;                      /* gone: rescan DIR now */
    return vd_stat_changed (&ii->st, &st)
      && vd_now_ms () - ii->scanned_ms >= IMAGE_MIN_RESCAN_MS;
  }
}

static void
images_refresh (struct fs_node *node)
{
  if (node == tree_root ())
    refresh_root (node, false);
  else
    refresh_image (node);
}

/* Open the image behind a disk node: the image file itself (snap_id
 * "") or one of its snapshots.  Opened anew for each first reader (and
 * for counting st_blocks): nothing is kept open between them. */
static struct fs_disk *
images_open_disk (struct fs_node *node)
{
  CLEANUP_FREE char *path = NULL, *id = NULL;
  struct images_image *ii;
  struct vd_image *img, *snap;
  struct stat scanned;
  mode_t shown = 0;
  int err = 0;

  tree_rdlock ();
  ii = node->image ? node->image->priv : NULL;
  if (!ii || !node->snap_id)
    err = ENOENT;               /* left the tree */
  else if ((path = strdup (ii->path)) == NULL
           || (id = strdup (node->snap_id)) == NULL)
    err = ENOMEM;
  else {
    scanned = ii->st;
    shown = node->attr.st_mode & 0444;
  }
  tree_unlock ();
  if (err) {
    errno = err;
    return NULL;
  }
  /* Under the same policy and format rule as the scan (logs why it
   * fails). */
  img = vd_image_open_policy (path, scan_format (path), 0, &images_policy);
  if (!img)
    return NULL;
  if (id[0]) {
    snap = vd_image_open_snapshot (img, id);
    vd_image_close (img);
    if (!snap)
      return NULL;
    img = snap;
  }
  if (fs_disk_changed (img, &scanned, shown)) {
    vd_image_close (img);
    errno = EIO;
    return NULL;
  }
  return fs_disk_new (img);              /* closes img on failure */
}

/* Open the image of an active disk node for writing (write.c): the file
 * scanned, under the same policy, read-write (fresh metadata; qemu's
 * locks: EBUSY while another program writes it). */
static struct vd_image *
images_open_write (struct fs_node *node, void **token)
{
  CLEANUP_FREE char *path = NULL;
  struct images_image *ii;
  struct vd_image *img;
  struct stat scanned;
  int err = 0;

  *token = NULL;
  tree_rdlock ();
  ii = node->image ? node->image->priv : NULL;
  if (!ii || !node->snap_id)
    err = ENOENT;
  else if (node->snap_id[0])
    err = EROFS;                /* a snapshot */
  else if ((path = strdup (ii->path)) == NULL)
    err = ENOMEM;
  else
    scanned = ii->st;
  tree_unlock ();
  if (err) {
    errno = err;
    return NULL;
  }
  img = vd_image_open_policy (path, scan_format (path), VD_OPEN_RDWR,
                              &images_policy);
  if (!img)
    return NULL;
  if (img->dev != scanned.st_dev || img->ino != scanned.st_ino) {
    vd_error ("%s: replaced since it was scanned: not written", path);
    vd_image_close (img);
    errno = EIO;
    return NULL;
  }
  return img;
}

/* The writer is done: the image's new size and times are seen by the
 * next scan, which the file's new mtime brings. */
static void
images_close_write (struct fs_node *node, void *token)
{
}

/* Staging files may be made in an image directory. */
static bool
images_may_stage (struct fs_node *dir)
{
  bool r;

  tree_rdlock ();
  r = dir->priv != NULL && dir->image == NULL && dir != tree_root ();
  tree_unlock ();
  return r;
}

/* statfs: the images directory's file system. */
static int
images_statfs (struct statvfs *sv)
{
  return statvfs (images_dir, sv);
}

static void
images_stop (void)
{
  free (images_dir);
  images_dir = NULL;
  images_policy.confine = NULL;
}

const struct fs_provider tree_images_provider = {
  .name = "images",
  .start = images_start,
  .refresh = images_refresh,
  .stale = images_stale,
  .open_disk = images_open_disk,
  .stop = images_stop,
  .statfs = images_statfs,
  .open_write = images_open_write,
  .close_write = images_close_write,
  .may_stage = images_may_stage,
};
