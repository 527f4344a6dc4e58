#!/bin/bash
# vmdiskfs - the LVM snapshot provider against real LVM, inside the test
# guest (run it through tests/lvm/guest.sh; tests/integration/lvm-guest.sh
# does).  A linear LV with classic snapshots, a thin LV with thin
# snapshots: snapshotter/vd-lvm-list must list exactly those, with their
# origins, names (prefix rule, vmdiskfs-name: tag, collisions), times,
# sizes and flags, from every spelling of the disk's path; a thin snapshot
# reads right after activate and is gone after deactivate; create and
# remove work (classic and thin, tagged as ours); and every call leaves the
# process's umask, signal dispositions and mask alone (vd-lvm-list -c),
# since liblvm2cmd runs in the helper child only.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
start=$(date +%s)
. "$abs_top_srcdir/tests/lvm/guest-lib.sh"

list=$abs_top_builddir/snapshotter/vd-lvm-list
[ -x "$list" ] || fail "$list not built"
vdl () { "$list" -c "$@"; }
ok () { echo "ok: $* (at $(( $(date +%s) - start ))s)"; }

# The data of each version: 1 MiB of a repeated word.
pattern () { yes "$1" | head -c 1M; }
put () { pattern "$1" | dd of="$2" bs=1M conv=fsync status=none || fail "writing $2"; }
same () { cmp <(head -c 1M "$1") <(pattern "$2") || fail "$1 does not hold $2"; }

# Compare vd-lvm-list's lines (NAME ID ORIGIN DEVICE CTIME SIZE FLAGS)
# without CTIME against the expected ones; CTIME must lie in [t0, now].
expect_list () {   # DISK, then expected lines on stdin
  local out got want
  out=$(vdl "$1") || fail "vd-lvm-list $1 failed"
  got=$(printf '%s\n' "$out" | cut -f1-4,6-7)
  want=$(cat)
  if [ "$got" != "$want" ]; then
    echo "vd-lvm-list $1 gave:"; printf '%s\n' "$out"
    echo "expected (without ctime):"; printf '%s\n' "$want"
    fail "wrong list for $1"
  fi
  local now t
  now=$(date +%s)
  for t in $(printf '%s\n' "$out" | cut -f5); do
    [ "$t" -ge "$t0" ] && [ "$t" -le "$now" ] || fail "ctime $t not in [$t0, $now]"
  done
  ok "list $1 ($(printf '%s' "$out" | grep -c '^') snapshots)"
}

setup_lvm
t0=$(date +%s)
M=1048576

# ---- classic ---------------------------------------------------------------
run lvcreate -q -n disk1 -L 64M vg0
put disk1-v1 /dev/vg0/disk1
run lvcreate -q -s -n disk1-nightly -L 16M vg0/disk1
sleep 1                          # distinct creation times: list order
put disk1-v2 /dev/vg0/disk1
run lvcreate -q -s -n other -L 16M --addtag vmdiskfs-name:weekly vg0/disk1
sleep 1
run lvcreate -q -s -n disk1-dup -L 8M --addtag vmdiskfs-name:nightly vg0/disk1
put disk1-v3 /dev/vg0/disk1

T=$'\t'
classic="nightly${T}vg0/disk1-nightly${T}vg0/disk1${T}/dev/vg0/disk1-nightly${T}$((64*M))${T}active
weekly${T}vg0/other${T}vg0/disk1${T}/dev/vg0/other${T}$((64*M))${T}active
disk1-dup${T}vg0/disk1-dup${T}vg0/disk1${T}/dev/vg0/disk1-dup${T}$((64*M))${T}active"
expect_list /dev/vg0/disk1 <<< "$classic"
expect_list /dev/mapper/vg0-disk1 <<< "$classic"
ln -s /dev/vg0/disk1 /tmp/disk-link
expect_list /tmp/disk-link <<< "$classic"
dm=/dev/dm-$(lv_field vg0/disk1 lv_kernel_minor)    # devtmpfs names it
[ -b "$dm" ] && expect_list "$dm" <<< "$classic"
same /dev/vg0/disk1-nightly disk1-v1
same /dev/vg0/other disk1-v2
same /dev/vg0/disk1-dup disk1-v2
expect_list /dev/vg0/disk1-nightly < /dev/null    # a snapshot has none

# An inactive origin: its classic snapshots are inactive too; activating
# one activates both, deactivating it both again.
run lvchange -an vg0/disk1
expect_list /dev/vg0/disk1 <<< "${classic//${T}active/${T}needs-activation}"
run vdl activate /dev/vg0/disk1 weekly
same /dev/vg0/other disk1-v2
[ "$(lv_field vg0/disk1 lv_active)" = active ] || fail "origin not activated"
run vdl deactivate /dev/vg0/disk1 weekly
[ -z "$(lv_field vg0/disk1 lv_active)" ] || fail "origin still active"
run lvchange -ay vg0/disk1
ok "classic snapshot of an inactive origin"

# ---- thin ------------------------------------------------------------------
setup_thin_pool 192M
run lvcreate -q -V 64M -T vg0/pool -n thin1
put thin-v1 /dev/vg0/thin1
run lvcreate -q -s -n thin1-t1 vg0/thin1
sleep 1
put thin-v2 /dev/vg0/thin1
run lvcreate -q -s -n t2 --addtag vmdiskfs vg0/thin1
put thin-v3 /dev/vg0/thin1

