/* test_otlp.c -- span model, protobuf encoding round trip, endpoint and resource
 * resolution, queue bound and drop counting, bounded shutdown.
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/otlp.c"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

typedef Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req_t;

/* ---- Reference encoder: protobuf-c's generic packer, to check encode() byte for byte ----
 * A span's attributes are bytes already (otlp.c encodes them as they are added): protobuf-c
 * unpacks them into KeyValue structs, which the packer then writes again. Returns the
 * unpacked holder, for the caller to free after packing. */

static pbspan_t *span_to_pb(const lg_span_t *sp, pbspan_t *out, pbstatus_t *st)
{
    static const pbspan_t span_init = OPENTELEMETRY__PROTO__TRACE__V1__SPAN__INIT;
    static const pbstatus_t status_init = OPENTELEMETRY__PROTO__TRACE__V1__STATUS__INIT;

    *out = span_init;
    out->trace_id.data = (uint8_t *)sp->trace_id;
    out->trace_id.len = sizeof(sp->trace_id);
    out->span_id.data = (uint8_t *)sp->span_id;
    out->span_id.len = sizeof(sp->span_id);
    if (!lg_trace_id_is_zero(sp->parent_span_id, sizeof(sp->parent_span_id))) {
        out->parent_span_id.data = (uint8_t *)sp->parent_span_id;
        out->parent_span_id.len = sizeof(sp->parent_span_id);
    }
    if (sp->trace_state)
        out->trace_state = (char *)sp->trace_state;
    out->flags = sp->flags;
    out->name = (char *)span_name(sp);
    out->kind = (Opentelemetry__Proto__Trace__V1__Span__SpanKind)sp->kind;
    out->start_time_unix_nano = sp->start_ns;
    out->end_time_unix_nano = sp->end_ns;
    pbspan_t *held = NULL;
    if (sp->_kvlen) {
        held = opentelemetry__proto__trace__v1__span__unpack(NULL, sp->_kvlen, sp->_kv);
        if (!held)
            abort(); /* the attribute bytes do not parse: the test fails loudly */
        out->n_attributes = held->n_attributes;
        out->attributes = held->attributes;
    }
    if (sp->status_code != LG_SPAN_STATUS_UNSET || sp->status_message) {
        *st = status_init;
        st->code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)sp->status_code;
        if (sp->status_message)
            st->message = (char *)sp->status_message;
        out->status = st;
    }
    return held;
}

/* Serializes spans[0..n) under `res` into a malloc'd buffer that starts with `prefix`
 * spare bytes (room for the gRPC frame header). Sets *len to the message length. */
static uint8_t *ref_encode(lg_span_t *res, lg_span_t *const *spans, size_t n, size_t prefix,
                           size_t *len)
{
    static const scope_t scope_init = OPENTELEMETRY__PROTO__COMMON__V1__INSTRUMENTATION_SCOPE__INIT;
    static const resource_t res_init = OPENTELEMETRY__PROTO__RESOURCE__V1__RESOURCE__INIT;
    static const scope_spans_t ss_init = OPENTELEMETRY__PROTO__TRACE__V1__SCOPE_SPANS__INIT;
    static const resource_spans_t rs_init = OPENTELEMETRY__PROTO__TRACE__V1__RESOURCE_SPANS__INIT;
    static const request_t req_init =
        OPENTELEMETRY__PROTO__COLLECTOR__TRACE__V1__EXPORT_TRACE_SERVICE_REQUEST__INIT;
    scope_t scope = scope_init;
    resource_t resource = res_init;
    scope_spans_t ss = ss_init, *ssp = &ss;
    resource_spans_t rs = rs_init, *rsp = &rs;
    request_t req = req_init;
    pbspan_t *pb = lg_xcalloc(n ? n : 1, sizeof(*pb));
    pbspan_t **pbp = lg_xcalloc(n ? n : 1, sizeof(*pbp));
    pbstatus_t *st = lg_xcalloc(n ? n : 1, sizeof(*st));
    pbspan_t **held = lg_xcalloc(n ? n : 1, sizeof(*held));
    uint8_t *buf;

    for (size_t i = 0; i < n; i++) {
        held[i] = span_to_pb(spans[i], &pb[i], &st[i]);
        pbp[i] = &pb[i];
    }
    scope.name = "lunagate";
    scope.version = LG_VERSION;
    resource.n_attributes = res->_nattrs;
    resource.attributes = (kv_t **)res->_attrs;
    ss.scope = &scope;
    ss.n_spans = n;
    ss.spans = pbp;
    rs.resource = &resource;
    rs.n_scope_spans = 1;
    rs.scope_spans = &ssp;
    req.n_resource_spans = 1;
    req.resource_spans = &rsp;
    *len =
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__get_packed_size(
            &req);
    buf = lg_xmalloc(prefix + *len);
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__pack(&req,
                                                                                   buf + prefix);
    for (size_t i = 0; i < n; i++)
        if (held[i])
            opentelemetry__proto__trace__v1__span__free_unpacked(held[i], NULL);
    free(held);
    free(pb);
    free(pbp);
    free(st);
    return buf;
}

