#!/bin/bash
# vmdiskfs - whole VMs restored by copying their directory, and snapshots
# copied back in, with a real libvirtd and qemu (issue 10).
#
# The VM: vda, a qcow2 volume of a dir pool holding the writer boot sector
# (writer-bootsector.S) and data, with two internal snapshots made by
# mkdir snapshots/s1 and s2 (different data between them), and vdb, a raw
# volume of the same pool (snapshot='no': libvirt makes internal
# snapshots only of domains whose disks all take them).  Backed up through
# the mount with cp -a, rsync -a and tar -cS (the three backups checked
# against qemu-img's oracles first).
#
#  - Snapshots copied into the existing, shut-off domain (before the
#    restores): the libvirt metadata of s2 deleted (virsh snapshot-delete
#    --metadata), the tag still shown, and back by copying the backup's
#    snapshot.xml into snapshots/s2/; s1 deleted (rmdir) and back by
#    cp -a of the backup's snapshots/s1 into snapshots/: in virsh
#    snapshot-list again, its bytes the backup's, the current disk and s2
#    unchanged, the image grown by far less than s1's data (clusters shared
#    with the current disk), qemu-img check clean; virsh snapshot-revert to
#    it gives its bytes.
#  - Then, three times: the domain undefined (--snapshots-metadata), its
#    volumes deleted (the pool stays), and restored with cp -a, rsync -a,
#    tar -x of the matching backup into the mount.  After each: virsh
#    dumpxml --inactive equal to the original (nothing normalized), the
#    volumes in virsh vol-list with the format of <driver type>, the disks
#    in the mount equal to the backup's, the images as sparse as the backup
#    and clean (qemu-img check), virsh snapshot-list equal, every
#    snapshot's bytes (qemu-img convert -l, and through the mount) equal to
#    the backup's, its qcow2 date and VM clock the original's, staging
#    empty; then the domain boots from the restored disk: the writer guest
#    writes (counter advancing, no failed writes), and after it stopped the
#    image is still clean and the snapshots' bytes unchanged (the restored
#    refcounts protect them from the guest's writes).  One boot per tool.
#    A fourth restore by tar -x of an archive in the other order
#    (snapshots, then the disks, domain.xml last), without a boot.
#    (The writer resumes its counter from sector 1, which the original
#    holds as a guest that ran left it: the restored guest counts on.)
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 qemu-img qemu-io rsync tar cmp md5sum diff du bc
lv_start
qcow2_supported || skip "the qcow2 reader is not built"

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
POOL=$P-pool
PD=$TEST_DIR/pool
BK=$TEST_DIR/backup
STAGE=$TEST_DIR/staging
O=$TEST_DIR/oracle
mkdir -p "$BK/cp" "$BK/rsync" "$O"
mkdir -m 0700 "$STAGE"
MiB=$((1024 * 1024))
t00=$(date +%s)

