/* vmdiskfs - vd-lvm-list: the LVM snapshot provider from the command line
 * (tests, debugging), without FUSE.
 *
 *   vd-lvm-list [-c] [-d] DISK                 list DISK's snapshots
 *   vd-lvm-list [-c] [-d] DISK DISK...         the same for several disks,
 *                                              one lvs for all (list_many):
 *                                              "# DISK" before each list,
 *                                              "# DISK: error" on failure
 *   vd-lvm-list [-c] [-d] activate DISK NAME   activate snapshot NAME
 *   vd-lvm-list [-c] [-d] deactivate DISK NAME
 *   vd-lvm-list [-c] [-d] create DISK NAME [COW_BYTES]
 *   vd-lvm-list [-c] [-d] remove DISK NAME
 *
 * One line per snapshot, tab-separated:
 *   NAME ID ORIGIN DEVICE CTIME SIZE FLAGS
 * (FLAGS: comma-separated thin, ours, active, needs-activation, invalid,
 * cli (SNAP_TAG_CLI: made by vmdisk-snapshot), or "-").  -c checks that the process kept its umask, signal
 * dispositions and signal mask across the operation (liblvm2cmd must run
 * in the helper child only) and has no child left (reaped), and fails
 * with status 3 if not.  -d: debug
 * log.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "size.h"
#include "snapshotter.h"
#include "log.h"

static void
usage (void)
{
  fprintf (stderr,
           "usage: vd-lvm-list [-c] [-d] DISK...\n"
           "       vd-lvm-list [-c] [-d] activate|deactivate|remove DISK NAME\n"
           "       vd-lvm-list [-c] [-d] create DISK NAME [COW_BYTES]\n");
  exit (2);
}

static void
print_snap (const struct snap_info *s)
{
  static const struct { unsigned bit; const char *name; } fl[] = {
    { SNAP_THIN, "thin" }, { SNAP_OURS, "ours" }, { SNAP_ACTIVE, "active" },
    { SNAP_NEEDS_ACTIVATION, "needs-activation" }, { SNAP_INVALID, "invalid" },
    { SNAP_TAG_CLI, "cli" },
  };
  size_t i;
  const char *sep = "";

  printf ("%s\t%s\t%s\t%s\t%" PRId64 "\t%" PRIu64 "\t", s->name, s->id,
          s->origin, s->device, s->ctime_sec, s->size);
  for (i = 0; i < sizeof fl / sizeof fl[0]; i++)
    if (s->flags & fl[i].bit) {
      printf ("%s%s", sep, fl[i].name);
      sep = ",";
    }
  printf ("%s\n", *sep ? "" : "-");
}

/* The process state liblvm2cmd would change. */
struct proc_state {
  mode_t umask;
  sigset_t mask;
  struct sigaction act[NSIG];
};

static void
handler (int sig)
{
}

static void
proc_state_get (struct proc_state *p)
{
  int i;

  memset (p, 0, sizeof *p);
  p->umask = umask (0);
  umask (p->umask);
  sigprocmask (SIG_SETMASK, NULL, &p->mask);
  for (i = 1; i < NSIG; i++)
    sigaction (i, NULL, &p->act[i]);
}

static int
proc_state_same (const struct proc_state *a, const struct proc_state *b)
{
  int i, same = 1;

  if (a->umask != b->umask) {
    fprintf (stderr, "vd-lvm-list: umask changed: %03o -> %03o\n",
             (unsigned) a->umask, (unsigned) b->umask);
    same = 0;
  }
  for (i = 1; i < NSIG; i++) {
    if (sigismember (&a->mask, i) != sigismember (&b->mask, i)) {
      fprintf (stderr, "vd-lvm-list: signal mask of %d changed\n", i);
      same = 0;
    }
    if (a->act[i].sa_handler != b->act[i].sa_handler ||
        a->act[i].sa_flags != b->act[i].sa_flags) {
      fprintf (stderr, "vd-lvm-list: disposition of signal %d changed\n", i);
      same = 0;
    }
  }
  return same;
}

