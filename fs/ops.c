/* vmdiskfs - the FUSE low-level callbacks.
 *
 * Concurrency: fuse_session_loop_mt runs every callback here in parallel
 * on up to max_threads threads, in any combination, also several on the
 * same inode or file handle (the kernel sends parallel reads of one file,
 * and with FUSE_CAP_PARALLEL_DIROPS parallel lookups in one directory).
 * What they share:
 *  - the tree and inode table (tree.c, inode.c, under their locks); every
 *    callback that gets an inode number takes a node reference with
 *    inode_find and drops it before returning;
 *  - struct fs_disk, the open images: read and lseek use the handle's own
 *    reference without any lock (the formats library allows concurrent
 *    reads of one image);
 *  - zero_fd, the read-only source of every hole (see below).
 * Nothing else is shared; a read's buffer vector lives on its stack.
 * A handle's release comes after every request on it was answered (the
 * kernel holds the file until then), so release frees the handle without
 * a lock; ThreadSanitizer, blind to that ordering, reports it as a race.
 *
 * In-memory files (domain.xml, snapshot.xml) are read from the handle's
 * own reference to their immutable struct fs_blob, without a lock.
 *
 * mkdir and rmdir in libvirt mode make and delete snapshots through the
 * provider; they run in parallel with everything else (the provider
 * serializes them per domain).  A file being deleted refuses opens with
 * EBUSY (node->removing, set by the provider under node->lock).
 *
 * This is the only file that turns errno into replies.  Every other
 * write is refused with EROFS in this version.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "vmdiskfs.h"
#include "ops-priv.h"
#include "cleanup.h"
#include "log.h"

/* Largest read we expect: libfuse 3.14 negotiates at most 256 pages. */
#define FS_MAX_READ (1024 * 1024)
/* The request size we negotiate: a little under 1 MiB, because libfuse
 * splices a reply only when it fits in its pipe with a page per buffer
 * to spare, and pipes cannot grow past /proc/sys/fs/pipe-max-size (1 MiB)
 * without CAP_SYS_RESOURCE; a 1 MiB reply falls back to a copy through
 * a fresh bounce buffer, measured 3 to 5 times slower here.  960 KiB
 * leaves room for 13 buffers. */
#define FS_MAX_REQUEST (FS_MAX_READ - 64 * 1024)
/* Buffers per read reply (the pipe budget above); a request with more
 * fragments finishes the rest with one vd_image_pread into memory. */
#define FS_MAX_BUFS 13

/* The source of every hole: zero_fd, a sealed memfd of FS_MAX_READ
 * bytes never written.  Splicing from its holes puts the kernel's zero
 * page in the pipe (shmem's splice_read), so a hole costs the one copy
 * into the FUSE request's pages, the same as data spliced from the image,
 * and a request mixing data and holes splices whole.  Replying holes from
 * memory instead costs a pinning of the user pages and a copy (a write
 * into the pipe when mixed): measured with fio bs=1M over an all-hole
 * qcow2, 150-180 ms of daemon CPU per GiB against 265-300.
 * Made before mounting (fs_ops_start): a daemon without it does not
 * start. */
static int zero_fd = -1;

