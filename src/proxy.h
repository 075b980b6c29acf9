/* proxy.h -- the request lifecycle: client connections, HTTP/1.1 parsing, routing,
 * forwarding to upstreams and relaying responses.
 * SPDX-License-Identifier: MIT
 *
 * Threading: every function here runs on the owning worker's thread. */
#ifndef LG_PROXY_H
#define LG_PROXY_H

#include <event2/util.h>
#include <sys/socket.h>

#include "worker.h"

struct ssl_ctx_st;

/* Takes ownership of the accepted socket `fd`. */
void lg_proxy_accept(lg_worker_t *w, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                     int port, struct ssl_ctx_st *ssl);
/* Drain: idle keep-alive connections close now, busy ones after their current response. */
void lg_proxy_drain(lg_worker_t *w);
/* Closes every connection immediately (end of the drain deadline). */
void lg_proxy_close_all(lg_worker_t *w);

/* Called on the worker thread after each configuration change (and at start). */
void lg_proxy_conf_changed(lg_worker_t *w);
void lg_proxy_worker_free(lg_worker_t *w);
/* Frees the worker's request and buffer caches (proxy.c). */
void lg_proxy_caches_free(lg_worker_t *w);

/* Writes a JSON error body {"error":{"message":...,"type":...}} into `out` (an
 * evbuffer) with the message escaped. */
struct evbuffer;
void lg_json_error(struct evbuffer *out, const char *message, const char *type);

#endif
