/* Unit test of the QED writer against qemu-img.
 *
 * For cluster sizes 4 KiB and 64 KiB, with and without a raw backing file
 * (larger than the image, with a hole), an image made by
 * `qemu-img create -f qed` gets random writes (aligned and not, random
 * bytes and blocks of zeros), zero ranges and flushes through
 * vd_image_pwrite/zero/flush, and a model (a raw file) the same bytes;
 * the image is read back with vd_image_pread, and after close
 * `qemu-img check` must exit 0 (no leaks) and `qemu-img compare` find it
 * equal to the model.  Then it grows (the part that was past the end
 * reads as zeros, also where the backing file has data) and is written
 * again, and at last zeroed whole: little left allocated on disk.
 *
 * Then: the need-check bit is set on disk while allocating writes are
 * unflushed and cleared by flush; an image left with the bit and an L2
 * entry past the end of the file is repaired at open for writing; an
 * unknown feature bit is refused (ENOTSUP); growth beyond what the
 * tables map is EFBIG.  And 20 times a writer process is killed (SIGKILL)
 * at a random point (4 KiB clusters with a backing file, 64 KiB without): `qemu-img check` must exit 0 or 3 (leaks), never 2,
 * data flushed before stays, and our reader and qemu read the same.
 *
 * Needs qemu-img and qemu-io: exit 77 (skip) without them.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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

static int failures;
static char dir[] = "/tmp/vd-test-qed-write-XXXXXX";
static char img_path[256], model_path[256];

static int
sh_rc (const char *fmt, ...)
{
  char cmd[4096];
  va_list ap;
  int r;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  r = system (cmd);
  if (r == -1 || !WIFEXITED (r))
    return -1;
  return WEXITSTATUS (r);
}

#define sh(...) \
  do { \
    if (sh_rc (__VA_ARGS__) != 0) { \
      fprintf (stderr, "FAIL %s:%d: command failed\n", __FILE__, __LINE__); \
      exit (1); \
    } \
  } while (0)

static uint64_t
rnd (uint64_t *s)
{
  /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545f4914f6cdd1dULL;
}

/* The expected disk, in memory. */
static uint8_t *model;
static uint64_t msize;

static void
model_load (const char *path, uint64_t size)
{
  int fd;

  model = realloc (model, size);
  REQUIRE (model);
  memset (model, 0, size);
  msize = size;
  if (!path)
    return;
  fd = open (path, O_RDONLY);
  REQUIRE (fd >= 0);
  REQUIRE (pread (fd, model, size, 0) >= 0);   /* short: zeros beyond */
  close (fd);
}

