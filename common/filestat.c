/* vmdiskfs - stat comparison (filestat.h).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include "filestat.h"

bool
vd_stat_changed (const struct stat *a, const struct stat *b)
{
  return a->st_dev != b->st_dev || a->st_ino != b->st_ino
    || a->st_size != b->st_size || a->st_mode != b->st_mode
    || a->st_mtim.tv_sec != b->st_mtim.tv_sec
    || a->st_mtim.tv_nsec != b->st_mtim.tv_nsec
    || a->st_ctim.tv_sec != b->st_ctim.tv_sec
    || a->st_ctim.tv_nsec != b->st_ctim.tv_nsec;
}
