/* proxy.c -- the request lifecycle on bufferevents and http-parser.
 * SPDX-License-Identifier: MIT
 *
 * The plain path is kept close to zero work: the request head is copied once into the
 * request (a few hundred bytes) and parsed in place, the upstream head is written in one
 * buffer, and response body bytes are moved verbatim from the upstream's input buffer to
 * the client (chunk framing included) while http-parser only watches for the end of the
 * message. When nothing is queued for the client we write straight to its socket instead of
 * waiting a loop turn for EV_WRITE.
 *
 * Lifetime: a connection (lg_conn_t) owns at most one request at a time (pipelined
 * requests wait in the input buffer). A request owns its upstream connection until it
 * hands it back to the pool. Every request ends in req_finish(), exactly once, which runs
 * the log phase. Connections are freed only at the end of a top-level libevent callback
 * (conn_release), never in the middle of a chain that still uses them. */
#include "proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hooks.h"
#include "runtime.h"

#define OUT_HIGH        (4 * 1024 * 1024) /* pause the upstream when this much waits for the client */
#define OUT_LOW         (256 * 1024)
#define WRITE_TIMEOUT_S 60

typedef struct lg_conn lg_conn_t;

/* ---- Connections ---- */

struct lg_conn {
    lg_worker_t *w;
    struct bufferevent *bev;
    evutil_socket_t fd;
    int tls;
    int port;
    char src[64];
    lg_h1_body_t body; /* the request body's framing */
    size_t hlast;      /* input already searched for the end of the next head */
    lg_req_t *req;
    lg_req_t *done_req; /* finished request waiting to be freed at callback end */
    int busy;           /* inside a callback: defer frees */
    int closing;        /* free at the end of the current callback */
    int close_after_flush;
    int64_t deadline; /* monotonic us: the idle or slow-client cut-off (0: none) */
    lg_conn_t *next, *prev;
};

static void conn_close(lg_conn_t *c);
static void req_finish(lg_req_t *r);
static void req_fail(lg_req_t *r, int status, const char *reason, const char *msg);
static void upstream_start(lg_req_t *r);
static void process_input(lg_conn_t *c);
static void send_buffer(lg_conn_t *c, struct evbuffer *buf);

static void conn_link(lg_worker_t *w, lg_conn_t *c)
{
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
}

static void conn_unlink(lg_conn_t *c)
{
    lg_worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
}

static void req_free(lg_req_t *r);

/* Frees the connection if it was marked closing; call at the end of every top-level
 * callback. */
static void conn_release(lg_conn_t *c)
{
    if (--c->busy > 0)
        return;
    if (c->done_req) {
        req_free(c->done_req);
        c->done_req = NULL;
    }
    if (!c->closing)
        return;
    if (c->req) {
        /* a request still attached means the client went away mid-request */
        lg_req_t *r = c->req;
        r->client_gone = 1;
        req_finish(r);
        if (c->done_req) {
            req_free(c->done_req);
            c->done_req = NULL;
        }
    }
    conn_unlink(c);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
}

static void conn_close(lg_conn_t *c)
{
    c->closing = 1;
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
}

/* ---- Output ---- */

/* Sends `buf` (drained) to the client: straight to the socket when nothing is queued,
 * the remainder through the bufferevent. */
static void send_buffer(lg_conn_t *c, struct evbuffer *buf)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!c->tls && evbuffer_get_length(out) == 0) {
        while (evbuffer_get_length(buf) > 0) {
            int n = evbuffer_write(buf, c->fd);
            if (n <= 0)
                break;
        }
    }
    if (evbuffer_get_length(buf) > 0)
        bufferevent_write_buffer(c->bev, buf);
}

void lg_json_error(struct evbuffer *out, const char *message, const char *type)
{
    evbuffer_add(out, "{\"error\":{\"message\":\"", 21);
    for (const unsigned char *p = (const unsigned char *)message; *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(out, "\\%c", *p);
        else if (*p < 0x20)
            evbuffer_add_printf(out, "\\u%04x", *p);
        else
            evbuffer_add(out, p, 1);
    }
    evbuffer_add_printf(out, "\",\"type\":\"%s\"}}", type);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}

/* ---- Header helpers ---- */

static int is_hop_by_hop(const char *n, size_t l)
{
    switch (l) {
    case 2:
        return strncasecmp(n, "te", 2) == 0;
    case 7:
        return strncasecmp(n, "trailer", 7) == 0 || strncasecmp(n, "upgrade", 7) == 0;
    case 10:
        return strncasecmp(n, "connection", 10) == 0 || strncasecmp(n, "keep-alive", 10) == 0;
    case 16:
        return strncasecmp(n, "proxy-connection", 16) == 0;
    case 17:
        return strncasecmp(n, "transfer-encoding", 17) == 0;
    default:
        return 0;
    }
}

/* The next token of a Connection value at *pp (separators: comma and OWS); its length in
 * *len, 0 at the end. */
static const char *conn_token(const char **pp, const char *end, size_t *len)
{
    const char *p = *pp;
    while (p < end && (*p == ' ' || *p == ',' || *p == '\t'))
        p++;
    const char *s = p;
    while (p < end && *p != ',' && *p != ' ' && *p != '\t')
        p++;
    *pp = p;
    *len = (size_t)(p - s);
    return s;
}

/* Is `name` listed in a Connection header value (which names more hop-by-hop headers)? */
static int in_connection_list(const char *conn, size_t clen, const char *n, size_t l)
{
    const char *p = conn, *end = conn + clen, *s;
    size_t tl;
    while ((s = conn_token(&p, end, &tl)), tl)
        if (tl == l && strncasecmp(s, n, l) == 0)
            return 1;
    return 0;
}

/* A Connection value naming only "keep-alive" and "close" (the usual case) lists no other
 * header: NULL then, so the per-header check can be skipped. */
static const char *connection_list(const char *v, size_t len)
{
    if (!v)
        return NULL;
    const char *p = v, *end = v + len, *s;
    size_t l;
    while ((s = conn_token(&p, end, &l)), l)
        if (!(l == 10 && strncasecmp(s, "keep-alive", 10) == 0) &&
            !(l == 5 && strncasecmp(s, "close", 5) == 0))
            return v;
    return NULL;
}

static int mod_touches(const lg_hdr_mod_t *m, const char *n, size_t l)
{
    if (!m)
        return 0;
    for (size_t i = 0; i < m->nremove; i++)
        if (strlen(m->remove[i]) == l && strncasecmp(m->remove[i], n, l) == 0)
            return 1;
    for (size_t i = 0; i < m->nset; i++)
        if (m->set[i].nlen == l && strncasecmp(m->set[i].name, n, l) == 0)
            return 1;
    return 0;
}

const char *lg_req_header(lg_req_t *r, const char *name, size_t nlen, size_t *vlen)
{
    for (size_t i = 0; i < r->nhdrs; i++) {
        lg_hslice_t *h = &r->hdrs[i];
        if (h->nlen == nlen && strncasecmp(r->head + h->noff, name, nlen) == 0) {
            *vlen = h->vlen;
            return r->head + h->voff;
        }
    }
    return NULL;
}

const char *lg_resp_header(lg_req_t *r, const char *name, size_t nlen, size_t *vlen)
{
    for (size_t i = 0; i < r->nrhdrs; i++) {
        lg_hslice_t *h = &r->rhdrs[i];
        if (h->nlen == nlen && strncasecmp(r->rhead + h->noff, name, nlen) == 0) {
            *vlen = h->vlen;
            return r->rhead + h->voff;
        }
    }
    return NULL;
}

