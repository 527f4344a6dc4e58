/* vmdiskfs - the image formats library: public API and driver ops table.
 *
 * One driver per format (raw.c, qcow2*.c, qed.c, libqcow.c) behind one ops
 * table, struct vd_format.  The library is usable without FUSE: open an
 * image, ask its virtual size, read guest bytes, ask which ranges hold
 * data, list and open internal snapshots.
 *
 * Layering (STYLE.md, after nbdkit): the vd_image_* wrappers in format.c
 * validate every request once (range within the virtual size, count fits),
 * so drivers trust their arguments.  Drivers detect and log errors once
 * (vd_error naming the image file and the reason), then return -1 with
 * errno set: EIO for corrupt metadata, ENOTSUP for features we refuse
 * (encryption, unknown incompatible bits), EINVAL for bad arguments,
 * ENOENT for a missing snapshot.  No driver ever reads outside its image
 * file, whatever the bytes: every offset and size read from disk is
 * validated before use.
 *
 * Threads: after open, read/block_status/list_snapshots/open_snapshot of
 * one image may be called from many threads at once; each driver says in
 * its header comment what protects its shared state (caches).  open and
 * close are not concurrent with anything else on the same image.  Another
 * process (a running VM) may write the image file meanwhile: see
 * VD_OPEN_LIVE below for what a reader then sees.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_VDFORMAT_H
#define VD_VDFORMAT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Flags of vd_image_open. */
#define VD_OPEN_RDWR        0x1  /* open for writing: the image file
                                    (and an external data file) O_RDWR,
                                    locked as qemu locks them (below);
                                    EBUSY when another program holds
                                    them, EROFS from a driver without a
                                    write op.  Backing files and
                                    snapshots stay read-only.         */
#define VD_OPEN_NO_BACKING  0x2  /* do not open backing / data files:
                                    fuzzers; reads needing them fail EIO */
#define VD_OPEN_LIVE        0x4  /* the image may change under us (a
                                    running VM writes it): revalidate
                                    metadata on every request         */

/* VD_OPEN_LIVE, in detail.
 *
 * Without it a driver may cache metadata for as long as the image is open
 * (qcow2: the L1 table, L2 tables and the parsed snapshot table; QED:
 * L1 and L2 chunks), so an image
 * that someone else writes reads stale: new clusters read as holes, a
 * moved L1 table is read where it used to be.  Drivers never detect that;
 * the owner does (fs/ compares the image file's size and mtime and
 * reopens), which costs nothing on the normal path.
 *
 * With it, the qcow2 and QED drivers cache no mapping metadata: every read
 * and block_status looks up the header's L1 position, the L1 entry and the
 * L2 entries it needs with fresh preads (page cache; about 40 bytes plus
 * 8 or 16 bytes per cluster of the request), validated as always, and
 * qcow2 checks that the header and L1 entry did not change while it read
 * the L2 entries (else it retries, and fails EIO after a few tries).  So
 * each request sees metadata at least as fresh as its start: the guest's
 * disk as it would be after a host crash at that moment (crash
 * consistent), qemu's unflushed metadata cache not included.  A torn or
 * changing read gives old data, new data or EIO, never a crash and never
 * a read outside the file.
 *
 * What stays as at open: the virtual size (vd_image_size; a resize is seen
 * by reopening, as fs/ does on an mtime change), the geometry (cluster
 * size, features), the backing chain (backing files are opened without
 * LIVE: qemu does not write them) and external data file.  The snapshot
 * table is parsed once per open image: without LIVE list_snapshots and
 * open_snapshot answer from the table as at open (the owner reopens a
 * changed file); with it, each call preads the header's nb_snapshots and
 * snapshots_offset (12 bytes) and parses the table again only when they
 * changed, so snapshots the running VM makes or deletes show up.  A
 * snapshot opened from
 * a LIVE image (vd_image_open_snapshot) is opened without LIVE: its L1
 * table, L2 tables and clusters are immutable while the snapshot exists.
 * If it is deleted while open its clusters may be reused: reads may then
 * return garbage, but every offset is still validated (EIO, no crash).
 * raw images need nothing (no metadata); QCOW version 1 images ignore the
 * flag (their L1 table, copied or read per lookup, is the one at open).
 *
 * The data clusters a request maps are read after the mapping: a cluster
 * discarded and reused in between (discard, snapshot deletion) can give
 * garbage for that request; qemu writes data before the metadata that
 * points to it, so ordinary writes never expose unwritten clusters. */

