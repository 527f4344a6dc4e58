/* vmdiskfs - opening image files by name, checked (safe-open.c); private
 * to the formats library.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_SAFE_OPEN_H
#define VD_SAFE_OPEN_H

#include <sys/stat.h>

#include "vdformat.h"

/* Open path (VD_OPEN_RDWR in flags: read-write) after resolving it
 * without letting the kernel follow symlinks, refusing names through our
 * own mounts and anything but regular files and block devices.  image:
 * the image that names path (NULL for a top image, named by our caller):
 * then pol applies (confinement; the <backingStore> record for depth > 0,
 * the depth of path in the backing chain).  what: "backing file" ...  *st:
 * fstat of the open file.  Returns the fd, or -1 with errno (EIO for a
 * refusal) after one log line. */
int vd_open_checked (const char *path, unsigned flags,
                     const struct vd_policy *pol, unsigned depth,
                     const char *image, const char *what, struct stat *st);

#endif
