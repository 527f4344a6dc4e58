#!/bin/bash
# The whole test suite, from a fresh clone on Debian 12, as root:
# installs what it needs, builds, runs `make check` (unit tests in C,
# integration tests with real qemu-img/qemu-io/FUSE, fuzzing for a bounded
# time), and prints one closing line "N passed, N failed, N skipped".
# SPDX-License-Identifier: GPL-3.0-or-later
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

bash tests/install-deps.sh || { echo "run-all: installing packages failed"; exit 1; }

if [ ! -x configure ] || [ configure.ac -nt configure ]; then
  autoreconf -fi || exit 1
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
  ./configure || exit 1
fi
make -j"$(nproc)" || exit 1

make -j"$(nproc)" check
rc=$?

log=test-suite.log
count () { sed -n "s/^# $1: *//p" "$log" | head -1; }
if [ -f "$log" ]; then
  pass=$(count PASS); fail=$(count FAIL); err=$(count ERROR)
  skip=$(count SKIP); xpass=$(count XPASS)
  fail=$(( ${fail:-0} + ${err:-0} + ${xpass:-0} ))
  for f in $(find tests -name '*.log' ! -name test-suite.log); do
    if grep -q '^:test-result: \(FAIL\|ERROR\)' "${f%.log}.trs" 2>/dev/null; then
      echo "=== $f"; tail -50 "$f"
    fi
  done
  echo "${pass:-0} passed, ${fail} failed, ${skip:-0} skipped"
else
  echo "0 passed, 1 failed"
  rc=1
fi
exit $rc