int
fs_ops_start (void)
{
  zero_fd = memfd_create ("vmdiskfs-zeros", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (zero_fd < 0
      || ftruncate (zero_fd, FS_MAX_READ) < 0
      || fcntl (zero_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW
                | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
    vd_error ("cannot make the zero file (memfd): %m");
    if (zero_fd >= 0)
      close (zero_fd);
    zero_fd = -1;
    return -1;
  }
  return 0;
}


/* An open directory: its entries as they were at opendir, so that
 * readdir offsets stay meaningful while the tree changes.
 *
 * The kernel caches a listing (cache_readdir) when it is the tree's own:
 * no pending directory or staging file in it, no name hidden from the
 * caller (restore.c, write.c), which would make it one process's view.
 * A directory's node->gen counts the changes of its children (tree.c
 * tree_set_children); node->opened_gen (node->lock) is 1 + the
 * generation the kernel's cached listing may hold, 0 for none (a
 * directory's, unlike a file's: see fs_open).  An opendir that finds
 * them different drops the kernel's copy (notify_inval_inode, sent
 * before the reply, so that no reader of this open sees the old one) and
 * records the new generation; a handle whose listing went stale while it
 * was open may have filled the cache after that, so its release marks
 * the cache stale again.  Changes made through the mount (create, unlink,
 * mkdir, rename) drop the kernel's copy by themselves (the directory's
 * i_version).
 *
 * readdirplus gives the attributes (and so a lookup reference) of the
 * subdirectories only (plus): the kernel then needs no lookup before
 * opening them (ls -R, find).  Not of files (a disk's st_blocks counts
 * its allocation, which means opening its image), and not of the
 * domain or image directories in the root, whose lookup is what scans
 * them first. */
struct fs_dir_entry {
  fuse_ino_t ino;
  mode_t type;
  bool plus;
  char *name;
};
struct fs_dirh {
  size_t n;
  uint64_t gen;               /* the directory's generation listed       */
  bool cached;                /* opened with cache_readdir               */
  struct fs_dir_entry e[];
};

int
errno_or_eio (void)
{
  return errno ? errno : EIO;
}

static void
fs_init (void *userdata, struct fuse_conn_info *conn)
{
  /* Large requests: libfuse derives max_pages from max_write.  The
   * kernel only lowers its readahead (128 KiB) to max_readahead, never
   * raises it: main.c raises it through sysfs once mounted. */
  conn->max_write = FS_MAX_REQUEST;
  conn->max_read = 0;
  conn->max_readahead = FS_MAX_READ;
  conn->want |= conn->capable & (FUSE_CAP_ASYNC_READ | FUSE_CAP_SPLICE_WRITE
                                 | FUSE_CAP_SPLICE_MOVE
                                 | FUSE_CAP_PARALLEL_DIROPS
                                 | FUSE_CAP_AUTO_INVAL_DATA
                                 | FUSE_CAP_ATOMIC_O_TRUNC
                                 | FUSE_CAP_READDIRPLUS
                                 | FUSE_CAP_READDIRPLUS_AUTO);
  /* Writes go through to the image at once (write.c): no writeback
   * cache; no splice reads (the data is inspected for zeros anyway).
   * O_TRUNC comes with open (atomic), not as a truncate before it. */
  conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ);
  conn->time_gran = 1;
  vd_debug ("init: proto %u.%u, max_readahead %u, max_write %u",
            conn->proto_major, conn->proto_minor, conn->max_readahead,
            conn->max_write);
  fs_write_pidfile ();
}

/* Attributes of node for a reply.  No lock held. */
void
fill_attr (struct fs_node *node, struct stat *st)
{
  uint64_t alloc = 0;

  if (node->type == FS_NODE_STAGING) {
    write_staging_attr (node, st);
    return;
  }
  tree_rdlock ();
  *st = node->attr;
  tree_unlock ();
  st->st_ino = node->ino;
  if (node->type == FS_NODE_DISK)
    tree_allocated (node, st->st_size, &alloc);
  else if (node->type == FS_NODE_FILE)
    alloc = st->st_size;
  st->st_blocks = DIV_ROUND_UP (alloc, 512);
}

/* dir's child called name, with a reference (inode_unref it), after
 * bringing dir up to date; NULL when there is none or dir is no
 * directory or no longer attached. */
struct fs_node *
child_of (struct fs_node *dir, const char *name)
{
  struct fs_node *child = NULL;

  tree_revalidate (dir);
  tree_rdlock ();
  if (dir->type == FS_NODE_DIR && dir->attached) {
    child = tree_find_child (dir, name);
    if (child)
      inode_ref (child);
  }
  tree_unlock ();
  return child;
}

/* The entry of node for a reply (lookup, mkdir, readdirplus).  No lock
 * held. */
static void
fill_entry (struct fs_node *node, struct fuse_entry_param *e)
{
  memset (e, 0, sizeof *e);
  e->ino = node->ino;
  e->attr_timeout = FS_ATTR_TIMEOUT;
  e->entry_timeout = FS_ENTRY_TIMEOUT;
  fill_attr (node, &e->attr);
}

/* Reply to lookup or mkdir with node, and drop the caller's reference. */
void
reply_entry (fuse_req_t req, struct fs_node *node)
{
  struct fuse_entry_param e;

  fill_entry (node, &e);
  inode_lookup_inc (node);
  inode_unref (node);
  if (fuse_reply_entry (req, &e) < 0)
    inode_forget (e.ino, 1);    /* interrupted: the kernel did not take it */
}

static void
fs_lookup (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  struct fs_node *dir, *child;
  bool is_dir, attached;

  dir = inode_find (parent);
  if (!dir) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  child = child_of (dir, name);
  is_dir = dir->type == FS_NODE_DIR;
  if (child && (write_hidden (dir, name)
                || restore_hides (dir, name, fuse_req_ctx (req)->pid))) {
    inode_unref (child);        /* unlinked (write.c) */
    child = NULL;
  }
  if (!child && is_dir && (child = write_lookup (dir, name)) != NULL) {
    inode_unref (dir);
    reply_entry (req, child);   /* a staging file */
    return;
  }
  inode_unref (dir);
  if (!child) {
    fuse_reply_err (req, is_dir ? ENOENT : ENOTDIR);
    return;
  }
  /* An image directory is its own revalidation point. */
  tree_revalidate (child);
  tree_rdlock ();
  attached = child->attached;
  tree_unlock ();
  if (!attached) {              /* removed meanwhile */
    inode_unref (child);
    fuse_reply_err (req, ENOENT);
    return;
  }
  reply_entry (req, child);
}

static void
fs_forget (fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
  inode_forget (ino, nlookup);
  fuse_reply_none (req);
}

static void
fs_forget_multi (fuse_req_t req, size_t count,
                 struct fuse_forget_data *forgets)
{
  size_t i;

  for (i = 0; i < count; i++)
    inode_forget (forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none (req);
}

static void
fs_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs_node *node = inode_find (ino);
  struct stat st;

  if (!node) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  tree_revalidate (node);
  fill_attr (node, &st);
  inode_unref (node);
  fuse_reply_attr (req, &st, FS_ATTR_TIMEOUT);
}

void
fs_erofs (fuse_req_t req)
{
  fuse_reply_err (req, EROFS);
}

static void
fs_mknod (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
          dev_t rdev)
{
  fs_erofs (req);
}

/* May the caller of req make or remove directories (snapshots)?  Root
 * and the user who mounted: the daemon acts with its own rights (as root,
 * libvirt's), so with allow_other anyone else would make and delete
 * snapshots through it. */
bool
may_change (fuse_req_t req)
{
  const struct fuse_ctx *ctx = fuse_req_ctx (req);

  return ctx->uid == 0 || ctx->uid == getuid ();
}

/* The errno of mkdir/rmdir in a file system that cannot make any
 * directory: EROFS when read-only (-o ro, and a provider that writes
 * nothing at all, as images mode in this version), else EPERM, which is
 * what mkdir(2) and rmdir(2) give where a file system does not support
 * it. */
static int
no_dirs_errno (void)
{
  return fs_config.ro || tree_provider ()->read_only ? EROFS : EPERM;
}

/* mkdir <domain>/snapshots/<name> makes a snapshot (the provider's
 * mkdir; it replies with the new directory, complete).  Elsewhere:
 * EEXIST for a name that exists, else no_dirs_errno. */
static void
fs_mkdir (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
  const struct fs_provider *p = tree_provider ();
  struct fs_node *dir, *node = NULL, *old;
  bool attached;

  if (fs_config.ro) {
    fs_erofs (req);
    return;
  }
  dir = inode_find (parent);
  if (!dir) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  old = child_of (dir, name);
  if (old && old->type == FS_NODE_DIR && may_change (req)
      && restore_hides (dir, name, fuse_req_ctx (req)->pid)) {
    /* cp -a into a domain being restored: snapshots/, which the
     * definition brought, is the copy's now (restore.c). */
    restore_adopt (dir, old, fuse_req_ctx (req)->pid);
    inode_unref (dir);
    reply_entry (req, old);
    return;
  }
  if (!old) {
    /* A pending directory (restore.c): a VM copied in. */
    int r = may_change (req) ? restore_mkdir (dir, name, mode,
                                              fuse_req_ctx (req)->uid,
                                              fuse_req_ctx (req)->gid,
                                              fuse_req_ctx (req)->pid, &node)
      : (errno = EACCES, -1);
    if (r <= 0) {
      int err = r < 0 ? errno_or_eio () : 0;
      inode_unref (dir);
      if (r < 0)
        fuse_reply_err (req, err == EPERM ? no_dirs_errno () : err);
      else
        reply_entry (req, node);
      return;
    }
  }
  tree_rdlock ();
  attached = dir->attached && dir->type == FS_NODE_DIR;
  tree_unlock ();
  if (!attached || old || !p->mkdir) {
    if (old)
      inode_unref (old);
    inode_unref (dir);
    fuse_reply_err (req, !attached ? ENOENT : old ? EEXIST
                    : no_dirs_errno ());
    return;
  }
  if (!may_change (req)) {
    inode_unref (dir);
    fuse_reply_err (req, EACCES);
    return;
  }
  errno = 0;
  if (p->mkdir (dir, name, &node) < 0) {
    int err = errno_or_eio ();
    inode_unref (dir);
    fuse_reply_err (req, err == EPERM ? no_dirs_errno () : err);
    return;
  }
  /* A snapshot of now: if its maker goes on to copy a snapshot's files
   * into it (cp -a of a backup's snapshots/<name>), they replace it. */
  if (tree_provider ()->complete)
    restore_adopt (dir, node, fuse_req_ctx (req)->pid);
  inode_unref (dir);
  reply_entry (req, node);
}

/* rmdir <domain>/snapshots/<name> deletes the snapshot (the provider's
 * rmdir); ENOENT when there is no such name, ENOTDIR for a file, else
 * no_dirs_errno.  Never ENOTEMPTY: a snapshot's files go with it. */
static void
fs_rmdir (fuse_req_t req, fuse_ino_t parent, const char *name)
{
  const struct fs_provider *p = tree_provider ();
  struct fs_node *dir, *node = NULL;
  int err = 0;

  if (fs_config.ro) {
    fs_erofs (req);
    return;
  }
  dir = inode_find (parent);
  if (!dir) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  node = child_of (dir, name);
  if (!node && may_change (req) && restore_rmdir (dir, name) == 0)
    err = 0;                    /* a pending directory and its files */
  else if (!node)
    err = ENOENT;
  else if (node->type != FS_NODE_DIR)
    err = ENOTDIR;
  else if (!p->rmdir)
    err = no_dirs_errno ();
  else if (!may_change (req))
    err = EACCES;
  else {
    errno = 0;
    if (p->rmdir (dir, name, node) < 0) {
      err = errno_or_eio ();
      if (err == EPERM)
        err = no_dirs_errno ();
    }
  }
  if (node)
    inode_unref (node);
  inode_unref (dir);
  fuse_reply_err (req, err);
}

static void
fs_symlink (fuse_req_t req, const char *link, fuse_ino_t parent,
            const char *name)
{
  fs_erofs (req);
}

static void
fs_link (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
         const char *newname)
{
  fs_erofs (req);
}

/* Extended attributes are not kept.  On a writable mount that is
 * ENOTSUP, not EROFS: cp -a sets the file's ACL (fsetxattr
 * system.posix_acl_access) after its fchmod, and takes ENOTSUP as "no
 * ACLs here" (as on a file system mounted without them), but fails the
 * copy on EROFS. */
static void
fs_setxattr (fuse_req_t req, fuse_ino_t ino, const char *name,
             const char *value, size_t size, int flags)
{
  if (fs_config.ro)
    fs_erofs (req);
  else
    fuse_reply_err (req, ENOTSUP);
}

static void
fs_removexattr (fuse_req_t req, fuse_ino_t ino, const char *name)
{
  if (fs_config.ro)
    fs_erofs (req);
  else
    fuse_reply_err (req, ENOTSUP);
}

static void
fs_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs_node *node;
  struct fs_handle *h;
  struct fs_disk *d = NULL;
  struct fs_blob *blob = NULL;
  bool removing;

  node = inode_find (ino);
  if (!node) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  if (node->type == FS_NODE_DIR) {
    inode_unref (node);
    fuse_reply_err (req, EISDIR);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)
      || node->type == FS_NODE_STAGING) {
    h = calloc (1, sizeof *h);
    if (!h) {
      inode_unref (node);
      fuse_reply_err (req, ENOMEM);
      return;
    }
    write_open (req, node, fi, h);      /* replies, frees h on error */
    return;
  }
  tree_revalidate (node);
  pthread_mutex_lock (&node->lock);
  removing = node->removing;
  pthread_mutex_unlock (&node->lock);
  if (removing) {
    /* Do not even open (or activate) what is being deleted. */
    inode_unref (node);
    fuse_reply_err (req, EBUSY);
    return;
  }
  errno = 0;
  if (node->type == FS_NODE_FILE) {
    blob = tree_get_blob (node);
  }
  else
    d = tree_get_disk (node, true);
  if (!d && !blob) {
    int e = errno_or_eio ();
    bool attached;
    tree_rdlock ();
    attached = node->attached;
    tree_unlock ();
    /* A disk whose image cannot be opened (removed or replaced since the
     * scan, corrupt, a feature we refuse, a missing backing file, out of
     * descriptors) is EIO to the reader, whatever the cause (logged by
     * the formats library): ENOENT would tell rsync the file vanished
     * (exit 24, often taken for success), EMFILE that the reader has too
     * many files open.  Only a name that has left the tree is ENOENT. */
    if (node->type == FS_NODE_DISK && e != ENOMEM)
      e = attached ? EIO : ENOENT;
    vd_error ("%s: cannot open: %s", node->path, strerror (e));
    inode_unref (node);
    fuse_reply_err (req, e);
    return;
  }
  h = malloc (sizeof *h);
  if (!h) {
    fs_disk_unref (d);
    fs_blob_unref (blob);
    inode_unref (node);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  h->disk = d;
  h->blob = blob;
  h->writer = NULL;
  h->stage = NULL;
  h->remote = d && d->img->remote;
  fi->fh = (uintptr_t) h;
  fi->noflush = 1;
  pthread_mutex_lock (&node->lock);
  /* Keep the kernel's page cache if the bytes did not change since the
   * last open (snapshots never change; an active disk until its image
   * file changes). */
  fi->keep_cache = node->opened_gen == node->gen;
  node->opened_gen = node->gen;
  /* An in-memory file (domain.xml) may have changed a moment ago, when
   * the kernel still holds its old size (for FS_ATTR_TIMEOUT, until the
   * queued invalidation lands): direct I/O reads to our end of file, not
   * to the kernel's idea of it.  These files are small. */
  if (node->type == FS_NODE_FILE) {
    fi->direct_io = 1;
    fi->keep_cache = 0;
  }
  if (node->removing) {
    /* Its snapshot is being deleted (rmdir checked nopen and set this
     * under node->lock: it cannot miss us, nor we it).  The image
     * tree_get_disk kept in the node goes too, as at the last release. */
    struct fs_disk *drop = node->nopen == 0 ? node->disk : NULL;
    if (drop)
      node->disk = NULL;
    pthread_mutex_unlock (&node->lock);
    inode_unref (node);
    fs_disk_unref (drop);
    fs_disk_unref (d);
    fs_blob_unref (blob);
    free (h);
    fuse_reply_err (req, EBUSY);
    return;
  }
  node->nopen++;
  pthread_mutex_unlock (&node->lock);
  inode_unref (node);
  if (fuse_reply_open (req, fi) < 0) {
    /* Interrupted: the kernel will not release it. */
    fs_disk_unref (d);
    fs_blob_unref (blob);
    free (h);
    node = inode_find (ino);
    if (node) {
      pthread_mutex_lock (&node->lock);
      node->nopen--;
      pthread_mutex_unlock (&node->lock);
      inode_unref (node);
    }
  }
}

