/* vmdiskfs - a libvirt network <disk>'s source (netsrc.c).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_NETSRC_H
#define VD_NETSRC_H

#include <libvirt/libvirt.h>

#include "domxml.h"
#include "netdisk.h"

/* The source of network disk d of domain dname (type network, protocol
 * nbd, iscsi or rbd), its <auth> secret's value read through c (NULL c:
 * a disk with a secret fails EACCES).  NULL with errno (logged): ENOTSUP
 * another protocol, EINVAL no <host> where one is needed, EACCES the
 * secret cannot be read, ENOMEM. */
struct vd_netsrc *ds_netsrc (virConnectPtr c, const char *dname,
                             const struct domxml_disk *d);

#endif