enum vd_extent_type {
  VD_EXTENT_DATA = 0,   /* allocated, holds data (may be zeros)            */
  VD_EXTENT_ZERO = 1,   /* reads as zeros, recorded as such (qcow2 zero
                           clusters, preallocated-zero); not data          */
  VD_EXTENT_HOLE = 2,   /* unallocated in the whole chain: reads as zeros  */
};

/* One run of guest bytes of the same kind.  For DATA stored uncompressed
 * and contiguously in a file, fd >= 0 and phys is its file offset, so the
 * caller may splice straight from fd (the fd stays valid while the image
 * is open); otherwise fd is -1 and the caller uses vd_image_pread. */
struct vd_extent {
  uint64_t offset;            /* guest offset                             */
  uint64_t length;            /* > 0                                      */
  enum vd_extent_type type;
  int fd;
  uint64_t phys;
};

/* An internal snapshot (qcow2 snapshot table entry, or equivalent). */
struct vd_snapshot {
  char *id;                   /* unique id string, e.g. "1"               */
  char *name;                 /* tag, any bytes but NUL                   */
  int64_t date_sec;           /* creation time, seconds since the epoch   */
  uint32_t date_nsec;
  uint64_t vm_clock_nsec;     /* guest clock at the snapshot              */
  uint64_t disk_size;         /* virtual disk size recorded with it       */
  uint64_t vm_state_size;     /* size of saved VM state (never shown)     */
};

struct vd_format;

/* Where a file named inside an image may lead (DESIGN.md, "Untrusted
 * names").  Image files are untrusted and we run as root, so every file an
 * image names (backing file, external data file) is opened by
 * vd_open_named_file (safe-open.c): the name is resolved component by
 * component with lstat and readlink (the kernel follows no symlink), a
 * name that passes through one of our own mounts (vd_forbid_mount) is
 * refused before anything in it is touched, only regular files and block
 * devices are opened (O_NONBLOCK|O_NOCTTY, checked again after open), and
 * then this policy applies.  A refusal is EIO for the image that names the
 * file, with one log line naming both. */
struct vd_policy {
  /* A canonical directory (no symlinks, no trailing slash) that every
   * file opened under this policy, the top image included, must resolve
   * into (images mode); NULL: anywhere. */
  char *confine;
  /* The backing chain the domain XML records (<backingStore>, libvirt
   * mode): expect[0] is the top image's backing file, expect[1] its
   * backing file ...; a named backing file at depth d (1 for the top's)
   * must be the same file as expect[d - 1] when d <= nexpect, and there
   * must be none deeper than nexpect when expect_end (the XML ends the
   * chain with an empty <backingStore/>).  Unrecorded levels are followed
   * with the checks above only. */
  char **expect;
  size_t nexpect;
  bool expect_end;
};
/* Deep copies; NULL in, NULL out (and NULL with errno ENOMEM). */
struct vd_policy *vd_policy_dup (const struct vd_policy *p);
void vd_policy_free (struct vd_policy *p);
/* Refuse every name that resolves into path (a canonical mount point of
 * ours: opening through it is a request to ourselves, which can deadlock
 * the daemon beyond SIGKILL), and every mount point of device dev as
 * /proc/self/mountinfo lists it when dev != 0 (bind mounts of it).
 * Process-wide; call before images are opened, and again after mounting. */
void vd_forbid_mount (const char *path, dev_t dev);

