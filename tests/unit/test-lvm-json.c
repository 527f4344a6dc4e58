/* Unit test of snapshotter/lvm-json.c, the parser of LVM's JSON report:
 * real output of lvm 2.03.16 captured in the test guest (tests/lvm), the
 * json_std variant, escapes, and malformed reports (EIO, never a crash).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lvm.h"
#include "log.h"
#include "test.h"

static int failures;

/* lvs -a --reportformat json --units b --nosuffix -o lv_name,vg_name,
 * lv_path,lv_dm_path,origin,lv_attr,lv_time,lv_size,lv_tags,pool_lv,
 * segtype,data_percent,lv_active,lv_uuid,lv_skip_activation,
 * lv_kernel_major,lv_kernel_minor vg0 -- as written to LVM_REPORT_FD in the
 * guest after: linear disk1, classic snapshots disk1-nightly and other
 * (tags vmdiskfs, vmdiskfs-name:weekly), thin pool, thin1, thin
 * snapshots thin1-t1 and thin1-t2 (tags a/b=c, #x&y). */
static const char sample[] =
  "  {\n"
  "      \"report\": [\n"
  "          {\n"
  "              \"lv\": [\n"
  "                  {\"lv_name\":\"disk1\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/disk1\", \"lv_dm_path\":\"/dev/mapper/vg0-disk1\", \"origin\":\"\", \"lv_attr\":\"owi-a-s---\", \"lv_time\":\"2026-11-26 06:37:28 +0000\", \"lv_size\":\"67108864\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"data_percent\":\"\", \"lv_active\":\"active\", \"lv_uuid\":\"Lxhc5x-IH8n-3dj2-p4F0-1ywF-BJqk-dyKk4S\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"0\"},\n"
  "                  {\"lv_name\":\"disk1-nightly\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/disk1-nightly\", \"lv_dm_path\":\"/dev/mapper/vg0-disk1--nightly\", \"origin\":\"disk1\", \"lv_attr\":\"swi-a-s---\", \"lv_time\":\"2026-11-26 06:37:28 +0000\", \"lv_size\":\"16777216\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"data_percent\":\"0.00\", \"lv_active\":\"active\", \"lv_uuid\":\"VOann7-v1Wp-4J8M-TEcZ-SAgM-lveH-frL3ig\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"3\"},\n"
  "                  {\"lv_name\":\"[lvol0_pmspare]\", \"vg_name\":\"vg0\", \"lv_path\":\"\", \"lv_dm_path\":\"/dev/mapper/vg0-lvol0_pmspare\", \"origin\":\"\", \"lv_attr\":\"ewi-------\", \"lv_time\":\"2026-11-26 06:37:31 +0000\", \"lv_size\":\"4194304\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"data_percent\":\"\", \"lv_active\":\"\", \"lv_uuid\":\"3uIc0O-z9Uc-uqyq-ukyX-KDH2-8do5-3pCbyX\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"-1\", \"lv_kernel_minor\":\"-1\"},\n"
  "                  {\"lv_name\":\"other\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/other\", \"lv_dm_path\":\"/dev/mapper/vg0-other\", \"origin\":\"disk1\", \"lv_attr\":\"swi-a-s---\", \"lv_time\":\"2026-11-26 06:37:30 +0000\", \"lv_size\":\"8388608\", \"lv_tags\":\"vmdiskfs,vmdiskfs-name:weekly\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"data_percent\":\"0.00\", \"lv_active\":\"active\", \"lv_uuid\":\"fffIf4-qzyS-uNaw-9g8a-wgEd-Opcn-2tN6oQ\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"5\"},\n"
  "                  {\"lv_name\":\"pool\", \"vg_name\":\"vg0\", \"lv_path\":\"\", \"lv_dm_path\":\"/dev/mapper/vg0-pool\", \"origin\":\"\", \"lv_attr\":\"twi-aotz--\", \"lv_time\":\"2026-11-26 06:37:31 +0000\", \"lv_size\":\"134217728\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"thin-pool\", \"data_percent\":\"0.00\", \"lv_active\":\"active\", \"lv_uuid\":\"P3OM9s-Jezv-L0NF-f21P-OhAV-Nass-jc1twd\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"8\"},\n"
  "                  {\"lv_name\":\"[pool_tdata]\", \"vg_name\":\"vg0\", \"lv_path\":\"\", \"lv_dm_path\":\"/dev/mapper/vg0-pool_tdata\", \"origin\":\"\", \"lv_attr\":\"Twi-ao----\", \"lv_time\":\"2026-11-26 06:37:31 +0000\", \"lv_size\":\"134217728\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"data_percent\":\"\", \"lv_active\":\"active\", \"lv_uuid\":\"tfqlLF-6f2W-YKDk-LfA6-b3qU-GHfg-2sJRpQ\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"7\"},\n"
  "                  {\"lv_name\":\"[pool_tmeta]\", \"vg_name\":\"vg0\", \"lv_path\":\"\", \"lv_dm_path\":\"/dev/mapper/vg0-pool_tmeta\", \"origin\":\"\", \"lv_attr\":\"ewi-ao----\", \"lv_time\":\"2026-11-26 06:37:31 +0000\", \"lv_size\":\"4194304\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"data_percent\":\"\", \"lv_active\":\"active\", \"lv_uuid\":\"eZ2NPt-E9Xh-DFwL-ycsd-fc7G-eF1H-hsO4tt\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"6\"},\n"
  "                  {\"lv_name\":\"thin1\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/thin1\", \"lv_dm_path\":\"/dev/mapper/vg0-thin1\", \"origin\":\"\", \"lv_attr\":\"Vwi-a-tz--\", \"lv_time\":\"2026-11-26 06:37:32 +0000\", \"lv_size\":\"67108864\", \"lv_tags\":\"\", \"pool_lv\":\"pool\", \"segtype\":\"thin\", \"data_percent\":\"0.00\", \"lv_active\":\"active\", \"lv_uuid\":\"gepi7y-Alcq-UaPf-aXm8-Ac6f-r3II-kmHG5k\", \"lv_skip_activation\":\"\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"10\"},\n"
  "                  {\"lv_name\":\"thin1-t1\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/thin1-t1\", \"lv_dm_path\":\"/dev/mapper/vg0-thin1--t1\", \"origin\":\"thin1\", \"lv_attr\":\"Vwi---tz-k\", \"lv_time\":\"2026-11-26 06:37:33 +0000\", \"lv_size\":\"67108864\", \"lv_tags\":\"\", \"pool_lv\":\"pool\", \"segtype\":\"thin\", \"data_percent\":\"\", \"lv_active\":\"\", \"lv_uuid\":\"U9dAAA-3ggt-WR8L-fuT9-ZRS7-BxS0-LKdqRr\", \"lv_skip_activation\":\"skip activation\", \"lv_kernel_major\":\"-1\", \"lv_kernel_minor\":\"-1\"},\n"
  "                  {\"lv_name\":\"thin1-t2\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/thin1-t2\", \"lv_dm_path\":\"/dev/mapper/vg0-thin1--t2\", \"origin\":\"thin1\", \"lv_attr\":\"Vwi---tz-k\", \"lv_time\":\"2026-11-26 06:37:34 +0000\", \"lv_size\":\"67108864\", \"lv_tags\":\"#x&y,a/b=c\", \"pool_lv\":\"pool\", \"segtype\":\"thin\", \"data_percent\":\"\", \"lv_active\":\"\", \"lv_uuid\":\"XUw7b9-eenS-nyWX-7D1c-9jVZ-Z1xp-yeQmCY\", \"lv_skip_activation\":\"skip activation\", \"lv_kernel_major\":\"-1\", \"lv_kernel_minor\":\"-1\"}\n"
  "              ]\n"
  "          }\n"
  "      ]\n"
  "  }\n";

