#!/bin/bash
# vmdiskfs - restoring logical volumes by copying back through the mount
# (issue 9), inside the test guest (run it through tests/lvm/guest.sh;
# tests/integration/write-lvm.sh does), with a libvirtd of the guest's own
# and a shut-off domain whose disks are a classic LV (vda) and a thin LV
# (vdb), type='block'.  For each LV:
#
#  - mkdir snapshots/before: an LVM snapshot of the LV holding its first
#    bytes, which every restore below must leave as it was (read through
#    the mount, and the snapshot LV still valid);
#  - cp B D, cp of a mostly-zero backup, dd of=D bs=1M conv=notrunc,
#    rsync -a B DIR/ (staging file + rename, none left behind), tar -xSf:
#    the LV device (cmp) and the disk file hold the backup's bytes;
#  - thin LV: its allocation (lvs data_percent) drops after a mostly-zero
#    backup is restored over a full one (zeros -> BLKZEROOUT -> discard),
#    with cp, dd conv=notrunc and rsync;
#  - a backup longer than the LV: rsync's rename fails with EFBIG and the
#    LV is unchanged; dd conv=notrunc writes what fits, then fails with
#    EFBIG; truncate -s to a larger size fails with EFBIG.
#
#   write-lvm.sh [SNAPSIZE]
# SNAPSIZE (tests/integration/write-lvm.sh passes $VD_WRITE_LVM_SNAPSIZE)
# is given as -o snapsize= when not empty; vmdiskfs's default otherwise.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
# All in one block: bash parses it whole before running it.
{
. "$abs_top_srcdir/tests/lvm/guest-lib.sh"
start=$(date +%s)
VMDISKFS=$abs_top_builddir/vmdiskfs
[ -x "$VMDISKFS" ] || fail "$VMDISKFS not built"
command -v libvirtd >/dev/null || skip "no libvirtd"
command -v rsync >/dev/null || skip "no rsync"
[ -c /dev/fuse ] || skip "no /dev/fuse in the guest"

ok () { echo "ok: $* (at $(( $(date +%s) - start ))s)"; }
M=1048576
SIZE=$((32 * M))
failures=0
# A failed check of a restore: counted, and the test goes on to show
# every result; the exit status says whether any failed.
bad () { echo "FAIL: $*"; failures=$((failures + 1)); }

# Backups, in per-kind directories so that rsync and tar see the disk's
# own name: $1 = directory, $2 = disk name, $3 = word, $4 = what:
# full (the word repeated over the whole size), sparse (1 MiB of the word
# at 0 and at 20 MiB, zeros elsewhere), big (full, 4 MiB longer).
backup () {
  local f=/tmp/bk/$1/$2.img
  mkdir -p "/tmp/bk/$1"
  case $4 in
    full) yes "$3" | head -c $SIZE > "$f" ;;
    big) yes "$3" | head -c $((SIZE + 4 * M)) > "$f" ;;
    sparse)
      truncate -s $SIZE "$f"
      yes "$3" | head -c $M | dd of="$f" bs=1M conv=notrunc status=none
      yes "$3" | head -c $M | dd of="$f" bs=1M seek=20 conv=notrunc status=none ;;
  esac
  # An old mtime, a different one for each backup: rsync -a must not take
  # the disk for up to date (a restore gives the disk its backup's mtime,
  # and backups of one kind have the same size).
  backups=$((${backups:-0} + 1))
  touch -d "@$((1577934245 + backups * 60))" "$f"
}

# The LV and the disk file hold file $2 ($1: vda or vdb).
holds () {
  local what=$3
  cmp "$2" "${dev[$1]}" >/dev/null || { bad "$what: ${dev[$1]} differs from $2"; return 1; }
  cmp "$2" "$D/$1.img" >/dev/null || { bad "$what: $D/$1.img differs from $2"; return 1; }
  return 0
}
# The snapshot "before" still holds the LV's first bytes.
snap_kept () {
  local what=$2 attr
  cmp "/tmp/first-$1" "$D/snapshots/before/$1.img" >/dev/null ||
    { bad "$what: snapshots/before/$1.img changed"; return 1; }
  attr=$(lv_field "${snaplv[$1]}" lv_attr)
  case $attr in
    ????I*) bad "$what: snapshot LV ${snaplv[$1]} invalid (lv_attr $attr, " \
                "snap_percent $(lv_field "${snaplv[$1]}" snap_percent))"
            return 1 ;;
  esac
  return 0
}
thin_pct () { lv_field vg0/thin data_percent; }

setup_lvm
run lvcreate -q -L 32M -n disk vg0
setup_thin_pool 128M
run lvcreate -q -V 32M -T vg0/pool -n thin
declare -A dev=([vda]=/dev/vg0/disk [vdb]=/dev/vg0/thin)
# The first bytes of each LV, kept by the snapshot "before".
for t in vda vdb; do
  yes "first-$t" | head -c $SIZE > "/tmp/first-$t"
  run dd if="/tmp/first-$t" of="${dev[$t]}" bs=1M conv=fsync status=none
