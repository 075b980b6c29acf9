/* metrics.h -- the metrics registry: sharded counters, gauges and histograms, and
 * their Prometheus / OpenMetrics text exposition.
 * SPDX-License-Identifier: MIT
 *
 * Threading: a registry has nshards worker shards plus one main shard. A worker
 * shard (lg_metrics_shard(m, i), 0 <= i < nshards) is written only by worker i's
 * thread and takes no lock when recording; the main shard (LG_METRICS_MAIN) takes
 * its own mutex on every recording, so any other thread (main, admin, log writer,
 * exporter) may record to it. lg_metrics_family(), lg_metrics_remove() and
 * lg_metrics_render() may be called from any thread at any time; a scrape merges
 * all shards without stopping writers. lg_metrics_free() must not race with
 * anything.
 *
 * Values: counters and gauges hold doubles; a scrape sums each label set over all
 * shards, gauges included (so a gauge that is `set` should be set from one shard
 * only, normally the main shard). Histograms count observations into fixed
 * buckets; _count is the +Inf bucket of the same scrape, so the two always agree.
 *
 * Cardinality: each family holds at most max_series label sets. Past that, a new
 * label set folds into one overflow series whose label values are all "overflow",
 * and <prefix>metrics_series_overflow_total{family="<name>"} counts each folded
 * recording (<name> is the family name without prefix or _total/_info suffix).
 * The overflow series is not counted in max_series, so a family renders at most
 * max_series + 1 label sets. A shard's first recording of a label set, and every
 * recording of a folded one, take the family's mutex (brief; never held by a scrape).
 *
 * Fixed per registry: the prefix and, through lg_metrics_register_standard(), the
 * custom labels. A reload that changes them needs a new registry. */
#ifndef LG_METRICS_H
#define LG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct evbuffer;

typedef struct lg_metrics lg_metrics_t;             /* opaque */
typedef struct lg_metrics_shard lg_metrics_shard_t; /* opaque, owned by the registry */

enum {
    LG_METRICS_COUNTER = 1, /* exposed as <prefix><name>_total */
    LG_METRICS_GAUGE,       /* exposed as <prefix><name> */
    LG_METRICS_HISTOGRAM,   /* <prefix><name>_bucket / _sum / _count */
    LG_METRICS_INFO,        /* <prefix><name>_info{...} 1; a gauge in Prometheus 0.0.4 */
};

#define LG_METRICS_MAIN         (-1)       /* lg_metrics_shard(m, LG_METRICS_MAIN) */
#define LG_METRICS_MAX_FAMILIES 512        /* per registry, the overflow family included */
#define LG_METRICS_MAX_LABELS   32         /* per family */
#define LG_METRICS_MAX_BUCKETS  64         /* per histogram family, +Inf excluded */
#define LG_METRICS_OVERFLOW     "overflow" /* label value of the overflow series */
#define LG_METRICS_UNKNOWN      "unknown"  /* label value rendered for NULL or "" */

#define LG_METRICS_CT_PROMETHEUS  "text/plain; version=0.0.4; charset=utf-8"
#define LG_METRICS_CT_OPENMETRICS "application/openmetrics-text; version=1.0.0; charset=utf-8"

/* Creates a registry. `prefix` (copied; NULL means "") is prepended to every
 * exposed name and must itself be a valid metric-name start ("agentgateway_").
 * nshards >= 0 worker shards are created, plus the main shard. max_series is the
 * per-family label-set limit (0 means 10000). Returns NULL and fills `err` on a
 * bad prefix. The registry owns its shards; free it with lg_metrics_free(). */
lg_metrics_t *lg_metrics_new(const char *prefix, int nshards, size_t max_series, lg_err_t *err);
void lg_metrics_free(lg_metrics_t *m); /* NULL is a no-op */

/* Declares a family. `name` is the name without prefix; a counter's trailing
 * "_total" and an info's trailing "_info" are stripped (they are added back when
 * rendering). A name ending in "_seconds" or "_bytes" gets that OpenMetrics unit.
 * `help`, `labels` (nlabels names, in exposition order) and `buckets` (nbuckets
 * strictly increasing finite upper bounds, histograms only, +Inf implied) are
 * copied. Returns the family id (>= 0), or LG_ERR with `err` filled for a bad or
 * duplicate name, bad label names, bad buckets or a full registry. */
int lg_metrics_family(lg_metrics_t *m, int type, const char *name, const char *help,
                      const char *const *labels, size_t nlabels, const double *buckets,
                      size_t nbuckets, lg_err_t *err);

/* Finds a family by any name lg_metrics_remove() accepts. Returns its id, or
 * LG_ERR. The type is not checked; use lg_metrics_family_type(). */
int lg_metrics_find(lg_metrics_t *m, const char *name);
int lg_metrics_family_type(lg_metrics_t *m, int family); /* LG_ERR for a bad id */

/* config.metrics.remove: `name` may be bare ("requests"), carry the type suffix
 * ("requests_total"), the prefix ("agentgateway_requests_total") or omit the unit
 * suffix ("request_duration" for request_duration_seconds). A removed family
 * records nothing and is not rendered. Returns LG_OK, or LG_ERR when no family
 * matches. */
int lg_metrics_remove(lg_metrics_t *m, const char *name);

/* Returns shard `worker` (0 <= worker < nshards), or the main shard for
 * LG_METRICS_MAIN or nshards; NULL when out of range. Valid until lg_metrics_free. */
lg_metrics_shard_t *lg_metrics_shard(lg_metrics_t *m, int worker);

