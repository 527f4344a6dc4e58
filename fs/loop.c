/* vmdiskfs - the session loop: one reader thread, a pool for the rest.
 *
 * libfuse's multithreaded loop makes every request wake a sleeping
 * thread.  On a small machine that wakeup is most of a 4k read's cost:
 * one busy thread taking queued requests back to back did up to twice
 * the IOPS of the pool (bench/README.md, "The session loop").  So:
 *
 *   - One thread at a time, the reader, reads /dev/fuse.  The device is
 *     non-blocking: after a read it answered itself the reader tries
 *     again for up to spin_us microseconds before it sleeps in poll(),
 *     so a program that asks again at once finds the daemon awake.
 *   - Reads of an open file (the disks, domain.xml, staging files: all
 *     local, bounded by the disk) are served by the reader itself.
 *   - Everything else (lookup, open, mkdir, writes: libvirt calls, LVM,
 *     commits that take seconds) is handed to a pool of workers, so that
 *     a slow call never holds up the reads.  The request's buffer goes with it; the reader
 *     takes a fresh one.
 *   - A read can still be slow (an image on a disk that stalls, a lock a
 *     writer holds).  A watchdog looks at the reader every WATCH_MS while
 *     reads come in; a reader busy with the same request at two looks
 *     loses the role to a worker, and finishes its request as a worker.
 *     One stalled read thus costs its own thread, not the mount.  At most
 *     max_threads readers are stuck at once: then the mount waits, as it
 *     would with libfuse's loop, rather than add threads without end.
 *
 * Signals: the workers and the watchdog block them, so SIGTERM and
 * SIGINT reach the main thread.  When the main thread is the reader its
 * poll() is interrupted at once; when it is not, the reader's poll()
 * wakes each EXIT_POLL_MS to look at fuse_session_exited().
 *
 * tests/integration/stalled-read.sh stalls reads for real.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmdiskfs.h"
#include "loop.h"
#include "log.h"

/* How often the watchdog looks at a busy reader, and how often a reader
 * that is not the main thread looks for the end of the session. */
#define WATCH_MS 20
#define EXIT_POLL_MS 500
/* Free request buffers kept for the reader (each is max_write plus a
 * page, mostly untouched). */
#define SPARE_BUFS 8

struct job
{
  struct job *next;
  struct fuse_buf buf;          /* mem owned by the job; NULL: become reader */
};

static struct
{
  bool (*read_may_block) (uint64_t fh);   /* fs_loop_config's */
  struct fuse_session *se;
  int fd;
  unsigned spin_us;
  unsigned max_threads, max_idle;

  pthread_mutex_t lock;
  pthread_cond_t work;          /* workers: a job or the end */
  pthread_cond_t done;          /* main: the last worker left */
  pthread_cond_t end;           /* main: the session ended */
  struct job *head, *tail;
  unsigned nthreads, nidle;     /* workers, not counting the main thread */
  unsigned njobs;               /* queued, not yet taken */
  unsigned nstuck;              /* readers that lost the role while busy */
  bool exiting;
  int err;

  void *spare[SPARE_BUFS];      /* request buffers for the reader */
  unsigned nspare;

  /* The reader's state, for the watchdog. */
  _Atomic unsigned long gen;    /* bumped when the role changes hands */
  _Atomic unsigned long seq;    /* bumped for each request served inline */
  /* gen + 1 of the reader serving a request inline, or 0: a reader that
   * lost the role and is still stuck no longer counts as busy. */
  _Atomic unsigned long busy;
  _Atomic bool watching;        /* the watchdog is awake */
  pthread_cond_t watch;
  pthread_t watchdog;
  bool have_watchdog;
} L = {
  .lock = PTHREAD_MUTEX_INITIALIZER,
  .work = PTHREAD_COND_INITIALIZER,
  .done = PTHREAD_COND_INITIALIZER,
  .end = PTHREAD_COND_INITIALIZER,
  .watch = PTHREAD_COND_INITIALIZER,
};

static pthread_t main_thread;

static void *worker_main (void *arg);

static bool
exiting (void)
{
  bool e;

  pthread_mutex_lock (&L.lock);
  e = L.exiting || fuse_session_exited (L.se);
  pthread_mutex_unlock (&L.lock);
  return e;
}

