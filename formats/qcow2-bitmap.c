/* vmdiskfs - qcow2 driver (write side): persistent dirty bitmaps.
 *
 * == Bitmaps == of qemu's docs/interop/qcow2.txt.  A bitmap with the
 * auto flag must show every change of the disk by whatever writes the
 * image, so that libvirt's checkpoints and incremental backups stay
 * valid.  What this writer does, the simplest correct way:
 *
 *  - at open for writing, the directory is read and the auto bitmaps
 *    (type 1, not already in_use, extra data absent or compatible) are
 *    remembered with their bitmap tables; nothing is written yet;
 *  - before the first change of the disk (write, zero, resize), their
 *    in_use flags are set in the directory and made durable: from then
 *    until close a crash leaves them marked inconsistent, never wrong;
 *  - every written or zeroed range is marked in one in-memory map at the
 *    smallest granularity of these bitmaps, made coarser (each bit for
 *    twice the bytes, again and again) until it fits in
 *    QCOW2_BITMAP_MEM bytes: a coarser bit sets more bitmap bits than
 *    needed, which costs an incremental backup some bytes, never a missed
 *    change;
 *  - at close the marks are ORed into each bitmap's data clusters (a
 *    table entry that read as all zeros gets a new cluster; one that
 *    reads as all ones needs nothing), the new clusters' refcounts made
 *    durable (write-back) before the table entries that use them, then
 *    in_use is cleared and synced.
 *
 * Resizing an image with auto bitmaps is refused (ENOTSUP): the bitmaps
 * would have to grow with it.  Bitmaps without the auto flag are left
 * alone (disabled bitmaps do not track writes).
 *
 * Threads: under the image's write lock only (format.c).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
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

#define QCOW2_BITMAP_MEM   (8U << 20)
#define BME_IN_USE         1U
#define BME_AUTO           2U
#define BME_EXTRA_COMPAT   4U
#define BME_OFFSET_MASK    0x00fffffffffffe00ULL

struct qcow2_bitmap {
  uint64_t dir_pos;             /* file offset of its directory entry     */
  uint32_t flags;
  unsigned gran_bits;
  uint64_t table_off;
  uint32_t table_size;
  uint64_t *table;              /* raw entries, host order                */
  bool table_dirty;
};

struct qcow2_bitmaps {
  struct qcow2_bitmap *b;
  size_t n;
  bool started;                 /* in_use set on disk                     */
  unsigned map_bits;            /* log2 bytes of disk per map bit         */
  uint64_t map_len;             /* bits                                   */
  uint8_t *map;
};

void
qcow2_bitmaps_free (struct qcow2_image *q)
{
  struct qcow2_bitmaps *bm = q->w ? q->w->bitmaps : NULL;
  size_t i;

  if (!bm)
    return;
  for (i = 0; i < bm->n; i++)
    free (bm->b[i].table);
  free (bm->b);
  free (bm->map);
  free (bm);
  q->w->bitmaps = NULL;
}

static int
bad (struct qcow2_image *q, const char *why)
{
  vd_error ("qcow2: %s: bitmap directory: %s", q->img.path, why);
  errno = EIO;
  return -1;
}