/* Recording. `values` holds the family's nlabels label values (borrowed; NULL or ""
 * renders as "unknown"); it may be NULL when nlabels is 0. Calls with a bad family
 * id, a removed family or the wrong type do nothing.
 *   add:     counter += v (v < 0 and NaN ignored), gauge += v, info: marks the series present
 *   set:     gauge = v (in this shard), info: marks the series present
 *   observe: histogram (NaN ignored) */
void lg_metrics_add(lg_metrics_shard_t *s, int family, const char *const *values, double v);
void lg_metrics_set(lg_metrics_shard_t *s, int family, const char *const *values, double v);
void lg_metrics_observe(lg_metrics_shard_t *s, int family, const char *const *values, double v);

/* Prepared label values, for recording the same label set into several families
 * (requests_total, request_duration_seconds and response_bytes_total share the HTTP
 * labels) without normalising and hashing the values each time. Lives on the
 * caller's stack: lg_metrics_labels_init() copies `values` (n of them, NULL or ""
 * meaning "unknown"; borrowed during the call only) and
 * lg_metrics_labels_dispose() releases what init allocated for very long values.
 * A family whose label count is not n ignores the recording. */
typedef struct lg_metrics_labels {
    char *_p;
    size_t _len, _n;
    uint64_t _hash;
    char _local[512];
} lg_metrics_labels_t;

void lg_metrics_labels_init(lg_metrics_labels_t *l, const char *const *values, size_t n);
void lg_metrics_labels_dispose(lg_metrics_labels_t *l);
void lg_metrics_add_labels(lg_metrics_shard_t *s, int family, const lg_metrics_labels_t *l,
                           double v);
void lg_metrics_set_labels(lg_metrics_shard_t *s, int family, const lg_metrics_labels_t *l,
                           double v);
void lg_metrics_observe_labels(lg_metrics_shard_t *s, int family, const lg_metrics_labels_t *l,
                               double v);

/* Renders every family that is not removed, in declaration order, appending to
 * `out` (a libevent evbuffer, borrowed). openmetrics == 0 gives Prometheus text
 * 0.0.4; otherwise OpenMetrics 1.0 text ending in "# EOF\n". Label-less counters,
 * gauges and histograms are rendered (as zero) before their first recording.
 * Returns LG_OK, or LG_ERR if the evbuffer refused data. */
int lg_metrics_render(lg_metrics_t *m, int openmetrics, struct evbuffer *out);

/* Chooses the format for an HTTP Accept value (borrowed; NULL allowed): returns
 * 1 when application/openmetrics-text (version 1.0.0, 0.0.1 or none) has the
 * highest q of the types we serve, else 0. Sets *content_type (may be NULL) to a
 * static string: LG_METRICS_CT_OPENMETRICS or LG_METRICS_CT_PROMETHEUS. */
int lg_metrics_negotiate(const char *accept, const char **content_type);

/* ---- Standard families (reference/agentgateway.md section 4) ---- */

typedef struct lg_std_metrics {
    int build_info;                /* info{tag} */
    int requests;                  /* counter, HTTP labels */
    int request_duration;          /* histogram, HTTP labels */
    int response_bytes;            /* counter, HTTP labels */
    int gen_ai_token_usage;        /* histogram, gen_ai_token_type + GenAI labels */
    int gen_ai_request_duration;   /* histogram, GenAI labels */
    int gen_ai_ttft;               /* histogram, GenAI labels */
    int gen_ai_tpot;               /* histogram, GenAI labels */
    int mcp_requests;              /* counter, MCP labels */
    int downstream_connections;    /* counter, TCP labels */
    int upstream_connect_duration; /* histogram{transport} */
    int log_lines_dropped;         /* counter, no labels */
    int spans_dropped;             /* counter, no labels */
    int lua_plugin_errors;         /* counter{plugin} */
    int config_reloads;            /* counter{outcome} */
    int llm_requests;              /* counter{parser}: c or lua */
} lg_std_metrics_t;

/* Label counts and orders of the standard families, for callers filling `values`:
 *   HTTP  (requests, request_duration, response_bytes): backend, protocol, method, status,
 *         reason, bind, gateway, listener, route, route_rule, <custom...>
 *   GenAI (gen_ai_request_duration, ttft, tpot): gen_ai_operation_name, gen_ai_system,
 *         gen_ai_request_model, gen_ai_response_model, bind, gateway, listener, route,
 *         route_rule, <custom...>; gen_ai_token_usage has gen_ai_token_type first
 *   MCP   (mcp_requests): method, resource_type, server, resource, bind, gateway, listener,
 *         route, route_rule, <custom...>
 *   TCP   (downstream_connections): bind, gateway, listener, protocol */
enum {
    LG_METRICS_HTTP_NLABELS = 10,
    LG_METRICS_GENAI_NLABELS = 9,
    LG_METRICS_TOKEN_NLABELS = 10,
    LG_METRICS_MCP_NLABELS = 9,
    LG_METRICS_TCP_NLABELS = 4,
};

/* Declares the standard families into `ids`. `custom_labels` (ncustom names from
 * config.metrics.fields.add, copied) are appended to the HTTP, GenAI and MCP
 * families. Sets build_info{tag=<LG_VERSION>} on the main shard. Returns LG_OK, or
 * LG_ERR with `err` filled (e.g. a custom label that is not a valid label name or
 * repeats a built-in one). */
int lg_metrics_register_standard(lg_metrics_t *m, lg_std_metrics_t *ids,
                                 const char *const *custom_labels, size_t ncustom, lg_err_t *err);

#endif
