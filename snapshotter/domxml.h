/* vmdiskfs - reading <disk> elements and snapshot facts out of libvirt's
 * domain and snapshot XML (libxml2), for tree-libvirt.c and domsnap, and
 * what a disk is (domxml_disk_classify).
 *
 * The XML comes from libvirtd, possibly over the network (qemu+ssh://):
 * treated as untrusted bytes, fuzzed by tests/fuzz/fuzz-domxml.c.
 *
 * Threads: no shared state; libxml2 is initialised once by domxml_init.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_DOMXML_H
#define VD_DOMXML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One <disk> of <devices>, or of a snapshot's <disks>.  Missing
 * attributes are NULL. */
struct domxml_disk {
  char *type;         /* file block volume network dir nvme ...          */
  char *device;       /* disk cdrom floppy lun; "disk" when absent       */
  char *driver_type;  /* <driver type>: raw qcow2 qed ...                */
  char *target;       /* <target dev>; in a snapshot's <disks>: name=    */
  char *source;       /* <source file> or <source dev> (or dir)          */
  char *pool;         /* <source pool volume> (type volume)              */
  char *volume;
  char *protocol;     /* <source protocol name> (type network)           */
  char *name;
  char *snapshot;     /* snapshot= of the <disk>: internal external no
                         manual (snapshot's <disks>, and a domain's disks) */
  /* <backingStore> chain (a domain's disks): the <source file|dev> of
   * each level, top's backing file first, as far as levels with such a
   * source go; backing_end when the chain ends with an empty
   * <backingStore/> ("no backing file here"). */
  char **backing;
  size_t nbacking;
  bool backing_end;
  bool readonly;      /* <readonly/> (a domain's disks)                  */
  bool shareable;     /* <shareable/> (a domain's disks)                 */
  /* type network (a domain's disks), besides protocol and name:
   *   <source protocol='rbd' name='pool/image'>
   *     <host name='mon1' port='6789'/> ... or
   *     <host transport='unix' socket='/run/nbd.sock'/>
   *     <snapshot name='s1'/>  <config file='/etc/ceph/ceph.conf'/>
   *     <auth username='libvirt'>   (here or as a child of <disk>)
   *       <secret type='ceph' uuid='...'/>  or  usage='...'
   *   </source> */
  struct domxml_host *hosts;
  size_t nhosts;
  char *auth_user;    /* <auth username>                                 */
  char *secret_type;  /* <secret type>: ceph iscsi ...                   */
  char *secret_uuid;  /* <secret uuid>, or NULL                          */
  char *secret_usage; /* <secret usage>, or NULL                         */
  char *config_file;  /* <config file> (rbd)                             */
  char *src_snapshot; /* <snapshot name> (rbd)                           */
};

struct domxml_host {
  char *name;
  char *port;
  char *transport;    /* tcp (NULL) unix rdma                            */
  char *socket;       /* transport unix                                  */
};

/* A <domainsnapshot>. */
struct domxml_snapshot {
  char *name;
  int64_t creation_time;          /* <creationTime>, 0 when absent       */
  struct domxml_disk *snapdisks;  /* <disks><disk name= snapshot=>       */
  size_t nsnapdisks;
  struct domxml_disk *disks;      /* the <devices> of the domain stored  */
  size_t ndisks;                  /* with it (<inactiveDomain> first)    */
  char *state;                    /* <state>: running shutoff paused
                                     disk-snapshot ...; NULL when absent */
  char *description;              /* <description>, NULL when absent     */
};

/* What a <disk> is, from its XML alone: the one classification behind
 * fs/ (which disks are shown, read from where, in which format) and
 * domsnap (which disks a snapshot takes, and how).  Nothing is asked of
 * libvirt or LVM: a type='volume' disk's path must be asked of its pool
 * (ds_volume_path), and whether a raw block or volume disk is a logical
 * volume, of LVM (lvm_snapshotter.list). */
