#!/bin/bash
# vmdiskfs - the iSCSI network disk driver (formats/iscsi.c) against a
# real target: tgtd on 127.0.0.1 (a control port and a TCP port of its
# own), LUNs backed by files here, read and written with formats/vd-cat:
#  - bytes (cmp with the backing file and with qemu-img convert's),
#    size (-i), LUN 0 (tgtd's controller) refused as not a disk, a
#    missing LUN refused;
#  - extents (-m): all data without thin provisioning; with it (tgtd
#    then answers GET LBA STATUS from its file's holes, LBPRZ set), the
#    data extents are the backing file's data ranges, holes read zeros;
#  - writes (-w): a file with zero runs and holes written to a thin LUN
#    (zeros by WRITE SAME with UNMAP: they become holes of the backing
#    file) and to a thick one (zeros written; a size that is no multiple
#    of the block: the last block read, merged, written back), read back
#    and the backing files compared;
#  - CHAP: a target with an account bound reads with the right password,
#    refuses a wrong one and none, the password never in the messages;
#  - a target stopped (SIGSTOP) while a reader runs, and a new open of
#    it: both fail within the timeout (iscsi://...?timeout=N where the
#    URI takes it, else the default 30 s);
#  - a target killed (SIGKILL) while a reader runs: exit 1 with a log
#    line at once, and a new open is refused at once.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
set -u

for c in tgtd tgtadm; do
  if ! command -v "$c" >/dev/null 2>&1; then
    [ "${CI:-}" = true ] && fail "$c is not installed (CI)"
    skip "$c is not installed"
  fi
done
require python3 cmp dd truncate timeout
[ "$(id -u)" = 0 ] || skip "tgtd needs root"
[ -x "$VDCAT" ] || fail "$VDCAT is not built"

# A control port (/var/run/tgtd/socket.N) and a TCP port nobody uses.
ctl=
for ((i = 0; i < 50; i++)); do
  n=$((2000 + RANDOM % 30000))
  if [ ! -e "/var/run/tgtd/socket.$n" ]; then
    ctl=$n
    break
  fi
