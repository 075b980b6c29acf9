/* llmscan.c -- OpenAI chat-completions fields straight from the JSON text, and an
 * incremental SSE decoder.
 * SPDX-License-Identifier: MIT
 *
 * Parity with the Lua path is the point: the gateway must accept, reject and record
 * exactly what it would with cjson.decode() and openai_chat.lua. So the tokenizer is
 * lua-cjson 2.1.0's decision for decision (which byte starts which token, strtod()'s
 * number syntax, what each error says and where), and the field rules are those of
 * openai_chat.lua and util.lua, including their corners (a NaN max_tokens unsets the
 * param, a second "usage" key replaces the first, "stream_options": null is present).
 *
 * Shape: a tokenizer (next_token), a bounded skipper for values nobody looks at
 * (skip_container: a loop over a bit stack, so nesting costs no C stack), and a few
 * fixed-depth readers for the members that matter. Values are collected into a scratch
 * struct and applied only once the whole text has been validated, because cjson
 * decodes all or nothing.
 *
 * Speed: this runs per request, so the common tokens (strings without escapes, plain
 * integers, punctuation) are handled inline and everything else out of line, the read
 * position is passed and returned rather than stored (a store and reload per token was
 * the largest cost), and nothing large is memset() (GCC makes that `rep stos`, slow to
 * start). */
#include "llmscan.h"

#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- Tokens ---- */

/* cjson's token types; the names appear in its error messages. */
enum {
    T_OBJ_BEGIN,
    T_OBJ_END,
    T_ARR_BEGIN,
    T_ARR_END,
    T_STRING,
    T_NUMBER,
    T_BOOLEAN,
    T_NULL,
    T_COLON,
    T_COMMA,
    T_END,
    T_WHITESPACE,
    T_ERROR,
    T_UNKNOWN
};

static const char *const tok_names[] = {
    "T_OBJ_BEGIN", "T_OBJ_END", "T_ARR_BEGIN", "T_ARR_END", "T_STRING",     "T_NUMBER", "T_BOOLEAN",
    "T_NULL",      "T_COLON",   "T_COMMA",     "T_END",     "T_WHITESPACE", "T_ERROR",  "T_UNKNOWN",
};

typedef struct {
    int type;
    const char *at;   /* where the token starts; for T_ERROR, where cjson reports it */
    const char *s;    /* T_STRING: contents between the quotes; T_NUMBER: its text */
    size_t n;         /* ... and length */
    int esc;          /* T_STRING: holds escapes; T_BOOLEAN: the value */
    const char *what; /* T_ERROR: cjson's description */
} tok_t;

/* The position is not kept here but passed along and returned (NULL after an error),
 * so that it stays in a register instead of going through memory on every token. */
typedef struct {
    const char *base, *end;
    /* the error, as cjson would report it */
    const char *exp; /* "Expected <exp> but found ..."; NULL with msg or depth */
    const char *msg; /* a fixed message */
    tok_t etok;
    int edepth;
    size_t epos;
} scan_t;

/* cjson's whitespace: no \f, no \v. */
static const uint8_t ws_tab[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

static const char *fail(scan_t *sc, const char *exp, const tok_t *t)
{
    sc->exp = exp;
    sc->etok = *t;
    return NULL;
}

/* cjson checks depth on entering a container, with its read pointer after the bracket. */
static const char *fail_depth(scan_t *sc, int depth, const char *p)
{
    sc->exp = NULL;
    sc->edepth = depth;
    sc->epos = (size_t)(p - sc->base);
    return NULL;
}

static void scan_message(const scan_t *sc, char *err, size_t errlen)
{
    if (!err || errlen == 0)
        return;
    if (sc->msg)
        snprintf(err, errlen, "%s", sc->msg);
    else if (!sc->exp)
        snprintf(err, errlen, "Found too many nested data structures (%d) at character %zu",
                 sc->edepth, sc->epos);
    else
        snprintf(err, errlen, "Expected %s but found %s at character %zu", sc->exp,
                 sc->etok.type == T_ERROR ? sc->etok.what : tok_names[sc->etok.type],
                 (size_t)(sc->etok.at - sc->base) + 1);
}

static void tok_error(tok_t *t, const char *at, const char *what)
{
    t->type = T_ERROR;
    t->at = at;
    t->what = what;
}

/* Case-insensitive match of lowercase `lit` at p, within the text. */
static int ci_match(const char *p, const char *end, const char *lit, size_t n)
{
    if ((size_t)(end - p) < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] | 0x20) != (unsigned char)lit[i])
            return 0;
    return 1;
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_xdigit(int c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static int hex4(const char *p, const char *end)
{
    int v = 0;

    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)p[i], d;
        if (is_digit(c))
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* The length of the number glibc's strtod() reads at p, 0 when it reads none (cjson:
 * "invalid number"). cjson hands every number to strtod(), so this is its syntax:
 * an optional sign, then decimal digits with an optional '.' and e-exponent, or 0x hex
 * digits with an optional '.' and p-exponent, or inf, infinity, nan, nan(chars). It
 * reads nothing past `end`, and when it stops before `end`, strtod() stops there too. */
static size_t num_len(const char *p, const char *end)
{
    const char *s = p, *q;
    size_t nd = 0;

    if (s < end && (*s == '+' || *s == '-'))
        s++;
    if (s == end)
        return 0;
    if ((*s | 0x20) == 'i') {
        if (!ci_match(s, end, "inf", 3))
            return 0;
        s += 3;
        if (ci_match(s, end, "inity", 5))
            s += 5;
        return (size_t)(s - p);
    }
    if ((*s | 0x20) == 'n') {
        if (!ci_match(s, end, "nan", 3))
            return 0;
        s += 3;
        if (s < end && *s == '(') {
            for (q = s + 1; q < end && (is_digit(*q) ||
                                        ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z') || *q == '_');
                 q++)
                ;
            if (q < end && *q == ')')
                s = q + 1;
        }
        return (size_t)(s - p);
    }
    if (end - s >= 2 && s[0] == '0' && (s[1] | 0x20) == 'x') {
        for (q = s + 2; q < end && is_xdigit(*q); q++)
            nd++;
        if (q < end && *q == '.')
            for (q++; q < end && is_xdigit(*q); q++)
                nd++;
        if (nd == 0) /* "0x" alone is the number 0 followed by an 'x' */
            return (size_t)(s + 1 - p);
        s = q;
        if (s < end && (*s | 0x20) == 'p') {
            q = s + 1;
            if (q < end && (*q == '+' || *q == '-'))
                q++;
            if (q < end && is_digit(*q)) {
                while (q < end && is_digit(*q))
                    q++;
                s = q;
            }
        }
        return (size_t)(s - p);
    }
    for (; s < end && is_digit(*s); s++)
        nd++;
    if (s < end && *s == '.')
        for (s++; s < end && is_digit(*s); s++)
            nd++;
    if (nd == 0)
        return 0;
    if (s < end && (*s | 0x20) == 'e') {
        q = s + 1;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        if (q < end && is_digit(*q)) {
            while (q < end && is_digit(*q))
                q++;
            s = q;
        }
    }
    return (size_t)(s - p);
}

/* ---- Strings ---- */

/* Whitespace and string runs are most of the text: they are scanned 16 bytes per step
 * with SSE2 (always there on x86-64), else 8 with word arithmetic, the position of the
 * first byte that matters taken straight from the mask. */
#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* 0x80 in each byte of x that is zero, and nowhere else (no borrow between bytes). */
static inline uint64_t zero_bytes(uint64_t x)
{
    return ~(((x & ~HIGHS) + ~HIGHS) | x | ~HIGHS);
}

/* The index of the first byte in memory order whose mask bits are set (m != 0). */
static inline size_t first_byte(uint64_t m)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (size_t)__builtin_clzll(m) >> 3;
#else
    return (size_t)__builtin_ctzll(m) >> 3;
#endif
}

