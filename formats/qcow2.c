/* vmdiskfs - qcow2 driver: header parsing and validation, header
 * extensions (backing format, external data file name, feature name
 * table), open and close, and the ops table (the write ops are
 * qcow2-write.c's; an image opened VD_OPEN_RDWR gets its writer state
 * there, after the checks here, and writes it back at close).
 *
 * Written from the specification (qemu's docs/interop/qcow2.txt), not from
 * any implementation.  Versions 2 and 3, cluster sizes 512 B to 2 MiB,
 * refcount widths 1 to 64 bits (validated only: reading needs no
 * refcounts), zero clusters, zlib and zstd compressed clusters, extended
 * L2 entries, backing chains, external data files, internal snapshots.
 *
 * Refused: encrypted images and unknown incompatible features (ENOTSUP),
 * anything inconsistent (EIO).  Images with the dirty bit (left by a crash
 * with lazy refcounts) read fine: only refcounts may be stale, and reading
 * never uses them.  Images with the corrupt bit are opened read-only with
 * a warning: this driver validates every offset it uses anyway, and
 * refusing would lock the user out of the data they want to rescue.
 * Writing refuses both (qcow2-write.c).
 *
 * Threads: open and close run alone; after open, every field here is
 * read-only except the L2 cache (qcow2-cache.c), the cached file sizes
 * and the budget (qcow2-cluster.c) and the snapshot table cache
 * (qcow2-snapshot.c, sn_lock).
 * With VD_OPEN_LIVE the active image keeps no L1 copy (one of at most
 * QCOW2_L1_COPY_MAX is read and validated at open, then dropped): see
 * qcow2-cluster.c.  Only the L1 entries the virtual size needs are used;
 * memory bounds: qcow2-cluster.c.
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

static bool
qcow2_probe (const uint8_t *buf, size_t len)
{
  /* Version 1 belongs to the libqcow driver; claim 2 and later so that
   * an unknown future version gets a clear ENOTSUP from us. */
  return len >= 8 && load_be32 (buf) == QCOW2_MAGIC && load_be32 (buf + 4) >= 2;
}

uint64_t
qcow2_file_size (struct qcow2_image *q, bool data, bool refresh)
{
  uint64_t *p = data ? &q->data_file_size : &q->file_size;
  int fd = data ? q->data_fd : q->fd;
  int64_t end;

  if (refresh && fd >= 0 && (end = vd_fd_size (fd)) >= 0)
    __atomic_store_n (p, (uint64_t) end, __ATOMIC_RELAXED);
  return __atomic_load_n (p, __ATOMIC_RELAXED);
}

/* Copy a string that is not NUL terminated on disk; refuse embedded NULs. */
static char *
dup_disk_string (const char *path, const uint8_t *p, size_t len,
                 const char *what)
{
  char *s;

  if (memchr (p, 0, len) != NULL || len == 0) {
    vd_error ("qcow2: %s: %s is empty or contains a NUL byte", path, what);
    errno = EIO;
    return NULL;
  }
  s = malloc (len + 1);
  if (!s)
    return NULL;
  memcpy (s, p, len);
  s[len] = '\0';
  return s;
}

/* Name an unknown incompatible feature for the error message, from the
 * feature name table extension (== Feature name table ==) if present. */
static void
describe_unknown_features (const char *path, uint64_t unknown,
                           const uint8_t *table, size_t table_len)
{
  char names[512] = "";
  size_t used = 0, i;
  int bit;

  for (bit = 0; bit < 64; bit++) {
    const char *name = NULL;
    int namelen = 0;

    if (!(unknown & (1ULL << bit)))
      continue;
    for (i = 0; table && i + 48 <= table_len; i += 48)
      if (table[i] == 0 && table[i + 1] == bit) {
        name = (const char *) table + i + 2;
        namelen = strnlen (name, 46);
        break;
      }
    if (used < sizeof names) {
      int r;
      if (name)
        r = snprintf (names + used, sizeof names - used, "%s%.*s (bit %d)",
                      used ? ", " : "", namelen, name, bit);
      else
        r = snprintf (names + used, sizeof names - used, "%sbit %d",
                      used ? ", " : "", bit);
      if (r > 0)
        used += r;
    }
  }
  vd_error ("qcow2: %s: unsupported incompatible features: %s", path, names);
}

