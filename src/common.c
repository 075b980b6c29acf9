/* common.c -- error buffers, aborting allocators, clocks and the process log.
 * SPDX-License-Identifier: MIT */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int lg_log_level = LG_LOG_INFO;
static lg_log_sink_cb *log_sink;

int lg_err_set(lg_err_t *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return LG_ERR;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return LG_ERR;
}

static void oom(size_t n)
{
    fprintf(stderr, "lunagate: out of memory allocating %zu bytes\n", n);
    abort();
}

void *lg_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *lg_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *lg_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

char *lg_xstrndup(const char *s, size_t n)
{
    char *d = lg_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *lg_xstrdup(const char *s)
{
    return lg_xstrndup(s, strlen(s));
}

int64_t lg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t lg_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

size_t lg_time_format(int64_t us, char *buf)
{
    /* "YYYY-MM-DDTHH:MM:SS." changes once a second: cache it per thread (every log line
     * formats a time, and gmtime_r + snprintf cost more than the rest of the line) */
    static __thread int64_t cached_sec = -1;
    static __thread char prefix[24];
    int64_t sec = us / 1000000;
    if (sec != cached_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(prefix, sizeof(prefix), "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_sec = sec;
    }
    memcpy(buf, prefix, 20);
    int frac = (int)(us % 1000000);
    for (int i = 25; i >= 20; i--) {
        buf[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    buf[26] = 'Z';
    buf[27] = '\0';
    return 27;
}

size_t lg_utoa(uint64_t v, char *buf)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return n;
}

const char *lg_log_level_name(int level)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    return level >= 0 && level <= LG_LOG_DEBUG ? names[level] : "info";
}

void lg_log_set_sink(lg_log_sink_cb *sink)
{
    log_sink = sink;
}

void lg_log(int level, const char *scope, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    int n;

    if (level > lg_log_level)
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(msg))
        n = sizeof(msg) - 1;
    if (log_sink) {
        log_sink(level, scope, msg, (size_t)n);
    } else {
        char ts[32], line[2200];
        lg_time_format(lg_now_us(), ts);
        int m = snprintf(line, sizeof(line), "%s\t%s\t%s\t%.*s\n", ts, lg_log_level_name(level),
                         scope, n, msg);
        fwrite(line, 1, (size_t)(m < (int)sizeof(line) ? m : (int)sizeof(line) - 1), stderr);
    }
}
