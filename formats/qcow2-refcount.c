/* vmdiskfs - qcow2 driver (write side): refcounts, cluster allocation,
 * deferred frees, and the write-back that orders every metadata write.
 *
 * == Host cluster management == of qemu's docs/interop/qcow2.txt: a
 * refcount table (in memory here, raw entries) points to refcount blocks
 * of 2^rb_bits entries of refcount_bits = 1 << refcount_order bits each
 * (1 to 64; widths under a byte pack from the least significant bit).
 * Refcount blocks live in the writer's metadata cache (qcow2-cache.c)
 * beside the L2 tables.  Writing never uses lazy refcounts: every
 * refcount is exact at every write-back, the dirty bit is never set.
 *
 * Allocation searches from a hint (the lowest cluster that may be free)
 * for refcount 0, so the clusters a restore frees are used again and the
 * file does not grow with every restore; past the last refcount block a
 * new block is made at the first cluster of the range it describes (all
 * of which is free, having no block), describing itself.  When the table
 * cannot point to the block needed, the table grows (grow_reftable): the
 * new table and the blocks describing it go past everything the old
 * table covered, are written and synced, then the header is pointed at
 * them with one write of offset and size (bytes 48..59, one sector),
 * synced, and only then are the old table's clusters freed.
 *
 * == Write ordering ==, enforced here and only here (qcow2_writeback;
 * nothing else writes cached metadata; the rare header updates of reftable
 * growth, L1 growth and resize first call qcow2_writeback, then follow the
 * same rule):
 *
 *   1. data and refcount blocks (increments), then fdatasync;
 *   2. refcount table entries pointing to new blocks, then fdatasync;
 *   3. L2 tables, then fdatasync;
 *   4. L1 entries, then fdatasync;
 *   5. deferred frees: only now, the L2/L1 entries that dropped the
 *      references being durable, refcounts are decremented (in memory),
 *      clusters reaching 0 are punched out of the file (fallocate
 *      PUNCH_HOLE) and may be allocated again;
 *   6. the refcount blocks those decrements dirtied, then fdatasync.
 *
 * So on disk a refcount is never below the number of references to its
 * cluster, an entry never points to data not yet written nor to a table
 * not yet written, and a crash (kill -9, power cut) anywhere leaves at
 * worst clusters whose refcount is too high (leaks, which `qemu-img check
 * -r leaks` repairs).  COPIED flags stay exact on disk: a new cluster
 * gets COPIED with refcount 1 made durable before the entry; a shared
 * cluster is copied and its decrement waits as above.  Steps with nothing
 * to write are skipped, with their fdatasync.
 *
 * Write-back runs at flush (fsync, close), when the metadata cache is
 * full of dirty tables (the operation running is then at a consistent
 * point: every entry it changed has its new cluster written and its old
 * one queued for freeing), when the deferred frees pile up (checked
 * between clusters, qcow2_safe_point), and every
 * QCOW2_WRITEBACK_BYTES written (qcow2-write.c), so memory stays bounded.
 *
 * Threads: only under the image's write lock (format.c), one thread.
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
#include <linux/falloc.h>

#include "vdformat.h"
#include "qcow2.h"
#include "log.h"
#include "endian.h"
#include "cleanup.h"

#define MAX_FREE_RUNS 65536       /* deferred free runs before a write-back */

/* ---- Refcount entries inside a block ---- */

static uint64_t
rb_get (const struct qcow2_image *q, const uint8_t *b, uint64_t i)
{
  unsigned order = q->refcount_order;

  switch (order) {
  case 0: case 1: case 2: {
    unsigned per = 8 >> order, bits = 1U << order;
    return (b[i / per] >> ((i % per) * bits)) & ((1U << bits) - 1);
  }
  case 3: return b[i];
  case 4: return load_be16 (b + 2 * i);
  case 5: return load_be32 (b + 4 * i);
  default: return load_be64 (b + 8 * i);
  }
}

