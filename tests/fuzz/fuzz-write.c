/* libFuzzer target for the image writers of formats/ (raw, qcow2, QED),
 * against an in-memory model of the disk.
 *
 * An input is read as
 *   (1) 6 bytes of geometry, chosen by the input and made by this file
 *       alone (no qemu-img: the headers are written from qemu's
 *       docs/interop/qcow2.txt and qed_spec), in a private directory:
 *         byte 0  format: 0 raw, 1 and 2 qcow2, 3 QED (mod 4); bit 2:
 *                 qcow2 starts with data in its first clusters (up to 8)
 *         byte 1  qcow2 cluster_bits 9..21; QED cluster_bits 12..21 and
 *                 (high nibble) table_size 2..16
 *         byte 2  qcow2: bit 0 version 2 (refcount order 4), bit 1
 *                 extended L2 (v3, clusters of 16 KiB and more), bit 2 a
 *                 raw backing file, bit 3 lazy refcounts (v3), bits 4-6
 *                 refcount_order (mod 7), bit 7 data in the first
 *                 clusters shared with an internal snapshot "s" (refcount
 *                 2: the writer must copy on write, and "s" must read as
 *                 at the start, checked after each reopen and at the
 *                 end); QED: bit 2 a raw backing file
 *         byte 3-4 virtual size: up to MAX_INIT (qcow2: a multiple of
 *                 512; QED: of the cluster size, as qemu wants; raw: any
 *                 byte count)
 *         byte 5  the backing file's size (half the disk, equal, longer,
 *                 an odd byte count) or, for raw, how much of the file
 *                 holds data at the start
 *   (2) then operations, one opcode byte each and their arguments, at
 *       most MAX_OPS: write (offset, length, data: zeros, a byte, a
 *       pattern unique per offset and operation, 512-byte sectors of
 *       data and zeros, or bytes of the input), zero (offset, length),
 *       flush, resize (grow), reopen (close and open again read-write)
 *       and read (compare a range).  Offsets and lengths come from the
 *       input, steered to cluster and sector boundaries; the disk stays
 *       below MAX_SIZE.
 * Every operation goes through the public API (vd_image_open_policy with
 * VD_OPEN_RDWR, vd_image_pwrite, vd_image_zero, vd_image_flush,
 * vd_image_resize) and is applied to the model (a byte array).  The
 * range each operation touched is read back at once (vd_image_pread),
 * the whole disk every CHECK_EVERY operations, after each reopen and at
 * the end; at the end the image is closed (no flush: close must not lose
 * data), opened read-only and read again, with its block_status walked:
 * ZERO and HOLE extents must be zeros in the model, DATA extents with an
 * fd hold the model's bytes there.  After each reopen and at the end,
 * vd_image_allocated must not exceed the allocation units that may hold
 * data: those written with anything but whole units of zeros, and those
 * the backing file shows through (a loose bound: no unit is counted as
 * released unless an operation covered it with zeros whole).  Any
 * difference or failed call aborts, after printing the geometry and the
 * operations so far ("fuzz-write: ...").
 *
 * A format whose driver refuses VD_OPEN_RDWR with EROFS (no writer yet)
 * is skipped: its image is only opened read-only and checked to read as
 * made (and its snapshot), and the input passes.
 *
 * Environment: FUZZ_WRITE_FORMAT=qcow2 (raw, qed) skips the other
 * formats, to spend a run on one writer (the inputs stay valid for the
 * others).  The images live in a private directory under
 * FUZZ_WRITE_TMPDIR, else TMPDIR, else /tmp, removed at exit (kept with
 * FUZZ_WRITE_KEEP=1, and after a failure, whose message names it); on a
 * tmpfs flush costs nothing (run-fuzz.sh uses /dev/shm: ten times the
 * inputs per second of ext4).  FUZZ_WRITE_TRACE=1 prints each operation
 * as it runs (replaying a reproducer).  FUZZ_WRITE_NO=resize,alloc,tail
 * looks past a known bug: no resize operations, no allocation bound, or
 * zeros (not data) in the last data cluster beyond the disk's end, and
 * no subcluster allocated there (qemu leaves data after a shrink; a grow
 * must not show it, nor count it allocated).  At exit
 * one line on stdout counts the inputs per format and the skipped ones.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdformat.h"
#include "endian.h"

#define MAX_INIT     (4U << 20)   /* virtual size at creation, at most   */
#define MAX_SIZE     (8U << 20)   /* ... and after growing               */
#define MAX_OPS      64
#define MAX_WRITE    (1U << 20)
#define CHECK_EVERY  8
#define MAX_EXTENTS  8192
#define MIN_UNIT     512
#define TRACE_LINE   128

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

enum fmt { F_RAW, F_QCOW2, F_QED, N_FMT };
static const char *const fmt_names[N_FMT] = { "raw", "qcow2", "qed" };

