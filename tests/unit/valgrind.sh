#!/bin/bash
# Memcheck for the C code: every unit test binary (tests/unit/test-*), then
# formats/vd-cat on small images made by qemu-img/qemu-io (qcow2 v2/v3 with
# snapshots, compressed zlib/zstd, extended L2, external data file, a
# three-image backing chain, QED with a backing file, QCOW1, raw), then the
# FUSE daemon serving them, all under
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
# Any memory error or definite/indirect leak fails the test and prints
# valgrind's report.  vd-cat's bytes are also compared with qemu-img's (a
# mismatch is reported as such, not as a memory error).
#
# Exit 0 clean, 1 on any error, 77 when valgrind is not installed.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it, so editing
# this file while it runs cannot derail the running copy.
{

srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${abs_top_builddir:-$srcdir}
VDCAT=${VDCAT:-$builddir/formats/vd-cat}
VMDISKFS=${VMDISKFS:-$builddir/vmdiskfs}

command -v valgrind >/dev/null || { echo "SKIP: valgrind not installed"; exit 77; }

tmp=$(mktemp -d /tmp/vd-valgrind.XXXXXX)
mnt=$tmp/mnt
daemon_pid=
mounted () { grep -q " $mnt fuse" /proc/self/mounts; }
cleanup () {
  if mounted; then
    fusermount3 -u "$mnt" 2>/dev/null
  fi
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
  fi
  if mounted; then
    umount -l "$mnt" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Tests skip what valgrind cannot judge (test-lvm-helper: helpers forked
# from several threads at once).
export VD_UNDER_VALGRIND=1
vg=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --error-exitcode=99
    --track-origins=yes --num-callers=30)
status=0
passed=0

# vgrun NAME CMD...: run CMD under valgrind, stdout to $tmp/out.
vgrun () {
  local name=$1 rc
  shift
  "${vg[@]}" --log-file="$tmp/vg.log" "$@" > "$tmp/out" 2> "$tmp/err"
  rc=$?
  if [ "$rc" = 99 ]; then
    echo "FAIL (valgrind): $name: $*"
    cat "$tmp/vg.log"
    status=1
    return 1
  fi
  if [ "$rc" = 77 ]; then
    echo "skip: $name (exit 77)"
    return 1
  fi
  if [ "$rc" != 0 ]; then
    echo "FAIL (exit $rc, not a memory error): $name: $*"
    tail -20 "$tmp/err"
    status=1
    return 1
  fi
  passed=$((passed + 1))
  echo "ok: $name"
  return 0
}

# ---- unit tests ----------------------------------------------------------
for t in "$builddir"/tests/unit/test-*; do
  case $t in *.c|*.o|*.log|*.trs|*.sh) continue ;; esac
  [ -f "$t" ] && [ -x "$t" ] || continue
  vgrun "unit $(basename "$t")" "$t"
done

# ---- vd-cat on real images -----------------------------------------------
if [ ! -x "$VDCAT" ]; then
  echo "FAIL: $VDCAT not built"
  exit 1
fi
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
  echo "qemu-img/qemu-io missing: only the unit tests were checked"
  [ "$passed" = 0 ] && [ "$status" = 0 ] && exit 77
  exit $status
fi

img=$tmp/img
mkdir -p "$img"
cd "$img" || exit 1
q () { "$@" >/dev/null 2>&1 || { echo "setup failed: $*"; exit 1; }; }
head -c 1M /dev/urandom > r1m
{ head -c 256K /dev/urandom; yes vmdiskfs-valgrind | head -c 768K; } > mixed

# qcow2 v3 with two snapshots, resized after the first.
q qemu-img create -f qcow2 snap.qcow2 8M
q qemu-io -c 'write -s r1m 0 1M' -c 'write -P 0x5a 5M 64k' snap.qcow2
q qemu-img snapshot -c first snap.qcow2
q qemu-io -c 'write -P 0xa5 512k 1M' -c 'write -z 5M 64k' snap.qcow2
q qemu-img resize snap.qcow2 12M
q qemu-io -c 'write -P 0x77 11M 4k' snap.qcow2
q qemu-img snapshot -c second snap.qcow2
# qcow2 v2 (compat=0.10) with a snapshot.
q qemu-img create -f qcow2 -o compat=0.10,cluster_size=4096 v2.qcow2 4M
q qemu-io -c 'write -s r1m 1M 1M' v2.qcow2
q qemu-img snapshot -c s1 v2.qcow2
q qemu-io -c 'write -P 1 1M 4k' v2.qcow2
# Compressed, both algorithms.
q qemu-img convert -c -f raw -O qcow2 -o compression_type=zlib mixed zlib.qcow2
q qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd mixed zstd.qcow2
# Extended L2 entries (subclusters) and an external data file.
q qemu-img create -f qcow2 -o extended_l2=on,cluster_size=64k ext.qcow2 4M
q qemu-io -c 'write -P 3 4k 4k' -c 'write -z 8k 60k' -c 'write -s r1m 1M 512k' ext.qcow2
q qemu-img create -f qcow2 -o data_file=df.data df.qcow2 4M
q qemu-io -c 'write -s r1m 512k 1M' df.qcow2
# Backing chain raw <- qcow2 <- qcow2, the top one larger.
q qemu-img convert -f raw -O raw mixed base.raw
q qemu-img create -f qcow2 -b base.raw -F raw mid.qcow2 1M
q qemu-io -c 'write -P 0x11 64k 64k' mid.qcow2
q qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 2M
q qemu-io -c 'write -P 0x22 96k 8k' -c 'write -P 0x33 1536k 4k' top.qcow2
# QED with a QED backing file.
q qemu-img create -f qed base.qed 2M
q qemu-io -c 'write -s r1m 0 1M' base.qed
q qemu-img create -f qed -b base.qed -F qed top.qed 4M
q qemu-io -c 'write -P 0x44 512k 4k' -c 'write -P 0x45 3M 4k' top.qed
# QCOW version 1 and raw.
q qemu-img convert -f raw -O qcow mixed v1.qcow
cp mixed plain.raw

for f in snap.qcow2 v2.qcow2 zlib.qcow2 zstd.qcow2 ext.qcow2 df.qcow2 \
         top.qcow2 top.qed v1.qcow plain.raw; do
  q qemu-img convert -O raw "$f" "$tmp/$f.expect"
  if vgrun "vd-cat $f" "$VDCAT" "$f"; then
    cmp -s "$tmp/out" "$tmp/$f.expect" ||
      { echo "FAIL (output differs from qemu-img, not a memory error): $f"
        status=1; }
  fi
  vgrun "vd-cat -m $f" "$VDCAT" -m "$f"
  vgrun "vd-cat -i $f" "$VDCAT" -i "$f"
done
for f in snap.qcow2 v2.qcow2; do
  vgrun "vd-cat -l $f" "$VDCAT" -l "$f"
done
# Snapshots by name and by id; expected bytes as TESTING.md says.
for s in snap.qcow2:first snap.qcow2:2 v2.qcow2:s1; do
  f=${s%%:*} tag=${s#*:}
  cp "$f" "$tmp/copy.$f"
  q qemu-img snapshot -a "$tag" "$tmp/copy.$f"
  q qemu-img convert -O raw "$tmp/copy.$f" "$tmp/$f.$tag.expect"
  if vgrun "vd-cat -s $tag $f" "$VDCAT" -s "$tag" "$f"; then
    cmp -s "$tmp/out" "$tmp/$f.$tag.expect" ||
      { echo "FAIL (output differs from qemu-img, not a memory error): $f snapshot $tag"
        status=1; }
  fi
  vgrun "vd-cat -s $tag -m $f" "$VDCAT" -s "$tag" -m "$f"
done

# ---- the FUSE daemon -----------------------------------------------------
# Only when it is built and answers --version (a real daemon), and FUSE is
# usable here.
if [ -x "$VMDISKFS" ] && "$VMDISKFS" --version >/dev/null 2>&1 &&
   [ -c /dev/fuse ] && command -v fusermount3 >/dev/null; then
  mkdir -p "$mnt" "$tmp/fsimg"
  for f in snap.qcow2 zstd.qcow2 top.qcow2 top.qed; do
    cp "$f" "$tmp/fsimg/"
  done
  # Backing files are named relative to the image: copy them along.
  cp base.raw mid.qcow2 base.qed "$tmp/fsimg/"
  "${vg[@]}" --log-file="$tmp/vg-daemon.log" \
    "$VMDISKFS" -f -o images="$tmp/fsimg" "$mnt" > "$tmp/daemon.out" 2>&1 &
  daemon_pid=$!
  # Valgrind on a loaded 2-CPU machine: give it three minutes.
  for _ in $(seq 360); do
    mounted && [ -e "$mnt/snap.qcow2/disk.img" ] && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.5
  done
  if [ -e "$mnt/snap.qcow2/disk.img" ]; then
    for f in snap.qcow2 zstd.qcow2 top.qcow2 top.qed; do
      cmp -s "$mnt/$f/disk.img" "$tmp/$f.expect" ||
        { echo "FAIL (daemon output differs from qemu-img): $f"; status=1; }
    done
    ls -lR "$mnt" > /dev/null
    cmp -s "$mnt/snap.qcow2/snapshots/first/disk.img" \
        "$tmp/snap.qcow2.first.expect" ||
      { echo "FAIL (daemon output differs from qemu-img): snapshot first"
        status=1; }
    fusermount3 -u "$mnt"
    wait "$daemon_pid"
    rc=$?
    daemon_pid=
    if [ "$rc" = 99 ]; then
      echo "FAIL (valgrind): vmdiskfs daemon"
      cat "$tmp/vg-daemon.log"
      status=1
    elif [ "$rc" != 0 ]; then
      echo "FAIL (daemon exit $rc, not a memory error)"
      tail -n 20 "$tmp/daemon.out"
      status=1
    else
      passed=$((passed + 1))
      echo "ok: vmdiskfs daemon under valgrind"
    fi
  elif ! kill -0 "$daemon_pid" 2>/dev/null && wait "$daemon_pid"; then
    daemon_pid=
    echo "note: vmdiskfs exited at once without mounting (a placeholder?):" \
         "daemon not checked"
  else
    echo "FAIL: vmdiskfs did not show its images under valgrind within 180 s"
    grep " $mnt " /proc/self/mounts
    ls -la "$mnt" "$mnt/snap.qcow2" 2>&1 | head -20
    tail -n 20 "$tmp/daemon.out" "$tmp/vg-daemon.log"
    status=1
  fi
else
  echo "note: vmdiskfs not built or no FUSE here: daemon not checked"
fi

echo "$passed runs clean under valgrind"
exit $status
}
