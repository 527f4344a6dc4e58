/* vmdiskfs - the generic layer of the formats library.
 *
 * Probing, opening through backing chains (with cycle and depth checks),
 * and the vd_image_* wrappers that validate every request once so the
 * drivers can trust their arguments (STYLE.md: nbdkit's backend layer).
 * Stateless apart from the images themselves: safe from any thread.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "vdformat.h"
#include "safe-open.h"
#include "log.h"
#include "cleanup.h"

/* ---- Chain memory budgets (vdformat.h) ---- */

struct vd_budget {
  uint64_t limit;               /* constant                               */
  uint64_t used;                /* atomic                                 */
  unsigned refs;                /* atomic                                 */
};

static uint64_t chain_budget = VD_DEFAULT_CHAIN_BUDGET;     /* atomic */

void
vd_set_chain_budget (uint64_t bytes)
{
  __atomic_store_n (&chain_budget, bytes, __ATOMIC_RELAXED);
}

struct vd_budget *
vd_budget_new (void)
{
  struct vd_budget *b = calloc (1, sizeof *b);

  if (b) {
    b->limit = __atomic_load_n (&chain_budget, __ATOMIC_RELAXED);
    b->refs = 1;
  }
  return b;
}

struct vd_budget *
vd_budget_ref (struct vd_budget *b)
{
  if (b)
    __atomic_add_fetch (&b->refs, 1, __ATOMIC_RELAXED);
  return b;
}

void
vd_budget_unref (struct vd_budget *b)
{
  if (b && __atomic_sub_fetch (&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
    free (b);
}

bool
vd_budget_charge (struct vd_budget *b, uint64_t bytes)
{
  uint64_t used;

  if (!b)
    return true;
  used = __atomic_load_n (&b->used, __ATOMIC_RELAXED);
  do {
    if (bytes > b->limit || used > b->limit - bytes)
      return false;
  } while (!__atomic_compare_exchange_n (&b->used, &used, used + bytes,
                                         true, __ATOMIC_RELAXED,
                                         __ATOMIC_RELAXED));
  return true;
}

void
vd_budget_release (struct vd_budget *b, uint64_t bytes)
{
  if (b)
    __atomic_sub_fetch (&b->used, bytes, __ATOMIC_RELAXED);
}

/* Probe order: most specific first; raw matches everything and is last. */
static const struct vd_format *const formats[] = {
  &qcow2_format,
  &qed_format,
  &libqcow_format,
  &raw_format,
};

static const struct vd_format *
format_by_name (const char *name)
{
  size_t i;

  for (i = 0; i < sizeof formats / sizeof formats[0]; i++)
    if (strcmp (formats[i]->name, name) == 0)
      return formats[i];
  return NULL;
}

int
vd_pread_full (int fd, void *buf, size_t count, uint64_t offset,
               bool zero_fill)
{
  char *p = buf;

  while (count > 0) {
    ssize_t r = pread (fd, p, count, (off_t) offset);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      if (!zero_fill) {
        errno = EIO;
        return -1;
      }
      memset (p, 0, count);
      return 0;
    }
    p += r;
    count -= r;
    offset += r;
  }
  return 0;
}

char *
vd_resolve_relative (const char *image_path, const char *name)
{
  const char *slash;
  char *out;

  if (name[0] == '/' || (slash = strrchr (image_path, '/')) == NULL)
    return strdup (name);
  if (asprintf (&out, "%.*s/%s", (int) (slash - image_path), image_path,
                name) < 0)
    return NULL;
  return out;
}

char *
vd_read_name (const char *driver, const char *path, int fd, uint64_t off,
              uint32_t len, const char *what)
{
  char *name;

  name = malloc ((size_t) len + 1);
  if (!name)
    return NULL;
  if (vd_pread_full (fd, name, len, off, false) < 0) {
    vd_error ("%s: %s: reading the %s: %m", driver, path, what);
    free (name);
    errno = EIO;
    return NULL;
  }
  name[len] = '\0';
  if (strlen (name) != len) {
    vd_error ("%s: %s: %s contains a NUL byte", driver, path, what);
    free (name);
    errno = EIO;
    return NULL;
  }
  return name;
}

struct vd_image *
vd_open_backing (const char *driver, const char *image_path,
                 const char *name, const char *format, unsigned flags,
                 const struct vd_chain *chain)
{
  CLEANUP_FREE char *full = NULL;
  struct vd_image *img;

  full = vd_resolve_relative (image_path, name);
  if (!full)
    return NULL;
  /* Backing files are opened read-only, and without LIVE: qemu never
   * writes a backing file while the VM runs. */
  img = vd_image_open_chain (full, format,
                             flags & ~(VD_OPEN_RDWR | VD_OPEN_LIVE), chain);
  if (!img) {
    /* vd_image_open_chain logged why (STYLE.md: log once). */
    int e = errno;
    vd_debug ("%s: %s: cannot open backing file %s", driver, image_path,
              full);
    errno = e;
  }
  return img;
}

int
vd_read_backing (struct vd_image *backing, void *buf, uint64_t count,
                 uint64_t offset)
{
  uint64_t n = 0;

  if (backing && offset < backing->size) {
    n = MIN (count, backing->size - offset);
    if (vd_image_pread (backing, buf, n, offset) < 0)
      return -1;
  }
  memset ((char *) buf + n, 0, count - n);
  return 0;
}

int64_t
vd_fd_size (int fd)
{
  struct stat st;
  uint64_t bytes;

  if (fstat (fd, &st) < 0)
    return -1;
  /* A block device's st_size is 0: ask the device. */
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, &bytes) < 0)
      return -1;
    if (bytes > INT64_MAX) {
      errno = EOVERFLOW;
      return -1;
    }
    return (int64_t) bytes;
  }
  return st.st_size;
}

