#!/bin/bash
# vmdiskfs - images mode end to end: mount a directory of raw and qcow2
# images and check with ordinary tools what DESIGN.md promises: the tree,
# escaped names, sizes, st_blocks, SEEK_DATA/SEEK_HOLE, cp --sparse
# against qemu-img convert, stable times and inode numbers, EROFS,
# images and snapshots coming and going without remount, a corrupt image
# giving EIO while the others still read, the command line.
# The qcow2 parts are skipped (with a message) until the driver lands.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
set -u
require python3 qemu-img cmp stat find gio

DIR=$TEST_DIR/images
MNT=$TEST_DIR/mnt
mkdir -p "$DIR" "$MNT"
MiB=$((1024 * 1024))

# A little Python for what the shell cannot do: a pread, an errno.
expect_errno ()                 # ERRNO-NAME PYTHON-STATEMENT-ON-path PATH
{
  python3 - "$@" <<'EOF'
import errno, os, sys
want, stmt, path = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    exec(stmt)
except OSError as e:
    if e.errno == getattr(errno, want):
        sys.exit(0)
    print("%s: %s: got %s, want %s" % (path, stmt, errno.errorcode.get(e.errno), want))
    sys.exit(1)
print("%s: %s: succeeded, want %s" % (path, stmt, want))
sys.exit(1)
EOF
}

# ---- The command line. ----

"$VMDISKFS" --help >"$TEST_DIR/help" 2>&1 || fail "--help exits non-zero"
grep -q 'images=DIR' "$TEST_DIR/help" || fail "--help does not list images="
grep -q -- '-o allow_other' "$TEST_DIR/help" ||
  fail "--help does not list the FUSE options"
"$VMDISKFS" -h >/dev/null 2>&1 || fail "-h exits non-zero"
"$VMDISKFS" --version >"$TEST_DIR/version" 2>&1 || fail "--version exits non-zero"
grep -q '^vmdiskfs [0-9]' "$TEST_DIR/version" || fail "--version: $(cat "$TEST_DIR/version")"
"$VMDISKFS" -V >/dev/null 2>&1 || fail "-V exits non-zero"
# Without -o images: libvirt mode, which fails clearly when it cannot
# connect.
if "$VMDISKFS" -o connect="qemu+unix:///system?socket=$TEST_DIR/no-sock" \
     "$MNT" >"$TEST_DIR/nolibvirt" 2>&1; then
  fail "mounting with an unreachable libvirt succeeded"
fi
grep -q 'cannot connect to qemu+unix' "$TEST_DIR/nolibvirt" ||
  fail "no clear message without libvirt: $(cat "$TEST_DIR/nolibvirt")"
if "$VMDISKFS" -o images="$DIR" >/dev/null 2>&1; then
  fail "no mount point accepted"
fi
if "$VMDISKFS" -o images="$TEST_DIR/nonexistent" "$MNT" >/dev/null 2>&1; then
  fail "a missing images directory accepted"
fi
mountpoint -q "$MNT" && fail "a failed start left a mount"

# ---- The images. ----

head -c $((4 * MiB + 512)) /dev/urandom >"$DIR/plain.raw"
# Sparse: 1 GiB, data at 100 MiB and at the last MiB.
truncate -s 1G "$DIR/sparse disk.img"
dd if=/dev/urandom of="$DIR/sparse disk.img" bs=1M count=2 seek=100 \
   conv=notrunc status=none
dd if=/dev/urandom of="$DIR/sparse disk.img" bs=1M count=1 seek=1023 \
   conv=notrunc status=none
# Names with a space, a '%' and non-ASCII bytes.
name3='per%cent ü–ñ.img'
esc3='per%25cent ü–ñ.img'
head -c $((1 * MiB)) /dev/urandom >"$DIR/$name3"
chmod 0640 "$DIR/$name3"        # disk.img keeps the read bits: 0440
# Not shown: hidden files, directories, fifos.
head -c 4096 /dev/urandom >"$DIR/.hidden.raw"
mkdir "$DIR/subdir"
mkfifo "$DIR/fifo"

