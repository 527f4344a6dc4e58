/* vmdiskfs - the write side of the FUSE callbacks: restoring a disk by
 * copying a file back (DESIGN.md "Writing").
 *
 * Which tool does what (strace of each, Debian 12):
 *   cp B D, cat B > D, dd of=D, pv B > D, tar --overwrite
 *       open(D, O_WRONLY|O_TRUNC) and write (cp skips the source's holes
 *       with lseek and ends with ftruncate(size)): O_TRUNC makes the disk
 *       read as zeros from then on, its size kept (vd_image_zero over all
 *       of it: qcow2 clusters released), so skipped holes read as zeros.
 *       ftruncate to a smaller size zeroes the rest, to a bigger one
 *       grows the disk (an LV: EFBIG).
 *   dd conv=notrunc, rsync --inplace
 *       open(D, O_WRONLY) and write only what they write.
 *   rsync -a B DIR/
 *       open(DIR/.B.XXXXXX, O_RDWR|O_CREAT|O_EXCL), write, close, utimes,
 *       rename(.B.XXXXXX, B): the new file is a staging file (staging.c);
 *       the rename applies it to the disk under the same checks as an
 *       open for writing, and returns when the data is in and flushed.
 *   tar -x
 *       unlink(D), open(D, O_WRONLY|O_CREAT|O_EXCL), write, fchown,
 *       fchmod, utimensat: unlink hides the disk (staging.c), the create
 *       opens it as O_TRUNC does.
 *   cp -a, rsync -a, tar: fchown/fchmod succeed and change nothing on the
 *       host; utimensat sets the image file's times.
 *
 * A disk open for writing has one struct fs_writer, shared by all its
 * write handles: the image opened read-write by the provider (fresh
 * metadata; qemu's lock bytes held, so the VM cannot start; in libvirt
 * mode the domain's snapshot lock held too), which also serves every
 * reader of the node meanwhile (node->disk), so reads see the writes.
 * When the last write handle goes, the image is flushed and closed, the
 * locks go with it, and the next reader reopens the image read-only.
 *
 * Zeros never allocate: vd_image_pwrite finds all-zero blocks.  fsync is
 * vd_image_flush (everything durable); so is flush (every close), so a
 * close that returns 0 lost nothing, even if the daemon dies next.
 *
 * Locks: writer_lock serializes making and ending writers (rare), taken
 * with no other lock held; node->lock under it.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include "vmdiskfs.h"
#include "ops-priv.h"
#include "cleanup.h"
#include "log.h"

#define COPY_CHUNK (1024 * 1024)

struct fs_writer {
  unsigned users;               /* writer_lock: handles and operations    */
  struct fs_disk *disk;         /* the image, read-write                  */
  void *token;                  /* the provider's (domain lock)           */
  bool wrote;                   /* something was written                  */
};

static pthread_mutex_t writer_lock = PTHREAD_MUTEX_INITIALIZER;

/* A snapshot's disk (images mode gives the active disk the id ""). */
static bool
is_snapshot (struct fs_node *node)
{
  bool r;

  tree_rdlock ();
  r = node->snap_id && node->snap_id[0];
  tree_unlock ();
  return r;
}

static bool
writable_fs (void)
{
  const struct fs_provider *p = tree_provider ();

  return !fs_config.ro && !p->read_only && p->open_write;
}

/* The writer of disk node (a new use of it), made if there is none. NULL
 * with errno. */
static struct fs_writer *
writer_get (struct fs_node *node)
{
  const struct fs_provider *p = tree_provider ();
  struct fs_writer *w;
  struct vd_image *img;
  struct fs_disk *d;
  void *token = NULL;
  bool snap;

  snap = is_snapshot (node);
  if (snap || node->type != FS_NODE_DISK || !writable_fs ()) {
    errno = EROFS;
    return NULL;
  }
  pthread_mutex_lock (&writer_lock);
  pthread_mutex_lock (&node->lock);
  w = node->writer;
  if (w)
    w->users++;
  pthread_mutex_unlock (&node->lock);
  if (w) {
    pthread_mutex_unlock (&writer_lock);
    return w;
  }
  errno = 0;
  img = p->open_write (node, &token);
  if (!img) {
    int e = errno ? errno : EIO;
    pthread_mutex_unlock (&writer_lock);
    errno = e;
    return NULL;
  }
  w = calloc (1, sizeof *w);
  d = fs_disk_new (img);        /* closes img on failure */
  if (!w || !d) {
    free (w);
    if (d)
      fs_disk_unref (d);
    else if (!w)
      vd_image_close (img);
    p->close_write (node, token);
    pthread_mutex_unlock (&writer_lock);
    errno = ENOMEM;
    return NULL;
  }
  w->users = 1;
  w->disk = d;
  w->token = token;
  pthread_mutex_lock (&node->lock);
  node->writer = w;
  pthread_mutex_unlock (&node->lock);
  /* Readers from now on use the writer's image (node->gen bumped: the
   * kernel's page cache of the old bytes is not kept). */
  tree_set_disk (node, d, 0);
  pthread_mutex_unlock (&writer_lock);
  vd_debug ("%s: open for writing (%s)", node->path, img->path);
  return w;
}

