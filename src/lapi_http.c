/* lapi_http.c -- lg.http: an asynchronous HTTP/1.1 client for Lua coroutines (cosockets).
 * SPDX-License-Identifier: MIT
 *
 * A request borrows a pooled connection (upstream.c), writes the request, parses the response
 * with http_parser, and resumes the waiting coroutine from the libevent callback once the
 * answer (lg.http.request), the response head (lg.http.stream) or the next chunk or SSE event
 * (handle:read) is there. Invariant: a coroutine is never resumed from inside http_parser or
 * from inside another Lua call; it is the last thing a callback does, because the coroutine may
 * free the operation that woke it.
 *
 * Caveats: no HTTP/2, no proxies, no redirects; request bodies are strings; a streamed
 * response buffers at most STREAM_MAX_QUEUED unread bytes (more fails the stream), a plain
 * response at most BODY_MAX bytes. */
#include "lapi_http.h"

#include "common.h"
#include "lapi.h"
#include "lapi_http_wait.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <http_parser.h>
#include <lauxlib.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BODY_MAX           (64u << 20)
#define STREAM_MAX_QUEUED  (8u << 20)
#define DEFAULT_TIMEOUT_MS 60000
#define CONNECT_TIMEOUT_MS 10000
#define HANDLE_MT          "lunagate.http.stream"

typedef struct hbind hbind_t;
typedef struct hop hop_t;

typedef struct sse_ev {
    struct sse_ev *next;
    char *event, *data, *id; /* data may be NULL for a plain chunk */
    size_t dlen;
    long retry;
} sse_ev_t;

enum { W_NONE = 0, W_DONE, W_HEAD, W_READ };

struct hop {
    hbind_t *b;
    hop_t *next, *prev;
    lua_State *co; /* the waiting coroutine, or NULL */
    int co_ref;
    int waiting; /* W_* */
    lg_backend_t *be;
    lg_upconn_t *uc;
    struct evbuffer *req; /* kept for one retry on a stale pooled connection */
    int retried, got_bytes, keepalive, is_head;
    http_parser p;
    int stream, head_done, msg_done, failed, closed, sse;
    int status;
    char **hdrs; /* name, value pairs (names lowercase) */
    size_t nh, hcap;
    struct evbuffer *hname, *hval;
    int in_value;
    struct evbuffer *body; /* request: whole body; stream (not SSE): unread bytes */
    struct evbuffer *sse_in;
    char *ev_name, *ev_id;
    struct evbuffer *ev_data;
    int ev_has_data;
    long ev_retry;
    sse_ev_t *qh, *qt;
    size_t qbytes;
    struct event *timer;
    int timeout_ms;
    char *err;
    struct hhandle *handle;
};

typedef struct hhandle {
    hop_t *op;
} hhandle_t;

struct hbind {
    struct event_base *base;
    lg_upool_t *pool;
    lua_State *L; /* main state */
    SSL_CTX *ssl_verify, *ssl_insecure;
    lg_backend_t **backends;
    size_t nbackends;
    lg_lapi_resume_fn *resumer;
    void *rarg;
    hop_t *ops;
};

static char bind_key;

/* ---- Binding and resumption ---- */

static hbind_t *get_bind(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &bind_key); /* ud|nil */
    hbind_t *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
}

static void free_backend(lg_backend_t *be)
{
    free(be->host);
    free(be->name);
    free(be->sni);
    free(be);
}

static void op_free(hop_t *op);

static int bind_gc(lua_State *L)
{
    hbind_t *b = lua_touserdata(L, 1);
    while (b->ops)
        op_free(b->ops);
    for (size_t i = 0; i < b->nbackends; i++)
        free_backend(b->backends[i]);
    free(b->backends);
    if (b->ssl_verify)
        SSL_CTX_free(b->ssl_verify);
    if (b->ssl_insecure)
        SSL_CTX_free(b->ssl_insecure);
    b->nbackends = 0;
    b->backends = NULL;
    b->ssl_verify = b->ssl_insecure = NULL;
    return 0;
}

void lg_lapi_http_bind(lua_State *L, struct event_base *base, lg_upool_t *pool)
{
    hbind_t *b = get_bind(L);
    if (!b) {
        b = lua_newuserdatauv(L, sizeof(*b), 0); /* b */
        memset(b, 0, sizeof(*b));
        lua_createtable(L, 0, 1); /* b mt */
        lua_pushcfunction(L, bind_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);                      /* b */
        lua_rawsetp(L, LUA_REGISTRYINDEX, &bind_key); /* */
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
        b->L = lua_tothread(L, -1);
        lua_pop(L, 1);
    }
    b->base = base;
    b->pool = pool;
}

