#!/bin/bash
# vmdiskfs - restoring an LV-backed VM by copying its directory back
# (issue 10), in the small TCG guest of tests/lvm/guest.sh (the host
# kernel has no device-mapper), with a libvirtd of the guest's own and a
# shut-off domain whose disks are a classic LV (vda) and a thin LV (vdb).
# On the host this script hands itself to guest.sh; in the guest:
#
#  - mkdir snapshots/s1, then data changed (4 MiB written at 8 MiB, 1 MiB
#    written where s1 has zeros), then the directory backed up with cp -a;
#  - (a) restore into the existing LVs: the disks changed, then cp -a
#    (vda) and rsync -a (vdb) of the backup's disks: the LVs equal the
#    backup's disks, snapshot s1 kept;
#  - (b) a snapshot copied back: rmdir snapshots/s1 (its LVs gone), then
#    cp -a of the backup's snapshots/s1 into snapshots/: s1 shows again,
#    its disks equal to the backup's, the current disks unchanged, lvs
#    shows the snapshot LVs (named and tagged as mkdir makes them);
#  - (d) the classic snapshot's copy-on-write space too small for the
#    differences (remounted with -o snapsize=8M, every byte of the LV
#    differs): cp fails with ENOSPC, the log says why; the thin one is
#    restored;
#  - (c) (VD_RESTORE_LVM_WHOLE=0 leaves it out): the VM undefined, s1 deleted,
#    the LVs kept: cp -a of the whole backup directory defines it again,
#    and s1 comes back made by the restore (no mkdir made it: the
#    snapshot is created, then written).
#    The restore takes only paths resolving to /dev/dm-N for existing
#    logical volumes: the guest has no udev (its /dev/mapper nodes are
#    LVM's), so /dev/vg0/LV are made links to /dev/dm-N first, as udev
#    makes them.
# Snapshot bytes are checked through the mount and on the snapshot LV.
# The mount has -o snapsize=40M: a restore of the current disk rewrites
# every chunk of the LV (write-lvm.sh).
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
{
if [ -z "${VD_GUEST_HOSTTMP:-}" ]; then
  # ---- on the host ----
  srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
  export abs_top_srcdir=$srcdir
  export abs_top_builddir=${abs_top_builddir:-$srcdir}
  case $abs_top_builddir in
    /tmp/*) echo "SKIP: build tree under /tmp (a tmpfs in the guest)"; exit 77 ;;
  esac
  [ -x "$abs_top_builddir/vmdiskfs" ] || { echo "FAIL: vmdiskfs not built"; exit 1; }
  exec bash "$srcdir/tests/lvm/guest.sh" "$srcdir/tests/integration/restore-lvm.sh" \
    "${VD_RESTORE_LVM_WHOLE:-1}"
fi
whole=${1:-0}

# ---- in the guest ----
. "$abs_top_srcdir/tests/lvm/guest-lib.sh"
start=$(date +%s)
VMDISKFS=$abs_top_builddir/vmdiskfs
[ -x "$VMDISKFS" ] || fail "$VMDISKFS not built"
command -v libvirtd >/dev/null || skip "no libvirtd"
command -v rsync >/dev/null || skip "no rsync"
[ -c /dev/fuse ] || skip "no /dev/fuse in the guest"

ok () { echo "ok: $* (at $(( $(date +%s) - start ))s)"; }
M=1048576
SIZE=$((32 * M))
failures=0
bad () { echo "FAIL: $*"; failures=$((failures + 1)); }
V="virsh -q -c qemu:///system"

setup_lvm
run lvcreate -q -L 32M -n disk vg0
setup_thin_pool 128M
run lvcreate -q -V 32M -T vg0/pool -n thin
declare -A dev=([vda]=/dev/vg0/disk [vdb]=/dev/vg0/thin)
declare -A lvn=([vda]=disk [vdb]=thin)
# The first bytes: a pattern with 1 MiB of zeros at 24 MiB.
for t in vda vdb; do
  yes "first-$t" | head -c $SIZE > /tmp/first
  dd if=/dev/zero of=/tmp/first bs=1M seek=24 count=1 conv=notrunc status=none
  run dd if=/tmp/first of="${dev[$t]}" bs=1M conv=fsync status=none
done
rm -f /tmp/first

start_libvirtd
cat > /tmp/dom.xml <<XML
<domain type='qemu'>
  <name>lvmdom</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/disk'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/thin'/><target dev='vdb' bus='virtio'/></disk>
  </devices>
</domain>
XML
run $V define /tmp/dom.xml

mkdir -p /tmp/mnt /tmp/staging
chmod 700 /tmp/staging
# mount SNAPSIZE: vmdiskfs on /tmp/mnt, its log appended to /tmp/vmdiskfs.log.
mount_fs () {
  rm -f /tmp/pid
  "$VMDISKFS" -f -o pidfile=/tmp/pid,staging=/tmp/staging,snapsize=$1 /tmp/mnt \
    >>/tmp/vmdiskfs.log 2>&1 &
  pid=$!
  for i in $(seq 100); do [ -s /tmp/pid ] && break; sleep 0.1; done
  [ -s /tmp/pid ] || { cat /tmp/vmdiskfs.log; fail "mount did not answer"; }
}
umount_fs () {
  timeout -s KILL 60 umount /tmp/mnt || { umount -l /tmp/mnt; bad "umount"; }
  wait $pid || bad "vmdiskfs exited with an error"
}
finish () {
  [ $failures = 0 ] || { echo "---- vmdiskfs.log"; tail -60 /tmp/vmdiskfs.log; }
  lvs -o lv_name,origin,lv_size,lv_attr,data_percent,snap_percent vg0
  echo "restore-lvm: $failures failed checks, $(( $(date +%s) - start ))s"
  [ $failures = 0 ] || exit 1
  exit 0
}
# The snapshot LV VG/$1-s1 holds file $2 (activated first: thin ones
# carry the activation-skip flag).
lv_holds () {
  lvchange -q -y -ay -K "vg0/$1-s1" || { bad "$3: lvchange -ay -K vg0/$1-s1"; return 1; }
  cmp "$2" "/dev/vg0/$1-s1" || { bad "$3: /dev/vg0/$1-s1 differs from $2"; return 1; }
}
mount_fs 40M
D=/tmp/mnt/lvmdom
B=/tmp/bk/lvmdom
ok "mounted"

# The snapshot LVs named s1 (the shown name) of LV $1, one a line.
snaplvs () {
  lvs --noheadings -o lv_name,origin,lv_tags vg0 | awk -v o="$1" '$2 == o { print $1, $3 }'
}

run mkdir "$D/snapshots/s1"
snaplvs disk; snaplvs thin
for t in vda vdb; do
  lvs "vg0/${lvn[$t]}-s1" >/dev/null 2>&1 || fail "mkdir made no LV ${lvn[$t]}-s1"
  # After s1: 4 MiB at 8 MiB, and data where s1 has zeros.
  yes "second-$t" | head -c $((4 * M)) |
    dd of="${dev[$t]}" bs=1M seek=8 conv=fsync status=none
  yes "second-$t" | head -c $M |
    dd of="${dev[$t]}" bs=1M seek=24 conv=fsync status=none
done
ok "mkdir snapshots/s1, then data changed"

rm -rf /tmp/bk && mkdir /tmp/bk
cp -a "$D" /tmp/bk/ || fail "cp -a $D /tmp/bk/ (exit $?)"
ls -lR /tmp/bk
for t in vda vdb; do
  cmp "$B/$t.img" "${dev[$t]}" || fail "backup: $t.img differs from ${dev[$t]}"
  cmp -s "$B/snapshots/s1/$t.img" "$B/$t.img" &&
    fail "backup: snapshots/s1/$t.img equal to the current disk"
  cmp "$B/snapshots/s1/$t.img" "$D/snapshots/s1/$t.img" ||
    fail "backup: snapshots/s1/$t.img differs from the mount's"
done
ok "backup with cp -a"

# ---- (a) restore into the existing LVs ----
for t in vda vdb; do
  yes "junk-$t" | head -c $((2 * M)) | dd of="${dev[$t]}" bs=1M conv=fsync status=none
  dd if=/dev/zero of="${dev[$t]}" bs=1M seek=30 count=1 conv=fsync status=none
done
cp -a "$B/vda.img" "$D/" || bad "cp -a vda.img (exit $?)"
rsync -a "$B/vdb.img" "$D/" || bad "rsync -a vdb.img (exit $?)"
for t in vda vdb; do
  cmp "$B/$t.img" "${dev[$t]}" && cmp "$B/$t.img" "$D/$t.img" &&
    ok "(a) $t: restored into the existing LV ${dev[$t]}" ||
    bad "(a) $t: the LV differs from the backup"
  cmp "$B/snapshots/s1/$t.img" "$D/snapshots/s1/$t.img" ||
    bad "(a) $t: snapshot s1 changed"
  lv_holds "${lvn[$t]}" "$B/snapshots/s1/$t.img" "(a) $t"
done

# ---- (b) a snapshot copied back ----
run rmdir "$D/snapshots/s1"
[ -e "$D/snapshots/s1" ] && bad "(b) snapshots/s1 still there after rmdir"
[ -z "$(snaplvs disk; snaplvs thin)" ] || bad "(b) snapshot LVs left: $(snaplvs disk; snaplvs thin)"
cp -a "$B/snapshots/s1" "$D/snapshots/" || bad "(b) cp -a snapshots/s1 (exit $?)"
ls -l "$D/snapshots/s1"
snaplvs disk; snaplvs thin
for t in vda vdb; do
  cmp "$B/snapshots/s1/$t.img" "$D/snapshots/s1/$t.img" &&
    ok "(b) $t: snapshots/s1/$t.img equal to the backup's" ||
    bad "(b) $t: snapshots/s1/$t.img differs from the backup's"
  lv_holds "${lvn[$t]}" "$B/snapshots/s1/$t.img" "(b) $t"
  cmp "$B/$t.img" "${dev[$t]}" || bad "(b) $t: the current disk changed"
  snaplvs "${lvn[$t]}" | grep -q "^${lvn[$t]}-s1 .*vmdiskfs" ||
    bad "(b) $t: lvs shows no snapshot LV ${lvn[$t]}-s1 tagged vmdiskfs"
done
lvs -o lv_name,origin,lv_size,lv_attr,data_percent,snap_percent vg0
grep "snapshot s1" /tmp/vmdiskfs.log

# ---- (d) too many differences for the classic snapshot's COW space ----
run rmdir "$D/snapshots/s1"
umount_fs
mount_fs 8M
for t in vda vdb; do
  yes "third-$t" | head -c $SIZE | dd of="${dev[$t]}" bs=1M conv=fsync status=none
done
cp -a /tmp/bk/lvmdom/snapshots/s1 "$D/snapshots/" 2>/tmp/cp.err &&
  bad "(d) cp -a succeeded with a COW space smaller than the differences"
cat /tmp/cp.err
grep -q "vda.img.*No space left on device" /tmp/cp.err ||
  bad "(d) cp: no ENOSPC for vda.img"
grep -q "vdb.img" /tmp/cp.err && bad "(d) cp: an error for vdb.img (thin)"
grep "overflowed" /tmp/vmdiskfs.log || bad "(d) no log line saying the snapshot overflowed"
cmp "$B/snapshots/s1/vdb.img" "$D/snapshots/s1/vdb.img" ||
  bad "(d) vdb: snapshots/s1/vdb.img differs from the backup's"
[ $failures = 0 ] && ok "(d) vda: ENOSPC, logged; vdb: restored"
lv_holds thin "$B/snapshots/s1/vdb.img" "(d) vdb"
lvs -o lv_name,origin,lv_size,lv_attr,data_percent,snap_percent vg0

# ---- (c) the VM undefined, its LVs kept: cp -a of the whole directory ----
if [ "$whole" != 1 ]; then
  echo "(c) not run (VD_RESTORE_LVM_WHOLE=0)"
  umount_fs
  $V undefine lvmdom
  finish
fi
timeout -s KILL 120 rmdir "$D/snapshots/s1" || bad "(c) rmdir snapshots/s1"
umount_fs
mount_fs 40M
for t in vda vdb; do
  cp "$B/$t.img" "${dev[$t]}" || fail "(c) cp $B/$t.img ${dev[$t]}"
done
# /dev/vg0/LV a link to /dev/dm-N, as udev makes it (LVM remade the
# links when the snapshots went).
for l in disk thin; do
  mm=$(stat -L -c '%t %T' "/dev/vg0/$l")
  maj=$((0x${mm% *})) min=$((0x${mm#* }))
  [ -b "/dev/dm-$min" ] || mknod "/dev/dm-$min" b "$maj" "$min"
  ln -sfn "/dev/dm-$min" "/dev/vg0/$l"
done
ls -l /dev/vg0 | sed 's/^/  /'
run $V undefine lvmdom
for i in $(seq 50); do [ -e "$D" ] || break; sleep 0.2; done
[ -e "$D" ] && bad "(c) $D still there after undefine"
timeout -s KILL 120 cp -a "$B" /tmp/mnt/ || bad "(c) cp -a $B /tmp/mnt/ (exit $?)"
$V dominfo lvmdom >/dev/null 2>&1 || bad "(c) lvmdom not defined again"
ls -lR "$D"
snaplvs disk; snaplvs thin
for t in vda vdb; do
  cmp "$B/$t.img" "${dev[$t]}" || bad "(c) $t: the LV differs from the backup"
  lv_holds "${lvn[$t]}" "$B/snapshots/s1/$t.img" "(c) $t"
  cmp "$B/snapshots/s1/$t.img" "$D/snapshots/s1/$t.img" &&
    ok "(c) $t: VM defined again, snapshot s1 made and written by the restore" ||
    bad "(c) $t: snapshots/s1/$t.img differs from the backup's"
  snaplvs "${lvn[$t]}" | grep -q "^${lvn[$t]}-s1 .*vmdiskfs" ||
    bad "(c) $t: lvs shows no snapshot LV ${lvn[$t]}-s1 tagged vmdiskfs"
done

umount_fs
$V undefine lvmdom
finish
}
