/* Unit test of snapshotter/domxml.c: the disks of a domain's XML, the facts of a
 * snapshot's XML, and the domain definition cut out of a snapshot's XML
 * (<inactiveDomain> preferred, renamed, de-indented), as libvirt 9 writes
 * them; what a disk is (domxml_disk_classify); and a domain's <os>
 * <loader> and <nvram> (domxml_parse_nvram).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domxml.h"
#include "test.h"

static int failures;

static int
eq (const char *a, const char *b)
{
  return a && b ? strcmp (a, b) == 0 : a == b;
}

static const char domain[] =
  "<domain type='kvm'>\n"
  "  <name>web</name>\n"
  "  <devices>\n"
  "    <disk type='file' device='disk'>\n"
  "      <driver name='qemu' type='qcow2'/>\n"
  "      <source file='/img/web.qcow2'/>\n"
  "      <backingStore type='file'><source file='/img/base.raw'/></backingStore>\n"
  "      <target dev='vda' bus='virtio'/>\n"
  "    </disk>\n"
  "    <disk type='volume' device='disk'>\n"
  "      <source pool='default' volume='db.img'/>\n"
  "      <target dev='vdb'/>\n"
  "    </disk>\n"
  "    <disk type='network' device='disk'>\n"
  "      <auth username='vmd'><secret type='ceph' uuid='u-1'/></auth>\n"
  "      <source protocol='rbd' name='pool/img'>\n"
  "        <host name='10.0.0.1' port='6789'/>\n"
  "        <host name='10.0.0.2'/>\n"
  "        <host transport='unix' socket='/run/s'/>\n"
  "        <config file='/etc/ceph/c.conf'/>\n"
  "        <snapshot name='snap1'/>\n"
  "      </source>\n"
  "      <target dev='vdc'/>\n"
  "    </disk>\n"
  "    <disk type='block' device='cdrom'>\n"
  "      <source dev='/dev/sr0'/>\n"
  "      <target dev='hdc'/>\n"
  "    </disk>\n"
  "  </devices>\n"
  "</domain>\n";

/* snapshot=, <readonly/> and <shareable/> of a domain's disks. */
static const char domain2[] =
  "<domain type='kvm'>\n"
  "  <devices>\n"
  "    <disk type='block' device='disk' snapshot='no'>\n"
  "      <source dev='/dev/loop3'/>\n"
  "      <target dev='vdb'/>\n"
  "    </disk>\n"
  "    <disk type='file' device='cdrom'>\n"
  "      <target dev='sda'/>\n"
  "      <readonly/>\n"
  "    </disk>\n"
  "    <disk type='file' device='disk'>\n"
  "      <source file='/img/shared.raw'/>\n"
  "      <target dev='vdc'/>\n"
  "      <shareable/>\n"
  "    </disk>\n"
  "  </devices>\n"
  "</domain>\n";

static const char snapshot[] =
  "<domainsnapshot>\n"
  "  <name>night/ly</name>\n"
  "  <description>vmdiskfs\nmore &amp; more</description>\n"
  "  <state>disk-snapshot</state>\n"
  "  <creationTime>1795675432</creationTime>\n"
  "  <disks>\n"
  "    <disk name='vda' snapshot='internal'/>\n"
  "    <disk name='vdb' snapshot='external'>\n"
  "      <source file='/img/db.over'/>\n"
  "    </disk>\n"
  "  </disks>\n"
  "  <inactiveDomain type='kvm'>\n"
  "    <name>web</name>\n"
  "    <devices>\n"
  "      <disk type='file' device='disk'>\n"
  "        <source file='/img/old.qcow2'/>\n"
  "        <target dev='vda'/>\n"
  "      </disk>\n"
  "    </devices>\n"
  "  </inactiveDomain>\n"
  "  <domain type='kvm'>\n"
  "    <name>web</name>\n"
  "  </domain>\n"
  "</domainsnapshot>\n";