uint64_t
vd_refresh_file_size (int fd, uint64_t *size)
{
  int64_t end = vd_fd_size (fd);

  if (end >= 0 && (uint64_t) end > __atomic_load_n (size, __ATOMIC_RELAXED))
    __atomic_store_n (size, (uint64_t) end, __ATOMIC_RELAXED);
  return __atomic_load_n (size, __ATOMIC_RELAXED);
}

/* Open path as format (NULL: probe) below parent (NULL: a top image with
 * policy pol). */
static struct vd_image *
open_chain (const char *path, const char *format, unsigned flags,
            const struct vd_chain *parent, const struct vd_policy *pol)
{
  const struct vd_format *fmt = NULL;
  const struct vd_chain *c;
  struct vd_chain self;
  struct vd_image *img;
  struct stat st;
  uint8_t buf[4096];
  mode_t modes;
  ssize_t n;
  int fd;

  if (format && (fmt = format_by_name (format)) == NULL) {
    vd_error ("%s: unsupported format \"%s\"", path, format);
    errno = ENOTSUP;
    return NULL;
  }

  /* A backing file's name comes from the image above it: untrusted. */
  if (parent)
    pol = parent->policy;
  fd = vd_open_checked (path, flags, pol, parent ? parent->depth + 1 : 0,
                        parent ? parent->path : NULL, "backing file", &st);
  if (fd < 0)
    return NULL;
  self.uid = parent ? parent->uid : st.st_uid;
  self.gid = parent ? parent->gid : st.st_gid;
  modes = vd_read_bits (&st, self.uid, self.gid);
  self.next = parent;
  self.dev = st.st_dev;
  self.ino = st.st_ino;
  self.depth = parent ? parent->depth + 1 : 0;
  self.path = path;
  self.policy = pol;
  self.modes = &modes;
  self.flags = flags;
  if (self.depth >= VD_MAX_CHAIN_DEPTH) {
    vd_error ("%s: backing chain deeper than %d images", path,
              VD_MAX_CHAIN_DEPTH);
    close (fd);
    errno = ELOOP;
    return NULL;
  }
  for (c = parent; c; c = c->next)
    if (c->dev == st.st_dev && c->ino == st.st_ino) {
      vd_error ("%s: cyclic backing chain", path);
      close (fd);
      errno = ELOOP;
      return NULL;
    }

  if (!fmt) {
    size_t i;

    do
      n = pread (fd, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      int e = errno;
      vd_error ("%s: read: %m", path);
      close (fd);
      errno = e;
      return NULL;
    }
    for (i = 0; i < sizeof formats / sizeof formats[0]; i++)
      if (formats[i]->probe (buf, n)) {
        fmt = formats[i];
        break;
      }
  }
  /* A top image starts a budget (NULL when out of memory: unlimited);
   * the images that charge it keep references. */
  self.budget = parent ? parent->budget : vd_budget_new ();
  img = fmt->open (path, fd, flags, &self);
  if (!parent)
    vd_budget_unref (self.budget);
  if (img && (flags & VD_OPEN_RDWR) && !fmt->write) {
    vd_error ("%s: %s images cannot be written", path, fmt->name);
    fmt->close (img);
    errno = EROFS;
    return NULL;
  }
  if (img && (flags & VD_OPEN_RDWR)) {
    if ((errno = pthread_rwlock_init (&img->rw, NULL)) != 0) {
      fmt->close (img);
      return NULL;
    }
    img->rw_init = true;
    img->lock_fd = fd;          /* the driver keeps it open */
  }
  if (img) {
    img->fmt = fmt;
    img->flags = flags;
    /* Backing and data files opened by fmt->open ANDed theirs in. */
    img->read_mode = modes;
    img->dev = st.st_dev;
    img->ino = st.st_ino;
    img->uid = st.st_uid;
    img->gid = st.st_gid;
    if (parent)
      *parent->modes &= modes;
    if ((!img->path && (img->path = strdup (path)) == NULL)
        || (!parent && pol && (img->policy = vd_policy_dup (pol)) == NULL)) {
      fmt->close (img);
      errno = ENOMEM;
      return NULL;
    }
  }
  return img;
}

