/* upstream.c -- keep-alive pools, non-blocking DNS with a small cache, connect, TLS.
 * SPDX-License-Identifier: MIT */
#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define POOL_BUCKETS  64
#define POOL_MAX_IDLE 512        /* per key */
#define POOL_IDLE_US  90000000LL /* poolIdleTimeout default: 90 s */
#define DNS_TTL_US    30000000LL
#define DNS_CACHE     64

enum { ST_RESOLVING = 1, ST_CONNECTING, ST_BUSY, ST_IDLE };

/* evdns_getaddrinfo_cancel() only schedules the cancelled callback, which may run after the
 * connection is gone: the callback gets this ticket, which it always frees, and a cancel
 * only clears ticket->uc. */
struct dns_ticket {
    lg_upconn_t *uc;
};

static void dns_cancel(lg_upconn_t *uc)
{
    if (uc->_ticket)
        uc->_ticket->uc = NULL;
    uc->_ticket = NULL;
    if (uc->_dns) {
        struct evdns_getaddrinfo_request *rq = uc->_dns;
        uc->_dns = NULL;
        evdns_getaddrinfo_cancel(rq);
    }
}

typedef struct dns_entry {
    char *host;
    struct sockaddr_storage addr;
    socklen_t len;
    int64_t expires;
} dns_entry_t;

typedef struct bucket {
    char *key;
    lg_upconn_t *idle; /* most recent first */
    size_t nidle;
} bucket_t;

struct lg_upool {
    struct event_base *base;
    struct evdns_base *dns;
    bucket_t buckets[POOL_BUCKETS][8];
    dns_entry_t cache[DNS_CACHE];
    size_t ncache;
    struct event *sweep;
    size_t total_idle;
};

static void conn_free(lg_upconn_t *uc)
{
    free(uc->_errmsg);
    dns_cancel(uc);
    if (uc->_timer)
        event_free(uc->_timer);
    if (uc->bev)
        bufferevent_free(uc->bev);
    free(uc->_key);
    free(uc);
}

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static bucket_t *find_bucket(lg_upool_t *p, const char *key, int create)
{
    bucket_t *row = p->buckets[hash(key) % POOL_BUCKETS];
    for (int i = 0; i < 8; i++) {
        if (row[i].key && strcmp(row[i].key, key) == 0)
            return &row[i];
    }
    if (!create)
        return NULL;
    for (int i = 0; i < 8; i++) {
        if (!row[i].key) {
            row[i].key = lg_xstrdup(key);
            return &row[i];
        }
    }
    return NULL; /* row full: connections for this key are simply not pooled */
}

static void unlink_idle(lg_upconn_t *uc)
{
    bucket_t *b = uc->_bucket ? uc->_bucket : find_bucket(uc->_pool, uc->_key, 0);
    if (!b)
        return;
    if (uc->_prev)
        uc->_prev->_next = uc->_next;
    else
        b->idle = uc->_next;
    if (uc->_next)
        uc->_next->_prev = uc->_prev;
    uc->_next = uc->_prev = NULL;
    b->nidle--;
    uc->_pool->total_idle--;
}

/* An idle connection that becomes readable is being closed by the server (or sent junk). */
static void idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    lg_upconn_t *uc = arg;
    LG_UNUSED(bev);
    LG_UNUSED(what);
    unlink_idle(uc);
    conn_free(uc);
}

static void idle_read_cb(struct bufferevent *bev, void *arg)
{
    idle_event_cb(bev, BEV_EVENT_EOF, arg);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    lg_upool_t *p = arg;
    int64_t now = lg_mono_us();
    LG_UNUSED(fd);
    LG_UNUSED(what);
    for (int i = 0; i < POOL_BUCKETS; i++)
        for (int j = 0; j < 8; j++) {
            lg_upconn_t *uc = p->buckets[i][j].idle, *next;
            for (; uc; uc = next) {
                next = uc->_next;
                if (now - uc->_idle_since > POOL_IDLE_US) {
                    unlink_idle(uc);
                    conn_free(uc);
                }
            }
        }
}

