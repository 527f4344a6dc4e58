/* libFuzzer target for the image parsers of formats/: one binary per
 * format, chosen at compile time with -DFUZZ_FORMAT='"qcow2"', '"qed"' or
 * '"qcow"' (QCOW version 1, libqcow.c; tests/fuzz/run-fuzz.sh builds all
 * three; "raw" tests this harness).
 *
 * Named files are fuzzed too (issue 7, hostile images): an image may name
 * a backing file or an external data file, and those names are resolved,
 * checked and opened (safe-open.c) like a real mount does.  To keep that
 * hermetic and deterministic, LLVMFuzzerInitialize makes a private
 * directory (mkdtemp under $TMPDIR or /tmp, removed at exit; run-fuzz.sh
 * points TMPDIR into its own, so that a crash leaves nothing behind)
 * holding fixed files the
 * inputs can name (relative names resolve against it):
 *   base.raw     64 KiB of a byte pattern
 *   base.qcow2   a 64 KiB qcow2 (written by make_qcow2 below) with data,
 *                zero and unallocated clusters, backed by base.raw: a
 *                chain of three with the input
 *   loop.qcow2   a qcow2 naming itself as backing file (a cycle)
 *   link.raw     a symlink to base.raw (inside: allowed)
 *   fifo         a FIFO (must be refused before open, never block)
 *   out          a symlink to /etc/hostname (outside: must be refused)
 * Each input is written to input.img in that directory (same file,
 * rewritten) and opened with vd_image_open_policy (FORMAT, flags 0,
 * policy.confine = the directory), so backing chains, data files, cycle
 * and depth checks and vd_read_backing run as in vmdiskfs.  Then
 * everything a reader can ask is asked, with the work bounded so that a
 * 2 TiB virtual size costs no more than a tiny one: size, the snapshot
 * table, every snapshot (up to MAX_SNAPSHOTS) opened and walked the same
 * way, a block_status walk of up to MAX_EXTENTS extents from offset 0, and
 * up to MAX_READS reads of at most MAX_READ bytes each, at the extents
 * found, at the start and end of the disk and at offsets taken from the
 * input itself.  The first snapshot is walked only after the top image is
 * closed: a snapshot must not depend on the image it was opened from.
 * Then the image is opened again with VD_OPEN_LIVE (metadata looked up
 * afresh on every request, a separate code path) and walked the same way.
 *
 * Besides ASan/UBSan/LeakSanitizer, cheap oracles of the contract in
 * formats/vdformat.h and of the policy abort on a driver bug:
 *   - a ZERO or HOLE extent that reads back successfully reads as zeros;
 *   - a DATA extent with fd >= 0 holds at fd/phys the bytes a read returns
 *     (the FUSE layer splices from there);
 *   - a DATA extent's fd is one of the regular files of the directory
 *     (st_dev/st_ino), never anything outside it;
 *   - after a successful open, every file descriptor the open added is
 *     one of those files: nothing outside the directory, not the FIFO.
 * At exit one line on stdout counts the opens that held a backing or
 * data file (run-fuzz.sh shows it: are those paths reached?).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdformat.h"
#include "endian.h"
#include "log.h"

#ifndef FUZZ_FORMAT
#error "build with -DFUZZ_FORMAT='\"qcow2\"', '\"qed\"' or '\"qcow\"'"
#endif

#define MAX_SNAPSHOTS 8
#define MAX_EXTENTS   256
#define MAX_READS     16
#define MAX_READ      (64 * 1024)
#define MAX_FDS       1024      /* fds above this are not tracked */

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static uint8_t read_buf[MAX_READ];
static uint8_t phys_buf[MAX_READ];

/* The private directory and the regular files in it that an image may
 * read: input.img first. */
