# vmdiskfs - failure counting, watchdog and unmount checks shared by the
# long mount tests (matrix.sh, big-sparse.sh, corrupt.sh) (bash).
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Source it after functions.sh, once the caller has set:
#   MNT   the mount point the test serves
#
# Variables it sets:
#   LOG           the daemon's log file (vmdiskfs_log "$MNT")
#   PID           the daemon's pid: empty until mx_start mounts
#   mx_failures   failed checks so far (0); the caller reports it at the end
#   mx_checks     passed checks so far (0), counted by mx_ok
#   MX_WD         the watchdog's pid while it runs, else empty
#
# Functions:
#   mx_start SECS ARG...   start_vmdiskfs "$MNT" ARG..., set PID, and
#                          mx_watchdog_start SECS
#   mx_fail WHAT MSG       count a failure, print "FAIL: WHAT: MSG", go on
#   mx_ok                  count a passed check
#   mx_exit_failed         stop the watchdog, print the last 40 lines of
#                          $LOG, exit 1
#   mx_check_alive WHY     return 0 if $PID is alive and ls $MNT answers
#                          within 10 s; else mx_fail (WHY in the message),
#                          kill -KILL $PID if hung, detach $MNT
#                          (fusermount3 -uz) and mx_exit_failed
#   mx_watchdog_start SECS in the background: after SECS seconds, print a
#                          FAIL line and kill -KILL $PID (so a hung daemon
#                          fails the test instead of hanging it)
#   mx_watchdog_stop       stop that watchdog (no-op if none runs)
#   mx_stop                stop the watchdog, fusermount3 -u $MNT, check
#                          that $PID exits within 5 s (else mx_fail and
#                          kill -KILL) and with status 0 (stop_vmdiskfs
#                          "$MNT" from functions.sh); every problem is an
#                          mx_fail
#
# It sets no shell options; the callers run under set -eE and pipefail.

LOG=$(vmdiskfs_log "$MNT")
PID=
mx_failures=0
mx_checks=0
MX_WD=

mx_fail ()
{
  mx_failures=$((mx_failures + 1))
  echo "FAIL: $1: $2"
}

mx_ok ()
{
  mx_checks=$((mx_checks + 1))
}

# On failure: the daemon's log, then exit 1.
mx_exit_failed ()
{
  mx_watchdog_stop
  if [ -s "$LOG" ]; then
    echo "--- vmdiskfs log (last 40 lines) ---"
    tail -n 40 "$LOG"
  fi
  exit 1
}

# The daemon stopped answering (a read failed and a readdir times out too):
# kill it, detach the mount, fail now rather than time out on every file.
mx_check_alive ()
{
  if ! kill -0 "$PID" 2>/dev/null; then
    mx_fail "daemon" "vmdiskfs died ($1)"
  elif timeout 10 ls "$MNT" >/dev/null 2>&1; then
    return 0
  else
    mx_fail "daemon" "vmdiskfs stopped answering ($1)"
    kill -KILL "$PID"
  fi
  fusermount3 -uz "$MNT" 2>/dev/null || true
  mx_exit_failed
}

# Watchdog: a daemon that hangs would hang the test in the kernel (a stat
# from the shell waits for the FUSE answer); after SECS seconds of mount the
# watchdog kills the daemon, so every pending request fails and the test
# fails (exit status 137) instead of hanging.
mx_watchdog_start ()
{
  local secs=$1
  ( trap 'kill $s 2>/dev/null; exit 0' TERM
    sleep "$secs" & s=$!
    wait $s
    echo "FAIL: watchdog: vmdiskfs still mounted after $secs s: killing it"
    kill -KILL "$PID" ) &
  MX_WD=$!
}

# Mount, and arm the watchdog for SECS seconds.
mx_start ()
{
  local secs=$1
  shift
  start_vmdiskfs "$MNT" "$@"
  PID=$(vmdiskfs_pid "$MNT")
  mx_watchdog_start "$secs"
}

mx_watchdog_stop ()
{
  if [ -n "$MX_WD" ]; then
    kill "$MX_WD" 2>/dev/null || true
    wait "$MX_WD" 2>/dev/null || true
    MX_WD=
  fi
}

# Unmount and check that the daemon exits, cleanly, within 5 s.
mx_stop ()
{
  local rc=0
  mx_watchdog_stop
  fusermount3 -u "$MNT" || mx_fail "unmount" "fusermount3 -u $MNT failed"
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PID" 2>/dev/null; then
    mx_fail "unmount" "vmdiskfs still running 5 s after fusermount3 -u"
    kill -KILL "$PID"
  fi
  stop_vmdiskfs "$MNT" || rc=$?
  if [ $rc -ne 0 ]; then
    mx_fail "unmount" "vmdiskfs exited with status $rc"
  fi
}