static void
fs_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs_handle *h = (struct fs_handle *) (uintptr_t) fi->fh;
  struct fs_node *node = inode_find (ino);

  if (node && (h->writer || h->stage)) {
    write_release (node, h);    /* drops h's disk and stage */
    inode_unref (node);
    node = NULL;
  }
  if (node) {
    struct fs_disk *drop = NULL;
    bool snapshot;

    tree_rdlock ();
    snapshot = node->snap_id != NULL;
    tree_unlock ();
    pthread_mutex_lock (&node->lock);
    if (node->nopen > 0)
      node->nopen--;
    /* A snapshot's image was opened for its readers: close it with the
     * last of them (its allocation stays cached).  The active disk's
     * image is the tree's and stays. */
    if (node->nopen == 0 && snapshot && node->disk) {
      drop = node->disk;
      node->disk = NULL;
    }
    pthread_mutex_unlock (&node->lock);
    fs_disk_unref (drop);
    inode_unref (node);
  }
  fs_disk_unref (h->disk);
  fs_blob_unref (h->blob);
  free (h);
  fuse_reply_err (req, 0);
}

/* The bytes [off, off+size) of the disk, size > 0 and within it: splice
 * from the image file where the data lies in one, zeros from the zero file for
 * holes, and a bounce buffer only for what must be decoded. */
