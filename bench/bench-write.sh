#!/bin/bash
# Restore benchmark: a disk backup copied back into a new qcow2, through
# vmdiskfs and through its peers, side by side in one run.
#
# The backup: SIZE_GB (1) GiB raw file, DATA_MB (512) MiB of random data
# in 1 MiB pieces, the rest half written zeros and half holes, in a fixed
# shuffled order.  Each case restores it into a new qcow2 (qemu-img create,
# 64 KiB clusters) and is timed until the data is durable:
#   vmdiskfs-dd      dd bs=1M conv=notrunc,sparse,fsync into
#                    MNT/bench.qcow2/disk.img (vmdiskfs -f -o images=DIR MNT)
#   qsd-dd           the same into qemu-storage-daemon's writable FUSE
#                    export of the qcow2 node (writable=on)
#   convert          qemu-img convert -n -f raw -O qcow2 (no FUSE: the limit)
#   vmdiskfs-cp      cp --sparse=always into the mount, then sync FILE
#   vmdiskfs-rsync   rsync -a BACKUP MNT/bench.qcow2/ (a staging file
#                    .disk.img.XXXXXX renamed over the disk), then sync
#   vmdiskfs-inplace rsync -a --inplace: the same without staging; the
#                    ratio of the two is the staging overhead
# Each case gets a fresh image and a fresh daemon (started and stopped
# outside the timing); before each: sync, drop the page cache, read the
# backup's data extents (warm source, cold target).  After each, outside the
# timing: qemu-img compare with the backup, qemu-img check, the image's
# allocated size, and the daemon's peak RSS (VmHWM of /proc/PID/status).
# A case that fails (the tool exits non-zero or the image differs) is
# reported as failed and the run goes on: never a timed assertion.
# Figures are medians of RUNS (3) runs, the cases interleaved within a run;
# ratios: vmdiskfs time / peer time (below 1: vmdiskfs is faster).
#
# BIG=1: instead, a 2 TiB sparse backup with BIG_DATA_GB (2) GiB of data in
# 1 MiB pieces scattered over the whole disk, restored once per peer with a
# sparse-aware copy (SEEK_DATA walk, pwrite, fsync: dd conv=notrunc,sparse
# without reading the holes) and, through vmdiskfs, with cp --sparse=always;
# reports time and each daemon's VmHWM.
#
# Run as root from the build tree, on an otherwise idle machine:
#   bench/bench-write.sh                      (RUNS=3, about 10 minutes)
#   CASES="qsd-dd convert" bench/bench-write.sh
#   BIG=1 bench/bench-write.sh
# Environment: RUNS SIZE_GB DATA_MB CASES WORK KEEP=1 (keep the backup in
# WORK for the next run) VMDISKFS VMDISKFS_OPTS BIG BIG_DATA_GB.
# Not part of `make check`: a benchmark, not a test.
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it, so editing
# this file while it runs cannot derail the running copy.
{

top=$(cd "$(dirname "$0")/.." && pwd)
VMDISKFS=${VMDISKFS:-$top/vmdiskfs}
VMDISKFS_OPTS=${VMDISKFS_OPTS:-}
RUNS=${RUNS:-3}
SIZE_GB=${SIZE_GB:-1}
DATA_MB=${DATA_MB:-512}
CASES=${CASES:-vmdiskfs-dd qsd-dd convert vmdiskfs-cp vmdiskfs-rsync vmdiskfs-inplace}
WORK=${WORK:-/var/tmp/vd-bench-write}
KEEP=${KEEP:-0}
BIG=${BIG:-0}
BIG_DATA_GB=${BIG_DATA_GB:-2}

die () { echo "bench-write: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (drop_caches, FUSE mounts)"
for t in qemu-img python3 dd cp rsync sync; do
  command -v $t >/dev/null || die "$t not installed"
done

mkdir -p "$WORK" || die "cannot create $WORK"
src=$WORK/src/disk.img          # the backup (named as the disk: rsync)
big_src=$WORK/big-src/disk.img

# ---- daemons -------------------------------------------------------------
pid=
mnt=
stop () {
  local i
  [ -n "$pid" ] || return 0
  if [ "$1" = qsd ]; then
    # By SIGTERM: after a bare unmount qemu 7.2's daemon spins at 100%
    # CPU forever (TESTING.md).
    kill -TERM "$pid" 2>/dev/null
  else
    fusermount3 -u "$mnt" 2>/dev/null || fusermount -u "$mnt" 2>/dev/null ||
      umount -l "$mnt" 2>/dev/null
    for i in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -TERM "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  if grep -q " $mnt fuse" /proc/self/mounts; then
    umount -l "$mnt" 2>/dev/null
  fi
  pid= mnt=
}
who=
cleanup () {
  stop "$who"
  rm -rf "$WORK/images" "$WORK/mnt" "$WORK/qsd-export" "$WORK/staging" \
         "$WORK/convert.qcow2" "$WORK/big-src" "$WORK/log"
  [ "$KEEP" = 1 ] || rm -rf "$WORK/src" "$WORK/stamp"
  rmdir "$WORK" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for PATH MOUNTPOINT PID: until MOUNTPOINT is a FUSE mount and PATH
# exists, at most 30 s; fails at once when PID exits.
wait_for () {
  local i
  for i in $(seq 300); do
    grep -q " $2 fuse" /proc/self/mounts && [ -e "$1" ] && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_vmdiskfs () {   # start_vmdiskfs IMAGES-DIR MNT: the disk file, or fail
  local opts=()
  [ -x "$VMDISKFS" ] || { echo "vmdiskfs: $VMDISKFS not built" >&2; return 1; }
  mkdir -p "$2" "$WORK/staging"
  chmod 700 "$WORK/staging"
  # Staging files of rsync (issue 9) where the daemon takes them.
  "$VMDISKFS" --help 2>&1 | grep -q 'staging=' &&
    opts+=(-o staging="$WORK/staging")
  "$VMDISKFS" -f -o images="$1" "${opts[@]}" $VMDISKFS_OPTS "$2" \
    >> "$WORK/log/vmdiskfs.log" 2>&1 &
  pid=$! mnt=$2 who=vmdiskfs
  wait_for "$2/$(ls "$1" | head -1)/disk.img" "$2" "$pid"
}

start_qsd () {   # start_qsd IMAGE EXPORT-FILE
  command -v qemu-storage-daemon >/dev/null || return 1
  : > "$2"
  qemu-storage-daemon \
    --blockdev driver=file,node-name=f,filename="$1" \
    --blockdev driver=qcow2,node-name=q,file=f \
    --export type=fuse,id=e,node-name=q,mountpoint="$2",writable=on \
    >> "$WORK/log/qsd.log" 2>&1 &
  pid=$! mnt=$2 who=qsd
  wait_for "$2" "$2" "$pid"
}

hwm () { sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null | tr -d ' '; }

# ---- the backups ---------------------------------------------------------
# make_backup FILE SIZE_MB DATA_PIECES ZERO_PIECES SEED: 1 MiB pieces of
# random data and of written zeros at shuffled places, holes elsewhere.
make_backup () {
  python3 - "$@" <<'EOF'
import os, random, sys
path, size_mb, ndata, nzero, seed = sys.argv[1], *map(int, sys.argv[2:])
rnd = random.Random(seed)
places = rnd.sample(range(size_mb), ndata + nzero)
mib = 1 << 20
with open(path, "wb") as f:
    f.truncate(size_mb * mib)
    zeros = bytes(mib)
    for i, p in enumerate(sorted(places[:ndata])):
        f.seek(p * mib)
        f.write(os.urandom(mib))
    for p in sorted(places[ndata:]):
        f.seek(p * mib)
        f.write(zeros)
EOF
}

# ---- restoring -----------------------------------------------------------
cold () {   # drop every cache, then warm the backup's data (not its holes:
            # cat would read 2 TiB of them in BIG mode)
  sync
  echo 3 > /proc/sys/vm/drop_caches
  python3 - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
off = 0
while True:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    while d < h:
        n = len(os.pread(fd, min(h - d, 1 << 20), d))
        if n == 0:
            break
        d += n
    off = h
EOF
}

# Sparse-aware copy into an existing file (no truncation): the data
# extents of SRC (SEEK_DATA/SEEK_HOLE) written with pwrite in 1 MiB
# pieces, then fsync.  What `dd conv=notrunc,sparse` does, without reading
# the holes (a 2 TiB backup).
sparse_copy () {
  python3 - "$1" "$2" <<'EOF'
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_WRONLY)
off, end = 0, os.fstat(src).st_size
while off < end:
    try:
        d = os.lseek(src, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(src, d, os.SEEK_HOLE)
    while d < h:
        buf = os.pread(src, min(h - d, 1 << 20), d)
        if any(buf):
            os.pwrite(dst, buf, d)
        d += len(buf)
    off = h
os.fsync(dst)
EOF
}

now () { date +%s.%N; }

# restore CASE BACKUP IMAGE-DIR: restore into IMAGE-DIR/bench.qcow2 (made
# fresh by the caller) the way CASE says; prints "SECONDS HWM" or
# "failed HWM" on stdout, the tool's complaints on stderr.
restore () {
  local c=$1 b=$2 d=$3 img=$3/bench.qcow2 f t0 t1 rc=0 h=
  case $c in
    vmdiskfs-*)
      start_vmdiskfs "$d" "$WORK/mnt" ||
        { echo "vmdiskfs did not start" >&2; echo "failed -"; return; }
      f=$WORK/mnt/bench.qcow2/disk.img ;;
    qsd-*)
      start_qsd "$img" "$WORK/qsd-export" ||
        { echo "qemu-storage-daemon did not start" >&2; echo "failed -"; return; }
      f=$WORK/qsd-export ;;
  esac
  cold "$b"
  t0=$(now)
  case $c in
    *-dd)
      dd if="$b" of="$f" bs=1M conv=notrunc,sparse,fsync status=none || rc=1 ;;
    *-cp)
      { cp --sparse=always "$b" "$f" && sync "$f"; } || rc=1 ;;
    *-rsync)
      { rsync -a "$b" "${f%/*}/" && sync "$f"; } || rc=1 ;;
    *-inplace)
      { rsync -a --inplace "$b" "${f%/*}/" && sync "$f"; } || rc=1 ;;
    *-sparse)
      sparse_copy "$b" "$f" || rc=1 ;;
    convert)
      { qemu-img convert -n -f raw -O qcow2 "$b" "$img" && sync "$img"; } || rc=1 ;;
  esac
  t1=$(now)
  [ -n "$pid" ] && h=$(hwm "$pid")
  stop "$who"
  if [ $rc = 0 ]; then
    python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])), end="")' "$t0" "$t1"
  else
    printf failed
  fi
  echo " ${h:--}"
}

