/* test_lapi_http.c -- lg.http against an in-process libevent server: plain, chunked, SSE
 * streams, POST bodies, keep-alive reuse, timeouts, refused connections, sleep and events.
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/lapi_http.c"

#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <lualib.h>
#include <signal.h>

static struct event_base *base;
static int done_count, want_count;
static char last_error[512];

/* ---- the test server ---- */

typedef struct sse_state {
    struct evhttp_request *req;
    struct event *timer;
    int n;
} sse_state_t;

static void sse_tick(evutil_socket_t fd, short what, void *arg)
{
    sse_state_t *s = arg;
    struct evbuffer *b = evbuffer_new();
    if (s->n < 3) {
        /* split one event across two writes to exercise the reassembly */
        evbuffer_add_printf(b, "event: tick\nid: %d\nda", s->n);
        evhttp_send_reply_chunk(s->req, b);
        evbuffer_add_printf(b, "ta: n=%d\ndata: second line\n\n", s->n);
        evhttp_send_reply_chunk(s->req, b);
        s->n++;
        struct timeval tv = {0, 20000};
        evtimer_add(s->timer, &tv);
    } else {
        evbuffer_add_printf(b, ": comment\ndata: last\n\n");
        evhttp_send_reply_chunk(s->req, b);
        evhttp_send_reply_end(s->req);
        event_free(s->timer);
        free(s);
    }
    evbuffer_free(b);
}

static void srv_cb(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *out = evbuffer_new();
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    if (strcmp(uri, "/hello") == 0) {
        evhttp_add_header(oh, "X-Test", "a");
        evhttp_add_header(oh, "X-Test", "b");
        evbuffer_add_printf(out, "hello world");
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strncmp(uri, "/echo", 5) == 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "x-req");
        evbuffer_add_printf(out, "%s|%s|%s|",
                            evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "OTHER",
                            h ? h : "-", uri);
        evbuffer_add_buffer(out, in);
        evhttp_send_reply(req, 201, "Created", out);
    } else if (strcmp(uri, "/sse") == 0) {
        evhttp_add_header(oh, "Content-Type", "text/event-stream");
        evhttp_send_reply_start(req, 200, "OK");
        sse_state_t *s = calloc(1, sizeof(*s));
        s->req = req;
        s->timer = evtimer_new(base, sse_tick, s);
        struct timeval tv = {0, 10000};
        evtimer_add(s->timer, &tv);
    } else if (strcmp(uri, "/chunks") == 0) {
        evhttp_send_reply_start(req, 200, "OK");
        evbuffer_add_printf(out, "part1;");
        evhttp_send_reply_chunk(req, out);
        evbuffer_add_printf(out, "part2");
        evhttp_send_reply_chunk(req, out);
        evhttp_send_reply_end(req);
    } else if (strcmp(uri, "/slow") == 0) {
        /* never answers; the client times out (the server frees it at shutdown) */
    } else {
        evhttp_send_reply(req, 404, "Not Found", out);
    }
    evbuffer_free(out);
}

/* ---- a TLS server with a throw-away self-signed certificate ---- */

static SSL_CTX *server_ctx(void)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_sign(x, pkey, EVP_sha256());
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx, x);
    SSL_CTX_use_PrivateKey(ctx, pkey);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ctx;
}

static struct bufferevent *tls_bevcb(struct event_base *b, void *arg)
{
    return bufferevent_openssl_socket_new(b, -1, SSL_new(arg), BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

/* ---- running Lua ---- */

static int test_resumer(lua_State *co, int nargs, void *arg)
{
    int nres = 0;
    int st = lua_resume(co, NULL, nargs, &nres);
    if (st == LUA_YIELD) {
        lua_pop(co, nres);
        return st;
    }
    if (st != LUA_OK) {
        snprintf(last_error, sizeof(last_error), "%s", lua_tostring(co, -1));
        printf("# coroutine error: %s\n", last_error);
    }
    lua_settop(co, 0);
    if (++done_count >= want_count)
        event_base_loopbreak(base);
    return st;
}

/* Runs each chunk in its own coroutine, all concurrently; returns when all ended. */
static void run(lua_State *L, const char **chunks, int n)
{
    done_count = 0;
    want_count = n;
    for (int i = 0; i < n; i++) {
        lua_State *co = lua_newthread(L);
        int ref = luaL_ref(L, LUA_REGISTRYINDEX);
        if (luaL_loadstring(co, chunks[i]) != LUA_OK) {
            printf("# load error: %s\n", lua_tostring(co, -1));
            done_count++;
            continue;
        }
        test_resumer(co, 0, NULL);
        luaL_unref(L, LUA_REGISTRYINDEX, ref); /* the registry ref of a waiter keeps it */
    }
    struct timeval tv = {10, 0};
    event_base_loopexit(base, &tv);
    if (done_count < want_count)
        event_base_dispatch(base);
}

static const char *gstr(lua_State *L, const char *expr)
{
    static char buf[4][1024];
    static int k;
    char code[512];
    snprintf(code, sizeof(code), "return tostring(%s)", expr);
    (void)!luaL_dostring(L, code);
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return buf[k];
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    evhttp_set_gencb(http, srv_cb, NULL);
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl);
    int port = ntohs(sin.sin_port);
    lg_err_t err;
    lg_upool_t *pool = lg_upool_new(base, &err);
    SSL_CTX *sctx = server_ctx();
    struct evhttp *https = evhttp_new(base);
    evhttp_set_bevcb(https, tls_bevcb, sctx);
    evhttp_set_gencb(https, srv_cb, NULL);
    struct evhttp_bound_socket *tbs = evhttp_bind_socket_with_handle(https, "127.0.0.1", 0);
    sl = sizeof(sin);
    getsockname(evhttp_bound_socket_get_fd(tbs), (struct sockaddr *)&sin, &sl);
    int tls_port = ntohs(sin.sin_port);

    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "lunagate", luaopen_lunagate, 0); /* lg */
    lg_lapi_inject_http(L);
    lua_pop(L, 1);
    lg_lapi_http_bind(L, base, pool);
    lg_lapi_http_set_resumer(L, test_resumer, NULL);
    char setup[200];
    snprintf(setup, sizeof(setup),
             "lg = require 'lunagate'; BASE = 'http://127.0.0.1:%d'; "
             "TLS = 'https://localhost:%d'; R = {}",
             port, tls_port);
    (void)!luaL_dostring(L, setup);

