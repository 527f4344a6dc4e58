/* vmdiskfs - unit test of the libvirt provider's model (fs/libvirt-scan.c):
 * a domain's XML, libvirt's snapshots, the images' own snapshot tables
 * (real qcow2 images made by qemu-img) and LVM's answer to the disks and
 * snapshot directories the provider shows, with no libvirt connection;
 * a domain's NVRAM (nvram.fd) and where a restore may create one.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "test.h"

static int failures;
static char dir[] = "/tmp/vd-test-scan-XXXXXX";

static int
eq (const char *a, const char *b)
{
  return a && b ? strcmp (a, b) == 0 : a == b;
}

static void
run (const char *fmt, const char *arg)
{
  char cmd[512];

  snprintf (cmd, sizeof cmd, fmt, arg, arg);
  if (system (cmd) != 0) {
    fprintf (stderr, "FAIL: %s\n", cmd);
    exit (1);
  }
}

static struct virt_snap *
snap (const char *name, const char *xml)
{
  struct virt_snap *s = calloc (1, sizeof *s);

  REQUIRE (s != NULL);
  s->name = strdup (name);
  s->xml = scan_virsh_blob (xml, strlen (xml));
  REQUIRE (s->name && s->xml);
  return s;
}

static const struct snap_scan *
find_snap (const struct build *b, const char *ename)
{
  size_t i;

  for (i = 0; i < b->nsnaps; i++)
    if (strcmp (b->snaps[i].ename, ename) == 0)
      return &b->snaps[i];
  return NULL;
}

static const struct disk_scan *
find_disk (const struct disk_scan *v, size_t n, const char *fname)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp (v[i].fname, fname) == 0)
      return &v[i];
  return NULL;
}

/* The domain: a qcow2 disk with internal snapshots, a raw one, a volume
 * (no connection: no source), a missing file, a CD-ROM (not shown), an
 * rbd disk (no connection: no source) and an http one (not shown). */
static char *
domain_xml (void)
{
  char *x;

  REQUIRE (asprintf (&x,
    "<domain type='kvm'>\n"
    "  <name>web</name>\n"
    "  <devices>\n"
    "    <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='qcow2'/>\n"
    "      <source file='%s/vda.qcow2'/>\n"
    "      <target dev='vda'/>\n"
    "    </disk>\n"
    "    <disk type='file' device='disk'>\n"
    "      <source file='%s/vdb.raw'/>\n"
    "      <target dev='vdb'/>\n"
    "    </disk>\n"
    "    <disk type='volume' device='disk'>\n"
    "      <source pool='default' volume='db.img'/>\n"
    "      <target dev='vdc'/>\n"
    "    </disk>\n"
    "    <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='qcow2'/>\n"
    "      <source file='%s/missing.qcow2'/>\n"
    "      <target dev='vdd'/>\n"
    "    </disk>\n"
    "    <disk type='file' device='cdrom'>\n"
    "      <source file='%s/vdb.raw'/>\n"
    "      <target dev='hdc'/>\n"
    "    </disk>\n"
    "    <disk type='network' device='disk'>\n"
    "      <source protocol='rbd' name='pool/img'/>\n"
    "      <target dev='vde'/>\n"
    "    </disk>\n"
    "    <disk type='network' device='disk'>\n"
    "      <source protocol='http' name='/x.img'><host name='h'/></source>\n"
    "      <target dev='vdf'/>\n"
    "    </disk>\n"
    "  </devices>\n"
    "</domain>", dir, dir, dir, dir) >= 0);
  return x;
}

/* libvirt's snapshot s1: vda internal, vdb not taken. */
static char *
snapshot_xml (void)
{
  char *x;

  REQUIRE (asprintf (&x,
    "<domainsnapshot>\n"
    "  <name>s1</name>\n"
    "  <creationTime>1700000000</creationTime>\n"
    "  <disks>\n"
    "    <disk name='vda' snapshot='internal'/>\n"
    "    <disk name='vdb' snapshot='no'/>\n"
    "  </disks>\n"
    "  <domain type='kvm'>\n"
    "    <name>web</name>\n"
    "    <devices>\n"
    "      <disk type='file' device='disk'>\n"
    "        <driver name='qemu' type='qcow2'/>\n"
    "        <source file='%s/vda.qcow2'/>\n"
    "        <target dev='vda'/>\n"
    "      </disk>\n"
    "    </devices>\n"
    "  </domain>\n"
    "</domainsnapshot>", dir) >= 0);
  return x;
}

