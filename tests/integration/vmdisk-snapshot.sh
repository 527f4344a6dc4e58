#!/bin/bash
# vmdisk-snapshot, the command line tool, with a real libvirtd and qemu:
#  - usage errors exit 2, --help and --version exit 0;
#  - create/list/delete on a shut-off domain with two qcow2 disks and on
#    a running one, `qemu-img snapshot -l -U` of every image as the
#    oracle: the named and the default name (snap-YYYYMMDD-HHMMSS), the
#    mark (the description's first line "vmdisk-snapshot"), VM state for
#    the running domain, EEXIST/ENOENT/EINVAL with exit 1 and the message;
#  - --quiesce: shut off "consistent without freezing"; running without
#    a guest agent: a warning, exit 0, VM state kept on a qcow2-only
#    domain; with a freeze (faked by VMDISKFS_DOMSNAP_FAKE_FREEZE: our
#    domains have no guest OS) disk-only, "filesystems frozen";
#  - two creates at once (one held in the domain's lock by
#    VMDISKFS_DOMSNAP_HOLD): the second waits, says so, then both
#    succeed in order; a third gives up with EBUSY;
#  - prune: snapshots made by vmdisk-snapshot and moved back in time by
#    redefining them with another <creationTime> (virsh snapshot-dumpxml,
#    edit, snapshot-create --redefine), one made by virsh and one marked
#    as made by vmdiskfs, which prune must never delete; --dry-run deletes
#    nothing; exactly the expected ones are kept, with their reasons;
#    exit 3 when a deletion fails (an external snapshot, which libvirt
#    cannot delete); every command under valgrind when it is installed;
#  - examples/backup-rsync.sh and backup-tar.sh end to end against a
#    vmdiskfs mount (libvirt mode, read-write): the backed-up .raw files
#    equal the qemu-img oracle, holes stay holes, the snapshot is gone
#    afterwards, also when the copy fails; --mkdir makes it in the mount.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 cmp rsync tar awk
: "${VMDISK_SNAPSHOT:=$_fn_top/snapshotter/vmdisk-snapshot}"
export VMDISK_SNAPSHOT
[ -x "$VMDISK_SNAPSHOT" ] || fail "$VMDISK_SNAPSHOT is not built"
EXAMPLES=$(cd "$(dirname "$0")/../../examples" && pwd)
lv_start

P=$LV_PREFIX
IMG=$TEST_DIR/img
mkdir -p "$IMG"
export TZ=UTC                   # prune's periods and list's times

