/* hooks.c -- what the proxy asks at each point of a request: CORS, plugins, LLM
 * providers and telemetry.
 * SPDX-License-Identifier: MIT */
#include "hooks.h"

#include <event2/bufferevent.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/ssl.h>

#include "lapi.h"
#include "luart.h"
#include "proxy.h"
#include "runtime.h"
#include "trace.h"
#include "lapi_http.h"
#include "lapi_proc.h"
#include "llmnative.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- CORS ---- */

static const char *allowed_origin(lg_req_t *r, size_t *olen)
{
    const lg_cors_t *cors = r->route ? r->route->cors : NULL;
    size_t l;
    const char *origin;
    if (!cors || !(origin = lg_req_header(r, "origin", 6, &l)))
        return NULL;
    for (size_t i = 0; i < cors->norigins; i++) {
        const char *o = cors->origins[i];
        if ((o[0] == '*' && o[1] == '\0') || (strlen(o) == l && strncasecmp(o, origin, l) == 0)) {
            *olen = l;
            return origin;
        }
        /* wildcard origins such as https://STAR.example.com */
        const char *star = strchr(o, '*');
        if (star) {
            size_t pre = (size_t)(star - o), suf = strlen(star + 1);
            if (l >= pre + suf && strncasecmp(origin, o, pre) == 0 &&
                strncasecmp(origin + l - suf, star + 1, suf) == 0) {
                *olen = l;
                return origin;
            }
        }
    }
    return NULL;
}

int lg_hooks_cors_preflight(lg_req_t *r)
{
    size_t ol, ml;
    const lg_cors_t *cors = r->route->cors;
    if (!cors || r->method != HTTP_OPTIONS ||
        !lg_req_header(r, "access-control-request-method", 29, &ml))
        return 0;
    const char *origin = allowed_origin(r, &ol);
    if (!origin) {
        r->reason = "DirectResponse";
        lg_req_respond(r, 200, NULL, "", 0, NULL, 0);
        return 1;
    }
    lg_kv_t h[4];
    size_t n = 0;
    char maxage[32];
    if (cors->allow_methods)
        h[n++] = (lg_kv_t){"Access-Control-Allow-Methods", 28, cors->allow_methods, 0};
    if (cors->allow_headers)
        h[n++] = (lg_kv_t){"Access-Control-Allow-Headers", 28, cors->allow_headers, 0};
    if (cors->max_age >= 0) {
        snprintf(maxage, sizeof(maxage), "%d", cors->max_age);
        h[n++] = (lg_kv_t){"Access-Control-Max-Age", 22, maxage, 0};
    }
    r->reason = "DirectResponse";
    lg_req_respond(r, 200, NULL, "", 0, h, n); /* CORS origin headers added by respond */
    return 1;
}

void lg_hooks_cors_headers(lg_req_t *r, struct evbuffer *out)
{
    size_t ol;
    const char *origin = allowed_origin(r, &ol);
    if (!origin)
        return;
    const lg_cors_t *cors = r->route->cors;
    evbuffer_add_printf(out, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n", (int)ol,
                        origin);
    if (cors->allow_credentials)
        evbuffer_add(out, "Access-Control-Allow-Credentials: true\r\n", 40);
    if (cors->expose_headers && r->method != HTTP_OPTIONS)
        evbuffer_add_printf(out, "Access-Control-Expose-Headers: %s\r\n", cors->expose_headers);
}

/* ---- Per-worker Lua runtime ----
 * One lg_luart_t per worker, rebuilt on every configuration change. Requests hold a
 * reference to the runtime they started on, so a reload never pulls a state from under a
 * request in flight. */

typedef struct lg_wrt {
    lg_luart_t *rt;
    lg_conf_t *conf;
    int *chains;             /* per route index: plugin chain id or -1 */
    char *llm;               /* per route index: 1 when the route has an ai backend */
    char *mcp;               /* per route index: 1 when the route has an mcp backend */
    lg_llmn_plan_t ***plans; /* per route index, per backend: the C chat completions path */
    size_t *nplans;          /* per route index: backends in plans[] */
    struct mcpio *ios;       /* MCP requests whose coroutine is alive */
    int glue_ref;            /* registry ref of the lunagate.glue module */
    uint64_t next_id;
    SSL_CTX *tls;              /* client context for provider hosts (system roots) */
    int refs;                  /* the worker's, plus one per request using it */
    int tracing;               /* config.tracing is set */
    int fast_log;              /* glue.fast_log(): 0 Lua, 1 text in C, 2 json in C, 3 none */
    int span_fast;             /* glue.span_fast(): plain spans have only default attributes */
    int needs_headers;         /* some expression reads request headers: put them in the record */
    int user_log_code;         /* logging.format names a user plugin: run it under the budget */
    double random_p, client_p; /* sampling probabilities (random_p < 0: CEL) */
    struct rlua *spare;        /* finished requests' states, for the next ones */
    int nspare;
} lg_wrt_t;

#define SPARE_MAX 64

typedef struct rlua {
    lg_luart_t *rt; /* referenced */
    lg_wrt_t *wrt;
    lg_luart_req_t lr;
    int chain;
    uint64_t id; /* glue request id, 0 when glue has no state for the request */
    int llm, rewrite, observe, logged;
    lg_llmn_t *native; /* on the C chat completions path (llmnative.c) */
    struct mcpio *io;
    struct event *ev;
    struct evbuffer *sse; /* partial SSE event for body_filter plugins */
    int sse_mode;
    struct rlua *next_spare; /* in wrt->spare */
} rlua_t;

#define MCPIO "lunagate.mcpio"
static int mcp_resumer(lua_State *co, int nargs, void *arg);
static int io_gc(lua_State *L);

static void wrt_free(lg_wrt_t *wrt)
{
    if (!wrt || --wrt->refs > 0)
        return;
    if (wrt->rt) {
        lua_State *L = lg_luart_state(wrt->rt);
        luaL_unref(L, LUA_REGISTRYINDEX, wrt->glue_ref);
        lg_luart_unref(wrt->rt);
    }
    if (wrt->tls)
        SSL_CTX_free(wrt->tls);
    while (wrt->spare) {
        rlua_t *next = wrt->spare->next_spare;
        free(wrt->spare);
        wrt->spare = next;
    }
    if (wrt->plans) {
        for (size_t i = 0; i <= wrt->conf->nroutes; i++) {
            for (size_t k = 0; k < wrt->nplans[i]; k++)
                lg_llmn_plan_free(wrt->plans[i][k]);
            free(wrt->plans[i]);
        }
        free(wrt->plans);
        free(wrt->nplans);
    }
    free(wrt->chains);
    free(wrt->llm);
    free(wrt->mcp);
    lg_conf_unref(wrt->conf);
    free(wrt);
}

static void plugin_error_cb(const char *plugin, const char *phase, void *arg)
{
    LG_UNUSED(phase);
    lg_runtime_plugin_error((lg_worker_t *)arg, plugin);
}

/* Calls glue.<fn> with nargs arguments already pushed after the function slot. */
static int glue_get(lg_wrt_t *wrt, const char *fn)
{
    lua_State *L = lg_luart_state(wrt->rt);
    lua_rawgeti(L, LUA_REGISTRYINDEX, wrt->glue_ref); /* glue */
    lua_getfield(L, -1, fn);                          /* glue fn */
    lua_remove(L, -2);                                /* fn */
    return lua_isfunction(L, -1);
}

static int glue_call(lg_wrt_t *wrt, int nargs, int nres, const char *what)
{
    lg_err_t err;
    /* glue, providers and telemetry are ours: no instruction budget (user plugins keep it) */
    if (lg_luart_pcall_trusted(wrt->rt, nargs, nres, what, &err) != LG_OK) {
        lg_log(LG_LOG_ERR, "lua", "%s", err.msg);
        return LG_ERR;
    }
    return LG_OK;
}