/* The common part of an open image.  Each driver's own struct starts with
 * this one (struct qcow2_image { struct vd_image img; ... }).  */
struct vd_image {
  const struct vd_format *fmt;
  char *path;                 /* file name as opened (malloc'd)           */
  uint64_t size;              /* guest-visible (virtual) size in bytes    */
  unsigned flags;             /* VD_OPEN_*                                */
  /* The read bits (0444 at most) that every file the image reads through
   * grants to the owner, group and others of the image file: a file of
   * the chain owned by another user grants the image's owner only what it
   * grants others (vd_read_bits).  Set by format.c after the driver's
   * open. */
  mode_t read_mode;
  /* The image file as opened (fstat): who owns it, and which file it is
   * (a caller that scanned it before can tell it was replaced). */
  dev_t dev;
  ino_t ino;
  uid_t uid;
  gid_t gid;
  /* Top images (and snapshots opened from them): the policy they were
   * opened with, owned; NULL for backing files and without a policy. */
  struct vd_policy *policy;
  /* Images opened VD_OPEN_RDWR (format.c owns these): */
  /* Granularity of the driver's zero op, a power of two: vd_image_pwrite
   * hands it every aligned block of this size that is all zeros, so
   * zeros never allocate (qcow2: the cluster or subcluster; raw: 4 KiB).
   * 0 (no zero op): zeros are written as data.  Set by the driver's open
   * when VD_OPEN_RDWR. */
  uint32_t zero_align;
  /* Serializes writers (write, zero, resize, flush hold it for writing)
   * against readers (read, block_status: for reading), so drivers need
   * no locking of their own between the two.  Initialized by format.c
   * for VD_OPEN_RDWR images only (rw_init). */
  bool rw_init;
  pthread_rwlock_t rw;
  int lock_fd;                /* the image file (the driver's), on which
                                 qemu's locks are held; resize takes the
                                 resize bytes on it meanwhile          */
  /* A network disk (netdisk.h): a read may wait on a server for up to
   * its timeout, so it is never served where a wait would hold up other
   * requests (fs/loop.c's reading thread). */
  bool remote;
  /* Network disks: when the server says the disk last changed (RBD's
   * modify timestamp); 0 when it cannot tell (NBD, iSCSI). */
  struct timespec mtime;
};

/* Chain of images being opened, innermost first: used to refuse cyclic
 * backing chains and chains deeper than VD_MAX_CHAIN_DEPTH. */
#define VD_MAX_CHAIN_DEPTH 64
struct vd_chain {
  const struct vd_chain *next;   /* the image that names this one       */
  dev_t dev;
  ino_t ino;
  unsigned depth;                /* 0 for the top image                 */
  const char *path;              /* this image's file name              */
  const struct vd_policy *policy;  /* of the top image, or NULL          */
  mode_t *modes;                 /* this image's read bits so far: files
                                    it opens (backing, data) AND theirs  */
  uid_t uid;                     /* the top image file's owner and group */
  gid_t gid;
  unsigned flags;                /* this image's open flags: with
                                    VD_OPEN_RDWR, files it names for
                                    data (external data file) are opened
                                    read-write and locked too           */
  struct vd_budget *budget;      /* metadata memory of the whole chain:
                                    set by vd_image_open_chain for a top
                                    image, inherited by backing files and
                                    snapshots opened from it (below)    */
};

/* Memory budget of one chain (bounded memory on untrusted images).
 *
 * Metadata a driver keeps for longer than one request (qcow2: L1 copies
 * and L2 cache tables) is charged to the budget of the chain the image
 * belongs to: the top image, its backing files and the snapshots opened
 * from it (with their backing files) share one.  A charge that does not
 * fit fails, and the driver does without: it reads the L1 entry per
 * lookup, evicts one of its own L2 tables or uses a private table for the
 * one request.  Limit: vd_set_chain_budget (default 9 MiB, the default L2
 * cache bound plus one 1 MiB L1 copy; qcow2_set_cache_size raises it with
 * -o l2_cache).  Refcounted: each image that charges keeps a reference;
 * charges and releases are atomic (any thread). */
