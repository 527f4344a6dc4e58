/* vmdiskfs - sizes as the command line writes them: -o l2_cache and
 * -o snapsize (vmdiskfs), --cow-size (vmdisk-snapshot).  One grammar:
 *
 *   SIZE = DIGITS [ UNIT [ "iB" ] ]     UNIT = K | M | G | T (either case)
 *
 * decimal digits only (no sign, spaces, 0x or fraction), units powers of
 * 1024 ("64M" = "64MiB" = 64 x 2^20; "1t" = 2^40).  "B" and "KB", "MB" ...
 * are refused: SI's kB is 1000, so "MB" would be ambiguous.  A value over
 * 2^64 - 1 bytes is refused.  Whether 0 or a small size makes sense is
 * the caller's to decide.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_SIZE_H
#define VD_SIZE_H

#include <stdbool.h>
#include <stdint.h>

/* SIZE into *bytes.  0, or -1 with errno EINVAL (not SIZE) or ERANGE (too
 * big). */
int vd_parse_size (const char *s, uint64_t *bytes);
/* SIZE, or DIGITS "%" (then *percent is true and *value the number, not
 * checked against any range).  0, or -1 with errno EINVAL or ERANGE. */
int vd_parse_size_or_percent (const char *s, uint64_t *value, bool *percent);

#endif