# Independent checks: one FAIL line each, the test fails at the end.
bad ()
{
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
ck ()                           # MESSAGE COMMAND...
{
  local msg=$1
  shift
  "$@" || bad "$msg"
}
has () { grep -qF -- "$2" "$1"; }
lacks () { ! grep -qF -- "$2" "$1"; }
not () { ! "$@"; }

# Run vmdisk-snapshot: status in rc, output in $OUT and $ERR.
OUT=$TEST_DIR/out
ERR=$TEST_DIR/err
vs ()
{
  rc=0
  "$VMDISK_SNAPSHOT" -c "$LV_URI" "$@" >"$OUT" 2>"$ERR" || rc=$?
}
# vs ARGS, then expect status RC (else a FAIL line with the output).
vs_expect ()                    # RC ARGS...
{
  local want=$1
  shift
  vs "$@"
  if [ "$rc" != "$want" ]; then
    bad "vmdisk-snapshot $*: exit $rc, want $want
  stdout: $(cat "$OUT")
  stderr: $(cat "$ERR")"
    return 1
  fi
}

# vs_expect 0 for a command over every domain of the host: other tests'
# domains may come and go meanwhile, so a failure (exit 1) is only ours
# when its messages name one of our domains.
vs_all ()                       # ARGS...
{
  vs "$@"
  if [ "$rc" = 1 ] && ! grep -qF -- "$P-" "$ERR"; then
    echo "note: vmdisk-snapshot $*: exit 1 for other domains: $(cat "$ERR")" >&2
    return 0
  fi
  [ "$rc" = 0 ] || bad "vmdisk-snapshot $*: exit $rc, want 0
  stderr: $(cat "$ERR")"
}

# The internal snapshot tags of an image, sorted, space-separated.
tags ()
{
  qemu-img snapshot -l -U "$1" | awk 'NR > 2 { print $2 }' | LC_ALL=C sort |
    tr '\n' ' ' | sed 's/ $//'
}
# libvirt's snapshot names of a domain, sorted.
lv_snaps ()
{
  lv_virsh snapshot-list --name "$1" | sed '/^$/d' | LC_ALL=C sort |
    tr '\n' ' ' | sed 's/ $//'
}
# Move snapshot SNAP of DOMAIN to creation time T (seconds) in libvirt.
redate ()                       # DOMAIN SNAP T
{
  lv_virsh snapshot-dumpxml "$1" "$2" >"$TEST_DIR/redate.xml" ||
    fail "snapshot-dumpxml $1 $2"
  sed -i "s|<creationTime>[0-9]*</creationTime>|<creationTime>$3</creationTime>|" \
    "$TEST_DIR/redate.xml"
  lv_virsh snapshot-create "$1" "$TEST_DIR/redate.xml" --redefine >/dev/null ||
    fail "snapshot-create --redefine $1 $2"
}
utc () { date -u -d "$1" +%s; }

# ---- Usage. ----

vs_expect 2
ck "no command: no hint to --help" has "$ERR" "Try 'vmdisk-snapshot --help'"
vs_expect 2 bogus
vs_expect 2 create
vs_expect 2 create a b c
vs_expect 2 delete onlydomain
vs_expect 2 list a b
vs_expect 2 create --cow-size 0 dom
vs_expect 2 create --cow-size 12x dom
vs_expect 2 create --cow-size 101% dom
vs_expect 2 create --no-such-option dom
vs_expect 2 prune dom
ck "prune without --keep: no reason given" has "$ERR" "no --keep-* count"
vs_expect 2 prune --keep-daily 0 --keep-last 0 dom
vs_expect 2 prune --keep-daily x dom
vs_expect 2 prune --keep-daily -1 dom
vs_expect 2 prune --all --keep-daily 1 dom
vs_expect 2 prune --keep-daily 1
vs_expect 0 --help
ck "--help lacks the exit status" has "$OUT" "3 prune: some deletions failed"
vs_expect 0 prune --help
ck "prune --help lacks --keep-weekly" has "$OUT" "--keep-weekly"
vs_expect 0 --version
ck "--version: $(cat "$OUT")" has "$OUT" "vmdisk-snapshot (vmdiskfs) "
# A connection that cannot be opened: exit 1, with the URI in the message.
rc=0
"$VMDISK_SNAPSHOT" -c "qemu:///nosuchthing" list >"$OUT" 2>"$ERR" || rc=$?
ck "bad URI: exit $rc, want 1" eq "$rc" 1
ck "bad URI: $(cat "$ERR")" has "$ERR" "cannot connect to qemu:///nosuchthing"

# ---- A shut-off domain with two qcow2 disks. ----

OFF=$P-off
A=$IMG/off-a.qcow2
B=$IMG/off-b.qcow2
lv_image qcow2 "$A" 64M
lv_image qcow2 "$B" 32M
qemu-io -f qcow2 -c "write -P 0x11 0 2M" "$A" >/dev/null
lv_define "$OFF" qcow2:vda:"$A" qcow2:vdb:"$B"

vs_expect 0 create "$OFF" first
ck "create: '$(cat "$OUT")'" eq "$(cat "$OUT")" \
  "created $OFF/first (libvirt internal)"
vs_expect 0 create --quiesce "$OFF" quiet
ck "create --quiesce shut off: '$(cat "$OUT")'" eq "$(cat "$OUT")" \
  "created $OFF/quiet (libvirt internal, consistent without freezing)"
ck "create --quiesce shut off: stderr: $(cat "$ERR")" eq "$(cat "$ERR")" ""
vs_expect 0 delete "$OFF" quiet
ck "create: $A has tags '$(tags "$A")', want 'first'" eq "$(tags "$A")" first
ck "create: $B has tags '$(tags "$B")', want 'first'" eq "$(tags "$B")" first
ck "create: libvirt has '$(lv_snaps "$OFF")'" eq "$(lv_snaps "$OFF")" first
lv_virsh snapshot-dumpxml "$OFF" first >"$TEST_DIR/first.xml"
ck "create: not marked as made by vmdisk-snapshot" \
  has "$TEST_DIR/first.xml" "<description>vmdisk-snapshot"

# The default name, after the local time.
before=$(date +%s)
vs_expect 0 create "$OFF"
after=$(date +%s)
def=$(sed -n "s|^created $OFF/\(snap-[0-9]\{8\}-[0-9]\{6\}\) .*|\1|p" "$OUT")
ck "default name: '$(cat "$OUT")'" test -n "$def"
if [ -n "$def" ]; then
  ok=
  for ((t = before; t <= after; t++)); do
    [ "$def" = "snap-$(date -d "@$t" +%Y%m%d-%H%M%S)" ] && ok=1
  done
  ck "default name $def is not the time of the call" test -n "$ok"
  ck "default name: $A has '$(tags "$A")'" eq "$(tags "$A")" "first $def"
fi

# Errors: the message names the operation and errno; exit 1.
vs_expect 1 create "$OFF" first
ck "EEXIST: '$(cat "$ERR")'" has "$ERR" \
  "vmdisk-snapshot: create $OFF/first: name taken (EEXIST)"
ck "EEXIST changed the images: $(tags "$A")" eq "$(tags "$A")" "first $def"
vs_expect 1 create "$P-nosuchdomain" x
ck "ENOENT: '$(cat "$ERR")'" has "$ERR" \
  "vmdisk-snapshot: create $P-nosuchdomain/x: no such domain (ENOENT)"
vs_expect 1 create "$OFF" 1234
ck "EINVAL: '$(cat "$ERR")'" has "$ERR" "invalid snapshot name (EINVAL)"
vs_expect 1 delete "$OFF" nosuchsnapshot
ck "delete ENOENT: '$(cat "$ERR")'" has "$ERR" \
  "delete $OFF/nosuchsnapshot: no such domain or snapshot (ENOENT)"
vs_expect 1 list "$P-nosuchdomain"
ck "list ENOENT: '$(cat "$ERR")'" has "$ERR" "(ENOENT)"
# A --cow-size is harmless for qcow2 disks.
vs_expect 0 create --cow-size 10% "$OFF" cow
vs_expect 0 delete "$OFF" cow

# list: the table and --names.
lv_virsh snapshot-create-as "$OFF" byvirsh >/dev/null || fail "snapshot-create-as"
vs_expect 0 list "$OFF"
ck "list: header '$(head -1 "$OUT")'" \
  eq "$(head -1 "$OUT" | tr -s ' ')" "DOMAIN NAME CREATED KIND BY"
t=$(date -d "@$(lv_virsh snapshot-dumpxml "$OFF" first |
                sed -n 's|.*<creationTime>\([0-9]*\)<.*|\1|p')" '+%Y-%m-%d %H:%M:%S')
ck "list: the line of first: $(grep " first " "$OUT")" \
  eq "$(grep " first " "$OUT" | tr -s ' ')" \
  "$OFF first $t libvirt vmdisk-snapshot"
ck "list: the line of byvirsh: $(grep " byvirsh " "$OUT")" \
  eq "$(grep " byvirsh " "$OUT" | awk '{ print $1, $2, $5, $6 }')" \
  "$OFF byvirsh libvirt -"
vs_expect 0 list --names "$OFF"
ck "list --names: '$(tr '\n' ' ' <"$OUT")'" \
  eq "$(LC_ALL=C sort "$OUT" | tr '\n' ' ')" "byvirsh first $def "
vs_all list --names
ck "list --names of all domains lacks $OFF<tab>first" \
  grep -qxF "$OFF	first" "$OUT"
vs_all list
ck "list of all domains lacks $OFF's first" grep -q "^$OFF  *first " "$OUT"

# delete: every part.
vs_expect 0 delete "$OFF" first
ck "delete: '$(cat "$OUT")'" eq "$(cat "$OUT")" "deleted $OFF/first"
ck "delete: $A has '$(tags "$A")'" eq "$(tags "$A")" "byvirsh $def"
ck "delete: $B has '$(tags "$B")'" eq "$(tags "$B")" "byvirsh $def"
ck "delete: libvirt has '$(lv_snaps "$OFF")'" eq "$(lv_snaps "$OFF")" "byvirsh $def"

# ---- A running domain. ----

RUN=$P-run
R=$IMG/run.qcow2
lv_image qcow2 "$R" 64M
qemu-io -f qcow2 -c "write -P 0x21 1M 1M" "$R" >/dev/null
lv_define "$RUN" qcow2:vda:"$R"
lv_virsh start "$RUN" >/dev/null || fail "virsh start $RUN"
vs_expect 0 create "$RUN" live
ck "running: '$(cat "$OUT")'" eq "$(cat "$OUT")" \
  "created $RUN/live (libvirt internal with VM state)"
ck "running: $R has '$(tags "$R")'" eq "$(tags "$R")" live
vmsize=$(qemu-img snapshot -l -U "$R" | awk '$2 == "live" { print $3 }')
ck "running: no VM state in the snapshot ($vmsize)" test "${vmsize:-0}" != 0
vs_expect 0 list "$RUN"
ck "running: KIND of live: $(cat "$OUT")" grep -q " live .* libvirt+memory  *vmdisk-snapshot$" "$OUT"
# --quiesce without an agent on a qcow2-only domain: as without it (VM
# state), and a warning; exit 0.
vs_expect 0 create --quiesce "$RUN" live2
ck "--quiesce without agent, VM state: no warning: $(cat "$ERR")" \
  has "$ERR" "vmdisk-snapshot: warning: $RUN/live2: no guest agent answered: the snapshot is crash-consistent"
ck "--quiesce without agent, VM state: '$(cat "$OUT")'" eq "$(cat "$OUT")" \
  "created $RUN/live2 (libvirt internal with VM state)"
# --quiesce with a freeze that works (faked: no guest OS in our domains):
# disk-only, no VM state.
VMDISKFS_DOMSNAP_FAKE_FREEZE=1 vs_expect 0 create --quiesce "$RUN" frozen
ck "--quiesce frozen: '$(cat "$OUT")'" eq "$(cat "$OUT")" \
  "created $RUN/frozen (libvirt internal, domain paused meanwhile, filesystems frozen)"
ck "--quiesce frozen: thawed: $(cat "$ERR")" has "$ERR" "filesystems thawed (fake"
vmsize=$(qemu-img snapshot -l -U "$R" | awk '$2 == "frozen" { print $3 }')
ck "--quiesce frozen: VM state in the snapshot ($vmsize)" eq "$vmsize" 0
vs_expect 0 list "$RUN"
ck "--quiesce frozen: KIND: $(cat "$OUT")" grep -q " frozen .* libvirt  *vmdisk-snapshot$" "$OUT"

# Two creates at once from two processes: the second waits for the
# first's lock (VMDISKFS_DOMSNAP_HOLD keeps the first in it until $hold
# is gone), then both succeed, one after the other.
uuid=$(lv_virsh domuuid "$RUN" | sed '/^$/d')
lock=/run/vmdiskfs/$uuid.lock
hold=$TEST_DIR/hold
: >"$hold"
: >"$TEST_DIR/lk1.err"
: >"$TEST_DIR/lk2.err"
VMDISKFS_DOMSNAP_HOLD=$hold "$VMDISK_SNAPSHOT" -c "$LV_URI" create "$RUN" lk1 \
  >"$TEST_DIR/lk1.out" 2>"$TEST_DIR/lk1.err" &
lk1=$!
on_exit "rm -f '$hold'; kill $lk1 2>/dev/null"
ck "lock: the first did not take the lock: $(cat "$TEST_DIR/lk1.err")" \
  wait_for 30 eval '[ -e "$lock" ] && ! flock -n "$lock" true'
ck "lock: $lock is $(stat -c '%U %a' "$lock")" \
  eq "$(stat -c '%U %a' "$lock")" "root 600"
ck "lock: /run/vmdiskfs is $(stat -c '%U %a %F' /run/vmdiskfs)" \
  eq "$(stat -c '%U %a %F' /run/vmdiskfs)" "root 700 directory"
# The waiting one under valgrind, when it is installed (exit 99: errors).
vgpre=()
command -v valgrind >/dev/null 2>&1 &&
  vgpre=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect
         --error-exitcode=99)
