#!/bin/bash
# vmdiskfs - Ceph RBD disks of a libvirt domain, with a real cluster on
# this machine (ceph-functions.sh: one mon, one memstore OSD, cephx) and
# the client key in a libvirt secret (usage type ceph):
#  - vda.img and a snapshot made by `rbd snap create` against `rbd export`;
#  - mkdir snapshots/NAME makes an RBD snapshot (rbd snap ls, rbd export
#    @NAME), EEXIST when the name is taken; rmdir removes one;
#  - a restore by cp while shut off is written through librbd (rbd export
#    equals the backup; the snapshots stay as they were);
#  - a secret that does not exist: the disk is shown and fails with EIO;
#  - another client with the image open (qemu-nbd): writing is EBUSY;
#  - the domain running (qemu reads the image through its rbd driver):
#    writing vda.img is EBUSY, mkdir makes a snapshot that reads as
#    `rbd export` of it.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
. "$(dirname "$0")/ceph-functions.sh"
set -u
require python3 qemu-img
ceph_require
lv_start
ceph_start "$TEST_DIR/ceph" cephx >/dev/null

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
W=$TEST_DIR/w
mkdir -p "$W"
IMG=rbd/$P-vda

# The key in a libvirt secret, as an administrator stores it.
USAGE="$P ceph client.vmd"
SECRET=$(uuidgen)
cat >"$W/secret.xml" <<XML
<secret ephemeral='no' private='no'>
  <uuid>$SECRET</uuid>
  <usage type='ceph'><name>$USAGE</name></usage>
</secret>
XML
lv_virsh secret-define "$W/secret.xml" >/dev/null || fail "virsh secret-define failed"
undefine_secret () { lv_virsh secret-undefine "$SECRET" >/dev/null 2>&1; }
on_exit undefine_secret
printf '%s' "$CEPH_CLIENT_KEY" >"$W/key.b64"
lv_virsh secret-set-value "$SECRET" --file "$W/key.b64" >/dev/null ||
  fail "virsh secret-set-value failed"

# An image with data and holes, and a snapshot of it.
truncate -s 48M "$W/a.raw"
head -c 2M /dev/urandom | dd of="$W/a.raw" bs=1M seek=1 conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$W/a.raw" bs=1M seek=30 conv=notrunc status=none
rbd import --image-format 2 "$W/a.raw" "$IMG" >/dev/null 2>&1 ||
  fail "rbd import failed"
rbd snap create "$IMG@pre" >/dev/null 2>&1 || fail "rbd snap create failed"
rbd export "$IMG@pre" "$W/pre.raw" >/dev/null 2>&1
# Writes after the snapshot, so that the image and its snapshot differ.
rbd bench --io-type write --io-size 64K --io-total 4M --io-pattern rand \
  "$IMG" >/dev/null 2>&1 || fail "rbd bench (writes after the snapshot) failed"