# verify BACKUP IMAGE: "ok" or what is wrong; and the allocated size.
verify () {
  local v=ok
  if ! timeout 900 qemu-img compare -q -f raw -F qcow2 "$1" "$2" 2>/dev/null; then
    v="differs"
  fi
  timeout 900 qemu-img check -q "$2" > /dev/null 2>&1
  case $? in
    0) ;;
    3) v="$v, leaks" ;;
    *) v="$v, check fails" ;;
  esac
  echo "$v, $(( $(stat -c %b "$2") * 512 >> 20 )) MiB allocated"
}

new_image () {   # new_image DIR VSIZE
  rm -rf "$1"
  mkdir -p "$1"
  qemu-img create -q -f qcow2 -o cluster_size=65536 "$1/bench.qcow2" "$2"
}

median () {
  python3 -c '
import sys, statistics
v = [float(x) for x in sys.argv[1:] if x not in ("failed", "-", "nan")]
print("%.2f" % statistics.median(v) if v else "n/a")
' $1
}
ratio () {
  python3 -c '
import sys
try:
    print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))
except Exception:
    print("n/a")' "$1" "$2"
}

declare -A label=(
  [vmdiskfs-dd]="vmdiskfs, dd bs=1M conv=notrunc,sparse,fsync"
  [qsd-dd]="qemu-storage-daemon (writable FUSE export), the same dd"
  [convert]="qemu-img convert -n -O qcow2 (no FUSE: the limit)"
  [vmdiskfs-cp]="vmdiskfs, cp --sparse=always + sync"
  [vmdiskfs-rsync]="vmdiskfs, rsync -a (staging file + rename) + sync"
  [vmdiskfs-inplace]="vmdiskfs, rsync -a --inplace + sync"
  [vmdiskfs-sparse]="vmdiskfs, sparse-aware copy (SEEK_DATA, pwrite, fsync)"
  [qsd-sparse]="qemu-storage-daemon, sparse-aware copy"
  [vmdiskfs-bigcp]="vmdiskfs, cp --sparse=always + sync")

