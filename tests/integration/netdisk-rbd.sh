#!/bin/bash
# vmdiskfs - the rbd network disk driver (formats/rbd.c) against a real,
# private Ceph cluster (ceph-functions.sh), through vd-cat:
#  - the bytes of an image imported from a sparse raw file, and of each of
#    its snapshots (by name, by id, as rbd:POOL/IMAGE@SNAP), equal
#    `rbd export` (image and snapshots differ: writes and a resize between
#    them);
#  - -m: every range shown as a hole is one where `rbd diff` has no data,
#    every range it has data in is shown as data, and the holes are there;
#  - a clone of a snapshot reads and maps with its parent's data;
#  - -l lists what `rbd snap ls` lists (id, name, size; a recent date);
#  - -S/-R create and remove snapshots as `rbd snap ls` then shows, a
#    taken name fails EEXIST, a missing one ENOENT, a protected one EBUSY;
#  - -w of a file with zero runs (whole objects, unaligned runs within
#    objects) over an image full of data: `rbd export` equals the file,
#    `rbd du` counts only the objects holding data, -m shows the others as
#    holes;
#  - an OSD that does not answer (SIGSTOP), at open and while an open
#    image is read, and a stopped mon: vd-cat fails after the URI's
#    timeout (5 s) plus a little, never hangs;
#  - cephx (a second cluster): client.vmd with its key reads right; a
#    wrong key, and no key, fail with a log line that does not show the
#    key.
# SPDX-License-Identifier: GPL-3.0-or-later

. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/ceph-functions.sh"
set -u
ceph_require
if [ "${CI:-}" = true ]; then
  for c in qemu-io python3 cmp timeout; do
    command -v "$c" >/dev/null 2>&1 || fail "$c is not installed (CI)"
  done
fi
require qemu-io python3 cmp timeout

D=$TEST_DIR
MiB=$((1 << 20))
ceph_start "$D/ceph" >/dev/null
URI="rbd:rbd/img:conf=$CEPH_CONF"

# vdcat ARG...: vd-cat with a bound, so that a hang fails the test.
vdcat ()
{
  timeout 60 "$VDCAT" "$@"
}

# rbd_export SPEC OUT
rbd_export ()
{
  timeout 60 rbd export "$1" "$2" >/dev/null 2>&1 || fail "rbd export $1"
}

# check_map URI_OR_SPEC RBD_SPEC: vd-cat -m against rbd diff --whole-object.
check_map ()
{
  vdcat -m "$1" >"$D/map" || fail "vd-cat -m $1"
  timeout 60 rbd diff --whole-object --format json "$2" >"$D/diff" ||
    fail "rbd diff $2"
  python3 - "$D/map" "$D/diff" "$2" <<'PY' || fail "vd-cat -m $1 disagrees with rbd diff"
import json, sys
ext = []
for line in open(sys.argv[1]):
    o, l, t = line.split()
    ext.append((int(o), int(l), t))
diff = [(d["offset"], d["length"]) for d in json.load(open(sys.argv[2]))
        if d["exists"] == "true"]
pos = 0
for o, l, t in ext:
    assert o == pos, "extents not contiguous at %d" % o
    pos = o + l
    if t != "data":
        for a, n in diff:
            if a < o + l and o < a + n:
                sys.exit("%s: %s at %d+%d but rbd diff has data at %d+%d"
                         % (sys.argv[3], t, o, l, a, n))
holes = sum(l for o, l, t in ext if t != "data")
if holes == 0:
    sys.exit("%s: no hole shown" % sys.argv[3])
PY
}

# An image with data and holes: a sparse raw file, 64 MiB.
python3 - "$D/a.raw" <<'PY'
import random, sys
r = random.Random(12)
rb = getattr(r, "randbytes", lambda n: bytes(r.getrandbits(8) for _ in range(n)))
with open(sys.argv[1], "wb") as f:
    f.truncate(64 << 20)
    for off, n in [(0, 300000), (5 << 20, 70000), ((9 << 20) + 4096, 8192),
                   (30 << 20, 2 << 20), (63 << 20, 1 << 20)]:
        f.seek(off)
        f.write(rb(n))
PY
timeout 60 rbd import "$D/a.raw" rbd/img >/dev/null 2>&1 || fail "rbd import"