static const char *hdr_cb(void *arg, const char *name, size_t nlen, size_t *vlen)
{
    return lg_req_header(arg, name, nlen, vlen);
}

/* ---- Head assembly ----
 * Heads are built in a stack buffer and handed to the evbuffer in one piece: many small
 * evbuffer_add() calls cost more than the copy. */

typedef struct hbuf {
    char b[4096];
    size_t n;
    struct evbuffer *out;
} hbuf_t;

static void hb_flush(hbuf_t *h)
{
    if (h->n)
        evbuffer_add(h->out, h->b, h->n);
    h->n = 0;
}

static void hb_add(hbuf_t *h, const void *p, size_t n)
{
    if (h->n + n > sizeof(h->b)) {
        hb_flush(h);
        if (n > sizeof(h->b)) {
            evbuffer_add(h->out, p, n);
            return;
        }
    }
    memcpy(h->b + h->n, p, n);
    h->n += n;
}

/* "name: value\r\n" without printf: the LLM path adds four of these per request. */
static void hb_header(hbuf_t *h, const char *name, const char *value)
{
    hb_add(h, name, strlen(name));
    hb_add(h, ": ", 2);
    hb_add(h, value, strlen(value));
    hb_add(h, "\r\n", 2);
}

static void hb_printf(hbuf_t *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hb_printf(hbuf_t *h, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        hb_add(h, tmp, (size_t)n);
        return;
    }
    hb_flush(h);
    va_start(ap, fmt);
    evbuffer_add_vprintf(h->out, fmt, ap);
    va_end(ap);
}

static void hb_mod_append(hbuf_t *h, const lg_hdr_mod_t *m);

/* A header modifier's lines straight into `out`. */
static void append_mod(struct evbuffer *out, const lg_hdr_mod_t *m)
{
    hbuf_t hb;
    hb.n = 0;
    hb.out = out;
    hb_mod_append(&hb, m);
    hb_flush(&hb);
}

static void hb_mod_append(hbuf_t *h, const lg_hdr_mod_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nset; i++) {
        hb_add(h, m->set[i].name, m->set[i].nlen);
        hb_add(h, ": ", 2);
        hb_add(h, m->set[i].value, m->set[i].vlen);
        hb_add(h, "\r\n", 2);
    }
    for (size_t i = 0; i < m->nadd; i++) {
        hb_add(h, m->add[i].name, m->add[i].nlen);
        hb_add(h, ": ", 2);
        hb_add(h, m->add[i].value, m->add[i].vlen);
        hb_add(h, "\r\n", 2);
    }
}

/* ---- Simple responses ---- */

