/* vmdiskfs - qcow2 driver: internal definitions shared by qcow2.c
 * (header, open/close), qcow2-cluster.c (L1/L2 mapping, read,
 * block_status, extended L2), qcow2-cache.c (the L2 table cache, and the
 * writer's metadata cache), qcow2-compress.c (compressed clusters),
 * qcow2-snapshot.c (snapshot table, list_snapshots, open_snapshot), and
 * the write side: qcow2-write.c (open for writing, write, zero, flush,
 * resize), qcow2-refcount.c (refcounts, allocation, the ordered
 * write-back) and qcow2-bitmap.c (persistent dirty bitmaps).
 * Prototypes are grouped per file.
 *
 * Written from the specification, qemu's docs/interop/qcow2.txt; section
 * names below ("== Header ==" ...) refer to that document.
 *
 * Threads: everything in struct qcow2_image is set at open and read-only
 * afterwards, except the L2 cache (qcow2-cache.c, one mutex per shard),
 * the cached file sizes (atomic loads/stores, refreshed with fstat when
 * an offset looks beyond the end of a growing file), the chain budget
 * (atomic, vdformat.h) and the parsed snapshot table (qcow2-snapshot.c,
 * sn_lock).  A writable image (VD_OPEN_RDWR, w set) also changes l1,
 * l1_size, l1_offset and img.size, and its writer state, always under the
 * image's write lock (format.c), so never while a reader runs.  With
 * VD_OPEN_LIVE (live set) the file's metadata may change under us: l1 is
 * NULL and the cache unused; every lookup reads the header's L1 position,
 * the L1 entry and L2 entries afresh (qcow2-cluster.c).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_QCOW2_H
#define VD_QCOW2_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vdformat.h"

/* == Header ==: field offsets of the fixed header (big endian). */
#define QCOW2_MAGIC                 0x514649fbU   /* "QFI\xfb" */
#define QCOW2_HDR_V2_LEN            72
#define QCOW2_HDR_V3_MIN_LEN        104
#define QCOW2_HDR_COMPRESSION_TYPE  104           /* one byte, v3 */

/* incompatible_features */
#define QCOW2_INCOMPAT_DIRTY        (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN        0x1fULL
/* autoclear_features */
#define QCOW2_AUTOCLEAR_DATA_RAW    (1ULL << 1)

/* === Header extensions === */
#define QCOW2_EXT_END               0x00000000U
#define QCOW2_EXT_BACKING_FORMAT    0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE     0x6803f857U
#define QCOW2_EXT_DATA_FILE         0x44415441U

/* == Cluster mapping ==: L1 and L2 entries. */
#define QCOW2_L1E_OFFSET_MASK       0x00fffffffffffe00ULL  /* bits 9-55  */
#define QCOW2_L2E_OFFSET_MASK       0x00fffffffffffe00ULL  /* bits 9-55  */
#define QCOW2_L2E_COMPRESSED        (1ULL << 62)
#define QCOW2_L2E_COPIED            (1ULL << 63)
#define QCOW2_L2E_ZERO              (1ULL << 0)            /* v3 only    */

/* Sanity bounds (the spec's notes on qemu's implementation limits). */
#define QCOW2_MAX_L1_BYTES          (32U << 20)
#define QCOW2_MAX_REFTABLE_BYTES    (8U << 20)
#define QCOW2_MAX_SNAPSHOTS         65536
#define QCOW2_MAX_SNAPSHOT_TABLE    (64U << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA    1024
#define QCOW2_MAX_BACKING_NAME      1023
#define QCOW2_MAX_CLUSTER_BITS      21
/* An L1 table (the entries the disk size needs) of at most this many
 * bytes is copied into memory at open, if the chain's budget allows; a
 * bigger one (a disk over 64 TiB with 64 KiB clusters) is read per lookup
 * (qcow2-cluster.c). */
#define QCOW2_L1_COPY_MAX           (1U << 20)
#define QCOW2_MIN_CLUSTER_BITS      9

/* Default bound of each image's L2 cache (qcow2_set_cache_size). */
#define QCOW2_DEFAULT_CACHE_BYTES   (8U << 20)

enum qcow2_compression { QCOW2_COMPRESS_ZLIB = 0, QCOW2_COMPRESS_ZSTD = 1 };

/* One parsed snapshot table entry (== Snapshots ==). */
struct qcow2_snapshot {
  uint64_t l1_offset;
  uint32_t l1_size;
  char *id;
  char *name;
  uint32_t date_sec;
  uint32_t date_nsec;
  uint64_t vm_clock_nsec;
  uint64_t vm_state_size;
  uint64_t disk_size;           /* from extra data, else the image size   */
};

struct qcow2_l2_cache;
struct qcow2_writer;

