/* vmdiskfs - run one lvm command through liblvm2cmd in a forked child.
 *
 * liblvm2cmd changes process-wide state (signal handlers, umask, the
 * locale, stdio buffers, open file descriptors, memory locking during
 * activation), so it never runs inside the FUSE process (DESIGN.md): each
 * command forks a child that calls lvm2_init/lvm2_run/lvm2_exit and
 * _exit()s.  The child's stdout, where the report goes, is one pipe and
 * its stderr (errors, warnings) another; the parent reads both until they
 * close or the deadline passes (then SIGKILL), and reaps the child.
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
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lvm2cmd.h>

#include "lvm.h"
#include "log.h"
#include "cleanup.h"
#include "clock.h"
#include "vec.h"

#define MAX_OUTPUT (64 << 20)   /* a report larger than this is refused */

/* In the child: fd 0 /dev/null, 1 the report pipe, 2 the message pipe;
 * nothing else open (the FUSE fd, image fds ...).  Never returns. */
static void __attribute__ ((noreturn))
child (const char *cmdline, int msg_fd, int rep_fd)
{
  sigset_t all;
  int null_fd, i, r;
  void *h;

  /* Default signal dispositions and nothing blocked, as after exec. */
  for (i = 1; i < NSIG; i++)
    if (i != SIGKILL && i != SIGSTOP)
      signal (i, SIG_DFL);
  sigemptyset (&all);
  sigprocmask (SIG_SETMASK, &all, NULL);

  null_fd = open ("/dev/null", O_RDWR);
  if (null_fd < 0 || dup2 (null_fd, 0) < 0 || dup2 (rep_fd, 1) < 0 ||
      dup2 (msg_fd, 2) < 0)
    _exit (126);
  /* Nothing leaked for lvm to warn about ("File descriptor ... leaked"). */
  close_range (3, ~0U, 0);

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

struct out {
  char *s;
  size_t len, cap;
};

/* Read what is there from fd into o.  1 more may come, 0 EOF, -1 error. */
static int
drain (int fd, struct out *o)
{
  for (;;) {
    ssize_t r;
    if (o->cap - o->len < 4096) {
      char *t;
      if (o->len > MAX_OUTPUT - 4096) {
        errno = EFBIG;
        return -1;
      }
      t = vd_vec_grow (o->s, &o->cap, o->len, 4096, 1);
      if (!t)
        return -1;
      o->s = t;
      o->s[o->len] = '\0';
    }
    r = read (fd, o->s + o->len, o->cap - o->len - 1);
    if (r > 0) {
      o->len += r;
      o->s[o->len] = '\0';
      continue;
    }
    if (r == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN)
      return 1;
    return -1;
  }
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
  int msg[2] = { -1, -1 }, rep[2] = { -1, -1 };
  struct out mo = { 0 }, ro = { 0 };
  int64_t deadline;
  bool timed_out = false;
  int status, err = 0, open_fds;
  pid_t pid, w;

  if (report)
    *report = NULL;
  if (pipe2 (msg, O_CLOEXEC) < 0 || pipe2 (rep, O_CLOEXEC) < 0) {
    err = errno;
    vd_error ("lvm: pipe: %m");
    goto out;
  }
  pid = fork ();
  if (pid < 0) {
    err = errno;
    vd_error ("lvm: fork: %m");
    goto out;
  }
  if (pid == 0)
    child (cmdline, msg[1], rep[1]);

  close (msg[1]);
  close (rep[1]);
  msg[1] = rep[1] = -1;
  fcntl (msg[0], F_SETFL, O_NONBLOCK);
  fcntl (rep[0], F_SETFL, O_NONBLOCK);

  deadline = (int64_t) vd_now_ms () + timeout_ms;
  open_fds = 2;
  while (open_fds > 0) {
    struct pollfd pfd[2] = {
      { .fd = msg[0], .events = POLLIN },
      { .fd = rep[0], .events = POLLIN },
    };
    int64_t left = deadline - (int64_t) vd_now_ms ();
    int i, r;

    if (left <= 0) {
      timed_out = true;
      break;
    }
    r = poll (pfd, 2, left > 1000 ? 1000 : (int) left);
    if (r < 0 && errno != EINTR) {
      err = errno;
      vd_error ("lvm: poll: %m");
      break;
    }
    for (i = 0; i < 2 && r > 0; i++) {
      int *fd = i == 0 ? &msg[0] : &rep[0];
      struct out *o = i == 0 ? &mo : &ro;
      int d;
      if (*fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      d = drain (*fd, o);
      if (d < 0) {
        err = errno;
        vd_error ("lvm: %s: reading its output: %m", cmdline);
        timed_out = true;             /* kill it */
        break;
      }
      if (d == 0) {
        close (*fd);
        *fd = -1;
        pfd[i].fd = -1;
        open_fds--;
      }
    }
    if (err)
      break;
  }

  if (timed_out || err) {
    kill (pid, SIGKILL);
    if (!err) {
      vd_error ("lvm: %s: no answer within %d ms: killed", cmdline,
                timeout_ms);
      err = ETIMEDOUT;
    }
  }
  /* The pipes are closed when the child exits (or it closed them): wait,
   * but not forever. */
  for (;;) {
    w = waitpid (pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR))
      break;
    if ((int64_t) vd_now_ms () > deadline + 5000) {
      kill (pid, SIGKILL);
      deadline = (int64_t) vd_now_ms ();
    }
    usleep (1000);
  }
  if (w < 0) {
    /* SIGCHLD ignored by the caller: no status to be had. */
    if (!err && errno != ECHILD) {
      err = errno;
      vd_error ("lvm: waitpid: %m");
    }
  }
  else if (!err && !(WIFEXITED (status) && WEXITSTATUS (status) == 0)) {
    log_messages (cmdline, mo.s);
    if (WIFSIGNALED (status))
      vd_error ("lvm: %s: killed by signal %d", cmdline, WTERMSIG (status));
    else
      vd_error ("lvm: %s: failed (status %d)", cmdline, WEXITSTATUS (status));
    err = EIO;
  }
  else if (!err && mo.s && *mo.s)
    vd_debug ("lvm: %s: %s", cmdline, mo.s);

 out:
  for (int i = 0; i < 2; i++) {
    if (msg[i] >= 0) close (msg[i]);
    if (rep[i] >= 0) close (rep[i]);
  }
  free (mo.s);
  if (err) {
    free (ro.s);
    errno = err;
    return -1;
  }
  if (report)
    *report = ro.s;
  else
    free (ro.s);
  return 0;
}
