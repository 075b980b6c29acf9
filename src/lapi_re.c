/* lapi_re.c -- lg.re: PCRE2 regular expressions with a per-state compiled-pattern cache.
 * SPDX-License-Identifier: MIT
 *
 * Offsets given to and returned by these functions are 1-based and inclusive, like
 * string.find. A bad pattern or flag string is a runtime failure (patterns often come from
 * config): functions return nil, err. Every match runs under a PCRE2 match limit so a
 * pathological pattern cannot stall the worker. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "common.h"
#include "lapi.h"

#include <lauxlib.h>
#include <pcre2.h>
#include <stdio.h>
#include <string.h>

#define RE_CACHE_MAX   256
#define RE_MATCH_LIMIT 1000000
#define RE_MT          "lunagate.re"

typedef struct {
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    uint32_t ncap;
} re_t;

static int re_gc(lua_State *L)
{
    re_t *re = luaL_checkudata(L, 1, RE_MT);
    pcre2_match_data_free(re->md);
    pcre2_match_context_free(re->mctx);
    pcre2_code_free(re->code);
    re->md = NULL;
    re->mctx = NULL;
    re->code = NULL;
    return 0;
}

/* Compiles (or fetches from the cache) the pattern at `pidx` with flags at `fidx`. Returns
 * the re_t, or NULL with an error message pushed. */
static re_t *re_get(lua_State *L, int pidx, int fidx)
{
    size_t plen, flen = 0;
    const char *pat = luaL_checklstring(L, pidx, &plen);
    const char *flags = luaL_optlstring(L, fidx, "", &flen);
    uint32_t opts = 0;
    int jit = 0;
    for (size_t i = 0; i < flen; i++) {
        switch (flags[i]) {
        case 'i':
            opts |= PCRE2_CASELESS;
            break;
        case 'm':
            opts |= PCRE2_MULTILINE;
            break;
        case 's':
            opts |= PCRE2_DOTALL;
            break;
        case 'x':
            opts |= PCRE2_EXTENDED;
            break;
        case 'u':
            opts |= PCRE2_UTF | PCRE2_UCP;
            break;
        case 'j':
            jit = 1;
            break;
        default:
            lua_pushfstring(L, "unknown regex flag '%c'", flags[i]);
            return NULL;
        }
    }
    /* cache key: flags \0 pattern */
    lua_pushvalue(L, lua_upvalueindex(1)); /* ... cache */
    lua_pushlstring(L, flags, flen);
    lua_pushlstring(L, "", 1);
    lua_pushvalue(L, pidx);
    lua_concat(L, 3); /* ... cache key */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TUSERDATA) { /* ... cache key re */
        re_t *re = lua_touserdata(L, -1);
        lua_replace(L, -3); /* ... re key */
        lua_pop(L, 1);      /* ... re (kept on the stack: alive) */
        return re;
    }
    lua_pop(L, 1); /* ... cache key */
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pat, plen, opts, &errcode, &erroff, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        lua_pop(L, 2);
        lua_pushfstring(L, "bad regex at offset %d: %s", (int)erroff, (const char *)msg);
        return NULL;
    }
    if (jit)
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* failure just means no JIT */
    re_t *re = lua_newuserdatauv(L, sizeof(*re), 0); /* ... cache key re */
    memset(re, 0, sizeof(*re));
    luaL_setmetatable(L, RE_MT);
    re->code = code;
    re->md = pcre2_match_data_create_from_pattern(code, NULL);
    re->mctx = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(re->mctx, RE_MATCH_LIMIT);
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &re->ncap);
    /* bounded cache: when full, start afresh (entries in use stay alive on their stacks) */
    lua_getfield(L, -3, "n"); /* ... cache key re n */
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n >= RE_CACHE_MAX) {
        /* the four functions share this table, so empty it in place */
        lua_pushnil(L);
        while (lua_next(L, -4)) { /* ... cache key re k v */
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -6); /* ... cache key re k */
        }
        n = 0;
    }
    lua_pushinteger(L, n + 1);
    lua_setfield(L, -4, "n");
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_rawset(L, -5); /* ... cache key re */
    lua_replace(L, -3);
    lua_pop(L, 1); /* ... re */
    return re;
}

/* Runs a match at byte offset `start`. Returns >0 on match, 0 on no match, <0 with an error
 * message pushed. */