static void
rb_set (const struct qcow2_image *q, uint8_t *b, uint64_t i, uint64_t v)
{
  unsigned order = q->refcount_order;

  switch (order) {
  case 0: case 1: case 2: {
    unsigned per = 8 >> order, bits = 1U << order;
    unsigned shift = (i % per) * bits, mask = ((1U << bits) - 1) << shift;
    b[i / per] = (b[i / per] & ~mask) | ((v << shift) & mask);
    break;
  }
  case 3: b[i] = v; break;
  case 4: store_be16 (b + 2 * i, v); break;
  case 5: store_be32 (b + 4 * i, v); break;
  default: store_be64 (b + 8 * i, v); break;
  }
}

/* ---- The refcount table ---- */

int
qcow2_refcount_open (struct qcow2_image *q, uint64_t rt_offset,
                     uint32_t rt_clusters)
{
  struct qcow2_writer *w = q->w;
  uint64_t bytes = (uint64_t) rt_clusters << q->cluster_bits, i;
  uint64_t fsize = qcow2_file_size (q, false, true);

  w->rb_bits = q->cluster_bits + 3 - q->refcount_order;
  w->rc_max = q->refcount_order == 6 ? UINT64_MAX
    : (1ULL << (1U << q->refcount_order)) - 1;
  w->rt_offset = rt_offset;
  w->rt_clusters = rt_clusters;
  w->rt_entries = bytes / 8;
  w->rt = malloc (bytes);
  if (!w->rt)
    return -1;
  if (vd_pread_full (q->fd, w->rt, bytes, rt_offset, false) < 0) {
    vd_error ("qcow2: %s: cannot read the refcount table: %m", q->img.path);
    errno = EIO;
    return -1;
  }
  for (i = 0; i < w->rt_entries; i++) {
    uint64_t e = load_be64 (&w->rt[i]);

    w->rt[i] = e;
    if (e == 0)
      continue;
    if ((e & 511) || !IS_ALIGNED (e, q->cluster_size) || e < q->cluster_size
        || e >= fsize) {
      vd_error ("qcow2: %s: refcount table entry %" PRIu64 " (%#" PRIx64
                ") invalid; run qemu-img check -r all", q->img.path, i, e);
      errno = EIO;
      return -1;
    }
  }
  w->rt_dirty_lo = UINT64_MAX;
  w->rt_dirty_hi = 0;
  w->free_hint = 1;
  w->alloc_end = fsize;
  return 0;
}

/* The refcount block slot describing cluster idx, pinned; *slot NULL
 * when there is none (all its refcounts are 0). */
static int
get_block (struct qcow2_image *q, uint64_t idx, struct qcow2_wslot **slot)
{
  struct qcow2_writer *w = q->w;
  uint64_t ri = idx >> w->rb_bits;

  *slot = NULL;
  if (ri >= w->rt_entries || w->rt[ri] == 0)
    return 0;
  *slot = qcow2_wcache_get (q, w->rt[ri], QW_REFBLOCK, false);
  return *slot ? 0 : -1;
}

int
qcow2_refcount_get (struct qcow2_image *q, uint64_t idx, uint64_t *rc)
{
  struct qcow2_wslot *s;

  if (get_block (q, idx, &s) < 0)
    return -1;
  *rc = s ? rb_get (q, s->data, idx & ((1ULL << q->w->rb_bits) - 1)) : 0;
  qcow2_wcache_put (s);
  return 0;
}

int
qcow2_refcount_set (struct qcow2_image *q, uint64_t idx, uint64_t rc)
{
  struct qcow2_wslot *s;

  if (get_block (q, idx, &s) < 0)
    return -1;
  if (!s) {
    vd_error ("qcow2: %s: no refcount block for cluster %#" PRIx64,
              q->img.path, idx << q->cluster_bits);
    errno = EIO;
    return -1;
  }
  rb_set (q, s->data, idx & ((1ULL << q->w->rb_bits) - 1), rc);
  qcow2_wcache_dirty (q, s);
  qcow2_wcache_put (s);
  return 0;
}

