/* runtime.h -- process-wide services wired together: home folder, Lua states for the
 * main thread, the log writer, the metrics registry and the span exporter.
 * SPDX-License-Identifier: MIT
 *
 * Threading: lg_runtime_* run on the main thread, except lg_runtime_metrics() (main
 * thread's event loop) and what the header of each service says. */
#ifndef LG_RUNTIME_H
#define LG_RUNTIME_H

#include <lua.h>

#include "common.h"
#include "conf.h"

struct event_base;
struct evbuffer;

/* Finds lua/ and plugins/: $LUNAGATE_HOME, else the build's source tree, else the
 * folder above the executable, else /usr/share/lunagate. Exports LUNAGATE_HOME. */
void lg_runtime_set_home(const char *argv0);
const char *lg_runtime_home(void);

/* A Lua state with the standard libraries, lua/ and plugins/ on package.path, and
 * cjson and lunagate.yaml preloaded. NULL with err on failure. */
lua_State *lg_runtime_new_state(lg_err_t *err);

/* Checks what only the runtime can (plugins, LLM backends) for a configuration whose
 * normalised table is at the top of L. */
int lg_runtime_check(lua_State *L, lg_conf_t *c, lg_err_t *err);

/* Starts the log writer, metrics and exporter for the first configuration. */
int lg_runtime_start(lua_State *L, lg_conf_t *c, int nworkers, lg_err_t *err);
void lg_runtime_reload_outcome(int ok);
const char *lg_runtime_metrics(const char *accept, struct evbuffer *out);
void lg_runtime_stop(void);

struct lg_worker;
struct lg_req;
struct lg_metrics;
/* A plugin failed on worker w (NULL: main thread). */
void lg_runtime_plugin_error(struct lg_worker *w, const char *plugin);
/* The log phase of a request: access log, metrics, spans. `rl` is hooks.c's state. */
void lg_runtime_log(struct lg_req *r, void *rl);
struct lg_metrics *lg_runtime_registry(void);
/* A client connection was accepted on `port` (downstream_connections_total). */
void lg_runtime_conn_accepted(struct lg_worker *w, int port, int tls);
/* Frees what the log phase keeps per worker (prepared metric label sets). */
void lg_runtime_worker_free(struct lg_worker *w);

#endif
