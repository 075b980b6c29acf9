/* metrics.c -- the metrics registry: families, per-worker shards, lock-free recording.
 * SPDX-License-Identifier: MIT
 *
 * Layout. Each family keeps a global, append-only table of label sets (ids 0..n-1),
 * guarded by the family mutex for writers and published to scrapers through an
 * atomic count. Each shard keeps, per family, a private hash index (label values ->
 * label set; touched only by the shard's writer) and chunks of value cells indexed
 * by label-set id. Recording to a label set the shard has seen is: hash, probe the
 * private index, relaxed load + relaxed store of 64-bit cells. A shard meets a new
 * label set rarely; then it takes the family mutex to find or create the global id.
 * A scrape (metrics_expo.c) reads the global tables and sums the cells of every
 * shard, so it never blocks a writer and can never see half of a 64-bit value. */
#include "metrics.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"

/* ---- Small helpers ---- */

static int valid_name(const char *s, int allow_digit_start)
{
    if (s == NULL)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_';
        int digit = *p >= '0' && *p <= '9';
        if (!alpha && !(digit && (p > s || allow_digit_start)))
            return 0;
    }
    return 1;
}

static int ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

static double bits_to_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    return b;
}

/* The lookup key of a label set: its normalised values ("unknown" for NULL or "")
 * joined with NULs, hashed as one block. Label sets are looked up on every
 * recording, so this is the hot path: one strlen and memcpy per value, a hash that
 * takes 16 bytes per step, and a single memcmp on a hit. */
typedef lg_metrics_labels_t lkey_t; /* fields: _p, _len, _n, _hash, _local */

static inline uint64_t mix(uint64_t h)
{
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 32);
}

static uint64_t hash_bytes(const char *p, size_t len)
{
    uint64_t a = 0x9e3779b97f4a7c15ULL ^ len, b = 0xc2b2ae3d27d4eb4fULL, w1 = 0, w2 = 0;
    const char *e = p + len;

    for (; e - p >= 16; p += 16) {
        memcpy(&w1, p, 8);
        memcpy(&w2, p + 8, 8);
        a = (a ^ w1) * 0xff51afd7ed558ccdULL;
        b = (b ^ w2) * 0xc4ceb9fe1a85ec53ULL;
        a ^= a >> 29;
        b ^= b >> 29;
    }
    if (e - p >= 8) {
        memcpy(&w1, p, 8);
        memcpy(&w2, e - 8, 8); /* overlaps w1 when fewer than 16 bytes remain */
    } else {
        w1 = w2 = 0;
        for (int k = 0; p + k < e; k++)
            w1 |= (uint64_t)(unsigned char)p[k] << (8 * k);
    }
    a = mix(a ^ w1);
    b = mix(b ^ w2);
    uint64_t h = mix(a ^ (b >> 17) ^ (b << 47));
    return h ? h : 1;
}

/* memcpy for the short strings label values usually are: fixed-size (inlined)
 * overlapping moves that read and write only [0, n). */
static inline void copy_short(char *d, const char *p, size_t n)
{
    uint64_t a, b;
    uint32_t c, e;

    if (n >= 8) {
        for (; n > 16; n -= 8, d += 8, p += 8) {
            memcpy(&a, p, 8);
            memcpy(d, &a, 8);
        }
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        memcpy(&c, p, 4);
        memcpy(&e, p + n - 4, 4);
        memcpy(d, &c, 4);
        memcpy(d + n - 4, &e, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = p[i];
    }
}

static void key_build(lkey_t *k, const char *const *values, size_t n)
{
    const char *v[LG_METRICS_MAX_LABELS];
    size_t lens[LG_METRICS_MAX_LABELS], total = 0;
    char *d;

    for (size_t i = 0; i < n; i++) {
        v[i] = values && values[i] && values[i][0] ? values[i] : LG_METRICS_UNKNOWN;
        lens[i] = strlen(v[i]) + 1;
        total += lens[i];
    }
    k->_p = d = total <= sizeof(k->_local) ? k->_local : lg_xmalloc(total);
    for (size_t i = 0; i < n; i++) {
        copy_short(d, v[i], lens[i]);
        d += lens[i];
    }
    k->_len = total;
    k->_n = n;
    k->_hash = hash_bytes(k->_p, total);
}

static void key_dispose(lkey_t *k)
{
    if (k->_p != k->_local)
        free(k->_p);
}

static inline int key_is(const labelset_t *ls, const lkey_t *k)
{
    return ls->hash == k->_hash && ls->keylen == k->_len && memcmp(ls->key, k->_p, k->_len) == 0;
}

/* ---- Label sets ---- */

/* Escapes a label value into `d` (NULL to measure): \ " and newline are escaped,
 * and invalid UTF-8 becomes U+FFFD, because one bad byte in a model name would
 * make the whole exposition invalid. Returns the escaped length. */
static size_t escape_value(char *d, const char *s)
{
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        unsigned c = *p;
        size_t len = 0;
        if (c == '\\' || c == '"' || c == '\n') {
            if (d) {
                d[n] = '\\';
                d[n + 1] = c == '\n' ? 'n' : (char)c;
            }
            n += 2, p++;
            continue;
        }
        if (c < 0x80)
            len = 1;
        else if (c >= 0xc2 && c <= 0xdf)
            len = 2;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4;
        for (size_t k = 1; k < len; k++)
            if ((p[k] & 0xc0) != 0x80)
                len = 0;
        if (len == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f)))
            len = 0; /* overlong or surrogate */
        if (len == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f)))
            len = 0;
        if (len == 0) {
            if (d)
                memcpy(d + n, "\xef\xbf\xbd", 3);
            n += 3, p++;
            continue;
        }
        if (d)
            memcpy(d + n, p, len);
        n += len, p += len;
    }
    return n;
}

