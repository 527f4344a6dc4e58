#!/usr/bin/env bash
# corrupt.sh - corrupt and hostile images beside good ones, through the mount.
#
# DESIGN.md: "Corrupt metadata is EIO, never a crash and never a read
# outside the image", and corrupt images give EIO and a log line.  One image
# directory holds good images and many broken ones: truncated files, L1/L2/
# refcount/snapshot tables out of the file or unaligned or over the header,
# absurd sizes and cluster_bits, unknown incompatible features, encryption
# (poked, real AES and real LUKS), a backing file cycle and a missing
# backing file, broken snapshot table entries, garbled zlib/zstd compressed
# clusters and compressed clusters running past EOF, broken QED and QCOW1
# headers, and a copy of a good image with 0xff... written into each qcow2
# header field in turn.  For each: reading its disk.img (under `timeout 20`: no endless
# loops) must fail with EIO (ENOTSUP for features we refuse, ELOOP for a
# cycle, ENOENT for a missing backing file), or the image not be listed,
# and the daemon's log must name the image.  Where qemu itself reads the
# image (a field qemu ignores, a file qemu zero-fills), matching qemu's
# bytes is accepted instead.  At the end the daemon still runs and is still
# mounted, and the good images still read byte-exact.
#
# SPDX-License-Identifier: GPL-3.0-or-later

set -eE
set -o pipefail
export LC_ALL=C.UTF-8

# Shared helpers: TEST_DIR (removed at exit, mounts stopped first),
# require/skip, start_vmdiskfs/stop_vmdiskfs/vmdiskfs_pid/vmdiskfs_log.
. "$(dirname "$0")/functions.sh"
require qemu-img qemu-io python3 timeout awk cmp md5sum od

T=$TEST_DIR
DIR=$T/images
EXP=$T/expect
MNT=$T/mnt
mkdir "$DIR" "$EXP" "$MNT"
trap 'echo "FAIL: setup: command failed at line $LINENO: $BASH_COMMAND"' ERR

# Failure counting (mx_fail), mounting with a hang watchdog (mx_start),
# mx_check_alive and mx_stop, for MNT; sets LOG and PID.
. "$(dirname "$0")/mx-functions.sh"

cat > "$T/mx.py" <<'EOF'
import errno, hashlib, os, struct, sys

def be(b): return int.from_bytes(b, "big")

def poke(path, off, size, value):
    # write value (int, big-endian, size bytes) at off
    with open(path, "r+b") as f:
        f.seek(off)
        f.write((value & ((1 << (8 * size)) - 1)).to_bytes(size, "big"))