int
qcow2_sync (struct qcow2_image *q, bool data)
{
  if (fdatasync (q->fd) < 0
      || (data && q->data_fd != q->fd && q->data_fd >= 0
          && fdatasync (q->data_fd) < 0)) {
    vd_error ("qcow2: %s: fdatasync: %m", q->img.path);
    return -1;
  }
  return 0;
}

static void
rt_dirty (struct qcow2_writer *w, uint64_t i)
{
  w->rt_dirty_lo = MIN (w->rt_dirty_lo, i);
  w->rt_dirty_hi = MAX (w->rt_dirty_hi, i + 1);
}

/* Write the header's refcount table fields: one write of 12 bytes
 * inside the first sector. */
static int
write_rt_header (struct qcow2_image *q, uint64_t off, uint32_t clusters)
{
  uint8_t b[12];

  store_be64 (b, off);
  store_be32 (b + 8, clusters);
  if (pwrite (q->fd, b, sizeof b, QCOW2_REFTABLE_OFFSET) != sizeof b) {
    vd_error ("qcow2: %s: cannot write the header: %m", q->img.path);
    return -1;
  }
  return 0;
}

/* Make the refcount table cover refcount block index need (>= its
 * entries now).  See the head comment. */
static int
grow_reftable (struct qcow2_image *q, uint64_t need)
{
  struct qcow2_writer *w = q->w;
  uint64_t cs = q->cluster_size, per = 1ULL << w->rb_bits;
  uint64_t b0 = w->rt_entries, entries, tc, k, s, j, c, old_off;
  uint32_t old_clusters;
  uint64_t *nrt = NULL;
  uint8_t *blocks = NULL;
  int r = -1;

  if (qcow2_writeback (q) < 0)
    return -1;
  entries = MAX (need + 1, w->rt_entries * 2);
  for (;;) {
    tc = DIV_ROUND_UP (entries * 8, cs);
    entries = tc * cs / 8;
    for (k = 1; k * per < k + tc; k++)
      ;
    if (b0 + k <= entries)
      break;
    entries = b0 + k + 1;
  }
  if (tc * cs > QCOW2_MAX_REFTABLE_BYTES) {
    vd_error ("qcow2: %s: the refcount table would exceed %u bytes",
              q->img.path, QCOW2_MAX_REFTABLE_BYTES);
    errno = EFBIG;
    return -1;
  }
  s = b0 * per;                 /* first cluster beyond the old cover    */
  if ((s + k + tc) << q->cluster_bits >> q->cluster_bits != s + k + tc
      || ((s + k + tc) << q->cluster_bits) > (1ULL << 56)) {
    errno = EFBIG;
    return -1;
  }
  blocks = calloc (k, cs);
  nrt = calloc (entries, 8);
  if (!blocks || !nrt)
    goto out;
  for (c = s; c < s + k + tc; c++) {
    j = (c >> w->rb_bits) - b0;
    rb_set (q, blocks + j * cs, c & (per - 1), 1);
  }
  for (j = 0; j < w->rt_entries; j++)
    store_be64 (&nrt[j], w->rt[j]);
  for (j = 0; j < k; j++)
    store_be64 (&nrt[b0 + j], (s + j) << q->cluster_bits);
  if (pwrite (q->fd, blocks, k * cs, s << q->cluster_bits)
      != (ssize_t) (k * cs)
      || pwrite (q->fd, nrt, tc * cs, (s + k) << q->cluster_bits)
      != (ssize_t) (tc * cs)) {
    vd_error ("qcow2: %s: cannot write the new refcount table: %m",
              q->img.path);
    goto out;
  }
  if (qcow2_sync (q, false) < 0
      || write_rt_header (q, (s + k) << q->cluster_bits, tc) < 0
      || qcow2_sync (q, false) < 0)
    goto out;
  vd_debug ("qcow2: %s: refcount table grown to %" PRIu64 " entries at %#"
            PRIx64, q->img.path, entries, (s + k) << q->cluster_bits);
  /* Now in effect: switch, then free the old table. */
  old_off = w->rt_offset;
  old_clusters = w->rt_clusters;
  for (j = 0; j < entries; j++)
    nrt[j] = load_be64 (&nrt[j]);
  free (w->rt);
  w->rt = nrt;
  nrt = NULL;
  w->rt_entries = entries;
  w->rt_offset = (s + k) << q->cluster_bits;
  w->rt_clusters = tc;
  w->alloc_end = MAX (w->alloc_end, (s + k + tc) << q->cluster_bits);
  r = qcow2_free_later (q, old_off,
                        (uint64_t) old_clusters << q->cluster_bits);
 out:
  free (blocks);
  free (nrt);
  return r;
}

