/* otlp.c -- the span model, OTLP protobuf encoding, and the batching exporter thread.
 * SPDX-License-Identifier: MIT */
#include "otlp.h"

#include "trace_service.pb-c.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "trace.h"

#ifndef LG_VERSION
#define LG_VERSION "0.0.0"
#endif

typedef Opentelemetry__Proto__Common__V1__KeyValue kv_t;
typedef Opentelemetry__Proto__Common__V1__AnyValue av_t;
typedef Opentelemetry__Proto__Common__V1__ArrayValue arr_t;
typedef Opentelemetry__Proto__Common__V1__InstrumentationScope scope_t;
typedef Opentelemetry__Proto__Resource__V1__Resource resource_t;
typedef Opentelemetry__Proto__Trace__V1__Span pbspan_t;
typedef Opentelemetry__Proto__Trace__V1__Status pbstatus_t;
typedef Opentelemetry__Proto__Trace__V1__ScopeSpans scope_spans_t;
typedef Opentelemetry__Proto__Trace__V1__ResourceSpans resource_spans_t;
typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest request_t;
typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceResponse response_t;

#define GRPC_PATH    "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#define MAX_RESPONSE (4u << 20)  /* OTLP: clients limit accepted response size (4 MiB) */
#define MAX_REQUEST  (64u << 20) /* OTLP: never send a request over 64 MiB */

/* ---- Span arena ----
 * Every string and protobuf-c struct of a span lives in a chain of chunks; the first
 * chunk shares the span's allocation, so a typical span is one malloc and one free. */

struct lg_span_chunk {
    lg_span_chunk_t *next;
    size_t cap, used, pad_;
    unsigned char data[]; /* 16-byte aligned: the header is 32 bytes */
};

#define ALIGN16(n)  (((n) + 15) & ~(size_t)15)
#define FIRST_CHUNK 3072

static size_t span_hdr(void)
{
    return ALIGN16(sizeof(lg_span_t));
}

/* ---- Span recycling ----
 * Spans are made on the workers and freed on the exporter thread, and glibc hands each
 * such block back through the workers' arena under its lock. While the exporter runs, a
 * freed span's first block goes to a shared free list instead (at most POOL_MAX), which a
 * worker takes whole whenever its own list is empty. */
#define POOL_MAX 2048

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static void *pool_head;       /* blocks, linked through their first word */
static _Atomic size_t pool_n; /* blocks in pool_head: a hint read without the lock */
static _Atomic int pooling;   /* set while the exporter runs */
/* Each thread's own blocks: a thread-local list, registered once with a key whose destructor
 * frees them when the thread ends, whoever made the thread. */
static _Thread_local void *my_blocks;
static _Thread_local int my_keyed;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static size_t block_size(void)
{
    return span_hdr() + sizeof(lg_span_chunk_t) + FIRST_CHUNK;
}

static void free_list(void *b)
{
    while (b) {
        void *next;
        memcpy(&next, b, sizeof(void *));
        free(b);
        b = next;
    }
}

/* The key's destructor: its value is the exiting thread's &my_blocks (thread-local storage
 * outlives the destructors). */
static void free_mine(void *head)
{
    free_list(*(void **)head);
    *(void **)head = NULL;
}

static void pool_init(void)
{
    pthread_key_create(&pool_key, free_mine);
}

static void *block_get(void)
{
    void *b = NULL;
    if (atomic_load_explicit(&pooling, memory_order_relaxed)) {
        b = my_blocks;
        if (!b && atomic_load_explicit(&pool_n, memory_order_relaxed) > 0) {
            pthread_mutex_lock(&pool_mu);
            b = pool_head;
            pool_head = NULL;
            atomic_store_explicit(&pool_n, 0, memory_order_relaxed);
            pthread_mutex_unlock(&pool_mu);
            if (b && !my_keyed) {
                pthread_once(&pool_once, pool_init);
                pthread_setspecific(pool_key, &my_blocks);
                my_keyed = 1;
            }
        }
    }
    if (!b)
        return lg_xmalloc(block_size());
    memcpy(&my_blocks, b, sizeof(void *));
    return b;
}

static void block_put(void *b)
{
    if (atomic_load_explicit(&pooling, memory_order_relaxed)) {
        pthread_mutex_lock(&pool_mu);
        if (atomic_load_explicit(&pool_n, memory_order_relaxed) < POOL_MAX) {
            memcpy(b, &pool_head, sizeof(void *));
            pool_head = b;
            atomic_fetch_add_explicit(&pool_n, 1, memory_order_relaxed);
            b = NULL;
        }
        pthread_mutex_unlock(&pool_mu);
    }
    free(b);
}

/* Frees the calling thread's blocks now (a thread's exit does it through the key's destructor,
 * but the main thread never runs that). */
static void pool_release(void)
{
    free_list(my_blocks);
    my_blocks = NULL;
}

/* After the exporter stopped: nothing pools any more; the shared list is freed. */
static void pool_drain(void)
{
    atomic_store(&pooling, 0);
    pthread_mutex_lock(&pool_mu);
    void *b = pool_head;
    pool_head = NULL;
    atomic_store(&pool_n, 0);
    pthread_mutex_unlock(&pool_mu);
    free_list(b);
    pool_release();
}

lg_span_t *lg_span_new(void)
{
    unsigned char *mem = block_get();
    lg_span_t *sp = (lg_span_t *)mem;
    lg_span_chunk_t *c = (lg_span_chunk_t *)(mem + span_hdr());

    memset(sp, 0, sizeof(*sp));
    c->next = NULL;
    c->cap = FIRST_CHUNK;
    c->used = 0;
    sp->_arena = c;
    sp->kind = LG_SPAN_KIND_INTERNAL;
    return sp;
}

void lg_span_free(lg_span_t *sp)
{
    lg_span_chunk_t *first, *c, *next;

    if (sp == NULL)
        return;
    first = (lg_span_chunk_t *)((unsigned char *)sp + span_hdr());
    for (c = sp->_arena; c != NULL && c != first; c = next) {
        next = c->next;
        free(c);
    }
    block_put(sp);
}

static void *arena_alloc(lg_span_t *sp, size_t n)
{
    lg_span_chunk_t *c = sp->_arena;
    void *p;

    n = ALIGN16(n);
    if (c->cap - c->used < n) {
        size_t cap = c->cap * 2 > n ? c->cap * 2 : n;
        if (cap > 65536 && n <= 65536)
            cap = 65536;
        lg_span_chunk_t *nc = lg_xmalloc(sizeof(*nc) + cap);
        nc->next = c;
        nc->cap = cap;
        nc->used = 0;
        sp->_arena = c = nc;
    }
    p = c->data + c->used;
    c->used += n;
    return p;
}

