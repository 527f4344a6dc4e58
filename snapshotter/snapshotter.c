/* vmdiskfs - snapshot providers: helpers shared by every provider.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "snapshotter.h"

void
snap_info_clear (struct snap_info *s)
{
  free (s->name);
  free (s->id);
  free (s->origin);
  free (s->device);
  memset (s, 0, sizeof *s);
}

void
snap_list_free (struct snap_info *snaps, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    snap_info_clear (&snaps[i]);
  free (snaps);
}
