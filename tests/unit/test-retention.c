/* Unit test of snapshotter/retention.c: which snapshots prune keeps, in
 * UTC and in Central European time (a POSIX TZ string, so no tzdata is
 * needed), across both daylight-saving changes, with equal times, counts
 * of 0, more periods asked for than there are snapshots, and ISO weeks at
 * the turn of a year.
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "retention.h"
#include "test.h"

static int failures;

#define CET "CET-1CEST,M3.5.0,M10.5.0/3"

/* "YYYY-MM-DD HH:MM:SS" in UTC to seconds. */
static int64_t
utc (const char *s)
{
  struct tm tm = { 0 };

  REQUIRE (sscanf (s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon,
                   &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) == 6);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (int64_t) timegm (&tm);
}

static void
set_tz (const char *tz)
{
  setenv ("TZ", tz, 1);
  tzset ();
}

/* Entries named by their UTC times (the name is the time string). */
static struct retention_entry *
entries (const char *const *times, size_t n)
{
  struct retention_entry *v = calloc (n, sizeof *v);
  size_t i;

  REQUIRE (v);
  for (i = 0; i < n; i++) {
    v[i].name = times[i];
    v[i].ctime = utc (times[i]);
  }
  return v;
}

static const struct retention_entry *
find (const struct retention_entry *v, size_t n, const char *name)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp (v[i].name, name) == 0)
      return &v[i];
  fprintf (stderr, "FAIL: no entry %s\n", name);
  failures++;
  return NULL;
}

/* Kept names, newest first, separated by '|'. */
static void
expect_kept (const char *what, const struct retention_entry *v, size_t n,
             const char *want)
{
  char got[4096] = "";
  size_t i;

  for (i = 0; i < n; i++)
    if (v[i].keep) {
      if (*got)
        strcat (got, "|");
      strcat (got, v[i].name);
    }
  if (strcmp (got, want) != 0) {
    fprintf (stderr, "FAIL: %s: kept\n  %s\nwant\n  %s\n", what, got, want);
    for (i = 0; i < n; i++)
      fprintf (stderr, "    %s %s: %s\n", v[i].keep ? "keep  " : "delete",
               v[i].name, v[i].reason);
    failures++;
  }
}

static void
expect_reason (const struct retention_entry *v, size_t n, const char *name,
               const char *want)
{
  const struct retention_entry *e = find (v, n, name);

  if (e && strcmp (e->reason, want) != 0) {
    fprintf (stderr, "FAIL: reason of %s: \"%s\", want \"%s\"\n", name,
             e->reason, want);
    failures++;
  }
}

/* Daily snapshots at 02:00 UTC, 2026-08-01 .. 2026-11-25, shuffled. */
static void
test_series (void)
{
  static char names[200][20];
  struct retention_entry v[200];
  struct retention_policy p = { .daily = 7, .weekly = 4, .monthly = 6 };
  int64_t t = utc ("2026-08-01 02:00:00");
  size_t n = 0, i;

  set_tz ("UTC");
  memset (v, 0, sizeof v);
  while (t <= utc ("2026-11-25 02:00:00")) {
    time_t tt = t;
    struct tm tm;
    gmtime_r (&tt, &tm);
    strftime (names[n], sizeof names[n], "%Y-%m-%d", &tm);
    n++;
    t += 86400;
  }
  REQUIRE (n == 117);
  /* Reversed and interleaved: the function sorts. */
  for (i = 0; i < n; i++) {
    size_t j = (i * 37) % n;    /* 37 and 117 are coprime */
    v[i].name = names[j];
    v[i].ctime = utc ("2026-08-01 02:00:00") + (int64_t) j * 86400;
  }
  retention_apply (v, n, &p);
  CHECK (v[0].ctime == utc ("2026-11-25 02:00:00"));
  for (i = 1; i < n; i++)
    CHECK (v[i - 1].ctime > v[i].ctime);
  expect_kept ("daily 7 weekly 4 monthly 6", v, n,
               "2026-11-25|2026-11-24|2026-11-23|2026-11-22|2026-11-21|"
               "2026-11-20|2026-11-19|2026-11-15|2026-11-08|2026-10-31|"
               "2026-09-30|2026-08-31");
  expect_reason (v, n, "2026-11-25",
                 "daily 2026-11-25, weekly 2026-W48, monthly 2026-11");
  expect_reason (v, n, "2026-11-22", "daily 2026-11-22, weekly 2026-W47");
  expect_reason (v, n, "2026-11-08", "weekly 2026-W45");
  expect_reason (v, n, "2026-08-31", "monthly 2026-08");
  expect_reason (v, n, "2026-11-18", "no rule keeps it");
  expect_reason (v, n, "2026-08-01", "no rule keeps it");

  /* last 3 and hourly 2 on top. */
  p = (struct retention_policy) { .last = 3, .hourly = 2, .monthly = 1 };
  retention_apply (v, n, &p);
  expect_kept ("last 3 hourly 2 monthly 1", v, n,
               "2026-11-25|2026-11-24|2026-11-23");
  expect_reason (v, n, "2026-11-25",
                 "last 1, hourly 2026-11-25 02 UTC, monthly 2026-11");
  expect_reason (v, n, "2026-11-24", "last 2, hourly 2026-11-24 02 UTC");
  expect_reason (v, n, "2026-11-23", "last 3");
}

