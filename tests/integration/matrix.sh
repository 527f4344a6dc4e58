#!/usr/bin/env bash
# matrix.sh - every option of the formats library, read through the mount.
#
# Makes small images with the real qemu-img/qemu-io over every option the
# formats library claims to handle (qcow2 v2/v3, cluster sizes 512..2M,
# refcount widths, zero clusters and discards, zlib/zstd compressed
# clusters, extended L2, backing chains with and without the backing-format
# extension, backing files smaller than the overlay, external data files,
# preallocation, a crash-dirty lazy-refcounts image, persistent bitmaps,
# internal snapshots before/after a resize, with VM state, with odd names,
# in overlays, in old tables without disk sizes; QED (also needing a check),
# QCOW1 and raw, and chains mixing them),
# then mounts them with `vmdiskfs -o images=DIR` and checks, for every disk
# and every snapshot, byte for byte against the oracles of TESTING.md:
#   disk:     qemu-img convert -O raw IMG out
#   snapshot: cp IMG copy; qemu-img snapshot -a ID copy; qemu-img convert
# plus st_size (virtual size / the snapshot's own size), mtime (image file /
# snapshot date), a plausible st_blocks, SEEK_DATA/SEEK_HOLE (every hole the
# mount reports must be zeros in the oracle; sparse images must have holes),
# the escaped names in the listings, EROFS on write, and that mounting never
# changes an image file; then 8 threads read random ranges of everything at
# once against the oracles.  A fast library-level pass with vd-cat runs first
# over the same oracles, so a failure can be placed in formats/ or in fs/.
#
# Why: the oracle is qemu itself, so the test catches any decoding mistake in
# our own drivers, whatever corner of the spec it lies in.
#
# SPDX-License-Identifier: GPL-3.0-or-later

set -eE
set -o pipefail
export LC_ALL=C.UTF-8 PYTHONIOENCODING=utf-8

# Shared helpers: TEST_DIR (removed at exit, mounts stopped first),
# require/skip, start_vmdiskfs/stop_vmdiskfs/vmdiskfs_pid/vmdiskfs_log.
. "$(dirname "$0")/functions.sh"
require qemu-img qemu-io python3 cmp timeout awk du md5sum

T=$TEST_DIR
DIR=$T/images            # the directory that is mounted
AUX=$T/aux               # backing files outside DIR (relative "../aux/...")
EXP=$T/expect            # oracles
MNT=$T/mnt
mkdir "$DIR" "$AUX" "$EXP" "$MNT"
trap 'echo "FAIL: setup: command failed at line $LINENO: $BASH_COMMAND"' ERR

# Failure counting (mx_fail), mounting with a hang watchdog (mx_start),
# mx_check_alive and mx_stop, for MNT; sets LOG and PID.
. "$(dirname "$0")/mx-functions.sh"

# Python helpers (one file, several commands).
cat > "$T/mx.py" <<'EOF'
import errno, json, os, struct, sys

def info(path):
    # virtual size, sum of the actual sizes of the chain, data file, and the
    # snapshot table: "id<TAB>date-sec<TAB>vm-state-size<TAB>name"
    chain = json.load(open(path))
    top = chain[0] if isinstance(chain, list) else chain
    chain = chain if isinstance(chain, list) else [chain]
    print("vsize", top["virtual-size"])
    print("actual", sum(c.get("actual-size", 0) for c in chain))
    df = top.get("format-specific", {}).get("data", {}).get("data-file")
    print("datafile", df or "")
    # The name vmdiskfs shows (vmdiskfs.1): the tag; a tag seen before in
    # table order gets " (id N)"; an empty tag is "(id N)".  Printed
    # before the raw tag, which may be empty.
    seen = set()
    for s in top.get("snapshots", []):
        tag = s["name"]
        if tag == "":
            shown = "(id %s)" % s["id"]
        elif tag in seen:
            shown = "%s (id %s)" % (tag, s["id"])
        else:
            shown = tag
        seen.add(tag)
        print("snap", s["id"], s["date-sec"], s["vm-state-size"], shown, tag,
              sep="\t")

def escape(name):
    if name in (".", ".."):
        print("%2E" * len(name))
    else:
        print(name.replace("%", "%25").replace("/", "%2F"))

def zero_in(ofd, a, b):
    # True if oracle bytes [a, b) are all zero (skipping its own holes).
    while a < b:
        try:
            x = os.lseek(ofd, a, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return True
            raise
        if x >= b:
            return True
        h = min(b, os.lseek(ofd, x, os.SEEK_HOLE))
        while x < h:
            n = min(h - x, 1 << 20)
            if os.pread(ofd, n, x).count(0) != n:
                return False
            x += n
        a = h
    return True

def seek(path, oracle):
    # Walk SEEK_DATA/SEEK_HOLE over path; every hole must be zeros in
    # oracle.  Prints "data BYTES holes BYTES"; exit 1 on any misbehaviour.
    fd = os.open(path, os.O_RDONLY)
    ofd = os.open(oracle, os.O_RDONLY)
    size = os.fstat(fd).st_size
    pos = data = holes = n = 0
    while pos < size:
        n += 1
        if n > 1000000:
            print("more than 1e6 extents"); sys.exit(1)
        try:
            d = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:
                print("SEEK_DATA at %d: %s" % (pos, e)); sys.exit(1)
            d = size
        if d < pos or d > size:
            print("SEEK_DATA at %d returned %d (size %d)" % (pos, d, size))
            sys.exit(1)
        if d > pos:
            if not zero_in(ofd, pos, d):
                print("hole [%d, %d) is not zero in the oracle" % (pos, d))
                sys.exit(1)
            holes += d - pos
        if d >= size:
            break
        try:
            h = os.lseek(fd, d, os.SEEK_HOLE)
        except OSError as e:
            print("SEEK_HOLE at %d: %s" % (d, e)); sys.exit(1)
        if h <= d or h > size:
            print("SEEK_HOLE at %d returned %d (size %d)" % (d, h, size))
            sys.exit(1)
        data += h - d
        pos = h
    print("data", data, "holes", holes)

def erofs(path):
    # Opening for writing must fail with EROFS.
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno)); return
    try:
        os.pwrite(fd, b"x", 0)
        print("WRITE-SUCCEEDED")
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno))

def strip_backing_fmt(path):
    # Remove the backing file format header extension (0xe2792aca).
    with open(path, "r+b") as f:
        h = f.read(65536)
        version = struct.unpack(">I", h[4:8])[0]
        hlen = 72 if version < 3 else struct.unpack(">I", h[100:104])[0]
        off, exts = hlen, []
        while True:
            magic, length = struct.unpack(">II", h[off:off + 8])
            if magic == 0:
                break
            end = off + 8 + ((length + 7) & ~7)
            if magic != 0xE2792ACA:
                exts.append(h[off:end])
            off = end
        new = b"".join(exts) + b"\0" * 8
        f.seek(hlen)
        f.write(new + b"\0" * (off + 8 - hlen - len(new)))

