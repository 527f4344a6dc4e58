/* vmdiskfs - scope-exit cleanup helpers (GCC/Clang cleanup attribute).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_CLEANUP_H
#define VD_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>

static inline void vd_cleanup_free (void *ptr) { free (*(void **) ptr); }
static inline void vd_cleanup_close (int *fd) { if (*fd >= 0) close (*fd); }

#define CLEANUP_FREE __attribute__ ((cleanup (vd_cleanup_free)))
#define CLEANUP_CLOSE __attribute__ ((cleanup (vd_cleanup_close)))

/* Overflow-checked arithmetic: true on overflow. */
#define ADD_OVERFLOW(a, b, r) __builtin_add_overflow ((a), (b), (r))
#define MUL_OVERFLOW(a, b, r) __builtin_mul_overflow ((a), (b), (r))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define IS_ALIGNED(x, a) (((x) & ((uint64_t) (a) - 1)) == 0)
#define ROUND_UP(x, a) (((x) + (a) - 1) / (a) * (a))
#define DIV_ROUND_UP(x, a) (((x) + (a) - 1) / (a))

#endif