/* Several snapshots in one period: only the newest counts for it. */
static void
test_hours_of_a_day (void)
{
  static const char *const t[] = {
    "2026-11-25 00:10:00", "2026-11-25 00:50:00", "2026-11-25 01:05:00",
    "2026-11-25 13:00:00", "2026-11-25 13:59:59", "2026-11-24 23:59:59",
  };
  size_t n = sizeof t / sizeof t[0];
  struct retention_entry *v = entries (t, n);
  struct retention_policy p = { .hourly = 3 };

  set_tz ("UTC");
  retention_apply (v, n, &p);
  expect_kept ("hourly 3", v, n,
               "2026-11-25 13:59:59|2026-11-25 01:05:00|2026-11-25 00:50:00");
  p = (struct retention_policy) { .daily = 1 };
  retention_apply (v, n, &p);
  expect_kept ("daily 1", v, n, "2026-11-25 13:59:59");
  free (v);
}

/* Equal creation times: the greater name is the newer. */
static void
test_equal_times (void)
{
  struct retention_entry v[3] = {
    { .name = "a", .ctime = 1000000 },
    { .name = "c", .ctime = 1000000 },
    { .name = "b", .ctime = 1000000 },
  };
  struct retention_policy p = { .daily = 5 };

  set_tz ("UTC");
  retention_apply (v, 3, &p);
  expect_kept ("equal times, daily 5", v, 3, "c");
  CHECK (strcmp (v[1].name, "b") == 0 && strcmp (v[2].name, "a") == 0);
  p = (struct retention_policy) { .last = 2 };
  retention_apply (v, 3, &p);
  expect_kept ("equal times, last 2", v, 3, "c|b");
}

/* Counts of 0, no entries, more periods than snapshots. */
static void
test_counts (void)
{
  static const char *const t[] = {
    "2026-11-25 10:00:00", "2026-11-25 09:00:00", "2026-11-20 10:00:00",
    "2026-10-01 00:00:00", "2025-01-01 00:00:00",
  };
  size_t n = sizeof t / sizeof t[0], i;
  struct retention_entry *v = entries (t, n);
  struct retention_policy none = { 0 }, many = { .daily = 1000 };

  set_tz ("UTC");
  CHECK (!retention_any (&none));
  CHECK (retention_any (&many));
  retention_apply (v, n, &none);
  expect_kept ("all counts 0", v, n, "");
  for (i = 0; i < n; i++)
    CHECK (strcmp (v[i].reason, "no rule keeps it") == 0);
  retention_apply (v, n, &many);
  expect_kept ("daily 1000", v, n,
               "2026-11-25 10:00:00|2026-11-20 10:00:00|"
               "2026-10-01 00:00:00|2025-01-01 00:00:00");
  many = (struct retention_policy) { .last = 1000, .monthly = 1000 };
  retention_apply (v, n, &many);
  expect_kept ("last 1000", v, n,
               "2026-11-25 10:00:00|2026-11-25 09:00:00|2026-11-20 10:00:00|"
               "2026-10-01 00:00:00|2025-01-01 00:00:00");
  retention_apply (v, 0, &many);        /* nothing to do, no crash */
  free (v);
}

/* ISO 8601 weeks at the turn of the year: 2026 has 53 weeks (it starts on
 * a Thursday), 2027-01-01..03 belong to 2026-W53, 2027-01-04 starts
 * 2027-W01; 2024-12-30 is in 2025-W01. */
