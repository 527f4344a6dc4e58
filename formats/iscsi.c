/* vmdiskfs - the iSCSI network disk driver (netdisk.h): a LUN of an
 * iSCSI target read and written with libiscsi.
 *
 * A session logs in to src->hosts[0] (port 3260 by default) as initiator
 * "iqn.2026-12.org.vmdiskfs:HOSTNAME", to the target and LUN of
 * src->name ("IQN/LUN"), with CHAP when src->user is set, header digest
 * none-crc32c (whichever the target prefers), and libiscsi's own
 * reconnection off: a broken session is ours to drop and replace.
 *
 * Sessions.  A libiscsi context is not thread-safe, and requests of one
 * image come from many threads at once, so the image keeps a small pool
 * of sessions (ISCSI_MAX_SESSIONS), each a context with its own TCP
 * connection, created when a request finds none idle and used by one
 * thread at a time; a request waits for one when all are busy.  Each
 * thread drives its own session with the async API and a poll loop of
 * its own, so every command has a deadline (src->timeout_s, default
 * VD_NET_TIMEOUT_S) and nothing ever waits on a silent target for
 * longer.  The alternative, one context behind a mutex with the
 * commands of all threads in flight on it, needs one thread to service
 * it for the others and puts every command on one connection; separate
 * sessions let the target (tgtd: a thread pool behind its sessions)
 * work on several at once, for one login each, made only when that
 * many requests run at once.  Measured with tgtd on this machine (8
 * threads, 4 KiB random reads of a 256 MiB LUN, two runs): 1 session
 * 4.7-7.1k IOPS (what one context serialized would give at best), 2:
 * 6.7-10.9k, 4: 9.5-14.6k, 8: 12.0-19.9k; 1 MiB reads: 0.5-1.3 GB/s
 * whatever the count.  FUSE serves up to about 10 requests at once: 8.
 *
 * Errors.  A transport error (timeout, connection lost, login refused)
 * fails the request EIO with one log line, drops the session, and marks
 * every other session of the image stale (dropped when next handed
 * back: they talk to the same target); no new session is tried before a
 * backoff has passed (0.1 s, doubling up to 5 s, back to 0.1 s after a
 * login succeeds), and requests within it fail EIO at once (logged once
 * per backoff).  A SCSI error (the target answered CHECK CONDITION)
 * fails the request only; a UNIT ATTENTION is retried (three times).
 *
 * Geometry: READ CAPACITY(16) (block size, count; LBPME, LBPRZ), the
 * block limits VPD page (maximum transfer length: requests are split to
 * it, 1 MiB when the target sets none, never more than ISCSI_XFER_CAP)
 * and the logical block provisioning page (LBPWS: WRITE SAME(16) with
 * UNMAP).  block_status asks GET LBA STATUS where LBPME says the target
 * tracks mapping: deallocated and anchored blocks are holes when LBPRZ
 * says they read as zeros; everything is data elsewhere.  tgtd answers
 * with LBPME and LBPRZ set (from its backing file's holes) only for a LU
 * with thin_provisioning=1.
 *
 * Writes (VD_OPEN_RDWR): WRITE(16), partial blocks read, merged and
 * written back (format.c holds the write lock, so nothing reads or
 * writes them meanwhile); zero: WRITE SAME(16) with UNMAP where the
 * target has LBPWS and LBPRZ, else zeros written; flush: SYNCHRONIZE
 * CACHE(16).
 *
 * Threads: the pool (idle list, counts, generation, backoff) is
 * protected by lock; a session out of the pool belongs to the thread
 * that took it.  Everything else is set at open and read-only after.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "netdisk.h"
#include "log.h"
#include "cleanup.h"

#define ISCSI_DEFAULT_PORT "3260"
#ifndef ISCSI_MAX_SESSIONS
#define ISCSI_MAX_SESSIONS 8
#endif
#define ISCSI_DEFAULT_XFER (1U << 20)   /* no maximum transfer length */
#define ISCSI_XFER_CAP (4U << 20)       /* per command, whatever the target
                                           allows: one command's time
                                           stays well within a timeout  */
#define ISCSI_WS_CAP (1U << 30)         /* bytes per WRITE SAME          */
#define ISCSI_LBA_DESCS 128             /* GET LBA STATUS descriptors    */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

struct iscsi_session {
  struct iscsi_context *ctx;    /* NULL once dropped                     */
  unsigned gen;                 /* the image's generation at login       */
  bool connect_done;            /* iscsi_full_connect_async's callback   */
  int connect_status;
  char connect_err[256];        /* libiscsi's message at the callback    */
  struct iscsi_session *next;   /* idle list                             */
};

struct iscsi_image {
  struct vd_image img;
  char *desc;                   /* vd_net_describe: no secret            */
  char *portal;                 /* "HOST:PORT"                           */
  char *target;                 /* the IQN                               */
  int lun;
  char *initiator;
  char *user, *secret;          /* CHAP, or NULL                         */
  unsigned timeout_s;
  uint32_t bs;                  /* logical block size                    */
  uint32_t max_xfer;            /* bytes per READ/WRITE, a multiple of bs */
  uint32_t ws_blocks;           /* blocks per WRITE SAME                  */
  bool lbpme, lbprz, lbpws;
  bool no_lba_status;           /* GET LBA STATUS refused (atomic)       */
  bool no_ws;                   /* WRITE SAME refused (atomic)           */
  /* The pool, under lock. */
  pthread_mutex_t lock;
  pthread_cond_t cond;          /* a session came back, or one fewer    */
  struct iscsi_session *idle;
  unsigned nsessions;           /* idle + in use + being logged in       */
  unsigned gen;                 /* bumped on every transport error       */
  struct timespec retry_at;     /* no login before this                  */
  unsigned backoff_ms;          /* the next backoff                      */
  bool backoff_said;            /* a request failed within it, logged    */
};

