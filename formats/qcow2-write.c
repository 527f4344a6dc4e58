/* vmdiskfs - qcow2 driver (write side): open for writing, write, zero,
 * flush and resize.
 *
 * Written from qemu's docs/interop/qcow2.txt.  Versions 2 and 3, every
 * cluster size (512 B to 2 MiB), refcount width (qcow2-refcount.c),
 * extended L2 entries, external data files (raw or not), preallocated
 * images, backing chains and internal snapshots.
 *
 * Refused for writing, with one log line: the dirty bit (lazy refcounts
 * left dirty by a crash: run `qemu-img check -r all`; ENOTSUP), the
 * corrupt bit (EIO), snapshots and VD_OPEN_LIVE (EINVAL).  Persistent
 * dirty bitmaps with the auto flag are kept up to date (qcow2-bitmap.c).
 * Encryption and unknown incompatible features are refused by the
 * reader already.  Unknown autoclear bits are cleared at open, as the
 * spec asks of a writer that does not know them.  Writing never uses
 * lazy refcounts and never sets the dirty bit: refcounts are exact at
 * every write-back.
 *
 * Mapping on write (write_cluster): an L2 table whose L1 entry lacks
 * COPIED (refcount above one: shared with an internal snapshot) is first
 * copied to a new cluster, the L1 entry pointing to the copy with COPIED,
 * the old table decremented later (its data clusters keep their counts:
 * they are still reached once through the snapshot's table and once
 * through ours).  A data cluster whose entry has COPIED is written in
 * place; any other (unallocated, zero, compressed, shared) gets a new
 * cluster holding what the image showed there (backing file, zeros, old
 * data, inflated compressed data) with the new bytes over it, and the old
 * cluster (or each host cluster a compressed one spans) is decremented
 * later.  So no snapshot ever changes, and COPIED flags stay exact.
 * Extended L2: only the subclusters written are allocated (a partial one
 * completed from the image's view), the bitmaps kept exact; copying a
 * shared cluster keeps its allocated subclusters.  External data files:
 * the host offset is the guest offset (spec), nothing is refcounted.
 *
 * zero (zero_align: the cluster, or the subcluster with extended L2):
 * without a backing file the range becomes unallocated and its clusters
 * are freed (a whole L2 table's range at once: the table is dropped and
 * its L1 entry cleared, so zeroing a whole disk touches each table once);
 * with a backing file, v3 images get zero flags (zero bits of
 * subclusters), the clusters behind freed.  v2 images with backing files
 * get allocated zeros: v2 has no zero flag, so where the backing file
 * reads as zeros (its block status: hole or zero) the clusters become
 * unallocated, elsewhere a cluster of zeros is written.  Zeroing never
 * copies a shared cluster: only our entry changes.  With a raw external
 * data file the range is also punched (or written as zeros) in the data
 * file, which must read as the disk.
 *
 * Write ordering and crash safety: qcow2-refcount.c (qcow2_writeback).
 * Memory: the writer's metadata cache (QCOW2_WCACHE_BYTES of L2 tables
 * and refcount blocks, qcow2-cache.c), the L1 and refcount tables, and
 * deferred frees (written back before 64 Ki runs); a write-back every
 * QCOW2_WRITEBACK_BYTES bounds what a crash leaks.
 *
 * Threads: every op here runs under the image's write lock (format.c);
 * readers of the same image never run meanwhile.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdformat.h"
#include "qcow2.h"
#include "log.h"
#include "endian.h"
#include "cleanup.h"

#define QCOW2_WCACHE_BYTES     (16U << 20)
#define QCOW2_WRITEBACK_BYTES  (256ULL << 20)
#define QCOW2_REUSE_BYTES      (16ULL << 20)

/* The writer's metadata cache for images opened from now on (a test
 * hook: tests shrink it to its minimum of 8 tables). */
uint64_t qcow2_wcache_bytes = QCOW2_WCACHE_BYTES;

#define SC_ALL 0xffffffffULL

/* ---- Open and close ---- */