listing () { (cd "$1" && ls -1A | LC_ALL=C sort | tr '\n' ' '); }
staging_empty () { [ -z "$(ls -A "$STAGE")" ] || { ls -la "$STAGE" >&2; return 1; }; }
vsnaps () { lv_virsh snapshot-list --name "$1" 2>/dev/null | LC_ALL=C sort | tr '\n' '|'; }
has_vsnap () { lv_virsh snapshot-list --name "$1" 2>/dev/null | grep -qxF -- "$2"; }
# virsh's output as it prints it without -q (domain.xml and snapshot.xml
# in the mount read so: one more newline).
vx () { virsh -c "$LV_URI" "$@" 2>&1; }
defined () { lv_virsh domuuid "$1" >/dev/null 2>&1; }
md5 () { md5sum <"$1" | cut -d' ' -f1; }
elapsed () { echo "$(($(date +%s) - t00)) s"; }
# The qcow2 snapshot table, by name: "name date-sec vm-clock vm-state-size".
tags ()
{
  qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
for s in sorted(json.load(sys.stdin).get("snapshots", []), key=lambda s: s["name"]):
    print(s["name"], s["date-sec"], s["vm-clock-sec"], s["vm-clock-nsec"],
          s["vm-state-size"])' | tr '\n' '|'
}
has_tag () { qemu-img snapshot -U -l "$1" | awk 'NR > 2 { print $2 }' | grep -qxF -- "$2"; }
vol_format ()                   # VOLUME
{
  lv_virsh vol-dumpxml --pool "$POOL" "$1" 2>/dev/null |
    sed -n "s/.*<format type='\([a-z0-9]*\)'.*/\1/p" | head -1
}
virtual_size ()
{
  qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
print(json.load(sys.stdin)["virtual-size"])'
}
# "NAME MD5" per snapshot directory of a backup (its vda.img), sorted, as
# snapshot_sums prints the image's.
backup_sums ()                  # BACKUP-DOMAIN-DIR
{
  local s
  for s in $(ls "$1/snapshots" | LC_ALL=C sort); do
    echo "$s $(md5 "$1/snapshots/$s/vda.img")"
  done
}

# ---- The VM. ----

D=$P-web
VA=$PD/web-vda.qcow2
VB=$PD/web-vdb.raw
lv_pool "$POOL" "$PD"
for i in 1 2 3 4; do
  head -c $MiB /dev/urandom >"$TEST_DIR/r$i"
done
lv_image qcow2 "$VA" 32M
lv_write_bootsector "$VA"
# Sector 1 as a writer guest that ran before leaves it: "VDTW", its
# counter (RESUME) and 0 errors; a restored guest counts on from there.
RESUME=1000
python3 -c 'import struct, sys; sys.stdout.buffer.write(b"VDTW" + struct.pack("<II", int(sys.argv[1]), 0) + bytes(500))' $RESUME >"$TEST_DIR/sector1"
qemu-io -f qcow2 -c "write -s $TEST_DIR/sector1 512 512" "$VA" >/dev/null ||
  fail "qemu-io $VA (sector 1)"
qemu-io -f qcow2 -c "write -P 0x11 1M 15M" -c "write -s $TEST_DIR/r1 16M 1M" "$VA" >/dev/null ||
  fail "qemu-io $VA"
lv_image raw "$VB" 16M
qemu-io -f raw -c "write -P 0x44 0 3M" -c "write -s $TEST_DIR/r4 10M 1M" "$VB" >/dev/null ||
  fail "qemu-io $VB"
lv_virsh pool-refresh "$POOL" >/dev/null || fail "pool-refresh $POOL"
lv_define "$D" qcow2:vda:"$VA" raw:vdb:"$VB"
lv_virsh dumpxml --inactive "$D" | python3 -c '
import sys
import xml.etree.ElementTree as ET
d = ET.parse(sys.stdin)
for disk in d.getroot().iter("disk"):
    if disk.find("target").get("dev") == "vdb":
        disk.set("snapshot", "no")
d.write(sys.argv[1])' "$TEST_DIR/dom.xml" || fail "editing the XML of $D"
lv_virsh define "$TEST_DIR/dom.xml" >/dev/null || fail "virsh define $D (snapshot='no')"

lv_mount "$MNT" -o staging="$STAGE"
echo "mounted $(vmdiskfs_pid "$MNT")"
DD=$MNT/$D
[ -f "$DD/vda.img" ] && [ -f "$DD/vdb.img" ] || fail "no disks in $DD: $(ls "$DD")"
mkdir "$DD/snapshots/s1" || fail "mkdir $DD/snapshots/s1"
sleep 1                         # s1 and s2 of different dates
# s2 differs from s1 in 4M-5M (random) and 20M-21M (was unallocated).
qemu-io -f qcow2 -c "write -s $TEST_DIR/r2 4M 1M" -c "write -P 0x23 20M 1M" "$VA" >/dev/null ||
  fail "qemu-io $VA"