/* How a command went. */
enum { CMD_OK = 0, CMD_SCSI, CMD_TRANSPORT };

/* Time. */

static struct timespec
now_mono (void)
{
  struct timespec t;

  clock_gettime (CLOCK_MONOTONIC, &t);
  return t;
}

static struct timespec
after_ms (uint64_t ms)
{
  struct timespec t = now_mono ();

  t.tv_sec += ms / 1000;
  t.tv_nsec += (ms % 1000) * 1000000;
  if (t.tv_nsec >= 1000000000) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000;
  }
  return t;
}

/* Milliseconds until t (rounded up), 0 when past. */
static int64_t
ms_until (const struct timespec *t)
{
  struct timespec n = now_mono ();
  int64_t ns = (int64_t) (t->tv_sec - n.tv_sec) * 1000000000
    + (t->tv_nsec - n.tv_nsec);

  return ns <= 0 ? 0 : (ns + 999999) / 1000000;
}

static void __attribute__ ((format (printf, 3, 4)))
set_err (char *err, size_t len, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (err, len, fmt, ap);
  va_end (ap);
}

/* Put prefix before the message in err. */
static void
prefix_err (char *err, size_t len, const char *prefix)
{
  size_t p = strlen (prefix), e = strlen (err);

  if (p >= len)
    return;
  if (p + e + 1 > len)
    e = len - p - 1;
  memmove (err + p, err, e);
  memcpy (err, prefix, p);
  err[p + e] = '\0';
}

/* Driving a context: run iscsi_service until *done or the deadline.
 * CMD_OK, or CMD_TRANSPORT (err says why).  The caller drops the
 * context on failure. */
static int
service_until (struct iscsi_image *s, struct iscsi_context *ctx,
               const bool *done, const struct timespec *deadline,
               char *err, size_t errlen)
{
  while (!*done) {
    struct pollfd pfd;
    int64_t ms = ms_until (deadline);
    int r;

    if (ms == 0) {
      set_err (err, errlen, "no answer within %u s", s->timeout_s);
      return CMD_TRANSPORT;
    }
    pfd.fd = iscsi_get_fd (ctx);
    pfd.events = iscsi_which_events (ctx);
    pfd.revents = 0;
    if (pfd.fd < 0) {
      set_err (err, errlen, "not connected: %s", iscsi_get_error (ctx));
      return CMD_TRANSPORT;
    }
    /* Nothing to wait for (iscsi.h: wait 100 ms and ask again); and a
     * call each second at most apart for libiscsi's own housekeeping. */
    r = poll (&pfd, pfd.events ? 1 : 0, (int) MIN (ms, pfd.events ? 1000 : 100));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      set_err (err, errlen, "poll: %s", strerror (errno));
      return CMD_TRANSPORT;
    }
    if (r > 0 && (pfd.revents & (POLLERR | POLLHUP))) {
      /* libiscsi's message would be about its reconnection, which is
       * off: say what the socket says. */
      int soerr = 0;
      socklen_t sl = sizeof soerr;

      getsockopt (pfd.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
      iscsi_service (ctx, pfd.revents);
      if (soerr)
        set_err (err, errlen, "%s: %s", s->portal, strerror (soerr));
      else
        set_err (err, errlen, "%s: connection closed by the target",
                 s->portal);
      return CMD_TRANSPORT;
    }
    if (iscsi_service (ctx, r > 0 ? pfd.revents : 0) < 0) {
      set_err (err, errlen, "%s", iscsi_get_error (ctx));
      return CMD_TRANSPORT;
    }
  }
  return CMD_OK;
}

/* Sessions. */

static void
connect_cb (struct iscsi_context *ctx, int status, void *data, void *priv)
{
  struct iscsi_session *ss = priv;

  /* Called again (SCSI_STATUS_ERROR) if the connection fails later:
   * priv lives as long as the context. */
  if (!ss->connect_done && status != SCSI_STATUS_GOOD)
    snprintf (ss->connect_err, sizeof ss->connect_err, "%s",
              iscsi_get_error (ctx));
  ss->connect_status = status;
  ss->connect_done = true;
}

static void
session_free (struct iscsi_session *ss)
{
  if (!ss)
    return;
  if (ss->ctx)
    iscsi_destroy_context (ss->ctx);
  free (ss);
}

/* Log in (a new session).  NULL with *eno (EIO, EACCES: credentials
 * refused, ENOENT: no such target) and err filled. */
