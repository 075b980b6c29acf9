/* metrics_expo.c -- Prometheus text 0.0.4 and OpenMetrics 1.0 exposition of the registry,
 * and Accept-header negotiation.
 * SPDX-License-Identifier: MIT
 *
 * A scrape walks each family's published label sets and sums the cells of every
 * shard (relaxed 64-bit loads: a value may be a moment old, never torn). Lines are
 * written into space reserved in the caller's evbuffer, 64 KiB at a time. */
#include "metrics.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "metrics_int.h"

/* ---- Numbers ---- */

static size_t fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0, len;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    len = n;
    for (size_t i = 0; i < len; i++)
        buf[i] = tmp[len - 1 - i];
    buf[len] = '\0';
    return len;
}

size_t lg_metrics_fmt_double(char *buf, double v, int om_le)
{
    size_t n;

    if (isnan(v))
        return (size_t)sprintf(buf, "NaN");
    if (isinf(v))
        return (size_t)sprintf(buf, v > 0 ? "+Inf" : "-Inf");
    if (v == floor(v) && fabs(v) < 1e15) {
        if (v < 0) {
            buf[0] = '-';
            n = 1 + fmt_u64(buf + 1, (uint64_t)-v);
        } else {
            n = fmt_u64(buf, (uint64_t)v);
        }
        if (om_le) {
            memcpy(buf + n, ".0", 3);
            n += 2;
        }
        return n;
    }
    /* Shortest of 15..17 significant digits that reads back to the same double;
     * %g drops trailing zeros, so a shorter exact form comes out short. */
    for (int prec = 15; prec <= 17; prec++) {
        n = (size_t)snprintf(buf, LG_METRICS_NUMBUF, "%.*g", prec, v);
        if (prec == 17 || strtod(buf, NULL) == v)
            break;
    }
    if (om_le && !strpbrk(buf, ".e")) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    return n;
}

/* ---- Output buffer ---- */

/* Writes straight into space reserved in the evbuffer (64 KiB at a time), so the
 * exposition is copied once. */
typedef struct ob {
    struct evbuffer *out;
    char *buf;
    size_t len, cap;
    int err;
} ob_t;

#define OB_CHUNK (64 * 1024)

static void ob_flush(ob_t *o)
{
    struct evbuffer_iovec v;

    if (o->buf) {
        v.iov_base = o->buf;
        v.iov_len = o->len;
        if (evbuffer_commit_space(o->out, &v, 1) != 0)
            o->err = 1;
    }
    o->buf = NULL;
    o->len = o->cap = 0;
}

static void ob_reserve(ob_t *o)
{
    struct evbuffer_iovec v;

    ob_flush(o);
    if (evbuffer_reserve_space(o->out, OB_CHUNK, &v, 1) < 1 || v.iov_len < OB_CHUNK) {
        o->err = 1;
        return;
    }
    o->buf = v.iov_base;
    o->cap = OB_CHUNK; /* commit at most what was asked for */
}

