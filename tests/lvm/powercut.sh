#!/bin/bash
# vmdiskfs - the writer of the power-cut test (issue 9), inside the test
# guest; tests/integration/powercut.sh runs it through tests/lvm/guest.sh
# with VD_GUEST_DISK (an ext4 file system holding imgs/IMAGE, /dev/vdc
# here) and VD_GUEST_KILL, and checks the image after the guest is killed.
#
#   powercut.sh IMAGE NEWDATA ORDER ZEROS BATCH
#
# Mounts /dev/vdc (ext4) and vmdiskfs in images mode over its imgs/, then
# one process holding IMAGE/disk.img open writes 1 MiB pieces in ORDER
# (comma-separated piece numbers): piece P gets NEWDATA's piece P, or
# zeros when P is in ZEROS (comma-separated).  After every BATCH pieces
# (and after the last) it calls fsync and prints "VD-PC DURABLE P..." with
# the pieces written since the previous fsync: those must read back after
# the power cut.  "VD-PC GO" is printed before the first write (the host
# kills the guest some time after it), "VD-PC START P" before each write,
# "VD-PC DONE SECONDS" at the end (SECONDS since GO).
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it.
{
. "$abs_top_srcdir/tests/lvm/guest-lib.sh"
VMDISKFS=$abs_top_builddir/vmdiskfs
[ -x "$VMDISKFS" ] || fail "$VMDISKFS not built"
[ -c /dev/fuse ] || skip "no /dev/fuse in the guest"
[ -b /dev/vdc ] || fail "no /dev/vdc: run through guest.sh with VD_GUEST_DISK"
[ $# = 5 ] || fail "usage: powercut.sh IMAGE NEWDATA ORDER ZEROS BATCH"
img=$1 new=$2 order=$3 zeros=$4 batch=$5

mkdir -p /tmp/e /tmp/mnt /tmp/staging
chmod 700 /tmp/staging
run mount -t ext4 /dev/vdc /tmp/e
"$VMDISKFS" -f -o images=/tmp/e/imgs,pidfile=/tmp/pid,staging=/tmp/staging \
  /tmp/mnt >/tmp/vmdiskfs.log 2>&1 &
for i in $(seq 100); do [ -s /tmp/pid ] && break; sleep 0.1; done
[ -s /tmp/pid ] || { cat /tmp/vmdiskfs.log; fail "mount did not answer"; }
D=/tmp/mnt/$img/disk.img
[ -f "$D" ] || { ls -lR /tmp/mnt; cat /tmp/vmdiskfs.log; fail "no $D"; }

python3 - "$D" "$new" "$order" "$zeros" "$batch" <<'EOF' ||
import os, sys, time
disk, new, order, zeros, batch = sys.argv[1:]
order = [int(p) for p in order.split(",")]
zeros = {int(p) for p in zeros.split(",") if p}
batch = int(batch)
M = 1 << 20
fd = os.open(disk, os.O_WRONLY)
src = os.open(new, os.O_RDONLY)
zero = bytes(M)
print("VD-PC GO", flush=True)
t0 = time.monotonic()
pending = []
for i, p in enumerate(order):
    print("VD-PC START %d" % p, flush=True)
    data = zero if p in zeros else os.pread(src, M, p * M)
    if os.pwrite(fd, data, p * M) != M:
        sys.exit("short write at piece %d" % p)
    pending.append(p)
    if len(pending) == batch or i == len(order) - 1:
        os.fsync(fd)
        print("VD-PC DURABLE " + " ".join(map(str, pending)), flush=True)
        pending = []
os.close(fd)
print("VD-PC DONE %.1f" % (time.monotonic() - t0), flush=True)
EOF
  { cat /tmp/vmdiskfs.log; fail "the writer failed"; }
umount /tmp/mnt || fail "umount"
cat /tmp/vmdiskfs.log
exit 0
}
