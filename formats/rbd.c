/* vmdiskfs - the rbd network disk driver (netdisk.h): a Ceph RBD image,
 * or one of its snapshots, through librbd and librados.
 *
 * Connections.  One rados cluster handle per (config file, mon_host,
 * client id, key, timeout) is shared by every image of the process that
 * names the same cluster the same way (librados starts a dozen threads
 * per handle): a refcounted list under conn_lock.  A connect happens
 * outside the lock (it may wait for the timeout), so a cluster that does
 * not answer holds up no other disk.  Options set on every handle:
 * the timeouts (client_mount_timeout, rados_mon_op_timeout,
 * rados_osd_op_timeout = src->timeout_s), no log file, nothing on stderr
 * and no admin socket (a test's ceph.conf may name one per client name,
 * which two processes would fight over); without a key and without a
 * readable keyring, auth_client_required = none, so that a cluster
 * running with auth none is reached without one.  librados reconnects to
 * the monitors by itself; an OSD that does not answer fails the request
 * (ETIMEDOUT from librados, EIO here) after the timeout.
 *
 * Reads and writes: the request is cut into 1 MiB pieces, up to
 * RBD_INFLIGHT of them in flight at once with rbd_aio_read/write (a
 * 1 MiB request is one piece; several requests of one image come from
 * several threads: librbd is thread-safe).  Zeros (VD_OPEN_RDWR) go to
 * rbd_aio_write_zeroes, which librbd turns into discards of whole
 * objects and zeroing of partial ones, so what was zeroed reads as zeros
 * and takes no space (zero_align 4096).
 *
 * block_status: rbd_diff_iterate2 from the beginning of time (NULL from
 * snapshot, the parent included) gives the extents that exist: DATA,
 * and what it does not report is a HOLE.  A partly discarded object is
 * reported as existing, so DATA means "may hold data" only.  The answer
 * is asked per window of BS_WINDOW_OBJECTS objects and cached: up to
 * BS_WINDOWS windows per image (least recently used replaced), each up
 * to BS_MAX_EXTENTS extents (beyond that the gaps are counted as data).
 * A snapshot never changes: its windows stay valid while it is open.  The
 * image itself may be written by its VM: its windows are asked again
 * after BS_TTL_NS (1 s), at every call with VD_OPEN_LIVE, and are
 * dropped by our own writes.
 *
 * Threads: read, block_status, list_snapshots and open_snapshot run
 * concurrently; librbd serializes what it needs; bs_lock protects the
 * window cache (never held across a librbd call).  format.c serializes
 * writers against readers.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "netdisk.h"
#include "log.h"
#include "cleanup.h"

#define RBD_PIECE          (1U << 20)       /* one aio request           */
#define RBD_ZERO_PIECE     (64U << 20)      /* one write_zeroes request  */
#define RBD_INFLIGHT       16               /* per call                  */
#define BS_WINDOWS         8
#define BS_WINDOW_OBJECTS  64
#define BS_MAX_EXTENTS     1024
#define BS_MAX_CALLS       64               /* windows per block_status  */
#define BS_TTL_NS          1000000000ULL

/* ---- Cluster connections ---- */

struct rbd_conn {
  struct rbd_conn *next;
  char *config;             /* NULL: ceph's search                    */
  char *mon_host;           /* NULL: from the config                  */
  char *user;
  char *secret;             /* NULL: a keyring, or no auth            */
  unsigned timeout_s;
  rados_t cluster;
  unsigned refs;            /* conn_lock                              */
};

static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rbd_conn *conns;          /* conn_lock */

static bool
str_eq (const char *a, const char *b)
{
  return a == b || (a && b && strcmp (a, b) == 0);
}

/* errno for a librados/librbd error (negative) at open time. */
static int
open_errno (int r)
{
  switch (-r) {
  case ENOENT: return ENOENT;
  case EACCES: case EPERM: return EACCES;
  case ENOMEM: return ENOMEM;
  default: return EIO;
  }
}

/* mon_host for src's hosts: "HOST[:PORT],...", v6 addresses in
 * brackets, as qemu passes them; NULL (and *err false) when there are
 * none.  A bare HOST:PORT reaches a monitor's v1 or v2 port (ceph tries
 * both protocols), but while it hunts between the two a refused key
 * looks like no answer until the timeout; a config file may name the
 * protocol (v1:HOST:PORT), which refuses a bad key at once. */
static char *
mon_host_string (const struct vd_netsrc *src, bool *err)
{
  size_t i, len = 1;
  char *s, *p;

  *err = false;
  if (src->nhosts == 0)
    return NULL;
  for (i = 0; i < src->nhosts; i++)
    len += (src->hosts[i].name ? strlen (src->hosts[i].name) : 0)
      + (src->hosts[i].port ? strlen (src->hosts[i].port) : 0) + 4;
  if ((s = p = malloc (len)) == NULL) {
    *err = true;
    return NULL;
  }
  *p = '\0';
  for (i = 0; i < src->nhosts; i++) {
    const char *n = src->hosts[i].name ? src->hosts[i].name : "";
    const char *port = src->hosts[i].port;
    bool v6 = strchr (n, ':') && n[0] != '[';

    p += sprintf (p, "%s%s%s%s%s%s", i ? "," : "", v6 ? "[" : "", n,
                  v6 ? "]" : "", port ? ":" : "", port ? port : "");
  }
  return s;
}