struct geom {
  enum fmt fmt;
  unsigned cluster_bits;
  unsigned refcount_order;      /* qcow2 */
  unsigned version;             /* qcow2: 2 or 3 */
  unsigned table_size;          /* QED, in clusters */
  bool extended_l2, lazy, backing;
  bool snapshot;                /* qcow2: a snapshot shares the data */
  uint64_t data_clusters;       /* qcow2: first clusters holding data */
  uint64_t size;                /* virtual size at creation */
  uint64_t backing_size;        /* backing file (raw: data at the start) */
};

static uint8_t model[MAX_SIZE];
static uint8_t snap_model[MAX_INIT];  /* qcow2: snapshot "s" */
static uint8_t base[MAX_SIZE];      /* base_byte (i), made once */
static uint64_t model_used;         /* model bytes possibly non-zero */
static uint8_t rbuf[MAX_WRITE];
static uint8_t wbuf[MAX_WRITE];
/* Allocation units that may hold data (see touch). */
static uint8_t may_alloc[MAX_SIZE / MIN_UNIT];

static char dir[PATH_MAX];
static char img_path[PATH_MAX + 16];
static char base_path[PATH_MAX + 16];
static const char *only_format;
static bool trace_live;
static bool keep_files;
static bool no_resize, no_alloc_check, no_tail;    /* FUZZ_WRITE_NO */

/* The operations of the current input, printed when it fails. */
static char trace[MAX_OPS + 8][TRACE_LINE];
static unsigned n_trace;

static unsigned long n_inputs[N_FMT], n_skipped[N_FMT], n_ops;

/* State of the run. */
static struct geom g;
static uint64_t size;           /* current virtual size */
static uint64_t unit;           /* allocation unit the bound counts */
static bool zero_releases;      /* the driver has a zero op */
static uint64_t shown_at_open;  /* bytes of backing (raw: data) at open */
static struct vd_image *img;

static void
note (const char *fmt, ...)
{
  va_list ap;

  if (n_trace >= sizeof trace / sizeof trace[0])
    return;
  va_start (ap, fmt);
  vsnprintf (trace[n_trace], TRACE_LINE, fmt, ap);
  va_end (ap);
  if (trace_live)
    fprintf (stderr, "fuzz-write: op: %s\n", trace[n_trace]);
  n_trace++;
}

static void
describe (void)
{
  unsigned i;

  fprintf (stderr, "fuzz-write: image %s", fmt_names[g.fmt]);
  if (g.fmt == F_QCOW2)
    fprintf (stderr, " v%u cluster_bits %u refcount_order %u%s%s",
             g.version, g.cluster_bits, g.refcount_order,
             g.extended_l2 ? " extended_l2" : "",
             g.lazy ? " lazy_refcounts" : "");
  else if (g.fmt == F_QED)
    fprintf (stderr, " cluster_bits %u table_size %u", g.cluster_bits,
             g.table_size);
  fprintf (stderr, " size %" PRIu64, g.size);
  if (g.data_clusters)
    fprintf (stderr, ", data in the first %" PRIu64 " clusters%s",
             g.data_clusters, g.snapshot ? " shared with snapshot \"s\"" : "");
  if (g.backing)
    fprintf (stderr, " backing base.raw (raw) of %" PRIu64 " bytes",
             g.backing_size);
  else if (g.fmt == F_RAW)
    fprintf (stderr, " first %" PRIu64 " bytes data", g.backing_size);
  fprintf (stderr, "\nfuzz-write: operations:\n");
  for (i = 0; i < n_trace; i++)
    fprintf (stderr, "fuzz-write:   %u: %s\n", i, trace[i]);
}

static void __attribute__ ((noreturn, format (printf, 1, 2)))
fail (const char *fmt, ...)
{
  va_list ap;
  int e = errno;

  describe ();
  fprintf (stderr, "fuzz-write: writer bug: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, " (errno %d: %s)\nfuzz-write: the image is %s\n", e,
           strerror (e), img_path);
  abort ();
}

static void __attribute__ ((noreturn))
die (const char *what)
{
  fprintf (stderr, "fuzz-write: %s: %s\n", what, strerror (errno));
  abort ();
}

/* ---- the input ---------------------------------------------------------- */

struct input {
  const uint8_t *p;
  size_t n, pos;
};

/* The next bytes (little-endian), zeros past the end. */
static uint64_t
take (struct input *in, unsigned bytes)
{
  uint64_t v = 0;
  unsigned i;

  for (i = 0; i < bytes; i++, in->pos++)
    if (in->pos < in->n)
      v |= (uint64_t) in->p[in->pos] << (8 * i);
  return v;
}

/* ---- making the images -------------------------------------------------- */

/* Backing (and raw prefill) bytes: never zero, different per sector. */
static uint8_t
base_byte (uint64_t i)
{
  return (uint8_t) (i * 131 + (i >> 9) * 7) | 1;
}