done

# What the kernel offers for zeroing each LV (a thin LV frees blocks on
# discard; BLKZEROOUT uses WRITE ZEROES, else writes zeros).
for t in vda vdb; do
  q=/sys/dev/block/$(printf '%d:%d' $(stat -L -c '0x%t 0x%T' "${dev[$t]}"))/queue
  echo "${dev[$t]}: write_zeroes_max_bytes $(cat $q/write_zeroes_max_bytes)," \
       "discard_granularity $(cat $q/discard_granularity)," \
       "discard_max_bytes $(cat $q/discard_max_bytes)"
done

start_libvirtd
cat > /tmp/dom.xml <<XML
<domain type='qemu'>
  <name>lvmdom</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/disk'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/thin'/><target dev='vdb' bus='virtio'/></disk>
  </devices>
</domain>
XML
run virsh -q -c qemu:///system define /tmp/dom.xml

mkdir -p /tmp/mnt /tmp/staging
chmod 700 /tmp/staging
opts=pidfile=/tmp/pid,staging=/tmp/staging
[ -n "${1:-}" ] && opts=$opts,snapsize=$1
"$VMDISKFS" -f -o "$opts" /tmp/mnt >/tmp/vmdiskfs.log 2>&1 &
pid=$!
for i in $(seq 100); do [ -s /tmp/pid ] && break; sleep 0.1; done
[ -s /tmp/pid ] || { cat /tmp/vmdiskfs.log; fail "mount did not answer"; }
D=/tmp/mnt/lvmdom
ls -l "$D"
ok "mounted"

run mkdir "$D/snapshots/before"
declare -A snaplv=([vda]=vg0/disk-before [vdb]=vg0/thin-before)
lvs -o lv_name,origin,lv_size,lv_attr vg0
for t in vda vdb; do
  lvs "${snaplv[$t]}" >/dev/null 2>&1 || fail "no snapshot LV ${snaplv[$t]}"
  snap_kept $t "mkdir" || fail "the new snapshot does not hold the first bytes"
done
ok "mkdir snapshots/before: LVM snapshots of both LVs"

