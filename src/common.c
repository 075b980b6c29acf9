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
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    return (size_t)snprintf(buf, 28, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                            (int)(us % 1000000));
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
