/* lapi_request.c -- lg.request: the client request as plugins see and change it.
 * SPDX-License-Identifier: MIT
 *
 * Reads go to the parsed head in place; changes are recorded on the request (deleted
 * slices, extra headers, a replacement path, method or body) and applied when the
 * upstream request is built, so nothing is copied unless a plugin asks. */
#include <event2/buffer.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hooks.h"
#include "lapi.h"

static lg_req_t *checkreq(lua_State *L, int phases, const char *fname)
{
    lg_lapi_check_phase(L, phases, fname);
    lg_req_t *r = lg_lapi_current_req(L);
    if (!r)
        luaL_error(L, "%s: no request in progress", fname);
    return r;
}

static int get_method(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_REQUEST, "get_method");
    lua_pushstring(L, r->up_method ? r->up_method : http_method_str(r->method));
    return 1;
}

static int get_path(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_REQUEST, "get_path");
    if (r->up_path) {
        const char *q = strchr(r->up_path, '?');
        lua_pushlstring(L, r->up_path, q ? (size_t)(q - r->up_path) : strlen(r->up_path));
    } else {
        lua_pushlstring(L, r->path, r->path_len);
    }
    return 1;
}

static int get_query(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_REQUEST, "get_query");
    if (r->up_path) {
        const char *q = strchr(r->up_path, '?');
        lua_pushstring(L, q ? q + 1 : "");
    } else {
        lua_pushlstring(L, r->query ? r->query : "", r->query_len);
    }
    return 1;
}

static int extra_find(lg_kv_t *kv, size_t n, const char *name, size_t nlen)
{
    for (size_t i = 0; i < n; i++)
        if (kv[i].nlen == nlen && strncasecmp(kv[i].name, name, nlen) == 0)
            return (int)i;
    return -1;
}

static int get_header(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_REQUEST, "get_header");
    size_t nlen, vlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    int i = extra_find(r->extra, r->nextra, name, nlen);
    if (i >= 0) {
        lua_pushlstring(L, r->extra[i].value, r->extra[i].vlen);
        return 1;
    }
    for (size_t k = 0; k < r->nhdrs; k++) {
        lg_hslice_t *h = &r->hdrs[k];
        if (!h->deleted && h->nlen == nlen && strncasecmp(r->head + h->noff, name, nlen) == 0) {
            lua_pushlstring(L, r->head + h->voff, h->vlen);
            return 1;
        }
    }
    (void)vlen;
    lua_pushnil(L);
    return 1;
}

/* Pushes a table lowercase name -> value of `hdrs` (repeats joined with ", ") plus extras. */
void lg_lapi_push_headers(lua_State *L, const char *base, lg_hslice_t *hdrs, size_t n,
                          lg_kv_t *extra, size_t nextra)
{
    char name[256];
    lua_createtable(L, 0, (int)(n + nextra));
    for (size_t k = 0; k < n; k++) {
        lg_hslice_t *h = &hdrs[k];
        if (h->deleted || h->nlen >= sizeof(name))
            continue;
        for (uint32_t j = 0; j < h->nlen; j++) {
            char ch = base[h->noff + j];
            name[j] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        lua_pushlstring(L, name, h->nlen); /* t name */
        lua_pushvalue(L, -1);              /* t name name */
        lua_rawget(L, -3);                 /* t name old */
        if (lua_isstring(L, -1)) {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, base + h->voff, h->vlen);
            lua_concat(L, 3); /* t name joined */
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, base + h->voff, h->vlen); /* t name value */
        }
        lua_rawset(L, -3); /* t */
    }
    for (size_t k = 0; k < nextra; k++) {
        size_t l = extra[k].nlen < sizeof(name) ? extra[k].nlen : sizeof(name) - 1;
        for (size_t j = 0; j < l; j++) {
            char ch = extra[k].name[j];
            name[j] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        lua_pushlstring(L, name, l);
        lua_pushlstring(L, extra[k].value, extra[k].vlen);
        lua_rawset(L, -3);
    }
}

static int get_headers(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_REQUEST, "get_headers");
    lg_lapi_push_headers(L, r->head, r->hdrs, r->nhdrs, r->extra, r->nextra);
    return 1;
}

/* Sets (value) or clears (value NULL) a header in a head + extras pair. */
void lg_lapi_header_change(lg_hslice_t *hdrs, size_t n, const char *base, lg_kv_t **extra,
                           size_t *nextra, const char *name, size_t nlen, const char *value,
                           size_t vlen)
{
    for (size_t k = 0; k < n; k++) {
        lg_hslice_t *h = &hdrs[k];
        if (h->nlen == nlen && strncasecmp(base + h->noff, name, nlen) == 0)
            h->deleted = 1;
    }
    int i = extra_find(*extra, *nextra, name, nlen);
    if (i >= 0 && !value) {
        free((*extra)[i].name), free((*extra)[i].value);
        (*extra)[i] = (*extra)[--*nextra];
        return;
    }
    if (!value)
        return;
    if (i < 0) {
        *extra = lg_xrealloc(*extra, (*nextra + 1) * sizeof(lg_kv_t));
        i = (int)(*nextra)++;
        (*extra)[i].name = lg_xstrndup(name, nlen);
        (*extra)[i].nlen = nlen;
    } else {
        free((*extra)[i].value);
    }
    (*extra)[i].value = lg_xstrndup(value, vlen);
    (*extra)[i].vlen = vlen;
}

