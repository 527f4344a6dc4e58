#!/bin/bash
# vmdiskfs demo, from a fresh clone on Debian 12, as root: installs what is
# needed, builds and installs vmdiskfs, makes a few real disk images with
# qemu-img/qemu-io (a qcow2 with internal snapshots, a sparse raw file, a
# QED image, a qcow2 overlay on a raw base), and mounts them under
# /srv/vmdisks (images mode: one directory per image file).
# Run it again to rebuild and remount.  Unmount: fusermount3 -u /srv/vmdisks
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tests/install-deps.sh

[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --prefix=/usr/local
make -j"$(nproc)"
make install >/dev/null

imgs=/var/lib/vmdiskfs-demo/images
mnt=/srv/vmdisks
mountpoint -q "$mnt" && fusermount3 -u "$mnt"
mkdir -p "$imgs" "$mnt"

if [ ! -e "$imgs/web.qcow2" ]; then
  echo "demo: creating images in $imgs"
  qemu-img create -q -f qcow2 "$imgs/web.qcow2" 2G
  qemu-io -f qcow2 -c "write -P 0x11 0 4M" -c "write -P 0x22 1G 1M" \
    "$imgs/web.qcow2" >/dev/null
  qemu-img snapshot -c installed "$imgs/web.qcow2"
  qemu-io -f qcow2 -c "write -P 0x33 0 1M" -c "write -z 2M 1M" \
    "$imgs/web.qcow2" >/dev/null
  qemu-img snapshot -c "before upgrade" "$imgs/web.qcow2"
  qemu-io -f qcow2 -c "write -P 0x44 512M 8M" "$imgs/web.qcow2" >/dev/null

  truncate -s 1G "$imgs/db.raw"
  qemu-io -f raw -c "write -P 0x55 64M 2M" "$imgs/db.raw" >/dev/null

  qemu-img create -q -f qed "$imgs/legacy.qed" 512M
  qemu-io -f qed -c "write -P 0x66 0 3M" "$imgs/legacy.qed" >/dev/null

  truncate -s 256M "$imgs/base.img"
  qemu-io -f raw -c "write -P 0x77 0 8M" "$imgs/base.img" >/dev/null
  qemu-img create -q -f qcow2 -b base.img -F raw "$imgs/overlay.qcow2"
  qemu-io -f qcow2 -c "write -P 0x88 4M 1M" "$imgs/overlay.qcow2" >/dev/null
fi

vmdiskfs -o images="$imgs",ro "$mnt"
for i in $(seq 50); do mountpoint -q "$mnt" && break; sleep 0.1; done
echo "demo: mounted $imgs on $mnt"
ls -l "$mnt" "$mnt"/web.qcow2 "$mnt"/web.qcow2/snapshots
