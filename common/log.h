/* vmdiskfs - logging.
 *
 * One logging entry point for the whole project.  Errors are logged once
 * where they are detected (see STYLE.md); callers further up only pass errno.
 * Messages go to stderr, or to syslog once vd_log_use_syslog(true) was
 * called (the daemon does that when it detaches).  Thread-safe.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef VD_LOG_H
#define VD_LOG_H

#include <stdbool.h>

enum vd_log_level {
  VD_LOG_ERROR = 0,
  VD_LOG_WARN = 1,
  VD_LOG_INFO = 2,
  VD_LOG_DEBUG = 3,
};

void vd_log (enum vd_log_level level, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
void vd_log_set_level (enum vd_log_level level);
enum vd_log_level vd_log_get_level (void);
void vd_log_use_syslog (bool on);
/* The program name messages start with (default "vmdiskfs"); call before
 * any thread logs.  name is not copied. */
void vd_log_set_program (const char *name);

#define vd_error(...) vd_log (VD_LOG_ERROR, __VA_ARGS__)
#define vd_warn(...)  vd_log (VD_LOG_WARN, __VA_ARGS__)
#define vd_info(...)  vd_log (VD_LOG_INFO, __VA_ARGS__)
#define vd_debug(...)                                           \
  do {                                                          \
    if (vd_log_get_level () >= VD_LOG_DEBUG)                    \
      vd_log (VD_LOG_DEBUG, __VA_ARGS__);                       \
  } while (0)

#endif