/* Record the image's size and the time of the write in the node. */
static void
writer_touch (struct fs_node *node, struct fs_writer *w)
{
  struct timespec now;

  clock_gettime (CLOCK_REALTIME, &now);
  tree_wrlock ();
  node->attr.st_size = (off_t) vd_image_size (w->disk->img);
  node->attr.st_mtim = now;
  node->attr.st_ctim = now;
  tree_unlock ();
  w->wrote = true;
}

/* End a use of node's writer; the last flushes and closes it.  0, or -1
 * with errno when the final flush failed (the data may not be durable). */
static int
writer_put (struct fs_node *node, struct fs_writer *w)
{
  const struct fs_provider *p = tree_provider ();
  int r = 0, e = 0;

  pthread_mutex_lock (&writer_lock);
  if (--w->users > 0) {
    pthread_mutex_unlock (&writer_lock);
    return 0;
  }
  if (vd_image_flush (w->disk->img) < 0) {
    e = errno;
    r = -1;
    vd_error ("%s: flushing %s: %s", node->path, w->disk->img->path,
              strerror (e));
  }
  pthread_mutex_lock (&node->lock);
  node->writer = NULL;
  pthread_mutex_unlock (&node->lock);
  /* The next reader opens the image again, read-only (the provider may
   * also rescan it now). */
  tree_set_disk (node, NULL, 0);
  tree_wrlock ();
  tree_changed_content (node);
  tree_unlock ();
  fs_disk_unref (w->disk);      /* closes it unless a reader still has it */
  p->close_write (node, w->token);
  pthread_mutex_unlock (&writer_lock);
  vd_debug ("%s: closed for writing", node->path);
  free (w);
  errno = e;
  return r;
}

/* Make the disk read as zeros from offset on (O_TRUNC: 0), size kept. */
static int
zero_from (struct vd_image *img, uint64_t offset)
{
  uint64_t size = vd_image_size (img);

  if (offset >= size)
    return 0;
  return vd_image_zero (img, size - offset, offset);
}

/* Set the image file's times (utimensat on a disk): ts as setattr gives
 * them, UTIME_OMIT for those not set. */
static int
set_image_times (struct vd_image *img, const struct timespec ts[2])
{
  /* A network disk has no times of its own to set: as fchown. */
  if (img->remote)
    return 0;
  /* On the file we hold open: a path may be a symlink (an LV's
   * /dev/VG/LV), whose own times nobody looks at. */
  if (futimens (img->lock_fd, ts) < 0) {
    int e = errno;
    vd_error ("%s: setting its times: %s", img->path, strerror (e));
    errno = e;
    return -1;
  }
  return 0;
}

static int staging_write (struct fs_staging *s, const char *p, size_t len,
                          off_t off);

/* Fill the overlay s with node's present bytes (an open without O_TRUNC:
 * the writer changes some of them). */
static int
overlay_fill (struct fs_node *node, struct fs_staging *s)
{
  if (node->type == FS_NODE_FILE) {
    struct fs_blob *b = tree_get_blob (node);
    int r;
    if (!b)
      return -1;
    r = staging_write (s, b->data, b->len, 0);
    fs_blob_unref (b);
    return r;
  }
  else {
    struct fs_disk *d = tree_get_disk (node, false);
    CLEANUP_FREE char *buf = malloc (COPY_CHUNK);
    uint64_t size, pos;
    int r = 0;
    if (!d || !buf) {
      fs_disk_unref (d);
      return -1;
    }
    size = vd_image_size (d->img);
    for (pos = 0; pos < size && r == 0; pos += COPY_CHUNK) {
      size_t n = size - pos < COPY_CHUNK ? size - pos : COPY_CHUNK;
      r = vd_image_pread (d->img, buf, n, pos);
      if (r == 0)
        r = staging_write (s, buf, n, pos);
    }
    fs_disk_unref (d);
    return r;
  }
}

/* A file of the tree opened for writing that is rewritten whole when
 * complete (domain.xml, snapshot.xml, a snapshot's disk): the writes go
 * to an overlay staging file, applied at close (restore.c).  Consumes
 * the caller's node reference; replies. */
static void
overlay_open (fuse_req_t req, struct fs_node *node,
              struct fuse_file_info *fi, struct fs_handle *h)
{
  const struct fuse_ctx *ctx = fuse_req_ctx (req);
  struct fs_staging *s = NULL;
  struct fs_node *dir;
  fuse_ino_t pino;
  int e = 0;

  tree_rdlock ();
  pino = node->parent_ino;
  tree_unlock ();
  dir = inode_find (pino);
  if (!dir) {
    e = ENOENT;
    goto fail;
  }
  s = staging_new (dir, node->name, 0644, ctx->uid, ctx->gid);
  inode_unref (dir);
  if (!s) {
    e = errno_or_eio ();
    goto fail;
  }
  s->overlay = true;
  if (fi->flags & O_TRUNC)
    s->dirty = true;
  else if (overlay_fill (node, s) < 0) {
    e = errno_or_eio ();
    vd_error ("%s: reading it to rewrite it: %s", node->path, strerror (e));
    goto fail;
  }
  staging_opened (s);
  h->stage = s;
  fi->fh = (uintptr_t) h;
  fi->direct_io = 1;
  inode_unref (node);
  if (fuse_reply_open (req, fi) < 0) {
    staging_closed (s);
    staging_remove (s, 0);
    staging_unref (s);
    free (h);
  }
  return;
 fail:
  if (s) {
    staging_remove (s, 0);
    staging_unref (s);
  }
  inode_unref (node);
  free (h);
  fuse_reply_err (req, e);
}