static void ob_put(ob_t *o, const char *p, size_t n)
{
    if (o->len + n > o->cap) {
        if (n > OB_CHUNK / 2) {
            ob_flush(o);
            if (evbuffer_add(o->out, p, n) != 0)
                o->err = 1;
            return;
        }
        ob_reserve(o);
        if (o->err)
            return;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

static void ob_str(ob_t *o, const char *s)
{
    ob_put(o, s, strlen(s));
}

static void ob_double(ob_t *o, double v)
{
    char num[LG_METRICS_NUMBUF];
    ob_put(o, num, lg_metrics_fmt_double(num, v, 0));
}

static void ob_u64(ob_t *o, uint64_t v)
{
    char num[LG_METRICS_NUMBUF];
    ob_put(o, num, fmt_u64(num, v));
}

/* HELP text: Prometheus 0.0.4 escapes \ and newline; OpenMetrics also ". */
static void ob_help(ob_t *o, const char *s, int om)
{
    for (; *s; s++) {
        if (*s == '\\')
            ob_put(o, "\\\\", 2);
        else if (*s == '\n')
            ob_put(o, "\\n", 2);
        else if (*s == '"' && om)
            ob_put(o, "\\\"", 2);
        else
            ob_put(o, s, 1);
    }
}

/* ---- Families ---- */

static double cell_double(acell_t *c)
{
    uint64_t b = atomic_load_explicit(c, memory_order_relaxed);
    double d;
    memcpy(&d, &b, sizeof(d));
    return d;
}

/* Sums shard cells into acc (n label sets x stride; histogram counts are summed as
 * integers, stored in the same 8 bytes). */
static void merge(lg_metrics_t *m, family_t *f, size_t n, uint64_t *acc)
{
    size_t nb = f->nbuckets;

    for (int si = 0; si <= m->nshards; si++) {
        shard_fam_t *sf = atomic_load_explicit(&m->shards[si]->fams[f->id], memory_order_acquire);
        if (sf == NULL)
            continue;
        for (size_t c = 0; c * LG_METRICS_CHUNK < n; c++) {
            acell_t *chunk = atomic_load_explicit(&sf->chunks[c], memory_order_acquire);
            if (chunk == NULL)
                continue;
            for (size_t j = 0; j < LG_METRICS_CHUNK && c * LG_METRICS_CHUNK + j < n; j++) {
                acell_t *cell = chunk + j * f->stride;
                uint64_t *a = acc + (c * LG_METRICS_CHUNK + j) * f->stride;
                if (f->type == LG_METRICS_HISTOGRAM) {
                    for (size_t b = 0; b <= nb; b++)
                        a[b] += atomic_load_explicit(&cell[b], memory_order_relaxed);
                    double s;
                    memcpy(&s, &a[nb + 1], sizeof(s));
                    s += cell_double(&cell[nb + 1]);
                    memcpy(&a[nb + 1], &s, sizeof(s));
                } else if (f->type == LG_METRICS_INFO) {
                    a[0] = 1;
                } else {
                    double s;
                    memcpy(&s, &a[0], sizeof(s));
                    s += cell_double(cell);
                    memcpy(&a[0], &s, sizeof(s));
                }
            }
        }
    }
}

/* Writes `name{labels}` (or `name{labels,le="x"}`) followed by a space. */
static void series_head(ob_t *o, const char *name, size_t nlen, const char *suffix,
                        const labelset_t *ls, const char *le)
{
    ob_put(o, name, nlen);
    ob_str(o, suffix);
    if ((ls && ls->rlen) || le) {
        ob_put(o, "{", 1);
        if (ls && ls->rlen)
            ob_put(o, ls->rendered, ls->rlen);
        if (le) {
            if (ls && ls->rlen)
                ob_put(o, ",", 1);
            ob_put(o, "le=\"", 4);
            ob_str(o, le);
            ob_put(o, "\"", 1);
        }
        ob_put(o, "}", 1);
    }
    ob_put(o, " ", 1);
}

/* Bucket lines are most of a large exposition, so each is written in one go into
 * the reserved space: "<name>_bucket{" <labels> "," "le=\"<bound>\"} " <count> "\n". */
static void render_histogram(ob_t *o, family_t *f, const char *name, size_t nlen,
                             const labelset_t *ls, const uint64_t *a, int om)
{
    size_t rlen = ls ? ls->rlen : 0;
    uint64_t cum = 0;
    double sum;

    for (size_t b = 0; b <= f->nbuckets; b++) {
        const char *le = b < f->nbuckets ? (om ? f->le_om[b] : f->le_prom[b]) : "+Inf";
        size_t lelen = strlen(le), need = nlen + 8 + rlen + 1 + 4 + lelen + 3 + 21 + 1;
        cum += a[b];
        if (need > OB_CHUNK / 2 || (o->len + need > o->cap && (ob_reserve(o), o->err))) {
            series_head(o, name, nlen, "_bucket", ls, le); /* very long labels, or an error */
            ob_u64(o, cum);
            ob_put(o, "\n", 1);
            continue;
        }
        char *d = o->buf + o->len;
        memcpy(d, name, nlen), d += nlen;
        memcpy(d, "_bucket{", 8), d += 8;
        if (rlen) {
            memcpy(d, ls->rendered, rlen), d += rlen;
            *d++ = ',';
        }
        memcpy(d, "le=\"", 4), d += 4;
        memcpy(d, le, lelen), d += lelen;
        memcpy(d, "\"} ", 3), d += 3;
        d += fmt_u64(d, cum);
        *d++ = '\n';
        o->len = (size_t)(d - o->buf);
    }
    memcpy(&sum, &a[f->nbuckets + 1], sizeof(sum));
    series_head(o, name, nlen, "_sum", ls, NULL);
    ob_double(o, sum);
    ob_put(o, "\n", 1);
    /* _count is the +Inf bucket of this same scrape, so they always agree. */
    series_head(o, name, nlen, "_count", ls, NULL);
    ob_u64(o, cum);
    ob_put(o, "\n", 1);
}

static void render_family(lg_metrics_t *m, family_t *f, int om, ob_t *o)
{
    static const char *const types[] = {"", "counter", "gauge", "histogram", "info"};
    size_t n = atomic_load_explicit(&f->nsets, memory_order_acquire);
    const char *type = types[f->type], *sample_suffix = "";
    char name[512];
    size_t nlen;

    nlen = (size_t)snprintf(name, sizeof(name), "%s%s", m->prefix, f->name);
    if (f->type == LG_METRICS_COUNTER)
        sample_suffix = "_total";
    else if (f->type == LG_METRICS_INFO)
        sample_suffix = "_info";

    /* Metadata: 0.0.4 names the family by its sample name and has no info type;
     * OpenMetrics names the family without _total / _info, TYPE before UNIT and HELP. */
    if (om) {
        ob_str(o, "# TYPE ");
        ob_put(o, name, nlen);
        ob_put(o, " ", 1);
        ob_str(o, type);
        ob_put(o, "\n", 1);
        if (f->unit) {
            ob_str(o, "# UNIT ");
            ob_put(o, name, nlen);
            ob_put(o, " ", 1);
            ob_str(o, f->unit);
            ob_put(o, "\n", 1);
        }
        ob_str(o, "# HELP ");
        ob_put(o, name, nlen);
        ob_put(o, " ", 1);
        ob_help(o, f->help, 1);
        ob_put(o, "\n", 1);
    } else {
        ob_str(o, "# HELP ");
        ob_put(o, name, nlen);
        ob_str(o, sample_suffix);
        ob_put(o, " ", 1);
        ob_help(o, f->help, 0);
        ob_str(o, "\n# TYPE ");
        ob_put(o, name, nlen);
        ob_str(o, sample_suffix);
        ob_put(o, " ", 1);
        ob_str(o, f->type == LG_METRICS_INFO ? "gauge" : type);
        ob_put(o, "\n", 1);
    }

    if (n == 0) {
        /* A label-less family shows its zero value before the first recording. */
        if (f->nlabels == 0 && f->type != LG_METRICS_INFO) {
            uint64_t zero[LG_METRICS_MAX_BUCKETS + 2] = {0};
            if (f->type == LG_METRICS_HISTOGRAM) {
                render_histogram(o, f, name, nlen, NULL, zero, om);
            } else {
                series_head(o, name, nlen, sample_suffix, NULL, NULL);
                ob_put(o, "0\n", 2);
            }
        }
        return;
    }

    uint64_t *acc = lg_xcalloc(n * f->stride, sizeof(uint64_t));
    merge(m, f, n, acc);
    for (size_t id = 0; id < n; id++) {
        const labelset_t *ls = f->sets[id / LG_METRICS_CHUNK][id % LG_METRICS_CHUNK];
        const uint64_t *a = acc + id * f->stride;
        if (f->type == LG_METRICS_HISTOGRAM) {
            render_histogram(o, f, name, nlen, ls, a, om);
        } else {
            double v;
            memcpy(&v, a, sizeof(v));
            series_head(o, name, nlen, sample_suffix, ls, NULL);
            if (f->type == LG_METRICS_INFO)
                ob_put(o, "1", 1);
            else
                ob_double(o, v);
            ob_put(o, "\n", 1);
        }
    }
    free(acc);
}

int lg_metrics_render(lg_metrics_t *m, int openmetrics, struct evbuffer *out)
{
    int nf = atomic_load_explicit(&m->nfams, memory_order_acquire);
    locale_t old = (locale_t)0;
    ob_t o = {.out = out};

    if (m->c_locale != (locale_t)0)
        old = uselocale(m->c_locale); /* "%g" and strtod must use '.' */
    /* The registry's own overflow family (id 0) goes last, after the families it watches. */
    for (int i = 1; i <= nf && !o.err; i++) {
        family_t *f = m->fams[i < nf ? i : m->overflow_family];
        if (!atomic_load_explicit(&f->removed, memory_order_relaxed))
            render_family(m, f, openmetrics, &o);
    }
    if (openmetrics)
        ob_str(&o, "# EOF\n");
    ob_flush(&o);
    if (old != (locale_t)0)
        uselocale(old);
    return o.err ? LG_ERR : LG_OK;
}

/* ---- Content negotiation ---- */

/* RFC 9110 qvalue: 0, 1, 0.xyz or 1.000; anything else counts as 0. */
static double parse_q(const char *s, size_t n)
{
    double q = 0, scale = 1;

    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return 0;
    q = s[0] - '0';
    if (n > 1 && s[1] != '.')
        return 0;
    for (size_t i = 2; i < n && i < 5; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        scale /= 10;
        q += (s[i] - '0') * scale;
    }
    return q > 1 ? 1 : q;
}

/* Parses one media range "type/subtype;param=v;q=0.5" of [s, e): returns 1 for
 * OpenMetrics text 1.0.0/0.0.1, 0 for Prometheus text 0.0.4 (text/plain, any
 * version we can serve) or * / *, -1 for anything else; sets *q. */
static int media_kind(const char *s, const char *e, double *q)
{
    const char *p = s, *semi;
    int kind;
    size_t tlen;

    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    semi = memchr(p, ';', (size_t)(e - p));
    tlen = (size_t)((semi ? semi : e) - p);
    while (tlen && (p[tlen - 1] == ' ' || p[tlen - 1] == '\t'))
        tlen--;
#define IS(lit) (tlen == sizeof(lit) - 1 && strncasecmp(p, lit, tlen) == 0)
    if (IS("application/openmetrics-text"))
        kind = 1;
    else if (IS("text/plain") || IS("*/*") || IS("text/*"))
        kind = 0;
    else
        kind = -1;
#undef IS
    *q = 1.0;
    while (semi) {
        const char *a = semi + 1, *eq, *ve;
        semi = memchr(a, ';', (size_t)(e - a));
        ve = semi ? semi : e;
        while (a < ve && (*a == ' ' || *a == '\t'))
            a++;
        eq = memchr(a, '=', (size_t)(ve - a));
        if (eq == NULL)
            continue;
        size_t klen = (size_t)(eq - a), vlen = (size_t)(ve - eq - 1);
        while (vlen && (eq[vlen] == ' ' || eq[vlen] == '\t'))
            vlen--;
        if (klen == 1 && (*a == 'q' || *a == 'Q')) {
            *q = parse_q(eq + 1, vlen);
        } else if (klen == 7 && strncasecmp(a, "version", 7) == 0 && kind == 1) {
            if (!(vlen == 5 &&
                  (memcmp(eq + 1, "1.0.0", 5) == 0 || memcmp(eq + 1, "0.0.1", 5) == 0)))
                kind = -1;
        }
    }
    return kind;
}

int lg_metrics_negotiate(const char *accept, const char **content_type)
{
    double best_q = -1;
    int best = 0;

    for (const char *p = accept; p && *p;) {
        const char *e = strchr(p, ',');
        double q;
        if (e == NULL)
            e = p + strlen(p);
        int kind = media_kind(p, e, &q);
        if (kind >= 0 && q > 0 && q > best_q) {
            best_q = q;
            best = kind;
        }
        p = *e ? e + 1 : e;
    }
    if (content_type)
        *content_type = best ? LG_METRICS_CT_OPENMETRICS : LG_METRICS_CT_PROMETHEUS;
    return best;
}