done
[ -n "$ctl" ] || fail "no free tgtd control port"
port=$(python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')

IQN=iqn.2026-12.org.vmdiskfs.test:disk
IQN2=iqn.2026-12.org.vmdiskfs.test:chap
tgtd_pid=

tgtadm_ ()
{
  tgtadm -C "$ctl" --lld iscsi "$@"
}

start_tgtd ()
{
  tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$port" \
    >>"$TEST_DIR/tgtd.log" 2>&1 &
  tgtd_pid=$!
  wait_for 10 tgtadm_ --mode system --op show >/dev/null 2>&1 ||
    { cat "$TEST_DIR/tgtd.log" >&2; fail "tgtd did not answer on control port $ctl"; }
}

# tgtd ignores SIGTERM while it has targets: delete them, then the
# system; SIGKILL when that does not end it.
stop_tgtd ()
{
  local tid i
  [ -n "$tgtd_pid" ] || return 0
  if kill -0 "$tgtd_pid" 2>/dev/null; then
    kill -CONT "$tgtd_pid" 2>/dev/null
    for tid in 1 2; do
      timeout 10 tgtadm -C "$ctl" --lld iscsi --mode target --op delete \
        --force --tid "$tid" >/dev/null 2>&1
    done
    timeout 10 tgtadm -C "$ctl" --mode system --op delete >/dev/null 2>&1
    for ((i = 0; i < 50; i++)); do
      kill -0 "$tgtd_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$tgtd_pid" 2>/dev/null
  fi
  wait "$tgtd_pid" 2>/dev/null
  tgtd_pid=
  rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
}
on_exit stop_tgtd

# File size in bytes; the zero runs of what we write.
MiB=$((1 << 20))
SIZE=$((32 * MiB))

# data.img: random data, a run of written zeros, a hole, more data, a
# hole to the end.
data=$TEST_DIR/data.img
truncate -s $SIZE "$data"
dd if=/dev/urandom of="$data" bs=1M count=1 conv=notrunc status=none
dd if=/dev/zero of="$data" bs=1M seek=1 count=2 conv=notrunc status=none
dd if=/dev/urandom of="$data" bs=1M seek=3 count=1 conv=notrunc status=none
dd if=/dev/urandom of="$data" bs=64k seek=256 count=3 conv=notrunc status=none
dd if=/dev/urandom of="$data" bs=1M seek=20 count=1 conv=notrunc status=none

# Thin LUN 2 (written with -w), thick LUN 3 (likewise), thick LUN 1
# (data.img), all of target 1.
thin=$TEST_DIR/thin.img
thick=$TEST_DIR/thick.img
truncate -s $SIZE "$thin"
dd if=/dev/urandom of="$thick" bs=1M count=32 status=none

start_tgtd
tgtadm_ --mode target --op new --tid 1 --targetname "$IQN" || fail "target"
tgtadm_ --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$data" ||
  fail "LUN 1"
tgtadm_ --mode logicalunit --op new --tid 1 --lun 2 --backing-store "$thin" ||
  fail "LUN 2"
tgtadm_ --mode logicalunit --op update --tid 1 --lun 2 \
  --params thin_provisioning=1 || fail "LUN 2 thin"
tgtadm_ --mode logicalunit --op new --tid 1 --lun 3 --backing-store "$thick" ||
  fail "LUN 3"
tgtadm_ --mode target --op bind --tid 1 --initiator-address ALL || fail "bind"

U=iscsi://127.0.0.1:$port/$IQN

# 1. Bytes, size, LUN 0.
"$VDCAT" "$U/1" >"$TEST_DIR/out" 2>"$TEST_DIR/err" ||
  { cat "$TEST_DIR/err" >&2; fail "vd-cat $U/1"; }
compare "$TEST_DIR/out" "$data"
# qemu's iscsi driver (qemu-block-extra) as a second oracle.
if command -v qemu-img >/dev/null 2>&1; then
  qemu-img convert -O raw "$U/1" "$TEST_DIR/qemu.raw" ||
    fail "qemu-img convert $U/1"
  compare "$TEST_DIR/out" "$TEST_DIR/qemu.raw"
  rm -f "$TEST_DIR/qemu.raw"
fi
info=$("$VDCAT" -i "$U/1") || fail "vd-cat -i $U/1"
[ "$info" = "format iscsi
size $SIZE" ] || fail "vd-cat -i $U/1 said: $info"
if "$VDCAT" -i "$U/0" >/dev/null 2>"$TEST_DIR/err"; then
  fail "LUN 0 (tgtd's controller) opened as a disk"
fi
grep -q "not a disk" "$TEST_DIR/err" ||
  { cat "$TEST_DIR/err" >&2; fail "LUN 0: no 'not a disk' message"; }
if "$VDCAT" -i "$U/9" >/dev/null 2>"$TEST_DIR/err"; then
  fail "LUN 9 (none) opened"
fi
echo "bytes, size, LUN 0 and a missing LUN: ok"

# 2. Extents.  Thick: all data.
map=$("$VDCAT" -m "$U/1") || fail "vd-cat -m $U/1"
[ "$map" = "0 $SIZE data" ] || fail "thick LUN 1 map: $map"

# check_map URI FILE: the map covers the disk in order, its holes read
# zeros, and its data extents (merged) are FILE's data ranges.
check_map ()
{
  local uri=$1 file=$2
  "$VDCAT" -m "$uri" >"$TEST_DIR/map" || fail "vd-cat -m $uri"
  "$VDCAT" "$uri" >"$TEST_DIR/bytes" || fail "vd-cat $uri"
  data_ranges "$file" >"$TEST_DIR/ranges"
  python3 - "$TEST_DIR/map" "$TEST_DIR/bytes" "$TEST_DIR/ranges" "$SIZE" <<'EOF' ||
import sys
mapf, bytesf, rangesf, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ext = [l.split() for l in open(mapf)]
buf = open(bytesf, "rb").read()
pos = 0
data = []
holes = 0
for off, ln, kind in ext:
    off, ln = int(off), int(ln)
    assert off == pos and ln > 0, f"extent {off} {ln} after {pos}"
    assert kind in ("data", "hole"), kind
    if kind == "hole":
        holes += 1
        assert buf[off:off + ln].count(0) == ln, f"hole {off}+{ln} not zeros"
    elif data and data[-1][1] == off:
        data[-1][1] = off + ln
    else:
        data.append([off, off + ln])
    pos = off + ln
assert pos == size, f"map ends at {pos}, not {size}"
want = [[int(a), int(b)] for a, b in (l.split() for l in open(rangesf))]
assert holes > 0, "no hole reported on a thin LUN"
assert data == want, f"data extents {data} != backing file's {want}"
EOF
    { cat "$TEST_DIR/map" >&2; fail "$uri: map inconsistent with $file"; }
}

# Thin: LUN 1 made thin too (tgtd keeps the flag per LU).
tgtadm_ --mode logicalunit --op update --tid 1 --lun 1 \
  --params thin_provisioning=1 || fail "LUN 1 thin"
check_map "$U/1" "$data"
echo "extents, thick and thin: ok ($(wc -l <"$TEST_DIR/map") extents)"

# 3. Writes.  src: random data with zero runs (aligned and not) and a
# hole, written to the thin LUN 2 and the thick LUN 3.
src=$TEST_DIR/src.img
truncate -s $SIZE "$src"
dd if=/dev/urandom of="$src" bs=1M count=2 conv=notrunc status=none
dd if=/dev/zero of="$src" bs=1M seek=2 count=3 conv=notrunc status=none
dd if=/dev/urandom of="$src" bs=1000 seek=5243 count=300 conv=notrunc \
  status=none
dd if=/dev/zero of="$src" bs=4096 seek=1500 count=7 conv=notrunc status=none
dd if=/dev/urandom of="$src" bs=1M seek=24 count=1 conv=notrunc status=none
"$VDCAT" -w "$src" "$U/2" 2>"$TEST_DIR/err" ||
  { cat "$TEST_DIR/err" >&2; fail "vd-cat -w to the thin LUN"; }
"$VDCAT" "$U/2" >"$TEST_DIR/out" || fail "vd-cat $U/2"
compare "$TEST_DIR/out" "$src"
compare "$thin" "$src"
# The 3 MiB of zeros went by WRITE SAME with UNMAP: a hole in thin.img.
python3 - "$thin" <<'EOF' || fail "the zeros written to the thin LUN are not a hole of its file"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
d = os.lseek(fd, 2 << 20, os.SEEK_DATA)
assert d >= 5 << 20, f"data at {d}"
EOF
check_map "$U/2" "$thin"

# Thick LUN 3: src's first 5 MiB + 1000 bytes (the last block partial).
head -c $((5 * MiB + 1000)) "$src" >"$TEST_DIR/part"
{ cat "$TEST_DIR/part"; tail -c +$((5 * MiB + 1001)) "$thick"; } \
  >"$TEST_DIR/expect"
"$VDCAT" -w "$TEST_DIR/part" "$U/3" 2>"$TEST_DIR/err" ||
  { cat "$TEST_DIR/err" >&2; fail "vd-cat -w to the thick LUN"; }
"$VDCAT" "$U/3" >"$TEST_DIR/out" || fail "vd-cat $U/3"
compare "$TEST_DIR/out" "$TEST_DIR/expect"
compare "$thick" "$TEST_DIR/expect"
echo "writes, thin and thick: ok"

# 4. CHAP: target 2, an account bound to it.
chap=$TEST_DIR/chap.img
dd if=/dev/urandom of="$chap" bs=1M count=4 status=none
PW=Zq7pW3mX9kLt
tgtadm_ --mode target --op new --tid 2 --targetname "$IQN2" || fail "target 2"
tgtadm_ --mode logicalunit --op new --tid 2 --lun 1 --backing-store "$chap" ||
  fail "target 2 LUN 1"
tgtadm_ --mode target --op bind --tid 2 --initiator-address ALL ||
  fail "bind 2"
tgtadm_ --mode account --op new --user vduser --password "$PW" ||
  fail "account"
tgtadm_ --mode account --op bind --tid 2 --user vduser || fail "account bind"
C=127.0.0.1:$port/$IQN2/1
"$VDCAT" "iscsi://vduser%$PW@$C" >"$TEST_DIR/out" 2>"$TEST_DIR/err" ||
  { cat "$TEST_DIR/err" >&2; fail "CHAP with the right password"; }
compare "$TEST_DIR/out" "$chap"
for cred in "vduser%WrongPass1234@" "nobody%$PW@" ""; do
  if "$VDCAT" -i "iscsi://$cred$C" >/dev/null 2>"$TEST_DIR/err"; then
    fail "CHAP: iscsi://$cred$C opened"
  fi
  grep -q "login refused" "$TEST_DIR/err" ||
    { cat "$TEST_DIR/err" >&2; fail "CHAP ($cred): no clear message"; }
  ! grep -q -e "$PW" -e WrongPass1234 "$TEST_DIR/err" ||
    fail "CHAP: a password in the message"
done
echo "CHAP: ok ($(head -n 1 "$TEST_DIR/err"))"

# 5. A target that stops answering.  The timeout from the URI when it
# takes one (vd_net_parse), else the default.
TO=3
if ! "$VDCAT" -i "$U/1?timeout=$TO" >/dev/null 2>&1; then
  echo "note: iscsi URIs take no ?timeout= here: the default 30 s"
  TO=30
  T=$U/1
else
  T="$U/1?timeout=$TO"
fi

# bg_reader NAME: vd-cat -r 0 (read the LUN in a loop) in the
# background until its first pass is done.
bg_reader ()
{
  "$VDCAT" -r 0 "$T" >"$TEST_DIR/$1.out" 2>"$TEST_DIR/$1.err" &
  reader=$!
  wait_for 20 grep -q . "$TEST_DIR/$1.out" ||
    { cat "$TEST_DIR/$1.err" >&2; fail "$1: the reader did not read"; }
}

# wait_exit PID SECONDS: its exit status, 124 if it runs longer.
wait_exit ()
{
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 124
  fi
  wait "$pid"
}

bg_reader stop
kill -STOP "$tgtd_pid"
t0=$(date +%s.%N)
"$VDCAT" -i "$T" >/dev/null 2>"$TEST_DIR/open.err" &
opener=$!
wait_exit $reader $((TO + 15))
rc=$?
t1=$(date +%s.%N)
wait_exit $opener 15
orc=$?
t2=$(date +%s.%N)
kill -CONT "$tgtd_pid"
[ $rc = 1 ] || { cat "$TEST_DIR/stop.err" >&2; fail "stopped target: the reader exited $rc (124: hung)"; }
[ $orc = 1 ] || { cat "$TEST_DIR/open.err" >&2; fail "stopped target: the open exited $orc (124: hung)"; }
grep -q "iscsi: .*no answer within $TO s" "$TEST_DIR/stop.err" ||
  { cat "$TEST_DIR/stop.err" >&2; fail "stopped target: no timeout message"; }
grep -q "no answer within $TO s" "$TEST_DIR/open.err" ||
  { cat "$TEST_DIR/open.err" >&2; fail "stopped target: no timeout message at open"; }
echo "stopped target: read failed after $(python3 -c "print(round($t1 - $t0, 1))") s, open after $(python3 -c "print(round($t2 - $t0, 1))") s (timeout $TO s): $(grep -m1 iscsi "$TEST_DIR/stop.err")"
wait_for 20 "$VDCAT" -i "$U/1" >/dev/null 2>&1 ||
  fail "the target did not come back after SIGCONT"

# 6. A target killed while a reader runs, and opened after.
bg_reader kill
kill -KILL "$tgtd_pid"
wait "$tgtd_pid" 2>/dev/null
t0=$(date +%s.%N)
wait_exit $reader 10
rc=$?
[ $rc = 1 ] || { cat "$TEST_DIR/kill.err" >&2; fail "killed target: the reader exited $rc (124: hung)"; }
grep -q "iscsi: " "$TEST_DIR/kill.err" ||
  { cat "$TEST_DIR/kill.err" >&2; fail "killed target: no log line"; }
timeout 10 "$VDCAT" -i "$U/1" >/dev/null 2>"$TEST_DIR/err"
rc=$?
[ $rc = 1 ] || fail "killed target: an open exited $rc"
grep -q "Connection refused" "$TEST_DIR/err" ||
  { cat "$TEST_DIR/err" >&2; fail "killed target: no 'Connection refused'"; }
echo "killed target: $(grep -m1 iscsi "$TEST_DIR/kill.err"); then $(head -n 1 "$TEST_DIR/err")"
tgtd_pid=
rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
echo "PASS"
