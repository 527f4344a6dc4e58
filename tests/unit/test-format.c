/* Unit test of the generic layer and the raw driver of formats/:
 * probing, range validation, reads, SEEK_HOLE-based extents, and cycle
 * detection in backing chains (through a raw file there is none, so this
 * checks the vd_chain bookkeeping directly).
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdformat.h"
#include "test.h"

int
main (void)
{
  char path[] = "/tmp/vd-test-format-XXXXXX";
  char buf[8192], *rel;
  struct vd_image *img;
  struct vd_extent e;
  struct vd_chain self;
  struct stat st;
  uint64_t alloc;
  mode_t modes = 0444;
  int fd;

  fd = mkstemp (path);
  REQUIRE (fd >= 0);
  /* 1 MiB file: data at [0,64k), a hole, data at [512k,576k), hole. */
  memset (buf, 0xab, sizeof buf);
  for (int i = 0; i < 8; i++)
    REQUIRE (pwrite (fd, buf, sizeof buf, i * 8192) == sizeof buf);
  for (int i = 0; i < 8; i++)
    REQUIRE (pwrite (fd, buf, sizeof buf, 512 * 1024 + i * 8192) == sizeof buf);
  REQUIRE (ftruncate (fd, 1024 * 1024) == 0);
  /* vd_fd_size: a regular file's size, the position untouched; a bad fd
   * fails.  (A block device's BLKGETSIZE64 needs root and a loop device.) */
  REQUIRE (lseek (fd, 100, SEEK_SET) == 100);
  REQUIRE (vd_fd_size (fd) == 1024 * 1024);
  REQUIRE (lseek (fd, 0, SEEK_CUR) == 100);
  REQUIRE (vd_fd_size (-1) == -1 && errno == EBADF);
  close (fd);

  img = vd_image_open (path, 0);
  REQUIRE (img != NULL);
  REQUIRE (strcmp (vd_image_format_name (img), "raw") == 0);
  REQUIRE (vd_image_size (img) == 1024 * 1024);

  /* Reads within range; outside range is EINVAL. */
  memset (buf, 0, sizeof buf);
  REQUIRE (vd_image_pread (img, buf, 100, 10) == 0);
  REQUIRE ((unsigned char) buf[0] == 0xab && (unsigned char) buf[99] == 0xab);
  REQUIRE (vd_image_pread (img, buf, 100, 200 * 1024) == 0);
  REQUIRE (buf[0] == 0 && buf[99] == 0);
  REQUIRE (vd_image_pread (img, buf, 2, 1024 * 1024 - 1) == -1 &&
           errno == EINVAL);
  REQUIRE (vd_image_pread (img, buf, 1, UINT64_MAX) == -1 && errno == EINVAL);

  /* Extents (tmpfs and ext4 both report holes at this granularity). */
  REQUIRE (vd_image_block_status (img, 0, 1024 * 1024, &e) == 0);
  REQUIRE (e.offset == 0 && e.type == VD_EXTENT_DATA && e.fd >= 0);
  REQUIRE (e.length == 64 * 1024);
  REQUIRE (vd_image_block_status (img, 64 * 1024, 1024 * 1024 - 64 * 1024,
                                  &e) == 0);
  REQUIRE (e.type == VD_EXTENT_HOLE && e.length == 448 * 1024);
  REQUIRE (vd_image_block_status (img, 600 * 1024, 10, &e) == 0);
  REQUIRE (e.type == VD_EXTENT_HOLE && e.length == 10);
  REQUIRE (vd_image_block_status (img, 0, 0, &e) == -1 && errno == EINVAL);
  REQUIRE (vd_image_allocated (img, &alloc) == 0 && alloc == 128 * 1024);
  vd_image_close (img);

  /* A chain that already contains this file is refused with ELOOP. */
  REQUIRE (stat (path, &st) == 0);
  memset (&self, 0, sizeof self);
  self.dev = st.st_dev;
  self.ino = st.st_ino;
  self.path = path;
  self.modes = &modes;
  img = vd_image_open_chain (path, "raw", 0, &self);
  REQUIRE (img == NULL && errno == ELOOP);
  /* Unknown format names are refused. */
  img = vd_image_open_chain (path, "vmdk", 0, NULL);
  REQUIRE (img == NULL && errno == ENOTSUP);
  /* A missing file. */
  img = vd_image_open ("/nonexistent/x.qcow2", 0);
  REQUIRE (img == NULL && errno == ENOENT);

  /* Relative names resolve against the image's directory. */
  rel = vd_resolve_relative ("/a/b/top.qcow2", "base.qcow2");
  REQUIRE (rel && strcmp (rel, "/a/b/base.qcow2") == 0);
  free (rel);
  rel = vd_resolve_relative ("/a/b/top.qcow2", "/abs/base");
  REQUIRE (rel && strcmp (rel, "/abs/base") == 0);
  free (rel);
  rel = vd_resolve_relative ("top.qcow2", "base");
  REQUIRE (rel && strcmp (rel, "base") == 0);
  free (rel);

  unlink (path);
  printf ("test-format: all passed\n");
  return 0;
}