void
write_open (fuse_req_t req, struct fs_node *node, struct fuse_file_info *fi,
            struct fs_handle *h)
{
  struct fs_writer *w;
  int e;

  if ((node->type == FS_NODE_FILE
       || (node->type == FS_NODE_DISK && is_snapshot (node)))
      && writable_fs () && tree_provider ()->complete) {
    if (!may_change (req)) {
      inode_unref (node);
      free (h);
      fuse_reply_err (req, EACCES);
      return;
    }
    overlay_open (req, node, fi, h);
    return;
  }

  if (node->type == FS_NODE_STAGING) {
    struct fs_staging *s = staging_by_node (node->ino);
    if (!s || s->applied) {
      staging_unref (s);
      inode_unref (node);
      free (h);
      fuse_reply_err (req, s ? ESTALE : ENOENT);
      return;
    }
    if ((fi->flags & O_TRUNC) && ftruncate (s->fd, 0) < 0) {
      e = errno;
      staging_unref (s);
      inode_unref (node);
      free (h);
      fuse_reply_err (req, e);
      return;
    }
    staging_opened (s);
    h->stage = s;
    fi->fh = (uintptr_t) h;
    fi->direct_io = 1;
    inode_unref (node);
    if (fuse_reply_open (req, fi) < 0) {
      staging_closed (s);
      staging_unref (s);
      free (h);
    }
    return;
  }
  if (node->type != FS_NODE_DISK || !writable_fs ()) {
    inode_unref (node);
    free (h);
    fs_erofs (req);
    return;
  }
  if (!may_change (req)) {
    inode_unref (node);
    free (h);
    fuse_reply_err (req, EACCES);
    return;
  }
  w = writer_get (node);
  if (!w) {
    e = errno;
    inode_unref (node);
    free (h);
    fuse_reply_err (req, e);
    return;
  }
  if ((fi->flags & O_TRUNC) && zero_from (w->disk->img, 0) < 0) {
    e = errno;
    writer_put (node, w);
    inode_unref (node);
    free (h);
    fuse_reply_err (req, e);
    return;
  }
  if (fi->flags & O_TRUNC)
    writer_touch (node, w);
  h->writer = w;
  h->disk = fs_disk_ref (w->disk);
  h->remote = w->disk->img->remote;
  fi->fh = (uintptr_t) h;
  fi->keep_cache = 0;
  pthread_mutex_lock (&node->lock);
  node->nopen++;
  node->opened_gen = node->gen;
  pthread_mutex_unlock (&node->lock);
  if (fuse_reply_open (req, fi) < 0) {
    write_release (node, h);
    free (h);
  }
  inode_unref (node);
}

void
write_release (struct fs_node *node, struct fs_handle *h)
{
  if (h->stage) {
    staging_closed (h->stage);
    if (h->stage->overlay)
      staging_remove (h->stage, 0);   /* one per open */
    staging_unref (h->stage);
    h->stage = NULL;
  }
  if (h->writer) {
    pthread_mutex_lock (&node->lock);
    if (node->nopen > 0)
      node->nopen--;
    pthread_mutex_unlock (&node->lock);
    fs_disk_unref (h->disk);
    h->disk = NULL;
    writer_put (node, h->writer);
    h->writer = NULL;
  }
}

/* Copy the request's data into memory (it may come spliced in a pipe). */
static char *
take_data (struct fuse_bufvec *bufv, size_t *len)
{
  size_t n = fuse_buf_size (bufv);
  struct fuse_bufvec dst = FUSE_BUFVEC_INIT (n);
  char *mem = malloc (n ? n : 1);
  ssize_t got;

  if (!mem)
    return NULL;
  dst.buf[0].mem = mem;
  got = fuse_buf_copy (&dst, bufv, 0);
  if (got < 0) {
    free (mem);
    errno = -got;
    return NULL;
  }
  *len = got;
  return mem;
}

