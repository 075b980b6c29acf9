/* worker.h -- worker threads: one event loop, SO_REUSEPORT listeners and upstream pool each.
 * SPDX-License-Identifier: MIT
 *
 * Threading: everything in lg_worker_t is touched only by its own thread, except the
 * fields under `mu`, which the main thread uses to hand over a new configuration or
 * to ask the worker to drain. */
#ifndef LG_WORKER_H
#define LG_WORKER_H

#include <pthread.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "common.h"
#include "conf.h"
#include "upstream.h"

struct lg_conn;
struct lg_wrt; /* per-worker Lua side, owned by proxy.c */

typedef struct lg_wlistener {
    int port;
    struct evconnlistener *lev;
} lg_wlistener_t;

typedef struct lg_worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    lg_upool_t *pool;
    lg_conf_t *conf; /* current; requests take their own reference */
    struct lg_wrt *wrt;
    lg_wlistener_t *listeners;
    size_t nlisteners;
    struct lg_conn *conns; /* every open client connection */
    size_t nconns;
    int draining;
    uint64_t nrequests;
    struct event *wake; /* reads wake_fd, an eventfd the main thread writes to */
    int wake_fd;
    struct event *drain_ev;
    void *metrics; /* lg_metrics_shard_t * once metrics are wired */
    /* proxy.c's per-worker caches (lg_proxy_caches_free releases them) */
    struct evbuffer *scratch[2]; /* empty evbuffers to borrow within one callback */
    void *req_cache;             /* freed requests kept for reuse */
    size_t nreq_cache;
    struct event *conn_sweep; /* client connection deadlines, checked once a second */
    void *hcache, *gcache;    /* runtime.c: prepared metric label sets */
    void *hdrs_scratch;       /* lg_hslice_t[hdrs_cap]: headers of the head being parsed */
    size_t hdrs_cap;

    pthread_mutex_t mu;
    lg_conf_t *pending; /* next configuration, handed over by main */
    int stop_requested;
    int stopped; /* set by the worker when its loop has exited */
    int running; /* set once the worker's runtime is built and its loop runs */
} lg_worker_t;

/* Creates `n` workers on `conf` (borrowed; each takes a reference) and binds their
 * listeners. Returns NULL with err filled (for example "bind 0.0.0.0:3000: Address in use"). */
lg_worker_t *lg_workers_new(int n, lg_conf_t *conf, lg_err_t *err);
int lg_workers_start(lg_worker_t *w, int n, lg_err_t *err);
/* Hands `conf` to every worker (each takes a reference). Listeners are opened and closed
 * to follow the binds; a port that cannot be bound fails the whole reload beforehand. */
int lg_workers_reload(lg_worker_t *w, int n, lg_conf_t *conf, lg_err_t *err);
/* Stops accepting, lets in-flight requests finish for up to `deadline_ms`, then stops. */
void lg_workers_stop(lg_worker_t *w, int n, int deadline_ms);
void lg_workers_free(lg_worker_t *w, int n);
/* 1 when every worker has built its runtime and is accepting. */
int lg_workers_running(lg_worker_t *w, int n);

/* Opens a listening socket on port with SO_REUSEPORT (every worker opens its own). */
int lg_listen_socket(const char *host, int port, lg_err_t *err);

#endif
