/* vmdiskfs - qcow2 driver (write side): internal snapshots made from
 * bytes (a snapshot copied back into the mount), and their times.
 *
 * qcow2_snapshot_import makes the internal snapshot called name read as
 * the guest bytes of a file, replacing one of that name (its id kept) or
 * adding one (the next numeric id), without changing the active layer's
 * guest bytes or anything another snapshot references.  Written from
 * == Snapshots ==, == Cluster mapping == and == Host cluster management ==
 * of qemu's docs/interop/qcow2.txt.
 *
 * What each guest cluster of the snapshot becomes (its bytes: the file's,
 * holes and bytes past its end as zeros):
 *   - all zeros: nothing allocated.  Unallocated without a backing file;
 *     with one, the zero flag (v3) or all zero bits (extended L2); v2
 *     with a backing file: unallocated where the backing file reads zeros
 *     (its block status), elsewhere treated as data below.
 *   - equal to what the active layer shows at the same offset (the
 *     cluster lying inside the active disk), the active L2 entry neither
 *     compressed nor inconsistent: the active entry is copied (host
 *     offset, zero flag, subcluster bitmap; without COPIED) and its host
 *     cluster, if any, gets one more reference.  An unallocated active
 *     entry over a backing file is copied as unallocated: both read the
 *     same backing file there.  Refcounts at their width's maximum (1-bit
 *     refcounts: always) are never raised: the cluster is copied.
 *   - otherwise a new cluster holding the bytes (extended L2: every
 *     subcluster allocated).
 * The snapshot's L2 tables and L1 table are new clusters (an L2 table
 * only where one of its entries is not 0); the active L2 tables are
 * never shared with it, so only active L2 entries change (COPIED), never
 * the active L1.  Its disk_size is the size given (v3 extra data, also
 * written for v2, as qemu does), vm_state_size 0.
 *
 * The snapshot table is rewritten whole to new clusters (entries of the
 * other snapshots copied byte for byte), the header switched to it as the
 * commit point, then the old table (and, when replacing, the old
 * snapshot's L1 table, L2 tables and one reference per L2 entry) freed.
 *
 * == On-disk order == (the writer's write-back, qcow2_writeback in
 * qcow2-refcount.c, writes cached metadata: refcount blocks, fdatasync,
 * refcount table, fdatasync, L2 tables, fdatasync, L1, fdatasync, then
 * applies deferred frees and writes their refcount blocks, fdatasync):
 *
 *   0. write-back of anything pending from earlier writes;
 *   1. per snapshot cluster: data written to new clusters (pwrite), the
 *      snapshot's L2 tables and L1 table written to new clusters; in
 *      memory the new clusters get refcount 1, shared clusters one more,
 *      and the active L2 entries of clusters that become shared lose
 *      COPIED (in the writer's cache, before any later write could go in
 *      place).  Cache pressure may write back meanwhile (same order);
 *   2. the new snapshot table written to new clusters;
 *   3. write-back: data, tables and refcount blocks, fdatasync; active
 *      L2 tables (COPIED cleared), fdatasync;
 *   4. COMMIT: header bytes 60..71 (nb_snapshots, snapshots_offset) in
 *      one pwrite inside the first sector, fdatasync;
 *   5. frees queued (old table; when replacing, the old snapshot's
 *      references), write-back: refcounts decremented, clusters reaching
 *      0 punched, refcount blocks written, fdatasync;
 *   6. when replacing: the active L1 and L2 COPIED flags recomputed from
 *      the refcounts (set where a cluster or table is ours alone again),
 *      write-back: L2 tables, fdatasync, L1, fdatasync.
 *
 * A kill -9 (or power cut) leaves:
 *   - before 4: the image as before the call; the clusters of 1-2 leak
 *     (refcount 1, no reference) and shared clusters have a refcount one
 *     too high (leaks: qemu-img check exit 3, -r leaks repairs).  BUT in
 *     the window of a write-back of 1 or 3 between the fdatasync of the
 *     refcount blocks and that of the L2 tables, a cluster being shared
 *     has refcount 2 on disk while its active L2 entry still has COPIED:
 *     qemu-img check reports "OFLAG_COPIED data cluster" as an ERROR
 *     (exit 2; -r all repairs it).  Nothing is lost: the snapshot is not
 *     committed, so no one else references the cluster yet.  The window
 *     is one write-back step, as with qemu's own snapshot create (its
 *     refcount and L2 updates are separate writes too);
 *   - between 4 and 5's fdatasync: the new table in effect; the old
 *     table (and the replaced snapshot's clusters) leak;
 *   - between 5's fdatasync and 6's (replacing only): a cluster (or L2
 *     table) the old snapshot shared with the active layer has refcount
 *     1 on disk but no COPIED in the active entry: the second OFLAG_COPIED
 *     window, again one write-back step; qemu and this writer only copy
 *     such a cluster on its next write (harmless);
 *   - after 6: consistent, clean.
 * The active layer's guest bytes and every other snapshot read the same
 * at every point.
 *
 * qcow2_snapshot_set_times rewrites the table the same way (2, 4, and
 * the old table freed as in 5): leaks only.
 *
 * Errors before the commit give back what was taken (the references are
 * dropped again, COPIED recomputed as in 6); corrupt metadata met on the
 * way (an active or old-snapshot entry outside the file, a refcount of 0
 * on a referenced cluster) fails EIO with a log line before the commit.
 * An error after it (5, 6: an I/O error) still fails the call, the new
 * snapshot being in place and what was to be freed leaking.  A write-back
 * that fails stops the writer (its own rule): nothing is given back then.
 * External data files: ENOTSUP (the spec allows no internal snapshots
 * with them).  Auto dirty bitmaps are left alone: they follow changes of
 * the virtual disk (writes, snapshot switching), and an import changes
 * none (qcow2-bitmap.c is not called; in_use stays clear).  With 1-bit
 * refcounts nothing can be shared (a shared cluster needs 2): every
 * cluster that is not zeros is copied.  Snapshot images already opened
 * from this one (vd_image_open_snapshot) of a replaced snapshot read
 * freed clusters afterwards (vdformat.h, VD_OPEN_LIVE): the owner reopens
 * them.
 *
 * Threads: under the image's write lock (format.c), one thread.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "vdformat.h"
#include "qcow2.h"
#include "log.h"
#include "endian.h"
#include "cleanup.h"

#define SN_FIXED      40            /* fixed part of a table entry        */
#define SN_EXTRA      16            /* vm_state_size_large, disk_size     */
#define SN_NAME_MAX   65535         /* name_size is 16 bits               */
#define SC_ALL        0xffffffffULL

