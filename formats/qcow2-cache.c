/* vmdiskfs - qcow2 driver (read side): the L2 table cache.
 *
 * Each open image (not a live one: VD_OPEN_LIVE keeps no cache) has one
 * cache of L2 tables, read from the file on first use and kept until the
 * image is closed or the slot is needed for another table.  The mapping
 * (qcow2-cluster.c) pins a table with qcow2_cache_get, reads its entries
 * and unpins it with qcow2_cache_put.
 *
 * Writable images (VD_OPEN_RDWR) also have the writer's metadata cache
 * (the second half of this file): L2 tables and refcount blocks the
 * writer changed or consulted, kept dirty in memory until the write-back
 * (qcow2_writeback in qcow2-refcount.c, the one place that writes cached
 * metadata and enforces the order "data and refcounts, then L2, then
 * L1").  Readers of a writable image look there first (qcow2_cache_get):
 * a table the writer holds is the current one, the file may be older.  A
 * table the writer takes over is dropped from this read cache, so the
 * read cache never holds a stale copy: while the writer holds a table
 * readers never fill the read cache with it, and after the writer let it
 * go (written back) the file is current.  format.c never lets readers
 * and the writer run at once (img->rw), so readers may look at the
 * writer's cache without a lock: it changes only under the writer.
 *
 * Threads: qcow2_cache_get and qcow2_cache_put run concurrently (the FUSE
 * daemon's worker threads).  The cache is split into shards chosen by a
 * hash of the L2 table's file offset, each with its own mutex, so threads
 * only contend when they want tables of the same shard (at least 16
 * shards when the cache has 16 slots, about 16 slots per shard); a table
 * is read from the file with its shard's mutex held (a page-cache copy of
 * one cluster).  A table in use is pinned (slot->pins, under the shard
 * mutex) and never evicted; when every slot of a shard is pinned the
 * reader uses a private copy instead.
 *
 * Memory bound: each image's cache has at most min(L2 tables the L1
 * table can reference, cache_bytes / cluster_size) slots (at least one);
 * a slot's table is allocated on first use and charged to the chain's
 * budget (vdformat.h).  When the budget is spent an image reuses its own
 * least recently used table, or reads a private copy for the one request.
 * cache_bytes defaults to QCOW2_DEFAULT_CACHE_BYTES (8 MiB) and is set
 * process-wide with qcow2_set_cache_size() before images are opened.
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
#include <unistd.h>

#include "vdformat.h"
#include "qcow2.h"
#include "log.h"
#include "cleanup.h"

static uint64_t cache_bytes = QCOW2_DEFAULT_CACHE_BYTES;   /* atomic */
static uint64_t next_cache_id = 1;                          /* atomic */

/* The cache is set-associative: a table's shard is its set.  At least
 * MIN_SHARDS shards (when there are that many slots) so that threads
 * rarely meet on one mutex, and at most WAYS slots per shard beyond that
 * so that a lookup scans few slots (512-byte clusters give 16384 slots in
 * 8 MiB: 1024 shards of 16). */
#define MIN_SHARDS 16
#define WAYS 16

struct l2_slot {
  uint64_t offset;              /* file offset of the table; 0 = empty    */
  uint8_t *table;               /* cluster_size bytes, on-disk order      */
  unsigned pins;                /* readers using table right now          */
  uint64_t stamp;               /* last use, for LRU eviction             */
};

struct l2_shard {
  pthread_mutex_t lock;         /* protects everything in the shard       */
  struct l2_slot *slots;
  unsigned nslots;
  uint64_t clock;
} __attribute__ ((aligned (64)));

struct qcow2_l2_cache {
  uint64_t id;                  /* unique per open image (decompress key) */
  struct vd_budget *budget;     /* the image's (it holds the reference)   */
  size_t table_bytes;
  unsigned nshards;
  struct l2_shard *shards;
};

void
qcow2_set_cache_size (uint64_t bytes)
{
  __atomic_store_n (&cache_bytes, bytes, __ATOMIC_RELAXED);
  vd_set_chain_budget (bytes + QCOW2_L1_COPY_MAX);
}

