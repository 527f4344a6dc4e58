# vmdiskfs - shared helpers for the integration tests (bash).
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Source it first thing:   . "$(dirname "$0")/functions.sh"
#
# Variables it sets (override from the environment):
#   VMDISKFS      the daemon          (default: the build tree's ./vmdiskfs)
#   VDCAT         formats/vd-cat      (default: the build tree's)
#   TEST_DIR      a fresh temporary directory, removed at exit (under
#                 $TEST_TMPDIR, default /var/tmp: disk-backed, holes work)
#
# Functions:
#   require CMD...            skip the test (exit 77) unless every CMD exists
#   skip MSG                  print "SKIP: MSG", exit 77
#   fail MSG                  print "FAIL: MSG", exit 1 (cleanup runs)
#   on_exit CMD               run CMD (a string for eval) at exit, last
#                             registered first, before mounts are stopped
#   start_vmdiskfs MNT ARG... mount with "$VMDISKFS" -f ARG... MNT in the
#                             background (creates MNT), log in MNT.log next
#                             to it ($TEST_DIR/<basename MNT>.log), waits
#                             until the mount answers (its pidfile); fails
#                             the test if it does not within 30 s
#   stop_vmdiskfs MNT         fusermount3 -u MNT, wait for the daemon to
#                             exit (SIGCONT first; killed after 10 s);
#                             returns its exit status
#   vmdiskfs_log MNT          the log file of the daemon serving MNT
#   vmdiskfs_pid MNT          its pid
#   compare FILE1 FILE2       cmp, failing the test with both names
#   wait_for SECONDS CMD...   retry CMD every 0.1 s until it succeeds;
#                             returns 1 after SECONDS
#   qcow2_supported           true if the formats library reads qcow2
#                             (the driver has landed)
#   read_errno FILE           read all of FILE: prints "ok", the errno's
#                             name (EIO ...) or TIMEOUT after 20 s (a
#                             hang; needs python3 and timeout)
#   data_ranges FILE          "START END" per data range of FILE, by
#                             SEEK_DATA/SEEK_HOLE (needs python3)
#   image_locked FILE         true if a process holds one of qemu's image
#                             locks on FILE (asked by F_OFD_GETLK, which
#                             takes none; needs python3)
#   qemu_data_ranges IMAGE    the same from `qemu-img map -U` of IMAGE
#                             (adjacent data extents merged; needs
#                             qemu-img and python3)
#
# At exit every mount started here is unmounted and TEST_DIR removed, so a
# failing test leaves no stale mount behind.  Sourcing it skips the test
# (exit 77) when there is no /dev/fuse or fusermount3, and fails it when
# $VMDISKFS is not built.  It sets no shell options (no set -e/-u), and
# works under them (set -eEu, pipefail).

_fn_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_fn_top=${abs_top_builddir:-$_fn_here/../..}
: "${VMDISKFS:=$_fn_top/vmdiskfs}"
: "${VDCAT:=$_fn_top/formats/vd-cat}"
export VMDISKFS VDCAT

declare -A _vmdiskfs_pids=()
_exit_hooks=()

skip ()
{
  echo "SKIP: $*"
  exit 77
}

fail ()
{
  echo "FAIL: $*" >&2
  exit 1
}

require ()
{
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
  done
}

on_exit ()
{
  _exit_hooks+=("$1")
}

