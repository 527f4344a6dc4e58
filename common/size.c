/* vmdiskfs - command-line sizes (size.h).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "size.h"

/* Leading decimal digits of s into *v; *end after them.  -1 with errno
 * EINVAL (no digit) or ERANGE. */
static int
parse_digits (const char *s, uint64_t *v, const char **end)
{
  uint64_t n = 0;

  if (*s < '0' || *s > '9') {
    errno = EINVAL;
    return -1;
  }
  for (; *s >= '0' && *s <= '9'; s++) {
    unsigned d = *s - '0';

    if (n > (UINT64_MAX - d) / 10) {
      errno = ERANGE;
      return -1;
    }
    n = n * 10 + d;
  }
  *v = n;
  *end = s;
  return 0;
}

int
vd_parse_size_or_percent (const char *s, uint64_t *value, bool *percent)
{
  const char *p;
  uint64_t v;
  unsigned shift;

  if (parse_digits (s, &v, &p) < 0)
    return -1;
  *percent = false;
  if (strcmp (p, "%") == 0) {
    *value = v;
    *percent = true;
    return 0;
  }
  switch (*p) {
  case '\0': shift = 0; break;
  case 'k': case 'K': shift = 10; break;
  case 'm': case 'M': shift = 20; break;
  case 'g': case 'G': shift = 30; break;
  case 't': case 'T': shift = 40; break;
  default: errno = EINVAL; return -1;
  }
  if (shift) {
    p++;
    if (strcmp (p, "iB") == 0)
      p += 2;
  }
  if (*p != '\0') {
    errno = EINVAL;
    return -1;
  }
  if (v > (UINT64_MAX >> shift)) {
    errno = ERANGE;
    return -1;
  }
  *value = v << shift;
  return 0;
}

int
vd_parse_size (const char *s, uint64_t *bytes)
{
  uint64_t v;
  bool percent;

  if (vd_parse_size_or_percent (s, &v, &percent) < 0)
    return -1;
  if (percent) {
    errno = EINVAL;
    return -1;
  }
  *bytes = v;
  return 0;
}
