/* test_metrics.c -- the metrics registry: values, histograms, overflow, remove,
 * escaping, both exposition formats, promtool, and concurrent writers + scraper.
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/metrics.c"
#include "../../src/metrics_expo.c"

#include <event2/buffer.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef LG_VERSION
#define TEST_VERSION LG_VERSION
#else
#define TEST_VERSION "unknown"
#endif

/* Renders into a NUL-terminated heap string; caller frees. */
static char *render(lg_metrics_t *m, int om)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *s;

    ok(lg_metrics_render(m, om, b) == LG_OK, "render %s returns LG_OK", om ? "om" : "prom");
    n = evbuffer_get_length(b);
    s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

/* Returns the value text of the sample line that starts with `series ` (series =
 * name plus label block exactly as rendered), or NULL. */
static const char *sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return p + n + 1;
    return NULL;
}

static int sample_is(const char *text, const char *series, const char *want)
{
    const char *v = sample(text, series);
    size_t n = strlen(want);
    if (v == NULL) {
        printf("#   no sample %s\n", series);
        return 0;
    }
    if (strncmp(v, want, n) != 0 || v[n] != '\n') {
        printf("#   %s = %.*s, want %s\n", series, (int)strcspn(v, "\n"), v, want);
        return 0;
    }
    return 1;
}

static int count_lines(const char *text, const char *prefix)
{
    int c = 0;
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, n) == 0)
            c++;
    return c;
}

/* Pipes `text` to `promtool check metrics`; returns its exit status, or -1 when
 * promtool is missing. */
static int promtool(const char *text, char *out, size_t outlen)
{
    char path[] = "/tmp/lg-metrics-XXXXXX", cmd[256];
    FILE *f, *p;
    int fd, rc;
    size_t n = 0;

    if (access("/usr/bin/promtool", X_OK) != 0)
        return -1;
    if ((fd = mkstemp(path)) < 0)
        return -1;
    f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s 2>&1", path);
    p = popen(cmd, "r");
    if (p == NULL) {
        unlink(path);
        return -1;
    }
    out[0] = '\0';
    while (n + 1 < outlen && fgets(out + n, (int)(outlen - n), p))
        n += strlen(out + n);
    rc = pclose(p);
    unlink(path);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 255;
}

/* Feeds OpenMetrics `text` to promtool's OpenMetrics parser (the backfill command,
 * which needs a timestamp on every sample, so one is appended). Returns its exit
 * status, or -1 when promtool is missing. */
static int promtool_om(const char *text, char *out, size_t outlen)
{
    char path[] = "/tmp/lg-om-XXXXXX", dir[] = "/tmp/lg-om-db-XXXXXX", cmd[512];
    FILE *f, *p;
    int fd, rc;
    size_t n = 0;

    if (access("/usr/bin/promtool", X_OK) != 0)
        return -1;
    if ((fd = mkstemp(path)) < 0 || mkdtemp(dir) == NULL)
        return -1;
    f = fdopen(fd, "w");
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        fwrite(l, 1, len, f);
        fputs(l[0] == '#' ? "\n" : " 1700000000\n", f);
        l += len + (e ? 1 : 0);
    }
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/promtool tsdb create-blocks-from openmetrics %s %s 2>&1 | tail -3", path,
             dir);
    p = popen(cmd, "r");
    out[0] = '\0';
    while (p && n + 1 < outlen && fgets(out + n, (int)(outlen - n), p))
        n += strlen(out + n);
    rc = p ? pclose(p) : -1;
    unlink(path);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    /* The pipeline's status is tail's; promtool's errors are printed, not blocks. */
    return rc == 0 && strstr(out, "NUM SERIES") != NULL ? 0 : 1;
}

/* Prints a tool's output as TAP comments when it failed. */
static void diag(int rc, const char *out)
{
    if (rc == 0)
        return;
    for (const char *l = out; *l;) {
        size_t len = strcspn(l, "\n");
        printf("#   %.*s\n", (int)len, l);
        l += len + (l[len] ? 1 : 0);
    }
}

/* ---- Formatting and negotiation ---- */

static const char *fmt(double v, int om_le)
{
    static char b[LG_METRICS_NUMBUF];
    lg_metrics_fmt_double(b, v, om_le);
    return b;
}