mkdir "$DD/snapshots/s2" || fail "mkdir $DD/snapshots/s2"
# The current disk differs from s2 in 6M-7M and 2M-2.5M (zeros).
qemu-io -f qcow2 -c "write -s $TEST_DIR/r3 6M 1M" -c "write -z 2M 512k" "$VA" >/dev/null ||
  fail "qemu-io $VA"

ORIG=$TEST_DIR/orig.xml
# As virsh prints it without -q (one more newline), as domain.xml reads.
virsh -c "$LV_URI" dumpxml --inactive "$D" >"$ORIG"
snaps0=$(vsnaps "$D")
[ "$snaps0" = "s1|s2|" ] || fail "virsh snapshot-list $D: $snaps0"
tags0=$(tags "$VA")
current0=$(lv_virsh snapshot-current --name "$D" 2>&1)
lv_raw_oracle "$VA" "$O/vda.img"
cp --sparse=always "$VB" "$O/vdb.img"
lv_raw_oracle "$VA" "$O/s1.img" s1
lv_raw_oracle "$VA" "$O/s2.img" s2
image_clean "$VA" || fail "qemu-img check of the original $VA"

# ---- Backups through the mount, checked against the oracles. ----

cp -a "$DD" "$BK/cp/" || fail "cp -a $DD $BK/cp/"
rsync -a "$DD" "$BK/rsync/" || fail "rsync -a $DD $BK/rsync/"
tar -cSf "$BK/web.tar" -C "$MNT" "$D" || fail "tar -cSf $BK/web.tar"
B=$BK/cp/$D
compare "$B/vda.img" "$O/vda.img"
compare "$B/vdb.img" "$O/vdb.img"
compare "$B/snapshots/s1/vda.img" "$O/s1.img"
compare "$B/snapshots/s2/vda.img" "$O/s2.img"
compare "$B/domain.xml" "$ORIG"
diff -r "$B" "$BK/rsync/$D" >&2 || fail "the cp -a and rsync -a backups differ"
mkdir "$TEST_DIR/untar"
tar -xf "$BK/web.tar" -C "$TEST_DIR/untar" || fail "tar -xf $BK/web.tar"
diff -r "$B" "$TEST_DIR/untar/$D" >&2 || fail "the cp -a and tar backups differ"
rm -rf "$TEST_DIR/untar"
# The qcow2 snapshots a restore must give: the dates of the snapshot.xml
# files (<creationTime>), the VM clock and state size of the original.
tagsW=$(echo "$tags0" | python3 -c '
import sys
want = dict(a.split() for a in sys.argv[1].split(",") if a)
out = []
for t in sys.stdin.read().strip().strip("|").split("|"):
    f = t.split()
    f[1] = want[f[0]]
    out.append(" ".join(f))
print("|".join(out) + "|")' "$(for n in s1 s2; do
  printf '%s %s,' $n "$(sed -n 's|.*<creationTime>\([0-9]*\)</creationTime>.*|\1|p' \
    "$B/snapshots/$n/snapshot.xml" | head -1)"; done)") || fail "the expected qcow2 snapshots"
[ "$tagsW" = "$tags0" ] ||
  echo "note: the qcow2 dates differ from the snapshot.xml dates: $tags0 / $tagsW"