static void
test_domain (void)
{
  CLEANUP_FREE char *dx = domain_xml (), *sx = snapshot_xml ();
  struct build b = { .dname = "web", .log = true };
  struct domxml_disk *cur = NULL;
  struct virt_snap *s1 = snap ("s1", sx);
  const struct disk_scan *d;
  const struct snap_scan *ss;
  size_t ncur = 0;

  REQUIRE (domxml_parse_domain (dx, strlen (dx), &cur, &ncur) == 0);
  REQUIRE (scan_domain (&b, cur, ncur, true, s1, 1) == 0);

  /* The current disks: vda, vdb, vdc without source, vdd missing, vde
   * without source. */
  CHECK (b.ndisks == 5);
  d = find_disk (b.disks, b.ndisks, "vda.img");
  REQUIRE (d != NULL);
  CHECK (eq (d->format, "qcow2") && d->err == 0 && d->live);
  CHECK (d->size == 16 << 20);
  CHECK (d->snap_id == NULL && d->have_st);
  CHECK (d->read_mode == (d->st.st_mode & 0444));
  d = find_disk (b.disks, b.ndisks, "vdb.img");
  REQUIRE (d != NULL);
  CHECK (eq (d->format, "raw") && d->err == 0 && d->size == 4 << 20);
  d = find_disk (b.disks, b.ndisks, "vdc.img");
  REQUIRE (d != NULL);
  CHECK (d->path == NULL && d->err == EIO);
  d = find_disk (b.disks, b.ndisks, "vdd.img");
  REQUIRE (d != NULL);
  CHECK (d->path != NULL && d->err == EIO && !d->have_st && d->size == 0);
  CHECK (find_disk (b.disks, b.ndisks, "hdc.img") == NULL);
  d = find_disk (b.disks, b.ndisks, "vde.img");
  REQUIRE (d != NULL);
  CHECK (d->path == NULL && d->net == NULL && d->err == EIO);
  CHECK (find_disk (b.disks, b.ndisks, "vdf.img") == NULL);

  /* libvirt's s1, then the qcow2 snapshots libvirt does not know: the
   * first "tagonly" as is, the second with its id. */
  CHECK (b.nsnaps == 3);
  ss = find_snap (&b, "s1");
  REQUIRE (ss != NULL);
  CHECK (ss == &b.snaps[0]);
  CHECK (eq (ss->name, "s1") && ss->sec == 1700000000);
  CHECK (ss->snapxml != NULL && ss->domxml != NULL);
  CHECK (ss->ndisks == 1);
  d = find_disk (ss->disks, ss->ndisks, "vda.img");
  REQUIRE (d != NULL);
  CHECK (eq (d->snap_id, "1") && !d->live && d->size == 16 << 20);
  CHECK (d->sec == 1700000000);
  ss = find_snap (&b, "tagonly");
  REQUIRE (ss != NULL);
  CHECK (eq (ss->name, "tagonly") && ss->snapxml == NULL);
  CHECK (ss->sec > 1600000000);
  CHECK (ss->ndisks == 1 && eq (ss->disks[0].snap_id, "2"));
  CHECK (eq (ss->disks[0].fname, "vda.img"));
  ss = find_snap (&b, "tagonly (id 3)");
  REQUIRE (ss != NULL);
  CHECK (ss->ndisks == 1 && eq (ss->disks[0].snap_id, "3"));
  CHECK (!b.on_lvm);

  /* LVM's answer for vdb: merged with s1 by name, a thin one to
   * activate, an invalid one shown empty. */
  {
    CLEANUP_FREE char *dev = NULL;
    struct snap_info si[3] = {
      { .name = (char *) "s1", .id = (char *) "vg/vdb-s1",
        .ctime_sec = 1700000100, .size = 4 << 20 },
      { .name = (char *) "thin", .id = (char *) "vg/vdb-thin",
        .device = (char *) "/dev/vg/vdb-thin", .ctime_sec = 1700000200,
        .size = 4 << 20, .flags = SNAP_NEEDS_ACTIVATION },
      { .name = (char *) "bad", .id = (char *) "vg/vdb-bad",
        .device = (char *) "/dev/vg/vdb-bad", .size = 4 << 20,
        .flags = SNAP_INVALID },
    };
    struct snap_list l = { .snaps = si, .n = 3 };
    struct snap_info dup = {
      .name = (char *) "tagonly", .id = (char *) "vg/vda-tagonly",
      .device = (char *) "/dev/vg/vda-tagonly", .size = 1,
    };
    struct snap_list l2 = { .snaps = &dup, .n = 1 };

    REQUIRE (asprintf (&dev, "%s/vdb.raw", dir) >= 0);
    si[0].device = dev;
    CHECK (scan_lvm_snapshots (&b, "vdb.img", "/dev/vg/vdb", NULL,
                               ENOTSUP) == 0);
    CHECK (!b.on_lvm && b.nsnaps == 3);
    CHECK (scan_lvm_snapshots (&b, "vdb.img", "/dev/vg/vdb", &l, 0) == 0);
    CHECK (b.on_lvm);
    CHECK (b.nsnaps == 5);
    ss = find_snap (&b, "s1");
    REQUIRE (ss != NULL);
    CHECK (ss->ndisks == 2);
    d = find_disk (ss->disks, ss->ndisks, "vdb.img");
    REQUIRE (d != NULL);
    CHECK (eq (d->format, "raw") && eq (d->path, dev) && d->lvm_id == NULL);
    CHECK (d->have_st && d->size == 4 << 20 && d->err == 0);
    CHECK (d->sec == 1700000000);       /* the directory's time */
    ss = find_snap (&b, "thin");
    REQUIRE (ss != NULL);
    CHECK (ss->name == NULL && ss->sec == 1700000200 && ss->ndisks == 1);
    CHECK (eq (ss->disks[0].lvm_id, "vg/vdb-thin"));
    CHECK (ss->disks[0].lvm_flags == SNAP_NEEDS_ACTIVATION);
    CHECK (!ss->disks[0].have_st);
    ss = find_snap (&b, "bad");
    REQUIRE (ss != NULL);
    CHECK (ss->disks[0].err == EIO && ss->disks[0].size == 0);

    /* A name whose directory has that disk already: not shown. */
    CHECK (scan_lvm_snapshots (&b, "vda.img", "/dev/vg/vda", &l2, 0) == 0);
    ss = find_snap (&b, "tagonly");
    REQUIRE (ss != NULL);
    CHECK (ss->ndisks == 1 && eq (ss->disks[0].snap_id, "2"));
  }

  scan_free (&b);
  domxml_disks_free (cur, ncur);
  virt_snaps_free (s1, 1);
}

