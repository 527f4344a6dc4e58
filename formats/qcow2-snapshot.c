/* vmdiskfs - qcow2 driver (read side): internal snapshots.
 *
 * Parses the snapshot table (== Snapshots == in qemu's
 * docs/interop/qcow2.txt), lists it, and opens one snapshot as an image of
 * its own: a new qcow2_image on a dup of the file descriptor, reading
 * through the snapshot's L1 table at the snapshot's own disk size.  VM
 * state is stored past the disk size in that L1 mapping, so it is never
 * visible.  The snapshot image owns its fd, cache, data file and backing
 * image, so it stays valid after the image it came from is closed; its
 * backing file is the image's current one.
 *
 * The table is parsed once per open image, not per list or open: at open
 * for the active image (qcow2_open_image; a corrupt table is a corrupt
 * image), on first use for an image opened as a snapshot.  list_snapshots
 * copies the parsed table, open_snapshot hands the parsed entry to
 * qcow2_open_image (which then reads no table).  Without VD_OPEN_LIVE the
 * list is as at open (the owner reopens a changed file, as fs/ does).
 * With it, each list/open first preads the header's nb_snapshots and
 * snapshots_offset (12 bytes) and parses the table again only when they
 * changed: qemu writes every new table to newly allocated clusters, so a
 * snapshot made or deleted by the running VM changes them.  A snapshot is
 * opened without VD_OPEN_LIVE even from a live image: its L1 table, L2
 * tables and clusters are immutable while it exists (after its deletion
 * they may be reused: reads may give garbage, validated as always, never
 * a crash).
 *
 * Threads: list and open_snapshot run concurrently on one image; the
 * parsed table (sn_table, sn_count, sn_key, sn_loaded) is protected by
 * q->sn_lock, held while it is refreshed and copied from.  The file may
 * be written by a running VM meanwhile.
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
#include <sys/stat.h>
#include <unistd.h>

#include "vdformat.h"
#include "qcow2.h"
#include "log.h"
#include "endian.h"
#include "cleanup.h"

/* Snapshot table entry, fixed part (== Snapshots ==):
 *   0  l1_table_offset  u64     8  l1_size      u32
 *  12  id_str_size      u16    14  name_size    u16
 *  16  date_sec         u32    20  date_nsec    u32
 *  24  vm_clock_nsec    u64    32  vm_state_size u32
 *  36  extra_data_size  u32
 * extra data: 40 vm_state_size_large u64, 48 disk_size u64
 * then id, name, padding to a multiple of 8. */
#define SN_FIXED 40

void
qcow2_free_snapshot_table (struct qcow2_snapshot *snaps, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++) {
    free (snaps[i].id);
    free (snaps[i].name);
  }
  free (snaps);
}

static char *
dup_counted (const uint8_t *p, size_t len)
{
  char *s = malloc (len + 1);

  if (s) {
    memcpy (s, p, len);
    s[len] = '\0';
  }
  return s;
}

/* Make sure the first need bytes of the table are in *table (*have
 * bytes read so far, max_len at most).  ERANGE when the table would run
 * past max_len. */
static int
grow (struct qcow2_image *q, uint8_t **table, uint64_t *have,
      uint64_t max_len, uint64_t table_off, uint64_t need)
{
  uint64_t want;
  uint8_t *t;

  if (need <= *have)
    return 0;
  if (need > max_len) {
    errno = ERANGE;
    return -1;
  }
  want = MIN (max_len, MAX (need, *have * 2));
  t = realloc (*table, want);
  if (!t)
    return -1;
  *table = t;
  if (vd_pread_full (q->fd, t + *have, want - *have, table_off + *have,
                     true) < 0)
    return -1;
  *have = want;
  return 0;
}

