/* vmdiskfs - the FUSE daemon: types shared by main.c, ops.c, inode.c,
 * tree.c and the tree providers.
 *
 * This header is the only place that defines FUSE_USE_VERSION.
 *
 * The pieces:
 *   main.c         options, mount, daemonize, the session loop
 *   ops.c          the FUSE low-level callbacks (the only place that turns
 *                  errno into FUSE replies)
 *   inode.c        the inode table: number <-> node, lookup counts
 *   tree.c         the generic tree (children, detach, revalidation
 *                  dispatch, deferred kernel invalidations)
 *   tree-images.c  the images provider (-o images=DIR)
 *   tree-libvirt.c the libvirt provider (default; -o connect=URI), in
 *                  libvirt-*.c (libvirt-priv.h says which does what),
 *                  with snapshotter/domxml.c reading libvirt's XML
 *
 * Locks, in the order they are taken (a thread holding one takes only
 * those below it, never one above):
 *   refresh_lock (tree.c)  serializes the providers' rescans; held across
 *                          their I/O so two threads never rescan at once
 *   conn_lock              the libvirt connection (libvirt-source.c),
 *                          held across connecting; under refresh_lock or
 *                          alone, never with the tree lock
 *   act_lock               the LVM snapshots activated (libvirt-lvm.c),
 *                          held across lvm runs; taken with no lock above
 *                          it held (open_disk, the idle timer)
 *   tree_lock (tree.c)     rwlock: the shape of the tree and node
 *                          attributes (fields marked "tree_lock" below)
 *   node->lock             per node: its open disk and allocation cache
 *   inode_lock (inode.c)   the inode hash table, nlookup and refs
 * and leaves, held with no other lock taken under them:
 *   dirty_lock             the domains named by libvirt events
 *                          (libvirt-source.c); under tree_lock too
 *   notify_lock (tree.c)   the queue of kernel invalidations
 *   pre_lock               the prefetch queue and its data
 *                          (libvirt-source.c); with refresh_lock held or
 *                          alone; the prefetch threads never take
 *                          refresh_lock
 *   alloc_lock (tree.c)    which disk node's allocation a thread counts
 * Outside them all, the per-domain snapshot lock: a flock on
 * /run/vmdiskfs/<uuid>.lock (snapshotter/domsnap-lock.c, DESIGN.md) that
 * libvirt_snapshotter's dom_create and dom_delete hold for a snapshot's
 * create or delete, across processes (a mount, vmdisk-snapshot); fs/
 * calls them from mkdir and rmdir with no lock held, and refreshes after
 * they let it go.
 * The read path (ops.c fs_read) takes none of them: an open file holds its
 * own reference to a struct fs_disk.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_VMDISKFS_H
#define VD_VMDISKFS_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "vdformat.h"

/* Kernel cache timeouts, seconds: short so that images and snapshots
 * appearing in the images directory show up quickly. */
#define FS_ENTRY_TIMEOUT 1.0
#define FS_ATTR_TIMEOUT  1.0

/* Work on one image's extent map is bounded: st_blocks (tree_allocated)
 * and SEEK_DATA/SEEK_HOLE (ops.c fs_lseek) make at most this many
 * vd_image_block_status calls per request.  An image of 2^40 alternating
 * zero and unallocated qcow2 clusters (its 32 MiB L1 read per lookup)
 * answers SEEK_DATA in about 0.2 s on a busy 2-CPU machine (0.4 s with
 * 65,536: tests/integration/bounded.sh); real images need far fewer
 * calls, the driver merging runs of clusters of one kind. */
#define FS_EXTENT_BUDGET 32768

