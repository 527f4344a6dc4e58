/* vmdiskfs - the session loop (loop.c).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VMDISKFS_LOOP_H
#define VMDISKFS_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include <fuse_lowlevel.h>

struct fs_loop_config
{
  unsigned spin_us;             /* try /dev/fuse again this long, then sleep */
  unsigned max_threads;         /* workers for requests not served inline */
  unsigned max_idle_threads;    /* idle workers kept */
  /* Whether a READ of file handle fh may wait long (a network disk): such
   * reads go to the pool, not served by the reader.  NULL: none do. */
  bool (*read_may_block) (uint64_t fh);
};

/* Serve SE until it ends: 0, or -errno. */
extern int fs_loop_run (struct fuse_session *se,
                        const struct fs_loop_config *cfg);

#endif
