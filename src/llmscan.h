/* llmscan.h -- single-pass extraction of the LLM fields of OpenAI chat-completions
 * traffic (request, response, SSE stream), without decoding the JSON into Lua tables.
 * SPDX-License-Identifier: MIT
 *
 * The results are those of lua/lunagate/llm/openai_chat.lua (parse_request,
 * parse_response, parse_event) on the text as lua-cjson 2.1.0 decodes it, with cjson's
 * defaults: a text cjson rejects is rejected here (with cjson's error message), and a
 * text cjson accepts is accepted, including what cjson tolerates beyond RFC 8259:
 * numbers as strtod() reads them (01, 1., +1, 0x1p3, inf, nan), raw control characters
 * in strings, and a NUL byte ending the text. Nesting is limited to 1000 levels.
 * Duplicate keys: the last one wins. Keys are compared after unescaping.
 *
 * The JSON scanner never allocates, never recurses (deep values are skipped with a bit
 * stack) and never reads past `len`: inputs need not be NUL-terminated. Only the SSE
 * decoder owns memory. Everything here is reentrant; one object per request. */
#ifndef LG_LLMSCAN_H
#define LG_LLMSCAN_H

#include <stddef.h>
#include <stdint.h>

#define LG_JSON_MAX_DEPTH 1000 /* cjson's decode_max_depth default */

/* The contents of a JSON string as it appears between the quotes (borrowed from the
 * scanned text). esc = 1 when it holds backslash escapes: decode with lg_jstr_unescape. */
typedef struct lg_jstr {
    const char *p;
    size_t n;
    int esc;
} lg_jstr_t;

/* Decodes the escapes of `s` (\" \\ \/ \b \f \n \r \t \uXXXX, surrogate pairs to 4-byte
 * UTF-8, \u0000 to a NUL byte) into `out`. Writes at most `cap` bytes, never a partial
 * UTF-8 sequence, and no terminating NUL. Returns the number of bytes written. */
size_t lg_jstr_unescape(const lg_jstr_t *s, char *out, size_t cap);

/* ---- Request ---- */

/* A request parameter as U.params() keeps it. */
enum { LG_JV_NONE = 0, LG_JV_INT, LG_JV_FLOAT, LG_JV_STRING, LG_JV_BOOL };

/* Only the member for `kind` is set. */
typedef struct lg_jval {
    int kind;    /* LG_JV_*; LG_JV_NONE: not set */
    int64_t i;   /* LG_JV_INT */
    double d;    /* LG_JV_FLOAT */
    int b;       /* LG_JV_BOOL */
    lg_jstr_t s; /* LG_JV_STRING */
} lg_jval_t;

/* Indexes of lg_llm_req_t.params, named as in rec.llm.params. */
enum {
    LG_LLM_P_TEMPERATURE,
    LG_LLM_P_TOP_P,
    LG_LLM_P_MAX_TOKENS, /* from max_tokens, or max_completion_tokens (which wins) */
    LG_LLM_P_FREQUENCY_PENALTY,
    LG_LLM_P_PRESENCE_PENALTY,
    LG_LLM_P_SEED,
    LG_LLM_P_N,
    LG_LLM_P_REASONING_EFFORT,
    LG_LLM_P_TOP_K,
    LG_LLM_NPARAMS
};
extern const char *const lg_llm_param_names[LG_LLM_NPARAMS];

typedef struct lg_llm_req {
    lg_jstr_t model; /* "model", when a string (rec.llm.request_model) */
    int has_model;
    int stream;             /* "stream" is true */
    int has_stream_options; /* "stream_options" present with any value, null included */
    /* Numbers become LG_JV_INT for max_tokens, seed, n and top_k (floored; a value beyond
     * int64 stays LG_JV_FLOAT as in Lua; NaN or infinity leaves the param unset), else
     * LG_JV_FLOAT; strings and booleans are kept; other types are ignored. */
    lg_jval_t params[LG_LLM_NPARAMS];
    int has_params; /* U.params() returned a table: at least one param of a kept type
                     * (the table can be empty: see NaN above) */
} lg_llm_req_t;

/* Scans a chat-completions request body. Returns 0 with `out` filled, or -1 when the
 * body is not valid JSON (err: cjson's message, e.g. "Expected value but found T_END at
 * character 1") or not an object (err: "expected an object"); the gateway answers
 * 400 "invalid JSON in request body: <err>". Slices in `out` borrow `json`. */
int lg_llmscan_request(const char *json, size_t len, lg_llm_req_t *out, char *err, size_t errlen);

/* ---- Response and stream ---- */

#define LG_LLM_STR_MAX    128 /* model and id copies, NUL included */
#define LG_LLM_FINISH_MAX 8   /* finish reasons kept */
#define LG_LLM_FINISH_LEN 32  /* each, NUL included */

