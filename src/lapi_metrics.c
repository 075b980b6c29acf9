/* lapi_metrics.c -- lg.metrics: plugins declare and update their own metrics.
 * SPDX-License-Identifier: MIT
 *
 *   local c = lg.metrics.counter("tokens_by_team_total", "Tokens per team.", {"team"})
 *   c:inc(42, {"red"})
 *   local h = lg.metrics.histogram("prompt_chars", "Prompt size.", {"route"}, {10, 100, 1000})
 *   h:observe(512, {"default/route0"})
 *   local g = lg.metrics.gauge("queue_depth", "Items waiting.", {})
 *   g:set(3) ; g:inc(1)
 *
 * Families are declared in init_worker (every worker declares the same ones; a second
 * declaration with the same name returns the existing family). Names get the registry
 * prefix (agentgateway_ by default). Updates go to the calling worker's shard, lock-free. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "lapi.h"
#include "metrics.h"
#include "runtime.h"

#define HANDLE "lunagate.metric"

typedef struct handle {
    int family, type;
    size_t nlabels;
} handle_t;

static lg_metrics_shard_t *shard(lua_State *L)
{
    lg_metrics_t *m = (lg_metrics_t *)lg_runtime_registry();
    if (!m)
        return NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* loaded */
    lua_getfield(L, -1, "lunagate");                      /* loaded lg */
    int id = LG_METRICS_MAIN;
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "worker_id"); /* loaded lg id */
        if (lua_isinteger(L, -1))
            id = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return lg_metrics_shard(m, id < 0 ? LG_METRICS_MAIN : id);
}

static int declare(lua_State *L, int type, const char *fname)
{
    lg_lapi_check_phase(L, LG_PHASE_LOAD | LG_PHASE_INIT_WORKER, fname);
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_optstring(L, 2, "");
    const char *labels[32];
    double buckets[64];
    size_t nl = 0, nb = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        nl = lua_rawlen(L, 3);
        luaL_argcheck(L, nl <= 32, 3, "at most 32 labels");
        for (size_t i = 0; i < nl; i++) {
            lua_rawgeti(L, 3, (lua_Integer)i + 1);
            labels[i] = lua_tostring(L, -1);
            luaL_argcheck(L, labels[i] != NULL, 3, "label names must be strings");
            lua_pop(L, 1); /* the string stays alive in the table */
        }
    }
    if (type == LG_METRICS_HISTOGRAM) {
        luaL_checktype(L, 4, LUA_TTABLE);
        nb = lua_rawlen(L, 4);
        luaL_argcheck(L, nb > 0 && nb <= 64, 4, "1 to 64 bucket bounds");
        for (size_t i = 0; i < nb; i++) {
            lua_rawgeti(L, 4, (lua_Integer)i + 1);
            buckets[i] = luaL_checknumber(L, -1);
            lua_pop(L, 1);
        }
    }
    lg_metrics_t *m = (lg_metrics_t *)lg_runtime_registry();
    int fam = -1;
    if (m) {
        fam = lg_metrics_find(m, name);
        if (fam >= 0 && lg_metrics_family_type(m, fam) != type)
            return luaL_error(L, "%s: metric '%s' exists with another type", fname, name);
        if (fam < 0) {
            lg_err_t err;
            fam = lg_metrics_family(m, type, name, help, labels, nl, buckets, nb, &err);
            if (fam < 0)
                return luaL_error(L, "%s: %s", fname, err.msg);
        }
    }
    handle_t *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->family = fam;
    h->type = type;
    h->nlabels = nl;
    luaL_setmetatable(L, HANDLE);
    return 1;
}

static int l_counter(lua_State *L)
{
    return declare(L, LG_METRICS_COUNTER, "counter");
}

static int l_gauge(lua_State *L)
{
    return declare(L, LG_METRICS_GAUGE, "gauge");
}

static int l_histogram(lua_State *L)
{
    return declare(L, LG_METRICS_HISTOGRAM, "histogram");
}

/* Reads label values (arg idx) into v[]; missing ones are "unknown". */
static void values(lua_State *L, int idx, handle_t *h, const char **v)
{
    for (size_t i = 0; i < h->nlabels; i++) {
        v[i] = NULL;
        if (lua_istable(L, idx)) {
            lua_rawgeti(L, idx, (lua_Integer)i + 1);
            v[i] = lua_tostring(L, -1); /* lives in the table */
            lua_pop(L, 1);
        }
    }
}

static int record(lua_State *L, int what, const char *fname)
{
    handle_t *h = luaL_checkudata(L, 1, HANDLE);
    double n = luaL_optnumber(L, 2, 1);
    const char *v[32];
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    values(L, 3, h, v);
    lg_metrics_shard_t *s = shard(L);
    if (!s || h->family < 0)
        return 0;
    if (what == 0) {
        if (h->type == LG_METRICS_HISTOGRAM)
            return luaL_error(L, "%s: use observe() on a histogram", fname);
        if (h->type == LG_METRICS_COUNTER && n < 0)
            return luaL_error(L, "%s: counters only go up", fname);
        lg_metrics_add(s, h->family, v, n);
    } else if (what == 1) {
        if (h->type != LG_METRICS_GAUGE)
            return luaL_error(L, "%s: only gauges can be set", fname);
        lg_metrics_set(s, h->family, v, n);
    } else {
        if (h->type != LG_METRICS_HISTOGRAM)
            return luaL_error(L, "%s: only histograms observe", fname);
        lg_metrics_observe(s, h->family, v, n);
    }
    return 0;
}

static int m_inc(lua_State *L)
{
    return record(L, 0, "inc");
}

static int m_set(lua_State *L)
{
    return record(L, 1, "set");
}

static int m_observe(lua_State *L)
{
    return record(L, 2, "observe");
}

void lg_lapi_inject_metrics(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"inc", m_inc}, {"set", m_set}, {"observe", m_observe}, {NULL, NULL}};
    static const luaL_Reg fns[] = {
        {"counter", l_counter}, {"gauge", l_gauge}, {"histogram", l_histogram}, {NULL, NULL}};
    if (luaL_newmetatable(L, HANDLE)) { /* lg mt */
        luaL_newlib(L, methods);        /* lg mt methods */
        lua_setfield(L, -2, "__index"); /* lg mt */
    }
    lua_pop(L, 1);                  /* lg */
    luaL_newlib(L, fns);            /* lg metrics */
    lua_setfield(L, -2, "metrics"); /* lg */
}
