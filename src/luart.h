/* luart.h -- Lua states, plugin loading and protected phase dispatch.
 * SPDX-License-Identifier: MIT
 *
 * Threading: one lg_luart_t per worker thread, used only by that thread, except the
 * reference count (lg_luart_ref/unref, atomic) and the error counters (atomic), which any
 * thread may touch. The main thread may also build a throw-away runtime to validate a config
 * (opts.skip_init_worker = 1).
 *
 * Reload: build a new runtime from the new config; new requests take the new one; each request
 * holds a reference (lg_luart_ref at start, lg_luart_unref after lg_luart_req_end), and the
 * owner drops its own reference when it switches: the last unref frees the old state.
 *
 * Every call into Lua runs under lua_pcall with a traceback handler, an instruction budget
 * (config.plugins.budget.instructions per phase call, shared by the phase's plugins; per call
 * for init_worker and lg_luart_pcall; counted once the call has run 10-20 ms, see luart_budget.h)
 * and the state's memory limit
 * (config.plugins.memoryLimit bytes). A failing plugin is logged once, by luart, as
 *     plugin=<name> phase=<phase>: <message> (traceback: ...)
 * counted, and reported to the caller as LG_ERR; the state stays usable. */
#ifndef LG_LUART_H
#define LG_LUART_H

#include "common.h"
#include "lapi.h"

#include <lua.h>
#include <stddef.h>

typedef struct lg_luart lg_luart_t;

/* Pushes the normalised config table onto L, or returns LG_ERR with `err` filled. Same shape
 * as lg_config_load() in config.h, which is what the proxy passes. */
typedef int lg_luart_config_fn(lua_State *L, const char *text, size_t len, const char *filename,
                               lg_err_t *err);

/* Called on the worker thread after each plugin failure (error, budget, memory), for the
 * agentgateway_lua_plugin_errors_total{plugin} counter. `plugin` is valid during the call. */
typedef void lg_luart_error_cb(const char *plugin, const char *phase, void *arg);

typedef struct lg_luart_opts {
    const char *config_text; /* borrowed; the YAML text given to load_config */
    size_t config_len;
    const char *config_file;         /* borrowed; for messages ("config.yaml") */
    lg_luart_config_fn *load_config; /* NULL: lg_config_load (config.h); tests pass their own */
    int skip_init_worker;            /* 1: load and check only (main-thread validation) */
    int worker_id;                   /* exposed to Lua as lg.worker_id */
    lg_luart_error_cb *on_error;     /* optional */
    void *on_error_arg;
} lg_luart_opts_t;

/* Defaults, used when the config leaves them out. */
#define LG_LUART_DEFAULT_BUDGET 10000000     /* VM instructions per phase call */
#define LG_LUART_DEFAULT_MEMORY (128u << 20) /* bytes per state */

/* Creates a worker's Lua state: standard libs, package.path rooted at LUNAGATE_HOME (env) or
 * LG_HOME (build-time), cjson and lunagate preloaded, lg.schema attached, the config loaded
 * through opts->load_config, shared dictionaries declared, plugins found, checked, validated
 * and ordered (lua/lunagate/pipeline.lua), then init_worker run for each plugin in use.
 * Returns NULL and fills `err` on any failure; plugin problems name the plugin file and the
 * config path. The result holds one reference (see lg_luart_unref). */
lg_luart_t *lg_luart_new(const lg_luart_opts_t *opts, lg_err_t *err);

/* Frees the runtime now, whatever its reference count; NULL is a no-op. */
void lg_luart_free(lg_luart_t *rt);

/* Reference counting for reload: ref returns rt; unref frees it when the count reaches 0. */
lg_luart_t *lg_luart_ref(lg_luart_t *rt);
void lg_luart_unref(lg_luart_t *rt);

/* The state, for the proxy's own Lua calls (on the owner thread only). */
lua_State *lg_luart_state(lg_luart_t *rt);

/* Pushes the normalised config table this runtime was built from (owner thread only). */
void lg_luart_push_config(lg_luart_t *rt);

/* The runtime owning `L` (or one of its coroutines), or NULL for a state not made here. */
lg_luart_t *lg_luart_from_state(lua_State *L);

/* Chain id for a route key, or -1 when no plugin applies (no global and no route plugins).
 * A key not in the config gets the global chain (or -1). Linear in the number of routes:
 * resolve once per route at setup and keep the id. */
int lg_luart_chain(lg_luart_t *rt, const char *route_key);

/* 1 when some plugin of `chain` implements `phase` (one LG_PHASE_* flag), else 0. */
int lg_luart_chain_has(lg_luart_t *rt, int chain, int phase);