int
qcow2_bitmaps_open (struct qcow2_image *q, const uint8_t *ext, uint32_t len)
{
  struct qcow2_bitmaps *bm;
  uint32_t nb;
  uint64_t dsize, doff, pos = 0, fsize = qcow2_file_size (q, false, true);
  CLEANUP_FREE uint8_t *dir = NULL;
  unsigned minbits = 64;
  size_t i;

  if (!(q->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
    return 0;                   /* inconsistent already: nothing to keep */
  if (len < 24)
    return bad (q, "extension too short");
  nb = load_be32 (ext);
  dsize = load_be64 (ext + 8);
  doff = load_be64 (ext + 16);
  if (nb == 0 || nb > 65535 || dsize > (64U << 20) || doff >= fsize
      || !IS_ALIGNED (doff, q->cluster_size) || fsize - doff < dsize)
    return bad (q, "bad position or size");
  if ((dir = malloc (dsize + 1)) == NULL)
    return -1;
  if (vd_pread_full (q->fd, dir, dsize, doff, false) < 0)
    return bad (q, "cannot be read");
  bm = calloc (1, sizeof *bm);
  if (!bm || !(bm->b = calloc (nb, sizeof *bm->b))) {
    free (bm);
    return -1;
  }
  q->w->bitmaps = bm;
  while (nb-- > 0) {
    struct qcow2_bitmap *b = &bm->b[bm->n];
    uint32_t flags, xsize;
    uint16_t nsize;
    uint8_t type, gbits;
    uint64_t bits, need;

    if (pos + 24 > dsize)
      return bad (q, "entry past its end");
    b->table_off = load_be64 (dir + pos);
    b->table_size = load_be32 (dir + pos + 8);
    flags = load_be32 (dir + pos + 12);
    type = dir[pos + 16];
    gbits = dir[pos + 17];
    nsize = load_be16 (dir + pos + 18);
    xsize = load_be32 (dir + pos + 20);
    b->dir_pos = doff + pos;
    pos += ROUND_UP (24 + (uint64_t) xsize + nsize, 8);
    if (pos > dsize)
      return bad (q, "entry past its end");
    if (!(flags & BME_AUTO) || (flags & BME_IN_USE))
      continue;                 /* disabled, or inconsistent already */
    if (type != 1 || gbits < 9 || gbits > 31
        || (xsize && !(flags & BME_EXTRA_COMPAT))) {
      vd_error ("qcow2: %s: an auto bitmap this writer cannot keep "
                "(type %u, granularity bits %u, extra data %" PRIu32
                "); refusing to write", q->img.path, type, gbits, xsize);
      errno = ENOTSUP;
      return -1;
    }
    bits = DIV_ROUND_UP (q->img.size, 1ULL << gbits);
    need = DIV_ROUND_UP (DIV_ROUND_UP (bits, 8), q->cluster_size);
    if (b->table_size != need || !IS_ALIGNED (b->table_off, q->cluster_size)
        || b->table_off < q->cluster_size || b->table_off >= fsize
        || (fsize - b->table_off) / 8 < b->table_size)
      return bad (q, "bitmap table does not fit the disk or the file");
    b->flags = flags;
    b->gran_bits = gbits;
    b->table = malloc (MAX ((uint64_t) b->table_size * 8, 8));
    if (!b->table)
      return -1;
    if (vd_pread_full (q->fd, b->table, (uint64_t) b->table_size * 8,
                       b->table_off, false) < 0)
      return bad (q, "bitmap table cannot be read");
    for (i = 0; i < b->table_size; i++) {
      uint64_t e = load_be64 (&b->table[i]), off = e & BME_OFFSET_MASK;

      b->table[i] = e;
      if (off && (!IS_ALIGNED (off, q->cluster_size) || off >= fsize
                  || (e & 1)))
        return bad (q, "bitmap table entry invalid");
    }
    minbits = MIN (minbits, gbits);
    bm->n++;
  }
  if (bm->n == 0)
    return 0;
  bm->map_bits = minbits;
  while (DIV_ROUND_UP (DIV_ROUND_UP (q->img.size, 1ULL << bm->map_bits), 8)
         > QCOW2_BITMAP_MEM)
    bm->map_bits++;
  bm->map_len = DIV_ROUND_UP (q->img.size, 1ULL << bm->map_bits);
  bm->map = calloc (DIV_ROUND_UP (bm->map_len, 8), 1);
  if (!bm->map)
    return -1;
  vd_debug ("qcow2: %s: %zu auto bitmaps kept up to date", q->img.path,
            bm->n);
  return 0;
}

bool
qcow2_bitmaps_active (struct qcow2_image *q)
{
  return q->w->bitmaps && q->w->bitmaps->n > 0;
}

static int
write_flags (struct qcow2_image *q, struct qcow2_bitmap *b, uint32_t flags)
{
  uint8_t f[4];

  store_be32 (f, flags);
  if (pwrite (q->fd, f, 4, b->dir_pos + 12) != 4) {
    vd_error ("qcow2: %s: cannot write the bitmap directory: %m",
              q->img.path);
    return -1;
  }
  return 0;
}

/* Before the first change: in_use, durable. */
int
qcow2_bitmaps_mark (struct qcow2_image *q, uint64_t offset, uint64_t len)
{
  struct qcow2_bitmaps *bm = q->w->bitmaps;
  uint64_t a, z;
  size_t i;

  if (!bm || bm->n == 0 || len == 0)
    return 0;
  if (!bm->started) {
    for (i = 0; i < bm->n; i++)
      if (write_flags (q, &bm->b[i], bm->b[i].flags | BME_IN_USE) < 0)
        return -1;
    if (qcow2_sync (q, false) < 0)
      return -1;
    bm->started = true;
  }
  a = offset >> bm->map_bits;
  z = (offset + len - 1) >> bm->map_bits;
  for (; a <= z && a < bm->map_len; a++)
    bm->map[a / 8] |= 1U << (a % 8);
  return 0;
}

/* Set bits [from, to] of cluster buffer buf (bits from cluster start). */
static void
set_bits (uint8_t *buf, uint64_t from, uint64_t to)
{
  for (; from <= to && (from & 7); from++)
    buf[from / 8] |= 1U << (from % 8);
  if (from + 8 <= to + 1) {
    uint64_t n = (to + 1 - from) / 8;
    memset (buf + from / 8, 0xff, n);
    from += n * 8;
  }
  for (; from <= to; from++)
    buf[from / 8] |= 1U << (from % 8);
}

/* Write back bitmap data cluster j of b held in buf; skip: all ones. */
static int
put_cluster (struct qcow2_image *q, struct qcow2_bitmap *b, uint64_t j,
             const uint8_t *buf)
{
  uint64_t off = b->table[j] & BME_OFFSET_MASK;

  if (off == 0) {
    int64_t x = qcow2_alloc_clusters (q, 1);
    if (x < 0)
      return -1;
    off = x;
    b->table[j] = off;
    b->table_dirty = true;
    if ((uint64_t) x + q->cluster_size > q->w->alloc_end)
      q->w->alloc_end = x + q->cluster_size;
  }
  if (pwrite (q->fd, buf, q->cluster_size, off) != (ssize_t) q->cluster_size) {
    vd_error ("qcow2: %s: cannot write bitmap data: %m", q->img.path);
    return -1;
  }
  q->w->data_dirty = true;
  return 0;
}

static int
get_cluster (struct qcow2_image *q, struct qcow2_bitmap *b, uint64_t j,
             uint8_t *buf, bool *ones)
{
  uint64_t e = b->table[j], off = e & BME_OFFSET_MASK;

  *ones = off == 0 && (e & 1);
  if (off == 0) {
    memset (buf, 0, q->cluster_size);
    return 0;
  }
  if (vd_pread_full (q->fd, buf, q->cluster_size, off, true) < 0) {
    vd_error ("qcow2: %s: cannot read bitmap data: %m", q->img.path);
    return -1;
  }
  return 0;
}

static int
sync_bitmap (struct qcow2_image *q, struct qcow2_bitmap *b)
{
  struct qcow2_bitmaps *bm = q->w->bitmaps;
  uint64_t per = q->cluster_size * 8, t, cur = UINT64_MAX;
  uint64_t nbits = DIV_ROUND_UP (q->img.size, 1ULL << b->gran_bits);
  uint8_t *buf = q->w->cbuf2;
  bool ones = false;

  for (t = 0; t < bm->map_len; t++) {
    uint64_t d0, d1, b0, b1;

    if ((t & 7) == 0 && bm->map[t / 8] == 0) {
      t += 7;
      continue;
    }
    if (!(bm->map[t / 8] & (1U << (t % 8))))
      continue;
    d0 = t << bm->map_bits;
    d1 = MIN ((t + 1) << bm->map_bits, q->img.size);
    b0 = d0 >> b->gran_bits;
    b1 = MIN ((d1 - 1) >> b->gran_bits, nbits - 1);
    while (b0 <= b1) {
      uint64_t j = b0 / per, e = MIN (b1, (j + 1) * per - 1);

      if (j != cur) {
        if (cur != UINT64_MAX && !ones && put_cluster (q, b, cur, buf) < 0)
          return -1;
        if (get_cluster (q, b, j, buf, &ones) < 0)
          return -1;
        cur = j;
      }
      if (!ones)
        set_bits (buf, b0 - j * per, e - j * per);
      b0 = e + 1;
    }
  }
  if (cur != UINT64_MAX && !ones && put_cluster (q, b, cur, buf) < 0)
    return -1;
  return 0;
}

/* At close (the rest written back): the marks into the bitmaps, then
 * in_use cleared.  See the head comment for the order. */
int
qcow2_bitmaps_close (struct qcow2_image *q)
{
  struct qcow2_bitmaps *bm = q->w->bitmaps;
  size_t i, j;

  if (!bm || !bm->started)
    return 0;
  for (i = 0; i < bm->n; i++)
    if (sync_bitmap (q, &bm->b[i]) < 0)
      return -1;
  /* New data clusters and their refcounts durable, then the tables. */
  if (qcow2_writeback (q) < 0)
    return -1;
  for (i = 0; i < bm->n; i++) {
    struct qcow2_bitmap *b = &bm->b[i];
    CLEANUP_FREE uint64_t *disk = NULL;

    if (!b->table_dirty)
      continue;
    disk = malloc ((uint64_t) b->table_size * 8);
    if (!disk)
      return -1;
    for (j = 0; j < b->table_size; j++)
      store_be64 (&disk[j], b->table[j]);
    if (pwrite (q->fd, disk, (uint64_t) b->table_size * 8, b->table_off)
        != (ssize_t) ((uint64_t) b->table_size * 8)) {
      vd_error ("qcow2: %s: cannot write a bitmap table: %m", q->img.path);
      return -1;
    }
  }
  if (qcow2_sync (q, false) < 0)
    return -1;
  for (i = 0; i < bm->n; i++)
    if (write_flags (q, &bm->b[i], bm->b[i].flags) < 0)
      return -1;
  if (qcow2_sync (q, false) < 0)
    return -1;
  bm->started = false;
  memset (bm->map, 0, DIV_ROUND_UP (bm->map_len, 8));
  return 0;
}