/* The first '"', '\\' or NUL at or after p (NUL ends the text for cjson), or end. */
static inline const char *string_stop(const char *p, const char *end)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i zero = _mm_setzero_si128();
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                         _mm_cmpeq_epi8(v, zero)));
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    while (end - p >= 8) {
        uint64_t v, m;
        memcpy(&v, p, 8);
        m = zero_bytes(v ^ (ONES * '"')) | zero_bytes(v ^ (ONES * '\\')) | zero_bytes(v);
        if (m)
            return p + first_byte(m);
        p += 8;
    }
    while (p < end && *p != '"' && *p != '\\' && *p != '\0')
        p++;
    return p;
}

/* Skips cjson's whitespace; after each whitespace byte a run of spaces (indentation)
 * goes 8 or 16 at a time. */
static inline const char *skip_ws(const char *p, const char *end)
{
    while (p < end && ws_tab[(unsigned char)*p]) {
        p++;
#if defined(__SSE2__)
        if (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
            unsigned m = ~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(' ')));
            p += __builtin_ctz(m); /* bit 16 is set: at most 16 */
            continue;
        }
#endif
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            v ^= ONES * ' ';
            if (v) {
                p += first_byte(v);
                break;
            }
            p += 8;
        }
    }
    return p;
}

/* The rest of a string from p, its first '"', '\\' or NUL: escapes and errors. cjson
 * keeps control characters and any bytes as they are; it rejects unknown escapes, bad
 * \u escapes and lone or unpaired surrogates, each reported at the backslash, and a
 * string cut by the end of the text (or a NUL), reported there. Returns where the
 * string ends (q, its quote, on T_ERROR). */
static const char *scan_string_slow(const scan_t *sc, tok_t *t, const char *q, const char *p)
{
    const char *end = sc->end;
    int esc = 0;

    for (;;) {
        if (p == end || *p == '\0') {
            tok_error(t, p, "unexpected end of string");
            return q;
        }
        if (*p == '"')
            break;
        esc = 1;
        if (end - p < 2) {
            tok_error(t, p, "invalid escape code");
            return q;
        }
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p = string_stop(p + 2, end);
            continue;
        case 'u': {
            int cp = hex4(p + 2, end);
            if (cp < 0 || (cp & 0xFC00) == 0xDC00)
                break;
            if ((cp & 0xFC00) == 0xD800) {
                int lo;
                if (end - p < 8 || p[6] != '\\' || p[7] != 'u')
                    break;
                lo = hex4(p + 8, end);
                if (lo < 0 || (lo & 0xFC00) != 0xDC00)
                    break;
                p = string_stop(p + 12, end);
                continue;
            }
            p = string_stop(p + 6, end);
            continue;
        }
        default:
            tok_error(t, p, "invalid escape code");
            return q;
        }
        tok_error(t, p, "invalid unicode escape code");
        return q;
    }
    t->type = T_STRING;
    t->s = q + 1;
    t->n = (size_t)(p - (q + 1));
    t->esc = esc;
    return p + 1;
}

/* Reads the string whose quote is at q; returns where it ends (q on T_ERROR). */
static inline const char *scan_string(const scan_t *sc, tok_t *t, const char *q)
{
    const char *p = string_stop(q + 1, sc->end);

    if (p < sc->end && *p == '"') { /* no escapes: the usual case */
        t->type = T_STRING;
        t->s = q + 1;
        t->n = (size_t)(p - (q + 1));
        t->esc = 0;
        return p + 1;
    }
    return scan_string_slow(sc, t, q, p);
}

/* Encodes cp (at most 0x10FFFF) as UTF-8 into out, returning the length. */
static size_t utf8_put(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The length of s[0..n) without a UTF-8 sequence cut short at its end. */
static size_t utf8_trim(const char *s, size_t n)
{
    size_t i = n, k = 0, need;
    unsigned char c;

    while (i > 0 && k < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        k++;
    }
    if (i == 0)
        return n;
    c = (unsigned char)s[i - 1];
    need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > k + 1 ? i - 1 : n;
}

size_t lg_jstr_unescape(const lg_jstr_t *s, char *out, size_t cap)
{
    const char *p = s->p, *end = s->p + s->n;
    size_t o = 0;

    if (!s->esc) {
        if (s->n <= cap) {
            memcpy(out, s->p, s->n);
            return s->n;
        }
        memcpy(out, s->p, cap);
        return utf8_trim(out, cap);
    }
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs ? bs : end) - p);
        char tmp[4];
        size_t tn = 1;
        int cp;

        if (run > cap - o) {
            memcpy(out + o, p, cap - o);
            return utf8_trim(out, cap);
        }
        memcpy(out + o, p, run);
        o += run;
        if (!bs)
            break;
        p = bs;
        if (end - p < 2)
            break; /* a trailing backslash: not from a scanned string */
        switch (p[1]) {
        case 'b':
            tmp[0] = '\b';
            break;
        case 'f':
            tmp[0] = '\f';
            break;
        case 'n':
            tmp[0] = '\n';
            break;
        case 'r':
            tmp[0] = '\r';
            break;
        case 't':
            tmp[0] = '\t';
            break;
        case 'u':
            cp = hex4(p + 2, end);
            if (cp < 0) {
                tmp[0] = 'u'; /* not from a scanned string: keep something sane */
                break;
            }
            if ((cp & 0xFC00) == 0xD800 && end - p >= 12 && p[6] == '\\' && p[7] == 'u') {
                int lo = hex4(p + 8, end);
                if (lo >= 0 && (lo & 0xFC00) == 0xDC00) {
                    cp = 0x10000 + ((cp & 0x3FF) << 10 | (lo & 0x3FF));
                    p += 6;
                }
            }
            tn = utf8_put(tmp, (unsigned)cp);
            p += 4;
            break;
        default: /* \" \\ \/ */
            tmp[0] = p[1];
            break;
        }
        p += 2;
        if (tn > cap - o)
            return o; /* whole characters only */
        memcpy(out + o, tmp, tn);
        o += tn;
    }
    return o;
}

/* ---- The tokenizer ---- */

