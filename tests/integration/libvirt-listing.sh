#!/bin/bash
# vmdiskfs - directory listings the kernel caches (cache_readdir) follow
# the tree, with a real libvirtd:
#  - an empty snapshots/ listed, then a qemu-img snapshot made (no libvirt
#    event): the next listing shows it; deleted: the next one drops it;
#  - a snapshots/ listed from inside (a shell's working directory), its
#    domain undefined: listing it again shows nothing, not the old names.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
mkdir -p "$TEST_DIR/img"
Q=$TEST_DIR/img/l.qcow2
lv_image qcow2 "$Q" 8M
D=$P-list
lv_define "$D" qcow2:vda:"$Q"
lv_mount "$MNT"

names () { ls -1 "$1" 2>/dev/null | tr '\n' ' '; }
listed () { names "$1" | grep -qw -- "$2"; }
not_listed () { ! listed "$@"; }
empty () { [ -z "$(names "$1")" ]; }

S=$MNT/$D/snapshots
check "$S is not empty at first: $(names "$S")" empty "$S"
names "$S" >/dev/null          # listed twice: the kernel keeps it
qemu-img snapshot -c made "$Q"
wait_for 5 listed "$S" made || check "qemu-img snapshot -c: $S lists '$(names "$S")'" false
qemu-img snapshot -d made "$Q"
wait_for 5 not_listed "$S" made || check "qemu-img snapshot -d: $S lists '$(names "$S")'" false

qemu-img snapshot -c kept "$Q"
wait_for 5 listed "$S" kept || check "$S does not list kept" false
held=$( cd "$S" || exit 1
        ls -1 >/dev/null
        virsh -c "$LV_URI" undefine "$D" >/dev/null || exit 1
        gone () { ! ls -1 "$MNT" | grep -qxF -- "$D"; }
        wait_for 5 gone || exit 1
        ls -1 2>/dev/null | tr '\n' ' ' ) ||
  fail "undefine $D"
check "a working directory in the undefined $D still lists '$held'" [ -z "$held" ]
grep -i 'assert\|leak' "$(vmdiskfs_log "$MNT")" && fail "assertions or leaks in the log"
[ "$failures" = 0 ] || fail "$failures checks failed"
echo PASS
