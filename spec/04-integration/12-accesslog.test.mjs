// 12-accesslog.test.mjs -- the access log of the real binary: the guide's line shape, JSON
// lines, and the C fast path producing exactly what the Lua format plugins produce.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startGateway, upstream, request, freePort, eventually, raw, tmpdir } from "../helpers/gateway.mjs";

const conf = (port, upPort, logging, extra = "") => `
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
  workerThreads: 1
  logging: ${logging}${extra}
binds:
- port: ${port}
  listeners:
  - routes:
    - name: direct
      matches: [{path: {exact: /direct}}]
      policies: {directResponse: {body: "hi", status: 200}}
    - name: dead
      matches: [{path: {pathPrefix: /dead}}]
      backends: [{host: 127.0.0.1:1}]
    - name: up
      backends: [{host: 127.0.0.1:${upPort}}]
    - name: mock
      matches: [{path: {pathPrefix: /v1}}]
      backends: [{ai: {name: mock, provider: {mock: {}}}}]
`;

const requestLines = (out) => out.split("\n").filter((l) => /\trequest |"scope":"request"/.test(l));

// Sends the same requests and returns the request lines, normalised for time, port, duration.
async function run(logging, extra) {
  const up = await upstream();
  const port = await freePort();
  const gw = await startGateway(conf(port, up.port, logging, extra));
  try {
    await request({ port, path: "/hello?key=sk-secret-1&x=1", headers: { authorization: "Bearer sk-hidden" } });
    await request({ port, path: "/direct" });
    await request({ port, path: "/dead/x" });
    await raw(port, "GET /nl HTTP/1.1\r\nHost: a\rb\r\nConnection: close\r\n\r\n", 500);
    await request({ port, path: "/v1/chat/completions", method: "POST", headers: { "content-type": "application/json" } },
      JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello there gateway" }] }));
    await eventually(() => assert.ok(requestLines(gw.stdout()).length >= 4, gw.stdout()));
  } finally {
    await gw.stop();
    await up.close();
  }
  return requestLines(gw.stdout()).map((l) =>
    l.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z/, "TIME")
      .replace(/127\.0\.0\.1:\d+/g, "ADDR")
      .replace(/ duration=\d+ms/, " DURATION").replace(/"duration":"\d+ms"/, "DURATION")
      .replace(/(route=|"route":")default\/[a-z]+/, "$1ROUTE")
      .replace(/(trace\.id[=":]+)[0-9a-f]{32}/, "$1TRACE").replace(/(span\.id[=":]+)[0-9a-f]{16}/, "$1SPAN"));
}

describe("access log", () => {
  test("text lines: the guide's shape, secrets redacted, C and Lua paths identical", async () => {
    const fast = await run("{}");
    // fields.remove of a key that never appears forces every line through Lua
    const lua = await run("{fields: {remove: [no.such.key]}}");
    assert.deepEqual(fast, lua);
    const plain = fast.find((l) => l.includes("/hello"));
    assert.match(plain, /^TIME\tinfo\trequest gateway=default\/default listener=listener0 route=ROUTE endpoint=ADDR src\.addr=ADDR http\.method=GET http\.host=ADDR http\.path=\/hello\?key=<redacted>&x=1 http\.version=HTTP\/1\.1 http\.status=200 DURATION$/);
    assert.ok(!fast.join("\n").includes("sk-secret-1"));
    assert.ok(!fast.join("\n").includes("sk-hidden"));
    const dead = fast.find((l) => l.includes("/dead"));
    assert.match(dead, /http\.status=502 error="connect to ADDR failed: Connection refused" DURATION$/);
    const llm = fast.find((l) => l.includes("llm.provider"));
    assert.match(llm, /llm\.provider=mock llm\.request\.model=gpt-4o-mini llm\.request\.tokens=\d+ llm\.response\.model=gpt-4o-mini llm\.response\.tokens=\d+ DURATION$/);
  });

  test("traced requests: trace.id and span.id, C and Lua paths identical", async () => {
    const dead = await freePort();
    const tracing = `\n  tracing: {otlpEndpoint: "http://127.0.0.1:${dead}", otlpProtocol: http, randomSampling: true}`;
    const fast = await run("{}", tracing);
    const lua = await run("{fields: {remove: [no.such.key]}}", tracing);
    assert.deepEqual(fast, lua);
    const plain = fast.find((l) => l.includes("/hello"));
    assert.match(plain, /http\.status=200 trace\.id=TRACE span\.id=SPAN DURATION$/);
  });

  test("json lines parse, keep numbers as numbers, and match the Lua plugin", async () => {
    const fast = await run("{format: json}");
    const lua = await run("{format: json, fields: {remove: [no.such.key]}}");
    assert.deepEqual(fast, lua);
    for (const l of fast) {
      const o = JSON.parse(l.replace("TIME", "2025-01-01T00:00:00.000000Z").replace("DURATION", '"duration":"0ms"'));
      assert.equal(o.level, "info");
      assert.equal(o.scope, "request");
      assert.equal(typeof o["http.status"], "number");
    }
  });

  test("fields a plugin sets with lg.log.set_field are appended, JSON-encoded", async () => {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, "tagger.lua"), `local lg = require "lunagate"
return { name = "tagger", version = "0.1.0", priority = 600, schema = { fields = {} },
  access = function() lg.log.set_field("team", "red") end,
  log = function() lg.log.set_field("cost", 3) end }`);
    const port = await freePort();
    const gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1,
         plugins: {paths: [${dir}]}}
binds:
- port: ${port}
  listeners:
  - routes:
    - name: tagged
      matches: [{path: {exact: /tagged}}]
      policies: {plugins: [{name: tagger}], directResponse: {body: ok, status: 200}}
    - policies: {directResponse: {body: ok, status: 200}}
`);
    try {
      await request({ port, path: "/tagged" });
      await request({ port, path: "/plain" });
      await eventually(() => assert.equal(requestLines(gw.stdout()).length, 2));
      const [tagged, plain] = requestLines(gw.stdout());
      assert.match(tagged, /http\.path=\/tagged .* duration=\d+ms team="red" cost=3$/);
      assert.match(plain, /http\.path=\/plain .* duration=\d+ms$/);
    } finally {
      await gw.stop();
    }
  });
});