def poke_le(path, off, size, value):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write((value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

def l2_offset(path):
    # offset of the L2 table that L1[0] points to
    with open(path, "rb") as f:
        h = f.read(48)
        l1 = be(h[40:48])
        f.seek(l1)
        return be(f.read(8)) & 0x00fffffffffffe00

def comp_entry(path, which):
    # "POS HOSTOFF X" of the first or last (by host offset) compressed L2
    # entry under L1[0]: POS its file offset, X the bit where the sector
    # count starts (spec "Compressed Clusters Descriptor")
    with open(path, "rb") as f:
        h = f.read(48)
        cb = be(h[20:24])
        f.seek(be(h[40:48]))
        l2 = be(f.read(8)) & 0x00fffffffffffe00
        f.seek(l2)
        t = f.read(1 << cb)
    x = 62 - (cb - 8)
    found = []
    for i in range(0, len(t), 8):
        e = be(t[i:i + 8])
        if e & (1 << 62):
            found.append((e & ((1 << x) - 1), l2 + i))
    found.sort()
    host, pos = found[0] if which == "first" else found[-1]
    print(pos, host, x)

def readall(path):
    # "OK <md5>" or "ERR <errno name>" (open or read)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        print("ERR", errno.errorcode.get(e.errno, e.errno)); return
    h = hashlib.md5()
    off = 0
    try:
        while True:
            b = os.pread(fd, 1 << 20, off)
            if not b:
                break
            h.update(b)
            off += len(b)
    except OSError as e:
        print("ERR", errno.errorcode.get(e.errno, e.errno)); return
    print("OK", h.hexdigest())

def md5(path):
    print(hashlib.md5(open(path, "rb").read()).hexdigest())

cmd = sys.argv[1]
if cmd == "poke":
    poke(sys.argv[2], int(sys.argv[3], 0), int(sys.argv[4]), int(sys.argv[5], 0))
elif cmd == "poke-le":
    poke_le(sys.argv[2], int(sys.argv[3], 0), int(sys.argv[4]), int(sys.argv[5], 0))
elif cmd == "l2-offset": print(l2_offset(sys.argv[2]))
elif cmd == "readall": readall(sys.argv[2])
elif cmd == "comp-entry": comp_entry(sys.argv[2], sys.argv[3])
elif cmd == "md5": md5(sys.argv[2])
EOF
mx_python=$(python3 -c 'import sys; print(sys.executable)')
mx_py () { "$mx_python" "$T/mx.py" "$@"; }

MiB=$((1024 * 1024))
TiB=$((1024 * 1024 * MiB))
cd "$DIR"

echo "== making good images (${SECONDS}s)"
head -c 1M /dev/urandom > "$T/rand.bin"
qemu-img create -q -f qcow2 good.qcow2 4M
qemu-io -c "write -s $T/rand.bin 0 1M" -c "write -P 0x5a 2M 64k" good.qcow2 >/dev/null
qemu-img snapshot -c snap good.qcow2
qemu-io -c "write -P 0x5b 3M 64k" good.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b good.qcow2 -F qcow2 good-over.qcow2
qemu-io -c "write -P 0x5c 64k 4k" good-over.qcow2 >/dev/null
qemu-img create -q -f qed good.qed 4M
qemu-io -c "write -P 0x5d 1M 64k" good.qed >/dev/null
head -c 2M "$T/rand.bin" > good.raw
goods=(good.qcow2 good-over.qcow2 good.qed good.raw)
for g in "${goods[@]}"; do
  qemu-img convert -O raw "$g" "$EXP/$g.raw"
done
qemu-img convert -O raw -l snapshot.name=snap good.qcow2 "$EXP/good.qcow2.snap.raw"

# The template every corruption starts from: good data (so that an
# unchecked offset would be read), one snapshot, data at cluster 0.
qemu-img create -q -f qcow2 "$T/tmpl.qcow2" 4M
qemu-io -c "write -P 0x77 0 512k" -c "write -s $T/rand.bin 1M 1M" "$T/tmpl.qcow2" >/dev/null
qemu-img snapshot -c tsnap "$T/tmpl.qcow2"
qemu-io -c "write -P 0x78 3M 64k" "$T/tmpl.qcow2" >/dev/null
qemu-img convert -O raw "$T/tmpl.qcow2" "$EXP/tmpl.raw"
tmpl_md5=$(mx_py md5 "$EXP/tmpl.raw")
tmpl_size=$(stat -c %s "$T/tmpl.qcow2")
l1=$(( $(od -An -t u8 --endian=big -j 40 -N 8 "$T/tmpl.qcow2") ))
l2=$(mx_py l2-offset "$T/tmpl.qcow2")
echo "   template: $tmpl_size bytes, L1 at $l1, L2[0] at $l2"

# --- corrupt images -----------------------------------------------------------
# mx_case NAME ACCEPT WHY: NAME is in DIR; ACCEPT is one of
#   err          reading disk.img must fail (EIO; ENOTSUP/ELOOP/ENOENT where
#                noted by the errno list in the 4th argument)
#   err|qemu     fail, or read exactly what qemu-img convert reads
#   err|nosnap   fail, or read the template's disk with no snapshot listed
#   err|snaperr  fail, or read the template's disk while its snapshot
#                "tsnap" fails (EIO) or is not listed, with a log line
#   err|qemu|orig  fail, or read as qemu does, or read exactly the bytes of
#                the image before the poke (a field ignored without harm;
#                shown as "tolerated" so the choice stays visible)
declare -a c_names=() c_accept=() c_errnos=() c_why=()
mx_case ()
{
  c_names+=("$1"); c_accept+=("$2"); c_errnos+=("${4:-EIO}"); c_why+=("$3")
}
mx_copy () { cp "$T/tmpl.qcow2" "$1"; }
mx_poke () { mx_py poke "$@"; }

echo "== making corrupt images (${SECONDS}s)"
head -c 512 "$T/tmpl.qcow2" > trunc-header.qcow2
mx_case trunc-header.qcow2 err "only the first 512 bytes"
head -c 65536 "$T/tmpl.qcow2" > trunc-cluster.qcow2
mx_case trunc-cluster.qcow2 err "only the header cluster: tables beyond EOF"
head -c $((tmpl_size / 2)) "$T/tmpl.qcow2" > trunc-half.qcow2
mx_case trunc-half.qcow2 "err|qemu" "half the file: data clusters beyond EOF (qemu reads zeros there)"

mx_copy l1-beyond-eof.qcow2;  mx_poke l1-beyond-eof.qcow2 40 8 $TiB
mx_case l1-beyond-eof.qcow2 err "l1_table_offset 1 TiB, beyond EOF"
mx_copy l1-unaligned.qcow2;   mx_poke l1-unaligned.qcow2 40 8 $((l1 + 8))
mx_case l1-unaligned.qcow2 err "l1_table_offset not cluster aligned"
mx_copy l1-on-header.qcow2;   mx_poke l1-on-header.qcow2 40 8 0
mx_case l1-on-header.qcow2 err "l1_table_offset 0: overlaps the header"
mx_copy l1-size-huge.qcow2;   mx_poke l1-size-huge.qcow2 36 4 0x7fffffff
mx_case l1-size-huge.qcow2 err "l1_size 0x7fffffff"
mx_copy l1-entry-bogus.qcow2; mx_poke l1-entry-bogus.qcow2 $l1 8 $((0x8000000000000000 | 15 * TiB))
mx_case l1-entry-bogus.qcow2 err "L1[0] points to an L2 table at 15 TiB"
mx_copy l1-entry-unaligned.qcow2; mx_poke l1-entry-unaligned.qcow2 $l1 8 $((0x8000000000000000 | (l2 + 512)))
mx_case l1-entry-unaligned.qcow2 err "L1[0] not cluster aligned"

mx_copy l2-beyond-eof.qcow2;  mx_poke l2-beyond-eof.qcow2 $l2 8 $((0x8000000000000000 | 15 * TiB))
mx_case l2-beyond-eof.qcow2 err "L2 entry 0: data cluster at 15 TiB"
mx_copy l2-unaligned.qcow2;   mx_poke l2-unaligned.qcow2 $l2 8 0x8000000000012200
mx_case l2-unaligned.qcow2 err "L2 entry 0: data offset not cluster aligned"
mx_copy l2-offset-0.qcow2;    mx_poke l2-offset-0.qcow2 $((l2 + 8)) 8 0x8000000000000000
mx_case l2-offset-0.qcow2 "err|qemu" "L2 entry 1: offset 0 (unallocated) with the COPIED flag"
mx_copy l2-on-metadata.qcow2; mx_poke l2-on-metadata.qcow2 $((l2 + 8)) 8 $((0x8000000000000000 | l1))
mx_case l2-on-metadata.qcow2 "err|qemu" "L2 entry 1: data cluster on the L1 table"
# (64k clusters: bits 0-53 host offset, 54-61 extra 512-byte sectors)
mx_copy l2-compressed.qcow2;  mx_poke l2-compressed.qcow2 $l2 8 $(( (1 << 62) | (0xff << 54) | 15 * TiB ))
mx_case l2-compressed.qcow2 err "L2 entry 0: compressed cluster beyond EOF, maximal size"
mx_copy l2-reserved.qcow2;    mx_poke l2-reserved.qcow2 $l2 8 $((0x8000000000000000 | 0x100 | (l2 + 65536)))
mx_case l2-reserved.qcow2 "err|qemu" "L2 entry 0: reserved bit 8 set"

mx_copy rt-beyond-eof.qcow2;  mx_poke rt-beyond-eof.qcow2 48 8 $TiB
mx_case rt-beyond-eof.qcow2 err "refcount_table_offset 1 TiB, beyond EOF"
mx_copy rt-unaligned.qcow2;   mx_poke rt-unaligned.qcow2 48 8 $((65536 + 8))
mx_case rt-unaligned.qcow2 err "refcount_table_offset not cluster aligned"
mx_copy rt-clusters-huge.qcow2; mx_poke rt-clusters-huge.qcow2 56 4 0xffffffff
mx_case rt-clusters-huge.qcow2 err "refcount_table_clusters 0xffffffff"

for cb in 0 31 63; do
  mx_copy cluster-bits-$cb.qcow2; mx_poke cluster-bits-$cb.qcow2 20 4 $cb
  mx_case cluster-bits-$cb.qcow2 err "cluster_bits $cb"
done
mx_copy size-huge.qcow2;       mx_poke size-huge.qcow2 24 8 0xfffffffffffffe00
mx_case size-huge.qcow2 err "size 2^64-512 (L1 far too small)"
mx_copy size-2e63.qcow2;       mx_poke size-2e63.qcow2 24 8 0x7ffffffffffffe00
mx_case size-2e63.qcow2 err "size 2^63-512"
mx_copy incompat-unknown.qcow2; mx_poke incompat-unknown.qcow2 72 8 $((1 << 20))
mx_case incompat-unknown.qcow2 err "unknown incompatible feature bit 20" "EIO ENOTSUP"
mx_copy incompat-corrupt.qcow2; mx_poke incompat-corrupt.qcow2 72 8 2
mx_case incompat-corrupt.qcow2 "err|qemu" "incompatible bit 1: marked corrupt (qemu opens read-only)" "EIO ENOTSUP"
mx_copy crypt-aes.qcow2;       mx_poke crypt-aes.qcow2 32 4 1
mx_case crypt-aes.qcow2 err "crypt_method 1 (AES) poked" "EIO ENOTSUP"
# (a short iter-time sometimes fails "Unable to get accurate CPU usage"
# on a loaded machine: retry, then take a longer one)
for it in 100 100 300 1000; do
  qemu-img create -q -f qcow2 --object secret,id=sec0,data=123456 \
    -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=$it \
    luks.qcow2 4M 2>/dev/null && break
done
[ -f luks.qcow2 ] || { echo "FAIL: setup: cannot create a LUKS qcow2"; exit 1; }
qemu-io --object secret,id=sec0,data=123456 \
  --image-opts "driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=sec0" \
  -c "write -P 0x42 0 64k" >/dev/null
mx_case luks.qcow2 err "real LUKS encryption" "EIO ENOTSUP"
qemu-img create -q -f qcow2 --object secret,id=sec0,data=123456 \
  -o encrypt.format=aes,encrypt.key-secret=sec0 aes.qcow2 4M
mx_case aes.qcow2 err "real legacy AES encryption" "EIO ENOTSUP"

# the first snapshot table entry (spec "Snapshots"): L1 offset at +0,
# l1_size at +8, id_str_size at +12, name_size at +14
snt=$(( $(od -An -t u8 --endian=big -j 64 -N 8 "$T/tmpl.qcow2") ))
mx_copy snap-l1-beyond-eof.qcow2; mx_poke snap-l1-beyond-eof.qcow2 $snt 8 $TiB
mx_case snap-l1-beyond-eof.qcow2 "err|snaperr" "snapshot entry: L1 table at 1 TiB"
mx_copy snap-l1-unaligned.qcow2; mx_poke snap-l1-unaligned.qcow2 $snt 8 $((l1 + 24))
mx_case snap-l1-unaligned.qcow2 "err|snaperr" "snapshot entry: L1 table not aligned"
mx_copy snap-l1-size-huge.qcow2; mx_poke snap-l1-size-huge.qcow2 $((snt + 8)) 4 0x7fffffff
mx_case snap-l1-size-huge.qcow2 "err|snaperr" "snapshot entry: l1_size 0x7fffffff"
mx_copy snap-name-huge.qcow2; mx_poke snap-name-huge.qcow2 $((snt + 14)) 2 0xffff
mx_case snap-name-huge.qcow2 "err|nosnap" "snapshot entry: name_size 0xffff, past the table"
mx_copy nb-snapshots-huge.qcow2; mx_poke nb-snapshots-huge.qcow2 60 4 0xffffffff
mx_case nb-snapshots-huge.qcow2 "err|nosnap" "nb_snapshots 0xffffffff"
mx_copy snapshots-beyond-eof.qcow2; mx_poke snapshots-beyond-eof.qcow2 64 8 $TiB
mx_case snapshots-beyond-eof.qcow2 "err|nosnap" "snapshots_offset 1 TiB, beyond EOF"
mx_copy snapshots-unaligned.qcow2; mx_poke snapshots-unaligned.qcow2 64 8 $((l1 + 4))
mx_case snapshots-unaligned.qcow2 "err|nosnap" "snapshots_offset not cluster aligned"

qemu-img create -q -f qcow2 -u -b cycle-b.qcow2 -F qcow2 cycle-a.qcow2 4M
qemu-img create -q -f qcow2 -u -b cycle-a.qcow2 -F qcow2 cycle-b.qcow2 4M
mx_case cycle-a.qcow2 err "backing cycle a -> b -> a" "EIO ELOOP"
mx_case cycle-b.qcow2 err "backing cycle b -> a -> b" "EIO ELOOP"
qemu-img create -q -f qcow2 -u -b ./cycle-self.qcow2 -F qcow2 cycle-self.qcow2 4M
mx_case cycle-self.qcow2 err "backing file is itself" "EIO ELOOP"
qemu-img create -q -f qcow2 -u -b no-such-base.qcow2 -F qcow2 backing-missing.qcow2 4M
mx_case backing-missing.qcow2 err "backing file does not exist" "EIO ENOENT"

# Compressed clusters (zlib and zstd): the compressed stream garbled, and
# the last one's sector count made maximal so it runs past the end of file.
# (fixed data and fixed garbage: the outcome is the same on every run)
"$mx_python" -c 'import base64, random, sys; r = random.Random(1)
sys.stdout.buffer.write(base64.b64encode(bytes(r.getrandbits(8) for _ in range(786432))))' > "$T/text.raw"
"$mx_python" -c 'print(("garbage-0123456789" * 15)[:256], end="")' > "$T/garbage"
for ct in zlib zstd; do
  qemu-img convert -c -O qcow2 -o compression_type=$ct -f raw "$T/text.raw" "$T/comp-$ct.qcow2"
  read -r pos host x <<<"$(mx_py comp-entry "$T/comp-$ct.qcow2" first)"
  cp "$T/comp-$ct.qcow2" comp-$ct-garbled.qcow2
  dd if="$T/garbage" of=comp-$ct-garbled.qcow2 bs=1 seek=$((host + 64)) conv=notrunc status=none
  mx_case comp-$ct-garbled.qcow2 "err|qemu" "$ct: 256 bytes of garbage inside a compressed stream"
  read -r pos host x <<<"$(mx_py comp-entry "$T/comp-$ct.qcow2" last)"
  cp "$T/comp-$ct.qcow2" comp-$ct-past-eof.qcow2
  mx_poke comp-$ct-past-eof.qcow2 "$pos" 8 $(( (1 << 62) | (((1 << (62 - x)) - 1) << x) | host ))
  mx_case comp-$ct-past-eof.qcow2 "err|qemu" "$ct: last compressed cluster's size runs past EOF"
done

# QED (little-endian header: cluster_size +4, l1_table_offset +40,
# image_size +48) and QCOW version 1 (big-endian: cluster_bits +32,
# l1_table_offset +40)
qemu-img create -q -f qed "$T/tmpl.qed" 4M
qemu-io -c "write -P 0x44 0 1M" "$T/tmpl.qed" >/dev/null
cp "$T/tmpl.qed" qed-l1-beyond-eof.qed; mx_py poke-le qed-l1-beyond-eof.qed 40 8 $TiB
mx_case qed-l1-beyond-eof.qed "err|qemu" "QED l1_table_offset 1 TiB"
cp "$T/tmpl.qed" qed-cluster-size-3.qed; mx_py poke-le qed-cluster-size-3.qed 4 4 3
mx_case qed-cluster-size-3.qed "err|qemu" "QED cluster_size 3"
cp "$T/tmpl.qed" qed-size-huge.qed; mx_py poke-le qed-size-huge.qed 48 8 0x7ffffffffffffe00
mx_case qed-size-huge.qed "err|qemu" "QED image_size 2^63-512"
head -c 4096 "$T/tmpl.qed" > qed-trunc.qed
mx_case qed-trunc.qed "err|qemu" "QED truncated to 4 KiB"
qemu-img create -q -f qcow "$T/tmpl.qcow" 4M
qemu-io -c "write -P 0x45 0 1M" "$T/tmpl.qcow" >/dev/null
cp "$T/tmpl.qcow" qcow1-l1-beyond-eof.qcow; mx_poke qcow1-l1-beyond-eof.qcow 40 8 $TiB
mx_case qcow1-l1-beyond-eof.qcow "err|qemu" "QCOW1 l1_table_offset 1 TiB"
cp "$T/tmpl.qcow" qcow1-cluster-bits-63.qcow; mx_poke qcow1-cluster-bits-63.qcow 32 1 63
mx_case qcow1-cluster-bits-63.qcow "err|qemu" "QCOW1 cluster_bits 63"
head -c 48 "$T/tmpl.qcow" > qcow1-trunc.qcow
qemu-img create -q -f qcow --object secret,id=sec0,data=123456 \
  -o encrypt.format=aes,encrypt.key-secret=sec0 qcow1-aes.qcow 4M
mx_case qcow1-aes.qcow err "QCOW1 with real AES encryption" "EIO ENOTSUP"
mx_case qcow1-trunc.qcow "err|qemu" "QCOW1 truncated to 48 bytes"

# 0xff... in every header field in turn (qcow2 v3 header, spec section
# "Header"), on a copy of an image with a backing file and a snapshot.
qemu-img create -q -f qcow2 "$T/fbase.qcow2" 4M
qemu-io -c "write -P 0x61 0 4M" "$T/fbase.qcow2" >/dev/null
cp "$T/fbase.qcow2" field-base.qcow2
mx_case field-base.qcow2 good "the backing file of the field-* images"
qemu-img create -q -f qcow2 -b field-base.qcow2 -F qcow2 field-tmpl.qcow2
qemu-io -c "write -P 0x62 64k 64k" field-tmpl.qcow2 >/dev/null
qemu-img snapshot -c fsnap field-tmpl.qcow2
qemu-img convert -O raw field-tmpl.qcow2 "$EXP/field.raw"
field_md5=$(mx_py md5 "$EXP/field.raw")
mv field-tmpl.qcow2 "$T/field.qcow2"
fields=(0:4:magic 4:4:version 8:8:backing_file_offset 16:4:backing_file_size
        20:4:cluster_bits 24:8:size 32:4:crypt_method 36:4:l1_size
        40:8:l1_table_offset 48:8:refcount_table_offset
        56:4:refcount_table_clusters 60:4:nb_snapshots 64:8:snapshots_offset
        72:8:incompatible_features 80:8:compatible_features
        88:8:autoclear_features 96:4:refcount_order 100:4:header_length
        104:1:compression_type)
for f in "${fields[@]}"; do
  IFS=: read -r off len name <<<"$f"
  n=field-$name.qcow2
  cp "$T/field.qcow2" "$n"
  mx_poke "$n" "$off" "$len" -1
  mx_case "$n" "err|qemu|orig" "0xff.. in $name (offset $off)" "EIO ENOTSUP ENOENT"
done

# qemu's verdict on each (for the report, and the "qemu" oracle)
# (qemu loops ~20 s on backing cycles before giving up: not asked; a file
# qemu probes as raw is its own oracle, qemu rounds its size up to 512)
for i in "${!c_names[@]}"; do
  n=${c_names[$i]}
  case $n in
    cycle-*) echo "refuses: not run, qemu takes 20 s on cycles" > "$EXP/$n.qemu"
             continue ;;
  esac
  if timeout 20 qemu-img convert -O raw "$n" "$EXP/$n.raw" >"$EXP/$n.qemu" 2>&1; then
    echo reads >> "$EXP/$n.qemu"
    if qemu-img info --output=json "$n" | grep -q '"format": "raw"'; then
      cp "$n" "$EXP/$n.raw"
    fi
  else
    rm -f "$EXP/$n.raw"
  fi
done
echo "   ${#c_names[@]} corrupt images, ${#goods[@]} good ones"

# --- mount ----------------------------------------------------------------------
md5sum -- * > "$T/before.md5"
echo "== mounting (${SECONDS}s)"
mx_start 180 -o images="$DIR"

mx_check_goods () # WHEN
{
  local g got
  for g in "${goods[@]}"; do
    if ! timeout 20 cmp -s "$MNT/$g/disk.img" "$EXP/$g.raw"; then
      mx_fail "good:$g" "$1: disk.img differs from qemu-img convert"
      mx_check_alive "good:$g"
    fi
  done
  if ! timeout 20 cmp -s "$MNT/good.qcow2/snapshots/snap/disk.img" "$EXP/good.qcow2.snap.raw"; then
    mx_fail "good:good.qcow2@snap" "$1: snapshot differs from qemu-img"
  fi
}
echo "== good images before ($SECONDS s)"
mx_check_goods before

echo "== corrupt images ($SECONDS s)"
for i in "${!c_names[@]}"; do
  n=${c_names[$i]} accept=${c_accept[$i]} errnos=" ${c_errnos[$i]} " why=${c_why[$i]}
  d=$MNT/$n
  if grep -q '^reads$' "$EXP/$n.qemu"; then qemu=reads; else qemu=refuses; fi
  if [ "$accept" = good ]; then
    continue
  fi
  if [ ! -e "$d" ]; then
    # not listed: accepted, but the log must say why
    out="not listed"
  else
    out=$(timeout 20 "$mx_python" "$T/mx.py" readall "$d/disk.img" 2>&1) ||
      out="TIMEOUT/CRASH ($?): $out"
    if [[ $out == TIMEOUT* ]]; then
      mx_check_alive "$n"
    fi
  fi
  verdict=ok
  case $out in
    "ERR "*)
      e=${out#ERR }
      if [[ $errnos != *" $e "* ]]; then
        verdict="FAIL: errno $e, expected one of${errnos% }"
      fi ;;
    "not listed") ;;
    "OK "*)
      sum=${out#OK }
      if [[ $accept == *qemu* ]] && [ $qemu = reads ] &&
         [ "$sum" = "$(mx_py md5 "$EXP/$n.raw")" ]; then
        verdict="ok (reads as qemu does)"
      elif [[ $accept == *orig* ]] && [ "$sum" = "$field_md5" ]; then
        verdict="ok (tolerated: reads the unpoked image's bytes; qemu $qemu)"
      elif [[ $accept == *snaperr* ]] && [ "$sum" = "$tmpl_md5" ]; then
        if [ ! -e "$d/snapshots/tsnap" ]; then
          verdict="ok (disk reads, snapshot not listed)"
        else
          sout=$(timeout 20 "$mx_python" "$T/mx.py" readall "$d/snapshots/tsnap/disk.img" 2>&1) ||
            sout="TIMEOUT/CRASH ($?): $sout"
          if [ "$sout" = "ERR EIO" ]; then
            verdict="ok (disk reads, snapshot gives EIO)"
          else
            verdict="FAIL: snapshot tsnap: $sout, expected EIO"
          fi
        fi
        if [[ $verdict == ok* ]] && ! grep -qF "$n" "$LOG"; then
          verdict="FAIL: no log line names $n"
        fi
      elif [[ $accept == *nosnap* ]] && [ "$sum" = "$tmpl_md5" ]; then
        snaps=$(timeout 20 ls -A "$d/snapshots" 2>&1 || true)
        if [ -z "$snaps" ] || [[ $snaps == *"Input/output error"* ]] ||
           [[ $snaps == *"No such file or directory"* ]]; then
          verdict="ok (disk reads, no snapshot shown)"
        else
          verdict="FAIL: snapshots listed from a corrupt table: $(echo $snaps | head -c 200)"
        fi
      else
        detail="qemu $qemu"
        if [ $qemu = reads ]; then
          if [ "$sum" = "$(mx_py md5 "$EXP/$n.raw")" ]; then
            detail+=", same bytes as qemu"
          else
            detail+=", other bytes than qemu"
          fi
        fi
        verdict="FAIL: read succeeded ($detail)"
      fi ;;
    *) verdict="FAIL: $out" ;;
  esac
  # the log must name a broken image
  if [[ $verdict == ok ]] && [[ $out != "OK "* ]] && ! grep -qF "$n" "$LOG"; then
    verdict="FAIL: no log line names $n"
  fi
  if ! kill -0 "$PID" 2>/dev/null; then
    verdict="FAIL: vmdiskfs died (${verdict})"
  fi
  printf '   %-36s qemu %-7s vmdiskfs: %-16s %s\n' "$n" "$qemu" "${out:0:16}" "$verdict"
  if [[ $verdict == FAIL* ]]; then
    mx_fail "$n" "${verdict#FAIL: } ($why; qemu $qemu; cat $d/disk.img)"
  fi
  if ! kill -0 "$PID" 2>/dev/null; then
    break
  fi
done

# Walk everything (stat, readdir, snapshot reads) under a timeout.
echo "== walking the whole tree ($SECONDS s)"
if ! timeout 60 find "$MNT" -name disk.img -exec cat {} + >/dev/null 2>"$T/find.err"; then
  if grep -qv 'Input/output error\|Operation not supported\|Too many levels\|No such file' "$T/find.err"; then
    mx_fail "walk" "find/cat over the tree: $(grep -v 'Input/output error' "$T/find.err" | head -3 | tr '\n' ' ')"
  fi
fi

echo "== good images after ($SECONDS s)"
if kill -0 "$PID" 2>/dev/null && mountpoint -q "$MNT"; then
  mx_check_goods after
else
  mx_fail "daemon" "vmdiskfs is no longer running/mounted"
fi

mx_stop
if ! md5sum --quiet -c "$T/before.md5" >"$T/md5.out" 2>&1; then
  mx_fail "read-only" "image files changed while mounted: $(head -c 300 "$T/md5.out")"
fi

echo "== $mx_failures failure(s) (${SECONDS}s)"
if [ $mx_failures -ne 0 ]; then
  mx_exit_failed
fi
