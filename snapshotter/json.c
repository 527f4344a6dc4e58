/* vmdiskfs - the project's JSON reader (json.h): recursive
 * descent into a tree; strings are decoded (escapes, surrogate pairs to
 * UTF-8), numbers and literals kept as text.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "vec.h"

struct jparse {
  const char *p, *end;
  const char *err;
  size_t values;              /* parsed so far, VD_JSON_MAX_VALUES at most */
};

void
vd_json_free (struct vd_json *v)
{
  size_t i;

  if (!v)
    return;
  free (v->s);
  for (i = 0; i < v->n; i++) {
    vd_json_free (&v->v[i]);
    if (v->k)
      free (v->k[i]);
  }
  free (v->v);
  free (v->k);
  memset (v, 0, sizeof *v);
}

static void
skip_ws (struct jparse *j)
{
  while (j->p < j->end &&
         (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
    j->p++;
}

static int
hex4 (struct jparse *j, unsigned *out)
{
  unsigned v = 0;
  int i;

  if (j->end - j->p < 4)
    return -1;
  for (i = 0; i < 4; i++) {
    char c = *j->p++;
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return -1;
  }
  *out = v;
  return 0;
}

/* At '"': the decoded string, malloc'd, or NULL (j->err set). */
static char *
string (struct jparse *j)
{
  struct vd_buf b = { 0 };

  j->p++;
  if (!vd_buf_add (&b, "", 0))
    goto nomem;
  for (;;) {
    const char *run = j->p;
    unsigned char c;
    char u[4];
    size_t n = 1;

    /* Plain bytes up to the next quote, escape or control character
     * are copied at once (LVM reports run to megabytes). */
    while (j->p < j->end && *j->p != '"' && *j->p != '\\' &&
           (unsigned char) *j->p >= 0x20)
      j->p++;
    if (j->p > run && !vd_buf_add (&b, run, j->p - run))
      goto nomem;
    if (j->p >= j->end) {
      j->err = "unterminated string";
      goto fail;
    }
    c = *j->p++;
    if (c == '"')
      break;
    if (c < 0x20) {
      j->err = "control character in a string";
      goto fail;
    }
    u[0] = c;
    if (c == '\\') {
      if (j->p >= j->end) {
        j->err = "unterminated string";
        goto fail;
      }
      c = *j->p++;
      switch (c) {
      case '"': case '\\': case '/': u[0] = c; break;
      case 'b': u[0] = '\b'; break;
      case 'f': u[0] = '\f'; break;
      case 'n': u[0] = '\n'; break;
      case 'r': u[0] = '\r'; break;
      case 't': u[0] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (hex4 (j, &cp) < 0) {
          j->err = "bad \\u escape";
          goto fail;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) {
          if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') {
            j->err = "lone high surrogate";
            goto fail;
          }
          j->p += 2;
          if (hex4 (j, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
            j->err = "bad surrogate pair";
            goto fail;
          }
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        else if (cp >= 0xdc00 && cp <= 0xdfff) {
          j->err = "lone low surrogate";
          goto fail;
        }
        if (cp == 0) {
          j->err = "NUL in a string";
          goto fail;
        }
        if (cp < 0x80)
          u[0] = cp;
        else if (cp < 0x800) {
          u[0] = 0xc0 | cp >> 6;
          u[1] = 0x80 | (cp & 0x3f);
          n = 2;
        }
        else if (cp < 0x10000) {
          u[0] = 0xe0 | cp >> 12;
          u[1] = 0x80 | (cp >> 6 & 0x3f);
          u[2] = 0x80 | (cp & 0x3f);
          n = 3;
        }
        else {
          u[0] = 0xf0 | cp >> 18;
          u[1] = 0x80 | (cp >> 12 & 0x3f);
          u[2] = 0x80 | (cp >> 6 & 0x3f);
          u[3] = 0x80 | (cp & 0x3f);
          n = 4;
        }
        break;
      }
      default:
        j->err = "bad escape";
        goto fail;
      }
    }
    if (!vd_buf_add (&b, u, n))
      goto nomem;
  }
  return b.s;

 nomem:
  j->err = "out of memory";
 fail:
  free (b.s);
  return NULL;
}

static int
value (struct jparse *j, struct vd_json *v, int depth)
{
  memset (v, 0, sizeof *v);
  skip_ws (j);
  if (j->p >= j->end) {
    j->err = "unexpected end";
    return -1;
  }
  if (depth > VD_JSON_MAX_DEPTH) {
    j->err = "nested too deeply";
    return -1;
  }
  if (++j->values > VD_JSON_MAX_VALUES) {
    j->err = "too many values";
    return -1;
  }
  if (*j->p == '"') {
    v->t = VD_JSON_STR;
    v->s = string (j);
    return v->s ? 0 : -1;
  }
  if (*j->p == '[' || *j->p == '{') {
    bool obj = *j->p == '{';
    char close = obj ? '}' : ']';
    size_t cap = 0;

    v->t = obj ? VD_JSON_OBJ : VD_JSON_ARR;
    j->p++;
    skip_ws (j);
    if (j->p < j->end && *j->p == close) {
      j->p++;
      return 0;
    }
    for (;;) {
      char *key = NULL;

      if (obj) {
        skip_ws (j);
        if (j->p >= j->end || *j->p != '"') {
          j->err = "expected a key";
          goto fail;
        }
        key = string (j);
        if (!key)
          goto fail;
        skip_ws (j);
        if (j->p >= j->end || *j->p != ':') {
          free (key);
          j->err = "expected ':'";
          goto fail;
        }
        j->p++;
      }
      if (v->n == cap) {
        /* Values and keys grow together: both to the new capacity. */
        size_t nc = cap, kc = cap;
        struct vd_json *nv = vd_vec_grow (v->v, &nc, v->n, 1, sizeof *nv);
        char **nk = NULL;
        if (nv)
          v->v = nv;
        if (nv && obj) {
          nk = vd_vec_grow (v->k, &kc, v->n, nc - v->n, sizeof *nk);
          if (nk)
            v->k = nk;
        }
        if (!nv || (obj && !nk)) {
          free (key);
          j->err = "out of memory";
          goto fail;
        }
        cap = nc;
      }
      if (value (j, &v->v[v->n], depth + 1) < 0) {
        free (key);
        goto fail;
      }
      if (obj)
        v->k[v->n] = key;
      v->n++;
      skip_ws (j);
      if (j->p < j->end && *j->p == ',') {
        j->p++;
        continue;
      }
      if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
      }
      j->err = "expected ',' or a closing bracket";
      goto fail;
    }
  fail:
    vd_json_free (v);
    return -1;
  }

  /* A number or a literal, kept as text. */
  {
    const char *s = j->p;
    size_t l;

    while (j->p < j->end && *j->p && strchr ("0123456789+-.eEtruefalsn",
                                             *j->p))
      j->p++;
    l = j->p - s;
    if (l == 0) {
      j->err = "unexpected character";
      return -1;
    }
    if (l == 4 && memcmp (s, "null", 4) == 0)
      v->t = VD_JSON_NULL;
    else if ((l == 4 && memcmp (s, "true", 4) == 0) ||
             (l == 5 && memcmp (s, "false", 5) == 0))
      v->t = VD_JSON_BOOL;
    else {
      size_t i;
      for (i = 0; i < l; i++)
        if (!strchr ("0123456789+-.eE", s[i])) {
          j->err = "unknown literal";
          return -1;
        }
      v->t = VD_JSON_NUM;
    }
    v->s = strndup (s, l);
    if (!v->s) {
      j->err = "out of memory";
      return -1;
    }
    return 0;
  }
}

int
vd_json_parse (const char *s, size_t len, struct vd_json *v,
               const char **err, size_t *at)
{
  struct jparse j = { .p = s, .end = s + len };

  if (value (&j, v, 0) < 0) {
    *err = j.err ? j.err : "malformed";
    errno = j.err && strcmp (j.err, "out of memory") == 0 ? ENOMEM : EINVAL;
    goto fail;
  }
  skip_ws (&j);
  if (j.p != j.end) {
    vd_json_free (v);
    *err = "trailing bytes";
    errno = EINVAL;
    goto fail;
  }
  return 0;

 fail:
  if (at)
    *at = j.p - s;
  return -1;
}

const struct vd_json *
vd_json_get (const struct vd_json *o, const char *key)
{
  size_t i;

  if (!o || o->t != VD_JSON_OBJ)
    return NULL;
  for (i = 0; i < o->n; i++)
    if (strcmp (o->k[i], key) == 0)
      return &o->v[i];
  return NULL;
}

const char *
vd_json_str (const struct vd_json *v)
{
  return v && v->t == VD_JSON_STR ? v->s : NULL;
}
