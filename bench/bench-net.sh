#!/bin/bash
# Network disk benchmark: an RBD image read through vmdiskfs against its
# peers, side by side in one run.
#
# A private Ceph cluster (tests/integration/ceph-functions.sh: one mon, one
# memstore OSD on this machine, auth none), one RBD image of SIZE_MB
# written full by `rbd bench --io-type write` (all data, no holes), a
# libvirt domain (shut off) whose vda is that image, and:
#   vmdiskfs             MNT/DOMAIN/vda.img (libvirt mode, librbd)
#   qemu-storage-daemon  its FUSE export of a driver=rbd node
#   rbd export           `rbd export IMAGE - > /dev/null` (sequential only)
#   rbd bench            `rbd bench --io-type read` with 1 thread, 4 KiB
#                        random (IOPS) and 1 MiB sequential (MiB/s)
# read with fio (direct=0, psync) for the FUSE files:
#   sequential, bs=1M, one pass; 4 KiB random, 1 job, RAND_SECONDS.
# Before every run the page cache is dropped (the image lives in the OSD's
# RAM: nothing of it is in this host's page cache otherwise).  Each figure
# is the median of RUNS runs, the peers interleaved; ratios are
# vmdiskfs/peer.
#
# Run as root from the build tree (libvirtd is started when needed):
#   bench/bench-net.sh                 (RUNS=3, SIZE_MB=1024: ~5 minutes)
# Environment: RUNS SIZE_MB RAND_SECONDS VMDISKFS.
# Not part of `make check`: a benchmark, not a test.
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
{

top=$(cd "$(dirname "$0")/.." && pwd)
VMDISKFS=${VMDISKFS:-$top/vmdiskfs}
export VMDISKFS
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-1024}
RAND_SECONDS=${RAND_SECONDS:-10}

. "$top/tests/integration/functions.sh"
. "$top/tests/integration/libvirt-functions.sh"
. "$top/tests/integration/ceph-functions.sh"
for t in fio qemu-storage-daemon python3; do
  command -v "$t" >/dev/null || fail "bench-net: $t is needed"
done
ceph_require
lv_start
ceph_start "$TEST_DIR/ceph" >/dev/null

P=$LV_PREFIX
IMG=rbd/$P-bench
rbd create --size "${SIZE_MB}M" "$IMG" || fail "rbd create"
rbd bench --io-type write --io-size 4M --io-threads 4 \
  --io-total "${SIZE_MB}M" --io-pattern seq "$IMG" >/dev/null 2>&1 ||
  fail "rbd bench write"
D=$P-bench
lv_define "$D" "net:vda:<source protocol='rbd' name='$IMG'><host name='${CEPH_MON%:*}' port='${CEPH_MON##*:}'/></source>"
MNT=$LV_MNT_DIR/mnt
lv_mount "$MNT"
V=$MNT/$D/vda.img
[ -e "$V" ] || fail "bench-net: $V missing"

QF=$TEST_DIR/qsd-export
: >"$QF"
qemu-storage-daemon \
  --blockdev driver=rbd,node-name=r,pool=rbd,image="$P-bench",conf="$CEPH_CONF" \
  --export type=fuse,id=e,node-name=r,mountpoint="$QF" \
  >"$TEST_DIR/qsd.log" 2>&1 &
qsd=$!
stop_qsd () { kill -TERM "$qsd" 2>/dev/null; wait "$qsd" 2>/dev/null; }
on_exit stop_qsd
wait_for 30 sh -c "grep -q ' $QF fuse' /proc/self/mounts" ||
  fail "qemu-storage-daemon did not export: $(cat "$TEST_DIR/qsd.log")"

cold () { sync; echo 3 > /proc/sys/vm/drop_caches; }

fio_run () {    # FILE seq|rand: MiB/s or IOPS
  local args
  args=(--name=bench --filename="$1" --readonly --direct=0 --ioengine=psync
        --invalidate=1 --group_reporting --output-format=json)
  case $2 in
    seq) args+=(--rw=read --bs=1M --numjobs=1) ;;
    rand) args+=(--rw=randread --bs=4k --numjobs=1 --time_based
                 --runtime="$RAND_SECONDS") ;;
  esac
  timeout 300 fio "${args[@]}" 2>/dev/null | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["jobs"][0]["read"]
    assert r["io_bytes"] > 0
    print("%.1f" % (r["bw_bytes"] / 1048576.0) if sys.argv[1] == "seq"
          else "%.0f" % r["iops"])
