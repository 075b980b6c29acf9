/* llmnative.c -- the C core's own path for OpenAI chat completions requests.
 * SPDX-License-Identifier: MIT
 *
 * Mirrors what lua/lunagate/llm/init.lua does for such a request (on_request, on_body,
 * on_complete with openai_chat.lua), with llmscan.c in place of cjson: the Lua path
 * decodes the whole request and response into tables, which costs more than the proxying
 * itself. spec/04-integration/20-llm.test.mjs runs the same requests both ways and compares
 * the log lines, metrics and upstream requests. */
#include "llmnative.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"
#include "hooks.h"

#define MAX_RESPONSE (8 * 1024 * 1024) /* as lunagate.llm's max_response_bytes default */

/* ---- Plans ---- */

static char *field_str(lua_State *L, int t, const char *k)
{
    char *s = NULL;
    if (lua_getfield(L, t, k) == LUA_TSTRING)
        s = lg_xstrdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return s;
}

lg_llmn_plan_t *lg_llmn_plan_new(lua_State *L, int idx)
{
    if (!lua_istable(L, idx))
        return NULL;
    idx = lua_absindex(L, idx);
    lg_llmn_plan_t *p = lg_xcalloc(1, sizeof(*p));
    p->host = field_str(L, idx, "host");
    p->sni = field_str(L, idx, "sni");
    p->path = field_str(L, idx, "path");
    p->host_header = field_str(L, idx, "host_header");
    p->auth_name = field_str(L, idx, "auth_name");
    p->auth_value = field_str(L, idx, "auth_value");
    p->provider = field_str(L, idx, "provider");
    lua_getfield(L, idx, "port");
    p->port = (int)lua_tointeger(L, -1);
    lua_getfield(L, idx, "tls");
    p->tls = lua_toboolean(L, -1);
    lua_pop(L, 2);
    if (!p->host || !p->path || !p->host_header || !p->provider || p->port <= 0 ||
        (p->auth_name && !p->auth_value)) {
        lg_llmn_plan_free(p);
        return NULL;
    }
    return p;
}

void lg_llmn_plan_free(lg_llmn_plan_t *p)
{
    if (!p)
        return;
    free(p->host), free(p->sni), free(p->path), free(p->host_header);
    free(p->auth_name), free(p->auth_value), free(p->provider);
    free(p->backend.name), free(p->backend.pool_key), free(p->up_host);
    free(p);
}

/* lunagate.llm detects the wire format from the path: "/chat/completions" at the end is
 * chat completions unless an earlier detector claims it, and those all need a ':' (Gemini,
 * countTokens) or end differently. */
int lg_llmn_path_ok(const char *path, size_t len)
{
    static const char sfx[] = "/chat/completions";
    size_t sl = sizeof(sfx) - 1;
    if (len < sl || memcmp(path + len - sl, sfx, sl) != 0)
        return 0;
    return memchr(path, ':', len) == NULL;
}

/* ---- Requests ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

lg_llmn_t *lg_llmn_request(const lg_llmn_plan_t *plan, const char *body, size_t len,
                           int64_t start_us, char **patched, size_t *plen)
{
    lg_llm_req_t req;
    char err[64];
    *patched = NULL;
    *plen = 0;
    if (!body || lg_llmscan_request(body, len, &req, err, sizeof(err)) != 0)
        return NULL; /* Lua answers with cjson's message */
    if (!req.has_model || req.model.n == 0 || req.model.n >= LG_LLM_STR_MAX)
        return NULL;
    lg_llmn_t *n = lg_xcalloc(1, sizeof(*n));
    size_t ml = lg_jstr_unescape(&req.model, n->model, sizeof(n->model) - 1);
    n->model[ml] = 0;
    if (ml == 0 || memchr(n->model, 0, ml)) {
        free(n);
        return NULL;
    }
    n->plan = plan;
    n->streaming = req.stream;
    n->start_us = start_us;
    if (req.stream && !req.has_stream_options) {
        /* as U.patch_object inserts a new key: right after the opening brace */
        static const char ins[] = "\"stream_options\":{\"include_usage\":true}";
        const char *end = body + len, *open = skip_ws(body, end);
        const char *after = skip_ws(open + 1, end);
        int members = after < end && *after != '}';
        size_t head = (size_t)(open + 1 - body), il = sizeof(ins) - 1;
        char *out = lg_xmalloc(len + il + 2);
        memcpy(out, body, head);
        memcpy(out + head, ins, il);
        size_t o = head + il;
        if (members)
            out[o++] = ',';
        memcpy(out + o, open + 1, len - head);
        *patched = out;
        *plen = o + len - head;
    }
    return n;
}

/* ---- Responses ---- */

