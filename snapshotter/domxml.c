/* vmdiskfs - reading <disk> elements and snapshot facts out of libvirt's
 * domain and snapshot XML with libxml2.
 *
 * The parts read (everything else is ignored):
 *
 *   <domain type='kvm'>
 *     <devices>
 *       <disk type='file' device='disk'>
 *         <driver name='qemu' type='qcow2'/>
 *         <source file='/var/lib/libvirt/images/web.qcow2'/>
 *         <backingStore type='file'>     (what libvirt found: the image's
 *           <source file='/var/lib/libvirt/images/base.qcow2'/>  chain
 *           <backingStore/>                must agree, see parse_backing)
 *         </backingStore>
 *         <target dev='vda' bus='virtio'/>
 *       </disk>
 *       <disk type='block' device='disk' snapshot='no'>
 *         <source dev='/dev/vg0/scratch'/> ...
 *         <readonly/>  or  <shareable/>
 *       <disk type='volume' device='disk'>
 *         <source pool='default' volume='db.qcow2'/> ...
 *       <disk type='network' device='disk'>
 *         <source protocol='rbd' name='pool/image'>
 *           <host name='10.0.0.1' port='6789'/> (or transport='unix'
 *           <auth username='u'><secret type='ceph' uuid='...'/></auth>
 *           <config file='...'/> <snapshot name='...'/>  socket='...')
 *         </source> ...  (<auth> may also be a child of <disk>)
 *
 *     <os>                      (or <os firmware='efi'>: libvirt chooses)
 *       <loader readonly='yes' type='pflash'>/usr/share/OVMF/...</loader>
 *       <nvram>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram>
 *         or <nvram type='file'><source file='...'/></nvram>
 *
 *   <domainsnapshot>
 *     <name>nightly</name>
 *     <description>vmdisk-snapshot ...</description>
 *     <state>disk-snapshot</state>
 *     <creationTime>1795675432</creationTime>
 *     <disks>
 *       <disk name='vda' snapshot='internal'/>
 *       <disk name='vdb' snapshot='external'>
 *         <source file='/var/lib/libvirt/images/db.nightly'/>
 *       </disk>
 *     </disks>
 *     <inactiveDomain ...> (running domains, libvirt >= 7.x) ...
 *     <domain type='kvm'> ... as above, indented by two spaces ...
 *   </domainsnapshot>
 *
 * Parsing never loads external entities or DTDs and never substitutes
 * entities (XML_PARSE_NONET, no XML_PARSE_NOENT/DTDLOAD).
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "domxml.h"
#include "vec.h"

#define PARSE_FLAGS (XML_PARSE_NONET | XML_PARSE_NOERROR \
                     | XML_PARSE_NOWARNING | XML_PARSE_NOCDATA)

void
domxml_init (void)
{
  xmlInitParser ();
}

static bool
is_elem (const xmlNode *n, const char *name)
{
  return n->type == XML_ELEMENT_NODE
    && strcmp ((const char *) n->name, name) == 0;
}

static const xmlNode *
child (const xmlNode *parent, const char *name)
{
  const xmlNode *n;

  for (n = parent ? parent->children : NULL; n; n = n->next)
    if (is_elem (n, name))
      return n;
  return NULL;
}

/* A malloc'd copy of attribute name of n, NULL if absent; *oom set on
 * ENOMEM. */
static char *
attr (const xmlNode *n, const char *name, bool *oom)
{
  xmlChar *v;
  char *s;

  if (!n)
    return NULL;
  v = xmlGetNoNsProp (n, (const xmlChar *) name);
  if (!v)
    return NULL;
  s = strdup ((const char *) v);
  xmlFree (v);
  if (!s)
    *oom = true;
  return s;
}

static void
disk_clear (struct domxml_disk *d)
{
  free (d->type);
  free (d->device);
  free (d->driver_type);
  free (d->target);
  free (d->source);
  free (d->pool);
  free (d->volume);
  free (d->protocol);
  free (d->name);
  free (d->snapshot);
  for (size_t i = 0; i < d->nbacking; i++)
    free (d->backing[i]);
  free (d->backing);
  for (size_t i = 0; i < d->nhosts; i++) {
    free (d->hosts[i].name);
    free (d->hosts[i].port);
    free (d->hosts[i].transport);
    free (d->hosts[i].socket);
  }
  free (d->hosts);
  free (d->auth_user);
  free (d->secret_type);
  free (d->secret_uuid);
  free (d->secret_usage);
  free (d->config_file);
  free (d->src_snapshot);
  memset (d, 0, sizeof *d);
}