int
qcow2_write_open (struct qcow2_image *q, uint64_t rt_offset,
                  uint32_t rt_clusters, uint32_t l1_disk_size,
                  const uint8_t *hdr, size_t ext_start, size_t ext_end)
{
  struct qcow2_writer *w;
  uint64_t bytes = (uint64_t) l1_disk_size * 8, i, fsize;
  size_t pos;

  if (q->incompat & QCOW2_INCOMPAT_CORRUPT) {
    vd_error ("qcow2: %s: the image is marked corrupt; not writing it "
              "(qemu-img check -r all repairs it)", q->img.path);
    errno = EIO;
    return -1;
  }
  if (q->incompat & QCOW2_INCOMPAT_DIRTY) {
    vd_error ("qcow2: %s: the dirty bit is set (lazy refcounts left by a "
              "crash); run qemu-img check -r all before writing",
              q->img.path);
    errno = ENOTSUP;
    return -1;
  }
  w = q->w = calloc (1, sizeof *w);
  if (!w)
    return -1;
  w->l1_dirty_lo = UINT32_MAX;
  w->cbuf = malloc (q->cluster_size);
  w->cbuf2 = malloc (q->cluster_size);
  w->l1_disk_size = l1_disk_size;
  w->l1 = calloc (MAX (bytes, 8), 1);
  if (!w->cbuf || !w->cbuf2 || !w->l1)
    return -1;
  if (qcow2_wcache_init (q, qcow2_wcache_bytes) < 0)
    return -1;
  if (bytes && vd_pread_full (q->fd, w->l1, bytes, q->l1_offset, false) < 0) {
    vd_error ("qcow2: %s: cannot read the L1 table: %m", q->img.path);
    errno = EIO;
    return -1;
  }
  fsize = qcow2_file_size (q, false, true);
  for (i = 0; i < l1_disk_size; i++) {
    uint64_t e = load_be64 (&w->l1[i]), off = e & QCOW2_L1E_OFFSET_MASK;

    w->l1[i] = e;
    if (off != 0
        && (!IS_ALIGNED (off, q->cluster_size) || off < q->cluster_size
            || off >= fsize)) {
      vd_error ("qcow2: %s: L1 entry %" PRIu64 " invalid", q->img.path, i);
      errno = EIO;
      return -1;
    }
  }
  if (!q->l1 && q->l1_size) {
    /* Readers of a writable image use the writer's L1 (no budget: the
     * writer needs it anyway). */
    q->l1 = malloc ((uint64_t) q->l1_size * 8);
    if (!q->l1)
      return -1;
    for (i = 0; i < q->l1_size; i++)
      q->l1[i] = w->l1[i] & QCOW2_L1E_OFFSET_MASK;
  }
  if (qcow2_refcount_open (q, rt_offset, rt_clusters) < 0)
    return -1;
  for (pos = ext_start; pos + 8 <= ext_end;) {
    uint32_t type = load_be32 (hdr + pos), len = load_be32 (hdr + pos + 4);

    if (type == QCOW2_EXT_END || len > ext_end - pos - 8)
      break;
    if (type == QCOW2_EXT_BITMAPS
        && qcow2_bitmaps_open (q, hdr + pos + 8, len) < 0)
      return -1;
    pos += 8 + ROUND_UP ((uint64_t) len, 8);
  }

  /* Unknown autoclear bits: cleared before the first write (spec). */
  if (q->version >= 3
      && (q->autoclear
          & ~(QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_RAW))) {
    uint8_t b[8];

    q->autoclear &= QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_RAW;
    store_be64 (b, q->autoclear);
    if (pwrite (q->fd, b, 8, 88) != 8 || qcow2_sync (q, false) < 0) {
      vd_error ("qcow2: %s: cannot clear autoclear bits: %m", q->img.path);
      return -1;
    }
  }
  q->img.zero_align = 1U << q->subcluster_bits;
  w->opened = true;
  return 0;
}

void
qcow2_write_close (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;

  if (!w)
    return;
  if (w->opened && !w->failed
      && (qcow2_writeback (q) < 0 || qcow2_bitmaps_close (q) < 0))
    vd_error ("qcow2: %s: write-back at close failed: %m", q->img.path);
  qcow2_bitmaps_free (q);
  if (w->slots)
    qcow2_wcache_free (q);
  free (w->l1);
  free (w->rt);
  free (w->frees);
  free (w->cbuf);
  free (w->cbuf2);
  free (w);
  q->w = NULL;
}

/* ---- Helpers ---- */

void
qcow2_l1_set (struct qcow2_image *q, uint64_t l1i, uint64_t e)
{
  struct qcow2_writer *w = q->w;

  w->l1[l1i] = e;
  q->l1[l1i] = e & QCOW2_L1E_OFFSET_MASK;
  w->l1_dirty_lo = MIN (w->l1_dirty_lo, (uint32_t) l1i);
  w->l1_dirty_hi = MAX (w->l1_dirty_hi, (uint32_t) l1i + 1);
  w->meta_dirty = true;
}

