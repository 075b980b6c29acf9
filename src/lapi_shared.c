/* lapi_shared.c -- lg.shared: dictionaries shared by all workers (counters, rate-limit buckets).
 * SPDX-License-Identifier: MIT
 *
 * Each dictionary is a chained hash table behind its own mutex, declared from config
 * (`config.plugins.shared: {name: {size = bytes, maxEntries = n}}`) and kept for the process
 * lifetime, contents included, so counters survive reloads. Values are strings, numbers and
 * booleans, copied in and out under the lock. A full dictionary first drops expired entries;
 * if still full, set/add/incr fail with "no memory" (no silent eviction of live keys). */
#include "common.h"
#include "lapi.h"

#include <lauxlib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARED_MT "lunagate.shared"

enum { V_STR = 1, V_INT, V_NUM, V_BOOL };

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    int64_t expires_us; /* monotonic; 0 = never */
    int type;
    size_t klen, vlen;
    union {
        lua_Integer i;
        lua_Number d;
        int b;
    } num;
    char data[]; /* key bytes, then string value bytes */
} entry_t;

typedef struct dict {
    struct dict *next;
    char *name;
    pthread_mutex_t mu;
    entry_t **buckets;
    size_t nbuckets, count, bytes;
    size_t max_bytes, max_entries; /* 0 = unlimited on that axis */
} dict_t;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static dict_t *dicts;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t entry_cost(size_t klen, size_t vlen)
{
    return sizeof(entry_t) + klen + vlen;
}

/* ---- Registry ---- */

int lg_shared_declare(const char *name, size_t max_bytes, size_t max_entries)
{
    pthread_mutex_lock(&registry_mu);
    dict_t *d;
    for (d = dicts; d; d = d->next)
        if (strcmp(d->name, name) == 0)
            break;
    if (d) {
        pthread_mutex_lock(&d->mu);
        d->max_bytes = max_bytes;
        d->max_entries = max_entries;
        pthread_mutex_unlock(&d->mu);
    } else {
        d = lg_xcalloc(1, sizeof(*d));
        d->name = lg_xstrdup(name);
        pthread_mutex_init(&d->mu, NULL);
        size_t want = max_entries ? max_entries : (max_bytes ? max_bytes / 128 : 1024);
        size_t nb = 64;
        while (nb < want && nb < 65536)
            nb *= 2;
        d->nbuckets = nb;
        d->buckets = lg_xcalloc(nb, sizeof(entry_t *));
        d->max_bytes = max_bytes;
        d->max_entries = max_entries;
        d->next = dicts;
        dicts = d;
    }
    pthread_mutex_unlock(&registry_mu);
    return LG_OK;
}

void lg_shared_reset(void)
{
    pthread_mutex_lock(&registry_mu);
    while (dicts) {
        dict_t *d = dicts;
        dicts = d->next;
        for (size_t i = 0; i < d->nbuckets; i++) {
            entry_t *e = d->buckets[i];
            while (e) {
                entry_t *nx = e->next;
                free(e);
                e = nx;
            }
        }
        free(d->buckets);
        pthread_mutex_destroy(&d->mu);
        free(d->name);
        free(d);
    }
    pthread_mutex_unlock(&registry_mu);
}

/* ---- Table operations (caller holds d->mu) ---- */