/* Is there a keyring (or key file) the config names that we can read? */
static bool
have_keyring (rados_t cl)
{
  char buf[4096], *save = NULL, *tok;

  if (rados_conf_get (cl, "key", buf, sizeof buf) == 0 && buf[0])
    return true;
  if (rados_conf_get (cl, "keyfile", buf, sizeof buf) == 0 && buf[0]
      && access (buf, R_OK) == 0)
    return true;
  if (rados_conf_get (cl, "keyring", buf, sizeof buf) < 0)
    return false;
  for (tok = strtok_r (buf, ",; \t", &save); tok;
       tok = strtok_r (NULL, ",; \t", &save))
    if (access (tok, R_OK) == 0)
      return true;
  return false;
}

static void
conn_free (struct rbd_conn *c)
{
  free (c->config);
  free (c->mon_host);
  free (c->user);
  free (c->secret);
  free (c);
}

/* A new connected handle for c's identity.  0, or -1 with errno after a
 * log line naming desc. */
static int
conn_connect (struct rbd_conn *c, const char *desc)
{
  char tmo[16];
  bool no_auth = false;
  int r;

  r = rados_create (&c->cluster, c->user);
  if (r < 0) {
    vd_error ("%s: rados_create: %s", desc, strerror (-r));
    errno = open_errno (r);
    return -1;
  }
  if (c->config) {
    r = rados_conf_read_file (c->cluster, c->config);
    if (r < 0) {
      vd_error ("%s: reading ceph config %s: %s", desc, c->config,
                strerror (-r));
      goto fail;
    }
  }
  else
    /* ceph's own search ($CEPH_CONF, /etc/ceph/ceph.conf ...); none
     * found is fine when mon_host is given. */
    (void) rados_conf_read_file (c->cluster, NULL);
  snprintf (tmo, sizeof tmo, "%u", c->timeout_s);
  if ((r = rados_conf_set (c->cluster, "log_file", "")) < 0
      || (r = rados_conf_set (c->cluster, "log_to_stderr", "false")) < 0
      || (r = rados_conf_set (c->cluster, "err_to_stderr", "false")) < 0
      || (r = rados_conf_set (c->cluster, "admin_socket", "")) < 0
      || (r = rados_conf_set (c->cluster, "client_mount_timeout", tmo)) < 0
      || (r = rados_conf_set (c->cluster, "rados_mon_op_timeout", tmo)) < 0
      || (r = rados_conf_set (c->cluster, "rados_osd_op_timeout", tmo)) < 0
      || (c->mon_host
          && (r = rados_conf_set (c->cluster, "mon_host", c->mon_host)) < 0)) {
    vd_error ("%s: setting ceph options: %s", desc, strerror (-r));
    goto fail;
  }
  if (c->secret) {
    if ((r = rados_conf_set (c->cluster, "key", c->secret)) < 0) {
      /* Never the key itself in the log. */
      vd_error ("%s: the ceph key of client.%s is not valid: %s", desc,
                c->user, strerror (-r));
      goto fail;
    }
  }
  else if (!have_keyring (c->cluster)) {
    /* No key anywhere: ask for no authentication rather than fail
     * looking for a keyring (a cluster with auth none). */
    (void) rados_conf_set (c->cluster, "auth_client_required", "none");
    no_auth = true;
  }
  r = rados_connect (c->cluster);
  if (r < 0) {
    if (no_auth && r == -EOPNOTSUPP) {
      vd_error ("%s: the ceph cluster demands authentication and there is "
                "no key for client.%s (none given, no keyring)", desc,
                c->user);
      r = -EACCES;
    }
    else if (r == -ETIMEDOUT)
      vd_error ("%s: no answer from the ceph monitors within %u s%s", desc,
                c->timeout_s, c->secret ? " (or a refused key)" : "");
    else
      vd_error ("%s: connecting to ceph as client.%s: %s", desc, c->user,
                strerror (-r));
    goto fail;
  }
  return 0;

 fail:
  rados_shutdown (c->cluster);
  errno = open_errno (r);
  return -1;
}

/* A connected handle for src, shared.  NULL with errno (logged). */
static struct rbd_conn *
conn_get (const struct vd_netsrc *src, const char *desc)
{
  struct rbd_conn *c, *o;
  const char *user = src->user && *src->user ? src->user : "admin";
  bool err;

  if (strncmp (user, "client.", 7) == 0)
    user += 7;
  c = calloc (1, sizeof *c);
  if (!c)
    return NULL;
  c->timeout_s = src->timeout_s ? src->timeout_s : VD_NET_TIMEOUT_S;
  c->mon_host = mon_host_string (src, &err);
  if (err || (src->config && (c->config = strdup (src->config)) == NULL)
      || (c->user = strdup (user)) == NULL
      || (src->secret && (c->secret = strdup (src->secret)) == NULL)) {
    conn_free (c);
    errno = ENOMEM;
    return NULL;
  }
  c->refs = 1;

  pthread_mutex_lock (&conn_lock);
  for (o = conns; o; o = o->next)
    if (str_eq (o->config, c->config) && str_eq (o->mon_host, c->mon_host)
        && str_eq (o->user, c->user) && str_eq (o->secret, c->secret)
        && o->timeout_s == c->timeout_s) {
      o->refs++;
      pthread_mutex_unlock (&conn_lock);
      conn_free (c);
      return o;
    }
  pthread_mutex_unlock (&conn_lock);

  if (conn_connect (c, desc) < 0) {
    int e = errno;
    conn_free (c);
    errno = e;
    return NULL;
  }

  pthread_mutex_lock (&conn_lock);
  /* Another thread may have connected the same meanwhile: use one. */
  for (o = conns; o; o = o->next)
    if (str_eq (o->config, c->config) && str_eq (o->mon_host, c->mon_host)
        && str_eq (o->user, c->user) && str_eq (o->secret, c->secret)
        && o->timeout_s == c->timeout_s)
      break;
  if (o) {
    o->refs++;
    pthread_mutex_unlock (&conn_lock);
    rados_shutdown (c->cluster);
    conn_free (c);
    return o;
  }
  c->next = conns;
  conns = c;
  pthread_mutex_unlock (&conn_lock);
  return c;
}

