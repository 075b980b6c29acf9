/* worker.c -- worker threads, SO_REUSEPORT listeners, configuration hand-over and drain.
 * SPDX-License-Identifier: MIT */
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy.h"
#include "runtime.h"

typedef struct pending_fd {
    int port;
    int fd;
} pending_fd_t;

/* per-worker hand-over of sockets opened by the main thread on reload */
typedef struct handover {
    pending_fd_t *fds;
    size_t n;
} handover_t;

static handover_t *handovers; /* indexed by worker id, guarded by each worker's mu */

int lg_listen_socket(const char *host, int port, lg_err_t *err)
{
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int v6 = fd >= 0;
    if (host && strcmp(host, "0.0.0.0") != 0 && strcmp(host, "::") != 0)
        v6 = 0; /* explicit IPv4 address */
    if (!v6) {
        if (fd >= 0)
            close(fd);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    if (fd < 0)
        return lg_err_set(err, errno, "socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    int rc;
    if (v6) {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof(a));
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        a.sin6_family = AF_INET6;
        a.sin6_port = htons((uint16_t)port);
        a.sin6_addr = in6addr_any;
        rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
    } else {
        struct sockaddr_in a;
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_ANY);
        if (host && strcmp(host, "0.0.0.0") != 0 && inet_pton(AF_INET, host, &a.sin_addr) != 1) {
            close(fd);
            return lg_err_set(err, 0, "bind %s:%d: not an IPv4 address", host, port);
        }
        rc = bind(fd, (struct sockaddr *)&a, sizeof(a));
    }
    if (rc < 0 || listen(fd, 1024) < 0) {
        int e = errno;
        close(fd);
        return lg_err_set(err, e, "bind port %d: %s", port, strerror(e));
    }
    return fd;
}

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    lg_worker_t *w = arg;
    int port = 0;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].lev == lev)
            port = w->listeners[i].port;
    struct ssl_ctx_st *ssl = NULL;
    for (size_t i = 0; i < w->conf->nbinds; i++)
        if (w->conf->binds[i].port == port)
            ssl = w->conf->binds[i].ssl;
    lg_proxy_accept(w, fd, sa, salen, port, ssl);
}