static void
fs_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
         struct fuse_file_info *fi)
{
  struct fs_handle *h = (struct fs_handle *) (uintptr_t) fi->fh;
  struct vd_image *img;
  uint64_t disk_size, pos, end;
  union {
    struct fuse_bufvec v;
    char space[sizeof (struct fuse_bufvec)
               + (FS_MAX_BUFS - 1) * sizeof (struct fuse_buf)];
  } u;
  struct fuse_bufvec *bv = &u.v;
  struct fuse_buf *b = bv->buf, *last;
  CLEANUP_FREE char *mem = NULL;
  size_t n = 0;
  int e;

  if (h->stage) {
    CLEANUP_FREE char *sb = malloc (size);
    ssize_t r = sb ? write_staging_read (h, sb, size, off) : -1;
    if (r < 0)
      fuse_reply_err (req, sb ? errno_or_eio () : ENOMEM);
    else
      fuse_reply_buf (req, sb, r);
    return;
  }
  if (h->blob) {
    /* An in-memory file. */
    if (off < 0 || (uint64_t) off >= h->blob->len)
      fuse_reply_buf (req, NULL, 0);
    else
      fuse_reply_buf (req, h->blob->data + off,
                      MIN ((uint64_t) size, h->blob->len - off));
    return;
  }
  img = h->disk->img;
  disk_size = vd_image_size (img);
  if (off < 0 || (uint64_t) off >= disk_size || size == 0) {
    fuse_reply_buf (req, NULL, 0);
    return;
  }
  size = MIN ((uint64_t) size, disk_size - off);
  pos = off;
  end = pos + size;