static const kv_t *find_attr(kv_t **kvs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kvs[i]->key, key) == 0)
            return kvs[i];
    return NULL;
}

static int has_case(const kv_t *kv, int c)
{
    return kv && kv->value && (int)kv->value->value_case == c;
}

static char *url_for(const char *endpoint, int protocol, const char *path, int as_is)
{
    static char out[512];
    exporter_t x;
    lg_err_t err;

    memset(&x, 0, sizeof(x));
    x.protocol = protocol;
    if (resolve_url(&x, endpoint, as_is, path, &err) != LG_OK)
        snprintf(out, sizeof(out), "ERR %.200s", err.msg);
    else
        snprintf(out, sizeof(out), "%s|%d", x.url, x.protocol);
    free(x.url);
    free(x.log_url);
    return out;
}

static int64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A TCP listener that never accepts: connects succeed, requests hang. */
static int blackhole(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 16) != 0)
        return -1;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A loopback port with nothing listening. */
static int dead_port(void)
{
    int port = 0, fd = blackhole(&port);
    close(fd);
    return port;
}

static lg_span_t *sample_span(int i)
{
    lg_span_t *sp = lg_span_new();
    static const char *const fr[] = {"stop", "length"};
    static const int64_t ints[] = {1, -2, 3000000000LL};

    memset(sp->trace_id, 0xab, 16);
    memset(sp->span_id, i + 1, 8);
    lg_span_set_name(sp, "POST /v1/chat/completions", 25);
    sp->kind = LG_SPAN_KIND_SERVER;
    sp->start_ns = 1700000000000000000ULL;
    sp->end_ns = 1700000000250000000ULL;
    sp->flags = LG_SPAN_FLAG_HAS_IS_REMOTE | LG_SPAN_FLAG_IS_REMOTE | 0x01;
    lg_span_attr_str(sp, "gen_ai.request.model", "gpt-4o-mini", 11);
    lg_span_attr_int(sp, "gen_ai.usage.input_tokens", 42);
    lg_span_attr_int(sp, "zero", 0);
    lg_span_attr_double(sp, "gen_ai.request.temperature", 0.7);
    lg_span_attr_bool(sp, "gen_ai.response.streaming", 1);
    lg_span_attr_bool(sp, "falsy", 0);
    lg_span_attr_str(sp, "empty", "", 0);
    lg_span_attr_str_array(sp, "gen_ai.response.finish_reasons", fr, 2);
    lg_span_attr_int_array(sp, "ints", ints, 3);
    return sp;
}

/* ---- A minimal OTLP/HTTP receiver thread: HTTP/1.1 keep-alive, one connection at a
 * time, decodes each body with protobuf-c and marks span ids as seen. ---- */

#define MP_THREADS 4
#define MP_PER     2500

typedef struct {
    int fd, port;
    _Atomic int stop;
    _Atomic size_t requests, spans, dups, bad;
    unsigned char seen[MP_THREADS * MP_PER];
    pthread_t th;
} mini_t;

static int read_some(mini_t *m, int c, char *buf, size_t cap, size_t *len)
{
    for (;;) {
        ssize_t n = recv(c, buf + *len, cap - 1 - *len, 0);
        if (n > 0) {
            *len += (size_t)n;
            buf[*len] = '\0'; /* strcasestr below needs the terminator */
            return 0;
        }
        if (n == 0)
            return -1;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && !atomic_load(&m->stop))
            continue;
        return -1;
    }
}

static void mini_request(mini_t *m, const uint8_t *body, size_t len)
{
    req_t *r = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
        NULL, len, body);
    atomic_fetch_add(&m->requests, 1);
    if (r == NULL) {
        atomic_fetch_add(&m->bad, 1);
        return;
    }
    for (size_t i = 0; i < r->n_resource_spans; i++)
        for (size_t j = 0; j < r->resource_spans[i]->n_scope_spans; j++) {
            scope_spans_t *ss = r->resource_spans[i]->scope_spans[j];
            for (size_t k = 0; k < ss->n_spans; k++) {
                const uint8_t *id = ss->spans[k]->span_id.data;
                size_t idx = (size_t)id[0] * MP_PER + ((size_t)id[6] << 8 | id[7]);
                if (ss->spans[k]->span_id.len != 8 || idx >= sizeof(m->seen)) {
                    atomic_fetch_add(&m->bad, 1);
                    continue;
                }
                if (m->seen[idx]++)
                    atomic_fetch_add(&m->dups, 1);
                atomic_fetch_add(&m->spans, 1);
            }
        }
    opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(r,
                                                                                            NULL);
}

