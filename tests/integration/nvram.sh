#!/bin/bash
# vmdiskfs - a UEFI domain's NVRAM (its <os><nvram>, the variable store)
# as <domain>/nvram.fd, with a real libvirtd and qemu (OVMF, the ovmf
# package).  Shut-off domains with <loader type='pflash'> and <nvram> in
# its text form and in the storage source form (<nvram type='file'>
# <source file=.../>): nvram.fd has the file's bytes, size and mtime; a
# domain whose NVRAM file does not exist yet (libvirt makes it at the
# first start) shows none; snapshots/ never hold one.  Restored with cp,
# rsync -a (staging file + rename), tar -xSf (unlink + create) and cat >
# from backups with other bytes: the file is the backup (and has its
# mtime where the tool sets it), the staging directory empty, the domain
# shut off.  While nvram.fd is open for writing, qemu's locks are on the
# file and `virsh start` fails.  Started (TCG): reading works, opening
# for writing is EBUSY and the file does not change.  The first start of
# the domain without one makes the file, and its nvram.fd appears; so
# for a domain with <os firmware='efi'> (no <nvram> in its definition:
# the file at libvirt's default path), restored by cp.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 qemu-img qemu-io rsync tar cmp
lv_start
qcow2_supported || skip "the qcow2 reader is not built"
CODE=/usr/share/OVMF/OVMF_CODE.fd
TEMPLATE=/usr/share/OVMF/OVMF_VARS.fd
[ -r "$CODE" ] && [ -r "$TEMPLATE" ] ||
  skip "no $CODE or $TEMPLATE (the ovmf package: tests/install-deps.sh)"

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
IMG=$TEST_DIR/img
BK=$TEST_DIR/backup
STAGE=$TEST_DIR/staging
mkdir -p "$IMG" "$BK"
mkdir -m 0700 "$STAGE"

staging_empty () { [ -z "$(ls -A "$STAGE")" ] || { ls -la "$STAGE" >&2; return 1; }; }
unlocked () { ! image_locked "$1"; }
state () { lv_virsh domstate "$1" 2>/dev/null; }
mtime () { stat -c %y "$1"; }
size () { stat -c %s "$1"; }
absent () { [ ! -e "$1" ] && ! ls -a "$(dirname "$1")" | grep -qx "$(basename "$1")"; }

# uefi DOMAIN NVRAM-ELEMENT: DOMAIN redefined with OVMF as its firmware
# and that <nvram> element.
uefi ()
{
  lv_virsh dumpxml --inactive "$1" | python3 -c '
import sys
import xml.etree.ElementTree as ET
d = ET.parse(sys.stdin)
os_ = d.getroot().find("os")
loader = ET.SubElement(os_, "loader", readonly="yes", type="pflash")
loader.text = sys.argv[1]
os_.append(ET.fromstring(sys.argv[2]))
d.write(sys.argv[3])' "$CODE" "$2" "$TEST_DIR/uefi.xml" ||
    fail "editing the XML of $1"
  lv_virsh define "$TEST_DIR/uefi.xml" >/dev/null ||
    fail "virsh define $1 with $2: $(cat "$TEST_DIR/uefi.xml")"
}

# ---- Domains: the text form (a qcow2 disk with a snapshot), the source
# form, and one whose NVRAM file does not exist yet. ----

D=$P-uefi
A=$IMG/uefi.qcow2
VARS=$IMG/uefi_VARS.fd
lv_image qcow2 "$A" 16M
qemu-img snapshot -c s1 "$A" || fail "qemu-img snapshot -c s1 $A"
cp "$TEMPLATE" "$VARS"
printf 'vmdiskfs nvram test' | dd of="$VARS" bs=1 seek=70000 conv=notrunc status=none
touch -d '2022-02-03 04:05:06.123456789' "$VARS"
lv_define "$D" qcow2:vda:"$A"
uefi "$D" "<nvram template='$TEMPLATE'>$VARS</nvram>"