static void
set_exiting (int err)
{
  pthread_mutex_lock (&L.lock);
  if (!L.exiting) {
    L.exiting = true;
    L.err = err;
  }
  pthread_cond_broadcast (&L.work);
  pthread_cond_broadcast (&L.watch);
  pthread_cond_broadcast (&L.end);
  pthread_mutex_unlock (&L.lock);
}

/* A new thread with every signal blocked (they are for the main
 * thread).  L.lock held. */
static int
start_thread_locked (pthread_t *t, void *(*fn) (void *), bool detach)
{
  sigset_t all, old;
  pthread_attr_t attr;
  int e;

  sigfillset (&all);
  pthread_sigmask (SIG_BLOCK, &all, &old);
  pthread_attr_init (&attr);
  if (detach)
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  e = pthread_create (t, &attr, fn, NULL);
  pthread_attr_destroy (&attr);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  return e;
}

/* Queue a job; wake an idle worker, and start one more while the jobs
 * outnumber the idle workers (one of them may be busy for seconds in
 * libvirt: a quick request must not wait behind it).  At max_threads
 * jobs wait in the queue.  The reader's role goes first in the queue,
 * and always gets a thread: without a reader the mount stops. */
static void
queue_job (struct job *j)
{
  bool role = j->buf.mem == NULL;
  pthread_t t;

  pthread_mutex_lock (&L.lock);
  if (role) {
    j->next = L.head;
    L.head = j;
    if (!L.tail)
      L.tail = j;
  }
  else {
    j->next = NULL;
    if (L.tail)
      L.tail->next = j;
    else
      L.head = j;
    L.tail = j;
  }
  L.njobs++;
  if (L.nidle > 0)
    pthread_cond_signal (&L.work);
  if (L.njobs > L.nidle && (L.nthreads < L.max_threads || role)) {
    if (start_thread_locked (&t, worker_main, true) == 0)
      L.nthreads++;
    else
      vd_warn ("session loop: cannot start a thread: %s",
               strerror (errno));
  }
  pthread_mutex_unlock (&L.lock);
}

static void
put_spare (void *mem)
{
  pthread_mutex_lock (&L.lock);
  if (L.nspare < SPARE_BUFS) {
    L.spare[L.nspare++] = mem;
    mem = NULL;
  }
  pthread_mutex_unlock (&L.lock);
  free (mem);
}

static void *
get_spare (void)
{
  void *mem = NULL;

  pthread_mutex_lock (&L.lock);
  if (L.nspare > 0)
    mem = L.spare[--L.nspare];
  pthread_mutex_unlock (&L.lock);
  return mem;                   /* NULL: libfuse allocates one */
}

/* Whether the reader serves this request itself: reads, of any size.
 * Handing the kernel's 960 KiB readahead requests to the pool instead
 * cost a wakeup each: sequential reads went about 10% slower than
 * libfuse's loop and 20% slower than serving them here, with 30% more
 * daemon CPU (bench/README.md, "The session loop"). */
static bool
serve_inline (const struct fuse_buf *buf)
{
  const struct fuse_in_header *in = buf->mem;
  const struct fuse_read_in *rd = (const void *) (in + 1);

  if (buf->size < sizeof *in || (buf->flags & FUSE_BUF_IS_FD)
      || in->opcode != FUSE_READ)
    return false;
  /* A read of a network disk may wait on its server up to its timeout:
   * the pool takes it, and the reader goes on reading /dev/fuse. */
  if (L.read_may_block
      && (buf->size < sizeof *in + sizeof *rd
          || L.read_may_block (rd->fh)))
    return false;
  return true;
}

/* Wake the watchdog when requests start coming after a quiet spell. */
static void
watch_me (void)
{
  if (!L.have_watchdog || atomic_load (&L.watching))
    return;
  pthread_mutex_lock (&L.lock);
  atomic_store (&L.watching, true);
  pthread_cond_signal (&L.watch);
  pthread_mutex_unlock (&L.lock);
}

static long
us_since (const struct timespec *t0)
{
  struct timespec t;

  clock_gettime (CLOCK_MONOTONIC, &t);
  return (t.tv_sec - t0->tv_sec) * 1000000L
    + (t.tv_nsec - t0->tv_nsec) / 1000;
}