static entry_t **find_slot(dict_t *d, const char *k, size_t kl, uint64_t h)
{
    entry_t **pp = &d->buckets[h & (d->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        entry_t *e = *pp;
        if (e->hash == h && e->klen == kl && memcmp(e->data, k, kl) == 0)
            return pp;
    }
    return pp;
}

static void unlink_entry(dict_t *d, entry_t **pp)
{
    entry_t *e = *pp;
    *pp = e->next;
    d->count--;
    d->bytes -= entry_cost(e->klen, e->vlen);
    free(e);
}

static int expired(const entry_t *e, int64_t now)
{
    return e->expires_us && e->expires_us <= now;
}

static void purge_expired(dict_t *d, int64_t now)
{
    for (size_t i = 0; i < d->nbuckets; i++) {
        entry_t **pp = &d->buckets[i];
        while (*pp) {
            if (expired(*pp, now))
                unlink_entry(d, pp);
            else
                pp = &(*pp)->next;
        }
    }
}

static int fits(dict_t *d, size_t cost, size_t freed_cost, int adds_entry)
{
    if (d->max_entries && adds_entry && d->count + 1 > d->max_entries)
        return 0;
    if (d->max_bytes && d->bytes - freed_cost + cost > d->max_bytes)
        return 0;
    return 1;
}

/* A value read off the Lua stack. */
typedef struct {
    int type;
    const char *s;
    size_t len;
    lua_Integer i;
    lua_Number d;
    int b;
} val_t;

/* Stores k = v (replacing any old entry). Returns 0, or -1 when the dictionary is full. */
static int store(dict_t *d, const char *k, size_t kl, const val_t *v, int64_t expires, int64_t now)
{
    uint64_t h = hash_bytes(k, kl);
    entry_t **pp = find_slot(d, k, kl, h);
    size_t vlen = v->type == V_STR ? v->len : 0;
    size_t cost = entry_cost(kl, vlen);
    size_t old_cost = *pp ? entry_cost((*pp)->klen, (*pp)->vlen) : 0;
    if (!fits(d, cost, old_cost, *pp == NULL)) {
        purge_expired(d, now);
        pp = find_slot(d, k, kl, h);
        old_cost = *pp ? entry_cost((*pp)->klen, (*pp)->vlen) : 0;
        if (!fits(d, cost, old_cost, *pp == NULL))
            return -1;
    }
    if (*pp)
        unlink_entry(d, pp);
    entry_t *e = lg_xmalloc(sizeof(entry_t) + kl + vlen);
    e->hash = h;
    e->expires_us = expires;
    e->type = v->type;
    e->klen = kl;
    e->vlen = vlen;
    memcpy(e->data, k, kl);
    if (v->type == V_STR)
        memcpy(e->data + kl, v->s, vlen);
    else if (v->type == V_INT)
        e->num.i = v->i;
    else if (v->type == V_NUM)
        e->num.d = v->d;
    else
        e->num.b = v->b;
    pp = find_slot(d, k, kl, h); /* unlink may have changed the chain */
    e->next = *pp;
    *pp = e;
    d->count++;
    d->bytes += cost;
    return 0;
}

/* ---- Lua methods ---- */

static dict_t *check_dict(lua_State *L)
{
    dict_t **pd = luaL_checkudata(L, 1, SHARED_MT);
    return *pd;
}

static void check_val(lua_State *L, int idx, val_t *v, const char *fname)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        v->type = V_STR;
        v->s = lua_tolstring(L, idx, &v->len);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v->type = V_INT;
            v->i = lua_tointeger(L, idx);
        } else {
            v->type = V_NUM;
            v->d = lua_tonumber(L, idx);
        }
        break;
    case LUA_TBOOLEAN:
        v->type = V_BOOL;
        v->b = lua_toboolean(L, idx);
        break;
    default:
        luaL_error(L, "bad argument #%d to '%s' (string, number or boolean expected, got %s)",
                   idx - 1, fname, luaL_typename(L, idx));
    }
}

static int64_t opt_ttl(lua_State *L, int idx, int64_t now)
{
    lua_Number ttl = luaL_optnumber(L, idx, 0);
    luaL_argcheck(L, ttl >= 0, idx, "ttl must be >= 0 seconds");
    return ttl > 0 ? now + (int64_t)(ttl * 1e6) : 0;
}

static void push_entry(lua_State *L, const entry_t *e)
{
    switch (e->type) {
    case V_STR:
        lua_pushlstring(L, e->data + e->klen, e->vlen);
        break;
    case V_INT:
        lua_pushinteger(L, e->num.i);
        break;
    case V_NUM:
        lua_pushnumber(L, e->num.d);
        break;
    default:
        lua_pushboolean(L, e->num.b);
        break;
    }
}

