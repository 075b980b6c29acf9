/* config.c -- environment expansion, YAML -> Lua table with positions, config loading.
 * SPDX-License-Identifier: MIT
 *
 * The YAML tree is built inside a protected call, so a Lua error (out of memory, a
 * malformed document) unwinds to lg_config_push_yaml(), which then releases the libyaml
 * parser and the pending event; nothing here leaks on that path. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <yaml.h>

/* ---- Environment expansion ---- */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->p = lg_xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static int is_name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

/* Appends the value of the variable named by name[0..n); when it is unset (or, with a
 * default given, empty) appends def[0..dn) instead. */
static void add_var(buf_t *b, const char *name, size_t n, const char *def, size_t dn)
{
    char tmp[256];
    char *key = n < sizeof(tmp) ? tmp : lg_xmalloc(n + 1);
    memcpy(key, name, n);
    key[n] = '\0';
    const char *v = getenv(key);
    if (v != NULL && (def == NULL || *v != '\0'))
        buf_add(b, v, strlen(v));
    else if (def != NULL)
        buf_add(b, def, dn);
    if (key != tmp)
        free(key);
}

/* Expands in[i..eol) (one line, without its '\n') into b. Returns LG_OK, or LG_ERR with
 * err set to "LINE:COL: message". */
static int expand_line(buf_t *b, const char *in, size_t i, size_t eol, size_t line, lg_err_t *err)
{
    size_t lstart = i;

    while (i < eol) {
        const char *dollar = memchr(in + i, '$', eol - i);
        size_t stop = dollar ? (size_t)(dollar - in) : eol;
        buf_add(b, in + i, stop - i);
        i = stop;
        if (i >= eol)
            break;
        /* in[i] == '$' */
        if (i + 1 < eol && in[i + 1] == '$') {
            buf_add(b, "$", 1);
            i += 2;
        } else if (i + 1 < eol && in[i + 1] == '{') {
            size_t start = i + 2, k = start;
            while (k < eol && in[k] != '}' && !(in[k] == ':' && k + 1 < eol && in[k + 1] == '-'))
                k++;
            if (k >= eol)
                return lg_err_set(err, 0, "%zu:%zu: unterminated '${'", line, i - lstart + 1);
            if (k == start)
                return lg_err_set(err, 0, "%zu:%zu: empty variable name in '${}'", line,
                                  i - lstart + 1);
            if (in[k] == '}') {
                add_var(b, in + start, k - start, NULL, 0);
                i = k + 1;
            } else {
                /* ${NAME:-default}: the default is literal text up to the next '}' */
                size_t d = k + 2, e = d;
                while (e < eol && in[e] != '}')
                    e++;
                if (e >= eol)
                    return lg_err_set(err, 0, "%zu:%zu: unterminated '${'", line, i - lstart + 1);
                add_var(b, in + start, k - start, in + d, e - d);
                i = e + 1;
            }
        } else if (i + 1 < eol && is_name_start(in[i + 1])) {
            size_t k = i + 1;
            while (k < eol && is_name_char(in[k]))
                k++;
            add_var(b, in + i + 1, k - i - 1, NULL, 0);
            i = k;
        } else {
            /* a lone '$' (before a digit, space, quote or the end) is kept as is */
            buf_add(b, "$", 1);
            i++;
        }
    }
    return LG_OK;
}

char *lg_config_expand_env(const char *in, size_t len, size_t *outlen, lg_err_t *err)
{
    buf_t b = {0};
    size_t i = 0, line = 1;

    buf_add(&b, "", 0);
    while (i < len) {
        const char *nl = memchr(in + i, '\n', len - i);
        size_t eol = nl ? (size_t)(nl - in) : len;
        size_t k = i;
        while (k < eol && (in[k] == ' ' || in[k] == '\t'))
            k++;
        /* A whole-line comment is copied verbatim: YAML discards it anyway, and text
         * such as "# costs $5, see ${docs" must not break loading. */
        if (k < eol && in[k] == '#')
            buf_add(&b, in + i, eol - i);
        else if (expand_line(&b, in, i, eol, line, err) != LG_OK) {
            free(b.p);
            return NULL;
        }
        if (nl)
            buf_add(&b, "\n", 1);
        i = eol + 1;
        line++;
    }
    if (outlen != NULL)
        *outlen = b.len;
    return b.p;
}

/* ---- YAML -> Lua ---- */