/* The snapshot table as on disk, entry by entry. */
struct rawtab {
  struct qcow2_snapshot *sn;        /* parsed (qcow2-snapshot.c)          */
  size_t n;
  uint64_t off;                     /* file offset (0: none)              */
  uint8_t *buf;                     /* the entries, padded to 8 each      */
  uint64_t *pos;                    /* entry i is buf[pos[i]..pos[i+1])   */
  uint64_t len;                     /* pos[n]                             */
};

/* Clusters taken for the snapshot not yet committed: given back on
 * failure. */
struct refs {
  struct qcow2_frun *r;
  size_t n, cap;
};

static void
rawtab_free (struct rawtab *t)
{
  qcow2_free_snapshot_table (t->sn, t->n);
  free (t->buf);
  free (t->pos);
  memset (t, 0, sizeof *t);
}

static int
eio (struct qcow2_image *q, const char *what)
{
  vd_error ("qcow2: %s: %s", q->img.path, what);
  errno = EIO;
  return -1;
}

/* Parse the table the header points to (validated by
 * qcow2_read_snapshot_table) and keep its raw entries. */
static int
rawtab_read (struct qcow2_image *q, struct rawtab *t)
{
  uint8_t key[12];
  uint64_t p = 0, cap = 0;
  size_t i;

  memset (t, 0, sizeof *t);
  if (qcow2_read_snapshot_table (q, &t->sn, &t->n, key) < 0)
    return -1;
  t->off = t->n ? load_be64 (key + 4) : 0;
  t->pos = calloc (t->n + 1, sizeof *t->pos);
  if (!t->pos)
    goto fail;
  for (i = 0; i < t->n; i++) {
    uint8_t e[SN_FIXED];
    uint64_t len;

    if (vd_pread_full (q->fd, e, SN_FIXED, t->off + p, true) < 0)
      goto read_fail;
    len = ROUND_UP (SN_FIXED + (uint64_t) load_be32 (e + 36)
                    + load_be16 (e + 12) + load_be16 (e + 14), 8);
    if (p + len > QCOW2_MAX_SNAPSHOT_TABLE) {
      eio (q, "snapshot table changed while read");
      goto fail;
    }
    if (p + len > cap) {
      uint64_t nc = MAX (p + len, 2 * cap);
      uint8_t *nb = realloc (t->buf, nc);

      if (!nb)
        goto fail;
      t->buf = nb;
      cap = nc;
    }
    if (vd_pread_full (q->fd, t->buf + p, len, t->off + p, true) < 0)
      goto read_fail;
    t->pos[i] = p;
    p += len;
  }
  t->pos[t->n] = t->len = p;
  return 0;

 read_fail:
  vd_error ("qcow2: %s: cannot read the snapshot table: %m", q->img.path);
  errno = EIO;
 fail:
  {
    int e = errno;
    rawtab_free (t);
    errno = e;
    return -1;
  }
}

