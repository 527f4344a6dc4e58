/* libFuzzer target for snapshotter/json.c, the reader of QMP replies
 * (domsnap.c), which come from qemu and so from the guest's side:
 * untrusted bytes.  Each input is parsed as one reply; a parsed tree is
 * walked as domsnap.c walks it (query-block's "return" array, "inserted",
 * "file", "node-name", "drv"; an "error"'s "desc"), then freed
 * (LeakSanitizer).  Built and run by tests/fuzz/run-fuzz.sh (target
 * json); seeds in tests/fuzz/json-seeds/ (replies of qemu 7.2
 * under libvirt 9.0, captured with virsh qemu-monitor-command).
 *
 * Oracles besides ASan/UBSan/LeakSanitizer:
 *   - the tree is well formed: strings, numbers and literals have text,
 *     objects have a key per value, no deeper than VD_JSON_MAX_DEPTH;
 *   - a refusal says why, at an offset inside the input;
 *   - decoding never grows the text: all strings and keys together are
 *     no longer than the input;
 *   - written back as JSON and parsed again, the tree is the same.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void __attribute__ ((noreturn))
bug (const char *what)
{
  fprintf (stderr, "fuzz-json: parser bug: %s\n", what);
  abort ();
}

/* Check v's shape; return the bytes of text in it (strings and keys). */
static size_t
check (const struct vd_json *v, int depth)
{
  size_t sum = 0, i;

  if (depth > VD_JSON_MAX_DEPTH + 1)
    bug ("deeper than VD_JSON_MAX_DEPTH");
  switch (v->t) {
  case VD_JSON_NULL: case VD_JSON_BOOL: case VD_JSON_NUM: case VD_JSON_STR:
    if (!v->s)
      bug ("a scalar without text");
    if (v->n || v->v || v->k)
      bug ("a scalar with members");
    return strlen (v->s);
  case VD_JSON_ARR: case VD_JSON_OBJ:
    if (v->s)
      bug ("a container with text");
    if (v->n && !v->v)
      bug ("members without values");
    if (v->t == VD_JSON_OBJ && v->n && !v->k)
      bug ("an object without keys");
    if (v->t == VD_JSON_ARR && v->k)
      bug ("an array with keys");
    for (i = 0; i < v->n; i++) {
      if (v->t == VD_JSON_OBJ) {
        if (!v->k[i])
          bug ("a NULL key");
        sum += strlen (v->k[i]);
      }
      sum += check (&v->v[i], depth + 1);
    }
    return sum;
  default:
    bug ("unknown type");
  }
}

/* Writing the tree back: common/buf.h, out of memory is a bug here. */
static void
put (struct vd_buf *o, const char *s, size_t n)
{
  if (!vd_buf_add (o, s, n))
    abort ();
}

static void
put_string (struct vd_buf *o, const char *s)
{
  put (o, "\"", 1);
  for (; *s; s++) {
    unsigned char c = *s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = c;
      put (o, esc, 2);
    }
    else if (c < 0x20) {
      snprintf (esc, sizeof esc, "\\u%04x", c);
      put (o, esc, 6);
    }
    else
      put (o, s, 1);
  }
  put (o, "\"", 1);
}

static void
write_json (struct vd_buf *o, const struct vd_json *v)
{
  size_t i;

  switch (v->t) {
  case VD_JSON_STR:
    put_string (o, v->s);
    return;
  case VD_JSON_NULL: case VD_JSON_BOOL: case VD_JSON_NUM:
    put (o, v->s, strlen (v->s));
    return;
  case VD_JSON_ARR: case VD_JSON_OBJ:
    put (o, v->t == VD_JSON_OBJ ? "{" : "[", 1);
    for (i = 0; i < v->n; i++) {
      if (i)
        put (o, ",", 1);
      if (v->t == VD_JSON_OBJ) {
        put_string (o, v->k[i]);
        put (o, ":", 1);
      }
      write_json (o, &v->v[i]);
    }
    put (o, v->t == VD_JSON_OBJ ? "}" : "]", 1);
    return;
  }
}

static void
same (const struct vd_json *a, const struct vd_json *b)
{
  size_t i;

  if (a->t != b->t || a->n != b->n)
    bug ("written back and parsed again: another tree");
  if (a->s && strcmp (a->s, b->s) != 0)
    bug ("written back and parsed again: other text");
  for (i = 0; i < a->n; i++) {
    if (a->k && strcmp (a->k[i], b->k[i]) != 0)
      bug ("written back and parsed again: another key");
    same (&a->v[i], &b->v[i]);
  }
}

/* What domsnap.c reads of a reply (find_nodes, qmp). */
static size_t
walk_like_domsnap (const struct vd_json *reply)
{
  const struct vd_json *ret = vd_json_get (reply, "return");
  const struct vd_json *e = vd_json_get (reply, "error");
  const char *desc = vd_json_str (vd_json_get (e, "desc"));
  size_t sum = desc ? strlen (desc) : 0, j;

  for (j = 0; ret && ret->t == VD_JSON_ARR && j < ret->n; j++) {
    const struct vd_json *ins = vd_json_get (&ret->v[j], "inserted");
    const char *f[] = {
      vd_json_str (vd_json_get (ins, "file")),
      vd_json_str (vd_json_get (ins, "node-name")),
      vd_json_str (vd_json_get (ins, "drv")),
    };
    size_t i;
    for (i = 0; i < sizeof f / sizeof f[0]; i++)
      if (f[i])
        sum += strlen (f[i]);
  }
  return sum;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct vd_json v, w;
  struct vd_buf o = { 0 };
  const char *err = NULL;
  size_t at = (size_t) -1;

  if (vd_json_parse ((const char *) data, size, &v, &err, &at) < 0) {
    if (!err)
      bug ("failed without saying why");
    if (at > size)
      bug ("failed at an offset past the end");
    return 0;
  }
  if (check (&v, 0) > size)
    bug ("more text out than bytes in");
  (void) walk_like_domsnap (&v);

  write_json (&o, &v);
  if (vd_json_parse (o.s, o.len, &w, &err, NULL) < 0) {
    fprintf (stderr, "fuzz-json: %s: %s\n", err, o.s);
    bug ("its own output does not parse");
  }
  same (&v, &w);
  vd_json_free (&w);
  free (o.s);
  vd_json_free (&v);
  return 0;
}
