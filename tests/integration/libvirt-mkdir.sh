#!/bin/bash
# vmdiskfs - snapshots by mkdir and rmdir in <domain>/snapshots/, with a
# real libvirtd and qemu:
#  - mkdir on a shut-off domain with two qcow2 disks: the directory is
#    there when mkdir returns, with snapshot.xml (as virsh prints it),
#    domain.xml and one .raw per disk equal to the oracle of TESTING.md
#    (a copy reverted with qemu-img snapshot -a, converted), still equal
#    after the disks are written; virsh snapshot-list shows it;
#  - mkdir on a running domain whose guest keeps writing
#    (writer-bootsector.S): the snapshot's vda.img read twice while the
#    guest writes, both equal to each other and to qemu-img's reading of
#    the snapshot in a copy of the image taken afterwards;
#  - EEXIST for a libvirt snapshot and for a tag made by qemu-img only;
#    EINVAL for bad names; ENOTSUP (and nothing left behind, in libvirt
#    nor in the qcow2 image) for a domain with a raw disk that is not
#    marked snapshot='no' (and a snapshot of the others when it is);
#    names with spaces, non-ASCII letters and a '%';
#  - rmdir: gone from the mount, from virsh and from the image at once;
#    EBUSY while a file in it is open, done after it is closed; a name
#    made again after rmdir reads the new snapshot; rmdir while a reader
#    keeps opening a file: no read of wrong bytes;
#  - through libvirt's read-only socket: EACCES;
#  - mkdir and rmdir elsewhere: EPERM; by another user: EACCES; -o ro:
#    EROFS, nothing made; a bad -o snapsize stops the start.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 cmp stat
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
IMG=$TEST_DIR/img
mkdir -p "$IMG"
MiB=$((1024 * 1024))
listing () { (cd "$1" && ls -1A | LC_ALL=C sort | tr '\n' ' '); }

# The errno name of a mkdir or rmdir (or OK).
errno_of ()                     # mkdir|rmdir PATH
{
  python3 - "$1" "$2" <<'EOF'
import errno, os, sys
try:
    getattr(os, sys.argv[1])(sys.argv[2])
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
EOF
}
expect ()                       # ERRNO mkdir|rmdir PATH
{
  local got
  got=$(errno_of "$2" "$3")
  check "$2 $3: $got, want $1" eq "$got" "$1"
}
vsnaps () { lv_virsh snapshot-list --name "$1" 2>/dev/null | LC_ALL=C sort | tr '\n' '|'; }
has_vsnap () { lv_virsh snapshot-list --name "$1" 2>/dev/null | grep -qxF -- "$2"; }
# The tags of a qcow2 image, '|'-separated.
tags ()
{
  qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
print("|".join(sorted(s["name"] for s in json.load(sys.stdin).get("snapshots", []))))'
}
has_tag () { tags "$1" | tr '|' '\n' | grep -qxF -- "$2"; }

# A snapshot's disk against the reverted-copy oracle.
check_snap_disk ()              # MOUNTED-FILE IMAGE TAG
{
  lv_raw_oracle "$2" "$TEST_DIR/oracle.raw" "$3"
  check "$1: bytes differ from $2 reverted to '$3'" same_bytes "$1" "$TEST_DIR/oracle.raw"
  rm -f "$TEST_DIR/oracle.raw"
}

# ---- A shut-off domain with two qcow2 disks. ----

OFF=$P-off
A=$IMG/off-a.qcow2
B=$IMG/off-b.qcow2
lv_image qcow2 "$A" 64M
lv_image qcow2 "$B" 32M
qemu-io -f qcow2 -c "write -P 0x11 0 2M" -c "write -P 0x12 60M 1M" "$A" >/dev/null
qemu-io -f qcow2 -c "write -P 0x21 1M 1M" "$B" >/dev/null
lv_define "$OFF" qcow2:vda:"$A" qcow2:vdb:"$B"