/* Make a refcount block for block index ri (no block yet): at the first
 * cluster of the range it describes, all free. */
static int
new_block (struct qcow2_image *q, uint64_t ri)
{
  struct qcow2_writer *w = q->w;
  uint64_t off = ri << (w->rb_bits + q->cluster_bits);
  struct qcow2_wslot *s;

  s = qcow2_wcache_get (q, off, QW_REFBLOCK, true);
  if (!s)
    return -1;
  rb_set (q, s->data, 0, 1);
  qcow2_wcache_dirty (q, s);
  qcow2_wcache_put (s);
  w->rt[ri] = off;
  rt_dirty (w, ri);
  w->alloc_end = MAX (w->alloc_end, off + q->cluster_size);
  return 0;
}

int64_t
qcow2_alloc_clusters (struct qcow2_image *q, uint64_t n)
{
  struct qcow2_writer *w = q->w;
  uint64_t per = 1ULL << w->rb_bits, idx = w->free_hint, run = 0, start = 0;
  uint64_t i;

  if (w->failed) {
    errno = EIO;
    return -1;
  }
  for (;;) {
    uint64_t ri = idx >> w->rb_bits;
    struct qcow2_wslot *s;

    if (idx >= (1ULL << (56 - q->cluster_bits))) {
      errno = EFBIG;
      return -1;
    }
    if (ri >= w->rt_entries) {
      if (grow_reftable (q, ri) < 0)
        return -1;
      continue;               /* the table and its blocks took clusters */
    }
    if (w->rt[ri] == 0 && new_block (q, ri) < 0)
      return -1;
    if (get_block (q, idx, &s) < 0)
      return -1;
    /* Scan the rest of this block. */
    for (; (idx >> w->rb_bits) == ri; idx++) {
      if (rb_get (q, s->data, idx & (per - 1)) != 0) {
        run = 0;
        continue;
      }
      if (run == 0)
        start = idx;
      if (++run == n)
        break;
    }
    qcow2_wcache_put (s);
    if (run == n)
      break;
  }
  for (i = start; i < start + n; i++)
    if (qcow2_refcount_set (q, i, 1) < 0)
      return -1;
  if (n == 1 || start == w->free_hint)
    w->free_hint = start + n;
  w->alloc_end = MAX (w->alloc_end, (start + n) << q->cluster_bits);
  return (int64_t) (start << q->cluster_bits);
}

int
qcow2_free_later (struct qcow2_image *q, uint64_t off, uint64_t len)
{
  struct qcow2_writer *w = q->w;
  uint64_t first = off >> q->cluster_bits;
  uint64_t count = ((off + len - 1) >> q->cluster_bits) - first + 1;
  struct qcow2_frun *f;

  if (len == 0)
    return 0;
  w->free_clusters += count;
  if (first == 0) {
    vd_error ("qcow2: %s: metadata points into the header cluster; "
              "run qemu-img check", q->img.path);
    errno = EIO;
    return -1;
  }
  if (w->nfrees > 0) {
    f = &w->frees[w->nfrees - 1];
    if (f->first + f->count == first) {
      f->count += count;
      return 0;
    }
  }
  if (w->nfrees == w->frees_cap) {
    size_t nc = w->frees_cap ? 2 * w->frees_cap : 256;
    struct qcow2_frun *nf = realloc (w->frees, nc * sizeof *nf);

    if (!nf)
      return -1;
    w->frees = nf;
    w->frees_cap = nc;
  }
  w->frees[w->nfrees++] = (struct qcow2_frun) { first, count };
  w->meta_dirty = true;
  /* Never a write-back from here: the caller queues the free before it
   * changes the entry (the on-disk table still points to the cluster);
   * qcow2_safe_point writes back between clusters instead. */
  return 0;
}