struct qcow2_image {
  struct vd_image img;          /* must be first                          */

  int fd;                       /* the qcow2 file                         */
  int data_fd;                  /* == fd, or the external data file       */
  uint64_t file_size;           /* atomic: cached size of fd              */
  uint64_t data_file_size;      /* atomic: cached size of data_fd         */

  uint32_t version;             /* 2 or 3                                 */
  unsigned cluster_bits;
  uint64_t cluster_size;
  unsigned l2_bits;             /* log2 of entries per L2 table           */
  unsigned l2_entry_bytes;      /* 8, or 16 with extended L2              */
  bool extended_l2;
  unsigned subcluster_bits;     /* cluster_bits - 5 with extended L2      */
  uint64_t incompat, compat, autoclear;
  unsigned refcount_order;
  enum qcow2_compression compression;
  bool has_data_file;           /* incompatible bit 2                     */
  bool data_raw;                /* autoclear bit 1                        */

  uint64_t *l1;                 /* host byte order, validated at open;
                                   NULL: read per lookup (live, or over
                                   QCOW2_L1_COPY_MAX, or over budget)     */
  uint32_t l1_size;             /* entries in use: those the size needs   */
  uint64_t l1_offset;           /* of the table l1 copies or stands for   */
  uint64_t nr_l2_tables;        /* non-zero L1 entries (without a copy:
                                   l1_size, an upper bound)               */

  char *backing_name;           /* as stored in the image, or NULL        */
  char *backing_format;         /* backing format extension, or NULL      */
  char *data_file_name;         /* data file name extension, or NULL      */
  struct vd_image *backing;     /* NULL: no backing (or NO_BACKING)       */

  bool is_snapshot;             /* opened by qcow2_open_snapshot          */
  struct qcow2_l2_cache *cache;
  bool live;                    /* VD_OPEN_LIVE on the active image: no
                                   l1 copy, no L2 cache (see vdformat.h)  */

  struct vd_budget *budget;     /* the chain's (a reference), or NULL     */
  uint64_t l1_charged;          /* bytes of l1 charged to budget          */

  /* The parsed snapshot table (qcow2-snapshot.c): parsed at open, kept;
   * with live, parsed again when the header's nb_snapshots or
   * snapshots_offset (sn_key, bytes 60..71) changed. */
  pthread_mutex_t sn_lock;      /* protects the four below                */
  bool sn_loaded;
  uint8_t sn_key[12];
  struct qcow2_snapshot *sn_table;
  size_t sn_count;

  /* Images opened VD_OPEN_RDWR: the write side's state (qcow2-write.c);
   * NULL otherwise. */
  struct qcow2_writer *w;
};

/* qcow2.c */
extern const struct vd_format qcow2_format;
struct qcow2_image *qcow2_open_image (const char *path, int fd,
                                      unsigned flags,
                                      const struct vd_chain *chain,
                                      const struct qcow2_snapshot *snapshot);
uint64_t qcow2_file_size (struct qcow2_image *q, bool data, bool refresh);

/* qcow2-cluster.c */
int qcow2_load_l1 (struct qcow2_image *q, uint64_t offset, uint32_t entries,
                   const char *what);
int qcow2_read (struct vd_image *img, void *buf, size_t count,
                uint64_t offset);
int qcow2_block_status (struct vd_image *img, uint64_t offset,
                        uint64_t length, struct vd_extent *e);

/* qcow2-cache.c (and qcow2_set_cache_size, in vdformat.h) */
struct qcow2_l2_cache *qcow2_cache_new (const struct qcow2_image *q);
void qcow2_cache_free (struct qcow2_l2_cache *cache);
/* Unique per open image: the key of inflated clusters (qcow2-compress.c). */
uint64_t qcow2_cache_id (const struct qcow2_l2_cache *cache);
/* A pinned L2 table: qcow2_cache_get pins the table at file offset l2_off
 * (validated by the caller) of q's cache, qcow2_cache_put unpins it. */
struct qcow2_l2_ref {
  const uint8_t *table;         /* cluster_size bytes, on-disk order      */
  struct l2_shard *shard;       /* NULL: private copy in table            */
  struct l2_slot *slot;
  bool borrowed;                /* the writer's table (writable images):
                                   nothing to unpin or free               */
};
/* Forget the read cache's copy of the table at l2_off (the writer took
 * it over or reuses the cluster).  Called with no reader running. */
void qcow2_cache_drop (struct qcow2_image *q, uint64_t l2_off);
int qcow2_cache_get (struct qcow2_image *q, uint64_t l2_off,
                     struct qcow2_l2_ref *ref);
void qcow2_cache_put (struct qcow2_l2_ref *ref);