static ssize_t
find_name (const struct rawtab *t, const char *name)
{
  size_t i;

  for (i = 0; i < t->n; i++)
    if (strcmp (t->sn[i].name, name) == 0)
      return i;
  return -1;
}

static int
refs_add (struct refs *r, uint64_t off, unsigned cluster_bits)
{
  uint64_t c = off >> cluster_bits;

  if (r->n && r->r[r->n - 1].first + r->r[r->n - 1].count == c) {
    r->r[r->n - 1].count++;
    return 0;
  }
  if (r->n == r->cap) {
    size_t nc = r->cap ? 2 * r->cap : 64;
    struct qcow2_frun *nr = realloc (r->r, nc * sizeof *nr);

    if (!nr)
      return -1;
    r->r = nr;
    r->cap = nc;
  }
  r->r[r->n++] = (struct qcow2_frun) { c, 1 };
  return 0;
}

/* n new clusters, remembered for a rollback: their offset, or -1. */
static int64_t
alloc (struct qcow2_image *q, struct refs *r, uint64_t n)
{
  int64_t off = qcow2_alloc_clusters (q, n);
  uint64_t i;

  if (off < 0)
    return -1;
  for (i = 0; i < n; i++)
    if (refs_add (r, off + (i << q->cluster_bits), q->cluster_bits) < 0)
      return -1;
  return off;
}

/* Is host cluster offset h (from an entry) one we may count: aligned,
 * past the header, inside what the file holds? */
static bool
host_ok (struct qcow2_image *q, uint64_t h)
{
  if (!IS_ALIGNED (h, q->cluster_size) || h < q->cluster_size)
    return false;
  return h < MAX (q->w->alloc_end, qcow2_file_size (q, false, false))
    || h < qcow2_file_size (q, false, true);
}

/* ---- The input file ---- */

struct input {
  int fd;
  uint64_t fsize;
  bool no_seek;                     /* SEEK_DATA not supported            */
  uint64_t q0, d0;                  /* [q0, d0) known to be a hole        */
};

/* Is [off, off + n) of the input a hole (or past its end)? */
static bool
in_hole (struct input *in, uint64_t off, uint64_t n)
{
  off_t d;

  if (off >= in->fsize)
    return true;
  if (in->no_seek)
    return false;
  if (off >= in->q0 && off + n <= in->d0)
    return true;
  if (off >= in->q0 && off < in->d0)
    return false;               /* data starts inside: known */
  d = lseek (in->fd, off, SEEK_DATA);
  if (d < 0) {
    if (errno != ENXIO) {
      in->no_seek = true;
      return false;
    }
    d = in->fsize;              /* no data from off on */
  }
  in->q0 = off;
  in->d0 = MIN ((uint64_t) d, in->fsize);
  if (in->d0 == in->fsize)
    in->d0 = UINT64_MAX;        /* zeros past the end too */
  return off + n <= in->d0;
}

/* ---- Building the snapshot's tables ---- */

struct build {
  struct qcow2_image *q;
  struct input in;
  uint64_t size;                    /* the snapshot's disk size           */
  uint8_t *ibuf, *vbuf;             /* input cluster, active view         */
  struct refs refs;
  uint64_t shared, copied;          /* clusters (statistics, debug log)   */
};

/* Share the active layer's entry for guest cluster gc when it shows
 * exactly ibuf[0..n): *done, *e, *bm for the snapshot's entry. */