int
qcow2_pwrite_now (struct qcow2_image *q, const void *buf, uint64_t len,
                  uint64_t off)
{
  const uint8_t *p = buf;

  while (len > 0) {
    ssize_t r = pwrite (q->data_fd, p, len, off);

    if (r <= 0) {
      if (r == 0)
        errno = ENOSPC;
      vd_error ("qcow2: %s: write at %#" PRIx64 ": %m", q->img.path, off);
      return -1;
    }
    p += r;
    off += r;
    len -= r;
  }
  q->w->data_dirty = true;
  return 0;
}

/* The caller's bytes for consecutive clusters that landed at consecutive
 * host offsets are gathered into one pwrite (a 1 MiB write of 64 KiB
 * clusters: one system call, not sixteen).  Written before anything
 * reads the image, before the write-back and at the end of each write
 * op (the caller's buffer is gone then). */
int
qcow2_write_pending (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  int r;

  if (!w || w->pend_len == 0)
    return 0;
  r = qcow2_pwrite_now (q, w->pend_buf, w->pend_len, w->pend_off);
  w->pend_len = 0;
  return r;
}

/* buf is the caller's (gathered) when user, else scratch (now). */
static int
pwrite_data (struct qcow2_image *q, const void *buf, uint64_t len,
             uint64_t off, bool user)
{
  struct qcow2_writer *w = q->w;

  if (user && w->pend_len && w->pend_off + w->pend_len == off
      && w->pend_buf + w->pend_len == (const uint8_t *) buf
      && w->pend_len < (8U << 20)) {
    w->pend_len += len;
    return 0;
  }
  if (qcow2_write_pending (q) < 0)
    return -1;
  if (!user)
    return qcow2_pwrite_now (q, buf, len, off);
  w->pend_buf = buf;
  w->pend_off = off;
  w->pend_len = len;
  return 0;
}

/* Drop our reference to what L2 entry e points to (later). */
int
qcow2_free_entry (struct qcow2_image *q, uint64_t e)
{
  uint64_t host = e & QCOW2_L2E_OFFSET_MASK;

  if (q->has_data_file)
    return 0;                   /* not refcounted */
  if (e & QCOW2_L2E_COMPRESSED) {
    unsigned x = 62 - (q->cluster_bits - 8);
    uint64_t coff = e & ((1ULL << x) - 1);
    uint64_t nsec = ((e >> x) & ((1ULL << (q->cluster_bits - 8)) - 1)) + 1;

    return qcow2_free_later (q, coff & ~511ULL, nsec * 512);
  }
  if (host == 0)
    return 0;
  if (!IS_ALIGNED (host, q->cluster_size)) {
    vd_error ("qcow2: %s: L2 entry %#" PRIx64 " unaligned", q->img.path, e);
    errno = EIO;
    return -1;
  }
  return qcow2_free_later (q, host, q->cluster_size);
}

/* The L2 table for L1 index l1i, ours alone (COPIED), pinned. */
static int
l2_for_write (struct qcow2_image *q, uint64_t l1i, struct qcow2_wslot **out)
{
  struct qcow2_writer *w = q->w;
  uint64_t e = w->l1[l1i], off = e & QCOW2_L1E_OFFSET_MASK;
  struct qcow2_wslot *old = NULL, *t;
  int64_t noff;

  if (off && (e & QCOW2_L2E_COPIED)) {
    *out = qcow2_wcache_get (q, off, QW_L2, false);
    return *out ? 0 : -1;
  }
  if ((noff = qcow2_alloc_clusters (q, 1)) < 0)
    return -1;
  if (off && (old = qcow2_wcache_get (q, off, QW_L2, false)) == NULL)
    return -1;
  t = qcow2_wcache_get (q, noff, QW_L2, true);
  if (!t) {
    qcow2_wcache_put (old);
    return -1;
  }
  if (old) {
    memcpy (t->data, old->data, q->cluster_size);
    qcow2_wcache_put (old);
    if (qcow2_free_later (q, off, q->cluster_size) < 0) {
      qcow2_wcache_put (t);
      return -1;
    }
  }
  qcow2_wcache_dirty (q, t);
  qcow2_l1_set (q, l1i, (uint64_t) noff | QCOW2_L2E_COPIED);
  *out = t;
  return 0;
}

/* The L2 entry (and bitmap) of guest cluster gc as it is now, without
 * changing anything. */
