#!/bin/bash
# Read benchmark: vmdiskfs against its peers, side by side in one run.
#
# One qcow2 image (VSIZE virtual, 64 KiB clusters, DATA_MB of random data
# written with qemu-io in 64 MiB pieces at every other 128 MiB, the rest
# holes; then an internal snapshot s1, then every fourth piece overwritten
# with new random data, so that s1 and the disk differ) is read through
#   vmdiskfs             vmdiskfs -f -o images=DIR MNT   -> MNT/bench.qcow2/disk.img
#   qemu-storage-daemon  its FUSE export of the qcow2 node on a regular file
#   qcowmount            libqcow-utils, MNT/qcow1 (often slow: capped)
#   raw                  the same bytes converted to a raw file and read
#                        straight from the page cache: the limit
# with fio (direct=0, psync):
#   sequential read, bs=1M, one pass capped at SEQ_CAP seconds;
#   4 KiB random read, numjobs=1 and 4, RAND_SECONDS each;
#   the same random reads with fio and the daemon pinned to CPU 0 (on small
#   machines random-read IOPS mostly measure cross-CPU wakeups);
# and end to end, as a backup reads (vmdiskfs, qsd and raw only):
#   tar     `tar -cSf - -C DIR disk | cat >/dev/null` of the disk file;
#   rsync   `rsync -a --sparse` of snapshot s1's directory to a fresh
#           directory in WORK (removed after, untimed).  qemu-storage-
#           daemon cannot export an internal snapshot (its QMP has no way
#           to load one), so its side is a directory holding only its FUSE
#           export of bench-s1.qcow2, s1 converted by `qemu-img convert -l`
#           into a qcow2 of its own: the same bytes through qemu's qcow2
#           driver; raw's is s1 converted to a sparse raw file;
#   rsyncd  `rsync -a --sparse` of the disk file itself, the same image
#           through both daemons;
#   each in seconds; every copy is compared with the raw bytes, untimed.
# Before every fio, tar and rsync run: sync, drop the page cache (echo 3 >
# /proc/sys/vm/drop_caches), then read the image file with cat so that it
# is warm while the FUSE file is cold (fio's invalidate=0 keeps it so).
# Each figure is the median of RUNS runs, the peers interleaved within a
# run; the table gives ratios vmdiskfs/peer (these machines are noisy:
# compare ratios, not absolute numbers).
#
# Then memory: the vmdiskfs daemon's peak RSS (VmHWM) while serving a 2 TiB
# sparse qcow2 (reads of a few regions, a full SEEK_DATA/SEEK_HOLE walk and
# `tar -cS` of the disk), and the same for qemu-storage-daemon.
#
# Run as root from the build tree, on an otherwise idle machine:
#   bench/bench-read.sh                      (RUNS=3, about 15 minutes)
#   RUNS=5 PEERS="vmdiskfs qsd raw" bench/bench-read.sh
# Environment: RUNS VSIZE_GB DATA_MB SEQ_CAP RAND_SECONDS PEERS WORK KEEP=1
# (keep the images in WORK for the next run) VMDISKFS.
# Not part of `make check`: a benchmark, not a test.
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it, so editing
# this file while it runs cannot derail the running copy.
{

top=$(cd "$(dirname "$0")/.." && pwd)
VMDISKFS=${VMDISKFS:-$top/vmdiskfs}
RUNS=${RUNS:-3}
VSIZE_GB=${VSIZE_GB:-4}
DATA_MB=${DATA_MB:-2048}
SEQ_CAP=${SEQ_CAP:-30}
RAND_SECONDS=${RAND_SECONDS:-10}
PEERS=${PEERS:-vmdiskfs qsd qcowmount raw}
WORK=${WORK:-/var/tmp/vd-bench}
KEEP=${KEEP:-0}
RSS_TEST=${RSS_TEST:-1}

die () { echo "bench-read: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (drop_caches, FUSE mounts)"
for t in fio qemu-img qemu-io python3 taskset; do
  command -v $t >/dev/null || die "$t not installed"
done
ncpu=$(nproc)
allcpus=0-$((ncpu - 1))

mkdir -p "$WORK" || die "cannot create $WORK"
img=$WORK/bench.qcow2
raw=$WORK/bench.raw
snapq=$WORK/bench-s1.qcow2        # s1 as a qcow2 of its own, for qsd
snapraw=$WORK/snap-raw/disk.img   # s1 as a raw file (its directory is rsynced)

# ---- daemons -------------------------------------------------------------
declare -A pid file backing
declare -A snapdir sbacking   # peers measured end to end: s1's directory
mounts=()

stop_all () {
  local p m i
  # qemu-storage-daemon first, by SIGTERM: after a bare unmount qemu 7.2's
  # daemon spins at 100% CPU forever (TESTING.md).
  if [ -n "${pid[qsd]:-}" ]; then
    kill -TERM "${pid[qsd]}" 2>/dev/null
    wait "${pid[qsd]}" 2>/dev/null
    unset "pid[qsd]"
  fi
  for m in "${mounts[@]}"; do
    if grep -q " $m fuse" /proc/self/mounts; then
      fusermount3 -u "$m" 2>/dev/null || fusermount -u "$m" 2>/dev/null ||
        umount -l "$m" 2>/dev/null
    fi
  done
  for p in "${!pid[@]}"; do
    for i in $(seq 50); do
      kill -0 "${pid[$p]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -TERM "${pid[$p]}" 2>/dev/null
    wait "${pid[$p]}" 2>/dev/null
    unset "pid[$p]"
  done
  mounts=()
}
cleanup () {
  stop_all
  rm -rf "$WORK/mnt" "$WORK/images" "$WORK/qsd-export" "$WORK/qsd-snap" \
         "$WORK/big" "$WORK/chunk" "$WORK/copy" "$WORK/tar.err"
  [ "$KEEP" = 1 ] || rm -rf "$img" "$raw" "$snapq" "${snapraw%/*}" "$WORK/stamp"
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

start_vmdiskfs () {   # start_vmdiskfs DIR-WITH-IMAGE MNT
  [ -x "$VMDISKFS" ] || { echo "vmdiskfs: $VMDISKFS not built" >&2; return 1; }
  mkdir -p "$2"
  "$VMDISKFS" -f -o images="$1" "$2" > "$WORK/vmdiskfs.log" 2>&1 &
  pid[vmdiskfs]=$!
  mounts+=("$2")
  wait_for "$2/$(ls "$1" | head -1)/disk.img" "$2" "${pid[vmdiskfs]}"
}

start_qsd () {   # start_qsd IMAGE EXPORT-FILE [IMAGE2 EXPORT-FILE2]
  command -v qemu-storage-daemon >/dev/null || return 1
  local more=()
  : > "$2"
  if [ $# -ge 4 ]; then
    # One daemon exporting both, as one vmdiskfs serves disk and snapshot.
    : > "$4"
    more=(--blockdev driver=file,node-name=f2,filename="$3"
          --blockdev driver=qcow2,node-name=q2,file=f2
          --export type=fuse,id=e2,node-name=q2,mountpoint="$4")
  fi
  qemu-storage-daemon \
    --blockdev driver=file,node-name=f,filename="$1" \
    --blockdev driver=qcow2,node-name=q,file=f \
    --export type=fuse,id=e,node-name=q,mountpoint="$2" \
    "${more[@]}" > "$WORK/qsd.log" 2>&1 &
  pid[qsd]=$!
  mounts+=("$2")
  [ $# -ge 4 ] && mounts+=("$4")
  wait_for "$2" "$2" "${pid[qsd]}" &&
    { [ $# -lt 4 ] || wait_for "$4" "$4" "${pid[qsd]}"; }
}

start_qcowmount () {   # start_qcowmount IMAGE MNT
  command -v qcowmount >/dev/null || return 1
  mkdir -p "$2"
  # -v keeps it in the foreground (its pid is ours to stop).
  qcowmount -v "$1" "$2" > /dev/null 2> "$WORK/qcowmount.log" &
  pid[qcowmount]=$!
  mounts+=("$2")
  wait_for "$2/qcow1" "$2" "${pid[qcowmount]}"
}

# ---- the image -----------------------------------------------------------
make_image () {
  # The stamp names the layout: images of an older one are made again.
  local want="$VSIZE_GB $DATA_MB snapshot-s1-every-4th-rewritten" i n
  if [ -f "$img" ] && [ -f "$raw" ] && [ -f "$snapq" ] && [ -f "$snapraw" ] &&
     [ "$(cat "$WORK/stamp" 2>/dev/null)" = "$want" ]; then
    echo "reusing $img"
    return
  fi
  rm -rf "$img" "$raw" "$snapq" "${snapraw%/*}"
  echo "making $img: ${VSIZE_GB} GiB virtual, $DATA_MB MiB random data, snapshot s1"
  qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" "${VSIZE_GB}G" ||
    die "qemu-img create failed"
  n=$((DATA_MB / 64))
  [ $((n * 128)) -le $((VSIZE_GB * 1024)) ] || die "DATA_MB too large for VSIZE_GB"
  for ((i = 0; i < n; i++)); do
    head -c 64M /dev/urandom > "$WORK/chunk"
    qemu-io -c "write -s $WORK/chunk $((i * 128))M 64M" "$img" > /dev/null ||
      die "qemu-io failed"
  done
  qemu-img snapshot -c s1 "$img" || die "qemu-img snapshot failed"
  # After s1, new data over every fourth piece: the disk's clusters there
  # are copied on write, s1 keeps the old ones.
  for ((i = 0; i < n; i += 4)); do
    head -c 64M /dev/urandom > "$WORK/chunk"
    qemu-io -c "write -s $WORK/chunk $((i * 128))M 64M" "$img" > /dev/null ||
      die "qemu-io failed"
  done
  rm -f "$WORK/chunk"
  mkdir -p "${snapraw%/*}"
  qemu-img convert -O raw "$img" "$raw" &&
    qemu-img convert -l snapshot.name=s1 -O raw "$img" "$snapraw" &&
    qemu-img convert -l snapshot.name=s1 -O qcow2 -o cluster_size=65536 \
      "$img" "$snapq" || die "qemu-img convert failed"
  echo "$want" > "$WORK/stamp"
}

# ---- measuring -----------------------------------------------------------
cold () {   # drop every cache, then warm the image file behind the peer
  sync
  echo 3 > /proc/sys/vm/drop_caches
  cat "$1" > /dev/null
}

# fio_run FILE MODE [taskset-cpus]: prints MiB/s (seq) or IOPS (rand*).
fio_run () {
  local f=$1 mode=$2 cpus=${3:-} args json
  args=(--name=bench --filename="$f" --readonly --direct=0 --ioengine=psync
        --invalidate=0 --group_reporting --output-format=json)
  case $mode in
    seq)   args+=(--rw=read --bs=1M --numjobs=1 --runtime="$SEQ_CAP") ;;
    rand1) args+=(--rw=randread --bs=4k --numjobs=1 --time_based
                  --runtime="$RAND_SECONDS") ;;
    # Four jobs, each in its own quarter of the disk: no job reads what
    # another brought into the page cache.  (One job: fio's random map
    # never reads a block twice in a pass.)
    rand4) args+=(--rw=randread --bs=4k --numjobs=4 --time_based
                  --runtime="$RAND_SECONDS" --size=$((VSIZE_GB * 256))M
                  --offset_increment=$((VSIZE_GB * 256))M) ;;
  esac
  if [ -n "$cpus" ]; then
    json=$(timeout $((SEQ_CAP + RAND_SECONDS + 60)) taskset -c "$cpus" fio "${args[@]}" 2>/dev/null)
  else
    json=$(timeout $((SEQ_CAP + RAND_SECONDS + 60)) fio "${args[@]}" 2>/dev/null)
  fi
  python3 -c '
import json, sys
try:
    j = json.loads(sys.stdin.read())
    r = j["jobs"][0]["read"]
    if r["io_bytes"] == 0:
        raise ValueError
    print("%.1f" % (r["bw_bytes"] / 1048576.0) if sys.argv[1] == "seq"
          else "%.0f" % r["iops"])
except Exception:
    print("nan")
' "$mode" <<< "$json"
}

pin () {    # pin PEER CPUS: move every thread of the peer's daemon
  [ -n "${pid[$1]:-}" ] && taskset -a -p -c "$2" "${pid[$1]}" > /dev/null
}

# e2e PEER METRIC: one tar or rsync run; sets e2e_v to its seconds (nan
# when it failed).  An rsync copy is compared with the raw bytes and
# removed, untimed.
e2e () {
  local p=$1 m=$2 f=${file[$p]} copy=$WORK/copy t0 t1 rc src ref name
  case $m in
    tar)
      t0=$(date +%s%N)
      timeout 600 tar -cSf - -C "${f%/*}" "${f##*/}" 2> "$WORK/tar.err" |
        cat > /dev/null
      rc=${PIPESTATUS[0]}
      t1=$(date +%s%N)
      # Status 1 is "file changed as we read it": qemu-storage-daemon's
      # export shows the current time as mtime and ctime.  The archive
      # is whole; say so once.
      if [ "$rc" = 1 ] && grep -q 'file changed as we read it' "$WORK/tar.err"; then
        rc=0
        [ -n "${tarwarned[$p]:-}" ] || {
          tarwarned[$p]=1
          notes+=("$p: tar warns \"file changed as we read it\" (exit 1, archive whole)")
          echo "${notes[-1]}"
        }
      fi ;;
    rsync|rsyncd)
      if [ "$m" = rsync ]; then
        src=${snapdir[$p]}/ ref=$snapraw name=disk.img
      else
        src=$f ref=$raw name=${f##*/}
      fi
      rm -rf "$copy"
      t0=$(date +%s%N)
      timeout 600 rsync -a --sparse "$src" "$copy/"
      rc=$?
      t1=$(date +%s%N)
      if [ "$rc" = 0 ] && ! cmp -s "$copy/$name" "$ref"; then
        notes+=("WARNING: $p: the $m copy differs from qemu-img's bytes")
        echo "${notes[-1]}"
      fi
      rm -rf "$copy" ;;
  esac
  if [ "$rc" = 0 ]; then
    e2e_v=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  else
    e2e_v=nan
    notes+=("$p: $m exited with status $rc")
    echo "${notes[-1]}"
  fi
}

declare -A results   # results[peer,metric] = "v1 v2 v3"
metrics="seq rand1 rand4 pin1 pin4 tar rsync rsyncd"
timed="tar rsync rsyncd"   # seconds: lower is better

measure () {   # measure PEER
  local p=$1 f=${file[$p]} b=${backing[$p]} m v
  for m in $metrics; do
    case $m in
      tar|rsync|rsyncd)
        [ -n "${snapdir[$p]:-}" ] || continue
        [ "$m" = rsync ] && b=${sbacking[$p]} ;;
    esac
    cold "$b"
    case $m in
      seq|rand1|rand4) v=$(fio_run "$f" "$m") ;;
      pin1|pin4)
        pin "$p" 0
        v=$(fio_run "$f" "rand${m#pin}" 0)
        pin "$p" "$allcpus" ;;
      tar|rsync|rsyncd)
        e2e "$p" "$m"
        v=$e2e_v
        b=${backing[$p]} ;;
    esac
    results[$p,$m]="${results[$p,$m]:-} $v"
    printf '  %-10s %-6s %s\n' "$p" "$m" "$v"
    if [ "$m" = tar ]; then
      # The same run as MiB/s of the virtual size.
      v=$(awk -v s="$v" -v g="$VSIZE_GB" \
            'BEGIN { if (s == "nan" || s <= 0) print "nan";
                     else printf "%.1f", g * 1024 / s }')
      results[$p,tarmbs]="${results[$p,tarmbs]:-} $v"
    fi
  done
}

