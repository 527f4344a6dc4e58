/* vmdiskfs - qcow2 driver (read side): compressed clusters.
 *
 * A compressed L2 entry (== Compressed Clusters Descriptor ==) names a
 * host extent of whole sectors holding one cluster compressed with the
 * image's compression type (== Header ==, compression_type): raw deflate
 * (zlib, the default) or a zstd frame.  qcow2_read_compressed inflates
 * the cluster and copies the guest bytes wanted.
 *
 * Threads: any number of readers at once.  Clusters are inflated into
 * per-thread buffers (thread-local, freed at thread exit, at most 1 MiB
 * kept between calls), which also remember the last cluster inflated
 * (clusters up to 256 KiB), keyed by the image's cache id and the
 * extent's offset, so that sequential small reads do not inflate it
 * again; with VD_OPEN_LIVE the extent is always read again (it may have
 * been freed and rewritten).  Memory: per reading thread, at most 1 MiB
 * of buffers kept between calls (plus a zstd context), and up to three
 * clusters while one call inflates a big cluster.
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

#include <zlib.h>
#include <zstd.h>

#include "vdformat.h"
#include "qcow2.h"
#include "log.h"

/* Per-thread buffers; also remembers the last cluster inflated. */
struct zbuf {
  uint8_t *in, *out;
  size_t in_size, out_size;
  uint64_t cache_id, coff;      /* key of the cluster in out (0: none)    */
  ZSTD_DCtx *zstd;
};

static pthread_key_t zbuf_key;
static pthread_once_t zbuf_once = PTHREAD_ONCE_INIT;

static void
zbuf_free (void *p)
{
  struct zbuf *z = p;

  if (z) {
    free (z->in);
    free (z->out);
    ZSTD_freeDCtx (z->zstd);
    free (z);
  }
}

static void
zbuf_init (void)
{
  pthread_key_create (&zbuf_key, zbuf_free);
}

static struct zbuf *
zbuf_get (size_t in_size, size_t out_size)
{
  struct zbuf *z;

  pthread_once (&zbuf_once, zbuf_init);
  z = pthread_getspecific (zbuf_key);
  if (!z) {
    z = calloc (1, sizeof *z);
    if (!z || pthread_setspecific (zbuf_key, z) != 0) {
      free (z);
      return NULL;
    }
  }
  if (z->in_size < in_size) {
    free (z->in);
    z->in_size = 0;
    if ((z->in = malloc (in_size)) == NULL)
      return NULL;
    z->in_size = in_size;
  }
  if (z->out_size < out_size) {
    free (z->out);
    z->out_size = 0;
    z->cache_id = 0;
    if ((z->out = malloc (out_size)) == NULL)
      return NULL;
    z->out_size = out_size;
  }
  return z;
}

/* Keep at most ZBUF_KEEP bytes of buffers per thread between calls (a
 * daemon has many threads): clusters up to 256 KiB stay cached; bigger
 * ones are inflated into buffers freed right after use. */
#define ZBUF_KEEP (1U << 20)

static void
zbuf_trim (struct zbuf *z)
{
  if (z->in_size + z->out_size > ZBUF_KEEP) {
    free (z->in);
    free (z->out);
    z->in = z->out = NULL;
    z->in_size = z->out_size = 0;
    z->cache_id = 0;
  }
}

static int
inflate_zlib (const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
  z_stream s;
  int r;

  memset (&s, 0, sizeof s);
  /* Raw deflate.  qemu writes with a 4 KiB window (-12); -15 accepts that
   * and any larger window another writer might have used. */
  if (inflateInit2 (&s, -15) != Z_OK)
    return -1;
  s.next_in = (Bytef *) in;
  s.avail_in = in_len;
  s.next_out = out;
  s.avail_out = out_len;
  r = inflate (&s, Z_FINISH);
  inflateEnd (&s);
  /* A full cluster is success even if the stream goes on: the extent is
   * rounded up to sectors and may hold the start of the next one. */
  if (s.avail_out == 0 && (r == Z_STREAM_END || r == Z_OK || r == Z_BUF_ERROR))
    return 0;
  return -1;
}

static int
inflate_zstd (struct zbuf *z, const uint8_t *in, size_t in_len,
              uint8_t *out, size_t out_len)
{
  size_t frame, r;

  if (!z->zstd && (z->zstd = ZSTD_createDCtx ()) == NULL)
    return -1;
  /* The extent is rounded up to sectors: find the frame's real end. */
  frame = ZSTD_findFrameCompressedSize (in, in_len);
  if (ZSTD_isError (frame))
    return -1;
  r = ZSTD_decompressDCtx (z->zstd, out, out_len, in, frame);
  if (ZSTD_isError (r) || r != out_len)
    return -1;
  return 0;
}

int
qcow2_read_compressed (struct qcow2_image *q, uint64_t coff, uint64_t csize,
                       void *buf, uint64_t offset, uint64_t len)
{
  size_t cs = q->cluster_size;
  struct zbuf *z = zbuf_get (csize, cs);
  int r;

  if (!z)
    return -1;
  /* Live: the extent at coff may have been freed and rewritten since. */
  if (q->live || z->cache_id != qcow2_cache_id (q->cache) || z->coff != coff) {
    z->cache_id = 0;
    if (vd_pread_full (q->fd, z->in, csize, coff, false) < 0) {
      zbuf_trim (z);
      vd_error ("qcow2: %s: cannot read compressed cluster at %#" PRIx64
                ": %m", q->img.path, coff);
      errno = EIO;
      return -1;
    }
    if (q->compression == QCOW2_COMPRESS_ZSTD)
      r = inflate_zstd (z, z->in, csize, z->out, cs);
    else
      r = inflate_zlib (z->in, csize, z->out, cs);
    if (r < 0) {
      vd_error ("qcow2: %s: compressed cluster at %#" PRIx64 " (%" PRIu64
                " bytes, guest offset %#" PRIx64 ") does not decompress",
                q->img.path, coff, csize, offset);
      zbuf_trim (z);
      errno = EIO;
      return -1;
    }
    z->cache_id = qcow2_cache_id (q->cache);
    z->coff = coff;
  }
  memcpy (buf, z->out + (offset & (cs - 1)), len);
  zbuf_trim (z);
  return 0;
}
