/* vmdiskfs - listing a domain's snapshots (ds_list): libvirt's, and the
 * LVM snapshots of its logical-volume disks, merged by shown name.
 *
 * Threads: no state outside a call.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "domsnap-int.h"
#include "virt.h"
#include "log.h"
#include "cleanup.h"
#include "vec.h"

static enum ds_by
by_of_description (const char *d)
{
  size_t l;

  if (!d)
    return DS_BY_OTHER;
  l = strcspn (d, "\n");
  if (l == strlen (BY_CLI) && memcmp (d, BY_CLI, l) == 0)
    return DS_BY_CLI;
  if (l == strlen (BY_MOUNT) && memcmp (d, BY_MOUNT, l) == 0)
    return DS_BY_MOUNT;
  return DS_BY_OTHER;
}

static int
cmp_ds (const void *a, const void *b)
{
  const struct ds_snap *x = a, *y = b;

  if (x->ctime != y->ctime)
    return x->ctime < y->ctime ? -1 : 1;
  return strcmp (x->name, y->name);
}

void
ds_list_free (struct ds_snap *v, size_t n)
{
  size_t i;

  for (i = 0; v && i < n; i++) {
    free (v[i].name);
    free (v[i].state);
  }
  free (v);
}

/* The entry called name, added when missing. */
static struct ds_snap *
entry (struct ds_snap **v, size_t *n, size_t *cap, const char *name)
{
  size_t i;

  for (i = 0; i < *n; i++)
    if (strcmp ((*v)[i].name, name) == 0)
      return &(*v)[i];
  if (*n == *cap) {
    struct ds_snap *t = vd_vec_grow (*v, cap, *n, 1, sizeof *t);
    if (!t)
      return NULL;
    *v = t;
  }
  memset (&(*v)[*n], 0, sizeof **v);
  (*v)[*n].name = strdup (name);
  if (!(*v)[*n].name)
    return NULL;
  return &(*v)[(*n)++];
}

int
ds_list (virConnectPtr c, const char *domain, struct ds_snap **out,
         size_t *nout)
{
  struct dom m;
  virDomainSnapshotPtr *snaps = NULL;
  struct ds_snap *v = NULL;
  size_t n = 0, cap = 0, i, j;
  int ns = 0, r = -1, e;

  *out = NULL;
  *nout = 0;
  if (ds_dom_open (c, domain, false, &m) < 0)
    return -1;
  ns = virDomainListAllSnapshots (m.d, &snaps, 0);
  if (ns < 0) {
    virt_fail (VIRT_ALL, "domain %s: listing snapshots", domain);
    goto out;
  }
  for (i = 0; i < (size_t) ns; i++) {
    const char *name = virDomainSnapshotGetName (snaps[i]);
    CLEANUP_FREE char *xml = NULL;
    struct domxml_snapshot sx;
    struct ds_snap *s;

    if (!name) {
      virt_fail (VIRT_ALL, "domain %s: snapshot name", domain);
      goto out;
    }
    xml = virDomainSnapshotGetXMLDesc (snaps[i], 0);
    if (!xml) {
      if (virt_last_code () == VIR_ERR_NO_DOMAIN_SNAPSHOT)
        continue;               /* deleted meanwhile */
      virt_fail (VIRT_ALL, "domain %s: snapshot %s: XML", domain, name);
      goto out;
    }
    if (domxml_parse_snapshot (xml, strlen (xml), &sx) < 0) {
      vd_error ("domain %s: snapshot %s: its XML cannot be parsed", domain,
                name);
      errno = EIO;
      goto out;
    }
    s = entry (&v, &n, &cap, name);
    if (!s) {
      domxml_snapshot_clear (&sx);
      errno = ENOMEM;
      goto out;
    }
    s->flags |= DS_LIBVIRT;
    s->ctime = sx.creation_time;
    s->by = by_of_description (sx.description);
    s->state = sx.state;
    sx.state = NULL;
    if (virDomainSnapshotIsCurrent (snaps[i], 0) == 1)
      s->flags |= DS_CURRENT;
    domxml_snapshot_clear (&sx);
  }
  for (i = 0; i < m.nxd; i++)
    for (j = 0; m.dk[i].kind == DK_LVM && j < m.dk[i].nlvm_snaps; j++) {
      const struct snap_info *si = &m.dk[i].lvm_snaps[j];
      struct ds_snap *s = entry (&v, &n, &cap, si->name);
      enum ds_by by = si->flags & SNAP_TAG_CLI ? DS_BY_CLI
        : si->flags & SNAP_OURS ? DS_BY_MOUNT : DS_BY_OTHER;
      if (!s) {
        errno = ENOMEM;
        goto out;
      }
      if (!(s->flags & DS_LIBVIRT) &&
          (s->nlvm == 0 || si->ctime_sec < s->ctime))
        s->ctime = si->ctime_sec;
      if (s->by == DS_BY_OTHER)
        s->by = by;
      s->flags |= DS_LVM;
      s->nlvm++;
    }
  for (i = 0; i < m.nxd; i++)
    for (j = 0; m.dk[i].kind == DK_RBD && j < m.dk[i].nrbd_snaps; j++) {
      const struct vd_snapshot *vs = &m.dk[i].rbd_snaps[j];
      struct ds_snap *s = entry (&v, &n, &cap, vs->name);

      if (!s) {
        errno = ENOMEM;
        goto out;
      }
      /* Who made it: recorded in the image's metadata (vmdiskfs and
       * vmdisk-snapshot record it; a snapshot made otherwise has none,
       * and is never pruned). */
      if (s->by == DS_BY_OTHER) {
        char *mk = vd_rbd_snap_maker (m.dk[i].net, vs->name);

        if (mk && strcmp (mk, BY_CLI) == 0)
          s->by = DS_BY_CLI;
        else if (mk && strcmp (mk, BY_MOUNT) == 0)
          s->by = DS_BY_MOUNT;
        free (mk);
      }
      if (!(s->flags & (DS_LIBVIRT | DS_LVM))
          && (s->nrbd == 0 || vs->date_sec < s->ctime))
        s->ctime = vs->date_sec;
      s->flags |= DS_RBD;
      s->nrbd++;
    }
  if (n > 1)
    qsort (v, n, sizeof *v, cmp_ds);
  *out = v;
  *nout = n;
  v = NULL;
  r = 0;

 out:
  e = errno;
  for (i = 0; snaps && i < (size_t) ns; i++)
    virDomainSnapshotFree (snaps[i]);
  free (snaps);
  ds_list_free (v, n);
  ds_dom_close (&m);
  errno = e;
  return r;
}