# A domain libvirt cannot snapshot: a raw disk not marked snapshot='no'.
RAWD=$P-raw
RA=$IMG/raw-a.qcow2
RB=$IMG/raw-b.raw
lv_image qcow2 "$RA" 16M
truncate -s 8M "$RB"
lv_define "$RAWD" qcow2:vda:"$RA" raw:vdb:"$RB"
# The same, with the raw disk marked snapshot='no': only vda is taken.
NOD=$P-no
NA=$IMG/no-a.qcow2
NB=$IMG/no-b.raw
lv_image qcow2 "$NA" 16M
qemu-io -f qcow2 -c "write -P 0x51 0 1M" "$NA" >/dev/null
truncate -s 8M "$NB"
lv_define "$NOD" qcow2:vda:"$NA" raw:vdb:"$NB"
lv_virsh dumpxml --inactive "$NOD" | python3 -c '
import sys
import xml.etree.ElementTree as ET
d = ET.parse(sys.stdin)
for disk in d.getroot().iter("disk"):
    if disk.find("target").get("dev") == "vdb":
        disk.set("snapshot", "no")
d.write(sys.argv[1])' "$TEST_DIR/no.xml" || fail "editing the XML of $NOD"
lv_virsh define "$TEST_DIR/no.xml" >/dev/null || fail "virsh define $NOD (snapshot='no')"

lv_mount "$MNT" -o allow_other
echo "mounted $(vmdiskfs_pid "$MNT")"
d=$MNT/$OFF
s=$d/snapshots

t0=$(date +%s.%N)
check "mkdir $s/nightly failed" mkdir "$s/nightly"
echo "mkdir of a shut-off domain's snapshot took $(echo "$(date +%s.%N) - $t0" | bc) s"
# At once: no waiting.
check "$s/nightly holds $(listing "$s/nightly") right after mkdir" \
  eq "$(listing "$s/nightly")" "domain.xml snapshot.xml vda.img vdb.img "
check "virsh snapshot-list $OFF: $(vsnaps "$OFF")" has_vsnap "$OFF" nightly
check "$A has no tag nightly: $(tags "$A")" has_tag "$A" nightly
check "$B has no tag nightly: $(tags "$B")" has_tag "$B" nightly
virsh -c "$LV_URI" snapshot-dumpxml "$OFF" nightly >"$TEST_DIR/snap.xml"
check "snapshot.xml differs from virsh snapshot-dumpxml:
$(diff "$TEST_DIR/snap.xml" "$s/nightly/snapshot.xml" | head -10)" \
  same_bytes "$TEST_DIR/snap.xml" "$s/nightly/snapshot.xml"
check "domain.xml has no <domain>" grep -q '<domain' "$s/nightly/domain.xml"
check_snap_disk "$s/nightly/vda.img" "$A" nightly
check_snap_disk "$s/nightly/vdb.img" "$B" nightly
cp "$s/nightly/vda.img" "$TEST_DIR/before.raw"
# Frozen: the disks change, the snapshot does not.
qemu-io -f qcow2 -c "write -P 0x13 0 3M" -c "write -z 60M 512k" "$A" >/dev/null
sleep 1.1                       # past the kernel's attribute cache
check "nightly/vda.img changed when the disk was written" \
  same_bytes "$s/nightly/vda.img" "$TEST_DIR/before.raw"
rm -f "$TEST_DIR/before.raw"

# EEXIST: by us, by virsh, by qemu-img only (libvirt does not know it).
expect EEXIST mkdir "$s/nightly"
lv_virsh snapshot-create-as "$OFF" by-virsh >/dev/null || fail "snapshot-create-as"
expect EEXIST mkdir "$s/by-virsh"
qemu-img snapshot -c by-qemu-img "$B" || fail "qemu-img snapshot -c"
expect EEXIST mkdir "$s/by-qemu-img"
check "a failed mkdir touched libvirt: $(vsnaps "$OFF")" eq "$(vsnaps "$OFF")" "by-virsh|nightly|"

# EINVAL: all digits (qemu takes them for ids), a leading '-' or '.', a
# '/' (%2F), a malformed escape, a double quote or backslash (libvirt
# would hand them to qemu's savevm unescaped).
for n in 12345 -dash .dot 'a%2Fb' 'bad%zz' '%2E' 'say"hi' 'back\slash'; do
  expect EINVAL mkdir "$s/$n"
