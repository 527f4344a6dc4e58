#!/bin/bash
# vmdiskfs - names found inside images are untrusted (DESIGN.md "Untrusted
# names", issue 7).  Images mode: a backing or data file outside DIR (by
# absolute name, by relative name, through a symlink), a symlink in DIR
# leading out, a FIFO, a terminal, a file inside the mount itself; a raw
# disk carrying a qcow2 header, with and without -o probe=no; -o
# backing=any; modes under allow_other (the intersection of the read bits,
# DIR's own mode, default_permissions).  Every refused disk gives EIO and a
# log line naming the image and the refused path, within seconds, and the
# daemon stays alive with every other image correct.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
set -u
require python3 qemu-img qemu-io cmp stat setpriv timeout

DIR=$TEST_DIR/images
OUT=$TEST_DIR/outside
MNT=$TEST_DIR/mnt
# Other users must reach the mount points (allow_other part).
chmod 0755 "$TEST_DIR"
mkdir -p "$DIR" "$OUT" "$MNT"

alive ()
{
  kill -0 "$(vmdiskfs_pid "$1")" 2>/dev/null || fail "the daemon of $1 died"
}

# ---- The images. ----

# What an attacker wants to read: stands for /etc/shadow or /dev/sda.
python3 -c 'import sys; sys.stdout.buffer.write(b"SECRET!\n" * 8192)' \
  >"$OUT/secret.raw"
qemu-img create -q -f qcow2 "$OUT/other.qcow2" 1M
qemu-io -f qcow2 -c "write -P 0x5e 0 64k" "$OUT/other.qcow2" >/dev/null

cd "$DIR" || fail "cd $DIR"
# The control: a good image with a backing file inside DIR.
qemu-img create -q -f raw base.raw 1M
qemu-io -f raw -c "write -P 0xba 0 128k" base.raw >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw good.qcow2 1M
qemu-io -f qcow2 -c "write -P 0x60 512k 64k" good.qcow2 >/dev/null
qemu-img convert -O raw good.qcow2 "$TEST_DIR/good.expect"

# Backing files outside DIR.
qemu-img create -q -f qcow2 -u -b "$OUT/secret.raw" -F raw abs.qcow2 64K
qemu-img create -q -f qcow2 -u -b ../outside/secret.raw -F raw rel.qcow2 64K
ln -s ../outside/secret.raw .inlink
qemu-img create -q -f qcow2 -u -b .inlink -F raw link.qcow2 64K
# An external data file outside DIR.
qemu-img create -q -f qcow2 \
  -o data_file="$OUT/data.raw",data_file_raw=on data.qcow2 64K
cp "$OUT/secret.raw" "$OUT/data.raw"
# A symlink in DIR leading out.
ln -s ../outside/other.qcow2 linked-out.qcow2
# A FIFO and terminals: never opened, nothing hangs.
mkfifo .fifo
qemu-img create -q -f qcow2 -u -b .fifo -F raw fifo.qcow2 64K
qemu-img create -q -f qcow2 -u -b /dev/ptmx -F raw tty.qcow2 64K
qemu-img create -q -f qcow2 -u -b /dev/tty -F raw tty2.qcow2 64K
# A file inside the mount itself, named and through a symlink.
qemu-img create -q -f qcow2 -u -b "$MNT/good.qcow2/disk.img" -F raw \
  selfref.qcow2 64K
ln -s "$MNT/good.qcow2/disk.img" .selflink
qemu-img create -q -f qcow2 -u -b .selflink -F raw selflink.qcow2 64K
ln -s "$MNT/good.qcow2" into-mount.qcow2
# A raw disk whose guest wrote a qcow2 header into it: naming another
# image of DIR, and naming a file outside.
qemu-img create -q -f qcow2 -u -b good.qcow2 -F qcow2 victim.raw 1M
qemu-img create -q -f qcow2 -u -b "$OUT/secret.raw" -F raw victim2.raw 64K
# Read bits: an image readable by all over a backing file only root reads.
qemu-img create -q -f raw private.raw 64K
chmod 0600 private.raw
qemu-img create -q -f qcow2 -u -b private.raw -F raw mixed.qcow2 64K
# Another user's image over root's 0600 file: that user gets nothing of
# it (the owner's bits of a file owned by someone else do not count).
qemu-img create -q -f qcow2 -u -b private.raw -F raw theirs.qcow2 64K
chown 65534:65534 theirs.qcow2
chmod 0644 mixed.qcow2 good.qcow2 base.raw theirs.qcow2
cd / || fail "cd /"

