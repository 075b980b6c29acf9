/* test_conf.c -- route selection and config compilation (src/conf.c), from real YAML. */
#include "test.h"

#include "../../src/conf.c"

#include <lualib.h>

#include "config.h"

int luaopen_cjson(lua_State *L);

static lua_State *state(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushstring(L, LG_HOME "/lua/?.lua;" LG_HOME "/lua/?/init.lua");
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pop(L, 2);
    return L;
}

static lg_conf_t *compile(lua_State *L, const char *yaml, lg_err_t *err)
{
    if (lg_config_load(L, yaml, strlen(yaml), "t.yaml", err) != LG_OK)
        return NULL;
    lg_conf_t *c = lg_conf_compile(L, "t.yaml", yaml, strlen(yaml), err);
    lua_pop(L, 1);
    return c;
}

typedef struct {
    const char *names[4], *values[4];
} hdrs_t;

static const char *hdr(void *arg, const char *name, size_t nlen, size_t *vlen)
{
    hdrs_t *h = arg;
    for (int i = 0; i < 4 && h->names[i]; i++)
        if (strlen(h->names[i]) == nlen && strncmp(h->names[i], name, nlen) == 0) {
            *vlen = strlen(h->values[i]);
            return h->values[i];
        }
    return NULL;
}

static const char *pick(lg_conf_t *c, int port, const char *host, const char *method,
                        const char *path, const char *query, hdrs_t *h)
{
    lg_listener_t *l;
    lg_bind_t *b;
    const lg_match_t *m;
    lg_route_t *r =
        lg_conf_select(c, port, host, strlen(host), method, strlen(method), path, strlen(path),
                       query, query ? strlen(query) : 0, hdr, h, &l, &b, &m);
    return r ? r->name : "(none)";
}

static const char *yaml =
    "binds:\n"
    "- port: 3000\n"
    "  listeners:\n"
    "  - name: any\n"
    "    routes:\n"
    "    - name: regex\n"
    "      matches: [{path: {regex: \"/api/v[0-9]+/.*\"}}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: prefix-short\n"
    "      matches: [{path: {pathPrefix: /api}}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: prefix-long\n"
    "      matches: [{path: {pathPrefix: /api/v1}}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: exact\n"
    "      matches: [{path: {exact: /api/v1/models}}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: method\n"
    "      matches: [{path: {pathPrefix: /api/v1}, method: POST}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: header\n"
    "      matches: [{path: {pathPrefix: /api/v1}, method: POST, headers: [{name: X-Env, "
    "value: {exact: prod}}]}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: query\n"
    "      matches: [{path: {pathPrefix: /q}, query: [{name: v, value: {regex: \"[0-9]+\"}}]}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: first-tie\n"
    "      matches: [{path: {pathPrefix: /tie}}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: second-tie\n"
    "      matches: [{path: {pathPrefix: /tie}}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "    - name: wildcard-host\n"
    "      hostnames: [\"*.example.com\"]\n"
    "      matches: [{path: {pathPrefix: /host}}]\n"
    "      backends: [{host: 127.0.0.1:1}]\n"
    "  - name: exact-listener\n"
    "    hostname: special.test\n"
    "    routes:\n"
    "    - name: special\n"
    "      policies: {directResponse: {body: x, status: 200}}\n"
    "- port: 4000\n"
    "  listeners:\n"
    "  - routes:\n"
    "    - name: other\n"
    "      policies:\n"
    "        directResponse: {body: hi, status: 201}\n"
    "        timeout: {requestTimeout: 1500ms}\n"
    "        retry: {attempts: 3, codes: [503], backoff: 1s}\n"
    "        requestHeaderModifier: {set: {X-A: \"1\"}, remove: [X-B]}\n";

