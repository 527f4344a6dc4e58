/* vmdiskfs - network disks: naming them (parse, describe, copy) and
 * opening them through the driver of their protocol (netdisk.h).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netdisk.h"
#include "log.h"

const char *
vd_net_proto_name (enum vd_net_proto p)
{
  switch (p) {
  case VD_NET_NBD: return "nbd";
  case VD_NET_ISCSI: return "iscsi";
  case VD_NET_RBD: return "rbd";
  }
  return "?";
}

int
vd_net_proto_parse (const char *s, enum vd_net_proto *p)
{
  if (!s)
    return -1;
  if (strcmp (s, "nbd") == 0)
    *p = VD_NET_NBD;
  else if (strcmp (s, "iscsi") == 0)
    *p = VD_NET_ISCSI;
  else if (strcmp (s, "rbd") == 0)
    *p = VD_NET_RBD;
  else
    return -1;
  return 0;
}

static void
host_clear (struct vd_net_host *h)
{
  free (h->name);
  free (h->port);
  free (h->socket);
}

void
vd_netsrc_clear (struct vd_netsrc *src)
{
  size_t i;

  if (!src)
    return;
  for (i = 0; i < src->nhosts; i++)
    host_clear (&src->hosts[i]);
  free (src->hosts);
  free (src->name);
  free (src->user);
  if (src->secret) {
    explicit_bzero (src->secret, strlen (src->secret));
    free (src->secret);
  }
  free (src->config);
  free (src->snapshot);
  memset (src, 0, sizeof *src);
}

void
vd_netsrc_free (struct vd_netsrc *src)
{
  vd_netsrc_clear (src);
  free (src);
}

static int
dup_str (char **dst, const char *s)
{
  *dst = NULL;
  if (s && (*dst = strdup (s)) == NULL)
    return -1;
  return 0;
}

struct vd_netsrc *
vd_netsrc_dup (const struct vd_netsrc *src)
{
  struct vd_netsrc *d = calloc (1, sizeof *d);
  size_t i;

  if (!d)
    return NULL;
  d->proto = src->proto;
  d->timeout_s = src->timeout_s;
  if (src->nhosts
      && (d->hosts = calloc (src->nhosts, sizeof *d->hosts)) == NULL)
    goto fail;
  for (i = 0; i < src->nhosts; i++) {
    d->nhosts = i + 1;
    if (dup_str (&d->hosts[i].name, src->hosts[i].name) < 0
        || dup_str (&d->hosts[i].port, src->hosts[i].port) < 0
        || dup_str (&d->hosts[i].socket, src->hosts[i].socket) < 0)
      goto fail;
  }
  if (dup_str (&d->name, src->name) < 0
      || dup_str (&d->user, src->user) < 0
      || dup_str (&d->secret, src->secret) < 0
      || dup_str (&d->config, src->config) < 0
      || dup_str (&d->snapshot, src->snapshot) < 0)
    goto fail;
  return d;

 fail:
  vd_netsrc_free (d);
  errno = ENOMEM;
  return NULL;
}

/* host[:port], with [v6] brackets kept as given. */
static const char *
host_text (const struct vd_net_host *h, char *buf, size_t n)
{
  snprintf (buf, n, "%s%s%s", h->name ? h->name : "",
            h->port ? ":" : "", h->port ? h->port : "");
  return buf;
}

char *
vd_net_describe (const struct vd_netsrc *src)
{
  const struct vd_net_host *h = src->nhosts ? &src->hosts[0] : NULL;
  char hb[512], *s = NULL;
  int r = -1;

  switch (src->proto) {
  case VD_NET_NBD:
    if (h && h->socket)
      r = asprintf (&s, "nbd+unix:///%s?socket=%s",
                    src->name ? src->name : "", h->socket);
    else
      r = asprintf (&s, "nbd://%s/%s", h ? host_text (h, hb, sizeof hb) : "",
                    src->name ? src->name : "");
    break;
  case VD_NET_ISCSI:
    r = asprintf (&s, "iscsi://%s/%s", h ? host_text (h, hb, sizeof hb) : "",
                  src->name ? src->name : "");
    break;
  case VD_NET_RBD:
    r = asprintf (&s, "rbd:%s%s%s", src->name ? src->name : "",
                  src->snapshot ? "@" : "",
                  src->snapshot ? src->snapshot : "");
    break;
  }
  return r < 0 ? NULL : s;
}

bool
vd_net_is_uri (const char *name)
{
  return strncmp (name, "nbd://", 6) == 0
    || strncmp (name, "nbd+unix://", 11) == 0
    || strncmp (name, "iscsi://", 8) == 0
    || strncmp (name, "rbd:", 4) == 0;
}

