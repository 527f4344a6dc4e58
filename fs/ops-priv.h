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
  bool remote;                  /* a network disk: reads may wait on a
                                   server (fs_read_may_block)         */
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

/* Write the staging file s into the disk node disk (rename over a disk,
 * restore.c): 0, or -1 with errno. */
int write_apply_staging (struct fs_node *disk, struct fs_staging *s);

/* restore.c: pending directories and complete files (DESIGN.md
 * "Writing": restoring a whole VM by copying its directory in). */
/* The pending directory name in dir (a reference), or NULL. */
struct fs_node *restore_lookup (struct fs_node *dir, const char *name);
bool restore_is_pending (struct fs_node *node);
/* mkdir and rmdir where the tree has no such directory: 0, -1 with
 * errno, or 1: not a pending directory's business. */
int restore_mkdir (struct fs_node *dir, const char *name, mode_t mode,
                   uid_t uid, gid_t gid, pid_t pid, struct fs_node **out);
int restore_rmdir (struct fs_node *dir, const char *name);
/* What readdir of dir shows besides the tree: pending directories and
 * staging files. */
void restore_entries (struct fs_node *dir,
                      void (*add) (void *opaque, fuse_ino_t ino,
                                   mode_t type, const char *name),
                      void *opaque);
/* s is complete (its last writer closed or fsync'ed it): apply it if its
 * name means something where it is, then whatever waited for it.  0
 * (applied, or waiting), or -1 with errno (the close fails with it). */
int restore_complete (struct fs_staging *s);
/* A file was made, renamed or applied in dir (name: NULL, or its name,
 * which the copy has made there). */
void restore_touch (fuse_ino_t dir, const char *name);
/* Does dir hide name from the process pid (restore.c: the process that
 * made dir and fills it; a name of the tree it has not made yet)? */
bool restore_hides (struct fs_node *dir, const char *name, pid_t pid);
/* node, a directory of the tree in dir, was made (mkdir) by pid: hide
 * its names from pid until pid makes them (a snapshot directory copied
 * in: mkdir made the snapshot of now, the copy's files replace it). */
void restore_adopt (struct fs_node *dir, struct fs_node *node, pid_t pid);
/* May files of dir (a pending directory included) be staged? */
bool restore_may_stage (struct fs_node *dir);

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
  /* restore.c (atomic): */
  bool dirty;                   /* written since it was last complete     */
  bool complete;                /* complete, kept: offered again later    */
  bool overlay;                 /* the new bytes of a file of the tree
                                   (domain.xml, a snapshot's disk) opened
                                   for writing: never found by name      */
};
struct fs_staging *staging_new (struct fs_node *dir, const char *name,
                                mode_t mode, uid_t uid, gid_t gid);
struct fs_staging *staging_find (fuse_ino_t dir, const char *name);
struct fs_staging *staging_by_node (fuse_ino_t ino);
void staging_unref (struct fs_staging *s);
/* Open handles count (idle staging files are removed after a while). */
void staging_opened (struct fs_staging *s);
/* Staging files open now (any). */
unsigned staging_open_count (void);
void staging_closed (struct fs_staging *s);
/* Remove its file and its name (unlink, or applied by rename). */
void staging_remove (struct fs_staging *s, fuse_ino_t applied_to);
int staging_rename (struct fs_staging *s, fuse_ino_t newdir,
                    const char *newname);
/* The staging files a directory shows (not applied, not overlays):
 * add (opaque, ino, name) for each, under staging_lock (add must not
 * call back). */
void staging_list (fuse_ino_t dir,
                   void (*add) (void *opaque, fuse_ino_t ino,
                                const char *name),
                   void *opaque);
/* Every staging file marked complete and not open (new references):
 * *out malloc'd, *n of them. */
void staging_waiting (struct fs_staging ***out, size_t *n);
/* Hidden disks (unlink): by directory inode and name. */
void hidden_add (fuse_ino_t dir, const char *name);
bool hidden_test (fuse_ino_t dir, const char *name);
bool hidden_take (fuse_ino_t dir, const char *name);

#endif
