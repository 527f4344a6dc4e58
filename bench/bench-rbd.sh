#!/bin/bash
# RBD read benchmark: the rbd driver (formats/rbd.c) against librbd's own
# tools on the same image, side by side in one run.
#
# A private cluster (tests/integration/ceph-functions.sh: one mon, one
# memstore OSD, all on this machine) holds one image of SIZE_MB (default
# 1024) written full with `rbd bench --io-type write` (4 MiB sequential).
# Read through
#   vd-cat      `vd-cat rbd:rbd/bench > /dev/null`: 1 MiB reads, one
#               at a time (one thread);
#   reader      a small C program on the formats library (compiled here):
#               vd_net_open of the same URI, then vd_image_pread from T
#               threads: sequential (each thread takes the next 1 MiB) or
#               4 KiB random for RAND_SECONDS: what vmdiskfs's FUSE threads
#               do with the image, without FUSE;
# against
#   export      `rbd export rbd/bench - > /dev/null` (sequential);
#   rbd bench   `rbd bench --io-type read` seq 1 MiB and rand 4 KiB, with
#               1 and 16 threads (--io-threads: requests in flight).
# Each figure is the median of RUNS runs, the readers interleaved within a
# run; ratios driver/peer at the end.  Everything is on one machine and the
# OSD keeps the data in RAM: the figures measure the client and the
# messenger's CPU cost more than any storage (compare ratios, not
# absolute numbers).  The FUSE side (vmdiskfs) is not measured here.
#
# Run from the build tree, holding the machine's bench lock:
#   flock /work/.benchlock bench/bench-rbd.sh
# Environment: RUNS (3) SIZE_MB (1024) RAND_SECONDS (5) THREADS (8: the
# reader's threads for the sequential and the second random figure).
# Not part of `make check`: a benchmark, not a test.
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
{

top=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-1024}
RAND_SECONDS=${RAND_SECONDS:-5}
THREADS=${THREADS:-8}
export VMDISKFS=${VMDISKFS:-$top/vmdiskfs} VDCAT=${VDCAT:-$top/formats/vd-cat}

. "$top/tests/integration/functions.sh"
. "$top/tests/integration/ceph-functions.sh"
ceph_require
[ -x "$VDCAT" ] || fail "$VDCAT is not built"
[ -f "$top/formats/libvdformat.a" ] || fail "the formats library is not built"
require gcc python3 timeout

