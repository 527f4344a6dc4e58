#!/bin/bash
# vmdiskfs - domsnap.c's LVM part through vd-domsnap, inside the LVM test
# guest (tests/lvm/guest.sh runs it; domsnap.sh does when VD_DOMSNAP_LVM=1,
# about 2 minutes under TCG):
#   classic LV (-p 30: 96M of 320M, tags vmdiskfs and vmdisk-snapshot), a
#   name only a tag can carry ("x:y"), EINVAL ("a b"), EEXIST;
#   thin LV (-b mount: tag vmdiskfs only);
#   LV + qcow2 + LV, shut off (state disk-snapshot: libvirt refuses
#   shutoff with an LV disk not marked snapshot='no') and running (paused,
#   quiesce without an agent); undo after the tags; ENOSPC when the
#   second LV's COW does not fit (nothing left, still running); EEXIST
#   for an LV snapshot made by lvcreate; delete leaves nothing;
#   quiesce: shut off not-needed, running with a faked freeze
#   (VMDISKFS_DOMSNAP_FAKE_FREEZE); vd-lvm-list's flag cli.
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
{
. "$abs_top_srcdir/tests/lvm/guest-lib.sh"
VDS=$abs_top_builddir/snapshotter/vd-domsnap
V () { virsh -q -c qemu:///system "$@"; }
ds () { "$VDS" -c qemu:///system "$@"; }
ok () { echo "ok: $*"; }
lv_names () { lvs --noheadings -o lv_name vg0 | tr -d ' ' | sort | tr '\n' ' '; }
err_is () { local want=$1 out; shift; out=$(ds "$@" 2>&1) && fail "ds $* worked"; echo "$out"; case $out in *": $want ("*) ;; *) fail "ds $*: want $want";; esac; }
tags () { qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
for s in json.load(sys.stdin).get("snapshots", []): print(s["name"])'; }

setup_lvm
setup_thin_pool 64M
run lvcreate -q -L 320M -n cls vg0
run lvcreate -q -V 32M -T vg0/pool -n thin
run lvcreate -q -L 32M -n mixa vg0
run lvcreate -q -L 32M -n mixc vg0
mkdir -p /tmp/img
run qemu-img create -q -f qcow2 /tmp/img/mix.qcow2 32M
start_libvirtd
domain () {
  local n=$1 d; shift
  { echo "<domain type='qemu'><name>$n</name><memory unit='MiB'>64</memory>"
    echo "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
    echo "<features><tcg><tb-cache unit='MiB'>16</tb-cache></tcg></features><devices>"
    for d; do echo "$d"; done
    echo "</devices></domain>"; } > "/tmp/$n.xml"
  run V define "/tmp/$n.xml"
}
lvdisk () { echo "<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/$1'/><target dev='$2' bus='virtio'/></disk>"; }
domain cls "$(lvdisk cls vda)"
domain thn "$(lvdisk thin vda)"
domain mix "$(lvdisk mixa vda)" \
  "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/tmp/img/mix.qcow2'/><target dev='vdb' bus='virtio'/></disk>" \
  "$(lvdisk mixc vdc)"
lvs0=$(lv_names)

run ds create -p 30 cls c1
lvs -o lv_name,lv_size,lv_tags,origin vg0
[ "$(lv_field vg0/cls-c1 lv_tags)" = "vmdisk-snapshot,vmdiskfs" ] || fail "tags $(lv_field vg0/cls-c1 lv_tags)"
ds list cls | tee /tmp/l
grep -qP "^c1\t\d+\tlvm\tcli\t-\t1$" /tmp/l || fail "list c1"
out=$(ds create -q -b mount -s 8388608 cls "x:y") || fail "create x:y"
[ "$out" = "done: lvm,not-needed" ] || fail "x:y (quiesce, shut off) $out"
lvs -o lv_name,lv_size,lv_tags vg0
ds list cls | tee /tmp/l
grep -qP "^x:y\t\d+\tlvm\tmount\t-\t1$" /tmp/l || fail "list x:y"
# vd-lvm-list shows the vmdisk-snapshot tag as the flag cli.
"$abs_top_builddir/snapshotter/vd-lvm-list" /dev/vg0/cls | tee /tmp/l
grep -qP "^c1\t.*\t([a-z-]+,)*cli$" /tmp/l || fail "vd-lvm-list: c1 without cli"
grep -qP "^x:y\t.*\tours(,[a-z-]+)*$" /tmp/l || fail "vd-lvm-list: x:y not ours"
grep -qP "^x:y\t.*cli" /tmp/l && fail "vd-lvm-list: x:y with cli"
err_is EINVAL create cls "a b"
err_is EEXIST create cls c1
run ds delete cls c1
run ds delete cls "x:y"
[ "$(lv_names)" = "$lvs0" ] || fail "LVs: $(lv_names)"
ok classic

run ds create -b mount thn t1
lvs -o lv_name,lv_attr,lv_tags vg0
ds list thn | tee /tmp/l
grep -qP "^t1\t\d+\tlvm\tmount\t-\t1$" /tmp/l || fail "list t1"
run ds delete thn t1
[ "$(lv_names)" = "$lvs0" ] || fail "LVs: $(lv_names)"
ok thin

out=$(ds create -s 8388608 mix m1) || fail "create m1"; echo "$out"
[ "$out" = "done: libvirt,lvm" ] || fail "m1 $out"
V snapshot-dumpxml mix m1 | head -14
tags /tmp/img/mix.qcow2 | grep -qx m1 || fail "tag m1"
ds list mix | tee /tmp/l
grep -qP "^m1\t\d+\tlibvirt,lvm,current\tcli\tdisk-snapshot\t2$" /tmp/l || fail "list m1"
run ds delete mix m1
[ "$(lv_names)" = "$lvs0" ] || fail "LVs: $(lv_names)"
[ -z "$(tags /tmp/img/mix.qcow2)" ] || fail "tags left"
[ -z "$(V snapshot-list --name mix)" ] || fail "meta left"
ok "mix shut off"

run V start mix
out=$(ds create -s 8388608 -q mix m2) || fail "create m2"; echo "$out"
[ "$out" = "done: libvirt,lvm,paused,no-agent" ] || fail "m2 $out"
[ "$(V domstate mix)" = running ] || fail "not running"
tags /tmp/img/mix.qcow2 | grep -qx m2 || fail "tag m2"
lvs -o lv_name,lv_size,lv_tags vg0

# A freeze that worked (faked: no guest OS here): frozen before the
# pause, thawed after the resume (the fake checks the domain runs).
out=$(VMDISKFS_DOMSNAP_FAKE_FREEZE=1 ds create -s 8388608 -q mix m3 2>/tmp/e) ||
  fail "create m3: $(cat /tmp/e)"; echo "$out"; cat /tmp/e
[ "$out" = "done: libvirt,lvm,paused,quiesced" ] || fail "m3 $out"
grep -q "filesystems thawed (fake" /tmp/e || fail "m3 not thawed"
run ds delete mix m3

VMDISKFS_DOMSNAP_FAIL=tags err_is EIO create -s 8388608 mix m5
[ "$(V domstate mix)" = running ] || fail "not running after undo"
tags /tmp/img/mix.qcow2 | grep -qx m5 && fail "tag m5 left"
lv_field vg0/mixa-m5 lv_name >/dev/null 2>&1 && lvs vg0/mixa-m5 >/dev/null 2>&1 && fail "LV mixa-m5 left"
ok "undo running"

free=$(vgs --noheadings -o vg_free_count vg0 | tr -d ' ')
run lvcreate -q -l $((free - 3)) -n fill vg0
lvs1=$(lv_names)
err_is ENOSPC create -s 8388608 mix nospc
[ "$(lv_names)" = "$lvs1" ] || fail "LVs: $(lv_names)"
[ "$(V domstate mix)" = running ] || fail "not running after ENOSPC"
tags /tmp/img/mix.qcow2 | grep -qx nospc && fail "tag nospc left"
run lvremove -q -y vg0/fill
ok ENOSPC

run lvcreate -q -s -L 8M -n mixc-m4 vg0/mixc
err_is EEXIST create mix m4
lvs vg0/mixa-m4 >/dev/null 2>&1 && fail "mixa-m4 made"
run lvremove -q -y vg0/mixc-m4

run ds delete mix m2
[ "$(V domstate mix)" = running ] || fail "not running after delete"
[ "$(lv_names)" = "$lvs0" ] || fail "LVs: $(lv_names)"
[ -z "$(tags /tmp/img/mix.qcow2)" ] || fail "tags left $(tags /tmp/img/mix.qcow2)"
[ -z "$(V snapshot-list --name mix)" ] || fail "meta left"
ok "mix running"
run V destroy mix
for d in cls thn mix; do V undefine $d --snapshots-metadata >/dev/null; done
echo "ALL OK"
exit 0
}
