/* vmdiskfs - qcow2 driver (read side): cluster mapping, the L2 table
 * cache, read and block_status.
 *
 * Guest offset -> L1 entry -> L2 table -> (sub)cluster descriptor
 * (== Cluster mapping == and == Extended L2 Entries == in qemu's
 * docs/interop/qcow2.txt).  map_piece() turns a guest range inside one L2
 * table into the longest run of one kind (unallocated, zero, data at
 * contiguous host offsets, one compressed cluster); read and block_status
 * loop over pieces.
 *
 * Threads: read and block_status run concurrently on one image (the FUSE
 * daemon's worker threads), and with VD_OPEN_LIVE another process (the VM)
 * writes the file meanwhile: then no L1 copy and no L2 cache are used,
 * every piece reads its metadata afresh (map_piece_live, below) and keeps
 * nothing.  Otherwise the L1 table and all geometry are read-only after
 * open.  The L2 cache is split into shards chosen by a hash of the
 * L2 table's file offset, each with its own mutex, so threads only
 * contend when they want tables of the same shard (at least 16 shards
 * when the cache has 16 slots, about 16 slots per shard); a table is read
 * from the file with its shard's mutex held (a page-cache copy of one
 * cluster).  A table in use is pinned (slot->pins, under the shard mutex)
 * and never evicted; when every slot of a shard is pinned the reader uses
 * a private copy instead.  Data, zero and backing reads take no lock.
 * Compressed clusters are inflated into per-thread buffers (thread-local,
 * freed at thread exit, at most 1 MiB kept between calls), which also
 * remember the last cluster inflated (clusters up to 256 KiB) so that
 * sequential small reads do not inflate it again.
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
 * Each image's cache has at most min(L2 tables the L1 table can
 * reference, cache_bytes / cluster_size) slots (at least one); a slot's
 * table is allocated on first use and charged to the chain's budget
 * (vdformat.h: the top image, its backing files and the snapshots opened
 * from it share one, default cache_bytes + 1 MiB = 9 MiB).  When the
 * budget is spent an image reuses its own least recently used table, or
 * reads a private copy for the one request.  So a chain holds at most
 * its budget in L1 copies and L2 tables, however deep (64 images do not
 * cost 64 x 8 MiB), plus per image its slot array (32 bytes a slot).
 * cache_bytes defaults to 8 MiB and is set process-wide with
 * qcow2_set_cache_size() before images are opened.  Besides: per reading
 * thread, at most 1 MiB of inflate buffers kept between calls (plus a
 * zstd context), up to three clusters while one call inflates a big
 * cluster, and a private L2 table while its shard is all pinned or the
 * budget spent.
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>
#include <zstd.h>

#include "vdformat.h"
#include "qcow2.h"
#include "log.h"
#include "endian.h"
#include "cleanup.h"

/* ---- L2 cache ---- */

static uint64_t cache_bytes = QCOW2_DEFAULT_CACHE_BYTES;   /* atomic */
static uint64_t next_cache_id = 1;                          /* atomic */

/* The cache is set-associative: a table's shard is its set.  At least
 * MIN_SHARDS shards (when there are that many slots) so that threads
 * rarely meet on one mutex, and at most WAYS slots per shard beyond that
 * so that a lookup scans few slots (512-byte clusters give 16384 slots in
 * 8 MiB: 1024 shards of 16). */
#define MIN_SHARDS 16
#define WAYS 16

struct l2_slot {
  uint64_t offset;              /* file offset of the table; 0 = empty    */
  uint8_t *table;               /* cluster_size bytes, on-disk order      */
  unsigned pins;                /* readers using table right now          */
  uint64_t stamp;               /* last use, for LRU eviction             */
};

struct l2_shard {
  pthread_mutex_t lock;         /* protects everything in the shard       */
  struct l2_slot *slots;
  unsigned nslots;
  uint64_t clock;
} __attribute__ ((aligned (64)));