static struct snap_info *
find (struct snap_info *v, size_t n, const char *name)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp (v[i].name, name) == 0)
      return &v[i];
  fprintf (stderr, "vd-lvm-list: no snapshot \"%s\"\n", name);
  return NULL;
}

int
main (int argc, char **argv)
{
  const struct vd_snapshotter *sp = &lvm_snapshotter;
  struct proc_state before, after;
  struct snap_info *v = NULL, *s, one = { 0 };
  size_t n = 0, i;
  int c, check = 0, r = 0;
  const char *op;

  while ((c = getopt (argc, argv, "cd")) != -1) {
    switch (c) {
    case 'c': check = 1; break;
    case 'd': vd_log_set_level (VD_LOG_DEBUG); break;
    default: usage ();
    }
  }
  argc -= optind;
  argv += optind;
  if (argc < 1)
    usage ();

  if (check) {
    /* Something to lose: a umask, a handler, an ignored and a blocked
     * signal, as the FUSE daemon has. */
    sigset_t b;
    struct sigaction sa = { .sa_handler = handler };
    umask (027);
    sigaction (SIGUSR1, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);
    sigemptyset (&b);
    sigaddset (&b, SIGUSR2);
    sigprocmask (SIG_BLOCK, &b, NULL);
    proc_state_get (&before);
  }

  op = argc == 1 || argv[0][0] == '/' ? "list" : argv[0];
  if (argc > 1 && argv[0][0] == '/') {
    struct snap_list *l = calloc (argc, sizeof *l);
    r = l ? sp->list_many ((const char *const *) argv, argc, l) : -1;
    for (c = 0; r == 0 && c < argc; c++) {
      if (l[c].err)
        printf ("# %s: %s\n", argv[c], strerror (l[c].err));
      else
        printf ("# %s\n", argv[c]);
      for (i = 0; i < l[c].n; i++)
        print_snap (&l[c].snaps[i]);
      snap_list_free (l[c].snaps, l[c].n);
    }
    free (l);
  }
  else if (argc == 1) {
    r = sp->list (argv[0], &v, &n);
    for (i = 0; r == 0 && i < n; i++)
      print_snap (&v[i]);
  }
  else if (strcmp (op, "create") == 0 && (argc == 3 || argc == 4)) {
    struct snap_create_opts o = { 0 };
    if (argc == 4 && vd_parse_size (argv[3], &o.cow_bytes) < 0)
      usage ();
    r = sp->create (argv[1], argv[2], &o, &one);
    if (r == 0)
      print_snap (&one);
    snap_info_clear (&one);
  }
  else if (argc == 3 && (strcmp (op, "activate") == 0 ||
                         strcmp (op, "deactivate") == 0 ||
                         strcmp (op, "remove") == 0)) {
    r = sp->list (argv[1], &v, &n);
    if (r == 0 && !(s = find (v, n, argv[2])))
      r = -1, errno = ENOENT;
    else if (r == 0) {
      if (strcmp (op, "activate") == 0)
        r = sp->activate (s);
      else if (strcmp (op, "deactivate") == 0)
        r = sp->deactivate (s);
      else
        r = sp->remove (s);
      if (r == 0 && strcmp (op, "remove") != 0)
        print_snap (s);
    }
  }
  else
    usage ();
  if (r < 0)
    fprintf (stderr, "vd-lvm-list: %s: %m\n", op);
  snap_list_free (v, n);

  if (check) {
    proc_state_get (&after);
    if (!proc_state_same (&before, &after))
      return 3;
    if (waitpid (-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
      fprintf (stderr, "vd-lvm-list: a child process left behind\n");
      return 3;
    }
    fprintf (stderr, "vd-lvm-list: process state unchanged\n");
  }
  return r < 0 ? 1 : 0;
}
