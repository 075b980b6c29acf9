/* admin.c -- readiness (/healthz/ready), admin (/config_dump, /quitquitquit) and stats
 * (/metrics, /stats/prometheus) endpoints on evhttp.
 * SPDX-License-Identifier: MIT */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lg_admin {
    struct evhttp *ready, *admin, *stats;
    lg_admin_ops_t ops;
};

static void reply(struct evhttp_request *req, int code, const char *ctype, struct evbuffer *b)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
}

static void reply_text(struct evhttp_request *req, int code, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    reply(req, code, "text/plain; charset=utf-8", b);
    evbuffer_free(b);
}

static void ready_cb(struct evhttp_request *req, void *arg)
{
    lg_admin_t *a = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || strcmp(path, "/healthz/ready") != 0) {
        reply_text(req, 404, "not found\n");
        return;
    }
    if (a->ops.ready && a->ops.ready(a->ops.arg))
        reply_text(req, 200, "ready\n");
    else
        reply_text(req, 503, "not ready\n");
}

static void admin_cb(struct evhttp_request *req, void *arg)
{
    lg_admin_t *a = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (path && strcmp(path, "/config_dump") == 0 && cmd == EVHTTP_REQ_GET) {
        struct evbuffer *b = evbuffer_new();
        a->ops.config_dump(a->ops.arg, b);
        reply(req, 200, "application/json", b);
        evbuffer_free(b);
    } else if (path && strcmp(path, "/quitquitquit") == 0 && cmd == EVHTTP_REQ_POST) {
        reply_text(req, 200, "OK\n");
        a->ops.quit(a->ops.arg);
    } else if (path && strcmp(path, "/healthz/ready") == 0) {
        ready_cb(req, arg);
    } else if (path && (strcmp(path, "/metrics") == 0 || strcmp(path, "/stats/prometheus") == 0)) {
        struct evbuffer *b = evbuffer_new();
        const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
        const char *ct = a->ops.metrics(a->ops.arg, accept, b);
        reply(req, 200, ct, b);
        evbuffer_free(b);
    } else {
        reply_text(req, 404, "not found\n");
    }
}

static void stats_cb(struct evhttp_request *req, void *arg)
{
    lg_admin_t *a = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || (strcmp(path, "/metrics") != 0 && strcmp(path, "/stats/prometheus") != 0)) {
        reply_text(req, 404, "not found\n");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
    const char *ct = a->ops.metrics(a->ops.arg, accept, b);
    reply(req, 200, ct, b);
    evbuffer_free(b);
}

/* Splits "host:port" / "[v6]:port" / "localhost:port". */
static int split_addr(const char *addr, char *host, size_t hsz, int *port)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *e = strchr(addr, ']');
        if (!e || e[1] != ':')
            return -1;
        snprintf(host, hsz, "%.*s", (int)(e - addr - 1), addr + 1);
        colon = e + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return -1;
        snprintf(host, hsz, "%.*s", (int)(colon - addr), addr);
    }
    *port = atoi(colon + 1);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, hsz, "127.0.0.1");
    if (host[0] == '\0')
        snprintf(host, hsz, "0.0.0.0");
    return *port >= 0 && *port <= 65535 ? 0 : -1;
}

static struct evhttp *serve(struct event_base *base, const char *what, const char *addr,
                            void (*cb)(struct evhttp_request *, void *), void *arg, lg_err_t *err)
{
    char host[128];
    int port;
    if (split_addr(addr, host, sizeof(host), &port) != 0) {
        lg_err_set(err, 0, "%s '%s': expected host:port", what, addr);
        return NULL;
    }
    struct evhttp *h = evhttp_new(base);
    evhttp_set_gencb(h, cb, arg);
    evhttp_set_default_content_type(h, "text/plain; charset=utf-8");
    evhttp_set_allowed_methods(h, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
    if (!evhttp_bind_socket_with_handle(h, host, (uint16_t)port)) {
        lg_err_set(err, 0, "%s %s: cannot bind (address in use?)", what, addr);
        evhttp_free(h);
        return NULL;
    }
    return h;
}

lg_admin_t *lg_admin_start(struct event_base *base, const char *readiness, const char *admin,
                           const char *stats, const lg_admin_ops_t *ops, lg_err_t *err)
{
    lg_admin_t *a = lg_xcalloc(1, sizeof(*a));
    a->ops = *ops;
    if (readiness && !(a->ready = serve(base, "readinessAddr", readiness, ready_cb, a, err)))
        goto fail;
    if (admin && !(a->admin = serve(base, "adminAddr", admin, admin_cb, a, err)))
        goto fail;
    if (stats && !(a->stats = serve(base, "statsAddr", stats, stats_cb, a, err)))
        goto fail;
    return a;
fail:
    lg_admin_free(a);
    return NULL;
}

void lg_admin_free(lg_admin_t *a)
{
    if (!a)
        return;
    if (a->ready)
        evhttp_free(a->ready);
    if (a->admin)
        evhttp_free(a->admin);
    if (a->stats)
        evhttp_free(a->stats);
    free(a);
}
