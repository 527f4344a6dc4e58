/* vmdiskfs - the growth step of the typed vector (vec.h).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "vec.h"

#define VEC_MIN_CAP 8

void *
vd_vec_grow (void *ptr, size_t *cap, size_t len, size_t more, size_t elem)
{
  size_t need, n;
  void *p;

  if (elem == 0 || more > SIZE_MAX - len) {
    errno = ENOMEM;
    return NULL;
  }
  need = len + more;
  n = *cap ? *cap : VEC_MIN_CAP;
  while (n < need)
    n = n > SIZE_MAX / 2 ? need : n * 2;
  if (n > SIZE_MAX / elem) {
    errno = ENOMEM;
    return NULL;
  }
  p = realloc (ptr, n * elem);
  if (!p)
    return NULL;
  *cap = n;
  return p;
}