/* <os><loader> and <os><nvram>: the text form, the storage source form
 * (file, block, network), none, and the pSeries <devices><nvram> that is
 * no variable store. */
static void
test_nvram (void)
{
  static const char text[] =
    "<domain type='qemu'><name>u</name>\n"
    "  <os>\n"
    "    <type arch='x86_64' machine='pc'>hvm</type>\n"
    "    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd"
    "</loader>\n"
    "    <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>\n"
    "      /var/lib/libvirt/qemu/nvram/u_VARS.fd\n"
    "    </nvram>\n"
    "  </os>\n"
    "  <devices><nvram><address type='spapr-vio' reg='0x3000'/></nvram>"
    "</devices>\n"
    "</domain>";
  static const char file[] =
    "<domain><name>u</name><os><nvram type='file' format='raw'>"
    "<source file='/img/u &amp; v_VARS.fd'/></nvram></os></domain>";
  static const char block[] =
    "<domain><name>u</name><os><nvram type='block'>"
    "<source dev='/dev/vg/u-vars'/></nvram></os></domain>";
  static const char net[] =
    "<domain><name>u</name><os><nvram type='network'>"
    "<source protocol='iscsi' name='iqn.x/1'/></nvram></os></domain>";
  static const char none[] =
    "<domain><name>u</name><os><nvram/></os>"
    "<devices><nvram>/not/this</nvram></devices></domain>";
  static const char efi[] =
    "<domain><name>u</name><os firmware='efi'><type>hvm</type></os>"
    "</domain>";
  struct domxml_nvram nv;

  CHECK (domxml_parse_nvram (text, strlen (text), &nv) == 0);
  CHECK (eq (nv.path, "/var/lib/libvirt/qemu/nvram/u_VARS.fd"));
  CHECK (nv.type == NULL && nv.format == NULL);
  CHECK (eq (nv.template, "/usr/share/OVMF/OVMF_VARS.fd"));
  CHECK (eq (nv.loader, "/usr/share/OVMF/OVMF_CODE.fd"));
  CHECK (eq (nv.loader_type, "pflash"));
  domxml_nvram_clear (&nv);
  CHECK (nv.path == NULL && nv.loader == NULL);

  CHECK (domxml_parse_nvram (file, strlen (file), &nv) == 0);
  CHECK (eq (nv.type, "file") && eq (nv.path, "/img/u & v_VARS.fd"));
  CHECK (eq (nv.format, "raw") && nv.loader == NULL);
  domxml_nvram_clear (&nv);
  CHECK (domxml_parse_nvram (block, strlen (block), &nv) == 0);
  CHECK (eq (nv.type, "block") && eq (nv.path, "/dev/vg/u-vars"));
  domxml_nvram_clear (&nv);
  CHECK (domxml_parse_nvram (net, strlen (net), &nv) == 0);
  CHECK (eq (nv.type, "network") && nv.path == NULL);
  domxml_nvram_clear (&nv);
  CHECK (domxml_parse_nvram (none, strlen (none), &nv) == 0);
  CHECK (nv.path == NULL && nv.type == NULL && nv.loader == NULL);
  CHECK (nv.firmware == NULL);
  domxml_nvram_clear (&nv);
  CHECK (domxml_parse_nvram (efi, strlen (efi), &nv) == 0);
  CHECK (eq (nv.firmware, "efi") && nv.path == NULL && nv.loader == NULL);
  domxml_nvram_clear (&nv);
  /* The domain without <os> of the tests above. */
  CHECK (domxml_parse_nvram (domain, strlen (domain), &nv) == 0);
  CHECK (nv.path == NULL && nv.loader == NULL);
  domxml_nvram_clear (&nv);

  CHECK (domxml_parse_nvram ("<domain", 7, &nv) < 0);
  CHECK (domxml_parse_nvram (snapshot, strlen (snapshot), &nv) < 0);
  CHECK (nv.path == NULL);
}

