/* vmdiskfs - qemu's image locks: taking them before writing an image,
 * finding who holds them.
 *
 * qemu (block/file-posix.c's locking, documented in DESIGN.md "qemu's
 * image locks") marks an image it opens with one-byte OFD read locks:
 * byte 100+i for each permission it holds and 200+i for each permission
 * it does not share with other users, i being 0 consistent read, 1 write,
 * 2 write-unchanged, 3 resize (4 graph-modify in older versions).  A
 * program may take permission i only if nobody holds 200+i, and may
 * refuse to share i only if nobody holds 100+i.  Read locks of different
 * open file descriptions never conflict with each other, so the test is
 * F_OFD_GETLK with a write lock: it reports any read lock of another open
 * file description, never our own.
 *
 * We take what a qemu writer takes: consistent read and write held (100,
 * 101), write not shared (201), and with resize 103 and 203.  So a VM
 * cannot start on an image we write (libvirt reports qemu's "Failed to
 * get 'write' lock"), and we refuse an image a VM or qemu-img writes or
 * reads with write unshared.
 *
 * Order: take our bytes first, then test: two writers racing both see
 * each other and both back off (as two qemus do), never both proceed.
 *
 * The holder: F_OFD_GETLK reports l_pid -1 for OFD locks, and so does
 * /proc/locks; /proc/PID/fdinfo/FD lists the locks on that open file, so
 * the holder is found by scanning them (only on a conflict).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdformat.h"

#define LOCK_BASE_PERM    100
#define LOCK_BASE_SHARED  200
#define PERM_READ   0
#define PERM_WRITE  1
#define PERM_RESIZE 3
#define PERM_MAX    5           /* qemu's bytes run 100-104, 200-204 */

static int
ofd (int fd, int cmd, short type, off_t start, off_t len, struct flock *out)
{
  struct flock fl = { 0 };
  int r;

  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  do
    r = fcntl (fd, cmd, &fl);
  while (r < 0 && errno == EINTR);
  if (out)
    *out = fl;
  return r;
}

/* Does another open file description hold a lock on [start, start+len)?
 * 1 yes, 0 no, -1 error. */
static int
held_by_other (int fd, off_t start, off_t len)
{
  struct flock fl;

  if (ofd (fd, F_OFD_GETLK, F_WRLCK, start, len, &fl) < 0)
    return -1;
  return fl.l_type != F_UNLCK;
}

/* Describe in buf the process(es) holding OFD locks on the file ino other than ourselves: "pid 1234 (qemu-system-x86)". */
static void
describe_holder (ino_t ino, char *buf, size_t len)
{
  DIR *proc;
  struct dirent *de;
  pid_t self = getpid ();
  size_t used = 0;

  if (!buf || len == 0)
    return;
  /* When no other process shows a lock: another open file of ours (a
   * second writer of the same image in this daemon). */
  snprintf (buf, len, "another open file of this process (pid %ld)",
            (long) self);
  proc = opendir ("/proc");
  if (!proc)
    return;
  while ((de = readdir (proc)) != NULL) {
    char path[64], line[256];
    DIR *fds;
    struct dirent *fe;
    bool found = false;
    long pid = strtol (de->d_name, NULL, 10);

    if (pid <= 0 || pid == self)
      continue;
    snprintf (path, sizeof path, "/proc/%ld/fdinfo", pid);
    fds = opendir (path);
    if (!fds)
      continue;
    while (!found && (fe = readdir (fds)) != NULL) {
      char p2[384];
      FILE *f;
      bool same = false;

      if (fe->d_name[0] == '.')
        continue;
      snprintf (p2, sizeof p2, "%s/%s", path, fe->d_name);
      f = fopen (p2, "re");
      if (!f)
        continue;
      /* The locks listed are those on this open file: it is a holder
       * if it is our file (by inode; the message only names it) and
       * holds an OFD lock. */
      while (fgets (line, sizeof line, f)) {
        unsigned long long i;

        if (sscanf (line, "ino: %llu", &i) == 1)
          same = i == (unsigned long long) ino;
        else if (same && strncmp (line, "lock:", 5) == 0
                 && strstr (line, "OFDLCK"))
          found = true;
      }
      fclose (f);
    }
    closedir (fds);
    if (found) {
      char comm[64] = "?";
      FILE *c;
      int n;

      snprintf (path, sizeof path, "/proc/%ld/comm", pid);
      c = fopen (path, "re");
      if (c) {
        if (fgets (comm, sizeof comm, c))
          comm[strcspn (comm, "\n")] = '\0';
        fclose (c);
      }
      n = snprintf (buf + used, len - used, "%spid %ld (%s)",
                    used ? ", " : "", pid, comm);
      if (n < 0 || (size_t) n >= len - used)
        break;
      used += n;
    }
  }
  closedir (proc);
}

