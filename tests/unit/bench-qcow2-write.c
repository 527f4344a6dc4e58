/* Restore benchmark driver (not run by make check; build it with
 * `make tests/unit/bench-qcow2-write`): copy a raw file into an existing
 * image through vd_image_pwrite in writes of BS bytes (default 1 MiB),
 * then vd_image_flush and close, and print the time taken.  The same
 * job as `qemu-img convert -n -O qcow2 RAW IMAGE`.
 *
 *   bench-qcow2-write RAW IMAGE [BS]
 *
 * As a restore after O_TRUNC does: the whole disk is zeroed first
 * (vd_image_zero), then only the data extents of RAW are copied
 * (SEEK_DATA/SEEK_HOLE), so a 2 TiB sparse file is a quick way to see
 * the writer's memory (peak RSS printed) on a huge disk.
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
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#include "vdformat.h"

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int
main (int argc, char **argv)
{
  size_t bs = argc > 3 ? strtoull (argv[3], NULL, 0) : 1 << 20;
  struct vd_image *img;
  uint64_t off = 0, size;
  double t0;
  uint8_t *buf;
  int fd;

  if (argc < 3) {
    fprintf (stderr, "usage: %s RAW IMAGE [BS]\n", argv[0]);
    return 2;
  }
  t0 = now ();
  fd = open (argv[1], O_RDONLY);
  img = vd_image_open (argv[2], VD_OPEN_RDWR);
  buf = malloc (bs);
  if (fd < 0 || !img || !buf) {
    fprintf (stderr, "%s: cannot open: %s\n", argv[0], strerror (errno));
    return 1;
  }
  size = vd_image_size (img);
  if (vd_image_zero (img, size, 0) < 0) {
    perror ("zero");
    return 1;
  }
  while (off < size) {
    size_t n = size - off < bs ? size - off : bs;
    off_t d = lseek (fd, off, SEEK_DATA);
    ssize_t r;

    if (d < 0 || (uint64_t) d >= size)
      break;
    if ((uint64_t) d > off) {
      off = d;
      continue;
    }
    r = pread (fd, buf, n, off);

    if (r < 0) {
      perror ("pread");
      return 1;
    }
    memset (buf + r, 0, n - r);
    if (vd_image_pwrite (img, buf, n, off) < 0) {
      fprintf (stderr, "write at %" PRIu64 ": %s\n", off, strerror (errno));
      return 1;
    }
    off += n;
  }
  if (vd_image_flush (img) < 0) {
    perror ("flush");
    return 1;
  }
  vd_image_close (img);
  {
    struct rusage ru;

    getrusage (RUSAGE_SELF, &ru);
    printf ("%.3f s, peak RSS %ld KiB\n", now () - t0, ru.ru_maxrss);
  }
  return 0;
}