/* Answers the request locally with `status` and `body` (JSON when ctype is NULL). */
void lg_req_respond(lg_req_t *r, int status, const char *ctype, const char *body, size_t blen,
                    const lg_kv_t *extra, size_t nextra)
{
    lg_conn_t *c = r->conn;
    struct evbuffer *out = evbuffer_new();
    int keep = r->keepalive && !c->w->draining && status != 400 && status != 413 && status != 431;
    r->status = status;
    r->resp_head_sent = 1;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    if (ctype)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
    for (size_t i = 0; i < nextra; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", extra[i].name, extra[i].value);
    if (r->route && r->route->resp_hdr)
        append_mod(out, r->route->resp_hdr);
    lg_hooks_cors_headers(r, out);
    evbuffer_add_printf(out, "Content-Length: %zu\r\n", blen);
    if (!keep)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (r->vminor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
    if (r->method != HTTP_HEAD)
        evbuffer_add(out, body, blen);
    r->resp_bytes = r->method != HTTP_HEAD ? blen : 0;
    r->keepalive = keep;
    send_buffer(c, out);
    evbuffer_free(out);
    r->resp_done = 1;
    req_finish(r);
}

static void respond_error(lg_req_t *r, int status, const char *reason, const char *msg,
                          const char *type)
{
    struct evbuffer *b = evbuffer_new();
    r->reason = reason;
    if (!r->error)
        r->error = lg_xstrdup(msg);
    if (!lg_hooks_error_body(r, status, msg, type, b))
        lg_json_error(b, msg, type);
    size_t len = evbuffer_get_length(b);
    lg_req_respond(r, status, "application/json", (const char *)evbuffer_pullup(b, -1), len, NULL,
                   0);
    evbuffer_free(b);
}

/* A failure before or after the response started: an error reply, or a cut connection. */
static void req_fail(lg_req_t *r, int status, const char *reason, const char *msg)
{
    if (r->up) {
        lg_upstream_release(r->up, 0);
        r->up = NULL;
    }
    if (!r->resp_head_sent) {
        respond_error(r, status, reason, msg,
                      status == 504 ? "timeout_error"
                                    : (status >= 500 ? "upstream_error" : "invalid_request_error"));
        return;
    }
    /* the client already has part of a response: the only honest signal is closing */
    if (!r->error)
        r->error = lg_xstrdup(msg);
    r->reason = reason;
    r->keepalive = 0;
    req_finish(r);
}

/* ---- Request parsing (client side) ---- */

#define REQ_CACHE_MAX 64

static lg_req_t *req_new(lg_conn_t *c)
{
    lg_worker_t *w = c->w;
    lg_req_t *r = w->req_cache;
    if (r) {
        w->req_cache = r->next_free;
        w->nreq_cache--;
        memset(r, 0, offsetof(lg_req_t, head_buf));
    } else {
        r = lg_xcalloc(1, sizeof(*r));
    }
    r->conn = c;
    r->w = c->w;
    r->src = c->src;
    r->conf = lg_conf_ref(c->w->conf);
    r->start_us = lg_now_us();
    r->start_mono = lg_mono_us();
    r->reason = "Upstream";
    return r;
}

static void req_free(lg_req_t *r)
{
    if (!r)
        return;
    lg_hooks_req_free(r);
    if (r->timer)
        event_free(r->timer);
    if (r->up)
        lg_upstream_release(r->up, 0);
    if (r->body)
        evbuffer_free(r->body);
    if (r->head != r->head_buf)
        free(r->head);
    if (r->rhead != r->rhead_buf)
        free(r->rhead);
    if (r->hdrs != r->hdrs_buf)
        free(r->hdrs);
    if (r->rhdrs != r->rhdrs_buf)
        free(r->rhdrs);
    free(r->error);
    free(r->dyn_backend.host), free(r->dyn_backend.name), free(r->dyn_backend.sni);
    if (!r->up_static)
        free(r->up_path), free(r->up_host);
    free(r->up_method);
    lg_conf_unref(r->conf);
    lg_worker_t *w = r->w;
    if (w->nreq_cache < REQ_CACHE_MAX) {
        r->next_free = w->req_cache;
        w->req_cache = r;
        w->nreq_cache++;
    } else {
        free(r);
    }
}

/* Scratch output buffers: taking leaves NULL behind, so a nested taker gets its own. */
static struct evbuffer *scratch_take(lg_worker_t *w)
{
    for (size_t i = 0; i < LG_ARRAY_SIZE(w->scratch); i++) {
        struct evbuffer *b = w->scratch[i];
        if (b) {
            w->scratch[i] = NULL;
            return b;
        }
    }
    return evbuffer_new();
}

static void scratch_give(lg_worker_t *w, struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    if (n)
        evbuffer_drain(b, n);
    for (size_t i = 0; i < LG_ARRAY_SIZE(w->scratch); i++) {
        if (!w->scratch[i]) {
            w->scratch[i] = b;
            return;
        }
    }
    evbuffer_free(b);
}

void lg_proxy_caches_free(lg_worker_t *w)
{
    while (w->req_cache) {
        lg_req_t *r = w->req_cache;
        w->req_cache = r->next_free;
        free(r);
    }
    w->nreq_cache = 0;
    for (size_t i = 0; i < LG_ARRAY_SIZE(w->scratch); i++) {
        if (w->scratch[i])
            evbuffer_free(w->scratch[i]);
        w->scratch[i] = NULL;
    }
    if (w->conn_sweep)
        event_free(w->conn_sweep);
    w->conn_sweep = NULL;
    free(w->hdrs_scratch);
    w->hdrs_scratch = NULL;
    w->hdrs_cap = 0;
}

/* ---- Heads ---- */

/* Parses a head at buf into the worker's header array, growing it as needed: what
 * lg_h1_parse_request/response returns, never LG_H1_TOO_MANY. */
static int parse_head(lg_worker_t *w, int response, const char *buf, size_t len, size_t last,
                      lg_h1_head_t *h)
{
    for (;;) {
        if (!w->hdrs_scratch) {
            w->hdrs_cap = 64;
            w->hdrs_scratch = lg_xmalloc(w->hdrs_cap * sizeof(lg_hslice_t));
        }
        int rc = response ? lg_h1_parse_response(buf, len, last, h, w->hdrs_scratch, w->hdrs_cap)
                          : lg_h1_parse_request(buf, len, last, h, w->hdrs_scratch, w->hdrs_cap);
        if (rc != LG_H1_TOO_MANY)
            return rc;
        w->hdrs_cap = h->nhdrs * 2;
        w->hdrs_scratch = lg_xrealloc(w->hdrs_scratch, w->hdrs_cap * sizeof(lg_hslice_t));
    }
}

/* Finds and parses the head at the start of `in`, looking at no more than `max` bytes:
 * only the first chunk of the buffer when the head is all there, the rest pulled up when
 * it is not. *last is what was searched before (see lg_h1_parse_request). Returns the
 * parse result; *buf is the head's bytes when complete. */
static int find_head(lg_worker_t *w, int response, struct evbuffer *in, size_t max, size_t *last,
                     lg_h1_head_t *h, const char **buf)
{
    size_t avail = evbuffer_get_length(in), want = avail < max ? avail : max;
    struct evbuffer_iovec v;
    int rc = LG_H1_INCOMPLETE;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
        return rc;
    if (v.iov_len < want) {
        if (v.iov_len > *last) {
            rc = parse_head(w, response, v.iov_base, v.iov_len, *last, h);
            if (rc != LG_H1_INCOMPLETE) {
                *last = 0; /* the next head starts afresh */
                *buf = v.iov_base;
                return rc;
            }
            *last = v.iov_len;
        }
        v.iov_base = evbuffer_pullup(in, (ssize_t)want);
    }
    rc = parse_head(w, response, v.iov_base, want, *last, h);
    *last = rc == LG_H1_INCOMPLETE ? want : 0;
    *buf = v.iov_base;
    return rc;
}

/* Keeps a head and its headers in the request's own storage when they fit. */
static char *keep_bytes(char *inl, size_t inl_size, const char *buf, size_t len)
{
    char *d = len < inl_size ? inl : lg_xmalloc(len + 1);
    memcpy(d, buf, len);
    d[len] = '\0';
    return d;
}

static lg_hslice_t *keep_hdrs(lg_hslice_t *inl, size_t inl_n, const lg_hslice_t *h, size_t n)
{
    lg_hslice_t *d = n <= inl_n ? inl : lg_xmalloc(n * sizeof(*h));
    memcpy(d, h, n * sizeof(*h));
    return d;
}

static void req_body_data(void *ud, const char *at, size_t len)
{
    lg_req_t *r = ud;
    if (!r->body)
        r->body = evbuffer_new();
    if (evbuffer_get_length(r->body) + len > r->conf->max_body) {
        r->too_large = 1;
        return;
    }
    evbuffer_add(r->body, at, len);
}

/* Splits the URL into path and query, and finds the Host. */
static void req_split(lg_req_t *r)
{
    const char *u = r->url;
    size_t ul = r->url_len;
    /* absolute-form (proxy requests): skip scheme://authority */
    if (ul > 7 && (strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0)) {
        const char *s = memchr(u + 8 - (u[4] == ':'), '/', ul - 8 + (u[4] == ':'));
        const char *auth = u + (u[4] == ':' ? 7 : 8);
        if (!s)
            s = u + ul;
        r->host = auth;
        r->host_len = (size_t)(s - auth);
        ul -= (size_t)(s - u);
        u = s;
    }
    const char *q = memchr(u, '?', ul);
    r->path = ul ? u : "/";
    r->path_len = q ? (size_t)(q - u) : (ul ? ul : 1);
    if (q) {
        r->query = q + 1;
        r->query_len = ul - (size_t)(q - u) - 1;
    }
    if (!r->host) {
        size_t hl;
        const char *h = lg_req_header(r, "host", 4, &hl);
        if (h) {
            r->host = h;
            r->host_len = hl;
        } else {
            r->host = "";
        }
    }
    /* strip a port for matching */
    r->hostname_len = r->host_len;
    if (r->host_len && r->host[0] == '[') {
        const char *e = memchr(r->host, ']', r->host_len);
        if (e)
            r->hostname_len = (size_t)(e - r->host) + 1;
    } else {
        const char *colon = memchr(r->host, ':', r->host_len);
        if (colon)
            r->hostname_len = (size_t)(colon - r->host);
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg);

/* Parses as much of the client's input as possible and dispatches a complete request. */
static void process_input(lg_conn_t *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        if (c->closing || (c->req && (c->req->dispatched || c->req->body_done)))
            return;
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            return;
        if (!c->req) {
            /* wait for the whole head */
            lg_h1_head_t h;
            const char *buf;
            size_t max = c->w->conf->max_header;
            int rc = find_head(c->w, 0, in, max, &c->hlast, &h, &buf);
            if (rc == LG_H1_INCOMPLETE) {
                if (avail >= max) {
                    lg_req_t *r = c->req = req_new(c);
                    r->keepalive = 0;
                    r->url = "/", r->url_len = 1, r->path = "/", r->path_len = 1;
                    respond_error(r, 431, "InvalidRequest", "request header too large",
                                  "invalid_request_error");
                }
                return;
            }
            lg_req_t *r = c->req = req_new(c);
            if (rc < 0) {
                r->keepalive = 0;
                r->url = "/", r->url_len = 1, r->path = "/", r->path_len = 1;
                char msg[128];
                snprintf(msg, sizeof(msg), "malformed request: %s", h.err);
                respond_error(r, 400, "InvalidRequest", msg, "invalid_request_error");
                return;
            }
            size_t hl = (size_t)rc;
            r->head = keep_bytes(r->head_buf, sizeof(r->head_buf), buf, hl);
            r->head_len = hl;
            r->hdrs =
                keep_hdrs(r->hdrs_buf, LG_ARRAY_SIZE(r->hdrs_buf), c->w->hdrs_scratch, h.nhdrs);
            r->nhdrs = h.nhdrs;
            evbuffer_drain(in, hl);
            r->url = r->head + h.url_off;
            r->url_len = h.url_len;
            r->method = h.method;
            r->vmajor = h.vmajor;
            r->vminor = h.vminor;
            r->keepalive = h.keepalive;
            r->has_cl = h.has_cl;
            r->content_length = h.content_length;
            r->chunked_req = h.chunked;
            lg_h1_body_init(&c->body, h.body_mode, h.content_length);
            r->body_done = h.body_mode == LG_H1_BODY_NONE;
            req_split(r);
            if (r->has_cl && r->content_length > r->conf->max_body) {
                r->keepalive = 0;
                respond_error(r, 413, "InvalidRequest", "request body too large",
                              "invalid_request_error");
                return;
            }
            if (!r->body_done) {
                size_t el;
                const char *ex = lg_req_header(r, "expect", 6, &el);
                if (ex && el == 12 && strncasecmp(ex, "100-continue", 12) == 0)
                    bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            }
            continue;
        }
        /* body bytes */
        lg_req_t *r = c->req;
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        ssize_t n = lg_h1_body_feed(&c->body, v.iov_base, v.iov_len, req_body_data, r);
        if (n > 0)
            evbuffer_drain(in, (size_t)n);
        if (n < 0) {
            r->keepalive = 0;
            respond_error(r, 400, "InvalidRequest", "malformed request body",
                          "invalid_request_error");
            return;
        }
        if (r->too_large) {
            r->keepalive = 0;
            respond_error(r, 413, "InvalidRequest", "request body too large",
                          "invalid_request_error");
            return;
        }
        if (c->body.done)
            r->body_done = 1;
        else if (n == 0)
            return;
    }
}

/* ---- Dispatch ---- */

static void set_deadline(lg_req_t *r);

static void dispatch(lg_req_t *r)
{
    lg_conn_t *c = r->conn;
    const lg_match_t *matched = NULL;
    r->dispatched = 1;
    r->route =
        lg_conf_select(r->conf, c->port, r->host, r->hostname_len, http_method_str(r->method),
                       strlen(http_method_str(r->method)), r->path, r->path_len, r->query,
                       r->query_len, hdr_cb, r, &r->listener, &r->bind, &matched);
    if (!r->route) {
        respond_error(r, 404, "NotFound", "no route matched the request", "not_found_error");
        return;
    }
    if (matched && matched->path_kind == LG_MATCH_PREFIX)
        r->matched_prefix_len = matched->path_len;
    lg_hooks_trace_start(r);
    if (lg_hooks_cors_preflight(r))
        return;
    if (r->route->request_timeout_ms > 0)
        set_deadline(r);
    int rc = lg_hooks_access(r);
    if (rc != LG_OK)
        return; /* answered (or failed) by a plugin or the LLM layer */
    if (r->route->has_direct && !r->backend) {
        r->reason = "DirectResponse";
        lg_req_respond(r, r->route->direct_status, "text/plain",
                       r->route->direct_body ? r->route->direct_body : "",
                       r->route->direct_body_len, NULL, 0);
        return;
    }
    if (!r->backend) {
        lg_route_t *rt = r->route;
        if (rt->nbackends == 0 || rt->total_weight <= 0) {
            respond_error(r, 503, "NoHealthyBackend", "no healthy backend", "upstream_error");
            return;
        }
        const lg_backend_t *b = &rt->backends[0];
        if (rt->nbackends > 1) {
            int pick = (int)((unsigned)random() % (unsigned)rt->total_weight);
            for (size_t i = 0; i < rt->nbackends; i++) {
                if (pick < rt->backends[i].weight) {
                    b = &rt->backends[i];
                    break;
                }
                pick -= rt->backends[i].weight;
            }
        }
        r->backend = b;
    }
    upstream_start(r);
}

/* ---- Timers ---- */

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    lg_req_t *r = arg;
    lg_conn_t *c = r->conn;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    c->busy++;
    if (r->timer_kind == 2) { /* retry backoff elapsed */
        r->timer_kind = 0;
        upstream_start(r);
    } else {
        req_fail(r, 504, "Timeout", "request timed out");
    }
    conn_release(c);
}

static void set_deadline(lg_req_t *r)
{
    int ms = r->route->request_timeout_ms;
    if (!r->timer)
        r->timer = evtimer_new(r->w->base, deadline_cb, r);
    r->timer_kind = 1;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(r->timer, &tv);
}

/* ---- Upstream ---- */

static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);