median () {   # median "V1 V2 ..." [DIGITS]
  python3 -c '
import sys, statistics
d = int(sys.argv[1])
v = [float(x) for x in sys.argv[2:] if x != "nan"]
m = statistics.median(v) if v else float("nan")
print("nan" if m != m else "%.0f" % m if m >= 1000 else "%.*f" % (d, m))
' "${2:-1}" $1
}

# ---- main ----------------------------------------------------------------
make_image
mkdir -p "$WORK/images" "$WORK/mnt/vmdiskfs" "$WORK/mnt/qcowmount"
ln -f "$img" "$WORK/images/bench.qcow2"

active=() notes=()
declare -A tarsize tarwarned
for p in $PEERS; do
  case $p in
    vmdiskfs)
      start_vmdiskfs "$WORK/images" "$WORK/mnt/vmdiskfs" &&
        file[$p]=$WORK/mnt/vmdiskfs/bench.qcow2/disk.img backing[$p]=$img \
        snapdir[$p]=$WORK/mnt/vmdiskfs/bench.qcow2/snapshots/s1 \
        sbacking[$p]=$img ;;
    qsd)
      mkdir -p "$WORK/qsd-snap"
      start_qsd "$img" "$WORK/qsd-export" "$snapq" "$WORK/qsd-snap/disk.img" &&
        file[$p]=$WORK/qsd-export backing[$p]=$img \
        snapdir[$p]=$WORK/qsd-snap sbacking[$p]=$snapq ;;
    qcowmount)
      start_qcowmount "$img" "$WORK/mnt/qcowmount" &&
        file[$p]=$WORK/mnt/qcowmount/qcow1 backing[$p]=$img ;;
    raw)
      file[$p]=$raw backing[$p]=$raw \
        snapdir[$p]=${snapraw%/*} sbacking[$p]=$snapraw ;;
    *) die "unknown peer $p" ;;
  esac
  if [ -n "${file[$p]:-}" ]; then
    sz=$(stat -c %s "${file[$p]}")
    if [ "$sz" != $((VSIZE_GB << 30)) ]; then
      notes+=("$p: ${file[$p]} has size $sz, not $((VSIZE_GB << 30)): left out")
      echo "${notes[-1]}"
      unset "file[$p]" "snapdir[$p]"
    else
      active+=("$p")
    fi
  else
    notes+=("$p did not start: left out")
    echo "${notes[-1]}"
  fi
done
[ ${#active[@]} -gt 0 ] || die "no peer to measure"

# The bytes must agree before any speed means anything (first 64 MiB
# pieces of data and of hole, and the end).
for p in "${active[@]}"; do
  [ "$p" = raw ] && continue
  for off in 0 64 $((VSIZE_GB * 1024 - 64)); do
    if ! cmp -s <(dd if="${file[$p]}" bs=1M skip=$off count=64 2>/dev/null) \
                <(dd if="$raw" bs=1M skip=$off count=64 2>/dev/null); then
      notes+=("WARNING: $p reads different bytes than qemu-img at $off MiB")
      echo "${notes[-1]}"
    fi
    [ -n "${snapdir[$p]:-}" ] || continue
    if ! cmp -s <(dd if="${snapdir[$p]}/disk.img" bs=1M skip=$off count=64 2>/dev/null) \
                <(dd if="$snapraw" bs=1M skip=$off count=64 2>/dev/null); then
      notes+=("WARNING: $p reads different bytes than qemu-img in s1 at $off MiB")
      echo "${notes[-1]}"
    fi
  done
done
# rsync copies the same bytes from each directory: disk.img alone; tar
# writes the same stream when the peers report the same holes.
for p in "${active[@]}"; do
  [ -n "${snapdir[$p]:-}" ] || continue
  if [ "$(ls -A "${snapdir[$p]}")" != disk.img ]; then
    notes+=("WARNING: ${snapdir[$p]} holds more than disk.img")
    echo "${notes[-1]}"
  fi
  f=${file[$p]}
  n=$(timeout 600 tar -cSf - -C "${f%/*}" "${f##*/}" 2>/dev/null | wc -c)
  echo "tar -cS stream of $p: $n bytes"
  tarsize[$p]=$n