/* Options (main.c). */
struct fs_config {
  char *images;               /* -o images=DIR, or NULL                   */
  char *connect;              /* -o connect=URI (libvirt mode)            */
  char *pidfile;              /* -o pidfile=PATH                          */
  char *l2_cache;             /* -o l2_cache=SIZE, as given               */
  char *snapsize;             /* -o snapsize=N%|SIZE, as given            */
  uint64_t cow_bytes;         /* parsed snapsize: bytes, or 0             */
  unsigned cow_percent;       /* parsed snapsize: percent, or 0 (default) */
  char *mountpoint;           /* absolute, or NULL                        */
  char *backing;              /* -o backing=dir|any, as given             */
  char *staging;              /* -o staging=DIR (default FS_STAGING_DIR)  */
  char *probe;                /* -o probe=yes|no, as given                */
  bool backing_any;           /* -o backing=any: follow names anywhere    */
  bool probe_no;              /* -o probe=no: only *.qcow2 ... probed     */
  bool ro;                    /* -o ro                                    */
  unsigned net_timeout;       /* -o net_timeout=SECONDS, 0: the default   */
  bool foreground;
  bool debug;
};
extern struct fs_config fs_config;
extern struct fuse_session *fs_session;
void fs_write_pidfile (void);
/* ops.c: what the read path needs before mounting; -1 after a log line. */
int fs_ops_start (void);
/* ops.c, for loop.c: may a READ of this file handle wait on a network
 * disk's server? */
bool fs_read_may_block (uint64_t fh);

/* An open image, shared by the tree and by open files; freed with its last
 * reference (disk_unref), which closes the image.  img is immutable after
 * creation, and vd_image reads are thread-safe, so no lock. */
struct fs_disk {
  unsigned refs;              /* atomic                                    */
  struct vd_image *img;
};
struct fs_disk *fs_disk_new (struct vd_image *img);
/* An image opened again for a disk node (providers open lazily): is it
 * not the file scanned (scanned->st_ino 0: unknown), or does its chain
 * grant less than the read bits shown, which the kernel checked?  Then
 * true, after a log line: the caller refuses it (EIO) until a rescan. */
bool fs_disk_changed (const struct vd_image *img, const struct stat *scanned,
                      mode_t shown);
struct fs_disk *fs_disk_ref (struct fs_disk *d);
void fs_disk_unref (struct fs_disk *d);

/* The bytes of a small in-memory file (domain.xml, snapshot.xml), shared
 * by the tree and by open files; immutable, freed with its last
 * reference.  The tree keeps them zlib-compressed (XML shrinks about
 * five times: 1,000 domains with 10 snapshots hold 30,000 of them);
 * tree_get_blob hands out plain ones. */
struct fs_blob {
  unsigned refs;              /* atomic                                    */
  size_t len;                 /* the file's size                           */
  size_t zlen;                /* > 0: data holds zlen compressed bytes     */
  char data[];                /* plain: len bytes and a NUL                */
};
struct fs_blob *fs_blob_new (const char *data, size_t len);
struct fs_blob *fs_blob_ref (struct fs_blob *b);
void fs_blob_unref (struct fs_blob *b);
struct fs_blob *fs_blob_plain (struct fs_blob *b);
bool fs_blob_equal (const struct fs_blob *a, const struct fs_blob *b);

/* FS_NODE_STAGING: a file made by create in a domain or image directory
 * (staging.c), never part of the tree. */
enum fs_node_type { FS_NODE_DIR, FS_NODE_DISK, FS_NODE_FILE,
                    FS_NODE_STAGING };

struct fs_provider;

/* One file or directory of the mount.  Created by the providers through
 * inode_get_node, found by number through inode_find. */
struct fs_node {
  /* Constant from creation. */
  fuse_ino_t ino;
  char *path;                 /* escaped path in the mount, "/" for root  */
  const char *name;           /* last component (points into path)        */
  enum fs_node_type type;

  /* inode_lock. */
  uint64_t nlookup;           /* references the kernel holds              */
  unsigned refs;              /* our references: parent's children array,
                                 child->image, callers of inode_find ...  */
  struct fs_node *hash_next;

  /* tree_lock. */
  bool attached;              /* reachable from the root                  */
  fuse_ino_t parent_ino;
  struct stat attr;           /* st_ino and st_blocks filled on reply     */
  struct fs_node **children;  /* directories, sorted by name              */
  size_t nchildren;
  struct fs_node *image;      /* the image directory this node belongs to
                                 (a reference), NULL for root and for the
                                 image directory itself                   */
  void *priv;                 /* provider data of this node               */
  void (*priv_free) (void *);
  char *snap_id;              /* snapshot nodes: the snapshot's id        */
  uint64_t gen;               /* disk, file and directory nodes: bumped
                                 when content (a directory: its children)
                                 changed                                  */
  struct fs_blob *blob;       /* file nodes: the content                  */