/* The very command lvm.c runs (see lvm-json.c), in the guest: disk1 with
 * classic snapshot disk1-nightly, pool, thin1 with thin snapshot thin1-t1
 * (tags vmdiskfs, vmdiskfs-name:before:upgrade). */
static const char sample_cmd[] =
  "  {\n"
  "      \"report\": [\n"
  "          {\n"
  "              \"lv\": [\n"
  "                  {\"lv_name\":\"disk1\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/disk1\", \"lv_dm_path\":\"/dev/mapper/vg0-disk1\", \"origin\":\"\", \"lv_attr\":\"owi-a-s---\", \"lv_time\":\"1795677267\", \"lv_size\":\"67108864\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"lv_active\":\"active\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"0\", \"origin_size\":\"67108864\"},\n"
  "                  {\"lv_name\":\"disk1-nightly\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/disk1-nightly\", \"lv_dm_path\":\"/dev/mapper/vg0-disk1--nightly\", \"origin\":\"disk1\", \"lv_attr\":\"swi-a-s---\", \"lv_time\":\"1795677268\", \"lv_size\":\"16777216\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"linear\", \"lv_active\":\"active\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"3\", \"origin_size\":\"67108864\"},\n"
  "                  {\"lv_name\":\"pool\", \"vg_name\":\"vg0\", \"lv_path\":\"\", \"lv_dm_path\":\"/dev/mapper/vg0-pool\", \"origin\":\"\", \"lv_attr\":\"twi-aotz--\", \"lv_time\":\"1795677269\", \"lv_size\":\"134217728\", \"lv_tags\":\"\", \"pool_lv\":\"\", \"segtype\":\"thin-pool\", \"lv_active\":\"active\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"6\", \"origin_size\":\"\"},\n"
  "                  {\"lv_name\":\"thin1\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/thin1\", \"lv_dm_path\":\"/dev/mapper/vg0-thin1\", \"origin\":\"\", \"lv_attr\":\"Vwi-a-tz--\", \"lv_time\":\"1795677270\", \"lv_size\":\"67108864\", \"lv_tags\":\"\", \"pool_lv\":\"pool\", \"segtype\":\"thin\", \"lv_active\":\"active\", \"lv_kernel_major\":\"253\", \"lv_kernel_minor\":\"8\", \"origin_size\":\"\"},\n"
  "                  {\"lv_name\":\"thin1-t1\", \"vg_name\":\"vg0\", \"lv_path\":\"/dev/vg0/thin1-t1\", \"lv_dm_path\":\"/dev/mapper/vg0-thin1--t1\", \"origin\":\"thin1\", \"lv_attr\":\"Vwi---tz-k\", \"lv_time\":\"1795677271\", \"lv_size\":\"67108864\", \"lv_tags\":\"vmdiskfs,vmdiskfs-name:before:upgrade\", \"pool_lv\":\"pool\", \"segtype\":\"thin\", \"lv_active\":\"\", \"lv_kernel_major\":\"-1\", \"lv_kernel_minor\":\"-1\", \"origin_size\":\"\"}\n"
  "              ]\n"
  "          }\n"
  "      ]\n"
  "  }\n";