/* The token of a structural byte, plus one (0: not structural). */
static const uint8_t struct_tok[256] = {
    ['{'] = T_OBJ_BEGIN + 1, ['}'] = T_OBJ_END + 1, ['['] = T_ARR_BEGIN + 1,
    [']'] = T_ARR_END + 1,   [','] = T_COMMA + 1,   [':'] = T_COLON + 1,
};

/* Bytes that may continue a number after its leading digits ("1.5", "1e3", "0x1f"). */
static const uint8_t num_more[256] = {['.'] = 1, ['e'] = 1, ['E'] = 1, ['x'] = 1, ['X'] = 1};

/* Everything but strings, plain integers and structural bytes: literals, other
 * numbers, NUL, errors. */
static const char *next_token_slow(const scan_t *sc, const char *p, tok_t *t)
{
    const char *end = sc->end;
    size_t n;

    switch (*p) {
    case '\0': /* cjson reads a NUL-terminated copy: NUL ends the text */
        t->type = T_END;
        return p;
    case 't':
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            t->type = T_BOOLEAN;
            t->esc = 1;
            return p + 4;
        }
        tok_error(t, p, "invalid token");
        return p;
    case 'f':
        if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
            t->type = T_BOOLEAN;
            t->esc = 0;
            return p + 5;
        }
        tok_error(t, p, "invalid token");
        return p;
    case 'n':
        if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            t->type = T_NULL;
            return p + 4;
        }
        /* cjson then tries "nan" */
        /* fall through */
    case 'N':
    case 'i':
    case 'I':
        if (!ci_match(p, end, "inf", 3) && !ci_match(p, end, "nan", 3)) {
            tok_error(t, p, "invalid token");
            return p;
        }
        /* fall through */
    case '+':
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        n = num_len(p, end);
        if (n == 0) {
            tok_error(t, p, "invalid number");
            return p;
        }
        t->type = T_NUMBER;
        t->s = p;
        t->n = n;
        return p + n;
    default:
        tok_error(t, p, "invalid token");
        return p;
    }
}

/* Reads the token at or after p (whitespace skipped) into t and returns where it ends;
 * T_END and T_ERROR do not move past the token's start. Inlined, with the rare cases
 * out of line, so that the common tokens cost no call. */
static inline __attribute__((always_inline)) const char *next_token(const scan_t *sc, const char *p,
                                                                    tok_t *t)
{
    const char *end = sc->end, *s, *d;
    unsigned c;

    p = skip_ws(p, end);
    t->at = p;
    if (p == end) {
        t->type = T_END;
        return p;
    }
    c = (unsigned char)*p;
    if (c == '"')
        return scan_string(sc, t, p);
    if (struct_tok[c]) {
        t->type = struct_tok[c] - 1;
        return p + 1;
    }
    if (c == '-' || c - '0' < 10) { /* a plain integer, whole, or the general case */
        d = s = p + (c == '-');
        while (s < end && (unsigned)(*s - '0') < 10)
            s++;
        if (s > d && (s == end || !num_more[(unsigned char)*s])) {
            t->type = T_NUMBER;
            t->s = p;
            t->n = (size_t)(s - p);
            return s;
        }
    }
    return next_token_slow(sc, p, t);
}

/* The value of a number token, as strtod() computes it. Plain integers and short
 * decimals take an exact shortcut (Clinger's: one correctly rounded operation on exact
 * operands); the rest go to strtod(), on a NUL-terminated copy, or in place when the
 * byte after the number is a delimiter, where strtod stops without looking further
 * (after "1e" it would peek at the next byte, which may be past the end). In a valid
 * text a value is always followed by one of those bytes, so otherwise: 0. */
static double num_value(const scan_t *sc, const tok_t *t)
{
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *p = t->s, *end = t->s + t->n;
    int neg = 0, nd = 0, frac = 0, e = 0;
    uint64_t w = 0;
    char buf[64];

    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    for (; p < end && is_digit(*p) && nd < 19; p++, nd++)
        w = w * 10 + (uint64_t)(*p - '0');
    if (p < end && *p == '.')
        for (p++; p < end && is_digit(*p) && nd < 19; p++, nd++, frac++)
            w = w * 10 + (uint64_t)(*p - '0');
    if (p < end && (*p | 0x20) == 'e' && end - p <= 4) {
        int eneg = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        for (; p < end && is_digit(*p); p++)
            e = e * 10 + (*p - '0');
        if (eneg)
            e = -e;
    }
    if (p == end && nd > 0 && w < (1ULL << 53) && e - frac >= -22 && e - frac <= 22) {
        double d = (double)w;
        d = e - frac < 0 ? d / pow10[frac - e] : d * pow10[e - frac];
        return neg ? -d : d;
    }
    if (t->n < sizeof(buf)) {
        memcpy(buf, t->s, t->n);
        buf[t->n] = '\0';
        return strtod(buf, NULL);
    }
    if (t->s + t->n < sc->end && strchr(",}] \t\r\n", t->s[t->n])) /* NUL included */
        return strtod(t->s, NULL);
    return 0;
}

/* ---- Skipping ---- */

/* Skips and validates the object or array whose opening bracket ends at p, at nesting
 * level `depth` (the top-level value is level 1); returns where it ends. A loop over a
 * bit stack (1 = object) rather than recursion, so no input can exhaust the C stack. */
static const char *skip_container(scan_t *sc, const char *p, int type, int depth)
{
    uint64_t isobj[LG_JSON_MAX_DEPTH / 64 + 1];
    const char *end = sc->end;
    const int base = depth;
    int rel;
    char c;
    tok_t t;

enter:
    if (depth > LG_JSON_MAX_DEPTH)
        return fail_depth(sc, depth, p);
    rel = depth - base;
    if (type == T_OBJ_BEGIN)
        isobj[rel / 64] |= 1ULL << (rel % 64);
    else
        isobj[rel / 64] &= ~(1ULL << (rel % 64));
    p = next_token(sc, p, &t);
    if (type == T_ARR_BEGIN) {
        if (t.type == T_ARR_END)
            goto leave;
        goto value;
    }
    if (t.type == T_OBJ_END)
        goto leave;
key:
    if (t.type != T_STRING)
        return fail(sc, "object key string", &t);
    if (p < end && *p == ':') {
        p++;
    } else {
        p = next_token(sc, p, &t);
        if (t.type != T_COLON)
            return fail(sc, "colon", &t);
    }
    p = next_token(sc, p, &t);
value:
    if ((unsigned)(t.type - T_STRING) > T_NULL - T_STRING) { /* not a scalar */
        if (t.type != T_OBJ_BEGIN && t.type != T_ARR_BEGIN)
            return fail(sc, "value", &t);
        type = t.type;
        depth++;
        goto enter;
    }
next:
    /* ',' or the closing bracket, looked at directly; anything else is tokenized for
     * the error message */
    p = skip_ws(p, end);
    c = p < end ? *p : '\0';
    rel = depth - base;
    if (isobj[rel / 64] >> (rel % 64) & 1) {
        if (c == '}') {
            p++;
            goto leave;
        }
        if (c != ',') {
            next_token(sc, p, &t);
            return fail(sc, "comma or object end", &t);
        }
        p = next_token(sc, p + 1, &t);
        goto key;
    }
    if (c == ']') {
        p++;
        goto leave;
    }
    if (c != ',') {
        next_token(sc, p, &t);
        return fail(sc, "comma or array end", &t);
    }
    p = next_token(sc, p + 1, &t);
    goto value;
leave:
    if (depth == base)
        return p;
    depth--;
    goto next;
}

