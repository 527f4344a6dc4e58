/* vmdiskfs - parser of LVM's JSON report (`lvs --reportformat json`).
 *
 * The report is whatever the lvm command printed (lvm-helper.c), so it is
 * untrusted bytes: a small recursive-descent JSON parser of our own
 * (bounded depth, every read checked against the end of the buffer, no
 * NUL inside strings), fuzzed by tests/fuzz/fuzz-lvm-json.c.  It keeps
 * only report[*].lv[*] objects and, of those, the fields of enum
 * lvm_field; everything else is parsed and skipped.  Thread-safe (no
 * state outside the call).
 *
 * What lvm 2.03.16 prints for the command lvm.c runs (lvs --reportformat
 * json --units b --nosuffix --config report/time_format=%s -o
 * lv_name,vg_name,lv_path,lv_dm_path,origin,lv_attr,lv_time,lv_size,
 * lv_tags,pool_lv,segtype,lv_active,lv_kernel_major,lv_kernel_minor,
 * origin_size), captured in the test guest, lines folded:
 *
 *   {
 *       "report": [
 *           {
 *               "lv": [
 *                   {"lv_name":"disk1", "vg_name":"vg0",
 *                    "lv_path":"/dev/vg0/disk1",
 *                    "lv_dm_path":"/dev/mapper/vg0-disk1", "origin":"",
 *                    "lv_attr":"owi-a-s---", "lv_time":"1795677267",
 *                    "lv_size":"67108864", "lv_tags":"", "pool_lv":"",
 *                    "segtype":"linear", "lv_active":"active",
 *                    "lv_kernel_major":"253", "lv_kernel_minor":"0",
 *                    "origin_size":"67108864"},
 *                   ...
 *                   {"lv_name":"thin1-t1", "vg_name":"vg0",
 *                    "lv_path":"/dev/vg0/thin1-t1",
 *                    "lv_dm_path":"/dev/mapper/vg0-thin1--t1",
 *                    "origin":"thin1", "lv_attr":"Vwi---tz-k",
 *                    "lv_time":"1795677271", "lv_size":"67108864",
 *                    "lv_tags":"vmdiskfs,vmdiskfs-name:before:upgrade",
 *                    "pool_lv":"pool", "segtype":"thin", "lv_active":"",
 *                    "lv_kernel_major":"-1", "lv_kernel_minor":"-1",
 *                    "origin_size":""}
 *               ]
 *           }
 *       ]
 *   }
 *
 * (each line indented by two more spaces; hidden LVs are named
 * "[pool_tdata]").  With --reportformat json_std (lvm >= 2.03.17) numbers
 * are JSON numbers and lv_tags an array: both are accepted.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lvm.h"
#include "log.h"

const char lvm_report_fields[] =
  "lv_name,vg_name,lv_path,lv_dm_path,origin,lv_attr,lv_time,lv_size,"
  "lv_tags,pool_lv,segtype,lv_active,lv_kernel_major,lv_kernel_minor,"
  "origin_size";

static const char *const field_names[LVM_F_COUNT] = {
  [LVM_F_LV_NAME] = "lv_name",
  [LVM_F_VG_NAME] = "vg_name",
  [LVM_F_LV_PATH] = "lv_path",
  [LVM_F_LV_DM_PATH] = "lv_dm_path",
  [LVM_F_ORIGIN] = "origin",
  [LVM_F_LV_ATTR] = "lv_attr",
  [LVM_F_LV_TIME] = "lv_time",
  [LVM_F_LV_SIZE] = "lv_size",
  [LVM_F_LV_TAGS] = "lv_tags",
  [LVM_F_POOL_LV] = "pool_lv",
  [LVM_F_SEGTYPE] = "segtype",
  [LVM_F_LV_ACTIVE] = "lv_active",
  [LVM_F_KERNEL_MAJOR] = "lv_kernel_major",
  [LVM_F_KERNEL_MINOR] = "lv_kernel_minor",
  [LVM_F_ORIGIN_SIZE] = "origin_size",
};

#define MAX_DEPTH 32

struct parser {
  const char *p, *end;
  unsigned depth;
  const char *start;
  const char *why;          /* first error */
};