static labelset_t *labelset_new(family_t *f, const lkey_t *k, uint32_t id)
{
    size_t n = f->nlabels, rlen = 0;
    const char *v;
    labelset_t *ls;
    char *p;

    v = k->_p;
    for (size_t i = 0; i < n; v += strlen(v) + 1, i++)
        rlen += (i ? 1 : 0) + strlen(f->labels[i]) + 2 + escape_value(NULL, v) + 1;
    ls = lg_xmalloc(sizeof(*ls) + k->_len + rlen + 1);
    ls->hash = k->_hash;
    ls->id = id;
    ls->rlen = (uint32_t)rlen;
    ls->keylen = k->_len;
    ls->key = (char *)(ls + 1);
    memcpy(ls->key, k->_p, k->_len);
    ls->rendered = p = ls->key + k->_len;
    v = k->_p;
    for (size_t i = 0; i < n; v += strlen(v) + 1, i++) {
        if (i)
            *p++ = ',';
        p += sprintf(p, "%s=\"", f->labels[i]);
        p += escape_value(p, v);
        *p++ = '"';
    }
    *p = '\0';
    return ls;
}

static labelset_t *global_index_find(family_t *f, const lkey_t *k)
{
    if (f->index_cap == 0)
        return NULL;
    for (size_t i = k->_hash & (f->index_cap - 1);; i = (i + 1) & (f->index_cap - 1)) {
        labelset_t *ls = f->index[i];
        if (ls == NULL)
            return NULL;
        if (key_is(ls, k))
            return ls;
    }
}

static void global_index_put(family_t *f, labelset_t *ls)
{
    if ((f->index_n + 1) * 2 > f->index_cap) {
        size_t cap = f->index_cap ? f->index_cap * 2 : 16;
        labelset_t **idx = lg_xcalloc(cap, sizeof(*idx));
        for (size_t j = 0; j < f->index_cap; j++) {
            labelset_t *o = f->index[j];
            if (o == NULL)
                continue;
            size_t i = o->hash & (cap - 1);
            while (idx[i])
                i = (i + 1) & (cap - 1);
            idx[i] = o;
        }
        free(f->index);
        f->index = idx;
        f->index_cap = cap;
    }
    size_t i = ls->hash & (f->index_cap - 1);
    while (f->index[i])
        i = (i + 1) & (f->index_cap - 1);
    f->index[i] = ls;
    f->index_n++;
}

static labelset_t *global_append(family_t *f, const lkey_t *k)
{
    size_t id = atomic_load_explicit(&f->nsets, memory_order_relaxed);
    labelset_t *ls = labelset_new(f, k, (uint32_t)id);

    if (f->sets[id / LG_METRICS_CHUNK] == NULL)
        f->sets[id / LG_METRICS_CHUNK] = lg_xcalloc(LG_METRICS_CHUNK, sizeof(labelset_t *));
    f->sets[id / LG_METRICS_CHUNK][id % LG_METRICS_CHUNK] = ls;
    global_index_put(f, ls);
    /* Publishes the label set (and its chunk) to scrapers. */
    atomic_store_explicit(&f->nsets, id + 1, memory_order_release);
    return ls;
}

/* Finds or creates the global label set for key `k`; past max_series returns the
 * overflow set and sets *folded. Slow path: takes the family mutex. */