static char dir[PATH_MAX];
static char input_path[PATH_MAX + 16];
enum { F_INPUT, F_BASE_RAW, F_BASE_QCOW2, F_LOOP_QCOW2, N_FILES };
static const char *const file_names[N_FILES] = {
  "input.img", "base.raw", "base.qcow2", "loop.qcow2",
};
static struct stat file_st[N_FILES];
/* Made by Initialize but never to be opened (fifo), or leading outside. */
static const char *const other_names[] = { "link.raw", "fifo", "out" };

/* What reached the named-file paths (printed at exit): opens that
 * succeeded, those holding a named file, and how often each file. */
static unsigned long n_inputs, n_opened, n_named, n_file_opens[N_FILES];

/* The driver under test, NULL while it is only a placeholder without
 * open (then there is nothing to fuzz and every input passes). */
static const struct vd_format *
driver (void)
{
  const struct vd_format *f =
    strcmp (FUZZ_FORMAT, "qcow2") == 0 ? &qcow2_format :
    strcmp (FUZZ_FORMAT, "qed") == 0 ? &qed_format :
    strcmp (FUZZ_FORMAT, "qcow") == 0 ? &libqcow_format :
    strcmp (FUZZ_FORMAT, "raw") == 0 ? &raw_format : NULL;

  return f && f->open ? f : NULL;
}

static void
fail (const char *what, uint64_t offset, uint64_t length)
{
  fprintf (stderr, "fuzz-image: driver bug: %s at guest offset %" PRIu64
           " length %" PRIu64 "\n", what, offset, length);
  abort ();
}

static void
die (const char *what)
{
  fprintf (stderr, "fuzz-image: %s: %s\n", what, strerror (errno));
  abort ();
}

