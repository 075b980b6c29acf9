/* lapi_http.h -- lg.http: an asynchronous HTTP/1.1 client for Lua coroutines (cosockets).
 * SPDX-License-Identifier: MIT
 *
 * Threading: everything runs on the event loop of the worker owning the lua_State.
 *
 * Model: a Lua function called from a coroutine (lg.http.request, handle:read, lg.http.sleep,
 * ev:wait, and lg.process reads in lapi_proc.c) starts its I/O, then yields. The libevent
 * callback that completes the I/O pushes the results on the coroutine and calls
 * lg_lapi_http_resume(co, nargs), which runs the resumer installed with
 * lg_lapi_http_set_resumer() (the proxy's: budget, request finalisation when the coroutine
 * ends) or, by default, lua_resume() with errors logged through lg_log. Resumption always
 * comes from a callback of the event loop, never from inside another Lua call.
 *
 * Lifetime: lg_lapi_http_bind() attaches the worker's event base and upstream pool to a state;
 * both are borrowed and must outlive the state: call lua_close() before lg_upool_free() and
 * event_base_free(). Closing the state cancels every operation in flight (no resumption). */
#ifndef LG_LAPI_HTTP_H
#define LG_LAPI_HTTP_H

#include <event2/event.h>
#include <lua.h>

#include "upstream.h"

/* Attaches `base` and `pool` (borrowed) to L's main state; call once per worker state, after
 * luaopen_lunagate. Creates the TLS client contexts (system roots) lazily. */
void lg_lapi_http_bind(lua_State *L, struct event_base *base, lg_upool_t *pool);

/* The event base bound to L's state, or NULL (for lapi_proc.c). */
struct event_base *lg_lapi_http_base(lua_State *L);

/* Resumes `co` with the `nargs` values on top of its stack. Returns what the resumer returns;
 * the default one returns LUA_YIELD, LUA_OK (the coroutine ended; its results are popped) or
 * an error status (logged as "lua: coroutine failed: <msg>"). */
int lg_lapi_http_resume(lua_State *co, int nargs);

/* A resumer: must resume `co` with its nargs values (lua_resume) and deal with the outcome. */
typedef int lg_lapi_resume_fn(lua_State *co, int nargs, void *arg);

/* Installs the resumer for coroutines of L's state (NULL restores the default). `arg` is
 * borrowed. The proxy uses this to apply the instruction budget and to finish the request when
 * the coroutine returns. */
void lg_lapi_http_set_resumer(lua_State *L, lg_lapi_resume_fn *fn, void *arg);

/* Forgets every lg.http wait of `co` (a request in flight is aborted, a stream read is
 * abandoned but the stream stays open): `co` will not be resumed by lg.http. For a request
 * whose client went away. */
void lg_lapi_http_cancel(lua_State *co);

/* Sets lg.http on the module table at the top of the stack (stack unchanged):
 *   lg.http.request{method=, url= | host=,port=,tls=,path=, headers={}, body=, timeout_ms=,
 *                   insecure=}                -> {status=, headers={lowercase}, body=} | nil, err
 *   lg.http.stream{same}                      -> handle | nil, err (after the response head)
 *       handle.status, handle.headers, handle.sse (true for text/event-stream)
 *       handle:read([timeout_ms])             -> chunk string, or for SSE an event table
 *                                                {event=, data=, id=, retry=}; nil at the end;
 *                                                nil, err on failure
 *       handle:close()
 *   lg.http.sleep(ms), lg.http.event()      (lapi_http_wait.h)
 * All yielding calls raise "<fn>: must be called from a yieldable coroutine" otherwise. */
void lg_lapi_inject_http(lua_State *L);

#endif
