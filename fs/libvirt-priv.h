/* vmdiskfs - the libvirt provider's private header: its state and the
 * doors between its files.
 *
 *   tree-libvirt.c    the provider (its ops), refresh, rebuild
 *   libvirt-source.c  the connection, events, the dirty set, fetches
 *   libvirt-scan.c    domain XML and image info -> a model (struct build);
 *                     no locks, no libvirt call (tests/unit/test-libvirt-scan)
 *   libvirt-apply.c   the model into the tree, under tree_lock
 *   libvirt-lvm.c     LVM's answer cache, activation, the idle timer
 *   libvirt-dirs.c    mkdir and rmdir of snapshot directories
 *
 * Every field below says what protects it; the lock order is in
 * vmdiskfs.h.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_LIBVIRT_PRIV_H
#define VD_LIBVIRT_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "vmdiskfs.h"
#include "clock.h"
#include "filestat.h"
#include "vec.h"
#include "domxml.h"
#include "netdisk.h"
#include "snapshotter.h"
#include "virt.h"

#define ROOT_RECHECK_MS     2000
#define DOM_RECHECK_MS      3000
#define LOCAL_RECHECK_MS    600000
#define DISK_MIN_RESCAN_MS  1000
#define LVM_IDLE_MS         60000  /* deactivate a snapshot idle so long */
#define LVM_CACHE_MS        3000   /* LVM's answers are kept so long     */

/* ---- State: what protects what. ---- */

/* root->priv; tree_lock. */
struct virt_root {
  bool scanned;
  uint64_t listed_ms;
};

/* A file whose stat tells whether a domain's disks changed (part of
 * struct virt_dom: tree_lock). */
struct virt_watch {
  char *path;
  struct stat st;
  int err;
};

/* A libvirt snapshot as fetched: immutable once made; the array of a
 * domain is refresh_lock's (struct virt_dom). */
struct virt_snap {
  char *name;
  struct fs_blob *xml;
};

/* A domain's libvirt data fetched ahead by the prefetch threads
 * (libvirt-source.c), for its first scan: pre_lock. */
enum { PRE_QUEUED, PRE_RUNNING, PRE_DONE };
struct virt_pre {
  int state;
  unsigned epoch;                  /* virt_epoch when queued             */
  virDomainPtr dom;                /* the listing's                      */
  int err;                         /* PRE_DONE: 0, or the fetch failed   */
  struct fs_blob *xml;
  bool running;
  struct virt_snap *snaps;         /* sorted by name                     */
  size_t nsnaps;
};

/* priv of a domain directory. */
struct virt_dom {
  char *name;                      /* constant */

  /* tree_lock (read by stale()). */
  bool scanned;
  unsigned epoch;                  /* epoch of the last fetch            */
  uint64_t checked_ms;             /* last look at libvirt               */
  uint64_t disks_ms;               /* last reopening of the disks        */
  struct virt_watch *watch;
  size_t nwatch;
  struct virt_watch meta;          /* qemu:///system: snapshot metadata  */
  bool on_lvm;                     /* a disk is an LV: poll its snapshots */

  /* refresh_lock: libvirt's data, kept for rebuilds. */
  virDomainPtr dom;
  unsigned dom_epoch;
  struct fs_blob *xml;             /* NULL: never fetched                */
  bool running;
  struct virt_snap *snaps;         /* sorted by name                     */
  size_t nsnaps;
  int64_t first_seen;              /* when xml last changed              */

  /* pre_lock (libvirt-source.c): fetched ahead, or NULL. */
  struct virt_pre *pre;
};

/* priv of a disk node: how to open it; tree_lock. */
struct virt_disk {
  char *path;
  char *format;
  char *snap_id;                   /* qcow2 snapshot id, or NULL         */
  bool live;                       /* a running domain's active disk     */
  char *lvm_id;                    /* LVM snapshot needing activation    */
  unsigned lvm_flags;
  struct stat st;                  /* the image file at the last scan    */
  int err;
  uint64_t size;
  struct vd_policy *policy;        /* the <backingStore> record, or NULL */
  struct vd_netsrc *net;           /* a network disk (path: its name)    */
};

/* ---- The model of a domain's tree (libvirt-scan.c), built from
 * libvirt's data and its images.  One build is owned by the thread that
 * makes it (refresh_lock's holder, or a test): no lock. ---- */

/* An image file opened during a build: its size and snapshot table. */
struct img_info {
  char *path;
  char *format;
  int err;
  struct stat st;
  bool have_st;
  uint64_t size;
  mode_t read_mode;
  struct vd_snapshot *snaps;
  size_t nsnaps;
};

/* One <target>.img to show. */
struct disk_scan {
  char *fname;
  char *path;                       /* NULL: no source          */
  char *format;
  char *snap_id;
  bool live;
  char *lvm_id;                     /* LVM snapshot to activate */
  unsigned lvm_flags;
  struct stat st;
  bool have_st;
  int err;
  uint64_t size;
  mode_t read_mode;                 /* of every file it reads   */
  struct vd_policy *policy;         /* <backingStore>, or NULL  */
  struct vd_netsrc *net;            /* network disk, or NULL (path is
                                       vd_net_describe's name)  */
  int64_t sec;                      /* times (snapshots)        */
  long nsec;
};

/* One snapshots/<name>/. */
struct snap_scan {
  char *ename;
  const char *name;                 /* unescaped (libvirt's or the tag) */
  int64_t sec;
  long nsec;
  struct fs_blob *domxml, *snapxml; /* NULL for qemu-img snapshots */
  struct disk_scan *disks;
  size_t ndisks, capdisks;
};