static void append_forwarded(lg_req_t *r, struct evbuffer *out)
{
    size_t xl;
    const char *xff = lg_req_header(r, "x-forwarded-for", 15, &xl);
    const char *ip = r->conn->src;
    size_t il = strlen(ip);
    /* strip the port from "ip:port" / "[v6]:port" */
    if (ip[0] == '[') {
        const char *e = strchr(ip, ']');
        ip++;
        il = e ? (size_t)(e - ip) : il - 1;
    } else {
        const char *colon = strrchr(ip, ':');
        if (colon)
            il = (size_t)(colon - ip);
    }
    evbuffer_add(out, "X-Forwarded-For: ", 17);
    if (xff) {
        evbuffer_add(out, xff, xl);
        evbuffer_add(out, ", ", 2);
    }
    evbuffer_add(out, ip, il);
    evbuffer_add(out, "\r\n", 2);
}

/* Builds the upstream request head and body into `out`. */
static void build_upstream_request(lg_req_t *r, struct evbuffer *out)
{
    hbuf_t hb_, *hb = &hb_;
    hb_.n = 0;
    hb_.out = out;
    const lg_route_t *rt = r->route;
    const char *m = r->up_method ? r->up_method : http_method_str(r->method);
    /* path: Lua may have replaced it; otherwise apply urlRewrite */
    if (r->up_path) {
        hb_add(hb, m, strlen(m));
        hb_add(hb, " ", 1);
        hb_add(hb, r->up_path, strlen(r->up_path));
        hb_add(hb, " HTTP/1.1\r\n", 11);
    } else if (rt->rewrite_full) {
        hb_printf(hb, "%s %s%s%.*s HTTP/1.1\r\n", m, rt->rewrite_full, r->query ? "?" : "",
                  (int)r->query_len, r->query ? r->query : "");
    } else if (rt->rewrite_prefix && r->matched_prefix_len > 0) {
        /* replace the matched prefix: "/foo" + "/foo/bar" -> "/baz" + "/bar" */
        size_t ml = r->matched_prefix_len;
        if (ml > 0 && r->path[ml - 1] == '/')
            ml--; /* keep the separating slash in the rest */
        const char *rest = r->path + ml;
        size_t rl = r->path_len - ml;
        size_t pl = strlen(rt->rewrite_prefix);
        if (pl > 0 && rt->rewrite_prefix[pl - 1] == '/')
            pl--;
        hb_printf(hb, "%s %.*s%.*s%s%s%.*s HTTP/1.1\r\n", m, (int)pl, rt->rewrite_prefix, (int)rl,
                  rest, (pl == 0 && rl == 0) ? "/" : "", r->query ? "?" : "", (int)r->query_len,
                  r->query ? r->query : "");
    } else {
        hb_add(hb, m, strlen(m));
        hb_add(hb, " ", 1);
        hb_add(hb, r->path, r->path_len);
        if (r->query) {
            hb_add(hb, "?", 1);
            hb_add(hb, r->query, r->query_len);
        }
        hb_add(hb, " HTTP/1.1\r\n", 11);
    }
    size_t cl = 0;
    const char *connhdr = lg_req_header(r, "connection", 10, &cl);
    connhdr = connection_list(connhdr, cl);
    int host_done = 0;
    for (size_t i = 0; i < r->nhdrs; i++) {
        const lg_hslice_t *h = &r->hdrs[i];
        const char *n = r->head + h->noff;
        if (h->deleted || is_hop_by_hop(n, h->nlen) ||
            (connhdr && in_connection_list(connhdr, cl, n, h->nlen)))
            continue;
        if ((h->nlen == 14 && strncasecmp(n, "content-length", 14) == 0) ||
            (h->nlen == 6 && strncasecmp(n, "expect", 6) == 0) ||
            (h->nlen == 15 && strncasecmp(n, "x-forwarded-for", 15) == 0) ||
            (h->nlen == 11 && strncasecmp(n, "traceparent", 11) == 0 && r->traceparent[0]))
            continue;
        if (mod_touches(rt->req_hdr, n, h->nlen))
            continue;
        if (h->nlen == 4 && strncasecmp(n, "host", 4) == 0) {
            host_done = 1;
            if (r->up_host) {
                hb_header(hb, "Host", r->up_host);
                continue;
            }
            if (rt->rewrite_authority) {
                hb_printf(hb, "Host: %s\r\n", rt->rewrite_authority);
                continue;
            }
        }
        hb_add(hb, n, h->nlen);
        hb_add(hb, ": ", 2);
        hb_add(hb, r->head + h->voff, h->vlen);
        hb_add(hb, "\r\n", 2);
    }
    if (!host_done)
        evbuffer_add_printf(
            out, "Host: %s\r\n",
            r->up_host ? r->up_host
                       : (rt->rewrite_authority ? rt->rewrite_authority : r->backend->name));
    for (size_t i = 0; i < r->nextra; i++)
        hb_header(hb, r->extra[i].name, r->extra[i].value);
    for (size_t i = 0; i < r->nfixed; i++)
        hb_header(hb, r->fixed[i].name, r->fixed[i].value);
    hb_mod_append(hb, rt->req_hdr);
    hb_flush(hb);
    append_forwarded(r, out);
    if (r->traceparent[0])
        hb_header(hb, "traceparent", r->traceparent);
    size_t blen = r->body ? evbuffer_get_length(r->body) : 0;
    if (blen > 0 || r->has_cl || r->chunked_req || r->method == HTTP_POST ||
        r->method == HTTP_PUT || r->method == HTTP_PATCH) {
        char cl[48];
        memcpy(cl, "Content-Length: ", 16);
        size_t n = 16 + lg_utoa(blen, cl + 16);
        cl[n++] = '\r';
        cl[n++] = '\n';
        hb_add(hb, cl, n);
    }
    hb_add(hb, "\r\n", 2);
    if (blen > 0) {
        /* keep the body for a retry: copy, do not move */
        struct evbuffer_iovec v[16];
        int nv = evbuffer_peek(r->body, -1, NULL, v, 16);
        if (nv > 16) {
            evbuffer_pullup(r->body, -1);
            nv = evbuffer_peek(r->body, -1, NULL, v, 16);
        }
        for (int i = 0; i < nv && i < 16; i++)
            hb_add(hb, v[i].iov_base, v[i].iov_len);
    }
    hb_flush(hb);
}

