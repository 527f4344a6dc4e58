#!/bin/bash
# vmdiskfs - quiesce with a REAL guest agent (domsnap.c): a libvirt
# domain (TCG: direct kernel boot hangs under KVM here) boots Debian's
# kernel with a busybox initramfs that mounts an ext4 file system from
# its qcow2 disk vda and runs the host's qemu-ga (copied in with its
# libraries) on the org.qemu.guest_agent.0 channel.  Then, through
# vd-domsnap:
#   create -q: done libvirt,paused,quiesced (frozen, disk-only by the own
#     path, thawed); state disk-snapshot, no VM state; the guest agent
#     answers afterwards (thawed, not left frozen); the snapshot's ext4
#     is clean (no needs_recovery: frozen, the journal was flushed);
#   vmdisk-snapshot create --quiesce says "filesystems frozen";
#   create without -q: with VM state, and its ext4 needs recovery (the
#     oracle tells the two apart);
#   delete of both leaves no tag and no metadata.
# domsnap.sh runs it; skips (77) without qemu-ga, mkfs.ext4/dumpe2fs, or
# the kernel package.  About a minute, most of it the TCG boot.
#
# The kernel, busybox and initramfs are prepared once, cached under
# /var/tmp/vmdiskfs-agent-guest/KERNELVERSION/ (remove it to rebuild).
#
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"

: "${VDDOMSNAP:=$_fn_top/snapshotter/vd-domsnap}"
[ -x "$VDDOMSNAP" ] || skip "$VDDOMSNAP is not built"
QGA=$(command -v qemu-ga || echo /usr/sbin/qemu-ga)
[ -x "$QGA" ] || skip "qemu-ga (qemu-guest-agent) not installed"
require python3 mkfs.ext4 dumpe2fs ldd gzip
lv_start

D=$TEST_DIR
MNT=
lv_alive () { :; }
ds () { "$VDDOMSNAP" -c "$LV_URI" "$@"; }

# ---- The guest: kernel, busybox, modules, qemu-ga with its libraries. ----
cache=${VD_AGENT_CACHE:-/var/tmp/vmdiskfs-agent-guest}
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
       sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