static labelset_t *global_get(family_t *f, const lkey_t *k, int *folded)
{
    labelset_t *ls;

    pthread_mutex_lock(&f->mu);
    ls = global_index_find(f, k);
    if (ls == NULL && f->nreal < f->max_series) {
        ls = global_append(f, k);
        f->nreal++;
    } else if (ls == NULL) {
        *folded = 1;
        if (f->overflow == NULL) {
            const char *ov[LG_METRICS_MAX_LABELS];
            lkey_t ok;
            for (size_t i = 0; i < f->nlabels; i++)
                ov[i] = LG_METRICS_OVERFLOW;
            key_build(&ok, ov, f->nlabels);
            f->overflow = global_index_find(f, &ok);
            if (f->overflow == NULL)
                f->overflow = global_append(f, &ok);
            key_dispose(&ok);
        }
        ls = f->overflow;
    }
    pthread_mutex_unlock(&f->mu);
    return ls;
}

/* ---- Shards ---- */

static shard_fam_t *shard_fam_new(lg_metrics_shard_t *s, family_t *f)
{
    shard_fam_t *sf = lg_xcalloc(1, sizeof(*sf));
    sf->chunks = lg_xcalloc(f->nchunks, sizeof(*sf->chunks));
    atomic_store_explicit(&s->fams[f->id], sf, memory_order_release);
    return sf;
}

static void shard_map_put(shard_fam_t *sf, labelset_t *ls)
{
    if ((sf->n + 1) * 2 > sf->cap) {
        size_t cap = sf->cap ? sf->cap * 2 : 8;
        shard_slot_t *map = lg_xcalloc(cap, sizeof(*map));
        for (size_t j = 0; j < sf->cap; j++) {
            if (sf->map[j].ls == NULL)
                continue;
            size_t i = sf->map[j].hash & (cap - 1);
            while (map[i].ls)
                i = (i + 1) & (cap - 1);
            map[i] = sf->map[j];
        }
        free(sf->map);
        sf->map = map;
        sf->cap = cap;
    }
    size_t i = ls->hash & (sf->cap - 1);
    while (sf->map[i].ls)
        i = (i + 1) & (sf->cap - 1);
    sf->map[i].hash = ls->hash;
    sf->map[i].ls = ls;
    sf->n++;
}

/* Returns the value cells of label set `k` in shard `s`, creating them when
 * needed. Sets *folded when the set went to the overflow series. */
static acell_t *cells(lg_metrics_shard_t *s, family_t *f, const lkey_t *k, int *folded)
{
    shard_fam_t *sf = atomic_load_explicit(&s->fams[f->id], memory_order_relaxed);
    labelset_t *ls = NULL;

    if (sf == NULL)
        sf = shard_fam_new(s, f);
    if (sf->cap) {
        for (size_t i = k->_hash & (sf->cap - 1);; i = (i + 1) & (sf->cap - 1)) {
            shard_slot_t *e = &sf->map[i];
            if (e->ls == NULL)
                break;
            if (e->hash == k->_hash && key_is(e->ls, k)) {
                ls = e->ls;
                break;
            }
        }
    }
    if (ls == NULL) {
        ls = global_get(f, k, folded);
        /* Folded sets are not cached: the private index would grow without bound. */
        if (!*folded)
            shard_map_put(sf, ls);
    }

    size_t c = ls->id / LG_METRICS_CHUNK;
    acell_t *chunk = atomic_load_explicit(&sf->chunks[c], memory_order_relaxed);
    if (chunk == NULL) {
        chunk = lg_xcalloc(LG_METRICS_CHUNK * f->stride, sizeof(acell_t));
        atomic_store_explicit(&sf->chunks[c], chunk, memory_order_release);
    }
    return chunk + (size_t)(ls->id % LG_METRICS_CHUNK) * f->stride;
}

/* ---- Recording ---- */

enum { OP_ADD, OP_SET, OP_OBSERVE };

/* Each cell has a single writer (the shard's thread, or whoever holds the main
 * shard's mutex), so a relaxed load and store replace a read-modify-write. */
static inline void cell_add(acell_t *c, double v)
{
    uint64_t b = atomic_load_explicit(c, memory_order_relaxed);
    atomic_store_explicit(c, double_to_bits(bits_to_double(b) + v), memory_order_relaxed);
}