# After s2's snapshot.xml alone: s2 as its snapshot.xml says, s1 (not
# touched yet) as it was.  (mkdir's qcow2 tag may be dated a second after
# libvirt's <creationTime>: qemu-img snapshot -c reads the clock itself.)
tagsS2=$(python3 -c '
import sys
a = dict((t.split()[0], t) for t in sys.argv[1].strip("|").split("|"))
b = dict((t.split()[0], t) for t in sys.argv[2].strip("|").split("|"))
a["s2"] = b["s2"]
print("|".join(a[k] for k in sorted(a)) + "|")' "$tags0" "$tagsW") ||
  fail "the expected qcow2 snapshots after s2's snapshot.xml"
echo "backups: $(cd "$B" && find . -type f | LC_ALL=C sort | tr '\n' ' ')"
echo "set up in $(elapsed)"

# ---- Snapshots copied into the existing domain. ----

# A snapshot.xml alone redefines the metadata of a tag libvirt forgot.
if lv_virsh snapshot-delete --metadata "$D" s2 >/dev/null; then
  check "snapshot-delete --metadata s2: the tag went too" has_tag "$VA" s2
  check "snapshot-delete --metadata s2: snapshots/s2 not shown (tag only)" \
    wait_for 10 test -d "$DD/snapshots/s2"
  rc=0; cp "$B/snapshots/s2/snapshot.xml" "$DD/snapshots/s2/" 2>"$TEST_DIR/err" || rc=$?
  check "cp snapshot.xml into snapshots/s2/: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
  check "after cp of s2's snapshot.xml: virsh snapshot-list $(vsnaps "$D"), want $snaps0" \
    eq "$(vsnaps "$D")" "$snaps0"
  check "s2's snapshot-dumpxml differs from the backup's snapshot.xml: $(diff "$B/snapshots/s2/snapshot.xml" <(vx snapshot-dumpxml "$D" s2) | head -6)" \
    eq "$(lv_virsh snapshot-dumpxml "$D" s2 2>&1)" "$(cat "$B/snapshots/s2/snapshot.xml")"
  check "the mount's s2/snapshot.xml differs from the backup's" \
    same_bytes "$DD/snapshots/s2/snapshot.xml" "$B/snapshots/s2/snapshot.xml"
  check "after cp of s2's snapshot.xml: qcow2 snapshots $(tags "$VA"), want $tagsS2" \
    eq "$(tags "$VA")" "$tagsS2"
  check "after cp of s2's snapshot.xml: staging not empty" staging_empty
else
  check "virsh snapshot-delete --metadata $D s2" false
fi

# s1 deleted, then copied back in from the backup.
rc=0; rmdir "$DD/snapshots/s1" 2>"$TEST_DIR/err" || rc=$?
check "rmdir snapshots/s1: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
check "rmdir s1: virsh still has it" eval '! has_vsnap "$D" s1'
check "rmdir s1: the tag is still there" eval '! has_tag "$VA" s1'
cur_before=$(md5 "$DD/vda.img")
s2_before=$(md5 "$DD/snapshots/s2/vda.img")
du0=$(du -k "$VA" | cut -f1)
sz0=$(stat -c %s "$VA")
s1data=$(($(wc -c <"$O/s1.img") - $(python3 -c '
import sys
f = open(sys.argv[1], "rb"); z = 0
while True:
    b = f.read(65536)
    if not b: break
    z += len(b) if b.count(0) == len(b) else 0
print(z)' "$O/s1.img")))
t0=$(date +%s.%N)
rc=0; cp -a "$B/snapshots/s1" "$DD/snapshots/" 2>"$TEST_DIR/err" || rc=$?
echo "cp -a of snapshots/s1 ($((s1data / MiB)) MiB of data) into the domain: $(echo "$(date +%s.%N) - $t0" | bc) s"
check "cp -a $B/snapshots/s1 $DD/snapshots/: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
check "after cp -a of s1: virsh snapshot-list $(vsnaps "$D"), want $snaps0" eq "$(vsnaps "$D")" "$snaps0"
check "after cp -a of s1: the current disk changed (qemu-img convert)" \
  eval 'lv_raw_oracle "$VA" "$O/now.img" && same_bytes "$O/now.img" "$O/vda.img"'
check "after cp -a of s1: the current disk changed (through the mount)" \
  eq "$(md5 "$DD/vda.img")" "$cur_before"
check "after cp -a of s1: vdb changed" same_bytes "$VB" "$O/vdb.img"
check "after cp -a of s1: s2's bytes changed (through the mount)" \
  eq "$(md5 "$DD/snapshots/s2/vda.img")" "$s2_before"
got=$(snapshot_sums "$VA" | tr '\n' '|')
want=$(backup_sums "$B" | tr '\n' '|')
check "after cp -a of s1: snapshots' bytes (qemu-img convert -l) $got, want the backup's $want" \
  eq "$got" "$want"
check "after cp -a of s1: the mount's snapshots/s1/vda.img differs from the backup's" \
  same_bytes "$DD/snapshots/s1/vda.img" "$B/snapshots/s1/vda.img"
check "after cp -a of s1: qemu-img check" image_clean "$VA"
check "after cp -a of s1: s1's snapshot-dumpxml differs from the backup's snapshot.xml: $(diff "$B/snapshots/s1/snapshot.xml" <(vx snapshot-dumpxml "$D" s1) | head -6)" \
  eq "$(lv_virsh snapshot-dumpxml "$D" s1 2>&1)" "$(cat "$B/snapshots/s1/snapshot.xml")"
check "after cp -a of s1: qcow2 snapshots $(tags "$VA"), want $tagsW" eq "$(tags "$VA")" "$tagsW"
check "after cp -a of s1: staging not empty" staging_empty
du1=$(du -k "$VA" | cut -f1)
sz1=$(stat -c %s "$VA")
echo "cp -a of s1: image allocation $du0 -> $du1 KiB, file size $sz0 -> $sz1 (s1: $((s1data / 1024)) KiB of data, 2.5 MiB of it differ from the current disk)"
check "cp -a of s1: the image's allocation grew by $((du1 - du0)) KiB, not less than half of s1's data ($((s1data / 2048)) KiB): clusters equal to the current disk's not shared" \
  eval '[ $(((du1 - du0) * 1024)) -lt $((s1data / 2)) ]'
check "cp -a of s1: the image file grew by $((sz1 - sz0)) bytes, not less than half of s1's data" \
  eval '[ $((sz1 - sz0)) -lt $((s1data / 2)) ]'
rm -f "$O/now.img"

# The safe restore's last step: revert to it.
if lv_virsh snapshot-revert "$D" s1 >/dev/null 2>"$TEST_DIR/err"; then
  check "snapshot-revert s1: qemu-img convert of the current disk differs from the backup's s1" \
    eval 'lv_raw_oracle "$VA" "$O/now.img" && same_bytes "$O/now.img" "$B/snapshots/s1/vda.img"'
  check "snapshot-revert s1: the mount's vda.img differs from the backup's s1" \
    wait_for 5 same_bytes "$DD/vda.img" "$B/snapshots/s1/vda.img"
  check "snapshot-revert s1: qemu-img check" image_clean "$VA"
  check "snapshot-revert s1: s2's bytes changed" \
    eq "$(snapshot_sums "$VA" | tr '\n' '|')" "$want"
  rm -f "$O/now.img"
else
  check "virsh snapshot-revert $D s1: $(cat "$TEST_DIR/err")" false
fi
echo "snapshots copied back in: done at $(elapsed)"

# ---- The VM deleted, restored by copying its directory. ----

# Undefine the domain, delete its volumes (the pool stays).  After a
# failed restore, whatever is left of it.
delete_vm ()
{
  local v
  lv_virsh destroy "$D" >/dev/null 2>&1
  if defined "$D"; then
    lv_virsh undefine --snapshots-metadata "$D" >/dev/null ||
      fail "virsh undefine --snapshots-metadata $D"
  fi
  lv_virsh pool-refresh "$POOL" >/dev/null 2>&1
  for v in web-vda.qcow2 web-vdb.raw; do
    if lv_virsh vol-info --pool "$POOL" "$v" >/dev/null 2>&1; then
      lv_virsh vol-delete --pool "$POOL" "$v" >/dev/null || fail "virsh vol-delete $v"
    fi
  done
  rm -f "$VA" "$VB"
  lv_virsh pool-refresh "$POOL" >/dev/null 2>&1
  [ -d "$DD" ] && ! defined "$D" && rm -rf "$DD" 2>/dev/null   # pending, left over
  wait_for 10 test ! -e "$DD" || fail "$DD still shown 10 s after virsh undefine"
}

writing () { [ "$(lv_writer_count "$VA" | cut -d' ' -f1)" -gt $RESUME ]; }

restored ()                     # TOOL BACKUP-DOMAIN-DIR
{
  local tool=$1 b=$2 v got want c s vname vfmt vpath
  if ! defined "$D"; then
    check "$tool: $D is not defined after the restore (log: $(tail -3 "$(vmdiskfs_log "$MNT")" | tr '\n' ' '))" false
    return
  fi
  check "$tool: virsh dumpxml --inactive differs from the original: $(diff "$ORIG" <(vx dumpxml --inactive "$D") | head -8)" \
    eq "$(lv_virsh dumpxml --inactive "$D")" "$(cat "$ORIG")"
  check "$tool: $D is $(lv_virsh domstate "$D" 2>&1)" eq "$(lv_virsh domstate "$D" 2>&1)" "shut off"
  for v in web-vda.qcow2:qcow2:"$VA" web-vdb.raw:raw:"$VB"; do
    vname=${v%%:*} vfmt=${v#*:} vpath=${v#*:*:}
    vfmt=${vfmt%%:*}
    check "$tool: virsh vol-list $POOL has no $vname at $vpath: $(lv_virsh vol-list --pool "$POOL" | tr -s ' \n' ' ')" \
      eval 'lv_virsh vol-list --pool "$POOL" | grep -q "^ *$vname  *$vpath *\$"'
    check "$tool: vol-dumpxml $vname: format $(vol_format "$vname"), want $vfmt" eq "$(vol_format "$vname")" "$vfmt"
    check "$tool: $vpath is $(image_format "$vpath" 2>&1), want $vfmt" eq "$(image_format "$vpath" 2>/dev/null)" "$vfmt"
  done
  check "$tool: vda's virtual size $(virtual_size "$VA" 2>&1)" eq "$(virtual_size "$VA" 2>&1)" $((32 * MiB))
  check "$tool: vdb's size $(stat -c %s "$VB" 2>&1)" eq "$(stat -c %s "$VB" 2>&1)" $((16 * MiB))
  check "$tool: the mount's vda.img differs from the backup's" same_bytes "$DD/vda.img" "$b/vda.img"
  check "$tool: the mount's vdb.img differs from the backup's" same_bytes "$DD/vdb.img" "$b/vdb.img"
  check "$tool: $VA's current disk differs from the backup's vda.img (qemu-img compare)" \
    qemu-img compare -q -U -f raw -F qcow2 "$b/vda.img" "$VA"
  check "$tool: $VB differs from the backup's vdb.img" same_bytes "$VB" "$b/vdb.img"
  check "$tool: qemu-img check $VA" image_clean "$VA"
  check "$tool: $VB allocates $(data_bytes "$VB") bytes, more than the backup's data" \
    eval '[ "$(data_bytes "$VB")" -le "$(rounded_data "$O/vdb.img" 4096)" ]'
  check "$tool: virsh snapshot-list $(vsnaps "$D"), want $snaps0" eq "$(vsnaps "$D")" "$snaps0"
  check "$tool: qcow2 snapshots $(tags "$VA"), want $tagsW" eq "$(tags "$VA")" "$tagsW"
  got=$(snapshot_sums "$VA" | tr '\n' '|')
  want=$(backup_sums "$b" | tr '\n' '|')
  check "$tool: snapshots' bytes (qemu-img convert -l) $got, want the backup's $want" eq "$got" "$want"
  for s in s1 s2; do
    check "$tool: the mount's snapshots/$s/vda.img differs from the backup's" \
      same_bytes "$DD/snapshots/$s/vda.img" "$b/snapshots/$s/vda.img"
    check "$tool: snapshot-dumpxml $s differs from the backup's snapshot.xml: $(diff "$b/snapshots/$s/snapshot.xml" <(vx snapshot-dumpxml "$D" $s) | head -6)" \
      eq "$(lv_virsh snapshot-dumpxml "$D" $s 2>&1)" "$(cat "$b/snapshots/$s/snapshot.xml")"
  done
  check "$tool: staging not empty" staging_empty
  echo "$tool: checked at $(elapsed); current snapshot: $(lv_virsh snapshot-current --name "$D" 2>&1) (the original's: $current0)"

  # It boots from the restored disk, and the guest's writes leave the
  # snapshots alone.  (Once per tool: tar-reversed is tar again.)
  [ "$tool" = tar-reversed ] && return
  if ! lv_virsh start "$D" >/dev/null 2>"$TEST_DIR/err"; then
    check "$tool: virsh start $D: $(cat "$TEST_DIR/err")" false
    return
  fi
  t0=$(date +%s)
  check "$tool: the writer guest did not count on from $RESUME within 60 s (count, errors: $(lv_writer_count "$VA"))" \
    wait_for 60 writing
  sleep 2
  c=$(lv_writer_count "$VA")
  echo "$tool: booted, the guest wrote ${c% *} times ($(($(date +%s) - t0)) s)"
  check "$tool: the guest's writes failed (${c#* } errors)" eq "${c#* }" 0
  lv_virsh destroy "$D" >/dev/null 2>&1
  wait_for 10 eval '! image_locked "$VA"'
  check "$tool: after the guest ran: qemu-img check $VA" image_clean "$VA"
  # (Only if they were right before: one FAIL line for one fault.)
  if [ "$got" = "$want" ]; then
    got=$(snapshot_sums "$VA" | tr '\n' '|')
    check "$tool: after the guest ran: snapshots' bytes $got, want $want" eq "$got" "$want"
  fi
}

# The other order: snapshots first (their disks before the current disk),
# domain.xml last.  tar makes the directories the members imply.
tar -cSf "$BK/web-reversed.tar" -C "$BK/cp" "$D/snapshots/s2" "$D/snapshots/s1" \
  "$D/vdb.img" "$D/vda.img" "$D/domain.xml" || fail "tar -cSf $BK/web-reversed.tar"

for tool in cp rsync tar tar-reversed; do
  delete_vm
  t0=$(date +%s.%N)
  rc=0
  case $tool in
    cp) cp -a "$BK/cp/$D" "$MNT/" 2>"$TEST_DIR/err" || rc=$? ; b=$BK/cp/$D ;;
    rsync) rsync -a "$BK/rsync/$D" "$MNT/" 2>"$TEST_DIR/err" || rc=$? ; b=$BK/rsync/$D ;;
    tar) tar -xf "$BK/web.tar" -C "$MNT" 2>"$TEST_DIR/err" || rc=$? ; b=$BK/cp/$D ;;
    tar-reversed)
      tar -xf "$BK/web-reversed.tar" -C "$MNT" 2>"$TEST_DIR/err" || rc=$? ; b=$BK/cp/$D ;;
  esac
  echo "$tool: restored in $(echo "$(date +%s.%N) - $t0" | bc) s, exit $rc"
  check "$tool: restoring $D: exit $rc: $(head -5 "$TEST_DIR/err")" eq $rc 0
  restored $tool "$b"
done

stop_vmdiskfs "$MNT" || { echo "FAIL: the daemon exited with $?" >&2; failures=$((failures + 1)); }
echo "done in $(elapsed)"
[ $failures = 0 ] || fail "$failures checks failed"
echo PASS