/* The next request into *buf: 1, or 0 at the end of the session, or
 * -errno.  If spin, tries again for spin_us first, then sleeps in
 * poll(). */
static int
receive (struct fuse_buf *buf, bool spin)
{
  struct timespec t0;
  bool spun = false;
  int r;

  for (;;) {
    r = fuse_session_receive_buf (L.se, buf);
    if (r > 0)
      return 1;
    if (r == 0 || fuse_session_exited (L.se))
      return 0;
    if (r == -EINTR)
      continue;
    if (r != -EAGAIN)
      return r;
    if (!spun) {
      clock_gettime (CLOCK_MONOTONIC, &t0);
      spun = true;
    }
    if (spin && us_since (&t0) < (long) L.spin_us)
      continue;
    else {
      struct pollfd p = { .fd = L.fd, .events = POLLIN };
      int timeout = pthread_equal (pthread_self (), main_thread)
        ? -1 : EXIT_POLL_MS;

      if (poll (&p, 1, timeout) < 0 && errno != EINTR)
        return -errno;
      if (exiting ())
        return 0;
      /* POLLERR and the like: the next read says why (ENODEV once
       * unmounted). */
      spun = false;
    }
  }
}

/* Serve as the reader until the session ends or the watchdog hands the
 * role to another thread.  Returns true if the session ended. */
static bool
reader (void)
{
  struct fuse_buf buf = { .mem = NULL };
  unsigned long gen = atomic_load (&L.gen);
  bool ended = false, spin = false;

  for (;;) {
    struct job *j;
    int r;

    if (!buf.mem)
      buf.mem = get_spare ();
    /* Spin only after a reply of our own: the reader that got it may
     * ask again at once.  After a hand-off the worker needs the CPU. */
    r = receive (&buf, spin && L.spin_us > 0);
    spin = false;
    if (r <= 0) {
      if (r < 0)
        vd_error ("session loop: reading /dev/fuse: %s", strerror (-r));
      set_exiting (r);
      ended = true;
      break;
    }
    if (serve_inline (&buf)) {
      unsigned long me = gen + 1, was = me;

      /* seq before watch_me: the watchdog, going to sleep, looks at seq
       * after it cleared watching, so one of the two sees the other. */
      atomic_fetch_add (&L.seq, 1);
      atomic_store (&L.busy, me);
      watch_me ();
      fuse_session_process_buf (L.se, &buf);
      /* Clear only our own mark: a new reader may have set its own. */
      atomic_compare_exchange_strong (&L.busy, &was, 0);
      spin = true;
      if (atomic_load (&L.gen) != gen) {
        /* The watchdog gave the role away. */
        pthread_mutex_lock (&L.lock);
        L.nstuck--;
        pthread_mutex_unlock (&L.lock);
        break;
      }
      continue;
    }
    j = malloc (sizeof *j);
    if (!j) {
      /* Serve it here rather than lose it. */
      fuse_session_process_buf (L.se, &buf);
      continue;
    }
    j->buf = buf;
    buf.mem = NULL;
    queue_job (j);
  }
  if (buf.mem)
    put_spare (buf.mem);
  return ended;
}

static void *
worker_main (void *arg)
{
  (void) arg;
  pthread_mutex_lock (&L.lock);
  for (;;) {
    struct job *j;

    while (!L.head && !L.exiting) {
      if (L.nidle >= L.max_idle)
        goto out;
      L.nidle++;
      pthread_cond_wait (&L.work, &L.lock);
      L.nidle--;
    }
    if (L.exiting)
      break;
    j = L.head;
    L.head = j->next;
    if (!L.head)
      L.tail = NULL;
    L.njobs--;
    pthread_mutex_unlock (&L.lock);
    if (j->buf.mem) {
      fuse_session_process_buf (L.se, &j->buf);
      put_spare (j->buf.mem);
    }
    else
      reader ();
    free (j);
    pthread_mutex_lock (&L.lock);
  }
 out:
  L.nthreads--;
  if (L.nthreads == 0)
    pthread_cond_broadcast (&L.done);
  pthread_mutex_unlock (&L.lock);
  return NULL;
}

/* The watchdog: asleep while no request is served inline; else looks at
 * the reader every WATCH_MS, and hands the role on from a reader stuck
 * in one request. */
