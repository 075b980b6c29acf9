/* metrics_int.h -- private structures shared by metrics.c (registry, recording) and
 * metrics_expo.c (exposition). Not for use outside those two files.
 * SPDX-License-Identifier: MIT */
#ifndef LG_METRICS_INT_H
#define LG_METRICS_INT_H

#include <locale.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "metrics.h"

#define LG_METRICS_CHUNK  64 /* label-set ids per chunk (global tables and shard cells) */
#define LG_METRICS_NUMBUF 40 /* room for any lg_metrics_fmt_double() result */

typedef _Atomic uint64_t acell_t; /* a counter/gauge value (double bits) or a bucket count */

/* One label set of one family, immutable once published. */
typedef struct labelset {
    uint64_t hash;
    uint32_t id;    /* index in the family's global table */
    uint32_t rlen;  /* strlen(rendered) */
    char *rendered; /* escaped `a="x",b="y"`, no braces */
    char *key;      /* the normalised raw values, each NUL-terminated, back to back */
    size_t keylen;
} labelset_t;

typedef struct family {
    int type, id;
    char *name; /* without prefix and without _total / _info */
    char *help;
    const char *unit; /* "seconds", "bytes" or NULL (the name ends in _<unit>) */
    size_t nlabels;
    char **labels;
    size_t nbuckets; /* histograms: finite bounds; cells are nbuckets+1 counts + sum */
    double *buckets;
    char **le_prom, **le_om; /* rendered bounds */
    size_t stride;           /* cells per label set per shard */
    size_t max_series;
    _Atomic int removed;

    pthread_mutex_t mu; /* writers of everything below */
    labelset_t ***sets; /* nchunks chunks of LG_METRICS_CHUNK label sets */
    size_t nchunks;
    _Atomic size_t nsets; /* published count, overflow set included (release/acquire) */
    size_t nreal;         /* label sets excluding the overflow set */
    labelset_t *overflow;
    labelset_t **index; /* open addressing by hash */
    size_t index_cap, index_n;
} family_t;

typedef struct shard_slot {
    uint64_t hash;
    labelset_t *ls;
} shard_slot_t;

/* One family's state in one shard. The map is private to the shard's writer; the
 * chunk pointers are published (release) for scrapers. */
typedef struct shard_fam {
    shard_slot_t *map;
    size_t cap, n;
    acell_t *_Atomic *chunks; /* family->nchunks entries, each NULL or CHUNK * stride cells */
} shard_fam_t;

struct lg_metrics_shard {
    lg_metrics_t *m;
    int locked; /* the main shard: recordings take mu */
    pthread_mutex_t mu;
    shard_fam_t *_Atomic fams[LG_METRICS_MAX_FAMILIES];
};

struct lg_metrics {
    char *prefix;
    size_t max_series;
    int nshards; /* worker shards; shards[nshards] is the main shard */
    lg_metrics_shard_t **shards;
    pthread_mutex_t mu; /* family declaration */
    family_t *fams[LG_METRICS_MAX_FAMILIES];
    _Atomic int nfams; /* published count (release/acquire) */
    int overflow_family;
    locale_t c_locale;
};

/* Formats `v` for the exposition into `buf` (LG_METRICS_NUMBUF bytes): integers
 * without exponent or point, other values as the shortest %g that reads back
 * exactly, +Inf / -Inf / NaN. With `om_le` an integral value gets ".0" (the
 * OpenMetrics canonical `le`). Returns the length. */
size_t lg_metrics_fmt_double(char *buf, double v, int om_le);

#endif
