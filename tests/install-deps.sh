#!/bin/bash
# Install what vmdiskfs needs to build, run, test and benchmark on Debian 12.
# Idempotent; run as root.  Used by examples/demo.sh and tests/run-all.sh.
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

pkgs=(
  # build
  build-essential autoconf automake pkg-config
  libfuse3-dev libvirt-dev libxml2-dev zlib1g-dev libzstd-dev liblvm2-dev
  libqcow-dev
  libnbd-dev libiscsi-dev librbd-dev librados-dev   # network disks
  # run
  fuse3 libvirt-daemon-system libvirt-clients lvm2
  # test oracles and tools
  qemu-utils qemu-system-x86 rsync pv bc python3 valgrind
  libglib2.0-bin shared-mime-info   # gio: the type a file manager sees
  netcat-openbsd   # tests/integration/live-image.sh: talks to qemu's monitor
  qemu-guest-agent   # tests/integration/domsnap-agent.sh: runs in its guest
  xz-utils   # tests/lvm/guest.sh: the guest kernel's modules may be .ko.xz
  ovmf   # tests/integration/nvram.sh: UEFI firmware and variable store
  # network disks' servers, started by the tests (TESTING.md)
  ceph-mon ceph-osd ceph-common   # Ceph RBD: one mon, one memstore OSD
  tgt libiscsi-bin                # iSCSI target (tgtd), iscsi-ls
  nbdkit qemu-block-extra         # NBD; qemu's rbd/iscsi block drivers
  uuid-runtime iproute2           # uuidgen (secrets, OSD ids), ss (ports)
  clang libclang-rt-14-dev
  # benchmarks
  fio libqcow-utils
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
modprobe fuse 2>/dev/null || true

# /dev/kvm as Debian's udev rule makes it (group kvm, mode 0660), where no
# udev runs and it is still root:root 0600: libvirt runs qemu as
# libvirt-qemu (group kvm), and every "virsh start" of a KVM domain would
# fail with "Could not access KVM kernel module: Permission denied".  The
# group kvm exists once libvirt-daemon-system is installed (above).  No
# /dev/kvm at all: the tests and the demo use TCG (<domain type='qemu'>).
if [ -c /dev/kvm ] && getent group kvm >/dev/null &&
   [ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]; then
  echo "install-deps: /dev/kvm was $(stat -c '%U:%G %a' /dev/kvm): made it root:kvm 0660, as udev would"
  chgrp kvm /dev/kvm
  chmod 0660 /dev/kvm
fi
