/* vmdiskfs - QMP with a running domain's qemu, through libvirt
 * (virDomainQemuMonitorCommand), for the internal snapshots of the own
 * path (domsnap.h): query-block for node names, one "transaction" of
 * blockdev-snapshot-internal-sync actions, and
 * blockdev-snapshot-delete-internal-sync.
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
 * The reply comes from qemu, which runs the guest: untrusted bytes.  It
 * is read in one place, "Replies" below (reply_parse, reply_node): the
 * rest of the file builds commands and never looks into JSON.
 *
 * Sending commands with virDomainQemuMonitorCommand makes libvirt mark
 * the domain "tainted: custom-monitor" in its log; that is expected and
 * harmless (libvirt does not know of the internal snapshot until we
 * redefine it).
 *
 * Threads: no state; libvirt serializes the monitor.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include "domsnap-int.h"
#include "json.h"
#include "virt.h"
#include "log.h"
#include "cleanup.h"

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

/* ---- Replies: the one place the JSON qemu sends is read. ---- */

/* Parse res, the reply to command what.  A reply with "error", or
 * without "return", fails (logged with qemu's desc).  0 with *reply
 * holding it, or -1 (logged) with errno EIO. */
static int
reply_parse (const struct dom *m, const char *what, const char *res,
             struct vd_json *reply)
{
  const char *err;
  const struct vd_json *e;

  memset (reply, 0, sizeof *reply);
  if (!res || vd_json_parse (res, strlen (res), reply, &err, NULL) < 0) {
    vd_error ("domain %s: %s: QMP reply not understood (%s)", m->name, what,
              res ? err : "empty");
    errno = EIO;
    return -1;
  }
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

/* In query-block's reply: the node name of the qcow2 device whose
 * inserted "file" is path, or NULL. */
static const char *
reply_node (const struct vd_json *reply, const char *path)
{
  const struct vd_json *ret = vd_json_get (reply, "return");
  size_t j;

  for (j = 0; ret && ret->t == VD_JSON_ARR && j < ret->n; j++) {
    const struct vd_json *ins = vd_json_get (&ret->v[j], "inserted");
    const char *file = vd_json_str (vd_json_get (ins, "file"));
    const char *node = vd_json_str (vd_json_get (ins, "node-name"));
    const char *drv = vd_json_str (vd_json_get (ins, "drv"));
    if (file && node && *node && drv && strcmp (drv, "qcow2") == 0 &&
        same_file (file, path))
      return node;
  }
  return NULL;
}

/* ---- Commands. ---- */

/* Send cmd; *reply gets the parsed reply (free with vd_json_free).  0,
 * or -1 with errno (logged). */
static int
qmp (const struct dom *m, const char *what, const char *cmd,
     struct vd_json *reply)
{
  char *res = NULL;
  int r;

  memset (reply, 0, sizeof *reply);
  vd_debug ("domain %s: QMP: %s", m->name, cmd);
  if (virDomainQemuMonitorCommand (m->d, cmd, &res, 0) < 0) {
    virt_fail (VIRT_ALL, "domain %s: %s (QMP)", m->name, what);
    return -1;
  }
  r = reply_parse (m, what, res, reply);
  free (res);
  return r;
}

int
qmp_find_nodes (struct dom *m, const bool *want)
{
  struct vd_json reply;
  size_t i;
  int r = 0;

  if (qmp (m, "query-block", "{\"execute\":\"query-block\"}", &reply) < 0)
    return -1;
  for (i = 0; i < m->nxd; i++) {
    struct dk *k = &m->dk[i];
    const char *node;
    if (want ? !want[i] : k->kind != DK_QCOW2)
      continue;
    free (k->node);
    k->node = NULL;
    node = reply_node (&reply, k->path);
    if (node) {
      k->node = strdup (node);
      if (!k->node) {
        errno = ENOMEM;
        r = -1;
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

int
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

int
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
