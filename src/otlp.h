/* otlp.h -- the span model, OTLP protobuf encoding, and the batching exporter thread.
 * SPDX-License-Identifier: MIT
 *
 * Data path: a worker fills an lg_span_t and hands it to lg_otlp_submit(), which never
 * blocks: it pushes the pointer onto a bounded lock-free MPSC queue, or frees the span
 * and counts a drop when the queue is full. One exporter thread pops batches, encodes an
 * ExportTraceServiceRequest and POSTs it with libcurl (OTLP/gRPC over HTTP/2, or
 * OTLP/HTTP protobuf), retrying retryable failures with exponential backoff and jitter.
 * While a batch waits for a retry the queue keeps its bound, so a dead collector costs
 * at most queue_max spans plus one encoded batch of memory; everything else is dropped
 * and counted.
 *
 * Threading: lg_span_* functions touch only their own span (one thread at a time).
 * lg_otlp_submit(), lg_otlp_dropped() and lg_otlp_stats() are thread-safe.
 * lg_otlp_start() and lg_otlp_stop() are called from the main thread only, and
 * lg_otlp_stop() must not run concurrently with lg_otlp_submit() (stop the workers
 * first). Headers given in the options are sent on every export and never logged. */
#ifndef LG_OTLP_H
#define LG_OTLP_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- Span model ---- */

enum { LG_SPAN_KIND_INTERNAL = 1, LG_SPAN_KIND_SERVER = 2, LG_SPAN_KIND_CLIENT = 3 };
enum { LG_SPAN_STATUS_UNSET = 0, LG_SPAN_STATUS_OK = 1, LG_SPAN_STATUS_ERROR = 2 };

/* OTLP Span.flags: bits 0-7 are the W3C trace-flags; set HAS_IS_REMOTE always and
 * IS_REMOTE when the parent came from an incoming traceparent:
 *     sp->flags = LG_SPAN_FLAG_HAS_IS_REMOTE | (remote ? LG_SPAN_FLAG_IS_REMOTE : 0) | tf; */
#define LG_SPAN_FLAG_HAS_IS_REMOTE 0x100u
#define LG_SPAN_FLAG_IS_REMOTE     0x200u

typedef struct lg_span_chunk lg_span_chunk_t; /* private arena block */

/* The plain fields are filled directly by the caller; strings and attributes are set
 * through the functions below, which copy into the span's own arena (one allocation
 * for a typical span). Fields starting with `_` are private. */
typedef struct lg_span {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8]; /* all-zero = root span (encoded as empty) */
    int kind;                  /* LG_SPAN_KIND_* */
    uint64_t start_ns;         /* unix epoch nanoseconds */
    uint64_t end_ns;
    int status_code;  /* LG_SPAN_STATUS_* */
    uint32_t flags;   /* see LG_SPAN_FLAG_*; 0 is sent as 0 (unknown) */
    const char *name; /* set with lg_span_set_name(); points into the arena */
    const char *status_message;
    const char *trace_state;
    /* private */
    void **_attrs; /* the resource's: Opentelemetry__Proto__Common__V1__KeyValue * */
    size_t _nattrs, _capattrs;
    uint8_t *_kv; /* a span's: already encoded, as repeated Span.attributes (field 9) */
    size_t _kvlen, _kvcap, _nkv;
    void (*_finish)(struct lg_span *sp, void *arg); /* lg_span_defer() */
    void *_finish_arg;
    lg_span_chunk_t *_arena;
} lg_span_t;

/* Allocates an empty span (all ids zero, kind INTERNAL, status UNSET). Aborts on OOM.
 * The caller owns it until lg_otlp_submit(), and frees it with lg_span_free() if it is
 * never submitted. */
lg_span_t *lg_span_new(void);
void lg_span_free(lg_span_t *sp); /* NULL is a no-op */

/* Copy `len` bytes of `name` / `msg` / `ts` (borrowed) into the span. */
void lg_span_set_name(lg_span_t *sp, const char *name, size_t len);
void lg_span_set_status(lg_span_t *sp, int code, const char *msg, size_t len); /* msg may be NULL */
void lg_span_set_trace_state(lg_span_t *sp, const char *ts, size_t len);

/* Append an attribute. `key` and values are borrowed and copied. Keys should be unique
 * per span (OTLP requires it; these functions do not check). A string value is cut at
 * its first NUL byte. Arrays stay arrays (AnyValue.array_value). */
