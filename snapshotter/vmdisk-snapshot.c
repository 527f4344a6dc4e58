/* vmdisk-snapshot - make, list, delete and prune snapshots of libvirt
 * domains from the command line, for cron jobs, systemd timers and backup
 * scripts: the same snapshots `mkdir <domain>/snapshots/<name>` makes in
 * a vmdiskfs mount (domsnap.h), marked as made by vmdisk-snapshot so that
 * prune deletes only its own.
 *
 *   vmdisk-snapshot [-c URI] create [--quiesce] [--cow-size SIZE|N%] DOMAIN [NAME]
 *   vmdisk-snapshot [-c URI] delete DOMAIN NAME
 *   vmdisk-snapshot [-c URI] list [--names] [DOMAIN]
 *   vmdisk-snapshot [-c URI] prune [--dry-run] --keep-... N (DOMAIN | --all)
 *
 * The retention rules are retention.c's; this file is the glue: options,
 * the connection, messages, exit codes (0 ok, 1 failed, 2 usage, 3 prune:
 * some deletions failed).  Single-threaded.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "cleanup.h"
#include "domsnap.h"
#include "log.h"
#include "retention.h"
#include "size.h"
#include "snapshotter.h"

/* Every domain snapshot goes through libvirt's provider in the table. */
static const struct vd_snapshotter *const provider = &libvirt_snapshotter;

#define PROG "vmdisk-snapshot"

enum {
  EXIT_OK = 0,
  EXIT_FAILED = 1,              /* the operation failed; a message says why */
  EXIT_USAGE = 2,               /* bad command line                        */
  EXIT_PRUNE = 3,               /* prune: some deletions failed            */
};

static const char *uri;         /* -c, else $LIBVIRT_DEFAULT_URI, else ... */

static void
usage (FILE *fp)
{
  fprintf (fp,
"usage: " PROG " [-c URI] [-v] COMMAND ...\n"
"\n"
"Snapshots of every disk of a libvirt domain at one point in time (qcow2:\n"
"libvirt internal snapshots, logical volumes: LVM snapshots), the same as\n"
"mkdir DOMAIN/snapshots/NAME in a vmdiskfs mount.\n"
"\n"
"Commands:\n"
"  create [--quiesce] [--cow-size SIZE|N%%] DOMAIN [NAME]\n"
"                   make snapshot NAME (default snap-YYYYMMDD-HHMMSS, local\n"
"                   time) of every disk of DOMAIN; --quiesce freezes the\n"
"                   guest's filesystems through its guest agent meanwhile;\n"
"                   --cow-size: copy-on-write space of classic LVM\n"
"                   snapshots, bytes with K/M/G/T suffix or N%% of the LV\n"
"  delete DOMAIN NAME\n"
"                   delete snapshot NAME of DOMAIN, every part of it\n"
"  list [--names] [DOMAIN]\n"
"                   the snapshots of DOMAIN, else of every domain: DOMAIN\n"
"                   NAME CREATED KIND BY; --names: names only, one a line\n"
"                   (DOMAIN<tab>NAME without DOMAIN)\n"
"  prune [--dry-run] [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
"        [--keep-weekly N] [--keep-monthly N] DOMAIN|--all\n"
"                   delete the snapshots made by " PROG " that no\n"
"                   --keep rule keeps (never those made otherwise); at\n"
"                   least one --keep count above 0 is required\n"
"\n"
"Options:\n"
"  -c, --connect URI   libvirt connection (default $LIBVIRT_DEFAULT_URI,\n"
"                      else qemu:///system)\n"
"  -v, --verbose       say what is done step by step (-vv: debug messages)\n"
"  -h, --help          this help\n"
"  -V, --version       version\n"
"\n"
"Exit status: 0 success, 1 the operation failed (a message says why),\n"
"2 usage error, 3 prune: some deletions failed.\n"
"See vmdisk-snapshot(1).\n");
}