[ -n "$kpkg" ] || skip "apt-cache knows no linux-image-amd64"
kver=${kpkg#linux-image-}
dir=$cache/$kver
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
  virtio_pci virtio_blk virtio_console crc16 mbcache jbd2 crc32c_generic ext4"

# The guest's /init: modules, ext4 from vda on /mnt, qemu-ga on the
# agent's port (found by name, no udev here).
init='#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /mods/*.ko; do insmod "$m" || echo "init: insmod $m failed"; done
mkdir -p /mnt /run /tmp /var/run
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t ext4 /dev/vda /mnt || echo "init: mount /dev/vda failed"
echo booted >/mnt/booted
port=
for p in /sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
done
echo "init: agent port ${port:-none}"
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run &
while :; do sleep 3600; done'

prepare ()
{
  local w=$dir.tmp.$$ r m f n=0 lib
  rm -rf "$w"
  mkdir -p "$w/dl" "$w/x" || return 1
  (cd "$w/dl" && apt-get download "$kpkg" busybox-static >/dev/null 2>&1) ||
    { echo "apt-get download $kpkg busybox-static failed"; return 1; }
  for f in "$w"/dl/*.deb; do dpkg -x "$f" "$w/x" || return 1; done
  r=$w/root
  mkdir -p "$r"/{bin,dev,proc,sys,mods,usr/sbin} || return 1
  cp "$w/x/bin/busybox" "$r/bin/busybox" || return 1
  for m in $modules; do
    f=$(find "$w/x/lib/modules/$kver/kernel" -name "$m.ko" -o -name "$m.ko.xz" |
        head -1)
    [ -n "$f" ] || { echo "module $m not in $kpkg"; return 1; }
    n=$((n + 1))
    case $f in
      *.xz) xz -dc "$f" >"$r/mods/$(printf %02d $n)-$m.ko" || return 1 ;;
      *) cp "$f" "$r/mods/$(printf %02d $n)-$m.ko" || return 1 ;;
    esac
  done
  cp "$QGA" "$r/usr/sbin/qemu-ga" || return 1
  for lib in $(ldd "$QGA" | grep -o '/[^ ]*'); do
    mkdir -p "$r$(dirname "$lib")" && cp -L "$lib" "$r$lib" || return 1
  done
  printf '%s\n' "$init" >"$r/init" && chmod 755 "$r/init" || return 1
  (cd "$r" && find . | "$w/x/bin/busybox" cpio -o -H newc 2>/dev/null) |
    gzip -1 >"$w/initrd.gz" || return 1
  cp "$w/x/boot/vmlinuz-$kver" "$w/vmlinuz" || return 1
  mkdir -p "$dir" && mv "$w/vmlinuz" "$w/initrd.gz" "$dir/" || return 1
  { printf '%s\n' "$init"; sha256sum <"$QGA"; } | sha256sum >"$dir/init.sum"
  rm -rf "$w"
}
mkdir -p "$cache" || fail "cannot create $cache"
exec 9>"$cache/lock"
flock 9
if [ ! -f "$dir/initrd.gz" ] ||
   [ "$({ printf '%s\n' "$init"; sha256sum <"$QGA"; } | sha256sum)" != \
     "$(cat "$dir/init.sum" 2>/dev/null)" ]; then
  echo "preparing the agent guest ($kpkg) under $dir"
  if ! prepare; then
    rm -rf "$dir.tmp.$$"
    skip "could not prepare the agent guest"
  fi
fi
exec 9>&-

# ---- The domain. ----
A=$LV_PREFIX-agent
truncate -s 64M "$D/fs.raw"
mkfs.ext4 -q -F "$D/fs.raw" || fail "mkfs.ext4"
qemu-img convert -f raw -O qcow2 "$D/fs.raw" "$D/fs.qcow2" || fail "convert"
rm -f "$D/fs.raw"
cp "$dir/vmlinuz" "$dir/initrd.gz" "$D/"
cat >"$D/agent.xml" <<EOF
<domain type='qemu'>
  <name>$A</name>
  <memory unit='MiB'>256</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$D/vmlinuz</kernel>
    <initrd>$D/initrd.gz</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$D/fs.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'>
      <source path='$D/console.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
lv_forget_later "$A"
lv_virsh define "$D/agent.xml" >/dev/null || fail "define $A"
lv_virsh start "$A" >/dev/null || fail "start $A"
agent_answers ()
{
  lv_virsh qemu-agent-command --timeout 5 "$A" '{"execute":"guest-ping"}' \
    >/dev/null 2>&1
}
wait_for 300 agent_answers ||
  fail "the guest agent does not answer; console: $(cat "$D/console.log" 2>/dev/null)"
echo "guest agent answers ($(grep -o 'init: agent port.*' "$D/console.log" 2>/dev/null))"

# Is ext4 in snapshot TAG of the disk clean (no journal to replay)?
fs_clean ()                     # TAG
{
  lv_raw_oracle "$D/fs.qcow2" "$D/snap.raw" "$1"
  ! dumpe2fs -h "$D/snap.raw" 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery'
}
tags ()
{
  qemu-img info -U --output=json "$D/fs.qcow2" | python3 -c '
import json, sys
for s in json.load(sys.stdin).get("snapshots", []):
    print(s["name"], s["vm-state-size"])'
}
meta_state ()
{
  lv_virsh snapshot-dumpxml "$A" "$1" | sed -n 's/.*<state>\(.*\)<\/state>.*/\1/p' | head -1
}

out=$(ds create -q "$A" frozen 2>"$D/err") || fail "create -q: $(cat "$D/err")"
echo "create -q: $out $(cat "$D/err")"
check "real agent: done" eq "$out" "done: libvirt,paused,quiesced"
check "real agent: no warning" eval '! grep -q "warning\|error" "$D/err"'
check "real agent: running" lv_running "$A"
check "real agent: disk-snapshot" eq "$(meta_state frozen)" disk-snapshot
check "real agent: no VM state" eval 'tags | grep -qx "frozen 0"'
check "real agent: thawed (the agent answers, status thawed)" eval \
  'lv_virsh qemu-agent-command "$A" "{\"execute\":\"guest-fsfreeze-status\"}" |
   grep -q "\"thawed\""'
# The command line says so too.
: "${VMDISK_SNAPSHOT:=$_fn_top/snapshotter/vmdisk-snapshot}"
out=$("$VMDISK_SNAPSHOT" -c "$LV_URI" create --quiesce "$A" cli 2>"$D/err") ||
  fail "vmdisk-snapshot create --quiesce: $(cat "$D/err")"
check "real agent, vmdisk-snapshot: $out $(cat "$D/err")" eq "$out" \
  "created $A/cli (libvirt internal, domain paused meanwhile, filesystems frozen)"
ds delete "$A" cli || fail "delete cli"
out=$(ds create "$A" crash 2>"$D/err") || fail "create: $(cat "$D/err")"
check "no quiesce: VM state" eq "$out" "done: libvirt,memory"
lv_virsh destroy "$A" >/dev/null
check "frozen snapshot: ext4 clean" fs_clean frozen
check "oracle: a snapshot without freeze needs recovery" eval '! fs_clean crash'
ds delete "$A" crash || fail "delete crash"
ds delete "$A" frozen || fail "delete frozen"
check "deleted: no tags" eval '[ -z "$(tags)" ]'
check "deleted: no metadata" eval '[ -z "$(lv_virsh snapshot-list --name "$A")" ]'

[ "$failures" = 0 ] || fail "$failures checks failed"
echo "PASS"
