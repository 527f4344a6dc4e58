#!/bin/bash
# vmdiskfs - making and deleting domain snapshots over real LVM (issue 4),
# inside the test guest (run it through tests/lvm/guest.sh;
# tests/integration/lvm-snapshots.sh does), with a libvirtd of the guest's
# own, through both ways of making them: mkdir/rmdir of
# <domain>/snapshots/<name> in a vmdiskfs mount and vmdisk-snapshot.
#
#  - cls: one classic LV: the snapshot LV <origin>-<name> with the tags,
#    its copy-on-write size from -o snapsize=25%, --cow-size 12M and 30%,
#    the bytes of the moment in snapshots/<name>/vda.img, rmdir/delete;
#  - thn: one thin LV: a thin snapshot, inactive until read, rmdir;
#  - mix: thin LV, qcow2 (on the guest's tmpfs), classic LV: shut off,
#    then RUNNING (TCG inside TCG) a guest that writes a counter to the
#    three disks in turn (counter-bootsector.S, booted from a fourth disk
#    left out of snapshots): the domain is paused while the snapshots are
#    taken (libvirt's lifecycle events around the classic snapshot's
#    device node, the thin one's lv_time and the qcow2 snapshot's date),
#    the counters in the snapshot's three disks are of one point in time,
#    every disk's bytes of that moment, the qcow2 tag and the libvirt
#    snapshot, all gone after rmdir/delete;
#  - failures on mix, running: no room in the VG for the classic LV's COW
#    (ENOSPC, after the thin snapshot was made), a failure after the
#    qcow2 tags (VMDISKFS_DOMSNAP_FAIL=tags stands for libvirt refusing the
#    redefine) and names taken by a libvirt snapshot or a qcow2 tag
#    (EEXIST): nothing left behind (no LV, no qcow2 tag, no libvirt
#    snapshot) and the domain running;
#  - prune deletes only vmdisk-snapshot's LV snapshots; list shows them all.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it.
{
. "$abs_top_srcdir/tests/lvm/guest-lib.sh"
start=$(date +%s)
VMDISKFS=$abs_top_builddir/vmdiskfs
VSNAP=$abs_top_builddir/snapshotter/vmdisk-snapshot
[ -x "$VMDISKFS" ] || fail "$VMDISKFS not built"
[ -x "$VSNAP" ] || fail "$VSNAP not built"
command -v libvirtd >/dev/null || skip "no libvirtd"
[ -c /dev/fuse ] || skip "no /dev/fuse in the guest"

ok () { echo "ok: $* (at $(( $(date +%s) - start ))s)"; }
V () { virsh -q -c qemu:///system "$@"; }
M=1048576

# 1 MiB of a repeated word: the data of each version of a disk.
pattern () { yes "$1" | head -c 1M; }
put () { pattern "$1" | dd of="$2" bs=1M conv=fsync status=none || fail "writing $2"; }
same () { cmp <(head -c 1M "$1") <(pattern "$2") || fail "$1 does not hold $2"; }
# The same into a qcow2 image that no one holds, through qemu-io.
qput () {
  pattern "$1" > /tmp/pat
  qemu-io -f qcow2 -c "write -s /tmp/pat 0 1M" "$2" >/dev/null || fail "qemu-io $2"
}

# vmdisk-snapshot that must work: its output, or all it said on failure.
vsnap () {
  local rc
  "$VSNAP" "$@" > /tmp/vsnap.out 2>&1
  rc=$?
  [ $rc = 0 ] || { cat /tmp/vsnap.out; fail "vmdisk-snapshot $* (exit $rc)"; }
  cat /tmp/vsnap.out
}

lv_exists () { lvs "$1" >/dev/null 2>&1; }
lv_names () { lvs --noheadings -o lv_name vg0 | tr -d ' ' | sort | tr '\n' ' '; }
# One lvs for what the checks want of LV $1: sets origin, size (bytes),
# tags (",a,b,"), active ("active" or ""), pool; fails when there is no $1.
lv_info () {
  local out
  out=$(lvs --noheadings --nosuffix --units b --separator '|' \
        -o origin,lv_size,lv_tags,lv_active,pool_lv "$1" 2>&1) ||
    fail "no LV $1: $out; LVs: $(lv_names)"
  IFS='|' read -r origin size tags active pool <<< "${out#"${out%%[! ]*}"}"
  tags=,$tags,
}
has_tags () {   # TAG...: the last lv_info's tags hold each TAG
  local t
  for t; do
    case $tags in *",$t,"*) ;; *) fail "tags $tags: no $t" ;; esac
  done
}
# What a failed create may not leave behind: the LVs of the start of the
# test, no qcow2 tag, no libvirt snapshot of that name.
nothing_left () {   # NAME LVS-BEFORE
  [ "$(lv_names)" = "$2" ] || fail "$1: LVs now: $(lv_names); before: $2"
  qemu-img snapshot -l -U /tmp/img/mix.qcow2 | grep -q " $1 " &&
    fail "$1: qcow2 tag left: $(qemu-img snapshot -l -U /tmp/img/mix.qcow2)"
  V snapshot-info mix "$1" >/dev/null 2>&1 && fail "$1: libvirt snapshot left"
  return 0
}
# The mount on $mnt, with snapsize=$1.
mnt=/tmp/mnt
mount_vd () {
  mkdir -p $mnt
  rm -f /tmp/pid
  "$VMDISKFS" -f -o pidfile=/tmp/pid,snapsize="$1" $mnt >>/tmp/vmdiskfs.log 2>&1 &
  vdpid=$!
  for i in $(seq 100); do [ -s /tmp/pid ] && break; sleep 0.1; done
  [ -s /tmp/pid ] || { cat /tmp/vmdiskfs.log; fail "mount did not answer"; }
}
umount_vd () {
  umount $mnt || fail "umount"
  wait $vdpid || fail "vmdiskfs exited with an error: $(cat /tmp/vmdiskfs.log)"
}
# Wait until a path exists (a snapshot made elsewhere shows up within 3 s).
appears () {
  for i in $(seq 100); do [ -e "$1" ] && return 0; sleep 0.1; done
  fail "$1 did not show up in 10 s"
}

