#!/bin/bash
# vmdiskfs - bounded memory on crafted metadata (issue 7): eight sparse
# qcow2 images with maximal L1 tables (4 Mi entries = 32 MiB each, the
# spec's and qemu's cap) are mounted with -o images=DIR, every disk is
# stat'ed and its first and last MiB read and compared; the daemon's peak
# RSS (VmHWM) must stay under 64 MiB (loading each L1 whole took 256 MiB).
# A QCOW1 image whose header asks for an L1 over that cap is refused (EIO
# on open/read, one log line) while the daemon and the other images stay
# fine.
#
# The qcow2 images are crafted here from the specification (qemu's
# docs/interop/qcow2.txt, "== Header ==", "== Host cluster management ==",
# "== Cluster mapping =="): header, a one-cluster refcount table and
# block with correct 16-bit refcounts, the L1 table (a sparse run of zeros
# but two entries), one L2 table for the first and one for the last L1
# entry, and one data cluster at the first and one at the last guest
# cluster.  qemu-img info and check accept them, qemu-io reads the
# patterns back.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
set -u
require python3 qemu-img qemu-io cmp dd stat

qcow2_supported || skip "the formats library does not read qcow2"

DIR=$TEST_DIR/images
MNT=$TEST_DIR/mnt
mkdir -p "$DIR" "$MNT"
MiB=$((1024 * 1024))

# craft PATH CLUSTER_BITS FIRST_BYTE LAST_BYTE: prints the virtual size.
craft ()
{
  python3 - "$@" <<'EOF'
import struct, sys
path, cb, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0), int(sys.argv[4], 0)
C = 1 << cb
l2_bits = cb - 3
l1_entries = 4 << 20                      # 32 MiB: the cap
size = l1_entries << (cb + l2_bits)       # every entry needed
l1_clusters = (l1_entries * 8 + C - 1) // C
rt, rb, l1 = 1, 2, 3                      # cluster numbers
l2a = l1 + l1_clusters
l2b, da, db = l2a + 1, l2a + 2, l2a + 3
nclusters = db + 1
assert nclusters <= C // 2                # one refcount block covers them
f = open(path, "wb")
# == Header == (version 3, 104 bytes, refcount_order 4)
h = struct.pack(">IIQIIQIIQQIIQQQQII", 0x514649fb, 3, 0, 0, cb, size, 0,
                l1_entries, l1 * C, rt * C, 1, 0, 0, 0, 0, 0, 4, 104)