void lg_llmn_headers(lg_llmn_t *n, int status, const char *ctype, size_t ctlen)
{
    if (n->sse) { /* a second response head (a retry): start over */
        lg_sse_free(n->sse);
        n->sse = NULL;
    }
    n->len = 0;
    n->overflow = 0;
    n->first_token_us = 0;
    memset(&n->resp, 0, sizeof(n->resp));
    n->status = status;
    n->mode = LG_LLMN_BUFFER;
    for (size_t i = 0; ctype && i + 17 <= ctlen; i++) {
        if (strncasecmp(ctype + i, "text/event-stream", 17) == 0) {
            n->mode = LG_LLMN_SSE;
            n->sse = lg_sse_new(0);
            break;
        }
        if (i + 34 <= ctlen &&
            strncasecmp(ctype + i, "application/vnd.amazon.eventstream", 34) == 0) {
            n->mode = LG_LLMN_NONE; /* not a chat completions body */
            break;
        }
    }
}

static void stamp(lg_llmn_t *n)
{
    if (n->resp.first_token && !n->first_token_us)
        n->first_token_us = lg_now_us();
}

static void parse_buffer(lg_llmn_t *n, const char *data, size_t len)
{
    n->mode = LG_LLMN_NONE; /* parsed once */
    if (n->status >= 400 || len == 0)
        return;
    if (lg_llmscan_response(data, len, &n->resp) >= 0)
        stamp(n);
}

typedef struct {
    lg_llmn_t *n;
    int raised;
} feed_t;

static void on_event(void *arg, const char *data, size_t len)
{
    feed_t *f = arg;
    if (f->raised)
        return; /* Lua's on_body stops at the event whose parse raised */
    int rc = lg_llmscan_event(data, len, &f->n->resp);
    stamp(f->n);
    if (rc == LG_LLMSCAN_RAISED)
        f->raised = 1;
}

void lg_llmn_body(lg_llmn_t *n, const char *data, size_t len, int eof)
{
    if (n->mode == LG_LLMN_SSE) {
        feed_t f = {n, 0};
        if (len)
            lg_sse_feed(n->sse, data, len, on_event, &f);
        return;
    }
    if (n->mode != LG_LLMN_BUFFER || n->overflow)
        return;
    if (eof && n->len == 0) { /* the whole body in one piece: no copy */
        parse_buffer(n, data, len);
        return;
    }
    if (n->len + len > MAX_RESPONSE) {
        n->overflow = 1;
        free(n->buf);
        n->buf = NULL;
        n->len = n->cap = 0;
        return;
    }
    if (n->len + len > n->cap) {
        size_t cap = n->cap ? n->cap : 4096;
        while (cap < n->len + len)
            cap *= 2;
        n->buf = lg_xrealloc(n->buf, cap);
        n->cap = cap;
    }
    if (len)
        memcpy(n->buf + n->len, data, len);
    n->len += len;
    if (eof)
        parse_buffer(n, n->buf, n->len);
}

void lg_llmn_fields(lg_llmn_t *n, int64_t end_us, lg_llm_log_t *f)
{
    /* on_complete: a body cut short is parsed as far as it came */
    if (n->mode == LG_LLMN_BUFFER && !n->overflow && n->len > 0)
        parse_buffer(n, n->buf, n->len);
    const lg_llm_resp_t *u = &n->resp;
    memset(f, 0, sizeof(*f));
    f->operation = "chat";
    f->provider = n->plan->provider;
    f->req_model = n->model;
    f->resp_model = u->has_model ? u->model : NULL;
    if ((f->has_in = (u->usage_mask & LG_LLM_U_INPUT) != 0))
        f->in = u->input;
    if ((f->has_out = (u->usage_mask & LG_LLM_U_OUTPUT) != 0))
        f->out = u->output;
    if ((f->has_cached_in = (u->usage_mask & LG_LLM_U_CACHED_INPUT) != 0))
        f->cached_in = u->cached_input;
    if ((f->has_cache_write = (u->usage_mask & LG_LLM_U_CACHE_WRITE) != 0))
        f->cache_write = u->cache_write;
    if (n->first_token_us) { /* U.finish */
        f->has_ttft = 1;
        f->ttft = (double)(n->first_token_us - n->start_us) / 1e6;
        if (f->has_out && f->out > 1 && end_us >= n->first_token_us) {
            f->has_tpot = 1;
            f->tpot = (double)(end_us - n->first_token_us) / 1e6 / (double)(f->out - 1);
        }
    }
}

void lg_llmn_free(lg_llmn_t *n)
{
    if (!n)
        return;
    free(n->buf);
    if (n->sse)
        lg_sse_free(n->sse);
    free(n);
}
