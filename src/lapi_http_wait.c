/* lapi_http_wait.c -- lg.http.sleep and lg.http.event: timers and wake-ups for coroutines.
 * SPDX-License-Identifier: MIT
 *
 * Every waiting coroutine has a waiter: a registry reference that keeps the coroutine alive
 * and a timer. sleep() arms the timer; ev:wait() links the waiter into the event's list and
 * arms the timer only for a timeout; ev:set() unlinks every waiter and fires its timer now,
 * so the resumption happens from the loop. The state's waiter list (a registry userdata with
 * __gc) frees whatever still waits when the state closes. */
#include "lapi_http_wait.h"

#include "common.h"
#include "lapi_http.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define EVENT_MT "lunagate.http.event"

typedef struct wbind wbind_t;
typedef struct waiter waiter_t;
typedef struct levent levent_t;

struct waiter {
    wbind_t *b;
    waiter_t *bnext, *bprev; /* state list */
    waiter_t *enext, *eprev; /* event list */
    levent_t *ev;
    lua_State *co;
    int co_ref;
    int fired; /* 1: set() woke it (resume with true) */
    int sleep;
    struct event *timer;
};

struct levent {
    wbind_t *b;
    waiter_t *head;
};

struct wbind {
    lua_State *L; /* main state */
    struct event_base *base;
    waiter_t *waiters;
};

static char wbind_key;

static void waiter_unlink_ev(waiter_t *w)
{
    if (!w->ev)
        return;
    if (w->eprev)
        w->eprev->enext = w->enext;
    else
        w->ev->head = w->enext;
    if (w->enext)
        w->enext->eprev = w->eprev;
    w->ev = NULL;
    w->enext = w->eprev = NULL;
}

static void waiter_free(waiter_t *w)
{
    waiter_unlink_ev(w);
    if (w->bprev)
        w->bprev->bnext = w->bnext;
    else
        w->b->waiters = w->bnext;
    if (w->bnext)
        w->bnext->bprev = w->bprev;
    if (w->co_ref != LUA_NOREF)
        luaL_unref(w->b->L, LUA_REGISTRYINDEX, w->co_ref);
    event_free(w->timer);
    free(w);
}

static int wbind_gc(lua_State *L)
{
    wbind_t *b = lua_touserdata(L, 1);
    while (b->waiters)
        waiter_free(b->waiters);
    return 0;
}

/* The state's waiter list, created on first use; NULL when no loop is bound. */
static wbind_t *get_wbind(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &wbind_key); /* ud|nil */
    wbind_t *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (b)
        return b;
    struct event_base *base = lg_lapi_http_base(L);
    if (!base)
        return NULL;
    b = lua_newuserdatauv(L, sizeof(*b), 0); /* b */
    memset(b, 0, sizeof(*b));
    b->base = base;
    lua_createtable(L, 0, 1); /* b mt */
    lua_pushcfunction(L, wbind_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);                       /* b */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &wbind_key); /* */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    b->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    return b;
}

static void waiter_cb(evutil_socket_t fd, short what, void *arg)
{
    waiter_t *w = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    lua_State *co = w->co;
    int nargs = 0;
    if (!w->sleep) {
        if (w->fired) {
            lua_pushboolean(co, 1);
            nargs = 1;
        } else {
            lua_pushnil(co);
            lua_pushliteral(co, "timeout");
            nargs = 2;
        }
    }
    lua_State *L = w->b->L;
    int ref = w->co_ref;
    w->co_ref = LUA_NOREF; /* kept until after the resumption */
    waiter_free(w);
    lg_lapi_http_resume(co, nargs);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static waiter_t *waiter_new(lua_State *L, wbind_t *b, lua_Integer ms)
{
    waiter_t *w = lg_xcalloc(1, sizeof(*w));
    w->b = b;
    w->co = L;
    lua_pushthread(L); /* ... co */
    w->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    w->timer = evtimer_new(b->base, waiter_cb, w);
    w->bnext = b->waiters;
    if (b->waiters)
        b->waiters->bprev = w;
    b->waiters = w;
    if (ms > 0) {
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
        evtimer_add(w->timer, &tv);
    }
    return w;
}

static void check_yieldable(lua_State *L, const char *fname)
{
    if (!lua_isyieldable(L))
        luaL_error(L, "%s: must be called from a yieldable coroutine", fname);
}

static wbind_t *check_wbind(lua_State *L, const char *fname)
{
    wbind_t *b = get_wbind(L);
    if (!b)
        luaL_error(L, "%s: no event loop bound to this state", fname);
    return b;
}

static int http_sleep(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    check_yieldable(L, "lg.http.sleep");
    waiter_t *w = waiter_new(L, check_wbind(L, "lg.http.sleep"), ms > 0 ? ms : 0);
    w->sleep = 1;
    if (ms <= 0) {
        struct timeval tv = {0, 0};
        evtimer_add(w->timer, &tv);
    }
    return lua_yield(L, 0);
}

static int http_event(lua_State *L)
{
    wbind_t *b = check_wbind(L, "lg.http.event");
    levent_t *e = lua_newuserdatauv(L, sizeof(*e), 0);
    e->b = b;
    e->head = NULL;
    luaL_setmetatable(L, EVENT_MT);
    return 1;
}

static int ev_wait(lua_State *L)
{
    levent_t *e = luaL_checkudata(L, 1, EVENT_MT);
    lua_Integer ms = luaL_optinteger(L, 2, 0);
    check_yieldable(L, "wait");
    waiter_t *w = waiter_new(L, e->b, ms);
    w->ev = e;
    w->enext = e->head;
    if (e->head)
        e->head->eprev = w;
    e->head = w;
    return lua_yield(L, 0);
}

static int ev_set(lua_State *L)
{
    levent_t *e = luaL_checkudata(L, 1, EVENT_MT);
    while (e->head) {
        waiter_t *w = e->head;
        waiter_unlink_ev(w);
        w->fired = 1;
        struct timeval tv = {0, 0};
        evtimer_add(w->timer, &tv); /* resumed from the loop, not from inside set() */
    }
    return 0;
}

/* A waiting coroutine holds its event on its stack, so this runs with waiters only when the
 * state closes; the state list frees them. */
static int ev_gc(lua_State *L)
{
    levent_t *e = lua_touserdata(L, 1);
    while (e->head)
        waiter_unlink_ev(e->head);
    return 0;
}

void lg_lapi_http_wait_cancel(lua_State *co)
{
    lua_rawgetp(co, LUA_REGISTRYINDEX, &wbind_key);
    wbind_t *b = lua_touserdata(co, -1);
    lua_pop(co, 1);
    if (!b)
        return;
    for (waiter_t *w = b->waiters, *next; w; w = next) {
        next = w->bnext;
        if (w->co == co)
            waiter_free(w);
    }
}

void lg_lapi_http_wait_register(lua_State *L)
{
    static const luaL_Reg evmethods[] = {{"wait", ev_wait}, {"set", ev_set}, {NULL, NULL}};
    if (luaL_newmetatable(L, EVENT_MT)) { /* http mt */
        luaL_newlib(L, evmethods);        /* http mt methods */
        lua_setfield(L, -2, "__index");   /* http mt */
        lua_pushcfunction(L, ev_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1); /* http */
    lua_pushcfunction(L, http_sleep);
    lua_setfield(L, -2, "sleep");
    lua_pushcfunction(L, http_event);
    lua_setfield(L, -2, "event");
}
