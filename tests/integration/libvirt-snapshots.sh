#!/bin/bash
# vmdiskfs - libvirt mode, snapshots, with a real libvirtd and qemu:
#  - internal snapshots by `virsh snapshot-create-as` of a shut-off domain
#    (disk only) with two qcow2 disks, one of them grown afterwards (the
#    snapshot keeps its size), and one made by `qemu-img snapshot` that
#    libvirt does not know (shown by tag, with only its disk);
#  - snapshot.xml byte for byte as `virsh snapshot-dumpxml` prints it, the
#    snapshot's domain.xml the <domain> stored in it, times the snapshot's
#    creation time, every .raw against the oracle of TESTING.md (a copy
#    reverted with `qemu-img snapshot -a`, converted);
#  - THE LIVE TEST: a guest that writes (writer-bootsector.S) runs; a
#    snapshot with VM state is taken with virsh; while the guest keeps
#    writing, the snapshot's .raw files are read through the mount three
#    times, 5 s apart: every pass equal to `qemu-img convert -U -l
#    snapshot.name=...` (and the VM state in none of them); the running
#    domain's active disk reads without errors at its size; once the guest
#    is stopped, the snapshot equals the reverted-copy oracle too.
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

# qemu-img info of IMAGE: "id|name|date-sec|vm-state-size|size" per snapshot.
snap_table ()
{
  qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
for s in json.load(sys.stdin).get("snapshots", []):
    print("%s|%s|%s|%s|%s" % (s["id"], s["name"], s["date-sec"],
                              s["vm-state-size"], s.get("virtual-size", "")))'
}
snap_field ()                   # IMAGE TAG FIELD(1-5)
{
  snap_table "$1" | awk -F'|' -v t="$2" -v f="$3" '$2 == t { print $f; exit }'
}

# The snapshot's creation time in libvirt's XML.
creation_time ()                # DOMAIN SNAPSHOT
{
  lv_virsh snapshot-dumpxml "$1" "$2" | sed -n 's|.*<creationTime>\([0-9]*\)</creationTime>.*|\1|p'
}

# The domain stored in a snapshot's XML (<inactiveDomain>, which libvirt
# stores for a running domain, else <domain>) and a domain.xml, compared
# as element trees (tags, attributes, text; whitespace between elements
# is formatting).
same_domain_xml ()              # SNAPSHOT-XML DOMAIN-XML
{
  python3 - "$1" "$2" <<'EOF'
import sys
import xml.etree.ElementTree as ET
def canon(e):
    return (e.tag, sorted(e.attrib.items()), (e.text or "").strip(),
            [canon(c) for c in e])
root = ET.parse(sys.argv[1]).getroot()
snap = root.find("inactiveDomain")
if snap is not None:
    snap.tag = "domain"
else:
    snap = root.find("domain")
dom = ET.parse(sys.argv[2]).getroot()
if snap is None:
    sys.exit("no <domain> in the snapshot XML")
if dom.tag != "domain":
    sys.exit("domain.xml: root <%s>" % dom.tag)
sys.exit(0 if canon(snap) == canon(dom) else "the <domain> elements differ")
EOF
}

