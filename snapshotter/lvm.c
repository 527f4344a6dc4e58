/* vmdiskfs - the LVM snapshot provider: classic and thin snapshots of a
 * logical volume.
 *
 * Every call asks LVM afresh (one `lvs` report through lvm-helper.c, so
 * liblvm2cmd runs in a forked child, never in the FUSE process) and keeps
 * nothing, so it is safe from any thread and never stale.
 *
 * The disk is found in the report by its device number (lv_kernel_major/
 * minor against stat of the path: /dev/VG/LV, /dev/mapper/VG-LV, /dev/dm-N
 * or any symlink), or by lv_path/lv_dm_path when it is not active.  Its
 * snapshots are the LVs of the same VG whose origin is the disk: classic
 * (lv_attr[0] 's') and thin (lv_attr[0] 'V').  A merging snapshot ('S')
 * is left out: it is becoming the origin.
 *
 * Names shown (README "LVM snapshots"): the tag vmdiskfs-name:NAME when
 * present; else the part after "<origin>-" when the LV name starts with
 * it; else the whole LV name.  When two snapshots would show the same
 * name, the later one shows its whole LV name (unique in the VG).
 * Snapshots made by vmdiskfs carry the tag vmdiskfs.  A classic snapshot
 * is made only when its copy-on-write space fits in the VG (vgs first):
 * else ENOSPC.
 *
 * Thin snapshots are created with the activation-skip flag, so they are
 * usually inactive: activate() runs `lvchange -ay -K`, deactivate()
 * `lvchange -an`; the caller decides when (DESIGN: when idle).  A classic
 * snapshot is inactive only with its origin, and both change together.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "snapshotter.h"
#include "lvm.h"
#include "json.h"
#include "log.h"
#include "cleanup.h"

#define LVM_TIMEOUT_MS 60000
#define TAG_OURS "vmdiskfs"
#define TAG_CLI "vmdisk-snapshot"
#define TAG_NAME "vmdiskfs-name:"
#define LVM_NAME_MAX 127

/* Characters LVM allows in VG and LV names, and in tags.  Checked before
 * anything goes on a command line (liblvm2cmd splits it at blanks). */
static bool
valid_chars (const char *s, const char *extra)
{
  if (!*s || *s == '-')
    return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || strchr ("+_.-", *s) ||
          (extra && strchr (extra, *s))))
      return false;
  return true;
}

/* "VG/LV" with both parts valid LVM names. */
static bool
valid_id (const char *id)
{
  const char *slash = strchr (id, '/');
  CLEANUP_FREE char *vg = NULL;

  if (!slash || slash == id || strlen (id) > 2 * LVM_NAME_MAX + 1)
    return false;
  vg = strndup (id, slash - id);
  return vg && valid_chars (vg, NULL) && valid_chars (slash + 1, NULL);
}

static bool
valid_tag (const char *t)
{
  return strlen (t) <= 1024 && valid_chars (t, "/=!:&#");
}

bool
lvm_snapshot_name_ok (const char *name)
{
  CLEANUP_FREE char *tag = NULL;

  if (asprintf (&tag, TAG_NAME "%s", name) < 0)
    return false;
  return valid_tag (tag);
}

/* lvs for every visible LV.  Times as seconds since the epoch, whatever
 * the host's lvm.conf says (report/time_format). */
static int
report (struct lvm_lv **lvs, size_t *n)
{
  CLEANUP_FREE char *cmd = NULL, *out = NULL;

  if (asprintf (&cmd, "lvs --reportformat json --units b --nosuffix "
                "--config report/time_format=%%s -o %s",
                lvm_report_fields) < 0)
    return -1;
  if (lvm_helper_run (cmd, LVM_TIMEOUT_MS, &out) < 0)
    return -1;
  if (!out) {
    vd_error ("lvm: lvs wrote no report");
    errno = EIO;
    return -1;
  }
  vd_debug ("lvm: report: %s", out);
  return lvm_json_parse (out, strlen (out), lvs, n);
}

/* lv_time: seconds (what report() asks for), or "2026-11-26 06:37:28
 * +0000" (lvm's default report/time_format).  -1 when neither. */
