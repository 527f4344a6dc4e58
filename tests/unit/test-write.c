/* Unit test of the generic write layer of formats/ (format.c) over the
 * raw driver, and of qemu's image locks (qemu-lock.c): zero detection
 * (all-zero blocks become holes, never written), vd_image_zero with
 * partial edges, growing, writes refused on read-only images, and the
 * lock bytes: a second writer, a qemu-style reader that refuses to share
 * write, and a writer in another process all give EBUSY naming the
 * holder; after close the image is free again.
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vdformat.h"
#include "test.h"

static int failures;

static long
blocks (const char *path)
{
  struct stat st;

  return stat (path, &st) == 0 ? (long) st.st_blocks : -1;
}

static void
read_lock (int fd, off_t byte)
{
  struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET,
                      .l_start = byte, .l_len = 1 };

  REQUIRE (fcntl (fd, F_OFD_SETLK, &fl) == 0);
}

int
main (void)
{
  char path[] = "/tmp/vd-test-write-XXXXXX";
  static char buf[1 << 20], back[1 << 20];
  struct vd_image *img, *ro, *other;
  char holder[128];
  int fd, pfd[2];
  pid_t pid;

  fd = mkstemp (path);
  REQUIRE (fd >= 0);
  REQUIRE (ftruncate (fd, 4 << 20) == 0);
  close (fd);

  /* vd_is_zero. */
  memset (buf, 0, sizeof buf);
  CHECK (vd_is_zero (buf, sizeof buf));
  CHECK (vd_is_zero (buf, 0) && vd_is_zero (buf, 3));
  buf[sizeof buf - 1] = 1;
  CHECK (!vd_is_zero (buf, sizeof buf));
  buf[sizeof buf - 1] = 0;
  buf[5] = 1;
  CHECK (!vd_is_zero (buf, sizeof buf) && !vd_is_zero (buf, 6));
  buf[5] = 0;

  /* Read-only images refuse writes. */
  ro = vd_image_open (path, 0);
  REQUIRE (ro != NULL);
  CHECK (!vd_image_writable (ro));
  CHECK (vd_image_pwrite (ro, buf, 512, 0) == -1 && errno == EBADF);
  CHECK (vd_image_zero (ro, 512, 0) == -1 && errno == EBADF);
  CHECK (vd_image_flush (ro) == -1 && errno == EBADF);

  img = vd_image_open (path, VD_OPEN_RDWR);
  REQUIRE (img != NULL);
  CHECK (vd_image_writable (img));
  CHECK (img->zero_align == 4096);

  /* 1 MiB of zeros allocates nothing; data then zeros over it releases. */
  CHECK (vd_image_pwrite (img, buf, sizeof buf, 0) == 0);
  CHECK (vd_image_flush (img) == 0);
  CHECK (blocks (path) == 0);
  memset (buf, 0x5a, sizeof buf);
  CHECK (vd_image_pwrite (img, buf, sizeof buf, 1 << 20) == 0);
  CHECK (blocks (path) >= 2048);
  /* Zero blocks inside a write: [8k, 16k) of this 64 KiB write. */
  memset (buf + 8192, 0, 8192);
  CHECK (vd_image_pwrite (img, buf, 65536, 1 << 20) == 0);
  CHECK (vd_image_pread (img, back, 65536, 1 << 20) == 0);
  CHECK (memcmp (buf, back, 65536) == 0);
  /* Unaligned zeros: written as data where partial, released where
   * whole: [1 MiB + 100, 2 MiB - 100). */
  CHECK (vd_image_zero (img, (1 << 20) - 200, (1 << 20) + 100) == 0);
  CHECK (vd_image_pread (img, back, sizeof back, 1 << 20) == 0);
  CHECK ((unsigned char) back[99] == 0x5a && back[100] == 0
         && back[sizeof back - 101] == 0
         && (unsigned char) back[sizeof back - 100] == 0x5a);
  CHECK (blocks (path) <= 16);
  /* Out of range. */
  CHECK (vd_image_pwrite (img, buf, 2, (4 << 20) - 1) == -1
         && errno == EINVAL);
  /* Growing; shrinking is refused. */
  CHECK (vd_image_resize (img, 8 << 20) == 0);
  CHECK (vd_image_size (img) == 8 << 20);
  CHECK (vd_image_pwrite (img, buf, 4096, (8 << 20) - 4096) == 0);
  CHECK (vd_image_resize (img, 1 << 20) == -1 && errno == EINVAL);

  /* Locks: a second writer in this process (another open file). */
  errno = 0;
  other = vd_image_open (path, VD_OPEN_RDWR);
  CHECK (other == NULL && errno == EBUSY);
  /* A reader is fine. */
  CHECK (vd_qemu_lock_held (img->lock_fd,
                            holder, sizeof holder) == 0);
  vd_image_close (img);

  /* A qemu-style reader that does not share write (byte 201) in another
   * process: EBUSY naming it. */
  REQUIRE (pipe (pfd) == 0);
  pid = fork ();
  REQUIRE (pid >= 0);
  if (pid == 0) {
    int f = open (path, O_RDONLY);
    char c = 'x';
    if (f < 0)
      _exit (1);
    read_lock (f, 100);
    read_lock (f, 201);
    if (write (pfd[1], &c, 1) != 1)
      _exit (1);
    pause ();
    _exit (0);
  }
  {
    char c;
    REQUIRE (read (pfd[0], &c, 1) == 1);
  }
  errno = 0;
  other = vd_image_open (path, VD_OPEN_RDWR);
  CHECK (other == NULL && errno == EBUSY);
  fd = open (path, O_RDWR);
  REQUIRE (fd >= 0);
  holder[0] = '\0';
  CHECK (vd_qemu_lock (fd, VD_LOCK_WRITE, holder, sizeof holder) == -1
         && errno == EBUSY);
  {
    char want[32];
    snprintf (want, sizeof want, "pid %ld ", (long) pid);
    CHECK (strstr (holder, want) != NULL);
    if (!strstr (holder, want))
      fprintf (stderr, "holder: \"%s\", want \"%s\"\n", holder, want);
  }
  CHECK (vd_qemu_lock_held (fd, holder, sizeof holder) == 1);
  kill (pid, SIGKILL);
  waitpid (pid, NULL, 0);
  /* Free again: we take it, and hold what a qemu writer holds. */
  CHECK (vd_qemu_lock_held (fd, NULL, 0) == 0);
  CHECK (vd_qemu_lock (fd, VD_LOCK_WRITE, NULL, 0) == 0);
  {
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                        .l_start = 100, .l_len = 1 };
    int f2 = open (path, O_RDONLY);
    REQUIRE (f2 >= 0);
    for (off_t b = 100; b < 205; b++) {
      /* F_OFD_GETLK filled in the holder (l_pid -1): reset it. */
      fl = (struct flock) { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                            .l_start = b, .l_len = 1 };
      REQUIRE (fcntl (f2, F_OFD_GETLK, &fl) == 0);
      CHECK ((fl.l_type != F_UNLCK) == (b == 100 || b == 101 || b == 201));
    }
    close (f2);
  }
  /* The resize bytes while asked, and gone after. */
  CHECK (vd_qemu_lock (fd, VD_LOCK_WRITE | VD_LOCK_RESIZE, NULL, 0) == 0);
  {
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                        .l_start = 203, .l_len = 1 };
    int f2 = open (path, O_RDONLY);
    REQUIRE (fcntl (f2, F_OFD_GETLK, &fl) == 0);
    CHECK (fl.l_type != F_UNLCK);
    vd_qemu_unlock_resize (fd);
    fl = (struct flock) { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                          .l_start = 203, .l_len = 1 };
    REQUIRE (fcntl (f2, F_OFD_GETLK, &fl) == 0);
    CHECK (fl.l_type == F_UNLCK);
    close (f2);
  }
  close (fd);
  img = vd_image_open (path, VD_OPEN_RDWR);
  CHECK (img != NULL);
  vd_image_close (img);
  vd_image_close (ro);
  unlink (path);
  return failures ? 1 : 0;
}
