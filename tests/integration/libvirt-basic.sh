#!/bin/bash
# Smoke test of libvirt mode against the real libvirtd: two shut-off
# domains of our own (vdtest-basic-PID-*), the tree, domain.xml and
# snapshot.xml against virsh, disk and snapshot bytes against qemu-img
# (the oracles of TESTING.md), a qemu-img-only snapshot, a domain defined
# and undefined by virsh showing up and going away.
#
# Other tests define domains at the same time: only ours are touched, and
# nothing assumes the host has no other domains.
#
# libvirt rejects internal snapshots of a domain with a raw disk, so the
# qcow2 disk and the CD-ROM are in one domain, the raw disk in another.
#
# Exit 77 when libvirtd cannot be reached or started.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
{

. "$(dirname "$0")/functions.sh"
require virsh qemu-img qemu-io gio
qcow2_supported || skip "the qcow2 driver has not landed"

URI=qemu:///system
export LIBVIRT_DEFAULT_URI=$URI
# LV_DOMTYPE: kvm, or qemu (TCG) where /dev/kvm is absent or not usable.
. "$(dirname "$0")/libvirt-functions.sh"
if ! virsh -q version >/dev/null 2>&1; then
  lv_virtlogd || skip "virtlogd does not start"
  lv_daemon libvirtd
  wait_for 10 virsh -q version >/dev/null 2>&1 || skip "no libvirtd"
fi

P=vdtest-basic-$$
IMG=$TEST_DIR/img
MNT=$TEST_DIR/mnt
mkdir -p "$IMG"

undefine_ours ()
{
  local d
  for d in $(virsh -q list --all --name 2>/dev/null | grep "^$P-"); do
    virsh -q destroy "$d" >/dev/null 2>&1
    virsh -q undefine --snapshots-metadata "$d" >/dev/null 2>&1
  done
}
on_exit undefine_ours

domain_xml ()   # NAME DISK-ELEMENTS...
{
  local name=$1
  shift
  cat <<EOF
<domain type='$LV_DOMTYPE'>
  <name>$name</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
$(printf '    %s\n' "$@")
  </devices>
</domain>
EOF
}

# ---- The domains. ----

qemu-img create -q -f qcow2 "$IMG/q.qcow2" 64M
qemu-io -c 'write -P 0x11 0 1M' -c 'write -P 0x12 10M 64k' "$IMG/q.qcow2" \
  >/dev/null
head -c 3M /dev/urandom >"$IMG/r.raw"
truncate -s 8M "$IMG/r.raw"

domain_xml "$P-q" \
  "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$IMG/q.qcow2'/><target dev='vda' bus='virtio'/></disk>" \
  "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/><readonly/></disk>" \
  >"$TEST_DIR/q.xml"
domain_xml "$P-r" \
  "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$IMG/r.raw'/><target dev='vdb' bus='virtio'/></disk>" \
  "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$IMG/missing.qcow2'/><target dev='vdc' bus='virtio'/></disk>" \
  >"$TEST_DIR/r.xml"
virsh -q define "$TEST_DIR/q.xml" >/dev/null || fail "define $P-q"
virsh -q define "$TEST_DIR/r.xml" >/dev/null || fail "define $P-r"

# A libvirt snapshot (disk-only internal: the domain is shut off), then
# new data, then a snapshot libvirt does not know.
virsh -q snapshot-create-as "$P-q" first >/dev/null || fail "snapshot-create-as"
qemu-io -c 'write -P 0x21 0 512k' -c 'write -P 0x22 20M 1M' "$IMG/q.qcow2" \
  >/dev/null
qemu-img snapshot -c 'by/qemu-img' "$IMG/q.qcow2" || fail "qemu-img snapshot"
qemu-io -c 'write -P 0x31 1M 1M' "$IMG/q.qcow2" >/dev/null

start_vmdiskfs "$MNT" -o connect=$URI

# ---- The tree. ----

Q=$MNT/$P-q
R=$MNT/$P-r
[ -d "$Q" ] && [ -d "$R" ] || fail "domains missing: $(ls "$MNT")"
[ "$(ls "$Q" | tr '\n' ' ')" = "domain.xml snapshots vda.img " ] ||
  fail "$Q: $(ls "$Q" | tr '\n' ' ') (the CD-ROM must not be shown)"
[ "$(ls "$R" | tr '\n' ' ')" = "domain.xml snapshots vdb.img vdc.img " ] ||
  fail "$R: $(ls "$R" | tr '\n' ' ')"
[ "$(ls "$Q/snapshots" | tr '\n' ' ')" = "by%2Fqemu-img first " ] ||
  fail "$Q/snapshots: $(ls "$Q/snapshots" | tr '\n' ' ')"
[ "$(ls "$Q/snapshots/first" | tr '\n' ' ')" = "domain.xml snapshot.xml vda.img " ] ||
  fail "$Q/snapshots/first: $(ls "$Q/snapshots/first" | tr '\n' ' ')"
[ "$(ls "$Q/snapshots/by%2Fqemu-img")" = "vda.img" ] ||
  fail "qemu-img snapshot: $(ls "$Q/snapshots/by%2Fqemu-img")"

# ---- XML. ----

virsh dumpxml --inactive "$P-q" >"$TEST_DIR/q.dump"
compare "$TEST_DIR/q.dump" "$Q/domain.xml"
virsh snapshot-dumpxml "$P-q" first >"$TEST_DIR/first.dump"
compare "$TEST_DIR/first.dump" "$Q/snapshots/first/snapshot.xml"
grep -q "<name>$P-q</name>" "$Q/snapshots/first/domain.xml" ||
  fail "snapshot's domain.xml: $(head -3 "$Q/snapshots/first/domain.xml")"
head -1 "$Q/snapshots/first/domain.xml" | grep -q "^<domain type='$LV_DOMTYPE'" ||
  fail "snapshot's domain.xml starts with $(head -1 "$Q/snapshots/first/domain.xml")"
tail -2 "$Q/snapshots/first/domain.xml" | head -1 | grep -qx '</domain>' ||
  fail "snapshot's domain.xml ends with $(tail -2 "$Q/snapshots/first/domain.xml")"
ctime=$(sed -n 's|.*<creationTime>\([0-9]*\)</creationTime>.*|\1|p' \
          "$TEST_DIR/first.dump")
for f in "$Q/snapshots/first" "$Q/snapshots/first/vda.img" \
         "$Q/snapshots/first/snapshot.xml"; do
  [ "$(stat -c %Y "$f")" = "$ctime" ] ||
    fail "$f: mtime $(stat -c %Y "$f"), snapshot created at $ctime"
done

# ---- Bytes. ----

qemu-img convert -O raw "$IMG/q.qcow2" "$TEST_DIR/q.expect"
compare "$TEST_DIR/q.expect" "$Q/vda.img"
# A file manager takes TARGET.img for a raw disk image (shared-mime-info's
# *.img), and so opens it with the disk image mounter; *.raw would be a
# camera photo (image/x-panasonic-rw).
for f in "$Q/vda.img" "$Q/snapshots/first/vda.img"; do
  t=$(gio info -a standard::content-type "$f" | sed -n 's/^ *standard::content-type: //p')
  [ "$t" = application/x-raw-disk-image ] || fail "gio: $f is '$t'"
done
[ "$(stat -c %Y "$Q/vda.img")" = "$(stat -c %Y "$IMG/q.qcow2")" ] ||
  fail "vda.img's mtime is not its image's"
compare "$IMG/r.raw" "$R/vdb.img"
for tag in first by/qemu-img; do
  cp "$IMG/q.qcow2" "$TEST_DIR/copy.qcow2"
  qemu-img snapshot -a "$tag" "$TEST_DIR/copy.qcow2"
  qemu-img convert -O raw "$TEST_DIR/copy.qcow2" "$TEST_DIR/snap.expect"
  compare "$TEST_DIR/snap.expect" "$Q/snapshots/${tag//\//%2F}/vda.img"
done
cmp -s "$TEST_DIR/q.expect" "$Q/snapshots/first/vda.img" &&
  fail "the snapshot reads as the current disk"

# A missing image: shown, logged, EIO.
[ "$(stat -c %s "$R/vdc.img")" = 0 ] || fail "missing disk has a size"
if cat "$R/vdc.img" >/dev/null 2>"$TEST_DIR/eio"; then
  fail "reading a missing disk succeeded"
fi
grep -q 'Input/output error' "$TEST_DIR/eio" || fail "not EIO: $(cat "$TEST_DIR/eio")"
grep -q "missing.qcow2" "$(vmdiskfs_log "$MNT")" || fail "missing disk not logged"

# What the mount refuses: mkdir outside snapshots/.  (Writing disks:
# write-libvirt.sh.)
if mkdir "$Q/new" 2>/dev/null; then
  fail "a write succeeded"
fi

# ---- Changes made by others. ----

# A snapshot libvirt makes shows up (the image file changes).
virsh -q snapshot-create-as "$P-q" second >/dev/null || fail "second snapshot"
wait_for 5 test -f "$Q/snapshots/second/snapshot.xml" ||
  fail "snapshot second did not show up"
virsh -q snapshot-delete "$P-q" second >/dev/null || fail "snapshot-delete"
wait_for 5 test ! -e "$Q/snapshots/second" ||
  fail "deleted snapshot second still shown"

# A domain defined by virsh appears within 3 s; undefined, it goes.
domain_xml "$P-new" \
  "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$IMG/r.raw'/><target dev='sda' bus='sata'/></disk>" \
  >"$TEST_DIR/new.xml"
ls "$MNT" >/dev/null
virsh -q define "$TEST_DIR/new.xml" >/dev/null || fail "define $P-new"
wait_for 3 test -f "$MNT/$P-new/sda.img" ||
  fail "$P-new did not show up within 3 s"
compare "$IMG/r.raw" "$MNT/$P-new/sda.img"
virsh -q undefine "$P-new" >/dev/null || fail "undefine $P-new"
wait_for 3 test ! -e "$MNT/$P-new" || fail "$P-new still shown after 3 s"

stop_vmdiskfs "$MNT" || fail "vmdiskfs exited with an error"
grep -q -i 'segmentation\|assert' "$(vmdiskfs_log "$MNT")" &&
  fail "daemon crashed: $(cat "$(vmdiskfs_log "$MNT")")"
echo "ok"
exit 0
}