static int
peek_entry (struct qcow2_image *q, uint64_t gc, uint64_t *e, uint64_t *bm)
{
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t l1e = q->w->l1[gc >> cov_bits];
  uint64_t idx = (gc >> q->cluster_bits) & ((1ULL << q->l2_bits) - 1);
  struct qcow2_wslot *t;

  *e = *bm = 0;
  if ((l1e & QCOW2_L1E_OFFSET_MASK) == 0)
    return 0;
  t = qcow2_wcache_get (q, l1e & QCOW2_L1E_OFFSET_MASK, QW_L2, false);
  if (!t)
    return -1;
  *e = load_be64 (t->data + idx * q->l2_entry_bytes);
  if (q->extended_l2)
    *bm = load_be64 (t->data + idx * q->l2_entry_bytes + 8);
  qcow2_wcache_put (t);
  return 0;
}

/* What the image shows at [off, off + len) of guest cluster gc (len
 * clipped at the disk's end, the rest zeros): into buf. */
static int
read_view (struct qcow2_image *q, uint8_t *buf, uint64_t gc, uint64_t off,
           uint64_t len)
{
  uint64_t end = MIN (gc + off + len, q->img.size), n;

  if (qcow2_write_pending (q) < 0)
    return -1;
  n = end > gc + off ? end - (gc + off) : 0;
  if (n && qcow2_read (&q->img, buf, n, gc + off) < 0)
    return -1;
  memset (buf + n, 0, len - n);
  return 0;
}

/* ---- write ---- */

/* Write src to bytes [a, b) of guest cluster gc. */
static int
write_cluster (struct qcow2_image *q, const uint8_t *src, uint64_t gc,
               uint64_t a, uint64_t b)
{
  struct qcow2_writer *w = q->w;
  uint64_t cs = q->cluster_size, len = MIN (cs, q->img.size - gc);
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t idx = (gc >> q->cluster_bits) & ((1ULL << q->l2_bits) - 1);
  uint64_t e, bm = 0, host, nhost, ne, nbm = 0;
  uint8_t *cb = w->cbuf, *p;
  bool compressed, copied, allocated, zeroflag, reuse;
  struct qcow2_wslot *t;
  int r = -1;

  if (b > len)
    len = b;
  if (l2_for_write (q, gc >> cov_bits, &t) < 0)
    return -1;
  p = t->data + idx * q->l2_entry_bytes;
  e = load_be64 (p);
  if (q->extended_l2)
    bm = load_be64 (p + 8);
  compressed = (e & QCOW2_L2E_COMPRESSED) != 0;
  copied = (e & QCOW2_L2E_COPIED) != 0;
  host = e & QCOW2_L2E_OFFSET_MASK;
  allocated = !compressed && (host != 0 || (q->has_data_file && copied));
  zeroflag = !compressed && !q->extended_l2 && q->version >= 3
    && (e & QCOW2_L2E_ZERO);
  reuse = allocated && (copied || q->has_data_file);
  if (q->has_data_file)
    host = gc;
  else if (allocated
           && (!IS_ALIGNED (host, cs) || host < cs
               || host >= MAX (w->alloc_end,
                               qcow2_file_size (q, false, true)))) {
    vd_error ("qcow2: %s: L2 entry %#" PRIx64 " for guest offset %#" PRIx64
              " points outside the file or into the header", q->img.path,
              e, gc);
    errno = EIO;
    goto out;
  }

  if (!q->extended_l2 || compressed) {
    if (reuse && !zeroflag) {
      /* Ours alone: in place. */
      r = pwrite_data (q, src, b - a, host + a, true);
      goto out;
    }
    if ((a > 0 || b < len) && read_view (q, cb, gc, 0, len) < 0)
      goto out;
    if (q->has_data_file || reuse)
      nhost = host;
    else {
      int64_t x = qcow2_alloc_clusters (q, 1);
      if (x < 0)
        goto out;
      nhost = x;
    }
    if (a == 0 && b == len) {
      if (pwrite_data (q, src, len, nhost, true) < 0)
        goto out;
    }
    else {
      memcpy (cb + a, src, b - a);
      if (pwrite_data (q, cb, len, nhost, false) < 0)
        goto out;
    }
    ne = nhost | QCOW2_L2E_COPIED;
    nbm = SC_ALL;
  }
  else {
    unsigned sb = q->subcluster_bits;
    uint64_t ssz = 1ULL << sb;
    uint64_t A = a & ~(ssz - 1), B = MIN (ROUND_UP (b, ssz), cs);
    uint64_t M = (SC_ALL >> (31 - ((B - 1) >> sb)))
      & ~((1ULL << (A >> sb)) - 1);
    uint64_t alloc = bm & SC_ALL, zero = bm >> 32, keep = 0;

    M &= SC_ALL;
    if ((a != A || b != B) && read_view (q, cb + A, gc, A, B - A) < 0)
      goto out;
    if (reuse)
      nhost = host;
    else {
      if (q->has_data_file)
        nhost = gc;
      else {
        int64_t x = qcow2_alloc_clusters (q, 1);
        if (x < 0)
          goto out;
        nhost = x;
      }
      if (allocated) {
        /* A shared cluster: its allocated subclusters come along. */
        uint64_t s;

        keep = alloc;
        if (vd_pread_full (q->data_fd, w->cbuf2, cs, host, true) < 0) {
          vd_error ("qcow2: %s: read at %#" PRIx64 ": %m", q->img.path, host);
          goto out;
        }
        for (s = 0; s < 32; s++)
          if (((keep >> s) & 1) && !((M >> s) & 1)
              && pwrite_data (q, w->cbuf2 + s * ssz, ssz, nhost + s * ssz,
                             false) < 0)
            goto out;
      }
    }
    memcpy (cb + a, src, b - a);
    if (pwrite_data (q, cb + A, B - A, nhost + A, false) < 0)
      goto out;
    if (!reuse)
      alloc = keep;
    ne = nhost | QCOW2_L2E_COPIED;
    nbm = ((zero & ~M) << 32) | alloc | M;
  }
  if (!reuse && (compressed || allocated) && qcow2_free_entry (q, e) < 0)
    goto out;
  if (ne != e || (q->extended_l2 && nbm != bm)) {
    if (!nhost && !q->has_data_file) {
      errno = EIO;
      goto out;
    }
    store_be64 (p, ne);
    if (q->extended_l2)
      store_be64 (p + 8, compressed ? SC_ALL : nbm);
    qcow2_wcache_dirty (q, t);
    if (nhost + cs > w->alloc_end && !q->has_data_file)
      w->alloc_end = nhost + cs;
  }
  r = 0;
 out:
  qcow2_wcache_put (t);
  return r;
}

