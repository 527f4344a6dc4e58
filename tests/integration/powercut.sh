#!/bin/bash
# vmdiskfs - power cut (issue 9): vmdiskfs inside the small TCG guest of
# tests/lvm/guest.sh writes to an image on the guest's own ext4 disk, and
# the guest is killed (kill -9 of qemu: the guest's page cache is lost)
# at a random moment.  Then, on the host: e2fsck replays the journal,
# debugfs takes the image out, and
#  - qemu-img check reports no corruption (exit 0, or 3: leaks only),
#  - the internal snapshot "before" reads exactly as before (a copy
#    reverted with qemu-img snapshot -a, converted),
#  - every piece the writer recorded as fsync'd (tests/lvm/powercut.sh)
#    reads back exactly, and pieces it had not started hold the old bytes.
#
# Environment:
#   VD_POWERCUT_FORMAT   qcow2 (default) or raw.  qcow2 needs the qcow2
#                        writer: without it (open for writing gives
#                        EROFS) the test is skipped, saying so; raw runs
#                        the same on a raw image (no snapshot)
#   VD_POWERCUT_TRIALS   guest boots (default 4; each 40 to 60 s here)
#   VD_POWERCUT_SPAN     the kill comes 0 to SPAN seconds after the writer
#                        starts (default 10; once a writer finishes before
#                        the kill, 0.1 to 0.9 times its time)
#   VD_POWERCUT_SEED     for the random order, zero pieces and kill times
#                        (default: from the clock; printed)
#   VD_POWERCUT_CLUSTERS qcow2 cluster sizes, one per trial in turn
#                        (default "65536 4096")
# Only files outside /tmp reach the guest (TEST_DIR is under /var/tmp).
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
set -u
# All in one block: bash parses it whole before running it.
{
require qemu-img qemu-io qemu-system-x86_64 mkfs.ext4 e2fsck debugfs python3
srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
export abs_top_srcdir=$srcdir
export abs_top_builddir=${abs_top_builddir:-$srcdir}
case $abs_top_builddir in
  /tmp/*) skip "build tree under /tmp (a tmpfs in the guest)" ;;
esac
case $TEST_DIR in
  /tmp/*) skip "TEST_DIR under /tmp (a tmpfs in the guest): set TEST_TMPDIR" ;;
esac

fmt=${VD_POWERCUT_FORMAT:-qcow2}
trials=${VD_POWERCUT_TRIALS:-4}
span=${VD_POWERCUT_SPAN:-10}
span_lo=0
seed=${VD_POWERCUT_SEED:-$(date +%s)}
clusters=(${VD_POWERCUT_CLUSTERS:-65536 4096})
case $fmt in qcow2|raw) ;; *) fail "VD_POWERCUT_FORMAT=$fmt: qcow2 or raw" ;; esac
PIECES=96
M=1048576
RANDOM=$seed
echo "powercut: format $fmt, $trials trials, seed $seed"

# Can vmdiskfs write this format?  Open a tiny image's disk for writing
# (nothing is written) in images mode on the host.
probe=$TEST_DIR/probe
mkdir -p "$probe" "$TEST_DIR/staging"
chmod 700 "$TEST_DIR/staging"
if [ "$fmt" = qcow2 ]; then
  qemu-img create -q -f qcow2 "$probe/p.qcow2" 1M || fail "qemu-img create"
else
  truncate -s 1M "$probe/p.raw"
fi
start_vmdiskfs "$TEST_DIR/pmnt" -o images="$probe",staging="$TEST_DIR/staging"
why=$(python3 - "$TEST_DIR/pmnt/p.$fmt/disk.img" <<'EOF'
import errno, os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY))
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
)
stop_vmdiskfs "$TEST_DIR/pmnt"
case $why in
  ok) ;;
  EROFS) skip "vmdiskfs cannot write $fmt images yet (open for writing: EROFS);" \
              "VD_POWERCUT_FORMAT=raw runs the power cut on a raw image" ;;
  *) fail "opening a $fmt disk for writing on the host: $why" ;;
esac

head -c $((PIECES * M)) /dev/urandom > "$TEST_DIR/old" || fail "old data"
head -c $((PIECES * M)) /dev/urandom > "$TEST_DIR/new" || fail "new data"
failures=0
bad () { echo "FAIL: $*"; failures=$((failures + 1)); }
killed_n=0
t0=$(date +%s)

for ((t = 1; t <= trials; t++)); do
  T=$TEST_DIR/t$t
  # The file system's root holds imgs/, vmdiskfs's images directory.
  mkdir -p "$T/root/imgs"
  # The image: old data, then (qcow2) the snapshot "before" of it, so
  # that every write copies on write.
  if [ "$fmt" = qcow2 ]; then
    cs=${clusters[$(( (t - 1) % ${#clusters[@]} ))]}
    img=disk.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=$cs "$T/root/imgs/$img" $((PIECES * M)) ||
      fail "qemu-img create"
    qemu-io -f qcow2 -c "write -s $TEST_DIR/old 0 $((PIECES * M))" "$T/root/imgs/$img" \
      >/dev/null || fail "qemu-io write"
    qemu-img snapshot -c before "$T/root/imgs/$img" || fail "qemu-img snapshot"
    what="qcow2, cluster size $cs"
  else
    img=disk.raw
    cp "$TEST_DIR/old" "$T/root/imgs/$img"
    what=raw
  fi
  mkfs.ext4 -q -F -d "$T/root" -L vdpc "$T/ext4.img" 512M >/dev/null ||
    fail "mkfs.ext4 -d"
  # Random order, about one piece in five zeros, the kill time.
  order=$(python3 -c "import random,sys; random.seed($seed + $t); l=list(range($PIECES)); random.shuffle(l); print(','.join(map(str,l)))")
  zeros=$(python3 -c "import random; random.seed($seed * 7 + $t); print(','.join(str(p) for p in range($PIECES) if random.random() < 0.2))")
  after=$(python3 -c "import random; random.seed($seed * 13 + $t); print('%.2f' % random.uniform($span_lo, $span))")
  echo "---- trial $t: $what; kill ${after}s after the writer starts (span ${span}s)"
  ts=$(date +%s)
  VD_GUEST_DISK=$T/ext4.img VD_GUEST_KILL="VD-PC GO" VD_GUEST_KILL_AFTER=$after \
    VD_GUEST_CONSOLE=$T/console \
    bash "$srcdir/tests/lvm/guest.sh" "$srcdir/tests/lvm/powercut.sh" \
      "$img" "$TEST_DIR/new" "$order" "$zeros" 3 > "$T/guest.log" 2>&1
  grc=$?
  echo "guest: exit $grc, $(( $(date +%s) - ts ))s"
  [ $grc = 77 ] && { cat "$T/guest.log"; skip "the guest could not run"; }
  if grep -q "^guest.sh: killed" "$T/guest.log"; then
    killed_n=$((killed_n + 1))
  elif grep -q "^VD-PC DONE" "$T/console"; then
    took=$(sed -n 's/^VD-PC DONE //p' "$T/console")
    echo "the writer finished (in ${took}s) before the kill: no power cut this time"
    span=$(python3 -c "print('%.1f' % ($took * 0.9))")
    span_lo=$(python3 -c "print('%.1f' % ($took * 0.1))")
  else
    cat "$T/guest.log"
    bad "trial $t: the guest neither finished nor was killed (exit $grc)"
    continue
  fi
  grep -q "^VD-PC GO" "$T/console" || { cat "$T/guest.log"; bad "trial $t: the writer did not start"; continue; }
  durable=$(sed -n 's/^VD-PC DURABLE //p' "$T/console" | tr '\n' ' ')
  started=$(sed -n 's/^VD-PC START //p' "$T/console" | tr '\n' ' ')
  echo "started: $(echo $started | wc -w) pieces; fsync'd: $(echo $durable | wc -w)"

  # The host's view of the disk after the power cut: journal replayed.
  e2fsck -fy "$T/ext4.img" > "$T/e2fsck.log" 2>&1
  erc=$?
  [ $erc -le 1 ] || { cat "$T/e2fsck.log"; bad "trial $t: e2fsck exit $erc"; }
  rm -f "$T/out"
  debugfs -R "dump /imgs/$img $T/out" "$T/ext4.img" >/dev/null 2>&1
  [ -s "$T/out" ] || { bad "trial $t: debugfs could not dump /imgs/$img"; continue; }
  if [ "$fmt" = qcow2 ]; then
    qemu-img check -f qcow2 "$T/out" > "$T/check.log" 2>&1
    crc=$?
    echo "qemu-img check: exit $crc ($(grep -c -i leak "$T/check.log") leak lines)"
    case $crc in
      0|3) ;;
      *) cat "$T/check.log"; bad "trial $t: qemu-img check exit $crc" ;;
    esac
    cp "$T/out" "$T/snap.qcow2"
    qemu-img snapshot -a before "$T/snap.qcow2" &&
      qemu-img convert -f qcow2 -O raw "$T/snap.qcow2" "$T/snap.raw" ||
      bad "trial $t: reverting a copy to the snapshot failed"
    cmp "$T/snap.raw" "$TEST_DIR/old" || bad "trial $t: the snapshot before changed"
    qemu-img convert -f qcow2 -O raw "$T/out" "$T/cur.raw" ||
      { bad "trial $t: qemu-img convert of the image failed"; continue; }
  else
    cp "$T/out" "$T/cur.raw"
  fi
  [ "$(stat -c %s "$T/cur.raw")" = $((PIECES * M)) ] ||
    bad "trial $t: size $(stat -c %s "$T/cur.raw")"
  # Each fsync'd piece holds its new bytes; pieces the writer had not
  # reached (3 beyond the last START shown, for the console's lag) the old.
  python3 - "$T/cur.raw" "$TEST_DIR/old" "$TEST_DIR/new" "$order" "$zeros" \
    "$durable" "$started" <<'EOF' || bad "trial $t: data"
import sys
cur, old, new, order, zeros, durable, started = sys.argv[1:]
M = 1 << 20
order = [int(p) for p in order.split(",")]
zeros = {int(p) for p in zeros.split(",") if p}
durable = [int(p) for p in durable.split()]
started = [int(p) for p in started.split()]
c, o, n = (open(f, "rb").read() for f in (cur, old, new))
piece = lambda b, p: b[p * M:(p + 1) * M]
bad = 0
for p in durable:
    want = bytes(M) if p in zeros else piece(n, p)
    if piece(c, p) != want:
        print("FAIL: piece %d was fsync'd but does not hold its %s" %
              (p, "zeros" if p in zeros else "new bytes"))
        bad += 1
reached = max([order.index(p) for p in started], default=-1)
untouched = order[reached + 4:]
for p in untouched:
    if piece(c, p) != piece(o, p):
        print("FAIL: piece %d was never written but changed" % p)
        bad += 1
print("data: %d fsync'd pieces exact, %d unwritten pieces unchanged, %d bad"
      % (len(durable), len(untouched), bad))
sys.exit(1 if bad else 0)
EOF
  rm -rf "$T/root" "$T/ext4.img" "$T/out" "$T/snap.qcow2" "$T/snap.raw" "$T/cur.raw"
done

echo "powercut: $trials trials ($killed_n killed mid-write), $failures failed checks, $(( $(date +%s) - t0 ))s"
[ $killed_n -gt 0 ] || [ $failures -gt 0 ] || echo "warning: no trial cut the power mid-write (VD_POWERCUT_SPAN)"
[ $failures = 0 ] || exit 1
exit 0
}
