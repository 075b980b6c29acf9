/* test_llmscan.c -- chat-completions scanning against the provider fixtures, cjson's
 * accept/reject rules and messages, SSE framing split at every offset, a fuzz smoke.
 * SPDX-License-Identifier: MIT
 *
 * Run from the repository root (fixture paths are relative to it). Inputs are copied
 * into buffers of their exact size, without a NUL, so that a read past `len` shows
 * under ASan. */
#include "test.h"

#include "../../src/llmscan.c"

#include <stdint.h>
#include <stdlib.h>

#define FX "spec/fixtures/providers/"

/* ---- helpers ---- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    *len = 0;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc(n ? (size_t)n : 1);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n)
            *len = (size_t)n;
        else {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* An exact-size, unterminated copy of s. */
static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    memcpy(p, s, n);
    return p;
}

/* Scans an exact-size copy of s, kept until the next call: r's slices point into it. */
static int req(const char *s, lg_llm_req_t *r, char *err, size_t errlen)
{
    static char *last;
    size_t n = strlen(s);

    free(last);
    last = dup_exact(s, n);
    return lg_llmscan_request(last, n, r, err, errlen);
}

/* The request's error message, or "" when it parses. */
static const char *req_err(const char *s)
{
    static char err[160];
    lg_llm_req_t r;
    err[0] = '\0';
    if (req(s, &r, err, sizeof(err)) == 0)
        return "";
    return err;
}

static int req_errn(const char *s, size_t n, char *err, size_t errlen)
{
    lg_llm_req_t r;
    char *p = dup_exact(s, n);
    int rc = lg_llmscan_request(p, n, &r, err, errlen);
    free(p);
    return rc;
}

static int jstr_is(const lg_jstr_t *s, const char *want)
{
    char buf[256];
    size_t n = lg_jstr_unescape(s, buf, sizeof(buf));
    return n == strlen(want) && memcmp(buf, want, n) == 0;
}

static int resp(const char *s, lg_llm_resp_t *acc)
{
    size_t n = strlen(s);
    char *p = dup_exact(s, n);
    int rc = lg_llmscan_response(p, n, acc);
    free(p);
    return rc;
}

static int event(const char *s, lg_llm_resp_t *acc)
{
    size_t n = strlen(s);
    char *p = dup_exact(s, n);
    int rc = lg_llmscan_event(p, n, acc);
    free(p);
    return rc;
}

/* Collects a stream: each event's data (separated by '\x1e') and the accumulator. */
typedef struct {
    char data[16384];
    size_t n;
    int events;
    int raised;
    lg_llm_resp_t acc;
} stream_t;

static void on_data(void *arg, const char *data, size_t len)
{
    stream_t *st = arg;
    if (st->n + len + 1 <= sizeof(st->data)) {
        memcpy(st->data + st->n, data, len);
        st->n += len;
        st->data[st->n++] = '\x1e';
    }
    st->events++;
    if (lg_llmscan_event(data, len, &st->acc) == LG_LLMSCAN_RAISED)
        st->raised++;
}

/* Feeds text in pieces of `chunk` bytes (0: whole), each an exact-size copy. */
static int feed(stream_t *st, const char *text, size_t len, size_t chunk, size_t max)
{
    lg_sse_t *s = lg_sse_new(max);
    int rc = 0;

    memset(st, 0, sizeof(*st));
    if (!chunk)
        chunk = len ? len : 1;
    for (size_t off = 0; off < len && rc == 0; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        char *p = dup_exact(text + off, n);
        rc = lg_sse_feed(s, p, n, on_data, st);
        free(p);
    }
    lg_sse_free(s);
    return rc;
}

static int streams_equal(const stream_t *a, const stream_t *b)
{
    return a->n == b->n && memcmp(a->data, b->data, a->n) == 0 && a->events == b->events &&
           memcmp(&a->acc, &b->acc, sizeof(a->acc)) == 0;
}

/* Replaces every "\n" of text with `eol`. */
static char *with_eol(const char *text, size_t len, const char *eol, size_t *out_len)
{
    size_t el = strlen(eol), o = 0;
    char *out = malloc(len * el + 1);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            memcpy(out + o, eol, el);
            o += el;
        } else {
            out[o++] = text[i];
        }
    }
    *out_len = o;
    return out;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
    uint64_t x = rng_state; /* xorshift64: a fixed seed, the same run every time */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* ---- tests ---- */