static void mini_conn(mini_t *m, int c)
{
    static char buf[1 << 22];
    size_t len = 0;
    struct timeval tv = {0, 100000};

    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    for (;;) {
        char *end;
        while ((end = memmem(buf, len, "\r\n\r\n", 4)) == NULL)
            if (len + 1 >= sizeof(buf) || read_some(m, c, buf, sizeof(buf), &len) != 0)
                return;
        size_t hdr = (size_t)(end - buf) + 4, clen = 0;
        char *cl = strcasestr(buf, "content-length:");
        if (cl && cl < end)
            clen = (size_t)strtoul(cl + 15, NULL, 10);
        while (len < hdr + clen)
            if (len + 1 >= sizeof(buf) || read_some(m, c, buf, sizeof(buf), &len) != 0)
                return;
        mini_request(m, (const uint8_t *)buf + hdr, clen);
        static const char ok200[] = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                                    "Content-Length: 0\r\n\r\n";
        if (send(c, ok200, sizeof(ok200) - 1, MSG_NOSIGNAL) < 0)
            return;
        memmove(buf, buf + hdr + clen, len - hdr - clen);
        len -= hdr + clen;
        buf[len] = '\0';
    }
}

static void *mini_main(void *arg)
{
    mini_t *m = arg;
    while (!atomic_load(&m->stop)) {
        struct pollfd p = {m->fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept(m->fd, NULL, NULL);
        if (c < 0)
            continue;
        mini_conn(m, c);
        close(c);
    }
    return NULL;
}

typedef struct {
    int t;
    _Atomic size_t *ok;
} producer_t;

static void *producer(void *arg)
{
    producer_t *p = arg;
    for (int i = 0; i < MP_PER; i++) {
        lg_span_t *sp = sample_span(0);
        sp->span_id[0] = (uint8_t)p->t;
        sp->span_id[6] = (uint8_t)(i >> 8);
        sp->span_id[7] = (uint8_t)i;
        if (lg_otlp_submit(sp) == LG_OK)
            atomic_fetch_add(p->ok, 1);
        if (i % 64 == 0)
            usleep(200);
    }
    return NULL;
}

int main(void)
{
    /* ---- encode and decode back ---- */
    {
        lg_span_t *sp = sample_span(0), *child = lg_span_new();
        lg_span_t *spans[2];
        size_t len;
        uint8_t *buf;
        req_t *r;

        /* force arena growth past the first chunk */
        for (int i = 0; i < 60; i++) {
            char k[32];
            snprintf(k, sizeof(k), "filler.%d", i);
            lg_span_attr_str(sp, k, "0123456789012345678901234567890123456789", 40);
        }
        /* the literal-key writers: one-byte lengths up to 121 key+value bytes, then the
         * general path */
        char big[300];
        memset(big, 'v', sizeof(big));
        lg_span_lit_str(sp, "lit.short", "abc", 3);
        lg_span_lit_str(sp, "lit.empty", NULL, 0);
        lg_span_lit_str(sp, "lit.edge1", big, 112); /* 9 + 112 = 121 */
        lg_span_lit_str(sp, "lit.edge2", big, 113); /* 122 */
        lg_span_lit_str(sp, "lit.long", big, sizeof(big));
        lg_span_lit_int(sp, "lit.int", -5);
        lg_span_set_status(sp, LG_SPAN_STATUS_ERROR, "upstream timed out", 18);
        lg_span_set_trace_state(sp, "rojo=00f067aa0ba902b7", 21);
        memcpy(child->trace_id, sp->trace_id, 16);
        memset(child->span_id, 0x77, 8);
        memcpy(child->parent_span_id, sp->span_id, 8);
        child->kind = LG_SPAN_KIND_CLIENT;
        lg_span_set_name(child, "POST api.openai.com:443", 23);
        /* a fresh span has no attribute room: the first literal-key write takes the general
         * path and makes room, the second the inline one */
        lg_span_lit_str(child, "server.address", "api.openai.com", 14);
        int inline_room = child->_kvcap >= child->_kvlen + 8 + 9 + 3;
        lg_span_lit_str(child, "net.extra", "abc", 3);
        lg_span_lit_int(child, "server.port", 443);
        lg_span_lit_int(child, "neg.port", -443);
        spans[0] = sp;
        spans[1] = child;
        buf = lg_otlp_encode(spans, 2, &len);
        r = opentelemetry__proto__collector__trace__v1__export_trace_service_request__unpack(
            NULL, len, buf);
        ok(r != NULL, "encoded request unpacks (%zu bytes)", len);
        if (r == NULL)
            return test_done();
        ok(r->n_resource_spans == 1 && r->resource_spans[0]->n_scope_spans == 1,
           "one resource, one scope");
        resource_spans_t *rs = r->resource_spans[0];
        const kv_t *svc =
            find_attr(rs->resource->attributes, rs->resource->n_attributes, "service.name");
        ok(svc && has_case(svc, 1) && strcmp(svc->value->string_value, "lunagate") == 0,
           "resource service.name = lunagate");
        scope_spans_t *ss = rs->scope_spans[0];
        ok(ss->scope && strcmp(ss->scope->name, "lunagate") == 0, "scope name");
        ok(ss->n_spans == 2, "two spans");
        pbspan_t *s = ss->spans[0], *c = ss->spans[1];
        ok(s->trace_id.len == 16 && memcmp(s->trace_id.data, sp->trace_id, 16) == 0, "trace id");
        ok(s->span_id.len == 8 && memcmp(s->span_id.data, sp->span_id, 8) == 0, "span id");
        ok(s->parent_span_id.len == 0, "root span has empty parent_span_id");
        ok(c->parent_span_id.len == 8 && memcmp(c->parent_span_id.data, sp->span_id, 8) == 0,
           "child parent_span_id");
        ok_streq(s->name, "POST /v1/chat/completions", "name");
        ok(s->kind == 2 && c->kind == 3, "kinds SERVER and CLIENT");
        ok(s->start_time_unix_nano == 1700000000000000000ULL &&
               s->end_time_unix_nano == 1700000000250000000ULL,
           "timestamps");
        ok(s->flags == 0x301, "flags 0x301");
        ok_streq(s->trace_state, "rojo=00f067aa0ba902b7", "trace_state");
        ok(s->status && s->status->code == 2 &&
               strcmp(s->status->message, "upstream timed out") == 0,
           "error status with message");
        ok(c->status == NULL, "unset status omitted");
        ok(s->n_attributes == 9 + 60 + 6, "attribute count %zu", s->n_attributes);
        const kv_t *a;
        a = find_attr(s->attributes, s->n_attributes, "lit.short");
        ok(has_case(a, 1) && strcmp(a->value->string_value, "abc") == 0, "literal-key string");
        a = find_attr(s->attributes, s->n_attributes, "lit.empty");
        ok(has_case(a, 1) && a->value->string_value[0] == '\0', "literal-key empty string");
        static const char *const edges[] = {"lit.edge1", "lit.edge2", "lit.long"};
        static const size_t edge_len[] = {112, 113, 300};
        for (int e = 0; e < 3; e++) {
            a = find_attr(s->attributes, s->n_attributes, edges[e]);
            ok(has_case(a, 1) && strlen(a->value->string_value) == edge_len[e] &&
                   strspn(a->value->string_value, "v") == edge_len[e],
               "literal-key string of %zu bytes", edge_len[e]);
        }
        a = find_attr(s->attributes, s->n_attributes, "lit.int");
        ok(has_case(a, 3) && a->value->int_value == -5, "literal-key int");
        a = find_attr(s->attributes, s->n_attributes, "gen_ai.request.model");
        ok(has_case(a, 1) && strcmp(a->value->string_value, "gpt-4o-mini") == 0, "string attr");
        a = find_attr(s->attributes, s->n_attributes, "gen_ai.usage.input_tokens");
        ok(has_case(a, 3) && a->value->int_value == 42, "int attr stays int_value");
        a = find_attr(s->attributes, s->n_attributes, "zero");
        ok(has_case(a, 3) && a->value->int_value == 0, "int 0 still written (oneof presence)");
        a = find_attr(s->attributes, s->n_attributes, "gen_ai.request.temperature");
        ok(has_case(a, 4) && a->value->double_value == 0.7, "double attr");
        a = find_attr(s->attributes, s->n_attributes, "gen_ai.response.streaming");
        ok(has_case(a, 2) && a->value->bool_value, "bool attr true");
        a = find_attr(s->attributes, s->n_attributes, "falsy");
        ok(has_case(a, 2) && !a->value->bool_value, "bool false still written");
        a = find_attr(s->attributes, s->n_attributes, "empty");
        ok(has_case(a, 1) && a->value->string_value[0] == '\0', "empty string still written");
        a = find_attr(s->attributes, s->n_attributes, "gen_ai.response.finish_reasons");
        ok(has_case(a, 5) && a->value->array_value->n_values == 2 &&
               (int)a->value->array_value->values[0]->value_case == 1 &&
               strcmp(a->value->array_value->values[1]->string_value, "length") == 0,
           "string array stays array_value");
        a = find_attr(s->attributes, s->n_attributes, "ints");
        ok(has_case(a, 5) && a->value->array_value->n_values == 3 &&
               (int)a->value->array_value->values[2]->value_case == 3 &&
               a->value->array_value->values[2]->int_value == 3000000000LL &&
               a->value->array_value->values[1]->int_value == -2,
           "int array stays array of int_value");
        a = find_attr(s->attributes, s->n_attributes, "filler.59");
        ok(has_case(a, 1) && strlen(a->value->string_value) == 40, "attrs past the first chunk");
        ok_streq(c->name, "POST api.openai.com:443", "child name");
        a = find_attr(c->attributes, c->n_attributes, "server.address");
        const kv_t *a2 = find_attr(c->attributes, c->n_attributes, "net.extra");
        const kv_t *a3 = find_attr(c->attributes, c->n_attributes, "server.port");
        const kv_t *a4 = find_attr(c->attributes, c->n_attributes, "neg.port");
        ok(has_case(a3, 3) && a3->value->int_value == 443 && has_case(a4, 3) &&
               a4->value->int_value == -443,
           "literal-key ints through the inline path (two-byte and ten-byte varints)");
        ok(inline_room && c->n_attributes == 4 && has_case(a, 1) &&
               strcmp(a->value->string_value, "api.openai.com") == 0 && has_case(a2, 1) &&
               strcmp(a2->value->string_value, "abc") == 0,
           "literal-key strings through the general and the inline path");
        opentelemetry__proto__collector__trace__v1__export_trace_service_request__free_unpacked(
            r, NULL);
        free(buf);
        lg_span_free(sp);
        lg_span_free(child);
        lg_span_free(NULL);
    }

    /* ---- the hand-written encoder matches protobuf-c byte for byte ---- */
    {
        lg_span_t *sp[6];
        lg_span_t *res = resource_build(NULL);
        static const char *const none[1] = {NULL};
        sp[0] = sample_span(1);
        sp[1] = lg_span_new(); /* all defaults: empty name -> "unknown", no times, no flags */
        sp[2] = sample_span(2);
        lg_span_set_status(sp[2], LG_SPAN_STATUS_OK, NULL, 0);
        sp[3] = sample_span(3);
        lg_span_set_status(sp[3], LG_SPAN_STATUS_UNSET, "message only", 12);
        memset(sp[3]->parent_span_id, 0x42, 8);
        sp[4] = sample_span(4);
        lg_span_attr_str_array(sp[4], "empty.array", none, 0);
        lg_span_attr_int(sp[4], "neg", INT64_MIN);
        lg_span_attr_double(sp[4], "negzero", -0.0);
        lg_span_set_trace_state(sp[4], "", 0);
        sp[5] = lg_span_new();
        for (int i = 0; i < 300; i++) { /* long lengths: multi-byte varints */
            char k[16];
            snprintf(k, sizeof(k), "k%d", i);
            lg_span_attr_str(sp[5], k,
                             "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv", 59);
        }
        uint8_t *keep = NULL; /* the exporter's reused buffer, grown as n grows */
        size_t keep_cap = 0;
        for (size_t n = 0; n <= 6; n++) {
            size_t la, lb, lk;
            uint8_t *a = encode(res, sp, n, 3, &la, NULL, NULL),
                    *b = ref_encode(res, sp, n, 3, &lb);
            uint8_t *k = encode(res, sp, n, 3, &lk, &keep, &keep_cap);
            ok(la == lb && memcmp(a + 3, b + 3, la) == 0 && k == keep && lk == lb &&
                   memcmp(k + 3, b + 3, lk) == 0,
               "encode matches protobuf-c for %zu spans (%zu vs %zu bytes), fresh and reused "
               "buffer",
               n, la, lb);
            free(a);
            free(b);
        }
        free(keep);
        for (int i = 0; i < 6; i++)
            lg_span_free(sp[i]);
        lg_span_free(res);
    }

    /* ---- endpoint resolution ---- */
    ok_streq(url_for("https://us.cloud.langfuse.com/api/public/otel", LG_OTLP_HTTP, NULL, 0),
             "https://us.cloud.langfuse.com/api/public/otel/v1/traces|2",
             "HTTP base URL gets /v1/traces appended (Langfuse)");
    ok_streq(url_for("http://127.0.0.1:4318/", LG_OTLP_HTTP, NULL, 0),
             "http://127.0.0.1:4318/v1/traces|2", "trailing slash not doubled");
    ok_streq(url_for("http://127.0.0.1:6006", LG_OTLP_HTTP, "/custom/traces", 0),
             "http://127.0.0.1:6006/custom/traces|2", "path replaces the endpoint path");
    ok_streq(url_for("http://h:4318/exact/path", LG_OTLP_HTTP, NULL, 1),
             "http://h:4318/exact/path|2", "as-is endpoint");
    ok_streq(url_for("grpc://collector", LG_OTLP_DEFAULT, NULL, 0),
             "http://collector:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export|1",
             "grpc:// is h2c on 4317 by default");
    ok_streq(url_for("localhost:4317", LG_OTLP_GRPC, NULL, 0),
             "http://localhost:4317/opentelemetry.proto.collector.trace.v1.TraceService/Export|1",
             "host:port form");
    ok_streq(
        url_for("https://otel.example.com/base", LG_OTLP_GRPC, NULL, 0),
        "https://otel.example.com/opentelemetry.proto.collector.trace.v1.TraceService/Export|1",
        "gRPC uses the service path");
    ok(strncmp(url_for("ftp://x", LG_OTLP_HTTP, NULL, 0), "ERR", 3) == 0, "bad scheme rejected");

    /* ---- resource from the environment ---- */
    {
        lg_otlp_opts_t o;
        const char *ra[] = {"deployment.environment", "prod"};
        memset(&o, 0, sizeof(o));
        setenv("OTEL_RESOURCE_ATTRIBUTES", "team=ai%20platform, service.name=fromattrs,x=1", 1);
        setenv("POD_NAME", "lunagate-7d9f", 1);
        setenv("POD_NAMESPACE", "gateways", 1);
        setenv("NODE_NAME", "node-3", 1);
        o.resource_attrs = ra;
        o.nresource_attrs = 1;
        lg_span_t *res = resource_build(&o);
        kv_t **kv = (kv_t **)res->_attrs;
        size_t n = res->_nattrs;
        ok(strcmp(find_attr(kv, n, "service.name")->value->string_value, "fromattrs") == 0,
           "OTEL_RESOURCE_ATTRIBUTES service.name");
        ok(strcmp(find_attr(kv, n, "team")->value->string_value, "ai platform") == 0,
           "percent-decoded, trimmed value");
        ok(strcmp(find_attr(kv, n, "k8s.pod.name")->value->string_value, "lunagate-7d9f") == 0 &&
               strcmp(find_attr(kv, n, "k8s.namespace.name")->value->string_value, "gateways") ==
                   0 &&
               strcmp(find_attr(kv, n, "k8s.node.name")->value->string_value, "node-3") == 0,
           "Kubernetes downward-API attributes");
        ok(strcmp(find_attr(kv, n, "deployment.environment")->value->string_value, "prod") == 0,
           "option resource attributes");
        lg_span_free(res);
        setenv("OTEL_SERVICE_NAME", "svc-env", 1);
        res = resource_build(&o);
        ok(strcmp(
               find_attr((kv_t **)res->_attrs, res->_nattrs, "service.name")->value->string_value,
               "svc-env") == 0,
           "OTEL_SERVICE_NAME beats OTEL_RESOURCE_ATTRIBUTES");
        size_t count = 0;
        for (size_t i = 0; i < res->_nattrs; i++)
            count += strcmp(((kv_t *)res->_attrs[i])->key, "service.name") == 0;
        ok(count == 1, "resource keys stay unique");
        lg_span_free(res);
        o.service_name = "svc-opt";
        res = resource_build(&o);
        ok(strcmp(
               find_attr((kv_t **)res->_attrs, res->_nattrs, "service.name")->value->string_value,
               "svc-opt") == 0,
           "option service_name wins");
        lg_span_free(res);
        o.no_env = 1;
        o.service_name = NULL;
        res = resource_build(&o);
        ok(find_attr((kv_t **)res->_attrs, res->_nattrs, "k8s.pod.name") == NULL &&
               strcmp(find_attr((kv_t **)res->_attrs, res->_nattrs, "service.name")
                          ->value->string_value,
                      "lunagate") == 0,
           "no_env ignores the environment");
        lg_span_free(res);
        unsetenv("OTEL_RESOURCE_ATTRIBUTES");
        unsetenv("OTEL_SERVICE_NAME");
    }

    /* ---- queue bound: drops are counted, submit never blocks ---- */
    {
        lg_otlp_opts_t o;
        lg_err_t err;
        char ep[64];
        memset(&o, 0, sizeof(o));
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", dead_port());
        o.endpoint = ep;
        o.protocol = LG_OTLP_HTTP;
        o.queue_max = 16;
        o.batch_max = 1000;
        o.batch_interval_ms = 60000; /* nothing leaves the queue during the test */
        o.no_env = 1;
        uint64_t d0 = lg_otlp_dropped();
        ok(lg_otlp_start(&o, &err) == LG_OK, "exporter starts");
        ok(lg_otlp_start(&o, &err) == LG_ERR, "second start refused");
        int queued = 0, again = 0;
        int64_t t0 = lg_mono_us();
        for (int i = 0; i < 100; i++) {
            int rc = lg_otlp_submit(sample_span(i));
            queued += rc == LG_OK;
            again += rc == LG_AGAIN;
        }
        int64_t took = lg_mono_us() - t0;
        ok(queued == 16 && again == 84, "queue holds 16, drops 84 (%d/%d)", queued, again);
        ok(lg_otlp_dropped() - d0 == 84, "drops counted");
        ok(took < 200000, "100 submits took %lld us", (long long)took);
        t0 = lg_mono_us();
        lg_otlp_stop(200);
        took = lg_mono_us() - t0;
        ok(took < 1500000, "stop with a dead endpoint returned in %lld ms", (long long)took / 1000);
        lg_otlp_stats_t st;
        lg_otlp_stats(&st);
        ok(st.exported == 0 && lg_otlp_dropped() - d0 == 100,
           "every span accounted as dropped (%llu)", (unsigned long long)(lg_otlp_dropped() - d0));
        ok(lg_otlp_submit(lg_span_new()) == LG_DECLINED, "submit after stop declined");
    }

    /* ---- waiting for a retry costs no CPU ---- */
    {
        lg_otlp_opts_t o;
        lg_err_t err;
        char ep[64];
        memset(&o, 0, sizeof(o));
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", dead_port());
        o.endpoint = ep;
        o.protocol = LG_OTLP_GRPC;
        o.batch_interval_ms = 10;
        o.no_env = 1;
        ok(lg_otlp_start(&o, &err) == LG_OK, "exporter starts against a dead port");
        lg_otlp_submit(sample_span(1));
        usleep(100000); /* first attempt failed; the batch now waits >= 250 ms */
        int64_t c0 = cpu_us();
        usleep(200000);
        ok(cpu_us() - c0 < 15000, "no busy loop during backoff (%lld us CPU)",
           (long long)(cpu_us() - c0));
        lg_otlp_stats_t st;
        lg_otlp_stats(&st);
        ok(st.batches_sent >= 1 && st.batches_sent <= 3, "backoff spaced the attempts (%llu)",
           (unsigned long long)st.batches_sent);
        lg_otlp_stop(0);
    }

    /* ---- stop while a request hangs: bounded by flush_ms ---- */
    {
        lg_otlp_opts_t o;
        lg_err_t err;
        char ep[64];
        int port = 0, fd = blackhole(&port);
        memset(&o, 0, sizeof(o));
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
        o.endpoint = ep;
        o.protocol = LG_OTLP_GRPC;
        o.batch_interval_ms = 20;
        o.timeout_ms = 10000;
        o.no_env = 1;
        ok(fd >= 0 && lg_otlp_start(&o, &err) == LG_OK, "exporter starts against a black hole");
        for (int i = 0; i < 10; i++)
            lg_otlp_submit(sample_span(i));
        int64_t c0 = cpu_us();
        usleep(150000); /* the batch is now in flight, waiting for a reply */
        ok(cpu_us() - c0 < 15000, "no busy loop while a request hangs (%lld us CPU)",
           (long long)(cpu_us() - c0));
        lg_otlp_stats_t st;
        lg_otlp_stats(&st);
        ok(st.batches_sent >= 1, "a batch was sent");
        int64_t t0 = lg_mono_us();
        lg_otlp_stop(300);
        int64_t took = lg_mono_us() - t0;
        ok(took >= 250000 && took < 1500000, "stop cancelled the hanging export after %lld ms",
           (long long)took / 1000);
        close(fd);
    }

    /* ---- many producers, one exporter, a real HTTP receiver: nothing lost or doubled ---- */
    {
        static mini_t m;
        lg_otlp_opts_t o;
        lg_err_t err;
        char ep[64];
        pthread_t th[MP_THREADS];
        producer_t pr[MP_THREADS];
        _Atomic size_t accepted = 0;
        lg_otlp_stats_t before, after;

        m.fd = blackhole(&m.port);
        pthread_create(&m.th, NULL, mini_main, &m);
        memset(&o, 0, sizeof(o));
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", m.port);
        o.endpoint = ep;
        o.protocol = LG_OTLP_HTTP;
        o.queue_max = 16384; /* room for everything: this test wants zero drops */
        o.batch_max = 256;
        o.batch_interval_ms = 20;
        o.no_env = 1;
        lg_otlp_stats(&before);
        ok(lg_otlp_start(&o, &err) == LG_OK, "exporter starts against the C receiver");
        for (int t = 0; t < MP_THREADS; t++) {
            pr[t].t = t;
            pr[t].ok = &accepted;
            pthread_create(&th[t], NULL, producer, &pr[t]);
        }
        for (int t = 0; t < MP_THREADS; t++)
            pthread_join(th[t], NULL);
        lg_otlp_stop(5000);
        lg_otlp_stats(&after);
        atomic_store(&m.stop, 1);
        pthread_join(m.th, NULL);
        close(m.fd);
        size_t total = MP_THREADS * MP_PER, missing = 0;
        for (size_t i = 0; i < total; i++)
            missing += m.seen[i] == 0;
        ok(atomic_load(&accepted) == total, "all %zu submits accepted (%zu)", total,
           atomic_load(&accepted));
        ok(after.exported - before.exported == total, "exporter counted %llu exported",
           (unsigned long long)(after.exported - before.exported));
        ok(atomic_load(&m.spans) == total && missing == 0 && atomic_load(&m.dups) == 0 &&
               atomic_load(&m.bad) == 0,
           "receiver saw every span once (%zu spans, %zu missing, %zu dups, %zu bad, %zu reqs)",
           atomic_load(&m.spans), missing, atomic_load(&m.dups), atomic_load(&m.bad),
           atomic_load(&m.requests));
        ok(atomic_load(&m.requests) >= total / 256, "batched: %zu requests",
           atomic_load(&m.requests));
    }

    /* ---- queue bound is exact under concurrent producers ---- */
    {
        lg_otlp_opts_t o;
        lg_err_t err;
        char ep[64];
        pthread_t th[MP_THREADS];
        producer_t pr[MP_THREADS];
        _Atomic size_t accepted = 0;
        uint64_t d0 = lg_otlp_dropped();

        memset(&o, 0, sizeof(o));
        snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", dead_port());
        o.endpoint = ep;
        o.protocol = LG_OTLP_HTTP;
        o.queue_max = 1024;
        o.batch_max = 1 << 20; /* never a full batch: nothing is consumed */
        o.batch_interval_ms = 60000;
        o.no_env = 1;
        ok(lg_otlp_start(&o, &err) == LG_OK, "exporter starts");
        for (int t = 0; t < MP_THREADS; t++) {
            pr[t].t = t;
            pr[t].ok = &accepted;
            pthread_create(&th[t], NULL, producer, &pr[t]);
        }
        for (int t = 0; t < MP_THREADS; t++)
            pthread_join(th[t], NULL);
        ok(atomic_load(&accepted) == 1024, "exactly the queue size accepted (%zu)",
           atomic_load(&accepted));
        ok(lg_otlp_dropped() - d0 == MP_THREADS * MP_PER - 1024, "the rest counted as drops");
        lg_otlp_stop(0);
        ok(lg_otlp_dropped() - d0 == MP_THREADS * MP_PER, "leftovers counted at stop");
    }

    /* ---- headers ---- */
    {
        exporter_t x;
        memset(&x, 0, sizeof(x));
        add_header(&x, "Authorization: Basic c2VjcmV0");
        add_header(&x, "no-colon");
        add_header(&x, "X-Evil: a\r\nInjected: 1");
        kv_list_each("x-a=1, x-b = two%2Cthree ,bad", env_header_cb, &x);
        char all[512] = "";
        for (struct curl_slist *l = x.hdrs; l; l = l->next) {
            strcat(all, l->data);
            strcat(all, "|");
        }
        ok_streq(all, "Authorization: Basic c2VjcmV0|x-a: 1|x-b: two,three|",
                 "headers validated; env list parsed");
        curl_slist_free_all(x.hdrs);
        memset(&x, 0, sizeof(x));
        env_headers(&x, " {\"Authorization\": \"Basic YTpi\", \"x-q\":\"a\\\"b\"}");
        all[0] = '\0';
        for (struct curl_slist *l = x.hdrs; l; l = l->next) {
            strcat(all, l->data);
            strcat(all, "|");
        }
        ok_streq(all, "Authorization: Basic YTpi|x-q: a\"b|", "JSON headers (OTLP_HEADERS form)");
        curl_slist_free_all(x.hdrs);
        memset(&x, 0, sizeof(x));
        env_headers(&x, "{\"a\": 1}");
        ok(x.hdrs == NULL, "non-string JSON header rejected");
        curl_slist_free_all(x.hdrs);
    }
    return test_done();
}
