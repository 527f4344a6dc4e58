/* Unit test of the qcow2 writer (qcow2-write.c, qcow2-refcount.c), with
 * qemu-img as the oracle.
 *
 * For each geometry (cluster sizes 512 B to 2 MiB, refcount widths 1 to
 * 64, compat 0.10 and 1.1, extended L2, backing files, internal
 * snapshots, a compressed image, external data files raw and not,
 * preallocation=metadata) an image is made and filled with qemu-io, its
 * snapshots saved with `qemu-img convert -l`, then written through
 * vd_image_pwrite / vd_image_zero with random writes (aligned, unaligned,
 * crossing clusters, half of them with zero blocks), zero ranges and, in
 * some cases, a whole-disk zero (O_TRUNC), the same bytes going to a raw
 * model file; reads through vd_image_pread while open are compared with
 * the model.  After close: `qemu-img check` exits 0 (no leaks, no
 * errors), `qemu-img compare` says the image equals the model, every
 * snapshot reads as before, and where there is no snapshot the file's
 * allocation is no larger than the data plus the metadata.
 *
 * Three threads reading while a fourth writes (each read of a region
 * written whole sees one write's bytes, never a mix).
 * Six rounds of our writes between qemu-img snapshots (one deleted in
 * between), with the smallest writer cache: every snapshot intact.
 * Resizing with L1 growth; refusal of dirty and corrupt images; an image
 * with an auto dirty bitmap and a disabled one: afterwards the auto one
 * has exactly the granules written before and by us, no in_use flag,
 * the disabled one is unchanged, and qemu-img can merge it.
 *
 * Then the kill test: a child writes in a loop (flushing now and then)
 * and is killed with SIGKILL at random moments, 20 times; after each,
 * `qemu-img check` must exit 0 or 3 (leaks), never 2 (corruption), the
 * snapshot must read as before, and the region the child flushed before
 * telling us must hold what it wrote.
 *
 * Needs qemu-img and qemu-io: exit 77 (skip) without them.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vdformat.h"
#include "cleanup.h"
#include "test.h"

#define NKILLS 20

/* qcow2-write.c's test hook: the writer's metadata cache size. */
extern uint64_t qcow2_wcache_bytes;

static int failures;

/* N, or FEWER under valgrind (tests/unit/valgrind.sh sets
 * VD_UNDER_VALGRIND): memcheck wants every path taken, which the fewer
 * random operations and kills still do, at 20 to 50 times the cost each;
 * the full counts, which hunt for ordering and content mistakes, run in
 * this test's own run. */
static int
reps (int n, int fewer)
{
  return getenv ("VD_UNDER_VALGRIND") ? fewer : n;
}
/* On tmpfs when there is one: the test is about ordering and contents,
 * not about the disk's speed (fdatasync costs nothing there). */
static char dir[64] = "/tmp/vd-test-qcow2w-XXXXXX";

static int
shv (const char *fmt, va_list ap)
{
  char cmd[8192];
  int r;

  vsnprintf (cmd, sizeof cmd, fmt, ap);
  r = system (cmd);
  return WIFEXITED (r) ? WEXITSTATUS (r) : 255;
}

static void
sh (const char *fmt, ...)
{
  va_list ap;
  int r;

  va_start (ap, fmt);
  r = shv (fmt, ap);
  va_end (ap);
  if (r != 0) {
    fprintf (stderr, "FAIL: command exited %d: ", r);
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fprintf (stderr, "\n");
    exit (1);
  }
}

static int
sh_rc (const char *fmt, ...)
{
  va_list ap;
  int r;

  va_start (ap, fmt);
  r = shv (fmt, ap);
  va_end (ap);
  return r;
}

static uint64_t
rnd (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545f4914f6cdd1dULL;
}

struct geom {
  const char *name;
  const char *opts;             /* qemu-img create -o ...               */
  uint64_t size;
  unsigned cluster;
  bool backing;                 /* a qcow2 backing file with data       */
  int snapshots;                /* internal snapshots to make           */
  bool compressed;              /* made with qemu-img convert -c        */
  bool data_file, data_raw;
  bool wipe;                    /* a whole-disk zero in the middle      */
  bool check_alloc;             /* allocation <= data + metadata        */
  bool small_cache_too;         /* again with the smallest writer cache */
};

