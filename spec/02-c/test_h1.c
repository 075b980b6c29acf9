/* test_h1.c -- the HTTP/1.1 head parser and body decoder: each rule accepted and rejected,
 * heads and chunked bodies cut at every byte, the last_len shortcut, LG_H1_TOO_MANY, then
 * differential runs against libhttp_parser 2.9.4 (a hand-written corpus of heads, its
 * mutations, random chunked bodies).
 * SPDX-License-Identifier: MIT
 *
 * Inputs are copied into buffers of their exact size, without a NUL, so that a read past
 * `len` shows under ASan. The mismatches allowed are the deviations listed at the top of
 * src/h1.c, each recognised from the input (and our error message), never wholesale. */
#include "test.h"

#include "../../src/h1.c"

/* A method's name from h1.c's table, to check it against http_method_str(). */
static const char *method_str(int method)
{
    return (unsigned)method < NMETHODS ? methods[method].name : "<unknown>";
}

#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ITERS    100000
#define CHUNKED_ITERS 1000
#else
#define FUZZ_ITERS    300000
#define CHUNKED_ITERS 5000
#endif

#define MAXH 64

/* ---- helpers ---- */

static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    memcpy(p, s, n);
    return p;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* Prints s[0..n) with C escapes, for failure messages. */
static void print_escaped(const char *s, size_t n)
{
    size_t i;
    printf("#   input (%zu bytes): \"", n);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r')
            printf("\\r");
        else if (c == '\n')
            printf("\\n");
        else if (c == '\t')
            printf("\\t");
        else if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    printf("\"\n");
}

/* The input under test (an exact-size copy, kept until the next parse) and its result. */
static char *cur;
static size_t cur_len;
static lg_h1_head_t H;
static lg_hslice_t HS[MAXH];

static int parse_n(int req, const char *s, size_t n)
{
    free(cur);
    cur = dup_exact(s, n);
    cur_len = n;
    if (req)
        return lg_h1_parse_request(cur, n, 0, &H, HS, MAXH);
    return lg_h1_parse_response(cur, n, 0, &H, HS, MAXH);
}

static int preq(const char *s)
{
    return parse_n(1, s, strlen(s));
}

static int presp(const char *s)
{
    return parse_n(0, s, strlen(s));
}

/* The error of a request (or response) head, "" when it parses, "(incomplete)". */
static const char *err_n(int req, const char *s, size_t n)
{
    int r = parse_n(req, s, n);
    if (r == LG_H1_ERROR)
        return H.err ? H.err : "(null)";
    return r == LG_H1_INCOMPLETE ? "(incomplete)" : "";
}

static const char *req_err(const char *s)
{
    return err_n(1, s, strlen(s));
}

static const char *resp_err(const char *s)
{
    return err_n(0, s, strlen(s));
}

static int whole_req(const char *s)
{
    return preq(s) == (int)strlen(s);
}

static int whole_resp(const char *s)
{
    return presp(s) == (int)strlen(s);
}

static int span_is(uint32_t off, uint32_t len, const char *want)
{
    return len == strlen(want) && memcmp(cur + off, want, len) == 0;
}

static int span_at(const char *base, uint32_t off, uint32_t len, const char *want)
{
    return len == strlen(want) && memcmp(base + off, want, len) == 0;
}

static int hdr_is(size_t k, const char *name, const char *value)
{
    return k < H.nhdrs && k < MAXH && span_is(HS[k].noff, HS[k].nlen, name) &&
           span_is(HS[k].voff, HS[k].vlen, value) && HS[k].deleted == 0;
}

static int url_is(const char *want)
{
    return span_is(H.url_off, H.url_len, want);
}