static void test_numbers(void)
{
    ok_streq(fmt(0, 0), "0", "0");
    ok_streq(fmt(42, 0), "42", "integer without point");
    ok_streq(fmt(67108864, 0), "67108864", "no exponent for 2^26");
    ok_streq(fmt(123456789012345, 0), "123456789012345", "1e14 int");
    ok_streq(fmt(-3, 0), "-3", "negative integer");
    ok_streq(fmt(0.1, 0), "0.1", "0.1 shortest");
    ok_streq(fmt(0.1 + 0.2, 0), "0.30000000000000004", "17 digits");
    ok_streq(fmt(1e-05, 0), "1e-05", "small exponent");
    ok_streq(fmt(2.5, 1), "2.5", "om le 2.5");
    ok_streq(fmt(1, 1), "1.0", "om le 1.0");
    ok_streq(fmt(INFINITY, 0), "+Inf", "+Inf");
    ok_streq(fmt(-INFINITY, 0), "-Inf", "-Inf");
    ok_streq(fmt(NAN, 0), "NaN", "NaN");
    ok(strtod(fmt(1e300, 0), NULL) == 1e300, "1e300 round-trips (%s)", fmt(1e300, 0));
}

static void test_negotiate(void)
{
    const char *ct = NULL;

    ok(lg_metrics_negotiate(NULL, &ct) == 0, "no Accept: text 0.0.4");
    ok_streq(ct, "text/plain; version=0.0.4; charset=utf-8", "0.0.4 content type");
    ok(lg_metrics_negotiate("application/openmetrics-text;version=1.0.0;escaping=allow-utf8;"
                            "q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;"
                            "version=1.0.0;escaping=allow-utf8;q=0.3,text/plain;version=0.0.4;"
                            "q=0.2,*/*;q=0.1",
                            &ct) == 1,
       "Prometheus 3 Accept: OpenMetrics");
    ok_streq(ct, "application/openmetrics-text; version=1.0.0; charset=utf-8", "om content type");
    ok(lg_metrics_negotiate("application/openmetrics-text; version=2.0.0, text/plain", &ct) == 0,
       "unknown OpenMetrics version falls back");
    ok(lg_metrics_negotiate("text/plain;q=0.9, application/openmetrics-text;q=0.5", &ct) == 0,
       "higher q for text wins");
    ok(lg_metrics_negotiate("application/openmetrics-text", &ct) == 1, "bare OpenMetrics");
    ok(lg_metrics_negotiate("application/openmetrics-text;q=0", &ct) == 0, "q=0 refuses");
    ok(lg_metrics_negotiate("application/vnd.google.protobuf;proto=io.prometheus.client."
                            "MetricFamily;encoding=delimited",
                            &ct) == 0,
       "protobuf only: text fallback");
}

/* ---- Standard families, both formats, promtool ---- */