/* Calls glue.<fn>() for a setting of the runtime: 1 with its nres results on the stack, 0
 * (nothing pushed) when glue has no such function or it failed. */
static int glue_ask(lg_wrt_t *wrt, const char *fn, int nres, lg_err_t *err)
{
    if (!glue_get(wrt, fn)) {
        lua_pop(lg_luart_state(wrt->rt), 1);
        return 0;
    }
    char what[64];
    snprintf(what, sizeof(what), "glue.%s", fn);
    return lg_luart_pcall(wrt->rt, 0, nres, what, err) == LG_OK;
}

/* The upstream and headers of a native plan, made once: what set_upstream and
 * lg_lapi_header_change would make for every request. */
static void plan_prepare(lg_wrt_t *wrt, lg_llmn_plan_t *p)
{
    lg_backend_t *b = &p->backend;
    char name[300], key[512];
    b->kind = LG_BACKEND_HOST;
    b->host = p->host;
    b->port = p->port;
    b->tls = p->tls;
    b->sni = p->tls ? (p->sni ? p->sni : p->host) : NULL;
    b->ssl = p->tls ? wrt->tls : NULL;
    b->weight = 1;
    snprintf(name, sizeof(name), "%s:%d", p->host, p->port);
    b->name = lg_xstrdup(name);
    snprintf(key, sizeof(key), "%s|%d|%d|%s|%p", b->host, b->port, b->tls, b->sni ? b->sni : "",
             (void *)b->ssl);
    b->pool_key = lg_xstrdup(key);
    p->up_host = lg_xstrdup(p->host_header);
    p->hdrs[0] = (lg_kv_t){"content-type", 12, "application/json", 16};
    p->nhdrs = 1;
    if (p->auth_name)
        p->hdrs[p->nhdrs++] =
            (lg_kv_t){p->auth_name, strlen(p->auth_name), p->auth_value, strlen(p->auth_value)};
}

/* glue.native_plan for each backend of an LLM route. */
static void native_plans(lg_wrt_t *wrt, const lg_route_t *r)
{
    lua_State *L = lg_luart_state(wrt->rt);
    if (!wrt->plans) {
        wrt->plans = lg_xcalloc(wrt->conf->nroutes + 1, sizeof(*wrt->plans));
        wrt->nplans = lg_xcalloc(wrt->conf->nroutes + 1, sizeof(*wrt->nplans));
    }
    wrt->plans[r->index] = lg_xcalloc(r->nbackends, sizeof(lg_llmn_plan_t *));
    wrt->nplans[r->index] = r->nbackends;
    for (size_t i = 0; i < r->nbackends; i++) {
        if (r->backends[i].kind != LG_BACKEND_AI)
            continue;
        if (!glue_get(wrt, "native_plan")) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushinteger(L, r->index);
        lua_pushinteger(L, (lua_Integer)i);
        if (glue_call(wrt, 2, 1, "glue.native_plan") == LG_OK) {
            lg_llmn_plan_t *p = lg_llmn_plan_new(L, -1);
            lua_pop(L, 1);
            if (p)
                plan_prepare(wrt, p);
            wrt->plans[r->index][i] = p;
        }
    }
}