struct qcow2_l2_cache *
qcow2_cache_new (const struct qcow2_image *q)
{
  struct qcow2_l2_cache *c;
  uint64_t limit = __atomic_load_n (&cache_bytes, __ATOMIC_RELAXED);
  uint64_t nslots = limit >> q->cluster_bits;
  unsigned i, per, extra;

  nslots = MIN (nslots, q->nr_l2_tables);
  if (nslots == 0)
    nslots = 1;
  c = calloc (1, sizeof *c);
  if (!c)
    return NULL;
  c->id = __atomic_fetch_add (&next_cache_id, 1, __ATOMIC_RELAXED);
  c->budget = q->budget;
  c->table_bytes = q->cluster_size;
  c->nshards = nslots <= MIN_SHARDS ? nslots : MAX (MIN_SHARDS, nslots / WAYS);
  /* Shards are cache-line aligned (no false sharing between mutexes):
   * calloc does not promise that alignment. */
  if (posix_memalign ((void **) &c->shards, 64,
                      c->nshards * sizeof *c->shards) != 0) {
    free (c);
    return NULL;
  }
  memset (c->shards, 0, c->nshards * sizeof *c->shards);
  per = nslots / c->nshards;
  extra = nslots % c->nshards;
  for (i = 0; i < c->nshards; i++) {
    struct l2_shard *s = &c->shards[i];

    pthread_mutex_init (&s->lock, NULL);
    s->nslots = per + (i < extra);
    s->slots = calloc (s->nslots, sizeof *s->slots);
    if (!s->slots) {
      c->nshards = i + 1;
      qcow2_cache_free (c);
      return NULL;
    }
  }
  return c;
}

uint64_t
qcow2_cache_id (const struct qcow2_l2_cache *c)
{
  return c->id;
}

void
qcow2_cache_free (struct qcow2_l2_cache *c)
{
  unsigned i, j;

  if (!c)
    return;
  for (i = 0; i < c->nshards; i++) {
    struct l2_shard *s = &c->shards[i];

    for (j = 0; s->slots && j < s->nslots; j++)
      if (s->slots[j].table) {
        free (s->slots[j].table);
        vd_budget_release (c->budget, c->table_bytes);
      }
    free (s->slots);
    pthread_mutex_destroy (&s->lock);
  }
  free (c->shards);
  free (c);
}

static int
read_l2 (struct qcow2_image *q, uint64_t l2_off, uint8_t *table)
{
  /* l2_off was validated with the L1 table: aligned, inside the file. */
  if (vd_pread_full (q->fd, table, q->cluster_size, l2_off, false) < 0) {
    vd_error ("qcow2: %s: cannot read L2 table at %#" PRIx64 ": %m",
              q->img.path, l2_off);
    errno = EIO;
    return -1;
  }
  return 0;
}

int
qcow2_cache_get (struct qcow2_image *q, uint64_t l2_off,
                 struct qcow2_l2_ref *ref)
{
  struct qcow2_l2_cache *c = q->cache;
  uint64_t h = (l2_off >> q->cluster_bits) * 0x9e3779b97f4a7c15ULL;
  struct l2_shard *s = &c->shards[(h >> 32) % c->nshards];
  struct l2_slot *victim = NULL, *empty = NULL;
  unsigned i;
  uint8_t *priv;

  ref->borrowed = false;
  if (q->w) {
    const uint8_t *t = qcow2_wcache_peek (q, l2_off);

    if (t) {
      ref->table = t;
      ref->shard = NULL;
      ref->slot = NULL;
      ref->borrowed = true;
      return 0;
    }
  }
  pthread_mutex_lock (&s->lock);
  s->clock++;
  for (i = 0; i < s->nslots; i++) {
    struct l2_slot *sl = &s->slots[i];

    if (sl->offset == l2_off) {
      sl->pins++;
      sl->stamp = s->clock;
      pthread_mutex_unlock (&s->lock);
      ref->table = sl->table;
      ref->shard = s;
      ref->slot = sl;
      return 0;
    }
    if (sl->pins != 0)
      continue;
    if (!sl->table) {
      if (!empty)
        empty = sl;
    }
    else if (!victim || sl->stamp < victim->stamp)
      victim = sl;
  }
  /* A new table while the chain's budget allows, else the least
   * recently used of ours, else a private copy. */
  if (empty && vd_budget_charge (c->budget, c->table_bytes)) {
    if ((empty->table = malloc (c->table_bytes)) == NULL) {
      vd_budget_release (c->budget, c->table_bytes);
      pthread_mutex_unlock (&s->lock);
      return -1;
    }
    victim = empty;
  }
  if (victim) {
    victim->offset = 0;
    if (read_l2 (q, l2_off, victim->table) < 0) {
      pthread_mutex_unlock (&s->lock);
      return -1;
    }
    victim->offset = l2_off;
    victim->pins = 1;
    victim->stamp = s->clock;
    pthread_mutex_unlock (&s->lock);
    ref->table = victim->table;
    ref->shard = s;
    ref->slot = victim;
    return 0;
  }
  pthread_mutex_unlock (&s->lock);