typedef struct {
    yaml_parser_t parser;
    yaml_event_t ev;
    int have_ev;
    const char *filename;
    int meta;    /* stack index of the meta table */
    int anchors; /* stack index of anchor name -> value */
    size_t nodes;
} build_t;

static const char *TAG_STR = "tag:yaml.org,2002:str";

static int build_fail(lua_State *L, build_t *b, const yaml_mark_t *m, const char *msg)
{
    lua_pushfstring(L, "%s:%d:%d: %s", b->filename, (int)m->line + 1, (int)m->column + 1, msg);
    return lua_error(L);
}

/* Fetches the next event into b->ev (the previous one must have been released). */
static void next_event(lua_State *L, build_t *b)
{
    if (!yaml_parser_parse(&b->parser, &b->ev)) {
        yaml_parser_t *p = &b->parser;
        const char *problem = p->problem ? p->problem : "invalid YAML";
        if (p->error == YAML_MEMORY_ERROR)
            problem = "out of memory";
        if (p->context)
            lua_pushfstring(L, "%s:%d:%d: %s (%s)", b->filename, (int)p->problem_mark.line + 1,
                            (int)p->problem_mark.column + 1, problem, p->context);
        else
            lua_pushfstring(L, "%s:%d:%d: %s", b->filename, (int)p->problem_mark.line + 1,
                            (int)p->problem_mark.column + 1, problem);
        lua_error(L);
    }
    b->have_ev = 1;
}

static void release_event(build_t *b)
{
    if (b->have_ev) {
        yaml_event_delete(&b->ev);
        b->have_ev = 0;
    }
}

static void count_node(lua_State *L, build_t *b, const yaml_mark_t *m)
{
    if (++b->nodes > LG_CONFIG_MAX_NODES)
        build_fail(L, b, m, "document too large (too many nodes or alias expansions)");
}

static int streq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Pushes the YAML 1.2 core-schema value of a plain scalar. */
static void push_plain(lua_State *L, const char *s, size_t n)
{
    if (n == 0 || streq(s, n, "~") || streq(s, n, "null") || streq(s, n, "Null") ||
        streq(s, n, "NULL")) {
        lua_pushlightuserdata(L, NULL);
        return;
    }
    if (streq(s, n, "true") || streq(s, n, "True") || streq(s, n, "TRUE")) {
        lua_pushboolean(L, 1);
        return;
    }
    if (streq(s, n, "false") || streq(s, n, "False") || streq(s, n, "FALSE")) {
        lua_pushboolean(L, 0);
        return;
    }
    size_t i = 0;
    int neg = 0;
    if (s[0] == '-' || s[0] == '+') {
        neg = s[0] == '-';
        i = 1;
    }
    const char *rest = s + i;
    size_t rn = n - i;
    /* .inf / .nan */
    if (streq(rest, rn, ".inf") || streq(rest, rn, ".Inf") || streq(rest, rn, ".INF")) {
        lua_pushnumber(L, neg ? -HUGE_VAL : HUGE_VAL);
        return;
    }
    if (i == 0 && (streq(s, n, ".nan") || streq(s, n, ".NaN") || streq(s, n, ".NAN"))) {
        lua_pushnumber(L, NAN);
        return;
    }
    /* 0x / 0o integers */
    if (rn > 2 && rest[0] == '0' && (rest[1] == 'x' || rest[1] == 'o')) {
        int hex = rest[1] == 'x';
        size_t k;
        for (k = 2; k < rn; k++) {
            char c = rest[k];
            int okc =
                hex ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
                    : (c >= '0' && c <= '7');
            if (!okc)
                break;
        }
        if (k == rn && rn - 2 <= 15) {
            char tmp[32];
            memcpy(tmp, rest + 2, rn - 2);
            tmp[rn - 2] = '\0';
            long long v = strtoll(tmp, NULL, hex ? 16 : 8);
            lua_pushinteger(L, neg ? -v : v);
            return;
        }
        lua_pushlstring(L, s, n);
        return;
    }
    /* decimal integer or float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
    size_t k = 0, digits = 0, frac = 0;
    int dot = 0, exp = 0;
    while (k < rn && rest[k] >= '0' && rest[k] <= '9')
        k++, digits++;
    if (k < rn && rest[k] == '.') {
        dot = 1;
        k++;
        while (k < rn && rest[k] >= '0' && rest[k] <= '9')
            k++, frac++;
    }
    if (digits + frac > 0 && k < rn && (rest[k] == 'e' || rest[k] == 'E')) {
        size_t e = k + 1, ed = 0;
        if (e < rn && (rest[e] == '-' || rest[e] == '+'))
            e++;
        while (e < rn && rest[e] >= '0' && rest[e] <= '9')
            e++, ed++;
        if (ed > 0) {
            exp = 1;
            k = e;
        }
    }
    if (k != rn || digits + frac == 0 || (digits == 0 && !dot)) {
        lua_pushlstring(L, s, n);
        return;
    }
    char tmp[64];
    if (n >= sizeof(tmp)) {
        lua_pushlstring(L, s, n);
        return;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (!dot && !exp) {
        errno = 0;
        long long v = strtoll(tmp, NULL, 10);
        if (errno != ERANGE) {
            lua_pushinteger(L, v);
            return;
        }
    }
    lua_pushnumber(L, strtod(tmp, NULL));
}

static void push_scalar(lua_State *L, const yaml_event_t *ev)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (tag != NULL && strcmp(tag, TAG_STR) == 0)
        lua_pushlstring(L, s, n);
    else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE || (tag != NULL && strcmp(tag, "!")))
        push_plain(L, s, n);
    else
        lua_pushlstring(L, s, n);
}

/* Pushes {line, col} for a mark. */
static void push_pos(lua_State *L, const yaml_mark_t *m)
{
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, (lua_Integer)m->line + 1);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)m->column + 1);
    lua_rawseti(L, -2, 2);
}

