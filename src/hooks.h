/* hooks.h -- the request record shared by the HTTP engine (proxy.c) and the layers that
 * decide (hooks.c: CORS, plugins, LLM providers, telemetry).
 * SPDX-License-Identifier: MIT
 *
 * The proxy calls the lg_hooks_* functions at fixed points of a request; each returns
 * quickly when the route needs nothing from it, so the plain path stays plain. */
#ifndef LG_HOOKS_H
#define LG_HOOKS_H

#include <event2/buffer.h>
#include <http_parser.h> /* enum http_method */

#include "h1.h"
#include <stdint.h>

#include "conf.h"
#include "upstream.h"
#include "worker.h"

/* How a response body reaches the client: not at all, verbatim, re-chunked, as is to the
 * close (HTTP/1.0), or rewritten in one piece with a fresh Content-Length (LG_FWD_WHOLE). */
enum { LG_FWD_NONE = 0, LG_FWD_RAW, LG_FWD_CHUNK, LG_FWD_PLAIN, LG_FWD_WHOLE };

typedef struct lg_req lg_req_t;

struct lg_req {
    lg_worker_t *w;
    struct lg_conn *conn;
    const char *src; /* client "ip:port" (owned by the connection) */
    lg_conf_t *conf; /* reference held for the request's life */
    lg_bind_t *bind;
    lg_listener_t *listener;
    lg_route_t *route;
    const lg_backend_t *backend;
    lg_backend_t dyn_backend; /* for backends chosen at run time (LLM providers) */

    /* request head, copied once; slices point into `head` */
    char *head;
    size_t head_len;
    lg_hslice_t *hdrs;
    size_t nhdrs;
    const char *url, *path, *query, *host;
    size_t url_len, path_len, query_len, host_len, hostname_len;
    size_t matched_prefix_len;
    int method, vmajor, vminor, keepalive, has_cl, chunked_req;
    uint64_t content_length;
    int body_done, too_large, dispatched;
    struct evbuffer *body;

    /* changes made before forwarding (plugins, LLM layer) */
    char *up_path;   /* replaces path?query */
    char *up_method; /* replaces the method */
    int status_override;
    char *up_host;        /* replaces Host */
    int up_static;        /* up_path and up_host belong to a native LLM plan: not freed */
    const lg_kv_t *fixed; /* more request headers, plan-owned (native LLM path) */
    size_t nfixed;
    lg_kv_t *extra, *rextra; /* extra request / response headers (owned by hooks) */
    size_t nextra, nrextra;
    char traceparent[64]; /* written to the upstream when sampled */
    /* tracing */
    int traced;     /* a SERVER span will be exported */
    int has_parent; /* the client sent a valid traceparent */
    uint8_t trace_id[16], span_id[8], parent_id[8], client_span_id[8];
    uint8_t trace_flags;

    /* upstream */
    lg_upconn_t *up;
    int attempt, retry_count, pending_connect, stale_retry;
    lg_h1_body_t rbody; /* the response body's framing */
    size_t rlast;       /* upstream input already searched for the end of the head */
    int rp_state;       /* 0 head, 1 body, 2 complete */
    char *rhead;
    size_t rhead_len;
    lg_hslice_t *rhdrs;
    size_t nrhdrs;
    int status;
    const char *status_text;
    int up_keepalive, up_chunked, up_has_cl;
    uint64_t up_cl;
    int fwd_mode, resp_head_sent, resp_done, paused, observe;
    struct evbuffer *body_out; /* where decoded-mode body bytes go during relay */
    uint64_t resp_bytes;

    struct event *timer;
    int timer_kind;

    int64_t start_us, end_us, start_mono, end_mono, up_sent_mono, first_byte_mono;
    int64_t connect_us;
    const char *reason;
    char *error;
    int client_gone, finished;

    void *lua;           /* per-request state of hooks.c */
    lg_req_t *next_free; /* in the worker's request cache */

    /* Storage for the usual heads, last: a reused request is cleared only up to here. */
    char head_buf[1024], rhead_buf[1024];
    lg_hslice_t hdrs_buf[24], rhdrs_buf[24];
};

/* proxy.c services for hooks */
const char *lg_req_header(lg_req_t *r, const char *name, size_t nlen, size_t *vlen);
const char *lg_resp_header(lg_req_t *r, const char *name, size_t nlen, size_t *vlen);
void lg_req_respond(lg_req_t *r, int status, const char *ctype, const char *body, size_t blen,
                    const lg_kv_t *extra, size_t nextra);
