/* Unit test of snapshotter/json.c: a real query-block reply, an
 * error reply, escapes, and broken input (every truncation of the
 * sample, bad escapes, deep nesting): refused, never a crash.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "test.h"

static int failures;

/* query-block of qemu 7.2 under libvirt 9.0 (shortened). */
static const char sample[] =
  "{\"return\":[{\"io-status\":\"ok\",\"device\":\"\",\"locked\":false,"
  "\"removable\":false,\"inserted\":{\"iops_rd\":0,\"image\":{"
  "\"snapshots\":[{\"icount\":0,\"vm-clock-nsec\":0,\"name\":\"s1\","
  "\"date-sec\":1795683241,\"id\":\"1\",\"vm-state-size\":0}],"
  "\"virtual-size\":67108864,\"filename\":\"/var/tmp/dsx/a.qcow2\","
  "\"format\":\"qcow2\",\"dirty-flag\":false},\"ro\":false,"
  "\"node-name\":\"libvirt-3-format\",\"drv\":\"qcow2\",\"encrypted\":false,"
  "\"cache\":{\"no-flush\":false,\"direct\":false,\"writeback\":true},"
  "\"file\":\"/var/tmp/dsx/a.qcow2\"},"
  "\"qdev\":\"/machine/peripheral/virtio-disk0/virtio-backend\","
  "\"type\":\"unknown\"},"
  "{\"io-status\":\"ok\",\"device\":\"\",\"locked\":false,\"removable\":true,"
  "\"qdev\":\"sata0-0-0\",\"tray_open\":false,\"type\":\"unknown\"}],"
  "\"id\":\"libvirt-415\"}\r\n";

static int
parses (const char *s, size_t len)
{
  struct vd_json v;
  const char *err;

  if (vd_json_parse (s, len, &v, &err, NULL) < 0)
    return 0;
  vd_json_free (&v);
  return 1;
}