mode_t
vd_read_bits (const struct stat *st, uid_t uid, gid_t gid)
{
  mode_t m = st->st_mode, o = m & 0004;

  return o | (st->st_gid == gid ? m & 0040 : o << 3)
    | (st->st_uid == uid ? m & 0400 : o << 6);
}

struct vd_image *
vd_image_open_chain (const char *path, const char *format, unsigned flags,
                     const struct vd_chain *parent)
{
  return open_chain (path, format, flags, parent, NULL);
}

struct vd_image *
vd_image_open_policy (const char *path, const char *format, unsigned flags,
                      const struct vd_policy *policy)
{
  return open_chain (path, format, flags, NULL, policy);
}

struct vd_image *
vd_image_open (const char *path, unsigned flags)
{
  return vd_image_open_chain (path, NULL, flags, NULL);
}

void
vd_image_close (struct vd_image *img)
{
  if (img) {
    struct vd_policy *pol = img->policy;

    /* Nobody else uses the image while it is closed. */
    if (img->rw_init)
      pthread_rwlock_destroy (&img->rw);
    img->fmt->close (img);
    vd_policy_free (pol);
  }
}

const char *
vd_image_format_name (const struct vd_image *img)
{
  return img->fmt->name;
}

uint64_t
vd_image_size (const struct vd_image *img)
{
  return img->size;
}

/* Unlock img->rw keeping errno (pthread calls may clobber it). */
static void
rw_unlock (struct vd_image *img)
{
  int e = errno;

  pthread_rwlock_unlock (&img->rw);
  errno = e;
}

static int
check_range (const struct vd_image *img, uint64_t count, uint64_t offset)
{
  uint64_t end;

  if (ADD_OVERFLOW (offset, count, &end) || end > img->size) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}

int
vd_image_pread (struct vd_image *img, void *buf, size_t count,
                uint64_t offset)
{
  if (check_range (img, count, offset) < 0)
    return -1;
  if (count == 0)
    return 0;
  if (img->rw_init) {
    int r;

    pthread_rwlock_rdlock (&img->rw);
    r = img->fmt->read (img, buf, count, offset);
    rw_unlock (img);
    return r;
  }
  return img->fmt->read (img, buf, count, offset);
}

int
vd_image_block_status (struct vd_image *img, uint64_t offset,
                       uint64_t length, struct vd_extent *e)
{
  if (length == 0 || check_range (img, length, offset) < 0) {
    errno = EINVAL;
    return -1;
  }
  if (!img->fmt->block_status) {
    e->offset = offset;
    e->length = length;
    e->type = VD_EXTENT_DATA;
    e->fd = -1;
    e->phys = 0;
    return 0;
  }
  if (img->rw_init) {
    int r;

    pthread_rwlock_rdlock (&img->rw);
    r = img->fmt->block_status (img, offset, length, e);
    rw_unlock (img);
    if (r < 0)
      return -1;
  }
  else if (img->fmt->block_status (img, offset, length, e) < 0)
    return -1;
  /* Trust, but make sure a driver bug cannot loop the caller forever. */
  if (e->offset != offset || e->length == 0 || e->length > length) {
    vd_error ("%s: %s driver returned a bad extent", img->path,
              img->fmt->name);
    errno = EIO;
    return -1;
  }
  return 0;
}

