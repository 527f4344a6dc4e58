#!/bin/bash
# Back up one libvirt domain through a vmdiskfs mount into a tar archive:
#   1. take a snapshot of all its disks (vmdisk-snapshot create, or mkdir
#      in the mount with --mkdir),
#   2. tar -cS the snapshot's directory (domain.xml, snapshot.xml, one
#      TARGET.img per disk) from the mount into ARCHIVE (compressed after
#      its suffix: .tar.gz, .tar.zst, ...; written to ARCHIVE.part and
#      renamed when complete),
#   3. delete the snapshot again, also when a step failed or the script
#      is interrupted.
# A domain that is running keeps running; its disks are archived as they
# were at the snapshot.  Holes are stored as holes (GNU tar sparse files).
# The options, the snapshot and its deletion are in backup-common.sh
# (shared with backup-rsync.sh), which must be next to this file.
#
# Restore (the domain shut off, the mount read-write):
#   mkdir /tmp/r && tar -xSf ARCHIVE -C /tmp/r
#   cp --sparse=always /tmp/r/vda.img /srv/vmdisks/DOMAIN/vda.img
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=backup-common.sh
. "$(dirname "$(readlink -f "$0")")/backup-common.sh"

usage ()
{
  cat <<USAGE
usage: $prog [OPTIONS] DOMAIN ARCHIVE

Snapshot DOMAIN, archive the snapshot from the vmdiskfs mount into the
file ARCHIVE with tar -cS (members ./domain.xml ./snapshot.xml
./TARGET.img), delete the snapshot.

$(backup_usage_options)

Environment: VMDISK_SNAPSHOT, the vmdisk-snapshot program (default: the
one in PATH).
Exit status 0 when the archive is complete, else the failing step's.
USAGE
}

backup_parse "$@"
archive=$dest
backup_on_exit () { rm -f "$archive.part"; }     # a half-written archive
backup_snapshot

# Compression after ARCHIVE's suffix (tar -a would look at ".part").
comp=()
case $archive in
  *.tar.gz|*.tgz) comp=(--gzip) ;;
  *.tar.zst|*.tzst) comp=(--zstd) ;;
  *.tar.xz|*.txz) comp=(--xz) ;;
  *.tar.bz2|*.tbz2) comp=(--bzip2) ;;
esac
tar -cS "${comp[@]}" -f "$archive.part" -C "$snapdir" .
mv -f "$archive.part" "$archive"
echo "$prog: $domain archived to $archive (snapshot $name)"
