/* mcp_driver.c -- runs a Lua script in a coroutine on a libevent loop with the real lunagate
 * module plus lg.http, lg.process and lg.crypto_aead; for spec/04-integration/mcp_logic.test.mjs
 * (not a unit test: no test_ prefix).
 * SPDX-License-Identifier: MIT
 *
 * Usage: mcp_driver SCRIPT [ARG]...   (run from the repository root; `arg` holds the args)
 * The script's main chunk runs as a coroutine; it may start others with coroutine.create
 * and resume them (they are resumed by the loop afterwards, like the proxy does). Exits 0
 * when the main chunk returns, 1 on error, 2 after LG_DRIVER_TIMEOUT seconds (default 90). */
#include "common.h"
#include "lapi.h"
#include "lapi_aead.h"
#include "lapi_http.h"
#include "lapi_proc.h"
#include "upstream.h"

#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static struct event_base *base;
static lua_State *main_co;
static int main_status = -1;

static int resumer(lua_State *co, int nargs, void *arg)
{
    int nres = 0;
    int st = lua_resume(co, NULL, nargs, &nres);
    if (st == LUA_YIELD) {
        lua_pop(co, nres);
        return st;
    }
    if (st != LUA_OK) {
        luaL_traceback(co, co, lua_tostring(co, -1), 0);
        fprintf(stderr, "driver: coroutine failed: %s\n", lua_tostring(co, -1));
    }
    lua_settop(co, 0);
    if (co == main_co) {
        main_status = st == LUA_OK ? 0 : 1;
        event_base_loopbreak(base);
    }
    return st;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: mcp_driver SCRIPT [ARG]...\n");
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    lg_err_t err;
    lg_upool_t *pool = lg_upool_new(base, &err);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "lunagate", luaopen_lunagate, 0); /* lg */
    lg_lapi_inject_http(L);
    lg_lapi_inject_proc(L);
    lg_lapi_inject_aead(L);
    lua_pop(L, 1);
    lg_lapi_http_bind(L, base, pool);
    lg_lapi_http_set_resumer(L, resumer, NULL);
    (void)!luaL_dostring(L, "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path");

    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");

    main_co = lua_newthread(L); /* co (kept on L's stack) */
    if (luaL_loadfile(main_co, argv[1]) != LUA_OK) {
        fprintf(stderr, "driver: %s\n", lua_tostring(main_co, -1));
        return 1;
    }
    resumer(main_co, 0, NULL);
    if (main_status < 0) {
        const char *t = getenv("LG_DRIVER_TIMEOUT");
        struct timeval tv = {t ? atoi(t) : 90, 0};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    int rc = main_status < 0 ? 2 : main_status;
    if (rc == 2)
        fprintf(stderr, "driver: timed out\n");
    fflush(stdout);
    lua_close(L);
    lg_upool_free(pool);
    event_base_free(base);
    return rc;
}