D2=$P-source
VARS2=$IMG/source_VARS.fd
lv_image raw "$IMG/source.raw" 1M
cp "$TEMPLATE" "$VARS2"
lv_define "$D2" raw:vda:"$IMG/source.raw"
uefi "$D2" "<nvram type='file'><source file='$VARS2'/></nvram>"
echo "$D2's nvram as libvirt keeps it: $(lv_virsh dumpxml --inactive "$D2" | grep -A2 '<nvram')"

D3=$P-new
VARS3=$IMG/new_VARS.fd
lv_image raw "$IMG/new.raw" 1M
lv_define "$D3" raw:vda:"$IMG/new.raw"
uefi "$D3" "<nvram template='$TEMPLATE'>$VARS3</nvram>"
[ ! -e "$VARS3" ] || fail "$VARS3 exists after virsh define"

# <os firmware='efi'>: libvirt chooses the firmware at each start, and
# (libvirt 9.0) the definition names no <nvram>: the store is at
# libvirt's default path, made at the first start.
D4=$P-auto
VARS4=/var/lib/libvirt/qemu/nvram/${D4}_VARS.fd
lv_image raw "$IMG/auto.raw" 1M
lv_define "$D4" raw:vda:"$IMG/auto.raw"
lv_virsh dumpxml --inactive "$D4" | python3 -c '
import sys
import xml.etree.ElementTree as ET
d = ET.parse(sys.stdin)
d.getroot().find("os").set("firmware", "efi")
d.write(sys.argv[1])' "$TEST_DIR/auto.xml" || fail "editing the XML of $D4"
lv_virsh define "$TEST_DIR/auto.xml" >/dev/null || fail "virsh define $D4 (firmware='efi')"
on_exit "rm -f '$VARS4'"
[ ! -e "$VARS4" ] || fail "$VARS4 exists before $D4 ever started"

lv_mount "$MNT" -o staging="$STAGE"
echo "mounted $(vmdiskfs_pid "$MNT")"
DD=$MNT/$(lv_escape "$D")
[ -f "$DD/vda.img" ] || fail "no vda.img in $DD: $(ls "$DD")"

# ---- What the tree shows. ----

check "$D/nvram.fd is not shown: $(ls "$DD")" test -f "$DD/nvram.fd"
check "$D/nvram.fd: bytes differ from $VARS" same_bytes "$DD/nvram.fd" "$VARS"
check "$D/nvram.fd: size $(size "$DD/nvram.fd"), the file's $(size "$VARS")" \
  eq "$(size "$DD/nvram.fd")" "$(size "$VARS")"
check "$D/nvram.fd: mtime $(mtime "$DD/nvram.fd"), the file's $(mtime "$VARS")" \
  eq "$(mtime "$DD/nvram.fd")" "$(mtime "$VARS")"
check "$D/snapshots/s1 is not shown: $(ls "$DD/snapshots")" test -f "$DD/snapshots/s1/vda.img"
check "$D/snapshots/s1 has an nvram.fd: $(ls "$DD/snapshots/s1")" absent "$DD/snapshots/s1/nvram.fd"
DD2=$MNT/$(lv_escape "$D2")
check "$D2/nvram.fd (<nvram type='file'>): bytes: $(ls "$DD2")" same_bytes "$DD2/nvram.fd" "$VARS2"
DD3=$MNT/$(lv_escape "$D3")
check "$D3: not shown: $(ls "$MNT")" test -f "$DD3/domain.xml"
check "$D3: nvram.fd shown for a file that does not exist: $(ls "$DD3")" absent "$DD3/nvram.fd"
echo "shown: $(ls "$DD" | tr '\n' ' ')/ $(ls "$DD3" | tr '\n' ' ')"

# ---- Restores, each from a backup with other bytes. ----