enum domxml_src {
  DOMXML_SRC_FILE,    /* type file (or no type): source is the path     */
  DOMXML_SRC_BLOCK,   /* type block: source is the path                 */
  DOMXML_SRC_VOLUME,  /* type volume: pool and volume name the path     */
  DOMXML_SRC_NETWORK, /* type network with a protocol: protocol, name,
                         hosts ... name it (formats/netdisk.h)          */
  DOMXML_SRC_OTHER,   /* dir, nvme ...: no path on this host            */
};
struct domxml_class {
  bool is_disk;       /* device 'disk' (or no device): not cdrom, floppy,
                         lun                                              */
  enum domxml_src src;
  const char *type;   /* d->type, "file" when absent                     */
  const char *format; /* d->driver_type, "raw" when absent               */
  const char *path;   /* file and block: d->source (NULL without one);
                         NULL for the others                              */
  bool has_source;    /* a source of any kind (file, dev, volume, name)  */
  bool written;       /* has_source and not <readonly/>: the guest writes
                         it (a snapshot takes it unless left out)         */
  bool snapshot_no;   /* snapshot='no'                                   */
  bool left_out;      /* <shareable/> or snapshot_no: never snapshotted  */
  bool qcow2;         /* format qcow2: internal snapshots                */
  bool lvm_candidate; /* raw, of type block or volume: a logical volume
                         when LVM knows its path                          */
};
void domxml_disk_classify (const struct domxml_disk *d,
                           struct domxml_class *c);

/* A domain's UEFI variable store, from its <os>:
 *
 *   <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
 *   <nvram template='...'>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram>
 *
 * or, libvirt >= 8.5 (Debian 12's 9.0 schema has it), a storage source
 * as a disk's:
 *
 *   <nvram type='file'><source file='/.../web_VARS.fd'/></nvram>
 *   <nvram type='block'><source dev='/dev/vg/web-vars'/></nvram>
 *
 * Missing parts are NULL. */
struct domxml_nvram {
  char *type;         /* type=: file block network ...; NULL: the text form */
  char *path;         /* the text, <source file>, or <source dev>; NULL:
                         no <nvram>, an empty one, or a network source   */
  char *format;       /* format= (libvirt >= 9.2): raw qcow2             */
  char *template;     /* template=: what libvirt copies at first start  */
  char *loader;       /* <loader> text: the firmware                     */
  char *loader_type;  /* <loader type>: rom pflash                       */
  char *firmware;     /* <os firmware>: efi bios (libvirt chooses the
                         firmware at start; an efi one without <nvram>
                         has its store at libvirt's default path)        */
};

void domxml_init (void);
/* The <disk> elements of a <domain> document.  0, or -1 with errno
 * (EINVAL: not well-formed or not a domain). */
int domxml_parse_domain (const char *xml, size_t len,
                         struct domxml_disk **disks, size_t *n);
int domxml_parse_snapshot (const char *xml, size_t len,
                           struct domxml_snapshot *snap);
/* The domain definition stored in a snapshot's XML, as a document of its
 * own, byte for byte as libvirt wrote it but for the indentation of the
 * nesting and, for <inactiveDomain>, the element's name: malloc'd, or
 * NULL with errno (ENOENT: none). */
char *domxml_snapshot_domain (const char *xml, size_t len, size_t *outlen);
/* The <os><loader> and <os><nvram> of a <domain> document (not the
 * pSeries <devices><nvram>).  0 (nv all NULL without them), or -1 with
 * errno (EINVAL: not well-formed or not a domain; ENOMEM). */
int domxml_parse_nvram (const char *xml, size_t len,
                        struct domxml_nvram *nv);
void domxml_nvram_clear (struct domxml_nvram *nv);
void domxml_disks_free (struct domxml_disk *disks, size_t n);
void domxml_snapshot_clear (struct domxml_snapshot *snap);

#endif