/* Write to a staging file: all-zero pieces become holes. */
static int
staging_write (struct fs_staging *s, const char *p, size_t len, off_t off)
{
  struct stat st;

  if (vd_is_zero (p, len)) {
    if (fstat (s->fd, &st) < 0)
      return -1;
    if (off + (off_t) len > st.st_size
        && ftruncate (s->fd, off + (off_t) len) < 0)
      return -1;
    if (off < st.st_size)
      fallocate (s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                 (off_t) len);  /* best effort: the file reads zeros
                                   there either way if it worked */
    else
      return 0;
    /* If punching failed, write the zeros. */
  }
  while (len > 0) {
    ssize_t w = pwrite (s->fd, p, len, off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    len -= w;
    off += w;
  }
  return 0;
}

void
fs_write_buf (fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv,
              off_t off, struct fuse_file_info *fi)
{
  struct fs_handle *h = (struct fs_handle *) (uintptr_t) fi->fh;
  CLEANUP_FREE char *mem = NULL;
  struct vd_image *img;
  struct fs_node *node;
  const char *data;
  size_t len = 0;
  uint64_t end;

  if (!h->writer && !h->stage) {
    fuse_reply_err (req, EBADF);
    return;
  }
  if (bufv->count == 1 && !(bufv->buf[0].flags & FUSE_BUF_IS_FD)
      && bufv->off == 0 && bufv->idx == 0) {
    /* The usual case (no splice): the request's own buffer, no copy. */
    data = bufv->buf[0].mem;
    len = bufv->buf[0].size;
  }
  else {
    mem = take_data (bufv, &len);
    if (!mem) {
      fuse_reply_err (req, errno_or_eio ());
      return;
    }
    data = mem;
  }
  if (off < 0) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  if (h->stage) {
    if (staging_write (h->stage, data, len, off) < 0)
      fuse_reply_err (req, errno_or_eio ());
    else {
      __atomic_store_n (&h->stage->dirty, true, __ATOMIC_RELAXED);
      fuse_reply_write (req, len);
    }
    return;
  }
  img = h->writer->disk->img;
  end = (uint64_t) off + len;
  /* Past the end: the disk grows (a copy of a bigger backup). */
  if (end > vd_image_size (img) && vd_image_resize (img, end) < 0) {
    int e = errno_or_eio ();
    vd_error ("%s: cannot grow to %" PRIu64 " bytes: %s", img->path, end,
              strerror (e));
    fuse_reply_err (req, e);
    return;
  }
  if (vd_image_pwrite (img, data, len, (uint64_t) off) < 0) {
    fuse_reply_err (req, errno_or_eio ());
    return;
  }
  node = inode_find (ino);
  if (node) {
    if (!h->writer->wrote || end > (uint64_t) node->attr.st_size)
      writer_touch (node, h->writer);
    inode_unref (node);
  }
  fuse_reply_write (req, len);
}

/* fallocate: cp punches the holes of a sparse source into its copy
 * (PUNCH_HOLE|KEEP_SIZE), others ask ZERO_RANGE: both make the range
 * zeros, released.  Plain allocation (mode 0) has nothing to do but
 * grow the disk when it reaches past its end. */
void
fs_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
              off_t length, struct fuse_file_info *fi)
{
  struct fs_handle *h = (struct fs_handle *) (uintptr_t) fi->fh;
  struct vd_image *img;
  uint64_t end, size;
  int r = 0;

  if (offset < 0 || length <= 0) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  if (h->stage) {
    r = fallocate (h->stage->fd, mode, offset, length);
    if (r == 0)
      __atomic_store_n (&h->stage->dirty, true, __ATOMIC_RELAXED);
    fuse_reply_err (req, r < 0 ? errno : 0);
    return;
  }
  if (!h->writer) {
    fuse_reply_err (req, EBADF);
    return;
  }
  img = h->writer->disk->img;
  size = vd_image_size (img);
  end = (uint64_t) offset + (uint64_t) length;
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
               | FALLOC_FL_ZERO_RANGE)) {
    fuse_reply_err (req, EOPNOTSUPP);
    return;
  }
  if (end > size && !(mode & FALLOC_FL_KEEP_SIZE)) {
    if (vd_image_resize (img, end) < 0) {
      fuse_reply_err (req, errno_or_eio ());
      return;
    }
    size = end;
  }
  if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
      && (uint64_t) offset < size)
    r = vd_image_zero (img, (end < size ? end : size) - offset,
                       (uint64_t) offset);
  fuse_reply_err (req, r < 0 ? errno_or_eio () : 0);
}

void
fs_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs_handle *h = (struct fs_handle *) (uintptr_t) fi->fh;

  if (h->writer && vd_image_flush (h->writer->disk->img) < 0) {
    fuse_reply_err (req, errno_or_eio ());
    return;
  }
  /* A file being restored is complete at close (restore.c): domain.xml
   * defines the domain here, and a bad one fails the close. */
  if (h->stage && __atomic_load_n (&h->stage->dirty, __ATOMIC_RELAXED)
      && !h->stage->applied && restore_complete (h->stage) < 0) {
    fuse_reply_err (req, errno_or_eio ());
    return;
  }
  fuse_reply_err (req, 0);
}

void
fs_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
          struct fuse_file_info *fi)
{
  struct fs_handle *h = (struct fs_handle *) (uintptr_t) fi->fh;
  int r = 0;

  if (h->writer)
    r = vd_image_flush (h->writer->disk->img);
  else if (h->stage && !h->stage->applied) {
    r = datasync ? fdatasync (h->stage->fd) : fsync (h->stage->fd);
    if (r == 0 && __atomic_load_n (&h->stage->dirty, __ATOMIC_RELAXED))
      r = restore_complete (h->stage);
  }
  fuse_reply_err (req, r < 0 ? errno_or_eio () : 0);
}