static int same(const char *a, const char *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

/* Collects decoded body bytes. */
typedef struct {
    char *p;
    size_t n, cap;
} sink_t;

static void sink_add(void *ud, const char *p, size_t n)
{
    sink_t *s = ud;
    if (n == 0)
        return;
    if (s->n + n > s->cap) {
        s->cap = (s->n + n) * 2 + 16;
        s->p = realloc(s->p, s->cap);
    }
    memcpy(s->p + s->n, p, n);
    s->n += n;
}

/* Feeds src[0..n) to b in pieces ending at the offsets cuts[0..ncuts) (increasing), each
 * piece an exact-size copy, re-offering what a call leaves unconsumed, until done or an
 * error. Returns the total consumed, or -1. */
static ssize_t feed_cuts(lg_h1_body_t *b, const char *src, size_t n, const size_t *cuts,
                         size_t ncuts, sink_t *out)
{
    size_t pos = 0, k;

    for (k = 0; k <= ncuts && !b->done; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        char *piece;
        ssize_t r;
        if (to <= pos)
            continue;
        piece = dup_exact(src + pos, to - pos);
        r = lg_h1_body_feed(b, piece, to - pos, sink_add, out);
        free(piece);
        if (r < 0)
            return -1;
        pos += (size_t)r;
        if (!b->done && pos != to)
            return -1; /* a decoder must take all it is given until done */
    }
    return (ssize_t)pos;
}

/* ---- request and status lines ---- */

static const char *REQ_TYPICAL = "GET / HTTP/1.1\r\nHost: 127.0.0.1:19010\r\n\r\n";
static const char *RESP_TYPICAL = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n"
                                  "Date: Mon, 02 Jun 2025 10:00:00 GMT\r\n"
                                  "Content-Type: text/plain\r\nContent-Length: 27\r\n"
                                  "Connection: keep-alive\r\n\r\n";

static void test_typical(void)
{
    int r = preq(REQ_TYPICAL);
    ok(r == (int)strlen(REQ_TYPICAL), "typical request: whole head (%d)", r);
    ok(H.method == HTTP_GET && H.vmajor == 1 && H.vminor == 1, "GET, HTTP/1.1");
    ok(url_is("/"), "url /");
    ok(H.nhdrs == 1 && hdr_is(0, "Host", "127.0.0.1:19010"), "Host header");
    ok(H.keepalive && !H.has_cl && !H.chunked && !H.has_te && !H.upgrade, "flags");
    ok(H.body_mode == LG_H1_BODY_NONE && H.err == NULL, "no body, no error");

    r = presp(RESP_TYPICAL);
    ok(r == (int)strlen(RESP_TYPICAL), "typical response: whole head (%d)", r);
    ok(H.status == 200 && H.vmajor == 1 && H.vminor == 1 && H.method == -1, "200, HTTP/1.1");
    ok(H.nhdrs == 5 && hdr_is(0, "Server", "nginx/1.22.1") &&
           hdr_is(1, "Date", "Mon, 02 Jun 2025 10:00:00 GMT") &&
           hdr_is(2, "Content-Type", "text/plain") && hdr_is(3, "Content-Length", "27") &&
           hdr_is(4, "Connection", "keep-alive"),
       "five headers");
    ok(H.has_cl && H.content_length == 27 && H.keepalive && H.conn == LG_H1_CONN_KEEP_ALIVE,
       "Content-Length 27, keep-alive");
    ok(H.body_mode == LG_H1_BODY_LENGTH, "body by length");
}

static void test_methods(void)
{
    char line[64];
    int i, good = 1;

    for (i = 0; i < (int)NMETHODS; i++) {
        const char *m = http_method_str((enum http_method)i);
        snprintf(line, sizeof(line), "%s / HTTP/1.1\r\n\r\n", m);
        if (preq(line) != (int)strlen(line) || H.method != i || strcmp(method_str(i), m) != 0) {
            printf("#   method %s\n", m);
            good = 0;
        }
    }
    ok(good && NMETHODS == 34, "all %d methods of HTTP_METHOD_MAP, as http_method_str",
       (int)NMETHODS);
    ok_streq(method_str(-1), "<unknown>", "method_str out of range");
    ok_streq(method_str(34), "<unknown>", "method_str past the end");
    ok_streq(req_err("get / HTTP/1.1\r\n\r\n"), "invalid HTTP method", "lowercase method");
    ok_streq(req_err("GETS / HTTP/1.1\r\n\r\n"), "invalid HTTP method", "GETS");
    ok_streq(req_err("GE / HTTP/1.1\r\n\r\n"), "invalid HTTP method", "GE");
    ok_streq(req_err("FOO / HTTP/1.1\r\n\r\n"), "invalid HTTP method", "unknown method");
    ok_streq(req_err("UNSUBSCRIBEX / HTTP/1.1\r\n\r\n"), "invalid HTTP method", "too long");
    ok_streq(req_err(" GET / HTTP/1.1\r\n\r\n"), "invalid HTTP method", "leading SP");
    ok_streq(req_err("GET\t/ HTTP/1.1\r\n\r\n"), "invalid HTTP method", "HTAB after method");
    ok_streq(req_err("MKCALEN"), "(incomplete)", "method prefix: incomplete");
    ok_streq(req_err("MKCALENDAR"), "(incomplete)", "whole method, no SP: incomplete");
    ok_streq(req_err("MKCALX"), "invalid HTTP method", "no method has this prefix");
    ok(preq("M-SEARCH * HTTP/1.1\r\n\r\n") > 0 && H.method == HTTP_MSEARCH && url_is("*"),
       "M-SEARCH *");
}

static void test_request_line(void)
{
    ok(preq("GET  /a  HTTP/1.1\r\n\r\n") > 0 && url_is("/a"), "several SPs around the target");
    ok(preq("\r\n\r\nGET / HTTP/1.1\r\n\r\n") == 22 && url_is("/") && H.url_off == 8,
       "empty lines before the request are skipped");
    ok(whole_req("GET / HTTP/1.1\nHost: a\n\n") && hdr_is(0, "Host", "a"), "bare LF lines");
    ok(whole_req("GET / HTTP/1.1\r\nHost: a\n\r\n"), "LF then CRLF ends the head");
    ok(preq("GET /p?q=1&r=%20#frag HTTP/1.1\r\n\r\n") > 0 && url_is("/p?q=1&r=%20#frag"),
       "query and fragment");
    ok(preq("GET /\"<>\\^`{|}~ HTTP/1.1\r\n\r\n") > 0, "odd but printable target bytes");
    ok(preq("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n") > 0 && url_is("/caf\xc3\xa9"),
       "obs-text in the path (as the non-strict build)");
    ok(preq("GET http://u:p@[::1]:80/x?y#z HTTP/1.1\r\n\r\n") > 0 &&
           url_is("http://u:p@[::1]:80/x?y#z"),
       "absolute-form");
    ok(preq("GET http://a HTTP/1.1\r\n\r\n") > 0 && url_is("http://a"), "absolute-form, no path");
    ok(preq("GET http://a@b@c/ HTTP/1.1\r\n\r\n") > 0, "two '@' apart");
    ok_streq(req_err("GET http://a@@b/ HTTP/1.1\r\n\r\n"), "invalid URL", "\"@@\"");
    ok_streq(req_err("GET http:// HTTP/1.1\r\n\r\n"), "invalid URL", "empty authority");
    ok_streq(req_err("GET http:/x HTTP/1.1\r\n\r\n"), "invalid URL", "one slash");
    ok_streq(req_err("GET h2c://x/ HTTP/1.1\r\n\r\n"), "invalid URL", "digit in scheme");
    ok_streq(req_err("GET http://a\xc3/ HTTP/1.1\r\n\r\n"), "invalid URL", "obs-text in host");
    ok(preq("CONNECT example.com:443 HTTP/1.1\r\n\r\n") > 0 && H.method == HTTP_CONNECT &&
           url_is("example.com:443"),
       "CONNECT authority-form");
    ok(preq("OPTIONS * HTTP/1.1\r\n\r\n") > 0 && url_is("*"), "asterisk-form");
    ok_streq(req_err("GET /a\tb HTTP/1.1\r\n\r\n"), "invalid character in URL", "HTAB in target");
    ok_streq(req_err("GET /a\fb HTTP/1.1\r\n\r\n"), "invalid character in URL", "FF in target");
    ok_streq(req_err("GET /a\x01 HTTP/1.1\r\n\r\n"), "invalid character in URL", "CTL in target");
    ok_streq(req_err("GET /a\x7f HTTP/1.1\r\n\r\n"), "invalid character in URL", "DEL in target");
    ok_streq(err_n(1, "GET /a\0b HTTP/1.1\r\n\r\n", 21), "invalid character in URL",
             "NUL in target");
    ok_streq(req_err("GET \x01 HTTP/1.1\r\n\r\n"), "invalid URL", "CTL starting the target");
    ok_streq(req_err("GET /\r\n\r\n"), "missing HTTP version", "HTTP/0.9 request line");
    ok_streq(req_err("GET /\n\n"), "missing HTTP version", "HTTP/0.9 with LF");
    ok_streq(req_err("GET http:/\r\n\r\n"), "invalid URL", "CR inside the scheme");
    ok(preq("GET / HTTP/1.0\r\n\r\n") > 0 && H.vmajor == 1 && H.vminor == 0, "HTTP/1.0");
    ok(preq("GET / HTTP/0.9\r\n\r\n") > 0 && H.vmajor == 0 && H.vminor == 9,
       "an explicit HTTP/0.9 version is a version");
    ok(preq("GET / HTTP/2.0\r\n\r\n") > 0 && H.vmajor == 2 && H.vminor == 0, "HTTP/2.0");
    ok_streq(req_err("GET / HTTP/10.1\r\n\r\n"), "invalid HTTP version", "two-digit major");
    ok_streq(req_err("GET / HTTP/1.10\r\n\r\n"), "invalid HTTP version", "two-digit minor");
    ok_streq(req_err("GET / HTTP/1.1 \r\n\r\n"), "invalid HTTP version", "SP after version");
    ok_streq(req_err("GET / HTTP/1\r\n\r\n"), "invalid HTTP version", "no minor");
    ok_streq(req_err("GET / http/1.1\r\n\r\n"), "invalid HTTP version", "lowercase http");
    ok_streq(req_err("GET / HXTP/1.1\r\n\r\n"), "invalid HTTP version",
             "HTTP spelled wrong (the non-strict build takes it)");
    ok_streq(req_err("GET / HTTP/1.1\rX\r\n\r\n"), "CR not followed by LF", "bare CR");
    ok(preq("SOURCE / ICE/1.0\r\n\r\n") > 0 && H.method == HTTP_SOURCE && H.vmajor == 1,
       "SOURCE with ICE/1.0, as http_parser");
    ok_streq(req_err("GET / ICE/1.0\r\n\r\n"), "invalid HTTP version", "ICE only for SOURCE");
}

static void test_status_line(void)
{
    ok(presp("HTTP/1.0 404 Not Found\r\n\r\n") > 0 && H.status == 404 && H.vminor == 0,
       "404 Not Found");
    ok(presp("HTTP/1.1 204\r\n\r\n") > 0 && H.status == 204, "no reason phrase");
    ok(presp("HTTP/1.1 200 \r\n\r\n") > 0 && H.status == 200, "empty reason phrase");
    ok(presp("HTTP/1.1  200 OK\r\n\r\n") > 0 && H.status == 200, "two SPs before the status");
    ok(presp("HTTP/1.1 200 O\tK \x01\x7f\xff\r\n\r\n") > 0, "any reason bytes but CR and LF");
    ok(presp("HTTP/1.1 999 X\n\n") > 0 && H.status == 999, "999, bare LFs");
    ok(presp("\r\nHTTP/1.1 200 OK\r\n\r\n") > 0, "empty line before a response skipped");
    ok_streq(resp_err("HTTP/1.1 2 OK\r\n\r\n"), "invalid HTTP status code", "one digit");
    ok_streq(resp_err("HTTP/1.1 099 OK\r\n\r\n"), "invalid HTTP status code", "below 100");
    ok_streq(resp_err("HTTP/1.1 0200 OK\r\n\r\n"), "invalid HTTP status code", "four digits");
    ok_streq(resp_err("HTTP/1.1 1000 OK\r\n\r\n"), "invalid HTTP status code", "1000");
    ok_streq(resp_err("HTTP/1.1 200OK\r\n\r\n"), "invalid HTTP status code", "no SP after it");
    ok_streq(resp_err("HTTP/1.1 200\tOK\r\n\r\n"), "invalid HTTP status code", "HTAB after it");
    ok_streq(resp_err("HTTP/1.1\t200 OK\r\n\r\n"), "invalid HTTP version", "HTAB after version");
    ok_streq(resp_err("HTTP/11 200 OK\r\n\r\n"), "invalid HTTP version", "HTTP/11");
    ok_streq(resp_err("HXTP/1.1 200 OK\r\n\r\n"), "invalid HTTP version", "HXTP");
    ok_streq(resp_err("HTTP/1.1 200 OK\rX\r\n\r\n"), "CR not followed by LF", "bare CR");
    ok_streq(resp_err("GET / HTTP/1.1\r\n\r\n"), "invalid HTTP version", "a request");
}

/* ---- header fields ---- */

static void test_fields(void)
{
    ok(whole_req("GET / HTTP/1.1\r\nX-!#$%&'*+.^_`|~09aZ: v\r\n\r\n") &&
           hdr_is(0, "X-!#$%&'*+.^_`|~09aZ", "v"),
       "every tchar in a name");
    ok(whole_req("GET / HTTP/1.1\r\nA:b\r\nB: \t c  d \t \r\nC:\r\nD:   \r\n\r\n") &&
           H.nhdrs == 4 && hdr_is(0, "A", "b") && hdr_is(1, "B", "c  d") && hdr_is(2, "C", "") &&
           hdr_is(3, "D", ""),
       "OWS around values is not part of them; empty values");
    ok(whole_req("GET / HTTP/1.1\r\nX: a\tb\r\n\r\n") && hdr_is(0, "X", "a\tb"), "HTAB inside");
    ok(whole_req("GET / HTTP/1.1\r\nX: caf\xc3\xa9\x80\xff\r\n\r\n") &&
           hdr_is(0, "X", "caf\xc3\xa9\x80\xff"),
       "obs-text in values");
    ok(whole_req("GET / HTTP/1.1\r\nX: 0123456789abcdefghijklmnopq \"quoted\" (c)\r\n\r\n") &&
           hdr_is(0, "X", "0123456789abcdefghijklmnopq \"quoted\" (c)"),
       "a long value (word scan)");
    ok(whole_req("GET / HTTP/1.1\r\nSet: a\r\nSet: b\r\n\r\n") && hdr_is(0, "Set", "a") &&
           hdr_is(1, "Set", "b"),
       "repeated names kept apart, in order");
    ok_streq(req_err("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), "invalid character in header name",
             "SP before the colon (the non-strict build takes it)");
    ok_streq(req_err("GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n"),
             "invalid character in header name", "\"Transfer-Encoding : chunked\"");
    ok_streq(req_err("GET / HTTP/1.1\r\nHo st: a\r\n\r\n"), "invalid character in header name",
             "SP in a name");
    ok_streq(req_err("GET / HTTP/1.1\r\n:a\r\n\r\n"), "invalid character in header name",
             "empty name");
    ok_streq(req_err("GET / HTTP/1.1\r\nA(b: c\r\n\r\n"), "invalid character in header name",
             "separator in a name");
    ok_streq(req_err("GET / HTTP/1.1\r\nA\r\n\r\n"), "invalid character in header name",
             "no colon");
    ok_streq(req_err("GET / HTTP/1.1\r\nA\xc3: b\r\n\r\n"), "invalid character in header name",
             "obs-text in a name");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), "obsolete line folding", "obs-fold");
    ok_streq(req_err("GET / HTTP/1.1\r\nA:\r\n\tc\r\n\r\n"), "obsolete line folding",
             "obs-fold after an empty value");
    ok_streq(req_err("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), "obsolete line folding",
             "SP before the first field");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), "CR not followed by LF",
             "bare CR in a value");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: \rc\r\n\r\n"), "CR not followed by LF",
             "bare CR as a value");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: b\r\n\rX"), "CR not followed by LF",
             "bare CR ending the head");
    ok_streq(err_n(1, "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", 26), "invalid character in header value",
             "NUL in a value");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n"), "invalid character in header value",
             "CTL in a value");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: \x01\r\n\r\n"), "invalid character in header value",
             "CTL first in a value (http_parser misses it)");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n"), "invalid character in header value",
             "DEL in a value");
    ok_streq(req_err("GET / HTTP/1.1\r\nA: 0123456789\x1b"
                     "abcdef\r\n\r\n"),
             "invalid character in header value", "CTL in the middle of a long value");
    ok_streq(resp_err("HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n"), "invalid character in header value",
             "responses too");
}

