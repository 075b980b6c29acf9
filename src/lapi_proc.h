/* lapi_proc.h -- lg.process: child processes talking line by line over stdio pipes.
 * SPDX-License-Identifier: MIT
 *
 * For MCP stdio targets. Threading: a handle belongs to the worker owning its lua_State and
 * runs on the event loop bound with lg_lapi_http_bind() (lapi_http.h); reads yield the calling
 * coroutine and are resumed through lg_lapi_http_resume().
 *
 * Children: spawned with posix_spawnp in their own process group, stdin and stdout on
 * non-blocking pipes, stderr inherited (or /dev/null). No SIGCHLD handler is installed: a child
 * is reaped with waitpid(pid, WNOHANG) on its own pid once its stdout closes or it is killed
 * (SIGTERM to the group, SIGKILL after LG_PROC_KILL_GRACE_MS), so other children of the process
 * are never touched. Closing the state kills (SIGKILL) and reaps every remaining child. */
#ifndef LG_LAPI_PROC_H
#define LG_LAPI_PROC_H

#include <lua.h>

#define LG_PROC_KILL_GRACE_MS 2000

/* Sets lg.process on the module table at the top of the stack (stack unchanged):
 *   lg.process.spawn{cmd=, args={}, env={K=V}, clear_env=false, stderr="inherit"|"null"}
 *                        -> handle | nil, err
 *   handle:write(line)   -> true | nil, err   (appends "\n" when missing; never blocks)
 *   handle:read_line([timeout_ms]) -> line (without "\n") | nil at EOF | nil, err
 *                                     (yields until a full line)
 *   handle:kill()        ends the child (SIGTERM, then SIGKILL); closes the pipes
 *   handle:pid()         -> integer
 *   handle:close()       same as kill(); also run by __gc and __close */
void lg_lapi_inject_proc(lua_State *L);

/* Forgets a pending read_line of `co` (it will not be resumed). */
void lg_lapi_proc_cancel(lua_State *co);

#endif