static struct iscsi_session *
session_login (struct iscsi_image *s, unsigned gen, int *eno,
               char *err, size_t errlen)
{
  struct iscsi_session *ss = calloc (1, sizeof *ss);
  struct timespec deadline = after_ms ((uint64_t) s->timeout_s * 1000);
  const char *why;

  *eno = EIO;
  if (!ss) {
    set_err (err, errlen, "out of memory");
    *eno = ENOMEM;
    return NULL;
  }
  ss->gen = gen;
  ss->ctx = iscsi_create_context (s->initiator);
  if (!ss->ctx) {
    set_err (err, errlen, "cannot create an iscsi context");
    free (ss);
    *eno = ENOMEM;
    return NULL;
  }
  iscsi_set_noautoreconnect (ss->ctx, 1);
  if (iscsi_set_targetname (ss->ctx, s->target) < 0
      || iscsi_set_session_type (ss->ctx, ISCSI_SESSION_NORMAL) < 0
      || iscsi_set_header_digest (ss->ctx,
                                  ISCSI_HEADER_DIGEST_NONE_CRC32C) < 0
      || (s->user
          && iscsi_set_initiator_username_pwd (ss->ctx, s->user,
                                               s->secret ? s->secret : "")
             < 0)) {
    set_err (err, errlen, "%s", iscsi_get_error (ss->ctx));
    goto fail;
  }
  if (iscsi_full_connect_async (ss->ctx, s->portal, s->lun, connect_cb,
                                ss) < 0) {
    set_err (err, errlen, "cannot connect: %s", iscsi_get_error (ss->ctx));
    goto fail;
  }
  if (service_until (s, ss->ctx, &ss->connect_done, &deadline,
                     err, errlen) != CMD_OK) {
    /* err: "no answer ..." or the socket's error. */
    prefix_err (err, errlen, "login: ");
    goto fail;
  }
  if (ss->connect_status != SCSI_STATUS_GOOD) {
    why = ss->connect_err;
    set_err (err, errlen, "login: %s", why);
    /* libiscsi names the login status only in its message (RFC 7143
     * 11.13.5: 0x0201 authentication failure, 0x0203 target not
     * found ...). */
    if (strstr (why, "Authentication failure")
        || strstr (why, "Authorization failure")) {
      if (s->user)
        set_err (err, errlen, "login refused: CHAP user \"%s\" or its "
                 "password not accepted (%s)", s->user, why);
      else
        set_err (err, errlen, "login refused: the target asks for CHAP "
                 "credentials and none were given (%s)", why);
      *eno = EACCES;
    }
    else if (strstr (why, "Target not found")
             || strstr (why, "Target removed")
             || strstr (why, "LOGICAL_UNIT_NOT_SUPPORTED"))
      *eno = ENOENT;
    goto fail;
  }
  return ss;

 fail:
  session_free (ss);
  return NULL;
}

/* Nobody services an idle session's socket: the target may have
 * closed it, or pinged it (NOP-In, which needs an answer) meanwhile.
 * Handle what came; false when the session is gone. */
static bool
session_alive (struct iscsi_session *ss)
{
  struct pollfd pfd = { .fd = iscsi_get_fd (ss->ctx), .events = POLLIN };
  char c;

  if (pfd.fd < 0)
    return false;
  if (poll (&pfd, 1, 0) <= 0)
    return true;                        /* nothing came */
  if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))
    return false;
  /* The end of the stream (or a reset): gone.  libiscsi would take it
   * for a reason to reconnect, which is off, and say nothing. */
  if (recv (pfd.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0)
    return false;
  return iscsi_service (ss->ctx, pfd.revents) == 0
    && iscsi_get_fd (ss->ctx) >= 0 && iscsi_is_logged_in (ss->ctx)
    && iscsi_queue_length (ss->ctx) == 0;
}

/* A session for one request: an idle one of the current generation
 * still connected, a new one (up to ISCSI_MAX_SESSIONS, not within the
 * backoff), or the first to come back within the timeout.  NULL with
 * *eno and err. */
static struct iscsi_session *
session_get (struct iscsi_image *s, int *eno, char *err, size_t errlen)
{
  struct timespec deadline = after_ms ((uint64_t) s->timeout_s * 1000);
  struct iscsi_session *ss, *stale = NULL;
  unsigned gen;

  *eno = EIO;
  pthread_mutex_lock (&s->lock);
  for (;;) {
    while ((ss = s->idle) != NULL) {
      bool alive;

      s->idle = ss->next;
      if (ss->gen == s->gen) {
        pthread_mutex_unlock (&s->lock);
        alive = session_alive (ss);
        pthread_mutex_lock (&s->lock);
        if (alive)
          break;
        /* Closed while idle (a restarted target, or one that drops
         * idle sessions): not an error of any request, no backoff. */
        vd_debug ("iscsi: %s: an idle session was closed by the target",
                  s->desc);
      }
      ss->next = stale;             /* dropped, outside the lock */
      stale = ss;
      s->nsessions--;
    }
    if (ss)
      break;
    if (s->nsessions < ISCSI_MAX_SESSIONS) {
      int64_t wait = ms_until (&s->retry_at);

      if (wait > 0) {
        set_err (err, errlen, "not connected (next attempt in %.1f s)",
                 wait / 1000.0);
        /* One line per backoff, not one per request. */
        if (s->backoff_said)
          *eno = EAGAIN;
        s->backoff_said = true;
        break;
      }
      s->nsessions++;
      gen = s->gen;
      pthread_mutex_unlock (&s->lock);
      ss = session_login (s, gen, eno, err, errlen);
      pthread_mutex_lock (&s->lock);
      if (ss)
        s->backoff_ms = BACKOFF_MIN_MS;
      else {
        s->nsessions--;
        if (gen == s->gen) {
          s->gen++;
          s->retry_at = after_ms (s->backoff_ms);
          s->backoff_ms = MIN (s->backoff_ms * 2, BACKOFF_MAX_MS);
          s->backoff_said = false;
        }
        pthread_cond_broadcast (&s->cond);
      }
      break;
    }
    if (pthread_cond_timedwait (&s->cond, &s->lock, &deadline) == ETIMEDOUT) {
      set_err (err, errlen, "all %u sessions busy for %u s",
               ISCSI_MAX_SESSIONS, s->timeout_s);
      break;
    }
  }
  pthread_mutex_unlock (&s->lock);
  while (stale) {
    struct iscsi_session *n = stale->next;
    session_free (stale);
    stale = n;
  }
  return ss;
}

/* Hand ss back; broken: a transport error, drop it and start the
 * backoff. */
static void
session_put (struct iscsi_image *s, struct iscsi_session *ss, bool broken)
{
  pthread_mutex_lock (&s->lock);
  /* The first failure of a generation counts: sessions of an older
   * one failing too (the same outage) do not double the backoff again. */
  if (broken && ss->gen == s->gen) {
    s->gen++;
    s->retry_at = after_ms (s->backoff_ms);
    s->backoff_ms = MIN (s->backoff_ms * 2, BACKOFF_MAX_MS);
    s->backoff_said = false;
  }
  if (!broken && ss->gen == s->gen && ss->ctx) {
    ss->next = s->idle;
    s->idle = ss;
    ss = NULL;
  }
  else
    s->nsessions--;
  pthread_cond_signal (&s->cond);
  pthread_mutex_unlock (&s->lock);
  session_free (ss);
}

