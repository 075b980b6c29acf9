/* accesslog.c -- the log writer: a bounded queue of whole lines drained to stdout by one thread.
 * SPDX-License-Identifier: MIT
 *
 * The queue is two byte buffers: producers append whole lines to `pend` under `mu`; the
 * writer swaps `pend` with its empty `out` buffer under `mu` and writes `out` outside the lock
 * in as few write(2) calls as the fd accepts. A producer therefore holds the lock for one
 * memcpy, and the writer for a pointer swap; nobody holds it across I/O. */
#include "accesslog.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct linebuf {
    char *data;
    size_t len, cap;
    size_t lines;
} linebuf_t;

#define BUF_INITIAL (64 * 1024)
#define BUF_KEEP    (1024 * 1024) /* larger buffers are freed once written */
#define POLL_MS     100           /* EAGAIN wait; also how often an abandoned writer notices */
#define LINGER_US   1000          /* how long the writer waits for more lines before idling */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* producers/stop -> writer */
    pthread_cond_t done; /* writer -> stop(): it has exited */
    pthread_t thread;
    int started;     /* thread exists (main thread only) */
    int running;     /* accepting lines; under mu */
    int stopping;    /* writer exits once pend is empty; under mu */
    int exited;      /* writer has left its loop; under mu */
    int writer_idle; /* writer waits on `wake`; under mu */
    int kicked;      /* a producer signalled `wake` since the last swap; under mu */
    int zombie;      /* stop() gave up on the writer; under mu */
    linebuf_t pend;  /* queued lines; under mu */
    linebuf_t out;   /* batch being written; writer only */
    size_t inflight_lines, inflight_bytes; /* size of `out` while it is written; under mu */
    int fd;
    size_t max_lines, max_bytes;
    int64_t stop_timeout_ms;
} q = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER,
       .done = PTHREAD_COND_INITIALIZER};

static atomic_uint_fast64_t dropped;
static atomic_int json_format;
static atomic_int abandon; /* set by stop() on timeout; the writer drops what it holds */

/* ---- Writer ---- */

static size_t count_lines(const char *p, size_t n)
{
    size_t lines = 0;
    const char *end = p + n, *nl;

    while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p = nl + 1;
    }
    return lines;
}

/* Writes all of data[0..len), retrying on EINTR and partial writes and waiting with poll()
 * on EAGAIN (non-blocking stdout). Returns the number of bytes written: less than len only
 * on a write error or when abandoned. */
static size_t write_all(int fd, const char *data, size_t len)
{
    size_t off = 0;

    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (atomic_load(&abandon))
                break;
            poll(&pfd, 1, POLL_MS);
            continue;
        }
        if (n < 0 && errno == EPIPE) {
            /* SIGPIPE is blocked in this thread; consume the pending one so it is never
             * delivered elsewhere later. */
            sigset_t set;
            struct timespec zero = {0, 0};
            sigemptyset(&set);
            sigaddset(&set, SIGPIPE);
            sigtimedwait(&set, NULL, &zero);
        }
        break; /* EPIPE, EBADF, ENOSPC, ...: the rest of the batch is lost */
    }
    return off;
}

