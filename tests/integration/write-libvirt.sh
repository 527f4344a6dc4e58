#!/bin/bash
# vmdiskfs - restoring a libvirt domain's disks through the mount, with a
# real libvirtd and qemu.  A shut-off domain with a qcow2 disk (internal
# snapshots made by virsh snapshot-create-as) and a raw disk (marked
# snapshot='no'): each disk restored with cp, rsync -a into the domain
# directory and tar -xSf: the image's bytes are the backup's, virsh
# snapshot-list and every snapshot's bytes unchanged, qemu-img check
# clean, the staging directory empty.  While a disk is open for writing
# `virsh start` fails (qemu's lock error) and the domain stays shut off,
# and mkdir snapshots/x fails with EBUSY until the close.  After the restores the
# domain starts; a running domain's disk gives EBUSY at open, with a log
# line naming the domain and the disk, and nothing changes.  The qcow2
# parts are skipped (with a message) until the qcow2 writer lands.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 qemu-img qemu-io rsync tar cmp md5sum
lv_start
qcow2_supported || skip "the qcow2 reader is not built"

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
IMG=$TEST_DIR/img
BK=$TEST_DIR/backup
STAGE=$TEST_DIR/staging
mkdir -p "$IMG" "$BK"
mkdir -m 0700 "$STAGE"
MiB=$((1024 * 1024))

staging_empty () { [ -z "$(ls -A "$STAGE")" ] || { ls -la "$STAGE" >&2; return 1; }; }
unlocked () { ! image_locked "$1"; }
vsnaps () { lv_virsh snapshot-list --name "$1" 2>/dev/null | LC_ALL=C sort | tr '\n' '|'; }
state () { lv_virsh domstate "$1" 2>/dev/null; }

# ---- The domain: vda qcow2 (two snapshots by virsh), vdb raw. ----

D=$P-dom
A=$IMG/dom-a.qcow2
R=$IMG/dom-b.raw
lv_image qcow2 "$A" 32M
qemu-io -f qcow2 -c "write -P 0x11 0 8M" -c "write -P 0x12 30M 1M" "$A" >/dev/null
qemu-img create -q -f raw "$R" 16M
qemu-io -f raw -c "write -P 0x21 0 16M" "$R" >/dev/null
# libvirt makes internal snapshots only of domains whose disks all take
# them: the snapshots first, then the raw disk (snapshot='no', so that
# mkdir snapshots/x works: vmdiskfs's own path).
lv_define "$D" qcow2:vda:"$A"
lv_virsh snapshot-create-as "$D" first >/dev/null || fail "virsh snapshot-create-as $D first"
qemu-io -f qcow2 -c "write -P 0x13 4M 8M" -c "write -z 0 1M" "$A" >/dev/null
lv_virsh snapshot-create-as "$D" second >/dev/null || fail "virsh snapshot-create-as $D second"
qemu-io -f qcow2 -c "write -P 0x14 20M 4M" "$A" >/dev/null
lv_define "$D" qcow2:vda:"$A" raw:vdb:"$R"
lv_virsh dumpxml --inactive "$D" | python3 -c '
import sys
import xml.etree.ElementTree as ET
d = ET.parse(sys.stdin)
for disk in d.getroot().iter("disk"):
    if disk.find("target").get("dev") == "vdb":
        disk.set("snapshot", "no")
d.write(sys.argv[1])' "$TEST_DIR/dom.xml" || fail "editing the XML of $D"
lv_virsh define "$TEST_DIR/dom.xml" >/dev/null || fail "virsh define $D (snapshot='no')"
vsnaps0=$(vsnaps "$D")
[ "$vsnaps0" = "first|second|" ] || fail "virsh snapshot-list $D: $vsnaps0"
sums0=$(snapshot_sums "$A")

# ---- Backups, half zeros, named as the mount names the disks. ----