/* ---- Per request ----
 * The proxy embeds one lg_luart_req_t per request, initialises it with lg_luart_req_init and
 * releases it with lg_luart_req_end (after the log phase, exactly once). All fields are
 * owned by luart except `req`. The ctx table is created lazily; the record table (rec) is
 * either created by luart on the first lg.log.set_field, or set by the proxy to a registry
 * ref of its own record table, which luart then unrefs in lg_luart_req_end. */
typedef struct lg_luart_req {
    void *req;   /* the proxy's request (borrowed, opaque): lg_luart_current() returns it */
    int ctx_ref; /* registry ref of ctx, LUA_NOREF until first use */
    int rec_ref; /* registry ref of the record table, LUA_NOREF until first use */
    int out_ref; /* body_filter replacement kept alive until the next call */
} lg_luart_req_t;

void lg_luart_req_init(lg_luart_req_t *lr, void *req);
void lg_luart_req_end(lg_luart_t *rt, lg_luart_req_t *lr);

/* A direct answer from a plugin (access phase). Owned by the struct: release with
 * lg_luart_exit_dispose. headers holds nheaders (name, value) pairs: headers[2i], [2i+1]. */
typedef struct lg_luart_exit {
    int status;
    char *body;
    size_t len;
    size_t nheaders;
    char **headers;
} lg_luart_exit_t;

void lg_luart_exit_dispose(lg_luart_exit_t *ex);

/* Runs the access phase of `chain`. Returns LG_OK to continue to the upstream; LG_DECLINED
 * when a plugin answered (`return status, body [, headers]` or lg.response.exit): `ex` is
 * filled (a table body is JSON-encoded with content-type application/json); LG_ERR when a
 * plugin failed (already logged and counted): answer 500. `ex` is zeroed on entry. */
int lg_luart_access(lg_luart_t *rt, int chain, lg_luart_req_t *lr, lg_luart_exit_t *ex);

/* Runs header_filter. LG_OK or LG_ERR (answer 500 if nothing was sent yet). */
int lg_luart_header_filter(lg_luart_t *rt, int chain, lg_luart_req_t *lr);

/* Runs body_filter over one chunk (one whole SSE event for text/event-stream). On LG_OK:
 * *out == chunk when unchanged; or a replacement (owned by luart, valid until the next
 * body_filter call or lg_luart_req_end); or NULL when the chunk is dropped (*outlen 0).
 * A plugin returning nothing leaves the chunk unchanged; returning nil or "" drops it.
 * LG_ERR: a plugin failed; close the connection. */
int lg_luart_body_filter(lg_luart_t *rt, int chain, lg_luart_req_t *lr, const char *chunk,
                         size_t len, int eof, const char **out, size_t *outlen);

/* header_filter, then body_filter over the whole body (eof) in one protected entry, for a
 * response that is all here: the two calls above at the cost of one. Results as
 * lg_luart_body_filter; on LG_ERR *failed says which phase failed (LG_PHASE_HEADER_FILTER:
 * answer 500; LG_PHASE_BODY_FILTER: send no body and close). */
int lg_luart_header_body(lg_luart_t *rt, int chain, lg_luart_req_t *lr, const char *body,
                         size_t len, const char **out, size_t *outlen, int *failed);

/* Runs the log phase; failures are logged and counted, never returned. */
void lg_luart_log(lg_luart_t *rt, int chain, lg_luart_req_t *lr);

/* For the proxy's own Lua calls: expects function and nargs arguments on the stack; calls it
 * with a traceback handler and the instruction budget. On LG_OK the nresults results are on
 * the stack; on LG_ERR nothing is left and `err` reads "<what>: <message>" (not logged). */
int lg_luart_pcall(lg_luart_t *rt, int nargs, int nresults, const char *what, lg_err_t *err);

/* The same for the gateway's own Lua code (providers, telemetry), which runs no user plugin:
 * no instruction budget (nor the watch hook on coroutines it makes). The memory limit and
 * the traceback still apply. */
int lg_luart_pcall_trusted(lg_luart_t *rt, int nargs, int nresults, const char *what,
                           lg_err_t *err);

/* The proxy's request of the phase call running on L (lr->req), or NULL. */
void *lg_luart_current(lua_State *L);

/* lua_CFunction for lg.response.exit(status [, body [, headers]]) (access phase): records the
 * answer and unwinds the running plugin; lg_luart_access then returns LG_DECLINED. The
 * response namespace (lapi_response.c) registers it. */
int lg_luart_lua_exit(lua_State *L);

/* Plugin error counters since this runtime was built: for i = 0.. while it returns 1, gives
 * the plugin name (valid while rt lives) and its error count. Any thread. */
int lg_luart_plugin_errors(lg_luart_t *rt, int i, const char **name, unsigned long *count);

/* Current Lua heap size of the state, in bytes. */
size_t lg_luart_memory(lg_luart_t *rt);

#endif