/* The times setattr asks for, as utimensat takes them (UTIME_NOW,
 * UTIME_OMIT for one not set). */
static void
setattr_times (const struct stat *attr, int to_set, struct timespec ts[2])
{
  ts[0] = (to_set & FUSE_SET_ATTR_ATIME_NOW)
    ? (struct timespec) { 0, UTIME_NOW }
    : (to_set & FUSE_SET_ATTR_ATIME) ? attr->st_atim
    : (struct timespec) { 0, UTIME_OMIT };
  ts[1] = (to_set & FUSE_SET_ATTR_MTIME_NOW)
    ? (struct timespec) { 0, UTIME_NOW }
    : (to_set & FUSE_SET_ATTR_MTIME) ? attr->st_mtim
    : (struct timespec) { 0, UTIME_OMIT };
}

/* setattr of a disk: size (truncate: zero the rest, or grow) and times;
 * mode and owner change nothing. */
static int
disk_setattr (fuse_req_t req, struct fs_node *node, struct stat *attr,
              int to_set, struct fs_handle *h)
{
  struct fs_writer *w = h ? h->writer : NULL;
  bool own = false;
  int r = 0;

  if (!(to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME
                  | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW
                  | FUSE_SET_ATTR_MTIME_NOW)))
    return 0;                   /* chmod, chown: nothing on the host */
  if (!w) {
    if (!may_change (req)) {
      errno = EACCES;
      return -1;
    }
    w = writer_get (node);
    if (!w)
      return -1;
    own = true;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    uint64_t size = (uint64_t) attr->st_size, cur = vd_image_size (w->disk->img);
    if (size > cur)
      r = vd_image_resize (w->disk->img, size);
    else
      r = zero_from (w->disk->img, size);
    if (r == 0)
      writer_touch (node, w);
  }
  if (r == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME
                           | FUSE_SET_ATTR_ATIME_NOW
                           | FUSE_SET_ATTR_MTIME_NOW))) {
    struct timespec ts[2];

    setattr_times (attr, to_set, ts);
    /* Data first, then the times: a later flush would move mtime again. */
    r = vd_image_flush (w->disk->img);
    if (r == 0)
      r = set_image_times (w->disk->img, ts);
    if (r == 0) {
      struct stat st;
      if (!w->disk->img->remote && stat (w->disk->img->path, &st) == 0) {
        tree_wrlock ();
        node->attr.st_atim = st.st_atim;
        node->attr.st_mtim = st.st_mtim;
        tree_unlock ();
      }
    }
  }
  if (own) {
    int e = errno;
    if (writer_put (node, w) < 0 && r == 0)
      r = -1;
    else
      errno = e;
  }
  return r;
}

static int
staging_setattr (struct fs_staging *s, struct stat *attr, int to_set)
{
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (ftruncate (s->fd, attr->st_size) < 0)
      return -1;
    __atomic_store_n (&s->dirty, true, __ATOMIC_RELAXED);
  }
  if (to_set & FUSE_SET_ATTR_MODE)
    s->mode = attr->st_mode & 07777;
  if (to_set & FUSE_SET_ATTR_UID)
    s->uid = attr->st_uid;
  if (to_set & FUSE_SET_ATTR_GID)
    s->gid = attr->st_gid;
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME
                | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) {
    struct timespec ts[2];

    setattr_times (attr, to_set, ts);
    if (futimens (s->fd, ts) < 0)
      return -1;
  }
  return 0;
}

void
fs_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
            struct fuse_file_info *fi)
{
  struct fs_handle *h = fi ? (struct fs_handle *) (uintptr_t) fi->fh : NULL;
  struct fs_node *node;
  struct stat st;
  int r = 0;

  if (fs_config.ro) {
    fs_erofs (req);
    return;
  }
  node = inode_find (ino);
  if (!node) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  if (h && h->stage && node->type != FS_NODE_STAGING) {
    /* An overlay (a file of the tree being rewritten, restore.c). */
    r = h->stage->applied ? (errno = ESTALE, -1)
      : staging_setattr (h->stage, attr, to_set);
  }
  else if (node->type == FS_NODE_STAGING) {
    struct fs_staging *s = h && h->stage ? h->stage : NULL;
    bool own = !s;
    if (own)
      s = staging_by_node (ino);
    if (!s || s->applied)
      r = -1, errno = s ? ESTALE : ENOENT;
    else
      r = staging_setattr (s, attr, to_set);
    if (own)
      staging_unref (s);
  }
  else if (node->type == FS_NODE_DISK) {
    if (!writable_fs ())
      r = -1, errno = EROFS;
    else if (is_snapshot (node))
      /* Times and owner (tar after extracting a snapshot's disk back)
       * change nothing; its bytes change only by writing it whole. */
      r = (to_set & FUSE_SET_ATTR_SIZE) ? (errno = EROFS, -1) : 0;
    else
      r = disk_setattr (req, node, attr, to_set, h && h->writer ? h : NULL);
  }
  else if (to_set & FUSE_SET_ATTR_SIZE)
    r = -1, errno = node->type == FS_NODE_DIR ? EISDIR : EROFS;
  /* else: directories and in-memory files: owner, mode and times asked
   * by cp -a, rsync -a, tar change nothing and succeed. */
  if (r < 0) {
    int e = errno_or_eio ();
    inode_unref (node);
    fuse_reply_err (req, e);
    return;
  }
  fill_attr (node, &st);
  inode_unref (node);
  fuse_reply_attr (req, &st, FS_ATTR_TIMEOUT);
}