static void test_request_fixtures(void)
{
    static const char *const files[] = {
        FX "openai/completions/requests/basic.json",
        FX "openai/completions/requests/stream.json",
        FX "openai/completions/requests/stream_with_options.json",
        FX "custom/completions/requests/basic.json",
        FX "azure/completions/requests/basic.json",
    };
    lg_llm_req_t r[LG_ARRAY_SIZE(files)];
    char *text[LG_ARRAY_SIZE(files)];
    char err[128];

    for (size_t i = 0; i < LG_ARRAY_SIZE(files); i++) {
        size_t n;
        text[i] = slurp(files[i], &n);
        err[0] = '\0';
        ok(text[i] && lg_llmscan_request(text[i], n, &r[i], err, sizeof(err)) == 0,
           "request fixture %s scans %s", files[i] + sizeof(FX) - 1, err);
    }

    /* openai basic: max_completion_tokens becomes max_tokens, an integer */
    ok(r[0].has_model && jstr_is(&r[0].model, "gpt-4o-mini") && !r[0].model.esc, "basic: model");
    ok(!r[0].stream && !r[0].has_stream_options, "basic: not streaming");
    ok(r[0].has_params, "basic: params");
    ok(r[0].params[LG_LLM_P_TEMPERATURE].kind == LG_JV_FLOAT &&
           r[0].params[LG_LLM_P_TEMPERATURE].d == 0.7,
       "basic: temperature 0.7");
    ok(r[0].params[LG_LLM_P_TOP_P].kind == LG_JV_FLOAT && r[0].params[LG_LLM_P_TOP_P].d == 0.9,
       "basic: top_p 0.9");
    ok(r[0].params[LG_LLM_P_MAX_TOKENS].kind == LG_JV_INT &&
           r[0].params[LG_LLM_P_MAX_TOKENS].i == 256,
       "basic: max_completion_tokens -> max_tokens 256");
    ok(r[0].params[LG_LLM_P_FREQUENCY_PENALTY].d == 0.5 &&
           r[0].params[LG_LLM_P_PRESENCE_PENALTY].d == 0.25,
       "basic: penalties");
    ok(r[0].params[LG_LLM_P_SEED].kind == LG_JV_INT && r[0].params[LG_LLM_P_SEED].i == 42,
       "basic: seed 42 is an integer");
    ok(r[0].params[LG_LLM_P_N].kind == LG_JV_NONE &&
           r[0].params[LG_LLM_P_TOP_K].kind == LG_JV_NONE &&
           r[0].params[LG_LLM_P_REASONING_EFFORT].kind == LG_JV_NONE,
       "basic: absent params unset");

    ok(jstr_is(&r[1].model, "gpt-4o-mini") && r[1].stream && !r[1].has_stream_options &&
           !r[1].has_params,
       "stream: streaming, no stream_options, no params");
    ok(r[2].stream && r[2].has_stream_options, "stream_with_options: stream_options present");
    ok(jstr_is(&r[3].model, "meta-llama/Llama-3.1-8B-Instruct") && !r[3].stream &&
           r[3].params[LG_LLM_P_MAX_TOKENS].kind == LG_JV_INT &&
           r[3].params[LG_LLM_P_MAX_TOKENS].i == 16,
       "custom: model and max_tokens 16");
    ok(jstr_is(&r[4].model, "gpt-4o-deploy") && !r[4].has_params, "azure: model, no params");
    ok(strcmp(lg_llm_param_names[LG_LLM_P_MAX_TOKENS], "max_tokens") == 0 &&
           strcmp(lg_llm_param_names[LG_LLM_P_TOP_K], "top_k") == 0,
       "param names");
    for (size_t i = 0; i < LG_ARRAY_SIZE(files); i++)
        free(text[i]);
}

