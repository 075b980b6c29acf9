/* h1.c -- HTTP/1.1 heads and bodies for the proxy: a one-pass parser for a head held in one
 * buffer, and an incremental body decoder (Content-Length, chunked, until close).
 * SPDX-License-Identifier: MIT
 *
 * The rules are http_parser 2.9.4's, compiled strict, for everything the proxy uses, so the
 * switch changes no accept/reject decision; spec/02-c/test_h1.c checks that against
 * libhttp_parser. Nothing here allocates or calls anything per byte. With SSE2 (any x86-64)
 * the usual field line costs two 16-byte tests, one for the name and ':', one for the value
 * up to its CR; without it (or with -DLG_H1_NO_SIMD) names go through a token table and
 * values through an 8-byte word test. Methods and the few header names read here are
 * matched by length first.
 *
 * Deliberate deviations from libhttp_parser (the differential test exempts exactly these).
 * Debian builds it non-strict (HTTP_PARSER_STRICT=0); where the strict build differs we
 * follow the strict one, the first four points:
 *  - A CR must be followed by LF everywhere; the non-strict build takes "\r<any byte>" as a
 *    line end after the status line, after an empty header value and at the end of a head.
 *  - "HTTP/" must be spelled out (non-strict: "H" and any four bytes).
 *  - No SP in header names (non-strict takes "Transfer-Encoding : chunked").
 *  - No HTAB or FF in the request-target (non-strict takes them in the path).
 *  - obs-fold, a header line starting with SP or HTAB, is an error (http_parser joins it).
 *  - A request line without a version (HTTP/0.9) is an error.
 *  - A control character or DEL is an error anywhere in a header value; http_parser does
 *    not check a value's first byte.
 *  - A status code is exactly three digits, 100..999 (http_parser: "2", "099", "0200").
 *  - A header whose name merely begins with "Transfer-Encoding" ("Transfer-Encodingx") is
 *    an ordinary header; http_parser takes it for a Transfer-Encoding (and then rejects a
 *    request that has one).
 *  - Chunked bodies: a bare LF may end a chunk-size or trailer line (http_parser: an error
 *    after the size, swallowed inside an extension); after the size only SPs and
 *    ";extensions" may follow (http_parser skips anything after SP or ';'); control bytes in
 *    an extension, extensions over 64 KiB and trailer sections over 64 KiB are errors; data
 *    must be followed by CRLF or LF (strict: CRLF; non-strict: any two bytes); a size
 *    overflows only past UINT64_MAX (http_parser stops a little short of it).
 * As in the non-strict build, bytes >= 0x80 are taken in the path and query. */
#include "h1.h"

#include <http_parser.h>
#include <limits.h>
#include <string.h>

#if defined(__SSE2__) && !defined(LG_H1_NO_SIMD)
#include <emmintrin.h>
#define H1_SSE2 1 /* 16 bytes at a time; the portable code below does 8, or 1 */
#endif

#define LINE_MAX_ (64 * 1024) /* chunk extensions; trailer section */

static int fail(lg_h1_head_t *h, const char *msg)
{
    h->err = msg;
    return LG_H1_ERROR;
}

/* ---- character classes and word tricks ---- */