static int
try_share (struct build *b, uint64_t gc, uint64_t n, bool *done,
           uint64_t *e, uint64_t *bm)
{
  struct qcow2_image *q = b->q;
  struct qcow2_writer *w = q->w;
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t l1i = gc >> cov_bits, l1e, l2off, ae = 0, abm = 0, host, rc;
  uint64_t idx = (gc >> q->cluster_bits) & ((1ULL << q->l2_bits) - 1);
  struct qcow2_wslot *t = NULL;
  uint8_t *p = NULL;
  int r = -1;

  *done = false;
  if (gc + n > q->img.size || l1i >= w->l1_disk_size)
    return 0;
  l1e = w->l1[l1i];
  l2off = l1e & QCOW2_L1E_OFFSET_MASK;
  if (l2off) {
    t = qcow2_wcache_get (q, l2off, QW_L2, false);
    if (!t)
      return -1;
    p = t->data + idx * q->l2_entry_bytes;
    ae = load_be64 (p);
    if (q->extended_l2)
      abm = load_be64 (p + 8);
  }
  host = ae & QCOW2_L2E_OFFSET_MASK;
  if (ae & QCOW2_L2E_COMPRESSED)
    goto no;                    /* copied: never shared */
  if ((ae & QCOW2_L2E_COPIED) && !(l1e & QCOW2_L2E_COPIED))
    goto no;                    /* inconsistent; leave that table alone */
  if (host) {
    if (!host_ok (q, host)) {
      vd_error ("qcow2: %s: L2 entry %#" PRIx64 " for guest offset %#"
                PRIx64 " points outside the file or into the header",
                q->img.path, ae, gc);
      errno = EIO;
      goto out;
    }
    if (qcow2_refcount_get (q, host >> q->cluster_bits, &rc) < 0)
      goto out;
    if (rc == 0) {
      vd_error ("qcow2: %s: cluster %#" PRIx64 " in use at guest offset %#"
                PRIx64 " has refcount 0; run qemu-img check -r all",
                q->img.path, host, gc);
      errno = EIO;
      goto out;
    }
    if (rc >= w->rc_max)
      goto no;                  /* cannot count one more: copied */
  }
  if (qcow2_read (&q->img, b->vbuf, n, gc) < 0)
    goto out;
  if (memcmp (b->vbuf, b->ibuf, n) != 0)
    goto no;
  if (host) {
    if (qcow2_refcount_set (q, host >> q->cluster_bits, rc + 1) < 0
        || refs_add (&b->refs, host, q->cluster_bits) < 0)
      goto out;
    if (ae & QCOW2_L2E_COPIED) {
      /* Shared from now on: a later write must copy it. */
      store_be64 (p, ae & ~QCOW2_L2E_COPIED);
      qcow2_wcache_dirty (q, t);
    }
  }
  *e = ae & ~QCOW2_L2E_COPIED;
  *bm = abm;
  *done = true;
  b->shared++;
 no:
  r = 0;
 out:
  qcow2_wcache_put (t);
  return r;
}

/* The entry of guest cluster gc of the snapshot. */
static int
build_entry (struct build *b, uint64_t gc, uint64_t *e, uint64_t *bm)
{
  struct qcow2_image *q = b->q;
  uint64_t cs = q->cluster_size, n = MIN (cs, b->size - gc);
  bool zero, done;
  int64_t h;

  *e = *bm = 0;
  zero = in_hole (&b->in, gc, n);
  if (zero)
    memset (b->ibuf, 0, n);
  else {
    if (vd_pread_full (b->in.fd, b->ibuf, n, gc, true) < 0) {
      vd_error ("qcow2: %s: cannot read the snapshot's bytes at %#" PRIx64
                ": %m", q->img.path, gc);
      return -1;
    }
    zero = vd_is_zero (b->ibuf, n);
  }
  if (zero) {
    if (!q->backing_name)
      return 0;                 /* unallocated: zeros */
    if (q->extended_l2) {
      *bm = SC_ALL << 32;
      return 0;
    }
    if (q->version >= 3) {
      *e = QCOW2_L2E_ZERO;
      return 0;
    }
    /* v2 over a backing file: unallocated only where it reads zeros. */
    if (!q->backing) {
      errno = EIO;              /* VD_OPEN_NO_BACKING */
      return -1;
    }
    if (qcow2_backing_zero (q, gc, n, &zero) < 0)
      return -1;
    if (zero)
      return 0;
  }
  if (try_share (b, gc, n, &done, e, bm) < 0)
    return -1;
  if (done)
    return 0;
  if ((h = alloc (q, &b->refs, 1)) < 0)
    return -1;
  memset (b->ibuf + n, 0, cs - n);
  if (qcow2_pwrite_now (q, b->ibuf, cs, h) < 0)
    return -1;
  *e = (uint64_t) h;
  *bm = q->extended_l2 ? SC_ALL : 0;
  b->copied++;
  return 0;
}

