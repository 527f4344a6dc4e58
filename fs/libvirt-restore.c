/* vmdiskfs - libvirt mode: what a file copied into the mount means
 * (restore.c asks through the provider's may_pend and complete; DESIGN.md
 * "Writing").
 *
 *   <domain>/domain.xml             defines the domain
 *                                   (virDomainDefineXMLFlags, VALIDATE):
 *                                   its <name> must be the directory's,
 *                                   its <uuid> not another domain's; a
 *                                   running domain gets its next-boot
 *                                   definition, as `virsh define` does
 *   <domain>/<target>.img           a disk of a defined domain: written
 *                                   (write.c); an image that does not
 *                                   exist is first created as a volume of
 *                                   the storage pool whose directory holds
 *                                   its path (virStorageVolCreateXML)
 *   <domain>/nvram.fd               the same, for <os><nvram>
 *   snapshots/<s>/snapshot.xml      the snapshot's libvirt metadata
 *                                   (virDomainSnapshotCreateXML with
 *                                   REDEFINE); the dates of its qcow2
 *                                   snapshots follow <creationTime>
 *   snapshots/<s>/<target>.img      the snapshot's bytes: a qcow2 internal
 *                                   snapshot <s> of the current image
 *                                   holding them (vd_image_snapshot_import:
 *                                   clusters equal to the current disk
 *                                   shared), the current disk untouched
 *   snapshots/<s>/domain.xml        part of snapshot.xml: taken once the
 *                                   snapshot is defined
 * Files of a domain libvirt does not know yet (a pending directory) wait
 * (RESTORE_KEEP) until its domain.xml defines it; a snapshot's disk waits
 * for the current disk.
 *
 * Confinement.  Files are untrusted here as images are (a backup copied
 * back may come from anywhere), and we run as root: a domain restored
 * into a pending directory may name only disks that are files inside an
 * active directory-like storage pool (dir, fs, netfs: its target
 * directory, no "..", no symlinked directory), logical volumes that
 * exist (device-mapper block devices), pool volumes, and network disks.
 * Anything else (/etc/..., ../../x, a block device that does not exist)
 * is refused with EACCES before anything is created or defined.  An
 * existing domain's disk image is created only inside a pool too.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "libvirt-priv.h"
#include "ops-priv.h"
#include "domsnap.h"
#include "cleanup.h"
#include "escape.h"
#include "log.h"

#define XML_MAX (16 << 20)

/* ---- Small helpers. ---- */

/* The whole of fd (an XML file), NUL-terminated: malloc'd, or NULL with
 * errno (EINVAL when over XML_MAX). */
static char *
read_all (int fd, size_t *len)
{
  struct stat st;
  char *buf;
  size_t got = 0;

  if (fstat (fd, &st) < 0)
    return NULL;
  if (st.st_size > XML_MAX) {
    errno = EINVAL;
    return NULL;
  }
  buf = malloc (st.st_size + 1);
  if (!buf)
    return NULL;
  while (got < (size_t) st.st_size) {
    ssize_t r = pread (fd, buf + got, st.st_size - got, got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    got += r;
  }
  buf[got] = '\0';
  *len = got;
  return buf;
}

/* The text of the first child element called name of e, or NULL. */
static char *
child_text (xmlNodePtr e, const char *name)
{
  xmlNodePtr c;

  for (c = e ? e->children : NULL; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE
        && strcmp ((const char *) c->name, name) == 0) {
      xmlChar *t = xmlNodeGetContent (c);
      char *r = t ? strdup ((const char *) t) : NULL;
      xmlFree (t);
      return r;
    }
  return NULL;
}

static xmlNodePtr
child_elem (xmlNodePtr e, const char *name)
{
  xmlNodePtr c;

  for (c = e ? e->children : NULL; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE
        && strcmp ((const char *) c->name, name) == 0)
      return c;
  return NULL;
}

/* Trim blanks at both ends, in place. */
static char *
trim (char *s)
{
  char *e;

  if (!s)
    return s;
  while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
    memmove (s, s + 1, strlen (s));
  e = s + strlen (s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\t'
                   || e[-1] == '\r'))
    *--e = '\0';
  return s;
}

/* Parse xml: the root element must be root.  The document, or NULL
 * after a log line (EINVAL). */
static xmlDocPtr
parse (const char *what, const char *xml, size_t len, const char *root)
{
  xmlDocPtr doc;
  xmlNodePtr r;

  doc = xmlReadMemory (xml, (int) len, NULL, NULL,
                       XML_PARSE_NONET | XML_PARSE_NOERROR
                       | XML_PARSE_NOWARNING);
  if (!doc) {
    const xmlError *e = xmlGetLastError ();
    vd_error ("%s: not well-formed XML%s%s: nothing changed", what,
              e && e->message ? ": " : "",
              e && e->message ? trim (e->message) : "");
    errno = EINVAL;
    return NULL;
  }
  r = xmlDocGetRootElement (doc);
  if (!r || strcmp ((const char *) r->name, root) != 0) {
    vd_error ("%s: not a <%s> document: nothing changed", what, root);
    xmlFreeDoc (doc);
    errno = EINVAL;
    return NULL;
  }
  return doc;
}