static void test_request_rules(void)
{
    lg_llm_req_t r;
    char err[160];

    /* U.params corners */
    ok(req("{\"max_tokens\":5,\"max_completion_tokens\":7}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_MAX_TOKENS].i == 7,
       "max_completion_tokens wins over max_tokens, whatever the key order");
    ok(req("{\"max_completion_tokens\":7,\"max_tokens\":5}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_MAX_TOKENS].i == 7,
       "... in either order");
    ok(req("{\"max_tokens\":5,\"max_completion_tokens\":null}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_MAX_TOKENS].i == 5,
       "a null max_completion_tokens leaves max_tokens");
    ok(req("{\"max_tokens\":5,\"max_completion_tokens\":NaN}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_MAX_TOKENS].kind == LG_JV_NONE && r.has_params,
       "a NaN max_completion_tokens unsets max_tokens; params stays a table");
    ok(req("{\"seed\":-Infinity}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_SEED].kind == LG_JV_NONE && r.has_params,
       "an infinite integer param: set to nil, params {}");
    ok(req("{\"max_tokens\":\"many\"}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_MAX_TOKENS].kind == LG_JV_STRING &&
           jstr_is(&r.params[LG_LLM_P_MAX_TOKENS].s, "many"),
       "a string param is kept");
    ok(req("{\"top_k\":true,\"temperature\":false}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_TOP_K].kind == LG_JV_BOOL && r.params[LG_LLM_P_TOP_K].b == 1 &&
           r.params[LG_LLM_P_TEMPERATURE].kind == LG_JV_BOOL &&
           r.params[LG_LLM_P_TEMPERATURE].b == 0,
       "boolean params are kept");
    ok(req("{\"n\":{},\"top_p\":[1]}", &r, err, sizeof(err)) == 0 && !r.has_params,
       "table params are ignored");
    ok(req("{\"n\":2.7,\"top_k\":-2.5,\"seed\":1e300}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_N].kind == LG_JV_INT && r.params[LG_LLM_P_N].i == 2 &&
           r.params[LG_LLM_P_TOP_K].i == -3 && r.params[LG_LLM_P_SEED].kind == LG_JV_FLOAT &&
           r.params[LG_LLM_P_SEED].d == 1e300,
       "integer params are floored; beyond int64 they stay floats");
    ok(req("{\"n\":9007199254740993}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_N].i == 9007199254740992LL,
       "numbers are doubles first, as in cjson");
    ok(req("{\"temperature\":-0.0,\"reasoning_effort\":3}", &r, err, sizeof(err)) == 0 &&
           r.params[LG_LLM_P_TEMPERATURE].d == 0 && !signbit(r.params[LG_LLM_P_TEMPERATURE].d) &&
           r.params[LG_LLM_P_REASONING_EFFORT].kind == LG_JV_FLOAT,
       "float params are v + 0.0 (-0.0 -> 0.0; a numeric reasoning_effort is a float)");
    ok(req("{\"reasoning_effort\":\"high\"}", &r, err, sizeof(err)) == 0 &&
           jstr_is(&r.params[LG_LLM_P_REASONING_EFFORT].s, "high"),
       "reasoning_effort string");
    ok(req("{\"temperature\":0.1,\"top_p\":1e-7,\"frequency_penalty\":123456.789e-3}", &r, err,
           sizeof(err)) == 0 &&
           r.params[LG_LLM_P_TEMPERATURE].d == 0.1 && r.params[LG_LLM_P_TOP_P].d == 1e-7 &&
           r.params[LG_LLM_P_FREQUENCY_PENALTY].d == 123.456789,
       "decimal values match strtod");
    ok(req("{\"temperature\":0.30000000000000004441,\"top_p\":2.2250738585072011e-308}", &r, err,
           sizeof(err)) == 0 &&
           r.params[LG_LLM_P_TEMPERATURE].d == strtod("0.30000000000000004441", NULL) &&
           r.params[LG_LLM_P_TOP_P].d == strtod("2.2250738585072011e-308", NULL),
       "long decimals go through strtod");

    {
        /* numbers of 64 bytes and more are converted in place: only before a delimiter */
        char big[256], num[128];
        snprintf(num, sizeof(num), "0.%070d1e-3", 0);
        snprintf(big, sizeof(big), "{\"temperature\":%s,\"seed\":%070d7}", num, 0);
        ok(req(big, &r, err, sizeof(err)) == 0 &&
               r.params[LG_LLM_P_TEMPERATURE].d == strtod(num, NULL) &&
               r.params[LG_LLM_P_SEED].i == 7,
           "numbers longer than 64 bytes");
        snprintf(big, sizeof(big), "{\"temperature\":%070d1e", 0);
        ok(req(big, &r, err, sizeof(err)) == -1, "a long number cut at the end (no over-read)");
        snprintf(big, sizeof(big), "{\"temperature\":%070d1.", 0);
        ok(req(big, &r, err, sizeof(err)) == -1, "... or after its point");
    }

    /* fields */
    ok(req("{\"model\":\"a\",\"model\":\"b\"}", &r, err, sizeof(err)) == 0 &&
           jstr_is(&r.model, "b"),
       "duplicate keys: the last one wins");
    ok(req("{\"model\":\"a\",\"model\":5}", &r, err, sizeof(err)) == 0 && !r.has_model,
       "... even when it is not a string");
    ok(req("{\"mod\\u0065l\":\"x\\/y\\u00e9\"}", &r, err, sizeof(err)) == 0 && r.has_model &&
           r.model.esc && jstr_is(&r.model, "x/y\xc3\xa9"),
       "escaped key and value are decoded");
    ok(req("{\"model\":\"\"}", &r, err, sizeof(err)) == 0 && r.has_model && r.model.n == 0,
       "empty model is a string");
    ok(req("{\"stream\":\"true\"}", &r, err, sizeof(err)) == 0 && !r.stream,
       "stream must be the boolean true");
    ok(req("{\"stream\":true,\"stream\":false}", &r, err, sizeof(err)) == 0 && !r.stream,
       "last stream wins");
    ok(req("{\"stream\":true,\"stream_options\":null}", &r, err, sizeof(err)) == 0 && r.stream &&
           r.has_stream_options,
       "stream_options null is present (cjson.null is not nil)");
    ok(req("{\"messages\":[{\"stream\":true,\"model\":\"inner\"}],\"x\":{\"model\":1}}", &r, err,
           sizeof(err)) == 0 &&
           !r.stream && !r.has_model,
       "nested keys do not count");
    ok(req("  {\"model\":\"m\"}\r\n\t ", &r, err, sizeof(err)) == 0 && r.has_model,
       "surrounding whitespace");
    ok(req_errn("{\"model\":\"m\"}\0garbage", 21, err, sizeof(err)) == 0,
       "a NUL byte ends the text, as for cjson");

    /* cjson's tolerance beyond RFC 8259 is kept: the Lua path accepts these */
    ok(req("{\"temperature\":01,\"top_p\":1.,\"seed\":0x10,\"n\":+2,\"top_k\":-.5e1}", &r, err,
           sizeof(err)) == 0 &&
           r.params[LG_LLM_P_TEMPERATURE].d == 1 && r.params[LG_LLM_P_TOP_P].d == 1 &&
           r.params[LG_LLM_P_SEED].i == 16 && r.params[LG_LLM_P_N].i == 2 &&
           r.params[LG_LLM_P_TOP_K].i == -5,
       "strtod numbers: 01, 1., 0x10, +2, -.5e1");
    ok(req("{\"temperature\":inf,\"top_p\":-Infinity,\"frequency_penalty\":nan(123)}", &r, err,
           sizeof(err)) == 0 &&
           r.params[LG_LLM_P_TEMPERATURE].d == INFINITY &&
           r.params[LG_LLM_P_TOP_P].d == -INFINITY &&
           r.params[LG_LLM_P_FREQUENCY_PENALTY].d != r.params[LG_LLM_P_FREQUENCY_PENALTY].d,
       "inf, -Infinity, nan(...)");
    ok(req("{\"model\":\"tab\there\x01\x1f\"}", &r, err, sizeof(err)) == 0 &&
           jstr_is(&r.model, "tab\there\x01\x1f"),
       "raw control characters in strings");

    /* invalid texts: cjson's messages, verbatim */
    ok_streq(req_err(""), "Expected value but found T_END at character 1", "empty");
    ok_streq(req_err("{\"model\":\"gpt"),
             "Expected value but found unexpected end of string at character 14",
             "unterminated string");
    ok_streq(req_err("{\"model\":\"m\""),
             "Expected comma or object end but found T_END at character 13", "truncated object");
    ok_streq(req_err("{\"model\":"), "Expected value but found T_END at character 10",
             "truncated after colon");
    ok_streq(req_err("{\"model\":\"m\",}"),
             "Expected object key string but found T_OBJ_END at character 14",
             "trailing comma in object");
    ok_streq(req_err("{\"a\":[1,]}"), "Expected value but found T_ARR_END at character 9",
             "trailing comma in array");
    ok_streq(req_err("{\"a\":\"\\q\"}"),
             "Expected value but found invalid escape code at character 7", "bad escape");
    ok_streq(req_err("{\"a\":\"\\u12g4\"}"),
             "Expected value but found invalid unicode escape code at character 7",
             "bad \\u escape");
    ok_streq(req_err("{\"a\":\"x\\udc00\"}"),
             "Expected value but found invalid unicode escape code at character 8",
             "lone low surrogate");
    ok_streq(req_err("{\"a\":\"\\ud800\\u0041\"}"),
             "Expected value but found invalid unicode escape code at character 7",
             "unpaired high surrogate");
    ok_streq(req_err("{\"a\":\"\\ud800"),
             "Expected value but found invalid unicode escape code at character 7",
             "high surrogate at the end");
    ok_streq(req_err("{\"a\":\"\\"), "Expected value but found invalid escape code at character 7",
             "backslash at the end");
    ok_streq(req_err("{\"a\":-}"), "Expected value but found invalid number at character 6",
             "bad number -");
    ok_streq(req_err("{\"a\":+x}"), "Expected value but found invalid number at character 6",
             "bad number +x");
    ok_streq(req_err("{\"a\":.5}"), "Expected value but found invalid token at character 6",
             "bad number .5");
    ok_streq(req_err("{\"a\":1e}"),
             "Expected comma or object end but found invalid token at character 7",
             "bad number 1e (strtod reads 1)");
    ok_streq(req_err("{\"a\":0x}"),
             "Expected comma or object end but found invalid token at character 7",
             "bad number 0x (strtod reads 0)");
    ok_streq(req_err("{\"a\":1.5.2}"),
             "Expected comma or object end but found invalid token at character 9",
             "bad number 1.5.2");
    ok_streq(req_err("{\"a\":tru}"), "Expected value but found invalid token at character 6",
             "bad literal");
    ok_streq(req_err("{\"a\":True}"), "Expected value but found invalid token at character 6",
             "literals are lowercase");
    ok_streq(req_err("{\"a\":nul}"), "Expected value but found invalid token at character 6",
             "bad null");
    ok_streq(req_err("{\"model\":\"m\"} x"),
             "Expected the end but found invalid token at character 15", "trailing garbage");
    ok_streq(req_err("{} {}"), "Expected the end but found T_OBJ_BEGIN at character 4",
             "two objects");
    ok_streq(req_err("{\"a\" 1}"), "Expected colon but found T_NUMBER at character 6",
             "missing colon");
    ok_streq(req_err("{\"a\":1 \"b\":2}"),
             "Expected comma or object end but found T_STRING at character 8", "missing comma");
    ok_streq(req_err("{1:2}"), "Expected object key string but found T_NUMBER at character 2",
             "non-string key");
    ok_streq(req_err("{\"a\" \"b\\x\"}"),
             "Expected colon but found invalid escape code at character 8",
             "a bad token where a colon is expected is reported as the token's error");
    ok_streq(req_err("{\"a\":1}\f"), "Expected the end but found invalid token at character 8",
             "form feed is not whitespace");
    ok_streq(req_err("\xef\xbb\xbf{}"), "Expected value but found invalid token at character 1",
             "a BOM is not skipped");
    ok_streq(req_err("[1,2]"), "expected an object", "top-level array");
    ok_streq(req_err("[]"), "expected an object", "top-level empty array");
    ok_streq(req_err("\"str\""), "expected an object", "top-level string");
    ok_streq(req_err("42"), "expected an object", "top-level number");
    ok(req_errn("\0{}", 3, err, sizeof(err)) == -1 &&
           strcmp(err, "JSON parser does not support UTF-16 or UTF-32") == 0,
       "a NUL in the first two bytes: cjson's UTF-16 message");
    ok(req_errn("{", 1, err, sizeof(err)) == -1 &&
           strcmp(err, "Expected object key string but found T_END at character 2") == 0,
       "a lone brace");
    ok(req_errn("{\"model\":\"m\"}", 12, err, sizeof(err)) == -1, "one byte short");
    ok(req_errn("{\"model\":\"m\"}", 13, err, 4) == 0, "exact length");
    ok(req_errn("{\"a\":1}", 7, NULL, 0) == 0 && req_errn("{\"a\":}", 6, NULL, 0) == -1,
       "err may be NULL");
    ok(req_errn("{\"a\":\"xx\"", 9, err, 8) == -1 && strlen(err) == 7,
       "err is truncated to errlen");

    /* nesting: 1000 levels pass, 1001 fail, a bomb neither crashes nor recurses */
    {
        size_t n = 100000;
        char *bomb = malloc(2 * n + 16), *p;
        memset(bomb, '[', n);
        ok(req_errn(bomb, n, err, sizeof(err)) == -1 &&
               strcmp(err, "Found too many nested data structures (1001) at character 1001") == 0,
           "100000 '[': -1, %s", err);
        memset(bomb, '{', 1);
        p = bomb + 1;
        for (int i = 0; i < 999; i++) {
            memcpy(p, "\"k\":[", 5);
            p += 5;
            if (i < 998) {
                memcpy(p, "{", 1);
                p++;
            }
        }
        ok(req_errn(bomb, (size_t)(p - bomb), err, sizeof(err)) == -1 &&
               strstr(err, "Found too many nested data structures (1001)"),
           "objects and arrays count alike: %s", err);
        p = bomb;
        *p++ = '{';
        memcpy(p, "\"a\":", 4);
        p += 4;
        memset(p, '[', 999);
        p += 999;
        memset(p, ']', 999);
        p += 999;
        *p++ = '}';
        ok(req_errn(bomb, (size_t)(p - bomb), err, sizeof(err)) == 0, "1000 levels are fine");
        p = bomb;
        *p++ = '{';
        memcpy(p, "\"a\":", 4);
        p += 4;
        memset(p, '[', 1000);
        p += 1000;
        memset(p, ']', 1000);
        p += 1000;
        *p++ = '}';
        ok(req_errn(bomb, (size_t)(p - bomb), err, sizeof(err)) == -1 &&
               strcmp(err, "Found too many nested data structures (1001) at character 1005") == 0,
           "1001 levels fail: %s", err);
        free(bomb);
    }
}

static void test_unescape(void)
{
    char out[64];
    lg_jstr_t s;
    size_t n;

#define JS(lit) (s.p = lit, s.n = sizeof(lit) - 1, s.esc = 1, &s)
    n = lg_jstr_unescape(JS("a\\n\\t\\\"\\\\\\/\\b\\f\\r"), out, sizeof(out));
    ok(n == 9 && memcmp(out, "a\n\t\"\\/\b\f\r", 9) == 0, "simple escapes");
    n = lg_jstr_unescape(JS("\\u0041\\u00e9\\u20AC"), out, sizeof(out));
    ok(n == 6 && memcmp(out, "A\xc3\xa9\xe2\x82\xac", 6) == 0, "\\u to 1, 2 and 3 UTF-8 bytes");
    n = lg_jstr_unescape(JS("\\ud83d\\ude00!"), out, sizeof(out));
    ok(n == 5 && memcmp(out, "\xf0\x9f\x98\x80!", 5) == 0, "surrogate pair to 4 bytes");
    n = lg_jstr_unescape(JS("\\uDBFF\\uDFFF"), out, sizeof(out));
    ok(n == 4 && memcmp(out, "\xf4\x8f\xbf\xbf", 4) == 0, "highest code point");
    n = lg_jstr_unescape(JS("a\\u0000b"), out, sizeof(out));
    ok(n == 3 && memcmp(out, "a\0b", 3) == 0, "\\u0000 is a NUL byte");
    n = lg_jstr_unescape(JS("abc\\u00e9"), out, 4);
    ok(n == 3 && memcmp(out, "abc", 3) == 0, "truncation keeps whole characters (escape)");
    n = lg_jstr_unescape(JS("\\ud83d\\ude00"), out, 3);
    ok(n == 0, "a 4-byte character does not fit in 3");
    n = lg_jstr_unescape(JS("abcdef\\n"), out, 4);
    ok(n == 4 && memcmp(out, "abcd", 4) == 0, "truncation in a plain run");
    s.p = "ab\xc3\xa9";
    s.n = 4;
    s.esc = 0;
    ok(lg_jstr_unescape(&s, out, 3) == 2, "raw UTF-8 is not split either");
    ok(lg_jstr_unescape(&s, out, 4) == 4 && memcmp(out, "ab\xc3\xa9", 4) == 0, "raw copy");
    ok(lg_jstr_unescape(&s, out, 0) == 0, "cap 0");
    n = lg_jstr_unescape(JS("x\\"), out, sizeof(out));
    ok(n == 1, "a trailing backslash (never scanned) is dropped");
    n = lg_jstr_unescape(JS("\\uzzzz"), out, sizeof(out));
    ok(n >= 1 && n <= 5, "a bad \\u (never scanned) stays in bounds");
#undef JS
}

static void test_response_fixtures(void)
{
    lg_llm_resp_t acc;
    size_t n;
    char *text = slurp(FX "openai/completions/responses/basic.json", &n);

    memset(&acc, 0, sizeof(acc));
    ok(text && lg_llmscan_response(text, n, &acc) == 0, "responses/basic.json scans");
    ok_streq(acc.model, "gpt-4o-mini-2024-07-18", "basic: response model");
    ok(acc.has_model && acc.model_len == 22, "basic: model length");
    ok_streq(acc.id, "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "basic: response id");
    ok(acc.nfinish == 1 && strcmp(acc.finish[0], "stop") == 0 && acc.finish_len[0] == 4,
       "basic: finish_reasons [stop]");
    ok(acc.input == 1117 && acc.output == 46 && acc.total == 1163, "basic: 1117 + 46 = 1163");
    ok(acc.cached_input == 1024 && acc.reasoning == 12, "basic: cached 1024, reasoning 12");
    ok(acc.usage_mask == (LG_LLM_U_INPUT | LG_LLM_U_OUTPUT | LG_LLM_U_TOTAL |
                          LG_LLM_U_CACHED_INPUT | LG_LLM_U_REASONING),
       "basic: no cache_write_tokens");
    ok(acc.first_token && !acc.error && !acc.done, "basic: first token, no error");
    free(text);

    text = slurp(FX "openai/completions/responses/error_401.json", &n);
    memset(&acc, 0, sizeof(acc));
    ok(text && lg_llmscan_response(text, n, &acc) == 0 && !acc.has_model && !acc.has_id &&
           acc.nfinish == 0 && acc.usage_mask == 0,
       "responses/error_401.json: no fields");
    free(text);
}

static void test_response_rules(void)
{
    lg_llm_resp_t acc;

    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"choices\":[{\"index\":1,\"finish_reason\":\"length\"},"
            "{\"index\":0,\"finish_reason\":\"stop\"},{\"index\":1,\"finish_reason\":\"x\"}]}",
            &acc) == 0 &&
           acc.nfinish == 2 && strcmp(acc.finish[0], "length") == 0 &&
           strcmp(acc.finish[1], "stop") == 0,
       "finish reasons once per index, first seen first");
    ok(resp("{\"choices\":[{\"finish_reason\":\"again\"},{\"finish_reason\":\"new\"},"
            "{\"finish_reason\":\"third\"}]}",
            &acc) == 0 &&
           acc.nfinish == 3 && strcmp(acc.finish[2], "third") == 0,
       "index from the position, and remembered across calls");

    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"choices\":[{\"index\":2.9,\"finish_reason\":\"a\"},"
            "{\"index\":\"2\",\"finish_reason\":\"b\"},{\"index\":2,\"finish_reason\":\"c\"},"
            "\"text\",[1],{\"finish_reason\":null},{\"index\":1e300,\"finish_reason\":\"d\"},"
            "{\"index\":1e300,\"finish_reason\":\"e\"},{\"finish_reason\":\"f\",\"finish_reason\":"
            "7}]}",
            &acc) == 0 &&
           acc.nfinish == 3 && strcmp(acc.finish[0], "a") == 0 && strcmp(acc.finish[1], "b") == 0 &&
           strcmp(acc.finish[2], "d") == 0,
       "U.int index (2.9 -> 2), a string index is the position, floats beyond int64 are keys");

    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"model\":\"m\",\"choices\":[{\"finish_reason\":\"stop\"},null,"
            "{\"index\":5,\"finish_reason\":\"late\"}],\"usage\":{\"prompt_tokens\":1}}",
            &acc) == LG_LLMSCAN_RAISED &&
           acc.has_model && acc.nfinish == 1 && acc.usage_mask == 0,
       "a null choice raises in Lua: earlier fields kept, usage not applied");

    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"choices\":{\"0\":{\"finish_reason\":\"stop\"}},\"model\":7,\"id\":null}", &acc) ==
               0 &&
           acc.nfinish == 0 && !acc.has_model && !acc.has_id && acc.first_token,
       "choices as an object: ipairs sees nothing; non-string model and id ignored");

    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5}}", &acc) == 0 &&
           acc.total == 15 && (acc.usage_mask & LG_LLM_U_TOTAL),
       "total = input + output when absent");
    ok(resp("{\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":7}}", &acc) == 0 &&
           acc.input == 20 && acc.output == 7 && acc.total == 15,
       "... and only while unset, as set_usage does");
    ok(resp("{\"usage\":null}", &acc) == 0 && acc.input == 20, "usage null changes nothing");
    ok(resp("{\"usage\":{\"prompt_tokens\":\"30\",\"completion_tokens\":NaN,"
            "\"prompt_tokens_details\":{\"cached_tokens\":3.7,\"cache_write_tokens\":2}}}",
            &acc) == 0 &&
           acc.input == 20 && acc.output == 7 && acc.cached_input == 3 && acc.cache_write == 2,
       "non-numbers and NaN leave fields; 3.7 floors to 3; cache_write_tokens");

    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":1},"
            "\"prompt_tokens_details\":null},\"usage\":{\"completion_tokens\":2,"
            "\"completion_tokens_details\":{\"reasoning_tokens\":4}}}",
            &acc) == 0 &&
           acc.usage_mask == (LG_LLM_U_OUTPUT | LG_LLM_U_REASONING) && acc.reasoning == 4,
       "a second usage key replaces the first");
    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,"
            "\"prompt_tokens_details\":{\"cached_tokens\":1},\"prompt_tokens_details\":[]}}",
            &acc) == 0 &&
           acc.usage_mask == (LG_LLM_U_INPUT | LG_LLM_U_OUTPUT | LG_LLM_U_TOTAL),
       "a later non-object details key reads as {}");
    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"usage\":{\"prompt_tokens\":1e30,\"completion_tokens\":-1e30}}", &acc) == 0 &&
           acc.input == INT64_MAX && acc.output == INT64_MIN,
       "usage beyond int64 is clamped");
    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"usage\":{\"prompt_tokens\":9223372036854774784,\"completion_tokens\":4096}}",
            &acc) == 0 &&
           acc.total == (int64_t)((uint64_t)9223372036854774784ULL + 4096),
       "input + output wraps as Lua integers do");

    memset(&acc, 0, sizeof(acc));
    ok(resp("{\"model\":\"m\\u00e9\",\"model\":\"m2\"}", &acc) == 0 && strcmp(acc.model, "m2") == 0,
       "last model wins");
    ok(resp("{\"model\":\"other\"}", &acc) == 0 && strcmp(acc.model, "other") == 0,
       "a response replaces the model");
    ok(resp("{\"model\":\"x\",\"choices\":[}", &acc) == -1 && strcmp(acc.model, "other") == 0,
       "invalid JSON changes nothing");
    ok(resp("[{\"model\":\"y\"}]", &acc) == 0 && strcmp(acc.model, "other") == 0,
       "a top-level array has no fields");
    memset(&acc, 0, sizeof(acc));
    ok(resp("\"just a string\"", &acc) == 0 && !acc.first_token, "a scalar body is ignored");
    ok(resp("[]", &acc) == 0 && acc.first_token, "an array body still counts as parsed");

    {
        char big[400];
        memset(&acc, 0, sizeof(acc));
        snprintf(big, sizeof(big), "{\"model\":\"%0200d\",\"id\":\"%0130d\\u00e9\"}", 0, 0);
        ok(resp(big, &acc) == 0 && acc.model_len == LG_LLM_STR_MAX - 1 &&
               strlen(acc.model) == LG_LLM_STR_MAX - 1 && acc.id_len == LG_LLM_STR_MAX - 1,
           "long strings are truncated to fit");
    }
    {
        char many[1024];
        size_t o = (size_t)snprintf(many, sizeof(many), "{\"choices\":[");
        for (int i = 0; i < 12; i++)
            o += (size_t)snprintf(many + o, sizeof(many) - o, "%s{\"finish_reason\":\"r%d\"}",
                                  i ? "," : "", i);
        snprintf(many + o, sizeof(many) - o, "]}");
        memset(&acc, 0, sizeof(acc));
        ok(resp(many, &acc) == 0 && acc.nfinish == LG_LLM_FINISH_MAX &&
               strcmp(acc.finish[7], "r7") == 0,
           "the first %d finish reasons are kept", LG_LLM_FINISH_MAX);
    }
}

