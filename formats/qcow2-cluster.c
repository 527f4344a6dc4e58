/* vmdiskfs - qcow2 driver (read side): cluster mapping, read and
 * block_status.
 *
 * Guest offset -> L1 entry -> L2 table -> (sub)cluster descriptor
 * (== Cluster mapping == and == Extended L2 Entries == in qemu's
 * docs/interop/qcow2.txt).  map_piece() turns a guest range inside one L2
 * table into the longest run of one kind (unallocated, zero, data at
 * contiguous host offsets, one compressed cluster); read and block_status
 * loop over pieces.  L2 tables come from the cache (qcow2-cache.c),
 * compressed clusters are inflated by qcow2-compress.c.
 *
 * Threads: read and block_status run concurrently on one image (the FUSE
 * daemon's worker threads), and with VD_OPEN_LIVE another process (the VM)
 * writes the file meanwhile: then no L1 copy and no L2 cache are used,
 * every piece reads its metadata afresh (map_piece_live, below) and keeps
 * nothing.  Otherwise the L1 table and all geometry are read-only after
 * open, and an L2 table is pinned in the cache while its entries are read
 * (the cache's locking: qcow2-cache.c).  Data, zero and backing reads
 * take no lock.
 *
 * Memory bound (images are untrusted input; the daemon runs as root).
 * Only the L1 entries the disk size needs are used (l1_size), also for
 * snapshots.  An L1 table of at most QCOW2_L1_COPY_MAX (1 MiB: disks up
 * to 64 TiB with 64 KiB clusters) is copied and validated at open, as
 * long as the chain's budget allows; a bigger one, or one over budget,
 * stays on disk and each lookup preads the L1 entries it needs (at most
 * 4 KiB, validated then) with the same helper as live images
 * (l1_read_run), so a crafted 32 MiB L1 costs nothing held.  Small
 * tables keep the in-memory path: normal images read as fast as before.
 * L2 tables are held by the cache (qcow2-cache.c), charged to the same
 * budget (vdformat.h: the top image, its backing files and the snapshots
 * opened from it share one, default cache_bytes + 1 MiB = 9 MiB).  So a
 * chain holds at most its budget in L1 copies and L2 tables, however
 * deep (64 images do not cost 64 x 8 MiB), plus per image its slot array
 * (32 bytes a slot).  Besides: per reading thread, the inflate buffers
 * (qcow2-compress.c), and a private L2 table while its cache shard is all
 * pinned or the budget spent.
 *
 * Every descriptor is validated before use: offsets cluster aligned,
 * outside the header cluster (unless in an external data file), starting
 * inside the file.  A cluster whose tail lies past the end of the file
 * (preallocation, a file still being written) reads that tail as zeros.
 * Cached file sizes are refreshed when an offset looks past the end, so
 * an image growing under a running VM stays readable.
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

/* ---- L1 table ---- */

/* Set up the L1 table of entries entries at offset (the caller checked
 * that it lies inside the file).  Copied and validated now when it is at
 * most QCOW2_L1_COPY_MAX bytes and the chain's budget allows (live
 * images: validated, not charged; qcow2_open_image drops the copy);
 * otherwise left on disk, each lookup reading and validating the entries
 * it needs. */
int
qcow2_load_l1 (struct qcow2_image *q, uint64_t offset, uint32_t entries,
               const char *what)
{
  uint64_t *l1 = NULL, fsize, n = 0, bytes = (uint64_t) entries * 8;
  uint32_t i;

  q->l1 = NULL;
  q->l1_size = entries;
  q->l1_offset = offset;
  q->nr_l2_tables = entries;
  if (entries == 0)
    return 0;
  if (bytes > QCOW2_L1_COPY_MAX ||
      (!q->live && !vd_budget_charge (q->budget, bytes))) {
    vd_debug ("qcow2: %s: %s of %" PRIu64 " bytes read per lookup",
              q->img.path, what, bytes);
    return 0;
  }
  if (!q->live)
    q->l1_charged = bytes;
  l1 = malloc (bytes);
  if (!l1)
    goto fail;
  if (vd_pread_full (q->fd, l1, bytes, offset, false) < 0) {
    vd_error ("qcow2: %s: cannot read the %s: %m", q->img.path, what);
    errno = EIO;
    goto fail;
  }
  fsize = qcow2_file_size (q, false, true);
  for (i = 0; i < entries; i++) {
    uint64_t e = load_be64 (&l1[i]), off = e & QCOW2_L1E_OFFSET_MASK;

    l1[i] = off;
    if (off == 0)
      continue;
    if (!IS_ALIGNED (off, q->cluster_size) || off < q->cluster_size ||
        off > fsize || fsize - off < q->cluster_size) {
      vd_error ("qcow2: %s: %s entry %" PRIu32 ": L2 table offset %#" PRIx64
                " unaligned, in the header or outside the file", q->img.path,
                what, i, off);
      errno = EIO;
      goto fail;
    }
    n++;
  }
  q->l1 = l1;
  q->nr_l2_tables = n;
  return 0;

 fail:
  {
    int e = errno;
    free (l1);
    vd_budget_release (q->budget, q->l1_charged);
    q->l1_charged = 0;
    errno = e;
    return -1;
  }
}

