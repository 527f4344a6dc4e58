#!/bin/bash
# Back up one libvirt domain through a vmdiskfs mount with rsync:
#   1. take a snapshot of all its disks (vmdisk-snapshot create, or mkdir
#      in the mount with --mkdir),
#   2. rsync -a --sparse the snapshot's directory (domain.xml,
#      snapshot.xml, one TARGET.raw per disk) from the mount to TARGET,
#   3. delete the snapshot again, also when a step failed or the script
#      is interrupted.
# A domain that is running keeps running; its disks are copied as they
# were at the snapshot.  Holes stay holes in TARGET.
#
# Restore (the domain shut off, the mount read-write):
#   rsync -a --sparse --inplace --no-whole-file TARGET/vda.raw /srv/vmdisks/DOMAIN/vda.raw
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

prog=${0##*/}
usage ()
{
  cat <<USAGE
usage: $prog [OPTIONS] DOMAIN TARGET

Snapshot DOMAIN, copy the snapshot from the vmdiskfs mount to the
directory TARGET with rsync -a --sparse, delete the snapshot.

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
one in PATH); RSYNC_OPTS, more rsync options (e.g. "--delete -v").
Exit status 0 when the backup is complete, else the failing step's.
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
target=$2

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

mkdir -p "$target"
# shellcheck disable=SC2086  # RSYNC_OPTS is a list of options
rsync -a --sparse ${RSYNC_OPTS:-} "$snapdir/" "$target/"
echo "$prog: $domain backed up to $target (snapshot $name)"
