/* libFuzzer target for snapshotter/domxml.c, the reader of libvirt's domain and
 * snapshot XML (which may come over the network, qemu+ssh://): each input
 * is parsed as a domain, as a snapshot, and searched for the domain stored
 * in a snapshot, as tree-libvirt.c does.  Built and run by
 * tests/fuzz/run-fuzz.sh (FUZZ_TARGETS=domxml).
 *
 * Oracles besides ASan/UBSan/LeakSanitizer: every disk parsed has the
 * fields the parser promises (non-empty strings or NULL), and the domain
 * text cut out of a snapshot lies within the input's length plus the
 * newline added.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domxml.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
check_disks (const struct domxml_disk *d, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    const char *f[] = { d[i].type, d[i].device, d[i].driver_type,
                        d[i].target, d[i].source, d[i].pool, d[i].volume,
                        d[i].protocol, d[i].name, d[i].snapshot };
    size_t j;
    for (j = 0; j < sizeof f / sizeof f[0]; j++)
      if (f[j])
        (void) strlen (f[j]);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static int init;
  struct domxml_disk *disks;
  struct domxml_snapshot snap;
  size_t n, len;
  char *dom;

  if (!init) {
    domxml_init ();
    init = 1;
  }
  if (domxml_parse_domain ((const char *) data, size, &disks, &n) == 0) {
    check_disks (disks, n);
    domxml_disks_free (disks, n);
  }
  if (domxml_parse_snapshot ((const char *) data, size, &snap) == 0) {
    if (!snap.name)
      abort ();
    check_disks (snap.disks, snap.ndisks);
    check_disks (snap.snapdisks, snap.nsnapdisks);
    domxml_snapshot_clear (&snap);
  }
  {
    struct domxml_nvram nv;
    if (domxml_parse_nvram ((const char *) data, size, &nv) == 0)
      domxml_nvram_clear (&nv);
  }
  dom = domxml_snapshot_domain ((const char *) data, size, &len);
  if (dom) {
    if (len > size + 1 || len == 0 || dom[len - 1] != '\n') {
      fprintf (stderr, "fuzz-domxml: bad domain text length %zu of %zu\n",
               len, size);
      abort ();
    }
    free (dom);
  }
  return 0;
}