static void test_events(void)
{
    lg_llm_resp_t acc;

    memset(&acc, 0, sizeof(acc));
    ok(event("{\"id\":\"c1\",\"model\":\"m1\",\"choices\":[]}", &acc) == 0 && acc.has_model &&
           !acc.first_token,
       "a chunk without choices: no first token");
    ok(event("{\"id\":\"c2\",\"model\":\"m2\",\"choices\":[{\"delta\":{}}]}", &acc) == 0 &&
           strcmp(acc.model, "m1") == 0 && strcmp(acc.id, "c1") == 0 && acc.first_token,
       "model and id only while unset; a choice is a first token");
    ok(event("{\"choices\":[{\"index\":0,\"finish_reason\":\"stop\"}],\"usage\":null}", &acc) ==
               0 &&
           acc.nfinish == 1 && acc.usage_mask == 0,
       "finish reason; usage null changes nothing");
    ok(event("{\"choices\":[{\"index\":0,\"finish_reason\":\"stop\"}]}", &acc) == 0 &&
           acc.nfinish == 1,
       "the same index again is not repeated");
    ok(event("{\"error\":null,\"usage\":{\"prompt_tokens\":1}}", &acc) == 0 && acc.error &&
           acc.usage_mask == 0,
       "an error key (even null) stops the event");
    ok(event("not json", &acc) == -1 && event("", &acc) == 0 && event("[1]", &acc) == 0 &&
           event("3", &acc) == 0,
       "invalid JSON, empty data, array and scalar: no change");
    ok(!acc.done && event("[DONE]", &acc) == 0 && acc.done, "[DONE]");
    ok(event("[DONE] ", &acc) == -1, "[DONE] exactly");
    ok(event("{\"choices\":[true]}", &acc) == LG_LLMSCAN_RAISED, "a boolean choice raises");
}

