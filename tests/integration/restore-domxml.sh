#!/bin/bash
# vmdiskfs - writing <domain>/domain.xml and pending domain directories,
# with a real libvirtd (issue 10, the parts without a guest):
#  - domain.xml of an existing domain rewritten by every way tools write a
#    file: cp and cat > (O_TRUNC + write), sed -i and rsync -a (temp file +
#    rename), tar -x (unlink + create) and tar --overwrite -x (O_TRUNC),
#    and by write + fsync (applied at the fsync, before the close): each
#    time `virsh dumpxml --inactive` has the change, the mount's domain.xml
#    reads it, nothing is left in the directory or in staging;
#  - refused, with EINVAL at close or rename (cp, sed -i and tar exit
#    non-zero), a log line naming the domain, `virsh dumpxml --inactive`
#    and the mount's domain.xml unchanged: malformed XML, XML libvirt's
#    schema rejects (VALIDATE), another <name> (unknown, and another
#    domain's), the <uuid> of another domain;
#  - a running domain: its next-boot definition changes, the live one not;
#  - mkdir MOUNT/NAME: EEXIST for a defined domain, a pending directory for
#    an unknown name;
#  - path confinement: a pending domain whose domain.xml names a disk
#    /etc/vmdiskfs-evil-*.img, POOL/../../vmdiskfs-evil-*.img, or a file
#    under no pool's directory: EACCES at close (cp exits non-zero),
#    nothing created on the host, nothing defined, a log line;
#  - a pending directory that never gets a valid domain.xml leaves nothing
#    behind (staging empty, nothing in the pool directory, nothing
#    defined) after rm -rf, and after an unmount.
# restore-vm.sh has the whole-VM restores with a guest.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/libvirt-functions.sh"
set -u
require python3 qemu-img rsync tar cmp sed
lv_start

P=$LV_PREFIX
MNT=$LV_MNT_DIR/mnt
POOL=$P-pool
PD=$TEST_DIR/pool
STAGE=$TEST_DIR/staging
X=$TEST_DIR/xml
mkdir -p "$X"
mkdir -m 0700 "$STAGE"
MiB=$((1024 * 1024))
t00=$(date +%s)

listing () { (cd "$1" && ls -1A | LC_ALL=C sort | tr '\n' ' '); }
staging_empty () { [ -z "$(ls -A "$STAGE")" ] || { ls -la "$STAGE" >&2; return 1; }; }
inactive () { lv_virsh dumpxml --inactive "$1" 2>&1; }
defined () { lv_virsh domuuid "$1" >/dev/null 2>&1; }
# The log from byte OFF on.
log_size () { stat -c %s "$(vmdiskfs_log "$MNT")"; }
log_since () { tail -c +$(($1 + 1)) "$(vmdiskfs_log "$MNT")"; }
logged () { log_since "$1" | grep -qF -- "$2"; }   # OFF WORD
# The errno name of writing FILE's bytes to PATH with open(O_TRUNC),
# write, close: "ok", or the failing step and errno (close:EINVAL).
write_errno ()                  # SRC PATH
{
  python3 - "$1" "$2" <<'EOF'
import errno, os, sys
src, path = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
step = "open"
try:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
    step = "write"
    os.write(fd, data)
    step = "close"
    os.close(fd)
    print("ok")
except OSError as e:
    print("%s:%s" % (step, errno.errorcode.get(e.errno, e.errno)))
EOF
}
# Temp file + rename in PATH's directory, as sed -i does: "ok" or the step.
rename_errno ()                 # SRC PATH
{
  python3 - "$1" "$2" <<'EOF'
import errno, os, sys
src, path = sys.argv[1], sys.argv[2]
tmp = os.path.join(os.path.dirname(path), ".vdtest.tmp")
step = "create"
try:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    step = "write"
    os.write(fd, open(src, "rb").read())
    step = "close"
    os.close(fd)
    step = "rename"
    os.rename(tmp, path)
    print("ok")
except OSError as e:
    print("%s:%s" % (step, errno.errorcode.get(e.errno, e.errno)))
    try:
        os.unlink(tmp)
    except OSError:
        pass
EOF
}

# ---- Two domains with a small raw disk each, in a dir pool. ----

