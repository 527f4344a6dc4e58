/* vmdiskfs - libvirt errors: the one helper that turns them into errno
 * and logs them (STYLE.md: "libvirt errors go through one helper").
 *
 * The table (virt_errno), libvirt's code -> errno:
 *
 *   VIR_ERR_NO_DOMAIN, VIR_ERR_NO_DOMAIN_SNAPSHOT     ENOENT  VIRT_NOENT
 *   VIR_ERR_OPERATION_INVALID (the domain's state)    EBUSY   VIRT_BUSY
 *   VIR_ERR_OPERATION_DENIED, VIR_ERR_AUTH_FAILED,
 *   VIR_ERR_ACCESS_DENIED (read-only connection ...)  EACCES  VIRT_ACCES
 *   VIR_ERR_NO_SUPPORT, VIR_ERR_ARGUMENT_UNSUPPORTED,
 *   VIR_ERR_CONFIG_UNSUPPORTED,
 *   VIR_ERR_OPERATION_UNSUPPORTED                     ENOTSUP VIRT_NOTSUP
 *   VIR_ERR_NO_MEMORY                                 ENOMEM  VIRT_NOMEM
 *   anything else, or a row the caller did not ask   EIO
 *
 * A caller names the rows it tells apart (which): the snapshot code
 * (domsnap) all of them, VIRT_ALL, as domsnap.h promises; the FUSE
 * provider (fs/) only VIRT_NOENT, as a file whose domain or snapshot
 * went away is ENOENT and every other failure of a read EIO.
 *
 * Threads: libvirt's last error is per thread; so is everything here.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_VIRT_H
#define VD_VIRT_H

#include <libvirt/virterror.h>

/* Rows of the table (which). */
#define VIRT_NOENT  0x1
#define VIRT_BUSY   0x2
#define VIRT_ACCES  0x4
#define VIRT_NOTSUP 0x8
#define VIRT_NOMEM  0x10
#define VIRT_ALL    0x1f

/* errno for libvirt error code (VIR_ERR_*), by the rows in which. */
int virt_errno (int code, unsigned which);

/* The code of this thread's last libvirt error, VIR_ERR_OK when none. */
int virt_last_code (void);

/* Log "WHAT: libvirt's last message" (vd_error) and set errno from its
 * code by the rows in which. */
void virt_fail (unsigned which, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

#endif