static int64_t
parse_time (const char *s)
{
  struct tm tm = { 0 };
  int off_h, off_m, n = 0;
  char sign;
  int64_t t;

  if (*s >= '0' && *s <= '9' && strspn (s, "0123456789") == strlen (s))
    return strtoll (s, NULL, 10);
  if (sscanf (s, "%4d-%2d-%2d %2d:%2d:%2d %c%2d%2d%n", &tm.tm_year,
              &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec,
              &sign, &off_h, &off_m, &n) != 9 || s[n] != '\0' ||
      (sign != '+' && sign != '-'))
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  t = timegm (&tm);
  if (t == -1)
    return -1;
  t -= (sign == '+' ? 1 : -1) * (off_h * 3600 + off_m * 60);
  return t;
}

static uint64_t
parse_u64 (const char *s)
{
  return strtoull (s, NULL, 10);
}

/* The first tag of the comma-separated list that is prefix (whole) or
 * starts with it and is longer (!whole): its start and *len, or NULL. */
static const char *
tag_find (const char *tags, const char *prefix, bool whole, size_t *len)
{
  size_t n = strlen (prefix);
  const char *p = tags;

  while (*p) {
    const char *c = strchr (p, ',');
    size_t l = c ? (size_t) (c - p) : strlen (p);
    if ((whole ? l == n : l > n) && memcmp (p, prefix, n) == 0) {
      *len = l;
      return p;
    }
    if (!c)
      break;
    p = c + 1;
  }
  return NULL;
}

static bool
has_tag (const char *tags, const char *tag)
{
  size_t l;
  return tag_find (tags, tag, true, &l) != NULL;
}

/* The value of the first tag PREFIXvalue, malloc'd, or NULL. */
static char *
tag_value (const char *tags, const char *prefix)
{
  size_t l, n = strlen (prefix);
  const char *t = tag_find (tags, prefix, false, &l);
  return t ? strndup (t + n, l - n) : NULL;
}

/* The LV that disk names, or NULL with errno ENOTSUP (not a logical
 * volume) or ENOENT (no such file, nor an inactive LV's path). */
static const struct lvm_lv *
find_disk (const char *disk, const struct lvm_lv *lvs, size_t n)
{
  struct stat st;
  int st_r = stat (disk, &st);
  bool blk = st_r == 0 && S_ISBLK (st.st_mode);
  size_t i;

  for (i = 0; i < n; i++) {
    const struct lvm_lv *lv = &lvs[i];
    if (blk && *lv->f[LVM_F_KERNEL_MAJOR] != '-' &&
        *lv->f[LVM_F_KERNEL_MAJOR] &&
        (unsigned) atoi (lv->f[LVM_F_KERNEL_MAJOR]) == major (st.st_rdev) &&
        (unsigned) atoi (lv->f[LVM_F_KERNEL_MINOR]) == minor (st.st_rdev))
      return lv;
  }
  /* Not active (or not a device here): by name. */
  for (i = 0; i < n; i++) {
    const struct lvm_lv *lv = &lvs[i];
    if ((*lv->f[LVM_F_LV_PATH] && strcmp (disk, lv->f[LVM_F_LV_PATH]) == 0) ||
        (*lv->f[LVM_F_LV_DM_PATH] &&
         strcmp (disk, lv->f[LVM_F_LV_DM_PATH]) == 0))
      return lv;
  }
  errno = st_r < 0 ? ENOENT : ENOTSUP;
  return NULL;
}

static void
lvm_id_of (const struct lvm_lv *lv, char **id)
{
  if (asprintf (id, "%s/%s", lv->f[LVM_F_VG_NAME], lv->f[LVM_F_LV_NAME]) < 0)
    *id = NULL;
}

