/* vmdiskfs - escaping of domain, image and snapshot names into file names
 * (DESIGN.md, "Names"): '/' -> %2F, '%' -> %25, "." -> %2E, ".." -> %2E%2E.
 * Everything else is shown as it is.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_ESCAPE_H
#define VD_ESCAPE_H

/* Both return a malloc'd string, or NULL with errno set (ENOMEM; EINVAL
 * for vd_name_unescape of a malformed name or an empty one). */
char *vd_name_escape (const char *name);
char *vd_name_unescape (const char *fname);

/* Undo, in place, the octal escapes the kernel writes into the paths of
 * /proc/self/mountinfo (\040 for a space, \011, \012, \134). */
void vd_mountinfo_unescape (char *s);

#endif