static void up_ready_cb(lg_upconn_t *uc, int status, const char *msg, void *arg);

static void upstream_send(lg_req_t *r)
{
    struct evbuffer *out = scratch_take(r->w);
    build_upstream_request(r, out);
    r->rp_state = 0;
    r->nrhdrs = 0;
    r->rhead_len = 0;
    r->rlast = 0;
    r->up_sent_mono = lg_mono_us();
    bufferevent_setcb(r->up->bev, up_read_cb, NULL, up_event_cb, r);
    if (r->route->backend_timeout_ms > 0) {
        int ms = r->route->backend_timeout_ms;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        bufferevent_set_timeouts(r->up->bev, &tv, NULL);
    }
    /* straight to the socket when nothing is queued (plain TCP), as for clients */
    if (!r->up->tls && evbuffer_get_length(bufferevent_get_output(r->up->bev)) == 0) {
        evutil_socket_t fd = bufferevent_getfd(r->up->bev);
        while (evbuffer_get_length(out) > 0 && evbuffer_write(out, fd) > 0)
            ;
    }
    if (evbuffer_get_length(out) > 0)
        bufferevent_write_buffer(r->up->bev, out);
    bufferevent_enable(r->up->bev, EV_READ);
    scratch_give(r->w, out);
}

static void upstream_start(lg_req_t *r)
{
    lg_err_t err;
    r->attempt++;
    r->pending_connect = 1;
    lg_upconn_t *uc = lg_upstream_acquire(r->w->pool, r->backend, r->conf->connect_timeout_ms,
                                          up_ready_cb, r, &err);
    if (!uc) {
        r->pending_connect = 0;
        req_fail(r, 502, "UpstreamFailure", err.msg);
        return;
    }
    r->up = uc;
    if (uc->reused) {
        r->pending_connect = 0;
        upstream_send(r);
    }
}

static int should_retry_status(lg_req_t *r, int status)
{
    const lg_route_t *rt = r->route;
    if (r->attempt >= rt->retry_attempts)
        return 0;
    for (size_t i = 0; i < rt->nretry_codes; i++)
        if (rt->retry_codes[i] == status)
            return 1;
    return 0;
}

static void retry_later(lg_req_t *r)
{
    int ms = r->route->retry_backoff_ms;
    r->retry_count++;
    if (ms <= 0) {
        upstream_start(r);
        return;
    }
    if (!r->timer)
        r->timer = evtimer_new(r->w->base, deadline_cb, r);
    r->timer_kind = 2;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(r->timer, &tv);
}

static void up_ready_cb(lg_upconn_t *uc, int status, const char *msg, void *arg)
{
    lg_req_t *r = arg;
    lg_conn_t *c = r->conn;
    c->busy++;
    r->pending_connect = 0;
    if (status != LG_OK) {
        r->up = NULL;
        if (r->attempt < r->route->retry_attempts) {
            retry_later(r);
        } else {
            int timeout = msg && strstr(msg, "timed out");
            req_fail(r, timeout ? 504 : 502, timeout ? "Timeout" : "UpstreamFailure", msg);
        }
    } else {
        r->up = uc;
        r->connect_us = uc->connect_us;
        upstream_send(r);
    }
    conn_release(c);
}

/* ---- Response relay ---- */

static void resp_body_data(void *ud, const char *at, size_t len)
{
    lg_req_t *r = ud;
    if (r->fwd_mode == LG_FWD_RAW) {
        /* the run that ends a sized body says so (on_data runs before the decoder counts
         * it), so that a body that came in one piece is parsed where it lies */
        if (r->observe)
            lg_hooks_observe(r, at, len,
                             r->rbody.mode == LG_H1_BODY_LENGTH && len == r->rbody.remaining);
        return;
    }
    lg_hooks_body(r, at, len, 0, r->body_out);
}

