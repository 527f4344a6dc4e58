/* vmdiskfs - the QED driver (QEMU Enhanced Disk), read side.
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
 * at open and immutable.  L2 entries are cached in 4 KiB chunks in a
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
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
  free (q->img.path);
  free (q);
}

static void
qed_close (struct vd_image *img)
{
  qed_free ((struct qed_image *) img);
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
  if (features & QED_F_NEED_CHECK)
    vd_warn ("qed: %s: image needs a consistency check (not closed "
             "cleanly); reading it anyway", path);

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
  .block_status = qed_block_status,
  /* No .list_snapshots: QED has no internal snapshots. */
};
