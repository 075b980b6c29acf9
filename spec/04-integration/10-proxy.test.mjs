// 10-proxy.test.mjs -- the HTTP/1.1 data plane against real local upstreams.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { startGateway, upstream, request, raw, freePort, sleep, eventually } from "../helpers/gateway.mjs";

describe("proxy", () => {
  let up, gw, port, deadPort;
  before(async () => {
    up = await upstream((req, res, rec) => {
      if (req.url.startsWith("/status/")) {
        res.statusCode = Number(req.url.split("/")[2]);
        return res.end(JSON.stringify(rec));
      }
      if (req.url === "/slow") return setTimeout(() => res.end("slow"), 1500);
      if (req.url === "/chunked") {
        res.setHeader("content-type", "text/plain");
        res.write("one,");
        return setTimeout(() => { res.write("two,"); res.end("three"); }, 50);
      }
      if (req.url === "/sse") {
        res.setHeader("content-type", "text/event-stream");
        let i = 0;
        const t = setInterval(() => {
          res.write(`data: {"n":${i}}\n\n`);
          if (++i === 5) { clearInterval(t); res.end(); }
        }, 150);
        res.on("close", () => clearInterval(t));
        return;
      }
      if (req.url === "/forever") {
        res.setHeader("content-type", "text/event-stream");
        const t = setInterval(() => res.write("data: tick\n\n"), 50);
        res.on("close", () => { clearInterval(t); up.cancelled = true; });
        return;
      }
      if (req.url === "/hop") {
        res.setHeader("connection", "keep-alive, x-hop");
        res.setHeader("x-hop", "secret");
        res.setHeader("x-kept", "yes");
        return res.end("ok");
      }
      res.setHeader("content-type", "application/json");
      res.setHeader("x-upstream-drop", "bye");
      res.end(JSON.stringify(rec));
    });
    port = await freePort();
    deadPort = await freePort();
    gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 2}
frontendPolicies: {http: {maxBufferSize: 1024}}
binds:
- port: ${port}
  listeners:
  - routes:
    - name: direct
      matches: [{path: {exact: /direct}}]
      policies: {directResponse: {body: "direct body", status: 201}}
    - name: exact-beats-prefix
      matches: [{path: {exact: /api/exact}}]
      policies: {directResponse: {body: "exact", status: 200}}
    - name: regex
      matches: [{path: {regex: "/api/re[0-9]+"}}]
      policies: {directResponse: {body: "regex", status: 200}}
    - name: method
      matches: [{path: {pathPrefix: /api}, method: DELETE}]
      policies: {directResponse: {body: "delete", status: 200}}
    - name: header
      matches: [{path: {pathPrefix: /api}, headers: [{name: x-pick, value: {exact: me}}]}]
      policies: {directResponse: {body: "header", status: 200}}
    - name: query
      matches: [{path: {pathPrefix: /api}, query: [{name: v, value: {regex: "[0-9]+"}}]}]
      policies: {directResponse: {body: "query", status: 200}}
    - name: hostname
      hostnames: ["*.example.com"]
      matches: [{path: {pathPrefix: /api}}]
      policies: {directResponse: {body: "wildcard host", status: 200}}
    - name: api
      matches: [{path: {pathPrefix: /api}}]
      policies:
        urlRewrite: {path: {prefix: /v2}}
        requestHeaderModifier: {add: {x-added: "1"}, set: {x-set: "2"}, remove: [x-remove]}
        responseHeaderModifier: {add: {x-resp: "r"}, remove: [x-upstream-drop]}
      backends: [{host: 127.0.0.1:${up.port}}]
    - name: full
      matches: [{path: {exact: /full}}]
      policies: {urlRewrite: {path: {full: /replaced}, authority: {full: rewritten.host}}}
      backends: [{host: 127.0.0.1:${up.port}}]
    - name: by-name
      matches: [{path: {pathPrefix: /by-name}}]
      backends: [{host: "localhost:${up.port}"}]
    - name: dead
      matches: [{path: {pathPrefix: /dead}}]
      backends: [{host: 127.0.0.1:${deadPort}}]
    - name: retry
      matches: [{path: {pathPrefix: /retry}}]
      policies: {retry: {attempts: 3, codes: [503]}, urlRewrite: {path: {full: /status/503}}}
      backends: [{host: 127.0.0.1:${up.port}}]
    - name: timeout
      matches: [{path: {exact: /slow}}]
      policies: {timeout: {requestTimeout: 300ms}}
      backends: [{host: 127.0.0.1:${up.port}}]
    - name: cors
      matches: [{path: {pathPrefix: /cors}}]
      policies:
        cors: {allowOrigins: ["https://app.example"], allowMethods: [GET, POST], allowHeaders: [content-type], exposeHeaders: [mcp-session-id], maxAge: 100s}
        directResponse: {body: "cors", status: 200}
    - name: rest
      backends: [{host: 127.0.0.1:${up.port}}]
`);
  });
  after(async () => {
    await gw?.stop();
    await up?.close();
  });

  test("forwards a GET and returns the upstream's answer", async () => {
    const r = await request({ port, path: "/hello?x=1", headers: { "x-forwarded-for": "10.0.0.1" } });
    assert.equal(r.status, 200);
    const rec = JSON.parse(r.body);
    assert.equal(rec.url, "/hello?x=1");
    assert.equal(rec.headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert.equal(rec.headers.host, `127.0.0.1:${port}`);
  });

  test("drops hop-by-hop headers both ways", async () => {
    const r = await request({ port, path: "/echo", headers: { connection: "keep-alive, x-private", "x-private": "1", te: "trailers", "keep-alive": "timeout=5" } });
    const rec = JSON.parse(r.body);
    assert.equal(rec.headers["x-private"], undefined);
    assert.equal(rec.headers.te, undefined);
    assert.equal(rec.headers["keep-alive"], undefined);
    const h = await request({ port, path: "/hop" });
    assert.equal(h.headers["x-hop"], undefined);
    assert.equal(h.headers["x-kept"], "yes");
  });

  test("forwards POST bodies, including chunked ones, with a Content-Length", async () => {
    const r = await request({ port, path: "/post", method: "POST", headers: { "content-type": "application/json" } }, '{"a":1}');
    assert.equal(JSON.parse(r.body).body, '{"a":1}');
    const c = await raw(port, "POST /chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert.match(c, /^HTTP\/1.1 200/);
    const body = JSON.parse(c.slice(c.indexOf("{")).replace(/\r\n0\r\n\r\n$/, "").replace(/^[0-9a-f]+\r\n/, ""));
    assert.equal(body.body, "abcde");
    assert.equal(body.headers["content-length"], "5");
    assert.equal(body.headers["transfer-encoding"], undefined);
  });

  test("keeps client connections alive across requests", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ports = new Set();
    for (let i = 0; i < 5; i++) {
      const r = await new Promise((res, rej) => {
        http.get({ host: "127.0.0.1", port, path: "/ka", agent }, (resp) => {
          ports.add(resp.socket.localPort);
          resp.resume();
          resp.on("end", () => res(resp.statusCode));
        }).on("error", rej);
      });
      assert.equal(r, 200);
    }
    agent.destroy();
    assert.equal(ports.size, 1);
  });

  test("pipelined requests are answered in order", async () => {
    const out = await raw(port, "GET /direct HTTP/1.1\r\nHost: a\r\n\r\nGET /a1 HTTP/1.1\r\nHost: a\r\n\r\nGET /api/exact HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    const statuses = [...out.matchAll(/HTTP\/1.1 (\d+)/g)].map((m) => m[1]);
    assert.deepEqual(statuses, ["201", "200", "200"]);
    assert.ok(out.indexOf("direct body") < out.indexOf('"url":"/a1"'));
    assert.ok(out.trimEnd().endsWith("exact"));
  });

  test("streams chunked and SSE responses event by event", async () => {
    const c = await request({ port, path: "/chunked" });
    assert.equal(c.body, "one,two,three");
    const times = [];
    const started = Date.now();
    await new Promise((resolve, reject) => {
      http.get({ host: "127.0.0.1", port, path: "/sse", agent: false }, (res) => {
        assert.equal(res.headers["content-type"], "text/event-stream");
        res.on("data", (d) => times.push([Date.now() - started, d.toString()]));
        res.on("end", resolve);
      }).on("error", reject);
    });
    const events = times.map((t) => t[1]).join("").split("\n\n").filter(Boolean);
    assert.equal(events.length, 5);
    // the first event must arrive long before the last one was produced (~750 ms)
    assert.ok(times[0][0] < 400, `first event after ${times[0][0]} ms`);
    assert.ok(times.length >= 3, "events arrived in several pieces");
  });

  test("route precedence: exact > prefix > regex, method, headers, query, hostnames", async () => {
    const get = (path, opts = {}) => request({ port, path, ...opts }).then((r) => r.body);
    assert.equal(await get("/api/exact"), "exact");
    // agentgateway ranks exact > prefix > regex: a matching prefix beats a matching regex
    assert.equal(await get("/api/re42").then((b) => JSON.parse(b).url), "/v2/re42");
    assert.equal(await get("/api/x", { method: "DELETE" }), "delete");
    assert.equal(await get("/api/x", { headers: { "x-pick": "me" } }), "header");
    assert.equal(await get("/api/x?v=12"), "query");
    assert.equal(await get("/api/x?v=ab").then((b) => JSON.parse(b).url), "/v2/x?v=ab");
    assert.equal(await get("/api/x", { headers: { host: "a.example.com" } }), "wildcard host");
    assert.equal(await get("/apix").then((b) => JSON.parse(b).url), "/apix", "prefix /api does not match /apix");
  });

  test("header modifiers and URL rewrites", async () => {
    const r = await request({ port, path: "/api/items/7", headers: { "x-remove": "gone", "x-set": "old" } });
    const rec = JSON.parse(r.body);
    assert.equal(rec.url, "/v2/items/7");
    assert.equal(rec.headers["x-added"], "1");
    assert.equal(rec.headers["x-set"], "2");
    assert.equal(rec.headers["x-remove"], undefined);
    assert.equal(r.headers["x-resp"], "r");
    assert.equal(r.headers["x-upstream-drop"], undefined);
    const f = JSON.parse((await request({ port, path: "/full?q=1" })).body);
    assert.equal(f.url, "/replaced?q=1");
    assert.equal(f.headers.host, "rewritten.host");
  });

  test("a backend named by hostname is resolved (non-blocking DNS, /etc/hosts)", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await request({ port, path: "/by-name/x" });
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(r.body).url, "/by-name/x");
    }
  });

  test("directResponse", async () => {
    const r = await request({ port, path: "/direct" });
    assert.equal(r.status, 201);
    assert.equal(r.body, "direct body");
  });

  test("errors are JSON: 404, 502, 504, 413, 400", async () => {
    const shape = (r, status) => {
      assert.equal(r.status, status);
      assert.match(r.headers["content-type"], /application\/json/);
      const e = JSON.parse(r.body).error;
      assert.equal(typeof e.message, "string");
      assert.equal(typeof e.type, "string");
    };
    const g = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
binds:
- port: ${await freePort().then((p) => (g_port = p))}
  listeners:
  - routes:
    - matches: [{path: {exact: /only}}]
      backends: [{host: 127.0.0.1:${up.port}}]
`);
    try { shape(await request({ port: g_port, path: "/nope" }), 404); } finally { await g.stop(); }
    shape(await request({ port, path: "/dead" }), 502);
    shape(await request({ port, path: "/slow" }), 504);
    const before = up.seen.length;
    shape(await request({ port, path: "/big", method: "POST" }, "x".repeat(5000)), 413);
    const chunkedBig = await raw(port, "POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + "y".repeat(2048) + "\r\n0\r\n\r\n");
    assert.match(chunkedBig, /^HTTP\/1.1 413/);
    assert.equal(up.seen.length, before, "nothing was sent upstream");
    const bad = await raw(port, "GARBAGE\r\n\r\n");
    assert.match(bad, /^HTTP\/1.1 400/);
    assert.match(bad, /"error":\{"message"/);
  });

  test("retries on configured status codes", async () => {
    const before = up.seen.length;
    const r = await request({ port, path: "/retry" });
    assert.equal(r.status, 503);
    assert.equal(up.seen.length - before, 3, "three attempts in total");
  });

  test("CORS preflight and response headers", async () => {
    const pre = await request({ port, path: "/cors", method: "OPTIONS", headers: { origin: "https://app.example", "access-control-request-method": "POST" } });
    assert.equal(pre.status, 200);
    assert.equal(pre.headers["access-control-allow-origin"], "https://app.example");
    assert.match(pre.headers["access-control-allow-methods"], /POST/);
    assert.equal(pre.headers["access-control-max-age"], "100");
    const r = await request({ port, path: "/cors", headers: { origin: "https://app.example" } });
    assert.equal(r.headers["access-control-expose-headers"], "mcp-session-id");
    const other = await request({ port, path: "/cors", headers: { origin: "https://evil.example" } });
    assert.equal(other.headers["access-control-allow-origin"], undefined);
  });

  test("a client that disconnects mid-stream cancels the upstream request", async () => {
    up.cancelled = false;
    await new Promise((resolve) => {
      const req = http.get({ host: "127.0.0.1", port, path: "/forever", agent: false }, (res) => {
        res.once("data", () => { req.destroy(); resolve(); });
      });
      req.on("error", () => {});
    });
    await eventually(() => assert.equal(up.cancelled, true), 3000);
  });

  test("HTTP/1.0 clients get a close-delimited or sized answer", async () => {
    const out = await raw(port, "GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n");
    assert.match(out, /^HTTP\/1.1 200/);
    assert.ok(!/transfer-encoding/i.test(out));
    assert.ok(out.endsWith("one,two,three"));
  });

  test("many concurrent requests across two workers", async () => {
    const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => request({ port, path: `/c${i}` })));
    assert.ok(rs.every((r) => r.status === 200));
    rs.forEach((r, i) => assert.equal(JSON.parse(r.body).url, `/c${i}`));
  });
});