static void test_content_length(void)
{
    ok(whole_req("POST / HTTP/1.1\r\ncontent-LENGTH: 42\r\n\r\n") && H.has_cl &&
           H.content_length == 42 && H.body_mode == LG_H1_BODY_LENGTH,
       "Content-Length, any case");
    ok(whole_req("POST / HTTP/1.1\r\nContent-Length:  \t 7  \r\n\r\n") && H.content_length == 7 &&
           hdr_is(0, "Content-Length", "7"),
       "OWS before, SPs after");
    ok(whole_req("POST / HTTP/1.1\r\nContent-Length: 0000000000000000000000000000012\r\n\r\n") &&
           H.content_length == 12,
       "leading zeros");
    ok(whole_req("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") && H.has_cl &&
           H.content_length == 0 && H.body_mode == LG_H1_BODY_NONE,
       "Content-Length: 0 is no body");
    ok(whole_req("POST / HTTP/1.1\r\nContent-Length: 18446744073709551609\r\n\r\n") &&
           H.content_length == 18446744073709551609ULL,
       "largest Content-Length http_parser takes");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 18446744073709551610\r\n\r\n"),
             "invalid content-length", "one more overflows");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
             "invalid content-length", "overflow");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), "invalid content-length",
             "+5");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), "invalid content-length",
             "-1");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n"), "invalid content-length",
             "5 5");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 5,5\r\n\r\n"), "invalid content-length",
             "5,5");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 5\t\r\n\r\n"), "invalid content-length",
             "HTAB after the number (as http_parser)");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), "invalid content-length",
             "hex");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), "invalid content-length",
             "empty");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"), "invalid content-length",
             "blank");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
             "duplicate content-length", "a second Content-Length, even equal");
    ok_streq(req_err("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
             "content-length with transfer-encoding", "CL + TE");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
             "content-length with transfer-encoding", "TE + CL");
    ok_streq(resp_err("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n"),
             "content-length with transfer-encoding", "CL + TE in a response");
    ok(whole_req("POST / HTTP/1.1\r\nContent-Lengthy: x\r\nContent-Lengt: y\r\n\r\n") && !H.has_cl,
       "near names are ordinary headers");
}

static void test_transfer_encoding(void)
{
    ok(whole_req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") && H.chunked &&
           H.has_te && H.body_mode == LG_H1_BODY_CHUNKED,
       "chunked");
    ok(whole_req("POST / HTTP/1.1\r\ntransfer-encoding: CHUNKED \r\n\r\n") && H.chunked,
       "any case, SP after");
    ok(whole_req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") && H.chunked,
       "a list ending in chunked");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding: gzip,\tchunked\r\n\r\n"),
             "request has invalid transfer-encoding",
             "HTAB starting an element stops the matching (as http_parser)");
    ok(whole_req(
           "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n") &&
           H.chunked,
       "two headers, the last chunked");
    ok_streq(
        req_err("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"),
        "request has invalid transfer-encoding", "two headers, the last not chunked");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
             "request has invalid transfer-encoding", "chunked, identity");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
             "request has invalid transfer-encoding", "identity");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\t\r\n\r\n"),
             "request has invalid transfer-encoding", "HTAB after chunked (as http_parser)");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding: chunked,chunked\r\n\r\n"),
             "request has invalid transfer-encoding", "chunked twice");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"),
             "request has invalid transfer-encoding", "xchunked");
    ok_streq(req_err("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n"),
             "request has invalid transfer-encoding", "empty");
    ok(whole_req("POST / HTTP/1.1\r\nTransfer-Encodingx: gzip\r\n\r\n") && !H.has_te,
       "a longer name is an ordinary header (http_parser: a Transfer-Encoding)");
    ok(whole_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n") && H.has_te && !H.chunked &&
           H.body_mode == LG_H1_BODY_EOF && !H.keepalive,
       "response: a coding but not chunked runs to EOF");
    ok(whole_resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") && H.chunked &&
           H.body_mode == LG_H1_BODY_CHUNKED && H.keepalive,
       "response: chunked");
}

static void test_keepalive(void)
{
    ok(whole_req("GET / HTTP/1.1\r\n\r\n") && H.keepalive, "1.1: keep-alive by default");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n") && !H.keepalive, "1.1 close");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n") && !H.keepalive, "any case");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: foo, close \r\n\r\n") && !H.keepalive,
       "close in a list");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: close, foo\r\n\r\n") && !H.keepalive,
       "close first in a list");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: x\r\nConnection: close\r\n\r\n") && !H.keepalive,
       "close in a second header");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n") && H.keepalive, "closed");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: , close\r\n\r\n") && H.keepalive,
       "after a leading ',' (as http_parser)");
    ok(whole_req("GET / HTTP/1.1\r\nConnection: close\t\r\n\r\n") && H.keepalive,
       "HTAB after close (as http_parser)");
    ok(whole_req("GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n") && !H.keepalive,
       "Proxy-Connection counts (as http_parser)");
    ok(whole_req("GET / HTTP/1.0\r\n\r\n") && !H.keepalive, "1.0: close by default");
    ok(whole_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") && H.keepalive,
       "1.0 Keep-Alive");
    ok(whole_req("GET / HTTP/1.0\r\nConnection: Upgrade, keep-alive\r\n\r\n") && H.keepalive &&
           H.conn == (LG_H1_CONN_KEEP_ALIVE | LG_H1_CONN_UPGRADE),
       "1.0 keep-alive in a list");
    ok(whole_req("GET / HTTP/2.0\r\n\r\n") && !H.keepalive,
       "2.0 counts as 1.0 (http_should_keep_alive wants major and minor > 0)");
    ok(whole_req("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n") &&
           H.upgrade && H.keepalive,
       "upgrade");
    ok(whole_req("GET / HTTP/1.1\r\nUpgrade: \r\nConnection: upgrade\r\n\r\n") && !H.upgrade,
       "upgrade needs a non-empty Upgrade");
    ok(whole_req("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n") && !H.upgrade,
       "upgrade needs the Connection token");
    ok(whole_resp("HTTP/1.1 200 OK\r\n\r\n") && !H.keepalive && H.body_mode == LG_H1_BODY_EOF,
       "response without length: to EOF, not kept");
    ok(whole_resp("HTTP/1.1 204 No Content\r\n\r\n") && H.keepalive &&
           H.body_mode == LG_H1_BODY_NONE,
       "204: no body, kept");
    ok(whole_resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n") &&
           H.keepalive,
       "1.0 response with keep-alive and a length");
    ok(whole_resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n") &&
           !H.keepalive,
       "response close");
}

