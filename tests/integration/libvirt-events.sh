#!/bin/bash
# vmdiskfs - libvirt mode keeps up with libvirt, with a real libvirtd:
#  - what virsh does outside the mount shows in it within 3 s: define,
#    redefine (a disk added), start, destroy, domrename, snapshot-create,
#    snapshot-delete, undefine (polled every 0.1 s; FAIL after 3 s);
#  - 50 domains with 3 snapshots each (metadata by snapshot-create
#    --redefine, one shared image holding the tags) appear, and `ls -R` of
#    them takes less than 10 s;
#  - libvirtd killed and started again while a disk is open and being
#    read: the read goes on with the right bytes, the tree comes back and
#    follows events again.  Only when a test started this libvirtd (the
#    test lock keeps the other libvirt tests out meanwhile) or with
#    VDT_RESTART_LIBVIRTD=1: on a machine with other users it is skipped.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 cmp stat sha256sum
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
IMG=$TEST_DIR/img
mkdir -p "$IMG"
MiB=$((1024 * 1024))
listed () { ls -1 "$1" 2>/dev/null | grep -qxF -- "$2"; }
not_listed () { ! listed "$@"; }
same_dump () { virsh -c "$LV_URI" dumpxml --inactive "$1" | cmp -s - "$2"; }

# Within 3 s, or a FAIL line saying what did not show.
within3 ()                      # MESSAGE COMMAND...
{
  local msg=$1 t0 t1
  shift
  t0=$(date +%s%N)
  if wait_for 3 "$@"; then
    t1=$(date +%s%N)
    echo "ok: $msg after $(( (t1 - t0) / 1000000 )) ms"
  else
    lv_alive "$MNT"
    echo "FAIL: $msg: not within 3 s" >&2
    failures=$((failures + 1))
  fi
}

Q=$IMG/ev.qcow2
lv_image qcow2 "$Q" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 4M" "$Q" >/dev/null
Q2=$IMG/ev2.qcow2
lv_image qcow2 "$Q2" 8M
qemu-io -f qcow2 -c "write -P 0x22 0 1M" "$Q2" >/dev/null
Q3=$IMG/ev3.qcow2
lv_image qcow2 "$Q3" 8M
KEEP=$P-keep                    # there from the start
lv_define "$KEEP" qcow2:vdb:"$Q2"

lv_mount "$MNT"
echo "mounted $(vmdiskfs_pid "$MNT")"
check "$KEEP is not shown" listed "$MNT" "$KEEP"

# ---- Lifecycle done with virsh, seen in the mount. ----

D=$P-dom
lv_define "$D" qcow2:vda:"$Q"
within3 "define: $D appears" listed "$MNT" "$D"
virsh -c "$LV_URI" dumpxml --inactive "$D" >"$TEST_DIR/d.xml"
check "$D/domain.xml differs from virsh dumpxml --inactive" same_bytes "$MNT/$D/domain.xml" "$TEST_DIR/d.xml"

# Redefined with a second disk: domain.xml and vdb.img follow.
lv_define "$D" qcow2:vda:"$Q" qcow2:vdb:"$Q3"
virsh -c "$LV_URI" dumpxml --inactive "$D" >"$TEST_DIR/d.xml"
has_file () { [ -f "$1" ]; }
within3 "redefine: $D/vdb.img appears" has_file "$MNT/$D/vdb.img"
within3 "redefine: $D/domain.xml follows" same_bytes "$MNT/$D/domain.xml" "$TEST_DIR/d.xml"
lv_raw_oracle "$Q3" "$TEST_DIR/q3.raw"
check "$D/vdb.img differs from qemu-img convert" same_bytes "$MNT/$D/vdb.img" "$TEST_DIR/q3.raw"
lv_raw_oracle "$Q2" "$TEST_DIR/q2.raw"

lv_virsh start "$D" >/dev/null || fail "virsh start $D"
# A running domain stays, with its persistent definition.
sleep 1
check "start: $D vanished" listed "$MNT" "$D"
check "start: $D/domain.xml is no longer the inactive definition" same_dump "$D" "$MNT/$D/domain.xml"
lv_raw_oracle "$Q" "$TEST_DIR/q.raw"
check "start: $D/vda.img differs from qemu-img convert -U" same_bytes "$MNT/$D/vda.img" "$TEST_DIR/q.raw"

has_snap () { [ -f "$MNT/$1/snapshots/$2/vda.img" ]; }
no_snap () { not_listed "$MNT/$1/snapshots" "$2"; }
lv_virsh snapshot-create-as "$D" running-snap >/dev/null || fail "snapshot-create-as $D running-snap"
within3 "snapshot-create (running): $D/snapshots/running-snap appears" has_snap "$D" running-snap