have_qcow2=false
if qcow2_supported; then
  have_qcow2=true
  require qemu-io
  Q=$DIR/vm.qcow2
  qemu-img create -q -f qcow2 "$Q" 64M
  qemu-io -c "write -P 0x11 0 3M" -c "write -P 0x12 20M 64k" "$Q" >/dev/null
  qemu-img snapshot -c first "$Q"
  qemu-io -c "write -P 0x21 1M 1M" -c "write -z 20M 64k" "$Q" >/dev/null
  sleep 1                       # distinct snapshot dates
  qemu-img snapshot -c 'we/ird%tag' "$Q"
  qemu-img snapshot -c dup "$Q"
  qemu-img snapshot -c dup "$Q" 2>/dev/null ||
    echo "note: qemu-img refused a duplicate snapshot name"
  qemu-io -c "write -P 0x31 40M 2M" "$Q" >/dev/null
  # Grown after the snapshots: they keep 64M.
  qemu-img resize -q "$Q" 96M
  qemu-io -c "write -P 0x41 90M 1M" "$Q" >/dev/null
else
  echo "SKIP (part): the qcow2 driver is not there yet (vd-cat cannot read qcow2)"
fi

start_vmdiskfs "$MNT" -o images="$DIR"
echo "mounted $(vmdiskfs_pid "$MNT")"

# ---- The tree. ----

expected="$esc3
plain.raw
sparse disk.img"
$have_qcow2 && expected="$expected
vm.qcow2"
got=$(cd "$MNT" && ls -1 | LC_ALL=C sort)
[ "$got" = "$(echo "$expected" | LC_ALL=C sort)" ] ||
  fail "root lists
$got
expected
$expected"
for d in "plain.raw" "sparse disk.img" "$esc3"; do
  [ "$(cd "$MNT/$d" && ls -1 | tr '\n' ' ')" = "disk.img snapshots " ] ||
    fail "$d holds $(ls "$MNT/$d")"
  [ -z "$(ls -A "$MNT/$d/snapshots")" ] || fail "$d: raw image with snapshots"
  [ "$(stat -c %A "$MNT/$d")" = dr-xr-xr-x ] || fail "$d: mode $(stat -c %A "$MNT/$d")"
  want=-r--r--r--
  [ "$d" = "$esc3" ] && want=-r--r-----
  [ "$(stat -c %A "$MNT/$d/disk.img")" = $want ] ||
    fail "$d/disk.img: mode $(stat -c %A "$MNT/$d/disk.img"), want $want"
done
[ "$(stat -c %U "$MNT/plain.raw/disk.img")" = "$(stat -c %U "$DIR/plain.raw")" ] ||
  fail "owner differs"

# ---- Bytes, sizes, blocks, holes. ----

compare "$MNT/plain.raw/disk.img" "$DIR/plain.raw"
t=$(gio info -a standard::content-type "$MNT/plain.raw/disk.img" | sed -n 's/^ *standard::content-type: //p')
[ "$t" = application/x-raw-disk-image ] || fail "gio: disk.img is '$t'"
compare "$MNT/$esc3/disk.img" "$DIR/$name3"
compare "$MNT/sparse disk.img/disk.img" "$DIR/sparse disk.img"
[ "$(stat -c %s "$MNT/plain.raw/disk.img")" = $((4 * MiB + 512)) ] ||
  fail "plain.raw size $(stat -c %s "$MNT/plain.raw/disk.img")"
[ "$(stat -c %s "$MNT/sparse disk.img/disk.img")" = $((1024 * MiB)) ] ||
  fail "sparse size"
# Allocation as the raw file's data ranges say.
alloc=$(data_ranges "$DIR/sparse disk.img" | awk '{ s += $2 - $1 } END { print s / 512 }')
blocks=$(stat -c %b "$MNT/sparse disk.img/disk.img")
[ "$blocks" = "$alloc" ] || fail "sparse st_blocks $blocks, expected $alloc"
[ "$(data_ranges "$MNT/sparse disk.img/disk.img")" = "$(data_ranges "$DIR/sparse disk.img")" ] ||
  fail "SEEK_DATA/SEEK_HOLE of the sparse image: $(data_ranges "$MNT/sparse disk.img/disk.img")"
cp --sparse=always "$MNT/sparse disk.img/disk.img" "$TEST_DIR/sparse.copy"
compare "$TEST_DIR/sparse.copy" "$DIR/sparse disk.img"
[ "$(du -k "$TEST_DIR/sparse.copy" | cut -f1)" -le 8192 ] ||
  fail "cp --sparse=always copied holes: $(du -k "$TEST_DIR/sparse.copy")"
# Reads at and past the end are short.
python3 - "$MNT/plain.raw/disk.img" $((4 * MiB + 512)) <<'EOF' || fail "read at EOF"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = int(sys.argv[2])
assert len(os.pread(fd, 4096, size - 100)) == 100
assert os.pread(fd, 4096, size) == b""
assert os.pread(fd, 4096, size + 12345) == b""
try:
    os.lseek(fd, size, os.SEEK_DATA)
    sys.exit("SEEK_DATA at EOF did not fail")