static char *arena_strndup(lg_span_t *sp, const char *s, size_t len)
{
    char *d;

    if (s == NULL)
        len = 0;
    else
        len = strnlen(s, len); /* protobuf-c strings are NUL-terminated */
    d = arena_alloc(sp, len + 1);
    if (len)
        memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *lg_span_copy(lg_span_t *sp, const char *s, size_t len)
{
    char *d = arena_alloc(sp, len + 1);
    if (s && len)
        memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

void *lg_span_defer(lg_span_t *sp, void (*fn)(lg_span_t *sp, void *arg), size_t n)
{
    void *arg = arena_alloc(sp, n ? n : 1);
    memset(arg, 0, n);
    sp->_finish = fn;
    sp->_finish_arg = arg;
    return arg;
}

static void span_finish(lg_span_t *sp)
{
    if (sp->_finish) {
        void (*fn)(lg_span_t *, void *) = sp->_finish;
        sp->_finish = NULL;
        fn(sp, sp->_finish_arg);
    }
}

void lg_span_set_name(lg_span_t *sp, const char *name, size_t len)
{
    sp->name = arena_strndup(sp, name, len);
}

void lg_span_set_status(lg_span_t *sp, int code, const char *msg, size_t len)
{
    sp->status_code = code;
    sp->status_message = msg ? arena_strndup(sp, msg, len) : NULL;
}

void lg_span_set_trace_state(lg_span_t *sp, const char *ts, size_t len)
{
    sp->trace_state = ts ? arena_strndup(sp, ts, len) : NULL;
}

size_t lg_span_attr_count(const lg_span_t *sp)
{
    return sp->_nattrs + sp->_nkv; /* a resource has the former, a span the latter */
}

/* Appends a KeyValue for `key` and returns its (unset) AnyValue. */
static av_t *attr_new(lg_span_t *sp, const char *key)
{
    static const kv_t kv_init = OPENTELEMETRY__PROTO__COMMON__V1__KEY_VALUE__INIT;
    static const av_t av_init = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__INIT;
    kv_t *kv;
    av_t *av;

    if (sp->_nattrs == sp->_capattrs) {
        size_t cap = sp->_capattrs ? sp->_capattrs * 2 : 16;
        void **a = arena_alloc(sp, cap * sizeof(void *));
        if (sp->_nattrs)
            memcpy(a, sp->_attrs, sp->_nattrs * sizeof(void *));
        sp->_attrs = a;
        sp->_capattrs = cap;
    }
    kv = arena_alloc(sp, ALIGN16(sizeof(kv_t)) + sizeof(av_t));
    av = (av_t *)((unsigned char *)kv + ALIGN16(sizeof(kv_t)));
    *kv = kv_init;
    *av = av_init;
    kv->key = arena_strndup(sp, key, key ? strlen(key) : 0);
    kv->value = av;
    sp->_attrs[sp->_nattrs++] = kv;
    return av;
}

/* The resource's attributes (all strings) stay KeyValue structs: the resource is built once
 * and searched by key (resource_find). Spans encode theirs as they are added (below). */
static void res_attr_str(lg_span_t *sp, const char *key, const char *val, size_t len)
{
    av_t *av = attr_new(sp, key);
    av->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    av->string_value = arena_strndup(sp, val, len);
}

/* ---- Resource ----
 * The resource is an lg_span_t used only as a container of string attributes, kept as
 * KeyValue structs in its arena (res_attr_str). */

static lg_span_t *resource_find(lg_span_t *res, const char *key)
{
    for (size_t i = 0; i < res->_nattrs; i++) {
        kv_t *kv = res->_attrs[i];
        if (strcmp(kv->key, key) == 0) {
            /* Replace: remove this entry, keeping order of the others. */
            memmove(&res->_attrs[i], &res->_attrs[i + 1], (res->_nattrs - i - 1) * sizeof(void *));
            res->_nattrs--;
            break;
        }
    }
    return res;
}

static void resource_set(lg_span_t *res, const char *key, const char *val, size_t len)
{
    res_attr_str(resource_find(res, key), key, val, len);
}

static int unhexc(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes and trims s[0..len) into a new string (caller frees). */
static char *pct_decode(const char *s, size_t len)
{
    char *out = lg_xmalloc(len + 1), *o = out;

    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && unhexc((unsigned char)s[i + 1]) >= 0 &&
            unhexc((unsigned char)s[i + 2]) >= 0) {
            *o++ = (char)(unhexc((unsigned char)s[i + 1]) << 4 | unhexc((unsigned char)s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

/* Calls fn(key, value, arg) for each "k=v" member of a comma-separated W3C-baggage-like
 * list (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS); both sides are trimmed
 * and percent-decoded. Members without '=' or with an empty key are skipped. */
static void kv_list_each(const char *list, void (*fn)(const char *, const char *, void *),
                         void *arg)
{
    const char *p = list;

    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq) {
            char *k = pct_decode(p, (size_t)(eq - p));
            char *v = pct_decode(eq + 1, len - (size_t)(eq - p) - 1);
            if (*k)
                fn(k, v, arg);
            free(k);
            free(v);
        }
        p = end ? end + 1 : NULL;
    }
}

static void resource_kv_cb(const char *k, const char *v, void *arg)
{
    resource_set(arg, k, v, strlen(v));
}

static const char *env_nonempty(const char *name, int no_env)
{
    const char *v = no_env ? NULL : getenv(name);
    return v && *v ? v : NULL;
}

static lg_span_t *resource_build(const lg_otlp_opts_t *o)
{
    static const struct {
        const char *env, *key;
    } k8s[] = {
        {"POD_NAME", "k8s.pod.name"},   {"POD_NAMESPACE", "k8s.namespace.name"},
        {"NODE_NAME", "k8s.node.name"}, {"POD_IP", "k8s.pod.ip"},
        {"POD_UID", "k8s.pod.uid"},
    };
    lg_span_t *res = lg_span_new();
    int no_env = o ? o->no_env : 1;
    const char *v;

    resource_set(res, "service.name", "lunagate", 8);
    resource_set(res, "service.version", LG_VERSION, strlen(LG_VERSION));
    resource_set(res, "telemetry.sdk.name", "lunagate", 8);
    resource_set(res, "telemetry.sdk.language", "c", 1);
    for (size_t i = 0; i < LG_ARRAY_SIZE(k8s); i++)
        if ((v = env_nonempty(k8s[i].env, no_env)) != NULL)
            resource_set(res, k8s[i].key, v, strlen(v));
    if ((v = env_nonempty("POD_NAME", no_env)) != NULL)
        resource_set(res, "service.instance.id", v, strlen(v));
    if ((v = env_nonempty("OTEL_RESOURCE_ATTRIBUTES", no_env)) != NULL)
        kv_list_each(v, resource_kv_cb, res);
    if (o)
        for (size_t i = 0; i < o->nresource_attrs; i++) {
            const char *k = o->resource_attrs[2 * i], *val = o->resource_attrs[2 * i + 1];
            if (k && val)
                resource_set(res, k, val, strlen(val));
        }
    if ((v = env_nonempty("OTEL_SERVICE_NAME", no_env)) != NULL)
        resource_set(res, "service.name", v, strlen(v));
    if (o && o->service_name && *o->service_name)
        resource_set(res, "service.name", o->service_name, strlen(o->service_name));
    return res;
}

/* ---- Encoding ----
 * A direct protobuf writer for the one message shape we send, walking the protobuf-c
 * KeyValue/AnyValue structs the spans already hold. protobuf-c's generic packer costs
 * about 5 us per span on this machine; this writer is several times cheaper, and
 * test_otlp.c checks its output byte for byte against protobuf-c's. Fields go out in
 * field-number order; proto3 defaults are omitted except inside a oneof. */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

static size_t vsize(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* tag + length + payload, for fields numbered below 16 (one-byte tags) */
static size_t ldsize(size_t len)
{
    return 1 + vsize(len) + len;
}

/* Only the resource is encoded from structs, and its values are all strings. */
static size_t av_size(const av_t *av)
{
    return ldsize(strlen(av->string_value));
}

static size_t kv_size(const kv_t *kv)
{
    size_t n = 0, k = strlen(kv->key);

    if (k)
        n += ldsize(k);
    if (kv->value)
        n += ldsize(av_size(kv->value));
    return n;
}

static size_t attrs_size(void *const *attrs, size_t nattrs)
{
    size_t n = 0;
    for (size_t i = 0; i < nattrs; i++)
        n += ldsize(kv_size(attrs[i]));
    return n;
}

static size_t str_size(const char *s)
{
    size_t k = s ? strlen(s) : 0;
    return k ? ldsize(k) : 0;
}

static size_t status_size(const lg_span_t *sp)
{
    return str_size(sp->status_message) +
           (sp->status_code ? 1 + vsize((uint64_t)sp->status_code) : 0);
}

static int has_status(const lg_span_t *sp)
{
    return sp->status_code != LG_SPAN_STATUS_UNSET || sp->status_message;
}

static int has_parent(const lg_span_t *sp)
{
    return !lg_trace_id_is_zero(sp->parent_span_id, sizeof(sp->parent_span_id));
}

static const char *span_name(const lg_span_t *sp)
{
    return sp->name && *sp->name ? sp->name : "unknown";
}

static size_t span_size(const lg_span_t *sp)
{
    size_t n = ldsize(16) + ldsize(8);

    n += str_size(sp->trace_state);
    if (has_parent(sp))
        n += ldsize(8);
    n += str_size(span_name(sp));
    if (sp->kind)
        n += 1 + vsize((uint64_t)(int64_t)sp->kind);
    if (sp->start_ns)
        n += 9;
    if (sp->end_ns)
        n += 9;
    n += sp->_kvlen;
    if (has_status(sp))
        n += ldsize(status_size(sp));
    if (sp->flags)
        n += 2 + 4;
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static uint8_t *put_len(uint8_t *p, int field, size_t len)
{
    *p++ = (uint8_t)(field << 3 | WT_LEN);
    return put_varint(p, len);
}

static uint8_t *put_bytes(uint8_t *p, int field, const void *data, size_t len)
{
    p = put_len(p, field, len);
    memcpy(p, data, len);
    return p + len;
}

static uint8_t *put_str(uint8_t *p, int field, const char *s)
{
    size_t k = s ? strlen(s) : 0;
    return k ? put_bytes(p, field, s, k) : p;
}

static uint8_t *put_fixed64(uint8_t *p, int field, uint64_t v)
{
    *p++ = (uint8_t)(field << 3 | WT_I64);
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

/* ---- Span attributes, encoded when they are added ----
 * A span's attributes are written straight into protobuf bytes (repeated Span.attributes,
 * field 9) in the worker that makes the span: one bounds check and a few memcpy per
 * attribute, and the exporter copies the block as is. The resource, built once and
 * searched by key, keeps KeyValue structs. */

/* Reserves `n` more bytes of sp->_kv; returns where they start. */
/* Makes room for `n` more bytes of sp->_kv. */
static void kv_room(lg_span_t *sp, size_t n)
{
    if (sp->_kvlen + n > sp->_kvcap) {
        size_t cap = sp->_kvcap ? sp->_kvcap * 2 : 1024;
        while (cap < sp->_kvlen + n)
            cap *= 2;
        uint8_t *k = arena_alloc(sp, cap);
        if (sp->_kvlen)
            memcpy(k, sp->_kv, sp->_kvlen);
        sp->_kv = k;
        sp->_kvcap = cap;
    }
}

static uint8_t *kv_reserve(lg_span_t *sp, size_t n)
{
    kv_room(sp, n);
    uint8_t *p = sp->_kv + sp->_kvlen;
    sp->_kvlen += n;
    sp->_nkv++;
    return p;
}

/* Writes the Span.attributes entry head for `key` with an AnyValue of `avlen` bytes and
 * returns where those bytes go. */
static uint8_t *kv_begin_n(lg_span_t *sp, const char *key, size_t klen, size_t avlen)
{
    size_t kvlen = (klen ? ldsize(klen) : 0) + ldsize(avlen);
    if (kvlen < 128 && klen) {                  /* the common case: every length fits one byte */
        uint8_t *p = kv_reserve(sp, 2 + kvlen); /* the whole entry, value included */
        p[0] = 9 << 3 | WT_LEN;
        p[1] = (uint8_t)kvlen;
        p[2] = 1 << 3 | WT_LEN;
        p[3] = (uint8_t)klen;
        memcpy(p + 4, key, klen);
        p += 4 + klen;
        p[0] = 2 << 3 | WT_LEN;
        p[1] = (uint8_t)avlen;
        return p + 2;
    }
    uint8_t *p = kv_reserve(sp, ldsize(kvlen));
    p = put_len(p, 9, kvlen);
    if (klen)
        p = put_bytes(p, 1, key, klen);
    return put_len(p, 2, avlen);
}

static uint8_t *kv_begin(lg_span_t *sp, const char *key, size_t avlen)
{
    return kv_begin_n(sp, key, key ? strlen(key) : 0, avlen);
}

void lg_span_attr_str(lg_span_t *sp, const char *key, const char *val, size_t len)
{
    len = val ? strnlen(val, len) : 0;
    put_bytes(kv_begin(sp, key, ldsize(len)), 1, val ? val : "", len);
}

/* The general cases of otlp.h's inline writers: short entries get room and go back through
 * them (one encoder for the common shape); long ones take kv_begin_n. */
void lg_span_attr_strn(lg_span_t *sp, const char *key, size_t klen, const char *val, size_t len)
{
    if (klen && klen + len < 122) {
        kv_room(sp, 8 + klen + len);
        lg_span_str_inline(sp, key, klen, val, len);
        return;
    }
    put_bytes(kv_begin_n(sp, key, klen, ldsize(len)), 1, len ? val : "", len);
}

void lg_span_attr_int(lg_span_t *sp, const char *key, int64_t v)
{
    lg_span_attr_intn(sp, key, key ? strlen(key) : 0, v);
}

void lg_span_attr_intn(lg_span_t *sp, const char *key, size_t klen, int64_t v)
{
    if (klen && klen < 100) {
        kv_room(sp, 7 + klen + vsize((uint64_t)v));
        lg_span_int_inline(sp, key, klen, v);
        return;
    }
    uint8_t *p = kv_begin_n(sp, key, klen, 1 + vsize((uint64_t)v));
    *p++ = 3 << 3 | WT_VARINT;
    put_varint(p, (uint64_t)v);
}

void lg_span_attr_double(lg_span_t *sp, const char *key, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    put_fixed64(kv_begin(sp, key, 9), 4, bits);
}

void lg_span_attr_bool(lg_span_t *sp, const char *key, int v)
{
    uint8_t *p = kv_begin(sp, key, 2);
    p[0] = 2 << 3 | WT_VARINT;
    p[1] = v != 0;
}

void lg_span_attr_str_array(lg_span_t *sp, const char *key, const char *const *vals, size_t n)
{
    size_t inner = 0; /* ArrayValue: repeated AnyValue values = 1, each a string_value */
    for (size_t i = 0; i < n; i++)
        inner += ldsize(ldsize(vals[i] ? strlen(vals[i]) : 0));
    uint8_t *p = put_len(kv_begin(sp, key, ldsize(inner)), 5, inner);
    for (size_t i = 0; i < n; i++) {
        size_t l = vals[i] ? strlen(vals[i]) : 0;
        p = put_len(p, 1, ldsize(l));
        p = put_bytes(p, 1, vals[i] ? vals[i] : "", l);
    }
}

void lg_span_attr_int_array(lg_span_t *sp, const char *key, const int64_t *vals, size_t n)
{
    size_t inner = 0;
    for (size_t i = 0; i < n; i++)
        inner += ldsize(1 + vsize((uint64_t)vals[i]));
    uint8_t *p = put_len(kv_begin(sp, key, ldsize(inner)), 5, inner);
    for (size_t i = 0; i < n; i++) {
        p = put_len(p, 1, 1 + vsize((uint64_t)vals[i]));
        *p++ = 3 << 3 | WT_VARINT;
        p = put_varint(p, (uint64_t)vals[i]);
    }
}

static uint8_t *put_kv(uint8_t *p, const kv_t *kv)
{
    p = put_str(p, 1, kv->key);
    if (kv->value) {
        p = put_len(p, 2, av_size(kv->value));
        p = put_bytes(p, 1, kv->value->string_value, strlen(kv->value->string_value));
    }
    return p;
}

/* Writes attributes as repeated KeyValue `field`. */
static uint8_t *put_attrs(uint8_t *p, int field, void *const *attrs, size_t nattrs)
{
    for (size_t i = 0; i < nattrs; i++) {
        p = put_len(p, field, kv_size(attrs[i]));
        p = put_kv(p, attrs[i]);
    }
    return p;
}

static uint8_t *put_span(uint8_t *p, const lg_span_t *sp)
{
    p = put_bytes(p, 1, sp->trace_id, 16);
    p = put_bytes(p, 2, sp->span_id, 8);
    p = put_str(p, 3, sp->trace_state);
    if (has_parent(sp))
        p = put_bytes(p, 4, sp->parent_span_id, 8);
    p = put_str(p, 5, span_name(sp));
    if (sp->kind) {
        *p++ = 6 << 3 | WT_VARINT;
        p = put_varint(p, (uint64_t)(int64_t)sp->kind);
    }
    if (sp->start_ns)
        p = put_fixed64(p, 7, sp->start_ns);
    if (sp->end_ns)
        p = put_fixed64(p, 8, sp->end_ns);
    if (sp->_kvlen) {
        memcpy(p, sp->_kv, sp->_kvlen);
        p += sp->_kvlen;
    }
    if (has_status(sp)) {
        p = put_len(p, 15, status_size(sp));
        p = put_str(p, 2, sp->status_message);
        if (sp->status_code) {
            *p++ = 3 << 3 | WT_VARINT;
            p = put_varint(p, (uint64_t)(int64_t)sp->status_code);
        }
    }
    if (sp->flags) {
        *p++ = (uint8_t)((16 << 3 | WT_I32) | 0x80); /* field 16: a two-byte tag */
        *p++ = 0x01;
        for (int i = 0; i < 4; i++)
            *p++ = (uint8_t)(sp->flags >> (8 * i));
    }
    return p;
}

/* Serializes spans[0..n) under `res` into a buffer that starts with `prefix` spare bytes
 * (room for the gRPC frame header) and returns it; sets *len to the message length. The
 * buffer is *reuse when that is given (grown to fit; *cap is its size), else a new one the
 * caller frees. */
static uint8_t *encode(const lg_span_t *res, lg_span_t *const *spans, size_t n, size_t prefix,
                       size_t *len, uint8_t **reuse, size_t *cap)
{
    size_t *sizes = lg_xmalloc((n ? n : 1) * sizeof(*sizes));
    size_t scope_n = str_size("lunagate") + str_size(LG_VERSION);
    size_t res_n = attrs_size(res->_attrs, res->_nattrs);
    size_t ss_n = ldsize(scope_n), rs_n, total;
    uint8_t *buf, *p;

    for (size_t i = 0; i < n; i++) {
        sizes[i] = span_size(spans[i]);
        ss_n += ldsize(sizes[i]);
    }
    rs_n = ldsize(res_n) + ldsize(ss_n);
    total = ldsize(rs_n);
    if (reuse && *cap < prefix + total) {
        free(*reuse);
        *reuse = lg_xmalloc(prefix + total);
        *cap = prefix + total;
    }
    buf = reuse ? *reuse : lg_xmalloc(prefix + total);
    p = buf + prefix;
    p = put_len(p, 1, rs_n);  /* ExportTraceServiceRequest.resource_spans */
    p = put_len(p, 1, res_n); /* ResourceSpans.resource */
    p = put_attrs(p, 1, res->_attrs, res->_nattrs);
    p = put_len(p, 2, ss_n);    /* ResourceSpans.scope_spans */
    p = put_len(p, 1, scope_n); /* ScopeSpans.scope */
    p = put_str(p, 1, "lunagate");
    p = put_str(p, 2, LG_VERSION);
    for (size_t i = 0; i < n; i++) { /* ScopeSpans.spans */
        p = put_len(p, 2, sizes[i]);
        p = put_span(p, spans[i]);
    }
    free(sizes);
    *len = (size_t)(p - (buf + prefix));
    if (*len != total)
        abort(); /* size and write passes disagree: a bug, never input-dependent */
    return buf;
}

/* ---- Bounded MPSC queue (Vyukov's bounded MPMC, used with one consumer) ---- */

typedef struct {
    _Atomic size_t seq;
    lg_span_t *sp;
} cell_t;

/* ---- Exporter state ---- */

typedef struct {
    /* resolved configuration */
    char *url;     /* full URL posted to */
    char *log_url; /* scheme://host:port/path, no userinfo or query: safe to log */
    int protocol;
    struct curl_slist *hdrs;
    size_t batch_max;
    int interval_ms, timeout_ms, max_retry_ms;
    lg_span_t *resource;

    /* queue */
    cell_t *cells;
    size_t mask;
    char pad0_[64]; /* keep producers' and the consumer's counters on separate lines */
    _Atomic size_t enq;
    char pad1_[64];
    size_t deq; /* consumer only */
    char pad2_[64];

    /* thread */
    pthread_t thread;
    CURLM *multi;
    CURL *easy; /* one handle, reused for every attempt */
    _Atomic int stop;
    _Atomic int flush_ms;

    /* current export (exporter thread only) */
    uint8_t *body; /* encoded batch, with the 5-byte prefix for gRPC; NULL: none */
    size_t body_len;
    /* where batches are encoded, kept between batches: a fresh buffer of a few hundred KiB
     * per batch is an mmap and a page fault per 4 KiB */
    uint8_t *buf;
    size_t buf_cap;
    size_t body_spans;
    int busy;          /* easy handle is in the multi */
    int attempt;       /* failed attempts so far for `body` */
    int64_t first_try; /* mono us of the first attempt */
    int64_t retry_at;  /* mono us; 0 = not waiting */
    int grpc_status;   /* -1 until seen */
    char grpc_message[160];
    int grpc_details; /* grpc-status-details-bin seen (RetryInfo may be inside) */
    uint8_t *resp;
    size_t resp_len;
} exporter_t;

static exporter_t *X;       /* non-NULL while running */
static _Atomic int running; /* submit gate */
static _Atomic uint64_t n_submitted, n_exported, n_drop_queue, n_drop_export, n_rejected, n_batches;

uint64_t lg_otlp_dropped(void)
{
    return atomic_load(&n_drop_queue) + atomic_load(&n_drop_export);
}

void lg_otlp_stats(lg_otlp_stats_t *out)
{
    out->submitted = atomic_load(&n_submitted);
    out->exported = atomic_load(&n_exported);
    out->dropped_queue = atomic_load(&n_drop_queue);
    out->dropped_export = atomic_load(&n_drop_export);
    out->rejected = atomic_load(&n_rejected);
    out->batches_sent = atomic_load(&n_batches);
}

static int queue_push(exporter_t *x, lg_span_t *sp, size_t *depth)
{
    size_t pos = atomic_load_explicit(&x->enq, memory_order_relaxed);
    cell_t *c;

    for (;;) {
        c = &x->cells[pos & x->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&x->enq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            return LG_AGAIN; /* full */
        } else {
            pos = atomic_load_explicit(&x->enq, memory_order_relaxed);
        }
    }
    c->sp = sp;
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
    /* Depth seen by this producer, without reading the consumer's counter: the cell
     * index distance is enough to decide when to wake the exporter. */
    *depth = pos + 1;
    return LG_OK;
}

static lg_span_t *queue_pop(exporter_t *x)
{
    size_t pos = x->deq;
    cell_t *c = &x->cells[pos & x->mask];
    size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
    lg_span_t *sp;

    if ((intptr_t)seq - (intptr_t)(pos + 1) < 0)
        return NULL; /* empty (or the producer of this cell has not finished) */
    sp = c->sp;
    x->deq = pos + 1;
    atomic_store_explicit(&c->seq, pos + x->mask + 1, memory_order_release);
    return sp;
}

static size_t queue_depth(exporter_t *x)
{
    return atomic_load_explicit(&x->enq, memory_order_relaxed) - x->deq;
}

int lg_otlp_submit(lg_span_t *sp)
{
    exporter_t *x = X;
    size_t pos;

    if (sp == NULL)
        return LG_DECLINED;
    if (!atomic_load_explicit(&running, memory_order_acquire) || x == NULL) {
        lg_span_free(sp);
        return LG_DECLINED;
    }
    if (queue_push(x, sp, &pos) != LG_OK) {
        lg_span_free(sp);
        atomic_fetch_add_explicit(&n_drop_queue, 1, memory_order_relaxed);
        return LG_AGAIN;
    }
    atomic_fetch_add_explicit(&n_submitted, 1, memory_order_relaxed);
    /* Wake the exporter once per full batch instead of once per span. */
    if (pos % x->batch_max == 0)
        curl_multi_wakeup(x->multi);
    return LG_OK;
}

uint8_t *lg_otlp_encode(lg_span_t *const *spans, size_t n, size_t *len)
{
    lg_span_t *res = X ? NULL : resource_build(NULL);
    for (size_t i = 0; i < n; i++)
        span_finish(spans[i]);
    uint8_t *buf = encode(X ? X->resource : res, spans, n, 0, len, NULL, NULL);
    lg_span_free(res);
    return buf;
}

/* ---- Configuration ---- */

static int parse_protocol(const char *s)
{
    if (s == NULL)
        return LG_OTLP_DEFAULT;
    if (strcasecmp(s, "grpc") == 0)
        return LG_OTLP_GRPC;
    if (strcasecmp(s, "http") == 0 || strcasecmp(s, "http/protobuf") == 0)
        return LG_OTLP_HTTP;
    if (strcasecmp(s, "http/json") == 0) {
        lg_log(LG_LOG_WARN, "otlp", "protocol http/json is not supported; using http/protobuf");
        return LG_OTLP_HTTP;
    }
    lg_log(LG_LOG_WARN, "otlp", "unknown OTLP protocol '%s'; using grpc", s);
    return LG_OTLP_GRPC;
}

/* Builds x->url (what is posted to) and x->log_url (no userinfo or query). */
static int resolve_url(exporter_t *x, const char *endpoint, int as_is, const char *path,
                       lg_err_t *err)
{
    CURLU *u = curl_url();
    char *buf = NULL, *scheme = NULL, *host = NULL, *port = NULL, *upath = NULL, *full = NULL;
    int rc = LG_ERR;

    if (strstr(endpoint, "://") == NULL) {
        size_t n = strlen(endpoint) + 8;
        buf = lg_xmalloc(n);
        snprintf(buf, n, "http://%s", endpoint);
        endpoint = buf;
    }
    if (u == NULL ||
        curl_url_set(u, CURLUPART_URL, endpoint, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        lg_err_set(err, 0, "invalid OTLP endpoint URL");
        goto done;
    }
    if (strcasecmp(scheme, "grpc") == 0 || strcasecmp(scheme, "grpcs") == 0) {
        int tls = strcasecmp(scheme, "grpcs") == 0;
        curl_url_set(u, CURLUPART_SCHEME, tls ? "https" : "http", 0);
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
            curl_url_set(u, CURLUPART_PORT, "4317", 0);
        curl_free(port);
        port = NULL;
        if (x->protocol == LG_OTLP_DEFAULT)
            x->protocol = LG_OTLP_GRPC;
    } else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        lg_err_set(err, 0, "OTLP endpoint scheme '%s' is not http, https or grpc", scheme);
        goto done;
    }
    if (x->protocol == LG_OTLP_DEFAULT)
        x->protocol = LG_OTLP_GRPC;
    if (x->protocol == LG_OTLP_GRPC) {
        curl_url_set(u, CURLUPART_PATH, GRPC_PATH, 0);
        curl_url_set(u, CURLUPART_QUERY, NULL, 0);
    } else if (!as_is) {
        if (path && *path) {
            curl_url_set(u, CURLUPART_PATH, path, 0);
        } else {
            char *p = NULL, *np;
            size_t n;
            curl_url_get(u, CURLUPART_PATH, &p, 0);
            n = p ? strlen(p) : 0;
            while (n > 0 && p[n - 1] == '/')
                n--;
            np = lg_xmalloc(n + sizeof("/v1/traces"));
            memcpy(np, p ? p : "", n);
            memcpy(np + n, "/v1/traces", sizeof("/v1/traces"));
            curl_url_set(u, CURLUPART_PATH, np, 0);
            free(np);
            curl_free(p);
        }
    }
    if (curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK) {
        lg_err_set(err, 0, "invalid OTLP endpoint URL");
        goto done;
    }
    curl_free(scheme);
    scheme = NULL;
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    curl_url_get(u, CURLUPART_PATH, &upath, 0);
    {
        size_t n = strlen(scheme) + strlen(host) + (port ? strlen(port) : 0) +
                   (upath ? strlen(upath) : 0) + 8;
        x->log_url = lg_xmalloc(n);
        snprintf(x->log_url, n, "%s://%s:%s%s", scheme, host, port ? port : "", upath ? upath : "");
    }
    x->url = lg_xstrdup(full);
    rc = LG_OK;
done:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(upath);
    curl_free(full);
    curl_url_cleanup(u);
    free(buf);
    return rc;
}

/* Adds "Name: value" to x->hdrs after checking its shape; never logs the value. */
static void add_header(exporter_t *x, const char *h)
{
    const char *colon = h ? strchr(h, ':') : NULL;

    if (colon == NULL || colon == h || strpbrk(h, "\r\n") != NULL) {
        lg_log(LG_LOG_WARN, "otlp", "ignoring malformed OTLP header (expected 'Name: value')");
        return;
    }
    x->hdrs = curl_slist_append(x->hdrs, h);
}

static void env_header_cb(const char *k, const char *v, void *arg)
{
    size_t n = strlen(k) + strlen(v) + 3;
    char *h = lg_xmalloc(n);

    snprintf(h, n, "%s: %s", k, v);
    add_header(arg, h);
    free(h);
}

/* Reads a JSON string at *p (just past the opening quote) into out[0..cap); handles the
 * simple escapes and \u00XX. Returns 0 on success with *p past the closing quote. */
static int json_str(const char **p, char *out, size_t cap)
{
    const char *s = *p;
    size_t n = 0;

    while (*s && *s != '"') {
        char c = *s++;
        if (c == '\\') {
            c = *s++;
            switch (c) {
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'u':
                if (!s[0] || !s[1] || !s[2] || !s[3] || unhexc(s[2]) < 0 || unhexc(s[3]) < 0 ||
                    s[0] != '0' || s[1] != '0')
                    return -1; /* only Latin-1 escapes: header values are ASCII anyway */
                c = (char)(unhexc(s[2]) << 4 | unhexc(s[3]));
                s += 4;
                break;
            case '"':
            case '\\':
            case '/':
                break;
            default:
                return -1;
            }
        }
        if (n + 1 >= cap)
            return -1;
        out[n++] = c;
    }
    if (*s != '"')
        return -1;
    out[n] = '\0';
    *p = s + 1;
    return 0;
}

/* OTLP_HEADERS may be a JSON object of strings (agentgateway) instead of k=v,k=v. */
static int json_headers(exporter_t *x, const char *s)
{
    char k[256], v[4096];

    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    if (*s++ != '{')
        return -1;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == ',')
            s++;
        if (*s == '}')
            return 0;
        if (*s++ != '"' || json_str(&s, k, sizeof(k)) != 0)
            return -1;
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
            s++;
        if (*s++ != ':')
            return -1;
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
            s++;
        if (*s++ != '"' || json_str(&s, v, sizeof(v)) != 0)
            return -1;
        env_header_cb(k, v, x);
    }
}

static void env_headers(exporter_t *x, const char *v)
{
    const char *p = v;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '{') {
        if (json_headers(x, p) != 0)
            lg_log(LG_LOG_WARN, "otlp", "ignoring OTLP headers from the environment: bad JSON");
        return;
    }
    kv_list_each(v, env_header_cb, x);
}

/* ---- Export (exporter thread) ---- */

static size_t header_cb(char *b, size_t size, size_t nitems, void *arg)
{
    exporter_t *x = arg;
    size_t len = size * nitems, n = len;

    while (n > 0 && (b[n - 1] == '\r' || b[n - 1] == '\n'))
        n--;
    if (n >= 5 && memcmp(b, "HTTP/", 5) == 0) {
        /* A new response (or an interim 100): forget what the previous one said. */
        x->grpc_status = -1;
        x->grpc_message[0] = '\0';
        x->grpc_details = 0;
    } else if (n > 12 && strncasecmp(b, "grpc-status:", 12) == 0) {
        x->grpc_status = atoi(b + 12);
    } else if (n > 13 && strncasecmp(b, "grpc-message:", 13) == 0) {
        char *m = pct_decode(b + 13, n - 13);
        snprintf(x->grpc_message, sizeof(x->grpc_message), "%s", m);
        free(m);
    } else if (n > 24 && strncasecmp(b, "grpc-status-details-bin:", 24) == 0) {
        x->grpc_details = 1;
    }
    return len;
}

static size_t write_cb(char *b, size_t size, size_t nmemb, void *arg)
{
    exporter_t *x = arg;
    size_t len = size * nmemb;

    if (x->resp_len + len <= MAX_RESPONSE) {
        x->resp = lg_xrealloc(x->resp, x->resp_len + len);
        memcpy(x->resp + x->resp_len, b, len);
        x->resp_len += len;
    }
    return len;
}

static void send_body(exporter_t *x)
{
    size_t off = x->protocol == LG_OTLP_GRPC ? 0 : 5; /* HTTP skips the unused prefix */

    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body + off);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(x->body_len - off));
    x->grpc_status = -1;
    x->grpc_message[0] = '\0';
    x->grpc_details = 0;
    free(x->resp);
    x->resp = NULL;
    x->resp_len = 0;
    x->retry_at = 0;
    curl_multi_add_handle(x->multi, x->easy);
    x->busy = 1;
    atomic_fetch_add_explicit(&n_batches, 1, memory_order_relaxed);
}

/* Pops up to batch_max spans and encodes them into x->body. Returns the span count. */
static size_t take_batch(exporter_t *x, lg_span_t **batch)
{
    size_t n = 0, len;
    uint8_t *buf;

    while (n < x->batch_max && (batch[n] = queue_pop(x)) != NULL)
        span_finish(batch[n++]);
    if (n == 0)
        return 0;
    buf = encode(x->resource, batch, n, 5, &len, &x->buf, &x->buf_cap);
    for (size_t i = 0; i < n; i++)
        lg_span_free(batch[i]);
    if (len > MAX_REQUEST) {
        atomic_fetch_add_explicit(&n_drop_export, n, memory_order_relaxed);
        lg_log(LG_LOG_WARN, "otlp", "dropped a batch of %zu spans: %zu bytes is over the limit", n,
               len);
        return 0;
    }
    buf[0] = 0; /* gRPC Length-Prefixed-Message: uncompressed, big-endian length */
    buf[1] = (uint8_t)(len >> 24);
    buf[2] = (uint8_t)(len >> 16);
    buf[3] = (uint8_t)(len >> 8);
    buf[4] = (uint8_t)len;
    x->body = buf;
    x->body_len = len + 5;
    x->body_spans = n;
    x->attempt = 0;
    x->first_try = lg_mono_us();
    return n;
}

static void body_done(exporter_t *x)
{
    x->body = NULL; /* its memory stays x->buf, for the next batch */
    x->body_len = x->body_spans = 0;
    x->retry_at = 0;
}

static void check_partial_success(exporter_t *x)
{
    const uint8_t *p = x->resp;
    size_t n = x->resp_len;
    response_t *r;

    if (x->protocol == LG_OTLP_GRPC) {
        if (n < 5 || p[0] != 0)
            return;
        p += 5;
        n -= 5;
    }
    if (n == 0)
        return;
    r = opentelemetry__proto__collector__trace__v1__export_trace_service_response__unpack(NULL, n,
                                                                                          p);
    if (r == NULL)
        return;
    if (r->partial_success &&
        (r->partial_success->rejected_spans > 0 ||
         (r->partial_success->error_message && *r->partial_success->error_message))) {
        int64_t rej = r->partial_success->rejected_spans;
        if (rej > 0)
            atomic_fetch_add_explicit(&n_rejected, (uint64_t)rej, memory_order_relaxed);
        lg_log(LG_LOG_WARN, "otlp", "collector rejected %lld of %zu spans: %.200s", (long long)rej,
               x->body_spans,
               r->partial_success->error_message ? r->partial_success->error_message : "");
    }
    opentelemetry__proto__collector__trace__v1__export_trace_service_response__free_unpacked(r,
                                                                                             NULL);
}

static int grpc_retryable(int code, int details)
{
    switch (code) {
    case 1:  /* CANCELLED */
    case 4:  /* DEADLINE_EXCEEDED */
    case 10: /* ABORTED */
    case 11: /* OUT_OF_RANGE */
    case 14: /* UNAVAILABLE */
    case 15: /* DATA_LOSS */
        return 1;
    case 8: /* RESOURCE_EXHAUSTED: only when the server says it can recover (RetryInfo) */
        return details;
    default:
        return 0;
    }
}

static void on_done(exporter_t *x, CURLcode rc)
{
    long http = 0;
    curl_off_t retry_after = 0;
    int retry = 0;
    char why[200];

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &http);
    if (rc != CURLE_OK) {
        retry = rc != CURLE_URL_MALFORMAT && rc != CURLE_UNSUPPORTED_PROTOCOL;
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(rc));
    } else if (x->protocol == LG_OTLP_GRPC && http == 200 && x->grpc_status == 0) {
        why[0] = '\0';
    } else if (x->protocol == LG_OTLP_GRPC && http == 200) {
        retry = grpc_retryable(x->grpc_status, x->grpc_details);
        if (x->grpc_status < 0)
            snprintf(why, sizeof(why), "response without grpc-status");
        else
            snprintf(why, sizeof(why), "grpc-status %d: %.150s", x->grpc_status, x->grpc_message);
    } else if (x->protocol == LG_OTLP_HTTP && http >= 200 && http < 300) {
        why[0] = '\0';
    } else {
        retry = http == 429 || http == 502 || http == 503 || http == 504;
        snprintf(why, sizeof(why), "HTTP status %ld", http);
    }
    if (why[0] == '\0') {
        atomic_fetch_add_explicit(&n_exported, x->body_spans, memory_order_relaxed);
        check_partial_success(x);
        if (x->attempt > 0)
            lg_log(LG_LOG_INFO, "otlp", "export to %s recovered after %d retries", x->log_url,
                   x->attempt);
        body_done(x);
        return;
    }
    int64_t now = lg_mono_us();
    if (retry) {
        /* Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... capped at 10 s, each
         * scaled by a random factor in [0.5, 1.5); Retry-After wins when longer. */
        int shift = x->attempt < 5 ? x->attempt : 5;
        int64_t delay = (int64_t)500000 << shift;
        if (delay > 10000000)
            delay = 10000000;
        delay = (int64_t)((double)delay * (0.5 + lg_trace_random_unit()));
        if (curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
            retry_after > 0) {
            int64_t ra = (int64_t)(retry_after > 60 ? 60 : retry_after) * 1000000;
            if (ra > delay)
                delay = ra;
        }
        x->attempt++;
        if (now + delay - x->first_try <= (int64_t)x->max_retry_ms * 1000) {
            if (x->attempt == 1)
                lg_log(LG_LOG_WARN, "otlp", "export of %zu spans to %s failed (%s); retrying",
                       x->body_spans, x->log_url, why);
            x->retry_at = now + delay;
            return;
        }
    }
    atomic_fetch_add_explicit(&n_drop_export, x->body_spans, memory_order_relaxed);
    lg_log(LG_LOG_WARN, "otlp", "dropped %zu spans: export to %s failed (%s)%s", x->body_spans,
           x->log_url, why, retry ? " and retries ran out" : "");
    body_done(x);
}

