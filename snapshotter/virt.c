/* vmdiskfs - libvirt errors into errno (virt.h has the table).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "virt.h"
#include "log.h"
#include "cleanup.h"

int
virt_errno (int code, unsigned which)
{
  switch (code) {
  case VIR_ERR_NO_DOMAIN:
  case VIR_ERR_NO_DOMAIN_SNAPSHOT:
    return which & VIRT_NOENT ? ENOENT : EIO;
  case VIR_ERR_OPERATION_INVALID:
    return which & VIRT_BUSY ? EBUSY : EIO;
  case VIR_ERR_OPERATION_DENIED:
  case VIR_ERR_AUTH_FAILED:
  case VIR_ERR_ACCESS_DENIED:
    return which & VIRT_ACCES ? EACCES : EIO;
  case VIR_ERR_NO_SUPPORT:
  case VIR_ERR_ARGUMENT_UNSUPPORTED:
  case VIR_ERR_CONFIG_UNSUPPORTED:
  case VIR_ERR_OPERATION_UNSUPPORTED:
    return which & VIRT_NOTSUP ? ENOTSUP : EIO;
  case VIR_ERR_NO_MEMORY:
    return which & VIRT_NOMEM ? ENOMEM : EIO;
  default:
    return EIO;
  }
}

int
virt_last_code (void)
{
  virErrorPtr e = virGetLastError ();

  return e ? e->code : VIR_ERR_OK;
}

void
virt_fail (unsigned which, const char *fmt, ...)
{
  CLEANUP_FREE char *what = NULL;
  int code = virt_last_code ();
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&what, fmt, ap) < 0)
    what = NULL;
  va_end (ap);
  vd_error ("%s: %s", what ? what : "libvirt", virGetLastErrorMessage ());
  errno = virt_errno (code, which);
}