static inline void cell_inc(acell_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void record_in(lg_metrics_shard_t *s, family_t *f, const lkey_t *k, int op, double v)
{
    int folded = 0;
    acell_t *c = cells(s, f, k, &folded);

    switch (f->type) {
    case LG_METRICS_COUNTER:
        cell_add(c, v);
        break;
    case LG_METRICS_GAUGE:
        if (op == OP_SET)
            atomic_store_explicit(c, double_to_bits(v), memory_order_relaxed);
        else
            cell_add(c, v);
        break;
    case LG_METRICS_INFO:
        atomic_store_explicit(c, double_to_bits(1.0), memory_order_relaxed);
        break;
    case LG_METRICS_HISTOGRAM: {
        size_t i = 0;
        while (i < f->nbuckets && v > f->buckets[i])
            i++;
        cell_inc(&c[i]);
        cell_add(&c[f->nbuckets + 1], v);
        break;
    }
    }

    if (folded && f->id != s->m->overflow_family) {
        family_t *of = s->m->fams[s->m->overflow_family];
        const char *ov[1] = {f->name};
        lkey_t ok;
        if (!atomic_load_explicit(&of->removed, memory_order_relaxed)) {
            key_build(&ok, ov, 1);
            record_in(s, of, &ok, OP_ADD, 1);
            key_dispose(&ok);
        }
    }
}

static family_t *family_get(lg_metrics_t *m, int id)
{
    if (id < 0 || id >= atomic_load_explicit(&m->nfams, memory_order_acquire))
        return NULL;
    return m->fams[id];
}

/* Returns the family when a recording of kind `op` with value `v` applies to it. */
static family_t *recordable(lg_metrics_shard_t *s, int id, int op, double v)
{
    family_t *f;

    if (s == NULL || (f = family_get(s->m, id)) == NULL)
        return NULL;
    if (atomic_load_explicit(&f->removed, memory_order_relaxed))
        return NULL;
    switch (f->type) {
    case LG_METRICS_COUNTER:
        return op == OP_ADD && v >= 0 ? f : NULL;
    case LG_METRICS_GAUGE:
    case LG_METRICS_INFO:
        return op != OP_OBSERVE ? f : NULL;
    case LG_METRICS_HISTOGRAM:
        return op == OP_OBSERVE && !isnan(v) ? f : NULL;
    }
    return NULL;
}

static void record_key(lg_metrics_shard_t *s, family_t *f, const lkey_t *k, int op, double v)
{
    if (s->locked)
        pthread_mutex_lock(&s->mu);
    record_in(s, f, k, op, v);
    if (s->locked)
        pthread_mutex_unlock(&s->mu);
}

static void record(lg_metrics_shard_t *s, int id, const char *const *values, int op, double v)
{
    family_t *f = recordable(s, id, op, v);
    lkey_t k;

    if (f == NULL)
        return;
    key_build(&k, values, f->nlabels);
    record_key(s, f, &k, op, v);
    key_dispose(&k);
}

static void record_labels(lg_metrics_shard_t *s, int id, const lg_metrics_labels_t *l, int op,
                          double v)
{
    family_t *f = recordable(s, id, op, v);

    if (f != NULL && l != NULL && l->_n == f->nlabels)
        record_key(s, f, l, op, v);
}

void lg_metrics_add(lg_metrics_shard_t *s, int family, const char *const *values, double v)
{
    record(s, family, values, OP_ADD, v);
}

void lg_metrics_set(lg_metrics_shard_t *s, int family, const char *const *values, double v)
{
    record(s, family, values, OP_SET, v);
}

void lg_metrics_observe(lg_metrics_shard_t *s, int family, const char *const *values, double v)
{
    record(s, family, values, OP_OBSERVE, v);
}

void lg_metrics_labels_init(lg_metrics_labels_t *l, const char *const *values, size_t n)
{
    key_build(l, values, n < LG_METRICS_MAX_LABELS ? n : LG_METRICS_MAX_LABELS);
}

void lg_metrics_labels_dispose(lg_metrics_labels_t *l)
{
    key_dispose(l);
}

void lg_metrics_add_labels(lg_metrics_shard_t *s, int family, const lg_metrics_labels_t *l,
                           double v)
{
    record_labels(s, family, l, OP_ADD, v);
}

void lg_metrics_set_labels(lg_metrics_shard_t *s, int family, const lg_metrics_labels_t *l,
                           double v)
{
    record_labels(s, family, l, OP_SET, v);
}

void lg_metrics_observe_labels(lg_metrics_shard_t *s, int family, const lg_metrics_labels_t *l,
                               double v)
{
    record_labels(s, family, l, OP_OBSERVE, v);
}

/* ---- Registry ---- */

lg_metrics_t *lg_metrics_new(const char *prefix, int nshards, size_t max_series, lg_err_t *err)
{
    static const char *const fam_label[] = {"family"};
    lg_metrics_t *m;

    if (prefix == NULL)
        prefix = "";
    if (!valid_name(prefix, 0) || strncmp(prefix, "__", 2) == 0) {
        lg_err_set(err, 0, "metrics prefix \"%s\" is not a valid metric name prefix", prefix);
        return NULL;
    }
    if (nshards < 0) {
        lg_err_set(err, 0, "metrics: negative shard count %d", nshards);
        return NULL;
    }
    m = lg_xcalloc(1, sizeof(*m));
    m->prefix = lg_xstrdup(prefix);
    m->max_series = max_series ? max_series : 10000;
    m->nshards = nshards;
    pthread_mutex_init(&m->mu, NULL);
    m->shards = lg_xcalloc((size_t)nshards + 1, sizeof(*m->shards));
    for (int i = 0; i <= nshards; i++) {
        lg_metrics_shard_t *s = lg_xcalloc(1, sizeof(*s));
        s->m = m;
        s->locked = i == nshards;
        pthread_mutex_init(&s->mu, NULL);
        m->shards[i] = s;
    }
    m->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    m->overflow_family = lg_metrics_family(
        m, LG_METRICS_COUNTER, "metrics_series_overflow",
        "Recordings folded into the overflow series because a family reached its label-set limit.",
        fam_label, 1, NULL, 0, NULL);
    m->fams[m->overflow_family]->max_series = LG_METRICS_MAX_FAMILIES;
    return m;
}

static void family_free(family_t *f)
{
    size_t n = atomic_load(&f->nsets);

    for (size_t id = 0; id < n; id++)
        free(f->sets[id / LG_METRICS_CHUNK][id % LG_METRICS_CHUNK]);
    for (size_t c = 0; c < f->nchunks; c++)
        free(f->sets[c]);
    free(f->sets);
    free(f->index);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    for (size_t i = 0; i < f->nbuckets; i++) {
        free(f->le_prom[i]);
        free(f->le_om[i]);
    }
    free(f->le_prom);
    free(f->le_om);
    free(f->labels);
    free(f->buckets);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void lg_metrics_free(lg_metrics_t *m)
{
    int nf;

    if (m == NULL)
        return;
    nf = atomic_load(&m->nfams);
    for (int i = 0; i <= m->nshards; i++) {
        lg_metrics_shard_t *s = m->shards[i];
        for (int f = 0; f < nf; f++) {
            shard_fam_t *sf = atomic_load(&s->fams[f]);
            if (sf == NULL)
                continue;
            for (size_t c = 0; c < m->fams[f]->nchunks; c++)
                free(atomic_load(&sf->chunks[c]));
            free(sf->chunks);
            free(sf->map);
            free(sf);
        }
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
    for (int f = 0; f < nf; f++)
        family_free(m->fams[f]);
    if (m->c_locale != (locale_t)0)
        freelocale(m->c_locale);
    pthread_mutex_destroy(&m->mu);
    free(m->shards);
    free(m->prefix);
    free(m);
}

lg_metrics_shard_t *lg_metrics_shard(lg_metrics_t *m, int worker)
{
    if (m == NULL)
        return NULL;
    if (worker == LG_METRICS_MAIN)
        worker = m->nshards;
    if (worker < 0 || worker > m->nshards)
        return NULL;
    return m->shards[worker];
}

static int check_family(lg_metrics_t *m, int type, const char *name, size_t nlen,
                        const char *const *labels, size_t nlabels, const double *buckets,
                        size_t nbuckets, lg_err_t *err)
{
    char full[512];

    if (type < LG_METRICS_COUNTER || type > LG_METRICS_INFO)
        return lg_err_set(err, 0, "metric \"%s\": unknown type %d", name, type);
    if (nlen == 0 || strlen(m->prefix) + nlen + 16 > sizeof(full))
        return lg_err_set(err, 0, "metric name \"%s\" is empty or too long", name);
    snprintf(full, sizeof(full), "%s%.*s", m->prefix, (int)nlen, name);
    if (!valid_name(full, 0) || strncmp(full, "__", 2) == 0)
        return lg_err_set(err, 0, "metric name \"%s\" must match [a-zA-Z_][a-zA-Z0-9_]*", full);
    if (type != LG_METRICS_COUNTER && ends_with(name, nlen, "_total"))
        return lg_err_set(err, 0, "metric \"%s\": only counters may end in _total", full);
    if (nlabels > LG_METRICS_MAX_LABELS)
        return lg_err_set(err, 0, "metric \"%s\": more than %d labels", full,
                          LG_METRICS_MAX_LABELS);
    for (size_t i = 0; i < nlabels; i++) {
        const char *l = labels[i];
        if (!valid_name(l, 0) || !l[0] || strncmp(l, "__", 2) == 0)
            return lg_err_set(err, 0, "metric \"%s\": label name \"%s\" is not valid", full,
                              l ? l : "(null)");
        if (type == LG_METRICS_HISTOGRAM && strcmp(l, "le") == 0)
            return lg_err_set(err, 0, "metric \"%s\": histograms cannot have a label \"le\"", full);
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[j], l) == 0)
                return lg_err_set(err, 0, "metric \"%s\": label \"%s\" repeated", full, l);
    }
    if (type == LG_METRICS_HISTOGRAM) {
        if (nbuckets > LG_METRICS_MAX_BUCKETS)
            return lg_err_set(err, 0, "metric \"%s\": more than %d buckets", full,
                              LG_METRICS_MAX_BUCKETS);
        for (size_t i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i && !(buckets[i] > buckets[i - 1])))
                return lg_err_set(err, 0, "metric \"%s\": buckets must be finite and increasing",
                                  full);
    }
    for (int i = 0; i < atomic_load_explicit(&m->nfams, memory_order_relaxed); i++) {
        const char *o = m->fams[i]->name;
        if (strlen(o) == nlen && memcmp(o, name, nlen) == 0)
            return lg_err_set(err, 0, "metric \"%s\" is already declared", full);
    }
    return LG_OK;
}

