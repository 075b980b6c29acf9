/* luart.c -- Lua states, plugin loading, protected phase dispatch, memory limit; the
 * instruction budget's watchdog is luart_budget.c.
 * SPDX-License-Identifier: MIT
 *
 * Plugin discovery, contract checks, schema validation and chain building are Lua
 * (lua/lunagate/pipeline.lua, plugins.lua, schema.lua); this file turns the chains into arrays
 * of registry refs and calls them directly, one protected call per phase (header_filter and
 * body_filter share one when the whole response is here), so a no-op plugin costs a few
 * hundred nanoseconds.
 *
 * Every phase entry point runs its bookkeeping (ctx creation, string pushes, refs) inside an
 * outer protected "driver" call, because any Lua allocation may fail once a plugin has used
 * the state's memory budget, and an unprotected failure would abort the process. */
#include "luart.h"

#include "luart_budget.h"

#include "config.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef LG_HOME
#define LG_HOME "."
#endif

int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

enum { PH_ACCESS, PH_HEADER_FILTER, PH_BODY_FILTER, PH_LOG, PH_N };
static const char *const phase_fields[PH_N] = {"access", "header_filter", "body_filter", "log"};
static const int phase_flags[PH_N] = {LG_PHASE_ACCESS, LG_PHASE_HEADER_FILTER, LG_PHASE_BODY_FILTER,
                                      LG_PHASE_LOG};

typedef struct {
    char *name;
    char *file;
    int mod_ref;  /* the plugin table */
    int conf_ref; /* conf of its first attachment, for init_worker */
    atomic_ulong errors;
} plugin_t;

typedef struct {
    int plugin;       /* index into rt->plugins */
    const char *name; /* rt->plugins[plugin].name */
    int fn_ref;
    int conf_ref;
    int up; /* upvalue index of fn (conf at up + 1) in the chain's driver, or 0 */
} call_t;

typedef struct {
    call_t *calls[PH_N];
    int n[PH_N];
    int drv_ref; /* `driver` closed over the calls' functions and confs */
} chain_t;

#define DRIVER_UPVALUES 254 /* Lua allows 255 upvalues; calls past these use fn_ref */

#define CTX_POOL_MAX 64

struct lg_luart {
    lua_State *L;
    lg_lapi_ctx_t actx;
    atomic_int refs;
    size_t mem_used, mem_limit;
    lg_budget_t budget;         /* config.plugins.budget.instructions per phase call */
    int exit_pending;           /* set by lg_luart_lua_exit; same */
    int exit_ref;               /* {status, body, headers} of the pending exit */
    int config_ref;             /* the normalised config table */
    int cur_plugin;             /* for ctx.plugin; -1 outside plugin calls */
    int ctx_pool[CTX_POOL_MAX]; /* refs of empty ctx tables from finished requests */
    int nctx_pool;
    const void *ctx_mt; /* the lunagate.ctx metatable */
    int nplugins;
    plugin_t *plugins;
    int nchains;
    chain_t *chains;
    int nroutes;
    char **route_keys;
    int *route_chains;
    int default_chain;
    lg_luart_error_cb *on_error;
    void *on_error_arg;
};

static char exit_tag;   /* address used as the error value of lg.response.exit */
static char states_key; /* ctx[&states_key] = { [plugin+1] = per-plugin table } */

/* ---- Memory ---- */

static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lg_luart_t *rt = ud;
    size_t old = ptr ? osize : 0; /* for a new block, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        rt->mem_used -= old;
        return NULL;
    }
    /* Only growth can fail: Lua must always be able to shrink. A failure makes Lua run an
     * emergency collection and retry, then raise "not enough memory". */
    if (nsize > old && rt->mem_limit && rt->mem_used - old + nsize > rt->mem_limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    rt->mem_used = rt->mem_used - old + nsize;
    return p;
}

static int panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    lg_log(LG_LOG_ERR, "lua", "unprotected error in Lua: %s", msg ? msg : "?");
    abort();
}

size_t lg_luart_memory(lg_luart_t *rt)
{
    return rt->mem_used;
}

/* ---- Traceback, pcall wrappers ---- */

lg_luart_t *lg_luart_from_state(lua_State *L)
{
    lg_lapi_ctx_t *c = lg_lapi_ctx(L);
    return c ? c->owner : NULL;
}

lg_budget_t *lg_luart_budget(lua_State *L)
{
    lg_luart_t *rt = lg_luart_from_state(L);
    return rt ? &rt->budget : NULL;
}