  while (pos < end) {
    struct vd_extent x;
    size_t len;

    if (n == FS_MAX_BUFS) {
      /* Too fragmented: read the rest in one go. */
      goto bounce_rest;
    }
    if (vd_image_block_status (img, pos, end - pos, &x) < 0)
      goto error;
    len = x.length;
    last = n > 0 ? &b[n - 1] : NULL;

    if (x.type == VD_EXTENT_DATA && x.fd >= 0) {
      if (last && (last->flags & FUSE_BUF_IS_FD) && last->fd == x.fd
          && (uint64_t) last->pos + last->size == x.phys)
        last->size += len;
      else {
        b[n].size = len;
        b[n].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
        b[n].mem = NULL;
        b[n].fd = x.fd;
        b[n].pos = (off_t) x.phys;
        n++;
      }
      pos += len;
    }
    else if (x.type != VD_EXTENT_DATA) {
      /* Zeros: a view of the zero file, merged with a zero view just
       * before. */
      if (last && (last->flags & FUSE_BUF_IS_FD) && last->fd == zero_fd
          && last->size + len <= FS_MAX_READ)
        last->size += len;
      else {
        b[n].size = len;
        b[n].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
        b[n].mem = NULL;
        b[n].fd = zero_fd;
        b[n].pos = 0;
        n++;
      }
      pos += len;
    }
    else {
      /* Data the driver must decode (compressed, encrypted ...). */
      char *p;
      if (!mem && (mem = malloc (size)) == NULL)
        goto error;
      p = mem + (pos - off);
      if (vd_image_pread (img, p, len, pos) < 0)
        goto error;
      if (last && !(last->flags & FUSE_BUF_IS_FD)
          && (char *) last->mem + last->size == p)
        last->size += len;
      else {
        b[n].size = len;
        b[n].flags = 0;
        b[n].mem = p;
        b[n].fd = -1;
        b[n].pos = 0;
        n++;
      }
      pos += len;
    }
  }
  goto reply;

