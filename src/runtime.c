/* runtime.c -- process-wide services: home folder, main-thread Lua state, log writer,
 * metrics registry and span exporter.
 * SPDX-License-Identifier: MIT */
#include "runtime.h"

#include <event2/buffer.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accesslog.h"
#include "config.h"
#include "hooks.h"
#include "metrics.h"
#include "otlp.h"
#include "trace.h"
#include "worker.h"

int luaopen_cjson(lua_State *L);

static char home[PATH_MAX];

static int has_lua_dir(const char *dir)
{
    char p[PATH_MAX + 32];
    struct stat st;
    snprintf(p, sizeof(p), "%s/lua/lunagate/config.lua", dir);
    return stat(p, &st) == 0;
}

void lg_runtime_set_home(const char *argv0)
{
    const char *env = getenv("LUNAGATE_HOME");
    char exe[PATH_MAX];
    if (env && *env) {
        snprintf(home, sizeof(home), "%s", env);
    } else if (has_lua_dir(LG_HOME)) {
        snprintf(home, sizeof(home), "%s", LG_HOME);
    } else {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0 && argv0)
            n = (ssize_t)strlen(strncpy(exe, argv0, sizeof(exe) - 1));
        exe[n > 0 ? n : 0] = '\0';
        /* <home>/build/lunagate or <home>/bin/lunagate */
        for (int up = 0; up < 2; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash)
                break;
            *slash = '\0';
        }
        if (exe[0] && has_lua_dir(exe))
            snprintf(home, sizeof(home), "%s", exe);
        else
            snprintf(home, sizeof(home), "/usr/share/lunagate");
    }
    setenv("LUNAGATE_HOME", home, 1);
}

const char *lg_runtime_home(void)
{
    return home;
}

lua_State *lg_runtime_new_state(lg_err_t *err)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        lg_err_set(err, 0, "cannot create a Lua state");
        return NULL;
    }
    luaL_openlibs(L);
    lua_getglobal(L, "package"); /* package */
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/plugins/?.lua", home, home, home);
    lua_setfield(L, -2, "path");    /* package */
    lua_getfield(L, -1, "preload"); /* package preload */
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushcfunction(L, luaopen_lunagate_yaml);
    lua_setfield(L, -2, "lunagate.yaml");
    lua_pop(L, 2);
    return L;
}

int lg_runtime_check(lua_State *L, lg_conf_t *c, lg_err_t *err)
{
    LG_UNUSED(L);
    /* a throw-away worker runtime: plugins, their configs and LLM backends must load */
    return lg_hooks_check(c, err);
}

/* ---- Metrics ---- */

static lg_metrics_t *registry;
static lg_std_metrics_t std_ids;
static size_t ncustom;
static int nshards;

static char *cfg_string(lua_State *L, int idx, const char *a, const char *b, const char *dflt)
{
    char *out = NULL;
    lua_getfield(L, idx, a);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, b);
        if (lua_isstring(L, -1))
            out = lg_xstrdup(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return out ? out : (dflt ? lg_xstrdup(dflt) : NULL);
}

static int start_metrics(lua_State *L, int cfg, int nworkers, lg_err_t *err)
{
    char *prefix = cfg_string(L, cfg, "metrics", "prefix", "agentgateway_");
    registry = lg_metrics_new(prefix, nworkers, 0, err);
    free(prefix);
    if (!registry)
        return LG_ERR;
    nshards = nworkers;
    const char *custom[32];
    ncustom = 0;
    lua_getfield(L, cfg, "metrics");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "fields");
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "add");
            if (lua_istable(L, -1)) {
                /* ordered as written: the normaliser keeps {name, value} pairs or a map */
                size_t n = lua_rawlen(L, -1);
                if (n > 0) {
                    for (size_t i = 1; i <= n && ncustom < 32; i++) {
                        lua_rawgeti(L, -1, (lua_Integer)i);
                        lua_rawgeti(L, -1, 1);
                        if (lua_isstring(L, -1))
                            custom[ncustom++] = lua_tostring(L, -1);
                        lua_pop(L, 2);
                    }
                } else {
                    lua_pushnil(L);
                    while (lua_next(L, -2) != 0 && ncustom < 32) {
                        if (lua_type(L, -2) == LUA_TSTRING)
                            custom[ncustom++] = lua_tostring(L, -2);
                        lua_pop(L, 1);
                    }
                }
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    int rc = lg_metrics_register_standard(registry, &std_ids, custom, ncustom, err);
    if (rc == LG_OK && lua_istable(L, -1)) {
        lua_getfield(L, -1, "remove");
        if (lua_istable(L, -1)) {
            size_t n = lua_rawlen(L, -1);
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, (lua_Integer)i);
                if (lua_isstring(L, -1) &&
                    lg_metrics_remove(registry, lua_tostring(L, -1)) != LG_OK)
                    lg_log(LG_LOG_WARN, "metrics", "config.metrics.remove: no metric named '%s'",
                           lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* metrics */
    return rc;
}

lg_metrics_t *lg_runtime_registry(void)
{
    return registry;
}

void lg_runtime_plugin_error(lg_worker_t *w, const char *plugin)
{
    if (!registry)
        return;
    const char *v[1] = {plugin};
    lg_metrics_add(lg_metrics_shard(registry, w ? w->id : LG_METRICS_MAIN),
                   std_ids.lua_plugin_errors, v, 1);
}

void lg_runtime_reload_outcome(int ok)
{
    if (!registry)
        return;
    const char *v[1] = {ok ? "success" : "failure"};
    lg_metrics_add(lg_metrics_shard(registry, LG_METRICS_MAIN), std_ids.config_reloads, v, 1);
}

const char *lg_runtime_metrics(const char *accept, struct evbuffer *out)
{
    const char *ct = "text/plain; version=0.0.4; charset=utf-8";
    if (!registry)
        return ct;
    int om = lg_metrics_negotiate(accept, &ct);
    lg_metrics_shard_t *main = lg_metrics_shard(registry, LG_METRICS_MAIN);
    /* counters owned by other modules, brought up to date at scrape time */
    static uint64_t seen_logs, seen_spans;
    uint64_t d = lg_accesslog_dropped();
    if (d > seen_logs) {
        lg_metrics_add(main, std_ids.log_lines_dropped, NULL, (double)(d - seen_logs));
        seen_logs = d;
    }
    uint64_t sd = lg_otlp_dropped();
    if (sd > seen_spans) {
        lg_metrics_add(main, std_ids.spans_dropped, NULL, (double)(sd - seen_spans));
        seen_spans = sd;
    }
    lg_metrics_render(registry, om, out);
    return ct;
}

/* ---- Tracing ---- */

/* Starts the span exporter when config.tracing (or frontendPolicies.tracing) is set. The
 * exporter is process-wide and, as in agentgateway, configured once at start. */
static int start_tracing(lua_State *L, int conf, int cfgt, lg_err_t *err)
{
    int top = lua_gettop(L);
    lua_getfield(L, conf, "tracing");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, cfgt, "frontendPolicies");
        if (lua_istable(L, -1))
            lua_getfield(L, -1, "tracing");
        else
            lua_pushnil(L);
        if (!lua_istable(L, -1)) {
            lua_settop(L, top);
            return LG_OK;
        }
    }
    int t = lua_gettop(L);
    /* presets' default protocol, "500ms" intervals, host: -- as lunagate.tracing reads them */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lunagate.tracing");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        lua_getfield(L, -1, "resolve");
        lua_pushvalue(L, t);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1))
            t = lua_gettop(L);
    }
    lg_otlp_opts_t o;
    memset(&o, 0, sizeof(o));
    char endpoint[512] = "";
    lua_getfield(L, t, "otlpEndpoint");
    if (lua_isstring(L, -1)) {
        snprintf(endpoint, sizeof(endpoint), "%s", lua_tostring(L, -1));
    } else {
        lua_getfield(L, t, "host");
        if (lua_isstring(L, -1))
            snprintf(endpoint, sizeof(endpoint), "http://%s", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (endpoint[0])
        o.endpoint = endpoint;
    lua_getfield(L, t, "otlpProtocol");
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_getfield(L, t, "protocol");
    }
    if (lua_isstring(L, -1)) {
        const char *p = lua_tostring(L, -1);
        o.protocol = strncasecmp(p, "http", 4) == 0 ? LG_OTLP_HTTP : LG_OTLP_GRPC;
    }
    lua_pop(L, 1);
    char path[256] = "";
    lua_getfield(L, t, "path");
    if (lua_isstring(L, -1)) {
        snprintf(path, sizeof(path), "%s", lua_tostring(L, -1));
        o.path = path;
    }
    lua_pop(L, 1);
    static char *hdrs[32];
    size_t nh = 0;
    lua_getfield(L, t, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0 && nh < 32) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_isstring(L, -1)) {
                size_t kl = strlen(lua_tostring(L, -2)), vl = strlen(lua_tostring(L, -1));
                hdrs[nh] = lg_xmalloc(kl + vl + 3);
                snprintf(hdrs[nh], kl + vl + 3, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
                nh++;
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    o.headers = (const char *const *)hdrs;
    o.nheaders = nh;
    lua_getfield(L, t, "batchSize");
    if (lua_isinteger(L, -1))
        o.batch_max = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, t, "queueSize");
    if (lua_isinteger(L, -1))
        o.queue_max = (size_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, t, "batchInterval");
    if (lua_isinteger(L, -1))
        o.batch_interval_ms = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    int rc = lg_otlp_start(&o, err);
    for (size_t i = 0; i < nh; i++)
        free(hdrs[i]);
    lua_settop(L, top);
    return rc;
}

