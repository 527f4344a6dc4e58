/* vmdiskfs - snapshots of a whole libvirt domain (domsnap.h says what a
 * domain snapshot is made of and in which order it is made).
 *
 * The parts, and the tools that make them:
 *
 *   qcow2 disks, libvirt path  virDomainSnapshotCreateXML (all writable
 *                              disks are qcow2: libvirt accepts it)
 *   qcow2 disks, own path      shut off: `qemu-img snapshot -c NAME -f
 *                              qcow2 IMAGE` per disk; running: one QMP
 *                              "transaction" of
 *                              blockdev-snapshot-internal-sync actions,
 *                              node names from "query-block"; then the
 *                              libvirt snapshot is registered with
 *                              VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
 *   logical volumes            lvm_snapshotter.create (lvm.c)
 *
 * A sample of the QMP reply parsed here (query-block, qemu 7.2 under
 * libvirt 9.0, one element shown, others are alike or have no
 * "inserted": an empty cdrom):
 *
 *   {"return":[{"io-status":"ok","device":"","locked":false,
 *     "inserted":{"image":{...},"node-name":"libvirt-3-format",
 *                 "drv":"qcow2","file":"/var/lib/libvirt/images/a.qcow2",
 *                 ...},
 *     "qdev":"/machine/peripheral/virtio-disk0/virtio-backend",...}],
 *    "id":"libvirt-415"}
 *
 * and of a failed command: {"id":"libvirt-9","error":{"class":
 * "GenericError","desc":"Snapshot with name 's3' already exists"}}.
 * The reply comes from qemu, which runs the guest: untrusted bytes, read
 * by json.c.  Sending commands with virDomainQemuMonitorCommand
 * makes libvirt mark the domain "tainted: custom-monitor" in its log;
 * that is expected and harmless (libvirt does not know of the internal
 * snapshot until we redefine it).
 *
 * Whatever a failed ds_create made is undone before it returns (undo()):
 * the libvirt metadata, internal snapshot tags (QMP or qemu-img), LVM
 * snapshots; a domain it paused is resumed, frozen filesystems thawed.
 *
 * Threads: no state outside a call; libvirt errors are per thread.
 * ds_create and ds_delete of one domain exclude each other, across
 * threads and processes, by the flock of lock_domain (domsnap.h).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include "domsnap.h"
#include "domxml.h"
#include "json.h"
#include "snapshotter.h"
#include "vdformat.h"
#include "log.h"
#include "buf.h"
#include "cleanup.h"

extern char **environ;

#define BY_CLI "vmdisk-snapshot"
#define BY_MOUNT "vmdiskfs"
#define NAME_MAX_BYTES 200

/* ---- Names. ---- */

bool
ds_valid_name (const char *name)
{
  const unsigned char *p = (const unsigned char *) name;
  size_t len = strlen (name);
  bool digits = true;

  if (len == 0 || len > NAME_MAX_BYTES || name[0] == '-' || name[0] == '.')
    return false;
  while (*p) {
    unsigned c = *p, need, cp, min;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f || c == '/' || c == '"' || c == '\\')
        return false;
      if (c < '0' || c > '9')
        digits = false;
      p++;
      continue;
    }
    digits = false;
    if (c >= 0xc2 && c <= 0xdf)
      need = 1, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
      need = 2, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
      need = 3, cp = c & 0x07, min = 0x10000;
    else
      return false;
    p++;
    for (; need; need--, p++) {
      if ((*p & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (*p & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
        (cp >= 0x80 && cp <= 0x9f))       /* C1 controls */
      return false;
  }
  return !digits;
}

char *
ds_default_name (int64_t t)
{
  time_t tt = (time_t) t;
  struct tm tm;
  char buf[64];

  if (!localtime_r (&tt, &tm) ||
      strftime (buf, sizeof buf, "snap-%Y%m%d-%H%M%S", &tm) == 0) {
    errno = EINVAL;
    return NULL;
  }
  return strdup (buf);
}

/* A name an LV snapshot can carry (lvm.c: as part of the LV name, or in
 * the tag vmdiskfs-name:NAME): LVM's tag characters only. */
static bool
lvm_name_ok (const char *name)
{
  const char *p;

  if (strlen (name) + sizeof "vmdiskfs-name:" > 1024)
    return false;
  for (p = name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || strchr ("+_.-/=!:&#", *p)))
      return false;
  return true;
}

/* ---- libvirt errors. ---- */

static int
errno_of_code (int code)
{
  switch (code) {
  case VIR_ERR_NO_DOMAIN:
  case VIR_ERR_NO_DOMAIN_SNAPSHOT:
    return ENOENT;
  case VIR_ERR_OPERATION_INVALID:
    return EBUSY;
  case VIR_ERR_OPERATION_DENIED:
  case VIR_ERR_AUTH_FAILED:
  case VIR_ERR_ACCESS_DENIED:
    return EACCES;
  case VIR_ERR_NO_SUPPORT:
  case VIR_ERR_ARGUMENT_UNSUPPORTED:
  case VIR_ERR_CONFIG_UNSUPPORTED:
  case VIR_ERR_OPERATION_UNSUPPORTED:
    return ENOTSUP;
  case VIR_ERR_NO_MEMORY:
    return ENOMEM;
  default:
    return EIO;
  }
}

static int
last_code (void)
{
  virErrorPtr e = virGetLastError ();
  return e ? e->code : VIR_ERR_OK;
}