int
vd_image_allocated (struct vd_image *img, uint64_t *bytes)
{
  bool exact;

  /* Unbounded: every extent is counted (exact is always true). */
  return vd_image_allocated_bounded (img, UINT64_MAX, bytes, &exact);
}

int
vd_image_list_snapshots (struct vd_image *img, struct vd_snapshot **snaps,
                         size_t *n)
{
  if (!img->fmt->list_snapshots) {
    *snaps = NULL;
    *n = 0;
    return 0;
  }
  return img->fmt->list_snapshots (img, snaps, n);
}

void
vd_snapshots_free (struct vd_snapshot *snaps, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    free (snaps[i].id);
    free (snaps[i].name);
  }
  free (snaps);
}

struct vd_image *
vd_image_open_snapshot (struct vd_image *img, const char *id_or_name)
{
  struct vd_image *s;

  if (!img->fmt->open_snapshot) {
    errno = ENOENT;
    return NULL;
  }
  s = img->fmt->open_snapshot (img, id_or_name);
  if (s) {
    s->fmt = img->fmt;
    s->flags = img->flags & ~(VD_OPEN_RDWR | VD_OPEN_LIVE);
    /* The driver set the bits of the files the snapshot reopened (0 if
     * it did not: refused); those of the image it comes from too. */
    s->read_mode &= img->read_mode;
    s->dev = img->dev;
    s->ino = img->ino;
    s->uid = img->uid;
    s->gid = img->gid;
    if (img->policy && (s->policy = vd_policy_dup (img->policy)) == NULL) {
      vd_image_close (s);
      errno = ENOMEM;
      return NULL;
    }
  }
  return s;
}

/* vd_image_allocated with at most max_calls block_status calls, so that
 * a crafted image (2^40 alternating zero and unallocated clusters) cannot
 * stall the caller.  When the walk reaches the end, *exact is true and
 * *bytes the sum of DATA extents.  When the budget runs out at guest
 * offset pos, *exact is false and *bytes an estimate that never claims
 * "no data" for a range it did not see: the DATA bytes counted before
 * pos, plus, for the rest, the image file's own allocated size (what
 * stat reports in st_blocks; backing files are not counted), at least
 * 512 bytes and at most the unseen rest (size - pos). */
int
vd_image_allocated_bounded (struct vd_image *img, uint64_t max_calls,
                            uint64_t *bytes, bool *exact)
{
  uint64_t off = 0, total = 0, calls = 0, rest, host = 0;
  struct vd_extent e;
  struct stat st;

  while (off < img->size) {
    if (calls++ == max_calls)
      break;
    if (vd_image_block_status (img, off, img->size - off, &e) < 0)
      return -1;
    if (e.type == VD_EXTENT_DATA)
      total += e.length;
    off += e.length;
  }
  *exact = off >= img->size;
  if (!*exact) {
    rest = img->size - off;
    if (vd_stat_checked (img->path, NULL, &st) == 0 && st.st_blocks > 0)
      host = (uint64_t) st.st_blocks * 512;
    if (host < 512)
      host = 512;
    total += host < rest ? host : rest;
  }
  *bytes = total;
  return 0;
}

/* ---- Writing (vdformat.h) ---- */

bool
vd_is_zero (const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t i;

  /* Check 16 bytes by hand, then compare the buffer with itself shifted
   * by 16: memcmp runs at memory speed, and a buffer equal to itself
   * shifted whose first 16 bytes are zero is all zeros. */
  for (i = 0; i < len && i < 16; i++)
    if (p[i])
      return false;
  return len <= 16 || memcmp (p, p + 16, len - 16) == 0;
}

bool
vd_image_writable (const struct vd_image *img)
{
  return img->rw_init;
}

static int
check_write (struct vd_image *img, uint64_t count, uint64_t offset)
{
  if (!img->rw_init) {
    errno = EBADF;
    return -1;
  }
  return check_range (img, count, offset);
}

/* Zeros over part of one aligned block [offset, offset+count): if the
 * rest of the block reads as zeros too, the whole block is zeroed with
 * the driver's zero op (released), else the zeros are written as data.
 * So a tool writing 4 KiB pieces of zeros (rsync --inplace) over a
 * 64 KiB cluster releases it once its last piece lands. */
