/* lapi_aead.h -- lg.crypto_aead: AES-256-GCM sealing for MCP session ids (OpenSSL EVP).
 * SPDX-License-Identifier: MIT */
#ifndef LG_LAPI_AEAD_H
#define LG_LAPI_AEAD_H

#include <lua.h>

/* Sets lg.crypto_aead on the module table at the top of the stack (stack unchanged):
 *   lg.crypto_aead.seal(key, plaintext [, aad]) -> nonce(12) .. ciphertext .. tag(16)
 *   lg.crypto_aead.open(key, sealed [, aad])    -> plaintext | nil, "authentication failed"
 * `key` is 32 raw bytes (a wrong length raises). Nonces are random (RAND_bytes). Pure
 * functions, allowed in every phase. */
void lg_lapi_inject_aead(lua_State *L);

#endif
