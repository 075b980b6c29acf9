/* lapi.h -- the `lunagate` Lua module: per-state context, phase checks, namespace injectors.
 * SPDX-License-Identifier: MIT
 *
 * Threading: a lua_State belongs to one worker thread; everything here is called on that
 * thread only. The only cross-thread objects are lg.shared dictionaries (lapi_shared.c),
 * which carry their own mutex.
 *
 * Each state carries an lg_lapi_ctx_t (stored in the state's LUA_EXTRASPACE, so coroutines
 * see it too) telling the API functions which phase is running, which plugin, and which
 * request. luart.c owns it; lapi tests install their own with lg_lapi_ctx_set(). */
#ifndef LG_LAPI_H
#define LG_LAPI_H

#include <lua.h>
#include <stddef.h>

/* Phase flags, combinable for lg_lapi_check_phase(). LG_PHASE_LOAD is "the plugin file is
 * being loaded" (module top level), before init_worker. */
enum {
    LG_PHASE_LOAD = 1 << 0,
    LG_PHASE_INIT_WORKER = 1 << 1,
    LG_PHASE_ACCESS = 1 << 2,
    LG_PHASE_HEADER_FILTER = 1 << 3,
    LG_PHASE_BODY_FILTER = 1 << 4,
    LG_PHASE_LOG = 1 << 5,
    LG_PHASE_REQUEST =
        LG_PHASE_ACCESS | LG_PHASE_HEADER_FILTER | LG_PHASE_BODY_FILTER | LG_PHASE_LOG,
    LG_PHASE_ANY = 0x3f,
};

typedef struct lg_lapi_ctx {
    int phase;             /* one LG_PHASE_* flag; 0 outside any phase */
    const char *plugin;    /* name of the running plugin, or NULL (borrowed, static while set) */
    void *req;             /* the proxy's request, opaque here; NULL outside request phases */
    int ctx_ref;           /* registry ref of the request's ctx table, or LUA_NOREF */
    int rec_ref;           /* registry ref of the request record table, or LUA_NOREF */
    unsigned long req_gen; /* bumps for every request; request-bound handles compare it */
    void *owner;           /* the lg_luart_t, or NULL in bare states (tests) */
} lg_lapi_ctx_t;

/* Installs `ctx` (borrowed; must outlive the state or be replaced) as the state's context.
 * Pass NULL to clear. */
void lg_lapi_ctx_set(lua_State *L, lg_lapi_ctx_t *ctx);
/* The state's context, or NULL when none was installed. */
lg_lapi_ctx_t *lg_lapi_ctx(lua_State *L);

/* Name of a single phase flag ("access", "log", ...; "init" for LG_PHASE_LOAD, "none" for 0). */
const char *lg_lapi_phase_name(int phase);

/* Raises "<fname>: not allowed in phase '<phase>'" unless the current phase is in `allowed`.
 * A state without a context counts as LG_PHASE_LOAD. For the namespace injectors. */
void lg_lapi_check_phase(lua_State *L, int allowed, const char *fname);

/* The proxy's current request (lg_lapi_ctx(L)->req), or NULL. */
void *lg_lapi_current_req(lua_State *L);

/* Pushes the current request's ctx table (creating it, and its registry ref, on first use);
 * pushes nil when no request is running. Pushes the record table likewise. */
void lg_lapi_push_ctx(lua_State *L);
void lg_lapi_push_rec(lua_State *L);

/* ---- Namespace injectors ----
 * Each expects the module table on top of the stack and sets lg.<ns> on it, leaving the stack
 * as it found it. */
void lg_lapi_inject_log(lua_State *L);
void lg_lapi_inject_time(lua_State *L);
void lg_lapi_inject_json(lua_State *L);
void lg_lapi_inject_crypto(lua_State *L);
void lg_lapi_inject_re(lua_State *L);
void lg_lapi_inject_shared(lua_State *L);

/* Namespaces written elsewhere (lapi_request.c, lapi_response.c, lapi_metrics.c), each
 * filling its table into the module on the stack. */
void lg_lapi_inject_request(lua_State *L);
void lg_lapi_inject_response(lua_State *L);
void lg_lapi_inject_metrics(lua_State *L);

/* Opens the `lunagate` module: pushes the module table. Use with
 * luaL_requiref(L, "lunagate", luaopen_lunagate, 0) or package.preload. Lua-implemented
 * namespaces (lg.schema from lua/lunagate/schema.lua) are attached by luart.c, not here. */
int luaopen_lunagate(lua_State *L);

/* ---- lg.shared (process-wide) ----
 * Dictionaries shared by all workers. Declared from config (`config.plugins.shared`): a
 * dictionary is created the first time its name is declared and kept (with its contents)
 * across reloads for the process lifetime; a redeclaration with another capacity resizes its
 * limits. Thread-safe. */
int lg_shared_declare(const char *name, size_t max_bytes, size_t max_entries);
/* Frees every dictionary. Only for tests and process exit: no state may still use them. */
void lg_shared_reset(void);

/* Registers every declared dictionary as lg.shared.<name> in this state's module table (which
 * must be on top of the stack). luart.c calls it after declaring the config's dictionaries. */
void lg_lapi_shared_bind(lua_State *L);

#endif
