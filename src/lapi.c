/* lapi.c -- builds the `lunagate` module; each namespace lives in lapi_<ns>.c.
 * SPDX-License-Identifier: MIT */
#include "lapi.h"
#include "lapi_aead.h"
#include "lapi_http.h"
#include "lapi_proc.h"

#include <lauxlib.h>
#include <string.h>

#ifndef LG_VERSION
#define LG_VERSION "0.0.0"
#endif

/* ---- Per-state context ---- */

void lg_lapi_ctx_set(lua_State *L, lg_lapi_ctx_t *ctx)
{
    /* LUA_EXTRASPACE is copied into every coroutine created afterwards, so set it before any
     * plugin code runs. */
    memcpy(lua_getextraspace(L), &ctx, sizeof(ctx));
}

lg_lapi_ctx_t *lg_lapi_ctx(lua_State *L)
{
    lg_lapi_ctx_t *ctx;
    memcpy(&ctx, lua_getextraspace(L), sizeof(ctx));
    return ctx;
}

const char *lg_lapi_phase_name(int phase)
{
    switch (phase) {
    case LG_PHASE_LOAD:
        return "init";
    case LG_PHASE_INIT_WORKER:
        return "init_worker";
    case LG_PHASE_ACCESS:
        return "access";
    case LG_PHASE_HEADER_FILTER:
        return "header_filter";
    case LG_PHASE_BODY_FILTER:
        return "body_filter";
    case LG_PHASE_LOG:
        return "log";
    default:
        return "none";
    }
}

void lg_lapi_check_phase(lua_State *L, int allowed, const char *fname)
{
    lg_lapi_ctx_t *ctx = lg_lapi_ctx(L);
    int phase = ctx ? ctx->phase : LG_PHASE_LOAD;
    if (!(phase & allowed))
        luaL_error(L, "%s: not allowed in phase '%s'", fname, lg_lapi_phase_name(phase));
}

void *lg_lapi_current_req(lua_State *L)
{
    lg_lapi_ctx_t *ctx = lg_lapi_ctx(L);
    return ctx ? ctx->req : NULL;
}

static void push_lazy_table(lua_State *L, int *ref)
{
    if (*ref == LUA_NOREF || *ref == LUA_REFNIL) {
        lua_newtable(L);                       /* t */
        lua_pushvalue(L, -1);                  /* t t */
        *ref = luaL_ref(L, LUA_REGISTRYINDEX); /* t */
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref); /* t */
}

void lg_lapi_push_ctx(lua_State *L)
{
    lg_lapi_ctx_t *ctx = lg_lapi_ctx(L);
    if (!ctx || !(ctx->phase & LG_PHASE_REQUEST)) {
        lua_pushnil(L);
        return;
    }
    int fresh = ctx->ctx_ref == LUA_NOREF || ctx->ctx_ref == LUA_REFNIL;
    push_lazy_table(L, &ctx->ctx_ref); /* ctx */
    if (fresh)                         /* ctx.plugin support, when luart registered it */
        luaL_setmetatable(L, "lunagate.ctx");
}

void lg_lapi_push_rec(lua_State *L)
{
    lg_lapi_ctx_t *ctx = lg_lapi_ctx(L);
    if (!ctx || !(ctx->phase & LG_PHASE_REQUEST)) {
        lua_pushnil(L);
        return;
    }
    push_lazy_table(L, &ctx->rec_ref);
}

/* ---- Module-level functions ---- */

static int lg_phase(lua_State *L)
{
    lg_lapi_ctx_t *ctx = lg_lapi_ctx(L);
    lua_pushstring(L, lg_lapi_phase_name(ctx ? ctx->phase : LG_PHASE_LOAD));
    return 1;
}

static int lg_plugin_name(lua_State *L)
{
    lg_lapi_ctx_t *ctx = lg_lapi_ctx(L);
    if (ctx && ctx->plugin)
        lua_pushstring(L, ctx->plugin);
    else
        lua_pushnil(L);
    return 1;
}

/* lg.ctx is read through the module's __index so that it is always the running request's
 * table; plugins also get it as their `ctx` argument. */
static int lg_index(lua_State *L)
{
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "ctx") == 0) {
        lg_lapi_push_ctx(L);
        return 1;
    }
    return 0;
}

int luaopen_lunagate(lua_State *L)
{
    lua_createtable(L, 0, 16); /* lg */
    lg_lapi_inject_log(L);
    lg_lapi_inject_time(L);
    lg_lapi_inject_json(L);
    lg_lapi_inject_crypto(L);
    lg_lapi_inject_re(L);
    lg_lapi_inject_shared(L);
    lg_lapi_inject_metrics(L);
    lg_lapi_inject_request(L);
    lg_lapi_inject_response(L);
    lg_lapi_inject_http(L);
    lg_lapi_inject_proc(L);
    lg_lapi_inject_aead(L);

    lua_pushcfunction(L, lg_phase); /* lg f */
    lua_setfield(L, -2, "phase");   /* lg */
    lua_pushcfunction(L, lg_plugin_name);
    lua_setfield(L, -2, "plugin_name");
    lua_getfield(L, -1, "time"); /* lg time */
    lua_getfield(L, -1, "now");  /* lg time now */
    lua_setfield(L, -3, "now");  /* lg time */
    lua_pop(L, 1);               /* lg */
    lua_pushliteral(L, LG_VERSION);
    lua_setfield(L, -2, "version");

    lua_createtable(L, 0, 1); /* lg mt */
    lua_pushcfunction(L, lg_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2); /* lg */
    return 1;
}