static void add_listener(lg_worker_t *w, int port, int fd)
{
    w->listeners = lg_xrealloc(w->listeners, (w->nlisteners + 1) * sizeof(lg_wlistener_t));
    lg_wlistener_t *l = &w->listeners[w->nlisteners++];
    l->port = port;
    l->lev = evconnlistener_new(w->base, accept_cb, w,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
}

/* Closes listeners whose port is gone from the current configuration. */
static void prune_listeners(lg_worker_t *w)
{
    size_t j = 0;
    for (size_t i = 0; i < w->nlisteners; i++) {
        int keep = 0;
        for (size_t k = 0; k < w->conf->nbinds; k++)
            if (w->conf->binds[k].port == w->listeners[i].port &&
                !(w->conf->binds[k].pinned && w->id > 0))
                keep = 1;
        if (keep && !w->draining) {
            w->listeners[j++] = w->listeners[i];
        } else if (w->listeners[i].lev) {
            /* take what is already in the accept queue: closing would reset it */
            evutil_socket_t lfd = evconnlistener_get_fd(w->listeners[i].lev);
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            int fd;
            while ((fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
                   0) {
                struct ssl_ctx_st *ssl = NULL;
                for (size_t k = 0; k < w->conf->nbinds; k++)
                    if (w->conf->binds[k].port == w->listeners[i].port)
                        ssl = w->conf->binds[k].ssl;
                lg_proxy_accept(w, fd, (struct sockaddr *)&ss, (int)sl, w->listeners[i].port, ssl);
                sl = sizeof(ss);
            }
            evconnlistener_free(w->listeners[i].lev);
        }
    }
    w->nlisteners = j;
}

static void drain_check_cb(evutil_socket_t fd, short what, void *arg);

/* Wakes a worker from another thread. The event bases are not thread-safe (no
 * evthread_use_pthreads: its lock costs every event operation on the data path), so the
 * main thread talks to workers through an eventfd. */
static void wake(lg_worker_t *w)
{
    uint64_t one = 1;
    ssize_t n = write(w->wake_fd, &one, sizeof(one));
    LG_UNUSED(n);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    lg_worker_t *w = arg;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    LG_UNUSED(n);
    LG_UNUSED(what);
    pthread_mutex_lock(&w->mu);
    lg_conf_t *next = w->pending;
    w->pending = NULL;
    handover_t h = handovers[w->id];
    handovers[w->id].fds = NULL;
    handovers[w->id].n = 0;
    int stop = w->stop_requested;
    pthread_mutex_unlock(&w->mu);

    for (size_t i = 0; i < h.n; i++)
        add_listener(w, h.fds[i].port, h.fds[i].fd);
    free(h.fds);
    if (next) {
        lg_conf_t *old = w->conf;
        w->conf = next;
        prune_listeners(w);
        lg_proxy_conf_changed(w);
        lg_conf_unref(old);
    }
    if (stop && !w->draining) {
        w->draining = 1;
        prune_listeners(w);
        lg_proxy_drain(w);
        struct timeval tv = {0, 20000};
        w->drain_ev = event_new(w->base, -1, EV_PERSIST, drain_check_cb, w);
        event_add(w->drain_ev, &tv);
    }
}

static void drain_check_cb(evutil_socket_t fd, short what, void *arg)
{
    lg_worker_t *w = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    pthread_mutex_lock(&w->mu);
    int force = w->stop_requested > 1;
    pthread_mutex_unlock(&w->mu);
    lg_proxy_drain(w);
    if (force)
        lg_proxy_close_all(w);
    if (w->nconns == 0 || force)
        event_base_loopexit(w->base, NULL);
}

static void *worker_main(void *arg)
{
    lg_worker_t *w = arg;
    lg_proxy_conf_changed(w);
    pthread_mutex_lock(&w->mu);
    w->running = 1;
    pthread_mutex_unlock(&w->mu);
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    lg_proxy_close_all(w);
    pthread_mutex_lock(&w->mu);
    w->stopped = 1;
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

lg_worker_t *lg_workers_new(int n, lg_conf_t *conf, lg_err_t *err)
{
    lg_worker_t *ws = lg_xcalloc((size_t)n, sizeof(lg_worker_t));
    handovers = lg_xcalloc((size_t)n, sizeof(handover_t));
    for (int i = 0; i < n; i++) {
        lg_worker_t *w = &ws[i];
        w->id = i;
        pthread_mutex_init(&w->mu, NULL);
        w->base = event_base_new();
        if (!w->base) {
            lg_err_set(err, 0, "cannot create event loop");
            goto fail;
        }
        w->pool = lg_upool_new(w->base, err);
        if (!w->pool)
            goto fail;
        w->conf = lg_conf_ref(conf);
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->wake_fd < 0) {
            lg_err_set(err, errno, "eventfd: %s", strerror(errno));
            goto fail;
        }
        w->wake = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, wake_cb, w);
        event_add(w->wake, NULL);
        for (size_t b = 0; b < conf->nbinds; b++) {
            if (conf->binds[b].pinned && i > 0)
                continue;
            int fd = lg_listen_socket(NULL, conf->binds[b].port, err);
            if (fd < 0)
                goto fail;
            add_listener(w, conf->binds[b].port, fd);
        }
    }
    return ws;
fail:
    lg_workers_free(ws, n);
    return NULL;
}

int lg_workers_start(lg_worker_t *ws, int n, lg_err_t *err)
{
    for (int i = 0; i < n; i++)
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0)
            return lg_err_set(err, errno, "cannot start worker thread");
    return LG_OK;
}