lv_pool "$POOL" "$PD"
A=$P-a
B=$P-b
lv_image raw "$PD/a.raw" 1M
lv_image raw "$PD/b.raw" 1M
lv_virsh pool-refresh "$POOL" >/dev/null || fail "pool-refresh $POOL"
lv_define "$A" raw:vda:"$PD/a.raw"
lv_define "$B" raw:vda:"$PD/b.raw"
UA=$(lv_virsh domuuid "$A")
UB=$(lv_virsh domuuid "$B")

lv_mount "$MNT" -o staging="$STAGE"
echo "mounted $(vmdiskfs_pid "$MNT")"
DA=$MNT/$A
[ -f "$DA/domain.xml" ] || fail "no $DA/domain.xml: $(listing "$MNT")"
listA=$(listing "$DA")

# The current definition of A with <description>TEXT</description>.
with_desc ()                    # TEXT OUT
{
  inactive "$A" | sed -e '/<description>/d' \
    -e "s|</uuid>|</uuid>\n  <description>$1</description>|" >"$2"
  grep -q "<description>$1</description>" "$2" || fail "with_desc $1: $(cat "$2")"
}
has_desc () { inactive "$1" | grep -qF "<description>$2</description>"; }

# After a write that must have applied: the change is in libvirt and in
# the mount, nothing left behind.
applied ()                      # WHAT TEXT
{
  local what=$1 text=$2
  check "$what: virsh dumpxml --inactive has no <description>$text: $(inactive "$A" | grep description)" \
    has_desc "$A" "$text"
  check "$what: the mount's domain.xml differs from virsh dumpxml --inactive" \
    eq "$(cat "$DA/domain.xml")" "$(inactive "$A")"
  check "$what: $A holds $(listing "$DA"), was $listA" eq "$(listing "$DA")" "$listA"
  check "$what: staging not empty" staging_empty
}

# ---- 1. domain.xml rewritten by each tool. ----

with_desc "by cp" "$X/cp.xml"
rc=0; cp "$X/cp.xml" "$DA/domain.xml" 2>"$TEST_DIR/err" || rc=$?
check "cp onto domain.xml: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
applied cp "by cp"

with_desc "by cat" "$X/cat.xml"
rc=0; { cat "$X/cat.xml" >"$DA/domain.xml"; } 2>"$TEST_DIR/err" || rc=$?
check "cat > domain.xml: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
applied "cat >" "by cat"

rc=0; sed -i 's|<description>by cat</description>|<description>by sed</description>|' \
  "$DA/domain.xml" 2>"$TEST_DIR/err" || rc=$?
check "sed -i domain.xml: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
applied "sed -i" "by sed"

mkdir -p "$X/rsync"
with_desc "by rsync" "$X/rsync/domain.xml"
touch -d '2021-06-07 08:09:10' "$X/rsync/domain.xml"
rc=0; rsync -a "$X/rsync/domain.xml" "$DA/" 2>"$TEST_DIR/err" || rc=$?
check "rsync -a domain.xml: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
applied "rsync -a" "by rsync"

mkdir -p "$X/tar"
with_desc "by tar" "$X/tar/domain.xml"
tar -cf "$X/tar.tar" -C "$X/tar" domain.xml
rc=0; tar -xf "$X/tar.tar" -C "$DA" 2>"$TEST_DIR/err" || rc=$?
check "tar -xf domain.xml (unlink + create): exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
applied "tar -x" "by tar"

with_desc "by tar overwrite" "$X/tar/domain.xml"
tar -cf "$X/tar.tar" -C "$X/tar" domain.xml
rc=0; tar --overwrite -xf "$X/tar.tar" -C "$DA" 2>"$TEST_DIR/err" || rc=$?
check "tar --overwrite -xf domain.xml: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
applied "tar --overwrite -x" "by tar overwrite"

# fsync applies it: seen by virsh while the file is still open.
with_desc "by fsync" "$X/fsync.xml"
out=$(python3 - "$X/fsync.xml" "$DA/domain.xml" "$LV_URI" "$A" <<'EOF'
import errno, os, subprocess, sys
src, path, uri, name = sys.argv[1:5]
try:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, open(src, "rb").read())
    os.fsync(fd)
except OSError as e:
    print("fsync-step:" + errno.errorcode.get(e.errno, str(e.errno)))
    sys.exit(0)