i=0
for tool in cp rsync tar-S cat; do
  i=$((i + 1))
  b=$BK/nvram.fd
  cp "$VARS" "$b"
  dd if=/dev/urandom of="$b" bs=4096 count=2 seek=$((i * 3)) conv=notrunc status=none
  touch -d "2021-06-07 08:09:1$i" "$b"
  backup_tar "$b"
  same_bytes "$b" "$VARS" && fail "backup $i equals $VARS"
  what="$tool onto $D/nvram.fd"
  rc=0
  restore_with "$tool" "$b" "$DD/nvram.fd" 2>"$TEST_DIR/tool.err" || rc=$?
  check "$what: exit $rc: $(cat "$TEST_DIR/tool.err")" eq $rc 0
  check "$what: still locked after the tool exited" wait_for 10 unlocked "$VARS"
  check "$what: $VARS differs from the backup" same_bytes "$VARS" "$b"
  check "$what: the mount's nvram.fd differs from the backup" same_bytes "$DD/nvram.fd" "$b"
  check "$what: size $(size "$VARS")" eq "$(size "$VARS")" "$(size "$b")"
  case $tool in
    rsync|tar-S)
      check "$what: mtime $(mtime "$VARS"), the backup's $(mtime "$b")" \
        eq "$(stat -c %Y "$VARS")" "$(stat -c %Y "$b")" ;;
  esac
  check "$what: the staging directory is not empty" staging_empty
  check "$what: the domain is $(state "$D")" eq "$(state "$D")" "shut off"
done
echo "restored nvram.fd with cp, rsync -a, tar -xSf and cat >"

# ---- Open for writing: qemu's locks on the file, the domain cannot start.

exec 3>>"$DD/nvram.fd" || fail "exec 3>>$DD/nvram.fd"
check "nvram.fd open for writing: $VARS not locked" image_locked "$VARS"
if lv_virsh start "$D" >/dev/null 2>"$TEST_DIR/start.err"; then
  check "virsh start succeeded while nvram.fd is open for writing" false
  lv_virsh destroy "$D" >/dev/null 2>&1
else
  check "virsh start: not qemu's lock error: $(cat "$TEST_DIR/start.err")" \
    grep -qi 'lock' "$TEST_DIR/start.err"
fi
check "the domain is $(state "$D") while nvram.fd is open for writing" \
  eq "$(state "$D")" "shut off"
exec 3>&-
check "nvram.fd closed: $VARS still locked" wait_for 10 unlocked "$VARS"

# ---- Running: readable, not writable. ----

t0=$(date +%s)
if timeout 60 virsh -q -c "$LV_URI" start "$D" >/dev/null 2>"$TEST_DIR/start.err" &&
   lv_running "$D"; then
  echo "virsh start $D (OVMF, $LV_DOMTYPE): $(($(date +%s) - t0)) s"
  # (OVMF may write its variables meanwhile: no byte comparison.)
  check "running: reading nvram.fd" eval 'cat "$DD/nvram.fd" >/dev/null'
  e=$(op_errno 'os.close(os.open(path, os.O_WRONLY))' "$DD/nvram.fd")
  if [ "$e" != EBUSY ]; then
    check "running: open nvram.fd for writing gave $e (the domain is $(state "$D"); the log's tail: $(tail -4 "$(vmdiskfs_log "$MNT")"))" false
  fi
  check "running: no log line naming $D and nvram.fd" \
    grep -q "$D.*nvram.fd.*running" "$(vmdiskfs_log "$MNT")"
  cp "$VARS" "$BK/running.fd"
  dd if=/dev/urandom of="$BK/running.fd" bs=4096 count=4 seek=20 conv=notrunc status=none
  if cp "$BK/running.fd" "$DD/nvram.fd" 2>/dev/null; then
    check "running: cp onto nvram.fd succeeded" false
  fi
  if rsync -a "$BK/running.fd" "$DD/nvram.fd" 2>/dev/null; then
    check "running: rsync -a onto nvram.fd succeeded" false
  fi
  check "running: the staging directory is not empty" wait_for 5 staging_empty
  check "running: $VARS is the backup's (a restore went through)" \
    eval '! same_bytes "$VARS" "$BK/running.fd"'
  lv_virsh destroy "$D" >/dev/null 2>&1
