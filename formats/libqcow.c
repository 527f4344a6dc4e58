/* vmdiskfs - the QCOW version 1 driver, read-only, with libqcow (libyal).
 *
 * Only legacy QCOW1 images come here: our own qcow2 driver reads versions
 * 2 and 3, so the probe takes magic "QFI\xfb" with version 1 only.
 *
 * QCOW1 header (the layout of qemu's block/qcow.c, big-endian):
 *   0 u32 magic "QFI\xfb"         4 u32 version (1)
 *   8 u64 backing_file_offset    16 u32 backing_file_size
 *  20 u32 mtime                  24 u64 size (virtual, bytes)
 *  32 u8 cluster_bits  33 u8 l2_bits  34 u16 padding
 *  36 u32 crypt_method (0 none, 1 AES)   40 u64 l1_table_offset
 * Tables: L1 of DIV_ROUND_UP(size, 2^(cluster_bits + l2_bits)) big-endian
 * u64 L2 offsets (0: unallocated); L2 tables of 2^l2_bits u64 entries: 0
 * unallocated, bit 63 set: compressed (size and offset packed below it),
 * else the file offset of an uncompressed cluster.
 *
 * Who does what.  libqcow decodes compressed clusters; it is opened on
 * the first one (it reads the whole L1 table into memory, which an image
 * without compressed clusters never needs).  The L1/L2 walk is our own, for three reasons:
 * libqcow has no allocation query (we want real holes and splice-able
 * extents); its parent files must be libqcow files (QCOW1 backing files
 * are usually raw, and QCOW1 records no backing format); and libqcow
 * 20201213 (Debian 12) misreads images whose l2_bits is not
 * cluster_bits - 3, which is every image qemu creates with a backing file
 * (cluster_bits 9, l2_bits 12).  So uncompressed clusters are read with
 * pread, unallocated ones from the backing image (any format, opened with
 * vd_image_open_chain: cycle and depth checks; zeros past its end) or as
 * zeros, and only compressed clusters through
 * libqcow_file_read_buffer_at_offset.  Every table and cluster offset is
 * validated against the file size (EIO, logged); encryption is refused
 * (ENOTSUP).
 *
 * Bounded memory (images are untrusted, the daemon runs as root): the
 * header is checked here before libqcow sees the file.  cluster_bits
 * and l2_bits outside qemu's limits, and an L1 table (DIV_ROUND_UP(size,
 * 2^(cluster_bits + l2_bits)) entries) over 32 MiB, the qcow2 driver's
 * cap, are refused with EIO and one line naming the numbers.  An L1 of
 * at most QCOW1_L1_COPY_MAX (1 MiB) is copied at open; a bigger one is
 * read per lookup (8 bytes per L1 entry a request crosses).
 *
 * Threads: the L1 table is immutable after open; L2 entries are read with
 * pread per request (no cache, no lock).  VD_OPEN_LIVE is ignored: the L1
 * copy stays as at open (a legacy format nobody runs VMs on).  A libqcow handle is not safe for
 * concurrent use, so one mutex per image serializes the libqcow calls
 * and its lazy open (compressed clusters only): fine for a legacy format.  The cached file
 * size is accessed atomically.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libqcow.h>

#include "vdformat.h"
#include "log.h"
#include "endian.h"
#include "cleanup.h"

#define QCOW1_MAGIC             "QFI\xfb"
#define QCOW1_HEADER_LEN        48
#define QCOW1_MAX_BACKING_NAME  4096
#define QCOW1_COMPRESSED        (UINT64_C (1) << 63)
/* qemu's limits for cluster_bits and l2_bits. */
#define QCOW1_MIN_CLUSTER_BITS  9
#define QCOW1_MAX_CLUSTER_BITS  16
#define QCOW1_MIN_L2_BITS       6
#define QCOW1_MAX_L2_BITS       13
/* The L1 cap (qcow2's QCOW2_MAX_L1_BYTES) and the largest L1 copied. */
#define QCOW1_MAX_L1_BYTES      (32U << 20)
#define QCOW1_L1_COPY_MAX       (1U << 20)
/* L2 entries read per pread. */
#define QCOW1_L2_BATCH          512

