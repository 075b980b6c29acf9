/* test_lapi.c -- unit tests for the `lunagate` module: json, crypto, re, shared, time, log,
 * phase checks.
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/lapi.c"
#include "../../src/common.h"

#include <lauxlib.h>
#include <lualib.h>
#include <unistd.h>

/* Runs `code` (a chunk that returns true, or false/nil plus a reason). */
static void check(lua_State *L, const char *code, const char *desc)
{
    int top = lua_gettop(L);
    if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 2, 0) != LUA_OK) {
        ok(0, "%s", desc);
        printf("#   error: %s\n", lua_tostring(L, -1));
        lua_settop(L, top);
        return;
    }
    int good = lua_toboolean(L, -2);
    ok(good, "%s", desc);
    if (!good)
        printf("#   %s\n", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no reason)");
    lua_settop(L, top);
}

static char log_buf[2048];
static void sink(int level, const char *scope, const char *msg, size_t len)
{
    (void)level;
    snprintf(log_buf, sizeof(log_buf), "%s|%.*s", scope, (int)len, msg);
}

/* A stand-in for lapi_request.c: lg.request.path() reads the opaque request pointer. */
static int fake_path(lua_State *L)
{
    lg_lapi_check_phase(L, LG_PHASE_ACCESS, "path");
    const char *p = lg_lapi_current_req(L);
    lua_pushstring(L, p ? p : "");
    return 1;
}