x = subprocess.run(["virsh", "-q", "-c", uri, "dumpxml", "--inactive", name],
                   capture_output=True, text=True).stdout
print("seen" if "<description>by fsync</description>" in x else "not-seen")
try:
    os.close(fd)
    print("closed")
except OSError as e:
    print("close:" + errno.errorcode.get(e.errno, str(e.errno)))
EOF
)
out=$(echo $out)
check "write + fsync of domain.xml: $out (want: applied at the fsync, before the close)" \
  eq "$out" "seen closed"
applied "write + fsync" "by fsync"

# ---- 1. Refused: nothing changes. ----

good=$(inactive "$A")
# domain.xml's candidates.
printf '<domain type="%s">\n  <name>%s</name>\n  <uuid' "$LV_DOMTYPE" "$A" >"$X/malformed.xml"
# Well-formed, but not libvirt's schema (VALIDATE).
inactive "$A" | sed "s|</devices>|  <bogus-device/>\n  </devices>|" >"$X/schema.xml"
inactive "$A" | sed "s|<name>$A</name>|<name>$P-other</name>|" >"$X/othername.xml"
inactive "$A" | sed -e "s|<name>$A</name>|<name>$B</name>|" >"$X/bname.xml"
inactive "$A" | sed -e "s|<uuid>$UA</uuid>|<uuid>$UB</uuid>|" >"$X/buuid.xml"
grep -q "<name>$P-other</name>" "$X/othername.xml" && grep -q "<uuid>$UB</uuid>" "$X/buuid.xml" &&
  grep -q "bogus-device" "$X/schema.xml" || fail "making the refused XMLs"
lv_forget_later "$P-other"      # cleaned up if wrongly defined

unchanged ()                    # WHAT
{
  check "$1: virsh dumpxml --inactive $A changed: $(diff <(echo "$good") <(inactive "$A") | head -5)" \
    eq "$(inactive "$A")" "$good"
  check "$1: the mount's domain.xml changed: $(diff <(echo "$good") "$DA/domain.xml" 2>&1 | head -5)" \
    eq "$(cat "$DA/domain.xml")" "$good"
  check "$1: $A holds $(listing "$DA"), was $listA" eq "$(listing "$DA")" "$listA"
  check "$1: staging not empty" staging_empty
  check "$1: $B changed (uuid $(lv_virsh domuuid "$B" 2>&1))" eq "$(lv_virsh domuuid "$B" 2>&1)" "$UB"
  check "$1: $P-other got defined" eval '! defined "$P-other"'
}

for bad in malformed schema othername bname buuid; do
  off=$(log_size)
  got=$(write_errno "$X/$bad.xml" "$DA/domain.xml")
  check "$bad XML written to domain.xml (O_TRUNC, write, close): $got, want close:EINVAL" \
    eq "$got" close:EINVAL
  check "$bad XML: no log line naming $A or domain.xml: $(log_since "$off" | head -3)" \
    eval 'logged "$off" "$A" || logged "$off" domain.xml'
  unchanged "$bad XML by write"
  got=$(rename_errno "$X/$bad.xml" "$DA/domain.xml")
  check "$bad XML renamed onto domain.xml: $got, want rename:EINVAL" eq "$got" rename:EINVAL
  unchanged "$bad XML by rename"
done
echo "refused: $(log_since 0 | grep -c -i -e invalid -e refus -e EINVAL) log lines; e.g.:"
log_since 0 | grep -i -e "$A" | tail -3

# The tools report it.
rc=0; cp "$X/bname.xml" "$DA/domain.xml" 2>"$TEST_DIR/err" || rc=$?
check "cp of another domain's name onto domain.xml exited 0" eval '[ $rc != 0 ]'
echo "cp says: $(cat "$TEST_DIR/err")"
unchanged "cp of another domain's name"
rc=0; sed -i "s|<uuid>$UA</uuid>|<uuid>$UB</uuid>|" "$DA/domain.xml" 2>"$TEST_DIR/err" || rc=$?
check "sed -i putting $B's uuid in domain.xml exited 0" eval '[ $rc != 0 ]'
echo "sed -i says: $(cat "$TEST_DIR/err")"
unchanged "sed -i of another domain's uuid"
mkdir -p "$X/bad"
cp "$X/malformed.xml" "$X/bad/domain.xml"
tar -cf "$X/bad.tar" -C "$X/bad" domain.xml
rc=0; tar -xf "$X/bad.tar" -C "$DA" 2>"$TEST_DIR/err" || rc=$?
check "tar -x of malformed domain.xml exited 0" eval '[ $rc != 0 ]'
echo "tar -x says: $(head -2 "$TEST_DIR/err" | tr '\n' ' ')"
unchanged "tar -x of malformed XML"

