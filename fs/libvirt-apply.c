/* vmdiskfs - the libvirt provider's model (struct build, libvirt-scan.c)
 * put into the tree: a domain directory's nodes made, kept (same disk:
 * its open image and allocation count stay) or changed, under tree_lock
 * held for writing, with no I/O.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "log.h"

static void
disk_priv_free (void *p)
{
  struct virt_disk *k = p;

  if (k) {
    free (k->path);
    free (k->format);
    free (k->snap_id);
    free (k->lvm_id);
    vd_policy_free (k->policy);
    vd_netsrc_free (k->net);
    free (k);
  }
}

static bool
same_policy (const struct vd_policy *a, const struct vd_policy *b)
{
  size_t i;

  if (!a || !b)
    return a == b;
  if (a->nexpect != b->nexpect || a->expect_end != b->expect_end)
    return false;
  for (i = 0; i < a->nexpect; i++)
    if (strcmp (a->expect[i], b->expect[i]) != 0)
      return false;
  return true;
}

/* tree_lock held for writing.  A disk node as s says; reference. */
static struct fs_node *
apply_disk (struct fs_node *dom, const char *dir, const struct disk_scan *s,
            int64_t sec, long nsec, bool snapshot)
{
  struct fs_node *n = tree_get_node (FS_NODE_DISK, "%s/%s", dir, s->fname);
  struct virt_disk *k;
  bool unchanged;

  if (!n)
    return NULL;
  k = n->priv;
  unchanged = n->attached && k && streq (k->path, s->path)
    && streq (k->format, s->format) && streq (k->snap_id, s->snap_id)
    && streq (k->lvm_id, s->lvm_id)
    && k->live == s->live && k->err == s->err && k->size == s->size
    && !vd_stat_changed (&k->st, &s->st) && virt_netsrc_same (k->net, s->net);
  if (unchanged && !same_policy (k->policy, s->policy)) {
    /* The <backingStore> record changed, not the image: the open image
     * (checked against the old record) is dropped. */
    struct vd_policy *np = vd_policy_dup (s->policy);
    if (s->policy && !np) {
      inode_unref (n);
      return NULL;
    }
    vd_policy_free (k->policy);
    k->policy = np;
    tree_set_disk (n, NULL, s->err);     /* reopened under the new one */
  }
  if (!unchanged) {
    struct virt_disk *nk = calloc (1, sizeof *nk);
    char *sid = strdup (s->snap_id ? s->snap_id : "");

    if (!nk || !sid || (s->path && !(nk->path = strdup (s->path)))
        || !(nk->format = strdup (s->format))
        || (s->snap_id && !(nk->snap_id = strdup (s->snap_id)))
        || (s->lvm_id && !(nk->lvm_id = strdup (s->lvm_id)))) {
      disk_priv_free (nk);
      free (sid);
      inode_unref (n);
      return NULL;
    }
    nk->live = s->live;
    nk->lvm_flags = s->lvm_flags;
    if ((s->policy && (nk->policy = vd_policy_dup (s->policy)) == NULL)
        || (s->net && (nk->net = vd_netsrc_dup (s->net)) == NULL)) {
      disk_priv_free (nk);
      free (sid);
      inode_unref (n);
      return NULL;
    }
    nk->st = s->st;
    nk->err = s->err;
    nk->size = s->size;
    if (n->priv_free)
      n->priv_free (n->priv);
    n->priv = nk;
    n->priv_free = disk_priv_free;
    /* Every disk node has a snap_id, so that fs_release closes its
     * image with the last reader: idle disks hold no open files. */
    free (n->snap_id);
    n->snap_id = sid;
    tree_set_disk (n, NULL, s->err);
    tree_changed_content (n);
    if (s->lvm_id) {
      /* A device is all data; st_blocks must not activate it. */
      tree_set_allocated (n, s->size);
    }
  }
  if (!snapshot) {
    sec = s->have_st ? s->st.st_mtim.tv_sec : 0;
    nsec = s->have_st ? s->st.st_mtim.tv_nsec : 0;
  }
  tree_set_attr (&n->attr,
                 S_IFREG | (s->have_st ? s->read_mode : 0400),
                 1, s->size, s->have_st ? s->st.st_uid : 0,
                 s->have_st ? s->st.st_gid : 0, sec, nsec);
  tree_set_image (n, dom);
  return n;
}