/* Attributes of a staging node: its file's, or, once applied, the
 * disk's. */
void
write_staging_attr (struct fs_node *node, struct stat *st)
{
  struct fs_staging *s = staging_by_node (node->ino);
  struct stat fst;

  memset (st, 0, sizeof *st);
  st->st_ino = node->ino;
  st->st_nlink = 1;
  st->st_mode = S_IFREG | 0600;
  st->st_blksize = 4096;
  if (s && s->applied) {
    struct fs_node *d = inode_find (s->applied);
    staging_unref (s);
    if (d) {
      fill_attr (d, st);
      st->st_ino = node->ino;
      inode_unref (d);
    }
    return;
  }
  if (!s)
    return;
  if (fstat (s->fd, &fst) == 0) {
    st->st_size = fst.st_size;
    st->st_blocks = fst.st_blocks;
    st->st_atim = fst.st_atim;
    st->st_mtim = fst.st_mtim;
    st->st_ctim = fst.st_ctim;
  }
  st->st_mode = S_IFREG | s->mode;
  st->st_uid = s->uid;
  st->st_gid = s->gid;
  staging_unref (s);
}

ssize_t
write_staging_read (struct fs_handle *h, void *buf, size_t size, off_t off)
{
  ssize_t r;

  do
    r = pread (h->stage->fd, buf, size, off);
  while (r < 0 && errno == EINTR);
  return r;
}

struct fs_node *
write_lookup (struct fs_node *dir, const char *name)
{
  struct fs_staging *s = staging_find (dir->ino, name);
  struct fs_node *n = NULL;

  if (s) {
    n = inode_ref (s->node);
    staging_unref (s);
  }
  else
    n = restore_lookup (dir, name);
  return n;
}

bool
write_hidden (struct fs_node *dir, const char *name)
{
  return hidden_test (dir->ino, name);
}

/* The active disk called name in dir (a reference), or NULL. */
static struct fs_node *
active_disk (struct fs_node *dir, const char *name)
{
  struct fs_node *c = child_of (dir, name);

  if (c && (c->type != FS_NODE_DISK || is_snapshot (c))) {
    inode_unref (c);
    return NULL;
  }
  return c;
}

void
fs_create (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
           struct fuse_file_info *fi)
{
  const struct fuse_ctx *ctx = fuse_req_ctx (req);
  struct fs_node *dir, *disk;
  struct fs_staging *s;
  struct fs_handle *h;
  struct fuse_entry_param e;
  struct fs_writer *w;
  int err;

