/* Unit test of snapshotter/virt.c: libvirt error codes into errno, by
 * the rows a caller asks for (virt.h has the table).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>

#include "virt.h"
#include "test.h"

static int failures;

int
main (void)
{
  /* The snapshot code's mapping (VIRT_ALL). */
  CHECK (virt_errno (VIR_ERR_NO_DOMAIN, VIRT_ALL) == ENOENT);
  CHECK (virt_errno (VIR_ERR_NO_DOMAIN_SNAPSHOT, VIRT_ALL) == ENOENT);
  CHECK (virt_errno (VIR_ERR_OPERATION_INVALID, VIRT_ALL) == EBUSY);
  CHECK (virt_errno (VIR_ERR_OPERATION_DENIED, VIRT_ALL) == EACCES);
  CHECK (virt_errno (VIR_ERR_AUTH_FAILED, VIRT_ALL) == EACCES);
  CHECK (virt_errno (VIR_ERR_ACCESS_DENIED, VIRT_ALL) == EACCES);
  CHECK (virt_errno (VIR_ERR_NO_SUPPORT, VIRT_ALL) == ENOTSUP);
  CHECK (virt_errno (VIR_ERR_ARGUMENT_UNSUPPORTED, VIRT_ALL) == ENOTSUP);
  CHECK (virt_errno (VIR_ERR_CONFIG_UNSUPPORTED, VIRT_ALL) == ENOTSUP);
  CHECK (virt_errno (VIR_ERR_OPERATION_UNSUPPORTED, VIRT_ALL) == ENOTSUP);
  CHECK (virt_errno (VIR_ERR_NO_MEMORY, VIRT_ALL) == ENOMEM);
  CHECK (virt_errno (VIR_ERR_INTERNAL_ERROR, VIRT_ALL) == EIO);
  CHECK (virt_errno (VIR_ERR_OK, VIRT_ALL) == EIO);

  /* The FUSE provider's (VIRT_NOENT): gone is ENOENT, the rest EIO. */
  CHECK (virt_errno (VIR_ERR_NO_DOMAIN, VIRT_NOENT) == ENOENT);
  CHECK (virt_errno (VIR_ERR_NO_DOMAIN_SNAPSHOT, VIRT_NOENT) == ENOENT);
  CHECK (virt_errno (VIR_ERR_OPERATION_INVALID, VIRT_NOENT) == EIO);
  CHECK (virt_errno (VIR_ERR_ACCESS_DENIED, VIRT_NOENT) == EIO);
  CHECK (virt_errno (VIR_ERR_NO_SUPPORT, VIRT_NOENT) == EIO);
  CHECK (virt_errno (VIR_ERR_NO_MEMORY, VIRT_NOENT) == EIO);

  /* No rows: always EIO. */
  CHECK (virt_errno (VIR_ERR_NO_DOMAIN, 0) == EIO);

  if (failures)
    fprintf (stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