static void *
watchdog_main (void *arg)
{
  unsigned long last_seq = 0;
  bool last_busy = false;
  unsigned quiet = 0;

  (void) arg;
  pthread_mutex_lock (&L.lock);
  while (!L.exiting) {
    if (!atomic_load (&L.watching)) {
      pthread_cond_wait (&L.watch, &L.lock);
      last_busy = false;
      quiet = 0;
      continue;
    }
    else {
      struct timespec t;
      unsigned long seq;
      bool busy;

      clock_gettime (CLOCK_REALTIME, &t);
      t.tv_nsec += WATCH_MS * 1000000L;
      if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait (&L.watch, &L.lock, &t);
      if (L.exiting)
        break;
      seq = atomic_load (&L.seq);
      busy = atomic_load (&L.busy) == atomic_load (&L.gen) + 1;
      if (busy && last_busy && seq == last_seq
          && L.nstuck < L.max_threads) {
        /* Bounded: if reads keep stalling (every image on a dead NFS
         * server), at most max_threads readers are stuck, and then the
         * mount waits as libfuse's loop would, without a thread more. */
        struct job *j = malloc (sizeof *j);

        if (j) {
          L.nstuck++;
          vd_debug ("session loop: a read has taken over %d ms; another "
                    "thread reads requests", WATCH_MS);
          atomic_fetch_add (&L.gen, 1);
          j->buf.mem = NULL;
          pthread_mutex_unlock (&L.lock);
          queue_job (j);
          pthread_mutex_lock (&L.lock);
        }
        busy = false;         /* the new reader starts afresh */
      }
      /* Back to sleep after a quiet spell (no request served inline). */
      if (seq == last_seq && !busy) {
        if (++quiet >= 5) {
          atomic_store (&L.watching, false);
          if (atomic_load (&L.seq) != seq) {
            atomic_store (&L.watching, true);
            quiet = 0;
          }
        }
      }
      else
        quiet = 0;
      last_seq = seq;
      last_busy = busy;
    }
  }
  pthread_mutex_unlock (&L.lock);
  return NULL;
}

int
fs_loop_run (struct fuse_session *se, const struct fs_loop_config *cfg)
{
  int fl;
  unsigned i;

  L.se = se;
  L.fd = fuse_session_fd (se);
  L.spin_us = cfg->spin_us;
  L.read_may_block = cfg->read_may_block;
  L.max_threads = cfg->max_threads > 0 ? cfg->max_threads : 1;
  L.max_idle = cfg->max_idle_threads < L.max_threads
    ? cfg->max_idle_threads : L.max_threads;
  main_thread = pthread_self ();

  fl = fcntl (L.fd, F_GETFL);
  if (fl < 0 || fcntl (L.fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    vd_error ("session loop: /dev/fuse: %s", strerror (errno));
    return -1;
  }
  pthread_mutex_lock (&L.lock);
  if (start_thread_locked (&L.watchdog, watchdog_main, false) == 0)
    L.have_watchdog = true;
  else
    vd_warn ("session loop: no watchdog thread: a stalled read holds up "
             "the mount");
  pthread_mutex_unlock (&L.lock);

  /* The main thread reads first.  Once it has lost the role it waits
   * for the end: the reader, a worker, sees it within EXIT_POLL_MS of a
   * signal. */
  if (!reader ()) {
    pthread_mutex_lock (&L.lock);
    while (!L.exiting)
      pthread_cond_wait (&L.end, &L.lock);
    pthread_mutex_unlock (&L.lock);
  }

  set_exiting (L.err);
  if (L.have_watchdog)
    pthread_join (L.watchdog, NULL);
  /* Wait for the workers to finish the requests they have. */
  pthread_mutex_lock (&L.lock);
  while (L.nthreads > 0)
    pthread_cond_wait (&L.done, &L.lock);
  while (L.head) {
    struct job *j = L.head;
    L.head = j->next;
    free (j->buf.mem);
    free (j);
  }
  L.tail = NULL;
  for (i = 0; i < L.nspare; i++)
    free (L.spare[i]);
  L.nspare = 0;
  pthread_mutex_unlock (&L.lock);

  fuse_session_reset (se);
  return L.err < 0 ? L.err : 0;
}