int
qcow2_read_snapshot_table (struct qcow2_image *q,
                           struct qcow2_snapshot **snaps_ret, size_t *n_ret,
                           uint8_t key[12])
{
  const char *path = q->img.path;
  uint8_t hdr[72];
  uint32_t nb, i;
  uint64_t table_off, file_size, pos, max_len, have, image_size;
  CLEANUP_FREE uint8_t *table = NULL;
  struct qcow2_snapshot *snaps = NULL;
  uint64_t l2_coverage = 1ULL << (q->cluster_bits + q->l2_bits);

  *snaps_ret = NULL;
  *n_ret = 0;

  /* Fresh header fields: size (24), nb_snapshots (60) and
   * snapshots_offset (64). */
  if (vd_pread_full (q->fd, hdr, sizeof hdr, 0, false) < 0) {
    vd_error ("qcow2: %s: cannot read the header: %m", path);
    return -1;
  }
  /* Snapshots without a recorded disk size have the image's. */
  image_size = load_be64 (hdr + 24);
  if (key)
    memcpy (key, hdr + 60, 12);
  nb = load_be32 (hdr + 60);
  table_off = load_be64 (hdr + 64);
  if (nb == 0)
    return 0;

  file_size = qcow2_file_size (q, false, true);
  if (nb > QCOW2_MAX_SNAPSHOTS || !IS_ALIGNED (table_off, q->cluster_size) ||
      table_off < q->cluster_size || table_off >= file_size) {
    vd_error ("qcow2: %s: snapshot table (offset %#" PRIx64 ", %" PRIu32
              " entries) invalid", path, table_off, nb);
    errno = EIO;
    return -1;
  }
  /* Entries have variable size: read a guess, and more as the parse
   * needs it, up to the table bound (or the end of the file). */
  max_len = MIN ((uint64_t) QCOW2_MAX_SNAPSHOT_TABLE, file_size - table_off);
  have = MIN (max_len, MAX ((uint64_t) 4096, (uint64_t) nb * 128));
  table = malloc (have);
  snaps = calloc (nb, sizeof *snaps);
  if (!table || !snaps) {
    free (snaps);
    return -1;
  }
  if (vd_pread_full (q->fd, table, have, table_off, true) < 0)
    goto read_error;

  pos = 0;
  for (i = 0; i < nb; i++) {
    struct qcow2_snapshot *sn = &snaps[i];
    const uint8_t *e;
    uint32_t extra, l1_size;
    uint16_t id_len, name_len;
    uint64_t len, l1_off;

    if (grow (q, &table, &have, max_len, table_off, pos + SN_FIXED) < 0)
      goto grow_error;
    e = table + pos;
    l1_off = load_be64 (e);
    l1_size = load_be32 (e + 8);
    id_len = load_be16 (e + 12);
    name_len = load_be16 (e + 14);
    extra = load_be32 (e + 36);
    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
      vd_error ("qcow2: %s: snapshot %" PRIu32 ": extra data size %" PRIu32
                " too big", path, i, extra);
      goto eio;
    }
    len = SN_FIXED + (uint64_t) extra + id_len + name_len;
    if (grow (q, &table, &have, max_len, table_off, pos + len) < 0)
      goto grow_error;
    e = table + pos;
    if (id_len == 0) {
      vd_error ("qcow2: %s: snapshot %" PRIu32 " has an empty id", path, i);
      goto eio;
    }
    if (memchr (e + SN_FIXED + extra, 0, id_len + name_len)) {
      vd_error ("qcow2: %s: snapshot %" PRIu32 ": NUL in id or name",
                path, i);
      goto eio;
    }
    if ((uint64_t) l1_size * 8 > QCOW2_MAX_L1_BYTES ||
        (l1_size > 0 &&
         (!IS_ALIGNED (l1_off, q->cluster_size) || l1_off < q->cluster_size ||
          l1_off > file_size || (uint64_t) l1_size * 8 > file_size - l1_off))) {
      vd_error ("qcow2: %s: snapshot %" PRIu32 ": L1 table (offset %#"
                PRIx64 ", %" PRIu32 " entries) invalid", path, i, l1_off,
                l1_size);
      goto eio;
    }
    sn->l1_offset = l1_off;
    sn->l1_size = l1_size;
    sn->date_sec = load_be32 (e + 16);
    sn->date_nsec = load_be32 (e + 20);
    sn->vm_clock_nsec = load_be64 (e + 24);
    sn->vm_state_size = load_be32 (e + 32);
    if (extra >= 8)
      sn->vm_state_size = load_be64 (e + SN_FIXED);
    sn->disk_size = image_size;
    if (extra >= 16)
      sn->disk_size = load_be64 (e + SN_FIXED + 8);
    if (sn->disk_size > INT64_MAX ||
        sn->disk_size / l2_coverage > QCOW2_MAX_L1_BYTES / 8) {
      vd_error ("qcow2: %s: snapshot %" PRIu32 ": absurd disk size %"
                PRIu64, path, i, sn->disk_size);
      goto eio;
    }
    sn->id = dup_counted (e + SN_FIXED + extra, id_len);
    sn->name = dup_counted (e + SN_FIXED + extra + id_len, name_len);
    if (!sn->id || !sn->name)
      goto fail;
    pos += ROUND_UP (len, 8);
  }
  *snaps_ret = snaps;
  *n_ret = nb;
  return 0;

 grow_error:
  if (errno != ERANGE)
    goto read_error;
  vd_error ("qcow2: %s: snapshot table truncated or larger than %u bytes "
            "(entry %" PRIu32 " of %" PRIu32 ")", path,
            QCOW2_MAX_SNAPSHOT_TABLE, i, nb);
  goto eio;
 read_error:
  if (errno != ENOMEM) {
    vd_error ("qcow2: %s: cannot read the snapshot table: %m", path);
    errno = EIO;
  }
  goto fail;
 eio:
  errno = EIO;
 fail:
  {
    int e = errno;
    qcow2_free_snapshot_table (snaps, nb);
    errno = e;
    return -1;
  }
}

