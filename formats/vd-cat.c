/* vd-cat - a small command line front end to the formats library, for
 * tests, fuzzing seeds and debugging: dumps an image's guest bytes (or a
 * snapshot's), its extent map, or its snapshot table, without FUSE.
 *
 *   vd-cat [-f FORMAT] [-s SNAPSHOT] IMAGE        guest bytes to stdout
 *   vd-cat [-f FORMAT] [-s SNAPSHOT] -m IMAGE     extents, one per line:
 *                                                 OFFSET LENGTH data|zero|hole
 *   vd-cat -l IMAGE                               snapshots: ID<TAB>NAME<TAB>
 *                                                 DATE<TAB>DISKSIZE<TAB>VMSTATE
 *   vd-cat -i IMAGE                               format and virtual size
 *   vd-cat [-s SNAPSHOT] -r N [-u FILE] IMAGE     keep the image open and
 *                                                 read it N times (0: no
 *                                                 limit), printing per pass
 *                                                 PASS CRC32 SNAPSHOTS;
 *                                                 with -u, the pass that
 *                                                 starts once FILE exists
 *                                                 is the last
 *
 * IMAGE may be a network disk's URI (netdisk.h, vd_net_parse):
 * nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH,
 * iscsi://HOST[:PORT]/IQN/LUN, rbd:POOL/IMAGE[@SNAP][:mon_host=...].
 *
 *   vd-cat -w FILE IMAGE                          write FILE's bytes at 0
 *                                                 (opened read-write;
 *                                                 zeros by the zero op),
 *                                                 then flush
 *   vd-cat -S NAME|-R NAME rbd:POOL/IMAGE         create / remove an RBD
 *                                                 snapshot
 *
 * -L opens the image with VD_OPEN_LIVE (a running VM writes it), -b sets
 * the read size (default 1 MiB).
 *
 * Exit 0 on success, 1 on any error (after the library logged why).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>
#include <zlib.h>

#include "vdformat.h"
#include "netdisk.h"
#include "log.h"

#define USAGE "usage: vd-cat [-L] [-f FMT] [-s SNAP] [-b BYTES] " \
  "[-m|-l|-i|-r N [-u FILE]|-w FILE|-S NAME|-R NAME] IMAGE\n"

static int
write_all (int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write (fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    n -= w;
  }
  return 0;
}

/* Read img once in bufsize pieces: to fd 1 (out) or into *crc. */
static int
read_pass (struct vd_image *img, char *buf, size_t bufsize, bool out,
           uLong *crc)
{
  uint64_t off;

  *crc = crc32 (0, Z_NULL, 0);
  for (off = 0; off < img->size; ) {
    size_t n = img->size - off < bufsize ? img->size - off : bufsize;
    if (vd_image_pread (img, buf, n, off) < 0) {
      fprintf (stderr, "vd-cat: read at %" PRIu64 ": %s\n", off,
               strerror (errno));
      return -1;
    }
    if (out && write_all (1, buf, n) < 0) {
      perror ("vd-cat: write");
      return -1;
    }
    if (!out)
      *crc = crc32 (*crc, (const Bytef *) buf, n);
    off += n;
  }
  return 0;
}

