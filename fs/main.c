/* vmdiskfs - main: options, mount, daemonize, the session loop.
 *
 *   vmdiskfs [OPTIONS] MOUNTPOINT
 *   vmdiskfs SOURCE MOUNTPOINT -o OPTIONS      (as mount.fuse3 runs it)
 *
 * Our options (-o images=, connect=, pidfile=, l2_cache=, snapsize=, ro)
 * are parsed
 * with fuse_opt_parse, then fuse_parse_cmdline takes the usual ones (-f
 * -d -s -h -V, max_threads, max_idle_threads), and what remains (allow_other,
 * default_permissions, ro ...) goes to fuse_session_new.
 *
 * The session loop is loop.c's (one thread reading requests and serving
 * reads, a pool for the rest); -s runs libfuse's single-threaded one.
 *
 * Tree providers: images mode (-o images=DIR) is tree-images.c; without
 * -o images, libvirt mode (tree-libvirt.c) with -o connect=URI, else
 * $LIBVIRT_DEFAULT_URI, else qemu:///system.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "vmdiskfs.h"
#include "loop.h"
#include "cleanup.h"
#include "log.h"
#include "escape.h"
#include "size.h"

struct fs_config fs_config;
struct fuse_session *fs_session;

static char *mountpoint;
static const char *source;       /* what is shown: DIR or the URI */
static char *nonopt[2];
static int nnonopt;

enum {
  KEY_RO,
  KEY_FSNAME,
  KEY_HELP,
  KEY_VERSION,
  KEY_ALLOW_OTHER,
  KEY_SPIN,
  KEY_NET_TIMEOUT,
  KEY_CONNECT,
};

/* How many -o connect= were given: one top directory per host is not
 * built yet, and taking the last one silently would hide hosts. */
static unsigned nconnect;

/* -o spin_us=N: how long the reader tries /dev/fuse again before it
 * sleeps (loop.c).  50 us covers a reader's turnaround between two 4k
 * reads on the machines measured (bench/README.md). */
#define DEFAULT_SPIN_US 50
static unsigned spin_us = DEFAULT_SPIN_US;

static bool have_fsname;
static bool allow_other;

#define FS_OPT(t, m) { t, offsetof (struct fs_config, m), 1 }
static const struct fuse_opt fs_opts[] = {
  FS_OPT ("images=%s", images),
  FS_OPT ("connect=%s", connect),
  FS_OPT ("pidfile=%s", pidfile),
  FS_OPT ("l2_cache=%s", l2_cache),
  FS_OPT ("snapsize=%s", snapsize),
  FS_OPT ("backing=%s", backing),
  FS_OPT ("probe=%s", probe),
  FS_OPT ("staging=%s", staging),
  FUSE_OPT_KEY ("ro", KEY_RO),
  FUSE_OPT_KEY ("allow_other", KEY_ALLOW_OTHER),
  FUSE_OPT_KEY ("fsname=", KEY_FSNAME),
  FUSE_OPT_KEY ("spin_us=", KEY_SPIN),
  FUSE_OPT_KEY ("net_timeout=", KEY_NET_TIMEOUT),
  FUSE_OPT_KEY ("connect=", KEY_CONNECT),
  /* fstab's placeholder, in case a mount helper passes it on. */
  FUSE_OPT_KEY ("defaults", FUSE_OPT_KEY_DISCARD),
  FUSE_OPT_END
};