/* Creates the meta entry for the table at the top of the stack and leaves the entry on
 * top: table meta_entry. */
static void new_meta(lua_State *L, build_t *b, const yaml_mark_t *m, int is_map)
{
    lua_createtable(L, 0, 5); /* t e */
    lua_pushinteger(L, (lua_Integer)m->line + 1);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, (lua_Integer)m->column + 1);
    lua_setfield(L, -2, "col");
    lua_pushstring(L, is_map ? "map" : "seq");
    lua_setfield(L, -2, "kind");
    if (is_map) {
        lua_newtable(L);
        lua_setfield(L, -2, "keys");
    }
    lua_newtable(L);
    lua_setfield(L, -2, "pos");
    lua_pushvalue(L, -2);   /* t e t */
    lua_pushvalue(L, -2);   /* t e t e */
    lua_rawset(L, b->meta); /* t e */
}

/* Pushes a deep copy of the value at `idx`; copies get meta entries that share the
 * original's positions. */
static void copy_value(lua_State *L, build_t *b, int idx, int depth, const yaml_mark_t *m)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return;
    }
    if (depth > LG_CONFIG_MAX_DEPTH)
        build_fail(L, b, m, "document nested too deeply");
    luaL_checkstack(L, 8, "config nesting");
    count_node(L, b, m);
    lua_newtable(L); /* c */
    int c = lua_gettop(L);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, b->meta) == LUA_TTABLE) { /* c e */
        lua_createtable(L, 0, 5);               /* c e e2 */
        lua_pushnil(L);
        while (lua_next(L, -3)) { /* c e e2 k v */
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        lua_pushvalue(L, c);
        lua_insert(L, -2);      /* c e c e2 */
        lua_rawset(L, b->meta); /* c e */
    }
    lua_pop(L, 1); /* c */
    lua_pushnil(L);
    while (lua_next(L, idx)) {              /* c k v */
        lua_pushvalue(L, -2);               /* c k v k */
        copy_value(L, b, -2, depth + 1, m); /* c k v k v2 */
        lua_rawset(L, c);                   /* c k v */
        lua_pop(L, 1);                      /* c k */
    }
}

static void parse_node(lua_State *L, build_t *b, int depth);

/* Applies "<<" merges: for each table in the list at `merges`, keys not already in the
 * mapping at `t` (meta entry at `e`) are added, keeping the merged key's position. */