static void *exporter_main(void *arg)
{
    exporter_t *x = arg;
    lg_span_t **batch = lg_xcalloc(x->batch_max, sizeof(*batch));
    int64_t interval = (int64_t)x->interval_ms * 1000;
    int64_t next_flush = lg_mono_us() + interval, deadline = 0;

    for (;;) {
        int64_t now = lg_mono_us(), wake;
        int still, q;
        CURLMsg *m;

        if (deadline == 0 && atomic_load(&x->stop)) {
            int ms = atomic_load(&x->flush_ms);
            deadline = now + (ms > 0 ? (int64_t)ms * 1000 : 1);
        }
        if (deadline && now >= deadline)
            break;
        if (!x->busy) {
            if (x->body) {
                if (now >= x->retry_at)
                    send_body(x);
            } else if (deadline || now >= next_flush || queue_depth(x) >= x->batch_max) {
                if (take_batch(x, batch) > 0)
                    send_body(x);
                else if (deadline && queue_depth(x) == 0)
                    break; /* stopping, and everything has been exported */
                next_flush = now + interval;
            }
        }
        curl_multi_perform(x->multi, &still);
        while ((m = curl_multi_info_read(x->multi, &q)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            CURLcode rc = m->data.result;
            curl_multi_remove_handle(x->multi, x->easy);
            x->busy = 0;
            on_done(x, rc);
        }
        if (!x->busy && x->body == NULL && (deadline || queue_depth(x) >= x->batch_max))
            continue; /* more to send right away */
        /* Sleep until the next thing this loop must do. While a request is in flight
         * or a batch waits for its retry, the flush interval is irrelevant (and would
         * already be in the past: waking for it would spin). */
        if (x->busy) {
            long ct = -1;
            curl_multi_timeout(x->multi, &ct);
            wake = now + (ct >= 0 && ct < 1000 ? (int64_t)ct * 1000 : 1000000);
        } else if (x->body) {
            wake = x->retry_at;
        } else {
            wake = next_flush;
        }
        if (deadline && deadline < wake)
            wake = deadline;
        int64_t ms = (wake - now) / 1000 + 1;
        if (ms > 1000)
            ms = 1000;
        if (ms < 0)
            ms = 0;
        curl_multi_poll(x->multi, NULL, 0, (int)ms, NULL);
    }
    if (x->busy) {
        curl_multi_remove_handle(x->multi, x->easy);
        x->busy = 0;
    }
    if (x->body) {
        atomic_fetch_add_explicit(&n_drop_export, x->body_spans, memory_order_relaxed);
        lg_log(LG_LOG_WARN, "otlp", "dropped %zu spans still unexported at shutdown",
               x->body_spans);
        body_done(x);
    }
    free(batch);
    return NULL;
}

/* ---- Start / stop ---- */

static void exporter_free(exporter_t *x)
{
    lg_span_t *sp;

    if (x == NULL)
        return;
    if (x->cells) {
        size_t left = 0;
        while ((sp = queue_pop(x)) != NULL) {
            lg_span_free(sp);
            left++;
        }
        if (left)
            atomic_fetch_add_explicit(&n_drop_queue, left, memory_order_relaxed);
    }
    if (x->easy)
        curl_easy_cleanup(x->easy);
    if (x->multi)
        curl_multi_cleanup(x->multi);
    curl_slist_free_all(x->hdrs);
    lg_span_free(x->resource);
    free(x->cells);
    free(x->url);
    free(x->log_url);
    free(x->buf);
    free(x->resp);
    free(x);
}

int lg_otlp_start(const lg_otlp_opts_t *o, lg_err_t *err)
{
    static const lg_otlp_opts_t defaults;
    exporter_t *x;
    const char *endpoint, *v;
    int no_env, as_is = 0;
    size_t cap;

    if (X != NULL)
        return lg_err_set(err, 0, "OTLP exporter already running");
    if (o == NULL)
        o = &defaults;
    no_env = o->no_env;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return lg_err_set(err, 0, "curl_global_init failed");
    x = lg_xcalloc(1, sizeof(*x));

    /* protocol: OTLP_PROTOCOL > options > OTEL_..._TRACES_PROTOCOL > OTEL_..._PROTOCOL */
    x->protocol = parse_protocol(env_nonempty("OTLP_PROTOCOL", no_env));
    if (x->protocol == LG_OTLP_DEFAULT)
        x->protocol = o->protocol;
    if (x->protocol == LG_OTLP_DEFAULT)
        x->protocol = parse_protocol(env_nonempty("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", no_env));
    if (x->protocol == LG_OTLP_DEFAULT)
        x->protocol = parse_protocol(env_nonempty("OTEL_EXPORTER_OTLP_PROTOCOL", no_env));

    /* endpoint: OTLP_ENDPOINT > options > OTEL_..._TRACES_ENDPOINT (as-is) > OTEL_..._ENDPOINT */
    endpoint = env_nonempty("OTLP_ENDPOINT", no_env);
    if (endpoint == NULL)
        endpoint = o->endpoint && *o->endpoint ? o->endpoint : NULL;
    if (endpoint == NULL &&
        (endpoint = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", no_env)) != NULL)
        as_is = 1;
    if (endpoint == NULL)
        endpoint = env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT", no_env);
    if (endpoint == NULL)
        endpoint = x->protocol == LG_OTLP_HTTP ? "http://localhost:4318" : "http://localhost:4317";
    if (o->endpoint_as_is)
        as_is = 1;
    if (resolve_url(x, endpoint, as_is, o->path, err) != LG_OK)
        goto fail;

    /* timeout: options > OTEL_..._TRACES_TIMEOUT > OTEL_..._TIMEOUT (milliseconds) */
    x->timeout_ms = o->timeout_ms;
    if (x->timeout_ms <= 0 && (v = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", no_env)))
        x->timeout_ms = atoi(v);
    if (x->timeout_ms <= 0 && (v = env_nonempty("OTEL_EXPORTER_OTLP_TIMEOUT", no_env)))
        x->timeout_ms = atoi(v);
    if (x->timeout_ms <= 0)
        x->timeout_ms = 10000;
    x->batch_max = o->batch_max ? o->batch_max : 512;
    x->interval_ms = o->batch_interval_ms > 0 ? o->batch_interval_ms : 500;
    x->max_retry_ms = o->max_retry_ms > 0 ? o->max_retry_ms : 60000;

    /* queue: a power of two, at least one batch */
    cap = o->queue_max ? o->queue_max : 2048;
    if (cap < 2)
        cap = 2;
    {
        size_t p = 1;
        while (p < cap)
            p <<= 1;
        cap = p;
    }
    x->cells = lg_xcalloc(cap, sizeof(cell_t));
    for (size_t i = 0; i < cap; i++)
        atomic_init(&x->cells[i].seq, i);
    x->mask = cap - 1;
    atomic_init(&x->enq, 0);
    x->deq = 0;

    /* headers: options, then OTLP_HEADERS or OTEL_..._TRACES_HEADERS or OTEL_..._HEADERS */
    if (x->protocol == LG_OTLP_GRPC) {
        x->hdrs = curl_slist_append(x->hdrs, "Content-Type: application/grpc");
        x->hdrs = curl_slist_append(x->hdrs, "TE: trailers");
        char t[48];
        snprintf(t, sizeof(t), "grpc-timeout: %dm", x->timeout_ms);
        x->hdrs = curl_slist_append(x->hdrs, t);
    } else {
        x->hdrs = curl_slist_append(x->hdrs, "Content-Type: application/x-protobuf");
    }
    x->hdrs = curl_slist_append(x->hdrs, "Expect:");
    for (size_t i = 0; i < o->nheaders; i++)
        add_header(x, o->headers[i]);
    if ((v = env_nonempty("OTLP_HEADERS", no_env)) != NULL ||
        (v = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_HEADERS", no_env)) != NULL ||
        (v = env_nonempty("OTEL_EXPORTER_OTLP_HEADERS", no_env)) != NULL)
        env_headers(x, v);

    x->resource = resource_build(o);

    x->multi = curl_multi_init();
    x->easy = curl_easy_init();
    if (x->multi == NULL || x->easy == NULL) {
        lg_err_set(err, 0, "curl init failed");
        goto fail;
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, x->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "lunagate-otlp/" LG_VERSION);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)x->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(x->timeout_ms < 5000 ? x->timeout_ms : 5000));
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (x->protocol == LG_OTLP_GRPC && strncmp(x->url, "http:", 5) == 0 &&
        curl_version_info(CURLVERSION_NOW)->version_num < 0x080000)
        /* libcurl before 8.0 breaks a reused prior-knowledge h2c connection ("Error in the
         * HTTP2 framing layer", curl PR #10643): open a new connection per export. */
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    if (x->protocol == LG_OTLP_GRPC)
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                         strncmp(x->url, "https:", 6) == 0
                             ? (long)CURL_HTTP_VERSION_2TLS
                             : (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE);
    else
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                         strncmp(x->url, "https:", 6) == 0 ? (long)CURL_HTTP_VERSION_2TLS
                                                           : (long)CURL_HTTP_VERSION_1_1);

    atomic_store(&x->stop, 0);
    if (pthread_create(&x->thread, NULL, exporter_main, x) != 0) {
        lg_err_set(err, 0, "cannot start the OTLP exporter thread");
        goto fail;
    }
    X = x;
    atomic_store(&pooling, 1);
    atomic_store_explicit(&running, 1, memory_order_release);
    lg_log(LG_LOG_INFO, "otlp", "exporting spans to %s (%s)", x->log_url,
           x->protocol == LG_OTLP_GRPC ? "grpc" : "http/protobuf");
    return LG_OK;
fail:
    exporter_free(x);
    curl_global_cleanup();
    return LG_ERR;
}

void lg_otlp_stop(int flush_ms)
{
    exporter_t *x = X;

    if (x == NULL)
        return;
    atomic_store_explicit(&running, 0, memory_order_release);
    atomic_store(&x->flush_ms, flush_ms);
    atomic_store(&x->stop, 1);
    curl_multi_wakeup(x->multi);
    pthread_join(x->thread, NULL);
    X = NULL;
    exporter_free(x);
    pool_drain();
    curl_global_cleanup();
}