static void test_streams(void)
{
    static const char *const files[] = {
        FX "openai/completions/streams/include_usage.sse",
    };
    stream_t *whole = malloc(sizeof(*whole)), *part = malloc(sizeof(*part));

    for (size_t f = 0; f < LG_ARRAY_SIZE(files); f++) {
        size_t n;
        char *text = slurp(files[f], &n);
        int bad = 0;

        ok(text && feed(whole, text, n, 0, 0) == 0, "%s feeds", files[f] + sizeof(FX) - 1);
        ok(whole->events == 8, "8 events");
        ok_streq(whole->acc.model, "gpt-4o-mini-2024-07-18", "stream: model");
        ok_streq(whole->acc.id, "chatcmpl-123", "stream: id");
        ok(whole->acc.nfinish == 1 && strcmp(whole->acc.finish[0], "stop") == 0,
           "stream: finish_reasons [stop]");
        ok(whole->acc.input == 9 && whole->acc.output == 6 && whole->acc.total == 15 &&
               whole->acc.cached_input == 0 && whole->acc.reasoning == 0,
           "stream: usage 9 + 6 = 15, cached 0, reasoning 0");
        ok(whole->acc.first_token && whole->acc.done && !whole->acc.error,
           "stream: first token, done");

        for (size_t chunk = 1; chunk <= 64; chunk++) {
            if (feed(part, text, n, chunk, 0) != 0 || !streams_equal(whole, part)) {
                bad++;
                printf("#   chunk size %zu differs\n", chunk);
            }
        }
        ok(bad == 0, "split in chunks of 1..64 bytes: same events and fields");

        /* the same stream with CRLF and CR line ends */
        {
            static const char *const eols[] = {"\r\n", "\r"};
            for (size_t e = 0; e < 2; e++) {
                size_t m;
                char *t2 = with_eol(text, n, eols[e], &m);
                bad = 0;
                for (size_t chunk = 0; chunk <= 64; chunk++)
                    if (feed(part, t2, m, chunk, 0) != 0 || !streams_equal(whole, part))
                        bad++;
                ok(bad == 0, "%s line ends, every split: same result", e ? "CR" : "CRLF");
                free(t2);
            }
        }
        free(text);
    }

    /* framing details */
    {
        static const char s1[] = "\xef\xbb\xbf: comment\nevent: x\nid: 1\ndata:a\ndata: b\ndata\n"
                                 "data:  c\nretry: 5\n\ndata: lone\n\n\n\nevent: only\n\n"
                                 "datum: no\ndata : no\n\ndata:\n\ndata: unterminated";
        static const char want[] = "a\nb\n\n c\x1elone\x1e\x1e";
        int bad = 0;
        for (size_t chunk = 0; chunk <= 40; chunk++)
            if (feed(part, s1, sizeof(s1) - 1, chunk, 0) != 0 || part->n != sizeof(want) - 1 ||
                memcmp(part->data, want, part->n) != 0)
                bad++;
        ok(bad == 0 && part->events == 3,
           "BOM, comments, fields, data: with and without a space, bare data, blank data, "
           "events without data, an unterminated last event");
        ok(feed(part, "\xef\xbb", 2, 0, 0) == 0 && part->events == 0, "a partial BOM");
    }
    {
        /* a BOM split over the first feeds stays part of the first line, as in sse.lua */
        static const char s2[] = "\xef\xbb\xbf"
                                 "data: x\n\ndata: y\n\n";
        ok(feed(part, s2, sizeof(s2) - 1, 1, 0) == 0 && part->events == 1 &&
               feed(whole, s2, sizeof(s2) - 1, 0, 0) == 0 && whole->events == 2,
           "the BOM is dropped only from a first feed that holds all of it");
    }
    {
        static const char s3[] = "data: {\"choices\":[{\"finish_reason\":\"stop\"}],\ndata: "
                                 "\"model\":\"multi\"}\r\n\r\n";
        ok(feed(part, s3, sizeof(s3) - 1, 7, 0) == 0 && part->events == 1 &&
               strcmp(part->acc.model, "multi") == 0 && part->acc.nfinish == 1,
           "an event split over data lines is joined with \\n and scanned");
    }

    /* the cap */
    {
        char buf[256];
        lg_sse_t *s;
        memset(part, 0, sizeof(*part));
        s = lg_sse_new(32);
        ok(lg_sse_feed(s, "data: 0123456789\n\n", 18, on_data, part) == 0 && part->events == 1,
           "an event under the cap");
        snprintf(buf, sizeof(buf), "data: short\n\ndata: %040d\n\n", 0);
        ok(lg_sse_feed(s, buf, strlen(buf), on_data, part) == -1 && part->events == 1,
           "a feed that crosses the cap fails and delivers none of its events");
        ok(lg_sse_feed(s, "data: x\n\n", 9, on_data, part) == -1 && part->events == 1,
           "and the decoder stays failed");
        lg_sse_free(s);

        s = lg_sse_new(32);
        memset(part, 0, sizeof(*part));
        int rc = 0;
        for (int i = 0; i < 40 && rc == 0; i++)
            rc = lg_sse_feed(s, "a", 1, on_data, part);
        ok(rc == -1, "an unterminated line grows to the cap, then fails");
        lg_sse_free(s);

        s = lg_sse_new(16);
        memset(part, 0, sizeof(*part));
        rc = 0;
        for (int i = 0; i < 10 && rc == 0; i++)
            rc = lg_sse_feed(s, "data: x\n", 8, on_data, part);
        ok(rc == -1 && part->events == 0, "many data lines count toward the cap (#value + 1 each)");
        lg_sse_free(s);

        s = lg_sse_new(16);
        memset(part, 0, sizeof(*part));
        ok(lg_sse_feed(s, "data: 012345678901234\n\n", 23, on_data, part) == 0 && part->events == 1,
           "#value + 1 == cap passes (sse.lua fails only above it)");
        ok(lg_sse_feed(s, "data: 0123456789012345\n\n", 24, on_data, part) == -1,
           "one more byte fails");
        lg_sse_free(s);
        lg_sse_free(NULL);
    }
    free(whole);
    free(part);
}