static void apply_merges(lua_State *L, build_t *b, int t, int e, int merges)
{
    lua_getfield(L, e, "keys"); /* keys */
    lua_getfield(L, e, "pos");  /* keys pos */
    int keys = lua_gettop(L) - 1, pos = keys + 1;
    lua_Integer nkeys = (lua_Integer)lua_rawlen(L, keys);
    lua_Integer nm = (lua_Integer)lua_rawlen(L, merges);
    for (lua_Integer i = 1; i <= nm; i++) {
        lua_rawgeti(L, merges, i); /* src */
        int src = lua_gettop(L);
        lua_pushvalue(L, src);
        lua_rawget(L, b->meta);      /* src se */
        lua_getfield(L, -1, "keys"); /* src se skeys */
        lua_getfield(L, -2, "pos");  /* src se skeys spos */
        lua_Integer sn = (lua_Integer)lua_rawlen(L, -2);
        for (lua_Integer j = 1; j <= sn; j++) {
            lua_rawgeti(L, -2, j); /* ... k */
            lua_pushvalue(L, -1);
            if (lua_rawget(L, t) != LUA_TNIL) { /* ... k v */
                lua_pop(L, 2);
                continue;
            }
            lua_pop(L, 1); /* ... k */
            lua_pushvalue(L, -1);
            lua_rawget(L, src); /* ... k v */
            lua_pushvalue(L, -2);
            lua_insert(L, -2); /* ... k k v */
            lua_rawset(L, t);  /* ... k */
            lua_pushvalue(L, -1);
            lua_rawseti(L, keys, ++nkeys);
            lua_pushvalue(L, -1); /* ... k k */
            lua_rawget(L, -3);    /* ... k p */
            lua_rawset(L, pos);   /* ... */
        }
        lua_settop(L, src - 1);
    }
    lua_pop(L, 2);
}

/* Collects merge sources from the value on top of the stack (a mapping or a sequence of
 * mappings) into the list at `merges`; pops the value. */
static void add_merge(lua_State *L, build_t *b, int merges, const yaml_mark_t *m)
{
    int v = lua_gettop(L);
    int is_map = 0, is_seq = 0;
    if (lua_type(L, v) == LUA_TTABLE) {
        lua_pushvalue(L, v);
        lua_rawget(L, b->meta);
        lua_getfield(L, -1, "kind");
        const char *kind = lua_tostring(L, -1);
        is_map = kind != NULL && strcmp(kind, "map") == 0;
        is_seq = kind != NULL && strcmp(kind, "seq") == 0;
        lua_pop(L, 2);
    }
    if (is_map) {
        lua_rawseti(L, merges, (lua_Integer)lua_rawlen(L, merges) + 1);
        return;
    }
    if (is_seq) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, v);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, v, i);
            lua_pushvalue(L, -1);
            lua_rawget(L, b->meta);
            int ismap = 0;
            if (lua_type(L, -1) == LUA_TTABLE) {
                lua_getfield(L, -1, "kind");
                ismap = lua_tostring(L, -1) && strcmp(lua_tostring(L, -1), "map") == 0;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
            if (!ismap)
                build_fail(L, b, m, "'<<' merge value must be a mapping or a list of mappings");
            lua_rawseti(L, merges, (lua_Integer)lua_rawlen(L, merges) + 1);
        }
        lua_pop(L, 1);
        return;
    }
    build_fail(L, b, m, "'<<' merge value must be a mapping or a list of mappings");
}

