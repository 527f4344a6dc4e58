/* vmdiskfs - time for timeouts and ages: CLOCK_MONOTONIC in milliseconds
 * (not the wall clock, which may jump).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_CLOCK_H
#define VD_CLOCK_H

#include <stdint.h>

/* Milliseconds since an arbitrary start (boot): only differences mean
 * something. */
uint64_t vd_now_ms (void);

#endif
