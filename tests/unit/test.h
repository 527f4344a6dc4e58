/* vmdiskfs - what the unit tests share.
 *
 * CHECK (cond) reports a false condition with its file and line and counts
 * it in failures, which the test defines (static int failures;) and looks
 * at before it exits.  REQUIRE (cond) reports it the same way and exits 1
 * at once, for tests whose later steps build on each check.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_TEST_H
#define VD_TEST_H

#include <stdio.h>
#include <stdlib.h>

#define TEST_REPORT(what)                                               \
  fprintf (stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what)

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      TEST_REPORT (#cond);                                              \
      failures++;                                                       \
    }                                                                   \
  } while (0)

#define REQUIRE(cond)                                                   \
  do {                                                                  \
    if (!(cond)) {                                                      \
      TEST_REPORT (#cond);                                              \
      exit (1);                                                         \
    }                                                                   \
  } while (0)

#endif /* VD_TEST_H */