/* Split "host[:port]" (host may be "[v6]") into h.  0 or -1 (ENOMEM). */
static int
parse_hostport (const char *s, size_t len, struct vd_net_host *h)
{
  const char *colon = NULL, *p;

  if (len && s[0] == '[') {
    p = memchr (s, ']', len);
    if (p && (size_t) (p + 1 - s) < len && p[1] == ':')
      colon = p + 1;
  }
  else
    colon = memchr (s, ':', len);
  if (colon) {
    if ((h->name = strndup (s, colon - s)) == NULL
        || (h->port = strndup (colon + 1, len - (colon + 1 - s))) == NULL)
      return -1;
  }
  else if ((h->name = strndup (s, len)) == NULL)
    return -1;
  return 0;
}

static int
add_host (struct vd_netsrc *src)
{
  struct vd_net_host *n = realloc (src->hosts,
                                   (src->nhosts + 1) * sizeof *n);
  if (!n)
    return -1;
  src->hosts = n;
  memset (&n[src->nhosts++], 0, sizeof *n);
  return 0;
}

static int
bad (const char *uri, const char *why)
{
  /* The URI may hold a password or key: name the scheme only. */
  vd_error ("network disk \"%.*s...\": %s", (int) strcspn (uri, ":") + 1,
            uri, why);
  errno = EINVAL;
  return -1;
}

/* Length of s up to the next ':' not escaped as "\:" (qemu's rbd:
 * syntax: mon_host=127.0.0.1\:6789). */
static size_t
rbd_span (const char *s)
{
  size_t i;

  for (i = 0; s[i] && s[i] != ':'; i++)
    if (s[i] == '\\' && s[i + 1])
      i++;
  return i;
}

/* s[0..n) with its backslash escapes removed: malloc'd. */
static char *
rbd_unescape (const char *s, size_t n)
{
  char *d = malloc (n + 1), *o = d;
  size_t i;

  if (!d)
    return NULL;
  for (i = 0; i < n; i++) {
    if (s[i] == '\\' && i + 1 < n)
      i++;
    *o++ = s[i];
  }
  *o = '\0';
  return d;
}

static int
parse_rbd (const char *uri, struct vd_netsrc *src)
{
  const char *p = uri + 4;
  size_t n = rbd_span (p);
  char *spec = rbd_unescape (p, n), *at;

  if (!spec)
    return -1;
  at = strchr (spec, '@');
  if (at) {
    *at = '\0';
    if (!at[1]) {
      free (spec);
      return bad (uri, "empty snapshot name");
    }
    if ((src->snapshot = strdup (at + 1)) == NULL) {
      free (spec);
      return -1;
    }
  }
  src->name = spec;
  if (!*spec || !strchr (spec, '/'))
    return bad (uri, "expected rbd:POOL/IMAGE");
  p += n;
  while (*p == ':') {
    const char *opt = ++p, *eq;
    size_t len = rbd_span (p);
    char *val;

    eq = memchr (opt, '=', len);
    if (!eq)
      return bad (uri, "option without '='");
    val = rbd_unescape (eq + 1, len - (eq + 1 - opt));
    if (!val)
      return -1;
#define OPT(s) ((size_t) (eq - opt) == strlen (s) && memcmp (opt, s, eq - opt) == 0)
    if (OPT ("mon_host")) {
      char *save = NULL, *tok;

      for (tok = strtok_r (val, ";,", &save); tok;
           tok = strtok_r (NULL, ";,", &save))
        if (add_host (src) < 0
            || parse_hostport (tok, strlen (tok),
                               &src->hosts[src->nhosts - 1]) < 0) {
          free (val);
          return -1;
        }
      free (val);
    }
    else if (OPT ("conf")) {
      free (src->config);
      src->config = val;
    }
    else if (OPT ("id")) {
      free (src->user);
      src->user = val;
    }
    else if (OPT ("key")) {
      free (src->secret);
      src->secret = val;
    }
    else if (OPT ("timeout")) {
      src->timeout_s = (unsigned) strtoul (val, NULL, 10);
      free (val);
    }
    else {
      free (val);
      return bad (uri, "unknown option");
    }
#undef OPT
    p += len;
  }
  return 0;
}

/* The query of an nbd/iscsi URI: "socket=PATH" (nbd+unix) and
 * "timeout=SECONDS", '&'-separated.  0 or -1 (logged). */
static int
parse_query (const char *uri, const char *q, struct vd_netsrc *src,
             bool want_socket)
{
  while (*q) {
    size_t len = strcspn (q, "&");

    if (want_socket && strncmp (q, "socket=", 7) == 0 && len > 7) {
      if (add_host (src) < 0
          || (src->hosts[src->nhosts - 1].socket = strndup (q + 7, len - 7))
          == NULL)
        return -1;
    }
    else if (strncmp (q, "timeout=", 8) == 0 && len > 8) {
      char *end;
      unsigned long t = strtoul (q + 8, &end, 10);

      if (end != q + len || t == 0 || t > 3600)
        return bad (uri, "timeout= takes 1 to 3600 seconds");
      src->timeout_s = t;
    }
    else
      return bad (uri, "unknown query parameter");
    q += len;
    if (*q == '&')
      q++;
  }
  if (want_socket && src->nhosts != 1)
    return bad (uri, "expected one socket=PATH");
  return 0;
}

