/* vmdiskfs - opening files whose names come from untrusted places.
 *
 * Image files are untrusted input and vmdiskfs runs as root.  A name found
 * inside an image (a backing file, an external data file) could otherwise
 * make the daemon show a host file (/etc/shadow, /dev/sda) to whoever
 * reads the mount, hang on a FIFO or a terminal, or send a request to its
 * own mount, which deadlocks it beyond SIGKILL.  So every image file is
 * opened here (vd_open_checked), in three steps:
 *
 *  1. Resolve the name ourselves, one component at a time, with lstat and
 *     readlink (at most 40 symlinks), so that the kernel follows no
 *     symlink and we see every directory the name passes through.  A
 *     component that is one of our own mount points (vd_forbid_mount: the
 *     mount point, and every mount of our device in /proc/self/mountinfo,
 *     bind mounts included) is refused before it is touched: the lstat of
 *     it would be the request to ourselves.
 *  2. Check what it resolved to: a regular file or a block device, else
 *     refused before it is opened (a FIFO would block the open, a tty
 *     could become our terminal, a character device may act on open).  For
 *     names found inside images, the policy (vdformat.h struct vd_policy):
 *     inside the confining directory, the same file as the domain XML's
 *     <backingStore> records.
 *  3. Open the canonical path with O_NOFOLLOW|O_NONBLOCK|O_NOCTTY and,
 *     where the kernel has openat2, RESOLVE_NO_SYMLINKS (a symlink swapped
 *     into the path meanwhile fails the open instead of being followed),
 *     then check with fstat that it is the very file that was checked.
 *     O_NONBLOCK is cleared afterwards.
 *
 * Threads: the forbidden mounts are written before images are opened
 * (main.c) and again, under forbid_lock, after mounting; everything else
 * is stateless.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#ifdef HAVE_LINUX_OPENAT2_H
#include <linux/openat2.h>
#endif

#include "vdformat.h"
#include "safe-open.h"
#include "log.h"
#include "cleanup.h"
#include "escape.h"
#include "vec.h"


/* vd_busy_holder, vd_busy_quiet (vdformat.h): per thread. */
static __thread char busy_holder[128];
static __thread bool busy_quiet;

const char *
vd_busy_holder (void)
{
  return busy_holder;
}

void
vd_busy_quiet (bool quiet)
{
  busy_quiet = quiet;
  if (quiet)
    busy_holder[0] = '\0';
}


#define MAX_SYMLINKS 40

static pthread_mutex_t forbid_lock = PTHREAD_MUTEX_INITIALIZER;
static char *forbidden_path;          /* forbid_lock */
static dev_t forbidden_dev;           /* forbid_lock */

void
vd_forbid_mount (const char *path, dev_t dev)
{
  char *p = path ? strdup (path) : NULL;

  pthread_mutex_lock (&forbid_lock);
  if (p || !path) {
    free (forbidden_path);
    forbidden_path = p;
  }
  forbidden_dev = dev;
  pthread_mutex_unlock (&forbid_lock);
}

/* Our mount points, canonical: the one given to vd_forbid_mount and every
 * mount of its device in /proc/self/mountinfo.  Read once per name
 * resolved. */
VD_VECTOR (mounts, char *);

static void
mounts_free (struct mounts *m)
{
  size_t i;

  for (i = 0; i < m->len; i++)
    free (m->ptr[i]);
  free (m->ptr);
}

static int
mounts_add (struct mounts *m, const char *path)
{
  char *s = strdup (path);

  if (!s || mounts_append (m, s) < 0) {
    free (s);
    return -1;
  }
  return 0;
}

