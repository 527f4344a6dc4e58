/* vmdiskfs - the libvirt provider's network disks: their sources
 * (snapshotter/netsrc.c) for a build, and whether two are the same.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include "libvirt-priv.h"
#include "netsrc.h"

/* b->netsrc. */
struct vd_netsrc *
virt_build_netsrc (struct build *b, const struct domxml_disk *d)
{
  struct vd_netsrc *src = ds_netsrc (b->c, b->dname, d);

  if (src)
    src->timeout_s = fs_config.net_timeout;
  return src;
}

bool
virt_netsrc_same (const struct vd_netsrc *a, const struct vd_netsrc *b)
{
  size_t i;

  if (!a || !b)
    return a == b;
  if (a->proto != b->proto || a->nhosts != b->nhosts
      || a->timeout_s != b->timeout_s
      || !streq (a->name, b->name) || !streq (a->user, b->user)
      || !streq (a->secret, b->secret) || !streq (a->config, b->config)
      || !streq (a->snapshot, b->snapshot))
    return false;
  for (i = 0; i < a->nhosts; i++)
    if (!streq (a->hosts[i].name, b->hosts[i].name)
        || !streq (a->hosts[i].port, b->hosts[i].port)
        || !streq (a->hosts[i].socket, b->hosts[i].socket))
      return false;
  return true;
}