/* The libvirt connection, read-write: a new reference, or NULL with
 * errno (logged). */
static virConnectPtr
conn_rw (const char *what)
{
  bool ro = false;
  virConnectPtr c = virt_get_conn_mode (&ro);

  if (!c) {
    vd_error ("%s: not connected to %s: not restored", what, virt_uri);
    errno = EIO;
    return NULL;
  }
  if (ro) {
    vd_error ("%s: the connection to %s is read-only: not restored", what,
              virt_uri);
    virConnectClose (c);
    errno = EROFS;
    return NULL;
  }
  return c;
}

/* libvirt's last error message (static or libvirt's). */
static const char *
virt_msg (void)
{
  virErrorPtr e = virGetLastError ();

  return e && e->message ? e->message : "unknown libvirt error";
}

/* Make the tree show domain (its directory, disks, snapshots) as libvirt
 * and the images have it now. */
static void
refresh_domain (const char *domain)
{
  CLEANUP_FREE char *ename = vd_name_escape (domain), *path = NULL;
  struct fs_node *root = tree_root (), *dom;

  virt_mark_dirty (domain);
  __atomic_store_n (&virt_root_dirty, 1, __ATOMIC_RELEASE);
  lvm_cache_flush ();
  tree_refresh (root);
  if (!ename)
    return;
  dom = child_of (root, ename);
  if (dom) {
    tree_refresh (dom);
    inode_unref (dom);
  }
}

/* The domain's NVRAM file (<os><nvram>, either form; for an
 * <os firmware='efi'> without one, libvirt's default path), malloc'd, or
 * NULL. */
static char *
nvram_path (const char *domain, const char *xml, size_t len)
{
  struct domxml_nvram nv;
  char *path = NULL;

  if (domxml_parse_nvram (xml, len, &nv) < 0)
    return NULL;
  if (nv.path && nv.path[0])
    path = strdup (nv.path);
  else if (!nv.path && nv.firmware && strcmp (nv.firmware, "efi") == 0)
    path = libvirt_nvram_default (domain);
  domxml_nvram_clear (&nv);
  return path;
}

/* ---- Where a disk may be created. ---- */

/* Is path absolute, without ".", ".." or empty components? */
static bool
plain_path (const char *path)
{
  const char *p = path, *e;

  if (path[0] != '/')
    return false;
  while (*p == '/') {
    p++;
    e = strchrnul (p, '/');
    if (e == p || (e - p == 1 && p[0] == '.')
        || (e - p == 2 && p[0] == '.' && p[1] == '.'))
      return false;
    p = e;
  }
  return *p == '\0';
}

/* The active directory-like pool whose target directory is the
 * directory of path (a plain path, its directory existing and no
 * symlink on the way): a new reference, or NULL. */
static virStoragePoolPtr
pool_for_path (virConnectPtr c, const char *path)
{
  virStoragePoolPtr *pools = NULL, found = NULL;
  CLEANUP_FREE char *dir = NULL, *rdir = NULL;
  int n, i;

  if (!plain_path (path))
    return NULL;
  dir = strndup (path, strrchr (path, '/') - path);
  if (!dir || !dir[0])
    return NULL;
  rdir = realpath (dir, NULL);
  /* No symlink on the way: the directory is where its name says. */
  if (!rdir || strcmp (rdir, dir) != 0)
    return NULL;
  n = virConnectListAllStoragePools (c, &pools,
                                     VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE);
  for (i = 0; i < n; i++) {
    CLEANUP_FREE char *xml = NULL;
    xmlDocPtr doc;
    if (!found && (xml = virStoragePoolGetXMLDesc (pools[i], 0)) != NULL
        && (doc = parse ("pool", xml, strlen (xml), "pool")) != NULL) {
      xmlNodePtr r = xmlDocGetRootElement (doc);
      xmlChar *type = xmlGetProp (r, (const xmlChar *) "type");
      CLEANUP_FREE char *target = child_text (child_elem (r, "target"),
                                              "path");
      CLEANUP_FREE char *rtarget = NULL;
      if (type && (strcmp ((char *) type, "dir") == 0
                   || strcmp ((char *) type, "fs") == 0
                   || strcmp ((char *) type, "netfs") == 0)
          && target && (rtarget = realpath (trim (target), NULL)) != NULL
          && strcmp (rtarget, rdir) == 0)
        found = pools[i];
      xmlFree (type);
      xmlFreeDoc (doc);
    }
    if (pools[i] != found)
      virStoragePoolFree (pools[i]);
  }
  free (pools);
  return found;
}

/* Is path an existing logical volume (a device-mapper block device)? */
static bool
existing_lv (const char *path)
{
  struct stat st;
  char sys[64];

  if (stat (path, &st) < 0 || !S_ISBLK (st.st_mode))
    return false;
  /* A device-mapper device has a dm/ in sysfs (with udev or without:
   * /dev/VG/LV may lead to /dev/dm-N or to /dev/mapper/VG-LV). */
  snprintf (sys, sizeof sys, "/sys/dev/block/%u:%u/dm",
            major (st.st_rdev), minor (st.st_rdev));
  return access (sys, F_OK) == 0;
}