static lg_wrt_t *wrt_new(lg_worker_t *w, lg_conf_t *conf, lg_err_t *err)
{
    lg_luart_opts_t o;
    memset(&o, 0, sizeof(o));
    o.config_text = conf->text;
    o.config_len = conf->text_len;
    o.config_file = conf->filename;
    o.worker_id = w ? w->id : -1;
    o.skip_init_worker = w == NULL;
    o.on_error = plugin_error_cb;
    o.on_error_arg = w;
    lg_luart_t *rt = lg_luart_new(&o, err);
    if (!rt)
        return NULL;
    lg_wrt_t *wrt = lg_xcalloc(1, sizeof(*wrt));
    wrt->refs = 1;
    wrt->rt = rt;
    wrt->conf = lg_conf_ref(conf);
    wrt->next_id = 1;
    lua_State *L = lg_luart_state(rt);
    if (w) {
        lg_lapi_http_bind(L, w->base, w->pool);
        lg_lapi_http_set_resumer(L, mcp_resumer, wrt);
    }
    luaL_newmetatable(L, MCPIO);
    lua_pushcfunction(L, io_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lunagate.glue");
    if (lg_luart_pcall(rt, 1, 1, "require lunagate.glue", err) != LG_OK) {
        wrt->glue_ref = LUA_NOREF;
        wrt_free(wrt);
        return NULL;
    }
    wrt->glue_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    glue_get(wrt, "init");
    lg_luart_push_config(rt);
    if (lg_luart_pcall(rt, 1, 2, "glue.init", err) != LG_OK) {
        wrt_free(wrt);
        return NULL;
    }
    if (!lua_toboolean(L, -2)) {
        lg_err_set(err, 0, "%s: %s", conf->filename, lua_tostring(L, -1));
        lua_pop(L, 2);
        wrt_free(wrt);
        return NULL;
    }
    lua_pop(L, 2);
    if (glue_ask(wrt, "needs_headers", 1, err)) {
        wrt->needs_headers = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (glue_ask(wrt, "user_log_code", 1, err)) {
        wrt->user_log_code = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (glue_ask(wrt, "fast_log", 1, err)) {
        wrt->fast_log = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (glue_ask(wrt, "span_fast", 1, err)) {
        wrt->span_fast = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    /* sampling: glue.sampling() -> enabled, random probability (or -1 for CEL), client */
    if (glue_ask(wrt, "sampling", 3, err)) {
        wrt->tracing = lua_toboolean(L, -3);
        wrt->random_p = lua_isnumber(L, -2) ? lua_tonumber(L, -2) : 0;
        wrt->client_p = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 1;
        lua_pop(L, 3);
    }
    wrt->tls = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(wrt->tls, TLS1_2_VERSION);
    SSL_CTX_set_verify(wrt->tls, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_default_verify_paths(wrt->tls);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(wrt->tls, alpn, sizeof(alpn) - 1);
    wrt->chains = lg_xcalloc(conf->nroutes + 1, sizeof(int));
    wrt->llm = lg_xcalloc(conf->nroutes + 1, 1);
    wrt->mcp = lg_xcalloc(conf->nroutes + 1, 1);
    for (size_t b = 0; b < conf->nbinds; b++)
        for (size_t l = 0; l < conf->binds[b].nlisteners; l++)
            for (size_t k = 0; k < conf->binds[b].listeners[l].nroutes; k++) {
                lg_route_t *r = &conf->binds[b].listeners[l].routes[k];
                wrt->chains[r->index] = lg_luart_chain(rt, r->full_key);
                for (size_t i = 0; i < r->nbackends; i++) {
                    if (r->backends[i].kind == LG_BACKEND_AI)
                        wrt->llm[r->index] = 1;
                    if (r->backends[i].kind == LG_BACKEND_MCP)
                        wrt->mcp[r->index] = 1;
                }
                if (wrt->llm[r->index])
                    native_plans(wrt, r);
            }
    return wrt;
}

int lg_hooks_check(lg_conf_t *conf, lg_err_t *err)
{
    lg_wrt_t *wrt = wrt_new(NULL, conf, err);
    if (!wrt)
        return LG_ERR;
    wrt_free(wrt);
    return LG_OK;
}

void lg_proxy_conf_changed(lg_worker_t *w)
{
    if (w->wrt && ((lg_wrt_t *)w->wrt)->conf == w->conf)
        return;
    lg_err_t err;
    lg_wrt_t *wrt = wrt_new(w, w->conf, &err);
    if (!wrt) {
        lg_log(LG_LOG_ERR, "lua", "worker %d: cannot build the Lua runtime: %s", w->id, err.msg);
        return;
    }
    wrt_free((lg_wrt_t *)w->wrt);
    w->wrt = (struct lg_wrt *)wrt;
}

void lg_proxy_worker_free(lg_worker_t *w)
{
    wrt_free((lg_wrt_t *)w->wrt);
    w->wrt = NULL;
}

/* ---- Per-request state ---- */

static rlua_t *rl_get(lg_req_t *r)
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    if (r->lua)
        return r->lua;
    if (!wrt || wrt->conf != r->conf)
        return NULL; /* a reload is under way and this worker has no runtime for r->conf */
    rlua_t *rl = wrt->spare;
    if (rl) {
        wrt->spare = rl->next_spare;
        wrt->nspare--;
        memset(rl, 0, sizeof(*rl));
    } else {
        rl = lg_xcalloc(1, sizeof(*rl));
    }
    rl->wrt = wrt;
    wrt->refs++;
    rl->rt = lg_luart_ref(wrt->rt);
    rl->chain = -1;
    lg_luart_req_init(&rl->lr, r);
    r->lua = rl;
    return rl;
}

static void push_headers(lua_State *L, lg_req_t *r, int response)
{
    if (response)
        lg_lapi_push_headers(L, r->rhead ? r->rhead : "", r->rhdrs, r->nrhdrs, r->rextra,
                             r->nrextra);
    else
        lg_lapi_push_headers(L, r->head, r->hdrs, r->nhdrs, r->extra, r->nextra);
}

/* ---- Access ---- */

static void respond_exit(lg_req_t *r, lg_luart_exit_t *ex)
{
    lg_kv_t *h = lg_xcalloc(ex->nheaders + 1, sizeof(lg_kv_t));
    const char *ctype = NULL;
    size_t n = 0;
    for (size_t i = 0; i < ex->nheaders; i++) {
        if (strcasecmp(ex->headers[2 * i], "content-type") == 0) {
            ctype = ex->headers[2 * i + 1];
            continue;
        }
        h[n].name = ex->headers[2 * i];
        h[n].nlen = strlen(h[n].name);
        h[n].value = ex->headers[2 * i + 1];
        h[n++].vlen = strlen(ex->headers[2 * i + 1]);
    }
    r->reason = "DirectResponse";
    lg_req_respond(r, ex->status, ctype ? ctype : "text/plain", ex->body ? ex->body : "", ex->len,
                   h, n);
    free(h);
}

static void internal_error(lg_req_t *r, const char *msg)
{
    char m[160];
    snprintf(
        m, sizeof(m), "%s (request id %016llx)", msg,
        (unsigned long long)(((uint64_t)r->w->id << 48) ^ r->w->nrequests ^ (uint64_t)r->start_us));
    r->reason = "Internal";
    struct evbuffer *b = evbuffer_new();
    lg_json_error(b, m, "internal_error");
    size_t len = evbuffer_get_length(b);
    lg_req_respond(r, 500, "application/json", (const char *)evbuffer_pullup(b, -1), len, NULL, 0);
    evbuffer_free(b);
}

static void local_event_cb(evutil_socket_t fd, short what, void *arg);

/* Sends a local LLM answer (the mock provider, request errors). */
static void llm_local(lg_req_t *r, rlua_t *rl, lua_State *L, int status, int has_events)
{
    /* stack: headers body */
    lg_kv_t h[16];
    size_t n = 0;
    const char *ctype = "application/json";
    lua_pushnil(L);
    while (lua_next(L, -3) != 0 && n < LG_ARRAY_SIZE(h)) {
        const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
        if (k && v) {
            if (strcasecmp(k, "content-type") == 0) {
                ctype = v;
            } else if (strcasecmp(k, "content-length") != 0) {
                h[n].name = (char *)k;
                h[n].nlen = strlen(k);
                h[n].value = (char *)v;
                h[n++].vlen = strlen(v);
            }
        }
        lua_pop(L, 1);
    }
    r->reason = status < 400 ? "Upstream" : "InvalidRequest";
    r->backend = NULL;
    if (!has_events) {
        glue_get(rl->wrt, "llm_local_body");
        lua_pushinteger(L, (lua_Integer)rl->id);
        if (glue_call(rl->wrt, 1, 1, "glue.llm_local_body") != LG_OK) {
            lua_pop(L, 2);
            internal_error(r, "LLM provider failed");
            return;
        }
        size_t blen;
        const char *body = lua_tolstring(L, -1, &blen);
        lg_req_respond(r, status, ctype, body ? body : "", body ? blen : 0, h, n);
        lua_pop(L, 3);
        return;
    }
    /* streaming: head now, events on timers */
    lg_kv_t hh[18];
    memcpy(hh, h, n * sizeof(lg_kv_t));
    hh[n++] = (lg_kv_t){"Content-Type", 12, (char *)ctype, strlen(ctype)};
    hh[n++] = (lg_kv_t){"Cache-Control", 13, "no-cache", 8};
    lg_req_stream_head(r, status, hh, n);
    lua_pop(L, 2);
    rl->ev = evtimer_new(r->w->base, local_event_cb, r);
    struct timeval tv = {0, 0};
    evtimer_add(rl->ev, &tv);
}

static void local_event_cb(evutil_socket_t fd, short what, void *arg)
{
    lg_req_t *r = arg;
    rlua_t *rl = r->lua;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    lua_State *L = lg_luart_state(rl->rt);
    lg_req_hold(r);
    for (;;) {
        glue_get(rl->wrt, "llm_next_event");
        lua_pushinteger(L, (lua_Integer)rl->id);
        if (glue_call(rl->wrt, 1, 3, "glue.llm_next_event") != LG_OK) {
            lg_req_stream_end(r);
            break;
        }
        if (lua_isnil(L, -3)) {
            lua_pop(L, 3);
            lg_req_stream_end(r);
            break;
        }
        double delay = lua_tonumber(L, -3);
        size_t len;
        const char *chunk = lua_tolstring(L, -2, &len);
        int last = lua_toboolean(L, -1);
        if (chunk && len)
            lg_req_stream_data(r, chunk, len);
        lua_pop(L, 3);
        if (last) {
            lg_req_stream_end(r);
            break;
        }
        /* peek the next delay: schedule instead of looping when it is not zero */
        if (delay >= 0) {
            glue_get(rl->wrt, "llm_peek_delay");
            lua_pushinteger(L, (lua_Integer)rl->id);
            double next = 0;
            if (glue_call(rl->wrt, 1, 1, "glue.llm_peek_delay") == LG_OK) {
                next = lua_tonumber(L, -1);
                lua_pop(L, 1);
            }
            if (next > 0) {
                struct timeval tv = {(long)(next / 1000), (long)((long)(next * 1000) % 1000000)};
                evtimer_add(rl->ev, &tv);
                break;
            }
        }
    }
    lg_req_release(r);
}

/* Points the request at an LLM upstream: a per-request backend, method, path, Host. */
static void set_upstream(lg_req_t *r, lg_wrt_t *wrt, const char *host, int port, int tls,
                         const char *sni, const char *method, const char *path,
                         const char *host_header)
{
    lg_backend_t *b = &r->dyn_backend;
    if (r->up_static) { /* (not after native_access today; kept safe) */
        r->up_path = r->up_host = NULL;
        r->up_static = 0;
    }
    free(b->host), free(b->name), free(b->sni);
    b->kind = LG_BACKEND_HOST;
    b->host = lg_xstrdup(host);
    b->port = port;
    b->tls = tls;
    b->sni = b->tls ? lg_xstrdup(sni ? sni : b->host) : NULL;
    b->ssl = b->tls ? wrt->tls : NULL;
    b->insecure = 0;
    char name[300];
    size_t hl = strlen(host);
    if (hl > sizeof(name) - 8)
        hl = sizeof(name) - 8;
    memcpy(name, host, hl);
    name[hl] = ':';
    name[hl + 1 + lg_utoa((uint64_t)(port > 0 ? port : 0), name + hl + 1)] = 0;
    b->name = lg_xstrdup(name);
    b->weight = 1;
    r->backend = b;
    if (method && strcmp(method, http_method_str(r->method)) != 0) {
        free(r->up_method);
        r->up_method = lg_xstrdup(method);
    }
    if (path) {
        free(r->up_path);
        r->up_path = lg_xstrdup(path);
    }
    free(r->up_host);
    r->up_host = lg_xstrdup(host_header                                 ? host_header
                            : (b->tls ? b->port != 443 : b->port != 80) ? name
                                                                        : b->host);
}

/* The C chat completions path (llmnative.c), when the request qualifies: nothing else
 * about it needs Lua (no plugin phase after access, no span, a log line the C formatter
 * writes). LG_DECLINED sends it the Lua way. */
static int native_access(lg_req_t *r, rlua_t *rl, const lg_llmn_plan_t *p)
{
    lg_wrt_t *wrt = rl->wrt;
    if (wrt->fast_log == 0 || r->traced || r->method != HTTP_POST || rl->lr.rec_ref != LUA_NOREF)
        return LG_DECLINED;
    if (rl->chain >= 0 && (lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_HEADER_FILTER) ||
                           lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_BODY_FILTER) ||
                           lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_LOG)))
        return LG_DECLINED;
    const char *path = r->up_path ? r->up_path : r->path;
    size_t plen = r->up_path ? strcspn(r->up_path, "?") : r->path_len;
    if (!lg_llmn_path_ok(path, plen))
        return LG_DECLINED;
    size_t bl = r->body ? evbuffer_get_length(r->body) : 0;
    const char *body = bl ? (const char *)evbuffer_pullup(r->body, -1) : NULL;
    char *patched;
    size_t patched_len;
    lg_llmn_t *n = lg_llmn_request(p, body, bl, r->start_us, &patched, &patched_len);
    if (!n)
        return LG_DECLINED;
    rl->native = n;
    rl->llm = 1;
    rl->observe = 1;
    /* as set_upstream, with the plan's own strings */
    r->backend = &p->backend;
    if (!r->up_static)
        free(r->up_path), free(r->up_host);
    r->up_path = p->path;
    r->up_host = p->up_host;
    r->up_static = 1;
    /* as Backend:new_upstream and apply_auth: these go, then the plan's headers are set */
    static const struct {
        const char *n;
        size_t l;
    } rm[] = {{"content-length", 14}, {"accept-encoding", 15}, {"content-type", 12},
              {"authorization", 13},  {"x-api-key", 9},        {"api-key", 7},
              {"x-goog-api-key", 14}};
    size_t nrm = p->auth_name ? LG_ARRAY_SIZE(rm) : 3;
    size_t al = p->auth_name ? strlen(p->auth_name) : 0;
    for (size_t k = 0; k < r->nhdrs; k++) {
        lg_hslice_t *h = &r->hdrs[k];
        const char *nm = r->head + h->noff;
        for (size_t i = 0; i < nrm && !h->deleted; i++)
            h->deleted = h->nlen == rm[i].l && strncasecmp(nm, rm[i].n, rm[i].l) == 0;
        if (al && !h->deleted)
            h->deleted = h->nlen == al && strncasecmp(nm, p->auth_name, al) == 0;
    }
    for (size_t i = 0; r->nextra && i < nrm; i++) /* headers a plugin added */
        lg_lapi_header_change(NULL, 0, r->head, &r->extra, &r->nextra, rm[i].n, rm[i].l, NULL, 0);
    if (r->nextra && al)
        lg_lapi_header_change(NULL, 0, r->head, &r->extra, &r->nextra, p->auth_name, al, NULL, 0);
    r->fixed = p->hdrs;
    r->nfixed = p->nhdrs;
    if (patched) {
        evbuffer_drain(r->body, bl);
        evbuffer_add(r->body, patched, patched_len);
        free(patched);
    }
    return LG_OK;
}

static int llm_access(lg_req_t *r, rlua_t *rl)
{
    lg_wrt_t *wrt = rl->wrt;
    lua_State *L = lg_luart_state(wrt->rt);
    const lg_route_t *rt = r->route;
    int bi = 0;
    if (rt->nbackends > 1 && rt->total_weight > 0) {
        int pick = (int)((unsigned)random() % (unsigned)rt->total_weight);
        for (size_t i = 0; i < rt->nbackends; i++) {
            if (pick < rt->backends[i].weight) {
                bi = (int)i;
                break;
            }
            pick -= rt->backends[i].weight;
        }
    }
    const lg_llmn_plan_t *plan =
        wrt->plans && (size_t)bi < wrt->nplans[rt->index] ? wrt->plans[rt->index][bi] : NULL;
    if (plan && native_access(r, rl, plan) == LG_OK)
        return LG_OK;
    rl->id = wrt->next_id++;
    rl->llm = 1;
    glue_get(wrt, "llm_request");
    lua_pushinteger(L, (lua_Integer)rl->id);
    lua_pushinteger(L, rt->index);
    lua_pushinteger(L, bi);
    lua_pushstring(L, r->up_method ? r->up_method : http_method_str(r->method));
    if (r->up_path) {
        lua_pushstring(L, r->up_path);
    } else {
        luaL_Buffer pb;
        luaL_buffinit(L, &pb);
        luaL_addlstring(&pb, r->path, r->path_len);
        if (r->query) {
            luaL_addchar(&pb, '?');
            luaL_addlstring(&pb, r->query, r->query_len);
        }
        luaL_pushresult(&pb);
    }
    push_headers(L, r, 0);
    if (r->body && evbuffer_get_length(r->body))
        lua_pushlstring(L, (const char *)evbuffer_pullup(r->body, -1),
                        evbuffer_get_length(r->body));
    else
        lua_pushnil(L);
    lua_pushinteger(L, r->start_us);
    if (glue_call(wrt, 8, 10, "glue.llm_request") != LG_OK) {
        internal_error(r, "LLM request handling failed");
        return LG_ERR;
    }
    int base = lua_gettop(L) - 9; /* kind */
    const char *kind = lua_tostring(L, base);
    if (kind && strcmp(kind, "respond") == 0) {
        int status = (int)lua_tointeger(L, base + 1);
        int has_events = lua_toboolean(L, base + 4);
        lua_settop(L, base + 3); /* kind status headers body */
        lua_remove(L, base);
        lua_remove(L, base); /* headers body */
        llm_local(r, rl, L, status, has_events);
        lua_settop(L, base - 1);
        return LG_DECLINED;
    }
    /* upstream: host port tls sni method path headers_set headers_remove body */
    const char *host = lua_tostring(L, base + 1);
    set_upstream(r, wrt, host ? host : "", (int)lua_tointeger(L, base + 2),
                 lua_toboolean(L, base + 3), lua_tostring(L, base + 4), lua_tostring(L, base + 5),
                 lua_tostring(L, base + 6), NULL);
    /* headers_remove, then headers_set */
    if (lua_istable(L, base + 8)) {
        size_t nrem = lua_rawlen(L, base + 8);
        for (size_t i = 1; i <= nrem; i++) {
            lua_rawgeti(L, base + 8, (lua_Integer)i);
            size_t nl;
            const char *nm = lua_tolstring(L, -1, &nl);
            if (nm)
                lg_lapi_header_change(r->hdrs, r->nhdrs, r->head, &r->extra, &r->nextra, nm, nl,
                                      NULL, 0);
            lua_pop(L, 1);
        }
    }
    if (lua_istable(L, base + 7)) {
        lua_pushnil(L);
        while (lua_next(L, base + 7) != 0) {
            size_t nl, vl;
            const char *nm = lua_tolstring(L, -2, &nl);
            const char *v = lua_tolstring(L, -1, &vl);
            if (nm && v) {
                if (nl == 4 && strncasecmp(nm, "host", 4) == 0) {
                    free(r->up_host);
                    r->up_host = lg_xstrndup(v, vl);
                } else {
                    lg_lapi_header_change(r->hdrs, r->nhdrs, r->head, &r->extra, &r->nextra, nm, nl,
                                          v, vl);
                }
            }
            lua_pop(L, 1);
        }
    }
    if (lua_isstring(L, base + 9)) {
        size_t bl;
        const char *body = lua_tolstring(L, base + 9, &bl);
        if (!r->body)
            r->body = evbuffer_new();
        evbuffer_drain(r->body, evbuffer_get_length(r->body));
        evbuffer_add(r->body, body, bl);
    }
    lua_settop(L, base - 1);
    rl->observe = 1;
    return LG_OK;
}

/* ---- MCP ----
 * An MCP request runs lunagate.mcp's backend:handle in a coroutine that yields on upstream
 * I/O (lg.http, lg.process). It answers through `io`, a userdata whose pointer to the
 * request is cleared when the request ends, so a coroutine outliving its client writes
 * nowhere. The resumer finishes the request when its coroutine returns. */

typedef struct mcpio {
    lg_req_t *r;   /* NULL once the request is gone */
    lua_State *co; /* the request's coroutine */
    int co_ref;    /* keeps the coroutine alive */
    lg_wrt_t *wrt;
    struct mcpio **owner; /* the request's pointer to us, cleared by whoever goes first */
    struct mcpio *next;
} mcpio_t;

static mcpio_t *io_check(lua_State *L)
{
    mcpio_t **pp = luaL_checkudata(L, lua_upvalueindex(1), MCPIO);
    return *pp;
}

static void kv_from_table(lua_State *L, int idx, lg_kv_t *h, size_t *n, size_t max,
                          const char **ctype)
{
    if (!lua_istable(L, idx))
        return;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0 && *n < max) {
        const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
        if (k && v) {
            if (ctype && strcasecmp(k, "content-type") == 0) {
                *ctype = v;
            } else if (strcasecmp(k, "content-length") != 0 &&
                       strcasecmp(k, "transfer-encoding") != 0) {
                h[*n] = (lg_kv_t){(char *)k, strlen(k), (char *)v, strlen(v)};
                (*n)++;
            }
        }
        lua_pop(L, 1);
    }
}

static int io_respond(lua_State *L)
{
    mcpio_t *io = io_check(L);
    if (!io->r || io->r->finished || io->r->resp_head_sent) {
        lua_pushnil(L);
        lua_pushliteral(L, "client gone");
        return 2;
    }
    int status = (int)luaL_checkinteger(L, 1);
    size_t blen = 0;
    const char *body = luaL_optlstring(L, 3, "", &blen);
    lg_kv_t h[32];
    size_t n = 0;
    const char *ctype = NULL;
    kv_from_table(L, 2, h, &n, 32, &ctype);
    lg_req_t *r = io->r;
    r->reason = status >= 400 && status != 404 ? "MCP" : "Upstream";
    /* hold the connection: when called from a resumed coroutine no callback frame does,
     * and a finished Connection: close request would never be released */
    lg_req_hold(r);
    lg_req_respond(r, status, ctype, body, blen, h, n);
    lg_req_release(r);
    lua_pushboolean(L, 1);
    return 1;
}

static int io_stream_start(lua_State *L)
{
    mcpio_t *io = io_check(L);
    if (!io->r || io->r->finished || io->r->resp_head_sent) {
        lua_pushnil(L);
        lua_pushliteral(L, "client gone");
        return 2;
    }
    int status = (int)luaL_checkinteger(L, 1);
    lg_kv_t h[32];
    size_t n = 0;
    const char *ctype = NULL;
    kv_from_table(L, 2, h, &n, 30, &ctype);
    h[n++] = (lg_kv_t){"Content-Type", 12, (char *)(ctype ? ctype : "text/event-stream"), 0};
    io->r->reason = "Upstream";
    lg_req_stream_head(io->r, status, h, n);
    lua_pushboolean(L, 1);
    return 1;
}

static int io_stream_write(lua_State *L)
{
    mcpio_t *io = io_check(L);
    size_t len;
    const char *chunk = luaL_checklstring(L, 1, &len);
    if (!io->r || io->r->finished || io->r->client_gone) {
        lua_pushnil(L);
        lua_pushliteral(L, "client gone");
        return 2;
    }
    lg_req_stream_data(io->r, chunk, len);
    lua_pushboolean(L, 1);
    return 1;
}

static int io_stream_end(lua_State *L)
{
    mcpio_t *io = io_check(L);
    if (io->r && !io->r->finished) {
        lg_req_t *r = io->r;
        lg_req_hold(r);
        lg_req_stream_end(r);
        lg_req_release(r);
    }
    return 0;
}

static void io_unlink(mcpio_t *io);

/* The io object belongs to its userdata: freed when the coroutine's last reference goes. */
static int io_gc(lua_State *L)
{
    mcpio_t **pp = luaL_checkudata(L, 1, MCPIO);
    if (*pp) {
        if ((*pp)->wrt)
            io_unlink(*pp);
        if ((*pp)->owner)
            *(*pp)->owner = NULL;
        free(*pp);
        *pp = NULL;
    }
    return 0;
}

static void io_unlink(mcpio_t *io)
{
    if (!io->wrt)
        return;
    mcpio_t **pp = &io->wrt->ios;
    while (*pp && *pp != io)
        pp = &(*pp)->next;
    if (*pp)
        *pp = io->next;
}

/* The coroutine of `io` ended (status != LUA_YIELD): make sure its request ends too. */
static void io_finished(mcpio_t *io, int status, lua_State *co)
{
    lg_req_t *r = io->r;
    if (status != LUA_OK)
        lg_log(LG_LOG_ERR, "mcp", "request failed: %s",
               lua_tostring(co, -1) ? lua_tostring(co, -1) : "error");
    io_unlink(io);
    lua_State *L = lg_luart_state(io->wrt->rt);
    luaL_unref(L, LUA_REGISTRYINDEX, io->co_ref);
    io->co_ref = LUA_NOREF;
    if (!r)
        return;
    lg_req_hold(r);
    if (!r->finished) {
        if (!r->resp_head_sent) {
            const char *e = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,"
                            "\"message\":\"internal error\"}}";
            r->reason = "Internal";
            lg_req_respond(r, 500, "application/json", e, strlen(e), NULL, 0);
        } else {
            lg_req_stream_end(r);
        }
    }
    lg_req_release(r);
}

static int mcp_resumer(lua_State *co, int nargs, void *arg)
{
    lg_wrt_t *wrt = arg;
    int nres = 0;
    lg_luart_t *rt = wrt->rt;
    lg_luart_ref(rt); /* the runtime must survive a request finishing inside */
    int st = lua_resume(co, NULL, nargs, &nres);
    mcpio_t *io = NULL;
    for (mcpio_t *p = wrt->ios; p; p = p->next)
        if (p->co == co)
            io = p;
    if (st != LUA_YIELD) {
        if (io)
            io_finished(io, st, co);
        else if (st != LUA_OK)
            lg_log(LG_LOG_WARN, "mcp", "background task failed: %s",
                   lua_tostring(co, -1) ? lua_tostring(co, -1) : "error");
    }
    lg_luart_unref(rt);
    return st;
}

static int mcp_access(lg_req_t *r, rlua_t *rl)
{
    lg_wrt_t *wrt = rl->wrt;
    lua_State *L = lg_luart_state(wrt->rt);
    int bi = 0;
    for (size_t i = 0; i < r->route->nbackends; i++)
        if (r->route->backends[i].kind == LG_BACKEND_MCP) {
            bi = (int)i;
            break;
        }
    rl->id = wrt->next_id++;
    mcpio_t *io = lg_xcalloc(1, sizeof(*io));
    io->r = r;
    io->wrt = wrt;
    rl->io = io;
    io->owner = &rl->io;
    lua_State *co = lua_newthread(L); /* co */
    io->co = co;
    io->co_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* */
    io->next = wrt->ios;
    wrt->ios = io;
    r->reason = "Upstream";
    /* function and arguments on the coroutine's stack */
    lua_rawgeti(co, LUA_REGISTRYINDEX, wrt->glue_ref);
    lua_getfield(co, -1, "mcp_handle");
    lua_remove(co, -2);
    lua_pushinteger(co, (lua_Integer)rl->id);
    lua_pushinteger(co, r->route->index);
    lua_pushinteger(co, bi);
    lua_pushstring(co, http_method_str(r->method));
    lua_pushlstring(co, r->path, r->path_len);
    if (r->query)
        lua_pushlstring(co, r->query, r->query_len);
    else
        lua_pushnil(co);
    push_headers(co, r, 0);
    if (r->body && evbuffer_get_length(r->body))
        lua_pushlstring(co, (const char *)evbuffer_pullup(r->body, -1),
                        evbuffer_get_length(r->body));
    else
        lua_pushnil(co);
    /* io: a table of closures over a userdata pointing at io */
    lua_createtable(co, 0, 4);
    mcpio_t **pp = lua_newuserdatauv(co, sizeof(*pp), 0);
    *pp = io;
    luaL_setmetatable(co, MCPIO);
    static const luaL_Reg fns[] = {{"respond", io_respond},
                                   {"stream_start", io_stream_start},
                                   {"stream_write", io_stream_write},
                                   {"stream_end", io_stream_end},
                                   {NULL, NULL}};
    luaL_setfuncs(co, fns, 1);
    lua_pushinteger(co, r->start_us);
    if (r->traceparent[0])
        lua_pushstring(co, r->traceparent);
    else
        lua_pushnil(co);
    lg_req_hold(r);
    lg_lapi_http_resume(co, 11);
    lg_req_release(r);
    return LG_DECLINED; /* the coroutine answers */
}

int lg_hooks_access(lg_req_t *r)
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    if (!wrt || !r->route->needs_lua || wrt->conf != r->conf)
        return LG_OK;
    rlua_t *rl = rl_get(r);
    if (!rl)
        return LG_OK;
    rl->chain = wrt->chains[r->route->index];
    if (rl->chain >= 0 && lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_ACCESS)) {
        lg_luart_exit_t ex;
        int rc = lg_luart_access(rl->rt, rl->chain, &rl->lr, &ex);
        if (rc == LG_DECLINED) {
            respond_exit(r, &ex);
            lg_luart_exit_dispose(&ex);
            return LG_DECLINED;
        }
        if (rc == LG_ERR) {
            internal_error(r, "plugin failed");
            return LG_ERR;
        }
    }
    if (rl->chain >= 0 && lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_BODY_FILTER))
        rl->rewrite = 1;
    if (wrt->llm[r->route->index])
        return llm_access(r, rl);
    if (wrt->mcp[r->route->index])
        return mcp_access(r, rl);
    return LG_OK;
}