backup ()                       # NAME SIZE-MiB
{
  local b=$BK/$1 i
  truncate -s $(($2 * MiB)) "$b.tmp"
  for ((i = 0; i < $2; i += 2)); do
    dd if=/dev/urandom of="$b.tmp" bs=1M count=1 seek=$i conv=notrunc status=none
  done
  dd if=/dev/urandom of="$b.tmp" bs=1 count=777 seek=$((3 * MiB + 4321)) \
     conv=notrunc status=none
  cp --sparse=always "$b.tmp" "$b"
  rm -f "$b.tmp"
  touch -d '2021-06-07 08:09:10' "$b"
  backup_tar "$b"
}
backup vda.img 32
backup vdb.img 16

lv_mount "$MNT" -o staging="$STAGE"
echo "mounted $(vmdiskfs_pid "$MNT")"
DD=$MNT/$(lv_escape "$D")
[ -f "$DD/vda.img" ] && [ -f "$DD/vdb.img" ] || fail "no disks in $DD: $(ls "$DD")"

# ---- Restores. ----

declare -A image=([vda.img]=$A [vdb.img]=$R)
DISKS=
for k in vda.img vdb.img; do
  e=$(op_errno 'os.close(os.open(path, os.O_WRONLY))' "$DD/$k")
  wait_for 10 unlocked "${image[$k]}"
  case $e in
    ok) DISKS="$DISKS $k" ;;
    EROFS) echo "SKIP (part): $k: no writer for $(image_format "${image[$k]}") yet (EROFS)" ;;
    *) check "$k: open for writing gave $e" false ;;
  esac
done

for k in $DISKS; do
  img=${image[$k]}
  fmt=$(image_format "$img")
  for tool in cp rsync tar-S; do
    # As if the VM had run since: changed behind the mount's back.
    qemu-io -f "$fmt" -c "write -P $((RANDOM % 200 + 16)) 0 16M" "$img" >/dev/null ||
      fail "qemu-io on $img"
    what="$tool onto $D/$k"
    rc=0
    restore_with "$tool" "$BK/$k" "$DD/$k" 2>"$TEST_DIR/tool.err" || rc=$?
    check "$what: exit $rc: $(cat "$TEST_DIR/tool.err")" eq $rc 0
    check "$what: still locked after the tool exited" wait_for 10 unlocked "$img"
    check "$what: bytes differ (qemu-img compare -f raw -F $fmt $BK/$k $img)" \
      qemu-img compare -q -U -f raw -F "$fmt" "$BK/$k" "$img"
    check "$what: the mount's disk differs from the backup" same_bytes "$DD/$k" "$BK/$k"
    check "$what: virsh snapshot-list $(vsnaps "$D"), was $vsnaps0" eq "$(vsnaps "$D")" "$vsnaps0"
    check "$what: snapshots' bytes changed" eq "$(snapshot_sums "$A")" "$sums0"
    check "$what: qemu-img check" image_clean "$img"
    check "$what: allocation larger than the backup's data" \
      eval '[ "$(data_bytes "$img")" -le "$(rounded_data "$BK/$k" 65536)" ]'
    check "$what: the staging directory is not empty" staging_empty
    check "$what: the domain is $(state "$D")" eq "$(state "$D")" "shut off"
  done
  echo "restored $k with cp, rsync -a and tar -xSf"
done

errno_of_mkdir ()                # the errno name of mkdir PATH, or OK
{
  python3 -c '
import errno, os, sys
try:
    os.mkdir(sys.argv[1]); print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))' "$1"
}

# ---- Open for writing: the domain cannot start, mkdir is EBUSY. ----