/* Log "domain D: WHAT: libvirt's message" and set errno from its code. */
static void lv_fail (const char *dname, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
lv_fail (const char *dname, const char *fmt, ...)
{
  CLEANUP_FREE char *what = NULL;
  int code = last_code ();
  va_list ap;

  va_start (ap, fmt);
  if (vasprintf (&what, fmt, ap) < 0)
    what = NULL;
  va_end (ap);
  vd_error ("domain %s: %s: %s", dname, what ? what : "libvirt",
            virGetLastErrorMessage ());
  errno = errno_of_code (code);
}

/* ---- Small helpers. ---- */

static long
env_seconds (const char *var, long dflt)
{
  const char *e = getenv (var);
  char *end;
  long v;

  if (!e || !*e)
    return dflt;
  errno = 0;
  v = strtol (e, &end, 10);
  return errno || *end || v < 0 ? dflt : v;
}

static void
sleep_ms (long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* ---- The cross-process lock. ---- */

/* Seconds to wait for another process's create or delete of the same
 * domain (VMDISKFS_DOMSNAP_LOCK_WAIT overrides it, for tests). */
#define LOCK_WAIT_SECONDS 600

struct dlock {
  int fd;                       /* the lock file; -1: not locked by it    */
  int dirfd;                    /* DS_LOCK_DIR, checked; -1: none         */
  bool mutexed;                 /* holds fallback_lock instead            */
  char name[VIR_UUID_STRING_BUFLEN + 8];         /* "<UUID>.lock"        */
  char path[sizeof DS_LOCK_DIR + VIR_UUID_STRING_BUFLEN + 8];
};

/* An unprivileged caller (no right to make or use root's DS_LOCK_DIR) is
 * still serialized with the other threads of its process, by this mutex:
 * callers (fs/ mkdir and rmdir) need no lock of their own. */
static pthread_mutex_t fallback_lock = PTHREAD_MUTEX_INITIALIZER;

static int
unlocked_fallback (struct dlock *lk)
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
 * go (unlock_domain), so that none pile up: a waiter that then gets the
 * lock of a file no longer at its name opens it anew.  0; or, for an
 * unprivileged caller without the directory, 0 holding fallback_lock
 * (a warning); or -1 (logged) with errno EBUSY after the wait, EACCES a
 * lock directory refused (open_lock_dir), ENOENT no such domain ... */
static int
lock_domain (virConnectPtr c, const char *dname, struct dlock *lk)
{
  char uuid[VIR_UUID_STRING_BUFLEN];
  virDomainPtr d;
  struct timespec t0, now;
  long wait = env_seconds ("VMDISKFS_DOMSNAP_LOCK_WAIT", LOCK_WAIT_SECONDS);
  bool said = false;
  struct stat sf, sp;
  int e;

  lk->fd = -1;
  lk->dirfd = -1;
  lk->mutexed = false;
  d = virDomainLookupByName (c, dname);
  if (!d) {
    lv_fail (dname, "lookup");
    return -1;
  }
  if (virDomainGetUUIDString (d, uuid) < 0) {
    lv_fail (dname, "UUID");
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
  clock_gettime (CLOCK_MONOTONIC, &t0);
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
    clock_gettime (CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec >= wait) {
      vd_error ("domain %s: another snapshot operation on it still runs "
                "after %ld s (%s is locked): given up", dname, wait,
                lk->path);
      e = EBUSY;
      goto fail;
    }
    if (!said) {
      vd_warn ("domain %s: waiting for another snapshot operation on it "
               "to finish (%s is locked)", dname, lk->path);
      said = true;
    }
    sleep_ms (100);
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

static void
unlock_domain (struct dlock *lk)
{
  if (lk->mutexed) {
    lk->mutexed = false;
    pthread_mutex_unlock (&fallback_lock);
  }
  if (lk->fd >= 0) {
    unlinkat (lk->dirfd, lk->name, 0);  /* before letting go: see
                                           lock_domain */
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
static void
hold_for_tests (const char *dname)
{
  const char *f = getenv ("VMDISKFS_DOMSNAP_HOLD");
  int i;

  if (!f || !*f)
    return;
  vd_warn ("domain %s: holding the lock while %s exists "
           "(VMDISKFS_DOMSNAP_HOLD)", dname, f);
  for (i = 0; i < 1200 && access (f, F_OK) == 0; i++)
    sleep_ms (100);
}

/* ---- XML and JSON text. ---- */

static void
buf_xml (struct vd_buf *b, const char *s)
{
  for (; *s; s++)
    switch (*s) {
    case '&': vd_buf_str (b, "&amp;"); break;
    case '<': vd_buf_str (b, "&lt;"); break;
    case '>': vd_buf_str (b, "&gt;"); break;
    case '\'': vd_buf_str (b, "&apos;"); break;
    case '"': vd_buf_str (b, "&quot;"); break;
    default: vd_buf_add (b, s, 1);
    }
}

/* A JSON string literal, quotes included. */
static void
buf_json (struct vd_buf *b, const char *s)
{
  vd_buf_str (b, "\"");
  for (; *s; s++) {
    unsigned char c = *s;
    if (c == '"' || c == '\\') {
      vd_buf_add (b, "\\", 1);
      vd_buf_add (b, s, 1);
    }
    else if (c < 0x20)
      vd_buf_fmt (b, "\\u%04x", c);
    else
      vd_buf_add (b, s, 1);
  }
  vd_buf_str (b, "\"");
}

/* ---- The domain and its disks. ---- */

enum dk_kind { DK_SKIP, DK_QCOW2, DK_LVM };

struct dk {
  const struct domxml_disk *x;
  const char *target;           /* x->target, or "?"                      */
  char *path;                   /* resolved source, NULL when none        */
  enum dk_kind kind;
  bool blocks_libvirt;          /* left out, and libvirt would refuse an
                                   internal snapshot because of it        */
  struct snap_info *lvsnaps;    /* DK_LVM: its snapshots now              */
  size_t nlvsnaps;
  char *node;                   /* QMP node name (running, own path)      */
  bool tag_made;                /* ds_create made its tag                 */
  bool lv_made;                 /* ds_create made lv                      */
  struct snap_info lv;
};

struct dom {
  virConnectPtr c;
  virDomainPtr d;
  const char *name;
  int state;                    /* VIR_DOMAIN_RUNNING ...                 */
  bool active;
  char *xml;
  struct domxml_disk *xd;
  size_t nxd;
  struct dk *dk;                /* nxd entries                            */
  size_t nqcow2, nlvm;
  bool blocked;                 /* some dk blocks_libvirt                 */
};

static void
dom_close (struct dom *m)
{
  size_t i;

  for (i = 0; m->dk && i < m->nxd; i++) {
    free (m->dk[i].path);
    free (m->dk[i].node);
    snap_list_free (m->dk[i].lvsnaps, m->dk[i].nlvsnaps);
    snap_info_clear (&m->dk[i].lv);
  }
  free (m->dk);
  domxml_disks_free (m->xd, m->nxd);
  free (m->xml);
  if (m->d)
    virDomainFree (m->d);
  memset (m, 0, sizeof *m);
}

char *
ds_volume_path (virConnectPtr c, const char *pool, const char *volume)
{
  virStoragePoolPtr p;
  virStorageVolPtr vol = NULL;
  char *path = NULL;

  p = virStoragePoolLookupByName (c, pool);
  if (p)
    vol = virStorageVolLookupByName (p, volume);
  if (vol)
    path = virStorageVolGetPath (vol);
  if (vol)
    virStorageVolFree (vol);
  if (p)
    virStoragePoolFree (p);
  return path;
}

/* The path of a type='volume' disk (NULL when it cannot be resolved:
 * logged). */
static char *
volume_path (struct dom *m, const struct domxml_disk *x)
{
  char *path;

  if (!x->pool || !x->volume)
    return NULL;
  path = ds_volume_path (m->c, x->pool, x->volume);
  if (!path)
    vd_error ("domain %s: disk %s: volume %s of pool %s: %s", m->name,
              x->target ? x->target : "?", x->volume, x->pool,
              virGetLastErrorMessage ());
  return path;
}

/* Look the domain up, read its XML (live when running) and classify its
 * disks.  strict (create): a disk that cannot be snapshotted and is not
 * marked snapshot='no' fails ENOTSUP (logged, with the advice); else such
 * disks are left out quietly.  0, or -1 with errno (logged). */
static int
dom_open (virConnectPtr c, const char *name, bool strict, struct dom *m)
{
  const char **lvpaths = NULL;
  size_t *lvidx = NULL, nlv = 0, i;
  struct snap_list *lists = NULL;
  int r = -1, reason;

  memset (m, 0, sizeof *m);
  m->c = c;
  m->name = name;
  m->d = virDomainLookupByName (c, name);
  if (!m->d) {
    lv_fail (name, "lookup");
    return -1;
  }
  if (virDomainGetState (m->d, &m->state, &reason, 0) < 0) {
    lv_fail (name, "state");
    goto out;
  }
  m->active = m->state != VIR_DOMAIN_SHUTOFF;
  m->xml = virDomainGetXMLDesc (m->d, 0);
  if (!m->xml) {
    lv_fail (name, "XML");
    goto out;
  }
  if (domxml_parse_domain (m->xml, strlen (m->xml), &m->xd, &m->nxd) < 0) {
    vd_error ("domain %s: its XML cannot be parsed", name);
    errno = EIO;
    goto out;
  }
  m->dk = calloc (m->nxd ? m->nxd : 1, sizeof *m->dk);
  lvpaths = calloc (m->nxd ? m->nxd : 1, sizeof *lvpaths);
  lvidx = calloc (m->nxd ? m->nxd : 1, sizeof *lvidx);
  if (!m->dk || !lvpaths || !lvidx) {
    errno = ENOMEM;
    goto out;
  }
  for (i = 0; i < m->nxd; i++) {
    const struct domxml_disk *x = &m->xd[i];
    struct dk *k = &m->dk[i];
    const char *type = x->type ? x->type : "file";
    bool has_source = x->source || x->volume || x->name;

    k->x = x;
    k->target = x->target ? x->target : "?";
    if ((x->device && strcmp (x->device, "disk") != 0) || x->readonly ||
        !has_source)
      continue;                 /* not written: nothing to snapshot */
    if (x->shareable || (x->snapshot && strcmp (x->snapshot, "no") == 0)) {
      k->blocks_libvirt = true;
      continue;
    }
    if (strcmp (type, "file") == 0 || strcmp (type, "block") == 0) {
      if (x->source && !(k->path = strdup (x->source))) {
        errno = ENOMEM;
        goto out;
      }
    }
    else if (strcmp (type, "volume") == 0) {
      k->path = volume_path (m, x);
      if (!k->path && strict) {   /* logged: pool inactive, no volume ... */
        errno = EIO;
        goto out;
      }
    }
    if (k->path && x->driver_type && strcmp (x->driver_type, "qcow2") == 0) {
      k->kind = DK_QCOW2;
      m->nqcow2++;
      continue;
    }
    if (k->path && (strcmp (type, "block") == 0 ||
                    strcmp (type, "volume") == 0) &&
        (!x->driver_type || strcmp (x->driver_type, "raw") == 0)) {
      lvidx[nlv] = i;
      lvpaths[nlv++] = k->path;
      continue;
    }
    k->blocks_libvirt = true;
    if (strict) {
      vd_error ("domain %s: disk %s (type %s, format %s%s%s) cannot be "
                "snapshotted: only qcow2 images and logical volumes can; "
                "mark it <disk ... snapshot='no'> to leave it out of "
                "snapshots", name, k->target, type,
                x->driver_type ? x->driver_type : "?",
                k->path ? ", " : "", k->path ? k->path : "");
      errno = ENOTSUP;
      goto out;
    }
  }

  /* One LVM question for every candidate. */
  if (nlv > 0) {
    lists = calloc (nlv, sizeof *lists);
    if (!lists) {
      errno = ENOMEM;
      goto out;
    }
    if (lvm_snapshotter.list_many (lvpaths, nlv, lists) < 0) {
      vd_error ("domain %s: LVM could not be asked about its block disks",
                name);
      free (lists);
      lists = NULL;
      goto out;
    }
    for (i = 0; i < nlv; i++) {
      struct dk *k = &m->dk[lvidx[i]];
      if (lists[i].err == 0) {
        k->kind = DK_LVM;
        k->lvsnaps = lists[i].snaps;
        k->nlvsnaps = lists[i].n;
        lists[i].snaps = NULL;
        lists[i].n = 0;
        m->nlvm++;
        continue;
      }
      k->blocks_libvirt = true;
      if (strict && lists[i].err == ENOTSUP) {
        vd_error ("domain %s: disk %s (%s) is neither a qcow2 image nor a "
                  "logical volume: it cannot be snapshotted; mark it "
                  "<disk ... snapshot='no'> to leave it out of snapshots",
                  name, k->target, k->path);
        errno = ENOTSUP;
        goto out;
      }
      if (strict) {
        vd_error ("domain %s: disk %s (%s): %s", name, k->target, k->path,
                  strerror (lists[i].err));
        errno = lists[i].err == ENOENT ? EIO : lists[i].err;
        goto out;
      }
    }
  }
  for (i = 0; i < m->nxd; i++)
    if (m->dk[i].blocks_libvirt)
      m->blocked = true;
  r = 0;

 out:
  if (lists) {
    for (i = 0; i < nlv; i++)
      snap_list_free (lists[i].snaps, lists[i].n);
    free (lists);
  }
  free (lvpaths);
  free (lvidx);
  if (r < 0) {
    int e = errno;
    dom_close (m);
    errno = e;
  }
  return r;
}

/* ---- qcow2 internal snapshot tags. ---- */

/* Does the image at path have an internal snapshot tagged name?  1, 0,
 * or -1 (logged by the formats library, or here). */
static int
tag_exists (const struct dom *m, const struct dk *k, const char *name)
{
  struct vd_image *img = vd_image_open (k->path, VD_OPEN_NO_BACKING);
  struct vd_snapshot *s = NULL;
  size_t n = 0, i;
  int r = 0;

  if (!img) {
    vd_error ("domain %s: disk %s: %s: cannot open it to read its "
              "snapshots: %m", m->name, k->target, k->path);
    errno = EIO;
    return -1;
  }
  if (vd_image_list_snapshots (img, &s, &n) < 0) {
    vd_error ("domain %s: disk %s: %s: cannot read its snapshots: %m",
              m->name, k->target, k->path);
    vd_image_close (img);
    errno = EIO;
    return -1;
  }
  for (i = 0; i < n; i++)
    if (s[i].name && strcmp (s[i].name, name) == 0)
      r = 1;
  vd_snapshots_free (s, n);
  vd_image_close (img);
  return r;
}

/* qemu-img gets this long (VMDISKFS_DOMSNAP_QEMU_IMG_TIMEOUT overrides
 * it, for tests): one stuck on a hung NFS server or a lock must not
 * hang mkdir forever. */
#define QEMU_IMG_TIMEOUT_SECONDS 300

/* Run qemu-img ARGV (no shell); its stderr goes to the log on failure.
 * Killed after QEMU_IMG_TIMEOUT_SECONDS.  0, or -1 with errno EIO, or
 * ETIMEDOUT when it was killed (logged, naming the domain and disk). */
static int
run_qemu_img (const struct dom *m, const struct dk *k, char *const argv[])
{
  posix_spawn_file_actions_t fa;
  int p[2], status, r;
  pid_t pid;
  char err[2048];
  size_t el = 0;
  CLEANUP_FREE char *cmd = NULL;
  struct vd_buf b = { 0 };
  size_t i;
  long limit = env_seconds ("VMDISKFS_DOMSNAP_QEMU_IMG_TIMEOUT",
                            QEMU_IMG_TIMEOUT_SECONDS);
  struct timespec t0, now;
  bool killed = false;

  for (i = 0; argv[i]; i++) {
    if (i)
      vd_buf_str (&b, " ");
    vd_buf_str (&b, argv[i]);
  }
  cmd = vd_buf_take (&b);
  if (!cmd)
    return -1;
  if (pipe2 (p, O_CLOEXEC) < 0) {
    vd_error ("domain %s: disk %s: pipe: %m", m->name, k->target);
    errno = EIO;
    return -1;
  }
  posix_spawn_file_actions_init (&fa);
  posix_spawn_file_actions_addopen (&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen (&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2 (&fa, p[1], 2);
#ifdef HAVE_POSIX_SPAWN_FILE_ACTIONS_ADDCLOSEFROM_NP
  /* Not the FUSE device nor images: a qemu-img left running must not
   * keep the mount or a file open. */
  posix_spawn_file_actions_addclosefrom_np (&fa, 3);
#endif
  r = posix_spawnp (&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy (&fa);
  close (p[1]);
  if (r != 0) {
    close (p[0]);
    vd_error ("domain %s: disk %s: %s: %s", m->name, k->target, cmd,
              strerror (r));
    errno = EIO;
    return -1;
  }
  clock_gettime (CLOCK_MONOTONIC, &t0);
  for (;;) {
    ssize_t n;
    char sink[512];
    struct pollfd pf = { .fd = p[0], .events = POLLIN };
    long left;

    clock_gettime (CLOCK_MONOTONIC, &now);
    left = (limit - (now.tv_sec - t0.tv_sec)) * 1000
      - (now.tv_nsec - t0.tv_nsec) / 1000000;
    if (left <= 0) {
      kill (pid, SIGKILL);
      killed = true;
      break;
    }
    n = poll (&pf, 1, left > 1000 ? 1000 : (int) left);
    if (n < 0 && errno != EINTR) {
      vd_error ("domain %s: disk %s: %s: poll: %m", m->name, k->target,
                cmd);
      kill (pid, SIGKILL);
      killed = true;
      break;
    }
    if (n <= 0)
      continue;
    if (el < sizeof err - 1)
      n = read (p[0], err + el, sizeof err - 1 - el);
    else
      n = read (p[0], sink, sizeof sink);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (el < sizeof err - 1)
      el += n;
  }
  close (p[0]);
  err[el] = '\0';
  while (el > 0 && err[el - 1] == '\n')
    err[--el] = '\0';
  /* Its stderr closed: it ends now, or is killed at the deadline all
   * the same. */
  for (;;) {
    pid_t w = waitpid (pid, &status, killed ? 0 : WNOHANG);
    if (w == pid)
      break;
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      vd_error ("domain %s: disk %s: %s: waitpid: %m", m->name, k->target,
                cmd);
      errno = EIO;
      return -1;
    }
    clock_gettime (CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec >= limit) {
      kill (pid, SIGKILL);
      killed = true;
    }
    else
      sleep_ms (20);
  }
  if (killed) {
    vd_error ("domain %s: disk %s: %s did not finish in %ld s: killed%s%s",
              m->name, k->target, cmd, limit, el ? ": " : "",
              el ? err : "");
    errno = ETIMEDOUT;
    return -1;
  }
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    vd_error ("domain %s: disk %s: %s failed (%s %d): %s", m->name,
              k->target, cmd, WIFEXITED (status) ? "status" : "signal",
              WIFEXITED (status) ? WEXITSTATUS (status) : WTERMSIG (status),
              el ? err : "no message");
    errno = EIO;
    return -1;
  }
  return 0;
}

/* qemu-img snapshot OP NAME on disk k, as qcow2 (the format libvirt
 * gives it, never probed): --image-opts, as `snapshot` has no -f. */
static int
qemu_img_snapshot (const struct dom *m, const struct dk *k, const char *op,
                   const char *name)
{
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *opts = NULL;
  const char *p;

  vd_buf_str (&b, "driver=qcow2,file.filename=");
  for (p = k->path; *p; p++)
    vd_buf_add (&b, p, *p == ',' ? 0 : 1), vd_buf_str (&b, *p == ',' ? ",," : "");
  opts = vd_buf_take (&b);
  if (!opts)
    return -1;
  {
    char *argv[] = { (char *) "qemu-img", (char *) "snapshot",
      (char *) "--image-opts", (char *) op, (char *) name, opts, NULL };
    return run_qemu_img (m, k, argv);
  }
}

/* ---- QMP. ---- */

/* Send cmd; *reply gets the parsed reply.  A reply with "error" fails
 * (logged with qemu's desc).  0, or -1 with errno. */
static int
qmp (const struct dom *m, const char *what, const char *cmd,
     struct vd_json *reply)
{
  char *res = NULL;
  const char *err;
  const struct vd_json *e;

  memset (reply, 0, sizeof *reply);
  vd_debug ("domain %s: QMP: %s", m->name, cmd);
  if (virDomainQemuMonitorCommand (m->d, cmd, &res, 0) < 0) {
    lv_fail (m->name, "%s (QMP)", what);
    return -1;
  }
  if (!res || vd_json_parse (res, strlen (res), reply, &err, NULL) < 0) {
    vd_error ("domain %s: %s: QMP reply not understood (%s)", m->name, what,
              res ? err : "empty");
    free (res);
    errno = EIO;
    return -1;
  }
  free (res);
  e = vd_json_get (reply, "error");
  if (e || !vd_json_get (reply, "return")) {
    const char *desc = vd_json_str (vd_json_get (e, "desc"));
    vd_error ("domain %s: %s: qemu says: %s", m->name, what,
              desc ? desc : "error (no description)");
    vd_json_free (reply);
    errno = EIO;
    return -1;
  }
  return 0;
}

static bool
same_file (const char *a, const char *b)
{
  struct stat sa, sb;

  if (strcmp (a, b) == 0)
    return true;
  return stat (a, &sa) == 0 && stat (b, &sb) == 0 &&
    sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino &&
    (sa.st_mode & S_IFMT) == (sb.st_mode & S_IFMT);
}

/* Fill dk[].node of every qcow2 disk (or of those with want[i] set) from
 * query-block: the device whose inserted "file" is the disk's path. */
static int
find_nodes (struct dom *m, const bool *want)
{
  struct vd_json reply;
  const struct vd_json *ret;
  size_t i, j;
  int r = 0;

  if (qmp (m, "query-block", "{\"execute\":\"query-block\"}", &reply) < 0)
    return -1;
  ret = vd_json_get (&reply, "return");
  for (i = 0; i < m->nxd; i++) {
    struct dk *k = &m->dk[i];
    if (want ? !want[i] : k->kind != DK_QCOW2)
      continue;
    free (k->node);
    k->node = NULL;
    for (j = 0; ret && ret->t == VD_JSON_ARR && j < ret->n; j++) {
      const struct vd_json *ins = vd_json_get (&ret->v[j], "inserted");
      const char *file = vd_json_str (vd_json_get (ins, "file"));
      const char *node = vd_json_str (vd_json_get (ins, "node-name"));
      const char *drv = vd_json_str (vd_json_get (ins, "drv"));
      if (file && node && *node && drv && strcmp (drv, "qcow2") == 0 &&
          same_file (file, k->path)) {
        k->node = strdup (node);
        if (!k->node) {
          errno = ENOMEM;
          r = -1;
        }
        break;
      }
    }
    if (!k->node && r == 0) {
      vd_error ("domain %s: disk %s: %s is not among qemu's block devices "
                "(query-block)", m->name, k->target, k->path);
      errno = EIO;
      r = -1;
    }
  }
  vd_json_free (&reply);
  return r;
}

static int
qmp_delete_tag (const struct dom *m, const struct dk *k, const char *name)
{
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *cmd = NULL, *what = NULL;
  struct vd_json reply;

  vd_buf_str (&b, "{\"execute\":\"blockdev-snapshot-delete-internal-sync\","
           "\"arguments\":{\"device\":");
  buf_json (&b, k->node);
  vd_buf_str (&b, ",\"name\":");
  buf_json (&b, name);
  vd_buf_str (&b, "}}");
  cmd = vd_buf_take (&b);
  if (!cmd || asprintf (&what, "disk %s: deleting internal snapshot %s",
                        k->target, name) < 0)
    return -1;
  if (qmp (m, what, cmd, &reply) < 0)
    return -1;
  vd_json_free (&reply);
  return 0;
}

/* One transaction: all qcow2 disks' tags at one point, or none. */
static int
qmp_create_tags (struct dom *m, const char *name)
{
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *cmd = NULL;
  struct vd_json reply;
  const char *sep = "";
  size_t i;

  vd_buf_str (&b, "{\"execute\":\"transaction\",\"arguments\":{\"actions\":[");
  for (i = 0; i < m->nxd; i++) {
    if (m->dk[i].kind != DK_QCOW2)
      continue;
    vd_buf_str (&b, sep);
    vd_buf_str (&b, "{\"type\":\"blockdev-snapshot-internal-sync\","
             "\"data\":{\"device\":");
    buf_json (&b, m->dk[i].node);
    vd_buf_str (&b, ",\"name\":");
    buf_json (&b, name);
    vd_buf_str (&b, "}}");
    sep = ",";
  }
  vd_buf_str (&b, "]}}");
  cmd = vd_buf_take (&b);
  if (!cmd)
    return -1;
  if (qmp (m, "internal snapshots of the qcow2 disks", cmd, &reply) < 0)
    return -1;
  vd_json_free (&reply);
  for (i = 0; i < m->nxd; i++)
    if (m->dk[i].kind == DK_QCOW2)
      m->dk[i].tag_made = true;
  return 0;
}

/* Delete the tag name of disk k however the domain runs now. */
static int
delete_tag (struct dom *m, struct dk *k, const char *name)
{
  if (m->active) {
    if (!k->node) {
      bool *want = calloc (m->nxd, sizeof *want);
      int r;
      if (!want)
        return -1;
      want[k - m->dk] = true;
      r = find_nodes (m, want);
      free (want);
      if (r < 0)
        return -1;
    }
    return qmp_delete_tag (m, k, name);
  }
  return qemu_img_snapshot (m, k, "-d", name);
}

/* ---- Create. ---- */

/* Tests make one step of ds_create fail to see that everything made
 * before it is undone: VMDISKFS_DOMSNAP_FAIL=lvm (after the LVM
 * snapshots), tags (after the own path's internal snapshots, before the
 * redefine), resume (everything made, before resuming). */
static bool
inject_failure (const char *dname, const char *step)
{
  const char *e = getenv ("VMDISKFS_DOMSNAP_FAIL");

  if (!e || strcmp (e, step) != 0)
    return false;
  vd_error ("domain %s: failing after step \"%s\" "
            "(VMDISKFS_DOMSNAP_FAIL)", dname, step);
  errno = EIO;
  return true;
}

/* Freeze and thaw the guest's filesystems through its agent.  The agent
 * answers only while the guest runs: freeze before pausing, thaw after
 * resuming.  Tests: VMDISKFS_DOMSNAP_FAKE_FREEZE=1 pretends the agent
 * froze them (no agent is asked, a warning says so) and checks, as an
 * agent would fail, that the domain runs when they are thawed. */
static bool
fake_freeze (void)
{
  const char *e = getenv ("VMDISKFS_DOMSNAP_FAKE_FREEZE");

  return e && strcmp (e, "1") == 0;
}

/* 0, or -1 with libvirt's error set (the caller warns). */
static int
fs_freeze (const struct dom *m)
{
  if (fake_freeze ()) {
    vd_warn ("domain %s: filesystems frozen (fake: "
             "VMDISKFS_DOMSNAP_FAKE_FREEZE, no agent asked)", m->name);
    return 0;
  }
  return virDomainFSFreeze (m->d, NULL, 0, 0) < 0 ? -1 : 0;
}

/* 0, or -1 (logged; when: "after snapshot NAME", "undo"). */
static int
fs_thaw (const struct dom *m, const char *when)
{
  int i;

  if (fake_freeze ()) {
    int st = VIR_DOMAIN_NOSTATE, reason;
    if (virDomainGetState (m->d, &st, &reason, 0) < 0 ||
        st != VIR_DOMAIN_RUNNING) {
      vd_error ("domain %s: %s: thawing its filesystems: the domain does "
                "not run (state %d): a guest agent could not answer "
                "(VMDISKFS_DOMSNAP_FAKE_FREEZE)", m->name, when, st);
      return -1;
    }
    vd_warn ("domain %s: filesystems thawed (fake: "
             "VMDISKFS_DOMSNAP_FAKE_FREEZE, no agent asked)", m->name);
    return 0;
  }
  /* A guest left frozen blocks every write in it: try thrice. */
  for (i = 0; virDomainFSThaw (m->d, NULL, 0, 0) < 0; i++) {
    if (i == 2) {
      lv_fail (m->name, "%s: thawing its filesystems (they may stay "
               "frozen: virsh domfsthaw %s)", when, m->name);
      return -1;
    }
    vd_warn ("domain %s: thawing its filesystems failed (%s), trying "
             "again", m->name, virGetLastErrorMessage ());
    sleep_ms (1000);
  }
  return 0;
}

struct create {
  struct dom m;
  const char *name;
  virDomainSnapshotPtr snap;    /* the libvirt part, once made            */
  bool snap_redefined;          /* made by redefine: metadata only        */
  bool paused, frozen;
};

static void
undo (struct create *cr)
{
  struct dom *m = &cr->m;
  size_t i;
  int e = errno;

  if (cr->snap) {
    /* A libvirt snapshot whose tags are missing cannot be deleted
     * whole: then its metadata at least. */
    if (virDomainSnapshotDelete (cr->snap, cr->snap_redefined
                                 ? VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
                                 : 0) < 0 &&
        (cr->snap_redefined ||
         virDomainSnapshotDelete (cr->snap,
                                  VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
         < 0))
      lv_fail (m->name, "undo: deleting snapshot %s", cr->name);
    virDomainSnapshotFree (cr->snap);
    cr->snap = NULL;
  }
  for (i = m->nxd; i-- > 0;) {
    struct dk *k = &m->dk[i];
    if (k->tag_made) {
      if (delete_tag (m, k, cr->name) < 0)
        vd_error ("domain %s: disk %s: undo: internal snapshot %s of %s "
                  "is left behind", m->name, k->target, cr->name, k->path);
      k->tag_made = false;
    }
    if (k->lv_made) {
      if (lvm_snapshotter.remove (&k->lv) < 0)
        vd_error ("domain %s: disk %s: undo: LVM snapshot %s is left "
                  "behind", m->name, k->target, k->lv.id);
      k->lv_made = false;
    }
  }
  if (cr->paused) {
    if (virDomainResume (m->d) < 0)
      lv_fail (m->name, "undo: resuming it");
    cr->paused = false;
  }
  if (cr->frozen) {
    fs_thaw (m, "undo");
    cr->frozen = false;
  }
  errno = e;
}

static char *
description (const struct ds_create_opts *opts)
{
  struct vd_buf b = { 0 };
  enum ds_by by = opts ? opts->by : DS_BY_OTHER;
  const char *more = opts ? opts->description : NULL;

  vd_buf_add (&b, "", 0);
  if (by == DS_BY_CLI)
    vd_buf_str (&b, BY_CLI);
  else if (by == DS_BY_MOUNT)
    vd_buf_str (&b, BY_MOUNT);
  if (more && *more) {
    if (b.len)
      vd_buf_str (&b, "\n");
    vd_buf_str (&b, more);
  }
  return vd_buf_take (&b);
}

/* The libvirt path: libvirt makes the internal snapshots itself. */
static int
create_libvirt (struct create *cr, const char *desc)
{
  struct dom *m = &cr->m;
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *xml = NULL;

  vd_buf_str (&b, "<domainsnapshot>\n  <name>");
  buf_xml (&b, cr->name);
  vd_buf_str (&b, "</name>\n");
  if (*desc) {
    vd_buf_str (&b, "  <description>");
    buf_xml (&b, desc);
    vd_buf_str (&b, "</description>\n");
  }
  vd_buf_str (&b, "</domainsnapshot>\n");
  xml = vd_buf_take (&b);
  if (!xml)
    return -1;
  cr->snap = virDomainSnapshotCreateXML (m->d, xml, 0);
  if (!cr->snap) {
    lv_fail (m->name, "creating snapshot %s", cr->name);
    return -1;
  }
  return 0;
}

/* May a shut-off domain's snapshot be redefined with state shutoff?
 * libvirt checks such a snapshot as one it would make itself: every disk
 * listed snapshot='no' must be 'no' in the definition too (marked so, or
 * read-only, which libvirt takes as 'no'; empty drives do not matter).
 * Else (a logical volume, a shareable disk) the state is disk-snapshot,
 * which libvirt does not check that way. */
static bool
offline_ok (const struct dom *m)
{
  size_t i;

  for (i = 0; i < m->nxd; i++) {
    const struct domxml_disk *x = m->dk[i].x;
    if (m->dk[i].kind == DK_QCOW2 || !x->target || x->readonly ||
        !(x->source || x->volume || x->name) ||
        (x->snapshot && strcmp (x->snapshot, "no") == 0))
      continue;
    return false;
  }
  return true;
}

/* The own path: tags by qemu-img or QMP, then the metadata. */
static int
create_own (struct create *cr, const char *desc)
{
  struct dom *m = &cr->m;
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *xml = NULL, *dxml = NULL, *parent = NULL;
  virDomainSnapshotPtr cur;
  time_t now = time (NULL);
  size_t i;

  /* The definition stored with it, as libvirt stores its own (secure
   * parts included: a revert needs them). */
  dxml = virDomainGetXMLDesc (m->d, VIR_DOMAIN_XML_SECURE);
  if (!dxml) {
    lv_fail (m->name, "XML");
    return -1;
  }
  cur = virDomainSnapshotCurrent (m->d, 0);
  if (cur) {
    const char *pn = virDomainSnapshotGetName (cur);
    parent = pn ? strdup (pn) : NULL;
    virDomainSnapshotFree (cur);
  }
  else if (last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT) {
    lv_fail (m->name, "current snapshot");
    return -1;
  }

  if (m->active) {
    if (find_nodes (m, NULL) < 0 || qmp_create_tags (m, cr->name) < 0)
      return -1;
  }
  else
    for (i = 0; i < m->nxd; i++) {
      struct dk *k = &m->dk[i];
      if (k->kind != DK_QCOW2)
        continue;
      if (qemu_img_snapshot (m, k, "-c", cr->name) < 0)
        return -1;
      k->tag_made = true;
    }
  if (inject_failure (m->name, "tags"))
    return -1;

  vd_buf_str (&b, "<domainsnapshot>\n  <name>");
  buf_xml (&b, cr->name);
  vd_buf_str (&b, "</name>\n");
  if (*desc) {
    vd_buf_str (&b, "  <description>");
    buf_xml (&b, desc);
    vd_buf_str (&b, "</description>\n");
  }
  vd_buf_fmt (&b, "  <state>%s</state>\n",
           m->active || !offline_ok (m) ? "disk-snapshot" : "shutoff");
  if (parent) {
    vd_buf_str (&b, "  <parent>\n    <name>");
    buf_xml (&b, parent);
    vd_buf_str (&b, "</name>\n  </parent>\n");
  }
  vd_buf_fmt (&b, "  <creationTime>%lld</creationTime>\n", (long long) now);
  vd_buf_str (&b, "  <memory snapshot='no'/>\n  <disks>\n");
  for (i = 0; i < m->nxd; i++) {
    if (!m->dk[i].x->target)
      continue;
    vd_buf_str (&b, "    <disk name='");
    buf_xml (&b, m->dk[i].x->target);
    vd_buf_fmt (&b, "' snapshot='%s'/>\n",
             m->dk[i].kind == DK_QCOW2 ? "internal" : "no");
  }
  vd_buf_str (&b, "  </disks>\n");
  vd_buf_str (&b, dxml);
  vd_buf_str (&b, "</domainsnapshot>\n");
  xml = vd_buf_take (&b);
  if (!xml)
    return -1;
  cr->snap = virDomainSnapshotCreateXML (m->d, xml,
                                         VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE |
                                         VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT);
  if (!cr->snap) {
    lv_fail (m->name, "registering snapshot %s with libvirt (redefine)",
             cr->name);
    return -1;
  }
  cr->snap_redefined = true;
  return 0;
}

int
ds_create (virConnectPtr c, const char *domain, const char *name,
           const struct ds_create_opts *opts, unsigned *done)
{
  struct create cr = { .name = name };
  struct dom *m = &cr.m;
  struct ds_create_opts none = { 0 };
  CLEANUP_FREE char *desc = NULL;
  virDomainSnapshotPtr old;
  unsigned dn = 0;
  bool own, memory;
  size_t i, j;
  struct dlock lock;
  int r = -1;

  if (done)
    *done = 0;
  if (!opts)
    opts = &none;
  if (!ds_valid_name (name)) {
    vd_error ("domain %s: \"%s\" is not possible as a snapshot name (1-200 "
              "bytes of UTF-8, no '/', '\"', '\\' or control characters, "
              "not starting with '-' or '.', not all digits)", domain, name);
    errno = EINVAL;
    return -1;
  }
  if (opts->cow_percent > 100) {
    vd_error ("domain %s: copy-on-write space of %u%%: at most 100",
              domain, opts->cow_percent);
    errno = EINVAL;
    return -1;
  }
  desc = description (opts);
  if (!desc)
    return -1;
  if (lock_domain (c, domain, &lock) < 0)
    return -1;
  hold_for_tests (domain);
  if (dom_open (c, domain, true, m) < 0) {
    int e = errno;
    unlock_domain (&lock);
    errno = e;
    return -1;
  }
  if (m->nqcow2 + m->nlvm == 0) {
    vd_error ("domain %s: no disk to snapshot (no qcow2 image or logical "
              "volume that is not left out)", domain);
    errno = ENOTSUP;
    goto out;
  }
  if (m->nlvm && !lvm_name_ok (name)) {
    vd_error ("domain %s: \"%s\" is not possible as the name of an LVM "
              "snapshot (letters, digits and +_.-=!:&# only)", domain, name);
    errno = EINVAL;
    goto out;
  }

  /* The name must be free everywhere. */
  old = virDomainSnapshotLookupByName (m->d, name, 0);
  if (old) {
    virDomainSnapshotFree (old);
    vd_error ("domain %s: snapshot %s exists already", domain, name);
    errno = EEXIST;
    goto out;
  }
  if (last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT) {
    lv_fail (domain, "looking up snapshot %s", name);
    goto out;
  }
  for (i = 0; i < m->nxd; i++) {
    struct dk *k = &m->dk[i];
    if (k->kind == DK_QCOW2) {
      int t = tag_exists (m, k, name);
      if (t < 0)
        goto out;
      if (t) {
        vd_error ("domain %s: disk %s (%s) has an internal snapshot %s "
                  "already (unknown to libvirt)", domain, k->target,
                  k->path, name);
        errno = EEXIST;
        goto out;
      }
    }
    for (j = 0; k->kind == DK_LVM && j < k->nlvsnaps; j++)
      if (strcmp (k->lvsnaps[j].name, name) == 0) {
        vd_error ("domain %s: disk %s (%s) has an LVM snapshot %s already "
                  "(%s)", domain, k->target, k->path, name,
                  k->lvsnaps[j].id);
        errno = EEXIST;
        goto out;
      }
  }

  /* libvirt makes it when every written disk is a qcow2 one; else our
   * own path (domsnap.h). */
  own = m->nqcow2 > 0 && (m->blocked || m->nlvm > 0);
  memory = m->nqcow2 > 0 && !own && m->active;

  /* Quiesce: backups read the disks only, so they must be consistent
   * themselves, VM state or not.  Frozen, the snapshot holds no VM state
   * (a guest saved frozen would come back frozen after a revert): a
   * running qcow2-only domain then takes the own path, disk-only.  No
   * agent: as without quiesce. */
  if (opts->quiesce && m->state == VIR_DOMAIN_RUNNING) {
    if (fs_freeze (m) < 0) {
      vd_warn ("domain %s: filesystems not frozen, the guest agent did "
               "not do it (%s): snapshot %s is only crash-consistent%s",
               domain, virGetLastErrorMessage (), name,
               memory ? " on its disks (it holds the VM state)" : "");
      dn |= DS_DONE_NO_AGENT;
    }
    else {
      cr.frozen = true;
      if (memory) {
        own = true;
        memory = false;
      }
    }
  }
  else if (opts->quiesce && m->active) {
    vd_warn ("domain %s: filesystems not frozen, the domain is paused or "
             "suspended (its guest agent cannot answer): snapshot %s is "
             "only crash-consistent", domain, name);
    dn |= DS_DONE_NO_AGENT;
  }
  else if (opts->quiesce) {
    vd_info ("domain %s: shut off: snapshot %s is consistent without "
             "freezing filesystems", domain, name);
    dn |= DS_DONE_NOT_NEEDED;
  }

  /* All disks at one point in time. */
  if (m->state == VIR_DOMAIN_RUNNING &&
      (own || (m->nlvm > 0 && m->nqcow2 + m->nlvm > 1))) {
    if (virDomainSuspend (m->d) < 0) {
      lv_fail (domain, "pausing it for snapshot %s", name);
      goto fail;
    }
    cr.paused = true;
    dn |= DS_DONE_PAUSED;
  }

  for (i = 0; i < m->nxd; i++) {
    struct dk *k = &m->dk[i];
    struct snap_create_opts lo = {
      .cow_bytes = opts->cow_bytes,
      .cow_percent = opts->cow_percent,
      .extra_tag = opts->by == DS_BY_CLI ? BY_CLI : NULL,
    };
    if (k->kind != DK_LVM)
      continue;
    if (lvm_snapshotter.create (k->path, name, &lo, &k->lv) < 0) {
      int e = errno;
      vd_error ("domain %s: disk %s (%s): LVM snapshot %s not made: %s",
                domain, k->target, k->path, name, strerror (e));
      errno = e == EEXIST || e == EINVAL || e == ENOTSUP ? e
        : e == ENOSPC ? ENOSPC : EIO;
      goto fail;
    }
    k->lv_made = true;
    dn |= DS_DONE_LVM;
  }
  if (inject_failure (domain, "lvm"))
    goto fail;

  if (m->nqcow2 > 0) {
    if ((own ? create_own (&cr, desc) : create_libvirt (&cr, desc)) < 0)
      goto fail;
    /* libvirt may say it made one and have qemu fail quietly (savevm
     * through the human monitor): every qcow2 disk must have the tag. */
    for (i = 0; i < m->nxd; i++) {
      int t;
      if (m->dk[i].kind != DK_QCOW2)
        continue;
      t = tag_exists (m, &m->dk[i], name);
      if (t < 0)
        goto fail;
      if (t == 0) {
        vd_error ("domain %s: disk %s (%s): no internal snapshot %s after "
                  "making it", domain, m->dk[i].target, m->dk[i].path,
                  name);
        errno = EIO;
        goto fail;
      }
    }
    dn |= DS_DONE_LIBVIRT;
    if (memory)
      dn |= DS_DONE_MEMORY;
  }

  if (inject_failure (domain, "resume"))
    goto fail;
  if (cr.paused) {
    if (virDomainResume (m->d) < 0) {
      lv_fail (domain, "resuming it after snapshot %s", name);
      goto fail;
    }
    cr.paused = false;
  }
  if (cr.frozen) {
    CLEANUP_FREE char *when = NULL;
    cr.frozen = false;
    if (asprintf (&when, "after snapshot %s (which is made)", name) < 0)
      when = NULL;
    if (fs_thaw (m, when ? when : "after the snapshot") == 0)
      dn |= DS_DONE_QUIESCED;
  }
  vd_info ("domain %s: snapshot %s made (%s%s%s%s)", domain, name,
           dn & DS_DONE_LIBVIRT ? (own ? "qcow2 by own path" : "qcow2 by "
                                   "libvirt") : "",
           dn & DS_DONE_LIBVIRT && dn & DS_DONE_LVM ? ", " : "",
           dn & DS_DONE_LVM ? "LVM" : "",
           dn & DS_DONE_MEMORY ? ", with VM state" : "");
  r = 0;
  goto out;

 fail:
  undo (&cr);
  dn &= DS_DONE_NO_AGENT | DS_DONE_NOT_NEEDED;
 out:
  {
    int e = errno;
    if (cr.snap)
      virDomainSnapshotFree (cr.snap);
    dom_close (m);
    unlock_domain (&lock);
    if (done)
      *done = dn;
    errno = e;
  }
  return r;
}

/* ---- Delete. ---- */

int
ds_delete (virConnectPtr c, const char *domain, const char *name)
{
  struct dom m;
  virDomainSnapshotPtr snap = NULL;
  struct domxml_snapshot sx = { 0 };
  bool *tagdisk = NULL, any_tag = false;
  size_t i, j, nlv = 0;
  struct dlock lock;
  int r = -1, e = 0;

  if (lock_domain (c, domain, &lock) < 0)
    return -1;
  hold_for_tests (domain);
  if (dom_open (c, domain, false, &m) < 0) {
    e = errno;
    unlock_domain (&lock);
    errno = e;
    return -1;
  }
  tagdisk = calloc (m.nxd ? m.nxd : 1, sizeof *tagdisk);
  if (!tagdisk) {
    errno = ENOMEM;
    goto out;
  }

  snap = virDomainSnapshotLookupByName (m.d, name, 0);
  if (!snap && last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT) {
    lv_fail (domain, "looking up snapshot %s", name);
    goto out;
  }
  if (snap) {
    CLEANUP_FREE char *xml = virDomainSnapshotGetXMLDesc (snap, 0);
    if (!xml) {
      lv_fail (domain, "snapshot %s: XML", name);
      goto out;
    }
    if (domxml_parse_snapshot (xml, strlen (xml), &sx) < 0) {
      vd_error ("domain %s: snapshot %s: its XML cannot be parsed", domain,
                name);
      errno = EIO;
      goto out;
    }
    /* The qcow2 disks whose tags go with it: by target among today's
     * disks (where libvirt looks for them too). */
    for (i = 0; i < sx.nsnapdisks; i++) {
      const struct domxml_disk *sd = &sx.snapdisks[i];
      if (!sd->snapshot || strcmp (sd->snapshot, "internal") != 0 ||
          !sd->target)
        continue;
      for (j = 0; j < m.nxd; j++)
        if (m.dk[j].kind == DK_QCOW2 &&
            strcmp (m.dk[j].target, sd->target) == 0)
          break;
      if (j == m.nxd) {
        vd_warn ("domain %s: snapshot %s: its disk %s is no qcow2 disk of "
                 "the domain now: its internal snapshot is not looked for",
                 domain, name, sd->target);
        continue;
      }
      tagdisk[j] = true;
      any_tag = true;
    }
  }
  for (i = 0; i < m.nxd; i++)
    for (j = 0; m.dk[i].kind == DK_LVM && j < m.dk[i].nlvsnaps; j++)
      if (strcmp (m.dk[i].lvsnaps[j].name, name) == 0)
        nlv++;

  if (!snap && nlv == 0) {
    for (i = 0; i < m.nxd; i++) {
      int t;
      if (m.dk[i].kind != DK_QCOW2)
        continue;
      t = tag_exists (&m, &m.dk[i], name);
      if (t < 0)
        goto out;
      if (t) {
        vd_error ("domain %s: snapshot %s exists only as an internal "
                  "snapshot of disk %s (%s), unknown to libvirt: not "
                  "deleted (use qemu-img snapshot -d)", domain, name,
                  m.dk[i].target, m.dk[i].path);
        errno = ENOTSUP;
        goto out;
      }
    }
    vd_error ("domain %s: no snapshot %s", domain, name);
    errno = ENOENT;
    goto out;
  }

  /* Every part found before anything goes: a running domain's tags are
   * deleted through qemu, by node name. */
  if (m.active && any_tag && find_nodes (&m, tagdisk) < 0)
    goto out;

  for (i = 0; i < m.nxd; i++)
    for (j = 0; m.dk[i].kind == DK_LVM && j < m.dk[i].nlvsnaps; j++) {
      const struct snap_info *s = &m.dk[i].lvsnaps[j];
      if (strcmp (s->name, name) != 0)
        continue;
      if (lvm_snapshotter.remove (s) < 0) {
        int le = errno;
        vd_error ("domain %s: disk %s: LVM snapshot %s (%s) not deleted: "
                  "%s", domain, m.dk[i].target, name, s->id, strerror (le));
        if (!e)
          e = le == ENOSPC ? ENOSPC : le == EACCES ? EACCES : EIO;
      }
    }
  if (e) {
    errno = e;
    goto out;
  }

  if (snap) {
    if (virDomainSnapshotDelete (snap, 0) < 0) {
      lv_fail (domain, "deleting snapshot %s", name);
      goto out;
    }
    /* libvirt deletes the tags of snapshots it made; of one redefined
     * while running (state disk-snapshot) only the metadata. */
    for (i = 0; i < m.nxd; i++) {
      int t;
      if (!tagdisk[i])
        continue;
      t = tag_exists (&m, &m.dk[i], name);
      if (t > 0) {
        vd_debug ("domain %s: disk %s: deleting internal snapshot %s",
                  domain, m.dk[i].target, name);
        if (delete_tag (&m, &m.dk[i], name) < 0)
          t = -1;
        else if ((t = tag_exists (&m, &m.dk[i], name)) > 0) {
          vd_error ("domain %s: disk %s (%s): internal snapshot %s is "
                    "still there after deleting it", domain, m.dk[i].target,
                    m.dk[i].path, name);
          t = -1;
        }
      }
      if (t < 0 && !e)
        e = EIO;
    }
    if (e) {
      errno = e;
      goto out;
    }
  }
  vd_info ("domain %s: snapshot %s deleted", domain, name);
  r = 0;

 out:
  e = errno;
  if (snap)
    virDomainSnapshotFree (snap);
  domxml_snapshot_clear (&sx);
  free (tagdisk);
  dom_close (&m);
  unlock_domain (&lock);
  errno = e;
  return r;
}

/* ---- List. ---- */

static enum ds_by
by_of_description (const char *d)
{
  size_t l;

  if (!d)
    return DS_BY_OTHER;
  l = strcspn (d, "\n");
  if (l == strlen (BY_CLI) && memcmp (d, BY_CLI, l) == 0)
    return DS_BY_CLI;
  if (l == strlen (BY_MOUNT) && memcmp (d, BY_MOUNT, l) == 0)
    return DS_BY_MOUNT;
  return DS_BY_OTHER;
}

static int
cmp_ds (const void *a, const void *b)
{
  const struct ds_snap *x = a, *y = b;

  if (x->ctime != y->ctime)
    return x->ctime < y->ctime ? -1 : 1;
  return strcmp (x->name, y->name);
}

void
ds_list_free (struct ds_snap *v, size_t n)
{
  size_t i;

  for (i = 0; v && i < n; i++) {
    free (v[i].name);
    free (v[i].state);
  }
  free (v);
}

/* The entry called name, added when missing. */
static struct ds_snap *
entry (struct ds_snap **v, size_t *n, size_t *cap, const char *name)
{
  size_t i;

  for (i = 0; i < *n; i++)
    if (strcmp ((*v)[i].name, name) == 0)
      return &(*v)[i];
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 8;
    struct ds_snap *t = realloc (*v, nc * sizeof *t);
    if (!t)
      return NULL;
    *v = t;
    *cap = nc;
  }
  memset (&(*v)[*n], 0, sizeof **v);
  (*v)[*n].name = strdup (name);
  if (!(*v)[*n].name)
    return NULL;
  return &(*v)[(*n)++];
}

int
ds_list (virConnectPtr c, const char *domain, struct ds_snap **out,
         size_t *nout)
{
  struct dom m;
  virDomainSnapshotPtr *snaps = NULL;
  struct ds_snap *v = NULL;
  size_t n = 0, cap = 0, i, j;
  int ns = 0, r = -1, e;

  *out = NULL;
  *nout = 0;
  if (dom_open (c, domain, false, &m) < 0)
    return -1;
  ns = virDomainListAllSnapshots (m.d, &snaps, 0);
  if (ns < 0) {
    lv_fail (domain, "listing snapshots");
    goto out;
  }
  for (i = 0; i < (size_t) ns; i++) {
    const char *name = virDomainSnapshotGetName (snaps[i]);
    CLEANUP_FREE char *xml = NULL;
    struct domxml_snapshot sx;
    struct ds_snap *s;

    if (!name) {
      lv_fail (domain, "snapshot name");
      goto out;
    }
    xml = virDomainSnapshotGetXMLDesc (snaps[i], 0);
    if (!xml) {
      if (last_code () == VIR_ERR_NO_DOMAIN_SNAPSHOT)
        continue;               /* deleted meanwhile */
      lv_fail (domain, "snapshot %s: XML", name);
      goto out;
    }
    if (domxml_parse_snapshot (xml, strlen (xml), &sx) < 0) {
      vd_error ("domain %s: snapshot %s: its XML cannot be parsed", domain,
                name);
      errno = EIO;
      goto out;
    }
    s = entry (&v, &n, &cap, name);
    if (!s) {
      domxml_snapshot_clear (&sx);
      errno = ENOMEM;
      goto out;
    }
    s->flags |= DS_LIBVIRT;
    s->ctime = sx.creation_time;
    s->by = by_of_description (sx.description);
    s->state = sx.state;
    sx.state = NULL;
    if (virDomainSnapshotIsCurrent (snaps[i], 0) == 1)
      s->flags |= DS_CURRENT;
    domxml_snapshot_clear (&sx);
  }
  for (i = 0; i < m.nxd; i++)
    for (j = 0; m.dk[i].kind == DK_LVM && j < m.dk[i].nlvsnaps; j++) {
      const struct snap_info *si = &m.dk[i].lvsnaps[j];
      struct ds_snap *s = entry (&v, &n, &cap, si->name);
      enum ds_by by = si->flags & SNAP_TAG_CLI ? DS_BY_CLI
        : si->flags & SNAP_OURS ? DS_BY_MOUNT : DS_BY_OTHER;
      if (!s) {
        errno = ENOMEM;
        goto out;
      }
      if (!(s->flags & DS_LIBVIRT) &&
          (s->nlv == 0 || si->ctime_sec < s->ctime))
        s->ctime = si->ctime_sec;
      if (s->by == DS_BY_OTHER)
        s->by = by;
      s->flags |= DS_LVM;
      s->nlv++;
    }
  if (n > 1)
    qsort (v, n, sizeof *v, cmp_ds);
  *out = v;
  *nout = n;
  v = NULL;
  r = 0;

 out:
  e = errno;
  for (i = 0; snaps && i < (size_t) ns; i++)
    virDomainSnapshotFree (snaps[i]);
  free (snaps);
  ds_list_free (v, n);
  dom_close (&m);
  errno = e;
  return r;
}
