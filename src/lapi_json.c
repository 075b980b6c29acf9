/* lapi_json.c -- lg.json: JSON that keeps integers integers.
 * SPDX-License-Identifier: MIT
 *
 * Decoding goes through lua-cjson's safe decoder (linked statically), then integral numbers
 * within +-2^53 are turned into Lua integers, so `{"n": 3}` gives math.type(n) == "integer".
 * Encoding is our own: lua-cjson 2.1.0 prints numbers with "%.14g" (a microsecond timestamp
 * becomes 1.7641800000000e+15) and escapes "/"; here integers print exactly, floats
 * round-trip, and "/" stays as is. Both functions return nil, err on bad input (the "safe"
 * behaviour); only a wrong argument type raises. */
#include "common.h"
#include "lapi.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int luaopen_cjson_safe(lua_State *L);

#define JSON_MAX_DEPTH 128
#define MAX_SAFE_INT   9007199254740992.0 /* 2^53 */

/* upvalues of encode/decode */
enum { UV_DECODE = 1, UV_NULL, UV_ARRAY_MT, UV_EMPTY_ARRAY, UV_BUF };

/* ---- Decoding ---- */

static void integerize(lua_State *L, int idx, int depth)
{
    if (depth > 1100) /* cjson's own limit is 1000 */
        return;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);            /* ... nil */
    while (lua_next(L, idx)) { /* ... k v */
        int t = lua_type(L, -1);
        if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number d = lua_tonumber(L, -1);
            if (d == floor(d) && fabs(d) <= MAX_SAFE_INT) {
                lua_pushvalue(L, -2); /* ... k v k */
                lua_pushinteger(L, (lua_Integer)d);
                lua_rawset(L, idx); /* ... k v (replacing a value is allowed) */
            }
        } else if (t == LUA_TTABLE) {
            integerize(L, -1, depth + 1);
        }
        lua_pop(L, 1); /* ... k */
    }
}

static int json_decode(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_pushvalue(L, lua_upvalueindex(UV_DECODE)); /* s decode */
    lua_pushvalue(L, 1);                           /* s decode s */
    lua_call(L, 1, 2);                             /* s v err */
    if (lua_isnil(L, -2) && !lua_isnil(L, -1))
        return 2;  /* nil, err */
    lua_pop(L, 1); /* s v */
    if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
        lua_Number d = lua_tonumber(L, -1);
        if (d == floor(d) && fabs(d) <= MAX_SAFE_INT) {
            lua_pop(L, 1);
            lua_pushinteger(L, (lua_Integer)d);
        }
    } else if (lua_type(L, -1) == LUA_TTABLE) {
        integerize(L, -1, 0);
    }
    return 1;
}

/* ---- Encoding ---- */

typedef struct {
    char *p;
    size_t len, cap;
} jbuf_t;

static int jbuf_gc(lua_State *L)
{
    jbuf_t *b = lua_touserdata(L, 1);
    free(b->p);
    b->p = NULL;
    return 0;
}

static void jb_grow(jbuf_t *b, size_t n)
{
    if (b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    b->p = lg_xrealloc(b->p, cap);
    b->cap = cap;
}

static void jb_add(jbuf_t *b, const char *s, size_t n)
{
    jb_grow(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void jb_addc(jbuf_t *b, char c)
{
    jb_grow(b, 1);
    b->p[b->len++] = c;
}

static void jb_string(jbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    jb_grow(b, n + 2);
    jb_addc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            jb_add(b, "\\\"", 2);
            break;
        case '\\':
            jb_add(b, "\\\\", 2);
            break;
        case '\n':
            jb_add(b, "\\n", 2);
            break;
        case '\r':
            jb_add(b, "\\r", 2);
            break;
        case '\t':
            jb_add(b, "\\t", 2);
            break;
        case '\b':
            jb_add(b, "\\b", 2);
            break;
        case '\f':
            jb_add(b, "\\f", 2);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                jb_add(b, u, 6);
            } else {
                jb_addc(b, (char)c);
            }
        }
    }
    jb_addc(b, '"');
}

/* Returns NULL on success or a static error message. */
static const char *encode_value(lua_State *L, jbuf_t *b, int idx, int depth);

static const char *encode_number(lua_State *L, jbuf_t *b, int idx)
{
    char tmp[64];
    int n;
    if (lua_isinteger(L, idx)) {
        n = snprintf(tmp, sizeof(tmp), "%lld", (long long)lua_tointeger(L, idx));
    } else {
        double d = lua_tonumber(L, idx);
        if (isnan(d) || isinf(d))
            return "cannot encode NaN or infinity";
        if (d == floor(d) && fabs(d) < 1e15) {
            n = snprintf(tmp, sizeof(tmp), "%.0f", d);
        } else {
            n = snprintf(tmp, sizeof(tmp), "%.14g", d);
            if (strtod(tmp, NULL) != d)
                n = snprintf(tmp, sizeof(tmp), "%.17g", d);
        }
    }
    jb_add(b, tmp, (size_t)n);
    return NULL;
}