static int
opt_proc (void *data, const char *arg, int key, struct fuse_args *outargs)
{
  switch (key) {
  case KEY_RO:
    fs_config.ro = true;
    return 1;                   /* keep: the kernel mounts read-only */
  case KEY_FSNAME:
    have_fsname = true;
    return 1;
  case KEY_ALLOW_OTHER:
    allow_other = true;
    return 1;                   /* keep: for fuse_session_new */
  case KEY_SPIN:
    {
      char *end;
      unsigned long v;

      errno = 0;
      v = strtoul (arg + strlen ("spin_us="), &end, 10);
      if (errno || *end || end == arg + strlen ("spin_us=") || v > 100000) {
        fprintf (stderr, "vmdiskfs: spin_us: a number of microseconds "
                 "from 0 to 100000 expected: %s\n", arg);
        return -1;
      }
      spin_us = v;
      return 0;
    }
  case KEY_CONNECT:
    if (++nconnect > 1) {
      fprintf (stderr, "vmdiskfs: -o connect= given more than once: one "
               "mount shows one libvirt connection (mount each host on a "
               "directory of its own)\n");
      return -1;
    }
    return 0;
  case KEY_NET_TIMEOUT:
    {
      const char *s = arg + strlen ("net_timeout=");
      char *end;
      unsigned long v;

      errno = 0;
      v = strtoul (s, &end, 10);
      if (errno || *end || end == s || v < 1 || v > 3600) {
        fprintf (stderr, "vmdiskfs: net_timeout: a number of seconds from "
                 "1 to 3600 expected: %s\n", arg);
        return -1;
      }
      fs_config.net_timeout = v;
      return 0;
    }
  case FUSE_OPT_KEY_NONOPT:
    /* SOURCE MOUNTPOINT (mount.fuse3), or MOUNTPOINT. */
    if (nnonopt == 2) {
      fprintf (stderr, "vmdiskfs: too many arguments: %s\n", arg);
      return -1;
    }
    nonopt[nnonopt] = strdup (arg);
    if (!nonopt[nnonopt])
      return -1;
    nnonopt++;
    return 0;
  default:
    return 1;
  }
}

static void
usage (FILE *fp, const char *prog)
{
  fprintf (fp,
"usage: %s [OPTIONS] MOUNTPOINT\n"
"Shows the disks of KVM virtual machines as raw files.\n"
"\n"
"vmdiskfs options:\n"
"    -o images=DIR          show every disk image file in DIR as\n"
"                           DIR-ENTRY/disk.img and\n"
"                           DIR-ENTRY/snapshots/TAG/disk.img\n"
"    -o connect=URI         libvirt mode (the default): one directory per\n"
"                           domain with domain.xml, TARGET.img and\n"
"                           snapshots/NAME/; URI defaults to\n"
"                           $LIBVIRT_DEFAULT_URI, else qemu:///system\n"
"    -o ro                  read-only: no snapshots by mkdir/rmdir, no\n"
"                           writing of disks either (EROFS)\n"
"    -o staging=DIR         where files written into domain and image\n"
"                           directories wait for their rename (rsync);\n"
"                           default " FS_STAGING_DIR "\n"
"    -o probe=no            images mode: a file not named *.qcow2, *.qed or\n"
"                           *.qcow is raw, never probed (a guest can write\n"
"                           an image header into its raw disk)\n"
"    -o backing=any         images mode: follow backing and data files,\n"
"                           and symlinks in DIR, outside DIR too\n"
"                           (DANGEROUS unless every image in DIR is\n"
"                           trusted: see vmdiskfs(1))\n"
"    -o snapsize=N%%|SIZE    copy-on-write space of the classic LVM\n"
"                           snapshots mkdir makes: N%% (1-100) of the\n"
"                           origin LV, or SIZE bytes (K/M/G/T suffixes);\n"
"                           default 20%% (at least 64M)\n"
"    -o pidfile=PATH        write the daemon's pid to PATH once the mount\n"
"                           answers\n"
"    -o l2_cache=SIZE       bound of each qcow2 image's L2 cache, and of\n"
"                           each backing chain's metadata (64M, 1GiB)\n"
"    -o spin_us=N           how long the thread reading requests tries\n"
"                           again before it sleeps (default 50; 0: never)\n"
"    -o net_timeout=SECONDS how long a request to a network disk's server\n"
"                           (RBD, iSCSI, NBD) may take before it fails\n"
"                           with EIO (default 30)\n"
"    -V   --version         print version\n"
"    -h   --help            print help\n"
"\n", prog);
}

/* The kernel's readahead for our mount, KiB.  The kernel starts a FUSE
 * mount at 128 KiB and max_readahead from INIT can only lower it, so it
 * is raised through sysfs (root only; silently left alone otherwise):
 * sequential reads then come in requests of the largest size. */
