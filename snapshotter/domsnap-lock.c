/* vmdiskfs - the per-domain lock of domain snapshots: an exclusive
 * flock(2) on DS_LOCK_DIR/<domain UUID>.lock held by ds_create and
 * ds_delete for their whole run (domsnap.h, "Lock", says what it
 * guarantees and what is refused).
 *
 * Every check is here: the directory is lstat'ed before every use (a
 * directory, not a symbolic link, owned by the effective user, mode
 * 0700), opened O_NOFOLLOW and compared with what lstat saw; the lock
 * file is opened O_NOFOLLOW in it and, once locked, compared with what
 * is at its name (the last holder unlinks it before letting go).
 *
 * Threads: each call opens the file anew, so threads of one process
 * exclude each other like processes do; the fallback mutex serves an
 * unprivileged caller without the directory.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "domsnap-int.h"
#include "virt.h"
#include "log.h"
#include "clock.h"

/* Seconds to wait for another process's create or delete of the same
 * domain (VMDISKFS_DOMSNAP_LOCK_WAIT overrides it, for tests). */
#define LOCK_WAIT_SECONDS 600

/* An unprivileged caller (no right to make or use root's DS_LOCK_DIR) is
 * still serialized with the other threads of its process, by this mutex:
 * callers (fs/ mkdir and rmdir) need no lock of their own. */
static pthread_mutex_t fallback_lock = PTHREAD_MUTEX_INITIALIZER;

static int
unlocked_fallback (struct ds_lock *lk)
{
  pthread_mutex_lock (&fallback_lock);
  lk->mutexed = true;
  return 0;
}

/* Open DS_LOCK_DIR, making it 0700 when it is missing, after checking
 * with lstat what is there: a directory (not a symbolic link) owned by
 * the effective user, with no permission for group or others.  Anything
 * else may be another user's (who could then hold, replace or remove our
 * lock files): it is refused, never used, and never "repaired" (a
 * squatter may be waiting for us to trust it).  The opened directory is
 * checked to be the one lstat saw.  Returns its descriptor, or -1 with
 * errno: EACCES (logged) for a directory we must not use; EPERM (not
 * logged: the caller falls back to the mutex, with a warning) when an
 * unprivileged caller finds root's directory or cannot make one. */
static int
open_lock_dir (void)
{
  struct stat sl, sf;
  uid_t me = geteuid ();
  int fd, e;

  if (lstat (DS_LOCK_DIR, &sl) < 0) {
    if (errno != ENOENT) {
      e = errno;
      vd_error ("lock directory %s: %m", DS_LOCK_DIR);
      errno = e;
      return -1;
    }
    if (mkdir (DS_LOCK_DIR, 0700) < 0 && errno != EEXIST) {
      e = errno;
      if (me != 0 && (e == EACCES || e == EPERM || e == EROFS)) {
        errno = EPERM;
        return -1;
      }
      vd_error ("cannot make the lock directory %s: %m", DS_LOCK_DIR);
      errno = e;
      return -1;
    }
    if (lstat (DS_LOCK_DIR, &sl) < 0) {
      e = errno;
      vd_error ("lock directory %s: %m", DS_LOCK_DIR);
      errno = e;
      return -1;
    }
  }
  if (S_ISLNK (sl.st_mode)) {
    vd_error ("lock directory %s is a symbolic link (owner uid %u): "
              "refused; it must be a directory owned by uid %u, mode "
              "0700 (remove it)", DS_LOCK_DIR, (unsigned) sl.st_uid,
              (unsigned) me);
    errno = EACCES;
    return -1;
  }
  if (!S_ISDIR (sl.st_mode)) {
    vd_error ("lock directory %s is not a directory (owner uid %u, mode "
              "%04o): refused; remove it", DS_LOCK_DIR, (unsigned) sl.st_uid,
              (unsigned) (sl.st_mode & 07777));
    errno = EACCES;
    return -1;
  }
  if (sl.st_uid != me && sl.st_uid == 0) {
    errno = EPERM;              /* root's, and we are not root */
    return -1;
  }
  if (sl.st_uid != me || (sl.st_mode & 077)) {
    vd_error ("lock directory %s has owner uid %u and mode %04o: refused "
              "(another user could take or remove its locks); it must be "
              "owned by uid %u with mode 0700: remove it, it is made anew",
              DS_LOCK_DIR, (unsigned) sl.st_uid,
              (unsigned) (sl.st_mode & 07777), (unsigned) me);
    errno = EACCES;
    return -1;
  }
  fd = open (DS_LOCK_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    e = errno;
    vd_error ("lock directory %s: %m", DS_LOCK_DIR);
    errno = e;
    return -1;
  }
  if (fstat (fd, &sf) < 0 || sf.st_dev != sl.st_dev ||
      sf.st_ino != sl.st_ino) {
    vd_error ("lock directory %s was replaced while it was checked: "
              "refused", DS_LOCK_DIR);
    close (fd);
    errno = EACCES;
    return -1;
  }
  return fd;
}

