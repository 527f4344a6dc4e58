#!/bin/bash
# vmdiskfs - restoring LVs by copying back: runs tests/lvm/write-lvm.sh in
# the small TCG guest of tests/lvm/guest.sh (the host kernel has no
# device-mapper), with a libvirtd of the guest's own.  Skips (77) without
# qemu or when the guest's kernel cannot be downloaded.
# VD_WRITE_LVM_SNAPSIZE: -o snapsize= for the snapshots mkdir makes.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
srcdir=${abs_top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
export abs_top_srcdir=$srcdir
export abs_top_builddir=${abs_top_builddir:-$srcdir}
case $abs_top_builddir in
  /tmp/*) echo "SKIP: build tree under /tmp (a tmpfs in the guest)"; exit 77 ;;
esac
[ -x "$abs_top_builddir/vmdiskfs" ] || { echo "FAIL: vmdiskfs not built"; exit 1; }
# A restore rewrites every chunk of the LV: its classic snapshot needs
# the origin's size (32 MiB) plus metadata in copy-on-write space, or it
# overflows (vmdiskfs(1), "RESTORING BY COPYING BACK").
exec bash "$srcdir/tests/lvm/guest.sh" "$srcdir/tests/lvm/write-lvm.sh" \
  "${VD_WRITE_LVM_SNAPSIZE-40M}"
