/* vmdiskfs - snapshot providers: public API and provider ops table.
 *
 * A provider knows snapshots that the formats library cannot find in an
 * image file by itself:
 *   - lvm_snapshotter (lvm.c): the snapshots in the storage under a disk,
 *     classic and thin snapshots of a logical volume.  fs/ asks it for
 *     the snapshots of a domain's disk, shows each as
 *     snapshots/<name>/<target>.img and reads it through the formats
 *     library (raw driver) from snap_info.device, after activate() when
 *     SNAP_NEEDS_ACTIVATION is set; it calls deactivate() when the
 *     snapshot has been idle for a while.
 *   - libvirt_snapshotter (domsnap.c): snapshots of a whole libvirt
 *     domain, every disk at one point in time (internal qcow2 snapshots
 *     with their libvirt metadata, and LVM snapshots through
 *     lvm_snapshotter): the dom_* operations, used by fs/ (mkdir and
 *     rmdir under <domain>/snapshots/) and vmdisk-snapshot.  It has no
 *     per-disk operations: fs/ reads internal snapshots from the images.
 *
 * Like formats/vdformat.h: new operations are added at the end of the
 * table; NULL means "not supported".  Errors are logged once where found,
 * then -1 with errno: ENOENT no such disk or snapshot, ENOTSUP not a disk
 * of this provider, EEXIST name taken (create), ETIMEDOUT the tool hung,
 * EIO the tool failed or said something we cannot parse.
 *
 * Threads: every operation may be called from any thread, also at once;
 * providers keep no state between calls (each call asks the tool again).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_SNAPSHOTTER_H
#define VD_SNAPSHOTTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* snap_info.flags */
#define SNAP_THIN             0x1  /* thin snapshot (shares a pool)        */
#define SNAP_OURS             0x2  /* created by vmdiskfs (LVM tag vmdiskfs) */
#define SNAP_ACTIVE           0x4  /* device exists now and can be opened  */
#define SNAP_NEEDS_ACTIVATION 0x8  /* not active: activate() before open   */
#define SNAP_INVALID          0x10 /* classic snapshot overflowed: unusable */
#define SNAP_TAG_CLI          0x20 /* made by vmdisk-snapshot (LVM tag
                                      vmdisk-snapshot, with SNAP_OURS)   */

/* One snapshot of one disk. */
struct snap_info {
  char *name;          /* shown as the snapshot directory (raw bytes; fs/
                          escapes them); unique among one disk's snapshots */
  char *id;            /* provider id, e.g. "vg0/disk1-nightly"           */
  char *origin;        /* provider id of the disk, e.g. "vg0/disk1"       */
  char *device;        /* path to read it from, e.g. "/dev/vg0/disk1-nightly" */
  int64_t ctime_sec;   /* creation time, seconds since the epoch          */
  uint64_t size;       /* guest-visible size in bytes                     */
  unsigned flags;      /* SNAP_*                                          */
};

/* One disk's snapshots, as list_many gives them. */
struct snap_list {
  struct snap_info *snaps;
  size_t n;
  int err;             /* 0, or the errno list() would have set          */
};

/* How to create a snapshot (issue 4).  Zero-initialise, then set. */
struct snap_create_opts {
  /* Classic LVM snapshot: copy-on-write space in bytes; 0 = the
   * provider's policy (LVM: 20% of the origin, at least 64 MiB, at most
   * the origin's size).  Ignored for thin origins. */
  uint64_t cow_bytes;
  /* Classic LVM snapshot, when cow_bytes is 0: percent of the origin's
   * size (1-100, still at least 64 MiB, at most the origin); 0 = 20. */
  unsigned cow_percent;
  /* One more LVM tag to add (vmdisk-snapshot marks the CLI's, listed as
   * SNAP_TAG_CLI), or NULL.  Letters, digits and +_.-/=!:&# only. */
  const char *extra_tag;
};

/* Domain snapshots (domsnap.h defines these and says what the dom_*
 * operations do); conn is the caller's virConnectPtr. */
struct _virConnect;
struct ds_create_opts;
struct ds_snap;

struct vd_snapshotter {
  const char *name;               /* "lvm", "libvirt" */

  /* The snapshots of disk (a path as found in the domain XML: /dev/VG/LV,
   * /dev/mapper/VG-LV, a symlink to either).  *snaps is a malloc'd array
   * sorted by creation time, then name (free with snap_list_free); a disk
   * without snapshots gives 0 entries.  ENOTSUP when disk is not a disk
   * of this provider. */
  int (*list) (const char *disk, struct snap_info **snaps, size_t *n);

  /* Make s->device readable (LVM: lvchange -ay -K), update s->flags.
   * A no-op for an active snapshot.  (LVM: a classic snapshot is inactive
   * only when its origin is; activating it activates the origin too, and
   * deactivate deactivates both unless the origin is open.) */
  int (*activate) (struct snap_info *s);
  /* Undo activate when the snapshot is idle (the caller says when).
   * Only for snapshots the caller activated: never deactivates one
   * that was active before, which the caller knows from SNAP_ACTIVE. */
  int (*deactivate) (struct snap_info *s);

  /* Create a snapshot called name of disk and describe it in *out
   * (free its fields with snap_info_clear).  NULL: not supported. */
  int (*create) (const char *disk, const char *name,
                 const struct snap_create_opts *opts, struct snap_info *out);
  /* Delete snapshot s.  The caller decides which ones it may delete
   * (SNAP_OURS marks those vmdiskfs made). */
  int (*remove) (const struct snap_info *s);

  /* list() for several disks with one question to the storage (LVM: one
   * lvs for all, where list() runs one per disk): out[i] gets what
   * list (disks[i], ...) would give, or err = its errno.  -1 (errno) only
   * when the storage could not be asked at all; out is then untouched.
   * Free each out[i].snaps with snap_list_free.  NULL: call list(). */
  int (*list_many) (const char *const *disks, size_t ndisks,
                    struct snap_list *out);

  /* Snapshots of a whole domain, all disks or none (NULL: not a domain
   * provider).  dom_list: sorted by ctime then name, free with
   * dom_list_free; dom_create: *done gets DS_DONE_* bits (also on
   * failure: what was tried).  Errors as domsnap.h says. */
  int (*dom_list) (struct _virConnect *conn, const char *domain,
                   struct ds_snap **out, size_t *n);
  void (*dom_list_free) (struct ds_snap *v, size_t n);
  int (*dom_create) (struct _virConnect *conn, const char *domain,
                     const char *name, const struct ds_create_opts *opts,
                     unsigned *done);
  int (*dom_delete) (struct _virConnect *conn, const char *domain,
                     const char *name);
  /* Take the domain's snapshot lock (the one dom_create and dom_delete
   * hold) for a writer of its disks (fs/: a disk open for writing), so
   * no snapshot is made or deleted meanwhile.  wait_s: seconds to wait
   * for a snapshot operation in progress (0: fail at once).  *token is
   * passed to dom_unlock.  0, or -1 (logged) with errno EBUSY (held),
   * EACCES (a refused lock directory), ENOENT (no such domain). */
  int (*dom_lock) (struct _virConnect *conn, const char *domain,
                   long wait_s, void **token);
  void (*dom_unlock) (void *token);
};

extern const struct vd_snapshotter lvm_snapshotter;
extern const struct vd_snapshotter libvirt_snapshotter;

void snap_info_clear (struct snap_info *s);
void snap_list_free (struct snap_info *snaps, size_t n);

#endif