/* tchar (RFC 9110 5.6.2): the characters of methods, header names, codings. */
/* clang-format off */
static const unsigned char tchar[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 10 */
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, /* 20  !"#$%&'()*+,-./ */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, /* 30 0-9:;<=>? */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 40 @A-O */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, /* 50 P-Z[\]^_ */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 60 `a-o */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, /* 70 p-z{|}~ DEL */
};
/* clang-format on */

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

static inline uint32_t load32(const char *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return x;
}

static inline int is_stop(unsigned char c, unsigned lim)
{
    return c < lim || c == 0x7f;
}

/* The first byte of [p, end) below `lim` (0x20: CTLs; 0x21: CTLs and SP) or DEL, else end;
 * bytes >= 0x80 never stop. Eight at a time as a word: a borrow can flag a byte falsely
 * only above a true hit, so the lowest flag (little-endian: the first byte) is exact;
 * elsewhere the bytewise loop finds the hit within the word. */
static const char *find_stop_word(const char *p, const char *end, unsigned lim)
{
    for (; end - p >= 8; p += 8) {
        uint64_t x = load64(p), d = x ^ (ONES * 0x7f);
        uint64_t m = (((x - ONES * lim) & ~x) | ((d - ONES) & ~d)) & HIGHS;
        if (m) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return p + (__builtin_ctzll(m) >> 3);
#else
            break;
#endif
        }
    }
    while (p < end && !is_stop((unsigned char)*p, lim))
        p++;
    return p;
}

/* The first byte of [p, end) that is not a tchar. */
static const char *skip_token_table(const char *p, const char *end)
{
    for (;;) {
        if (end - p < 4) {
            while (p < end && tchar[(unsigned char)*p])
                p++;
            return p;
        }
        if (!tchar[(unsigned char)p[0]])
            return p;
        if (!tchar[(unsigned char)p[1]])
            return p + 1;
        if (!tchar[(unsigned char)p[2]])
            return p + 2;
        if (!tchar[(unsigned char)p[3]])
            return p + 3;
        p += 4;
    }
}

#ifdef H1_SSE2
static inline __m128i load128(const char *p)
{
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

/* Bits of the 16 bytes at p that are below lim or DEL: x + 1 < lim + 1 as signed bytes
 * holds for 0x7f and for 0..lim-1, and for no other byte below 0x80. */
static inline unsigned stop16(const char *p, unsigned lim)
{
    __m128i x = load128(p), y = _mm_add_epi8(x, _mm_set1_epi8(1));
    return (unsigned)(_mm_movemask_epi8(_mm_cmplt_epi8(y, _mm_set1_epi8((char)(lim + 1)))) &
                      ~_mm_movemask_epi8(x));
}

/* Bits of the 16 bytes at p that are not letters, digits or '-' (what names nearly always
 * are): (x | 0x20) - 'a' < 26 and x - '0' < 10 as unsigned, done as signed with a bias. */
static inline unsigned nonname16(const char *p)
{
    __m128i x = load128(p);
    __m128i l = _mm_sub_epi8(_mm_or_si128(x, _mm_set1_epi8(0x20)), _mm_set1_epi8((char)0xe1));
    __m128i d = _mm_sub_epi8(x, _mm_set1_epi8((char)0xb0));
    __m128i ok = _mm_or_si128(_mm_cmplt_epi8(l, _mm_set1_epi8(-128 + 26)),
                              _mm_cmplt_epi8(d, _mm_set1_epi8(-128 + 10)));
    ok = _mm_or_si128(ok, _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    return (unsigned)_mm_movemask_epi8(ok) ^ 0xffff;
}
#endif

/* find_stop_word(), with SSE2 16 bytes at a time first; the last, partial block is read as
 * the 16 bytes that end at `end`, when the buffer (from lo) has them. */
static inline const char *find_stop(const char *lo, const char *p, const char *end, unsigned lim)
{
#ifdef H1_SSE2
    unsigned m;
    for (; end - p > 16; p += 16)
        if ((m = stop16(p, lim)) != 0)
            return p + __builtin_ctz(m);
    if (end - lo >= 16) {
        m = stop16(end - 16, lim) >> (16 - (end - p));
        return m ? p + __builtin_ctz(m) : end;
    }
#else
    (void)lo;
#endif
    return find_stop_word(p, end, lim);
}

/* skip_token_table(), with SSE2 skipping letters, digits and '-' 16 at a time first. */
static inline const char *skip_token(const char *p, const char *end)
{
#ifdef H1_SSE2
    for (; end - p >= 16; p += 16) {
        unsigned m = nonname16(p);
        if (m) {
            p += __builtin_ctz(m);
            if (!tchar[(unsigned char)*p])
                return p;
            break;
        }
    }
#endif
    return skip_token_table(p, end);
}

/* Whether the n (>= 5) bytes at p equal lowercase `lc`, ignoring ASCII case. Exact for the
 * strings used here: x | 0x20 maps only 'A'-'Z' onto letters, and only CR (never inside a
 * value or name) onto '-'. */
static int ieq(const char *p, const char *lc, size_t n)
{
    size_t i;

    if (n < 8)
        return (load32(p) | 0x20202020u) == load32(lc) &&
               (load32(p + n - 4) | 0x20202020u) == load32(lc + n - 4);
    for (i = 0; i + 8 < n; i += 8)
        if ((load64(p + i) | ONES * 0x20) != load64(lc + i))
            return 0;
    return (load64(p + n - 8) | ONES * 0x20) == load64(lc + n - 8);
}

static inline int is_digit(unsigned char c)
{
    return (unsigned)(c - '0') < 10;
}

static inline int is_alpha(unsigned char c)
{
    return (unsigned)((c | 0x20) - 'a') < 26;
}

/* ---- methods ---- */

static const struct {
    const char *name;
    size_t len;
} methods[] = {
#define XX(num, name, string) [num] = {#string, sizeof(#string) - 1},
    HTTP_METHOD_MAP(XX)
#undef XX
};

#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

/* METHOD SP: exactly a name of HTTP_METHOD_MAP, case-sensitive. */
static int parse_method(const char **pp, const char *end, lg_h1_head_t *h)
{
    const char *p = *pp;
    size_t n, i, avail = (size_t)(end - p);

    if (avail >= 4 && memcmp(p, "GET ", 4) == 0) {
        h->method = HTTP_GET;
        *pp = p + 4;
        return 0;
    }
    for (n = 0; n < avail && n < 12 && p[n] != ' '; n++)
        ;
    if (n < avail && n < 12) {
        for (i = 0; i < NMETHODS; i++)
            if (methods[i].len == n && memcmp(methods[i].name, p, n) == 0) {
                h->method = (int)i;
                *pp = p + n + 1;
                return 0;
            }
    } else if (n == avail) { /* no SP yet: can this still become a method? */
        for (i = 0; i < NMETHODS; i++)
            if (methods[i].len >= n && memcmp(methods[i].name, p, n) == 0)
                return LG_H1_INCOMPLETE;
    }
    return fail(h, "invalid HTTP method");
}

/* ---- request-target ---- */

static int is_userinfo(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c && strchr("-_.!~*'()%;:&=+$,[]", c));
}

/* The target, then SP. origin-form ('/' or '*') is one scan for a CTL, SP or DEL; other
 * forms go through http_parser's URL states: scheme "://" server (userinfo characters,
 * '[' ']', '@' but not "@@") then path; CONNECT starts at the server part. */
static int parse_target(const char **pp, const char *end, lg_h1_head_t *h, const char *buf)
{
    enum { U_START, U_SCHEME, U_SLASH1, U_SLASH2, U_SERVER_START, U_SERVER, U_SERVER_AT, U_PATH };
    const char *p = *pp, *s;
    int st;

    while (p < end && *p == ' ')
        p++;
    if (p == end)
        return LG_H1_INCOMPLETE;
    s = p;
    st = h->method == HTTP_CONNECT ? U_SERVER_START : U_START;
    if (st == U_START && (*p == '/' || *p == '*')) {
        p = find_stop(buf, p + 1, end, 0x21);
        st = U_PATH;
    } else {
        for (; p < end; p++) {
            unsigned char c = (unsigned char)*p;
            if (is_stop(c, 0x21) && (st == U_PATH || c == ' ' || c == '\r' || c == '\n'))
                break;
            switch (st) {
            case U_START:
                if (!is_alpha(c))
                    return fail(h, "invalid URL");
                st = U_SCHEME;
                break;
            case U_SCHEME:
                if (c == ':')
                    st = U_SLASH1;
                else if (!is_alpha(c))
                    return fail(h, "invalid URL");
                break;
            case U_SLASH1:
            case U_SLASH2:
                if (c != '/')
                    return fail(h, "invalid URL");
                st = st == U_SLASH1 ? U_SLASH2 : U_SERVER_START;
                break;
            case U_SERVER_AT:
                if (c == '@')
                    return fail(h, "invalid URL");
                /* fall through */
            case U_SERVER_START:
            case U_SERVER:
                if (c == '/' || c == '?')
                    st = U_PATH;
                else if (c == '@')
                    st = U_SERVER_AT;
                else if (is_userinfo(c))
                    st = U_SERVER;
                else
                    return fail(h, "invalid URL");
                break;
            default: /* U_PATH */
                p = find_stop(buf, p + 1, end, 0x21) - 1;
                break;
            }
        }
    }
    if (p == end)
        return LG_H1_INCOMPLETE;
    if (st != U_SERVER && st != U_SERVER_AT && st != U_PATH)
        return fail(h, "invalid URL");
    if (*p == '\r' || *p == '\n')
        return fail(h, "missing HTTP version"); /* HTTP/0.9 */
    if (*p != ' ')
        return fail(h, "invalid character in URL");
    h->url_off = (uint32_t)(s - buf);
    h->url_len = (uint32_t)(p - s);
    *pp = p + 1;
    return 0;
}

/* ---- start lines ---- */

/* "HTTP/d.d" (also "ICE/d.d" for SOURCE, as http_parser). */
static inline int parse_version(const char **pp, const char *end, lg_h1_head_t *h, int ice)
{
    const char *p = *pp, *lit = "HTTP/";
    size_t i, n = 5;

    if (end - p >= 8 && memcmp(p, "HTTP/1.1", 8) == 0) {
        h->vmajor = h->vminor = 1;
        *pp = p + 8;
        return 0;
    }
    if (ice && p < end && *p == 'I')
        lit = "ICE/", n = 4;
    for (i = 0; i < n; i++, p++) {
        if (p == end)
            return LG_H1_INCOMPLETE;
        if (*p != lit[i])
            return fail(h, "invalid HTTP version");
    }
    if (end - p < 3)
        for (i = 0; p + i < end; i++)
            if (i == 1 ? p[i] != '.' : !is_digit((unsigned char)p[i]))
                return fail(h, "invalid HTTP version");
    if (end - p < 3)
        return LG_H1_INCOMPLETE;
    if (!is_digit((unsigned char)p[0]) || p[1] != '.' || !is_digit((unsigned char)p[2]))
        return fail(h, "invalid HTTP version");
    h->vmajor = p[0] - '0';
    h->vminor = p[2] - '0';
    *pp = p + 3;
    return 0;
}

/* CRLF or LF at *pp, else `msg`. */
static inline int line_end(const char **pp, const char *end, lg_h1_head_t *h, const char *msg)
{
    const char *p = *pp;

    if (p == end)
        return LG_H1_INCOMPLETE;
    if (*p == '\n') {
        *pp = p + 1;
        return 0;
    }
    if (*p != '\r')
        return fail(h, msg);
    if (p + 1 == end)
        return LG_H1_INCOMPLETE;
    if (p[1] != '\n')
        return fail(h, "CR not followed by LF");
    *pp = p + 2;
    return 0;
}

/* ---- header fields ---- */

/* What the fields say, gathered in a register while reading them: LG_H1_CONN_* and these. */
enum { FL_CL = 16, FL_TE = 32, FL_CHUNKED = 64 };

#define FL_CONN_MASK                                                                               \
    (LG_H1_CONN_KEEP_ALIVE | LG_H1_CONN_CLOSE | LG_H1_CONN_UPGRADE | LG_H1_CONN_UPGRADE_HEADER)

/* Connection tokens by http_parser's own matcher, run on the value without its leading OWS
 * (its trailing OWS kept): keep-alive, close and upgrade count when followed by the end of
 * the value, or by SPs and a ','. The first byte always starts an element (so a leading ','
 * is not a separator); a later element starting with neither a token char nor OWS ends the
 * matching. Returns LG_H1_CONN_* bits. */
static unsigned conn_tokens(const char *v, const char *e)
{
    enum { K_TOKEN, K_START, K_MATCH, K_DONE };
    static const char *const words[3] = {"keep-alive", "close", "upgrade"};
    static const unsigned bits[3] = {LG_H1_CONN_KEEP_ALIVE, LG_H1_CONN_CLOSE, LG_H1_CONN_UPGRADE};
    const char *v0 = v;
    unsigned f = 0;
    int st = K_START, w = 0;
    size_t idx = 0;

    if (e - v == 10 && ieq(v, "keep-alive", 10))
        return LG_H1_CONN_KEEP_ALIVE;
    if (e - v == 5 && ieq(v, "close", 5))
        return LG_H1_CONN_CLOSE;
    for (; v < e; v++) {
        unsigned char ch = (unsigned char)*v, c = ch | 0x20;
        switch (st) {
        case K_START:
            if (c == 'k' || c == 'c' || c == 'u') {
                w = c == 'k' ? 0 : c == 'c' ? 1 : 2;
                st = K_MATCH;
                idx = 0;
            } else if (v == v0 || tchar[c]) {
                st = K_TOKEN;
            } else if (c != ' ' && c != '\t') {
                return f;
            }
            break;
        case K_MATCH:
            if (c != (unsigned char)words[w][++idx])
                st = K_TOKEN;
            else if (words[w][idx + 1] == '\0')
                st = K_DONE;
            break;
        case K_DONE:
            if (ch == ',') {
                f |= bits[w];
                st = K_START;
            } else if (ch != ' ') {
                st = K_TOKEN;
            }
            break;
        default: /* K_TOKEN */
            if (ch == ',')
                st = K_START;
            break;
        }
    }
    return st == K_DONE ? f | bits[w] : f;
}

/* Whether a Transfer-Encoding value ends in chunked, by http_parser's matcher: "chunked"
 * must be followed by nothing but SPs; a ',' where it stops matching, or right after it,
 * is not a separator; an element starting with neither a token char nor OWS ends the
 * matching (not chunked). */
static int te_chunked(const char *v, const char *e)
{
    enum { T_TOKEN, T_START, T_MATCH, T_DONE };
    const char *v0 = v;
    int st = T_START;
    size_t idx = 0;

    if (e - v == 7 && ieq(v, "chunked", 7))
        return 1;
    for (; v < e; v++) {
        unsigned char ch = (unsigned char)*v, c = ch | 0x20;
        switch (st) {
        case T_START:
            if (c == 'c') {
                st = T_MATCH;
                idx = 0;
            } else if (v == v0 || tchar[c]) {
                st = T_TOKEN;
            } else if (c != ' ' && c != '\t') {
                return 0;
            }
            break;
        case T_MATCH:
            if (c != (unsigned char)"chunked"[++idx])
                st = T_TOKEN;
            else if (idx == 6)
                st = T_DONE;
            break;
        case T_DONE:
            if (ch != ' ')
                st = T_TOKEN;
            break;
        default: /* T_TOKEN */
            if (ch == ',')
                st = T_START;
            break;
        }
    }
    return st == T_DONE;
}

/* Content-Length: digits, then only SPs (no HTAB, as http_parser). Overflow as in
 * http_parser: past 18446744073709551609. Returns 0, or -1 when malformed. */
static inline int parse_cl(const char *v, const char *e, uint64_t *cl)
{
    uint64_t n = 0;

    if (v == e || !is_digit((unsigned char)*v))
        return -1;
    for (; v < e && is_digit((unsigned char)*v); v++) {
        if (n > (UINT64_MAX - 10) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*v - '0');
    }
    for (; v < e; v++)
        if (*v != ' ')
            return -1;
    *cl = n;
    return 0;
}

/* The state of a head's fields while they are read. */
typedef struct {
    const char *buf;
    lg_hslice_t *hs; /* the next slot */
    size_t n, max;   /* fields seen; slots */
    unsigned f;      /* LG_H1_CONN_* and FL_* */
    uint64_t cl;
} fields_t;

/* The fields that frame the message, found by name length first. */
enum { FR_NONE, FR_UPGRADE, FR_CONNECTION, FR_CONTENT_LENGTH, FR_TRANSFER_ENCODING };

static inline int framing(const char *name, size_t nlen)
{
    switch (nlen) {
    case 7:
        return ieq(name, "upgrade", 7) ? FR_UPGRADE : FR_NONE;
    case 10:
        return ieq(name, "connection", 10) ? FR_CONNECTION : FR_NONE;
    case 14:
        return ieq(name, "content-length", 14) ? FR_CONTENT_LENGTH : FR_NONE;
    case 16: /* http_parser takes it for Connection */
        return ieq(name, "proxy-connection", 16) ? FR_CONNECTION : FR_NONE;
    case 17:
        return ieq(name, "transfer-encoding", 17) ? FR_TRANSFER_ENCODING : FR_NONE;
    }
    return FR_NONE;
}

/* Reads a framing field (FR_*), once `next`, the first byte of the following line, shows it
 * is not continued by obs-fold. v..e is the value without its leading OWS. Returns an error
 * or NULL. */
static inline const char *frame_field(fields_t *fs, int which, const char *v, const char *e,
                                      char next)
{
    if (next == ' ' || next == '\t')
        return "obsolete line folding";
    switch (which) {
    case FR_UPGRADE:
        if (v < e)
            fs->f |= LG_H1_CONN_UPGRADE_HEADER;
        break;
    case FR_CONNECTION:
        fs->f |= conn_tokens(v, e);
        break;
    case FR_CONTENT_LENGTH:
        if (parse_cl(v, e, &fs->cl) != 0)
            return "invalid content-length";
        if (fs->f & FL_CL)
            return "duplicate content-length"; /* even with the same value */
        fs->f |= FL_CL;
        break;
    default: /* the last one decides, as in http_parser */
        fs->f = (fs->f & ~(unsigned)FL_CHUNKED) | FL_TE | (te_chunked(v, e) ? FL_CHUNKED : 0);
        break;
    }
    return NULL;
}

/* Fills a slice; e is trimmed of trailing OWS. */
static inline void set_slice(lg_hslice_t *hs, const char *buf, const char *name, size_t nlen,
                             const char *v, const char *e)
{
    while (e > v && (unsigned char)e[-1] <= ' ') /* SP or HTAB here */
        e--;
    hs->noff = (uint32_t)(name - buf);
    hs->nlen = (uint32_t)nlen;
    hs->voff = (uint32_t)(v - buf);
    hs->vlen = (uint32_t)(e - v);
    hs->deleted = 0;
}

#ifdef H1_SSE2
/* The usual field lines, as many as come in a row: a name of letters, digits and '-' with
 * its ':' in its first 16 bytes, a value free of CTLs (HTAB too), CRLF and a next byte.
 * A block that would cross `end` is read as the 16 bytes ending there (the caller makes
 * sure the buffer has them), its mask shifted down so bits past `end` are clear. Returns
 * where it stopped, at the start of a line it leaves to the general loop. */
static inline const char *fast_fields(fields_t *fs, const char *p, const char *end,
                                      const char **err)
{
    lg_hslice_t *hs = fs->hs;
    size_t n = fs->n;

    for (;;) {
        const char *v, *e, *b = end - p >= 16 ? p : end - 16;
        unsigned s, nlen = (unsigned)__builtin_ctz((nonname16(b) >> (p - b)) | 0x10000);
        int w;

        if (nlen - 1 >= 15 || p[nlen] != ':') /* not 1 to 15 name bytes, then ':' */
            break;
        if (n < fs->max) { /* (stored apart from the value, which the compiler does better) */
            hs->noff = (uint32_t)(p - fs->buf);
            hs->nlen = nlen;
        }
        v = e = p + nlen + 1;
        for (;;) {
            b = end - e >= 16 ? e : end - 16;
            if ((s = stop16(b, 0x20) >> (e - b)) != 0 || end - e <= 16)
                break;
            e += 16;
        }
        if (s == 0)
            break;
        e += __builtin_ctz(s);
        if (end - e < 3 || e[0] != '\r' || e[1] != '\n')
            break;
        while (*v == ' ')
            v++;
        if ((w = framing(p, nlen)) != FR_NONE && (*err = frame_field(fs, w, v, e, e[2])) != NULL)
            break;
        p = e + 2;
        if (n++ < fs->max) {
            hs->voff = (uint32_t)(v - fs->buf);
            while (e > v && (unsigned char)e[-1] <= ' ')
                e--;
            hs->vlen = (uint32_t)(e - v);
            hs->deleted = 0;
            hs++;
        }
    }
    fs->hs = hs;
    fs->n = n;
    return p;
}
#endif

/* Header fields up to and including the empty line; p is at the first field. */
static inline int parse_fields(const char *buf, const char *p, const char *end, lg_h1_head_t *h,
                               lg_hslice_t *hdrs, size_t max)
{
    fields_t fs = {buf, hdrs, 0, max, 0, 0};
    const char *err = NULL;
    int r;

    for (;;) {
        const char *name, *v, *ve, *e;
        int w;

#ifdef H1_SSE2
        if (end - buf >= 16 && p < end && *p != '\r') {
            p = fast_fields(&fs, p, end, &err);
            if (err)
                return fail(h, err);
        }
#endif
        name = p;
        if (p < end && (*p == '\r' || *p == '\n')) /* the empty line */
            break;
        p = skip_token(p, end);
        if (p == end)
            return LG_H1_INCOMPLETE;
        if (*p != ':' || p == name) {
            if (p == name && (*p == ' ' || *p == '\t'))
                return fail(h, "obsolete line folding");
            return fail(h, "invalid character in header name");
        }
        /* the value: up to a CTL other than HTAB, then without its leading OWS */
        v = p + 1;
        e = find_stop(buf, v, end, 0x20);
        while (e < end && *e == '\t')
            e = find_stop(buf, e + 1, end, 0x20);
        while (v < e && (unsigned char)*v <= ' ')
            v++;
        ve = e;
        if ((r = line_end(&e, end, h, "invalid character in header value")) != 0)
            return r;
        if (e == end) /* http_parser too waits for the next line's first byte */
            return LG_H1_INCOMPLETE;
        if ((w = framing(name, (size_t)(p - name))) != FR_NONE &&
            (err = frame_field(&fs, w, v, ve, *e)) != NULL)
            return fail(h, err);
        if (fs.n++ < max)
            set_slice(fs.hs++, buf, name, (size_t)(p - name), v, ve);
        p = e;
    }
    if ((r = line_end(&p, end, h, "")) != 0)
        return r;
    if ((fs.f & FL_TE) && (fs.f & FL_CL))
        return fail(h, "content-length with transfer-encoding");
    h->nhdrs = fs.n;
    h->conn = fs.f & FL_CONN_MASK;
    if (fs.f & FL_CL) { /* the bitfields are 0 */
        h->has_cl = 1;
        h->content_length = fs.cl;
    }
    if (fs.f & FL_TE)
        h->has_te = 1;
    if (fs.f & FL_CHUNKED)
        h->chunked = 1;
    if ((fs.f & LG_H1_CONN_UPGRADE) && (fs.f & LG_H1_CONN_UPGRADE_HEADER))
        h->upgrade = 1;
    return (int)(p - buf);
}

/* http_should_keep_alive() apart from http_message_needs_eof(): HTTP/1.1 (major and minor
 * both nonzero, as http_parser puts it) unless "close", else only with "keep-alive". */
static inline int ka_tokens(const lg_h1_head_t *h)
{
    if (h->vmajor > 0 && h->vminor > 0)
        return !(h->conn & LG_H1_CONN_CLOSE);
    return (h->conn & LG_H1_CONN_KEEP_ALIVE) != 0;
}

/* METHOD SP request-target SP HTTP-version line-end */
static inline int request_line(const char **pp, const char *end, lg_h1_head_t *h, const char *buf)
{
    int r;

    if ((r = parse_method(pp, end, h)) != 0 || (r = parse_target(pp, end, h, buf)) != 0)
        return r;
    while (*pp < end && **pp == ' ')
        ++*pp;
    if ((r = parse_version(pp, end, h, h->method == HTTP_SOURCE)) != 0)
        return r;
    return line_end(pp, end, h, "invalid HTTP version");
}

/* HTTP-version SP status-code [SP reason-phrase] line-end, where http_parser takes more
 * SPs before the code, and any bytes but CR and LF in the reason. */
static inline int status_line(const char **pp, const char *end, lg_h1_head_t *h, const char *buf)
{
    const char *p;
    int r, i;

    if ((r = parse_version(pp, end, h, 0)) != 0)
        return r;
    p = *pp;
    if (p == end)
        return LG_H1_INCOMPLETE;
    if (*p++ != ' ')
        return fail(h, "invalid HTTP version");
    while (p < end && *p == ' ')
        p++;
    if (end - p < 4) {
        for (i = 0; p + i < end; i++)
            if (!is_digit((unsigned char)p[i]))
                return fail(h, "invalid HTTP status code");
        return LG_H1_INCOMPLETE;
    }
    if (!is_digit((unsigned char)p[0]) || !is_digit((unsigned char)p[1]) ||
        !is_digit((unsigned char)p[2]))
        return fail(h, "invalid HTTP status code");
    h->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    p += 3;
    if (h->status < 100 || (*p != ' ' && *p != '\r' && *p != '\n'))
        return fail(h, "invalid HTTP status code");
    if (*p == ' ')
        while ((p = find_stop(buf, p + 1, end, 0x20)) < end && *p != '\r' && *p != '\n')
            ;
    *pp = p;
    return line_end(pp, end, h, "");
}

/* ---- heads ---- */

/* Whether "\n\n" or "\n\r\n" ends in buf[last_len..len). */
static int may_end(const char *buf, size_t len, size_t last_len)
{
    const char *p = buf + (last_len > 3 ? last_len - 3 : 0), *end = buf + len;

    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        if (end - p >= 2 && p[1] == '\n')
            return 1;
        if (end - p >= 3 && p[1] == '\r' && p[2] == '\n')
            return 1;
        p++;
    }
    return 0;
}

static inline int response_body(lg_h1_head_t *h, int request_method)
{
    int st = h->status, mode, tunnel = request_method == HTTP_CONNECT && st / 100 == 2;

    if (request_method == HTTP_HEAD || st / 100 == 1 || st == 204 || st == 304 || tunnel)
        mode = LG_H1_BODY_NONE;
    else if (h->chunked)
        mode = LG_H1_BODY_CHUNKED;
    else if (h->has_te)
        mode = LG_H1_BODY_EOF;
    else if (h->has_cl)
        mode = h->content_length ? LG_H1_BODY_LENGTH : LG_H1_BODY_NONE;
    else
        mode = LG_H1_BODY_EOF;
    h->body_mode = mode;
    h->keepalive = mode != LG_H1_BODY_EOF && !tunnel && ka_tokens(h);
    return mode;
}

static int parse_head(int req, const char *buf, size_t len, size_t last_len, lg_h1_head_t *h,
                      lg_hslice_t *hdrs, size_t max)
{
    const char *p = buf, *end = buf + (len > INT_MAX ? INT_MAX : len); /* an int says its size */
    int r;

    if (last_len && last_len < len && !may_end(buf, len, last_len))
        return LG_H1_INCOMPLETE;
    memset(h, 0, sizeof(*h));
    h->method = -1;
    if (p < end && (*p == '\r' || *p == '\n')) /* empty lines before a message */
        while (p < end && (*p == '\r' || *p == '\n'))
            p++;
    r = req ? request_line(&p, end, h, buf) : status_line(&p, end, h, buf);
    if (r == 0)
        r = parse_fields(buf, p, end, h, hdrs, max);
    if (r < 0)
        return r == LG_H1_INCOMPLETE && len > INT_MAX ? fail(h, "head too long") : r;
    if (!req) {
        response_body(h, -1);
    } else if (h->has_te && !h->chunked) {
        return fail(h, "request has invalid transfer-encoding");
    } else {
        h->body_mode = h->chunked                       ? LG_H1_BODY_CHUNKED
                       : h->has_cl && h->content_length ? LG_H1_BODY_LENGTH
                                                        : LG_H1_BODY_NONE;
        h->keepalive = ka_tokens(h);
    }
    return h->nhdrs > max ? LG_H1_TOO_MANY : r;
}

int lg_h1_parse_request(const char *buf, size_t len, size_t last_len, lg_h1_head_t *h,
                        lg_hslice_t *hdrs, size_t max)
{
    return parse_head(1, buf, len, last_len, h, hdrs, max);
}

int lg_h1_parse_response(const char *buf, size_t len, size_t last_len, lg_h1_head_t *h,
                         lg_hslice_t *hdrs, size_t max)
{
    return parse_head(0, buf, len, last_len, h, hdrs, max);
}

int lg_h1_response_body(lg_h1_head_t *h, int request_method)
{
    return response_body(h, request_method);
}

/* ---- bodies ---- */

enum {
    B_SIZE0,    /* a chunk-size line: first hex digit */
    B_SIZE,     /* more hex digits */
    B_SIZE_WS,  /* SPs after the size */
    B_EXT,      /* ";extensions" */
    B_SIZE_LF,  /* CR seen */
    B_DATA,     /* chunk data */
    B_DATA_CR,  /* after the data: CR or LF */
    B_DATA_LF,  /* CR seen */
    B_TR_START, /* a trailer line or the final empty line */
    B_TR_NAME,
    B_TR_VALUE,
    B_TR_LF,    /* CR seen after a trailer field */
    B_TR_END_LF /* CR seen on the final empty line */
};

void lg_h1_body_init(lg_h1_body_t *b, int mode, uint64_t content_length)
{
    memset(b, 0, sizeof(*b));
    b->mode = mode;
    b->state = B_SIZE0;
    if (mode == LG_H1_BODY_LENGTH)
        b->remaining = content_length;
    b->done = mode == LG_H1_BODY_NONE || (mode == LG_H1_BODY_LENGTH && content_length == 0);
}

static ssize_t body_fail(lg_h1_body_t *b, const char *msg)
{
    b->err = msg;
    return -1;
}

static int hexval(unsigned char c)
{
    if (is_digit(c))
        return c - '0';
    c |= 0x20;
    return (unsigned)(c - 'a') < 6 ? c - 'a' + 10 : -1;
}

static ssize_t chunked_feed(lg_h1_body_t *b, const char *p, size_t len,
                            void (*on_data)(void *ud, const char *p, size_t n), void *ud)
{
    const char *s = p, *end = p + len;
    int d;

    for (; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (b->state == B_DATA) {
            size_t n = (size_t)(end - p);
            if (n > b->remaining)
                n = (size_t)b->remaining;
            if (on_data)
                on_data(ud, p, n);
            b->remaining -= n;
            p += n - 1;
            if (b->remaining == 0)
                b->state = B_DATA_CR;
            continue;
        }
        if (b->state >= B_TR_START && ++b->nline > LINE_MAX_)
            return body_fail(b, "trailer section too large");
        switch (b->state) {
        case B_SIZE0:
            if ((d = hexval(c)) < 0)
                return body_fail(b, "invalid chunk size");
            b->remaining = (uint64_t)d;
            b->state = B_SIZE;
            break;
        case B_SIZE:
            if ((d = hexval(c)) >= 0) {
                if (b->remaining >> 60)
                    return body_fail(b, "chunk size overflow");
                b->remaining = b->remaining << 4 | (uint64_t)d;
                break;
            }
            /* fall through */
        case B_SIZE_WS:
            if (c == ' ') /* no HTAB here, as http_parser */
                b->state = B_SIZE_WS;
            else if (c == ';')
                b->state = B_EXT;
            else if (c == '\r')
                b->state = B_SIZE_LF;
            else if (c == '\n')
                goto size_done;
            else
                return body_fail(b, "invalid chunk size");
            break;
        case B_EXT:
            if (c == '\r')
                b->state = B_SIZE_LF;
            else if (c == '\n')
                goto size_done;
            else if (is_stop(c, 0x20) && c != '\t')
                return body_fail(b, "invalid character in chunk extension");
            else if (++b->nline > LINE_MAX_)
                return body_fail(b, "chunk extension too long");
            break;
        case B_SIZE_LF:
            if (c != '\n')
                return body_fail(b, "CR not followed by LF");
        size_done:
            b->nline = 0;
            b->state = b->remaining ? B_DATA : B_TR_START;
            break;
        case B_DATA_CR:
            if (c == '\r')
                b->state = B_DATA_LF;
            else if (c == '\n')
                b->state = B_SIZE0;
            else
                return body_fail(b, "missing CRLF after chunk data");
            break;
        case B_DATA_LF:
            if (c != '\n')
                return body_fail(b, "missing CRLF after chunk data");
            b->state = B_SIZE0;
            break;
        case B_TR_START:
            if (c == '\r') {
                b->state = B_TR_END_LF;
            } else if (c == '\n') {
                b->done = 1;
                return p + 1 - s;
            } else if (tchar[c]) {
                b->state = B_TR_NAME;
            } else {
                return body_fail(b, "invalid trailer field");
            }
            break;
        case B_TR_NAME:
            if (c == ':')
                b->state = B_TR_VALUE;
            else if (!tchar[c])
                return body_fail(b, "invalid trailer field");
            break;
        case B_TR_VALUE:
            if (c == '\r')
                b->state = B_TR_LF;
            else if (c == '\n')
                b->state = B_TR_START;
            else if (is_stop(c, 0x20) && c != '\t')
                return body_fail(b, "invalid trailer field");
            break;
        case B_TR_LF:
        case B_TR_END_LF:
            if (c != '\n')
                return body_fail(b, "CR not followed by LF");
            if (b->state == B_TR_END_LF) {
                b->done = 1;
                return p + 1 - s;
            }
            b->state = B_TR_START;
            break;
        }
    }
    return p - s;
}

ssize_t lg_h1_body_feed(lg_h1_body_t *b, const char *p, size_t len,
                        void (*on_data)(void *ud, const char *p, size_t n), void *ud)
{
    size_t n;

    if (b->err)
        return -1;
    if (b->done)
        return 0;
    switch (b->mode) {
    case LG_H1_BODY_LENGTH:
        n = len < b->remaining ? len : (size_t)b->remaining;
        if (n && on_data)
            on_data(ud, p, n);
        b->remaining -= n;
        b->done = b->remaining == 0;
        return (ssize_t)n;
    case LG_H1_BODY_CHUNKED:
        return chunked_feed(b, p, len, on_data, ud);
    case LG_H1_BODY_EOF:
        if (len && on_data)
            on_data(ud, p, len);
        return (ssize_t)len;
    default:
        b->done = 1;
        return 0;
    }
}

void lg_h1_body_eof(lg_h1_body_t *b)
{
    if (b->done || b->err)
        return;
    if (b->mode == LG_H1_BODY_EOF)
        b->done = 1;
    else
        b->err = "connection closed before the end of the body";
}