lv_virsh destroy "$D" >/dev/null || fail "virsh destroy $D"
sleep 1
check "destroy: $D vanished" listed "$MNT" "$D"
check "destroy: $D/domain.xml changed" same_dump "$D" "$MNT/$D/domain.xml"

lv_virsh snapshot-create-as "$D" off-snap >/dev/null || fail "snapshot-create-as $D off-snap"
within3 "snapshot-create (shut off): $D/snapshots/off-snap appears" has_snap "$D" off-snap
lv_raw_oracle "$Q" "$TEST_DIR/snap.raw" off-snap
check "$D/snapshots/off-snap/vda.img differs from the reverted copy" \
  same_bytes "$MNT/$D/snapshots/off-snap/vda.img" "$TEST_DIR/snap.raw"
lv_virsh snapshot-delete "$D" running-snap >/dev/null || fail "snapshot-delete $D running-snap"
within3 "snapshot-delete: $D/snapshots/running-snap disappears" no_snap "$D" running-snap
check "snapshot-delete took off-snap too" has_snap "$D" off-snap
# qemu-img snapshots of a shut-off domain's image: no libvirt event at all.
qemu-img snapshot -c by-qemu-img "$Q"
within3 "qemu-img snapshot -c: $D/snapshots/by-qemu-img appears" has_snap "$D" by-qemu-img
qemu-img snapshot -d by-qemu-img "$Q"
within3 "qemu-img snapshot -d: $D/snapshots/by-qemu-img disappears" no_snap "$D" by-qemu-img

D2=$P-renamed
lv_forget_later "$D2"
lv_virsh domrename "$D" "$D2" >/dev/null || fail "domrename $D $D2"
within3 "domrename: $D2 appears" listed "$MNT" "$D2"
within3 "domrename: $D disappears" not_listed "$MNT" "$D"
has_snap_off () { has_snap "$D2" off-snap; }
check "domrename: $D2 lost its snapshot" has_snap_off

lv_virsh undefine "$D2" --snapshots-metadata >/dev/null || fail "undefine $D2"
within3 "undefine: $D2 disappears" not_listed "$MNT" "$D2"
check "undefine of another domain took $KEEP away" listed "$MNT" "$KEEP"
check "$KEEP/vdb.img differs" same_bytes "$MNT/$KEEP/vdb.img" "$TEST_DIR/q2.raw"

# ---- 50 domains, 3 snapshots each. ----

N=50
S=$IMG/shared.qcow2
lv_image qcow2 "$S" 4M
qemu-io -f qcow2 -c "write -P 0x33 0 1M" "$S" >/dev/null
for j in 1 2 3; do qemu-img snapshot -c "s$j" "$S"; done
mkdir -p "$TEST_DIR/many"
: >"$TEST_DIR/many/cmds"
for ((i = 0; i < N; i++)); do
  n=$(printf '%s-m%03d' "$P" "$i")
  cat >"$TEST_DIR/many/$i.xml" <<EOF
<domain type='$LV_DOMTYPE'>
  <name>$n</name>
  <uuid>$(cat /proc/sys/kernel/random/uuid)</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$S'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
EOF
  echo "define $TEST_DIR/many/$i.xml" >>"$TEST_DIR/many/cmds"
  for j in 1 2 3; do
    { echo "<domainsnapshot><name>s$j</name><state>shutoff</state>"
      echo "<creationTime>$((1600000000 + j))</creationTime><memory snapshot='no'/>"
      echo "<disks><disk name='vda' snapshot='internal'/></disks>"
      sed 's/^/  /' "$TEST_DIR/many/$i.xml"
      echo "</domainsnapshot>"; } >"$TEST_DIR/many/$i-$j.xml"
    echo "snapshot-create $n $TEST_DIR/many/$i-$j.xml --redefine" >>"$TEST_DIR/many/cmds"
  done
  lv_forget_later "$n"