/* Commands. */

enum req_kind {
  REQ_INQUIRY, REQ_READCAP16, REQ_READ16, REQ_WRITE16, REQ_WRITESAME16,
  REQ_SYNC16, REQ_LBA_STATUS,
};

struct req {
  enum req_kind kind;
  uint64_t lba;
  uint32_t len;                 /* bytes (READ/WRITE, LBA STATUS alloc) */
  uint32_t nblocks;             /* WRITE SAME                            */
  int evpd, page;               /* INQUIRY                               */
  void *buf;                    /* READ/WRITE data, WRITE SAME's block   */
  /* Completion. */
  bool done;
  int status;
  struct scsi_iovec iov;
};

static void
req_cb (struct iscsi_context *ctx, int status, void *data, void *priv)
{
  struct req *r = priv;

  r->status = status;
  r->done = true;
}

static struct scsi_task *
req_submit (struct iscsi_image *s, struct iscsi_context *ctx, struct req *r)
{
  r->done = false;
  r->status = SCSI_STATUS_ERROR;
  switch (r->kind) {
  case REQ_INQUIRY:
    return iscsi_inquiry_task (ctx, s->lun, r->evpd, r->page, 255, req_cb,
                               r);
  case REQ_READCAP16:
    return iscsi_readcapacity16_task (ctx, s->lun, req_cb, r);
  case REQ_READ16:
    r->iov.iov_base = r->buf;
    r->iov.iov_len = r->len;
    return iscsi_read16_iov_task (ctx, s->lun, r->lba, r->len, s->bs,
                                  0, 0, 0, 0, 0, req_cb, r, &r->iov, 1);
  case REQ_WRITE16:
    return iscsi_write16_task (ctx, s->lun, r->lba, r->buf, r->len, s->bs,
                               0, 0, 0, 0, 0, req_cb, r);
  case REQ_WRITESAME16:
    return iscsi_writesame16_task (ctx, s->lun, r->lba, r->buf, s->bs,
                                   r->nblocks, 0, 1, 0, 0, req_cb, r);
  case REQ_SYNC16:
    return iscsi_synchronizecache16_task (ctx, s->lun, 0, 0, 0, 0, req_cb,
                                          r);
  case REQ_LBA_STATUS:
    return iscsi_get_lba_status_task (ctx, s->lun, r->lba, r->len, req_cb,
                                      r);
  }
  return NULL;
}

/* Run r on ss to its end, within s->timeout_s.  CMD_OK with *taskp (the
 * caller frees it), CMD_SCSI (the target refused it: *sense filled) or
 * CMD_TRANSPORT (ss->ctx dropped); err says why. */
static int
req_run (struct iscsi_image *s, struct iscsi_session *ss, struct req *r,
         struct scsi_task **taskp, struct scsi_sense *sense,
         char *err, size_t errlen)
{
  int tries;

  *taskp = NULL;
  memset (sense, 0, sizeof *sense);
  for (tries = 0; ; tries++) {
    struct timespec deadline = after_ms ((uint64_t) s->timeout_s * 1000);
    struct scsi_task *task = req_submit (s, ss->ctx, r);
    int ret;

    if (!task) {
      set_err (err, errlen, "%s", iscsi_get_error (ss->ctx));
      iscsi_destroy_context (ss->ctx);
      ss->ctx = NULL;
      return CMD_TRANSPORT;
    }
    ret = service_until (s, ss->ctx, &r->done, &deadline, err, errlen);
    if (ret != CMD_OK) {
      /* The task is still the context's until the context goes (its
       * callback then runs, cancelled, into r: still alive here). */
      iscsi_destroy_context (ss->ctx);
      ss->ctx = NULL;
      scsi_free_scsi_task (task);
      return CMD_TRANSPORT;
    }
    if (r->status == SCSI_STATUS_GOOD) {
      *taskp = task;
      return CMD_OK;
    }
    if (!iscsi_is_logged_in (ss->ctx) || iscsi_get_fd (ss->ctx) < 0) {
      /* The connection went while the command was out: libiscsi ends
       * such commands itself (without its reconnection: CHECK
       * CONDITION, UNIT ATTENTION, bus reset).  Not the target's
       * answer. */
      set_err (err, errlen, "connection lost: %s", iscsi_get_error (ss->ctx));
      scsi_free_scsi_task (task);
      iscsi_destroy_context (ss->ctx);
      ss->ctx = NULL;
      return CMD_TRANSPORT;
    }
    if (r->status == SCSI_STATUS_CHECK_CONDITION) {
      *sense = task->sense;
      scsi_free_scsi_task (task);
      if (sense->key == SCSI_SENSE_UNIT_ATTENTION && tries < 3)
        continue;                     /* reported once: go again */
      set_err (err, errlen, "%s (%s)", scsi_sense_key_str (sense->key),
               scsi_sense_ascq_str (sense->ascq));
      return CMD_SCSI;
    }
    if (r->status == SCSI_STATUS_BUSY
        || r->status == SCSI_STATUS_TASK_SET_FULL
        || r->status == SCSI_STATUS_RESERVATION_CONFLICT) {
      set_err (err, errlen, "SCSI status %#x", r->status);
      scsi_free_scsi_task (task);
      return CMD_SCSI;
    }
    /* SCSI_STATUS_ERROR, CANCELLED, TIMEOUT: the transport.  Commands
     * out when the connection breaks come back CANCELLED, with a
     * made-up unit attention in libiscsi's message: say what it is. */
    if (r->status == SCSI_STATUS_CANCELLED)
      set_err (err, errlen, "%s: connection lost", s->portal);
    else
      set_err (err, errlen, "%s", iscsi_get_error (ss->ctx));
    scsi_free_scsi_task (task);
    iscsi_destroy_context (ss->ctx);
    ss->ctx = NULL;
    return CMD_TRANSPORT;
  }
}