done

echo "runs: $RUNS; peers: ${active[*]}"
for ((r = 1; r <= RUNS; r++)); do
  echo "run $r/$RUNS"
  for p in "${active[@]}"; do
    measure "$p"
  done
done

hwm () { sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null; }
bench_hwm=
[ -n "${pid[vmdiskfs]:-}" ] && bench_hwm=$(hwm "${pid[vmdiskfs]}")
qsd_bench_hwm=
[ -n "${pid[qsd]:-}" ] && qsd_bench_hwm=$(hwm "${pid[qsd]}")
stop_all

# ---- memory with a 2 TiB sparse image -------------------------------------
rss_vmdiskfs= rss_qsd=
if [ "$RSS_TEST" = 1 ]; then
  big=$WORK/big
  mkdir -p "$big/images" "$big/mnt"
  qemu-img create -q -f qcow2 "$big/images/big.qcow2" 2T
  qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 1T 1M' -c 'write -P 3 1536G 4M' \
          -c 'write -P 4 2047G 1M' -c 'write -z 100G 1G' \
          "$big/images/big.qcow2" > /dev/null
  walk () {   # read a few regions, SEEK_DATA walk, tar -S; all bounded
    local f=$1
    for off in 0 524288 1048576 1572864 2097151; do   # MiB
      dd if="$f" of=/dev/null bs=1M skip=$off count=1 2>/dev/null
    done
    timeout 300 python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
off = n = total = 0
while True:
    try:
        d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    n += 1; total += h - d; off = h
print("    SEEK_DATA walk: %d data extents, %d MiB" % (n, total >> 20))
' "$f"
    echo "    tar -cS: $(timeout 300 tar -cSf - -C "${f%/*}" "${f##*/}" | wc -c) bytes"
  }
  echo "memory: 2 TiB sparse qcow2"
  if [ -x "$VMDISKFS" ] && start_vmdiskfs "$big/images" "$big/mnt"; then
    walk "$big/mnt/big.qcow2/disk.img"
    rss_vmdiskfs=$(hwm "${pid[vmdiskfs]}")
    echo "  vmdiskfs VmHWM: $rss_vmdiskfs"
    stop_all
  fi
  if start_qsd "$big/images/big.qcow2" "$big/qsd-export"; then
    walk "$big/qsd-export"
    rss_qsd=$(hwm "${pid[qsd]}")
    echo "  qemu-storage-daemon VmHWM: $rss_qsd"
    stop_all
  fi
