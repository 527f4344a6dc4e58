# vmdiskfs - a private Ceph cluster for the integration tests (bash): one
# ceph-mon and one ceph-osd (memstore: the data lives in the OSD's RAM) on
# 127.0.0.1 with ports of their own, a pool "rbd" ready for images
# (TESTING.md, "Network storage, real and local").  Source it after
# functions.sh:
#
#   . "$(dirname "$0")/functions.sh"
#   . "$(dirname "$0")/ceph-functions.sh"
#   ceph_require                  # skip (77) without the ceph binaries
#   ceph_start "$TEST_DIR/ceph"   # or: ceph_start DIR cephx
#   rbd create --size 64M rbd/img
#   "$VDCAT" "rbd:rbd/img:conf=$CEPH_CONF"
#
# Functions:
#   ceph_require          skip the test (exit 77) unless ceph-mon, ceph-osd,
#                         ceph, rbd, monmaptool, ceph-authtool and uuidgen
#                         are installed (under CI=true: fail instead)
#   ceph_start DIR [cephx]
#                         make DIR (must not exist or be empty) and bring the
#                         cluster up there: ceph.conf, keyrings, mon and OSD
#                         data, run dir (admin sockets, pid files) and logs
#                         (DIR/log) all under DIR.  Without "cephx": auth
#                         none everywhere, no key needed by any client.  With
#                         it: cephx required, client.admin's key in
#                         DIR/keyring (which ceph.conf names, so the ceph
#                         and rbd commands just work) and a second client,
#                         client.vmd (caps: mon 'profile rbd', osd 'profile
#                         rbd pool=rbd'), whose key is in NO keyring: a
#                         client must be given it (rbd:...:id=vmd:key=K).
#                         Prints the mon's v1 address (127.0.0.1:PORT, what
#                         libvirt's <host name= port=> and mon_host take) and
#                         registers ceph_stop with on_exit.  Fails the test
#                         if the cluster is not up within 60 s.  Call it in
#                         the test's own shell, not in $(...): the daemons
#                         are its children.  One cluster at a time: after
#                         ceph_stop, ceph_start may start another (in a new
#                         DIR), e.g. one with cephx.
#   ceph_stop             kill the OSD and the mon (TERM, KILL after 10 s)
#                         and wait until they are gone; safe to call twice
#                         (runs at exit anyway)
#   ceph_stop_mon         kill the mon only (the cluster stops answering:
#                         for timeout tests)
#   ceph_freeze_osd       SIGSTOP the OSD: it stops answering, connections
#                         stay open (requests time out); ceph_thaw_osd
#                         (SIGCONT; also at exit and in ceph_stop) undoes it
#   ceph_admin ARG...     timeout 30 ceph ARG... (against this cluster)
#
# Variables it exports after ceph_start:
#   CEPH_CONF        DIR/ceph.conf (the ceph, rbd and qemu-img rbd: tools
#                    and librados read it from this variable)
#   CEPH_MON         the mon's v1 address, 127.0.0.1:PORT
#   CEPH_MON_V2      its v2 address
#   CEPH_DIR         DIR
#   CEPH_FSID        the cluster's fsid
#   CEPH_AUTH        none or cephx
#   CEPH_CLIENT_ID   cephx only: vmd
#   CEPH_CLIENT_KEY  cephx only: client.vmd's key (base64)
#   CEPH_ADMIN_KEY   cephx only: client.admin's key
#
# Ports: a block of 20 free ports at a random base in 30000-39980 (mon v2,
# mon v1, then the OSD's "ms bind port" range), chosen when free per ss;
# CEPH_PORT_BASE in the environment forces one.
# SPDX-License-Identifier: GPL-3.0-or-later

ceph_require ()
{
  local c
  for c in ceph-mon ceph-osd ceph rbd monmaptool ceph-authtool uuidgen \
           timeout ss; do
    if ! command -v "$c" >/dev/null 2>&1; then
      if [ "${CI:-}" = true ]; then
        fail "$c is not installed (CI)"
      fi
      skip "$c is not installed"
    fi
  done
}

