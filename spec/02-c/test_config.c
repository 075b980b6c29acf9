/* test_config.c -- env expansion, YAML -> Lua tree with positions, config loading.
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/config.c"

#include <lualib.h>

#include <lua-cjson.h>

#ifndef LG_HOME
#define LG_HOME "."
#endif
#define FIX LG_HOME "/spec/fixtures/config/"

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_pushstring(L, LG_HOME "/lua/?.lua;" LG_HOME "/lua/?/init.lua");
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_lunagate_yaml);
    lua_setfield(L, -2, "lunagate.yaml");
    lua_pop(L, 2);
    return L;
}

/* Runs a Lua chunk returning one value and returns it as a string (copied into a static
 * buffer; "ERR: ..." on error, "nil" for nil). */
static const char *eval(lua_State *L, const char *code)
{
    static char out[512];
    int top = lua_gettop(L);
    if (luaL_dostring(L, code) != LUA_OK) {
        snprintf(out, sizeof(out), "ERR: %s", lua_tostring(L, -1));
    } else {
        const char *s = luaL_tolstring(L, top + 1, NULL);
        snprintf(out, sizeof(out), "%s", s);
    }
    lua_settop(L, top);
    return out;
}

static char *expand(const char *s, lg_err_t *err)
{
    return lg_config_expand_env(s, strlen(s), NULL, err);
}

static void test_expand(void)
{
    lg_err_t err;
    char *s;

    setenv("LG_T_A", "alpha", 1);
    setenv("LG_T_EMPTY", "", 1);
    unsetenv("LG_T_UNSET");

#define EXPANDS(in, want, desc)                                                                    \
    do {                                                                                           \
        s = expand(in, &err);                                                                      \
        ok_streq(s, want, desc);                                                                   \
        free(s);                                                                                   \
    } while (0)

    EXPANDS("key: $LG_T_A", "key: alpha", "$VAR expands");
    EXPANDS("key: ${LG_T_A}x", "key: alphax", "${VAR} expands and ends at }");
    EXPANDS("$LG_T_A-b", "alpha-b", "$VAR name stops at a non-name char");
    EXPANDS("${LG_T_UNSET:-d 1}", "d 1", "${VAR:-default} uses the default when unset");
    EXPANDS("${LG_T_EMPTY:-d}", "d", "${VAR:-default} uses the default when empty");
    EXPANDS("${LG_T_A:-d}", "alpha", "${VAR:-default} uses the value when set");
    EXPANDS("$$LG_T_A and $${x}", "$LG_T_A and ${x}", "$$ is a literal $");
    EXPANDS("a${LG_T_UNSET}b $LG_T_UNSET.", "ab .", "unset variables expand to empty");
    EXPANDS("cost: $5 or $ or $", "cost: $5 or $ or $", "a lone $ stays");
    EXPANDS("", "", "empty input");
    EXPANDS("a: $LG_T_A\n  # costs $5, ${see\nb: ${LG_T_A}\n",
            "a: alpha\n  # costs $5, ${see\nb: alpha\n", "whole-line comments are copied verbatim");
    EXPANDS("x\n\ny: 1", "x\n\ny: 1", "blank lines and no trailing newline");

    s = expand("a: 1\nb: x ${LG_T_A", &err);
    ok(s == NULL, "unterminated ${ fails");
    ok_streq(err.msg, "2:6: unterminated '${'", "unterminated ${ names line and column");
    s = expand("a: ${LG_T_A\n}", &err);
    ok(s == NULL, "${ does not span lines");
    s = expand("a: ${}", &err);
    ok(s == NULL && strstr(err.msg, "1:4: empty variable name") != NULL, "empty ${} fails: %s",
       err.msg);

    size_t n = 0;
    s = lg_config_expand_env("x$LG_T_A\0tail", 13, &n, &err);
    ok(s != NULL && n == 11 && memcmp(s, "xalpha\0tail", 11) == 0, "length-based, NUL-safe");
    free(s);
#undef EXPANDS
}

