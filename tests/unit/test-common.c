/* Unit test of common/'s small helpers: the typed vector (vec.h), the
 * monotonic clock (clock.h), stat comparison (filestat.h) and the
 * command-line size grammar (size.h).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "vec.h"
#include "clock.h"
#include "filestat.h"
#include "size.h"
#include "test.h"

static int failures;

VD_VECTOR (int_vec, int);

static void
test_vec (void)
{
  struct int_vec v = { 0 };
  size_t cap = 0;
  void *p;
  int i;

  for (i = 0; i < 1000; i++)
    REQUIRE (int_vec_append (&v, i) == 0);
  CHECK (v.len == 1000);
  CHECK (v.cap >= 1000 && v.cap < 2000);
  for (i = 0; i < 1000; i++)
    CHECK (v.ptr[i] == i);
  REQUIRE (int_vec_reserve (&v, 5000) == 0);
  CHECK (v.cap - v.len >= 5000 && v.len == 1000);
  free (v.ptr);

  /* Overflow of the element count or of the byte size: ENOMEM, nothing
   * changed. */
  cap = 4;
  errno = 0;
  CHECK (vd_vec_grow (NULL, &cap, 2, SIZE_MAX, 1) == NULL && errno == ENOMEM);
  CHECK (cap == 4);
  errno = 0;
  CHECK (vd_vec_grow (NULL, &cap, 0, SIZE_MAX / 2, 4) == NULL
         && errno == ENOMEM);
  CHECK (cap == 4);
  /* Bytes: at least len + more. */
  cap = 0;
  p = vd_vec_grow (NULL, &cap, 0, 100, 1);
  CHECK (p != NULL && cap >= 100);
  free (p);
}

static void
test_clock (void)
{
  uint64_t a = vd_now_ms (), b;
  struct timespec ts = { 0, 20 * 1000 * 1000 };

  nanosleep (&ts, NULL);
  b = vd_now_ms ();
  CHECK (b >= a + 19 && b < a + 10000);
}

static void
test_filestat (void)
{
  struct stat a, b;

  memset (&a, 0, sizeof a);
  a.st_dev = 1;
  a.st_ino = 2;
  a.st_size = 3;
  a.st_mode = S_IFREG | 0644;
  a.st_mtim.tv_sec = 4;
  a.st_mtim.tv_nsec = 5;
  a.st_ctim.tv_sec = 6;
  a.st_ctim.tv_nsec = 7;
  b = a;
  b.st_atim.tv_sec = 99;        /* reading changes nothing */
  b.st_nlink = 2;
  CHECK (!vd_stat_changed (&a, &b));
#define DIFFERS(field)                          \
  do {                                          \
    b = a;                                      \
    b.field++;                                  \
    CHECK (vd_stat_changed (&a, &b));           \
  } while (0)
  DIFFERS (st_dev);
  DIFFERS (st_ino);
  DIFFERS (st_size);
  DIFFERS (st_mode);
  DIFFERS (st_mtim.tv_sec);
  DIFFERS (st_mtim.tv_nsec);
  DIFFERS (st_ctim.tv_sec);
  DIFFERS (st_ctim.tv_nsec);
#undef DIFFERS
}

static void
size_ok (const char *s, uint64_t want)
{
  uint64_t v = 12345;

  if (vd_parse_size (s, &v) < 0 || v != want) {
    fprintf (stderr, "FAIL: size \"%s\" = %llu, want %llu\n", s,
             (unsigned long long) v, (unsigned long long) want);
    failures++;
  }
}

static void
size_bad (const char *s, int err)
{
  uint64_t v = 12345;

  errno = 0;
  if (vd_parse_size (s, &v) != -1 || errno != err || v != 12345) {
    fprintf (stderr, "FAIL: size \"%s\" accepted or not errno %d (%d)\n",
             s, err, errno);
    failures++;
  }
}

static void
test_size (void)
{
  uint64_t v;
  bool pct;

  size_ok ("0", 0);
  size_ok ("512", 512);
  size_ok ("64k", 64ULL << 10);
  size_ok ("64K", 64ULL << 10);
  size_ok ("64KiB", 64ULL << 10);
  size_ok ("8M", 8ULL << 20);
  size_ok ("8MiB", 8ULL << 20);
  size_ok ("1GiB", 1ULL << 30);
  size_ok ("1g", 1ULL << 30);
  size_ok ("2T", 2ULL << 40);
  size_ok ("3TiB", 3ULL << 40);
  size_ok ("010", 10);                          /* decimal, not octal */
  size_ok ("18446744073709551615", UINT64_MAX);
  size_ok ("16777215T", 16777215ULL << 40);

  size_bad ("", EINVAL);
  size_bad ("M", EINVAL);
  size_bad ("-5M", EINVAL);
  size_bad ("+5M", EINVAL);
  size_bad (" 5M", EINVAL);
  size_bad ("5M ", EINVAL);
  size_bad ("0x10", EINVAL);
  size_bad ("1.5G", EINVAL);
  size_bad ("12x", EINVAL);
  size_bad ("64MB", EINVAL);                    /* SI or binary? refused */
  size_bad ("64B", EINVAL);
  size_bad ("64Mi", EINVAL);
  size_bad ("64MIB", EINVAL);
  size_bad ("64MiBB", EINVAL);
  size_bad ("1P", EINVAL);
  size_bad ("10%", EINVAL);
  size_bad ("18446744073709551616", ERANGE);
  size_bad ("16777216T", ERANGE);
  size_bad ("17179869184G", ERANGE);

  CHECK (vd_parse_size_or_percent ("25%", &v, &pct) == 0 && pct && v == 25);
  CHECK (vd_parse_size_or_percent ("101%", &v, &pct) == 0 && pct
         && v == 101);
  CHECK (vd_parse_size_or_percent ("12M", &v, &pct) == 0 && !pct
         && v == 12ULL << 20);
  CHECK (vd_parse_size_or_percent ("10%%", &v, &pct) == -1
         && errno == EINVAL);
  CHECK (vd_parse_size_or_percent ("%", &v, &pct) == -1 && errno == EINVAL);
  CHECK (vd_parse_size_or_percent ("-1%", &v, &pct) == -1
         && errno == EINVAL);
  CHECK (vd_parse_size_or_percent ("10 %", &v, &pct) == -1
         && errno == EINVAL);
}

int
main (void)
{
  test_vec ();
  test_clock ();
  test_filestat ();
  test_size ();
  return failures ? 1 : 0;
}
