/* vmdiskfs - which snapshots to keep: the retention rules of
 * vmdisk-snapshot prune, as a pure function (no libvirt, no clock).
 *
 * The rules mean what --keep-* means to restic and borg:
 *   - the entries are sorted newest first (equal times: the greater name
 *     first, so that snap-YYYYMMDD-HHMMSS names of one second keep an
 *     order);
 *   - last N keeps the N newest;
 *   - hourly/daily/weekly/monthly N walk from the newest to the oldest
 *     and keep the newest snapshot of each distinct period until N
 *     periods are covered (a period without snapshots uses up nothing,
 *     so "daily 7" may reach further back than a week);
 *   - an entry is kept when any rule keeps it; the others are deleted.
 * Periods are of local time (the TZ environment variable, read again by
 * every call): hour "YYYY-MM-DD HH ZONE" (the zone's abbreviation tells
 * apart the two 01:00 hours of the night daylight saving time ends), day
 * "YYYY-MM-DD", ISO 8601 week "YYYY-Www" (weeks start on Monday; the
 * first week of a year is the one holding its first Thursday, so
 * 2027-01-01 is in 2026-W53), month "YYYY-MM".  A count of 0 is a rule
 * that keeps nothing; with every count 0 every entry is deleted (the
 * caller refuses that).
 *
 * Threads: safe to call from several threads (localtime_r, strftime).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_RETENTION_H
#define VD_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct retention_policy {
  unsigned last;                 /* --keep-last N    */
  unsigned hourly;               /* --keep-hourly N  */
  unsigned daily;                /* --keep-daily N   */
  unsigned weekly;               /* --keep-weekly N  */
  unsigned monthly;              /* --keep-monthly N */
};

#define RETENTION_REASON_MAX 160

struct retention_entry {
  const char *name;              /* in: the snapshot's name (not copied) */
  int64_t ctime;                 /* in: its creation time, seconds       */
  void *data;                    /* in: the caller's, carried along      */
  bool keep;                     /* out                                  */
  /* out: why it is kept, every rule that keeps it, comma-separated:
   * "last 1, daily 2026-11-25, weekly 2026-W48"; for a deleted entry
   * "no rule keeps it". */
  char reason[RETENTION_REASON_MAX];
};

/* Sort v (n entries) newest first and decide keep and reason for each. */
void retention_apply (struct retention_entry *v, size_t n,
                      const struct retention_policy *p);

/* True when p keeps anything at all (some count is not 0). */
bool retention_any (const struct retention_policy *p);

#endif
