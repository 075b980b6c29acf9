/* test_luart.c -- unit tests for the Lua runtime: plugin loading and contract checks, phase
 * dispatch, direct answers, error isolation, instruction budget, memory limit, reload refs.
 * SPDX-License-Identifier: MIT
 *
 * Plugins are written to a temporary folder; the config is a Lua table literal (a stand-in
 * for lg_config_load, which the proxy passes). The request namespace is faked by a global
 * `fake_path()` that reads the opaque request pointer through lg_luart_current(). */
#include "test.h"

#include "../../src/luart.c"
#include "../../src/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[256];

static void write_file(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

/* Test config loader: the "config text" is Lua returning the normalised table; it also
 * registers the fake request accessors. */
static int fake_path(lua_State *L)
{
    const char *p = lg_luart_current(L);
    lua_pushstring(L, p ? p : "");
    return 1;
}

static int load_lua_config(lua_State *L, const char *text, size_t len, const char *filename,
                           lg_err_t *err)
{
    lua_pushcfunction(L, fake_path);
    lua_setglobal(L, "fake_path");
    lua_pushcfunction(L, lg_luart_lua_exit);
    lua_setglobal(L, "fake_exit");
    if (luaL_loadbuffer(L, text, len, filename) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
        lg_err_set(err, 0, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return LG_ERR;
    }
    return LG_OK;
}

static char logged[8192];
static void sink(int level, const char *scope, const char *msg, size_t len)
{
    (void)level;
    size_t n = strlen(logged);
    if (n + len + 64 < sizeof(logged))
        snprintf(logged + n, sizeof(logged) - n, "%s|%.*s\n", scope, (int)len, msg);
}

static int cb_count;
static char cb_plugin[64];
static void on_error(const char *plugin, const char *phase, void *arg)
{
    (void)phase;
    cb_count += *(int *)arg;
    snprintf(cb_plugin, sizeof(cb_plugin), "%s", plugin);
}

static const char *CONFIG_FMT =
    "return { config = { plugins = { paths = { '%s' },\n"
    "    global = { { name = 'p_rewrite', config = { tag = 'T' } } },\n"
    "    budget = { instructions = 200000 }, memoryLimit = '16Mi',\n"
    "    shared = { counters = { maxEntries = 10 } } } },\n"
    "  binds = { { key = 'bind/3000', listeners = { { key = 'bind/3000/listener0', routes = {\n"
    "    { key = 'default/r1', policies = { plugins = { { name = 'p_answer' },\n"
    "                                                 { name = 'p_boom', config = {} } } } },\n"
    "    { key = 'default/r2', policies = {} } } } } } } }\n";

static lg_luart_t *make_rt(const char *cfg, lg_err_t *err)
{
    static int one = 1;
    lg_luart_opts_t o = {
        .config_text = cfg,
        .config_len = strlen(cfg),
        .config_file = "test.lua",
        .load_config = load_lua_config,
        .on_error = on_error,
        .on_error_arg = &one,
    };
    return lg_luart_new(&o, err);
}

static int access_path(lg_luart_t *rt, int chain, const char *path, lg_luart_exit_t *ex,
                       lg_luart_req_t *lr)
{
    lg_luart_req_init(lr, (void *)path);
    return lg_luart_access(rt, chain, lr, ex);
}

static unsigned long errors_of(lg_luart_t *rt, const char *plugin)
{
    const char *name;
    unsigned long n;
    for (int i = 0; lg_luart_plugin_errors(rt, i, &name, &n); i++)
        if (strcmp(name, plugin) == 0)
            return n;
    return 0;
}

static const char *global_str(lg_luart_t *rt, const char *name, char *buf, size_t cap)
{
    lua_State *L = lg_luart_state(rt);
    lua_getglobal(L, name);
    snprintf(buf, cap, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(nil)");
    lua_pop(L, 1);
    return buf;
}

static void bad_plugin_case(const char *file, const char *text, const char *cfg_extra,
                            const char *want, const char *desc)
{
    write_file(file, text);
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)(strlen(file) - 4), file);
    char cfg[2048];
    snprintf(cfg, sizeof(cfg),
             "return { config = { plugins = { paths = { '%s' }, global = { { name = '%s'%s } } } },"
             " binds = {} }",
             dir, name, cfg_extra);
    lg_err_t err = {0};
    lg_luart_t *rt = make_rt(cfg, &err);
    ok(rt == NULL && strstr(err.msg, file) && strstr(err.msg, want), "%s", desc);
    if (rt || !strstr(err.msg, want) || !strstr(err.msg, file))
        printf("#   err: %s\n", err.msg);
    lg_luart_free(rt);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lg-luart-XXXXXX");
    if (!mkdtemp(dir))
        return 2;
    lg_log_set_sink(sink);

    write_file("p_rewrite.lua",
               "local lg = require 'lunagate'\n"
               "return { name = 'p_rewrite', version = '1.0.0', priority = 300,\n"
               "  schema = { fields = { { tag = { type = 'string', default = 'D', description = "
               "'x' } } } },\n"
               "  init_worker = function(conf) INIT = conf.tag .. ':' .. lg.phase() end,\n"
               "  access = function(conf, ctx)\n"
               "    ctx.seen = { 'rewrite:' .. lg.phase() }\n"
               "    ctx.plugin.mark = conf.tag; ctx.path = fake_path()\n"
               "    local ok = pcall(function() conf.tag = 'changed' end)\n"
               "    if ok then error('conf is writable') end\n"
               "  end,\n"
               "  header_filter = function(conf, ctx)\n"
               "    ctx.seen[#ctx.seen + 1] = 'hf:' .. tostring(ctx.plugin.mark) end,\n"
               "  body_filter = function(conf, ctx, chunk, eof)\n"
               "    if chunk == 'drop' then return nil end\n"
               "    if chunk == 'keep' then return end\n"
               "    return chunk:upper() .. (eof and '!' or '') end,\n"
               "  log = function(conf, ctx)\n"
               "    LOGGED = (LOGGED or 0) + 1; LAST = table.concat(ctx.seen or {}, ',')\n"
               "    lg.log.set_field('seen', LAST)\n"
               "    assert(lg.ctx == ctx) end,\n"
               "}\n");
    write_file("answer_util.lua", "return { deny_status = 403 }\n");
    write_file("p_answer.lua",
               "local util = require 'answer_util' -- a helper beside the plugin\n"
               "return { name = 'p_answer', version = '1.0.0', priority = 200,\n"
               "  schema = { fields = {} },\n"
               "  access = function(conf, ctx)\n"
               "    if ctx.plugin.mark then error('ctx.plugin leaked between plugins') end\n"
               "    if ctx.path == '/deny' then return util.deny_status, { error = 'denied' }, { "
               "['x-why'] = 'test' } end\n"
               "    if ctx.path == '/text' then return 418, 'teapot' end\n"
               "    if ctx.path == '/exit' then fake_exit(401, 'go away', { ['www-authenticate'] = "
               "'Basic' }); error('unreachable') end\n"
               "    if ctx.path == '/exit-pcall' then pcall(fake_exit, 402, 'pay'); "
               "error('swallowed exit') end\n"
               "  end,\n"
               "}\n");
    write_file("p_boom.lua",
               "-- made at load, under the budget; loops forever once resumed again\n"
               "local spin = coroutine.create(function() coroutine.yield(); while true do end "
               "end)\n"
               "coroutine.resume(spin)\n"
               "return { name = 'p_boom', version = '1.0.0', priority = 100,\n"
               "  schema = { fields = {} },\n"
               "  access = function(conf, ctx)\n"
               "    local p = ctx.path\n"
               "    if p == '/boom' then error('kaboom') end\n"
               "    if p == '/loop' then while true do end end\n"
               "    if p == '/co-loop' then coroutine.resume(coroutine.create(function() "
               "while true do end end)) end\n"
               "    if p == '/wrap-loop' then coroutine.wrap(function() while true do end end)() "
               "end\n"
               "    if p == '/old-co' then coroutine.resume(spin) end\n"
               "    if p == '/pcall-loop' then while true do pcall(function() while true do end "
               "end) end end\n"
               "    if p == '/mem' then local t = {}; for i = 1, 1e9 do t[i] = string.rep('x', "
               "1000) .. i end end\n"
               "    if p == '/bigstr' then local s = string.rep('y', 64 * 1024 * 1024) end\n"
               "    if p == '/badret' then return 'nope' end\n"
               "  end,\n"
               "  body_filter = function(conf, ctx, chunk)\n"
               "    if chunk:lower():find('explode', 1, true) then error('bf') end end,\n"
               "}\n");

    char cfg[4096];
    snprintf(cfg, sizeof(cfg), CONFIG_FMT, dir);
    lg_err_t err = {0};
    lg_luart_t *rt = make_rt(cfg, &err);
    ok(rt != NULL, "runtime builds from a plugin folder");
    if (!rt) {
        printf("#   err: %s\n", err.msg);
        return test_done();
    }
    char buf[512];
    ok_streq(global_str(rt, "INIT", buf, sizeof(buf)), "T:init_worker",
             "init_worker ran with conf");

    int r1 = lg_luart_chain(rt, "default/r1");
    int r2 = lg_luart_chain(rt, "default/r2");
    int r1full = lg_luart_chain(rt, "bind/3000/listener0/default/r1");
    ok(r1 >= 0 && r2 >= 0 && r1 != r2 && r1full == r1, "chains per route (r1=%d r2=%d)", r1, r2);
    ok(lg_luart_chain(rt, "unknown/route") == r2, "unknown routes get the global chain");
    ok(lg_luart_chain_has(rt, r1, LG_PHASE_ACCESS) && lg_luart_chain_has(rt, r2, LG_PHASE_LOG) &&
           lg_luart_chain_has(rt, r1, LG_PHASE_BODY_FILTER),
       "chain_has for implemented phases");

    /* ---- a normal request through every phase ---- */
    lg_luart_exit_t ex;
    lg_luart_req_t lr;
    int rc = access_path(rt, r1, "/ok", &ex, &lr);
    ok(rc == LG_OK && lr.ctx_ref != LUA_NOREF, "access continues; ctx created");
    ok(lg_luart_header_filter(rt, r1, &lr) == LG_OK, "header_filter");
    const char *out;
    size_t outlen;
    rc = lg_luart_body_filter(rt, r1, &lr, "abc", 3, 0, &out, &outlen);
    ok(rc == LG_OK && outlen == 3 && memcmp(out, "ABC", 3) == 0, "body_filter replaces a chunk");
    const char *keep = "keep";
    rc = lg_luart_body_filter(rt, r1, &lr, keep, 4, 0, &out, &outlen);
    ok(rc == LG_OK && out == keep && outlen == 4, "no return value keeps the chunk as is");
    rc = lg_luart_body_filter(rt, r1, &lr, "drop", 4, 0, &out, &outlen);
    ok(rc == LG_OK && out == NULL && outlen == 0, "returning nil drops the chunk");
    rc = lg_luart_body_filter(rt, r1, &lr, "end", 3, 1, &out, &outlen);
    ok(rc == LG_OK && outlen == 4 && memcmp(out, "END!", 4) == 0, "eof flag reaches the plugin");
    lg_luart_log(rt, r1, &lr);
    ok_streq(global_str(rt, "LAST", buf, sizeof(buf)), "rewrite:access,hf:T",
             "ctx and ctx.plugin persist across phases");
    ok(lr.rec_ref != LUA_NOREF, "set_field created the request record");
    lg_luart_req_end(rt, &lr);
    ok(lr.ctx_ref == LUA_NOREF && lr.rec_ref == LUA_NOREF, "req_end releases ctx and record");

    /* ---- direct answers ---- */
    rc = access_path(rt, r1, "/deny", &ex, &lr);
    int json_ct = 0, why = 0;
    for (size_t i = 0; i < ex.nheaders; i++) {
        json_ct |= !strcmp(ex.headers[2 * i], "content-type") &&
                   !strcmp(ex.headers[2 * i + 1], "application/json");
        why |= !strcmp(ex.headers[2 * i], "x-why") && !strcmp(ex.headers[2 * i + 1], "test");
    }
    ok(rc == LG_DECLINED && ex.status == 403 && ex.body &&
           strcmp(ex.body, "{\"error\":\"denied\"}") == 0 && json_ct && why,
       "return status, table body, headers -> JSON answer");
    lg_luart_exit_dispose(&ex);
    lg_luart_log(rt, r1, &lr);
    lg_luart_req_end(rt, &lr);

    rc = access_path(rt, r1, "/text", &ex, &lr);
    ok(rc == LG_DECLINED && ex.status == 418 && ex.len == 6 && !strcmp(ex.body, "teapot") &&
           ex.nheaders == 0,
       "return status, string body");
    lg_luart_exit_dispose(&ex);
    lg_luart_req_end(rt, &lr);

    rc = access_path(rt, r1, "/exit", &ex, &lr);
    ok(rc == LG_DECLINED && ex.status == 401 && !strcmp(ex.body, "go away") && ex.nheaders == 1 &&
           !strcmp(ex.headers[0], "www-authenticate"),
       "lg.response.exit stops the plugin and answers");
    lg_luart_exit_dispose(&ex);
    lg_luart_req_end(rt, &lr);

    rc = access_path(rt, r1, "/exit-pcall", &ex, &lr);
    ok(rc == LG_DECLINED && ex.status == 402, "pcall cannot swallow an exit");
    lg_luart_exit_dispose(&ex);
    lg_luart_req_end(rt, &lr);

    /* ---- failures are isolated ---- */
    logged[0] = 0;
    cb_count = 0;
    rc = access_path(rt, r1, "/boom", &ex, &lr);
    ok(rc == LG_ERR, "a plugin error fails the request");
    ok(strstr(logged, "plugin=p_boom phase=access: ") && strstr(logged, "kaboom") &&
           strstr(logged, "traceback"),
       "error logged with plugin, phase, message and traceback");
    ok(errors_of(rt, "p_boom") == 1 && cb_count == 1 && !strcmp(cb_plugin, "p_boom"),
       "error counted and reported");
    lg_luart_req_end(rt, &lr);
    rc = access_path(rt, r1, "/ok", &ex, &lr);
    ok(rc == LG_OK, "the state serves the next request");
    lg_luart_req_end(rt, &lr);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    logged[0] = 0;
    rc = access_path(rt, r1, "/loop", &ex, &lr);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    ok(rc == LG_ERR && secs < 2.0 && strstr(logged, "instruction budget exceeded"),
       "an endless loop is stopped by the budget (%.3fs)", secs);
    lg_luart_req_end(rt, &lr);

    rc = access_path(rt, r1, "/pcall-loop", &ex, &lr);
    ok(rc == LG_ERR, "pcall cannot swallow the budget error");
    lg_luart_req_end(rt, &lr);

    /* a hook belongs to one Lua thread: loops inside coroutines are stopped too */
    const char *co_paths[] = {"/co-loop", "/wrap-loop", "/old-co"};
    for (int i = 0; i < 3; i++) {
        logged[0] = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = access_path(rt, r1, co_paths[i], &ex, &lr);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        ok(rc == LG_ERR && secs < 2.0 && strstr(logged, "instruction budget exceeded"),
           "an endless loop in a coroutine (%s) is stopped by the budget (%.3fs)", co_paths[i],
           secs);
        lg_luart_req_end(rt, &lr);
    }
    rc = access_path(rt, r1, "/ok", &ex, &lr);
    ok(rc == LG_OK, "the state serves the next request after a stopped coroutine");
    lg_luart_req_end(rt, &lr);

    logged[0] = 0;
    rc = access_path(rt, r1, "/mem", &ex, &lr);
    ok(rc == LG_ERR && strstr(logged, "not enough memory"), "unbounded allocation hits the limit");
    ok(lg_luart_memory(rt) < 16u << 20, "memory stays under the limit (%zu bytes)",
       lg_luart_memory(rt));
    lg_luart_req_end(rt, &lr);
    rc = access_path(rt, r1, "/bigstr", &ex, &lr);
    ok(rc == LG_ERR, "one huge allocation fails too");
    lg_luart_req_end(rt, &lr);
    rc = access_path(rt, r1, "/ok", &ex, &lr);
    ok(rc == LG_OK, "the state survives memory exhaustion");
    lg_luart_req_end(rt, &lr);

    rc = access_path(rt, r1, "/badret", &ex, &lr);
    ok(rc == LG_ERR && ex.body == NULL, "a bad access return value is the plugin's error");
    lg_luart_req_end(rt, &lr);
    ok(errors_of(rt, "p_boom") == 9, "all p_boom failures counted (%lu)", errors_of(rt, "p_boom"));

    lg_luart_req_init(&lr, (void *)"/ok");
    rc = lg_luart_body_filter(rt, r1, &lr, "explode", 7, 0, &out, &outlen);
    ok(rc == LG_ERR, "a body_filter error is reported");
    lg_luart_req_end(rt, &lr);

    /* ---- header_filter and body_filter in one entry (a whole response) ---- */
    rc = access_path(rt, r1, "/ok", &ex, &lr);
    int failed = -1;
    rc = lg_luart_header_body(rt, r1, &lr, "abc", 3, &out, &outlen, &failed);
    ok(rc == LG_OK && outlen == 4 && memcmp(out, "ABC!", 4) == 0,
       "header_body: body_filter sees the whole body with eof");
    lg_luart_log(rt, r1, &lr);
    ok_streq(global_str(rt, "LAST", buf, sizeof(buf)), "rewrite:access,hf:T",
             "header_body: header_filter ran first, on the request's ctx");
    lg_luart_req_end(rt, &lr);
    logged[0] = 0;
    lg_luart_req_init(&lr, (void *)"/ok"); /* no access phase: header_filter finds no ctx.seen */
    rc = lg_luart_header_body(rt, r1, &lr, "abc", 3, &out, &outlen, &failed);
    ok(rc == LG_ERR && failed == LG_PHASE_HEADER_FILTER && strstr(logged, "phase=header_filter"),
       "header_body: a header_filter error says so");
    lg_luart_req_end(rt, &lr);
    logged[0] = 0;
    unsigned long booms = errors_of(rt, "p_boom");
    rc = access_path(rt, r1, "/ok", &ex, &lr);
    rc = lg_luart_header_body(rt, r1, &lr, "explode", 7, &out, &outlen, &failed);
    ok(rc == LG_ERR && failed == LG_PHASE_BODY_FILTER && strstr(logged, "plugin=p_boom") &&
           strstr(logged, "phase=body_filter") && errors_of(rt, "p_boom") == booms + 1,
       "header_body: a body_filter error is the plugin's, in body_filter");
    lg_luart_req_end(rt, &lr);
    rc = access_path(rt, r1, "/ok", &ex, &lr);
    rc = lg_luart_header_body(rt, r1, &lr, "drop", 4, &out, &outlen, &failed);
    ok(rc == LG_OK && out == NULL && outlen == 0, "header_body: a dropped body");
    lg_luart_req_end(rt, &lr);

    /* ---- the proxy's own calls ---- */
    lua_State *L = lg_luart_state(rt);
    luaL_loadstring(L, "local a = ...; return a * 2");
    lua_pushinteger(L, 21);
    ok(lg_luart_pcall(rt, 1, 1, "double", &err) == LG_OK && lua_tointeger(L, -1) == 42,
       "lg_luart_pcall returns results");
    lua_pop(L, 1);
    luaL_loadstring(L, "error('nope')");
    ok(lg_luart_pcall(rt, 0, 0, "failing", &err) == LG_ERR && strstr(err.msg, "failing: ") &&
           strstr(err.msg, "nope") && lua_gettop(L) == 0,
       "lg_luart_pcall reports errors");
    luaL_loadstring(L, "local lg = require 'lunagate'; return lg.shared.counters:incr('k', 1, 0)");
    ok(lg_luart_pcall(rt, 0, 1, "shared", &err) == LG_OK && lua_tointeger(L, -1) == 1,
       "shared dictionaries from config are bound");
    lua_pop(L, 1);

    /* ---- reload refcount ---- */
    lg_luart_ref(rt);
    lg_luart_unref(rt);
    ok(lg_luart_state(rt) != NULL, "unref to 1 keeps the runtime");
    lg_luart_unref(rt); /* frees */

    /* ---- contract and config errors name the file ---- */
    bad_plugin_case("nover.lua",
                    "return { name = 'nover', priority = 1, schema = { fields = {} } }", "",
                    "missing version", "missing version is rejected, naming the file");
    bad_plugin_case(
        "badphase.lua",
        "return { name = 'badphase', version = '1', priority = 1, schema = { fields = {} },"
        " acess = function() end }",
        "", "unknown phase 'acess'", "an unknown phase name is rejected");
    bad_plugin_case(
        "fprio.lua",
        "return { name = 'fprio', version = '1', priority = 1.5, schema = { fields = {} } }", "",
        "priority must be an integer", "a non-integer priority is rejected");
    bad_plugin_case(
        "badconf.lua",
        "return { name = 'badconf', version = '1', priority = 5, schema = { fields = {\n"
        "  { limit = { type = 'integer', required = true, description = 'x' } } } } }",
        ", config = { limit = 'ten' }",
        "config.plugins.global[0].config.limit: expected an integer",
        "a bad plugin config names the file and the config path");
    bad_plugin_case("syntax.lua", "return { name = ", "",
                    "syntax.lua:1:", "a syntax error names the file and line");
    bad_plugin_case("toploop.lua", "while true do end", "", "instruction budget exceeded",
                    "top-level code runs under the budget");
    write_file("dupa.lua",
               "return { name = 'dupa', version = '1', priority = 7, schema = { fields = {} } }");
    bad_plugin_case(
        "dupb.lua",
        "return { name = 'dupb', version = '1', priority = 7, schema = { fields = {} } }",
        " }, { name = 'dupa'", "priorities must be unique", "duplicate priorities are rejected");
    bad_plugin_case(
        "initfail.lua",
        "return { name = 'initfail', version = '1', priority = 9, schema = { fields = {} },"
        " init_worker = function() error('no backend') end }",
        "", "init_worker failed", "an init_worker error fails the build");
    {
        char c2[512];
        snprintf(c2, sizeof(c2),
                 "return { config = { plugins = { paths = { '%s' }, global = { { name = 'ghost' } "
                 "} } } }",
                 dir);
        lg_luart_t *bad = make_rt(c2, &err);
        ok(bad == NULL && strstr(err.msg, "unknown plugin 'ghost'") &&
               strstr(err.msg, "config.plugins.global[0]"),
           "an unknown plugin names the config path");
        lg_luart_free(bad);
    }

    /* ---- the real config loader (YAML) ---- */
    {
        char y[2048];
        snprintf(y, sizeof(y),
                 "config:\n"
                 "  plugins:\n"
                 "    paths: [\"%s\"]\n"
                 "    global:\n"
                 "    - name: p_rewrite\n"
                 "      config: {tag: Y}\n"
                 "    budget: {instructions: 100000}\n"
                 "binds:\n"
                 "- port: 3999\n"
                 "  listeners:\n"
                 "  - routes:\n"
                 "    - name: yr\n"
                 "      backends:\n"
                 "      - host: 127.0.0.1:9\n"
                 "      policies:\n"
                 "        plugins:\n"
                 "        - name: p_answer\n",
                 dir);
        lg_luart_opts_t o = {.config_text = y,
                             .config_len = strlen(y),
                             .config_file = "/tmp/lunagate.yaml",
                             .load_config = lg_config_load};
        lg_luart_t *yrt = lg_luart_new(&o, &err);
        ok(yrt != NULL, "builds from YAML through lg_config_load");
        if (!yrt)
            printf("#   err: %s\n", err.msg);
        if (yrt) {
            int yc = lg_luart_chain(yrt, "default/yr");
            ok(yc >= 0 && lg_luart_chain_has(yrt, yc, LG_PHASE_ACCESS), "YAML route has its chain");
            ok_streq(global_str(yrt, "INIT", buf, sizeof(buf)), "Y:init_worker",
                     "global plugin config from YAML");
            lg_luart_push_config(yrt);
            ok(lua_getfield(lg_luart_state(yrt), -1, "binds") == LUA_TTABLE,
               "push_config gives the normalised config");
            lua_pop(lg_luart_state(yrt), 2);
            lua_pushcfunction(lg_luart_state(yrt), fake_path);
            lua_setglobal(lg_luart_state(yrt), "fake_path");
            lg_luart_req_init(&lr, (void *)"/deny");
            ok(lg_luart_access(yrt, yc, &lr, &ex) == LG_DECLINED && ex.status == 403,
               "YAML-configured chain answers");
            lg_luart_exit_dispose(&ex);
            lg_luart_req_end(yrt, &lr);
        }
        lg_luart_unref(yrt);
        /* a bad plugin config in YAML is a load error naming the file and path */
        snprintf(y, sizeof(y),
                 "config:\n  plugins:\n    paths: [\"%s\"]\n    global:\n"
                 "    - name: p_rewrite\n      config: {tag: 5}\n",
                 dir);
        o.config_len = strlen(y);
        o.load_config = NULL; /* the default loader is lg_config_load */
        yrt = lg_luart_new(&o, &err);
        ok(yrt == NULL && strstr(err.msg, "p_rewrite.lua") &&
               strstr(err.msg, "config.plugins.global[0].config.tag: expected a string"),
           "YAML plugin config error: %s", err.msg);
        lg_luart_free(yrt);
    }

    /* ---- an empty ctx is reused; a written one is not, and nothing leaks ---- */
    {
        write_file("p_ctx.lua",
                   "return { name = 'p_ctx', version = '1.0.0', priority = 10,\n"
                   "  schema = { fields = {} },\n"
                   "  access = function(conf, ctx)\n"
                   "    local p = fake_path()\n"
                   "    if ctx.mark ~= nil then error('ctx leaked from an earlier request') end\n"
                   "    IDS = (IDS or '') .. (p == '/write' and 'w' or '') .. string.format('%p', "
                   "ctx) .. ' '\n"
                   "    if p == '/write' then ctx.mark = 1 end\n"
                   "  end,\n"
                   "}\n");
        char c2[1024];
        snprintf(c2, sizeof(c2),
                 "return { config = { plugins = { paths = { '%s' } } },\n"
                 "  binds = { { key = 'b', listeners = { { key = 'l', routes = {\n"
                 "    { key = 'default/c', policies = { plugins = { { name = 'p_ctx' } } } } } "
                 "} } } } }\n",
                 dir);
        lg_luart_t *crt = make_rt(c2, &err);
        ok(crt != NULL, "ctx runtime builds");
        if (crt) {
            lua_pushcfunction(lg_luart_state(crt), fake_path);
            lua_setglobal(lg_luart_state(crt), "fake_path");
            int cc = lg_luart_chain(crt, "default/c");
            const char *paths[] = {"/a", "/b", "/write", "/c"};
            int all_ok = 1;
            for (int i = 0; i < 4; i++) {
                lg_luart_req_init(&lr, (void *)paths[i]);
                all_ok &= lg_luart_access(crt, cc, &lr, &ex) == LG_OK;
                lg_luart_req_end(crt, &lr);
            }
            char ids[4][64] = {{0}};
            global_str(crt, "IDS", buf, sizeof(buf));
            int n = sscanf(buf, "%63s %63s %63s %63s", ids[0], ids[1], ids[2], ids[3]);
            ok(all_ok && n == 4, "no request saw another request's ctx field (%s)", buf);
            ok(n == 4 && !strcmp(ids[0], ids[1]) && !strcmp(ids[2] + 1, ids[1]),
               "an empty ctx is handed to the next request");
            ok(n == 4 && strcmp(ids[3], ids[2] + 1) != 0, "a written ctx is not reused");
        }
        lg_luart_free(crt);
    }

    /* ---- a chain longer than the driver's upvalues: the later calls use registry refs ---- */
    {
        enum { MANY = 80 }; /* 80 plugins x 4 phases x 2 values > 254 upvalues */
        static char c3[8192];
        int at = snprintf(c3, sizeof(c3),
                          "return { config = { plugins = { paths = { '%s' }, global = {", dir);
        for (int i = 1; i <= MANY; i++) {
            char file[32], text[1024];
            snprintf(file, sizeof(file), "p_many_%d.lua", i);
            snprintf(
                text, sizeof(text),
                "return { name = 'p_many_%d', version = '1.0.0', priority = %d,\n"
                "  schema = { fields = { { tag = { type = 'string', default = '%d', "
                "description = 'x' } } } },\n"
                "  access = function(conf, ctx) ACC = (ACC or '') .. conf.tag .. ',' end,\n"
                "  header_filter = function(conf, ctx) HF = (HF or 0) + tonumber(conf.tag) end,\n"
                "  body_filter = function(conf, ctx, chunk, eof) return chunk .. conf.tag .. ',' "
                "end,\n"
                "  log = function(conf, ctx) if conf.tag == '7' then error('late boom') end\n"
                "    LOGN = (LOGN or 0) + 1 end,\n"
                "}\n",
                i, 1000 + i, i);
            write_file(file, text);
            at += snprintf(c3 + at, sizeof(c3) - (size_t)at, " { name = 'p_many_%d' },", i);
        }
        snprintf(c3 + at, sizeof(c3) - (size_t)at, " } } }, binds = {} }");
        lg_luart_t *mrt = make_rt(c3, &err);
        ok(mrt != NULL, "a chain of %d plugins builds", MANY);
        if (!mrt)
            printf("#   err: %s\n", err.msg);
        if (mrt) {
            char want[1024] = "";
            for (int i = MANY, w = 0; i >= 1; i--)
                w += snprintf(want + w, sizeof(want) - (size_t)w, "%d,", i);
            lg_luart_req_init(&lr, (void *)"/");
            int rc = lg_luart_access(mrt, 0, &lr, &ex);
            ok(rc == LG_OK && !strcmp(global_str(mrt, "ACC", buf, sizeof(buf)), want),
               "access ran all %d plugins, highest priority first", MANY);
            ok(lg_luart_header_filter(mrt, 0, &lr) == LG_OK &&
                   !strcmp(global_str(mrt, "HF", buf, sizeof(buf)), "3240"),
               "header_filter ran all of them (%s)", buf);
            const char *out;
            size_t outlen;
            rc = lg_luart_body_filter(mrt, 0, &lr, "x", 1, 1, &out, &outlen);
            ok(rc == LG_OK && outlen == strlen(want) + 1 && !memcmp(out, "x", 1) &&
                   !memcmp(out + 1, want, outlen - 1),
               "body_filter passed the chunk through all of them");
            lg_luart_log(mrt, 0, &lr);
            ok(!strcmp(global_str(mrt, "LOGN", buf, sizeof(buf)), "79") &&
                   errors_of(mrt, "p_many_7") == 1 && errors_of(mrt, "p_many_8") == 0,
               "a log error past the upvalues is p_many_7's, and the rest still log (%s)", buf);
            lg_luart_req_end(mrt, &lr);
        }
        lg_luart_free(mrt);
    }

    /* ---- the shipped example loads ---- */
    {
        setenv("OPENAI_API_KEY", "sk-test", 0);
        size_t n;
        char *text = lg_config_read_file(LG_HOME "/config/examples/custom-plugin.yaml", &n, &err);
        lg_luart_opts_t o = {.config_text = text,
                             .config_len = n,
                             .config_file = LG_HOME "/config/examples/custom-plugin.yaml",
                             .load_config = lg_config_load};
        lg_luart_t *ert = text ? lg_luart_new(&o, &err) : NULL;
        ok(ert != NULL, "config/examples/custom-plugin.yaml loads with its plugins");
        if (!ert)
            printf("#   err: %s\n", err.msg);
        if (ert) {
            int ec = lg_luart_chain(ert, "default/openai");
            ok(ec >= 0 && lg_luart_chain_has(ert, ec, LG_PHASE_HEADER_FILTER),
               "example route chain has request-hash and prompt-guard");
        }
        lg_luart_free(ert);
        free(text);
    }

    lg_log_set_sink(NULL);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    lg_shared_reset();
    return test_done();
}
