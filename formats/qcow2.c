/* placeholder until the qcow2 driver lands. SPDX-License-Identifier: GPL-3.0-or-later */
#include <config.h>
#include "vdformat.h"
static bool qcow2_probe (const uint8_t *buf, size_t len) { return false; }
const struct vd_format qcow2_format = { .name = "qcow2", .probe = qcow2_probe };
