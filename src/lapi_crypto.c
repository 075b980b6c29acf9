/* lapi_crypto.c -- lg.crypto: SHA-256, HMAC-SHA256, base64, hex and random bytes (OpenSSL).
 * SPDX-License-Identifier: MIT
 *
 * Digests return raw bytes; lg.crypto.hex() (or the *_hex variants) turns them into lowercase
 * hex. Functions are pure and allowed in every phase. */
#include "common.h"
#include "lapi.h"

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>

static void push_hex(lua_State *L, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, n * 2);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    luaL_pushresultsize(&b, n * 2);
}

/* lg.crypto.sha256(data) -> 32 raw bytes */
static int c_sha256(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, n, md);
    lua_pushlstring(L, (const char *)md, sizeof(md));
    return 1;
}

static int c_sha256_hex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, n, md);
    push_hex(L, md, sizeof(md));
    return 1;
}

static int hmac(lua_State *L, int hex)
{
    size_t kn, dn;
    const char *k = luaL_checklstring(L, 1, &kn);
    const char *d = luaL_checklstring(L, 2, &dn);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdn = 0;
    if (!HMAC(EVP_sha256(), k, (int)kn, (const unsigned char *)d, dn, md, &mdn)) {
        lua_pushnil(L);
        lua_pushliteral(L, "hmac failed");
        return 2;
    }
    if (hex)
        push_hex(L, md, mdn);
    else
        lua_pushlstring(L, (const char *)md, mdn);
    return 1;
}

/* lg.crypto.hmac_sha256(key, data) -> 32 raw bytes */
static int c_hmac_sha256(lua_State *L)
{
    return hmac(L, 0);
}
static int c_hmac_sha256_hex(lua_State *L)
{
    return hmac(L, 1);
}

/* lg.crypto.hex(bytes) -> lowercase hex */
static int c_hex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    push_hex(L, (const unsigned char *)s, n);
    return 1;
}

/* lg.crypto.base64_encode(data [, url]) -> text; `url` true gives the URL-safe alphabet
 * without padding (RFC 4648 section 5). */
static int c_b64_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int url = lua_toboolean(L, 2);
    luaL_Buffer b;
    size_t cap = 4 * ((n + 2) / 3) + 1;
    char *out = luaL_buffinitsize(L, &b, cap);
    int m = n ? EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n) : 0;
    if (url) {
        while (m > 0 && out[m - 1] == '=')
            m--;
        for (int i = 0; i < m; i++)
            out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    luaL_pushresultsize(&b, (size_t)m);
    return 1;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* lg.crypto.base64_decode(text) -> bytes, or nil, "invalid base64". Accepts both alphabets,
 * with or without padding. */
static int c_b64_decode(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        goto bad;
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n * 3 / 4 + 3);
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0) {
            lua_pushnil(L); /* discard the buffer by returning other values */
            lua_pushliteral(L, "invalid base64");
            return 2;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    luaL_pushresultsize(&b, o);
    return 1;
bad:
    lua_pushnil(L);
    lua_pushliteral(L, "invalid base64");
    return 2;
}

static int random_into(lua_State *L, lua_Integer n, int hex)
{
    luaL_argcheck(L, n >= 0 && n <= 1024 * 1024, 1, "out of range 0..1048576");
    unsigned char stackbuf[256];
    unsigned char *p = (size_t)n <= sizeof(stackbuf) ? stackbuf : lg_xmalloc((size_t)n);
    int rc = RAND_bytes(p, (int)n);
    if (rc == 1) {
        if (hex)
            push_hex(L, p, (size_t)n);
        else
            lua_pushlstring(L, (const char *)p, (size_t)n);
    }
    if (p != stackbuf)
        free(p);
    if (rc != 1) {
        lua_pushnil(L);
        lua_pushliteral(L, "random source failed");
        return 2;
    }
    return 1;
}

/* lg.crypto.random_bytes(n) -> n random bytes; random_hex(n) -> 2n hex characters. */
static int c_random_bytes(lua_State *L)
{
    return random_into(L, luaL_checkinteger(L, 1), 0);
}
static int c_random_hex(lua_State *L)
{
    return random_into(L, luaL_checkinteger(L, 1), 1);
}

void lg_lapi_inject_crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"sha256", c_sha256},
        {"sha256_hex", c_sha256_hex},
        {"hmac_sha256", c_hmac_sha256},
        {"hmac_sha256_hex", c_hmac_sha256_hex},
        {"hex", c_hex},
        {"base64_encode", c_b64_encode},
        {"base64_decode", c_b64_decode},
        {"random_bytes", c_random_bytes},
        {"random_hex", c_random_hex},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);           /* lg crypto */
    lua_setfield(L, -2, "crypto"); /* lg */
}