struct libqcow_image {
  struct vd_image img;
  int fd;
  uint64_t file_size;           /* atomic: __atomic_* only                 */
  unsigned cluster_bits;
  unsigned l2_bits;
  uint64_t *l1;                 /* host order, l1_len entries; immutable;
                                   NULL: read per lookup at l1_off         */
  uint64_t l1_len;
  uint64_t l1_off;
  bool has_backing;             /* the header names a backing file         */
  struct vd_image *backing;     /* NULL with VD_OPEN_NO_BACKING            */
  pthread_mutex_t lock;         /* protects every libqcow call on file,
                                   file, opened and open_failed            */
  libqcow_file_t *file;
  bool opened;                  /* libqcow_file_open succeeded             */
  bool open_failed;             /* it failed (logged once): EIO            */
};

enum libqcow_kind {
  LIBQCOW_UNALLOCATED,          /* backing file or zeros                   */
  LIBQCOW_DATA,                 /* uncompressed cluster inside the file    */
  LIBQCOW_DATA_SHORT,           /* uncompressed cluster crossing EOF       */
  LIBQCOW_COMPRESSED,           /* decoded by libqcow                      */
};

/* Log a libqcow error once, with its message, and free it. */
static void
libqcow_log_error (const char *path, const char *what, libqcow_error_t **err)
{
  char msg[1024];
  char *p;

  if (*err && libqcow_error_sprint (*err, msg, sizeof msg) > 0) {
    for (p = msg; *p; p++)
      if (*p == '\n' || *p == '\r')
        *p = ' ';
    vd_error ("qcow: %s: %s: %s", path, what, msg);
  }
  else
    vd_error ("qcow: %s: %s", path, what);
  if (*err)
    libqcow_error_free (err);
}

static bool
libqcow_probe (const uint8_t *buf, size_t len)
{
  return len >= 8 && memcmp (buf, QCOW1_MAGIC, 4) == 0
    && load_be32 (buf + 4) == 1;
}

static uint64_t
libqcow_file_size (struct libqcow_image *l)
{
  return __atomic_load_n (&l->file_size, __ATOMIC_RELAXED);
}

/* The file may have grown since we last looked (a running VM). */
static uint64_t
libqcow_refresh_file_size (struct libqcow_image *l)
{
  return vd_refresh_file_size (l->fd, &l->file_size);
}

/* Is [off, off + len) past the header and inside the file? */
static bool
libqcow_check_range (struct libqcow_image *l, uint64_t off, uint64_t len)
{
  uint64_t end;

  if (off < QCOW1_HEADER_LEN || ADD_OVERFLOW (off, len, &end))
    return false;
  return end <= libqcow_file_size (l) || end <= libqcow_refresh_file_size (l);
}

/* Classify one L2 entry of the cluster at guest offset guest. */
static int
libqcow_classify (struct libqcow_image *l, uint64_t entry, uint64_t guest,
                  enum libqcow_kind *kind)
{
  uint64_t csize = UINT64_C (1) << l->cluster_bits;

  if (entry == 0)
    *kind = LIBQCOW_UNALLOCATED;
  else if (entry & QCOW1_COMPRESSED)
    *kind = LIBQCOW_COMPRESSED;
  else if (entry < QCOW1_HEADER_LEN
           || (entry >= libqcow_file_size (l)
               && entry >= libqcow_refresh_file_size (l))) {
    vd_error ("qcow: %s: bad cluster offset %#" PRIx64
              " for guest offset %" PRIu64, l->img.path, entry, guest);
    errno = EIO;
    return -1;
  }
  else
    *kind = entry + csize <= libqcow_file_size (l)
      ? LIBQCOW_DATA : LIBQCOW_DATA_SHORT;
  return 0;
}

/* Find the run of guest bytes starting at offset, at most length long,
 * that is of one kind in this image (not looking at the backing file):
 * unallocated, compressed, or uncompressed data stored contiguously from
 * *phys on. */
static int
libqcow_map (struct libqcow_image *l, uint64_t offset, uint64_t length,
             enum libqcow_kind *kind, uint64_t *phys, uint64_t *run)
{
  const unsigned l2_shift = l->cluster_bits + l->l2_bits;
  const uint64_t cs = UINT64_C (1) << l->cluster_bits;
  const uint64_t l2_bytes = UINT64_C (8) << l->l2_bits;
  const uint64_t end = offset + length;
  uint64_t entries[QCOW1_L2_BATCH];
  uint64_t pos = offset;
  bool first = true;

