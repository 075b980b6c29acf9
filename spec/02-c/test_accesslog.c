/* test_accesslog.c -- the log writer: whole lines, per-thread order, drops instead of blocking,
 * flush on stop, the process-log sink.
 * SPDX-License-Identifier: MIT */
#include "test.h"
#include "../../src/accesslog.c"

#include <fcntl.h>

/* ---- A pipe reader running in its own thread ---- */

typedef struct reader {
    int fd;
    pthread_t th;
    char *data;
    size_t len, cap;
    atomic_int paused; /* 1: does not read (a stuck consumer) */
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    char buf[65536];

    for (;;) {
        if (atomic_load(&r->paused)) {
            usleep(1000);
            continue;
        }
        ssize_t n = read(r->fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (r->len + (size_t)n > r->cap) {
            r->cap = (r->len + (size_t)n) * 2;
            r->data = lg_xrealloc(r->data, r->cap);
        }
        memcpy(r->data + r->len, buf, (size_t)n);
        r->len += (size_t)n;
    }
    return NULL;
}

/* Makes a pipe, starts a reader on its read end, returns the write end. */
static int reader_start(reader_t *r, int paused)
{
    int fds[2];
    memset(r, 0, sizeof(*r));
    if (pipe(fds) != 0)
        return -1;
    r->fd = fds[0];
    atomic_store(&r->paused, paused);
    pthread_create(&r->th, NULL, reader_main, r);
    return fds[1];
}

/* Closes the write end, reads to EOF, joins. r->data holds everything written. */
static void reader_finish(reader_t *r, int wfd)
{
    close(wfd);
    atomic_store(&r->paused, 0);
    pthread_join(r->th, NULL);
    close(r->fd);
}

static size_t nlines(const reader_t *r)
{
    return count_lines(r->data, r->len);
}

static double elapsed_ms(int64_t since_us)
{
    return (double)(lg_mono_us() - since_us) / 1000.0;
}

/* ---- Basic shape ---- */

static void test_basic(void)
{
    reader_t r;
    int wfd = reader_start(&r, 0);
    lg_accesslog_opts_t o = {.fd = wfd};
    lg_err_t err = {0};

    ok(lg_accesslog_write("before start", 12) == LG_DECLINED, "write before start is declined");
    ok(lg_accesslog_start(&o, &err) == LG_OK, "start: %s", err.msg);
    ok(lg_accesslog_start(&o, &err) == LG_ERR, "second start fails");
    ok(lg_accesslog_write("one", 3) == LG_OK, "line without newline");
    ok(lg_accesslog_write("two\n", 4) == LG_OK, "line with newline");
    ok(lg_accesslog_write("thr\nee", 6) == LG_OK, "line with embedded newline");
    ok(lg_accesslog_write("", 0) == LG_OK, "empty line");
    ok(lg_accesslog_stop() == LG_OK, "stop");
    ok(lg_accesslog_stop() == LG_OK, "second stop is a no-op");
    ok(lg_accesslog_write("after", 5) == LG_DECLINED, "write after stop is declined");
    reader_finish(&r, wfd);
    ok(r.len == 16 && memcmp(r.data, "one\ntwo\nthr ee\n\n", 16) == 0,
       "exactly one newline per line, embedded newline became a space");
    free(r.data);
}

/* ---- Many producers ---- */

#define NTHREADS   6
#define PER_THREAD 20000

static pthread_barrier_t go;

static void *producer_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    char line[512];

    pthread_barrier_wait(&go);
    for (int i = 0; i < PER_THREAD; i++) {
        int pad = (i * 37 + t * 11) % 300; /* varying lengths, some lines > 256 bytes */
        int n = snprintf(line, sizeof(line), "t=%d seq=%d pad=%d ", t, i, pad);
        memset(line + n, 'a' + t, (size_t)pad);
        line[n + pad] = '|';
        lg_accesslog_write(line, (size_t)(n + pad + 1));
    }
    return NULL;
}

/* Checks every line is whole and each thread's lines arrive in order. Returns lines seen. */
static size_t check_lines(const reader_t *r, int *whole, int *ordered)
{
    int next[NTHREADS];
    size_t count = 0;
    const char *p = r->data, *end = r->data + r->len;

    for (int t = 0; t < NTHREADS; t++)
        next[t] = 0;
    *whole = *ordered = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        int t, seq, pad, off = 0;
        if (nl == NULL) {
            *whole = 0;
            break;
        }
        /* sscanf() would strlen() the whole rest of the buffer: parse a bounded copy */
        char head[64];
        size_t hl = (size_t)(nl - p) < sizeof(head) - 1 ? (size_t)(nl - p) : sizeof(head) - 1;
        memcpy(head, p, hl);
        head[hl] = '\0';
        if (sscanf(head, "t=%d seq=%d pad=%d %n", &t, &seq, &pad, &off) != 3 || off == 0 || t < 0 ||
            t >= NTHREADS || nl - p != off + pad + 1 || nl[-1] != '|') {
            *whole = 0;
        } else {
            for (int i = 0; i < pad; i++)
                if (p[off + i] != 'a' + t)
                    *whole = 0;
            if (seq < next[t])
                *ordered = 0;
            next[t] = seq + 1;
        }
        count++;
        p = nl + 1;
    }
    return count;
}