# ---- the reader ----------------------------------------------------------
cat >"$TEST_DIR/reader.c" <<'EOF'
/* reader URI seq|rand BS THREADS SECONDS: sequential prints MB/s of one
 * pass over the image, random prints reads per second. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "vdformat.h"
#include "netdisk.h"

static struct vd_image *img;
static size_t bs;
static int rnd;
static double secs;
static atomic_ullong next, done;
static atomic_int failed;

static double
now (void)
{
  struct timespec t;
  clock_gettime (CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void *
run (void *arg)
{
  char *buf = malloc (bs);
  unsigned seed = (unsigned) (uintptr_t) arg * 7919 + 1;
  uint64_t nblk = img->size / bs;
  double end = now () + secs;
  unsigned long k = 0;

  for (;;) {
    uint64_t off;
    if (rnd) {
      if ((k++ & 15) == 0 && now () >= end)
        break;
      off = ((uint64_t) rand_r (&seed) * 65536 + rand_r (&seed)) % nblk * bs;
    }
    else {
      off = atomic_fetch_add (&next, bs);
      if (off >= img->size)
        break;
    }
    if (vd_image_pread (img, buf, off + bs > img->size ? img->size - off : bs,
                        off) < 0) {
      failed = 1;
      break;
    }
    atomic_fetch_add (&done, 1);
  }
  free (buf);
  return NULL;
}

int
main (int argc, char **argv)
{
  struct vd_netsrc src;
  pthread_t t[256];
  int n, i;
  double t0, dt;

  if (argc != 6)
    return 2;
  rnd = strcmp (argv[2], "rand") == 0;
  bs = strtoul (argv[3], NULL, 0);
  n = atoi (argv[4]);
  secs = atof (argv[5]);
  if (n < 1 || n > 256 || vd_net_parse (argv[1], &src) < 0)
    return 2;
  img = vd_net_open (&src, 0);
  vd_netsrc_clear (&src);
  if (!img)
    return 1;
  t0 = now ();
  for (i = 0; i < n; i++)
    pthread_create (&t[i], NULL, run, (void *) (uintptr_t) i);
  for (i = 0; i < n; i++)
    pthread_join (t[i], NULL);
  dt = now () - t0;
  vd_image_close (img);
  if (failed)
    return 1;
  if (rnd)
    printf ("%.0f\n", done / dt);
  else
    printf ("%.1f\n", img->size / dt / 1048576);
  return 0;
}
EOF
mk () { sed -n "s/^$1 = //p" "$top/Makefile"; }
# shellcheck disable=SC2046
gcc -O2 -I"$top" -I"$top/formats" -I"$top/common" -o "$TEST_DIR/reader" \
  "$TEST_DIR/reader.c" "$top/formats/libvdformat.a" "$top/common/libvdcommon.a" \
  $(mk ZLIB_LIBS) $(mk ZSTD_LIBS) $(mk LIBQCOW_LIBS) $(mk LIBNBD_LIBS) \
  $(mk LIBISCSI_LIBS) $(mk LIBRBD_LIBS) -lpthread || fail "cannot build the reader"

# ---- the cluster and the image -------------------------------------------
echo "bench-rbd: starting a private cluster" >&2
ceph_start "$TEST_DIR/ceph" >/dev/null
timeout 60 rbd create --size "${SIZE_MB}M" rbd/bench || fail "rbd create"
timeout 600 rbd bench --io-type write --io-size 4M --io-threads 4 \
  --io-total "${SIZE_MB}M" --io-pattern seq rbd/bench >/dev/null ||
  fail "rbd bench write"
URI="rbd:rbd/bench:conf=$CEPH_CONF"
size=$((SIZE_MB << 20))

# ---- measurements --------------------------------------------------------
# Each prints one number: MB/s (sequential) or IOPS (random).
secs () { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.3f}')" "$@"; }
mbps () { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1048576 / float(sys.argv[2]):.1f}')" "$@"; }
m_vdcat ()
{
  local t0 t1
  t0=$EPOCHREALTIME
  "$VDCAT" "$URI" >/dev/null || fail "vd-cat"
  t1=$EPOCHREALTIME
  mbps $size "$(secs "$t1" "$t0")"
}
m_export ()
{
  local t0 t1
  t0=$EPOCHREALTIME
  rbd export --no-progress rbd/bench - >/dev/null 2>&1 || fail "rbd export"
  t1=$EPOCHREALTIME
  mbps $size "$(secs "$t1" "$t0")"
}
# rbd bench prints "elapsed: S ops: N ops/sec: X bytes/sec: Y" at the end.
m_rbdbench ()   # PATTERN IOSIZE THREADS TOTAL
{
  local out
  out=$(rbd bench --io-type read --io-pattern "$1" --io-size "$2" \
          --io-threads "$3" --io-total "$4" rbd/bench 2>&1 | tail -1)
  python3 -c '
import re, sys
m = re.search(r"ops/sec: ([0-9.]+)\s+bytes/sec: ([0-9.]+) ?([KMG]i?B)?", sys.argv[1])
if not m:
    sys.exit("rbd bench: " + sys.argv[1])
if sys.argv[2] == "seq":          # 1 MiB requests: ops/sec is MiB/s
    print(f"{float(m.group(1)):.1f}")
else:
    print(f"{float(m.group(1)):.0f}")' "$out" "$1"
}

declare -A R=()
names=(vdcat reader_seq1 "reader_seq$THREADS" export bench_seq1 bench_seq16
       reader_rand1 "reader_rand$THREADS" bench_rand1 bench_rand16)
rand_total=$((64 << 20))
for ((run = 1; run <= RUNS; run++)); do
  echo "bench-rbd: run $run/$RUNS" >&2
  R[vdcat]+=" $(m_vdcat)"
  R[export]+=" $(m_export)"
  R[reader_seq1]+=" $("$TEST_DIR/reader" "$URI" seq 1048576 1 0)"
  R[bench_seq1]+=" $(m_rbdbench seq 1M 1 "${SIZE_MB}M")"
  R[reader_seq$THREADS]+=" $("$TEST_DIR/reader" "$URI" seq 1048576 "$THREADS" 0)"
  R[bench_seq16]+=" $(m_rbdbench seq 1M 16 "${SIZE_MB}M")"
  R[reader_rand1]+=" $("$TEST_DIR/reader" "$URI" rand 4096 1 "$RAND_SECONDS")"
  R[bench_rand1]+=" $(m_rbdbench rand 4K 1 $((rand_total / 4)))"
  R[reader_rand$THREADS]+=" $("$TEST_DIR/reader" "$URI" rand 4096 "$THREADS" "$RAND_SECONDS")"
  R[bench_rand16]+=" $(m_rbdbench rand 4K 16 $rand_total)"
done

med () { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A M=()
echo
echo "RBD image of $SIZE_MB MiB, memstore OSD on this machine; medians of $RUNS runs"
for n in "${names[@]}"; do
  M[$n]=$(med <<<"${R[$n]}")
  unit="MB/s"
  case $n in *rand*) unit="IOPS";; esac
  printf "  %-16s %10s %-5s  (%s )\n" "$n" "${M[$n]}" "$unit" "${R[$n]}"
done
ratio () { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$@"; }
echo "ratios:"
echo "  sequential  vd-cat (1 MiB, 1 at a time) / rbd export      $(ratio "${M[vdcat]}" "${M[export]}")"
echo "  sequential  reader x$THREADS / rbd export                      $(ratio "${M[reader_seq$THREADS]}" "${M[export]}")"
echo "  sequential  reader x1 / rbd bench seq 1M x1             $(ratio "${M[reader_seq1]}" "${M[bench_seq1]}")"
echo "  sequential  reader x$THREADS / rbd bench seq 1M x16            $(ratio "${M[reader_seq$THREADS]}" "${M[bench_seq16]}")"
echo "  4k random   reader x1 / rbd bench rand 4K x1            $(ratio "${M[reader_rand1]}" "${M[bench_rand1]}")"
echo "  4k random   reader x$THREADS / rbd bench rand 4K x16           $(ratio "${M[reader_rand$THREADS]}" "${M[bench_rand16]}")"
exit 0
}