struct vd_budget;
#define VD_DEFAULT_CHAIN_BUDGET (9U << 20)
void vd_set_chain_budget (uint64_t bytes);   /* for chains opened later */
struct vd_budget *vd_budget_new (void);
struct vd_budget *vd_budget_ref (struct vd_budget *b);    /* NULL ok */
void vd_budget_unref (struct vd_budget *b);               /* NULL ok */
/* Take bytes from b: false (nothing taken) if that would exceed its
 * limit.  A NULL budget is unlimited (true). */
bool vd_budget_charge (struct vd_budget *b, uint64_t bytes);
void vd_budget_release (struct vd_budget *b, uint64_t bytes);

/* The driver ops table.  New operations are added at the end; NULL means
 * "not supported". */
struct vd_format {
  const char *name;             /* "raw", "qcow2", "qed", "qcow"           */

  /* Does this header look like ours?  buf holds the first len bytes of the
   * file (len may be less than 512 for tiny files).  Returns true/false. */
  bool (*probe) (const uint8_t *buf, size_t len);

  /* Open.  fd is an open file descriptor of path (O_RDONLY unless
   * VD_OPEN_RDWR); the driver owns it from now on, also on failure.
   * chain describes this image (dev/ino/depth) and the images above it;
   * pass it on to vd_image_open_chain for backing files.  Returns NULL
   * with errno set on failure (after logging why). */
  struct vd_image *(*open) (const char *path, int fd, unsigned flags,
                            const struct vd_chain *chain);
  void (*close) (struct vd_image *img);

  /* Read count bytes at offset; the range is within img->size.  0 or -1. */
  int (*read) (struct vd_image *img, void *buf, size_t count,
               uint64_t offset);
  int (*write) (struct vd_image *img, const void *buf, size_t count,
                uint64_t offset);
  int (*flush) (struct vd_image *img);

  /* Describe the guest bytes starting at offset: fill *e with one extent
   * that starts at offset and is at most length bytes long (length > 0,
   * offset + length <= size).  Drivers merge adjacent clusters of the same
   * kind (and, for DATA with fd >= 0, physically contiguous ones) so that
   * a 1 MiB request usually needs one call.  Through backing chains: a
   * range unallocated in this image reports what the backing file has
   * there (HOLE beyond the backing file's end).  0 or -1. */
  int (*block_status) (struct vd_image *img, uint64_t offset,
                       uint64_t length, struct vd_extent *e);

  /* Internal snapshots: *snaps is a malloc'd array (free with
   * vd_snapshots_free); an image without any gives 0 entries.  Optional:
   * NULL for a format without internal snapshots (0 entries). */
  int (*list_snapshots) (struct vd_image *img, struct vd_snapshot **snaps,
                         size_t *n);
  /* Open the snapshot whose id or, failing that, name is id_or_name, as a
   * read-only image of its own (independent of img's lifetime), at the
   * snapshot's own disk size, through its own L1 table.  VM state is never
   * part of it.  NULL with errno ENOENT when no such snapshot. */
  struct vd_image *(*open_snapshot) (struct vd_image *img,
                                     const char *id_or_name);

  /* The write side (images opened VD_OPEN_RDWR; NULL: read-only format,
   * open for writing fails EROFS).  write above: count bytes at offset,
   * within img->size, any alignment; a partial cluster is completed from
   * what the image shows there (backing file included), shared clusters
   * (internal snapshots) are copied first, so no snapshot ever changes.
   * The data is in the file (page cache) when it returns; metadata may be
   * cached until flush.
   *
   * zero: make [offset, offset+count) read as zeros and release the
   * storage behind it where the format can (qcow2: unallocated or zero
   * clusters; raw files: punched holes; block devices: BLKZEROOUT).
   * offset and count are multiples of img->zero_align, except that the
   * range may end at img->size.  NULL: zeros are written as data.
   *
   * flush: everything written so far durable (metadata written back in
   * the order the format needs, then fdatasync of every file written).
   *
   * resize: grow the virtual size to size (> img->size; the new part
   * reads as zeros).  NULL or EFBIG: the disk cannot grow (a block
   * device).  Shrinking is never asked for. */
  int (*zero) (struct vd_image *img, uint64_t count, uint64_t offset);
  int (*resize) (struct vd_image *img, uint64_t size);