/* ---- Start and stop ---- */

int lg_runtime_start(lua_State *L, lg_conf_t *c, int nworkers, lg_err_t *err)
{
    int top = lua_gettop(L);
    if (lg_config_load(L, c->text, c->text_len, c->filename, err) != LG_OK)
        return LG_ERR;
    int cfgt = lua_gettop(L);
    lua_getfield(L, cfgt, "config");
    int conf = lua_gettop(L);
    if (!lua_istable(L, conf)) {
        lua_newtable(L);
        lua_replace(L, conf);
    }
    /* log writer first, so everything after goes through it */
    lg_accesslog_opts_t lo;
    memset(&lo, 0, sizeof(lo));
    char *fmt = cfg_string(L, conf, "logging", "format", "text");
    const char *env = getenv("LOG_FORMAT");
    lo.json = strcmp(env && *env ? env : fmt, "json") == 0;
    free(fmt);
    char *level = cfg_string(L, conf, "logging", "level", NULL);
    if (level) {
        if (strncmp(level, "debug", 5) == 0 || strncmp(level, "trace", 5) == 0)
            lg_log_level = LG_LOG_DEBUG;
        else if (strncmp(level, "warn", 4) == 0)
            lg_log_level = LG_LOG_WARN;
        else if (strncmp(level, "error", 5) == 0)
            lg_log_level = LG_LOG_ERR;
        free(level);
    }
    if (lg_accesslog_start(&lo, err) != LG_OK) {
        lua_settop(L, top);
        return LG_ERR;
    }
    if (start_metrics(L, conf, nworkers, err) != LG_OK) {
        lua_settop(L, top);
        return LG_ERR;
    }
    if (start_tracing(L, conf, cfgt, err) != LG_OK) {
        lua_settop(L, top);
        return LG_ERR;
    }
    lua_settop(L, top);
    return LG_OK;
}

void lg_runtime_stop(void)
{
    lg_otlp_stop(2000);
    lg_accesslog_stop();
    lg_metrics_free(registry);
    registry = NULL;
}

void lg_runtime_conn_accepted(lg_worker_t *w, int port, int tls)
{
    if (!registry)
        return;
    char bind[32];
    snprintf(bind, sizeof(bind), "bind/%d", port);
    const char *v[LG_METRICS_TCP_NLABELS] = {bind, "default/default", NULL, tls ? "https" : "http"};
    lg_metrics_add(lg_metrics_shard(registry, w->id), std_ids.downstream_connections, v, 1);
}

/* ---- The log phase of one request ---- */

typedef lg_llm_log_t llmf_t;

static void fast_log(lg_req_t *r, int json, const llmf_t *llm);

typedef struct logctx {
    int recorded;
    int fast; /* lg_hooks_fast_log() mode, when the C formatter writes the line */
    lg_worker_t *w;
    const char *labels[LG_METRICS_HTTP_NLABELS + 32];
    char status[8];
} logctx_t;

static void setstr(lua_State *L, const char *k, const char *v)
{
    if (v) {
        lua_pushstring(L, v);
        lua_setfield(L, -2, k);
    }
}