struct qcow2_l2_cache {
  uint64_t id;                  /* unique per open image (decompress key) */
  struct vd_budget *budget;     /* the image's (it holds the reference)   */
  size_t table_bytes;
  unsigned nshards;
  struct l2_shard *shards;
};

/* A pinned L2 table. */
struct l2_ref {
  const uint8_t *table;
  struct l2_shard *shard;       /* NULL: private copy in table            */
  struct l2_slot *slot;
};

void
qcow2_set_cache_size (uint64_t bytes)
{
  __atomic_store_n (&cache_bytes, bytes, __ATOMIC_RELAXED);
  vd_set_chain_budget (bytes + QCOW2_L1_COPY_MAX);
}

struct qcow2_l2_cache *
qcow2_cache_new (const struct qcow2_image *q)
{
  struct qcow2_l2_cache *c;
  uint64_t limit = __atomic_load_n (&cache_bytes, __ATOMIC_RELAXED);
  uint64_t nslots = limit >> q->cluster_bits;
  unsigned i, per, extra;

  nslots = MIN (nslots, q->nr_l2_tables);
  if (nslots == 0)
    nslots = 1;
  c = calloc (1, sizeof *c);
  if (!c)
    return NULL;
  c->id = __atomic_fetch_add (&next_cache_id, 1, __ATOMIC_RELAXED);
  c->budget = q->budget;
  c->table_bytes = q->cluster_size;
  c->nshards = nslots <= MIN_SHARDS ? nslots : MAX (MIN_SHARDS, nslots / WAYS);
  /* Shards are cache-line aligned (no false sharing between mutexes):
   * calloc does not promise that alignment. */
  if (posix_memalign ((void **) &c->shards, 64,
                      c->nshards * sizeof *c->shards) != 0) {
    free (c);
    return NULL;
  }
  memset (c->shards, 0, c->nshards * sizeof *c->shards);
  per = nslots / c->nshards;
  extra = nslots % c->nshards;
  for (i = 0; i < c->nshards; i++) {
    struct l2_shard *s = &c->shards[i];

    pthread_mutex_init (&s->lock, NULL);
    s->nslots = per + (i < extra);
    s->slots = calloc (s->nslots, sizeof *s->slots);
    if (!s->slots) {
      c->nshards = i + 1;
      qcow2_cache_free (c);
      return NULL;
    }
  }
  return c;
}

void
qcow2_cache_free (struct qcow2_l2_cache *c)
{
  unsigned i, j;

  if (!c)
    return;
  for (i = 0; i < c->nshards; i++) {
    struct l2_shard *s = &c->shards[i];

    for (j = 0; s->slots && j < s->nslots; j++)
      if (s->slots[j].table) {
        free (s->slots[j].table);
        vd_budget_release (c->budget, c->table_bytes);
      }
    free (s->slots);
    pthread_mutex_destroy (&s->lock);
  }
  free (c->shards);
  free (c);
}

static int
read_l2 (struct qcow2_image *q, uint64_t l2_off, uint8_t *table)
{
  /* l2_off was validated with the L1 table: aligned, inside the file. */
  if (vd_pread_full (q->fd, table, q->cluster_size, l2_off, false) < 0) {
    vd_error ("qcow2: %s: cannot read L2 table at %#" PRIx64 ": %m",
              q->img.path, l2_off);
    errno = EIO;
    return -1;
  }
  return 0;
}