static int msgh(lua_State *L)
{
    if (lua_touserdata(L, 1) == &exit_tag)
        return 1;
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* pcall, xpcall and coroutine.resume: a plugin may not swallow the budget error or an exit. */
static int guarded_call(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    lg_luart_t *rt = lg_luart_from_state(L);
    if (rt && rt->exit_pending) {
        lua_pushlightuserdata(L, &exit_tag);
        return lua_error(L);
    }
    if (rt && rt->budget.blown) {
        /* re-raise pcall's own error message when there is one: it carries the position */
        if (lua_gettop(L) >= 2 && lua_isboolean(L, 1) && !lua_toboolean(L, 1) &&
            lua_type(L, 2) == LUA_TSTRING) {
            lua_pushvalue(L, 2);
            return lua_error(L);
        }
        return luaL_error(L, "instruction budget exceeded (%I instructions)", rt->budget.limit);
    }
    return lua_gettop(L);
}

static void wrap_global(lua_State *L, int tidx, const char *name)
{
    tidx = lua_absindex(L, tidx);
    lua_getfield(L, tidx, name);
    lua_pushcclosure(L, guarded_call, 1);
    lua_setfield(L, tidx, name);
}

/* "msg\nstack traceback:\n\tA\n\tB" -> "msg (traceback: A <- B)" for one log line. */
static void one_line(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    const char *tb = strstr(in, "\nstack traceback:\n\t");
    size_t head = tb ? (size_t)(tb - in) : strlen(in);
    for (size_t i = 0; i < head && o + 1 < cap; i++)
        out[o++] = in[i] == '\n' ? ' ' : in[i];
    if (tb) {
        const char *p = tb + strlen("\nstack traceback:\n\t");
        const char *pre = " (traceback: ";
        for (; *pre && o + 1 < cap; pre++)
            out[o++] = *pre;
        for (; *p && o + 1 < cap; p++) {
            if (p[0] == '\n' && p[1] == '\t') {
                for (const char *s = " <- "; *s && o + 1 < cap; s++)
                    out[o++] = *s;
                p++;
            } else {
                out[o++] = *p == '\n' ? ' ' : *p;
            }
        }
        if (o + 1 < cap)
            out[o++] = ')';
    }
    out[o] = 0;
}

static void plugin_failed(lg_luart_t *rt, int plugin, int phase, const char *msg)
{
    char line[1024];
    one_line(msg ? msg : "?", line, sizeof(line));
    const char *name = plugin >= 0 ? rt->plugins[plugin].name : "?";
    lg_log(LG_LOG_ERR, "lua", "plugin=%s phase=%s: %s", name, lg_lapi_phase_name(phase), line);
    if (plugin >= 0) {
        atomic_fetch_add(&rt->plugins[plugin].errors, 1);
        if (rt->on_error)
            rt->on_error(name, lg_lapi_phase_name(phase), rt->on_error_arg);
    }
}

/* Calls the function below nargs arguments with the traceback handler and budget.
 * Returns LG_OK (results on the stack), LG_DECLINED (an exit; nothing left) or LG_ERR (error
 * message left on the stack; memory errors leave "not enough memory"). */
static int protected_call_budget(lg_luart_t *rt, int nargs, int nresults, int budget)
{
    lua_State *L = rt->L;
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    if (budget)
        lg_budget_arm(&rt->budget);
    int st = lua_pcall(L, nargs, nresults, base);
    if (budget)
        lg_budget_disarm(&rt->budget);
    lua_remove(L, base);
    if (st == LUA_OK)
        return LG_OK;
    if (rt->exit_pending && lua_touserdata(L, -1) == &exit_tag) {
        lua_pop(L, 1);
        return LG_DECLINED;
    }
    rt->exit_pending = 0;
    if (st == LUA_ERRMEM) /* reclaim what the failed call left behind */
        lua_gc(L, LUA_GCCOLLECT);
    return LG_ERR;
}

static int protected_call(lg_luart_t *rt, int nargs, int nresults)
{
    return protected_call_budget(rt, nargs, nresults, 1);
}

static int pcall_common(lg_luart_t *rt, int nargs, int nresults, const char *what, lg_err_t *err,
                        int budget)
{
    int rc = protected_call_budget(rt, nargs, nresults, budget);
    if (rc == LG_OK)
        return LG_OK;
    if (rc == LG_DECLINED)
        return lg_err_set(err, 0, "%s: lg.response.exit outside a plugin", what);
    char line[1024];
    one_line(lua_tostring(rt->L, -1) ? lua_tostring(rt->L, -1) : "?", line, sizeof(line));
    lua_pop(rt->L, 1);
    return lg_err_set(err, 0, "%s: %s", what, line);
}

int lg_luart_pcall(lg_luart_t *rt, int nargs, int nresults, const char *what, lg_err_t *err)
{
    return pcall_common(rt, nargs, nresults, what, err, 1);
}

int lg_luart_pcall_trusted(lg_luart_t *rt, int nargs, int nresults, const char *what, lg_err_t *err)
{
    return pcall_common(rt, nargs, nresults, what, err, 0);
}

/* ---- ctx ---- */

/* ctx.plugin: the running plugin's own table for this request, made on first use. */
static int ctx_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    lg_luart_t *rt = lg_luart_from_state(L);
    if (!k || strcmp(k, "plugin") != 0 || !rt || rt->cur_plugin < 0)
        return 0;
    int cur = rt->cur_plugin;
    lua_pushlightuserdata(L, &states_key);
    if (lua_rawget(L, 1) != LUA_TTABLE) { /* ctx k states? */
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, &states_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, 1); /* ctx k states */
    }
    if (lua_rawgeti(L, -1, cur + 1) != LUA_TTABLE) { /* ctx k states st? */
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, cur + 1); /* ctx k states st */
    }
    return 1;
}

/* ---- Exit (lg.response.exit) ---- */

