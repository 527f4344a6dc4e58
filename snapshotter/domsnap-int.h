/* vmdiskfs - domain snapshots: what the files of domsnap share.
 *
 *   domsnap.c       names, create (in phases), delete, undo; the
 *                   vd_snapshotter_libvirt table
 *   domsnap-list.c  ds_list: libvirt's snapshots and the LV ones, merged
 *   domsnap-dom.c   the domain model: the domain, its XML, its disks
 *                   classified (domxml_disk_classify), their LVM
 *                   snapshots; internal snapshot tags read from images
 *   domsnap-meta.c  the libvirt part's <domainsnapshot> XML
 *   domsnap-guest.c freeze and thaw through the guest agent
 *   domsnap-lock.c  the per-domain flock in DS_LOCK_DIR (domsnap.h)
 *   qmp.c           QMP with the domain's running qemu
 *   qemu-img.c      qemu-img snapshot on a shut-off domain's image
 *
 * Threads: a struct dom belongs to one call (one thread).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_DOMSNAP_INT_H
#define VD_DOMSNAP_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <libvirt/libvirt.h>

#include "domsnap.h"
#include "domxml.h"
#include "snapshotter.h"
#include "netdisk.h"
#include "buf.h"

/* Who made a snapshot: the first line of the libvirt part's
 * <description>, and the LVM part's extra tag (domsnap.h: enum ds_by). */
#define BY_CLI "vmdisk-snapshot"
#define BY_MOUNT "vmdiskfs"

/* ---- domsnap-dom.c: the domain and its disks. ---- */

enum dk_kind { DK_SKIP, DK_QCOW2, DK_LVM, DK_RBD };

struct dk {
  const struct domxml_disk *x;
  const char *target;           /* x->target, or "?"                      */
  char *path;                   /* resolved source, NULL when none        */
  enum dk_kind kind;
  bool blocks_libvirt;          /* left out, and libvirt would refuse an
                                   internal snapshot because of it        */
  struct snap_info *lvm_snaps;  /* DK_LVM: its snapshots now              */
  size_t nlvm_snaps;
  char *node;                   /* QMP node name (running, own path)      */
  bool tag_made;                /* ds_create made its tag                 */
  bool lvm_made;                /* ds_create made lvm_snap                */
  struct snap_info lvm_snap;
  struct vd_netsrc *net;        /* DK_RBD: the image (formats/netdisk.h)  */
  struct vd_snapshot *rbd_snaps;  /* DK_RBD: its snapshots now            */
  size_t nrbd_snaps;
  bool rbd_made;                /* ds_create made its snapshot            */
};

struct dom {
  virConnectPtr c;
  virDomainPtr d;
  const char *name;
  int state;                    /* VIR_DOMAIN_RUNNING ...                 */
  bool active;
  char *xml;
  struct domxml_disk *xd;
  size_t nxd;
  struct dk *dk;                /* nxd entries                            */
  size_t nqcow2, nlvm, nrbd;
  bool blocked;                 /* some dk blocks_libvirt                 */
};

/* Look the domain up, read its XML (live when running) and classify its
 * disks.  strict (create): a disk that cannot be snapshotted and is not
 * marked snapshot='no' fails ENOTSUP (logged, with the advice); else such
 * disks are left out quietly.  0, or -1 with errno (logged). */
int ds_dom_open (virConnectPtr c, const char *name, bool strict,
                 struct dom *m);
void ds_dom_close (struct dom *m);

/* Does disk k's image have an internal snapshot tagged name?  1, 0, or
 * -1 (logged). */
int ds_tag_exists (const struct dom *m, const struct dk *k,
                   const char *name);

/* getenv (var) as seconds, dflt when unset or not a number >= 0. */
long ds_env_seconds (const char *var, long dflt);
void ds_sleep_ms (long ms);
/* s escaped for XML text and attribute values. */
void ds_buf_xml (struct vd_buf *b, const char *s);

/* ---- domsnap-meta.c: the libvirt part. ---- */

/* The <description>: who made it (BY_CLI, BY_MOUNT) on its first line,
 * then opts->description.  malloc'd ("" for none), NULL on ENOMEM. */
char *ds_meta_description (const struct ds_create_opts *opts);
/* The libvirt path: the snapshot made by libvirt, or NULL (logged). */
virDomainSnapshotPtr ds_meta_create (struct dom *m, const char *name,
                                     const char *desc);
/* The own path, before its tags are made: *dxml the definition to store
 * with it, *parent the current snapshot's name or NULL (malloc'd).  0,
 * or -1 (logged). */
int ds_meta_prepare (struct dom *m, char **dxml, char **parent);
/* The own path, once its tags are made: register them with libvirt
 * (redefine, made current).  The snapshot, or NULL (logged). */
virDomainSnapshotPtr ds_meta_redefine (struct dom *m, const char *name,
                                       const char *desc, const char *dxml,
                                       const char *parent, time_t now);

/* ---- domsnap-guest.c: the guest agent. ---- */

/* Freeze the guest's filesystems: 0, or -1 with libvirt's error set
 * (the caller warns). */
int guest_freeze (const struct dom *m);
/* Thaw them (tried thrice): 0, or -1 (logged; when says when: "after
 * snapshot NAME", "undo"). */
int guest_thaw (const struct dom *m, const char *when);

/* ---- domsnap-lock.c: the per-domain lock. ---- */

struct ds_lock {
  int fd;                       /* the lock file; -1: not locked by it    */
  int dirfd;                    /* DS_LOCK_DIR, checked; -1: none         */
  bool mutexed;                 /* holds the in-process fallback mutex    */
  char name[VIR_UUID_STRING_BUFLEN + 8];         /* "<UUID>.lock"        */
  char path[sizeof DS_LOCK_DIR + VIR_UUID_STRING_BUFLEN + 8];
};

/* Take domain dname's lock (domsnap.h "Lock").  0, or -1 (logged) with
 * errno EBUSY after the wait, EACCES a refused lock directory, ENOENT no
 * such domain ... */
int ds_lock_take (virConnectPtr c, const char *dname, struct ds_lock *lk);
/* The same, waiting at most wait_s seconds (0: one try). */
int ds_lock_take_wait (virConnectPtr c, const char *dname,
                       struct ds_lock *lk, long wait_s);
void ds_lock_release (struct ds_lock *lk);
/* Tests: VMDISKFS_DOMSNAP_HOLD=FILE, see domsnap.h. */
void ds_hold_for_tests (const char *dname);

/* ---- qmp.c: QMP with the running qemu. ---- */

/* Fill dk[].node of every qcow2 disk (or of those with want[i] set) from
 * query-block.  0, or -1 (logged). */
int qmp_find_nodes (struct dom *m, const bool *want);
/* One transaction: every qcow2 disk's internal snapshot name at one
 * point, or none (sets their tag_made). */
int qmp_create_tags (struct dom *m, const char *name);
int qmp_delete_tag (const struct dom *m, const struct dk *k,
                    const char *name);

/* ---- qemu-img.c: qemu-img on this host. ---- */

/* qemu-img snapshot OP (-c, -d) NAME on disk k's image, as qcow2.  0, or
 * -1 (logged) with errno EIO, or ETIMEDOUT when it hung and was killed. */
int qemu_img_snapshot (const struct dom *m, const struct dk *k,
                       const char *op, const char *name);

#endif