# ---- Default policy: confined to DIR. ----

start_vmdiskfs "$MNT" -o images="$DIR"
LOG=$(vmdiskfs_log "$MNT")

for img in abs rel link data fifo tty tty2 selfref selflink; do
  got=$(read_errno "$MNT/$img.qcow2/disk.img")
  [ "$got" = EIO ] || fail "$img.qcow2: read gave $got, want EIO"
done
for img in linked-out.qcow2 into-mount.qcow2 victim2.raw; do
  got=$(read_errno "$MNT/$img/disk.img")
  [ "$got" = EIO ] || fail "$img: read gave $got, want EIO"
done
alive "$MNT"

# One log line each, naming the image and the refused file.
grep -q "abs.qcow2: backing file $OUT/secret.raw refused: outside $DIR" \
  "$LOG" || fail "no log line for abs.qcow2: $(grep abs.qcow2 "$LOG")"
# Refused before anything outside DIR is touched (an automounter there
# could hang us), naming where the name leads.
grep -q "rel.qcow2: backing file $DIR/../outside/secret.raw refused: outside $DIR (it leads to $OUT;" "$LOG" ||
  fail "no log line for rel.qcow2 naming where it leads"
grep -q "link.qcow2: backing file $DIR/.inlink refused: outside $DIR (it leads to $OUT;" "$LOG" ||
  fail "no log line for link.qcow2 naming where the symlink leads"
grep -q "data.qcow2: external data file $OUT/data.raw refused" "$LOG" ||
  fail "no log line for data.qcow2"
grep -q "linked-out.qcow2 refused: outside $DIR (it leads to $OUT;" "$LOG" ||
  fail "no log line for linked-out.qcow2"
# (The mount is outside DIR: refused as such; backing=any below shows the
# check that refuses the mount itself.)
grep -q "selfref.qcow2: backing file $MNT/good.qcow2/disk.img refused: outside" \
  "$LOG" || fail "no log line for selfref.qcow2"

# The guest's fake header naming an image of DIR is followed when probing
# (the documented risk of the default) ...
cmp -s "$MNT/victim.raw/disk.img" "$TEST_DIR/good.expect" ||
  fail "victim.raw: probing a qcow2 header inside DIR no longer follows it"
# ... and the good image still reads right, with its modes.
compare "$MNT/good.qcow2/disk.img" "$TEST_DIR/good.expect"
[ "$(stat -c %a "$MNT/good.qcow2/disk.img")" = 444 ] ||
  fail "good.qcow2/disk.img: mode $(stat -c %a "$MNT/good.qcow2/disk.img")"
[ "$(stat -c %a "$MNT/theirs.qcow2/disk.img")" = 0 ] ||
  fail "theirs.qcow2/disk.img: mode $(stat -c %a "$MNT/theirs.qcow2/disk.img"), want 0 (owned by nobody, over root's 0600 file)"
[ "$(stat -c %a "$MNT/mixed.qcow2/disk.img")" = 400 ] ||
  fail "mixed.qcow2/disk.img: mode $(stat -c %a "$MNT/mixed.qcow2/disk.img"), want 400 (its backing file is 0600)"
[ "$(stat -c %a "$MNT")" = "$(printf '%o' $(( 0$(stat -c %a "$DIR") & 0555 )))" ] ||
  fail "the root's mode $(stat -c %a "$MNT") is not DIR's $(stat -c %a "$DIR") less write bits"
alive "$MNT"
stop_vmdiskfs "$MNT" || fail "unmount"

# ---- -o probe=no: only *.qcow2, *.qed, *.qcow are probed. ----

start_vmdiskfs "$MNT" -o images="$DIR",probe=no
compare "$MNT/victim.raw/disk.img" "$DIR/victim.raw"
compare "$MNT/victim2.raw/disk.img" "$DIR/victim2.raw"
compare "$MNT/good.qcow2/disk.img" "$TEST_DIR/good.expect"
stop_vmdiskfs "$MNT" || fail "unmount"

# ---- -o backing=any: trusted directories, today's behaviour, but the
# file checks stay. ----

