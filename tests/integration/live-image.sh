#!/bin/bash
# vmdiskfs - integration test of VD_OPEN_LIVE: reading an image that
# another process keeps writing (the active disk of a running VM).
#
# A writer (qemu-io batches: pattern writes into new and old clusters,
# discards, `qemu-img resize` so that qcow2's L1 table grows and moves,
# internal snapshots created and deleted) runs while readers keep the
# image open and read it again and again (`vd-cat -L -r 0 -u STOP`, one
# CRC32 per pass):
#   - the active image with -L: no pass may fail; the pass started after
#     the writer stopped must equal `qemu-img convert -O raw` (cut to the
#     size at open: the virtual size stays as at open), and the snapshot
#     count it lists must follow the snapshots created meanwhile;
#   - an internal snapshot taken before the writes, opened from the live
#     image: every pass must equal its oracle (copy, snapshot -a, convert);
#   - the same for QED (no snapshots; its tables never move);
#   - a reader without -L is shown to read stale (a NOTE, not a failure).
# Exit 77 (skip) without qemu-img/qemu-io.
#
# SPDX-License-Identifier: GPL-3.0-or-later

set -u

here=$(cd "$(dirname "$0")" && pwd)
VDCAT=${VDCAT:-$here/../../formats/vd-cat}
case $VDCAT in /*) ;; *) VDCAT=$(pwd)/$VDCAT ;; esac

command -v qemu-img >/dev/null 2>&1 || { echo "SKIP: no qemu-img"; exit 77; }
command -v qemu-io >/dev/null 2>&1 || { echo "SKIP: no qemu-io"; exit 77; }
[ -x "$VDCAT" ] || { echo "FAIL: $VDCAT not built"; exit 1; }
# LV_ACCEL: kvm where this root shell can open /dev/kvm, else tcg.
. "$here/libvirt-functions.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vd-live.XXXXXX") || exit 1
pids=()
cleanup () {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
cd "$tmp" || exit 1

failures=0
fail () { echo "FAIL: $*"; failures=$((failures + 1)); }
pass () { echo "ok: $*"; }

MiB=$((1 << 20))

qio () {                        # qio FORMAT IMAGE CMD...
  local fmt=$1 img=$2 c args=()
  shift 2
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null
}

# CRC32 of a raw file as vd-cat -r prints it.
crc_of () { "$VDCAT" -f raw -r 1 "$1" | awk '{ print $2 }'; }

# The oracle of IMG's active disk, cut to SIZE bytes.
oracle_crc () {                 # oracle_crc FORMAT IMG SIZE
  qemu-img convert -f "$1" -O raw "$2" oracle.raw || return 1
  truncate -s "$3" oracle.raw
  crc_of oracle.raw
}

# Start a reader in the background: reader NAME VDCAT-ARGS...
reader () {
  local name=$1
  shift
  "$VDCAT" "$@" -r 0 -u stop > "$name.out" 2> "$name.err" &
  pids+=($!)
  eval "pid_$name=$!"
}

# Wait for reader NAME; it must exit 0 with no error and several passes.
check_reader () {               # check_reader NAME
  local name=$1 pid rc
  eval "pid=\$pid_$name"
  wait "$pid"
  rc=$?
  if [ "$rc" -ne 0 ] || [ -s "$name.err" ]; then
    fail "$name reader: exit $rc: $(head -3 "$name.err")"
    return 1
  fi
  pass "$name reader: $(wc -l < "$name.out") passes, no error"
}

# The writer: BATCHES batches of qemu-io writes into the first SIZE0 bytes
# (the part the readers see), new clusters and rewrites.
write_batch () {                # write_batch FORMAT IMG N SIZE0
  local fmt=$1 img=$2 n=$3 size0=$4 off len
  off=$(( (n * 7919 % (size0 / 65536)) * 65536 ))
  len=$(( (n % 5 + 1) * 65536 ))
  [ $((off + len)) -le "$size0" ] || off=$((size0 - len))
  qio "$fmt" "$img" "write -P $((n % 250 + 1)) $off $len" \
    "write -P $((n % 13 + 100)) $(( (n * 104729 % (size0 / 4096)) * 4096 )) 4096"
}

# ---- qcow2 ----

SIZE0=$((64 * MiB))
qemu-img create -q -f qcow2 -o cluster_size=65536 live.qcow2 $SIZE0
qio qcow2 live.qcow2 "write -P 0x11 0 8M" "write -P 0x22 32M 4M" \
  "write -z 40M 1M"
qemu-img snapshot -c before live.qcow2
cp live.qcow2 snapcopy.qcow2
qemu-img snapshot -a before snapcopy.qcow2
qemu-img convert -O raw snapcopy.qcow2 before.raw
before_crc=$(crc_of before.raw)
stale_start=$(oracle_crc qcow2 live.qcow2 $SIZE0)

reader live -L live.qcow2
reader snap -L -s before live.qcow2
reader stale live.qcow2
sleep 0.2

for n in $(seq 1 60); do
  write_batch qcow2 live.qcow2 "$n" $SIZE0 || fail "qemu-io write batch $n"
  case $n in
    10) # grow past the L1 table's coverage (512 MiB per entry with
        # 64 KiB clusters): qemu moves the L1 table and frees the old one
        qemu-img resize -q live.qcow2 2G || fail "resize"
        qio qcow2 live.qcow2 "write -P 0x77 1536M 1M" ;;
    20) # a snapshot shares the L2 tables: later writes copy them
        qemu-img snapshot -c mid live.qcow2 || fail "snapshot -c mid" ;;
    30) qio qcow2 live.qcow2 "discard 0 1M" "write -P 0x99 1M 64k" ;;
    40) qemu-img snapshot -d mid live.qcow2 || fail "snapshot -d mid"
        qemu-img snapshot -c late live.qcow2 || fail "snapshot -c late" ;;
    45) qemu-img resize -q live.qcow2 3G || fail "resize" ;;
  esac
done
: > stop
check_reader live
check_reader snap
wait "$pid_stale"               # may fail: it reads freed tables

expect=$(oracle_crc qcow2 live.qcow2 $SIZE0)
[ "$expect" != "$stale_start" ] || fail "the writer changed nothing?"
last=$(tail -1 live.out)
if [ "$(echo "$last" | awk '{ print $2 }')" = "$expect" ]; then
  pass "qcow2 live: last pass equals qemu-img convert"
else
  fail "qcow2 live: last pass $last, expected CRC $expect"
fi
# before, late: two snapshots at the end; mid was listed meanwhile.
[ "$(echo "$last" | awk '{ print $3 }')" = 2 ] ||
  fail "qcow2 live: last pass lists $(echo "$last" | awk '{ print $3 }') snapshots, expected 2"
if awk '$3 == 2 { two = 1 } END { exit !two }' live.out &&
   grep -q ' 1$' live.out; then
  pass "qcow2 live: snapshots created while open are listed"
else
  fail "qcow2 live: snapshot counts seen: $(awk '{ print $3 }' live.out | uniq | tr '\n' ' ')"
fi
if awk -v c="$before_crc" '$2 != c { bad = 1 } END { exit bad }' snap.out; then
  pass "qcow2 snapshot before: all $(wc -l < snap.out) passes exact"
else
  fail "qcow2 snapshot before: passes differ from its oracle $before_crc:" \
    "$(awk '{ print $2 }' snap.out | sort | uniq -c | tr '\n' ' ')"
fi
if [ "$(tail -1 stale.out | awk '{ print $2 }')" != "$expect" ]; then
  echo "NOTE: without -L the last pass reads stale data, as documented" \
    "$(head -1 stale.err)"
fi
# A fresh open of the final image, full size, byte for byte.
qemu-img convert -O raw live.qcow2 full.raw
if "$VDCAT" -L live.qcow2 | cmp -s - full.raw; then
  pass "qcow2: fresh -L read of the grown image equals qemu-img convert"
else
  fail "qcow2: fresh -L read of the grown image differs"
fi
qemu-img check -q live.qcow2 || fail "qemu-img check live.qcow2"

# ---- qcow2 under a running qemu ----
# qemu-system-x86_64 with KVM (no guest OS: it sits in the firmware),
# writing its disk through the monitor's qemu-io command, growing it with
# block_resize and taking a snapshot with savevm.  qemu's own metadata
# cache is write-back: the readers see what a host crash would leave, and
# everything once qemu flushed (flush, quit).

vm_phase () {
  local n
  qemu-img create -q -f qcow2 vm.qcow2 $SIZE0
  qio qcow2 vm.qcow2 "write -P 0x31 0 4M" "write -P 0x32 48M 2M"
  qemu-img snapshot -c before vm.qcow2
  cp vm.qcow2 vmcopy.qcow2
  qemu-img snapshot -a before vmcopy.qcow2
  qemu-img convert -O raw vmcopy.qcow2 vmbefore.raw
  before_crc=$(crc_of vmbefore.raw)

  qemu-system-x86_64 -accel "$LV_ACCEL" -machine pc -m 64 -nographic \
    -display none -serial none -monitor unix:mon.sock,server=on,wait=off \
    -drive file=vm.qcow2,format=qcow2,if=virtio > vm.log 2>&1 &
  pids+=($!)
  pid_vm=$!
  for n in $(seq 50); do [ -S mon.sock ] && break; sleep 0.1; done
  hmp () { printf '%s\n' "$@" | timeout 20 nc -U -q 1 mon.sock >> hmp.log; }
  hmp "info block" || { fail "qemu monitor not answering: $(cat vm.log)"; return; }

  rm -f stop
  reader vmlive -L vm.qcow2
  reader vmsnap -L -s before vm.qcow2
  for n in $(seq 1 12); do
    hmp "qemu-io virtio0 \"write -P $((n + 1)) $((n * 3))M 1M\"" \
        "qemu-io virtio0 \"write -P $((n + 50)) $((n * 5 % 64))M 64k\"" \
        "qemu-io virtio0 flush"
    case $n in
      4) hmp "block_resize virtio0 2G" \
           "qemu-io virtio0 \"write -P 0x77 1536M 1M\"" ;;
      8) hmp "savevm mid" ;;
    esac
  done
  hmp quit
  wait "$pid_vm" || fail "qemu exited with an error: $(cat vm.log)"
  : > stop
  check_reader vmlive
  check_reader vmsnap
  expect=$(oracle_crc qcow2 vm.qcow2 $SIZE0)
  last=$(tail -1 vmlive.out)
  if [ "$(echo "$last" | awk '{ print $2 }')" = "$expect" ]; then
    pass "running qemu: last pass equals qemu-img convert"
  else
    fail "running qemu: last pass $last, expected CRC $expect"
  fi
  [ "$(echo "$last" | awk '{ print $3 }')" = 2 ] ||
    fail "running qemu: last pass lists $(echo "$last" | awk '{ print $3 }') snapshots, expected 2 (savevm)"
  if awk -v c="$before_crc" '$2 != c { bad = 1 } END { exit bad }' vmsnap.out
  then
    pass "running qemu: snapshot before: all $(wc -l < vmsnap.out) passes exact"
  else
    fail "running qemu: snapshot before differs from its oracle $before_crc:" \
      "$(awk '{ print $2 }' vmsnap.out | sort | uniq -c | tr '\n' ' ')"
  fi
}

if command -v qemu-system-x86_64 >/dev/null 2>&1 &&
   command -v nc >/dev/null 2>&1; then
  [ "$LV_ACCEL" = kvm ] || echo "note: no usable /dev/kvm: the running qemu uses TCG"
  vm_phase
else
  echo "NOTE: no qemu-system-x86_64 or nc: running-qemu part skipped"
fi

# ---- QED ----

qemu-img create -q -f qed -o cluster_size=65536 live.qed $SIZE0
qio qed live.qed "write -P 0x11 0 8M"
rm -f stop
reader qlive -L live.qed
sleep 0.2
for n in $(seq 1 40); do
  write_batch qed live.qed "$n" $SIZE0 || fail "qemu-io qed write batch $n"
  [ "$n" = 20 ] && { qemu-img resize -q -f qed live.qed 1G || fail "qed resize"; }
done
: > stop
check_reader qlive
expect=$(oracle_crc qed live.qed $SIZE0)
last=$(tail -1 qlive.out)
if [ "$(echo "$last" | awk '{ print $2 }')" = "$expect" ]; then
  pass "qed live: last pass equals qemu-img convert"
else
  fail "qed live: last pass $last, expected CRC $expect"
fi

[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "all ok"