static const struct geom geoms[] = {
  { "v3-64k", "cluster_size=65536", 32 << 20, 65536, false, 2, false, false,
    false, true, false, true },
  { "v3-64k-plain", "cluster_size=65536", 32 << 20, 65536, false, 0, false,
    false, false, true, true },
  { "v2-64k-snap", "compat=0.10,cluster_size=65536", 24 << 20, 65536,
    false, 2, false, false, false, true, false },
  { "v2-64k-backing", "compat=0.10,cluster_size=65536", 24 << 20, 65536,
    true, 1, false, false, false, false, false, true },
  { "v3-64k-backing", "cluster_size=65536", 24 << 20, 65536, true, 1, false,
    false, false, true, false },
  { "v3-512-rc16", "cluster_size=512", 8 << 20, 512, false, 1, false,
    false, false, false, false, true },
  { "v3-512-grow", "cluster_size=512", 24 << 20, 512, false, 0, false,
    false, false, true, true },
  { "v3-4k-rc1", "cluster_size=4096,refcount_bits=1", 16 << 20, 4096,
    false, 0, false, false, false, true, true },
  { "v3-4k-rc8", "cluster_size=4096,refcount_bits=8", 16 << 20, 4096,
    false, 2, false, false, false, false, false },
  { "v3-4k-rc64", "cluster_size=4096,refcount_bits=64", 16 << 20, 4096,
    true, 1, false, false, false, true, false },
  { "v3-512-rc64", "cluster_size=512,refcount_bits=64", 8 << 20, 512,
    false, 1, false, false, false, true, false },
  { "v3-2m-rc64", "cluster_size=2097152,refcount_bits=64", 24 << 20,
    2097152, false, 1, false, false, false, true, false },
  { "v3-2m-backing", "cluster_size=2097152", 24 << 20, 2097152, true, 0,
    false, false, false, false, false },
  { "extl2-64k-backing", "cluster_size=65536,extended_l2=on", 24 << 20,
    65536, true, 1, false, false, false, true, false },
  { "extl2-32k", "cluster_size=32768,extended_l2=on", 32 << 20, 32768,
    false, 1, false, false, false, true, false, true },
  { "extl2-2m", "cluster_size=2097152,extended_l2=on", 24 << 20, 2097152,
    false, 0, false, false, false, false, true },
  { "compressed", "cluster_size=65536", 16 << 20, 65536, false, 1, true,
    false, false, false, false },
  { "compressed-4k", "cluster_size=4096", 16 << 20, 4096, false, 0, true,
    false, false, false, false, true },
  { "data-file", "cluster_size=65536", 32 << 20, 65536, false, 0, false,
    true, false, true, false },
  { "data-file-raw", "cluster_size=65536,data_file_raw=on", 32 << 20, 65536,
    false, 0, false, true, true, false, false },
  { "odd-size", "cluster_size=65536", (5 << 20) + 1536, 65536, true, 1,
    false, false, false, true, false },
  { "odd-size-extl2", "cluster_size=32768,extended_l2=on", (3 << 20) + 2560,
    32768, false, 1, false, false, false, true, false },
  { "prealloc-metadata", "cluster_size=65536,preallocation=metadata",
    32 << 20, 65536, false, 0, false, false, false, false, false },
  { "v2-prealloc", "compat=0.10,cluster_size=4096,preallocation=metadata",
    8 << 20, 4096, false, 1, false, false, false, false, false },
};

/* Fill the image with some data through qemu-io, in a pattern seeded by
 * round. */
static void
qemu_fill (const char *img, const struct geom *g, int round, uint64_t size)
{
  uint64_t s = 0x1234567 + round * 977, i;
  char cmds[4096] = "";
  size_t used = 0;

  for (i = 0; i < 10; i++) {
    uint64_t len = 4096 + rnd (&s) % (512 << 10);
    uint64_t off = rnd (&s) % (size - len);
    bool zero = i % 4 == 3;

    off &= ~511ULL;
    len &= ~511ULL;
    used += snprintf (cmds + used, sizeof cmds - used, " -c '%s %" PRIu64
                      " %" PRIu64 "'", zero ? "write -z" :
                      (i % 2 ? "write -P 0x5a" : "write -P 0xc3"), off, len);
  }
  sh ("qemu-io -f qcow2 %s %s >/dev/null", cmds, img);
}

static void
random_buf (uint8_t *buf, size_t len, uint64_t *s, unsigned zero_block)
{
  size_t i;

  for (i = 0; i < len; i += 8) {
    uint64_t v = rnd (s);
    memcpy (buf + i, &v, MIN (8, len - i));
  }
  /* Zero blocks, so that vd_image_pwrite hands some to the zero op. */
  if (rnd (s) & 1)
    for (i = 0; i + zero_block <= len; i += zero_block)
      if (rnd (s) % 3 == 0)
        memset (buf + i, 0, zero_block);
  if (rnd (s) % 8 == 0)
    memset (buf, 0, len);
}

static void
model_write (int fd, const void *buf, size_t len, uint64_t off)
{
  REQUIRE (pwrite (fd, buf, len, off) == (ssize_t) len);
}

static void
model_zero (int fd, size_t len, uint64_t off)
{
  uint8_t *z = calloc (1, len);
  REQUIRE (z);
  model_write (fd, z, len, off);
  free (z);
}

static void
check_read (struct vd_image *img, int mfd, uint64_t off, size_t len,
            const char *name)
{
  uint8_t *a = malloc (len), *b = malloc (len);

  REQUIRE (a && b);
  REQUIRE (pread (mfd, b, len, off) == (ssize_t) len);
  if (vd_image_pread (img, a, len, off) != 0 || memcmp (a, b, len) != 0) {
    fprintf (stderr, "FAIL %s: read back at %" PRIu64 "+%zu differs\n",
             name, off, len);
    failures++;
  }
  free (a);
  free (b);
}

