/* vmdiskfs - the rbd network disk driver (netdisk.h).  Placeholder while
 * the driver is written: opening fails ENOTSUP.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>

#include "netdisk.h"
#include "log.h"

struct vd_image *
vd_rbd_open (const struct vd_netsrc *src, unsigned flags, const char *desc)
{
  vd_error ("%s: rbd disks are not readable in this build", desc);
  errno = ENOTSUP;
  return NULL;
}

int
vd_rbd_snap_create (const struct vd_netsrc *src, const char *name)
{
  errno = ENOTSUP;
  return -1;
}

int
vd_rbd_snap_remove (const struct vd_netsrc *src, const char *name)
{
  errno = ENOTSUP;
  return -1;
}
