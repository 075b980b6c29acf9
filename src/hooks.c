/* hooks.c -- what the proxy asks at each point of a request: CORS, plugins, LLM
 * providers and telemetry.
 * SPDX-License-Identifier: MIT */
#include "hooks.h"
#include "proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- CORS ---- */

static const char *allowed_origin(lg_req_t *r, size_t *olen)
{
    const lg_cors_t *cors = r->route ? r->route->cors : NULL;
    size_t l;
    const char *origin;
    if (!cors || !(origin = lg_req_header(r, "origin", 6, &l)))
        return NULL;
    for (size_t i = 0; i < cors->norigins; i++) {
        const char *o = cors->origins[i];
        if ((o[0] == '*' && o[1] == '\0') || (strlen(o) == l && strncasecmp(o, origin, l) == 0)) {
            *olen = l;
            return origin;
        }
        /* wildcard origins such as https://STAR.example.com */
        const char *star = strchr(o, '*');
        if (star) {
            size_t pre = (size_t)(star - o), suf = strlen(star + 1);
            if (l >= pre + suf && strncasecmp(origin, o, pre) == 0 &&
                strncasecmp(origin + l - suf, star + 1, suf) == 0) {
                *olen = l;
                return origin;
            }
        }
    }
    return NULL;
}

int lg_hooks_cors_preflight(lg_req_t *r)
{
    size_t ol, ml;
    const lg_cors_t *cors = r->route->cors;
    if (!cors || r->method != HTTP_OPTIONS ||
        !lg_req_header(r, "access-control-request-method", 29, &ml))
        return 0;
    const char *origin = allowed_origin(r, &ol);
    if (!origin) {
        r->reason = "DirectResponse";
        lg_req_respond(r, 200, NULL, "", 0, NULL, 0);
        return 1;
    }
    lg_kv_t h[4];
    size_t n = 0;
    char maxage[32];
    if (cors->allow_methods)
        h[n++] = (lg_kv_t){"Access-Control-Allow-Methods", 28, cors->allow_methods, 0};
    if (cors->allow_headers)
        h[n++] = (lg_kv_t){"Access-Control-Allow-Headers", 28, cors->allow_headers, 0};
    if (cors->max_age >= 0) {
        snprintf(maxage, sizeof(maxage), "%d", cors->max_age);
        h[n++] = (lg_kv_t){"Access-Control-Max-Age", 22, maxage, 0};
    }
    r->reason = "DirectResponse";
    lg_req_respond(r, 200, NULL, "", 0, h, n); /* CORS origin headers added by respond */
    return 1;
}

void lg_hooks_cors_headers(lg_req_t *r, struct evbuffer *out)
{
    size_t ol;
    const char *origin = allowed_origin(r, &ol);
    if (!origin)
        return;
    const lg_cors_t *cors = r->route->cors;
    evbuffer_add_printf(out, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n", (int)ol,
                        origin);
    if (cors->allow_credentials)
        evbuffer_add(out, "Access-Control-Allow-Credentials: true\r\n", 40);
    if (cors->expose_headers && r->method != HTTP_OPTIONS)
        evbuffer_add_printf(out, "Access-Control-Expose-Headers: %s\r\n", cors->expose_headers);
}

/* ---- Plugins, LLM and telemetry (wired as those layers land) ---- */

int lg_hooks_access(lg_req_t *r)
{
    LG_UNUSED(r);
    return LG_OK;
}

void lg_hooks_upstream_connected(lg_req_t *r)
{
    LG_UNUSED(r);
}

int lg_hooks_header_filter(lg_req_t *r)
{
    LG_UNUSED(r);
    return LG_OK;
}

int lg_hooks_body_rewrites(lg_req_t *r)
{
    LG_UNUSED(r);
    return 0;
}

void lg_hooks_body(lg_req_t *r, const char *data, size_t len, int eof, struct evbuffer *out)
{
    LG_UNUSED(eof);
    lg_req_emit(r, data, len, out);
}

int lg_hooks_error_body(lg_req_t *r, int status, const char *msg, const char *type,
                        struct evbuffer *out)
{
    LG_UNUSED(r);
    LG_UNUSED(status);
    LG_UNUSED(msg);
    LG_UNUSED(type);
    LG_UNUSED(out);
    return 0;
}

void lg_hooks_log(lg_req_t *r)
{
    LG_UNUSED(r);
}

void lg_hooks_req_free(lg_req_t *r)
{
    for (size_t i = 0; i < r->nextra; i++)
        free(r->extra[i].name), free(r->extra[i].value);
    for (size_t i = 0; i < r->nrextra; i++)
        free(r->rextra[i].name), free(r->rextra[i].value);
    free(r->extra), free(r->rextra);
}

/* ---- Per-worker state ---- */

void lg_proxy_conf_changed(lg_worker_t *w)
{
    LG_UNUSED(w);
}

void lg_proxy_worker_free(lg_worker_t *w)
{
    LG_UNUSED(w);
}