fi

# ---- the table -----------------------------------------------------------
declare -A label=([vmdiskfs]=vmdiskfs [qsd]=qemu-storage-daemon
                  [qcowmount]=qcowmount [raw]="raw file (limit)")
declare -A mlabel=(
  [seq]="sequential read, bs=1M, MiB/s"
  [rand1]="4k random read, 1 job, IOPS"
  [rand4]="4k random read, 4 jobs, IOPS"
  [pin1]="4k random read, 1 job, pinned to 1 CPU, IOPS"
  [pin4]="4k random read, 4 jobs, pinned to 1 CPU, IOPS"
  [tar]="tar -cSf - DISK \\| cat >/dev/null, seconds"
  [tarmbs]="the same tar, MiB/s of the virtual size"
  [rsync]="rsync -a --sparse of snapshot s1's directory, seconds"
  [rsyncd]="rsync -a --sparse of the disk file, seconds")
table="seq rand1 rand4 pin1 pin4 tar tarmbs rsync rsyncd"
echo
echo "## Results ($(date -u +%Y-%m-%dT%H:%MZ), median of $RUNS runs)"
echo
echo "Image: qcow2, ${VSIZE_GB} GiB virtual, 64 KiB clusters, $DATA_MB MiB of random data;"
echo "$(uname -r), $ncpu CPUs, $(qemu-img --version | head -1 | cut -d' ' -f1-3), $(fio --version),"
echo "vmdiskfs $VMDISKFS at $(cd "$(dirname "$VMDISKFS")" && git describe --always --dirty 2>/dev/null)."
echo
hdr="| |" sep="|---|"
for p in "${active[@]}"; do hdr+=" ${label[$p]} |"; sep+="---:|"; done
for p in "${active[@]}"; do
  [ "$p" = vmdiskfs ] && continue
  [ -n "${results[vmdiskfs,seq]:-}" ] || continue
  hdr+=" vmdiskfs / ${label[$p]%% *} |"; sep+="---:|"