int
qcow2_safe_point (struct qcow2_image *q)
{
  if (q->w->nfrees >= MAX_FREE_RUNS)
    return qcow2_writeback (q);
  return 0;
}

int
qcow2_punch (struct qcow2_image *q, int fd, uint64_t off, uint64_t len)
{
  if (q->w->no_punch || len == 0)
    return 0;
  if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len)
      < 0) {
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == ENODEV) {
      q->w->no_punch = true;
      return 0;
    }
    vd_error ("qcow2: %s: cannot punch a hole at %#" PRIx64 ": %m",
              q->img.path, off);
    return -1;
  }
  return 0;
}

/* The file range to punch for cluster c, just freed: the cluster, or
 * with clusters under 4 KiB the whole 4 KiB block around it when all of
 * it is free (a file system frees only whole blocks). */
static int
punch_range (struct qcow2_image *q, uint64_t c, uint64_t *start,
             uint64_t *len)
{
  uint64_t per = 4096 >> q->cluster_bits, base, i, rc;

  *start = c << q->cluster_bits;
  *len = q->cluster_size;
  if (per <= 1)
    return 0;
  base = c & ~(per - 1);
  for (i = base; i < base + per; i++) {
    if (i == 0 || qcow2_refcount_get (q, i, &rc) < 0)
      return i == 0 ? 0 : -1;
    if (rc != 0)
      return 0;
  }
  *start = base << q->cluster_bits;
  *len = 4096;
  return 0;
}

/* Step 5: the references are gone on disk; decrement. */
static int
apply_frees (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  uint64_t punch_start = 0, punch_len = 0;
  size_t i;

  for (i = 0; i < w->nfrees; i++) {
    uint64_t c;

    for (c = w->frees[i].first; c < w->frees[i].first + w->frees[i].count;
         c++) {
      uint64_t rc, ps, pl;

      if (qcow2_refcount_get (q, c, &rc) < 0)
        return -1;
      if (rc == 0) {
        /* A second reference to a cluster whose refcount said one:
         * the image was inconsistent before; never go below 0. */
        vd_warn ("qcow2: %s: cluster %#" PRIx64 " freed with refcount 0; "
                 "run qemu-img check", q->img.path, c << q->cluster_bits);
        continue;
      }
      if (qcow2_refcount_set (q, c, rc - 1) < 0)
        return -1;
      if (rc - 1 != 0)
        continue;
      qcow2_wcache_drop (q, c << q->cluster_bits);
      if (c < w->free_hint)
        w->free_hint = c;
      if (punch_range (q, c, &ps, &pl) < 0)
        return -1;
      if (punch_len && ps >= punch_start && ps <= punch_start + punch_len) {
        if (ps + pl > punch_start + punch_len)
          punch_len = ps + pl - punch_start;
      }
      else {
        if (qcow2_punch (q, q->fd, punch_start, punch_len) < 0)
          return -1;
        punch_start = ps;
        punch_len = pl;
      }
    }
  }
  w->nfrees = 0;
  w->free_clusters = 0;
  return qcow2_punch (q, q->fd, punch_start, punch_len);
}