 bounce_rest:
  {
    /* n == FS_MAX_BUFS or about to be: fold the rest into one buffer
     * placed in the last slot's stead if needed. */
    char *p;
    if (!mem && (mem = malloc (size)) == NULL)
      goto error;
    if (n == FS_MAX_BUFS) {
      /* Give back the last buffer and read it with the rest. */
      n--;
      pos -= b[n].size;
    }
    p = mem + (pos - off);
    if (vd_image_pread (img, p, end - pos, pos) < 0)
      goto error;
    b[n].size = end - pos;
    b[n].flags = 0;
    b[n].mem = p;
    b[n].fd = -1;
    b[n].pos = 0;
    n++;
  }

 reply:
  bv->count = n;
  bv->idx = 0;
  bv->off = 0;
  /* No FUSE_BUF_SPLICE_MOVE: moving would steal pages from the image
   * file's page cache. */
  fuse_reply_data (req, bv, 0);
  return;

 error:
  e = errno_or_eio ();
  fuse_reply_err (req, e);
}

/* SEEK_DATA / SEEK_HOLE from the extent map: DATA is data; ZERO and HOLE
 * are holes (adjacent ones make one hole).  (SEEK_SET/CUR/END never reach
 * us.)
 *
 * Bounded: at most FS_EXTENT_BUDGET block_status calls per request, so
 * that a crafted image of 2^40 extents cannot stall a thread.  When the
 * budget runs out at pos without finding what was asked:
 *  - SEEK_DATA answers pos: "data" a little early, which the contract
 *    allows (the caller reads zeros there and seeks again from further
 *    on); never ENXIO for a range not seen;
 *  - SEEK_HOLE answers the end of the disk, the implicit hole every file
 *    has: a hole is never reported where there is data (tools then
 *    copy the rest as data, which is correct, only not sparse). */
static void
fs_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
          struct fuse_file_info *fi)
{
  struct fs_handle *h = (struct fs_handle *) (uintptr_t) fi->fh;
  struct vd_image *img;
  uint64_t size, pos, calls = 0;
  struct vd_extent x;
  bool want_data = whence == SEEK_DATA;

  if (whence != SEEK_DATA && whence != SEEK_HOLE) {
    fuse_reply_err (req, EINVAL);
    return;
  }
  if (h->stage) {
    off_t r = lseek (h->stage->fd, off, whence);
    if (r < 0)
      fuse_reply_err (req, errno);
    else
      fuse_reply_lseek (req, r);
    return;
  }
  if (h->blob) {
    /* All data, no holes. */
    if (off < 0 || (uint64_t) off >= h->blob->len)
      fuse_reply_err (req, ENXIO);
    else
      fuse_reply_lseek (req, whence == SEEK_DATA ? off
                        : (off_t) h->blob->len);
    return;
  }
  img = h->disk->img;
  size = vd_image_size (img);
  if (off < 0 || (uint64_t) off >= size) {
    fuse_reply_err (req, ENXIO);
    return;
  }
  for (pos = off; pos < size; pos += x.length) {
    if (calls++ == FS_EXTENT_BUDGET) {
      fuse_reply_lseek (req, (off_t) (want_data ? pos : size));
      return;
    }
    if (vd_image_block_status (img, pos, size - pos, &x) < 0) {
      fuse_reply_err (req, errno_or_eio ());
      return;
    }
    if ((x.type == VD_EXTENT_DATA) == want_data)
      break;
  }
  if (pos >= size) {
    if (want_data) {
      fuse_reply_err (req, ENXIO);
      return;
    }
    pos = size;
  }
  fuse_reply_lseek (req, (off_t) pos);
}

