/* vmdiskfs - staging files and hidden disks: the state behind the ways
 * tools replace a file rather than overwrite it (DESIGN.md "Writing").
 *
 * Staging files.  rsync (without --inplace), sed -i, vim and file
 * managers write a new file next to the one they replace and rename it
 * over it.  A file created in a domain directory (an image directory in
 * images mode) is kept as a sparse file in the staging directory
 * (-o staging=DIR, default FS_STAGING_DIR, 0700, never inside the mount)
 * and shows under its name in the mount, outside the tree: lookup finds
 * it here, readdir does not list it.  Renaming it over a disk applies it
 * (write.c); unlink removes it.  Each staging file is flock'ed by the
 * daemon that owns it: at start, every file in the directory nobody
 * holds is a crashed daemon's leftover and is removed; files of other
 * mounts sharing the directory are held and stay.  A staging file that
 * no handle has had open for STAGING_IDLE_MS is removed too (a tool that
 * died between close and rename), swept on the next create or lookup.
 *
 * Hidden disks.  GNU tar removes a file before extracting it (unlink,
 * then open O_CREAT|O_EXCL).  unlink of a disk destroys nothing: it hides
 * the name in this mount (lookup ENOENT, readdir leaves it out) until a
 * file of that name is created, which then writes the disk as if opened
 * O_TRUNC (write.c).  Without that create the disk is untouched and shows
 * again after HIDDEN_MS, or when the daemon restarts.
 *
 * Threads: staging_lock protects both lists and every field of struct
 * fs_staging but fd, name-independent constants and node.  It is a leaf
 * (taken under tree_lock by readdir's hidden test, never the other way).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmdiskfs.h"
#include "ops-priv.h"
#include "clock.h"
#include "log.h"

#define STAGING_IDLE_MS  (10 * 60 * 1000)
#define HIDDEN_MS        (10 * 60 * 1000)
#define STAGING_PREFIX   "stage-"

static pthread_mutex_t staging_lock = PTHREAD_MUTEX_INITIALIZER;
static int staging_dirfd = -1;
static char *staging_dir;

struct entry {                  /* a staging file by directory and name */
  struct fs_staging *s;
  struct entry *next;
};
static struct entry *stagings;

struct hidden {
  fuse_ino_t dir;
  char *name;
  uint64_t since_ms;
  struct hidden *next;
};
static struct hidden *hiddens;

/* Entries in each list (atomic; changed under staging_lock): lookup and
 * readdir ask about every name, and nearly always neither list holds
 * anything, so they answer without the lock. */
static unsigned nstagings, nhiddens;
#define COUNT_ADD(n, d) __atomic_add_fetch (&(n), (d), __ATOMIC_RELAXED)
#define COUNT_SUB(n) __atomic_sub_fetch (&(n), 1, __ATOMIC_RELAXED)
#define COUNT_GET(n) __atomic_load_n (&(n), __ATOMIC_RELAXED)

/* Is path inside the mount (or the mount inside it)? */
static bool
on_mount (const char *canon)
{
  const char *m = fs_config.mountpoint;
  size_t n;

  if (!m)
    return false;
  n = strlen (m);
  if (strncmp (canon, m, n) == 0 && (canon[n] == '/' || canon[n] == '\0'))
    return true;
  n = strlen (canon);
  return strncmp (m, canon, n) == 0 && (m[n] == '/' || n == 1);
}

/* mkdir -p, each new directory 0700 (only the last needs to be, but
 * nothing here needs more). */
static int
make_dirs (const char *path)
{
  char *p = strdup (path), *q;

  if (!p)
    return -1;
  for (q = p + 1; *q; q++)
    if (*q == '/') {
      *q = '\0';
      if (mkdir (p, 0700) < 0 && errno != EEXIST) {
        free (p);
        return -1;
      }
      *q = '/';
    }
  free (p);
  if (mkdir (path, 0700) < 0 && errno != EEXIST)
    return -1;
  return 0;
}

