/* vmdiskfs - run one lvm command through liblvm2cmd in a forked child.
 *
 * liblvm2cmd changes process-wide state (signal handlers, umask, the
 * locale, stdio buffers, open file descriptors, memory locking during
 * activation), so it never runs inside the FUSE process (DESIGN.md): each
 * command forks a child that calls lvm2_init/lvm2_run/lvm2_exit and
 * _exit()s.  The child's stdout, where the report goes, is one pipe and
 * its stderr (errors, warnings) another; child.c's runner reads both
 * until they close or the deadline passes (then SIGKILL), and reaps the
 * child.
 *
 * Why stdout and not LVM_REPORT_FD: the lvm binary's main() reads
 * LVM_OUT_FD/LVM_ERR_FD/LVM_REPORT_FD (tools/lvmcmdline.c, lvm2_main),
 * lvm2_init()/lvm2_run() do not: with liblvm2cmd 2.03.16 the report is
 * printed on stdout whatever LVM_REPORT_FD says (tried).
 * lvs prints nothing else on stdout; other commands' chatter ("Logical
 * volume ... created") lands there too and is ignored.
 *
 * The parent may be multithreaded.  After fork only the calling thread
 * exists in the child; glibc makes malloc and stdio usable there, and the
 * child touches none of our own locks (no vd_log: it writes to its
 * stderr, which is the message pipe) nor the environment's.  A lock of
 * some other library held by another thread at the fork would hang the
 * child: the deadline kills it and the call fails ETIMEDOUT.  Each call has a child of its own,
 * so calls from several threads run at once, serialised by LVM's own
 * file locks.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lvm2cmd.h>

#include "child.h"
#include "lvm.h"
#include "log.h"
#include "cleanup.h"

#define MAX_OUTPUT (64 << 20)   /* a report larger than this is refused */
#define REAP_GRACE_MS 5000      /* its pipes closed: then killed */

/* In the child (child.c made fd 0 /dev/null, 1 the report pipe, 2 the
 * message pipe, nothing else open, signals as after exec).  Never
 * returns. */
static void __attribute__ ((noreturn))
child (void *arg)
{
  const char *cmdline = arg;
  void *h;
  int r;

  h = lvm2_init ();
  if (!h) {
    fprintf (stderr, "lvm2_init failed\n");
    _exit (125);
  }
  r = lvm2_run (h, cmdline);
  lvm2_exit (h);
  fflush (NULL);
  _exit (r == LVM2_COMMAND_SUCCEEDED ? 0 : (r > 0 && r < 100 ? r : 99));
}

/* Log the child's messages, one vd_error per line, without our prefix
 * noise ("  " indentation). */
static void
log_messages (const char *cmdline, const char *msgs)
{
  const char *p = msgs, *nl;

  if (!msgs || !*msgs) {
    vd_error ("lvm: %s: failed (no message)", cmdline);
    return;
  }
  while (*p) {
    nl = strchr (p, '\n');
    size_t n = nl ? (size_t) (nl - p) : strlen (p);
    const char *s = p;
    while (n > 0 && (*s == ' ' || *s == '\t')) {
      s++;
      n--;
    }
    if (n > 0)
      vd_error ("lvm: %s: %.*s", cmdline, (int) n, s);
    if (!nl)
      break;
    p = nl + 1;
  }
}

int
lvm_helper_run (const char *cmdline, int timeout_ms, char **report)
{
  CLEANUP_FREE char *what = NULL;
  struct child_spec cs = {
    .fn = child, .arg = (void *) cmdline,
    .timeout_ms = timeout_ms, .grace_ms = REAP_GRACE_MS,
    .capture_out = true, .out_max = MAX_OUTPUT, .err_max = MAX_OUTPUT,
    .overflow_fails = true,
  };
  struct child_result cr;
  int status, err = 0;

  if (report)
    *report = NULL;
  if (asprintf (&what, "lvm: %s", cmdline) < 0)
    return -1;
  cs.what = what;
  if (child_run (&cs, &cr) < 0) {
    err = errno;
    if (err == ETIMEDOUT)
      vd_error ("lvm: %s: no answer within %d ms: killed", cmdline,
                timeout_ms);
    goto out;
  }
  status = cr.status;
  /* status -1: SIGCHLD ignored by the caller, no status to be had. */
  if (status != -1 && !(WIFEXITED (status) && WEXITSTATUS (status) == 0)) {
    log_messages (cmdline, cr.err);
    if (WIFSIGNALED (status))
      vd_error ("lvm: %s: killed by signal %d", cmdline, WTERMSIG (status));
    else
      vd_error ("lvm: %s: failed (status %d)", cmdline, WEXITSTATUS (status));
    err = EIO;
  }
  else if (cr.err && *cr.err)
    vd_debug ("lvm: %s: %s", cmdline, cr.err);

 out:
  if (!err && report) {
    *report = cr.out;
    cr.out = NULL;
  }
  child_result_free (&cr);
  if (err) {
    errno = err;
    return -1;
  }
  return 0;
}