/* dict:get(key) -> value | nil */
static int sh_get(lua_State *L)
{
    dict_t *d = check_dict(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);
    int64_t now = lg_mono_us();
    /* Lua allocation can raise (memory limit), and a raise must never happen with the lock
     * held: size the buffer outside the lock, then copy under it (retrying if the value grew
     * in between). */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char *buf = NULL;
    size_t have = 0;
    entry_t *e;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        entry_t **pp = find_slot(d, k, kl, hash_bytes(k, kl));
        if (!*pp || expired(*pp, now)) {
            pthread_mutex_unlock(&d->mu);
            lua_pushnil(L);
            return 1;
        }
        e = *pp;
        if (e->type != V_STR)
            break;
        if (buf && e->vlen <= have) {
            size_t n = e->vlen;
            memcpy(buf, e->data + e->klen, n);
            pthread_mutex_unlock(&d->mu);
            luaL_pushresultsize(&b, n);
            return 1;
        }
        have = e->vlen;
        pthread_mutex_unlock(&d->mu);
        buf = luaL_prepbuffsize(&b, have ? have : 1);
    }
    entry_t tmp = *e;
    pthread_mutex_unlock(&d->mu);
    tmp.klen = 0;
    push_entry(L, &tmp);
    return 1;
}

static int do_set(lua_State *L, int only_add, const char *fname)
{
    dict_t *d = check_dict(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);
    int64_t now = lg_mono_us();
    int64_t exp = opt_ttl(L, 4, now);
    if (lua_isnoneornil(L, 3) && !only_add) { /* set(k, nil) deletes */
        pthread_mutex_lock(&d->mu);
        entry_t **pp = find_slot(d, k, kl, hash_bytes(k, kl));
        if (*pp)
            unlink_entry(d, pp);
        pthread_mutex_unlock(&d->mu);
        lua_pushboolean(L, 1);
        return 1;
    }
    val_t v;
    check_val(L, 3, &v, fname);
    pthread_mutex_lock(&d->mu);
    if (only_add) {
        entry_t **pp = find_slot(d, k, kl, hash_bytes(k, kl));
        if (*pp && !expired(*pp, now)) {
            pthread_mutex_unlock(&d->mu);
            lua_pushboolean(L, 0);
            lua_pushliteral(L, "exists");
            return 2;
        }
    }
    int rc = store(d, k, kl, &v, exp, now);
    pthread_mutex_unlock(&d->mu);
    if (rc < 0) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "no memory");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* dict:set(key, value [, ttl]) -> true | false, "no memory" */
static int sh_set(lua_State *L)
{
    return do_set(L, 0, "set");
}
/* dict:add(key, value [, ttl]) -> true | false, "exists" | false, "no memory" */
static int sh_add(lua_State *L)
{
    return do_set(L, 1, "add");
}

/* dict:incr(key, n [, init [, init_ttl]]) -> new value | nil, "not found" | nil, "not a number"
 * | nil, "no memory". An existing key keeps its expiry. */
static int sh_incr(lua_State *L)
{
    dict_t *d = check_dict(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);
    luaL_checknumber(L, 3);
    int has_init = !lua_isnoneornil(L, 4);
    if (has_init)
        luaL_checknumber(L, 4);
    int64_t now = lg_mono_us();
    int64_t exp = opt_ttl(L, 5, now);
    int by_int = lua_isinteger(L, 3);
    lua_Integer bi = by_int ? lua_tointeger(L, 3) : 0;
    lua_Number bd = lua_tonumber(L, 3);

    pthread_mutex_lock(&d->mu);
    entry_t **pp = find_slot(d, k, kl, hash_bytes(k, kl));
    val_t v = {0};
    const char *err = NULL;
    if (*pp && !expired(*pp, now)) {
        entry_t *e = *pp;
        if (e->type == V_INT && by_int) {
            e->num.i = (lua_Integer)((lua_Unsigned)e->num.i + (lua_Unsigned)bi);
            v.type = V_INT;
            v.i = e->num.i;
        } else if (e->type == V_INT || e->type == V_NUM) {
            lua_Number cur = e->type == V_INT ? (lua_Number)e->num.i : e->num.d;
            e->type = V_NUM;
            e->num.d = cur + bd;
            v.type = V_NUM;
            v.d = e->num.d;
        } else {
            err = "not a number";
        }
    } else if (!has_init) {
        err = "not found";
    } else {
        if (lua_isinteger(L, 4) && by_int) {
            v.type = V_INT;
            v.i = (lua_Integer)((lua_Unsigned)lua_tointeger(L, 4) + (lua_Unsigned)bi);
        } else {
            v.type = V_NUM;
            v.d = lua_tonumber(L, 4) + bd;
        }
        if (store(d, k, kl, &v, exp, now) < 0)
            err = "no memory";
    }
    pthread_mutex_unlock(&d->mu);
    if (err) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (v.type == V_INT)
        lua_pushinteger(L, v.i);
    else
        lua_pushnumber(L, v.d);
    return 1;
}