done
check "bad names reached libvirt: $(vsnaps "$OFF")" eq "$(vsnaps "$OFF")" "by-virsh|nightly|"

# Names with spaces and non-ASCII letters.
for n in 'with space' 'snïmök ✓'; do
  check "mkdir '$s/$n' failed" mkdir "$s/$n"
  check "'$n' is not in virsh snapshot-list: $(vsnaps "$OFF")" has_vsnap "$OFF" "$n"
  check "'$n'/vda.img missing" test -f "$s/$n/vda.img"
done
check_snap_disk "$s/snïmök ✓/vdb.img" "$B" 'snïmök ✓'

# At the top, an unknown name is a pending domain (restore-vm.sh): made,
# shown, removed without a trace; a domain's name: EEXIST.  Elsewhere:
# EPERM; an existing name: EEXIST.
expect OK mkdir "$MNT/newdomain"
check "pending newdomain not listed" sh -c "ls '$MNT' | grep -qx newdomain"
expect OK rmdir "$MNT/newdomain"
check "pending newdomain still there" test ! -e "$MNT/newdomain"
expect EEXIST mkdir "$d"
expect EPERM mkdir "$d/newdir"
expect EPERM mkdir "$s/nightly/newdir"
expect EEXIST mkdir "$d/snapshots"
expect EPERM rmdir "$d/snapshots"
expect EPERM rmdir "$d"
expect ENOENT rmdir "$s/no-such-snapshot"
expect ENOTDIR rmdir "$s/nightly/vda.img"

# Only root and the user who mounted (allow_other lets others in).
if command -v setpriv >/dev/null 2>&1; then
  check "nobody cannot list $s (allow_other)" \
    setpriv --reuid=65534 --regid=65534 --clear-groups ls "$s" >/dev/null
  got=$(LC_ALL=C setpriv --reuid=65534 --regid=65534 --clear-groups \
          mkdir "$s/by-nobody" 2>&1)
  check "mkdir by nobody: '$got', want EACCES" eval '[[ $got == *"Permission denied"* ]]'
  check "nobody made a snapshot" test ! -e "$s/by-nobody"
fi

# ENOTSUP, and nothing left behind.
expect ENOTSUP mkdir "$MNT/$RAWD/snapshots/nope"
check "ENOTSUP left a libvirt snapshot: $(vsnaps "$RAWD")" eq "$(vsnaps "$RAWD")" ""
check "ENOTSUP left a tag in $RA: $(tags "$RA")" eq "$(tags "$RA")" ""
check "ENOTSUP left a directory" test ! -e "$MNT/$RAWD/snapshots/nope"

# A disk marked snapshot='no' is left out.
ns=$MNT/$NOD/snapshots
check "mkdir $ns/part failed (snapshot='no' disk)" mkdir "$ns/part"
check "$ns/part holds $(listing "$ns/part")" \
  eq "$(listing "$ns/part")" "domain.xml snapshot.xml vda.img "
check "part not in virsh: $(vsnaps "$NOD")" has_vsnap "$NOD" part
check_snap_disk "$ns/part/vda.img" "$NA" part
check "rmdir $ns/part failed" rmdir "$ns/part"
check "part still in $NA: $(tags "$NA")" eq "$(tags "$NA")" ""
check "part still in virsh: $(vsnaps "$NOD")" eq "$(vsnaps "$NOD")" ""

# A '%' in the name: written %25.
if got=$(errno_of mkdir "$s/50%25 off") && [ "$got" = OK ]; then
  check "'50% off' not in virsh: $(vsnaps "$OFF")" has_vsnap "$OFF" '50% off'
  check "rmdir '50%25 off' failed" rmdir "$s/50%25 off"
else
  echo "note: mkdir '50%25 off': $got (libvirt refuses a '%'?)"
fi

# rmdir: gone at once, from libvirt and from both images.
check "rmdir '$s/with space' failed" rmdir "$s/with space"
check "'with space' still shown" test ! -e "$s/with space"
check "'with space' still in virsh: $(vsnaps "$OFF")" eq "$(has_vsnap "$OFF" 'with space' && echo yes)" ""
check "'with space' still in $A: $(tags "$A")" eq "$(has_tag "$A" 'with space' && echo yes)" ""
check "'with space' still in $B: $(tags "$B")" eq "$(has_tag "$B" 'with space' && echo yes)" ""