/* Fill s from the snapshot LV lv of origin o.  0 or -1 (ENOMEM). */
static int
fill_info (struct snap_info *s, const struct lvm_lv *lv,
           const struct lvm_lv *o)
{
  const char *attr = lv->f[LVM_F_LV_ATTR];
  const char *name = lv->f[LVM_F_LV_NAME];
  size_t ol = strlen (o->f[LVM_F_LV_NAME]);
  bool thin = attr[0] == 'V';

  memset (s, 0, sizeof *s);
  s->name = tag_value (lv->f[LVM_F_LV_TAGS], TAG_NAME);
  if (!s->name) {
    if (strncmp (name, o->f[LVM_F_LV_NAME], ol) == 0 && name[ol] == '-' &&
        name[ol + 1])
      s->name = strdup (name + ol + 1);
    else
      s->name = strdup (name);
  }
  lvm_id_of (lv, &s->id);
  lvm_id_of (o, &s->origin);
  s->device = *lv->f[LVM_F_LV_PATH] ? strdup (lv->f[LVM_F_LV_PATH])
    : NULL;
  if (!s->device && asprintf (&s->device, "/dev/%s/%s", lv->f[LVM_F_VG_NAME],
                              name) < 0)
    s->device = NULL;
  if (!s->name || !s->id || !s->origin || !s->device) {
    snap_info_clear (s);
    errno = ENOMEM;
    return -1;
  }
  s->ctime_sec = parse_time (lv->f[LVM_F_LV_TIME]);
  if (s->ctime_sec < 0) {
    vd_warn ("lvm: %s: unknown lv_time \"%s\"", s->id, lv->f[LVM_F_LV_TIME]);
    s->ctime_sec = 0;
  }
  /* A classic snapshot's lv_size is its copy-on-write space. */
  s->size = parse_u64 (thin ? lv->f[LVM_F_LV_SIZE]
                       : *lv->f[LVM_F_ORIGIN_SIZE] ? lv->f[LVM_F_ORIGIN_SIZE]
                       : o->f[LVM_F_LV_SIZE]);
  if (thin)
    s->flags |= SNAP_THIN;
  if (has_tag (lv->f[LVM_F_LV_TAGS], TAG_OURS))
    s->flags |= SNAP_OURS;
  if (has_tag (lv->f[LVM_F_LV_TAGS], TAG_CLI))
    s->flags |= SNAP_TAG_CLI;
  /* lv_attr[4]: (a)ctive, (I)nvalid snapshot, invalid (S)uspended one,
   * '-' inactive ... */
  if (strlen (attr) >= 5 && (attr[4] == 'I' || attr[4] == 'S'))
    s->flags |= SNAP_INVALID;
  else if (strlen (attr) >= 5 && attr[4] == 'a')
    s->flags |= SNAP_ACTIVE;
  else
    s->flags |= SNAP_NEEDS_ACTIVATION;
  return 0;
}

static int
cmp_snap (const void *a, const void *b)
{
  const struct snap_info *x = a, *y = b;
  if (x->ctime_sec != y->ctime_sec)
    return x->ctime_sec < y->ctime_sec ? -1 : 1;
  return strcmp (x->id, y->id);
}

/* The snapshots of origin o among lvs. */
static int
collect (const struct lvm_lv *lvs, size_t n, const struct lvm_lv *o,
         struct snap_info **snaps, size_t *ns)
{
  struct snap_info *v;
  size_t i, j, k = 0;

  v = calloc (n ? n : 1, sizeof *v);
  if (!v)
    return -1;
  for (i = 0; i < n; i++) {
    const struct lvm_lv *lv = &lvs[i];
    char t = lv->f[LVM_F_LV_ATTR][0];
    if (lv == o || (t != 's' && t != 'V') ||
        strcmp (lv->f[LVM_F_VG_NAME], o->f[LVM_F_VG_NAME]) != 0 ||
        strcmp (lv->f[LVM_F_ORIGIN], o->f[LVM_F_LV_NAME]) != 0)
      continue;
    if (fill_info (&v[k], lv, o) < 0) {
      snap_list_free (v, k);
      return -1;
    }
    k++;
  }
  qsort (v, k, sizeof *v, cmp_snap);

  /* Shown names unique: a later duplicate shows its whole LV name; if
   * even that is taken (by a tag), it is left out. */
  for (i = 0; i < k; i++) {
    for (j = 0; j < i; j++)
      if (strcmp (v[i].name, v[j].name) == 0)
        break;
    if (j == i)
      continue;
    {
      const char *lvname = strchr (v[i].id, '/') + 1;
      for (j = 0; j < i; j++)
        if (strcmp (lvname, v[j].name) == 0)
          break;
      if (j == i && strcmp (lvname, v[i].name) != 0) {
        char *t = strdup (lvname);
        if (!t) {
          snap_list_free (v, k);
          return -1;
        }
        free (v[i].name);
        v[i].name = t;
        continue;
      }
      vd_warn ("lvm: %s: name \"%s\" taken by another snapshot: not shown",
               v[i].id, v[i].name);
      snap_info_clear (&v[i]);
      memmove (&v[i], &v[i + 1], (k - i - 1) * sizeof *v);
      k--;
      i--;
    }
  }
  *snaps = v;
  *ns = k;
  return 0;
}