k=vdb.img
case " $DISKS " in *" vda.img "*) k=vda.img ;; esac
if [ -n "$DISKS" ]; then
  exec 3>>"$DD/$k" || fail "exec 3>>$DD/$k"
  check "$k open for writing: not locked" image_locked "${image[$k]}"
  if lv_virsh start "$D" >/dev/null 2>"$TEST_DIR/start.err"; then
    check "virsh start succeeded while $k is open for writing" false
    lv_virsh destroy "$D" >/dev/null 2>&1
  else
    check "virsh start: not qemu's lock error: $(cat "$TEST_DIR/start.err")" \
      grep -qi 'lock' "$TEST_DIR/start.err"
  fi
  check "the domain is $(state "$D") while $k is open for writing" eq "$(state "$D")" "shut off"
  # mkdir under snapshots/ in this mount fails at once with EBUSY while
  # our own writer holds the domain's snapshot lock (it would wait for
  # the close, unkillable in the kernel); after the close it works.
  # (Not inheriting fd 3: it would keep the disk open for writing.)
  got=$(errno_of_mkdir "$DD/snapshots/during" 3>&-)
  check "mkdir snapshots/during while $k is written: $got, want EBUSY" \
    eq "$got" EBUSY
  exec 3>&-
  check "mkdir snapshots/during after the close" mkdir "$DD/snapshots/during"
  check "rmdir snapshots/during" rmdir "$DD/snapshots/during"
  check "snapshot-list after mkdir/rmdir: $(vsnaps "$D")" eq "$(vsnaps "$D")" "$vsnaps0"
  check "$k closed: still locked" wait_for 10 unlocked "${image[$k]}"
fi

# ---- Another program holds the image (shut off): EBUSY, one log line
# naming the domain, the disk and the holder. ----

qemu-io -f raw -c "sleep 60000" "$R" >/dev/null 2>"$TEST_DIR/holder.err" &
holder=$!
on_exit "kill $holder 2>/dev/null"
if wait_for 30 eval 'kill -0 $holder 2>/dev/null && image_locked "$R"'; then
  nlog=$(wc -l <"$(vmdiskfs_log "$MNT")")
  got=$(op_errno 'os.open(path, os.O_WRONLY)' "$DD/vdb.img")
  check "held by qemu-io: open vdb.img for writing: $got, want EBUSY" eq "$got" EBUSY
  tail -n +$((nlog + 1)) "$(vmdiskfs_log "$MNT")" >"$TEST_DIR/busy.log"
  check "held by qemu-io: not one log line: $(cat "$TEST_DIR/busy.log")" \
    eq "$(wc -l <"$TEST_DIR/busy.log")" 1
  check "held by qemu-io: the line does not name $D, vdb.img and qemu-io: $(cat "$TEST_DIR/busy.log")" \
    grep -q "$D.*vdb.img.*in use by .*qemu-io" "$TEST_DIR/busy.log"
else
  check "qemu-io does not hold $R: $(cat "$TEST_DIR/holder.err")" false
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# ---- After the restores the domain starts; running: EBUSY. ----

check "virsh start after the restores: $(lv_virsh start "$D" 2>&1)" lv_running "$D"
if lv_running "$D"; then
  wait_for 30 image_locked "$R" || check "qemu does not hold $R" false
  sum0=$(md5sum <"$R")
  for k in vda.img vdb.img; do
    check "running: open $k for writing: $(op_errno 'os.open(path, os.O_WRONLY)' "$DD/$k")" \
      eq "$(op_errno 'os.open(path, os.O_WRONLY)' "$DD/$k")" EBUSY
    check "running: no log line naming $D and $k" \
      grep -q "$D.*$k.*running" "$(vmdiskfs_log "$MNT")"
  done
  if cp "$BK/vdb.img" "$DD/vdb.img" 2>/dev/null; then
    check "running: cp onto vdb.img succeeded" false
  fi
  # -I: the disk has the backup's size and mtime already (restored above),
  # which rsync's quick check would take for "nothing to do".
  if rsync -a -I "$BK/vdb.img" "$DD/" 2>/dev/null; then
    check "running: rsync -a onto vdb.img succeeded" false
  fi
  check "running: the staging directory is not empty" wait_for 5 staging_empty
  check "running: the raw image changed" eq "$(md5sum <"$R")" "$sum0"
  check "running: the domain stopped" lv_running "$D"
  lv_virsh destroy "$D" >/dev/null 2>&1
fi
check "snapshot-list at the end: $(vsnaps "$D")" eq "$(vsnaps "$D")" "$vsnaps0"
check "snapshots' bytes at the end" eq "$(snapshot_sums "$A")" "$sums0"

stop_vmdiskfs "$MNT" || check "the daemon exited with $?" false
[ $failures = 0 ] || fail "$failures checks failed"
echo PASS