# ---- storage and domains ---------------------------------------------------
setup_lvm
setup_thin_pool 64M
run lvcreate -q -L 320M -n cls vg0
run lvcreate -q -V 32M -T vg0/pool -n thin
run lvcreate -q -V 32M -T vg0/pool -n mixa
run lvcreate -q -L 32M -n mixc vg0
mkdir -p /tmp/img
run qemu-img create -q -f qcow2 /tmp/img/mix.qcow2 32M
# mix boots from a disk left out of snapshots holding a guest that writes
# a counter to its other disks in turn (tests/lvm/counter-bootsector.S).
as --32 -o /tmp/c.o "$abs_top_srcdir/tests/lvm/counter-bootsector.S" &&
  ld -m elf_i386 -Ttext=0x7c00 -o /tmp/c.elf /tmp/c.o &&
  objcopy -O binary -j .text /tmp/c.elf /tmp/c.bin &&
  [ "$(stat -c %s /tmp/c.bin)" = 512 ] || fail "assembling counter-bootsector.S"
truncate -s 1M /tmp/img/boot.raw &&
  dd if=/tmp/c.bin of=/tmp/img/boot.raw conv=notrunc status=none || fail "boot.raw"
start_libvirtd
ok "libvirtd"

domain () {   # NAME DISK-XML...
  local n=$1 d
  shift
  {
    echo "<domain type='qemu'><name>$n</name><memory unit='MiB'>64</memory>"
    echo "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
    # TCG's translation cache: 1 GiB by default, the guest has 1 GiB
    echo "<features><tcg><tb-cache unit='MiB'>16</tb-cache></tcg></features>"
    echo "<devices>"
    for d; do echo "$d"; done
    echo "</devices></domain>"
  } > "/tmp/$n.xml"
  run V define "/tmp/$n.xml"
}
lvdisk () { echo "<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/$1'/><target dev='$2' bus='virtio'/>${3:-}</disk>"; }
domain cls "$(lvdisk cls vda)"
domain thn "$(lvdisk thin vda)"
# Every disk has a boot order: SeaBIOS gives BIOS drive numbers only to
# those (libvirt passes -boot strict=on): vdd 0x80, vda 0x81 ... vdc 0x83.
domain mix "$(lvdisk mixa vda "<boot order='2'/>")" \
  "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/tmp/img/mix.qcow2'/><target dev='vdb' bus='virtio'/><boot order='3'/></disk>" \
  "$(lvdisk mixc vdc "<boot order='4'/>")" \
  "<disk type='file' device='disk' snapshot='no'><driver name='qemu' type='raw'/><source file='/tmp/img/boot.raw'/><target dev='vdd' bus='virtio'/><boot order='1'/></disk>"
