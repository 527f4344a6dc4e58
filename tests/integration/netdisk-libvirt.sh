#!/bin/bash
# vmdiskfs - network disks of libvirt domains, with real servers on this
# machine (TESTING.md, "Network storage"): a domain whose disks are
#  - an nbdkit export of a sparse raw file over a unix socket (vda),
#  - a qemu-nbd export of a qcow2 image over TCP on 127.0.0.1 (vdb),
# shown as files: bytes against the exported file (and qemu-img's
# conversion), holes (SEEK_DATA) where the export has them, a restore by
# cp while the domain is shut off written through to the server; a
# server that stops answering (SIGSTOP) fails reads of its disk with EIO
# after -o net_timeout while the rest of the mount answers, and reads
# work again once it answers.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require nbdkit qemu-nbd qemu-img python3
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
W=$TEST_DIR/net
mkdir -p "$W"
chmod 755 "$W"

# ---- the servers ----
RAW=$W/a.raw
truncate -s 64M "$RAW"
head -c 3M /dev/urandom | dd of="$RAW" bs=1M seek=1 conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$RAW" bs=1M seek=40 conv=notrunc status=none
SOCK=$W/nbdkit.sock
NBDKIT_PID=$W/nbdkit.pid
start_nbdkit ()
{
  rm -f "$SOCK"
  nbdkit -U "$SOCK" -P "$NBDKIT_PID" file "$RAW" ||
    fail "nbdkit did not start"
  wait_for 10 test -S "$SOCK" || fail "nbdkit's socket did not appear"
}
stop_pidfile ()                 # PIDFILE: kill, and wait until it is gone
{
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill -CONT "$pid" 2>/dev/null
  kill "$pid" 2>/dev/null
  # Reparented to PID 1 here: a zombie until reaped (TESTING.md).
  wait_for 10 sh -c "! kill -0 $pid 2>/dev/null || grep -q '^State:.*Z' /proc/$pid/status" ||
    kill -9 "$pid" 2>/dev/null
  rm -f "$1"
}
start_nbdkit
on_exit "stop_pidfile $NBDKIT_PID"

Q=$W/b.qcow2
qemu-img create -q -f qcow2 "$Q" 32M
qemu-io -c 'write -P 0x5a 0 2M' -c 'write -z 8M 1M' -c 'write -P 0x33 20M 512k' \
  "$Q" >/dev/null
QNBD_PID=$W/qemu-nbd.pid
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
qemu-nbd --fork --persistent -f qcow2 -b 127.0.0.1 -p "$PORT" -x exp -e 4 \
  --pid-file="$QNBD_PID" "$Q" || fail "qemu-nbd did not start"
on_exit "stop_pidfile $QNBD_PID"

D=$P-nbd
lv_define "$D" \
  "net:vda:<source protocol='nbd'><host transport='unix' socket='$SOCK'/></source>" \
  "net:vdb:<source protocol='nbd' name='exp'><host name='127.0.0.1' port='$PORT'/></source>"
lv_mount "$MNT" -o net_timeout=3

V=$MNT/$D/vda.img
B=$MNT/$D/vdb.img
check "vda.img: size $(stat -c %s "$V" 2>&1)" eq "$(stat -c %s "$V" 2>&1)" $((64 << 20))
check "vda.img differs from the exported file" same_bytes "$V" "$RAW"
qemu-img convert -U -O raw "$Q" "$W/b.oracle"
check "vdb.img differs from qemu-img convert of the qcow2" same_bytes "$B" "$W/b.oracle"
check "vdb.img: size" eq "$(stat -c %s "$B")" $((32 << 20))
# No server time: the scan's, recent (never 0, which rsync would trust).
mt=$(stat -c %Y "$V")
check "vda.img: mtime $mt is not within the last hour" \
  test "$mt" -gt $(( $(date +%s) - 3600 )) -a "$mt" -le $(( $(date +%s) + 5 ))

# Holes: the data ranges cover every nonzero byte and leave out most of
# the 64 MiB (the file plugin reports the sparse file's holes).
ranges=$(data_ranges "$V" | tr '\n' ' ')
covered=$(data_ranges "$V" | awk '{ n += $2 - $1 } END { print n + 0 }')
check "vda.img: data ranges '$ranges' cover $covered bytes, not ~4 MiB" \
  test "$covered" -ge $((4 << 20)) -a "$covered" -le $((16 << 20))
hole50=$(python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); print(os.lseek(fd, 50 << 20, os.SEEK_HOLE))' "$V")
check "vda.img: 50 MiB is no hole (SEEK_HOLE gave $hole50): '$ranges'" \
  eq "$hole50" $((50 << 20))
cp --sparse=always "$V" "$W/copy"
check "cp --sparse of vda.img differs" same_bytes "$W/copy" "$RAW"
check "cp --sparse of vda.img is not sparse: $(du -k "$W/copy" | cut -f1) KiB" \
  test "$(du -k "$W/copy" | cut -f1)" -le $((16 << 10))

# Restore while shut off: the new bytes reach the server's file.
NEW=$W/new.raw
truncate -s 64M "$NEW"
head -c 2M /dev/urandom | dd of="$NEW" bs=1M seek=10 conv=notrunc status=none
check "cp of a backup over vda.img failed" cp "$NEW" "$V"
sync "$V" 2>/dev/null
check "after cp: the exported file differs from the backup" same_bytes "$RAW" "$NEW"
echo 3 > /proc/sys/vm/drop_caches
check "after cp: vda.img differs from the backup" same_bytes "$V" "$NEW"

# A server that stops answering: reads of its disk fail after the
# timeout, the rest of the mount answers meanwhile.
echo 3 > /proc/sys/vm/drop_caches
kill -STOP "$(cat "$NBDKIT_PID")"
t0=$(date +%s%N)
err=$(read_errno "$V")
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
check "a read of vda.img with its server stopped gave '$err', not EIO" eq "$err" EIO
check "a read of vda.img with its server stopped took $ms ms (timeout 3 s)" \
  test "$ms" -lt 20000
( sleep 1; kill -CONT "$(cat "$NBDKIT_PID")" ) &
cont=$!
t0=$(date +%s%N)
timeout 10 cat "$MNT/$D/domain.xml" >/dev/null
check "domain.xml could not be read while vda's server was stopped" test $? -eq 0
timeout 10 ls "$MNT/$D" >/dev/null
check "ls of the domain failed while vda's server was stopped" test $? -eq 0
wait "$cont"                    # not a bare wait: lv_start's lock holder
sleep 6                         # past the reconnect backoff
echo 3 > /proc/sys/vm/drop_caches
check "vda.img after its server answers again differs" same_bytes "$V" "$NEW"

# The server gone and back (a restart): reads fail, then work again.
stop_pidfile "$NBDKIT_PID"
echo 3 > /proc/sys/vm/drop_caches
err=$(read_errno "$V")
check "a read of vda.img with its server gone gave '$err', not EIO" eq "$err" EIO
start_nbdkit
sleep 6
echo 3 > /proc/sys/vm/drop_caches
check "vda.img after its server restarted differs" same_bytes "$V" "$NEW"

lv_alive "$MNT"
if [ "$failures" -ne 0 ]; then
  tail -40 "$(vmdiskfs_log "$MNT")" >&2
  fail "$failures checks failed"
fi
echo "PASS"