int lg_luart_lua_exit(lua_State *L)
{
    lg_lapi_check_phase(L, LG_PHASE_ACCESS, "exit");
    lua_Integer status = luaL_checkinteger(L, 1);
    luaL_argcheck(L, status >= 100 && status <= 599, 1, "status out of range 100..599");
    int bt = lua_type(L, 2);
    luaL_argexpected(L, bt == LUA_TNONE || bt == LUA_TNIL || bt == LUA_TSTRING || bt == LUA_TTABLE,
                     2, "string, table or nil");
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    lg_luart_t *rt = lg_luart_from_state(L);
    if (!rt)
        return luaL_error(L, "exit: no request");
    lua_settop(L, 3);
    lua_createtable(L, 3, 0); /* status body headers t */
    lua_insert(L, 1);         /* t status body headers */
    lua_rawseti(L, 1, 3);
    lua_rawseti(L, 1, 2);
    lua_rawseti(L, 1, 1); /* t */
    lua_rawseti(L, LUA_REGISTRYINDEX, rt->exit_ref);
    rt->exit_pending = 1;
    lua_pushlightuserdata(L, &exit_tag);
    return lua_error(L);
}

void lg_luart_exit_dispose(lg_luart_exit_t *ex)
{
    if (!ex)
        return;
    free(ex->body);
    for (size_t i = 0; i < 2 * ex->nheaders; i++)
        free(ex->headers[i]);
    free(ex->headers);
    memset(ex, 0, sizeof(*ex));
}

/* Turns (status, body, headers) at stack indices s, s+1, s+2 into checked values: pushes
 * status (integer), body (string), and a flat list {name, value, ...}. Raises on bad values
 * (the caller counts that as the plugin's error). */
static void norm_exit(lua_State *L, lg_luart_t *rt, int s)
{
    if (!lua_isinteger(L, s))
        luaL_error(L, "access returned a non-integer status (%s)", luaL_typename(L, s));
    lua_Integer status = lua_tointeger(L, s);
    if (status < 100 || status > 599)
        luaL_error(L, "access returned status %I, out of range 100..599", status);
    int json = 0;
    lua_pushinteger(L, status); /* st */
    switch (lua_type(L, s + 1)) {
    case LUA_TNONE:
    case LUA_TNIL:
        lua_pushliteral(L, "");
        break;
    case LUA_TSTRING:
        lua_pushvalue(L, s + 1);
        break;
    case LUA_TTABLE: {
        lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "lunagate");
        lua_remove(L, -2); /* st lg */
        lua_getfield(L, -1, "json");
        lua_getfield(L, -1, "encode"); /* st lg json encode */
        lua_pushvalue(L, s + 1);
        lua_call(L, 1, 2); /* st lg json str|nil err */
        if (lua_isnil(L, -2))
            luaL_error(L, "access returned a body that is not JSON-encodable: %s",
                       lua_tostring(L, -1));
        lua_pop(L, 1);
        lua_replace(L, -3); /* st str json */
        lua_pop(L, 1);      /* st str */
        json = 1;
        break;
    }
    default:
        luaL_error(L, "access returned a %s body (string or table expected)",
                   luaL_typename(L, s + 1));
    }
    lua_newtable(L); /* st body hdrs */
    int n = 0, has_ct = 0;
    if (lua_type(L, s + 2) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, s + 2)) { /* st body hdrs k v */
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "response header names must be strings");
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "response header '%s' must be a string", lua_tostring(L, -2));
            if (strcasecmp(lua_tostring(L, -2), "content-type") == 0)
                has_ct = 1;
            lua_pushvalue(L, -2);
            lua_rawseti(L, -4, ++n);
            luaL_tolstring(L, -1, NULL);
            lua_rawseti(L, -4, ++n);
            lua_pop(L, 1); /* st body hdrs k */
        }
    } else if (!lua_isnoneornil(L, s + 2)) {
        luaL_error(L, "access returned headers of type %s (table expected)",
                   luaL_typename(L, s + 2));
    }
    if (json && !has_ct) {
        lua_pushliteral(L, "content-type");
        lua_rawseti(L, -2, ++n);
        lua_pushliteral(L, "application/json");
        lua_rawseti(L, -2, ++n);
    }
}

/* Copies the normalised (status, body, hdrs) on top of the stack into ex. Never raises. */
static void copy_exit(lua_State *L, lg_luart_exit_t *ex)
{
    ex->status = (int)lua_tointeger(L, -3);
    size_t bl;
    const char *b = lua_tolstring(L, -2, &bl);
    ex->body = lg_xmalloc(bl + 1);
    memcpy(ex->body, b, bl);
    ex->body[bl] = 0;
    ex->len = bl;
    size_t n = lua_rawlen(L, -1);
    ex->nheaders = n / 2;
    ex->headers = n ? lg_xcalloc(n, sizeof(char *)) : NULL;
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        size_t l;
        const char *s = lua_tolstring(L, -1, &l);
        ex->headers[i] = lg_xstrndup(s ? s : "", s ? l : 0);
        lua_pop(L, 1);
    }
}

/* ---- Phase drivers ---- */

typedef struct {
    lg_luart_t *rt;
    chain_t *ch;
    lg_luart_req_t *lr;
    int ph;      /* the phase running (or that failed) */
    int ph_last; /* header_filter then body_filter run in one protected call */
    int next;    /* next call index; a log-phase retry resumes after a failed plugin */
    const char *chunk;
    size_t len;
    int eof;
    const char *out;
    size_t outlen;
    lg_luart_exit_t *ex;
    int rc;
} run_t;

/* A finished request's ctx goes back to the pool when no plugin wrote to it and its
 * metatable is ours; otherwise it is released to the collector. */