static void
model_save (void)
{
  int fd = open (model_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

  REQUIRE (fd >= 0);
  REQUIRE (pwrite (fd, model, msize, 0) == (ssize_t) msize);
  close (fd);
}

/* Read the whole image back and compare with the model. */
static void
verify_read (struct vd_image *img)
{
  size_t bs = 1 << 20;
  uint8_t *buf = malloc (bs);
  uint64_t off, n;

  REQUIRE (buf);
  REQUIRE (vd_image_size (img) == msize);
  for (off = 0; off < msize; off += n) {
    n = MIN (bs, msize - off);
    REQUIRE (vd_image_pread (img, buf, n, off) == 0);
    if (memcmp (buf, model + off, n) != 0) {
      uint64_t i = 0;
      while (buf[i] == model[off + i])
        i++;
      fprintf (stderr, "FAIL: %s differs at %" PRIu64 "\n", img_path,
               off + i);
      exit (1);
    }
  }
  /* The extent map tiles the disk; zero extents are zeros, data extents
   * with an fd hold the bytes at phys. */
  for (off = 0; off < msize; off += n) {
    struct vd_extent e;

    REQUIRE (vd_image_block_status (img, off, msize - off, &e) == 0);
    REQUIRE (e.offset == off && e.length > 0 && e.length <= msize - off);
    n = MIN (e.length, bs);
    if (e.type != VD_EXTENT_DATA)
      memset (buf, 0, n);
    else if (e.fd >= 0) {
      ssize_t r = pread (e.fd, buf, n, e.phys);
      REQUIRE (r >= 0);
      memset (buf + r, 0, n - r);
    }
    else
      continue;
    if (memcmp (buf, model + off, n) != 0) {
      fprintf (stderr, "FAIL: %s: extent %" PRIu64 "+%" PRIu64 " type %d "
               "differs\n", img_path, off, n, (int) e.type);
      exit (1);
    }
  }
  free (buf);
}

/* After close: qemu-img check clean (or only leaks when leaks_ok),
 * qemu-img compare equal. */
static void
verify_qemu_leaks (bool leaks_ok)
{
  int rc;

  model_save ();
  rc = sh_rc ("qemu-img check -q %s >/dev/null 2>&1", img_path);
  if (rc != 0 && !(leaks_ok && rc == 3)) {
    fprintf (stderr, "FAIL: qemu-img check %s: exit %d\n", img_path, rc);
    sh_rc ("qemu-img check %s", img_path);
    failures++;
  }
  rc = sh_rc ("qemu-img compare -q -f qed -F raw %s %s", img_path,
              model_path);
  if (rc != 0) {
    fprintf (stderr, "FAIL: qemu-img compare %s: exit %d\n", img_path, rc);
    sh_rc ("qemu-img compare -f qed -F raw %s %s", img_path, model_path);
    failures++;
  }
}

static void
verify_qemu (void)
{
  verify_qemu_leaks (false);
}

static uint64_t
field64 (const char *path, uint64_t off)
{
  uint64_t v = 0;
  int fd = open (path, O_RDONLY);

  REQUIRE (fd >= 0);
  REQUIRE (pread (fd, &v, 8, off) == 8);
  close (fd);
  return v;                   /* little-endian host */
}

static void
set_field64 (const char *path, uint64_t off, uint64_t v)
{
  int fd = open (path, O_WRONLY);

  REQUIRE (fd >= 0);
  REQUIRE (pwrite (fd, &v, 8, off) == 8);
  close (fd);
}

#define FEATURES_OFF 16
#define NEED_CHECK 0x2

/* One random operation on img and the model, within [lo, msize). */
static void
random_op (struct vd_image *img, uint64_t *s, uint64_t cs, uint64_t lo,
           uint8_t *buf, size_t bufsize)
{
  unsigned op = rnd (s) % 40;     /* 39: flush (fdatasync: rare) */
  uint64_t off = lo + rnd (s) % (msize - lo);
  uint64_t len;
  size_t i;

  if (rnd (s) & 1)
    off &= ~(cs - 1);
  if (off < lo)
    off = lo;
  switch (rnd (s) % 3) {
  case 0: len = 1 + rnd (s) % 4096; break;
  case 1: len = 1 + rnd (s) % (3 * cs); break;
  default: len = 1 + rnd (s) % bufsize; break;
  }
  if (rnd (s) & 1)
    len = (len + cs - 1) & ~(cs - 1);
  len = MIN (MIN (len, bufsize), msize - off);

  if (op < 39)
    op %= 9;
  if (op < 5 || op == 7) {
    if (op == 7)
      memset (buf, 0, len);
    else {
      for (i = 0; i < len; i += 8) {
        uint64_t v = rnd (s);
        memcpy (buf + i, &v, MIN (8, len - i));
      }
      /* Blocks of zeros inside data. */
      if (op == 4)
        for (i = 0; i < len; i += 2 * cs)
          memset (buf + i, 0, MIN (cs, len - i));
    }
    REQUIRE (vd_image_pwrite (img, buf, len, off) == 0);
    memcpy (model + off, buf, len);
  }
  else if (op < 9) {
    REQUIRE (vd_image_zero (img, len, off) == 0);
    memset (model + off, 0, len);
  }
  else
    REQUIRE (vd_image_flush (img) == 0);
}

static void
run_ops (struct vd_image *img, uint64_t seed, int nops, uint64_t cs)
{
  size_t bufsize = 512 << 10;
  uint8_t *buf = malloc (bufsize);
  uint64_t s = seed;
  int i;

  REQUIRE (buf);
  for (i = 0; i < nops; i++) {
    random_op (img, &s, cs, 0, buf, bufsize);
    if (i % 50 == 49) {
      /* Spot check a range. */
      uint64_t off = rnd (&s) % msize, n = MIN (bufsize, msize - off);
      REQUIRE (vd_image_pread (img, buf, n, off) == 0);
      REQUIRE (memcmp (buf, model + off, n) == 0);
    }
  }
  free (buf);
}

static struct vd_image *
open_rw (void)
{
  struct vd_image *img = vd_image_open (img_path, VD_OPEN_RDWR);

  REQUIRE (img != NULL);
  REQUIRE (strcmp (vd_image_format_name (img), "qed") == 0);
  REQUIRE (vd_image_writable (img));
  return img;
}

/* Write, grow, zero one image of cluster size cs. */
static void
test_config (unsigned cs, bool backing)
{
  const uint64_t size = (16 << 20) + 1536;     /* a partial last cluster */
  const uint64_t grown = size + (10 << 20) + 512;  /* 4 KiB: one more
                                                      L2 table's span */
  struct vd_image *img;
  struct stat st;

  fprintf (stderr, "cluster size %u, %s backing file\n", cs,
           backing ? "with" : "without");
  snprintf (img_path, sizeof img_path, "%s/img-%u-%d.qed", dir, cs, backing);
  snprintf (model_path, sizeof model_path, "%s/model.raw", dir);
  if (backing) {
    sh ("qemu-img create -q -f qed -o cluster_size=%u,backing_file=base.raw,"
        "backing_fmt=raw %s %" PRIu64, cs, img_path, size);
    model_load ("base.raw", size);
  }
  else {
    sh ("qemu-img create -q -f qed -o cluster_size=%u %s %" PRIu64, cs,
        img_path, size);
    model_load (NULL, size);
  }

  img = open_rw ();
  CHECK (img->zero_align == cs);
  verify_read (img);
  run_ops (img, 0x1234 + cs + backing, 300, cs);
  verify_read (img);
  vd_image_close (img);
  CHECK ((field64 (img_path, FEATURES_OFF) & NEED_CHECK) == 0);
  verify_qemu ();

  /* Grow: the backing file (20 MiB) reaches past the old end, and
   * the old last cluster holds its bytes past the old end. */
  img = open_rw ();
  verify_read (img);
  REQUIRE (vd_image_resize (img, grown) == 0);
  REQUIRE (vd_image_size (img) == grown);
  model = realloc (model, grown);
  REQUIRE (model);
  memset (model + msize, 0, grown - msize);
  msize = grown;
  verify_read (img);
  run_ops (img, 0x5678 + cs + backing, 150, cs);
  verify_read (img);
  vd_image_close (img);
  verify_qemu ();
  sh ("qemu-img info %s | grep -q 'virtual size: .*(%" PRIu64 " bytes)'",
      img_path, grown);

  /* Zero it whole: the data clusters are punched. */
  img = open_rw ();
  REQUIRE (vd_image_zero (img, grown, 0) == 0);
  memset (model, 0, msize);
  verify_read (img);
  vd_image_close (img);
  verify_qemu ();
  REQUIRE (stat (img_path, &st) == 0);
  /* Header, L1 and L2 tables (4 KiB clusters: 16 KiB each) and at most
   * bits of the last cluster. */
  if ((uint64_t) st.st_blocks * 512 > 512 * 1024) {
    fprintf (stderr, "FAIL: %s: %" PRIu64 " bytes allocated after zeroing\n",
             img_path, (uint64_t) st.st_blocks * 512);
    failures++;
  }

  /* Nothing reads as data: punched clusters are zero extents. */
  img = vd_image_open (img_path, 0);
  REQUIRE (img);
  {
    uint64_t allocated = 1;
    CHECK (vd_image_allocated (img, &allocated) == 0 && allocated == 0);
  }
  vd_image_close (img);

  /* Written again after that (O_TRUNC, then the copy): punched clusters
   * are written in place. */
  img = open_rw ();
  run_ops (img, 0x9abc + cs + backing, 100, cs);
  verify_read (img);
  vd_image_close (img);
  verify_qemu ();
}

/* The need-check bit, the repair at open, refusals. */
static void
test_flags (void)
{
  struct vd_image *img;
  uint64_t l1_off, l2_off, l1e;
  uint8_t buf[8192];

  fprintf (stderr, "need-check, repair, refusals\n");
  snprintf (img_path, sizeof img_path, "%s/flags.qed", dir);
  sh ("qemu-img create -q -f qed -o cluster_size=4096 %s 16M", img_path);
  model_load (NULL, 16 << 20);

  img = open_rw ();
  memset (buf, 0x42, sizeof buf);
  REQUIRE (vd_image_pwrite (img, buf, sizeof buf, 0) == 0);
  memset (model, 0x42, sizeof buf);
  CHECK (field64 (img_path, FEATURES_OFF) & NEED_CHECK);
  REQUIRE (vd_image_flush (img) == 0);
  CHECK ((field64 (img_path, FEATURES_OFF) & NEED_CHECK) == 0);
  /* Overwriting allocated clusters changes no metadata. */
  REQUIRE (vd_image_pwrite (img, buf, 100, 50) == 0);
  memcpy (model + 50, buf, 100);
  CHECK ((field64 (img_path, FEATURES_OFF) & NEED_CHECK) == 0);
  /* Growth: EFBIG past what the tables map (4 KiB clusters, tables of 4
   * clusters: 2^11 * 2^11 * 2^12 bytes), EINVAL not a multiple of 512. */
  errno = 0;
  CHECK (vd_image_resize (img, ((uint64_t) 1 << 34) + 512) == -1
         && errno == EFBIG);
  errno = 0;
  CHECK (vd_image_resize (img, (16 << 20) + 100) == -1 && errno == EINVAL);
  CHECK (vd_image_size (img) == (16 << 20));
  vd_image_close (img);
  verify_qemu ();

  /* A crash left the bit and an L2 entry past the end of the file: the
   * open for writing clears it (cluster 1 reads as zeros again). */
  l1_off = field64 (img_path, 40);
  l2_off = field64 (img_path, l1_off);
  REQUIRE (l2_off != 0);
  l1e = field64 (img_path, l2_off + 8);
  REQUIRE (l1e > 1);
  set_field64 (img_path, l2_off + 8, (uint64_t) 1 << 30);
  set_field64 (img_path, FEATURES_OFF, NEED_CHECK);
  CHECK (sh_rc ("qemu-img check -q %s 2>/dev/null", img_path) == 2);
  img = open_rw ();
  CHECK ((field64 (img_path, FEATURES_OFF) & NEED_CHECK) == 0);
  CHECK (field64 (img_path, l2_off + 8) == 0);
  memset (model + 4096, 0, 4096);
  verify_read (img);
  vd_image_close (img);
  verify_qemu_leaks (true);  /* the old cluster 1 leaks: check says 3 */

  /* Unknown feature bits: refused. */
  set_field64 (img_path, FEATURES_OFF, 0x100);
  errno = 0;
  CHECK (vd_image_open (img_path, VD_OPEN_RDWR) == NULL && errno == ENOTSUP);
  set_field64 (img_path, FEATURES_OFF, 0);
  /* Unknown autoclear bits: cleared by a writer. */
  set_field64 (img_path, 32, 0x80);
  img = open_rw ();
  vd_image_close (img);
  CHECK (field64 (img_path, 32) == 0);
}

/* A writer killed at random points, ntrials times. */
static void
test_kill (uint64_t cs, bool backing, int ntrials)
{
  const uint64_t size = 16 << 20;
  uint64_t s = 0xfeed + cs;
  struct vd_image *img;
  int trial;

  fprintf (stderr, "SIGKILL loop, cluster size %" PRIu64 ", %s backing "
           "file\n", cs, backing ? "with" : "without");
  snprintf (img_path, sizeof img_path, "%s/kill-%" PRIu64 ".qed", dir, cs);
  sh ("qemu-img create -q -f qed -o cluster_size=%" PRIu64 "%s %s %" PRIu64,
      cs, backing ? ",backing_file=base.raw,backing_fmt=raw" : "",
      img_path, size);

  for (trial = 0; trial < ntrials; trial++) {
    int pfd[2], status, rc, k;
    char c;
    pid_t pid;

    REQUIRE (pipe (pfd) == 0);
    pid = fork ();
    REQUIRE (pid >= 0);
    if (pid == 0) {
      size_t bufsize = 256 << 10;
      uint8_t *buf = malloc (bufsize);
      uint64_t cs2 = trial & 1 ? 4096 : 65536;
      uint64_t t = 0x99 + trial;

      close (pfd[0]);
      img = vd_image_open (img_path, VD_OPEN_RDWR);
      if (!img || !buf)
        _exit (1);
      /* The first MiB: a pattern, flushed, before the parent may kill. */
      memset (buf, 0x70 + trial, 1 << 18);
      for (k = 0; k < 4; k++)
        if (vd_image_pwrite (img, buf, 1 << 18, (uint64_t) k << 18) < 0)
          _exit (1);
      if (vd_image_flush (img) < 0 || write (pfd[1], "x", 1) != 1)
        _exit (1);
      model = calloc (1, size);
      msize = size;
      if (!model)
        _exit (1);
      for (;;)
        random_op (img, &t, cs2, 2 << 20, buf, bufsize);
    }
    close (pfd[1]);
    REQUIRE (read (pfd[0], &c, 1) == 1);
    close (pfd[0]);
    usleep (rnd (&s) % 30000);
    kill (pid, SIGKILL);
    REQUIRE (waitpid (pid, &status, 0) == pid);
    REQUIRE (WIFSIGNALED (status));

    rc = sh_rc ("qemu-img check -q %s 2>/dev/null", img_path);
    if (rc != 0 && rc != 3) {
      fprintf (stderr, "FAIL: trial %d: qemu-img check exit %d\n", trial, rc);
      sh_rc ("qemu-img check %s", img_path);
      failures++;
      break;
    }
    /* The data flushed before the kill is there (our reader; qemu's
     * below, after the last trial). */
    img = vd_image_open (img_path, 0);
    REQUIRE (img);
    {
      uint8_t *b = malloc (1 << 20);
      uint64_t i;

      REQUIRE (b);
      REQUIRE (vd_image_pread (img, b, 1 << 20, 0) == 0);
      for (i = 0; i < (1 << 20) && b[i] == 0x70 + trial; i++)
        ;
      if (i < (1 << 20)) {
        fprintf (stderr, "FAIL: trial %d: flushed data lost\n", trial);
        failures++;
      }
      free (b);
    }
    vd_image_close (img);
  }
  CHECK (sh_rc ("qemu-io -r -c 'read -P %#x 0 1M' %s >/dev/null",
                0x70 + ntrials - 1, img_path) == 0);

  /* Repaired at open, then our reader and qemu read the same. */
  img = open_rw ();
  vd_image_close (img);
  CHECK ((field64 (img_path, FEATURES_OFF) & NEED_CHECK) == 0);
  {
    int rc = sh_rc ("qemu-img check -q %s 2>/dev/null", img_path);
    CHECK (rc == 0 || rc == 3);
  }
  img = vd_image_open (img_path, 0);
  REQUIRE (img);
  model_load (NULL, size);
  REQUIRE (vd_image_pread (img, model, size, 0) == 0);
  vd_image_close (img);
  snprintf (model_path, sizeof model_path, "%s/model.raw", dir);
  model_save ();
  CHECK (sh_rc ("qemu-img compare -q -f qed -F raw %s %s", img_path,
                model_path) == 0);
}

int
main (void)
{
  if (system ("qemu-img --version >/dev/null 2>&1") != 0 ||
      system ("qemu-io --version >/dev/null 2>&1") != 0) {
    printf ("SKIP: qemu-img/qemu-io not installed\n");
    return 77;
  }
  REQUIRE (mkdtemp (dir) != NULL);
  REQUIRE (chdir (dir) == 0);

  /* The backing file: 20 MiB, data with a hole at 4-6 MiB. */
  sh ("truncate -s 20M base.raw && "
      "head -c 4M /dev/urandom | dd of=base.raw conv=notrunc status=none && "
      "head -c 14M /dev/urandom | dd of=base.raw bs=1M seek=6 conv=notrunc "
      "  iflag=fullblock status=none");

  test_config (4096, false);
  test_config (4096, true);
  test_config (65536, false);
  test_config (65536, true);
  test_flags ();
  test_kill (4096, true, 10);
  test_kill (65536, false, 10);

  free (model);
  sh ("rm -rf %s", dir);
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return 1;
  }
  printf ("PASS\n");
  return 0;
}