int main(void)
{
    lua_State *L = state();
    lg_err_t err = {0};
    lg_conf_t *c = compile(L, yaml, &err);
    ok(c != NULL, "compiles: %s", c ? "" : err.msg);
    if (!c)
        return test_done();
    hdrs_t none = {{NULL}, {NULL}};
    hdrs_t prod = {{"x-env", NULL}, {"prod", NULL}};

    ok_streq(pick(c, 3000, "a", "GET", "/api/v1/models", NULL, &none), "exact", "exact wins");
    ok_streq(pick(c, 3000, "a", "GET", "/api/v1/chat", NULL, &none), "prefix-long",
             "longer prefix beats shorter prefix and regex");
    ok_streq(pick(c, 3000, "a", "GET", "/api/v2/chat", NULL, &none), "prefix-short",
             "a prefix beats a regex");
    ok_streq(pick(c, 3000, "a", "GET", "/apix", NULL, &none), "(none)",
             "prefix /api does not match /apix");
    ok_streq(pick(c, 3000, "a", "POST", "/api/v1/chat", NULL, &none), "method",
             "a method match beats the same prefix without one");
    ok_streq(pick(c, 3000, "a", "POST", "/api/v1/chat", NULL, &prod), "header",
             "a header match beats fewer header matches");
    ok_streq(pick(c, 3000, "a", "GET", "/q", "v=42", &none), "query", "query regex matches");
    ok_streq(pick(c, 3000, "a", "GET", "/q", "v=abc", &none), "(none)", "query regex fails");
    ok_streq(pick(c, 3000, "a", "GET", "/q", "x=1&v=7", &none), "query", "second parameter");
    ok_streq(pick(c, 3000, "a", "GET", "/tie/1", NULL, &none), "first-tie", "ties: first rule");
    ok_streq(pick(c, 3000, "b.example.com", "GET", "/host", NULL, &none), "wildcard-host",
             "wildcard hostname");
    ok_streq(pick(c, 3000, "example.com", "GET", "/host", NULL, &none), "(none)",
             "*.example.com does not match example.com");
    ok_streq(pick(c, 3000, "special.test", "GET", "/", NULL, &none), "special",
             "an exact listener hostname wins over *");
    ok_streq(pick(c, 4000, "a", "GET", "/anything", NULL, &none), "other",
             "default match is pathPrefix /");
    ok_streq(pick(c, 5000, "a", "GET", "/", NULL, &none), "(none)", "unknown port");

    lg_route_t *o = &c->binds[1].listeners[0].routes[0];
    ok(o->has_direct && o->direct_status == 201, "directResponse compiled");
    ok(o->request_timeout_ms == 1500, "timeout in ms: %d", o->request_timeout_ms);
    ok(o->retry_attempts == 3 && o->nretry_codes == 1 && o->retry_codes[0] == 503 &&
           o->retry_backoff_ms == 1000,
       "retry compiled");
    ok(o->req_hdr && o->req_hdr->nset == 1 && o->req_hdr->nremove == 1 &&
           strcmp(o->req_hdr->remove[0], "x-b") == 0,
       "header modifier compiled, remove lowercased");
    ok_streq(o->key, "default/other", "route key");
    ok_streq(c->binds[0].key, "bind/3000", "bind key");
    ok_streq(c->binds[1].listeners[0].name, "listener0", "default listener name");

    ok(lg_host_match("*", "x", 1) && lg_host_match("*.a.com", "b.a.com", 7) &&
           !lg_host_match("*.a.com", "a.com", 5) && lg_host_match("A.com", "a.COM", 5),
       "host patterns");
    const char *v;
    size_t vl;
    ok(lg_query_param("a=1&bb=2&c", 10, "bb", 2, &v, &vl) && vl == 1 && v[0] == '2',
       "query param found");
    ok(lg_query_param("a=1&c", 5, "c", 1, &v, &vl) && vl == 0, "query param without value");
    ok(!lg_query_param("ab=1", 4, "a", 1, &v, &vl), "no partial name match");

    /* errors the C side owns */
    lg_err_t e2 = {0};
    const char *badre = "binds:\n- port: 1\n  listeners:\n  - routes:\n    - matches: [{path: "
                        "{regex: \"([\"}}]\n      backends: [{host: 127.0.0.1:1}]\n";
    ok(compile(L, badre, &e2) == NULL && strstr(e2.msg, "invalid regex"), "bad regex: %s", e2.msg);
    lg_err_t e3 = {0};
    const char *dup = "binds:\n- port: 1\n  listeners:\n  - routes:\n    - "
                      "policies: {directResponse: {body: a}}\n- port: 1\n  listeners: []\n";
    ok(compile(L, dup, &e3) == NULL, "duplicate port rejected: %s", e3.msg);

    lg_conf_t *r = lg_conf_ref(c);
    lg_conf_unref(r);
    ok(c->refcnt == 1, "refcounting");
    lg_conf_unref(c);
    lua_close(L);
    return test_done();
}