int
vd_net_parse (const char *uri, struct vd_netsrc *src)
{
  memset (src, 0, sizeof *src);
  errno = ENOMEM;
  if (strncmp (uri, "rbd:", 4) == 0) {
    src->proto = VD_NET_RBD;
    if (parse_rbd (uri, src) < 0)
      goto fail;
    return 0;
  }
  if (strncmp (uri, "nbd+unix://", 11) == 0) {
    const char *p = uri + 11, *q = strchr (p, '?');

    src->proto = VD_NET_NBD;
    if (*p != '/' || !q) {
      bad (uri, "expected nbd+unix:///[EXPORT]?socket=PATH");
      goto fail;
    }
    p++;
    if (q > p && (src->name = strndup (p, q - p)) == NULL)
      goto fail;
    if (parse_query (uri, q + 1, src, true) < 0)
      goto fail;
    return 0;
  }
  if (strncmp (uri, "nbd://", 6) == 0 || strncmp (uri, "iscsi://", 8) == 0) {
    bool iscsi = uri[0] == 'i';
    const char *p = uri + (iscsi ? 8 : 6), *slash, *at;
    size_t hl;

    src->proto = iscsi ? VD_NET_ISCSI : VD_NET_NBD;
    slash = strchr (p, '/');
    hl = slash ? (size_t) (slash - p) : strlen (p);
    at = memchr (p, '@', hl);
    if (at) {
      const char *pc = memchr (p, '%', at - p);

      if (!iscsi) {
        bad (uri, "nbd:// takes no user");
        goto fail;
      }
      if ((src->user = strndup (p, (pc ? pc : at) - p)) == NULL
          || (pc && (src->secret = strndup (pc + 1, at - pc - 1)) == NULL))
        goto fail;
      hl -= at + 1 - p;
      p = at + 1;
    }
    if (!hl) {
      bad (uri, "no host");
      goto fail;
    }
    if (add_host (src) < 0 || parse_hostport (p, hl, &src->hosts[0]) < 0)
      goto fail;
    if (slash && slash[1]) {
      const char *q = strchr (slash + 1, '?');
      size_t nl = q ? (size_t) (q - slash - 1) : strlen (slash + 1);

      if (nl && (src->name = strndup (slash + 1, nl)) == NULL)
        goto fail;
      if (q && parse_query (uri, q + 1, src, false) < 0)
        goto fail;
    }
    if (iscsi && (!src->name || !strchr (src->name, '/'))) {
      bad (uri, "expected iscsi://HOST[:PORT]/IQN/LUN");
      goto fail;
    }
    return 0;
  }
  bad (uri, "not an nbd://, nbd+unix://, iscsi:// or rbd: URI");

 fail:
  {
    int e = errno;
    vd_netsrc_clear (src);
    errno = e;
  }
  return -1;
}

struct vd_image *
vd_net_open (const struct vd_netsrc *src, unsigned flags)
{
  char *desc = vd_net_describe (src);
  struct vd_image *img = NULL;

  if (!desc) {
    errno = ENOMEM;
    return NULL;
  }
  /* libnbd, libiscsi and librbd are required (configure.ac). */
  switch (src->proto) {
  case VD_NET_NBD:
    img = vd_nbd_open (src, flags, desc);
    break;
  case VD_NET_ISCSI:
    img = vd_iscsi_open (src, flags, desc);
    break;
  case VD_NET_RBD:
    img = vd_rbd_open (src, flags, desc);
    break;
  }
  if (img) {
    img->remote = true;
    img->read_mode = 0400;
    img->flags = flags;
    img->lock_fd = -1;
    if (!img->path && (img->path = strdup (desc)) == NULL) {
      img->fmt->close (img);
      img = NULL;
      errno = ENOMEM;
    }
    else if ((flags & VD_OPEN_RDWR) && !img->fmt->write) {
      vd_error ("%s: %s disks cannot be written", desc, img->fmt->name);
      img->fmt->close (img);
      img = NULL;
      errno = EROFS;
    }
    else if (flags & VD_OPEN_RDWR) {
      /* format.c's writers take it (vdformat.h, rw). */
      if ((errno = pthread_rwlock_init (&img->rw, NULL)) != 0) {
        img->fmt->close (img);
        img = NULL;
      }
      else
        img->rw_init = true;
    }
  }
  {
    int e = errno;
    free (desc);
    errno = e;
  }
  return img;
}
