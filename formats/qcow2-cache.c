/* vmdiskfs - qcow2 driver (read side): the L2 table cache.
 *
 * Each open image (not a live one: VD_OPEN_LIVE keeps no cache) has one
 * cache of L2 tables, read from the file on first use and kept until the
 * image is closed or the slot is needed for another table.  The mapping
 * (qcow2-cluster.c) pins a table with qcow2_cache_get, reads its entries
 * and unpins it with qcow2_cache_put.
 *
 * The write path (the next issue) puts its caches here too: the
 * refcount-block cache beside the L2 cache, and the write-back of dirty
 * tables.  The rule they will follow (DESIGN.md) is "refcounts before L2
 * before L1": a cluster's refcount reaches the disk before the L2 entry
 * that points to it, and an L2 table before the L1 entry that points to
 * it, so that a crash in between leaks clusters at worst and never leaves
 * an entry pointing to a free cluster.  One function here, the write-back,
 * will enforce that order; nothing else will write cached metadata.
 * Today the cache is read-only: nothing is dirty, nothing written.
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
  if (ref->shard) {
    pthread_mutex_lock (&ref->shard->lock);
    ref->slot->pins--;
    pthread_mutex_unlock (&ref->shard->lock);
  }
  else
    free ((void *) ref->table);
}
