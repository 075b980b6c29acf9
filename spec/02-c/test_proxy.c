/* test_proxy.c -- header handling helpers of the proxy (src/proxy.c). */
#include "test.h"

#include "../../src/proxy.c"

int main(void)
{
    ok(is_hop_by_hop("Connection", 10) && is_hop_by_hop("keep-alive", 10) &&
           is_hop_by_hop("TE", 2) && is_hop_by_hop("Transfer-Encoding", 17) &&
           is_hop_by_hop("upgrade", 7) && is_hop_by_hop("Proxy-Connection", 16) &&
           is_hop_by_hop("trailer", 7),
       "RFC 9110 hop-by-hop headers");
    ok(!is_hop_by_hop("Content-Type", 12) && !is_hop_by_hop("te-x", 4) && !is_hop_by_hop("Host", 4),
       "end-to-end headers pass");
    const char *conn = "keep-alive, X-Private ,x-other";
    ok(in_connection_list(conn, strlen(conn), "x-private", 9), "named in Connection");
    ok(in_connection_list(conn, strlen(conn), "X-OTHER", 7), "case-insensitive");
    ok(!in_connection_list(conn, strlen(conn), "x-priv", 6), "no partial names");
    ok_streq(reason_phrase(404), "Not Found", "reason phrase");
    ok_streq(reason_phrase(799), "Unknown", "unknown status");

    struct evbuffer *b = evbuffer_new();
    lg_json_error(b, "bad \"quote\" \\ and\nnewline", "invalid_request_error");
    size_t n = evbuffer_get_length(b);
    char *s = lg_xstrndup((const char *)evbuffer_pullup(b, -1), n);
    ok_streq(s,
             "{\"error\":{\"message\":\"bad \\\"quote\\\" \\\\ and\\u000anewline\","
             "\"type\":\"invalid_request_error\"}}",
             "JSON error escapes quotes, backslashes and control bytes");
    free(s);
    evbuffer_free(b);

    lg_hdr_mod_t m = {0};
    char *rm[] = {"x-b"};
    lg_kv_t set[] = {{"X-A", 3, "1", 1}};
    m.remove = rm;
    m.nremove = 1;
    m.set = set;
    m.nset = 1;
    ok(mod_touches(&m, "X-B", 3) && mod_touches(&m, "x-a", 3) && !mod_touches(&m, "x-c", 3),
       "modifier touches set and removed names");
    return test_done();
}
