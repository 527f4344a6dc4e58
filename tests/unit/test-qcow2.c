/* Unit test of the qcow2 driver under the FUSE daemon's load: four
 * threads doing random reads and block_status on one image at once, with
 * the L2 cache shrunk to three tables so that eviction, pinning and
 * private copies all happen; every byte is checked against
 * `qemu-img convert -O raw`, and every DATA extent with an fd is checked
 * by reading its phys offset straight from that fd (what the daemon's
 * splice does).  The same again with VD_OPEN_LIVE (no L2 cache: every
 * lookup reads the metadata afresh).  Then a snapshot is opened from the
 * live image, its parent closed, and the snapshot read against
 * `qemu-img snapshot -a` on a copy.
 *
 * Bounded memory (issue 7): an image whose L1 table is over
 * QCOW2_L1_COPY_MAX keeps it on disk (no copy) and reads the same bytes
 * as qemu-img convert in its first, last and some middle MiB, including
 * a read across many L1 entries, and its allocated size is right.  An
 * image with 100 snapshots: opening each of them and listing them again
 * and again parses the snapshot table once (at open); with VD_OPEN_LIVE,
 * a snapshot made meanwhile shows up with exactly one more parse.
 *
 * Needs qemu-img and qemu-io: exit 77 (skip) without them.  Run it under
 * valgrind --tool=helgrind or built with -fsanitize=thread to check the
 * locking.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdformat.h"
#include "qcow2.h"
#include "test.h"

/* qcow2-snapshot.c's test hook. */
extern unsigned long qcow2_snapshot_table_parses;

#define NTHREADS 4
#define NOPS 1500

static char dir[] = "/tmp/vd-test-qcow2-XXXXXX";
static struct vd_image *img;
static const uint8_t *expect;
static uint64_t size;

static void
sh (const char *fmt, ...)
{
  char cmd[4096];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  if (system (cmd) != 0) {
    fprintf (stderr, "FAIL: %s\n", cmd);
    exit (1);
  }
}