  /* Every slot of the shard is in use: a private copy. */
  priv = malloc (c->table_bytes);
  if (!priv)
    return -1;
  if (read_l2 (q, l2_off, priv) < 0) {
    free (priv);
    return -1;
  }
  ref->table = priv;
  ref->shard = NULL;
  ref->slot = NULL;
  return 0;
}

void
qcow2_cache_put (struct qcow2_l2_ref *ref)
{
  if (ref->borrowed)
    return;
  if (ref->shard) {
    pthread_mutex_lock (&ref->shard->lock);
    ref->slot->pins--;
    pthread_mutex_unlock (&ref->shard->lock);
  }
  else
    free ((void *) ref->table);
}

void
qcow2_cache_drop (struct qcow2_image *q, uint64_t l2_off)
{
  struct qcow2_l2_cache *c = q->cache;
  uint64_t h = (l2_off >> q->cluster_bits) * 0x9e3779b97f4a7c15ULL;
  struct l2_shard *s;
  unsigned i;

  if (!c)
    return;
  s = &c->shards[(h >> 32) % c->nshards];
  pthread_mutex_lock (&s->lock);
  for (i = 0; i < s->nslots; i++)
    if (s->slots[i].offset == l2_off && s->slots[i].pins == 0)
      s->slots[i].offset = 0;
  pthread_mutex_unlock (&s->lock);
}

/* ---- The writer's metadata cache ----
 *
 * A fixed number of slots (limit: the bytes given at open over the
 * cluster size, at least 8) with a clock hand for eviction and a hash of
 * offsets.  Only clean, unpinned slots are evicted; when all are dirty the
 * cache asks for a write-back (qcow2_writeback), which leaves them clean.
 * A slot pinned by the running operation is never evicted; if every slot
 * is pinned (or a write-back is running and needs a refcount block) one
 * more slot is made, beyond the limit, and given back when it is next
 * evicted. */

static unsigned
whash (const struct qcow2_writer *w, uint64_t off, unsigned cluster_bits)
{
  return ((off >> cluster_bits) * 0x9e3779b97f4a7c15ULL >> 32)
    & (w->nheads - 1);
}

int
qcow2_wcache_init (struct qcow2_image *q, uint64_t bytes)
{
  struct qcow2_writer *w = q->w;
  uint64_t n = bytes >> q->cluster_bits;
  unsigned i;

  if (n < 8)
    n = 8;
  w->limit = n;
  w->nheads = 16;
  while (w->nheads < 2 * n)
    w->nheads <<= 1;
  w->heads = malloc (w->nheads * sizeof *w->heads);
  w->slots = calloc (n, sizeof *w->slots);
  if (!w->heads || !w->slots)
    return -1;
  for (i = 0; i < w->nheads; i++)
    w->heads[i] = -1;
  return 0;
}

void
qcow2_wcache_free (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  unsigned i;

  for (i = 0; i < w->nslots; i++) {
    free (w->slots[i]->data);
    free (w->slots[i]);
  }
  free (w->slots);
  free (w->heads);
}

static int
wfind (struct qcow2_image *q, uint64_t off)
{
  struct qcow2_writer *w = q->w;
  int i;

  for (i = w->heads[whash (w, off, q->cluster_bits)]; i >= 0;
       i = w->slots[i]->next)
    if (w->slots[i]->off == off)
      return i;
  return -1;
}

const uint8_t *
qcow2_wcache_peek (struct qcow2_image *q, uint64_t off)
{
  int i = wfind (q, off);

  return i >= 0 ? q->w->slots[i]->data : NULL;
}

static void
wunlink (struct qcow2_image *q, int idx)
{
  struct qcow2_writer *w = q->w;
  int *p = &w->heads[whash (w, w->slots[idx]->off, q->cluster_bits)];

  while (*p != idx)
    p = &w->slots[*p]->next;
  *p = w->slots[idx]->next;
  w->slots[idx]->off = 0;
  w->slots[idx]->dirty = false;
}

/* A free slot: an empty one, else a clean unpinned one (clock). */
static int
wvictim (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  unsigned i, tries;

  for (tries = 0; tries < 2 * w->nslots; tries++) {
    struct qcow2_wslot *s;

    i = w->hand++ % w->nslots;
    s = w->slots[i];
    if (s->pins || s->dirty)
      continue;
    if (s->off == 0)
      return i;
    if (s->used) {
      s->used = false;
      continue;
    }
    wunlink (q, i);
    return i;
  }
  return -1;
}