static void
write_file (const char *name, const void *buf, size_t len)
{
  char path[PATH_MAX + 16];
  const uint8_t *p = buf;
  int fd;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    die (path);
  while (len > 0) {
    ssize_t w = write (fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      die (path);
    p += w;
    len -= w;
  }
  if (close (fd) < 0)
    die (path);
}

/* A 64 KiB qcow2 version 3 image of 512-byte clusters naming backing
 * (format backing_fmt):
 *   cluster 0 header (backing format extension, backing name at 256),
 *   1 L1 table (2 entries: L1[1] unallocated), 2 refcount table,
 *   3 refcount block, 4 L2 table, 5 and 6 data.
 * Guest clusters: 0 data (0xb0 ...), 1 zero, 2 unallocated (backing),
 * 3 data (0xb3 ...), the rest unallocated. */
static void
make_qcow2 (const char *name, const char *backing, const char *backing_fmt)
{
  enum { CL = 512, N_CL = 7 };
  static uint8_t img[CL * N_CL];
  size_t blen = strlen (backing), flen = strlen (backing_fmt), i;
  uint8_t *h = img;

  memset (img, 0, sizeof img);
  memcpy (h, "QFI\xfb", 4);
  store_be32 (h + 4, 3);                  /* version */
  store_be64 (h + 8, 256);                /* backing_file_offset */
  store_be32 (h + 16, blen);              /* backing_file_size */
  store_be32 (h + 20, 9);                 /* cluster_bits */
  store_be64 (h + 24, 64 * 1024);         /* size */
  store_be32 (h + 36, 2);                 /* l1_size */
  store_be64 (h + 40, 1 * CL);            /* l1_table_offset */
  store_be64 (h + 48, 2 * CL);            /* refcount_table_offset */
  store_be32 (h + 56, 1);                 /* refcount_table_clusters */
  store_be32 (h + 96, 4);                 /* refcount_order */
  store_be32 (h + 100, 104);              /* header_length */
  store_be32 (h + 104, 0xe2792aca);       /* backing format extension */
  store_be32 (h + 108, flen);
  memcpy (h + 112, backing_fmt, flen);    /* then the end extension */
  memcpy (h + 256, backing, blen);

  store_be64 (img + 1 * CL, (1ULL << 63) | 4 * CL);         /* L1[0] */
  store_be64 (img + 2 * CL, 3 * CL);                        /* RT[0] */
  for (i = 0; i < N_CL; i++)
    store_be16 (img + 3 * CL + 2 * i, 1);                   /* refcounts */
  store_be64 (img + 4 * CL + 0, (1ULL << 63) | 5 * CL);     /* L2[0] */
  store_be64 (img + 4 * CL + 8, 1);                         /* L2[1] zero */
  store_be64 (img + 4 * CL + 24, (1ULL << 63) | 6 * CL);    /* L2[3] */
  for (i = 0; i < CL; i++) {
    img[5 * CL + i] = 0xb0 ^ (uint8_t) i;
    img[6 * CL + i] = 0xb3 ^ (uint8_t) (i * 7);
  }
  write_file (name, img, sizeof img);
}

static void
remove_dir (void)
{
  char path[PATH_MAX + 16];
  size_t i;

  for (i = 0; i < N_FILES; i++) {
    snprintf (path, sizeof path, "%s/%s", dir, file_names[i]);
    unlink (path);
  }
  for (i = 0; i < sizeof other_names / sizeof other_names[0]; i++) {
    snprintf (path, sizeof path, "%s/%s", dir, other_names[i]);
    unlink (path);
  }
  rmdir (dir);
}

static void
print_stats (void)
{
  size_t i;

  printf ("fuzz-image: %lu inputs, %lu opens succeeded, %lu of them with "
          "a backing/data file open:",
          n_inputs, n_opened, n_named);
  for (i = 1; i < N_FILES; i++)
    printf (" %s %lu", file_names[i], n_file_opens[i]);
  printf ("\n");
  fflush (stdout);
}

static void
at_exit (void)
{
  remove_dir ();
  print_stats ();
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *tmpdir = getenv ("TMPDIR");
  char tmpl[PATH_MAX], path[PATH_MAX + 16];
  static uint8_t raw[64 * 1024];
  size_t i;

  (void) argc;
  (void) argv;
  snprintf (tmpl, sizeof tmpl, "%s/vd-fuzz-image.XXXXXX",
            tmpdir && *tmpdir ? tmpdir : "/tmp");
  if (!mkdtemp (tmpl))
    die (tmpl);
  /* The policy wants a canonical directory (/tmp may be a symlink). */
  if (!realpath (tmpl, dir))
    die ("realpath");
  snprintf (input_path, sizeof input_path, "%s/input.img", dir);
  atexit (at_exit);

  for (i = 0; i < sizeof raw; i++)
    raw[i] = (uint8_t) (i * 131 + (i >> 9) + 1);
  write_file ("input.img", "", 0);
  write_file ("base.raw", raw, sizeof raw);
  make_qcow2 ("base.qcow2", "base.raw", "raw");
  make_qcow2 ("loop.qcow2", "loop.qcow2", "qcow2");
  snprintf (path, sizeof path, "%s/link.raw", dir);
  if (symlink ("base.raw", path) < 0)
    die (path);
  snprintf (path, sizeof path, "%s/fifo", dir);
  if (mkfifo (path, 0644) < 0)
    die (path);
  snprintf (path, sizeof path, "%s/out", dir);
  if (symlink ("/etc/hostname", path) < 0)
    die (path);
  for (i = 0; i < N_FILES; i++) {
    snprintf (path, sizeof path, "%s/%s", dir, file_names[i]);
    if (lstat (path, &file_st[i]) < 0)
      die (path);
  }
  return 0;
}

/* Which of the directory's regular files fd is, or -1. */
static int
which_file (int fd)
{
  struct stat st;
  int i;

  if (fstat (fd, &st) < 0)
    return -1;
  for (i = 0; i < N_FILES; i++)
    if (st.st_dev == file_st[i].st_dev && st.st_ino == file_st[i].st_ino)
      return i;
  return -1;
}

/* The open file descriptors (below MAX_FDS) and what they are. */
struct fd_set_snap {
  bool open[MAX_FDS];
  dev_t dev[MAX_FDS];
  ino_t ino[MAX_FDS];
};

static void
snap_fds (struct fd_set_snap *s)
{
  struct dirent *d;
  struct stat st;
  DIR *dp;

  memset (s->open, 0, sizeof s->open);
  dp = opendir ("/proc/self/fd");
  if (!dp)
    die ("/proc/self/fd");
  while ((d = readdir (dp)) != NULL) {
    int fd = atoi (d->d_name);
    if (d->d_name[0] < '0' || d->d_name[0] > '9' || fd >= MAX_FDS
        || fd == dirfd (dp) || fstat (fd, &st) < 0)
      continue;
    s->open[fd] = true;
    s->dev[fd] = st.st_dev;
    s->ino[fd] = st.st_ino;
  }
  closedir (dp);
}

/* After a successful open: every fd that the open added must be one of
 * the directory's regular files.  Counts the named files held open. */
static void
check_new_fds (const struct fd_set_snap *before)
{
  static struct fd_set_snap now;
  bool seen[N_FILES] = { false }, named = false;
  int fd, f;

  snap_fds (&now);
  for (fd = 0; fd < MAX_FDS; fd++) {
    if (!now.open[fd]
        || (before->open[fd] && before->dev[fd] == now.dev[fd]
            && before->ino[fd] == now.ino[fd]))
      continue;
    if ((f = which_file (fd)) < 0) {
      char link[PATH_MAX], proc[64];
      ssize_t n;

      snprintf (proc, sizeof proc, "/proc/self/fd/%d", fd);
      n = readlink (proc, link, sizeof link - 1);
      link[n > 0 ? n : 0] = '\0';
      fprintf (stderr, "fuzz-image: driver bug: the open holds fd %d "
               "(%s), not a regular file of %s\n", fd, link, dir);
      abort ();
    }
    if (f != F_INPUT && !seen[f]) {
      seen[f] = true;
      n_file_opens[f]++;
      named = true;
    }
  }
  n_named += named;
}

static bool
all_zero (const uint8_t *p, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

/* Read [offset, offset+count) and check it against what block_status
 * said about it (e, which covers offset; may be NULL). */
static void
read_and_check (struct vd_image *img, uint64_t offset, size_t count,
                const struct vd_extent *e)
{
  if (count == 0 || offset >= img->size)
    return;
  if (count > img->size - offset)
    count = img->size - offset;
  if (vd_image_pread (img, read_buf, count, offset) < 0)
    return;                     /* EIO on corrupt metadata is fine */
  if (!e || offset < e->offset || offset - e->offset >= e->length)
    return;
  if (count > e->length - (offset - e->offset))
    count = e->length - (offset - e->offset);
  switch (e->type) {
  case VD_EXTENT_ZERO:
  case VD_EXTENT_HOLE:
    if (!all_zero (read_buf, count))
      fail ("zero/hole extent reads non-zero bytes", offset, count);
    break;
  case VD_EXTENT_DATA:
    if (e->fd >= 0
        && vd_pread_full (e->fd, phys_buf, count,
                          e->phys + (offset - e->offset), true) == 0
        && memcmp (read_buf, phys_buf, count) != 0)
      fail ("data extent's fd/phys differs from read", offset, count);
    break;
  default:
    fail ("extent of unknown type", offset, count);
  }
}

/* Walk and read one image (the top image or a snapshot). */
static void
exercise (struct vd_image *img, const uint8_t *data, size_t size)
{
  struct vd_extent ext[MAX_EXTENTS];
  size_t n_ext = 0, n_reads = 0, i;
  uint64_t disk = vd_image_size (img), off = 0;

  (void) vd_image_format_name (img);
  if (disk == 0)
    return;

  /* block_status from 0, whole remaining length each time. */
  while (off < disk && n_ext < MAX_EXTENTS) {
    struct vd_extent *e = &ext[n_ext];
    if (vd_image_block_status (img, off, disk - off, e) < 0)
      break;
    if (e->type != VD_EXTENT_DATA && e->type != VD_EXTENT_ZERO
        && e->type != VD_EXTENT_HOLE)
      fail ("extent of unknown type", off, e->length);
    if (e->type == VD_EXTENT_DATA && e->fd >= 0 && which_file (e->fd) < 0)
      fail ("data extent's fd is not a file of the fuzz directory",
            off, e->length);
    n_ext++;
    off += e->length;
  }
  /* A short request in the middle of the first extent: the driver must
   * honour both offset and length there too. */
  if (n_ext > 0 && ext[0].length > 1) {
    struct vd_extent e;
    (void) vd_image_block_status (img, ext[0].length / 2, 1, &e);
  }

  /* Reads at the start of each extent found (head and tail of a long
   * one), first come first served up to MAX_READS. */
  for (i = 0; i < n_ext && n_reads < MAX_READS; i++) {
    read_and_check (img, ext[i].offset, MAX_READ, &ext[i]);
    n_reads++;
    if (ext[i].length > MAX_READ && n_reads < MAX_READS) {
      read_and_check (img, ext[i].offset + ext[i].length - MAX_READ,
                      MAX_READ, &ext[i]);
      n_reads++;
    }
  }
  /* The last bytes of the disk, unaligned. */
  if (n_reads < MAX_READS) {
    read_and_check (img, disk > 4097 ? disk - 4097 : 0, 4097, NULL);
    n_reads++;
  }
  /* Offsets chosen by the input's last bytes, so the fuzzer can steer
   * reads anywhere in a huge sparse disk. */
  for (i = 0; n_reads < MAX_READS && size >= 8 * (i + 1); i++, n_reads++) {
    uint64_t v;
    memcpy (&v, data + size - 8 * (i + 1), 8);
    read_and_check (img, v % disk, 1 + (v >> 48) % MAX_READ, NULL);
  }
}

/* Open input.img as the format under test, confined to the directory,
 * and check what the open holds. */
static struct vd_image *
open_input (unsigned flags)
{
  static struct fd_set_snap before;
  struct vd_policy policy = { .confine = dir };
  struct vd_image *img;

  snap_fds (&before);
  img = vd_image_open_policy (input_path, FUZZ_FORMAT, flags, &policy);
  if (img) {
    n_opened++;
    check_new_fds (&before);
  }
  return img;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const struct vd_format *fmt = driver ();
  struct vd_snapshot *snaps;
  struct vd_image *img, *snap, *first = NULL;
  size_t n_snaps, i;

  if (!fmt)
    return 0;
  (void) fmt->probe (data, size);

  n_inputs++;
  write_file ("input.img", data, size);
  img = open_input (0);
  if (!img)
    return 0;

  exercise (img, data, size);
  /* Snapshots.  The first one is walked after the top image is closed:
   * a snapshot must not depend on the image it was opened from. */
  if (vd_image_list_snapshots (img, &snaps, &n_snaps) == 0) {
    for (i = 0; i < n_snaps && i < MAX_SNAPSHOTS; i++) {
      snap = vd_image_open_snapshot (img, snaps[i].id);
      if (!snap)
        continue;
      if (!first)
        first = snap;
      else {
        exercise (snap, data, size);
        vd_image_close (snap);
      }
    }
    /* By name, as fs/ opens them. */
    if (n_snaps > 0 && snaps[0].name
        && (snap = vd_image_open_snapshot (img, snaps[0].name)) != NULL)
      vd_image_close (snap);
    vd_snapshots_free (snaps, n_snaps);
  }
  snap = vd_image_open_snapshot (img, "no such snapshot \x01");
  if (snap)
    vd_image_close (snap);

  vd_image_close (img);
  if (first) {
    exercise (first, data, size);
    vd_image_close (first);
  }
  img = open_input (VD_OPEN_LIVE);
  if (img) {
    exercise (img, data, size);
    vd_image_close (img);
  }
  return 0;
}
