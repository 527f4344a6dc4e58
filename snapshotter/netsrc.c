/* vmdiskfs - a libvirt <disk type='network'> turned into the struct
 * vd_netsrc that formats/ opens (netdisk.h), with the value of its <auth>
 * secret asked of libvirt: for fs/ (the tree) and domsnap (RBD snapshots).
 *
 * The secret: <secret type='ceph|iscsi' uuid='...'/> or usage='...';
 * virSecretGetValue gives the bytes libvirt stores: for ceph the key
 * decoded from base64 (virsh secret-set-value takes it in base64), which
 * librados wants as base64 text again; for iscsi the CHAP password.
 * Secrets stay in this process's memory only (root-owned), never logged.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "netsrc.h"
#include "virt.h"
#include "log.h"

static char *
base64 (const unsigned char *p, size_t n)
{
  static const char tab[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = malloc ((n + 2) / 3 * 4 + 1), *o = out;
  size_t i;

  if (!out)
    return NULL;
  for (i = 0; i + 2 < n; i += 3) {
    *o++ = tab[p[i] >> 2];
    *o++ = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
    *o++ = tab[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
    *o++ = tab[p[i + 2] & 63];
  }
  if (i < n) {
    *o++ = tab[p[i] >> 2];
    if (i + 1 < n) {
      *o++ = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
      *o++ = tab[(p[i + 1] & 15) << 2];
    }
    else {
      *o++ = tab[(p[i] & 3) << 4];
      *o++ = '=';
    }
    *o++ = '=';
  }
  *o = '\0';
  return out;
}

/* The value of d's secret through c, as the protocol wants it: malloc'd,
 * or NULL (logged; errno EACCES, or ENOMEM). */
static char *
secret_value (virConnectPtr c, const char *dname,
              const struct domxml_disk *d, enum vd_net_proto proto)
{
  virSecretPtr s = NULL;
  unsigned char *v;
  size_t len = 0;
  char *out = NULL;

  if (!c) {
    vd_error ("domain %s: disk %s: not connected: its secret cannot be "
              "read", dname, d->target ? d->target : "?");
    errno = EACCES;
    return NULL;
  }
  if (d->secret_uuid)
    s = virSecretLookupByUUIDString (c, d->secret_uuid);
  else if (d->secret_usage)
    s = virSecretLookupByUsage (c, proto == VD_NET_RBD
                                ? VIR_SECRET_USAGE_TYPE_CEPH
                                : VIR_SECRET_USAGE_TYPE_ISCSI,
                                d->secret_usage);
  if (!s) {
    virt_fail (VIRT_ALL, "domain %s: disk %s: secret %s", dname,
                d->target ? d->target : "?",
                d->secret_uuid ? d->secret_uuid
                : d->secret_usage ? d->secret_usage : "(none named)");
    errno = EACCES;
    return NULL;
  }
  v = virSecretGetValue (s, &len, 0);
  if (!v) {
    bool private = virt_last_code () == VIR_ERR_INVALID_SECRET;

    if (private && proto == VD_NET_RBD)
      vd_warn ("domain %s: disk %s: secret %s is private (libvirt gives "
               "its value to nobody): the ceph keyring of the host's "
               "ceph.conf is used instead", dname,
               d->target ? d->target : "?",
               d->secret_uuid ? d->secret_uuid : d->secret_usage);
    else
      virt_fail (VIRT_ALL, "domain %s: disk %s: value of secret %s", dname,
                 d->target ? d->target : "?",
                 d->secret_uuid ? d->secret_uuid : d->secret_usage);
    virSecretFree (s);
    errno = private ? EPERM : EACCES;
    return NULL;
  }
  if (proto == VD_NET_RBD)
    out = base64 (v, len);
  else if ((out = malloc (len + 1)) != NULL) {
    memcpy (out, v, len);
    out[len] = '\0';
  }
  explicit_bzero (v, len);
  free (v);
  virSecretFree (s);
  if (!out)
    errno = ENOMEM;
  return out;
}

struct vd_netsrc *
ds_netsrc (virConnectPtr c, const char *dname, const struct domxml_disk *d)
{
  struct vd_netsrc *src;
  size_t i;

  src = calloc (1, sizeof *src);
  if (!src)
    return NULL;
  if (vd_net_proto_parse (d->protocol, &src->proto) < 0) {
    vd_warn ("domain %s: disk %s: network protocol %s is not shown (nbd, "
             "iscsi and rbd are)", dname, d->target ? d->target : "?",
             d->protocol ? d->protocol : "(none)");
    free (src);
    errno = ENOTSUP;
    return NULL;
  }
  if (d->nhosts
      && (src->hosts = calloc (d->nhosts, sizeof *src->hosts)) == NULL)
    goto nomem;
  for (i = 0; i < d->nhosts; i++) {
    const struct domxml_host *h = &d->hosts[i];
    struct vd_net_host *o = &src->hosts[src->nhosts];

    if (h->transport && strcmp (h->transport, "tcp") != 0
        && strcmp (h->transport, "unix") != 0) {
      vd_warn ("domain %s: disk %s: host transport %s is not used",
               dname, d->target ? d->target : "?", h->transport);
      continue;
    }
    src->nhosts++;
    if (h->transport && strcmp (h->transport, "unix") == 0) {
      if (!h->socket || (o->socket = strdup (h->socket)) == NULL) {
        if (!h->socket)
          src->nhosts--;
        else
          goto nomem;
      }
      continue;
    }
    if ((h->name && (o->name = strdup (h->name)) == NULL)
        || (h->port && (o->port = strdup (h->port)) == NULL))
      goto nomem;
  }
  if ((d->name && (src->name = strdup (d->name)) == NULL)
      || (d->auth_user && (src->user = strdup (d->auth_user)) == NULL)
      || (d->config_file && (src->config = strdup (d->config_file)) == NULL)
      || (d->src_snapshot
          && (src->snapshot = strdup (d->src_snapshot)) == NULL))
    goto nomem;
  if (src->proto != VD_NET_RBD && src->nhosts == 0) {
    vd_error ("domain %s: disk %s: %s source without a <host>", dname,
              d->target ? d->target : "?", d->protocol);
    vd_netsrc_free (src);
    errno = EINVAL;
    return NULL;
  }
  if (d->secret_uuid || d->secret_usage) {
    src->secret = secret_value (c, dname, d, src->proto);
    if (!src->secret && errno == EPERM && src->proto == VD_NET_RBD) {
      /* A private secret: librados finds the key itself (logged). */
    }
    else if (!src->secret) {
      int e = errno;
      vd_netsrc_free (src);
      errno = e;
      return NULL;
    }
  }
  return src;

 nomem:
  vd_netsrc_free (src);
  errno = ENOMEM;
  return NULL;
}
