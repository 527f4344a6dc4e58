/* vmdiskfs - the QED driver (QEMU Enhanced Disk): reading and writing.
 *
 * Written from the QED specification (qemu's docs/interop/qed_spec.txt,
 * since 2022 qed_spec.rst; the same text as the "QED/Specification" wiki
 * page); no code taken from qemu.  Section names below refer to it.
 *
 * A QED image is a sequence of clusters: the header (one or more
 * clusters), an L1 table, L2 tables and data clusters.  A guest offset
 * splits into L1 index, L2 index and byte offset ("Logical offset
 * translation").  An L2 entry of 0 is unallocated (read the backing file,
 * or zeros), 1 is a zero cluster (zeros, never the backing file), anything
 * else is the file offset of a data cluster.
 *
 * Everything read from disk is validated before use: header fields, table
 * and cluster offsets (aligned, past the header, inside the file), the
 * backing file name.  Corrupt metadata gives EIO after one log line; no
 * read ever leaves the file.  The file size is refreshed with fstat when
 * an offset looks past its end, because the image of a running VM grows.
 *
 * Threads: read and block_status run concurrently.  The L1 table is read
 * at open and changes only under a writer (format.c's img->rw keeps
 * readers out meanwhile).  L2 entries are cached in 4 KiB chunks in a
 * direct-mapped cache of QED_CACHE_SLOTS slots; each slot has its own
 * mutex, held while the slot is looked up or refilled (one 4 KiB pread),
 * never across other I/O.  The cached file size is accessed atomically.
 * The backing image is thread-safe on its own.  Caches are not
 * invalidated, so an image written while open (running VM) reads stale
 * unless opened with VD_OPEN_LIVE: then neither the L1 copy nor the L2
 * cache is used, and every lookup preads the L1 entry and the L2 entries
 * it needs (validated as always).  QED tables never move (no snapshots,
 * no copy-on-write of tables; the L1 table has a fixed place and size),
 * and qemu writes a data cluster before the L2 entry that points to it
 * and a new L2 table before its L1 entry, so fresh entries give a
 * crash-consistent view without any retry.
 *
 * Writing (VD_OPEN_RDWR; format.c serializes writers against readers, so
 * the write side needs no lock of its own; see "The write side" below
 * for the on-disk ordering and the need-check flag).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "vdformat.h"
#include "log.h"
#include "endian.h"
#include "cleanup.h"

/* Header ("Header"), all fields little-endian:
 *   0  u32 magic "QED\0"           4  u32 cluster_size (bytes)
 *   8  u32 table_size (clusters)  12  u32 header_size (clusters)
 *  16  u64 features               24  u64 compat_features
 *  32  u64 autoclear_features     40  u64 l1_table_offset (bytes)
 *  48  u64 image_size (bytes)     56  u32 backing_filename_offset
 *  60  u32 backing_filename_size
 */
#define QED_HEADER_LEN          64
#define QED_MAGIC               "QED\0"

/* "Feature bits". */
#define QED_F_BACKING_FILE      UINT64_C (0x1)
#define QED_F_NEED_CHECK        UINT64_C (0x2)
#define QED_F_BACKING_NO_PROBE  UINT64_C (0x4)
#define QED_F_KNOWN \
  (QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_NO_PROBE)

/* "Field descriptions" limits. */
#define QED_MIN_CLUSTER_BITS    12
#define QED_MAX_CLUSTER_BITS    26
#define QED_MAX_TABLE_SIZE      16

/* "Data cluster offsets": special values. */
#define QED_ENTRY_UNALLOCATED   0
#define QED_ENTRY_ZERO          1

/* Our own limit on the backing file name length. */
#define QED_MAX_BACKING_NAME    4096

/* L2 cache: chunks of 4 KiB (512 entries), direct-mapped. */
#define QED_CHUNK_BYTES         4096
#define QED_CHUNK_ENTRIES       (QED_CHUNK_BYTES / 8)
#define QED_CACHE_SLOTS         64

struct qed_slot {
  pthread_mutex_t lock;
  uint64_t tag;                       /* file offset of the chunk, 0 =
                                         empty; protected by lock       */
  uint64_t entries[QED_CHUNK_ENTRIES]; /* host order; protected by lock */
};

struct qed_image {
  struct vd_image img;
  int fd;
  uint64_t cluster_size;
  unsigned cluster_bits;
  unsigned table_bits;                /* log2 of entries per table      */
  uint64_t table_bytes;               /* table_size * cluster_size      */
  uint64_t header_bytes;              /* header_size * cluster_size     */
  uint64_t file_size;                 /* atomic: __atomic_* only        */
  uint64_t *l1;                       /* host order, l1_len entries     */
  uint64_t l1_len;
  bool has_backing;                   /* header names a backing file    */
  struct vd_image *backing;           /* NULL with VD_OPEN_NO_BACKING   */
  struct qed_slot *cache;             /* QED_CACHE_SLOTS slots          */
  bool live;                          /* VD_OPEN_LIVE: l1 and cache
                                         unused, tables read afresh     */
  uint64_t l1_off;                    /* file offset of the L1 table    */
  /* VD_OPEN_RDWR only (writers are serialized by img.rw): */
  bool rdwr;
  uint64_t features;                  /* the header's, as on disk       */
  bool dirty;                         /* QED_F_NEED_CHECK set on disk   */
  uint64_t alloc_end;                 /* next free cluster: the end of
                                         the file, rounded up           */
  char *bounce;                       /* QED_BOUNCE bytes, lazily       */
  bool no_punch;                      /* no FALLOC_FL_PUNCH_HOLE here   */
};

enum qed_kind {
  QED_UNALLOCATED,                    /* backing file or zeros          */
  QED_ZERO,                           /* zero cluster                   */
  QED_DATA,                           /* data cluster inside the file   */
  QED_DATA_SHORT,                     /* data cluster crossing EOF      */
};

static bool
qed_probe (const uint8_t *buf, size_t len)
{
  return len >= 4 && memcmp (buf, QED_MAGIC, 4) == 0;
}

static uint64_t
qed_file_size (struct qed_image *q)
{
  return __atomic_load_n (&q->file_size, __ATOMIC_RELAXED);
}

/* The file may have grown since we last looked (a running VM). */
static uint64_t
qed_refresh_file_size (struct qed_image *q)
{
  return vd_refresh_file_size (q->fd, &q->file_size);
}