int
main (void)
{
  struct vd_json v;
  const struct vd_json *ret, *ins;
  const char *err;
  size_t i;
  char *deep;

  REQUIRE (vd_json_parse (sample, strlen (sample), &v, &err, NULL) == 0);
  ret = vd_json_get (&v, "return");
  REQUIRE (ret && ret->t == VD_JSON_ARR && ret->n == 2);
  ins = vd_json_get (&ret->v[0], "inserted");
  CHECK (ins && ins->t == VD_JSON_OBJ);
  CHECK (strcmp (vd_json_str (vd_json_get (ins, "node-name")),
                 "libvirt-3-format") == 0);
  CHECK (strcmp (vd_json_str (vd_json_get (ins, "file")),
                 "/var/tmp/dsx/a.qcow2") == 0);
  CHECK (vd_json_get (ins, "ro")->t == VD_JSON_BOOL);
  CHECK (vd_json_get (ins, "iops_rd")->t == VD_JSON_NUM);
  CHECK (vd_json_str (vd_json_get (ins, "iops_rd")) == NULL);
  CHECK (vd_json_get (&ret->v[1], "inserted") == NULL);
  CHECK (vd_json_get (NULL, "x") == NULL && vd_json_str (NULL) == NULL);
  CHECK (vd_json_get (ret, "x") == NULL);       /* not an object */
  vd_json_free (&v);

  {
    static const char e[] = "{\"id\":\"libvirt-9\",\"error\":{\"class\":"
      "\"GenericError\",\"desc\":\"Snapshot with name 's3' already exists\"}}";
    REQUIRE (vd_json_parse (e, strlen (e), &v, &err, NULL) == 0);
    CHECK (vd_json_get (&v, "return") == NULL);
    CHECK (strcmp (vd_json_str (vd_json_get (vd_json_get (&v, "error"),
                                               "desc")),
                   "Snapshot with name 's3' already exists") == 0);
    vd_json_free (&v);
  }

  {
    static const char e[] = " \"a\\u00e9\\ud83d\\ude00\\n\\\"\\/\" ";
    REQUIRE (vd_json_parse (e, strlen (e), &v, &err, NULL) == 0);
    CHECK (v.t == VD_JSON_STR &&
           strcmp (v.s, "a\xc3\xa9\xf0\x9f\x98\x80\n\"/") == 0);
    vd_json_free (&v);
  }

  /* Every proper prefix of the sample is incomplete. */
  for (i = 0; i < strlen (sample) - 2; i++)
    CHECK (!parses (sample, i));
  CHECK (parses (sample, strlen (sample) - 2));

  {
    static const char *const bad[] = {
      "", " ", "{", "}", "[1,]", "[1 2]", "{\"a\"}", "{\"a\":}", "{1:2}",
      "\"\\u0000\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"\\udc00\"",
      "\"\\x\"", "\"\\u12\"", "\"a\nb\"", "nul", "truex", "@", "1 2",
      "{\"a\":1}x", "\"abc", "\"\\",
    };
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      CHECK (!parses (bad[i], strlen (bad[i])));
      if (parses (bad[i], strlen (bad[i])))
        fprintf (stderr, "accepted: %s\n", bad[i]);
    }
    /* The offset of the error. */
    {
      size_t at = 99;
      CHECK (vd_json_parse ("[1 2]", 5, &v, &err, &at) < 0 && at == 3);
      CHECK (vd_json_parse ("{\"a\":1} x", 9, &v, &err, &at) < 0 &&
             at == 8 && strcmp (err, "trailing bytes") == 0);
    }
    /* A NUL byte inside the buffer ends nothing. */
    CHECK (!parses ("\"a\0b\"", 5));
    CHECK (!parses ("[1\0]", 4));
  }

  /* What json-c 0.16 would let through (json.h says why it is not used):
   * a NUL cutting a key short, NaN, a lone surrogate, a control byte in
   * a key; integers are kept as they were written, never clamped; of a
   * repeated key, the first is found. */
  {
    static const char *const bad[] = {
      "{\"lv_name\\u0000x\":\"evil\"}", "[NaN]", "[-Infinity]",
      "{\"a\\ud800\":1}", "{\"a\tb\":1}",
    };
    static const char big[] =
      "{\"a\":18446744073709551616,\"b\":-0,\"a\":1}";
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      CHECK (!parses (bad[i], strlen (bad[i])));
      if (parses (bad[i], strlen (bad[i])))
        fprintf (stderr, "accepted: %s\n", bad[i]);
    }
    REQUIRE (vd_json_parse (big, strlen (big), &v, &err, NULL) == 0);
    CHECK (vd_json_get (&v, "a")->t == VD_JSON_NUM &&
           strcmp (vd_json_get (&v, "a")->s, "18446744073709551616") == 0);
    CHECK (strcmp (vd_json_get (&v, "b")->s, "-0") == 0);
    vd_json_free (&v);
  }

  deep = malloc (2 * 1000 + 1);
  REQUIRE (deep);
  memset (deep, '[', 1000);
  memset (deep + 1000, ']', 1000);
  CHECK (!parses (deep, 2000));
  CHECK (parses (deep + 1000 - VD_JSON_MAX_DEPTH - 1,
                 2 * (VD_JSON_MAX_DEPTH + 1)));
  free (deep);

  /* The value budget: "[0,0,...]" with VD_JSON_MAX_VALUES values in all
   * (the array counts as one) parses, one more is refused. */
  {
    size_t n = VD_JSON_MAX_VALUES - 1, len = 2 * n + 1;
    char *wide = malloc (len + 2);
    REQUIRE (wide);
    wide[0] = '[';
    for (i = 0; i < n; i++) {
      wide[1 + 2 * i] = '0';
      wide[2 + 2 * i] = i + 1 < n ? ',' : ']';
    }
    CHECK (parses (wide, len));
    wide[len - 1] = ',';
    wide[len] = '0';
    wide[len + 1] = ']';
    CHECK (!parses (wide, len + 2));
    free (wide);
  }

  if (failures)
    return 1;
  printf ("ok: json\n");
  return 0;
}