static int
zero_partial (struct vd_image *img, uint64_t count, uint64_t offset)
{
  static const char zeros[65536];
  uint64_t a = img->zero_align, b = offset & ~(a - 1), bend = b + a;
  char *blk;
  int r;

  if (bend > img->size)
    bend = img->size;
  blk = malloc (bend - b);
  if (blk
      && img->fmt->read (img, blk, offset - b, b) == 0
      && img->fmt->read (img, blk + (offset + count - b),
                         bend - (offset + count), offset + count) == 0
      && vd_is_zero (blk, offset - b)
      && vd_is_zero (blk + (offset + count - b), bend - (offset + count))) {
    free (blk);
    return img->fmt->zero (img, bend - b, b);
  }
  free (blk);
  while (count > 0) {
    size_t n = count < sizeof zeros ? count : sizeof zeros;
    if ((r = img->fmt->write (img, zeros, n, offset)) < 0)
      return r;
    count -= n;
    offset += n;
  }
  return 0;
}

/* Zero [offset, offset+count) with the lock held: the driver's zero op
 * for the aligned middle, written zeros for partial blocks at the
 * edges. */
static int
zero_locked (struct vd_image *img, uint64_t count, uint64_t offset)
{
  static const char zeros[65536];
  uint64_t a = img->zero_align, end = offset + count, lo, hi;

  if (count == 0)
    return 0;
  if (!img->fmt->zero || a == 0) {
    lo = hi = end;
  }
  else {
    lo = (offset + a - 1) & ~(a - 1);
    hi = end == img->size ? end : end & ~(a - 1);
    if (lo > hi)
      lo = hi = end;
  }
  if (lo == end && hi == end && img->fmt->zero && a) {
    /* Within one block (or two partial ones). */
    uint64_t mid = (offset & ~(a - 1)) + a;
    if (mid >= end)
      return zero_partial (img, count, offset);
    if (zero_partial (img, mid - offset, offset) < 0)
      return -1;
    return zero_partial (img, end - mid, mid);
  }
  /* Head and tail: partial blocks. */
  if (offset < lo) {
    if (img->fmt->zero && a) {
      if (zero_partial (img, lo - offset, offset) < 0)
        return -1;
      offset = lo;
    }
    while (offset < lo) {
      size_t n = lo - offset < sizeof zeros ? lo - offset : sizeof zeros;
      if (img->fmt->write (img, zeros, n, offset) < 0)
        return -1;
      offset += n;
    }
  }
  if (lo < hi && img->fmt->zero (img, hi - lo, lo) < 0)
    return -1;
  offset = hi > lo ? hi : offset;
  if (offset < end && img->fmt->zero && a)
    return zero_partial (img, end - offset, offset);
  while (offset < end) {
    size_t n = end - offset < sizeof zeros ? end - offset : sizeof zeros;
    if (img->fmt->write (img, zeros, n, offset) < 0)
      return -1;
    offset += n;
  }
  return 0;
}

int
vd_image_zero (struct vd_image *img, uint64_t count, uint64_t offset)
{
  int r;

  if (check_write (img, count, offset) < 0)
    return -1;
  pthread_rwlock_wrlock (&img->rw);
  r = zero_locked (img, count, offset);
  rw_unlock (img);
  return r;
}

int
vd_image_pwrite (struct vd_image *img, const void *buf, size_t count,
                 uint64_t offset)
{
  const char *p = buf;
  uint64_t a = img->zero_align, pos = offset, end = offset + count;
  uint64_t run = offset;        /* start of the data not yet written */
  int r = 0;

  if (check_write (img, count, offset) < 0)
    return -1;
  if (count == 0)
    return 0;
  pthread_rwlock_wrlock (&img->rw);
  if (!img->fmt->zero || a == 0) {
    r = img->fmt->write (img, buf, count, offset);
    goto out;
  }
  /* Walk the aligned blocks; each all-zero one (or the image's partial
   * last block, all zero) is zeroed, runs of others written at once. */
  pos = (offset + a - 1) & ~(a - 1);
  if (pos > end)
    pos = end;
  /* A partial first block of zeros: released if the rest reads zeros. */
  if (pos > offset && vd_is_zero (p, pos - offset)) {
    if ((r = zero_partial (img, pos - offset, offset)) < 0)
      goto out;
    run = pos;
  }
  while (pos < end) {
    uint64_t bend = pos + a;
    uint64_t zend = pos;

    if (bend > end) {
      if (end != img->size)
        break;                  /* a partial block: data */
      bend = end;
    }
    /* Extend over consecutive zero blocks. */
    while (zend < end) {
      uint64_t e2 = zend + a > end ? end : zend + a;
      if (e2 - zend < a && e2 != img->size)
        break;
      if (!vd_is_zero (p + (zend - offset), e2 - zend))
        break;
      zend = e2;
    }
    if (zend == pos) {
      pos = bend;
      continue;
    }
    if (run < pos
        && (r = img->fmt->write (img, p + (run - offset), pos - run,
                                 run)) < 0)
      goto out;
    if ((r = img->fmt->zero (img, zend - pos, pos)) < 0)
      goto out;
    run = pos = zend;
  }
  /* The data not yet written; a partial last block of zeros goes as the
   * first one did. */
  if (run < end) {
    uint64_t tail = end & ~(a - 1);
    if (tail > run && tail < end && end != img->size
        && vd_is_zero (p + (tail - offset), end - tail)) {
      if ((r = img->fmt->write (img, p + (run - offset), tail - run,
                                run)) < 0)
        goto out;
      r = zero_partial (img, end - tail, tail);
    }
    else if (tail <= run && end != img->size
             && (run & (a - 1)) == 0 && vd_is_zero (p + (run - offset),
                                                   end - run))
      r = zero_partial (img, end - run, run);
    else
      r = img->fmt->write (img, p + (run - offset), end - run, run);
  }
 out:
  rw_unlock (img);
  return r;
}