/* ---- Mapping ---- */

enum piece_kind {
  P_UNALLOC,                    /* look in the backing file, else zeros   */
  P_ZERO,                       /* reads as zeros                         */
  P_DATA,                       /* at host in data_fd, contiguous         */
  P_DATA_EOF,                   /* allocated past the end of file: zeros  */
  P_COMPRESSED,                 /* one compressed cluster (or part)       */
};

struct piece {
  enum piece_kind kind;
  uint64_t len;                 /* guest bytes                            */
  uint64_t host;                /* P_DATA: host offset of the first byte  */
  uint64_t coff, csize;         /* P_COMPRESSED: compressed extent        */
};

/* Size of the file holding data clusters, refreshed if end lies beyond
 * the cached one. */
static uint64_t
data_size_covering (struct qcow2_image *q, uint64_t end)
{
  uint64_t sz = qcow2_file_size (q, true, false);

  if (end > sz)
    sz = qcow2_file_size (q, true, true);
  return sz;
}

static int
bad_entry (struct qcow2_image *q, uint64_t guest, uint64_t entry,
           const char *why)
{
  vd_error ("qcow2: %s: L2 entry %#016" PRIx64 " for guest offset %#" PRIx64
            ": %s", q->img.path, entry, guest, why);
  errno = EIO;
  return -1;
}

/* Classify the (sub)cluster holding guest offset pos, given its L2 entry
 * (and bitmap with extended L2).  Fills kind and, for data, the host
 * offset of pos; *run_end is the guest offset where the answer stops
 * holding (end of the cluster or subcluster, or of the file for data). */
static int
classify (struct qcow2_image *q, uint64_t pos, uint64_t entry,
          uint64_t bitmap, enum piece_kind *kind, uint64_t *host,
          uint64_t *coff, uint64_t *csize, uint64_t *run_end)
{
  uint64_t cs = q->cluster_size, h = entry & QCOW2_L2E_OFFSET_MASK;
  uint64_t in_cluster = pos & (cs - 1), fsize;
  bool allocated;

  *run_end = (pos | (cs - 1)) + 1;
  if (entry & QCOW2_L2E_COMPRESSED) {
    /* Compressed Clusters Descriptor, x = 62 - (cluster_bits - 8). */
    unsigned x = 62 - (q->cluster_bits - 8);
    uint64_t nsec = (entry >> x) & ((1ULL << (q->cluster_bits - 8)) - 1);

    if (q->has_data_file)
      return bad_entry (q, pos, entry, "compressed cluster in an image with "
                        "an external data file");
    *coff = entry & ((1ULL << x) - 1);
    *csize = (nsec + 1) * 512 - (*coff & 511);
    fsize = qcow2_file_size (q, false, false);
    if (*coff >= fsize)
      fsize = qcow2_file_size (q, false, true);
    if (*coff < cs || *coff >= fsize)
      return bad_entry (q, pos, entry, "compressed data in the header or "
                        "outside the file");
    /* qemu stores a cluster compressed only when that saves space; allow
     * twice that for other writers, and never read past the end. */
    *csize = MIN (*csize, 2 * cs);
    if (*csize > fsize - *coff)
      *csize = fsize - *coff;   /* the last sectors may be short */
    *kind = P_COMPRESSED;
    return 0;
  }

  if (q->extended_l2) {
    unsigned sc = in_cluster >> q->subcluster_bits;
    bool alloc = (bitmap >> sc) & 1, zero = (bitmap >> (32 + sc)) & 1;

    *run_end = (pos | ((1ULL << q->subcluster_bits) - 1)) + 1;
    if (alloc && zero)
      return bad_entry (q, pos, entry, "subcluster both allocated and zero");
    if (zero) {
      *kind = P_ZERO;
      return 0;
    }
    if (!alloc) {
      *kind = P_UNALLOC;
      return 0;
    }
    if (h == 0 && !q->has_data_file)
      return bad_entry (q, pos, entry, "allocated subcluster without a host "
                        "offset");
  }
  else {
    if (q->version >= 3 && (entry & QCOW2_L2E_ZERO)) {
      *kind = P_ZERO;
      return 0;
    }
    allocated = h != 0 || (q->has_data_file && (entry & QCOW2_L2E_COPIED));
    if (!allocated) {
      *kind = P_UNALLOC;
      return 0;
    }
  }

  /* Standard Cluster Descriptor: validate the host cluster. */
  if (!IS_ALIGNED (h, cs))
    return bad_entry (q, pos, entry, "host offset not cluster aligned");
  if (!q->has_data_file && h < cs)
    return bad_entry (q, pos, entry, "data cluster in the header cluster");
  *host = h + in_cluster;
  *kind = P_DATA;
  if (q->data_fd < 0)           /* VD_OPEN_NO_BACKING: data file not open */
    return 0;
  fsize = data_size_covering (q, h + cs);
  if (h >= fsize)
    return bad_entry (q, pos, entry, "data cluster outside the file");
  /* Preallocated tail past the end of the file reads as zeros. */
  if (*host >= fsize)
    *kind = P_DATA_EOF;
  else if (*run_end - pos > fsize - *host)
    *run_end = pos + (fsize - *host);
  return 0;
}