static void test_standard(void)
{
    static const char *const custom[] = {"user"};
    lg_std_metrics_t ids;
    lg_err_t err = {0};
    lg_metrics_t *m = lg_metrics_new("agentgateway_", 2, 0, &err);
    lg_metrics_shard_t *w0 = lg_metrics_shard(m, 0), *w1 = lg_metrics_shard(m, 1),
                       *mainsh = lg_metrics_shard(m, LG_METRICS_MAIN);
    char *txt, *om, out[4096];
    int rc;

    ok(m != NULL, "registry created");
    ok(lg_metrics_shard(m, 2) == mainsh, "shard nshards is the main shard");
    ok(lg_metrics_shard(m, 3) == NULL && lg_metrics_shard(m, -2) == NULL, "out of range: NULL");
    ok(lg_metrics_register_standard(m, &ids, custom, 1, &err) == LG_OK, "standard families: %s",
       err.msg);

    const char *http[] = {
        "127.0.0.1:8080",  "llm",       "POST",           "200", "Upstream", "bind/3000",
        "default/default", "listener0", "default/route0", NULL,  "alice"};
    lg_metrics_add(w0, ids.requests, http, 1);
    lg_metrics_add(w1, ids.requests, http, 2);
    lg_metrics_observe(w0, ids.request_duration, http, 0.2);
    lg_metrics_observe(w1, ids.request_duration, http, 3);
    lg_metrics_add(w0, ids.response_bytes, http, 1234);
    const char *in[] = {"input",
                        "chat",
                        "openai",
                        "gpt-4o-mini",
                        "gpt-4o-mini-2024-07-18",
                        "bind/3000",
                        "default/default",
                        "listener0",
                        "default/route0",
                        "",
                        "alice"};
    const char *outp[] = {"output",
                          "chat",
                          "openai",
                          "gpt-4o-mini",
                          "gpt-4o-mini-2024-07-18",
                          "bind/3000",
                          "default/default",
                          "listener0",
                          "default/route0",
                          "",
                          "alice"};
    lg_metrics_observe(w0, ids.gen_ai_token_usage, in, 12);
    lg_metrics_observe(w1, ids.gen_ai_token_usage, in, 1000);
    lg_metrics_observe(w0, ids.gen_ai_token_usage, outp, 5);
    lg_metrics_observe(w0, ids.gen_ai_request_duration, in + 1, 0.5);
    lg_metrics_observe(w0, ids.gen_ai_ttft, in + 1, 0.03);
    lg_metrics_observe(w0, ids.gen_ai_tpot, in + 1, 0.012);
    const char *mcp[] = {"tools/call",      "tool",      "everything",     "echo", "bind/3000",
                         "default/default", "listener0", "default/route0", NULL,   NULL};
    lg_metrics_add(w1, ids.mcp_requests, mcp, 1);
    const char *tcp[] = {"bind/3000", "default/default", "listener0", "http"};
    lg_metrics_add(w0, ids.downstream_connections, tcp, 1);
    lg_metrics_observe(w0, ids.upstream_connect_duration, (const char *[]){"tcp"}, 0.002);
    lg_metrics_add(mainsh, ids.log_lines_dropped, NULL, 3);
    lg_metrics_add(mainsh, ids.lua_plugin_errors, (const char *[]){"my-plugin"}, 1);
    lg_metrics_add(mainsh, ids.config_reloads, (const char *[]){"success"}, 1);

    txt = render(m, 0);
    ok(sample_is(txt, "agentgateway_build_info{tag=\"" TEST_VERSION "\"}", "1"), "build_info 1");
    ok(strstr(txt, "# TYPE agentgateway_build_info gauge\n") != NULL, "info is a gauge in 0.0.4");
    const char *hl = "{backend=\"127.0.0.1:8080\",protocol=\"llm\",method=\"POST\",status=\"200\","
                     "reason=\"Upstream\",bind=\"bind/3000\",gateway=\"default/default\","
                     "listener=\"listener0\",route=\"default/route0\",route_rule=\"unknown\","
                     "user=\"alice\"}";
    char series[1024];
    snprintf(series, sizeof(series), "agentgateway_requests_total%s", hl);
    ok(sample_is(txt, series, "3"), "requests_total summed over shards, NULL -> unknown");
    ok(strstr(txt, "# HELP agentgateway_requests_total ") != NULL &&
           strstr(txt, "# TYPE agentgateway_requests_total counter\n") != NULL,
       "0.0.4 counter metadata uses _total");
    snprintf(series, sizeof(series), "agentgateway_response_bytes_total%s", hl);
    ok(sample_is(txt, series, "1234"), "response_bytes_total");
    ok(sample_is(txt,
                 "agentgateway_request_duration_seconds_bucket{backend=\"127.0.0.1:8080\","
                 "protocol=\"llm\",method=\"POST\",status=\"200\",reason=\"Upstream\",bind=\"bind/"
                 "3000\",gateway=\"default/default\",listener=\"listener0\",route=\"default/"
                 "route0\",route_rule=\"unknown\",user=\"alice\",le=\"0.25\"}",
                 "1"),
       "request_duration le=0.25 holds 0.2");
    ok(count_lines(txt, "agentgateway_request_duration_seconds_bucket{") == 15,
       "14 HTTP buckets + +Inf");
    ok(sample_is(txt,
                 "agentgateway_gen_ai_client_token_usage_bucket{gen_ai_token_type=\"input\","
                 "gen_ai_operation_name=\"chat\",gen_ai_system=\"openai\",gen_ai_request_model="
                 "\"gpt-4o-mini\",gen_ai_response_model=\"gpt-4o-mini-2024-07-18\",bind=\"bind/"
                 "3000\",gateway=\"default/default\",listener=\"listener0\",route=\"default/"
                 "route0\",route_rule=\"unknown\",user=\"alice\",le=\"16\"}",
                 "1"),
       "token usage input le=16 = 1");
    ok(sample_is(txt,
                 "agentgateway_gen_ai_client_token_usage_bucket{gen_ai_token_type=\"input\","
                 "gen_ai_operation_name=\"chat\",gen_ai_system=\"openai\",gen_ai_request_model="
                 "\"gpt-4o-mini\",gen_ai_response_model=\"gpt-4o-mini-2024-07-18\",bind=\"bind/"
                 "3000\",gateway=\"default/default\",listener=\"listener0\",route=\"default/"
                 "route0\",route_rule=\"unknown\",user=\"alice\",le=\"1024\"}",
                 "2"),
       "token usage input le=1024 = 2 (cumulative)");
    ok(sample_is(txt,
                 "agentgateway_gen_ai_client_token_usage_bucket{gen_ai_token_type=\"input\","
                 "gen_ai_operation_name=\"chat\",gen_ai_system=\"openai\",gen_ai_request_model="
                 "\"gpt-4o-mini\",gen_ai_response_model=\"gpt-4o-mini-2024-07-18\",bind=\"bind/"
                 "3000\",gateway=\"default/default\",listener=\"listener0\",route=\"default/"
                 "route0\",route_rule=\"unknown\",user=\"alice\",le=\"67108864\"}",
                 "2"),
       "token usage top bucket printed without exponent");
    ok(sample_is(txt,
                 "agentgateway_gen_ai_client_token_usage_sum{gen_ai_token_type=\"input\","
                 "gen_ai_operation_name=\"chat\",gen_ai_system=\"openai\",gen_ai_request_model="
                 "\"gpt-4o-mini\",gen_ai_response_model=\"gpt-4o-mini-2024-07-18\",bind=\"bind/"
                 "3000\",gateway=\"default/default\",listener=\"listener0\",route=\"default/"
                 "route0\",route_rule=\"unknown\",user=\"alice\"}",
                 "1012"),
       "token usage input sum");
    ok(count_lines(txt, "agentgateway_gen_ai_client_token_usage_count{") == 2,
       "two token series (input, output)");
    ok(count_lines(txt, "agentgateway_gen_ai_server_time_to_first_token_bucket{") == 17,
       "16 TTFT buckets + +Inf");
    ok(count_lines(txt, "agentgateway_gen_ai_server_time_per_output_token_bucket{") == 15,
       "14 TPOT buckets + +Inf");
    ok(count_lines(txt, "agentgateway_gen_ai_server_request_duration_bucket{") == 15,
       "14 GenAI duration buckets + +Inf");
    ok(sample_is(txt,
                 "agentgateway_mcp_requests_total{method=\"tools/call\",resource_type=\"tool\","
                 "server=\"everything\",resource=\"echo\",bind=\"bind/3000\",gateway=\"default/"
                 "default\",listener=\"listener0\",route=\"default/route0\",route_rule=\"unknown\","
                 "user=\"unknown\"}",
                 "1"),
       "mcp_requests_total");
    ok(sample_is(txt,
                 "agentgateway_downstream_connections_total{bind=\"bind/3000\",gateway=\"default/"
                 "default\",listener=\"listener0\",protocol=\"http\"}",
                 "1"),
       "downstream_connections_total");
    ok(sample_is(txt,
                 "agentgateway_upstream_connect_duration_seconds_bucket{transport=\"tcp\","
                 "le=\"0.0015\"}",
                 "0") &&
           sample_is(txt,
                     "agentgateway_upstream_connect_duration_seconds_bucket{transport=\"tcp\","
                     "le=\"0.0043\"}",
                     "1"),
       "connect buckets");
    ok(sample_is(txt, "agentgateway_log_lines_dropped_total", "3"), "log_lines_dropped_total");
    ok(sample_is(txt, "agentgateway_spans_dropped_total", "0"), "label-less counter shows 0");
    ok(sample_is(txt, "agentgateway_lua_plugin_errors_total{plugin=\"my-plugin\"}", "1"),
       "lua_plugin_errors_total");
    ok(sample_is(txt, "agentgateway_config_reloads_total{outcome=\"success\"}", "1"),
       "config_reloads_total");
    ok(strstr(txt, "# TYPE agentgateway_metrics_series_overflow_total counter\n") != NULL,
       "overflow family declared");
    ok(strstr(txt, "# EOF") == NULL && txt[strlen(txt) - 1] == '\n', "0.0.4: no EOF, ends in \\n");

    rc = promtool(txt, out, sizeof(out));
    if (rc < 0)
        ok(1, "# SKIP promtool not installed");
    else {
        ok(rc == 0, "promtool check metrics accepts the standard families (rc %d)", rc);
        diag(rc, out);
    }

    om = render(m, 1);
    ok(strlen(om) > 6 && strcmp(om + strlen(om) - 6, "# EOF\n") == 0, "OpenMetrics ends # EOF");
    ok(strstr(om, "# TYPE agentgateway_requests counter\n# HELP agentgateway_requests ") != NULL,
       "OM counter family named without _total, TYPE before HELP");
    ok(strstr(om, "# TYPE agentgateway_request_duration_seconds histogram\n# UNIT "
                  "agentgateway_request_duration_seconds seconds\n# HELP ") != NULL,
       "OM UNIT for _seconds");
    ok(strstr(om, "# TYPE agentgateway_response_bytes counter\n# UNIT agentgateway_response_bytes "
                  "bytes\n") != NULL,
       "OM UNIT for counter _bytes");
    ok(strstr(om, "# TYPE agentgateway_build info\n") != NULL &&
           sample_is(om, "agentgateway_build_info{tag=\"" TEST_VERSION "\"}", "1"),
       "OM info family");
    ok(strstr(om, "# UNIT agentgateway_gen_ai_server_request_duration") == NULL,
       "no UNIT when the name lacks the suffix");
    ok(strstr(om, "le=\"1.0\"}") != NULL && strstr(om, "le=\"0.25\"}") != NULL &&
           strstr(om, "le=\"1\"}") == NULL,
       "OM canonical le values");
    rc = promtool_om(om, out, sizeof(out));
    if (rc < 0)
        ok(1, "# SKIP promtool not installed");
    else {
        ok(rc == 0, "promtool's OpenMetrics parser accepts the exposition (rc %d)", rc);
        diag(rc, out);
    }
    ok(sample(om, "agentgateway_requests_total{backend=\"127.0.0.1:8080\",protocol=\"llm\","
                  "method=\"POST\",status=\"200\",reason=\"Upstream\",bind=\"bind/3000\","
                  "gateway=\"default/default\",listener=\"listener0\",route=\"default/route0\","
                  "route_rule=\"unknown\",user=\"alice\"}") != NULL,
       "OM counter sample keeps _total");
    free(om);
    free(txt);

    /* Errors */
    ok(lg_metrics_family(m, LG_METRICS_COUNTER, "requests_total", "", NULL, 0, NULL, 0, &err) ==
           LG_ERR,
       "duplicate family refused: %s", err.msg);
    ok(lg_metrics_family(m, LG_METRICS_GAUGE, "bad-name", "", NULL, 0, NULL, 0, &err) == LG_ERR,
       "bad name refused: %s", err.msg);
    ok(lg_metrics_family(m, LG_METRICS_HISTOGRAM, "h", "", (const char *[]){"le"}, 1, (double[]){1},
                         1, &err) == LG_ERR,
       "histogram label le refused");
    ok(lg_metrics_family(m, LG_METRICS_HISTOGRAM, "h", "", NULL, 0, (double[]){2, 1}, 2, &err) ==
           LG_ERR,
       "decreasing buckets refused");
    ok(lg_metrics_family(m, LG_METRICS_GAUGE, "g", "", (const char *[]){"a", "a"}, 2, NULL, 0,
                         &err) == LG_ERR,
       "repeated label refused");
    ok(lg_metrics_new("bad prefix", 1, 0, &err) == NULL, "bad prefix refused");
    lg_std_metrics_t ids2;
    lg_metrics_t *m2 = lg_metrics_new("x_", 1, 0, NULL);
    ok(lg_metrics_register_standard(m2, &ids2, (const char *[]){"bad label"}, 1, &err) == LG_ERR,
       "bad custom label refused: %s", err.msg);
    lg_metrics_free(m2);
    lg_metrics_free(m);
}