static void test_body_modes(void)
{
    static const struct {
        const char *head;
        int method, mode, keepalive;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP_HEAD, LG_H1_BODY_NONE, 1},
        {"HTTP/1.1 200 OK\r\n\r\n", HTTP_HEAD, LG_H1_BODY_NONE, 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", HTTP_HEAD, LG_H1_BODY_NONE, 1},
        {"HTTP/1.1 200 OK\r\n\r\n", HTTP_GET, LG_H1_BODY_EOF, 0},
        {"HTTP/1.1 100 Continue\r\n\r\n", HTTP_POST, LG_H1_BODY_NONE, 1},
        {"HTTP/1.1 101 Switching\r\n\r\n", HTTP_GET, LG_H1_BODY_NONE, 1},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", HTTP_GET, LG_H1_BODY_NONE, 1},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", HTTP_GET, LG_H1_BODY_NONE, 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_GET, LG_H1_BODY_CHUNKED, 1},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", HTTP_GET, LG_H1_BODY_EOF, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP_GET, LG_H1_BODY_LENGTH, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HTTP_GET, LG_H1_BODY_NONE, 1},
        {"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP_GET, LG_H1_BODY_LENGTH, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", HTTP_GET,
         LG_H1_BODY_LENGTH, 0},
        {"HTTP/1.1 200 Connection established\r\n\r\n", HTTP_CONNECT, LG_H1_BODY_NONE, 0},
        {"HTTP/1.1 407 Auth\r\nContent-Length: 5\r\n\r\n", HTTP_CONNECT, LG_H1_BODY_LENGTH, 1},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = presp(cases[i].head), m = lg_h1_response_body(&H, cases[i].method);
        ok(r > 0 && m == cases[i].mode && H.body_mode == m && H.keepalive == cases[i].keepalive,
           "response body mode %zu (%s): %d, keepalive %d", i, method_str(cases[i].method), m,
           H.keepalive);
    }
    ok(whole_req("GET / HTTP/1.1\r\n\r\n") && H.body_mode == LG_H1_BODY_NONE, "request: none");
    ok(whole_req("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n") &&
           H.body_mode == LG_H1_BODY_LENGTH,
       "request: length");
    ok(whole_req("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") &&
           H.body_mode == LG_H1_BODY_CHUNKED,
       "request: chunked");
}

/* ---- the word and SIMD scans at every length and alignment ---- */

/* Parses "GET / HTTP/1.1\r\nP: <pad bytes>\r\n<name>: <value>\r\nZ: 1\r\n\r\n" and checks
 * the middle field against the value without its leading and trailing OWS. Returns the
 * parse result, or 0 when it is wrong. */
static int scan_case(const char *name, const char *value, int pad)
{
    char head[256];
    const char *a = value, *z = value + strlen(value);
    int n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nP: %.*s\r\n%s: %s\r\nZ: 1\r\n\r\n", pad,
                     "xyz", name, value),
        r = parse_n(1, head, (size_t)n);

    while (*a == ' ' || *a == '\t')
        a++;
    while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
        z--;
    if (r < 0)
        return r;
    if (r == n && H.nhdrs == 3 && span_is(HS[1].noff, HS[1].nlen, name) &&
        HS[1].vlen == (uint32_t)(z - a) && memcmp(cur + HS[1].voff, a, (size_t)(z - a)) == 0 &&
        hdr_is(2, "Z", "1"))
        return r;
    print_escaped(head, (size_t)n);
    return 0;
}

static void test_scan_lengths(void)
{
    char name[32], value[64];
    int nl, vl, pad, k, bad = 0, bad_ctl = 0, bad_tab = 0;

    for (nl = 1; nl <= 20; nl++)
        for (vl = 0; vl <= 40; vl++)
            for (pad = 0; pad < 4; pad++) {
                for (k = 0; k < nl; k++)
                    name[k] = "Ab-9_x"[k % 6];
                name[nl] = '\0';
                for (k = 0; k < vl; k++)
                    value[k] = "v .;/\xc3\xa9~"[k % 8];
                value[vl] = '\0';
                bad += scan_case(name, value, pad) <= 0;
                if (vl == 0)
                    continue;
                /* a CTL, or DEL, anywhere in the value is an error; HTAB is a value byte */
                k = (nl + vl + pad) % vl;
                value[k] = (nl + pad) % 2 ? '\x01' : '\x7f';
                bad_ctl += scan_case(name, value, pad) != LG_H1_ERROR ||
                           strcmp(H.err, "invalid character in header value") != 0;
                value[k] = '\t';
                bad_tab += scan_case(name, value, pad) <= 0;
            }
    ok(bad == 0, "names of 1..20 and values of 0..40 bytes at 4 alignments (%d wrong)", bad);
    ok(bad_ctl == 0, "a CTL or DEL at any place in those values fails (%d wrong)", bad_ctl);
    ok(bad_tab == 0, "an HTAB at any place in those values is kept (%d wrong)", bad_tab);
}

/* ---- pipelining, split points, last_len, header count ---- */

static void test_pipelined(void)
{
    static const char two[] = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                              "GET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
    size_t n = sizeof(two) - 1, off;
    char *buf = dup_exact(two, n);
    lg_h1_head_t h;
    lg_hslice_t hs[4];
    lg_h1_body_t b;
    sink_t out = {0};
    int r;

    r = lg_h1_parse_request(buf, n, 0, &h, hs, 4);
    ok(r == 39 && h.method == HTTP_POST && h.content_length == 3, "first head (%d)", r);
    off = (size_t)r;
    lg_h1_body_init(&b, h.body_mode, h.content_length);
    ok(lg_h1_body_feed(&b, buf + off, n - off, sink_add, &out) == 3 && b.done && out.n == 3 &&
           memcmp(out.p, "abc", 3) == 0,
       "its body stops after 3 bytes");
    off += 3;
    r = lg_h1_parse_request(buf + off, n - off, 0, &h, hs, 4);
    ok(r == 28 && h.method == HTTP_GET && h.url_len == 2 &&
           memcmp(buf + off + h.url_off, "/b", 2) == 0,
       "second head (%d)", r);
    off += (size_t)r;
    r = lg_h1_parse_request(buf + off, n - off, 0, &h, hs, 4);
    ok(r == 19 && off + 19 == n && h.nhdrs == 0, "third head ends the buffer (%d)", r);
    free(out.p);
    free(buf);
}

/* Parses every prefix of s (exact copies) and the whole with last_len stepping by one:
 * INCOMPLETE until the result of the whole, then that result with the same fields. */
static int check_splits(int req, const char *s, size_t n)
{
    lg_h1_head_t full, h;
    lg_hslice_t fh[MAXH], hs[MAXH];
    char *all = dup_exact(s, n);
    int want, r = 0, good = 1, seen_err = 0;
    size_t k;

    want = req ? lg_h1_parse_request(all, n, 0, &full, fh, MAXH)
               : lg_h1_parse_response(all, n, 0, &full, fh, MAXH);
    for (k = 0; k <= n && good; k++) {
        char *p = dup_exact(s, k);
        r = req ? lg_h1_parse_request(p, k, 0, &h, hs, MAXH)
                : lg_h1_parse_response(p, k, 0, &h, hs, MAXH);
        free(p);
        if (want > 0) {
            if ((int)k < want ? r != LG_H1_INCOMPLETE : r != want)
                good = 0;
            else if (r > 0 &&
                     (h.nhdrs != full.nhdrs || h.method != full.method || h.status != full.status ||
                      h.keepalive != full.keepalive || h.content_length != full.content_length ||
                      h.url_off != full.url_off || h.url_len != full.url_len ||
                      memcmp(hs, fh, full.nhdrs * sizeof(hs[0])) != 0))
                good = 0;
        } else if (want == LG_H1_ERROR) {
            if (r == LG_H1_ERROR)
                seen_err = 1;
            else if (r != LG_H1_INCOMPLETE || seen_err)
                good = 0;
            if (k == n && (r != LG_H1_ERROR || strcmp(h.err, full.err) != 0))
                good = 0;
        }
        if (!good)
            printf("#   prefix %zu of %zu: got %d, want %d\n", k, n, r, want);
    }
    /* one byte at a time, with the shortcut */
    for (k = 1; k <= n && good && want > 0; k++) {
        r = req ? lg_h1_parse_request(all, k, k - 1, &h, hs, MAXH)
                : lg_h1_parse_response(all, k, k - 1, &h, hs, MAXH);
        if ((int)k < want ? r != LG_H1_INCOMPLETE : r != want) {
            printf("#   last_len %zu: got %d, want %d\n", k - 1, r, want);
            good = 0;
        }
        if (r == want)
            break;
    }
    free(all);
    if (!good)
        print_escaped(s, n);
    return good;
}

