#!/bin/bash
# vmdiskfs - the qcow2 driver against qemu-img as the oracle.
#
# Builds images with qemu-img/qemu-io covering every feature the read side
# supports (v2/v3, cluster sizes 512 B-2 MiB, refcount widths, zero and
# compressed clusters in zlib and zstd, extended L2, backing chains with a
# raw base, external data files, preallocation, crash-dirty images,
# internal snapshots before and after a resize, VM state) and compares
# vd-cat's bytes with `qemu-img convert -O raw` byte for byte, and its
# extent map with `qemu-img map` (data versus not data).  Snapshots are
# compared with a copy of the image reverted with `qemu-img snapshot -a`.
# Then corrupts images in many ways and checks vd-cat fails cleanly
# (exit 1, a "qcow2:" message, no crash; under valgrind when present).
#
# Usage: qcow2-oracle.sh [-k] (keep the temporary directory).
# Exit 0 pass, 1 fail, 77 skip (no qemu-img/qemu-io).
#
# SPDX-License-Identifier: GPL-3.0-or-later

set -u
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
VDCAT=${VDCAT:-$here/../../formats/vd-cat}
case $VDCAT in /*) ;; *) VDCAT=$(pwd)/$VDCAT ;; esac
keep=false
[ "${1:-}" = -k ] && keep=true

for t in qemu-img qemu-io; do
  command -v $t >/dev/null 2>&1 || { echo "SKIP: $t not installed"; exit 77; }
done
[ -x "$VDCAT" ] || { echo "SKIP: $VDCAT not built"; exit 77; }
VALGRIND=
if command -v valgrind >/dev/null 2>&1 && [ "${QCOW2_TEST_VALGRIND:-1}" = 1 ]; then
  VALGRIND="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite"
fi

tmp=$(mktemp -d /tmp/qcow2-oracle.XXXXXX)
cleanup () { $keep && echo "kept $tmp" || rm -rf "$tmp"; }
trap cleanup EXIT
cd "$tmp" || exit 1

pass=0
fail=0
ok () { pass=$((pass + 1)); echo "ok   $*"; }
bad () { fail=$((fail + 1)); echo "FAIL $*"; }

qio () { qemu-io "$@" >/dev/null || { echo "qemu-io $* failed"; exit 1; }; }
qimg () { qemu-img "$@" >/dev/null || { echo "qemu-img $* failed"; exit 1; }; }

# Extents as "start length D|Z", adjacent ones of one kind merged.
norm () {
  awk '{ if (NR > 1 && $3 == k && $1 == s + l) l += $2;
         else { if (NR > 1) print s, l, k; s = $1; l = $2; k = $3 } }
       END { if (NR > 0) print s, l, k }'
}
ours_map () { "$VDCAT" "$@" -m | awk '{ print $1, $2, ($3 == "data" ? "D" : "Z") }' | norm; }
qemu_map () {
  qemu-img map --output=json "$@" |
    sed -n 's/.*"start": *\([0-9]*\), *"length": *\([0-9]*\),.*"data": *\(true\|false\).*/\1 \2 \3/p' |
    awk '{ print $1, $2, ($3 == "true" ? "D" : "Z") }' | norm
}

# check IMG [MAPCHECK]: bytes (three read sizes) and the extent map.
check () {
  local img=$1 mapcheck=${2:-map} dir base
  dir=$(dirname "$img"); base=$(basename "$img")
  # qemu-img resolves relative data-file names against the current
  # directory: run it from the image's directory.
  (cd "$dir" && qemu-img convert -O raw "$base" "$tmp/expect.raw") ||
    { bad "$img: qemu-img convert failed"; return; }
  if ! "$VDCAT" "$img" > got.raw; then bad "$img: vd-cat failed"; return; fi
  if ! cmp -s got.raw expect.raw; then bad "$img: bytes differ"; return; fi
  "$VDCAT" -b 4096 "$img" > got.raw && cmp -s got.raw expect.raw ||
    { bad "$img: bytes differ with 4 KiB reads"; return; }
  "$VDCAT" -b 12345 "$img" > got.raw && cmp -s got.raw expect.raw ||
    { bad "$img: bytes differ with 12345-byte reads"; return; }
  if [ "$mapcheck" = map ]; then
    local q o
    q=$(cd "$dir" && qemu_map "$base")
    o=$(ours_map "$img")
    if [ "$q" != "$o" ]; then
      bad "$img: extent map differs"
      diff <(echo "$q") <(echo "$o") | head -10
      return
    fi
  fi
  ok "$img"
}