"${vgpre[@]}" "$VMDISK_SNAPSHOT" -c "$LV_URI" create "$RUN" lk2 \
  >"$TEST_DIR/lk2.out" 2>"$TEST_DIR/lk2.err" &
lk2=$!
on_exit "kill $lk2 2>/dev/null"
ck "lock: the second does not say it waits: $(cat "$TEST_DIR/lk2.err")" \
  wait_for 30 grep -q "waiting for another snapshot operation" "$TEST_DIR/lk2.err"
ck "lock: the second made lk2 while the first held the lock" \
  eq "$(tags "$R" | tr ' ' '\n' | grep -c '^lk')" 0
# A third gives up after its wait: EBUSY.
VMDISKFS_DOMSNAP_LOCK_WAIT=1 vs_expect 1 delete "$RUN" frozen
ck "lock: EBUSY: $(cat "$ERR")" has "$ERR" "(EBUSY)"
rm -f "$hold"
rc1=0; wait "$lk1" || rc1=$?
rc2=0; wait "$lk2" || rc2=$?
ck "lock: first: exit $rc1: $(cat "$TEST_DIR/lk1.err")" eq "$rc1" 0
ck "lock: second: exit $rc2: $(cat "$TEST_DIR/lk2.err")" eq "$rc2" 0
ck "lock: $R has '$(tags "$R")'" eq "$(tags "$R")" "frozen live live2 lk1 lk2"
ck "lock: $lock left behind" test ! -e "$lock"
# In that order: lk1 was current when lk2 was made.
ck "lock: lk2's parent is $(lv_virsh snapshot-parent "$RUN" lk2)" \
  eq "$(lv_virsh snapshot-parent "$RUN" lk2)" lk1