/* A disk inside our own mount is not opened (ELOOP, shown with EIO). */
/* Snapshots of one definition share one domain.xml blob, whether the
 * previous snapshot had it (compared before compressing) or an earlier
 * one; another definition gets its own bytes. */
static void
test_shared_domxml (void)
{
  CLEANUP_FREE char *dx = domain_xml ();
  static const char *const names[] = { "a", "b", "c", "d" };
  static const char *const defs[] = { "web", "web", "other", "web" };
  struct build b = { .dname = "web", .log = false };
  struct domxml_disk *cur = NULL;
  struct virt_snap *v = calloc (4, sizeof *v);
  struct fs_blob *p;
  size_t ncur = 0, i;

  REQUIRE (v != NULL);
  REQUIRE (domxml_parse_domain (dx, strlen (dx), &cur, &ncur) == 0);
  for (i = 0; i < 4; i++) {
    CLEANUP_FREE char *x = NULL;
    REQUIRE (asprintf (&x,
      "<domainsnapshot>\n"
      "  <name>%s</name>\n"
      "  <creationTime>1700000000</creationTime>\n"
      "  <domain type='kvm'>\n"
      "    <name>%s</name>\n"
      "    <devices>\n"
      "      <disk type='file' device='disk'>\n"
      "        <driver name='qemu' type='raw'/>\n"
      "        <source file='%s/vdb.raw'/>\n"
      "        <target dev='vdb'/>\n"
      "      </disk>\n"
      "    </devices>\n"
      "  </domain>\n"
      "</domainsnapshot>", names[i], defs[i], dir) >= 0);
    v[i].name = strdup (names[i]);
    v[i].xml = scan_virsh_blob (x, strlen (x));
    REQUIRE (v[i].name && v[i].xml);
  }
  REQUIRE (scan_domain (&b, cur, ncur, false, v, 4) == 0);
  REQUIRE (b.nsnaps >= 4);
  for (i = 0; i < 4; i++)
    REQUIRE (eq (b.snaps[i].name, names[i]) && b.snaps[i].domxml);
  CHECK (b.snaps[1].domxml == b.snaps[0].domxml);
  CHECK (b.snaps[2].domxml != b.snaps[0].domxml);
  CHECK (b.snaps[3].domxml == b.snaps[0].domxml);
  p = fs_blob_plain (b.snaps[2].domxml);
  REQUIRE (p != NULL);
  CHECK (strstr (p->data, "<name>other</name>") != NULL
         && strncmp (p->data, "<domain type='kvm'>", 19) == 0
         && p->data[p->len - 1] == '\n');
  fs_blob_unref (p);
  p = fs_blob_plain (b.snaps[1].domxml);
  REQUIRE (p != NULL);
  CHECK (strstr (p->data, "<name>web</name>") != NULL);
  fs_blob_unref (p);
  scan_free (&b);
  domxml_disks_free (cur, ncur);
  virt_snaps_free (v, 4);
}

