/* Unit test of formats/net.c: network disk URIs parsed into struct
 * vd_netsrc, described without secrets, copied.
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netdisk.h"
#include "log.h"

static int failures;

#define FAIL(...) do { fprintf (stderr, "FAIL: " __VA_ARGS__); \
    fputc ('\n', stderr); failures++; } while (0)

static const char *
nz (const char *s)
{
  return s ? s : "(null)";
}

static void
same (const char *what, const char *uri, const char *got, const char *want)
{
  if ((got == NULL) != (want == NULL) || (got && strcmp (got, want) != 0))
    FAIL ("%s: %s is \"%s\", want \"%s\"", uri, what, nz (got), nz (want));
}

/* Parse uri; expect its fields, and that describe gives desc (no secret)
 * and a copy describes the same. */
static void
ok (const char *uri, enum vd_net_proto proto, const char *name,
    const char *host, const char *port, const char *sock, const char *user,
    const char *secret, const char *snap, unsigned timeout,
    const char *desc)
{
  struct vd_netsrc s;
  struct vd_netsrc *d;
  char *ds, *dd;

  if (!vd_net_is_uri (uri))
    FAIL ("%s: not taken for a URI", uri);
  if (vd_net_parse (uri, &s) < 0) {
    FAIL ("%s: refused (%s)", uri, strerror (errno));
    return;
  }
  if (s.proto != proto)
    FAIL ("%s: protocol %s", uri, vd_net_proto_name (s.proto));
  same ("name", uri, s.name, name);
  same ("host", uri, s.nhosts ? s.hosts[0].name : NULL, host);
  same ("port", uri, s.nhosts ? s.hosts[0].port : NULL, port);
  same ("socket", uri, s.nhosts ? s.hosts[0].socket : NULL, sock);
  same ("user", uri, s.user, user);
  same ("secret", uri, s.secret, secret);
  same ("snapshot", uri, s.snapshot, snap);
  if (s.timeout_s != timeout)
    FAIL ("%s: timeout %u, want %u", uri, s.timeout_s, timeout);
  ds = vd_net_describe (&s);
  same ("description", uri, ds, desc);
  if (ds && secret && strstr (ds, secret))
    FAIL ("%s: the description shows the secret", uri);
  d = vd_netsrc_dup (&s);
  dd = d ? vd_net_describe (d) : NULL;
  same ("copy's description", uri, dd, desc);
  if (!d || (d->secret == NULL) != (s.secret == NULL)
      || d->nhosts != s.nhosts)
    FAIL ("%s: the copy differs", uri);
  free (ds);
  free (dd);
  vd_netsrc_free (d);
  vd_netsrc_clear (&s);
}

static void
refused (const char *uri)
{
  struct vd_netsrc s;

  if (vd_net_parse (uri, &s) == 0) {
    FAIL ("%s: taken", uri);
    vd_netsrc_clear (&s);
  }
  else if (errno != EINVAL)
    FAIL ("%s: errno %d, want EINVAL", uri, errno);
}

int
main (void)
{
  struct vd_netsrc s;

  ok ("nbd+unix:///exp?socket=/run/x.sock", VD_NET_NBD, "exp", NULL, NULL,
      "/run/x.sock", NULL, NULL, NULL, 0,
      "nbd+unix:///exp?socket=/run/x.sock");
  ok ("nbd+unix:///?socket=/s&timeout=7", VD_NET_NBD, NULL, NULL, NULL,
      "/s", NULL, NULL, NULL, 7, "nbd+unix:///?socket=/s");
  ok ("nbd://127.0.0.1:10810/disk?timeout=3", VD_NET_NBD, "disk",
      "127.0.0.1", "10810", NULL, NULL, NULL, NULL, 3,
      "nbd://127.0.0.1:10810/disk");
  ok ("nbd://[::1]:10810", VD_NET_NBD, NULL, "[::1]", "10810", NULL, NULL,
      NULL, NULL, 0, "nbd://[::1]:10810/");
  ok ("nbd://server", VD_NET_NBD, NULL, "server", NULL, NULL, NULL, NULL,
      NULL, 0, "nbd://server/");
  ok ("iscsi://bob%s3cr3t@10.0.0.1:3261/iqn.2026-12.org.x:t1/2?timeout=4",
      VD_NET_ISCSI, "iqn.2026-12.org.x:t1/2", "10.0.0.1", "3261", NULL,
      "bob", "s3cr3t", NULL, 4, "iscsi://10.0.0.1:3261/iqn.2026-12.org.x:t1/2");
  ok ("iscsi://h/iqn.x:y/0", VD_NET_ISCSI, "iqn.x:y/0", "h", NULL, NULL,
      NULL, NULL, NULL, 0, "iscsi://h/iqn.x:y/0");
  ok ("rbd:rbd/vm1-disk", VD_NET_RBD, "rbd/vm1-disk", NULL, NULL, NULL,
      NULL, NULL, NULL, 0, "rbd:rbd/vm1-disk");
  ok ("rbd:pool/ns/img@s1:mon_host=127.0.0.1\\:6789;10.0.0.2"
      ":id=vmd:key=AQBxyz==:conf=/etc/ceph/c.conf:timeout=9", VD_NET_RBD,
      "pool/ns/img", "127.0.0.1", "6789", NULL, "vmd", "AQBxyz==", "s1", 9,
      "rbd:pool/ns/img@s1");
  refused ("nbd+unix:///exp");
  refused ("nbd+unix:///exp?timeout=3");
  refused ("nbd+unix:///?socket=/a&socket=/b");
  refused ("nbd://bob@h/x");
  refused ("nbd://");
  refused ("nbd://h/x?timeout=0");
  refused ("nbd://h/x?timeout=3x");
  refused ("iscsi://h/iqn-without-lun");
  refused ("iscsi://h/iqn.x/1?fast=1");
  refused ("rbd:noslash");
  refused ("rbd:p/i@");
  refused ("rbd:p/i:novalue");
  refused ("rbd:p/i:colour=blue");
  refused ("http://x/y");
  if (vd_net_is_uri ("/var/lib/libvirt/images/a.qcow2")
      || vd_net_is_uri ("nbd.img"))
    FAIL ("a file name taken for a URI");
  /* The second mon of the rbd: example. */
  if (vd_net_parse ("rbd:p/i:mon_host=a\\:1,b", &s) == 0) {
    if (s.nhosts != 2 || strcmp (s.hosts[1].name, "b") != 0
        || s.hosts[1].port)
      FAIL ("rbd mon_host list: %zu hosts", s.nhosts);
    vd_netsrc_clear (&s);
  }
  else
    FAIL ("rbd mon_host list refused");
  return failures ? 1 : 0;
}