/* Check every disk a domain being restored names (see the head
 * comment).  0, or -1 with errno EACCES after a log line. */
static int
check_disks (virConnectPtr c, const char *domain, const char *xml,
             size_t len)
{
  struct domxml_disk *disks = NULL;
  size_t n = 0, i;
  int r = 0;

  if (domxml_parse_domain (xml, len, &disks, &n) < 0) {
    vd_error ("domain %s: domain.xml: its disks cannot be read: nothing "
              "changed", domain);
    errno = EINVAL;
    return -1;
  }
  for (i = 0; i < n && r == 0; i++) {
    struct domxml_class k;
    domxml_disk_classify (&disks[i], &k);
    if (!k.has_source)
      continue;
    if (k.src == DOMXML_SRC_FILE) {
      virStoragePoolPtr p = k.path ? pool_for_path (c, k.path) : NULL;
      struct stat st;
      if (!p) {
        vd_error ("domain %s: domain.xml: disk %s is %s, not a file in "
                  "the directory of an active storage pool: refused, "
                  "nothing created or defined", domain,
                  disks[i].target ? disks[i].target : "?",
                  k.path ? k.path : "(none)");
        r = -1;
      }
      else if (lstat (k.path, &st) == 0 && !S_ISREG (st.st_mode)) {
        vd_error ("domain %s: domain.xml: disk %s: %s exists and is not "
                  "a regular file: refused", domain,
                  disks[i].target ? disks[i].target : "?", k.path);
        r = -1;
      }
      if (p)
        virStoragePoolFree (p);
    }
    else if (k.src == DOMXML_SRC_BLOCK) {
      if (!k.path || !existing_lv (k.path)) {
        vd_error ("domain %s: domain.xml: disk %s is the block device %s, "
                  "which is not an existing logical volume: refused, "
                  "nothing created or defined", domain,
                  disks[i].target ? disks[i].target : "?",
                  k.path ? k.path : "(none)");
        r = -1;
      }
    }
    else if (k.src == DOMXML_SRC_VOLUME) {
      virStoragePoolPtr p = disks[i].pool
        ? virStoragePoolLookupByName (c, disks[i].pool) : NULL;
      if (!p || !disks[i].volume || strchr (disks[i].volume, '/')) {
        vd_error ("domain %s: domain.xml: disk %s: no storage pool %s "
                  "(or a bad volume name): refused", domain,
                  disks[i].target ? disks[i].target : "?",
                  disks[i].pool ? disks[i].pool : "(none)");
        r = -1;
      }
      if (p)
        virStoragePoolFree (p);
    }
  }
  domxml_disks_free (disks, n);
  if (r == 0) {
    /* Its NVRAM file: one that exists, a regular file, or one that may
     * be made in libvirt's nvram directory. */
    CLEANUP_FREE char *nv = nvram_path (domain, xml, len);
    struct stat st;
    if (nv && !(plain_path (nv) && lstat (nv, &st) == 0
                && S_ISREG (st.st_mode))
        && !libvirt_nvram_path_ok (nv)) {
      vd_error ("domain %s: domain.xml: its NVRAM file %s is neither an "
                "existing file nor one that may be made in libvirt's "
                "nvram directory: refused, nothing created or defined",
                domain, nv);
      r = -1;
    }
  }
  if (r < 0)
    errno = EACCES;
  return r;
}

/* ---- domain.xml ---- */

static int
define_domain (const char *domain, int fd)
{
  CLEANUP_FREE char *xml = NULL, *name = NULL, *uuid = NULL, *what = NULL;
  virConnectPtr c = NULL;
  virDomainPtr dom = NULL, other = NULL, def = NULL;
  xmlDocPtr doc;
  size_t len = 0;
  int r = -1, e = EINVAL;

  if (asprintf (&what, "domain %s: domain.xml", domain) < 0)
    what = NULL;
  xml = read_all (fd, &len);
  if (!xml) {
    e = errno == EINVAL ? EINVAL : errno ? errno : EIO;
    vd_error ("%s: cannot read it (%s): nothing changed", what,
              strerror (e));
    errno = e;
    return -1;
  }
  doc = parse (what, xml, len, "domain");
  if (!doc)
    return -1;
  name = trim (child_text (xmlDocGetRootElement (doc), "name"));
  uuid = trim (child_text (xmlDocGetRootElement (doc), "uuid"));
  xmlFreeDoc (doc);
  if (!name || strcmp (name, domain) != 0) {
    vd_error ("%s: it names the domain %s, not %s: nothing changed "
              "(a domain is renamed with virsh domrename)", what,
              name ? name : "(no <name>)", domain);
    errno = EINVAL;
    return -1;
  }
  c = conn_rw (what);
  if (!c)
    return -1;
  dom = virDomainLookupByName (c, domain);
  if (uuid && uuid[0]) {
    char have[VIR_UUID_STRING_BUFLEN];
    other = virDomainLookupByUUIDString (c, uuid);
    if (other && (!dom || virDomainGetUUIDString (dom, have) < 0
                  || strcasecmp (have, uuid) != 0)) {
      const char *on = virDomainGetName (other);
      vd_error ("%s: its UUID %s is the domain %s's: nothing changed",
                what, uuid, on ? on : "?");
      goto out;
    }
    if (dom && virDomainGetUUIDString (dom, have) == 0
        && strcasecmp (have, uuid) != 0) {
      vd_error ("%s: its UUID %s is not the domain's (%s): nothing "
                "changed", what, uuid, have);
      goto out;
    }
  }
  /* A new domain (a VM restored into a pending directory): only disks
   * we may create or write. */
  if (!dom && check_disks (c, domain, xml, len) < 0) {
    e = errno;
    goto out;
  }
  def = virDomainDefineXMLFlags (c, xml, VIR_DOMAIN_DEFINE_VALIDATE);
  if (!def) {
    vd_error ("%s: libvirt refused it: %s: nothing changed", what,
              virt_msg ());
    goto out;
  }
  vd_info ("%s: domain %s", what, dom ? "redefined" : "defined");
  r = 0;
 out:
  if (def)
    virDomainFree (def);
  if (dom)
    virDomainFree (dom);
  if (other)
    virDomainFree (other);
  virConnectClose (c);
  if (r < 0) {
    errno = e;
    return -1;
  }
  refresh_domain (domain);
  return RESTORE_DONE;
}