static void ctx_release(lg_luart_t *rt, int ref)
{
    lua_State *L = rt->L;
    if (ref == LUA_NOREF || ref == LUA_REFNIL)
        return;
    if (rt->nctx_pool < CTX_POOL_MAX) {
        int top = lua_gettop(L);
        int reuse = lua_rawgeti(L, LUA_REGISTRYINDEX, ref) == LUA_TTABLE &&
                    lua_getmetatable(L, -1) && lua_topointer(L, -1) == rt->ctx_mt;
        if (reuse) {
            lua_pushnil(L);               /* ctx mt nil */
            reuse = lua_next(L, -3) == 0; /* an empty table has no first key */
        }
        lua_settop(L, top);
        if (reuse) {
            rt->ctx_pool[rt->nctx_pool++] = ref;
            return;
        }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static void push_ctx(lg_luart_t *rt)
{
    lua_State *L = rt->L;
    if (rt->actx.ctx_ref == LUA_NOREF && rt->nctx_pool > 0)
        rt->actx.ctx_ref = rt->ctx_pool[--rt->nctx_pool];
    if (rt->actx.ctx_ref == LUA_NOREF) {
        lua_newtable(L);
        luaL_setmetatable(L, "lunagate.ctx");
        lua_pushvalue(L, -1);
        rt->actx.ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->actx.ctx_ref);
    }
}

/* Pushes a call's function, conf and ctx (stack slot 2). */
static inline void push_call(lua_State *L, const call_t *c)
{
    if (c->up) {
        lua_pushvalue(L, lua_upvalueindex(c->up));
        lua_pushvalue(L, lua_upvalueindex(c->up + 1));
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->conf_ref);
    }
    lua_pushvalue(L, 2); /* ... fn conf ctx */
}

/* Runs the plugins of phase r->ph: a plugin call is a plain lua_call, and rt->cur_plugin
 * says whose error it was when the protected call fails. Stack on entry: r ctx; the calls'
 * functions and confs are the upvalues of the chain's closure of `driver`. */
static void run_calls(lua_State *L, run_t *r)
{
    lg_luart_t *rt = r->rt;
    chain_t *ch = r->ch;
    int n = ch->n[r->ph];
    int body = r->ph == PH_BODY_FILTER;
    if (r->ph == PH_HEADER_FILTER || r->ph == PH_LOG) { /* no results to look at */
        for (int i = r->next; i < n; i++) {
            const call_t *c = &ch->calls[r->ph][i];
            r->next = i + 1;
            push_call(L, c);
            rt->actx.plugin = c->name;
            rt->cur_plugin = c->plugin;
            lua_call(L, 2, 0);
        }
        rt->cur_plugin = -1;
        rt->actx.plugin = NULL;
        return;
    }
    if (body) {
        if (r->lr->out_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, r->lr->out_ref);
            r->lr->out_ref = LUA_NOREF;
        }
        lua_pushlstring(L, r->chunk, r->len); /* r ctx chunk */
    }
    int changed = 0, dropped = 0;
    for (int i = r->next; i < n; i++) {
        call_t *c = &ch->calls[r->ph][i];
        r->next = i + 1;
        if (body && dropped && !r->eof)
            break;
        push_call(L, c);
        int nargs = 2, base = body ? 3 : 2;
        if (body) {
            if (dropped)
                lua_pushliteral(L, "");
            else
                lua_pushvalue(L, 3);
            lua_pushboolean(L, r->eof);
            nargs = 4;
        }
        rt->actx.plugin = c->name;
        rt->cur_plugin = c->plugin;
        lua_call(L, nargs, LUA_MULTRET);
        int nres = lua_gettop(L) - base;
        /* still attributed to this plugin: bad return values raise below */
        if (r->ph == PH_ACCESS && nres > 0 && !lua_isnil(L, base + 1)) {
            lua_settop(L, base + 3); /* ... status body headers */
            norm_exit(L, rt, base + 1);
            copy_exit(L, r->ex);
            r->rc = LG_DECLINED;
            rt->cur_plugin = -1;
            return;
        }
        if (body && nres > 0) {
            int t = lua_type(L, base + 1);
            if (!dropped && lua_rawequal(L, base + 1, 3)) {
                /* the chunk it was given: unchanged */
            } else if (t == LUA_TSTRING && lua_rawlen(L, base + 1) > 0) {
                lua_pushvalue(L, base + 1);
                lua_replace(L, 3);
                changed = 1;
                dropped = 0;
            } else if (t == LUA_TNIL || t == LUA_TSTRING ||
                       (t == LUA_TBOOLEAN && !lua_toboolean(L, base + 1))) {
                dropped = 1;
            } else {
                luaL_error(L, "body_filter returned a %s (string or nil expected)",
                           luaL_typename(L, base + 1));
            }
        }
        if (lua_gettop(L) != base)
            lua_settop(L, base);
        rt->cur_plugin = -1;
    }
    rt->actx.plugin = NULL;
    if (body) {
        if (dropped) {
            r->out = NULL;
            r->outlen = 0;
        } else if (changed) {
            lua_pushvalue(L, 3);
            r->out = lua_tolstring(L, -1, &r->outlen);
            r->lr->out_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
    }
}

/* The protected call of a phase, or of header_filter and body_filter together when the whole
 * response is here (one entry instead of two; each phase still has its own budget). One pcall
 * per phase instead of one per plugin keeps no-op plugins cheap. (A driver written in Lua was
 * tried: in Lua 5.4 a Lua-to-Lua call plus the loop around it costs as much as lua_call from
 * here.) */
