/* vmdiskfs - snapshots of a whole libvirt domain: every disk at one point
 * in time, all or none.  Used by fs/ (mkdir and rmdir under
 * <domain>/snapshots/) and by the vmdisk-snapshot command line tool.
 *
 * A domain snapshot called NAME is made of:
 *   - one internal snapshot NAME in every qcow2 disk, and one libvirt
 *     snapshot NAME describing them (its <disks> list each disk with
 *     snapshot='internal' or 'no');
 *   - one LVM snapshot per logical-volume disk, made by the LVM provider
 *     (snapshotter.h: lvm_snapshotter.create, so named and tagged as the
 *     README section "LVM snapshots" says: its shown name is NAME).
 * Two ways to make the qcow2 part (libvirt 9.0 refuses an internal
 * snapshot in which any disk has snapshot='no': "disk 'vdb' must use
 * snapshot mode 'internal'", running or shut off):
 *   - every disk the guest can write is qcow2 (none left out but
 *     read-only disks, cdroms and empty drives, which libvirt accepts):
 *     libvirt makes it (virDomainSnapshotCreateXML): for a running domain
 *     with its VM state, for a shut-off one disk-only;
 *   - otherwise ("own path"): shut off, `qemu-img snapshot -c NAME` on
 *     each qcow2 image; running, while the domain is paused, one QMP
 *     transaction of blockdev-snapshot-internal-sync actions for all its
 *     qcow2 disks (virDomainQemuMonitorCommand: libvirt marks the domain
 *     tainted "custom-monitor" in its log); then the libvirt snapshot is
 *     registered with VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE (the domain XML
 *     inside, no memory; state disk-snapshot when made running, shutoff
 *     when shut off, except disk-snapshot again when a left-out disk is
 *     not snapshot='no' in the definition, e.g. a logical volume or a
 *     shareable disk: libvirt refuses shutoff then).
 * A domain of LV disks only has no libvirt part.  Disks are classified
 * from the domain's XML (the live XML for a running domain):
 *   - left out: device other than 'disk' (cdrom, floppy, lun), <readonly/>,
 *     <shareable/>, snapshot='no', no source;
 *   - qcow2 part: <driver type='qcow2'> of type file, block or volume;
 *   - LVM part: a raw disk of type block or volume (a logical pool's
 *     volume: its path) that lvm_snapshotter.list accepts;
 *   - anything else fails ENOTSUP, logged with the advice to mark the disk
 *     snapshot='no'.
 * Quiesce (opts->quiesce): backups read only the disks, so the disks
 * must be consistent themselves, VM state or not.  A running domain's
 * filesystems are frozen through the guest agent first; when that
 * worked, the snapshot is disk-only (a guest saved frozen would come back
 * frozen after a revert): a qcow2-only domain then takes the own path
 * (paused, one QMP transaction, redefined as disk-snapshot, no VM
 * state).  When no agent answers (or the domain is paused: the agent
 * cannot answer then), a warning and DS_DONE_NO_AGENT, and the snapshot
 * is made as without quiesce (with VM state where libvirt makes it so).
 * A shut-off domain has nothing to freeze: DS_DONE_NOT_NEEDED.
 * Order of ds_create, each step undone when a later one fails, so that
 * nothing half-made stays behind:
 *   check the name (EINVAL), take the domain's lock (below), check the
 *   name is free everywhere (EEXIST: libvirt snapshot, an internal
 *   snapshot tag of a qcow2 disk, an LV snapshot of that shown name),
 *   freeze (quiesce, running only), pause a running domain that has LV
 *   disks and more than one disk, or takes the own path (so that all
 *   disks share one point in time), LVM snapshots, the qcow2 part (then
 *   every qcow2 disk must show the tag: libvirt can report success when
 *   qemu failed), resume (only if this call paused it), thaw (the agent
 *   answers only while the guest runs).
 * Tags are read from the images (formats library, no locks) and qemu-img
 * runs on this host: with a remote connection the images must be
 * reachable under the same paths here, as for reading them.  qemu-img is
 * killed after 5 minutes (ETIMEDOUT).
 *
 * Lock: ds_create and ds_delete hold an exclusive flock(2) on
 * DS_LOCK_DIR/<domain UUID>.lock (a file 0600) for their whole run, so
 * that creates and deletes of one domain by different processes (a
 * vmdiskfs mount, vmdisk-snapshot from cron) or threads never interleave;
 * the holder removes the file when it is done.  A second caller waits,
 * logging once that it does, up to 10 minutes, then fails EBUSY.
 * DS_LOCK_DIR is made 0700 when missing and checked with lstat before
 * every use: a directory, not a symbolic link, owned by the effective
 * user, no access for group or others.  Anything else (made by another
 * user, who could take or remove the locks) is refused: an error naming
 * its owner and mode, and the call fails EACCES having changed nothing.
 * Only an unprivileged caller, which cannot use root's directory, goes on
 * with a warning, serialized only with the other threads of its process
 * (a mutex).
 * So callers need no lock of their own.  The lock is per host: processes on other hosts sharing a
 * remote libvirt are not serialized.
 *
 * Test hooks (environment variables, for the test suite only):
 *   VMDISKFS_DOMSNAP_FAIL=lvm|tags|resume  ds_create fails after that
 *     step (and undoes);
 *   VMDISKFS_DOMSNAP_FAKE_FREEZE=1  quiesce pretends the guest agent froze
 *     and thawed (warnings say so; no agent is asked); thawing checks
 *     that the domain runs, as a real agent needs;
 *   VMDISKFS_DOMSNAP_HOLD=FILE  ds_create and ds_delete, once they hold
 *     the lock, wait until FILE is gone (at most 2 minutes);
 *   VMDISKFS_DOMSNAP_LOCK_WAIT=SECONDS  instead of 10 minutes;
 *   VMDISKFS_DOMSNAP_QEMU_IMG_TIMEOUT=SECONDS  instead of 5 minutes.
 *
 * Errors: logged once where found (vd_error, naming the domain, the disk
 * and what libvirt or LVM said), then -1 with errno: EINVAL bad name,
 * EEXIST name taken, ENOENT no such domain or snapshot, ENOTSUP a disk
 * that cannot be snapshotted (or a snapshot that is not libvirt's nor
 * LVM's, for delete), EBUSY libvirt refused because of the domain's
 * state (VIR_ERR_OPERATION_INVALID) or another create or delete of the
 * domain held the lock for 10 minutes, ENOSPC LVM found no room, EACCES
 * the connection is read-only, ETIMEDOUT qemu-img hung and was killed,
 * EIO anything else.
 *
 * Threads: the functions may run in several threads at once, each with
 * its own or a shared virConnectPtr; creates and deletes of one domain
 * are serialized by the lock.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_DOMSNAP_H
#define VD_DOMSNAP_H

#include <libvirt/libvirt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Who made a snapshot: recorded in it, so that prune deletes only its
 * own.  libvirt part: the first line of <description> is
 * "vmdisk-snapshot" (DS_BY_CLI) or "vmdiskfs" (DS_BY_MOUNT); LVM part:
 * the tag vmdiskfs always, plus the tag vmdisk-snapshot for DS_BY_CLI. */