mkdir -p "$WORK/log"
version_line () {
  echo "$(uname -r), $(nproc) CPUs, $(qemu-img --version | head -1 | cut -d' ' -f1-3),"
  echo "vmdiskfs $VMDISKFS at $(cd "$(dirname "$VMDISKFS")" && git describe --always --dirty 2>/dev/null)."
}

# ---- BIG=1: 2 TiB ---------------------------------------------------------
if [ "$BIG" = 1 ]; then
  mkdir -p "${big_src%/*}"
  echo "making $big_src: 2 TiB sparse, $BIG_DATA_GB GiB of data in 1 MiB pieces"
  make_backup "$big_src" $((2 << 20)) $((BIG_DATA_GB << 10)) 0 2 ||
    die "making the 2 TiB backup failed"
  declare -A bres=()
  for c in vmdiskfs-sparse qsd-sparse convert vmdiskfs-bigcp; do
    new_image "$WORK/images" 2T || die "qemu-img create failed"
    cc=$c
    [ $c = vmdiskfs-bigcp ] && cc=vmdiskfs-cp
    r=$(restore "$cc" "$big_src" "$WORK/images" 2> "$WORK/log/err")
    if [ "${r% *}" = failed ]; then
      v="$(grep -v '^ \|^Traceback' "$WORK/log/err" | head -1 | cut -c1-120)"
    else
      v=$(verify "$big_src" "$WORK/images/bench.qcow2")
    fi
    bres[$c]="$r|$v"
    echo "  $c: ${r% *} s, VmHWM ${r#* }, $v"
  done
  echo
  echo "## Restore of a 2 TiB sparse disk ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Backup: raw, 2 TiB, $BIG_DATA_GB GiB of random data in 1 MiB pieces scattered"
  echo "over the whole disk; into a new 2 TiB qcow2 (64 KiB clusters); one run."
  version_line
  echo
  echo "| | time (s) | daemon VmHWM | result |"
  echo "|---|---:|---:|---|"
  for c in vmdiskfs-sparse qsd-sparse convert vmdiskfs-bigcp; do
    r=${bres[$c]%%|*} v=${bres[$c]#*|}
    echo "| ${label[$c]} | ${r% *} | ${r#* } | $v |"
  done
  exit
fi

# ---- the 1 GiB restore ----------------------------------------------------
want="$SIZE_GB $DATA_MB"
if [ -f "$src" ] && [ "$(cat "$WORK/stamp" 2>/dev/null)" = "$want" ]; then
  echo "reusing $src"
else
  mkdir -p "${src%/*}"
  pieces=$((SIZE_GB << 10))
  [ "$DATA_MB" -le "$pieces" ] || die "DATA_MB larger than the disk"
  echo "making $src: $SIZE_GB GiB, $DATA_MB MiB of random data in 1 MiB pieces"
  make_backup "$src" "$pieces" "$DATA_MB" $(((pieces - DATA_MB) / 2)) 1 ||
    die "making the backup failed"
  echo "$want" > "$WORK/stamp"
fi

declare -A times=() hwms=() checks=()
echo "runs: $RUNS; cases: $CASES"
for ((r = 1; r <= RUNS; r++)); do
  echo "run $r/$RUNS"
  for c in $CASES; do
    [ -n "${label[$c]:-}" ] || die "unknown case $c"
    new_image "$WORK/images" "${SIZE_GB}G" || die "qemu-img create failed"
    res=$(restore "$c" "$src" "$WORK/images" 2> "$WORK/log/err")
    t=${res% *} h=${res#* }
    if [ "$t" != failed ]; then
      v=$(verify "$src" "$WORK/images/bench.qcow2")
      # A restore that gives other bytes is not a time.
      case $v in ok*) ;; *) t=failed ;; esac
    else
      v="$(head -1 "$WORK/log/err" | cut -c1-120)"
    fi
    times[$c]="${times[$c]:-} $t"
    hwms[$c]="${hwms[$c]:-} $h"
    checks[$c]="${checks[$c]:-}${checks[$c]:+; }$v"
    printf '  %-18s %8s s  VmHWM %-10s %s\n' "$c" "$t" "$h" "$v"
  done