/* Match the id first, then the name (as qemu-img snapshot does). */
const struct qcow2_snapshot *
qcow2_find_snapshot (const struct qcow2_snapshot *snaps, size_t n,
                     const char *id_or_name)
{
  size_t i;

  for (i = 0; i < n; i++)
    if (strcmp (snaps[i].id, id_or_name) == 0)
      return &snaps[i];
  for (i = 0; i < n; i++)
    if (strcmp (snaps[i].name, id_or_name) == 0)
      return &snaps[i];
  return NULL;
}

/* Test hook: how many times a table was parsed (tests/unit). */
unsigned long qcow2_snapshot_table_parses;      /* atomic */

/* Make q->sn_table current (see the header comment); q->sn_lock held. */
static int
table_current (struct qcow2_image *q)
{
  struct qcow2_snapshot *snaps;
  uint8_t key[12];
  size_t n;

  if (q->sn_loaded && !q->live)
    return 0;
  if (q->sn_loaded) {
    if (vd_pread_full (q->fd, key, sizeof key, 60, false) < 0) {
      vd_error ("qcow2: %s: cannot read the header: %m", q->img.path);
      errno = EIO;
      return -1;
    }
    if (memcmp (key, q->sn_key, sizeof key) == 0)
      return 0;
  }
  if (qcow2_read_snapshot_table (q, &snaps, &n, key) < 0)
    return -1;
  __atomic_add_fetch (&qcow2_snapshot_table_parses, 1, __ATOMIC_RELAXED);
  qcow2_free_snapshot_table (q->sn_table, q->sn_count);
  q->sn_table = snaps;
  q->sn_count = n;
  memcpy (q->sn_key, key, sizeof key);
  q->sn_loaded = true;
  return 0;
}

int
qcow2_list_snapshots (struct vd_image *img, struct vd_snapshot **ret,
                      size_t *n_ret)
{
  struct qcow2_image *q = (struct qcow2_image *) img;
  struct vd_snapshot *out;
  size_t n, i;

  pthread_mutex_lock (&q->sn_lock);
  if (table_current (q) < 0) {
    pthread_mutex_unlock (&q->sn_lock);
    return -1;
  }
  n = q->sn_count;
  out = calloc (n ? n : 1, sizeof *out);
  for (i = 0; out && i < n; i++) {
    const struct qcow2_snapshot *sn = &q->sn_table[i];

    out[i].id = strdup (sn->id);
    out[i].name = strdup (sn->name);
    if (!out[i].id || !out[i].name) {
      vd_snapshots_free (out, i + 1);
      out = NULL;
      break;
    }
    out[i].date_sec = sn->date_sec;
    out[i].date_nsec = sn->date_nsec;
    out[i].vm_clock_nsec = sn->vm_clock_nsec;
    out[i].disk_size = sn->disk_size;
    out[i].vm_state_size = sn->vm_state_size;
  }
  pthread_mutex_unlock (&q->sn_lock);
  if (!out)
    return -1;
  *ret = out;
  *n_ret = n;
  return 0;
}

struct vd_image *
qcow2_open_snapshot (struct vd_image *img, const char *id_or_name)
{
  struct qcow2_image *q = (struct qcow2_image *) img, *s;
  const struct qcow2_snapshot *found;
  struct qcow2_snapshot sn;
  struct vd_chain self = { 0 };
  struct stat st;
  mode_t modes = 0444;
  int fd;

  /* The entry, copied out of the parsed table (its strings are not
   * needed by the snapshot image). */
  pthread_mutex_lock (&q->sn_lock);
  if (table_current (q) < 0) {
    pthread_mutex_unlock (&q->sn_lock);
    return NULL;
  }
  found = qcow2_find_snapshot (q->sn_table, q->sn_count, id_or_name);
  if (found) {
    sn = *found;
    sn.id = sn.name = NULL;
  }
  pthread_mutex_unlock (&q->sn_lock);
  if (!found) {
    vd_debug ("qcow2: %s: no snapshot %s", img->path, id_or_name);
    errno = ENOENT;
    return NULL;
  }

  /* A dup shares the open file description, so the snapshot reads the
   * same file even if it was renamed since; pread ignores the shared file
   * position. */
  fd = fcntl (q->fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0 || fstat (fd, &st) < 0) {
    int e = errno;
    vd_error ("qcow2: %s: dup: %m", img->path);
    if (fd >= 0)
      close (fd);
    errno = e;
    return NULL;
  }
  self.next = NULL;
  self.dev = st.st_dev;
  self.ino = st.st_ino;
  self.depth = 0;
  self.path = img->path;
  self.policy = img->policy;
  self.uid = st.st_uid;
  self.gid = st.st_gid;
  modes = st.st_mode & 0444;
  self.modes = &modes;
  self.budget = q->budget;      /* a snapshot of the chain: its budget */
  errno = 0;
  /* Immutable while the snapshot exists: never LIVE. */
  s = qcow2_open_image (img->path, fd,
                        img->flags & ~(VD_OPEN_RDWR | VD_OPEN_LIVE), &self,
                        &sn);
  if (!s)
    return NULL;
  /* The files reopened for it (backing, data) may not be the ones the
   * image was opened with: their bits, not the image's. */
  s->img.read_mode = modes;
  return &s->img;
}
