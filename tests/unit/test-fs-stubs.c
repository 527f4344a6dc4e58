/* vmdiskfs - what fs/main.c defines for fs/libvdfs.a, for the unit tests
 * of fs/ (which have no main.c): the options, no FUSE session (tree.c
 * sends no kernel invalidation without one), no pid file.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include "vmdiskfs.h"

struct fs_config fs_config;
struct fuse_session *fs_session;

void
fs_write_pidfile (void)
{
}