/* ---- Histogram details, gauges, remove, escaping, overflow ---- */

static void test_histogram_gauge(void)
{
    lg_metrics_t *m = lg_metrics_new("", 3, 0, NULL);
    lg_metrics_shard_t *s0 = lg_metrics_shard(m, 0), *s2 = lg_metrics_shard(m, 2),
                       *mn = lg_metrics_shard(m, LG_METRICS_MAIN);
    int h = lg_metrics_family(m, LG_METRICS_HISTOGRAM, "lat_seconds", "Latency", NULL, 0,
                              (double[]){0.1, 1, 10}, 3, NULL);
    int g = lg_metrics_family(m, LG_METRICS_GAUGE, "inflight", "In flight", (const char *[]){"k"},
                              1, NULL, 0, NULL);
    int c = lg_metrics_family(m, LG_METRICS_COUNTER, "cost_total", "Cost", NULL, 0, NULL, 0, NULL);
    char *txt;

    ok(h >= 0 && g >= 0 && c >= 0, "families declared");
    lg_metrics_observe(s0, h, NULL, 0.1); /* le is inclusive */
    lg_metrics_observe(s0, h, NULL, 0.5);
    lg_metrics_observe(s2, h, NULL, 5);
    lg_metrics_observe(s2, h, NULL, 100);
    lg_metrics_observe(s2, h, NULL, NAN); /* ignored */
    lg_metrics_add(s0, h, NULL, 1);       /* wrong type: ignored */
    lg_metrics_add(s0, g, (const char *[]){"a"}, 2);
    lg_metrics_add(s2, g, (const char *[]){"a"}, -0.5);
    lg_metrics_set(mn, g, (const char *[]){"b"}, 7.25);
    lg_metrics_set(mn, g, (const char *[]){"b"}, 7.5);
    lg_metrics_add(s0, c, NULL, 0.25);
    lg_metrics_add(s2, c, NULL, 0.5);
    lg_metrics_add(s2, c, NULL, -1); /* counters never go down */

    txt = render(m, 0);
    ok(sample_is(txt, "lat_seconds_bucket{le=\"0.1\"}", "1"), "bucket 0.1 (inclusive)");
    ok(sample_is(txt, "lat_seconds_bucket{le=\"1\"}", "2"), "bucket 1 cumulative");
    ok(sample_is(txt, "lat_seconds_bucket{le=\"10\"}", "3"), "bucket 10 cumulative");
    ok(sample_is(txt, "lat_seconds_bucket{le=\"+Inf\"}", "4"), "+Inf bucket");
    ok(sample_is(txt, "lat_seconds_sum", "105.6"), "_sum");
    ok(sample_is(txt, "lat_seconds_count", "4"), "_count equals +Inf");
    ok(sample_is(txt, "inflight{k=\"a\"}", "1.5"), "gauge adds summed over shards");
    ok(sample_is(txt, "inflight{k=\"b\"}", "7.5"), "gauge set on main shard");
    ok(sample_is(txt, "cost_total", "0.75"), "float counter, negative add ignored");
    free(txt);

    /* remove(): every spelling */
    ok(lg_metrics_find(m, "lat") == h && lg_metrics_find(m, "lat_seconds") == h,
       "find with and without unit suffix");
    ok(lg_metrics_find(m, "cost") == c && lg_metrics_find(m, "cost_total") == c, "find counter");
    ok(lg_metrics_find(m, "nope") == LG_ERR, "find unknown");
    ok(lg_metrics_remove(m, "lat") == LG_OK, "remove unit-less name");
    ok(lg_metrics_remove(m, "cost_total") == LG_OK, "remove _total name");
    ok(lg_metrics_remove(m, "nope") == LG_ERR, "remove unknown");
    lg_metrics_observe(s0, h, NULL, 0.1);
    txt = render(m, 0);
    ok(strstr(txt, "lat_seconds") == NULL && strstr(txt, "cost") == NULL,
       "removed families not rendered");
    ok(sample_is(txt, "inflight{k=\"a\"}", "1.5"), "other families still rendered");
    free(txt);
    lg_metrics_free(m);

    m = lg_metrics_new("agentgateway_", 1, 0, NULL);
    lg_std_metrics_t ids;
    lg_metrics_register_standard(m, &ids, NULL, 0, NULL);
    ok(lg_metrics_remove(m, "agentgateway_requests_total") == LG_OK, "remove prefixed name");
    ok(lg_metrics_remove(m, "request_duration") == LG_OK, "remove bare unit-less name");
    ok(lg_metrics_remove(m, "build_info") == LG_OK, "remove info by sample name");
    ok(lg_metrics_remove(m, "gen_ai_client_token_usage") == LG_OK, "remove bare name");
    txt = render(m, 0);
    ok(strstr(txt, "agentgateway_requests_total") == NULL &&
           strstr(txt, "agentgateway_request_duration_seconds") == NULL &&
           strstr(txt, "agentgateway_build_info") == NULL &&
           strstr(txt, "agentgateway_gen_ai_client_token_usage") == NULL &&
           strstr(txt, "agentgateway_response_bytes_total") != NULL,
       "removed standard families gone, others present");
    free(txt);
    lg_metrics_free(m);
}