static void parse_mapping(lua_State *L, build_t *b, int depth)
{
    yaml_mark_t start = b->ev.start_mark;
    release_event(b);
    lua_newtable(L); /* t */
    int t = lua_gettop(L);
    new_meta(L, b, &start, 1); /* t e */
    int e = t + 1;
    lua_getfield(L, e, "keys"); /* t e keys */
    lua_getfield(L, e, "pos");  /* t e keys pos */
    int keys = t + 2, pos = t + 3, merges = 0;
    lua_Integer nkeys = 0;
    for (;;) {
        next_event(L, b);
        if (b->ev.type == YAML_MAPPING_END_EVENT) {
            release_event(b);
            break;
        }
        yaml_mark_t km = b->ev.start_mark;
        if (b->ev.type != YAML_SCALAR_EVENT)
            build_fail(L, b, &km, "only scalar mapping keys are supported");
        int is_merge = b->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                       streq((const char *)b->ev.data.scalar.value, b->ev.data.scalar.length, "<<");
        lua_pushlstring(L, (const char *)b->ev.data.scalar.value, b->ev.data.scalar.length);
        release_event(b); /* ... k */
        next_event(L, b);
        parse_node(L, b, depth + 1); /* ... k v */
        if (is_merge) {
            if (merges == 0) {
                lua_newtable(L);
                lua_replace(L, -3); /* ... merges v */
                merges = lua_gettop(L) - 1;
            } else {
                lua_remove(L, -2); /* ... v */
            }
            add_merge(L, b, merges, &km);
            continue;
        }
        lua_pushvalue(L, -2);
        if (lua_rawget(L, t) != LUA_TNIL) { /* ... k v old */
            lua_pushfstring(L, "duplicate key '%s'", lua_tostring(L, -3));
            build_fail(L, b, &km, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
        lua_pushvalue(L, -2); /* ... k v k */
        lua_insert(L, -2);    /* ... k k v */
        lua_rawset(L, t);     /* ... k */
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++nkeys); /* ... k */
        push_pos(L, &km);              /* ... k p */
        lua_rawset(L, pos);            /* ... */
    }
    if (merges != 0)
        apply_merges(L, b, t, e, merges);
    lua_settop(L, t); /* t */
}

static void parse_sequence(lua_State *L, build_t *b, int depth)
{
    yaml_mark_t start = b->ev.start_mark;
    release_event(b);
    lua_newtable(L); /* t */
    int t = lua_gettop(L);
    new_meta(L, b, &start, 0);  /* t e */
    lua_getfield(L, -1, "pos"); /* t e pos */
    int pos = t + 2;
    lua_Integer n = 0;
    for (;;) {
        next_event(L, b);
        if (b->ev.type == YAML_SEQUENCE_END_EVENT) {
            release_event(b);
            break;
        }
        yaml_mark_t im = b->ev.start_mark;
        parse_node(L, b, depth + 1); /* ... v */
        lua_rawseti(L, t, ++n);
        push_pos(L, &im);
        lua_rawseti(L, pos, n);
    }
    lua_settop(L, t);
}

/* Consumes the node starting at the current event and pushes its value. */
static void parse_node(lua_State *L, build_t *b, int depth)
{
    yaml_mark_t m = b->ev.start_mark;
    const char *anchor = NULL;
    if (depth > LG_CONFIG_MAX_DEPTH)
        build_fail(L, b, &m, "document nested too deeply");
    luaL_checkstack(L, 16, "config nesting");
    count_node(L, b, &m);

    switch (b->ev.type) {
    case YAML_SCALAR_EVENT:
        anchor = (const char *)b->ev.data.scalar.anchor;
        if (anchor)
            lua_pushstring(L, anchor);
        push_scalar(L, &b->ev);
        release_event(b);
        break;
    case YAML_ALIAS_EVENT:
        lua_pushstring(L, (const char *)b->ev.data.alias.anchor);
        release_event(b); /* name */
        lua_pushvalue(L, -1);
        if (lua_rawget(L, b->anchors) == LUA_TNIL) { /* name v */
            lua_pushfstring(L, "unknown anchor '%s'", lua_tostring(L, -2));
            build_fail(L, b, &m, lua_tostring(L, -1));
        }
        copy_value(L, b, -1, depth, &m); /* name v copy */
        lua_replace(L, -3);
        lua_pop(L, 1); /* copy */
        return;
    case YAML_MAPPING_START_EVENT:
        anchor = (const char *)b->ev.data.mapping_start.anchor;
        if (anchor)
            lua_pushstring(L, anchor);
        parse_mapping(L, b, depth);
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = (const char *)b->ev.data.sequence_start.anchor;
        if (anchor)
            lua_pushstring(L, anchor);
        parse_sequence(L, b, depth);
        break;
    default:
        build_fail(L, b, &m, "unexpected YAML event");
    }
    if (anchor) { /* name v */
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_rawset(L, b->anchors);
        lua_remove(L, -2); /* v */
    }
}

/* lua_CFunction run under pcall: (build_t lightuserdata) -> tree, meta */
static int build_tree(lua_State *L)
{
    build_t *b = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_newtable(L); /* meta */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    b->meta = 1;
    lua_newtable(L); /* meta anchors */
    b->anchors = 2;

    int have_root = 0;
    for (;;) {
        next_event(L, b);
        yaml_event_type_t type = b->ev.type;
        if (type == YAML_STREAM_END_EVENT || type == YAML_DOCUMENT_END_EVENT) {
            release_event(b);
            break;
        }
        if (type == YAML_STREAM_START_EVENT || type == YAML_DOCUMENT_START_EVENT) {
            release_event(b);
            continue;
        }
        parse_node(L, b, 0); /* meta anchors root */
        have_root = 1;
    }
    if (!have_root) {
        yaml_mark_t m = {0, 0, 0};
        lua_newtable(L);
        new_meta(L, b, &m, 1);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 1); /* meta anchors root meta */
    return 2;
}

int lg_config_push_yaml(lua_State *L, const char *text, size_t len, const char *filename,
                        lg_err_t *err)
{
    build_t b;
    int top = lua_gettop(L);

    memset(&b, 0, sizeof(b));
    b.filename = filename ? filename : "<config>";
    if (!yaml_parser_initialize(&b.parser))
        return lg_err_set(err, 0, "%s: cannot initialise the YAML parser", b.filename);
    yaml_parser_set_input_string(&b.parser, (const unsigned char *)text, len);

    luaL_checkstack(L, 4, "config");
    lua_pushcfunction(L, build_tree);
    lua_pushlightuserdata(L, &b);
    int rc = lua_pcall(L, 1, 2, 0);
    release_event(&b);
    yaml_parser_delete(&b.parser);
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        lg_err_set(err, 0, "%s", msg ? msg : "error while building the config tree");
        lua_settop(L, top);
        return LG_ERR;
    }
    return LG_OK;
}