static void
random_ops (struct vd_image *img, int mfd, const struct geom *g, uint64_t seed,
            int nops, const char *name)
{
  uint64_t s = seed, size = g->size;
  size_t maxlen = MAX ((size_t) 3 * g->cluster, 256 << 10);
  uint8_t *buf = malloc (maxlen);
  int i;

  REQUIRE (buf);
  for (i = 0; i < nops; i++) {
    uint64_t kind = rnd (&s) % 10, off, len;

    switch (kind) {
    case 0: case 1: case 2:     /* unaligned */
      len = 1 + rnd (&s) % maxlen;
      off = rnd (&s) % size;
      break;
    case 3: case 4: case 5:     /* aligned */
      len = (1 + rnd (&s) % (maxlen / g->cluster)) * g->cluster;
      off = (rnd (&s) % (size / g->cluster)) * g->cluster;
      break;
    case 6:                     /* small, crossing a cluster boundary */
      off = (1 + rnd (&s) % (size / g->cluster - 1)) * g->cluster
        - 1 - rnd (&s) % 700;
      len = 1 + rnd (&s) % 1400;
      break;
    default:                    /* zero a range */
      len = 1 + rnd (&s) % (4 * maxlen);
      off = rnd (&s) % size;
      if (rnd (&s) & 1) {
        off &= ~(uint64_t) (g->cluster - 1);
        len = ROUND_UP (len, g->cluster);
      }
      break;
    }
    if (off >= size)
      off = size - 1;
    if (len > size - off)
      len = size - off;
    if (kind >= 7) {
      if (vd_image_zero (img, len, off) != 0) {
        fprintf (stderr, "FAIL %s: zero %" PRIu64 "+%" PRIu64 ": %s\n", name,
                 off, len, strerror (errno));
        exit (1);
      }
      model_zero (mfd, len, off);
    }
    else {
      REQUIRE (len <= maxlen);
      random_buf (buf, len, &s, img->zero_align ? img->zero_align : 4096);
      if (vd_image_pwrite (img, buf, len, off) != 0) {
        fprintf (stderr, "FAIL %s: write %" PRIu64 "+%" PRIu64 ": %s\n",
                 name, off, len, strerror (errno));
        exit (1);
      }
      model_write (mfd, buf, len, off);
    }
    if (i % 16 == 15) {
      uint64_t ro = rnd (&s) % size, rl = 1 + rnd (&s) % maxlen;
      if (rl > size - ro)
        rl = size - ro;
      check_read (img, mfd, ro, rl, name);
      check_read (img, mfd, off, len, name);
    }
    if (i % 50 == 49)
      REQUIRE (vd_image_flush (img) == 0);
  }
  free (buf);
}

/* Make the image of geometry g as img.qcow2 in sub (with base.qcow2 /
 * data.raw beside it), its snapshots saved as sN.raw. */
static void
make_image (const struct geom *g, const char *sub)
{
  char img[512];
  int i;

  snprintf (img, sizeof img, "%s/img.qcow2", sub);
  sh ("mkdir -p %s", sub);
  if (g->backing) {
    sh ("cd %s && qemu-img create -q -f qcow2 base.qcow2 %" PRIu64, sub,
        g->size - (g->size / 4));
    char p[600];
    snprintf (p, sizeof p, "%s/base.qcow2", sub);
    qemu_fill (p, g, 99, g->size - g->size / 4);
  }
  if (g->compressed) {
    sh ("cd %s && qemu-img create -q -f qcow2 src.qcow2 %" PRIu64, sub,
        g->size);
    {
      char p[600];
      snprintf (p, sizeof p, "%s/src.qcow2", sub);
      qemu_fill (p, g, 7, g->size);
    }
    sh ("cd %s && qemu-img convert -c -O qcow2 -o %s src.qcow2 img.qcow2",
        sub, g->opts);
  }
  else if (g->data_file)
    sh ("cd %s && qemu-img create -q -f qcow2 -o %s,data_file=%s/data.raw "
        "img.qcow2 %" PRIu64, sub, g->opts, sub, g->size);
  else if (g->backing)
    sh ("cd %s && qemu-img create -q -f qcow2 -o %s -b base.qcow2 -F qcow2 "
        "img.qcow2 %" PRIu64, sub, g->opts, g->size);
  else
    sh ("cd %s && qemu-img create -q -f qcow2 -o %s img.qcow2 %" PRIu64,
        sub, g->opts, g->size);
  if (!g->compressed)
    qemu_fill (img, g, 1, g->size);
  for (i = 0; i < g->snapshots; i++) {
    sh ("qemu-img snapshot -c s%d %s", i, img);
    sh ("cd %s && qemu-img convert -l snapshot.name=s%d -O raw img.qcow2 "
        "s%d.raw", sub, i, i);
    qemu_fill (img, g, 2 + i, g->size);
  }
}

static void
check_snapshots (const struct geom *g, const char *sub, const char *what)
{
  int i;

  for (i = 0; i < g->snapshots; i++)
    if (sh_rc ("cd %s && qemu-img convert -l snapshot.name=s%d -O raw "
               "img.qcow2 now.raw && cmp -s -n $(stat -c %%s s%d.raw) now.raw "
               "s%d.raw", sub, i, i, i)
        != 0) {
      fprintf (stderr, "FAIL %s: snapshot s%d changed (%s)\n", g->name, i,
               what);
      failures++;
    }
}

static uint64_t
file_alloc (const char *path)
{
  struct stat st;

  REQUIRE (stat (path, &st) == 0);
  return (uint64_t) st.st_blocks * 512;
}

