#!/bin/bash
# vmdiskfs - a read that stalls does not stall the mount (the session
# loop, fs/loop.c).  One thread reads requests and serves reads itself;
# a watchdog hands that role on when a read takes too long.  Here a read
# is made to hang for real: image A is a raw file that lives on a second
# vmdiskfs mount (bind-mounted into A's directory) whose daemon is
# stopped with SIGSTOP, so A's pread of it sleeps in the kernel.  While
# it hangs (20 s at most):
#  - ls and stat of the mount, and a 4k read and a 1 MiB read of another
#    image of the same mount, answer, with the right bytes, and the
#    daemon's threads do not grow while it hangs;
#  - with 12 more reads stalled the threads stay bounded (max_threads=4
#    stuck readers at most: then the mount waits, as libfuse's loop
#    would);
#  - after SIGCONT the hung reads complete with the right bytes;
#  - SIGTERM then ends the daemon (the signal reaches whichever thread
#    reads requests by then), and it unmounts cleanly.
# The bound asserted is 10 s against a 20 s stall (no speed is asserted);
# the measured time is printed.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
set -u
require python3 qemu-img qemu-io cmp dd timeout mount umount

# B: serves slow.img (raw, 64 MiB of 0x5a) from its own directory.
mkdir -p "$TEST_DIR/b-dir" "$TEST_DIR/a-dir"
python3 -c '
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b"\x5a" * (64 << 20))' "$TEST_DIR/b-dir/slow.img"
start_vmdiskfs "$TEST_DIR/b" -o "images=$TEST_DIR/b-dir,ro"
bpid=$(vmdiskfs_pid "$TEST_DIR/b")
[ -f "$TEST_DIR/b/slow.img/disk.img" ] || fail "B does not show slow.img"

# A: slow.img is B's disk file, bind-mounted; fast.qcow2 is local.
touch "$TEST_DIR/a-dir/slow.img"
mount --bind "$TEST_DIR/b/slow.img/disk.img" "$TEST_DIR/a-dir/slow.img" \
  || skip "cannot bind-mount a file"
on_exit "kill -CONT $bpid 2>/dev/null; umount -l '$TEST_DIR/a-dir/slow.img' 2>/dev/null"
qemu-img create -q -f qcow2 "$TEST_DIR/a-dir/fast.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0x33 0 32M" "$TEST_DIR/a-dir/fast.qcow2" \
  >/dev/null
start_vmdiskfs "$TEST_DIR/a" -o "images=$TEST_DIR/a-dir,ro,max_threads=4"
A=$TEST_DIR/a
apid=$(vmdiskfs_pid "$A")
[ -f "$A/slow.img/disk.img" ] && [ -f "$A/fast.qcow2/disk.img" ] \
  || fail "A does not show both images"
# Open both once (lookups, probing).  The read that will hang is made by
# a process that opens slow.img now (O_DIRECT: a 4k request, not
# readahead) and reads 4k at an offset nobody has read once told to, so
# that what hangs is A's read of B's file, not an open.
cmp -n 4096 "$A/slow.img/disk.img" "$TEST_DIR/b-dir/slow.img" \
  || fail "slow.img reads wrong before the stall"
# hung_reads TAG N: N threads, each with its own descriptor, read 4k at
# their own offset once TAG.go exists; TAG.rc gets "0" once all read
# right.
hung_reads ()
{
  python3 - "$A/slow.img/disk.img" "$TEST_DIR/$1" "$2" <<'PY' &
import mmap, os, sys, threading, time
path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fds = [os.open(path, os.O_RDONLY | os.O_DIRECT) for _ in range(n)]
open(tag + ".ready", "w").close()
while not os.path.exists(tag + ".go"):
    time.sleep(0.05)
ok = []
def one(i):
    buf = mmap.mmap(-1, 4096)
    off = (9000 + 100 * i + 3000 * ("many" in tag)) * 4096
    if os.preadv(fds[i], [buf], off) == 4096 and buf[:] == b"\x5a" * 4096:
        ok.append(i)
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts:
    t.start()
for t in ts:
    t.join()
open(tag + ".rc", "w").write("0\n" if len(ok) == n else "%d of %d\n" % (len(ok), n))
PY
}
hung_reads hung 1
hung=$!
hung_reads many 12
many=$!
wait_for 10 test -e "$TEST_DIR/hung.ready" || fail "the reader did not open slow.img"
wait_for 10 test -e "$TEST_DIR/many.ready" || fail "the readers did not open slow.img"
kill -STOP "$bpid"
touch "$TEST_DIR/hung.go"
sleep 1
[ -e "$TEST_DIR/hung.rc" ] && fail "the read did not hang (B is stopped)"

