/* llmnative.h -- the C core's own path for OpenAI chat completions requests.
 * SPDX-License-Identifier: MIT
 *
 * For an `ai:` backend whose chat completions traffic needs nothing Lua-specific (see
 * Backend:native_plan in lua/lunagate/llm/init.lua), the proxy scans the request and the
 * response with llmscan.c instead of calling the provider plugin: same upstream request,
 * same record fields (provider, models, usage, first token time), no Lua state touched.
 * Anything the scanner does not accept (invalid JSON, a missing model, ...) goes the Lua
 * way, which answers it in the client's API shape. */
#ifndef LG_LLMNATIVE_H
#define LG_LLMNATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "llmscan.h"

struct lua_State;

/* A backend's plan, from the table glue.native_plan returns. Immutable once made. */
typedef struct lg_llmn_plan {
    char *host, *sni, *path, *host_header;
    char *auth_name, *auth_value; /* NULL without backendAuth */
    char *provider;               /* rec.llm.provider */
    int port, tls;
    /* made by hooks.c for the worker runtime that owns the plan */
    lg_backend_t backend; /* the upstream, pool key included */
    char *up_host;        /* the Host header sent */
    lg_kv_t hdrs[2];      /* Content-Type and the key's header */
    size_t nhdrs;
} lg_llmn_plan_t;

/* The table at idx as a plan, or NULL when it is not one (nil, missing fields). */
lg_llmn_plan_t *lg_llmn_plan_new(struct lua_State *L, int idx);
void lg_llmn_plan_free(lg_llmn_plan_t *p);

/* 1 when `path` (no query) is one the plan serves: a chat completions path. */
int lg_llmn_path_ok(const char *path, size_t len);

enum { LG_LLMN_NONE, LG_LLMN_BUFFER, LG_LLMN_SSE };

/* One request on the native path. */
typedef struct lg_llmn {
    const lg_llmn_plan_t *plan;
    char model[LG_LLM_STR_MAX]; /* request model, unescaped */
    int streaming;
    int status, mode;
    char *buf; /* LG_LLMN_BUFFER: the body so far */
    size_t len, cap;
    int overflow;
    lg_sse_t *sse;
    lg_llm_resp_t resp;
    int64_t start_us, first_token_us;
} lg_llmn_t;

/* Scans the request body. Returns the request's state, or NULL when Lua must handle it.
 * *patched (malloc'd, *plen bytes) is set when the upstream body differs from the
 * client's: a streaming request without stream_options gets {"include_usage": true} as
 * agentgateway does. */
lg_llmn_t *lg_llmn_request(const lg_llmn_plan_t *plan, const char *body, size_t len,
                           int64_t start_us, char **patched, size_t *plen);
/* The upstream response head: status and content type pick how the body is read. */
void lg_llmn_headers(lg_llmn_t *n, int status, const char *ctype, size_t ctlen);
/* Every body byte in order; eof once at the end. */
void lg_llmn_body(lg_llmn_t *n, const char *data, size_t len, int eof);
/* The record fields for the log line and metrics; strings point into n. */
struct lg_llm_log;
void lg_llmn_fields(lg_llmn_t *n, int64_t end_us, struct lg_llm_log *f);
void lg_llmn_free(lg_llmn_t *n);

#endif