lvs0=$(lv_names)

# ---- classic: mkdir with snapsize=25%, vmdisk-snapshot --cow-size --------
put cls-v1 /dev/vg0/cls
mount_vd 25%
run mkdir $mnt/cls/snapshots/s25
lv_info vg0/cls-s25
[ "$origin" = cls ] || fail "cls-s25: origin $origin"
has_tags vmdiskfs
[ "$size" = $((80 * M)) ] || fail "cls-s25: COW $size, want 25% of 320M"
put cls-v2 /dev/vg0/cls
same $mnt/cls/snapshots/s25/vda.img cls-v1
same $mnt/cls/vda.img cls-v2
ok "classic by mkdir, snapsize=25%"

vsnap create --cow-size 12M cls fixed
lv_info vg0/cls-fixed
has_tags vmdiskfs vmdisk-snapshot
[ "$size" = $((12 * M)) ] || fail "cls-fixed: COW $size, want 12M"
vsnap create --cow-size 30% cls pct
lv_info vg0/cls-pct
[ "$size" = $((96 * M)) ] || fail "cls-pct: COW $size, want 30% of 320M"
put cls-v3 /dev/vg0/cls
appears $mnt/cls/snapshots/fixed/vda.img
same $mnt/cls/snapshots/fixed/vda.img cls-v2
same $mnt/cls/snapshots/s25/vda.img cls-v1
same $mnt/cls/vda.img cls-v3
mkdir $mnt/cls/snapshots/fixed 2>/tmp/err && fail "mkdir of an existing name worked"
grep -q "File exists" /tmp/err || fail "mkdir fixed again: $(cat /tmp/err)"
"$VSNAP" create cls s25 2>/tmp/err && fail "create of an existing name worked"
grep -q EEXIST /tmp/err || fail "create cls s25 again: $(cat /tmp/err)"
# rmdir of the CLI's snapshot; s25 stays for prune below
run rmdir $mnt/cls/snapshots/fixed
lv_exists vg0/cls-fixed && fail "LV cls-fixed still there after rmdir"
[ -e $mnt/cls/snapshots/fixed ] && fail "snapshots/fixed still shown after rmdir"
vsnap delete cls pct
[ "$(lv_names)" = "$(echo "$lvs0 cls-s25" | tr ' ' '\n' | grep . | sort | tr '\n' ' ')" ] ||
  fail "LVs: $(lv_names)"
ok "classic by vmdisk-snapshot, --cow-size 12M and 30%; rmdir, delete"

# ---- thin ------------------------------------------------------------------
put thin-v1 /dev/vg0/thin
run mkdir $mnt/thn/snapshots/t1
lv_info vg0/thin-t1
[ "$pool" = pool ] && [ "$origin" = thin ] || fail "thin-t1: pool $pool, origin $origin"
has_tags vmdiskfs
[ -z "$active" ] || fail "thin-t1 active before reading"
put thin-v2 /dev/vg0/thin
same $mnt/thn/snapshots/t1/vda.img thin-v1
lv_info vg0/thin-t1
[ "$active" = active ] || fail "thin-t1 not active after reading"
same $mnt/thn/vda.img thin-v2
run rmdir $mnt/thn/snapshots/t1
lv_exists vg0/thin-t1 && fail "LV thin-t1 still there after rmdir"
vsnap create --cow-size 8M thn t2
lv_info vg0/thin-t2
[ "$pool" = pool ] || fail "thin-t2 is not thin"
has_tags vmdiskfs vmdisk-snapshot
vsnap delete thn t2
lv_exists vg0/thin-t2 && fail "LV thin-t2 still there after delete"
ok "thin by mkdir and vmdisk-snapshot"

