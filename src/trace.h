/* trace.h -- trace and span ids, W3C traceparent/tracestate, sampling decisions.
 * SPDX-License-Identifier: MIT
 *
 * Threading: every function here is thread-safe. Ids and sampling draws come from a
 * per-thread xoshiro256** generator seeded from getrandom(2) on first use in each
 * thread (and again after fork), so no call takes a lock or makes a syscall on the
 * hot path. The generator is fast, not cryptographic: ids are unguessable only as far
 * as the 256-bit seed is. */
#ifndef LG_TRACE_H
#define LG_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define LG_TRACE_ID_LEN    16
#define LG_SPAN_ID_LEN     8
#define LG_TRACEPARENT_LEN 55 /* "00-<32 hex>-<16 hex>-<2 hex>" */

#define LG_TRACE_FLAG_SAMPLED 0x01
#define LG_TRACE_FLAG_RANDOM  0x02 /* W3C level 2: low 7 bytes of the trace id are random */

/* A parsed traceparent (always held as version 00). */
typedef struct lg_traceparent {
    uint8_t trace_id[LG_TRACE_ID_LEN];
    uint8_t span_id[LG_SPAN_ID_LEN]; /* the parent-id field */
    uint8_t flags;                   /* trace-flags as received; test bits with a mask */
} lg_traceparent_t;

/* Fills `out` with random bytes from the calling thread's generator. Cannot fail. */
void lg_trace_random(void *out, size_t n);

/* A uniformly distributed double in [0, 1). */
double lg_trace_random_unit(void);

/* New random ids; never all-zero. */
void lg_trace_id_new(uint8_t id[LG_TRACE_ID_LEN]);
void lg_span_id_new(uint8_t id[LG_SPAN_ID_LEN]);

/* Returns 1 when all `n` bytes of `id` are zero (an invalid id), else 0. */
int lg_trace_id_is_zero(const uint8_t *id, size_t n);

/* Writes 2*n lowercase hex digits and a NUL into `out` (at least 2*n+1 bytes).
 * Returns 2*n. */
size_t lg_trace_hex(const uint8_t *id, size_t n, char *out);

/* Parses 2*n lowercase hex digits from `hex` into `id`. Returns LG_OK, or LG_ERR on a
 * non-lowercase-hex character (uppercase is rejected, as W3C requires). */
int lg_trace_unhex(const char *hex, size_t n, uint8_t *id);

/* Parses a traceparent header value (`s`, `len` bytes, borrowed; surrounding spaces and
 * tabs are ignored). Applies the W3C rules: lowercase hex only, version "ff" invalid,
 * version 00 exactly 55 characters, a higher version at least 55 characters with '-'
 * or the end right after the flags (extra fields ignored), all-zero trace-id or
 * parent-id invalid. Returns LG_OK with `out` filled, or LG_ERR (the caller then
 * ignores traceparent *and* tracestate and starts a new trace). */
int lg_traceparent_parse(const char *s, size_t len, lg_traceparent_t *out);

/* Formats `tp` as a version-00 traceparent into `buf` (at least LG_TRACEPARENT_LEN+1
 * bytes, NUL-terminated). Returns LG_TRACEPARENT_LEN. */
size_t lg_traceparent_format(const lg_traceparent_t *tp, char *buf);

/* Returns 1 when a tracestate header value may be passed through unchanged: at most
 * 8192 bytes of printable ASCII (0x20-0x7e) and at most 32 list members; else 0.
 * The gateway never edits tracestate (it adds no vendor entry), so passthrough is the
 * only operation; drop the header when this returns 0 or when traceparent was invalid. */
int lg_tracestate_ok(const char *s, size_t len);

/* Sampling decision for one request (agentgateway semantics).
 *   parent:   the request's valid traceparent, or NULL when it had none (or an invalid one).
 *   client_p: clientSampling as a probability (true = 1.0, false = 0.0). With a parent,
 *             a successful client_p draw honours the parent's sampled flag, so an
 *             unsampled parent stays unsampled; a failed draw ignores the parent's
 *             decision and falls through to random_p.
 *   random_p: randomSampling as a probability, used for requests without a parent.
 * Probabilities <= 0 never sample and >= 1 always sample (no draw is made).
 * Returns 1 to sample (record and export, sampled flag set), 0 to drop. */
int lg_trace_sample(const lg_traceparent_t *parent, double client_p, double random_p);

#endif