/* ---- Members and values ---- */

/* What a value was, as far as the Lua code can tell. */
enum { V_ABSENT = 0, V_STRING, V_NUMBER, V_BOOL, V_NULL, V_OBJECT, V_ARRAY };

typedef struct {
    int kind;
    double d;    /* V_NUMBER */
    int b;       /* V_BOOL */
    lg_jstr_t s; /* V_STRING */
} val_t;

/* Reads the value whose first token is t, ending at p (a container's members are at
 * level `depth`), into v when v is not NULL. Returns where the value ends. */
static inline const char *take_value(scan_t *sc, const char *p, const tok_t *t, int depth, val_t *v)
{
    if (!v) { /* a member nobody reads: only validated */
        if ((unsigned)(t->type - T_STRING) <= T_NULL - T_STRING)
            return p;
    } else if (t->type == T_STRING) {
        v->kind = V_STRING;
        v->s.p = t->s;
        v->s.n = t->n;
        v->s.esc = t->esc;
        return p;
    } else if (t->type == T_NUMBER) {
        v->kind = V_NUMBER;
        v->d = num_value(sc, t);
        return p;
    } else if (t->type == T_BOOLEAN) {
        v->kind = V_BOOL;
        v->b = t->esc;
        return p;
    } else if (t->type == T_NULL) {
        v->kind = V_NULL;
        return p;
    }
    if (t->type != T_OBJ_BEGIN && t->type != T_ARR_BEGIN)
        return fail(sc, "value", t);
    if (v)
        v->kind = t->type == T_OBJ_BEGIN ? V_OBJECT : V_ARRAY;
    return skip_container(sc, p, t->type, depth);
}

/* Object members, cjson's way: after '{', obj_first() reads the first key and its colon
 * (*more = 1) or the '}' (*more = 0); after a member's value, obj_next() reads ',' and
 * the next key, or the '}'. They return the position, NULL on error. Loops read:
 *     for (p = obj_first(sc, p, &k, &more); p && more; p = obj_next(sc, p, &k, &more))
 */
static const char *obj_key(scan_t *sc, const char *p, const tok_t *k)
{
    tok_t t;

    if (k->type != T_STRING)
        return fail(sc, "object key string", k);
    if (p < sc->end && *p == ':') /* the usual case, compact or pretty */
        return p + 1;
    p = next_token(sc, p, &t);
    if (t.type != T_COLON)
        return fail(sc, "colon", &t);
    return p;
}

static const char *obj_first(scan_t *sc, const char *p, tok_t *k, int *more)
{
    p = next_token(sc, p, k);
    *more = k->type != T_OBJ_END;
    return *more ? obj_key(sc, p, k) : p;
}

static const char *obj_next(scan_t *sc, const char *p, tok_t *k, int *more)
{
    tok_t t;

    p = skip_ws(p, sc->end);
    if (p < sc->end && *p == '}') {
        *more = 0;
        return p + 1;
    }
    if (p == sc->end || *p != ',') {
        next_token(sc, p, &t); /* for the error */
        return fail(sc, "comma or object end", &t);
    }
    *more = 1;
    p = next_token(sc, p + 1, k);
    return obj_key(sc, p, k);
}

/* Array elements: the first token of the next element (*more = 1), or the ']'. */
static const char *arr_first(scan_t *sc, const char *p, tok_t *v, int *more)
{
    p = next_token(sc, p, v);
    *more = v->type != T_ARR_END;
    return p;
}

static const char *arr_next(scan_t *sc, const char *p, tok_t *v, int *more)
{
    tok_t t;

    p = skip_ws(p, sc->end);
    if (p < sc->end && *p == ']') {
        *more = 0;
        return p + 1;
    }
    if (p == sc->end || *p != ',') {
        next_token(sc, p, &t); /* for the error */
        return fail(sc, "comma or array end", &t);
    }
    *more = 1;
    return next_token(sc, p + 1, v);
}

typedef struct {
    const char *name;
    size_t len;
    int id;
} jkey_t;

/* A key table and the set of its key lengths, so that most keys (those of no interest)
 * are turned away on their length alone. Each is written once, as an X-macro list:
 *     #define FOO_KEYS(X) X("model", FK_MODEL) X("id", FK_ID)
 *     KEY_TABLE(foo_keys, FOO_KEYS);
 */
typedef struct {
    const jkey_t *keys;
    size_t n;
    uint64_t lens; /* bit len set for each key length (all below 64) */
} jkeys_t;

#define KEY_ENTRY(s, id) {s, sizeof(s) - 1, id},
#define KEY_LEN(s, id)   | 1ULL << (sizeof(s) - 1)
#define KEY_TABLE(name, LIST)                                                                      \
    static const jkey_t name##_tab[] = {LIST(KEY_ENTRY)};                                          \
    static const jkeys_t name = {name##_tab, sizeof(name##_tab) / sizeof(name##_tab[0]),           \
                                 0 LIST(KEY_LEN)}

/* The id of key token k in tab, or -1. Keys are compared decoded, as Lua sees them. */
static int key_find(const tok_t *k, const jkeys_t *tab)
{
    const char *s = k->s;
    size_t len = k->n;
    char buf[32];

    if (k->esc) {
        lg_jstr_t js = {k->s, k->n, 1};
        len = lg_jstr_unescape(&js, buf, sizeof(buf));
        if (len + 4 > sizeof(buf)) /* may be truncated: longer than any key we look for */
            return -1;
        s = buf;
    }
    if (len >= 64 || !(tab->lens >> len & 1))
        return -1;
    for (size_t i = 0; i < tab->n; i++) {
        const jkey_t *e = &tab->keys[i];
        if (e->len == len && e->name[0] == s[0] && memcmp(e->name, s, len) == 0)
            return e->id;
    }
    return -1;
}

enum { TOP_OBJECT, TOP_ARRAY, TOP_SCALAR };

/* Validates the whole text; on_object reads the members of a top-level object (p just
 * after its '{') and returns where it ends. *top tells what the text was. */
typedef const char *on_object_fn(scan_t *sc, const char *p, void *arg);