    /* outside a coroutine: raises */
    ok(luaL_dostring(L, "lg.http.request{url = BASE .. '/hello'}") != LUA_OK &&
           strstr(lua_tostring(L, -1), "yieldable coroutine"),
       "request outside a coroutine raises");
    lua_settop(L, 0);

    const char *basic[] = {
        "local r, e = lg.http.request{url = BASE .. '/hello'}\n"
        "R.status, R.body, R.xtest, R.err = r.status, r.body, r.headers['x-test'], e",
        "local r = lg.http.request{url = BASE .. '/echo?q=1', method = 'POST', body = 'payload',"
        " headers = {['X-Req'] = 'v1'}}\n"
        "R.echo_status, R.echo = r.status, r.body",
        "local r = lg.http.request{host = '127.0.0.1', port = tonumber(BASE:match(':(%d+)$')),"
        " path = '/chunks'}\n"
        "R.chunks = r.body",
        "local r = lg.http.request{url = BASE .. '/nope'}\n R.nf = r.status",
    };
    run(L, basic, 4);
    ok_streq(gstr(L, "R.status"), "200", "GET status");
    ok_streq(gstr(L, "R.body"), "hello world", "GET body");
    ok_streq(gstr(L, "R.xtest"), "a, b", "repeated headers joined, names lowercase");
    ok_streq(gstr(L, "R.echo_status"), "201", "POST status");
    ok_streq(gstr(L, "R.echo"), "POST|v1|/echo?q=1|payload", "POST body, header and query sent");
    ok_streq(gstr(L, "R.chunks"), "part1;part2", "chunked body decoded (host/port/path form)");
    ok_streq(gstr(L, "R.nf"), "404", "404 passed through");
    ok(lg_upool_idle_count(pool) >= 1, "connections returned to the pool (%zu idle)",
       lg_upool_idle_count(pool));

    /* sequential requests reuse a pooled connection */
    const char *seq[] = {
        "for i = 1, 5 do local r = lg.http.request{url = BASE .. '/hello'}; "
        "R['seq' .. i] = r and r.status end",
    };
    size_t idle_before = lg_upool_idle_count(pool);
    run(L, seq, 1);
    ok_streq(gstr(L, "R.seq5"), "200", "five sequential requests");
    ok(lg_upool_idle_count(pool) <= idle_before + 1, "sequential requests reused connections");

    const char *sse[] = {
        "local h, e = lg.http.stream{url = BASE .. '/sse'}\n"
        "R.sse_status, R.sse_flag, R.sse_ct = h.status, h.sse, h.headers['content-type']\n"
        "local out = {}\n"
        "while true do local ev, err = h:read(2000); if not ev then R.sse_end = err or 'eof'; "
        "break end\n"
        "out[#out + 1] = ev.event .. '/' .. (ev.id or '') .. '/' .. ev.data end\n"
        "R.sse = table.concat(out, '|'); h:close()",
        "local h = lg.http.stream{url = BASE .. '/chunks'}\n"
        "local out = {}; while true do local c = h:read(); if not c then break end; "
        "out[#out + 1] = c end\n R.raw = table.concat(out)",
    };
    run(L, sse, 2);
    ok_streq(gstr(L, "R.sse_status"), "200", "stream status");
    ok_streq(gstr(L, "R.sse_flag"), "true", "stream sees text/event-stream");
    ok_streq(
        gstr(L, "R.sse"),
        "tick/0/n=0\nsecond line|tick/1/n=1\nsecond line|tick/2/n=2\nsecond line|message/2/last",
        "SSE events reassembled across writes, multi-line data, comments skipped");
    ok_streq(gstr(L, "R.sse_end"), "eof", "read returns nil at the end of the stream");
    ok_streq(gstr(L, "R.raw"), "part1;part2", "plain stream chunks");

