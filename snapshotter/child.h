/* vmdiskfs - one child process with a deadline: the runner behind
 * qemu-img (qemu-img.c) and the LVM helper (lvm-helper.c).
 *
 * The child is either a program (argv, PATH searched, no shell; started
 * with posix_spawnp, so that a large FUSE process is not copied) or a
 * function called in a forked child (fn: liblvm2cmd, which must not run
 * in our process).  Its stdin is /dev/null, its stdout a pipe (captured)
 * or /dev/null, its stderr a pipe (captured); no other descriptor of
 * ours stays open in it (not the FUSE device nor images: a child left
 * running must not keep the mount or a file open).  The parent reads
 * both pipes until they close, keeping at most out_max / err_max bytes
 * of each, and kills the child (SIGKILL) when the deadline passes; then
 * reaps it.
 *
 * Threads: each call has a child of its own; calls from several threads
 * run at once.  A forked child (fn) runs in a copy of a possibly
 * multithreaded process: see lvm-helper.c for what it may touch.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_CHILD_H
#define VD_CHILD_H

#include <stdbool.h>
#include <stddef.h>

struct child_spec {
  char *const *argv;          /* the program and its arguments, or NULL */
  void (*fn) (void *arg);     /* argv NULL: called in a forked child,
                                 with signal dispositions default and
                                 none blocked; must _exit (127 when it
                                 returns) */
  void *arg;
  const char *what;           /* names the child in the runner's own
                                 messages ("lvm", "domain D: disk K: CMD") */
  int timeout_ms;             /* then SIGKILL and ETIMEDOUT */
  int grace_ms;               /* its pipes closed, how much longer than
                                 the deadline it may take to exit before
                                 it is killed (ETIMEDOUT too) */
  bool capture_out;           /* stdout to out (else /dev/null) */
  size_t out_max, err_max;    /* bytes kept of each                     */
  bool overflow_fails;        /* more than that: kill, EFBIG (logged);
                                 else the rest is read and dropped      */
};

struct child_result {
  char *out;                  /* malloc'd, NUL-terminated; NULL when not
                                 captured                                */
  size_t out_len;
  char *err;                  /* malloc'd, NUL-terminated, may be NULL  */
  size_t err_len;
  int status;                 /* waitpid's status; -1 when none could be
                                 had (the caller ignores SIGCHLD)       */
};

/* Run the child.  0 when it ran and was reaped, whatever its exit status
 * (r->status says); -1 with errno: ETIMEDOUT killed at the deadline (not
 * logged: r->err holds what it said, the caller logs), EFBIG too much
 * output (logged), anything else (pipe, spawn, poll, waitpid: logged,
 * prefixed with s->what).  Free r with child_result_free, also after
 * -1. */
int child_run (const struct child_spec *s, struct child_result *r);
void child_result_free (struct child_result *r);

#endif