static const uint8_t *
map_file (const char *name, uint64_t *len)
{
  char path[256];
  struct stat st;
  void *p;
  int fd;

  snprintf (path, sizeof path, "%s/%s", dir, name);
  fd = open (path, O_RDONLY);
  REQUIRE (fd >= 0);
  REQUIRE (fstat (fd, &st) == 0);
  *len = st.st_size;
  p = mmap (NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  REQUIRE (p != MAP_FAILED);
  close (fd);
  return p;
}

static uint64_t
rnd (uint64_t *state)
{
  /* xorshift64* */
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 0x2545f4914f6cdd1dULL;
}

static void *
worker (void *arg)
{
  uint64_t st = 0x9e3779b97f4a7c15ULL * ((uintptr_t) arg + 1);
  size_t bufsize = 1 << 20;
  uint8_t *buf = malloc (bufsize);
  int i;

  REQUIRE (buf);
  for (i = 0; i < NOPS; i++) {
    uint64_t off = rnd (&st) % size;
    uint64_t len = 1 + rnd (&st) % ((rnd (&st) & 1) ? 4096 : bufsize);
    struct vd_extent e;

    if (i % 3 == 0)
      off &= ~4095ULL;
    if (len > size - off)
      len = size - off;
    REQUIRE (vd_image_pread (img, buf, len, off) == 0);
    if (memcmp (buf, expect + off, len) != 0) {
      fprintf (stderr, "FAIL: bytes differ at %" PRIu64 "+%" PRIu64 "\n",
               off, len);
      exit (1);
    }

    REQUIRE (vd_image_block_status (img, off, size - off, &e) == 0);
    REQUIRE (e.offset == off && e.length > 0 && e.length <= size - off);
    len = e.length < bufsize ? e.length : bufsize;
    if (e.type == VD_EXTENT_DATA && e.fd >= 0) {
      ssize_t r = pread (e.fd, buf, len, e.phys);
      REQUIRE (r >= 0);
      if ((uint64_t) r < len)   /* tail past the end of file: zeros */
        memset (buf + r, 0, len - r);
      if (memcmp (buf, expect + off, len) != 0) {
        fprintf (stderr, "FAIL: extent %" PRIu64 "+%" PRIu64 " phys %"
                 PRIu64 " differs\n", off, e.length, e.phys);
        exit (1);
      }
    }
    else if (e.type != VD_EXTENT_DATA) {
      uint64_t j;
      for (j = 0; j < len; j++)
        REQUIRE (expect[off + j] == 0);
    }
  }
  free (buf);
  return NULL;
}

/* Compare n bytes at off of image im with file f of dir. */
static void
same_bytes (struct vd_image *im, const char *f, uint64_t off, uint64_t n)
{
  char path[256];
  uint8_t *a = malloc (n), *b = malloc (n);
  int fd;

  REQUIRE (a && b);
  snprintf (path, sizeof path, "%s/%s", dir, f);
  fd = open (path, O_RDONLY);
  REQUIRE (fd >= 0);
  REQUIRE (vd_pread_full (fd, b, n, off, true) == 0);
  close (fd);
  REQUIRE (vd_image_pread (im, a, n, off) == 0);
  REQUIRE (memcmp (a, b, n) == 0);
  free (a);
  free (b);
}

static void
test_lazy_l1 (void)
{
  const uint64_t G = 1ULL << 30, M = 1ULL << 20;
  struct qcow2_image *q;
  struct vd_image *im;
  char path[256];
  uint64_t alloc;

  /* 512-byte clusters: one L1 entry per 32 KiB, so 5 GiB need 163840
   * entries, 1.25 MiB of L1.  Data in the first and last clusters, a
   * compressed run, and 2 MiB across 64 L1 entries. */
  sh ("cd %s && qemu-img create -q -f qcow2 -o cluster_size=512 big.qcow2 5G"
      " && qemu-io -c 'write -P 0x61 0 512' -c 'write -P 0x62 5368708608 512'"
      " -c 'write -c -s t 3G 64k' -c 'write -s r 2047M 2M'"
      " -c 'write -P 0x63 4G 100000' big.qcow2 >/dev/null"
      " && qemu-img convert -O raw big.qcow2 big.raw", dir);
  snprintf (path, sizeof path, "%s/big.qcow2", dir);
  qcow2_set_cache_size (8 << 20);
  im = vd_image_open (path, 0);
  REQUIRE (im != NULL);
  q = (struct qcow2_image *) im;
  REQUIRE (q->l1 == NULL);                      /* not copied */
  REQUIRE (q->l1_size == 5 * G / 32768);
  REQUIRE (vd_image_size (im) == 5 * G);
  same_bytes (im, "big.raw", 0, M);
  same_bytes (im, "big.raw", 5 * G - M, M);
  same_bytes (im, "big.raw", 3 * G - 4096, 128 * 1024);
  same_bytes (im, "big.raw", 2047 * M - 512, 2 * M + 1024);
  same_bytes (im, "big.raw", 4 * G, M);
  REQUIRE (vd_image_allocated (im, &alloc) == 0);
  /* 512 + 512 + 2 MiB + 100000 rounded up, plus the compressed 64 KiB. */
  REQUIRE (alloc == 1024 + 2 * M + 100352 + 65536);
  vd_image_close (im);
}

/* A chain of 20 qcow2 images (64 KiB clusters, each writing its own
 * region) read with a chain budget of 1 MiB + 8 KiB: the budget runs out
 * (16 L2 tables for 20 images), the deeper images then read through
 * private tables, and every byte still equals qemu-img convert's. */
static void
test_chain_budget (void)
{
  struct vd_image *im;
  char path[256];

  sh ("cd %s && qemu-img create -q -f qcow2 c0.qcow2 24M && "
      "qemu-io -c 'write -P 1 0 1M' c0.qcow2 >/dev/null && "
      "for i in $(seq 1 19); do "
      "  qemu-img create -q -f qcow2 -b c$((i-1)).qcow2 -F qcow2 c$i.qcow2 && "
      "  qemu-io -c \"write -P $((i+1)) ${i}M 512k\" c$i.qcow2 >/dev/null "
      "  || exit 1; done && qemu-img convert -O raw c19.qcow2 c19.raw", dir);
  qcow2_set_cache_size (8192);
  snprintf (path, sizeof path, "%s/c19.qcow2", dir);
  im = vd_image_open (path, 0);
  REQUIRE (im != NULL);
  same_bytes (im, "c19.raw", 0, 24 << 20);
  same_bytes (im, "c19.raw", 0, 24 << 20);       /* warm, all spent */
  vd_image_close (im);
  qcow2_set_cache_size (QCOW2_DEFAULT_CACHE_BYTES);
}

static void
test_snapshot_table (void)
{
  struct vd_snapshot *list;
  struct vd_image *im, *sn;
  char path[256], name[32];
  size_t n;
  uint8_t b;
  int i, k;

  sh ("cd %s && qemu-img create -q -f qcow2 many.qcow2 1M && "
      "for i in $(seq 0 99); do "
      "  qemu-io -c \"write -P $i 0 512\" many.qcow2 >/dev/null && "
      "  qemu-img snapshot -c s$i many.qcow2 || exit 1; done", dir);
  snprintf (path, sizeof path, "%s/many.qcow2", dir);

  for (k = 0; k < 2; k++) {
    im = vd_image_open (path, k ? VD_OPEN_LIVE : 0);
    REQUIRE (im != NULL);
    __atomic_store_n (&qcow2_snapshot_table_parses, 0, __ATOMIC_RELAXED);
    for (i = 0; i < 100; i++) {
      snprintf (name, sizeof name, "s%d", i);
      sn = vd_image_open_snapshot (im, name);
      REQUIRE (sn != NULL);
      REQUIRE (vd_image_pread (sn, &b, 1, 0) == 0 && b == i);
      vd_image_close (sn);
      REQUIRE (vd_image_list_snapshots (im, &list, &n) == 0);
      REQUIRE (n == 100 && strcmp (list[i].name, name) == 0);
      vd_snapshots_free (list, n);
    }
    /* Parsed at open, never again. */
    REQUIRE (__atomic_load_n (&qcow2_snapshot_table_parses,
                              __ATOMIC_RELAXED) == 0);
    if (k == 1) {
      /* Live: a new snapshot shows up, parsed once. */
      sh ("qemu-img snapshot -c new %s", path);
      REQUIRE (vd_image_list_snapshots (im, &list, &n) == 0);
      REQUIRE (n == 101 && strcmp (list[100].name, "new") == 0);
      vd_snapshots_free (list, n);
      REQUIRE (vd_image_list_snapshots (im, &list, &n) == 0);
      vd_snapshots_free (list, n);
      sn = vd_image_open_snapshot (im, "new");
      REQUIRE (sn != NULL);
      REQUIRE (vd_image_pread (sn, &b, 1, 0) == 0 && b == 99);
      vd_image_close (sn);
      REQUIRE (__atomic_load_n (&qcow2_snapshot_table_parses,
                                __ATOMIC_RELAXED) == 1);
      sh ("qemu-img snapshot -d new %s", path);
    }
    vd_image_close (im);
  }
}

int
main (void)
{
  pthread_t th[NTHREADS];
  const uint8_t *snap_expect;
  struct vd_image *snap;
  uint64_t snap_size, off, n;
  uint8_t *buf;
  char path[256];
  intptr_t i;
  int pass;

  if (system ("qemu-img --version >/dev/null 2>&1") != 0 ||
      system ("qemu-io --version >/dev/null 2>&1") != 0) {
    printf ("SKIP: qemu-img/qemu-io not installed\n");
    return 77;
  }
  REQUIRE (mkdtemp (dir) != NULL);

  /* A raw base, a 4 KiB-cluster qcow2 on it with data, compressed, zero
   * and discarded clusters, and a snapshot taken half way. */
  sh ("cd %s && head -c 2M /dev/urandom > r && seq 1 300000 > t && "
      "qemu-img create -q -f raw base.raw 24M && "
      "qemu-io -f raw -c 'write -s r 0 2M' -c 'write -s t 10M 1M' "
      "  -c 'write -P 0x5c 20M 4M' base.raw >/dev/null && "
      "qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.raw -F raw "
      "  img.qcow2 40M && "
      "qemu-io -c 'write -P 0x11 1M 3M' -c 'write -c -s t 5M 64k' "
      "  -c 'write -z 10M 256k' -c 'write -s r 26M 2M' "
      "  -c 'write -P 0x22 30M 1M' img.qcow2 >/dev/null && "
      "qemu-img snapshot -c half img.qcow2 && "
      "qemu-io -c 'write -P 0x33 2M 2M' -c 'discard 26M 512k' "
      "  -c 'write -c -s t 33M 128k' -c 'write -P 0x44 1536k 5000' "
      "  img.qcow2 >/dev/null && "
      "qemu-img convert -O raw img.qcow2 expect.raw && "
      "cp img.qcow2 copy.qcow2 && qemu-img snapshot -a half copy.qcow2 && "
      "qemu-img convert -O raw copy.qcow2 snap.raw", dir);

  expect = map_file ("expect.raw", &size);
  snap_expect = map_file ("snap.raw", &snap_size);

  qcow2_set_cache_size (3 * 4096);
  snprintf (path, sizeof path, "%s/img.qcow2", dir);
  for (pass = 0; pass < 2; pass++) {
    if (pass > 0)
      vd_image_close (img);
    img = vd_image_open (path, pass ? VD_OPEN_LIVE : 0);
    REQUIRE (img != NULL);
    REQUIRE (strcmp (vd_image_format_name (img), "qcow2") == 0);
    REQUIRE (vd_image_size (img) == size);

    for (i = 0; i < NTHREADS; i++)
      REQUIRE (pthread_create (&th[i], NULL, worker, (void *) i) == 0);
    for (i = 0; i < NTHREADS; i++)
      REQUIRE (pthread_join (th[i], NULL) == 0);
  }

  /* The snapshot outlives its parent, and is not live. */
  snap = vd_image_open_snapshot (img, "half");
  REQUIRE (snap != NULL);
  REQUIRE ((snap->flags & VD_OPEN_LIVE) == 0);
  REQUIRE (vd_image_open_snapshot (img, "nosuch") == NULL && errno == ENOENT);
  vd_image_close (img);
  REQUIRE (vd_image_size (snap) == snap_size);
  buf = malloc (1 << 20);
  REQUIRE (buf);
  for (off = 0; off < snap_size; off += n) {
    n = snap_size - off < (1 << 20) ? snap_size - off : (1 << 20);
    REQUIRE (vd_image_pread (snap, buf, n, off) == 0);
    REQUIRE (memcmp (buf, snap_expect + off, n) == 0);
  }
  free (buf);
  vd_image_close (snap);

  munmap ((void *) expect, size);
  munmap ((void *) snap_expect, snap_size);

  test_lazy_l1 ();
  test_chain_budget ();
  test_snapshot_table ();
  sh ("rm -rf %s", dir);
  printf ("PASS\n");
  return 0;
}