static void test_escaping(void)
{
    lg_metrics_t *m = lg_metrics_new("t_", 1, 0, NULL);
    lg_metrics_shard_t *s = lg_metrics_shard(m, 0);
    int c = lg_metrics_family(m, LG_METRICS_COUNTER, "esc", "Help with \\ and \"q\"\nline",
                              (const char *[]){"v"}, 1, NULL, 0, NULL);
    char *txt, *om, out[4096];
    int rc;

    lg_metrics_add(s, c, (const char *[]){"a\\b\"c\nd"}, 1);
    lg_metrics_add(s, c, (const char *[]){"bad\xff utf8 \xc3\xa9"}, 1);
    txt = render(m, 0);
    ok(sample_is(txt, "t_esc_total{v=\"a\\\\b\\\"c\\nd\"}", "1"), "label value escaped");
    ok(sample_is(txt, "t_esc_total{v=\"bad\xef\xbf\xbd utf8 \xc3\xa9\"}", "1"),
       "invalid UTF-8 replaced, valid kept");
    ok(strstr(txt, "# HELP t_esc_total Help with \\\\ and \"q\"\\nline\n") != NULL,
       "0.0.4 HELP escapes \\ and newline only");
    om = render(m, 1);
    ok(strstr(om, "# HELP t_esc Help with \\\\ and \\\"q\\\"\\nline\n") != NULL,
       "OM HELP escapes quotes too");
    rc = promtool(txt, out, sizeof(out));
    if (rc < 0)
        ok(1, "# SKIP promtool not installed");
    else {
        ok(rc == 0, "promtool accepts escaped output (rc %d)", rc);
        diag(rc, out);
    }
    rc = promtool_om(om, out, sizeof(out));
    if (rc < 0)
        ok(1, "# SKIP promtool not installed");
    else {
        ok(rc == 0, "OpenMetrics parser accepts escaped output (rc %d)", rc);
        diag(rc, out);
    }
    free(om);
    free(txt);
    lg_metrics_free(m);
}

