#!/bin/bash
# vmdiskfs - restoring disks by copying a backup back through the mount,
# images mode (-o images=DIR), with every tool as users type it (cp, cat,
# dd, pv, rsync, tar: see restore_with in functions.sh) onto raw, qcow2
# v3 with two internal snapshots, qcow2 v2 (compat=0.10) with one, qcow2
# over a backing file, and QED.  After each restore: the image's bytes
# are the backup's (qemu-img compare, and through the mount), the
# snapshots' bytes did not change, qemu-img check is clean, the image
# allocates no more than the backup's data (it is half zeros), the
# staging directory is empty again.  Then: a longer backup grows the
# disk, cp -a and rsync -a give the image file the backup's mtime,
# snapshot disks and -o ro give EROFS, an image qemu-io holds gives EBUSY
# and stays as it was, a disk open for writing holds qemu's locks (qemu-img
# info fails) until it is closed, unlink hides a disk without touching it,
# the staging directory: leftovers removed at start, refused inside the
# mount.  Formats whose writer has not landed yet (EROFS at open) are
# skipped with a message.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
set -u
require python3 qemu-img qemu-io rsync tar cmp md5sum truncate
qcow2_supported || skip "the qcow2 reader is not built"

DIR=$TEST_DIR/images
MNT=$TEST_DIR/mnt
STAGE=$TEST_DIR/staging
BK=$TEST_DIR/backup
BK2=$TEST_DIR/backup-long
mkdir -p "$DIR" "$BK" "$BK2"
MiB=$((1024 * 1024))
SIZE=$((16 * MiB))
failures=0

check ()                        # MESSAGE COMMAND...
{
  local msg=$1 pid
  shift
  if ! "$@"; then
    pid=$(vmdiskfs_pid "$MNT")
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$(vmdiskfs_log "$MNT")" >&2
      fail "the daemon died ($msg)"
    fi
    echo "FAIL: $msg" >&2
    failures=$((failures + 1))
    return 1
  fi
}

eq () { [ "$1" = "$2" ]; }
le () { [ "$1" -le "$2" ] || { echo "$1 > $2" >&2; return 1; }; }
staging_empty () { [ -z "$(ls -A "$STAGE")" ] || { ls -la "$STAGE" >&2; return 1; }; }
unlocked () { ! image_locked "$1"; }

# ---- The backup: 16 MiB, half of it zeros (holes in the file), data
# not aligned to clusters, a written block of zeros in the data. ----

B=$BK/disk.img
truncate -s $SIZE "$B.tmp"
for i in 0 2 4 6 8 10 12 14; do
  dd if=/dev/urandom of="$B.tmp" bs=1M count=1 seek=$i conv=notrunc status=none
done
dd if=/dev/zero of="$B.tmp" bs=64k count=1 seek=40 conv=notrunc status=none
dd if=/dev/urandom of="$B.tmp" bs=1 count=1000 seek=$((9 * MiB + 12345)) \
   conv=notrunc status=none
cp --sparse=always "$B.tmp" "$B"
rm -f "$B.tmp"
touch -d '2021-03-04 05:06:07.123456789' "$B"
backup_tar "$B"
# Longer than the disks: grows them.
B2=$BK2/disk.img
cp --sparse=always "$B" "$B2"
dd if=/dev/urandom of="$B2" bs=1M count=4 seek=16 status=none
touch -d '2022-01-02 03:04:05' "$B2"

# ---- The images. ----