/* Is [off, off+len) a sane table position: cluster aligned, not in the
 * header cluster, inside the file?  (Used for L1, refcount and snapshot
 * tables.) */
static bool
table_ok (struct qcow2_image *q, uint64_t off, uint64_t len)
{
  uint64_t end;

  if (!IS_ALIGNED (off, q->cluster_size) || off < q->cluster_size)
    return false;
  if (ADD_OVERFLOW (off, len, &end))
    return false;
  return end <= qcow2_file_size (q, false, false) ||
    end <= qcow2_file_size (q, false, true);
}

static void
qcow2_free (struct qcow2_image *q)
{
  if (!q)
    return;
  qcow2_write_close (q);        /* write-back first: needs everything */
  if (q->backing)
    vd_image_close (q->backing);
  if (q->data_fd >= 0 && q->data_fd != q->fd)
    close (q->data_fd);
  if (q->fd >= 0)
    close (q->fd);
  qcow2_cache_free (q->cache);
  free (q->l1);
  vd_budget_release (q->budget, q->l1_charged);
  vd_budget_unref (q->budget);
  qcow2_free_snapshot_table (q->sn_table, q->sn_count);
  pthread_mutex_destroy (&q->sn_lock);
  free (q->backing_name);
  free (q->backing_format);
  free (q->data_file_name);
  free (q->img.path);
  free (q);
}

static void
qcow2_close (struct vd_image *img)
{
  qcow2_free ((struct qcow2_image *) img);
}

/* === Header extensions ===: walk [start, end) of the header cluster. */
static int
parse_extensions (struct qcow2_image *q, const uint8_t *hdr, size_t start,
                  size_t end, const uint8_t **features, size_t *features_len)
{
  const char *path = q->img.path;
  size_t pos = start;
  bool seen_bf = false, seen_df = false;

  while (pos + 8 <= end) {
    uint32_t type = load_be32 (hdr + pos);
    uint32_t len = load_be32 (hdr + pos + 4);
    const uint8_t *data = hdr + pos + 8;

    if (type == QCOW2_EXT_END)
      return 0;
    if (len > end - pos - 8) {
      vd_error ("qcow2: %s: header extension %#x of %" PRIu32
                " bytes overruns the header cluster", path, type, len);
      errno = EIO;
      return -1;
    }
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT:
      if (seen_bf || len > QCOW2_MAX_BACKING_NAME) {
        vd_error ("qcow2: %s: bad backing format extension", path);
        errno = EIO;
        return -1;
      }
      seen_bf = true;
      q->backing_format = dup_disk_string (path, data, len, "backing format");
      if (!q->backing_format)
        return -1;
      break;
    case QCOW2_EXT_DATA_FILE:
      if (seen_df) {
        vd_error ("qcow2: %s: duplicate data file extension", path);
        errno = EIO;
        return -1;
      }
      seen_df = true;
      q->data_file_name = dup_disk_string (path, data, len,
                                           "external data file name");
      if (!q->data_file_name)
        return -1;
      break;
    case QCOW2_EXT_FEATURE_TABLE:
      *features = data;
      *features_len = len;
      break;
    default:                    /* bitmaps, FDE pointer, unknown: ignored */
      break;
    }
    pos += 8 + ROUND_UP ((uint64_t) len, 8);
  }
  return 0;
}