vs_expect 0 delete "$RUN" lk2
vs_expect 0 delete "$RUN" lk1
vs_expect 0 delete "$RUN" frozen
vs_expect 0 delete "$RUN" live
vs_expect 0 delete "$RUN" live2
ck "running: after delete $R has '$(tags "$R")'" eq "$(tags "$R")" ""
ck "running: libvirt has '$(lv_snaps "$RUN")'" eq "$(lv_snaps "$RUN")" ""
ck "running: the domain stopped" lv_running "$RUN"

# The lock directory made by another user (or a symbolic link, or open to
# others) is refused, never used: exit 1, EACCES, a message naming it, its
# owner and mode, nothing made, no lock file in it.  Run in a mount
# namespace of its own with a tmpfs over /run (the host's /run/libvirt
# bound back into it, for libvirtd's socket), so the host's /run/vmdiskfs
# is never touched, whatever happens here, and other tests go on.
squat ()                        # SHELL-COMMANDS-MAKING-/run/vmdiskfs
{
  rc=0
  mkdir -p "$TEST_DIR/lvrun"
  : >"$TEST_DIR/squat.ls"
  unshare -m --propagation private sh -c '
    set -e
    mount --bind /run/libvirt "$1"
    mount -t tmpfs -o mode=0755 vdt-run /run
    mkdir /run/libvirt
    mount --bind "$1" /run/libvirt
    eval "$2"
    shift 3
    rc=0
    "$@" || rc=$?
    ls -A /run/vmdiskfs/ >"$0" 2>&1 || true
    exit $rc' "$TEST_DIR/squat.ls" "$TEST_DIR/lvrun" "$1" - \
    "$VMDISK_SNAPSHOT" -c "$LV_URI" create "$RUN" squat \
    >"$OUT" 2>"$ERR" || rc=$?
}
squat_refused ()                # WHAT MESSAGE
{
  ck "squat $1: exit $rc, want 1: $(cat "$ERR")" eq "$rc" 1
  ck "squat $1: no message '$2': $(cat "$ERR")" has "$ERR" "$2"
  ck "squat $1: not EACCES: $(cat "$ERR")" has "$ERR" "(EACCES)"
  ck "squat $1: $R has '$(tags "$R")'" eq "$(tags "$R")" ""
  ck "squat $1: libvirt has '$(lv_snaps "$RUN")'" eq "$(lv_snaps "$RUN")" ""
  ck "squat $1: made in the directory: $(cat "$TEST_DIR/squat.ls")" \
    eq "$(cat "$TEST_DIR/squat.ls")" ""
}
squat 'mkdir /run/vmdiskfs; chown nobody: /run/vmdiskfs; chmod 0777 /run/vmdiskfs'
squat_refused "by nobody, 0777" \
  "lock directory /run/vmdiskfs has owner uid $(id -u nobody) and mode 0777: refused"
