#!/bin/bash
# Back up one libvirt domain through a vmdiskfs mount into a tar archive:
#   1. take a snapshot of all its disks (vmdisk-snapshot create, or mkdir
#      in the mount with --mkdir),
#   2. tar -cS the snapshot's directory (domain.xml, snapshot.xml, one
#      TARGET.raw per disk) from the mount into ARCHIVE (compressed after
#      its suffix: .tar.gz, .tar.zst, ...; written to ARCHIVE.part and
#      renamed when complete),
#   3. delete the snapshot again, also when a step failed or the script
#      is interrupted.
# A domain that is running keeps running; its disks are archived as they
# were at the snapshot.  Holes are stored as holes (GNU tar sparse files).
#
# Restore (the domain shut off, the mount read-write):
#   mkdir /tmp/r && tar -xSf ARCHIVE -C /tmp/r
#   cp --sparse=always /tmp/r/vda.raw /srv/vmdisks/DOMAIN/vda.raw
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

prog=${0##*/}
usage ()
{
  cat <<USAGE
usage: $prog [OPTIONS] DOMAIN ARCHIVE

Snapshot DOMAIN, archive the snapshot from the vmdiskfs mount into the
file ARCHIVE with tar -cS (members ./domain.xml ./snapshot.xml
./TARGET.raw), delete the snapshot.

Options:
  -m, --mount DIR     the vmdiskfs mount (default /srv/vmdisks)
  -n, --name NAME     snapshot name (default backup-YYYYMMDD-HHMMSS)
  -c, --connect URI   libvirt connection for vmdisk-snapshot (default
                      \$LIBVIRT_DEFAULT_URI, else qemu:///system; must be
                      the one the mount shows)
      --no-quiesce    do not freeze the guest's file systems (the default
                      is vmdisk-snapshot create --quiesce, which only warns
                      when the guest has no agent)
      --mkdir         make the snapshot with mkdir in the mount and delete
                      it with rmdir, instead of vmdisk-snapshot
  -h, --help          this help

Environment: VMDISK_SNAPSHOT, the vmdisk-snapshot program (default: the
one in PATH).
Exit status 0 when the archive is complete, else the failing step's.
USAGE
}

mnt=/srv/vmdisks
name=backup-$(date +%Y%m%d-%H%M%S)
uri=
quiesce=--quiesce
use_mkdir=
vs=${VMDISK_SNAPSHOT:-vmdisk-snapshot}

while [ $# -gt 0 ]; do
  case $1 in
    -m|--mount) mnt=${2:?$1 needs a value}; shift 2 ;;
    -n|--name) name=${2:?$1 needs a value}; shift 2 ;;
    -c|--connect) uri=${2:?$1 needs a value}; shift 2 ;;
    --no-quiesce) quiesce=; shift ;;
    --mkdir) use_mkdir=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) echo "$prog: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -ne 2 ]; then
  usage >&2
  exit 2
fi
domain=$1
archive=$2

# A name as vmdiskfs shows it: / as %2F, % as %25, . and .. as %2E...
shown ()
{
  local s=$1
  case $s in .) s=%2E ;; ..) s=%2E%2E ;; *) s=${s//%/%25}; s=${s//\//%2F} ;; esac
  printf '%s' "$s"
}

domdir=$mnt/$(shown "$domain")
snapdir=$domdir/snapshots/$(shown "$name")
[ -d "$domdir" ] || { echo "$prog: no $domdir (is vmdiskfs mounted on $mnt?)" >&2; exit 1; }

made=
cleanup ()
{
  local rc=$?
  trap - EXIT INT TERM
  rm -f "$archive.part"
  if [ -n "$made" ]; then
    if [ -n "$use_mkdir" ]; then
      rmdir "$snapdir" || { echo "$prog: could not remove the snapshot $snapdir" >&2; rc=1; }
    else
      "$vs" ${uri:+-c "$uri"} delete "$domain" "$name" >/dev/null ||
        { echo "$prog: could not delete the snapshot $domain/$name" >&2; rc=1; }
    fi
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

made=1                          # from here on, a half-made one is deleted too
if [ -n "$use_mkdir" ]; then
  mkdir "$snapdir" || { made=; exit 1; }
else
  "$vs" ${uri:+-c "$uri"} create $quiesce "$domain" "$name" || { made=; exit 1; }
fi

# The mount shows a snapshot made by vmdisk-snapshot within seconds.
for ((i = 0; i < 60; i++)); do
  [ -d "$snapdir" ] && break
  sleep 0.5
done
[ -d "$snapdir" ] || { echo "$prog: $snapdir did not show up in the mount" >&2; exit 1; }

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
