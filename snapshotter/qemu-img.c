/* vmdiskfs - qemu-img on this host, for the internal snapshots of a
 * shut-off domain's qcow2 images (domsnap.c, own path and delete).
 * Run through child.c with a deadline; its stderr goes to the log when
 * it fails.
 *
 * Threads: no state; each call runs a child of its own.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "domsnap-int.h"
#include "child.h"
#include "log.h"
#include "cleanup.h"

/* qemu-img gets this long (VMDISKFS_DOMSNAP_QEMU_IMG_TIMEOUT overrides
 * it, for tests): one stuck on a hung NFS server or a lock must not
 * hang mkdir forever. */
#define QEMU_IMG_TIMEOUT_SECONDS 300

/* Bytes of its stderr kept for the log. */
#define ERR_MAX 2047

/* Run qemu-img ARGV (no shell); its stderr goes to the log on failure.
 * Killed after QEMU_IMG_TIMEOUT_SECONDS.  0, or -1 with errno EIO, or
 * ETIMEDOUT when it was killed (logged, naming the domain and disk). */
static int
run_qemu_img (const struct dom *m, const struct dk *k, char *const argv[])
{
  CLEANUP_FREE char *cmd = NULL, *what = NULL;
  struct vd_buf b = { 0 };
  long limit = ds_env_seconds ("VMDISKFS_DOMSNAP_QEMU_IMG_TIMEOUT",
                               QEMU_IMG_TIMEOUT_SECONDS);
  struct child_spec cs = {
    .argv = argv, .err_max = ERR_MAX,
    .timeout_ms = limit > INT_MAX / 1000 ? INT_MAX : (int) limit * 1000,
  };
  struct child_result cr;
  const char *err;
  int status, e = 0;
  size_t i, el;

  for (i = 0; argv[i]; i++) {
    if (i)
      vd_buf_str (&b, " ");
    vd_buf_str (&b, argv[i]);
  }
  cmd = vd_buf_take (&b);
  if (!cmd || asprintf (&what, "domain %s: disk %s: %s", m->name, k->target,
                        cmd) < 0)
    return -1;
  cs.what = what;
  if (child_run (&cs, &cr) < 0) {
    e = errno;
    if (e != ETIMEDOUT) {
      child_result_free (&cr);
      errno = EIO;              /* logged */
      return -1;
    }
  }
  el = cr.err_len;
  while (el > 0 && cr.err[el - 1] == '\n')
    cr.err[--el] = '\0';
  err = el ? cr.err : "";
  status = cr.status;
  if (e == ETIMEDOUT) {
    vd_error ("%s did not finish in %ld s: killed%s%s", what, limit,
              el ? ": " : "", err);
    e = ETIMEDOUT;
  }
  else if (status == -1) {
    vd_error ("%s: waitpid: no exit status (SIGCHLD ignored)", what);
    e = EIO;
  }
  else if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    vd_error ("%s failed (%s %d): %s", what,
              WIFEXITED (status) ? "status" : "signal",
              WIFEXITED (status) ? WEXITSTATUS (status) : WTERMSIG (status),
              el ? err : "no message");
    e = EIO;
  }
  child_result_free (&cr);
  if (e) {
    errno = e;
    return -1;
  }
  return 0;
}

/* qemu-img snapshot OP NAME on disk k, as qcow2 (the format libvirt
 * gives it, never probed): --image-opts, as `snapshot` has no -f. */
int
qemu_img_snapshot (const struct dom *m, const struct dk *k, const char *op,
                   const char *name)
{
  struct vd_buf b = { 0 };
  CLEANUP_FREE char *opts = NULL;
  const char *p;

  vd_buf_str (&b, "driver=qcow2,file.filename=");
  for (p = k->path; *p; p++)
    vd_buf_add (&b, p, *p == ',' ? 0 : 1),
      vd_buf_str (&b, *p == ',' ? ",," : "");
  opts = vd_buf_take (&b);
  if (!opts)
    return -1;
  {
    char *argv[] = { (char *) "qemu-img", (char *) "snapshot",
      (char *) "--image-opts", (char *) op, (char *) name, opts, NULL };
    return run_qemu_img (m, k, argv);
  }
}