static void test_splits(void)
{
    static const char *reqs[] = {
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:19010\r\n\r\n",
        ("\r\nPOST /v1/chat/completions?x=1 HTTP/1.0\r\nContent-Length: 12\r\n"
         "Connection: keep-alive\r\nX-Long: 0123456789012345678901234567890123456789\r\n\r\nbody"),
        "GET http://a@b:1/x HTTP/1.1\nTransfer-Encoding: gzip, chunked\nA:\n\n",
        "MKCALENDAR /cal HTTP/1.1\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "GET /x\ty HTTP/1.1\r\n\r\n",
        "GETX / HTTP/1.1\r\n\r\n",
    };
    static const char *resps[] = {
        ("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 02 Jun 2025 10:00:00 GMT\r\n"
         "Content-Type: text/plain\r\nContent-Length: 27\r\nConnection: keep-alive\r\n\r\n"),
        "HTTP/1.0 304\nETag: \"x\"\n\n",
        "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
    };
    size_t i;

    for (i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
        ok(check_splits(1, reqs[i], strlen(reqs[i])), "request %zu at every split point", i);
    for (i = 0; i < sizeof(resps) / sizeof(resps[0]); i++)
        ok(check_splits(0, resps[i], strlen(resps[i])), "response %zu at every split point", i);
}

static void test_last_len(void)
{
    static const char bad[] = "XYZZY garbage without an end";
    char *big, *p;
    size_t n, k, cap = 70 * 1024;
    lg_h1_head_t h;
    lg_hslice_t hs[4];
    int r = 0, i;

    p = dup_exact(bad, sizeof(bad) - 1);
    ok(lg_h1_parse_request(p, sizeof(bad) - 1, 0, &h, hs, 4) == LG_H1_ERROR,
       "garbage fails when parsed");
    ok(lg_h1_parse_request(p, sizeof(bad) - 1, 5, &h, hs, 4) == LG_H1_INCOMPLETE,
       "but not when no end of head arrived since last_len (no parse at all)");
    ok(lg_h1_parse_request(p, sizeof(bad) - 1, sizeof(bad) - 1, &h, hs, 4) == LG_H1_ERROR,
       "a call with no new bytes parses in full");
    free(p);

    /* a ~64 KiB head, one byte at a time: O(n) in all */
    big = malloc(cap);
    n = (size_t)sprintf(big, "GET / HTTP/1.1\r\n");
    for (i = 0; n < 64 * 1024; i++)
        n += (size_t)sprintf(big + n, "X-Header-%05d: some value for padding the head out\r\n", i);
    n += (size_t)sprintf(big + n, "\r\n");
    p = big; /* exact size from here on (the prefixes below share it: copies would be O(n^2)) */
    big = dup_exact(p, n);
    free(p);
    for (k = 1; k <= n; k++) {
        r = lg_h1_parse_request(big, k, k - 1, &h, hs, 4);
        if (r != LG_H1_INCOMPLETE)
            break;
    }
    ok(k == n && r == LG_H1_TOO_MANY && h.nhdrs == (size_t)i,
       "64 KiB head a byte at a time: complete at the last byte (%d, %zu headers)", r, h.nhdrs);
    {
        lg_hslice_t *many = malloc(h.nhdrs * sizeof(*many));
        r = lg_h1_parse_request(big, n, n - 1, &h, many, (size_t)i);
        ok(r == (int)n && h.nhdrs == (size_t)i &&
               span_at(big, many[i - 1].voff, many[i - 1].vlen,
                       "some value for padding the head out"),
           "the retry with the same last_len and room for all");
        r = lg_h1_parse_request(big, n, n, &h, many, (size_t)i);
        ok(r == (int)n, "and with last_len == len");
        free(many);
    }
    ok(lg_h1_parse_request(big, n - 1, n - 4, &h, hs, 4) == LG_H1_INCOMPLETE,
       "\"\\r\\n\\r\" no end");
    ok(lg_h1_parse_request(big, n, n - 1, &h, hs, 4) == LG_H1_TOO_MANY, "\"\\r\\n\\r\\n\" ends");
    free(big);
    p = dup_exact("GET / HTTP/1.1\r\nA: b\n\nrest", 26);
    ok(lg_h1_parse_request(p, 22, 21, &h, hs, 4) == 22, "\"\\n\\n\" found across the boundary");
    ok(lg_h1_parse_request(p, 22, 19, &h, hs, 4) == 22, "looking back enough");
    free(p);
}

static void test_too_many(void)
{
    static const char s[] = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    size_t n = sizeof(s) - 1;
    char *p = dup_exact(s, n);
    lg_h1_head_t h;
    lg_hslice_t hs[3];

    ok(lg_h1_parse_request(p, n, 0, &h, hs, 2) == LG_H1_TOO_MANY && h.nhdrs == 3,
       "3 headers, room for 2: LG_H1_TOO_MANY, nhdrs 3");
    ok(lg_h1_parse_request(p, n, 0, &h, hs, 3) == (int)n && h.nhdrs == 3 &&
           span_at(p, hs[2].voff, hs[2].vlen, "3"),
       "room for 3: parsed");
    ok(lg_h1_parse_request(p, n, 0, &h, NULL, 0) == LG_H1_TOO_MANY, "no room at all");
    ok(lg_h1_parse_request(p, n - 1, 0, &h, hs, 2) == LG_H1_INCOMPLETE, "incomplete first");
    free(p);
    p = dup_exact("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC 3\r\n\r\n", 35);
    ok(lg_h1_parse_request(p, 35, 0, &h, hs, 2) == LG_H1_ERROR, "errors first");
    free(p);
    p = dup_exact("GET / HTTP/1.1\r\n\r\n", 18);
    ok(lg_h1_parse_request(p, 18, 0, &h, NULL, 0) == 18, "no headers, no room needed");
    free(p);
}

/* ---- bodies ---- */

static int ends_seen;

static void last_run(void *ud, const char *p, size_t n)
{
    const lg_h1_body_t *b = ud;
    (void)p;
    ends_seen += n == b->remaining;
}

static void test_body_length_eof(void)
{
    lg_h1_body_t b;
    sink_t out = {0};
    char *p = dup_exact("hello, worldNEXT", 16);
    size_t cuts[] = {1, 5, 6};

    lg_h1_body_init(&b, LG_H1_BODY_LENGTH, 12);
    ok(feed_cuts(&b, p, 16, cuts, 3, &out) == 12 && b.done && out.n == 12 &&
           memcmp(out.p, "hello, world", 12) == 0,
       "length: 12 bytes in pieces, the next message untouched");
    ok(lg_h1_body_feed(&b, p + 12, 4, sink_add, &out) == 0 && out.n == 12, "0 once done");
    lg_h1_body_init(&b, LG_H1_BODY_LENGTH, 0);
    ok(b.done && lg_h1_body_feed(&b, p, 16, sink_add, &out) == 0, "length 0: done at once");
    lg_h1_body_init(&b, LG_H1_BODY_NONE, 0);
    ok(b.done && lg_h1_body_feed(&b, p, 16, sink_add, &out) == 0, "none: done at once");
    out.n = 0;
    lg_h1_body_init(&b, LG_H1_BODY_EOF, 0);
    ok(lg_h1_body_feed(&b, p, 16, sink_add, &out) == 16 && !b.done && out.n == 16,
       "eof: takes everything");
    lg_h1_body_eof(&b);
    ok(b.done && !b.err, "eof: done at EOF");
    lg_h1_body_init(&b, LG_H1_BODY_LENGTH, 12);
    ok(lg_h1_body_feed(&b, p, 5, last_run, &b) == 5 && !ends_seen &&
           lg_h1_body_feed(&b, p + 5, 11, last_run, &b) == 7 && ends_seen == 1,
       "length: on_data sees the run before it is counted (n == remaining on the last)");
    lg_h1_body_init(&b, LG_H1_BODY_LENGTH, 20);
    ok(lg_h1_body_feed(&b, p, 16, NULL, NULL) == 16 && b.remaining == 4, "NULL on_data");
    lg_h1_body_eof(&b);
    ok(!b.done && b.err && strstr(b.err, "closed"), "length: EOF early is an error");
    free(out.p);
    free(p);
}

/* Decodes a chunked body given whole, split in two at every point, and a byte at a time:
 * the payload, the consumed count (the body without `tail`) and done must agree. */
static int chunked_case(const char *body, size_t n, size_t tail, const char *want, size_t wn)
{
    lg_h1_body_t b;
    sink_t out = {0};
    size_t k, *cuts = malloc((n + 1) * sizeof(size_t));
    ssize_t r;
    int good = 1;

    for (k = 0; k <= n && good; k++) {
        out.n = 0;
        lg_h1_body_init(&b, LG_H1_BODY_CHUNKED, 0);
        r = feed_cuts(&b, body, n, &k, 1, &out);
        if (r != (ssize_t)(n - tail) || !b.done || out.n != wn || !same(out.p, want, wn)) {
            printf("#   split at %zu: consumed %zd, done %d, %zu bytes, err %s\n", k, r, b.done,
                   out.n, b.err ? b.err : "-");
            good = 0;
        }
    }
    for (k = 0; k < n; k++)
        cuts[k] = k + 1;
    out.n = 0;
    lg_h1_body_init(&b, LG_H1_BODY_CHUNKED, 0);
    r = feed_cuts(&b, body, n, cuts, n, &out);
    if (r != (ssize_t)(n - tail) || !b.done || out.n != wn || !same(out.p, want, wn)) {
        printf("#   byte by byte: consumed %zd, done %d\n", r, b.done);
        good = 0;
    }
    if (!good)
        print_escaped(body, n);
    free(cuts);
    free(out.p);
    return good;
}

/* The error a chunked body ends in, "" when it completes, "(incomplete)". */
static const char *chunked_err(const char *body, size_t n)
{
    static lg_h1_body_t b;
    char *p = dup_exact(body, n);
    ssize_t r;

    lg_h1_body_init(&b, LG_H1_BODY_CHUNKED, 0);
    r = lg_h1_body_feed(&b, p, n, NULL, NULL);
    free(p);
    if (r < 0)
        return lg_h1_body_feed(&b, "x", 1, NULL, NULL) == -1 ? b.err : "(not sticky)";
    return b.done ? "" : "(incomplete)";
}

#define CHUNKED_OK(body, tail, want, msg)                                                          \
    ok(chunked_case(body, sizeof(body) - 1, tail, want, sizeof(want) - 1), msg)
#define CHUNKED_ERR(body, msg, ...) ok_streq(chunked_err(body, sizeof(body) - 1), msg, __VA_ARGS__)

static void test_chunked(void)
{
    CHUNKED_OK("5\r\nhello\r\n0\r\n\r\n", 0, "hello", "one chunk");
    CHUNKED_OK("5;ext=1;q=\"a b\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT", 4,
               "helloabcdefghijklmnopqrstuvwxyz", "extensions, hex, the next message kept");
    CHUNKED_OK("3\r\n\r\n\r\n2\r\n0\n\r\n0\r\nA: b\r\nC:\td\r\n\r\nGET", 3, "\r\n\r0\n",
               "CR and LF as data; trailers");
    CHUNKED_OK("a  ;x\t\nabcdefghij\n0000\n\nX", 1, "abcdefghij",
               "bare LFs, SPs, HTAB in an extension");
    CHUNKED_ERR("5\t;x\r\n", "invalid chunk size", "HTAB after the size (as http_parser)");
    CHUNKED_OK("0\r\n\r\n", 0, "", "empty body");
    CHUNKED_OK("00000000000000000000000000001\r\nx\r\n0\r\n\r\n", 0, "x", "leading zeros");
    CHUNKED_ERR("fffffffffffffffff\r\n", "chunk size overflow", "17 hex digits overflow");
    ok_streq(chunked_err("ffffffffffffffff\r\n", 18), "(incomplete)", "16 hex digits fit");
    CHUNKED_ERR("5\r\nhelloX\r\n0\r\n\r\n", "missing CRLF after chunk data", "no CRLF after data");
    CHUNKED_ERR("5\r\nhello\rX0\r\n\r\n", "missing CRLF after chunk data", "CR then not LF");
    CHUNKED_ERR("\r\n", "invalid chunk size", "no size");
    CHUNKED_ERR("x\r\n", "invalid chunk size", "not hex");
    CHUNKED_ERR(" 5\r\n", "invalid chunk size", "SP before the size");
    CHUNKED_ERR("-5\r\n", "invalid chunk size", "sign");
    CHUNKED_ERR("5 5\r\n", "invalid chunk size", "5 5");
    CHUNKED_ERR("5 x\r\n", "invalid chunk size", "garbage after BWS (http_parser skips it)");
    CHUNKED_ERR("5\rx", "CR not followed by LF", "bare CR after the size");
    CHUNKED_ERR("5;a\x01\r\n", "invalid character in chunk extension", "CTL in an extension");
    CHUNKED_ERR("0\r\nA b: c\r\n\r\n", "invalid trailer field", "SP in a trailer name");
    CHUNKED_ERR("0\r\n c\r\n\r\n", "invalid trailer field", "obs-fold in trailers");
    CHUNKED_ERR("0\r\nA: b\x01\r\n\r\n", "invalid trailer field", "CTL in a trailer value");
    CHUNKED_ERR("0\r\nA: b\rc\r\n\r\n", "CR not followed by LF", "bare CR in a trailer");
    CHUNKED_ERR("0\r\n\rc", "CR not followed by LF", "bare CR ending the trailers");
    ok_streq(chunked_err("5\r\nhel", 6), "(incomplete)", "incomplete data");
    {
        size_t n = 3 + 70 * 1024, i;
        char *big = malloc(n);
        memcpy(big, "0\r\n", 3);
        for (i = 3; i < n; i += 10)
            memcpy(big + i, "X: abcde\r\n", 10);
        ok_streq(chunked_err(big, n), "trailer section too large", "70 KiB of trailers");
        memcpy(big, "1;", 2);
        memset(big + 2, 'e', n - 2);
        ok_streq(chunked_err(big, n), "chunk extension too long", "70 KiB of extension");
        free(big);
    }
}

/* ---- differential: libhttp_parser ---- */

#define MAXREF 128

typedef struct {
    const char *base;
    int hc, mc, last;
    int method, status, vmajor, vminor, keepalive, upgrade, chunked, has_cl, has_te;
    uint64_t cl;
    long url_off;
    size_t url_end, nh;
    struct {
        size_t noff, nend, voff, vend;
        int hasv;
    } hd[MAXREF];
    sink_t body;
} ref_t;

static int ref_url(http_parser *p, const char *at, size_t n)
{
    ref_t *r = p->data;
    if (r->url_off < 0)
        r->url_off = at - r->base;
    r->url_end = (size_t)(at + n - r->base);
    return 0;
}

static int ref_field(http_parser *p, const char *at, size_t n)
{
    ref_t *r = p->data;
    if (r->last != 1) {
        if (r->nh == MAXREF)
            return 1;
        r->hd[r->nh].noff = (size_t)(at - r->base);
        r->hd[r->nh].hasv = 0;
        r->nh++;
    }
    r->hd[r->nh - 1].nend = (size_t)(at + n - r->base);
    r->last = 1;
    return 0;
}

static int ref_value(http_parser *p, const char *at, size_t n)
{
    ref_t *r = p->data;
    if (r->nh == 0)
        return 0;
    if (!r->hd[r->nh - 1].hasv) {
        r->hd[r->nh - 1].voff = (size_t)(at - r->base);
        r->hd[r->nh - 1].hasv = 1;
    }
    r->hd[r->nh - 1].vend = (size_t)(at + n - r->base);
    r->last = 2;
    return 0;
}

static int ref_headers_complete(http_parser *p)
{
    ref_t *r = p->data;
    r->hc = 1;
    r->method = p->method;
    r->status = p->status_code;
    r->vmajor = p->http_major;
    r->vminor = p->http_minor;
    r->keepalive = http_should_keep_alive(p);
    r->upgrade = p->upgrade;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    r->has_cl = (p->flags & F_CONTENTLENGTH) != 0;
    r->has_te = p->uses_transfer_encoding;
    r->cl = p->content_length;
    return 0;
}

static int ref_body(http_parser *p, const char *at, size_t n)
{
    sink_add(&((ref_t *)p->data)->body, at, n);
    return 0;
}

static int ref_message_complete(http_parser *p)
{
    ((ref_t *)p->data)->mc = 1;
    return 0;
}

static http_parser_settings ref_settings;

enum { R_INCOMPLETE, R_COMPLETE, R_ERROR };

/* Runs http_parser over buf a byte at a time until the end of the head: R_COMPLETE (with
 * *head_len), R_ERROR (also for its checks made right after the head) or R_INCOMPLETE. */
static int ref_head(ref_t *r, int req, const char *buf, size_t len, size_t *head_len)
{
    http_parser p;
    size_t i;

    memset(r, 0, sizeof(*r));
    r->base = buf;
    r->url_off = -1;
    http_parser_init(&p, req ? HTTP_REQUEST : HTTP_RESPONSE);
    p.data = r;
    for (i = 0; i < len; i++) {
        http_parser_execute(&p, &ref_settings, buf + i, 1);
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
            return R_ERROR;
        if (r->hc) {
            *head_len = i + 1;
            return R_COMPLETE;
        }
    }
    return R_INCOMPLETE;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The field that differs between our parse and http_parser's, or NULL. */
static const char *diff_fields(int req, const char *b, const lg_h1_head_t *h, const lg_hslice_t *hs,
                               const ref_t *r)
{
    size_t k;

    if (h->nhdrs != r->nh)
        return "header count";
    for (k = 0; k < r->nh; k++) {
        size_t voff = r->hd[k].voff, vend = r->hd[k].hasv ? r->hd[k].vend : voff;
        while (vend > voff && is_ows(b[vend - 1]))
            vend--;
        if (hs[k].noff != r->hd[k].noff || hs[k].nlen != r->hd[k].nend - r->hd[k].noff)
            return "header name";
        if (hs[k].vlen != vend - voff || memcmp(b + hs[k].voff, b + voff, vend - voff) != 0)
            return "header value";
    }
    if (req && (h->method != r->method || (long)h->url_off != r->url_off ||
                h->url_off + h->url_len != r->url_end))
        return "method or URL";
    if (!req && h->status != r->status)
        return "status";
    if (h->vmajor != r->vmajor || h->vminor != r->vminor)
        return "version";
    if (h->keepalive != r->keepalive)
        return "keepalive";
    if (h->has_cl != r->has_cl || (h->has_cl && h->content_length != r->cl))
        return "content-length";
    if (h->chunked != r->chunked || h->has_te != r->has_te)
        return "transfer-encoding";
    if (req ? (h->upgrade || h->method == HTTP_CONNECT) != r->upgrade
            : (h->upgrade && h->status == 101) != r->upgrade)
        return "upgrade";
    return NULL;
}

/* -- the deviations, recognised from the input and http_parser's view of it -- */

static int has_bare_cr(const char *b, size_t n)
{
    size_t i;
    for (i = 0; i + 1 < n; i++)
        if (b[i] == '\r' && b[i + 1] != '\n')
            return 1;
    return 0;
}

static int has_fold(const char *b, size_t n)
{
    size_t i;
    for (i = 0; i + 1 < n; i++)
        if (b[i] == '\n' && is_ows(b[i + 1]))
            return 1;
    return 0;
}

static int ref_name_has_sp(const char *b, const ref_t *r)
{
    size_t k;
    for (k = 0; k < r->nh; k++)
        if (memchr(b + r->hd[k].noff, ' ', r->hd[k].nend - r->hd[k].noff))
            return 1;
    return 0;
}

static int ref_value_starts_ctl(const char *b, const ref_t *r)
{
    size_t k;
    for (k = 0; k < r->nh; k++)
        if (r->hd[k].hasv && r->hd[k].vend > r->hd[k].voff &&
            is_stop((unsigned char)b[r->hd[k].voff], 0x20))
            return 1;
    return 0;
}

/* A name longer than "Transfer-Encoding" that starts with it: http_parser's false match. */
static int te_prefix_name(const char *b, size_t n, const ref_t *r, const lg_h1_head_t *h,
                          const lg_hslice_t *hs)
{
    size_t k;
    for (k = 0; k < r->nh; k++)
        if (r->hd[k].nend - r->hd[k].noff > 17 && ieq(b + r->hd[k].noff, "transfer-encoding", 17))
            return 1;
    for (k = 0; k < h->nhdrs && k < MAXH && h->err == NULL; k++)
        if (hs[k].nlen > 17 && ieq(b + hs[k].noff, "transfer-encoding", 17))
            return 1;
    return 0;
}

/* Whether the bytes where the version should be are not "HTTP/" (or "ICE/"). */
static int odd_version_literal(int req, const char *b, size_t n, const ref_t *r)
{
    size_t q = 0, i;
    const char *lit = "HTTP/";

    if (req) {
        if (r->url_off < 0)
            return 0;
        q = r->url_end;
        while (q < n && b[q] == ' ')
            q++;
        if (q < n && b[q] == 'I')
            lit = "ICE/";
    } else {
        while (q < n && (b[q] == '\r' || b[q] == '\n'))
            q++;
    }
    for (i = 0; lit[i] && q + i < n; i++)
        if (b[q + i] != lit[i])
            return 1;
    return 0;
}

/* Whether the status code is not three digits making 100..999. */
static int odd_status(const char *b, size_t n)
{
    size_t q = 0, d = 0;
    int v = 0;

    while (q < n && (b[q] == '\r' || b[q] == '\n'))
        q++;
    q += 9;
    while (q < n && b[q] == ' ')
        q++;
    while (q < n && is_digit((unsigned char)b[q]) && d < 5)
        v = v * 10 + (b[q++] - '0'), d++;
    return d != 3 || v < 100;
}

/* Which deviation explains a mismatch `why`, or NULL. `e` is our error (NULL if none). */
static const char *deviation(int req, const char *b, size_t n, const char *why, const char *e,
                             const ref_t *r, const lg_h1_head_t *h, const lg_hslice_t *hs)
{
    if ((!strcmp(why, "we accept, http_parser rejects") || !strcmp(why, "transfer-encoding") ||
         !strcmp(why, "keepalive") || strstr(why, "even with the lines ended")) &&
        te_prefix_name(b, n, r, h, hs))
        return "Transfer-Encoding prefix";
    if (!e)
        return NULL;
    if (!strcmp(e, "obsolete line folding") && has_fold(b, n))
        return "obs-fold";
    if (!strcmp(e, "CR not followed by LF") && has_bare_cr(b, n))
        return "bare CR";
    if (!strcmp(e, "invalid character in header name") && ref_name_has_sp(b, r))
        return "SP in a name";
    if (!strcmp(e, "invalid HTTP version") && odd_version_literal(req, b, n, r))
        return "HTTP/ misspelt";
    if (!strcmp(e, "invalid character in URL") && r->url_off >= 0 &&
        (memchr(b + r->url_off, '\t', r->url_end - (size_t)r->url_off) ||
         memchr(b + r->url_off, '\f', r->url_end - (size_t)r->url_off)))
        return "HTAB or FF in the target";
    if (!strcmp(e, "missing HTTP version") && r->url_off >= 0 && r->url_end < n &&
        (b[r->url_end] == '\r' || b[r->url_end] == '\n'))
        return "HTTP/0.9";
    if (!strcmp(e, "invalid character in header value") && ref_value_starts_ctl(b, r))
        return "CTL first in a value";
    if (!strcmp(e, "invalid HTTP status code") && !req && odd_status(b, n))
        return "status not 3 digits";
    return NULL;
}

static int diff_mismatches, diff_exempt, diff_compared, diff_printed, diff_outcome[3];

/* How often each deviation explained a mismatch (by reason string). */
static struct {
    const char *why;
    int n;
} dev_seen[16];

static void dev_count(const char *why)
{
    int i;
    for (i = 0; i < 16 && dev_seen[i].why && dev_seen[i].why != why; i++)
        ;
    if (i < 16) {
        dev_seen[i].why = why;
        dev_seen[i].n++;
    }
}

static void dev_report(void)
{
    int i;
    printf("# outcomes: %d both complete, %d both rejected, %d both incomplete; exempt:",
           diff_outcome[R_COMPLETE], diff_outcome[R_ERROR], diff_outcome[R_INCOMPLETE]);
    for (i = 0; i < 16 && dev_seen[i].why; i++)
        printf("%s %s %d", i ? "," : "", dev_seen[i].why, dev_seen[i].n);
    printf("\n");
    memset(dev_seen, 0, sizeof(dev_seen));
    memset(diff_outcome, 0, sizeof(diff_outcome));
}

/* Compares our parse of src[0..n) with http_parser's. */
static void diff_one(int req, const char *src, size_t n)
{
    char *b = dup_exact(src, n), *b2 = NULL;
    static ref_t r;
    lg_h1_head_t h;
    lg_hslice_t hs[MAXH];
    size_t rlen = 0;
    int t = ref_head(&r, req, b, n, &rlen), o, o2 = 0;
    const char *why = NULL, *dev;

    o = req ? lg_h1_parse_request(b, n, 0, &h, hs, MAXH)
            : lg_h1_parse_response(b, n, 0, &h, hs, MAXH);
    diff_compared++;
    if (o == LG_H1_TOO_MANY)
        why = "too many headers for the test";
    else if (t == R_COMPLETE && o > 0)
        why = (size_t)o != rlen ? "head length" : diff_fields(req, b, &h, hs, &r);
    else if (t == R_COMPLETE)
        why = "http_parser accepts, we do not";
    else if (t == R_ERROR && o > 0)
        why = "we accept, http_parser rejects";
    else if (t == R_ERROR && o == LG_H1_INCOMPLETE) {
        /* we judge a line once it ends: end them all, and it must fail */
        lg_h1_head_t h2;
        b2 = malloc(n + 4);
        memcpy(b2, b, n);
        memcpy(b2 + n, "\r\n\r\n", 4);
        o2 = req ? lg_h1_parse_request(b2, n + 4, 0, &h2, hs, MAXH)
                 : lg_h1_parse_response(b2, n + 4, 0, &h2, hs, MAXH);
        if (o2 != LG_H1_ERROR)
            why = "http_parser rejects, we do not even with the lines ended";
    } else if (t == R_INCOMPLETE && o == LG_H1_ERROR)
        why = "we reject a prefix http_parser takes";
    else if (t == R_INCOMPLETE && o > 0)
        why = "we complete what http_parser does not";
    if (!why && (t == R_COMPLETE) == (o > 0))
        diff_outcome[t]++;
    if (why) {
        dev = deviation(req, b, n, why, o == LG_H1_ERROR ? h.err : NULL, &r, &h, hs);
        if (dev) {
            diff_exempt++;
            dev_count(dev);
        } else {
            diff_mismatches++;
            if (diff_printed++ < 20) {
                printf("#   %s mismatch: %s (ours %d %s, http_parser %s)\n",
                       req ? "request" : "response", why, o, o == LG_H1_ERROR ? h.err : "",
                       t == R_COMPLETE ? "complete"
                       : t == R_ERROR  ? "error"
                                       : "incomplete");
                print_escaped(b, n);
            }
        }
    }
    free(b2);
    free(r.body.p);
    free(b);
}

/* clang-format off */
static const char *const req_corpus[] = {
    "GET / HTTP/1.1\r\nHost: 127.0.0.1:19010\r\n\r\n",
    "GET /v1/models?limit=10&x=%20 HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n",
    "POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length:  5  \r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 5\t\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 18446744073709551609\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 18446744073709551610\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
    "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunked \r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: chunk,chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding: a, b ,c,\tchunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encodingx: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
    "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
    "GET / HTTP/1.1\r\nHost:\r\n b\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\r\n\rX",
    "GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",
    "GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
    "GET / HTTP/1.1\r\nX:\ta\tb\t\r\n\r\n",
    "GET / HTTP/1.1\r\nX-Empty:\r\nY: \r\n\r\n",
    "GET /a\tb HTTP/1.1\r\n\r\n",
    "GET /a\x01 HTTP/1.1\r\n\r\n",
    "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
    "GET http://example.com:8080/x?y=1#f HTTP/1.1\r\n\r\n",
    "GET http://u:p@[::1]:80/ HTTP/1.1\r\n\r\n",
    "GET http:/x HTTP/1.1\r\n\r\n",
    "GET h2c://x/ HTTP/1.1\r\n\r\n",
    "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\n\r\n",
    "M-SEARCH * HTTP/1.1\r\n\r\n",
    "get / HTTP/1.1\r\n\r\n",
    "GETS / HTTP/1.1\r\n\r\n",
    "PROPPATCH /x HTTP/1.1\r\n\r\n",
    "UNSUBSCRIBE /x HTTP/1.1\r\n\r\n",
    "SOURCE / ICE/1.0\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: Keep-Alive, Upgrade\r\n\r\n",
    "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    "GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n",
    "GET / HTTP/1.1\r\nConnection: , close\r\n\r\n",
    "GET / HTTP/1.1\r\nConnection: close\t\r\n\r\n",
    "GET / HTTP/1.1\r\nConnection: keep-alive ,  close , upgrade\r\n\r\n",
    "GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n",
    "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "GET / HTTP/2.0\r\n\r\n",
    "GET / HTTP/10.1\r\n\r\n",
    "GET / HTTP/1.10\r\n\r\n",
    "GET / HTTP/1.1 \r\n\r\n",
    "GET / HXTP/1.1\r\n\r\n",
    "GET /\r\n\r\n",
    "GET  /  HTTP/1.1\r\n\r\n",
    "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\nHost: a\n\n",
    "GET / HTTP/1.1\r\nHost: a\n\r\n",
    "GET / HTTP/1.1\r\n:x\r\n\r\n",
    "GET / HTTP/1.1\r\nA(b: c\r\n\r\n",
    "GET / HTTP/1.1\r\nX-!#$%&'*+.^_`|~: v\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
};

static const char *const resp_corpus[] = {
    "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 02 Jun 2025 10:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nConnection: keep-alive\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    "HTTP/1.1 200 OK\r\n\r\n",
    "HTTP/1.1 204 No Content\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
    "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n",
    "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1  200 OK\r\n\r\n",
    "HTTP/1.1 2 OK\r\n\r\n",
    "HTTP/1.1 099 OK\r\n\r\n",
    "HTTP/1.1 0200 OK\r\n\r\n",
    "HTTP/1.1 1000 OK\r\n\r\n",
    "HTTP/1.1 200OK\r\n\r\n",
    "HTTP/1.1 200 O\tK \x01\r\n\r\n",
    "HTTP/1.1 200 OK\rX\r\n\r\n",
    "HXTP/1.1 200 OK\r\n\r\n",
    "HTTP/1.1\t200 OK\r\n\r\n",
    "HTTP/11 200 OK\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n",
    "HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\nSet-Cookie: c=d\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX:  spaced value  \r\n\r\n",
    "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    "\r\nHTTP/1.1 200 OK\r\n\r\n",
    "HTTP/1.1 200 OK\nContent-Length: 1\n\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encodingx: a\r\nContent-Length: 1\r\n\r\n",
    "HTTP/2.0 200 OK\r\nContent-Length: 1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nConnection: Upgrade, close\r\nContent-Length: 1\r\n\r\n",
    "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
    "HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 1\r\n\r\n",
};
/* clang-format on */

#define NREQ  (sizeof(req_corpus) / sizeof(req_corpus[0]))
#define NRESP (sizeof(resp_corpus) / sizeof(resp_corpus[0]))

static const char interesting[] = " \t\r\n:,;\0\x7f\x80\xff/09aAcChHkK-?#@[].*+eE";

/* Mutates b[0..*n) (room for cap bytes) a few times. */
static void mutate(char *b, size_t *n, size_t cap)
{
    int k, times = 1 + (int)(rnd() % 3);

    for (k = 0; k < times; k++) {
        size_t pos = *n ? rnd() % *n : 0, len;
        char c = rnd() % 2 ? interesting[rnd() % (sizeof(interesting) - 1)] : (char)rnd();
        switch (rnd() % 6) {
        case 0:
            if (*n)
                b[pos] = c;
            break;
        case 1:
            if (*n < cap) {
                memmove(b + pos + 1, b + pos, *n - pos);
                b[pos] = c;
                (*n)++;
            }
            break;
        case 2:
            if (*n) {
                memmove(b + pos, b + pos + 1, *n - pos - 1);
                (*n)--;
            }
            break;
        case 3:
            *n = pos;
            break;
        case 4: /* copy a span elsewhere */
            len = 1 + rnd() % 12;
            if (pos + len <= *n && *n + len <= cap) {
                size_t to = rnd() % (*n + 1);
                char tmp[16];
                memcpy(tmp, b + pos, len);
                memmove(b + to + len, b + to, *n - to);
                memcpy(b + to, tmp, len);
                *n += len;
            }
            break;
        default:
            if (*n && is_alpha((unsigned char)b[pos]))
                b[pos] ^= 0x20;
            break;
        }
    }
}

static void test_diff_heads(void)
{
    char buf[512];
    size_t i, n;
    int it;

    diff_mismatches = diff_exempt = diff_compared = 0;
    for (i = 0; i < NREQ; i++)
        diff_one(1, req_corpus[i], strlen(req_corpus[i]));
    for (i = 0; i < NRESP; i++)
        diff_one(0, resp_corpus[i], strlen(resp_corpus[i]));
    ok(diff_mismatches == 0, "corpus of %zu requests and %zu responses: %d mismatches (%d exempt)",
       NREQ, NRESP, diff_mismatches, diff_exempt);
    ok(diff_exempt >= 15, "the corpus exercises the deviations (%d)", diff_exempt);
    dev_report();

    diff_mismatches = diff_exempt = diff_compared = 0;
    for (it = 0; it < FUZZ_ITERS; it++) {
        int req = it % 3 != 0;
        const char *s = req ? req_corpus[rnd() % NREQ] : resp_corpus[rnd() % NRESP];
        n = strlen(s);
        memcpy(buf, s, n);
        mutate(buf, &n, sizeof(buf));
        diff_one(req, buf, n);
    }
    ok(diff_mismatches == 0, "%d mutations: %d mismatches (%d exempt)", diff_compared,
       diff_mismatches, diff_exempt);
    dev_report();
}

/* Random valid chunked bodies, cut at random points, against http_parser's on_body. */
static void test_diff_chunked(void)
{
    static const char head[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char *const exts[] = {"", ";a=b", " ;x", ";n=\"q v\";m", " ; y = 1\t"};
    static const char *const trailers[] = {"", "X-T: v\r\n", "A: 1\r\nB:\r\nC:  x y \r\n"};
    sink_t body = {0}, want = {0}, got = {0};
    size_t cuts[8];
    int it, bad = 0;

    for (it = 0; it < CHUNKED_ITERS; it++) {
        int nchunks = (int)(rnd() % 6), k;
        char line[64];
        ref_t *r = calloc(1, sizeof(*r));
        http_parser p;
        lg_h1_body_t b;
        char *exact;
        size_t i, ncut, consumed_ref = 0;
        ssize_t consumed;

        body.n = want.n = got.n = 0;
        for (k = 0; k <= nchunks; k++) {
            size_t sz = k == nchunks ? 0 : rnd() % 4 == 0 ? 1 + rnd() % 3000 : 1 + rnd() % 40;
            int len = snprintf(line, sizeof(line), rnd() % 2 ? "%s%zx%s\r\n" : "%s%zX%s\r\n",
                               rnd() % 4 ? "" : "00", sz, exts[rnd() % 5]);
            sink_add(&body, line, (size_t)len);
            for (i = 0; i < sz; i++) {
                char c = rnd() % 8 ? (char)('a' + rnd() % 26) : "\r\n0;\x00\xff"[rnd() % 6];
                sink_add(&body, &c, 1);
                sink_add(&want, &c, 1);
            }
            if (sz)
                sink_add(&body, "\r\n", 2);
        }
        {
            const char *t = trailers[rnd() % 3];
            sink_add(&body, t, strlen(t));
        }
        sink_add(&body, "\r\nGET / HTTP/1.1\r\n\r\n", 20);

        /* http_parser: the head, then the body a byte at a time until message complete */
        r->base = body.p;
        http_parser_init(&p, HTTP_REQUEST);
        p.data = r;
        http_parser_execute(&p, &ref_settings, head, sizeof(head) - 1);
        for (i = 0; i < body.n && !r->mc && HTTP_PARSER_ERRNO(&p) == HPE_OK; i++)
            http_parser_execute(&p, &ref_settings, body.p + i, 1);
        consumed_ref = i;

        /* ours: exact-size pieces cut at random points */
        exact = dup_exact(body.p, body.n);
        ncut = rnd() % 8;
        for (i = 0; i < ncut; i++)
            cuts[i] = rnd() % (body.n + 1);
        for (i = 1; i < ncut; i++) { /* sort the few cuts */
            size_t j = i, v = cuts[i];
            for (; j > 0 && cuts[j - 1] > v; j--)
                cuts[j] = cuts[j - 1];
            cuts[j] = v;
        }
        lg_h1_body_init(&b, LG_H1_BODY_CHUNKED, 0);
        consumed = feed_cuts(&b, exact, body.n, cuts, ncut, &got);
        if (!r->mc || HTTP_PARSER_ERRNO(&p) != HPE_OK || consumed != (ssize_t)consumed_ref ||
            !b.done || consumed_ref != body.n - 18 || got.n != want.n || r->body.n != want.n ||
            !same(got.p, want.p, want.n) || !same(r->body.p, want.p, want.n)) {
            if (bad++ < 5) {
                printf("#   chunked: ours consumed %zd (done %d, %s), http_parser %zu (mc %d, %s), "
                       "payload %zu/%zu/%zu\n",
                       consumed, b.done, b.err ? b.err : "-", consumed_ref, r->mc,
                       http_errno_name(HTTP_PARSER_ERRNO(&p)), got.n, r->body.n, want.n);
                print_escaped(body.p, body.n);
            }
        }
        free(exact);
        free(r->body.p);
        free(r);
    }
    ok(bad == 0, "%d random chunked bodies agree with http_parser (%d differ)", CHUNKED_ITERS, bad);
    free(body.p);
    free(want.p);
    free(got.p);
}

int main(void)
{
    http_parser_settings_init(&ref_settings);
    ref_settings.on_url = ref_url;
    ref_settings.on_header_field = ref_field;
    ref_settings.on_header_value = ref_value;
    ref_settings.on_headers_complete = ref_headers_complete;
    ref_settings.on_body = ref_body;
    ref_settings.on_message_complete = ref_message_complete;

    test_typical();
    test_methods();
    test_request_line();
    test_status_line();
    test_fields();
    test_content_length();
    test_transfer_encoding();
    test_keepalive();
    test_body_modes();
    test_scan_lengths();
    test_pipelined();
    test_splits();
    test_last_len();
    test_too_many();
    test_body_length_eof();
    test_chunked();
    test_diff_heads();
    test_diff_chunked();
    free(cur);
    return test_done();
}