static void test_concurrent(void)
{
    reader_t r;
    int wfd = reader_start(&r, 0);
    lg_accesslog_opts_t o = {
        .fd = wfd, .max_lines = NTHREADS * PER_THREAD, .max_bytes = 256u << 20};
    pthread_t th[NTHREADS];
    uint64_t d0 = lg_accesslog_dropped();
    int whole, ordered;

    ok(lg_accesslog_start(&o, NULL) == LG_OK, "start with a large queue");
    pthread_barrier_init(&go, NULL, NTHREADS);
    for (int t = 0; t < NTHREADS; t++)
        pthread_create(&th[t], NULL, producer_main, (void *)(intptr_t)t);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&go);
    ok(lg_accesslog_stop() == LG_OK, "stop after concurrent writes");
    reader_finish(&r, wfd);

    size_t n = check_lines(&r, &whole, &ordered);
    ok(whole, "every line arrives whole (no tearing or interleaving)");
    ok(ordered, "each thread's lines arrive in its order");
    ok(n == (size_t)NTHREADS * PER_THREAD, "all %d lines arrive (got %zu)", NTHREADS * PER_THREAD,
       n);
    ok(lg_accesslog_dropped() == d0, "nothing dropped");
    free(r.data);
}

/* ---- A reader that stops reading ---- */

static void test_stuck_reader(int nonblocking)
{
    reader_t r;
    int wfd = reader_start(&r, 1);
    lg_accesslog_opts_t o = {.fd = wfd, .max_lines = 1000};
    uint64_t d0 = lg_accesslog_dropped();
    const int total = 200000;
    char line[200];
    int queued = 0;

    if (nonblocking)
        fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK);
    memset(line, 'x', sizeof(line));
    ok(lg_accesslog_start(&o, NULL) == LG_OK, "start (%s fd)",
       nonblocking ? "non-blocking" : "blocking");
    int64_t t0 = lg_mono_us();
    for (int i = 0; i < total; i++) {
        int n = snprintf(line, sizeof(line), "seq=%d ", i);
        line[n] = 'x';
        if (lg_accesslog_write(line, 150) == LG_OK)
            queued++;
    }
    double ms = elapsed_ms(t0);
    uint64_t d = lg_accesslog_dropped() - d0;
    ok(ms < 2000, "%d writes against a stuck reader finish without blocking (%.1f ms)", total, ms);
    ok(d > 0 && d == (uint64_t)(total - queued), "drop counter moved by every refused line (%llu)",
       (unsigned long long)d);
    ok(queued >= 1000 && queued < 10000, "about the queue capacity was accepted (%d)", queued);

    atomic_store(&r.paused, 0); /* the reader comes back: stop() must flush the queue */
    ok(lg_accesslog_stop() == LG_OK, "stop flushes once the reader reads again");
    reader_finish(&r, wfd);
    int whole = 1;
    size_t n = nlines(&r);
    for (const char *p = r.data; p < r.data + r.len;) {
        const char *nl = memchr(p, '\n', (size_t)(r.data + r.len - p));
        if (nl == NULL || nl - p != 150)
            whole = 0;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    ok(n == (size_t)queued && whole, "every accepted line was written whole (%zu of %d)", n,
       queued);
    free(r.data);
}

/* ---- Flush on stop with a slow reader ---- */

static void *slow_reader_main(void *arg)
{
    reader_t *r = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = read(r->fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        if (r->len + (size_t)n > r->cap) {
            r->cap = (r->len + (size_t)n) * 2;
            r->data = lg_xrealloc(r->data, r->cap);
        }
        memcpy(r->data + r->len, buf, (size_t)n);
        r->len += (size_t)n;
        usleep(200);
    }
    return NULL;
}