/* The method the upstream got: a response to HEAD has no body whatever its headers say. */
static int upstream_method(const lg_req_t *r)
{
    if (r->up_method)
        return strcmp(r->up_method, "HEAD") == 0 ? HTTP_HEAD : HTTP_GET;
    return r->method;
}

/* Writes the client's response head. Picks how the body is relayed, unless the body was
 * already rewritten whole (LG_FWD_WHOLE: `whole` bytes follow). */
static void write_response_head(lg_req_t *r, struct evbuffer *out, size_t whole)
{
    hbuf_t hb_, *hb = &hb_;
    hb_.n = 0;
    hb_.out = out;
    lg_conn_t *c = r->conn;
    const lg_route_t *rt = r->route;
    int no_body =
        r->method == HTTP_HEAD || r->status == 204 || r->status == 304 || r->status / 100 == 1;
    int client11 = r->vmajor == 1 && r->vminor >= 1;
    int rewrite = lg_hooks_body_rewrites(r);
    r->observe = !rewrite && lg_hooks_body_observes(r);
    if (c->w->draining)
        r->keepalive = 0;
    if (r->fwd_mode == LG_FWD_WHOLE)
        ; /* chosen by whole_body() */
    else if (no_body)
        r->fwd_mode = LG_FWD_NONE;
    else if (!rewrite && (r->up_has_cl || (r->up_chunked && client11)))
        r->fwd_mode = LG_FWD_RAW;
    else if (client11)
        r->fwd_mode = LG_FWD_CHUNK;
    else {
        r->fwd_mode = LG_FWD_PLAIN;
        if (!r->up_has_cl || rewrite)
            r->keepalive = 0; /* close-delimited for an HTTP/1.0 client */
    }
    {
        char sl[48];
        const char *rp = r->status_text ? r->status_text : reason_phrase(r->status);
        memcpy(sl, "HTTP/1.1 ", 9);
        size_t n = 9 + lg_utoa((uint64_t)(r->status > 0 ? r->status : 0), sl + 9);
        sl[n++] = ' ';
        hb_add(hb, sl, n);
        hb_add(hb, rp, strlen(rp));
        hb_add(hb, "\r\n", 2);
    }
    size_t cl = 0;
    const char *connhdr = lg_resp_header(r, "connection", 10, &cl);
    connhdr = connection_list(connhdr, cl);
    for (size_t i = 0; i < r->nrhdrs; i++) {
        const lg_hslice_t *h = &r->rhdrs[i];
        const char *n = r->rhead + h->noff;
        if (h->deleted || is_hop_by_hop(n, h->nlen) ||
            (connhdr && in_connection_list(connhdr, cl, n, h->nlen)))
            continue;
        if (h->nlen == 14 && strncasecmp(n, "content-length", 14) == 0 &&
            (r->fwd_mode == LG_FWD_CHUNK || rewrite))
            continue;
        if (mod_touches(rt->resp_hdr, n, h->nlen))
            continue;
        hb_add(hb, n, h->nlen);
        hb_add(hb, ": ", 2);
        hb_add(hb, r->rhead + h->voff, h->vlen);
        hb_add(hb, "\r\n", 2);
    }
    for (size_t i = 0; i < r->nrextra; i++)
        hb_header(hb, r->rextra[i].name, r->rextra[i].value);
    hb_mod_append(hb, rt->resp_hdr);
    hb_flush(hb);
    lg_hooks_cors_headers(r, out);
    if (r->fwd_mode == LG_FWD_CHUNK || (r->fwd_mode == LG_FWD_RAW && r->up_chunked))
        hb_add(hb, "Transfer-Encoding: chunked\r\n", 28);
    if (r->fwd_mode == LG_FWD_WHOLE) {
        char cl[40];
        memcpy(cl, "Content-Length: ", 16);
        size_t n = 16 + lg_utoa((uint64_t)whole, cl + 16);
        cl[n++] = '\r';
        cl[n++] = '\n';
        hb_add(hb, cl, n);
    }
    if (!r->keepalive)
        hb_add(hb, "Connection: close\r\n", 19);
    else if (r->vminor == 0)
        hb_add(hb, "Connection: keep-alive\r\n", 24);
    hb_add(hb, "\r\n", 2);
    r->resp_head_sent = 1;
    hb_flush(hb);
}

/* Emits body bytes produced in decoded mode (chunked or plain) into `out`. */
void lg_req_emit(lg_req_t *r, const char *data, size_t len, struct evbuffer *out)
{
    if (len == 0)
        return;
    r->resp_bytes += len;
    if (r->fwd_mode == LG_FWD_CHUNK) {
        char hex[24];
        size_t n = sizeof(hex);
        hex[--n] = '\n';
        hex[--n] = '\r';
        for (size_t v = len; v; v >>= 4)
            hex[--n] = "0123456789abcdef"[v & 15];
        evbuffer_add(out, hex + n, sizeof(hex) - n);
        evbuffer_add(out, data, len);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add(out, data, len);
    }
}

static void response_done(lg_req_t *r, struct evbuffer *out)
{
    if (r->fwd_mode == LG_FWD_CHUNK || r->fwd_mode == LG_FWD_PLAIN)
        lg_hooks_body(r, NULL, 0, 1, out);
    else if (r->observe)
        lg_hooks_observe(r, NULL, 0, 1);
    if (r->fwd_mode == LG_FWD_CHUNK)
        evbuffer_add(out, "0\r\n\r\n", 5);
    r->resp_done = 1;
}

#define WHOLE_MAX     (256 * 1024)
#define RESP_HEAD_MAX (64 * 1024) /* an upstream response head longer than this is a 502 */

/* A body that plugins rewrite, already here in full after its head (Content-Length, small):
 * body_filter sees it in one call with eof, and the client gets a Content-Length instead of
 * chunks. */
static int whole_here(lg_req_t *r, struct evbuffer *in)
{
    return r->up_has_cl && r->up_cl <= WHOLE_MAX && r->method != HTTP_HEAD && r->status != 204 &&
           r->status != 304 && lg_hooks_body_rewrites(r) && evbuffer_get_length(in) >= r->up_cl;
}

/* Writes the head and the filtered body in tmp (given back), and consumes the upstream's. */
static void whole_write(lg_req_t *r, struct evbuffer *in, struct evbuffer *out,
                        struct evbuffer *tmp)
{
    evbuffer_drain(in, (size_t)r->up_cl);
    if (r->status == 204 || r->status == 304) { /* header_filter made it bodiless */
        r->fwd_mode = LG_FWD_NONE;
        write_response_head(r, out, 0);
    } else {
        write_response_head(r, out, evbuffer_get_length(tmp));
        evbuffer_add_buffer(out, tmp);
    }
    scratch_give(r->w, tmp);
    r->rp_state = 2;
    r->resp_done = 1;
}

/* The whole body after header_filter ran. Returns 0 when the body is not all here. */
static int whole_body(lg_req_t *r, struct evbuffer *in, struct evbuffer *out)
{
    if (!whole_here(r, in))
        return 0;
    size_t cl = (size_t)r->up_cl;
    const char *body = cl ? (const char *)evbuffer_pullup(in, (ssize_t)cl) : "";
    struct evbuffer *tmp = scratch_take(r->w);
    r->fwd_mode = LG_FWD_WHOLE;
    lg_hooks_body(r, body, cl, 1, tmp);
    whole_write(r, in, out, tmp);
    return 1;
}