squat 'mkdir -m 0700 /run/elsewhere; ln -s elsewhere /run/vmdiskfs'
squat_refused "a symlink" "lock directory /run/vmdiskfs is a symbolic link"
squat 'mkdir -m 0755 /run/vmdiskfs'
squat_refused "by root, 0755" \
  "lock directory /run/vmdiskfs has owner uid 0 and mode 0755: refused"

# --quiesce without an agent, on the own path (a disk left out of
# snapshots): a warning on stderr, exit 0.
QU=$P-quiesce
Q1=$IMG/q1.qcow2
Q2=$IMG/q2.raw
lv_image qcow2 "$Q1" 32M
lv_image raw "$Q2" 8M
lv_define "$QU" qcow2:vda:"$Q1" raw:vdb:"$Q2"
lv_virsh dumpxml --inactive "$QU" >"$TEST_DIR/define.xml"
python3 - "$TEST_DIR/define.xml" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
i = s.index("type='raw'")
j = s.rindex("<disk type='file' device='disk'>", 0, i)
s = s[:j] + "<disk type='file' device='disk' snapshot='no'>" + \
    s[j + len("<disk type='file' device='disk'>"):]
open(p, "w").write(s)
EOF
lv_virsh define "$TEST_DIR/define.xml" >/dev/null || fail "define $QU with snapshot='no'"
lv_virsh start "$QU" >/dev/null || fail "virsh start $QU"
vs_expect 0 create --quiesce "$QU" q
ck "--quiesce without agent: no warning: $(cat "$ERR")" has "$ERR" \
  "vmdisk-snapshot: warning: $QU/q: no guest agent answered: the snapshot is crash-consistent"
ck "--quiesce without agent: '$(cat "$OUT")'" eq "$(cat "$OUT")" \
  "created $QU/q (libvirt internal, domain paused meanwhile)"
ck "--quiesce without agent: $Q1 has '$(tags "$Q1")'" eq "$(tags "$Q1")" q
vs_expect 0 delete "$QU" q
ck "--quiesce: after delete $Q1 has '$(tags "$Q1")'" eq "$(tags "$Q1")" ""
lv_virsh destroy "$QU" >/dev/null 2>&1
lv_virsh destroy "$RUN" >/dev/null 2>&1

# ---- prune ----

PR=$P-prune
PI=$IMG/prune.qcow2
lv_image qcow2 "$PI" 16M
lv_define "$PR" qcow2:vda:"$PI"
declare -A when=(
  [c1]="2026-01-10 02:00"      # Sat, 2026-W02
  [c2]="2026-02-10 02:00"      # Tue, 2026-W07
  [c3]="2026-03-01 02:00"      # Sun, 2026-W09
  [c4]="2026-03-02 02:00"      # Mon, 2026-W10
  [c5]="2026-03-03 02:00"
  [c6]="2026-03-03 14:00"
)
for s in c1 c2 c3 c4 c5 c6; do
  vs_expect 0 create "$PR" "$s" || fail "create $PR $s"
  redate "$PR" "$s" "$(utc "${when[$s]}")"
done
# Not vmdisk-snapshot's: one by virsh (older than all), one marked as
# made in a vmdiskfs mount (newer than all).
lv_virsh snapshot-create-as "$PR" manual --description "taken by hand" >/dev/null ||
  fail "snapshot-create-as manual"
redate "$PR" manual "$(utc "2025-12-01 00:00")"
lv_virsh snapshot-create-as "$PR" mounted --description "vmdiskfs" >/dev/null ||
  fail "snapshot-create-as mounted"
redate "$PR" mounted "$(utc "2026-03-04 00:00")"
all="c1 c2 c3 c4 c5 c6 manual mounted"
ck "prune setup: $PI has '$(tags "$PI")'" eq "$(tags "$PI")" "$all"
vs_expect 0 list "$PR"
ck "redefined time not listed: $(grep " c1 " "$OUT")" \
  grep -q " c1  *2026-01-10 02:00:00  *libvirt  *vmdisk-snapshot$" "$OUT"
ck "mounted is not listed as vmdiskfs's: $(grep " mounted " "$OUT")" \
  grep -q " mounted .* vmdiskfs$" "$OUT"

# line ACTION NAME: prune's line for NAME starts with ACTION.
line_is ()                      # ACTION NAME [REASON]
{
  local l
  l=$(grep -F " $PR/$2 " "$OUT" | tr -s ' ')
  case $l in
    "$1 $PR/$2 "*"${3:-}") return 0 ;;
  esac
  echo "  prune's line of $2: '$l', want '$1 ... ${3:-}'" >&2
  return 1
}

# Dry run: last 1, weekly 2 would keep c6 (W10) and c3 (W09).
vs_expect 0 prune --dry-run --keep-last 1 --keep-weekly 2 "$PR"
ck "dry run: c6" line_is keep c6 "last 1, weekly 2026-W10"
ck "dry run: c3" line_is keep c3 "weekly 2026-W09"
for s in c5 c4 c2 c1; do
  ck "dry run: $s" line_is "would delete" "$s" "no rule keeps it"
done
ck "dry run: manual" line_is leave manual "(made by something else)"
ck "dry run: mounted" line_is leave mounted "(made in a vmdiskfs mount)"
ck "dry run: summary: $(tail -1 "$OUT")" eq "$(tail -1 "$OUT")" \
  "$PR: 2 kept, 4 would be deleted, 2 not vmdisk-snapshot's left alone"
