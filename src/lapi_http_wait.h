/* lapi_http_wait.h -- lg.http.sleep and lg.http.event: timers and wake-ups for coroutines.
 * SPDX-License-Identifier: MIT
 *
 * Part of the lg.http namespace (lapi_http.c registers it); uses the event base bound with
 * lg_lapi_http_bind() and resumes through lg_lapi_http_resume(). A woken coroutine is always
 * resumed from a timer callback of the loop, never from inside ev:set(). */
#ifndef LG_LAPI_HTTP_WAIT_H
#define LG_LAPI_HTTP_WAIT_H

#include <lua.h>

/* Adds to the lg.http table at the top of the stack (stack unchanged):
 *   lg.http.sleep(ms)                  yields for ms milliseconds (0: until the next loop turn)
 *   lg.http.event() -> ev              ev:wait([timeout_ms]) -> true | nil, "timeout";
 *                                      ev:set() wakes every coroutine waiting on ev */
void lg_lapi_http_wait_register(lua_State *L);

/* Forgets the sleeps and waits of `co` (no resumption). lg_lapi_http_cancel() calls it. */
void lg_lapi_http_wait_cancel(lua_State *co);

#endif