MON_HOST=${CEPH_MON%:*}
MON_PORT=${CEPH_MON##*:}
src ()                          # IMAGE USAGE
{
  printf "%s" "<source protocol='rbd' name='$1'><host name='$MON_HOST' port='$MON_PORT'/><auth username='vmd'><secret type='ceph' usage='$2'/></auth></source>"
}
D=$P-rbd
lv_define "$D" "net:vda:$(src "$IMG" "$USAGE")"
BAD=$P-badsecret
lv_define "$BAD" "net:vda:$(src "$IMG" "$P no such secret")"
lv_mount "$MNT" -o net_timeout=10

V=$MNT/$D/vda.img
export_of () { rbd export "$1" "$2" >/dev/null 2>&1; }
export_of "$IMG" "$W/now.raw"
check "vda.img differs from rbd export" same_bytes "$V" "$W/now.raw"
check "vda.img: size" eq "$(stat -c %s "$V")" $((48 << 20))
# Its mtime: RBD's modify timestamp (the import, minutes ago at most).
mt=$(stat -c %Y "$V")
check "vda.img: mtime $mt is not within the last hour" \
  test "$mt" -gt $(( $(date +%s) - 3600 )) -a "$mt" -le $(( $(date +%s) + 5 ))
check "snapshots/pre/vda.img differs from rbd export @pre" \
  same_bytes "$MNT/$D/snapshots/pre/vda.img" "$W/pre.raw"
# Holes of the snapshot (before rbd bench wrote all over the image): the
# 3 MiB written are in 2 of its twelve 4 MiB objects.
covered=$(data_ranges "$MNT/$D/snapshots/pre/vda.img" |
          awk '{ n += $2 - $1 } END { print n + 0 }')
check "snapshots/pre/vda.img: data ranges cover $covered bytes of 48 MiB (3 MiB written in 2 objects)" \
  test "$covered" -ge $((3 << 20)) -a "$covered" -le $((8 << 20))
err=$(read_errno "$MNT/$BAD/vda.img")
check "a disk whose secret does not exist gave '$err', not EIO" eq "$err" EIO

snaps () { rbd snap ls "$IMG" 2>/dev/null | awk 'NR > 1 { print $2 }' | sort | tr '\n' ' '; }
check "mkdir snapshots/s1 failed" mkdir "$MNT/$D/snapshots/s1"
check "after mkdir s1: rbd snap ls gives '$(snaps)'" grep -qw s1 <<<"$(snaps)"
export_of "$IMG@s1" "$W/s1.raw"
wait_for 10 test -e "$MNT/$D/snapshots/s1/vda.img"
check "snapshots/s1/vda.img differs from rbd export @s1" \
  same_bytes "$MNT/$D/snapshots/s1/vda.img" "$W/s1.raw"
err=$(op_errno "os.mkdir(path)" "$MNT/$D/snapshots/s1")
check "mkdir of an existing snapshot gave '$err', not EEXIST" eq "$err" EEXIST
check "rmdir snapshots/pre failed" rmdir "$MNT/$D/snapshots/pre"
check "after rmdir pre: rbd snap ls gives '$(snaps)'" eq "$(snaps)" "s1 "

# vmdisk-snapshot and its retention: the snapshots it makes carry its
# mark (the image's metadata), so prune deletes those and nothing else.
: "${VMDISK_SNAPSHOT:=$_fn_top/snapshotter/vmdisk-snapshot}"
vs () { "$VMDISK_SNAPSHOT" -c "$LV_URI" "$@"; }
check "vmdisk-snapshot create c1 failed" vs create "$D" c1
sleep 1
check "vmdisk-snapshot create c2 failed" vs create "$D" c2
row=$(vs list "$D" 2>/dev/null | awk '$2 == "c1"')
check "vmdisk-snapshot list: c1 is '$row', not KIND rbd BY vmdisk-snapshot" \
  grep -q "rbd.*vmdisk-snapshot" <<<"$row"
row=$(vs list "$D" 2>/dev/null | awk '$2 == "s1"')
check "vmdisk-snapshot list: s1 is '$row', not BY vmdiskfs" \
  grep -q "rbd.*vmdiskfs" <<<"$row"
check "vmdisk-snapshot prune --keep-last 1 failed" vs prune --keep-last 1 "$D"
check "after prune --keep-last 1: rbd snap ls gives '$(snaps)', not c2 s1" \
  eq "$(snaps)" "c2 s1 "
check "vmdisk-snapshot delete c2 failed" vs delete "$D" c2
check "after delete c2: rbd snap ls gives '$(snaps)'" eq "$(snaps)" "s1 "
md=$(rbd image-meta list "$IMG" 2>/dev/null | grep -c snapshot-maker)
check "after prune and delete: $md maker marks left, not 1 (s1's)" eq "$md" 1

# Restore while shut off.
truncate -s 48M "$W/new.raw"
head -c 3M /dev/urandom | dd of="$W/new.raw" bs=1M seek=5 conv=notrunc status=none
check "cp of a backup over vda.img failed" cp "$W/new.raw" "$V"
export_of "$IMG" "$W/after.raw"
check "after cp: rbd export differs from the backup" same_bytes "$W/after.raw" "$W/new.raw"
export_of "$IMG@s1" "$W/s1-after.raw"
check "after cp: snapshot s1 changed" same_bytes "$W/s1-after.raw" "$W/s1.raw"
# Zeros became discards: the 3 MiB of data are in 1 or 2 objects.
used=$(rbd du --format json "$IMG" 2>/dev/null | python3 -c '
import json, sys
print(sum(i["used_size"] for i in json.load(sys.stdin)["images"]
          if i.get("snapshot") is None))')
echo "rbd du of the restored image: $used bytes used" >&2
check "after cp: rbd du says $used bytes used (3 MiB of data in 48 MiB)" \
  test "${used:-999999999}" -le $((8 << 20))

# Another client writing the image (a VM of another host, here qemu-nbd
# with qemu's rbd driver): vda.img is not opened for writing (EBUSY).
wopen () {
  python3 -c '
import errno, os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY))
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))' "$1"
}
QNBD_PID=$W/qemu-nbd.pid
QPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if qemu-nbd --fork --persistent -f raw -b 127.0.0.1 -p "$QPORT" \
     --pid-file="$QNBD_PID" "rbd:$IMG:conf=$CEPH_CONF" 2>"$W/qemu-nbd.err"; then
  err=$(wopen "$V")
  check "opening vda.img for writing while qemu-nbd has the image gave '$err', not EBUSY" \
    eq "$err" EBUSY
  kill "$(cat "$QNBD_PID")"
  wait_for 10 sh -c "! kill -0 $(cat "$QNBD_PID") 2>/dev/null || grep -q '^State:.*Z' /proc/$(cat "$QNBD_PID")/status"
  sleep 1
  err=$(wopen "$V")
  check "opening vda.img for writing after qemu-nbd closed the image gave '$err'" \
    eq "$err" ok
else
  check "qemu-nbd could not open the RBD image: $(cat "$W/qemu-nbd.err")" false
fi

# Running: qemu reads the image through its rbd driver.
if lv_virsh start "$D" >/dev/null 2>&1; then
  err=$(wopen "$V")
  check "opening vda.img for writing while running gave '$err', not EBUSY" eq "$err" EBUSY
  check "mkdir snapshots/live while running failed" mkdir "$MNT/$D/snapshots/live"
  export_of "$IMG@live" "$W/live.raw"
  wait_for 10 test -e "$MNT/$D/snapshots/live/vda.img"
  check "snapshots/live/vda.img differs from rbd export @live" \
    same_bytes "$MNT/$D/snapshots/live/vda.img" "$W/live.raw"
  lv_virsh destroy "$D" >/dev/null 2>&1
else
  check "virsh start of the RBD domain failed: $(lv_virsh start "$D" 2>&1 | head -3)" false
fi

lv_alive "$MNT"
if [ "$failures" -ne 0 ]; then
  tail -40 "$(vmdiskfs_log "$MNT")" >&2
  fail "$failures checks failed"
fi
echo "PASS"