static int
l2_get (struct qcow2_image *q, uint64_t l2_off, struct l2_ref *ref)
{
  struct qcow2_l2_cache *c = q->cache;
  uint64_t h = (l2_off >> q->cluster_bits) * 0x9e3779b97f4a7c15ULL;
  struct l2_shard *s = &c->shards[(h >> 32) % c->nshards];
  struct l2_slot *victim = NULL, *empty = NULL;
  unsigned i;
  uint8_t *priv;

  pthread_mutex_lock (&s->lock);
  s->clock++;
  for (i = 0; i < s->nslots; i++) {
    struct l2_slot *sl = &s->slots[i];

    if (sl->offset == l2_off) {
      sl->pins++;
      sl->stamp = s->clock;
      pthread_mutex_unlock (&s->lock);
      ref->table = sl->table;
      ref->shard = s;
      ref->slot = sl;
      return 0;
    }
    if (sl->pins != 0)
      continue;
    if (!sl->table) {
      if (!empty)
        empty = sl;
    }
    else if (!victim || sl->stamp < victim->stamp)
      victim = sl;
  }
  /* A new table while the chain's budget allows, else the least
   * recently used of ours, else a private copy. */
  if (empty && vd_budget_charge (c->budget, c->table_bytes)) {
    if ((empty->table = malloc (c->table_bytes)) == NULL) {
      vd_budget_release (c->budget, c->table_bytes);
      pthread_mutex_unlock (&s->lock);
      return -1;
    }
    victim = empty;
  }
  if (victim) {
    victim->offset = 0;
    if (read_l2 (q, l2_off, victim->table) < 0) {
      pthread_mutex_unlock (&s->lock);
      return -1;
    }
    victim->offset = l2_off;
    victim->pins = 1;
    victim->stamp = s->clock;
    pthread_mutex_unlock (&s->lock);
    ref->table = victim->table;
    ref->shard = s;
    ref->slot = victim;
    return 0;
  }
  pthread_mutex_unlock (&s->lock);

  /* Every slot of the shard is in use: a private copy. */
  priv = malloc (c->table_bytes);
  if (!priv)
    return -1;
  if (read_l2 (q, l2_off, priv) < 0) {
    free (priv);
    return -1;
  }
  ref->table = priv;
  ref->shard = NULL;
  ref->slot = NULL;
  return 0;
}

static void
l2_put (struct l2_ref *ref)
{
  if (ref->shard) {
    pthread_mutex_lock (&ref->shard->lock);
    ref->slot->pins--;
    pthread_mutex_unlock (&ref->shard->lock);
  }
  else
    free ((void *) ref->table);
}

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
  struct l2_ref ref;
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
  if (l2_get (q, l2_off, &ref) < 0)
    return -1;
  idx = (offset >> q->cluster_bits) & ((1ULL << q->l2_bits) - 1);
  r = walk_l2 (q, ref.table + idx * q->l2_entry_bytes, offset,
               offset + limit, p);
  l2_put (&ref);
  return r;
}

/* ---- Compressed clusters ---- */

/* Per-thread buffers; also remembers the last cluster inflated. */
struct zbuf {
  uint8_t *in, *out;
  size_t in_size, out_size;
  uint64_t cache_id, coff;      /* key of the cluster in out (0: none)    */
  ZSTD_DCtx *zstd;
};

static pthread_key_t zbuf_key;
static pthread_once_t zbuf_once = PTHREAD_ONCE_INIT;

static void
zbuf_free (void *p)
{
  struct zbuf *z = p;

  if (z) {
    free (z->in);
    free (z->out);
    ZSTD_freeDCtx (z->zstd);
    free (z);
  }
}

static void
zbuf_init (void)
{
  pthread_key_create (&zbuf_key, zbuf_free);
}

static struct zbuf *
zbuf_get (size_t in_size, size_t out_size)
{
  struct zbuf *z;

  pthread_once (&zbuf_once, zbuf_init);
  z = pthread_getspecific (zbuf_key);
  if (!z) {
    z = calloc (1, sizeof *z);
    if (!z || pthread_setspecific (zbuf_key, z) != 0) {
      free (z);
      return NULL;
    }
  }
  if (z->in_size < in_size) {
    free (z->in);
    z->in_size = 0;
    if ((z->in = malloc (in_size)) == NULL)
      return NULL;
    z->in_size = in_size;
  }
  if (z->out_size < out_size) {
    free (z->out);
    z->out_size = 0;
    z->cache_id = 0;
    if ((z->out = malloc (out_size)) == NULL)
      return NULL;
    z->out_size = out_size;
  }
  return z;
}