static int scan_text(scan_t *sc, const char *json, size_t len, on_object_fn *on_object, void *arg,
                     int *top)
{
    const char *p;
    tok_t t;

    sc->base = json;
    sc->end = json + len;
    sc->exp = sc->msg = NULL;
    if (len >= 2 && (json[0] == '\0' || json[1] == '\0')) {
        sc->msg = "JSON parser does not support UTF-16 or UTF-32";
        return -1;
    }
    p = next_token(sc, json, &t);
    switch (t.type) {
    case T_OBJ_BEGIN:
        *top = TOP_OBJECT;
        p = on_object(sc, p, arg);
        break;
    case T_ARR_BEGIN:
        *top = TOP_ARRAY;
        p = skip_container(sc, p, T_ARR_BEGIN, 1);
        break;
    case T_STRING:
    case T_NUMBER:
    case T_BOOLEAN:
    case T_NULL:
        *top = TOP_SCALAR;
        break;
    default:
        fail(sc, "value", &t);
        return -1;
    }
    if (!p)
        return -1;
    next_token(sc, p, &t);
    if (t.type != T_END) {
        fail(sc, "the end", &t);
        return -1;
    }
    return 0;
}

/* U.int(): nil (0) for NaN and infinities; else the floor, an integer (1) when it fits
 * int64, a float (2) otherwise. math.floor without libm: below 2^52 in magnitude the
 * int64 truncation is exact, above it every double is integral. */
static int lua_int(double v, int64_t *i, double *f)
{
    double fl = v;

    if (v != v || v == INFINITY || v == -INFINITY)
        return 0;
    if (v > -4503599627370496.0 && v < 4503599627370496.0) {
        fl = (double)(int64_t)v;
        if (fl > v)
            fl -= 1.0;
    }
    if (fl >= -9223372036854775808.0 && fl < 9223372036854775808.0) {
        *i = (int64_t)fl;
        return 1;
    }
    *f = fl;
    return 2;
}

/* ---- Request ---- */

const char *const lg_llm_param_names[LG_LLM_NPARAMS] = {
    "temperature",      "top_p", "max_tokens", "frequency_penalty", "presence_penalty", "seed", "n",
    "reasoning_effort", "top_k",
};

enum {
    RK_MODEL,
    RK_STREAM,
    RK_STREAM_OPTIONS,
    RK_TEMPERATURE,
    RK_TOP_P,
    RK_MAX_TOKENS,
    RK_MAX_COMPLETION_TOKENS,
    RK_FREQUENCY_PENALTY,
    RK_PRESENCE_PENALTY,
    RK_SEED,
    RK_N,
    RK_REASONING_EFFORT,
    RK_TOP_K,
    RK_COUNT
};

#define REQ_KEYS(X)                                                                                \
    X("model", RK_MODEL)                                                                           \
    X("stream", RK_STREAM)                                                                         \
    X("stream_options", RK_STREAM_OPTIONS)                                                         \
    X("temperature", RK_TEMPERATURE)                                                               \
    X("top_p", RK_TOP_P)                                                                           \
    X("max_tokens", RK_MAX_TOKENS)                                                                 \
    X("max_completion_tokens", RK_MAX_COMPLETION_TOKENS)                                           \
    X("frequency_penalty", RK_FREQUENCY_PENALTY)                                                   \
    X("presence_penalty", RK_PRESENCE_PENALTY)                                                     \
    X("seed", RK_SEED)                                                                             \
    X("n", RK_N)                                                                                   \
    X("reasoning_effort", RK_REASONING_EFFORT)                                                     \
    X("top_k", RK_TOP_K)
KEY_TABLE(req_keys, REQ_KEYS);

/* openai_chat.lua's PARAMS, in its order (a later entry overwrites an earlier one for
 * the same param), with util.lua's INT_PARAMS. */
static const struct {
    int key, param, is_int;
} req_params[] = {
    {RK_TEMPERATURE, LG_LLM_P_TEMPERATURE, 0},
    {RK_TOP_P, LG_LLM_P_TOP_P, 0},
    {RK_MAX_TOKENS, LG_LLM_P_MAX_TOKENS, 1},
    {RK_MAX_COMPLETION_TOKENS, LG_LLM_P_MAX_TOKENS, 1},
    {RK_FREQUENCY_PENALTY, LG_LLM_P_FREQUENCY_PENALTY, 0},
    {RK_PRESENCE_PENALTY, LG_LLM_P_PRESENCE_PENALTY, 0},
    {RK_SEED, LG_LLM_P_SEED, 1},
    {RK_N, LG_LLM_P_N, 1},
    {RK_REASONING_EFFORT, LG_LLM_P_REASONING_EFFORT, 0},
    {RK_TOP_K, LG_LLM_P_TOP_K, 1},
};

static const char *req_object(scan_t *sc, const char *p, void *arg)
{
    val_t *vals = arg; /* the last value of each key: cjson keeps the last duplicate */
    tok_t k, v;
    int more, id;

    for (p = obj_first(sc, p, &k, &more); p && more; p = obj_next(sc, p, &k, &more)) {
        id = key_find(&k, &req_keys);
        p = next_token(sc, p, &v);
        p = take_value(sc, p, &v, 2, id >= 0 ? &vals[id] : NULL);
        if (!p)
            return NULL;
    }
    return p;
}

int lg_llmscan_request(const char *json, size_t len, lg_llm_req_t *out, char *err, size_t errlen)
{
    val_t vals[RK_COUNT];
    scan_t sc;
    int top;

    /* Field by field: memset() of these sizes becomes `rep stos`, slow to start. */
    out->model.p = NULL;
    out->model.n = 0;
    out->model.esc = out->has_model = out->stream = out->has_stream_options = 0;
    out->has_params = 0;
    for (int i = 0; i < LG_LLM_NPARAMS; i++)
        out->params[i].kind = LG_JV_NONE;
    for (int i = 0; i < RK_COUNT; i++)
        vals[i].kind = V_ABSENT;
    if (scan_text(&sc, json, len, req_object, vals, &top) < 0) {
        scan_message(&sc, err, errlen);
        return -1;
    }
    if (top != TOP_OBJECT) {
        if (err && errlen)
            snprintf(err, errlen, "expected an object");
        return -1;
    }
    if (vals[RK_MODEL].kind == V_STRING) {
        out->model = vals[RK_MODEL].s;
        out->has_model = 1;
    }
    out->stream = vals[RK_STREAM].kind == V_BOOL && vals[RK_STREAM].b;
    out->has_stream_options = vals[RK_STREAM_OPTIONS].kind != V_ABSENT;

    /* U.params() */
    for (size_t i = 0; i < LG_ARRAY_SIZE(req_params); i++) {
        const val_t *v = &vals[req_params[i].key];
        lg_jval_t *p = &out->params[req_params[i].param];

        switch (v->kind) {
        case V_NUMBER:
            if (!req_params[i].is_int) {
                p->kind = LG_JV_FLOAT;
                p->d = v->d + 0.0; /* Lua's v + 0.0: -0.0 becomes 0.0 */
            } else {
                switch (lua_int(v->d, &p->i, &p->d)) {
                case 0: /* p[k] = nil: also unsets what max_tokens set */
                    p->kind = LG_JV_NONE;
                    break;
                case 1:
                    p->kind = LG_JV_INT;
                    break;
                default:
                    p->kind = LG_JV_FLOAT;
                }
            }
            break;
        case V_STRING:
            p->kind = LG_JV_STRING;
            p->s = v->s;
            break;
        case V_BOOL:
            p->kind = LG_JV_BOOL;
            p->b = v->b;
            break;
        default:
            continue;
        }
        out->has_params = 1;
    }
    return 0;
}

