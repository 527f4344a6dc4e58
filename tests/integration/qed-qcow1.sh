#!/bin/bash
# vmdiskfs - integration test of the QED and QCOW1 drivers against qemu.
#
# Images are written by qemu-img/qemu-io; the oracle for every image is
# `qemu-img convert -O raw`, compared byte for byte with `vd-cat IMG` (and
# with an odd read size).  The extent map (`vd-cat -m`) must tile the
# image, and its zero/hole extents must read as zeros.  Corrupt images
# (truncated, bad offsets and sizes, unknown feature bits, cycles) must
# fail with exit 1 and an error line: no crash, no hang (timeout 10), and
# no memory error under valgrind when it is installed.
# Exit 77 (skip) without qemu-img/qemu-io.
#
# SPDX-License-Identifier: GPL-3.0-or-later

set -u

here=$(cd "$(dirname "$0")" && pwd)
VDCAT=${VDCAT:-$here/../../formats/vd-cat}

command -v qemu-img >/dev/null 2>&1 || { echo "SKIP: no qemu-img"; exit 77; }
command -v qemu-io >/dev/null 2>&1 || { echo "SKIP: no qemu-io"; exit 77; }
[ -x "$VDCAT" ] || { echo "FAIL: $VDCAT not built"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vd-qed-qcow1.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
cd "$tmp" || exit 1

failures=0
fail () { echo "FAIL: $*"; failures=$((failures + 1)); }
pass () { echo "ok: $*"; }

qio () {                        # qio FORMAT IMAGE CMD...
  local fmt=$1 img=$2 c args=()
  shift 2
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null
}

# Little/big-endian integers into a file at an offset, without python.
poke () {                       # poke FILE OFFSET le|be NBYTES VALUE
  local f=$1 off=$2 order=$3 n=$4 v=$5 s= i shift_
  for ((i = 0; i < n; i++)); do
    if [ "$order" = le ]; then shift_=$((8 * i)); else shift_=$((8 * (n - 1 - i))); fi
    s+=$(printf '\\x%02x' $(( (v >> shift_) & 255 )))
  done
  printf "$s" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

# The extent map must tile [0, size) and its zero/hole extents read as 0.
check_map () {                  # check_map IMAGE REFERENCE
  local img=$1 ref=$2 size off len type next=0
  size=$(stat -c %s "$ref")
  if ! timeout 10 "$VDCAT" -m "$img" > map.txt 2> map.err; then
    fail "$img: vd-cat -m failed: $(cat map.err)"; return
  fi
  while read -r off len type; do
    if [ "$off" != "$next" ]; then
      fail "$img: map gap at $next (next extent at $off)"; return
    fi
    if [ "$type" != data ] &&
       ! cmp -s -i "$off:0" -n "$len" "$ref" /dev/zero; then
      fail "$img: $type extent $off+$len does not read as zeros"; return
    fi
    next=$((off + len))
  done < map.txt
  [ "$next" = "$size" ] || { fail "$img: map ends at $next, size $size"; return; }
}

# vd-cat must give exactly what qemu-img convert gives.
check () {                      # check IMAGE [EXPECTED-FORMAT]
  local img=$1 fmt=${2:-} ref=ref.raw
  rm -f "$ref"
  if ! qemu-img convert -O raw "$img" "$ref"; then
    fail "$img: qemu-img convert failed"; return
  fi
  if ! timeout 10 "$VDCAT" "$img" > out.raw 2> out.err; then
    fail "$img: vd-cat failed: $(cat out.err)"; return
  fi
  cmp -s out.raw "$ref" || { fail "$img: bytes differ from qemu-img"; return; }
  if ! timeout 10 "$VDCAT" -b 1000003 "$img" > out2.raw 2>> out.err ||
     ! cmp -s out2.raw "$ref"; then
    fail "$img: odd-sized reads differ"; return
  fi
  if [ -n "$fmt" ] &&
     ! timeout 10 "$VDCAT" -i "$img" 2>/dev/null |
       grep -qx "format $fmt"; then
    fail "$img: not probed as $fmt"; return
  fi
  check_map "$img" "$ref"
  pass "$img"
}

# A corrupt image must fail cleanly: exit 1, an error line, no crash.
check_bad () {                  # check_bad IMAGE WHAT [vd-cat options]
  local img=$1 what=$2 rc
  shift 2
  timeout 10 "$VDCAT" "$@" "$img" > /dev/null 2> bad.err
  rc=$?
  if [ $rc -ne 1 ]; then
    fail "$img ($what): exit $rc, expected 1: $(head -c 300 bad.err)"
  elif ! grep -q "error" bad.err; then
    fail "$img ($what): no error line"
  else
    pass "$img ($what) refused: $(head -n 1 bad.err)"
  fi
}

# A patterned raw file with holes, for convert.
make_pattern () {               # make_pattern FILE SIZE_MIB
  local f=$1 i
  truncate -s "$2M" "$f"
  for ((i = 0; i < $2; i += 3)); do
    printf 'block %d %.0s' "$i" $(seq 1 2000) |
      dd of="$f" bs=1k seek=$((i * 1024 + 17)) conv=notrunc status=none
  done
}

### QED ################################################################

for cs in 4k 64k 1M; do
  img=qed-$cs.qed
  qemu-img create -q -f qed -o cluster_size=$cs $img 20M
  qio qed $img "write -P 0x5a 1M 3M" "write -P 0x33 7000 5000" \
      "write -z 8M 2M" "write -P 0x11 12M 64k" "write -P 0x22 20476k 4k"
  # QED has no discard in qemu 7.2; try it anyway, the oracle decides.
  qio qed $img "discard 1M 1M" 2>/dev/null
  check $img qed
done
# A virtual size that is not a whole number of clusters.
qemu-img create -q -f qed odd.qed 5243392
qio qed odd.qed "write -P 0x31 5242880 512" "write -P 0x32 0 100k"
check odd.qed qed
# Zero clusters are reported as such.
if "$VDCAT" -m qed-64k.qed | grep -q "^8388608 2097152 zero$"; then
  pass "qed zero clusters in the map"
else
  fail "qed: no zero extent at 8M: $("$VDCAT" -m qed-64k.qed | tr '\n' ' ')"
fi

# A backing chain qed -> qed -> raw with relative names, read from
# another directory; the raw file is smaller than the images.
mkdir chain
head -c 6M /dev/urandom > chain/base.raw
(cd chain &&
   qemu-img create -q -f qed -b base.raw -F raw mid.qed 8M &&
   qio qed mid.qed "write -P 0x77 2M 1M" "write -z 5M 64k" &&
   qemu-img create -q -f qed -b mid.qed -F qed top.qed 10M &&
   qio qed top.qed "write -P 0x99 2560k 64k" "write -P 0x42 9M 512k")
check chain/mid.qed qed
check chain/top.qed qed

# A qed whose raw backing file starts with a QED magic: the no-probe
# feature bit must keep it raw.
mkdir rawback
{ printf 'QED\0'; head -c 4M /dev/urandom; } > rawback/fake.raw
(cd rawback && qemu-img create -q -f qed -b fake.raw -F raw over.qed 4M &&
   qio qed over.qed "write -P 0x01 0 64k")
check rawback/over.qed qed

# convert from a patterned raw file, with holes.
make_pattern pat.raw 12
qemu-img convert -O qed pat.raw conv.qed
check conv.qed qed
# (qemu 7.2 cannot reopen its own table_size=1 images; 2 works.)
qemu-img convert -O qed -o cluster_size=4k,table_size=2 pat.raw conv4k.qed
check conv4k.qed qed
timeout 10 "$VDCAT" conv4k.qed | cmp -s - pat.raw ||
  fail "conv4k.qed: bytes differ from the source raw file"

# A dirty image (left as after a crash) is still readable.
# (An allocating write sets the need-check bit; abort leaves it set.)
cp qed-64k.qed dirty.qed
bash -c 'qemu-io -f qed -c "write -P 0x44 15M 64k" -c abort dirty.qed || :' \
  >/dev/null 2>&1
features=$(od -An -tu8 -j16 -N8 dirty.qed | tr -d ' ')
if [ "$((features & 2))" = 2 ]; then
  check dirty.qed qed
else
  echo "note: qemu-io abort left no need-check bit ($features); skipped"
fi

### QCOW1 ##############################################################

qemu-img create -q -f qcow q1.qcow 16M
qio qcow q1.qcow "write -P 0x5a 1M 3M" "write -P 0x21 10M 4k" \
    "write -P 0x22 4000 200"
check q1.qcow qcow

qemu-img create -q -f qcow oddq.qcow 5243392
qio qcow oddq.qcow "write -P 0x31 5242880 512" "write -P 0x32 0 100k"
check oddq.qcow qcow

qemu-img convert -O qcow pat.raw convq.qcow
check convq.qcow qcow
qemu-img convert -c -O qcow pat.raw convqc.qcow
check convqc.qcow qcow

# QCOW1 over QCOW1 over raw, relative names (cluster_bits 9, l2_bits 12:
# the layout qemu uses with a backing file).
mkdir qchain
head -c 5M /dev/urandom > qchain/base.raw
if (cd qchain &&
      qemu-img create -q -f qcow -b base.raw -F raw mid.qcow 8M &&
      qio qcow mid.qcow "write -P 0x66 2M 64k" &&
      qemu-img create -q -f qcow -b mid.qcow -F qcow top.qcow 12M &&
      qio qcow top.qcow "write -P 0x67 2080k 8k" "write -P 0x68 11M 1M")
then
  check qchain/mid.qcow qcow
  check qchain/top.qcow qcow
else
  echo "note: this qemu-img cannot make qcow images with backing files"
fi

# QCOW version 2/3 are not ours.
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
qemu-img create -q -f qcow2 v3.qcow2 1M
for f in v2.qcow2 v3.qcow2; do
  if "$VDCAT" -i $f 2>/dev/null | grep -qx "format qcow"; then
    fail "$f probed as qcow (version 1)"
  else
    pass "$f not probed as qcow"
  fi
done

### Corrupt images #####################################################

good=qed-64k.qed                # header 1 cluster, L1 at 64k (4 clusters)

cp $good t1.qed; truncate -s 40 t1.qed
check_bad t1.qed "truncated header"
cp $good t2.qed; truncate -s 100000 t2.qed
check_bad t2.qed "truncated inside the L1 table"
cp $good t3.qed; truncate -s 500000 t3.qed
check_bad t3.qed "truncated data"
cp $good t4.qed; poke t4.qed 40 le 8 0x10001
check_bad t4.qed "unaligned l1_table_offset"
cp $good t5.qed; poke t5.qed 40 le 8 0x7fff000000000000
check_bad t5.qed "l1_table_offset beyond the file"
cp $good t6.qed; poke t6.qed 40 le 8 0
check_bad t6.qed "l1_table_offset in the header"
cp $good t7.qed; poke t7.qed 4 le 4 0x40000000
check_bad t7.qed "huge cluster_size"
cp $good t8.qed; poke t8.qed 4 le 4 3000
check_bad t8.qed "cluster_size not a power of two"
cp $good t9.qed; poke t9.qed 8 le 4 4096
check_bad t9.qed "huge table_size"
cp $good t10.qed; poke t10.qed 48 le 8 0x7ffffffffffffe00
check_bad t10.qed "huge image_size"
cp $good t11.qed; poke t11.qed 48 le 8 1000
check_bad t11.qed "image_size not a multiple of 512"
cp $good t12.qed; poke t12.qed 16 le 8 0x100
check_bad t12.qed "unknown feature bit"
cp $good t13.qed; poke t13.qed 12 le 4 0xffffffff
check_bad t13.qed "huge header_size"
# L1 entry 0 (guest 0..1G): an L2 offset beyond the file, then unaligned.
cp $good t14.qed; poke t14.qed 65536 le 8 0x100000000
check_bad t14.qed "L2 offset beyond the file"
check_bad t14.qed "L2 offset beyond the file (map)" -m
cp $good t15.qed; poke t15.qed 65536 le 8 0x10008
check_bad t15.qed "unaligned L2 offset"
# The first L2 table follows the L1 table (64k + 256k); its entry for 1M.
l2=$(od -An -tu8 -j65536 -N8 $good | tr -d ' ')
cp $good t16.qed; poke t16.qed $((l2 + 16 * 8)) le 8 0x123456789000
check_bad t16.qed "data cluster beyond the file"
cp $good t17.qed; poke t17.qed $((l2 + 16 * 8)) le 8 0x10003
check_bad t17.qed "unaligned data cluster"
cp $good t18.qed; poke t18.qed $((l2 + 16 * 8)) le 8 8
check_bad t18.qed "data cluster in the header"
# Backing file names.
cp chain/top.qed t19.qed; poke t19.qed 56 le 4 0xfffffff0
check_bad t19.qed "backing name offset beyond the header"
cp chain/top.qed t20.qed; poke t20.qed 60 le 4 0
check_bad t20.qed "empty backing name"
mkdir lonely; cp chain/top.qed lonely/t21.qed
check_bad lonely/t21.qed "missing backing file" -i
cp chain/top.qed chain/t22.qed
(cd chain && qemu-img rebase -u -f qed -b t22.qed -F qed t22.qed)
check_bad chain/t22.qed "backing file cycle" -i
printf 'QED\0' > t23.qed
check_bad t23.qed "4-byte file"

goodq=q1.qcow
cp $goodq u1.qcow; truncate -s 30 u1.qcow
check_bad u1.qcow "qcow1 truncated header"
cp $goodq u2.qcow; poke u2.qcow 40 be 8 0x7fff000000000000
check_bad u2.qcow "qcow1 l1_table_offset beyond the file"
cp $goodq u3.qcow; poke u3.qcow 32 be 1 40
check_bad u3.qcow "qcow1 huge cluster_bits"
cp $goodq u4.qcow; poke u4.qcow 24 be 8 0x4000000000000000
check_bad u4.qcow "qcow1 huge size"
cp $goodq u5.qcow; poke u5.qcow 36 be 4 1
check_bad u5.qcow "qcow1 encrypted"
l1q=$(od -An -tx1 -j40 -N8 $goodq | tr -d ' ')
cp $goodq u6.qcow; poke u6.qcow $((16#$l1q)) be 8 0x100000000
check_bad u6.qcow "qcow1 L2 offset beyond the file"
cp $goodq u7.qcow; poke u7.qcow 8 be 8 0xfffffffffff0; poke u7.qcow 16 be 4 8
check_bad u7.qcow "qcow1 backing name beyond the file"

# Memory errors under valgrind, on a good and two corrupt images.
if command -v valgrind >/dev/null 2>&1; then
  for args in "chain/top.qed" "-m qchain/top.qcow" "t16.qed" "t14.qed" \
              "u6.qcow"; do
    # shellcheck disable=SC2086
    timeout 120 valgrind -q --error-exitcode=99 --leak-check=full \
      --errors-for-leak-kinds=definite "$VDCAT" $args > /dev/null 2> vg.err
    rc=$?
    if [ $rc -eq 99 ] || [ $rc -gt 1 ]; then
      fail "valgrind vd-cat $args: exit $rc: $(head -c 600 vg.err)"
    else
      pass "valgrind vd-cat $args (exit $rc)"
    fi
  done
else
  echo "note: no valgrind, memory checks skipped"
fi

if [ $failures -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
exit 0