/* Take the exclusive flock of domain dname: DS_LOCK_DIR/<UUID>.lock
 * (0600, in the directory open_lock_dir checked), so that creates and
 * deletes of one domain by different processes (a vmdiskfs mount,
 * vmdisk-snapshot from cron) do not interleave; threads of one process
 * too, as each call opens the file anew.  Waits up to LOCK_WAIT_SECONDS,
 * saying once that it waits.  The holder unlinks the file before it lets
 * go (ds_lock_release), so that none pile up: a waiter that then gets the
 * lock of a file no longer at its name opens it anew.  0; or, for an
 * unprivileged caller without the directory, 0 holding fallback_lock
 * (a warning); or -1 (logged) with errno EBUSY after the wait, EACCES a
 * lock directory refused (open_lock_dir), ENOENT no such domain ... */
int
ds_lock_take (virConnectPtr c, const char *dname, struct ds_lock *lk)
{
  return ds_lock_take_wait (c, dname, lk,
                            ds_env_seconds ("VMDISKFS_DOMSNAP_LOCK_WAIT",
                                            LOCK_WAIT_SECONDS));
}

int
ds_lock_take_wait (virConnectPtr c, const char *dname, struct ds_lock *lk,
                   long wait)
{
  char uuid[VIR_UUID_STRING_BUFLEN];
  virDomainPtr d;
  uint64_t t0;
  bool said = false;
  struct stat sf, sp;
  int e;

  lk->fd = -1;
  lk->dirfd = -1;
  lk->mutexed = false;
  d = virDomainLookupByName (c, dname);
  if (!d) {
    virt_fail (VIRT_ALL, "domain %s: lookup", dname);
    return -1;
  }
  if (virDomainGetUUIDString (d, uuid) < 0) {
    virt_fail (VIRT_ALL, "domain %s: UUID", dname);
    virDomainFree (d);
    return -1;
  }
  virDomainFree (d);
  snprintf (lk->name, sizeof lk->name, "%s.lock", uuid);
  snprintf (lk->path, sizeof lk->path, "%s/%s", DS_LOCK_DIR, lk->name);
  lk->dirfd = open_lock_dir ();
  if (lk->dirfd < 0) {
    if (errno != EPERM)
      return -1;                /* logged */
    vd_warn ("domain %s: %s belongs to root (or cannot be made) and this "
             "process runs as uid %u: snapshots of the domain are not "
             "serialized with other processes", dname, DS_LOCK_DIR,
             (unsigned) geteuid ());
    return unlocked_fallback (lk);
  }
  t0 = vd_now_ms ();
  for (;;) {
    if (lk->fd < 0) {
      lk->fd = openat (lk->dirfd, lk->name,
                       O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (lk->fd < 0) {
        e = errno;
        vd_error ("domain %s: lock file %s: %m", dname, lk->path);
        goto fail;
      }
    }
    if (flock (lk->fd, LOCK_EX | LOCK_NB) == 0) {
      if (fstat (lk->fd, &sf) == 0 &&
          fstatat (lk->dirfd, lk->name, &sp, AT_SYMLINK_NOFOLLOW) == 0 &&
          sf.st_dev == sp.st_dev && sf.st_ino == sp.st_ino)
        return 0;
      close (lk->fd);           /* unlinked by its last holder: anew */
      lk->fd = -1;
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno != EWOULDBLOCK) {
      e = errno;
      vd_error ("domain %s: flock %s: %m", dname, lk->path);
      goto fail;
    }
    if ((int64_t) (vd_now_ms () - t0) >= (int64_t) wait * 1000) {
      vd_error ("domain %s: another snapshot operation on it still runs "
                "after %ld s (%s is locked): given up", dname, wait,
                lk->path);
      e = EBUSY;
      goto fail;
    }
    if (!said && wait > 0) {
      vd_warn ("domain %s: waiting for another snapshot operation on it "
               "to finish (%s is locked)", dname, lk->path);
      said = true;
    }
    ds_sleep_ms (100);
  }
 fail:
  if (lk->fd >= 0)
    close (lk->fd);
  lk->fd = -1;
  close (lk->dirfd);
  lk->dirfd = -1;
  errno = e;
  return -1;
}

void
ds_lock_release (struct ds_lock *lk)
{
  if (lk->mutexed) {
    lk->mutexed = false;
    pthread_mutex_unlock (&fallback_lock);
  }
  if (lk->fd >= 0) {
    unlinkat (lk->dirfd, lk->name, 0);  /* before letting go: see
                                           ds_lock_take */
    close (lk->fd);
    lk->fd = -1;
  }
  if (lk->dirfd >= 0) {
    close (lk->dirfd);
    lk->dirfd = -1;
  }
}

/* Tests: VMDISKFS_DOMSNAP_HOLD=FILE makes ds_create and ds_delete wait,
 * once they hold the lock, until FILE is gone (at most 120 s). */
void
ds_hold_for_tests (const char *dname)
{
  const char *f = getenv ("VMDISKFS_DOMSNAP_HOLD");
  int i;

  if (!f || !*f)
    return;
  vd_warn ("domain %s: holding the lock while %s exists "
           "(VMDISKFS_DOMSNAP_HOLD)", dname, f);
  for (i = 0; i < 1200 && access (f, F_OK) == 0; i++)
    ds_sleep_ms (100);
}