/* Build and write the snapshot's L2 tables and L1 table: *l1_off. */
static int
build_tables (struct build *b, uint32_t l1n, uint64_t *l1_off)
{
  struct qcow2_image *q = b->q;
  uint64_t cs = q->cluster_size, l1_bytes = (uint64_t) l1n * 8;
  uint64_t l1_clusters = DIV_ROUND_UP (l1_bytes, cs);
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  CLEANUP_FREE uint8_t *l2 = malloc (cs);
  CLEANUP_FREE uint8_t *l1 = calloc (l1_clusters, cs);
  uint64_t l1i;
  int64_t off;

  if (!l2 || !l1)
    return -1;
  for (l1i = 0; l1i < l1n && (l1i << cov_bits) < b->size; l1i++) {
    uint64_t g0 = l1i << cov_bits, g1 = MIN (b->size, g0 + (1ULL << cov_bits));
    uint64_t gc, i;
    bool used = false;

    /* A range of holes without a backing file needs no table at all. */
    if (!q->backing_name && in_hole (&b->in, g0, g1 - g0))
      continue;
    memset (l2, 0, cs);
    for (gc = g0, i = 0; gc < g1; gc += cs, i++) {
      uint64_t e, bm;

      if (build_entry (b, gc, &e, &bm) < 0)
        return -1;
      if (e || bm) {
        store_be64 (l2 + i * q->l2_entry_bytes, e);
        if (q->extended_l2)
          store_be64 (l2 + i * q->l2_entry_bytes + 8, bm);
        used = true;
      }
    }
    if (!used)
      continue;
    if ((off = alloc (q, &b->refs, 1)) < 0
        || qcow2_pwrite_now (q, l2, cs, off) < 0)
      return -1;
    store_be64 (l1 + l1i * 8, (uint64_t) off);
  }
  if ((off = alloc (q, &b->refs, l1_clusters)) < 0
      || qcow2_pwrite_now (q, l1, l1_clusters * cs, off) < 0)
    return -1;
  *l1_off = off;
  return 0;
}

/* ---- The old snapshot's references ---- */

/* Check (apply false) or drop (apply true, after the commit) every
 * reference snapshot sn holds: its L1 table, its L2 tables and, through
 * them, one reference per L2 entry (as qemu-img check counts them). */
static int
snapshot_refs (struct qcow2_image *q, const struct qcow2_snapshot *sn,
               bool apply)
{
  uint64_t cs = q->cluster_size, nl2 = 1ULL << q->l2_bits;
  uint64_t fsize = MAX (q->w->alloc_end, qcow2_file_size (q, false, true));
  CLEANUP_FREE uint64_t *l1 = NULL;
  CLEANUP_FREE uint8_t *l2 = malloc (cs);
  uint64_t i, j;

  if (!l2)
    return -1;
  if (sn->l1_size == 0)
    return 0;
  l1 = malloc ((uint64_t) sn->l1_size * 8);
  if (!l1)
    return -1;
  if (vd_pread_full (q->fd, l1, (uint64_t) sn->l1_size * 8, sn->l1_offset,
                     false) < 0) {
    vd_error ("qcow2: %s: cannot read snapshot %s's L1 table: %m",
              q->img.path, sn->id);
    errno = EIO;
    return -1;
  }
  for (i = 0; i < sn->l1_size; i++) {
    uint64_t off = load_be64 (&l1[i]) & QCOW2_L1E_OFFSET_MASK;

    if (off == 0)
      continue;
    if (!host_ok (q, off))
      return eio (q, "a snapshot's L1 table points outside the file");
    if (vd_pread_full (q->fd, l2, cs, off, false) < 0) {
      vd_error ("qcow2: %s: cannot read L2 table at %#" PRIx64 ": %m",
                q->img.path, off);
      errno = EIO;
      return -1;
    }
    for (j = 0; j < nl2; j++) {
      uint64_t e = load_be64 (l2 + j * q->l2_entry_bytes);
      uint64_t h = e & QCOW2_L2E_OFFSET_MASK;

      if (e & QCOW2_L2E_COMPRESSED) {
        unsigned x = 62 - (q->cluster_bits - 8);
        uint64_t coff = e & ((1ULL << x) - 1);

        if (coff < cs || coff >= fsize)
          return eio (q, "a snapshot's compressed cluster lies outside "
                      "the file");
      }
      else if (h && !host_ok (q, h))
        return eio (q, "a snapshot's L2 entry points outside the file");
      if (apply && qcow2_free_entry (q, e) < 0)
        return -1;
    }
    if (apply && (qcow2_free_later (q, off, cs) < 0
                  || qcow2_safe_point (q) < 0))
      return -1;
  }
  if (apply)
    return qcow2_free_later (q, sn->l1_offset, (uint64_t) sn->l1_size * 8);
  return 0;
}

