/* placeholder until the libqcow driver lands. SPDX-License-Identifier: GPL-3.0-or-later */
#include <config.h>
#include "vdformat.h"
static bool libqcow_probe (const uint8_t *buf, size_t len) { return false; }
const struct vd_format libqcow_format = { .name = "libqcow", .probe = libqcow_probe };
