/* vmdiskfs - a small JSON reader for QMP replies (domsnap.c), and for
 * reports the LVM report parser does not keep (lvm.c: vgs).
 *
 * qemu runs the guest, so its replies are untrusted bytes: the parser
 * bounds the nesting depth, checks every read against the end of the
 * buffer and refuses NUL inside strings; tests/unit/test-qmp-json.c
 * feeds it broken input.  No state outside a call (thread-safe).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_QMP_JSON_H
#define VD_QMP_JSON_H

#include <stddef.h>

enum qmp_json_type {
  QJ_NULL, QJ_BOOL, QJ_NUM, QJ_STR, QJ_ARR, QJ_OBJ
};

/* One value; a document is a tree of them. */
struct qmp_json {
  enum qmp_json_type t;
  char *s;                  /* QJ_STR: the decoded string (UTF-8, no NUL);
                               QJ_NUM, QJ_BOOL: the literal's text        */
  size_t n;                 /* QJ_ARR, QJ_OBJ: how many values            */
  struct qmp_json *v;       /* QJ_ARR, QJ_OBJ: the values                 */
  char **k;                 /* QJ_OBJ: their keys                         */
};

#define QMP_JSON_MAX_DEPTH 64

/* Parse len bytes (one value, white space around it).  0, or -1 with
 * errno EINVAL (*err says why; nothing to free) or ENOMEM.  Free with
 * qmp_json_free. */
int qmp_json_parse (const char *s, size_t len, struct qmp_json *v,
                    const char **err);
void qmp_json_free (struct qmp_json *v);
/* The value of key in object o (the first, if repeated), or NULL (also
 * when o is NULL or no object). */
const struct qmp_json *qmp_json_get (const struct qmp_json *o,
                                     const char *key);
/* v's string, or NULL when v is NULL or no string. */
const char *qmp_json_str (const struct qmp_json *v);

#endif
