/* vmdiskfs - a growing string (buf.h).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "vec.h"

bool
vd_buf_add (struct vd_buf *b, const char *s, size_t n)
{
  if (b->oom)
    return false;
  if (b->cap - b->len < n + 1) {
    char *t = vd_vec_grow (b->s, &b->cap, b->len, n + 1, 1);
    if (!t) {
      b->oom = true;
      return false;
    }
    b->s = t;
  }
  if (n)
    memcpy (b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
  return true;
}

bool
vd_buf_str (struct vd_buf *b, const char *s)
{
  return vd_buf_add (b, s, strlen (s));
}

bool
vd_buf_fmt (struct vd_buf *b, const char *fmt, ...)
{
  char *t;
  int n;
  va_list ap;
  bool ok;

  va_start (ap, fmt);
  n = vasprintf (&t, fmt, ap);
  va_end (ap);
  if (n < 0) {
    b->oom = true;
    return false;
  }
  ok = vd_buf_add (b, t, n);
  free (t);
  return ok;
}

char *
vd_buf_take (struct vd_buf *b)
{
  char *s;

  if (b->oom || (!b->s && !vd_buf_add (b, "", 0))) {
    free (b->s);
    b->s = NULL;
    b->len = b->cap = 0;
    errno = ENOMEM;
    return NULL;
  }
  s = b->s;
  b->s = NULL;
  b->len = b->cap = 0;
  return s;
}