static void
run_geom (const struct geom *g, int gi)
{
  char sub[300], img[400], model[400];
  struct vd_image *im;
  int mfd, r;
  time_t t0 = time (NULL);

  snprintf (sub, sizeof sub, "%s/g%d", dir, gi);
  snprintf (img, sizeof img, "%s/img.qcow2", sub);
  snprintf (model, sizeof model, "%s/model.raw", sub);
  make_image (g, sub);
  sh ("cd %s && qemu-img convert -O raw img.qcow2 model.raw", sub);
  mfd = open (model, O_RDWR);
  REQUIRE (mfd >= 0);

  im = vd_image_open (img, VD_OPEN_RDWR);
  if (!im) {
    fprintf (stderr, "FAIL %s: open for writing: %s\n", g->name,
             strerror (errno));
    failures++;
    close (mfd);
    return;
  }
  random_ops (im, mfd, g, 0xabcdef + gi, reps (100, 50), g->name);
  if (g->wipe) {
    REQUIRE (vd_image_zero (im, g->size, 0) == 0);
    model_zero (mfd, g->size, 0);
    check_read (im, mfd, 0, MIN (g->size, 4 << 20), g->name);
    random_ops (im, mfd, g, 0x777 + gi, reps (40, 20), g->name);
  }
  REQUIRE (vd_image_flush (im) == 0);
  vd_image_close (im);

  if ((r = sh_rc ("qemu-img check -q %s", img)) != 0) {
    fprintf (stderr, "FAIL %s: qemu-img check exit %d\n", g->name, r);
    sh_rc ("qemu-img check %s | head -20", img);
    failures++;
  }
  if (sh_rc ("qemu-img compare -q -f qcow2 -F raw %s %s", img, model) != 0) {
    fprintf (stderr, "FAIL %s: image differs from the model\n", g->name);
    failures++;
  }
  check_snapshots (g, sub, "after writing");
  if (g->data_raw
      && sh_rc ("cd %s && qemu-img compare -q -f raw -F raw data.raw "
                "model.raw", sub) != 0) {
    fprintf (stderr, "FAIL %s: the raw data file is not the disk\n",
             g->name);
    failures++;
  }

  /* Zero-heavy content: the whole disk zeroed, then a little data. */
  if (g->check_alloc) {
    uint64_t cs = g->cluster, l2cov, meta, data = 0, a;
    uint8_t *buf = malloc (cs);
    int i;

    struct stat st1, st2;
    int round;

    /* Restored three times (O_TRUNC, then the data): the file does not
     * grow after the first, freed clusters are reused. */
    for (round = 0; round < 3; round++) {
      im = vd_image_open (img, VD_OPEN_RDWR);
      REQUIRE (im && buf);
      REQUIRE (vd_image_zero (im, g->size, 0) == 0);
      memset (buf, 0xa5 + round, cs);
      for (i = 0, data = 0; i < 8; i++) {
        REQUIRE (vd_image_pwrite (im, buf, cs, (g->size / 8) * i) == 0);
        data += cs;
      }
      vd_image_close (im);
      REQUIRE (stat (img, round == 0 ? &st1 : &st2) == 0);
    }
    if (st2.st_size > st1.st_size) {
      fprintf (stderr, "FAIL %s: the file grew from %lld to %lld bytes "
               "on restoring again\n", g->name, (long long) st1.st_size,
               (long long) st2.st_size);
      failures++;
    }
    l2cov = cs * (cs / (strstr (g->opts, "extended_l2") ? 16 : 8));
    {
      /* Each metadata cluster may cost a 4 KiB file system block: the
       * header, L1, refcount table, the L2 tables the 8 clusters need and
       * the refcount blocks of the whole file (one per range they
       * describe, spread over it). */
      struct stat st;
      uint64_t fsb = MAX (cs, 4096), rbits = 16, rbcov;
      const char *rb = strstr (g->opts, "refcount_bits=");

      if (rb)
        rbits = atoi (rb + 14);
      REQUIRE (stat (img, &st) == 0);
      rbcov = cs * (cs * 8 / rbits);
      meta = (8 + 8 + st.st_size / rbcov + 1
              + 2 * (g->size / l2cov + 1) * 8 / cs + 2) * fsb + 64 * 1024;
    }
    a = file_alloc (img);
    if (a > data + meta) {
      fprintf (stderr, "FAIL %s: %" PRIu64 " bytes allocated for %" PRIu64
               " of data (+%" PRIu64 " metadata allowed)\n", g->name, a,
               data, meta);
      failures++;
    }
    if ((r = sh_rc ("qemu-img check -q %s", img)) != 0) {
      fprintf (stderr, "FAIL %s: qemu-img check exit %d after wipe\n",
               g->name, r);
      failures++;
    }
    free (buf);
  }
  close (mfd);
  printf ("ok %s (%lds)\n", g->name, (long) (time (NULL) - t0));
  fflush (stdout);
}

/* ---- resize, refusals ---- */