  /* Internal snapshots made from bytes (images opened VD_OPEN_RDWR; NULL:
   * the format cannot): see vd_image_snapshot_import and
   * vd_image_snapshot_set_times below.  Called with the write lock held,
   * arguments validated (name not empty, fd a regular file, size a
   * multiple of 512, t's fields in range). */
  int (*snapshot_import) (struct vd_image *img, const char *name, int fd,
                          uint64_t size, const struct vd_snapshot *t);
  int (*snapshot_set_times) (struct vd_image *img, const char *name,
                             const struct vd_snapshot *t);
};

/* The drivers. */
extern const struct vd_format raw_format;
extern const struct vd_format qcow2_format;
extern const struct vd_format qed_format;
extern const struct vd_format libqcow_format;   /* QCOW version 1 only */

/* Bound of each qcow2 image's L2 cache, for images opened afterwards
 * (default 8 MiB, QCOW2_DEFAULT_CACHE_BYTES in qcow2.h); the daemon's
 * -o l2_cache.  Also sets the chain budget (vd_set_chain_budget) to
 * bytes + 1 MiB (one L1 table copy, QCOW2_L1_COPY_MAX).  qcow2-cache.c. */
#define HAVE_QCOW2_SET_CACHE_SIZE 1
void qcow2_set_cache_size (uint64_t bytes);

/* Open path, probing its format (raw when nothing else matches). */
struct vd_image *vd_image_open (const char *path, unsigned flags);
/* Open path as format (NULL: probe) as a top image whose named files obey
 * policy (NULL: no confinement, no expectations; the file checks always
 * apply).  The image keeps a copy of policy. */
struct vd_image *vd_image_open_policy (const char *path, const char *format,
                                       unsigned flags,
                                       const struct vd_policy *policy);
/* Open path as format (NULL: probe).  parent: the chain of the image that
 * names path as backing/data file, or NULL for a top image.  Refuses
 * cycles and over-deep chains with ELOOP (after logging). */
struct vd_image *vd_image_open_chain (const char *path, const char *format,
                                      unsigned flags,
                                      const struct vd_chain *parent);
void vd_image_close (struct vd_image *img);
const char *vd_image_format_name (const struct vd_image *img);
uint64_t vd_image_size (const struct vd_image *img);

/* Reads clamp nothing: the range must lie within the virtual size, else
 * EINVAL.  Returns 0 or -1 with errno. */
int vd_image_pread (struct vd_image *img, void *buf, size_t count,
                    uint64_t offset);
int vd_image_block_status (struct vd_image *img, uint64_t offset,
                           uint64_t length, struct vd_extent *e);
/* Allocated bytes (sum of DATA extents) of the guest view. */
int vd_image_allocated (struct vd_image *img, uint64_t *bytes);
int vd_image_list_snapshots (struct vd_image *img, struct vd_snapshot **snaps,
                             size_t *n);
void vd_snapshots_free (struct vd_snapshot *snaps, size_t n);
struct vd_image *vd_image_open_snapshot (struct vd_image *img,
                                         const char *id_or_name);

/* Writing (images opened VD_OPEN_RDWR; else EBADF).  Ranges are checked
 * as for reads (EINVAL beyond the size).  vd_image_pwrite finds the
 * aligned all-zero blocks of buf (img->zero_align) and zeroes them with
 * the driver's zero op instead of writing them, so zeros never allocate;
 * vd_image_zero zeroes any range (partial blocks at its edges written as
 * zeros).  vd_image_flush makes everything durable; vd_image_resize
 * grows the disk (EFBIG where it cannot).  0 or -1 with errno (EIO after
 * a log line for corrupt metadata; ENOSPC when the host is full). */