enum {
    LG_LLM_U_INPUT = 1 << 0,        /* prompt_tokens */
    LG_LLM_U_OUTPUT = 1 << 1,       /* completion_tokens */
    LG_LLM_U_TOTAL = 1 << 2,        /* total_tokens, or input + output when absent */
    LG_LLM_U_CACHED_INPUT = 1 << 3, /* prompt_tokens_details.cached_tokens */
    LG_LLM_U_CACHE_WRITE = 1 << 4,  /* prompt_tokens_details.cache_write_tokens */
    LG_LLM_U_REASONING = 1 << 5,    /* completion_tokens_details.reasoning_tokens */
};

/* What rec.llm accumulates over one response. Zero it (memset or = {0}) before the
 * first call. Strings are unescaped, NUL-terminated copies (model_len/id_len exclude
 * the NUL; a \u0000 inside is kept), truncated without splitting a UTF-8 sequence. */
typedef struct lg_llm_resp {
    char model[LG_LLM_STR_MAX]; /* response_model */
    char id[LG_LLM_STR_MAX];    /* response_id */
    size_t model_len, id_len;
    int has_model, has_id;
    char finish[LG_LLM_FINISH_MAX][LG_LLM_FINISH_LEN]; /* finish_reasons, first seen first */
    uint8_t finish_len[LG_LLM_FINISH_MAX];
    int nfinish;
    /* Usage (set_usage semantics: a field absent from a later usage object keeps its
     * value). Values beyond int64, which Lua would hold as floats, are clamped. */
    int64_t input, output, total, cached_input, cache_write, reasoning;
    unsigned usage_mask; /* LG_LLM_U_* of the fields set */
    /* Where Lua calls U.first_token: the caller stamps first_token_us when this turns 1
     * (a response body that is an object or array; a stream chunk with a choice). */
    int first_token;
    int error; /* a stream event had a top-level "error" key (any value, null included) */
    int done;  /* the stream sent "[DONE]" */
    /* internal: the choice index of each kept finish reason, for "once per index" */
    struct {
        int64_t v; /* the integer, or the bits of the double when flt */
        int flt;
    } finish_key[LG_LLM_FINISH_MAX];
} lg_llm_resp_t;

/* The Lua reference raises an error on a choices[] element that is a number, boolean
 * or null (it indexes it): what it set before that is applied, the usage is not. For a
 * stream, Lua also drops the events that followed in the same on_body call. */
#define LG_LLMSCAN_RAISED 1

/* A non-streaming chat.completion body (call only for a status below 400): model and id
 * (when strings, replacing earlier values), choices[].finish_reason (index from
 * choices[].index, else the position), usage. Returns 0; LG_LLMSCAN_RAISED; or -1 when
 * the body is not valid JSON, leaving `acc` untouched. A valid body that is not an
 * object or array changes nothing. */
int lg_llmscan_response(const char *json, size_t len, lg_llm_resp_t *acc);

/* One SSE event's data: "[DONE]", an error object, or a chat.completion.chunk (model and
 * id only while unset, finish reasons, usage; "usage": null changes nothing). Empty data
 * and data that is not valid JSON change nothing (-1 for the latter). Returns as
 * lg_llmscan_response. The data may be an lg_sse_t buffer: nothing of it is kept. */
int lg_llmscan_event(const char *data, size_t len, lg_llm_resp_t *acc);

/* ---- SSE decoding (lua/lunagate/llm/sse.lua) ----
 * Feed the body in chunks split anywhere; each event's data is passed to on_data (its
 * "data:" lines joined with "\n") when its blank line arrives. Lines end with LF, CRLF
 * or CR (also a CR and LF split across feeds); lines starting with ':' are comments;
 * one space after "data:" is dropped; "event", "id" and other fields are ignored; a
 * UTF-8 BOM is dropped when the first non-empty feed starts with all 3 of its bytes (as
 * sse.lua does: a BOM split over feeds stays in the first line). The data pointer
 * is valid during the call only: it points into the fed chunk, or into the decoder's
 * buffer when the event had to be assembled. on_data must not feed the same decoder. */
#define LG_SSE_DEFAULT_MAX (1024 * 1024)

typedef struct lg_sse lg_sse_t;
typedef void lg_sse_data_cb(void *arg, const char *data, size_t len);

/* max_bytes caps the event being assembled (0: LG_SSE_DEFAULT_MAX). Aborts on OOM. */
lg_sse_t *lg_sse_new(size_t max_bytes);
void lg_sse_free(lg_sse_t *s);

/* Returns 0, or -1 when the pending line and data would exceed max_bytes ("sse: event
 * exceeds <max_bytes> bytes"). Like the Lua decoder, a feed that fails delivers none of
 * its events, and every later feed fails too. */
int lg_sse_feed(lg_sse_t *s, const char *p, size_t n, lg_sse_data_cb *on_data, void *arg);

#endif