/* A disk that exists and is no block device (an image file) is not
 * ours: said without asking LVM. */
static bool
surely_not_lv (const char *disk)
{
  struct stat st;

  if (stat (disk, &st) == 0 && !S_ISBLK (st.st_mode)) {
    errno = ENOTSUP;
    return true;
  }
  return false;
}

static int
lvm_list_many (const char *const *disks, size_t ndisks, struct snap_list *out)
{
  struct lvm_lv *lvs;
  size_t nl, i;

  if (report (&lvs, &nl) < 0)
    return -1;
  for (i = 0; i < ndisks; i++) {
    const struct lvm_lv *o;
    out[i] = (struct snap_list) { 0 };
    if (surely_not_lv (disks[i]) || !(o = find_disk (disks[i], lvs, nl)) ||
        collect (lvs, nl, o, &out[i].snaps, &out[i].n) < 0)
      out[i].err = errno;
  }
  lvm_lvs_free (lvs, nl);
  return 0;
}

static int
lvm_list (const char *disk, struct snap_info **snaps, size_t *n)
{
  struct snap_list l;

  *snaps = NULL;
  *n = 0;
  if (surely_not_lv (disk) || lvm_list_many (&disk, 1, &l) < 0)
    return -1;
  if (l.err) {
    errno = l.err;
    return -1;
  }
  *snaps = l.snaps;
  *n = l.n;
  return 0;
}

/* Run "lvchange ARGS ID" (or another command) on a checked id. */
static int
run_on (const char *what, const char *id)
{
  CLEANUP_FREE char *cmd = NULL;

  if (!valid_id (id)) {
    vd_error ("lvm: \"%s\": not a VG/LV name", id);
    errno = EINVAL;
    return -1;
  }
  if (asprintf (&cmd, "%s %s", what, id) < 0)
    return -1;
  return lvm_helper_run (cmd, LVM_TIMEOUT_MS, NULL);
}

/* A classic snapshot is active exactly when its origin is: LVM changes
 * both and asks first ("Change of snapshot ... will also change its
 * origin"), hence -y.  It refuses to deactivate an origin that is open
 * (a running VM), so deactivate cannot pull a disk from under a guest. */
static int
lvm_activate (struct snap_info *s)
{
  if (s->flags & SNAP_ACTIVE)
    return 0;
  /* -K: thin snapshots carry the activation-skip flag. */
  if (run_on (s->flags & SNAP_THIN ? "lvchange -ay -K" : "lvchange -ay -K -y",
              s->id) < 0)
    return -1;
  s->flags = (s->flags | SNAP_ACTIVE) & ~SNAP_NEEDS_ACTIVATION;
  return 0;
}

static int
lvm_deactivate (struct snap_info *s)
{
  if (run_on (s->flags & SNAP_THIN ? "lvchange -an" : "lvchange -an -y",
              s->id) < 0)
    return -1;
  s->flags = (s->flags & ~SNAP_ACTIVE) | SNAP_NEEDS_ACTIVATION;
  return 0;
}

static bool
lvm_lv_exists (const struct lvm_lv *lvs, size_t n, const char *vg,
           const char *lv)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp (lvs[i].f[LVM_F_VG_NAME], vg) == 0 &&
        strcmp (lvs[i].f[LVM_F_LV_NAME], lv) == 0)
      return true;
  return false;
}

/* Free bytes and the extent size of VG vg, from
 *   vgs --reportformat json --units b --nosuffix -o vg_free,vg_extent_size
 * which prints {"report":[{"vg":[{"vg_free":"12582912",
 * "vg_extent_size":"4194304"}]}]} (json_std: numbers).  The lvm report
 * parser keeps LVs only, so the generic JSON reader does this one. */
