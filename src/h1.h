/* h1.h -- HTTP/1.1 message heads and bodies: a one-pass head parser over a buffer and an
 * incremental body decoder, with http_parser 2.9.4's rules (see h1.c for the deviations).
 * SPDX-License-Identifier: MIT
 *
 * Nothing here allocates or keeps pointers: a parsed head is offsets into the caller's
 * buffer, and a body decoder is a small struct the caller owns. */
#ifndef LG_H1_H
#define LG_H1_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct lg_hslice {
    uint32_t noff, nlen, voff, vlen; /* offsets into the head buffer */
    int deleted;                     /* parser sets 0 */
} lg_hslice_t;

/* lg_h1_parse_* results other than a head length (> 0). */
#define LG_H1_ERROR      (-1) /* malformed: h->err says why */
#define LG_H1_INCOMPLETE (-2) /* the head does not end in the buffer yet */
#define LG_H1_TOO_MANY   (-3) /* complete and valid, but h->nhdrs > max headers */

enum { LG_H1_BODY_NONE, LG_H1_BODY_LENGTH, LG_H1_BODY_CHUNKED, LG_H1_BODY_EOF };

/* lg_h1_head_t.conn: the tokens of Connection headers (Proxy-Connection too, as in
 * http_parser) that decide keepalive, and whether a non-empty Upgrade header came. */
enum {
    LG_H1_CONN_KEEP_ALIVE = 1,
    LG_H1_CONN_CLOSE = 2,
    LG_H1_CONN_UPGRADE = 4,
    LG_H1_CONN_UPGRADE_HEADER = 8
};

typedef struct lg_h1_head {
    int method; /* requests: an enum http_method value (HTTP_GET ...); responses: -1 */
    int status; /* responses: 100..999; requests: 0 */
    int vmajor, vminor;
    uint32_t url_off, url_len; /* requests: the request-target */
    unsigned keepalive : 1;    /* as http_should_keep_alive() */
    unsigned has_cl : 1;       /* a Content-Length header was present */
    unsigned chunked : 1;      /* the last Transfer-Encoding header ends in chunked */
    unsigned has_te : 1;       /* a Transfer-Encoding header was present */
    unsigned upgrade : 1;      /* Connection: upgrade and a non-empty Upgrade (informational) */
    unsigned conn;             /* LG_H1_CONN_* bits */
    uint64_t content_length;   /* when has_cl, else 0 */
    int body_mode;   /* requests: NONE / LENGTH / CHUNKED (RFC 9112 6.3; Content-Length: 0 is
                      * NONE); responses: as lg_h1_response_body(h, -1) */
    size_t nhdrs;    /* headers seen; on LG_H1_TOO_MANY the number needed */
    const char *err; /* on error: static, human-readable, e.g. "invalid HTTP method" */
} lg_h1_head_t;

/* Parses a request head at the start of buf[0..len) (empty lines before it are skipped,
 * as http_parser does). Header i goes into hdrs[i] for i < max; values exclude leading
 * and trailing SP/HTAB. Returns the head's length (> 0, including the final empty line),
 * LG_H1_INCOMPLETE, LG_H1_ERROR with h->err set, or LG_H1_TOO_MANY once the head is
 * complete and otherwise valid but has more than `max` headers (h->nhdrs says how many;
 * grow and call again with the same last_len as this call, or with last_len == len).
 * `last_len` is the buffer length at the previous call for this same head, which returned
 * LG_H1_INCOMPLETE (0 the first time): when no end of head ("\n\n" or "\n\r\n") appears in
 * the bytes new since then (looking back 3 bytes), the call returns LG_H1_INCOMPLETE at
 * once without parsing, so a head sent a byte at a time costs O(n), not O(n^2). Such a call
 * does not look for errors either: those show once the head's end arrives (or the caller's
 * size cap trips). With last_len == 0, or no new bytes (the retry after LG_H1_TOO_MANY),
 * the call parses everything present, so a malformed head fails as early as http_parser
 * would fail it. Heads longer than INT_MAX bytes are errors. */
int lg_h1_parse_request(const char *buf, size_t len, size_t last_len, lg_h1_head_t *h,
                        lg_hslice_t *hdrs, size_t max);

/* The same for a response head (h->status, no method or URL). keepalive and body_mode
 * assume a request other than HEAD or CONNECT: call lg_h1_response_body() to settle them. */
int lg_h1_parse_response(const char *buf, size_t len, size_t last_len, lg_h1_head_t *h,
                         lg_hslice_t *hdrs, size_t max);

/* How a response body is delimited given the request's method (RFC 9112 6.3): HEAD, 1xx,
 * 204, 304 and a 2xx to CONNECT (a tunnel follows) -> NONE; chunked -> CHUNKED; another
 * Transfer-Encoding -> EOF; Content-Length -> LENGTH (NONE when 0); else EOF. Sets
 * h->body_mode and recomputes h->keepalive: false when the body runs to EOF or a tunnel
 * follows, else from the version and Connection tokens, as http_should_keep_alive(). */
int lg_h1_response_body(lg_h1_head_t *h, int request_method);

/* Incremental body decoder. */
typedef struct lg_h1_body {
    int mode;           /* LG_H1_BODY_* */
    uint64_t remaining; /* LENGTH: bytes left; CHUNKED: bytes left in the current chunk */
    int state;          /* CHUNKED: where in the framing */
    int done;           /* the message's last byte was consumed (or EOF seen in EOF mode) */
    const char *err;    /* on error: static, human-readable */
    uint32_t nline;     /* CHUNKED: bytes of the current extension or of the trailers */
} lg_h1_body_t;

void lg_h1_body_init(lg_h1_body_t *b, int mode, uint64_t content_length);

/* Consumes body bytes from p[0..len), calling on_data(ud, ptr, n) (if not NULL) for each
 * run of payload: de-chunked, or the bytes themselves for LENGTH and EOF. Returns the
 * number of bytes consumed, stopping exactly after the message's last byte and setting
 * b->done, so that a pipelined next message stays unconsumed; 0 once done. Returns -1 on
 * malformed chunk framing (and on every later call) with b->err set. NONE is done at once.
 * Chunked framing: hex size (overflowing uint64 is an error), then optional SPs and
 * ";extensions" (skipped, at most 64 KiB), CRLF or LF; the data and CRLF or LF; after the
 * last (zero) chunk, trailer fields (skipped; at most 64 KiB) and an empty line. Any line
 * may be split across calls at any byte. In LENGTH mode on_data runs before b->remaining
 * is reduced by the run, so n == b->remaining there means the run ends the body. */
ssize_t lg_h1_body_feed(lg_h1_body_t *b, const char *p, size_t len,
                        void (*on_data)(void *ud, const char *p, size_t n), void *ud);

/* The peer closed: an EOF-mode body is done; any other unfinished body gets b->err set
 * ("connection closed before the end of the body"). */
void lg_h1_body_eof(lg_h1_body_t *b);

#endif