ck "dry run deleted something: $(tags "$PI")" eq "$(tags "$PI")" "$all"
ck "dry run deleted something from libvirt" eq "$(lv_snaps "$PR")" "$all"

# Across every domain, dry: our domain is in it, nothing goes.
vs_all prune --all --dry-run --keep-last 1
ck "prune --all: no line of $PR/c5" line_is "would delete" c5
ck "prune --all --dry-run deleted something" eq "$(tags "$PI")" "$all"

# For real: daily 2 keeps c6 and c4, monthly 3 keeps c6, c2, c1.
vs_expect 0 prune --keep-daily 2 --keep-monthly 3 "$PR"
ck "prune: c6" line_is keep c6 "daily 2026-03-03, monthly 2026-03"
ck "prune: c4" line_is keep c4 "daily 2026-03-02"
ck "prune: c2" line_is keep c2 "monthly 2026-02"
ck "prune: c1" line_is keep c1 "monthly 2026-01"
ck "prune: c5" line_is delete c5 "no rule keeps it"
ck "prune: c3" line_is delete c3 "no rule keeps it"
ck "prune: manual" line_is leave manual
ck "prune: summary: $(tail -1 "$OUT")" eq "$(tail -1 "$OUT")" \
  "$PR: 4 kept, 2 deleted, 2 not vmdisk-snapshot's left alone"
ck "prune: $PI has '$(tags "$PI")'" eq "$(tags "$PI")" "c1 c2 c4 c6 manual mounted"
ck "prune: libvirt has '$(lv_snaps "$PR")'" eq "$(lv_snaps "$PR")" \
  "c1 c2 c4 c6 manual mounted"
# Again: nothing more to do.
vs_expect 0 prune --keep-daily 2 --keep-monthly 3 "$PR"
ck "prune again changed something" eq "$(tags "$PI")" "c1 c2 c4 c6 manual mounted"
# The narrowest policy still never touches the others.
vs_expect 0 prune --keep-last 1 "$PR"
ck "prune --keep-last 1: $PI has '$(tags "$PI")'" eq "$(tags "$PI")" \
  "c6 manual mounted"

# A deletion that fails: c7 re-registered as an external snapshot (with
# the mark), which libvirt 9 cannot delete.  Exit 3, and the other
# deletions are still done.
for s in c7 c8; do
  vs_expect 0 create "$PR" "$s"
done
redate "$PR" c8 "$(utc "2026-01-02 00:00")"
vs_expect 0 delete "$PR" c7
{
  echo "<domainsnapshot><name>c7</name><description>vmdisk-snapshot</description>"
  echo "<state>shutoff</state><creationTime>$(utc "2026-01-01 00:00")</creationTime>"
  echo "<memory snapshot='no'/><disks><disk name='vda' snapshot='external' type='file'>"
  echo "<driver type='qcow2'/><source file='$IMG/prune.c7'/></disk></disks>"
  lv_virsh dumpxml --inactive "$PR"
  echo "</domainsnapshot>"
} >"$TEST_DIR/c7.xml"
lv_virsh snapshot-create "$PR" "$TEST_DIR/c7.xml" --redefine >/dev/null ||
  fail "snapshot-create --redefine c7 (external)"
vs_expect 3 prune --keep-last 1 "$PR"
ck "prune exit 3: no message about c7: $(cat "$ERR")" has "$ERR" \
  "vmdisk-snapshot: prune: delete $PR/c7: "
ck "prune exit 3: c8 not deleted: $(tags "$PI")" eq "$(tags "$PI")" \
  "c6 manual mounted"
ck "prune exit 3: summary: $(tail -1 "$OUT")" eq "$(tail -1 "$OUT")" \
  "$PR: 1 kept, 1 deleted (some failed), 2 not vmdisk-snapshot's left alone"
lv_virsh snapshot-delete "$PR" c7 --metadata >/dev/null ||
  fail "snapshot-delete --metadata c7"

# Memcheck of every command, the error paths too (EEXIST, ENOENT, exit 3
# is above).
if command -v valgrind >/dev/null 2>&1; then
  vg ()
  {
    rc=0
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
      --error-exitcode=99 "$VMDISK_SNAPSHOT" -c "$LV_URI" "$@" \
      >"$OUT" 2>"$ERR" || rc=$?
    ck "valgrind: vmdisk-snapshot $*:
$(cat "$ERR")" test "$rc" != 99
  }
  vg create "$PR" vg
  redate "$PR" vg "$(utc "2025-06-01 00:00")"
  vg list
  vg list --names "$PR"
  vg list "$PR"
  vg prune --dry-run --keep-last 1 --keep-daily 3 "$PR"
  vg prune --keep-last 1 "$PR"
  vg create "$PR" c6
  vg create --quiesce "$PR" vgq
  vg delete "$PR" vgq
  vg delete "$PR" nosuch
  vg create "$P-nosuchdomain"
  ck "valgrind: prune left 'vg': $(tags "$PI")" eq "$(tags "$PI")" \
    "c6 manual mounted"
fi

# ---- The commands of examples/vmdisk-snapshot@.service, as systemd ----
# would run them for instance $PR (%I), in order, stopping at a failure.