int
main (int argc, char **argv)
{
  const char *format = NULL, *snap = NULL;
  bool map = false, list = false, info = false;
  struct vd_image *top, *img;
  size_t bufsize = 1 << 20;
  char *buf;
  uint64_t off;
  int c, ret = 1;
  unsigned flags = 0;
  long passes = -1;
  const char *until = NULL, *wfile = NULL;
  const char *snap_create = NULL, *snap_remove = NULL;

  while ((c = getopt (argc, argv, "f:s:mlidb:Lr:u:w:S:R:")) != -1) {
    switch (c) {
    case 'f': format = optarg; break;
    case 's': snap = optarg; break;
    case 'm': map = true; break;
    case 'l': list = true; break;
    case 'i': info = true; break;
    case 'd': vd_log_set_level (VD_LOG_DEBUG); break;
    case 'b': bufsize = strtoul (optarg, NULL, 0); break;
    case 'L': flags |= VD_OPEN_LIVE; break;
    case 'r': passes = strtol (optarg, NULL, 0); break;
    case 'u': until = optarg; break;
    case 'w': wfile = optarg; flags |= VD_OPEN_RDWR; break;
    case 'S': snap_create = optarg; break;
    case 'R': snap_remove = optarg; break;
    default:
      fputs (USAGE, stderr);
      return 1;
    }
  }
  if (optind != argc - 1 || bufsize == 0 || (until && passes < 0)) {
    fputs (USAGE, stderr);
    return 1;
  }

  if (vd_net_is_uri (argv[optind])) {
    /* A network disk (netdisk.h): nbd://, nbd+unix://, iscsi://, rbd:. */
    struct vd_netsrc src;

    if (vd_net_parse (argv[optind], &src) < 0)
      return 1;
    if (snap_create || snap_remove) {
      ret = src.proto != VD_NET_RBD ? (errno = ENOTSUP, -1)
        : snap_create ? vd_rbd_snap_create (&src, snap_create, NULL)
        : vd_rbd_snap_remove (&src, snap_remove);
      if (ret < 0)
        fprintf (stderr, "vd-cat: %s: %s\n", snap_create ? "-S" : "-R",
                 strerror (errno));
      vd_netsrc_clear (&src);
      return ret < 0 ? 1 : 0;
    }
    top = vd_net_open (&src, flags);
    vd_netsrc_clear (&src);
  }
  else
    top = vd_image_open_chain (argv[optind], format, flags, NULL);
  if (!top)
    return 1;
  img = top;
  if (snap) {
    img = vd_image_open_snapshot (top, snap);
    if (!img) {
      fprintf (stderr, "vd-cat: %s: snapshot %s: %s\n", argv[optind], snap,
               strerror (errno));
      vd_image_close (top);
      return 1;
    }
  }

  if (wfile) {
    /* Write FILE's bytes at offset 0 (zeros through the zero op, as a
     * restore writes them), then flush. */
    FILE *f = fopen (wfile, "rb");
    size_t n;

    buf = malloc (bufsize);
    if (!f || !buf) {
      fprintf (stderr, "vd-cat: %s: %s\n", wfile, strerror (errno));
      if (f)
        fclose (f);
      free (buf);
      goto out;
    }
    off = 0;
    while ((n = fread (buf, 1, bufsize, f)) > 0) {
      if (vd_image_pwrite (img, buf, n, off) < 0) {
        fprintf (stderr, "vd-cat: write at %" PRIu64 ": %s\n", off,
                 strerror (errno));
        break;
      }
      off += n;
    }
    if (n == 0 && !ferror (f) && vd_image_flush (img) == 0)
      ret = 0;
    fclose (f);
    free (buf);
  }
  else if (info) {
    printf ("format %s\nsize %" PRIu64 "\n", vd_image_format_name (img),
            vd_image_size (img));
    ret = 0;
  }
  else if (list) {
    struct vd_snapshot *s;
    size_t n, i;
    if (vd_image_list_snapshots (img, &s, &n) == 0) {
      for (i = 0; i < n; i++)
        printf ("%s\t%s\t%" PRId64 ".%09" PRIu32 "\t%" PRIu64 "\t%" PRIu64
                "\n", s[i].id, s[i].name, s[i].date_sec, s[i].date_nsec,
                s[i].disk_size, s[i].vm_state_size);
      vd_snapshots_free (s, n);
      ret = 0;
    }
  }
  else if (map) {
    struct vd_extent e;
    static const char *const names[] = { "data", "zero", "hole" };
    for (off = 0; off < img->size; off += e.length) {
      if (vd_image_block_status (img, off, img->size - off, &e) < 0)
        goto out;
      printf ("%" PRIu64 " %" PRIu64 " %s\n", e.offset, e.length,
              names[e.type]);
    }
    ret = 0;
  }
  else if (passes >= 0) {
    long i;
    bool last = false;
    uLong crc;

    buf = malloc (bufsize);
    if (!buf)
      goto out;
    for (i = 0; !last && (passes == 0 || i < passes); i++) {
      struct vd_snapshot *s;
      size_t n;
      struct stat st;

      last = until && stat (until, &st) == 0;
      if (vd_image_list_snapshots (top, &s, &n) < 0 ||
          read_pass (img, buf, bufsize, false, &crc) < 0) {
        free (buf);
        goto out;
      }
      vd_snapshots_free (s, n);
      printf ("%ld %08lx %zu\n", i, crc, n);
      fflush (stdout);
    }
    free (buf);
    ret = 0;
  }
  else {
    uLong crc;

    buf = malloc (bufsize);
    if (!buf)
      goto out;
    if (read_pass (img, buf, bufsize, true, &crc) == 0)
      ret = 0;
    free (buf);
  }
 out:
  if (img != top)
    vd_image_close (img);
  vd_image_close (top);
  return ret;
}