vdcat -i "$URI" | grep -qx "size $((64 * MiB))" || fail "vd-cat -i: wrong size"
vdcat "$URI" >"$D/out" || fail "vd-cat $URI"
compare "$D/out" "$D/a.raw"
check_map "$URI" rbd/img
# Without conf= the driver finds the cluster through $CEPH_CONF, as ceph's
# own tools do; and with mon_host= alone (no config file at all).
vdcat rbd:rbd/img | cmp -s - "$D/a.raw" || fail "rbd:rbd/img via CEPH_CONF"
# (mon_host= in a URI cannot hold a port: vd_net_parse splits options at
# every ':'.  So a config file holding nothing but the mon: no keyring, no
# auth settings; the driver must not ask for cephx.)
printf '[global]\nmon host = v1:%s\n' "$CEPH_MON" >"$D/mon-only.conf"
(unset CEPH_CONF; cd "$D" && vdcat "rbd:rbd/img:conf=$D/mon-only.conf" |
   cmp -s - "$D/a.raw") || fail "rbd:rbd/img with a config naming only the mon"
ls "$D" | grep -q '\.log$' && fail "a ceph log file in the working directory"

# Snapshots: s1, writes, s2, writes and a resize.
qio ()
{
  timeout 60 qemu-io -f raw -c "$1" "rbd:rbd/img:conf=$CEPH_CONF" >/dev/null ||
    fail "qemu-io $1"
}
timeout 30 rbd snap create rbd/img@s1 >/dev/null 2>&1 || fail "snap create s1"
qio "write -P 0x55 $((5 * MiB)) $((3 * MiB))"
qio "write -P 0x66 $((40 * MiB + 512)) 4096"
timeout 30 rbd snap create rbd/img@s2 >/dev/null 2>&1 || fail "snap create s2"
qio "write -z 0 $((1 * MiB))"
qio "write -P 0x77 $((20 * MiB)) $((1 * MiB))"
timeout 30 rbd resize --size 80M rbd/img >/dev/null 2>&1 || fail "rbd resize"
qio "write -P 0x88 $((70 * MiB)) $((1 * MiB))"

rbd_export rbd/img "$D/head.raw"
rbd_export rbd/img@s1 "$D/s1.raw"
rbd_export rbd/img@s2 "$D/s2.raw"
cmp -s "$D/s1.raw" "$D/s2.raw" && fail "test setup: s1 and s2 are the same"
vdcat "$URI" >"$D/out" || fail "vd-cat head"
compare "$D/out" "$D/head.raw"
for s in s1 s2; do
  vdcat -s $s "$URI" >"$D/out" || fail "vd-cat -s $s"
  compare "$D/out" "$D/$s.raw"
  vdcat "rbd:rbd/img@$s:conf=$CEPH_CONF" >"$D/out" || fail "vd-cat @$s"
  compare "$D/out" "$D/$s.raw"
  check_map "rbd:rbd/img@$s:conf=$CEPH_CONF" "rbd/img@$s"
done
check_map "$URI" rbd/img

# -l against rbd snap ls; then each snapshot by its id.
vdcat -l "$URI" >"$D/l" || fail "vd-cat -l"
timeout 30 rbd snap ls --format json rbd/img >"$D/ls" || fail "rbd snap ls"
python3 - "$D/l" "$D/ls" <<'PY' || fail "vd-cat -l disagrees with rbd snap ls"
import json, sys, time
mine = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
theirs = json.load(open(sys.argv[2]))
assert len(mine) == len(theirs) == 2, (mine, theirs)
for m, t in zip(sorted(mine, key=lambda x: int(x[0])),
                sorted(theirs, key=lambda x: x["id"])):
    assert m[0] == str(t["id"]) and m[1] == t["name"], (m, t)
    assert int(m[3]) == t["size"] and m[4] == "0", (m, t)
    assert abs(float(m[2]) - time.time()) < 600, ("date", m)
print(" ".join(m[0] + ":" + m[1] for m in mine))
PY
while IFS=$'\t' read -r id name _; do
  vdcat -s "$id" "$URI" >"$D/out" || fail "vd-cat -s $id"
  compare "$D/out" "$D/$name.raw"