done
echo "$hdr"; echo "$sep"
for m in $table; do
  declare -A med=()
  row="| ${mlabel[$m]} |"
  for p in "${active[@]}"; do
    case " $timed " in
      *" $m "*) med[$p]=$(median "${results[$p,$m]:-}" 2) ;;
      *) med[$p]=$(median "${results[$p,$m]:-}") ;;
    esac
    row+=" ${med[$p]} |"
  done
  for p in "${active[@]}"; do
    [ "$p" = vmdiskfs ] && continue
    [ -n "${results[vmdiskfs,seq]:-}" ] || continue
    # Above 1 when vmdiskfs is ahead: for seconds, the peer's over ours.
    case " $timed " in
      *" $m "*) set -- "${med[$p]}" "${med[vmdiskfs]}" ;;
      *) set -- "${med[vmdiskfs]}" "${med[$p]}" ;;
    esac
    row+=" $(python3 -c '
import sys
a, b = sys.argv[1], sys.argv[2]
try:
    r = float(a) / float(b)
    print("n/a" if r != r else "%.2f" % r)
except Exception:
    print("n/a")' "$1" "$2") |"
  done
  echo "$row"
  unset med
done
echo
echo "The ratio columns are vmdiskfs's figure over the peer's, and for the rows"
echo "in seconds the peer's time over vmdiskfs's: above 1, vmdiskfs is faster."
echo "qemu-storage-daemon cannot export an internal snapshot: its s1 directory"
echo "holds its export of s1 converted to a qcow2 of its own (the same bytes)."
echo "tar -cS stream bytes:$(for p in "${active[@]}"; do
  [ -n "${tarsize[$p]:-}" ] && printf ' %s %s;' "$p" "${tarsize[$p]}"; done)"
echo
echo "Peak RSS (VmHWM) of the daemons:"
echo
echo "| | vmdiskfs | qemu-storage-daemon |"
echo "|---|---:|---:|"
echo "| after the runs above (${VSIZE_GB} GiB image) | ${bench_hwm:-n/a} | ${qsd_bench_hwm:-n/a} |"
echo "| 2 TiB sparse qcow2: reads, SEEK_DATA walk, tar -cS | ${rss_vmdiskfs:-n/a} | ${rss_qsd:-n/a} |"
for n in "${notes[@]}"; do echo; echo "$n"; done
echo
echo "Raw figures per run:"
for p in "${active[@]}"; do
  for m in $table; do
    [ -n "${results[$p,$m]:-}" ] && echo "    $p $m:${results[$p,$m]}"
  done
done
exit
}