static void test_overflow(void)
{
    lg_metrics_t *m = lg_metrics_new("agentgateway_", 2, 3, NULL);
    lg_metrics_shard_t *s0 = lg_metrics_shard(m, 0), *s1 = lg_metrics_shard(m, 1);
    int c = lg_metrics_family(m, LG_METRICS_COUNTER, "req", "r", (const char *[]){"a", "b"}, 2,
                              NULL, 0, NULL);
    int h = lg_metrics_family(m, LG_METRICS_HISTOGRAM, "tok", "t", (const char *[]){"a"}, 1,
                              (double[]){10}, 1, NULL);
    char *txt, out[4096], name[16];
    int rc;

    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "v%d", i);
        lg_metrics_add(i % 2 ? s1 : s0, c, (const char *[]){name, "x"}, 1);
        lg_metrics_observe(s0, h, (const char *[]){name}, 1);
    }
    lg_metrics_add(s1, c, (const char *[]){"v1", "x"}, 10); /* existing: not folded */
    lg_metrics_add(s0, c, (const char *[]){"v4", "x"}, 1);  /* folded again */
    txt = render(m, 0);
    ok(count_lines(txt, "agentgateway_req_total{") == 4, "3 series + overflow");
    ok(sample_is(txt, "agentgateway_req_total{a=\"v1\",b=\"x\"}", "11"), "existing series grows");
    ok(sample_is(txt, "agentgateway_req_total{a=\"overflow\",b=\"overflow\"}", "3"),
       "overflow series holds folded recordings");
    ok(sample_is(txt, "agentgateway_metrics_series_overflow_total{family=\"req\"}", "3"),
       "overflow counter for req");
    ok(sample_is(txt, "agentgateway_tok_count{a=\"overflow\"}", "2"), "histogram overflow");
    ok(sample_is(txt, "agentgateway_metrics_series_overflow_total{family=\"tok\"}", "2"),
       "overflow counter for tok");
    rc = promtool(txt, out, sizeof(out));
    if (rc < 0)
        ok(1, "# SKIP promtool not installed");
    else {
        ok(rc == 0, "promtool accepts overflow output (rc %d)", rc);
        diag(rc, out);
    }
    free(txt);
    lg_metrics_free(m);
}