else
  echo "SKIP (part): virsh start $D failed after $(($(date +%s) - t0)) s: $(cat "$TEST_DIR/start.err")"
fi

# ---- The first start makes the NVRAM file: nvram.fd appears. ----

if lv_virsh start "$D3" >/dev/null 2>"$TEST_DIR/start.err"; then
  check "$D3 started: nvram.fd not shown: $(ls "$DD3")" wait_for 15 test -f "$DD3/nvram.fd"
  lv_virsh destroy "$D3" >/dev/null 2>&1
  check "$D3: libvirt did not make $VARS3" test -f "$VARS3"
  check "$D3/nvram.fd differs from $VARS3" same_bytes "$DD3/nvram.fd" "$VARS3"
else
  echo "SKIP (part): virsh start $D3 failed: $(cat "$TEST_DIR/start.err")"
fi

DD4=$MNT/$(lv_escape "$D4")
check "$D4 (firmware='efi', never started): nvram.fd shown: $(ls "$DD4")" absent "$DD4/nvram.fd"
if lv_virsh start "$D4" >/dev/null 2>"$TEST_DIR/start.err"; then
  check "$D4 started: nvram.fd not shown: $(ls "$DD4")" wait_for 15 test -f "$DD4/nvram.fd"
  lv_virsh destroy "$D4" >/dev/null 2>&1
  check "$D4: libvirt did not make $VARS4" test -f "$VARS4"
  check "$D4/nvram.fd differs from $VARS4" same_bytes "$DD4/nvram.fd" "$VARS4"
  cp "$VARS4" "$BK/auto.fd"
  dd if=/dev/urandom of="$BK/auto.fd" bs=4096 count=1 seek=7 conv=notrunc status=none
  check "cp onto $D4/nvram.fd" cp "$BK/auto.fd" "$DD4/nvram.fd"
  check "$D4: $VARS4 differs from the backup" same_bytes "$VARS4" "$BK/auto.fd"
else
  echo "SKIP (part): virsh start $D4 (firmware='efi') failed: $(cat "$TEST_DIR/start.err")"
fi

# ---- A deleted UEFI VM copied back: its NVRAM file is made again in
# libvirt's nvram directory, with the backup's bytes (restore-vm.sh does
# the rest of a whole-VM restore). ----

if [ -f "$VARS4" ]; then
  lv_pool "$P-pool" "$IMG"      # its disk's directory: a storage pool
  check "cp -a $DD4 (backup)" cp -a "$DD4" "$BK/"
  B4=$BK/$(basename "$DD4")
  check "the backup has no nvram.fd: $(ls "$B4")" test -f "$B4/nvram.fd"
  lv_virsh undefine --nvram "$D4" >/dev/null || fail "virsh undefine --nvram $D4"
  check "$VARS4 still there after undefine --nvram" test ! -e "$VARS4"
  check "$DD4 still shown after undefine" wait_for 10 test ! -e "$DD4"
  check "cp -a of the backup back into the mount" cp -a "$B4" "$MNT/"
  check "$D4 not defined again" lv_virsh dominfo "$D4"
  check "$VARS4 not made again" test -f "$VARS4"
  check "$VARS4 differs from the backup's nvram.fd" same_bytes "$VARS4" "$B4/nvram.fd"
  check "$VARS4 mode $(stat -c %a "$VARS4" 2>&1), want 600" eq "$(stat -c %a "$VARS4" 2>&1)" 600
  check "$D4/nvram.fd differs from the backup's" same_bytes "$DD4/nvram.fd" "$B4/nvram.fd"
  check "staging not empty" wait_for 5 staging_empty
fi

stop_vmdiskfs "$MNT" || check "the daemon exited with $?" false
[ $failures = 0 ] || fail "$failures checks failed"
echo PASS