static void
test_iso_weeks (void)
{
  static const char *const t[] = {
    "2027-01-04 08:00:00", "2027-01-03 23:00:00", "2027-01-01 08:00:00",
    "2026-12-28 00:00:00", "2026-12-27 23:59:59", "2025-01-02 00:00:00",
    "2024-12-30 12:00:00", "2024-12-29 12:00:00",
  };
  size_t n = sizeof t / sizeof t[0];
  struct retention_entry *v = entries (t, n);
  struct retention_policy p = { .weekly = 10 };

  set_tz ("UTC");
  retention_apply (v, n, &p);
  expect_kept ("weekly 10", v, n,
               "2027-01-04 08:00:00|2027-01-03 23:00:00|"
               "2026-12-27 23:59:59|2025-01-02 00:00:00|2024-12-29 12:00:00");
  expect_reason (v, n, "2027-01-04 08:00:00", "weekly 2027-W01");
  expect_reason (v, n, "2027-01-03 23:00:00", "weekly 2026-W53");
  expect_reason (v, n, "2026-12-27 23:59:59", "weekly 2026-W52");
  expect_reason (v, n, "2025-01-02 00:00:00", "weekly 2025-W01");
  expect_reason (v, n, "2024-12-29 12:00:00", "weekly 2024-W52");
  p = (struct retention_policy) { .monthly = 2 };
  retention_apply (v, n, &p);
  expect_kept ("monthly 2", v, n, "2027-01-04 08:00:00|2026-12-28 00:00:00");
  free (v);
}

/* Local days and hours: Central European time. */
static void
test_other_zone (void)
{
  static const char *const t[] = {
    "2026-11-24 23:30:00",      /* 2026-11-25 00:30 CET */
    "2026-11-24 22:30:00",      /* 2026-11-24 23:30 CET */
    "2026-11-23 12:00:00",
  };
  /* The end of daylight saving time: 02:00-03:00 happens twice. */
  static const char *const fall[] = {
    "2026-10-25 00:30:00",      /* 02:30 CEST */
    "2026-10-25 01:30:00",      /* 02:30 CET  */
    "2026-10-25 01:45:00",      /* 02:45 CET  */
    "2026-10-24 23:30:00",      /* 01:30 CEST */
  };
  /* Its start: 02:00-03:00 does not exist. */
  static const char *const spring[] = {
    "2026-03-29 00:30:00",      /* 01:30 CET  */
    "2026-03-29 01:30:00",      /* 03:30 CEST */
    "2026-03-28 23:30:00",      /* 00:30 CET  */
    "2026-03-28 22:30:00",      /* 2026-03-28 23:30 CET */
  };
  size_t n = sizeof t / sizeof t[0];
  struct retention_entry *v = entries (t, n);
  struct retention_policy p = { .daily = 2 };

  set_tz ("UTC");
  retention_apply (v, n, &p);
  expect_kept ("daily 2, UTC", v, n,
               "2026-11-24 23:30:00|2026-11-23 12:00:00");
  set_tz (CET);
  retention_apply (v, n, &p);
  expect_kept ("daily 2, CET", v, n,
               "2026-11-24 23:30:00|2026-11-24 22:30:00");
  expect_reason (v, n, "2026-11-24 23:30:00", "daily 2026-11-25");
  free (v);

  n = sizeof fall / sizeof fall[0];
  v = entries (fall, n);
  p = (struct retention_policy) { .hourly = 5 };
  retention_apply (v, n, &p);
  expect_kept ("hourly 5, end of DST", v, n,
               "2026-10-25 01:45:00|2026-10-25 00:30:00|2026-10-24 23:30:00");
  expect_reason (v, n, "2026-10-25 01:45:00", "hourly 2026-10-25 02 CET");
  expect_reason (v, n, "2026-10-25 00:30:00", "hourly 2026-10-25 02 CEST");
  expect_reason (v, n, "2026-10-24 23:30:00", "hourly 2026-10-25 01 CEST");
  p = (struct retention_policy) { .daily = 5 };
  retention_apply (v, n, &p);
  expect_kept ("daily 5, end of DST", v, n, "2026-10-25 01:45:00");
  free (v);

  n = sizeof spring / sizeof spring[0];
  v = entries (spring, n);
  p = (struct retention_policy) { .hourly = 5, .daily = 5 };
  retention_apply (v, n, &p);
  expect_kept ("hourly 5 daily 5, start of DST", v, n,
               "2026-03-29 01:30:00|2026-03-29 00:30:00|2026-03-28 23:30:00|"
               "2026-03-28 22:30:00");
  expect_reason (v, n, "2026-03-29 01:30:00",
                 "hourly 2026-03-29 03 CEST, daily 2026-03-29");
  expect_reason (v, n, "2026-03-29 00:30:00", "hourly 2026-03-29 01 CET");
  expect_reason (v, n, "2026-03-28 22:30:00",
                 "hourly 2026-03-28 23 CET, daily 2026-03-28");
  p = (struct retention_policy) { .daily = 1 };
  retention_apply (v, n, &p);
  expect_kept ("daily 1, start of DST", v, n, "2026-03-29 01:30:00");
  free (v);
}

int
main (void)
{
  test_series ();
  test_hours_of_a_day ();
  test_equal_times ();
  test_counts ();
  test_iso_weeks ();
  test_other_zone ();
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return 1;
  }
  printf ("retention: all checks passed\n");
  return 0;
}
