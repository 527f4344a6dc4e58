/* vmdiskfs - network disks (DESIGN.md, "Network disks"): Ceph RBD
 * (librbd), iSCSI LUNs (libiscsi) and NBD exports (libnbd) as vd_images,
 * like image files to everything above formats/.
 *
 * A network disk is named by a struct vd_netsrc, filled from a libvirt
 * <disk type='network'> (fs/, with the <auth> secret's value asked of
 * libvirt) or parsed from a URI (vd_net_parse: vd-cat, tests).  It is
 * always raw: the bytes the server serves are the disk.
 *
 * What every network driver does:
 * - errors of the server or the network: one log line naming the disk
 *   (vd_net_describe, never a secret), -1 with errno EIO for the request;
 *   the next request reconnects, with a backoff (0.1 s doubling up to 5 s
 *   between attempts; within the backoff, requests fail EIO at once);
 * - a server that does not answer: the request fails EIO after
 *   src->timeout_s seconds (default VD_NET_TIMEOUT_S), never a hung
 *   thread; reads of other disks go on meanwhile (requests of one image
 *   may run concurrently from many threads);
 * - img->remote is true (fs/loop.c never serves such reads in the thread
 *   that reads /dev/fuse), img->path is vd_net_describe's string,
 *   img->read_mode 0400 (credentials may stand behind it: root only),
 *   dev/ino 0;
 * - block_status: DATA for what may hold data (fd -1), ZERO or HOLE for
 *   what reads as zeros (NBD base:allocation, iSCSI GET LBA STATUS, RBD
 *   rbd_diff_iterate2); all DATA where the server cannot tell;
 * - VD_OPEN_RDWR: writes (and zero as discard/write-zeroes where the
 *   server supports it reading back as zeros), flush.
 *
 * RBD snapshots are the image's snapshots: list_snapshots (id: the snap
 * id in decimal, name, date from rbd_snap_get_timestamp, disk_size: the
 * size at the snapshot) and open_snapshot (read-only, by id or name).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_NETDISK_H
#define VD_NETDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vdformat.h"

#define VD_NET_TIMEOUT_S 30

enum vd_net_proto {
  VD_NET_NBD,
  VD_NET_ISCSI,
  VD_NET_RBD,
};

/* One <host> of a <source>. */
struct vd_net_host {
  char *name;         /* host name or address (NULL for a unix socket)   */
  char *port;         /* NULL: the protocol's default (NBD 10809, iSCSI
                         3260, RBD: ceph's mon default)                   */
  char *socket;       /* transport='unix': the socket's path; else NULL  */
};

struct vd_netsrc {
  enum vd_net_proto proto;
  /* <source name>: NBD: the export name (NULL: the default export);
   * iSCSI: "IQN/LUN" (LUN decimal; "IQN" alone: LUN 0); RBD:
   * "POOL/IMAGE" or "POOL/NAMESPACE/IMAGE". */
  char *name;
  struct vd_net_host *hosts;  /* NBD and iSCSI: the first is used; RBD:
                                 the monitors (NULL: from the config)  */
  size_t nhosts;
  char *user;         /* <auth username>: iSCSI CHAP user; RBD: the
                         ceph client id ("admin", not "client.admin")   */
  char *secret;       /* the secret's value: CHAP password, or the ceph
                         key as base64 text; NULL: none (RBD: from the
                         keyring the config names)                      */
  char *config;       /* RBD: a ceph.conf (<config file=>); NULL: ceph's
                         own search (/etc/ceph/ceph.conf ...)           */
  char *snapshot;     /* RBD: open this snapshot (read-only); NULL: the
                         image                                          */
  unsigned timeout_s; /* per request; 0: VD_NET_TIMEOUT_S               */
};

/* Open src.  flags: VD_OPEN_RDWR (writes), others ignored.  NULL with
 * errno (after a log line): EIO when the server cannot be reached or
 * refuses, ENOENT when it has no such export/LUN/image/snapshot, EACCES
 * for refused credentials, EBUSY (RBD, for writing) when another client
 * has the image open. */
struct vd_image *vd_net_open (const struct vd_netsrc *src, unsigned flags);

/* A printable name of src, without any secret: "nbd://HOST:PORT/EXPORT",
 * "nbd+unix:///EXPORT?socket=PATH", "iscsi://HOST:PORT/IQN/LUN",
 * "rbd:POOL/IMAGE[@SNAP]".  malloc'd, NULL when out of memory. */
char *vd_net_describe (const struct vd_netsrc *src);

/* Parse a URI into *src (zeroed first; free with vd_netsrc_clear):
 *   nbd://HOST[:PORT][/EXPORT][?timeout=SECONDS]
 *   nbd+unix:///[EXPORT]?socket=PATH[&timeout=SECONDS]
 *   iscsi://[USER[%PASSWORD]@]HOST[:PORT]/IQN/LUN[?timeout=SECONDS]
 *   rbd:POOL/IMAGE[@SNAP][:OPT=VALUE]...   OPT: mon_host (hosts
 *       separated by ';' or ','), conf, id, key, timeout; as in qemu's
 *       rbd: names, "\:" is a ':' inside a value (HOST\:PORT)
 * 0, or -1 with errno EINVAL (and a log line). */
int vd_net_parse (const char *uri, struct vd_netsrc *src);

/* Does name look like a URI vd_net_parse takes (its scheme)? */
bool vd_net_is_uri (const char *name);

void vd_netsrc_clear (struct vd_netsrc *src);
/* Deep copy; NULL with errno ENOMEM. */
struct vd_netsrc *vd_netsrc_dup (const struct vd_netsrc *src);
void vd_netsrc_free (struct vd_netsrc *src);
const char *vd_net_proto_name (enum vd_net_proto p);   /* "nbd" ...      */
/* The protocol of a libvirt protocol= value: 0, or -1 (not one of ours). */
int vd_net_proto_parse (const char *s, enum vd_net_proto *p);

/* The drivers (formats/nbd.c, iscsi.c, rbd.c): what vd_net_open calls,
 * desc being vd_net_describe (src) (the driver takes a copy). */
struct vd_image *vd_nbd_open (const struct vd_netsrc *src, unsigned flags,
                              const char *desc);
struct vd_image *vd_iscsi_open (const struct vd_netsrc *src, unsigned flags,
                                const char *desc);
struct vd_image *vd_rbd_open (const struct vd_netsrc *src, unsigned flags,
                              const char *desc);

/* RBD snapshots, by name, of the image src names (src->snapshot
 * ignored): create (EEXIST when the name is taken) and remove (ENOENT
 * when there is none; a protected snapshot: EBUSY).  0 or -1 with errno,
 * after a log line.  maker (NULL: none) is recorded with the snapshot in
 * the image's metadata (key vmdiskfs.snapshot-maker.NAME), removed with
 * it, and read back by vd_rbd_snap_maker: malloc'd, or NULL when none is
 * recorded (errno 0) or on error (errno, logged). */
int vd_rbd_snap_create (const struct vd_netsrc *src, const char *name,
                        const char *maker);
int vd_rbd_snap_remove (const struct vd_netsrc *src, const char *name);
char *vd_rbd_snap_maker (const struct vd_netsrc *src, const char *name);

#endif
