/* vmdiskfs - name escaping (see escape.h).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

char *
vd_name_escape (const char *name)
{
  size_t n = strlen (name), i, j;
  char *out;

  if (strcmp (name, ".") == 0)
    return strdup ("%2E");
  if (strcmp (name, "..") == 0)
    return strdup ("%2E%2E");
  out = malloc (3 * n + 1);
  if (!out)
    return NULL;
  for (i = j = 0; i < n; i++) {
    if (name[i] == '/') { memcpy (&out[j], "%2F", 3); j += 3; }
    else if (name[i] == '%') { memcpy (&out[j], "%25", 3); j += 3; }
    else out[j++] = name[i];
  }
  out[j] = '\0';
  return out;
}

char *
vd_name_unescape (const char *fname)
{
  size_t n = strlen (fname), i, j;
  char *out;

  if (n == 0 || strcmp (fname, ".") == 0 || strcmp (fname, "..") == 0) {
    errno = EINVAL;
    return NULL;
  }
  if (strcmp (fname, "%2E") == 0)
    return strdup (".");
  if (strcmp (fname, "%2E%2E") == 0)
    return strdup ("..");
  out = malloc (n + 1);
  if (!out)
    return NULL;
  for (i = j = 0; i < n; i++) {
    if (fname[i] == '%') {
      if (strncmp (&fname[i], "%2F", 3) == 0) out[j++] = '/';
      else if (strncmp (&fname[i], "%25", 3) == 0) out[j++] = '%';
      else { free (out); errno = EINVAL; return NULL; }
      i += 2;
    }
    else
      out[j++] = fname[i];
  }
  out[j] = '\0';
  return out;
}

void
vd_mountinfo_unescape (char *s)
{
  char *src, *dst;

  for (src = dst = s; *src; ) {
    if (src[0] == '\\' && src[1] >= '0' && src[1] <= '3'
        && src[2] >= '0' && src[2] <= '7' && src[3] >= '0' && src[3] <= '7') {
      *dst++ = (char) ((src[1] - '0') * 64 + (src[2] - '0') * 8
                       + (src[3] - '0'));
      src += 4;
    }
    else
      *dst++ = *src++;
  }
  *dst = '\0';
}