static int re_exec(lua_State *L, re_t *re, const char *s, size_t len, size_t start, uint32_t opts)
{
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, start, opts, re->md, re->mctx);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        lua_pushfstring(L, "regex match failed: %s", (const char *)msg);
        return -1;
    }
    return rc;
}

static size_t opt_init(lua_State *L, int idx, size_t len)
{
    lua_Integer init = luaL_optinteger(L, idx, 1);
    if (init < 0)
        init = (lua_Integer)len + init + 1;
    if (init < 1)
        init = 1;
    return (size_t)init - 1;
}

static int fail(lua_State *L)
{
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* Pushes the capture table: [0] whole match, [1..n] groups (false when unset), name = group. */
static void push_captures(lua_State *L, re_t *re, const char *s)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
    lua_createtable(L, (int)re->ncap, 1);
    for (uint32_t i = 0; i <= re->ncap; i++) {
        if (ov[2 * i] == PCRE2_UNSET)
            lua_pushboolean(L, 0);
        else
            lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
        lua_rawseti(L, -2, (lua_Integer)i);
    }
    uint32_t namecount = 0, entsize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMECOUNT, &namecount);
    if (namecount == 0)
        return;
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMEENTRYSIZE, &entsize);
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMETABLE, &table);
    for (uint32_t i = 0; i < namecount; i++) {
        PCRE2_SPTR e = table + i * entsize;
        int g = (e[0] << 8) | e[1];
        lua_rawgeti(L, -1, g);
        lua_setfield(L, -2, (const char *)e + 2);
    }
}

/* lg.re.match(subject, pattern [, flags [, init]]) -> captures | nil | nil, err */
static int re_match(lua_State *L)
{
    lua_settop(L, 4); /* fixed argument slots: the compiled pattern is pushed above them */
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    re_t *re = re_get(L, 2, 3);
    if (!re)
        return fail(L);
    size_t start = opt_init(L, 4, len);
    if (start > len)
        return 0;
    int rc = re_exec(L, re, s, len, start, 0);
    if (rc < 0)
        return fail(L);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    push_captures(L, re, s);
    return 1;
}

/* lg.re.find(subject, pattern [, flags [, init]]) -> from, to | nil | nil, err */
static int re_find(lua_State *L)
{
    lua_settop(L, 4); /* fixed argument slots: the compiled pattern is pushed above them */
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    re_t *re = re_get(L, 2, 3);
    if (!re)
        return fail(L);
    size_t start = opt_init(L, 4, len);
    if (start > len)
        return 0;
    int rc = re_exec(L, re, s, len, start, 0);
    if (rc < 0)
        return fail(L);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
    lua_pushinteger(L, (lua_Integer)ov[0] + 1);
    lua_pushinteger(L, (lua_Integer)ov[1]);
    return 2;
}