/* ---- Disks ---- */

/* The disk called fname (<target>.img) of the domain's inactive XML:
 * its classification into *k and the disk (disks owned by the caller).
 * NULL: no such disk. */
static struct domxml_disk *
find_disk (struct domxml_disk *disks, size_t n, const char *fname,
           struct domxml_class *k)
{
  size_t i;

  for (i = 0; i < n; i++) {
    domxml_disk_classify (&disks[i], k);
    if (k->is_disk && disks[i].target) {
      size_t tl = strlen (disks[i].target);
      if (strncmp (fname, disks[i].target, tl) == 0
          && strcmp (fname + tl, ".img") == 0)
        return &disks[i];
    }
  }
  return NULL;
}

/* Create the image of a disk that does not exist, as a volume of its
 * pool, capacity bytes, allocation 0.  0, or -1 with errno (logged). */
static int
create_volume (virConnectPtr c, const char *domain, const char *target,
               const struct domxml_disk *d, const struct domxml_class *k,
               uint64_t capacity)
{
  virStoragePoolPtr pool = NULL;
  virStorageVolPtr vol = NULL;
  CLEANUP_FREE char *xml = NULL;
  const char *vname;
  const char *fmt = k->format;

  if (k->src == DOMXML_SRC_FILE && k->path) {
    pool = pool_for_path (c, k->path);
    vname = strrchr (k->path, '/') + 1;
  }
  else if (k->src == DOMXML_SRC_VOLUME && d->pool && d->volume
           && !strchr (d->volume, '/')) {
    pool = virStoragePoolLookupByName (c, d->pool);
    vname = d->volume;
  }
  else {
    vd_error ("domain %s: %s: its image %s does not exist and is not "
              "made here (only files in a storage pool's directory and "
              "pool volumes are): not restored", domain, target,
              k->path ? k->path : "(no path)");
    errno = EACCES;
    return -1;
  }
  if (!pool) {
    vd_error ("domain %s: %s: %s is not in the directory of an active "
              "storage pool: not created, not restored", domain, target,
              k->path ? k->path : d->volume);
    errno = EACCES;
    return -1;
  }
  if (strcmp (fmt, "raw") && strcmp (fmt, "qcow2") && strcmp (fmt, "qed"))
    fmt = "raw";
  /* Capacity rounded up to a sector: qemu-img would. */
  capacity = (capacity + 511) & ~(uint64_t) 511;
  {
    xmlChar *en = xmlEncodeSpecialChars (NULL, (const xmlChar *) vname);
    if (!en || asprintf (&xml, "<volume><name>%s</name>"
                         "<capacity unit='bytes'>%" PRIu64 "</capacity>"
                         "<allocation unit='bytes'>0</allocation>"
                         "<target><format type='%s'/></target></volume>",
                         (const char *) en, capacity, fmt) < 0)
      xml = NULL;
    xmlFree (en);
  }
  if (xml)
    vol = virStorageVolCreateXML (pool, xml, 0);
  if (!vol) {
    vd_error ("domain %s: %s: creating the volume %s: %s", domain, target,
              vname, xml ? virt_msg () : "out of memory");
    virStoragePoolFree (pool);
    errno = EIO;
    return -1;
  }
  vd_info ("domain %s: %s: created the %s volume %s (%" PRIu64 " bytes)",
           domain, target, fmt, vname, capacity);
  virStorageVolFree (vol);
  virStoragePoolFree (pool);
  return 0;
}

/* The domain's inactive definition's disks: 0, or -1 with errno.  *dom
 * NULL (0 returned) when libvirt does not know the domain. */
static int
domain_disks (virConnectPtr c, const char *domain, virDomainPtr *dom,
              struct domxml_disk **disks, size_t *n)
{
  CLEANUP_FREE char *xml = NULL;

