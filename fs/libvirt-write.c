/* vmdiskfs - libvirt mode: opening a domain's disk for writing
 * (write.c asks through the provider's open_write and close_write).
 *
 * A disk is written only while its domain is shut off, under the
 * domain's snapshot lock (so no snapshot is made or deleted meanwhile:
 * mkdir under snapshots/ waits for it), and with qemu's lock bytes held
 * on the image (formats/qemu-lock.c, taken at the read-write open), so
 * `virsh start` fails with qemu's own lock error until the last writer
 * closes.  The order: snapshot lock, domain state, image open (locks):
 * a domain that starts between the state check and the open holds
 * qemu's locks, and the open fails EBUSY.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "log.h"

/* The domain name, disk path, format and policy of a disk node; 0 or -1
 * with errno (ENOENT: left the tree, EROFS: a snapshot's disk; an active
 * disk's node->snap_id is "", see libvirt-apply.c). */
static int
disk_info (struct fs_node *node, char **domain, char **path, char **format,
           struct vd_policy **pol, struct vd_netsrc **net,
           struct stat *scanned)
{
  struct virt_disk *k;
  struct virt_dom *d;
  int err = 0;

  *domain = *path = *format = NULL;
  *pol = NULL;
  *net = NULL;
  tree_rdlock ();
  k = node->priv;
  d = node->image ? node->image->priv : NULL;
  if (!k || !d || !node->attached)
    err = ENOENT;
  else if (k->snap_id || k->lvm_id || (node->snap_id && node->snap_id[0]))
    err = EROFS;
  else if (k->err || !k->path)
    err = EIO;
  else {
    *domain = strdup (d->name);
    *path = strdup (k->path);
    *format = strdup (k->format);
    *pol = vd_policy_dup (k->policy);
    *net = k->net ? vd_netsrc_dup (k->net) : NULL;
    *scanned = k->st;
    if (!*domain || !*path || !*format || (k->policy && !*pol)
        || (k->net && !*net))
      err = ENOMEM;
  }
  tree_unlock ();
  if (err) {
    free (*domain);
    free (*path);
    free (*format);
    vd_policy_free (*pol);
    vd_netsrc_free (*net);
    *domain = *path = *format = NULL;
    *pol = NULL;
    *net = NULL;
    errno = err;
    return -1;
  }
  return 0;
}

struct vd_image *
libvirt_open_write (struct fs_node *node, void **token)
{
  CLEANUP_FREE char *domain = NULL, *path = NULL, *format = NULL;
  struct vd_policy *pol = NULL;
  struct vd_netsrc *net = NULL;
  struct vd_image *img = NULL;
  struct stat scanned;
  virConnectPtr c;
  virDomainPtr dom;
  void *lk = NULL;
  bool ro = false;
  int active, err = 0;

  *token = NULL;
  if (disk_info (node, &domain, &path, &format, &pol, &net, &scanned) < 0)
    return NULL;
  c = virt_get_conn_mode (&ro);
  if (!c) {
    vd_error ("domain %s: %s: not connected to %s: not opened for writing",
              domain, node->name, virt_uri);
    vd_policy_free (pol);
    vd_netsrc_free (net);
    errno = EIO;
    return NULL;
  }
  /* No snapshot is made or deleted while we write (mkdir waits). */
  if (libvirt_snapshotter.dom_lock (c, domain, 0, &lk) < 0) {
    err = errno == EBUSY ? EBUSY : errno ? errno : EIO;
    vd_error ("domain %s: %s: a snapshot operation holds the domain: not "
              "opened for writing", domain, node->name);
    goto out;
  }
  dom = virDomainLookupByName (c, domain);
  if (!dom) {
    err = virt_last_code () == VIR_ERR_NO_DOMAIN ? ENOENT : EIO;
    virt_error ("domain %s: lookup", domain);
    goto out;
  }
  active = virDomainIsActive (dom);
  virDomainFree (dom);
  if (active != 0) {
    err = active < 0 ? EIO : EBUSY;
    if (active < 0)
      virt_error ("domain %s: state", domain);
    else
      vd_error ("domain %s: %s: the domain is running: its disks are "
                "written only while it is shut off", domain, node->name);
    goto out;
  }
  vd_busy_quiet (true);
  if (net)
    img = vd_net_open (net, VD_OPEN_RDWR);
  else
    img = vd_image_open_policy (path, format, VD_OPEN_RDWR, pol);
  vd_busy_quiet (false);
  if (!img) {
    err = errno ? errno : EIO;
    if (err == EBUSY)
      vd_error ("domain %s: %s: %s is in use by %s: not opened for "
                "writing", domain, node->name, path,
                vd_busy_holder ()[0] ? vd_busy_holder ()
                : "another program");
    goto out;
  }
  if (!net && scanned.st_ino && (img->dev != scanned.st_dev
                         || img->ino != scanned.st_ino)) {
    vd_error ("domain %s: %s: %s was replaced since it was scanned: not "
              "written (it will be rescanned)", domain, node->name, path);
    virt_mark_dirty (domain);
    vd_image_close (img);
    img = NULL;
    err = EIO;
    goto out;
  }
  vd_info ("domain %s: %s: open for writing (%s)", domain, node->name, path);
 out:
  vd_policy_free (pol);
  vd_netsrc_free (net);
  if (!img && lk)
    libvirt_snapshotter.dom_unlock (lk);
  else
    *token = lk;
  virConnectClose (c);
  errno = err;
  return img;
}

void
libvirt_close_write (struct fs_node *node, void *token)
{
  struct virt_dom *d;
  char *domain = NULL;

  libvirt_snapshotter.dom_unlock (token);
  tree_rdlock ();
  d = node->image ? node->image->priv : NULL;
  if (d)
    domain = strdup (d->name);
  tree_unlock ();
  /* Its image changed: rescan the domain on the next look. */
  if (domain)
    virt_mark_dirty (domain);
  free (domain);
}

/* Staging files may be made in a domain directory, and in a snapshot's
 * (its files copied back in, libvirt-restore.c). */
bool
libvirt_may_stage (struct fs_node *dir)
{
  bool r;

  tree_rdlock ();
  r = dir->attached && dir->type == FS_NODE_DIR && dir != tree_root ()
    && ((dir->image == NULL && dir->priv != NULL)
        || (dir->image != NULL && dir->image->attached
            && dir->parent_ino != dir->image->ino
            && strncmp (dir->path, dir->image->path,
                        strlen (dir->image->path)) == 0
            && strncmp (dir->path + strlen (dir->image->path),
                        "/snapshots/", 11) == 0
            && !strchr (dir->path + strlen (dir->image->path) + 11, '/')));
  tree_unlock ();
  return r;
}