/* ---- Response and stream ---- */

enum { TK_MODEL, TK_ID, TK_CHOICES, TK_USAGE, TK_ERROR };
#define TOP_KEYS(X)                                                                                \
    X("model", TK_MODEL)                                                                           \
    X("id", TK_ID) X("choices", TK_CHOICES) X("usage", TK_USAGE) X("error", TK_ERROR)
KEY_TABLE(top_keys, TOP_KEYS);

enum { CK_INDEX, CK_FINISH };
#define CHOICE_KEYS(X) X("index", CK_INDEX) X("finish_reason", CK_FINISH)
KEY_TABLE(choice_keys, CHOICE_KEYS);

/* Usage fields, in lg_llm_resp_t order (and LG_LLM_U_* bit order); the details objects
 * hold UK_CACHED, UK_CACHE_WRITE and UK_REASONING. */
enum { UK_INPUT, UK_OUTPUT, UK_TOTAL, UK_CACHED, UK_CACHE_WRITE, UK_REASONING, UK_N };
enum { UK_PROMPT_DETAILS = UK_N, UK_COMPLETION_DETAILS };
#define USAGE_KEYS(X)                                                                              \
    X("prompt_tokens", UK_INPUT)                                                                   \
    X("completion_tokens", UK_OUTPUT)                                                              \
    X("total_tokens", UK_TOTAL)                                                                    \
    X("prompt_tokens_details", UK_PROMPT_DETAILS)                                                  \
    X("completion_tokens_details", UK_COMPLETION_DETAILS)
KEY_TABLE(usage_keys, USAGE_KEYS);
#define PROMPT_DETAILS_KEYS(X) X("cached_tokens", UK_CACHED) X("cache_write_tokens", UK_CACHE_WRITE)
KEY_TABLE(prompt_details_keys, PROMPT_DETAILS_KEYS);
#define COMPLETION_DETAILS_KEYS(X) X("reasoning_tokens", UK_REASONING)
KEY_TABLE(completion_details_keys, COMPLETION_DETAILS_KEYS);

/* A Lua table key for a choice index: an integer, or a float beyond int64. */
typedef struct {
    int64_t v;
    int flt;
} idx_t;

/* What one text holds, applied to the accumulator only when all of it is valid. */
typedef struct {
    const lg_llm_resp_t *acc; /* read only, for "once per choice index" */
    val_t model, id;
    int error;
    /* the last "choices" */
    int choices_array;
    int nchoices; /* elements the Lua loop gets through */
    int raised;   /* it stops at an element it cannot index */
    int nfinish;  /* reasons it would append, within what acc can still keep */
    lg_jstr_t finish[LG_LLM_FINISH_MAX];
    idx_t finish_key[LG_LLM_FINISH_MAX];
    /* the last "usage", when a table */
    int usage_table;
    val_t usage[UK_N];
} resp_scan_t;

/* U.finish_reason() with ctx: once per choice index. */
static void add_finish(resp_scan_t *rs, const val_t *index, int64_t pos, const lg_jstr_t *reason)
{
    const lg_llm_resp_t *acc = rs->acc;
    int64_t v = pos;
    int flt = 0, i;
    double f;

    if (index->kind == V_NUMBER) {
        int64_t iv;
        int r = lua_int(index->d, &iv, &f);
        if (r == 1) {
            v = iv;
        } else if (r == 2) {
            memcpy(&v, &f, sizeof(v));
            flt = 1;
        }
    }
    for (i = 0; i < acc->nfinish; i++)
        if (acc->finish_key[i].v == v && acc->finish_key[i].flt == flt)
            return;
    for (i = 0; i < rs->nfinish; i++)
        if (rs->finish_key[i].v == v && rs->finish_key[i].flt == flt)
            return;
    /* Once the kept list is full nothing more is appended, so remembering only the
     * indexes of kept reasons is enough for "once per index". */
    if (acc->nfinish + rs->nfinish >= LG_LLM_FINISH_MAX)
        return;
    rs->finish[rs->nfinish] = *reason;
    rs->finish_key[rs->nfinish].v = v;
    rs->finish_key[rs->nfinish].flt = flt;
    rs->nfinish++;
}

/* choices[] (p after its '[', level 2): for each element, Lua reads ch.index and
 * ch.finish_reason. Indexing a string gives nil; indexing a number, boolean or null
 * (cjson.null is a light userdata) raises, ending the loop and parse_*. */
static const char *resp_choices(scan_t *sc, const char *p, resp_scan_t *rs)
{
    tok_t v, k, x;
    int64_t pos = 0;
    int more, more2;

    rs->choices_array = 1;
    rs->nchoices = rs->raised = rs->nfinish = 0;
    for (p = arr_first(sc, p, &v, &more); p && more; p = arr_next(sc, p, &v, &more), pos++) {
        val_t index, reason;

        index.kind = reason.kind = V_ABSENT;
        switch (v.type) {
        case T_OBJ_BEGIN:
            for (p = obj_first(sc, p, &k, &more2); p && more2; p = obj_next(sc, p, &k, &more2)) {
                int id = key_find(&k, &choice_keys);
                p = next_token(sc, p, &x);
                p = take_value(sc, p, &x, 4,
                               id == CK_INDEX    ? &index
                               : id == CK_FINISH ? &reason
                                                 : NULL);
                if (!p)
                    return NULL;
            }
            break;
        case T_ARR_BEGIN:
            p = skip_container(sc, p, T_ARR_BEGIN, 3);
            break;
        case T_STRING:
            break;
        case T_NUMBER:
        case T_BOOLEAN:
        case T_NULL:
            rs->raised = 1;
            break;
        default:
            return fail(sc, "value", &v);
        }
        if (!p)
            return NULL;
        if (rs->raised)
            continue; /* the rest is only validated */
        rs->nchoices++;
        if (reason.kind == V_STRING)
            add_finish(rs, &index, pos, &reason.s);
    }
    return p;
}

/* A *_details object (p after its '{', level 3): the fields of keys in tab. */
static const char *resp_details(scan_t *sc, const char *p, resp_scan_t *rs, const jkeys_t *tab)
{
    tok_t k, v;
    int more;

    for (p = obj_first(sc, p, &k, &more); p && more; p = obj_next(sc, p, &k, &more)) {
        int id = key_find(&k, tab);
        p = next_token(sc, p, &v);
        p = take_value(sc, p, &v, 4, id >= 0 ? &rs->usage[id] : NULL);
        if (!p)
            return NULL;
    }
    return p;
}