_cleanup ()
{
  local rc=$? i m
  set +e
  for ((i = ${#_exit_hooks[@]} - 1; i >= 0; i--)); do
    eval "${_exit_hooks[i]}"
  done
  for m in "${!_vmdiskfs_pids[@]}"; do
    stop_vmdiskfs "$m" >/dev/null 2>&1
  done
  if [ -n "${TEST_DIR:-}" ] && [ -d "$TEST_DIR" ]; then
    # Never recurse into something still mounted.
    if grep -q " $TEST_DIR/" /proc/self/mounts 2>/dev/null; then
      echo "warning: mounts left under $TEST_DIR, not removing it" >&2
    else
      rm -rf "$TEST_DIR"
    fi
  fi
  exit $rc
}

TEST_DIR=$(mktemp -d "${TEST_TMPDIR:-/var/tmp}/vmdiskfs-test.XXXXXX") ||
  fail "mktemp"
trap _cleanup EXIT
trap 'exit 130' INT TERM

# python3 straight to the interpreter: where python3 on PATH is a version
# manager's shim (pyenv's is a bash script running pyenv: about a second
# a call on a busy machine, against a tenth for the interpreter), the
# tests' hundreds of python3 calls cost minutes.  A link first on PATH
# names the interpreter the shim runs; the same python3, only sooner.
_fn_py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || _fn_py=
if [ -n "$_fn_py" ] && [ -x "$_fn_py" ] &&
   [ "$_fn_py" != "$(command -v python3)" ] &&
   mkdir -p "$TEST_DIR/.bin" && ln -s "$_fn_py" "$TEST_DIR/.bin/python3"; then
  PATH=$TEST_DIR/.bin:$PATH
fi

[ -x "$VMDISKFS" ] || fail "$VMDISKFS is not built"
require fusermount3 mountpoint
[ -c /dev/fuse ] || skip "no /dev/fuse"

vmdiskfs_log ()
{
  echo "$TEST_DIR/$(basename "$1").log"
}

vmdiskfs_pid ()
{
  echo "${_vmdiskfs_pids[$1]:-}"
}

start_vmdiskfs ()
{
  local mnt=$1 pidfile log pid i
  shift
  mkdir -p "$mnt"
  pidfile="$TEST_DIR/$(basename "$mnt").pid"
  log=$(vmdiskfs_log "$mnt")
  rm -f "$pidfile"
  "$VMDISKFS" -f -o pidfile="$pidfile" "$@" "$mnt" >>"$log" 2>&1 &
  pid=$!
  _vmdiskfs_pids[$mnt]=$pid
  for ((i = 0; i < 300; i++)); do
    if [ -s "$pidfile" ]; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      unset '_vmdiskfs_pids[$mnt]'
      cat "$log" >&2
      fail "vmdiskfs $* $mnt exited before the mount answered"
    fi
    sleep 0.1
  done
  cat "$log" >&2
  fail "vmdiskfs $* $mnt: the mount did not answer within 30 s"
}

# Is MNT mounted?  From /proc/self/mounts, never with a stat: a stat of a
# mount whose daemon is stopped or hung would hang too.
_is_mounted ()
{
  local esc=${1// /\\040}
  grep -qF " $esc " /proc/self/mounts
}

stop_vmdiskfs ()
{
  local mnt=$1 pid rc i
  pid=${_vmdiskfs_pids[$mnt]:-}
  [ -n "$pid" ] || return 0
  # A stopped daemon (kill -STOP in a test) must run to see the unmount.
  kill -CONT "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    _is_mounted "$mnt" || break
    fusermount3 -u "$mnt" 2>/dev/null && break
    sleep 0.1                   # busy: a reader is finishing
  done
  if _is_mounted "$mnt"; then
    fusermount3 -u -z "$mnt" || true
  fi
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "warning: vmdiskfs $pid did not exit after unmount, killing it" >&2
    kill -TERM "$pid" 2>/dev/null || true
    sleep 2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rc=0
  wait "$pid" || rc=$?
  unset '_vmdiskfs_pids[$mnt]'
  return $rc
}

compare ()
{
  cmp "$1" "$2" || fail "$1 and $2 differ"
}

wait_for ()
{
  local secs=$1 i
  shift
  for ((i = 0; i < secs * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# Does another process hold one of qemu's image locks on FILE (bytes
# 100-299, docs/interop: "perm" and "shared perm" bytes)?  F_OFD_GETLK
# asks without taking a lock, so a qemu opening FILE meanwhile is not
# disturbed.
image_locked ()                 # FILE
{
  python3 - "$1" <<'EOF'
import fcntl, os, struct, sys
F_OFD_GETLK = 36
fd = os.open(sys.argv[1], os.O_RDONLY)
for byte in range(100, 300):
    lk = struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
    if struct.unpack("hh4xqqi4x", fcntl.fcntl(fd, F_OFD_GETLK, lk))[0] != fcntl.F_UNLCK:
        sys.exit(0)
sys.exit(1)
EOF
}

qcow2_supported ()
{
  local img="$TEST_DIR/.probe.qcow2"
  command -v qemu-img >/dev/null 2>&1 || return 1
  [ -x "$VDCAT" ] || return 1
  local rc=1
  qemu-img create -q -f qcow2 "$img" 1M || return 1
  if "$VDCAT" -i "$img" 2>/dev/null | grep -q qcow2; then
    rc=0
  fi
  rm -f "$img"
  return $rc
}

read_errno ()
{
  timeout 20 python3 - "$1" <<'EOF'
import errno, sys
try:
    with open(sys.argv[1], "rb") as f:
        while f.read(1 << 20):
            pass
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
EOF
  [ $? -ne 124 ] || echo "TIMEOUT"
}

data_ranges ()
{
  python3 - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
pos = 0
while pos < size:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    print(d, h)
    pos = h
EOF
}

qemu_data_ranges ()
{
  qemu-img map -U --output=json "$1" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    if not e["data"]:
        continue
    s, t = e["start"], e["start"] + e["length"]
    if out and out[-1][1] == s:
        out[-1][1] = t
    else:
        out.append([s, t])
for s, t in out:
    print(s, t)'
}

# ---- Restoring through the mount (write-*.sh). ----
#
#   restore_with TOOL BACKUP DISK  write BACKUP onto DISK (a disk file in
#                         the mount) the way TOOL does, as typed by a user.
#                         TOOL: cp cp-sparse cp-a cat dd dd-notrunc
#                         dd-sparse pv rsync rsync-inplace rsync-sparse
#                         tar-S tar-overwrite.  BACKUP's base name must be
#                         DISK's (rsync and tar name the file by it); the
#                         tar tools need BACKUP.tar (made by backup_tar).
#                         Returns the tool's status; 77 for pv when it is
#                         not installed.
#   backup_tar BACKUP     make BACKUP.tar holding BACKUP (tar -S: sparse)
#   snapshot_sums IMAGE [BYTES]  "NAME MD5" of each internal snapshot's
#                         bytes (qemu-img convert -l snapshot.name=NAME),
#                         sorted; of the first BYTES only if given: convert
#                         -l gives a snapshot the image's size of today, so
#                         after a resize pass the snapshots' size
#   op_errno STMT PATH    run the Python statement STMT on path: prints
#                         "ok" or the errno's name (EBUSY ...)
#   image_clean IMAGE     qemu-img check exits 0 (no errors, no leaks);
#                         true for raw images (nothing to check)
#   image_format IMAGE    the format qemu-img sees (qcow2, raw, qed ...)
#   data_bytes IMAGE      bytes of IMAGE's disk that qemu-img map calls data
#   rounded_data FILE ALIGN  the data of the sparse FILE (SEEK_DATA) with
#                         each data range rounded out to ALIGN: what a
#                         writer with ALIGN-sized clusters may allocate

restore_with ()                 # TOOL BACKUP DISK
{
  local tool=$1 b=$2 d=$3 dir
  dir=$(dirname "$d")
  case $tool in
    cp) cp "$b" "$d" ;;
    cp-sparse) cp --sparse=always "$b" "$d" ;;
    cp-a) cp -a "$b" "$dir/" ;;
    cat) cat "$b" >"$d" ;;
    dd) dd if="$b" of="$d" bs=1M status=none ;;
    dd-notrunc) dd if="$b" of="$d" bs=1M conv=notrunc status=none ;;
    # conv=sparse skips the all-zero input blocks: they keep the disk's
    # old bytes unless something zeroed it first.  truncate -s 0 is that
    # (O_TRUNC/ftruncate(0) make the disk read as zeros, its size kept).
    dd-sparse)
      truncate -s 0 "$d" &&
        dd if="$b" of="$d" bs=1M conv=notrunc,sparse status=none ;;
    pv)
      command -v pv >/dev/null 2>&1 || return 77
      pv -q "$b" >"$d" ;;
    rsync) rsync -a "$b" "$dir/" ;;
    rsync-inplace) rsync -a --inplace --no-whole-file "$b" "$dir/" ;;
    rsync-sparse) rsync -a --sparse "$b" "$dir/" ;;
    tar-S) tar -xSf "$b.tar" -C "$dir" ;;
    tar-overwrite) tar --overwrite -xf "$b.tar" -C "$dir" ;;
    *) fail "restore_with: no tool $tool" ;;
  esac
}