static int driver(lua_State *L)
{
    run_t *r = lua_touserdata(L, 1);
    lg_luart_t *rt = r->rt;
    push_ctx(rt); /* r ctx */
    for (;;) {
        lg_budget_arm(&rt->budget); /* the phase's plugins together; run_phase disarms */
        run_calls(L, r);
        if (r->rc != LG_OK || r->ph >= r->ph_last)
            return 0;
        lg_budget_disarm(&rt->budget);
        lua_settop(L, 2);
        r->ph++;
        r->next = 0;
        rt->actx.phase = phase_flags[r->ph];
    }
}

/* Protected: turns the pending lg.response.exit into r->ex. */
static int exit_driver(lua_State *L)
{
    run_t *r = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->rt->exit_ref); /* r t */
    lua_rawgeti(L, 2, 1);
    lua_rawgeti(L, 2, 2);
    lua_rawgeti(L, 2, 3); /* r t status body headers */
    norm_exit(L, r->rt, 3);
    copy_exit(L, r->ex);
    return 0;
}

static int run_phase(lg_luart_t *rt, int chain, int ph, lg_luart_req_t *lr, run_t *r)
{
    r->rt = rt;
    r->lr = lr;
    r->ph = ph;
    if (r->ph_last < ph)
        r->ph_last = ph;
    r->rc = LG_OK;
    r->next = 0;
    if (chain < 0 || chain >= rt->nchains)
        return LG_OK;
    int calls = 0;
    for (int p = ph; p <= r->ph_last; p++)
        calls += rt->chains[chain].n[p];
    if (calls == 0)
        return LG_OK;
    r->ch = &rt->chains[chain];
    lua_State *L = rt->L;
    rt->actx.phase = phase_flags[ph];
    rt->actx.req = lr->req;
    rt->actx.ctx_ref = lr->ctx_ref;
    rt->actx.rec_ref = lr->rec_ref;
    rt->actx.req_gen++;
    rt->exit_pending = 0;
    for (;;) {
        lua_pushcfunction(L, msgh);
        lua_rawgeti(L, LUA_REGISTRYINDEX, r->ch->drv_ref);
        lua_pushlightuserdata(L, r);
        int st = lua_pcall(L, 1, 0, -3); /* msgh [err] */
        lg_budget_disarm(&rt->budget);
        if (st == LUA_OK) {
            lua_pop(L, 1);
            break;
        }
        int failed = rt->cur_plugin;
        rt->cur_plugin = -1;
        if (rt->exit_pending && lua_touserdata(L, -1) == &exit_tag && r->ph == PH_ACCESS) {
            lua_pop(L, 1); /* msgh */
            lua_pushcfunction(L, exit_driver);
            lua_pushlightuserdata(L, r);
            rt->exit_pending = 0;
            st = lua_pcall(L, 1, 0, -3);
            if (st == LUA_OK) {
                lua_pop(L, 1);
                r->rc = LG_DECLINED;
                break;
            }
            lg_luart_exit_dispose(r->ex);
        }
        plugin_failed(rt, failed, phase_flags[r->ph],
                      lua_touserdata(L, -1) == &exit_tag ? "lg.response.exit outside access"
                                                         : lua_tostring(L, -1));
        lua_pop(L, 2);
        if (st == LUA_ERRMEM) /* reclaim what the failed call left behind */
            lua_gc(L, LUA_GCCOLLECT);
        if (r->ex)
            lg_luart_exit_dispose(r->ex);
        rt->exit_pending = 0;
        r->rc = LG_ERR;
        if (r->ph == PH_LOG && r->next < r->ch->n[PH_LOG])
            continue; /* the other plugins still get to log */
        break;
    }
    lr->ctx_ref = rt->actx.ctx_ref;
    lr->rec_ref = rt->actx.rec_ref;
    rt->actx.phase = 0;
    rt->actx.plugin = NULL;
    rt->actx.req = NULL;
    rt->actx.ctx_ref = LUA_NOREF;
    rt->actx.rec_ref = LUA_NOREF;
    rt->exit_pending = 0;
    rt->cur_plugin = -1;
    return r->rc;
}

int lg_luart_access(lg_luart_t *rt, int chain, lg_luart_req_t *lr, lg_luart_exit_t *ex)
{
    memset(ex, 0, sizeof(*ex));
    run_t r = {.ex = ex};
    return run_phase(rt, chain, PH_ACCESS, lr, &r);
}

int lg_luart_header_filter(lg_luart_t *rt, int chain, lg_luart_req_t *lr)
{
    run_t r = {0};
    return run_phase(rt, chain, PH_HEADER_FILTER, lr, &r);
}

int lg_luart_body_filter(lg_luart_t *rt, int chain, lg_luart_req_t *lr, const char *chunk,
                         size_t len, int eof, const char **out, size_t *outlen)
{
    run_t r = {.chunk = chunk, .len = len, .eof = eof, .out = chunk, .outlen = len};
    int rc = run_phase(rt, chain, PH_BODY_FILTER, lr, &r);
    *out = rc == LG_OK ? r.out : chunk;
    *outlen = rc == LG_OK ? r.outlen : len;
    return rc;
}

int lg_luart_header_body(lg_luart_t *rt, int chain, lg_luart_req_t *lr, const char *body,
                         size_t len, const char **out, size_t *outlen, int *failed)
{
    run_t r = {.chunk = body, .len = len, .eof = 1, .out = body, .outlen = len};
    r.ph_last = PH_BODY_FILTER;
    int rc = run_phase(rt, chain, PH_HEADER_FILTER, lr, &r);
    *out = rc == LG_OK ? r.out : body;
    *outlen = rc == LG_OK ? r.outlen : len;
    *failed = rc == LG_OK ? 0 : phase_flags[r.ph];
    return rc;
}