static int
open_data_file (struct qcow2_image *q, const struct vd_chain *chain)
{
  if (!q->data_file_name) {
    vd_error ("qcow2: %s: external data file bit set but the image names "
              "no data file", q->img.path);
    errno = EIO;
    return -1;
  }
  /* An untrusted name: checked, logged and refused as backing files are. */
  q->data_fd = vd_open_named_file ("qcow2", q->img.path, q->data_file_name,
                                   chain, "external data file");
  if (q->data_fd < 0)
    return -1;
  qcow2_file_size (q, true, true);
  return 0;
}

static int
open_backing (struct qcow2_image *q, unsigned flags,
              const struct vd_chain *chain)
{
  /* qemu never writes a backing file while the VM runs: no LIVE. */
  q->backing = vd_open_backing ("qcow2", q->img.path, q->backing_name,
                                q->backing_format, flags & ~VD_OPEN_LIVE,
                                chain);
  return q->backing ? 0 : -1;
}

/* Open path (fd owned from now on, closed on failure).  snapshot: NULL for
 * the active image, else the entry (validated by the image that parsed
 * its table) of the internal snapshot whose L1 table and disk size to use
 * (read-only). */
struct qcow2_image *
qcow2_open_image (const char *path, int fd, unsigned flags,
                  const struct vd_chain *chain,
                  const struct qcow2_snapshot *snapshot)
{
  struct qcow2_image *q;
  CLEANUP_FREE uint8_t *hdr = NULL;
  uint8_t fixed[QCOW2_HDR_V3_MIN_LEN + 8];
  uint64_t file_size, backing_off, l1_off, rt_off, sn_off, size;
  uint64_t l2_coverage, l1_needed, hdr_bytes;
  uint32_t backing_len, crypt, l1_size, rt_clusters, nb_snapshots, hdr_len;
  const uint8_t *features = NULL;
  size_t features_len = 0, ext_end;
  int64_t end;

  q = calloc (1, sizeof *q);
  if (!q) {
    close (fd);
    return NULL;
  }
  q->fd = fd;
  q->data_fd = fd;
  pthread_mutex_init (&q->sn_lock, NULL);
  q->budget = vd_budget_ref (chain ? chain->budget : NULL);
  q->is_snapshot = snapshot != NULL;
  /* A snapshot's tables are immutable while it exists: no need. */
  q->live = (flags & VD_OPEN_LIVE) && !snapshot;
  q->img.path = strdup (path);
  if (!q->img.path)
    goto fail;
  path = q->img.path;

  end = vd_fd_size (fd);
  if (end < 0) {
    vd_error ("qcow2: %s: cannot find the file size: %m", path);
    goto fail;
  }
  file_size = end;
  q->file_size = q->data_file_size = file_size;
  if (file_size < QCOW2_HDR_V2_LEN) {
    vd_error ("qcow2: %s: file too small for a qcow2 header", path);
    errno = EIO;
    goto fail;
  }
  if (vd_pread_full (fd, fixed, sizeof fixed, 0, true) < 0) {
    vd_error ("qcow2: %s: cannot read the header: %m", path);
    goto fail;
  }

  /* == Header == */
  if (load_be32 (fixed) != QCOW2_MAGIC) {
    vd_error ("qcow2: %s: bad magic", path);
    errno = EIO;
    goto fail;
  }
  q->version = load_be32 (fixed + 4);
  if (q->version != 2 && q->version != 3) {
    vd_error ("qcow2: %s: unsupported version %" PRIu32, path, q->version);
    errno = ENOTSUP;
    goto fail;
  }
  backing_off = load_be64 (fixed + 8);
  backing_len = load_be32 (fixed + 16);
  q->cluster_bits = load_be32 (fixed + 20);
  size = load_be64 (fixed + 24);
  crypt = load_be32 (fixed + 32);
  l1_size = load_be32 (fixed + 36);
  l1_off = load_be64 (fixed + 40);
  rt_off = load_be64 (fixed + 48);
  rt_clusters = load_be32 (fixed + 56);
  nb_snapshots = load_be32 (fixed + 60);
  sn_off = load_be64 (fixed + 64);

  if (q->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
      q->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
    vd_error ("qcow2: %s: cluster_bits %u outside %d..%d", path,
              q->cluster_bits, QCOW2_MIN_CLUSTER_BITS,
              QCOW2_MAX_CLUSTER_BITS);
    errno = EIO;
    goto fail;
  }
  q->cluster_size = 1ULL << q->cluster_bits;

  if (q->version == 2) {
    hdr_len = QCOW2_HDR_V2_LEN;
    q->refcount_order = 4;
  }
  else {
    q->incompat = load_be64 (fixed + 72);
    q->compat = load_be64 (fixed + 80);
    q->autoclear = load_be64 (fixed + 88);
    q->refcount_order = load_be32 (fixed + 96);
    hdr_len = load_be32 (fixed + 100);
    if (hdr_len < QCOW2_HDR_V3_MIN_LEN || hdr_len % 8 != 0 ||
        hdr_len > q->cluster_size) {
      vd_error ("qcow2: %s: bad header_length %" PRIu32, path, hdr_len);
      errno = EIO;
      goto fail;
    }
    if (q->refcount_order > 6) {
      vd_error ("qcow2: %s: refcount_order %u > 6", path, q->refcount_order);
      errno = EIO;
      goto fail;
    }
  }

  /* The whole header cluster: extensions and the backing file name. */
  hdr_bytes = q->cluster_size;
  hdr = malloc (hdr_bytes);
  if (!hdr)
    goto fail;
  if (vd_pread_full (fd, hdr, hdr_bytes, 0, true) < 0) {
    vd_error ("qcow2: %s: cannot read the header cluster: %m", path);
    goto fail;
  }

  /* The backing file name lives in the header cluster, after the header
   * extensions; those end at the name if it is there. */
  ext_end = hdr_bytes;
  if (backing_off != 0) {
    uint64_t bend;

    if (backing_len == 0 || backing_len > QCOW2_MAX_BACKING_NAME ||
        backing_off < hdr_len ||
        ADD_OVERFLOW (backing_off, (uint64_t) backing_len, &bend) ||
        bend > hdr_bytes) {
      vd_error ("qcow2: %s: bad backing file name (offset %" PRIu64
                ", length %" PRIu32 ")", path, backing_off, backing_len);
      errno = EIO;
      goto fail;
    }
    q->backing_name = dup_disk_string (path, hdr + backing_off, backing_len,
                                       "backing file name");
    if (!q->backing_name)
      goto fail;
    ext_end = backing_off;
  }
  if (parse_extensions (q, hdr, hdr_len, ext_end, &features, &features_len)
      < 0)
    goto fail;

  /* Features. */
  if (q->incompat & ~QCOW2_INCOMPAT_KNOWN) {
    describe_unknown_features (path, q->incompat & ~QCOW2_INCOMPAT_KNOWN,
                               features, features_len);
    errno = ENOTSUP;
    goto fail;
  }
  if (crypt != 0) {
    vd_error ("qcow2: %s: encrypted images (crypt_method %" PRIu32
              ") are not supported", path, crypt);
    errno = ENOTSUP;
    goto fail;
  }
  if (q->incompat & QCOW2_INCOMPAT_CORRUPT)
    vd_warn ("qcow2: %s: image is marked corrupt; reading it anyway "
             "(read-only), every offset is checked", path);
  if (q->incompat & QCOW2_INCOMPAT_DIRTY)
    vd_debug ("qcow2: %s: dirty bit set (refcounts may be stale; "
              "not needed for reading)", path);

  q->compression = QCOW2_COMPRESS_ZLIB;
  if (q->version == 3 && hdr_len > QCOW2_HDR_COMPRESSION_TYPE) {
    uint8_t ct = hdr[QCOW2_HDR_COMPRESSION_TYPE];

    if (!(q->incompat & QCOW2_INCOMPAT_COMPRESSION) && ct != 0) {
      vd_error ("qcow2: %s: compression_type %u without the compression "
                "type feature bit", path, ct);
      errno = EIO;
      goto fail;
    }
    if ((q->incompat & QCOW2_INCOMPAT_COMPRESSION) && ct != 1) {
      vd_error ("qcow2: %s: unsupported compression_type %u", path, ct);
      errno = ct == 0 ? EIO : ENOTSUP;
      goto fail;
    }
    q->compression = ct;
  }
  else if (q->incompat & QCOW2_INCOMPAT_COMPRESSION) {
    vd_error ("qcow2: %s: compression type bit set but no compression_type "
              "field", path);
    errno = EIO;
    goto fail;
  }

  q->extended_l2 = (q->incompat & QCOW2_INCOMPAT_EXTL2) != 0;
  q->l2_entry_bytes = q->extended_l2 ? 16 : 8;
  q->l2_bits = q->cluster_bits - (q->extended_l2 ? 4 : 3);
  if (q->extended_l2) {
    if (q->cluster_bits < 14) {
      vd_error ("qcow2: %s: extended L2 entries need clusters of at least "
                "16 KiB", path);
      errno = EIO;
      goto fail;
    }
    q->subcluster_bits = q->cluster_bits - 5;
  }
  else
    q->subcluster_bits = q->cluster_bits;

  q->has_data_file = (q->incompat & QCOW2_INCOMPAT_DATA_FILE) != 0;
  q->data_raw = q->has_data_file &&
    (q->autoclear & QCOW2_AUTOCLEAR_DATA_RAW) != 0;
  if (!q->has_data_file && q->data_file_name) {
    /* An extension without the bit is meaningless; ignore it. */
    free (q->data_file_name);
    q->data_file_name = NULL;
  }
  if (q->data_raw && q->backing_name) {
    vd_error ("qcow2: %s: raw external data file and backing file are "
              "incompatible", path);
    errno = EIO;
    goto fail;
  }

  /* Virtual size and the L1 table. */
  l2_coverage = 1ULL << (q->cluster_bits + q->l2_bits);
  l1_needed = size / l2_coverage + (size % l2_coverage != 0);
  if (size > INT64_MAX ||
      l1_needed > QCOW2_MAX_L1_BYTES / 8 ||
      (uint64_t) l1_size > QCOW2_MAX_L1_BYTES / 8) {
    vd_error ("qcow2: %s: absurd size %" PRIu64 " or l1_size %" PRIu32,
              path, size, l1_size);
    errno = EIO;
    goto fail;
  }
  if (l1_size < l1_needed) {
    vd_error ("qcow2: %s: L1 table (%" PRIu32 " entries) too small for "
              "the virtual size %" PRIu64, path, l1_size, size);
    errno = EIO;
    goto fail;
  }
  if (l1_size > 0 && !table_ok (q, l1_off, (uint64_t) l1_size * 8)) {
    vd_error ("qcow2: %s: L1 table offset %#" PRIx64 " invalid", path,
              l1_off);
    errno = EIO;
    goto fail;
  }

  /* == Host cluster management ==: the refcount table is not used for
   * reading, but a bogus one means a bogus image. */
  if (rt_clusters == 0 ||
      (uint64_t) rt_clusters > QCOW2_MAX_REFTABLE_BYTES >> q->cluster_bits ||
      !table_ok (q, rt_off, (uint64_t) rt_clusters << q->cluster_bits)) {
    /* rt_clusters 0 is an error too: the table must cover the header. */
    vd_error ("qcow2: %s: refcount table (offset %#" PRIx64 ", %" PRIu32
              " clusters) invalid", path, rt_off, rt_clusters);
    errno = EIO;
    goto fail;
  }

  /* == Snapshots ==: only the position here; qcow2-snapshot.c parses. */
  if (nb_snapshots > QCOW2_MAX_SNAPSHOTS ||
      (nb_snapshots > 0 && !table_ok (q, sn_off, 40))) {
    vd_error ("qcow2: %s: snapshot table (offset %#" PRIx64 ", %" PRIu32
              " entries) invalid", path, sn_off, nb_snapshots);
    errno = EIO;
    goto fail;
  }

  q->img.size = size;
  if (!snapshot) {
    /* Parse the snapshot table now, and keep it (qcow2-snapshot.c): a
     * corrupt table is a corrupt image. */
    if (qcow2_read_snapshot_table (q, &q->sn_table, &q->sn_count,
                                   q->sn_key) < 0)
      goto fail;
    q->sn_loaded = true;
    /* Only the entries the virtual size needs (l1_size >= l1_needed). */
    if (qcow2_load_l1 (q, l1_off, l1_needed, "active L1 table") < 0)
      goto fail;
  }
  else {
    /* Its table is parsed on first use (list_snapshots). */
    q->img.size = snapshot->disk_size;
    l1_needed = q->img.size / l2_coverage + (q->img.size % l2_coverage != 0);
    if (qcow2_load_l1 (q, snapshot->l1_offset,
                       MIN ((uint64_t) snapshot->l1_size, l1_needed),
                       "snapshot L1 table") < 0)
      goto fail;
  }

  if (q->live) {
    /* Validated above; looked up afresh from now on. */
    free (q->l1);
    q->l1 = NULL;
    q->l1_size = 0;
    q->nr_l2_tables = 0;
  }
  q->cache = qcow2_cache_new (q);
  if (!q->cache)
    goto fail;

  if (!(flags & VD_OPEN_NO_BACKING)) {
    if (q->has_data_file && open_data_file (q, chain) < 0)
      goto fail;
    if (q->backing_name && open_backing (q, flags, chain) < 0)
      goto fail;
  }
  else if (q->has_data_file)
    q->data_fd = -1;

  if ((flags & VD_OPEN_RDWR) && !snapshot) {
    if (flags & VD_OPEN_LIVE) {
      vd_error ("qcow2: %s: cannot write an image that may change under "
                "us (live)", path);
      errno = EINVAL;
      goto fail;
    }
    if (qcow2_write_open (q, rt_off, rt_clusters, l1_size, hdr, hdr_len,
                          ext_end) < 0)
      goto fail;
  }

  vd_debug ("qcow2: %s: v%" PRIu32 ", cluster %" PRIu64 ", size %" PRIu64
            ", L1 %" PRIu32 " entries (%" PRIu64 " L2 tables)%s%s%s%s",
            path, q->version, q->cluster_size, q->img.size, q->l1_size,
            q->nr_l2_tables, q->extended_l2 ? ", extended L2" : "",
            q->has_data_file ? ", data file" : "",
            q->compression == QCOW2_COMPRESS_ZSTD ? ", zstd" : "",
            q->backing_name ? ", backing" : "");
  return q;

 fail:
  {
    int e = errno ? errno : EIO;
    qcow2_free (q);
    errno = e;
    return NULL;
  }
}

static struct vd_image *
qcow2_open (const char *path, int fd, unsigned flags,
            const struct vd_chain *chain)
{
  struct qcow2_image *q;

  errno = 0;
  q = qcow2_open_image (path, fd, flags, chain, NULL);
  return q ? &q->img : NULL;
}

const struct vd_format qcow2_format = {
  .name = "qcow2",
  .probe = qcow2_probe,
  .open = qcow2_open,
  .close = qcow2_close,
  .read = qcow2_read,
  .block_status = qcow2_block_status,
  .list_snapshots = qcow2_list_snapshots,
  .open_snapshot = qcow2_open_snapshot,
  .write = qcow2_write,
  .flush = qcow2_flush,
  .zero = qcow2_zero,
  .resize = qcow2_resize,
  .snapshot_import = qcow2_snapshot_import,
  .snapshot_set_times = qcow2_snapshot_set_times,
};