done <"$D/l"
# A clone of s1: its parent's data shows through (include_parent).
timeout 30 rbd snap protect rbd/img@s1 || fail "rbd snap protect"
timeout 30 rbd clone rbd/img@s1 rbd/clone >/dev/null 2>&1 || fail "rbd clone"
timeout 60 qemu-io -f raw -c "write -P 0x99 $((50 * MiB)) 4096" \
  "rbd:rbd/clone:conf=$CEPH_CONF" >/dev/null || fail "qemu-io clone"
rbd_export rbd/clone "$D/clone.raw"
vdcat "rbd:rbd/clone:conf=$CEPH_CONF" >"$D/out" || fail "vd-cat clone"
compare "$D/out" "$D/clone.raw"
check_map "rbd:rbd/clone:conf=$CEPH_CONF" rbd/clone
grep -q "^0 [0-9]* data" "$D/map" || fail "clone: the parent's data at 0 not shown"
timeout 30 rbd rm rbd/clone >/dev/null 2>&1 || fail "rbd rm clone"
timeout 30 rbd snap unprotect rbd/img@s1 || fail "rbd snap unprotect"
vdcat -s nosuch "$URI" >/dev/null 2>"$D/err" && fail "-s nosuch succeeded"
grep -q "No such file" "$D/err" || fail "-s nosuch: $(cat "$D/err")"

# -S / -R.
snap_names ()
{
  timeout 30 rbd snap ls --format json rbd/img |
    python3 -c 'import json,sys; print(" ".join(sorted(s["name"] for s in json.load(sys.stdin))))'
}
vdcat -S s3 "$URI" || fail "vd-cat -S s3"
[ "$(snap_names)" = "s1 s2 s3" ] || fail "after -S s3: $(snap_names)"
rbd_export rbd/img@s3 "$D/s3.raw"
compare "$D/s3.raw" "$D/head.raw"
vdcat -S s3 "$URI" 2>"$D/err" && fail "-S s3 twice succeeded"
grep -q "File exists" "$D/err" || fail "-S s3 twice: $(cat "$D/err")"
vdcat -R s3 "$URI" || fail "vd-cat -R s3"
[ "$(snap_names)" = "s1 s2" ] || fail "after -R s3: $(snap_names)"
vdcat -R s3 "$URI" 2>"$D/err" && fail "-R s3 twice succeeded"
grep -q "No such file" "$D/err" || fail "-R s3 twice: $(cat "$D/err")"
timeout 30 rbd snap protect rbd/img@s1 || fail "rbd snap protect"
vdcat -R s1 "$URI" 2>"$D/err" && fail "-R of a protected snapshot succeeded"
grep -q "busy" "$D/err" || fail "-R protected: $(cat "$D/err")"
timeout 30 rbd snap unprotect rbd/img@s1 || fail "rbd snap unprotect"
[ "$(snap_names)" = "s1 s2" ] || fail "after -R protected: $(snap_names)"

# -w: an image full of data overwritten with a file of zero runs.
python3 - "$D/full.raw" "$D/w.raw" <<'PY'
import random, sys
r = random.Random(7)
M = 1 << 20
full = bytearray(r.getrandbits(8) for _ in range(256 * 1024)) * 128   # 32 MiB
open(sys.argv[1], "wb").write(full)
w = bytearray(r.getrandbits(8) for _ in range(256 * 1024)) * 128
def zero(o, n):
    w[o:o + n] = bytes(n)
zero(0, 8 * M)                     # objects 0 and 1
zero(10 * M, 4096)                 # within object 2
zero(13 * M + 12345, 100000)       # unaligned, within object 3
zero(16 * M, 8 * M + 300000)       # objects 4 and 5, and into 6
zero(28 * M, 4 * M)                # object 7, the last
open(sys.argv[2], "wb").write(w)
PY
timeout 60 rbd import "$D/full.raw" rbd/wimg >/dev/null 2>&1 || fail "rbd import wimg"
WURI="rbd:rbd/wimg:conf=$CEPH_CONF"
vdcat -w "$D/w.raw" "$WURI" || fail "vd-cat -w"
rbd_export rbd/wimg "$D/wout.raw"
compare "$D/wout.raw" "$D/w.raw"
vdcat "$WURI" >"$D/out" || fail "vd-cat wimg"
compare "$D/out" "$D/w.raw"
used=$(timeout 30 rbd du --format json rbd/wimg |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["used_size"])')
# Objects 2, 3 and 6 hold data: 12 MiB.
[ "$used" = $((12 * MiB)) ] ||
  fail "rbd du after -w: $used bytes used, expected $((12 * MiB))"
