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
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

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
    lua_getglobal(L, "package");                       /* package */
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/plugins/?.lua", home, home, home);
    lua_setfield(L, -2, "path");                       /* package */
    lua_getfield(L, -1, "preload");                    /* package preload */
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
    LG_UNUSED(c);
    LG_UNUSED(err);
    return LG_OK;
}

int lg_runtime_start(lua_State *L, lg_conf_t *c, int nworkers, lg_err_t *err)
{
    LG_UNUSED(L);
    LG_UNUSED(c);
    LG_UNUSED(nworkers);
    LG_UNUSED(err);
    return LG_OK;
}

void lg_runtime_conf_changed(struct event_base *base, lg_conf_t *c)
{
    LG_UNUSED(base);
    LG_UNUSED(c);
}

void lg_runtime_reload_outcome(int ok)
{
    LG_UNUSED(ok);
}

const char *lg_runtime_metrics(const char *accept, struct evbuffer *out)
{
    LG_UNUSED(accept);
    evbuffer_add_printf(out, "# HELP agentgateway_build_info Build information.\n"
                             "# TYPE agentgateway_build_info gauge\n"
                             "agentgateway_build_info{tag=\"%s\"} 1\n",
                        LG_VERSION);
    return "text/plain; version=0.0.4; charset=utf-8";
}

void lg_runtime_stop(void)
{
}
