#!/bin/bash
# vmdiskfs - integration test of the NBD network disk driver (formats/nbd.c)
# through vd-cat, against real servers started here:
#   (a) qemu-nbd -r over a unix socket serving a qcow2 with data, zero
#       clusters, discarded and never written ranges: vd-cat's bytes (also
#       read in odd-sized pieces) equal `qemu-img convert -O raw`; its
#       extent map (-m) covers every nonzero byte with data and shows the
#       never-written ranges as holes; writing to it fails (EROFS);
#   (b) nbdkit's file plugin over a unix socket (a sparse raw file: bytes
#       and holes), and its memory plugin for writes: vd-cat -w of random
#       bytes, then of a file with zero runs (aligned and not, a short
#       tail) reads back exactly, the zero runs as holes;
#   (c) qemu-nbd on 127.0.0.1 over TCP with a named export; an unknown
#       export fails;
#   (d) nbdkit filters: a server that refuses requests not aligned to
#       4 KiB or over 256 KiB (writes of partial blocks, reads in odd and
#       in too large pieces), one without WRITE_ZEROES and base:allocation
#       (zeros written as data, all data in the map), and one answering
#       reads with EIO (logged; the next run reads fine);
#   (e) errors: a SIGSTOPped server fails the read within the timeout (and
#       a few seconds), with one log line, no hang; a server killed while
#       vd-cat reads gives EIO (exit 1, a log line); a server restarted on
#       the same socket while vd-cat keeps the disk open (-r, -u) is
#       reconnected to without a failed pass.
# The short timeout needs `timeout=N` on nbd+unix URIs (net.c); without it
# the stalled read waits the default 30 s.
# Exit 77 (skip) without qemu-nbd, qemu-img, qemu-io or nbdkit, unless
# CI=true (then it fails).
#
# SPDX-License-Identifier: GPL-3.0-or-later

set -u

