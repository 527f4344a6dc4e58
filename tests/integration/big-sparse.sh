#!/usr/bin/env bash
# big-sparse.sh - a 2 TiB qcow2 with a few MiB of data, backed up with tar.
#
# The everyday backup of DESIGN.md: `tar -S` of a huge, mostly empty disk
# through the mount.  It only works if the holes are real: st_blocks must
# count the allocated bytes only, and SEEK_DATA/SEEK_HOLE must report the
# unallocated ranges, or tar reads 2 TiB of zeros.  The image has data at
# the start, 300 GiB, 1 TiB, 1.5 TiB (compressed) and the end, and a
# snapshot; both disk.img files are archived.  Checks: tar finishes in
# seconds (FAIL over 60 s), the archive is a few MiB (FAIL over 64 MiB),
# st_blocks*512 of each is a few MiB, the extracted files equal the image
# and the snapshot (qemu-img compare, and qemu-io read -P of the patterned
# regions), and the daemon's memory stays small after the tar (VmRSS,
# FAIL over 64 MiB).
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
mkdir "$DIR" "$MNT" "$T/x"
trap 'echo "FAIL: setup: command failed at line $LINENO: $BASH_COMMAND"' ERR

# Failure counting (mx_fail), mounting with a hang watchdog (mx_start),
# mx_check_alive and mx_stop, for MNT; sets LOG and PID.
. "$(dirname "$0")/mx-functions.sh"

MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
TiB=$((1024 * GiB))
SIZE=$((2 * TiB))
head -c 2M /dev/urandom > "$T/rand.bin"

# Data regions: OFFSET LENGTH PATTERN.  Pattern "r": random data from
# rand.bin (checked through qemu-img compare only); "cNN": pattern NN
# written compressed (qemu-io write -c).  Then a snapshot "before", and
# more writes (post) and a discard that only the active disk shows.
regions=(
  "0 $MiB r"
  "$((64 * 1024 + 0)) 4096 0x11"
  "$((300 * GiB + 12288)) 8192 0x22"
  "$((TiB)) $MiB 0x5a"
  "$((TiB + 4 * MiB + 512)) 3584 0x33"
  "$((3 * TiB / 2)) $((128 * 1024)) c0x66"
  "$((SIZE - 3 * MiB)) $MiB 0x44"
  "$((SIZE - MiB)) $MiB r"
)
post=(
  "$((TiB)) $((64 * 1024)) 0x77"
  "$((SIZE / 4 + 4096)) $MiB 0x78"
  "$((MiB)) $MiB 0x00"
)
mx_cmds ()  # REGION...: qemu-io -c arguments into cmds[], bytes in written
{
  local r off len pat
  cmds=()
  for r in "$@"; do
    read -r off len pat <<<"$r"
    case $pat in
      r)  cmds+=(-c "write -s $T/rand.bin $off $len") ;;
      c*) cmds+=(-c "write -c -P ${pat#c} $off $len") ;;
      *)  cmds+=(-c "write -P $pat $off $len") ;;
    esac
    written=$((written + len))
  done
}
written=0
qemu-img create -q -f qcow2 "$DIR/big.qcow2" $SIZE
mx_cmds "${regions[@]}"
qemu-io -f qcow2 "${cmds[@]}" "$DIR/big.qcow2" >/dev/null
qemu-img snapshot -c before "$DIR/big.qcow2"
mx_cmds "${post[@]}"
qemu-io -f qcow2 "${cmds[@]}" -c "discard 0 $MiB" "$DIR/big.qcow2" >/dev/null
echo "== made a 2 TiB qcow2 with $((written / 1024)) KiB of data and a snapshot"
echo "   image file: $(du -k "$DIR/big.qcow2" | cut -f1) KiB"
# the snapshot's oracle: a copy with the snapshot applied
cp "$DIR/big.qcow2" "$T/snapcopy.qcow2"
qemu-img snapshot -a before "$T/snapcopy.qcow2"

echo "== mounting"
mx_start 240 -o images="$DIR"
D=big.qcow2/disk.img
S=big.qcow2/snapshots/before/disk.img

for f in "$D" "$S"; do
  got=$(stat -c %s "$MNT/$f")
  if [ "$got" != $SIZE ]; then
    mx_fail "size" "$f: st_size $got, expected $SIZE"
  fi
  alloc=$(( $(stat -c %b "$MNT/$f") * 512 ))
  echo "   st_blocks*512 of $f: $alloc"
  if [ $alloc -gt $((16 * MiB)) ] || [ $alloc -lt $((2 * MiB)) ]; then
    mx_fail "st_blocks" "$f: st_blocks*512 = $alloc, expected a few MiB"
  fi
done

echo "== tar -cSf of the disk and its snapshot through the mount"
start=$(date +%s.%N)
rc=0
timeout 120 tar -cSf "$T/archive.tar" -C "$MNT" "$D" "$S" || rc=$?
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
echo "   tar took $secs s (exit $rc)"
if [ $rc -ne 0 ]; then
  mx_fail "tar" "tar -cSf exited $rc after $secs s (124: killed at 120 s)"
  mx_check_alive "tar"
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

mx_check_patterns ()  # FILE REGION...
{
  local x=$1 r off len pat out
  shift
  for r in "$@"; do
    read -r off len pat <<<"$r"
    [ "$pat" = r ] && continue
    pat=${pat#c}
    if ! out=$(qemu-io -f raw -r -c "read -P $pat $off $len" "$x" 2>&1) ||
       [[ $out == *"Pattern verification failed"* ]]; then
      mx_fail "extract" "read -P $pat $off $len of extracted $x: $(echo "$out" | head -2)"
    fi
  done
}

if [ $rc -eq 0 ]; then
  asize=$(stat -c %s "$T/archive.tar")
  echo "   archive: $asize bytes"
  if [ "$asize" -gt $((64 * MiB)) ]; then
    mx_fail "archive" "archive is $asize bytes, more than 64 MiB"
  fi

  echo "== extracting and comparing with the image"
  timeout 120 tar -xSf "$T/archive.tar" -C "$T/x"
  for f in "$D" "$S"; do
    got=$(stat -c %s "$T/x/$f")
    if [ "$got" != $SIZE ]; then
      mx_fail "extract" "extracted $f is $got bytes, expected $SIZE"
    fi
  done
  for pair in "$D:$DIR/big.qcow2" "$S:$T/snapcopy.qcow2"; do
    if out=$(timeout 120 qemu-img compare -f raw -F qcow2 "$T/x/${pair%%:*}" "${pair#*:}" 2>&1); then
      echo "   qemu-img compare ${pair%%:*}: $out"
    else
      mx_fail "compare" "qemu-img compare -f raw -F qcow2 extracted ${pair%%:*} ${pair#*:}: $out"
    fi
  done
  mx_check_patterns "$T/x/$S" "${regions[@]}"
  mx_check_patterns "$T/x/$D" "${post[@]}" "0 $MiB 0x00"
fi

mx_stop

echo "== $mx_failures failure(s) (${SECONDS}s)"
if [ $mx_failures -ne 0 ]; then
  mx_exit_failed
fi