static void
test_inside_mount (void)
{
  CLEANUP_FREE char *dx = domain_xml ();
  struct build b = { .dname = "web", .log = false };
  struct domxml_disk *cur = NULL;
  const struct disk_scan *d;
  size_t ncur = 0;

  fs_config.mountpoint = dir;
  CHECK (scan_inside_mount (dir));
  CHECK (!scan_inside_mount ("/nowhere/vda.qcow2"));
  REQUIRE (domxml_parse_domain (dx, strlen (dx), &cur, &ncur) == 0);
  REQUIRE (scan_domain (&b, cur, ncur, false, NULL, 0) == 0);
  d = find_disk (b.disks, b.ndisks, "vda.img");
  REQUIRE (d != NULL);
  CHECK (d->err == EIO && !d->live);
  CHECK (b.nimgs >= 1 && b.imgs[0].err == ELOOP);
  CHECK (b.nsnaps == 0);
  fs_config.mountpoint = NULL;
  scan_free (&b);
  domxml_disks_free (cur, ncur);
}

/* The kinds of <disk> domxml_disk_classify tells apart, as the tree
 * shows them: every device='disk' (or no device) with a file, block or
 * volume source, snapshot='no', <readonly/> and <shareable/> included
 * (those only matter to domsnap); no floppy, LUN or dir disk. */