/* Keep at most ZBUF_KEEP bytes of buffers per thread between calls (a
 * daemon has many threads): clusters up to 256 KiB stay cached; bigger
 * ones are inflated into buffers freed right after use. */
#define ZBUF_KEEP (1U << 20)

static void
zbuf_trim (struct zbuf *z)
{
  if (z->in_size + z->out_size > ZBUF_KEEP) {
    free (z->in);
    free (z->out);
    z->in = z->out = NULL;
    z->in_size = z->out_size = 0;
    z->cache_id = 0;
  }
}

static int
inflate_zlib (const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
  z_stream s;
  int r;

  memset (&s, 0, sizeof s);
  /* Raw deflate.  qemu writes with a 4 KiB window (-12); -15 accepts that
   * and any larger window another writer might have used. */
  if (inflateInit2 (&s, -15) != Z_OK)
    return -1;
  s.next_in = (Bytef *) in;
  s.avail_in = in_len;
  s.next_out = out;
  s.avail_out = out_len;
  r = inflate (&s, Z_FINISH);
  inflateEnd (&s);
  /* A full cluster is success even if the stream goes on: the extent is
   * rounded up to sectors and may hold the start of the next one. */
  if (s.avail_out == 0 && (r == Z_STREAM_END || r == Z_OK || r == Z_BUF_ERROR))
    return 0;
  return -1;
}

static int
inflate_zstd (struct zbuf *z, const uint8_t *in, size_t in_len,
              uint8_t *out, size_t out_len)
{
  size_t frame, r;

  if (!z->zstd && (z->zstd = ZSTD_createDCtx ()) == NULL)
    return -1;
  /* The extent is rounded up to sectors: find the frame's real end. */
  frame = ZSTD_findFrameCompressedSize (in, in_len);
  if (ZSTD_isError (frame))
    return -1;
  r = ZSTD_decompressDCtx (z->zstd, out, out_len, in, frame);
  if (ZSTD_isError (r) || r != out_len)
    return -1;
  return 0;
}

/* Copy guest bytes [offset, offset+len) of the compressed cluster p to buf. */
static int
read_compressed (struct qcow2_image *q, const struct piece *p, void *buf,
                 uint64_t offset, uint64_t len)
{
  size_t cs = q->cluster_size;
  struct zbuf *z = zbuf_get (p->csize, cs);
  int r;

  if (!z)
    return -1;
  /* Live: the extent at coff may have been freed and rewritten since. */
  if (q->live || z->cache_id != q->cache->id || z->coff != p->coff) {
    z->cache_id = 0;
    if (vd_pread_full (q->fd, z->in, p->csize, p->coff, false) < 0) {
      zbuf_trim (z);
      vd_error ("qcow2: %s: cannot read compressed cluster at %#" PRIx64
                ": %m", q->img.path, p->coff);
      errno = EIO;
      return -1;
    }
    if (q->compression == QCOW2_COMPRESS_ZSTD)
      r = inflate_zstd (z, z->in, p->csize, z->out, cs);
    else
      r = inflate_zlib (z->in, p->csize, z->out, cs);
    if (r < 0) {
      vd_error ("qcow2: %s: compressed cluster at %#" PRIx64 " (%" PRIu64
                " bytes, guest offset %#" PRIx64 ") does not decompress",
                q->img.path, p->coff, p->csize, offset);
      zbuf_trim (z);
      errno = EIO;
      return -1;
    }
    z->cache_id = q->cache->id;
    z->coff = p->coff;
  }
  memcpy (buf, z->out + (offset & (cs - 1)), len);
  zbuf_trim (z);
  return 0;
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
      if (read_compressed (q, &p, b, offset, p.len) < 0)
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