/* Random mutations of the fixtures through every entry point: no crash, no read past
 * the end (ASan), results within bounds. A strict prefix of an object must fail. */
static void test_fuzz(void)
{
    static const char *const files[] = {
        FX "openai/completions/requests/basic.json",
        FX "openai/completions/requests/stream_with_options.json",
        FX "openai/completions/responses/basic.json",
        FX "openai/completions/responses/error_401.json",
        FX "openai/completions/streams/include_usage.sse",
    };
    static const char alphabet[] = "{}[]\":,\\u0123456789abcdefeE.+-tnrfx \n\r\t\0\x7f\xc3\xff";
    char *text[LG_ARRAY_SIZE(files)];
    size_t len[LG_ARRAY_SIZE(files)];
    char *buf = malloc(8192);
    stream_t *st = malloc(sizeof(*st));
    int iterations = 20000, bad = 0, prefix_bad = 0, prefixes = 0;

    for (size_t i = 0; i < LG_ARRAY_SIZE(files); i++)
        text[i] = slurp(files[i], &len[i]);
    for (int it = 0; it < iterations; it++) {
        size_t f = (size_t)(rnd() % LG_ARRAY_SIZE(files)), n = len[f];
        int ops = 1 + (int)(rnd() % 6);
        lg_llm_req_t r;
        lg_llm_resp_t acc;
        char err[128], *p;
        int rc;

        if (!text[f] || n > 4096)
            continue;
        memcpy(buf, text[f], n);
        for (int o = 0; o < ops; o++) {
            size_t at = n ? (size_t)(rnd() % n) : 0;
            switch (rnd() % 5) {
            case 0: /* overwrite */
                if (n)
                    buf[at] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                break;
            case 1: /* insert */
                if (n < 8000) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = alphabet[rnd() % (sizeof(alphabet) - 1)];
                    n++;
                }
                break;
            case 2: /* delete */
                if (n) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
                break;
            case 3: /* duplicate a span */
                if (n && n < 4000) {
                    size_t span = 1 + (size_t)(rnd() % 32);
                    if (at + span > n)
                        span = n - at;
                    memmove(buf + at + span, buf + at, n - at);
                    n += span;
                }
                break;
            default: /* truncate */
                n = at;
            }
        }
        p = dup_exact(buf, n);
        err[0] = '\0';
        rc = lg_llmscan_request(p, n, &r, err, sizeof(err));
        if (rc == -1
                ? err[0] == '\0'
                : (rc != 0 || (r.has_model && (r.model.p < p || r.model.p + r.model.n > p + n))))
            bad++;
        memset(&acc, 0, sizeof(acc));
        rc = lg_llmscan_response(p, n, &acc);
        if (rc < -1 || rc > 1 || acc.nfinish > LG_LLM_FINISH_MAX || acc.model_len >= LG_LLM_STR_MAX)
            bad++;
        rc = lg_llmscan_event(p, n, &acc);
        if (rc < -1 || rc > 1)
            bad++;
        free(p);
        if (f == 4) {
            feed(st, buf, n, 1 + (size_t)(rnd() % 97), 1 + (size_t)(rnd() % 2048));
            if (st->acc.nfinish > LG_LLM_FINISH_MAX)
                bad++;
        }

        /* oracle: a prefix of an object that stops before its closing brace is invalid */
        if (f < 4 && len[f] > 2) {
            size_t cut = 1 + (size_t)(rnd() % (len[f] - 2));
            const char *t = text[f];
            size_t close = len[f];
            while (close > 0 && t[close - 1] != '}')
                close--;
            if (cut < close) {
                prefixes++;
                if (req_errn(t, cut, err, sizeof(err)) != -1)
                    prefix_bad++;
            }
        }
    }
    ok(bad == 0, "fuzz: %d mutated inputs through every entry point, results in bounds",
       iterations);
    ok(prefixes > 1000 && prefix_bad == 0, "fuzz: %d truncated objects all rejected", prefixes);
    for (size_t i = 0; i < LG_ARRAY_SIZE(files); i++)
        free(text[i]);
    free(buf);
    free(st);
}

int main(void)
{
    test_request_fixtures();
    test_request_rules();
    test_unescape();
    test_response_fixtures();
    test_response_rules();
    test_events();
    test_streams();
    test_fuzz();
    return test_done();
}