start_vmdiskfs "$MNT" -o images="$DIR",backing=any
LOG=$(vmdiskfs_log "$MNT")
head -c 65536 "$OUT/secret.raw" >"$TEST_DIR/secret.64k"
compare "$MNT/abs.qcow2/disk.img" "$TEST_DIR/secret.64k"
compare "$MNT/rel.qcow2/disk.img" "$TEST_DIR/secret.64k"
compare "$MNT/link.qcow2/disk.img" "$TEST_DIR/secret.64k"
for img in fifo tty tty2 selfref selflink; do
  got=$(read_errno "$MNT/$img.qcow2/disk.img")
  [ "$got" = EIO ] || fail "backing=any: $img.qcow2: read gave $got, want EIO"
done
grep -q "fifo.qcow2: backing file $DIR/.fifo refused: not a regular file or block device" \
  "$LOG" || fail "no log line for the FIFO"
grep -q "tty.qcow2: backing file /dev/ptmx refused: not a regular file" \
  "$LOG" || fail "no log line for /dev/ptmx"
grep -q "selfref.qcow2: backing file $MNT/good.qcow2/disk.img refused: it is inside this vmdiskfs mount" \
  "$LOG" || fail "no log line for selfref.qcow2 under backing=any"
grep -q "selflink.qcow2: backing file $DIR/.selflink refused: it is inside this vmdiskfs mount" \
  "$LOG" || fail "no log line for selflink.qcow2 under backing=any"
alive "$MNT"
compare "$MNT/good.qcow2/disk.img" "$TEST_DIR/good.expect"
stop_vmdiskfs "$MNT" || fail "unmount"

# Bad option values are refused.
if "$VMDISKFS" -o images="$DIR",backing=some "$MNT" 2>/dev/null; then
  fail "backing=some accepted"
fi
if "$VMDISKFS" -o images="$DIR",probe=maybe "$MNT" 2>/dev/null; then
  fail "probe=maybe accepted"
fi
# A mount point inside DIR: scanning DIR would look at the mount.
mkdir -p "$DIR/.inside"
if "$VMDISKFS" -f -o images="$DIR" "$DIR/.inside" 2>"$TEST_DIR/inside.err"; then
  fusermount3 -u "$DIR/.inside"
  fail "a mount point inside DIR accepted"
fi
grep -q "must not be inside one another" "$TEST_DIR/inside.err" ||
  fail "no clear message for a mount point inside DIR: $(cat "$TEST_DIR/inside.err")"
rmdir "$DIR/.inside"

# ---- allow_other: another user sees only what the host lets them. ----

NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
start_vmdiskfs "$MNT" -o images="$DIR",allow_other
grep -q " $MNT fuse[^ ]* [^ ]*default_permissions" /proc/self/mounts ||
  fail "allow_other without default_permissions: $(grep " $MNT " /proc/self/mounts)"
"${NOBODY[@]}" cat "$MNT/good.qcow2/disk.img" >"$TEST_DIR/nobody.out" ||
  fail "another user cannot read a world-readable disk"
compare "$TEST_DIR/nobody.out" "$TEST_DIR/good.expect"
if "${NOBODY[@]}" cat "$MNT/mixed.qcow2/disk.img" >/dev/null 2>&1; then
  fail "another user read a disk whose backing file is 0600"
fi
if "${NOBODY[@]}" cat "$MNT/theirs.qcow2/disk.img" >/dev/null 2>&1; then
  fail "a user read root's 0600 file as the backing file of their own image"
fi
stop_vmdiskfs "$MNT" || fail "unmount"

# A 0700 directory stays root's.
PRIV=$TEST_DIR/private
mkdir -m 0700 "$PRIV"
cp "$DIR/base.raw" "$PRIV/disk.img"
chmod 0644 "$PRIV/disk.img"
start_vmdiskfs "$MNT" -o images="$PRIV",allow_other
[ "$(stat -c %a "$MNT")" = 500 ] || fail "root of a 0700 DIR: mode $(stat -c %a "$MNT")"
if "${NOBODY[@]}" ls "$MNT" >/dev/null 2>&1; then
  fail "another user lists a 0700 directory"
fi
if "${NOBODY[@]}" cat "$MNT/disk.img/disk.img" >/dev/null 2>&1; then
  fail "another user reads an image in a 0700 directory"
fi
cat "$MNT/disk.img/disk.img" | cmp -s - "$DIR/base.raw" ||
  fail "root cannot read its own 0700 directory's image"
stop_vmdiskfs "$MNT" || fail "unmount"

echo "PASS: hostile names"