/* Run r and free its task (commands whose answer is only a status). */
static int
req_run_status (struct iscsi_image *s, struct iscsi_session *ss,
                struct req *r, struct scsi_sense *sense, char *err,
                size_t errlen)
{
  struct scsi_task *task;
  int ret = req_run (s, ss, r, &task, sense, err, errlen);

  if (ret == CMD_OK) {
    if (r->kind == REQ_READ16 && task->residual_status
        == SCSI_RESIDUAL_UNDERFLOW && task->residual > 0) {
      set_err (err, errlen, "short read (%zu bytes missing)",
               task->residual);
      ret = CMD_SCSI;
    }
    scsi_free_scsi_task (task);
  }
  return ret;
}

static bool
is_illegal_request (const struct scsi_sense *sense)
{
  return sense->key == SCSI_SENSE_ILLEGAL_REQUEST;
}

/* One request of the image on one session: the body gets ss and
 * returns a CMD_*; the session goes back (dropped after a transport
 * error) and a failure is logged once as "iscsi: DESC: WHAT: WHY". */
#define ERRLEN 512

static int
fail_request (struct iscsi_image *s, const char *what, const char *err,
              int eno)
{
  /* EAGAIN from session_get: within a backoff already logged. */
  if (eno == EAGAIN) {
    vd_debug ("iscsi: %s: %s: %s", s->desc, what, err);
    eno = EIO;
  }
  else
    vd_error ("iscsi: %s: %s: %s", s->desc, what, err);
  errno = eno;
  return -1;
}

/* Reads and writes. */

/* Bytes [offset, offset+count), block aligned at both ends, in pieces of
 * at most max_xfer. */
static int
rw_blocks (struct iscsi_image *s, struct iscsi_session *ss, bool write,
           void *buf, uint64_t count, uint64_t offset, char *err)
{
  struct scsi_sense sense;
  char *p = buf;

  while (count > 0) {
    uint32_t n = (uint32_t) MIN (count, (uint64_t) s->max_xfer);
    struct req r = {
      .kind = write ? REQ_WRITE16 : REQ_READ16,
      .lba = offset / s->bs, .len = n, .buf = p,
    };
    int ret = req_run_status (s, ss, &r, &sense, err, ERRLEN);

    if (ret != CMD_OK)
      return ret;
    p += n;
    count -= n;
    offset += n;
  }
  return CMD_OK;
}

/* Any range: the aligned middle straight from/to buf, partial blocks at
 * the edges through a bounce block (read first when writing). */
static int
rw_any (struct iscsi_image *s, struct iscsi_session *ss, bool write,
        char *buf, uint64_t count, uint64_t offset, char *err)
{
  CLEANUP_FREE char *bounce = NULL;
  int ret;

  while (count > 0) {
    uint32_t skip = offset % s->bs;

    if (skip || count < s->bs) {
      uint64_t start = offset - skip;
      uint32_t n = (uint32_t) MIN (count, (uint64_t) (s->bs - skip));

      if (!bounce && (bounce = malloc (s->bs)) == NULL) {
        set_err (err, ERRLEN, "out of memory");
        return CMD_SCSI;
      }
      if ((ret = rw_blocks (s, ss, false, bounce, s->bs, start, err))
          != CMD_OK)
        return ret;
      if (write) {
        memcpy (bounce + skip, buf, n);
        if ((ret = rw_blocks (s, ss, true, bounce, s->bs, start, err))
            != CMD_OK)
          return ret;
      }
      else
        memcpy (buf, bounce + skip, n);
      buf += n;
      count -= n;
      offset += n;
    }
    else {
      uint64_t n = count - count % s->bs;

      if ((ret = rw_blocks (s, ss, write, buf, n, offset, err)) != CMD_OK)
        return ret;
      buf += n;
      count -= n;
      offset += n;
    }
  }
  return CMD_OK;
}

static int
do_rw (struct iscsi_image *s, bool write, void *buf, size_t count,
       uint64_t offset)
{
  char err[ERRLEN], what[64];
  struct iscsi_session *ss;
  int eno, ret;

  snprintf (what, sizeof what, "%s at %" PRIu64, write ? "write" : "read",
            offset);
  if ((ss = session_get (s, &eno, err, sizeof err)) == NULL)
    return fail_request (s, what, err, eno);
  ret = rw_any (s, ss, write, buf, count, offset, err);
  session_put (s, ss, ret == CMD_TRANSPORT);
  if (ret != CMD_OK)
    return fail_request (s, what, err, EIO);
  return 0;
}

static int
iscsi_read (struct vd_image *img, void *buf, size_t count, uint64_t offset)
{
  return do_rw ((struct iscsi_image *) img, false, buf, count, offset);
}

static int
iscsi_write (struct vd_image *img, const void *buf, size_t count,
             uint64_t offset)
{
  /* Written from, never to (rw_any reads into its bounce block only). */
  return do_rw ((struct iscsi_image *) img, true, (void *) buf, count,
                offset);
}

static int
iscsi_flush (struct vd_image *img)
{
  struct iscsi_image *s = (struct iscsi_image *) img;
  struct req r = { .kind = REQ_SYNC16 };
  struct scsi_sense sense;
  char err[ERRLEN];
  struct iscsi_session *ss;
  int eno, ret;

  if ((ss = session_get (s, &eno, err, sizeof err)) == NULL)
    return fail_request (s, "flush", err, eno);
  ret = req_run_status (s, ss, &r, &sense, err, sizeof err);
  session_put (s, ss, ret == CMD_TRANSPORT);
  if (ret != CMD_OK)
    return fail_request (s, "flush (SYNCHRONIZE CACHE)", err, EIO);
  return 0;
}