static void
test_disk_kinds (void)
{
  CLEANUP_FREE char *dx = NULL;
  struct build b = { .dname = "kinds", .log = true };
  struct domxml_disk *cur = NULL;
  const struct disk_scan *d;
  size_t ncur = 0;

  REQUIRE (asprintf (&dx,
    "<domain type='kvm'>\n"
    "  <name>kinds</name>\n"
    "  <devices>\n"
    "    <disk type='file' device='disk' snapshot='no'>\n"
    "      <source file='%s/vdb.raw'/>\n"
    "      <target dev='vdf'/>\n"
    "      <readonly/>\n"
    "      <shareable/>\n"
    "    </disk>\n"
    "    <disk>\n"
    "      <source file='%s/vdb.raw'/>\n"
    "      <target dev='vdg'/>\n"
    "    </disk>\n"
    "    <disk type='block' device='disk'>\n"
    "      <driver name='qemu' type='raw'/>\n"
    "      <source dev='%s/vdb.raw'/>\n"
    "      <target dev='vdh'/>\n"
    "    </disk>\n"
    "    <disk type='file' device='disk'>\n"
    "      <target dev='vdi'/>\n"
    "    </disk>\n"
    "    <disk type='volume' device='disk'>\n"
    "      <source volume='db.img'/>\n"
    "      <target dev='vdj'/>\n"
    "    </disk>\n"
    "    <disk type='block' device='lun'>\n"
    "      <source dev='%s/vdb.raw'/>\n"
    "      <target dev='sda'/>\n"
    "    </disk>\n"
    "    <disk type='file' device='floppy'>\n"
    "      <source file='%s/vdb.raw'/>\n"
    "      <target dev='fda'/>\n"
    "    </disk>\n"
    "    <disk type='dir' device='disk'>\n"
    "      <source dir='%s'/>\n"
    "      <target dev='vdk'/>\n"
    "    </disk>\n"
    "    <disk type='file' device='disk'>\n"
    "      <source file='%s/vdb.raw'/>\n"
    "    </disk>\n"
    "  </devices>\n"
    "</domain>", dir, dir, dir, dir, dir, dir, dir) >= 0);
  REQUIRE (domxml_parse_domain (dx, strlen (dx), &cur, &ncur) == 0);
  REQUIRE (scan_domain (&b, cur, ncur, false, NULL, 0) == 0);

  CHECK (b.ndisks == 5);
  d = find_disk (b.disks, b.ndisks, "vdf.img");
  REQUIRE (d != NULL);
  CHECK (eq (d->format, "raw") && d->err == 0 && d->size == 4 << 20);
  d = find_disk (b.disks, b.ndisks, "vdg.img");
  REQUIRE (d != NULL);
  CHECK (eq (d->format, "raw") && d->err == 0 && d->size == 4 << 20);
  d = find_disk (b.disks, b.ndisks, "vdh.img");
  REQUIRE (d != NULL);
  CHECK (eq (d->format, "raw") && d->err == 0 && d->size == 4 << 20);
  d = find_disk (b.disks, b.ndisks, "vdi.img");
  REQUIRE (d != NULL);
  CHECK (d->path == NULL && d->err == EIO);
  d = find_disk (b.disks, b.ndisks, "vdj.img");
  REQUIRE (d != NULL);
  CHECK (d->path == NULL && d->err == EIO);
  CHECK (find_disk (b.disks, b.ndisks, "sda.img") == NULL);
  CHECK (find_disk (b.disks, b.ndisks, "fda.img") == NULL);
  CHECK (find_disk (b.disks, b.ndisks, "vdk.img") == NULL);
  CHECK (b.nsnaps == 0);
  scan_free (&b);
  domxml_disks_free (cur, ncur);
}

/* <os><nvram> as nvram.fd among the current disks (raw, the file's size
 * and times), in both of libvirt's forms; none for a file that does not
 * exist yet or a network one; never in a snapshot. */