# ---- mixed, shut off ---------------------------------------------------------
put mixa-v1 /dev/vg0/mixa
put mixc-v1 /dev/vg0/mixc
qput mixb-v1 /tmp/img/mix.qcow2
run mkdir $mnt/mix/snapshots/off1
lv_info vg0/mixa-off1
has_tags vmdiskfs
lv_info vg0/mixc-off1
has_tags vmdiskfs
qemu-img snapshot -l /tmp/img/mix.qcow2 | grep -q " off1 " || fail "no qcow2 tag off1"
V snapshot-dumpxml mix off1 > /tmp/off1.xml || fail "no libvirt snapshot off1"
# LV disks are left out of the libvirt part, so not shutoff (domsnap.h)
grep -q '<state>disk-snapshot</state>' /tmp/off1.xml || fail "off1: $(grep '<state>' /tmp/off1.xml)"
grep -q '<description>vmdiskfs' /tmp/off1.xml || fail "off1 not marked vmdiskfs's"
put mixa-v2 /dev/vg0/mixa
put mixc-v2 /dev/vg0/mixc
qput mixb-v2 /tmp/img/mix.qcow2
same $mnt/mix/snapshots/off1/vda.img mixa-v1
same $mnt/mix/snapshots/off1/vdb.img mixb-v1
same $mnt/mix/snapshots/off1/vdc.img mixc-v1
same $mnt/mix/vdb.img mixb-v2
run rmdir $mnt/mix/snapshots/off1
lvs0=$(lv_names)   # cls-s25 from now on
nothing_left off1 "$lvs0"
ok "mixed qcow2 and LV, shut off"
umount_vd

# ---- mixed, running: paused while the snapshots are taken -------------------
t=$(date +%s)
V start mix || { tail -20 /var/log/libvirt/qemu/mix.log; fail "starting mix"; }
ok "mix started in $(( $(date +%s) - t ))s"
[ "$(V domstate mix)" = running ] || fail "mix: $(V domstate mix)"
V event --domain mix --event lifecycle --loop --timestamp > /tmp/events 2>&1 &
evpid=$!
# Wait for the lifecycle events of the next pause ("Suspended" and
# "Resumed" lines, each with a timestamp, after the nsus-th and nres-th
# ones); set ps and pr to their times.
nsus=0 nres=0
pause_window () {
  local i s r
  for i in $(seq 50); do
    [ "$(grep -c 'Resumed' /tmp/events)" -gt "$nres" ] && break
    sleep 0.1
  done
  nsus=$((nsus + 1)) nres=$((nres + 1))
  s=$(grep 'Suspended' /tmp/events | sed -n "${nsus}p")
  r=$(grep 'Resumed' /tmp/events | sed -n "${nres}p")
  [ -n "$s" ] && [ -n "$r" ] || { cat /tmp/events; fail "no pause and resume events"; }
  ps=$(date -d "${s%%: event*}" +%s.%N) && pr=$(date -d "${r%%: event*}" +%s.%N) ||
    fail "event times: $s / $r"
}
# The listener is there once it has seen a pause of our own.
for i in $(seq 20); do
  V suspend mix >/dev/null && V resume mix >/dev/null || fail "suspend/resume mix"
  sleep 0.5
  grep -q Resumed /tmp/events && break