static void __attribute__ ((noreturn))
usage_error (const char *fmt, ...)
{
  va_list ap;

  if (fmt) {
    fprintf (stderr, PROG ": ");
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fprintf (stderr, "\n");
  }
  fprintf (stderr, "Try '" PROG " --help'.\n");
  exit (EXIT_USAGE);
}

/* ---- Messages built from errno. ---- */

static const char *
errno_name (int e)
{
  switch (e) {
  case EEXIST: return "EEXIST";
  case EINVAL: return "EINVAL";
  case ENOENT: return "ENOENT";
  case ENOTSUP: return "ENOTSUP";
  case EBUSY: return "EBUSY";
  case ENOSPC: return "ENOSPC";
  case EACCES: return "EACCES";
  case EPERM: return "EPERM";
  case EIO: return "EIO";
  case ENOMEM: return "ENOMEM";
  case ETIMEDOUT: return "ETIMEDOUT";
  default: return NULL;
  }
}

/* What errno e means for op ("create", "delete", "list", "prune",
 * "prune: delete"). */
static const char *
errno_text (const char *op, int e)
{
  bool del = strstr (op, "delete") != NULL;

  switch (e) {
  case EEXIST: return "name taken";
  case EINVAL: return "invalid snapshot name";
  case ENOENT:
    return del ? "no such domain or snapshot"
      : "no such domain";
  case ENOTSUP:
    return del
      ? "not a snapshot of libvirt or LVM (see above)"
      : "a disk of the domain cannot be snapshotted (see above)";
  case EBUSY:
    return "refused in the domain's current state, or another snapshot "
      "operation on it did not finish (see above)";
  case ETIMEDOUT: return "a tool did not finish in time (see above)";
  case ENOSPC: return "no room for the LVM snapshot";
  case EACCES:
    return "permission denied (a read-only connection, or the lock "
      "directory refused: see above)";
  case EIO: return "failed, see above";
  default: return strerror (e);
  }
}

/* "vmdisk-snapshot: create web/nightly: name taken (EEXIST)" */
static void
report (const char *op, const char *domain, const char *name, int e)
{
  const char *en = errno_name (e);

  fprintf (stderr, PROG ": %s %s%s%s: %s", op, domain, name ? "/" : "",
           name ? name : "", errno_text (op, e));
  if (en)
    fprintf (stderr, " (%s)", en);
  fprintf (stderr, "\n");
}

/* ---- libvirt. ---- */

/* libvirt's own errors reach the user through our messages (domsnap.c
 * logs them where found), not libvirt's default handler as well. */
static void
quiet_libvirt (void *opaque, virErrorPtr err)
{
}

static virConnectPtr
connect_libvirt (bool read_only_ok)
{
  virConnectPtr c = virConnectOpen (uri);

  if (!c && read_only_ok) {
    vd_debug ("%s: read-write connection failed (%s), trying read-only",
              uri, virGetLastErrorMessage ());
    c = virConnectOpenReadOnly (uri);
  }
  if (!c)
    fprintf (stderr, PROG ": cannot connect to %s: %s\n", uri,
             virGetLastErrorMessage ());
  return c;
}

