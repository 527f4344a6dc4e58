/* libFuzzer target for the image parsers of formats/: one binary per
 * format, chosen at compile time with -DFUZZ_FORMAT='"qcow2"' or '"qed"'
 * (tests/fuzz/run-fuzz.sh builds both; "raw" tests this harness).
 *
 * Each input is an image file: it is written to a memfd and opened through
 * /proc/self/fd/N with vd_image_open_chain (FORMAT, VD_OPEN_NO_BACKING), so
 * backing and data files are never opened.  Then everything a reader can
 * ask is asked, with the work bounded so that a 2 TiB virtual size costs
 * no more than a tiny one: size, the snapshot table, every snapshot (up to
 * MAX_SNAPSHOTS) opened and walked the same way, a block_status walk of up
 * to MAX_EXTENTS extents from offset 0, and up to MAX_READS reads of at
 * most MAX_READ bytes each, at the extents found, at the start and end of
 * the disk and at offsets taken from the input itself.  The first
 * snapshot is walked only after the top image is closed: a snapshot must
 * not depend on the image it was opened from.  Then the image is opened
 * again with VD_OPEN_LIVE (metadata looked up afresh on every request, a
 * separate code path) and walked the same way.
 *
 * Besides ASan/UBSan/LeakSanitizer, two cheap oracles of the contract in
 * formats/vdformat.h abort on a driver bug:
 *   - a ZERO or HOLE extent that reads back successfully reads as zeros;
 *   - a DATA extent with fd >= 0 holds at fd/phys the bytes a read returns
 *     (the FUSE layer splices from there).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vdformat.h"
#include "log.h"

#ifndef FUZZ_FORMAT
#error "build with -DFUZZ_FORMAT='\"qcow2\"' or '\"qed\"'"
#endif

#define MAX_SNAPSHOTS 8
#define MAX_EXTENTS   256
#define MAX_READS     16
#define MAX_READ      (64 * 1024)

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static uint8_t read_buf[MAX_READ];
static uint8_t phys_buf[MAX_READ];

/* The driver under test, NULL while it is only a placeholder without
 * open (then there is nothing to fuzz and every input passes). */
static const struct vd_format *
driver (void)
{
  const struct vd_format *f =
    strcmp (FUZZ_FORMAT, "qcow2") == 0 ? &qcow2_format :
    strcmp (FUZZ_FORMAT, "qed") == 0 ? &qed_format :
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

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const struct vd_format *fmt = driver ();
  struct vd_snapshot *snaps;
  struct vd_image *img, *snap, *first = NULL;
  char path[64];
  size_t n_snaps, i;
  int fd;

  if (!fmt)
    return 0;
  (void) fmt->probe (data, size);

  fd = memfd_create ("fuzz-image", MFD_CLOEXEC);
  if (fd < 0) {
    perror ("memfd_create");
    abort ();
  }
  {
    const uint8_t *p = data;
    size_t left = size;
    while (left > 0) {
      ssize_t w = write (fd, p, left);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        perror ("write memfd");
        abort ();
      }
      p += w;
      left -= w;
    }
  }
  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);

  img = vd_image_open_chain (path, FUZZ_FORMAT, VD_OPEN_NO_BACKING, NULL);
  if (!img)
    goto out;

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
  img = vd_image_open_chain (path, FUZZ_FORMAT,
                             VD_OPEN_NO_BACKING | VD_OPEN_LIVE, NULL);
  if (img) {
    exercise (img, data, size);
    vd_image_close (img);
  }
 out:
  close (fd);
  return 0;
}