  *phys = 0;
  while (pos < end) {
    uint64_t l1_idx = pos >> l2_shift;
    uint64_t l2_end = MIN ((l1_idx + 1) << l2_shift, end);
    uint64_t l2_off, idx;

    if (l1_idx >= l->l1_len) {          /* cannot happen: size checked */
      vd_error ("qcow: %s: guest offset %" PRIu64 " beyond the L1 table",
                l->img.path, pos);
      errno = EIO;
      return -1;
    }
    if (l->l1)
      l2_off = l->l1[l1_idx];
    else {
      if (vd_pread_full (l->fd, &l2_off, 8, l->l1_off + l1_idx * 8,
                         false) < 0) {
        vd_error ("qcow: %s: reading the L1 table: %m", l->img.path);
        errno = EIO;
        return -1;
      }
      l2_off = load_be64 (&l2_off);
    }
    if (l2_off == 0) {
      if (first)
        *kind = LIBQCOW_UNALLOCATED;
      else if (*kind != LIBQCOW_UNALLOCATED)
        break;
      first = false;
      pos = l2_end;
      continue;
    }
    if (!libqcow_check_range (l, l2_off, l2_bytes)) {
      vd_error ("qcow: %s: bad L2 table offset %#" PRIx64 " in L1 entry %"
                PRIu64, l->img.path, l2_off, l1_idx);
      errno = EIO;
      return -1;
    }

    idx = (pos >> l->cluster_bits) & ((UINT64_C (1) << l->l2_bits) - 1);
    while (pos < l2_end) {
      size_t n = DIV_ROUND_UP (l2_end - (pos & ~(cs - 1)), cs), i;

      n = MIN (n, (size_t) QCOW1_L2_BATCH);
      if (vd_pread_full (l->fd, entries, n * 8, l2_off + idx * 8,
                         false) < 0) {
        vd_error ("qcow: %s: reading L2 table at %#" PRIx64 ": %m",
                  l->img.path, l2_off);
        errno = EIO;
        return -1;
      }
      for (i = 0; i < n; i++) {
        uint64_t cluster = pos & ~(cs - 1);
        uint64_t entry = load_be64 (&entries[i]);
        enum libqcow_kind k;

        if (libqcow_classify (l, entry, cluster, &k) < 0)
          return -1;
        if (first) {
          *kind = k;
          if (k == LIBQCOW_DATA || k == LIBQCOW_DATA_SHORT)
            *phys = entry + (pos - cluster);
          first = false;
        }
        else if (k != *kind || k == LIBQCOW_DATA_SHORT
                 || (k == LIBQCOW_DATA && entry != *phys + (pos - offset)))
          goto done;
        pos = MIN (cluster + cs, end);
      }
      idx += n;
    }
  }
 done:
  *run = pos - offset;
  return 0;
}

/* Open the libqcow handle on first use; l->lock held. */
static int
libqcow_handle (struct libqcow_image *l)
{
  libqcow_error_t *err = NULL;
  const char *path = l->img.path;
  char fdpath[64];

  if (l->opened)
    return 0;
  if (l->open_failed) {
    errno = EIO;
    return -1;
  }
  l->open_failed = true;
  if (!l->file && libqcow_file_initialize (&l->file, &err) != 1) {
    libqcow_log_error (path, "libqcow_file_initialize", &err);
    errno = ENOMEM;
    return -1;
  }
  /* Open the very file we were given (checked by vd_open_checked), never
   * whatever path names now. */
  snprintf (fdpath, sizeof fdpath, "/proc/self/fd/%d", l->fd);
  if (libqcow_file_open (l->file, fdpath, LIBQCOW_OPEN_READ, &err) != 1) {
    libqcow_log_error (path, "libqcow cannot open it", &err);
    errno = EIO;
    return -1;
  }
  l->opened = true;
  l->open_failed = false;
  return 0;
}

/* Compressed clusters: libqcow decodes them, one caller at a time. */
static int
libqcow_read_compressed (struct libqcow_image *l, char *p, size_t count,
                         uint64_t offset)
{
  libqcow_error_t *err = NULL;
  int ret = 0;

  pthread_mutex_lock (&l->lock);
  if (libqcow_handle (l) < 0) {
    pthread_mutex_unlock (&l->lock);
    return -1;
  }
  while (count > 0) {
    ssize_t r = libqcow_file_read_buffer_at_offset (l->file, p, count,
                                                    (off64_t) offset, &err);
    if (r <= 0) {
      if (r < 0)
        libqcow_log_error (l->img.path, "reading a compressed cluster",
                           &err);
      else
        vd_error ("qcow: %s: short read at %" PRIu64, l->img.path, offset);
      errno = EIO;
      ret = -1;
      break;
    }
    p += r;
    count -= r;
    offset += r;
  }
  pthread_mutex_unlock (&l->lock);
  return ret;
}

