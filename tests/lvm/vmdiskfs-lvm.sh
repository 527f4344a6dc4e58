#!/bin/bash
# vmdiskfs - libvirt mode over real LVM, inside the test guest (run it
# through tests/lvm/guest.sh; tests/integration/lvm-vmdiskfs.sh does): a
# libvirtd of the guest's own, a domain whose disks are a linear LV with a
# classic snapshot and a thin LV with a thin snapshot (type='block'), and
# the linear LV again as a volume of a logical storage pool.  The
# mount must show snapshots/<name>/<target>.img for both with the bytes of
# the time of each snapshot, activate the thin snapshot to read it, and
# deactivate it again when the daemon exits.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it.
{
. "$abs_top_srcdir/tests/lvm/guest-lib.sh"
VMDISKFS=$abs_top_builddir/vmdiskfs
[ -x "$VMDISKFS" ] || fail "$VMDISKFS not built"
command -v libvirtd >/dev/null || skip "no libvirtd"
[ -c /dev/fuse ] || skip "no /dev/fuse in the guest"

pattern () { yes "$1" | head -c 1M; }
put () { pattern "$1" | dd of="$2" bs=1M conv=fsync status=none || fail "writing $2"; }
same () { cmp <(head -c 1M "$1") <(pattern "$2") || fail "$1 does not hold $2"; }

setup_lvm
run lvcreate -q -L 32M -n disk vg0
put lin-v1 /dev/vg0/disk
run lvcreate -q -s -L 16M -n disk-nightly vg0/disk
put lin-v2 /dev/vg0/disk
setup_thin_pool 128M
run lvcreate -q -V 32M -T vg0/pool -n thin
put thin-v1 /dev/vg0/thin
run lvcreate -q -s -n thin-weekly vg0/thin
put thin-v2 /dev/vg0/thin
[ "$(lv_field vg0/thin-weekly lv_active)" = active ] &&
  fail "thin snapshot active from the start"

# libvirtd of the guest (TESTING.md): writable state on tmpfs.
for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
  mount -t tmpfs tmpfs "$d" || fail "tmpfs on $d"
done
mkdir -p /tmp/etc-libvirt && cp -a /etc/libvirt/. /tmp/etc-libvirt/ &&
  mount --bind /tmp/etc-libvirt /etc/libvirt || fail "writable /etc/libvirt"
virtlogd -d && libvirtd -d || fail "starting libvirtd"
for i in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
cat > /tmp/dom.xml <<XML
<domain type='qemu'>
  <name>lvmdom</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/disk'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/thin'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='volume' device='disk'><driver name='qemu' type='raw'/><source pool='vgpool' volume='disk'/><target dev='vdc' bus='virtio'/></disk>
  </devices>
</domain>
XML
run virsh -q -c qemu:///system pool-define-as vgpool logical --source-name vg0 --target /dev/vg0
run virsh -q -c qemu:///system pool-start vgpool
run virsh -q -c qemu:///system define /tmp/dom.xml

mkdir -p /tmp/mnt
"$VMDISKFS" -f -o pidfile=/tmp/pid /tmp/mnt >/tmp/vmdiskfs.log 2>&1 &
pid=$!
for i in $(seq 100); do [ -s /tmp/pid ] && break; sleep 0.1; done
[ -s /tmp/pid ] || { cat /tmp/vmdiskfs.log; fail "mount did not answer"; }
D=/tmp/mnt/lvmdom
ls -lR "$D"
[ "$(ls "$D/snapshots" | tr '\n' ' ')" = "nightly weekly " ] ||
  fail "snapshots: $(ls "$D/snapshots" | tr '\n' ' ')"
same "$D/vda.img" lin-v2
same "$D/vdb.img" thin-v2
[ "$(ls "$D/snapshots/nightly" | tr '\n' ' ')" = "vda.img vdc.img " ] ||
  fail "nightly: $(ls "$D/snapshots/nightly" | tr '\n' ' ')"
same "$D/vdc.img" lin-v2
[ "$(ls "$D/snapshots/weekly")" = vdb.img ] || fail "weekly: $(ls "$D/snapshots/weekly")"
[ "$(stat -c %s "$D/snapshots/weekly/vdb.img")" = $((32 << 20)) ] ||
  fail "weekly size $(stat -c %s "$D/snapshots/weekly/vdb.img")"
[ "$(lv_field vg0/thin-weekly lv_active)" = active ] &&
  fail "listing activated the thin snapshot"
same "$D/snapshots/nightly/vda.img" lin-v1
same "$D/snapshots/nightly/vdc.img" lin-v1
same "$D/snapshots/weekly/vdb.img" thin-v1
[ "$(lv_field vg0/thin-weekly lv_active)" = active ] ||
  fail "thin snapshot not active after reading"
echo "ok: bytes of both snapshots"

# A snapshot made by lvcreate meanwhile shows up within a few seconds.
run lvcreate -q -s -L 8M -n disk-later vg0/disk
for i in $(seq 60); do [ -e "$D/snapshots/later/vda.img" ] && break; sleep 0.1; done
[ -e "$D/snapshots/later/vda.img" ] || fail "snapshot later not shown after 6 s"
same "$D/snapshots/later/vda.img" lin-v2
echo "ok: a new LVM snapshot shows up after $i tenths of a second"

umount /tmp/mnt || fail "umount"
wait $pid || fail "vmdiskfs exited with an error: $(cat /tmp/vmdiskfs.log)"
[ "$(lv_field vg0/thin-weekly lv_active)" = active ] &&
  fail "thin snapshot still active after exit"
echo "ok: deactivated at exit"
cat /tmp/vmdiskfs.log
virsh -q -c qemu:///system undefine lvmdom
exit 0
}