# ---- 1. A running domain: the next-boot definition. ----

if lv_virsh start "$A" >/dev/null 2>"$TEST_DIR/err"; then
  live0=$(lv_virsh dumpxml "$A")
  with_desc "while running" "$X/running.xml"
  rc=0; cp "$X/running.xml" "$DA/domain.xml" 2>"$TEST_DIR/err" || rc=$?
  check "cp onto a running domain's domain.xml: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
  check "running: virsh dumpxml --inactive has no <description>while running" \
    has_desc "$A" "while running"
  check "running: the live definition changed: $(diff <(echo "$live0") <(lv_virsh dumpxml "$A") | head -4)" \
    eq "$(lv_virsh dumpxml "$A")" "$live0"
  check "running: the domain is $(lv_virsh domstate "$A")" lv_running "$A"
  check "running: the mount's domain.xml is not the inactive definition" \
    eq "$(cat "$DA/domain.xml")" "$(inactive "$A")"
  lv_virsh destroy "$A" >/dev/null 2>&1
else
  check "virsh start $A: $(cat "$TEST_DIR/err")" false
fi

# ---- 2. mkdir at the top. ----

got=$(op_errno 'os.mkdir(path)' "$DA")
check "mkdir of the defined domain $A: $got, want EEXIST" eq "$got" EEXIST
N=$P-new
lv_forget_later "$N"
got=$(op_errno 'os.mkdir(path)' "$MNT/$N")
check "mkdir $N (unknown to libvirt): $got" eq "$got" ok
check "the pending $N is not a directory in the mount" test -d "$MNT/$N"
check "the pending $N is not listed: $(listing "$MNT")" eval 'listing "$MNT" | grep -qw -- "$N"'
check "the pending $N got defined" eval '! defined "$N"'
got=$(op_errno 'os.mkdir(path)' "$MNT/$N")
check "mkdir of the pending $N again: $got, want EEXIST" eq "$got" EEXIST
got=$(op_errno 'os.rmdir(path)' "$MNT/$N")
check "rmdir of the empty pending $N: $got" eq "$got" ok
check "rmdir: the pending $N is still there" test ! -e "$MNT/$N"

# ---- 3. Path confinement. ----

OUT=$(dirname "$TEST_DIR")/vmdiskfs-evil-$$.img  # POOL/../../ resolves here
ETC=/etc/vmdiskfs-evil-$$.img
NOPOOL=$TEST_DIR/nopool/vmdiskfs-evil.img
mkdir -p "$TEST_DIR/nopool"
chmod 0755 "$TEST_DIR/nopool"
on_exit "rm -f '$OUT' '$ETC' '$NOPOOL'"
[ "$(realpath -m "$PD/../../vmdiskfs-evil-$$.img")" = "$OUT" ] || fail "$OUT"
head -c $MiB /dev/urandom >"$TEST_DIR/vda.img"
poolfiles=$(listing "$PD")