static void
conn_put (struct rbd_conn *c)
{
  struct rbd_conn **pp;
  bool last;

  pthread_mutex_lock (&conn_lock);
  last = --c->refs == 0;
  if (last)
    for (pp = &conns; *pp; pp = &(*pp)->next)
      if (*pp == c) {
        *pp = c->next;
        break;
      }
  pthread_mutex_unlock (&conn_lock);
  if (last) {
    rados_shutdown (c->cluster);
    conn_free (c);
  }
}

/* ---- Images ---- */

struct bs_ext {
  uint64_t start, end;
};

/* One cached window of block status: the existing extents of
 * [start, end), sorted, merged. */
struct bs_window {
  bool valid;
  uint64_t start, end;
  uint64_t stamp;           /* CLOCK_MONOTONIC ns when asked          */
  uint64_t used;            /* LRU tick                               */
  size_t n;
  struct bs_ext *ext;
};

struct rbd_img {
  struct vd_image img;
  struct rbd_conn *conn;
  rados_ioctx_t io;
  rbd_image_t image;
  char *spec;               /* "POOL/[NS/]IMAGE" (src->name)          */
  char *pool, *nspace, *name;
  char *snap;               /* opened at this snapshot; NULL: head    */
  uint64_t obj_size;
  bool plain_layout;        /* no fancy striping: object i holds the
                               bytes [i * obj_size, (i + 1) * obj_size) */
  uint64_t window;          /* bytes per block-status window          */
  /* The run of consecutive zero calls so far (writers only: format.c
   * holds img.rw for writing around write and zero). */
  uint64_t zrun_start, zrun_end;
  uint64_t ttl;             /* ns a window stays valid (UINT64_MAX)   */
  pthread_mutex_t bs_lock;
  struct bs_window bs[BS_WINDOWS];      /* bs_lock */
  uint64_t bs_tick;                     /* bs_lock */
};

static const struct vd_format rbd_format;

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

/* Split "POOL/IMAGE" or "POOL/NAMESPACE/IMAGE".  0 or -1 (EINVAL after
 * a log line, ENOMEM). */