/* ---- Tracing ---- */

/* Evaluates the CEL randomSampling (client = 0) or clientSampling (1) expression on what is
 * known when the request head has arrived. */
static double cel_sample(lg_wrt_t *wrt, lg_req_t *r, int client)
{
    lua_State *L = lg_luart_state(wrt->rt);
    double p = 0;
    if (!glue_get(wrt, "sample")) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushstring(L, http_method_str(r->method));
    lua_pushlstring(L, r->path, r->path_len);
    push_headers(L, r, 0);
    lua_pushboolean(L, client);
    if (glue_call(wrt, 4, 1, "glue.sample") == LG_OK) {
        p = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    return p;
}

void lg_hooks_trace_start(lg_req_t *r)
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    if (!wrt || !wrt->tracing || wrt->conf != r->conf)
        return;
    lg_traceparent_t tp, *parent = NULL;
    size_t tl;
    const char *hdr = lg_req_header(r, "traceparent", 11, &tl);
    if (hdr && lg_traceparent_parse(hdr, tl, &tp) == LG_OK) {
        parent = &tp;
        r->has_parent = 1;
    }
    double random_p = wrt->random_p, client_p = wrt->client_p;
    if (random_p < 0 && !parent)
        random_p = cel_sample(wrt, r, 0);
    if (client_p < 0)
        client_p = parent ? cel_sample(wrt, r, 1) : 0;
    if (random_p < 0)
        random_p = cel_sample(wrt, r, 0); /* a parent that the client draw rejects */
    int sampled = lg_trace_sample(parent, client_p, random_p);
    if (!sampled)
        return; /* an incoming traceparent passes through untouched */
    r->traced = 1;
    if (parent) {
        memcpy(r->trace_id, tp.trace_id, 16);
        memcpy(r->parent_id, tp.span_id, 8);
    } else {
        lg_trace_id_new(r->trace_id);
    }
    r->trace_flags = LG_TRACE_FLAG_SAMPLED;
    lg_span_id_new(r->span_id);
    lg_span_id_new(r->client_span_id);
    lg_traceparent_t out;
    memcpy(out.trace_id, r->trace_id, 16);
    memcpy(out.span_id, r->client_span_id, 8);
    out.flags = LG_TRACE_FLAG_SAMPLED;
    lg_traceparent_format(&out, r->traceparent);
}