static void
resize_test (void)
{
  static const struct geom g = { "resize", "cluster_size=512", 1 << 20,
                                 512, false, 1, false, false, false,
                                 false, false };
  static const struct geom g2 = { "resize", "cluster_size=512", 5 << 20,
                                  512, false, 1, false, false, false,
                                  false, false };
  char sub[300], img[400], model[400];
  struct vd_image *im;
  int mfd, r;

  snprintf (sub, sizeof sub, "%s/resize", dir);
  snprintf (img, sizeof img, "%s/img.qcow2", sub);
  snprintf (model, sizeof model, "%s/model.raw", sub);
  make_image (&g, sub);
  sh ("cd %s && qemu-img convert -O raw img.qcow2 model.raw", sub);
  mfd = open (model, O_RDWR);
  REQUIRE (mfd >= 0);
  im = vd_image_open (img, VD_OPEN_RDWR);
  REQUIRE (im);
  random_ops (im, mfd, &g, 5, 40, "resize");
  /* 1 MiB has 32 L1 entries of 32 KiB (one 512-byte cluster holds 64):
   * 5 MiB needs a bigger L1 table. */
  REQUIRE (vd_image_resize (im, 5 << 20) == 0);
  REQUIRE (ftruncate (mfd, 5 << 20) == 0);
  CHECK (vd_image_size (im) == 5 << 20);
  check_read (im, mfd, 0, 5 << 20, "resize");
  random_ops (im, mfd, &g2, 6, 80, "resize");
  vd_image_close (im);
  if ((r = sh_rc ("qemu-img check -q %s", img)) != 0) {
    fprintf (stderr, "FAIL resize: qemu-img check exit %d\n", r);
    failures++;
  }
  if (sh_rc ("qemu-img compare -q -f qcow2 -F raw %s %s", img, model) != 0) {
    fprintf (stderr, "FAIL resize: image differs from the model\n");
    failures++;
  }
  /* (qemu-img convert -l shows a snapshot at the image's size now; its
   * own size is still 1 MiB, as our reader shows.) */
  check_snapshots (&g, sub, "after resize");
  im = vd_image_open (img, 0);
  REQUIRE (im);
  {
    struct vd_image *sn = vd_image_open_snapshot (im, "s0");
    CHECK (sn && vd_image_size (sn) == 1 << 20);
    vd_image_close (sn);
  }
  vd_image_close (im);
  close (mfd);
  /* Growing over a longer backing file: the new part reads as zeros. */
  sh ("cd %s && qemu-img create -q -f qcow2 bigbase.qcow2 4M && "
      "qemu-io -c 'write -P 0x77 0 4M' bigbase.qcow2 >/dev/null && "
      "qemu-img create -q -f qcow2 -b bigbase.qcow2 -F qcow2 small.qcow2 1M "
      "&& qemu-img create -q -f qcow2 -o compat=0.10 -b bigbase.qcow2 "
      "-F qcow2 small2.qcow2 1M", sub);
  {
    const char *names[] = { "small.qcow2", "small2.qcow2" };
    int n;

    for (n = 0; n < 2; n++) {
      char p[500];
      uint8_t *b = malloc (3 << 20);

      snprintf (p, sizeof p, "%s/%s", sub, names[n]);
      im = vd_image_open (p, VD_OPEN_RDWR);
      REQUIRE (im && b);
      REQUIRE (vd_image_resize (im, 3 << 20) == 0);
      REQUIRE (vd_image_pread (im, b, 3 << 20, 0) == 0);
      CHECK (b[0] == 0x77 && b[(1 << 20) - 1] == 0x77);
      CHECK (b[1 << 20] == 0 && vd_is_zero (b + (1 << 20), 2 << 20));
      vd_image_close (im);
      CHECK (sh_rc ("qemu-img check -q %s", p) == 0);
      CHECK (sh_rc ("qemu-img info %s | grep -q 'virtual size: 3 MiB'", p)
             == 0);
      CHECK (sh_rc ("qemu-io -c 'read -P 0 1M 2M' -c 'read -P 0x77 0 1M' %s "
                    "| grep -q Pattern", p) != 0);
      free (b);
    }
  }
  printf ("ok resize\n");
}

/* Rounds of writing and snapshotting (qemu-img between our opens):
 * clusters and tables shared by several snapshots (refcounts above 2),
 * a snapshot deleted in between, a small writer cache. */
static void
rounds_test (void)
{
  static const struct geom g = { "rounds", "cluster_size=4096", 6 << 20,
                                 4096, true, 0, false, false, false,
                                 false, false };
  char sub[300], img[400], model[400];
  int round, i, r;

  snprintf (sub, sizeof sub, "%s/rounds", dir);
  snprintf (img, sizeof img, "%s/img.qcow2", sub);
  snprintf (model, sizeof model, "%s/model.raw", sub);
  make_image (&g, sub);
  sh ("cd %s && qemu-img convert -O raw img.qcow2 model.raw", sub);
  for (round = 0; round < 6; round++) {
    struct vd_image *im;
    int mfd = open (model, O_RDWR);

    sh ("cd %s && qemu-img snapshot -c r%d img.qcow2 && "
        "cp model.raw r%d.raw", sub, round, round);
    if (round == 3)
      sh ("cd %s && qemu-img snapshot -d r1 img.qcow2", sub);
    im = vd_image_open (img, VD_OPEN_RDWR);
    REQUIRE (im && mfd >= 0);
    random_ops (im, mfd, &g, 500 + round, reps (60, 32), "rounds");
    vd_image_close (im);
    close (mfd);
    if ((r = sh_rc ("qemu-img check -q %s", img)) != 0) {
      fprintf (stderr, "FAIL rounds %d: qemu-img check exit %d\n", round, r);
      failures++;
    }
    if (sh_rc ("qemu-img compare -q -f qcow2 -F raw %s %s", img, model)
        != 0) {
      fprintf (stderr, "FAIL rounds %d: image differs from the model\n",
               round);
      failures++;
    }
    for (i = 0; i <= round; i++)
      if (i != 1 || round < 3)
        if (sh_rc ("cd %s && qemu-img convert -l snapshot.name=r%d -O raw "
                   "img.qcow2 now.raw && cmp -s now.raw r%d.raw", sub, i, i)
            != 0) {
          fprintf (stderr, "FAIL rounds %d: snapshot r%d changed\n", round,
                   i);
          failures++;
        }
  }
  printf ("ok rounds\n");
}

/* Readers on three threads while a fourth writes: each 64 KiB region is
 * always written whole with one byte value (its version), so a read of a
 * region must see one value throughout, never a mix (the writer's
 * tables, borrowed by readers, are never seen half changed). */
#define NREG 64
static struct vd_image *conc_img;
static int conc_stop;                   /* atomic */

static void *
conc_reader (void *arg)
{
  uint64_t s = (uintptr_t) arg * 7919 + 1;
  uint8_t *b = malloc (65536);
  long bad = 0;

  while (!__atomic_load_n (&conc_stop, __ATOMIC_RELAXED)) {
    uint64_t reg = rnd (&s) % NREG, i;

    if (vd_image_pread (conc_img, b, 65536, reg * 65536) != 0) {
      bad++;
      break;
    }
    for (i = 1; i < 65536; i++)
      if (b[i] != b[0]) {
        bad++;
        break;
      }
  }
  free (b);
  return (void *) bad;
}