void lg_luart_log(lg_luart_t *rt, int chain, lg_luart_req_t *lr)
{
    run_t r = {0};
    run_phase(rt, chain, PH_LOG, lr, &r);
}

void lg_luart_req_init(lg_luart_req_t *lr, void *req)
{
    lr->req = req;
    lr->ctx_ref = LUA_NOREF;
    lr->rec_ref = LUA_NOREF;
    lr->out_ref = LUA_NOREF;
}

void lg_luart_req_end(lg_luart_t *rt, lg_luart_req_t *lr)
{
    /* luaL_unref writes into existing registry slots: it cannot fail */
    ctx_release(rt, lr->ctx_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, lr->rec_ref);
    luaL_unref(rt->L, LUA_REGISTRYINDEX, lr->out_ref);
    lg_luart_req_init(lr, NULL);
}

void *lg_luart_current(lua_State *L)
{
    return lg_lapi_current_req(L);
}

/* ---- Chains ---- */

int lg_luart_chain(lg_luart_t *rt, const char *route_key)
{
    for (int i = 0; route_key && i < rt->nroutes; i++)
        if (strcmp(rt->route_keys[i], route_key) == 0)
            return rt->route_chains[i];
    return rt->default_chain;
}

int lg_luart_chain_has(lg_luart_t *rt, int chain, int phase)
{
    if (chain < 0 || chain >= rt->nchains)
        return 0;
    for (int ph = 0; ph < PH_N; ph++)
        if (phase_flags[ph] == phase)
            return rt->chains[chain].n[ph] > 0;
    return 0;
}

int lg_luart_plugin_errors(lg_luart_t *rt, int i, const char **name, unsigned long *count)
{
    if (i < 0 || i >= rt->nplugins)
        return 0;
    *name = rt->plugins[i].name;
    *count = atomic_load(&rt->plugins[i].errors);
    return 1;
}

/* ---- Construction ---- */

typedef struct {
    lg_luart_t *rt;
    const lg_luart_opts_t *opts;
    lg_err_t *err;
} setup_t;