/* Walk the L2 entries of guest range [offset, end) (inside one L2 table;
 * ents holds the entry of offset's cluster and those after it) and fill p
 * with the longest run of one kind at its start. */
static int
walk_l2 (struct qcow2_image *q, const uint8_t *ents, uint64_t offset,
         uint64_t end, struct piece *p)
{
  uint64_t pos = offset, first_cluster = offset >> q->cluster_bits;
  bool first = true;

  while (pos < end) {
    const uint8_t *e =
      ents + ((pos >> q->cluster_bits) - first_cluster) * q->l2_entry_bytes;
    uint64_t entry = load_be64 (e);
    uint64_t bitmap = q->extended_l2 ? load_be64 (e + 8) : 0;
    enum piece_kind kind;
    uint64_t host = 0, coff = 0, csize = 0, run_end, n;

    if (classify (q, pos, entry, bitmap, &kind, &host, &coff, &csize,
                  &run_end) < 0)
      return -1;
    n = MIN (run_end, end) - pos;

    if (first) {
      p->kind = kind;
      p->host = host;
      p->coff = coff;
      p->csize = csize;
      p->len = n;
      first = false;
      if (kind == P_COMPRESSED)
        break;
    }
    else if (kind != p->kind || kind == P_COMPRESSED ||
             (kind == P_DATA && host != p->host + p->len))
      break;
    else
      p->len += n;
    pos += n;
  }
  return 0;
}

/* ---- Live images (VD_OPEN_LIVE) ----
 *
 * No L1 copy, no L2 cache: each piece reads the header's l1_size and
 * l1_table_offset (bytes 36..47), the L1 entries it needs and the slice of
 * the L2 table it needs, then reads the header fields and the L1 entry
 * again.  If either changed (qemu grew and moved the L1 table, or copied
 * an L2 table shared with a snapshot before writing to it), the L2 slice
 * may come from a freed cluster: retry.  Data is written by qemu before
 * the L2 entry that points to it, and an L2 table before the L1 entry, so
 * a stable mapping is a consistent one. */

#define LIVE_RETRIES   8
#define LIVE_L1_MAX    512     /* L1 entries read at once (4 KiB)         */
#define LIVE_L2_BYTES  4096    /* L2 entry bytes read at once             */

/* L1 entries from disk, for live images and for L1 tables not copied at
 * open (qcow2_load_l1).  From the table at l1_off of l1_size entries,
 * read the entries guest range [offset, offset + max_len) needs, from
 * the one of offset (l1i < l1_size) on, at most LIVE_L1_MAX.  *l2_off:
 * the first one's L2 table offset (0: unallocated; not validated);
 * *limit: how many bytes from offset that answer covers (to the end of
 * the entry's range, or for an unallocated one over the following
 * unallocated entries too, to max_len past the end of the table). */