done

# ---- the table -----------------------------------------------------------
declare -A med=()
for c in $CASES; do med[$c]=$(median "${times[$c]}"); done
echo
echo "## Restore of a ${SIZE_GB} GiB disk ($(date -u +%Y-%m-%dT%H:%MZ), median of $RUNS runs)"
echo
echo "Backup: raw, ${SIZE_GB} GiB, $DATA_MB MiB of random data in 1 MiB pieces, the rest"
echo "half written zeros, half holes; into a new qcow2 (64 KiB clusters)."
version_line
echo
echo "| | median time (s) | MiB/s of disk | daemon VmHWM (last run) | runs |"
echo "|---|---:|---:|---:|---|"
for c in $CASES; do
  mibs=$(python3 -c '
import sys
try: print("%.0f" % (float(sys.argv[1]) * 1024 / float(sys.argv[2])))
except Exception: print("n/a")' "$SIZE_GB" "${med[$c]}")
  last=${hwms[$c]##* }
  echo "| ${label[$c]} | ${med[$c]} | $mibs | ${last/-/n\/a} | ${times[$c]# } |"
done
echo
echo "| ratio of median times | value | target (issue 9) |"
echo "|---|---:|---|"
has () { [[ " $CASES " == *" $1 "* ]]; }
has vmdiskfs-dd && has qsd-dd &&
  echo "| vmdiskfs dd / qemu-storage-daemon dd | $(ratio "${med[vmdiskfs-dd]}" "${med[qsd-dd]}") | at most 0.5 (2x faster) |"
has vmdiskfs-dd && has convert &&
  echo "| vmdiskfs dd / qemu-img convert | $(ratio "${med[vmdiskfs-dd]}" "${med[convert]}") | at most 2 (half its speed) |"
has qsd-dd && has convert &&
  echo "| qemu-storage-daemon dd / qemu-img convert | $(ratio "${med[qsd-dd]}" "${med[convert]}") | |"
has vmdiskfs-cp && has vmdiskfs-dd &&
  echo "| vmdiskfs cp / vmdiskfs dd | $(ratio "${med[vmdiskfs-cp]}" "${med[vmdiskfs-dd]}") | |"
has vmdiskfs-rsync && has vmdiskfs-inplace &&
  echo "| staging overhead: rsync -a / rsync -a --inplace | $(ratio "${med[vmdiskfs-rsync]}" "${med[vmdiskfs-inplace]}") | |"
echo
echo "After each restore (qemu-img compare with the backup, qemu-img check, allocation):"
for c in $CASES; do echo "- $c: ${checks[$c]}"; done
exit
}
