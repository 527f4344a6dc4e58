#!/bin/bash
# vmdiskfs - libvirt mode, backing chains (DESIGN.md "Untrusted names"):
# an image's own backing names are followed as libvirt follows them, with
# the file checks (no FIFO, nothing inside the mount) and, where the domain
# XML records a <backingStore>, only if the two agree.  A disagreeing
# chain, an image with a backing file where the XML says <backingStore/>,
# a FIFO and a file inside the mount give EIO and a log line, while the
# domain's other disks and the daemon stay fine.  A disk's mode is the
# intersection of the read bits of its chain.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 cmp stat timeout
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
IMG=$TEST_DIR/img
mkdir -p "$IMG"
cd "$IMG" || fail "cd $IMG"

qemu-img create -q -f qcow2 base1.qcow2 1M
qemu-io -f qcow2 -c "write -P 0xb1 0 256k" base1.qcow2 >/dev/null
qemu-img create -q -f qcow2 base2.qcow2 1M
qemu-io -f qcow2 -c "write -P 0xb2 0 256k" base2.qcow2 >/dev/null
for t in agree disagree ends unrecorded; do
  qemu-img create -q -f qcow2 -b "$IMG/base1.qcow2" -F qcow2 "$t.qcow2" 1M
  qemu-io -f qcow2 -c "write -P 0x77 512k 64k" "$t.qcow2" >/dev/null
done
qemu-img convert -O raw agree.qcow2 "$TEST_DIR/agree.expect"
mkfifo "$IMG/fifo"
qemu-img create -q -f qcow2 -u -b "$IMG/fifo" -F raw fifo.qcow2 1M
qemu-img create -q -f qcow2 -u -b "$MNT/$P-agree/vda.img" -F raw \
  self.qcow2 1M
qemu-img create -q -f raw private.raw 1M
chmod 0600 private.raw
qemu-img create -q -f qcow2 -b "$IMG/private.raw" -F raw mixed.qcow2 1M
chmod 0644 ./*.qcow2 base1.qcow2

# define NAME IMAGE BACKINGSTORE-XML: a shut-off domain with one disk.
define ()
{
  cat >"$TEST_DIR/$1.xml" <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$2'/>
      $3
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
EOF
  lv_virsh define "$TEST_DIR/$1.xml" >/dev/null || fail "define $1"
  lv_forget_later "$1"
}
bs ()                           # PATH -> a <backingStore> of one qcow2 level
{
  echo "<backingStore type='file'><format type='qcow2'/><source file='$1'/><backingStore/></backingStore>"
}

define "$P-agree" "$IMG/agree.qcow2" "$(bs "$IMG/base1.qcow2")"
define "$P-disagree" "$IMG/disagree.qcow2" "$(bs "$IMG/base2.qcow2")"
define "$P-ends" "$IMG/ends.qcow2" "<backingStore/>"
define "$P-unrecorded" "$IMG/unrecorded.qcow2" ""
define "$P-fifo" "$IMG/fifo.qcow2" ""
define "$P-self" "$IMG/self.qcow2" ""
define "$P-mixed" "$IMG/mixed.qcow2" ""
# libvirt keeps a <backingStore> given in the definition.
lv_virsh dumpxml --inactive "$P-disagree" | grep -q "base2.qcow2" ||
  skip "this libvirt drops <backingStore> from the inactive definition"

lv_mount "$MNT"
LOG=$(vmdiskfs_log "$MNT")

compare "$MNT/$P-agree/vda.img" "$TEST_DIR/agree.expect"
compare "$MNT/$P-unrecorded/vda.img" "$TEST_DIR/agree.expect"
for d in disagree ends fifo self; do
  got=$(read_errno "$MNT/$P-$d/vda.img")
  [ "$got" = EIO ] || fail "$d: read gave $got, want EIO"
done
lv_alive "$MNT"
grep -q "disagree.qcow2: backing file $IMG/base1.qcow2 refused: the domain XML's <backingStore> names $IMG/base2.qcow2" \
  "$LOG" || fail "no log line for the disagreeing chain"
grep -q "ends.qcow2: backing file $IMG/base1.qcow2 refused: the domain XML's <backingStore/> says there is none" \
  "$LOG" || fail "no log line for <backingStore/>"
grep -q "fifo.qcow2: backing file $IMG/fifo refused: not a regular file or block device" \
  "$LOG" || fail "no log line for the FIFO"
grep -q "self.qcow2: backing file .* refused: it is inside this vmdiskfs mount" \
  "$LOG" || fail "no log line for the backing file inside the mount"
[ "$(stat -c %a "$MNT/$P-mixed/vda.img")" = 400 ] ||
  fail "mixed: mode $(stat -c %a "$MNT/$P-mixed/vda.img"), want 400 (its backing file is 0600)"
[ "$(stat -c %a "$MNT/$P-agree/vda.img")" = 444 ] ||
  fail "agree: mode $(stat -c %a "$MNT/$P-agree/vda.img")"
compare "$MNT/$P-agree/vda.img" "$TEST_DIR/agree.expect"
lv_alive "$MNT"

echo "PASS: libvirt backing chains"