void lg_span_attr_str(lg_span_t *sp, const char *key, const char *val, size_t len);
void lg_span_attr_int(lg_span_t *sp, const char *key, int64_t v);
void lg_span_attr_double(lg_span_t *sp, const char *key, double v);
void lg_span_attr_bool(lg_span_t *sp, const char *key, int v);
void lg_span_attr_str_array(lg_span_t *sp, const char *key, const char *const *vals, size_t n);
/* The same with the key's length given and the string value taken as exactly `len` bytes
 * (no NUL cut), for the gateway's own attributes; lg_span_lit_* take a literal key. */
void lg_span_attr_strn(lg_span_t *sp, const char *key, size_t klen, const char *val, size_t len);
void lg_span_attr_intn(lg_span_t *sp, const char *key, size_t klen, int64_t v);

/* lg_span_attr_strn's common case, inlined so that a literal key is copied by a few moves:
 * every length fits one byte and the span's attribute bytes have room. */
static inline void lg_span_str_inline(lg_span_t *sp, const char *key, size_t klen, const char *val,
                                      size_t len)
{
    size_t need = 8 + klen + len;
    if (!klen || klen + len >= 122 || sp->_kvlen + need > sp->_kvcap) {
        lg_span_attr_strn(sp, key, klen, val, len);
        return;
    }
    uint8_t *p = sp->_kv + sp->_kvlen;
    sp->_kvlen += need;
    sp->_nkv++;
    p[0] = 9 << 3 | 2; /* Span.attributes, length-delimited */
    p[1] = (uint8_t)(6 + klen + len);
    p[2] = 1 << 3 | 2; /* KeyValue.key */
    p[3] = (uint8_t)klen;
    memcpy(p + 4, key, klen);
    p += 4 + klen;
    p[0] = 2 << 3 | 2; /* KeyValue.value */
    p[1] = (uint8_t)(2 + len);
    p[2] = 1 << 3 | 2; /* AnyValue.string_value */
    p[3] = (uint8_t)len;
    if (len)
        memcpy(p + 4, val, len);
}