backup_tar ()                   # BACKUP
{
  tar -cSf "$1.tar" -C "$(dirname "$1")" "$(basename "$1")" ||
    fail "tar -cSf $1.tar"
}

image_format ()
{
  qemu-img info -U --output=json "$1" |
    sed -n 's/.*"format": "\([a-z0-9]*\)".*/\1/p' | head -1
}

snapshot_sums ()                # IMAGE [BYTES]
{
  local img=$1 bytes=${2:-} fmt name t=$TEST_DIR/.snapsum.raw
  fmt=$(image_format "$img")
  qemu-img snapshot -U -l "$img" 2>/dev/null |
    awk 'NR > 2 { print $2 }' | LC_ALL=C sort |
    while read -r name; do
      qemu-img convert -U -f "$fmt" -l snapshot.name="$name" -O raw "$img" "$t" ||
        { echo "$name CONVERT-FAILED"; continue; }
      [ -n "$bytes" ] && truncate -s "$bytes" "$t"
      echo "$name $(md5sum <"$t" | cut -d' ' -f1)"
      rm -f "$t"
    done
}

op_errno ()                     # STMT PATH
{
  python3 - "$1" "$2" <<'EOF'
import errno, os, sys
stmt, path = sys.argv[1], sys.argv[2]
try:
    exec(stmt)
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
EOF
}

image_clean ()                  # IMAGE
{
  local out rc=0
  [ "$(image_format "$1")" = raw ] && return 0
  out=$(qemu-img check -U "$1" 2>&1) || rc=$?
  [ $rc = 0 ] && return 0
  echo "qemu-img check $1: exit $rc: $out" >&2
  return 1
}

data_bytes ()                   # IMAGE
{
  qemu-img map -U --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))'
}

rounded_data ()                 # FILE ALIGN
{
  data_ranges "$1" | awk -v a="$2" '
    { s = int($1 / a) * a; e = int(($2 + a - 1) / a) * a
      if (s < last) s = last
      if (e > s) { t += e - s; last = e } }
    END { print t + 0 }'
}