done
t0=$(date +%s%N)
lv_virsh <"$TEST_DIR/many/cmds" >/dev/null || fail "defining $N domains"
t1=$(date +%s%N)
echo "defined $N domains x 3 snapshots in $(( (t1 - t0) / 1000000 )) ms"
many_there () { [ "$(ls -1 "$MNT" | grep -c -- "^$P-m")" = $N ]; }
wait_for 10 many_there || check "$(ls -1 "$MNT" | grep -c -- "^$P-m") of $N domains shown after 10 s" false
# Our 50 (other domains may exist on the host: the whole mount is only
# reported).
t0=$(date +%s%N)
(cd "$MNT" && ls -R "$P"-m*) >"$TEST_DIR/many/ls1" || check "ls -R of $N domains failed" false
t1=$(date +%s%N)
(cd "$MNT" && ls -R "$P"-m*) >/dev/null
t2=$(date +%s%N)
ls -R "$MNT" >/dev/null 2>&1
t3=$(date +%s%N)
echo "ls -R of $N domains: $(( (t1 - t0) / 1000000 )) ms, again $(( (t2 - t1) / 1000000 )) ms; of the whole mount ($(ls -1 "$MNT" | wc -l) domains): $(( (t3 - t2) / 1000000 )) ms"
check "ls -R of $N domains took more than 10 s" test $(( (t1 - t0) / 1000000 )) -lt 10000
n=$(grep -c '^s[123]$' "$TEST_DIR/many/ls1")
check "ls -R shows $n snapshots named s1..s3, want at least $((N * 3))" test "$n" -ge $((N * 3))
lv_raw_oracle "$S" "$TEST_DIR/s2.raw" s2
check "$P-m007/snapshots/s2/vda.img differs" same_bytes "$MNT/$P-m007/snapshots/s2/vda.img" "$TEST_DIR/s2.raw"
check "$P-m007/snapshots/s2: mtime $(stat -c %Y "$MNT/$P-m007/snapshots/s2")" \
  eq "$(stat -c %Y "$MNT/$P-m007/snapshots/s2")" 1600000002
for ((i = 0; i < N; i++)); do
  printf 'undefine %s-m%03d --snapshots-metadata\n' "$P" "$i"
done | lv_virsh >/dev/null
many_gone () { [ "$(ls -1 "$MNT" | grep -c -- "^$P-m")" = 0 ]; }
within3 "$N undefined domains disappear" many_gone
rm -rf "$TEST_DIR/many"

# ---- libvirtd restarted while a disk is being read. ----

if ! lv_started_libvirtd && [ "${VDT_RESTART_LIBVIRTD:-0}" != 1 ]; then
  echo "SKIP (part): libvirtd was not started by the tests (set VDT_RESTART_LIBVIRTD=1 to restart it anyway)"
elif ! lv_exclusive; then
  echo "SKIP (part): other libvirt tests kept running for 5 min; libvirtd not restarted"
else
  old=$(pgrep -x -o libvirtd)
  sha=$(sha256sum <"$TEST_DIR/q2.raw" | cut -d' ' -f1)
  # A slow reader: 8 MiB in 64 KiB pieces over about 6 s.
  python3 - "$MNT/$KEEP/vdb.img" >"$TEST_DIR/reader.out" 2>&1 <<'EOF' &
import hashlib, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
h = hashlib.sha256()
off = 0
while True:
    b = os.pread(fd, 65536, off)
    if not b:
        break
    h.update(b)
    off += len(b)
    time.sleep(0.05)
print(h.hexdigest())
EOF
  reader=$!
  sleep 1
  kill "$old"
  gone () { ! kill -0 "$old" 2>/dev/null; }
  wait_for 10 gone || fail "libvirtd $old did not exit"
  sleep 1
  lv_daemon libvirtd || fail "libvirtd -d did not start again"
  wait_for 30 _lv_answers || fail "the new libvirtd does not answer"
  new=$(pgrep -x -o libvirtd)
  [ -s "$LV_MARK" ] && echo "$new" >"$LV_MARK"
  echo "libvirtd restarted: $old -> $new"
  wait "$reader" || check "the reader failed across the restart: $(cat "$TEST_DIR/reader.out")" false
  check "the reader read other bytes across the restart: $(cat "$TEST_DIR/reader.out")" \
    eq "$(cat "$TEST_DIR/reader.out")" "$sha"
  t0=$(date +%s%N)
  keep_back () { listed "$MNT" "$KEEP" && [ -f "$MNT/$KEEP/domain.xml" ]; }
  if wait_for 10 keep_back; then
    echo "ok: the tree is back $(( ($(date +%s%N) - t0) / 1000000 )) ms after libvirtd answered"
  else
    check "the tree did not come back within 10 s of the restart" false
  fi
  # Events again after the reconnect.
  D3=$P-after
  lv_define "$D3" qcow2:vda:"$Q2"
  within3 "define after the restart: $D3 appears" listed "$MNT" "$D3"
  lv_virsh undefine "$D3" >/dev/null
  within3 "undefine after the restart: $D3 disappears" not_listed "$MNT" "$D3"
  check "after the restart $KEEP/domain.xml differs" same_dump "$KEEP" "$MNT/$KEEP/domain.xml"
fi

stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"
grep -i 'assert\|leak' "$(vmdiskfs_log "$MNT")" && fail "assertions or leaks in the log"
[ "$failures" = 0 ] || fail "$failures checks failed"
echo PASS