lg_upool_t *lg_upool_new(struct event_base *base, lg_err_t *err)
{
    lg_upool_t *p = lg_xcalloc(1, sizeof(*p));
    p->base = base;
    p->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!p->dns) {
        /* No resolv.conf (containers, sandboxes): IP literals and /etc/hosts still work. */
        p->dns = evdns_base_new(base, 0);
        if (!p->dns) {
            free(p);
            lg_err_set(err, 0, "cannot start DNS resolver");
            return NULL;
        }
        evdns_base_load_hosts(p->dns, NULL);
    }
    evdns_base_set_option(p->dns, "timeout:", "2");
    evdns_base_set_option(p->dns, "attempts:", "2");
    struct timeval tv = {5, 0};
    p->sweep = event_new(base, -1, EV_PERSIST, sweep_cb, p);
    event_add(p->sweep, &tv);
    return p;
}

void lg_upool_close_idle(lg_upool_t *p)
{
    for (int i = 0; i < POOL_BUCKETS; i++)
        for (int j = 0; j < 8; j++) {
            lg_upconn_t *uc = p->buckets[i][j].idle, *next;
            for (; uc; uc = next) {
                next = uc->_next;
                unlink_idle(uc);
                conn_free(uc);
            }
        }
}

size_t lg_upool_idle_count(lg_upool_t *p)
{
    return p->total_idle;
}

void lg_upool_free(lg_upool_t *p)
{
    if (!p)
        return;
    lg_upool_close_idle(p);
    for (int i = 0; i < POOL_BUCKETS; i++)
        for (int j = 0; j < 8; j++)
            free(p->buckets[i][j].key);
    for (size_t i = 0; i < p->ncache; i++)
        free(p->cache[i].host);
    event_free(p->sweep);
    evdns_base_free(p->dns, 1); /* pending lookups call back (tickets are freed) */
    free(p);
}

/* ---- Connecting ---- */

static void finish(lg_upconn_t *uc, int status, const char *msg);

static void deferred_fail_cb(evutil_socket_t fd, short what, void *arg)
{
    lg_upconn_t *uc = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    uc->_in_acquire = 0;
    finish(uc, LG_ERR, uc->_errmsg);
}

/* Reports the outcome. A failure found while lg_upstream_acquire() is still on the stack
 * is deferred to the next loop turn, so the caller always gets its callback later. */
static void finish(lg_upconn_t *uc, int status, const char *msg)
{
    if (status != LG_OK && uc->_in_acquire) {
        if (!uc->_errmsg)
            uc->_errmsg = lg_xstrdup(msg ? msg : "connect failed");
        if (uc->_timer)
            event_free(uc->_timer);
        dns_cancel(uc);
        uc->_timer = evtimer_new(uc->_pool->base, deferred_fail_cb, uc);
        struct timeval tv = {0, 0};
        evtimer_add(uc->_timer, &tv);
        return;
    }
    lg_upstream_ready_cb *cb = uc->_cb;
    void *arg = uc->_arg;
    if (uc->_timer) {
        event_free(uc->_timer);
        uc->_timer = NULL;
    }
    if (status != LG_OK) {
        char m[300];
        snprintf(m, sizeof(m), "%s", msg ? msg : "connect failed");
        conn_free(uc);
        cb(NULL, status, m, arg);
        return;
    }
    uc->_state = ST_BUSY;
    uc->connect_us = lg_mono_us() - uc->_start;
    bufferevent_set_timeouts(uc->bev, NULL, NULL);
    evutil_socket_t fd = bufferevent_getfd(uc->bev);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    cb(uc, LG_OK, NULL, arg);
}

static void connect_event_cb(struct bufferevent *bev, short what, void *arg)
{
    lg_upconn_t *uc = arg;
    char msg[300];
    if (what & BEV_EVENT_CONNECTED) {
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
        finish(uc, LG_OK, NULL);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        snprintf(msg, sizeof(msg), "connect to %s timed out", uc->_backend->name);
    } else if (uc->tls) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e) {
            char es[200];
            ERR_error_string_n(e, es, sizeof(es));
            snprintf(msg, sizeof(msg), "TLS handshake with %s failed: %s", uc->_backend->name, es);
        } else {
            int err = EVUTIL_SOCKET_ERROR();
            snprintf(msg, sizeof(msg), "connect to %s failed: %s", uc->_backend->name,
                     err ? evutil_socket_error_to_string(err) : "connection closed");
        }
    } else {
        int err = EVUTIL_SOCKET_ERROR();
        snprintf(msg, sizeof(msg), "connect to %s failed: %s", uc->_backend->name,
                 err ? evutil_socket_error_to_string(err) : "connection closed");
    }
    finish(uc, LG_ERR, msg);
}