bool vd_image_writable (const struct vd_image *img);
int vd_image_pwrite (struct vd_image *img, const void *buf, size_t count,
                     uint64_t offset);
int vd_image_zero (struct vd_image *img, uint64_t count, uint64_t offset);
int vd_image_flush (struct vd_image *img);
int vd_image_resize (struct vd_image *img, uint64_t size);
/* Make the internal snapshot called name read as the guest bytes in fd (a
 * regular file: size bytes, holes read as zeros; SEEK_DATA/SEEK_HOLE skip
 * holes), replacing the snapshot of that name if there is one (its id
 * kept) or adding a new one (next free numeric id).  Clusters whose bytes
 * equal the ACTIVE layer's guest bytes at the same offset are shared with
 * the active layer (refcount + 1), not copied; all-zero clusters take no
 * space (zero flag / unallocated as the format allows: v2 with a backing
 * file must allocate where the backing file does not read zeros); other
 * clusters are newly allocated and written.  The active layer's guest
 * bytes, its L1 and everything another snapshot references are unchanged.
 * t (may be NULL): date_sec, date_nsec, vm_clock_nsec to record (NULL: keep
 * the replaced snapshot's, or now and 0 for a new one); disk_size = size;
 * vm_state_size 0.  Durable (flushed) when it returns 0.  -1 with errno:
 * EBADF (not opened VD_OPEN_RDWR), ENOTSUP (the format or this image
 * cannot: qcow2 with an external data file), EINVAL (empty name or one
 * longer than the format allows, fd not a regular file, size not a
 * multiple of 512 or too big, t out of range), EFBIG (a disk the format
 * cannot map, too many snapshots), EIO (corrupt metadata, logged).  fd is
 * read with pread; its file position is left anywhere (SEEK_DATA). */
int vd_image_snapshot_import (struct vd_image *img, const char *name, int fd,
                              uint64_t size, const struct vd_snapshot *t);
/* Set the date and VM clock of the internal snapshot called name (t not
 * NULL; ENOENT when there is none).  Durable when it returns 0. */
int vd_image_snapshot_set_times (struct vd_image *img, const char *name,
                                 const struct vd_snapshot *t);
/* Is buf all zero bytes? */
bool vd_is_zero (const void *buf, size_t len);

/* qemu's image locks (qemu-lock.c; DESIGN.md "qemu's image locks"):
 * one-byte OFD read locks, byte 100+i for each permission held, 200+i
 * for each not shared; i: 0 consistent read, 1 write, 2 write-unchanged,
 * 3 resize.  vd_qemu_lock takes what a qemu writer takes (100, 101 and
 * the unshare bytes 201, plus 103 and 203 with resize) on fd after
 * checking with F_OFD_GETLK that no other open file holds a conflicting
 * byte (someone writing or resizing, or refusing to share write); on a
 * conflict it takes nothing and fails EBUSY, with a description of the
 * holder ("pid 1234 (qemu-system-x86)") in holder when it is not NULL.
 * The locks go with the fd (close) or with vd_qemu_unlock_resize. */
#define VD_LOCK_WRITE   0x1
#define VD_LOCK_RESIZE  0x2
int vd_qemu_lock (int fd, unsigned perms, char *holder, size_t holder_len);
/* The holder (as vd_qemu_lock names it) of the image that the last open
 * for writing in this thread found locked (EBUSY), or "".  While
 * vd_busy_quiet (true) is in effect in a thread, such a refusal is not
 * logged there: the caller logs it, with what it knows more (the domain
 * and the disk). */
const char *vd_busy_holder (void);
void vd_busy_quiet (bool quiet);
void vd_qemu_unlock_resize (int fd);
/* Does another open file hold any of qemu's lock bytes a writer would
 * conflict with (101-104, 201-204 ...)?  1 yes (holder filled), 0 no,
 * -1 error. */