enum ds_by { DS_BY_OTHER = 0, DS_BY_MOUNT = 1, DS_BY_CLI = 2 };

struct ds_create_opts {          /* zero-initialise, then set */
  enum ds_by by;                 /* DS_BY_MOUNT or DS_BY_CLI              */
  uint64_t cow_bytes;            /* classic LVM: COW space in bytes, or 0 */
  unsigned cow_percent;          /* classic LVM: % of the origin (1-100),
                                    when cow_bytes is 0; 0 = provider's
                                    default (20%, >= 64 MiB, <= origin)  */
  bool quiesce;                  /* freeze filesystems via the guest agent */
  const char *description;       /* more lines for <description>, or NULL */
};

/* ds_create's *done bits: what happened, for messages. */
#define DS_DONE_LIBVIRT   0x1    /* a libvirt snapshot was made          */
#define DS_DONE_LVM       0x2    /* at least one LVM snapshot was made   */
#define DS_DONE_PAUSED    0x4    /* the domain was paused meanwhile      */
#define DS_DONE_QUIESCED  0x8    /* filesystems were frozen and thawed:
                                    no VM state in the snapshot          */
#define DS_DONE_NO_AGENT  0x10   /* quiesce asked, no guest agent answered:
                                    the snapshot is crash-consistent      */