void
domxml_disks_free (struct domxml_disk *disks, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    disk_clear (&disks[i]);
  free (disks);
}

static bool
has_element_child (const xmlNode *n)
{
  const xmlNode *c;

  for (c = n->children; c; c = c->next)
    if (c->type == XML_ELEMENT_NODE)
      return true;
  return false;
}

/* Deeper <backingStore> nesting is not followed (vdformat.h's
 * VD_MAX_CHAIN_DEPTH refuses such chains anyway). */
#define MAX_BACKING_DEPTH 64

/* The <backingStore> chain of a domain's <disk> n into d:
 *
 *   <backingStore type='file' index='1'>
 *     <format type='qcow2'/>
 *     <source file='/var/lib/libvirt/images/base.qcow2'/>
 *     <backingStore/>
 *   </backingStore>
 */
static int
parse_backing (const xmlNode *n, struct domxml_disk *d)
{
  const xmlNode *bs;
  bool oom = false;
  size_t cap = 0;                       /* d->backing starts empty */

  for (bs = child (n, "backingStore"); bs && d->nbacking < MAX_BACKING_DEPTH;
       bs = child (bs, "backingStore")) {
    const xmlNode *src = child (bs, "source");
    char *path, **t;

    if (!src && !has_element_child (bs)) {
      d->backing_end = true;            /* <backingStore/> */
      break;
    }
    path = attr (src, "file", &oom);
    if (!path)
      path = attr (src, "dev", &oom);
    if (!path)
      break;                            /* network, volume: not recorded */
    t = vd_vec_grow (d->backing, &cap, d->nbacking, 1, sizeof *t);
    if (!t) {
      free (path);
      oom = true;
      break;
    }
    d->backing = t;
    d->backing[d->nbacking++] = path;
  }
  if (oom) {
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

/* Network disks have at most this many <host>s read (ceph monitors). */
#define MAX_HOSTS 16

/* A network <disk>'s <source> src (and <disk> n, where <auth> may also
 * be) into d. */
static int
parse_network (const xmlNode *n, const xmlNode *src, struct domxml_disk *d)
{
  const xmlNode *c, *auth, *sec;
  bool oom = false;
  size_t cnt = 0;

  for (c = src ? src->children : NULL; c; c = c->next)
    if (is_elem (c, "host") && cnt < MAX_HOSTS)
      cnt++;
  if (cnt && (d->hosts = calloc (cnt, sizeof *d->hosts)) == NULL)
    oom = true;
  for (c = src ? src->children : NULL; c && !oom && d->nhosts < cnt;
       c = c->next)
    if (is_elem (c, "host")) {
      struct domxml_host *h = &d->hosts[d->nhosts++];

      h->name = attr (c, "name", &oom);
      h->port = attr (c, "port", &oom);
      h->transport = attr (c, "transport", &oom);
      h->socket = attr (c, "socket", &oom);
    }
  auth = child (src, "auth");
  if (!auth)
    auth = child (n, "auth");
  d->auth_user = attr (auth, "username", &oom);
  sec = child (auth, "secret");
  d->secret_type = attr (sec, "type", &oom);
  d->secret_uuid = attr (sec, "uuid", &oom);
  d->secret_usage = attr (sec, "usage", &oom);
  d->config_file = attr (child (src, "config"), "file", &oom);
  d->src_snapshot = attr (child (src, "snapshot"), "name", &oom);
  return oom ? -1 : 0;
}

/* One <disk>: of <devices> (snap false) or of a snapshot's <disks>. */
static int
parse_disk (const xmlNode *n, bool snap, struct domxml_disk *d)
{
  const xmlNode *src = child (n, "source");
  bool oom = false;

  memset (d, 0, sizeof *d);
  if (snap) {
    d->target = attr (n, "name", &oom);
    d->snapshot = attr (n, "snapshot", &oom);
    d->type = attr (n, "type", &oom);
    d->source = attr (src, "file", &oom);
    if (!d->source)
      d->source = attr (src, "dev", &oom);
    d->driver_type = attr (child (n, "driver"), "type", &oom);
  }
  else {
    d->type = attr (n, "type", &oom);
    d->device = attr (n, "device", &oom);
    d->driver_type = attr (child (n, "driver"), "type", &oom);
    d->target = attr (child (n, "target"), "dev", &oom);
    d->source = attr (src, "file", &oom);
    if (!d->source)
      d->source = attr (src, "dev", &oom);
    if (!d->source)
      d->source = attr (src, "dir", &oom);
    d->pool = attr (src, "pool", &oom);
    d->volume = attr (src, "volume", &oom);
    d->protocol = attr (src, "protocol", &oom);
    d->name = attr (src, "name", &oom);
    d->snapshot = attr (n, "snapshot", &oom);
    d->readonly = child (n, "readonly") != NULL;
    d->shareable = child (n, "shareable") != NULL;
    if (!oom && parse_backing (n, d) < 0)
      oom = true;
    if (!oom && d->protocol && parse_network (n, src, d) < 0)
      oom = true;
  }
  if (oom) {
    disk_clear (d);
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

/* The <disk> children of parent. */
static int
parse_disks (const xmlNode *parent, bool snap, struct domxml_disk **disks,
             size_t *n)
{
  const xmlNode *c;
  size_t cnt = 0, i = 0;

  *disks = NULL;
  *n = 0;
  if (!parent)
    return 0;
  for (c = parent->children; c; c = c->next)
    if (is_elem (c, "disk"))
      cnt++;
  if (cnt == 0)
    return 0;
  *disks = calloc (cnt, sizeof **disks);
  if (!*disks) {
    errno = ENOMEM;
    return -1;
  }
  for (c = parent->children; c; c = c->next) {
    if (!is_elem (c, "disk"))
      continue;
    if (parse_disk (c, snap, &(*disks)[i]) < 0) {
      domxml_disks_free (*disks, i);
      *disks = NULL;
      return -1;
    }
    i++;
  }
  *n = i;
  return 0;
}

static xmlDoc *
read_doc (const char *xml, size_t len)
{
  xmlDoc *doc;

  if (len > INT_MAX) {
    errno = EINVAL;
    return NULL;
  }
  doc = xmlReadMemory (xml, (int) len, "libvirt.xml", NULL, PARSE_FLAGS);
  if (!doc)
    errno = EINVAL;
  return doc;
}

int
domxml_parse_domain (const char *xml, size_t len, struct domxml_disk **disks,
                     size_t *n)
{
  xmlDoc *doc = read_doc (xml, len);
  const xmlNode *root;
  int r;

  *disks = NULL;
  *n = 0;
  if (!doc)
    return -1;
  root = xmlDocGetRootElement (doc);
  if (!root || !is_elem (root, "domain")) {
    xmlFreeDoc (doc);
    errno = EINVAL;
    return -1;
  }
  r = parse_disks (child (root, "devices"), false, disks, n);
  xmlFreeDoc (doc);
  return r;
}

void
domxml_nvram_clear (struct domxml_nvram *nv)
{
  free (nv->type);
  free (nv->path);
  free (nv->format);
  free (nv->template);
  free (nv->loader);
  free (nv->loader_type);
  free (nv->firmware);
  memset (nv, 0, sizeof *nv);
}

/* The text of element n, without the blanks around it (a hand-written
 * XML may wrap the path); NULL when empty or absent.  *oom on ENOMEM. */
static char *
trimmed_text (const xmlNode *n, bool *oom)
{
  xmlChar *v = n ? xmlNodeGetContent (n) : NULL;
  const char *b, *e;
  char *s = NULL;

  if (!v)
    return NULL;
  b = (const char *) v;
  b += strspn (b, " \t\r\n");
  e = b + strlen (b);
  while (e > b && strchr (" \t\r\n", e[-1]))
    e--;
  if (e > b && (s = strndup (b, e - b)) == NULL)
    *oom = true;
  xmlFree (v);
  return s;
}

int
domxml_parse_nvram (const char *xml, size_t len, struct domxml_nvram *nv)
{
  xmlDoc *doc = read_doc (xml, len);
  const xmlNode *root, *os, *n, *src;
  bool oom = false;

  memset (nv, 0, sizeof *nv);
  if (!doc)
    return -1;
  root = xmlDocGetRootElement (doc);
  if (!root || !is_elem (root, "domain")) {
    xmlFreeDoc (doc);
    errno = EINVAL;
    return -1;
  }
  os = child (root, "os");
  nv->firmware = attr (os, "firmware", &oom);
  if (os && (n = child (os, "loader")) != NULL) {
    nv->loader = trimmed_text (n, &oom);
    nv->loader_type = attr (n, "type", &oom);
  }
  if (os && (n = child (os, "nvram")) != NULL) {
    nv->type = attr (n, "type", &oom);
    nv->format = attr (n, "format", &oom);
    nv->template = attr (n, "template", &oom);
    src = child (n, "source");
    if (nv->type || src) {
      /* A storage source: a file or a block device has a path here;
       * network (protocol= name=) has none. */
      nv->path = attr (src, "file", &oom);
      if (!nv->path)
        nv->path = attr (src, "dev", &oom);
    }
    else
      nv->path = trimmed_text (n, &oom);
  }
  xmlFreeDoc (doc);
  if (oom) {
    domxml_nvram_clear (nv);
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

void
domxml_snapshot_clear (struct domxml_snapshot *s)
{
  free (s->name);
  free (s->state);
  free (s->description);
  domxml_disks_free (s->snapdisks, s->nsnapdisks);
  domxml_disks_free (s->disks, s->ndisks);
  memset (s, 0, sizeof *s);
}

/* The text of parent's first child element name into *out (malloc'd;
 * NULL when there is none).  -1 only on ENOMEM. */
static int
text (const xmlNode *parent, const char *name, char **out)
{
  const xmlNode *n = child (parent, name);
  xmlChar *v = n ? xmlNodeGetContent (n) : NULL;

  *out = NULL;
  if (!v)
    return 0;
  *out = strdup ((const char *) v);
  xmlFree (v);
  return *out ? 0 : -1;
}

int
domxml_parse_snapshot (const char *xml, size_t len,
                       struct domxml_snapshot *s)
{
  xmlDoc *doc = read_doc (xml, len);
  const xmlNode *root, *n, *dom;
  xmlChar *v;

  memset (s, 0, sizeof *s);
  if (!doc)
    return -1;
  root = xmlDocGetRootElement (doc);
  if (!root || !is_elem (root, "domainsnapshot"))
    goto inval;
  n = child (root, "name");
  v = n ? xmlNodeGetContent (n) : NULL;
  if (!v)
    goto inval;
  s->name = strdup ((const char *) v);
  xmlFree (v);
  if (!s->name)
    goto nomem;
  if (text (root, "state", &s->state) < 0 ||
      text (root, "description", &s->description) < 0)
    goto nomem;
  n = child (root, "creationTime");
  v = n ? xmlNodeGetContent (n) : NULL;
  if (v) {
    char *end;
    long long t;
    errno = 0;
    t = strtoll ((const char *) v, &end, 10);
    if (errno == 0 && end != (char *) v && *end == '\0')
      s->creation_time = t;
    xmlFree (v);
  }
  if (parse_disks (child (root, "disks"), true, &s->snapdisks,
                   &s->nsnapdisks) < 0)
    goto fail;
  dom = child (root, "inactiveDomain");
  if (!dom)
    dom = child (root, "domain");
  if (dom && parse_disks (child (dom, "devices"), false, &s->disks,
                          &s->ndisks) < 0)
    goto fail;
  xmlFreeDoc (doc);
  return 0;

 inval:
  errno = EINVAL;
  goto fail;
 nomem:
  errno = ENOMEM;
 fail:
  {
    int e = errno;
    xmlFreeDoc (doc);
    domxml_snapshot_clear (s);
    errno = e;
  }
  return -1;
}

/* The first line-start "  <tag" followed by ' ' or '>', in [p, end). */
static const char *
find_open (const char *p, const char *end, const char *tag)
{
  size_t tl = strlen (tag);

  for (; p < end; p++) {
    p = memchr (p, '\n', end - p);
    if (!p)
      return NULL;
    if ((size_t) (end - p) > tl + 4 && memcmp (p + 1, "  <", 3) == 0
        && memcmp (p + 4, tag, tl) == 0
        && (p[4 + tl] == ' ' || p[4 + tl] == '>'))
      return p + 3;                     /* at '<' */
  }
  return NULL;
}

/* The first line "  </tag>" after p: its end (after '>'). */
static const char *
find_close (const char *p, const char *end, const char *tag)
{
  size_t tl = strlen (tag);

  for (; p < end; p++) {
    p = memchr (p, '\n', end - p);
    if (!p)
      return NULL;
    if ((size_t) (end - p) >= tl + 6 && memcmp (p + 1, "  </", 4) == 0
        && memcmp (p + 5, tag, tl) == 0 && p[5 + tl] == '>')
      return p + 6 + tl;
  }
  return NULL;
}

char *
domxml_snapshot_domain (const char *xml, size_t len, size_t *outlen)
{
  const char *end = xml + len, *start, *stop, *p;
  const char *tag = "inactiveDomain";
  char *out, *o;
  size_t extra;

  start = find_open (xml, end, tag);
  if (!start) {
    tag = "domain";
    start = find_open (xml, end, tag);
  }
  stop = start ? find_close (start, end, tag) : NULL;
  if (!stop) {
    errno = ENOENT;
    return NULL;
  }
  /* Room for the text, "domain" for a longer name, and the newline. */
  extra = 2;
  out = malloc ((size_t) (stop - start) + extra);
  if (!out) {
    errno = ENOMEM;
    return NULL;
  }
  o = out;
  p = start;
  if (tag[0] == 'i') {
    o = stpcpy (o, "<domain");
    p += 1 + strlen (tag);
  }
  while (p < stop) {
    const char *nl = memchr (p, '\n', stop - p);
    const char *le = nl ? nl + 1 : stop;

    if (le == stop && tag[0] == 'i' && stop - p >= 2
        && memcmp (p, "</", 2) == 0) {
      o = stpcpy (o, "</domain>");
      break;
    }
    memcpy (o, p, le - p);
    o += le - p;
    p = le;
    /* De-indent the next line by the nesting's two spaces. */
    if (p < stop && p[0] == ' ' && p + 1 < stop && p[1] == ' ')
      p += 2;
  }
  *o++ = '\n';
  *outlen = o - out;
  return out;
}

void
domxml_disk_classify (const struct domxml_disk *d, struct domxml_class *c)
{
  memset (c, 0, sizeof *c);
  c->is_disk = !d->device || strcmp (d->device, "disk") == 0;
  c->type = d->type ? d->type : "file";
  c->format = d->driver_type ? d->driver_type : "raw";
  if (strcmp (c->type, "file") == 0)
    c->src = DOMXML_SRC_FILE;
  else if (strcmp (c->type, "block") == 0)
    c->src = DOMXML_SRC_BLOCK;
  else if (strcmp (c->type, "volume") == 0)
    c->src = DOMXML_SRC_VOLUME;
  else if (strcmp (c->type, "network") == 0 && d->protocol)
    c->src = DOMXML_SRC_NETWORK;
  else
    c->src = DOMXML_SRC_OTHER;
  if (c->src == DOMXML_SRC_FILE || c->src == DOMXML_SRC_BLOCK)
    c->path = d->source;
  c->has_source = d->source || d->volume || d->name;
  c->written = c->has_source && !d->readonly;
  c->snapshot_no = d->snapshot && strcmp (d->snapshot, "no") == 0;
  c->left_out = d->shareable || c->snapshot_no;
  c->qcow2 = strcmp (c->format, "qcow2") == 0;
  c->lvm_candidate = (c->src == DOMXML_SRC_BLOCK ||
                      c->src == DOMXML_SRC_VOLUME) &&
    strcmp (c->format, "raw") == 0;
}