int lg_workers_reload(lg_worker_t *ws, int n, lg_conf_t *conf, lg_err_t *err)
{
    /* Open sockets for new ports first, so a port in use fails the reload cleanly. */
    handover_t *h = lg_xcalloc((size_t)n, sizeof(handover_t));
    for (size_t b = 0; b < conf->nbinds; b++) {
        int port = conf->binds[b].port, have = 0;
        pthread_mutex_lock(&ws[0].mu);
        lg_conf_t *cur = ws[0].pending ? ws[0].pending : ws[0].conf;
        for (size_t k = 0; k < cur->nbinds; k++)
            if (cur->binds[k].port == port)
                have = 1;
        pthread_mutex_unlock(&ws[0].mu);
        if (have)
            continue;
        for (int i = 0; i < n; i++) {
            if (conf->binds[b].pinned && i > 0)
                continue;
            int fd = lg_listen_socket(NULL, port, err);
            if (fd < 0) {
                for (int j = 0; j < n; j++) {
                    for (size_t k = 0; k < h[j].n; k++)
                        close(h[j].fds[k].fd);
                    free(h[j].fds);
                }
                free(h);
                return LG_ERR;
            }
            h[i].fds = lg_xrealloc(h[i].fds, (h[i].n + 1) * sizeof(pending_fd_t));
            h[i].fds[h[i].n++] = (pending_fd_t){port, fd};
        }
    }
    for (int i = 0; i < n; i++) {
        lg_worker_t *w = &ws[i];
        pthread_mutex_lock(&w->mu);
        if (w->pending)
            lg_conf_unref(w->pending);
        w->pending = lg_conf_ref(conf);
        handover_t *cur = &handovers[i];
        cur->fds = lg_xrealloc(cur->fds, (cur->n + h[i].n + 1) * sizeof(pending_fd_t));
        if (h[i].n)
            memcpy(cur->fds + cur->n, h[i].fds, h[i].n * sizeof(pending_fd_t));
        cur->n += h[i].n;
        free(h[i].fds);
        pthread_mutex_unlock(&w->mu);
        wake(w);
    }
    free(h);
    return LG_OK;
}

void lg_workers_stop(lg_worker_t *ws, int n, int deadline_ms)
{
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&ws[i].mu);
        ws[i].stop_requested = 1;
        pthread_mutex_unlock(&ws[i].mu);
        wake(&ws[i]);
    }
    int64_t until = lg_mono_us() + (int64_t)deadline_ms * 1000;
    for (;;) {
        int all = 1;
        for (int i = 0; i < n; i++) {
            pthread_mutex_lock(&ws[i].mu);
            all &= ws[i].stopped;
            pthread_mutex_unlock(&ws[i].mu);
        }
        if (all)
            break;
        if (lg_mono_us() > until) {
            for (int i = 0; i < n; i++) {
                pthread_mutex_lock(&ws[i].mu);
                ws[i].stop_requested = 2;
                pthread_mutex_unlock(&ws[i].mu);
                wake(&ws[i]);
            }
            until = INT64_MAX;
        }
        usleep(10000);
    }
    for (int i = 0; i < n; i++)
        pthread_join(ws[i].thread, NULL);
}

void lg_workers_free(lg_worker_t *ws, int n)
{
    if (!ws)
        return;
    for (int i = 0; i < n; i++) {
        lg_worker_t *w = &ws[i];
        for (size_t j = 0; j < w->nlisteners; j++)
            if (w->listeners[j].lev)
                evconnlistener_free(w->listeners[j].lev);
        free(w->listeners);
        lg_proxy_worker_free(w);
        lg_proxy_caches_free(w);
        lg_runtime_worker_free(w);
        lg_upool_free(w->pool);
        if (w->wake)
            event_free(w->wake);
        if (w->wake_fd > 0)
            close(w->wake_fd);
        if (w->drain_ev)
            event_free(w->drain_ev);
        lg_conf_unref(w->conf);
        lg_conf_unref(w->pending);
        if (handovers) {
            for (size_t k = 0; k < handovers[i].n; k++)
                close(handovers[i].fds[k].fd);
            free(handovers[i].fds);
        }
        if (w->base)
            event_base_free(w->base);
        pthread_mutex_destroy(&w->mu);
    }
    free(handovers);
    handovers = NULL;
    free(ws);
}

int lg_workers_running(lg_worker_t *ws, int n)
{
    int all = 1;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&ws[i].mu);
        all &= ws[i].running;
        pthread_mutex_unlock(&ws[i].mu);
    }
    return all;
}