/* Zeros: WRITE SAME(16) of a zero block with UNMAP where the target
 * unmaps that way and unmapped blocks read as zeros (the target gives
 * the space back: tgtd punches a hole in its backing file); else zeros
 * written.  offset and count are multiples of zero_align (>= bs) or end
 * at the disk's end, itself a multiple of bs. */
static int
iscsi_zero (struct vd_image *img, uint64_t count, uint64_t offset)
{
  struct iscsi_image *s = (struct iscsi_image *) img;
  CLEANUP_FREE char *zeros = NULL;
  char err[ERRLEN], what[64];
  struct scsi_sense sense;
  struct iscsi_session *ss;
  int eno, ret = CMD_OK;
  bool ws = s->lbpws && s->lbprz
    && !__atomic_load_n (&s->no_ws, __ATOMIC_RELAXED);
  size_t zlen = ws ? s->bs : MIN (count, (uint64_t) s->max_xfer);

  snprintf (what, sizeof what, "zeroing at %" PRIu64, offset);
  if ((zeros = calloc (1, zlen)) == NULL)
    return fail_request (s, what, "out of memory", ENOMEM);
  if ((ss = session_get (s, &eno, err, sizeof err)) == NULL)
    return fail_request (s, what, err, eno);
  while (count > 0 && ret == CMD_OK) {
    uint64_t n;

    if (ws) {
      struct req r = { .kind = REQ_WRITESAME16, .lba = offset / s->bs,
                       .buf = zeros };

      n = MIN (count, (uint64_t) s->ws_blocks * s->bs);
      r.nblocks = (uint32_t) (n / s->bs);
      ret = req_run_status (s, ss, &r, &sense, err, sizeof err);
      if (ret == CMD_SCSI && is_illegal_request (&sense)) {
        /* Not this target after all: write zeros from now on. */
        __atomic_store_n (&s->no_ws, true, __ATOMIC_RELAXED);
        ws = false;
        free (zeros);
        zlen = MIN (count, (uint64_t) s->max_xfer);
        if ((zeros = calloc (1, zlen)) == NULL) {
          session_put (s, ss, false);
          return fail_request (s, what, "out of memory", ENOMEM);
        }
        ret = CMD_OK;
        continue;
      }
    }
    else {
      n = MIN (count, (uint64_t) zlen);
      ret = rw_blocks (s, ss, true, zeros, n, offset, err);
    }
    count -= n;
    offset += n;
  }
  session_put (s, ss, ret == CMD_TRANSPORT);
  if (ret != CMD_OK)
    return fail_request (s, what, err, EIO);
  return 0;
}

/* Holes: GET LBA STATUS (SBC-4 5.7) from the block of offset: each
 * descriptor a run of blocks mapped (data) or deallocated/anchored
 * (a hole when LBPRZ says such blocks read as zeros).  Runs of the same
 * kind are merged. */
static int
iscsi_block_status (struct vd_image *img, uint64_t offset, uint64_t length,
                    struct vd_extent *e)
{
  struct iscsi_image *s = (struct iscsi_image *) img;
  uint64_t end = offset + length, lba = offset / s->bs, run_end;
  struct req r = { .kind = REQ_LBA_STATUS, .lba = lba,
                   .len = 8 + 16 * ISCSI_LBA_DESCS };
  struct scsi_get_lba_status *st;
  struct scsi_task *task;
  struct scsi_sense sense;
  char err[ERRLEN], what[64];
  struct iscsi_session *ss;
  enum vd_extent_type type = VD_EXTENT_DATA;
  int eno, ret;
  uint32_t i;

  e->offset = offset;
  e->length = length;
  e->type = VD_EXTENT_DATA;
  e->fd = -1;
  e->phys = 0;
  if (!s->lbpme || __atomic_load_n (&s->no_lba_status, __ATOMIC_RELAXED))
    return 0;

  snprintf (what, sizeof what, "block status at %" PRIu64, offset);
  if ((ss = session_get (s, &eno, err, sizeof err)) == NULL)
    return fail_request (s, what, err, eno);
  ret = req_run (s, ss, &r, &task, &sense, err, sizeof err);
  session_put (s, ss, ret == CMD_TRANSPORT);
  if (ret == CMD_SCSI && is_illegal_request (&sense)) {
    vd_debug ("iscsi: %s: no GET LBA STATUS (%s): all data", s->desc, err);
    __atomic_store_n (&s->no_lba_status, true, __ATOMIC_RELAXED);
    return 0;
  }
  if (ret != CMD_OK)
    return fail_request (s, what, err, EIO);

  st = scsi_datain_unmarshall (task);
  run_end = lba;
  for (i = 0; st && i < st->num_descriptors; i++) {
    const struct scsi_lba_status_descriptor *d = &st->descriptors[i];
    enum vd_extent_type t =
      d->provisioning == SCSI_PROVISIONING_TYPE_MAPPED || !s->lbprz
      ? VD_EXTENT_DATA : VD_EXTENT_HOLE;

    /* Contiguous runs from lba on (the first may start before it);
     * anything else ends the answer. */
    /* The target's numbers are untrusted: no wrap past 2^64 blocks. */
    if (d->num_blocks == 0 || d->num_blocks > UINT64_MAX - d->lba
        || (i == 0 ? d->lba > lba || d->lba + d->num_blocks <= lba
            : d->lba != run_end))
      break;
    if (i == 0)
      type = t;
    else if (t != type)
      break;
    run_end = d->lba + d->num_blocks;
    if (run_end * s->bs >= end)
      break;
  }
  scsi_free_scsi_task (task);
  if (run_end > end / s->bs + 1)
    run_end = end / s->bs + 1;          /* run_end * bs cannot wrap */
  if (run_end == lba || run_end * s->bs <= offset) {
    /* Nothing usable: say data, for one block at least. */
    vd_debug ("iscsi: %s: GET LBA STATUS at block %" PRIu64 ": no "
              "descriptor there", s->desc, lba);
    return 0;
  }
  e->type = type;
  e->length = MIN (run_end * s->bs, end) - offset;
  return 0;
}