struct event_base *lg_lapi_http_base(lua_State *L)
{
    hbind_t *b = get_bind(L);
    return b ? b->base : NULL;
}

void lg_lapi_http_set_resumer(lua_State *L, lg_lapi_resume_fn *fn, void *arg)
{
    hbind_t *b = get_bind(L);
    if (!b)
        return;
    b->resumer = fn;
    b->rarg = arg;
}

int lg_lapi_http_resume(lua_State *co, int nargs)
{
    hbind_t *b = get_bind(co);
    if (b && b->resumer)
        return b->resumer(co, nargs, b->rarg);
    int nres = 0;
    int st = lua_resume(co, NULL, nargs, &nres);
    if (st == LUA_OK || st == LUA_YIELD) {
        lua_pop(co, nres);
        return st;
    }
    const char *msg = lua_tostring(co, -1);
    lg_log(LG_LOG_ERR, "lua", "coroutine failed: %s", msg ? msg : "(error object)");
    lua_settop(co, 0);
    return st;
}

/* Remembers the running coroutine as the waiter of an operation; returns its registry ref. */
static int hold_thread(lua_State *L)
{
    lua_pushthread(L);                     /* ... co */
    return luaL_ref(L, LUA_REGISTRYINDEX); /* ... */
}

static void check_yieldable(lua_State *L, const char *fname)
{
    if (!lua_isyieldable(L))
        luaL_error(L, "%s: must be called from a yieldable coroutine", fname);
}

/* ---- Backends and TLS ---- */

static SSL_CTX *client_ctx(hbind_t *b, int insecure)
{
    SSL_CTX **slot = insecure ? &b->ssl_insecure : &b->ssl_verify;
    if (*slot)
        return *slot;
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c)
        return NULL;
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (!insecure) {
        SSL_CTX_set_default_verify_paths(c);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    }
    *slot = c;
    return c;
}