static void *writer_main(void *arg)
{
    sigset_t set;

    LG_UNUSED(arg);
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    pthread_mutex_lock(&q.mu);
    for (;;) {
        if (q.pend.len == 0 && !q.stopping) {
            /* Linger before going idle: while requests flow, lines batch up for LINGER_US and
             * producers, seeing writer_idle == 0, pay no wakeup (a futex call) per line. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += LINGER_US * 1000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&q.wake, &q.mu, &ts);
        }
        while (q.pend.len == 0 && !q.stopping) {
            q.writer_idle = 1;
            pthread_cond_wait(&q.wake, &q.mu);
        }
        q.writer_idle = 0;
        if (q.pend.len == 0)
            break; /* stopping, and everything is written */

        linebuf_t b = q.out;
        q.out = q.pend;
        q.pend = b;
        q.pend.len = q.pend.lines = 0;
        q.kicked = 0;
        q.inflight_lines = q.out.lines;
        q.inflight_bytes = q.out.len;
        pthread_mutex_unlock(&q.mu);

        size_t n = write_all(q.fd, q.out.data, q.out.len);
        if (n < q.out.len)
            atomic_fetch_add(&dropped, count_lines(q.out.data + n, q.out.len - n));
        q.out.len = q.out.lines = 0;
        if (q.out.cap > BUF_KEEP) {
            free(q.out.data);
            q.out.data = NULL;
            q.out.cap = 0;
        }

        pthread_mutex_lock(&q.mu);
        q.inflight_lines = q.inflight_bytes = 0;
    }
    q.exited = 1;
    q.zombie = 0; /* an abandoned writer is done with the buffers: start() may run again */
    pthread_cond_broadcast(&q.done);
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

/* ---- Producers ---- */

int lg_accesslog_write(const char *line, size_t len)
{
    int wake = 0;

    if (len > 0 && line[len - 1] == '\n')
        len--;
    size_t need = len + 1;

    pthread_mutex_lock(&q.mu);
    if (!q.running) {
        pthread_mutex_unlock(&q.mu);
        return LG_DECLINED;
    }
    if (q.pend.lines + q.inflight_lines >= q.max_lines ||
        q.pend.len + q.inflight_bytes + need > q.max_bytes) {
        pthread_mutex_unlock(&q.mu);
        atomic_fetch_add(&dropped, 1);
        return LG_AGAIN;
    }
    if (q.pend.len + need > q.pend.cap) {
        size_t cap = q.pend.cap ? q.pend.cap : BUF_INITIAL;
        while (cap < q.pend.len + need)
            cap *= 2;
        q.pend.data = lg_xrealloc(q.pend.data, cap);
        q.pend.cap = cap;
    }
    char *dst = q.pend.data + q.pend.len, *p = dst, *end = dst + len;
    memcpy(dst, line, len);
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL)
        *p++ = ' ';
    dst[len] = '\n';
    q.pend.len += need;
    q.pend.lines++;
    /* wake the writer when it is idle, or cut its linger short once the queue is half full */
    if (q.writer_idle ||
        (!q.kicked && (q.pend.lines * 2 >= q.max_lines || q.pend.len * 2 >= q.max_bytes))) {
        q.writer_idle = 0;
        q.kicked = 1;
        wake = 1;
    }
    pthread_mutex_unlock(&q.mu);
    if (wake)
        pthread_cond_signal(&q.wake);
    return LG_OK;
}

uint64_t lg_accesslog_dropped(void)
{
    return (uint64_t)atomic_load(&dropped);
}

void lg_accesslog_set_format(int json)
{
    atomic_store(&json_format, json ? 1 : 0);
}

/* ---- Process-log sink ---- */

/* Appends `s` JSON-escaped to `out` (room for 6 bytes per input byte); returns the end. */
static char *json_escape(char *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            *out++ = '\\';
            *out++ = '"';
            break;
        case '\\':
            *out++ = '\\';
            *out++ = '\\';
            break;
        case '\n':
            *out++ = '\\';
            *out++ = 'n';
            break;
        case '\r':
            *out++ = '\\';
            *out++ = 'r';
            break;
        case '\t':
            *out++ = '\\';
            *out++ = 't';
            break;
        default:
            if (c < 0x20) {
                memcpy(out, "\\u00", 4);
                out[4] = hex[c >> 4];
                out[5] = hex[c & 15];
                out += 6;
            } else {
                *out++ = (char)c;
            }
        }
    }
    return out;
}

static void sink(int level, const char *scope, const char *msg, size_t len)
{
    char stackbuf[4096], ts[32], *buf = stackbuf, *p;
    size_t slen = strlen(scope);
    size_t need = 6 * (len + slen) + 128;
    const char *lvl = lg_log_level_name(level);
    size_t tlen = lg_time_format(lg_now_us(), ts);

    if (need > sizeof(stackbuf))
        buf = lg_xmalloc(need);
    p = buf;
    if (atomic_load(&json_format)) {
        p += sprintf(p, "{\"level\":\"%s\",\"time\":\"%.*s\",\"scope\":\"", lvl, (int)tlen, ts);
        p = json_escape(p, scope, slen);
        memcpy(p, "\",\"message\":\"", 13);
        p = json_escape(p + 13, msg, len);
        memcpy(p, "\"}", 2);
        p += 2;
    } else {
        p += sprintf(p, "%.*s\t%s\t", (int)tlen, ts, lvl);
        memcpy(p, scope, slen);
        p += slen;
        *p++ = '\t';
        memcpy(p, msg, len);
        p += len;
    }
    if (lg_accesslog_write(buf, (size_t)(p - buf)) == LG_DECLINED) {
        /* stop() is running: the message still deserves to be seen */
        *p++ = '\n';
        ssize_t n = write(2, buf, (size_t)(p - buf));
        LG_UNUSED(n);
    }
    if (buf != stackbuf)
        free(buf);
}

