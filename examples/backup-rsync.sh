#!/bin/bash
# Back up one libvirt domain through a vmdiskfs mount with rsync:
#   1. take a snapshot of all its disks (vmdisk-snapshot create, or mkdir
#      in the mount with --mkdir),
#   2. rsync -a --sparse the snapshot's directory (domain.xml,
#      snapshot.xml, one TARGET.img per disk) from the mount to TARGET,
#   3. delete the snapshot again, also when a step failed or the script
#      is interrupted.
# A domain that is running keeps running; its disks are copied as they
# were at the snapshot.  Holes stay holes in TARGET.
# The options, the snapshot and its deletion are in backup-common.sh
# (shared with backup-tar.sh), which must be next to this file.
#
# Restore (the domain shut off, the mount read-write):
#   rsync -a --sparse --inplace --no-whole-file TARGET/vda.img /srv/vmdisks/DOMAIN/vda.img
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=backup-common.sh
. "$(dirname "$(readlink -f "$0")")/backup-common.sh"

usage ()
{
  cat <<USAGE
usage: $prog [OPTIONS] DOMAIN TARGET

Snapshot DOMAIN, copy the snapshot from the vmdiskfs mount to the
directory TARGET with rsync -a --sparse, delete the snapshot.

$(backup_usage_options)

Environment: VMDISK_SNAPSHOT, the vmdisk-snapshot program (default: the
one in PATH); RSYNC_OPTS, more rsync options (e.g. "--delete -v").
Exit status 0 when the backup is complete, else the failing step's.
USAGE
}

backup_parse "$@"
target=$dest
backup_snapshot

mkdir -p "$target"
# shellcheck disable=SC2086  # RSYNC_OPTS is a list of options
rsync -a --sparse ${RSYNC_OPTS:-} "$snapdir/" "$target/"
echo "$prog: $domain backed up to $target (snapshot $name)"