/* ---- Response ---- */

/* A header_filter plugin failed: nothing was sent yet, so the client gets a 500. */
static int header_filter_failed(lg_req_t *r)
{
    if (r->up) {
        lg_upstream_release(r->up, 0);
        r->up = NULL;
    }
    internal_error(r, "plugin failed");
    return LG_ERR;
}

/* A body_filter plugin failed: the rest of the body is not sent and the connection closes. */
static void body_filter_failed(lg_req_t *r)
{
    r->keepalive = 0;
    if (!r->error)
        r->error = lg_xstrdup("plugin failed in body_filter");
}

static int is_event_stream(lg_req_t *r)
{
    size_t cl;
    const char *ct = lg_resp_header(r, "content-type", 12, &cl);
    return ct && cl >= 17 && strncasecmp(ct, "text/event-stream", 17) == 0;
}

int lg_hooks_header_filter(lg_req_t *r)
{
    rlua_t *rl = r->lua;
    if (!rl)
        return LG_OK;
    lua_State *L = lg_luart_state(rl->rt);
    if (rl->native) {
        size_t cl;
        const char *ct = lg_resp_header(r, "content-type", 12, &cl);
        lg_llmn_headers(rl->native, r->status, ct, ct ? cl : 0);
    }
    if (rl->llm && rl->id) {
        glue_get(rl->wrt, "llm_headers");
        lua_pushinteger(L, (lua_Integer)rl->id);
        lua_pushinteger(L, r->status);
        push_headers(L, r, 1);
        if (glue_call(rl->wrt, 3, 4, "glue.llm_headers") == LG_OK) {
            if (lua_istable(L, -3)) {
                size_t n = lua_rawlen(L, -3);
                for (size_t i = 1; i <= n; i++) {
                    lua_rawgeti(L, -3, (lua_Integer)i);
                    size_t nl;
                    const char *nm = lua_tolstring(L, -1, &nl);
                    if (nm)
                        lg_lapi_header_change(r->rhdrs, r->nrhdrs, r->rhead, &r->rextra,
                                              &r->nrextra, nm, nl, NULL, 0);
                    lua_pop(L, 1);
                }
            }
            if (lua_istable(L, -4)) {
                lua_pushnil(L);
                while (lua_next(L, -5) != 0) {
                    size_t nl, vl;
                    const char *nm = lua_tolstring(L, -2, &nl), *v = lua_tolstring(L, -1, &vl);
                    if (nm && v)
                        lg_lapi_header_change(r->rhdrs, r->nrhdrs, r->rhead, &r->rextra,
                                              &r->nrextra, nm, nl, v, vl);
                    lua_pop(L, 1);
                }
            }
            if (lua_isinteger(L, -2)) {
                r->status = (int)lua_tointeger(L, -2);
                r->status_text = NULL;
            }
            if (lua_toboolean(L, -1)) {
                rl->rewrite = 1;
                rl->observe = 0;
            }
            lua_pop(L, 4);
        }
    }
    if (rl->chain >= 0 && lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_HEADER_FILTER) &&
        lg_luart_header_filter(rl->rt, rl->chain, &rl->lr) != LG_OK)
        return header_filter_failed(r);
    if (rl->rewrite)
        rl->sse_mode = rl->chain >= 0 &&
                       lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_BODY_FILTER) &&
                       is_event_stream(r);
    return LG_OK;
}