static void test_prepared_and_long(void)
{
    lg_metrics_t *m = lg_metrics_new("p_", 1, 0, NULL);
    lg_metrics_shard_t *s = lg_metrics_shard(m, 0);
    int c = lg_metrics_family(m, LG_METRICS_COUNTER, "reqs", NULL, (const char *[]){"a", "b"}, 2,
                              NULL, 0, NULL);
    int h = lg_metrics_family(m, LG_METRICS_HISTOGRAM, "dur_seconds", "d",
                              (const char *[]){"a", "b"}, 2, (double[]){1}, 1, NULL);
    int one =
        lg_metrics_family(m, LG_METRICS_GAUGE, "one", "o", (const char *[]){"a"}, 1, NULL, 0, NULL);
    int info = lg_metrics_family(m, LG_METRICS_INFO, "thing_info", "i", (const char *[]){"v"}, 1,
                                 NULL, 0, NULL);
    lg_metrics_labels_t l;
    char *txt, *big = malloc(3001), series[3100], out[4096];
    int rc;

    lg_metrics_labels_init(&l, (const char *[]){"x", NULL}, 2);
    lg_metrics_add_labels(s, c, &l, 2);
    lg_metrics_observe_labels(s, h, &l, 0.5);
    lg_metrics_add(s, c, (const char *[]){"x", ""}, 1); /* same set through the plain API */
    lg_metrics_set_labels(s, one, &l, 5);               /* label count mismatch: ignored */
    lg_metrics_labels_dispose(&l);
    memset(big, 'z', 3000);
    big[3000] = '\0';
    lg_metrics_labels_init(&l, (const char *[]){big, "y"}, 2); /* longer than the inline buffer */
    lg_metrics_add_labels(s, c, &l, 1);
    lg_metrics_labels_dispose(&l);
    lg_metrics_add(s, c, (const char *[]){big, "y"}, 1);
    lg_metrics_add(s, info, (const char *[]){"1.2"}, 5);

    txt = render(m, 0);
    ok(sample_is(txt, "p_reqs_total{a=\"x\",b=\"unknown\"}", "3"),
       "prepared labels and plain API hit the same series");
    ok(sample_is(txt, "p_dur_seconds_count{a=\"x\",b=\"unknown\"}", "1"),
       "prepared labels reused across families");
    ok(strstr(txt, "p_one{") == NULL, "label count mismatch records nothing");
    snprintf(series, sizeof(series), "p_reqs_total{a=\"%s\",b=\"y\"}", big);
    ok(sample_is(txt, series, "2"), "3000-byte label value: prepared and plain agree");
    ok(sample_is(txt, "p_thing_info{v=\"1.2\"}", "1"), "info renders 1 whatever was added");
    ok(strstr(txt, "# HELP p_reqs_total reqs\n") != NULL, "missing help falls back to the name");
    rc = promtool(txt, out, sizeof(out));
    if (rc < 0)
        ok(1, "# SKIP promtool not installed");
    else {
        ok(rc == 0, "promtool accepts (rc %d)", rc);
        diag(rc, out);
    }
    free(txt);
    free(big);
    lg_metrics_free(m);
}

