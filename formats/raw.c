/* vmdiskfs - the raw driver: regular files and block devices (logical
 * volumes, partitions, whole disks, iSCSI LUNs).
 *
 * The guest view is the file itself.  Holes of regular files come from
 * lseek(SEEK_DATA/SEEK_HOLE); a block device is all data.  Every data
 * extent carries the fd so the FUSE layer can splice from it.
 * Writing: pwrite, zeros punched (files) or discarded and checked, else
 * BLKZEROOUT (devices), files
 * grow by ftruncate, flush is fdatasync.
 * Threads: after open nothing is mutable (format.c serializes writers
 * against readers of a writable image), so any number of threads may
 * call read and block_status at once.  A raw file written by a running
 * VM needs nothing more (no metadata): VD_OPEN_LIVE changes nothing, and
 * the size stays as at open (the owner reopens on a resize).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include "vdformat.h"
#include "log.h"
#include "cleanup.h"

struct raw_image {
  struct vd_image img;
  int fd;
  bool seek_holes;          /* regular file: SEEK_DATA/SEEK_HOLE work */
  bool blockdev;            /* a block device: BLKZEROOUT, fixed size  */
  bool no_punch;            /* the file system cannot punch holes      */
  bool no_discard;          /* the block device refused BLKDISCARD     */
};

static bool
raw_probe (const uint8_t *buf, size_t len)
{
  return true;              /* last resort: anything is raw */
}

static struct vd_image *
raw_open (const char *path, int fd, unsigned flags,
          const struct vd_chain *chain)
{
  struct raw_image *r;
  struct stat st;
  int64_t size;

  if (fstat (fd, &st) < 0) {
    vd_error ("raw: %s: fstat: %m", path);
    goto fail;
  }
  r = calloc (1, sizeof *r);
  if (!r)
    goto fail;
  r->fd = fd;
  if (!S_ISBLK (st.st_mode) && !S_ISREG (st.st_mode)) {
    vd_error ("raw: %s: not a regular file or block device", path);
    free (r);
    errno = EINVAL;
    goto fail;
  }
  if ((size = vd_fd_size (fd)) < 0) {
    vd_error ("raw: %s: cannot find the size: %m", path);
    free (r);
    goto fail;
  }
  r->img.size = size;
  r->seek_holes = S_ISREG (st.st_mode);
  r->blockdev = S_ISBLK (st.st_mode);
  if (flags & VD_OPEN_RDWR) {
    /* Zeros are found per 4 KiB (a file system block; a multiple of any
     * device's logical block) and punched or zeroed out. */
    r->img.zero_align = 4096;
  }
  return &r->img;

 fail:
  {
    int e = errno;
    close (fd);
    errno = e ? e : EIO;
  }
  return NULL;
}

static void
raw_close (struct vd_image *img)
{
  struct raw_image *r = (struct raw_image *) img;

  close (r->fd);
  free (r->img.path);
  free (r);
}

static int
raw_read (struct vd_image *img, void *buf, size_t count, uint64_t offset)
{
  struct raw_image *r = (struct raw_image *) img;

  /* The file may shrink under us: read zeros past its end. */
  if (vd_pread_full (r->fd, buf, count, offset, true) < 0) {
    vd_error ("raw: %s: read at %" PRIu64 ": %m", img->path, offset);
    return -1;
  }
  return 0;
}

static int
raw_write (struct vd_image *img, const void *buf, size_t count,
           uint64_t offset)
{
  struct raw_image *r = (struct raw_image *) img;
  const char *p = buf;

  while (count > 0) {
    ssize_t w = pwrite (r->fd, p, count, (off_t) offset);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      vd_error ("raw: %s: write at %" PRIu64 ": %m", img->path, offset);
      return -1;
    }
    p += w;
    count -= w;
    offset += w;
  }
  return 0;
}

static int
raw_flush (struct vd_image *img)
{
  struct raw_image *r = (struct raw_image *) img;

  if (fdatasync (r->fd) < 0) {
    vd_error ("raw: %s: fdatasync: %m", img->path);
    return -1;
  }
  return 0;
}

/* After a discard of [offset, offset+count) of a block device: zero out
 * (BLKZEROOUT) every 1 MiB piece that does not read as zeros. */