/* qcow2-compress.c */
/* Copy guest bytes [offset, offset+len) (inside one cluster) of the
 * compressed cluster stored in the host extent [coff, coff+csize) to buf.
 * 0, or -1 with errno (EIO: unreadable, does not decompress). */
int qcow2_read_compressed (struct qcow2_image *q, uint64_t coff,
                           uint64_t csize, void *buf, uint64_t offset,
                           uint64_t len);

/* qcow2-snapshot.c */
/* Parse the table the header points to now; key gets header bytes 60..71
 * as read for it (NULL: not wanted). */
int qcow2_read_snapshot_table (struct qcow2_image *q,
                               struct qcow2_snapshot **snaps, size_t *n,
                               uint8_t key[12]);
void qcow2_free_snapshot_table (struct qcow2_snapshot *snaps, size_t n);
const struct qcow2_snapshot *
qcow2_find_snapshot (const struct qcow2_snapshot *snaps, size_t n,
                     const char *id_or_name);
int qcow2_list_snapshots (struct vd_image *img, struct vd_snapshot **snaps,
                          size_t *n);
struct vd_image *qcow2_open_snapshot (struct vd_image *img,
                                      const char *id_or_name);

/* ---- The write side (qcow2-write.c, qcow2-refcount.c, and the
 * writer's metadata cache in qcow2-cache.c) ---- */

#define QCOW2_AUTOCLEAR_BITMAPS     (1ULL << 0)
#define QCOW2_EXT_BITMAPS           0x23852875U
#define QCOW2_REFTABLE_OFFSET       48            /* header field offsets */

/* What the writer caches: L2 tables and refcount blocks, one cluster
 * each, on-disk byte order. */
enum qcow2_wkind { QW_L2 = 1, QW_REFBLOCK = 2 };

struct qcow2_wslot {
  uint64_t off;                 /* file offset; 0: empty slot             */
  uint8_t *data;                /* cluster_size bytes                     */
  enum qcow2_wkind kind;
  bool dirty;                   /* differs from the file                  */
  bool used;                    /* clock bit (second chance)              */
  unsigned pins;                /* in use by the running operation        */
  int next;                     /* hash chain (slot index), -1: end       */
};

/* A run of host clusters whose references were dropped in memory; the
 * refcount decrement waits until the metadata without the reference is
 * durable (qcow2-refcount.c, qcow2_writeback). */
struct qcow2_frun {
  uint64_t first;               /* cluster index                          */
  uint64_t count;
};

struct qcow2_writer {
  /* The writer's metadata cache (qcow2-cache.c). */
  struct qcow2_wslot **slots;
  unsigned nslots;              /* slots in use (allocated)               */
  unsigned limit;               /* normal bound; more only when pinned    */
  unsigned hand;                /* clock hand                             */
  int *heads;                   /* hash buckets: slot index, -1           */
  unsigned nheads;              /* power of two                           */

  /* The active L1 table, raw entries (flags kept), host order. */
  uint64_t *l1;
  uint32_t l1_disk_size;        /* header l1_size: entries on disk        */
  uint32_t l1_dirty_lo, l1_dirty_hi;   /* entries to write: [lo, hi)     */

  /* The refcount table, raw entries, host order. */
  uint64_t *rt;
  uint64_t rt_entries;
  uint64_t rt_offset;
  uint32_t rt_clusters;
  uint64_t rt_dirty_lo, rt_dirty_hi;   /* entries to write: [lo, hi)     */
  unsigned rb_bits;             /* log2 of refcounts per refblock         */
  uint64_t rc_max;              /* largest refcount the width holds       */

  uint64_t free_hint;           /* no free cluster below this index       */
  uint64_t alloc_end;           /* byte end of the highest cluster used   */

  struct qcow2_frun *frees;     /* deferred frees                         */
  size_t nfrees, frees_cap;
  uint64_t free_clusters;       /* clusters in frees                      */

  uint64_t since_writeback;     /* bytes written or zeroed since          */
  bool data_dirty;              /* data written since the last fdatasync  */
  bool meta_dirty;              /* something cached is dirty              */
  bool in_writeback;
  bool opened;                  /* qcow2_write_open succeeded             */
  bool no_punch;                /* fallocate PUNCH_HOLE not supported     */
  bool failed;                  /* a write-back failed: refuse writes     */
  const uint8_t *pend_buf;      /* gathered data write (qcow2-write.c)    */
  uint64_t pend_off, pend_len;
  struct qcow2_bitmaps *bitmaps; /* auto dirty bitmaps (qcow2-bitmap.c)   */
  uint8_t *cbuf;                /* one cluster of scratch                 */
  uint8_t *cbuf2;
};

