/* vmdiskfs - the LVM provider's internal interfaces.
 *
 *   lvm-json.c    reader of `lvs --reportformat json` (untrusted bytes),
 *                 on top of json.c
 *   lvm-helper.c  runs one lvm command through liblvm2cmd in a forked
 *                 child and collects its report and messages
 *   lvm.c         the provider: lvm_snapshotter
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_LVM_H
#define VD_LVM_H

#include <stdbool.h>
#include <stddef.h>

/* ---- lvm.c: LVM's name rules, here only. ---- */

/* Can name be the shown name of an LV snapshot?  It goes into the tag
 * vmdiskfs-name:NAME (lvm.c), so LVM's tag rules: at most 1024 bytes
 * with the prefix; letters, digits and +_.-/=!:&# only. */
bool lvm_snapshot_name_ok (const char *name);

/* The report fields we ask for, in the order of the -o list. */
enum lvm_field {
  LVM_F_LV_NAME, LVM_F_VG_NAME, LVM_F_LV_PATH, LVM_F_LV_DM_PATH,
  LVM_F_ORIGIN, LVM_F_LV_ATTR, LVM_F_LV_TIME, LVM_F_LV_SIZE,
  LVM_F_LV_TAGS, LVM_F_POOL_LV, LVM_F_SEGTYPE, LVM_F_LV_ACTIVE,
  LVM_F_KERNEL_MAJOR, LVM_F_KERNEL_MINOR, LVM_F_ORIGIN_SIZE,
  LVM_F_COUNT
};
/* "lv_name,vg_name,...": the -o argument matching enum lvm_field. */
extern const char lvm_report_fields[];

/* One logical volume of the report: field values as strings, never NULL
 * ("" when absent).  A number is kept as its text, an array of strings
 * (lv_tags in the json_std format) joined with ','. */
struct lvm_lv {
  char *f[LVM_F_COUNT];
};

/* Parse a report ({"report":[{"lv":[{...},...]}, ...]}, other keys and
 * sections ignored).  *lvs is malloc'd (free with lvm_lvs_free).  0, or
 * -1 with errno EIO (malformed, after logging) or ENOMEM. */
int lvm_json_parse (const char *buf, size_t len,
                    struct lvm_lv **lvs, size_t *n);
void lvm_lvs_free (struct lvm_lv *lvs, size_t n);

/* Run one lvm command line (e.g. "lvs --reportformat json ...") with
 * liblvm2cmd in a forked child, at most timeout_ms.  *report (malloc'd,
 * NUL-terminated, may be NULL) gets what the command wrote to stdout
 * (lvs: the report).  0 when the command succeeded; else -1 with errno
 * (EIO failed, after logging its messages; ETIMEDOUT; ENOMEM ...). */
int lvm_helper_run (const char *cmdline, int timeout_ms, char **report);

#endif