/* whole_body's case when plugins filter both the head and the body: decided before the
 * headers are filtered, so that header_filter and body_filter run in one protected entry.
 * Returns LG_DECLINED when not taken, LG_OK when the response is written, LG_ERR when it was
 * answered with an error. */
static int fused_whole_body(lg_req_t *r, struct evbuffer *in, struct evbuffer *out)
{
    if (!whole_here(r, in))
        return LG_DECLINED;
    size_t cl = (size_t)r->up_cl;
    const char *body = cl ? (const char *)evbuffer_pullup(in, (ssize_t)cl) : "";
    struct evbuffer *tmp = scratch_take(r->w);
    int mode = r->fwd_mode;
    r->fwd_mode = LG_FWD_WHOLE;
    int rc = lg_hooks_header_body(r, body, cl, tmp);
    if (rc != LG_OK) {
        r->fwd_mode = mode;
        scratch_give(r->w, tmp);
        return rc;
    }
    whole_write(r, in, out, tmp);
    return LG_OK;
}

/* Feeds the upstream's input to the response parser and relays what it may. */
static void relay(lg_req_t *r)
{
    lg_conn_t *c = r->conn;
    lg_worker_t *w = c->w;
    struct evbuffer *in = bufferevent_get_input(r->up->bev);
    struct evbuffer *out = scratch_take(w);
    r->body_out = out;
    while (!r->resp_done && evbuffer_get_length(in) > 0) {
        if (r->rp_state == 0) {
            lg_h1_head_t h;
            const char *buf;
            int rc = find_head(w, 1, in, RESP_HEAD_MAX, &r->rlast, &h, &buf);
            if (rc == LG_H1_INCOMPLETE) {
                if (evbuffer_get_length(in) >= RESP_HEAD_MAX) {
                    scratch_give(w, out);
                    r->body_out = NULL;
                    req_fail(r, 502, "UpstreamFailure", "upstream response head too large");
                    return;
                }
                break;
            }
            if (rc < 0) {
                scratch_give(w, out);
                r->body_out = NULL;
                req_fail(r, 502, "UpstreamFailure", "malformed upstream response");
                return;
            }
            size_t hl = (size_t)rc;
            if (r->rhead != r->rhead_buf)
                free(r->rhead);
            r->rhead = keep_bytes(r->rhead_buf, sizeof(r->rhead_buf), buf, hl);
            r->rhead_len = hl;
            if (r->rhdrs != r->rhdrs_buf)
                free(r->rhdrs);
            r->rhdrs =
                keep_hdrs(r->rhdrs_buf, LG_ARRAY_SIZE(r->rhdrs_buf), w->hdrs_scratch, h.nhdrs);
            r->nrhdrs = h.nhdrs;
            evbuffer_drain(in, hl);
            r->status = h.status;
            if (r->status / 100 == 1) /* 1xx interim: drop it and parse the next head */
                continue;
            lg_h1_response_body(&h, upstream_method(r));
            r->up_keepalive = h.keepalive;
            r->up_chunked = h.chunked;
            r->up_has_cl = h.has_cl;
            r->up_cl = h.content_length;
            lg_h1_body_init(&r->rbody, h.body_mode, h.content_length);
            r->rp_state = h.body_mode == LG_H1_BODY_NONE ? 2 : 1;
            r->first_byte_mono = lg_mono_us();
            if (should_retry_status(r, r->status)) {
                scratch_give(w, out);
                r->body_out = NULL;
                lg_upstream_release(r->up, 0);
                r->up = NULL;
                retry_later(r);
                return;
            }
            int fused = r->rp_state == 1 ? fused_whole_body(r, in, out) : LG_DECLINED;
            if (fused == LG_OK)
                break;
            if (fused == LG_ERR || lg_hooks_header_filter(r) != LG_OK) {
                scratch_give(w, out);
                r->body_out = NULL;
                return; /* answered with a 500 */
            }
            if (r->rp_state == 1 && whole_body(r, in, out))
                break;
            write_response_head(r, out, 0);
            if (r->rp_state == 2 || r->fwd_mode == LG_FWD_NONE) {
                response_done(r, out);
                break;
            }
            continue;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = lg_h1_body_feed(&r->rbody, v.iov_base, v.iov_len, resp_body_data, r);
        if (n < 0) {
            send_buffer(c, out);
            scratch_give(w, out);
            r->body_out = NULL;
            req_fail(r, 502, "UpstreamFailure", "malformed upstream response body");
            return;
        }
        if (r->fwd_mode == LG_FWD_RAW) {
            evbuffer_remove_buffer(in, out, (size_t)n);
            r->resp_bytes += (uint64_t)n;
        } else {
            evbuffer_drain(in, (size_t)n);
        }
        if (r->rbody.done) {
            r->rp_state = 2;
            response_done(r, out);
        } else if (n == 0) {
            break;
        }
    }
    r->body_out = NULL;
    if (evbuffer_get_length(out) > 0)
        send_buffer(c, out);
    scratch_give(w, out);
    if (r->resp_done) {
        req_finish(r);
        return;
    }
    /* backpressure: stop reading the upstream while the client lags */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > OUT_HIGH) {
        bufferevent_disable(r->up->bev, EV_READ);
        r->paused = 1;
    }
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    lg_req_t *r = arg;
    lg_conn_t *c = r->conn;
    LG_UNUSED(bev);
    c->busy++;
    relay(r);
    conn_release(c);
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    lg_req_t *r = arg;
    lg_conn_t *c = r->conn;
    c->busy++;
    if (what & BEV_EVENT_EOF && r->rp_state >= 1 && !r->resp_done) {
        /* a close-delimited body ends here */
        lg_h1_body_eof(&r->rbody);
        if (r->rbody.done) {
            r->rp_state = 2;
            r->up_keepalive = 0;
            struct evbuffer *out = evbuffer_new();
            response_done(r, out);
            send_buffer(c, out);
            evbuffer_free(out);
            req_finish(r);
            conn_release(c);
            return;
        }
    }
    int nothing_yet = r->rp_state == 0 && r->rhead_len == 0 &&
                      evbuffer_get_length(bufferevent_get_input(bev)) == 0;
    if (nothing_yet && r->up && r->up->reused && !(what & BEV_EVENT_TIMEOUT) && !r->stale_retry) {
        /* a pooled connection the server had already closed: try a fresh one */
        r->stale_retry = 1;
        lg_upstream_release(r->up, 0);
        r->up = NULL;
        r->attempt--;
        upstream_start(r);
    } else if (what & BEV_EVENT_TIMEOUT) {
        req_fail(r, 504, "Timeout", "upstream request timed out");
    } else {
        char msg[200];
        snprintf(msg, sizeof(msg), "upstream %s closed the connection%s",
                 r->backend ? r->backend->name : "", r->rp_state ? " mid-response" : "");
        if (nothing_yet && r->attempt < r->route->retry_attempts) {
            lg_upstream_release(r->up, 0);
            r->up = NULL;
            retry_later(r);
        } else {
            req_fail(r, 502, "UpstreamFailure", msg);
        }
    }
    conn_release(c);
}

/* ---- Local streaming answers ---- */