i=0
for path in "$ETC" "$PD/../../vmdiskfs-evil-$$.img" "$NOPOOL"; do
  i=$((i + 1))
  E=$P-evil$i
  lv_forget_later "$E"
  # A definition of a new domain (no uuid: libvirt makes one).
  inactive "$A" | sed -e "s|<name>$A</name>|<name>$E</name>|" -e '/<uuid>/d' \
    -e "s|<source file='$PD/a.raw'/>|<source file='$path'/>|" >"$X/evil.xml"
  grep -qF "<source file='$path'/>" "$X/evil.xml" || fail "making evil.xml: $(cat "$X/evil.xml")"
  mkdir "$MNT/$E" || { check "mkdir $MNT/$E" false; continue; }
  # The disk first (staged), then the definition.
  rc=0; cp "$TEST_DIR/vda.img" "$MNT/$E/vda.img" 2>"$TEST_DIR/err" || rc=$?
  check "$E: cp vda.img into the pending directory: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
  off=$(log_size)
  got=$(write_errno "$X/evil.xml" "$MNT/$E/domain.xml")
  check "$E: domain.xml naming the disk $path: $got, want close:EACCES" eq "$got" close:EACCES
  rc=0; cp "$X/evil.xml" "$MNT/$E/domain.xml" 2>"$TEST_DIR/err" || rc=$?
  check "$E: cp of domain.xml naming $path exited 0" eval '[ $rc != 0 ]'
  check "$E: $path was created on the host" test ! -e "$path"
  check "$E: $(realpath -m "$path") was created on the host" test ! -e "$(realpath -m "$path")"
  check "$E: got defined" eval '! defined "$E"'
  check "$E: the pool directory holds $(listing "$PD"), was $poolfiles" eq "$(listing "$PD")" "$poolfiles"
  check "$E: no log line naming $E or $path: $(log_since "$off" | head -3)" \
    eval 'logged "$off" "$E" || logged "$off" "$path"'
  # 5. Never a valid domain.xml: rm -rf leaves nothing.
  rc=0; rm -rf "$MNT/$E" 2>"$TEST_DIR/err" || rc=$?
  check "$E: rm -rf of the pending directory: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
  check "$E: still in the mount after rm -rf" test ! -e "$MNT/$E"
  check "$E: staging not empty after rm -rf" staging_empty
done
echo "confinement: e.g. $(grep -F "$P-evil" "$(vmdiskfs_log "$MNT")" | head -2)"

# ---- 5. A pending directory with disks and a snapshot, never defined. ----

N=$P-pending2
lv_forget_later "$N"
rc=0
{ mkdir "$MNT/$N" && mkdir -p "$MNT/$N/snapshots/s1" &&
  cp "$TEST_DIR/vda.img" "$MNT/$N/vda.img" &&
  cp "$TEST_DIR/vda.img" "$MNT/$N/snapshots/s1/vda.img" &&
  echo "<domainsnapshot><name>s1</name></domainsnapshot>" >"$MNT/$N/snapshots/s1/snapshot.xml"; } \
  2>"$TEST_DIR/err" || rc=$?
check "$N: a pending directory with vda.img, snapshots/s1/{vda.img,snapshot.xml}: exit $rc: $(cat "$TEST_DIR/err")" \
  eq $rc 0
check "$N: pending, holds $(listing "$MNT/$N" 2>&1)" eq "$(listing "$MNT/$N" 2>&1)" "snapshots vda.img "
rc=0; rm -rf "$MNT/$N" 2>"$TEST_DIR/err" || rc=$?
check "$N: rm -rf of the pending directory: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
check "$N: still in the mount after rm -rf" test ! -e "$MNT/$N"
check "$N: staging not empty after rm -rf" staging_empty
check "$N: got defined" eval '! defined "$N"'
check "$N: the pool directory holds $(listing "$PD"), was $poolfiles" eq "$(listing "$PD")" "$poolfiles"

# ---- 5. A pending directory with a disk, then unmounted. ----

N=$P-pending
lv_forget_later "$N"
mkdir "$MNT/$N" || check "mkdir $MNT/$N" false
rc=0; cp "$TEST_DIR/vda.img" "$MNT/$N/vda.img" 2>"$TEST_DIR/err" || rc=$?
check "$N: cp vda.img into the pending directory: exit $rc: $(cat "$TEST_DIR/err")" eq $rc 0
echo "note: a pending disk: $(ls -A "$STAGE" | wc -l) files, $(du -sk --exclude=. "$STAGE" | cut -f1) KiB in staging"
rc=0; stop_vmdiskfs "$MNT" || rc=$?
# (No check: it asks whether the daemon is alive.)
after () { "${@:2}" || { echo "FAIL: $1" >&2; failures=$((failures + 1)); }; }
after "the daemon exited with $rc" eq $rc 0
after "unmounted with a pending domain: staging not empty" staging_empty
after "$N got defined" eval '! defined "$N"'
after "the pool directory holds $(listing "$PD"), was $poolfiles" eq "$(listing "$PD")" "$poolfiles"

echo "done in $(($(date +%s) - t00)) s"
[ $failures = 0 ] || fail "$failures checks failed"
echo PASS