static int
maybe_writeback (struct qcow2_image *q, uint64_t bytes)
{
  q->w->since_writeback += bytes;
  if (q->w->since_writeback >= QCOW2_WRITEBACK_BYTES)
    return qcow2_writeback (q);
  return 0;
}

int
qcow2_write (struct vd_image *img, const void *buf, size_t count,
             uint64_t offset)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  const uint8_t *src = buf;
  uint64_t cs = q->cluster_size, total = count;

  if (q->w->failed) {
    errno = EIO;
    return -1;
  }
  if (qcow2_bitmaps_mark (q, offset, count) < 0)
    return -1;
  while (count > 0) {
    uint64_t gc = offset & ~(cs - 1), a = offset - gc;
    uint64_t n = MIN (cs - a, count);

    if (write_cluster (q, src, gc, a, a + n) < 0) {
      int e = errno;
      qcow2_write_pending (q);
      errno = e;
      return -1;
    }
    src += n;
    offset += n;
    count -= n;
    if (q->w->nfrees >= 4096 && count > 0
        && (qcow2_write_pending (q) < 0 || qcow2_safe_point (q) < 0))
      return -1;
  }
  if (qcow2_write_pending (q) < 0)
    return -1;
  return maybe_writeback (q, total);
}

/* ---- zero ---- */

enum zmode { Z_UNALLOC, Z_FLAG, Z_DATA };

/* Does the backing file read as zeros over [off, off + len)? */
int
qcow2_backing_zero (struct qcow2_image *q, uint64_t off, uint64_t len,
                    bool *zero)
{
  uint64_t end, bsize;

  *zero = true;
  if (!q->backing)
    return 0;
  bsize = vd_image_size (q->backing);
  end = MIN (off + len, bsize);
  while (off < end) {
    struct vd_extent ex;

    if (vd_image_block_status (q->backing, off, end - off, &ex) < 0)
      return -1;
    if (ex.type == VD_EXTENT_DATA) {
      *zero = false;
      return 0;
    }
    off += ex.length;
  }
  return 0;
}

static int
zero_data_file (struct qcow2_image *q, uint64_t off, uint64_t len)
{
  uint64_t end = MIN (off + len, q->img.size);

  if (!q->has_data_file || end <= off)
    return 0;
  if (!q->data_raw)
    return qcow2_punch (q, q->data_fd, off, end - off);
  /* The raw data file must read as the disk: zeros, whatever it takes. */
  if (fallocate (q->data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 off, end - off) == 0)
    return 0;
  memset (q->w->cbuf2, 0, q->cluster_size);
  while (off < end) {
    uint64_t n = MIN (end - off, q->cluster_size);
    if (pwrite_data (q, q->w->cbuf2, n, off, false) < 0)
      return -1;
    off += n;
  }
  return 0;
}

