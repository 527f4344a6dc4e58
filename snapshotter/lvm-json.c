/* vmdiskfs - reader of LVM's JSON report (`lvs --reportformat json`).
 *
 * The report is whatever the lvm command printed (lvm-helper.c), so it is
 * untrusted bytes.  It is parsed whole by json.c, the project's one JSON
 * reader (bounded depth, every read checked against the end of the
 * buffer, no NUL inside strings), then report[*].lv[*] are walked and, of
 * each LV, the fields of enum lvm_field kept; everything else is left in
 * the tree and freed with it.  Field strings are moved out of the tree,
 * not copied.  Fuzzed by tests/fuzz/fuzz-lvm-json.c (this layer) and
 * tests/fuzz/fuzz-json.c (the reader).  Thread-safe (no state outside the
 * call).
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
#include <stdlib.h>
#include <string.h>

#include "json.h"
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

/* Where the walk is, for the error message. */
struct walk {
  const char *why;              /* NULL: out of memory */
  size_t report, lv;
  bool in_lv;
};

static int
bad (struct walk *w, const char *why)
{
  w->why = why;
  errno = EIO;
  return -1;
}

/* A field's value as a string, moved out of v: a string, or the text of
 * a number or literal; an array of strings (json_std lv_tags) joined
 * with ','. */
static int
take_field (struct walk *w, struct vd_json *v, char **out)
{
  size_t i, len = 0;
  char *s;

  switch (v->t) {
  case VD_JSON_STR: case VD_JSON_NUM: case VD_JSON_BOOL: case VD_JSON_NULL:
    *out = v->s;
    v->s = NULL;
    return 0;
  case VD_JSON_OBJ:
    return bad (w, "object as a field value");
  case VD_JSON_ARR:
    break;
  }
  for (i = 0; i < v->n; i++) {
    if (v->v[i].t != VD_JSON_STR)
      return bad (w, "array of non-strings in a field");
    len += strlen (v->v[i].s) + 1;
  }
  s = malloc (len + 1);
  if (!s)
    return -1;
  *s = '\0';
  for (i = 0, len = 0; i < v->n; i++) {
    size_t l = strlen (v->v[i].s);
    if (i > 0)
      s[len++] = ',';
    memcpy (s + len, v->v[i].s, l + 1);
    len += l;
  }
  *out = s;
  return 0;
}

/* One report[*].lv[*] object into *lv (all fields NULL on entry). */
static int
take_lv (struct walk *w, struct vd_json *o, struct lvm_lv *lv)
{
  size_t i;
  int f;

  if (o->t != VD_JSON_OBJ)
    return bad (w, "an LV that is no object");
  for (i = 0; i < o->n; i++) {
    char *s;

    for (f = 0; f < LVM_F_COUNT; f++)
      if (strcmp (o->k[i], field_names[f]) == 0)
        break;
    if (f == LVM_F_COUNT)
      continue;                 /* a field not asked for */
    if (take_field (w, &o->v[i], &s) < 0)
      return -1;
    free (lv->f[f]);            /* a repeated key: the last one counts */
    lv->f[f] = s;
  }
  for (f = 0; f < LVM_F_COUNT; f++)
    if (!lv->f[f] && !(lv->f[f] = strdup ("")))
      return -1;
  return 0;
}

/* Walk report[*].lv[*] of doc: count them (lvs NULL) or take them into
 * lvs[0..*n).  Other keys and sections ("vg", "log" ...) are skipped;
 * every "report" and every "lv" counts, in order. */
static int
walk_report (struct walk *w, struct vd_json *doc, struct lvm_lv *lvs,
             size_t *n)
{
  size_t i, j, k, l;

  *n = 0;
  if (doc->t != VD_JSON_OBJ)
    return bad (w, "not an object");
  for (i = 0; i < doc->n; i++) {
    struct vd_json *rep = &doc->v[i];

    if (strcmp (doc->k[i], "report") != 0)
      continue;
    if (rep->t != VD_JSON_ARR)
      return bad (w, "\"report\" is not an array");
    for (j = 0; j < rep->n; j++) {
      struct vd_json *sec = &rep->v[j];

      w->report = j;
      if (sec->t != VD_JSON_OBJ)
        return bad (w, "a report section that is no object");
      for (k = 0; k < sec->n; k++) {
        struct vd_json *lva = &sec->v[k];

        if (strcmp (sec->k[k], "lv") != 0)
          continue;
        if (lva->t != VD_JSON_ARR)
          return bad (w, "\"lv\" is not an array");
        for (l = 0; l < lva->n; l++) {
          w->lv = l;
          w->in_lv = true;
          if (lvs && take_lv (w, &lva->v[l], &lvs[*n]) < 0)
            return -1;
          if (!lvs && lva->v[l].t != VD_JSON_OBJ)
            return bad (w, "an LV that is no object");
          ++*n;
          w->in_lv = false;
        }
      }
    }
  }
  return 0;
}

int
lvm_json_parse (const char *buf, size_t len, struct lvm_lv **lvs, size_t *n)
{
  struct vd_json doc;
  struct walk w = { 0 };
  struct lvm_lv *l = NULL;
  size_t count = 0, got = 0, at;
  const char *err;
  int e;

  if (vd_json_parse (buf, len, &doc, &err, &at) < 0) {
    if (errno == ENOMEM)
      return -1;
    vd_error ("lvm: report: %s at byte %zu", err, at);
    errno = EIO;
    return -1;
  }
  if (walk_report (&w, &doc, NULL, &count) < 0)
    goto fail;
  if (count > 0) {
    l = calloc (count, sizeof *l);
    if (!l)
      goto fail;
    if (walk_report (&w, &doc, l, &got) < 0)
      goto fail;
  }
  vd_json_free (&doc);
  *lvs = l;
  *n = count;
  return 0;

 fail:
  e = w.why ? EIO : ENOMEM;
  if (w.why && w.in_lv)
    vd_error ("lvm: report: report[%zu].lv[%zu]: %s", w.report, w.lv, w.why);
  else if (w.why)
    vd_error ("lvm: report: %s", w.why);
  lvm_lvs_free (l, l ? count : 0);
  vd_json_free (&doc);
  errno = e;
  return -1;
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