/* Step 6: the active L1 and L2 COPIED flags recomputed from the
 * refcounts (a table shared with a snapshot is left alone: all it
 * references is shared through it). */
static int
fix_copied (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  uint64_t nl2 = 1ULL << q->l2_bits, l1i, j, rc;

  for (l1i = 0; l1i < w->l1_disk_size; l1i++) {
    uint64_t l1e = w->l1[l1i], off = l1e & QCOW2_L1E_OFFSET_MASK;
    struct qcow2_wslot *t;
    bool want;

    if (off == 0)
      continue;
    if (qcow2_refcount_get (q, off >> q->cluster_bits, &rc) < 0)
      return -1;
    want = rc == 1;
    if (want != ((l1e & QCOW2_L2E_COPIED) != 0))
      qcow2_l1_set (q, l1i, want ? l1e | QCOW2_L2E_COPIED
                    : l1e & ~QCOW2_L2E_COPIED);
    if (!want)
      continue;
    t = qcow2_wcache_get (q, off, QW_L2, false);
    if (!t)
      return -1;
    for (j = 0; j < nl2; j++) {
      uint8_t *p = t->data + j * q->l2_entry_bytes;
      uint64_t e = load_be64 (p), h = e & QCOW2_L2E_OFFSET_MASK;

      if (h == 0 || (e & QCOW2_L2E_COMPRESSED))
        continue;
      if (qcow2_refcount_get (q, h >> q->cluster_bits, &rc) < 0) {
        qcow2_wcache_put (t);
        return -1;
      }
      want = rc == 1;
      if (want != ((e & QCOW2_L2E_COPIED) != 0)) {
        store_be64 (p, want ? e | QCOW2_L2E_COPIED : e & ~QCOW2_L2E_COPIED);
        qcow2_wcache_dirty (q, t);
      }
    }
    qcow2_wcache_put (t);
  }
  return 0;
}

/* ---- The table and the commit ---- */

/* Entry bytes for a new snapshot (padded to 8): *len. */
static uint8_t *
make_entry (uint64_t l1_off, uint32_t l1_size, const char *id,
            const char *name, uint32_t sec, uint32_t nsec, uint64_t clock,
            uint64_t disk_size, uint64_t *len)
{
  size_t il = strlen (id), nl = strlen (name);
  uint8_t *e;

  *len = ROUND_UP (SN_FIXED + SN_EXTRA + il + nl, 8);
  e = calloc (1, *len);
  if (!e)
    return NULL;
  store_be64 (e, l1_off);
  store_be32 (e + 8, l1_size);
  store_be16 (e + 12, il);
  store_be16 (e + 14, nl);
  store_be32 (e + 16, sec);
  store_be32 (e + 20, nsec);
  store_be64 (e + 24, clock);
  store_be32 (e + 32, 0);                       /* vm_state_size */
  store_be32 (e + 36, SN_EXTRA);
  store_be64 (e + SN_FIXED, 0);                 /* vm_state_size_large */
  store_be64 (e + SN_FIXED + 8, disk_size);
  memcpy (e + SN_FIXED + SN_EXTRA, id, il);
  memcpy (e + SN_FIXED + SN_EXTRA + il, name, nl);
  return e;
}

/* Write t's entries with entry idx replaced by (or, idx == n, followed
 * by) ent to new clusters, make everything so far durable, switch the
 * header to the new table (the commit), queue the old table's clusters
 * for freeing, and refresh the parsed table. */
