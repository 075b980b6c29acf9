/* lapi_time.c -- lg.time: wall clock and monotonic clock.
 * SPDX-License-Identifier: MIT */
#include "common.h"
#include "lapi.h"

#include <lauxlib.h>

/* lg.time.now() -> seconds since the epoch as a float (microsecond resolution). */
static int time_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)lg_now_us() / 1e6);
    return 1;
}

/* lg.time.now_us() -> integer microseconds since the epoch. */
static int time_now_us(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lg_now_us());
    return 1;
}

/* lg.time.monotonic() -> seconds (float) on a clock that never jumps. */
static int time_monotonic(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)lg_mono_us() / 1e6);
    return 1;
}

static int time_monotonic_us(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)lg_mono_us());
    return 1;
}

/* lg.time.format(us?) -> "2025-09-12T18:23:54.661414Z" (now when `us` is absent). */
static int time_format(lua_State *L)
{
    int64_t us = lua_isnoneornil(L, 1) ? lg_now_us() : (int64_t)luaL_checkinteger(L, 1);
    luaL_argcheck(L, us >= 0, 1, "negative time");
    char buf[64];
    size_t n = lg_time_format(us, buf);
    lua_pushlstring(L, buf, n);
    return 1;
}

void lg_lapi_inject_time(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"now", time_now},
        {"now_us", time_now_us},
        {"monotonic", time_monotonic},
        {"monotonic_us", time_monotonic_us},
        {"format", time_format},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);         /* lg time */
    lua_setfield(L, -2, "time"); /* lg */
}