let g_port;

describe("client connection timeouts", () => {
  let up, gw, port;
  before(async () => {
    up = await upstream((req, res) => {
      if (req.url === "/slow") return setTimeout(() => res.end("slow"), 2500);
      res.end("ok");
    });
    port = await freePort();
    gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
frontendPolicies: {http: {http1IdleTimeout: 1s}}
binds:
- port: ${port}
  listeners:
  - routes:
    - backends: [{host: "127.0.0.1:${up.port}"}]
`);
  });
  after(async () => { await gw?.stop(); await up?.close(); });

  // connect(): a raw socket that records what it reads and when it closed.
  const connect = () => new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => resolve(s));
    s.data = "";
    s.on("data", (d) => { s.data += d; });
    s.on("close", () => { s.closedAt = Date.now(); });
    s.on("error", reject);
  });

  test("an idle keep-alive connection is closed after http1IdleTimeout", async () => {
    const s = await connect();
    s.write("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    await eventually(() => assert.match(s.data, /\r\n\r\nok$/), 3000);
    const answered = Date.now();
    await eventually(() => assert.ok(s.closedAt), 4000);
    const idle = s.closedAt - answered;
    assert.ok(idle >= 900 && idle <= 3000, `closed after ${idle} ms idle`);
  });

  test("a request in flight is not cut by the idle timeout, and the next one is served", async () => {
    const s = await connect();
    s.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    await eventually(() => assert.match(s.data, /\r\n\r\nslow$/), 5000);
    s.write("GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    await eventually(() => assert.match(s.data, /\r\n\r\nok$/), 2000);
    assert.equal(s.closedAt, undefined);
    s.destroy();
  });

  test("a half-sent request head is not cut by the idle timeout", async () => {
    const s = await connect();
    s.write("GET /a HTTP/1.1\r\n");
    await sleep(2200); // past the idle timeout; the header timeout (30 s) applies
    s.write("Host: x\r\n\r\n");
    await eventually(() => assert.match(s.data, /\r\n\r\nok$/), 2000);
    s.destroy();
  });
});