static void test_flush_on_stop(void)
{
    reader_t r;
    int fds[2];
    uint64_t d0 = lg_accesslog_dropped();
    char line[128];

    memset(&r, 0, sizeof(r));
    ok(pipe(fds) == 0, "pipe");
    r.fd = fds[0];
    pthread_create(&r.th, NULL, slow_reader_main, &r);
    lg_accesslog_opts_t o = {.fd = fds[1]};
    ok(lg_accesslog_start(&o, NULL) == LG_OK, "start against a slow reader");
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(line, sizeof(line), "line %05d of a slow flush ...................", i);
        lg_accesslog_write(line, (size_t)n);
    }
    ok(lg_accesslog_stop() == LG_OK, "stop returns after flushing");
    close(fds[1]);
    pthread_join(r.th, NULL);
    close(r.fd);
    ok(nlines(&r) == 5000 && lg_accesslog_dropped() == d0, "all 5000 queued lines were written");
    int n = snprintf(line, sizeof(line), "line %05d of a slow flush ...................\n", 4999);
    ok(r.len > (size_t)n && memcmp(r.data + r.len - n, line, (size_t)n) == 0 &&
           memcmp(r.data, "line 00000 ", 11) == 0,
       "in order, first one first, last one last");
    free(r.data);
}

/* ---- Process messages share the writer ---- */

static void test_sink(void)
{
    reader_t r;
    int wfd = reader_start(&r, 0);
    lg_accesslog_opts_t o = {.fd = wfd};

    ok(lg_accesslog_start(&o, NULL) == LG_OK, "start");
    lg_log(LG_LOG_INFO, "main", "listening on %s", "127.0.0.1:3000");
    lg_accesslog_set_format(1);
    lg_log(LG_LOG_WARN, "config", "bad \"value\"\nat line %d", 3);
    lg_accesslog_set_format(0);
    lg_log(LG_LOG_DEBUG, "main", "not shown at info");
    ok(lg_accesslog_stop() == LG_OK, "stop");
    lg_log(LG_LOG_INFO, "main", "after stop this goes to stderr");
    reader_finish(&r, wfd);
    r.data = lg_xrealloc(r.data, r.len + 1);
    r.data[r.len] = '\0';

    char *l1 = r.data, *l2 = strchr(l1, '\n');
    ok(l2 != NULL, "first process line");
    if (l2 == NULL) {
        free(r.data);
        return;
    }
    *l2++ = '\0';
    ok(strlen(l1) == 27 + strlen("\tinfo\tmain\tlistening on 127.0.0.1:3000") && l1[4] == '-' &&
           l1[10] == 'T' && l1[26] == 'Z' &&
           strcmp(l1 + 27, "\tinfo\tmain\tlistening on 127.0.0.1:3000") == 0,
       "text: <time>\\tinfo\\tmain\\t<message> (%s)", l1);
    char *l3 = strchr(l2, '\n');
    ok(l3 != NULL && l3[1] == '\0', "exactly two lines (debug filtered, JSON newline escaped)");
    if (l3)
        *l3 = '\0';
    ok(strncmp(l2, "{\"level\":\"warn\",\"time\":\"", 24) == 0 && l2[24 + 26] == 'Z',
       "json: level and time first (%s)", l2);
    ok(strcmp(l2 + 24 + 27,
              "\",\"scope\":\"config\",\"message\":\"bad \\\"value\\\"\\nat line 3\"}") == 0,
       "json: scope and escaped message");
    free(r.data);
}

/* ---- A reader that never comes back ---- */

static void test_stop_timeout(void)
{
    reader_t r;
    int wfd = reader_start(&r, 1);
    lg_accesslog_opts_t o = {.fd = wfd, .max_lines = 100000, .stop_timeout_ms = 200};
    char line[1024];
    lg_err_t err = {0};

    fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK);
    memset(line, 'y', sizeof(line));
    ok(lg_accesslog_start(&o, NULL) == LG_OK, "start (reader never reads)");
    for (int i = 0; i < 2000; i++)
        lg_accesslog_write(line, sizeof(line));
    uint64_t d0 = lg_accesslog_dropped();
    int64_t t0 = lg_mono_us();
    ok(lg_accesslog_stop() == LG_AGAIN, "stop gives up on a stuck reader");
    double ms = elapsed_ms(t0);
    ok(ms >= 150 && ms < 2000, "after the stop timeout (%.0f ms)", ms);
    /* the abandoned writer sees EAGAIN, notices and exits; then start works again */
    int started = LG_ERR;
    for (int i = 0; i < 100 && started != LG_OK; i++) {
        usleep(20000);
        started = lg_accesslog_start(&o, &err);
    }
    ok(started == LG_OK, "start works again once the abandoned writer has exited");
    ok(lg_accesslog_dropped() > d0, "its unwritten lines were counted as dropped (%llu)",
       (unsigned long long)(lg_accesslog_dropped() - d0));
    atomic_store(&r.paused, 0);
    ok(lg_accesslog_stop() == LG_OK, "stop");
    reader_finish(&r, wfd);
    free(r.data);
}

int main(void)
{
    test_basic();
    test_concurrent();
    test_stuck_reader(0);
    test_stuck_reader(1);
    test_flush_on_stop();
    test_sink();
    test_stop_timeout();
    return test_done();
}
