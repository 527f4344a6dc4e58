/* vmdiskfs - the nbd network disk driver (netdisk.h).  Placeholder while
 * the driver is written: opening fails ENOTSUP.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>

#include "netdisk.h"
#include "log.h"

struct vd_image *
vd_nbd_open (const struct vd_netsrc *src, unsigned flags, const char *desc)
{
  vd_error ("%s: nbd disks are not readable in this build", desc);
  errno = ENOTSUP;
  return NULL;
}