int
main (void)
{
  struct domxml_disk *d;
  struct domxml_snapshot s;
  size_t n, len;
  char *t;

  domxml_init ();

  CHECK (domxml_parse_domain (domain, strlen (domain), &d, &n) == 0);
  CHECK (n == 4);
  if (n == 4) {
    CHECK (eq (d[0].type, "file") && eq (d[0].device, "disk"));
    CHECK (eq (d[0].driver_type, "qcow2") && eq (d[0].target, "vda"));
    CHECK (eq (d[0].source, "/img/web.qcow2"));   /* not the backing one */
    CHECK (eq (d[1].pool, "default") && eq (d[1].volume, "db.img"));
    CHECK (d[1].source == NULL && d[1].driver_type == NULL);
    CHECK (eq (d[2].protocol, "rbd") && eq (d[2].name, "pool/img"));
    CHECK (eq (d[3].device, "cdrom") && eq (d[3].source, "/dev/sr0"));
    CHECK (d[0].snapshot == NULL && !d[0].readonly && !d[0].shareable);
  }
  domxml_disks_free (d, n);

  CHECK (domxml_parse_domain (domain2, strlen (domain2), &d, &n) == 0);
  CHECK (n == 3);
  if (n == 3) {
    CHECK (eq (d[0].snapshot, "no") && eq (d[0].source, "/dev/loop3"));
    CHECK (!d[0].readonly && !d[0].shareable);
    CHECK (d[1].readonly && !d[1].shareable && d[1].snapshot == NULL);
    CHECK (eq (d[1].device, "cdrom") && d[1].source == NULL);
    CHECK (!d[2].readonly && d[2].shareable);
  }
  domxml_disks_free (d, n);

  /* Classification: one function for fs/ and domsnap. */
  CHECK (domxml_parse_domain (domain, strlen (domain), &d, &n) == 0);
  CHECK (n == 4);
  if (n == 4) {
    struct domxml_class c;

    domxml_disk_classify (&d[0], &c);          /* qcow2 file */
    CHECK (c.is_disk && c.src == DOMXML_SRC_FILE && eq (c.type, "file"));
    CHECK (eq (c.path, "/img/web.qcow2") && eq (c.format, "qcow2"));
    CHECK (c.has_source && c.written && !c.left_out && !c.snapshot_no);
    CHECK (c.qcow2 && !c.lvm_candidate);

    domxml_disk_classify (&d[1], &c);          /* raw volume: LVM? */
    CHECK (c.is_disk && c.src == DOMXML_SRC_VOLUME && c.path == NULL);
    CHECK (eq (c.format, "raw") && !c.qcow2 && c.lvm_candidate);
    CHECK (c.has_source && c.written);

    domxml_disk_classify (&d[2], &c);          /* network */
    CHECK (c.is_disk && c.src == DOMXML_SRC_NETWORK && c.path == NULL);
    CHECK (eq (d[2].protocol, "rbd") && eq (d[2].name, "pool/img"));
    CHECK (d[2].nhosts == 3 && eq (d[2].hosts[0].name, "10.0.0.1")
           && eq (d[2].hosts[0].port, "6789")
           && eq (d[2].hosts[1].name, "10.0.0.2") && !d[2].hosts[1].port
           && eq (d[2].hosts[2].transport, "unix")
           && eq (d[2].hosts[2].socket, "/run/s") && !d[2].hosts[2].name);
    CHECK (eq (d[2].auth_user, "vmd") && eq (d[2].secret_type, "ceph")
           && eq (d[2].secret_uuid, "u-1") && !d[2].secret_usage);
    CHECK (eq (d[2].config_file, "/etc/ceph/c.conf")
           && eq (d[2].src_snapshot, "snap1"));
    CHECK (eq (c.type, "network") && c.has_source && c.written);
    CHECK (!c.qcow2 && !c.lvm_candidate);

    domxml_disk_classify (&d[3], &c);          /* cdrom */
    CHECK (!c.is_disk && c.src == DOMXML_SRC_BLOCK);
    CHECK (eq (c.path, "/dev/sr0") && c.lvm_candidate);
  }
  domxml_disks_free (d, n);
  CHECK (domxml_parse_domain (domain2, strlen (domain2), &d, &n) == 0);
  CHECK (n == 3);
  if (n == 3) {
    struct domxml_class c;

    domxml_disk_classify (&d[0], &c);          /* block, snapshot='no' */
    CHECK (c.is_disk && c.src == DOMXML_SRC_BLOCK && c.written);
    CHECK (c.snapshot_no && c.left_out && c.lvm_candidate);
    CHECK (eq (c.path, "/dev/loop3"));

    domxml_disk_classify (&d[1], &c);          /* empty read-only cdrom */
    CHECK (!c.is_disk && !c.has_source && !c.written && c.path == NULL);

    domxml_disk_classify (&d[2], &c);          /* shareable raw file */
    CHECK (c.is_disk && c.written && c.left_out && !c.snapshot_no);
    CHECK (!c.qcow2 && !c.lvm_candidate && eq (c.format, "raw"));
  }
  domxml_disks_free (d, n);
  {
    /* No type: a file; read-only with a source: not written. */
    struct domxml_disk x = { .source = (char *) "/img/a", .readonly = true,
      .driver_type = (char *) "raw" };
    struct domxml_class c;

    domxml_disk_classify (&x, &c);
    CHECK (c.is_disk && c.src == DOMXML_SRC_FILE && eq (c.type, "file"));
    CHECK (c.has_source && !c.written && eq (c.path, "/img/a"));
    CHECK (!c.lvm_candidate);
  }

  CHECK (domxml_parse_domain ("<domain", 7, &d, &n) < 0);
  CHECK (domxml_parse_domain (snapshot, strlen (snapshot), &d, &n) < 0);

  CHECK (domxml_parse_snapshot (snapshot, strlen (snapshot), &s) == 0);
  CHECK (eq (s.name, "night/ly"));
  CHECK (s.creation_time == 1795675432);
  CHECK (eq (s.state, "disk-snapshot"));
  CHECK (eq (s.description, "vmdiskfs\nmore & more"));
  CHECK (s.nsnapdisks == 2);
  if (s.nsnapdisks == 2) {
    CHECK (eq (s.snapdisks[0].target, "vda"));
    CHECK (eq (s.snapdisks[0].snapshot, "internal"));
    CHECK (eq (s.snapdisks[1].snapshot, "external"));
    CHECK (eq (s.snapdisks[1].source, "/img/db.over"));
  }
  /* The disks of <inactiveDomain>, not of <domain>. */
  CHECK (s.ndisks == 1 && eq (s.disks[0].source, "/img/old.qcow2"));
  domxml_snapshot_clear (&s);

  {
    static const char bare[] = "<domainsnapshot><name>x</name>"
      "</domainsnapshot>";
    CHECK (domxml_parse_snapshot (bare, strlen (bare), &s) == 0);
    CHECK (eq (s.name, "x") && s.state == NULL && s.description == NULL);
    domxml_snapshot_clear (&s);
  }

  t = domxml_snapshot_domain (snapshot, strlen (snapshot), &len);
  CHECK (t != NULL);
  if (t) {
    static const char want[] =
      "<domain type='kvm'>\n"
      "  <name>web</name>\n"
      "  <devices>\n"
      "    <disk type='file' device='disk'>\n"
      "      <source file='/img/old.qcow2'/>\n"
      "      <target dev='vda'/>\n"
      "    </disk>\n"
      "  </devices>\n"
      "</domain>\n";
    CHECK (len == strlen (want) && memcmp (t, want, len) == 0);
    if (len != strlen (want) || memcmp (t, want, len) != 0)
      fprintf (stderr, "got:\n%.*s", (int) len, t);
    free (t);
  }
  t = domxml_snapshot_domain (domain, strlen (domain), &len);
  CHECK (t == NULL);

  test_nvram ();

  if (failures)
    return 1;
  printf ("ok: domxml\n");
  return 0;
}