here=$(cd "$(dirname "$0")" && pwd)
VDCAT=${VDCAT:-$here/../../formats/vd-cat}
case $VDCAT in /*) ;; *) VDCAT=$(pwd)/$VDCAT ;; esac

for c in qemu-nbd qemu-img qemu-io nbdkit python3 timeout; do
  if ! command -v "$c" >/dev/null 2>&1; then
    [ "${CI:-}" = true ] && { echo "FAIL: $c is not installed (CI)"; exit 1; }
    echo "SKIP: $c is not installed"
    exit 77
  fi
done
[ -x "$VDCAT" ] || { echo "FAIL: $VDCAT not built"; exit 1; }

# Short: unix socket paths are limited to 107 bytes.
tmp=$(mktemp -d /tmp/vd-nbd.XXXXXX) || exit 1
pidfiles=()
bgpids=()

# Forked daemons are reparented to PID 1 and may linger as zombies there:
# gone means no /proc entry or state Z (TESTING.md).
gone () {
  local st
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
  [ -z "$st" ] || [ "$st" = Z ]
}

wait_gone () {                  # wait_gone PID SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    gone "$1" && return 0
    sleep 0.1
  done
  return 1
}

# Stop the daemon whose pid file is $1 (TERM, then KILL after 5 s).
stop_daemon () {
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  kill -CONT "$pid" 2>/dev/null
  kill "$pid" 2>/dev/null
  if ! wait_gone "$pid" 5; then
    kill -9 "$pid" 2>/dev/null
    wait_gone "$pid" 5
  fi
  rm -f "$1"
}

cleanup () {
  local f p
  for p in "${bgpids[@]}"; do
    kill -CONT "$p" 2>/dev/null
    kill -9 "$p" 2>/dev/null
  done
  for f in "${pidfiles[@]}"; do stop_daemon "$f"; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$tmp" || exit 1

failures=0
fail () { echo "FAIL: $*"; failures=$((failures + 1)); }
pass () { echo "ok: $*"; }

MiB=$((1 << 20))
# Every vd-cat run is bounded: a hang is a failure, not a stuck test (those
# in the background, signalled by pid, are bounded by the waits below).
vdcat () { timeout 60 "$VDCAT" "$@"; }

# qemu-nbd, forked once it listens: qnbd NAME QEMU-NBD-ARGS...
qnbd () {
  local name=$1
  shift
  pidfiles+=("$tmp/$name.pid")
  qemu-nbd --fork --persistent --shared=8 --pid-file="$tmp/$name.pid" "$@"
}

# nbdkit (forks once it listens): kit NAME SOCKET PLUGIN ARGS...
kit () {
  local name=$1 sock=$2
  shift 2
  pidfiles+=("$tmp/$name.pid")
  nbdkit -U "$sock" -P "$tmp/$name.pid" "$@"
}

# Wait until file $1 has at least $2 lines (20 s).
wait_lines () {
  local i
  for ((i = 0; i < 200; i++)); do
    [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# The extent map of vd-cat -m must cover every nonzero byte of RAW with
# data, and mark every range of HOLES ("START END" ...) hole or zero.
check_map () {                  # check_map MAPFILE RAW SIZE [START END]...
  python3 - "$@" <<'EOF'
import sys
mapf, raw, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
holes = [(int(a), int(b)) for a, b in zip(sys.argv[4::2], sys.argv[5::2])]
ext = []
pos = 0
for line in open(mapf):
    off, ln, kind = line.split()
    off, ln = int(off), int(ln)
    if off != pos or ln <= 0:
        sys.exit("map not contiguous at %d: %s" % (pos, line.strip()))
    ext.append((off, off + ln, kind))
    pos = off + ln
if pos != size:
    sys.exit("map ends at %d, size %d" % (pos, size))
data = open(raw, "rb").read()
for s, e, kind in ext:
    if kind != "data" and data[s:e].count(0) != e - s:
        sys.exit("%s extent %d-%d holds nonzero bytes" % (kind, s, e))
for hs, he in holes:
    for s, e, kind in ext:
        if s < he and e > hs and kind == "data":
            sys.exit("range %d-%d should be a hole, map says data %d-%d"
                     % (hs, he, s, e))
EOF
}

echo "== (a) qemu-nbd -r, unix socket, qcow2"
qemu-img create -q -f qcow2 -o cluster_size=65536 a.qcow2 64M || exit 1
qemu-io -f qcow2 a.qcow2 \
  -c "write -P 0x5a 0 1M" -c "write -P 0x11 3M 64k" \
  -c "write -z 4M 2M" -c "write -P 0x33 8M 4M" -c "discard 9M 1M" \
  -c "write -P 0x44 20M 512" -c "write -P 0x55 $((64 * MiB - 4096)) 4096" \
  >/dev/null || exit 1
qemu-img convert -f qcow2 -O raw a.qcow2 a.raw || exit 1
qnbd a --socket="$tmp/a.sock" -r -f qcow2 a.qcow2 || exit 1
A="nbd+unix:///?socket=$tmp/a.sock"
# The short timeout, where nbd URIs take one.
T=30
if vdcat -i "$A&timeout=5" >/dev/null 2>&1; then
  T=3
  AT="$A&timeout=$T"
else
  echo "NOTE: no timeout= on nbd+unix URIs: the stalled read waits ${T} s"
  AT=$A
fi

info=$(vdcat -i "$A") || fail "(a) vd-cat -i"
[ "$info" = "$(printf 'format nbd\nsize %d' $((64 * MiB)))" ] ||
  fail "(a) vd-cat -i says: $info"
if vdcat "$A" > a.out && cmp a.out a.raw; then
  pass "(a) bytes equal qemu-img convert"
else
  fail "(a) bytes differ from qemu-img convert"
fi
if vdcat -b 65537 "$A" | cmp - a.raw; then
  pass "(a) read in 65537-byte pieces"
else
  fail "(a) bytes differ when read in 65537-byte pieces"
fi
if vdcat -m "$A" > a.map &&
   check_map a.map a.raw $((64 * MiB)) $((1 * MiB)) $((3 * MiB)) \
     $((12 * MiB)) $((20 * MiB)) $((21 * MiB)) $((63 * MiB)); then
  pass "(a) extent map: data covers every nonzero byte, holes where never written"
else
  fail "(a) extent map wrong: $(tr '\n' ';' < a.map)"
fi
grep -q "hole" a.map || fail "(a) no hole in the map"
head -c $MiB /dev/urandom > small.raw
if vdcat -w small.raw "$A" 2> ro.err; then
  fail "(a) writing to a read-only export succeeded"
elif grep -q "read-only" ro.err; then
  pass "(a) writing to a read-only export refused"
else
  fail "(a) writing to a read-only export: $(cat ro.err)"
fi

echo "== (b) (${SECONDS} s) nbdkit: file plugin (bytes, holes), memory plugin (writes)"
cp --sparse=always a.raw b.raw
kit b "$tmp/b.sock" file b.raw || exit 1
B="nbd+unix:///?socket=$tmp/b.sock"
if vdcat "$B" | cmp - b.raw; then
  pass "(b) nbdkit file: bytes equal the file"
else
  fail "(b) nbdkit file: bytes differ"
fi
if vdcat -m "$B" > b.map &&
   check_map b.map b.raw $((64 * MiB)) $((21 * MiB)) $((63 * MiB)); then
  pass "(b) nbdkit file: extent map"
else
  fail "(b) nbdkit file: extent map wrong: $(tr '\n' ';' < b.map)"
fi

kit m "$tmp/m.sock" memory 8M || exit 1
M="nbd+unix:///?socket=$tmp/m.sock"
head -c $((8 * MiB)) /dev/urandom > rand.raw
{
  head -c $MiB /dev/urandom
  head -c $((2 * MiB)) /dev/zero        # aligned zero run
  head -c 1000 /dev/urandom
  head -c 70000 /dev/zero               # unaligned at both ends
  head -c $((MiB + 5)) /dev/urandom
  head -c $((MiB + 12288)) /dev/zero
  head -c 100 /dev/urandom              # a short tail
} > w.raw
wsize=$(stat -c %s w.raw)
{ cat w.raw; tail -c +$((wsize + 1)) rand.raw; } > w.expect
if vdcat -w rand.raw "$M" && vdcat -w w.raw "$M"; then
  if vdcat "$M" | cmp - w.expect; then
    pass "(b) nbdkit memory: written bytes (zero runs over data) read back"
  else
    fail "(b) nbdkit memory: bytes read back differ"
  fi
  if vdcat -m "$M" > m.map && check_map m.map w.expect $((8 * MiB)) \
       $((MiB + 4096)) $((3 * MiB - 4096)); then
    pass "(b) nbdkit memory: zero runs are holes"
  else
    fail "(b) nbdkit memory: map wrong: $(tr '\n' ';' < m.map)"
  fi
else
  fail "(b) vd-cat -w to nbdkit memory failed"
fi

echo "== (c) (${SECONDS} s) qemu-nbd over TCP on 127.0.0.1, named export"
ok=false
for try in 1 2 3; do
  port=$(python3 -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if qnbd c -b 127.0.0.1 -p "$port" -x disk1 -r -f qcow2 a.qcow2 2>c.err
  then
    ok=true
    break
  fi
done
if ! $ok; then
  fail "(c) qemu-nbd on TCP did not start: $(cat c.err)"
else
  if vdcat "nbd://127.0.0.1:$port/disk1" | cmp - a.raw; then
    pass "(c) TCP: bytes equal qemu-img convert"
  else
    fail "(c) TCP: bytes differ"
  fi
  if vdcat -i "nbd://127.0.0.1:$port/nosuch" >/dev/null 2>c2.err; then
    fail "(c) an unknown export opened"
  else
    grep -q "nbd://127.0.0.1:$port/nosuch" c2.err ||
      fail "(c) unknown export: no log line naming it: $(cat c2.err)"
    pass "(c) an unknown export fails"
  fi
fi

echo "== (d) (${SECONDS} s) nbdkit filters: block sizes, no zero/extents, errors"
# A server that refuses (EINVAL) requests not aligned to 4 KiB or over
# 256 KiB: writes of partial blocks and reads in odd pieces and in pieces
# larger than its maximum.
kit e1 "$tmp/e1.sock" --filter=blocksize-policy memory 8M \
  blocksize-minimum=4096 blocksize-maximum=256K \
  blocksize-error-policy=error || exit 1
E1="nbd+unix:///?socket=$tmp/e1.sock"
if vdcat -w rand.raw "$E1" && vdcat -b 4096 -w w.raw "$E1" &&
   vdcat -b 65537 "$E1" | cmp - w.expect &&
   vdcat -b $((4 * MiB)) "$E1" | cmp - w.expect; then
  pass "(d) 4 KiB minimum, 256 KiB maximum block size: bytes written and read back"
else
  fail "(d) block size constraints: bytes differ"
fi
# No WRITE_ZEROES (zeros written as data) and no base:allocation (all data).
kit e2 "$tmp/e2.sock" --filter=nozero --filter=noextents memory 8M || exit 1
E2="nbd+unix:///?socket=$tmp/e2.sock"
if vdcat -w rand.raw "$E2" && vdcat -w w.raw "$E2" &&
   vdcat "$E2" | cmp - w.expect; then
  pass "(d) a server without zero: zeros written as data"
else
  fail "(d) a server without zero: bytes differ"
fi
[ "$(vdcat -m "$E2")" = "0 $((8 * MiB)) data" ] ||
  fail "(d) a server without base:allocation: map $(vdcat -m "$E2" | head -3)"
# Errors the server answers (the connection stays).
kit e3 "$tmp/e3.sock" --filter=error file b.raw error-pread=EIO \
  error-pread-rate=100% error-pread-file="$tmp/inject" || exit 1
E3="nbd+unix:///?socket=$tmp/e3.sock"
touch inject
if vdcat "$E3" > /dev/null 2> e3.err; then
  fail "(d) an injected read error went unnoticed"
elif grep -q "the server answered: Input/output error" e3.err; then
  pass "(d) a read error the server answers: EIO, logged"
else
  fail "(d) injected read error: $(cat e3.err)"
fi
rm -f inject
vdcat "$E3" | cmp -s - b.raw || fail "(d) reads after the injected errors"

echo "== (e) errors (${SECONDS} s): stalled, killed, restarted server"
apid=$(cat a.pid)
# Stalled: a read in flight when the server stops answering.
"$VDCAT" -r 0 "$AT" > d1.out 2> d1.err &
vp=$!
bgpids+=("$vp")
if ! wait_lines d1.out 1; then
  fail "(e) no pass before the server was stopped"
else
  kill -STOP "$apid"
  start=$SECONDS
  if wait_gone "$vp" $((T + 8)); then
    wait "$vp"
    rc=$?
    took=$((SECONDS - start))
    if [ "$rc" = 1 ] && grep -q "no answer" d1.err &&
       [ "$took" -ge $((T - 1)) ]; then
      pass "(e) a stalled server fails the read after ${took} s (timeout ${T} s)"
    else
      fail "(e) stalled server: exit $rc after ${took} s: $(cat d1.err)"
    fi
  else
    fail "(e) stalled server: vd-cat still waiting after $((T + 8)) s"
    kill -9 "$vp"
  fi
  kill -CONT "$apid"
fi
vdcat "$A" | cmp -s - a.raw || fail "(e) server resumed: bytes differ"

# Restarted while vd-cat keeps the disk open: reconnected, no failed pass.
"$VDCAT" -r 0 -u stop2 "$A" > d2.out 2> d2.err &
vp=$!
bgpids+=("$vp")
if wait_lines d2.out 1; then
  kill -STOP "$vp"
  # SIGKILL: qemu-nbd does not exit on SIGTERM while a client (stopped
  # here) is connected.
  apid=$(cat a.pid)
  kill -9 "$apid"
  wait_gone "$apid" 5
  rm -f a.pid a.sock
  qnbd a --socket="$tmp/a.sock" -r -f qcow2 a.qcow2 || exit 1
  kill -CONT "$vp"
  n=$(wc -l < d2.out)
  wait_lines d2.out $((n + 2)) || fail "(e) no pass after the restart"
  touch stop2
  wait "$vp"
  rc=$?
  crcs=$(awk '{ print $2 }' d2.out | sort -u)
  if [ "$rc" = 0 ] && [ "$(echo "$crcs" | wc -l)" = 1 ] && [ ! -s d2.err ]
  then
    pass "(e) server restarted under an open disk: $(wc -l < d2.out) passes, all equal"
  else
    fail "(e) server restart: exit $rc, crcs $crcs, $(cat d2.err)"
  fi
else
  fail "(e) no pass before the restart"
fi

# Killed while vd-cat reads: EIO and a log line, promptly.
"$VDCAT" -r 0 "$A" > d3.out 2> d3.err &
vp=$!
bgpids+=("$vp")
if wait_lines d3.out 1; then
  kill -9 "$(cat a.pid)"
  start=$SECONDS
  if wait_gone "$vp" 10; then
    wait "$vp"
    rc=$?
    if [ "$rc" = 1 ] && grep -q "nbd: nbd+unix:///?socket=$tmp/a.sock" d3.err &&
       grep -q "Input/output error" d3.err; then
      pass "(e) a killed server: EIO after $((SECONDS - start)) s"
    else
      fail "(e) killed server: exit $rc: $(cat d3.err)"
    fi
  else
    fail "(e) killed server: vd-cat still running after 10 s"
  fi
  wait_gone "$(cat a.pid)" 5
  rm -f a.pid a.sock
else
  fail "(e) no pass before the kill"
fi
# And a new run once it is back.
qnbd a --socket="$tmp/a.sock" -r -f qcow2 a.qcow2 || exit 1
if vdcat "$A" | cmp -s - a.raw; then
  pass "(e) server back: a new run reads it"
else
  fail "(e) server back: bytes differ"
fi

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all passed (${SECONDS} s)"
exit 0