  *disks = NULL;
  *n = 0;
  *dom = virDomainLookupByName (c, domain);
  if (!*dom)
    return 0;
  xml = virDomainGetXMLDesc (*dom, VIR_DOMAIN_XML_INACTIVE);
  if (!xml || domxml_parse_domain (xml, strlen (xml), disks, n) < 0) {
    vd_error ("domain %s: its definition cannot be read", domain);
    virDomainFree (*dom);
    *dom = NULL;
    errno = EIO;
    return -1;
  }
  return 0;
}

/* The path of disk d (classified k): malloc'd, or NULL. */
static char *
disk_path (virConnectPtr c, const struct domxml_disk *d,
           const struct domxml_class *k)
{
  if (k->src == DOMXML_SRC_FILE || k->src == DOMXML_SRC_BLOCK)
    return k->path ? strdup (k->path) : NULL;
  if (k->src == DOMXML_SRC_VOLUME && d->pool && d->volume)
    return ds_volume_path (c, d->pool, d->volume);
  return NULL;
}

/* nvram.fd of a domain: its NVRAM file made if missing (in libvirt's
 * nvram directory only), then written as a disk. */
static int
domain_nvram (const char *domain, int fd)
{
  CLEANUP_FREE char *xml = NULL, *nv = NULL, *what = NULL;
  virConnectPtr c;
  virDomainPtr dom;
  struct stat st;
  int active, nfd, r = RESTORE_DISK, e = 0;

  if (asprintf (&what, "domain %s: nvram.fd", domain) < 0)
    what = NULL;
  c = conn_rw (what);
  if (!c)
    return -1;
  dom = virDomainLookupByName (c, domain);
  if (!dom) {
    virConnectClose (c);
    return RESTORE_KEEP;        /* its domain.xml has not come yet */
  }
  xml = virDomainGetXMLDesc (dom, VIR_DOMAIN_XML_INACTIVE);
  active = virDomainIsActive (dom);
  virDomainFree (dom);
  virConnectClose (c);
  nv = xml ? nvram_path (domain, xml, strlen (xml)) : NULL;
  if (!nv)
    return RESTORE_KEEP;        /* no NVRAM: a file kept aside */
  if (active == 1) {
    vd_error ("%s: the domain is running: its NVRAM is written only while "
              "it is shut off", what);
    errno = EBUSY;
    return -1;
  }
  if (lstat (nv, &st) < 0) {
    if (!libvirt_nvram_path_ok (nv) || fstat (fd, &st) < 0) {
      errno = EACCES;
      return -1;
    }
    nfd = open (nv, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0600);
    if (nfd < 0 || ftruncate (nfd, st.st_size) < 0) {
      e = errno;
      vd_error ("%s: creating %s: %s", what, nv, strerror (e));
      if (nfd >= 0) {
        close (nfd);
        unlink (nv);
      }
      errno = e;
      return -1;
    }
    close (nfd);
    vd_info ("%s: created %s", what, nv);
  }
  refresh_domain (domain);
  return r;
}

static int
domain_disk (const char *domain, const char *fname, int fd)
{
  struct domxml_disk *disks = NULL, *d;
  struct domxml_class k;
  virConnectPtr c;
  virDomainPtr dom = NULL;
  CLEANUP_FREE char *path = NULL, *what = NULL;
  size_t n = 0;
  struct stat st;
  int r = -1, e = EIO;

  if (asprintf (&what, "domain %s: %s", domain, fname) < 0)
    what = NULL;
  c = conn_rw (what);
  if (!c)
    return -1;
  if (domain_disks (c, domain, &dom, &disks, &n) < 0) {
    e = errno;
    goto out;
  }
  if (!dom) {
    r = RESTORE_KEEP;           /* its domain.xml has not come yet */
    goto out;
  }
  d = find_disk (disks, n, fname, &k);
  if (!d) {
    r = RESTORE_KEEP;           /* not a disk of it: a file kept aside */
    goto out;
  }
  if (virDomainIsActive (dom) == 1) {
    vd_error ("%s: the domain is running: its disks are written only "
              "while it is shut off", what);
    e = EBUSY;
    goto out;
  }
  path = disk_path (c, d, &k);
  if (!path || stat (path, &st) < 0) {
    if (fstat (fd, &st) < 0
        || create_volume (c, domain, fname, d, &k, st.st_size) < 0) {
      e = errno ? errno : EIO;
      goto out;
    }
  }
  r = RESTORE_DISK;
 out:
  domxml_disks_free (disks, n);
  if (dom)
    virDomainFree (dom);
  virConnectClose (c);
  if (r == RESTORE_DISK)
    refresh_domain (domain);
  errno = e;
  return r;
}

/* ---- Snapshots ---- */

/* A disk image of domain opened for writing as write.c would (snapshot
 * lock, shut off, qemu's locks): through the active disk node fname.
 * The image and its node (*node, a reference) and token, or NULL with
 * errno. */
