/* vmdiskfs - logging: stderr or syslog, one line per message.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <errno.h>
#include <pthread.h>

#include "log.h"

static enum vd_log_level log_level = VD_LOG_INFO;
static bool log_syslog;
static const char *log_program = "vmdiskfs";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void
vd_log_set_level (enum vd_log_level level)
{
  __atomic_store_n (&log_level, level, __ATOMIC_RELAXED);
}

enum vd_log_level
vd_log_get_level (void)
{
  return __atomic_load_n (&log_level, __ATOMIC_RELAXED);
}

void
vd_log_set_program (const char *name)
{
  log_program = name;
}

void
vd_log_use_syslog (bool on)
{
  if (on && !log_syslog)
    openlog (log_program, LOG_PID, LOG_DAEMON);
  log_syslog = on;
}

void
vd_log (enum vd_log_level level, const char *fmt, ...)
{
  static const char *const names[] = { "error", "warning", "info", "debug" };
  static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
  int saved_errno = errno;
  char msg[1024];
  va_list ap;

  if (level > vd_log_get_level ())
    return;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);

  if (log_syslog)
    syslog (prio[level], "%s", msg);
  else {
    pthread_mutex_lock (&log_lock);
    fprintf (stderr, "%s: %s: %s\n", log_program, names[level], msg);
    fflush (stderr);
    pthread_mutex_unlock (&log_lock);
  }
  errno = saved_errno;
}
