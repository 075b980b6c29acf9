/* admin.h -- management endpoints on the main thread: readiness, admin, stats.
 * SPDX-License-Identifier: MIT
 *
 * These use libevent's evhttp, which is fine off the data path. */
#ifndef LG_ADMIN_H
#define LG_ADMIN_H

#include <event2/event.h>

#include "common.h"

struct evbuffer;

typedef struct lg_admin_ops {
    int (*ready)(void *arg);                              /* 1 when serving */
    void (*config_dump)(void *arg, struct evbuffer *out); /* JSON, secrets redacted */
    void (*quit)(void *arg);                              /* start a graceful stop */
    /* renders metrics; returns the content type */
    const char *(*metrics)(void *arg, const char *accept, struct evbuffer *out);
    void *arg;
} lg_admin_ops_t;

typedef struct lg_admin lg_admin_t;

/* Starts the servers whose address is non-NULL ("ip:port", "localhost:port", "[::]:port").
 * Returns NULL with err "readinessAddr 0.0.0.0:15021: Address in use" style messages. */
lg_admin_t *lg_admin_start(struct event_base *base, const char *readiness, const char *admin,
                           const char *stats, const lg_admin_ops_t *ops, lg_err_t *err);
void lg_admin_free(lg_admin_t *a);

#endif
