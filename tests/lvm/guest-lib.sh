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