# check_snap IMG TAG: the snapshot as qemu reverts to it.
check_snap () {
  local img=$1 tag=$2
  cp "$img" snapcopy.qcow2
  qimg snapshot -a "$tag" snapcopy.qcow2
  qimg convert -O raw snapcopy.qcow2 expect.raw
  if ! "$VDCAT" -s "$tag" "$img" > got.raw; then
    bad "$img@$tag: vd-cat failed"; return
  fi
  if ! cmp -s got.raw expect.raw; then
    bad "$img@$tag: bytes differ ($(stat -c %s got.raw) vs $(stat -c %s expect.raw))"
    return
  fi
  ok "$img@$tag"
  rm -f snapcopy.qcow2
}

# must_fail IMG WHAT [ERRNO-TEXT]: vd-cat fails cleanly, also under valgrind.
must_fail () {   # IMG WHAT [nomap: block_status need not fail]
  local img=$1 what=$2 mapcheck=${3:-map} rc
  $VALGRIND "$VDCAT" "$img" > /dev/null 2> err.txt
  rc=$?
  if [ $rc -eq 0 ] || [ $rc -ge 99 ]; then
    bad "corrupt $what: rc $rc"; cat err.txt | head -5; return
  fi
  if ! grep -q "${MSG_RE:-qcow2: }" err.txt; then
    bad "corrupt $what: no error message"; head -5 err.txt; return
  fi
  # The extent map: under valgrind unless the image is refused at open
  # (vd-cat -i, which only opens it, fails with the read's message): that
  # path, the same for the map, was memchecked by the run above, and each
  # valgrind run costs a second or more.
  "$VDCAT" -m "$img" > /dev/null 2>&1
  rc=$?
  "$VDCAT" -i "$img" > /dev/null 2> err-i.txt
  if [ -n "$VALGRIND" ] && ! cmp -s err.txt err-i.txt; then
    $VALGRIND "$VDCAT" -m "$img" > /dev/null 2>&1
    rc=$?
  fi
  if [ $rc -ge 99 ] || { [ $rc -eq 0 ] && [ $mapcheck = map ]; }; then
    bad "corrupt $what (map): rc $rc"; return
  fi
  ok "corrupt $what: $(grep -m1 "${MSG_RE:-qcow2: }" err.txt | sed 's/.*qcow2: [^:]*: //')"
}