/* "usage" (p after its '{', level 2): M.extract_usage(). */
static const char *resp_usage(scan_t *sc, const char *p, resp_scan_t *rs)
{
    tok_t k, v;
    int more;

    for (p = obj_first(sc, p, &k, &more); p && more; p = obj_next(sc, p, &k, &more)) {
        int id = key_find(&k, &usage_keys);
        p = next_token(sc, p, &v);
        if (id == UK_PROMPT_DETAILS || id == UK_COMPLETION_DETAILS) {
            /* the last one counts, and a non-table one reads as {} */
            if (id == UK_PROMPT_DETAILS)
                rs->usage[UK_CACHED].kind = rs->usage[UK_CACHE_WRITE].kind = V_ABSENT;
            else
                rs->usage[UK_REASONING].kind = V_ABSENT;
            if (v.type == T_OBJ_BEGIN) {
                p = resp_details(sc, p, rs,
                                 id == UK_PROMPT_DETAILS ? &prompt_details_keys
                                                         : &completion_details_keys);
                if (!p)
                    return NULL;
                continue;
            }
            id = -1;
        }
        p = take_value(sc, p, &v, 3, id >= 0 ? &rs->usage[id] : NULL);
        if (!p)
            return NULL;
    }
    return p;
}

static void usage_reset(resp_scan_t *rs)
{
    for (int k = 0; k < UK_N; k++)
        rs->usage[k].kind = V_ABSENT;
}

static const char *resp_object(scan_t *sc, const char *p, void *arg)
{
    resp_scan_t *rs = arg;
    tok_t k, v;
    int more;

    for (p = obj_first(sc, p, &k, &more); p && more; p = obj_next(sc, p, &k, &more)) {
        int id = key_find(&k, &top_keys);
        val_t *dst = NULL;

        p = next_token(sc, p, &v);
        switch (id) {
        case TK_MODEL:
            dst = &rs->model;
            break;
        case TK_ID:
            dst = &rs->id;
            break;
        case TK_ERROR:
            rs->error = 1;
            break;
        case TK_CHOICES:
            if (v.type == T_ARR_BEGIN) {
                if (!(p = resp_choices(sc, p, rs)))
                    return NULL;
                continue;
            }
            rs->choices_array = rs->nchoices = rs->raised = rs->nfinish = 0;
            break;
        case TK_USAGE:
            usage_reset(rs);
            rs->usage_table = v.type == T_OBJ_BEGIN || v.type == T_ARR_BEGIN;
            if (v.type == T_OBJ_BEGIN) {
                if (!(p = resp_usage(sc, p, rs)))
                    return NULL;
                continue;
            }
            break;
        }
        p = take_value(sc, p, &v, 2, dst);
        if (!p)
            return NULL;
    }
    return p;
}

/* The scratch state of one text: only what is read before being written. */
static void resp_init(resp_scan_t *rs, const lg_llm_resp_t *acc)
{
    rs->acc = acc;
    rs->model.kind = rs->id.kind = V_ABSENT;
    rs->error = rs->choices_array = rs->nchoices = rs->raised = rs->nfinish = 0;
    rs->usage_table = 0;
    usage_reset(rs);
}

static void copy_str(char *dst, size_t cap, size_t *len, const lg_jstr_t *s)
{
    size_t n = lg_jstr_unescape(s, dst, cap - 1);
    dst[n] = '\0';
    if (len)
        *len = n;
}

/* U.set_usage() */
static void set_usage(lg_llm_resp_t *acc, const val_t *u)
{
    int64_t *dst[UK_N] = {&acc->input,        &acc->output,      &acc->total,
                          &acc->cached_input, &acc->cache_write, &acc->reasoning};

    for (int k = 0; k < UK_N; k++) {
        int64_t i;
        double f;
        int r;

        if (u[k].kind != V_NUMBER)
            continue;
        r = lua_int(u[k].d, &i, &f);
        if (r == 0)
            continue;
        if (r == 2) /* Lua keeps a float here; clamp */
            i = f > 0 ? INT64_MAX : INT64_MIN;
        *dst[k] = i;
        acc->usage_mask |= 1u << k;
    }
    if (!(acc->usage_mask & LG_LLM_U_TOTAL) && (acc->usage_mask & LG_LLM_U_INPUT) &&
        (acc->usage_mask & LG_LLM_U_OUTPUT)) {
        /* Lua integer addition wraps */
        acc->total = (int64_t)((uint64_t)acc->input + (uint64_t)acc->output);
        acc->usage_mask |= LG_LLM_U_TOTAL;
    }
}

/* Applies rs in the order of parse_response (event = 0) or parse_event (event = 1). */
static int resp_apply(lg_llm_resp_t *acc, const resp_scan_t *rs, int event)
{
    if (rs->model.kind == V_STRING && !(event && acc->has_model)) {
        copy_str(acc->model, sizeof(acc->model), &acc->model_len, &rs->model.s);
        acc->has_model = 1;
    }
    if (rs->id.kind == V_STRING && !(event && acc->has_id)) {
        copy_str(acc->id, sizeof(acc->id), &acc->id_len, &rs->id.s);
        acc->has_id = 1;
    }
    if (!event || rs->nchoices > 0)
        acc->first_token = 1;
    for (int i = 0; i < rs->nfinish; i++) {
        int j = acc->nfinish++;
        size_t n;
        copy_str(acc->finish[j], sizeof(acc->finish[j]), &n, &rs->finish[i]);
        acc->finish_len[j] = (uint8_t)n;
        acc->finish_key[j].v = rs->finish_key[i].v;
        acc->finish_key[j].flt = rs->finish_key[i].flt;
    }
    if (rs->raised)
        return LG_LLMSCAN_RAISED;
    if (rs->usage_table)
        set_usage(acc, rs->usage);
    return 0;
}

int lg_llmscan_response(const char *json, size_t len, lg_llm_resp_t *acc)
{
    resp_scan_t rs;
    scan_t sc;
    int top;

    resp_init(&rs, acc);
    if (scan_text(&sc, json, len, resp_object, &rs, &top) < 0)
        return -1;
    if (top == TOP_SCALAR)
        return 0;
    return resp_apply(acc, &rs, 0);
}

int lg_llmscan_event(const char *data, size_t len, lg_llm_resp_t *acc)
{
    resp_scan_t rs;
    scan_t sc;
    int top;

    if (len == 0)
        return 0;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        acc->done = 1;
        return 0;
    }
    resp_init(&rs, acc);
    if (scan_text(&sc, data, len, resp_object, &rs, &top) < 0)
        return -1;
    if (top != TOP_OBJECT)
        return 0; /* an array has no fields; a scalar is ignored */
    if (rs.error) {
        acc->error = 1;
        return 0;
    }
    return resp_apply(acc, &rs, 1);
}

/* ---- SSE ---- */