  if (!writable_fs ()) {
    fs_erofs (req);
    return;
  }
  dir = inode_find (parent);
  if (!dir) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  if (!may_change (req)) {
    inode_unref (dir);
    fuse_reply_err (req, EACCES);
    return;
  }
  if ((s = staging_find (parent, name)) != NULL) {
    staging_unref (s);
    inode_unref (dir);
    fuse_reply_err (req, EEXIST);
    return;
  }
  /* tar: the disk it unlinked comes back, written from the start. */
  disk = active_disk (dir, name);
  if (disk && !hidden_test (dir->ino, name) && tree_provider ()->complete) {
    /* The kernel took the name for free: cp -a into a directory it has
     * just made, whose domain.xml, copied first, defined the domain and
     * so brought its disks (restore.c).  The new file replaces the disk,
     * as unlink + create would, staged. */
    inode_unref (disk);
    disk = NULL;
    hidden_add (dir->ino, name);
  }
  w = NULL;
  if (disk && hidden_test (dir->ino, name)) {
    w = writer_get (disk);
    if (!w && (errno == EIO || errno == ENOENT)
        && tree_provider ()->complete) {
      /* Its image does not exist (a VM being restored): staged, the
       * image made when it is complete (restore.c). */
      inode_unref (disk);
      disk = NULL;
    }
  }
  if (disk && hidden_test (dir->ino, name)) {
    if (!w) {
      err = errno_or_eio ();
      inode_unref (disk);
      inode_unref (dir);
      fuse_reply_err (req, err);
      return;
    }
    if (zero_from (w->disk->img, 0) < 0) {
      err = errno_or_eio ();
      writer_put (disk, w);
      inode_unref (disk);
      inode_unref (dir);
      fuse_reply_err (req, err);
      return;
    }
    hidden_take (dir->ino, name);
    writer_touch (disk, w);
    h = calloc (1, sizeof *h);
    if (!h) {
      writer_put (disk, w);
      inode_unref (disk);
      inode_unref (dir);
      fuse_reply_err (req, ENOMEM);
      return;
    }
    h->writer = w;
    h->disk = fs_disk_ref (w->disk);
    h->remote = w->disk->img->remote;
    pthread_mutex_lock (&disk->lock);
    disk->nopen++;
    disk->opened_gen = disk->gen;
    pthread_mutex_unlock (&disk->lock);
    fi->fh = (uintptr_t) h;
    fi->keep_cache = 0;
    memset (&e, 0, sizeof e);
    e.ino = disk->ino;
    e.attr_timeout = FS_ATTR_TIMEOUT;
    e.entry_timeout = FS_ENTRY_TIMEOUT;
    fill_attr (disk, &e.attr);
    inode_lookup_inc (disk);
    if (fuse_reply_create (req, &e, fi) < 0) {
      inode_forget (disk->ino, 1);
      write_release (disk, h);
      free (h);
    }
    inode_unref (disk);
    inode_unref (dir);
    return;
  }
  if (disk) {
    inode_unref (disk);
    inode_unref (dir);
    fuse_reply_err (req, EEXIST);
    return;
  }
  {
    struct fs_node *other = child_of (dir, name);
    bool attached;
    if (other && other->type != FS_NODE_DIR && !hidden_test (dir->ino, name)
        && tree_provider ()->complete)
      hidden_add (dir->ino, name);      /* as for a disk, above */
    if (other && hidden_test (dir->ino, name)) {
      inode_unref (other);      /* tar: domain.xml, a snapshot's file */
      other = NULL;
    }
    tree_rdlock ();
    attached = dir->attached && dir->type == FS_NODE_DIR;
    tree_unlock ();
    attached = attached || restore_is_pending (dir);
    if (other || !attached || !restore_may_stage (dir)) {
      if (other)
        inode_unref (other);
      inode_unref (dir);
      fuse_reply_err (req, other ? EEXIST : !attached ? ENOENT : EPERM);
      return;
    }
  }
  s = staging_new (dir, name, mode, ctx->uid, ctx->gid);
  inode_unref (dir);
  if (!s) {
    fuse_reply_err (req, errno_or_eio ());
    return;
  }
  h = calloc (1, sizeof *h);
  if (!h) {
    staging_remove (s, 0);
    staging_unref (s);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  staging_opened (s);
  restore_touch (parent, name);
  s->dirty = true;              /* an empty file is a content too */
  h->stage = s;
  fi->fh = (uintptr_t) h;
  fi->direct_io = 1;
  memset (&e, 0, sizeof e);
  e.ino = s->node->ino;
  e.attr_timeout = FS_ATTR_TIMEOUT;
  e.entry_timeout = FS_ENTRY_TIMEOUT;
  write_staging_attr (s->node, &e.attr);
  inode_lookup_inc (s->node);
  if (fuse_reply_create (req, &e, fi) < 0) {
    inode_forget (e.ino, 1);
    staging_closed (s);
    staging_remove (s, 0);
    staging_unref (s);
    free (h);
  }
}

/* Make disk's bytes the staging file's: data where it has data, zeros in
 * its holes and beyond its end; grown when it is longer.  Under the
 * checks and locks of an open for writing; flushed when it returns 0. */
int
write_apply_staging (struct fs_node *disk, struct fs_staging *s)
{
  struct fs_writer *w;
  struct vd_image *img;
  struct stat st;
  CLEANUP_FREE char *buf = NULL;
  off_t pos = 0, data, hole;
  int r = -1, e = 0;

  if (fstat (s->fd, &st) < 0)
    return -1;
  buf = malloc (COPY_CHUNK);
  if (!buf)
    return -1;
  w = writer_get (disk);
  if (!w)
    return -1;
  img = w->disk->img;
  if ((uint64_t) st.st_size > vd_image_size (img)
      && vd_image_resize (img, st.st_size) < 0) {
    e = errno;
    vd_error ("%s: cannot grow to %jd bytes for %s: %s", img->path,
              (intmax_t) st.st_size, s->name, strerror (e));
    goto out;
  }
  while (pos < st.st_size) {
    data = lseek (s->fd, pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO)
      data = st.st_size;
    else if (data < 0)
      data = pos;               /* no SEEK_DATA: all data */
    if (data > pos && vd_image_zero (img, data - pos, pos) < 0)
      goto fail;
    pos = data;
    if (pos >= st.st_size)
      break;
    hole = lseek (s->fd, pos, SEEK_HOLE);
    if (hole < 0 || hole > st.st_size)
      hole = st.st_size;
    while (pos < hole) {
      size_t n = hole - pos < COPY_CHUNK ? hole - pos : COPY_CHUNK;
      ssize_t got = pread (s->fd, buf, n, pos);
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0) {
        if (got == 0)
          errno = EIO;
        goto fail;
      }
      if (vd_image_pwrite (img, buf, got, pos) < 0)
        goto fail;
      pos += got;
    }
  }
  if (zero_from (img, st.st_size) < 0 || vd_image_flush (img) < 0)
    goto fail;
  /* rsync set the times it wants on the staging file. */
  {
    struct timespec ts[2] = { st.st_atim, st.st_mtim };
    set_image_times (img, ts);
  }
  writer_touch (disk, w);
  {
    struct stat ist;
    if (!img->remote && stat (img->path, &ist) == 0) {
      tree_wrlock ();
      disk->attr.st_mtim = ist.st_mtim;
      disk->attr.st_atim = ist.st_atim;
      tree_unlock ();
    }
  }
  r = 0;
  goto out;
 fail:
  e = errno ? errno : EIO;
  vd_error ("%s: applying %s: %s", img->path, s->name, strerror (e));
 out:
  if (writer_put (disk, w) < 0 && r == 0) {
    r = -1;
    e = errno;
  }
  errno = e;
  return r;
}