/* tree_lock held for writing.  An XML file node; reference. */
static struct fs_node *
apply_file (struct fs_node *dom, const char *dir, const char *name,
            struct fs_blob *blob, int64_t sec, long nsec)
{
  struct fs_node *n = tree_get_node (FS_NODE_FILE, "%s/%s", dir, name);

  if (!n)
    return NULL;
  tree_set_attr (&n->attr, S_IFREG | 0400, 1, blob->len, 0, 0, sec, nsec);
  tree_set_image (n, dom);
  tree_set_blob (n, blob);
  return n;
}

/* Add n to the array kids (room reserved by the caller). */
#define PUSH(kids, k, n)  do { if (n) (kids)[(k)++] = (n); } while (0)

/* tree_lock held for writing.  Make the domain directory what b says. */
void
apply_domain (struct fs_node *node, struct virt_dom *d, struct build *b,
              int64_t dsec)
{
  struct fs_node **kids, **skids, *sdir;
  size_t nk = 0, ns = 0, i, j;
  const char *dir = node->path;

  kids = calloc (b->ndisks + 2, sizeof *kids);
  skids = calloc (b->nsnaps + 1, sizeof *skids);
  sdir = tree_get_node (FS_NODE_DIR, "%s/snapshots", dir);
  if (!kids || !skids || !sdir) {
    free (kids);
    free (skids);
    if (sdir)
      inode_unref (sdir);
    vd_error ("domain %s: out of memory", d->name);
    return;
  }
  tree_set_attr (&node->attr, S_IFDIR | 0555, 3, 0, 0, 0, dsec, 0);
  if (d->xml)
    PUSH (kids, nk, apply_file (node, dir, "domain.xml", d->xml, dsec, 0));
  for (i = 0; i < b->ndisks; i++)
    PUSH (kids, nk, apply_disk (node, dir, &b->disks[i], 0, 0, false));

  for (i = 0; i < b->nsnaps; i++) {
    struct snap_scan *ss = &b->snaps[i];
    CLEANUP_FREE char *spath = NULL;
    struct fs_node *sn, **fk;
    size_t nf = 0;

    if (asprintf (&spath, "%s/snapshots/%s", dir, ss->ename) < 0) {
      spath = NULL;
      continue;
    }
    sn = tree_get_node (FS_NODE_DIR, "%s", spath);
    fk = calloc (ss->ndisks + 2, sizeof *fk);
    if (!sn || !fk) {
      if (sn)
        inode_unref (sn);
      free (fk);
      continue;
    }
    tree_set_attr (&sn->attr, S_IFDIR | 0555, 2, 0, 0, 0, ss->sec, ss->nsec);
    tree_set_image (sn, node);
    if (ss->domxml)
      PUSH (fk, nf, apply_file (node, spath, "domain.xml", ss->domxml,
                                ss->sec, ss->nsec));
    if (ss->snapxml)
      PUSH (fk, nf, apply_file (node, spath, "snapshot.xml", ss->snapxml,
                                ss->sec, ss->nsec));
    for (j = 0; j < ss->ndisks; j++) {
      bool dup = false;
      size_t m;
      for (m = 0; m < j; m++)
        dup |= strcmp (ss->disks[m].fname, ss->disks[j].fname) == 0;
      if (!dup)
        PUSH (fk, nf, apply_disk (node, spath, &ss->disks[j], ss->sec,
                                  ss->nsec, true));
    }
    tree_set_children (sn, fk, nf);
    skids[ns++] = sn;
  }
  /* Writable (mkdir makes snapshots) unless -o ro. */
  tree_set_attr (&sdir->attr, S_IFDIR | (fs_config.ro ? 0555 : 0755), 2 + ns,
                 0, 0, 0, dsec, 0);
  tree_set_image (sdir, node);
  tree_set_children (sdir, skids, ns);
  kids[nk++] = sdir;
  tree_set_children (node, kids, nk);
}
