#!/bin/bash
# vmdiskfs - libvirt mode, the tree: with a real libvirtd and qemu, shut
# off and running domains whose disks are qcow2, raw and QED files, a block
# device (a loop device on a raw file), a volume of a dir storage pool, a
# cdrom (not shown) and a missing source (shown, EIO on read, a log line).
# Checks names (escaped), each domain's files, domain.xml against `virsh
# dumpxml --inactive`, every .raw against `qemu-img convert -U -O raw` (or
# the file or device itself), sizes, st_blocks and data ranges, mtimes,
# inode numbers across a remount.  Snapshots: libvirt-snapshots.sh.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 cmp stat find losetup
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
IMG=$TEST_DIR/img
POOLDIR=$TEST_DIR/pool
mkdir -p "$IMG"
MiB=$((1024 * 1024))
vsize ()                        # IMAGE -> virtual size
{
  qemu-img info -U --output=json "$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])'
}


# ---- Images. ----

Q=$IMG/a.qcow2                  # qcow2, data and holes
lv_image qcow2 "$Q" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 3M" -c "write -P 0x12 20M 64k" \
  -c "write -z 30M 1M" -c "write -P 0x13 63M 1M" "$Q" >/dev/null
R=$IMG/b.raw                    # sparse raw file
truncate -s 32M "$R"
qemu-io -f raw -c "write -P 0x21 1M 2M" -c "write -P 0x22 31M 512k" "$R" >/dev/null
E=$IMG/c.qed                    # QED
lv_image qed "$E" 32M
qemu-io -f qed -c "write -P 0x31 0 1M" -c "write -P 0x32 17M 3M" "$E" >/dev/null
B=$IMG/d.raw                    # behind a loop device
head -c $((8 * MiB)) /dev/urandom >"$B"
lv_loop "$B"
LOOP=$LV_LOOP
ISO=$IMG/cd.iso                 # a cdrom: not shown
head -c $((2 * MiB)) /dev/urandom >"$ISO"
MISSING=$IMG/missing.qcow2      # never created
Q2=$IMG/run.qcow2               # the running domain's disks
lv_image qcow2 "$Q2" 48M
qemu-io -f qcow2 -c "write -P 0x41 0 1M" -c "write -P 0x42 40M 2M" "$Q2" >/dev/null
R2=$IMG/run2.raw
truncate -s 16M "$R2"
qemu-io -f raw -c "write -P 0x43 4M 1M" "$R2" >/dev/null
# A dir storage pool with a qcow2 volume.
POOL=$P-pool
lv_pool "$POOL" "$POOLDIR"
lv_virsh vol-create-as "$POOL" vol.qcow2 24M --format qcow2 >/dev/null ||
  fail "vol-create-as"
V=$(lv_virsh vol-path --pool "$POOL" vol.qcow2)
[ "$V" = "$POOLDIR/vol.qcow2" ] || fail "vol-path: $V"
qemu-io -f qcow2 -c "write -P 0x51 2M 1M" "$V" >/dev/null
touch -d '2020-02-02 02:02:02' "$Q" "$R" "$E" "$V"

# ---- Domains. ----

OFF=$P-off                      # shut off, every kind of disk
lv_define "$OFF" qcow2:vda:"$Q" raw:vdb:"$R" qed:vdc:"$E" block:vdd:"$LOOP" \
  volume:vde:"$POOL/vol.qcow2" cdrom:sda:"$ISO"