static void
pwrite_all (int fd, const void *buf, size_t len, uint64_t off)
{
  const uint8_t *p = buf;

  while (len > 0) {
    ssize_t w = pwrite (fd, p, len, (off_t) off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      die ("pwrite");
    p += w;
    len -= w;
    off += w;
  }
}

/* A file of len bytes holding base_byte from offset 0 to fill, holes
 * after. */
static void
make_file (const char *path, uint64_t len, uint64_t fill)
{
  int fd;

  fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    die (path);
  if (ftruncate (fd, (off_t) len) < 0)
    die ("ftruncate");
  pwrite_all (fd, base, fill, 0);
  if (close (fd) < 0)
    die (path);
}

/* Bytes of the data clusters a qcow2 image starts with: never zero, and
 * not the backing file's. */
static uint8_t
data_byte (uint64_t i)
{
  return base_byte (i) ^ 0x5a;
}

/* Set refcount i of a refcount block to v (refcount_bits wide, sub-byte
 * widths from bit 0 up, wider ones big-endian). */
static void
set_refcount (uint8_t *block, uint64_t i, unsigned v)
{
  unsigned bits = 1U << g.refcount_order;

  if (bits < 8)
    block[i * bits / 8] |= v << (i * bits % 8);
  else
    block[(i + 1) * bits / 8 - 1] = v;
}

/* qcow2 (docs/interop/qcow2.txt, "Header", "Host cluster management",
 * "Cluster mapping", "Snapshots"), cluster by cluster:
 *   0            the header (backing format extension and backing name
 *                when backed)
 *   1 ...        the active L1 table
 *   rt           one cluster of refcount table
 *   rb           one refcount block counting every cluster here
 * and with g.data_clusters (the first guest clusters hold data_byte):
 *   l2           the L2 table mapping them
 *   l2 + 1 ...   the data clusters
 * and with g.snapshot, a snapshot "s" (id "1") sharing that L2 table and
 * those clusters (refcount 2, so no COPIED flag in the active tables):
 *   sl1 ...      its L1 table, a copy of the active one
 *   st           the snapshot table
 * Metadata clusters have refcount 1. */
static void
make_qcow2 (void)
{
  uint64_t c = 1ULL << g.cluster_bits;
  uint64_t l2_entries = c / (g.extended_l2 ? 16 : 8);
  uint64_t l1_size = (g.size + c * l2_entries - 1) / (c * l2_entries);
  uint64_t l1_clusters = (l1_size * 8 + c - 1) / c;
  uint64_t rt = 1 + l1_clusters, rb = rt + 1, l2 = rb + 1;
  uint64_t nd = g.data_clusters, sl1 = l2 + 1 + nd, st = sl1 + l1_clusters;
  uint64_t n_clusters = !nd ? rb + 1 : !g.snapshot ? l2 + 1 + nd : st + 1;
  uint64_t copied = g.snapshot ? 0 : 1ULL << 63, i, off;
  unsigned bits = 1U << g.refcount_order;
  uint8_t hdr[4096], block[64 * 8], ent[64];
  uint32_t hlen = g.version == 2 ? 72 : 104, ext = hlen;
  int fd;

  if (n_clusters > c * 8 / bits || n_clusters > 64 || nd > l2_entries)
    abort ();                   /* cannot happen: see parse_geometry */
  memset (hdr, 0, sizeof hdr);
  memcpy (hdr, "QFI\xfb", 4);
  store_be32 (hdr + 4, g.version);
  store_be32 (hdr + 20, g.cluster_bits);
  store_be64 (hdr + 24, g.size);
  store_be32 (hdr + 36, (uint32_t) l1_size);
  store_be64 (hdr + 40, c);                       /* L1 in cluster 1 */
  store_be64 (hdr + 48, rt * c);
  store_be32 (hdr + 56, 1);                       /* refcount table */
  if (g.snapshot) {
    store_be32 (hdr + 60, 1);
    store_be64 (hdr + 64, st * c);
  }
  if (g.version == 3) {
    store_be64 (hdr + 72, g.extended_l2 ? 1ULL << 4 : 0);
    store_be64 (hdr + 80, g.lazy ? 1 : 0);
    store_be32 (hdr + 96, g.refcount_order);
    store_be32 (hdr + 100, hlen);
  }
  if (g.backing) {
    store_be32 (hdr + ext, 0xe2792aca);           /* backing format */
    store_be32 (hdr + ext + 4, 3);
    memcpy (hdr + ext + 8, "raw", 3);
    ext += 16;
  }
  ext += 8;                                       /* end of extensions */
  if (g.backing) {
    store_be64 (hdr + 8, ext);
    store_be32 (hdr + 16, 8);
    memcpy (hdr + ext, "base.raw", 8);
  }

  memset (block, 0, sizeof block);
  for (i = 0; i < n_clusters; i++)
    set_refcount (block, i, g.snapshot && i >= l2 && i < sl1 ? 2 : 1);

  fd = open (img_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    die (img_path);
  if (ftruncate (fd, (off_t) (n_clusters * c)) < 0)
    die ("ftruncate");
  pwrite_all (fd, hdr, c < sizeof hdr ? c : sizeof hdr, 0);
  store_be64 (wbuf, rb * c);
  pwrite_all (fd, wbuf, 8, rt * c);
  pwrite_all (fd, block, (n_clusters * bits + 7) / 8, rb * c);
  if (nd) {
    /* L1[0] (active, and the snapshot's copy), the L2 entries (extended:
     * every subcluster allocated), the data. */
    store_be64 (wbuf, l2 * c | copied);
    pwrite_all (fd, wbuf, 8, c);
    if (g.snapshot)
      pwrite_all (fd, wbuf, 8, sl1 * c);
    for (i = 0; i < nd; i++) {
      uint64_t sc = c / 32, in = (g.size - i * c + sc - 1) / sc;

      /* FUZZ_WRITE_NO=tail: no subcluster allocated past the end. */
      off = l2 * c + i * (g.extended_l2 ? 16 : 8);
      store_be64 (wbuf, (l2 + 1 + i) * c | copied);
      store_be64 (wbuf + 8, !no_tail || in >= 32 ? 0xffffffffULL
                            : (1ULL << in) - 1);
      pwrite_all (fd, wbuf, g.extended_l2 ? 16 : 8, off);
    }
    for (off = 0; off < nd * c; off += sizeof wbuf) {
      size_t n = nd * c - off < sizeof wbuf ? nd * c - off : sizeof wbuf;
      for (i = 0; i < n; i++)
        wbuf[i] = no_tail && off + i >= g.size ? 0 : data_byte (off + i);
      pwrite_all (fd, wbuf, n, (l2 + 1) * c + off);
    }
  }
  if (g.snapshot) {
    /* One entry: L1 offset and size, id and name lengths, dates 0,
     * vm_state 0, 16 bytes of extra data (vm_state_size_large 0, the
     * disk size: required in v3), id "1", name "s", padding. */
    memset (ent, 0, sizeof ent);
    store_be64 (ent, sl1 * c);
    store_be32 (ent + 8, (uint32_t) l1_size);
    store_be16 (ent + 12, 1);
    store_be16 (ent + 14, 1);
    store_be32 (ent + 36, 16);
    store_be64 (ent + 48, g.size);
    ent[56] = '1';
    ent[57] = 's';
    pwrite_all (fd, ent, 64, st * c);
  }
  if (close (fd) < 0)
    die (img_path);
}

/* QED (qed_spec, "Header", "Tables"): the header in cluster 0, the
 * backing name after it, the L1 table (table_size clusters, all 0) from
 * cluster 1.  Little-endian. */
static void
make_qed (void)
{
  uint64_t c = 1ULL << g.cluster_bits;
  uint8_t hdr[128];
  int fd;

  memset (hdr, 0, sizeof hdr);
  memcpy (hdr, "QED\0", 4);
  store_le32 (hdr + 4, (uint32_t) c);
  store_le32 (hdr + 8, g.table_size);
  store_le32 (hdr + 12, 1);                       /* header_size */
  store_le64 (hdr + 16, g.backing ? 0x01 | 0x04 : 0);  /* raw backing */
  store_le64 (hdr + 40, c);                       /* l1_table_offset */
  store_le64 (hdr + 48, g.size);
  if (g.backing) {
    store_le32 (hdr + 56, 64);
    store_le32 (hdr + 60, 8);
    memcpy (hdr + 64, "base.raw", 8);
  }
  fd = open (img_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    die (img_path);
  if (ftruncate (fd, (off_t) ((1 + g.table_size) * c)) < 0)
    die ("ftruncate");
  pwrite_all (fd, hdr, sizeof hdr, 0);
  if (close (fd) < 0)
    die (img_path);
}

/* Read the geometry from the input; false: not a usable input. */
static bool
parse_geometry (struct input *in)
{
  unsigned b0 = take (in, 1), b1 = take (in, 1), b2 = take (in, 1);
  unsigned sz = take (in, 2), b5 = take (in, 1);

  memset (&g, 0, sizeof g);
  g.fmt = b0 % 4 == 0 ? F_RAW : b0 % 4 == 3 ? F_QED : F_QCOW2;
  switch (g.fmt) {
  case F_RAW:
    g.size = 1 + (uint64_t) sz * (MAX_INIT / 65536) + (b1 & 63);
    if (g.size > MAX_INIT)
      g.size = MAX_INIT;
    break;
  case F_QCOW2:
    g.cluster_bits = 9 + b1 % 13;
    g.version = b2 & 1 ? 2 : 3;
    g.refcount_order = g.version == 2 ? 4 : (b2 >> 4) % 7;
    g.extended_l2 = g.version == 3 && (b2 & 2) && g.cluster_bits >= 14;
    g.lazy = g.version == 3 && (b2 & 8);
    g.backing = b2 & 4;
    g.size = (1 + sz % (MAX_INIT / 512)) * 512;
    /* Data in the first clusters (at most 8), shared with a snapshot. */
    g.snapshot = b2 & 0x80;
    if (g.snapshot && g.refcount_order == 0)
      g.refcount_order = 1;     /* refcount 2 needs two bits */
    if (g.snapshot || (b0 & 4)) {
      uint64_t n = (g.size + (1ULL << g.cluster_bits) - 1) >> g.cluster_bits;
      g.data_clusters = n < 8 ? n : 8;
    }
    break;
  case F_QED:
    g.cluster_bits = 12 + b1 % 10;
    /* 2..16: qemu refuses tables of one cluster (its table offset
     * check never passes), so such images help no one. */
    g.table_size = 2U << ((b1 >> 4) % 4);
    g.backing = b2 & 4;
    /* qemu wants whole clusters (the spec: sectors). */
    g.size = (1 + sz % (MAX_INIT >> g.cluster_bits)) << g.cluster_bits;
    break;
  default:
    abort ();
  }
  if (g.backing || g.fmt == F_RAW) {
    switch (b5 % 4) {
    case 0: g.backing_size = g.size / 2; break;
    case 1: g.backing_size = g.size; break;
    case 2: g.backing_size = g.size + (b5 >> 2) * 8192 + 4096; break;
    default: g.backing_size = g.size / 3 + 1 + (b5 >> 2); break;
    }
    if (g.fmt == F_RAW && g.backing_size > g.size)
      g.backing_size = g.size;
  }
  return true;
}

/* The allocation unit of the format: what a DATA extent is made of. */
static uint64_t
format_unit (void)
{
  switch (g.fmt) {
  case F_RAW:
    return 4096;                /* file system block (punch granularity) */
  case F_QCOW2:
    return (1ULL << g.cluster_bits) / (g.extended_l2 ? 32 : 1);
  default:
    return 1ULL << g.cluster_bits;
  }
}

/* ---- the model ---------------------------------------------------------- */

/* Allocation bound.  may_alloc[u] says that unit u (of `unit' bytes:
 * the format's allocation unit or the driver's zero_align, the larger)
 * may hold data: it is set by every operation that leaves anything but
 * zeros in it, or covers it only in part (partial zeros are written as
 * data), and cleared only by one that covers it whole with zeros, as
 * vd_image_pwrite and vd_image_zero hand whole zero_align blocks to the
 * driver's zero op.  Units where a qcow2 v2 image's backing file shows
 * through stay set (v2 has no zero flag: zeros there are allocated). */
static bool
backing_shows (uint64_t start)
{
  return g.backing && g.fmt == F_QCOW2 && g.version == 2
    && start < g.backing_size;
}

static void
touch (uint64_t off, uint64_t len)
{
  uint64_t u, end = off + len;

  if (len == 0)
    return;
  for (u = off / unit; u * unit < end; u++) {
    uint64_t s = u * unit, e = s + unit > size ? size : s + unit;
    /* raw: a punched hole frees only whole file system blocks; the
     * disk's last, partial one stays (zeroed), even after a grow. */
    bool whole = off <= s && end >= e && (g.fmt != F_RAW || e - s == unit);
    may_alloc[u] = !whole || !zero_releases
      || !vd_is_zero (model + s, e - s) || backing_shows (s);
  }
}

static void
set_units (uint64_t off, uint64_t len)
{
  uint64_t u;

  for (u = off / unit; u * unit < off + len; u++)
    may_alloc[u] = 1;
}

static uint64_t
alloc_bound (void)
{
  uint64_t u, n = 0;

  for (u = 0; u * unit < size; u++)
    if (may_alloc[u]) {
      uint64_t s = u * unit;
      n += s + unit > size ? size - s : unit;
    }
  return n;
}

/* The model's bytes at open: the backing file where it reaches. */
static void
init_model (void)
{
  uint64_t shown = g.backing_size < g.size ? g.backing_size : g.size;

  memset (model, 0, model_used);
  memset (may_alloc, 0, sizeof may_alloc);
  size = g.size;
  if (!g.backing && g.fmt != F_RAW)
    shown = 0;
  memcpy (model, base, shown);
  if (g.data_clusters) {
    uint64_t i, data = g.data_clusters << g.cluster_bits;

    if (data > g.size)
      data = g.size;
    for (i = 0; i < data; i++)
      model[i] = data_byte (i);
    if (data > shown)
      shown = data;
  }
  if (g.snapshot)
    memcpy (snap_model, model, g.size);
  model_used = g.size;
  shown_at_open = shown;
}

/* After the first open: the unit the bound counts in, and the units the
 * backing file (raw: the data at the start) fills. */
static void
init_units (void)
{
  unit = format_unit ();
  if (img->zero_align > unit)
    unit = img->zero_align;
  zero_releases = img->zero_align != 0;
  if (shown_at_open)
    set_units (0, shown_at_open);
}

/* ---- checks ------------------------------------------------------------- */

static void
check_bytes (struct vd_image *im, const uint8_t *ref, uint64_t off,
             uint64_t len, const char *when)
{
  while (len > 0) {
    size_t n = len < sizeof rbuf ? len : sizeof rbuf, i;

    memset (rbuf, 0xee, n);
    if (vd_image_pread (im, rbuf, n, off) < 0)
      fail ("%s: read of %zu bytes at %" PRIu64 " failed", when, n, off);
    if (memcmp (rbuf, ref + off, n) != 0) {
      for (i = 0; rbuf[i] == ref[off + i]; i++)
        ;
      fail ("%s: byte %" PRIu64 " reads %#x, the model has %#x "
            "(read of %zu bytes at %" PRIu64 ")", when, off + i, rbuf[i],
            ref[off + i], n, off);
    }
    off += n;
    len -= n;
  }
}

static void
check_range (struct vd_image *im, uint64_t off, uint64_t len,
             const char *when)
{
  check_bytes (im, model, off, len, when);
}

/* The range an operation touched and the rest of its allocation units
 * (a partial write completes its cluster from what was there). */
static void
check_around (uint64_t off, uint64_t len, const char *when)
{
  uint64_t s = off / unit * unit, e = (off + len + unit - 1) / unit * unit;

  if (e > size)
    e = size;
  check_range (img, s, e - s, when);
}

/* The snapshot still reads as at the start (qcow2 with g.snapshot). */
static void
check_snapshot (struct vd_image *im, const char *when)
{
  struct vd_image *snap;
  char what[96];

  if (!g.snapshot)
    return;
  snap = vd_image_open_snapshot (im, "s");
  if (!snap)
    fail ("%s: opening snapshot \"s\" failed", when);
  if (vd_image_size (snap) != g.size)
    fail ("%s: snapshot \"s\" has size %" PRIu64 ", not %" PRIu64, when,
          vd_image_size (snap), g.size);
  snprintf (what, sizeof what, "%s, snapshot \"s\"", when);
  check_bytes (snap, snap_model, 0, g.size, what);
  vd_image_close (snap);
}

static void
check_all (struct vd_image *im, const char *when)
{
  if (vd_image_size (im) != size)
    fail ("%s: size %" PRIu64 ", the model has %" PRIu64, when,
          vd_image_size (im), size);
  check_range (im, 0, size, when);
}

static void
check_allocated (struct vd_image *im, const char *when)
{
  uint64_t bytes, bound = alloc_bound ();

  if (no_alloc_check)
    return;
  if (vd_image_allocated (im, &bytes) < 0)
    fail ("%s: vd_image_allocated failed", when);
  if (bytes > bound)
    fail ("%s: %" PRIu64 " bytes allocated, more than the %" PRIu64
          " that may hold data (units of %" PRIu64 ")", when, bytes,
          bound, unit);
}

/* Walk block_status: ZERO and HOLE extents are zeros in the model, DATA
 * extents with an fd hold the model's bytes at fd/phys. */
static void
check_extents (struct vd_image *im)
{
  uint64_t off = 0;
  unsigned n;

  for (n = 0; off < size && n < MAX_EXTENTS; n++) {
    struct vd_extent e;

    if (vd_image_block_status (im, off, size - off, &e) < 0)
      fail ("block_status at %" PRIu64 " failed", off);
    if (e.offset != off || e.length == 0 || e.length > size - off)
      fail ("block_status at %" PRIu64 " gave extent %" PRIu64 "+%" PRIu64,
            off, e.offset, e.length);
    if (e.type == VD_EXTENT_ZERO || e.type == VD_EXTENT_HOLE) {
      if (!vd_is_zero (model + off, e.length))
        fail ("a %s extent %" PRIu64 "+%" PRIu64 " where the model has "
              "data", e.type == VD_EXTENT_ZERO ? "ZERO" : "HOLE", off,
              e.length);
    }
    else if (e.type != VD_EXTENT_DATA)
      fail ("extent of unknown type %d at %" PRIu64, e.type, off);
    else if (e.fd >= 0) {
      uint64_t done;
      for (done = 0; done < e.length; done += sizeof rbuf) {
        size_t k = e.length - done < sizeof rbuf ? e.length - done
                                                 : sizeof rbuf;
        if (vd_pread_full (e.fd, rbuf, k, e.phys + done, true) < 0)
          fail ("pread of a DATA extent's fd at %" PRIu64, e.phys + done);
        if (memcmp (rbuf, model + off + done, k) != 0)
          fail ("DATA extent %" PRIu64 "+%" PRIu64 " at fd phys %" PRIu64
                " differs from the model", off, e.length, e.phys);
      }
    }
    off += e.length;
  }
}

/* ---- operations --------------------------------------------------------- */

static struct vd_image *
open_image (unsigned flags)
{
  struct vd_policy policy = { .confine = dir };

  return vd_image_open_policy (img_path, fmt_names[g.fmt], flags, &policy);
}

/* An offset and length within the disk, steered to boundaries. */
static void
pick_range (struct input *in, uint64_t *offp, uint64_t *lenp)
{
  uint64_t off = take (in, 3) % size, len = take (in, 2);
  unsigned m = take (in, 1), abits = 9 + (m & 15);

  if (m & 0x10)
    off &= ~((1ULL << abits) - 1);
  if (m & 0x20) {
    int8_t d = (int8_t) take (in, 1);
    off = d < 0 && (uint64_t) -d > off ? 0 : off + d;
    if (off >= size)
      off = size - 1;
  }
  switch (m >> 6) {
  case 0: len %= 4097; break;
  case 1: break;
  case 2: len *= 16; break;
  default: len = ((len & 63) + 1) << abits; break;
  }
  if (len > MAX_WRITE)
    len = MAX_WRITE;
  if (len > size - off)
    len = size - off;
  *offp = off;
  *lenp = len;
}

/* A byte of guest offset x written by operation salt: stale data (an
 * older write, another offset) reads different. */
static uint8_t
pattern (uint64_t x, uint32_t salt)
{
  x = (x + 1) * 0x9e3779b97f4a7c15ULL
    ^ (uint64_t) salt * 0xff51afd7ed558ccdULL;
  return (uint8_t) (x >> 56);
}

static const char *
fill (struct input *in, uint64_t off, uint64_t len, unsigned opno)
{
  unsigned k = take (in, 1), mask, i;

  switch (k % 5) {
  case 0:
    memset (wbuf, 0, len);
    return "zeros";
  case 1:
    memset (wbuf, (k >> 3) | 1, len);
    return "a byte";
  case 2:
    for (i = 0; i < len; i++)
      wbuf[i] = pattern (off + i, opno);
    return "pattern";
  case 3:
    mask = take (in, 1);
    for (i = 0; i < len; i++)
      wbuf[i] = mask >> ((off + i) / 512 % 8) & 1
        ? pattern (off + i, opno) | 1 : 0;
    return "sectors of data and zeros";
  default:
    for (i = 0; i < len; i++)
      wbuf[i] = in->n ? in->p[(in->pos + i) % in->n] : 0;
    return "input bytes";
  }
}

static void
reopen (unsigned flags, const char *when)
{
  vd_image_close (img);
  img = open_image (flags);
  if (!img)
    fail ("%s: opening the image again%s failed", when,
          flags & VD_OPEN_RDWR ? " read-write" : " read-only");
}

static void
run_ops (struct input *in)
{
  unsigned opno;

  for (opno = 0; opno < MAX_OPS && in->pos < in->n; opno++) {
    unsigned op = take (in, 1) % 8;
    uint64_t off, len, old;
    const char *what;
    char when[64];

    n_ops++;
    snprintf (when, sizeof when, "after operation %u", n_trace);
    switch (op) {
    case 0: case 1: case 7:
      pick_range (in, &off, &len);
      what = fill (in, off, len, opno);
      note ("write %" PRIu64 " bytes at %" PRIu64 " (%s)", len, off, what);
      if (vd_image_pwrite (img, wbuf, len, off) < 0)
        fail ("write of %" PRIu64 " bytes at %" PRIu64 " failed", len, off);
      memcpy (model + off, wbuf, len);
      touch (off, len);
      check_around (off, len, when);
      break;
    case 2:
      pick_range (in, &off, &len);
      note ("zero %" PRIu64 " bytes at %" PRIu64, len, off);
      if (vd_image_zero (img, len, off) < 0)
        fail ("zero of %" PRIu64 " bytes at %" PRIu64 " failed", len, off);
      memset (model + off, 0, len);
      touch (off, len);
      check_around (off, len, when);
      break;
    case 3:
      note ("flush");
      if (vd_image_flush (img) < 0)
        fail ("flush failed");
      break;
    case 4:
      old = size;
      len = take (in, 2);
      len = g.fmt == F_RAW ? len * 8 + 1
        : g.fmt == F_QED ? (len % 16 + 1) << g.cluster_bits
        : (len % 256 + 1) * 512;
      if (size + len > MAX_SIZE || no_resize)
        break;
      note ("resize %" PRIu64 " -> %" PRIu64, size, size + len);
      if (vd_image_resize (img, size + len) < 0)
        fail ("resize to %" PRIu64 " failed", size + len);
      size += len;
      /* The new part reads as zeros.  Where the backing file reaches
       * beyond the old end, the unit across it may be allocated to
       * hide it (and all of it on v2). */
      if (g.backing && g.backing_size > old) {
        set_units (old, 1);
        if (g.version == 2) {
          uint64_t e = g.backing_size < size ? g.backing_size : size;
          set_units (old, e - old);
        }
      }
      check_range (img, old > 4096 ? old - 4096 : 0,
                   size - (old > 4096 ? old - 4096 : 0), when);
      break;
    case 5:
      note ("reopen read-write");
      reopen (VD_OPEN_RDWR, when);
      check_all (img, when);
      check_allocated (img, when);
      check_snapshot (img, when);
      break;
    default:
      pick_range (in, &off, &len);
      note ("read %" PRIu64 " bytes at %" PRIu64, len, off);
      check_range (img, off, len, when);
      break;
    }
    if (opno % CHECK_EVERY == CHECK_EVERY - 1)
      check_all (img, when);
  }
}

/* ---- libFuzzer ---------------------------------------------------------- */

static void
at_exit (void)
{
  if (keep_files)
    printf ("fuzz-write: files kept in %s\n", dir);
  else {
    unlink (img_path);
    unlink (base_path);
    rmdir (dir);
  }
  printf ("fuzz-write: inputs raw %lu, qcow2 %lu (%lu skipped: not "
          "writable), qed %lu (%lu skipped); %lu operations\n",
          n_inputs[F_RAW], n_inputs[F_QCOW2], n_skipped[F_QCOW2],
          n_inputs[F_QED], n_skipped[F_QED], n_ops);
  fflush (stdout);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *tmpdir = getenv ("FUZZ_WRITE_TMPDIR"), *no;
  char tmpl[PATH_MAX];
  size_t i;

  (void) argc;
  (void) argv;
  if (!tmpdir || !*tmpdir)
    tmpdir = getenv ("TMPDIR");
  snprintf (tmpl, sizeof tmpl, "%s/vd-fuzz-write.XXXXXX",
            tmpdir && *tmpdir ? tmpdir : "/tmp");
  if (!mkdtemp (tmpl))
    die (tmpl);
  if (!realpath (tmpl, dir))      /* the policy wants it canonical */
    die ("realpath");
  snprintf (img_path, sizeof img_path, "%s/disk.img", dir);
  snprintf (base_path, sizeof base_path, "%s/base.raw", dir);
  only_format = getenv ("FUZZ_WRITE_FORMAT");
  if (only_format && !*only_format)
    only_format = NULL;
  trace_live = getenv ("FUZZ_WRITE_TRACE") != NULL;
  for (i = 0; i < sizeof base; i++)
    base[i] = base_byte (i);
  model_used = sizeof model;
  keep_files = getenv ("FUZZ_WRITE_KEEP") != NULL;
  if ((no = getenv ("FUZZ_WRITE_NO")) != NULL) {
    no_resize = strstr (no, "resize") != NULL;
    no_alloc_check = strstr (no, "alloc") != NULL;
    no_tail = strstr (no, "tail") != NULL;
  }
  atexit (at_exit);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t len)
{
  struct input in = { data, len, 0 };

  if (len < 6 || !parse_geometry (&in))
    return 0;
  if (only_format && strcmp (only_format, fmt_names[g.fmt]) != 0)
    return 0;
  n_inputs[g.fmt]++;
  n_trace = 0;

  if (g.backing)
    make_file (base_path, g.backing_size, g.backing_size);
  switch (g.fmt) {
  case F_RAW: make_file (img_path, g.size, g.backing_size); break;
  case F_QCOW2: make_qcow2 (); break;
  default: make_qed (); break;
  }
  init_model ();

  img = open_image (VD_OPEN_RDWR);
  if (!img && errno == EROFS) {
    /* No writer for this format (yet).  The image made above must read
     * as made, though. */
    n_skipped[g.fmt]++;
    img = open_image (0);
    if (!img)
      fail ("opening the new image read-only failed");
    check_all (img, "read-only, at open");
    check_snapshot (img, "read-only, at open");
    vd_image_close (img);
    img = NULL;
    return 0;
  }
  if (!img)
    fail ("opening the new image read-write failed");
  init_units ();
  check_all (img, "at open");
  check_allocated (img, "at open");
  check_snapshot (img, "at open");

  run_ops (&in);
  model_used = size;            /* nothing beyond the disk was written */

  check_all (img, "after the last operation");
  /* Closed without a flush: close must not lose data. */
  note ("close, open read-only");
  reopen (0, "at the end");
  check_all (img, "read-only, at the end");
  check_extents (img);
  check_allocated (img, "read-only, at the end");
  check_snapshot (img, "read-only, at the end");
  vd_image_close (img);
  img = NULL;
  return 0;
}