static void
concurrency_test (void)
{
  char img[400];
  pthread_t th[3];
  uint8_t *b = malloc (65536);
  uint64_t s = 5;
  long bad = 0;
  int i;

  sh ("cd %s && qemu-img create -q -f qcow2 -o cluster_size=4096 "
      "conc.qcow2 4M && qemu-img snapshot -c s conc.qcow2", dir);
  snprintf (img, sizeof img, "%s/conc.qcow2", dir);
  conc_img = vd_image_open (img, VD_OPEN_RDWR);
  REQUIRE (conc_img && b);
  for (i = 0; i < 3; i++)
    REQUIRE (pthread_create (&th[i], NULL, conc_reader,
                             (void *) (uintptr_t) i) == 0);
  for (i = 0; i < reps (3000, 1000); i++) {
    uint64_t reg = rnd (&s) % NREG;

    memset (b, i % 3 == 0 ? 0 : 1 + i % 255, 65536);
    REQUIRE (vd_image_pwrite (conc_img, b, 65536, reg * 65536) == 0);
    if (i % 100 == 0)
      REQUIRE (vd_image_flush (conc_img) == 0);
  }
  __atomic_store_n (&conc_stop, 1, __ATOMIC_RELAXED);
  for (i = 0; i < 3; i++) {
    void *r;
    pthread_join (th[i], &r);
    bad += (long) r;
  }
  vd_image_close (conc_img);
  CHECK (bad == 0);
  CHECK (sh_rc ("qemu-img check -q %s", img) == 0);
  free (b);
  printf ("ok concurrency\n");
}

/* Images we refuse to write: nothing changes in them. */
static void
refusal_test (void)
{
  struct vd_image *im;

  sh ("cd %s && qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 "
      "4M && qemu-io -c 'write -P 1 0 64k' lazy.qcow2 >/dev/null", dir);
  {
    /* A clean image with lazy refcounts: written with exact refcounts. */
    char p[400];
    uint8_t b[512];
    int r;

    snprintf (p, sizeof p, "%s/lazy.qcow2", dir);
    im = vd_image_open (p, VD_OPEN_RDWR);
    REQUIRE (im);
    memset (b, 7, sizeof b);
    REQUIRE (vd_image_pwrite (im, b, sizeof b, 1 << 20) == 0);
    vd_image_close (im);
    r = sh_rc ("qemu-img check -q %s", p);
    CHECK (r == 0);
    /* The dirty bit (incompatible bit 0) and the corrupt bit (1). */
    sh ("printf '\\000\\000\\000\\000\\000\\000\\000\\001' | "
        "dd of=%s bs=1 seek=72 conv=notrunc status=none", p);
    errno = 0;
    im = vd_image_open (p, VD_OPEN_RDWR);
    CHECK (im == NULL && errno == ENOTSUP);
    im = vd_image_open (p, 0);
    CHECK (im != NULL);
    vd_image_close (im);
    sh ("printf '\\000\\000\\000\\000\\000\\000\\000\\002' | "
        "dd of=%s bs=1 seek=72 conv=notrunc status=none", p);
    errno = 0;
    im = vd_image_open (p, VD_OPEN_RDWR);
    CHECK (im == NULL && errno == EIO);
  }
  printf ("ok refusals\n");
}

/* ---- persistent dirty bitmaps ---- */

static uint64_t
be (const uint8_t *p, int n)
{
  uint64_t v = 0;
  while (n-- > 0)
    v = (v << 8) | *p++;
  return v;
}

/* The bits of bitmap name in img (malloc'd, one byte per granule), its
 * flags in *flags; NULL when not found. */
static uint8_t *
read_bitmap (const char *img, const char *name, uint64_t size,
             uint32_t *flags)
{
  uint8_t hdr[65536], *dir, *out = NULL;
  uint32_t hlen, cbits;
  uint64_t pos, doff = 0, dsize = 0, i, nbits;
  int fd = open (img, O_RDONLY);

  REQUIRE (fd >= 0);
  REQUIRE (pread (fd, hdr, sizeof hdr, 0) > 104);
  cbits = be (hdr + 20, 4);
  hlen = be (hdr + 100, 4);
  for (pos = hlen; pos + 8 <= sizeof hdr;) {
    uint32_t t = be (hdr + pos, 4), l = be (hdr + pos + 4, 4);
    if (t == 0)
      break;
    if (t == 0x23852875) {
      dsize = be (hdr + pos + 16, 8);
      doff = be (hdr + pos + 24, 8);
    }
    pos += 8 + ROUND_UP (l, 8);
  }
  REQUIRE (dsize > 0);
  dir = malloc (dsize);
  REQUIRE (dir && pread (fd, dir, dsize, doff) == (ssize_t) dsize);
  for (pos = 0; pos + 24 <= dsize;) {
    uint64_t toff = be (dir + pos, 8);
    uint32_t tsize = be (dir + pos + 8, 4), gb = dir[pos + 17];
    uint32_t ns = be (dir + pos + 18, 2), xs = be (dir + pos + 20, 4);

    if (ns == strlen (name)
        && memcmp (dir + pos + 24 + xs, name, ns) == 0) {
      uint64_t cs = 1ULL << cbits, *tab = malloc (tsize * 8);
      uint8_t *c = malloc (cs);

      *flags = be (dir + pos + 12, 4);
      nbits = DIV_ROUND_UP (size, 1ULL << gb);
      out = calloc (nbits, 1);
      REQUIRE (tab && c && out);
      REQUIRE (pread (fd, tab, tsize * 8, toff) == (ssize_t) (tsize * 8));
      for (i = 0; i < nbits; i++) {
        uint64_t j = i / (cs * 8), e = be ((uint8_t *) &tab[j], 8);
        uint64_t off = e & 0x00fffffffffffe00ULL, k = i % (cs * 8);
        if (off == 0)
          out[i] = e & 1;
        else {
          REQUIRE (pread (fd, c, 1, off + k / 8) == 1);
          out[i] = (c[0] >> (k % 8)) & 1;
        }
      }
      free (tab);
      free (c);
      break;
    }
    pos += ROUND_UP (24 + xs + ns, 8);
  }
  free (dir);
  close (fd);
  return out;
}