def stress(listfile, seconds, nthreads):
    # Threads reading random ranges (aligned and not, up to 3 MiB, some
    # across EOF) of random files at once, each range first dropped from
    # the page cache so the daemon serves it; compared with the oracle.
    import random, threading, time
    pairs = [l.rstrip("\n").split("\t") for l in open(listfile) if l.strip()]
    deadline = time.time() + seconds
    bad, ops, lock = [], [0], threading.Lock()
    lengths = [1, 511, 512, 4096, 4097, 65536, 65536 + 123, 1 << 20, 3 << 20]
    def worker(seed):
        rnd = random.Random(seed)
        while time.time() < deadline and len(bad) < 10:
            m, o = rnd.choice(pairs)
            size = os.stat(o).st_size
            if size == 0:
                continue
            n = rnd.choice(lengths)
            off = rnd.randrange(size)
            if rnd.random() < 0.5:
                off &= ~4095
            if rnd.random() < 0.05:
                off = max(0, size - n // 2)
            try:
                fd = os.open(m, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)
                    got = os.pread(fd, n, off)
                finally:
                    os.close(fd)
            except OSError as e:
                with lock:
                    bad.append("%s: pread(%d, %d): %s" % (m, off, n, e))
                continue
            with open(o, "rb") as f:
                f.seek(off)
                exp = f.read(n)
            with lock:
                ops[0] += 1
                if got != exp:
                    bad.append("%s: pread(%d, %d): %d bytes, differ from the oracle"
                               % (m, off, n, len(got)))
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
    for t in ts: t.start()
    for t in ts: t.join()
    print("ops", ops[0])
    for b in bad:
        print("BAD", b)
    sys.exit(1 if bad else 0)

def strip_snapshot_extra(path):
    # Rewrite the snapshot table with extra_data_size 0 in every entry, as
    # old qemu wrote it: no disk size recorded (spec "Snapshots": the
    # snapshot then has the image's current size).
    with open(path, "r+b") as f:
        h = f.read(72)
        n = struct.unpack(">I", h[60:64])[0]
        off = struct.unpack(">Q", h[64:72])[0]
        f.seek(off)
        data = f.read(1 << 20)
        pos, out = 0, b""
        for _ in range(n):
            idl, namel = struct.unpack(">HH", data[pos + 12:pos + 16])
            extra = struct.unpack(">I", data[pos + 36:pos + 40])[0]
            fixed = data[pos:pos + 36] + b"\0\0\0\0"
            strs = data[pos + 40 + extra:pos + 40 + extra + idl + namel]
            e = fixed + strs
            e += b"\0" * (-len(e) % 8)
            out += e
            end = pos + 40 + extra + idl + namel
            pos = end + (-end % 8)
        f.seek(off)
        f.write(out + b"\0" * (pos - len(out)))

cmd = sys.argv[1]
if cmd == "info": info(sys.argv[2])
elif cmd == "strip-snapshot-extra": strip_snapshot_extra(sys.argv[2])
elif cmd == "stress": stress(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
elif cmd == "escape": escape(sys.argv[2])
elif cmd == "escape-all":
    # stdin: one name a line; stdout: "name<TAB>escaped"
    for l in sys.stdin.read().splitlines():
        print(l, end="\t"); escape(l)
elif cmd == "seek": seek(sys.argv[2], sys.argv[3])
elif cmd == "erofs": erofs(sys.argv[2])
elif cmd == "strip-backing-fmt": strip_backing_fmt(sys.argv[2])
EOF
# (the real interpreter: a pyenv shim costs 0.3 s a call)
mx_python=$(python3 -c 'import sys; print(sys.executable)')
mx_py () { "$mx_python" "$T/mx.py" "$@"; }

# Random and compressible-but-varied source data.
head -c 4M /dev/urandom > "$T/rand.bin"
head -c 3M "$T/rand.bin" | base64 -w 0 > "$T/text.bin"   # 4 MiB

MiB=$((1024 * 1024))
cd "$DIR"

# --- image registry ---------------------------------------------------------
# mx_add NAME FORMAT [FLAGS]: NAME (in DIR) is checked; FLAGS words:
#   sparse   must expose holes (SEEK_DATA/SEEK_HOLE, cp --sparse, du)
#   empty    nothing written: st_blocks must be about 0
#   nophys   guest allocation may exceed the file's (compressed, metadata
#            preallocation): st_blocks bounded by the virtual size only
declare -a mx_names=() mx_fmts=() mx_flags=()
mx_add ()
{
  mx_names+=("$1"); mx_fmts+=("$2"); mx_flags+=("${3:-}")
}

mx_qio () # IMG FMT -c CMD ...: qemu-io, quiet
{
  local img=$1 fmt=$2
  shift 2
  qemu-io -f "$fmt" "$@" "$img" >/dev/null
}

# Scattered patterned and random writes, relative to the size:
# start, unaligned bits, middle, end.
mx_fill ()  # IMG FMT SIZE
{
  local s=$3
  mx_qio "$1" "$2" \
    -c "write -P 0xa1 0 64k" \
    -c "write -s $T/rand.bin 300k 200k" \
    -c "write -P 0xb2 $((MiB + 123)) 5000" \
    -c "write -s $T/text.bin $((s / 2)) 512k" \
    -c "write -P 0xc3 $((s / 2 + 700 * 1024 + 512)) 3584" \
    -c "write -s $T/rand.bin $((s - 8192)) 8k"
}

echo "== making images (${SECONDS}s)"

# qcow2 v2 and v3, with snapshots and discards
for v in 0.10 1.1; do
  n=v$v.qcow2
  qemu-img create -q -f qcow2 -o compat=$v "$n" 4M
  mx_fill "$n" qcow2 $((4 * MiB))
  qemu-img snapshot -c s1 "$n"
  mx_qio "$n" qcow2 -c "write -P 0xd4 1M 256k" -c "discard 2M 512k" \
    -c "write -P 0xd5 3M 4k"
  qemu-img snapshot -c s2 "$n"
  mx_qio "$n" qcow2 -c "write -P 0xd6 0 4k" -c "discard 300k 64k"
  mx_add "$n" qcow2
done

# cluster sizes (64k is the default, above)
for cs in 512 4k 2M; do
  n=cs$cs.qcow2
  size=$((4 * MiB)); [ $cs = 2M ] && size=$((16 * MiB))
  qemu-img create -q -f qcow2 -o cluster_size=$cs "$n" $size
  mx_fill "$n" qcow2 $size
  qemu-img snapshot -c snap "$n"
  mx_qio "$n" qcow2 -c "write -P 0xe7 $((size / 4 + 512)) 1536" \
    -c "write -z $((size / 2)) 64k"
  mx_add "$n" qcow2
done

# refcount widths (16 is the default).  refcount_bits=1 cannot hold
# snapshots (qemu refuses), 64 can.
for rb in 1 64; do
  n=rc$rb.qcow2
  qemu-img create -q -f qcow2 -o refcount_bits=$rb "$n" 4M
  mx_fill "$n" qcow2 $((4 * MiB))
  [ $rb = 64 ] && qemu-img snapshot -c snap "$n"
  mx_qio "$n" qcow2 -c "write -P 0x64 64k 64k"
  mx_add "$n" qcow2
done

# zero clusters and discards, v3 and v2, a snapshot holding the old data
for v in 1.1 0.10; do
  n=zero-v$v.qcow2
  qemu-img create -q -f qcow2 -o compat=$v "$n" 4M
  mx_fill "$n" qcow2 $((4 * MiB))
  mx_qio "$n" qcow2 -c "write -P 0x5a 1M 1M"
  qemu-img snapshot -c pre-zero "$n"
  mx_qio "$n" qcow2 -c "write -z 0 32k" -c "write -z 2M 512k" \
    -c "write -z -u 1M 256k" -c "discard $((1 * MiB + 512 * 1024)) 128k" \
    -c "discard $((4 * MiB - 64 * 1024)) 64k"
  mx_add "$n" qcow2
done

# zero writes and discards over a backing file's data (v3: zero clusters
# must hide the backing data; v2: discard uncovers it)
qemu-img create -q -f qcow2 zb-base.qcow2 4M
mx_qio zb-base.qcow2 qcow2 -c "write -P 0x42 0 4M" -c "write -s $T/rand.bin 1M 1M"
mx_add zb-base.qcow2 qcow2
for v in 1.1 0.10; do
  n=zb-v$v.qcow2
  qemu-img create -q -f qcow2 -o compat=$v -b zb-base.qcow2 -F qcow2 "$n"
  mx_qio "$n" qcow2 -c "write -P 0x43 0 128k" -c "write -z 64k 64k" \
    -c "write -z 1M 256k" -c "discard 2M 128k" -c "discard 0 64k" \
    -c "write -z 3M 1000"
  mx_add "$n" qcow2
done

# compressed clusters: zlib, zstd, small and big clusters, v2, mixed with
# normal clusters and compressed writes (qemu-io write -c)
head -c 4M /dev/zero > "$T/src.raw"
mx_fill "$T/src.raw" raw $((4 * MiB))
mx_qio "$T/src.raw" raw -c "write -s $T/text.bin 1M 1M" -c "write -P 0 2M 64k"
qemu-img convert -c -O qcow2 -f raw "$T/src.raw" comp-zlib.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd -f raw "$T/src.raw" comp-zstd.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=4k -f raw "$T/src.raw" comp-zlib-4k.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=2M,compression_type=zstd -f raw "$T/src.raw" comp-zstd-2M.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=512 -f raw "$T/src.raw" comp-zlib-512.qcow2
qemu-img convert -c -O qcow2 -o compat=0.10 -f raw "$T/src.raw" comp-v2.qcow2
cp comp-zstd.qcow2 comp-mixed.qcow2
mx_qio comp-mixed.qcow2 qcow2 -c "write -P 0x99 $((MiB + 1000)) 3000" \
  -c "write -c -s $T/text.bin 3M 128k" -c "write -z 1536k 64k"
qemu-img snapshot -c mixed comp-mixed.qcow2
mx_qio comp-mixed.qcow2 qcow2 -c "write -c -P 0x98 2M 64k"
# compressed clusters in extended-L2 images (their subcluster bitmap is
# the compressed size, not a bitmap)
qemu-img convert -c -O qcow2 -o extended_l2=on -f raw "$T/src.raw" comp-xl2.qcow2
qemu-img convert -c -O qcow2 -o extended_l2=on,cluster_size=2M,compression_type=zstd -f raw "$T/src.raw" comp-xl2-zstd-2M.qcow2
mx_qio comp-xl2.qcow2 qcow2 -c "write -P 0x9a $((MiB + 4096)) 2k" -c "write -z 3M 2k"
for n in comp-zlib comp-zstd comp-zlib-4k comp-zstd-2M comp-zlib-512 comp-v2 comp-mixed comp-xl2 comp-xl2-zstd-2M; do
  mx_add $n.qcow2 qcow2 nophys
done

# extended L2 (subclusters: cluster/32): 64k and 2M clusters, and over a
# backing file, with writes at and below subcluster granularity
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k xl2-64k.qcow2 4M
mx_qio xl2-64k.qcow2 qcow2 -c "write -P 0x11 2k 2k" -c "write -P 0x12 6656 1k" \
  -c "write -s $T/rand.bin 64k 6k" -c "write -z 68k 4k" -c "discard 64k 2k" \
  -c "write -P 0x13 $((MiB - 2048)) 4k" -c "write -P 0x14 3M 64k"
qemu-img snapshot -c sub xl2-64k.qcow2
mx_qio xl2-64k.qcow2 qcow2 -c "write -z 3M 2k" -c "write -P 0x15 $((3 * MiB + 10240)) 2k"
mx_add xl2-64k.qcow2 qcow2
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=2M xl2-2M.qcow2 8M
mx_qio xl2-2M.qcow2 qcow2 -c "write -P 0x21 64k 64k" -c "write -P 0x22 200k 10k" \
  -c "write -s $T/rand.bin 2M 128k" -c "write -z 2112k 64k" \
  -c "write -P 0x23 $((8 * MiB - 64 * 1024)) 64k"
mx_add xl2-2M.qcow2 qcow2
qemu-img create -q -f qcow2 xl2-base.qcow2 4M
mx_qio xl2-base.qcow2 qcow2 -c "write -P 0x31 0 4M"
mx_add xl2-base.qcow2 qcow2
qemu-img create -q -f qcow2 -o extended_l2=on -b xl2-base.qcow2 -F qcow2 xl2-over.qcow2
mx_qio xl2-over.qcow2 qcow2 -c "write -P 0x32 2k 2k" -c "write -z 8k 2k" \
  -c "write -P 0x33 $((64 * 1024 + 100)) 100" -c "discard 128k 4k" \
  -c "write -z 1M 64k" -c "write -s $T/rand.bin 2M 6k"
qemu-img snapshot -c sub-over xl2-over.qcow2
mx_qio xl2-over.qcow2 qcow2 -c "write -z 2k 2k" -c "write -P 0x34 10k 2k"
mx_add xl2-over.qcow2 qcow2

# backing chain 3 deep, relative names
qemu-img create -q -f qcow2 ch-base.qcow2 4M
mx_fill ch-base.qcow2 qcow2 $((4 * MiB))
qemu-img create -q -f qcow2 -b ch-base.qcow2 -F qcow2 ch-mid.qcow2
mx_qio ch-mid.qcow2 qcow2 -c "write -P 0x51 64k 128k" -c "write -P 0x52 2M 4k" \
  -c "write -z $((2 * MiB + 128 * 1024)) 64k"
qemu-img create -q -f qcow2 -b ch-mid.qcow2 -F qcow2 ch-top.qcow2
mx_qio ch-top.qcow2 qcow2 -c "write -P 0x53 128k 4k" -c "write -P 0x54 3M 64k"
qemu-img snapshot -c in-overlay ch-top.qcow2
mx_qio ch-top.qcow2 qcow2 -c "discard 0 64k" -c "write -P 0x55 2M 8k"
for n in ch-base ch-mid ch-top; do mx_add $n.qcow2 qcow2; done

# a deeper chain (8), each layer writing its own 4k and zeroing another's
qemu-img create -q -f qcow2 deep1.qcow2 1M
mx_qio deep1.qcow2 qcow2 -c "write -P 0x01 0 1M"
mx_add deep1.qcow2 qcow2
for k in 2 3 4 5 6 7 8; do
  qemu-img create -q -f qcow2 -o cluster_size=4k -b deep$((k - 1)).qcow2 -F qcow2 deep$k.qcow2
  mx_qio deep$k.qcow2 qcow2 -c "write -P $k $((k * 64 * 1024)) 4k" \
    -c "write -z $(((k - 1) * 64 * 1024)) 4k"
  mx_add deep$k.qcow2 qcow2
done

# an absolute backing file name; an overlay smaller than its backing file
qemu-img create -q -f qcow2 "$AUX/abs-base.qcow2" 4M
mx_qio "$AUX/abs-base.qcow2" qcow2 -c "write -P 0x56 0 4M"
qemu-img create -q -f qcow2 -b "$AUX/abs-base.qcow2" -F qcow2 abs-backing.qcow2
mx_qio abs-backing.qcow2 qcow2 -c "write -P 0x57 1M 4k"
mx_add abs-backing.qcow2 qcow2
qemu-img create -q -f qcow2 -b "$AUX/abs-base.qcow2" -F qcow2 smaller-over.qcow2 1536k
mx_qio smaller-over.qcow2 qcow2 -c "write -P 0x58 1M 4k"
mx_add smaller-over.qcow2 qcow2

# a backing file outside the directory: "../aux/outside-base.qcow2"
qemu-img create -q -f qcow2 "$AUX/outside-base.qcow2" 4M
mx_fill "$AUX/outside-base.qcow2" qcow2 $((4 * MiB))
qemu-img create -q -f qcow2 -b ../aux/outside-base.qcow2 -F qcow2 outside.qcow2
mx_qio outside.qcow2 qcow2 -c "write -P 0x61 1M 64k"
mx_add outside.qcow2 qcow2

# qcow2 over a raw base
head -c 4M "$T/rand.bin" > rawbase.raw
qemu-img create -q -f qcow2 -b rawbase.raw -F raw over-raw.qcow2
mx_qio over-raw.qcow2 qcow2 -c "write -P 0x71 0 64k" -c "write -z 1M 64k"
mx_add rawbase.raw raw
mx_add over-raw.qcow2 qcow2

# backing-format extension absent (qcow2 base and raw base: probed)
qemu-img create -q -f qcow2 nofmt-base.qcow2 4M
mx_fill nofmt-base.qcow2 qcow2 $((4 * MiB))
qemu-img create -q -f qcow2 -b nofmt-base.qcow2 -F qcow2 nofmt.qcow2
mx_qio nofmt.qcow2 qcow2 -c "write -P 0x72 2M 64k"
mx_py strip-backing-fmt nofmt.qcow2
qemu-img create -q -f qcow2 -b rawbase.raw -F raw nofmt-raw.qcow2
mx_qio nofmt-raw.qcow2 qcow2 -c "write -P 0x73 2M 64k"
mx_py strip-backing-fmt nofmt-raw.qcow2
qemu-img info --output=json nofmt.qcow2 | grep -q backing-filename-format &&
  { echo "FAIL: setup: backing format extension still present"; exit 1; }
mx_add nofmt-base.qcow2 qcow2
mx_add nofmt.qcow2 qcow2
mx_add nofmt-raw.qcow2 qcow2

# backing file smaller than the overlay (qcow2 1 MiB; raw 1 MiB + 1 KiB)
qemu-img create -q -f qcow2 small-base.qcow2 1M
mx_qio small-base.qcow2 qcow2 -c "write -P 0xee 0 1M"
qemu-img create -q -f qcow2 -b small-base.qcow2 -F qcow2 small-over.qcow2 4M
mx_qio small-over.qcow2 qcow2 -c "write -P 0xef 512k 4k" -c "write -P 0xf0 3M 4k"
head -c $((MiB + 1024)) "$T/text.bin" > small-base.raw
qemu-img create -q -f qcow2 -b small-base.raw -F raw small-over-raw.qcow2 4M
mx_qio small-over-raw.qcow2 qcow2 -c "write -P 0xf1 2M 4k"
for n in small-base.qcow2 small-over.qcow2 small-over-raw.qcow2; do
  mx_add $n qcow2
done
mx_add small-base.raw raw

# external data files (relative names), data_file_raw off and on
qemu-img create -q -f qcow2 -o data_file=dfile.data dfile.qcow2 4M
mx_fill dfile.qcow2 qcow2 $((4 * MiB))
mx_qio dfile.qcow2 qcow2 -c "write -z 0 64k" -c "discard 1M 64k"
qemu-img create -q -f qcow2 -o data_file=dfile-raw.data,data_file_raw=on dfile-raw.qcow2 4M
mx_fill dfile-raw.qcow2 qcow2 $((4 * MiB))
mx_qio dfile-raw.qcow2 qcow2 -c "write -z 2M 64k"
mx_add dfile.qcow2 qcow2
# (data_file_raw=on makes qemu map every cluster at creation: all guest
# bytes count as allocated although the data file is sparse)
mx_add dfile-raw.qcow2 qcow2 nophys
mx_add dfile.data raw
mx_add dfile-raw.data raw

# preallocation
for p in metadata falloc full; do
  n=prealloc-$p.qcow2
  qemu-img create -q -f qcow2 -o preallocation=$p "$n" 4M
  mx_qio "$n" qcow2 -c "write -P 0x81 1M 64k" -c "write -s $T/rand.bin 3M 100k"
  if [ $p = metadata ]; then mx_add "$n" qcow2 nophys; else mx_add "$n" qcow2; fi
done

# left dirty by a crash (lazy refcounts): qemu-img check must complain,
# the data must still read right
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 4M
mx_qio dirty.qcow2 qcow2 -c "write -P 0x10 2M 64k"
( ulimit -c 0; qemu-io -c "write -P 0x11 0 1M" -c abort dirty.qcow2 \
    >/dev/null 2>&1 ) 2>/dev/null || true
mx_add dirty.qcow2 qcow2
if qemu-img check dirty.qcow2 >/dev/null 2>&1; then
  echo "FAIL: setup: dirty.qcow2 is not dirty (qemu-img check is happy)"
  exit 1
fi
qemu-img info --output=json dirty.qcow2 | grep -q '"dirty-flag": true' ||
  { echo "FAIL: setup: dirty.qcow2 has no dirty flag"; exit 1; }

# several snapshots, one deleted
qemu-img create -q -f qcow2 snaps.qcow2 4M
mx_fill snaps.qcow2 qcow2 $((4 * MiB))
qemu-img snapshot -c first snaps.qcow2
mx_qio snaps.qcow2 qcow2 -c "write -P 0x91 0 1M"
qemu-img snapshot -c second snaps.qcow2
mx_qio snaps.qcow2 qcow2 -c "write -P 0x92 1M 1M"
qemu-img snapshot -c third snaps.qcow2
mx_qio snaps.qcow2 qcow2 -c "write -P 0x93 2M 1M" -c "discard 0 512k"
qemu-img snapshot -c fourth snaps.qcow2
qemu-img snapshot -d second snaps.qcow2
mx_qio snaps.qcow2 qcow2 -c "write -P 0x94 3M 1M"
mx_add snaps.qcow2 qcow2

# snapshots before and after resizes: each keeps its own size
qemu-img create -q -f qcow2 resize.qcow2 4M
mx_fill resize.qcow2 qcow2 $((4 * MiB))
qemu-img snapshot -c small resize.qcow2
qemu-img resize -q resize.qcow2 8M
mx_qio resize.qcow2 qcow2 -c "write -P 0xa5 6M 64k" -c "write -P 0xa6 2M 4k"
qemu-img snapshot -c big resize.qcow2
qemu-img resize -q resize.qcow2 $((12 * MiB + 512))
mx_qio resize.qcow2 qcow2 -c "write -P 0xa7 11M 64k"
mx_add resize.qcow2 qcow2

# VM state: qemu-io writes to the VM-state area (beyond the disk), then a
# snapshot copies the L1 table that now maps it (qemu-img snapshot -c
# records vm-state-size 0); and, if qemu-system is here, a real savevm.
qemu-img create -q -f qcow2 vmstate-io.qcow2 4M
mx_qio vmstate-io.qcow2 qcow2 -c "write -P 0x76 0 64k" -c "write -b -P 0x77 0 1M" \
  -c "write -b -P 0x78 4M 64k"
qemu-img snapshot -c with-b-state vmstate-io.qcow2
mx_qio vmstate-io.qcow2 qcow2 -c "write -b -P 0x79 0 64k"
mx_add vmstate-io.qcow2 qcow2
mx_savevm=no
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
  qemu-img create -q -f qcow2 vmstate-real.qcow2 4M
  mx_qio vmstate-real.qcow2 qcow2 -c "write -P 0x7a 0 512k"
  printf 'savevm withstate\nquit\n' |
    timeout 60 qemu-system-x86_64 -nodefaults -machine pc -accel tcg -m 32 \
      -display none -monitor stdio \
      -drive file=vmstate-real.qcow2,if=none,id=d0,format=qcow2 >/dev/null 2>&1 || true
  if qemu-img snapshot -l vmstate-real.qcow2 | grep -q withstate; then
    mx_savevm=yes
    mx_qio vmstate-real.qcow2 qcow2 -c "write -P 0x7b 0 1M"
    mx_add vmstate-real.qcow2 qcow2
  else
    echo "NOTE: savevm with qemu-system-x86_64 failed; real VM state untested"
    rm -f vmstate-real.qcow2
  fi
else
  echo "NOTE: no qemu-system-x86_64; real VM state untested"
fi

# snapshot table entries without extra data (no disk size: old qemu), v2
qemu-img create -q -f qcow2 -o compat=0.10 old-snap.qcow2 4M
mx_fill old-snap.qcow2 qcow2 $((4 * MiB))
qemu-img snapshot -c old1 old-snap.qcow2
mx_qio old-snap.qcow2 qcow2 -c "write -P 0xab 0 1M"
qemu-img snapshot -c old2 old-snap.qcow2
mx_qio old-snap.qcow2 qcow2 -c "write -P 0xac 1M 1M"
mx_py strip-snapshot-extra old-snap.qcow2
qemu-img check -q old-snap.qcow2 ||
  { echo "FAIL: setup: old-snap.qcow2 broken by the rewrite"; exit 1; }
mx_add old-snap.qcow2 qcow2

# a persistent dirty bitmap (bitmaps extension, autoclear bit 0), as
# libvirt's incremental backups leave them
qemu-img create -q -f qcow2 bitmaps.qcow2 4M
qemu-img bitmap --add bitmaps.qcow2 b0
qemu-img bitmap --add --granularity 512k bitmaps.qcow2 b1
mx_fill bitmaps.qcow2 qcow2 $((4 * MiB))
mx_add bitmaps.qcow2 qcow2

# the same tag twice and an empty tag (shown as "dup (id 2)", "(id 3)")
qemu-img create -q -f qcow2 dup.qcow2 1M
mx_qio dup.qcow2 qcow2 -c "write -P 0xe1 0 4k"
qemu-img snapshot -c dup dup.qcow2
mx_qio dup.qcow2 qcow2 -c "write -P 0xe2 0 4k"
qemu-img snapshot -c dup dup.qcow2
mx_qio dup.qcow2 qcow2 -c "write -P 0xe3 0 4k"
qemu-img snapshot -c "" dup.qcow2
mx_qio dup.qcow2 qcow2 -c "write -P 0xe4 0 4k"
mx_add dup.qcow2 qcow2

# snapshot names that need care: spaces, non-ASCII, '%', '/', "." and ".."
qemu-img create -q -f qcow2 names.qcow2 4M
i=0
for tag in "before upgrade" "état-ü" "50%done" "a/b" ".." "."; do
  i=$((i + 1))
  mx_qio names.qcow2 qcow2 -c "write -P $((0x40 + i)) $((i * 256 * 1024)) 4k"
  qemu-img snapshot -c "$tag" names.qcow2
done
mx_add names.qcow2 qcow2

# an image file name with a space and a '%'; an empty qcow2; a sparse one
head -c 2M "$T/rand.bin" > "my disk 50%.raw"
mx_add "my disk 50%.raw" raw
qemu-img create -q -f qcow2 empty.qcow2 64M
mx_add empty.qcow2 qcow2 "empty sparse"
qemu-img create -q -f qcow2 sparse.qcow2 64M
mx_qio sparse.qcow2 qcow2 -c "write -s $T/rand.bin 0 256k" \
  -c "write -P 0x55 32M 256k" -c "write -s $T/rand.bin $((64 * MiB - 512 * 1024)) 512k"
mx_add sparse.qcow2 qcow2 sparse

# QED
qemu-img create -q -f qed plain.qed 4M
mx_fill plain.qed qed $((4 * MiB))
mx_add plain.qed qed
qemu-img create -q -f qed -o cluster_size=4k small-cluster.qed 4M
mx_fill small-cluster.qed qed $((4 * MiB))
mx_add small-cluster.qed qed
qemu-img create -q -f qed -b rawbase.raw -F raw over-raw.qed 6M
mx_qio over-raw.qed qed -c "write -P 0xb1 64k 4k" -c "write -P 0xb3 5M 64k" \
  -c "write -z 1M 128k" -c "write -z 3M 64k"    # QED zero clusters over backing data
mx_add over-raw.qed qed
qemu-img create -q -f qed sparse.qed 64M
mx_qio sparse.qed qed -c "write -P 0xb4 40M 128k"
mx_add sparse.qed qed sparse
# left needing a check (crash while writing)
qemu-img create -q -f qed dirty.qed 4M
mx_qio dirty.qed qed -c "write -P 0xb5 1M 64k"
( ulimit -c 0; qemu-io -c "write -P 0xb6 0 1M" -c abort dirty.qed \
    >/dev/null 2>&1 ) 2>/dev/null || true
mx_add dirty.qed qed

# QCOW version 1: plain, compressed, over a raw base
qemu-img create -q -f qcow plain.qcow 4M
mx_fill plain.qcow qcow $((4 * MiB))
mx_add plain.qcow qcow
# (qemu 7.2's convert -c -O qcow fails; compressed writes cluster by cluster)
qemu-img create -q -f qcow comp.qcow 4M
mx_cmds=()
for k in $(seq 0 31); do
  mx_cmds+=(-c "write -c -P $((k + 1)) $((k * 128 * 1024)) 4k")
  mx_cmds+=(-c "write -c -s $T/text.bin $((k * 128 * 1024 + 8192)) 4k")
done
mx_qio comp.qcow qcow "${mx_cmds[@]}" -c "write -s $T/rand.bin 3M 12k"
mx_add comp.qcow qcow nophys
qemu-img create -q -f qcow -b rawbase.raw -F raw over-raw.qcow 4M
mx_qio over-raw.qcow qcow -c "write -P 0xc1 1M 64k"
mx_add over-raw.qcow qcow

# formats mixed along a chain: qcow2 over QED and over QCOW1, QED over qcow2
qemu-img create -q -f qcow2 -b plain.qed -F qed over-qed.qcow2
mx_qio over-qed.qcow2 qcow2 -c "write -P 0xc5 2M 64k"
mx_add over-qed.qcow2 qcow2
qemu-img create -q -f qcow2 -b plain.qcow -F qcow over-qcow1.qcow2
mx_qio over-qcow1.qcow2 qcow2 -c "write -P 0xc6 64k 4k"
mx_add over-qcow1.qcow2 qcow2
qemu-img create -q -f qed -b ch-mid.qcow2 -F qcow2 over-qcow2.qed
mx_qio over-qcow2.qed qed -c "write -P 0xc7 3M 4k"
mx_add over-qcow2.qed qed

# raw with a size that is not a multiple of 512 (its disk.img is the file,
# byte for byte; qemu rounds a raw image up to 512), and an overlay on it
head -c 1000001 "$T/text.bin" > odd-size.raw
mx_add odd-size.raw raw
qemu-img create -q -f qcow2 -b odd-size.raw -F raw odd-over.qcow2 2M
mx_qio odd-over.qcow2 qcow2 -c "write -P 0xd3 1M 4k"
mx_add odd-over.qcow2 qcow2

# raw: plain, sparse, zero length
head -c 4M "$T/rand.bin" > plain.raw
mx_qio plain.raw raw -c "write -P 0xd1 1M 4k"
mx_add plain.raw raw
truncate -s 64M sparse.raw
mx_qio sparse.raw raw -c "write -P 0xd2 16M 64k" -c "write -s $T/rand.bin 50M 64k"
mx_add sparse.raw raw sparse
: > zero-length.raw
mx_add zero-length.raw raw

# Every file in DIR must have been registered.
for f in *; do
  found=no
  for n in "${mx_names[@]}"; do [ "$n" = "$f" ] && found=yes && break; done
  if [ $found = no ]; then
    echo "FAIL: setup: $f in the image directory is not registered"
    exit 1
  fi
done
rm -f "$T/src.raw"
echo "   ${#mx_names[@]} images"

# --- oracles ----------------------------------------------------------------
echo "== computing oracles with qemu-img (${SECONDS}s)"
for i in "${!mx_names[@]}"; do
  n=${mx_names[$i]} f=${mx_fmts[$i]}
  qemu-img info -f "$f" --backing-chain --output=json "$n" > "$EXP/$n.json"
  mx_py info "$EXP/$n.json" > "$EXP/$n.info"
  if [ "$f" = raw ]; then
    cp --sparse=always "$n" "$EXP/$n.raw"
    sed -i "s/^vsize .*/vsize $(stat -c %s "$n")/" "$EXP/$n.info"
  else
    qemu-img convert -f "$f" -O raw "$n" "$EXP/$n.raw"
  fi
  { grep '^snap' "$EXP/$n.info" || true; } |
  while IFS=$'\t' read -r _ id date vms tag _tag; do
    cp --sparse=always "$n" ".mx-copy"
    qemu-img snapshot -a "$id" .mx-copy
    qemu-img convert -f "$f" -O raw .mx-copy "$EXP/$n.snap.$id.raw"
    rm -f .mx-copy
  done
done

# The oracles themselves must show what the cases claim.
mx_vsize () { awk '$1 == "vsize" { print $2 }' "$EXP/$1.info"; }
mx_snapid () { awk -F'\t' -v t="$2" '$1 == "snap" && $5 == t { print $2 }' "$EXP/$1.info"; }
[ "$(stat -c %s "$EXP/resize.qcow2.snap.$(mx_snapid resize.qcow2 small).raw")" = $((4 * MiB)) ] ||
  { echo "FAIL: setup: oracle of resize.qcow2@small is not 4 MiB"; exit 1; }
[ "$(awk -F'\t' '$5 == "withstate" { print $4 }' "$EXP/vmstate-real.qcow2.info" 2>/dev/null)" != 0 ] ||
  { echo "FAIL: setup: vmstate-real.qcow2 snapshot has no VM state"; exit 1; }

# --- library pass (fast, no FUSE) ------------------------------------------
echo "== library pass: vd-cat vs oracles (${SECONDS}s)"
mx_lib_fail=0
if [ -x "$VDCAT" ]; then
  for i in "${!mx_names[@]}"; do
    n=${mx_names[$i]}
    if ! ( cd "$T" && timeout 60 "$VDCAT" "$DIR/$n" 2>"$T/vdcat.err" ) |
        cmp -s - "$EXP/$n.raw"; then
      mx_fail "lib:$n" "vd-cat '$DIR/$n' differs from qemu-img convert ($(head -c 200 "$T/vdcat.err"))"
      mx_lib_fail=$((mx_lib_fail + 1))
    else
      mx_ok
    fi
    { grep '^snap' "$EXP/$n.info" || true; } |
    while IFS=$'\t' read -r _ id date vms tag _tag; do
      if ! ( cd "$T" && timeout 60 "$VDCAT" -s "$id" "$DIR/$n" 2>"$T/vdcat.err" ) |
          cmp -s - "$EXP/$n.snap.$id.raw"; then
        echo "FAIL: lib:$n@$tag: vd-cat -s $id differs from the snapshot oracle ($(head -c 200 "$T/vdcat.err"))"
        exit 1
      fi
    done || { mx_failures=$((mx_failures + 1)); mx_lib_fail=$((mx_lib_fail + 1)); }
  done
  echo "   library pass: $mx_lib_fail image(s) with failures"
else
  echo "NOTE: $VDCAT not built; library pass skipped"
fi

# --- mount pass (the required one) -------------------------------------------
md5sum -- * > "$T/before.md5"
# backing=any: some images here have backing files in $AUX, outside DIR,
# on purpose (absolute and relative names); the default refuses them
# (tests/integration/hostile-names.sh checks that), this test checks
# their bytes.
echo "== mounting $VMDISKFS -f -o images=$DIR,backing=any (${SECONDS}s)"
mx_start 300 -o images="$DIR",backing=any

mx_check_disk () # CASE MNTFILE ORACLE SIZE MTIME
{
  local c=$1 m=$2 o=$3 size=$4 mtime=$5 got rc
  if [ ! -f "$m" ]; then
    mx_fail "$c" "$m: missing ($(ls -d "$m" 2>&1 | head -c 200))"
    return 1
  fi
  rc=0
  timeout 60 cmp "$m" "$o" >"$T/cmp.out" 2>&1 || rc=$?
  if [ $rc -eq 0 ]; then mx_ok
  else
    [ $rc -ne 124 ] || echo "timed out after 60 s" >> "$T/cmp.out"
    mx_fail "$c" "content differs from the oracle: $(head -c 300 "$T/cmp.out")"
    mx_check_alive "$c: cmp"
  fi
  got=$(stat -c %s "$m")
  if [ "$got" = "$size" ]; then mx_ok
  else mx_fail "$c" "st_size $got, expected $size"; fi
  got=$(stat -c %Y "$m")
  if [ "$got" = "$mtime" ]; then mx_ok
  else mx_fail "$c" "mtime $got, expected $mtime"; fi
}

echo "== checking every disk and snapshot through the mount (${SECONDS}s)"
# every image and snapshot name escaped at once (one python run)
declare -A mx_escaped=()
while IFS=$'\t' read -r raw esc; do
  mx_escaped[$raw]=$esc
done < <({ printf '%s\n' "${mx_names[@]}"; cat "$EXP"/*.info | awk -F'\t' '$1 == "snap" { print $5 }'; } |
         mx_py escape-all)
mx_esc () { printf '%s\n' "${mx_escaped[$1]}"; }
expected_top=$(for n in "${mx_names[@]}"; do mx_esc "$n"; done | sort)
got_top=$(ls -A "$MNT" | sort)
if [ "$got_top" = "$expected_top" ]; then mx_ok
else
  mx_fail "listing" "ls $MNT differs: $(diff <(echo "$expected_top") <(echo "$got_top") | head -20 | tr '\n' ' ')"
fi

for i in "${!mx_names[@]}"; do
  f0=$mx_failures
  n=${mx_names[$i]} flags=" ${mx_flags[$i]} "
  e=$(mx_esc "$n")
  m=$MNT/$e/disk.img
  vsize=$(mx_vsize "$n")
  mx_check_disk "$n" "$m" "$EXP/$n.raw" "$vsize" "$(stat -c %Y "$n")" || continue

  # st_blocks: at most what the chain's files hold (+ 1 MiB metadata
  # slack), or the virtual size for compressed/preallocated images;
  # about 0 for an empty image.
  blocks=$(( $(stat -c %b "$m") * 512 ))
  if [[ $flags == *" empty "* ]]; then
    limit=$((64 * 1024))
  elif [[ $flags == *" nophys "* ]]; then
    limit=$(( (vsize + 65535) / 65536 * 65536 ))
  else
    limit=$(( $(awk '$1 == "actual" { print $2 }' "$EXP/$n.info") + MiB ))
    df=$(awk '$1 == "datafile" { print $2 }' "$EXP/$n.info")
    [ -n "$df" ] && limit=$((limit + $(stat -c %b "$df") * 512))
  fi
  if [ "$blocks" -le "$limit" ]; then mx_ok
  else mx_fail "$n" "st_blocks*512 = $blocks, more than plausible ($limit)"; fi

  # SEEK_DATA/SEEK_HOLE: holes must be zeros; sparse images must have
  # most of their bytes in holes.
  if out=$(timeout 60 "$mx_python" "$T/mx.py" seek "$m" "$EXP/$n.raw" 2>&1); then
    mx_ok
    data=$(echo "$out" | awk '{ print $2 }')
    if [[ $flags == *" sparse "* ]]; then
      if [ "$data" -le $((vsize / 8)) ]; then mx_ok
      else mx_fail "$n" "SEEK_DATA/SEEK_HOLE report $data data bytes of $vsize: holes not reported"; fi
    fi
    # st_blocks must not hide data: tar treats st_blocks 0 as "all holes",
    # and both come from the same allocation map.
    if [ "$data" -gt 0 ] && [[ $flags != *" nophys "* ]] &&
       [ "$blocks" -lt $((data / 4)) ]; then
      mx_fail "$n" "st_blocks*512 = $blocks, but SEEK_DATA finds $data data bytes"
    elif [ "$data" -gt 0 ] && [ "$blocks" -eq 0 ]; then
      mx_fail "$n" "st_blocks is 0, but SEEK_DATA finds $data data bytes"
    else
      mx_ok
    fi
  else
    mx_fail "$n" "SEEK_DATA/SEEK_HOLE: $out"
    mx_check_alive "$n: lseek"
  fi

  # snapshots: listing, content, size, mtime = snapshot date
  expected_snaps=$({ grep '^snap' "$EXP/$n.info" || true; } | cut -f5 |
                   while IFS= read -r t; do mx_esc "$t"; done | sort)
  if [ -d "$MNT/$e/snapshots" ]; then
    got_snaps=$(ls -A "$MNT/$e/snapshots" | sort)
  else
    got_snaps=
  fi
  if [ "$got_snaps" = "$expected_snaps" ]; then mx_ok
  else
    mx_fail "$n" "snapshots listed [$(echo $got_snaps)], expected [$(echo $expected_snaps)]"
  fi
  while IFS=$'\t' read -r _ id date vms tag _tag; do
    o=$EXP/$n.snap.$id.raw
    sd=$MNT/$e/snapshots/$(mx_esc "$tag")
    mx_check_disk "$n@$tag" "$sd/disk.img" "$o" "$(stat -c %s "$o")" "$date" ||
      continue
    got=$(ls -A "$sd" | tr '\n' ' ')
    if [ "$got" = "disk.img " ]; then mx_ok
    else mx_fail "$n@$tag" "snapshot directory holds [$got], expected only disk.img"; fi
  done < <(grep '^snap' "$EXP/$n.info" || true)
  nsnap=$(grep -c '^snap' "$EXP/$n.info" || true)
  if [ $mx_failures -eq $f0 ]; then
    printf '   ok   %-28s (%s, %s snapshots)\n' "$n" "${mx_fmts[$i]}" "$nsnap"
  else
    printf '   FAIL %-28s (%s, %s snapshots)\n' "$n" "${mx_fmts[$i]}" "$nsnap"
  fi
done

# Explicit claims, beyond the generic loop.
m=$MNT/resize.qcow2
for t in small:$((4 * MiB)) big:$((8 * MiB)); do
  got=$(stat -c %s "$m/snapshots/${t%%:*}/disk.img" 2>/dev/null || echo missing)
  if [ "$got" = "${t#*:}" ]; then mx_ok
  else mx_fail "resize.qcow2@${t%%:*}" "st_size $got, expected ${t#*:} (size at snapshot time)"; fi
done
for f in "$MNT"/vmstate-*/disk.img "$MNT"/vmstate-*/snapshots/*/disk.img; do
  if LC_ALL=C grep -q "$(printf '\x77\x77\x77\x77\x77\x77\x77\x77')" "$f"; then
    mx_fail "vmstate" "$f contains the VM-state pattern 0x77"
  else
    mx_ok
  fi
done

# cp --sparse=always through the mount: same bytes, small copy
for n in sparse.qcow2 empty.qcow2 sparse.qed sparse.raw; do
  rm -f "$T/cp.raw"
  if timeout 60 cp --sparse=always "$MNT/$n/disk.img" "$T/cp.raw" &&
     cmp -s "$T/cp.raw" "$EXP/$n.raw"; then
    kib=$(du -k "$T/cp.raw" | cut -f1)
    if [ "$kib" -le 4096 ]; then mx_ok
    else mx_fail "$n" "cp --sparse=always copy uses $kib KiB"; fi
  else
    mx_fail "$n" "cp --sparse=always through the mount failed or differs"
    mx_check_alive "$n: cp"
  fi
  rm -f "$T/cp.raw"
done

# Concurrency: 8 threads reading random ranges of every disk and snapshot.
echo "== concurrent random reads (${SECONDS}s)"
for i in "${!mx_names[@]}"; do
  n=${mx_names[$i]}
  e=$(mx_esc "$n")
  printf '%s\t%s\n' "$MNT/$e/disk.img" "$EXP/$n.raw"
  while IFS=$'\t' read -r _ id date vms tag _tag; do
    printf '%s\t%s\n' "$MNT/$e/snapshots/$(mx_esc "$tag")/disk.img" "$EXP/$n.snap.$id.raw"
  done < <(grep '^snap' "$EXP/$n.info" || true)
done > "$T/stress.list"
if out=$(timeout 60 "$mx_python" "$T/mx.py" stress "$T/stress.list" 8 8 2>&1); then
  mx_ok
  echo "   $out"
else
  mx_fail "concurrent" "$(echo "$out" | head -11 | tr '\n' ' ')"
  mx_check_alive "concurrent reads"
fi

# a snapshot's disk is never writable: EROFS
snapdisk=$(cut -f1 "$T/stress.list" | grep -m1 '/snapshots/' || true)
if [ -z "$snapdisk" ]; then mx_fail "erofs" "no snapshot disk in the matrix"
else
  got=$(mx_py erofs "$snapdisk" 2>&1)
  if [ "$got" = EROFS ]; then mx_ok
  else mx_fail "erofs" "opening $snapdisk for writing gave $got, expected EROFS"; fi
fi

# --- unmount; nothing changed ------------------------------------------------
if ! kill -0 "$PID" 2>/dev/null; then
  mx_fail "daemon" "vmdiskfs died during the test"
fi
mx_stop
if md5sum --quiet -c "$T/before.md5" >"$T/md5.out" 2>&1; then mx_ok
else mx_fail "read-only" "image files changed while mounted: $(head -c 300 "$T/md5.out")"; fi
if grep -q '^vmdiskfs: error:' "$LOG"; then
  mx_fail "log" "vmdiskfs logged errors on good images: $(grep '^vmdiskfs: error:' "$LOG" | head -5 | tr '\n' ' ')"
else
  mx_ok
fi

echo "== $mx_checks checks passed, $mx_failures failed (savevm case: $mx_savevm) (${SECONDS}s)"
if [ $mx_failures -ne 0 ]; then
  mx_exit_failed
fi
