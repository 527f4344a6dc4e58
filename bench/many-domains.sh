#!/bin/bash
# Scale measurement of libvirt mode: N domains (default 1000) with S
# snapshots each (default 10), on a real libvirtd.  The snapshots are
# metadata only (`virsh snapshot-create --redefine` of crafted XML, fast),
# and every domain's one disk is the same tiny qcow2 image that holds S
# internal snapshots of those names, so every snapshot directory is real.
# Everything is defined through one virsh session.
#
# Measures: the time to define; the mount's start (until it answers); `ls`
# of the root and `ls -R` of the whole mount, first (cold: the daemon
# fetches every domain's XML and snapshots) and second (cached); `find
# -type f | wc -l`; the daemon's VmRSS and VmHWM after each step, and
# the CPU time the daemon and libvirtd spent in each ls -R.
#
# Run as root from a built tree (not part of `make check`):
#   bench/many-domains.sh              N=1000 S=10, about 2 minutes
#   N=200 S=5 bench/many-domains.sh
# Environment: N S VMDISKFS LV_URI; COMPARE="ANOTHER_VMDISKFS ..." (each
# run mounts them too, after VMDISKFS: before/after figures on the same
# domains); RUNS=n (mount, ls, ls -R twice, n
# times: n cold figures); PROFILE=CMD (run as CMD DAEMON_PID LIBVIRTD_PID
# during the first cold ls -R, then sent SIGINT: e.g. a script running
# perf record -g -p "$1"); WAIT=SECONDS (sleep between the root's `ls`
# and the first ls -R, with the CPU both spent meanwhile: the prefetch of
# the libvirt data runs alone, and the first ls -R measures the rest);
# KEEP=1 (wait for Enter before the cleanup, to look around in the mount).
# Figures (2026-12-06, 2 shared cores under a load of 2-3.5, no
# /dev/kvm, N=1000 S=10, RUNS=2, COMPARE in one run; bench/README.md):
# ls -R first 9.7/10.2 s at 54d2eeb -> 7.0/8.7 s at e975c71 (daemon CPU
# 7.0/6.9 -> 3.9/4.1 s, libvirtd's 2.2/2.8 -> 2.4/2.0 s); second
# 4.5/4.1 -> 1.2/1.6 s (daemon CPU 2.7/2.3 -> 0.7/0.8 s); VmHWM 57-58
# MiB both.  With WAIT=15: the prefetch alone 1.2 s of daemon CPU and 1.8 s
# of libvirtd's, the first ls -R after it 4.8 s (2.9 s of daemon CPU).
# Other domains defined on the host are listed too and counted in the
# report.  Cleanup: undefine (--snapshots-metadata) the domains it made,
# unmount, remove its files.
#
# SPDX-License-Identifier: GPL-3.0-or-later
set -u
{
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/integration/functions.sh"
. "$here/../tests/integration/libvirt-functions.sh"
N=${N:-1000}
S=${S:-10}
lv_start
P=vdb-many-$$
MNT=$LV_MNT_DIR/mnt
W=$TEST_DIR/many
mkdir -p "$W"

ms () { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
mem ()
{
  local pid
  pid=$(vmdiskfs_pid "$MNT")
  awk '/^VmRSS|^VmHWM/ { printf "%s %d MiB  ", $1, $2 / 1024 }' "/proc/$pid/status"
}

img=$W/shared.qcow2
qemu-img create -q -f qcow2 "$img" 16M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$img" >/dev/null
for ((j = 1; j <= S; j++)); do
  qemu-img snapshot -c "s$j" "$img"
done

echo "many-domains: generating $N domains x $S snapshots"
cmds=$W/cmds
python3 - "$W" "$P" "$N" "$S" "$img" "$LV_DOMTYPE" >"$cmds" <<'EOF'
import sys, uuid
w, p, n, s, img = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
domtype = sys.argv[6]
for i in range(n):
    name = "%s-%04d" % (p, i)
    dom = """<domain type='%s'>
  <name>%s</name>
  <uuid>%s</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
""" % (domtype, name, uuid.uuid4(), img)
    open("%s/%d.xml" % (w, i), "w").write(dom)
    print("define %s/%d.xml" % (w, i))
    for j in range(1, s + 1):
        parent = "  <parent><name>s%d</name></parent>\n" % (j - 1) if j > 1 else ""
        snap = ("<domainsnapshot>\n  <name>s%d</name>\n  <state>shutoff</state>\n%s"
                "  <creationTime>%d</creationTime>\n  <memory snapshot='no'/>\n"
                "  <disks><disk name='vda' snapshot='internal'/></disks>\n%s"
                "</domainsnapshot>\n") % (
            j, parent, 1600000000 + j * 3600,
            "".join("  " + l + "\n" for l in dom.splitlines()))
        open("%s/%d-%d.xml" % (w, i, j), "w").write(snap)
        print("snapshot-create %s %s/%d-%d.xml --redefine" % (name, w, i, j))
EOF
for ((i = 0; i < N; i++)); do
  lv_forget_later "$(printf '%s-%04d' "$P" "$i")"
done

t=$(date +%s%N)
lv_virsh <"$cmds" >"$W/define.out" 2>&1
echo "many-domains: defined $N domains and $((N * S)) snapshots in $(ms "$t") ms ($(grep -c '^error' "$W/define.out") errors)"
total=$(lv_virsh list --all --name | sed '/^$/d' | wc -l)

# CPU time (ms) of a process so far.
cpu ()
{
  awk '{ print int(($14 + $15) * 1000 / '"$(getconf CLK_TCK)"') }' "/proc/$1/stat" 2>/dev/null || echo 0
}
lvpid=$(pgrep -x -o libvirtd)

bins=("$VMDISKFS")
# shellcheck disable=SC2206 # COMPARE: one or more binaries
[ -n "${COMPARE:-}" ] && bins+=($COMPARE)
mounted=false
for ((run = 1; run <= ${RUNS:-1}; run++)); do
 for bin in "${bins[@]}"; do
  $mounted && stop_vmdiskfs "$MNT"
  [ ${#bins[@]} -gt 1 ] && echo "many-domains: run $run: $bin"
  t=$(date +%s%N)
  VMDISKFS=$bin start_vmdiskfs "$MNT" -o connect="$LV_URI"
  mounted=true
  echo "many-domains: mounted in $(ms "$t") ms; $(mem)"
  pid=$(vmdiskfs_pid "$MNT")
  t=$(date +%s%N)
  shown=$(ls -1 "$MNT" | wc -l)
  echo "many-domains: ls of the root: $shown entries ($total domains defined on the host, $N ours) in $(ms "$t") ms; $(mem)"
  if [ -n "${WAIT:-}" ]; then
    # The root's listing started the prefetch of every domain's libvirt
    # data: let it finish, so that the first ls -R measures the daemon's
    # own work alone.
    c0=$(cpu "$pid") l0=$(cpu "$lvpid")
    sleep "$WAIT"
    echo "many-domains: waited $WAIT s (CPU: daemon $(( $(cpu "$pid") - c0 )) ms, libvirtd $(( $(cpu "$lvpid") - l0 )) ms)"
  fi
  for pass in first second; do
    prof=
    if [ "$pass" = first ] && [ -n "${PROFILE:-}" ]; then
      # PROFILE: a command run with the daemon's and libvirtd's pids
      # during the cold pass, stopped with SIGINT after it.
      $PROFILE "$pid" "$lvpid" &
      prof=$!
      sleep 1
    fi
    c0=$(cpu "$pid") l0=$(cpu "$lvpid")
    t=$(date +%s%N)
    ls -R "$MNT" >/dev/null
    echo "many-domains: ls -R, $pass: $(ms "$t") ms (CPU: daemon $(( $(cpu "$pid") - c0 )) ms, libvirtd $(( $(cpu "$lvpid") - l0 )) ms); $(mem)"
    if [ -n "$prof" ]; then
      kill -INT "$prof"
      wait "$prof"
    fi
  done
 done
done
t=$(date +%s%N)
files=$(find "$MNT/$P"-* -type f | wc -l)
echo "many-domains: find: $files files under our domains (want $((N * (2 + S * 3)))) in $(ms "$t") ms; $(mem)"
t=$(date +%s%N)
cat "$MNT/$P-0000/snapshots/s$S/vda.img" "$MNT/$(printf '%s-%04d' "$P" $((N - 1)))/snapshots/s1/vda.img" >/dev/null
echo "many-domains: read two snapshot disks in $(ms "$t") ms"

if [ "${KEEP:-0}" = 1 ]; then
  echo "many-domains: KEEP=1: left mounted on $MNT; press Enter to clean up"
  read -r
fi
t=$(date +%s%N)
stop_vmdiskfs "$MNT"
lv_cleanup
echo "many-domains: cleaned up in $(ms "$t") ms"
exit 0
}