#define FS_READAHEAD_KB 1024

/* The device number of the mount on mountpoint, from /proc/self/mountinfo
 * (the last one: ours is on top).  Never stat the mount point from inside
 * the daemon: that is a FUSE request to ourselves, which deadlocks under
 * valgrind (a thread blocked in stat keeps valgrind's lock). */
static int
mount_dev (unsigned *maj, unsigned *min)
{
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0;
  FILE *fp = fopen ("/proc/self/mountinfo", "r");
  int found = -1;

  if (!fp)
    return -1;
  while (getline (&line, &cap, fp) > 0) {
    char mp[PATH_MAX + 1];
    unsigned a, b;

    if (sscanf (line, "%*u %*u %u:%u %*s %4096s", &a, &b, mp) != 3)
      continue;
    vd_mountinfo_unescape (mp);
    if (strcmp (mp, mountpoint) == 0) {
      *maj = a;
      *min = b;
      found = 0;
    }
  }
  fclose (fp);
  return found;
}

/* From now on no image may be opened through our mount, nor through any
 * bind mount of it (safe-open.c). */
static void
forbid_our_mounts (void)
{
  unsigned maj, min;

  if (mount_dev (&maj, &min) == 0)
    vd_forbid_mount (fs_config.mountpoint, makedev (maj, min));
}