static int
mounts_get (struct mounts *m)
{
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0;
  dev_t dev;
  FILE *fp;
  int r = 0;

  m->ptr = NULL;
  m->len = m->cap = 0;
  pthread_mutex_lock (&forbid_lock);
  if (forbidden_path)
    r = mounts_add (m, forbidden_path);
  dev = forbidden_dev;
  pthread_mutex_unlock (&forbid_lock);
  if (r < 0 || dev == 0)
    return r;

  fp = fopen ("/proc/self/mountinfo", "re");
  if (!fp)
    return -1;                  /* cannot tell: refuse (fail closed) */
  while (getline (&line, &cap, fp) > 0) {
    unsigned a, b;
    int at = 0;

    if (sscanf (line, "%*u %*u %u:%u %*s %n", &a, &b, &at) != 2 || at == 0)
      continue;
    if (makedev (a, b) != dev)
      continue;
    line[at + strcspn (line + at, " \n")] = '\0';
    vd_mountinfo_unescape (line + at);
    if (mounts_add (m, line + at) < 0) {
      r = -1;
      break;
    }
  }
  fclose (fp);
  return r;
}

static bool
is_our_mount (const struct mounts *m, const char *path)
{
  size_t i;

  for (i = 0; i < m->len; i++)
    if (strcmp (m->ptr[i], path) == 0)
      return true;
  return false;
}

/* Resolve path (absolute, or relative to the working directory) to a
 * canonical path without symlinks, touching nothing inside our mounts.
 * *st: lstat of the result.  malloc'd, or NULL with errno (ELOOP with
 * *why set for a path into our mount). */
/* Is path (canonical) dir or one of its ancestors? */
static bool
ancestor_of (const char *path, const char *dir)
{
  size_t n = strlen (path);

  return strncmp (dir, path, n) == 0 && (dir[n] == '/' || dir[n] == '\0');
}

static bool inside (const char *path, const char *dir);

static char *
resolve (const char *path, const char *confine, struct stat *st,
         const char **why, char **at)
{
  char res[PATH_MAX];           /* resolved so far; "" is "/" */
  CLEANUP_FREE char *todo = NULL;
  const char *p;
  size_t len;
  int links = 0;
  bool have_st = false;
  struct mounts m __attribute__ ((cleanup (mounts_free)));

  *why = NULL;
  if (mounts_get (&m) < 0) {
    *why = "our mounts cannot be listed";
    errno = EIO;
    return NULL;
  }
  if (path[0] == '/')
    res[0] = '\0';
  else if (!getcwd (res, sizeof res))
    return NULL;
  else if (strcmp (res, "/") == 0)
    res[0] = '\0';
  todo = strdup (path);
  if (!todo)
    return NULL;
  p = todo;
  for (;;) {
    char cand[PATH_MAX];
    const char *comp;
    size_t clen;
    struct stat s;

    while (*p == '/')
      p++;
    if (!*p)
      break;
    comp = p;
    clen = strcspn (p, "/");
    p += clen;
    if (clen == 1 && comp[0] == '.')
      continue;
    if (clen == 2 && comp[0] == '.' && comp[1] == '.') {
      char *slash = strrchr (res, '/');
      if (slash)
        *slash = '\0';
      have_st = false;
      continue;
    }
    len = strlen (res);
    if (len + 1 + clen >= sizeof cand) {
      errno = ENAMETOOLONG;
      return NULL;
    }
    memcpy (cand, res, len);
    cand[len] = '/';
    memcpy (cand + len + 1, comp, clen);
    cand[len + 1 + clen] = '\0';
    /* Confined: never touch anything but the way to DIR and DIR itself
     * (an automounter or another FUSE mount elsewhere could hang us). */
    if (confine && !ancestor_of (cand, confine) && !inside (cand, confine)) {
      *why = "outside";
      if (at)
        *at = strdup (cand);
      errno = EACCES;
      return NULL;
    }
    if (is_our_mount (&m, cand)) {
      *why = "it is inside this vmdiskfs mount";
      errno = ELOOP;
      return NULL;
    }
    if (lstat (cand, &s) < 0)
      return NULL;
    if (S_ISLNK (s.st_mode)) {
      char target[PATH_MAX];
      ssize_t n;
      char *next;

      if (++links > MAX_SYMLINKS) {
        errno = ELOOP;
        return NULL;
      }
      n = readlink (cand, target, sizeof target - 1);
      if (n < 0)
        return NULL;
      if (n == 0) {
        errno = ENOENT;
        return NULL;
      }
      target[n] = '\0';
      if (asprintf (&next, "%s/%s", target, p) < 0)
        return NULL;
      free (todo);
      todo = next;
      p = todo;
      if (target[0] == '/')
        res[0] = '\0';
      have_st = false;
      continue;
    }
    /* Something follows: this must be a directory. */
    {
      const char *q = p;
      while (*q == '/')
        q++;
      if (*q && !S_ISDIR (s.st_mode)) {
        errno = ENOTDIR;
        return NULL;
      }
    }
    strcpy (res, cand);
    *st = s;
    have_st = true;
  }
  if (res[0] == '\0')
    strcpy (res, "/");
  if (!have_st) {
    if (strcmp (res, "/") != 0 && is_our_mount (&m, res)) {
      *why = "it is inside this vmdiskfs mount";
      errno = ELOOP;
      return NULL;
    }
    if (lstat (res, st) < 0)
      return NULL;
  }
  return strdup (res);
}

