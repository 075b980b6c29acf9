/* trace.c -- trace and span ids, W3C traceparent/tracestate, sampling decisions.
 * SPDX-License-Identifier: MIT */
#include "trace.h"

#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---- Per-thread generator ---- */

/* xoshiro256** (Blackman & Vigna): 256 bits of state, seeded from the kernel CSPRNG. */
typedef struct {
    uint64_t s[4];
    unsigned gen; /* fork_gen when seeded: a forked child reseeds, so the streams differ */
} rng_t;

static _Thread_local rng_t rng;
/* Bumped in every forked child (pthread_atfork), starting at 1 so a zeroed rng_t reseeds.
 * Asking getpid() instead would be a system call per id: glibc no longer caches the pid. */
static atomic_uint fork_gen = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void in_child(void)
{
    atomic_fetch_add(&fork_gen, 1);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, in_child);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r)
{
    size_t got = 0;

    while (got < sizeof(r->s)) {
        ssize_t n = getrandom((char *)r->s + got, sizeof(r->s) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        got += (size_t)n;
    }
    if (got < sizeof(r->s)) {
        /* No getrandom (very old kernel or seccomp): fall back to clocks and addresses.
         * Still unique per thread, just not unpredictable. */
        uint64_t x = (uint64_t)lg_now_us() ^ ((uint64_t)lg_mono_us() << 17) ^
                     (uint64_t)(uintptr_t)r ^ ((uint64_t)getpid() << 40);
        for (int i = 0; i < 4; i++)
            r->s[i] ^= splitmix(&x);
    }
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1; /* the all-zero state is the one fixed point */
    pthread_once(&atfork_once, register_atfork);
    r->gen = atomic_load(&fork_gen);
}

static uint64_t rng_next(void)
{
    rng_t *r = &rng;
    uint64_t *s = r->s;

    if (r->gen != atomic_load_explicit(&fork_gen, memory_order_relaxed))
        rng_seed(r);
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

void lg_trace_random(void *out, size_t n)
{
    uint8_t *p = out;

    while (n >= 8) {
        uint64_t v = rng_next();
        memcpy(p, &v, 8);
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t v = rng_next();
        memcpy(p, &v, n);
    }
}

double lg_trace_random_unit(void)
{
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

int lg_trace_id_is_zero(const uint8_t *id, size_t n)
{
    uint64_t acc = 0, w;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) { /* ids are 8 or 16 bytes: whole words */
        memcpy(&w, id + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= id[i];
    return acc == 0;
}

void lg_trace_id_new(uint8_t id[LG_TRACE_ID_LEN])
{
    do
        lg_trace_random(id, LG_TRACE_ID_LEN);
    while (lg_trace_id_is_zero(id, LG_TRACE_ID_LEN));
}

void lg_span_id_new(uint8_t id[LG_SPAN_ID_LEN])
{
    do
        lg_trace_random(id, LG_SPAN_ID_LEN);
    while (lg_trace_id_is_zero(id, LG_SPAN_ID_LEN));
}

/* ---- Hex ---- */

/* "000102...ff": the two digits of every byte value, one copy per byte */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

size_t lg_trace_hex(const uint8_t *id, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, hex_pairs + 2 * id[i], 2);
    out[2 * n] = '\0';
    return 2 * n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is invalid in traceparent (HEXDIGLC) */
}

int lg_trace_unhex(const char *hex, size_t n, uint8_t *id)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return LG_ERR;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return LG_OK;
}

/* ---- traceparent ---- */

int lg_traceparent_parse(const char *s, size_t len, lg_traceparent_t *out)
{
    uint8_t version;

    if (s == NULL)
        return LG_ERR;
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len < LG_TRACEPARENT_LEN)
        return LG_ERR;
    if (lg_trace_unhex(s, 1, &version) != LG_OK || version == 0xff)
        return LG_ERR;
    if (version == 0 && len != LG_TRACEPARENT_LEN)
        return LG_ERR;
    /* A future version must keep the 00 layout for its first fields; whatever follows
     * the flags must start with '-' and is ignored. */
    if (len > LG_TRACEPARENT_LEN && s[LG_TRACEPARENT_LEN] != '-')
        return LG_ERR;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return LG_ERR;
    if (lg_trace_unhex(s + 3, LG_TRACE_ID_LEN, out->trace_id) != LG_OK ||
        lg_trace_unhex(s + 36, LG_SPAN_ID_LEN, out->span_id) != LG_OK ||
        lg_trace_unhex(s + 53, 1, &out->flags) != LG_OK)
        return LG_ERR;
    if (lg_trace_id_is_zero(out->trace_id, LG_TRACE_ID_LEN) ||
        lg_trace_id_is_zero(out->span_id, LG_SPAN_ID_LEN))
        return LG_ERR;
    return LG_OK;
}

size_t lg_traceparent_format(const lg_traceparent_t *tp, char *buf)
{
    uint8_t flags = tp->flags;

    buf[0] = '0';
    buf[1] = '0';
    buf[2] = '-';
    lg_trace_hex(tp->trace_id, LG_TRACE_ID_LEN, buf + 3);
    buf[35] = '-';
    lg_trace_hex(tp->span_id, LG_SPAN_ID_LEN, buf + 36);
    buf[52] = '-';
    lg_trace_hex(&flags, 1, buf + 53);
    return LG_TRACEPARENT_LEN;
}

/* ---- tracestate ---- */

int lg_tracestate_ok(const char *s, size_t len)
{
    size_t members = 1;

    if (s == NULL || len > 8192)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\t') /* optional whitespace around members */
            continue;
        if (c < 0x20 || c > 0x7e)
            return 0;
        if (c == ',')
            members++;
    }
    return members <= 32;
}

/* ---- Sampling ---- */

static int draw(double p)
{
    if (!(p > 0.0)) /* also catches NaN */
        return 0;
    if (p >= 1.0)
        return 1;
    return lg_trace_random_unit() < p;
}

int lg_trace_sample(const lg_traceparent_t *parent, double client_p, double random_p)
{
    if (parent != NULL && draw(client_p))
        return (parent->flags & LG_TRACE_FLAG_SAMPLED) != 0;
    return draw(random_p);
}