static const struct lvm_lv *
by_name (const struct lvm_lv *lvs, size_t n, const char *name)
{
  size_t i;
  for (i = 0; i < n; i++)
    if (strcmp (lvs[i].f[LVM_F_LV_NAME], name) == 0)
      return &lvs[i];
  return NULL;
}

static void
test_sample (void)
{
  struct lvm_lv *lvs;
  size_t n;
  const struct lvm_lv *lv;

  CHECK (lvm_json_parse (sample, strlen (sample), &lvs, &n) == 0);
  CHECK (n == 10);
  lv = by_name (lvs, n, "disk1");
  CHECK (lv && strcmp (lv->f[LVM_F_LV_ATTR], "owi-a-s---") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_LV_DM_PATH], "/dev/mapper/vg0-disk1") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_KERNEL_MAJOR], "253") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_ORIGIN_SIZE], "") == 0); /* not asked */
  lv = by_name (lvs, n, "disk1-nightly");
  CHECK (lv && strcmp (lv->f[LVM_F_ORIGIN], "disk1") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_LV_TIME], "2026-11-26 06:37:28 +0000") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_LV_SIZE], "16777216") == 0);
  lv = by_name (lvs, n, "other");
  CHECK (lv && strcmp (lv->f[LVM_F_LV_TAGS],
                       "vmdiskfs,vmdiskfs-name:weekly") == 0);
  lv = by_name (lvs, n, "thin1-t2");
  CHECK (lv && strcmp (lv->f[LVM_F_LV_TAGS], "#x&y,a/b=c") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_POOL_LV], "pool") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_LV_ACTIVE], "") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_KERNEL_MINOR], "-1") == 0);
  CHECK (by_name (lvs, n, "[pool_tdata]") != NULL);
  lvm_lvs_free (lvs, n);

  CHECK (lvm_json_parse (sample_cmd, strlen (sample_cmd), &lvs, &n) == 0);
  CHECK (n == 5);
  lv = by_name (lvs, n, "disk1-nightly");
  CHECK (lv && strcmp (lv->f[LVM_F_LV_TIME], "1795677268") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_ORIGIN_SIZE], "67108864") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_LV_SIZE], "16777216") == 0);
  lv = by_name (lvs, n, "thin1-t1");
  CHECK (lv && strcmp (lv->f[LVM_F_LV_TAGS],
                       "vmdiskfs,vmdiskfs-name:before:upgrade") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_LV_ATTR], "Vwi---tz-k") == 0);
  CHECK (lv && strcmp (lv->f[LVM_F_ORIGIN_SIZE], "") == 0);
  lvm_lvs_free (lvs, n);
}