static void start_connect(lg_upconn_t *uc, const struct sockaddr *sa, socklen_t len)
{
    lg_upool_t *p = uc->_pool;
    const lg_backend_t *b = uc->_backend;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
        snprintf(uc->addr, sizeof(uc->addr), "%s:%d", host, port);
    } else {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
        snprintf(uc->addr, sizeof(uc->addr), "[%s]:%d", host, port);
    }
    uc->_state = ST_CONNECTING;
    if (b->tls) {
        SSL *ssl = SSL_new(b->ssl);
        SSL_set_tlsext_host_name(ssl, b->sni);
        if (!b->insecure)
            SSL_set1_host(ssl, b->sni);
        uc->bev = bufferevent_openssl_socket_new(p->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                 BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        bufferevent_openssl_set_allow_dirty_shutdown(uc->bev, 1);
        uc->tls = 1;
    } else {
        uc->bev = bufferevent_socket_new(p->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    struct timeval tv = {uc->_timeout_ms / 1000, (uc->_timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(uc->bev, &tv, &tv);
    bufferevent_setcb(uc->bev, NULL, NULL, connect_event_cb, uc);
    if (bufferevent_socket_connect(uc->bev, sa, (int)len) < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "connect to %s failed: %s", b->name,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        finish(uc, LG_ERR, msg);
    }
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct dns_ticket *t = arg;
    lg_upconn_t *uc = t->uc;
    free(t);
    if (!uc) { /* cancelled: the connection is gone */
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    lg_upool_t *p = uc->_pool;
    uc->_dns = NULL;
    uc->_ticket = NULL;
    if (result != 0 || !res) {
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot resolve %s: %s", uc->_backend->host,
                 evutil_gai_strerror(result));
        if (res)
            evutil_freeaddrinfo(res);
        if (result == EVUTIL_EAI_CANCEL)
            return;
        finish(uc, LG_ERR, msg);
        return;
    }
    /* cache the first address */
    dns_entry_t *e = NULL;
    for (size_t i = 0; i < p->ncache; i++)
        if (strcmp(p->cache[i].host, uc->_backend->host) == 0)
            e = &p->cache[i];
    if (!e) {
        if (p->ncache < DNS_CACHE) {
            e = &p->cache[p->ncache++];
        } else {
            e = &p->cache[(size_t)lg_mono_us() % DNS_CACHE];
            free(e->host);
        }
        e->host = NULL;
    }
    if (!e->host)
        e->host = lg_xstrdup(uc->_backend->host);
    memcpy(&e->addr, res->ai_addr, res->ai_addrlen);
    e->len = (socklen_t)res->ai_addrlen;
    e->expires = lg_mono_us() + DNS_TTL_US;
    evutil_freeaddrinfo(res);
    if (uc->_timer) {
        event_free(uc->_timer);
        uc->_timer = NULL;
    }
    struct sockaddr_storage a = e->addr;
    if (a.ss_family == AF_INET)
        ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)uc->_backend->port);
    else
        ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)uc->_backend->port);
    start_connect(uc, (struct sockaddr *)&a, e->len);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    lg_upconn_t *uc = arg;
    char msg[300];
    LG_UNUSED(fd);
    LG_UNUSED(what);
    snprintf(msg, sizeof(msg), "resolving %s timed out", uc->_backend->host);
    dns_cancel(uc);
    finish(uc, LG_ERR, msg);
}

