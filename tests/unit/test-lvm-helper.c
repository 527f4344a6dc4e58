/* Unit test of snapshotter/lvm-helper.c on the host (no device-mapper
 * needed: lvs with no volume groups still prints a report): a report
 * comes back and parses, a failing command is EIO, a deadline that
 * cannot be met is ETIMEDOUT with the child killed and reaped, calls from
 * several threads at once all work, and the calling process keeps its
 * umask and signal handlers (liblvm2cmd runs in the child only).  The
 * real listing is tested in the guest (tests/lvm/lvm-list.sh).  Skips
 * (77) when not root: lvm refuses to run.
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lvm.h"
#include "log.h"
#include "test.h"

static int failures;

#define LVS "lvs --reportformat json -o lv_name,vg_name"

static int
lvs_parses (void)
{
  char *out = NULL;
  struct lvm_lv *lvs;
  size_t n;
  int r = -1;

  if (lvm_helper_run (LVS, 60000, &out) == 0 && out &&
      lvm_json_parse (out, strlen (out), &lvs, &n) == 0) {
    lvm_lvs_free (lvs, n);
    r = 0;
  }
  free (out);
  return r;
}

static void *
thread (void *arg)
{
  return (void *) (long) lvs_parses ();
}

static void
handler (int sig)
{
}

int
main (void)
{
  struct sigaction sa = { .sa_handler = handler }, before, after;
  pthread_t t[4];
  char *out = NULL;
  mode_t m;
  int i;

  if (geteuid () != 0) {
    printf ("SKIP: lvm needs root\n");
    return 77;
  }
  umask (027);
  sigaction (SIGUSR1, &sa, NULL);
  sigaction (SIGUSR1, NULL, &before);

  /* A report. */
  CHECK (lvs_parses () == 0);

  /* A failing command: EIO, its messages logged. */
  errno = 0;
  CHECK (lvm_helper_run ("lvs vd_no_such_vg", 60000, &out) == -1);
  CHECK (errno == EIO);
  CHECK (out == NULL);
  errno = 0;
  CHECK (lvm_helper_run ("no-such-lvm-command", 60000, NULL) == -1);
  CHECK (errno == EIO);

  /* A deadline of 1 ms: killed, reaped, ETIMEDOUT. */
  errno = 0;
  CHECK (lvm_helper_run (LVS, 1, &out) == -1);
  CHECK (errno == ETIMEDOUT);
  CHECK (waitpid (-1, NULL, WNOHANG) == -1 && errno == ECHILD);

  /* Four at once.  Not under valgrind (tests/unit/valgrind.sh sets
   * VD_UNDER_VALGRIND): a helper forked while another thread holds a
   * buffer in a register sees that buffer "definitely lost" at its exit,
   * and valgrind makes the child exit with its error code. */
  if (!getenv ("VD_UNDER_VALGRIND"))
    for (i = 0; i < 4; i++)
      CHECK (pthread_create (&t[i], NULL, thread, NULL) == 0);
  for (i = 0; i < 4 && !getenv ("VD_UNDER_VALGRIND"); i++) {
    void *r;
    pthread_join (t[i], &r);
    CHECK (r == NULL);
  }

  /* The process as it was. */
  m = umask (0);
  CHECK (m == 027);
  sigaction (SIGUSR1, NULL, &after);
  CHECK (after.sa_handler == before.sa_handler);
  CHECK (waitpid (-1, NULL, WNOHANG) == -1 && errno == ECHILD);

  if (failures) {
    fprintf (stderr, "%d failures\n", failures);
    return 1;
  }
  printf ("test-lvm-helper: ok\n");
  return 0;
}