for t in vda vdb; do
  echo "---- $t (${dev[$t]})"
  # One LV's backups at a time: /tmp is a tmpfs of half the guest's RAM.
  rm -rf /tmp/bk
  backup full $t "full-$t" full
  backup full2 $t "full2-$t" full
  backup full3 $t "full3-$t" full
  backup sparse $t "sparse-$t" sparse
  backup sparse2 $t "sparse2-$t" sparse
  backup big $t "big-$t" big
  tar -cSf "/tmp/bk/tar-$t.tar" -C /tmp/bk/full3 $t.img
  # cp of a full backup, then of a mostly-zero one.
  cp /tmp/bk/full/$t.img "$D/$t.img" || bad "cp full $t.img (exit $?)"
  holds $t /tmp/bk/full/$t.img "cp full" && ok "$t: cp B D"
  snap_kept $t "cp full"
  [ $t = vdb ] && p_full=$(thin_pct) && echo "thin LV data_percent after cp full: $p_full"
  cp /tmp/bk/sparse/$t.img "$D/$t.img" || bad "cp sparse $t.img (exit $?)"
  holds $t /tmp/bk/sparse/$t.img "cp sparse" && ok "$t: cp of a mostly-zero backup"
  snap_kept $t "cp sparse"
  if [ $t = vdb ]; then
    p=$(thin_pct)
    echo "thin LV data_percent after cp sparse: $p"
    [ "${p%%.*}" -lt 20 ] && [ "${p_full%%.*}" -ge 90 ] ||
      bad "cp: thin allocation $p_full% -> $p%, want >= 90 -> < 20"
  fi

  # dd conv=notrunc: full, then mostly-zero over it.
  dd if=/tmp/bk/full2/$t.img of="$D/$t.img" bs=1M conv=notrunc status=none ||
    bad "dd full2 $t.img (exit $?)"
  holds $t /tmp/bk/full2/$t.img "dd full2" && ok "$t: dd of=D bs=1M conv=notrunc"
  snap_kept $t "dd full2"
  [ $t = vdb ] && p_full=$(thin_pct) && echo "thin LV data_percent after dd full: $p_full"
  dd if=/tmp/bk/sparse2/$t.img of="$D/$t.img" bs=1M conv=notrunc status=none ||
    bad "dd sparse2 $t.img (exit $?)"
  holds $t /tmp/bk/sparse2/$t.img "dd sparse2" && ok "$t: dd conv=notrunc of a mostly-zero backup"
  snap_kept $t "dd sparse2"
  if [ $t = vdb ]; then
    p=$(thin_pct)
    echo "thin LV data_percent after dd sparse: $p"
    [ "${p%%.*}" -lt 20 ] && [ "${p_full%%.*}" -ge 90 ] ||
      bad "dd: thin allocation $p_full% -> $p%, want >= 90 -> < 20"
  fi

  # rsync -a: a staging file renamed over the disk.
  rsync -a /tmp/bk/full/$t.img "$D/" || bad "rsync -a full $t.img (exit $?)"
  holds $t /tmp/bk/full/$t.img "rsync full" && ok "$t: rsync -a B DIR/"
  snap_kept $t "rsync full"
  [ $t = vdb ] && p_full=$(thin_pct) && echo "thin LV data_percent after rsync full: $p_full"
  left=$(ls -A "$D" /tmp/staging | grep -c "^\.$t\.img\.\|^vmdiskfs-" )
  [ "$left" = 0 ] || bad "rsync left staging files: $(ls -A "$D" /tmp/staging)"
  mtime=$(stat -c %Y "$D/$t.img")
  [ "$mtime" = "$(stat -c %Y /tmp/bk/full/$t.img)" ] ||
    bad "rsync -a: mtime $mtime, the backup's $(stat -c %Y /tmp/bk/full/$t.img)"
  rsync -a /tmp/bk/sparse/$t.img "$D/" || bad "rsync -a sparse $t.img (exit $?)"
  holds $t /tmp/bk/sparse/$t.img "rsync sparse" && ok "$t: rsync -a of a mostly-zero backup"
  snap_kept $t "rsync sparse"
  if [ $t = vdb ]; then
    p=$(thin_pct)
    echo "thin LV data_percent after rsync sparse: $p"
    [ "${p%%.*}" -lt 20 ] && [ "${p_full%%.*}" -ge 90 ] ||
      bad "rsync: thin allocation $p_full% -> $p%, want >= 90 -> < 20"
  fi

  # GNU tar: unlink, then create.
  tar -xSf /tmp/bk/tar-$t.tar -C "$D" || bad "tar -xSf $t (exit $?)"
  holds $t /tmp/bk/full3/$t.img "tar" && ok "$t: tar -xSf"
  snap_kept $t "tar"
  [ -e "$D/$t.img" ] || bad "tar: $t.img gone from the mount"

  # Longer than the LV.
  cp "${dev[$t]}" /tmp/before-big
  if rsync -a /tmp/bk/big/$t.img "$D/" 2>/tmp/rsync.err; then
    bad "rsync -a of a backup 4 MiB longer than the LV succeeded"
  else
    grep -q "File too large" /tmp/rsync.err ||
      bad "rsync -a big: not EFBIG: $(cat /tmp/rsync.err)"
  fi
  holds $t /tmp/before-big "rsync big" && ok "$t: rsync -a of a longer backup: EFBIG, LV unchanged"
  left=$(ls -A "$D" /tmp/staging | grep -c "^\.$t\.img\.\|^vmdiskfs-" )
  [ "$left" = 0 ] || bad "rsync big left staging files: $(ls -A "$D" /tmp/staging)"
  if dd if=/tmp/bk/big/$t.img of="$D/$t.img" bs=1M conv=notrunc status=none \
       2>/tmp/dd.err; then
    bad "dd of a backup 4 MiB longer than the LV succeeded"
  else
    grep -q "File too large" /tmp/dd.err || bad "dd big: not EFBIG: $(cat /tmp/dd.err)"
  fi
  head -c $SIZE /tmp/bk/big/$t.img > /tmp/big-head
  holds $t /tmp/big-head "dd big" && ok "$t: dd of a longer backup: what fits, then EFBIG"
  if truncate -s $((SIZE + M)) "$D/$t.img" 2>/tmp/tr.err; then
    bad "truncate -s to a larger size succeeded"
  elif ! grep -q "File too large" /tmp/tr.err; then
    bad "truncate: not EFBIG: $(cat /tmp/tr.err)"
    command -v strace >/dev/null &&
      strace -f truncate -s $((SIZE + M)) "$D/$t.img" 2>&1 | tail -15
    tail -5 /tmp/vmdiskfs.log
  fi
  [ "$(stat -c %s "$D/$t.img")" = $SIZE ] || bad "size now $(stat -c %s "$D/$t.img")"
  [ "$(blockdev --getsize64 "${dev[$t]}")" = $SIZE ] || bad "the LV's size changed"
  snap_kept $t "big" && ok "$t: snapshot before still holds the first bytes"
  rm -f /tmp/before-big /tmp/big-head
done

lvs -o lv_name,origin,lv_size,lv_attr,data_percent,snap_percent vg0
umount /tmp/mnt || fail "umount"
wait $pid || bad "vmdiskfs exited with an error"
cat /tmp/vmdiskfs.log
virsh -q -c qemu:///system undefine lvmdom
echo "write-lvm: $failures failed checks, $(( $(date +%s) - start ))s"
[ $failures = 0 ] || exit 1
exit 0
}