/* Array when every key is a positive integer and they are exactly 1..n (n > 0), or when the
 * table carries lg.json.array_mt. Returns n, or -1 for an object. */
static lua_Integer array_len(lua_State *L, int idx)
{
    if (lua_getmetatable(L, idx)) { /* ... mt */
        int is_arr = lua_rawequal(L, -1, lua_upvalueindex(UV_ARRAY_MT));
        lua_pop(L, 1);
        if (is_arr)
            return (lua_Integer)lua_rawlen(L, idx);
    }
    lua_Integer count = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) { /* ... k v */
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return -1;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k > max)
            max = k;
        count++;
    }
    return count > 0 && count == max ? count : -1;
}

static const char *encode_table(lua_State *L, jbuf_t *b, int idx, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return "nesting too deep (or a cycle)";
    if (!lua_checkstack(L, 6))
        return "nesting too deep";
    lua_Integer n = array_len(L, idx);
    const char *err;
    if (n >= 0) {
        jb_addc(b, '[');
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1)
                jb_addc(b, ',');
            lua_rawgeti(L, idx, i);
            err = encode_value(L, b, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (err)
                return err;
        }
        jb_addc(b, ']');
        return NULL;
    }
    jb_addc(b, '{');
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) { /* ... k v */
        if (!first)
            jb_addc(b, ',');
        first = 0;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            jb_string(b, k, kl);
        } else if (kt == LUA_TNUMBER) {
            jb_addc(b, '"');
            err = encode_number(L, b, -2);
            if (err) {
                lua_pop(L, 2);
                return err;
            }
            jb_addc(b, '"');
        } else {
            lua_pop(L, 2);
            return "cannot encode a table key that is not a string or number";
        }
        jb_addc(b, ':');
        err = encode_value(L, b, lua_gettop(L), depth + 1);
        lua_pop(L, 1); /* ... k */
        if (err) {
            lua_pop(L, 1);
            return err;
        }
    }
    jb_addc(b, '}');
    return NULL;
}

static const char *encode_value(lua_State *L, jbuf_t *b, int idx, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TNONE:
        jb_add(b, "null", 4);
        return NULL;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            jb_add(b, "true", 4);
        else
            jb_add(b, "false", 5);
        return NULL;
    case LUA_TNUMBER:
        return encode_number(L, b, idx);
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        jb_string(b, s, n);
        return NULL;
    }
    case LUA_TTABLE:
        return encode_table(L, b, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (lua_rawequal(L, idx, lua_upvalueindex(UV_NULL))) {
            jb_add(b, "null", 4);
            return NULL;
        }
        if (lua_rawequal(L, idx, lua_upvalueindex(UV_EMPTY_ARRAY))) {
            jb_add(b, "[]", 2);
            return NULL;
        }
        return "cannot encode a userdata";
    default:
        return "cannot encode a function, userdata or thread";
    }
}

static int json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    jbuf_t *b = lua_touserdata(L, lua_upvalueindex(UV_BUF));
    b->len = 0;
    const char *err = encode_value(L, b, 1, 0);
    if (err) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, b->p, b->len);
    if (b->cap > 64 * 1024) { /* do not keep a huge buffer around */
        free(b->p);
        b->p = NULL;
        b->len = b->cap = 0;
    }
    return 1;
}

void lg_lapi_inject_json(lua_State *L)
{
    lua_createtable(L, 0, 6);                /* lg json */
    luaopen_cjson_safe(L);                   /* lg json cjson */
    lua_getfield(L, -1, "decode_max_depth"); /* keep nesting bounded (and small) */
    lua_pushinteger(L, 200);
    lua_call(L, 1, 0);
    lua_getfield(L, -1, "decode"); /* lg json cjson decode */
    lua_getfield(L, -2, "null");   /* lg json cjson decode null */
    lua_pushvalue(L, -1);
    lua_setfield(L, -5, "null");
    lua_newtable(L); /* ... decode null array_mt */
    lua_pushliteral(L, "lunagate.json.array");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_setfield(L, -6, "array_mt");
    static char empty_array_tag;
    lua_pushlightuserdata(L, &empty_array_tag); /* ... decode null array_mt ea */
    lua_pushvalue(L, -1);
    lua_setfield(L, -7, "empty_array");
    jbuf_t *b = lua_newuserdatauv(L, sizeof(*b), 0); /* ... decode null array_mt ea buf */
    memset(b, 0, sizeof(*b));
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, jbuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    for (int i = 0; i < 5; i++)
        lua_pushvalue(L, -5);            /* ... (5 upvalues) x2 */
    lua_pushcclosure(L, json_encode, 5); /* ... 5 upvalues, encode */
    lua_setfield(L, -8, "encode");
    lua_pushcclosure(L, json_decode, 5); /* lg json cjson decode_closure */
    lua_setfield(L, -3, "decode");       /* lg json cjson */
    lua_pop(L, 1);                       /* lg json */
    lua_setfield(L, -2, "json");         /* lg */
}