lg_upconn_t *lg_upstream_acquire(lg_upool_t *p, const lg_backend_t *b, int connect_timeout_ms,
                                 lg_upstream_ready_cb *cb, void *arg, lg_err_t *err)
{
    char kbuf[512];
    const char *key = b->pool_key;
    if (!key) {
        snprintf(kbuf, sizeof(kbuf), "%s|%d|%d|%s|%p", b->host, b->port, b->tls,
                 b->sni ? b->sni : "", (void *)b->ssl);
        key = kbuf;
    }
    bucket_t *bk = find_bucket(p, key, 0);
    int64_t now = lg_mono_us();
    while (bk && bk->idle) {
        lg_upconn_t *uc = bk->idle;
        unlink_idle(uc);
        if (now - uc->_idle_since > POOL_IDLE_US) {
            conn_free(uc);
            continue;
        }
        uc->_state = ST_BUSY;
        uc->reused = 1;
        uc->connect_us = 0;
        uc->_backend = b;
        bufferevent_setcb(uc->bev, NULL, NULL, NULL, NULL);
        return uc;
    }

    lg_upconn_t *uc = lg_xcalloc(1, sizeof(*uc));
    uc->_pool = p;
    uc->_key = lg_xstrdup(key);
    uc->_cb = cb;
    uc->_arg = arg;
    uc->_backend = b;
    uc->_start = now;
    uc->_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 10000;
    uc->_in_acquire = 1;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, b->host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)b->port);
        start_connect(uc, (struct sockaddr *)s4, sizeof(*s4));
        uc->_in_acquire = 0;
        return uc;
    }
    if (inet_pton(AF_INET6, b->host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)b->port);
        start_connect(uc, (struct sockaddr *)s6, sizeof(*s6));
        uc->_in_acquire = 0;
        return uc;
    }
    for (size_t i = 0; i < p->ncache; i++) {
        dns_entry_t *e = &p->cache[i];
        if (strcmp(e->host, b->host) == 0 && e->expires > now) {
            struct sockaddr_storage a = e->addr;
            if (a.ss_family == AF_INET)
                ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)b->port);
            else
                ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)b->port);
            start_connect(uc, (struct sockaddr *)&a, e->len);
            uc->_in_acquire = 0;
            return uc;
        }
    }
    /* Resolve without a port, then set it, so one cache entry serves every port. */
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    char port[8];
    snprintf(port, sizeof(port), "%d", b->port);
    uc->_state = ST_RESOLVING;
    struct timeval tv = {uc->_timeout_ms / 1000, (uc->_timeout_ms % 1000) * 1000};
    uc->_timer = evtimer_new(p->base, timeout_cb, uc);
    evtimer_add(uc->_timer, &tv);
    struct dns_ticket *t = lg_xmalloc(sizeof(*t));
    t->uc = uc;
    uc->_ticket = t;
    struct evdns_getaddrinfo_request *rq =
        evdns_getaddrinfo(p->dns, b->host, port, &hints, dns_cb, t);
    /* evdns may answer synchronously (hosts file, numeric): dns_cb has then run already;
     * any failure it met was deferred by finish(), so uc is still alive here. */
    if (uc->_state == ST_RESOLVING && !uc->_errmsg)
        uc->_dns = rq;
    uc->_in_acquire = 0;
    LG_UNUSED(err);
    return uc;
}

void lg_upstream_release(lg_upconn_t *uc, int reusable)
{
    if (!uc)
        return;
    if (uc->_state != ST_BUSY || !reusable) {
        conn_free(uc);
        return;
    }
    lg_upool_t *p = uc->_pool;
    bucket_t *b = uc->_bucket;
    if (!b)
        b = uc->_bucket = find_bucket(p, uc->_key, 1);
    struct evbuffer *in = bufferevent_get_input(uc->bev);
    if (!b || b->nidle >= POOL_MAX_IDLE || evbuffer_get_length(in) > 0) {
        conn_free(uc);
        return;
    }
    uc->_state = ST_IDLE;
    uc->_idle_since = lg_mono_us();
    uc->_next = b->idle;
    uc->_prev = NULL;
    if (b->idle)
        b->idle->_prev = uc;
    b->idle = uc;
    b->nidle++;
    p->total_idle++;
    bufferevent_set_timeouts(uc->bev, NULL, NULL);
    bufferevent_setcb(uc->bev, idle_read_cb, NULL, idle_event_cb, uc);
    bufferevent_enable(uc->bev, EV_READ);
}