static int
zero_check (struct raw_image *r, uint64_t count, uint64_t offset)
{
  const size_t chunk = 1 << 20;
  char *buf = malloc (chunk);
  int ret = 0;

  if (!buf)
    return -1;
  while (count > 0) {
    size_t n = count < chunk ? count : chunk;
    uint64_t range[2] = { offset, n };

    if (vd_pread_full (r->fd, buf, n, offset, false) < 0
        || (!vd_is_zero (buf, n) && ioctl (r->fd, BLKZEROOUT, range) < 0)) {
      vd_error ("raw: %s: zeroing at %" PRIu64 ": %m", r->img.path, offset);
      ret = -1;
      break;
    }
    count -= n;
    offset += n;
  }
  free (buf);
  return ret;
}

/* Zeros: a punched hole in a file (the file system forgets the blocks,
 * so a restored image is as sparse as its backup); BLKZEROOUT on a block
 * device, which a thin LV turns into a discard and a disk into WRITE
 * SAME or its own zeroing.  Where neither works, written zeros. */
static int
raw_zero (struct vd_image *img, uint64_t count, uint64_t offset)
{
  static const char zeros[65536];
  struct raw_image *r = (struct raw_image *) img;

  if (r->blockdev) {
    uint64_t range[2] = { offset, count };

    /* A discard first where the device takes one: a thin LV then gives
     * the space back to its pool (its kernel target may offer no write
     * zeroes, Linux 6.1, so BLKZEROOUT would write zeros and provision
     * every block).  Whether discarded blocks read as zeros is the
     * device's business, so they are read back, and what is not zero
     * is zeroed out as below. */
    if (!__atomic_load_n (&r->no_discard, __ATOMIC_RELAXED)) {
      if (ioctl (r->fd, BLKDISCARD, range) == 0)
        return zero_check (r, count, offset);
      __atomic_store_n (&r->no_discard, true, __ATOMIC_RELAXED);
    }
    if (ioctl (r->fd, BLKZEROOUT, range) == 0)
      return 0;
    if (errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL) {
      vd_error ("raw: %s: BLKZEROOUT at %" PRIu64 ": %m", img->path,
                offset);
      return -1;
    }
  }
  else if (!__atomic_load_n (&r->no_punch, __ATOMIC_RELAXED)) {
    if (fallocate (r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   (off_t) offset, (off_t) count) == 0)
      return 0;
    if (errno != EOPNOTSUPP) {
      vd_error ("raw: %s: punching a hole at %" PRIu64 ": %m", img->path,
                offset);
      return -1;
    }
    __atomic_store_n (&r->no_punch, true, __ATOMIC_RELAXED);
  }
  while (count > 0) {
    size_t n = count < sizeof zeros ? count : sizeof zeros;
    if (raw_write (img, zeros, n, offset) < 0)
      return -1;
    count -= n;
    offset += n;
  }
  return 0;
}

/* Grow a file (the new part a hole); a block device cannot grow. */
static int
raw_resize (struct vd_image *img, uint64_t size)
{
  struct raw_image *r = (struct raw_image *) img;

  if (r->blockdev) {
    vd_error ("raw: %s: a block device of %" PRIu64 " bytes cannot grow "
              "to %" PRIu64, img->path, img->size, size);
    errno = EFBIG;
    return -1;
  }
  if (ftruncate (r->fd, (off_t) size) < 0) {
    vd_error ("raw: %s: growing to %" PRIu64 ": %m", img->path, size);
    return -1;
  }
  img->size = size;
  return 0;
}

static int
raw_block_status (struct vd_image *img, uint64_t offset, uint64_t length,
                  struct vd_extent *e)
{
  struct raw_image *r = (struct raw_image *) img;
  uint64_t end = offset + length;

  e->offset = offset;
  e->fd = r->fd;
  e->phys = offset;
  e->type = VD_EXTENT_DATA;
  e->length = length;
  if (r->seek_holes) {
    off_t d = lseek (r->fd, (off_t) offset, SEEK_DATA);
    if (d < 0 && errno == ENXIO)
      d = (off_t) end;                  /* only a hole up to EOF */
    else if (d < 0)
      return 0;                         /* no SEEK_DATA: all data */
    if ((uint64_t) d > offset) {
      e->type = VD_EXTENT_HOLE;
      e->fd = -1;
      e->phys = 0;
      e->length = MIN ((uint64_t) d, end) - offset;
      return 0;
    }
    d = lseek (r->fd, (off_t) offset, SEEK_HOLE);
    if (d > (off_t) offset)
      e->length = MIN ((uint64_t) d, end) - offset;
  }
  return 0;
}

const struct vd_format raw_format = {
  .name = "raw",
  .probe = raw_probe,
  .open = raw_open,
  .close = raw_close,
  .read = raw_read,
  .write = raw_write,
  .flush = raw_flush,
  .block_status = raw_block_status,
  .zero = raw_zero,
  .resize = raw_resize,
};