/* Open and close. */

static void
image_free (struct iscsi_image *s)
{
  struct iscsi_session *ss;

  while ((ss = s->idle) != NULL) {
    s->idle = ss->next;
    session_free (ss);
  }
  pthread_mutex_destroy (&s->lock);
  pthread_cond_destroy (&s->cond);
  free (s->desc);
  free (s->portal);
  free (s->target);
  free (s->initiator);
  free (s->user);
  if (s->secret) {
    explicit_bzero (s->secret, strlen (s->secret));
    free (s->secret);
  }
  free (s->img.path);
  free (s);
}

static void
iscsi_close (struct vd_image *img)
{
  image_free ((struct iscsi_image *) img);
}

/* "iqn.2026-12.org.vmdiskfs:HOSTNAME", the host name lowercased with
 * what an IQN may not hold (RFC 3722) turned into '-'. */
static char *
initiator_name (void)
{
  char host[256] = "localhost", *name;
  size_t i;

  if (gethostname (host, sizeof host - 1) < 0 || !host[0])
    strcpy (host, "localhost");
  host[sizeof host - 1] = '\0';
  for (i = 0; host[i]; i++) {
    unsigned char c = (unsigned char) host[i];
    host[i] = isalnum (c) || c == '.' || c == '-' ? (char) tolower (c) : '-';
  }
  if (asprintf (&name, "iqn.2026-12.org.vmdiskfs:%s", host) < 0)
    return NULL;
  return name;
}

/* Split "IQN/LUN" ("IQN" alone: LUN 0).  0, or -1 after a log line. */
static int
parse_name (struct iscsi_image *s, const char *name)
{
  const char *slash = name ? strrchr (name, '/') : NULL;
  char *end;
  unsigned long lun = 0;

  if (!name || !*name || name[0] == '/') {
    vd_error ("iscsi: %s: no target name (expected IQN/LUN)", s->desc);
    errno = EINVAL;
    return -1;
  }
  if (slash) {
    errno = 0;
    lun = strtoul (slash + 1, &end, 10);
    if (!slash[1] || *end || errno || lun > 16383 || !isdigit (slash[1])) {
      vd_error ("iscsi: %s: \"%s\" is not a LUN number (expected IQN/LUN)",
                s->desc, slash + 1);
      errno = EINVAL;
      return -1;
    }
  }
  s->target = slash ? strndup (name, slash - name) : strdup (name);
  if (!s->target)
    return -1;
  s->lun = (int) lun;
  return 0;
}

/* What open asks the target: device type, capacity, limits.  CMD_*,
 * with *eno for the open's errno. */
static int
probe_lun (struct iscsi_image *s, struct iscsi_session *ss, int *eno,
           char *err)
{
  struct scsi_sense sense;
  struct scsi_task *task;
  struct req r;
  bool has_bl = false, has_lbp = false;
  int ret, i;

  /* A disk, nothing else (LUN 0 of tgtd is its controller). */
  r = (struct req) { .kind = REQ_INQUIRY };
  if ((ret = req_run (s, ss, &r, &task, &sense, err, ERRLEN)) != CMD_OK) {
    if (ret == CMD_SCSI)
      *eno = ENOENT;
    return ret;
  }
  {
    struct scsi_inquiry_standard *inq = scsi_datain_unmarshall (task);

    if (!inq) {
      set_err (err, ERRLEN, "INQUIRY: unreadable answer");
      scsi_free_scsi_task (task);
      return CMD_SCSI;
    }
    if (inq->qualifier != SCSI_INQUIRY_PERIPHERAL_QUALIFIER_CONNECTED) {
      set_err (err, ERRLEN, "LUN %d: no such logical unit", s->lun);
      *eno = ENOENT;
      scsi_free_scsi_task (task);
      return CMD_SCSI;
    }
    if (inq->device_type != SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
      set_err (err, ERRLEN, "LUN %d is a %s, not a disk", s->lun,
               scsi_devtype_to_str (inq->device_type));
      *eno = ENOTSUP;
      scsi_free_scsi_task (task);
      return CMD_SCSI;
    }
  }
  scsi_free_scsi_task (task);

  r = (struct req) { .kind = REQ_READCAP16 };
  if ((ret = req_run (s, ss, &r, &task, &sense, err, ERRLEN)) != CMD_OK) {
    prefix_err (err, ERRLEN, "READ CAPACITY(16): ");
    return ret;
  }
  {
    struct scsi_readcapacity16 *rc = scsi_datain_unmarshall (task);
    uint64_t size;

    if (!rc || rc->block_length < 512 || rc->block_length > 65536
        || (rc->block_length & (rc->block_length - 1))
        || rc->returned_lba == UINT64_MAX
        || MUL_OVERFLOW (rc->returned_lba + 1, (uint64_t) rc->block_length,
                         &size)
        || size > INT64_MAX) {
      set_err (err, ERRLEN, "READ CAPACITY(16): unusable answer");
      scsi_free_scsi_task (task);
      return CMD_SCSI;
    }
    s->bs = rc->block_length;
    s->img.size = size;
    s->lbpme = rc->lbpme;
    s->lbprz = rc->lbprz;
  }
  scsi_free_scsi_task (task);

  /* Which VPD pages: block limits (0xb0), provisioning (0xb2).  A target
   * without the list has neither. */
  r = (struct req) { .kind = REQ_INQUIRY, .evpd = 1,
                     .page = SCSI_INQUIRY_PAGECODE_SUPPORTED_VPD_PAGES };
  ret = req_run (s, ss, &r, &task, &sense, err, ERRLEN);
  if (ret == CMD_TRANSPORT)
    return ret;
  if (ret == CMD_OK) {
    struct scsi_inquiry_supported_pages *sp = scsi_datain_unmarshall (task);

    for (i = 0; sp && i < sp->num_pages; i++) {
      if (sp->pages[i] == SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS)
        has_bl = true;
      else if (sp->pages[i] == SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING)
        has_lbp = true;
    }
    scsi_free_scsi_task (task);
  }

  s->max_xfer = ISCSI_DEFAULT_XFER;
  s->ws_blocks = ISCSI_WS_CAP / s->bs;
  if (has_bl) {
    r = (struct req) { .kind = REQ_INQUIRY, .evpd = 1,
                       .page = SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS };
    ret = req_run (s, ss, &r, &task, &sense, err, ERRLEN);
    if (ret == CMD_TRANSPORT)
      return ret;
    if (ret == CMD_OK) {
      struct scsi_inquiry_block_limits *bl = scsi_datain_unmarshall (task);

      if (bl && bl->max_xfer_len)
        s->max_xfer = (uint32_t) MIN ((uint64_t) bl->max_xfer_len * s->bs,
                                      (uint64_t) ISCSI_XFER_CAP);
      if (bl && bl->max_ws_len)
        s->ws_blocks = (uint32_t) MIN (bl->max_ws_len,
                                       (uint64_t) s->ws_blocks);
      scsi_free_scsi_task (task);
    }
  }
  s->max_xfer = MAX (s->max_xfer - s->max_xfer % s->bs, s->bs);
  s->ws_blocks = MAX (s->ws_blocks, 1U);

  if (has_lbp) {
    r = (struct req) { .kind = REQ_INQUIRY, .evpd = 1,
                       .page = SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING };
    ret = req_run (s, ss, &r, &task, &sense, err, ERRLEN);
    if (ret == CMD_TRANSPORT)
      return ret;
    if (ret == CMD_OK) {
      struct scsi_inquiry_logical_block_provisioning *lbp =
        scsi_datain_unmarshall (task);

      if (lbp)
        s->lbpws = lbp->lbpws;
      scsi_free_scsi_task (task);
    }
  }
  return CMD_OK;
}