except OSError as e:
    assert e.errno == 6     # ENXIO
EOF

if $have_qcow2; then
  qemu-img convert -O raw "$Q" "$TEST_DIR/vm.raw"
  compare "$MNT/vm.qcow2/disk.img" "$TEST_DIR/vm.raw"
  [ "$(stat -c %s "$MNT/vm.qcow2/disk.img")" = $((96 * MiB)) ] || fail "vm size"
  [ "$(data_ranges "$MNT/vm.qcow2/disk.img")" = "$(qemu_data_ranges "$Q")" ] ||
    fail "qcow2 data ranges $(data_ranges "$MNT/vm.qcow2/disk.img" | tr '\n' ,) vs qemu-img map $(qemu_data_ranges "$Q" | tr '\n' ,)"
  alloc=$(qemu_data_ranges "$Q" | awk '{ s += $2 - $1 } END { print s / 512 }')
  [ "$(stat -c %b "$MNT/vm.qcow2/disk.img")" = "$alloc" ] ||
    fail "vm st_blocks $(stat -c %b "$MNT/vm.qcow2/disk.img"), expected $alloc"
  cp --sparse=always "$MNT/vm.qcow2/disk.img" "$TEST_DIR/vm.copy"
  compare "$TEST_DIR/vm.copy" "$TEST_DIR/vm.raw"

  # Snapshots: names escaped, duplicates disambiguated by id.
  snaps=$(cd "$MNT/vm.qcow2/snapshots" && ls -1 | LC_ALL=C sort | tr '\n' '|')
  case $snaps in
    "dup|dup (id 4)|first|we%2Fird%25tag|") ;;
    "dup|first|we%2Fird%25tag|") ;;
    *) fail "snapshots: $snaps" ;;
  esac
  # Each snapshot against a reverted copy (the oracle of TESTING.md).
  qemu-img info --output=json "$Q" >"$TEST_DIR/info.json"
  python3 - "$TEST_DIR/info.json" >"$TEST_DIR/snaps" <<'EOF'
import json, sys
for s in json.load(open(sys.argv[1]))["snapshots"]:
    print(s["id"], s["date-sec"], s["name"])
