/* vmdiskfs - a growing string: append bytes, take the result.
 *
 * Out of memory is sticky: after the first failed append every later one
 * is a no-op and vd_buf_take gives NULL (ENOMEM), so a writer appends
 * without checking each step and checks once at the end.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_BUF_H
#define VD_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct vd_buf {                /* zero-initialise */
  char *s;                     /* NUL-terminated once anything was added */
  size_t len, cap;
  bool oom;
};

/* Append n bytes of s.  false once out of memory. */
bool vd_buf_add (struct vd_buf *b, const char *s, size_t n);
bool vd_buf_str (struct vd_buf *b, const char *s);
bool vd_buf_fmt (struct vd_buf *b, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
/* The string (malloc'd, "" when nothing was added; the buffer is empty
 * afterwards), or NULL with errno ENOMEM (the buffer freed). */
char *vd_buf_take (struct vd_buf *b);

#endif