/* The same for lg_span_attr_intn. */
static inline void lg_span_int_inline(lg_span_t *sp, const char *key, size_t klen, int64_t v)
{
    uint64_t u = (uint64_t)v;
    size_t vn = 1;
    while (vn < 10 && u >> (7 * vn))
        vn++;
    size_t need = 7 + klen + vn;
    if (!klen || klen >= 100 || sp->_kvlen + need > sp->_kvcap) {
        lg_span_attr_intn(sp, key, klen, v);
        return;
    }
    uint8_t *p = sp->_kv + sp->_kvlen;
    sp->_kvlen += need;
    sp->_nkv++;
    p[0] = 9 << 3 | 2;
    p[1] = (uint8_t)(5 + klen + vn);
    p[2] = 1 << 3 | 2;
    p[3] = (uint8_t)klen;
    memcpy(p + 4, key, klen);
    p += 4 + klen;
    p[0] = 2 << 3 | 2;
    p[1] = (uint8_t)(1 + vn);
    p[2] = 3 << 3 | 0; /* AnyValue.int_value, varint */
    p += 3;
    while (u >= 0x80) {
        *p++ = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    *p = (uint8_t)u;
}
#define lg_span_lit_str(sp, key, val, len) lg_span_str_inline(sp, "" key, sizeof(key) - 1, val, len)
#define lg_span_lit_int(sp, key, v)        lg_span_int_inline(sp, "" key, sizeof(key) - 1, v)
void lg_span_attr_int_array(lg_span_t *sp, const char *key, const int64_t *vals, size_t n);

size_t lg_span_attr_count(const lg_span_t *sp);

/* Copies len bytes of s (borrowed) into the span, NUL-terminated; with s NULL, returns
 * len bytes of room (and the NUL) to fill in. */
char *lg_span_copy(lg_span_t *sp, const char *s, size_t len);
/* Reserves n zeroed bytes in the span for `fn`, which the exporter thread calls with them
 * before it encodes the span (or lg_otlp_encode does): it may set the name and add
 * attributes. Lets a worker hand over a few copied values and leave the formatting to the
 * exporter. Whatever `fn` reads must live in the span (lg_span_copy). */
void *lg_span_defer(lg_span_t *sp, void (*fn)(lg_span_t *sp, void *arg), size_t n);

/* ---- Exporter ---- */

enum { LG_OTLP_DEFAULT = 0, LG_OTLP_GRPC = 1, LG_OTLP_HTTP = 2 }; /* DEFAULT: env, else gRPC */

/* All pointers are borrowed for the duration of lg_otlp_start(), which copies them.
 * Zero / NULL fields take the default shown. Unless `no_env` is set, environment
 * variables fill in what the options leave unset; precedence for each setting is
 *     OTLP_* (agentgateway's own) > options > OTEL_EXPORTER_OTLP_TRACES_* >
 *     OTEL_EXPORTER_OTLP_* > default
 * (OTLP_ENDPOINT, OTLP_PROTOCOL, OTLP_HEADERS; _ENDPOINT/_PROTOCOL/_HEADERS/_TIMEOUT
 * for the OTEL_ forms). A per-signal OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as-is
 * (OTel rule); every other endpoint is a base URL. Env headers are added after option
 * headers. */
typedef struct lg_otlp_opts {
    const char *endpoint;       /* http://, https://, grpc:// (= h2c, default port 4317) or
                                   host:port (http). Default http://localhost:4317 (gRPC) or
                                   http://localhost:4318 (HTTP). */
    int protocol;               /* LG_OTLP_GRPC or LG_OTLP_HTTP; 0 = env, else gRPC */
    const char *path;           /* HTTP only: NULL appends "/v1/traces" to the endpoint's path;
                                   "/x" replaces the path. gRPC always uses the service path. */
    int endpoint_as_is;         /* HTTP only: post to `endpoint` unchanged */
    const char *const *headers; /* "Name: value" strings, sent on every export */
    size_t nheaders;
    size_t queue_max;         /* spans; default 2048; rounded up to a power of two */
    size_t batch_max;         /* spans per export; default 512 */
    int batch_interval_ms;    /* default 500 */
    int timeout_ms;           /* per export attempt; default 10000 (OTEL_EXPORTER_OTLP_TIMEOUT) */
    int max_retry_ms;         /* give a batch up after retrying this long; default 60000 */
    const char *service_name; /* default OTEL_SERVICE_NAME, else "lunagate" */
    const char *const *resource_attrs; /* key, value, key, value, ... (2*n strings); win
                                          over OTEL_RESOURCE_ATTRIBUTES and k8s env */
    size_t nresource_attrs;            /* number of pairs */
    int no_env;                        /* ignore the environment entirely (tests) */
} lg_otlp_opts_t;

typedef struct lg_otlp_stats {
    uint64_t submitted;      /* accepted into the queue */
    uint64_t exported;       /* acknowledged by the collector */
    uint64_t dropped_queue;  /* queue full, or left over at stop */
    uint64_t dropped_export; /* export failed for good (non-retryable, retries exhausted) */
    uint64_t rejected;       /* partial_success.rejected_spans reported by the collector */
    uint64_t batches_sent;   /* export attempts, retries included */
} lg_otlp_stats_t;

/* Resolves the options (and environment), builds the resource and starts the exporter
 * thread. Returns LG_OK, or LG_ERR with `err` filled (bad endpoint, already running,
 * thread or curl failure). The resource gets service.name, service.version,
 * OTEL_RESOURCE_ATTRIBUTES and Kubernetes downward-API variables: POD_NAME ->
 * k8s.pod.name, POD_NAMESPACE -> k8s.namespace.name, NODE_NAME -> k8s.node.name,
 * POD_IP -> k8s.pod.ip, POD_UID -> k8s.pod.uid (POD_NAME is also service.instance.id). */
int lg_otlp_start(const lg_otlp_opts_t *opts, lg_err_t *err);

/* Takes ownership of `sp` in every case. Never blocks. Returns LG_OK when queued,
 * LG_AGAIN when the queue was full (span freed, drop counted), LG_DECLINED when the
 * exporter is not running (span freed, nothing counted). Thread-safe. */
int lg_otlp_submit(lg_span_t *sp);

/* Spans dropped so far: queue overflow plus failed exports (the lead exports this as
 * agentgateway_spans_dropped_total). Thread-safe; counts survive stop/start. */
uint64_t lg_otlp_dropped(void);
void lg_otlp_stats(lg_otlp_stats_t *out);

/* Stops accepting spans, exports what it can within `flush_ms` (in-flight requests are
 * cancelled at the deadline), drops and counts the rest, joins the thread. Returns
 * within roughly flush_ms + 100 ms whatever the collector does. No-op when not running. */
void lg_otlp_stop(int flush_ms);

/* Encodes `n` spans (borrowed) with the running exporter's resource (or a default one)
 * as a serialized ExportTraceServiceRequest. Returns a buffer of *len bytes that the
 * caller frees with free(). For tests and tools. */
uint8_t *lg_otlp_encode(lg_span_t *const *spans, size_t n, size_t *len);

#endif