/* Is [off, off + len) a valid place for a table or cluster: aligned, past
 * the header, and (with the file size rounded up to a whole cluster, as
 * the last cluster may be short) inside the file? */
static bool
qed_check_range (struct qed_image *q, uint64_t off, uint64_t len)
{
  uint64_t end, fsize;

  if (!IS_ALIGNED (off, q->cluster_size) || off < q->header_bytes
      || ADD_OVERFLOW (off, len, &end))
    return false;
  fsize = qed_file_size (q);
  if (end > ROUND_UP (fsize, q->cluster_size))
    fsize = qed_refresh_file_size (q);
  return end <= ROUND_UP (fsize, q->cluster_size);
}

/* Copy L2 entries [idx, idx + n) of the table at l2_off into out, with n
 * no more than what is left in idx's 4 KiB chunk (the caller clamps). */
static int
qed_l2_entries (struct qed_image *q, uint64_t l2_off, uint64_t idx,
                uint64_t *out, size_t n)
{
  uint64_t chunk_off = l2_off + (idx * 8 & ~(uint64_t) (QED_CHUNK_BYTES - 1));
  size_t first = idx % QED_CHUNK_ENTRIES;
  struct qed_slot *s =
    &q->cache[(chunk_off / QED_CHUNK_BYTES) % QED_CACHE_SLOTS];
  int ret = 0;
  size_t i;

  if (q->live) {
    /* Same bounds as a chunk: within the table, which is in the file
     * (rounded up to a cluster, hence the zero fill). */
    if (vd_pread_full (q->fd, out, n * 8, l2_off + idx * 8, true) < 0) {
      vd_error ("qed: %s: reading L2 table at %#" PRIx64 ": %m",
                q->img.path, l2_off);
      return -1;
    }
    for (i = 0; i < n; i++)
      out[i] = load_le64 (&out[i]);
    return 0;
  }

  pthread_mutex_lock (&s->lock);
  if (s->tag != chunk_off) {
    s->tag = 0;
    /* The whole table was checked to lie inside the file, rounded up to a
     * cluster: a short read here only means a short last cluster. */
    if (vd_pread_full (q->fd, s->entries, QED_CHUNK_BYTES, chunk_off,
                       true) < 0) {
      vd_error ("qed: %s: reading L2 table at %#" PRIx64 ": %m",
                q->img.path, l2_off);
      ret = -1;
      goto out;
    }
    for (i = 0; i < QED_CHUNK_ENTRIES; i++)
      s->entries[i] = load_le64 (&s->entries[i]);
    s->tag = chunk_off;
  }
  memcpy (out, &s->entries[first], n * sizeof *out);
 out:
  pthread_mutex_unlock (&s->lock);
  return ret;
}

/* Classify one L2 entry of the cluster at guest offset guest. */
static int
qed_classify (struct qed_image *q, uint64_t entry, uint64_t guest,
              enum qed_kind *kind)
{
  uint64_t end;

  if (entry == QED_ENTRY_UNALLOCATED) {
    *kind = QED_UNALLOCATED;
    return 0;
  }
  if (entry == QED_ENTRY_ZERO) {
    *kind = QED_ZERO;
    return 0;
  }
  if (!IS_ALIGNED (entry, q->cluster_size) || entry < q->header_bytes
      || ADD_OVERFLOW (entry, q->cluster_size, &end)) {
    vd_error ("qed: %s: bad data cluster offset %#" PRIx64
              " for guest offset %" PRIu64, q->img.path, entry, guest);
    errno = EIO;
    return -1;
  }
  if (entry >= qed_file_size (q) && entry >= qed_refresh_file_size (q)) {
    vd_error ("qed: %s: data cluster offset %#" PRIx64
              " for guest offset %" PRIu64 " beyond the end of the file",
              q->img.path, entry, guest);
    errno = EIO;
    return -1;
  }
  *kind = end <= qed_file_size (q) ? QED_DATA : QED_DATA_SHORT;
  return 0;
}

/* Find the run of guest bytes starting at offset, at most length long,
 * that is of one kind in this image (not looking at the backing file):
 * unallocated, zero, or data stored contiguously from *phys on. */
static int
qed_map (struct qed_image *q, uint64_t offset, uint64_t length,
         enum qed_kind *kind, uint64_t *phys, uint64_t *run)
{
  const unsigned l2_shift = q->cluster_bits + q->table_bits;
  const uint64_t cs = q->cluster_size;
  const uint64_t end = offset + length;
  uint64_t entries[QED_CHUNK_ENTRIES];
  uint64_t pos = offset;
  bool first = true;

