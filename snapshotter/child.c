/* vmdiskfs - one child process with a deadline (child.h).
 *
 * Both pipes are read without blocking, polled at most a second at a
 * time so that the deadline is looked at even when the child is silent.
 * Once they close (the child exited, or closed them) the child is reaped
 * with WNOHANG until the deadline plus grace_ms, then killed: a child
 * that closed its output and hangs does not hang the caller.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "log.h"
#include "clock.h"

extern char **environ;

/* What one pipe gave so far. */
struct sink {
  int fd;                     /* -1: closed                               */
  char *s;                    /* NUL-terminated                           */
  size_t len, cap, max;
  bool overflowed;
};

/* Read what is there into k, keeping at most k->max bytes.  1 more may
 * come, 0 EOF, -1 error (errno; EFBIG more than k->max with fail). */
static int
drain (struct sink *k, bool fail)
{
  char junk[4096];

  for (;;) {
    ssize_t r;
    char *dst = junk;
    size_t room = sizeof junk;

    if (k->len < k->max) {
      if (k->cap - k->len < 4096 + 1 && k->cap < k->max + 1) {
        size_t cap = k->cap ? k->cap * 2 : 16384;
        char *t;
        if (cap > k->max + 1)
          cap = k->max + 1;
        t = realloc (k->s, cap);
        if (!t)
          return -1;
        k->s = t;
        k->cap = cap;
        k->s[k->len] = '\0';
      }
      dst = k->s + k->len;
      room = k->cap - k->len - 1;
    }
    r = read (k->fd, dst, room);
    if (r > 0) {
      if (dst == junk) {
        k->overflowed = true;
        if (fail) {
          errno = EFBIG;
          return -1;
        }
        continue;
      }
      k->len += r;
      k->s[k->len] = '\0';
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

/* In the forked child: stdio as child.h says, then fn.  Never returns. */
static void __attribute__ ((noreturn))
forked (const struct child_spec *s, int out_fd, int err_fd)
{
  sigset_t none;
  int null_fd, i;

  /* Default signal dispositions and nothing blocked, as after exec. */
  for (i = 1; i < NSIG; i++)
    if (i != SIGKILL && i != SIGSTOP)
      signal (i, SIG_DFL);
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);

  null_fd = open ("/dev/null", O_RDWR);
  if (null_fd < 0 || dup2 (null_fd, 0) < 0 ||
      dup2 (out_fd >= 0 ? out_fd : null_fd, 1) < 0 || dup2 (err_fd, 2) < 0)
    _exit (126);
  close_range (3, ~0U, 0);
  s->fn (s->arg);
  _exit (127);
}

static int
spawn (const struct child_spec *s, int out_fd, int err_fd, pid_t *pid)
{
  posix_spawn_file_actions_t fa;
  int r;

  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0)
    posix_spawn_file_actions_adddup2 (&fa, out_fd, 1);
  else
    posix_spawn_file_actions_addopen (&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2 (&fa, err_fd, 2);
#ifdef HAVE_POSIX_SPAWN_FILE_ACTIONS_ADDCLOSEFROM_NP
  posix_spawn_file_actions_addclosefrom_np (&fa, 3);
#endif
  r = posix_spawnp (pid, s->argv[0], &fa, NULL, s->argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  return r;
}

void
child_result_free (struct child_result *r)
{
  free (r->out);
  free (r->err);
  r->out = r->err = NULL;
  r->out_len = r->err_len = 0;
}

int
child_run (const struct child_spec *s, struct child_result *res)
{
  int op[2] = { -1, -1 }, ep[2] = { -1, -1 };
  struct sink k[2] = {
    { .fd = -1, .max = s->out_max },
    { .fd = -1, .max = s->err_max },
  };
  const char *what = s->what ? s->what : "child";
  int64_t deadline, waited;
  bool killed = false;
  int status = -1, err = 0, i;
  pid_t pid, w;

  memset (res, 0, sizeof *res);
  res->status = -1;
  if (pipe2 (ep, O_CLOEXEC) < 0 ||
      (s->capture_out && pipe2 (op, O_CLOEXEC) < 0)) {
    err = errno;
    vd_error ("%s: pipe: %m", what);
    goto out;
  }
  if (s->argv) {
    int r = spawn (s, op[1], ep[1], &pid);
    if (r != 0) {
      err = r;
      vd_error ("%s: %s", what, strerror (r));
      goto out;
    }
  }
  else {
    pid = fork ();
    if (pid < 0) {
      err = errno;
      vd_error ("%s: fork: %m", what);
      goto out;
    }
    if (pid == 0)
      forked (s, op[1], ep[1]);
  }
  deadline = (int64_t) vd_now_ms () + s->timeout_ms;

  for (i = 0; i < 2; i++) {
    int *p = i == 0 ? op : ep;
    if (p[1] >= 0)
      close (p[1]);
    p[1] = -1;
    k[i].fd = p[0];
    p[0] = -1;
    if (k[i].fd >= 0)
      fcntl (k[i].fd, F_SETFL, O_NONBLOCK);
  }

  while (k[0].fd >= 0 || k[1].fd >= 0) {
    struct pollfd pf[2] = {
      { .fd = k[0].fd, .events = POLLIN },
      { .fd = k[1].fd, .events = POLLIN },
    };
    int64_t left = deadline - (int64_t) vd_now_ms ();
    int n;

    if (left <= 0) {
      killed = true;
      break;
    }
    n = poll (pf, 2, left > 1000 ? 1000 : (int) left);
    if (n < 0 && errno != EINTR) {
      err = errno;
      vd_error ("%s: poll: %m", what);
      break;
    }
    for (i = 0; i < 2 && n > 0; i++) {
      int d;
      if (k[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      d = drain (&k[i], s->overflow_fails);
      if (d < 0) {
        err = errno;
        vd_error ("%s: reading its output: %m", what);
        break;
      }
      if (d == 0) {
        close (k[i].fd);
        k[i].fd = -1;
      }
    }
    if (err)
      break;
  }
  if (killed || err)
    kill (pid, SIGKILL);

  /* Its pipes closed (or it is killed): reap it, killing it when it
   * takes longer than the deadline and the grace. */
  for (waited = 0;; waited++) {
    w = waitpid (pid, &status, WNOHANG);
    if (w == pid)
      break;
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      /* SIGCHLD ignored by the caller: no status to be had. */
      if (errno != ECHILD && !err) {
        err = errno;
        vd_error ("%s: waitpid: %m", what);
      }
      status = -1;
      break;
    }
    if (!killed && (int64_t) vd_now_ms () > deadline + s->grace_ms) {
      kill (pid, SIGKILL);
      killed = true;
    }
    usleep (waited < 200 ? 1000 : 20000);
  }
  res->status = status;
  if (killed && !err)
    err = ETIMEDOUT;

 out:
  for (i = 0; i < 2; i++) {
    if (op[i] >= 0)
      close (op[i]);
    if (ep[i] >= 0)
      close (ep[i]);
    if (k[i].fd >= 0)
      close (k[i].fd);
  }
  res->out = k[0].s;
  res->out_len = k[0].len;
  res->err = k[1].s;
  res->err_len = k[1].len;
  if (s->capture_out && !res->out && !err) {
    res->out = strdup ("");
    if (!res->out)
      err = ENOMEM;
  }
  if (err) {
    errno = err;
    return -1;
  }
  return 0;
}