/* A growing string. */
struct buf {
  char *s;
  size_t len, cap;
};

static int
buf_add (struct buf *b, const char *s, size_t n)
{
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 32;
    char *t;
    while (cap < b->len + n + 1)
      cap *= 2;
    t = realloc (b->s, cap);
    if (!t)
      return -1;
    b->s = t;
    b->cap = cap;
  }
  memcpy (b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
  return 0;
}

static int
bad (struct parser *ps, const char *why)
{
  if (!ps->why)
    ps->why = why;
  errno = EIO;
  return -1;
}

static void
skip_ws (struct parser *ps)
{
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

/* Consume c (after white space) or fail. */
static int
expect (struct parser *ps, char c)
{
  skip_ws (ps);
  if (ps->p >= ps->end || *ps->p != c)
    return bad (ps, "unexpected character");
  ps->p++;
  return 0;
}

/* Next non-blank character, not consumed; 0 at the end. */
static char
peek (struct parser *ps)
{
  skip_ws (ps);
  return ps->p < ps->end ? *ps->p : 0;
}

static int
hex4 (struct parser *ps, unsigned *v)
{
  unsigned i;

  if (ps->end - ps->p < 4)
    return bad (ps, "short \\u escape");
  *v = 0;
  for (i = 0; i < 4; i++) {
    char c = ps->p[i];
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= c - '0';
    else if (c >= 'a' && c <= 'f') *v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') *v |= c - 'A' + 10;
    else return bad (ps, "bad \\u escape");
  }
  ps->p += 4;
  return 0;
}

/* A string; its value appended to out unless out is NULL. */
static int
parse_string (struct parser *ps, struct buf *out)
{
  if (expect (ps, '"') < 0)
    return -1;
  for (;;) {
    const char *run = ps->p;
    char tmp[4];
    size_t tn = 0;

    while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\' &&
           (unsigned char) *ps->p >= 0x20)
      ps->p++;
    if (out && ps->p > run && buf_add (out, run, ps->p - run) < 0)
      return -1;
    if (ps->p >= ps->end)
      return bad (ps, "unterminated string");
    if (*ps->p == '"') {
      ps->p++;
      if (out && !out->s && buf_add (out, "", 0) < 0)
        return -1;
      return 0;
    }
    if (*ps->p != '\\')
      return bad (ps, "control character in string");
    ps->p++;
    if (ps->p >= ps->end)
      return bad (ps, "unterminated escape");
    switch (*ps->p++) {
    case '"': tmp[tn++] = '"'; break;
    case '\\': tmp[tn++] = '\\'; break;
    case '/': tmp[tn++] = '/'; break;
    case 'b': tmp[tn++] = '\b'; break;
    case 'f': tmp[tn++] = '\f'; break;
    case 'n': tmp[tn++] = '\n'; break;
    case 'r': tmp[tn++] = '\r'; break;
    case 't': tmp[tn++] = '\t'; break;
    case 'u': {
      unsigned cp, lo;
      if (hex4 (ps, &cp) < 0)
        return -1;
      if (cp >= 0xdc00 && cp <= 0xdfff)
        return bad (ps, "lone low surrogate");
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
          return bad (ps, "lone high surrogate");
        ps->p += 2;
        if (hex4 (ps, &lo) < 0)
          return -1;
        if (lo < 0xdc00 || lo > 0xdfff)
          return bad (ps, "bad surrogate pair");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      }
      if (cp == 0)
        return bad (ps, "NUL in string");
      if (cp < 0x80)
        tmp[tn++] = cp;
      else if (cp < 0x800) {
        tmp[tn++] = 0xc0 | (cp >> 6);
        tmp[tn++] = 0x80 | (cp & 0x3f);
      }
      else if (cp < 0x10000) {
        tmp[tn++] = 0xe0 | (cp >> 12);
        tmp[tn++] = 0x80 | ((cp >> 6) & 0x3f);
        tmp[tn++] = 0x80 | (cp & 0x3f);
      }
      else {
        tmp[tn++] = 0xf0 | (cp >> 18);
        tmp[tn++] = 0x80 | ((cp >> 12) & 0x3f);
        tmp[tn++] = 0x80 | ((cp >> 6) & 0x3f);
        tmp[tn++] = 0x80 | (cp & 0x3f);
      }
      break;
    }
    default:
      return bad (ps, "bad escape");
    }
    if (out && buf_add (out, tmp, tn) < 0)
      return -1;
  }
}