static int
write_rt (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  uint64_t lo = w->rt_dirty_lo & ~63ULL;
  uint64_t hi = MIN (w->rt_entries, (w->rt_dirty_hi + 63) & ~63ULL);
  CLEANUP_FREE uint64_t *buf = malloc ((hi - lo) * 8);
  uint64_t i;

  if (!buf)
    return -1;
  for (i = lo; i < hi; i++)
    store_be64 (&buf[i - lo], w->rt[i]);
  if (pwrite (q->fd, buf, (hi - lo) * 8, w->rt_offset + lo * 8)
      != (ssize_t) ((hi - lo) * 8)) {
    vd_error ("qcow2: %s: cannot write the refcount table: %m", q->img.path);
    return -1;
  }
  w->rt_dirty_lo = UINT64_MAX;
  w->rt_dirty_hi = 0;
  return 0;
}

static int
write_l1 (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  uint64_t lo = w->l1_dirty_lo & ~63U;
  uint64_t hi = MIN ((uint64_t) w->l1_disk_size,
                     (w->l1_dirty_hi + 63ULL) & ~63ULL);
  CLEANUP_FREE uint64_t *buf = malloc ((hi - lo) * 8);
  uint64_t i;

  if (!buf)
    return -1;
  for (i = lo; i < hi; i++)
    store_be64 (&buf[i - lo], w->l1[i]);
  if (pwrite (q->fd, buf, (hi - lo) * 8, q->l1_offset + lo * 8)
      != (ssize_t) ((hi - lo) * 8)) {
    vd_error ("qcow2: %s: cannot write the L1 table: %m", q->img.path);
    return -1;
  }
  w->l1_dirty_lo = UINT32_MAX;
  w->l1_dirty_hi = 0;
  return 0;
}

/* The file must reach the end of every cluster in use (a cluster of
 * zeros allocated at the end is not written): with the data, step 1. */
static int
extend_file (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  uint64_t fsize = qcow2_file_size (q, false, true);

  if (w->alloc_end > fsize) {
    if (ftruncate (q->fd, w->alloc_end) < 0) {
      vd_error ("qcow2: %s: cannot extend the file: %m", q->img.path);
      return -1;
    }
    qcow2_file_size (q, false, true);
  }
  return 0;
}

int
qcow2_writeback (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  bool any = false;
  int r = -1;

  if (w->in_writeback)
    return 0;
  if (w->failed) {
    errno = EIO;
    return -1;
  }
  w->in_writeback = true;
  /* 1. data and refcount increments */
  if (qcow2_write_pending (q) < 0 || extend_file (q) < 0
      || qcow2_wcache_write (q, QW_REFBLOCK, &any) < 0)
    goto out;
  if ((any || w->data_dirty) && qcow2_sync (q, true) < 0)
    goto out;
  w->data_dirty = false;
  /* 2. refcount table entries of new blocks */
  if (w->rt_dirty_lo < w->rt_dirty_hi
      && (write_rt (q) < 0 || qcow2_sync (q, false) < 0))
    goto out;
  /* 3. L2 tables */
  any = false;
  if (qcow2_wcache_write (q, QW_L2, &any) < 0
      || (any && qcow2_sync (q, false) < 0))
    goto out;
  /* 4. L1 entries */
  if (w->l1_dirty_lo < w->l1_dirty_hi
      && (write_l1 (q) < 0 || qcow2_sync (q, false) < 0))
    goto out;
  /* 5. deferred frees, 6. their refcounts */
  if (w->nfrees > 0) {
    any = false;
    if (apply_frees (q) < 0
        || qcow2_wcache_write (q, QW_REFBLOCK, &any) < 0
        || (any && qcow2_sync (q, false) < 0))
      goto out;
  }
  w->meta_dirty = false;
  w->since_writeback = 0;
  r = 0;
 out:
  if (r < 0) {
    /* What is on disk is consistent (leaks at worst), what is in
     * memory may not reach it in order any more: stop writing. */
    w->failed = true;
    if (errno == 0)
      errno = EIO;
  }
  w->in_writeback = false;
  return r;
}