static void setint(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void push_fields(lua_State *L, lg_req_t *r, void *arg)
{
    LG_UNUSED(arg);
    lua_createtable(L, 0, 28);
    setint(L, "start_us", r->start_us);
    setint(L, "end_us", r->end_us);
    setint(L, "duration_ms", (r->end_mono - r->start_mono) / 1000);
    setint(L, "duration_us", r->end_mono - r->start_mono);
    if (r->bind)
        setstr(L, "bind", r->bind->key);
    setstr(L, "gateway", "default/default");
    if (r->listener)
        setstr(L, "listener", r->listener->name);
    if (r->route)
        setstr(L, "route", r->route->key);
    if (r->backend) {
        setstr(L, "backend", r->backend->name);
        setstr(L, "endpoint", r->backend->name);
    }
    setstr(L, "src_addr", r->src);
    setstr(L, "method", r->up_method ? r->up_method : http_method_str(r->method));
    if (r->host)
        lua_pushlstring(L, r->host, r->host_len), lua_setfield(L, -2, "host");
    if (r->path) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, r->path, r->path_len);
        if (r->query) {
            luaL_addchar(&b, '?');
            luaL_addlstring(&b, r->query, r->query_len);
        }
        luaL_pushresult(&b);
        lua_setfield(L, -2, "path");
    }
    setstr(L, "version", r->vminor == 0 ? "HTTP/1.0" : "HTTP/1.1");
    if (r->status)
        setint(L, "status", r->status);
    setstr(L, "reason", r->reason);
    if (r->error)
        setstr(L, "error", r->error);
    else if (r->client_gone && !r->resp_done)
        setstr(L, "error", "client disconnected");
    if (r->retry_count)
        setint(L, "retry_attempt", r->retry_count);
    setint(L, "response_bytes", (lua_Integer)r->resp_bytes);
    setint(L, "request_bytes", r->body ? (lua_Integer)evbuffer_get_length(r->body) : 0);
    if (r->first_byte_mono)
        setint(L, "first_byte_us", r->start_us + (r->first_byte_mono - r->start_mono));
    lua_pushliteral(L, "http");
    lua_setfield(L, -2, "protocol");
    lg_hooks_push_request_headers(L, r);
    if (r->traced) {
        char hex[33];
        lg_trace_hex(r->trace_id, 16, hex);
        setstr(L, "trace_id", hex);
        lg_trace_hex(r->span_id, 8, hex);
        setstr(L, "span_id", hex);
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "sampled");
    }
}

typedef struct consumed {
    logctx_t *lc;
} consumed_t;