EOF
  declare -A seen=()
  while read -r id date name; do
    dirname=$(python3 -c 'import sys; print(sys.argv[1].replace("%","%25").replace("/","%2F"))' "$name")
    # The first of equal tags keeps the name, the others get the id.
    if [ -n "${seen[$dirname]:-}" ]; then
      dirname="$dirname (id $id)"
    fi
    seen[${dirname%% (id *}]=1
    f="$MNT/vm.qcow2/snapshots/$dirname/disk.img"
    [ -f "$f" ] || fail "no $f"
    cp "$Q" "$TEST_DIR/revert.qcow2"
    qemu-img snapshot -a "$id" "$TEST_DIR/revert.qcow2"
    qemu-img convert -O raw "$TEST_DIR/revert.qcow2" "$TEST_DIR/revert.raw"
    compare "$f" "$TEST_DIR/revert.raw"
    [ "$(data_ranges "$f")" = "$(qemu_data_ranges "$TEST_DIR/revert.qcow2")" ] ||
      fail "$f: data ranges differ from the reverted copy's"
    alloc=$(qemu_data_ranges "$TEST_DIR/revert.qcow2" | awk '{ s += $2 - $1 } END { print s / 512 }')
    [ "$(stat -c %b "$f")" = "$alloc" ] ||
      fail "$f: st_blocks $(stat -c %b "$f"), expected $alloc"
    [ "$(stat -c %s "$f")" = $((64 * MiB)) ] || fail "$f: size $(stat -c %s "$f")"
    [ "$(stat -c %Y "$f")" = "$date" ] || fail "$f: mtime $(stat -c %Y "$f") != $date"
    [ "$(stat -c %Y "$MNT/vm.qcow2/snapshots/$dirname")" = "$date" ] ||
      fail "$dirname: mtime"
    cp --sparse=always "$f" "$TEST_DIR/snap.copy"
    compare "$TEST_DIR/snap.copy" "$TEST_DIR/revert.raw"
  done <"$TEST_DIR/snaps"
  rm -f "$TEST_DIR"/revert.* "$TEST_DIR/snap.copy" "$TEST_DIR/vm.copy"
fi

# ---- Times. ----

for d in "plain.raw" "sparse disk.img" "$esc3"; do
  src=$d
  [ "$d" = "$esc3" ] && src=$name3
  m=$(stat -c %Y "$DIR/$src")
  for f in "$MNT/$d" "$MNT/$d/disk.img" "$MNT/$d/snapshots"; do
    [ "$(stat -c %Y "$f")" = "$m" ] || fail "$f: mtime $(stat -c %Y "$f"), image $m"
  done
done
[ "$(stat -c %Y "$MNT")" = "$(stat -c %Y "$DIR")" ] || fail "root mtime"

# ---- What a read-write mount lets change (write-*.sh test the writing). ----

f="$MNT/plain.raw/disk.img"
mode0=$(stat -c %a "$DIR/plain.raw")
python3 -c 'import os,sys; os.chmod(sys.argv[1], 0o600)' "$f" || fail "chmod of a disk fails"
[ "$(stat -c %a "$DIR/plain.raw")" = "$mode0" ] || fail "chmod changed the image file's mode"
expect_errno EPERM 'os.mkdir(path)' "$MNT/plain.raw/snapshots/new" || fail "mkdir"
expect_errno EPERM 'open(path, "w")' "$MNT/newfile" || fail "create at the top"
expect_errno EPERM 'os.rename(path, path + "x")' "$MNT/plain.raw" || fail "rename"
compare "$f" "$DIR/plain.raw"

# ---- Inode numbers stable across a remount. ----

(cd "$MNT" && find . -printf '%i %p\n' | LC_ALL=C sort -k2) >"$TEST_DIR/inodes1"
[ "$(head -1 "$TEST_DIR/inodes1")" = "1 ." ] || fail "root inode $(head -1 "$TEST_DIR/inodes1")"
[ "$(cut -d' ' -f1 "$TEST_DIR/inodes1" | sort | uniq -d)" = "" ] ||
  fail "duplicate inode numbers"
stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"
mountpoint -q "$MNT" && fail "still mounted"
# mount.fuse3 style: SOURCE MOUNTPOINT -o OPTIONS, with ro.
start_vmdiskfs "$MNT" vmdiskfs -o ro,images="$DIR"
(cd "$MNT" && find . -printf '%i %p\n' | LC_ALL=C sort -k2) >"$TEST_DIR/inodes2"
diff "$TEST_DIR/inodes1" "$TEST_DIR/inodes2" || fail "inode numbers changed"
expect_errno EROFS 'os.open(path, os.O_WRONLY)' "$f" || fail "write open under ro"
expect_errno EROFS 'os.open(path, os.O_RDWR)' "$f" || fail "rdwr open under ro"
expect_errno EROFS 'os.truncate(path, 0)' "$f" || fail "truncate under ro"
expect_errno EROFS 'os.chmod(path, 0o600)' "$f" || fail "chmod under ro"
expect_errno EROFS 'os.unlink(path)' "$f" || fail "unlink under ro"
expect_errno EROFS 'os.mkdir(path)' "$MNT/plain.raw/snapshots/new" || fail "mkdir under ro"
expect_errno EROFS 'open(path, "w")' "$MNT/plain.raw/newfile" || fail "create under ro"
compare "$f" "$DIR/plain.raw"

# ---- Changes in DIR show without remount. ----

in_root () { [ -d "$MNT/$1" ]; }
not_in_root () { ! ls -1 "$MNT" | grep -qxF "$1"; }

cp "$DIR/plain.raw" "$DIR/added.raw"
wait_for 5 in_root added.raw || fail "a new image did not appear"
compare "$MNT/added.raw/disk.img" "$DIR/plain.raw"
# An open file keeps reading after its image is removed.
exec 7<"$MNT/added.raw/disk.img"
rm "$DIR/added.raw"
wait_for 5 not_in_root added.raw || fail "a removed image did not disappear"
[ ! -e "$MNT/added.raw/disk.img" ] || fail "removed image still reachable"
cmp <(cat <&7) "$DIR/plain.raw" || fail "reading an open file of a removed image"
exec 7<&-
# An image rewritten in place: new size and bytes.
head -c $((2 * MiB)) /dev/urandom >"$DIR/plain.raw"
size_is () { [ "$(stat -c %s "$1")" = "$2" ]; }
wait_for 5 size_is "$f" $((2 * MiB)) || fail "rewritten image keeps its size"
compare "$f" "$DIR/plain.raw"

if $have_qcow2; then
  has_snap () { [ -f "$MNT/vm.qcow2/snapshots/$1/disk.img" ]; }
  no_snap () { ! ls -1 "$MNT/vm.qcow2/snapshots" | grep -qxF "$1"; }
  qemu-img snapshot -c later "$Q"
  wait_for 5 has_snap later || fail "a new snapshot did not appear"
  qemu-img snapshot -d first "$Q"
  wait_for 5 no_snap first || fail "a deleted snapshot did not disappear"
  qemu-img convert -O raw "$Q" "$TEST_DIR/vm.raw"
  compare "$MNT/vm.qcow2/snapshots/later/disk.img" "$TEST_DIR/vm.raw"
fi

# ---- A corrupt image: EIO on read, a log line, the others still work. ----

{ printf 'QFI\xfb\0\0\0\3'; head -c 4096 /dev/urandom; } >"$DIR/broken.qcow2"
wait_for 5 in_root broken.qcow2 || fail "the corrupt image is not shown"
if cat "$MNT/broken.qcow2/disk.img" >/dev/null 2>"$TEST_DIR/broken.err"; then
  fail "reading a corrupt image succeeded"
fi
grep -q 'Input/output error' "$TEST_DIR/broken.err" ||
  fail "corrupt image: $(cat "$TEST_DIR/broken.err")"
grep -q 'broken.qcow2' "$(vmdiskfs_log "$MNT")" || fail "no log line about broken.qcow2"
compare "$MNT/$esc3/disk.img" "$DIR/$name3"
compare "$MNT/sparse disk.img/disk.img" "$DIR/sparse disk.img"
$have_qcow2 && compare "$MNT/vm.qcow2/disk.img" "$TEST_DIR/vm.raw"

# ---- Parallel readers. ----

pids=()
for i in 1 2 3 4; do
  cmp "$MNT/sparse disk.img/disk.img" "$DIR/sparse disk.img" &
  pids+=($!)
done
for p in "${pids[@]}"; do
  wait "$p" || fail "a parallel reader failed"
done

stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"
grep -i 'warning\|assert\|leak' "$(vmdiskfs_log "$MNT")" && fail "warnings in the log"

# ---- allow_other,default_permissions: the image's read bits count. ----

if [ "$(id -u)" = 0 ] && command -v runuser >/dev/null && id nobody >/dev/null 2>&1; then
  chmod 0755 "$TEST_DIR"
  chmod 0600 "$DIR/plain.raw"
  start_vmdiskfs "$MNT" -o allow_other,default_permissions,images="$DIR"
  runuser -u nobody -- cat "$MNT/sparse disk.img/disk.img" >/dev/null ||
    fail "nobody cannot read a 0644 image's disk"
  if runuser -u nobody -- cat "$MNT/plain.raw/disk.img" >/dev/null 2>&1; then
    fail "nobody can read a 0600 image's disk"
  fi
  cat "$MNT/plain.raw/disk.img" >/dev/null || fail "root cannot read"
  stop_vmdiskfs "$MNT" || fail "the daemon exited with $?"
  chmod 0644 "$DIR/plain.raw"
  chmod 0700 "$TEST_DIR"
else
  echo "SKIP (part): allow_other needs root, runuser and the user nobody"
fi

# ---- Single-threaded. ----

start_vmdiskfs "$MNT" -s -o images="$DIR"
compare "$MNT/sparse disk.img/disk.img" "$DIR/sparse disk.img"
stop_vmdiskfs "$MNT" || fail "the single-threaded daemon exited with $?"

# ---- Detached (no -f): nothing on stdout, the pidfile once it answers. ----

pidfile=$TEST_DIR/daemon.pid
# (The first scan logs to stderr before detaching: broken.qcow2.)
"$VMDISKFS" -o images="$DIR",pidfile="$pidfile" "$MNT" >"$TEST_DIR/daemon.out" 2>"$TEST_DIR/daemon.err" ||
  fail "the detached daemon did not start: $(cat "$TEST_DIR/daemon.err")"
on_exit "mountpoint -q '$MNT' && fusermount3 -u '$MNT'"
wait_for 30 test -s "$pidfile" || fail "no pidfile from the detached daemon"
pid=$(cat "$pidfile")
compare "$MNT/$esc3/disk.img" "$DIR/$name3"
[ ! -s "$TEST_DIR/daemon.out" ] || fail "the daemon wrote to stdout: $(cat "$TEST_DIR/daemon.out")"
fusermount3 -u "$MNT" || fail "unmount of the detached daemon"
gone () { ! kill -0 "$pid" 2>/dev/null; }
wait_for 10 gone || fail "the detached daemon did not exit after unmount"
[ ! -e "$pidfile" ] || fail "the pidfile was not removed"
echo PASS
