/* vmdiskfs - what ops.c (the read side of the FUSE callbacks) shares with
 * write.c (the write side) and staging.c; private to fs/.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_OPS_PRIV_H
#define VD_OPS_PRIV_H

#include "vmdiskfs.h"

struct fs_writer;
struct fs_staging;

/* An open disk.img, an in-memory file (domain.xml ...), or a staging
 * file.  writer: the handle may write the disk (write.c), and disk is
 * the writer's image.  stage: a staging file (staging.c). */
struct fs_handle {
  struct fs_disk *disk;         /* own reference: survives rescans */
  struct fs_blob *blob;         /* file nodes instead: own reference */
  struct fs_writer *writer;     /* opened for writing (write.c)      */
  struct fs_staging *stage;     /* staging files (own reference)     */
};

int errno_or_eio (void);
void fill_attr (struct fs_node *node, struct stat *st);
struct fs_node *child_of (struct fs_node *dir, const char *name);
void reply_entry (fuse_req_t req, struct fs_node *node);
void fs_erofs (fuse_req_t req);
bool may_change (fuse_req_t req);

/* write.c: the write side of the callbacks (ops.c's table points at
 * them) and what ops.c asks it. */
void fs_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                 int to_set, struct fuse_file_info *fi);
void fs_unlink (fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_rename (fuse_req_t req, fuse_ino_t parent, const char *name,
                fuse_ino_t newparent, const char *newname, unsigned flags);
void fs_create (fuse_req_t req, fuse_ino_t parent, const char *name,
                mode_t mode, struct fuse_file_info *fi);
void fs_write_buf (fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv,
                   off_t off, struct fuse_file_info *fi);
void fs_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                   off_t length, struct fuse_file_info *fi);
void fs_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
               struct fuse_file_info *fi);
/* Open node (a disk, or a staging file) for writing as fi asks (O_TRUNC
 * too): fill h and reply (fuse_reply_open or an error).  Consumes the
 * caller's node reference. */
void write_open (fuse_req_t req, struct fs_node *node,
                 struct fuse_file_info *fi, struct fs_handle *h);
/* Release what a handle holds for writing (before it is freed). */
void write_release (struct fs_node *node, struct fs_handle *h);
/* The staging file or hidden disk called name in dir: lookup's answer
 * after the tree's.  A staging node (a reference) or NULL. */
struct fs_node *write_lookup (struct fs_node *dir, const char *name);
/* Is name in dir a disk hidden by unlink (readdir and lookup leave it
 * out)? */
bool write_hidden (struct fs_node *dir, const char *name);
/* Attributes of a staging node. */
void write_staging_attr (struct fs_node *node, struct stat *st);
/* pread from a staging handle. */
ssize_t write_staging_read (struct fs_handle *h, void *buf, size_t size,
                            off_t off);

/* staging.c */
struct fs_staging {
  unsigned refs;                /* staging_lock                          */
  fuse_ino_t dir;               /* the directory it was made in          */
  char *name;                   /* its name there (as the kernel gave it) */
  char *file;                   /* its name in the staging directory     */
  int fd;                       /* the staging file, flock'ed            */
  struct fs_node *node;         /* its node (a reference)                */
  mode_t mode;
  uid_t uid;
  gid_t gid;
  fuse_ino_t applied;           /* renamed over this disk node: 0 none   */
  uint64_t idle_since_ms;       /* no handle open since; 0 when open     */
  unsigned nopen;               /* staging_lock                          */
};
struct fs_staging *staging_new (struct fs_node *dir, const char *name,
                                mode_t mode, uid_t uid, gid_t gid);
struct fs_staging *staging_find (fuse_ino_t dir, const char *name);
struct fs_staging *staging_by_node (fuse_ino_t ino);
void staging_unref (struct fs_staging *s);
/* Open handles count (idle staging files are removed after a while). */
void staging_opened (struct fs_staging *s);
void staging_closed (struct fs_staging *s);
/* Remove its file and its name (unlink, or applied by rename). */
void staging_remove (struct fs_staging *s, fuse_ino_t applied_to);
int staging_rename (struct fs_staging *s, fuse_ino_t newdir,
                    const char *newname);
/* Hidden disks (unlink): by directory inode and name. */
void hidden_add (fuse_ino_t dir, const char *name);
bool hidden_test (fuse_ino_t dir, const char *name);
bool hidden_take (fuse_ino_t dir, const char *name);

#endif