done
nsus=$(grep -c Suspended /tmp/events) nres=$(grep -c Resumed /tmp/events)
[ "$nres" -gt 0 ] || { cat /tmp/events; fail "virsh event saw no pause"; }
inside () {   # T LOW HIGH WHAT
  awk -v t="$1" -v l="$2" -v h="$3" 'BEGIN { exit !(l <= t && t <= h) }' ||
    fail "$4 at $1, not within the pause [$2, $3]"
}
# qcow2 snapshot date (qemu-img info: date-sec, date-nsec) of tag $1
qdate () {
  qemu-img info -U --output=json /tmp/img/mix.qcow2 |
    python3 -c 'import json,sys
for s in json.load(sys.stdin).get("snapshots", []):
    if s["name"] == sys.argv[1]: print("%d.%09d" % (s["date-sec"], s["date-nsec"]))' "$1"
}
# The running domain's qcow2 node, for HMP qemu-io.
qnode=libvirt-$(V dumpxml mix | sed -n "s|.*<source file='/tmp/img/mix.qcow2' index='\([0-9]*\)'.*|\1|p")-format
check_paused () {   # NAME: pause events around every part of snapshot NAME
  local a c q
  pause_window
  # the thin snapshot, inactive, has no device node: its lv_time (seconds)
  a=$(lvs --noheadings --config 'report { time_format = "%s" }' \
        -o lv_time vg0/mixa-$1 | tr -d ' ')
  c=$(stat -c %.9Y /dev/vg0/mixc-$1) q=$(qdate "$1")
  awk -v s="$ps" -v r="$pr" -v a="$a" -v c="$c" -v q="$q" 'BEGIN {
    printf "paused for %.3fs; after the pause: classic LV snapshot at %.3fs, qcow2 at %.3fs, thin LV snapshot in second %d (pause from second %d)\n",
      r - s, c - s, q - s, a, int(s) }'
  inside "$a" "${ps%.*}" "$pr" "thin LV snapshot mixa-$1"
  inside "$c" "$ps" "$pr" "LV snapshot mixc-$1"
  inside "$q" "$ps" "$pr" "qcow2 snapshot $1"
  [ "$(V domstate mix)" = running ] || fail "mix: $(V domstate mix) after $1"
}

# The counters the writing guest left in the disks of snapshot $1 (2 MiB
# in: "VDTC", BIOS drive, counter): written in the order of the drives,
# so one point in time has them falling by at most 1 (c1 >= c2 >= c3 >=
# c1 - 1).  Sets c1 to the first drive's.
consistent () {
  local d out magic drv c lines=
  for d in vda vdb vdc; do
    out=$(od -A n -t u4 -j $((4096 * 512)) -N 12 "$mnt/mix/snapshots/$1/$d.img") ||
      fail "reading $1/$d.img"
    read -r magic drv c <<< "$out"
    [ "$magic" = $((0x43544456)) ] || fail "$1/$d.img: no counter of the guest ($out)"
    lines="$lines$drv $c $d"$'\n'
  done
  lines=$(printf %s "$lines" | sort -n)
  echo "snapshot $1: counters (BIOS drive, counter, disk):" $lines
  awk '{ c[NR] = $2 } END { exit !(NR == 3 && c[1] > 0 && c[1] >= c[2] &&
       c[2] >= c[3] && c[3] >= c[1] - 1) }' <<< "$lines" ||
    fail "snapshot $1: the disks are not of one point in time"
  c1=$(awk 'NR == 1 { print $2 }' <<< "$lines")
}

mount_vd 8M
t=$(date +%s.%N)
run mkdir $mnt/mix/snapshots/run1
echo "mkdir took $(echo "$(date +%s.%N) - $t" | bc)s"
check_paused run1
consistent run1
c1run1=$c1
lv_info vg0/mixc-run1
[ "$size" = $((8 * M)) ] || fail "mixc-run1: COW $size, want snapsize=8M"
V snapshot-list mix --name | grep -qx run1 || fail "no libvirt snapshot run1"
put mixa-v3 /dev/vg0/mixa
put mixc-v3 /dev/vg0/mixc
# qemu-io on the guest device's own BlockBackend (the node does not share
# writing with it); flushed, so that the qcow2 metadata (the clusters now
# copied on write) is in the file for vmdiskfs to read
for c in "write -P 0x33 0 1M" flush; do
  run V qemu-monitor-command mix --hmp \
    "qemu-io -d /machine/peripheral/virtio-disk1/virtio-backend \"$c\""