/* ---- Loading ---- */

int lg_config_load(lua_State *L, const char *text, size_t len, const char *filename, lg_err_t *err)
{
    int top = lua_gettop(L);
    lg_err_t e;
    size_t n;

    if (filename == NULL)
        filename = "<config>";
    char *expanded = lg_config_expand_env(text, len, &n, &e);
    if (expanded == NULL)
        return lg_err_set(err, 0, "%s:%s", filename, e.msg);
    int rc = lg_config_push_yaml(L, expanded, n, filename, err);
    free(expanded);
    if (rc != LG_OK)
        return LG_ERR; /* tree meta */

    luaL_checkstack(L, 8, "config");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lunagate.config");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        lg_err_set(err, 0, "%s: cannot load lunagate.config: %s", filename,
                   lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_settop(L, top);
        return LG_ERR;
    }
    lua_getfield(L, -1, "load"); /* tree meta mod load */
    lua_pushvalue(L, top + 1);
    lua_pushvalue(L, top + 2);
    lua_pushstring(L, filename);
    if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
        lg_err_set(err, 0, "%s: internal error while validating: %s", filename,
                   lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_settop(L, top);
        return LG_ERR;
    } /* tree meta mod conf err */
    if (lua_type(L, -2) != LUA_TTABLE) {
        const char *msg = lua_tostring(L, -1);
        lg_err_set(err, 0, "%s", msg ? msg : "invalid config");
        lua_settop(L, top);
        return LG_ERR;
    }
    lua_pop(L, 1);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1); /* conf */
    return LG_OK;
}

char *lg_config_read_file(const char *path, size_t *len, lg_err_t *err)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (f == NULL) {
        lg_err_set(err, errno, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *p = lg_xmalloc(cap);
    for (;;) {
        if (cap - n < 2) {
            if (cap >= (size_t)64 << 20) {
                lg_err_set(err, 0, "%s: file larger than 64 MiB", path);
                goto fail;
            }
            cap *= 2;
            p = lg_xrealloc(p, cap);
        }
        size_t r = fread(p + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                lg_err_set(err, errno, "%s: %s", path, strerror(errno));
                goto fail;
            }
            break;
        }
    }
    if (!is_stdin)
        fclose(f);
    p[n] = '\0';
    if (len != NULL)
        *len = n;
    return p;
fail:
    if (!is_stdin)
        fclose(f);
    free(p);
    return NULL;
}

/* ---- The lunagate.yaml Lua module ---- */

static int lyaml_parse(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *filename = luaL_optstring(L, 2, "<config>");
    lg_err_t err;
    if (lg_config_push_yaml(L, text, len, filename, &err) != LG_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
    }
    return 2;
}

static int lyaml_expand_env(lua_State *L)
{
    size_t len, n;
    const char *text = luaL_checklstring(L, 1, &len);
    lg_err_t err;
    char *out = lg_config_expand_env(text, len, &n, &err);
    if (out == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
        return 2;
    }
    lua_pushlstring(L, out, n);
    free(out);
    return 1;
}

int luaopen_lunagate_yaml(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"parse", lyaml_parse},
        {"expand_env", lyaml_expand_env},
        {NULL, NULL},
    };
    luaL_newlib(L, fns); /* yaml */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