RUN=$P-run                      # running, idle in the firmware
lv_define "$RUN" qcow2:vda:"$Q2" raw:sdb:"$R2" cdrom:hdc:
lv_virsh start "$RUN" >/dev/null || fail "virsh start $RUN"
MISS=$P-miss                    # a disk whose file does not exist
small=$IMG/small.qcow2
lv_image qcow2 "$small" 4M
qemu-io -f qcow2 -c "write -P 0x61 0 4M" "$small" >/dev/null
lv_define "$MISS" qcow2:vda:"$MISSING" qcow2:vdb:"$small"
# Names vmdiskfs must escape or pass through, if libvirt takes them.
odd_names=()
for n in "$P-per%cent" "$P-ünï cödé" "$P-dots..."; do
  o=$IMG/odd-${#odd_names[@]}.qcow2
  lv_image qcow2 "$o" 1M
  if lv_virsh define /dev/stdin >/dev/null 2>"$TEST_DIR/odd.err" <<EOF
<domain type='$LV_DOMTYPE'><name>$n</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64' machine='pc'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='$o'/><target dev='vda' bus='virtio'/></disk></devices></domain>
EOF
  then
    lv_forget_later "$n"
    odd_names+=("$n")
  else
    echo "note: libvirt refuses the domain name '$n': $(cat "$TEST_DIR/odd.err")"
  fi
done
[ ${#odd_names[@]} -gt 0 ] || echo "SKIP (part): no odd domain name accepted"

lv_mount "$MNT"
echo "mounted $(vmdiskfs_pid "$MNT")"

# ---- The root: our domains, escaped; other domains may exist. ----

expected=$( { printf '%s\n' "$OFF" "$RUN" "$MISS"
              for n in "${odd_names[@]}"; do lv_escape "$n"; done; } | LC_ALL=C sort)
got=$(ls -1 "$MNT" | grep -F -- "$P-" | LC_ALL=C sort)
check "root lists
$got
expected
$expected" eq "$got" "$expected"
# Every domain virsh lists is there, escaped (other tests may be defining
# and undefining theirs meanwhile: a missing one counts if it still exists
# 3 s later).
shown () { [ -d "$MNT/$(lv_escape "$1")" ]; }
gone () { ! lv_virsh domstate "$1" >/dev/null 2>&1; }
shown_or_gone () { shown "$1" || gone "$1"; }
declare -A in_root=()
while read -r e; do in_root[$e]=1; done < <(ls -1 "$MNT")
while read -r n; do
  [ -n "$n" ] || continue
  [ -n "${in_root[$(lv_escape "$n")]:-}" ] && continue
  wait_for 3 shown_or_gone "$n" || echo "$n"
done < <(lv_virsh list --all --name) >"$TEST_DIR/notshown"
check "defined domains not shown: $(cat "$TEST_DIR/notshown")" eq "$(cat "$TEST_DIR/notshown")" ""

# ---- Each domain's files. ----

listing () { (cd "$1" && ls -1A | LC_ALL=C sort | tr '\n' ' '); }
check "$OFF holds $(listing "$MNT/$OFF")" \
  eq "$(listing "$MNT/$OFF")" "domain.xml snapshots vda.img vdb.img vdc.img vdd.img vde.img "
check "$RUN holds $(listing "$MNT/$RUN")" \
  eq "$(listing "$MNT/$RUN")" "domain.xml sdb.img snapshots vda.img "
check "$MISS holds $(listing "$MNT/$MISS")" \
  eq "$(listing "$MNT/$MISS")" "domain.xml snapshots vda.img vdb.img "
for d in "$OFF" "$RUN" "$MISS"; do
  check "$d/snapshots is not empty: $(listing "$MNT/$d/snapshots")" \
    eq "$(listing "$MNT/$d/snapshots")" ""
  check "$d is not a directory" test -d "$MNT/$d"
  check "$d/snapshots is not a directory" test -d "$MNT/$d/snapshots"
  for f in "$MNT/$d"/*.img "$MNT/$d/domain.xml"; do
    check "$f is not a regular file" test -f "$f"
  done
done

# ---- domain.xml is the persistent definition. ----

for n in "$OFF" "$RUN" "$MISS" "${odd_names[@]}"; do
  e=$(lv_escape "$n")
  # Byte for byte what `virsh dumpxml --inactive` prints (not -q: virsh
  # then adds a newline after the XML).
  virsh -c "$LV_URI" dumpxml --inactive "$n" >"$TEST_DIR/dump.xml"
  check "$e/domain.xml differs from virsh dumpxml --inactive:
$(diff "$TEST_DIR/dump.xml" "$MNT/$e/domain.xml" | head -20)" \
    same_bytes "$TEST_DIR/dump.xml" "$MNT/$e/domain.xml"
  check "$e/domain.xml: size $(stat -c %s "$MNT/$e/domain.xml"), read $(wc -c <"$MNT/$e/domain.xml")" \
    eq "$(stat -c %s "$MNT/$e/domain.xml")" "$(wc -c <"$MNT/$e/domain.xml")"
done
no_id () { ! grep -q "<domain type='$LV_DOMTYPE' id=" "$1"; }
check "$RUN/domain.xml is the live XML (has an id=)" no_id "$MNT/$RUN/domain.xml"

# ---- Disk bytes, sizes, holes, times. ----

disk_ok ()                      # MOUNTED-FILE IMAGE-OR-DEVICE
{
  local f=$1 src=$2 want size
  if [ -b "$src" ]; then
    want=$src
    size=$(blockdev --getsize64 "$src")
  else
    lv_raw_oracle "$src" "$TEST_DIR/oracle.raw"
    want=$TEST_DIR/oracle.raw
    size=$(vsize "$src")
  fi
  check "$f: bytes differ from $src" same_bytes "$f" "$want"
  check "$f: size $(stat -c %s "$f"), want $size" eq "$(stat -c %s "$f")" "$size"
  check "$f: mtime $(stat -c %Y "$f"), $src has $(stat -c %Y "$src")" \
    eq "$(stat -c %Y "$f")" "$(stat -c %Y "$src")"
  if [ ! -b "$src" ]; then
    # Holes are real: allocation and data ranges as qemu-img map says.
    check "$f: data ranges $(data_ranges "$f" | tr '\n' ,) vs qemu-img map $(qemu_data_ranges "$src" | tr '\n' ,)" \
      eq "$(data_ranges "$f")" "$(qemu_data_ranges "$src")"
    alloc=$(qemu_data_ranges "$src" | awk '{ s += $2 - $1 } END { print s / 512 }')
    check "$f: st_blocks $(stat -c %b "$f"), want $alloc" eq "$(stat -c %b "$f")" "$alloc"
  fi
  rm -f "$TEST_DIR/oracle.raw"
}

disk_ok "$MNT/$OFF/vda.img" "$Q"
disk_ok "$MNT/$OFF/vdb.img" "$R"
disk_ok "$MNT/$OFF/vdc.img" "$E"
disk_ok "$MNT/$OFF/vdd.img" "$LOOP"
disk_ok "$MNT/$OFF/vde.img" "$V"
disk_ok "$MNT/$MISS/vdb.img" "$small"
# The running domain: qemu holds its images (read with -U by the oracle).
lv_running "$RUN" || fail "$RUN is not running"
disk_ok "$MNT/$RUN/vda.img" "$Q2"
disk_ok "$MNT/$RUN/sdb.img" "$R2"
cp --sparse=always "$MNT/$OFF/vda.img" "$TEST_DIR/copy.raw"
lv_raw_oracle "$Q" "$TEST_DIR/oracle.raw"
check "cp --sparse of $OFF/vda.img differs" same_bytes "$TEST_DIR/copy.raw" "$TEST_DIR/oracle.raw"
check "cp --sparse of $OFF/vda.img copied holes: $(du -k "$TEST_DIR/copy.raw")" \
  test "$(du -k "$TEST_DIR/copy.raw" | cut -f1)" -le 8192
rm -f "$TEST_DIR/copy.raw" "$TEST_DIR/oracle.raw"

# ---- A missing source: shown, EIO on read, a log line. ----

if cat "$MNT/$MISS/vda.img" >/dev/null 2>"$TEST_DIR/miss.err"; then
  echo "FAIL: reading $MISS/vda.img (source $MISSING does not exist) succeeded" >&2
  failures=$((failures + 1))
else
  check "$MISS/vda.img: $(cat "$TEST_DIR/miss.err"), want Input/output error" \
    grep -q 'Input/output error' "$TEST_DIR/miss.err"
fi
check "no log line naming $MISSING" grep -qF "$MISSING" "$(vmdiskfs_log "$MNT")"
disk_ok "$MNT/$MISS/vdb.img" "$small"

# ---- Read-only mount, inode numbers stable across a remount. ----

(cd "$MNT" && find . -path "./$P-*" -printf '%i %p\n' | LC_ALL=C sort -k2) >"$TEST_DIR/inodes1"
check "duplicate inode numbers" eq "$(cut -d' ' -f1 "$TEST_DIR/inodes1" | sort | uniq -d)" ""
stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"
start_vmdiskfs "$MNT" vmdiskfs -o ro,connect="$LV_URI"
(cd "$MNT" && find . -path "./$P-*" -printf '%i %p\n' | LC_ALL=C sort -k2) >"$TEST_DIR/inodes2"
check "inode numbers changed across a remount:
$(diff "$TEST_DIR/inodes1" "$TEST_DIR/inodes2" | head)" \
  cmp -s "$TEST_DIR/inodes1" "$TEST_DIR/inodes2"
check "ro mount: $OFF/vdb.img differs" same_bytes "$MNT/$OFF/vdb.img" "$R"

# ---- Parallel readers on several disks. ----

pids=()
cmp "$MNT/$OFF/vdb.img" "$R" & pids+=($!)
cmp "$MNT/$OFF/vdd.img" "$LOOP" & pids+=($!)
cmp "$MNT/$RUN/sdb.img" "$R2" & pids+=($!)
for p in "${pids[@]}"; do
  wait "$p" || { echo "FAIL: a parallel reader failed" >&2; failures=$((failures + 1)); }
done

stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"
grep -i 'assert\|leak' "$(vmdiskfs_log "$MNT")" && fail "assertions or leaks in the log"
[ "$failures" = 0 ] || fail "$failures checks failed"
echo PASS
