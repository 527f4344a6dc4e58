#!/bin/bash
# vmdiskfs demo, from a fresh clone on Debian 12, as root: installs what is
# needed, builds and installs vmdiskfs, then
#  1. libvirt mode, under /srv/vmdisks: starts libvirtd if it is not
#     running and defines two real domains (KVM; TCG, type qemu, where
#     there is no /dev/kvm) with disks in /var/lib/libvirt/images:
#       demo-web  a qcow2 disk with two internal snapshots made by
#                 `virsh snapshot-create-as` ("installed", "before
#                 upgrade"); running (idle in its firmware: no OS);
#       demo-db   a sparse raw disk; shut off;
#     and mounts them: `vmdiskfs /srv/vmdisks`;
#  2. images mode, under /srv/vmdisks-images: a few disk image files made
#     with qemu-img/qemu-io (a qcow2 with internal snapshots, a sparse raw
#     file, a QED image, a qcow2 overlay on a raw base):
#     `vmdiskfs -o images=DIR,ro /srv/vmdisks-images`.
# Run it again to rebuild and remount (the domains and images are kept).
# Undo:  fusermount3 -u /srv/vmdisks; fusermount3 -u /srv/vmdisks-images
#        virsh destroy demo-web
#        virsh undefine demo-web --snapshots-metadata; virsh undefine demo-db
#        rm /var/lib/libvirt/images/demo-{web.qcow2,db.raw}
#        rm -r /var/lib/vmdiskfs-demo
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tests/install-deps.sh

[ -x configure ] || autoreconf -fi
[ -f Makefile ] || ./configure --prefix=/usr/local
make -j"$(nproc)"
make install >/dev/null

# ---- libvirt mode: two demo domains. ----

virsh="virsh -q -c qemu:///system"
if [ -d /run/systemd/system ]; then
  # systemd starts both daemons by socket activation.
  systemctl start virtlogd.socket libvirtd.socket
elif ! pgrep -x -r R,S,D virtlogd >/dev/null; then
  # A socket left by a virtlogd that is gone refuses every VM start.
  rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock
  virtlogd -d
fi
if ! $virsh version >/dev/null 2>&1; then
  [ -d /run/systemd/system ] || libvirtd -d
  for i in $(seq 100); do $virsh version >/dev/null 2>&1 && break; sleep 0.1; done
fi
$virsh version >/dev/null || { echo "demo: libvirtd does not answer"; exit 1; }

lvimgs=/var/lib/libvirt/images
mkdir -p "$lvimgs"
# KVM where there is /dev/kvm (tests/install-deps.sh made it usable by
# qemu's group kvm, as udev would), else TCG: slower, the same domain.
domtype=kvm
if [ ! -c /dev/kvm ] || ! ( exec 3<>/dev/kvm ) 2>/dev/null; then
  domtype=qemu
  echo "demo: no usable /dev/kvm: the domains run under TCG (<domain type='qemu'>)"
fi
# A domain as TESTING.md says: machine pc, VNC on 127.0.0.1, no OS
# (it sits in the firmware), one virtio disk.
define ()                       # NAME FORMAT IMAGE
{
  $virsh define /dev/stdin >/dev/null <<EOF
<domain type='$domtype'>
  <name>$1</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='$2'/>
      <source file='$3'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}
if ! $virsh domstate demo-web >/dev/null 2>&1; then
  echo "demo: defining demo-web (qcow2, two snapshots, running)"
  web=$lvimgs/demo-web.qcow2
  qemu-img create -q -f qcow2 "$web" 2G
  qemu-io -f qcow2 -c "write -P 0x11 0 4M" -c "write -P 0x22 1G 1M" "$web" >/dev/null
  define demo-web qcow2 "$web"
  $virsh snapshot-create-as demo-web installed --description "fresh install" >/dev/null
  qemu-io -f qcow2 -c "write -P 0x33 0 1M" -c "write -z 2M 1M" "$web" >/dev/null
  $virsh snapshot-create-as demo-web "before upgrade" >/dev/null
  qemu-io -f qcow2 -c "write -P 0x44 512M 8M" "$web" >/dev/null
fi
if ! $virsh domstate demo-db >/dev/null 2>&1; then
  echo "demo: defining demo-db (sparse raw, shut off)"
  db=$lvimgs/demo-db.raw
  truncate -s 1G "$db"
  qemu-io -f raw -c "write -P 0x55 64M 2M" "$db" >/dev/null
  define demo-db raw "$db"
fi
[ "$($virsh domstate demo-web)" = running ] || $virsh start demo-web >/dev/null

mnt=/srv/vmdisks
mountpoint -q "$mnt" && fusermount3 -u "$mnt"
mkdir -p "$mnt"
vmdiskfs "$mnt"
for i in $(seq 50); do mountpoint -q "$mnt" && break; sleep 0.1; done
echo "demo: libvirt domains mounted on $mnt"
ls -l "$mnt" "$mnt"/demo-web "$mnt"/demo-web/snapshots "$mnt/demo-web/snapshots/before upgrade"
# A snapshot by mkdir: every disk of the running domain at one moment
# (libvirt's internal snapshot with VM state); rmdir deletes it.
[ -d "$mnt/demo-web/snapshots/by-mkdir" ] ||
  mkdir "$mnt/demo-web/snapshots/by-mkdir"
ls -l "$mnt/demo-web/snapshots/by-mkdir"
vmdisk-snapshot list demo-web
echo "demo: try  mkdir $mnt/demo-web/snapshots/NAME,  rmdir it,  vmdisk-snapshot --help"

# ---- images mode: a directory of image files. ----

imgs=/var/lib/vmdiskfs-demo/images
imnt=/srv/vmdisks-images
mountpoint -q "$imnt" && fusermount3 -u "$imnt"
mkdir -p "$imgs" "$imnt"

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

vmdiskfs -o images="$imgs",ro "$imnt"
for i in $(seq 50); do mountpoint -q "$imnt" && break; sleep 0.1; done
echo "demo: $imgs mounted on $imnt"
ls -l "$imnt" "$imnt"/web.qcow2/snapshots