int lg_metrics_family(lg_metrics_t *m, int type, const char *name, const char *help,
                      const char *const *labels, size_t nlabels, const double *buckets,
                      size_t nbuckets, lg_err_t *err)
{
    size_t nlen = name ? strlen(name) : 0;
    family_t *f;
    int id;

    if (type == LG_METRICS_COUNTER && ends_with(name, nlen, "_total"))
        nlen -= 6;
    else if (type == LG_METRICS_INFO && ends_with(name, nlen, "_info"))
        nlen -= 5;
    if (type != LG_METRICS_HISTOGRAM)
        nbuckets = 0;

    pthread_mutex_lock(&m->mu);
    id = atomic_load_explicit(&m->nfams, memory_order_relaxed);
    if (id >= LG_METRICS_MAX_FAMILIES) {
        pthread_mutex_unlock(&m->mu);
        return lg_err_set(err, 0, "metrics: more than %d families", LG_METRICS_MAX_FAMILIES);
    }
    if (check_family(m, type, name ? name : "", nlen, labels, nlabels, buckets, nbuckets, err)) {
        pthread_mutex_unlock(&m->mu);
        return LG_ERR;
    }

    f = lg_xcalloc(1, sizeof(*f));
    f->type = type;
    f->id = id;
    f->name = lg_xstrndup(name, nlen);
    /* promtool wants a HELP text; the name is better than nothing. */
    f->help = help && help[0] ? lg_xstrdup(help) : lg_xstrndup(name, nlen);
    if (ends_with(f->name, nlen, "_seconds"))
        f->unit = "seconds";
    else if (ends_with(f->name, nlen, "_bytes"))
        f->unit = "bytes";
    f->nlabels = nlabels;
    f->labels = lg_xcalloc(nlabels, sizeof(char *));
    for (size_t i = 0; i < nlabels; i++)
        f->labels[i] = lg_xstrdup(labels[i]);
    f->nbuckets = nbuckets;
    f->buckets = lg_xcalloc(nbuckets, sizeof(double));
    f->le_prom = lg_xcalloc(nbuckets, sizeof(char *));
    f->le_om = lg_xcalloc(nbuckets, sizeof(char *));
    locale_t old = m->c_locale != (locale_t)0 ? uselocale(m->c_locale) : (locale_t)0;
    for (size_t i = 0; i < nbuckets; i++) {
        char buf[LG_METRICS_NUMBUF];
        f->buckets[i] = buckets[i];
        lg_metrics_fmt_double(buf, buckets[i], 0);
        f->le_prom[i] = lg_xstrdup(buf);
        lg_metrics_fmt_double(buf, buckets[i], 1);
        f->le_om[i] = lg_xstrdup(buf);
    }
    if (old != (locale_t)0)
        uselocale(old);
    f->stride = type == LG_METRICS_HISTOGRAM ? nbuckets + 2 : 1;
    f->max_series = m->max_series;
    /* Room for max_series label sets plus the overflow set. */
    f->nchunks = (m->max_series + 1 + LG_METRICS_CHUNK - 1) / LG_METRICS_CHUNK;
    if (f->nchunks < (LG_METRICS_MAX_FAMILIES + 1 + LG_METRICS_CHUNK - 1) / LG_METRICS_CHUNK)
        f->nchunks = (LG_METRICS_MAX_FAMILIES + 1 + LG_METRICS_CHUNK - 1) / LG_METRICS_CHUNK;
    f->sets = lg_xcalloc(f->nchunks, sizeof(*f->sets));
    pthread_mutex_init(&f->mu, NULL);
    m->fams[id] = f;
    atomic_store_explicit(&m->nfams, id + 1, memory_order_release);
    pthread_mutex_unlock(&m->mu);
    return id;
}