#define DS_DONE_MEMORY    0x20   /* the libvirt part holds VM state      */
#define DS_DONE_NOT_NEEDED 0x40  /* quiesce asked, nothing needed freezing
                                    (shut off): consistent as it is       */
#define DS_DONE_RBD       0x80   /* at least one RBD snapshot was made   */

/* The lock directory (see "Lock" above). */
#define DS_LOCK_DIR "/run/vmdiskfs"

/* One snapshot of a domain, as ds_list gives it (merged by shown name
 * over libvirt's snapshots and the LVM snapshots of the LV disks). */
#define DS_LIBVIRT   0x1         /* libvirt has a snapshot of this name  */
#define DS_LVM       0x2         /* at least one LV snapshot of this name */
#define DS_CURRENT   0x4         /* libvirt's current snapshot           */
#define DS_RBD       0x8         /* at least one RBD snapshot of this name */
struct ds_snap {
  char *name;                    /* shown name                           */
  int64_t ctime;                 /* creation time, seconds (the libvirt
                                    snapshot's, else the oldest LV's)     */
  unsigned flags;                /* DS_LIBVIRT DS_LVM DS_CURRENT         */
  enum ds_by by;                 /* who made it (DS_BY_OTHER: not us)    */
  char *state;                   /* libvirt's <state>: running shutoff
                                    paused disk-snapshot ...; NULL when
                                    there is no libvirt part              */
  size_t nlvm;                    /* LV snapshots in it                   */
  size_t nrbd;                    /* RBD snapshots in it                  */
};

/* The path of volume in storage pool (a <disk type='volume'>), malloc'd,
 * or NULL with libvirt's error set (the caller logs it). */
char *ds_volume_path (virConnectPtr c, const char *pool, const char *volume);

/* Is name acceptable for a new snapshot?  Not empty, at most 200 bytes,
 * valid UTF-8, no '/', no control characters, no double quote or
 * backslash (libvirt 9.0 passes the name to qemu's savevm unescaped: a
 * running domain's snapshot then has no internal snapshot at all), not
 * "." or "..", not starting with '-' or '.', not all digits (qemu takes
 * those for snapshot IDs). */
bool ds_valid_name (const char *name);

/* A default name for a new snapshot made at time t (local time):
 * "snap-YYYYMMDD-HHMMSS", malloc'd. */
char *ds_default_name (int64_t t);

int ds_create (virConnectPtr c, const char *domain, const char *name,
               const struct ds_create_opts *opts, unsigned *done);

/* Delete snapshot name of domain: the libvirt snapshot (its children are
 * kept, as virsh snapshot-delete does) with the internal snapshots of its
 * qcow2 disks (for one made by the own path of a running domain, libvirt
 * deletes only the metadata: the tags go by QMP
 * blockdev-snapshot-delete-internal-sync; shut off, by qemu-img snapshot
 * -d), and every LV snapshot of a disk of the domain shown as name.  Before deleting anything it
 * checks that every part can be found; a snapshot that exists only as a
 * qcow2 internal tag without libvirt metadata gives ENOTSUP (log: use
 * qemu-img snapshot -d).  ENOENT when there is no such snapshot. */
int ds_delete (virConnectPtr c, const char *domain, const char *name);

/* The snapshots of domain, sorted by ctime then name.  Free with
 * ds_list_free. */
int ds_list (virConnectPtr c, const char *domain, struct ds_snap **out,
             size_t *n);
void ds_list_free (struct ds_snap *v, size_t n);

#endif
