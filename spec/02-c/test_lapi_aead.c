/* test_lapi_aead.c -- lg.crypto_aead (AES-256-GCM) and the MCP session ids sealed with it
 * (lua/lunagate/mcp/session.lua run on the real module).
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/lapi_aead.c"
#include "lapi.h"

#include <lualib.h>

static const char *gstr(lua_State *L, const char *expr)
{
    static char buf[4][1024];
    static int k;
    char code[512];
    snprintf(code, sizeof(code), "return tostring(%s)", expr);
    if (luaL_dostring(L, code) != LUA_OK)
        printf("# %s\n", lua_tostring(L, -1));
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return buf[k];
}

int main(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "lunagate", luaopen_lunagate, 0); /* lg */
    lg_lapi_inject_aead(L);
    lua_pop(L, 1);
    int rc = luaL_dostring(
        L, "package.path = './lua/?.lua;./lua/?/init.lua;' .. package.path\n"
           "lg = require 'lunagate'; R = {}\n"
           "local a = lg.crypto_aead; local k = string.rep('k', 32)\n"
           "local s = a.seal(k, 'secret', 'aad'); R.alen = #s\n"
           "R.rt = a.open(k, s, 'aad')\n"
           "local t = s:sub(1, 20) .. string.char((s:byte(21) ~ 1)) .. s:sub(22)\n"
           "R.tamper = select(2, a.open(k, t, 'aad'))\n"
           "local tt = s:sub(1, -2) .. string.char((s:byte(-1) ~ 0x80))\n"
           "R.tamper_tag = select(2, a.open(k, tt, 'aad'))\n"
           "R.wrongaad = select(2, a.open(k, s, 'other'))\n"
           "R.wrongkey = select(2, a.open(string.rep('j', 32), s, 'aad'))\n"
           "R.short = select(2, a.open(k, 'abc'))\n"
           "R.twice = a.seal(k, 'x') ~= a.seal(k, 'x')\n"
           "R.badkey = not pcall(a.seal, 'short', 'x')\n"
           "R.empty = a.open(k, a.seal(k, '')) == ''\n"
           "local big = string.rep('z', 100000); R.big = a.open(k, a.seal(k, big)) == big\n"
           "-- the session codec on the real AES-GCM\n"
           "local session = require 'lunagate.mcp.session'\n"
           "local c = assert(session.codec{key = string.rep('ab', 32), aead = a,\n"
           "                               random = lg.crypto.random_bytes})\n"
           "local id = c:encode{targets = {{name = 'time', session = 'up-1', addr = 'x'},\n"
           "                               {name = 'local'}}, version = '2025-06-18'}\n"
           "local st = assert(c:decode(id))\n"
           "R.sess = st.targets[1].name .. '/' .. st.targets[1].session .. '/' ..\n"
           "         st.targets[2].name .. '/' .. tostring(st.targets[2].session) .. '/' .. "
           "st.version\n"
           "R.opaque = not session.b64url_decode(id):find('time', 1, true)\n"
           "local raw = session.b64url_decode(id)\n"
           "local bad = session.b64url_encode(raw:sub(1, 15) .. string.char(raw:byte(16) ~ 4) ..\n"
           "                                  raw:sub(17))\n"
           "R.sess_tamper = select(2, c:decode(bad))\n"
           "local c2 = assert(session.codec{key = string.rep('cd', 32), aead = a})\n"
           "R.sess_otherkey = select(2, c2:decode(id))\n"
           "local plain = assert(session.codec{})\n"
           "R.sess_plain_rejects = select(2, plain:decode(id))\n"
           "R.unique = c:encode{targets = {}} ~= c:encode{targets = {}}\n");
    ok(rc == LUA_OK, "script ran%s%s", rc ? ": " : "", rc ? lua_tostring(L, -1) : "");
    ok_streq(gstr(L, "R.alen"), "34", "sealed = 12 nonce + 6 + 16 tag");
    ok_streq(gstr(L, "R.rt"), "secret", "round trip");
    ok_streq(gstr(L, "R.tamper"), "authentication failed", "tampered ciphertext rejected");
    ok_streq(gstr(L, "R.tamper_tag"), "authentication failed", "tampered tag rejected");
    ok_streq(gstr(L, "R.wrongaad"), "authentication failed", "wrong AAD rejected");
    ok_streq(gstr(L, "R.wrongkey"), "authentication failed", "wrong key rejected");
    ok_streq(gstr(L, "R.short"), "authentication failed", "short input rejected");
    ok_streq(gstr(L, "R.twice"), "true", "random nonces");
    ok_streq(gstr(L, "R.badkey"), "true", "wrong key length raises");
    ok_streq(gstr(L, "R.empty"), "true", "empty plaintext");
    ok_streq(gstr(L, "R.big"), "true", "100 kB plaintext");
    ok_streq(gstr(L, "R.sess"), "time/up-1/local/nil/2025-06-18",
             "session id round trip through AES-GCM");
    ok_streq(gstr(L, "R.opaque"), "true", "sealed session id hides target names");
    ok_streq(gstr(L, "R.sess_tamper"), "invalid session id: authentication failed",
             "tampered session id rejected");
    ok_streq(gstr(L, "R.sess_otherkey"), "invalid session id: authentication failed",
             "session id from another key rejected");
    ok_streq(gstr(L, "R.sess_plain_rejects"), "invalid session id",
             "a plain codec cannot read a sealed id");
    ok_streq(gstr(L, "R.unique"), "true", "ids are unique");
    lua_close(L);
    return test_done();
}
