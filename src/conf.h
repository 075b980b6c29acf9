/* conf.h -- the compiled, immutable configuration the data plane reads.
 * SPDX-License-Identifier: MIT
 *
 * lua/lunagate/config.lua validates and normalises the YAML; lg_conf_compile() turns that
 * normalised Lua table into these C structures once per load, so the request path never
 * touches Lua for routing. An lg_conf_t is shared by every worker and is reference
 * counted: each request holds a reference to the configuration it started under, so a
 * reload never changes a request in flight. */
#ifndef LG_CONF_H
#define LG_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

struct lua_State;
struct ssl_ctx_st;

typedef struct lg_kv {
    char *name; /* as configured (case kept for output) */
    size_t nlen;
    char *value;
    size_t vlen;
} lg_kv_t;

typedef struct lg_hdr_mod {
    lg_kv_t *add, *set;
    size_t nadd, nset;
    char **remove; /* lowercase */
    size_t nremove;
} lg_hdr_mod_t;

enum { LG_MATCH_EXACT = 0, LG_MATCH_PREFIX = 1, LG_MATCH_REGEX = 2 };

typedef struct lg_kmatch {
    char *name; /* lowercase */
    size_t nlen;
    int kind; /* LG_MATCH_EXACT or LG_MATCH_REGEX */
    char *value;
    size_t vlen;
    void *re; /* pcre2_code * when kind is REGEX */
} lg_kmatch_t;

typedef struct lg_match {
    int path_kind;
    char *path;
    size_t path_len;
    void *path_re; /* pcre2_code * */
    char *method;  /* NULL: any */
    lg_kmatch_t *headers, *query;
    size_t nheaders, nquery;
} lg_match_t;

enum { LG_BACKEND_HOST = 0, LG_BACKEND_AI = 1, LG_BACKEND_MCP = 2 };

typedef struct lg_backend {
    int kind;
    char *host; /* hostname or IP literal, without brackets */
    int port;
    int weight;
    char *name; /* "host:port", as logged in `endpoint` */
    int tls;
    char *sni;              /* backendTLS.hostname or host */
    int insecure;           /* backendTLS.insecure */
    struct ssl_ctx_st *ssl; /* client context when tls */
    int index;              /* position in the route's backends */
    char *pool_key;         /* upstream pool key, made once (NULL: made per acquire) */
} lg_backend_t;

typedef struct lg_cors {
    int allow_credentials;
    char **origins;
    size_t norigins;
    char *allow_methods, *allow_headers, *expose_headers; /* joined with ", " */
    int max_age;                                          /* seconds, -1 unset */
} lg_cors_t;

typedef struct lg_route {
    char *name;     /* "route0" */
    char *key;      /* "default/route0" */
    char *full_key; /* "bind/3000/listener0/default/route0": unique, used for plugin chains */
    char **hostnames;
    size_t nhostnames;
    lg_match_t *matches;
    size_t nmatches;

    lg_hdr_mod_t *req_hdr, *resp_hdr;
    char *rewrite_full, *rewrite_prefix, *rewrite_authority;
    int has_direct;
    int direct_status;
    char *direct_body;
    size_t direct_body_len;
    int request_timeout_ms; /* 0: none */
    int backend_timeout_ms; /* 0: none */
    int retry_attempts;     /* total attempts, >= 1 */
    int *retry_codes;
    size_t nretry_codes;
    int retry_backoff_ms;
    lg_cors_t *cors;

    lg_backend_t *backends;
    size_t nbackends;
    int total_weight;
    int needs_lua; /* plugins, ai or mcp backends */
    int index;     /* unique across the configuration */
} lg_route_t;

typedef struct lg_listener {
    char *name; /* "listener0" */
    char *key;
    char *hostname; /* "*" matches any */
    int https;
    struct ssl_ctx_st *ssl; /* server context when https */
    lg_route_t *routes;
    size_t nroutes;
} lg_listener_t;

typedef struct lg_bind {
    int port;
    char *key;  /* "bind/3000" */
    int https;  /* any listener is HTTPS (one protocol per bind) */
    int pinned; /* serves MCP: only worker 0 listens, so a session's state stays in one place */
    struct ssl_ctx_st *ssl;
    lg_listener_t *listeners;
    size_t nlisteners;
} lg_bind_t;

typedef struct lg_conf {
    int refcnt; /* atomic */
    uint64_t generation;
    char *filename;
    char *text; /* raw text after env expansion is NOT kept: this is the file as read */
    size_t text_len;

    char *stats_addr, *readiness_addr, *admin_addr; /* NULL: off */
    int workers;                                    /* 0: one per CPU */
    size_t max_body;
    int connect_timeout_ms;
    int idle_timeout_ms;   /* keep-alive idle with clients */
    int header_timeout_ms; /* slow clients: whole request head */
    size_t max_header;
    int drain_ms;

    lg_bind_t *binds;
    size_t nbinds;
    size_t nroutes;
    int any_lua;
} lg_conf_t;

/* Compiles the normalised configuration at the top of L's stack (left there). Returns a
 * new lg_conf_t with refcnt 1, or NULL with err "path: message". `text` is copied. */
lg_conf_t *lg_conf_compile(struct lua_State *L, const char *filename, const char *text, size_t len,
                           lg_err_t *err);
lg_conf_t *lg_conf_ref(lg_conf_t *c);
void lg_conf_unref(lg_conf_t *c); /* NULL is a no-op; frees at zero */

/* Route selection.  `host` is the Host header without port; `path` the request path
 * without query; `query` the raw query string (may be NULL). `hdr` looks a request header
 * up by lowercase name and returns its value (NULL if absent). Returns the best matching
 * route by agentgateway's precedence, or NULL, and sets *listener. */
typedef const char *lg_conf_header_cb(void *arg, const char *name, size_t nlen, size_t *vlen);
lg_route_t *lg_conf_select(lg_conf_t *c, int port, const char *host, size_t hlen,
                           const char *method, size_t mlen, const char *path, size_t plen,
                           const char *query, size_t qlen, lg_conf_header_cb *hdr, void *arg,
                           lg_listener_t **listener, lg_bind_t **bind, const lg_match_t **matched);

/* Finds a query parameter's (still percent-encoded) value. Returns 1 when found. */
int lg_query_param(const char *q, size_t qlen, const char *name, size_t nlen, const char **v,
                   size_t *vlen);

/* Does `host` match a listener/route hostname pattern ("*", "*.x.com", exact)? */
int lg_host_match(const char *pattern, const char *host, size_t hlen);

#endif