/* Zero [a, b) of guest cluster gc (aligned to zero_align, b possibly at
 * the disk's end). */
static int
zero_cluster (struct qcow2_image *q, uint64_t gc, uint64_t a, uint64_t b)
{
  uint64_t cs = q->cluster_size, len = MIN (cs, q->img.size - gc);
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t idx = (gc >> q->cluster_bits) & ((1ULL << q->l2_bits) - 1);
  bool whole = a == 0 && b >= len, has_backing = q->backing_name != NULL;
  enum zmode mode;
  uint64_t e, bm, ne, nbm = 0;
  struct qcow2_wslot *t;
  uint8_t *p;

  if (!has_backing)
    mode = Z_UNALLOC;
  else if (q->version >= 3)
    mode = Z_FLAG;
  else {
    bool bz;

    if (qcow2_backing_zero (q, gc + a, b - a, &bz) < 0)
      return -1;
    mode = bz ? Z_UNALLOC : Z_DATA;
  }
  if (peek_entry (q, gc, &e, &bm) < 0)
    return -1;
  if (mode == Z_DATA || (!whole && !q->extended_l2)
      || (!whole && (e & QCOW2_L2E_COMPRESSED))) {
    /* Allocated zeros (v2 over backing data), or a part of a cluster
     * without subclusters: zeros written as data. */
    memset (q->w->cbuf2, 0, cs);
    return write_cluster (q, q->w->cbuf2, gc, a, b);
  }
  if (!q->extended_l2) {
    ne = mode == Z_FLAG ? QCOW2_L2E_ZERO : 0;
    if (e == ne)
      return 0;
  }
  else {
    uint64_t sb = q->subcluster_bits, ssz = 1ULL << sb;
    uint64_t B = MIN (ROUND_UP (b, ssz), cs);
    uint64_t M = (SC_ALL >> (31 - ((B - 1) >> sb)))
      & ~((1ULL << (a >> sb)) - 1);
    uint64_t alloc, zero;

    if (e & QCOW2_L2E_COMPRESSED) {
      ne = 0;
      nbm = mode == Z_FLAG ? SC_ALL << 32 : 0;
    }
    else {
      alloc = bm & SC_ALL & ~M;
      zero = mode == Z_FLAG ? (bm >> 32) | M : (bm >> 32) & ~M;
      nbm = (zero << 32) | alloc;
      ne = alloc ? e : 0;
    }
    if (e == ne && bm == nbm)
      return 0;
  }
  if (l2_for_write (q, gc >> cov_bits, &t) < 0)
    return -1;
  p = t->data + idx * q->l2_entry_bytes;
  e = load_be64 (p);           /* unchanged by a copy of the table */
  if (ne != e && qcow2_free_entry (q, e) < 0) {
    qcow2_wcache_put (t);
    return -1;
  }
  store_be64 (p, ne);
  if (q->extended_l2)
    store_be64 (p + 8, nbm);
  qcow2_wcache_dirty (q, t);
  qcow2_wcache_put (t);
  return zero_data_file (q, gc + a, b - a);
}

/* Zero the whole range of L2 table l1i without a backing file: drop the
 * table (our reference to it and, through it, to its clusters). */
static int
zero_table (struct qcow2_image *q, uint64_t l1i)
{
  struct qcow2_writer *w = q->w;
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t off = w->l1[l1i] & QCOW2_L1E_OFFSET_MASK, i;
  struct qcow2_wslot *t;

  if (off == 0)
    return 0;
  t = qcow2_wcache_get (q, off, QW_L2, false);
  if (!t)
    return -1;
  for (i = 0; i < (1ULL << q->l2_bits); i++) {
    uint64_t e = load_be64 (t->data + i * q->l2_entry_bytes);

    if (e && qcow2_free_entry (q, e) < 0) {
      qcow2_wcache_put (t);
      return -1;
    }
  }
  qcow2_wcache_put (t);
  qcow2_wcache_drop (q, off);
  qcow2_l1_set (q, l1i, 0);
  if (qcow2_free_later (q, off, q->cluster_size) < 0)
    return -1;
  return zero_data_file (q, l1i << cov_bits, 1ULL << cov_bits);
}

/* Zero the first n clusters of L2 table l1i's range, v3 with a backing
 * file: every entry a zero flag (zero bits of every subcluster), one
 * pass over the table. */