# rmdir with a file open under it: EBUSY, then fine once it is closed.
exec 7<"$s/nightly/vdb.img"
expect EBUSY rmdir "$s/nightly"
check "nightly went away while busy" has_vsnap "$OFF" nightly
check "nightly/vdb.img unreadable while rmdir was refused" \
  eq "$(head -c 1M <&7 | wc -c)" $MiB
exec 7<&-
check "rmdir $s/nightly after close failed" rmdir "$s/nightly"
check "nightly still shown" test ! -e "$s/nightly"
check "nightly still in virsh" eq "$(has_vsnap "$OFF" nightly && echo yes)" ""
check "nightly still in $A: $(tags "$A")" eq "$(has_tag "$A" nightly && echo yes)" ""
check "rmdir 'snïmök ✓' failed" rmdir "$s/snïmök ✓"

# The same name again, while the kernel may still remember the files of
# the deleted one: they open and read the new snapshot.
check "mkdir $s/nightly again failed" mkdir "$s/nightly"
check_snap_disk "$s/nightly/vda.img" "$A" nightly
# rmdir while a reader keeps opening a file in it: every read that
# succeeded read the snapshot; then the directory is gone.
head -c 1M "$s/nightly/vda.img" >"$TEST_DIR/expect.1m"
( for ((i = 0; i < 200; i++)); do
    head -c 1M "$s/nightly/vda.img" >"$TEST_DIR/one.1m" 2>/dev/null &&
      { cmp -s "$TEST_DIR/one.1m" "$TEST_DIR/expect.1m" && echo good || echo BAD; }
  done >"$TEST_DIR/reads" ) &
reader=$!
sleep 0.3
for ((i = 0; i < 20; i++)); do
  rmdir "$s/nightly" 2>/dev/null && break
done
wait "$reader"
echo "note: rmdir while a reader opens: $((i + 1)) tries, reads: $(sort "$TEST_DIR/reads" | uniq -c | tr -s ' \n' ' ')"
check "rmdir under a reader never succeeded" test ! -e "$s/nightly"
check "a read during rmdir read wrong bytes" test "$(grep -c BAD "$TEST_DIR/reads")" = 0
rm -f "$TEST_DIR/expect.1m" "$TEST_DIR/one.1m" "$TEST_DIR/reads"

# ---- A running domain whose guest keeps writing. ----

W=$P-writer
WA=$IMG/writer-a.qcow2          # the guest writes all over this one
WB=$IMG/writer-b.qcow2
lv_image qcow2 "$WA" 128M
lv_image qcow2 "$WB" 16M
qemu-io -f qcow2 -c "write -P 0x31 0 16M" "$WA" >/dev/null
lv_write_bootsector "$WA"
qemu-io -f qcow2 -c "write -P 0x41 0 3M" "$WB" >/dev/null
lv_define "$W" qcow2:vda:"$WA" qcow2:vdb:"$WB"
lv_virsh start "$W" >/dev/null || fail "virsh start $W"
writing () { [ "$(lv_writer_count "$WA" | cut -d' ' -f1)" -gt 0 ]; }
wait_for 60 writing || fail "the writer guest did not start writing within 60 s"

ws=$MNT/$W/snapshots
t0=$(date +%s.%N)
check "mkdir $ws/live failed (running domain)" mkdir "$ws/live"
echo "mkdir of a running domain's snapshot took $(echo "$(date +%s.%N) - $t0" | bc) s"
lv_running "$W" || fail "$W stopped after the snapshot"
echo "note: the running domain's snapshot: $(lv_virsh snapshot-info "$W" live | grep -i '^state' | tr -s ' ')"
check "$ws/live holds $(listing "$ws/live")" \
  eq "$(listing "$ws/live")" "domain.xml snapshot.xml vda.img vdb.img "
