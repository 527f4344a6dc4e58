#!/bin/bash
# vmdiskfs - making and deleting domain snapshots over real LVM (issue 4):
# runs tests/lvm/snapshots-lvm.sh in the small TCG guest of
# tests/lvm/guest.sh (the host kernel has no device-mapper), with a
# libvirtd of the guest's own and a running domain inside it: mkdir/rmdir
# in a vmdiskfs mount and vmdisk-snapshot, classic and thin LVs, a domain
# mixing qcow2 and LV disks (paused while the snapshots are taken), the
# failure paths and prune.  About 2.5 minutes.  Skips (77) without qemu or
# when the guest's kernel cannot be downloaded.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
export abs_top_srcdir=$srcdir
export abs_top_builddir=${abs_top_builddir:-$srcdir}
case $abs_top_builddir in
  /tmp/*) echo "SKIP: build tree under /tmp (a tmpfs in the guest)"; exit 77 ;;
esac
for p in vmdiskfs snapshotter/vmdisk-snapshot; do
  [ -x "$abs_top_builddir/$p" ] || { echo "FAIL: $p not built"; exit 1; }
done
exec bash "$srcdir/tests/lvm/guest.sh" "$srcdir/tests/lvm/snapshots-lvm.sh"