/* A number, true, false or null; its text appended to out unless NULL. */
static int
parse_scalar (struct parser *ps, struct buf *out)
{
  const char *s;
  size_t n;

  skip_ws (ps);
  s = ps->p;
  while (ps->p < ps->end &&
         ((*ps->p >= '0' && *ps->p <= '9') || (*ps->p >= 'a' && *ps->p <= 'z') ||
          *ps->p == '-' || *ps->p == '+' || *ps->p == '.' || *ps->p == 'E'))
    ps->p++;
  n = ps->p - s;
  if (n == 0)
    return bad (ps, "expected a value");
  if ((s[0] >= 'a' && s[0] <= 'z') &&
      !(n == 4 && memcmp (s, "true", 4) == 0) &&
      !(n == 5 && memcmp (s, "false", 5) == 0) &&
      !(n == 4 && memcmp (s, "null", 4) == 0))
    return bad (ps, "unknown literal");
  if (!(s[0] >= 'a' && s[0] <= 'z')) {
    /* -?digits[.digits][(e|E)[+-]digits], checked loosely: no letters
     * other than e/E. */
    size_t i;
    for (i = 0; i < n; i++)
      if (s[i] >= 'a' && s[i] <= 'z' && s[i] != 'e')
        return bad (ps, "bad number");
  }
  if (out && buf_add (out, s, n) < 0)
    return -1;
  return 0;
}

static int skip_value (struct parser *ps);

/* Call member (ps, key, opaque) for each "key": value of an object; member
 * must consume the value. */
static int
parse_object (struct parser *ps,
              int (*member) (struct parser *, const char *, void *),
              void *opaque)
{
  if (++ps->depth > MAX_DEPTH)
    return bad (ps, "nested too deeply");
  if (expect (ps, '{') < 0)
    return -1;
  if (peek (ps) == '}') {
    ps->p++;
    ps->depth--;
    return 0;
  }
  for (;;) {
    struct buf key = { 0 };
    int r;

    if (parse_string (ps, &key) < 0 || expect (ps, ':') < 0) {
      free (key.s);
      return -1;
    }
    r = member (ps, key.s, opaque);
    free (key.s);
    if (r < 0)
      return -1;
    if (peek (ps) == ',') {
      ps->p++;
      continue;
    }
    if (expect (ps, '}') < 0)
      return -1;
    ps->depth--;
    return 0;
  }
}

/* Call element (ps, opaque) for each value of an array. */
static int
parse_array (struct parser *ps, int (*element) (struct parser *, void *),
             void *opaque)
{
  if (++ps->depth > MAX_DEPTH)
    return bad (ps, "nested too deeply");
  if (expect (ps, '[') < 0)
    return -1;
  if (peek (ps) == ']') {
    ps->p++;
    ps->depth--;
    return 0;
  }
  for (;;) {
    if (element (ps, opaque) < 0)
      return -1;
    if (peek (ps) == ',') {
      ps->p++;
      continue;
    }
    if (expect (ps, ']') < 0)
      return -1;
    ps->depth--;
    return 0;
  }
}

static int
skip_member (struct parser *ps, const char *key, void *opaque)
{
  return skip_value (ps);
}

static int
skip_element (struct parser *ps, void *opaque)
{
  return skip_value (ps);
}