void
fs_rename (fuse_req_t req, fuse_ino_t parent, const char *name,
           fuse_ino_t newparent, const char *newname, unsigned flags)
{
  struct fs_node *dir = NULL, *newdir = NULL, *disk = NULL;
  struct fs_staging *s;
  int err = 0;

  if (!writable_fs ()) {
    fs_erofs (req);
    return;
  }
  s = staging_find (parent, name);
  if (!s) {
    /* Only staging files move; the tree's names are libvirt's. */
    dir = inode_find (parent);
    if (dir) {
      struct fs_node *c = child_of (dir, name);
      err = c ? EPERM : ENOENT;
      if (c)
        inode_unref (c);
      inode_unref (dir);
    }
    else
      err = ENOENT;
    fuse_reply_err (req, err);
    return;
  }
  if (flags & RENAME_EXCHANGE) {
    err = EINVAL;
    goto out;
  }
  newdir = inode_find (newparent);
  if (!newdir) {
    err = ENOENT;
    goto out;
  }
  if (!may_change (req)) {
    err = EACCES;
    goto out;
  }
  disk = active_disk (newdir, newname);
  if (disk && tree_provider ()->complete) {
    /* Applied through restore.c, which also makes a missing image. */
    inode_unref (disk);
    disk = NULL;
  }
  if (disk) {
    if ((flags & RENAME_NOREPLACE) && !hidden_test (newparent, newname)) {
      err = EEXIST;
      goto out;
    }
    /* rsync: the staging file becomes the disk's bytes. */
    if (write_apply_staging (disk, s) < 0) {
      err = errno_or_eio ();
      goto out;
    }
    hidden_take (newparent, newname);
    staging_remove (s, disk->ino);
    /* The kernel moved the staging inode to newname: have it look the
     * name up again, to find the disk. */
    tree_notify_entry (newparent, newname);
    vd_info ("%s: restored from %s", disk->path, name);
    goto out;
  }
  {
    struct fs_node *other = child_of (newdir, newname);
    struct fs_staging *o = staging_find (newparent, newname);
    const struct fs_provider *p = tree_provider ();
    CLEANUP_FREE char *oldname = strdup (name);
    bool closed;

    if (!oldname)
      err = ENOMEM;
    else if (other && other->type == FS_NODE_DIR)
      err = EISDIR;
    else if (other && !p->complete)
      err = EPERM;              /* the tree's names are the provider's */
    else if (!other && !restore_may_stage (newdir))
      err = EXDEV;
    else if ((o || (other && !hidden_test (newparent, newname)))
             && (flags & RENAME_NOREPLACE))
      err = EEXIST;
    else if (staging_rename (s, newparent, newname) < 0)
      err = ENOMEM;
    else {
      /* rsync and sed -i rename after the last close: complete now.
       * Over a file of the tree (domain.xml ...) it is applied whole. */
      closed = __atomic_load_n (&s->nopen, __ATOMIC_RELAXED) == 0;
      if ((closed || other) && restore_complete (s) < 0) {
        err = errno_or_eio ();
        staging_rename (s, parent, oldname);    /* still there */
      }
      else if (o)
        staging_remove (o, 0);  /* replaced */
      if (!err)
        restore_touch (newparent, newname);
    }
    if (other)
      inode_unref (other);
    staging_unref (o);
  }
 out:
  if (disk)
    inode_unref (disk);
  if (newdir)
    inode_unref (newdir);
  staging_unref (s);
  fuse_reply_err (req, err);
}

void
fs_unlink (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct fs_node *dir, *c;
  struct fs_staging *s;
  int err = 0;

  if (!writable_fs ()) {
    fs_erofs (req);
    return;
  }
  s = staging_find (parent, name);
  if (s) {
    staging_remove (s, 0);
    staging_unref (s);
    fuse_reply_err (req, 0);
    return;
  }
  dir = inode_find (parent);
  if (!dir) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  c = child_of (dir, name);
  if (!c || hidden_test (parent, name))
    err = ENOENT;
  else if (c->type == FS_NODE_DIR)
    err = EISDIR;
  else if ((c->type != FS_NODE_DISK || is_snapshot (c))
           && !tree_provider ()->complete)
    err = EPERM;
  else if (!may_change (req))
    err = EACCES;
  else {
    /* tar: hide it; the file of that name created next writes it. */
    hidden_add (parent, name);
    vd_info ("%s: unlinked: hidden in this mount until a file of its name "
             "is created (nothing on the host is touched)", c->path);
  }
  if (c)
    inode_unref (c);
  inode_unref (dir);
  fuse_reply_err (req, err);
}