/* --reportformat json_std (lvm >= 2.03.17): numbers and tag arrays; plus
 * a "log" section, escapes, repeated keys and unknown sections. */
static void
test_std (void)
{
  static const char std[] =
    "{\"report\": [ {\"vg\": [{\"vg_name\": \"x\"}]},\n"
    " {\"lv\": [{\"lv_name\": \"a\\u00e9\\ud83d\\ude00\\n\\\"/\\\\\","
    "   \"lv_size\": 1073741824, \"lv_tags\": [\"t1\", \"t2\"],"
    "   \"lv_kernel_major\": -1, \"lv_active\": true, \"origin\": null,"
    "   \"extra\": {\"deep\": [1, 2.5e3, {}]}, \"vg_name\": \"a\","
    "   \"vg_name\": \"b\"}, {} ] } ],"
    " \"log\": [ {\"log_seq_num\": 1, \"log_message\": \"m\"} ] }  \n";
  struct lvm_lv *lvs;
  size_t n;

  CHECK (lvm_json_parse (std, strlen (std), &lvs, &n) == 0);
  CHECK (n == 2);
  if (n == 2) {
    CHECK (strcmp (lvs[0].f[LVM_F_LV_NAME],
                   "a\xc3\xa9\xf0\x9f\x98\x80\n\"/\\") == 0);
    CHECK (strcmp (lvs[0].f[LVM_F_LV_SIZE], "1073741824") == 0);
    CHECK (strcmp (lvs[0].f[LVM_F_LV_TAGS], "t1,t2") == 0);
    CHECK (strcmp (lvs[0].f[LVM_F_KERNEL_MAJOR], "-1") == 0);
    CHECK (strcmp (lvs[0].f[LVM_F_LV_ACTIVE], "true") == 0);
    CHECK (strcmp (lvs[0].f[LVM_F_ORIGIN], "null") == 0);
    CHECK (strcmp (lvs[0].f[LVM_F_VG_NAME], "b") == 0);
    CHECK (strcmp (lvs[1].f[LVM_F_LV_NAME], "") == 0);
    lvm_lvs_free (lvs, n);
  }
  CHECK (lvm_json_parse ("{}", 2, &lvs, &n) == 0 && n == 0);
  lvm_lvs_free (lvs, n);
  CHECK (lvm_json_parse ("{\"report\":[]}", 13, &lvs, &n) == 0 && n == 0);
  lvm_lvs_free (lvs, n);
}

