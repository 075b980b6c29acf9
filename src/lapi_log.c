/* lapi_log.c -- lg.log: process log lines from plugins and fields on the request record.
 * SPDX-License-Identifier: MIT */
#include "common.h"
#include "lapi.h"

#include <lauxlib.h>

/* Joins the arguments with tostring() semantics (no separator, as ngx.log does) and logs them
 * under scope "lua", prefixed by the running plugin's name. */
static int log_at(lua_State *L, int level)
{
    if (level > lg_log_level)
        return 0;
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        luaL_tolstring(L, i, NULL); /* ... s */
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b); /* ... msg */
    lg_lapi_ctx_t *ctx = lg_lapi_ctx(L);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    if (ctx && ctx->plugin)
        lg_log(level, "lua", "plugin=%s: %.*s", ctx->plugin, (int)len, msg);
    else
        lg_log(level, "lua", "%.*s", (int)len, msg);
    return 0;
}

static int log_err(lua_State *L)
{
    return log_at(L, LG_LOG_ERR);
}
static int log_warn(lua_State *L)
{
    return log_at(L, LG_LOG_WARN);
}
static int log_info(lua_State *L)
{
    return log_at(L, LG_LOG_INFO);
}
static int log_debug(lua_State *L)
{
    return log_at(L, LG_LOG_DEBUG);
}

/* lg.log.set_field(key, value): appends {key, value} to rec.fields of the running request.
 * Setting a key again replaces its value in place, so the order stays that of first use. */
static int log_set_field(lua_State *L)
{
    luaL_checkstring(L, 1);
    luaL_argexpected(L, lua_type(L, 2) != LUA_TNONE, 2, "value");
    luaL_argexpected(L,
                     lua_type(L, 2) != LUA_TTABLE && lua_type(L, 2) != LUA_TFUNCTION &&
                         lua_type(L, 2) != LUA_TUSERDATA && lua_type(L, 2) != LUA_TTHREAD,
                     2, "string, number, boolean or nil");
    lg_lapi_check_phase(L, LG_PHASE_REQUEST, "set_field");
    lg_lapi_push_rec(L);                               /* k v rec */
    if (lua_getfield(L, -1, "fields") != LUA_TTABLE) { /* k v rec fields? */
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "fields"); /* k v rec fields */
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i); /* k v rec fields kv */
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_rawgeti(L, -1, 1); /* ... kv key */
            int same = lua_rawequal(L, -1, 1);
            lua_pop(L, 1);
            if (same) {
                lua_pushvalue(L, 2);
                lua_rawseti(L, -2, 2);
                return 0;
            }
        }
        lua_pop(L, 1);
    }
    lua_createtable(L, 2, 0); /* k v rec fields kv */
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, n + 1); /* k v rec fields */
    return 0;
}

void lg_lapi_inject_log(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"err", log_err},     {"warn", log_warn},           {"info", log_info},
        {"debug", log_debug}, {"set_field", log_set_field}, {NULL, NULL},
    };
    luaL_newlib(L, fns);        /* lg log */
    lua_setfield(L, -2, "log"); /* lg */
}