struct extra {
  struct fs_dir_entry *e;
  size_t n, cap;
};

static void
add_extra (void *opaque, fuse_ino_t ino, mode_t type, const char *name)
{
  struct extra *x = opaque;

  if (x->n == x->cap) {
    size_t cap = x->cap ? 2 * x->cap : 8;
    struct fs_dir_entry *e = realloc (x->e, cap * sizeof *e);
    if (!e)
      return;
    x->e = e;
    x->cap = cap;
  }
  x->e[x->n].ino = ino;
  x->e[x->n].type = type;
  x->e[x->n].name = strdup (name);
  if (x->e[x->n].name)
    x->n++;
}

static void
fs_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs_node *node = inode_find (ino);
  struct fs_dirh *d = NULL;
  struct extra x = { NULL, 0, 0 };
  size_t i, n;
  bool cacheable;

  if (!node) {
    fuse_reply_err (req, ENOENT);
    return;
  }
  if (node->type != FS_NODE_DIR) {
    inode_unref (node);
    fuse_reply_err (req, ENOTDIR);
    return;
  }
  tree_revalidate (node);
  /* Pending directories and staging files (restore.c): not the tree's. */
  restore_entries (node, add_extra, &x);
  cacheable = x.n == 0 && !restore_is_pending (node);
  tree_rdlock ();
  n = node->nchildren + 2 + x.n;
  d = malloc (sizeof *d + n * sizeof d->e[0]);
  if (d) {
    d->n = 0;
    d->gen = node->gen;
    d->cached = false;
    d->e[0].ino = node->ino;
    d->e[0].type = S_IFDIR;
    d->e[0].plus = false;
    d->e[0].name = strdup (".");
    d->e[1].ino = node->parent_ino;
    d->e[1].type = S_IFDIR;
    d->e[1].plus = false;
    d->e[1].name = strdup ("..");
    for (i = 0; i < node->nchildren; i++) {
      struct fs_node *c = node->children[i];
      if (write_hidden (node, c->name)
          || restore_hides (node, c->name, fuse_req_ctx (req)->pid)) {
        n--;                    /* unlinked (write.c) */
        cacheable = false;
        continue;
      }
      d->e[d->n + 2].ino = c->ino;
      d->e[d->n + 2].type = c->attr.st_mode & S_IFMT;
      d->e[d->n + 2].plus = c->type == FS_NODE_DIR && node != tree_root ();
      d->e[d->n + 2].name = strdup (c->name);
      d->n++;
    }
    for (i = 0; i < x.n; i++) {
      d->e[d->n + 2] = x.e[i];
      d->e[d->n + 2].plus = false;
      x.e[i].name = NULL;
      d->n++;
    }
    d->n = n;
    for (i = 0; i < n; i++)
      if (!d->e[i].name) {
        for (i = 0; i < n; i++)
          free (d->e[i].name);
        free (d);
        d = NULL;
        break;
      }
  }
  tree_unlock ();
  for (i = 0; i < x.n; i++)
    free (x.e[i].name);
  free (x.e);
  if (!d) {
    inode_unref (node);
    fuse_reply_err (req, ENOMEM);
    return;
  }
  if (cacheable) {
    /* See struct fs_dirh.  node->lock is held across the notification
     * so that a concurrent opendir cannot reply "keep" before the old
     * copy is gone; the kernel takes no lock of ours for it. */
    pthread_mutex_lock (&node->lock);
    if (node->opened_gen != d->gen + 1) {
      /* 0: never cached, nothing to drop (the notification would cost a
       * getattr for nothing). */
      int r = node->opened_gen == 0 ? 0
        : fuse_lowlevel_notify_inval_inode (fs_session, ino, 0, 0);
      if (r < 0 && r != -ENOENT)
        vd_debug ("%s: cannot drop the kernel's listing: %s", node->path,
                  strerror (-r));
      node->opened_gen = d->gen + 1;
    }
    pthread_mutex_unlock (&node->lock);
    d->cached = true;
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
  }
  inode_unref (node);
  fi->fh = (uintptr_t) d;
  if (fuse_reply_open (req, fi) < 0) {
    for (i = 0; i < d->n; i++)
      free (d->e[i].name);
    free (d);
  }
}

static void
fs_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
            struct fuse_file_info *fi)
{
  struct fs_dirh *d = (struct fs_dirh *) (uintptr_t) fi->fh;
  CLEANUP_FREE char *buf = malloc (size);
  size_t used = 0, i;

  if (!buf) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  for (i = off; i < d->n; i++) {
    struct stat st = { .st_ino = d->e[i].ino, .st_mode = d->e[i].type };
    size_t len = fuse_add_direntry (req, buf + used, size - used,
                                    d->e[i].name, &st, (off_t) i + 1);
    if (len > size - used)
      break;
    used += len;
  }
  fuse_reply_buf (req, buf, used);
}