static lua_Integer field_int(lua_State *L, int idx, const char *k, lua_Integer dflt)
{
    lua_getfield(L, idx, k);
    lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

static char *field_dup(lua_State *L, int idx, const char *k)
{
    lua_getfield(L, idx, k);
    const char *s = lua_tostring(L, -1);
    char *d = lg_xstrdup(s ? s : "?");
    lua_pop(L, 1);
    return d;
}

/* Reads pipeline.build's result (on top) into C arrays. */
static void import_pipeline(lua_State *L, lg_luart_t *rt)
{
    int res = lua_gettop(L);
    lua_getfield(L, res, "plugins"); /* res plugins */
    int np = (int)lua_rawlen(L, -1);
    rt->plugins = lg_xcalloc(np ? (size_t)np : 1, sizeof(plugin_t));
    for (int i = 0; i < np; i++) {
        lua_rawgeti(L, -1, i + 1); /* res plugins p */
        plugin_t *p = &rt->plugins[i];
        p->name = field_dup(L, -1, "name");
        p->file = field_dup(L, -1, "file");
        p->mod_ref = p->conf_ref = LUA_NOREF;
        rt->nplugins = i + 1;
        lua_getfield(L, -1, "module");
        p->mod_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_getfield(L, -1, "conf");
        p->conf_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        atomic_init(&p->errors, 0);
        lua_pop(L, 1); /* res plugins */
    }
    lua_pop(L, 1); /* res */

    lua_getfield(L, res, "chains"); /* res chains */
    int nc = (int)lua_rawlen(L, -1);
    rt->chains = lg_xcalloc(nc ? (size_t)nc : 1, sizeof(chain_t));
    for (int c = 0; c < nc; c++) {
        chain_t *ch = &rt->chains[c];
        ch->drv_ref = LUA_NOREF;
        rt->nchains = c + 1;
        lua_rawgeti(L, -1, c + 1); /* res chains chain */
        int ne = (int)lua_rawlen(L, -1);
        for (int ph = 0; ph < PH_N; ph++)
            ch->calls[ph] = lg_xcalloc(ne ? (size_t)ne : 1, sizeof(call_t));
        for (int e = 0; e < ne; e++) {
            lua_rawgeti(L, -1, e + 1); /* res chains chain entry */
            int pi = (int)field_int(L, -1, "index", 0) - 1;
            if (pi < 0 || pi >= rt->nplugins)
                luaL_error(L, "pipeline: bad plugin index");
            lua_rawgeti(L, LUA_REGISTRYINDEX, rt->plugins[pi].mod_ref); /* ... entry mod */
            for (int ph = 0; ph < PH_N; ph++) {
                if (lua_getfield(L, -1, phase_fields[ph]) != LUA_TFUNCTION) {
                    lua_pop(L, 1);
                    continue;
                }
                call_t *call = &ch->calls[ph][ch->n[ph]];
                call->plugin = pi;
                call->name = rt->plugins[pi].name;
                call->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
                lua_getfield(L, -2, "conf");
                call->conf_ref = luaL_ref(L, LUA_REGISTRYINDEX);
                ch->n[ph]++;
            }
            lua_pop(L, 2); /* res chains chain */
        }
        lua_pop(L, 1); /* res chains */
        /* the driver closes over the calls' functions and confs: an upvalue is cheaper to
         * push than a registry entry */
        luaL_checkstack(L, DRIVER_UPVALUES, "pipeline");
        int nup = 0;
        for (int ph = 0; ph < PH_N; ph++) {
            for (int i = 0; i < ch->n[ph] && nup + 2 <= DRIVER_UPVALUES; i++) {
                call_t *call = &ch->calls[ph][i];
                lua_rawgeti(L, LUA_REGISTRYINDEX, call->fn_ref);
                lua_rawgeti(L, LUA_REGISTRYINDEX, call->conf_ref);
                call->up = nup + 1;
                nup += 2;
            }
        }
        lua_pushcclosure(L, driver, nup);
        ch->drv_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1); /* res */

    rt->default_chain = (int)field_int(L, res, "default", 0) - 1;
    lua_getfield(L, res, "routes"); /* res routes */
    int nr = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        nr++;
        lua_pop(L, 1);
    }
    rt->route_keys = lg_xcalloc(nr ? (size_t)nr : 1, sizeof(char *));
    rt->route_chains = lg_xcalloc(nr ? (size_t)nr : 1, sizeof(int));
    lua_pushnil(L);
    while (lua_next(L, -2) && rt->nroutes < nr) { /* res routes k v */
        if (lua_type(L, -2) == LUA_TSTRING) {
            rt->route_keys[rt->nroutes] = lg_xstrdup(lua_tostring(L, -2));
            rt->route_chains[rt->nroutes] = (int)lua_tointeger(L, -1) - 1;
            rt->nroutes++;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* res */
}

static int setup(lua_State *L)
{
    setup_t *s = lua_touserdata(L, 1);
    lg_luart_t *rt = s->rt;
    const lg_luart_opts_t *o = s->opts;
    lua_settop(L, 0);
    luaL_openlibs(L);

    /* package.path, rooted at the install */
    const char *home = getenv("LUNAGATE_HOME");
    if (!home || !*home)
        home = LG_HOME;
    lua_getglobal(L, "package"); /* package */
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/plugins/?.lua;%s/plugins/?/init.lua",
                    home, home, home, home);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload"); /* package preload */
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushcfunction(L, luaopen_cjson_safe);
    lua_setfield(L, -2, "cjson.safe");
    lua_pop(L, 2);

    /* a plugin may not swallow the budget error or an exit */
    lua_pushglobaltable(L);
    wrap_global(L, -1, "pcall");
    wrap_global(L, -1, "xpcall");
    lua_getfield(L, -1, "coroutine");
    wrap_global(L, -1, "resume");
    for (int i = 0; i < 2; i++) {
        const char *name = i ? "wrap" : "create";
        lua_getfield(L, -1, name);
        lua_pushcclosure(L, lg_budget_watched_coroutine, 1);
        lua_setfield(L, -2, name);
    }
    lua_pop(L, 2);

    if (luaL_newmetatable(L, "lunagate.ctx")) { /* mt */
        lua_pushcfunction(L, ctx_index);
        lua_setfield(L, -2, "__index");
    }
    rt->ctx_mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    lua_createtable(L, 3, 0); /* exit holder */
    rt->exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    luaL_requiref(L, "lunagate", luaopen_lunagate, 0); /* lg */
    lua_pushinteger(L, o->worker_id);
    lua_setfield(L, -2, "worker_id");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lunagate.schema");
    lua_call(L, 1, 1);             /* lg schema */
    lua_setfield(L, -2, "schema"); /* lg */
    int lg = lua_gettop(L);

    /* config */
    lg_luart_config_fn *load = o->load_config ? o->load_config : lg_config_load;
    if (!o->config_text)
        return luaL_error(L, "no config text given");
    if (load(L, o->config_text, o->config_len, o->config_file, s->err) != LG_OK)
        return luaL_error(L, "%s", s->err->msg);
    int cfg = lua_gettop(L); /* lg cfg */
    lua_pushvalue(L, cfg);
    rt->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "lunagate.pipeline");
    lua_call(L, 1, 1); /* lg cfg pipeline */
    int pipe = lua_gettop(L);

    /* options: budget, memory limit, shared dictionaries */
    lua_getfield(L, pipe, "options");
    lua_pushvalue(L, cfg);
    lua_call(L, 1, 2); /* ... opts|nil err */
    if (lua_isnil(L, -2))
        return luaL_error(L, "%s", lua_tostring(L, -1));
    lua_pop(L, 1); /* ... opts */
    rt->budget.limit = field_int(L, -1, "instructions", LG_LUART_DEFAULT_BUDGET);
    rt->mem_limit = (size_t)field_int(L, -1, "memory", LG_LUART_DEFAULT_MEMORY);
    lua_getfield(L, -1, "shared"); /* ... opts shared */
    lua_pushnil(L);
    while (lua_next(L, -2)) { /* ... opts shared name spec */
        lg_shared_declare(lua_tostring(L, -2), (size_t)field_int(L, -1, "bytes", 0),
                          (size_t)field_int(L, -1, "entries", 0));
        lua_pop(L, 1);
    }
    lua_pop(L, 2); /* lg cfg pipeline */
    lua_pushvalue(L, lg);
    lg_lapi_shared_bind(L);
    lua_pop(L, 1);

    /* plugins: found, checked, validated, ordered; their top-level code runs under budget */
    lua_getfield(L, pipe, "build");
    lua_pushvalue(L, cfg);
    lua_createtable(L, 0, 1);
    lua_pushfstring(L, "%s/plugins", home);
    lua_setfield(L, -2, "bundled"); /* ... build cfg {bundled} */
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "set_package_path");
    const char *slash = o->config_file ? strrchr(o->config_file, '/') : NULL;
    if (slash) { /* relative config.plugins.paths are relative to the config file */
        lua_pushlstring(L, o->config_file, (size_t)(slash - o->config_file));
        lua_setfield(L, -2, "config_dir");
    }
    rt->actx.phase = LG_PHASE_LOAD;
    if (protected_call(rt, 2, 2) != LG_OK)
        return luaL_error(L, "%s", lua_tostring(L, -1));
    if (lua_isnil(L, -2)) /* ... res|nil err */
        return luaL_error(L, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    import_pipeline(L, rt);
    return 0;
}

