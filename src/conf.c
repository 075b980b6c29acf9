/* conf.c -- compiles the normalised Lua configuration into C structures; route selection.
 * SPDX-License-Identifier: MIT */
#include "conf.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pcre2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- Reading the normalised table ---- */

typedef struct {
    lua_State *L;
    lg_err_t *err;
    int failed;
} rd_t;

static char *getstr(lua_State *L, int idx, const char *key, size_t *len)
{
    char *s = NULL;
    lua_getfield(L, idx, key);
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        size_t n;
        const char *v = lua_tolstring(L, -1, &n);
        s = lg_xstrndup(v, n);
        if (len)
            *len = n;
    }
    lua_pop(L, 1);
    return s;
}

static long getint(lua_State *L, int idx, const char *key, long dflt)
{
    long v = dflt;
    lua_getfield(L, idx, key);
    if (lua_isinteger(L, -1))
        v = (long)lua_tointeger(L, -1);
    else if (lua_type(L, -1) == LUA_TNUMBER)
        v = (long)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static int getbool(lua_State *L, int idx, const char *key)
{
    int v;
    lua_getfield(L, idx, key);
    v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Pushes t[key] if it is a table and returns 1; otherwise pushes nothing, returns 0. */
static int gettable(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    if (lua_istable(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

static char *joinlist(lua_State *L, int idx, const char *key)
{
    char buf[2048];
    size_t off = 0;
    if (!gettable(L, idx, key))
        return NULL;
    size_t n = lua_rawlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        const char *v = lua_tostring(L, -1);
        if (v)
            off += (size_t)snprintf(buf + off, off < sizeof(buf) ? sizeof(buf) - off : 0, "%s%s",
                                    i > 1 ? ", " : "", v);
        lua_pop(L, 1);
        if (off >= sizeof(buf))
            off = sizeof(buf) - 1;
    }
    lua_pop(L, 1);
    return n ? lg_xstrndup(buf, off) : NULL;
}

static void *compile_re(const char *pat, const char *what, lg_err_t *err)
{
    int code;
    PCRE2_SIZE off;
    /* Anchored at both ends, as the Gateway API's RegularExpression path match is. */
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &off, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        lg_err_set(err, 0, "%s: invalid regex '%s' at offset %zu: %s", what, pat, (size_t)off,
                   (char *)msg);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static int re_full_match(void *re, const char *s, size_t n)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static void ssl_err(lg_err_t *err, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    lg_err_set(err, 0, "%s '%s': %s", what, file ? file : "", buf);
}

/* ---- TLS contexts ---- */

static SSL_CTX *server_ctx(const char *cert, const char *key, const char *path, lg_err_t *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_err(err, "cannot load certificate", cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, "cannot load private key", key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, "private key does not match certificate", key);
        goto fail;
    }
    return ctx;
fail : {
    char m[sizeof(err->msg)];
    snprintf(m, sizeof(m), "%s.tls: %s", path, err ? err->msg : "");
    lg_err_set(err, 0, "%s", m);
}
    SSL_CTX_free(ctx);
    return NULL;
}

static SSL_CTX *client_ctx(const char *root, int insecure, const char *path, lg_err_t *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (root) {
            if (SSL_CTX_load_verify_locations(ctx, root, NULL) != 1) {
                ssl_err(err, "cannot load backendTLS.root", root);
                char m[sizeof(err->msg)];
                snprintf(m, sizeof(m), "%s: %s", path, err ? err->msg : "");
                lg_err_set(err, 0, "%s", m);
                SSL_CTX_free(ctx);
                return NULL;
            }
        } else {
            SSL_CTX_set_default_verify_paths(ctx);
        }
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    return ctx;
}

/* ---- Policies ---- */

static void read_kvs(lua_State *L, int idx, const char *key, lg_kv_t **out, size_t *n)
{
    if (!gettable(L, idx, key))
        return;
    size_t cnt = lua_rawlen(L, -1);
    *out = lg_xcalloc(cnt, sizeof(lg_kv_t));
    for (size_t i = 1; i <= cnt; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i); /* pair: {name, value} or {name=, value=} */
        lg_kv_t *kv = &(*out)[*n];
        lua_rawgeti(L, -1, 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_getfield(L, -1, "name");
        }
        size_t l;
        const char *s = lua_tolstring(L, -1, &l);
        kv->name = lg_xstrndup(s ? s : "", s ? l : 0);
        kv->nlen = s ? l : 0;
        lua_pop(L, 1);
        lua_rawgeti(L, -1, 2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_getfield(L, -1, "value");
        }
        s = lua_tolstring(L, -1, &l);
        kv->value = lg_xstrndup(s ? s : "", s ? l : 0);
        kv->vlen = s ? l : 0;
        lua_pop(L, 2);
        (*n)++;
    }
    lua_pop(L, 1);
}

static lg_hdr_mod_t *read_hdr_mod(lua_State *L, int idx, const char *key)
{
    if (!gettable(L, idx, key))
        return NULL;
    int t = lua_gettop(L);
    lg_hdr_mod_t *m = lg_xcalloc(1, sizeof(*m));
    read_kvs(L, t, "add", &m->add, &m->nadd);
    read_kvs(L, t, "set", &m->set, &m->nset);
    if (gettable(L, t, "remove")) {
        size_t cnt = lua_rawlen(L, -1);
        m->remove = lg_xcalloc(cnt, sizeof(char *));
        for (size_t i = 1; i <= cnt; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            const char *s = lua_tostring(L, -1);
            if (s) {
                m->remove[m->nremove] = lg_xstrdup(s);
                lower(m->remove[m->nremove++]);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return m;
}

static void free_hdr_mod(lg_hdr_mod_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nadd; i++)
        free(m->add[i].name), free(m->add[i].value);
    for (size_t i = 0; i < m->nset; i++)
        free(m->set[i].name), free(m->set[i].value);
    for (size_t i = 0; i < m->nremove; i++)
        free(m->remove[i]);
    free(m->add), free(m->set), free(m->remove), free(m);
}

static int read_kmatches(lua_State *L, int idx, const char *key, lg_kmatch_t **out, size_t *n,
                         const char *path, lg_err_t *err)
{
    if (!gettable(L, idx, key))
        return LG_OK;
    size_t cnt = lua_rawlen(L, -1);
    *out = lg_xcalloc(cnt, sizeof(lg_kmatch_t));
    for (size_t i = 1; i <= cnt; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        int t = lua_gettop(L);
        lg_kmatch_t *km = &(*out)[(*n)++];
        km->name = getstr(L, t, "name", &km->nlen);
        if (!km->name)
            km->name = lg_xstrdup("");
        lower(km->name);
        char *kind = getstr(L, t, "kind", NULL);
        km->kind = kind && strcmp(kind, "regex") == 0 ? LG_MATCH_REGEX : LG_MATCH_EXACT;
        free(kind);
        km->value = getstr(L, t, "value", &km->vlen);
        if (!km->value)
            km->value = lg_xstrdup("");
        lua_pop(L, 1);
        if (km->kind == LG_MATCH_REGEX) {
            char what[300];
            snprintf(what, sizeof(what), "%s.%s[%zu]", path, key, i - 1);
            if ((km->re = compile_re(km->value, what, err)) == NULL) {
                lua_pop(L, 1);
                return LG_ERR;
            }
        }
    }
    lua_pop(L, 1);
    return LG_OK;
}

static int read_matches(lua_State *L, int idx, lg_route_t *r, const char *path, lg_err_t *err)
{
    size_t cnt = 0;
    if (gettable(L, idx, "matches")) {
        cnt = lua_rawlen(L, -1);
        lua_pop(L, 1);
    }
    if (cnt == 0) { /* default: pathPrefix "/" */
        r->matches = lg_xcalloc(1, sizeof(lg_match_t));
        r->nmatches = 1;
        r->matches[0].path_kind = LG_MATCH_PREFIX;
        r->matches[0].path = lg_xstrdup("/");
        r->matches[0].path_len = 1;
        return LG_OK;
    }
    gettable(L, idx, "matches");
    r->matches = lg_xcalloc(cnt, sizeof(lg_match_t));
    for (size_t i = 1; i <= cnt; i++) {
        char mpath[300];
        snprintf(mpath, sizeof(mpath), "%s.matches[%zu]", path, i - 1);
        lua_rawgeti(L, -1, (lua_Integer)i);
        int t = lua_gettop(L);
        lg_match_t *m = &r->matches[r->nmatches++];
        m->path_kind = LG_MATCH_PREFIX;
        if (gettable(L, t, "path")) {
            char *kind = getstr(L, -1, "kind", NULL);
            m->path = getstr(L, -1, "value", &m->path_len);
            if (kind && strcmp(kind, "exact") == 0)
                m->path_kind = LG_MATCH_EXACT;
            else if (kind && strcmp(kind, "regex") == 0)
                m->path_kind = LG_MATCH_REGEX;
            free(kind);
            lua_pop(L, 1);
        }
        if (!m->path) {
            m->path = lg_xstrdup("/");
            m->path_len = 1;
        }
        if (m->path_kind == LG_MATCH_REGEX) {
            char what[320];
            snprintf(what, sizeof(what), "%s.path.regex", mpath);
            if ((m->path_re = compile_re(m->path, what, err)) == NULL)
                goto fail;
        }
        m->method = getstr(L, t, "method", NULL);
        if (read_kmatches(L, t, "headers", &m->headers, &m->nheaders, mpath, err) != LG_OK ||
            read_kmatches(L, t, "query", &m->query, &m->nquery, mpath, err) != LG_OK)
            goto fail;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return LG_OK;
fail:
    lua_pop(L, 2);
    return LG_ERR;
}

static int read_policies(lua_State *L, int idx, lg_route_t *r, const char *path, lg_err_t *err)
{
    if (!gettable(L, idx, "policies"))
        return LG_OK;
    int p = lua_gettop(L);
    r->req_hdr = read_hdr_mod(L, p, "requestHeaderModifier");
    r->resp_hdr = read_hdr_mod(L, p, "responseHeaderModifier");
    if (gettable(L, p, "urlRewrite")) {
        if (gettable(L, -1, "path")) {
            r->rewrite_full = getstr(L, -1, "full", NULL);
            r->rewrite_prefix = getstr(L, -1, "prefix", NULL);
            lua_pop(L, 1);
        }
        if (gettable(L, -1, "authority")) {
            r->rewrite_authority = getstr(L, -1, "full", NULL);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (gettable(L, p, "directResponse")) {
        r->has_direct = 1;
        r->direct_status = (int)getint(L, -1, "status", 200);
        r->direct_body = getstr(L, -1, "body", &r->direct_body_len);
        lua_pop(L, 1);
    }
    if (gettable(L, p, "timeout")) {
        r->request_timeout_ms = (int)getint(L, -1, "requestTimeout", 0);
        r->backend_timeout_ms = (int)getint(L, -1, "backendRequestTimeout", 0);
        lua_pop(L, 1);
    }
    if (gettable(L, p, "retry")) {
        r->retry_attempts = (int)getint(L, -1, "attempts", 1);
        r->retry_backoff_ms = (int)getint(L, -1, "backoff", 0);
        if (gettable(L, -1, "codes")) {
            size_t cnt = lua_rawlen(L, -1);
            r->retry_codes = lg_xcalloc(cnt, sizeof(int));
            for (size_t i = 1; i <= cnt; i++) {
                lua_rawgeti(L, -1, (lua_Integer)i);
                r->retry_codes[r->nretry_codes++] = (int)lua_tointeger(L, -1);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (gettable(L, p, "cors")) {
        int c = lua_gettop(L);
        lg_cors_t *cors = r->cors = lg_xcalloc(1, sizeof(*cors));
        cors->allow_credentials = getbool(L, c, "allowCredentials");
        cors->allow_methods = joinlist(L, c, "allowMethods");
        cors->allow_headers = joinlist(L, c, "allowHeaders");
        cors->expose_headers = joinlist(L, c, "exposeHeaders");
        cors->max_age = (int)getint(L, c, "maxAge", -1);
        if (gettable(L, c, "allowOrigins")) {
            size_t cnt = lua_rawlen(L, -1);
            cors->origins = lg_xcalloc(cnt, sizeof(char *));
            for (size_t i = 1; i <= cnt; i++) {
                lua_rawgeti(L, -1, (lua_Integer)i);
                const char *s = lua_tostring(L, -1);
                if (s)
                    cors->origins[cors->norigins++] = lg_xstrdup(s);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (gettable(L, p, "plugins")) {
        if (lua_rawlen(L, -1) > 0)
            r->needs_lua = 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    LG_UNUSED(path);
    LG_UNUSED(err);
    return LG_OK;
}

static int read_backend(lua_State *L, int idx, lg_backend_t *b, const char *path, lg_err_t *err)
{
    char *kind = getstr(L, idx, "kind", NULL);
    b->kind = LG_BACKEND_HOST;
    if (kind && strcmp(kind, "ai") == 0)
        b->kind = LG_BACKEND_AI;
    else if (kind && strcmp(kind, "mcp") == 0)
        b->kind = LG_BACKEND_MCP;
    free(kind);
    b->weight = (int)getint(L, idx, "weight", 1);
    if (b->weight < 0)
        b->weight = 0;
    if (b->kind != LG_BACKEND_HOST) {
        b->name = getstr(L, idx, "name", NULL);
        return LG_OK;
    }
    b->host = getstr(L, idx, "host", NULL);
    b->port = (int)getint(L, idx, "port", 0);
    if (!b->host || b->port <= 0 || b->port > 65535)
        return lg_err_set(err, 0, "%s: backend needs host:port", path);
    char name[300];
    snprintf(name, sizeof(name), strchr(b->host, ':') ? "[%s]:%d" : "%s:%d", b->host, b->port);
    b->name = lg_xstrdup(name);
    if (gettable(L, idx, "policies")) {
        if (gettable(L, -1, "backendTLS")) {
            int t = lua_gettop(L);
            char *root = getstr(L, t, "root", NULL);
            b->tls = 1;
            b->insecure = getbool(L, t, "insecure");
            b->sni = getstr(L, t, "hostname", NULL);
            char bpath[320];
            snprintf(bpath, sizeof(bpath), "%s.policies.backendTLS", path);
            b->ssl = client_ctx(root, b->insecure, bpath, err);
            free(root);
            lua_pop(L, 1);
            if (!b->ssl) {
                lua_pop(L, 1);
                return LG_ERR;
            }
        }
        lua_pop(L, 1);
    }
    if (b->tls && !b->sni)
        b->sni = lg_xstrdup(b->host);
    char key[512];
    snprintf(key, sizeof(key), "%s|%d|%d|%s|%p", b->host, b->port, b->tls, b->sni ? b->sni : "",
             (void *)b->ssl);
    b->pool_key = lg_xstrdup(key);
    return LG_OK;
}

static int read_route(lua_State *L, int idx, lg_route_t *r, const char *lkey, const char *path,
                      lg_err_t *err)
{
    r->name = getstr(L, idx, "name", NULL);
    r->key = getstr(L, idx, "key", NULL);
    if (!r->name)
        r->name = lg_xstrdup("route");
    if (!r->key) {
        char k[300];
        snprintf(k, sizeof(k), "default/%s", r->name);
        r->key = lg_xstrdup(k);
    }
    char fk[600];
    snprintf(fk, sizeof(fk), "%s/%s", lkey, r->key);
    r->full_key = lg_xstrdup(fk);
    r->retry_attempts = 1;
    if (gettable(L, idx, "hostnames")) {
        size_t cnt = lua_rawlen(L, -1);
        r->hostnames = lg_xcalloc(cnt, sizeof(char *));
        for (size_t i = 1; i <= cnt; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            const char *s = lua_tostring(L, -1);
            if (s) {
                r->hostnames[r->nhostnames] = lg_xstrdup(s);
                lower(r->hostnames[r->nhostnames++]);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (read_matches(L, idx, r, path, err) != LG_OK || read_policies(L, idx, r, path, err) != LG_OK)
        return LG_ERR;
    if (r->retry_attempts < 1)
        r->retry_attempts = 1;
    if (gettable(L, idx, "backends")) {
        size_t cnt = lua_rawlen(L, -1);
        r->backends = lg_xcalloc(cnt, sizeof(lg_backend_t));
        for (size_t i = 1; i <= cnt; i++) {
            char bpath[320];
            snprintf(bpath, sizeof(bpath), "%s.backends[%zu]", path, i - 1);
            lua_rawgeti(L, -1, (lua_Integer)i);
            lg_backend_t *b = &r->backends[r->nbackends++];
            b->index = (int)(i - 1);
            int rc = read_backend(L, lua_gettop(L), b, bpath, err);
            lua_pop(L, 1);
            if (rc != LG_OK) {
                lua_pop(L, 1);
                return LG_ERR;
            }
            if (b->kind != LG_BACKEND_HOST)
                r->needs_lua = 1;
            r->total_weight += b->weight;
        }
        lua_pop(L, 1);
    }
    if (r->nbackends == 0 && !r->has_direct)
        return lg_err_set(err, 0, "%s: route has no backends and no directResponse", path);
    return LG_OK;
}

static void free_route(lg_route_t *r)
{
    free(r->name), free(r->key), free(r->full_key);
    for (size_t i = 0; i < r->nhostnames; i++)
        free(r->hostnames[i]);
    free(r->hostnames);
    for (size_t i = 0; i < r->nmatches; i++) {
        lg_match_t *m = &r->matches[i];
        free(m->path), free(m->method);
        if (m->path_re)
            pcre2_code_free(m->path_re);
        for (size_t j = 0; j < m->nheaders; j++) {
            free(m->headers[j].name), free(m->headers[j].value);
            if (m->headers[j].re)
                pcre2_code_free(m->headers[j].re);
        }
        for (size_t j = 0; j < m->nquery; j++) {
            free(m->query[j].name), free(m->query[j].value);
            if (m->query[j].re)
                pcre2_code_free(m->query[j].re);
        }
        free(m->headers), free(m->query);
    }
    free(r->matches);
    free_hdr_mod(r->req_hdr), free_hdr_mod(r->resp_hdr);
    free(r->rewrite_full), free(r->rewrite_prefix), free(r->rewrite_authority);
    free(r->direct_body), free(r->retry_codes);
    if (r->cors) {
        for (size_t i = 0; i < r->cors->norigins; i++)
            free(r->cors->origins[i]);
        free(r->cors->origins), free(r->cors->allow_methods), free(r->cors->allow_headers);
        free(r->cors->expose_headers), free(r->cors);
    }
    for (size_t i = 0; i < r->nbackends; i++) {
        lg_backend_t *b = &r->backends[i];
        free(b->host), free(b->name), free(b->sni), free(b->pool_key);
        if (b->ssl)
            SSL_CTX_free(b->ssl);
    }
    free(r->backends);
}

static void conf_free(lg_conf_t *c)
{
    for (size_t i = 0; i < c->nbinds; i++) {
        lg_bind_t *b = &c->binds[i];
        for (size_t j = 0; j < b->nlisteners; j++) {
            lg_listener_t *l = &b->listeners[j];
            for (size_t k = 0; k < l->nroutes; k++)
                free_route(&l->routes[k]);
            free(l->routes), free(l->name), free(l->key), free(l->hostname);
            if (l->ssl)
                SSL_CTX_free(l->ssl);
        }
        free(b->listeners), free(b->key);
    }
    free(c->binds), free(c->filename), free(c->text);
    free(c->stats_addr), free(c->readiness_addr), free(c->admin_addr);
    free(c);
}

static char *addr_or_off(lua_State *L, int idx, const char *key, const char *dflt)
{
    lua_getfield(L, idx, key);
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_pop(L, 1);
    char *s = getstr(L, idx, key, NULL);
    if (!s)
        return dflt ? lg_xstrdup(dflt) : NULL;
    if (strcmp(s, "off") == 0 || s[0] == '\0') {
        free(s);
        return NULL;
    }
    return s;
}

lg_conf_t *lg_conf_compile(lua_State *L, const char *filename, const char *text, size_t len,
                           lg_err_t *err)
{
    static _Atomic uint64_t generation;
    int top = lua_gettop(L);
    lg_conf_t *c = lg_xcalloc(1, sizeof(*c));
    c->refcnt = 1;
    c->generation = ++generation;
    c->filename = lg_xstrdup(filename ? filename : "config");
    c->text = lg_xstrndup(text ? text : "", text ? len : 0);
    c->text_len = text ? len : 0;
    c->max_body = 2 * 1024 * 1024;
    c->connect_timeout_ms = 10000;
    c->idle_timeout_ms = 60000;
    c->header_timeout_ms = 30000;
    c->max_header = 64 * 1024;
    c->drain_ms = 5000;
    /* agentgateway: the drain deadline is TERMINATION_GRACE_PERIOD_SECONDS - 5 s when set */
    const char *grace = getenv("TERMINATION_GRACE_PERIOD_SECONDS");
    if (grace && atoi(grace) > 5)
        c->drain_ms = (atoi(grace) - 5) * 1000;

    int global_plugins = 0;
    if (gettable(L, top, "config")) {
        int t = lua_gettop(L);
        if (gettable(L, t, "plugins")) {
            if (gettable(L, -1, "global")) {
                global_plugins = lua_rawlen(L, -1) > 0;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        c->stats_addr = addr_or_off(L, t, "statsAddr", "0.0.0.0:15020");
        c->readiness_addr = addr_or_off(L, t, "readinessAddr", "0.0.0.0:15021");
        c->admin_addr = addr_or_off(L, t, "adminAddr", "127.0.0.1:15000");
        c->workers = (int)getint(L, t, "workerThreads", 0);
        c->drain_ms = (int)getint(L, t, "connectionTerminationDeadline", c->drain_ms);
        if (gettable(L, t, "backend")) {
            c->connect_timeout_ms = (int)getint(L, -1, "connectTimeout", c->connect_timeout_ms);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    } else {
        c->stats_addr = lg_xstrdup("0.0.0.0:15020");
        c->readiness_addr = lg_xstrdup("0.0.0.0:15021");
        c->admin_addr = lg_xstrdup("127.0.0.1:15000");
    }
    if (gettable(L, top, "frontendPolicies")) {
        if (gettable(L, -1, "http")) {
            c->max_body = (size_t)getint(L, -1, "maxBufferSize", (long)c->max_body);
            c->idle_timeout_ms = (int)getint(L, -1, "http1IdleTimeout", c->idle_timeout_ms);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }

    if (gettable(L, top, "binds")) {
        size_t nb = lua_rawlen(L, -1);
        c->binds = lg_xcalloc(nb, sizeof(lg_bind_t));
        for (size_t i = 1; i <= nb; i++) {
            char bpath[64];
            snprintf(bpath, sizeof(bpath), "binds[%zu]", i - 1);
            lua_rawgeti(L, -1, (lua_Integer)i);
            int bt = lua_gettop(L);
            lg_bind_t *b = &c->binds[c->nbinds++];
            b->port = (int)getint(L, bt, "port", 0);
            b->key = getstr(L, bt, "key", NULL);
            if (!b->key) {
                char k[32];
                snprintf(k, sizeof(k), "bind/%d", b->port);
                b->key = lg_xstrdup(k);
            }
            if (b->port <= 0 || b->port > 65535) {
                lg_err_set(err, 0, "%s.port: must be 1-65535", bpath);
                goto fail;
            }
            for (size_t j = 0; j + 1 < c->nbinds; j++)
                if (c->binds[j].port == b->port) {
                    lg_err_set(err, 0, "%s.port: port %d is bound twice", bpath, b->port);
                    goto fail;
                }
            if (gettable(L, bt, "listeners")) {
                size_t nl = lua_rawlen(L, -1);
                b->listeners = lg_xcalloc(nl, sizeof(lg_listener_t));
                for (size_t j = 1; j <= nl; j++) {
                    char lpath[128];
                    snprintf(lpath, sizeof(lpath), "%s.listeners[%zu]", bpath, j - 1);
                    lua_rawgeti(L, -1, (lua_Integer)j);
                    int lt = lua_gettop(L);
                    lg_listener_t *l = &b->listeners[b->nlisteners++];
                    l->name = getstr(L, lt, "name", NULL);
                    if (!l->name) {
                        char n[32];
                        snprintf(n, sizeof(n), "listener%zu", j - 1);
                        l->name = lg_xstrdup(n);
                    }
                    l->key = getstr(L, lt, "key", NULL);
                    if (!l->key) {
                        char k[300];
                        snprintf(k, sizeof(k), "%s/%s", b->key, l->name);
                        l->key = lg_xstrdup(k);
                    }
                    l->hostname = getstr(L, lt, "hostname", NULL);
                    if (!l->hostname)
                        l->hostname = lg_xstrdup("*");
                    lower(l->hostname);
                    char *proto = getstr(L, lt, "protocol", NULL);
                    l->https = proto && strcasecmp(proto, "HTTPS") == 0;
                    free(proto);
                    if (l->https) {
                        char *cert = NULL, *key = NULL;
                        if (gettable(L, lt, "tls")) {
                            cert = getstr(L, -1, "cert", NULL);
                            key = getstr(L, -1, "key", NULL);
                            lua_pop(L, 1);
                        }
                        if (!cert || !key) {
                            free(cert), free(key);
                            lg_err_set(err, 0, "%s.tls: HTTPS needs cert and key", lpath);
                            lua_pop(L, 2);
                            goto fail;
                        }
                        l->ssl = server_ctx(cert, key, lpath, err);
                        free(cert), free(key);
                        if (!l->ssl) {
                            lua_pop(L, 2);
                            goto fail;
                        }
                        b->https = 1;
                        if (!b->ssl)
                            b->ssl = l->ssl;
                    } else if (b->https) {
                        lg_err_set(err, 0, "%s.protocol: a bind serves either HTTP or HTTPS",
                                   lpath);
                        lua_pop(L, 2);
                        goto fail;
                    }
                    if (gettable(L, lt, "routes")) {
                        size_t nr = lua_rawlen(L, -1);
                        l->routes = lg_xcalloc(nr, sizeof(lg_route_t));
                        for (size_t k = 1; k <= nr; k++) {
                            char rpath[192];
                            snprintf(rpath, sizeof(rpath), "%s.routes[%zu]", lpath, k - 1);
                            lua_rawgeti(L, -1, (lua_Integer)k);
                            lg_route_t *r = &l->routes[l->nroutes++];
                            r->index = (int)c->nroutes++;
                            r->needs_lua = global_plugins; /* config.plugins.global: every route */
                            int rc = read_route(L, lua_gettop(L), r, l->key, rpath, err);
                            lua_pop(L, 1);
                            if (rc != LG_OK) {
                                lua_pop(L, 3);
                                goto fail;
                            }
                            c->any_lua |= r->needs_lua;
                            for (size_t bi = 0; bi < r->nbackends; bi++)
                                if (r->backends[bi].kind == LG_BACKEND_MCP)
                                    b->pinned = 1;
                        }
                        lua_pop(L, 1);
                    }
                    lua_pop(L, 1);
                }
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    return c;
fail:
    lua_settop(L, top);
    conf_free(c);
    return NULL;
}

lg_conf_t *lg_conf_ref(lg_conf_t *c)
{
    if (c)
        atomic_fetch_add_explicit((_Atomic int *)&c->refcnt, 1, memory_order_relaxed);
    return c;
}

void lg_conf_unref(lg_conf_t *c)
{
    if (c && atomic_fetch_sub_explicit((_Atomic int *)&c->refcnt, 1, memory_order_acq_rel) == 1)
        conf_free(c);
}

/* ---- Route selection ---- */

int lg_host_match(const char *pattern, const char *host, size_t hlen)
{
    if (pattern[0] == '*' && pattern[1] == '\0')
        return 1;
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t plen = strlen(pattern + 1); /* ".x.com" */
        return hlen > plen && strncasecmp(host + hlen - plen, pattern + 1, plen) == 0;
    }
    return strlen(pattern) == hlen && strncasecmp(pattern, host, hlen) == 0;
}

int lg_query_param(const char *q, size_t qlen, const char *name, size_t nlen, const char **v,
                   size_t *vlen)
{
    const char *p = q, *end = q + qlen;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *ke = eq ? eq : e;
        if ((size_t)(ke - p) == nlen && memcmp(p, name, nlen) == 0) {
            *v = eq ? eq + 1 : e;
            *vlen = eq ? (size_t)(e - eq - 1) : 0;
            return 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}

static int kmatch(const lg_kmatch_t *km, const char *v, size_t vlen)
{
    if (km->kind == LG_MATCH_REGEX)
        return re_full_match(km->re, v, vlen);
    return vlen == km->vlen && memcmp(v, km->value, vlen) == 0;
}

static int match_one(const lg_match_t *m, const char *method, size_t mlen, const char *path,
                     size_t plen, const char *query, size_t qlen, lg_conf_header_cb *hdr, void *arg)
{
    switch (m->path_kind) {
    case LG_MATCH_EXACT:
        if (plen != m->path_len || memcmp(path, m->path, plen) != 0)
            return 0;
        break;
    case LG_MATCH_PREFIX:
        /* Gateway API: "/foo" matches "/foo" and "/foo/bar", not "/foobar". */
        if (plen < m->path_len || memcmp(path, m->path, m->path_len) != 0)
            return 0;
        if (m->path_len > 1 && m->path[m->path_len - 1] != '/' && plen > m->path_len &&
            path[m->path_len] != '/')
            return 0;
        break;
    default:
        if (!re_full_match(m->path_re, path, plen))
            return 0;
    }
    if (m->method && (strlen(m->method) != mlen || strncasecmp(m->method, method, mlen) != 0))
        return 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        size_t vlen;
        const char *v = hdr ? hdr(arg, m->headers[i].name, m->headers[i].nlen, &vlen) : NULL;
        if (!v || !kmatch(&m->headers[i], v, vlen))
            return 0;
    }
    for (size_t i = 0; i < m->nquery; i++) {
        const char *v;
        size_t vlen;
        if (!query || !lg_query_param(query, qlen, m->query[i].name, m->query[i].nlen, &v, &vlen) ||
            !kmatch(&m->query[i], v, vlen))
            return 0;
    }
    return 1;
}

/* Returns >0 when a is more specific than b (agentgateway's select_best_route order). */
static int better(const lg_match_t *a, const lg_match_t *b)
{
    static const int rank[] = {3, 2, 1}; /* exact > prefix > regex */
    if (rank[a->path_kind] != rank[b->path_kind])
        return rank[a->path_kind] > rank[b->path_kind];
    if (a->path_len != b->path_len)
        return a->path_len > b->path_len;
    if (!!a->method != !!b->method)
        return a->method != NULL;
    if (a->nheaders != b->nheaders)
        return a->nheaders > b->nheaders;
    if (a->nquery != b->nquery)
        return a->nquery > b->nquery;
    return 0; /* tie: the earlier rule wins */
}

lg_route_t *lg_conf_select(lg_conf_t *c, int port, const char *host, size_t hlen,
                           const char *method, size_t mlen, const char *path, size_t plen,
                           const char *query, size_t qlen, lg_conf_header_cb *hdr, void *arg,
                           lg_listener_t **listener, lg_bind_t **bindp, const lg_match_t **matched)
{
    lg_bind_t *b = NULL;
    for (size_t i = 0; i < c->nbinds; i++)
        if (c->binds[i].port == port) {
            b = &c->binds[i];
            break;
        }
    if (!b)
        return NULL;
    if (bindp)
        *bindp = b;
    /* The most specific listener hostname wins: exact, then wildcard suffix, then "*". */
    lg_listener_t *l = NULL;
    int lscore = -1;
    for (size_t i = 0; i < b->nlisteners; i++) {
        lg_listener_t *cand = &b->listeners[i];
        if (!lg_host_match(cand->hostname, host, hlen))
            continue;
        int s = cand->hostname[0] == '*' ? (cand->hostname[1] ? 1 : 0) : 2;
        if (s > lscore)
            l = cand, lscore = s;
    }
    if (!l)
        return NULL;
    if (listener)
        *listener = l;
    lg_route_t *best = NULL;
    const lg_match_t *bestm = NULL;
    for (size_t i = 0; i < l->nroutes; i++) {
        lg_route_t *r = &l->routes[i];
        if (r->nhostnames) {
            size_t k;
            for (k = 0; k < r->nhostnames; k++)
                if (lg_host_match(r->hostnames[k], host, hlen))
                    break;
            if (k == r->nhostnames)
                continue;
        }
        for (size_t j = 0; j < r->nmatches; j++) {
            const lg_match_t *m = &r->matches[j];
            if (bestm && !better(m, bestm))
                continue;
            if (match_one(m, method, mlen, path, plen, query, qlen, hdr, arg))
                best = r, bestm = m;
        }
    }
    if (matched)
        *matched = bestm;
    return best;
}
