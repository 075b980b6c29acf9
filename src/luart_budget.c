/* luart_budget.c -- the lazily counted instruction budget: watchdog thread, signal handler,
 * count hooks. See luart_budget.h.
 * SPDX-License-Identifier: MIT */
#include "luart_budget.h"

#include "common.h"

#include <lauxlib.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WD_TICK_MS     10
#define WD_SIGNAL      SIGURG /* ignored by default, so a stray one is harmless */
#define CO_WATCH_EVERY 1000

static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static lg_budget_t *wd_list;
static int wd_running;
static _Thread_local lg_budget_t *wd_self; /* the budget of this thread's budgeted call */
static _Thread_local pid_t wd_tid;

static int budget_count(const lg_budget_t *b)
{
    return b->limit > 0x7fffffff ? 0x7fffffff : (int)b->limit;
}

static int call_armed(const lg_budget_t *b)
{
    return b && atomic_load_explicit(&b->in_call, memory_order_relaxed) &&
           atomic_load_explicit(&b->armed, memory_order_relaxed);
}

static void co_watch_hook(lua_State *L, lua_Debug *ar);

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lg_budget_t *b = lg_luart_budget(L);
    if (!call_armed(b)) { /* a coroutine's hook left over from an earlier call */
        lua_sethook(L, co_watch_hook, LUA_MASKCOUNT, CO_WATCH_EVERY);
        return;
    }
    b->blown = 1;
    /* keep firing soon, in case the plugin catches the error with pcall in a loop */
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1000);
    /* luaL_where does not see through a hook: name the running function's position */
    lua_Debug d;
    if (lua_getstack(L, 0, &d) && lua_getinfo(L, "Sl", &d) && d.currentline > 0)
        luaL_error(L, "%s:%d: instruction budget exceeded (%I instructions)", d.short_src,
                   d.currentline, b->limit);
    luaL_error(L, "instruction budget exceeded (%I instructions)", b->limit);
}

/* A plugin's coroutine: every CO_WATCH_EVERY instructions, look whether its call is armed. */
static void co_watch_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lg_budget_t *b = lg_luart_budget(L);
    if (call_armed(b))
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, budget_count(b));
}

static void wd_signal(int sig)
{
    (void)sig;
    lg_budget_t *b = wd_self;
    if (!b || !atomic_load_explicit(&b->in_call, memory_order_relaxed) ||
        atomic_load_explicit(&b->armed, memory_order_relaxed))
        return;
    atomic_store_explicit(&b->armed, 1, memory_order_relaxed);
    lua_sethook(b->L, budget_hook, LUA_MASKCOUNT, budget_count(b));
}

static void *wd_main(void *arg)
{
    (void)arg;
    struct timespec tick = {0, WD_TICK_MS * 1000000L};
    for (;;) {
        nanosleep(&tick, NULL);
        pthread_mutex_lock(&wd_lock);
        for (lg_budget_t *b = wd_list; b; b = b->wd_next) {
            if (!atomic_load_explicit(&b->in_call, memory_order_acquire)) {
                b->wd_seen = 0;
                continue;
            }
            unsigned seq = atomic_load_explicit(&b->call_seq, memory_order_relaxed);
            if (seq == b->wd_seen && !atomic_load_explicit(&b->armed, memory_order_relaxed))
                syscall(SYS_tgkill, getpid(), b->tid, WD_SIGNAL);
            b->wd_seen = seq;
        }
        pthread_mutex_unlock(&wd_lock);
    }
    return NULL;
}

void lg_budget_watch(lg_budget_t *b)
{
    pthread_mutex_lock(&wd_lock);
    if (!wd_running) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = wd_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(WD_SIGNAL, &sa, NULL);
        /* the watchdog itself never runs Lua: it takes no signals */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        pthread_t t;
        if (pthread_create(&t, NULL, wd_main, NULL) == 0) {
            pthread_detach(t);
            wd_running = 1;
        } else {
            lg_log(LG_LOG_ERR, "lua",
                   "cannot start the budget watchdog: instruction budgets "
                   "are not enforced");
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    b->wd_next = wd_list;
    wd_list = b;
    pthread_mutex_unlock(&wd_lock);
}

void lg_budget_unwatch(lg_budget_t *b)
{
    pthread_mutex_lock(&wd_lock);
    for (lg_budget_t **p = &wd_list; *p; p = &(*p)->wd_next)
        if (*p == b) {
            *p = b->wd_next;
            break;
        }
    pthread_mutex_unlock(&wd_lock);
}

void lg_budget_arm(lg_budget_t *b)
{
    b->blown = 0;
    if (b->limit <= 0)
        return;
    if (!wd_tid) {
        wd_tid = (pid_t)syscall(SYS_gettid);
        sigset_t s; /* budgeted calls need the watchdog's signal */
        sigemptyset(&s);
        sigaddset(&s, WD_SIGNAL);
        pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    }
    b->tid = wd_tid;
    wd_self = b;
    atomic_store_explicit(&b->armed, 0, memory_order_relaxed);
    atomic_store_explicit(&b->call_seq, ++b->seq, memory_order_relaxed);
    atomic_store_explicit(&b->in_call, 1, memory_order_release);
}

void lg_budget_disarm(lg_budget_t *b)
{
    b->blown = 0;
    if (b->limit <= 0)
        return;
    atomic_store_explicit(&b->in_call, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst); /* the handler now leaves us alone */
    wd_self = NULL; /* nor does a late signal find a budget that may be freed by then */
    if (atomic_load_explicit(&b->armed, memory_order_relaxed)) {
        lua_sethook(b->L, NULL, 0, 0);
        atomic_store_explicit(&b->armed, 0, memory_order_relaxed);
    }
}

/* The new coroutine gets the watch hook when it is made under a budget (plugin code; our own
 * glue runs without one). */
int lg_budget_watched_coroutine(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    lg_budget_t *b = lg_luart_budget(L);
    lua_State *co = lua_tothread(L, -1);
    if (!co && lua_getupvalue(L, -1, 1)) { /* coroutine.wrap: the thread is its upvalue */
        co = lua_tothread(L, -1);
        lua_pop(L, 1);
    }
    if (co && b && atomic_load_explicit(&b->in_call, memory_order_relaxed))
        lua_sethook(co, call_armed(b) ? budget_hook : co_watch_hook, LUA_MASKCOUNT,
                    call_armed(b) ? budget_count(b) : CO_WATCH_EVERY);
    return 1;
}