# Check every file of one libvirt snapshot directory.
check_snapshot ()               # DOMAIN SNAPSHOT EXPECTED-FILES
{
  local dom=$1 snap=$2 files=$3 d t f
  d=$MNT/$(lv_escape "$dom")/snapshots/$(lv_escape "$snap")
  check "$d holds $(listing "$d"), want $files" eq "$(listing "$d")" "$files"
  virsh -c "$LV_URI" snapshot-dumpxml "$dom" "$snap" >"$TEST_DIR/snap.xml"
  check "$d/snapshot.xml differs from virsh snapshot-dumpxml:
$(diff "$TEST_DIR/snap.xml" "$d/snapshot.xml" | head -10)" \
    same_bytes "$TEST_DIR/snap.xml" "$d/snapshot.xml"
  check "$d/domain.xml is not the <domain> of the snapshot's XML" \
    same_domain_xml "$TEST_DIR/snap.xml" "$d/domain.xml"
  t=$(creation_time "$dom" "$snap")
  for f in "$d" "$d"/*; do
    check "$f: mtime $(stat -c %Y "$f"), the snapshot was created at $t" \
      eq "$(stat -c %Y "$f")" "$t"
  done
}

# A snapshot's disk against the reverted-copy oracle: bytes, size.
check_snapshot_disk ()          # MOUNTED-FILE IMAGE TAG
{
  local f=$1 img=$2 tag=$3 size
  lv_raw_oracle "$img" "$TEST_DIR/oracle.raw" "$tag"
  size=$(stat -c %s "$TEST_DIR/oracle.raw")
  check "$f: bytes differ from $img reverted to '$tag'" \
    same_bytes "$f" "$TEST_DIR/oracle.raw"
  check "$f: size $(stat -c %s "$f"), want $size" eq "$(stat -c %s "$f")" "$size"
  rm -f "$TEST_DIR/oracle.raw"
}

# ---- A shut-off domain with two qcow2 disks and three snapshots. ----

OFF=$P-off
A=$IMG/off-a.qcow2
B=$IMG/off-b.qcow2
lv_image qcow2 "$A" 64M
lv_image qcow2 "$B" 32M
qemu-io -f qcow2 -c "write -P 0x11 0 2M" -c "write -P 0x12 60M 1M" "$A" >/dev/null
qemu-io -f qcow2 -c "write -P 0x21 1M 1M" "$B" >/dev/null
lv_define "$OFF" qcow2:vda:"$A" qcow2:vdb:"$B"
lv_virsh snapshot-create-as "$OFF" first --description "the first one" >/dev/null ||
  fail "snapshot-create-as $OFF first"
qemu-io -f qcow2 -c "write -P 0x13 1M 2M" -c "write -z 60M 512k" "$A" >/dev/null
qemu-io -f qcow2 -c "write -P 0x22 0 4M" "$B" >/dev/null
sleep 1                         # distinct creation times
S2='second one'
lv_virsh snapshot-create-as "$OFF" "$S2" >/dev/null || fail "snapshot-create-as $OFF '$S2'"
# Grown after the snapshots: they keep 64M.
qemu-img resize -q "$A" 80M
qemu-io -f qcow2 -c "write -P 0x14 70M 1M" -c "write -P 0x15 0 512k" "$A" >/dev/null
# An odd snapshot name, if libvirt takes it.
S3='per%cent'
if lv_virsh snapshot-create-as "$OFF" "$S3" >/dev/null 2>"$TEST_DIR/s3.err"; then
  off_snaps="$S2|first|$S3"
else
  echo "note: libvirt refuses the snapshot name '$S3': $(cat "$TEST_DIR/s3.err")"
  S3=
  off_snaps="$S2|first"
fi
qemu-io -f qcow2 -c "write -P 0x16 5M 1M" "$A" >/dev/null
# Made by qemu-img, unknown to libvirt: only on vda.
sleep 1
qemu-img snapshot -c qimg "$A"

lv_mount "$MNT"
echo "mounted $(vmdiskfs_pid "$MNT")"

d=$MNT/$OFF
want=$( { echo first; echo "$S2"; [ -n "$S3" ] && lv_escape "$S3"; echo qimg; } |
        LC_ALL=C sort | tr '\n' ' ')
check "$OFF/snapshots holds $(listing "$d/snapshots"), want $want" \
  eq "$(listing "$d/snapshots")" "$want"
for s in first "$S2" ${S3:+"$S3"}; do
  check_snapshot "$OFF" "$s" "domain.xml snapshot.xml vda.img vdb.img "
  e=$(lv_escape "$s")
  check_snapshot_disk "$d/snapshots/$e/vda.img" "$A" "$s"
  check_snapshot_disk "$d/snapshots/$e/vdb.img" "$B" "$s"
  size=$((64 * MiB))
  [ "$s" = "$S3" ] && size=$((80 * MiB))       # taken after the resize
  check "$s/vda.img: size $(stat -c %s "$d/snapshots/$e/vda.img"), the snapshot was of $size" \
    eq "$(stat -c %s "$d/snapshots/$e/vda.img")" $size
done
# The qemu-img snapshot: its disk, its time (qemu-img's date).
q=$d/snapshots/qimg
check "qimg has no vda.img: $(listing "$q")" test -f "$q/vda.img"
check "qimg shows vdb.img, which has no such snapshot" test ! -e "$q/vdb.img"
echo "note: snapshots/qimg holds $(listing "$q")"
check_snapshot_disk "$q/vda.img" "$A" qimg
qd=$(snap_field "$A" qimg 3)
check "qimg/vda.img: mtime $(stat -c %Y "$q/vda.img"), qemu-img says $qd" \
  eq "$(stat -c %Y "$q/vda.img")" "$qd"
check "qimg/vda.img: size $(stat -c %s "$q/vda.img")" eq "$(stat -c %s "$q/vda.img")" $((80 * MiB))
# The active disks: today's size.
lv_raw_oracle "$A" "$TEST_DIR/a.raw"
check "$OFF/vda.img differs from qemu-img convert" same_bytes "$d/vda.img" "$TEST_DIR/a.raw"
rm -f "$TEST_DIR/a.raw"
# cp --sparse of a snapshot keeps the bytes.
cp --sparse=always "$d/snapshots/first/vdb.img" "$TEST_DIR/copy.raw"
lv_raw_oracle "$B" "$TEST_DIR/oracle.raw" first
check "cp --sparse of first/vdb.img differs" same_bytes "$TEST_DIR/copy.raw" "$TEST_DIR/oracle.raw"
rm -f "$TEST_DIR/copy.raw" "$TEST_DIR/oracle.raw"

# ---- THE LIVE TEST: a guest that writes. ----

W=$P-writer
WA=$IMG/writer-a.qcow2          # the guest writes all over this one
WB=$IMG/writer-b.qcow2          # and not on this one
lv_image qcow2 "$WA" 256M
lv_image qcow2 "$WB" 16M
qemu-io -f qcow2 -c "write -P 0x31 0 16M" "$WA" >/dev/null
lv_write_bootsector "$WA"
qemu-io -f qcow2 -c "write -P 0x41 0 3M" "$WB" >/dev/null
lv_define "$W" qcow2:vda:"$WA" qcow2:vdb:"$WB"
lv_virsh start "$W" >/dev/null || fail "virsh start $W"
# Progress: the counter in sector 1 while that cluster is written in place
# (before the snapshot); after it, qemu keeps the new L2 tables in its
# cache (no flush from the guest), so a reader of the file sees the image
# file's mtime and allocation move instead.
writing () { [ "$(lv_writer_count "$WA" | cut -d' ' -f1)" -gt 0 ]; }
file_state () { stat -c '%y %b' "$1"; }
wait_for 60 writing || fail "the writer guest did not start writing within 60 s"
a1=$(lv_allocated "$WA")
c1=$(lv_writer_count "$WA")
sleep 2
a2=$(lv_allocated "$WA")
c2=$(lv_writer_count "$WA")
echo "writer: count ${c1% *} -> ${c2% *}, allocated $a1 -> $a2 bytes in 2 s"
[ "${c2% *}" -gt "${c1% *}" ] || fail "the writer guest does not write (count ${c1% *} -> ${c2% *})"
[ "$a2" -gt "$a1" ] || fail "the writer guest does not allocate ($a1 -> $a2)"
[ "${c2#* }" = 0 ] || fail "the writer guest's writes fail (${c2#* } errors)"

t0=$(date +%s)
lv_virsh snapshot-create-as "$W" live >/dev/null || fail "snapshot-create-as $W live (running)"
echo "snapshot with VM state took $(($(date +%s) - t0)) s"
lv_running "$W" || fail "$W stopped after the snapshot"
vmstate=$(snap_field "$WA" live 4)
echo "VM state in $WA: ${vmstate:-none} bytes"
[ "${vmstate:-0}" -gt 0 ] || [ "$(snap_field "$WB" live 4)" -gt 0 ] ||
  fail "the running snapshot saved no VM state (is the test still testing that?)"
has_live () { [ -f "$MNT/$W/snapshots/live/vda.img" ]; }
wait_for 4 has_live || fail "snapshots/live did not appear within 4 s"

# The oracle, from the image qemu is writing (force-share).  The guest
# writes no size change, so -l snapshot.name is right here.
qemu-img convert -U -f qcow2 -l snapshot.name=live -O raw "$WA" "$TEST_DIR/live-a.raw" ||
  fail "qemu-img convert -U -l snapshot.name=live $WA"
qemu-img convert -U -f qcow2 -l snapshot.name=live -O raw "$WB" "$TEST_DIR/live-b.raw" ||
  fail "qemu-img convert -U -l snapshot.name=live $WB"
check "the live oracle is not 256 MiB: VM state in it?" \
  eq "$(stat -c %s "$TEST_DIR/live-a.raw")" $((256 * MiB))
ls=$MNT/$W/snapshots/live
check_snapshot "$W" live "domain.xml snapshot.xml vda.img vdb.img "
for pass in 1 2 3; do
  [ "$pass" = 1 ] || sleep 5
  fb=$(file_state "$WA")
  check "live pass $pass: vda.img differs from the oracle (the guest writes meanwhile)" \
    same_bytes "$ls/vda.img" "$TEST_DIR/live-a.raw"
  check "live pass $pass: vdb.img differs from the oracle" \
    same_bytes "$ls/vdb.img" "$TEST_DIR/live-b.raw"
  check "live pass $pass: vda.img size $(stat -c %s "$ls/vda.img")" \
    eq "$(stat -c %s "$ls/vda.img")" $((256 * MiB))
  fa=$(file_state "$WA")
  echo "live pass $pass: $WA went from ${fb#* } to ${fa#* } blocks while it ran"
  [ "$fa" != "$fb" ] || fail "the guest stopped writing during pass $pass (mtime and blocks of $WA unchanged)"
done
# The oracle itself must not have moved.
qemu-img convert -U -f qcow2 -l snapshot.name=live -O raw "$WA" "$TEST_DIR/live-a2.raw"
check "qemu-img convert -U of the snapshot changed while the guest wrote (oracle unstable)" \
  same_bytes "$TEST_DIR/live-a.raw" "$TEST_DIR/live-a2.raw"
rm -f "$TEST_DIR/live-a2.raw"

# The active disk of the running domain: crash-consistent, no errors.
n=$(cat "$MNT/$W/vda.img" | wc -c) || true
check "reading the running domain's active vda.img gave $n bytes, want $((256 * MiB))" \
  eq "$n" $((256 * MiB))
check "the running domain's vda.img: size $(stat -c %s "$MNT/$W/vda.img")" \
  eq "$(stat -c %s "$MNT/$W/vda.img")" $((256 * MiB))
lv_raw_oracle "$WB" "$TEST_DIR/wb.raw"
check "the running domain's vdb.img (not written) differs from qemu-img convert -U" \
  same_bytes "$MNT/$W/vdb.img" "$TEST_DIR/wb.raw"

# Stopped: the snapshot against the reverted copy, the active disk exact.
lv_virsh destroy "$W" >/dev/null || fail "virsh destroy $W"
check_snapshot_disk "$ls/vda.img" "$WA" live
check "after the guest stopped, snapshots/live/vda.img differs from the live oracle" \
  same_bytes "$ls/vda.img" "$TEST_DIR/live-a.raw"
rm -f "$TEST_DIR"/live-*.raw "$TEST_DIR/wb.raw"
lv_raw_oracle "$WA" "$TEST_DIR/wa.raw"
for i in 1 2 3 4; do            # the daemon rescans a changed image
  same_bytes "$MNT/$W/vda.img" "$TEST_DIR/wa.raw" && break
  sleep 1
done
check "$W/vda.img differs from qemu-img convert after the guest stopped" \
  same_bytes "$MNT/$W/vda.img" "$TEST_DIR/wa.raw"
rm -f "$TEST_DIR/wa.raw"

stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"
grep -i 'assert\|leak' "$(vmdiskfs_log "$MNT")" && fail "assertions or leaks in the log"
[ "$failures" = 0 ] || fail "$failures checks failed"
echo PASS