static int
l1_read_run (struct qcow2_image *q, uint64_t l1_off, uint32_t l1_size,
             uint64_t offset, uint64_t max_len, uint64_t *l2_off,
             uint64_t *limit)
{
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t cov = 1ULL << cov_bits, l1i = offset >> cov_bits, need, n, i;
  uint8_t l1buf[LIVE_L1_MAX * 8];

  *limit = MIN (((l1i + 1) << cov_bits) - offset, max_len);
  need = 1 + DIV_ROUND_UP (max_len - *limit, cov);
  n = MIN (MIN ((uint64_t) l1_size - l1i, (uint64_t) LIVE_L1_MAX), need);
  /* The entry of offset first: an allocated one is all that is needed
   * (8 bytes, not 4 KiB, per lookup: an extent walk makes one per
   * cluster of a fragmented image); the run after an unallocated one
   * only then. */
  if (vd_pread_full (q->fd, l1buf, 8, l1_off + l1i * 8, false) < 0
      || ((load_be64 (l1buf) & QCOW2_L1E_OFFSET_MASK) == 0 && n > 1
          && vd_pread_full (q->fd, l1buf + 8, (n - 1) * 8,
                            l1_off + (l1i + 1) * 8, false) < 0)) {
    vd_error ("qcow2: %s: cannot read the L1 table at %#" PRIx64 ": %m",
              q->img.path, l1_off);
    errno = EIO;
    return -1;
  }
  *l2_off = load_be64 (l1buf) & QCOW2_L1E_OFFSET_MASK;
  if (*l2_off != 0)
    return 0;
  for (i = 1; i < n && *limit < max_len; i++) {
    if (load_be64 (l1buf + i * 8) & QCOW2_L1E_OFFSET_MASK)
      break;
    *limit = MIN (max_len, *limit + cov);
  }
  if (i == n && l1i + n >= l1_size)
    *limit = max_len;
  return 0;
}

/* Is an L2 table at l2_off (from an L1 entry) aligned, past the header
 * cluster and inside the file? */
static bool
l2_off_ok (struct qcow2_image *q, uint64_t l2_off)
{
  uint64_t cs = q->cluster_size, fsize = qcow2_file_size (q, false, false);

  if (l2_off + cs > fsize)
    fsize = qcow2_file_size (q, false, true);
  return IS_ALIGNED (l2_off, cs) && l2_off >= cs && l2_off <= fsize &&
    fsize - l2_off >= cs;
}

/* The active L1 table's position, from the header, validated. */
static int
live_l1_pos (struct qcow2_image *q, uint64_t *off, uint32_t *size)
{
  uint8_t b[12];
  uint64_t cs = q->cluster_size, end;

  if (vd_pread_full (q->fd, b, sizeof b, 36, false) < 0) {
    vd_error ("qcow2: %s: cannot read the header: %m", q->img.path);
    errno = EIO;
    return -1;
  }
  *size = load_be32 (b);
  *off = load_be64 (b + 4);
  if (*size == 0)
    return 0;
  if ((uint64_t) *size > QCOW2_MAX_L1_BYTES / 8 || !IS_ALIGNED (*off, cs) ||
      *off < cs || ADD_OVERFLOW (*off, (uint64_t) *size * 8, &end) ||
      (end > qcow2_file_size (q, false, false) &&
       end > qcow2_file_size (q, false, true))) {
    vd_error ("qcow2: %s: L1 table (offset %#" PRIx64 ", %" PRIu32
              " entries) invalid", q->img.path, *off, *size);
    errno = EIO;
    return -1;
  }
  return 0;
}

/* Did the L1 position, or L1 entry l1i (when l2_off != 0), change? */
static int
live_changed (struct qcow2_image *q, uint64_t l1_off, uint32_t l1_size,
              uint64_t l1i, uint64_t l2_off, bool *changed)
{
  uint64_t off, e;
  uint32_t size;

  if (live_l1_pos (q, &off, &size) < 0)
    return -1;
  *changed = off != l1_off || size != l1_size;
  if (*changed || l2_off == 0)
    return 0;
  if (vd_pread_full (q->fd, &e, 8, l1_off + l1i * 8, false) < 0) {
    vd_error ("qcow2: %s: cannot read the active L1 table: %m", q->img.path);
    errno = EIO;
    return -1;
  }
  *changed = (load_be64 (&e) & QCOW2_L1E_OFFSET_MASK) != l2_off;
  return 0;
}