static void
bitmap_test (void)
{
  char sub[300], img[400], model[400];
  uint8_t *b0, *d0, *b1, *d1, *buf = calloc (1, 200000);
  uint32_t f;
  uint64_t nb = (64 << 20) / 65536, i, s = 99;
  uint8_t *expect = calloc (nb, 1);
  struct vd_image *im;
  int mfd, r, bad = 0;

  snprintf (sub, sizeof sub, "%s/bitmap", dir);
  snprintf (img, sizeof img, "%s/img.qcow2", sub);
  snprintf (model, sizeof model, "%s/model.raw", sub);
  sh ("mkdir -p %s && cd %s && qemu-img create -q -f qcow2 img.qcow2 64M && "
      "qemu-img bitmap --add -g 65536 img.qcow2 auto0 && "
      "qemu-img bitmap --add -g 65536 --disable img.qcow2 off1 && "
      "qemu-io -c 'write -P 3 1M 100k' -c 'write -P 4 40M 1M' img.qcow2 "
      ">/dev/null && qemu-img convert -O raw img.qcow2 model.raw", sub, sub);
  b0 = read_bitmap (img, "auto0", 64 << 20, &f);
  d0 = read_bitmap (img, "off1", 64 << 20, &f);
  REQUIRE (b0 && d0 && buf && expect);
  CHECK (b0[16] == 1 && b0[17] == 1 && b0[640] == 1 && b0[0] == 0);
  memcpy (expect, b0, nb);
  mfd = open (model, O_RDWR);
  im = vd_image_open (img, VD_OPEN_RDWR);
  REQUIRE (im && mfd >= 0);
  for (i = 0; i < 60; i++) {
    uint64_t off = rnd (&s) % (60 << 20), len = 1 + rnd (&s) % 200000, k;

    memset (buf, (int) i, len);
    if (i % 3 == 0)
      memset (buf, 0, len);
    if (i % 5 == 4)
      REQUIRE (vd_image_zero (im, len, off) == 0);
    else
      REQUIRE (vd_image_pwrite (im, buf, len, off) == 0);
    if (i % 5 == 4)
      memset (buf, 0, len);
    model_write (mfd, buf, len, off);
    for (k = off / 65536; k <= (off + len - 1) / 65536; k++)
      expect[k] = 1;
  }
  vd_image_close (im);
  close (mfd);
  if ((r = sh_rc ("qemu-img check -q %s", img)) != 0) {
    fprintf (stderr, "FAIL bitmap: qemu-img check exit %d\n", r);
    failures++;
  }
  CHECK (sh_rc ("qemu-img compare -q -f qcow2 -F raw %s %s", img, model)
         == 0);
  CHECK (sh_rc ("qemu-img info %s | grep -q in-use", img) != 0);
  b1 = read_bitmap (img, "auto0", 64 << 20, &f);
  REQUIRE (b1);
  CHECK (f == 2);                       /* auto, no longer in_use */
  for (i = 0; i < nb; i++)
    bad += b1[i] != expect[i];
  if (bad) {
    fprintf (stderr, "FAIL bitmap: %d granules wrong\n", bad);
    failures++;
  }
  d1 = read_bitmap (img, "off1", 64 << 20, &f);
  CHECK (d1 && memcmp (d0, d1, nb) == 0 && f == 0);
  /* qemu agrees: its own check of the bitmaps, and a merge. */
  CHECK (sh_rc ("cd %s && qemu-img bitmap --add img.qcow2 copy && "
                "qemu-img bitmap --merge auto0 img.qcow2 copy && "
                "qemu-img check -q img.qcow2", sub) == 0);
  free (b0); free (b1); free (d0); free (d1); free (buf); free (expect);
  printf ("ok bitmap\n");
}

/* ---- kill -9 ---- */

static void
child_loop (const char *img, const struct geom *g, uint64_t seed, int pfd,
            uint8_t pattern)
{
  struct vd_image *im = vd_image_open (img, VD_OPEN_RDWR);
  uint8_t *buf = malloc (1 << 20);
  uint64_t s = seed;
  int i;

  if (!im || !buf)
    _exit (1);
  /* The flushed region: [0, 1 MiB) = pattern, durable before we say so. */
  memset (buf, pattern, 1 << 20);
  if (vd_image_pwrite (im, buf, 1 << 20, 0) != 0 || vd_image_flush (im) != 0)
    _exit (1);
  if (write (pfd, "x", 1) != 1)
    _exit (1);
  for (i = 0;; i++) {
    uint64_t off = (1 << 20) + rnd (&s) % (g->size - (2 << 20));
    uint64_t len = 1 + rnd (&s) % (1 << 20);

    if (rnd (&s) % 4 == 0) {
      off &= ~(uint64_t) (g->cluster - 1);
      vd_image_zero (im, len, off);
    }
    else {
      random_buf (buf, len, &s, g->cluster);
      vd_image_pwrite (im, buf, len, off);
    }
    if (i % 7 == 0)
      vd_image_flush (im);
    if (i % 40 == 39)
      vd_image_zero (im, g->size - (1 << 20), 1 << 20);
  }
}

