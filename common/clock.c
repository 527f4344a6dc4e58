/* vmdiskfs - monotonic milliseconds (clock.h).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <time.h>

#include "clock.h"

uint64_t
vd_now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