static int
map_piece_live (struct qcow2_image *q, uint64_t offset, uint64_t max_len,
                struct piece *p)
{
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t l1i = offset >> cov_bits;
  uint8_t l2buf[LIVE_L2_BYTES];
  unsigned try;

  for (try = 0; try < LIVE_RETRIES; try++) {
    uint64_t l1_off, limit, l2_off, first_cl, nent, end;
    uint32_t l1_size;
    bool changed;

    memset (p, 0, sizeof *p);
    if (live_l1_pos (q, &l1_off, &l1_size) < 0)
      return -1;
    if (l1i >= l1_size) {
      /* Beyond the L1 table: never written (it only grows). */
      p->kind = P_UNALLOC;
      p->len = max_len;
      return 0;
    }
    if (l1_read_run (q, l1_off, l1_size, offset, max_len, &l2_off,
                     &limit) < 0)
      return -1;

    if (l2_off == 0) {
      /* Unallocated, over following empty L1 entries too. */
      if (live_changed (q, l1_off, l1_size, l1i, 0, &changed) < 0)
        return -1;
      if (changed)
        continue;
      p->kind = P_UNALLOC;
      p->len = limit;
      return 0;
    }

    if (!l2_off_ok (q, l2_off)) {
      if (live_changed (q, l1_off, l1_size, l1i, 0, &changed) < 0)
        return -1;
      if (changed)
        continue;
      vd_error ("qcow2: %s: active L1 table entry %" PRIu64 ": L2 table "
                "offset %#" PRIx64 " unaligned, in the header or outside "
                "the file", q->img.path, l1i, l2_off);
      errno = EIO;
      return -1;
    }

    /* The L2 entries of [offset, offset + limit), at most LIVE_L2_BYTES. */
    first_cl = offset >> q->cluster_bits;
    nent = ((offset + limit - 1) >> q->cluster_bits) - first_cl + 1;
    nent = MIN (nent, (uint64_t) (LIVE_L2_BYTES / q->l2_entry_bytes));
    end = MIN (offset + limit, (first_cl + nent) << q->cluster_bits);
    if (vd_pread_full (q->fd, l2buf, nent * q->l2_entry_bytes,
                       l2_off + (first_cl & ((1ULL << q->l2_bits) - 1)) *
                       q->l2_entry_bytes, false) < 0) {
      vd_error ("qcow2: %s: cannot read L2 table at %#" PRIx64 ": %m",
                q->img.path, l2_off);
      errno = EIO;
      return -1;
    }
    if (live_changed (q, l1_off, l1_size, l1i, l2_off, &changed) < 0)
      return -1;
    if (changed)
      continue;
    return walk_l2 (q, l2buf, offset, end, p);
  }
  vd_error ("qcow2: %s: metadata for guest offset %#" PRIx64 " kept "
            "changing while read (%d tries)", q->img.path, offset,
            LIVE_RETRIES);
  errno = EIO;
  return -1;
}

/* The longest run starting at guest offset offset, at most max_len bytes,
 * inside one L2 table, of one kind (see struct piece). */
static int
map_piece (struct qcow2_image *q, uint64_t offset, uint64_t max_len,
           struct piece *p)
{
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t l1i = offset >> cov_bits;
  uint64_t limit = ((l1i + 1) << cov_bits) - offset;
  uint64_t l2_off;
  struct qcow2_l2_ref ref;
  size_t idx;
  int r;

  if (q->live)
    return map_piece_live (q, offset, max_len, p);

  memset (p, 0, sizeof *p);
  limit = MIN (limit, max_len);
  if (!q->l1 && l1i < q->l1_size) {
    /* An L1 table not copied at open: read the entries needed. */
    if (l1_read_run (q, q->l1_offset, q->l1_size, offset, max_len, &l2_off,
                     &limit) < 0)
      return -1;
    if (l2_off == 0) {
      p->kind = P_UNALLOC;
      p->len = limit;
      return 0;
    }
    if (!l2_off_ok (q, l2_off)) {
      vd_error ("qcow2: %s: L1 table entry %" PRIu64 ": L2 table offset %#"
                PRIx64 " unaligned, in the header or outside the file",
                q->img.path, l1i, l2_off);
      errno = EIO;
      return -1;
    }
  }
  else if (l1i >= q->l1_size || q->l1[l1i] == 0) {
    /* Unallocated: extend over following empty L1 entries too, so that
     * a sparse 2 TiB image is walked in a few steps. */
    while (limit < max_len) {
      if (++l1i >= q->l1_size) {
        limit = max_len;        /* past a (snapshot's) short L1 table */
        break;
      }
      if (q->l1[l1i] != 0)
        break;
      limit = MIN (max_len, limit + (1ULL << cov_bits));
    }
    p->kind = P_UNALLOC;
    p->len = limit;
    return 0;
  }
  else
    l2_off = q->l1[l1i];
  if (qcow2_cache_get (q, l2_off, &ref) < 0)
    return -1;
  idx = (offset >> q->cluster_bits) & ((1ULL << q->l2_bits) - 1);
  r = walk_l2 (q, ref.table + idx * q->l2_entry_bytes, offset,
               offset + limit, p);
  qcow2_cache_put (&ref);
  return r;
}