    const char *failing[] = {
        "local r, e = lg.http.request{url = BASE .. '/slow', timeout_ms = 100}\n"
        "R.slow = tostring(r) .. ' ' .. tostring(e)",
        "local r, e = lg.http.request{url = 'http://127.0.0.1:1/x', timeout_ms = 2000}\n"
        "R.refused = tostring(r) .. ' ' .. tostring(e)",
        "local r, e = lg.http.request{url = 'ftp://x/y'}\n R.badurl = e",
        "local t0 = lg.time.monotonic_us(); lg.http.sleep(30); "
        "R.slept = (lg.time.monotonic_us() - t0) >= 29000",
    };
    run(L, failing, 4);
    ok(strstr(gstr(L, "R.slow"), "nil request to 127.0.0.1:") &&
           strstr(gstr(L, "R.slow"), "timed out"),
       "timeout gives nil, err (%s)", gstr(L, "R.slow"));
    ok(strstr(gstr(L, "R.refused"), "nil ") && strstr(gstr(L, "R.refused"), "refused"),
       "refused connection gives nil, err (%s)", gstr(L, "R.refused"));
    ok(strstr(gstr(L, "R.badurl"), "unsupported url scheme") != NULL, "bad scheme rejected");
    ok_streq(gstr(L, "R.slept"), "true", "sleep waits");

    /* TLS: self-signed server, so verification fails unless insecure */
    const char *tls[] = {
        "local r, e = lg.http.request{url = TLS .. '/hello', insecure = true}\n"
        "R.tls = r and r.status .. ' ' .. r.body or e\n"
        "local h = lg.http.stream{url = TLS .. '/sse', insecure = true}; local n = 0\n"
        "while h:read(2000) do n = n + 1 end; R.tls_sse = n",
        "local r, e = lg.http.request{url = TLS .. '/hello'}\n R.tls_verify = tostring(e)",
    };
    run(L, tls, 2);
    ok_streq(gstr(L, "R.tls"), "200 hello world", "HTTPS request (insecure)");
    ok_streq(gstr(L, "R.tls_sse"), "4", "HTTPS SSE stream");
    ok(strstr(gstr(L, "R.tls_verify"), "TLS handshake") != NULL ||
           strstr(gstr(L, "R.tls_verify"), "certificate") != NULL,
       "self-signed certificate rejected when verifying (%s)", gstr(L, "R.tls_verify"));

    /* events: a waiter woken by set() from another coroutine, and a wait timing out */
    const char *evs[] = {
        "EV = lg.http.event(); local ok, e = EV:wait(2000); R.ev1 = tostring(ok)",
        "lg.http.sleep(10); EV:set(); R.setter = 'done'",
        "local ev = lg.http.event(); local ok, e = ev:wait(20); R.ev2 = tostring(ok) .. e",
    };
    run(L, evs, 3);
    ok_streq(gstr(L, "R.ev1"), "true", "event wait woken by set()");
    ok_streq(gstr(L, "R.ev2"), "niltimeout", "event wait times out");

    /* a stream abandoned mid-way is closed by the GC; a cancelled request frees its state */
    const char *abandon[] = {
        "local h = lg.http.stream{url = BASE .. '/sse'}; local ev = h:read(); R.first = ev.data",
    };
    run(L, abandon, 1);
    ok_streq(gstr(L, "R.first"), "n=0\nsecond line", "first event of an abandoned stream");
    lua_gc(L, LUA_GCCOLLECT);

    lua_State *co = lua_newthread(L);
    luaL_loadstring(co, "lg.http.request{url = BASE .. '/slow', timeout_ms = 5000}");
    int nres;
    ok(lua_resume(co, NULL, 0, &nres) == LUA_YIELD, "request yields");
    lg_lapi_http_cancel(co);
    hbind_t *b = get_bind(L);
    ok(b->ops == NULL, "cancel frees the operation");
    lua_pop(L, 1);

    /* a cancelled sleep is never resumed */
    lua_State *sl_co = lua_newthread(L);
    luaL_loadstring(sl_co, "lg.http.sleep(20); R.woke = true");
    ok(lua_resume(sl_co, NULL, 0, &nres) == LUA_YIELD, "sleep yields");
    lg_lapi_http_cancel(sl_co);
    lua_pop(L, 1);
    struct timeval tv2 = {0, 80000};
    event_base_loopexit(base, &tv2);
    event_base_dispatch(base);
    ok_streq(gstr(L, "R.woke"), "nil", "cancelled sleep not resumed");

    /* drain the server's pending /slow and SSE work before closing */
    struct timeval tv = {0, 200000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    lua_close(L); /* cancels whatever is left */
    lg_upool_free(pool);
    evhttp_free(http);
    evhttp_free(https);
    SSL_CTX_free(sctx);
    event_base_free(base);
    return test_done();
}
