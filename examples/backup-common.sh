# shellcheck shell=bash
# What backup-rsync.sh and backup-tar.sh share, sourced by both from
# their own directory (keep the three files together when you copy or
# install them): the options, the snapshot of DOMAIN (vmdisk-snapshot
# create, or mkdir in the mount with --mkdir), and the traps that delete
# it again on every exit, also when a step failed or the script is
# interrupted.
#
# A script sources this file, defines usage () (its own synopsis and
# description around "$(backup_usage_options)") and then calls
#   backup_parse "$@"   the options and DOMAIN DEST; sets mnt, name, uri,
#                       quiesce, use_mkdir, vs, domain, dest, domdir and
#                       snapdir (the snapshot's directory in the mount)
#   backup_snapshot     sets the traps, makes the snapshot, waits until
#                       snapdir shows up
# before it copies snapdir.  A backup_on_exit () the script defines
# after sourcing this file runs first on every exit after backup_snapshot,
# before the snapshot is deleted (backup-tar.sh removes ARCHIVE.part).
#
# SPDX-License-Identifier: GPL-3.0-or-later

prog=${0##*/}

mnt=/srv/vmdisks
name=backup-$(date +%Y%m%d-%H%M%S)
uri=
quiesce=--quiesce
use_mkdir=
vs=${VMDISK_SNAPSHOT:-vmdisk-snapshot}
made=

# The options part of usage ().
backup_usage_options ()
{
  cat <<USAGE
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
USAGE
}

# A name as vmdiskfs shows it: / as %2F, % as %25, . and .. as %2E...
shown ()
{
  local s=$1
  case $s in .) s=%2E ;; ..) s=%2E%2E ;; *) s=${s//%/%25}; s=${s//\//%2F} ;; esac
  printf '%s' "$s"
}

backup_parse ()
{
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
  # shellcheck disable=SC2034  # the script's TARGET or ARCHIVE
  dest=$2

  domdir=$mnt/$(shown "$domain")
  snapdir=$domdir/snapshots/$(shown "$name")
  [ -d "$domdir" ] || { echo "$prog: no $domdir (is vmdiskfs mounted on $mnt?)" >&2; exit 1; }
}

backup_on_exit () { :; }

cleanup ()
{
  local rc=$?
  trap - EXIT INT TERM
  backup_on_exit
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

backup_snapshot ()
{
  local i
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  made=1                        # from here on, a half-made one is deleted too
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
}