done

same $mnt/mix/snapshots/run1/vda.img mixa-v2
same $mnt/mix/snapshots/run1/vdb.img mixb-v2
same $mnt/mix/snapshots/run1/vdc.img mixc-v2
cmp <(head -c 1M $mnt/mix/vdb.img) <(head -c 1M /dev/zero | tr '\0' '\063') ||
  fail "vdb.img does not hold what the running domain wrote"
ok "mixed, running, by mkdir"

# --quiesce without a guest agent (none in this domain): a warning, then
# the same crash-consistent snapshot, still with the pause.
vsnap create --quiesce mix run2
grep -q "no guest agent answered" /tmp/vsnap.out || fail "create --quiesce: no warning"
grep -q "paused" /tmp/vsnap.out || fail "create mix run2 does not say it paused"
check_paused run2
consistent run2
[ "$c1" -gt "$c1run1" ] || fail "the guest did not write between run1 and run2"
lv_info vg0/mixa-run2
has_tags vmdiskfs vmdisk-snapshot
vsnap list mix > /tmp/list
cat /tmp/list
grep -q "^mix *run2 .* both *vmdisk-snapshot *$" /tmp/list || fail "list: run2"
grep -q "^mix *run1 .* both *vmdiskfs *$" /tmp/list || fail "list: run1"
appears $mnt/mix/snapshots/run2/vdc.img
same $mnt/mix/snapshots/run2/vda.img mixa-v3
cmp <(head -c 1M $mnt/mix/snapshots/run2/vdb.img) <(head -c 1M /dev/zero | tr '\0' '\063') ||
  fail "run2/vdb.img"
same $mnt/mix/snapshots/run2/vdc.img mixc-v3
same $mnt/mix/snapshots/run1/vda.img mixa-v2
V snapshot-dumpxml mix run1 > /tmp/run1.xml || fail "snapshot-dumpxml mix run1"
run rmdir $mnt/mix/snapshots/run1
vsnap delete mix run2
nothing_left run1 "$lvs0"
nothing_left run2 "$lvs0"
[ "$(V domstate mix)" = running ] || fail "mix: $(V domstate mix) after deleting"
ok "mixed, running, by vmdisk-snapshot; rmdir, delete"

# ---- failures leave nothing behind --------------------------------------------
# No room: 1 free extent (4M): the thin snapshot of vda is made, the 8M
# COW of vdc's classic one does not fit.
free=$(vgs --noheadings -o vg_free_count vg0 | tr -d ' ')
run lvcreate -q -l $((free - 1)) -n fill vg0
lvs1=$(lv_names)
mkdir $mnt/mix/snapshots/nospc 2>/tmp/err && fail "mkdir with no room worked"
grep -q "No space left on device" /tmp/err ||
  fail "mkdir nospc: $(cat /tmp/err); vmdiskfs said: $(tail -5 /tmp/vmdiskfs.log)"
nothing_left nospc "$lvs1"
# It failed at the second LV disk (vdc): vda's thin snapshot was undone.
grep -q 'disk vdc .*snapshot nospc not made' /tmp/vmdiskfs.log ||
  fail "mkdir nospc did not fail at the second LV: $(tail -5 /tmp/vmdiskfs.log)"
[ "$(V domstate mix)" = running ] || fail "mix: $(V domstate mix) after a failed mkdir"
[ -e $mnt/mix/snapshots/nospc ] && fail "snapshots/nospc shown"
"$VSNAP" create --cow-size 8M mix nospc2 2>/tmp/err && fail "create with no room worked"
grep -q ENOSPC /tmp/err || fail "create nospc2: $(cat /tmp/err)"
nothing_left nospc2 "$lvs1"
[ "$(V domstate mix)" = running ] || fail "mix: $(V domstate mix) after a failed create"
run lvremove -q -y vg0/fill
ok "no room: ENOSPC, nothing left, running"