static int
compare_strings (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* Names of every domain, sorted; NULL-terminated, free with free_names. */
static char **
all_domains (virConnectPtr c)
{
  virDomainPtr *doms = NULL;
  char **names;
  int n, i, k = 0;

  n = virConnectListAllDomains (c, &doms, 0);
  if (n < 0) {
    fprintf (stderr, PROG ": cannot list the domains of %s: %s\n", uri,
             virGetLastErrorMessage ());
    return NULL;
  }
  names = calloc (n + 1, sizeof *names);
  for (i = 0; i < n; i++) {
    const char *s = virDomainGetName (doms[i]);
    if (names && s && (names[k] = strdup (s)))
      k++;
    virDomainFree (doms[i]);
  }
  free (doms);
  if (!names) {
    perror (PROG);
    return NULL;
  }
  qsort (names, k, sizeof *names, compare_strings);
  return names;
}

static void
free_names (char **v)
{
  size_t i;

  for (i = 0; v && v[i]; i++)
    free (v[i]);
  free (v);
}

/* ---- Formatting. ---- */

static void
format_time (int64_t t, char *buf, size_t len)
{
  time_t tt = (time_t) t;
  struct tm tm;

  if (!localtime_r (&tt, &tm) ||
      strftime (buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
    snprintf (buf, len, "@%" PRId64, t);
}

static const char *
by_text (enum ds_by by)
{
  switch (by) {
  case DS_BY_CLI: return "vmdisk-snapshot";
  case DS_BY_MOUNT: return "vmdiskfs";
  default: return "-";
  }
}

/* libvirt, lvm or both, "rbd" or "+rbd" with RBD snapshots, "+memory"
 * when the libvirt part holds VM state. */
static void
kind_text (const struct ds_snap *s, char *buf, size_t len)
{
  const char *k = (s->flags & DS_LIBVIRT) && (s->flags & DS_LVM) ? "both"
    : (s->flags & DS_LIBVIRT) ? "libvirt" : (s->flags & DS_LVM) ? "lvm" : "-";
  bool memory = s->state && (strcmp (s->state, "running") == 0 ||
                             strcmp (s->state, "paused") == 0);
  bool rbd = s->flags & DS_RBD;

  if (rbd && strcmp (k, "-") == 0)
    snprintf (buf, len, "rbd%s", memory ? "+memory" : "");
  else
    snprintf (buf, len, "%s%s%s", k, rbd ? "+rbd" : "",
              memory ? "+memory" : "");
}

/* ---- Options shared by the commands. ---- */

/* A count for --keep-*: a decimal number. */
static unsigned
parse_count (const char *opt, const char *s)
{
  char *end;
  unsigned long v;

  errno = 0;
  v = strtoul (s, &end, 10);
  if (errno || end == s || *end || *s == '-' || v > UINT_MAX)
    usage_error ("%s: '%s' is not a count", opt, s);
  return (unsigned) v;
}

/* --cow-size: SIZE (size.h), or N% of the origin (1-100). */
static void
parse_cow_size (const char *s, struct ds_create_opts *o)
{
  uint64_t v;
  bool percent;

  if (vd_parse_size_or_percent (s, &v, &percent) < 0) {
    if (errno == ERANGE)
      usage_error ("--cow-size: '%s' is too big", s);
    usage_error ("--cow-size: '%s' is not a size", s);
  }
  if (percent) {
    if (v < 1 || v > 100)
      usage_error ("--cow-size: '%s': a percentage is 1%% to 100%%", s);
    o->cow_percent = (unsigned) v;
    o->cow_bytes = 0;
    return;
  }
  if (v == 0)
    usage_error ("--cow-size: '%s' is not a size", s);
  o->cow_bytes = v;
  o->cow_percent = 0;
}

/* Parse a command's options; argv[0] is the command.  Returns the index
 * of the first operand. */
static int
parse_command_options (int argc, char **argv, const char *shortopts,
                       const struct option *longopts,
                       void (*handle) (int c, const char *arg, void *data),
                       void *data)
{
  char name[64];
  int c;

  snprintf (name, sizeof name, PROG " %s", argv[0]);
  argv[0] = name;               /* getopt's messages: "vmdisk-snapshot create: ..." */
  optind = 0;                   /* glibc: start afresh */
  while ((c = getopt_long (argc, argv, shortopts, longopts, NULL)) != -1) {
    if (c == 'h') {
      usage (stdout);
      exit (EXIT_OK);
    }
    if (c == '?' || c == ':')
      usage_error (NULL);
    handle (c, optarg, data);
  }
  argv[0] = NULL;               /* name is gone after return */
  return optind;
}

/* ---- create ---- */

enum { OPT_QUIESCE = 256, OPT_COW_SIZE, OPT_NAMES, OPT_DRY_RUN, OPT_ALL,
       OPT_KEEP_LAST, OPT_KEEP_HOURLY, OPT_KEEP_DAILY, OPT_KEEP_WEEKLY,
       OPT_KEEP_MONTHLY };

static void
create_option (int c, const char *arg, void *data)
{
  struct ds_create_opts *o = data;

  switch (c) {
  case OPT_QUIESCE: o->quiesce = true; break;
  case OPT_COW_SIZE: parse_cow_size (arg, o); break;
  }
}

/* "libvirt internal with VM state", "libvirt internal + LVM, domain paused
 * meanwhile, filesystems frozen" */
static void
created_text (unsigned done, char *buf, size_t len)
{
  size_t l = 0;

  buf[0] = '\0';
  if (done & DS_DONE_LIBVIRT)
    l += snprintf (buf + l, len - l, "libvirt internal%s",
                   done & DS_DONE_MEMORY ? " with VM state" : "");
  if ((done & DS_DONE_LVM) && l < len)
    l += snprintf (buf + l, len - l, "%sLVM", l ? " + " : "");
  if (l == 0 && l < len)
    l += snprintf (buf + l, len - l, "no disk to snapshot");
  if ((done & DS_DONE_PAUSED) && l < len)
    l += snprintf (buf + l, len - l, ", domain paused meanwhile");
  if ((done & DS_DONE_QUIESCED) && l < len)
    snprintf (buf + l, len - l, ", filesystems frozen");
}

static int
cmd_create (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "quiesce", no_argument, NULL, OPT_QUIESCE },
    { "cow-size", required_argument, NULL, OPT_COW_SIZE },
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  struct ds_create_opts o = { .by = DS_BY_CLI };
  CLEANUP_FREE char *defname = NULL;
  const char *domain, *name;
  virConnectPtr c;
  unsigned done = 0;
  char what[160];
  int i, r;

  i = parse_command_options (argc, argv, "h", longopts, create_option, &o);
  if (argc - i < 1 || argc - i > 2)
    usage_error ("usage: create [--quiesce] [--cow-size SIZE|N%%] DOMAIN [NAME]");
  domain = argv[i];
  name = argv[i + 1];
  if (!name) {
    defname = ds_default_name ((int64_t) time (NULL));
    if (!defname) {
      perror (PROG);
      return EXIT_FAILED;
    }
    name = defname;
  }

  if (!(c = connect_libvirt (false)))
    return EXIT_FAILED;
  r = provider->dom_create (c, domain, name, &o, &done);
  if (r < 0)
    report ("create", domain, name, errno);
  else {
    if (o.quiesce && (done & DS_DONE_NO_AGENT))
      fprintf (stderr, PROG ": warning: %s/%s: no guest agent answered: "
               "the snapshot is crash-consistent\n", domain, name);
    created_text (done, what, sizeof what);
    printf ("created %s/%s (%s%s)\n", domain, name, what,
            done & DS_DONE_NOT_NEEDED ? ", consistent without freezing" : "");
  }
  virConnectClose (c);
  return r < 0 ? EXIT_FAILED : EXIT_OK;
}

/* ---- delete ---- */

static void
no_option (int c, const char *arg, void *data)
{
}

static int
cmd_delete (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  virConnectPtr c;
  int i, r;

  i = parse_command_options (argc, argv, "h", longopts, no_option, NULL);
  if (argc - i != 2)
    usage_error ("usage: delete DOMAIN NAME");
  if (!(c = connect_libvirt (false)))
    return EXIT_FAILED;
  r = provider->dom_delete (c, argv[i], argv[i + 1]);
  if (r < 0)
    report ("delete", argv[i], argv[i + 1], errno);
  else
    printf ("deleted %s/%s\n", argv[i], argv[i + 1]);
  virConnectClose (c);
  return r < 0 ? EXIT_FAILED : EXIT_OK;
}

/* ---- list ---- */

struct row {
  const char *domain;
  const struct ds_snap *s;
};

struct list_opts {
  bool names;
};

static void
list_option (int c, const char *arg, void *data)
{
  struct list_opts *o = data;

  if (c == OPT_NAMES)
    o->names = true;
}

static void
print_table (const struct row *rows, size_t n)
{
  static const char *const head[] = { "DOMAIN", "NAME", "CREATED", "KIND",
                                      "BY" };
  int w[4];
  char created[64], kind[32];
  size_t i;

  for (i = 0; i < 4; i++)
    w[i] = (int) strlen (head[i]);
  w[2] = (int) strlen ("YYYY-MM-DD HH:MM:SS");
  w[3] = (int) strlen ("libvirt+memory");
  for (i = 0; i < n; i++) {
    w[0] = MAX (w[0], (int) strlen (rows[i].domain));
    w[1] = MAX (w[1], (int) strlen (rows[i].s->name));
  }
  printf ("%-*s  %-*s  %-*s  %-*s  %s\n", w[0], head[0], w[1], head[1],
          w[2], head[2], w[3], head[3], head[4]);
  for (i = 0; i < n; i++) {
    format_time (rows[i].s->ctime, created, sizeof created);
    kind_text (rows[i].s, kind, sizeof kind);
    printf ("%-*s  %-*s  %-*s  %-*s  %s\n", w[0], rows[i].domain,
            w[1], rows[i].s->name, w[2], created, w[3], kind,
            by_text (rows[i].s->by));
  }
}

static int
cmd_list (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "names", no_argument, NULL, OPT_NAMES },
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  struct list_opts o = { 0 };
  virConnectPtr c;
  char **domains = NULL, *one[2] = { NULL, NULL };
  struct ds_snap **snaps;
  size_t *nsnaps, ndom = 0, i, j, nrows = 0;
  struct row *rows = NULL;
  int first, rc = EXIT_OK;

  first = parse_command_options (argc, argv, "h", longopts, list_option, &o);
  if (argc - first > 1)
    usage_error ("usage: list [--names] [DOMAIN]");
  if (!(c = connect_libvirt (true)))
    return EXIT_FAILED;
  if (argc - first == 1) {
    one[0] = argv[first];
    domains = one;
  }
  else if (!(domains = all_domains (c))) {
    virConnectClose (c);
    return EXIT_FAILED;
  }
  while (domains[ndom])
    ndom++;

  snaps = calloc (ndom + 1, sizeof *snaps);
  nsnaps = calloc (ndom + 1, sizeof *nsnaps);
  if (!snaps || !nsnaps) {
    perror (PROG);
    rc = EXIT_FAILED;
    goto out;
  }
  for (i = 0; i < ndom; i++) {
    if (provider->dom_list (c, domains[i], &snaps[i], &nsnaps[i]) < 0) {
      int e = errno;
      snaps[i] = NULL;
      nsnaps[i] = 0;
      /* A domain undefined since we listed the domains is no error. */
      if (domains != one && e == ENOENT)
        continue;
      report ("list", domains[i], NULL, e);
      rc = EXIT_FAILED;
      continue;
    }
    nrows += nsnaps[i];
  }

  if (o.names) {
    for (i = 0; i < ndom; i++)
      for (j = 0; j < nsnaps[i]; j++) {
        if (domains == one)
          printf ("%s\n", snaps[i][j].name);
        else
          printf ("%s\t%s\n", domains[i], snaps[i][j].name);
      }
  }
  else if (rc == EXIT_OK || nrows) {
    rows = calloc (nrows + 1, sizeof *rows);
    if (!rows) {
      perror (PROG);
      rc = EXIT_FAILED;
      goto out;
    }
    nrows = 0;
    for (i = 0; i < ndom; i++)
      for (j = 0; j < nsnaps[i]; j++)
        rows[nrows++] = (struct row) { domains[i], &snaps[i][j] };
    print_table (rows, nrows);
  }

 out:
  for (i = 0; snaps && nsnaps && i < ndom; i++)
    provider->dom_list_free (snaps[i], nsnaps[i]);
  free (snaps);
  free (nsnaps);
  free (rows);
  if (domains != one)
    free_names (domains);
  virConnectClose (c);
  return rc;
}

/* ---- prune ---- */

struct prune_opts {
  struct retention_policy keep;
  bool dry_run;
  bool all;
};

static void
prune_option (int c, const char *arg, void *data)
{
  struct prune_opts *o = data;

  switch (c) {
  case OPT_DRY_RUN: o->dry_run = true; break;
  case OPT_ALL: o->all = true; break;
  case OPT_KEEP_LAST: o->keep.last = parse_count ("--keep-last", arg); break;
  case OPT_KEEP_HOURLY:
    o->keep.hourly = parse_count ("--keep-hourly", arg); break;
  case OPT_KEEP_DAILY: o->keep.daily = parse_count ("--keep-daily", arg); break;
  case OPT_KEEP_WEEKLY:
    o->keep.weekly = parse_count ("--keep-weekly", arg); break;
  case OPT_KEEP_MONTHLY:
    o->keep.monthly = parse_count ("--keep-monthly", arg); break;
  }
}

/* One line of prune's report:
 *   "keep          web/snap-20261125-020000  2026-11-25 02:00:00  daily 2026-11-25" */
static void
prune_line (const char *action, const char *domain, const char *name,
            int width, int64_t ctime, const char *why)
{
  char created[64];

  format_time (ctime, created, sizeof created);
  printf ("%-12s  %s/%-*s  %s  %s\n", action, domain, width, name, created,
          why);
}

/* Prune one domain: EXIT_OK, EXIT_FAILED (not listed) or EXIT_PRUNE. */
static int
prune_domain (virConnectPtr c, const char *domain,
              const struct prune_opts *o, bool quiet_enoent)
{
  struct ds_snap *v = NULL;
  struct retention_entry *e = NULL;
  size_t n = 0, i, ne = 0, kept = 0, deleted = 0, failed = 0, others = 0;
  int width = 0, rc = EXIT_OK;

  if (provider->dom_list (c, domain, &v, &n) < 0) {
    if (quiet_enoent && errno == ENOENT)
      return EXIT_OK;
    report ("prune", domain, NULL, errno);
    return EXIT_FAILED;
  }
  if (n == 0)
    return EXIT_OK;
  e = calloc (n, sizeof *e);
  if (!e) {
    perror (PROG);
    provider->dom_list_free (v, n);
    return EXIT_FAILED;
  }
  for (i = 0; i < n; i++) {
    width = MAX (width, (int) strlen (v[i].name));
    if (v[i].by != DS_BY_CLI) {
      others++;
      continue;
    }
    e[ne].name = v[i].name;
    e[ne].ctime = v[i].ctime;
    e[ne].data = &v[i];
    ne++;
  }
  if (ne == 0 && o->all) {       /* --all: say nothing of others' domains */
    free (e);
    provider->dom_list_free (v, n);
    return EXIT_OK;
  }
  retention_apply (e, ne, &o->keep);

  for (i = 0; i < ne; i++) {
    if (e[i].keep) {
      prune_line ("keep", domain, e[i].name, width, e[i].ctime, e[i].reason);
      kept++;
      continue;
    }
    prune_line (o->dry_run ? "would delete" : "delete", domain, e[i].name,
                width, e[i].ctime, e[i].reason);
    fflush (stdout);
    if (o->dry_run)
      continue;
    if (provider->dom_delete (c, domain, e[i].name) < 0) {
      report ("prune: delete", domain, e[i].name, errno);
      failed++;
      rc = EXIT_PRUNE;
    }
    else
      deleted++;
  }
  for (i = 0; i < n; i++)
    if (v[i].by != DS_BY_CLI) {
      char why[64];
      snprintf (why, sizeof why, "not made by " PROG " (%s)",
                v[i].by == DS_BY_MOUNT ? "made in a vmdiskfs mount"
                : "made by something else");
      prune_line ("leave", domain, v[i].name, width, v[i].ctime, why);
    }

  if (o->dry_run)
    printf ("%s: %zu kept, %zu would be deleted, %zu not %s's left alone\n",
            domain, kept, ne - kept, others, PROG);
  else
    printf ("%s: %zu kept, %zu deleted%s, %zu not %s's left alone\n",
            domain, kept, deleted, failed ? " (some failed)" : "", others,
            PROG);
  free (e);
  provider->dom_list_free (v, n);
  return rc;
}

static int
cmd_prune (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "dry-run", no_argument, NULL, OPT_DRY_RUN },
    { "all", no_argument, NULL, OPT_ALL },
    { "keep-last", required_argument, NULL, OPT_KEEP_LAST },
    { "keep-hourly", required_argument, NULL, OPT_KEEP_HOURLY },
    { "keep-daily", required_argument, NULL, OPT_KEEP_DAILY },
    { "keep-weekly", required_argument, NULL, OPT_KEEP_WEEKLY },
    { "keep-monthly", required_argument, NULL, OPT_KEEP_MONTHLY },
    { "help", no_argument, NULL, 'h' },
    { NULL },
  };
  struct prune_opts o = { 0 };
  virConnectPtr c;
  char **domains;
  int i, rc = EXIT_OK, r;
  size_t d;

  /* Options may follow DOMAIN ("prune web --keep-daily 7"). */
  i = parse_command_options (argc, argv, "h", longopts, prune_option, &o);
  if (o.all ? argc - i != 0 : argc - i != 1)
    usage_error ("usage: prune [--dry-run] --keep-last|hourly|daily|weekly|"
                 "monthly N ... DOMAIN|--all");
  if (!retention_any (&o.keep))
    usage_error ("prune: no --keep-* count above 0 given: "
                 "that would delete every snapshot");
  setvbuf (stdout, NULL, _IOLBF, 0);
  if (!(c = connect_libvirt (o.dry_run)))
    return EXIT_FAILED;

  if (!o.all)
    rc = prune_domain (c, argv[i], &o, false);
  else if (!(domains = all_domains (c)))
    rc = EXIT_FAILED;
  else {
    for (d = 0; domains[d]; d++) {
      r = prune_domain (c, domains[d], &o, true);
      /* A domain not listed is worse than a deletion that failed. */
      if (r == EXIT_FAILED || (r == EXIT_PRUNE && rc == EXIT_OK))
        rc = r;
    }
    free_names (domains);
  }
  virConnectClose (c);
  return rc;
}