static int
zero_table_flags (struct qcow2_image *q, uint64_t l1i, uint64_t n)
{
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t ne = q->extended_l2 ? 0 : QCOW2_L2E_ZERO;
  uint64_t nbm = SC_ALL << 32, i;
  struct qcow2_wslot *t;

  if (l2_for_write (q, l1i, &t) < 0)
    return -1;
  for (i = 0; i < n; i++) {
    uint8_t *p = t->data + i * q->l2_entry_bytes;
    uint64_t e = load_be64 (p);

    if (e != ne && qcow2_free_entry (q, e) < 0) {
      qcow2_wcache_put (t);
      return -1;
    }
    store_be64 (p, ne);
    if (q->extended_l2)
      store_be64 (p + 8, nbm);
  }
  qcow2_wcache_dirty (q, t);
  qcow2_wcache_put (t);
  return zero_data_file (q, l1i << cov_bits, n << q->cluster_bits);
}

int
qcow2_zero (struct vd_image *img, uint64_t count, uint64_t offset)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  uint64_t cs = q->cluster_size, end = offset + count, total = count;
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t cov = 1ULL << cov_bits;

  if (q->w->failed) {
    errno = EIO;
    return -1;
  }
  if (qcow2_bitmaps_mark (q, offset, count) < 0)
    return -1;
  while (offset < end) {
    uint64_t gc = offset & ~(cs - 1), a = offset - gc;
    uint64_t n = MIN (cs - a, end - offset);

    if (!q->backing_name && (offset & (cov - 1)) == 0
        && (end - offset >= cov || end == q->img.size)) {
      uint64_t l1i = offset >> cov_bits;

      if (zero_table (q, l1i) < 0 || qcow2_safe_point (q) < 0)
        return -1;
      offset = MIN (offset + cov, end);
      continue;
    }
    if (q->backing_name && q->version >= 3 && (offset & (cov - 1)) == 0
        && (end - offset >= cov || end == q->img.size)) {
      uint64_t l1i = offset >> cov_bits, len = MIN (cov, end - offset);

      if (zero_table_flags (q, l1i, DIV_ROUND_UP (len, cs)) < 0
          || qcow2_safe_point (q) < 0)
        return -1;
      offset += len;
      continue;
    }
    if (zero_cluster (q, gc, a, a + n) < 0) {
      int e = errno;
      qcow2_write_pending (q);
      errno = e;
      return -1;
    }
    offset += n;
    if (q->w->nfrees >= 4096
        && (qcow2_write_pending (q) < 0 || qcow2_safe_point (q) < 0))
      return -1;
  }
  if (qcow2_write_pending (q) < 0)
    return -1;
  /* A big zero (O_TRUNC zeroes the whole disk) freed clusters that the
   * restore's writes should reuse, not grow the file past: free them
   * now. */
  if (q->w->free_clusters << q->cluster_bits >= QCOW2_REUSE_BYTES)
    return qcow2_writeback (q);
  return maybe_writeback (q, total);
}

int
qcow2_flush (struct vd_image *img)
{
  struct qcow2_image *q = (struct qcow2_image *) img;

  if (qcow2_writeback (q) < 0)
    return -1;
  return qcow2_sync (q, true);
}

/* ---- resize (grow) ---- */