static void
kill_test (const struct geom *gp, int nkills)
{
  const struct geom g = *gp;
  char sub[300], img[400];
  uint64_t s = 42;
  int k, i, bad = 0, leaks = 0;

  snprintf (sub, sizeof sub, "%s/%s", dir, g.name);
  snprintf (img, sizeof img, "%s/img.qcow2", sub);
  make_image (&g, sub);
  for (k = 0; k < nkills; k++) {
    int p[2], st, r;
    pid_t pid;
    char c;
    struct timespec ts;
    uint8_t pattern = 0x10 + k, *buf;
    struct vd_image *im;

    REQUIRE (pipe (p) == 0);
    pid = fork ();
    REQUIRE (pid >= 0);
    if (pid == 0) {
      close (p[0]);
      child_loop (img, &g, 1000 + k, p[1], pattern);
      _exit (0);
    }
    close (p[1]);
    REQUIRE (read (p[0], &c, 1) == 1);
    close (p[0]);
    ts.tv_sec = 0;
    ts.tv_nsec = (rnd (&s) % 150) * 1000000L;
    nanosleep (&ts, NULL);
    kill (pid, SIGKILL);
    REQUIRE (waitpid (pid, &st, 0) == pid);
    r = sh_rc ("qemu-img check -q %s >/dev/null 2>&1", img);
    if (r != 0 && r != 3) {
      fprintf (stderr, "FAIL kill %d: qemu-img check exit %d\n", k, r);
      sh_rc ("qemu-img check %s 2>&1 | head -20", img);
      bad++;
    }
    leaks += r == 3;
    check_snapshots (&g, sub, "after kill");
    im = vd_image_open (img, 0);
    buf = malloc (1 << 20);
    REQUIRE (im && buf);
    REQUIRE (vd_image_pread (im, buf, 1 << 20, 0) == 0);
    for (i = 0; i < (1 << 20) && buf[i] == pattern; i++)
      ;
    if (i != (1 << 20)) {
      fprintf (stderr, "FAIL kill %d: flushed data lost\n", k);
      bad++;
    }
    free (buf);
    vd_image_close (im);
    if (r == 3)
      sh ("qemu-img check -q -r leaks %s >/dev/null 2>&1", img);
  }
  failures += bad;
  printf ("ok %s: %d kills, %d left leaks, %d bad\n", g.name, nkills, leaks,
          bad);
}

int
main (int argc, char **argv)
{
  size_t i;
  const char *only = argc > 1 ? argv[1] : NULL;

  if (system ("qemu-img --version >/dev/null 2>&1") != 0 ||
      system ("qemu-io --version >/dev/null 2>&1") != 0) {
    printf ("SKIP: qemu-img/qemu-io not installed\n");
    return 77;
  }
  if (access ("/dev/shm", W_OK) == 0)
    strcpy (dir, "/dev/shm/vd-test-qcow2w-XXXXXX");
  REQUIRE (mkdtemp (dir) != NULL);
  for (i = 0; i < sizeof geoms / sizeof geoms[0]; i++)
    if (!only || strcmp (only, geoms[i].name) == 0)
      run_geom (&geoms[i], i);
  if (!only || strcmp (only, "resize") == 0)
    resize_test ();
  if (!only || strcmp (only, "refuse") == 0)
    refusal_test ();
  if (!only || strcmp (only, "concurrency") == 0) {
    qcow2_wcache_bytes = 0;
    concurrency_test ();
    qcow2_wcache_bytes = 16 << 20;
  }
  if (!only || strcmp (only, "rounds") == 0) {
    qcow2_wcache_bytes = 0;
    rounds_test ();
    qcow2_wcache_bytes = 16 << 20;
  }
  if (!only || strcmp (only, "bitmap") == 0)
    bitmap_test ();
  if (!only || strcmp (only, "kill") == 0) {
    static const struct geom k1 = { "kill", "cluster_size=65536", 16 << 20,
                                    65536, false, 1, false, false, false,
                                    false, false };
    kill_test (&k1, reps (NKILLS, 5));
  }
  /* The writer's cache at its minimum (8 tables): write-backs forced by
   * cache pressure in the middle of operations, killed too. */
  qcow2_wcache_bytes = 0;
  for (i = 0; i < sizeof geoms / sizeof geoms[0]; i++)
    if ((!only || strcmp (only, "small") == 0) && geoms[i].small_cache_too) {
      char name[64];
      struct geom g = geoms[i];

      snprintf (name, sizeof name, "%s-small-cache", g.name);
      g.name = name;
      run_geom (&g, 100 + i);
    }
  if (!only || strcmp (only, "small") == 0) {
    static const struct geom k2 = { "kill-small-cache",
                                    "cluster_size=4096,refcount_bits=8",
                                    8 << 20, 4096, true, 1, false, false,
                                    false, false, false };
    kill_test (&k2, reps (10, 3));
  }
  if (failures == 0 || !getenv ("KEEP"))
    sh ("rm -rf %s", dir);
  else
    fprintf (stderr, "kept %s\n", dir);
  printf ("%d failures\n", failures);
  return failures ? 1 : 0;
}