/* An unallocated range: the backing file, zeros beyond its end, or zeros
 * without one. */
static int
libqcow_read_unallocated (struct libqcow_image *l, char *buf, size_t count,
                          uint64_t offset)
{
  if (l->has_backing && !l->backing) {
    vd_error ("qcow: %s: read at %" PRIu64 " needs the backing file, "
              "which was not opened", l->img.path, offset);
    errno = EIO;
    return -1;
  }
  return vd_read_backing (l->backing, buf, count, offset);
}

static int
libqcow_read (struct vd_image *img, void *buf, size_t count,
              uint64_t offset)
{
  struct libqcow_image *l = (struct libqcow_image *) img;
  char *p = buf;

  while (count > 0) {
    enum libqcow_kind kind;
    uint64_t phys, run;

    if (libqcow_map (l, offset, count, &kind, &phys, &run) < 0)
      return -1;
    switch (kind) {
    case LIBQCOW_DATA:
    case LIBQCOW_DATA_SHORT:
      if (vd_pread_full (l->fd, p, run, phys, true) < 0) {
        vd_error ("qcow: %s: read at %#" PRIx64 ": %m", img->path, phys);
        return -1;
      }
      break;
    case LIBQCOW_COMPRESSED:
      if (libqcow_read_compressed (l, p, run, offset) < 0)
        return -1;
      break;
    case LIBQCOW_UNALLOCATED:
      if (libqcow_read_unallocated (l, p, run, offset) < 0)
        return -1;
      break;
    }
    p += run;
    offset += run;
    count -= run;
  }
  return 0;
}

static int
libqcow_block_status (struct vd_image *img, uint64_t offset,
                      uint64_t length, struct vd_extent *e)
{
  struct libqcow_image *l = (struct libqcow_image *) img;
  enum libqcow_kind kind;
  uint64_t phys, run;

  if (libqcow_map (l, offset, length, &kind, &phys, &run) < 0)
    return -1;
  e->offset = offset;
  e->length = run;
  e->type = VD_EXTENT_DATA;
  e->fd = -1;
  e->phys = 0;
  switch (kind) {
  case LIBQCOW_DATA:
    e->fd = l->fd;
    e->phys = phys;
    break;
  case LIBQCOW_DATA_SHORT:      /* zero-filled past EOF: no splice */
  case LIBQCOW_COMPRESSED:
    break;
  case LIBQCOW_UNALLOCATED:
    if (l->backing && offset < l->backing->size)
      return vd_image_block_status (l->backing, offset,
                                    MIN (run, l->backing->size - offset), e);
    e->type = VD_EXTENT_HOLE;
    break;
  }
  return 0;
}

static void
libqcow_free (struct libqcow_image *l)
{
  libqcow_error_t *err = NULL;
  const char *path = l->img.path ? l->img.path : "(opening)";

  if (l->file) {
    if (l->opened && libqcow_file_close (l->file, &err) != 0)
      libqcow_log_error (path, "close", &err);
    if (libqcow_file_free (&l->file, &err) != 1)
      libqcow_log_error (path, "free", &err);
  }
  vd_image_close (l->backing);
  pthread_mutex_destroy (&l->lock);
  if (l->fd >= 0)
    close (l->fd);
  free (l->l1);
  free (l->img.path);
  free (l);
}

static void
libqcow_close (struct vd_image *img)
{
  libqcow_free ((struct libqcow_image *) img);
}

/* Open the backing file named in the header (format probed: QCOW1 records
 * none). */
static int
libqcow_open_backing (struct libqcow_image *l, const char *path,
                      const uint8_t *hdr, unsigned flags,
                      const struct vd_chain *chain)
{
  uint64_t name_off = load_be64 (hdr + 8);
  uint32_t name_len = load_be32 (hdr + 16);
  CLEANUP_FREE char *name = NULL;

  if (name_len > QCOW1_MAX_BACKING_NAME
      || !libqcow_check_range (l, name_off, name_len)) {
    vd_error ("qcow: %s: bad backing file name (offset %" PRIu64
              ", size %" PRIu32 ")", path, name_off, name_len);
    errno = EIO;
    return -1;
  }
  name = vd_read_name ("qcow", path, l->fd, name_off, name_len,
                       "backing file name");
  if (!name)
    return -1;
  l->has_backing = true;
  if (flags & VD_OPEN_NO_BACKING)
    return 0;
  l->backing = vd_open_backing ("qcow", path, name, NULL, flags, chain);
  return l->backing ? 0 : -1;
}

