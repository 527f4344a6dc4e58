#!/bin/bash
# Fuzz the qcow2, QED and QCOW1 parsers of formats/ (and the JSON reader,
# the LVM report reader and the libvirt XML parser of snapshotter/) with
# libFuzzer for a bounded time: builds tests/fuzz/fuzz-image.c once per format
# (fuzz-TARGET.c for the others) straight from the library sources with
# clang (-fsanitize=fuzzer,address,undefined; UB halts), seeds a corpus with
# small images made by qemu-img/qemu-io (or TARGET-seeds/), runs each
# target FUZZ_SECONDS, and fails with the reproducer's path and the
# stack trace when anything crashes, leaks, hits UB or times out.
#
# Environment:
#   FUZZ_SECONDS=20        run time per target (7 targets: under 3
#                          minutes in all)
#   FUZZ_TARGETS="qcow2 qed qcow lvm-json domxml json write"
#                          (qcow: QCOW version 1, formats/libqcow.c;
#                          the image targets also open the backing and
#                          data files their inputs name, inside a private
#                          directory of fixed files: see fuzz-image.c)
#                          (lvm-json: tests/fuzz/fuzz-lvm-json.c, the LVM
#                          report parser; seeds in lvm-json-seeds/;
#                          domxml: fuzz-domxml.c, snapshotter/domxml.c,
#                          libvirt XML; json: fuzz-json.c,
#                          snapshotter/json.c, the JSON reader, with
#                          qemu's QMP replies as seeds in json-seeds/;
#                          write: fuzz-write.c, the raw, qcow2 and QED
#                          writers against a model, on images it makes
#                          itself; seeds in write-seeds/; a format whose
#                          writer is missing is skipped)
#   FUZZ_NICE=10           niceness of the fuzzers (the machine is shared)
#   FUZZ_ARGS=...          extra libFuzzer options
#   FUZZ_CFLAGS=...        extra compiler flags (e.g. -fno-sanitize=alignment
#                          to look past a known bug)
#   FUZZ_CRASHERS=1        also replay tests/fuzz/crashers/ (known, unfixed)
#   FUZZ_WRITE_NO=tail     what fuzz-write looks past (see fuzz-write.c):
#                          nothing by default (the grow bugs it was for
#                          are fixed: regress/write-qcow2-grow-*)
# Reproducers of fixed bugs live in tests/fuzz/regress/FORMAT-NAME and are
# always replayed; known unfixed ones in tests/fuzz/crashers/FORMAT-NAME.
# Reproduce one by hand:  tests/fuzz/fuzz-qcow2 FILE
#
# Exit 0 clean, 1 bug found (or build failed), 77 no clang fuzzer runtime.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it, so editing
# this file while it runs cannot derail the running copy.
{

srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${abs_top_builddir:-$srcdir}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_TARGETS=${FUZZ_TARGETS:-qcow2 qed qcow lvm-json domxml json write}
FUZZ_NICE=${FUZZ_NICE:-10}
FUZZ_ARGS=${FUZZ_ARGS:-}
export FUZZ_WRITE_NO=${FUZZ_WRITE_NO-}
CC=${FUZZ_CC:-clang}
out=$builddir/tests/fuzz

command -v "$CC" >/dev/null || { echo "SKIP: $CC not installed"; exit 77; }
if [ ! -f "$builddir/config.h" ]; then
  echo "ERROR: $builddir/config.h missing: run ./configure first"
  exit 1
fi

tmp=$(mktemp -d /tmp/vd-fuzz.XXXXXX)
# fuzz-write's images: on tmpfs when there is one (flush costs nothing).
shm=$(mktemp -d /dev/shm/vd-fuzz.XXXXXX 2>/dev/null) || shm=$tmp
cleanup () { rm -rf "$tmp" "$shm"; }
trap cleanup EXIT

# Is libFuzzer's runtime there (libclang-rt-14-dev)?
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
  'int LLVMFuzzerTestOneInput (const uint8_t *d, size_t n) { return 0; }' \
  > "$tmp/probe.c"
if ! "$CC" -fsanitize=fuzzer,address,undefined -o "$tmp/probe" \
     "$tmp/probe.c" >/dev/null 2>&1; then
  echo "SKIP: $CC cannot link -fsanitize=fuzzer,address,undefined"
  exit 77
fi

# ---- build ---------------------------------------------------------------
# Every library source except those with a main() (vd-cat.c).
sources=()
for f in "$srcdir"/formats/*.c "$srcdir"/common/*.c \
         "$srcdir"/snapshotter/lvm-json.c "$srcdir"/snapshotter/domxml.c \
         "$srcdir"/snapshotter/json.c; do
  grep -q '^main *(' "$f" || sources+=("$f")
done
cflags=(-g -O1 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
        -I "$builddir" -I "$srcdir/common" -I "$srcdir/formats"
        -I "$srcdir/snapshotter" -I "$srcdir/fs" -I "$srcdir"
        $(pkg-config --cflags libxml-2.0 2>/dev/null)
        -D_GNU_SOURCE -pthread
        $(pkg-config --cflags zlib libzstd libqcow libnbd libiscsi 2>/dev/null)
        ${FUZZ_CFLAGS:-})
libs=(-lz -lzstd $(pkg-config --libs libqcow libxml-2.0 libnbd libiscsi) -lrbd -lrados -pthread)

mkdir -p "$out"
for fmt in $FUZZ_TARGETS; do
  echo "building $out/fuzz-$fmt"
  src=$srcdir/tests/fuzz/fuzz-$fmt.c        # a target of its own, or
  [ -f "$src" ] || src=$srcdir/tests/fuzz/fuzz-image.c   # an image format
  if ! "$CC" "${cflags[@]}" -DFUZZ_FORMAT="\"$fmt\"" -o "$out/fuzz-$fmt" \
       "$src" "${sources[@]}" "${libs[@]}"; then
    echo "ERROR: building fuzz-$fmt failed"
    exit 1
  fi
done

# ---- seeds ---------------------------------------------------------------
# Small images (512-byte to 64 KiB clusters) covering the features each
# parser must handle.  A seed that this qemu cannot make is left out.
q () { "$@" >/dev/null 2>&1; }
rnd () { head -c "$2" /dev/urandom > "$1"; }

# Images naming the files fuzz-image.c's private directory holds (and some
# it must refuse), relative as there: named_seeds FMT DIR [-o OPTS].
# Created with -u (the backing file is not opened), except base.raw which
# exists here, so that one also gets data written over it.
named_seeds () {
  local fmt=$1 d=$2 b bf n
  shift 2
  head -c 65536 /dev/urandom > base.raw
  for b in base.raw:raw base.qcow2:qcow2 loop.qcow2:qcow2 link.raw:raw \
           input.img:$fmt fifo:raw out:raw ../etc/hostname:raw \
           /etc/hostname:raw; do
    bf=${b##*:} b=${b%:*}
    n=named-$(printf %s "$b" | tr -c 'a-z0-9.\n' _)
    q qemu-img create -f "$fmt" "$@" -u -b "$b" -F "$bf" "$n.$fmt" 128k &&
      cp "$n.$fmt" "$d/$n.$fmt"
  done
  q qemu-img create -f "$fmt" "$@" -b base.raw -F raw named-w.$fmt 128k &&
    q qemu-io -c 'write -P 0x77 4k 1k' -c 'write -P 0x78 100k 2k' \
              named-w.$fmt &&
    cp named-w.$fmt "$d/named-base.raw-written.$fmt"
}

seeds_qcow2 () {
  local d=$1 w=$tmp/work
  mkdir -p "$w" && cd "$w" || return
  rnd r64k 65536
  { rnd /dev/stdout 16384; yes vmdiskfs | head -c 49152; } > mixed

  q qemu-img create -f qcow2 -o compat=0.10,cluster_size=512 v2.qcow2 1M &&
    q qemu-io -c 'write -P 0x11 0 4k' -c 'write -P 0x22 300k 2k' v2.qcow2 &&
    cp v2.qcow2 "$d/v2-512.qcow2"

  q qemu-img create -f qcow2 -o cluster_size=4096 v3.qcow2 4M &&
    q qemu-io -c 'write -P 0x33 0 64k' -c 'write -z 8k 8k' \
              -c 'discard 32k 4k' -c 'write -s r64k 1M 64k' \
              -c 'write -z -u 2M 64k' v3.qcow2 &&
    cp v3.qcow2 "$d/v3-4k-zero.qcow2"

  q qemu-img create -f qcow2 v3big.qcow2 64G &&
    q qemu-io -c 'write -P 0x44 0 512' -c 'write -P 0x55 40G 4k' v3big.qcow2 &&
    cp v3big.qcow2 "$d/v3-64k-64G.qcow2"

  local c
  for c in zlib zstd; do
    q qemu-img convert -c -f raw -O qcow2 \
      -o cluster_size=4096,compression_type=$c mixed comp-$c.qcow2 &&
      cp comp-$c.qcow2 "$d/compressed-$c.qcow2"
  done
  q qemu-img convert -c -f raw -O qcow2 -o compat=0.10,cluster_size=4096 \
    mixed comp-v2.qcow2 && cp comp-v2.qcow2 "$d/compressed-v2.qcow2"

  q qemu-img create -f qcow2 -o extended_l2=on,cluster_size=16k ext.qcow2 1M &&
    q qemu-io -c 'write -P 1 1k 1k' -c 'write -z 64k 2k' \
              -c 'write -P 2 100k 3k' -c 'discard 100k 1k' ext.qcow2 &&
    cp ext.qcow2 "$d/extended-l2.qcow2"

  q qemu-img create -f qcow2 -o cluster_size=512 snap.qcow2 256k &&
    q qemu-io -c 'write -P 0xa1 0 8k' snap.qcow2 &&
    q qemu-img snapshot -c first snap.qcow2 &&
    q qemu-io -c 'write -P 0xa2 4k 8k' snap.qcow2 &&
    q qemu-img snapshot -c 'second/with slash' snap.qcow2 &&
    q qemu-img resize snap.qcow2 512k &&
    q qemu-io -c 'write -P 0xa3 400k 1k' snap.qcow2 &&
    cp snap.qcow2 "$d/snapshots.qcow2"

  q qemu-img create -f qcow2 -o compat=0.10,cluster_size=512 snapv2.qcow2 64k &&
    q qemu-io -c 'write -P 0xb1 0 2k' snapv2.qcow2 &&
    q qemu-img snapshot -c s1 snapv2.qcow2 &&
    q qemu-io -c 'write -P 0xb2 1k 2k' snapv2.qcow2 &&
    cp snapv2.qcow2 "$d/snapshots-v2.qcow2"

  # Data files named as in fuzz-image.c's directory (base.raw is there).
  named_seeds qcow2 "$d" -o cluster_size=512
  q qemu-img create -f qcow2 -o cluster_size=512,data_file=base.raw \
      df.qcow2 64k &&
    q qemu-io -c 'write -P 0xc1 0 4k' df.qcow2 &&
    cp df.qcow2 "$d/data-file.qcow2"
  q qemu-img create -f qcow2 \
      -o cluster_size=512,data_file=base.raw,data_file_raw=on dfr.qcow2 64k &&
    cp dfr.qcow2 "$d/data-file-raw.qcow2"
  q qemu-img create -f qcow2 -o cluster_size=512,data_file=out dfo.qcow2 64k &&
    cp dfo.qcow2 "$d/data-file-out.qcow2"

  q qemu-img create -f qcow2 -o cluster_size=512 base.qcow2 64k &&
    q qemu-io -c 'write -P 0xd1 0 64k' base.qcow2 &&
    q qemu-img create -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 \
      top.qcow2 128k &&
    q qemu-io -c 'write -P 0xd2 4k 1k' top.qcow2 &&
    cp top.qcow2 "$d/backing.qcow2"

  q qemu-img create -f qcow2 -o cluster_size=512,lazy_refcounts=on \
      dirty.qcow2 64k &&
    (qemu-io -c 'write -P 0xe1 0 4k' -c abort dirty.qcow2; :) >/dev/null 2>&1
  [ -s dirty.qcow2 ] && cp dirty.qcow2 "$d/dirty.qcow2"

  for c in 1 64; do
    q qemu-img create -f qcow2 -o cluster_size=512,refcount_bits=$c \
        rc$c.qcow2 64k &&
      q qemu-io -c 'write -P 0xf1 1k 2k' rc$c.qcow2 &&
      cp rc$c.qcow2 "$d/refcount-$c.qcow2"
  done

  q qemu-img create -f qcow2 -o cluster_size=4096 bm.qcow2 1M &&
    q qemu-img bitmap --add bm.qcow2 b0 &&
    q qemu-io -c 'write -P 0x99 0 4k' bm.qcow2 &&
    cp bm.qcow2 "$d/bitmap.qcow2"
  cd / || return
}

seeds_qed () {
  local d=$1 w=$tmp/work-qed
  mkdir -p "$w" && cd "$w" || return
  q qemu-img create -f qed -o cluster_size=4096 a.qed 1M &&
    q qemu-io -c 'write -P 0x11 0 4k' -c 'write -P 0x22 600k 6k' \
              -c 'write -z 64k 8k' a.qed &&
    cp a.qed "$d/plain.qed"

  q qemu-img create -f qed -o cluster_size=4096 big.qed 1G &&
    q qemu-io -c 'write -P 0x33 900M 4k' big.qed &&
    cp big.qed "$d/big.qed"

  named_seeds qed "$d" -o cluster_size=4096
  q qemu-img create -f qed -o cluster_size=4096 \
      -b base.raw -F raw braw.qed 128k &&
    q qemu-io -c 'write -P 0x44 8k 4k' braw.qed &&
    cp braw.qed "$d/backing-raw.qed"
  q qemu-img create -f qed -o cluster_size=4096 \
      -b a.qed -F qed bqed.qed 2M &&
    q qemu-io -c 'write -P 0x55 1M 4k' bqed.qed &&
    cp bqed.qed "$d/backing-qed.qed"
  q qemu-img create -f qed -o cluster_size=4096 \
      -b base.raw nofmt.qed 128k && cp nofmt.qed "$d/backing-nofmt.qed"

  q qemu-img create -f qed -o cluster_size=4096 dirty.qed 64k &&
    (qemu-io -c 'write -P 0x66 0 4k' -c abort dirty.qed; :) >/dev/null 2>&1
  [ -s dirty.qed ] && cp dirty.qed "$d/dirty.qed"
  cd / || return
}

seeds_qcow () {   # QCOW version 1
  local d=$1 w=$tmp/work-qcow
  mkdir -p "$w" && cd "$w" || return
  q qemu-img create -f qcow empty.qcow 1M && cp empty.qcow "$d/empty.qcow"
  q qemu-img create -f qcow a.qcow 1M &&
    q qemu-io -c 'write -P 0x11 0 4k' -c 'write -P 0x22 600k 6k' \
              -c 'write -P 0x23 1020k 4k' a.qcow &&
    cp a.qcow "$d/plain.qcow"
  q qemu-img create -f qcow big.qcow 64G &&
    q qemu-io -c 'write -P 0x33 40G 4k' big.qcow &&
    cp big.qcow "$d/big.qcow"
  { head -c 16384 /dev/urandom; yes vmdiskfs | head -c 49152; } > mixed
  # qemu-img 7.2 exits 1 without a word after writing a good compressed
  # QCOW1 image: the comparison decides.
  q qemu-img convert -c -f raw -O qcow mixed comp.qcow
  q qemu-img compare -f raw -F qcow mixed comp.qcow &&
    cp comp.qcow "$d/compressed.qcow"
  named_seeds qcow "$d"
  cd / || return
}

# ---- replay known reproducers --------------------------------------------
status=0
replay () {   # replay FMT DIR...
  local fmt=$1 dir f
  shift
  for dir; do
    for f in "$dir/$fmt"-*; do
      [ -f "$f" ] || continue
      # Reproducers replay as found: nothing looked past.
      if ! TMPDIR=$tmp FUZZ_WRITE_TMPDIR=$shm FUZZ_WRITE_NO= \
           ASAN_OPTIONS=detect_leaks=1 \
           UBSAN_OPTIONS=print_stacktrace=1 \
           "$out/fuzz-$fmt" "$f" > "$tmp/replay.log" 2>&1; then
        echo "FAIL: reproducer $f still fails:"
        grep -v '^vmdiskfs: ' "$tmp/replay.log" | tail -40
        status=1
      else
        echo "ok: reproducer $f"
      fi
    done
  done
}

# ---- fuzz ----------------------------------------------------------------
for fmt in $FUZZ_TARGETS; do
  dirs=("$srcdir/tests/fuzz/regress")
  [ "${FUZZ_CRASHERS:-0}" = 1 ] && dirs+=("$srcdir/tests/fuzz/crashers")
  replay "$fmt" "${dirs[@]}"

  seeds=$tmp/seeds-$fmt
  corpus=$out/fuzz-corpus-$fmt        # kept between runs (git-ignored)
  artifacts=$out/fuzz-artifacts
  mkdir -p "$seeds" "$corpus" "$artifacts"
  if [ -d "$srcdir/tests/fuzz/$fmt-seeds" ]; then
    cp "$srcdir/tests/fuzz/$fmt-seeds"/* "$seeds/"
  elif ! declare -F "seeds_$fmt" >/dev/null; then
    :
  elif command -v qemu-img >/dev/null && command -v qemu-io >/dev/null; then
    "seeds_$fmt" "$seeds"
  else
    echo "warning: qemu-img/qemu-io missing: fuzzing without seeds"
  fi
  echo "fuzz-$fmt: $(ls "$seeds" | wc -l) seeds: $(ls "$seeds" | tr '\n' ' ')"

  dict=()
  [ -f "$srcdir/tests/fuzz/$fmt.dict" ] && dict=(-dict="$srcdir/tests/fuzz/$fmt.dict")
  log=$out/fuzz-$fmt.log
  # fuzz-write reads a few bytes per operation and stops after 64.
  max_len=524288
  [ "$fmt" = write ] && max_len=8192
  before=$(ls "$artifacts" | sort)
  # -close_fd_mask=2: the drivers' error messages (every corrupt input
  # logs one) go nowhere; libFuzzer and the sanitizers keep their output.
  # TMPDIR: fuzz-image.c's directory of named files, removed with $tmp
  # even when the target dies.
  TMPDIR=$tmp FUZZ_WRITE_TMPDIR=$shm \
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    nice -n "$FUZZ_NICE" "$out/fuzz-$fmt" \
      -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=2048 \
      -max_len="$max_len" -close_fd_mask=2 -print_final_stats=1 \
      -error_exitcode=99 -timeout_exitcode=98 \
      -artifact_prefix="$artifacts/$fmt-" "${dict[@]}" $FUZZ_ARGS \
      "$corpus" "$seeds" > "$log" 2>&1
  rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+.*DONE|fuzz-(image|write): )' \
    "$log" | sed "s/^/fuzz-$fmt: /"
  new=$(comm -13 <(echo "$before") <(ls "$artifacts" | sort))
  if [ "$rc" != 0 ] || [ -n "$new" ]; then
    echo "FAIL: fuzz-$fmt exited $rc; log $log"
    sed -n '/ERROR: \|runtime error\|==[0-9]*==\|fuzz-image: driver bug\|fuzz-write: /,$p' \
      "$log" | grep -v '^vmdiskfs: ' | head -80
    for a in $new; do
      echo "REPRODUCER: $artifacts/$a   (replay: $out/fuzz-$fmt $artifacts/$a)"
    done
    status=1
  fi
done
exit $status
}