  /* node->lock. */
  pthread_mutex_t lock;
  struct fs_disk *disk;       /* disk nodes: the open image or NULL       */
  int disk_err;               /* errno when the image failed to open      */
  bool alloc_valid;           /* alloc holds a count (of alloc_gen)       */
  uint64_t alloc;             /* allocated bytes (or tree_allocated's
                                 estimate) of generation alloc_gen        */
  uint64_t alloc_gen;         /* current when alloc_gen == gen            */
  unsigned nopen;             /* open file handles                        */
  bool removing;              /* being deleted (rmdir): open gets EBUSY   */
  uint64_t opened_gen;        /* files: gen at the last open (keep_cache);
                                 directories: 1 + the gen the kernel
                                 cached a listing at, or 0               */
  struct fs_writer *writer;   /* disk nodes open for writing (write.c)    */

  /* alloc_lock (tree.c, a leaf lock). */
  bool alloc_walking;         /* a thread counts alloc for this node      */
};

/* A tree provider: where the tree comes from.  start and refresh run
 * with refresh_lock held; no callback but stale runs with tree_lock
 * held: they do their I/O first, then take tree_wrlock to change nodes. */
struct fs_provider {
  const char *name;
  /* Build the root's children.  0 or -1 with errno (fatal at start). */
  int (*start) (struct fs_node *root);
  /* Bring the subtree of node up to date if its source changed (node is
   * the root or an image directory: the "revalidation point"). */
  void (*refresh) (struct fs_node *node);
  /* Is node (root or image directory) possibly out of date?  Called with
   * tree_lock held for reading; must be cheap (a stat). */
  bool (*stale) (struct fs_node *node);
  /* Open the image behind a disk node that has none open (snapshots are
   * opened on demand).  Called without tree_lock.  New reference or NULL
   * with errno. */
  struct fs_disk *(*open_disk) (struct fs_node *node);
  void (*stop) (void);
  /* Optional: the daemon runs (after fuse_daemonize's fork, before the
   * session loop): start threads here, never in start. */
  void (*mounted) (void);
  /* Optional (NULL: EPERM): make the directory name (as the kernel gave
   * it, escaped) in dir, which has no child of that name, and return its
   * node (a reference) in *out, attached and current.  0, or -1 with
   * errno (EPERM: no directory can be made in dir).  No lock held; may
   * take seconds. */
  int (*mkdir) (struct fs_node *dir, const char *name, struct fs_node **out);
  /* Optional (NULL: EPERM): remove the directory node, the child name of
   * dir, and everything in it.  0, or -1 with errno.  No lock held. */
  int (*rmdir) (struct fs_node *dir, const char *name, struct fs_node *node);
  /* Optional (NULL: none, all zeros): fill statfs's answer (ops.c sets
   * f_namemax and f_flag's ST_RDONLY after).  0, or -1: none. */
  int (*statfs) (struct statvfs *sv);
  /* Nothing in the tree is ever written, made or removed, -o ro or not:
   * mkdir and rmdir fail with EROFS, statfs says ST_RDONLY. */
  bool read_only;
  /* Optional (NULL: disks are never writable, EROFS): open the image of
   * the active disk node for writing, VD_OPEN_RDWR (so with fresh
   * metadata and qemu's locks taken), after making sure nothing else
   * uses it (libvirt: the domain is shut off, and its snapshot lock is
   * taken and kept in *token until close_write).  No lock held.  The
   * image, or NULL with errno: EBUSY (in use: logged, naming the domain,
   * the disk and the holder), EROFS (a snapshot, a format we do not
   * write), EIO ... */
  struct vd_image *(*open_write) (struct fs_node *node, void **token);
  /* The last writer of node is done (its image flushed and closed):
   * let go of token, and see the image's new size and times. */
  void (*close_write) (struct fs_node *node, void *token);
  /* Optional (NULL: no): may files be created in dir (staging files,
   * write.c)?  A domain directory, an image directory. */
  bool (*may_stage) (struct fs_node *dir);
  /* Restoring whole VMs (restore.c).  Optional (NULL: never): may mkdir
   * make name, which dir does not have, as a pending directory (a domain
   * being restored by copying its directory in)?  0, or -1 with errno
   * (EEXIST: the name is known to the provider; EPERM).  No lock held. */
  int (*may_pend) (struct fs_node *dir, const char *name);
  /* Optional (NULL: RESTORE_KEEP): the file name in the directory
   * dirpath (escaped, as in the mount) is complete (written and closed,
   * fsync'ed, or renamed to name); fd holds its bytes (a staging file).
   * Do what it means there: RESTORE_KEEP (nothing yet: it stays staged,
   * and is offered again when something else of the domain is applied),
   * RESTORE_DONE (applied: the staging file goes), RESTORE_DISK (it is
   * the bytes of the disk called name in the directory, which the tree
   * now has: write.c writes it there), or -1 with errno (EINVAL,
   * EACCES, EBUSY ...: logged; nothing changed).  No lock held; may take
   * long. */
  int (*complete) (const char *dirpath, const char *name, int fd);
};
#define RESTORE_KEEP 0
#define RESTORE_DONE 1
#define RESTORE_DISK 2
extern const struct fs_provider tree_images_provider;
extern const struct fs_provider tree_libvirt_provider;