int vd_qemu_lock_held (int fd, char *holder, size_t holder_len);

/* Helpers for drivers. */
/* pread exactly count bytes from fd at offset; a short read (end of file)
 * fills the rest with zeros when zero_fill, else fails EIO.  Logs nothing. */
int vd_pread_full (int fd, void *buf, size_t count, uint64_t offset,
                   bool zero_fill);
/* Resolve a file name found inside an image (backing file, data file)
 * against the directory of the image that names it. malloc'd. */
char *vd_resolve_relative (const char *image_path, const char *name);
/* The read bits (0444 at most) that the file st describes grants to the
 * owner uid, the group gid and others of a top image. */
mode_t vd_read_bits (const struct stat *st, uid_t uid, gid_t gid);
/* Read the len-byte file name (backing file, data file) stored at off in
 * fd, the caller having checked the range; fails EIO when it cannot be
 * read or holds a NUL byte, logged as "driver: path: what ...".
 * malloc'd, NUL-terminated. */
char *vd_read_name (const char *driver, const char *path, int fd,
                    uint64_t off, uint32_t len, const char *what);
/* stat(2) without its dangers: path resolved as vd_image_open_policy
 * resolves it (no symlink followed by the kernel, nothing inside our
 * mounts touched: ELOOP), inside policy's directory if it has one (else
 * EACCES).  *st describes the file the path leads to.  Logs nothing. */
int vd_stat_checked (const char *path, const struct vd_policy *policy,
                     struct stat *st);
/* Open the file name found inside image_path (what: "external data
 * file" ...) read-only (read-write and locked like the image when
 * chain->flags has VD_OPEN_RDWR) under the checks and the policy of chain (the
 * chain of image_path), as vd_image_open_chain does for backing files;
 * relative names are resolved against image_path's directory.  ANDs its
 * read bits into *chain->modes.  Returns an fd (O_CLOEXEC, blocking), or
 * -1 with errno (EIO for a refused name) after one log line. */
int vd_open_named_file (const char *driver, const char *image_path,
                        const char *name, const struct vd_chain *chain,
                        const char *what);
/* Open the backing file name, found inside image_path (relative names are
 * resolved against its directory), read-only and not live (flags minus
 * VD_OPEN_RDWR and VD_OPEN_LIVE) as the next link of chain; format NULL probes.  vd_image_open_chain logs
 * why it failed; this adds a debug line "driver: image_path: ...". */
struct vd_image *vd_open_backing (const char *driver, const char *image_path,
                                  const char *name, const char *format,
                                  unsigned flags,
                                  const struct vd_chain *chain);
/* Read count bytes at offset of a range the image does not allocate: from
 * backing (NULL: none) as far as it reaches, zeros beyond. */
int vd_read_backing (struct vd_image *backing, void *buf, uint64_t count,
                     uint64_t offset);
/* Size of a regular file or block device (BLKGETSIZE64: fstat says 0),
 * other files their st_size, without touching the file position (lseek
 * would: callers may splice from these fds).  -1 with errno on error.
 * Every driver's one way to size its files. */
int64_t vd_fd_size (int fd);
/* The file behind fd may have grown since *size was stored (a running VM
 * writes it): raise *size (atomic, relaxed) to its size now, never lower
 * it; return *size. */
uint64_t vd_refresh_file_size (int fd, uint64_t *size);

/* Allocated bytes with at most max_calls block_status calls (a crafted
 * image may hold 2^40 extents).  *exact: the walk reached the end and
 * *bytes is what vd_image_allocated gives; else *bytes is an estimate
 * (format.c: counted so far plus the image file's own allocation for the
 * rest, at least 512 bytes, capped at the rest): never 0 when the unseen
 * part may hold data.  0 or -1 with errno. */
int vd_image_allocated_bounded (struct vd_image *img, uint64_t max_calls,
                                uint64_t *bytes, bool *exact);

#endif
