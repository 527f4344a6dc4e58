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
  # run
  fuse3 libvirt-daemon-system libvirt-clients lvm2
  # test oracles and tools
  qemu-utils qemu-system-x86 rsync bc python3 valgrind
  qemu-guest-agent   # tests/integration/domsnap-agent.sh: runs in its guest
  xz-utils   # tests/lvm/guest.sh: the guest kernel's modules may be .ko.xz
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
