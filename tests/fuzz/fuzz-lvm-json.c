/* libFuzzer target for snapshotter/lvm-json.c, the parser of the JSON
 * report that lvm commands print (untrusted bytes).  Each input is a
 * report; it is parsed, every field of every LV read (so that ASan sees a
 * bad pointer or a missing NUL), then freed (LeakSanitizer).  A parser
 * that succeeds must give NUL-terminated fields, never NULL.
 * Built and run by tests/fuzz/run-fuzz.sh (target lvm-json); seeds in
 * tests/fuzz/lvm-json-seeds/ (real lvs output captured in tests/lvm).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lvm.h"
#include "log.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct lvm_lv *lvs;
  size_t n, i, sum = 0;
  int j;

  if (lvm_json_parse ((const char *) data, size, &lvs, &n) < 0)
    return 0;
  for (i = 0; i < n; i++)
    for (j = 0; j < LVM_F_COUNT; j++) {
      if (!lvs[i].f[j]) {
        fprintf (stderr, "fuzz-lvm-json: parser bug: NULL field\n");
        abort ();
      }
      sum += strlen (lvs[i].f[j]);
    }
  if (sum > size * 4 + 16) {     /* escapes never grow a string 4 times */
    fprintf (stderr, "fuzz-lvm-json: parser bug: %zu bytes out of %zu\n",
             sum, size);
    abort ();
  }
  lvm_lvs_free (lvs, n);
  return 0;
}
