/* vmdiskfs - a snapshot copied back for a disk that is a logical volume
 * (libvirt-restore.c: snapshots/<s>/<target>.img): an LVM snapshot of
 * the LV written with the copied bytes, the LV itself untouched.
 *
 * The snapshot is the one `mkdir <domain>/snapshots/<s>` makes: when it
 * exists (cp -a made the directory first, and mkdir made a snapshot of
 * now, which the copy replaces), it is written; else it is made by the
 * same call mkdir makes for each LV disk (lvm_snapshotter.create: the
 * same LV name and tags, the same copy-on-write size, -o snapsize), so
 * the tree shows it under snapshots/<s>/ and rmdir deletes it.
 *
 * Written where it differs only: both are read in PIECE bytes, and of a
 * piece that differs only the BLOCK bytes blocks that differ are
 * written, so that a classic snapshot's copy-on-write space goes to real
 * differences (every block written to it takes a chunk there, equal or
 * not).  Holes of the staging file read as zeros.  A classic snapshot
 * whose copy-on-write space overflows becomes invalid (the kernel fails
 * its I/O): that is ENOSPC, logged, never a snapshot silently short of
 * its bytes; one made here is removed then.
 *
 * LVM runs in helper children (snapshotter/lvm.c), never here.  An
 * inactive snapshot (thin ones carry the activation-skip flag) is
 * activated through lvm_use, so that the idle timer deactivates it as
 * it does those the tree reads (libvirt-lvm.c).
 *
 * Threads: any FUSE thread, no lock held (restore.c); the domain is shut
 * off (the caller checked).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "log.h"

#define PIECE (64 * 1024)       /* compared at once                      */
#define BLOCK 4096              /* written when it differs (O_DIRECT's
                                   alignment too)                         */
#define KEEP_ACTIVE_MS 10000    /* lvm_use again so often while writing  */

/* The snapshot called snap of lv, into *si (snap_info_clear it): 0, or
 * -1 with errno ENOENT (none) or LVM's error. */
static int
find_snap (const char *lv, const char *snap, struct snap_info *si)
{
  struct snap_info *v = NULL;
  size_t n = 0, i;

  memset (si, 0, sizeof *si);
  if (lvm_snapshotter.list (lv, &v, &n) < 0)
    return -1;
  for (i = 0; i < n; i++)
    if (strcmp (v[i].name, snap) == 0) {
      *si = v[i];
      memmove (&v[i], &v[i + 1], (n - i - 1) * sizeof *v);
      n--;
      snap_list_free (v, n);
      return 0;
    }
  snap_list_free (v, n);
  errno = ENOENT;
  return -1;
}

/* Has the snapshot si overflowed (a classic one out of copy-on-write
 * space)?  Asks LVM. */
static bool
overflowed (const char *lv, const struct snap_info *si)
{
  struct snap_info now;
  bool r;

  if (si->flags & SNAP_THIN || find_snap (lv, si->name, &now) < 0)
    return false;
  r = (now.flags & SNAP_INVALID) != 0;
  snap_info_clear (&now);
  return r;
}

static int
pwrite_full (int fd, const void *buf, size_t count, uint64_t off)
{
  const char *p = buf;

  while (count > 0) {
    ssize_t r = pwrite (fd, p, count, (off_t) off);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        errno = EIO;
      return -1;
    }
    p += r;
    count -= r;
    off += r;
  }
  return 0;
}

/* The blocks of the len-byte piece at off where want differs from have,
 * written to dfd in runs.  Bytes written into *written.  0 or -1. */
static int
write_differences (int dfd, const char *want, const char *have, size_t len,
                   uint64_t off, uint64_t *written)
{
  size_t b = 0;

  while (b < len) {
    size_t e, bl = MIN ((size_t) BLOCK, len - b);

    if (memcmp (want + b, have + b, bl) == 0) {
      b += bl;
      continue;
    }
    for (e = b + bl; e < len; e += bl) {
      bl = MIN ((size_t) BLOCK, len - e);
      if (memcmp (want + e, have + e, bl) == 0)
        break;
    }
    if (pwrite_full (dfd, want + b, e - b, off + b) < 0)
      return -1;
    *written += e - b;
    b = e;
  }
  return 0;
}

/* Is the piece [off, off+len) of fd a hole?  *region_end and *in_hole
 * remember the last answer of SEEK_DATA / SEEK_HOLE, so that they are
 * asked once a region, not once a piece. */
static bool
piece_is_hole (int fd, uint64_t off, size_t len, uint64_t size,
               uint64_t *region_end, bool *in_hole)
{
  if (off >= *region_end) {
    off_t d = lseek (fd, (off_t) off, SEEK_DATA);

    if (d < 0) {
      /* ENXIO: a hole to the end; anything else: no answer, read it. */
      *in_hole = errno == ENXIO;
      *region_end = size;
    }
    else if ((uint64_t) d > off) {
      *in_hole = true;
      *region_end = d;
    }
    else {
      off_t h = lseek (fd, (off_t) off, SEEK_HOLE);
      *in_hole = false;
      *region_end = h > d ? (uint64_t) h : size;
    }
  }
  return *in_hole && off + len <= *region_end;
}

/* Write the size bytes of fd over the snapshot device dfd where they
 * differ.  id: the snapshot's, kept active through lvm_use when
 * keep_active.  0, or -1 with errno (*where: what failed). */