/* Does `q` (already without prefix) name family f, with or without the type suffix
 * and the unit suffix? */
static int name_matches(const family_t *f, const char *q)
{
    size_t qlen = strlen(q), flen = strlen(f->name);
    size_t cand[3];
    size_t nc = 0;

    cand[nc++] = qlen;
    if (ends_with(q, qlen, "_total"))
        cand[nc++] = qlen - 6;
    if (ends_with(q, qlen, "_info"))
        cand[nc++] = qlen - 5;
    for (size_t i = 0; i < nc; i++) {
        size_t l = cand[i];
        if (l == flen && memcmp(q, f->name, l) == 0)
            return 1;
        if (f->unit && l + 1 + strlen(f->unit) == flen && memcmp(q, f->name, l) == 0 &&
            f->name[l] == '_')
            return 1;
    }
    return 0;
}

int lg_metrics_find(lg_metrics_t *m, const char *name)
{
    size_t plen = strlen(m->prefix);
    int n;

    if (name == NULL)
        return LG_ERR;
    n = atomic_load_explicit(&m->nfams, memory_order_acquire);
    for (int i = 0; i < n; i++)
        if (name_matches(m->fams[i], name))
            return i;
    if (plen && strncmp(name, m->prefix, plen) == 0)
        for (int i = 0; i < n; i++)
            if (name_matches(m->fams[i], name + plen))
                return i;
    return LG_ERR;
}

