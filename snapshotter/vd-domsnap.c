/* vmdiskfs - vd-domsnap: the domain snapshot API (domsnap.h) from the
 * command line, for tests and debugging, without FUSE.  create, delete
 * and list go through the provider table (libvirt_snapshotter), as fs/
 * and vmdisk-snapshot do.
 *
 *   vd-domsnap [-c URI] [-d] create [-q] [-b cli|mount] [-p PCT]
 *              [-s COW_BYTES] [-D TEXT] DOMAIN NAME
 *   vd-domsnap [-c URI] [-d] delete DOMAIN NAME
 *   vd-domsnap [-c URI] [-d] list DOMAIN
 *   vd-domsnap valid NAME            exit 0 if ds_valid_name, else 1
 *   vd-domsnap default-name [TIME]   ds_default_name (now, or TIME)
 *
 * create prints "done: " and the DS_DONE_* bits (libvirt lvm paused
 * quiesced no-agent memory not-needed, comma-separated, "-" for none); list one line
 * per snapshot, tab-separated: NAME CTIME FLAGS BY STATE NLV (FLAGS
 * libvirt,lvm,current; BY other mount cli; STATE "-" without a libvirt
 * part).  A failure prints "vd-domsnap: OP: ESYMBOL (message)" on stderr
 * and exits 1; bad usage exits 2.  -d: debug log.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "domsnap.h"
#include "domxml.h"
#include "size.h"
#include "snapshotter.h"
#include "log.h"

static void
usage (void)
{
  fprintf (stderr,
           "usage: vd-domsnap [-c URI] [-d] create [-q] [-b cli|mount] "
           "[-p PCT] [-s COW_BYTES] [-D TEXT] DOMAIN NAME\n"
           "       vd-domsnap [-c URI] [-d] delete DOMAIN NAME\n"
           "       vd-domsnap [-c URI] [-d] list DOMAIN\n"
           "       vd-domsnap valid NAME\n"
           "       vd-domsnap default-name [TIME]\n");
  exit (2);
}

static const char *
errno_name (int e)
{
  switch (e) {
  case EINVAL: return "EINVAL";
  case EEXIST: return "EEXIST";
  case ENOENT: return "ENOENT";
  case ENOTSUP: return "ENOTSUP";
  case EBUSY: return "EBUSY";
  case ENOSPC: return "ENOSPC";
  case EACCES: return "EACCES";
  case EIO: return "EIO";
  case ENOMEM: return "ENOMEM";
  case ETIMEDOUT: return "ETIMEDOUT";
  default: return "E?";
  }
}

static void
silent (void *opaque, virErrorPtr e)
{
  /* domsnap.c logs libvirt's errors itself. */
}

static void
print_bits (unsigned v, const char *const *names, size_t n)
{
  const char *sep = "";
  size_t i;

  for (i = 0; i < n; i++)
    if (v & (1u << i)) {
      printf ("%s%s", sep, names[i]);
      sep = ",";
    }
  if (!*sep)
    printf ("-");
}

int
main (int argc, char **argv)
{
  static const char *const done_names[] = {
    "libvirt", "lvm", "paused", "quiesced", "no-agent", "memory",
    "not-needed" };
  static const char *const flag_names[] = { "libvirt", "lvm", "current" };
  static const char *const by_names[] = { "other", "mount", "cli" };
  const char *uri = NULL, *op;
  virConnectPtr c = NULL;
  int ch, r = -1;

  while ((ch = getopt (argc, argv, "+c:d")) != -1) {
    switch (ch) {
    case 'c': uri = optarg; break;
    case 'd': vd_log_set_level (VD_LOG_DEBUG); break;
    default: usage ();
    }
  }
  if (optind >= argc)
    usage ();
  op = argv[optind];
  argc -= optind;
  argv += optind;
  optind = 1;

  if (strcmp (op, "valid") == 0) {
    if (argc != 2)
      usage ();
    return ds_valid_name (argv[1]) ? 0 : 1;
  }
  if (strcmp (op, "default-name") == 0) {
    char *n;
    if (argc > 2)
      usage ();
    n = ds_default_name (argc == 2 ? strtoll (argv[1], NULL, 10)
                         : (int64_t) time (NULL));
    if (!n)
      return 1;
    printf ("%s\n", n);
    free (n);
    return 0;
  }

  virSetErrorFunc (NULL, silent);
  domxml_init ();
  if (strcmp (op, "create") == 0) {
    struct ds_create_opts o = { .by = DS_BY_CLI };
    unsigned done = 0;
    while ((ch = getopt (argc, argv, "qb:p:s:D:")) != -1) {
      switch (ch) {
      case 'q': o.quiesce = true; break;
      case 'b':
        if (strcmp (optarg, "cli") == 0)
          o.by = DS_BY_CLI;
        else if (strcmp (optarg, "mount") == 0)
          o.by = DS_BY_MOUNT;
        else if (strcmp (optarg, "other") == 0)
          o.by = DS_BY_OTHER;
        else
          usage ();
        break;
      case 'p': o.cow_percent = strtoul (optarg, NULL, 10); break;
      case 's':
        if (vd_parse_size (optarg, &o.cow_bytes) < 0)
          usage ();
        break;
      case 'D': o.description = optarg; break;
      default: usage ();
      }
    }
    if (argc - optind != 2)
      usage ();
    c = virConnectOpen (uri);
    if (!c)
      goto noconn;
    r = libvirt_snapshotter.dom_create (c, argv[optind], argv[optind + 1], &o, &done);
    if (r == 0 || done) {
      printf ("done: ");
      print_bits (done, done_names,
                  sizeof done_names / sizeof done_names[0]);
      printf ("\n");
    }
  }
  else if (strcmp (op, "delete") == 0) {
    if (argc != 3)
      usage ();
    c = virConnectOpen (uri);
    if (!c)
      goto noconn;
    r = libvirt_snapshotter.dom_delete (c, argv[1], argv[2]);
  }
  else if (strcmp (op, "list") == 0) {
    struct ds_snap *v;
    size_t n, i;
    if (argc != 2)
      usage ();
    c = virConnectOpen (uri);
    if (!c)
      goto noconn;
    r = libvirt_snapshotter.dom_list (c, argv[1], &v, &n);
    for (i = 0; r == 0 && i < n; i++) {
      printf ("%s\t%" PRId64 "\t", v[i].name, v[i].ctime);
      print_bits (v[i].flags, flag_names, 3);
      printf ("\t%s\t%s\t%zu\n", by_names[v[i].by],
              v[i].state ? v[i].state : "-", v[i].nlvm);
    }
    if (r == 0)
      libvirt_snapshotter.dom_list_free (v, n);
  }
  else
    usage ();

  if (r < 0) {
    int e = errno;
    fprintf (stderr, "vd-domsnap: %s: %s (%s)\n", op, errno_name (e),
             strerror (e));
  }
  virConnectClose (c);
  return r < 0 ? 1 : 0;

 noconn:
  fprintf (stderr, "vd-domsnap: cannot connect to %s: %s\n",
           uri ? uri : "the default URI", virGetLastErrorMessage ());
  return 1;
}