static void
test_nvram (void)
{
  CLEANUP_FREE char *dx = NULL, *vars = NULL, *sx = snapshot_xml ();
  struct build b = { .dname = "uefi", .log = true };
  struct domxml_disk *cur = NULL;
  struct virt_snap *s1 = snap ("s1", sx);
  const struct disk_scan *d;
  const char *tail;
  size_t ncur = 0, i;
  struct stat st;

  REQUIRE (asprintf (&vars, "%s/uefi_VARS.fd", dir) >= 0);
  REQUIRE (asprintf (&dx,
    "<domain type='qemu'>\n"
    "  <name>uefi</name>\n"
    "  <os>\n"
    "    <type arch='x86_64' machine='pc'>hvm</type>\n"
    "    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd"
    "</loader>\n"
    "    <nvram>%s</nvram>\n"
    "  </os>\n"
    "  <devices>\n"
    "    <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='qcow2'/>\n"
    "      <source file='%s/vda.qcow2'/>\n"
    "      <target dev='vda'/>\n"
    "    </disk>\n"
    "  </devices>\n"
    "</domain>", vars, dir) >= 0);
  REQUIRE (domxml_parse_domain (dx, strlen (dx), &cur, &ncur) == 0);

  /* Not there yet (libvirt makes it at the first start): not shown. */
  unlink (vars);
  REQUIRE (scan_domain (&b, cur, ncur, false, s1, 1) == 0);
  REQUIRE (scan_nvram (&b, dx, strlen (dx), false) == 0);
  CHECK (b.ndisks == 1 && find_disk (b.disks, b.ndisks, "nvram.fd") == NULL);
  scan_free (&b);
  memset (&b, 0, sizeof b);
  b.dname = "uefi";

  run ("truncate -s 128K %s/uefi_VARS.fd", dir);
  run ("printf 'VARS' | dd of=%s/uefi_VARS.fd bs=1 seek=1000 conv=notrunc "
       "status=none", dir);
  REQUIRE (stat (vars, &st) == 0);
  REQUIRE (scan_domain (&b, cur, ncur, true, s1, 1) == 0);
  REQUIRE (scan_nvram (&b, dx, strlen (dx), true) == 0);
  CHECK (b.ndisks == 2);
  d = find_disk (b.disks, b.ndisks, "nvram.fd");
  REQUIRE (d != NULL);
  CHECK (eq (d->path, vars) && eq (d->format, "raw"));
  CHECK (d->err == 0 && d->size == 128 << 10 && d->live);
  CHECK (d->snap_id == NULL && d->policy == NULL && d->have_st);
  CHECK (d->st.st_ino == st.st_ino);
  CHECK (d->st.st_mtim.tv_sec == st.st_mtim.tv_sec
         && d->st.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
  CHECK (d->read_mode == (st.st_mode & 0444));
  /* Snapshots: their disks only. */
  CHECK (b.nsnaps >= 1);
  for (i = 0; i < b.nsnaps; i++)
    CHECK (find_disk (b.snaps[i].disks, b.snaps[i].ndisks, "nvram.fd")
           == NULL);
  scan_free (&b);
  domxml_disks_free (cur, ncur);
  virt_snaps_free (s1, 1);

  /* The storage source form, and a network one (not shown). */
  {
    CLEANUP_FREE char *fx = NULL;
    static const char nx[] =
      "<domain><name>uefi</name><os><nvram type='network'>"
      "<source protocol='iscsi' name='iqn.x/1'/></nvram></os></domain>";
    static const char no[] =
      "<domain><name>uefi</name><os><type>hvm</type></os></domain>";

    REQUIRE (asprintf (&fx, "<domain><name>uefi</name><os>"
                       "<nvram type='file'><source file='%s'/></nvram>"
                       "</os></domain>", vars) >= 0);
    memset (&b, 0, sizeof b);
    b.dname = "uefi";
    CHECK (scan_nvram (&b, fx, strlen (fx), false) == 0);
    CHECK (b.ndisks == 1 && eq (b.disks[0].fname, "nvram.fd"));
    CHECK (b.ndisks == 1 && b.disks[0].size == 128 << 10
           && !b.disks[0].live && b.disks[0].err == 0);
    CHECK (scan_nvram (&b, nx, strlen (nx), false) == 0);
    CHECK (scan_nvram (&b, no, strlen (no), false) == 0);
    CHECK (scan_nvram (&b, "<domain", 7, false) == 0);
    CHECK (b.ndisks == 1);
    scan_free (&b);
  }

  /* <os firmware='efi'> (libvirt chooses the firmware at start): at
   * libvirt's default path, for qemu:///session under $XDG_CONFIG_HOME;
   * nothing where there is no such file or no local directory. */
  {
    static const char ex[] =
      "<domain><name>uefi</name><os firmware='efi'><type>hvm</type></os>"
      "</domain>";
    CLEANUP_FREE char *want = NULL, *got = NULL;

    setenv ("XDG_CONFIG_HOME", dir, 1);
    virt_uri = (char *) "qemu:///session";
    run ("mkdir -p %s/libvirt/qemu/nvram", dir);
    REQUIRE (asprintf (&want, "%s/libvirt/qemu/nvram/uefi_VARS.fd", dir) >= 0);
    got = libvirt_nvram_default ("uefi");
    CHECK (eq (got, want));
    CHECK (libvirt_nvram_default ("a/b") == NULL);
    memset (&b, 0, sizeof b);
    b.dname = "uefi";
    CHECK (scan_nvram (&b, ex, strlen (ex), false) == 0);
    CHECK (b.ndisks == 0);
    REQUIRE (link (vars, want) == 0);
    CHECK (scan_nvram (&b, ex, strlen (ex), false) == 0);
    CHECK (b.ndisks == 1 && eq (b.disks[0].path, want));
    CHECK (b.ndisks == 1 && b.disks[0].size == 128 << 10);
    CHECK (libvirt_nvram_path_ok (want) == false);      /* exists */
    unlink (want);
    CHECK (libvirt_nvram_path_ok (want));
    scan_free (&b);
    virt_uri = NULL;
    memset (&b, 0, sizeof b);
    b.dname = "uefi";
    CHECK (scan_nvram (&b, ex, strlen (ex), false) == 0);
    CHECK (b.ndisks == 0);
    scan_free (&b);
  }

  /* A directory is no image: shown empty, failing with EIO. */
  {
    CLEANUP_FREE char *fx = NULL;

    REQUIRE (asprintf (&fx, "<domain><name>uefi</name><os>"
                       "<nvram>%s</nvram></os></domain>", dir) >= 0);
    memset (&b, 0, sizeof b);
    b.dname = "uefi";
    CHECK (scan_nvram (&b, fx, strlen (fx), false) == 0);
    CHECK (b.ndisks == 1 && b.disks[0].err == EIO);
    scan_free (&b);
  }

  /* Where a restore may create it: directly inside libvirt's nvram
   * directory (qemu:///system), nothing else; nothing is created. */
  virt_system_uri = true;
  CHECK (!libvirt_nvram_path_ok (NULL));
  CHECK (!libvirt_nvram_path_ok ("uefi_VARS.fd"));
  CHECK (!libvirt_nvram_path_ok ("/etc/vmdiskfs-evil_VARS.fd"));
  CHECK (!libvirt_nvram_path_ok ("/var/lib/libvirt/qemu/nvram"));
  CHECK (!libvirt_nvram_path_ok ("/var/lib/libvirt/qemu/nvram/"));
  CHECK (!libvirt_nvram_path_ok ("/var/lib/libvirt/qemu/nvram/.."));
  CHECK (!libvirt_nvram_path_ok ("/var/lib/libvirt/qemu/nvram/../x.fd"));
  CHECK (!libvirt_nvram_path_ok ("/var/lib/libvirt/qemu/nvram//x.fd"));
  CHECK (!libvirt_nvram_path_ok ("/var/lib/libvirt/qemu/nvram/a/x.fd"));
  CHECK (!libvirt_nvram_path_ok ("/var/lib/libvirt/qemu/nvramx/x.fd"));
  CHECK (!libvirt_nvram_path_ok (vars));
  tail = "/var/lib/libvirt/qemu/nvram/vdt-unit-no-such_VARS.fd";
  if (lstat ("/var/lib/libvirt/qemu/nvram", &st) == 0 && S_ISDIR (st.st_mode)
      && lstat ("/var/lib/libvirt", &st) == 0 && !S_ISLNK (st.st_mode)) {
    CHECK (libvirt_nvram_path_ok (tail));
    CHECK (lstat (tail, &st) < 0 && errno == ENOENT);
  }
  else {
    fprintf (stderr, "no /var/lib/libvirt/qemu/nvram: refused\n");
    CHECK (!libvirt_nvram_path_ok (tail));
  }
  /* A remote host's directory is not ours to check. */
  virt_system_uri = false;
  CHECK (!libvirt_nvram_path_ok (tail));
}

int
main (void)
{
  struct fs_blob *bl;

  if (system ("qemu-img --version >/dev/null 2>&1") != 0) {
    fprintf (stderr, "qemu-img not found: skipped\n");
    return 77;
  }
  REQUIRE (mkdtemp (dir) != NULL);
  run ("qemu-img create -q -f qcow2 %s/vda.qcow2 16M", dir);
  run ("qemu-img snapshot -c s1 %s/vda.qcow2", dir);
  run ("qemu-img snapshot -c tagonly %s/vda.qcow2", dir);
  run ("qemu-img snapshot -c tagonly %s/vda.qcow2", dir);
  run ("truncate -s 4M %s/vdb.raw", dir);
  domxml_init ();

  bl = scan_virsh_blob ("<x/>", 4);
  REQUIRE (bl != NULL);
  CHECK (bl->len == 5 && memcmp (bl->data, "<x/>\n", 5) == 0);
  fs_blob_unref (bl);

  test_domain ();
  test_shared_domxml ();
  test_inside_mount ();
  test_disk_kinds ();
  test_nvram ();

  run ("rm -rf %s", dir);
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return 1;
  }
  return 0;
}
