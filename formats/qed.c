/* placeholder until the qed driver lands. SPDX-License-Identifier: GPL-3.0-or-later */
#include <config.h>
#include "vdformat.h"
static bool qed_probe (const uint8_t *buf, size_t len) { return false; }
const struct vd_format qed_format = { .name = "qed", .probe = qed_probe };