/* The plugins' header_filter and body_filter in one protected entry, for a response whose
 * whole body is here (see whole_body in proxy.c). Not for LLM routes (their glue runs between
 * the two phases) nor for event streams (body_filter sees those an event at a time). */
int lg_hooks_header_body(lg_req_t *r, const char *body, size_t len, struct evbuffer *out)
{
    rlua_t *rl = r->lua;
    if (!rl || !rl->rewrite || rl->native || rl->llm || rl->chain < 0 ||
        !lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_HEADER_FILTER) ||
        !lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_BODY_FILTER) || is_event_stream(r))
        return LG_DECLINED;
    const char *o;
    size_t olen;
    int failed;
    if (lg_luart_header_body(rl->rt, rl->chain, &rl->lr, body, len, &o, &olen, &failed) != LG_OK) {
        if (failed == LG_PHASE_HEADER_FILTER)
            return header_filter_failed(r);
        body_filter_failed(r);
        return LG_OK;
    }
    if (o)
        lg_req_emit(r, o, olen, out);
    return LG_OK;
}

int lg_hooks_body_rewrites(lg_req_t *r)
{
    rlua_t *rl = r->lua;
    return rl && rl->rewrite;
}

int lg_hooks_body_observes(lg_req_t *r)
{
    rlua_t *rl = r->lua;
    return rl && rl->observe && rl->llm;
}