/* ---- read ---- */

static int
read_backing (struct qcow2_image *q, uint8_t *buf, uint64_t len,
              uint64_t offset)
{
  if (!q->backing && q->backing_name) {      /* VD_OPEN_NO_BACKING */
    errno = EIO;
    return -1;
  }
  return vd_read_backing (q->backing, buf, len, offset);
}

int
qcow2_read (struct vd_image *img, void *buf, size_t count, uint64_t offset)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  uint8_t *b = buf;

  while (count > 0) {
    struct piece p;

    if (map_piece (q, offset, count, &p) < 0)
      return -1;
    switch (p.kind) {
    case P_UNALLOC:
      if (read_backing (q, b, p.len, offset) < 0)
        return -1;
      break;
    case P_ZERO:
    case P_DATA_EOF:
      memset (b, 0, p.len);
      break;
    case P_DATA:
      if (q->data_fd < 0) {
        errno = EIO;
        return -1;
      }
      if (vd_pread_full (q->data_fd, b, p.len, p.host, true) < 0) {
        int e = errno;
        vd_error ("qcow2: %s: read at %#" PRIx64 ": %m", img->path, p.host);
        errno = e;
        return -1;
      }
      break;
    case P_COMPRESSED:
      if (qcow2_read_compressed (q, p.coff, p.csize, b, offset, p.len) < 0)
        return -1;
      break;
    }
    b += p.len;
    offset += p.len;
    count -= p.len;
  }
  return 0;
}

/* ---- block_status ---- */

int
qcow2_block_status (struct vd_image *img, uint64_t offset, uint64_t length,
                    struct vd_extent *e)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  uint64_t pos, end = offset + length;
  struct piece p;
  enum piece_kind first;

  if (map_piece (q, offset, length, &p) < 0)
    return -1;
  first = p.kind;
  e->offset = offset;
  e->fd = -1;
  e->phys = 0;

  if (first == P_UNALLOC && q->backing) {
    uint64_t bsize = vd_image_size (q->backing);

    if (offset < bsize)
      return vd_image_block_status (q->backing, offset,
                                    MIN (p.len, bsize - offset), e);
  }
  else if (first == P_UNALLOC && q->backing_name) {
    errno = EIO;                /* VD_OPEN_NO_BACKING */
    return -1;
  }

  switch (first) {
  case P_UNALLOC: e->type = VD_EXTENT_HOLE; break;
  case P_ZERO: e->type = VD_EXTENT_ZERO; break;
  case P_DATA:
    e->type = VD_EXTENT_DATA;
    e->fd = q->data_fd;
    e->phys = e->fd >= 0 ? p.host : 0;
    break;
  case P_DATA_EOF:
  case P_COMPRESSED:
    e->type = VD_EXTENT_DATA;
    break;
  }

  /* Merge following pieces of the same kind, across L2 tables. */
  pos = offset + p.len;
  while (pos < end) {
    uint64_t want_host = p.host + p.len;
    struct piece n;
    bool same;

    if (map_piece (q, pos, end - pos, &n) < 0)
      return -1;
    switch (first) {
    case P_UNALLOC:             /* a hole beyond the backing file, or none */
    case P_ZERO:
      same = n.kind == first;
      break;
    case P_DATA:
      same = n.kind == P_DATA && n.host == want_host;
      break;
    default:                    /* data not spliceable from one fd run */
      same = n.kind == P_DATA_EOF || n.kind == P_COMPRESSED;
      break;
    }
    if (!same)
      break;
    p = n;
    pos += n.len;
  }
  e->length = pos - offset;
  return 0;
}