static struct vd_image *
open_current (const char *domain, const char *fname, struct fs_node **node,
              void **token)
{
  CLEANUP_FREE char *ename = vd_name_escape (domain);
  struct fs_node *dom, *disk = NULL;
  struct vd_image *img;

  *node = NULL;
  dom = ename ? child_of (tree_root (), ename) : NULL;
  if (dom) {
    disk = child_of (dom, fname);
    inode_unref (dom);
  }
  if (!disk || disk->type != FS_NODE_DISK) {
    if (disk)
      inode_unref (disk);
    errno = ENOENT;
    return NULL;
  }
  img = libvirt_open_write (disk, token);
  if (!img) {
    int err = errno;
    inode_unref (disk);
    errno = err;
    return NULL;
  }
  *node = disk;
  return img;
}

/* The tree's node of snapshots/<snap>/<fname> of domain (a reference),
 * or NULL. */
static struct fs_node *
snapshot_node (const char *domain, const char *snap, const char *fname)
{
  CLEANUP_FREE char *ed = vd_name_escape (domain), *es = vd_name_escape (snap);
  struct fs_node *a, *b = NULL, *c = NULL, *d = NULL;

  if (!ed || !es)
    return NULL;
  a = child_of (tree_root (), ed);
  if (a)
    b = child_of (a, "snapshots");
  if (b)
    c = child_of (b, es);
  if (c)
    d = child_of (c, fname);
  if (a)
    inode_unref (a);
  if (b)
    inode_unref (b);
  if (c)
    inode_unref (c);
  if (d && d->type != FS_NODE_DISK) {
    inode_unref (d);
    d = NULL;
  }
  return d;
}

static void
close_current (struct fs_node *node, struct vd_image *img, void *token)
{
  vd_image_close (img);
  libvirt_close_write (node, token);
  inode_unref (node);
}

/* The times libvirt records for snapshot snap of dom, into *t: true if
 * it knows the snapshot. */
static bool
snapshot_times (virDomainPtr dom, const char *snap, struct vd_snapshot *t)
{
  virDomainSnapshotPtr s = virDomainSnapshotLookupByName (dom, snap, 0);
  CLEANUP_FREE char *xml = NULL;
  struct domxml_snapshot ds;

  memset (t, 0, sizeof *t);
  if (!s)
    return false;
  xml = virDomainSnapshotGetXMLDesc (s, 0);
  virDomainSnapshotFree (s);
  if (!xml)
    return false;
  memset (&ds, 0, sizeof ds);
  if (domxml_parse_snapshot (xml, strlen (xml), &ds) < 0)
    return false;
  t->date_sec = ds.creation_time;
  domxml_snapshot_clear (&ds);
  return true;
}

static int
snapshot_disk (const char *domain, const char *snap, const char *fname,
               int fd)
{
  struct domxml_disk *disks = NULL, *d;
  struct domxml_class k;
  virConnectPtr c;
  virDomainPtr dom = NULL;
  CLEANUP_FREE char *path = NULL, *what = NULL;
  struct vd_snapshot t;
  struct vd_image *img;
  struct fs_node *node, *snapnode = NULL;
  void *token;
  struct stat st;
  bool known;
  size_t n = 0;
  int r = -1, e = EIO;

  if (asprintf (&what, "domain %s: snapshot %s: %s", domain, snap,
                fname) < 0)
    what = NULL;
  c = conn_rw (what);
  if (!c)
    return -1;
  if (domain_disks (c, domain, &dom, &disks, &n) < 0) {
    e = errno;
    goto out;
  }
  if (!dom) {
    r = RESTORE_KEEP;           /* the domain is not defined yet */
    goto out;
  }
  d = find_disk (disks, n, fname, &k);
  if (!d) {
    vd_error ("%s: the domain has no disk %s: not restored", what, fname);
    e = ENOENT;
    goto out;
  }
  path = disk_path (c, d, &k);
  if (!path || stat (path, &st) < 0) {
    r = RESTORE_KEEP;           /* the current disk has not come yet */
    goto out;
  }
  if (virDomainIsActive (dom) == 1) {
    vd_error ("%s: the domain is running: a snapshot is copied back only "
              "while it is shut off", what);
    e = EBUSY;
    goto out;
  }
  if (!k.qcow2 && S_ISBLK (st.st_mode)) {
    /* A logical volume: an LVM snapshot of it holds the bytes. */
    if (libvirt_lvm_snapshot_write (domain, snap, path, fd) < 0)
      e = errno;
    else
      r = RESTORE_DONE;
    goto out;
  }
  if (!k.qcow2) {
    vd_error ("%s: the disk is %s %s, which holds no internal snapshots: "
              "not restored", what, k.format, path);
    e = ENOTSUP;
    goto out;
  }
  if (fstat (fd, &st) < 0) {
    e = errno;
    goto out;
  }
  known = snapshot_times (dom, snap, &t);
  /* A reader of the snapshot being replaced would read freed clusters. */
  snapnode = snapshot_node (domain, snap, fname);
  if (snapnode) {
    unsigned nopen;
    pthread_mutex_lock (&snapnode->lock);
    nopen = snapnode->nopen;
    pthread_mutex_unlock (&snapnode->lock);
    if (nopen) {
      vd_error ("%s: the snapshot's disk is open (being read): not "
                "replaced", what);
      inode_unref (snapnode);
      e = EBUSY;
      goto out;
    }
  }
  img = open_current (domain, fname, &node, &token);
  if (!img) {
    e = errno ? errno : EIO;
    vd_error ("%s: the current disk cannot be opened for writing: %s",
              what, strerror (e));
    if (snapnode)
      inode_unref (snapnode);
    goto out;
  }
  if (vd_image_snapshot_import (img, snap, fd, st.st_size,
                                known ? &t : NULL) < 0
      || vd_image_flush (img) < 0) {
    e = errno ? errno : EIO;
    vd_error ("%s: not restored: %s", what, strerror (e));
    close_current (node, img, token);
    if (snapnode)
      inode_unref (snapnode);
    goto out;
  }
  close_current (node, img, token);
  if (snapnode) {
    tree_set_disk (snapnode, NULL, 0);  /* the old one's image: reopen */
    inode_unref (snapnode);
    snapnode = NULL;
  }
  vd_info ("%s: restored as the internal snapshot %s of %s", what, snap,
           path);
  r = RESTORE_DONE;
 out:
  domxml_disks_free (disks, n);
  if (dom)
    virDomainFree (dom);
  virConnectClose (c);
  if (r == RESTORE_DONE)
    refresh_domain (domain);
  errno = e;
  return r;
}

