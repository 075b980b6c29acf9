/* lapi_response.c -- lg.response: status and headers of the response a client will get.
 * SPDX-License-Identifier: MIT */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <strings.h>

#include "hooks.h"
#include "lapi.h"
#include "luart.h"

void lg_lapi_push_headers(lua_State *L, const char *base, lg_hslice_t *hdrs, size_t n,
                          lg_kv_t *extra, size_t nextra);
void lg_lapi_header_change(lg_hslice_t *hdrs, size_t n, const char *base, lg_kv_t **extra,
                           size_t *nextra, const char *name, size_t nlen, const char *value,
                           size_t vlen);

static lg_req_t *checkreq(lua_State *L, int phases, const char *fname)
{
    lg_lapi_check_phase(L, phases, fname);
    lg_req_t *r = lg_lapi_current_req(L);
    if (!r)
        luaL_error(L, "%s: no request in progress", fname);
    return r;
}

static int get_status(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_REQUEST, "get_status");
    if (r->status)
        lua_pushinteger(L, r->status);
    else
        lua_pushnil(L);
    return 1;
}

static int set_status(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS | LG_PHASE_HEADER_FILTER, "set_status");
    lua_Integer s = luaL_checkinteger(L, 1);
    luaL_argcheck(L, s >= 100 && s <= 999, 1, "status must be 100-999");
    if (r->resp_head_sent)
        return luaL_error(L, "set_status: response head already sent");
    r->status = (int)s;
    r->status_text = NULL;
    r->status_override = (int)s;
    return 0;
}

static int get_header(lua_State *L)
{
    lg_req_t *r =
        checkreq(L, LG_PHASE_HEADER_FILTER | LG_PHASE_BODY_FILTER | LG_PHASE_LOG, "get_header");
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    for (size_t k = 0; k < r->nrextra; k++)
        if (r->rextra[k].nlen == nlen && strncasecmp(r->rextra[k].name, name, nlen) == 0) {
            lua_pushlstring(L, r->rextra[k].value, r->rextra[k].vlen);
            return 1;
        }
    for (size_t k = 0; k < r->nrhdrs; k++) {
        lg_hslice_t *h = &r->rhdrs[k];
        if (!h->deleted && h->nlen == nlen && strncasecmp(r->rhead + h->noff, name, nlen) == 0) {
            lua_pushlstring(L, r->rhead + h->voff, h->vlen);
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}

static int get_headers(lua_State *L)
{
    lg_req_t *r =
        checkreq(L, LG_PHASE_HEADER_FILTER | LG_PHASE_BODY_FILTER | LG_PHASE_LOG, "get_headers");
    lg_lapi_push_headers(L, r->rhead ? r->rhead : "", r->rhdrs, r->nrhdrs, r->rextra, r->nrextra);
    return 1;
}

static int set_header(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS | LG_PHASE_HEADER_FILTER, "set_header");
    size_t nlen, vlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    const char *value = luaL_checklstring(L, 2, &vlen);
    luaL_argcheck(L,
                  nlen > 0 && !memchr(name, '\n', nlen) && !memchr(name, '\r', nlen) &&
                      !memchr(name, ':', nlen),
                  1, "invalid header name");
    luaL_argcheck(L, !memchr(value, '\n', vlen) && !memchr(value, '\r', vlen), 2,
                  "invalid header value");
    if (r->resp_head_sent)
        return luaL_error(L, "set_header: response head already sent");
    lg_lapi_header_change(r->rhdrs, r->nrhdrs, r->rhead ? r->rhead : "", &r->rextra, &r->nrextra,
                          name, nlen, value, vlen);
    return 0;
}

static int clear_header(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS | LG_PHASE_HEADER_FILTER, "clear_header");
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    lg_lapi_header_change(r->rhdrs, r->nrhdrs, r->rhead ? r->rhead : "", &r->rextra, &r->nrextra,
                          name, nlen, NULL, 0);
    return 0;
}

void lg_lapi_inject_response(lua_State *L)
{
    static const luaL_Reg fns[] = {{"get_status", get_status},  {"set_status", set_status},
                                   {"get_header", get_header},  {"get_headers", get_headers},
                                   {"set_header", set_header},  {"clear_header", clear_header},
                                   {"exit", lg_luart_lua_exit}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "response");
}