while IFS= read -r cmd; do
  cmd=${cmd#ExecStart=}
  cmd=${cmd//%I/$PR}
  read -r -a words <<<"$cmd"
  [ "${words[0]}" = vmdisk-snapshot ] || { bad "service: ExecStart=$cmd"; continue; }
  vs_expect 0 "${words[@]:1}" || break
  cat "$OUT" >>"$TEST_DIR/service.out"
done < <(grep '^ExecStart=' "$EXAMPLES/vmdisk-snapshot@.service")
ck "service: $(cat "$TEST_DIR/service.out" 2>/dev/null)" \
  grep -q "^created $PR/snap-[0-9]\{8\}-[0-9]\{6\} (libvirt internal, consistent without freezing)$" \
  "$TEST_DIR/service.out"
# Tonight's, the newest of the month and of the week: c6 (2026-03) stays
# too as the newest of its month and week.
ck "service: prune: $(tail -1 "$TEST_DIR/service.out" 2>/dev/null)" \
  eq "$(tail -1 "$TEST_DIR/service.out" 2>/dev/null)" \
  "$PR: 2 kept, 0 deleted, 2 not vmdisk-snapshot's left alone"
ck "service: $PI has '$(tags "$PI")'" \
  eq "$(tags "$PI" | sed 's/snap-[0-9]*-[0-9]*/TONIGHT/')" \
  "c6 manual mounted TONIGHT"

# ---- The backup scripts against a vmdiskfs mount. ----

BK=$P-backup
B1=$IMG/bk-a.qcow2
B2=$IMG/bk-b.qcow2
lv_image qcow2 "$B1" 64M
lv_image qcow2 "$B2" 32M
qemu-io -f qcow2 -c "write -P 0x31 0 1M" -c "write -P 0x32 40M 3M" "$B1" >/dev/null
qemu-io -f qcow2 -c "write -P 0x41 5M 1M" "$B2" >/dev/null
lv_define "$BK" qcow2:vda:"$B1" qcow2:vdb:"$B2"
lv_raw_oracle "$B1" "$TEST_DIR/oracle-a.raw"
lv_raw_oracle "$B2" "$TEST_DIR/oracle-b.raw"
# Running (in its firmware, not writing to its disks): a live backup.
lv_virsh start "$BK" >/dev/null || fail "virsh start $BK"
MNT=$LV_MNT_DIR/mnt
lv_mount "$MNT"
gone ()                         # SNAPSHOT: no trace of it anywhere
{
  [ -z "$(tags "$B1")" ] && [ -z "$(tags "$B2")" ] &&
    [ -z "$(lv_snaps "$BK")" ] && [ ! -e "$MNT/$BK/snapshots/$1" ]
}
allocated () { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }

out=$TEST_DIR/rsync
rc=0
"$EXAMPLES/backup-rsync.sh" -m "$MNT" -c "$LV_URI" -n nightly "$BK" "$out" \
  >"$OUT" 2>"$ERR" || rc=$?
ck "backup-rsync.sh: exit $rc: $(cat "$ERR")" eq "$rc" 0
ck "backup-rsync.sh: files $(cd "$out" 2>/dev/null && ls | tr '\n' ' ')" \
  eq "$(cd "$out" 2>/dev/null && ls | tr '\n' ' ')" "domain.xml snapshot.xml vda.img vdb.img "
ck "backup-rsync.sh: vda.img differs from the oracle" \
  same_bytes "$out/vda.img" "$TEST_DIR/oracle-a.raw"
ck "backup-rsync.sh: vdb.img differs from the oracle" \
  same_bytes "$out/vdb.img" "$TEST_DIR/oracle-b.raw"
ck "backup-rsync.sh: vda.img not sparse ($(allocated "$out/vda.img") bytes)" \
  test "$(allocated "$out/vda.img")" -le $((8 * 1024 * 1024))
ck "backup-rsync.sh: the snapshot is left: $(tags "$B1") / $(lv_snaps "$BK")" \
  wait_for 10 gone nightly
ck "backup-rsync.sh: the domain stopped" lv_running "$BK"

arch=$TEST_DIR/bk.tar
rc=0
"$EXAMPLES/backup-tar.sh" -m "$MNT" -c "$LV_URI" "$BK" "$arch" \
  >"$OUT" 2>"$ERR" || rc=$?
ck "backup-tar.sh: exit $rc: $(cat "$ERR")" eq "$rc" 0
ck "backup-tar.sh: members $(tar -tf "$arch" | LC_ALL=C sort | tr '\n' ' ')" \
  eq "$(tar -tf "$arch" | LC_ALL=C sort | tr '\n' ' ')" \
  "./ ./domain.xml ./snapshot.xml ./vda.img ./vdb.img "
mkdir -p "$TEST_DIR/untar"
tar -xSf "$arch" -C "$TEST_DIR/untar" || bad "tar -x $arch"
ck "backup-tar.sh: vda.img differs from the oracle" \
  same_bytes "$TEST_DIR/untar/vda.img" "$TEST_DIR/oracle-a.raw"
ck "backup-tar.sh: vdb.img differs from the oracle" \
  same_bytes "$TEST_DIR/untar/vdb.img" "$TEST_DIR/oracle-b.raw"
ck "backup-tar.sh: the archive stores the holes ($(stat -c %s "$arch") bytes)" \
  test "$(stat -c %s "$arch")" -le $((8 * 1024 * 1024))
ck "backup-tar.sh: the snapshot is left: $(tags "$B1") / $(lv_snaps "$BK")" \
  wait_for 10 gone x
ck "backup-tar.sh: the default name: $(cat "$OUT")" \
  grep -q "(snapshot backup-[0-9]\{8\}-[0-9]\{6\})" "$OUT"

# A copy that fails (the target is under a regular file): the snapshot
# is deleted all the same, no .part file stays.
: >"$TEST_DIR/file"
rc=0
"$EXAMPLES/backup-rsync.sh" -m "$MNT" -c "$LV_URI" -n fails "$BK" \
  "$TEST_DIR/file/sub" >"$OUT" 2>"$ERR" || rc=$?
ck "backup-rsync.sh to a bad target: exit 0" test "$rc" != 0
ck "backup-rsync.sh failed: the snapshot is left: $(tags "$B1")" \
  wait_for 10 gone fails
rc=0
"$EXAMPLES/backup-tar.sh" -m "$MNT" -c "$LV_URI" -n fails "$BK" \
  "$TEST_DIR/file/x.tar" >"$OUT" 2>"$ERR" || rc=$?
ck "backup-tar.sh to a bad target: exit 0" test "$rc" != 0
ck "backup-tar.sh failed: the snapshot is left: $(tags "$B1")" \
  wait_for 10 gone fails
# A name that is taken: the script fails and leaves the other's snapshot.
lv_virsh snapshot-create-as "$BK" taken >/dev/null || fail "snapshot-create-as taken"
rc=0
"$EXAMPLES/backup-tar.sh" -m "$MNT" -c "$LV_URI" -n taken "$BK" \
  "$TEST_DIR/taken.tar" >"$OUT" 2>"$ERR" || rc=$?
ck "backup-tar.sh with a taken name: exit 0" test "$rc" != 0
ck "backup-tar.sh with a taken name deleted it: $(tags "$B1")" \
  eq "$(tags "$B1")" taken
lv_virsh snapshot-delete "$BK" taken >/dev/null || fail "snapshot-delete taken"

# A shut-off domain whose image is written right after the snapshot (a
# vmdisk-snapshot wrapper does it): the backup holds the snapshot's bytes
# (the oracle: a copy of the image reverted to it), not today's.
BO=$P-backup-off
BO1=$IMG/bo.qcow2
lv_image qcow2 "$BO1" 32M
qemu-io -f qcow2 -c "write -P 0x51 0 2M" -c "write -P 0x52 20M 1M" "$BO1" >/dev/null
lv_define "$BO" qcow2:vda:"$BO1"
cat >"$TEST_DIR/vs-wrapper" <<WRAPPER
#!/bin/bash
"$VMDISK_SNAPSHOT" "\$@" || exit
if [ "\$3" = create ]; then
  cp --sparse=always "$BO1" "$TEST_DIR/bo-at-snapshot.qcow2"
  qemu-io -f qcow2 -c "write -P 0x53 1M 2M" -c "write -z 20M 1M" "$BO1" >/dev/null
fi
WRAPPER
chmod +x "$TEST_DIR/vs-wrapper"
rc=0
VMDISK_SNAPSHOT=$TEST_DIR/vs-wrapper "$EXAMPLES/backup-rsync.sh" -m "$MNT" \
  -c "$LV_URI" --no-quiesce -n snap "$BO" "$TEST_DIR/bo" >"$OUT" 2>"$ERR" || rc=$?
ck "backup-rsync.sh, shut off: exit $rc: $(cat "$ERR")" eq "$rc" 0
if [ -f "$TEST_DIR/bo-at-snapshot.qcow2" ]; then
  lv_raw_oracle "$TEST_DIR/bo-at-snapshot.qcow2" "$TEST_DIR/oracle-bo.raw" snap
  lv_raw_oracle "$BO1" "$TEST_DIR/oracle-bo-now.raw"
  ck "backup-rsync.sh, shut off: vda.img is not the snapshot's" \
    same_bytes "$TEST_DIR/bo/vda.img" "$TEST_DIR/oracle-bo.raw"
  ck "backup-rsync.sh, shut off: the image did not change after the snapshot" \
    not same_bytes "$TEST_DIR/oracle-bo.raw" "$TEST_DIR/oracle-bo-now.raw"
else
  bad "backup-rsync.sh, shut off: the wrapper did not run"
fi
ck "backup-rsync.sh, shut off: the snapshot is left: $(tags "$BO1")" \
  eq "$(tags "$BO1")" ""

# --mkdir: the snapshot made and removed in the mount.
rc=0
"$EXAMPLES/backup-tar.sh" --mkdir -m "$MNT" -n bymkdir "$BK" "$TEST_DIR/m.tar.gz" \
  >"$OUT" 2>"$ERR" || rc=$?
ck "backup-tar.sh --mkdir: exit $rc: $(cat "$ERR")" eq "$rc" 0
rm -rf "$TEST_DIR/untar" && mkdir "$TEST_DIR/untar"
tar -xzSf "$TEST_DIR/m.tar.gz" -C "$TEST_DIR/untar" 2>/dev/null || bad "tar -xz"
ck "backup-tar.sh --mkdir: vda.img differs from the oracle" \
  same_bytes "$TEST_DIR/untar/vda.img" "$TEST_DIR/oracle-a.raw"
ck "backup-tar.sh --mkdir: the snapshot is left: $(tags "$B1")" \
  wait_for 10 gone bymkdir
lv_alive "$MNT"

[ "$failures" = 0 ] || fail "$failures checks failed"
echo "PASS"