cd "$DIR" || fail "cd $DIR"
qemu-img create -q -f raw raw.img $SIZE
qemu-io -f raw -c "write -P 0x11 0 16M" raw.img >/dev/null
qemu-img create -q -f qcow2 -o compat=1.1 v3.qcow2 $SIZE
qemu-io -c "write -P 0x21 0 6M" v3.qcow2 >/dev/null
qemu-img snapshot -c s1 v3.qcow2
qemu-io -c "write -P 0x22 4M 8M" -c "write -z 0 1M" v3.qcow2 >/dev/null
qemu-img snapshot -c s2 v3.qcow2
qemu-io -c "write -P 0x23 10M 2M" v3.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 $SIZE
qemu-io -c "write -P 0x31 0 16M" v2.qcow2 >/dev/null
qemu-img snapshot -c s1 v2.qcow2
qemu-io -c "write -P 0x32 2M 2M" v2.qcow2 >/dev/null
qemu-img create -q -f qcow2 base.qcow2 $SIZE
qemu-io -c "write -P 0x41 0 16M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2
qemu-io -c "write -P 0x42 3M 1M" over.qcow2 >/dev/null
qemu-img create -q -f qed qed.qed $SIZE
qemu-io -f qed -c "write -P 0x51 0 16M" qed.qed >/dev/null
cd / || fail "cd /"
IMAGES="raw.img v3.qcow2 v2.qcow2 over.qcow2 qed.qed"
declare -A snaps0=() cluster=()
for n in $IMAGES base.qcow2; do
  snaps0[$n]=$(snapshot_sums "$DIR/$n" $SIZE)
  cluster[$n]=65536
done
cluster[raw.img]=4096
base0=$(md5sum <"$DIR/base.qcow2")
# Asked once, not at every check: an image's format never changes here
# (image_format is functions.sh's, called by snapshot_sums and
# image_clean too; they run in $(...), so it cannot fill a cache itself),
# nor the backups' rounded data.
declare -A format_of=() rounded=()
for n in $IMAGES base.qcow2; do
  format_of[$DIR/$n]=$(image_format "$DIR/$n")
done
eval "image_format_qemu () $(declare -f image_format | tail -n +2)"
image_format () { echo "${format_of[$1]:-$(image_format_qemu "$1")}"; }
for b in "$B" "$B2"; do
  for a in 4096 65536; do rounded[$b,$a]=$(rounded_data "$b" $a); done
done

# ---- The staging directory: refused inside the mount, leftovers of a
# crashed daemon removed at start, other files left alone. ----

mkdir -p "$MNT"
if timeout 20 "$VMDISKFS" -f -o images="$DIR",staging="$MNT/stage" "$MNT" \
     >"$TEST_DIR/inside.log" 2>&1; then
  fusermount3 -u "$MNT" 2>/dev/null
  fail "a staging directory inside the mount was accepted"
fi
mountpoint -q "$MNT" && fail "a refused start left a mount"
check "staging inside the mount: no clear message: $(cat "$TEST_DIR/inside.log")" \
  grep -q 'inside the mount' "$TEST_DIR/inside.log"
rm -rf "$MNT/stage"
mkdir -m 0700 "$STAGE"
echo old >"$STAGE/stage-12345-1"
echo mine >"$STAGE/not-a-staging-file"
start_vmdiskfs "$MNT" -o images="$DIR",staging="$STAGE"
check "a leftover staging file was not removed at start" test ! -e "$STAGE/stage-12345-1"
check "a file not named as staging files was removed" test -e "$STAGE/not-a-staging-file"
rm -f "$STAGE/not-a-staging-file"

# ---- Which formats can be written (a writer that has not landed: EROFS
# at open; opening without O_TRUNC changes nothing). ----

WRITABLE=
for n in $IMAGES; do
  e=$(op_errno 'os.close(os.open(path, os.O_WRONLY))' "$MNT/$n/disk.img")
  wait_for 10 unlocked "$DIR/$n"
  case $e in
    ok) WRITABLE="$WRITABLE $n" ;;
    EROFS) echo "SKIP (part): $n: no writer for $(image_format "$DIR/$n") yet (EROFS)" ;;
    *) check "$n: open for writing gave $e" false ;;
  esac
done
echo "writable:$WRITABLE"

# ---- Every tool onto every image. ----

