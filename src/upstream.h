/* upstream.h -- connections to upstream servers: keep-alive pools, DNS, connect, TLS.
 * SPDX-License-Identifier: MIT
 *
 * Threading: a pool belongs to one worker and is used only on that worker's event loop.
 * Lifetime: an lg_upconn_t is owned by whoever acquired it until it is handed back with
 * lg_upstream_release() (reusable or not); never free one from inside its own callbacks
 * other than through that call. */
#ifndef LG_UPSTREAM_H
#define LG_UPSTREAM_H

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "common.h"
#include "conf.h"

typedef struct lg_upool lg_upool_t;
typedef struct lg_upconn lg_upconn_t;

/* Called once when a connection started by lg_upstream_acquire() is ready (LG_OK) or has
 * failed (LG_ERR, `msg` says why; the connection is already gone). */
typedef void lg_upstream_ready_cb(lg_upconn_t *uc, int status, const char *msg, void *arg);

struct lg_upconn {
    struct bufferevent *bev; /* valid when connected */
    int reused;              /* came from the idle pool (may be stale) */
    int tls;
    int64_t connect_us; /* time taken to connect, 0 when reused */
    char addr[64];      /* peer "ip:port" */
    /* private */
    lg_upool_t *_pool;
    char *_key;
    void *_bucket; /* the pool row entry for _key, once looked up (entries never move) */
    lg_upconn_t *_next, *_prev;
    struct evdns_getaddrinfo_request *_dns;
    struct dns_ticket *_ticket; /* the DNS callback's argument; outlives a cancelled lookup */
    lg_upstream_ready_cb *_cb;
    void *_arg;
    const lg_backend_t *_backend;
    int64_t _idle_since, _start;
    int _state, _timeout_ms, _in_acquire;
    char *_errmsg;
    struct event *_timer;
};

/* Creates a worker's pool. Returns NULL with err filled when DNS cannot start. */
lg_upool_t *lg_upool_new(struct event_base *base, lg_err_t *err);
/* Closes idle connections and cancels pending ones (their callbacks are not called). */
void lg_upool_free(lg_upool_t *p);
/* Closes every idle connection now (drain, reload). */
void lg_upool_close_idle(lg_upool_t *p);
size_t lg_upool_idle_count(lg_upool_t *p);

/* Gets a connection to backend `b` (borrowed; must outlive the connection attempt).
 * Returns an idle pooled connection immediately (uc->reused set, cb not called), or
 * starts resolving and connecting and returns the pending connection; `cb` fires later.
 * Returns NULL with err filled only for immediate failures. */
lg_upconn_t *lg_upstream_acquire(lg_upool_t *p, const lg_backend_t *b, int connect_timeout_ms,
                                 lg_upstream_ready_cb *cb, void *arg, lg_err_t *err);
/* Returns a connection to the pool when `reusable` (a complete response was read and the
 * server allows keep-alive), or closes it. Also cancels a pending connect. */
void lg_upstream_release(lg_upconn_t *uc, int reusable);

#endif