static void
set_readahead (void)
{
  CLEANUP_FREE char *path = NULL;
  unsigned maj, min;
  FILE *fp;

  if (mount_dev (&maj, &min) < 0) {
    vd_debug ("%s: not in /proc/self/mountinfo", mountpoint);
    return;
  }
  if (asprintf (&path, "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min) < 0) {
    path = NULL;
    return;
  }
  fp = fopen (path, "w");
  if (!fp || fprintf (fp, "%d\n", FS_READAHEAD_KB) < 0 || fclose (fp) != 0)
    vd_debug ("%s: %m (readahead stays at the kernel's default)", path);
}

/* Called from the init callback (ops.c): once INIT is answered the mount
 * serves requests (earlier ones wait for it in the kernel), so a test that
 * waits for the file knows the file system is up (nbdfuse's pattern). */
void
fs_write_pidfile (void)
{
  const char *pidfile = fs_config.pidfile;
  CLEANUP_FREE char *tmp = NULL;
  FILE *fp;

  if (!pidfile)
    return;
  if (asprintf (&tmp, "%s.tmp", pidfile) < 0) {
    tmp = NULL;
    return;
  }
  fp = fopen (tmp, "w");
  if (!fp || fprintf (fp, "%ld\n", (long) getpid ()) < 0 || fclose (fp) != 0
      || rename (tmp, pidfile) < 0) {
    vd_error ("pidfile %s: %m", pidfile);
    unlink (tmp);
  }
}

/* Is path dir, or inside it (both canonical)? */
static bool
within (const char *path, const char *dir)
{
  size_t n = strlen (dir);

  return strcmp (dir, "/") == 0
    || (strncmp (path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0'));
}

/* -o snapsize=N% (1-100) or SIZE (size.h, at least 1 MiB) into
 * fs_config.  0, or -1 after a message. */
static int
parse_snapsize (const char *s)
{
  uint64_t v;
  bool percent;

  if (vd_parse_size_or_percent (s, &v, &percent) < 0) {
    if (errno != ERANGE)
      goto bad;
    fprintf (stderr, "vmdiskfs: -o snapsize=%s: too large\n", s);
    return -1;
  }
  if (percent) {
    if (v < 1 || v > 100) {
      fprintf (stderr, "vmdiskfs: -o snapsize=%s: a percentage is 1%% to "
               "100%% of the origin\n", s);
      return -1;
    }
    fs_config.cow_percent = (unsigned) v;
    return 0;
  }
  if (v < (1ULL << 20)) {
    fprintf (stderr, "vmdiskfs: -o snapsize=%s: less than 1M of "
             "copy-on-write space would overflow at once\n", s);
    return -1;
  }
  fs_config.cow_bytes = v;
  return 0;

 bad:
  fprintf (stderr, "vmdiskfs: -o snapsize=%s: want a percentage of the "
           "origin (N%%, 1-100) or a size (digits with an optional K, M, G "
           "or T suffix, or KiB, MiB, GiB, TiB)\n", s);
  return -1;
}

int
main (int argc, char **argv)
{
  struct fuse_args args = FUSE_ARGS_INIT (argc, argv);
  struct fuse_cmdline_opts opts;
  const struct fs_provider *provider;
  char *abs;
  int ret = 1;

  memset (&opts, 0, sizeof opts);
  if (fuse_opt_parse (&args, &fs_config, fs_opts, opt_proc) < 0)
    goto out_args;
  if (fs_config.snapsize && parse_snapsize (fs_config.snapsize) < 0)
    goto out_args;
  if (fs_config.backing) {
    if (strcmp (fs_config.backing, "any") == 0)
      fs_config.backing_any = true;
    else if (strcmp (fs_config.backing, "dir") != 0) {
      fprintf (stderr, "vmdiskfs: -o backing=%s: want \"dir\" (the "
               "default: backing and data files only inside the images "
               "directory) or \"any\"\n", fs_config.backing);
      goto out_args;
    }
  }
  if (fs_config.probe) {
    if (strcmp (fs_config.probe, "no") == 0)
      fs_config.probe_no = true;
    else if (strcmp (fs_config.probe, "yes") != 0) {
      fprintf (stderr, "vmdiskfs: -o probe=%s: want \"yes\" (the default) "
               "or \"no\"\n", fs_config.probe);
      goto out_args;
    }
  }
  /* Under allow_other the modes are all that keeps other users out of
   * images they cannot read on the host: have the kernel check them. */
  if (allow_other && fuse_opt_add_arg (&args, "-odefault_permissions") < 0)
    goto out_args;
  /* mount.fuse3: "vmdiskfs SOURCE MOUNTPOINT -o ..."; SOURCE is ignored
   * (the images directory is an option). */
  if (nnonopt > 0 && fuse_opt_add_arg (&args, nonopt[nnonopt - 1]) < 0)
    goto out_args;
  if (fuse_parse_cmdline (&args, &opts) != 0)
    goto out_args;

  if (opts.show_help) {
    usage (stdout, argv[0]);
    printf ("FUSE options:\n");
    fflush (stdout);
    fuse_cmdline_help ();
    fuse_lowlevel_help ();
    ret = 0;
    goto out_args;
  }
  if (opts.show_version) {
    printf ("vmdiskfs %s\n", PACKAGE_VERSION);
    printf ("libfuse %s\n", fuse_pkgversion ());
    fflush (stdout);
    fuse_lowlevel_version ();
    ret = 0;
    goto out_args;
  }
  if (!opts.mountpoint) {
    fprintf (stderr, "vmdiskfs: no mount point\n");
    usage (stderr, argv[0]);
    goto out_args;
  }
  mountpoint = opts.mountpoint;
  /* Providers refuse images inside the mount (a request to ourselves). */
  fs_config.mountpoint = realpath (mountpoint, NULL);
  vd_forbid_mount (fs_config.mountpoint, 0);
  fs_config.foreground = opts.foreground;
  fs_config.debug = opts.debug;
  if (opts.debug)
    vd_log_set_level (VD_LOG_DEBUG);

  if (fs_config.images) {
    provider = &tree_images_provider;
    /* fuse_daemonize changes to /: make every path absolute now. */
    abs = realpath (fs_config.images, NULL);
    if (!abs) {
      fprintf (stderr, "vmdiskfs: -o images=%s: %m\n", fs_config.images);
      goto out_args;
    }
    free (fs_config.images);
    fs_config.images = abs;
    source = fs_config.images;
    /* Scanning DIR must never look at the mount itself. */
    if (fs_config.mountpoint && (within (fs_config.mountpoint, abs)
                                 || within (abs, fs_config.mountpoint))) {
      fprintf (stderr, "vmdiskfs: the mount point %s and -o images=%s "
               "must not be inside one another\n", fs_config.mountpoint,
               abs);
      goto out_args;
    }
  }
  else {
    provider = &tree_libvirt_provider;
    source = fs_config.connect && *fs_config.connect ? fs_config.connect
      : getenv ("LIBVIRT_DEFAULT_URI");
    if (!source || !*source)
      source = "qemu:///system";
  }
  if (fs_config.pidfile && fs_config.pidfile[0] != '/') {
    char cwd[PATH_MAX];
    char *p;
    if (!getcwd (cwd, sizeof cwd)
        || asprintf (&p, "%s/%s", cwd, fs_config.pidfile) < 0) {
      fprintf (stderr, "vmdiskfs: pidfile: %m\n");
      goto out_args;
    }
    free (fs_config.pidfile);
    fs_config.pidfile = p;
  }
  if (fs_config.l2_cache) {
    uint64_t bytes;
    if (vd_parse_size (fs_config.l2_cache, &bytes) < 0 || bytes == 0) {
      fprintf (stderr, "vmdiskfs: -o l2_cache=%s: not a size\n",
               fs_config.l2_cache);
      goto out_args;
    }
    /* Before any image is opened (tree_start). */
    qcow2_set_cache_size (bytes);
  }
  if (!have_fsname) {
    CLEANUP_FREE char *o = NULL;
    CLEANUP_FREE char *fsname = NULL;
    if (asprintf (&fsname, "fsname=%s", source) < 0)
      goto out_args;
    if (fuse_opt_add_opt_escaped (&o, fsname) < 0
        || fuse_opt_add_arg (&args, "-o") < 0
        || fuse_opt_add_arg (&args, o) < 0)
      goto out_args;
  }

  /* Every open file holds its own image and backing chain open (both
   * providers): allow as many descriptors as the hard limit lets us. */
  {
    struct rlimit rl;

    if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit (RLIMIT_NOFILE, &rl);
    }
  }

  inode_init ();
  if (!fs_config.ro && staging_start () < 0)
    goto out_tree;
  /* The first scan runs before detaching, so its messages reach the
   * terminal. */
  if (tree_start (provider) < 0)
    goto out_tree;

  if (fs_ops_start () < 0)
    goto out_tree;
  fs_session = fuse_session_new (&args, &fs_ops, sizeof fs_ops, NULL);
  if (!fs_session)
    goto out_tree;
  if (fuse_set_signal_handlers (fs_session) != 0)
    goto out_session;
  if (fuse_session_mount (fs_session, mountpoint) != 0)
    goto out_signals;
  if (fuse_daemonize (opts.foreground) != 0)
    goto out_unmount;
  if (!opts.foreground)
    vd_log_use_syslog (true);
  vd_info ("serving %s on %s", source, mountpoint);

  tree_notify_start ();
  forbid_our_mounts ();
  tree_mounted ();
  set_readahead ();

  if (opts.singlethread)
    ret = fuse_session_loop (fs_session);
  else {
    /* loop.c: one reader serving reads, a pool for the rest; the
     * usual max_threads and max_idle_threads bound the pool. */
    struct fs_loop_config cfg = {
      .spin_us = spin_us,
      .max_threads = opts.max_threads,
      .max_idle_threads = opts.max_idle_threads,
      .read_may_block = fs_read_may_block,
    };
    ret = fs_loop_run (fs_session, &cfg);
  }
  ret = ret < 0 ? 1 : 0;

  tree_notify_stop ();
  if (fs_config.pidfile)
    unlink (fs_config.pidfile);
 out_unmount:
  fuse_session_unmount (fs_session);
 out_signals:
  fuse_remove_signal_handlers (fs_session);
 out_session:
  fuse_session_destroy (fs_session);
 out_tree:
  tree_stop ();
  staging_stop ();
  inode_fini ();
 out_args:
  free (opts.mountpoint);
  free (nonopt[0]);
  free (nonopt[1]);
  free (fs_config.images);
  free (fs_config.connect);
  free (fs_config.pidfile);
  free (fs_config.l2_cache);
  free (fs_config.snapsize);
  free (fs_config.backing);
  free (fs_config.probe);
  free (fs_config.staging);
  free (fs_config.mountpoint);
  fuse_opt_free_args (&args);
  return ret;
}