# Change the disk behind the mount's back, as a VM would (the writer must
# reread the image's metadata when it opens it).  For the delta rsync
# only a few blocks differ, so it writes only those.
scramble ()                     # IMAGE TOOL
{
  local img=$DIR/$1 fmt pat=$((RANDOM % 200 + 16))
  fmt=$(image_format "$img")
  if [ "$2" = rsync-inplace ]; then
    qemu-io -f "$fmt" -c "write -P $pat 1M 64k" -c "write -P $pat 9M 1M" \
      -c "write -P $pat 3M 4k" "$img" >/dev/null
  else
    qemu-io -f "$fmt" -c "write -P $pat 0 16M" "$img" >/dev/null
  fi || fail "qemu-io on $img"
  if qemu-img compare -q -U -f raw -F "$fmt" "$B" "$img" 2>/dev/null; then
    fail "$1: the scrambled image equals the backup"
  fi
  # Until the kernel's attribute cache expires, the mount may still show
  # the mtime the last rsync -a or cp -a gave the disk, the backup's: rsync
  # would take the disk for up to date (same size and mtime) and copy
  # nothing.  A user rsyncing a second after the VM wrote would see the
  # same; here the next restore waits until the mount shows the change.
  local disk=$MNT/$1/disk.img
  wait_for 10 eval '[ "$(stat -c %Y "$disk")" = "$(stat -c %Y "$img")" ]' ||
    fail "$1: the mount does not show the scrambled image's mtime"
}

# All that must hold after restoring BACKUP (SIZE bytes) into image n.
check_restored ()               # IMAGE TOOL BACKUP SIZE
{
  local n=$1 tool=$2 b=$3 size=$4 img=$DIR/$1 fmt what sums
  what="$tool onto $n"
  fmt=$(image_format "$img")
  check "$what: the image is still locked after the tool exited" \
    wait_for 10 unlocked "$img"
  check "$what: bytes differ from the backup (qemu-img compare -f raw -F $fmt $b $img)" \
    qemu-img compare -q -U -f raw -F "$fmt" "$b" "$img"
  check "$what: the mount's disk differs from the backup" \
    qemu-img compare -q -f raw -F raw "$b" "$MNT/$n/disk.img"
  check "$what: size $(stat -c %s "$MNT/$n/disk.img"), want $size" \
    eq "$(stat -c %s "$MNT/$n/disk.img")" "$size"
  sums=$(snapshot_sums "$img" $SIZE)
  check "$what: snapshots changed: $(echo $sums) (were $(echo ${snaps0[$n]}))" \
    eq "$sums" "${snaps0[$n]}"
  check "$what: qemu-img check" image_clean "$img"
  if [ "$fmt" = qed ]; then
    # QED has no refcounts: a zeroed cluster keeps its L2 entry (qemu-img
    # map calls it data) and is punched out of the file, so what it takes
    # on disk is the file's own allocation: the data plus its tables.
    check "$what: file allocation larger than the backup's data plus 1 MiB" \
      le "$(( $(stat -c %b "$img") * 512 ))" \
         "$(( ${rounded[$b,${cluster[$n]}]} + 1048576 ))"
  else
    check "$what: allocation larger than the backup's data" \
      le "$(data_bytes "$img")" "${rounded[$b,${cluster[$n]}]}"
  fi
  check "$what: the staging directory is not empty" staging_empty
}

TOOLS="cp cp-sparse cp-a cat dd dd-notrunc dd-sparse pv rsync rsync-inplace
       rsync-sparse tar-S tar-overwrite"
# Every tool on raw, qcow2 v3 and QED; the tools that differ in how they
# write (O_TRUNC + holes, conv=sparse, staging, delta, unlink + create)
# on qcow2 v2 and over a backing file (the time this takes).
FEW="cp-sparse dd-sparse rsync rsync-inplace tar-S"
for n in $WRITABLE; do
  t0=$SECONDS
  tools=$TOOLS
  case $n in v2.qcow2|over.qcow2) tools=$FEW ;; esac
  for tool in $tools; do
    scramble "$n" "$tool"
    rc=0
    t2=$SECONDS
    restore_with "$tool" "$B" "$MNT/$n/disk.img" 2>"$TEST_DIR/tool.err" || rc=$?
    if [ $rc = 77 ]; then
      echo "SKIP (part): $tool is not installed"
      continue
    fi
    if [ $rc != 0 ]; then
      check "$tool onto $n: exit $rc: $(cat "$TEST_DIR/tool.err")" false
      continue
    fi
    t1=$SECONDS
    check_restored "$n" "$tool" "$B" $SIZE
    [ -n "${WRITE_TIMES:-}" ] && echo "  $tool onto $n: restore $((t1 - t2)) s, checks $((SECONDS - t1)) s"
    case $tool in
      cp-a|rsync*|tar*)
        check "$tool onto $n: the image's mtime $(stat -c %y "$DIR/$n"), the backup's $(stat -c %y "$B")" \
          eq "$(stat -c %Y "$DIR/$n")" "$(stat -c %Y "$B")" ;;
    esac
  done
  echo "restored $n with $(echo $tools) ($((SECONDS - t0)) s)"