except Exception:
    print("nan")' "$2"
}

rbd_export () {    # MiB/s of rbd export to /dev/null
  local t0 t1
  t0=$(date +%s%N)
  rbd export "$IMG" - 2>/dev/null >/dev/null || { echo nan; return; }
  t1=$(date +%s%N)
  python3 -c "print('%.1f' % ($SIZE_MB / (($t1 - $t0) / 1e9)))"
}

rbd_bench () {    # seq|rand: MiB/s or IOPS of rbd bench --io-type read
  local out
  if [ "$1" = seq ]; then
    out=$(rbd bench --io-type read --io-size 1M --io-threads 1 \
          --io-total "${SIZE_MB}M" --io-pattern seq "$IMG" 2>/dev/null)
  else
    out=$(timeout $((RAND_SECONDS * 6)) rbd bench --io-type read --io-size 4K \
          --io-threads 1 --io-total 64M --io-pattern rand "$IMG" 2>/dev/null)
  fi
  python3 -c '
import re, sys
# "elapsed: S  ops: N  ops/sec: X  bytes/sec: Y [KMG]iB/s" at the end.
m = re.search(r"ops/sec: *([0-9.]+)", sys.stdin.read())
if not m:
    print("nan")
elif sys.argv[1] == "rand":
    print("%.0f" % float(m.group(1)))
else:
    print("%.1f" % float(m.group(1)))   # 1 MiB requests: ops/s = MiB/s
' "$1" <<<"$out"
}

declare -A res
for ((r = 1; r <= RUNS; r++)); do
  cold; res[vm_seq]+=" $(fio_run "$V" seq)"
  cold; res[qsd_seq]+=" $(fio_run "$QF" seq)"
  cold; res[exp_seq]+=" $(rbd_export)"
  res[bench_seq]+=" $(rbd_bench seq)"
  cold; res[vm_rand]+=" $(fio_run "$V" rand)"
  cold; res[qsd_rand]+=" $(fio_run "$QF" rand)"
  res[bench_rand]+=" $(rbd_bench rand)"
  echo "run $r: ${res[vm_seq]##* } ${res[qsd_seq]##* } ${res[exp_seq]##* }" \
       "${res[bench_seq]##* } | ${res[vm_rand]##* } ${res[qsd_rand]##* }" \
       "${res[bench_rand]##* }" >&2
done
median () { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "nan") }'; }
ratio () { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2f' % (a / b) if b > 0 and a == a else 'nan')" "$1" "$2"; }

vs=$(median "${res[vm_seq]}"); qs=$(median "${res[qsd_seq]}")
es=$(median "${res[exp_seq]}"); bs=$(median "${res[bench_seq]}")
vr=$(median "${res[vm_rand]}"); qr=$(median "${res[qsd_rand]}")
br=$(median "${res[bench_rand]}")
echo
echo "RBD image of $SIZE_MB MiB (all data), memstore OSD on this host;"
echo "median of $RUNS runs; $(nproc) CPUs, $(uname -r), $(ceph --version | cut -d' ' -f1-3)"
echo
echo "| | vmdiskfs | qemu-storage-daemon | rbd export | rbd bench | vmdiskfs/qsd | vmdiskfs/rbd export | vmdiskfs/rbd bench |"
echo "|---|---|---|---|---|---|---|---|"
echo "| sequential, MiB/s | $vs | $qs | $es | $bs | $(ratio "$vs" "$qs") | $(ratio "$vs" "$es") | $(ratio "$vs" "$bs") |"
echo "| 4 KiB random, IOPS (1 job) | $vr | $qr | - | $br | $(ratio "$vr" "$qr") | - | $(ratio "$vr" "$br") |"
echo
echo "raw runs: ${res[*]@K}" | tr -s ' '
exit 0
}