struct build {
  const char *dname;                /* domain name, for messages */
  bool on_lvm;                      /* a disk is a logical volume */
  virConnectPtr c;                  /* NULL when disconnected    */
  /* The path of a volume disk (pool and volume set) through c, or NULL
   * (logged); NULL: volume disks have no source. */
  char *(*volume_path) (struct build *b, const struct domxml_disk *d);
  /* A network disk's source through c (its secret's value read), or
   * NULL (logged); NULL: network disks have no source. */
  struct vd_netsrc *(*netsrc) (struct build *b, const struct domxml_disk *d);
  bool log;                         /* log skipped disks (fetches) */
  struct img_info *imgs;
  size_t nimgs, capimgs;
  struct disk_scan *disks;
  size_t ndisks, capdisks;
  struct snap_scan *snaps;
  size_t nsnaps, capsnaps;
  /* The last snapshot definition compressed (libvirt-scan.c), plain,
   * and its blob (a snapshot's reference). */
  char *last_dx;
  size_t last_dxlen;
  struct fs_blob *last_domxml;
};

/* ---- Small helpers. ---- */

static inline bool
streq (const char *a, const char *b)
{
  return a == b || (a && b && strcmp (a, b) == 0);
}

/* ---- libvirt-source.c ---- */
extern char *virt_uri;             /* constant after start               */
extern bool virt_system_uri;       /* constant: qemu:///system           */
extern unsigned virt_epoch;        /* atomic: bumped, all is refetched   */
extern int virt_root_dirty;        /* atomic: a domain was (un)defined   */
void virt_silent (void *opaque, virErrorPtr e);
void virt_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
void virt_mark_dirty (const char *name);
bool virt_is_dirty (const char *name, bool take);
void virt_prune_dirty (struct fs_node *root);
void virt_dirty_clear (void);
int virt_events_start (void);
void virt_events_stop (void);
int virt_check_connect (void);
virConnectPtr virt_get_conn_mode (bool *ro);
virConnectPtr virt_get_conn (void);
void virt_conn_close (void);
char *virt_volume_path (struct build *b, const struct domxml_disk *d);
/* libvirt-net.c: b->netsrc (snapshotter/netsrc.c's ds_netsrc through
 * b->c), and whether two sources are the same. */
struct vd_netsrc *virt_build_netsrc (struct build *b,
                                     const struct domxml_disk *d);
bool virt_netsrc_same (const struct vd_netsrc *a, const struct vd_netsrc *b);
void virt_snaps_free (struct virt_snap *s, size_t n);
int virt_fetch_snapshots (struct virt_dom *d, bool xml, bool refetch,
                          struct virt_snap **out, size_t *nout);
bool virt_same_names (const struct virt_dom *d, const struct virt_snap *v,
                      size_t n);
int virt_fetch_domain (struct virt_dom *d, bool refetch);
void virt_prefetch (struct fs_node **nodes, size_t n);
bool virt_prefetch_take (struct virt_dom *d, unsigned ep, bool use);
void virt_pre_free (struct virt_pre *p);
void virt_prefetch_open (void);
void virt_prefetch_stop (void);

/* ---- libvirt-scan.c ---- */
bool scan_inside_mount (const char *path);
struct fs_blob *scan_virsh_blob (const char *x, size_t n);
int scan_domain (struct build *b, const struct domxml_disk *cur, size_t ncur,
                 bool running, const struct virt_snap *snaps, size_t nsnaps);
int scan_lvm_snapshots (struct build *b, const char *fname, const char *path,
                        const struct snap_list *l, int err);
void scan_free (struct build *b);
int scan_nvram (struct build *b, const char *xml, size_t len, bool running);

/* ---- libvirt-apply.c ---- */
void apply_domain (struct fs_node *node, struct virt_dom *d, struct build *b,
                   int64_t dsec);

/* ---- libvirt-lvm.c ---- */
const struct snap_list *lvm_cache_snaps (const char *path);
void lvm_cache_flush (void);
void lvm_cache_clear (void);
int lvm_use (const char *id, unsigned flags, fuse_ino_t ino);
void lvm_idle_start (void);
void lvm_idle_stop (void);
void lvm_active_stop (void);

/* ---- libvirt-dirs.c ---- */
int libvirt_mkdir (struct fs_node *dir, const char *ename,
                   struct fs_node **out);
int libvirt_rmdir (struct fs_node *dir, const char *ename,
                   struct fs_node *sn);

/* ---- libvirt-write.c ---- */
struct vd_image *libvirt_open_write (struct fs_node *node, void **token);
void libvirt_close_write (struct fs_node *node, void *token);
bool libvirt_may_stage (struct fs_node *dir);

/* ---- libvirt-restore.c ---- */
int libvirt_may_pend (struct fs_node *dir, const char *ename);
int libvirt_complete (const char *dirpath, const char *name, int fd);
int libvirt_lvm_snapshot_write (const char *domain, const char *snap,
                                const char *lv, int fd);

/* ---- libvirt-nvram.c ---- */
/* May an NVRAM file be created at path for a domain being restored?  True
 * only for a plain file name directly inside libvirt's nvram directory
 * (qemu:///system: /var/lib/libvirt/qemu/nvram), no "..", no symlink
 * components, not existing yet.  False with a log line otherwise. */
bool libvirt_nvram_path_ok (const char *path);
/* libvirt's default NVRAM path of a domain (<nvram dir>/<name>_VARS.fd),
 * malloc'd; NULL without a local nvram directory (or on ENOMEM). */
char *libvirt_nvram_default (const char *domain);

#endif /* VD_LIBVIRT_PRIV_H */