ceph_admin ()
{
  timeout 30 ceph --connect-timeout 20 "$@"
}

# Is PID gone (no such process, or a zombie: a daemon reparented to PID 1
# here lingers as one, TESTING.md)?
_ceph_gone ()
{
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  st=${st##*) }
  [ "${st%% *}" = Z ]
}

# A free block of 20 ports.
_ceph_ports ()
{
  local base i used
  if [ -n "${CEPH_PORT_BASE:-}" ]; then
    echo "$CEPH_PORT_BASE"
    return 0
  fi
  used=$(ss -Htan 2>/dev/null | awk '{ n = split ($4, a, ":"); print a[n] }')
  for ((i = 0; i < 50; i++)); do
    base=$((30000 + (RANDOM % 500) * 20))
    if ! awk -v b="$base" '$1 >= b && $1 < b + 20 { f = 1 } END { exit !f }' \
         <<<"$used"; then
      echo "$base"
      return 0
    fi
  done
  return 1
}

_ceph_stop_pid ()
{
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    _ceph_gone "$pid" && break
    sleep 0.1
  done
  if ! _ceph_gone "$pid"; then
    echo "warning: ceph daemon $pid ignored SIGTERM, killing it" >&2
    kill -KILL "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      _ceph_gone "$pid" && break
      sleep 0.1
    done
  fi
  wait "$pid" 2>/dev/null
  return 0
}

ceph_freeze_osd ()
{
  [ -n "${_ceph_osd_pid:-}" ] && kill -STOP "$_ceph_osd_pid"
}

ceph_thaw_osd ()
{
  [ -n "${_ceph_osd_pid:-}" ] && kill -CONT "$_ceph_osd_pid" 2>/dev/null
  return 0
}

ceph_stop_mon ()
{
  [ -n "${_ceph_mon_pid:-}" ] || return 0
  _ceph_stop_pid "$_ceph_mon_pid"
  _ceph_mon_pid=
}

ceph_stop ()
{
  if [ -n "${_ceph_osd_pid:-}" ]; then
    ceph_thaw_osd
    _ceph_stop_pid "$_ceph_osd_pid"
    _ceph_osd_pid=
  fi
  ceph_stop_mon
}

# Dump the daemons' log tails and fail.
_ceph_fail ()
{
  local f
  for f in "$CEPH_DIR"/log/*.log; do
    [ -f "$f" ] || continue
    echo "--- $f (tail)" >&2
    tail -n 20 "$f" >&2
  done
  fail "ceph_start: $*"
}

ceph_start ()
{
  local dir=$1 auth=${2:-none} base p1 p2 uuid i ok
  [ "$auth" = none ] || [ "$auth" = cephx ] ||
    fail "ceph_start: auth must be none or cephx, not $auth"
  [ -z "${_ceph_mon_pid:-}${_ceph_osd_pid:-}" ] ||
    fail "ceph_start: one cluster at a time (ceph_stop first)"
  mkdir -p "$dir"/{run,log,mon,osd}
  dir=$(cd "$dir" && pwd)
  CEPH_DIR=$dir
  CEPH_AUTH=$auth
  CEPH_FSID=$(uuidgen)
  base=$(_ceph_ports) || fail "ceph_start: no free block of ports"
  p2=$base
  p1=$((base + 1))
  CEPH_MON=127.0.0.1:$p1
  CEPH_MON_V2=127.0.0.1:$p2
  CEPH_CONF=$dir/ceph.conf
  export CEPH_CONF CEPH_MON CEPH_MON_V2 CEPH_DIR CEPH_FSID CEPH_AUTH
  cat >"$CEPH_CONF" <<EOF
[global]
fsid = $CEPH_FSID
mon host = [v2:$CEPH_MON_V2,v1:$CEPH_MON]
public addr = 127.0.0.1
ms bind ipv6 = false
ms bind port min = $((base + 2))
ms bind port max = $((base + 19))
auth cluster required = $auth
auth service required = $auth
auth client required = $auth
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
keyring = $dir/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon mgr mkfs grace = 86400
mon data avail warn = 1
mon data avail crit = 0
mon data = $dir/mon
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = 4G
[client]
log file = $dir/log/client.log
EOF
  # Keys exist even with auth none (the mon's mkfs wants its own).  The
  # mon's keyring also holds osd.0 and the clients, which its mkfs imports
  # into the auth database with their caps; client.vmd's key is in no
  # keyring a client reads.
  ceph-authtool "$dir/mon.keyring" --create-keyring --gen-key -n mon. \
    --cap mon 'allow *' >/dev/null || fail "ceph-authtool"
  ceph-authtool "$dir/keyring" --create-keyring --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' \
    --cap mgr 'allow *' >/dev/null || fail "ceph-authtool"
  ceph-authtool "$dir/keyring" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap osd 'allow *' \
    --cap mgr 'allow profile osd' >/dev/null || fail "ceph-authtool"
  ceph-authtool "$dir/vmd.keyring" --create-keyring --gen-key \
    -n client.vmd --cap mon 'profile rbd' --cap osd 'profile rbd pool=rbd' \
    >/dev/null || fail "ceph-authtool"
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" \
    >/dev/null || fail "ceph-authtool"
  ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/vmd.keyring" \
    >/dev/null || fail "ceph-authtool"
  if [ "$auth" = cephx ]; then
    CEPH_CLIENT_ID=vmd
    CEPH_CLIENT_KEY=$(ceph-authtool "$dir/vmd.keyring" -p -n client.vmd)
    CEPH_ADMIN_KEY=$(ceph-authtool "$dir/keyring" -p -n client.admin)
    export CEPH_CLIENT_ID CEPH_CLIENT_KEY CEPH_ADMIN_KEY
  fi
  rm -f "$dir/vmd.keyring"
  monmaptool --create --fsid "$CEPH_FSID" \
    --addv a "[v2:$CEPH_MON_V2,v1:$CEPH_MON]" "$dir/monmap" >/dev/null ||
    fail "monmaptool"
  ceph-mon --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" \
    >"$dir/log/mkfs.log" 2>&1 || _ceph_fail "ceph-mon --mkfs failed"
  on_exit ceph_stop
  # -f: in the foreground (of this background job), so the daemon stays
  # this shell's child and ceph_stop can wait for it.
  ceph-mon -f -i a >>"$dir/log/mon.out" 2>&1 &
  _ceph_mon_pid=$!
  uuid=$(uuidgen)
  ceph_admin osd new "$uuid" >/dev/null 2>>"$dir/log/cli.log" ||
    _ceph_fail "ceph osd new failed (the mon does not answer?)"
  ceph-osd -i 0 --mkfs --osd-uuid "$uuid" >>"$dir/log/mkfs.log" 2>&1 ||
    _ceph_fail "ceph-osd --mkfs failed"
  ceph-osd -f -i 0 >>"$dir/log/osd.out" 2>&1 &
  _ceph_osd_pid=$!
  # The pool can be made before the OSD is up; its PGs go active with it.
  ceph_admin osd pool create rbd 8 8 >/dev/null 2>>"$dir/log/cli.log" ||
    _ceph_fail "ceph osd pool create failed"
  ok=false
  for ((i = 0; i < 600; i++)); do
    if ceph_admin osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1'
    then
      ok=true
      break
    fi
    _ceph_gone "$_ceph_osd_pid" && _ceph_fail "ceph-osd died"
    sleep 0.1
  done
  $ok || _ceph_fail "the OSD is not up after 60 s"
  timeout 60 rbd pool init rbd 2>>"$dir/log/cli.log" ||
    _ceph_fail "rbd pool init failed"
  echo "$CEPH_MON"
}