static int
wnew_slot (struct qcow2_image *q)
{
  struct qcow2_writer *w = q->w;
  struct qcow2_wslot *s, **ns;
  int i;

  if (w->nslots >= w->limit) {
    ns = realloc (w->slots, (w->nslots + 1) * sizeof *ns);
    if (!ns)
      return -1;
    w->slots = ns;
  }
  s = calloc (1, sizeof *s);
  if (!s)
    return -1;
  s->data = malloc (q->cluster_size);
  if (!s->data) {
    free (s);
    return -1;
  }
  s->next = -1;
  i = w->nslots++;
  w->slots[i] = s;
  if (w->nslots > w->nheads / 2) {
    /* Grew far past the limit (everything pinned): a bigger hash. */
    unsigned nh = w->nheads * 2, k;
    int *heads = malloc (nh * sizeof *heads);

    if (heads) {
      for (k = 0; k < nh; k++)
        heads[k] = -1;
      free (w->heads);
      w->heads = heads;
      w->nheads = nh;
      for (k = 0; k < w->nslots; k++)
        if (w->slots[k]->off) {
          unsigned h = whash (w, w->slots[k]->off, q->cluster_bits);
          w->slots[k]->next = heads[h];
          heads[h] = k;
        }
    }
  }
  return i;
}

struct qcow2_wslot *
qcow2_wcache_get (struct qcow2_image *q, uint64_t off, enum qcow2_wkind kind,
                  bool fresh)
{
  struct qcow2_writer *w = q->w;
  struct qcow2_wslot *s;
  unsigned h;
  int i = wfind (q, off);

  if (i >= 0) {
    s = w->slots[i];
    if (fresh) {
      memset (s->data, 0, q->cluster_size);
      s->kind = kind;
    }
    s->pins++;
    s->used = true;
    return s;
  }
  if (w->nslots < w->limit)
    i = wnew_slot (q);
  else if ((i = wvictim (q)) < 0 && !w->in_writeback) {
    if (qcow2_writeback (q) < 0)
      return NULL;
    i = wvictim (q);
  }
  if (i < 0)
    i = wnew_slot (q);
  if (i < 0)
    return NULL;
  s = w->slots[i];
  if (fresh)
    memset (s->data, 0, q->cluster_size);
  else if (vd_pread_full (q->fd, s->data, q->cluster_size, off, true) < 0) {
    vd_error ("qcow2: %s: cannot read metadata at %#" PRIx64 ": %m",
              q->img.path, off);
    errno = EIO;
    return NULL;
  }
  /* The read cache must not keep an older copy of a table we change. */
  if (kind == QW_L2 || fresh)
    qcow2_cache_drop (q, off);
  s->off = off;
  s->kind = kind;
  s->dirty = false;
  s->used = true;
  s->pins = 1;
  h = whash (w, off, q->cluster_bits);
  s->next = w->heads[h];
  w->heads[h] = i;
  return s;
}

void
qcow2_wcache_put (struct qcow2_wslot *s)
{
  if (s)
    s->pins--;
}

void
qcow2_wcache_dirty (struct qcow2_image *q, struct qcow2_wslot *s)
{
  s->dirty = true;
  q->w->meta_dirty = true;
}

void
qcow2_wcache_drop (struct qcow2_image *q, uint64_t off)
{
  int i = wfind (q, off);

  if (i >= 0 && q->w->slots[i]->pins == 0)
    wunlink (q, i);
  else if (i >= 0)
    q->w->slots[i]->dirty = false;  /* pinned by the caller: never written */
}

int
qcow2_wcache_write (struct qcow2_image *q, enum qcow2_wkind kind, bool *any)
{
  struct qcow2_writer *w = q->w;
  unsigned i;

  for (i = 0; i < w->nslots; i++) {
    struct qcow2_wslot *s = w->slots[i];

    if (s->off == 0 || !s->dirty || s->kind != kind)
      continue;
    if (pwrite (q->fd, s->data, q->cluster_size, s->off)
        != (ssize_t) q->cluster_size) {
      if (errno == 0)
        errno = ENOSPC;
      vd_error ("qcow2: %s: cannot write %s at %#" PRIx64 ": %m",
                q->img.path, kind == QW_L2 ? "L2 table" : "refcount block",
                s->off);
      return -1;
    }
    s->dirty = false;
    *any = true;
  }
  return 0;
}