fb=$(stat -c '%y %b' "$WA")
cp "$ws/live/vda.img" "$TEST_DIR/live1.raw"
sleep 2
cp "$ws/live/vda.img" "$TEST_DIR/live2.raw"
fa=$(stat -c '%y %b' "$WA")
[ "$fa" != "$fb" ] || fail "the guest stopped writing while the snapshot was read"
check "two reads of live/vda.img differ while the guest writes" \
  same_bytes "$TEST_DIR/live1.raw" "$TEST_DIR/live2.raw"
# The oracle, afterwards, from a copy of the image qemu is writing.
cp --sparse=always "$WA" "$TEST_DIR/wa-copy.qcow2"
qemu-img convert -U -f qcow2 -l snapshot.name=live -O raw "$TEST_DIR/wa-copy.qcow2" \
  "$TEST_DIR/live-oracle.raw" || fail "qemu-img convert -U -l snapshot.name=live"
check "live/vda.img differs from qemu-img's reading of the snapshot" \
  same_bytes "$TEST_DIR/live1.raw" "$TEST_DIR/live-oracle.raw"
check "live/vda.img: size $(stat -c %s "$ws/live/vda.img")" \
  eq "$(stat -c %s "$ws/live/vda.img")" $((128 * MiB))
rm -f "$TEST_DIR"/live*.raw "$TEST_DIR/wa-copy.qcow2"
lv_raw_oracle "$WB" "$TEST_DIR/wb.raw"
check "live/vdb.img differs from $WB (never written)" same_bytes "$ws/live/vdb.img" "$TEST_DIR/wb.raw"
rm -f "$TEST_DIR/wb.raw"
check "rmdir $ws/live failed (running domain)" rmdir "$ws/live"
check "live still shown" test ! -e "$ws/live"
check "live still in virsh" eq "$(has_vsnap "$W" live && echo yes)" ""
lv_virsh destroy "$W" >/dev/null || fail "virsh destroy $W"
check "live still in $WA: $(tags "$WA")" eq "$(has_tag "$WA" live && echo yes)" ""

stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"

# ---- -o ro: EROFS, nothing made or deleted. ----

MNT=$LV_MNT_DIR/ro
RO=$MNT
lv_mount "$RO" -o ro
expect EROFS mkdir "$RO/$OFF/snapshots/ro-new"
expect EROFS rmdir "$RO/$OFF/snapshots/by-virsh"
expect EROFS mkdir "$RO/newdomain"
check "-o ro changed the snapshots: $(vsnaps "$OFF")" eq "$(vsnaps "$OFF")" "by-virsh|"
stop_vmdiskfs "$RO" || fail "the ro daemon exited with $?"

# ---- libvirt refuses to write (its read-only socket): EACCES. ----

MNT=$LV_MNT_DIR/rosock
ROS=$MNT
if [ "$LV_URI" = qemu:///system ] && [ -S /run/libvirt/libvirt-sock-ro ]; then
  start_vmdiskfs "$ROS" -o "connect=qemu:///system?socket=/run/libvirt/libvirt-sock-ro"
  expect EACCES mkdir "$ROS/$OFF/snapshots/denied"
  expect EACCES rmdir "$ROS/$OFF/snapshots/by-virsh"
  check "a read-only socket changed the snapshots: $(vsnaps "$OFF")" eq "$(vsnaps "$OFF")" "by-virsh|"
  stop_vmdiskfs "$ROS" || fail "the daemon on the read-only socket exited with $?"
fi

# ---- -o snapsize: strict. ----
for v in 0% 101% x 10%% -5M 64MB 512K ''; do
  if "$VMDISKFS" -f -o snapsize="$v",connect="$LV_URI" "$TEST_DIR/nomnt" \
       >"$TEST_DIR/bad.out" 2>&1; then
    check "-o snapsize=$v accepted" false
  else
    check "-o snapsize=$v: no message: $(cat "$TEST_DIR/bad.out")" \
      grep -q 'snapsize' "$TEST_DIR/bad.out"
  fi
done

grep -i 'assert\|leak' "$(vmdiskfs_log "$LV_MNT_DIR/mnt")" "$(vmdiskfs_log "$RO")" \
  "$(vmdiskfs_log "$ROS")" 2>/dev/null && fail "assertions or leaks in the log"
[ "$failures" = 0 ] || fail "$failures checks failed"
echo PASS
