/* vmdiskfs - the project's one JSON reader: QMP replies (qmp.c),
 * LVM reports (lvm-json.c: lvs; lvm.c: vgs).
 *
 * qemu runs the guest and lvm prints names and tags that others chose,
 * so the input is untrusted bytes: the parser bounds the nesting depth,
 * checks every read against the end of the buffer and refuses NUL inside
 * strings; tests/unit/test-json.c feeds it broken input and
 * tests/fuzz/fuzz-json.c fuzzes it.  No state outside a call
 * (thread-safe).
 *
 * Why not json-c (issue 8; measured with Debian's 0.16, strict mode,
 * json_tokener_new_ex depth 65): it has no budget of values, and its
 * empty object costs 792 bytes (16-entry hash table) against 42 here, so
 * the 64 MiB an LVM report may have, as "[{},{},...", would take 17.7 GB
 * (2 million objects: 1.58 GB, 13.6 s; "[0,0,..." of 64 MiB: 2.4 GB,
 * 54 s); and it accepts what this reader refuses: lone surrogates (made
 * U+FFFD), control bytes inside strings, \u0000 (in a key, the key is cut
 * there: {"lv_name\u0000x":..} is lv_name), NaN, integers beyond 64 bits
 * (clamped).  Keeping that off needs a scan of our own before it, of
 * strings, escapes and counts: the riskiest half of this file.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_JSON_H
#define VD_JSON_H

#include <stddef.h>

enum vd_json_type {
  VD_JSON_NULL, VD_JSON_BOOL, VD_JSON_NUM, VD_JSON_STR, VD_JSON_ARR, VD_JSON_OBJ
};

/* One value; a document is a tree of them. */
struct vd_json {
  enum vd_json_type t;
  char *s;                  /* VD_JSON_STR: the decoded string (UTF-8, no NUL);
                               VD_JSON_NUM, VD_JSON_BOOL: the literal's text        */
  size_t n;                 /* VD_JSON_ARR, VD_JSON_OBJ: how many values            */
  struct vd_json *v;       /* VD_JSON_ARR, VD_JSON_OBJ: the values                 */
  char **k;                 /* VD_JSON_OBJ: their keys                         */
};

#define VD_JSON_MAX_DEPTH 64
/* At most this many values in one document: a tree costs up to ~130 bytes
 * a value (node, key pointer, growth slack, a small string), far more
 * than its text ("[0,0,..." is two bytes a value), so without a budget a
 * 64 MiB hostile reply could take gigabytes.  A million covers an LVM
 * report of 60,000 LVs. */
#define VD_JSON_MAX_VALUES 1000000

/* Parse len bytes (one value, white space around it).  0, or -1 with
 * errno EINVAL (*err says why and, unless at is NULL, *at the offset
 * where; nothing to free) or ENOMEM.  Free with vd_json_free. */
int vd_json_parse (const char *s, size_t len, struct vd_json *v,
                   const char **err, size_t *at);
void vd_json_free (struct vd_json *v);
/* The value of key in object o (the first, if repeated), or NULL (also
 * when o is NULL or no object). */
const struct vd_json *vd_json_get (const struct vd_json *o,
                                     const char *key);
/* v's string, or NULL when v is NULL or no string. */
const char *vd_json_str (const struct vd_json *v);

#endif