int
staging_start (void)
{
  const char *dir = fs_config.staging ? fs_config.staging : FS_STAGING_DIR;
  struct stat st;
  DIR *d;
  struct dirent *de;
  int fd, n = 0;

  if (dir[0] != '/') {
    vd_error ("-o staging=%s: must be an absolute path", dir);
    return -1;
  }
  if (make_dirs (dir) < 0) {
    vd_error ("staging directory %s: %m", dir);
    return -1;
  }
  staging_dir = realpath (dir, NULL);
  if (!staging_dir) {
    vd_error ("staging directory %s: %m", dir);
    return -1;
  }
  if (on_mount (staging_dir)) {
    vd_error ("staging directory %s: inside the mount %s (or holding it): "
              "choose another with -o staging=DIR", staging_dir,
              fs_config.mountpoint);
    return -1;
  }
  fd = open (staging_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 || fstat (fd, &st) < 0) {
    vd_error ("staging directory %s: %m", staging_dir);
    if (fd >= 0)
      close (fd);
    return -1;
  }
  if (st.st_uid != geteuid () || (st.st_mode & 0077)) {
    vd_error ("staging directory %s: owned by uid %u with mode %03o: want "
              "ours (uid %u) and no access for group or others",
              staging_dir, (unsigned) st.st_uid,
              (unsigned) (st.st_mode & 0777), (unsigned) geteuid ());
    close (fd);
    return -1;
  }
  staging_dirfd = fd;
  /* Leftovers: files nobody holds. */
  d = fdopendir (dup (fd));
  if (d) {
    while ((de = readdir (d)) != NULL) {
      int f;

      if (strncmp (de->d_name, STAGING_PREFIX, strlen (STAGING_PREFIX)))
        continue;
      f = openat (fd, de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
      if (f < 0)
        continue;
      if (flock (f, LOCK_EX | LOCK_NB) == 0
          && unlinkat (fd, de->d_name, 0) == 0)
        n++;
      close (f);
    }
    closedir (d);
  }
  if (n)
    vd_info ("staging directory %s: removed %d staging file%s a crashed "
             "daemon left", staging_dir, n, n == 1 ? "" : "s");
  return 0;
}

static void
staging_free (struct fs_staging *s)
{
  if (s->fd >= 0)
    close (s->fd);
  if (s->node)
    inode_unref (s->node);
  free (s->name);
  free (s->file);
  free (s);
}

/* staging_lock held: unlink s's file and take it off the list (the
 * list's reference is dropped by the caller). */
static bool
drop_locked (struct fs_staging *s)
{
  struct entry **pp;

  for (pp = &stagings; *pp; pp = &(*pp)->next)
    if ((*pp)->s == s) {
      struct entry *e = *pp;
      *pp = e->next;
      COUNT_SUB (nstagings);
      free (e);
      if (s->file && staging_dirfd >= 0)
        unlinkat (staging_dirfd, s->file, 0);
      return true;
    }
  return false;
}

/* staging_lock held: remove staging files idle too long and hidden names
 * too old. */
static void
sweep_locked (void)
{
  uint64_t now = vd_now_ms ();
  struct entry **pp = &stagings;
  struct hidden **hp = &hiddens;

  while (*pp) {
    struct fs_staging *s = (*pp)->s;
    /* A complete file waits for the rest of its VM (restore.c): it
     * goes with its pending directory's rmdir, or at unmount. */
    if (s->nopen == 0 && s->idle_since_ms
        && !__atomic_load_n (&s->complete, __ATOMIC_RELAXED)
        && now - s->idle_since_ms > STAGING_IDLE_MS) {
      vd_info ("staging file %s (%s) unused for %d s: removed", s->name,
               s->file, STAGING_IDLE_MS / 1000);
      drop_locked (s);
      if (--s->refs == 0)
        staging_free (s);
      continue;                 /* *pp is the next one now */
    }
    pp = &(*pp)->next;
  }
  while (*hp) {
    struct hidden *h = *hp;
    if (now - h->since_ms > HIDDEN_MS) {
      *hp = h->next;
      COUNT_SUB (nhiddens);
      free (h->name);
      free (h);
      continue;
    }
    hp = &h->next;
  }
}

void
staging_stop (void)
{
  pthread_mutex_lock (&staging_lock);
  while (stagings) {
    struct fs_staging *s = stagings->s;
    drop_locked (s);
    if (--s->refs == 0)
      staging_free (s);
  }
  while (hiddens) {
    struct hidden *h = hiddens;
    hiddens = h->next;
    COUNT_SUB (nhiddens);
    free (h->name);
    free (h);
  }
  pthread_mutex_unlock (&staging_lock);
  if (staging_dirfd >= 0)
    close (staging_dirfd);
  staging_dirfd = -1;
  free (staging_dir);
  staging_dir = NULL;
}

struct fs_staging *
staging_new (struct fs_node *dir, const char *name, mode_t mode, uid_t uid,
             gid_t gid)
{
  static unsigned long seq;
  struct fs_staging *s = calloc (1, sizeof *s);
  struct entry *e = calloc (1, sizeof *e);
  char *path = NULL;
  int i;

  if (!s || !e || (s->name = strdup (name)) == NULL
      || asprintf (&path, "%s/%s", strcmp (dir->path, "/") ? dir->path : "",
                   name) < 0) {
    free (e);
    if (s)
      free (s->name);
    free (s);
    free (path);
    errno = ENOMEM;
    return NULL;
  }
  s->fd = -1;
  for (i = 0; i < 100 && s->fd < 0; i++) {
    unsigned long n = __atomic_add_fetch (&seq, 1, __ATOMIC_RELAXED);
    free (s->file);
    if (asprintf (&s->file, STAGING_PREFIX "%ld-%lu", (long) getpid (),
                  n) < 0) {
      s->file = NULL;
      break;
    }
    s->fd = openat (staging_dirfd, s->file,
                    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0600);
    if (s->fd < 0 && errno != EEXIST)
      break;
  }
  if (s->fd < 0 || flock (s->fd, LOCK_EX | LOCK_NB) < 0) {
    int err = errno;
    vd_error ("staging file for %s in %s: %s", path, staging_dir,
              strerror (err));
    if (s->fd >= 0)
      unlinkat (staging_dirfd, s->file, 0);
    free (path);
    free (e);
    staging_free (s);
    errno = err;
    return NULL;
  }
  s->node = inode_get_node (path, FS_NODE_STAGING);
  free (path);
  if (!s->node) {
    unlinkat (staging_dirfd, s->file, 0);
    free (e);
    staging_free (s);
    errno = ENOMEM;
    return NULL;
  }
  s->dir = dir->ino;
  s->mode = mode & 07777;
  s->uid = uid;
  s->gid = gid;
  s->refs = 2;                  /* the list's and the caller's */
  e->s = s;
  pthread_mutex_lock (&staging_lock);
  sweep_locked ();
  e->next = stagings;
  stagings = e;
  COUNT_ADD (nstagings, 1);
  pthread_mutex_unlock (&staging_lock);
  vd_debug ("%s: staged as %s/%s", s->node->path, staging_dir, s->file);
  return s;
}

struct fs_staging *
staging_find (fuse_ino_t dir, const char *name)
{
  struct entry *e;
  struct fs_staging *s = NULL;

  if (COUNT_GET (nstagings) == 0)
    return NULL;
  pthread_mutex_lock (&staging_lock);
  sweep_locked ();
  for (e = stagings; e; e = e->next)
    if (e->s->dir == dir && strcmp (e->s->name, name) == 0
        && !e->s->applied && !e->s->overlay) {
      s = e->s;
      s->refs++;
      break;
    }
  pthread_mutex_unlock (&staging_lock);
  return s;
}

struct fs_staging *
staging_by_node (fuse_ino_t ino)
{
  struct entry *e;
  struct fs_staging *s = NULL;

  pthread_mutex_lock (&staging_lock);
  for (e = stagings; e; e = e->next)
    if (e->s->node->ino == ino) {
      s = e->s;
      s->refs++;
      break;
    }
  pthread_mutex_unlock (&staging_lock);
  return s;
}

void
staging_unref (struct fs_staging *s)
{
  bool last;

  if (!s)
    return;
  pthread_mutex_lock (&staging_lock);
  last = --s->refs == 0;
  pthread_mutex_unlock (&staging_lock);
  if (last)
    staging_free (s);
}

static unsigned nopen_files;    /* atomic: staging files with nopen > 0 */

unsigned
staging_open_count (void)
{
  return __atomic_load_n (&nopen_files, __ATOMIC_RELAXED);
}

void
staging_opened (struct fs_staging *s)
{
  pthread_mutex_lock (&staging_lock);
  if (s->nopen++ == 0 && !s->overlay)
    __atomic_add_fetch (&nopen_files, 1, __ATOMIC_RELAXED);
  s->idle_since_ms = 0;
  pthread_mutex_unlock (&staging_lock);
}

void
staging_closed (struct fs_staging *s)
{
  pthread_mutex_lock (&staging_lock);
  if (s->nopen > 0 && --s->nopen == 0) {
    s->idle_since_ms = vd_now_ms ();
    if (!s->overlay)
      __atomic_sub_fetch (&nopen_files, 1, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock (&staging_lock);
}

void
staging_remove (struct fs_staging *s, fuse_ino_t applied_to)
{
  bool listed;

  pthread_mutex_lock (&staging_lock);
  if (applied_to) {
    /* Its file goes; the entry stays (not found by name any more) so
     * that the kernel's inode, now at the disk's name, answers getattr
     * with the disk's attributes until it forgets it; swept when idle. */
    s->applied = applied_to;
    if (s->file && staging_dirfd >= 0)
      unlinkat (staging_dirfd, s->file, 0);
    free (s->file);
    s->file = NULL;
    if (s->fd >= 0) {
      close (s->fd);
      s->fd = -1;
    }
    if (s->nopen == 0)
      s->idle_since_ms = vd_now_ms ();
    listed = false;
  }
  else
    listed = drop_locked (s);
  if (listed)
    s->refs--;                  /* the list's reference */
  pthread_mutex_unlock (&staging_lock);
}

int
staging_rename (struct fs_staging *s, fuse_ino_t newdir, const char *newname)
{
  char *n = strdup (newname);

  if (!n)
    return -1;
  pthread_mutex_lock (&staging_lock);
  free (s->name);
  s->name = n;
  s->dir = newdir;
  pthread_mutex_unlock (&staging_lock);
  return 0;
}

void
hidden_add (fuse_ino_t dir, const char *name)
{
  struct hidden *h = calloc (1, sizeof *h);

  if (!h || (h->name = strdup (name)) == NULL) {
    free (h);
    return;
  }
  h->dir = dir;
  h->since_ms = vd_now_ms ();
  pthread_mutex_lock (&staging_lock);
  h->next = hiddens;
  hiddens = h;
  COUNT_ADD (nhiddens, 1);
  pthread_mutex_unlock (&staging_lock);
}

static struct hidden **
hidden_find_locked (fuse_ino_t dir, const char *name)
{
  struct hidden **hp;
  uint64_t now = vd_now_ms ();

  for (hp = &hiddens; *hp; hp = &(*hp)->next)
    if ((*hp)->dir == dir && strcmp ((*hp)->name, name) == 0
        && now - (*hp)->since_ms <= HIDDEN_MS)
      return hp;
  return NULL;
}

bool
hidden_test (fuse_ino_t dir, const char *name)
{
  bool r;

  if (COUNT_GET (nhiddens) == 0)
    return false;
  pthread_mutex_lock (&staging_lock);
  r = hidden_find_locked (dir, name) != NULL;
  pthread_mutex_unlock (&staging_lock);
  return r;
}

bool
hidden_take (fuse_ino_t dir, const char *name)
{
  struct hidden **hp, *h = NULL;

  pthread_mutex_lock (&staging_lock);
  hp = hidden_find_locked (dir, name);
  if (hp) {
    h = *hp;
    *hp = h->next;
    COUNT_SUB (nhiddens);
  }
  pthread_mutex_unlock (&staging_lock);
  if (h) {
    free (h->name);
    free (h);
  }
  return h != NULL;
}

void
staging_list (fuse_ino_t dir,
              void (*add) (void *opaque, fuse_ino_t ino, const char *name),
              void *opaque)
{
  struct entry *e;

  if (COUNT_GET (nstagings) == 0)
    return;
  pthread_mutex_lock (&staging_lock);
  for (e = stagings; e; e = e->next)
    if (e->s->dir == dir && !e->s->applied && !e->s->overlay)
      add (opaque, e->s->node->ino, e->s->name);
  pthread_mutex_unlock (&staging_lock);
}

void
staging_waiting (struct fs_staging ***out, size_t *n)
{
  struct entry *e;
  size_t cap = 0;

  *out = NULL;
  *n = 0;
  if (COUNT_GET (nstagings) == 0)
    return;
  pthread_mutex_lock (&staging_lock);
  for (e = stagings; e; e = e->next)
    cap++;
  *out = malloc ((cap ? cap : 1) * sizeof **out);
  if (*out)
    for (e = stagings; e; e = e->next)
      if (!e->s->applied && e->s->nopen == 0
          && __atomic_load_n (&e->s->complete, __ATOMIC_RELAXED)) {
        e->s->refs++;
        (*out)[(*n)++] = e->s;
      }
  pthread_mutex_unlock (&staging_lock);
}