/* ---- Start and stop ---- */

int lg_accesslog_start(const lg_accesslog_opts_t *opts, lg_err_t *err)
{
    lg_accesslog_opts_t o = {0};
    int rc;

    if (opts)
        o = *opts;
    pthread_mutex_lock(&q.mu);
    if (q.started || q.zombie) {
        int zombie = q.zombie;
        pthread_mutex_unlock(&q.mu);
        return lg_err_set(err, 0, "access log writer: %s",
                          zombie ? "previous writer has not exited yet" : "already running");
    }
    q.fd = o.fd > 0 ? o.fd : 1;
    q.max_lines = o.max_lines ? o.max_lines : LG_ACCESSLOG_DEFAULT_LINES;
    q.max_bytes = o.max_bytes ? o.max_bytes : LG_ACCESSLOG_DEFAULT_BYTES;
    q.stop_timeout_ms = o.stop_timeout_ms > 0 ? o.stop_timeout_ms : LG_ACCESSLOG_DEFAULT_STOP_MS;
    q.stopping = q.exited = q.writer_idle = q.kicked = 0;
    q.pend.len = q.pend.lines = 0;
    q.out.len = q.out.lines = 0;
    q.inflight_lines = q.inflight_bytes = 0;
    atomic_store(&abandon, 0);
    atomic_store(&json_format, o.json ? 1 : 0);
    /* the writer's naps are timed on the monotonic clock (no writer exists yet, so `wake` has
     * no waiter and producers, seeing writer_idle == 0, do not signal it) */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&q.wake);
    pthread_cond_init(&q.wake, &ca);
    pthread_condattr_destroy(&ca);
    rc = pthread_create(&q.thread, NULL, writer_main, NULL);
    if (rc != 0) {
        pthread_mutex_unlock(&q.mu);
        return lg_err_set(err, rc, "access log writer: pthread_create: %s", strerror(rc));
    }
    q.started = 1;
    q.running = 1;
    pthread_mutex_unlock(&q.mu);
    lg_log_set_sink(sink);
    return LG_OK;
}

int lg_accesslog_stop(void)
{
    struct timespec deadline;
    int exited;

    if (!q.started)
        return LG_OK;
    lg_log_set_sink(NULL); /* from here on, process messages go to stderr */

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(q.stop_timeout_ms / 1000);
    deadline.tv_nsec += (long)(q.stop_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&q.mu);
    q.running = 0;
    q.stopping = 1;
    pthread_cond_signal(&q.wake);
    while (!q.exited) {
        if (pthread_cond_timedwait(&q.done, &q.mu, &deadline) == ETIMEDOUT)
            break;
    }
    exited = q.exited;
    if (!exited) {
        /* The reader is stuck. Count what is queued as dropped and let the writer go; it
         * exits when its write returns (within POLL_MS if the fd is non-blocking). */
        atomic_fetch_add(&dropped, q.pend.lines); /* the writer counts its own batch */
        q.pend.len = q.pend.lines = 0;
        q.zombie = 1;
        atomic_store(&abandon, 1);
    }
    pthread_mutex_unlock(&q.mu);
    q.started = 0;

    if (!exited) {
        pthread_detach(q.thread);
        return LG_AGAIN;
    }
    pthread_join(q.thread, NULL);
    free(q.pend.data);
    free(q.out.data);
    memset(&q.pend, 0, sizeof(q.pend));
    memset(&q.out, 0, sizeof(q.out));
    return LG_OK;
}