done
check "the backing file changed" eq "$(md5sum <"$DIR/base.qcow2")" "$base0"

# ---- A longer backup grows the disk (raw, qcow2); a shorter one then
# leaves the rest zero, the size kept. ----

for n in raw.img v3.qcow2; do
  case " $WRITABLE " in *" $n "*) ;; *) continue ;; esac
  for tool in cp rsync; do
    scramble "$n" "$tool"
    check "$tool of a longer backup onto $n" restore_with "$tool" "$B2" "$MNT/$n/disk.img"
    check_restored "$n" "$tool (longer)" "$B2" $((20 * MiB))
    check "$n: virtual size not grown" \
      eq "$(qemu-img info -U --output=json "$DIR/$n" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" \
         $((20 * MiB))
  done
  check "cp of a shorter backup onto $n" restore_with cp "$B" "$MNT/$n/disk.img"
  check_restored "$n" "cp (shorter)" "$B" $((20 * MiB))
done

# ---- Snapshot disks are never writable. ----

for f in "$MNT/v3.qcow2/snapshots/s1/disk.img" "$MNT/v2.qcow2/snapshots/s1/disk.img"; do
  check "$f: open for writing: $(op_errno 'os.open(path, os.O_WRONLY)' "$f")" \
    eq "$(op_errno 'os.open(path, os.O_WRONLY)' "$f")" EROFS
  check "$f: truncate: $(op_errno 'os.truncate(path, 0)' "$f")" \
    eq "$(op_errno 'os.truncate(path, 0)' "$f")" EROFS
  check "$f: unlink: $(op_errno 'os.unlink(path)' "$f")" \
    eq "$(op_errno 'os.unlink(path)' "$f")" EPERM
done
if cp "$B" "$MNT/v3.qcow2/snapshots/s2/disk.img" 2>/dev/null; then
  check "cp onto a snapshot's disk succeeded" false
fi
check "the snapshots changed" eq "$(snapshot_sums "$DIR/v3.qcow2" $SIZE)" "${snaps0[v3.qcow2]}"

# ---- An image another program holds: EBUSY at open, nothing changes. ----

for n in raw.img v3.qcow2; do
  img=$DIR/$n
  fmt=$(image_format "$img")
  sum0=$(md5sum <"$img")
  qemu-io -f "$fmt" -c "sleep 60000" "$img" >/dev/null 2>"$TEST_DIR/holder.err" &
  holder=$!
  on_exit "kill $holder 2>/dev/null"
  wait_for 30 eval 'kill -0 $holder 2>/dev/null && image_locked "$img"' ||
    fail "qemu-io does not hold $img: $(cat "$TEST_DIR/holder.err")"
  d=$MNT/$n/disk.img
  check "$n held by qemu-io: open for writing gave $(op_errno 'os.open(path, os.O_WRONLY)' "$d")" \
    eq "$(op_errno 'os.open(path, os.O_WRONLY)' "$d")" EBUSY
  check "$n held by qemu-io: O_TRUNC open: $(op_errno 'os.open(path, os.O_WRONLY | os.O_TRUNC)' "$d")" \
    eq "$(op_errno 'os.open(path, os.O_WRONLY | os.O_TRUNC)' "$d")" EBUSY
  if cp "$B" "$d" 2>/dev/null; then check "$n held by qemu-io: cp succeeded" false; fi
  if rsync -a "$B" "$MNT/$n/" 2>/dev/null; then
    check "$n held by qemu-io: rsync -a succeeded" false
  fi
  check "$n held by qemu-io: staging files left" wait_for 5 staging_empty
  check "$n held by qemu-io: the image changed" eq "$(md5sum <"$img")" "$sum0"
  check "$n held by qemu-io: no log line naming the image" \
    grep -q "$n.*\(in use\|busy\|lock\)" "$(vmdiskfs_log "$MNT")"
  kill "$holder"
  wait "$holder" 2>/dev/null