/* ---- Threads: exact totals with a scraper running ---- */

#define NTHREADS 4
#define NINCR    100000

typedef struct {
    lg_metrics_t *m;
    int worker, c, h;
} targ_t;

static _Atomic int writers_done;

static void *writer(void *p)
{
    targ_t *a = p;
    lg_metrics_shard_t *s = lg_metrics_shard(a->m, a->worker);
    char lbl[16];

    for (int i = 0; i < NINCR; i++) {
        /* 20 label sets shared by all threads, so shards also race to create them. */
        snprintf(lbl, sizeof(lbl), "k%d", i % 20);
        lg_metrics_add(s, a->c, (const char *[]){lbl}, 1);
        lg_metrics_observe(s, a->h, NULL, (double)(i % 3));
    }
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

static void *scraper(void *p)
{
    lg_metrics_t *m = p;
    long scrapes = 0;

    while (atomic_load(&writers_done) < NTHREADS || scrapes < 3) {
        struct evbuffer *b = evbuffer_new();
        lg_metrics_render(m, scrapes & 1, b);
        evbuffer_free(b);
        scrapes++;
    }
    return (void *)scrapes;
}

static void test_threads(void)
{
    lg_metrics_t *m = lg_metrics_new("mt_", NTHREADS, 0, NULL);
    pthread_t th[NTHREADS], sc;
    targ_t args[NTHREADS];
    void *scrapes;
    char *txt, series[64];
    double total = 0;

    int c = lg_metrics_family(m, LG_METRICS_COUNTER, "hits", "h", (const char *[]){"k"}, 1, NULL, 0,
                              NULL);
    int h = lg_metrics_family(m, LG_METRICS_HISTOGRAM, "obs", "o", NULL, 0, (double[]){0.5, 1.5}, 2,
                              NULL);
    pthread_create(&sc, NULL, scraper, m);
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (targ_t){m, i, c, h};
        pthread_create(&th[i], NULL, writer, &args[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    pthread_join(sc, &scrapes);
    ok((long)scrapes >= 3, "scraper ran %ld scrapes concurrently", (long)scrapes);

    txt = render(m, 0);
    for (int k = 0; k < 20; k++) {
        snprintf(series, sizeof(series), "mt_hits_total{k=\"k%d\"}", k);
        const char *v = sample(txt, series);
        total += v ? strtod(v, NULL) : 0;
    }
    ok(total == (double)NTHREADS * NINCR, "exact total after join: %.0f", total);
    ok(sample_is(txt, "mt_hits_total{k=\"k0\"}", "20000"), "per-series exact (k0)");
    ok(count_lines(txt, "mt_hits_total{") == 20, "20 series, no duplicates across shards");
    ok(sample_is(txt, "mt_obs_count", "400000"), "histogram count exact");
    /* i % 3 over 100000: 33334 zeros, 33333 ones, 33333 twos per thread */
    ok(sample_is(txt, "mt_obs_bucket{le=\"0.5\"}", "133336"), "bucket 0.5 exact");
    ok(sample_is(txt, "mt_obs_bucket{le=\"1.5\"}", "266668"), "bucket 1.5 exact");
    ok(sample_is(txt, "mt_obs_sum", "399996"), "sum exact");
    free(txt);
    lg_metrics_free(m);
}

int main(void)
{
    test_numbers();
    test_negotiate();
    test_standard();
    test_histogram_gauge();
    test_escaping();
    test_overflow();
    test_prepared_and_long();
    test_threads();
    return test_done();
}
