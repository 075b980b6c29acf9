/* lapi_aead.c -- lg.crypto_aead: AES-256-GCM sealing for MCP session ids (OpenSSL EVP).
 * SPDX-License-Identifier: MIT
 *
 * Format of a sealed blob: 12-byte random nonce, ciphertext (same length as the plaintext),
 * 16-byte tag. With random 96-bit nonces one key should seal fewer than 2^32 messages. */
#include "lapi_aead.h"

#include "common.h"

#include <lauxlib.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define NONCE_LEN 12
#define TAG_LEN   16

static const unsigned char *check_key(lua_State *L)
{
    size_t kl;
    const char *k = luaL_checklstring(L, 1, &kl);
    luaL_argcheck(L, kl == 32, 1, "AES-256 key must be 32 bytes");
    return (const unsigned char *)k;
}

/* Runs GCM over `in`; returns the output length or -1 (tag mismatch, OpenSSL failure). */
static int gcm(int enc, const unsigned char *key, const unsigned char *nonce,
               const unsigned char *aad, size_t aadl, const unsigned char *in, size_t n,
               unsigned char *out, unsigned char *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int len = 0, fl = 0,
        ok = c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) &&
             EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc);
    if (ok && aadl)
        ok = EVP_CipherUpdate(c, NULL, &len, aad, (int)aadl);
    if (ok)
        ok = EVP_CipherUpdate(c, out, &len, in, (int)n);
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag);
    if (ok)
        ok = EVP_CipherFinal_ex(c, out + len, &fl) > 0;
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag);
    EVP_CIPHER_CTX_free(c);
    return ok ? len + fl : -1;
}

static int aead_seal(lua_State *L)
{
    const unsigned char *key = check_key(L);
    size_t n, aadl = 0;
    const char *pt = luaL_checklstring(L, 2, &n);
    const char *aad = luaL_optlstring(L, 3, "", &aadl);
    luaL_argcheck(L, n < (1u << 30), 2, "too long");
    unsigned char *out = lg_xmalloc(NONCE_LEN + n + TAG_LEN + 16);
    if (RAND_bytes(out, NONCE_LEN) != 1 ||
        gcm(1, key, out, (const unsigned char *)aad, aadl, (const unsigned char *)pt, n,
            out + NONCE_LEN, out + NONCE_LEN + n) < 0) {
        free(out);
        lua_pushnil(L);
        lua_pushliteral(L, "encryption failed");
        return 2;
    }
    lua_pushlstring(L, (const char *)out, NONCE_LEN + n + TAG_LEN);
    free(out);
    return 1;
}

static int aead_open(lua_State *L)
{
    const unsigned char *key = check_key(L);
    size_t n, aadl = 0;
    const unsigned char *in = (const unsigned char *)luaL_checklstring(L, 2, &n);
    const char *aad = luaL_optlstring(L, 3, "", &aadl);
    if (n < NONCE_LEN + TAG_LEN) {
        lua_pushnil(L);
        lua_pushliteral(L, "authentication failed");
        return 2;
    }
    size_t ctl = n - NONCE_LEN - TAG_LEN;
    unsigned char tag[TAG_LEN];
    memcpy(tag, in + NONCE_LEN + ctl, TAG_LEN);
    unsigned char *out = lg_xmalloc(ctl + 16);
    int r = gcm(0, key, in, (const unsigned char *)aad, aadl, in + NONCE_LEN, ctl, out, tag);
    if (r < 0) {
        free(out);
        lua_pushnil(L);
        lua_pushliteral(L, "authentication failed");
        return 2;
    }
    lua_pushlstring(L, (const char *)out, (size_t)r);
    free(out);
    return 1;
}

void lg_lapi_inject_aead(lua_State *L)
{
    static const luaL_Reg fns[] = {{"seal", aead_seal}, {"open", aead_open}, {NULL, NULL}};
    luaL_newlib(L, fns);                /* lg aead */
    lua_setfield(L, -2, "crypto_aead"); /* lg */
}
