#!/bin/bash
# Read benchmark: vmdiskfs against its peers, side by side in one run.
#
# One qcow2 image (VSIZE virtual, 64 KiB clusters, DATA_MB of random data
# written with qemu-io in 64 MiB pieces at every other 128 MiB, the rest
# holes) is read through
#   vmdiskfs             vmdiskfs -f -o images=DIR MNT   -> MNT/bench.qcow2/disk.img
#   qemu-storage-daemon  its FUSE export of the qcow2 node on a regular file
#   qcowmount            libqcow-utils, MNT/qcow1 (often slow: capped)
#   raw                  the same bytes converted to a raw file and read
#                        straight from the page cache: the limit
# with fio (direct=0, psync):
#   sequential read, bs=1M, one pass capped at SEQ_CAP seconds;
#   4 KiB random read, numjobs=1 and 4, RAND_SECONDS each;
#   the same random reads with fio and the daemon pinned to CPU 0 (on small
#   machines random-read IOPS mostly measure cross-CPU wakeups).
# Before every fio run: sync, drop the page cache (echo 3 >
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

# ---- daemons -------------------------------------------------------------
declare -A pid file backing
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
  rm -rf "$WORK/mnt" "$WORK/images" "$WORK/qsd-export" "$WORK/big" \
         "$WORK/chunk"
  [ "$KEEP" = 1 ] || rm -f "$img" "$raw" "$WORK/stamp"
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

start_qsd () {   # start_qsd IMAGE EXPORT-FILE
  command -v qemu-storage-daemon >/dev/null || return 1
  : > "$2"
  qemu-storage-daemon \
    --blockdev driver=file,node-name=f,filename="$1" \
    --blockdev driver=qcow2,node-name=q,file=f \
    --export type=fuse,id=e,node-name=q,mountpoint="$2" \
    > "$WORK/qsd.log" 2>&1 &
  pid[qsd]=$!
  mounts+=("$2")
  wait_for "$2" "$2" "${pid[qsd]}"
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
  local want="$VSIZE_GB $DATA_MB" i n
  if [ -f "$img" ] && [ -f "$raw" ] && [ "$(cat "$WORK/stamp" 2>/dev/null)" = "$want" ]; then
    echo "reusing $img"
    return
  fi
  rm -f "$img" "$raw"
  echo "making $img: ${VSIZE_GB} GiB virtual, $DATA_MB MiB random data"
  qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" "${VSIZE_GB}G" ||
    die "qemu-img create failed"
  n=$((DATA_MB / 64))
  [ $((n * 128)) -le $((VSIZE_GB * 1024)) ] || die "DATA_MB too large for VSIZE_GB"
  for ((i = 0; i < n; i++)); do
    head -c 64M /dev/urandom > "$WORK/chunk"
    qemu-io -c "write -s $WORK/chunk $((i * 128))M 64M" "$img" > /dev/null ||
      die "qemu-io failed"
  done
  rm -f "$WORK/chunk"
  qemu-img convert -O raw "$img" "$raw" || die "qemu-img convert failed"
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

declare -A results   # results[peer,metric] = "v1 v2 v3"
metrics="seq rand1 rand4 pin1 pin4"

measure () {   # measure PEER
  local p=$1 f=${file[$p]} b=${backing[$p]} m v
  for m in $metrics; do
    cold "$b"
    case $m in
      seq|rand1|rand4) v=$(fio_run "$f" "$m") ;;
      pin1|pin4)
        pin "$p" 0
        v=$(fio_run "$f" "rand${m#pin}" 0)
        pin "$p" "$allcpus" ;;
    esac
    results[$p,$m]="${results[$p,$m]:-} $v"
    printf '  %-10s %-6s %s\n' "$p" "$m" "$v"
  done
}

median () {
  python3 -c '
import sys, statistics
v = [float(x) for x in sys.argv[1:] if x != "nan"]
m = statistics.median(v) if v else float("nan")
print("nan" if m != m else "%.0f" % m if m >= 1000 else "%.1f" % m)
' $1
}

# ---- main ----------------------------------------------------------------
make_image
mkdir -p "$WORK/images" "$WORK/mnt/vmdiskfs" "$WORK/mnt/qcowmount"
ln -f "$img" "$WORK/images/bench.qcow2"

active=() notes=()
for p in $PEERS; do
  case $p in
    vmdiskfs)
      start_vmdiskfs "$WORK/images" "$WORK/mnt/vmdiskfs" &&
        file[$p]=$WORK/mnt/vmdiskfs/bench.qcow2/disk.img backing[$p]=$img ;;
    qsd)
      start_qsd "$img" "$WORK/qsd-export" &&
        file[$p]=$WORK/qsd-export backing[$p]=$img ;;
    qcowmount)
      start_qcowmount "$img" "$WORK/mnt/qcowmount" &&
        file[$p]=$WORK/mnt/qcowmount/qcow1 backing[$p]=$img ;;
    raw)
      file[$p]=$raw backing[$p]=$raw ;;
    *) die "unknown peer $p" ;;
  esac
  if [ -n "${file[$p]:-}" ]; then
    sz=$(stat -c %s "${file[$p]}")
    if [ "$sz" != $((VSIZE_GB << 30)) ]; then
      notes+=("$p: ${file[$p]} has size $sz, not $((VSIZE_GB << 30)): left out")
      echo "${notes[-1]}"
      unset "file[$p]"
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
  done
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
  [pin4]="4k random read, 4 jobs, pinned to 1 CPU, IOPS")
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
for m in $metrics; do
  declare -A med=()
  row="| ${mlabel[$m]} |"
  for p in "${active[@]}"; do
    med[$p]=$(median "${results[$p,$m]}")
    row+=" ${med[$p]} |"
  done
  for p in "${active[@]}"; do
    [ "$p" = vmdiskfs ] && continue
    [ -n "${results[vmdiskfs,seq]:-}" ] || continue
    row+=" $(python3 -c '
import sys
a, b = sys.argv[1], sys.argv[2]
try:
    print("%.2f" % (float(a) / float(b)))
except Exception:
    print("n/a")' "${med[vmdiskfs]}" "${med[$p]}") |"
  done
  echo "$row"
  unset med
done
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
  for m in $metrics; do
    echo "    $p $m:${results[$p,$m]}"
  done
done
exit
}