struct lg_sse {
    char *buf;
    size_t cap;
    size_t dlen; /* the event's joined data: buf[0, dlen) */
    size_t plen; /* the unterminated line carried over: buf[dlen, dlen + plen) */
    size_t acct; /* sse.lua's data_len, which its cap counts: sum of (#value + 1) */
    size_t max_bytes;
    int has_data; /* the event has a data line */
    int started;  /* a non-empty feed was seen (the BOM check) */
    int skip_lf;  /* the last feed ended with CR: an LF first in the next one is its pair */
    int failed;
};

lg_sse_t *lg_sse_new(size_t max_bytes)
{
    lg_sse_t *s = lg_xcalloc(1, sizeof(*s));
    s->max_bytes = max_bytes ? max_bytes : LG_SSE_DEFAULT_MAX;
    return s;
}

void lg_sse_free(lg_sse_t *s)
{
    if (!s)
        return;
    free(s->buf);
    free(s);
}

static void sse_reserve(lg_sse_t *s, size_t need)
{
    size_t cap;

    if (need <= s->cap)
        return;
    cap = s->cap ? s->cap * 2 : 256;
    if (cap < need)
        cap = need;
    s->buf = lg_xrealloc(s->buf, cap);
    s->cap = cap;
}

enum { L_BLANK, L_COMMENT, L_DATA, L_OTHER };

/* Classifies the line a[0..na) b[0..nb) as sse.lua does: field "data" is a "data:"
 * prefix or the whole line "data"; *voff is where its value starts (one space after
 * the colon dropped). */
static int sse_line(const char *a, size_t na, const char *b, size_t nb, size_t *voff)
{
    size_t n = na + nb, hn = n < 6 ? n : 6;
    char h[6];

    if (n == 0)
        return L_BLANK;
    for (size_t i = 0; i < hn; i++)
        h[i] = i < na ? a[i] : b[i - na];
    if (h[0] == ':')
        return L_COMMENT;
    if (n < 4 || memcmp(h, "data", 4) != 0)
        return L_OTHER;
    if (n == 4) {
        *voff = 4;
        return L_DATA;
    }
    if (h[4] != ':')
        return L_OTHER;
    *voff = n > 5 && h[5] == ' ' ? 6 : 5;
    return L_DATA;
}

/* Runs the lines of p[0..n). dry = 1 changes nothing and calls nothing: it says whether
 * sse.lua would fail on this feed (-1), which decides before any event is delivered,
 * since sse.lua then returns none of the feed's events. */
static int sse_run(lg_sse_t *s, const char *p, size_t n, lg_sse_data_cb *on_data, void *arg,
                   int dry)
{
    const char *q = p, *end = p + n;
    size_t na = s->plen; /* the first line starts with the carried-over bytes */
    size_t acct = s->acct;
    int has_data = s->has_data, skip_lf = 0;
    const char *single = NULL; /* the event's only data line so far, still in the chunk */
    size_t single_n = 0;
    /* The next LF (or end) and the next CR before it (or that LF), kept while ahead of
     * q: searching afresh per line would rescan a CR-only chunk to its end each time. */
    const char *lf = NULL, *cr = NULL;

    while (q < end) {
        const char *eol, *next;
        size_t nb, voff = 0, vlen;
        int kind;

        if (!lf || lf < q) {
            lf = memchr(q, '\n', (size_t)(end - q));
            if (!lf)
                lf = end;
        }
        if (!cr || cr < q) {
            cr = memchr(q, '\r', (size_t)(lf - q));
            if (!cr)
                cr = lf;
        }
        eol = cr;
        if (eol == end)
            break;
        nb = (size_t)(eol - q);
        next = eol + 1;
        if (*eol == '\r') {
            if (next == end)
                skip_lf = 1;
            else if (*next == '\n')
                next++;
        }
        kind = sse_line(na ? s->buf + s->dlen : NULL, na, q, nb, &voff);
        if (kind == L_DATA) {
            vlen = na + nb - voff;
            acct += vlen + 1;
            if (dry) {
            } else if (!has_data && na == 0) {
                single = q + voff; /* the common case: no copy */
                single_n = vlen;
            } else if (na == 0) {
                if (single) {
                    sse_reserve(s, single_n);
                    if (single_n) /* buf may still be NULL */
                        memcpy(s->buf, single, single_n);
                    s->dlen = single_n;
                    single = NULL;
                }
                sse_reserve(s, s->dlen + 1 + vlen);
                s->buf[s->dlen++] = '\n';
                memcpy(s->buf + s->dlen, q + voff, vlen);
                s->dlen += vlen;
            } else {
                /* the line began in an earlier feed: its bytes sit after the data */
                size_t ao = voff < na ? voff : na, bo = voff > na ? voff - na : 0;
                size_t at = s->dlen + (has_data ? 1 : 0);
                sse_reserve(s, s->dlen + 1 + na + nb);
                memmove(s->buf + at, s->buf + s->dlen + ao, na - ao);
                if (has_data)
                    s->buf[s->dlen] = '\n';
                memcpy(s->buf + at + (na - ao), q + bo, nb - bo);
                s->dlen = at + (na - ao) + (nb - bo);
            }
            has_data = 1;
        } else if (kind == L_BLANK) {
            if (has_data && !dry) {
                if (single)
                    on_data(arg, single, single_n);
                else
                    on_data(arg, s->buf, s->dlen);
            }
            has_data = 0;
            acct = 0;
            single = NULL;
            if (!dry)
                s->dlen = 0;
        }
        if (acct > s->max_bytes)
            return -1;
        na = 0;
        if (!dry)
            s->plen = 0;
        q = next;
    }
    if (dry)
        return na + (size_t)(end - q) + acct > s->max_bytes ? -1 : 0;

    /* keep what the chunk's owner will take away: the pending data line, the tail */
    if (single) {
        sse_reserve(s, single_n);
        if (single_n)
            memcpy(s->buf, single, single_n);
        s->dlen = single_n;
    }
    sse_reserve(s, s->dlen + s->plen + (size_t)(end - q));
    if (end > q)
        memcpy(s->buf + s->dlen + s->plen, q, (size_t)(end - q));
    s->plen += (size_t)(end - q);
    s->acct = acct;
    s->has_data = has_data;
    s->skip_lf = skip_lf;
    return 0;
}

int lg_sse_feed(lg_sse_t *s, const char *p, size_t n, lg_sse_data_cb *on_data, void *arg)
{
    if (s->failed)
        return -1;
    if (n == 0)
        return 0;
    if (!s->started) {
        s->started = 1;
        if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
            p += 3;
            n -= 3;
        }
    }
    if (s->skip_lf) {
        s->skip_lf = 0;
        if (n > 0 && *p == '\n') {
            p++;
            n--;
        }
    }
    /* A feed adds at most its own bytes to what the cap counts, so only one that could
     * cross the cap needs the dry run first. */
    if (s->acct + s->plen + n > s->max_bytes && sse_run(s, p, n, NULL, NULL, 1) < 0) {
        s->failed = 1;
        free(s->buf);
        s->buf = NULL;
        s->cap = s->dlen = s->plen = s->acct = 0;
        s->has_data = 0;
        return -1;
    }
    return sse_run(s, p, n, on_data, arg, 0);
}
