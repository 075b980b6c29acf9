/* common.h -- return codes, error buffers, allocation and process logging shared by
 * every module.
 * SPDX-License-Identifier: MIT
 *
 * Allocation aborts on out-of-memory (as h2o and lua-cjson do), so callers of
 * lg_xmalloc() and friends never check for NULL. */
#ifndef LG_COMMON_H
#define LG_COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum { LG_OK = 0, LG_ERR = -1, LG_AGAIN = -2, LG_DECLINED = -3 };

typedef struct lg_err {
    int code;
    char msg[512];
} lg_err_t;

/* Formats into `err` when it is non-NULL; always returns LG_ERR, so callers write
 *     return lg_err_set(err, 0, "listen port %d out of range", port); */
int lg_err_set(lg_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void *lg_xmalloc(size_t n);
void *lg_xcalloc(size_t n, size_t size);
void *lg_xrealloc(void *p, size_t n);
char *lg_xstrdup(const char *s);
char *lg_xstrndup(const char *s, size_t n);

/* Wall-clock time in microseconds since the epoch, and a monotonic clock in
 * microseconds (CLOCK_MONOTONIC). Neither can fail. */
int64_t lg_now_us(void);
int64_t lg_mono_us(void);

/* ---- Process log ----
 * The gateway's own messages (start, reload, errors): "scope" is a short word such
 * as "main", "config", "proxy". Until a sink is installed they go to stderr as
 * `<time>\t<level>\t<scope>\t<message>`. The access-log writer installs a sink so
 * that process messages share its queue and format. Thread-safe. */
enum { LG_LOG_ERR = 0, LG_LOG_WARN, LG_LOG_INFO, LG_LOG_DEBUG };

typedef void lg_log_sink_cb(int level, const char *scope, const char *msg, size_t len);

extern int lg_log_level; /* messages above this level are dropped; default LG_LOG_INFO */
void lg_log_set_sink(lg_log_sink_cb *sink);
void lg_log(int level, const char *scope, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *lg_log_level_name(int level);

/* Formats `us` (microseconds since the epoch) as 2025-09-12T18:23:54.661414Z into
 * `buf` (at least 28 bytes). Returns the length written. */
size_t lg_time_format(int64_t us, char *buf);

/* Writes v in decimal into buf (at least 21 bytes), NUL-terminated; returns the length. */
size_t lg_utoa(uint64_t v, char *buf);

#define LG_UNUSED(x)     (void)(x)
#define LG_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