/* A volume group of 10,000 LVs, in the format of sample_cmd (about 4 MB):
 * all there, in order, fields intact. */
static void
test_many (void)
{
  enum { N = 10000 };
  size_t cap = (size_t) N * 512 + 64, len = 0, n = 0, i;
  char *s = malloc (cap);
  struct lvm_lv *lvs = NULL;

  REQUIRE (s);
  len += snprintf (s + len, cap - len, "{\"report\": [{\"lv\": [\n");
  for (i = 0; i < N; i++)
    len += snprintf (s + len, cap - len,
      "{\"lv_name\":\"lv%zu\", \"vg_name\":\"vg0\", "
      "\"lv_path\":\"/dev/vg0/lv%zu\", "
      "\"lv_dm_path\":\"/dev/mapper/vg0-lv%zu\", \"origin\":\"lv%zu\", "
      "\"lv_attr\":\"Vwi---tz-k\", \"lv_time\":\"1795677271\", "
      "\"lv_size\":\"67108864\", "
      "\"lv_tags\":\"vmdiskfs,vmdiskfs-name:n%zu\", \"pool_lv\":\"pool\", "
      "\"segtype\":\"thin\", \"lv_active\":\"\", "
      "\"lv_kernel_major\":\"-1\", \"lv_kernel_minor\":\"-1\", "
      "\"origin_size\":\"\"}%s\n", i, i, i, i / 2, i, i + 1 < N ? "," : "");
  len += snprintf (s + len, cap - len, "]}]}\n");
  REQUIRE (len < cap);

  CHECK (lvm_json_parse (s, len, &lvs, &n) == 0);
  CHECK (n == N);
  for (i = 0; i < n; i++) {
    char name[32], tags[64];
    snprintf (name, sizeof name, "lv%zu", i);
    snprintf (tags, sizeof tags, "vmdiskfs,vmdiskfs-name:n%zu", i);
    if (strcmp (lvs[i].f[LVM_F_LV_NAME], name) != 0 ||
        strcmp (lvs[i].f[LVM_F_LV_TAGS], tags) != 0 ||
        strcmp (lvs[i].f[LVM_F_ORIGIN_SIZE], "") != 0) {
      CHECK (!"LV intact");
      break;
    }
  }
  lvm_lvs_free (lvs, n);
  free (s);
}

static void
bad (const char *s, size_t len)
{
  struct lvm_lv *lvs = (void *) 1;
  size_t n = 99;

  errno = 0;
  if (lvm_json_parse (s, len, &lvs, &n) != -1 || errno != EIO) {
    fprintf (stderr, "FAIL: accepted or wrong errno: %.*s\n", (int) len, s);
    failures++;
  }
}
#define BAD(s) bad ((s), sizeof (s) - 1)

static void
test_malformed (void)
{
  char deep[200];
  size_t i;

  BAD ("");
  BAD ("   ");
  BAD ("[]");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"x\"}]}]");     /* truncated */
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"x}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"\\u0000\"}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"\\ud800\"}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"\\udc00x\"}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"\\u12\"}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"\\q\"}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"a\nb\"}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":{}}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_tags\":[1]}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":nope}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\" \"x\"}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"x\",}]}]}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"x\"}]}]} x");
  BAD ("{\"a\":1}{}");
  BAD ("{\"report\":[{\"lv\":[{\"lv_name\":\"x\0\"}]}]}");
  for (i = 0; i < sizeof deep; i++)
    deep[i] = i < 5 ? "{\"a\":"[i] : '[';
  bad (deep, sizeof deep);
}

int
main (void)
{
  vd_log_set_level (VD_LOG_ERROR);
  test_sample ();
  test_std ();
  test_many ();
  test_malformed ();
  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return 1;
  }
  printf ("test-lvm-json: ok\n");
  return 0;
}