t0=$(date +%s%N)
timeout 10 ls "$A" >"$TEST_DIR/ls.out" || fail "ls of the mount hangs"
grep -qx fast.qcow2 "$TEST_DIR/ls.out" || fail "ls: $(cat "$TEST_DIR/ls.out")"
timeout 10 stat "$A/fast.qcow2/disk.img" >/dev/null || fail "stat hangs"
timeout 10 dd if="$A/fast.qcow2/disk.img" of="$TEST_DIR/f4k" bs=4k count=1 \
  skip=100 iflag=direct status=none || fail "a 4k read of fast.qcow2 hangs"
timeout 10 dd if="$A/fast.qcow2/disk.img" of="$TEST_DIR/f1m" bs=1M count=1 \
  skip=5 status=none || fail "a 1 MiB read of fast.qcow2 hangs"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "ls, stat and two reads while a read hangs: $ms ms"
python3 - "$TEST_DIR/f4k" "$TEST_DIR/f1m" <<'PY' || fail "fast.qcow2: wrong bytes"
import sys
assert open(sys.argv[1], "rb").read() == b"\x33" * 4096
assert open(sys.argv[2], "rb").read() == b"\x33" * (1 << 20)
PY
[ -e "$TEST_DIR/hung.rc" ] && fail "the stalled read returned while B was stopped"
# The role is handed on once per stall, not at every look of the
# watchdog: 2 s more of the stall add no threads.
n1=$(ls "/proc/$apid/task" | wc -l)
sleep 2
n2=$(ls "/proc/$apid/task" | wc -l)
echo "threads during the stall: $n1, 2 s later $n2"
[ "$n2" -le "$n1" ] || fail "threads grow during a stall: $n1 -> $n2"
# Twelve more reads that stall: readers are handed the role at most
# max_threads (4) times, so the daemon's threads stay bounded (it has 4
# workers, the watchdog, the main thread and at most 4 stuck readers
# more), however long the stall.
touch "$TEST_DIR/many.go"
sleep 2
n3=$(ls "/proc/$apid/task" | wc -l)
echo "threads with 13 reads stalled: $n3"
[ "$n3" -le 12 ] || fail "threads grow with stalled reads: $n3"
[ -e "$TEST_DIR/hung.rc" ] && fail "the stalled read returned while B was stopped"

kill -CONT "$bpid"
wait_for 10 test -e "$TEST_DIR/hung.rc" || fail "the read did not resume"
[ "$(cat "$TEST_DIR/hung.rc")" = 0 ] || fail "the resumed read failed or read wrong bytes"
wait_for 10 test -e "$TEST_DIR/many.rc" || fail "the 12 reads did not resume"
[ "$(cat "$TEST_DIR/many.rc")" = 0 ] \
  || fail "the resumed reads: $(cat "$TEST_DIR/many.rc") right"
wait "$hung" "$many"

# SIGTERM reaches the daemon whichever thread now reads requests.
umount -l "$TEST_DIR/a-dir/slow.img"
kill -TERM "$apid"
wait_for 10 sh -c "! kill -0 $apid 2>/dev/null" \
  || fail "SIGTERM did not end the daemon"
grep -q " $A " /proc/mounts && fail "$A is still mounted after SIGTERM"
stop_vmdiskfs "$TEST_DIR/b" || fail "B did not stop cleanly"
echo "ok"