static int valid_header(const char *s, size_t n, int value)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n' || c == 0 || (!value && (c == ':' || c <= ' ')))
            return 0;
    }
    return value || n > 0;
}

static int set_header(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS, "set_header");
    size_t nlen, vlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    const char *value = luaL_checklstring(L, 2, &vlen);
    luaL_argcheck(L, valid_header(name, nlen, 0), 1, "invalid header name");
    luaL_argcheck(L, valid_header(value, vlen, 1), 2, "invalid header value");
    lg_lapi_header_change(r->hdrs, r->nhdrs, r->head, &r->extra, &r->nextra, name, nlen, value,
                          vlen);
    return 0;
}

static int clear_header(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS, "clear_header");
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    lg_lapi_header_change(r->hdrs, r->nhdrs, r->head, &r->extra, &r->nextra, name, nlen, NULL, 0);
    return 0;
}

static int set_path(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS, "set_path");
    size_t len;
    const char *p = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len > 0 && p[0] == '/' && valid_header(p, len, 1) && !memchr(p, ' ', len), 1,
                  "path must start with '/' and contain no spaces or line breaks");
    if (r->up_static) { /* the plan's strings: own copies from now on */
        r->up_host = r->up_host ? lg_xstrdup(r->up_host) : NULL;
        r->up_static = 0;
    } else {
        free(r->up_path);
    }
    if (!memchr(p, '?', len) && r->query) {
        /* a new path without a query keeps the request's query */
        r->up_path = lg_xmalloc(len + r->query_len + 2);
        memcpy(r->up_path, p, len);
        r->up_path[len] = '?';
        memcpy(r->up_path + len + 1, r->query, r->query_len);
        r->up_path[len + 1 + r->query_len] = '\0';
    } else {
        r->up_path = lg_xstrndup(p, len);
    }
    return 0;
}

static int set_method(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS, "set_method");
    size_t len;
    const char *m = luaL_checklstring(L, 1, &len);
    for (size_t i = 0; i < len; i++)
        luaL_argcheck(L, m[i] >= 'A' && m[i] <= 'Z', 1, "method must be upper-case letters");
    luaL_argcheck(L, len > 0 && len < 20, 1, "method must be upper-case letters");
    free(r->up_method);
    r->up_method = lg_xstrndup(m, len);
    return 0;
}

static int get_body(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_REQUEST, "get_body");
    if (!r->body || evbuffer_get_length(r->body) == 0) {
        lua_pushnil(L);
        return 1;
    }
    size_t n = evbuffer_get_length(r->body);
    lua_pushlstring(L, (const char *)evbuffer_pullup(r->body, -1), n);
    return 1;
}

static int set_body(lua_State *L)
{
    lg_req_t *r = checkreq(L, LG_PHASE_ACCESS, "set_body");
    size_t len;
    const char *b = luaL_optlstring(L, 1, "", &len);
    if (!r->body)
        r->body = evbuffer_new();
    evbuffer_drain(r->body, evbuffer_get_length(r->body));
    evbuffer_add(r->body, b, len);
    return 0;
}

/* get_json / set_json are thin Lua over get_body / set_body and lg.json. */
static const char json_helpers[] =
    "local req = ...\n"
    "function req.get_json()\n"
    "  local b = req.get_body()\n"
    "  if not b then return nil, 'no body' end\n"
    "  return require('lunagate').json.decode(b)\n"
    "end\n"
    "function req.set_json(t)\n"
    "  if type(t) ~= 'table' then error('set_json: table expected', 2) end\n"
    "  local s, err = require('lunagate').json.encode(t)\n"
    "  if not s then return nil, err end\n"
    "  req.set_body(s)\n"
    "  return true\n"
    "end\n";

void lg_lapi_inject_request(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"get_method", get_method},     {"get_path", get_path},       {"get_query", get_query},
        {"get_header", get_header},     {"get_headers", get_headers}, {"set_header", set_header},
        {"clear_header", clear_header}, {"set_path", set_path},       {"set_method", set_method},
        {"get_body", get_body},         {"set_body", set_body},       {NULL, NULL}};
    luaL_newlib(L, fns); /* lg req */
    if (luaL_loadbuffer(L, json_helpers, sizeof(json_helpers) - 1, "=lapi_request") == LUA_OK) {
        lua_pushvalue(L, -2); /* lg req fn req */
        lua_call(L, 1, 0);    /* lg req */
    } else {
        lua_pop(L, 1);
    }
    lua_setfield(L, -2, "request"); /* lg */
}