int main(void)
{
    lg_shared_declare("cache", 0, 3);
    lg_shared_declare("big", 4096, 0);

    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lg_lapi_ctx_t actx = {.phase = LG_PHASE_LOAD, .ctx_ref = LUA_NOREF, .rec_ref = LUA_NOREF};
    lg_lapi_ctx_set(L, &actx);
    luaL_requiref(L, "lunagate", luaopen_lunagate, 0);
    lua_newtable(L);
    lua_pushcfunction(L, fake_path);
    lua_setfield(L, -2, "path");
    lua_setfield(L, -2, "request");
    lua_pop(L, 1);
    check(L, "local lg = require 'lunagate'; return type(lg.version) == 'string'", "module loads");
    check(L, "local lg = require 'lunagate'; return lg.phase() == 'init', lg.phase()",
          "phase init");

    /* ---- json ---- */
    check(L,
          "local j = require('lunagate').json; local v = j.decode('{\"n\":3,\"f\":1.5,\"a\":[1,2],"
          "\"big\":18014398509481985}')\n"
          "return math.type(v.n) == 'integer' and math.type(v.a[2]) == 'integer' and "
          "math.type(v.f) == 'float' and math.type(v.big) == 'float', "
          "math.type(v.n)..math.type(v.f)",
          "json.decode keeps integers integers (within 2^53)");
    check(L, "local j = require('lunagate').json; return math.type(j.decode('42')) == 'integer'",
          "json.decode top-level integer");
    check(L,
          "local j = require('lunagate').json; local v, err = j.decode('{bad')\n"
          "return v == nil and type(err) == 'string', tostring(err)",
          "json.decode of bad input returns nil, err");
    check(L,
          "local j = require('lunagate').json\n"
          "local s = j.encode({ts = 1764180000000001, f = 0.1, u = 'a/b', q = 'x\"\\n'})\n"
          "local ok = s:find('\"ts\":1764180000000001', 1, true) and s:find('\"f\":0.1', 1, true)"
          " and s:find('\"u\":\"a/b\"', 1, true) and s:find('\"q\":\"x\\\\\"\\\\n\"', 1, true)\n"
          "return ok ~= nil, s",
          "json.encode: exact integers, short floats, unescaped slash, escapes");
    check(L,
          "local j = require('lunagate').json\n"
          "return j.encode({1, 2, 3}) == '[1,2,3]' and j.encode({}) == '{}' and "
          "j.encode(setmetatable({}, j.array_mt)) == '[]' and j.encode(j.empty_array) == '[]' and "
          "j.encode(j.null) == 'null' and j.encode({a = j.null}) == '{\"a\":null}', "
          "j.encode({1,2,3})",
          "json.encode arrays, empty array, null");
    check(L,
          "local j = require('lunagate').json; local t = {}; t.self = t\n"
          "local s, err = j.encode(t); local s2, err2 = j.encode({f = print})\n"
          "return s == nil and err:find('deep') and s2 == nil and err2 ~= nil, err",
          "json.encode cycles and functions return nil, err");
    check(L,
          "local j = require('lunagate').json; local ok = pcall(j.decode, {})\n"
          "return ok == false",
          "json.decode with a wrong argument raises");

    /* ---- crypto ---- */
    check(L,
          "local c = require('lunagate').crypto\n"
          "return c.hex(c.sha256('abc')) == "
          "'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad' and "
          "c.sha256_hex('abc') == c.hex(c.sha256('abc'))",
          "sha256('abc') known answer");
    check(L,
          "local c = require('lunagate').crypto\n"
          "return c.hmac_sha256_hex('Jefe', 'what do ya want for nothing?') == "
          "'5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843'",
          "HMAC-SHA256 RFC 4231 test case 2");
    check(L,
          "local c = require('lunagate').crypto\n"
          "local ok = c.base64_encode('') == '' and c.base64_encode('f') == 'Zg==' and "
          "c.base64_encode('foobar') == 'Zm9vYmFy' and c.base64_decode('Zm9vYg==') == 'foob' and "
          "c.base64_decode('Zm9vYg') == 'foob' and c.base64_encode('\\255\\254', true) == '__4'\n"
          "local bin = ''; for i = 0, 255 do bin = bin .. string.char(i) end\n"
          "return ok and c.base64_decode(c.base64_encode(bin)) == bin and "
          "c.base64_decode(c.base64_encode(bin, true)) == bin",
          "base64 known answers and round trip (std and url)");
    check(L,
          "local c = require('lunagate').crypto; local v, err = c.base64_decode('a*b=')\n"
          "return v == nil and err == 'invalid base64'",
          "base64_decode of bad input returns nil, err");
    check(L,
          "local c = require('lunagate').crypto\n"
          "local a, b = c.random_bytes(16), c.random_hex(8)\n"
          "return #a == 16 and #b == 16 and b:match('^[0-9a-f]+$') and a ~= c.random_bytes(16)",
          "random bytes and hex");

    /* ---- re ---- */
    check(L,
          "local re = require('lunagate').re\n"
          "local m = re.match('model=gpt-4o-mini', [[model=(?<name>[\\w-]+)]])\n"
          "return m and m[0] == 'model=gpt-4o-mini' and m[1] == 'gpt-4o-mini' and "
          "m.name == 'gpt-4o-mini', m and m[1]",
          "re.match captures and named groups");
    check(L,
          "local re = require('lunagate').re\n"
          "return re.match('abc', 'x') == nil and re.match('ABC', 'abc', 'i') ~= nil",
          "re.match no match / caseless flag");
    check(L,
          "local re = require('lunagate').re; local a, b = re.find('hello world', 'wor')\n"
          "local c = re.find('aXbX', 'X', nil, 3)\n"
          "return a == 7 and b == 9 and c == 4",
          "re.find offsets and init");
    check(L,
          "local re = require('lunagate').re\n"
          "local s, n = re.gsub('a1b22c333', '[0-9]+', '<$0>')\n"
          "local s2 = re.gsub('john smith', '(\\\\w+) (\\\\w+)', '$2 $1')\n"
          "local s3 = re.gsub('abc', 'b*', '-')\n"
          "local s4 = re.gsub('x=1,y=2', '(\\\\w)=(\\\\d)', function(m) return m[2] .. m[1] end)\n"
          "return s == 'a<1>b<22>c<333>' and n == 3 and s2 == 'smith john' and s3 == '-a-c-' and"
          " s4 == '1x,2y', s .. '|' .. s2 .. '|' .. s3 .. '|' .. s4",
          "re.gsub templates, empty matches, function replacement");
    check(L,
          "local re = require('lunagate').re\n"
          "local t = re.split('a, b,,c', ',\\\\s*'); local t2 = re.split('a b c', ' ', nil, 2)\n"
          "return #t == 4 and t[1] == 'a' and t[2] == 'b' and t[3] == '' and t[4] == 'c' and "
          "#t2 == 2 and t2[2] == 'b c'",
          "re.split with limit");
    check(L,
          "local re = require('lunagate').re; local v, err = re.match('x', '(')\n"
          "local v2, err2 = re.match('x', 'x', 'Q')\n"
          "return v == nil and err:find('bad regex') and v2 == nil and err2:find('flag'), err",
          "re: bad pattern and bad flag return nil, err");
    check(L,
          "local re = require('lunagate').re\n"
          "for i = 1, 600 do assert(re.find('k' .. i, 'k' .. i .. '$')) end\n"
          "return re.find('k1', 'k1$') == 1",
          "re cache stays bounded and correct past its size");
    check(L,
          "local re = require('lunagate').re\n"
          "local v, err = re.match(string.rep('a', 30) .. 'b', '(a+)+$')\n"
          "return v == nil and err and err:find('limit'), tostring(err)",
          "re: catastrophic backtracking stops at the match limit");

    /* ---- shared ---- */
    check(L,
          "local d = require('lunagate').shared.cache\n"
          "assert(d:set('a', 'x')); assert(d:set('n', 5)); assert(d:set('b', true))\n"
          "local ok, err = d:set('c', 1)\n"
          "return d:get('a') == 'x' and d:get('n') == 5 and d:get('b') == true and ok == false "
          "and err == 'no memory', tostring(err)",
          "shared: set/get types; full dict gives false, 'no memory'");
    check(
        L,
        "local d = require('lunagate').shared.cache\n"
        "local v = d:incr('n', 2); local v2, e2 = d:incr('a', 1); local v3, e3 = d:incr('zz', 1)\n"
        "assert(d:delete('b')); local v4 = d:incr('zz', 1, 10)\n"
        "return v == 7 and math.type(v) == 'integer' and v2 == nil and e2 == 'not a number' "
        "and v3 == nil and e3 == 'not found' and v4 == 11 and d:get('b') == nil",
        "shared: incr, errors, init value, delete");
    check(
        L,
        "local d = require('lunagate').shared.cache; d:flush_all()\n"
        "assert(d:set('t', 'v', 0.05)); local ttl = d:ttl('t')\n"
        "local ok, err = d:add('t', 'w')\n"
        "return d:get('t') == 'v' and ttl > 0 and ttl <= 0.05 and ok == false and err == 'exists'",
        "shared: ttl set, add on existing key");
    usleep(80 * 1000);
    check(L,
          "local d = require('lunagate').shared.cache\n"
          "return d:get('t') == nil and d:ttl('t') == nil and d:add('t', 'w') == true",
          "shared: entry expires after its ttl");
    check(L,
          "local d = require('lunagate').shared.big\n"
          "assert(d:set('k', string.rep('x', 1000)))\n"
          "local ok, err = d:set('k2', string.rep('y', 5000))\n"
          "return ok == false and err == 'no memory' and #d:get('k') == 1000",
          "shared: byte limit");
    check(L,
          "local lg = require('lunagate'); local ok, err = pcall(function() return lg.shared.nope "
          "end)\n"
          "local ok2, err2 = pcall(lg.shared.cache.set, lg.shared.cache, 'k', {})\n"
          "return not ok and err:find('no such dictionary') and not ok2, err",
          "shared: unknown dict and bad value raise");

    /* ---- time ---- */
    check(L,
          "local lg = require('lunagate'); local t, us = lg.time.now(), lg.time.now_us()\n"
          "local m1 = lg.time.monotonic_us(); local m2 = lg.time.monotonic_us()\n"
          "return math.type(us) == 'integer' and math.abs(t - us / 1e6) < 1 and m2 >= m1 and "
          "t > 1.6e9 and lg.now == lg.time.now and lg.time.format(0) == "
          "'1970-01-01T00:00:00.000000Z', lg.time.format(0)",
          "time: now, now_us, monotonic, format");

    /* ---- log and phases ---- */
    lg_log_set_sink(sink);
    check(L, "require('lunagate').log.warn('hello ', 42, ' ', true); return true", "log.warn");
    ok(strstr(log_buf, "lua|hello 42 true") != NULL, "log line joins its arguments");
    check(L,
          "local lg = require('lunagate'); local ok, err = pcall(lg.log.set_field, 'k', 'v')\n"
          "local ok2, err2 = pcall(lg.request.path)\n"
          "return not ok and err:find(\"set_field: not allowed in phase 'init'\") and not ok2 and "
          "err2:find(\"path: not allowed in phase 'init'\"), err",
          "wrong phase raises naming the function");

    actx.phase = LG_PHASE_LOG;
    actx.plugin = "demo";
    actx.req = (void *)"/v1/chat";
    check(L,
          "local lg = require('lunagate'); lg.log.set_field('a', 1); lg.log.set_field('b', 'x');"
          " lg.log.set_field('a', 2)\n"
          "local ok, err = pcall(lg.request.path)\n"
          "return lg.phase() == 'log' and lg.plugin_name() == 'demo' and type(lg.ctx) == 'table' "
          "and not ok and err:find(\"not allowed in phase 'log'\"), err",
          "log phase: set_field, phase name, ctx, phase check");
    lua_rawgeti(L, LUA_REGISTRYINDEX, actx.rec_ref);
    lua_getfield(L, -1, "fields");
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -1, 2);
    ok(lua_rawlen(L, -3) == 2 && lua_tointeger(L, -1) == 2,
       "set_field keeps first-use order and replaces values");
    lua_pop(L, 4);
    log_buf[0] = 0;
    check(L, "require('lunagate').log.err('bad thing'); return true", "log.err in a plugin");
    ok(strstr(log_buf, "plugin=demo: bad thing") != NULL, "log line names the plugin: %s", log_buf);
    actx.phase = LG_PHASE_ACCESS;
    check(L, "return require('lunagate').request.path() == '/v1/chat'",
          "current request reaches the (fake) request namespace");
    lg_log_set_sink(NULL);

    lua_close(L);
    lg_shared_reset();
    return test_done();
}