check_map "$WURI" rbd/wimg
grep -q "^0 $((8 * MiB)) hole" "$D/map" || fail "-m after -w: $(head -3 "$D/map")"

# A cluster that does not answer: the OSD stopped, then the mon gone.
# With :timeout=5, vd-cat fails after about 5 s (the bound: 20 s).
timed_fail ()
{
  local t0=$SECONDS what=$1
  shift
  timeout 60 "$VDCAT" "$@" >/dev/null 2>"$D/err" && fail "$what: vd-cat succeeded"
  [ $? = 124 ] && fail "$what: vd-cat hung"
  [ $((SECONDS - t0)) -le 20 ] || fail "$what: vd-cat took $((SECONDS - t0)) s"
  grep -q "rbd:rbd/img" "$D/err" || fail "$what: no log line naming the disk: $(cat "$D/err")"
  echo "$what: failed after $((SECONDS - t0)) s: $(head -1 "$D/err")"
}
ceph_freeze_osd
timed_fail "OSD stopped" "$URI:timeout=5"
ceph_thaw_osd
# The same while an open image is being read (vd-cat -r 0 reads it over
# and over): the read in flight fails EIO after the timeout.
"$VDCAT" -r 0 "$URI:timeout=5" >"$D/passes" 2>"$D/err" &
rpid=$!
wait_for 30 test -s "$D/passes" || fail "vd-cat -r 0 did not read a pass"
ceph_freeze_osd
t0=$SECONDS
for ((i = 0; i < 300; i++)); do
  kill -0 $rpid 2>/dev/null || break
  sleep 0.1
done
if kill -0 $rpid 2>/dev/null; then
  kill $rpid
  fail "a read with the OSD stopped still hangs after 30 s"
fi
wait $rpid && fail "vd-cat -r 0 ended well with the OSD stopped"
ceph_thaw_osd
grep -q "rbd:rbd/img: read at [0-9]*: no answer from ceph within 5 s" "$D/err" ||
  fail "OSD stopped while reading: $(cat "$D/err")"
echo "OSD stopped while reading: failed after $((SECONDS - t0)) s"
vdcat "$URI" | cmp -s - "$D/head.raw" || fail "the OSD back: wrong bytes"
ceph_stop_mon
timed_fail "mon stopped" "$URI:timeout=5"
ceph_stop

# cephx: client.vmd reads with its key and only with it.
ceph_start "$D/cephx" cephx >/dev/null
head -c $((4 * MiB)) "$D/a.raw" >"$D/small.raw"
timeout 60 rbd import "$D/small.raw" rbd/img >/dev/null 2>&1 || fail "rbd import (cephx)"
printf '[global]\nmon host = v1:%s\n' "$CEPH_MON" >"$D/mon-only.conf"
KURI="rbd:rbd/img:conf=$D/mon-only.conf:id=$CEPH_CLIENT_ID"
(unset CEPH_CONF; cd "$D" &&
   vdcat "$KURI:key=$CEPH_CLIENT_KEY" >"$D/out") || fail "cephx: vd-cat with the key"
compare "$D/out" "$D/small.raw"
wrong=$(ceph-authtool --gen-print-key)
(unset CEPH_CONF; cd "$D" &&
   vdcat "$KURI:key=$wrong:timeout=10" >/dev/null 2>"$D/err") &&
  fail "cephx: a wrong key read"
grep -q "rbd:rbd/img" "$D/err" || fail "cephx, wrong key: $(cat "$D/err")"
grep -qF -e "$wrong" -e "$CEPH_CLIENT_KEY" "$D/err" && fail "cephx: the key is logged"
echo "wrong key: $(head -1 "$D/err")"
(unset CEPH_CONF; cd "$D" && vdcat "$KURI:timeout=10" >/dev/null 2>"$D/err") &&
  fail "cephx: no key read"
grep -q "no key for client.vmd" "$D/err" || fail "cephx, no key: $(cat "$D/err")"
echo "no key: $(head -1 "$D/err")"
# The config's keyring has client.admin's key: the default id reads.
vdcat "rbd:rbd/img:conf=$CEPH_CONF" | cmp -s - "$D/small.raw" ||
  fail "cephx: client.admin through the config's keyring"
ls "$D" | grep -q '\.log$' && fail "a ceph log file in the working directory"
exit 0