/* Runs body_filter plugins over `data`, emitting what they return. */
static void plugins_body(lg_req_t *r, rlua_t *rl, const char *data, size_t len, int eof,
                         struct evbuffer *out)
{
    if (rl->chain < 0 || !lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_BODY_FILTER)) {
        lg_req_emit(r, data, len, out);
        return;
    }
    const char *o;
    size_t olen;
    if (lg_luart_body_filter(rl->rt, rl->chain, &rl->lr, data, len, eof, &o, &olen) != LG_OK) {
        body_filter_failed(r);
        return;
    }
    if (o)
        lg_req_emit(r, o, olen, out);
}

/* SSE: body_filter plugins see whole events ("...\n\n"). */
static void plugins_body_sse(lg_req_t *r, rlua_t *rl, const char *data, size_t len, int eof,
                             struct evbuffer *out)
{
    if (!rl->sse)
        rl->sse = evbuffer_new();
    evbuffer_add(rl->sse, data, len);
    for (;;) {
        struct evbuffer_ptr p = evbuffer_search(rl->sse, "\n\n", 2, NULL);
        if (p.pos < 0)
            break;
        size_t n = (size_t)p.pos + 2;
        const char *ev = (const char *)evbuffer_pullup(rl->sse, (ssize_t)n);
        plugins_body(r, rl, ev, n, 0, out);
        evbuffer_drain(rl->sse, n);
    }
    if (eof) {
        size_t n = evbuffer_get_length(rl->sse);
        plugins_body(r, rl, n ? (const char *)evbuffer_pullup(rl->sse, -1) : "", n, 1, out);
        evbuffer_drain(rl->sse, n);
    }
}

void lg_hooks_body(lg_req_t *r, const char *data, size_t len, int eof, struct evbuffer *out)
{
    rlua_t *rl = r->lua;
    if (!rl || !rl->rewrite) {
        lg_req_emit(r, data, len, out);
        return;
    }
    const char *d = data;
    size_t dl = len;
    lua_State *L = lg_luart_state(rl->rt);
    int pushed = 0;
    if (rl->llm && rl->id) {
        glue_get(rl->wrt, "llm_body");
        lua_pushinteger(L, (lua_Integer)rl->id);
        lua_pushlstring(L, data ? data : "", len);
        lua_pushboolean(L, eof);
        if (glue_call(rl->wrt, 3, 1, "glue.llm_body") == LG_OK) {
            d = lua_tolstring(L, -1, &dl);
            pushed = 1;
        }
    }
    if (rl->sse_mode)
        plugins_body_sse(r, rl, d ? d : "", d ? dl : 0, eof, out);
    else if (dl || eof)
        plugins_body(r, rl, d ? d : "", d ? dl : 0, eof, out);
    if (pushed)
        lua_pop(L, 1);
}

void lg_hooks_observe(lg_req_t *r, const char *data, size_t len, int eof)
{
    rlua_t *rl = r->lua;
    if (rl && rl->native) {
        lg_llmn_body(rl->native, data, len, eof);
        return;
    }
    if (!rl || !rl->llm || !rl->id)
        return;
    lua_State *L = lg_luart_state(rl->rt);
    glue_get(rl->wrt, "llm_body");
    lua_pushinteger(L, (lua_Integer)rl->id);
    lua_pushlstring(L, data ? data : "", len);
    lua_pushboolean(L, eof && len == 0); /* the final empty call always follows */
    if (glue_call(rl->wrt, 3, 1, "glue.llm_body") == LG_OK)
        lua_pop(L, 1);
}

int lg_hooks_error_body(lg_req_t *r, int status, const char *msg, const char *type,
                        struct evbuffer *out)
{
    rlua_t *rl = r->lua;
    LG_UNUSED(type);
    if (rl && rl->native) { /* the OpenAI error shape */
        lua_State *L = lg_luart_state(rl->rt);
        glue_get(rl->wrt, "openai_error");
        lua_pushinteger(L, status);
        lua_pushstring(L, msg);
        if (glue_call(rl->wrt, 2, 1, "glue.openai_error") != LG_OK)
            return 0;
        size_t bl;
        const char *body = lua_tolstring(L, -1, &bl);
        if (body)
            evbuffer_add(out, body, bl);
        lua_pop(L, 1);
        return body != NULL;
    }
    if (!rl || !rl->llm || !rl->id)
        return 0;
    lua_State *L = lg_luart_state(rl->rt);
    glue_get(rl->wrt, "llm_error");
    lua_pushinteger(L, (lua_Integer)rl->id);
    lua_pushinteger(L, status);
    lua_pushstring(L, msg);
    if (glue_call(rl->wrt, 3, 3, "glue.llm_error") != LG_OK)
        return 0;
    size_t bl;
    const char *body = lua_tolstring(L, -1, &bl);
    int ok = body != NULL;
    if (ok)
        evbuffer_add(out, body, bl);
    lua_pop(L, 3);
    return ok;
}

/* ---- Log ---- */

void lg_hooks_log(lg_req_t *r)
{
    rlua_t *rl = r->lua;
    if (rl && rl->ev)
        evtimer_del(rl->ev);
    lg_runtime_log(r, rl ? (void *)rl : NULL);
}

/* Pushes the request headers into the record table at the top of L when an expression
 * needs them. */
void lg_hooks_push_request_headers(lua_State *L, lg_req_t *r)
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    if (!wrt || !wrt->needs_headers || !r->head)
        return;
    push_headers(L, r, 0);
    lua_setfield(L, -2, "request_headers");
}

