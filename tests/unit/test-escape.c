/* Unit test of common/escape.c: names as DESIGN.md shows them.
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

static int failures;

static void
check (const char *name, const char *expect)
{
  char *e = vd_name_escape (name), *u;

  if (!e || strcmp (e, expect) != 0) {
    fprintf (stderr, "FAIL: escape(\"%s\") = \"%s\", want \"%s\"\n", name,
             e ? e : "(null)", expect);
    failures++;
  }
  u = e ? vd_name_unescape (e) : NULL;
  if (!u || strcmp (u, name) != 0) {
    fprintf (stderr, "FAIL: unescape(\"%s\") = \"%s\", want \"%s\"\n",
             e ? e : "(null)", u ? u : "(null)", name);
    failures++;
  }
  free (e);
  free (u);
}

static void
check_invalid (const char *fname)
{
  char *u = vd_name_unescape (fname);

  if (u != NULL || errno != EINVAL) {
    fprintf (stderr, "FAIL: unescape(\"%s\") should be EINVAL\n", fname);
    failures++;
  }
  free (u);
}

int
main (void)
{
  check ("vm1", "vm1");
  check ("a/b", "a%2Fb");
  check ("100%", "100%25");
  check ("%2F", "%252F");
  check (".", "%2E");
  check ("..", "%2E%2E");
  check ("...", "...");
  check (".hidden", ".hidden");
  check ("snap shot ü", "snap shot ü");
  check ("//", "%2F%2F");
  check_invalid ("");
  check_invalid (".");
  check_invalid ("..");
  check_invalid ("a%2");
  check_invalid ("a%41");
  {
    /* /proc/self/mountinfo's octal escapes. */
    char m[] = "/srv/my\\040disks\\011x\\134y\\12z\\0";
    vd_mountinfo_unescape (m);
    if (strcmp (m, "/srv/my disks\tx\\y\\12z\\0") != 0) {
      fprintf (stderr, "FAIL: vd_mountinfo_unescape: %s\n", m);
      failures++;
    }
  }
  if (failures)
    return 1;
  printf ("test-escape: all passed\n");
  return 0;
}