int lg_metrics_family_type(lg_metrics_t *m, int family)
{
    family_t *f = family_get(m, family);
    return f ? f->type : LG_ERR;
}

int lg_metrics_remove(lg_metrics_t *m, const char *name)
{
    family_t *f = family_get(m, lg_metrics_find(m, name));

    if (f == NULL)
        return LG_ERR;
    atomic_store_explicit(&f->removed, 1, memory_order_relaxed);
    return LG_OK;
}

/* ---- Standard families ---- */

static const double http_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                      0.5,   1,     2.5,  5,     10,   30,  80};
static const double token_buckets[] = {1,     4,     16,     64,      256,     1024,     4096,
                                       16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864};
static const double genai_duration_buckets[] = {0.01, 0.02, 0.04, 0.08,  0.16,  0.32,  0.64,
                                                1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
static const double ttft_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                      0.25,  0.5,   0.75, 1,    2.5,  5,    7.5,  10};
static const double tpot_buckets[] = {0.001, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
                                      0.2,   0.3,  0.4,   0.5,  0.75,  1,   2.5};
static const double connect_buckets[] = {0.0005, 0.0015, 0.0043, 0.0126, 0.0368,
                                         0.108,  0.316,  0.924,  2.71,   8};

#define ROUTE_LABELS "bind", "gateway", "listener", "route", "route_rule"

int lg_metrics_register_standard(lg_metrics_t *m, lg_std_metrics_t *ids,
                                 const char *const *custom_labels, size_t ncustom, lg_err_t *err)
{
    static const char *const http[] = {"backend", "protocol", "method",
                                       "status",  "reason",   ROUTE_LABELS};
    static const char *const genai[] = {"gen_ai_operation_name", "gen_ai_system",
                                        "gen_ai_request_model", "gen_ai_response_model",
                                        ROUTE_LABELS};
    static const char *const token[] = {"gen_ai_token_type",     "gen_ai_operation_name",
                                        "gen_ai_system",         "gen_ai_request_model",
                                        "gen_ai_response_model", ROUTE_LABELS};
    static const char *const mcp[] = {"method", "resource_type", "server", "resource",
                                      ROUTE_LABELS};
    static const char *const tcp[] = {"bind", "gateway", "listener", "protocol"};
    static const char *const tag[] = {"tag"}, *const transport[] = {"transport"},
                             *const plugin[] = {"plugin"}, *const outcome[] = {"outcome"},
                             *const parser[] = {"parser"};
    const char *l[4][LG_METRICS_MAX_LABELS];
    size_t nl[4];

    if (ncustom + LG_METRICS_TOKEN_NLABELS > LG_METRICS_MAX_LABELS)
        return lg_err_set(err, 0, "metrics.fields.add: at most %d custom labels",
                          LG_METRICS_MAX_LABELS - LG_METRICS_TOKEN_NLABELS);
    /* l[0] HTTP, l[1] GenAI, l[2] token usage, l[3] MCP; each + custom. */
    nl[0] = LG_ARRAY_SIZE(http), nl[1] = LG_ARRAY_SIZE(genai), nl[2] = LG_ARRAY_SIZE(token),
    nl[3] = LG_ARRAY_SIZE(mcp);
    memcpy(l[0], http, sizeof(http));
    memcpy(l[1], genai, sizeof(genai));
    memcpy(l[2], token, sizeof(token));
    memcpy(l[3], mcp, sizeof(mcp));
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < ncustom; i++)
            l[k][nl[k] + i] = custom_labels[i];

