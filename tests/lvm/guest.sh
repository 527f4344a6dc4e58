#!/bin/bash
# vmdiskfs - run a test script with real LVM inside a small TCG guest.
#
# The host kernel has no device-mapper (TESTING.md "LVM: in a small guest"),
# so LVM tests run in a throw-away guest booted with Debian's kernel: the
# host's / is the guest's root (9p, read-only), /tmp and /run are tmpfs,
# /dev/vda is an empty 1 GiB physical volume and /dev/vdb the result disk on
# which the guest writes SCRIPT's exit status and its output.
#
#   tests/lvm/guest.sh SCRIPT [ARG...]
#
# SCRIPT (bash) must live outside the host's /tmp (a tmpfs in the guest).
# It runs as root in the guest, cwd /tmp, with LVM_SYSTEM_DIR set to a
# tmpfs directory holding an lvm.conf for LVM without udev; it may source
# tests/lvm/guest-lib.sh.  The variables abs_top_srcdir, abs_top_builddir,
# VD_GUEST_HOSTTMP (set here) are passed in.  Exit status: SCRIPT's (77 =
# skip passes through); 77 when qemu or the kernel are not available or
# SCRIPT lives under /tmp; 1
# when the guest does not report (crash, timeout).  SCRIPT's output is
# printed after the guest ends; the kernel's messages too when it failed,
# the whole console (with SCRIPT's output so far) when it did not report.
#
# The kernel, busybox and initramfs are prepared once, cached under
# /var/tmp/vmdiskfs-lvm-guest/KERNELVERSION/ (remove it to rebuild).
#
# Environment: VD_GUEST_TIMEOUT (seconds, default 1200: a loaded 2-CPU
# machine makes TCG several times slower, and the libvirt tests beside
# it run TCG guests too where there is no /dev/kvm), VD_GUEST_MEM (MiB,
# default 1024), VD_GUEST_CPUS (default 1), VD_GUEST_CACHE (default
# /var/tmp/vmdiskfs-lvm-guest).
#
# For power-cut tests (tests/integration/powercut.sh):
#   VD_GUEST_DISK=FILE   FILE (raw) is a third disk, /dev/vdc; the guest's
#                        ext4 module is loaded, so it may hold ext4
#   VD_GUEST_KILL=TEXT   kill -9 qemu VD_GUEST_KILL_AFTER seconds (default
#                        0, fractions allowed) after TEXT first shows on
#                        the console: the guest's page cache is lost, what
#                        qemu wrote to FILE stays.  Exit status 0 when
#                        killed, the console so far printed instead of
#                        SCRIPT's output; as without it when the guest
#                        ended first
#   VD_GUEST_CONSOLE=FILE
#                        the console (SCRIPT's output, kernel messages) is
#                        copied to FILE at the end, CRs removed
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${abs_top_srcdir:=$(cd "$here/../.." && pwd)}"
: "${abs_top_builddir:=$abs_top_srcdir}"
timeout_s=${VD_GUEST_TIMEOUT:-1200}
mem=${VD_GUEST_MEM:-1024}
cpus=${VD_GUEST_CPUS:-1}
cache=${VD_GUEST_CACHE:-/var/tmp/vmdiskfs-lvm-guest}

# Modules of TESTING.md, in insmod order (dm-bio-prison to dm-thin-pool for
# thin pools; the last four for ext4 on VD_GUEST_DISK).
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
  virtio_pci virtio_blk netfs fscache 9pnet 9pnet_virtio 9p dm-mod dm-bufio
  dm-snapshot crc32c_generic libcrc32c dm-bio-prison dm-persistent-data
  dm-thin-pool fuse loop crc16 mbcache jbd2 ext4"