/* inode.c */
void inode_init (void);
struct fs_node *inode_get_node (const char *path, enum fs_node_type type);
struct fs_node *inode_find (fuse_ino_t ino);
struct fs_node *inode_ref (struct fs_node *node);
void inode_unref (struct fs_node *node);
void inode_lookup_inc (struct fs_node *node);
void inode_forget (fuse_ino_t ino, uint64_t nlookup);
void inode_fini (void);

/* tree.c */
extern pthread_rwlock_t tree_lock;
int tree_start (const struct fs_provider *provider);
void tree_stop (void);
struct fs_node *tree_root (void);
const struct fs_provider *tree_provider (void);
/* The node at the path printf (fmt, ...), made if new (inode_get_node);
 * NULL on error (errno). */
struct fs_node *tree_get_node (enum fs_node_type type, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
/* Fill a node's attributes: all three times sec.nsec, st_blksize 4096,
 * the rest 0. */
void tree_set_attr (struct stat *st, mode_t mode, nlink_t nlink,
                    uint64_t size, uid_t uid, gid_t gid, time_t sec,
                    long nsec);
void tree_rdlock (void);
void tree_wrlock (void);
void tree_unlock (void);
void tree_revalidate (struct fs_node *node);
void tree_refresh (struct fs_node *point);
struct fs_node *tree_find_child (struct fs_node *dir, const char *name);
void tree_set_children (struct fs_node *dir, struct fs_node **children,
                        size_t n);
void tree_set_image (struct fs_node *node, struct fs_node *image);
void tree_set_disk (struct fs_node *node, struct fs_disk *disk, int err);
void tree_changed_content (struct fs_node *node);
void tree_set_blob (struct fs_node *node, struct fs_blob *blob);
struct fs_blob *tree_get_blob (struct fs_node *node);
void tree_mounted (void);
struct fs_disk *tree_get_disk (struct fs_node *node, bool keep);
int tree_allocated (struct fs_node *node, uint64_t size, uint64_t *bytes);
void tree_set_allocated (struct fs_node *node, uint64_t bytes);
void tree_notify_entry (fuse_ino_t parent, const char *name);
void tree_notify_start (void);
void tree_notify_stop (void);

/* ops.c */
extern const struct fuse_lowlevel_ops fs_ops;

/* staging.c: the staging directory (-o staging=DIR). */
#define FS_STAGING_DIR "/var/lib/vmdiskfs/staging"
/* Make (0700) and check the directory, remove what a crashed daemon
 * left there.  0, or -1 after a message (fatal at start). */
int staging_start (void);
void staging_stop (void);

/* inode.c: does the kernel hold this node (tree.c sends it invalidations
 * only then)? */
bool inode_known (struct fs_node *node);

#endif /* VD_VMDISKFS_H */