/* How the log line of `r` can be made: 1/2 in C (text/json), 3 none, 0 through Lua. */
int lg_hooks_fast_log(lg_req_t *r)
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    rlua_t *rl = r->lua;
    if (!wrt || wrt->conf != r->conf)
        return 0;
    if (rl) {
        /* plugins ran: their log phase runs first (once); the C line stays exact unless
         * they added record fields or the request is an MCP one (LLM keys come from
         * glue.llm_log) */
        if (rl->io || (rl->id && !rl->llm) || (rl->llm && r->traced))
            return 0;
        if (!rl->logged && rl->chain >= 0 && lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_LOG)) {
            rl->logged = 1;
            lg_luart_log(rl->rt, rl->chain, &rl->lr);
        }
        if (rl->lr.rec_ref != LUA_NOREF)
            return 0;
    }
    return wrt->fast_log;
}

/* Called by runtime.c's log path: runs plugins' log phase and glue.log. Pushes nothing;
 * returns the line in *line (valid until the next call on this worker). */
int lg_hooks_glue_log(lg_req_t *r, void (*push_fields)(lua_State *L, lg_req_t *r, void *arg),
                      void *arg, int (*consume)(lua_State *L, lg_req_t *r, void *arg))
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    rlua_t *rl = r->lua;
    if (!wrt)
        return LG_DECLINED;
    lg_luart_t *rt = rl ? rl->rt : wrt->rt;
    lg_wrt_t *gw = rl ? rl->wrt : wrt;
    if (rl && !rl->logged && rl->chain >= 0 &&
        lg_luart_chain_has(rl->rt, rl->chain, LG_PHASE_LOG)) {
        rl->logged = 1;
        lg_luart_log(rl->rt, rl->chain, &rl->lr);
    }
    lua_State *L = lg_luart_state(rt);
    int top = lua_gettop(L);
    glue_get(gw, "log");
    if (rl && rl->id)
        lua_pushinteger(L, (lua_Integer)rl->id);
    else
        lua_pushnil(L);
    push_fields(L, r, arg);
    /* fields plugins set with lg.log.set_field live in luart's record table */
    if (rl && rl->lr.rec_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rl->lr.rec_ref); /* ... c prec */
        lua_getfield(L, -1, "fields");                     /* ... c prec fields */
        lua_setfield(L, -3, "fields");                     /* ... c prec */
        lua_pop(L, 1);                                     /* ... c */
    }
    lg_err_t err;
    /* a user log-format plugin is user code: it runs under the budget */
    int rc = gw->user_log_code ? lg_luart_pcall(rt, 2, 5, "glue.log", &err)
                               : lg_luart_pcall_trusted(rt, 2, 5, "glue.log", &err);
    if (rc != LG_OK) {
        lg_log(LG_LOG_ERR, "lua", "%s", err.msg);
        lua_settop(L, top);
        return LG_ERR;
    }
    consume(L, r, arg);
    lua_settop(L, top);
    return LG_OK;
}

/* For an LLM request logged by the C formatter: finishes the LLM record (glue.llm_log) and
 * hands its rec.llm table to `consume` (top of the stack). Returns LG_DECLINED when the
 * request is not an LLM one. */
int lg_hooks_glue_llm(lg_req_t *r, int (*consume)(lua_State *L, lg_req_t *r, void *arg), void *arg)
{
    rlua_t *rl = r->lua;
    if (!rl || !rl->llm || !rl->id)
        return LG_DECLINED;
    lua_State *L = lg_luart_state(rl->rt);
    int top = lua_gettop(L);
    if (!glue_get(rl->wrt, "llm_log")) {
        lua_settop(L, top);
        return LG_ERR;
    }
    lua_pushinteger(L, (lua_Integer)rl->id);
    lua_pushinteger(L, r->end_us);
    if (glue_call(rl->wrt, 2, 1, "glue.llm_log") != LG_OK) {
        lua_settop(L, top);
        return LG_ERR;
    }
    consume(L, r, arg);
    lua_settop(L, top);
    return LG_OK;
}

int lg_hooks_span_fast(lg_req_t *r)
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    rlua_t *rl = r->lua;
    if (!wrt || wrt->conf != r->conf || !wrt->span_fast)
        return 0;
    return !rl || (!rl->llm && !rl->io && !rl->id && rl->lr.rec_ref == LUA_NOREF);
}

int lg_hooks_native_llm(lg_req_t *r, lg_llm_log_t *f)
{
    rlua_t *rl = r->lua;
    if (!rl || !rl->native)
        return LG_DECLINED;
    lg_llmn_fields(rl->native, r->end_us, f);
    return LG_OK;
}

/* For a traced request logged by the C formatter: asks glue.span for the span's name,
 * attributes and status and hands them to `consume` (stack: span table). */
int lg_hooks_glue_span(lg_req_t *r, void (*push_fields)(lua_State *L, lg_req_t *r, void *arg),
                       void *arg, int (*consume)(lua_State *L, lg_req_t *r, void *arg))
{
    lg_wrt_t *wrt = (lg_wrt_t *)r->w->wrt;
    if (!wrt)
        return LG_DECLINED;
    lua_State *L = lg_luart_state(wrt->rt);
    int top = lua_gettop(L);
    if (!glue_get(wrt, "span")) {
        lua_settop(L, top);
        return LG_DECLINED;
    }
    push_fields(L, r, arg);
    if (glue_call(wrt, 1, 1, "glue.span") != LG_OK) {
        lua_settop(L, top);
        return LG_ERR;
    }
    consume(L, r, arg);
    lua_settop(L, top);
    return LG_OK;
}

void lg_hooks_req_free(lg_req_t *r)
{
    rlua_t *rl = r->lua;
    if (rl) {
        if (rl->io) {
            mcpio_t *io = rl->io;
            io->r = NULL;
            if (io->co_ref != LUA_NOREF) {
                /* the client left while the coroutine waits: stop its I/O and let it go */
                lg_lapi_http_cancel(io->co);
                lg_lapi_proc_cancel(io->co);
                io_unlink(io);
                luaL_unref(lg_luart_state(rl->rt), LUA_REGISTRYINDEX, io->co_ref);
                io->co_ref = LUA_NOREF;
            }
            io->wrt = NULL; /* unlinked; the userdata's __gc frees it */
            io->owner = NULL;
            rl->io = NULL;
        }
        if (rl->ev)
            event_free(rl->ev);
        if (rl->sse)
            evbuffer_free(rl->sse);
        lg_llmn_free(rl->native);
        if (rl->id) {
            lua_State *L = lg_luart_state(rl->rt);
            lua_rawgeti(L, LUA_REGISTRYINDEX, rl->wrt->glue_ref);
            lua_getfield(L, -1, "release");
            lua_pushinteger(L, (lua_Integer)rl->id);
            lua_pcall(L, 1, 0, 0) == LUA_OK ? (void)0 : lua_pop(L, 1);
            lua_pop(L, 1);
        }
        lg_luart_req_end(rl->rt, &rl->lr);
        lg_luart_unref(rl->rt);
        lg_wrt_t *wrt = rl->wrt;
        if (wrt->nspare < SPARE_MAX) { /* kept for the worker's next request */
            rl->next_spare = wrt->spare;
            wrt->spare = rl;
            wrt->nspare++;
        } else {
            free(rl);
        }
        wrt_free(wrt); /* drops this request's reference; frees the spares with the last */
        r->lua = NULL;
    }
    for (size_t i = 0; i < r->nextra; i++)
        free(r->extra[i].name), free(r->extra[i].value);
    for (size_t i = 0; i < r->nrextra; i++)
        free(r->rextra[i].name), free(r->rextra[i].value);
    free(r->extra), free(r->rextra);
}