static int
vg_room (const char *vg, uint64_t *free_b, uint64_t *extent)
{
  CLEANUP_FREE char *cmd = NULL, *out = NULL;
  struct vd_json v;
  const struct vd_json *rep, *vgs, *f, *e;
  const char *err;
  int r = -1;

  if (!valid_chars (vg, NULL)) {
    errno = EINVAL;
    return -1;
  }
  if (asprintf (&cmd, "vgs --reportformat json --units b --nosuffix "
                "-o vg_free,vg_extent_size %s", vg) < 0)
    return -1;
  if (lvm_helper_run (cmd, LVM_TIMEOUT_MS, &out) < 0)
    return -1;
  if (!out || vd_json_parse (out, strlen (out), &v, &err, NULL) < 0) {
    vd_error ("lvm: vgs %s: report not understood", vg);
    errno = EIO;
    return -1;
  }
  rep = vd_json_get (&v, "report");
  vgs = rep && rep->t == VD_JSON_ARR && rep->n > 0
    ? vd_json_get (&rep->v[0], "vg") : NULL;
  if (vgs && vgs->t == VD_JSON_ARR && vgs->n == 1) {
    f = vd_json_get (&vgs->v[0], "vg_free");
    e = vd_json_get (&vgs->v[0], "vg_extent_size");
    if (f && e && f->s && e->s &&
        (f->t == VD_JSON_STR || f->t == VD_JSON_NUM) &&
        (e->t == VD_JSON_STR || e->t == VD_JSON_NUM)) {
      *free_b = parse_u64 (f->s);
      *extent = parse_u64 (e->s);
      r = 0;
    }
  }
  if (r < 0) {
    vd_error ("lvm: vgs %s: no vg_free in the report", vg);
    errno = EIO;
  }
  vd_json_free (&v);
  return r;
}

/* Create: the LV is "<origin>-<name>" when that is a valid LV name (then
 * the name shows through the prefix rule), else "<origin>-vdsnap-<time>"
 * with the tag vmdiskfs-name:<name>; always the tag vmdiskfs, and
 * opts->extra_tag when set.  Classic snapshots get opts->cow_bytes of
 * copy-on-write space, else opts->cow_percent (default 20) percent of the
 * origin, at least 64 MiB, at most the origin's size. */
