/* Unit test of snapshotter/child.c, the child runner: a program that
 * exits (status, stdout and stderr captured), one that hangs (killed at
 * the deadline, reaped, ETIMEDOUT), output over the cap (kept up to it
 * and the rest dropped, or EFBIG), a function run in a forked child,
 * a program that does not exist, and no descriptor of ours leaking into
 * the child.
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "log.h"
#include "test.h"

static int failures;

static long
ms_since (const struct timespec *t0)
{
  struct timespec t;

  clock_gettime (CLOCK_MONOTONIC, &t);
  return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void
in_child (void *arg)
{
  printf ("from fn %s\n", (const char *) arg);
  fflush (stdout);
  fprintf (stderr, "fn says\n");
  _exit (5);
}

int
main (void)
{
  struct child_result r;
  struct timespec t0;
  int keep;

  /* Exits: status, both streams. */
  {
    char *argv[] = { (char *) "sh", (char *) "-c",
      (char *) "echo out; echo err >&2; exit 3", NULL };
    struct child_spec s = { .argv = argv, .what = "sh", .timeout_ms = 10000,
      .capture_out = true, .out_max = 100, .err_max = 100 };
    REQUIRE (child_run (&s, &r) == 0);
    CHECK (WIFEXITED (r.status) && WEXITSTATUS (r.status) == 3);
    CHECK (r.out && strcmp (r.out, "out\n") == 0);
    CHECK (r.err && strcmp (r.err, "err\n") == 0);
    child_result_free (&r);
  }

  /* stdout not captured: NULL, and the child still runs to its end. */
  {
    char *argv[] = { (char *) "sh", (char *) "-c", (char *) "echo x",
      NULL };
    struct child_spec s = { .argv = argv, .timeout_ms = 10000,
      .err_max = 100 };
    REQUIRE (child_run (&s, &r) == 0);
    CHECK (WIFEXITED (r.status) && WEXITSTATUS (r.status) == 0);
    CHECK (r.out == NULL);
    child_result_free (&r);
  }

  /* Hangs: killed at the deadline, reaped, ETIMEDOUT, what it said kept. */
  {
    char *argv[] = { (char *) "sh", (char *) "-c",
      (char *) "echo started >&2; exec sleep 60", NULL };
    struct child_spec s = { .argv = argv, .what = "sleep",
      .timeout_ms = 300, .err_max = 100 };
    clock_gettime (CLOCK_MONOTONIC, &t0);
    errno = 0;
    CHECK (child_run (&s, &r) == -1 && errno == ETIMEDOUT);
    CHECK (ms_since (&t0) < 5000);
    CHECK (r.err && strcmp (r.err, "started\n") == 0);
    CHECK (WIFSIGNALED (r.status) && WTERMSIG (r.status) == SIGKILL);
    CHECK (waitpid (-1, NULL, WNOHANG) == -1 && errno == ECHILD);
    child_result_free (&r);
  }

  /* Closes its output, then hangs: killed after the grace. */
  {
    char *argv[] = { (char *) "sh", (char *) "-c",
      (char *) "exec sleep 60 >&- 2>&-", NULL };
    struct child_spec s = { .argv = argv, .timeout_ms = 200,
      .grace_ms = 200, .err_max = 100 };
    clock_gettime (CLOCK_MONOTONIC, &t0);
    errno = 0;
    CHECK (child_run (&s, &r) == -1 && errno == ETIMEDOUT);
    CHECK (ms_since (&t0) < 5000);
    CHECK (waitpid (-1, NULL, WNOHANG) == -1 && errno == ECHILD);
    child_result_free (&r);
  }

  /* Output over the cap: kept up to it, the rest read and dropped. */
  {
    char *argv[] = { (char *) "head", (char *) "-c", (char *) "1000000",
      (char *) "/dev/zero", NULL };
    struct child_spec s = { .argv = argv, .timeout_ms = 10000,
      .capture_out = true, .out_max = 1000, .err_max = 100 };
    REQUIRE (child_run (&s, &r) == 0);
    CHECK (WIFEXITED (r.status) && WEXITSTATUS (r.status) == 0);
    CHECK (r.out_len == 1000);
    child_result_free (&r);
  }

  /* ... or refused: EFBIG, the child killed and reaped. */
  {
    char *argv[] = { (char *) "sh", (char *) "-c",
      (char *) "head -c 1000000 /dev/zero; exec sleep 60", NULL };
    struct child_spec s = { .argv = argv, .what = "big",
      .timeout_ms = 10000, .capture_out = true, .out_max = 1000,
      .err_max = 100, .overflow_fails = true };
    clock_gettime (CLOCK_MONOTONIC, &t0);
    errno = 0;
    CHECK (child_run (&s, &r) == -1 && errno == EFBIG);
    CHECK (ms_since (&t0) < 5000);
    CHECK (waitpid (-1, NULL, WNOHANG) == -1 && errno == ECHILD);
    child_result_free (&r);
  }

  /* A function in a forked child. */
  {
    struct child_spec s = { .fn = in_child, .arg = (void *) "here",
      .timeout_ms = 10000, .capture_out = true, .out_max = 100,
      .err_max = 100 };
    REQUIRE (child_run (&s, &r) == 0);
    CHECK (WIFEXITED (r.status) && WEXITSTATUS (r.status) == 5);
    CHECK (r.out && strcmp (r.out, "from fn here\n") == 0);
    CHECK (r.err && strcmp (r.err, "fn says\n") == 0);
    child_result_free (&r);
  }

  /* No such program: an error, not a child. */
  {
    char *argv[] = { (char *) "/nonexistent/vd-no-such", NULL };
    struct child_spec s = { .argv = argv, .what = "none",
      .timeout_ms = 10000, .err_max = 100 };
    int rr = child_run (&s, &r);
    /* posix_spawnp reports a failed exec either way: -1 ENOENT, or a
     * child that exits 127. */
    CHECK ((rr == -1 && errno == ENOENT) ||
           (rr == 0 && WIFEXITED (r.status) && WEXITSTATUS (r.status) == 127));
    child_result_free (&r);
  }

  /* Our descriptors stay ours (fn: closed in the child). */
  keep = open ("/dev/null", O_RDONLY);        /* not O_CLOEXEC */
  REQUIRE (keep >= 0);
  {
    char cmd[64];
    char *argv[] = { (char *) "sh", (char *) "-c", cmd, NULL };
    struct child_spec s = { .argv = argv, .timeout_ms = 10000,
      .capture_out = true, .out_max = 100, .err_max = 100 };
    snprintf (cmd, sizeof cmd, "[ -e /proc/self/fd/%d ] && echo open", keep);
    REQUIRE (child_run (&s, &r) == 0);
#ifdef HAVE_POSIX_SPAWN_FILE_ACTIONS_ADDCLOSEFROM_NP
    CHECK (r.out && strcmp (r.out, "") == 0);
#endif
    child_result_free (&r);
  }
  close (keep);

  if (failures)
    fprintf (stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
