/* vmdiskfs - where the NVRAM file (UEFI variable store) of a domain being
 * restored may be created.
 *
 * A deleted VM copied back in brings its domain.xml, whose <os><nvram>
 * names a path, and its nvram.fd.  The XML is the backup's, so the path
 * is as untrusted as any file name in it: vmdiskfs (root) creates a file
 * there only where libvirt itself would make one, in its nvram
 * directory.  libvirt's qemu driver fixes that directory at build time
 * (no qemu.conf setting): LOCALSTATEDIR/lib/libvirt/qemu/nvram for the
 * privileged driver (qemu:///system; /var on Debian), and
 * $XDG_CONFIG_HOME/libvirt/qemu/nvram (default ~/.config) for
 * qemu:///session.  A remote host's directory is not ours to check.
 *
 * There libvirt also puts the store of a domain that names none: with
 * <loader type='pflash'> and no <nvram>, it writes the default path into
 * the definition (so the XML names it); with <os firmware='efi'> (the
 * firmware chosen at each start, libvirt 9.0) the definition names none
 * and the store is at that default path all the same.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "libvirt-priv.h"
#include "cleanup.h"
#include "log.h"

#define SYSTEM_NVRAM_DIR "/var/lib/libvirt/qemu/nvram"

/* libvirt's nvram directory for virt_uri, malloc'd; NULL (with *why)
 * when there is none on this host. */
static char *
nvram_dir (const char **why)
{
  const char *xdg, *home;
  char *d = NULL;

  *why = NULL;
  if (virt_system_uri)
    d = strdup (SYSTEM_NVRAM_DIR);
  else if (virt_uri && strcmp (virt_uri, "qemu:///session") == 0) {
    xdg = getenv ("XDG_CONFIG_HOME");
    home = getenv ("HOME");
    if (xdg && xdg[0] == '/') {
      if (asprintf (&d, "%s/libvirt/qemu/nvram", xdg) < 0)
        d = NULL;
    }
    else if (home && home[0] == '/') {
      if (asprintf (&d, "%s/.config/libvirt/qemu/nvram", home) < 0)
        d = NULL;
    }
    else {
      *why = "no $HOME for qemu:///session's nvram directory";
      return NULL;
    }
  }
  else {
    *why = "the connection's nvram directory is not on this host";
    return NULL;
  }
  if (!d)
    *why = "out of memory";
  return d;
}

/* Is every component of the absolute path dir a real directory (lstat:
 * no symlink)?  *why when not. */
static bool
real_dirs (const char *dir, const char **why)
{
  CLEANUP_FREE char *p = strdup (dir);
  struct stat st;
  char *s;

  if (!p) {
    *why = "out of memory";
    return false;
  }
  for (s = p + 1;; s++) {
    char c = *s;

    if (c != '/' && c != '\0')
      continue;
    *s = '\0';
    if (lstat (p, &st) < 0) {
      *why = errno == ENOENT ? "libvirt's nvram directory does not exist"
        : "libvirt's nvram directory cannot be examined";
      return false;
    }
    if (S_ISLNK (st.st_mode)) {
      *why = "a component of libvirt's nvram directory is a symlink";
      return false;
    }
    if (!S_ISDIR (st.st_mode)) {
      *why = "a component of libvirt's nvram directory is no directory";
      return false;
    }
    if (c == '\0')
      return true;
    *s = '/';
  }
}

char *
libvirt_nvram_default (const char *domain)
{
  CLEANUP_FREE char *dir = NULL;
  const char *why;
  char *p;

  /* libvirt refuses '/' in new names; an old one has no such file. */
  if (!domain || !domain[0] || strchr (domain, '/'))
    return NULL;
  dir = nvram_dir (&why);
  if (!dir || asprintf (&p, "%s/%s_VARS.fd", dir, domain) < 0)
    return NULL;
  return p;
}

bool
libvirt_nvram_path_ok (const char *path)
{
  CLEANUP_FREE char *dir = NULL;
  const char *why = NULL, *base;
  struct stat st;
  size_t n;

  if (!path || path[0] != '/') {
    why = "not an absolute path";
    goto refuse;
  }
  dir = nvram_dir (&why);
  if (!dir)
    goto refuse;
  n = strlen (dir);
  base = strncmp (path, dir, n) == 0 && path[n] == '/' ? path + n + 1 : "";
  /* dir/NAME exactly: no "//", no subdirectory, no "." or "..". */
  if (!base[0] || strchr (base, '/') || strcmp (base, ".") == 0
      || strcmp (base, "..") == 0) {
    why = "not a file name directly inside libvirt's nvram directory";
    goto refuse;
  }
  if (scan_inside_mount (path)) {
    why = "inside the mount";
    goto refuse;
  }
  if (!real_dirs (dir, &why))
    goto refuse;
  /* lstat: a dangling symlink exists too. */
  if (lstat (path, &st) == 0) {
    why = "it exists already";
    goto refuse;
  }
  if (errno != ENOENT) {
    why = "it cannot be examined";
    goto refuse;
  }
  return true;

 refuse:
  vd_error ("NVRAM %s: not created: %s (only a new file directly inside "
            "%s may be)", path ? path : "(none)", why,
            dir ? dir : "libvirt's nvram directory");
  return false;
}