static int init_worker(lg_luart_t *rt, lg_err_t *err)
{
    lua_State *L = rt->L;
    rt->actx.phase = LG_PHASE_INIT_WORKER;
    for (int i = 0; i < rt->nplugins; i++) {
        plugin_t *p = &rt->plugins[i];
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->mod_ref);
        if (lua_getfield(L, -1, "init_worker") != LUA_TFUNCTION) {
            lua_pop(L, 2);
            continue;
        }
        lua_remove(L, -2);
        lua_rawgeti(L, LUA_REGISTRYINDEX, p->conf_ref);
        rt->actx.plugin = p->name;
        int rc = protected_call(rt, 1, 0);
        rt->actx.plugin = NULL;
        if (rc != LG_OK) {
            char line[1024];
            one_line(rc == LG_ERR && lua_tostring(L, -1) ? lua_tostring(L, -1) : "exit", line,
                     sizeof(line));
            if (rc == LG_ERR)
                lua_pop(L, 1);
            rt->actx.phase = 0;
            return lg_err_set(err, 0, "%s: init_worker failed: %s", p->file, line);
        }
    }
    rt->actx.phase = 0;
    return LG_OK;
}

lg_luart_t *lg_luart_new(const lg_luart_opts_t *opts, lg_err_t *err)
{
    lg_err_t scratch;
    if (!err)
        err = &scratch;
    err->msg[0] = 0;
    lg_luart_t *rt = lg_xcalloc(1, sizeof(*rt));
    atomic_init(&rt->refs, 1);
    rt->mem_limit = LG_LUART_DEFAULT_MEMORY;
    rt->budget.limit = LG_LUART_DEFAULT_BUDGET;
    rt->cur_plugin = -1;
    rt->default_chain = -1;
    rt->exit_ref = LUA_NOREF;
    rt->config_ref = LUA_NOREF;
    rt->on_error = opts->on_error;
    rt->on_error_arg = opts->on_error_arg;
    rt->L = lua_newstate(lalloc, rt);
    if (!rt->L) {
        free(rt);
        lg_err_set(err, 0, "cannot create a Lua state");
        return NULL;
    }
    lua_atpanic(rt->L, panic);
    rt->budget.L = rt->L;
    lg_budget_watch(&rt->budget);
    rt->actx.phase = LG_PHASE_LOAD;
    rt->actx.ctx_ref = LUA_NOREF;
    rt->actx.rec_ref = LUA_NOREF;
    rt->actx.owner = rt;
    lg_lapi_ctx_set(rt->L, &rt->actx);

    setup_t s = {rt, opts, err};
    lua_pushcfunction(rt->L, setup);
    lua_pushlightuserdata(rt->L, &s);
    if (lua_pcall(rt->L, 1, 0, 0) != LUA_OK) {
        const char *m = lua_tostring(rt->L, -1);
        char line[sizeof(err->msg)];
        one_line(m ? m : "not enough memory", line, sizeof(line));
        lg_err_set(err, 0, "%s", line);
        lg_luart_free(rt);
        return NULL;
    }
    rt->actx.phase = 0;
    if (!opts->skip_init_worker && init_worker(rt, err) != LG_OK) {
        lg_luart_free(rt);
        return NULL;
    }
    lua_settop(rt->L, 0);
    lua_gc(rt->L, LUA_GCCOLLECT);
    return rt;
}

lua_State *lg_luart_state(lg_luart_t *rt)
{
    return rt->L;
}

void lg_luart_push_config(lg_luart_t *rt)
{
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->config_ref);
}

lg_luart_t *lg_luart_ref(lg_luart_t *rt)
{
    atomic_fetch_add(&rt->refs, 1);
    return rt;
}

void lg_luart_unref(lg_luart_t *rt)
{
    if (rt && atomic_fetch_sub(&rt->refs, 1) == 1)
        lg_luart_free(rt);
}

void lg_luart_free(lg_luart_t *rt)
{
    if (!rt)
        return;
    if (rt->L) {
        lg_budget_unwatch(&rt->budget);
        lua_close(rt->L);
    }
    for (int i = 0; i < rt->nplugins; i++) {
        free(rt->plugins[i].name);
        free(rt->plugins[i].file);
    }
    free(rt->plugins);
    for (int c = 0; c < rt->nchains; c++)
        for (int ph = 0; ph < PH_N; ph++)
            free(rt->chains[c].calls[ph]);
    free(rt->chains);
    for (int i = 0; i < rt->nroutes; i++)
        free(rt->route_keys[i]);
    free(rt->route_keys);
    free(rt->route_chains);
    free(rt);
}
