/* vmdiskfs - has a file changed since it was stat'ed?
 *
 * The cheap test that decides whether a scanned image (or a file libvirt
 * refers to) must be read again: two stat results of the same name are
 * the same version of the same file when all of these are equal:
 *   st_dev, st_ino    the same file (not replaced by a rename)
 *   st_size           not grown or truncated
 *   st_mode           type and permission bits (the read bits shown)
 *   st_mtim           contents written (seconds and nanoseconds)
 *   st_ctim           metadata changed (chmod, chown, a rename), and
 *                     every write: a writer that sets mtime back
 *                     (touch -d) cannot set ctime back
 * Nanoseconds count: two writes within one second differ.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_FILESTAT_H
#define VD_FILESTAT_H

#include <stdbool.h>
#include <sys/stat.h>

/* true when a and b differ in any of the fields above. */
bool vd_stat_changed (const struct stat *a, const struct stat *b);

#endif