int
vd_image_flush (struct vd_image *img)
{
  int r = 0;

  if (!img->rw_init) {
    errno = EBADF;
    return -1;
  }
  pthread_rwlock_wrlock (&img->rw);
  if (img->fmt->flush)
    r = img->fmt->flush (img);
  rw_unlock (img);
  return r;
}

int
vd_image_resize (struct vd_image *img, uint64_t size)
{
  int r;

  if (!img->rw_init) {
    errno = EBADF;
    return -1;
  }
  if (size == img->size)
    return 0;
  if (size < img->size) {
    errno = EINVAL;
    return -1;
  }
  if (!img->fmt->resize) {
    errno = EFBIG;
    return -1;
  }
  pthread_rwlock_wrlock (&img->rw);
  /* As qemu does: the resize permission, unshared, while resizing. */
  {
    char holder[128];

    if (vd_qemu_lock (img->lock_fd, VD_LOCK_WRITE | VD_LOCK_RESIZE, holder,
                      sizeof holder) < 0) {
      if (errno == EBUSY)
        vd_error ("%s: cannot grow: %s holds it", img->path, holder);
      rw_unlock (img);
      return -1;
    }
  }
  r = img->fmt->resize (img, size);
  vd_qemu_unlock_resize (img->lock_fd);
  rw_unlock (img);
  return r;
}

/* Date and clock fields a snapshot table can hold (qcow2: u32 seconds,
 * nanoseconds below one second). */
static int
check_times (const struct vd_snapshot *t)
{
  if (t && (t->date_sec < 0 || t->date_sec > (int64_t) UINT32_MAX
            || t->date_nsec >= 1000000000U)) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}

int
vd_image_snapshot_import (struct vd_image *img, const char *name, int fd,
                          uint64_t size, const struct vd_snapshot *t)
{
  struct stat st;
  int r;

  if (!img->rw_init) {
    errno = EBADF;
    return -1;
  }
  if (!img->fmt->snapshot_import) {
    errno = ENOTSUP;
    return -1;
  }
  /* Sizes as qemu keeps them: whole sectors. */
  if (!name || !*name || size % 512 != 0 || size > INT64_MAX
      || check_times (t) < 0) {
    errno = EINVAL;
    return -1;
  }
  if (fstat (fd, &st) < 0)
    return -1;
  if (!S_ISREG (st.st_mode)) {
    errno = EINVAL;
    return -1;
  }
  pthread_rwlock_wrlock (&img->rw);
  r = img->fmt->snapshot_import (img, name, fd, size, t);
  rw_unlock (img);
  return r;
}

int
vd_image_snapshot_set_times (struct vd_image *img, const char *name,
                             const struct vd_snapshot *t)
{
  int r;

  if (!img->rw_init) {
    errno = EBADF;
    return -1;
  }
  if (!img->fmt->snapshot_set_times) {
    errno = ENOTSUP;
    return -1;
  }
  if (!name || !*name || !t || check_times (t) < 0) {
    errno = EINVAL;
    return -1;
  }
  pthread_rwlock_wrlock (&img->rw);
  r = img->fmt->snapshot_set_times (img, name, t);
  rw_unlock (img);
  return r;
}