skip () { echo "SKIP: $*"; exit 77; }
die () { echo "guest.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: guest.sh SCRIPT [ARG...]"
script=$(realpath -e "$1") || die "$1: no such file"
shift
case $script in
  /tmp/*) skip "$script: under /tmp, which is a tmpfs in the guest" ;;
  *[[:space:]\'\"\\]*) die "$script: no blanks or quotes in the path, please" ;;
esac
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"
[ "$(id -u)" = 0 ] || skip "not root"

# ---- prepare kernel and initramfs (once per kernel version) ---------------
meta_pkg () {   # the linux-image-6.1.0-*-amd64 that linux-image-amd64 wants
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1
}
kpkg=$(meta_pkg)
if [ -z "$kpkg" ]; then
  apt-get update -qq >/dev/null 2>&1
  kpkg=$(meta_pkg)
fi
[ -n "$kpkg" ] || skip "apt-cache knows no linux-image-amd64"
kver=${kpkg#linux-image-}
dir=$cache/$kver

prepare () {
  local w=$dir.tmp.$$ m f
  rm -rf "$w"
  mkdir -p "$w/dl" "$w/x" "$w/root" || return 1
  (cd "$w/dl" && apt-get download "$kpkg" busybox-static >/dev/null 2>&1) ||
    { echo "guest.sh: apt-get download $kpkg busybox-static failed"; return 1; }
  for f in "$w"/dl/*.deb; do dpkg -x "$f" "$w/x" || return 1; done
  local r=$w/root
  mkdir -p "$r"/{bin,dev,proc,sys,host,mods} || return 1
  cp "$w/x/bin/busybox" "$r/bin/busybox" || return 1
  local n=0
  for m in $modules; do
    f=$(find "$w/x/lib/modules/$kver/kernel" -name "$m.ko" -o -name "$m.ko.xz" |
        head -1)
    [ -n "$f" ] || { echo "guest.sh: module $m not in $kpkg"; return 1; }
    n=$((n + 1))
    case $f in
      *.xz) xz -dc "$f" > "$r/mods/$(printf %02d $n)-$m.ko" || return 1 ;;
      *) cp "$f" "$r/mods/$(printf %02d $n)-$m.ko" || return 1 ;;
    esac
  done
  cp "$here/guest-init" "$r/init" && chmod 755 "$r/init" || return 1
  (cd "$r" && find . | "$w/x/bin/busybox" cpio -o -H newc 2>/dev/null) |
    gzip -1 > "$w/initrd.gz" || return 1
  cp "$w/x/boot/vmlinuz-$kver" "$w/vmlinuz" || return 1
  cp "$w/x/bin/busybox" "$w/busybox" || return 1
  mkdir -p "$dir" && mv "$w/vmlinuz" "$w/initrd.gz" "$w/busybox" "$dir/" ||
    return 1
  sha256sum < "$here/guest-init" > "$dir/init.sum"
  echo $modules > "$dir/modules.list"
  rm -rf "$w"
}

# Every module of the list in the cached initramfs (one prepared by an
# older guest.sh with fewer modules is prepared again; its init.sum alone
# would not tell).
has_modules () {
  local m
  for m in $modules; do
    case " $(cat "$dir/modules.list" 2>/dev/null) " in
      *" $m "*) ;;
      *) return 1 ;;
    esac
  done
}

mkdir -p "$cache" || die "cannot create $cache"
exec 9> "$cache/lock"
flock 9
# (The cached /init is not the one run: see the per-run archive below.  Its
# init.sum is still written, for older copies of this script that check it.)
if [ ! -f "$dir/initrd.gz" ] || [ ! -x "$dir/busybox" ] || ! has_modules; then
  echo "guest.sh: preparing $kpkg and busybox under $dir"
  if ! prepare; then
    rm -rf "$dir.tmp.$$"
    skip "could not prepare the guest kernel"
  fi
fi
flock -u 9

# ---- run -----------------------------------------------------------------
# vmdiskfs's default staging directory (-o staging): vmdiskfs does not
# start without it, and the guest cannot make it on its read-only /.
[ -d /var/lib/vmdiskfs/staging ] ||
  { mkdir -p -m 700 /var/lib/vmdiskfs && mkdir -m 700 /var/lib/vmdiskfs/staging; } ||
  die "cannot create /var/lib/vmdiskfs/staging"
tmp=$(mktemp -d /var/tmp/vd-guest.XXXXXX) || die "mktemp"
qpid=
cleanup () {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

truncate -s 1G "$tmp/pv.img"
truncate -s 16M "$tmp/result.img"

# The per-run part of the initramfs: what to run, and tests/lvm/guest-init
# as /init (a second archive appended to the cached one; the kernel unpacks
# both, a file of the second replacing the first's), so a changed
# guest-init needs no new cached initramfs, and work trees with different
# ones share the cache.
mkdir -p "$tmp/run"
cp "$here/guest-init" "$tmp/run/init" && chmod 755 "$tmp/run/init" || die "cp init"
{
  printf 'export abs_top_srcdir=%q abs_top_builddir=%q VD_GUEST_HOSTTMP=%q\n' \
    "$abs_top_srcdir" "$abs_top_builddir" "$tmp"
  printf 'set -- %q' "$script"
  for a in "$@"; do printf ' %q' "$a"; done
  printf '\n'
} > "$tmp/run/vdrun.env"
(cd "$tmp/run" && printf 'init\nvdrun.env\n' | "$dir/busybox" cpio -o -H newc 2>/dev/null) |
  gzip -1 > "$tmp/run.cpio.gz" || die "cpio"
# Each archive starts 4-byte aligned (the kernel skips the NUL padding).
cp "$dir/initrd.gz" "$tmp/initrd"
truncate -s %4 "$tmp/initrd"
cat "$tmp/run.cpio.gz" >> "$tmp/initrd"

extra=()
if [ -n "${VD_GUEST_DISK:-}" ]; then
  case $VD_GUEST_DISK in
    *,*) die "VD_GUEST_DISK=$VD_GUEST_DISK: no commas in the path, please" ;;
  esac
  [ -f "$VD_GUEST_DISK" ] || die "VD_GUEST_DISK=$VD_GUEST_DISK: no such file"
  extra=(-drive "file=$VD_GUEST_DISK,format=raw,if=virtio")
fi
start=$(date +%s)
timeout -k 5 "$timeout_s" qemu-system-x86_64 -accel tcg -m "$mem" -smp "$cpus" \
  -nographic -no-reboot -nodefaults -serial stdio -monitor none \
  -kernel "$dir/vmlinuz" -initrd "$tmp/initrd" \
  -append "console=ttyS0 panic=-1 quiet" \
  -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
  -drive file="$tmp/pv.img",format=raw,if=virtio,cache=unsafe \
  -drive file="$tmp/result.img",format=raw,if=virtio \
  "${extra[@]}" \
  -pidfile "$tmp/qemu.pid" \
  < /dev/null > "$tmp/console.log" 2>&1 &
qpid=$!
killed=
if [ -n "${VD_GUEST_KILL:-}" ]; then
  while kill -0 "$qpid" 2>/dev/null; do
    if grep -qF -- "$VD_GUEST_KILL" "$tmp/console.log"; then
      sleep "${VD_GUEST_KILL_AFTER:-0}"
      # qemu itself: $qpid is timeout's.
      p=$(cat "$tmp/qemu.pid" 2>/dev/null)
      [ -n "$p" ] && kill -9 "$p" 2>/dev/null && killed=$p
      break
    fi
    sleep 0.1
  done
fi
wait "$qpid"
qrc=$?
qpid=
secs=$(( $(date +%s) - start ))
[ -n "${VD_GUEST_CONSOLE:-}" ] && tr -d '\r' < "$tmp/console.log" > "$VD_GUEST_CONSOLE"
if [ -n "$killed" ]; then
  tr -d '\r' < "$tmp/console.log" | grep -v '^\[ *[0-9.]*\]'
  echo "guest.sh: killed the guest (kill -9 of qemu, pid $killed)" \
       "${VD_GUEST_KILL_AFTER:-0}s after \"$VD_GUEST_KILL\" showed, ${secs}s after the start"
  exit 0
fi

# The result disk: "VDRC=N\n" then the script's output, NUL-padded.
rc=$(head -c 64 "$tmp/result.img" | tr -d '\0' | sed -n '1s/^VDRC=\([0-9]*\)$/\1/p')
tail -c +$(( $(head -1 "$tmp/result.img" | wc -c) + 1 )) "$tmp/result.img" |
  tr -d '\0' > "$tmp/out.log"
cat "$tmp/out.log"
if [ -z "$rc" ]; then
  echo "guest.sh: the guest did not report (qemu exit $qrc after ${secs}s" \
       "of at most ${timeout_s}s); console:"
  tail -60 "$tmp/console.log"
  exit 1
fi
echo "guest.sh: $(basename "$script") exited $rc in the guest (${secs}s)"
if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
  echo "guest.sh: kernel messages:"
  tr -d '\r' < "$tmp/console.log" | grep '^\[ *[0-9.]*\]' | tail -30
fi
exit "$rc"
}
