/* otlp_export_driver.c -- exports spans through the real exporter for
 * spec/04-integration/otlp_export.test.mjs (not a unit test: no test_ prefix).
 * SPDX-License-Identifier: MIT
 *
 * Usage: otlp_export_driver --endpoint URL [--protocol grpc|http] [--path P]
 *            [--spans N] [--header "Name: value"]... [--queue N] [--batch N]
 *            [--interval MS] [--timeout MS] [--flush MS]
 * Creates N/2 request traces, each a SERVER span (remote parent) with one CLIENT child,
 * carrying every attribute type; submits them as fast as it can; stops with --flush;
 * prints one JSON line with counters and timings. Environment variables are honoured
 * (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, POD_NAME, OTEL_EXPORTER_OTLP_*). */
#include "common.h"
#include "otlp.h"
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    lg_otlp_opts_t o;
    lg_err_t err;
    const char *headers[8];
    int nspans = 20, flush = 2000;
    static const uint8_t remote_parent[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};

    memset(&o, 0, sizeof(o));
    o.headers = headers;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "missing value for %s\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--endpoint") == 0)
            o.endpoint = v;
        else if (strcmp(a, "--protocol") == 0)
            o.protocol = strcmp(v, "http") == 0 ? LG_OTLP_HTTP : LG_OTLP_GRPC;
        else if (strcmp(a, "--path") == 0)
            o.path = v;
        else if (strcmp(a, "--spans") == 0)
            nspans = atoi(v);
        else if (strcmp(a, "--header") == 0 && o.nheaders < 8)
            headers[o.nheaders++] = v;
        else if (strcmp(a, "--queue") == 0)
            o.queue_max = (size_t)atoi(v);
        else if (strcmp(a, "--batch") == 0)
            o.batch_max = (size_t)atoi(v);
        else if (strcmp(a, "--interval") == 0)
            o.batch_interval_ms = atoi(v);
        else if (strcmp(a, "--timeout") == 0)
            o.timeout_ms = atoi(v);
        else if (strcmp(a, "--flush") == 0)
            flush = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (lg_otlp_start(&o, &err) != LG_OK) {
        fprintf(stderr, "lg_otlp_start: %s\n", err.msg);
        return 1;
    }

    static const char *const reasons[] = {"stop", "length"};
    static const int64_t codes[] = {200, -1, 4294967296LL};
    int64_t t0 = lg_mono_us();
    int queued = 0;
    for (int i = 0; i < nspans / 2; i++) {
        lg_span_t *s = lg_span_new(), *c = lg_span_new();
        uint64_t now = (uint64_t)lg_now_us() * 1000;
        char name[64];
        int n;

        lg_trace_id_new(s->trace_id);
        lg_span_id_new(s->span_id);
        memcpy(s->parent_span_id, remote_parent, 8);
        s->kind = LG_SPAN_KIND_SERVER;
        s->flags = LG_SPAN_FLAG_HAS_IS_REMOTE | LG_SPAN_FLAG_IS_REMOTE | LG_TRACE_FLAG_SAMPLED;
        s->start_ns = now;
        s->end_ns = now + 1500000;
        lg_span_set_name(s, "POST /v1/chat/completions", 25);
        lg_span_set_trace_state(s, "rojo=00f067aa0ba902b7", 21);
        lg_span_attr_str(s, "gen_ai.request.model", "gpt-4o-mini", 11);
        lg_span_attr_int(s, "gen_ai.usage.input_tokens", 10 + i);
        lg_span_attr_int(s, "lunagate.index", i);
        lg_span_attr_double(s, "gen_ai.request.temperature", 0.25);
        lg_span_attr_bool(s, "gen_ai.response.streaming", i % 2);
        lg_span_attr_str_array(s, "gen_ai.response.finish_reasons", reasons, 2);
        lg_span_attr_int_array(s, "lunagate.codes", codes, 3);
        if (i % 5 == 4)
            lg_span_set_status(s, LG_SPAN_STATUS_ERROR, "upstream timed out", 18);

        memcpy(c->trace_id, s->trace_id, 16);
        lg_span_id_new(c->span_id);
        memcpy(c->parent_span_id, s->span_id, 8);
        c->kind = LG_SPAN_KIND_CLIENT;
        c->flags = LG_SPAN_FLAG_HAS_IS_REMOTE | LG_TRACE_FLAG_SAMPLED;
        c->start_ns = now + 100000;
        c->end_ns = now + 1400000;
        n = snprintf(name, sizeof(name), "POST 127.0.0.1:%d", 8000 + i);
        lg_span_set_name(c, name, (size_t)n);
        lg_span_attr_str(c, "http.method", "POST", 4);
        lg_span_attr_int(c, "http.status", 200);

        queued += lg_otlp_submit(s) == LG_OK;
        queued += lg_otlp_submit(c) == LG_OK;
    }
    int64_t submit_us = lg_mono_us() - t0;

    t0 = lg_mono_us();
    lg_otlp_stop(flush);
    int64_t stop_us = lg_mono_us() - t0;

    lg_otlp_stats_t st;
    lg_otlp_stats(&st);
    printf("{\"spans\":%d,\"queued\":%d,\"submitted\":%llu,\"exported\":%llu,\"dropped\":%llu,"
           "\"dropped_queue\":%llu,\"dropped_export\":%llu,\"batches\":%llu,"
           "\"submit_us\":%lld,\"stop_us\":%lld}\n",
           nspans / 2 * 2, queued, (unsigned long long)st.submitted,
           (unsigned long long)st.exported, (unsigned long long)lg_otlp_dropped(),
           (unsigned long long)st.dropped_queue, (unsigned long long)st.dropped_export,
           (unsigned long long)st.batches_sent, (long long)submit_us, (long long)stop_us);
    return 0;
}