  *phys = 0;
  while (pos < end) {
    uint64_t l1_idx = pos >> l2_shift;
    uint64_t l2_end = MIN ((l1_idx + 1) << l2_shift, end);
    uint64_t l2_off, idx;

    if (l1_idx >= q->l1_len) {          /* cannot happen: size checked */
      vd_error ("qed: %s: guest offset %" PRIu64 " beyond the L1 table",
                q->img.path, pos);
      errno = EIO;
      return -1;
    }
    if (q->live) {
      /* The L1 table was checked at open to lie inside the file. */
      if (vd_pread_full (q->fd, &l2_off, 8, q->l1_off + l1_idx * 8,
                         true) < 0) {
        vd_error ("qed: %s: reading the L1 table: %m", q->img.path);
        return -1;
      }
      l2_off = load_le64 (&l2_off);
    }
    else
      l2_off = q->l1[l1_idx];
    if (l2_off == 0) {
      if (first)
        *kind = QED_UNALLOCATED;
      else if (*kind != QED_UNALLOCATED)
        break;
      first = false;
      pos = l2_end;
      continue;
    }
    if (!qed_check_range (q, l2_off, q->table_bytes)) {
      vd_error ("qed: %s: bad L2 table offset %#" PRIx64 " in L1 entry %"
                PRIu64, q->img.path, l2_off, l1_idx);
      errno = EIO;
      return -1;
    }

    idx = (pos >> q->cluster_bits) & (((uint64_t) 1 << q->table_bits) - 1);
    while (pos < l2_end) {
      size_t n = QED_CHUNK_ENTRIES - idx % QED_CHUNK_ENTRIES, i;

      n = MIN (n, DIV_ROUND_UP (l2_end - (pos & ~(cs - 1)), cs));
      if (qed_l2_entries (q, l2_off, idx, entries, n) < 0)
        return -1;
      for (i = 0; i < n; i++) {
        uint64_t cluster = pos & ~(cs - 1);
        enum qed_kind k;

        if (qed_classify (q, entries[i], cluster, &k) < 0)
          return -1;
        if (first) {
          *kind = k;
          if (k == QED_DATA || k == QED_DATA_SHORT)
            *phys = entries[i] + (pos - cluster);
          first = false;
        }
        else if (k != *kind || k == QED_DATA_SHORT
                 || (k == QED_DATA
                     && entries[i] != *phys + (pos - offset)))
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

/* Read an unallocated range: from the backing file, zeros beyond its end
 * ("Unallocated L2 tables and data clusters"), or zeros without one. */
static int
qed_read_unallocated (struct qed_image *q, char *buf, size_t count,
                      uint64_t offset)
{
  if (q->has_backing && !q->backing) {
    vd_error ("qed: %s: read at %" PRIu64 " needs the backing file, "
              "which was not opened", q->img.path, offset);
    errno = EIO;
    return -1;
  }
  return vd_read_backing (q->backing, buf, count, offset);
}

static int
qed_read (struct vd_image *img, void *buf, size_t count, uint64_t offset)
{
  struct qed_image *q = (struct qed_image *) img;
  char *p = buf;

  while (count > 0) {
    enum qed_kind kind;
    uint64_t phys, run;

    if (qed_map (q, offset, count, &kind, &phys, &run) < 0)
      return -1;
    switch (kind) {
    case QED_DATA:
    case QED_DATA_SHORT:
      if (vd_pread_full (q->fd, p, run, phys, true) < 0) {
        vd_error ("qed: %s: read at %#" PRIx64 ": %m", img->path, phys);
        return -1;
      }
      break;
    case QED_ZERO:
      memset (p, 0, run);
      break;
    case QED_UNALLOCATED:
      if (qed_read_unallocated (q, p, run, offset) < 0)
        return -1;
      break;
    }
    p += run;
    offset += run;
    count -= run;
  }
  return 0;
}

/* Allocated clusters may hold holes of the file: the writer punches the
 * clusters it zeroes (see "The write side").  They read as zeros: a DATA
 * extent e that starts in one says ZERO up to its end, one that runs
 * into one ends there.  Without SEEK_DATA, e stays as it is. */
static void
qed_holes (struct qed_image *q, struct vd_extent *e)
{
  off_t d = lseek (q->fd, (off_t) e->phys, SEEK_DATA);

  if ((d < 0 && errno == ENXIO) || (d >= 0 && (uint64_t) d > e->phys)) {
    if (d >= 0)
      e->length = MIN (e->length, (uint64_t) d - e->phys);
    e->type = VD_EXTENT_ZERO;
    e->fd = -1;
    e->phys = 0;
    return;
  }
  if (d < 0)
    return;
  d = lseek (q->fd, (off_t) e->phys, SEEK_HOLE);
  if (d > (off_t) e->phys)
    e->length = MIN (e->length, (uint64_t) d - e->phys);
}

static int
qed_block_status (struct vd_image *img, uint64_t offset, uint64_t length,
                  struct vd_extent *e)
{
  struct qed_image *q = (struct qed_image *) img;
  enum qed_kind kind;
  uint64_t phys, run;

  if (qed_map (q, offset, length, &kind, &phys, &run) < 0)
    return -1;
  e->offset = offset;
  e->length = run;
  e->fd = -1;
  e->phys = 0;
  switch (kind) {
  case QED_DATA:
    e->type = VD_EXTENT_DATA;
    e->fd = q->fd;
    e->phys = phys;
    qed_holes (q, e);
    break;
  case QED_DATA_SHORT:                /* zero-filled past EOF: no splice */
    e->type = VD_EXTENT_DATA;
    break;
  case QED_ZERO:
    e->type = VD_EXTENT_ZERO;
    break;
  case QED_UNALLOCATED:
    if (q->backing && offset < q->backing->size)
      return vd_image_block_status (q->backing, offset,
                                    MIN (run, q->backing->size - offset), e);
    e->type = VD_EXTENT_HOLE;
    break;
  }
  return 0;
}

/* ---- The write side ----
 *
 * QED has no reference counts: space is allocated at the end of the file
 * (alloc_end, the file size rounded up to a cluster) and never freed.
 * Every allocation extends the file with ftruncate first, so a new
 * cluster or table reads as zeros until written and its zero parts stay
 * holes.  The order of writes is the one that makes a crash harmless
 * (kill -9: the page cache keeps every completed pwrite in order):
 *
 *   data clusters (completed from the backing file or zeros)
 *   before the L2 entries that point to them,
 *   a new L2 table (its entries) before the L1 entry that points to it,
 *   the header (image size) last.
 *
 * A crash between two steps leaves at worst space that nothing points to
 * (a leak, which `qemu-img check` reports as harmless).  The disk may
 * reorder those writes on a power cut, which is what the need-check
 * feature bit is for ("Consistency checking"): it is set, and made
 * durable, before the first write that allocates or changes a table
 * entry, and cleared at flush and close once fdatasync made the tables
 * durable.  An image opened for writing with the bit set (we, or qemu,
 * crashed) is checked and repaired first (qed_check_repair): table and
 * cluster offsets that are misaligned, inside the header or past the end
 * of the file are cleared, then the bit is cleared.  Duplicate references
 * are not looked for: allocation past the end never makes them.  Only
 * regular files are written (a block device cannot grow: ENOTSUP), and
 * unknown autoclear feature bits are cleared at open ("Field
 * descriptions").
 *
 * Zeros: an aligned cluster that must read as zeros becomes a zero
 * cluster (L2 entry 1) where a backing file would show through, stays or
 * is left unallocated where none would, and an allocated cluster keeps
 * its L2 entry but has its bytes punched out of the file (or written as
 * zeros where the file system cannot punch).  Clearing the entry instead
 * would leak the cluster for good (QED cannot free space in the middle of
 * the file, and `qemu-img check` counts such leaks); punched, it still
 * takes no disk space.  Metadata is written through (no dirty cache), so
 * memory stays bounded: the read side's L2 chunk cache, forgotten where
 * we write, and one bounce buffer of QED_BOUNCE bytes for copying from
 * the backing file. */

#define QED_BOUNCE              (1u << 20)

static int
qed_pwrite (struct qed_image *q, const void *buf, size_t count,
            uint64_t off, const char *what)
{
  const char *p = buf;

  while (count > 0) {
    ssize_t w = pwrite (q->fd, p, count, (off_t) off);

    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      if (w == 0)
        errno = EIO;
      vd_error ("qed: %s: writing %s at %#" PRIx64 ": %m", q->img.path,
                what, off);
      return -1;
    }
    p += w;
    count -= w;
    off += w;
  }
  return 0;
}

static int
qed_sync (struct qed_image *q)
{
  if (fdatasync (q->fd) < 0) {
    vd_error ("qed: %s: fdatasync: %m", q->img.path);
    return -1;
  }
  return 0;
}

/* Write the header's features field and make it durable. */
static int
qed_store_features (struct qed_image *q, uint64_t features)
{
  uint8_t b[8];

  store_le64 (b, features);
  if (qed_pwrite (q, b, 8, 16, "the header") < 0 || qed_sync (q) < 0)
    return -1;
  q->features = features;
  return 0;
}

/* Set the need-check bit before the image can become inconsistent. */
static int
qed_mark_dirty (struct qed_image *q)
{
  if (q->dirty)
    return 0;
  if (qed_store_features (q, q->features | QED_F_NEED_CHECK) < 0)
    return -1;
  q->dirty = true;
  return 0;
}

/* Everything durable, then the need-check bit cleared (durably too). */
static int
qed_flush (struct vd_image *img)
{
  struct qed_image *q = (struct qed_image *) img;

  if (qed_sync (q) < 0)
    return -1;
  if (!q->dirty)
    return 0;
  if (qed_store_features (q, q->features & ~QED_F_NEED_CHECK) < 0)
    return -1;
  q->dirty = false;
  return 0;
}

/* Take n bytes (a multiple of the cluster size) at the end of the file
 * and extend the file over them: they read as zeros until written. */
static int
qed_alloc (struct qed_image *q, uint64_t n, uint64_t *off)
{
  uint64_t end;

  if (qed_mark_dirty (q) < 0)
    return -1;
  if (ADD_OVERFLOW (q->alloc_end, n, &end) || end > INT64_MAX) {
    vd_error ("qed: %s: the file cannot grow past %" PRIu64 " bytes",
              q->img.path, q->alloc_end);
    errno = EFBIG;
    return -1;
  }
  if (ftruncate (q->fd, (off_t) end) < 0) {
    vd_error ("qed: %s: extending the file to %" PRIu64 " bytes: %m",
              q->img.path, end);
    return -1;
  }
  *off = q->alloc_end;
  q->alloc_end = end;
  __atomic_store_n (&q->file_size, end, __ATOMIC_RELAXED);
  return 0;
}

/* The L2 table offset of L1 entry idx (< l1_len), checked; 0 when
 * unallocated. */
static int
qed_l1_get (struct qed_image *q, uint64_t idx, uint64_t *l2_off)
{
  if (q->live) {
    if (vd_pread_full (q->fd, l2_off, 8, q->l1_off + idx * 8, true) < 0) {
      vd_error ("qed: %s: reading the L1 table: %m", q->img.path);
      return -1;
    }
    *l2_off = load_le64 (l2_off);
  }
  else
    *l2_off = q->l1[idx];
  if (*l2_off != 0 && !qed_check_range (q, *l2_off, q->table_bytes)) {
    vd_error ("qed: %s: bad L2 table offset %#" PRIx64 " in L1 entry %"
              PRIu64, q->img.path, *l2_off, idx);
    errno = EIO;
    return -1;
  }
  return 0;
}

static int
qed_l1_set (struct qed_image *q, uint64_t idx, uint64_t l2_off)
{
  uint8_t b[8];

  store_le64 (b, l2_off);
  if (qed_pwrite (q, b, 8, q->l1_off + idx * 8, "the L1 table") < 0)
    return -1;
  if (!q->live)
    q->l1[idx] = l2_off;
  return 0;
}

/* Write L2 entries [idx, idx + n) of the table at l2_off, all inside one
 * 4 KiB chunk, and forget that chunk in the cache. */
static int
qed_l2_store (struct qed_image *q, uint64_t l2_off, uint64_t idx,
              const uint64_t *entries, size_t n)
{
  uint64_t chunk_off = l2_off + (idx * 8 & ~(uint64_t) (QED_CHUNK_BYTES - 1));
  struct qed_slot *s =
    &q->cache[(chunk_off / QED_CHUNK_BYTES) % QED_CACHE_SLOTS];
  uint64_t le[QED_CHUNK_ENTRIES];
  size_t i;

  for (i = 0; i < n; i++)
    store_le64 (&le[i], entries[i]);
  pthread_mutex_lock (&s->lock);
  if (s->tag == chunk_off)
    s->tag = 0;
  pthread_mutex_unlock (&s->lock);
  return qed_pwrite (q, le, n * 8, l2_off + idx * 8, "an L2 table");
}

/* Would an unallocated cluster show the backing file at guest offset g? */
static bool
qed_backing_at (struct qed_image *q, uint64_t g)
{
  if (!q->has_backing)
    return false;
  return !q->backing || g < q->backing->size;
}

/* The part of [offset, offset + len) that one 4 KiB chunk of L2 entries
 * maps (never more than one L2 table): its L1 index, first L2 index,
 * number of clusters and end. */
struct qed_span {
  uint64_t l1_idx, idx, first, end;
  size_t n;
};

static void
qed_span (struct qed_image *q, uint64_t offset, uint64_t len,
          struct qed_span *sp)
{
  const uint64_t cs = q->cluster_size;
  uint64_t left;

  sp->l1_idx = offset >> (q->cluster_bits + q->table_bits);
  sp->idx = (offset >> q->cluster_bits)
    & (((uint64_t) 1 << q->table_bits) - 1);
  sp->first = offset & ~(cs - 1);
  left = QED_CHUNK_ENTRIES - sp->idx % QED_CHUNK_ENTRIES;
  /* offset + len <= image size < 2^63: no overflow. */
  sp->n = MIN (left, DIV_ROUND_UP (offset + len - sp->first, cs));
  sp->end = MIN (offset + len, sp->first + sp->n * cs);
}

static char *
qed_bounce (struct qed_image *q)
{
  if (!q->bounce && !(q->bounce = malloc (QED_BOUNCE)))
    vd_error ("qed: %s: out of memory", q->img.path);
  return q->bounce;
}

/* Fill [phys, phys + n) of a newly allocated cluster with what the guest
 * saw at guest offset g while it was unallocated: the backing file's
 * bytes within the virtual size.  Zeros need no writing (new space reads
 * as zeros, and stays a hole). */
static int
qed_copy_backing (struct qed_image *q, uint64_t phys, uint64_t g,
                  uint64_t n)
{
  char *b;

  if (!q->has_backing || g >= q->img.size || n == 0)
    return 0;
  n = MIN (n, q->img.size - g);
  if (!q->backing) {
    vd_error ("qed: %s: write at %" PRIu64 " needs the backing file, "
              "which was not opened", q->img.path, g);
    errno = EIO;
    return -1;
  }
  if (g >= q->backing->size)
    return 0;
  n = MIN (n, q->backing->size - g);
  if (!(b = qed_bounce (q)))
    return -1;
  while (n > 0) {
    uint64_t m = MIN (n, QED_BOUNCE);

    if (vd_read_backing (q->backing, b, m, g) < 0)
      return -1;
    if (!vd_is_zero (b, m)
        && qed_pwrite (q, b, m, phys, "a data cluster") < 0)
      return -1;
    phys += m;
    g += m;
    n -= m;
  }
  return 0;
}

/* Write the part of [offset, offset + len) that one chunk of L2 entries
 * maps (*done: its length).  Allocated clusters are written in place;
 * the others get new clusters at the end of the file, completed from the
 * backing file (unallocated) or left zero (zero clusters), then the L2
 * entries, then (new table) the L1 entry.  A piece of zeros over a
 * cluster that reads as zeros there already is skipped. */
static int
qed_write_chunk (struct qed_image *q, const char *buf, uint64_t len,
                 uint64_t offset, uint64_t *done)
{
  const uint64_t cs = q->cluster_size;
  uint64_t entries[QED_CHUNK_ENTRIES];
  bool alloc[QED_CHUNK_ENTRIES];
  uint64_t l2_off, base = 0, new_l2 = 0, run_phys = 0, run_len = 0;
  const char *run_buf = NULL;
  size_t i, nalloc = 0, lo_i = SIZE_MAX, hi_i = 0;
  struct qed_span sp;

  qed_span (q, offset, len, &sp);
  *done = sp.end - offset;
  if (qed_l1_get (q, sp.l1_idx, &l2_off) < 0)
    return -1;
  if (l2_off == 0)
    memset (entries, 0, sp.n * sizeof *entries);
  else if (qed_l2_entries (q, l2_off, sp.idx, entries, sp.n) < 0)
    return -1;

  for (i = 0; i < sp.n; i++) {
    uint64_t c = sp.first + i * cs;
    uint64_t lo = MAX (offset, c), hi = MIN (sp.end, c + cs);
    enum qed_kind k;

    if (qed_classify (q, entries[i], c, &k) < 0)
      return -1;
    alloc[i] = false;
    if (k == QED_DATA || k == QED_DATA_SHORT)
      continue;
    if ((k == QED_ZERO || !qed_backing_at (q, lo))
        && vd_is_zero (buf + (lo - offset), hi - lo))
      continue;                         /* reads as zeros already */
    alloc[i] = true;
    nalloc++;
  }

  if (nalloc > 0) {
    uint64_t need = nalloc * cs;

    if (l2_off == 0)
      need += q->table_bytes;
    if (qed_alloc (q, need, &base) < 0)
      return -1;
    if (l2_off == 0) {
      new_l2 = l2_off = base;
      base += q->table_bytes;
    }
  }

  /* The data, contiguous pieces in one pwrite. */
  for (i = 0; i < sp.n; i++) {
    uint64_t c = sp.first + i * cs;
    uint64_t lo = MAX (offset, c), hi = MIN (sp.end, c + cs);
    uint64_t phys;
    const char *p = buf + (lo - offset);

    if (alloc[i]) {
      enum qed_kind k;

      qed_classify (q, entries[i], c, &k);      /* checked above */
      phys = base;
      base += cs;
      if (k == QED_UNALLOCATED
          && (qed_copy_backing (q, phys, c, lo - c) < 0
              || qed_copy_backing (q, phys + (hi - c), hi, c + cs - hi) < 0))
        return -1;
      entries[i] = phys;
      lo_i = MIN (lo_i, i);
      hi_i = i + 1;
    }
    else if (entries[i] > QED_ENTRY_ZERO)
      phys = entries[i];
    else
      continue;                         /* skipped zeros */
    phys += lo - c;
    if (run_len > 0 && run_phys + run_len == phys && run_buf + run_len == p) {
      run_len += hi - lo;
      continue;
    }
    if (run_len > 0
        && qed_pwrite (q, run_buf, run_len, run_phys, "a data cluster") < 0)
      return -1;
    run_phys = phys;
    run_buf = p;
    run_len = hi - lo;
  }
  if (run_len > 0
      && qed_pwrite (q, run_buf, run_len, run_phys, "a data cluster") < 0)
    return -1;

  /* Then the L2 entries, then the L1 entry of a new table. */
  if (nalloc > 0
      && qed_l2_store (q, l2_off, sp.idx + lo_i, entries + lo_i,
                       hi_i - lo_i) < 0)
    return -1;
  if (new_l2 && qed_l1_set (q, sp.l1_idx, new_l2) < 0)
    return -1;
  return 0;
}

static int
qed_write (struct vd_image *img, const void *buf, size_t count,
           uint64_t offset)
{
  struct qed_image *q = (struct qed_image *) img;
  const char *p = buf;
  uint64_t end = offset + count, done;

  while (offset < end) {
    if (qed_write_chunk (q, p, end - offset, offset, &done) < 0)
      return -1;
    p += done;
    offset += done;
  }
  return 0;
}

/* Make [off, off + n) of the file read as zeros: punched (the blocks go
 * back to the file system), else written zeros, never past the end. */
static int
qed_punch (struct qed_image *q, uint64_t off, uint64_t n)
{
  static const char zeros[65536];
  uint64_t fsize = qed_file_size (q);

  if (!q->no_punch) {
    if (fallocate (q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   (off_t) off, (off_t) n) == 0)
      return 0;
    if (errno != EOPNOTSUPP) {
      vd_error ("qed: %s: punching a hole at %#" PRIx64 ": %m",
                q->img.path, off);
      return -1;
    }
    q->no_punch = true;
  }
  if (off >= fsize)
    return 0;
  n = MIN (n, fsize - off);
  while (n > 0) {
    uint64_t m = MIN (n, sizeof zeros);

    if (qed_pwrite (q, zeros, m, off, "zeros") < 0)
      return -1;
    off += m;
    n -= m;
  }
  return 0;
}

/* Zero the whole clusters of [offset, offset + len) that one chunk of L2
 * entries maps (*done: how far it got): allocated ones punched,
 * unallocated ones over the backing file made zero clusters.  A range
 * without an L2 table and without a backing file under it is skipped up
 * to the table's end. */
static int
qed_zero_chunk (struct qed_image *q, uint64_t len, uint64_t offset,
                uint64_t *done)
{
  const uint64_t cs = q->cluster_size;
  const unsigned l2_shift = q->cluster_bits + q->table_bits;
  uint64_t entries[QED_CHUNK_ENTRIES];
  uint64_t l2_off, new_l2 = 0, run_phys = 0, run_len = 0;
  size_t i, lo_i = SIZE_MAX, hi_i = 0;
  struct qed_span sp;

  qed_span (q, offset, len, &sp);
  *done = sp.end - offset;
  if (qed_l1_get (q, sp.l1_idx, &l2_off) < 0)
    return -1;
  if (l2_off == 0) {
    if (!qed_backing_at (q, offset)) {
      uint64_t table_end = (sp.l1_idx + 1) << l2_shift;

      *done = MIN (len, table_end - offset);
      return 0;
    }
    memset (entries, 0, sp.n * sizeof *entries);
  }
  else if (qed_l2_entries (q, l2_off, sp.idx, entries, sp.n) < 0)
    return -1;

  for (i = 0; i < sp.n; i++) {
    uint64_t c = sp.first + i * cs;
    enum qed_kind k;

    if (qed_classify (q, entries[i], c, &k) < 0)
      return -1;
    if (k == QED_DATA || k == QED_DATA_SHORT) {
      if (run_len > 0 && run_phys + run_len == entries[i]) {
        run_len += cs;
        continue;
      }
      if (run_len > 0 && qed_punch (q, run_phys, run_len) < 0)
        return -1;
      run_phys = entries[i];
      run_len = cs;
    }
    else if (k == QED_UNALLOCATED && qed_backing_at (q, c)) {
      entries[i] = QED_ENTRY_ZERO;
      lo_i = MIN (lo_i, i);
      hi_i = i + 1;
    }
  }
  if (run_len > 0 && qed_punch (q, run_phys, run_len) < 0)
    return -1;
  if (hi_i == 0)
    return 0;

  if (l2_off == 0) {
    if (qed_alloc (q, q->table_bytes, &new_l2) < 0)
      return -1;
    l2_off = new_l2;
  }
  else if (qed_mark_dirty (q) < 0)
    return -1;
  if (qed_l2_store (q, l2_off, sp.idx + lo_i, entries + lo_i,
                    hi_i - lo_i) < 0)
    return -1;
  if (new_l2 && qed_l1_set (q, sp.l1_idx, new_l2) < 0)
    return -1;
  return 0;
}

static int
qed_zero_clusters (struct qed_image *q, uint64_t count, uint64_t offset)
{
  uint64_t end = offset + count, done;

  while (offset < end) {
    if (qed_zero_chunk (q, end - offset, offset, &done) < 0)
      return -1;
    offset += done;
  }
  return 0;
}

static int
qed_zero (struct vd_image *img, uint64_t count, uint64_t offset)
{
  return qed_zero_clusters ((struct qed_image *) img, count, offset);
}

/* Grow to size: the new part must read as zeros, whatever the backing
 * file holds there or the old last cluster held past the old size; then
 * the header's image_size, last ("Tables": the size is bounded by what
 * one L1 table can map). */
static int
qed_resize (struct vd_image *img, uint64_t size)
{
  static const char zeros[65536];
  struct qed_image *q = (struct qed_image *) img;
  const unsigned l2_shift = q->cluster_bits + q->table_bits;
  uint64_t max_bits = 2 * q->table_bits + q->cluster_bits;
  uint64_t old = img->size, l1_len, c_end, pos, i;
  uint8_t b[8];

  if (size > INT64_MAX
      || (max_bits < 63 && size > ((uint64_t) 1 << max_bits))) {
    vd_error ("qed: %s: cannot grow to %" PRIu64 " bytes: its tables map "
              "at most 2^%" PRIu64, img->path, size, max_bits);
    errno = EFBIG;
    return -1;
  }
  if (size % 512 != 0) {
    vd_error ("qed: %s: cannot grow to %" PRIu64 " bytes: not a multiple "
              "of 512", img->path, size);
    errno = EINVAL;
    return -1;
  }

  /* More of the L1 table comes into use: copy its entries (the whole
   * table lies inside the file, checked at open). */
  l1_len = DIV_ROUND_UP (size, (uint64_t) 1 << l2_shift);
  if (!q->live && l1_len > q->l1_len) {
    uint64_t *l1 = realloc (q->l1, l1_len * 8);

    if (!l1) {
      vd_error ("qed: %s: out of memory", img->path);
      return -1;
    }
    q->l1 = l1;
    if (vd_pread_full (q->fd, l1 + q->l1_len, (l1_len - q->l1_len) * 8,
                       q->l1_off + q->l1_len * 8, true) < 0) {
      vd_error ("qed: %s: reading the L1 table: %m", img->path);
      return -1;
    }
    for (i = q->l1_len; i < l1_len; i++)
      l1[i] = load_le64 (&l1[i]);
  }
  q->l1_len = MAX (q->l1_len, l1_len);

  if (qed_mark_dirty (q) < 0)
    return -1;
  img->size = size;
  /* The rest of the old last cluster: written zeros. */
  c_end = MIN (ROUND_UP (old, q->cluster_size), size);
  for (pos = old; pos < c_end; pos += MIN (c_end - pos, sizeof zeros))
    if (qed_write (img, zeros, MIN (c_end - pos, sizeof zeros), pos) < 0)
      goto fail;
  /* The whole new clusters: zero clusters over the backing file,
   * anything else allocated (past an old size: not from us) punched. */
  if (c_end < size && qed_zero_clusters (q, size - c_end, c_end) < 0)
    goto fail;

  /* The new part reads as zeros on disk before the header says it is
   * there (else a power cut could show the backing file in it). */
  store_le64 (b, size);
  if (qed_sync (q) < 0 || qed_pwrite (q, b, 8, 48, "the header") < 0)
    goto fail;
  return 0;

 fail:
  img->size = old;
  return -1;
}

/* The consistency check of an image whose need-check bit is set at open
 * for writing ("Consistency checking"): every L1 and L2 entry that is
 * misaligned, inside the header or past the end of the file (whose
 * write a crash lost, or that never was valid) is cleared, durably, and
 * then the bit.  Reads 4 KiB of a table at a time. */
static int
qed_check_repair (struct qed_image *q)
{
  const uint64_t nl1 = (uint64_t) 1 << q->table_bits;
  uint64_t l1c[QED_CHUNK_ENTRIES], l2c[QED_CHUNK_ENTRIES];
  uint64_t fixed_l1 = 0, fixed_l2 = 0, i, j, k, m;
  uint64_t fsize = qed_refresh_file_size (q);

  for (i = 0; i < nl1; i += QED_CHUNK_ENTRIES) {
    bool l1_changed = false;

    m = MIN (QED_CHUNK_ENTRIES, nl1 - i);
    if (vd_pread_full (q->fd, l1c, m * 8, q->l1_off + i * 8, true) < 0) {
      vd_error ("qed: %s: reading the L1 table: %m", q->img.path);
      return -1;
    }
    for (j = 0; j < m; j++) {
      uint64_t l2 = load_le64 (&l1c[j]);

      if (l2 == 0)
        continue;
      if (!qed_check_range (q, l2, q->table_bytes)) {
        l1c[j] = 0;
        l1_changed = true;
        fixed_l1++;
        continue;
      }
      for (k = 0; k < q->table_bytes; k += QED_CHUNK_BYTES) {
        bool l2_changed = false;
        size_t e;

        if (vd_pread_full (q->fd, l2c, QED_CHUNK_BYTES, l2 + k, true) < 0) {
          vd_error ("qed: %s: reading an L2 table: %m", q->img.path);
          return -1;
        }
        for (e = 0; e < QED_CHUNK_ENTRIES; e++) {
          uint64_t d = load_le64 (&l2c[e]);

          if (d > QED_ENTRY_ZERO
              && (!IS_ALIGNED (d, q->cluster_size) || d < q->header_bytes
                  || d >= fsize)) {
            l2c[e] = 0;
            l2_changed = true;
            fixed_l2++;
          }
        }
        if (l2_changed
            && qed_pwrite (q, l2c, QED_CHUNK_BYTES, l2 + k,
                           "an L2 table") < 0)
          return -1;
      }
    }
    if (l1_changed
        && qed_pwrite (q, l1c, m * 8, q->l1_off + i * 8, "the L1 table") < 0)
      return -1;
  }
  if (qed_sync (q) < 0
      || qed_store_features (q, q->features & ~QED_F_NEED_CHECK) < 0)
    return -1;
  vd_warn ("qed: %s: was not closed cleanly: checked, %" PRIu64
           " L1 and %" PRIu64 " L2 entries pointing past the end of the "
           "file or misaligned cleared", q->img.path, fixed_l1, fixed_l2);
  return 0;
}

static void
qed_free (struct qed_image *q)
{
  size_t i;

  if (q->cache) {
    for (i = 0; i < QED_CACHE_SLOTS; i++)
      pthread_mutex_destroy (&q->cache[i].lock);
    free (q->cache);
  }
  vd_image_close (q->backing);
  if (q->fd >= 0)
    close (q->fd);
  free (q->l1);
  free (q->bounce);
  free (q->img.path);
  free (q);
}

static void
qed_close (struct vd_image *img)
{
  struct qed_image *q = (struct qed_image *) img;

  /* Close does not lose data, and leaves the image clean: durable, the
   * need-check bit cleared (logged when it fails). */
  if (q->rdwr)
    qed_flush (img);
  qed_free (q);
}

/* Read and open the backing file named in the header ("Header":
 * backing_filename_offset/size; "Feature bits": QED_F_BACKING_FILE and
 * QED_F_BACKING_FORMAT_NO_PROBE). */
static int
qed_open_backing (struct qed_image *q, const char *path, const uint8_t *hdr,
                  uint64_t features, unsigned flags,
                  const struct vd_chain *chain)
{
  uint32_t name_off = load_le32 (hdr + 56);
  uint32_t name_len = load_le32 (hdr + 60);
  CLEANUP_FREE char *name = NULL;
  const char *fmt = (features & QED_F_BACKING_NO_PROBE) ? "raw" : NULL;

  if (name_len == 0 || name_len > QED_MAX_BACKING_NAME
      || (uint64_t) name_off + name_len > q->header_bytes
      || (uint64_t) name_off + name_len > qed_file_size (q)) {
    vd_error ("qed: %s: bad backing file name (offset %" PRIu32
              ", size %" PRIu32 ")", path, name_off, name_len);
    errno = EIO;
    return -1;
  }
  name = vd_read_name ("qed", path, q->fd, name_off, name_len,
                       "backing file name");
  if (!name)
    return -1;
  q->has_backing = true;
  if (flags & VD_OPEN_NO_BACKING)
    return 0;
  /* qemu never writes a backing file while the VM runs: no LIVE. */
  q->backing = vd_open_backing ("qed", path, name, fmt,
                                flags & ~VD_OPEN_LIVE, chain);
  return q->backing ? 0 : -1;
}

/* Open for writing, the header parsed (fields checked, the L1 table's
 * place too), before the L1 table is copied: only regular files (space
 * is allocated at the end); unknown autoclear bits cleared ("Field
 * descriptions"); an image left with the need-check bit repaired. */
static int
qed_open_rdwr (struct qed_image *q, const char *path, const uint8_t *hdr)
{
  struct stat st;

  q->img.path = strdup (path);
  if (!q->img.path)
    return -1;
  if (fstat (q->fd, &st) < 0) {
    vd_error ("qed: %s: fstat: %m", path);
    return -1;
  }
  if (!S_ISREG (st.st_mode)) {
    vd_error ("qed: %s: a QED image is only written in a regular file "
              "(it grows at the end)", path);
    errno = ENOTSUP;
    return -1;
  }
  q->rdwr = true;
  if (load_le64 (hdr + 32) != 0) {
    uint8_t b[8];

    store_le64 (b, 0);
    if (qed_pwrite (q, b, 8, 32, "the header") < 0 || qed_sync (q) < 0)
      return -1;
  }
  if ((q->features & QED_F_NEED_CHECK) && qed_check_repair (q) < 0)
    return -1;
  q->alloc_end = ROUND_UP (qed_refresh_file_size (q), q->cluster_size);
  q->img.zero_align = q->cluster_size;
  return 0;
}

static struct vd_image *
qed_open (const char *path, int fd, unsigned flags,
          const struct vd_chain *chain)
{
  uint8_t hdr[QED_HEADER_LEN];
  uint32_t cluster_size, table_size, header_size;
  uint64_t features, l1_off, image_size, max_bits, i;
  struct qed_image *q;
  int64_t end;

  q = calloc (1, sizeof *q);
  if (!q) {
    close (fd);
    errno = ENOMEM;
    return NULL;
  }
  q->fd = fd;

  if ((end = vd_fd_size (fd)) < 0) {
    vd_error ("qed: %s: cannot find the file size: %m", path);
    goto fail;
  }
  q->file_size = end;
  if (vd_pread_full (fd, hdr, sizeof hdr, 0, false) < 0) {
    vd_error ("qed: %s: cannot read the header: %m", path);
    errno = EIO;
    goto fail;
  }
  if (memcmp (hdr, QED_MAGIC, 4) != 0) {
    vd_error ("qed: %s: not a QED image (bad magic)", path);
    errno = EIO;
    goto fail;
  }

  /* "Field descriptions". */
  cluster_size = load_le32 (hdr + 4);
  table_size = load_le32 (hdr + 8);
  header_size = load_le32 (hdr + 12);
  features = load_le64 (hdr + 16);
  l1_off = load_le64 (hdr + 40);
  image_size = load_le64 (hdr + 48);

  if (cluster_size < (1u << QED_MIN_CLUSTER_BITS)
      || cluster_size > (1u << QED_MAX_CLUSTER_BITS)
      || (cluster_size & (cluster_size - 1)) != 0) {
    vd_error ("qed: %s: bad cluster size %" PRIu32, path, cluster_size);
    errno = EIO;
    goto fail;
  }
  q->cluster_size = cluster_size;
  q->cluster_bits = __builtin_ctz (cluster_size);
  if (table_size < 1 || table_size > QED_MAX_TABLE_SIZE
      || (table_size & (table_size - 1)) != 0) {
    vd_error ("qed: %s: bad table size %" PRIu32, path, table_size);
    errno = EIO;
    goto fail;
  }
  q->table_bytes = (uint64_t) table_size * cluster_size;
  q->table_bits = __builtin_ctzll (q->table_bytes / 8);
  if (header_size < 1) {
    vd_error ("qed: %s: bad header size %" PRIu32, path, header_size);
    errno = EIO;
    goto fail;
  }
  q->header_bytes = (uint64_t) header_size * cluster_size;   /* < 2^58 */

  if (features & ~QED_F_KNOWN) {
    vd_error ("qed: %s: unsupported feature bits %#" PRIx64, path,
              features & ~QED_F_KNOWN);
    errno = ENOTSUP;
    goto fail;
  }
  if ((features & QED_F_NEED_CHECK) && !(flags & VD_OPEN_RDWR))
    vd_warn ("qed: %s: image needs a consistency check (not closed "
             "cleanly); reading it anyway", path);
  q->features = features;

  /* "Tables": image_size <= TABLE_NOFFSETS^2 * cluster_size, and a
   * multiple of 512. */
  max_bits = 2 * q->table_bits + q->cluster_bits;
  if (image_size % 512 != 0 || image_size > INT64_MAX
      || (max_bits < 63 && image_size > ((uint64_t) 1 << max_bits))) {
    vd_error ("qed: %s: bad image size %" PRIu64, path, image_size);
    errno = EIO;
    goto fail;
  }
  q->img.size = image_size;
  q->live = (flags & VD_OPEN_LIVE) != 0;
  q->l1_off = l1_off;

  if (!qed_check_range (q, l1_off, q->table_bytes)) {
    vd_error ("qed: %s: bad L1 table offset %#" PRIx64, path, l1_off);
    errno = EIO;
    goto fail;
  }
  if ((flags & VD_OPEN_RDWR) && qed_open_rdwr (q, path, hdr) < 0)
    goto fail;

  /* Only the entries the image size needs: at most the whole table,
   * which lies inside the file. */
  q->l1_len = DIV_ROUND_UP (image_size,
                            (uint64_t) 1 << (q->cluster_bits + q->table_bits));
  if (q->l1_len > 0 && !q->live) {
    q->l1 = malloc (q->l1_len * 8);
    if (!q->l1)
      goto fail;
    if (vd_pread_full (fd, q->l1, q->l1_len * 8, l1_off, true) < 0) {
      vd_error ("qed: %s: reading the L1 table: %m", path);
      errno = EIO;
      goto fail;
    }
    for (i = 0; i < q->l1_len; i++)
      q->l1[i] = load_le64 (&q->l1[i]);
  }

  q->cache = calloc (QED_CACHE_SLOTS, sizeof *q->cache);
  if (!q->cache)
    goto fail;
  for (i = 0; i < QED_CACHE_SLOTS; i++)
    pthread_mutex_init (&q->cache[i].lock, NULL);

  if ((features & QED_F_BACKING_FILE)
      && qed_open_backing (q, path, hdr, features, flags, chain) < 0)
    goto fail;

  return &q->img;

 fail:
  {
    int e = errno ? errno : EIO;
    qed_free (q);
    errno = e;
  }
  return NULL;
}

const struct vd_format qed_format = {
  .name = "qed",
  .probe = qed_probe,
  .open = qed_open,
  .close = qed_close,
  .read = qed_read,
  .write = qed_write,
  .flush = qed_flush,
  .block_status = qed_block_status,
  /* No .list_snapshots: QED has no internal snapshots. */
  .zero = qed_zero,
  .resize = qed_resize,
};
