/* vmdiskfs - which snapshots to keep (retention.h says how).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "retention.h"

/* One period rule: its name in reasons and the strftime format of its
 * period key (two entries are in one period when their keys are equal). */
struct rule {
  const char *name;
  const char *fmt;
};

static const struct rule rules[] = {
  { "hourly", "%Y-%m-%d %H %Z" },
  { "daily", "%Y-%m-%d" },
  { "weekly", "%G-W%V" },
  { "monthly", "%Y-%m" },
};
#define NRULES (sizeof rules / sizeof rules[0])

/* Newest first; for equal times the greater name first. */
static int
newest_first (const void *a, const void *b)
{
  const struct retention_entry *x = a, *y = b;

  if (x->ctime != y->ctime)
    return x->ctime > y->ctime ? -1 : 1;
  return -strcmp (x->name, y->name);
}

static void
add_reason (struct retention_entry *e, const char *rule, const char *what)
{
  size_t len = strlen (e->reason);

  snprintf (e->reason + len, sizeof e->reason - len, "%s%s %s",
            len ? ", " : "", rule, what);
}

bool
retention_any (const struct retention_policy *p)
{
  return p->last || p->hourly || p->daily || p->weekly || p->monthly;
}

void
retention_apply (struct retention_entry *v, size_t n,
                 const struct retention_policy *p)
{
  const unsigned counts[NRULES] = { p->hourly, p->daily, p->weekly,
                                    p->monthly };
  size_t i, r;

  if (n == 0)
    return;
  qsort (v, n, sizeof *v, newest_first);
  tzset ();                     /* TZ may have changed since the last call */

  for (i = 0; i < n; i++) {
    v[i].keep = false;
    v[i].reason[0] = '\0';
    if (i < p->last) {
      char what[32];
      snprintf (what, sizeof what, "%zu", i + 1);
      v[i].keep = true;
      add_reason (&v[i], "last", what);
    }
  }

  for (r = 0; r < NRULES; r++) {
    char prev[64] = "", key[64];
    unsigned left = counts[r];

    for (i = 0; i < n && left > 0; i++) {
      time_t t = (time_t) v[i].ctime;
      struct tm tm;

      if (!localtime_r (&t, &tm) ||
          strftime (key, sizeof key, rules[r].fmt, &tm) == 0)
        snprintf (key, sizeof key, "@%lld", (long long) v[i].ctime);
      if (strcmp (key, prev) == 0)
        continue;               /* an older one of a period already kept */
      strcpy (prev, key);
      v[i].keep = true;
      add_reason (&v[i], rules[r].name, key);
      left--;
    }
  }

  for (i = 0; i < n; i++)
    if (!v[i].keep)
      snprintf (v[i].reason, sizeof v[i].reason, "no rule keeps it");
}