/* qcow2-cache.c: the writer's metadata cache. */
int qcow2_wcache_init (struct qcow2_image *q, uint64_t bytes);
void qcow2_wcache_free (struct qcow2_image *q);
/* The cached table at off, for readers (no pin, no change): NULL when
 * not cached. */
const uint8_t *qcow2_wcache_peek (struct qcow2_image *q, uint64_t off);
/* Pin the table at off: read from the file, or with fresh all zeros
 * (a newly allocated cluster).  May write back everything (cache
 * pressure).  NULL with errno. */
struct qcow2_wslot *qcow2_wcache_get (struct qcow2_image *q, uint64_t off,
                                      enum qcow2_wkind kind, bool fresh);
void qcow2_wcache_put (struct qcow2_wslot *s);
void qcow2_wcache_dirty (struct qcow2_image *q, struct qcow2_wslot *s);
/* Discard the table at off (its cluster is freed): never written. */
void qcow2_wcache_drop (struct qcow2_image *q, uint64_t off);
/* Write every dirty table of kind; true in *any when one was. */
int qcow2_wcache_write (struct qcow2_image *q, enum qcow2_wkind kind,
                        bool *any);

/* qcow2-refcount.c */
int qcow2_refcount_open (struct qcow2_image *q, uint64_t rt_offset,
                         uint32_t rt_clusters);
int qcow2_refcount_get (struct qcow2_image *q, uint64_t idx, uint64_t *rc);
/* Set the refcount of cluster idx (in memory; its block must exist:
 * EIO when none does). */
int qcow2_refcount_set (struct qcow2_image *q, uint64_t idx, uint64_t rc);
/* Allocate n contiguous free clusters (refcount 0 -> 1, in memory):
 * their byte offset, or -1 with errno. */
int64_t qcow2_alloc_clusters (struct qcow2_image *q, uint64_t n);
/* Drop one reference to the host clusters [off, off + len) once the
 * metadata without it is durable. */
int qcow2_free_later (struct qcow2_image *q, uint64_t off, uint64_t len);
/* Write back if the deferred frees piled up: call only between clusters,
 * with every changed entry in place. */
int qcow2_safe_point (struct qcow2_image *q);
/* The write-back, the one place the write ordering is enforced. */
int qcow2_writeback (struct qcow2_image *q);
int qcow2_sync (struct qcow2_image *q, bool data);
int qcow2_punch (struct qcow2_image *q, int fd, uint64_t off, uint64_t len);

/* qcow2-bitmap.c */
struct qcow2_bitmaps;
int qcow2_bitmaps_open (struct qcow2_image *q, const uint8_t *ext,
                        uint32_t len);
bool qcow2_bitmaps_active (struct qcow2_image *q);
/* Before changing [offset, offset + len): in_use durable (first time),
 * the range marked. */
int qcow2_bitmaps_mark (struct qcow2_image *q, uint64_t offset,
                        uint64_t len);
int qcow2_bitmaps_close (struct qcow2_image *q);
void qcow2_bitmaps_free (struct qcow2_image *q);

/* qcow2-write.c */
extern uint64_t qcow2_wcache_bytes;
int qcow2_write_open (struct qcow2_image *q, uint64_t rt_offset,
                      uint32_t rt_clusters, uint32_t l1_disk_size,
                      const uint8_t *hdr, size_t ext_start, size_t ext_end);
void qcow2_write_close (struct qcow2_image *q);
int qcow2_write_pending (struct qcow2_image *q);
int qcow2_write (struct vd_image *img, const void *buf, size_t count,
                 uint64_t offset);
int qcow2_zero (struct vd_image *img, uint64_t count, uint64_t offset);
int qcow2_flush (struct vd_image *img);
int qcow2_resize (struct vd_image *img, uint64_t size);
/* Helpers of the write side, for qcow2-snapimport.c: */
/* Write len bytes at off of the data file now (data_dirty set). */
int qcow2_pwrite_now (struct qcow2_image *q, const void *buf, uint64_t len,
                      uint64_t off);
/* Set active L1 entry l1i (raw, flags included) in both L1 copies. */
void qcow2_l1_set (struct qcow2_image *q, uint64_t l1i, uint64_t e);
/* Drop one reference to what L2 entry e points to (qcow2_free_later). */
int qcow2_free_entry (struct qcow2_image *q, uint64_t e);
/* Does the backing file read as zeros over [off, off + len)? */
int qcow2_backing_zero (struct qcow2_image *q, uint64_t off, uint64_t len,
                        bool *zero);

/* qcow2-snapimport.c */
int qcow2_snapshot_import (struct vd_image *img, const char *name, int fd,
                           uint64_t size, const struct vd_snapshot *t);
int qcow2_snapshot_set_times (struct vd_image *img, const char *name,
                              const struct vd_snapshot *t);

#endif