static bool
iscsi_probe (const uint8_t *buf, size_t len)
{
  return false;                 /* never a file */
}

static const struct vd_format iscsi_format = {
  .name = "iscsi",
  .probe = iscsi_probe,
  .close = iscsi_close,
  .read = iscsi_read,
  .write = iscsi_write,
  .flush = iscsi_flush,
  .block_status = iscsi_block_status,
  .zero = iscsi_zero,
};

struct vd_image *
vd_iscsi_open (const struct vd_netsrc *src, unsigned flags, const char *desc)
{
  const struct vd_net_host *h = src->nhosts ? &src->hosts[0] : NULL;
  struct iscsi_image *s = calloc (1, sizeof *s);
  struct iscsi_session *ss;
  pthread_condattr_t ca;
  char err[ERRLEN];
  int eno, ret;

  if (!s)
    return NULL;
  pthread_mutex_init (&s->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&s->cond, &ca);
  pthread_condattr_destroy (&ca);
  if ((s->desc = strdup (desc)) == NULL)
    goto nomem;
  s->img.fmt = &iscsi_format;
  s->timeout_s = src->timeout_s ? src->timeout_s : VD_NET_TIMEOUT_S;
  s->backoff_ms = BACKOFF_MIN_MS;
  s->retry_at = now_mono ();
  if (!h || !h->name || !*h->name || h->socket) {
    vd_error ("iscsi: %s: no host to connect to", desc);
    errno = EINVAL;
    goto fail;
  }
  if (parse_name (s, src->name) < 0)
    goto fail;
  if (asprintf (&s->portal, "%s:%s", h->name,
                h->port ? h->port : ISCSI_DEFAULT_PORT) < 0) {
    s->portal = NULL;
    goto nomem;
  }
  if ((s->initiator = initiator_name ()) == NULL
      || (src->user && (s->user = strdup (src->user)) == NULL)
      || (src->secret && (s->secret = strdup (src->secret)) == NULL))
    goto nomem;

  if ((ss = session_get (s, &eno, err, sizeof err)) == NULL) {
    vd_error ("iscsi: %s: %s", desc, err);
    errno = eno == EAGAIN ? EIO : eno;
    goto fail;
  }
  eno = EIO;
  ret = probe_lun (s, ss, &eno, err);
  session_put (s, ss, ret == CMD_TRANSPORT);
  if (ret != CMD_OK) {
    vd_error ("iscsi: %s: %s", desc, err);
    errno = eno;
    goto fail;
  }
  /* The first failure after open waits 0.1 s, not what the probe's
   * session_put may have left. */
  s->backoff_ms = BACKOFF_MIN_MS;
  if (flags & VD_OPEN_RDWR)
    s->img.zero_align = MAX (s->bs, 4096U);
  vd_debug ("iscsi: %s: %" PRIu64 " bytes, blocks of %u, %u bytes per "
            "command, LBPME %d LBPRZ %d LBPWS %d", desc, s->img.size,
            s->bs, s->max_xfer, s->lbpme, s->lbprz, s->lbpws);
  return &s->img;

 nomem:
  vd_error ("iscsi: %s: out of memory", desc);
  errno = ENOMEM;
 fail:
  {
    int e = errno;
    image_free (s);
    errno = e;
  }
  return NULL;
}