/* After snapshot.xml: the qcow2 snapshots snap of the domain's disks
 * take its date (best effort; logged). */
static void
set_snapshot_dates (virConnectPtr c, const char *domain, const char *snap,
                    const struct vd_snapshot *t)
{
  struct domxml_disk *disks = NULL;
  virDomainPtr dom = NULL;
  size_t n = 0, i;

  if (domain_disks (c, domain, &dom, &disks, &n) < 0 || !dom)
    return;
  if (virDomainIsActive (dom) != 1)
    for (i = 0; i < n; i++) {
      struct domxml_class k;
      struct vd_snapshot *snaps = NULL;
      struct vd_image *img;
      struct fs_node *node;
      CLEANUP_FREE char *fname = NULL;
      size_t ns = 0, j;
      bool has = false;
      void *token;

      domxml_disk_classify (&disks[i], &k);
      if (!k.is_disk || !k.qcow2 || !disks[i].target
          || asprintf (&fname, "%s.img", disks[i].target) < 0)
        continue;
      img = open_current (domain, fname, &node, &token);
      if (!img)
        continue;
      if (vd_image_list_snapshots (img, &snaps, &ns) == 0) {
        for (j = 0; j < ns; j++)
          if (strcmp (snaps[j].name, snap) == 0) {
            has = snaps[j].date_sec != t->date_sec;
            break;
          }
        vd_snapshots_free (snaps, ns);
      }
      if (has && vd_image_snapshot_set_times (img, snap, t) < 0)
        vd_error ("domain %s: snapshot %s: %s: its date not set: %s",
                  domain, snap, fname, strerror (errno));
      close_current (node, img, token);
    }
  domxml_disks_free (disks, n);
  virDomainFree (dom);
}

static int
redefine_snapshot (const char *domain, const char *snap, int fd)
{
  CLEANUP_FREE char *xml = NULL, *what = NULL, *parent = NULL;
  CLEANUP_FREE char *why = NULL;
  struct domxml_snapshot ds;
  virConnectPtr c;
  virDomainPtr dom;
  virDomainSnapshotPtr s;
  struct vd_snapshot t;
  size_t len = 0;
  xmlDocPtr doc;

  if (asprintf (&what, "domain %s: snapshot %s: snapshot.xml", domain,
                snap) < 0)
    what = NULL;
  xml = read_all (fd, &len);
  if (!xml) {
    int e = errno ? errno : EIO;
    vd_error ("%s: cannot read it: %s", what, strerror (e));
    errno = e;
    return -1;
  }
  doc = parse (what, xml, len, "domainsnapshot");
  if (!doc)
    return -1;
  parent = trim (child_text (child_elem (xmlDocGetRootElement (doc),
                                         "parent"), "name"));
  xmlFreeDoc (doc);
  memset (&ds, 0, sizeof ds);
  if (domxml_parse_snapshot (xml, len, &ds) < 0 || !ds.name
      || strcmp (ds.name, snap) != 0) {
    vd_error ("%s: it names the snapshot %s, not %s: nothing changed",
              what, ds.name ? ds.name : "(none)", snap);
    domxml_snapshot_clear (&ds);
    errno = EINVAL;
    return -1;
  }
  memset (&t, 0, sizeof t);
  t.date_sec = ds.creation_time;
  domxml_snapshot_clear (&ds);
  c = conn_rw (what);
  if (!c)
    return -1;
  dom = virDomainLookupByName (c, domain);
  if (!dom) {
    virConnectClose (c);
    return RESTORE_KEEP;        /* the domain is not defined yet */
  }
  if (parent && parent[0]) {
    /* libvirt wants the parent first; files come in any order. */
    virDomainSnapshotPtr ps = virDomainSnapshotLookupByName (dom, parent, 0);
    if (!ps) {
      vd_info ("%s: waits for its parent snapshot %s", what, parent);
      virDomainFree (dom);
      virConnectClose (c);
      return RESTORE_KEEP;
    }
    virDomainSnapshotFree (ps);
  }
  s = virDomainSnapshotCreateXML (dom, xml,
                                  VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE);
  if (!s)
    why = strdup (virt_msg ());
  if (!s) {
    /* libvirt refuses some changes to a snapshot it has (mkdir made the
     * snapshot of now, which this one replaces): its metadata goes
     * first, and comes back if the new one is refused too. */
    virDomainSnapshotPtr old = virDomainSnapshotLookupByName (dom, snap, 0);
    char *oldxml = old ? virDomainSnapshotGetXMLDesc (old, 0) : NULL;
    if (oldxml && virDomainSnapshotDelete
        (old, VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY) == 0) {
      s = virDomainSnapshotCreateXML (dom, xml,
                                      VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE);
      if (!s) {
        virDomainSnapshotPtr back = virDomainSnapshotCreateXML
          (dom, oldxml, VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE);
        if (back)
          virDomainSnapshotFree (back);
        else
          vd_error ("%s: the snapshot's previous metadata could not be "
                    "put back: %s", what, virt_msg ());
        vd_error ("%s: libvirt refused it: %s: nothing changed", what,
                  why ? why : "?");
        free (oldxml);
        virDomainSnapshotFree (old);
        virDomainFree (dom);
        virConnectClose (c);
        errno = EINVAL;
        return -1;
      }
    }
    free (oldxml);
    if (old)
      virDomainSnapshotFree (old);
  }
  if (!s) {
    vd_error ("%s: libvirt refused it: %s: nothing changed", what,
              why ? why : virt_msg ());
    virDomainFree (dom);
    virConnectClose (c);
    errno = EINVAL;
    return -1;
  }
  virDomainSnapshotFree (s);
  virDomainFree (dom);
  vd_info ("%s: snapshot metadata restored", what);
  if (t.date_sec)
    set_snapshot_dates (c, domain, snap, &t);
  virConnectClose (c);
  refresh_domain (domain);
  return RESTORE_DONE;
}