static double numfield(lua_State *L, int t, const char *k, int *ok)
{
    lua_getfield(L, t, k);
    *ok = lua_isnumber(L, -1);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Prepared label sets of requests the C formatter logs, per worker. Their labels are the
 * configuration's strings (bind, listener, route), static ones (type, reason), the status,
 * and two that may be per-request copies (backend name, method): the configuration's
 * generation, the pointers, the status and those two strings' contents identify a set. */
#define HCACHE 64

typedef struct hcache {
    uint64_t gen; /* 0: empty */
    int status;
    const char *v[LG_METRICS_HTTP_NLABELS];
    char backend[128], method[24];
    lg_metrics_labels_t l;
} hcache_t;

static int same_str(const char *cached, const char *s)
{
    return s ? strcmp(cached, s) == 0 : cached[0] == '\0';
}

/* Copies s (NULL: "") into d when it fits; 0 when it does not. */
static int fits_copy(char *d, size_t cap, const char *s)
{
    size_t l = s ? strlen(s) : 0;
    if (l >= cap)
        return 0;
    memcpy(d, s ? s : "", l + 1);
    return 1;
}

static const lg_metrics_labels_t *http_labels(lg_req_t *r, logctx_t *lc)
{
    const char *const *v = lc->labels;
    if (ncustom || !lc->fast || !r->conf)
        return NULL;
    lg_worker_t *w = r->w;
    if (!w->hcache)
        w->hcache = lg_xcalloc(HCACHE, sizeof(hcache_t));
    uintptr_t h = (uintptr_t)v[8] ^ (uintptr_t)v[4] ^ (uintptr_t)r->status * 31;
    hcache_t *e = (hcache_t *)w->hcache + (h >> 4) % HCACHE;
    if (e->gen == r->conf->generation && e->status == r->status && e->v[1] == v[1] &&
        e->v[4] == v[4] && e->v[5] == v[5] && e->v[6] == v[6] && e->v[7] == v[7] &&
        e->v[8] == v[8] && e->v[9] == v[9] && same_str(e->backend, v[0]) &&
        same_str(e->method, v[2]))
        return &e->l;
    if (e->gen)
        lg_metrics_labels_dispose(&e->l);
    e->gen = 0;
    if (!fits_copy(e->backend, sizeof(e->backend), v[0]) ||
        !fits_copy(e->method, sizeof(e->method), v[2]))
        return NULL; /* too long to keep: built per request */
    e->gen = r->conf->generation;
    e->status = r->status;
    memcpy(e->v, v, sizeof(e->v));
    e->v[0] = e->v[2] = e->v[3] = NULL; /* compared by content, and as the number */
    lg_metrics_labels_init(&e->l, v, LG_METRICS_HTTP_NLABELS);
    return &e->l;
}

static void gcache_free(lg_worker_t *w);

void lg_runtime_worker_free(lg_worker_t *w)
{
    hcache_t *c = w->hcache;
    for (size_t i = 0; c && i < HCACHE; i++)
        if (c[i].gen)
            lg_metrics_labels_dispose(&c[i].l);
    free(c);
    w->hcache = NULL;
    gcache_free(w);
}

static void record_http(lg_req_t *r, logctx_t *lc)
{
    if (!registry || lc->recorded)
        return;
    lc->recorded = 1;
    lg_metrics_shard_t *sh = lg_metrics_shard(registry, r->w->id);
    lg_metrics_labels_t own;
    const lg_metrics_labels_t *l = http_labels(r, lc);
    if (!l) {
        lg_metrics_labels_init(&own, lc->labels, LG_METRICS_HTTP_NLABELS + ncustom);
        l = &own;
    }
    lg_metrics_add_labels(sh, std_ids.requests, l, 1);
    lg_metrics_observe_labels(sh, std_ids.request_duration, l,
                              (double)(r->end_mono - r->start_mono) / 1e6);
    lg_metrics_add_labels(sh, std_ids.response_bytes, l, (double)r->resp_bytes);
    if (l == &own)
        lg_metrics_labels_dispose(&own);
    if (r->connect_us > 0) {
        const char *t[1] = {r->backend && r->backend->tls ? "tls" : "tcp"};
        lg_metrics_observe(sh, std_ids.upstream_connect_duration, t, (double)r->connect_us / 1e6);
    }
}

/* ---- Spans ---- */

static void span_attr(lg_span_t *sp, lua_State *L, int e)
{
    /* e: {key, value, kind} */
    lua_rawgeti(L, e, 1);
    lua_rawgeti(L, e, 2);
    lua_rawgeti(L, e, 3);
    const char *key = lua_tostring(L, -3);
    const char *kind = lua_tostring(L, -1);
    int v = lua_gettop(L) - 1;
    if (key) {
        if (lua_type(L, v) == LUA_TTABLE) {
            size_t n = lua_rawlen(L, v);
            if (kind && strcmp(kind, "int[]") == 0) {
                int64_t *iv = lg_xcalloc(n + 1, sizeof(int64_t));
                for (size_t i = 0; i < n; i++) {
                    lua_rawgeti(L, v, (lua_Integer)i + 1);
                    iv[i] = (int64_t)lua_tointeger(L, -1);
                    lua_pop(L, 1);
                }
                lg_span_attr_int_array(sp, key, iv, n);
                free(iv);
            } else if (n <= 65536 && lua_checkstack(L, (int)n + 1)) {
                /* the strings stay on the stack until lg_span_attr_str_array copied them */
                const char **sv = lg_xcalloc(n + 1, sizeof(char *));
                for (size_t i = 0; i < n; i++) {
                    lua_rawgeti(L, v, (lua_Integer)i + 1);
                    sv[i] = lua_tostring(L, -1);
                    if (!sv[i])
                        sv[i] = "";
                }
                lg_span_attr_str_array(sp, key, sv, n);
                lua_pop(L, (int)n);
                free(sv);
            }
        } else if (lua_type(L, v) == LUA_TBOOLEAN) {
            lg_span_attr_bool(sp, key, lua_toboolean(L, v));
        } else if (lua_isinteger(L, v)) {
            lg_span_attr_int(sp, key, (int64_t)lua_tointeger(L, v));
        } else if (lua_type(L, v) == LUA_TNUMBER) {
            lg_span_attr_double(sp, key, lua_tonumber(L, v));
        } else if (lua_type(L, v) == LUA_TSTRING) {
            size_t len;
            const char *sv = lua_tolstring(L, v, &len);
            lg_span_attr_str(sp, key, sv, len);
        }
    }
    lua_pop(L, 3);
}

/* The SERVER span of r, without name and attributes. */
static lg_span_t *span_begin(lg_req_t *r)
{
    lg_span_t *sp = lg_span_new();
    memcpy(sp->trace_id, r->trace_id, 16);
    memcpy(sp->span_id, r->span_id, 8);
    if (r->has_parent)
        memcpy(sp->parent_span_id, r->parent_id, 8);
    sp->kind = LG_SPAN_KIND_SERVER;
    sp->start_ns = (uint64_t)r->start_us * 1000;
    sp->end_ns = (uint64_t)r->end_us * 1000;
    sp->flags =
        LG_SPAN_FLAG_HAS_IS_REMOTE | (r->has_parent ? LG_SPAN_FLAG_IS_REMOTE : 0) | r->trace_flags;
    size_t tsl;
    const char *ts = lg_req_header(r, "tracestate", 10, &tsl);
    if (ts)
        lg_span_set_trace_state(sp, ts, tsl);
    return sp;
}

/* Copies n bytes of s and a NUL to *at, and moves *at past them. */
static const char *pack(char **at, const char *s, size_t n)
{
    char *d = *at;
    memcpy(d, s, n);
    d[n] = '\0';
    *at = d + n + 1;
    return d;
}

/* What the CLIENT span of an upstream call is made of, copied into the span: its name and
 * attributes are written on the exporter thread (lg_span_defer), off the request path. */
typedef struct {
    const char *method, *endpoint, *host;
    size_t ml, el, hl; /* their lengths */
    int port, status;
} client_rec_t;

static void client_finish(lg_span_t *cs, void *arg)
{
    const client_rec_t *c = arg;
    size_t ml = c->ml, el = c->el;
    char *name = lg_span_copy(cs, NULL, ml + 1 + el); /* "<METHOD> <host:port>" */
    memcpy(name, c->method, ml);
    name[ml] = ' ';
    memcpy(name + ml + 1, c->endpoint, el);
    cs->name = name;
    lg_span_lit_str(cs, "http.request.method", c->method, ml);
    lg_span_lit_str(cs, "server.address", c->host, c->hl);
    lg_span_lit_int(cs, "server.port", c->port);
    if (c->status)
        lg_span_lit_int(cs, "http.response.status_code", c->status);
}

/* Sets the SERVER span's status, makes the CLIENT child for the upstream call and hands
 * both to the exporter. */
static void span_end(lg_req_t *r, lg_span_t *sp)
{
    int error = r->status >= 500 || r->error;
    if (error) {
        const char *msg = r->error ? r->error : "server error";
        lg_span_set_status(sp, LG_SPAN_STATUS_ERROR, msg, strlen(msg));
    }
    lg_span_t *cs = NULL;
    if (r->up_sent_mono && r->backend) {
        cs = lg_span_new();
        memcpy(cs->trace_id, r->trace_id, 16);
        memcpy(cs->span_id, r->client_span_id, 8);
        memcpy(cs->parent_span_id, r->span_id, 8);
        cs->kind = LG_SPAN_KIND_CLIENT;
        cs->start_ns = (uint64_t)(r->start_us + (r->up_sent_mono - r->start_mono)) * 1000;
        cs->end_ns = (uint64_t)r->end_us * 1000;
        cs->flags = LG_SPAN_FLAG_HAS_IS_REMOTE | r->trace_flags;
        const char *m = r->up_method ? r->up_method : http_method_str(r->method);
        client_rec_t *c = lg_span_defer(cs, client_finish, sizeof(*c));
        c->ml = strlen(m);
        c->el = strlen(r->backend->name);
        c->hl = strlen(r->backend->host);
        char *at = lg_span_copy(cs, NULL, c->ml + c->el + c->hl + 3);
        c->method = pack(&at, m, c->ml);
        c->endpoint = pack(&at, r->backend->name, c->el);
        c->host = pack(&at, r->backend->host, c->hl);
        c->port = r->backend->port;
        c->status = r->status;
        if (r->status >= 500 || (r->error && !r->resp_done)) {
            const char *msg = r->error ? r->error : "upstream error";
            lg_span_set_status(cs, LG_SPAN_STATUS_ERROR, msg, strlen(msg));
        }
    }
    lg_otlp_submit(sp);
    if (cs)
        lg_otlp_submit(cs);
}

static void submit_spans(lua_State *L, lg_req_t *r, int st)
{
    lg_span_t *sp = span_begin(r);
    lua_getfield(L, st, "name");
    size_t nl;
    const char *name = lua_tolstring(L, -1, &nl);
    char dflt[300];
    if (!name) {
        nl = (size_t)snprintf(dflt, sizeof(dflt), "%s %.*s", http_method_str(r->method),
                              (int)r->path_len, r->path);
        name = dflt;
    }
    lg_span_set_name(sp, name, nl);
    lua_pop(L, 1);
    lua_getfield(L, st, "attrs");
    if (lua_istable(L, -1)) {
        int a = lua_gettop(L);
        size_t n = lua_rawlen(L, a);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, a, (lua_Integer)i);
            if (lua_istable(L, -1))
                span_attr(sp, L, lua_gettop(L));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    span_end(r, sp);
}

static void plain_span(lg_req_t *r);

static void record_mcp(lua_State *L, lg_req_t *r, logctx_t *lc, int m)
{
    const char *v[LG_METRICS_MCP_NLABELS + 32];
    lua_getfield(L, m, "method");
    v[0] = lua_tostring(L, -1);
    if (!v[0]) {
        lua_pop(L, 1);
        return; /* only when a JSON-RPC method was seen */
    }
    lua_getfield(L, m, "resource_type");
    lua_getfield(L, m, "target");
    lua_getfield(L, m, "resource");
    v[1] = lua_tostring(L, -3);
    v[2] = lua_tostring(L, -2);
    v[3] = lua_tostring(L, -1);
    for (int i = 0; i < 5; i++)
        v[4 + i] = lc->labels[5 + i];
    for (size_t i = 0; i < ncustom; i++)
        v[LG_METRICS_MCP_NLABELS + i] = lc->labels[LG_METRICS_HTTP_NLABELS + i];
    lg_metrics_add(lg_metrics_shard(registry, r->w->id), std_ids.mcp_requests, v, 1);
    lua_pop(L, 4);
}

/* Prepared GenAI label sets, per worker, as hcache_t: the route's labels by pointer (the
 * configuration's generation guards them), operation, provider and models by content. */
#define GCACHE 16

typedef struct gcache {
    uint64_t gen; /* 0: empty */
    const char *v[5];
    char op[32], provider[64], req_model[128], resp_model[128];
    unsigned ready; /* bit t: usage[t] is built; bit 4: dur */
    lg_metrics_labels_t usage[4], dur;
} gcache_t;

static gcache_t *genai_cache(lg_req_t *r, const char *const *gl)
{
    lg_worker_t *w = r->w;
    if (ncustom || !r->conf)
        return NULL;
    const char *m = gl[3] ? gl[3] : "";
    uint64_t h = (uintptr_t)gl[8] >> 4;
    for (; *m; m++)
        h = (h ^ (unsigned char)*m) * 1099511628211ULL;
    if (!w->gcache)
        w->gcache = lg_xcalloc(GCACHE, sizeof(gcache_t));
    gcache_t *e = (gcache_t *)w->gcache + h % GCACHE;
    if (e->gen == r->conf->generation && memcmp(e->v, gl + 5, sizeof(e->v)) == 0 &&
        same_str(e->op, gl[1]) && same_str(e->provider, gl[2]) && same_str(e->req_model, gl[3]) &&
        same_str(e->resp_model, gl[4]))
        return e;
    for (int t = 0; t < 5; t++)
        if (e->ready >> t & 1)
            lg_metrics_labels_dispose(t < 4 ? &e->usage[t] : &e->dur);
    e->ready = 0;
    e->gen = 0;
    if (!fits_copy(e->op, sizeof(e->op), gl[1]) ||
        !fits_copy(e->provider, sizeof(e->provider), gl[2]) ||
        !fits_copy(e->req_model, sizeof(e->req_model), gl[3]) ||
        !fits_copy(e->resp_model, sizeof(e->resp_model), gl[4]))
        return NULL;
    e->gen = r->conf->generation;
    memcpy(e->v, gl + 5, sizeof(e->v));
    return e;
}

static void gcache_free(lg_worker_t *w)
{
    gcache_t *c = w->gcache;
    for (size_t i = 0; c && i < GCACHE; i++)
        for (int t = 0; t < 5; t++)
            if (c[i].ready >> t & 1)
                lg_metrics_labels_dispose(t < 4 ? &c[i].usage[t] : &c[i].dur);
    free(c);
    w->gcache = NULL;
}

/* Records the GenAI families of an LLM request. */
static void record_genai(lg_req_t *r, logctx_t *lc, const llmf_t *f, int native)
{
    const char *parser[1] = {native ? "c" : "lua"};
    lg_metrics_add(lg_metrics_shard(registry, r->w->id), std_ids.llm_requests, parser, 1);
    /* GenAI: operation, system, request model, response model, route ids, custom */
    lg_metrics_shard_t *sh = lg_metrics_shard(registry, r->w->id);
    const char *gl[LG_METRICS_TOKEN_NLABELS + 32];
    gl[1] = f->operation ? f->operation : "chat";
    gl[2] = f->provider;
    gl[3] = f->req_model;
    gl[4] = f->resp_model;
    for (int i = 0; i < 5; i++) /* bind gateway listener route route_rule */
        gl[5 + i] = lc->labels[5 + i];
    for (size_t i = 0; i < ncustom; i++)
        gl[LG_METRICS_TOKEN_NLABELS + i] = lc->labels[LG_METRICS_HTTP_NLABELS + i];
    static const char *const types[] = {"input", "output", "input_cache_read", "input_cache_write"};
    const int64_t *vals[] = {&f->in, &f->out, &f->cached_in, &f->cache_write};
    const int has[] = {f->has_in, f->has_out, f->has_cached_in, f->has_cache_write};
    size_t n = LG_METRICS_TOKEN_NLABELS + ncustom;
    gcache_t *e = genai_cache(r, gl);
    for (size_t i = 0; i < LG_ARRAY_SIZE(types); i++) {
        if (!has[i])
            continue;
        gl[0] = types[i];
        if (!e) {
            lg_metrics_observe(sh, std_ids.gen_ai_token_usage, gl, (double)*vals[i]);
            continue;
        }
        if (!(e->ready >> i & 1)) {
            lg_metrics_labels_init(&e->usage[i], gl, n);
            e->ready |= 1u << i;
        }
        lg_metrics_observe_labels(sh, std_ids.gen_ai_token_usage, &e->usage[i], (double)*vals[i]);
    }
    /* duration, ttft and tpot share one label set */
    lg_metrics_labels_t own, *l = &own;
    if (e) {
        if (!(e->ready >> 4 & 1)) {
            lg_metrics_labels_init(&e->dur, gl + 1, n - 1);
            e->ready |= 1u << 4;
        }
        l = &e->dur;
    } else {
        lg_metrics_labels_init(&own, gl + 1, n - 1);
    }
    lg_metrics_observe_labels(sh, std_ids.gen_ai_request_duration, l,
                              (double)(r->end_mono - r->start_mono) / 1e6);
    if (f->has_ttft)
        lg_metrics_observe_labels(sh, std_ids.gen_ai_ttft, l, f->ttft);
    if (f->has_tpot)
        lg_metrics_observe_labels(sh, std_ids.gen_ai_tpot, l, f->tpot);
    if (l == &own)
        lg_metrics_labels_dispose(&own);
}

/* The rec.llm table at g as an llmf_t (strings stay on the Lua stack: 4 values pushed). */
static void llmf_from_lua(lua_State *L, int g, llmf_t *f)
{
    int ok;
    memset(f, 0, sizeof(*f));
    lua_getfield(L, g, "operation");
    lua_getfield(L, g, "provider");
    lua_getfield(L, g, "request_model");
    lua_getfield(L, g, "response_model");
    f->operation = lua_type(L, -4) == LUA_TSTRING ? lua_tostring(L, -4) : NULL;
    f->provider = lua_type(L, -3) == LUA_TSTRING ? lua_tostring(L, -3) : NULL;
    f->req_model = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    f->resp_model = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    double v = numfield(L, g, "input_tokens", &ok);
    if ((f->has_in = ok))
        f->in = (int64_t)v;
    v = numfield(L, g, "output_tokens", &ok);
    if ((f->has_out = ok))
        f->out = (int64_t)v;
    v = numfield(L, g, "cached_input_tokens", &ok);
    if ((f->has_cached_in = ok))
        f->cached_in = (int64_t)v;
    v = numfield(L, g, "cache_creation_input_tokens", &ok);
    if ((f->has_cache_write = ok))
        f->cache_write = (int64_t)v;
    v = numfield(L, g, "ttft", &ok);
    if ((f->has_ttft = ok))
        f->ttft = v;
    v = numfield(L, g, "tpot", &ok);
    if ((f->has_tpot = ok))
        f->tpot = v;
}

/* The log line and metrics of an LLM request the C formatter logs. */
static void log_llm(lg_req_t *r, logctx_t *lc, const llmf_t *llm, int native)
{
    if (llm)
        lc->labels[1] = "llm";
    if (lc->fast == 1 || lc->fast == 2)
        fast_log(r, lc->fast == 2, llm);
    record_http(r, lc);
    if (llm && registry)
        record_genai(r, lc, llm, native);
}

/* After glue.llm_log: rec.llm (or nil) is on the top. */
static int fast_llm(lua_State *L, lg_req_t *r, void *arg)
{
    int g = lua_gettop(L);
    llmf_t llm;
    if (!lua_istable(L, g)) {
        log_llm(r, arg, NULL, 0);
        return LG_OK;
    }
    llmf_from_lua(L, g, &llm);
    log_llm(r, arg, &llm, 0);
    lua_pop(L, 4);
    return LG_OK;
}

/* After glue.span: the span table (or nil) is on the top. */
static int consume_span(lua_State *L, lg_req_t *r, void *arg)
{
    LG_UNUSED(arg);
    if (lua_istable(L, -1))
        submit_spans(L, r, lua_gettop(L));
    return LG_OK;
}

/* After glue.log: stack has line, genai, custom, span, mcp. */
static int consume(lua_State *L, lg_req_t *r, void *arg)
{
    logctx_t *lc = arg;
    int base = lua_gettop(L) - 4;
    if (lua_istable(L, base + 4)) {
        lc->labels[1] = "mcp";
        if (registry)
            record_mcp(L, r, lc, base + 4);
    }
    if (r->traced && lua_istable(L, base + 3))
        submit_spans(L, r, base + 3);
    size_t len;
    const char *line = lua_tolstring(L, base, &len);
    if (line)
        lg_accesslog_write(line, len);
    /* custom label values */
    if (lua_istable(L, base + 2))
        for (size_t i = 0; i < ncustom; i++) {
            lua_rawgeti(L, base + 2, (lua_Integer)i + 1);
            lc->labels[LG_METRICS_HTTP_NLABELS + i] = lua_tostring(L, -1); /* kept on stack */
        }
    if (lua_istable(L, base + 1))
        lc->labels[1] = "llm";
    record_http(r, lc); /* while the custom label strings are still on the stack */
    if (!registry || !lua_istable(L, base + 1))
        return LG_OK;
    llmf_t llm;
    llmf_from_lua(L, base + 1, &llm);
    record_genai(r, lc, &llm, 0);
    lua_pop(L, 4);
    return LG_OK;
}

/* ---- The default log line, formatted in C ----
 * Same bytes as plugins/logging/text.lua and json.lua for a request that has no LLM, MCP
 * or plugin fields, so the plain path never enters Lua. */

static const char *const secret_params[] = {
    "key",          "api_key", "apikey",        "api-key",  "x-api-key", "x-goog-api-key",
    "access_token", "token",   "client_secret", "password", "sig"};

typedef struct lbuf {
    char *p;
    size_t n, cap;
    char *stack; /* the caller's buffer p starts in; heap only past it */
} lbuf_t;

static void lb_grow(lbuf_t *b, size_t n)
{
    size_t cap = (b->n + n + 1) * 2;
    if (b->p == b->stack || !b->p) {
        char *h = lg_xmalloc(cap);
        if (b->n)
            memcpy(h, b->p, b->n);
        b->p = h;
    } else {
        b->p = lg_xrealloc(b->p, cap);
    }
    b->cap = cap;
}

/* Called ~40 times per log line: the common case is a bounds check and a memcpy. */
static inline void lb_add(lbuf_t *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap)
        lb_grow(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void lb_str(lbuf_t *b, const char *s)
{
    lb_add(b, s, strlen(s));
}

#define LB_LIT(b, lit) lb_add((b), (lit), sizeof(lit) - 1)

/* A bare text value: control bytes escaped only when the line would break (CR/LF). */
static void lb_bare(lbuf_t *b, const char *s, size_t n, int escape)
{
    if (!escape) {
        lb_add(b, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        if (c == '\n')
            lb_add(b, "\\n", 2);
        else if (c == '\r')
            lb_add(b, "\\r", 2);
        else if (c == '\t')
            lb_add(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f)
            lb_add(b, e, (size_t)snprintf(e, sizeof(e), "\\x%02x", c));
        else
            lb_add(b, (const char *)&c, 1);
    }
}

/* A JSON string as lua-cjson writes it, minus its \/ escape. Invalid UTF-8 is replaced. */
static void lb_json(lbuf_t *b, const char *s, size_t n)
{
    lb_add(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            lb_add(b, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char e[8];
            const char *named = c == '\n'   ? "\\n"
                                : c == '\r' ? "\\r"
                                : c == '\t' ? "\\t"
                                : c == '\b' ? "\\b"
                                : c == '\f' ? "\\f"
                                            : NULL;
            if (named)
                lb_add(b, named, 2);
            else
                lb_add(b, e, (size_t)snprintf(e, sizeof(e), "\\u%04x", c));
            i++;
        } else if (c < 0x80) {
            lb_add(b, (const char *)&c, 1);
            i++;
        } else {
            /* copy a valid UTF-8 sequence, or U+FFFD for a bad byte */
            int len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            int ok = len > 0 && i + (size_t)len <= n;
            for (int k = 1; ok && k < len; k++)
                ok = ((unsigned char)s[i + (size_t)k] & 0xc0) == 0x80;
            if (ok) {
                lb_add(b, s + i, (size_t)len);
                i += (size_t)len;
            } else {
                lb_add(b, "\xef\xbf\xbd", 3);
                i++;
            }
        }
    }
    lb_add(b, "\"", 1);
}

/* The path and query with credential query parameters replaced by <redacted> (as
 * lunagate.redact.path) into the empty buffer p. */
static void redact_into(lbuf_t *pb, const char *path, size_t plen, const char *query, size_t qlen)
{
    lbuf_t p = *pb;
    lb_add(&p, path, plen);
    if (query) {
        lb_add(&p, "?", 1);
        const char *q = query, *end = query + qlen;
        while (q < end) {
            const char *amp = memchr(q, '&', (size_t)(end - q));
            const char *e = amp ? amp : end;
            const char *eq = memchr(q, '=', (size_t)(e - q));
            int secret = 0;
            if (eq && eq > q)
                for (size_t i = 0; i < LG_ARRAY_SIZE(secret_params); i++)
                    if (strlen(secret_params[i]) == (size_t)(eq - q) &&
                        strncasecmp(secret_params[i], q, (size_t)(eq - q)) == 0)
                        secret = 1;
            if (secret) {
                /* the Lua pattern stops a value at '#' as well */
                const char *hash = memchr(eq + 1, '#', (size_t)(e - eq - 1));
                lb_add(&p, q, (size_t)(eq - q) + 1);
                lb_str(&p, "<redacted>");
                if (hash)
                    lb_add(&p, hash, (size_t)(e - hash));
            } else {
                lb_add(&p, q, (size_t)(e - q));
            }
            if (amp)
                lb_add(&p, "&", 1);
            q = amp ? amp + 1 : end;
        }
    }
    *pb = p;
}

static void redacted_path(lbuf_t *pb, lg_req_t *r)
{
    redact_into(pb, r->path, r->path_len, r->query, r->query_len);
}

/* http.path with credential query parameters replaced by <redacted>. */
static void lb_path(lbuf_t *b, lg_req_t *r, int json, int escape)
{
    char stack[512];
    lbuf_t p = {stack, 0, sizeof(stack), stack};
    redacted_path(&p, r);
    if (json)
        lb_json(b, p.p, p.n);
    else
        lb_bare(b, p.p, p.n, escape);
    if (p.p != stack)
        free(p.p);
}

/* The span of a plain request when it has only the default attributes: what
 * lunagate.tracing's defaults() and default_name() make of push_fields' record, in the
 * same order (spec/04-integration/30-tracing.test.mjs compares both ways). The worker only
 * copies the values into the span; plain_finish writes the name and attributes on the
 * exporter thread. */
typedef struct {
    const char *method, *host, *path, *query, *src, *listener, *route, *endpoint, *reason;
    size_t ml, hl, pl, ql, sl, ll, rl, el, rsl; /* their lengths */
    int status, retry, http10, error, has_path;
} plain_rec_t;

static void plain_finish(lg_span_t *sp, void *arg)
{
    const plain_rec_t *p = arg;
    char *name = lg_span_copy(sp, NULL, p->ml + 1 + p->pl);
    memcpy(name, p->method, p->ml);
    name[p->ml] = ' ';
    memcpy(name + p->ml + 1, p->path, p->pl);
    sp->name = name;
    lg_span_lit_str(sp, "gateway", "default/default", 15);
    if (p->listener)
        lg_span_lit_str(sp, "listener", p->listener, p->ll);
    if (p->route)
        lg_span_lit_str(sp, "route", p->route, p->rl);
    if (p->endpoint)
        lg_span_lit_str(sp, "endpoint", p->endpoint, p->el);
    lg_span_lit_str(sp, "src.addr", p->src ? p->src : "", p->sl);
    lg_span_lit_str(sp, "http.method", p->method, p->ml);
    if (p->host)
        lg_span_lit_str(sp, "http.host", p->host, p->hl);
    if (p->has_path) {
        char stack[512];
        lbuf_t b = {stack, 0, sizeof(stack), stack};
        redact_into(&b, p->path, p->pl, p->query, p->ql);
        lg_span_lit_str(sp, "http.path", b.p, b.n);
        if (b.p != stack)
            free(b.p);
    }
    const char *version = p->http10 ? "HTTP/1.0" : "HTTP/1.1";
    lg_span_lit_str(sp, "http.version", version, 8);
    if (p->status)
        lg_span_lit_int(sp, "http.status", p->status);
    char hex[33];
    lg_trace_hex(sp->trace_id, 16, hex);
    lg_span_lit_str(sp, "trace.id", hex, 32);
    lg_trace_hex(sp->span_id, 8, hex);
    lg_span_lit_str(sp, "span.id", hex, 16);
    lg_span_lit_str(sp, "protocol", "http", 4);
    if (p->retry)
        lg_span_lit_int(sp, "retry.attempt", p->retry);
    if (p->reason && strcmp(p->reason, "Upstream") != 0)
        lg_span_lit_str(sp, "reason", p->reason, p->rsl);
    lg_span_lit_str(sp, "url.scheme", "http", 4);
    lg_span_lit_str(sp, "network.protocol.version", version + 5, 3);
    if (p->status >= 500) {
        char num[24];
        lg_span_lit_str(sp, "error.type", num, lg_utoa((uint64_t)p->status, num));
    } else if (p->error) {
        lg_span_lit_str(sp, "error.type", "_OTHER", 6);
    }
}

static void plain_span(lg_req_t *r)
{
    lg_span_t *sp = span_begin(r);
    plain_rec_t *p = lg_span_defer(sp, plain_finish, sizeof(*p));
    const char *method = r->up_method ? r->up_method : http_method_str(r->method);
    const char *listener = r->listener ? r->listener->name : NULL;
    const char *route = r->route ? r->route->key : NULL;
    const char *endpoint = r->backend ? r->backend->name : NULL;
    p->ml = strlen(method);
    p->hl = r->host ? r->host_len : 0;
    p->pl = r->path ? r->path_len : 0;
    p->ql = r->query ? r->query_len : 0;
    p->sl = r->src ? strlen(r->src) : 0;
    p->ll = listener ? strlen(listener) : 0;
    p->rl = route ? strlen(route) : 0;
    p->el = endpoint ? strlen(endpoint) : 0;
    p->rsl = r->reason ? strlen(r->reason) : 0;
    /* one copy for all of them, each with its NUL */
    char *at = lg_span_copy(
        sp, NULL, p->ml + p->hl + p->pl + p->ql + p->sl + p->ll + p->rl + p->el + p->rsl + 9);
    p->method = pack(&at, method, p->ml);
    p->host = r->host ? pack(&at, r->host, p->hl) : NULL;
    p->path = r->path ? pack(&at, r->path, p->pl) : "";
    p->has_path = r->path != NULL;
    p->query = r->query ? pack(&at, r->query, p->ql) : NULL;
    p->src = r->src ? pack(&at, r->src, p->sl) : NULL;
    p->listener = listener ? pack(&at, listener, p->ll) : NULL;
    p->route = route ? pack(&at, route, p->rl) : NULL;
    p->endpoint = endpoint ? pack(&at, endpoint, p->el) : NULL;
    p->reason = r->reason ? pack(&at, r->reason, p->rsl) : NULL;
    p->status = r->status;
    p->retry = r->retry_count;
    p->http10 = r->vminor == 0;
    p->error = r->error || (r->client_gone && !r->resp_done);
    span_end(r, sp);
}

static void fast_line(lbuf_t *b, lg_req_t *r, int json, int escape, const llmf_t *llm)
{
    char ts[32], num[32];
    size_t tl = lg_time_format(r->end_us, ts);
    const char *method = r->up_method ? r->up_method : http_method_str(r->method);
    const char *version = r->vminor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    const char *err =
        r->error ? r->error : (r->client_gone && !r->resp_done ? "client disconnected" : NULL);
    typedef struct {
        const char *k, *v; /* k: " key=" (text) or ",\"key\":" (json) */
        size_t kl, n;
        int kind;
    } fld_t;
    fld_t f[24];
    int nf = 0;
#define FIELD(key, val, len, kd)                                                                   \
    f[nf++] = json ? (fld_t){",\"" key "\":", val, sizeof(",\"" key "\":") - 1, len, kd}           \
                   : (fld_t){" " key "=", val, sizeof(" " key "=") - 1, len, kd}
    FIELD("gateway", "default/default", 15, 0);
    if (r->listener)
        FIELD("listener", r->listener->name, strlen(r->listener->name), 0);
    if (r->route)
        FIELD("route", r->route->key, strlen(r->route->key), 0);
    if (r->backend)
        FIELD("endpoint", r->backend->name, strlen(r->backend->name), 0);
    FIELD("src.addr", r->src, strlen(r->src), 0);
    FIELD("http.method", method, strlen(method), 0);
    if (r->host)
        FIELD("http.host", r->host, r->host_len, 0);
    if (r->path)
        FIELD("http.path", NULL, 0, 2);
    FIELD("http.version", version, 8, 0);
    char tid[33], sid[17];
    if (r->status)
        FIELD("http.status", NULL, (size_t)r->status, 1);
    if (r->traced) {
        lg_trace_hex(r->trace_id, 16, tid);
        lg_trace_hex(r->span_id, 8, sid);
        FIELD("trace.id", tid, 32, 0);
        FIELD("span.id", sid, 16, 0);
    }
    if (llm) {
        if (llm->provider)
            FIELD("llm.provider", llm->provider, strlen(llm->provider), 0);
        if (llm->req_model)
            FIELD("llm.request.model", llm->req_model, strlen(llm->req_model), 0);
        if (llm->has_in && llm->in >= 0)
            FIELD("llm.request.tokens", NULL, (size_t)llm->in, 1);
        if (llm->resp_model)
            FIELD("llm.response.model", llm->resp_model, strlen(llm->resp_model), 0);
        if (llm->has_out && llm->out >= 0)
            FIELD("llm.response.tokens", NULL, (size_t)llm->out, 1);
    }
    if (r->retry_count)
        FIELD("retry.attempt", NULL, (size_t)r->retry_count, 1);
    if (err)
        FIELD("error", err, strlen(err), 3);
#undef FIELD
    long long dur = (long long)((r->end_mono - r->start_mono) / 1000);
    if (json) {
        LB_LIT(b, "{\"level\":\"info\",\"time\":\"");
        lb_add(b, ts, tl);
        LB_LIT(b, "\",\"scope\":\"request\"");
    } else {
        lb_add(b, ts, tl);
        LB_LIT(b, "\tinfo\trequest");
    }
    for (int i = 0; i < nf; i++) {
        lb_add(b, f[i].k, f[i].kl);
        switch (f[i].kind) {
        case 1:
            lb_add(b, num, lg_utoa(f[i].n, num));
            break;
        case 2:
            lb_path(b, r, json, escape);
            break;
        case 3:
            lb_json(b, f[i].v, f[i].n); /* error is JSON-quoted in both formats */
            break;
        default:
            if (json)
                lb_json(b, f[i].v, f[i].n);
            else
                lb_bare(b, f[i].v, f[i].n, escape);
        }
    }
    if (json)
        LB_LIT(b, ",\"duration\":\"");
    else
        LB_LIT(b, " duration=");
    lb_add(b, num, lg_utoa((uint64_t)(dur > 0 ? dur : 0), num));
    if (json)
        LB_LIT(b, "ms\"}");
    else
        LB_LIT(b, "ms");
}

static void fast_log(lg_req_t *r, int json, const llmf_t *llm)
{
    char stack[2048];
    lbuf_t b = {stack, 0, sizeof(stack), stack};
    fast_line(&b, r, json, 0, llm);
    if (!json && (memchr(b.p, '\n', b.n) || memchr(b.p, '\r', b.n))) {
        b.n = 0;
        fast_line(&b, r, json, 1, llm);
    }
    lg_accesslog_write(b.p, b.n);
    if (b.p != stack)
        free(b.p);
}

void lg_runtime_log(lg_req_t *r, void *rl)
{
    int fast = lg_hooks_fast_log(r);
    if (fast) {
        logctx_t lc;
        char status[24];
        lg_utoa((uint64_t)(r->status > 0 ? r->status : 0), status);
        const char *labels[LG_METRICS_HTTP_NLABELS] = {r->backend ? r->backend->name : NULL,
                                                       "http",
                                                       r->up_method ? r->up_method
                                                                    : http_method_str(r->method),
                                                       status,
                                                       r->reason,
                                                       r->bind ? r->bind->key : NULL,
                                                       "default/default",
                                                       r->listener ? r->listener->name : NULL,
                                                       r->route ? r->route->key : NULL,
                                                       NULL};
        memcpy(lc.labels, labels, sizeof(labels));
        lc.recorded = 0;
        lc.w = r->w;
        lc.fast = fast;
        llmf_t nat;
        if (lg_hooks_native_llm(r, &nat) == LG_OK) {
            log_llm(r, &lc, &nat, 1);
            return;
        }
        if (lg_hooks_glue_llm(r, fast_llm, &lc) == LG_OK)
            return;
        if (fast == 1 || fast == 2)
            fast_log(r, fast == 2, NULL);
        record_http(r, &lc);
        if (r->traced) {
            if (lg_hooks_span_fast(r))
                plain_span(r);
            else
                lg_hooks_glue_span(r, push_fields, &lc, consume_span);
        }
        return;
    }
    logctx_t lc;
    LG_UNUSED(rl);
    lc.w = r->w;
    snprintf(lc.status, sizeof(lc.status), "%d", r->status);
    lc.labels[0] = r->backend ? r->backend->name : NULL;
    lc.labels[1] = "http";
    lc.labels[2] = r->up_method ? r->up_method : http_method_str(r->method);
    lc.labels[3] = lc.status;
    lc.labels[4] = r->reason;
    lc.labels[5] = r->bind ? r->bind->key : NULL;
    lc.labels[6] = "default/default";
    lc.labels[7] = r->listener ? r->listener->name : NULL;
    lc.labels[8] = r->route ? r->route->key : NULL;
    lc.labels[9] = NULL;
    for (size_t i = 0; i < ncustom; i++)
        lc.labels[LG_METRICS_HTTP_NLABELS + i] = NULL;
    lc.recorded = 0;
    lg_hooks_glue_log(r, push_fields, &lc, consume);
    for (size_t i = 0; i < ncustom; i++)
        lc.labels[LG_METRICS_HTTP_NLABELS + i] = NULL;
    record_http(r, &lc); /* when glue.log did not run */
}
