#!/bin/bash
# vmdiskfs - an iSCSI LUN as a libvirt domain's disk, with a real target
# on this machine (tgtd on 127.0.0.1, a file LUN, thin provisioned) and
# CHAP, its password in a libvirt secret (usage type iscsi):
#  - vda.img against the LUN's file, holes where the file has them;
#  - a restore by cp while shut off reaches the file, zeros as holes;
#  - a disk whose secret holds a wrong password: shown, EIO, logged
#    without the password.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
for c in tgtd tgtadm; do
  if ! command -v "$c" >/dev/null 2>&1; then
    [ "${CI:-}" = true ] && fail "$c is not installed (CI)"
    skip "$c is not installed"
  fi
done
require python3 uuidgen
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
W=$TEST_DIR/w
mkdir -p "$W"

# tgtd on a control port and a TCP port of its own.
ctl=
for ((i = 0; i < 50; i++)); do
  n=$((2000 + RANDOM % 30000))
  [ -e "/var/run/tgtd/socket.$n" ] || { ctl=$n; break; }
done
[ -n "$ctl" ] || fail "no free tgtd control port"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tgtadm_ () { tgtadm -C "$ctl" --lld iscsi "$@"; }
tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$port" >>"$W/tgtd.log" 2>&1 &
tgtd_pid=$!
stop_tgtd ()
{
  # tgtd ignores SIGTERM while it has targets (TESTING.md).
  kill -CONT "$tgtd_pid" 2>/dev/null
  timeout 10 tgtadm -C "$ctl" --lld iscsi --mode target --op delete --force \
    --tid 1 >/dev/null 2>&1
  timeout 10 tgtadm -C "$ctl" --mode system --op delete >/dev/null 2>&1
  wait_for 5 sh -c "! kill -0 $tgtd_pid 2>/dev/null" || kill -9 "$tgtd_pid" 2>/dev/null
  wait "$tgtd_pid" 2>/dev/null
  rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
}
on_exit stop_tgtd
wait_for 10 tgtadm_ --mode system --op show >/dev/null 2>&1 ||
  fail "tgtd did not answer: $(cat "$W/tgtd.log")"

IQN=iqn.2026-12.org.vmdiskfs.test:$P
LUN=$W/lun.img
truncate -s 32M "$LUN"
head -c 2M /dev/urandom | dd of="$LUN" bs=1M seek=2 conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$LUN" bs=1M seek=20 conv=notrunc status=none
cp --sparse=always "$LUN" "$W/orig.img"
PASS_OK=s3cr3t-$RANDOM
tgtadm_ --mode target --op new --tid 1 --targetname "$IQN" || fail "target"
tgtadm_ --mode logicalunit --op new --tid 1 --lun 1 --backing-store "$LUN" ||
  fail "LUN"
tgtadm_ --mode logicalunit --op update --tid 1 --lun 1 \
  --params thin_provisioning=1 || fail "thin LUN"
tgtadm_ --mode account --op new --user vmd --password "$PASS_OK" || fail "account"
tgtadm_ --mode account --op bind --tid 1 --user vmd || fail "account bind"
tgtadm_ --mode target --op bind --tid 1 --initiator-address ALL || fail "bind"

secret ()                       # USAGE VALUE
{
  local u
  u=$(uuidgen)
  cat >"$W/secret.xml" <<XML
<secret ephemeral='no' private='no'>
  <uuid>$u</uuid>
  <usage type='iscsi'><target>$1</target></usage>
</secret>
XML
  lv_virsh secret-define "$W/secret.xml" >/dev/null || fail "secret-define $1"
  _secrets+=("$u")
  printf '%s' "$2" >"$W/value"
  lv_virsh secret-set-value "$u" --file "$W/value" --plain >/dev/null ||
    fail "secret-set-value $1"
  rm -f "$W/value"
}
_secrets=()
undefine_secrets () { local u; for u in "${_secrets[@]}"; do lv_virsh secret-undefine "$u" >/dev/null 2>&1; done; }
on_exit undefine_secrets
secret "$P-ok" "$PASS_OK"
secret "$P-bad" "wrong-$PASS_OK"

src ()                          # USAGE
{
  printf "%s" "<source protocol='iscsi' name='$IQN/1'><host name='127.0.0.1' port='$port'/><auth username='vmd'><secret type='iscsi' usage='$1'/></auth></source>"
}
D=$P-iscsi
lv_define "$D" "net:vda:$(src "$P-ok")"
BAD=$P-bad
lv_define "$BAD" "net:vda:$(src "$P-bad")"
lv_mount "$MNT" -o net_timeout=10

V=$MNT/$D/vda.img
check "vda.img differs from the LUN's file" same_bytes "$V" "$W/orig.img"
check "vda.img: size" eq "$(stat -c %s "$V")" $((32 << 20))
covered=$(data_ranges "$V" | awk '{ n += $2 - $1 } END { print n + 0 }')
check "vda.img: data ranges cover $covered bytes (3 MiB in 32 MiB)" \
  test "$covered" -ge $((3 << 20)) -a "$covered" -le $((8 << 20))
err=$(read_errno "$MNT/$BAD/vda.img")
check "a disk with a wrong CHAP password gave '$err', not EIO" eq "$err" EIO
check "the wrong password is in the log" \
  sh -c "! grep -q -- 'wrong-$PASS_OK' '$(vmdiskfs_log "$MNT")'"

# Restore while shut off.
truncate -s 32M "$W/new.img"
head -c 3M /dev/urandom | dd of="$W/new.img" bs=1M seek=8 conv=notrunc status=none
check "cp of a backup over vda.img failed" cp "$W/new.img" "$V"
check "after cp: the LUN's file differs from the backup" same_bytes "$LUN" "$W/new.img"
alloc=$(du -k "$LUN" | cut -f1)
check "after cp: the LUN's file holds $alloc KiB (3 MiB of data: zeros unmapped)" \
  test "$alloc" -le $((6 << 10))
echo 3 > /proc/sys/vm/drop_caches
check "after cp: vda.img differs from the backup" same_bytes "$V" "$W/new.img"

lv_alive "$MNT"
if [ "$failures" -ne 0 ]; then
  tail -40 "$(vmdiskfs_log "$MNT")" >&2
  fail "$failures checks failed"
fi
echo "PASS"