# Poke big-endian integers into a file.
poke () {   # FILE OFFSET BYTES(hex string, e.g. 0000000000001234)
  local hex=$3 esc=
  while [ -n "$hex" ]; do esc="$esc\\x${hex:0:2}"; hex=${hex:2}; done
  printf "$esc" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
poke32 () { poke "$1" "$2" "$(printf %08x "$3")"; }
poke64 () { poke "$1" "$2" "$(printf %016x "$3")"; }
peek64 () { od -An -tu8 --endian=big -j "$2" -N 8 "$1" | tr -d ' '; }
peek32 () { od -An -tu4 --endian=big -j "$2" -N 4 "$1" | tr -d ' '; }

# Deterministic test data: text (compressible) and random (not).
seq 1 400000 > text.dat
head -c 8M /dev/urandom > random.dat

# Write a mixed pattern through qemu-io; $1 image, $2 cluster size.
fill () {
  local img=$1 cs=$2 opts=${3:-}
  qio $opts -c "write -P 0xab 0 64k" \
    -c "write -s $tmp/text.dat 300k 1M" \
    -c "write -s $tmp/random.dat 2M 1M" \
    -c "write -P 0x11 $((cs / 2 + 7 * 512)) 1536" \
    -c "write -z 1536k 128k" \
    -c "write -P 0x22 5M 3M" \
    -c "discard 6M 1M" \
    -c "write -z 7M 64k" \
    "$img"
}

echo "== versions, cluster sizes, refcount widths"
for v in 0.10 1.1; do
  for cs in 512 4096 65536 2097152; do
    img=v${v}-c${cs}.qcow2
    qimg create -f qcow2 -o compat=$v,cluster_size=$cs $img 12M
    fill $img $cs
    check $img
  done
done
for rb in 1 2 4 8 16 32 64; do
  img=rb$rb.qcow2
  qimg create -f qcow2 -o refcount_bits=$rb $img 12M
  fill $img 65536
  check $img
done
# A size that is not a multiple of the cluster size.
qimg create -f qcow2 odd.qcow2 $((10 * 1048576 + 3 * 512))
qio -c "write -P 0x5a $((10 * 1048576 - 4096)) $((4096 + 3 * 512))" odd.qcow2
check odd.qcow2

# qemu-img amend: v3 -> v2 (zero clusters rewritten), refcount width.
qimg create -f qcow2 amend.qcow2 12M
fill amend.qcow2 65536
qimg amend -o compat=0.10 amend.qcow2
check amend.qcow2
qimg amend -o compat=1.1,refcount_bits=2 amend.qcow2
check amend.qcow2
# A large sparse image (walking its map must be quick).
qimg create -f qcow2 big.qcow2 2T
qio -c "write -P 0x3c 1T 64k" -c "write -z 1536G 64k" big.qcow2
o=$(ours_map big.qcow2)
q=$(qemu_map big.qcow2)
[ "$o" = "$q" ] && ok "2 TiB sparse map" || bad "2 TiB sparse map"

echo "== compressed clusters"
qimg create -f raw src.raw 16M
qio -f raw -c "write -s text.dat 0 2M" -c "write -s random.dat 3M 1M" \
  -c "write -P 0x33 5M 512k" -c "write -s text.dat $((9 * 1048576 + 1000)) 1M" src.raw
for ct in zlib zstd; do
  for cs in 512 4096 65536 2097152; do
    img=comp-$ct-$cs.qcow2
    qimg convert -c -O qcow2 -o compression_type=$ct,cluster_size=$cs src.raw $img
    check $img
  done
done
qimg create -f qcow2 qiocomp.qcow2 8M
qio -c "write -c -P 0x44 0 64k" -c "write -c -s text.dat 128k 64k" \
  -c "write -c -s random.dat 1M 64k" -c "write -P 0x55 4k 4k" qiocomp.qcow2
check qiocomp.qcow2
qimg create -f qcow2 -o compression_type=zstd qiocomp-zstd.qcow2 8M
qio -c "write -c -s text.dat 0 1M" -c "write -c -P 0 1M 64k" -c "write -P 1 2k 1k" qiocomp-zstd.qcow2
check qiocomp-zstd.qcow2

echo "== extended L2 entries"
for cs in 65536 2097152; do
  qimg create -f qcow2 -o cluster_size=$cs base-ext$cs.qcow2 12M
  qio -c "write -P 0x99 0 12M" base-ext$cs.qcow2
  qimg create -f qcow2 -o extended_l2=on,cluster_size=$cs ext$cs.qcow2 12M
  fill ext$cs.qcow2 $cs
  qio -c "write -P 0x66 $((cs / 32 * 3)) $((cs / 32))" -c "write -z $((cs / 32 * 5)) $((cs / 32 * 2))" ext$cs.qcow2
  check ext$cs.qcow2
  qimg create -f qcow2 -o extended_l2=on,cluster_size=$cs -b base-ext$cs.qcow2 -F qcow2 extb$cs.qcow2
  fill extb$cs.qcow2 $cs
  qio -c "write -P 0x67 $((cs + cs / 32 * 7)) $((cs / 32))" -c "write -z $((cs * 2 + cs / 32)) $((cs / 32))" extb$cs.qcow2
  check extb$cs.qcow2
done
qimg convert -c -O qcow2 -o extended_l2=on src.raw extcomp.qcow2
qio -c "write -P 0x12 8k 2k" extcomp.qcow2
check extcomp.qcow2

echo "== backing chains"
mkdir -p chain/sub chain/sub/top
qimg create -f raw chain/base.raw 8M
qio -f raw -c "write -s random.dat 0 8M" chain/base.raw
(cd chain/sub &&
  qimg create -f qcow2 -b ../base.raw -F raw mid.qcow2 12M &&
  qio -c "write -P 0x71 1M 1M" -c "write -z 3M 64k" -c "discard 5M 64k" -c "write -P 0x72 9M 64k" mid.qcow2 &&
  qimg create -f qcow2 -b ../mid.qcow2 -F qcow2 top/top.qcow2 16M &&
  qio -c "write -P 0x73 1536k 1M" -c "write -z 6M 64k" -c "write -P 0x74 14M 64k" top/top.qcow2 &&
  qimg create -f qcow2 -o compat=0.10 -b top/top.qcow2 -F qcow2 v2top.qcow2 16M &&
  qio -c "write -P 0x75 0 4k" v2top.qcow2)
check chain/sub/mid.qcow2
check chain/sub/top/top.qcow2
check chain/sub/v2top.qcow2
# A backing file without a format extension (probed).
(cd chain/sub && qimg create -f qcow2 -b top/top.qcow2 -F qcow2 nofmt.qcow2 16M)
ext=$(peek32 chain/sub/nofmt.qcow2 100)
if [ "$(peek32 chain/sub/nofmt.qcow2 $ext)" = $((0xe2792aca)) ]; then
  poke32 chain/sub/nofmt.qcow2 $ext $((0x12345678))   # now an unknown extension
else
  bad "nofmt.qcow2: backing format extension not found"
fi
check chain/sub/nofmt.qcow2
# A backing file larger than the image, and smaller.
qimg create -f qcow2 -b chain/base.raw -F raw -o size=4M small-over-big.qcow2
check small-over-big.qcow2

# Growing the image over a smaller backing file, then shrinking it.
qimg create -f qcow2 -b chain/base.raw -F raw grow.qcow2 8M
qio -c "write -P 0x91 7M 512k" grow.qcow2
qimg resize grow.qcow2 20M
qio -c "write -P 0x92 19M 4k" grow.qcow2
check grow.qcow2
qimg snapshot -c big grow.qcow2
qimg resize --shrink grow.qcow2 6M
check grow.qcow2
check_snap grow.qcow2 big

echo "== external data files"
mkdir -p df
(cd df &&
  qimg create -f qcow2 -o data_file=d1.data img1.qcow2 12M &&
  qimg create -f qcow2 -o data_file=d2.data,data_file_raw=on img2.qcow2 12M)
for i in 1 2; do
  (cd df && fill img$i.qcow2 65536)
  check df/img$i.qcow2
done
qimg create -f qcow2 -o data_file=df/d3.data,extended_l2=on df3.qcow2 12M
fill df3.qcow2 65536
check df3.qcow2
# A data file and a backing file together (not raw: that conflicts).
qimg create -f qcow2 -o data_file=df/d4.data -b chain/base.raw -F raw df4.qcow2 12M
qio -c "write -P 0x93 1M 1M" -c "write -z 3M 64k" -c "discard 5M 64k" df4.qcow2
check df4.qcow2

echo "== encryption is refused"
if qemu-img create -q -f qcow2 --object secret,id=s0,data=secret \
     -o encrypt.format=luks,encrypt.key-secret=s0 luks.qcow2 4M 2>/dev/null; then
  must_fail luks.qcow2 "LUKS encrypted image"
  grep -q "not supported" err.txt || bad "LUKS: no clear message"
fi

echo "== preallocation"
for p in metadata falloc full; do
  for v in 0.10 1.1; do
    img=prealloc-$p-$v.qcow2
    qimg create -f qcow2 -o preallocation=$p,compat=$v $img 12M
    fill $img 65536
    check $img
  done
done

echo "== a data cluster cut short by the end of the file"
# Its start is inside the file: the missing tail reads as zeros (as qemu
# reads it), and the map splits there (spliceable part, then the rest).
qimg create -f qcow2 eof.qcow2 4M
qio -c "write -P 0x42 1M 64k" -c "write -P 0x43 3M 64k" eof.qcow2
truncate -s $(( $(stat -c %s eof.qcow2) - 40000 )) eof.qcow2
check eof.qcow2

echo "== crash-dirty image"
qimg create -f qcow2 -o lazy_refcounts=on dirty.qcow2 12M
fill dirty.qcow2 65536
sh -c 'qemu-io -c "write -P 0x88 2M 128k" -c "write -P 0x89 9M 64k" -c abort dirty.qcow2; true' >/dev/null 2>&1
if [ $(( $(peek64 dirty.qcow2 72) & 1 )) = 1 ]; then
  check dirty.qcow2
else
  bad "dirty.qcow2: dirty bit not set by qemu-io abort"
fi

echo "== internal snapshots"
qimg create -f qcow2 snap.qcow2 12M
qio -c "write -P 0xa1 0 1M" -c "write -P 0xa2 11M 1M" snap.qcow2
qimg snapshot -c first snap.qcow2
qio -c "write -P 0xb1 512k 1M" -c "discard 11M 64k" snap.qcow2
qimg snapshot -c second snap.qcow2
qimg resize snap.qcow2 20M
qio -c "write -P 0xc1 15M 2M" snap.qcow2
qimg snapshot -c "after resize" snap.qcow2
qio -c "write -P 0xd1 0 64k" -c "write -z 16M 64k" snap.qcow2
# VM state written through the active image (beyond the disk), then kept
# in a snapshot: never part of either disk.
qio -c "write -b -P 0x77 0 1M" snap.qcow2
qimg snapshot -c vmstate snap.qcow2
qio -c "write -P 0xe1 1M 64k" snap.qcow2
check snap.qcow2
for t in first second "after resize" vmstate 1 2; do
  check_snap snap.qcow2 "$t"
done
if "$VDCAT" -s nosuch snap.qcow2 > /dev/null 2>&1; then bad "missing snapshot opened"; else ok "missing snapshot refused"; fi
list=$("$VDCAT" -l snap.qcow2 | cut -f1,2,4,5)
want=$(printf '1\tfirst\t12582912\t0\n2\tsecond\t12582912\t0\n3\tafter resize\t20971520\t0\n4\tvmstate\t20971520\t0')
[ "$list" = "$want" ] && ok "snapshot list" || { bad "snapshot list"; echo "$list"; }
dates=$("$VDCAT" -l snap.qcow2 | cut -f3 | cut -d. -f1 | tr '\n' ' ')
qdates=$(qemu-img info --output=json snap.qcow2 | sed -n 's/.*"date-sec": *\([0-9]*\).*/\1/p' | tr '\n' ' ')
[ "$dates" = "$qdates" ] && ok "snapshot dates" || bad "snapshot dates: $dates vs $qdates"
# Many snapshots with long names: a table read in several steps.
qimg create -f qcow2 many.qcow2 4M
long=$(printf 'n%.0s' $(seq 1 200))   # qemu keeps 255 bytes of a name
for i in $(seq 1 40); do
  qio -c "write -P $i $((i * 64))k 64k" many.qcow2
  qimg snapshot -c "$long-$i" many.qcow2
done
n=$("$VDCAT" -l many.qcow2 | wc -l)
[ "$n" = 40 ] && ok "40 snapshots listed" || bad "40 snapshots: listed $n"
check_snap many.qcow2 "$long-17"
check_snap many.qcow2 40
# v2 snapshots (no extra data in old images: disk size is the image's).
qimg create -f qcow2 -o compat=0.10 snapv2.qcow2 8M
qio -c "write -P 0x31 0 1M" snapv2.qcow2
qimg snapshot -c s snapv2.qcow2
qio -c "write -P 0x32 0 64k" snapv2.qcow2
check snapv2.qcow2
check_snap snapv2.qcow2 s
# Snapshots of extended-L2 and compressed images.
cp extb65536.qcow2 snapext.qcow2
qimg snapshot -c s snapext.qcow2
qio -c "write -P 0x41 0 2M" snapext.qcow2
check_snap snapext.qcow2 s
cp comp-zstd-65536.qcow2 snapcomp.qcow2
qimg snapshot -c s snapcomp.qcow2
qio -c "write -P 0x42 0 2M" snapcomp.qcow2
check_snap snapcomp.qcow2 s

# A real VM state, saved by qemu's savevm (needs qemu-system-x86_64).
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
  qimg create -f qcow2 vm.qcow2 8M
  qio -c "write -P 0x61 0 1M" vm.qcow2
  printf 'savevm withstate\nquit\n' |
    timeout 60 qemu-system-x86_64 -machine pc,accel=tcg -m 16 -display none \
      -nodefaults -monitor stdio -drive file=vm.qcow2,format=qcow2,if=virtio \
      >/dev/null 2>&1
  vms=$(qemu-img info --output=json vm.qcow2 | sed -n 's/.*"vm-state-size": *\([0-9]*\).*/\1/p' | head -1)
  if [ -n "$vms" ] && [ "$vms" -gt 0 ]; then
    qio -c "write -P 0x62 0 64k" vm.qcow2
    check_snap vm.qcow2 withstate
    ours=$("$VDCAT" -l vm.qcow2 | cut -f5)
    [ "$ours" = "$vms" ] && ok "VM state size $vms" || bad "VM state size $ours vs $vms"
  else
    echo "note: savevm did not produce VM state; skipped"
  fi
fi

echo "== valgrind on reads"
if [ -n "$VALGRIND" ]; then
  for img in v1.1-c65536.qcow2 comp-zlib-65536.qcow2 comp-zstd-4096.qcow2 ext65536.qcow2 \
             chain/sub/top/top.qcow2 df/img1.qcow2; do
    if $VALGRIND "$VDCAT" "$img" > /dev/null && $VALGRIND "$VDCAT" -m "$img" > /dev/null; then
      ok "valgrind $img"
    else
      bad "valgrind $img"
    fi
  done
  if $VALGRIND "$VDCAT" -s "after resize" snap.qcow2 > /dev/null &&
     $VALGRIND "$VDCAT" -l snap.qcow2 > /dev/null; then
    ok "valgrind snapshot"
  else
    bad "valgrind snapshot"
  fi
fi

echo "== refused and corrupt images"
good=v1.1-c65536.qcow2
cs=65536
l1=$(peek64 $good 40)
l2=$(peek64 $good $l1)
l2=$(( l2 & 0x00fffffffffffe00 ))
c () { cp $good bad.qcow2; }

c; poke32 bad.qcow2 32 1; must_fail bad.qcow2 "crypt_method 1"
c; poke64 bad.qcow2 72 32; must_fail bad.qcow2 "unknown incompatible bit 5"
c; poke32 bad.qcow2 4 4; must_fail bad.qcow2 "version 4"
c; poke32 bad.qcow2 20 8; must_fail bad.qcow2 "cluster_bits 8"
c; poke32 bad.qcow2 20 22; must_fail bad.qcow2 "cluster_bits 22"
c; poke32 bad.qcow2 20 63; must_fail bad.qcow2 "cluster_bits 63"
c; poke32 bad.qcow2 100 7; must_fail bad.qcow2 "header_length 7"
c; poke32 bad.qcow2 100 1000000; must_fail bad.qcow2 "header_length huge"
c; poke32 bad.qcow2 96 7; must_fail bad.qcow2 "refcount_order 7"
c; poke64 bad.qcow2 24 $(( 1 << 62 )); must_fail bad.qcow2 "size 2^62"
c; poke64 bad.qcow2 24 $(( 64 << 30 )); must_fail bad.qcow2 "size beyond the L1 table"
c; poke32 bad.qcow2 36 4294967295; must_fail bad.qcow2 "l1_size 2^32-1"
c; poke64 bad.qcow2 40 $(( l1 + 512 )); must_fail bad.qcow2 "L1 offset unaligned"
c; poke64 bad.qcow2 40 0; must_fail bad.qcow2 "L1 in the header"
c; poke64 bad.qcow2 40 $(( 1 << 50 )); must_fail bad.qcow2 "L1 beyond the file"
c; poke64 bad.qcow2 48 $(( 1 << 50 )); must_fail bad.qcow2 "refcount table beyond the file"
c; poke32 bad.qcow2 56 1000000; must_fail bad.qcow2 "refcount table huge"
c; poke64 bad.qcow2 48 0; must_fail bad.qcow2 "refcount table in the header"
c; poke32 bad.qcow2 60 1000000; poke64 bad.qcow2 64 $(( 3 * cs )); must_fail bad.qcow2 "nb_snapshots huge"
c; poke32 bad.qcow2 60 1; poke64 bad.qcow2 64 $(( 1 << 40 )); must_fail bad.qcow2 "snapshot table beyond the file"
c; poke64 bad.qcow2 8 4000; poke32 bad.qcow2 16 1024; must_fail bad.qcow2 "backing name length 1024"
c; poke64 bad.qcow2 8 $(( cs - 10 )); poke32 bad.qcow2 16 100; must_fail bad.qcow2 "backing name past the header cluster"
c; poke64 bad.qcow2 8 4000; poke32 bad.qcow2 16 10; poke bad.qcow2 4000 2f6e6f2f737563682f66; MSG_RE="no/such/f: cannot open" must_fail bad.qcow2 "missing backing file"
c; poke bad.qcow2 $(peek32 $good 100) e2792aca7fffffff; must_fail bad.qcow2 "header extension overrun"
c; poke64 bad.qcow2 $l1 $(( (1 << 63) | (1 << 45) )); must_fail bad.qcow2 "L1 entry beyond the file"
c; poke64 bad.qcow2 $l1 $(( (1 << 63) | (l2 + 4096) )); must_fail bad.qcow2 "L1 entry unaligned"
c; poke64 bad.qcow2 $l2 $(( (1 << 63) | (1 << 45) )); must_fail bad.qcow2 "L2 entry beyond the file"
c; poke64 bad.qcow2 $l2 $(( (1 << 63) | 4096 )); must_fail bad.qcow2 "L2 entry unaligned"
# Offset 0 with the copied bit is invalid without a data file; qemu reads
# it as unallocated, and so do we.
c; poke64 bad.qcow2 $l2 $(( 1 << 63 )); check bad.qcow2 nomap
c; poke64 bad.qcow2 $l2 $(( (1 << 62) | (1 << 40) )); must_fail bad.qcow2 "compressed beyond the file"
c; poke64 bad.qcow2 $l2 $(( (1 << 62) | 100 )); must_fail bad.qcow2 "compressed in the header"
c; truncate -s $(( $(stat -c %s $good) / 2 )) bad.qcow2; must_fail bad.qcow2 "truncated to half"
c; truncate -s 100 bad.qcow2; must_fail bad.qcow2 "truncated to 100 bytes"
printf 'QFI\xfb\0\0\0\3' > bad.qcow2; must_fail bad.qcow2 "8-byte file"
# Garbage compressed data.
cp comp-zlib-65536.qcow2 bad.qcow2
cl1=$(peek64 bad.qcow2 40); cl2=$(( $(peek64 bad.qcow2 $cl1) & 0x00fffffffffffe00 ))
ce=$(peek64 bad.qcow2 $cl2); coff=$(( ce & ((1 << 54) - 1) ))
dd if=/dev/urandom of=bad.qcow2 bs=1 seek=$coff count=64 conv=notrunc status=none
must_fail bad.qcow2 "garbage zlib data" nomap
cp comp-zstd-65536.qcow2 bad.qcow2
cl1=$(peek64 bad.qcow2 40); cl2=$(( $(peek64 bad.qcow2 $cl1) & 0x00fffffffffffe00 ))
ce=$(peek64 bad.qcow2 $cl2); coff=$(( ce & ((1 << 54) - 1) ))
dd if=/dev/urandom of=bad.qcow2 bs=1 seek=$coff count=64 conv=notrunc status=none
must_fail bad.qcow2 "garbage zstd data" nomap
# Extended L2: a subcluster both allocated and zero.
cp ext65536.qcow2 bad.qcow2
el1=$(peek64 bad.qcow2 40); el2=$(( $(peek64 bad.qcow2 $el1) & 0x00fffffffffffe00 ))
poke64 bad.qcow2 $(( el2 + 8 )) $(( (1 << 32) | 1 ))
must_fail bad.qcow2 "subcluster allocated and zero"
# Snapshot table entry with a bogus L1 table.
cp snap.qcow2 bad.qcow2
st=$(peek64 bad.qcow2 64)
poke64 bad.qcow2 $st $(( 1 << 44 ))
must_fail bad.qcow2 "snapshot L1 beyond the file"
cp snap.qcow2 bad.qcow2
poke32 bad.qcow2 $(( st + 36 )) 100000
must_fail bad.qcow2 "snapshot extra data huge"
# The corrupt bit: read with a warning.
cp $good bad.qcow2
poke64 bad.qcow2 72 2
qimg convert -O raw $good expect.raw
if "$VDCAT" bad.qcow2 > got.raw 2> err.txt && cmp -s got.raw expect.raw &&
   grep -q corrupt err.txt; then
  ok "corrupt bit: read-only with a warning"
else
  bad "corrupt bit"
fi

echo "passed $pass, failed $fail"
[ $fail -eq 0 ]
