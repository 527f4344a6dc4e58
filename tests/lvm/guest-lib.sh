# vmdiskfs - helpers for scripts run inside the LVM test guest (bash).
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Source it from a script run by tests/lvm/guest.sh:
#   . "$abs_top_srcdir/tests/lvm/guest-lib.sh"
#
#   fail MSG            print "FAIL: MSG", exit 1
#   skip MSG            print "SKIP: MSG", exit 77
#   run CMD...          echo "+ CMD", run it, fail the script if it fails
#   setup_lvm           PV on /dev/vda, VG vg0 on it (the guest's only disk
#                       for data); fails the script if LVM does not work
#   setup_thin_pool [SIZE]
#                       thin pool vg0/pool (default 256M)
#   lv_field VG/LV FIELD
#                       one field of lvs (no headings, no padding)
#   in_guest            true when running inside the test guest
#   start_libvirtd      virtlogd and libvirtd of the guest's own, answering
#                       on qemu:///system (state on tmpfs, a writable copy
#                       of /etc/libvirt); domains with type='qemu' start
#
# The guest has no udev: /dev/VG/LV links are made by LVM itself
# (udev_rules=0 in the guest's lvm.conf, see guest-init).

fail () { echo "FAIL: $*"; exit 1; }
skip () { echo "SKIP: $*"; exit 77; }

run ()
{
  echo "+ $*"
  "$@" || fail "$* (exit $?)"
}

in_guest ()
{
  [ "${LVM_SYSTEM_DIR:-}" = /run/vd-lvm ] && [ -b /dev/vda ]
}

setup_lvm ()
{
  in_guest || fail "not inside the test guest (run through tests/lvm/guest.sh)"
  run pvcreate -q /dev/vda
  run vgcreate -q vg0 /dev/vda
}

setup_thin_pool ()
{
  run lvcreate -q --type thin-pool -L "${1:-256M}" -n pool vg0
}

lv_field ()
{
  lvs --noheadings --nosuffix --units b -o "$2" "$1" | sed 's/^ *//; s/ *$//'
}

# libvirtd needs writable state directories and configuration: tmpfs and a
# copy of /etc/libvirt (the guest's / is the host's, read-only).  qemu.conf
# gets "namespaces = [ ]": libvirt's private /dev for qemu, built without
# udev, lacks /dev/null and the LV nodes ("Failed to open /dev/null for OFD
# lock probing"), so a domain would not start.
start_libvirtd ()
{
  local d i
  for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
    mount -t tmpfs tmpfs "$d" || fail "tmpfs on $d"
  done
  mkdir -p /tmp/etc-libvirt && cp -a /etc/libvirt/. /tmp/etc-libvirt/ &&
    echo 'namespaces = [ ]' >> /tmp/etc-libvirt/qemu.conf &&
    mount --bind /tmp/etc-libvirt /etc/libvirt || fail "writable /etc/libvirt"
  virtlogd -d && libvirtd -d || fail "starting libvirtd"
  for i in $(seq 100); do
    virsh -c qemu:///system version >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "libvirtd does not answer after 20 s"
}