static int push(lua_State *L, const char *yaml, lg_err_t *err)
{
    int rc = lg_config_push_yaml(L, yaml, strlen(yaml), "t.yaml", err);
    if (rc == LG_OK) {
        lua_setglobal(L, "M");
        lua_setglobal(L, "T");
    }
    return rc;
}

static void test_yaml(lua_State *L)
{
    lg_err_t err;
    int top = lua_gettop(L);

    ok(push(L,
            "s: hello\n"
            "i: 42\n"
            "neg: -7\n"
            "hex: 0x1F\n"
            "oct: 0o17\n"
            "f: 1.5\n"
            "e: 1e3\n"
            "inf: -.inf\n"
            "t: true\n"
            "F: False\n"
            "n1: null\n"
            "n2: ~\n"
            "n3:\n"
            "q: \"42\"\n"
            "sq: 'true'\n"
            "blk: |\n"
            "  12\n"
            "dur: 10s\n"
            "ver: 1.2.3\n"
            "big: 99999999999999999999\n"
            "tagged: !!str 7\n",
            &err) == LG_OK,
       "scalars parse");
    ok_streq(eval(L, "return T.s"), "hello", "plain string");
    ok_streq(eval(L, "return math.type(T.i) .. ' ' .. T.i"), "integer 42", "decimal int");
    ok_streq(eval(L, "return T.neg"), "-7", "negative int");
    ok_streq(eval(L, "return math.type(T.hex) .. ' ' .. T.hex"), "integer 31", "0x int");
    ok_streq(eval(L, "return T.oct"), "15", "0o int");
    ok_streq(eval(L, "return math.type(T.f) .. ' ' .. T.f"), "float 1.5", "float");
    ok_streq(eval(L, "return math.type(T.e)"), "float", "exponent float");
    ok_streq(eval(L, "return tostring(T.inf == -math.huge)"), "true", "-.inf");
    ok_streq(eval(L, "return type(T.t) .. tostring(T.t) .. tostring(T.F)"), "booleantruefalse",
             "booleans");
    ok_streq(eval(L, "local c = require 'cjson' return tostring(T.n1 == c.null and T.n2 == c.null"
                     " and T.n3 == c.null)"),
             "true", "null, ~ and empty are the null sentinel (== cjson.null)");
    ok_streq(eval(L, "return tostring(T.n1 == require('lunagate.yaml').null)"), "true",
             "yaml.null is the same sentinel");
    ok_streq(eval(L, "return type(T.q) .. T.q"), "string42", "double-quoted stays a string");
    ok_streq(eval(L, "return type(T.sq) .. T.sq"), "stringtrue", "single-quoted stays a string");
    ok_streq(eval(L, "return type(T.blk) .. T.blk"), "string12\n", "block scalar stays a string");
    ok_streq(eval(L, "return T.dur .. ' ' .. T.ver"), "10s 1.2.3", "non-numbers stay strings");
    ok_streq(eval(L, "return math.type(T.big)"), "float", "int overflow becomes a float");
    ok_streq(eval(L, "return type(T.tagged)"), "string", "!!str forces a string");
    ok(lua_gettop(L) == top, "stack balanced after parse");

    ok(push(L,
            "a:\n"
            "  b:\n"
            "    c: 1\n"
            "  list:\n"
            "  - x\n"
            "  - k: v\n"
            "    k2: w\n"
            "z: {p: 1, q: [1, 2]}\n",
            &err) == LG_OK,
       "nested document parses");
    ok_streq(eval(L, "local p = M[T].pos.a return p[1] .. ':' .. p[2]"), "1:1", "pos of a");
    ok_streq(eval(L, "local p = M[T.a].pos.b return p[1] .. ':' .. p[2]"), "2:3", "pos of a.b");
    ok_streq(eval(L, "local p = M[T.a.b].pos.c return p[1] .. ':' .. p[2]"), "3:5", "pos of c");
    ok_streq(eval(L, "local m = M[T.a.list] return m.kind .. ' ' .. m.line .. ':' .. m.col"),
             "seq 5:3", "sequence meta");
    ok_streq(eval(L, "local p = M[T.a.list].pos return p[1][1]..':'..p[1][2]..' '..p[2][1]..':'"
                     "..p[2][2]"),
             "5:5 6:5", "sequence item positions");
    ok_streq(eval(L, "local p = M[T.a.list[2]].pos.k2 return p[1] .. ':' .. p[2]"), "7:5",
             "key inside a sequence item");
    ok_streq(eval(L, "return table.concat(M[T].keys, ',') .. ' ' .. M[T].kind"), "a,z map",
             "keys in document order");
    ok_streq(eval(L, "local p = M[T.z].pos.q return p[1] .. ':' .. p[2] .. ' ' .. T.z.q[2]"),
             "8:11 2", "flow mapping positions");
    ok_streq(eval(L, "return getmetatable(M).__mode"), "k", "meta has weak keys");

    /* anchors, aliases, merges */
    ok(push(L,
            "base: &b\n"
            "  port: 1\n"
            "  host: h\n"
            "copy: *b\n"
            "merged:\n"
            "  <<: *b\n"
            "  port: 2\n"
            "s: &s str\n"
            "s2: *s\n",
            &err) == LG_OK,
       "anchors parse: %s", err.msg);
    ok_streq(eval(L, "return tostring(T.copy ~= T.base) .. T.copy.port .. T.copy.host"), "true1h",
             "alias copies the anchored node");
    ok_streq(eval(L, "return M[T.copy].pos.port[1] .. ' ' .. M[T.copy].kind"), "2 map",
             "the copy keeps the anchor's positions");
    ok_streq(eval(L, "return T.merged.port .. T.merged.host"), "2h", "merge key: explicit wins");
    ok_streq(eval(L, "return table.concat(M[T.merged].keys, ',')"), "port,host",
             "merged keys are listed");
    ok_streq(eval(L, "return T.s2"), "str", "scalar alias");
    ok(push(L, "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  w: 0\n", &err) ==
           LG_OK,
       "merge of a list parses");
    ok_streq(eval(L, "local c = T.c return c.w .. c.x .. c.y .. c.z .. ' ' .. "
                     "table.concat(M[c].keys, ',')"),
             "0112 w,x,y,z", "merge list: earlier sources win, keys appended");
    ok(push(L, "a:\n  <<: 3\n", &err) == LG_ERR && strstr(err.msg, "t.yaml:2:3: '<<'") == err.msg,
       "merging a scalar fails: %s", err.msg);

    /* JSON and multi-document input */
    ok(push(L, "{\"binds\": [{\"port\": 3000, \"x\": null, \"ok\": true, \"f\": 0.5}]}", &err) ==
           LG_OK,
       "JSON parses");
    ok_streq(eval(L, "local b = T.binds[1] return math.type(b.port) .. tostring(b.ok) .. b.f .."
                     " tostring(b.x == require('cjson').null)"),
             "integertrue0.5true", "JSON types");
    ok_streq(eval(L, "local p = M[T.binds[1]].pos.port return p[1] .. ':' .. p[2]"), "1:13",
             "JSON positions");
    ok(push(L, "a: 1\n---\na: 2\n", &err) == LG_OK, "multi-document parses");
    ok_streq(eval(L, "return T.a"), "1", "first document is used");
    ok(push(L, "# only a comment\n", &err) == LG_OK, "empty document parses");
    ok_streq(eval(L, "return tostring(next(T)) .. M[T].kind"), "nilmap", "empty doc -> {}");

    /* errors */
    top = lua_gettop(L);
    ok(push(L, "a: 1\nb: [1, 2\n", &err) == LG_ERR, "unclosed flow sequence fails");
    ok(strncmp(err.msg, "t.yaml:3:1: ", 12) == 0, "syntax error shape FILE:L:C: %s", err.msg);
    ok(push(L, "a:\n  b: 1\n c: 2\n", &err) == LG_ERR, "bad indentation fails");
    ok(strncmp(err.msg, "t.yaml:3:", 9) == 0 && strchr(err.msg, '\n') == NULL,
       "indentation error is one line with position: %s", err.msg);
    ok(push(L, "a: 1\na: 2\n", &err) == LG_ERR, "duplicate keys fail");
    ok_streq(err.msg, "t.yaml:2:1: duplicate key 'a'", "duplicate key message");
    ok(push(L, "a: *nope\n", &err) == LG_ERR, "unknown alias fails");
    ok_streq(err.msg, "t.yaml:1:4: unknown anchor 'nope'", "unknown alias message");
    ok(push(L, "? [a]\n: 1\n", &err) == LG_ERR, "complex keys fail");
    ok(lua_gettop(L) == top, "stack unchanged after errors");

    /* billion laughs is bounded */
    {
        char doc[2048];
        size_t o = (size_t)snprintf(doc, sizeof(doc), "a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for (int i = 1; i < 10; i++)
            o += (size_t)snprintf(
                doc + o, sizeof(doc) - o, "%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n",
                'a' + i, 'a' + i, 'a' + i - 1, 'a' + i - 1, 'a' + i - 1, 'a' + i - 1, 'a' + i - 1,
                'a' + i - 1, 'a' + i - 1, 'a' + i - 1, 'a' + i - 1, 'a' + i - 1);
        ok(push(L, doc, &err) == LG_ERR && strstr(err.msg, "too large") != NULL,
           "alias expansion is bounded: %s", err.msg);
    }

    /* the Lua module */
    ok_streq(eval(L, "local y = require 'lunagate.yaml' local t, m = y.parse('k: [1]', 'x.yaml')"
                     " return t.k[1] .. m[t].pos.k[2]"),
             "11", "lunagate.yaml parse");
    ok_streq(eval(L, "local y = require 'lunagate.yaml' return select(2, y.parse('a: [', 'x.y'))"
                     ":match('^x.y:%d+:%d+: ') ~= nil"),
             "true", "lunagate.yaml parse error");
    ok_streq(eval(L, "return require('lunagate.yaml').expand_env('$LG_T_A $$')"), "alpha $",
             "lunagate.yaml expand_env");
}

static int load(lua_State *L, const char *text, lg_err_t *err)
{
    int rc = lg_config_load(L, text, strlen(text), "config.yaml", err);
    if (rc == LG_OK)
        lua_setglobal(L, "C");
    return rc;
}

static void test_load(lua_State *L)
{
    lg_err_t err;
    int top = lua_gettop(L);
    size_t len;

    char *text = lg_config_read_file(FIX "unknown-key.yaml", &len, &err);
    ok(text != NULL && len > 100 && text[len] == '\0', "read_file reads the fixture");
    ok(lg_config_load(L, text, len, "config.yaml", &err) == LG_ERR, "unknown key fails");
    ok_streq(err.msg,
             "config.yaml:14:9: binds[0].listeners[0].routes[0].backends[0]: unknown key "
             "'hots' (did you mean 'host'?)",
             "the issue's example message, exactly");
    ok(lua_gettop(L) == top, "stack unchanged on error");
    free(text);

    ok(lg_config_read_file("/nonexistent/lg.yaml", &len, &err) == NULL &&
           strstr(err.msg, "/nonexistent/lg.yaml: ") == err.msg,
       "read_file error names the path: %s", err.msg);

    setenv("LG_TEST_UPSTREAM", "127.0.0.1:9999", 1);
    text = lg_config_read_file(FIX "valid.yaml", &len, &err);
    ok(text != NULL, "read valid fixture");
    int rc = lg_config_load(L, text, len, "valid.yaml", &err);
    ok(rc == LG_OK, "valid fixture loads: %s", rc == LG_OK ? "" : err.msg);
    free(text);
    if (rc == LG_OK) {
        ok(lua_gettop(L) == top + 1, "one value left on the stack");
        lua_setglobal(L, "C");
        ok_streq(eval(L, "return C.config.statsAddr .. ' ' .. C.config.readinessAddr .. ' '"
                         " .. tostring(C.config.adminAddr) .. ' ' .. C.config.workerThreads"),
                 "127.0.0.1:19002 0.0.0.0:15021 false 2", "config section normalised");
        ok_streq(eval(L, "return C.config.tracing.otlpEndpoint"), "http://127.0.0.1:4317",
                 "tracing kept as given");
        ok_streq(eval(L, "return C.frontendPolicies.http.maxBufferSize"), "1048576",
                 "maxBufferSize");
        ok_streq(eval(L, "local l = C.binds[1].listeners[1] return C.binds[1].key .. ' ' .. "
                         "l.key .. ' ' .. l.protocol .. ' ' .. l.hostname"),
                 "bind/3000 bind/3000/listener0 HTTP *", "bind and listener defaults");
        ok_streq(eval(L, "local r = C.binds[1].listeners[1].routes[1] local m = r.matches[1] "
                         "return r.key .. ' ' .. m.path.kind .. ' ' .. m.path.value .. ' ' .. "
                         "m.method .. ' ' .. m.headers[1].name .. ' ' .. m.headers[1].kind"),
                 "default/api exact /v1/chat POST x-team regex", "route and matches");
        ok_streq(eval(L, "local b = C.binds[1].listeners[1].routes[1].backends[1] "
                         "return b.kind .. ' ' .. b.host .. ' ' .. b.port .. ' ' .. b.weight"),
                 "host 127.0.0.1 9999 2", "backend host from ${VAR:-default}");
        ok_streq(eval(L, "local p = C.binds[1].listeners[1].routes[1].policies "
                         "return p.timeout.requestTimeout .. ' ' .. p.retry.attempts .. ' ' .. "
                         "p.retry.backoff .. ' ' .. p.requestHeaderModifier.add[1].name .. ' ' "
                         ".. p.requestHeaderModifier.remove[1]"),
                 "10000 3 100 X-Gateway x-secret", "policies normalised");
        ok_streq(eval(L, "local r = C.binds[1].listeners[1].routes[2] "
                         "return r.name .. ' ' .. r.policies.directResponse.status .. ' ' .. "
                         "r.policies.directResponse.body"),
                 "fallback 404 {\"error\":\"no route\"}", "directResponse route");
    }
    unsetenv("LG_TEST_UPSTREAM");
    text = lg_config_read_file(FIX "valid.yaml", &len, &err);
    rc = lg_config_load(L, text, len, "valid.yaml", &err);
    ok(rc == LG_OK, "default from ${VAR:-default} applies");
    if (rc == LG_OK) {
        lua_setglobal(L, "C");
        ok_streq(eval(L, "return C.binds[1].listeners[1].routes[1].backends[1].port"), "8080",
                 "port from the default");
    }
    free(text);

    /* error kinds through the whole pipeline */
    ok(load(L, "binds:\n- port: x${LG_T_UNSET\n", &err) == LG_ERR, "env error");
    ok_streq(err.msg, "config.yaml:2:10: unterminated '${'", "env error shape");
    ok(load(L, "binds: [\n", &err) == LG_ERR && strncmp(err.msg, "config.yaml:2:1: ", 17) == 0,
       "YAML error shape: %s", err.msg);
    ok(load(L, "binds:\n- port: '3000'\n  listeners: []\n", &err) == LG_ERR, "type error");
    ok_streq(err.msg, "config.yaml:2:3: binds[0].port: expected integer, got string",
             "type error shape");
    ok(load(L, "- a\n", &err) == LG_ERR, "top-level sequence fails");
    ok_streq(err.msg, "config.yaml:1:1: expected a mapping at the top level, got array",
             "top-level type message");
    ok(load(L, "", &err) == LG_OK, "empty file is a valid (empty) config");
    ok_streq(eval(L, "return #C.binds .. ' ' .. C.config.adminAddr"), "0 127.0.0.1:15000",
             "empty config defaults");
    ok(lua_gettop(L) == top, "stack balanced");
}

int main(void)
{
    lua_State *L = new_state();
    test_expand();
    test_yaml(L);
    test_load(L);
    lua_close(L);
    return test_done();
}