/* Like readdir, with the attributes of the entries marked plus (struct
 * fs_dirh); each of those gets a lookup reference, as the kernel counts
 * one for every entry with a node id but "." and "..". */
static void
fs_readdirplus (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                struct fuse_file_info *fi)
{
  struct fs_dirh *d = (struct fs_dirh *) (uintptr_t) fi->fh;
  CLEANUP_FREE char *buf = calloc (1, size ? size : 1);
  CLEANUP_FREE fuse_ino_t *counted = NULL;
  size_t used = 0, i, k, ncounted = 0, max;

  /* An entry takes at least its fuse_entry_out (128 bytes). */
  max = off >= 0 && (size_t) off < d->n ? MIN (d->n - off, size / 128 + 1)
    : 1;
  counted = malloc (max * sizeof *counted);
  if (!buf || !counted) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  for (i = off; i < d->n; i++) {
    struct fuse_entry_param e;
    struct fs_node *node = NULL;
    size_t len;
    bool attached = false;

    memset (&e, 0, sizeof e);
    e.attr.st_ino = d->e[i].ino;
    e.attr.st_mode = d->e[i].type;
    if (d->e[i].plus && ncounted < max
        && (node = inode_find (d->e[i].ino)) != NULL) {
      tree_rdlock ();
      attached = node->attached;
      tree_unlock ();
      if (attached)
        fill_entry (node, &e);
    }
    len = fuse_add_direntry_plus (req, buf + used, size - used,
                                  d->e[i].name, &e, (off_t) i + 1);
    if (len > size - used) {
      if (node)
        inode_unref (node);
      break;
    }
    if (e.ino) {
      inode_lookup_inc (node);
      counted[ncounted++] = e.ino;
    }
    if (node)
      inode_unref (node);
    used += len;
  }
  if (fuse_reply_buf (req, buf, used) < 0)
    for (k = 0; k < ncounted; k++)
      inode_forget (counted[k], 1);     /* interrupted: not taken */
}

static void
fs_releasedir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fs_dirh *d = (struct fs_dirh *) (uintptr_t) fi->fh;
  size_t i;

  if (d->cached) {
    /* Listed with an older generation than the directory's now: what it
     * put in the kernel's cache is stale (struct fs_dirh). */
    struct fs_node *node = inode_find (ino);
    if (node) {
      pthread_mutex_lock (&node->lock);
      if (node->gen != d->gen)
        node->opened_gen = d->gen + 1;
      pthread_mutex_unlock (&node->lock);
      inode_unref (node);
    }
  }

  for (i = 0; i < d->n; i++)
    free (d->e[i].name);
  free (d);
  fuse_reply_err (req, 0);
}

static void
fs_statfs (fuse_req_t req, fuse_ino_t ino)
{
  const struct fs_provider *p = tree_provider ();
  struct statvfs sv;

  /* The space the provider gives (images mode: the images directory's
   * file system), else none (libvirt mode: the disks live in many
   * places); read-only with -o ro or a provider that writes nothing
   * (libvirt mode makes snapshots by mkdir). */
  if (!p->statfs || p->statfs (&sv) < 0)
    memset (&sv, 0, sizeof sv);
  sv.f_namemax = 255;
  sv.f_flag &= ~ST_RDONLY;
  if (fs_config.ro || p->read_only)
    sv.f_flag |= ST_RDONLY;
  fuse_reply_statfs (req, &sv);
}

const struct fuse_lowlevel_ops fs_ops = {
  .init = fs_init,
  .lookup = fs_lookup,
  .forget = fs_forget,
  .forget_multi = fs_forget_multi,
  .getattr = fs_getattr,
  .setattr = fs_setattr,
  .mknod = fs_mknod,
  .mkdir = fs_mkdir,
  .unlink = fs_unlink,
  .rmdir = fs_rmdir,
  .symlink = fs_symlink,
  .rename = fs_rename,
  .link = fs_link,
  .open = fs_open,
  .read = fs_read,
  .write_buf = fs_write_buf,
  .flush = fs_flush,
  .release = fs_release,
  .fsync = fs_fsync,
  .opendir = fs_opendir,
  .readdir = fs_readdir,
  .readdirplus = fs_readdirplus,
  .releasedir = fs_releasedir,
  .statfs = fs_statfs,
  .setxattr = fs_setxattr,
  .removexattr = fs_removexattr,
  .create = fs_create,
  .fallocate = fs_fallocate,
  .lseek = fs_lseek,
};

/* fs/loop.c: a read of this handle may wait on a network disk's server
 * (fh: a READ's, so an open file's handle). */
bool
fs_read_may_block (uint64_t fh)
{
  const struct fs_handle *h = (const struct fs_handle *) (uintptr_t) fh;

  return h && h->remote;
}