static void
holder_of (int fd, char *holder, size_t len)
{
  struct stat st;

  if (!holder || len == 0)
    return;
  if (fstat (fd, &st) < 0) {
    snprintf (holder, len, "another program");
    return;
  }
  describe_holder (st.st_ino, holder, len);
}

/* The bytes a writer conflicts with: anyone writing or resizing (101,
 * 103), anyone refusing to share write (201) or consistent read (200) or
 * resize (203). */
static int
conflicts (int fd, bool resize)
{
  int r;

  if ((r = held_by_other (fd, LOCK_BASE_PERM + PERM_WRITE, 1)) != 0)
    return r;
  if ((r = held_by_other (fd, LOCK_BASE_SHARED + PERM_READ, 2)) != 0)
    return r;
  if (resize) {
    if ((r = held_by_other (fd, LOCK_BASE_PERM + PERM_RESIZE, 1)) != 0)
      return r;
    if ((r = held_by_other (fd, LOCK_BASE_SHARED + PERM_RESIZE, 1)) != 0)
      return r;
  }
  return 0;
}

int
vd_qemu_lock (int fd, unsigned perms, char *holder, size_t holder_len)
{
  bool resize = perms & VD_LOCK_RESIZE;
  int r, e;

  if (holder && holder_len)
    holder[0] = '\0';
  if (ofd (fd, F_OFD_SETLK, F_RDLCK, LOCK_BASE_PERM + PERM_READ, 2, NULL) < 0
      || ofd (fd, F_OFD_SETLK, F_RDLCK, LOCK_BASE_SHARED + PERM_WRITE, 1,
              NULL) < 0
      || (resize
          && (ofd (fd, F_OFD_SETLK, F_RDLCK, LOCK_BASE_PERM + PERM_RESIZE, 1,
                   NULL) < 0
              || ofd (fd, F_OFD_SETLK, F_RDLCK,
                      LOCK_BASE_SHARED + PERM_RESIZE, 1, NULL) < 0)))
    goto undo;
  r = conflicts (fd, resize);
  if (r == 0)
    return 0;
  if (r > 0) {
    holder_of (fd, holder, holder_len);
    errno = EBUSY;
  }
 undo:
  e = errno;
  if (resize)
    vd_qemu_unlock_resize (fd);
  else {
    ofd (fd, F_OFD_SETLK, F_UNLCK, LOCK_BASE_PERM, PERM_MAX, NULL);
    ofd (fd, F_OFD_SETLK, F_UNLCK, LOCK_BASE_SHARED, PERM_MAX, NULL);
  }
  errno = e;
  return -1;
}

void
vd_qemu_unlock_resize (int fd)
{
  int e = errno;

  ofd (fd, F_OFD_SETLK, F_UNLCK, LOCK_BASE_PERM + PERM_RESIZE, 1, NULL);
  ofd (fd, F_OFD_SETLK, F_UNLCK, LOCK_BASE_SHARED + PERM_RESIZE, 1, NULL);
  errno = e;
}

int
vd_qemu_lock_held (int fd, char *holder, size_t holder_len)
{
  int r = conflicts (fd, false);

  if (r > 0)
    holder_of (fd, holder, holder_len);
  return r;
}
