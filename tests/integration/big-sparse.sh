#!/usr/bin/env bash
# big-sparse.sh - a 2 TiB qcow2 with a few MiB of data, backed up with tar.
#
# The everyday backup of DESIGN.md: `tar -S` of a huge, mostly empty disk
# through the mount.  It only works if the holes are real: st_blocks must
# count the allocated bytes only, and SEEK_DATA/SEEK_HOLE must report the
# unallocated ranges, or tar reads 2 TiB of zeros.  Checks: tar finishes in
# seconds (FAIL over 60 s), the archive is a few MiB (FAIL over 64 MiB),
# st_blocks*512 of disk.raw is a few MiB, the extracted file equals the
# image (qemu-img compare, and qemu-io read -P of every data region), and
# the daemon's memory stays small after the tar (VmRSS, FAIL over 64 MiB).
#
# SPDX-License-Identifier: GPL-3.0-or-later

set -eE
set -o pipefail

# Shared helpers: TEST_DIR (removed at exit, mounts stopped first),
# require/skip, start_vmdiskfs/stop_vmdiskfs/vmdiskfs_pid/vmdiskfs_log.
. "$(dirname "$0")/functions.sh"
require qemu-img qemu-io tar timeout awk

T=$TEST_DIR
DIR=$T/images
MNT=$T/mnt
LOG=$(vmdiskfs_log "$MNT")
PID=
mkdir "$DIR" "$MNT" "$T/x"
trap 'echo "FAIL: setup: command failed at line $LINENO: $BASH_COMMAND"' ERR

# On failure: the daemon's log, then exit 1.
mx_exit_failed ()
{
  if [ -s "$LOG" ]; then
    echo "--- vmdiskfs log (last 40 lines) ---"
    tail -n 40 "$LOG"
  fi
  exit 1
}

# Unmount and check that the daemon exits, cleanly, within 5 s.
mx_stop ()
{
  local rc=0
  fusermount3 -u "$MNT" || mx_fail "unmount" "fusermount3 -u $MNT failed"
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then
    mx_fail "unmount" "vmdiskfs still running 5 s after fusermount3 -u"
    kill "$PID"
  fi
  stop_vmdiskfs "$MNT" || rc=$?
  if [ $rc -ne 0 ]; then
    mx_fail "unmount" "vmdiskfs exited with status $rc"
  fi
}

mx_failures=0
mx_fail ()
{
  mx_failures=$((mx_failures + 1))
  echo "FAIL: $1: $2"
}

MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
TiB=$((1024 * GiB))
SIZE=$((2 * TiB))
head -c 2M /dev/urandom > "$T/rand.bin"

# Data regions: OFFSET LENGTH PATTERN (pattern "r" = random data from
# rand.bin, checked through qemu-img compare only).
regions=(
  "0 $MiB r"
  "$((64 * 1024 + 0)) 4096 0x11"
  "$((300 * GiB + 12288)) 8192 0x22"
  "$((TiB)) $MiB 0x5a"
  "$((TiB + 4 * MiB + 512)) 3584 0x33"
  "$((SIZE - 3 * MiB)) $MiB 0x44"
  "$((SIZE - MiB)) $MiB r"
)
cmds=()
written=0
for r in "${regions[@]}"; do
  read -r off len pat <<<"$r"
  if [ "$pat" = r ]; then
    cmds+=(-c "write -s $T/rand.bin $off $len")
  else
    cmds+=(-c "write -P $pat $off $len")
  fi
  written=$((written + len))
done

echo "== making a 2 TiB qcow2 with $((written / 1024)) KiB of data"
qemu-img create -q -f qcow2 "$DIR/big.qcow2" $SIZE
qemu-io -f qcow2 "${cmds[@]}" "$DIR/big.qcow2" >/dev/null
echo "   image file: $(du -k "$DIR/big.qcow2" | cut -f1) KiB"

echo "== mounting"
start_vmdiskfs "$MNT" -o images="$DIR"
PID=$(vmdiskfs_pid "$MNT")
D=$MNT/big.qcow2/disk.raw

got=$(stat -c %s "$D")
if [ "$got" != $SIZE ]; then
  mx_fail "size" "st_size $got, expected $SIZE"
fi
alloc=$(( $(stat -c %b "$D") * 512 ))
echo "   st_blocks*512 of disk.raw: $alloc"
if [ $alloc -gt $((16 * MiB)) ] || [ $alloc -lt $((written / 2)) ]; then
  mx_fail "st_blocks" "st_blocks*512 = $alloc, expected a few MiB (data written: $written)"
fi

echo "== tar -cSf through the mount"
start=$(date +%s.%N)
rc=0
timeout 120 tar -cSf "$T/archive.tar" -C "$MNT" big.qcow2/disk.raw || rc=$?
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
echo "   tar took $secs s (exit $rc)"
if [ $rc -ne 0 ]; then
  mx_fail "tar" "tar -cSf exited $rc after $secs s (124: killed at 120 s)"
elif awk -v s="$secs" 'BEGIN { exit !(s > 60) }'; then
  mx_fail "tar" "tar -cSf took $secs s, more than 60 s"
fi
if kill -0 "$PID" 2>/dev/null; then
  rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$PID/status")
  echo "   vmdiskfs VmRSS after tar: $rss KiB"
  if [ "$rss" -gt $((64 * 1024)) ]; then
    mx_fail "rss" "vmdiskfs VmRSS $rss KiB after tar, more than 64 MiB"
  fi
else
  mx_fail "daemon" "vmdiskfs died during tar"
fi

if [ $rc -eq 0 ]; then
  asize=$(stat -c %s "$T/archive.tar")
  echo "   archive: $asize bytes"
  if [ "$asize" -gt $((64 * MiB)) ]; then
    mx_fail "archive" "archive is $asize bytes, more than 64 MiB"
  fi

  echo "== extracting and comparing with the image"
  timeout 120 tar -xSf "$T/archive.tar" -C "$T/x"
  X=$T/x/big.qcow2/disk.raw
  got=$(stat -c %s "$X")
  if [ "$got" != $SIZE ]; then
    mx_fail "extract" "extracted file is $got bytes, expected $SIZE"
  fi
  if out=$(timeout 120 qemu-img compare -f raw -F qcow2 "$X" "$DIR/big.qcow2" 2>&1); then
    echo "   qemu-img compare: $out"
  else
    mx_fail "compare" "qemu-img compare -f raw -F qcow2 extracted big.qcow2: $out"
  fi
  for r in "${regions[@]}"; do
    read -r off len pat <<<"$r"
    [ "$pat" = r ] && continue
    if ! out=$(qemu-io -f raw -r -c "read -P $pat $off $len" "$X" 2>&1) ||
       [[ $out == *"Pattern verification failed"* ]]; then
      mx_fail "extract" "read -P $pat $off $len of the extracted file: $(echo "$out" | head -2)"
    fi
  done
fi

mx_stop

echo "== $mx_failures failure(s) (${SECONDS}s)"
if [ $mx_failures -ne 0 ]; then
  mx_exit_failed
fi