static int
commit_table (struct qcow2_image *q, const struct rawtab *t, size_t idx,
              const uint8_t *ent, uint64_t ent_len, struct refs *refs)
{
  uint64_t cs = q->cluster_size, len, nclusters, p = 0, nb, i;
  CLEANUP_FREE uint8_t *buf = NULL;
  struct qcow2_snapshot *snaps;
  uint8_t hb[12];
  size_t n;
  int64_t off;

  nb = t->n + (idx == t->n);
  len = t->len + ent_len - (idx < t->n ? t->pos[idx + 1] - t->pos[idx] : 0);
  if (nb > QCOW2_MAX_SNAPSHOTS || len > QCOW2_MAX_SNAPSHOT_TABLE) {
    vd_error ("qcow2: %s: too many snapshots", q->img.path);
    errno = EFBIG;
    return -1;
  }
  nclusters = DIV_ROUND_UP (len, cs);
  buf = calloc (nclusters, cs);
  if (!buf)
    return -1;
  for (i = 0; i < nb; i++) {
    if (i == idx) {
      memcpy (buf + p, ent, ent_len);
      p += ent_len;
    }
    else {
      uint64_t l = t->pos[i + 1] - t->pos[i];

      memcpy (buf + p, t->buf + t->pos[i], l);
      p += l;
    }
  }
  if ((off = alloc (q, refs, nclusters)) < 0
      || qcow2_pwrite_now (q, buf, nclusters * cs, off) < 0)
    return -1;
  /* Steps 3 and 4. */
  if (qcow2_writeback (q) < 0 || qcow2_sync (q, true) < 0)
    return -1;
  store_be32 (hb, nb);
  store_be64 (hb + 4, off);
  if (pwrite (q->fd, hb, sizeof hb, 60) != sizeof hb
      || qcow2_sync (q, false) < 0) {
    vd_error ("qcow2: %s: cannot write the header: %m", q->img.path);
    q->w->failed = true;        /* not knowing which table is in effect */
    errno = EIO;
    return -1;
  }
  refs->n = 0;                  /* committed: nothing to give back */
  if (t->n && qcow2_free_later (q, t->off, t->len) < 0)
    vd_warn ("qcow2: %s: the old snapshot table leaks: %m", q->img.path);
  /* What list_snapshots and open_snapshot answer from. */
  pthread_mutex_lock (&q->sn_lock);
  if (qcow2_read_snapshot_table (q, &snaps, &n, q->sn_key) == 0) {
    qcow2_free_snapshot_table (q->sn_table, q->sn_count);
    q->sn_table = snaps;
    q->sn_count = n;
    q->sn_loaded = true;
  }
  else
    vd_warn ("qcow2: %s: cannot reread the snapshot table just written",
             q->img.path);
  pthread_mutex_unlock (&q->sn_lock);
  return 0;
}

/* Before the commit, on failure: drop what was taken (the shared
 * clusters' extra references, the new clusters), then COPIED as it was
 * (step 6). */
static void
rollback (struct qcow2_image *q, struct refs *refs)
{
  int e = errno;
  size_t i;

  if (refs->n == 0 || q->w->failed) {
    errno = e;
    return;
  }
  for (i = 0; i < refs->n; i++)
    if (qcow2_free_later (q, refs->r[i].first << q->cluster_bits,
                          refs->r[i].count << q->cluster_bits) < 0)
      break;
  if (i < refs->n || qcow2_writeback (q) < 0 || fix_copied (q) < 0
      || qcow2_writeback (q) < 0)
    vd_error ("qcow2: %s: could not give back the clusters of a failed "
              "snapshot import (leaks: qemu-img check -r leaks)",
              q->img.path);
  refs->n = 0;
  errno = e;
}

static uint64_t
next_id (const struct rawtab *t)
{
  uint64_t max = 0;
  size_t i;

  for (i = 0; i < t->n; i++) {
    uint64_t v = strtoull (t->sn[i].id, NULL, 10);

    if (v > max && v < UINT64_MAX)
      max = v;
  }
  return max + 1;
}

static int
writable (struct qcow2_image *q)
{
  if (q->w->failed) {
    errno = EIO;
    return -1;
  }
  if (q->has_data_file) {
    vd_error ("qcow2: %s: internal snapshots are not allowed with an "
              "external data file", q->img.path);
    errno = ENOTSUP;
    return -1;
  }
  return 0;
}