/* Backends are kept for the state's life: a pooled connection borrows its backend. */
static lg_backend_t *get_backend(hbind_t *b, const char *host, int port, int tls, int insecure)
{
    for (size_t i = 0; i < b->nbackends; i++) {
        lg_backend_t *be = b->backends[i];
        if (be->port == port && be->tls == tls && be->insecure == insecure &&
            strcmp(be->host, host) == 0)
            return be;
    }
    SSL_CTX *ssl = NULL;
    if (tls && !(ssl = client_ctx(b, insecure)))
        return NULL;
    lg_backend_t *be = lg_xcalloc(1, sizeof(*be));
    be->kind = LG_BACKEND_HOST;
    be->host = lg_xstrdup(host);
    be->port = port;
    be->weight = 1;
    char name[300];
    snprintf(name, sizeof(name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    be->name = lg_xstrdup(name);
    be->tls = tls;
    be->sni = lg_xstrdup(host);
    be->insecure = insecure;
    be->ssl = ssl;
    b->backends = lg_xrealloc(b->backends, (b->nbackends + 1) * sizeof(*b->backends));
    b->backends[b->nbackends++] = be;
    return be;
}

/* ---- Operations ---- */

static void sse_ev_free(sse_ev_t *e)
{
    free(e->event);
    free(e->data);
    free(e->id);
    free(e);
}

static void reset_response(hop_t *op)
{
    for (size_t i = 0; i < op->nh * 2; i++)
        free(op->hdrs[i]);
    op->nh = 0;
    evbuffer_drain(op->hname, evbuffer_get_length(op->hname));
    evbuffer_drain(op->hval, evbuffer_get_length(op->hval));
    evbuffer_drain(op->body, evbuffer_get_length(op->body));
    op->in_value = op->head_done = op->msg_done = op->got_bytes = 0;
    http_parser_init(&op->p, HTTP_RESPONSE);
    op->p.data = op;
}

static void op_free(hop_t *op)
{
    if (op->uc)
        lg_upstream_release(op->uc, 0);
    if (op->co_ref != LUA_NOREF)
        luaL_unref(op->b->L, LUA_REGISTRYINDEX, op->co_ref);
    if (op->handle)
        op->handle->op = NULL;
    if (op->prev)
        op->prev->next = op->next;
    else
        op->b->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    for (size_t i = 0; i < op->nh * 2; i++)
        free(op->hdrs[i]);
    free(op->hdrs);
    evbuffer_free(op->hname);
    evbuffer_free(op->hval);
    evbuffer_free(op->body);
    evbuffer_free(op->req);
    evbuffer_free(op->sse_in);
    evbuffer_free(op->ev_data);
    free(op->ev_name);
    free(op->ev_id);
    while (op->qh) {
        sse_ev_t *n = op->qh->next;
        sse_ev_free(op->qh);
        op->qh = n;
    }
    if (op->timer)
        event_free(op->timer);
    free(op->err);
    free(op);
}

static void arm_timer(hop_t *op, int ms)
{
    if (ms <= 0) {
        evtimer_del(op->timer);
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(op->timer, &tv);
}

static void push_headers(lua_State *co, hop_t *op)
{
    lua_createtable(co, 0, (int)op->nh); /* h */
    for (size_t i = 0; i < op->nh; i++) {
        const char *n = op->hdrs[2 * i], *v = op->hdrs[2 * i + 1];
        if (lua_getfield(co, -1, n) == LUA_TSTRING) { /* h old */
            lua_pushliteral(co, ", ");
            lua_pushstring(co, v);
            lua_concat(co, 3); /* h joined */
        } else {
            lua_pop(co, 1);
            lua_pushstring(co, v); /* h v */
        }
        lua_setfield(co, -2, n); /* h */
    }
}

static void push_handle(lua_State *co, hop_t *op)
{
    hhandle_t *h = lua_newuserdatauv(co, sizeof(*h), 1); /* h */
    h->op = op;
    op->handle = h;
    luaL_setmetatable(co, HANDLE_MT);
    lua_createtable(co, 0, 3); /* h fields */
    lua_pushinteger(co, op->status);
    lua_setfield(co, -2, "status");
    push_headers(co, op);
    lua_setfield(co, -2, "headers");
    lua_pushboolean(co, op->sse);
    lua_setfield(co, -2, "sse");
    lua_setiuservalue(co, -2, 1); /* h */
}

/* Pops the next queued item onto co: 1 value. */
static void push_next(lua_State *co, hop_t *op)
{
    sse_ev_t *e = op->qh;
    op->qh = e->next;
    if (!op->qh)
        op->qt = NULL;
    op->qbytes -= e->dlen;
    if (!op->sse) {
        lua_pushlstring(co, e->data, e->dlen);
    } else {
        lua_createtable(co, 0, 4);
        lua_pushstring(co, e->event ? e->event : "message");
        lua_setfield(co, -2, "event");
        lua_pushlstring(co, e->data ? e->data : "", e->dlen);
        lua_setfield(co, -2, "data");
        if (e->id) {
            lua_pushstring(co, e->id);
            lua_setfield(co, -2, "id");
        }
        if (e->retry >= 0) {
            lua_pushinteger(co, e->retry);
            lua_setfield(co, -2, "retry");
        }
    }
    sse_ev_free(e);
}

/* Resumes the waiter with the nargs values already pushed on its stack. Touches nothing of
 * `op` afterwards: the coroutine may have freed it. */
static void wake(hop_t *op, int nargs)
{
    hbind_t *b = op->b;
    lua_State *co = op->co;
    int ref = op->co_ref;
    op->co = NULL;
    op->co_ref = LUA_NOREF;
    op->waiting = W_NONE;
    lg_lapi_http_resume(co, nargs);
    luaL_unref(b->L, LUA_REGISTRYINDEX, ref);
}

/* Delivers whatever the waiting coroutine was waiting for, when it is there. */
static void deliver(hop_t *op)
{
    if (op->msg_done && op->uc) {
        lg_upstream_release(op->uc, op->keepalive && !op->failed);
        op->uc = NULL;
    }
    lua_State *co = op->co;
    if (!co)
        return;
    switch (op->waiting) {
    case W_DONE: {
        if (op->failed) {
            lua_pushnil(co);
            lua_pushstring(co, op->err ? op->err : "request failed");
            evtimer_del(op->timer);
            hbind_t *b = op->b;
            int ref = op->co_ref;
            op->co_ref = LUA_NOREF;
            op_free(op);
            lg_lapi_http_resume(co, 2);
            luaL_unref(b->L, LUA_REGISTRYINDEX, ref);
            return;
        }
        if (!op->msg_done)
            return;
        lua_createtable(co, 0, 3);
        lua_pushinteger(co, op->status);
        lua_setfield(co, -2, "status");
        push_headers(co, op);
        lua_setfield(co, -2, "headers");
        size_t n = evbuffer_get_length(op->body);
        lua_pushlstring(co, (const char *)evbuffer_pullup(op->body, -1), n);
        lua_setfield(co, -2, "body");
        hbind_t *b = op->b;
        int ref = op->co_ref;
        op->co_ref = LUA_NOREF;
        op_free(op);
        lg_lapi_http_resume(co, 1);
        luaL_unref(b->L, LUA_REGISTRYINDEX, ref);
        return;
    }
    case W_HEAD:
        if (op->failed) {
            lua_pushnil(co);
            lua_pushstring(co, op->err ? op->err : "request failed");
            hbind_t *b = op->b;
            int ref = op->co_ref;
            op->co_ref = LUA_NOREF;
            op_free(op);
            lg_lapi_http_resume(co, 2);
            luaL_unref(b->L, LUA_REGISTRYINDEX, ref);
            return;
        }
        if (!op->head_done)
            return;
        evtimer_del(op->timer);
        push_handle(co, op);
        wake(op, 1);
        return;
    case W_READ:
        if (op->qh && !op->closed) {
            evtimer_del(op->timer);
            push_next(co, op);
            wake(op, 1);
        } else if (op->failed || op->closed) {
            evtimer_del(op->timer);
            lua_pushnil(co);
            lua_pushstring(co, op->closed ? "closed" : op->err ? op->err : "stream failed");
            int closed = op->closed;
            hbind_t *b = op->b;
            lua_State *c = op->co;
            int ref = op->co_ref;
            op->co = NULL;
            op->co_ref = LUA_NOREF;
            op->waiting = W_NONE;
            if (closed)
                op_free(op); /* the handle let go of it already */
            lg_lapi_http_resume(c, 2);
            luaL_unref(b->L, LUA_REGISTRYINDEX, ref);
        } else if (op->msg_done) {
            evtimer_del(op->timer);
            lua_pushnil(co);
            wake(op, 1);
        }
        return;
    default:
        return;
    }
}

static void fail(hop_t *op, const char *msg)
{
    if (!op->failed) {
        op->failed = 1;
        free(op->err);
        op->err = lg_xstrdup(msg);
    }
    if (op->uc) {
        lg_upstream_release(op->uc, 0);
        op->uc = NULL;
    }
}

/* ---- Response parsing ---- */

static void queue_item(hop_t *op, sse_ev_t *e)
{
    if (op->qt)
        op->qt->next = e;
    else
        op->qh = e;
    op->qt = e;
    op->qbytes += e->dlen;
    if (op->qbytes > STREAM_MAX_QUEUED)
        fail(op, "stream buffer overflow (reader too slow)");
}

static void sse_field(hop_t *op, char *line, size_t n)
{
    char *colon = memchr(line, ':', n);
    size_t fl = colon ? (size_t)(colon - line) : n;
    const char *v = colon ? colon + 1 : "";
    size_t vl = colon ? n - fl - 1 : 0;
    if (vl && *v == ' ')
        v++, vl--;
    if (fl == 0)
        return; /* comment */
    if (fl == 4 && memcmp(line, "data", 4) == 0) {
        if (op->ev_has_data)
            evbuffer_add(op->ev_data, "\n", 1);
        evbuffer_add(op->ev_data, v, vl);
        op->ev_has_data = 1;
    } else if (fl == 5 && memcmp(line, "event", 5) == 0) {
        free(op->ev_name);
        op->ev_name = lg_xstrndup(v, vl);
    } else if (fl == 2 && memcmp(line, "id", 2) == 0) {
        free(op->ev_id);
        op->ev_id = lg_xstrndup(v, vl);
    } else if (fl == 5 && memcmp(line, "retry", 5) == 0) {
        op->ev_retry = strtol(v, NULL, 10);
    }
}

static void sse_dispatch(hop_t *op)
{
    if (!op->ev_has_data && !op->ev_name) {
        op->ev_retry = -1;
        return;
    }
    sse_ev_t *e = lg_xcalloc(1, sizeof(*e));
    e->dlen = evbuffer_get_length(op->ev_data);
    e->data = lg_xmalloc(e->dlen + 1);
    evbuffer_remove(op->ev_data, e->data, e->dlen);
    e->data[e->dlen] = 0;
    e->event = op->ev_name;
    e->id = op->ev_id ? lg_xstrdup(op->ev_id) : NULL; /* the last id persists per spec */
    e->retry = op->ev_retry;
    op->ev_name = NULL;
    op->ev_has_data = 0;
    op->ev_retry = -1;
    queue_item(op, e);
}

static void sse_feed(hop_t *op, const char *data, size_t len)
{
    evbuffer_add(op->sse_in, data, len);
    size_t n;
    char *line;
    while (!op->failed && (line = evbuffer_readln(op->sse_in, &n, EVBUFFER_EOL_CRLF))) {
        if (n == 0)
            sse_dispatch(op);
        else
            sse_field(op, line, n);
        free(line);
    }
    if (evbuffer_get_length(op->sse_in) > STREAM_MAX_QUEUED)
        fail(op, "SSE line too long");
}

static void push_header_pair(hop_t *op)
{
    size_t nl = evbuffer_get_length(op->hname), vl = evbuffer_get_length(op->hval);
    if (nl == 0)
        return;
    if (op->nh == op->hcap) {
        op->hcap = op->hcap ? op->hcap * 2 : 16;
        op->hdrs = lg_xrealloc(op->hdrs, op->hcap * 2 * sizeof(char *));
    }
    char *n = lg_xmalloc(nl + 1), *v = lg_xmalloc(vl + 1);
    evbuffer_remove(op->hname, n, nl);
    evbuffer_remove(op->hval, v, vl);
    n[nl] = v[vl] = 0;
    for (size_t i = 0; i < nl; i++)
        n[i] = (char)tolower((unsigned char)n[i]);
    op->hdrs[2 * op->nh] = n;
    op->hdrs[2 * op->nh + 1] = v;
    op->nh++;
    op->in_value = 0;
}

static int on_hfield(http_parser *p, const char *at, size_t len)
{
    hop_t *op = p->data;
    if (op->in_value)
        push_header_pair(op);
    evbuffer_add(op->hname, at, len);
    return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t len)
{
    hop_t *op = p->data;
    op->in_value = 1;
    evbuffer_add(op->hval, at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    hop_t *op = p->data;
    push_header_pair(op);
    op->status = p->status_code;
    op->head_done = 1;
    for (size_t i = 0; i < op->nh; i++)
        if (strcmp(op->hdrs[2 * i], "content-type") == 0 &&
            strncasecmp(op->hdrs[2 * i + 1], "text/event-stream", 17) == 0)
            op->sse = op->stream;
    return op->is_head ? 1 : 0; /* 1: no body follows */
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    hop_t *op = p->data;
    if (op->failed)
        return 0;
    if (!op->stream) {
        if (evbuffer_get_length(op->body) + len > BODY_MAX)
            fail(op, "response body too large");
        else
            evbuffer_add(op->body, at, len);
    } else if (op->sse) {
        sse_feed(op, at, len);
    } else {
        sse_ev_t *e = lg_xcalloc(1, sizeof(*e));
        e->data = lg_xstrndup(at, len);
        e->dlen = len;
        e->retry = -1;
        queue_item(op, e);
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    hop_t *op = p->data;
    op->msg_done = 1;
    op->keepalive = http_should_keep_alive(p);
    if (op->sse && (op->ev_has_data || op->ev_name))
        sse_dispatch(op);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_header_field = on_hfield,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- Connection events ---- */

static void start(hop_t *op);

static void read_cb(struct bufferevent *bev, void *arg)
{
    hop_t *op = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    if (n == 0)
        return;
    op->got_bytes = 1;
    if (!op->msg_done && !op->failed) {
        const char *data = (const char *)evbuffer_pullup(in, -1);
        size_t done = http_parser_execute(&op->p, &parser_settings, data, n);
        if (op->p.http_errno != HPE_OK && !op->failed) {
            char msg[200];
            snprintf(msg, sizeof(msg), "bad response from %s: %s", op->be->name,
                     http_errno_description(HTTP_PARSER_ERRNO(&op->p)));
            evbuffer_drain(in, n);
            fail(op, msg);
        } else {
            evbuffer_drain(in, done);
            if (op->msg_done)
                evbuffer_drain(in, evbuffer_get_length(in));
        }
    } else {
        evbuffer_drain(in, n);
    }
    deliver(op);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    hop_t *op = arg;
    LG_UNUSED(bev);
    if (!op->got_bytes && op->uc && op->uc->reused && !op->retried) {
        /* a pooled connection the server had closed: once more on a fresh one */
        op->retried = 1;
        lg_upstream_release(op->uc, 0);
        op->uc = NULL;
        reset_response(op);
        start(op);
        if (op->failed)
            deliver(op);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        http_parser_execute(&op->p, &parser_settings, NULL,
                            0); /* EOF ends a close-delimited body */
        if (!op->msg_done) {
            char msg[200];
            snprintf(msg, sizeof(msg), "%s closed the connection%s", op->be->name,
                     op->head_done ? " mid-body" : " before answering");
            fail(op, msg);
        }
        if (op->uc) {
            lg_upstream_release(op->uc, 0);
            op->uc = NULL;
        }
    } else {
        char msg[200];
        int e = EVUTIL_SOCKET_ERROR();
        snprintf(msg, sizeof(msg), "connection to %s failed: %s", op->be->name,
                 e ? evutil_socket_error_to_string(e) : "error");
        fail(op, msg);
    }
    deliver(op);
}

static void send_request(hop_t *op)
{
    struct bufferevent *bev = op->uc->bev;
    bufferevent_setcb(bev, read_cb, NULL, event_cb, op);
    size_t n = evbuffer_get_length(op->req);
    bufferevent_write(bev, evbuffer_pullup(op->req, -1), n);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void ready_cb(lg_upconn_t *uc, int status, const char *msg, void *arg)
{
    hop_t *op = arg;
    if (status != LG_OK) {
        op->uc = NULL;
        fail(op, msg ? msg : "connect failed");
        deliver(op);
        return;
    }
    op->uc = uc;
    send_request(op);
}

static void start(hop_t *op)
{
    lg_err_t err = {0};
    lg_upconn_t *uc =
        lg_upstream_acquire(op->b->pool, op->be, CONNECT_TIMEOUT_MS, ready_cb, op, &err);
    if (!uc) {
        fail(op, err.msg[0] ? err.msg : "connect failed");
        return;
    }
    op->uc = uc;
    if (uc->reused)
        send_request(op);
}

static void op_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    hop_t *op = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    if (op->waiting == W_READ && !op->closed && !op->failed && op->co) {
        /* a read timeout leaves the stream usable */
        lua_pushnil(op->co);
        lua_pushliteral(op->co, "timeout");
        wake(op, 2);
        return;
    }
    if (op->closed) {
        deliver(op); /* wakes a reader of a closed handle */
        return;
    }
    char msg[200];
    snprintf(msg, sizeof(msg), "request to %s timed out", op->be->name);
    fail(op, msg);
    deliver(op);
}

/* ---- lg.http.request / lg.http.stream ---- */

static const char *opt_string(lua_State *L, const char *k, size_t *len)
{
    lua_getfield(L, 1, k);
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* the table keeps the string alive */
    return s;
}

static lua_Integer opt_int(lua_State *L, const char *k, lua_Integer def)
{
    lua_getfield(L, 1, k);
    lua_Integer v = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, const char *k)
{
    lua_getfield(L, 1, k);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int has_header(lua_State *L, const char *name)
{
    int found = 0;
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) { /* ... h */
        lua_pushnil(L);
        while (lua_next(L, -2)) { /* ... h k v */
            if (lua_type(L, -2) == LUA_TSTRING && strcasecmp(lua_tostring(L, -2), name) == 0)
                found = 1;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return found;
}

/* Builds the operation from the options table at 1; NULL with an error message pushed. */
static hop_t *build(lua_State *L, hbind_t *b, int stream)
{
    char host[256], path_buf[16];
    int port = 0, tls = 0;
    size_t ulen = 0, plen = 0, blen = 0;
    const char *url = opt_string(L, "url", &ulen);
    const char *path = NULL;
    if (url) {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(url, ulen, 0, &u) != 0 || !(u.field_set & (1 << UF_HOST)) ||
            !(u.field_set & (1 << UF_SCHEMA))) {
            lua_pushnil(L);
            lua_pushliteral(L, "invalid url"); /* not echoed: a query may carry a key */
            return NULL;
        }
        size_t sl = u.field_data[UF_SCHEMA].len;
        const char *sc = url + u.field_data[UF_SCHEMA].off;
        if (sl == 5 && strncasecmp(sc, "https", 5) == 0)
            tls = 1;
        else if (!(sl == 4 && strncasecmp(sc, "http", 4) == 0)) {
            lua_pushnil(L);
            lua_pushfstring(L, "unsupported url scheme '%s'", lua_pushlstring(L, sc, sl));
            lua_remove(L, -2);
            return NULL;
        }
        size_t hl = u.field_data[UF_HOST].len;
        if (hl >= sizeof(host))
            hl = sizeof(host) - 1;
        memcpy(host, url + u.field_data[UF_HOST].off, hl);
        host[hl] = 0;
        port = (u.field_set & (1 << UF_PORT)) ? u.port : tls ? 443 : 80;
        if (u.field_set & (1 << UF_PATH)) {
            path = url + u.field_data[UF_PATH].off;
            plen = ulen - u.field_data[UF_PATH].off; /* path, query and fragment */
            const char *hash = memchr(path, '#', plen);
            if (hash)
                plen = (size_t)(hash - path);
        } else if (u.field_set & (1 << UF_QUERY)) {
            path = url + u.field_data[UF_QUERY].off - 1;
            plen = ulen - u.field_data[UF_QUERY].off + 1;
        }
    } else {
        const char *h = opt_string(L, "host", NULL);
        if (!h)
            luaL_error(L, "bad argument #1 (url or host required)");
        snprintf(host, sizeof(host), "%s", h);
        tls = opt_bool(L, "tls");
        port = (int)opt_int(L, "port", tls ? 443 : 80);
        path = opt_string(L, "path", &plen);
    }
    if (!path || plen == 0) {
        strcpy(path_buf, "/");
        path = path_buf;
        plen = 1;
    }
    if (port <= 0 || port > 65535) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid port %d", port);
        return NULL;
    }
    lg_backend_t *be = get_backend(b, host, port, tls, opt_bool(L, "insecure"));
    if (!be) {
        lua_pushnil(L);
        lua_pushliteral(L, "cannot create TLS client context");
        return NULL;
    }
    const char *method = opt_string(L, "method", NULL);
    const char *body = opt_string(L, "body", &blen);
    if (!method)
        method = body ? "POST" : "GET";

    hop_t *op = lg_xcalloc(1, sizeof(*op));
    op->b = b;
    op->be = be;
    op->co_ref = LUA_NOREF;
    op->stream = stream;
    op->ev_retry = -1;
    op->is_head = strcasecmp(method, "HEAD") == 0;
    op->hname = evbuffer_new();
    op->hval = evbuffer_new();
    op->body = evbuffer_new();
    op->req = evbuffer_new();
    op->sse_in = evbuffer_new();
    op->ev_data = evbuffer_new();
    op->timer = evtimer_new(b->base, op_timer_cb, op);
    op->timeout_ms = (int)opt_int(L, "timeout_ms", DEFAULT_TIMEOUT_MS);
    http_parser_init(&op->p, HTTP_RESPONSE);
    op->p.data = op;

    struct evbuffer *r = op->req;
    evbuffer_add_printf(r, "%s %.*s HTTP/1.1\r\n", method, (int)plen, path);
    if (!has_header(L, "host")) {
        int dflt = port == (tls ? 443 : 80);
        const char *fmt = strchr(host, ':') ? (dflt ? "Host: [%s]\r\n" : "Host: [%s]:%d\r\n")
                                            : (dflt ? "Host: %s\r\n" : "Host: %s:%d\r\n");
        evbuffer_add_printf(r, fmt, host, port);
    }
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) { /* ... h k v */
            size_t kl, vl;
            const char *k = lua_tolstring(L, -2, &kl);
            const char *v = lua_tolstring(L, -1, &vl);
            if (lua_type(L, -2) == LUA_TSTRING && v && !memchr(k, '\n', kl) &&
                !memchr(v, '\n', vl) && !memchr(v, '\r', vl)) {
                evbuffer_add(r, k, kl);
                evbuffer_add(r, ": ", 2);
                evbuffer_add(r, v, vl);
                evbuffer_add(r, "\r\n", 2);
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if ((body || strcasecmp(method, "POST") == 0 || strcasecmp(method, "PUT") == 0 ||
         strcasecmp(method, "PATCH") == 0) &&
        !has_header(L, "content-length"))
        evbuffer_add_printf(r, "Content-Length: %zu\r\n", blen);
    evbuffer_add(r, "\r\n", 2);
    if (body)
        evbuffer_add(r, body, blen);

    op->next = b->ops;
    if (b->ops)
        b->ops->prev = op;
    b->ops = op;
    return op;
}

static int begin(lua_State *L, int stream, const char *fname)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    check_yieldable(L, fname);
    hbind_t *b = get_bind(L);
    if (!b || !b->base)
        return luaL_error(L, "%s: no event loop bound to this state", fname);
    hop_t *op = build(L, b, stream);
    if (!op)
        return 2; /* nil, err */
    start(op);
    if (op->failed) {
        lua_pushnil(L);
        lua_pushstring(L, op->err);
        op_free(op);
        return 2;
    }
    op->co = L;
    op->co_ref = hold_thread(L);
    op->waiting = stream ? W_HEAD : W_DONE;
    arm_timer(op, op->timeout_ms);
    return lua_yield(L, 0);
}

static int http_request(lua_State *L)
{
    return begin(L, 0, "lg.http.request");
}

static int http_stream(lua_State *L)
{
    return begin(L, 1, "lg.http.stream");
}

static hhandle_t *check_handle(lua_State *L)
{
    return luaL_checkudata(L, 1, HANDLE_MT);
}

static int h_read(lua_State *L)
{
    hhandle_t *h = check_handle(L);
    lua_Integer tmo = luaL_optinteger(L, 2, 0);
    hop_t *op = h->op;
    if (!op) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    if (op->co)
        return luaL_error(L, "read: another coroutine is already reading this stream");
    if (op->qh) {
        push_next(L, op);
        return 1;
    }
    if (op->failed) {
        lua_pushnil(L);
        lua_pushstring(L, op->err ? op->err : "stream failed");
        return 2;
    }
    if (op->msg_done) {
        lua_pushnil(L);
        return 1;
    }
    check_yieldable(L, "read");
    op->co = L;
    op->co_ref = hold_thread(L);
    op->waiting = W_READ;
    arm_timer(op, (int)tmo);
    return lua_yield(L, 0);
}

static void handle_close(hhandle_t *h)
{
    hop_t *op = h->op;
    if (!op)
        return;
    h->op = NULL;
    op->handle = NULL;
    if (op->uc) {
        lg_upstream_release(op->uc, op->msg_done && op->keepalive && !op->failed);
        op->uc = NULL;
    }
    if (op->co) {
        /* another coroutine waits in read(): wake it from the loop, not from here */
        op->closed = 1;
        struct timeval tv = {0, 0};
        evtimer_add(op->timer, &tv);
        return;
    }
    op_free(op);
}

static int h_close(lua_State *L)
{
    handle_close(check_handle(L));
    return 0;
}

static int h_gc(lua_State *L)
{
    handle_close(lua_touserdata(L, 1));
    return 0;
}

static int h_index(lua_State *L)
{
    /* methods first, then the status/headers/sse fields */
    luaL_getmetatable(L, HANDLE_MT); /* h k mt */
    lua_getfield(L, -1, "methods");  /* h k mt methods */
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
        return 1;
    lua_getiuservalue(L, 1, 1); /* ... fields */
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* ---- Cancellation and injection ---- */

void lg_lapi_http_cancel(lua_State *co)
{
    lg_lapi_http_wait_cancel(co);
    hbind_t *b = get_bind(co);
    if (!b)
        return;
    for (hop_t *op = b->ops, *next; op; op = next) {
        next = op->next;
        if (op->co != co)
            continue;
        if (op->waiting == W_READ && !op->closed) {
            evtimer_del(op->timer);
            luaL_unref(b->L, LUA_REGISTRYINDEX, op->co_ref);
            op->co = NULL;
            op->co_ref = LUA_NOREF;
            op->waiting = W_NONE;
        } else {
            op_free(op);
        }
    }
}

void lg_lapi_inject_http(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"request", http_request},
        {"stream", http_stream},
        {NULL, NULL},
    };
    static const luaL_Reg hmethods[] = {{"read", h_read}, {"close", h_close}, {NULL, NULL}};

    if (luaL_newmetatable(L, HANDLE_MT)) { /* lg mt */
        luaL_newlib(L, hmethods);          /* lg mt methods */
        lua_setfield(L, -2, "methods");
        lua_pushcfunction(L, h_index);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, h_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, h_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);                 /* lg */
    luaL_newlib(L, fns);           /* lg http */
    lg_lapi_http_wait_register(L); /* lg http (+ sleep, event) */
    lua_setfield(L, -2, "http");   /* lg */
}
