/* vmdiskfs - domain snapshots: the libvirt part's metadata, the
 * <domainsnapshot> XML that ds_create gives libvirt: to make the
 * snapshot (the libvirt path) or to register one made by the own path
 * (VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE, with the domain definition
 * inside, no memory; domsnap.h says which state it gets).
 *
 * Threads: no state outside a call.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "domsnap-int.h"
#include "virt.h"
#include "log.h"
#include "cleanup.h"

char *
ds_meta_description (const struct ds_create_opts *opts)
{
  struct vd_buf b = { 0 };
  enum ds_by by = opts ? opts->by : DS_BY_OTHER;
  const char *more = opts ? opts->description : NULL;

  vd_buf_add (&b, "", 0);
  if (by == DS_BY_CLI)
    vd_buf_str (&b, BY_CLI);
  else if (by == DS_BY_MOUNT)
    vd_buf_str (&b, BY_MOUNT);
  if (more && *more) {
    if (b.len)
      vd_buf_str (&b, "\n");
    vd_buf_str (&b, more);
  }
  return vd_buf_take (&b);
}

/* "<domainsnapshot>", its name and description. */
static void
xml_head (struct vd_buf *b, const char *name, const char *desc)
{
  vd_buf_str (b, "<domainsnapshot>\n  <name>");
  ds_buf_xml (b, name);
  vd_buf_str (b, "</name>\n");
  if (*desc) {
    vd_buf_str (b, "  <description>");
    ds_buf_xml (b, desc);
    vd_buf_str (b, "</description>\n");
  }
}

/* The libvirt path: libvirt makes the internal snapshots itself. */
virDomainSnapshotPtr
ds_meta_create (struct dom *m, const char *name, const char *desc)
{
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *xml = NULL;
  virDomainSnapshotPtr snap;

  xml_head (&b, name, desc);
  vd_buf_str (&b, "</domainsnapshot>\n");
  xml = vd_buf_take (&b);
  if (!xml)
    return NULL;
  snap = virDomainSnapshotCreateXML (m->d, xml, 0);
  if (!snap)
    virt_fail (VIRT_ALL, "domain %s: creating snapshot %s", m->name, name);
  return snap;
}

/* Before the own path makes its tags: the definition stored with the
 * snapshot, as libvirt stores its own (secure parts included: a revert
 * needs them), and the name of the current snapshot (its parent), or
 * NULL. */
int
ds_meta_prepare (struct dom *m, char **dxml, char **parent)
{
  virDomainSnapshotPtr cur;

  *parent = NULL;
  *dxml = virDomainGetXMLDesc (m->d, VIR_DOMAIN_XML_SECURE);
  if (!*dxml) {
    virt_fail (VIRT_ALL, "domain %s: XML", m->name);
    return -1;
  }
  cur = virDomainSnapshotCurrent (m->d, 0);
  if (cur) {
    const char *pn = virDomainSnapshotGetName (cur);
    *parent = pn ? strdup (pn) : NULL;
    virDomainSnapshotFree (cur);
  }
  else if (virt_last_code () != VIR_ERR_NO_DOMAIN_SNAPSHOT) {
    virt_fail (VIRT_ALL, "domain %s: current snapshot", m->name);
    free (*dxml);
    *dxml = NULL;
    return -1;
  }
  return 0;
}

/* May a shut-off domain's snapshot be redefined with state shutoff?
 * libvirt checks such a snapshot as one it would make itself: every disk
 * listed snapshot='no' must be 'no' in the definition too (marked so, or
 * read-only, which libvirt takes as 'no'; empty drives do not matter).
 * Else (a logical volume, a shareable disk) the state is disk-snapshot,
 * which libvirt does not check that way. */
static bool
offline_ok (const struct dom *m)
{
  size_t i;

  for (i = 0; i < m->nxd; i++) {
    const struct domxml_disk *x = m->dk[i].x;
    struct domxml_class dc;

    domxml_disk_classify (x, &dc);
    if (m->dk[i].kind == DK_QCOW2 || !x->target || !dc.written ||
        dc.snapshot_no)
      continue;
    return false;
  }
  return true;
}

virDomainSnapshotPtr
ds_meta_redefine (struct dom *m, const char *name, const char *desc,
                  const char *dxml, const char *parent, time_t now)
{
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *xml = NULL;
  virDomainSnapshotPtr snap;
  size_t i;

  xml_head (&b, name, desc);
  vd_buf_fmt (&b, "  <state>%s</state>\n",
           m->active || !offline_ok (m) ? "disk-snapshot" : "shutoff");
  if (parent) {
    vd_buf_str (&b, "  <parent>\n    <name>");
    ds_buf_xml (&b, parent);
    vd_buf_str (&b, "</name>\n  </parent>\n");
  }
  vd_buf_fmt (&b, "  <creationTime>%lld</creationTime>\n", (long long) now);
  vd_buf_str (&b, "  <memory snapshot='no'/>\n  <disks>\n");
  for (i = 0; i < m->nxd; i++) {
    if (!m->dk[i].x->target)
      continue;
    vd_buf_str (&b, "    <disk name='");
    ds_buf_xml (&b, m->dk[i].x->target);
    vd_buf_fmt (&b, "' snapshot='%s'/>\n",
             m->dk[i].kind == DK_QCOW2 ? "internal" : "no");
  }
  vd_buf_str (&b, "  </disks>\n");
  vd_buf_str (&b, dxml);
  vd_buf_str (&b, "</domainsnapshot>\n");
  xml = vd_buf_take (&b);
  if (!xml)
    return NULL;
  snap = virDomainSnapshotCreateXML (m->d, xml,
                                     VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE |
                                     VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT);
  if (!snap)
    virt_fail (VIRT_ALL, "domain %s: registering snapshot %s with libvirt "
               "(redefine)", m->name, name);
  return snap;
}