#define FAM(field, type, name, help, labels, n, b, nb)                                             \
    if ((ids->field = lg_metrics_family(m, type, name, help, labels, n, b, nb, err)) < 0)          \
        return LG_ERR;
#define HIST(field, name, help, labels, n, b)                                                      \
    FAM(field, LG_METRICS_HISTOGRAM, name, help, labels, n, b, LG_ARRAY_SIZE(b))

    FAM(build_info, LG_METRICS_INFO, "build_info", "Agentgateway build information", tag, 1, NULL,
        0);
    FAM(requests, LG_METRICS_COUNTER, "requests", "The total number of HTTP requests sent", l[0],
        nl[0] + ncustom, NULL, 0);
    HIST(request_duration, "request_duration_seconds", "The duration of HTTP requests", l[0],
         nl[0] + ncustom, http_buckets);
    FAM(response_bytes, LG_METRICS_COUNTER, "response_bytes",
        "The total number of response body bytes sent", l[0], nl[0] + ncustom, NULL, 0);
    HIST(gen_ai_token_usage, "gen_ai_client_token_usage", "Number of tokens used per request", l[2],
         nl[2] + ncustom, token_buckets);
    HIST(gen_ai_request_duration, "gen_ai_server_request_duration",
         "Duration of generative AI requests in seconds", l[1], nl[1] + ncustom,
         genai_duration_buckets);
    HIST(gen_ai_ttft, "gen_ai_server_time_to_first_token",
         "Time to receive the first token of a generative AI response in seconds", l[1],
         nl[1] + ncustom, ttft_buckets);
    HIST(gen_ai_tpot, "gen_ai_server_time_per_output_token",
         "Time per output token after the first, in seconds", l[1], nl[1] + ncustom, tpot_buckets);
    FAM(mcp_requests, LG_METRICS_COUNTER, "mcp_requests",
        "The total number of MCP JSON-RPC requests", l[3], nl[3] + ncustom, NULL, 0);
    FAM(downstream_connections, LG_METRICS_COUNTER, "downstream_connections",
        "The total number of downstream connections established", tcp, LG_ARRAY_SIZE(tcp), NULL, 0);
    HIST(upstream_connect_duration, "upstream_connect_duration_seconds",
         "Time to establish an upstream connection", transport, 1, connect_buckets);
    FAM(log_lines_dropped, LG_METRICS_COUNTER, "log_lines_dropped",
        "Access log lines dropped because the writer queue was full", NULL, 0, NULL, 0);
    FAM(spans_dropped, LG_METRICS_COUNTER, "spans_dropped",
        "Spans dropped before export (queue full or export failed)", NULL, 0, NULL, 0);
    FAM(lua_plugin_errors, LG_METRICS_COUNTER, "lua_plugin_errors",
        "Runtime errors raised by Lua plugins", plugin, 1, NULL, 0);
    FAM(config_reloads, LG_METRICS_COUNTER, "config_reloads",
        "Configuration reloads by outcome (success or failure)", outcome, 1, NULL, 0);
    FAM(llm_requests, LG_METRICS_COUNTER, "llm_requests",
        "LLM requests by what parsed them: c (the built-in chat completions path) or lua", parser,
        1, NULL, 0);
#undef HIST
#undef FAM

#ifdef LG_VERSION
    const char *version[] = {LG_VERSION};
#else
    const char *version[] = {"unknown"};
#endif
    lg_metrics_set(lg_metrics_shard(m, LG_METRICS_MAIN), ids->build_info, version, 1);
    return LG_OK;
}