static int
split_spec (const char *spec, const char *desc, char **pool, char **ns,
            char **name)
{
  const char *s1 = strchr (spec, '/'), *s2 = strrchr (spec, '/');

  *pool = *ns = *name = NULL;
  if (!s1 || s1 == spec || !s2[1]) {
    vd_error ("%s: expected an rbd name POOL/IMAGE or POOL/NAMESPACE/IMAGE",
              desc);
    errno = EINVAL;
    return -1;
  }
  if ((*pool = strndup (spec, s1 - spec)) == NULL
      || (s2 > s1 + 1 && (*ns = strndup (s1 + 1, s2 - s1 - 1)) == NULL)
      || (*name = strdup (s2 + 1)) == NULL) {
    free (*pool);
    free (*ns);
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

static void
rbdi_free (struct rbd_img *r)
{
  size_t i;

  if (r->image)
    rbd_close (r->image);
  if (r->io)
    rados_ioctx_destroy (r->io);
  if (r->conn)
    conn_put (r->conn);
  for (i = 0; i < BS_WINDOWS; i++)
    free (r->bs[i].ext);
  pthread_mutex_destroy (&r->bs_lock);
  free (r->spec);
  free (r->pool);
  free (r->nspace);
  free (r->name);
  free (r->snap);
  free (r->img.path);
  free (r);
}

/* Open pool/[ns/]name (at snapshot snap when not NULL) on conn (whose
 * reference the new image takes, also on failure).  NULL with errno
 * after a log line naming path. */
static struct rbd_img *
rbdi_open (struct rbd_conn *conn, const char *spec, const char *snap,
           unsigned flags, char *path)
{
  struct rbd_img *r = calloc (1, sizeof *r);
  rbd_image_info_t info;
  uint64_t size;
  int rc;

  if (!r) {
    conn_put (conn);
    free (path);
    errno = ENOMEM;
    return NULL;
  }
  pthread_mutex_init (&r->bs_lock, NULL);
  r->conn = conn;
  r->img.path = path;
  r->img.fmt = &rbd_format;
  r->img.remote = true;
  r->img.read_mode = 0400;
  r->img.lock_fd = -1;
  if ((r->spec = strdup (spec)) == NULL
      || (snap && (r->snap = strdup (snap)) == NULL)) {
    errno = ENOMEM;
    goto fail;
  }
  if (split_spec (spec, path, &r->pool, &r->nspace, &r->name) < 0)
    goto fail;
  if (snap && (flags & VD_OPEN_RDWR)) {
    vd_error ("%s: a snapshot cannot be written", path);
    errno = EROFS;
    goto fail;
  }
  rc = rados_ioctx_create (conn->cluster, r->pool, &r->io);
  if (rc < 0) {
    r->io = NULL;
    vd_error ("%s: pool %s: %s", path, r->pool, strerror (-rc));
    errno = open_errno (rc);
    goto fail;
  }
  rados_ioctx_set_namespace (r->io, r->nspace ? r->nspace : "");
  if (flags & VD_OPEN_RDWR)
    rc = rbd_open (r->io, r->name, &r->image, NULL);
  else
    rc = rbd_open_read_only (r->io, r->name, &r->image, snap);
  if (rc < 0) {
    r->image = NULL;
    if (rc == -ENOENT && snap)
      vd_error ("%s: no such rbd image or snapshot", path);
    else if (rc == -ENOENT)
      vd_error ("%s: no such rbd image", path);
    else
      vd_error ("%s: opening the rbd image: %s", path, strerror (-rc));
    errno = open_errno (rc);
    goto fail;
  }
  if ((rc = rbd_get_size (r->image, &size)) < 0
      || (rc = rbd_stat (r->image, &info, sizeof info)) < 0) {
    vd_error ("%s: rbd image size: %s", path, strerror (-rc));
    errno = open_errno (rc);
    goto fail;
  }
  r->img.size = size;
  r->img.flags = flags;
  /* librbd moves it on writes (at most once a minute by default): what
   * the disk file's mtime shows, so that rsync sees a changed image. */
  if (rbd_get_modify_timestamp (r->image, &r->img.mtime) < 0)
    r->img.mtime.tv_sec = r->img.mtime.tv_nsec = 0;
  if (info.obj_size == 0 || info.obj_size > (1ULL << 32))
    info.obj_size = 4 << 20;
  r->obj_size = info.obj_size;
  {
    uint64_t unit = 0, count = 0;

    r->plain_layout = rbd_get_stripe_unit (r->image, &unit) == 0
      && rbd_get_stripe_count (r->image, &count) == 0
      && (count <= 1 || unit == info.obj_size);
  }
  r->window = info.obj_size * BS_WINDOW_OBJECTS;
  r->ttl = snap ? UINT64_MAX : (flags & VD_OPEN_LIVE) ? 0 : BS_TTL_NS;
  if (flags & VD_OPEN_RDWR)
    r->img.zero_align = 4096;
  return r;

 fail:
  {
    int e = errno;
    rbdi_free (r);
    errno = e;
  }
  return NULL;
}

/* Opened for writing: does another client have the image open for
 * writing (a VM, on this host or another: its librbd watches the image's
 * header, as our own open does)?  Writing under it would corrupt what it
 * sees, as qemu's lock bytes guard an image file.  0 no; 1, or -1 when
 * it cannot be told, with errno EBUSY / EIO after a log line. */
static int
rbd_in_use (struct rbd_img *r)
{
  rbd_image_watcher_t w[8];
  size_t n = sizeof w / sizeof w[0], i;
  char who[256] = "";
  int rc = rbd_watchers_list (r->image, w, &n);

  if (rc == -ERANGE)
    n = 9;                              /* more than ours: in use */
  else if (rc < 0) {
    vd_error ("%s: cannot list the image's watchers: %s", r->img.path,
              strerror (-rc));
    errno = EIO;
    return -1;
  }
  if (n <= 1) {
    if (rc == 0)
      rbd_watchers_list_cleanup (w, n);
    return 0;
  }
  for (i = 0; rc == 0 && i < n; i++)
    if (w[i].addr && strlen (who) + strlen (w[i].addr) + 3 < sizeof who) {
      strcat (who, who[0] ? ", " : "");
      strcat (who, w[i].addr);
    }
  if (rc == 0)
    rbd_watchers_list_cleanup (w, n);
  vd_error ("%s: in use by %zu other client%s (%s): not opened for "
            "writing", r->img.path, n - 1, n == 2 ? "" : "s",
            who[0] ? who : "more than 8");
  errno = EBUSY;
  return 1;
}

struct vd_image *
vd_rbd_open (const struct vd_netsrc *src, unsigned flags, const char *desc)
{
  struct rbd_conn *conn;
  struct rbd_img *r;
  char *path;

  if (!src->name) {
    vd_error ("%s: no rbd image named", desc);
    errno = EINVAL;
    return NULL;
  }
  if ((path = strdup (desc)) == NULL)
    return NULL;
  if ((conn = conn_get (src, desc)) == NULL) {
    int e = errno;
    free (path);
    errno = e;
    return NULL;
  }
  r = rbdi_open (conn, src->name, src->snapshot, flags, path);
  if (r && (flags & VD_OPEN_RDWR) && rbd_in_use (r) != 0) {
    int e = errno;
    rbdi_free (r);
    errno = e;
    return NULL;
  }
  return r ? &r->img : NULL;
}

static void
rbd_img_close (struct vd_image *img)
{
  rbdi_free ((struct rbd_img *) img);
}

enum rbd_op { OP_READ, OP_WRITE, OP_ZERO };

/* Run op over [offset, offset+count) in pieces, RBD_INFLIGHT of them in
 * flight.  Every piece submitted is waited for before returning (the
 * buffer is the caller's).  0, or -1 with errno EIO after one log line. */
static int
rbd_io (struct rbd_img *r, enum rbd_op op, char *buf, uint64_t count,
        uint64_t offset)
{
  rbd_completion_t c[RBD_INFLIGHT];
  uint64_t off[RBD_INFLIGHT];
  size_t len[RBD_INFLIGHT];
  uint64_t piece = op == OP_ZERO ? RBD_ZERO_PIECE : RBD_PIECE;
  uint64_t done = 0;
  unsigned head = 0, n = 0;
  ssize_t err = 0;
  uint64_t err_off = 0;

  while ((done < count && !err) || n > 0) {
    if (done < count && !err && n < RBD_INFLIGHT) {
      unsigned s = (head + n) % RBD_INFLIGHT;
      size_t l = MIN (count - done, piece);
      int rc = rbd_aio_create_completion (NULL, NULL, &c[s]);

      if (rc == 0) {
        switch (op) {
        case OP_READ:
          rc = rbd_aio_read (r->image, offset + done, l, buf + done, c[s]);
          break;
        case OP_WRITE:
          rc = rbd_aio_write (r->image, offset + done, l, buf + done, c[s]);
          break;
        case OP_ZERO:
          rc = rbd_aio_write_zeroes (r->image, offset + done, l, c[s], 0, 0);
          break;
        }
        if (rc < 0)
          rbd_aio_release (c[s]);
      }
      if (rc < 0) {
        err = rc;
        err_off = offset + done;
        continue;
      }
      off[s] = offset + done;
      len[s] = l;
      n++;
      done += l;
      continue;
    }
    {
      ssize_t ret;

      rbd_aio_wait_for_complete (c[head]);
      ret = rbd_aio_get_return_value (c[head]);
      rbd_aio_release (c[head]);
      if (ret < 0) {
        if (!err) {
          err = ret;
          err_off = off[head];
        }
      }
      else if (op == OP_READ && (size_t) ret < len[head])
        /* The image shrank under us: zeros past its end. */
        memset (buf + (off[head] - offset) + ret, 0, len[head] - ret);
      head = (head + 1) % RBD_INFLIGHT;
      n--;
    }
  }
  if (err) {
    static const char *const what[] = { "read", "write", "zeroing" };

    if (err == -ETIMEDOUT)
      vd_error ("%s: %s at %" PRIu64 ": no answer from ceph within %u s",
                r->img.path, what[op], err_off, r->conn->timeout_s);
    else
      vd_error ("%s: %s at %" PRIu64 ": %s", r->img.path, what[op], err_off,
                strerror ((int) -err));
    errno = EIO;
    return -1;
  }
  return 0;
}

static int
rbd_img_read (struct vd_image *img, void *buf, size_t count,
              uint64_t offset)
{
  return rbd_io ((struct rbd_img *) img, OP_READ, buf, count, offset);
}

static void
bs_invalidate (struct rbd_img *r)
{
  size_t i;

  pthread_mutex_lock (&r->bs_lock);
  for (i = 0; i < BS_WINDOWS; i++)
    r->bs[i].valid = false;
  pthread_mutex_unlock (&r->bs_lock);
}

static int
rbd_img_write (struct vd_image *img, const void *buf, size_t count,
               uint64_t offset)
{
  struct rbd_img *r = (struct rbd_img *) img;
  int ret = rbd_io (r, OP_WRITE, (char *) buf, count, offset);

  r->zrun_start = r->zrun_end = 0;
  bs_invalidate (r);
  return ret;
}

/* Zeros.  librbd removes an object only when one request covers all of
 * it; a partial range is zeroed in place (the OSD frees the blocks, the
 * object stays).  A restore writes a few hundred KiB at a time, so
 * consecutive zero calls are followed as one run, and each object the
 * run has covered entirely by the end of a call is zeroed again as a
 * whole, which removes it: a zero run restored becomes what `rbd du`
 * counts as unused. */
static int
rbd_img_zero (struct vd_image *img, uint64_t count, uint64_t offset)
{
  struct rbd_img *r = (struct rbd_img *) img;
  uint64_t end = offset + count, o = r->obj_size, a, b, lo, hi;
  int ret = 0;

  if (offset != r->zrun_end || r->zrun_start == r->zrun_end)
    r->zrun_start = offset;
  r->zrun_end = end;
  lo = hi = end;
  if (r->plain_layout) {
    a = (r->zrun_start + o - 1) / o * o;
    b = end == img->size ? end : end / o * o;
    /* Whole objects of the run that this call reaches into. */
    lo = MAX (a, offset / o * o);
    hi = MIN (b, (end + o - 1) / o * o);
    if (lo >= hi)
      lo = hi = end;
  }
  if (offset < lo)
    ret = rbd_io (r, OP_ZERO, NULL, MIN (lo, end) - offset, offset);
  if (ret == 0 && lo < hi)
    ret = rbd_io (r, OP_ZERO, NULL, hi - lo, lo);
  if (ret == 0 && hi < end && hi > offset)
    ret = rbd_io (r, OP_ZERO, NULL, end - hi, hi);
  if (ret < 0)
    r->zrun_start = r->zrun_end = 0;
  bs_invalidate (r);
  return ret;
}

static int
rbd_img_flush (struct vd_image *img)
{
  struct rbd_img *r = (struct rbd_img *) img;
  int rc = rbd_flush (r->image);

  if (rc < 0) {
    vd_error ("%s: flush: %s", img->path, strerror (-rc));
    errno = EIO;
    return -1;
  }
  return 0;
}

static int
rbd_img_resize (struct vd_image *img, uint64_t size)
{
  struct rbd_img *r = (struct rbd_img *) img;
  int rc = rbd_resize (r->image, size);

  bs_invalidate (r);
  if (rc < 0) {
    vd_error ("%s: growing to %" PRIu64 ": %s", img->path, size,
              strerror (-rc));
    errno = EIO;
    return -1;
  }
  img->size = size;
  return 0;
}

/* ---- block_status ---- */

struct bs_fill {
  uint64_t start, end;
  size_t n;
  bool overflow;
  struct bs_ext ext[BS_MAX_EXTENTS];
};

static int
bs_cb (uint64_t off, size_t len, int exists, void *arg)
{
  struct bs_fill *f = arg;
  uint64_t s = off, e = off + len;

  if (!exists || len == 0)
    return 0;
  if (s < f->start)
    s = f->start;
  if (e > f->end)
    e = f->end;
  if (s >= e)
    return 0;
  if (f->n && f->ext[f->n - 1].end == s) {
    f->ext[f->n - 1].end = e;           /* the usual case: in order */
    return 0;
  }
  if (f->n == BS_MAX_EXTENTS) {
    f->overflow = true;
    return 0;
  }
  f->ext[f->n].start = s;
  f->ext[f->n].end = e;
  f->n++;
  return 0;
}

static int
ext_cmp (const void *a, const void *b)
{
  const struct bs_ext *x = a, *y = b;

  return x->start < y->start ? -1 : x->start > y->start;
}

/* Ask librbd for the window [start, end) into a new sorted, merged
 * extent array.  0, or -1 with errno EIO after a log line. */
static int
bs_ask (struct rbd_img *r, uint64_t start, uint64_t end,
        struct bs_ext **ext, size_t *n)
{
  struct bs_fill *f = malloc (sizeof *f);
  size_t i, m = 0;
  int rc;

  if (!f)
    return -1;
  f->start = start;
  f->end = end;
  f->n = 0;
  f->overflow = false;
  rc = rbd_diff_iterate2 (r->image, NULL, start, end - start, 1, 1, bs_cb,
                          f);
  if (rc < 0) {
    vd_error ("%s: allocation map at %" PRIu64 ": %s", r->img.path, start,
              strerror (-rc));
    free (f);
    errno = EIO;
    return -1;
  }
  if (f->overflow) {
    /* Too many pieces to keep: all of it may hold data. */
    f->n = 1;
    f->ext[0].start = start;
    f->ext[0].end = end;
  }
  qsort (f->ext, f->n, sizeof f->ext[0], ext_cmp);
  for (i = 0; i < f->n; i++) {
    if (m && f->ext[m - 1].end >= f->ext[i].start) {
      if (f->ext[i].end > f->ext[m - 1].end)
        f->ext[m - 1].end = f->ext[i].end;
    }
    else
      f->ext[m++] = f->ext[i];
  }
  *n = m;
  *ext = malloc ((m ? m : 1) * sizeof **ext);
  if (!*ext) {
    free (f);
    return -1;
  }
  memcpy (*ext, f->ext, m * sizeof **ext);
  free (f);
  return 0;
}

/* What is at pos: *data and the end of that kind within pos's window
 * (*wend: the window's end).  Under bs_lock, w valid and covering pos. */
static void
bs_lookup (const struct bs_window *w, uint64_t pos, bool *data,
           uint64_t *seg_end)
{
  size_t lo = 0, hi = w->n;

  /* The first extent ending after pos. */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (w->ext[mid].end <= pos)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo < w->n && w->ext[lo].start <= pos) {
    *data = true;
    *seg_end = w->ext[lo].end;
  }
  else {
    *data = false;
    *seg_end = lo < w->n ? w->ext[lo].start : w->end;
  }
}

/* The kind of pos and the end of that kind (within its window). */
static int
bs_segment (struct rbd_img *r, uint64_t pos, bool *data, uint64_t *seg_end)
{
  uint64_t start = pos - pos % r->window;
  uint64_t end = MIN (start + r->window, r->img.size);
  uint64_t t = now_ns ();
  struct bs_window *w, *victim = NULL;
  struct bs_ext *ext;
  size_t i, n;

  pthread_mutex_lock (&r->bs_lock);
  for (i = 0; i < BS_WINDOWS; i++) {
    w = &r->bs[i];
    if (w->valid && w->start == start && w->end == end
        && (r->ttl == UINT64_MAX || t - w->stamp < r->ttl)) {
      w->used = ++r->bs_tick;
      bs_lookup (w, pos, data, seg_end);
      pthread_mutex_unlock (&r->bs_lock);
      return 0;
    }
  }
  pthread_mutex_unlock (&r->bs_lock);

  if (bs_ask (r, start, end, &ext, &n) < 0)
    return -1;

  pthread_mutex_lock (&r->bs_lock);
  /* Replace a stale copy of this window, else a free slot, else the
   * least recently used one. */
  for (i = 0; i < BS_WINDOWS; i++) {
    w = &r->bs[i];
    if (w->valid && w->start == start && w->end == end) {
      victim = w;
      break;
    }
    if (!w->valid) {
      if (!victim || victim->valid)
        victim = w;
    }
    else if (!victim || (victim->valid && w->used < victim->used))
      victim = w;
  }
  free (victim->ext);
  victim->ext = ext;
  victim->n = n;
  victim->start = start;
  victim->end = end;
  victim->stamp = t;
  victim->valid = true;
  victim->used = ++r->bs_tick;
  bs_lookup (victim, pos, data, seg_end);
  pthread_mutex_unlock (&r->bs_lock);
  return 0;
}

static int
rbd_img_block_status (struct vd_image *img, uint64_t offset,
                      uint64_t length, struct vd_extent *e)
{
  struct rbd_img *r = (struct rbd_img *) img;
  uint64_t pos = offset, end = offset + length, seg_end;
  bool data, first_data = false;
  unsigned calls;

  for (calls = 0; pos < end && calls < BS_MAX_CALLS; calls++) {
    if (bs_segment (r, pos, &data, &seg_end) < 0)
      return -1;
    if (pos == offset)
      first_data = data;
    else if (data != first_data)
      break;
    pos = MIN (seg_end, end);
  }
  e->offset = offset;
  e->length = pos - offset;
  e->type = first_data ? VD_EXTENT_DATA : VD_EXTENT_HOLE;
  e->fd = -1;
  e->phys = 0;
  return 0;
}

/* ---- Snapshots ---- */

/* The image's snapshots as librbd lists them (rbd_snap_list_end and free
 * to release).  Count, or -1 with errno EIO (logged). */
static int
snap_list (struct rbd_img *r, rbd_snap_info_t **out)
{
  int max = 16, rc;
  rbd_snap_info_t *s;

  for (;;) {
    s = calloc (max, sizeof *s);
    if (!s)
      return -1;
    rc = rbd_snap_list (r->image, s, &max);
    if (rc != -ERANGE)
      break;
    free (s);
  }
  if (rc < 0) {
    vd_error ("%s: listing rbd snapshots: %s", r->img.path, strerror (-rc));
    free (s);
    errno = EIO;
    return -1;
  }
  *out = s;
  return rc;
}

static int
rbd_img_list_snapshots (struct vd_image *img, struct vd_snapshot **snaps,
                        size_t *nsnaps)
{
  struct rbd_img *r = (struct rbd_img *) img;
  rbd_snap_info_t *s;
  struct vd_snapshot *v;
  int n, i;

  if ((n = snap_list (r, &s)) < 0)
    return -1;
  v = calloc (n ? n : 1, sizeof *v);
  if (!v)
    goto nomem;
  for (i = 0; i < n; i++) {
    struct timespec ts = { 0, 0 };
    char id[24];

    snprintf (id, sizeof id, "%" PRIu64, s[i].id);
    if ((v[i].id = strdup (id)) == NULL
        || (v[i].name = strdup (s[i].name)) == NULL) {
      vd_snapshots_free (v, n);
      goto nomem;
    }
    /* An old cluster without timestamps: date 0. */
    if (rbd_snap_get_timestamp (r->image, s[i].id, &ts) == 0) {
      v[i].date_sec = ts.tv_sec;
      v[i].date_nsec = ts.tv_nsec;
    }
    v[i].disk_size = s[i].size;
  }
  rbd_snap_list_end (s);
  free (s);
  *snaps = v;
  *nsnaps = n;
  return 0;

 nomem:
  rbd_snap_list_end (s);
  free (s);
  errno = ENOMEM;
  return -1;
}

static struct vd_image *
rbd_img_open_snapshot (struct vd_image *img, const char *id_or_name)
{
  struct rbd_img *r = (struct rbd_img *) img, *s;
  rbd_snap_info_t *list;
  char *name = NULL, *path;
  bool found = false;
  int n, i;

  if ((n = snap_list (r, &list)) < 0)
    return NULL;
  for (i = 0; i < n && !found; i++) {
    char id[24];

    snprintf (id, sizeof id, "%" PRIu64, list[i].id);
    if (strcmp (id, id_or_name) == 0) {
      found = true;
      name = strdup (list[i].name);
    }
  }
  for (i = 0; i < n && !found; i++)
    if (strcmp (list[i].name, id_or_name) == 0) {
      found = true;
      name = strdup (id_or_name);
    }
  rbd_snap_list_end (list);
  free (list);
  if (!name) {
    errno = found ? ENOMEM : ENOENT;
    return NULL;
  }
  if (asprintf (&path, "rbd:%s@%s", r->spec, name) < 0) {
    free (name);
    errno = ENOMEM;
    return NULL;
  }
  pthread_mutex_lock (&conn_lock);
  r->conn->refs++;
  pthread_mutex_unlock (&conn_lock);
  s = rbdi_open (r->conn, r->spec, name, 0, path);
  free (name);
  return s ? &s->img : NULL;
}

/* Open src's image for a snapshot operation: read-write (flags
 * VD_OPEN_RDWR), or read-only (0). */
static struct rbd_img *
snap_target_flags (const struct vd_netsrc *src, char **desc, unsigned flags)
{
  struct vd_netsrc copy = *src;
  struct rbd_conn *conn;
  char *path;
  struct rbd_img *r;

  copy.snapshot = NULL;
  if ((*desc = vd_net_describe (&copy)) == NULL
      || (path = strdup (*desc)) == NULL) {
    free (*desc);
    *desc = NULL;
    errno = ENOMEM;
    return NULL;
  }
  if (src->proto != VD_NET_RBD || !src->name) {
    vd_error ("%s: snapshots are made of rbd images only", *desc);
    free (path);
    errno = EINVAL;
    return NULL;
  }
  if ((conn = conn_get (src, *desc)) == NULL) {
    int e = errno;
    free (path);
    errno = e;
    return NULL;
  }
  r = rbdi_open (conn, src->name, NULL, flags, path);
  return r;
}

static struct rbd_img *
snap_target (const struct vd_netsrc *src, char **desc)
{
  return snap_target_flags (src, desc, VD_OPEN_RDWR);
}

/* The image metadata key recording who made snapshot name. */
#define MAKER_KEY "vmdiskfs.snapshot-maker."

/* MAKER_KEY NAME, malloc'd (NULL: ENOMEM). */
static char *
maker_key (const char *name)
{
  char *key;

  return asprintf (&key, MAKER_KEY "%s", name) < 0 ? NULL : key;
}

/* Drop the maker mark of snapshot name (none: nothing). */
static void
maker_forget (rbd_image_t image, const char *name)
{
  char *key = maker_key (name);

  if (key)
    rbd_metadata_remove (image, key);   /* none: -ENOENT */
  free (key);
}

char *
vd_rbd_snap_maker (const struct vd_netsrc *src, const char *name)
{
  char *desc = NULL, *key = NULL, *val = NULL;
  struct rbd_img *r;
  size_t len = 64;
  int rc = -ENOMEM, e;

  if ((r = snap_target_flags (src, &desc, 0)) == NULL) {
    e = errno;
    free (desc);
    errno = e;
    return NULL;
  }
  if ((key = maker_key (name)) != NULL && (val = malloc (len)) != NULL) {
    rc = rbd_metadata_get (r->image, key, val, &len);
    if (rc == -ERANGE && len > 0 && len <= 4096) {
      char *t = realloc (val, len);
      if (t) {
        val = t;
        rc = rbd_metadata_get (r->image, key, val, &len);
      }
    }
  }
  if (rc < 0) {
    free (val);
    val = NULL;
    e = rc == -ENOENT ? 0 : -rc;
    if (e)
      vd_error ("%s: reading who made snapshot %s: %s", desc, name,
                strerror (e));
  }
  else if (len == 0 || memchr (val, '\0', len) == NULL) {
    free (val);                         /* not a string of ours */
    val = NULL;
    e = 0;
  }
  rbdi_free (r);
  free (desc);
  free (key);
  errno = val ? 0 : e;
  return val;
}

int
vd_rbd_snap_create (const struct vd_netsrc *src, const char *name,
                    const char *maker)
{
  char *desc = NULL;
  struct rbd_img *r;
  int rc, e;

  if (!name || !*name) {
    vd_error ("rbd: an empty snapshot name");
    errno = EINVAL;
    return -1;
  }
  if ((r = snap_target (src, &desc)) == NULL) {
    e = errno;
    free (desc);
    errno = e;
    return -1;
  }
  /* The maker first: a snapshot without its mark would never be pruned,
   * a mark without its snapshot is removed with it below. */
  if (maker) {
    char *key = maker_key (name);

    rc = key ? rbd_metadata_set (r->image, key, maker) : -ENOMEM;
    free (key);
    if (rc < 0)
      vd_error ("%s: recording who makes snapshot %s: %s", desc, name,
                strerror (-rc));
  }
  rc = rbd_snap_create (r->image, name);
  if (rc < 0 && rc != -EEXIST && maker)
    maker_forget (r->image, name);
  if (rc == -EEXIST) {
    vd_error ("%s: a snapshot called %s exists already", desc, name);
    e = EEXIST;
  }
  else if (rc < 0) {
    vd_error ("%s: creating snapshot %s: %s", desc, name, strerror (-rc));
    e = open_errno (rc);
  }
  rbdi_free (r);
  free (desc);
  if (rc < 0) {
    errno = e;
    return -1;
  }
  return 0;
}

int
vd_rbd_snap_remove (const struct vd_netsrc *src, const char *name)
{
  char *desc = NULL;
  struct rbd_img *r;
  int rc, prot = 0, e = 0;

  if (!name || !*name) {
    vd_error ("rbd: an empty snapshot name");
    errno = EINVAL;
    return -1;
  }
  if ((r = snap_target (src, &desc)) == NULL) {
    e = errno;
    free (desc);
    errno = e;
    return -1;
  }
  rc = rbd_snap_is_protected (r->image, name, &prot);
  if (rc == 0 && prot)
    rc = -EBUSY;
  else if (rc == 0)
    rc = rbd_snap_remove (r->image, name);
  if (rc == 0)
    maker_forget (r->image, name);
  if (rc == -ENOENT) {
    vd_error ("%s: no snapshot called %s", desc, name);
    e = ENOENT;
  }
  else if (rc == -EBUSY) {
    vd_error ("%s: snapshot %s is protected", desc, name);
    e = EBUSY;
  }
  else if (rc < 0) {
    vd_error ("%s: removing snapshot %s: %s", desc, name, strerror (-rc));
    e = open_errno (rc);
  }
  rbdi_free (r);
  free (desc);
  if (rc < 0) {
    errno = e;
    return -1;
  }
  return 0;
}

static bool
rbd_probe (const uint8_t *buf, size_t len)
{
  return false;             /* never a file: opened by vd_net_open only */
}

static const struct vd_format rbd_format = {
  .name = "rbd",
  .probe = rbd_probe,
  .close = rbd_img_close,
  .read = rbd_img_read,
  .write = rbd_img_write,
  .flush = rbd_img_flush,
  .block_status = rbd_img_block_status,
  .list_snapshots = rbd_img_list_snapshots,
  .open_snapshot = rbd_img_open_snapshot,
  .zero = rbd_img_zero,
  .resize = rbd_img_resize,
};