static struct vd_image *
libqcow_open (const char *path, int fd, unsigned flags,
              const struct vd_chain *chain)
{
  uint8_t hdr[QCOW1_HEADER_LEN];
  struct libqcow_image *l;
  uint64_t size, l1_off, i;
  uint32_t crypt;
  int64_t end;

  l = calloc (1, sizeof *l);
  if (!l) {
    close (fd);
    errno = ENOMEM;
    return NULL;
  }
  l->fd = fd;
  pthread_mutex_init (&l->lock, NULL);

  if ((end = vd_fd_size (fd)) < 0) {
    vd_error ("qcow: %s: cannot find the file size: %m", path);
    goto fail;
  }
  l->file_size = end;
  if (vd_pread_full (fd, hdr, sizeof hdr, 0, false) < 0) {
    vd_error ("qcow: %s: cannot read the header: %m", path);
    errno = EIO;
    goto fail;
  }
  if (!libqcow_probe (hdr, sizeof hdr)) {
    vd_error ("qcow: %s: not a QCOW version 1 image", path);
    errno = ENOTSUP;
    goto fail;
  }
  crypt = load_be32 (hdr + 36);
  if (crypt != 0) {
    vd_error ("qcow: %s: encrypted images are not supported "
              "(crypt_method %" PRIu32 ")", path, crypt);
    errno = ENOTSUP;
    goto fail;
  }
  size = load_be64 (hdr + 24);
  l->cluster_bits = hdr[32];
  l->l2_bits = hdr[33];
  l1_off = load_be64 (hdr + 40);
  if (l->cluster_bits < QCOW1_MIN_CLUSTER_BITS
      || l->cluster_bits > QCOW1_MAX_CLUSTER_BITS
      || l->l2_bits < QCOW1_MIN_L2_BITS || l->l2_bits > QCOW1_MAX_L2_BITS) {
    vd_error ("qcow: %s: bad cluster_bits %u or l2_bits %u", path,
              l->cluster_bits, l->l2_bits);
    errno = EIO;
    goto fail;
  }
  if (size > INT64_MAX) {
    vd_error ("qcow: %s: bad virtual size %" PRIu64, path, size);
    errno = EIO;
    goto fail;
  }
  l->img.size = size;
  /* The L1 table must lie inside the file, which bounds its allocation. */
  l->l1_len = DIV_ROUND_UP (size,
                            UINT64_C (1) << (l->cluster_bits + l->l2_bits));
  l->l1_off = l1_off;
  if (l->l1_len > QCOW1_MAX_L1_BYTES / 8) {
    vd_error ("qcow: %s: L1 table of %" PRIu64 " entries (size %" PRIu64
              ", cluster_bits %u, l2_bits %u) over the %u MiB cap", path,
              l->l1_len, size, l->cluster_bits, l->l2_bits,
              QCOW1_MAX_L1_BYTES >> 20);
    errno = EIO;
    goto fail;
  }
  if (!libqcow_check_range (l, l1_off, l->l1_len * 8)) {
    vd_error ("qcow: %s: bad L1 table (offset %#" PRIx64 ", %" PRIu64
              " entries)", path, l1_off, l->l1_len);
    errno = EIO;
    goto fail;
  }
  if (l->l1_len > 0 && l->l1_len * 8 <= QCOW1_L1_COPY_MAX) {
    l->l1 = malloc (l->l1_len * 8);
    if (!l->l1)
      goto fail;
    if (vd_pread_full (fd, l->l1, l->l1_len * 8, l1_off, false) < 0) {
      vd_error ("qcow: %s: reading the L1 table: %m", path);
      errno = EIO;
      goto fail;
    }
    for (i = 0; i < l->l1_len; i++)
      l->l1[i] = load_be64 (&l->l1[i]);
  }

  /* libqcow (compressed clusters) is opened on first use: it loads the
   * whole L1 table. */

  if (load_be32 (hdr + 16) != 0
      && libqcow_open_backing (l, path, hdr, flags, chain) < 0)
    goto fail;

  return &l->img;

 fail:
  {
    int e = errno ? errno : EIO;
    libqcow_free (l);
    errno = e;
  }
  return NULL;
}

const struct vd_format libqcow_format = {
  .name = "qcow",
  .probe = libqcow_probe,
  .open = libqcow_open,
  .close = libqcow_close,
  .read = libqcow_read,
  .block_status = libqcow_block_status,
  /* No .list_snapshots: QCOW1 has no internal snapshots. */
};