/* A snapshot's domain.xml is part of its snapshot.xml: taken (and
 * dropped) once libvirt knows the snapshot. */
static int
snapshot_domxml (const char *domain, const char *snap)
{
  virConnectPtr c = conn_rw ("snapshot domain.xml");
  virDomainPtr dom;
  virDomainSnapshotPtr s = NULL;

  if (!c)
    return -1;
  dom = virDomainLookupByName (c, domain);
  if (dom)
    s = virDomainSnapshotLookupByName (dom, snap, 0);
  if (s)
    virDomainSnapshotFree (s);
  if (dom)
    virDomainFree (dom);
  virConnectClose (c);
  return s ? RESTORE_DONE : RESTORE_KEEP;
}

/* ---- The provider ops. ---- */

int
libvirt_may_pend (struct fs_node *dir, const char *ename)
{
  CLEANUP_FREE char *name = NULL;
  virConnectPtr c;
  virDomainPtr dom;

  if (dir != tree_root ()) {
    errno = EPERM;
    return -1;
  }
  name = vd_name_unescape (ename);
  if (!name) {
    errno = EINVAL;
    return -1;
  }
  c = conn_rw (name);
  if (!c)
    return -1;
  dom = virDomainLookupByName (c, name);
  virConnectClose (c);
  if (dom) {
    virDomainFree (dom);
    errno = EEXIST;
    return -1;
  }
  return 0;
}

int
libvirt_complete (const char *dirpath, const char *name, int fd)
{
  char *comp[4] = { NULL, NULL, NULL, NULL };
  CLEANUP_FREE char *copy = strdup (dirpath), *domain = NULL, *snap = NULL;
  size_t nc = 0;
  char *p, *save = NULL;
  int r = RESTORE_KEEP;

  if (!copy) {
    errno = ENOMEM;
    return -1;
  }
  for (p = strtok_r (copy, "/", &save); p && nc < 4;
       p = strtok_r (NULL, "/", &save))
    comp[nc++] = p;
  if (nc == 0 || p)
    return RESTORE_KEEP;
  domain = vd_name_unescape (comp[0]);
  if (!domain)
    return RESTORE_KEEP;
  if (nc == 1) {
    if (strcmp (name, "domain.xml") == 0)
      r = define_domain (domain, fd);
    else if (strlen (name) > 4 && strcmp (name + strlen (name) - 4, ".img") == 0)
      r = domain_disk (domain, name, fd);
    else if (strcmp (name, "nvram.fd") == 0)
      r = domain_nvram (domain, fd);
  }
  else if (nc == 3 && strcmp (comp[1], "snapshots") == 0) {
    snap = vd_name_unescape (comp[2]);
    if (!snap)
      return RESTORE_KEEP;
    if (strcmp (name, "snapshot.xml") == 0)
      r = redefine_snapshot (domain, snap, fd);
    else if (strcmp (name, "domain.xml") == 0)
      r = snapshot_domxml (domain, snap);
    else if (strlen (name) > 4 && strcmp (name + strlen (name) - 4, ".img") == 0)
      r = snapshot_disk (domain, snap, name, fd);
  }
  return r;
}