/* Is path inside dir (both canonical)? */
static bool
inside (const char *path, const char *dir)
{
  size_t n = strlen (dir);

  if (strcmp (dir, "/") == 0)
    return true;
  return strncmp (path, dir, n) == 0 && path[n] == '/';
}

static int
open_nofollow (const char *path, int flags)
{
#if defined(SYS_openat2) && defined(HAVE_LINUX_OPENAT2_H)
  struct open_how how = {
    .flags = (uint64_t) flags,
    .resolve = RESOLVE_NO_SYMLINKS,
  };
  long fd = syscall (SYS_openat2, AT_FDCWD, path, &how, sizeof how);

  if (fd >= 0 || errno != ENOSYS)
    return (int) fd;
#endif
  {
    /* No openat2 (Linux < 5.6): walk the canonical path one directory
     * at a time, following no symlink, so that a directory swapped for
     * a symlink meanwhile fails instead of leading elsewhere. */
    CLEANUP_FREE char *copy = strdup (path);
    char *p, *slash;
    int dfd, nfd;

    if (!copy)
      return -1;
    if ((dfd = open ("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
      return -1;
    for (p = copy + 1; (slash = strchr (p, '/')) != NULL; p = slash + 1) {
      *slash = '\0';
      nfd = openat (dfd, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      close (dfd);
      if (nfd < 0)
        return -1;
      dfd = nfd;
    }
    nfd = openat (dfd, p, flags | O_NOFOLLOW);
    close (dfd);
    return nfd;
  }
}

/* A loop device's backing file, when it has one: a loop device over a
 * file inside our mount would make every read a request to ourselves.
 * 0 when dev is no loop device or its file is fine, -1 with *why. */
static int
check_loop (const struct stat *st, const char **why)
{
  char sys[96], file[PATH_MAX];
  CLEANUP_FREE char *canon = NULL;
  const char *w = NULL;
  struct stat fst;
  ssize_t n;
  int fd;

  if (!S_ISBLK (st->st_mode) || major (st->st_rdev) != 7)   /* loop */
    return 0;
  snprintf (sys, sizeof sys, "/sys/dev/block/%u:%u/loop/backing_file",
            major (st->st_rdev), minor (st->st_rdev));
  fd = open (sys, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;                   /* not bound to a file */
  n = read (fd, file, sizeof file - 1);
  close (fd);
  if (n <= 0)
    return 0;
  file[n] = '\0';
  file[strcspn (file, "\n")] = '\0';
  canon = resolve (file, NULL, &fst, &w, NULL);
  if (!canon && w) {
    *why = "a loop device over a file inside this vmdiskfs mount";
    return -1;
  }
  return 0;
}

/* A copy of s with control characters as '?' (NULL: "?"). */
static char *
printable (const char *s)
{
  char *c = strdup (s ? s : "?"), *p;

  if (c)
    for (p = c; *p; p++)
      if ((unsigned char) *p < 0x20 || *p == 0x7f)
        *p = '?';
  return c;
}

/* Log a refusal: one line naming the image and the refused file (for a
 * top image: the name it was opened by, and where that leads). */
static void
refuse (const char *image, const char *what, const char *path,
        const char *name, const char *why)
{
  /* Names come from images: no control characters into the log, where
   * a newline could forge a line. */
  CLEANUP_FREE char *n = printable (name);
  CLEANUP_FREE char *w = printable (why);

  if (image)
    vd_error ("%s: %s %s refused: %s", image, what, n, w);
  else if (strcmp (path, name) != 0)
    vd_error ("%s: %s refused: %s", path, n, w);
  else
    vd_error ("%s refused: %s", n, w);
  errno = EIO;
}

/* Log why name (named by image, or a top image) cannot be opened; errno
 * kept. */
static void
cannot_open (const char *image, const char *what, const char *name)
{
  int e = errno;
  CLEANUP_FREE char *n = printable (name);

  if (image)
    vd_error ("%s: %s %s: cannot open: %s", image, what, n, strerror (e));
  else
    vd_error ("%s: cannot open: %s", n, strerror (e));
  errno = e;
}

int
vd_open_checked (const char *path, unsigned flags,
                 const struct vd_policy *pol, unsigned depth,
                 const char *image, const char *what, struct stat *st)
{
  CLEANUP_FREE char *canon = NULL;
  CLEANUP_FREE char *why_buf = NULL;
  CLEANUP_FREE char *at = NULL;
  const char *why;
  struct stat lst;
  int fd, fl;

  canon = resolve (path, pol ? pol->confine : NULL, &lst, &why, &at);
  if (!canon) {
    if (at) {
      if (asprintf (&why_buf, "outside %s (it leads to %s; -o backing=any "
                    "follows it)", pol->confine, at) < 0)
        why_buf = NULL;
      refuse (image, what, path, path,
              why_buf ? why_buf : "outside the directory");
    }
    else if (why)
      refuse (image, what, path, path, why);
    else
      cannot_open (image, what, path);
    return -1;
  }
  if (!S_ISREG (lst.st_mode) && !S_ISBLK (lst.st_mode)) {
    refuse (image, what, path, canon, "not a regular file or block device");
    return -1;
  }
  /* Images mode names no devices: only a file of DIR may be named. */
  if (S_ISBLK (lst.st_mode) && image && pol && pol->confine) {
    refuse (image, what, path, canon, "a block device");
    return -1;
  }
  if (check_loop (&lst, &why) < 0) {
    refuse (image, what, path, canon, why);
    return -1;
  }
  if (pol && pol->confine && !inside (canon, pol->confine)) {
    if (asprintf (&why_buf, "outside %s (-o backing=any follows it)",
                  pol->confine) < 0)
      why_buf = NULL;
    refuse (image, what, path, canon, why_buf ? why_buf : "outside the directory");
    return -1;
  }
  if (image && pol && depth > 0) {
    if (depth <= pol->nexpect) {
      const char *exp = pol->expect[depth - 1];
      CLEANUP_FREE char *ecanon = NULL;
      const char *ewhy;
      struct stat est;

      ecanon = resolve (exp, NULL, &est, &ewhy, NULL);
      if (!ecanon || est.st_dev != lst.st_dev || est.st_ino != lst.st_ino) {
        if (asprintf (&why_buf, "the domain XML's <backingStore> names %s",
                      exp) < 0)
          why_buf = NULL;
        refuse (image, what, path, canon,
                why_buf ? why_buf : "the domain XML names another");
        return -1;
      }
    }
    else if (pol->expect_end) {
      refuse (image, what, path, canon,
              "the domain XML's <backingStore/> says there is none");
      return -1;
    }
  }

  fl = ((flags & VD_OPEN_RDWR) ? O_RDWR : O_RDONLY)
    | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  fd = open_nofollow (canon, fl);
  if (fd < 0) {
    cannot_open (image, what, image ? canon : path);
    return -1;
  }
  if (fstat (fd, st) < 0 || st->st_dev != lst.st_dev
      || st->st_ino != lst.st_ino
      || (st->st_mode & S_IFMT) != (lst.st_mode & S_IFMT)) {
    close (fd);
    refuse (image, what, path, canon, "it changed while being opened");
    return -1;
  }
  fl = fcntl (fd, F_GETFL);
  if (fl < 0 || fcntl (fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
    int e = errno;
    vd_error ("%s: fcntl: %s", canon, strerror (e));
    close (fd);
    errno = e;
    return -1;
  }
  if (flags & VD_OPEN_RDWR) {
    char holder[128];

    /* Written by us from now on: lock it as a qemu writer would, so a VM
     * cannot start on it meanwhile, and refuse it while anyone else
     * writes it. */
    if (vd_qemu_lock (fd, VD_LOCK_WRITE, holder, sizeof holder) < 0) {
      int e = errno;
      if (e == EBUSY) {
        snprintf (busy_holder, sizeof busy_holder, "%s", holder);
        if (!busy_quiet)
          vd_error ("%s: in use by %s: not opened for writing", canon,
                    holder);
      }
      else
        vd_error ("%s: cannot lock for writing: %s", canon, strerror (e));
      close (fd);
      errno = e;
      return -1;
    }
  }
  return fd;
}

int
vd_stat_checked (const char *path, const struct vd_policy *pol,
                 struct stat *st)
{
  CLEANUP_FREE char *canon = NULL;
  const char *why;

  canon = resolve (path, pol ? pol->confine : NULL, st, &why, NULL);
  if (!canon)
    return -1;
  if (pol && pol->confine && !inside (canon, pol->confine)) {
    errno = EACCES;
    return -1;
  }
  return 0;
}

int
vd_open_named_file (const char *driver, const char *image_path,
                    const char *name, const struct vd_chain *chain,
                    const char *what)
{
  CLEANUP_FREE char *full = NULL;
  struct stat st;
  int fd;

  full = vd_resolve_relative (image_path, name);
  if (!full)
    return -1;
  /* Depth 0: a data file is not part of the backing chain that
   * <backingStore> records. */
  fd = vd_open_checked (full, chain ? chain->flags & VD_OPEN_RDWR : 0,
                        chain ? chain->policy : NULL, 0,
                        image_path, what, &st);
  if (fd >= 0 && chain && chain->modes)
    *chain->modes &= vd_read_bits (&st, chain->uid, chain->gid);
  return fd;
}

struct vd_policy *
vd_policy_dup (const struct vd_policy *p)
{
  struct vd_policy *c;
  size_t i;

  if (!p)
    return NULL;
  c = calloc (1, sizeof *c);
  if (!c)
    return NULL;
  c->expect_end = p->expect_end;
  if (p->confine && (c->confine = strdup (p->confine)) == NULL)
    goto fail;
  if (p->nexpect) {
    c->expect = calloc (p->nexpect, sizeof *c->expect);
    if (!c->expect)
      goto fail;
    for (i = 0; i < p->nexpect; i++) {
      if ((c->expect[i] = strdup (p->expect[i])) == NULL)
        goto fail;
      c->nexpect = i + 1;
    }
  }
  return c;

 fail:
  vd_policy_free (c);
  errno = ENOMEM;
  return NULL;
}

void
vd_policy_free (struct vd_policy *p)
{
  size_t i;

  if (!p)
    return;
  for (i = 0; i < p->nexpect; i++)
    free (p->expect[i]);
  free (p->expect);
  free (p->confine);
  free (p);
}