static int
skip_value (struct parser *ps)
{
  switch (peek (ps)) {
  case '{': return parse_object (ps, skip_member, NULL);
  case '[': return parse_array (ps, skip_element, NULL);
  case '"': return parse_string (ps, NULL);
  default: return parse_scalar (ps, NULL);
  }
}

/* An array of strings (json_std lv_tags): joined with ','. */
static int
join_element (struct parser *ps, void *opaque)
{
  struct buf *b = opaque;

  if (peek (ps) != '"')
    return bad (ps, "array of non-strings in a field");
  if (b->len > 0 && buf_add (b, ",", 1) < 0)
    return -1;
  return parse_string (ps, b);
}

static int
lv_member (struct parser *ps, const char *key, void *opaque)
{
  struct lvm_lv *lv = opaque;
  struct buf v = { 0 };
  int i, r;

  for (i = 0; i < LVM_F_COUNT; i++)
    if (strcmp (key, field_names[i]) == 0)
      break;
  if (i == LVM_F_COUNT)
    return skip_value (ps);

  switch (peek (ps)) {
  case '"': r = parse_string (ps, &v); break;
  case '[': r = parse_array (ps, join_element, &v); break;
  case '{': return bad (ps, "object as a field value");
  default: r = parse_scalar (ps, &v); break;
  }
  if (r == 0 && !v.s && buf_add (&v, "", 0) < 0)
    r = -1;
  if (r < 0) {
    free (v.s);
    return -1;
  }
  free (lv->f[i]);                /* a repeated key: the last one counts */
  lv->f[i] = v.s;
  return 0;
}

struct lv_list {
  struct lvm_lv *lvs;
  size_t n, cap;
};

static int
lv_element (struct parser *ps, void *opaque)
{
  struct lv_list *l = opaque;
  struct lvm_lv *lv;
  int i;

  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    struct lvm_lv *t = realloc (l->lvs, cap * sizeof *t);
    if (!t)
      return -1;
    l->lvs = t;
    l->cap = cap;
  }
  lv = &l->lvs[l->n++];
  memset (lv, 0, sizeof *lv);
  if (parse_object (ps, lv_member, lv) < 0)
    return -1;
  for (i = 0; i < LVM_F_COUNT; i++)
    if (!lv->f[i] && !(lv->f[i] = strdup ("")))
      return -1;
  return 0;
}

static int
section_member (struct parser *ps, const char *key, void *opaque)
{
  if (strcmp (key, "lv") == 0)
    return parse_array (ps, lv_element, opaque);
  return skip_value (ps);        /* "vg", "pv", "seg", "log" ... */
}

static int
report_element (struct parser *ps, void *opaque)
{
  return parse_object (ps, section_member, opaque);
}

static int
top_member (struct parser *ps, const char *key, void *opaque)
{
  if (strcmp (key, "report") == 0)
    return parse_array (ps, report_element, opaque);
  return skip_value (ps);        /* "log" with report_command_log */
}

int
lvm_json_parse (const char *buf, size_t len, struct lvm_lv **lvs, size_t *n)
{
  struct parser ps = { .p = buf, .end = buf + len, .start = buf };
  struct lv_list l = { 0 };

  errno = 0;
  if (parse_object (&ps, top_member, &l) < 0)
    goto fail;
  skip_ws (&ps);
  if (ps.p != ps.end) {
    bad (&ps, "trailing bytes");
    goto fail;
  }
  *lvs = l.lvs;
  *n = l.n;
  return 0;

 fail:
  {
    int e = errno ? errno : EIO;
    if (ps.why)
      vd_error ("lvm: report: %s at byte %zu", ps.why,
                (size_t) (ps.p - ps.start));
    lvm_lvs_free (l.lvs, l.n);
    errno = e;
    return -1;
  }
}

void
lvm_lvs_free (struct lvm_lv *lvs, size_t n)
{
  size_t i;
  int j;

  for (i = 0; i < n; i++)
    for (j = 0; j < LVM_F_COUNT; j++)
      free (lvs[i].f[j]);
  free (lvs);
}