void lg_req_stream_head(lg_req_t *r, int status, const lg_kv_t *hdrs, size_t n)
{
    lg_conn_t *c = r->conn;
    struct evbuffer *out = evbuffer_new();
    int client11 = r->vmajor == 1 && r->vminor >= 1;
    r->status = status;
    r->fwd_mode = client11 ? LG_FWD_CHUNK : LG_FWD_PLAIN;
    if (!client11 || c->w->draining)
        r->keepalive = 0;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    for (size_t i = 0; i < n; i++)
        evbuffer_add_printf(out, "%s: %s\r\n", hdrs[i].name, hdrs[i].value);
    if (r->route && r->route->resp_hdr)
        append_mod(out, r->route->resp_hdr);
    lg_hooks_cors_headers(r, out);
    if (client11)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    if (!r->keepalive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    evbuffer_add(out, "\r\n", 2);
    r->resp_head_sent = 1;
    r->first_byte_mono = lg_mono_us();
    send_buffer(c, out);
    evbuffer_free(out);
}

void lg_req_stream_data(lg_req_t *r, const char *data, size_t len)
{
    if (r->finished)
        return;
    struct evbuffer *out = evbuffer_new();
    lg_req_emit(r, data, len, out);
    send_buffer(r->conn, out);
    evbuffer_free(out);
}

void lg_req_stream_end(lg_req_t *r)
{
    if (r->finished)
        return;
    if (r->fwd_mode == LG_FWD_CHUNK) {
        struct evbuffer *out = evbuffer_new();
        evbuffer_add(out, "0\r\n\r\n", 5);
        send_buffer(r->conn, out);
        evbuffer_free(out);
    }
    r->resp_done = 1;
    req_finish(r);
}

void lg_req_hold(lg_req_t *r)
{
    r->conn->busy++;
}

void lg_req_release(lg_req_t *r)
{
    conn_release(r->conn);
}

/* ---- Finishing ---- */

static void req_finish(lg_req_t *r)
{
    lg_conn_t *c = r->conn;
    if (r->finished)
        return;
    r->finished = 1;
    if (r->timer)
        evtimer_del(r->timer);
    r->end_us = lg_now_us();
    r->end_mono = lg_mono_us();
    if (r->up) {
        int reuse = r->resp_done && r->up_keepalive && !r->client_gone;
        if (reuse)
            bufferevent_setcb(r->up->bev, NULL, NULL, NULL, NULL);
        lg_upstream_release(r->up, reuse);
        r->up = NULL;
    }
    if (r->pending_connect) {
        /* still connecting: the pending connection will call back into a dead request
         * unless we cancel it; the pool frees it */
        r->pending_connect = 0;
    }
    lg_hooks_log(r);
    c->w->nrequests++;
    c->req = NULL;
    c->done_req = r;
    if (r->client_gone || c->closing) {
        conn_close(c);
        return;
    }
    if (!r->resp_done || !r->keepalive || c->w->draining) {
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
            conn_close(c);
        else
            c->close_after_flush = 1;
        return;
    }
    /* keep-alive: idle timeout, and pick up any pipelined request */
    c->deadline =
        (r->end_mono ? r->end_mono : lg_mono_us()) + (int64_t)c->w->conf->idle_timeout_ms * 1000;
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
}

/* ---- Client connection callbacks ---- */

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    lg_conn_t *c = arg;
    LG_UNUSED(bev);
    c->busy++;
    process_input(c);
    if (c->req && !c->req->dispatched && !c->closing) {
        if (c->req->body_done) {
            c->deadline = 0; /* a request in flight has its own timeouts */
            dispatch(c->req);
        } else {
            /* a body still arriving: each read buys the client another header timeout */
            c->deadline = lg_mono_us() + (int64_t)c->w->conf->header_timeout_ms * 1000;
        }
    }
    conn_release(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    lg_conn_t *c = arg;
    c->busy++;
    if (c->close_after_flush && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_close(c);
    else if (c->req && c->req->paused && c->req->up) {
        c->req->paused = 0;
        bufferevent_enable(c->req->up->bev, EV_READ);
        relay(c->req);
    }
    conn_release(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    lg_conn_t *c = arg;
    LG_UNUSED(bev);
    if (what & BEV_EVENT_CONNECTED)
        return; /* TLS handshake done */
    c->busy++;
    /* (the only timeout set on a client's bufferevent is the write timeout: a client that
     * stopped reading its response is cut, and its upstream request with it) */
    if (c->req && (what & BEV_EVENT_TIMEOUT) && !c->req->dispatched) {
        /* slow client: it never finished sending its request */
        c->req->keepalive = 0;
        c->req->reason = "InvalidRequest";
        if (!c->req->url)
            c->req->url = "/", c->req->url_len = 1, c->req->path = "/", c->req->path_len = 1;
        req_fail(c->req, 408, "InvalidRequest", "request timed out");
    }
    conn_close(c);
    conn_release(c);
}

/* Once a second: a connection past its deadline (no complete request within the header
 * timeout, idle longer than the idle timeout, a body that stopped arriving) is timed out,
 * as conn_event_cb would for a libevent timeout. */
static void conn_sweep(evutil_socket_t fd, short what, void *arg)
{
    lg_worker_t *w = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    int64_t now = lg_mono_us();
    for (lg_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->deadline && now >= c->deadline && !c->closing && c->bev &&
            !(c->req && c->req->dispatched)) {
            c->deadline = 0;
            conn_event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, c);
        }
    }
}

void lg_proxy_accept(lg_worker_t *w, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                     int port, struct ssl_ctx_st *ssl)
{
    lg_conn_t *c = lg_xcalloc(1, sizeof(*c));
    LG_UNUSED(salen);
    c->w = w;
    c->fd = fd;
    c->port = port;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(c->src, sizeof(c->src), "%s:%d", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        char ip[INET6_ADDRSTRLEN];
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], ip, sizeof(ip));
            snprintf(c->src, sizeof(c->src), "%s:%d", ip, ntohs(s6->sin6_port));
        } else {
            inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
            snprintf(c->src, sizeof(c->src), "[%s]:%d", ip, ntohs(s6->sin6_port));
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ssl) {
        SSL *s = SSL_new(ssl);
        c->bev = bufferevent_openssl_socket_new(w->base, fd, s, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        c->tls = 1;
    } else {
        c->bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    conn_link(w, c);
    lg_runtime_conn_accepted(w, port, ssl != NULL);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 4 * 1024 * 1024);
    /* Read-side timeouts are deadlines checked once a second (conn_sweep), not libevent
     * timers, which would be re-armed on every read. */
    struct timeval wt = {WRITE_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    c->deadline = lg_mono_us() + (int64_t)w->conf->header_timeout_ms * 1000;
    if (!w->conn_sweep) {
        struct timeval one = {1, 0};
        w->conn_sweep = event_new(w->base, -1, EV_PERSIST, conn_sweep, w);
        event_add(w->conn_sweep, &one);
    }
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

void lg_proxy_drain(lg_worker_t *w)
{
    for (lg_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        /* a connection still flushing its last response closes itself once written */
        if (!c->req && !c->busy && !c->close_after_flush &&
            evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            c->busy++;
            conn_close(c);
            conn_release(c);
        }
    }
    lg_upool_close_idle(w->pool);
}

void lg_proxy_close_all(lg_worker_t *w)
{
    for (lg_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        c->busy++;
        if (c->req && !c->req->error)
            c->req->error = lg_xstrdup("gateway shutting down");
        conn_close(c);
        conn_release(c);
    }
}