thin="t1${T}vg0/thin1-t1${T}vg0/thin1${T}/dev/vg0/thin1-t1${T}$((64*M))${T}thin,needs-activation
t2${T}vg0/t2${T}vg0/thin1${T}/dev/vg0/t2${T}$((64*M))${T}thin,ours,needs-activation"
expect_list /dev/vg0/thin1 <<< "$thin"
[ ! -e /dev/vg0/thin1-t1 ] || fail "thin snapshot active before activate"

out=$(vdl activate /dev/vg0/thin1 t1) || fail "activate t1"
case $out in *"${T}thin,active") ;; *) fail "activate printed: $out" ;; esac
[ -b /dev/vg0/thin1-t1 ] || fail "no /dev/vg0/thin1-t1 after activate"
same /dev/vg0/thin1-t1 thin-v1
expect_list /dev/vg0/thin1 <<< "${thin/thin,needs-activation/thin,active}"
run vdl deactivate /dev/vg0/thin1 t1
[ ! -e /dev/vg0/thin1-t1 ] && [ ! -e /dev/mapper/vg0-thin1--t1 ] ||
  fail "thin1-t1 still there after deactivate"
expect_list /dev/vg0/thin1 <<< "$thin"
run vdl activate /dev/vg0/thin1 t2
same /dev/vg0/t2 thin-v2
run vdl deactivate /dev/vg0/thin1 t2
ok "activate/deactivate"

# ---- create and remove (issue 4) ------------------------------------------
out=$(vdl create /dev/vg0/disk1 daily) || fail "create classic"
echo "$out"
case $out in
  "daily${T}vg0/disk1-daily${T}vg0/disk1${T}/dev/vg0/disk1-daily${T}"*"${T}ours,active") ;;
  *) fail "create classic printed: $out" ;;
esac
same /dev/vg0/disk1-daily disk1-v3
# the size policy: 20% of 64M is below the 64 MiB floor: 64M of COW
[ "$(lv_field vg0/disk1-daily lv_size)" = $((64*M)) ] || fail "COW size policy"
vdl create /dev/vg0/disk1 daily && fail "create: an existing name accepted"
out=$(vdl create /dev/vg0/disk1 small $((4*M))) || fail "create with COW size"
[ "$(lv_field vg0/disk1-small lv_size)" = $((4*M)) ] || fail "COW size asked"

out=$(vdl create /dev/vg0/thin1 'before:upgrade') || fail "create thin, tagged name"
echo "$out"
case $out in
  "before:upgrade${T}vg0/thin1-vdsnap-"*"${T}vg0/thin1${T}"*"${T}thin,ours,needs-activation") ;;
  *) fail "create thin printed: $out" ;;
esac
vdl create /dev/vg0/thin1 'no space' && fail "create: a name with a blank accepted"

run vdl remove /dev/vg0/disk1 daily
run vdl remove /dev/vg0/thin1 before:upgrade
lvs vg0/disk1-daily >/dev/null 2>&1 && fail "disk1-daily still there"
expect_list /dev/vg0/thin1 <<< "$thin"
ok "create/remove"

# ---- an overflowing classic snapshot is flagged invalid --------------------
put disk1-v4 /dev/vg0/disk1                   # 1 MiB into 4 MiB COW: fine
dd if=/dev/urandom of=/dev/vg0/disk1 bs=1M count=8 seek=8 conv=fsync status=none
vdl /dev/vg0/disk1 | grep -q "^small${T}.*${T}ours,invalid\$" ||
  { vdl /dev/vg0/disk1; fail "overflowed snapshot not flagged invalid"; }
ok "invalid snapshot flagged"

# ---- errors -------------------------------------------------------------------
vdl /dev/vdb 2>/tmp/err && fail "a disk that is no LV accepted"
grep -q "not supported" /tmp/err || { cat /tmp/err; fail "no ENOTSUP for /dev/vdb"; }
echo x > /tmp/image.qcow2
vdl /tmp/image.qcow2 2>/tmp/err && fail "an image file accepted"
grep -q "not supported" /tmp/err || { cat /tmp/err; fail "no ENOTSUP for a file"; }
vdl /nonexistent 2>/tmp/err && fail "a missing disk accepted"
grep -q "No such file" /tmp/err || { cat /tmp/err; fail "no ENOENT for /nonexistent"; }
ok "errors"

# ---- several disks, one lvs ---------------------------------------------------
{
  for d in /dev/vg0/disk1 /dev/vg0/thin1 /tmp/image.qcow2; do
    echo "# $d"
    vdl "$d" 2>/dev/null
  done
} | sed 's|^# /tmp/image.qcow2$|# /tmp/image.qcow2: Operation not supported|' > /tmp/one-by-one
vdl /dev/vg0/disk1 /dev/vg0/thin1 /tmp/image.qcow2 > /tmp/many ||
  fail "vd-lvm-list with several disks failed"
diff /tmp/one-by-one /tmp/many || fail "list_many differs from list"
ok "several disks at once"

echo "lvm-list: all ok in $(( $(date +%s) - start ))s"