/* Appends a template replacement: $0..$9, ${name} or ${N}, $$ for a dollar. */
static int add_template(lua_State *L, luaL_Buffer *b, re_t *re, const char *s, const char *t,
                        size_t tl)
{
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
    for (size_t i = 0; i < tl; i++) {
        if (t[i] != '$' || i + 1 == tl) {
            luaL_addchar(b, t[i]);
            continue;
        }
        char c = t[++i];
        long g = -1;
        if (c == '$') {
            luaL_addchar(b, '$');
            continue;
        } else if (c >= '0' && c <= '9') {
            g = c - '0';
        } else if (c == '{') {
            const char *end = memchr(t + i, '}', tl - i);
            if (!end)
                return luaL_error(L, "gsub: unterminated ${ in replacement");
            char name[64];
            size_t nl = (size_t)(end - (t + i + 1));
            if (nl == 0 || nl >= sizeof(name))
                return luaL_error(L, "gsub: bad group name in replacement");
            memcpy(name, t + i + 1, nl);
            name[nl] = 0;
            char *ep;
            g = strtol(name, &ep, 10);
            if (*ep) {
                int n = pcre2_substring_number_from_name(re->code, (PCRE2_SPTR)name);
                if (n < 0)
                    return luaL_error(L, "gsub: unknown group '%s' in replacement", name);
                g = n;
            }
            i = (size_t)(end - t);
        } else {
            luaL_addchar(b, '$');
            luaL_addchar(b, c);
            continue;
        }
        if (g < 0 || (uint32_t)g > re->ncap)
            return luaL_error(L, "gsub: group %d out of range in replacement", (int)g);
        if (ov[2 * g] != PCRE2_UNSET)
            luaL_addlstring(b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
    }
    return 0;
}

static size_t next_char(const char *s, size_t len, size_t pos, int utf)
{
    pos++;
    if (utf)
        while (pos < len && ((unsigned char)s[pos] & 0xc0) == 0x80)
            pos++;
    return pos;
}

/* lg.re.gsub(subject, pattern, repl [, flags]) -> new, n | nil, err.
 * `repl` is a template string ($1, ${name}) or a function(captures) -> string. */
static int re_gsub(lua_State *L)
{
    lua_settop(L, 4); /* fixed argument slots: the compiled pattern is pushed above them */
    size_t len, tl = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    int rt = lua_type(L, 3);
    luaL_argexpected(L, rt == LUA_TSTRING || rt == LUA_TFUNCTION, 3, "string or function");
    const char *t = rt == LUA_TSTRING ? lua_tolstring(L, 3, &tl) : NULL;
    re_t *re = re_get(L, 2, 4);
    if (!re)
        return fail(L);
    uint32_t copts = 0;
    pcre2_pattern_info(re->code, PCRE2_INFO_ALLOPTIONS, &copts);
    int utf = (copts & PCRE2_UTF) != 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t pos = 0, last = (size_t)-1;
    lua_Integer n = 0;
    while (pos <= len) {
        int rc = re_exec(L, re, s, len, pos, 0);
        if (rc < 0)
            return fail(L);
        if (rc == 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && ms == last) { /* empty match right after the previous one */
            if (ms >= len)
                break;
            size_t nx = next_char(s, len, ms, utf);
            luaL_addlstring(&b, s + pos, nx - pos);
            pos = nx;
            continue;
        }
        luaL_addlstring(&b, s + pos, ms - pos);
        n++;
        if (t) {
            add_template(L, &b, re, s, t, tl);
        } else {
            lua_pushvalue(L, 3);
            push_captures(L, re, s);
            lua_call(L, 1, 1);
            size_t rl;
            const char *r = lua_tolstring(L, -1, &rl);
            if (!r)
                return luaL_error(L, "gsub: replacement function must return a string");
            luaL_addvalue(&b); /* ms/me were copied: the callback may reuse this pattern */
        }
        last = me;
        if (ms == me) {
            if (ms >= len)
                break;
            size_t nx = next_char(s, len, ms, utf);
            luaL_addlstring(&b, s + ms, nx - ms);
            pos = nx;
        } else {
            pos = me;
        }
    }
    if (pos < len)
        luaL_addlstring(&b, s + pos, len - pos);
    luaL_pushresult(&b);
    lua_pushinteger(L, n);
    return 2;
}

/* lg.re.split(subject, pattern [, flags [, limit]]) -> array of pieces | nil, err */
static int re_split(lua_State *L)
{
    lua_settop(L, 4); /* fixed argument slots: the compiled pattern is pushed above them */
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer limit = luaL_optinteger(L, 4, 0);
    re_t *re = re_get(L, 2, 3);
    if (!re)
        return fail(L);
    lua_newtable(L);
    lua_Integer n = 0;
    size_t pos = 0, search = 0;
    while (search <= len && (limit <= 0 || n + 1 < limit)) {
        int rc = re_exec(L, re, s, len, search, 0);
        if (rc < 0)
            return fail(L);
        if (rc == 0)
            break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(re->md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me) { /* empty separators do not split */
            if (ms >= len)
                break;
            search = ms + 1;
            continue;
        }
        lua_pushlstring(L, s + pos, ms - pos);
        lua_rawseti(L, -2, ++n);
        pos = search = me;
    }
    lua_pushlstring(L, s + pos, len - pos);
    lua_rawseti(L, -2, ++n);
    return 1;
}

void lg_lapi_inject_re(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"match", re_match}, {"find", re_find}, {"gsub", re_gsub},
        {"split", re_split}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, RE_MT)) { /* lg mt */
        lua_pushcfunction(L, re_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);             /* lg */
    luaL_newlibtable(L, fns);  /* lg re */
    lua_newtable(L);           /* lg re cache (shared upvalue) */
    luaL_setfuncs(L, fns, 1);  /* lg re */
    lua_setfield(L, -2, "re"); /* lg */
}