done

# ---- Open for writing: qemu's locks held, so qemu cannot open it; gone
# at close. ----

for n in raw.img v3.qcow2; do
  case " $WRITABLE " in *" $n "*) ;; *) continue ;; esac
  img=$DIR/$n
  exec 3>>"$MNT/$n/disk.img" || { check "$n: exec 3>>disk.img failed" false; continue; }
  fmt=$(image_format "$img")
  check "$n open for writing: image_locked says free" image_locked "$img"
  # A read-write open, as a VM's: qemu's lock error.  (qemu-img info of a
  # raw image takes no lock at all, of a qcow2 one a shared one.)
  if qemu-io -f "$fmt" -c "read 0 512" "$img" >/dev/null 2>"$TEST_DIR/info.err"; then
    check "$n open for writing: qemu-io opened it" false
  else
    check "$n open for writing: qemu-io: $(cat "$TEST_DIR/info.err")" \
      grep -q 'lock' "$TEST_DIR/info.err"
  fi
  if [ "$fmt" != raw ]; then
    if qemu-img info "$img" >/dev/null 2>"$TEST_DIR/info.err"; then
      check "$n open for writing: qemu-img info opened it" false
    else
      check "$n open for writing: qemu-img info: $(cat "$TEST_DIR/info.err")" \
        grep -q 'lock' "$TEST_DIR/info.err"
    fi
  fi
  exec 3>&-
  check "$n closed: still locked" wait_for 10 unlocked "$img"
  check "$n closed: qemu-img info fails" qemu-img info "$img" >/dev/null
  check "$n closed: qemu-io cannot open it" \
    qemu-io -f "$fmt" -c "read 0 512" "$img" >/dev/null
done

# ---- unlink hides a disk, destroys nothing; it is back after a
# remount. ----

sum0=$(md5sum <"$DIR/raw.img")
check "rm of a disk" rm "$MNT/raw.img/disk.img"
check "a removed disk is still listed" test ! -e "$MNT/raw.img/disk.img"
check "rm changed the image" eq "$(md5sum <"$DIR/raw.img")" "$sum0"
stop_vmdiskfs "$MNT" || check "the daemon exited with $?" false
check "the staging directory is not empty after unmount" staging_empty

# ---- -o ro: nothing writable. ----

start_vmdiskfs "$MNT" -o ro,images="$DIR",staging="$STAGE"
check "a removed disk is not back after a remount" test -e "$MNT/raw.img/disk.img"
for what in 'os.open(path, os.O_WRONLY)' 'os.open(path, os.O_WRONLY | os.O_TRUNC)' \
            'os.truncate(path, 0)' 'os.unlink(path)'; do
  check "-o ro: $what: $(op_errno "$what" "$MNT/raw.img/disk.img")" \
    eq "$(op_errno "$what" "$MNT/raw.img/disk.img")" EROFS
done
check "-o ro: create: $(op_errno 'open(path, "w")' "$MNT/raw.img/.disk.img.XXXX")" \
  eq "$(op_errno 'open(path, "w")' "$MNT/raw.img/.disk.img.XXXX")" EROFS
if rsync -a "$B" "$MNT/raw.img/" 2>/dev/null; then check "-o ro: rsync succeeded" false; fi
check "-o ro: the image changed" eq "$(md5sum <"$DIR/raw.img")" "$sum0"
stop_vmdiskfs "$MNT" || check "the ro daemon exited with $?" false
grep -i 'assert\|leak' "$(vmdiskfs_log "$MNT")" && check "warnings in the log" false

[ $failures = 0 ] || fail "$failures checks failed"
echo PASS