int
qcow2_resize (struct vd_image *img, uint64_t size)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  struct qcow2_writer *w = q->w;
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t need = DIV_ROUND_UP (size, 1ULL << cov_bits), i;
  uint64_t old_l1_off = q->l1_offset, old_size;
  uint64_t old_bytes = (uint64_t) w->l1_disk_size * 8;
  uint64_t *nl1 = NULL, *rl1;
  uint8_t hb[24];
  int64_t noff = -1;

  if (w->failed) {
    errno = EIO;
    return -1;
  }
  if (qcow2_bitmaps_active (q)) {
    vd_error ("qcow2: %s: cannot grow an image with auto dirty bitmaps "
              "(they would have to grow too)", q->img.path);
    errno = ENOTSUP;
    return -1;
  }
  if (need * 8 > QCOW2_MAX_L1_BYTES || size > INT64_MAX) {
    errno = EFBIG;
    return -1;
  }
  if (qcow2_writeback (q) < 0)
    return -1;
  if (need > w->l1_disk_size) {
    uint64_t nclusters = DIV_ROUND_UP (need * 8, q->cluster_size);
    uint64_t nentries = nclusters * q->cluster_size / 8;
    CLEANUP_FREE uint64_t *disk = calloc (nentries, 8);

    nl1 = calloc (nentries, 8);
    if (!nl1 || !disk)
      goto fail;
    memcpy (nl1, w->l1, old_bytes);
    for (i = 0; i < w->l1_disk_size; i++)
      store_be64 (&disk[i], w->l1[i]);
    if ((noff = qcow2_alloc_clusters (q, nclusters)) < 0)
      goto fail;
    if (pwrite (q->fd, disk, nentries * 8, noff) != (ssize_t) (nentries * 8)) {
      vd_error ("qcow2: %s: cannot write the new L1 table: %m", q->img.path);
      goto fail;
    }
    /* Its refcounts and contents durable before the header points to it. */
    if (qcow2_writeback (q) < 0 || qcow2_sync (q, false) < 0)
      goto fail;
    need = nentries;
  }
  else
    need = w->l1_disk_size;
  store_be64 (hb, size);
  store_be32 (hb + 8, 0);                       /* crypt_method */
  store_be32 (hb + 12, need);
  store_be64 (hb + 16, noff >= 0 ? (uint64_t) noff : old_l1_off);
  if (pwrite (q->fd, hb, sizeof hb, 24) != sizeof hb
      || qcow2_sync (q, false) < 0) {
    vd_error ("qcow2: %s: cannot write the header: %m", q->img.path);
    goto fail;
  }
  if (nl1) {
    free (w->l1);
    w->l1 = nl1;
    nl1 = NULL;
    w->l1_disk_size = need;
    q->l1_offset = noff;
    if (old_bytes && qcow2_free_later (q, old_l1_off, old_bytes) < 0)
      return -1;
  }
  /* The readers' L1: the entries the new size needs. */
  need = DIV_ROUND_UP (size, 1ULL << cov_bits);
  rl1 = realloc (q->l1, MAX (need, 1) * 8);
  if (!rl1)
    return -1;
  q->l1 = rl1;
  for (i = 0; i < need; i++)
    q->l1[i] = w->l1[i] & QCOW2_L1E_OFFSET_MASK;
  q->l1_size = need;
  old_size = q->img.size;
  q->img.size = size;
  /* A raw data file is the disk: as long as it. */
  if (q->data_raw && vd_fd_size (q->data_fd) < (int64_t) size
      && ftruncate (q->data_fd, size) < 0) {
    vd_error ("qcow2: %s: cannot grow the data file: %m", q->img.path);
    return -1;
  }
  /* The new part reads as zeros, also where a longer backing file would
   * show through. */
  {
    /* qcow2_zero takes whole (sub)clusters: the one holding the old end
     * keeps its bytes below it, zeros written over the rest of it when
     * it holds data there (a cluster the image was shrunk into) or a
     * longer backing file shows through. */
    static const char zeros[65536];
    bool longer = q->backing && vd_image_size (q->backing) > old_size;
    uint64_t zend = longer ? MIN (size, vd_image_size (q->backing)) : size;
    uint64_t a = img->zero_align ? img->zero_align : q->cluster_size;
    uint64_t c = q->cluster_size;
    uint64_t head = MIN ((old_size + a - 1) & ~(a - 1), size), pos;
    uint64_t cend = MIN ((old_size + c - 1) & ~(c - 1), size);
    struct vd_extent e;
    bool data = false;

    /* Data anywhere in the rest of the cluster (zero and unallocated
     * subclusters side by side are not data). */
    for (pos = old_size; !longer && pos < cend; pos += e.length)
      if (qcow2_block_status (img, pos, cend - pos, &e) < 0
          || e.type == VD_EXTENT_DATA || e.length == 0) {
        data = true;
        break;
      }
    if (cend > old_size && (longer || data)) {
      /* The partial (sub)cluster by writing, the rest of the cluster (its
       * other subclusters) by zeroing.  The partial one only when it
       * shows data past the old end (its own or the backing file's): one
       * with the zero flag, or over a hole, already reads as zeros, and
       * writing would allocate it for nothing. */
      bool head_data = false;

      for (pos = old_size; pos < head; pos += e.length)
        if (qcow2_block_status (img, pos, head - pos, &e) < 0
            || e.type == VD_EXTENT_DATA || e.length == 0) {
          head_data = true;
          break;
        }
      for (pos = old_size; head_data && pos < head; ) {
        size_t n = MIN (head - pos, sizeof zeros);
        if (qcow2_write (img, zeros, n, pos) < 0)
          return -1;
        pos += n;
      }
      if (head < cend && qcow2_zero (img, cend - head, head) < 0)
        return -1;
    }
    else
      cend = old_size;
    if (longer && MAX (cend, head) < zend
        && qcow2_zero (img, zend - MAX (cend, head), MAX (cend, head)) < 0)
      return -1;
  }
  return qcow2_writeback (q);

 fail:
  free (nl1);
  return -1;
}