static int
lvm_create (const char *disk, const char *name,
            const struct snap_create_opts *opts, struct snap_info *out)
{
  struct lvm_lv *lvs = NULL;
  size_t nl = 0, ns = 0, i;
  struct snap_info *snaps = NULL;
  const struct lvm_lv *o;
  CLEANUP_FREE char *lvname = NULL, *cmd = NULL, *size_arg = NULL,
    *name_tag = NULL;
  const char *extra = opts && opts->extra_tag ? opts->extra_tag : NULL;
  char *id = NULL;
  int r = -1, e;
  bool thin;

  memset (out, 0, sizeof *out);
  if (!*name || strchr (name, ',') || strchr (name, ' ')) {
    vd_error ("lvm: snapshot name \"%s\" not possible", name);
    errno = EINVAL;
    return -1;
  }
  if (extra && !valid_tag (extra)) {
    vd_error ("lvm: \"%s\": not possible as an LVM tag", extra);
    errno = EINVAL;
    return -1;
  }
  if (opts && !opts->cow_bytes && opts->cow_percent > 100) {
    vd_error ("lvm: copy-on-write space of %u%% of the origin: at most 100",
              opts->cow_percent);
    errno = EINVAL;
    return -1;
  }
  if (surely_not_lv (disk) || report (&lvs, &nl) < 0)
    return -1;
  o = find_disk (disk, lvs, nl);
  if (!o || collect (lvs, nl, o, &snaps, &ns) < 0)
    goto out;
  for (i = 0; i < ns; i++)
    if (strcmp (snaps[i].name, name) == 0) {
      errno = EEXIST;
      goto out;
    }

  thin = strcmp (o->f[LVM_F_SEGTYPE], "thin") == 0;
  if (asprintf (&lvname, "%s-%s", o->f[LVM_F_LV_NAME], name) < 0)
    goto out;
  if (lvm_lv_exists (lvs, nl, o->f[LVM_F_VG_NAME], lvname) ||
      !valid_chars (name, NULL) || strlen (lvname) > LVM_NAME_MAX) {
    unsigned k;
    if (asprintf (&name_tag, TAG_NAME "%s", name) < 0)
      goto out;
    if (!lvm_snapshot_name_ok (name)) {
      vd_error ("lvm: snapshot name \"%s\": not possible as an LVM tag "
                "(letters, digits and +_.-/=!:&# only)", name);
      errno = EINVAL;
      goto out;
    }
    for (k = 0; ; k++) {
      free (lvname);
      /* "-vdsnap-TIME", then "-vdsnap-TIME-1", "-2" ... */
      if (asprintf (&lvname, "%.*s-vdsnap-%lld%s%.0u", 80,
                    o->f[LVM_F_LV_NAME], (long long) time (NULL),
                    k ? "-" : "", k) < 0) {
        lvname = NULL;
        goto out;
      }
      if (!lvm_lv_exists (lvs, nl, o->f[LVM_F_VG_NAME], lvname))
        break;
    }
  }
  if (!thin) {
    uint64_t osize = parse_u64 (o->f[LVM_F_LV_SIZE]);
    unsigned pct = opts && opts->cow_percent ? opts->cow_percent : 20;
    uint64_t cow = opts && opts->cow_bytes ? opts->cow_bytes
      : osize / 100 * pct + osize % 100 * pct / 100;
    uint64_t vfree, extent;
    if (!(opts && opts->cow_bytes))
      cow = MIN (MAX (cow, (uint64_t) 64 << 20), osize);
    /* No room: ENOSPC, as lvcreate's failure would only say EIO. */
    if (vg_room (o->f[LVM_F_VG_NAME], &vfree, &extent) < 0)
      goto out;
    if (extent && ROUND_UP (cow, extent) > vfree) {
      vd_error ("lvm: %s/%s: no room in VG %s for %" PRIu64 " bytes of "
                "copy-on-write space (%" PRIu64 " free)",
                o->f[LVM_F_VG_NAME], o->f[LVM_F_LV_NAME],
                o->f[LVM_F_VG_NAME], cow, vfree);
      errno = ENOSPC;
      goto out;
    }
    if (asprintf (&size_arg, " -L %" PRIu64 "b", cow) < 0)
      goto out;
  }
  if (asprintf (&cmd, "lvcreate -s -n %s%s --addtag " TAG_OURS "%s%s%s%s "
                "%s/%s",
                lvname, size_arg ? size_arg : "",
                name_tag ? " --addtag " : "", name_tag ? name_tag : "",
                extra ? " --addtag " : "", extra ? extra : "",
                o->f[LVM_F_VG_NAME], o->f[LVM_F_LV_NAME]) < 0)
    goto out;
  if (!valid_chars (lvname, NULL)) {
    errno = EINVAL;
    goto out;
  }
  if (lvm_helper_run (cmd, LVM_TIMEOUT_MS, NULL) < 0)
    goto out;

  /* Describe it as list would. */
  if (asprintf (&id, "%s/%s", o->f[LVM_F_VG_NAME], lvname) < 0)
    goto out;
  snap_list_free (snaps, ns);
  snaps = NULL;
  ns = 0;
  if (lvm_list (disk, &snaps, &ns) < 0)
    ns = 0;
  for (i = 0; i < ns; i++)
    if (strcmp (snaps[i].id, id) == 0) {
      *out = snaps[i];
      memmove (&snaps[i], &snaps[i + 1], (ns - i - 1) * sizeof *snaps);
      ns--;
      r = 0;
      break;
    }
  if (r < 0) {
    /* Undo: a snapshot the caller does not know of would only fill the
     * VG. */
    vd_error ("lvm: %s: created but not listed: removing it", id);
    run_on ("lvremove -f", id);
    errno = EIO;
  }

 out:
  e = errno;
  free (id);
  snap_list_free (snaps, ns);
  lvm_lvs_free (lvs, nl);
  errno = e;
  return r;
}

static int
lvm_remove (const struct snap_info *s)
{
  return run_on ("lvremove -f", s->id);
}

const struct vd_snapshotter lvm_snapshotter = {
  .name = "lvm",
  .list = lvm_list,
  .activate = lvm_activate,
  .deactivate = lvm_deactivate,
  .create = lvm_create,
  .remove = lvm_remove,
  .list_many = lvm_list_many,
};
