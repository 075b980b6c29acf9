/* luart_budget.h -- the instruction budget of budgeted Lua calls, counted lazily.
 * SPDX-License-Identifier: MIT
 *
 * Part of luart: a runtime embeds one lg_budget_t and brackets every budgeted protected call
 * with lg_budget_arm / lg_budget_disarm. Lua's count hook makes the interpreter trap on every
 * VM instruction, which costs more than a short plugin call itself; so budgeted calls start
 * unhooked, and a watchdog thread (one per process) looks at every budget each 10 ms. A call
 * it finds still running on two looks in a row has run for at least one tick: the watchdog
 * sends SIGURG to its thread, whose handler sets the count hook (lua_sethook may be called
 * from a signal handler; lua.c stops scripts on SIGINT the same way). From then on the call
 * has `limit` instructions left, and then raises "instruction budget exceeded".
 *
 * Coroutines made by plugin code (coroutine.create and coroutine.wrap, replaced by
 * lg_budget_watched_coroutine) carry a cheap watch hook that switches to the budget once their
 * call is armed, because a hook belongs to one Lua thread.
 *
 * Threading: a budget is used by the thread that runs its state; the watchdog only reads
 * in_call, call_seq and armed, and the signal handler runs on the budget's own thread. */
#ifndef LG_LUART_BUDGET_H
#define LG_LUART_BUDGET_H

#include <lua.h>
#include <stdatomic.h>
#include <sys/types.h>

typedef struct lg_budget {
    lua_State *L;         /* the main thread of the budgeted state */
    lua_Integer limit;    /* instructions left once armed; <= 0: no budget */
    int blown;            /* set by the hook; pcall wrappers re-raise while it is set */
    atomic_int in_call;   /* inside a budgeted call, on thread `tid` */
    atomic_int armed;     /* the count hook is set for this call */
    atomic_uint call_seq; /* bumped by every budgeted call */
    unsigned seq;         /* this thread's copy of call_seq */
    unsigned wd_seen;     /* watchdog: call_seq at its previous look */
    pid_t tid;
    struct lg_budget *wd_next;
} lg_budget_t;

/* Puts b (whose L and limit are set) under the watchdog, starting the watchdog and its
 * signal handler the first time. */
void lg_budget_watch(lg_budget_t *b);
/* Takes b off the watchdog's list: call before closing its state. */
void lg_budget_unwatch(lg_budget_t *b);

/* A budgeted call starts (clears `blown`) and ends (removes the hook if it was set). */
void lg_budget_arm(lg_budget_t *b);
void lg_budget_disarm(lg_budget_t *b);

/* coroutine.create / coroutine.wrap for plugins: a C closure whose upvalue 1 is the original
 * function. */
int lg_budget_watched_coroutine(lua_State *L);

/* The budget of the runtime that owns L (any of its threads), or NULL. Defined by luart.c. */
lg_budget_t *lg_luart_budget(lua_State *L);

#endif