f.write(h + struct.pack(">II", 0, 0))     # end of extensions
f.seek(rt * C); f.write(struct.pack(">Q", rb * C))
f.seek(rb * C); f.write(struct.pack(">H", 1) * nclusters)
copied = 1 << 63
f.seek(l1 * C); f.write(struct.pack(">Q", copied | l2a * C))
f.seek(l1 * C + (l1_entries - 1) * 8); f.write(struct.pack(">Q", copied | l2b * C))
f.seek(l2a * C); f.write(struct.pack(">Q", copied | da * C))
f.seek(l2b * C + (C // 8 - 1) * 8); f.write(struct.pack(">Q", copied | db * C))
f.seek(da * C); f.write(bytes([first]) * C)
f.seek(db * C); f.write(bytes([last]) * C)
f.close()
print(size)
EOF
}

# expect_mib CLUSTER_BITS BYTE WHERE: the expected first (WHERE=first) or
# last MiB of such a disk.
expect_mib ()
{
  python3 - "$@" <<'EOF'
import sys
cb, byte, where = int(sys.argv[1]), int(sys.argv[2], 0), sys.argv[3]
C, M = 1 << cb, 1 << 20
n = min(C, M)
data = bytes([byte]) * n
sys.stdout.buffer.write(data + bytes(M - n) if where == "first" else bytes(M - n) + data)
EOF
}

declare -A SIZE CB
for i in 0 1 2 3 4 5 6 7; do
  # Half with 64 KiB clusters (2 PiB disks), half with 2 MiB (2 EiB).
  cb=$(( i % 2 ? 21 : 16 ))
  img=$DIR/big$i.qcow2
  SIZE[$i]=$(craft "$img" $cb $((0x10 + i)) $((0xe0 + i))) || fail "craft $img"
  CB[$i]=$cb
  qemu-img info "$img" >"$TEST_DIR/info$i" 2>&1 ||
    fail "qemu-img info $img: $(cat "$TEST_DIR/info$i")"
  qemu-img check -q "$img" || fail "qemu-img check $img"
  c=$((1 << cb))
  qemu-io -r -f qcow2 -c "read -P $((0x10 + i)) 0 $c" \
    -c "read -P $((0xe0 + i)) $((SIZE[$i] - c)) $c" \
    -c "read -P 0 $c $c" "$img" >"$TEST_DIR/qio$i" 2>&1 ||
    fail "qemu-io $img: $(cat "$TEST_DIR/qio$i")"
  grep -q "Pattern verification failed" "$TEST_DIR/qio$i" &&
    fail "qemu-io $img: $(cat "$TEST_DIR/qio$i")"
done
# The files are sparse: a few MiB on disk each.
[ "$(du -sm "$DIR" | cut -f1)" -lt 200 ] || fail "crafted images not sparse"

# A QCOW1 image whose L1 would be 64 MiB (8 Mi entries of 2 MiB each):
# header only, the L1 a sparse run inside the file.
python3 - "$DIR/hugel1.qcow" <<'EOF'
import struct, sys
cb, l2b = 12, 9
size = (8 << 20) << (cb + l2b)
f = open(sys.argv[1], "wb")
f.write(struct.pack(">4sIQIIQBBHIQ", b"QFI\xfb", 1, 0, 0, 0, size, cb, l2b, 0, 0, 4096))
f.truncate(4096 + (8 << 20) * 8)
EOF
# And a good QCOW1 image beside it.
qemu-img create -q -f qcow "$DIR/good.qcow" 8M
qemu-io -f qcow -c "write -P 0x77 1M 1M" "$DIR/good.qcow" >/dev/null ||
  fail "qemu-io write good.qcow"
qemu-img convert -O raw "$DIR/good.qcow" "$TEST_DIR/good.raw"

start_vmdiskfs "$MNT" -o images="$DIR"
pid=$(vmdiskfs_pid "$MNT")

for i in 0 1 2 3 4 5 6 7; do
  d=$MNT/big$i.qcow2/disk.img
  sz=$(stat -c %s "$d") || fail "stat $d"
  [ "$sz" = "${SIZE[$i]}" ] || fail "$d: size $sz, want ${SIZE[$i]}"
  blocks=$(stat -c %b "$d") || fail "stat $d"
  c=$((1 << CB[$i]))
  [ "$blocks" -eq $((2 * c / 512)) ] ||
    fail "$d: st_blocks $blocks, want $((2 * c / 512))"
  dd if="$d" of="$TEST_DIR/first" bs=1M count=1 status=none ||
    fail "read the first MiB of $d"
  expect_mib "${CB[$i]}" $((0x10 + i)) first >"$TEST_DIR/want"
  compare "$TEST_DIR/first" "$TEST_DIR/want"
  dd if="$d" of="$TEST_DIR/last" bs=1M skip=$((sz / MiB - 1)) count=1 \
     status=none || fail "read the last MiB of $d"
  expect_mib "${CB[$i]}" $((0xe0 + i)) last >"$TEST_DIR/want"
  compare "$TEST_DIR/last" "$TEST_DIR/want"
done
stat "$MNT"/*/disk.img "$MNT"/*/snapshots >/dev/null 2>&1

# The QCOW1 image with an L1 over the cap: EIO, logged, daemon alive.
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
echo "daemon peak RSS (VmHWM) after the qcow2 images: $hwm kB"
if dd if="$MNT/hugel1.qcow/disk.img" of=/dev/null bs=1M count=1 \
      status=none 2>"$TEST_DIR/err"; then
  fail "hugel1.qcow read without error"
fi
grep -q "Input/output error" "$TEST_DIR/err" ||
  fail "hugel1.qcow: not EIO: $(cat "$TEST_DIR/err")"
grep -q "hugel1.qcow.*L1" "$(vmdiskfs_log "$MNT")" ||
  fail "no log line names hugel1.qcow and its L1"
kill -0 "$pid" || fail "the daemon died"
compare "$MNT/good.qcow/disk.img" "$TEST_DIR/good.raw"
for i in 0 7; do
  dd if="$MNT/big$i.qcow2/disk.img" of="$TEST_DIR/first" bs=1M count=1 \
     status=none || fail "reread big$i"
  expect_mib "${CB[$i]}" $((0x10 + i)) first >"$TEST_DIR/want"
  compare "$TEST_DIR/first" "$TEST_DIR/want"
done

hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
echo "daemon peak RSS (VmHWM): $hwm kB"
[ "$hwm" -lt $((64 * 1024)) ] || fail "peak RSS $hwm kB >= 64 MiB"

stop_vmdiskfs "$MNT" || fail "vmdiskfs exited with an error"
echo PASS
