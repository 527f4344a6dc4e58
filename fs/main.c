/* placeholder until the FUSE front end lands. SPDX-License-Identifier: GPL-3.0-or-later */
#include <config.h>
#include <stdio.h>
int main (int argc, char **argv) { printf ("vmdiskfs %s\n", PACKAGE_VERSION); return 0; }