/* ---- main ---- */

static int
version (void)
{
  unsigned long v = 0;

  printf (PROG " (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
  if (virGetVersion (&v, NULL, NULL) == 0)
    printf ("libvirt %lu.%lu.%lu\n", v / 1000000, v / 1000 % 1000, v % 1000);
  return EXIT_OK;
}

int
main (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "connect", required_argument, NULL, 'c' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL },
  };
  static const struct {
    const char *name;
    int (*run) (int argc, char **argv);
  } commands[] = {
    { "create", cmd_create },
    { "delete", cmd_delete },
    { "list", cmd_list },
    { "prune", cmd_prune },
  };
  const char *cmd;
  size_t i;
  int c, verbose = 0;

  /* Warnings and errors only: what was done is said on stdout. */
  vd_log_set_program (PROG);
  vd_log_set_level (VD_LOG_WARN);
  argv[0] = (char *) PROG;
  /* '+': stop at the command; its options are its own. */
  while ((c = getopt_long (argc, argv, "+c:vhV", longopts, NULL)) != -1) {
    switch (c) {
    case 'c': uri = optarg; break;
    case 'v':
      vd_log_set_level (++verbose > 1 ? VD_LOG_DEBUG : VD_LOG_INFO);
      break;
    case 'h': usage (stdout); return EXIT_OK;
    case 'V': return version ();
    default: usage_error (NULL);
    }
  }
  if (optind >= argc)
    usage_error ("no command given (create, delete, list or prune)");
  if (!uri)
    uri = getenv ("LIBVIRT_DEFAULT_URI");
  if (!uri || !*uri)
    uri = "qemu:///system";

  cmd = argv[optind];
  for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (cmd, commands[i].name) == 0) {
      if (virInitialize () < 0) {
        fprintf (stderr, PROG ": cannot initialise libvirt\n");
        return EXIT_FAILED;
      }
      virSetErrorFunc (NULL, quiet_libvirt);
      return commands[i].run (argc - optind, argv + optind);
    }
  usage_error ("unknown command '%s' (create, delete, list or prune)", cmd);
}