void lg_req_emit(lg_req_t *r, const char *data, size_t len, struct evbuffer *out);

/* lapi_request.c: header tables and changes shared with hooks.c and lapi_response.c */
struct lua_State;
void lg_lapi_push_headers(struct lua_State *L, const char *base, lg_hslice_t *hdrs, size_t n,
                          lg_kv_t *extra, size_t nextra);
void lg_lapi_header_change(lg_hslice_t *hdrs, size_t n, const char *base, lg_kv_t **extra,
                           size_t *nextra, const char *name, size_t nlen, const char *value,
                           size_t vlen);

/* hooks.c */
int lg_hooks_cors_preflight(lg_req_t *r); /* 1: answered */
void lg_hooks_cors_headers(lg_req_t *r, struct evbuffer *out);
int lg_hooks_access(lg_req_t *r);        /* LG_OK: continue; else answered */
void lg_hooks_trace_start(lg_req_t *r);  /* sampling decision, ids, traceparent */
int lg_hooks_header_filter(lg_req_t *r); /* LG_OK, or answered with an error */
/* header_filter and body_filter over a whole body at once: LG_OK (filtered body added to
 * `out`), LG_ERR (answered with an error), LG_DECLINED (not taken: filter as usual). */
int lg_hooks_header_body(lg_req_t *r, const char *body, size_t len, struct evbuffer *out);
int lg_hooks_body_rewrites(lg_req_t *r); /* 1: body passes through hooks */
/* Body bytes in decoded mode (eof=1 with no data at the end); emits into out. */
void lg_hooks_body(lg_req_t *r, const char *data, size_t len, int eof, struct evbuffer *out);
/* Writes an error body in the client's API shape; returns 0 to use the default. */
int lg_hooks_error_body(lg_req_t *r, int status, const char *msg, const char *type,
                        struct evbuffer *out);
void lg_hooks_log(lg_req_t *r);
int lg_hooks_body_observes(lg_req_t *r); /* 1: body is relayed verbatim but inspected */
/* Shows relayed body bytes to the LLM layer. eof may come with the last bytes of a sized
 * body, and a final call with no bytes and eof always follows. */
void lg_hooks_observe(lg_req_t *r, const char *data, size_t len, int eof);
/* Builds a worker runtime for `conf` off-line to check plugins and LLM backends. */
int lg_hooks_check(lg_conf_t *conf, lg_err_t *err);
int lg_hooks_fast_log(lg_req_t *r);

/* 1 when the span of traced request `r` has only the default attributes, which the C core
 * builds itself (glue.span_fast(), and no LLM, MCP or plugin record). */
int lg_hooks_span_fast(lg_req_t *r);

/* What the log line and the GenAI metrics of an LLM request use (strings borrowed). */
typedef struct lg_llm_log {
    const char *operation, *provider, *req_model, *resp_model;
    int64_t in, out, cached_in, cache_write;
    int has_in, has_out, has_cached_in, has_cache_write;
    double ttft, tpot;
    int has_ttft, has_tpot;
} lg_llm_log_t;

/* For a request the C core served on its own LLM path (llmnative.c): fills *f and returns
 * LG_OK; LG_DECLINED for any other request. Strings stay valid until the request is freed. */
int lg_hooks_native_llm(lg_req_t *r, lg_llm_log_t *f);
int lg_hooks_glue_llm(lg_req_t *r, int (*consume)(struct lua_State *L, lg_req_t *r, void *arg),
                      void *arg);
int lg_hooks_glue_span(lg_req_t *r,
                       void (*push_fields)(struct lua_State *L, lg_req_t *r, void *arg), void *arg,
                       int (*consume)(struct lua_State *L, lg_req_t *r, void *arg));
void lg_hooks_push_request_headers(struct lua_State *L, lg_req_t *r);
struct lua_State;
int lg_hooks_glue_log(lg_req_t *r, void (*push_fields)(struct lua_State *L, lg_req_t *r, void *arg),
                      void *arg, int (*consume)(struct lua_State *L, lg_req_t *r, void *arg));

/* proxy.c: responses produced piece by piece (local streaming answers) */
void lg_req_stream_head(lg_req_t *r, int status, const lg_kv_t *hdrs, size_t n);
void lg_req_stream_data(lg_req_t *r, const char *data, size_t len);
void lg_req_stream_end(lg_req_t *r);
/* keep the request's connection alive across a callback that may finish it */
void lg_req_hold(lg_req_t *r);
void lg_req_release(lg_req_t *r);
void lg_hooks_req_free(lg_req_t *r);

#endif