/* dict:delete(key) -> true */
static int sh_delete(lua_State *L)
{
    lua_settop(L, 2);
    lua_pushnil(L);
    return do_set(L, 0, "delete");
}

/* dict:ttl(key) -> seconds left (0 = never expires) | nil when absent */
static int sh_ttl(lua_State *L)
{
    dict_t *d = check_dict(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);
    int64_t now = lg_mono_us();
    pthread_mutex_lock(&d->mu);
    entry_t **pp = find_slot(d, k, kl, hash_bytes(k, kl));
    int found = *pp && !expired(*pp, now);
    int64_t exp = found ? (*pp)->expires_us : 0;
    pthread_mutex_unlock(&d->mu);
    if (!found) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushnumber(L, exp ? (lua_Number)(exp - now) / 1e6 : 0);
    return 1;
}

/* dict:flush_all() -- removes every entry. */
static int sh_flush_all(lua_State *L)
{
    dict_t *d = check_dict(L);
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < d->nbuckets; i++)
        while (d->buckets[i])
            unlink_entry(d, &d->buckets[i]);
    pthread_mutex_unlock(&d->mu);
    return 0;
}

/* dict:count() -> number of live and not yet purged entries */
static int sh_count(lua_State *L)
{
    dict_t *d = check_dict(L);
    pthread_mutex_lock(&d->mu);
    size_t n = d->count;
    pthread_mutex_unlock(&d->mu);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int shared_index(lua_State *L)
{
    return luaL_error(L,
                      "lg.shared.%s: no such dictionary (declare it under config.plugins.shared)",
                      luaL_optstring(L, 2, "?"));
}

void lg_lapi_inject_shared(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"get", sh_get},
        {"set", sh_set},
        {"add", sh_add},
        {"incr", sh_incr},
        {"delete", sh_delete},
        {"ttl", sh_ttl},
        {"flush_all", sh_flush_all},
        {"count", sh_count},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, SHARED_MT)) { /* lg mt */
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);            /* lg */
    lua_newtable(L);          /* lg shared */
    lua_createtable(L, 0, 1); /* lg shared mt */
    lua_pushcfunction(L, shared_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);       /* lg shared */
    lua_setfield(L, -2, "shared"); /* lg */
    lg_lapi_shared_bind(L);
}

void lg_lapi_shared_bind(lua_State *L)
{
    if (lua_getfield(L, -1, "shared") != LUA_TTABLE) { /* lg shared */
        lua_pop(L, 1);
        return;
    }
    /* Dictionaries are never freed while states exist, so the pointers can be used after the
     * lock is dropped; Lua allocations (which may raise) happen outside the lock. */
    size_t n = 0;
    pthread_mutex_lock(&registry_mu);
    for (dict_t *d = dicts; d; d = d->next)
        n++;
    pthread_mutex_unlock(&registry_mu);
    dict_t **list = lua_newuserdatauv(L, (n ? n : 1) * sizeof(dict_t *), 0); /* lg shared tmp */
    size_t got = 0;
    pthread_mutex_lock(&registry_mu);
    for (dict_t *d = dicts; d && got < n; d = d->next)
        list[got++] = d;
    pthread_mutex_unlock(&registry_mu);
    for (size_t i = 0; i < got; i++) {
        dict_t **pd = lua_newuserdatauv(L, sizeof(*pd), 0); /* lg shared tmp ud */
        *pd = list[i];
        luaL_setmetatable(L, SHARED_MT);
        lua_setfield(L, -3, list[i]->name); /* lg shared tmp */
    }
    lua_pop(L, 2); /* lg */
}