static int
copy_in (int fd, int dfd, uint64_t size, const struct snap_info *si,
         bool keep_active, uint64_t *written, const char **where)
{
  void *want = NULL, *have = NULL;
  uint64_t off, region_end = 0, used_ms = vd_now_ms ();
  bool in_hole = false;
  int r = -1, e;

  *written = 0;
  if (posix_memalign (&want, BLOCK, PIECE) != 0
      || posix_memalign (&have, BLOCK, PIECE) != 0) {
    *where = "memory";
    errno = ENOMEM;
    goto out;
  }
  for (off = 0; off < size; off += PIECE) {
    size_t len = MIN ((uint64_t) PIECE, size - off);

    if (piece_is_hole (fd, off, len, size, &region_end, &in_hole))
      memset (want, 0, len);
    else if (vd_pread_full (fd, want, len, off, true) < 0) {
      *where = "reading the copy";
      goto out;
    }
    if (vd_pread_full (dfd, have, len, off, false) < 0) {
      *where = "reading the snapshot";
      goto out;
    }
    if (memcmp (want, have, len) != 0
        && write_differences (dfd, want, have, len, off, written) < 0) {
      *where = "writing the snapshot";
      goto out;
    }
    /* Not idle: the timer must not deactivate it under us. */
    if (keep_active && vd_now_ms () - used_ms >= KEEP_ACTIVE_MS) {
      lvm_use (si->id, si->flags, 0);
      used_ms = vd_now_ms ();
    }
  }
  if (fsync (dfd) < 0) {
    *where = "flushing the snapshot";
    goto out;
  }
  r = 0;
 out:
  e = errno;
  free (want);
  free (have);
  errno = e;
  return r;
}

int
libvirt_lvm_snapshot_write (const char *domain, const char *snap,
                            const char *lv, int fd)
{
  CLEANUP_FREE char *what = NULL;
  struct snap_info si;
  struct stat st;
  uint64_t dsize = 0, written = 0;
  const char *where = NULL;
  bool made = false;
  int dfd = -1, e = 0;

  if (asprintf (&what, "domain %s: snapshot %s: %s", domain, snap, lv) < 0)
    return -1;
  if (fstat (fd, &st) < 0)
    return -1;
  if (find_snap (lv, snap, &si) < 0) {
    struct snap_create_opts o = {
      .cow_bytes = fs_config.cow_bytes,
      .cow_percent = fs_config.cow_percent,
    };

    if (errno != ENOENT) {
      e = errno;
      vd_error ("%s: LVM could not be asked for its snapshots: %s", what,
                strerror (e));
      errno = e;
      return -1;
    }
    if (lvm_snapshotter.create (lv, snap, &o, &si) < 0) {
      e = errno ? errno : EIO;
      vd_error ("%s: LVM snapshot not made: %s", what, strerror (e));
      errno = e;
      return -1;
    }
    made = true;
    vd_info ("%s: LVM snapshot %s made to hold the copy", what, si.id);
  }
  if (si.flags & SNAP_INVALID) {
    vd_error ("%s: LVM snapshot %s is invalid (overflowed): rmdir it, then "
              "copy again", what, si.id);
    e = EIO;
    goto out;
  }
  /* lvm_use may remember an LV of that name that rmdir removed since (a
   * thin snapshot read, deleted, made again): it answers "active" then,
   * and the device is missing; activated here. */
  if (si.flags & SNAP_NEEDS_ACTIVATION
      && (lvm_use (si.id, si.flags, 0) < 0
          || (access (si.device, F_OK) < 0
              && lvm_snapshotter.activate (&si) < 0))) {
    e = errno ? errno : EIO;
    vd_error ("%s: LVM snapshot %s cannot be activated", what, si.id);
    goto out;
  }
  dfd = open (si.device, O_RDWR | O_DIRECT | O_CLOEXEC);
  if (dfd < 0 && errno == EINVAL)
    dfd = open (si.device, O_RDWR | O_CLOEXEC);
  if (dfd < 0 || ioctl (dfd, BLKGETSIZE64, &dsize) < 0) {
    e = errno;
    vd_error ("%s: %s: %s", what, si.device, strerror (e));
    goto out;
  }
  if ((uint64_t) st.st_size != dsize) {
    vd_error ("%s: the copy has %" PRIu64 " bytes, the LV %" PRIu64
              ": not restored", what, (uint64_t) st.st_size, dsize);
    e = (uint64_t) st.st_size > dsize ? EFBIG : EINVAL;
    goto out;
  }
  if (copy_in (fd, dfd, dsize, &si,
               (si.flags & SNAP_NEEDS_ACTIVATION) != 0, &written,
               &where) < 0) {
    e = errno ? errno : EIO;
    if (!overflowed (lv, &si)) {
      vd_error ("%s: %s (%s): %s", what, where, si.device, strerror (e));
      goto out;
    }
  }
  if (overflowed (lv, &si)) {
    vd_error ("%s: LVM snapshot %s overflowed its copy-on-write space "
              "(%" PRIu64 " bytes differ so far): not restored; a larger "
              "-o snapsize is needed", what, si.id, written);
    e = ENOSPC;
    goto out;
  }
  vd_info ("%s: restored as LVM snapshot %s (%" PRIu64 " bytes of %"
           PRIu64 " differed from it)", what, si.id, written, dsize);

 out:
  if (dfd >= 0)
    close (dfd);
  if (e && made) {
    if (lvm_snapshotter.remove (&si) < 0)
      vd_error ("%s: LVM snapshot %s is left behind", what, si.id);
    else
      vd_info ("%s: LVM snapshot %s removed", what, si.id);
  }
  snap_info_clear (&si);
  lvm_cache_flush ();
  errno = e;
  return e ? -1 : 0;
}