# libvirt refusing the snapshot after the LVM snapshots and the qcow2 tags
# were made (domsnap's test hook fails the step before the redefine).
VMDISKFS_DOMSNAP_FAIL=tags "$VSNAP" create mix refused 2>/tmp/err &&
  fail "create with a failing redefine worked"
grep -q "EIO" /tmp/err || fail "create refused: $(cat /tmp/err)"
nothing_left refused "$lvs0"
[ "$(V domstate mix)" = running ] || fail "mix: $(V domstate mix) after a failed create"
ok "a failure after the tags: EIO, nothing left, running"

# A name libvirt has already (a snapshot made by someone else, here the
# metadata of run1 redefined under another name).
sed 's|<name>run1</name>|<name>taken</name>|; s|<description>.*</description>||' \
  /tmp/run1.xml > /tmp/taken.xml
run V snapshot-create mix /tmp/taken.xml --redefine
appears $mnt/mix/snapshots/taken
mkdir $mnt/mix/snapshots/taken 2>/tmp/err && fail "mkdir taken worked"
grep -q "File exists" /tmp/err || fail "mkdir taken: $(cat /tmp/err)"
"$VSNAP" create mix taken 2>/tmp/err && fail "create taken worked"
grep -q EEXIST /tmp/err || fail "create taken: $(cat /tmp/err)"
lv_exists vg0/mixa-taken && fail "LV mixa-taken made"
[ "$(lv_names)" = "$lvs0" ] || fail "LVs: $(lv_names)"
run V snapshot-delete mix taken --metadata
# A qcow2 tag without libvirt metadata (HMP snapshot_blkdev_internal).
run V qemu-monitor-command mix --hmp "snapshot_blkdev_internal $qnode tagonly"
"$VSNAP" create mix tagonly 2>/tmp/err && fail "create tagonly worked"
grep -q EEXIST /tmp/err || fail "create tagonly: $(cat /tmp/err)"
[ "$(lv_names)" = "$lvs0" ] || fail "LVs: $(lv_names)"
V snapshot-info mix tagonly >/dev/null 2>&1 && fail "libvirt snapshot tagonly made"
[ "$(V domstate mix)" = running ] || fail "mix: $(V domstate mix)"
ok "names taken: EEXIST, no LV made"
kill $evpid
run V destroy mix
umount_vd

# ---- prune and list -------------------------------------------------------------
# cls has s25 (made by mkdir) and one made by an administrator.
run lvcreate -q -s -L 8M -n cls-admin vg0/cls
for p in p1 p2; do
  vsnap create --cow-size 8M cls $p
done
vsnap list cls > /tmp/list
cat /tmp/list
grep -q "^cls *admin .* lvm *- *$" /tmp/list || fail "list: admin"
grep -q "^cls *s25 .* lvm *vmdiskfs *$" /tmp/list || fail "list: s25"
grep -q "^cls *p2 .* lvm *vmdisk-snapshot *$" /tmp/list || fail "list: p2"
before=$(lv_names)
vsnap prune --dry-run --keep-last 1 cls
[ "$(lv_names)" = "$before" ] || fail "prune --dry-run deleted: $(lv_names)"
vsnap prune --keep-last 1 cls
[ "$(lv_names)" = "$(echo "$before" | tr ' ' '\n' | grep -vx cls-p1 | grep . | tr '\n' ' ')" ] ||
  fail "after prune --keep-last 1: $(lv_names)"
got=$(vsnap list --names cls | sort | tr '\n' ' ')
[ "$got" = "admin p2 s25 " ] || fail "list --names after prune: $got"
vsnap delete cls s25
lv_exists vg0/cls-s25 && fail "LV cls-s25 still there after delete"
ok "prune deletes only its own"

for d in cls thn mix; do V undefine $d --snapshots-metadata >/dev/null; done
echo "snapshots-lvm: all ok in $(( $(date +%s) - start ))s"
exit 0
}