int
qcow2_snapshot_import (struct vd_image *img, const char *name, int fd,
                       uint64_t size, const struct vd_snapshot *t)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  unsigned cov_bits = q->cluster_bits + q->l2_bits;
  uint64_t l1n = DIV_ROUND_UP (size, 1ULL << cov_bits), l1_off, elen;
  struct rawtab tab;
  struct build b = { .q = q, .size = size };
  const struct qcow2_snapshot *old = NULL;
  CLEANUP_FREE uint8_t *ent = NULL;
  char idbuf[24];
  const char *id;
  uint32_t sec, nsec;
  uint64_t clock;
  struct stat st;
  ssize_t idx;
  int r = -1;

  if (writable (q) < 0)
    return -1;
  if (strlen (name) > SN_NAME_MAX) {
    errno = EINVAL;
    return -1;
  }
  if (l1n * 8 > QCOW2_MAX_L1_BYTES) {
    errno = EFBIG;
    return -1;
  }
  if (l1n == 0)
    l1n = 1;                    /* an empty disk: an L1 table all the same */
  if (fstat (fd, &st) < 0)
    return -1;
  b.in.fd = fd;
  b.in.fsize = st.st_size;
  /* Step 0. */
  if (qcow2_writeback (q) < 0 || rawtab_read (q, &tab) < 0)
    return -1;
  idx = find_name (&tab, name);
  if (idx >= 0) {
    old = &tab.sn[idx];
    /* Its references checked now: dropping them comes after the commit. */
    if (snapshot_refs (q, old, false) < 0)
      goto out;
  }
  b.ibuf = malloc (q->cluster_size);
  b.vbuf = malloc (q->cluster_size);
  if (!b.ibuf || !b.vbuf)
    goto out;

  if (t) {
    sec = t->date_sec;
    nsec = t->date_nsec;
    clock = t->vm_clock_nsec;
  }
  else if (old) {
    sec = old->date_sec;
    nsec = old->date_nsec;
    clock = old->vm_clock_nsec;
  }
  else {
    struct timespec ts;

    clock_gettime (CLOCK_REALTIME, &ts);
    sec = ts.tv_sec;
    nsec = ts.tv_nsec;
    clock = 0;
  }
  if (old)
    id = old->id;
  else {
    snprintf (idbuf, sizeof idbuf, "%" PRIu64, next_id (&tab));
    id = idbuf;
  }

  /* Steps 1 and 2, then 3 and 4 (commit_table). */
  if (build_tables (&b, l1n, &l1_off) < 0)
    goto fail;
  ent = make_entry (l1_off, l1n, id, name, sec, nsec, clock, size, &elen);
  if (!ent
      || commit_table (q, &tab, idx >= 0 ? (size_t) idx : tab.n, ent, elen,
                       &b.refs) < 0)
    goto fail;
  vd_debug ("qcow2: %s: snapshot %s (id %s) imported: %" PRIu64
            " clusters shared with the active layer, %" PRIu64 " written",
            img->path, name, id, b.shared, b.copied);

  /* Step 5, and 6 when replacing. */
  if (old && snapshot_refs (q, old, true) < 0)
    goto out;
  if (qcow2_writeback (q) < 0)
    goto out;
  if (old && (fix_copied (q) < 0 || qcow2_writeback (q) < 0))
    goto out;
  r = qcow2_sync (q, true);
  goto out;

 fail:
  rollback (q, &b.refs);
 out:
  {
    int e = errno;
    free (b.ibuf);
    free (b.vbuf);
    free (b.refs.r);
    rawtab_free (&tab);
    errno = e;
  }
  return r;
}

int
qcow2_snapshot_set_times (struct vd_image *img, const char *name,
                          const struct vd_snapshot *t)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  struct refs refs = { 0 };
  struct rawtab tab;
  CLEANUP_FREE uint8_t *ent = NULL;
  uint64_t len;
  ssize_t idx;
  int r = -1;

  if (writable (q) < 0)
    return -1;
  if (qcow2_writeback (q) < 0 || rawtab_read (q, &tab) < 0)
    return -1;
  idx = find_name (&tab, name);
  if (idx < 0) {
    errno = ENOENT;
    goto out;
  }
  len = tab.pos[idx + 1] - tab.pos[idx];
  ent = malloc (len);
  if (!ent)
    goto out;
  memcpy (ent, tab.buf + tab.pos[idx], len);
  store_be32 (ent + 16, t->date_sec);
  store_be32 (ent + 20, t->date_nsec);
  store_be64 (ent + 24, t->vm_clock_nsec);
  if (commit_table (q, &tab, idx, ent, len, &refs) < 0) {
    rollback (q, &refs);
    goto out;
  }
  if (qcow2_writeback (q) < 0)
    goto out;
  r = qcow2_sync (q, true);
 out:
  {
    int e = errno;
    free (refs.r);
    rawtab_free (&tab);
    errno = e;
  }
  return r;
}
