// 30-tracing.test.mjs -- tracing end to end: the guide's four tracing config.yaml blocks
// (config/examples/tracing/*.yaml, endpoint pointed at a local OTLP receiver) run in the real
// binary; spans are decoded independently with the OpenTelemetry JS protobuf root.
// SPDX-License-Identifier: MIT
//
// Checks span names, kinds (SERVER, plus a CLIENT child for upstream calls), parent ids,
// traceparent propagation to the upstream, that an unsampled parent stays unsampled, the
// attribute types and values each block's users expect, the Langfuse Authorization header
// and path, and that requests stay fast with the collector down.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import { startGateway, freePort, request, eventually, sleep, upstream, ROOT } from "../helpers/gateway.mjs";
import { startOtlpReceiver } from "../helpers/otlp-receiver.mjs";
import { startFakeProvider, FAKE_TEXT } from "../helpers/fake-provider.mjs";

const KIND_SERVER = 2, KIND_CLIENT = 3;
const STATUS_ERROR = 2;
const SECRET = "sk-test-TRACING-5b1e77c0";
const LANGFUSE_AUTH = "Basic " + Buffer.from("pk-lf-test:sk-lf-test").toString("base64");
const SYSTEM = "You are a helpful assistant.";
const PROMPT = "Say hello in French.";

const hex = (n) => crypto.randomBytes(n).toString("hex");
const traceparent = (trace, span, flags = "01") => `00-${trace}-${span}-${flags}`;

// The example file with the collector endpoint, the listener port and the admin addresses
// filled in. Everything else (the guide's block) is used unchanged.
function exampleConfig(name, { endpoint, mockPort, upPort, fakePort, tracingExtra = "" }) {
  let t = fs.readFileSync(path.join(ROOT, "config/examples/tracing", name + ".yaml"), "utf8");
  assert.match(t, /^    otlpEndpoint: /m);
  t = t.replace(/^    otlpEndpoint: .*$/m, `    otlpEndpoint: ${endpoint}${tracingExtra}`);
  t = t.replace("Basic <base64-encoded-credentials>", LANGFUSE_AUTH);
  t = t.replace(/^config:\n/m, 'config:\n  adminAddr: "{{ADMIN}}"\n  readinessAddr: "{{READY}}"\n'
    + '  statsAddr: "{{STATS}}"\n  workerThreads: 1\n');
  assert.match(t, /- port: 3000\n/);
  t = t.replace(/- port: 3000\n/, `- port: ${mockPort}\n`);
  if (upPort) {
    t += `- port: ${upPort}
  listeners:
  - routes:
    - backends:
      - ai:
          name: openai
          provider: {openAI: {}}
          hostOverride: "127.0.0.1:${fakePort}"
          policies: {backendAuth: {key: "${SECRET}"}}
`;
  }
  return t;
}

// spans of the receiver matching pred, waiting until at least n are there
async function spansWhere(rx, pred, n = 1, ms = 8000) {
  const until = Date.now() + ms;
  for (;;) {
    const got = rx.spans().filter(pred);
    if (got.length >= n || Date.now() > until) return got;
    await rx.waitForSpans(rx.spans().length + 1, Math.min(200, Math.max(1, until - Date.now())));
  }
}

const str = (a, k) => {
  assert.ok(a[k], `missing attribute ${k}`);
  assert.equal(a[k].type, "stringValue", `${k} type`);
  return a[k].value;
};
const int = (a, k) => {
  assert.ok(a[k], `missing attribute ${k}`);
  assert.equal(a[k].type, "intValue", `${k} type`);
  return Number(a[k].value);
};
const dbl = (a, k) => {
  assert.ok(a[k], `missing attribute ${k}`);
  assert.equal(a[k].type, "doubleValue", `${k} type`);
  return a[k].value;
};
const bool = (a, k) => {
  assert.ok(a[k], `missing attribute ${k}`);
  assert.equal(a[k].type, "boolValue", `${k} type`);
  return a[k].value;
};
const strArray = (a, k) => {
  assert.ok(a[k], `missing attribute ${k}`);
  assert.equal(a[k].type, "arrayValue", `${k} type`);
  return a[k].value.map((v) => { assert.equal(v.type, "stringValue"); return v.value; });
};

// a non-streaming chat completion to the mock route; returns the parsed answer
async function mockChat(port, headers = {}) {
  const body = JSON.stringify({ model: "gpt-4o-mini", temperature: 0.25, max_tokens: 50,
    messages: [{ role: "system", content: SYSTEM }, { role: "user", content: PROMPT }] });
  const r = await request({ port, method: "POST", path: "/v1/chat/completions", timeout: 5000,
    headers: { "content-type": "application/json", authorization: "Bearer client-key", ...headers } }, body);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body);
}

// what each guide block's users look for on the SERVER span of the mock request
const EXPECT = {
  jaeger(s, a, ans) {
    assert.match(s.name, /^POST \//);
    assert.equal(str(a, "gen_ai.operation.name"), "chat");
    assert.equal(str(a, "gen_ai.system"), "mock");
    assert.equal(str(a, "gen_ai.request.model"), "gpt-4o-mini");
    assert.equal(str(a, "gen_ai.response.model"), ans.model);
    assert.equal(int(a, "gen_ai.usage.prompt_tokens"), ans.usage.prompt_tokens);
    assert.equal(int(a, "gen_ai.usage.completion_tokens"), ans.usage.completion_tokens);
    assert.equal(a["gen_ai.prompt"], undefined, "no prompt unless configured");
  },
  langfuse(s, a, ans) {
    assert.match(s.name, /^POST \//);
    assert.equal(str(a, "gen_ai.operation.name"), "chat");
    assert.equal(str(a, "gen_ai.system"), "mock");
    assert.deepEqual(JSON.parse(str(a, "gen_ai.prompt")),
      [{ role: "system", content: SYSTEM }, { role: "user", content: PROMPT }]);
    assert.deepEqual(JSON.parse(str(a, "gen_ai.completion")),
      [{ role: "assistant", content: ans.choices[0].message.content }]);
    assert.equal(int(a, "gen_ai.usage.prompt_tokens"), ans.usage.prompt_tokens);
    assert.equal(int(a, "gen_ai.usage.completion_tokens"), ans.usage.completion_tokens);
    assert.equal(str(a, "gen_ai.request.model"), "gpt-4o-mini");
    assert.equal(dbl(a, "gen_ai.request.temperature"), 0.25);
    assert.equal(int(a, "gen_ai.request.max_tokens"), 50);
  },
  phoenix(s, a, ans) {
    assert.equal(s.name, "openai.chat");
    assert.equal(str(a, "openinference.span.kind"), "LLM");
    assert.equal(str(a, "llm.system"), "mock");
    assert.equal(str(a, "llm.input_messages.0.message.role"), "system");
    assert.equal(str(a, "llm.input_messages.0.message.content"), SYSTEM);
    assert.equal(str(a, "llm.input_messages.1.message.role"), "user");
    assert.equal(str(a, "llm.input_messages.1.message.content"), PROMPT);
    assert.equal(str(a, "llm.output_messages.0.role"), "assistant");
    assert.equal(str(a, "llm.output_messages.0.content"), ans.choices[0].message.content);
    assert.equal(int(a, "llm.token_count.prompt"), ans.usage.prompt_tokens);
    assert.equal(int(a, "llm.token_count.completion"), ans.usage.completion_tokens);
    assert.equal(int(a, "llm.token_count.total"), ans.usage.total_tokens);
    assert.equal(a["span.name"], undefined);
  },
  openllmetry(s, a, ans) {
    assert.equal(s.name, "openai.chat");
    assert.equal(str(a, "gen_ai.operation.name"), "chat");
    assert.equal(str(a, "gen_ai.system"), "mock");
    assert.equal(str(a, "gen_ai.prompt.0.role"), "system");
    assert.equal(str(a, "gen_ai.prompt.1.content"), PROMPT);
    assert.equal(str(a, "gen_ai.completion.0.role"), "assistant");
    assert.equal(str(a, "gen_ai.completion.0.content"), ans.choices[0].message.content);
    assert.equal(int(a, "gen_ai.usage.prompt_tokens"), ans.usage.prompt_tokens);
    assert.equal(dbl(a, "gen_ai.request.temperature"), 0.25);
    assert.equal(int(a, "gen_ai.request.max_tokens"), 50);
    assert.equal(bool(a, "llm.is_streaming"), false);
  },
};

// defaults every span carries: access-log keys and GenAI semconv, typed
function checkDefaults(a, ans, port) {
  assert.equal(str(a, "http.method"), "POST");
  assert.equal(str(a, "http.path"), "/v1/chat/completions");
  assert.equal(str(a, "http.host"), `127.0.0.1:${port}`);
  assert.equal(int(a, "http.status"), 200);
  assert.equal(str(a, "gen_ai.provider.name"), "mock");
  assert.equal(int(a, "gen_ai.usage.input_tokens"), ans.usage.prompt_tokens);
  assert.equal(int(a, "gen_ai.usage.output_tokens"), ans.usage.completion_tokens);
  assert.deepEqual(strArray(a, "gen_ai.response.finish_reasons"), ["stop"]);
  for (const [k, v] of Object.entries(a)) {
    if (v.type === "stringValue") {
      assert.ok(!v.value.includes("client-key"), `${k} leaks the client's key`);
      assert.ok(!v.value.includes(SECRET), `${k} leaks the backend key`);
    }
  }
}

const BLOCKS = [
  { name: "jaeger", transport: "grpc" },
  { name: "langfuse", transport: "http" },
  { name: "phoenix", transport: "grpc" },
  { name: "openllmetry", transport: "grpc" },
];

describe("tracing with the guide's config.yaml blocks", () => {
  let rx, fake;
  const guideSpans = {};   // block name -> SERVER span of the mock request

  before(async () => {
    rx = await startOtlpReceiver();
    fake = await startFakeProvider();
  });

  after(async () => {
    if (rx) await rx.close();
    if (fake) await fake.close();
  });

  for (const block of BLOCKS) {
    describe(block.name, () => {
      let gw, mockPort, upPort;

      before(async () => {
        mockPort = await freePort();
        upPort = await freePort();
        const endpoint = block.transport === "grpc"
          ? `http://127.0.0.1:${rx.grpcPort}`
          : `http://127.0.0.1:${rx.httpPort}/api/public/otel`;
        gw = await startGateway(exampleConfig(block.name, { endpoint, mockPort, upPort, fakePort: fake.port }),
          { env: { OTEL_SERVICE_NAME: `lunagate-${block.name}` } });
      });

      after(async () => {
        if (gw) await gw.stop();
      });

      test("a chat completion without a traceparent gives one SERVER root span (randomSampling: true)", async () => {
        const ans = await mockChat(mockPort);
        const service = `lunagate-${block.name}`;
        const spans = await spansWhere(rx, (s) => s.resource["service.name"]?.value === service
          && s.kind === KIND_SERVER && s.parentSpanId === "" && s.attributes["http.path"]?.value === "/v1/chat/completions");
        assert.equal(spans.length, 1, `spans: ${JSON.stringify(rx.spans().map((s) => s.name))}\n${gw.logs()}`);
        const s = spans[0];
        assert.match(s.traceId, /^[0-9a-f]{32}$/);
        assert.notEqual(s.traceId, "0".repeat(32));
        assert.match(s.spanId, /^[0-9a-f]{16}$/);
        assert.equal(s.flags & 0xff, 1, "sampled flag on the span");
        assert.ok(s.end >= s.start && s.start > 0n);
        assert.ok(!s.status || s.status.code !== STATUS_ERROR);
        const a = s.attributes;
        checkDefaults(a, ans, mockPort);
        EXPECT[block.name](s, a, ans);
        guideSpans[block.name] = s;
        // the mock answers locally: no upstream call, no CLIENT span
        const clients = rx.spans().filter((c) => c.traceId === s.traceId && c.kind === KIND_CLIENT);
        assert.equal(clients.length, 0);
      });

      test("a streamed call through an upstream: SERVER + CLIENT, traceparent propagated", async () => {
        const trace = hex(16), parent = hex(8);
        fake.clear();
        const client = new OpenAI({ baseURL: `http://127.0.0.1:${upPort}/v1`, apiKey: "client-key",
          maxRetries: 0, timeout: 10000, defaultHeaders: { traceparent: traceparent(trace, parent), tracestate: "vendor=abc" } });
        const stream = await client.chat.completions.create({
          model: "gpt-4o-mini", stream: true, stream_options: { include_usage: true },
          messages: [{ role: "user", content: PROMPT }],
        });
        let text = "", usage = null;
        for await (const c of stream) {
          if (c.usage) usage = c.usage;
          for (const ch of c.choices || []) text += ch.delta?.content || "";
        }
        assert.equal(text, FAKE_TEXT);
        assert.ok(usage);

        // the upstream saw the same trace, a new parent id and the sampled flag
        const up = fake.last();
        const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(up.headers.traceparent || "");
        assert.ok(m, `upstream traceparent: ${up.headers.traceparent}`);
        assert.equal(m[1], trace);
        assert.notEqual(m[2], parent);
        assert.equal(parseInt(m[3], 16) & 1, 1);
        assert.equal(up.headers.tracestate, "vendor=abc");

        const spans = await spansWhere(rx, (s) => s.traceId === trace, 2);
        const server = spans.filter((s) => s.kind === KIND_SERVER);
        const clientSpans = spans.filter((s) => s.kind === KIND_CLIENT);
        assert.equal(server.length, 1, JSON.stringify(spans.map((s) => [s.name, s.kind])));
        assert.equal(clientSpans.length, 1, JSON.stringify(spans.map((s) => [s.name, s.kind])));
        const [s] = server, [c] = clientSpans;
        assert.equal(s.parentSpanId, parent, "the SERVER span's parent is the incoming span");
        assert.equal(c.parentSpanId, s.spanId, "the CLIENT span is a child of the SERVER span");
        assert.notEqual(s.spanId, parent);
        assert.notEqual(c.spanId, s.spanId);
        assert.ok([s.spanId, c.spanId].includes(m[2]), "the upstream's parent is one of our spans");
        assert.equal(c.flags & 0xff, 1);
        assert.ok(c.start >= s.start && c.end <= s.end + 1000000n);
        assert.match(c.name, new RegExp(`127\\.0\\.0\\.1:${fake.port}`));
        const a = s.attributes;
        assert.equal(str(a, "gen_ai.provider.name"), "openai");
        assert.equal(str(a, "gen_ai.request.model"), "gpt-4o-mini");
        assert.equal(str(a, "gen_ai.response.model"), "gpt-4o-mini-fake");
        assert.equal(int(a, "gen_ai.usage.input_tokens"), usage.prompt_tokens);
        assert.equal(int(a, "gen_ai.usage.output_tokens"), usage.completion_tokens);
        if (block.name === "openllmetry") assert.equal(bool(a, "llm.is_streaming"), true);
        if (block.name === "phoenix") assert.equal(str(a, "llm.output_messages.0.content"), FAKE_TEXT);
        if (block.name === "langfuse") {
          assert.deepEqual(JSON.parse(str(a, "gen_ai.completion")), [{ role: "assistant", content: FAKE_TEXT }]);
        }
        for (const [k, v] of Object.entries(a)) {
          if (v.type === "stringValue") assert.ok(!v.value.includes(SECRET), `${k} leaks the backend key`);
        }
      });

      if (block.name === "jaeger") {
        test("an unsampled incoming parent stays unsampled", async () => {
          const trace = hex(16), parent = hex(8);
          fake.clear();
          const r = await request({ port: upPort, method: "POST", path: "/v1/chat/completions", timeout: 5000,
            headers: { "content-type": "application/json", traceparent: traceparent(trace, parent, "00") } },
          JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }));
          assert.equal(r.status, 200);
          const up = fake.last();
          const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(up.headers.traceparent || "");
          assert.ok(m, `upstream traceparent: ${up.headers.traceparent}`);
          assert.equal(m[1], trace);
          assert.equal(parseInt(m[3], 16) & 1, 0, "still unsampled upstream");
          // a sampled request after it: once its spans arrive, the unsampled one would have too
          const trace2 = hex(16);
          await mockChat(mockPort, { traceparent: traceparent(trace2, hex(8)) });
          await spansWhere(rx, (s) => s.traceId === trace2, 1);
          await sleep(300);
          assert.equal(rx.spans().filter((s) => s.traceId === trace).length, 0, "no span for the unsampled trace");
        });

        test("an error answer gives an error status", async () => {
          const trace = hex(16);
          const r = await request({ port: upPort, method: "POST", path: "/v1/chat/completions", timeout: 5000,
            headers: { "content-type": "application/json", traceparent: traceparent(trace, hex(8)) } },
          JSON.stringify({ model: "error-503", messages: [{ role: "user", content: "hi" }] }));
          assert.equal(r.status, 503);
          const [s] = await spansWhere(rx, (x) => x.traceId === trace && x.kind === KIND_SERVER, 1);
          assert.ok(s, "server span");
          assert.equal(s.status?.code, STATUS_ERROR);
          assert.equal(int(s.attributes, "http.status"), 503);
        });
      }

      if (block.name === "langfuse") {
        test("exports OTLP/HTTP protobuf to /api/public/otel/v1/traces with the Authorization header", async () => {
          const reqs = rx.requests.filter((r) => r.transport === "http");
          assert.ok(reqs.length > 0, "no OTLP/HTTP export arrived");
          for (const r of reqs) {
            assert.equal(r.path, "/api/public/otel/v1/traces");
            assert.equal(r.headers.authorization, LANGFUSE_AUTH);
            assert.match(r.contentType || "", /^application\/x-protobuf/);
            assert.equal(r.error, null);
          }
          // the header is a secret: never in the gateway's output
          assert.ok(!gw.logs().includes(LANGFUSE_AUTH.split(" ")[1]));
        });
      }
    });
  }

  // per-request values that differ between two gateways (only their types are compared)
  const VOLATILE = new Set(["trace.id", "span.id", "src.addr", "http.host", "endpoint",
    "agw.ai.time_to_first_token", "agw.ai.time_per_output_token", "gen_ai.response.time_to_first_chunk"]);

  test("`preset: <name>` gives the same spans as the guide's block", async () => {
    for (const name of [...Object.keys(guideSpans), "otel-genai"]) {
      const mockPort = await freePort();
      const service = `lunagate-preset-${name}`;
      const gw = await startGateway(`
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
  workerThreads: 1
  tracing:
    otlpEndpoint: http://127.0.0.1:${name === "langfuse" ? rx.httpPort + "/api/public/otel" : rx.grpcPort}
    randomSampling: true
    preset: ${name}
binds:
- port: ${mockPort}
  listeners:
  - routes:
    - backends:
      - ai: {name: mock, provider: {mock: {}}}
`, { env: { OTEL_SERVICE_NAME: service } });
      try {
        const ans = await mockChat(mockPort);
        const [s] = await spansWhere(rx, (x) => x.resource["service.name"]?.value === service
          && x.kind === KIND_SERVER, 1);
        assert.ok(s, `${name}: no span`);
        if (name === "otel-genai") {
          assert.equal(s.name, "chat gpt-4o-mini");
          const a = s.attributes;
          checkDefaults(a, ans, mockPort);
          assert.deepEqual(JSON.parse(str(a, "gen_ai.input.messages")).map((m) => m.role), ["system", "user"]);
          assert.equal(JSON.parse(str(a, "gen_ai.output.messages"))[0].parts[0].content,
            ans.choices[0].message.content);
          continue;
        }
        const g = guideSpans[name];
        assert.equal(s.name, g.name, name);
        assert.deepEqual(Object.keys(s.attributes).sort(), Object.keys(g.attributes).sort(), name);
        for (const [k, v] of Object.entries(g.attributes)) {
          if (VOLATILE.has(k)) {
            assert.equal(s.attributes[k].type, v.type, `${name}: ${k}`);
            continue;
          }
          assert.deepEqual(s.attributes[k], v, `${name}: ${k}`);
        }
      } finally {
        await gw.stop();
      }
    }
  });

  test("randomSampling as CEL, clientSampling false", async () => {
    const port = await freePort();
    const service = "lunagate-sampling";
    const gw = await startGateway(`
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
  workerThreads: 1
  tracing:
    otlpEndpoint: http://127.0.0.1:${rx.grpcPort}
    randomSampling: 'request.headers["x-trace-me"] == "yes"'
    clientSampling: false
binds:
- port: ${port}
  listeners:
  - routes:
    - policies: {directResponse: {body: "ok", status: 200}}
`, { env: { OTEL_SERVICE_NAME: service } });
    try {
      const parentTrace = hex(16);
      for (const [p, headers] of [["/no", {}], ["/yes", { "x-trace-me": "yes" }],
        ["/parent", { traceparent: traceparent(parentTrace, hex(8)) }]]) {
        const r = await request({ port, path: p, headers, timeout: 3000 });
        assert.equal(r.status, 200);
      }
      const spans = await spansWhere(rx, (x) => x.resource["service.name"]?.value === service, 1);
      await sleep(700);                        // one more batch interval for stragglers
      const names = rx.spans().filter((x) => x.resource["service.name"]?.value === service).map((x) => x.name);
      assert.deepEqual(names, ["GET /yes"], JSON.stringify(names));
      assert.equal(spans[0].parentSpanId, "");
    } finally {
      await gw.stop();
    }
  });

  // Plain requests' spans with only the default attributes are built in C (runtime.c
  // plain_span); a `fields.remove` of a key no span has sends them through lunagate.tracing
  // instead. Both gateways must export the same spans.
  test("plain spans: the C builder and lunagate.tracing agree", async () => {
    const up = await upstream((req, res) => {
      res.writeHead(req.url.startsWith("/fail") ? 503 : 200, { "content-type": "text/plain" });
      res.end("ok");
    });
    const dead = await freePort();
    const gws = {};
    try {
      for (const via of ["c", "lua"]) {
        const port = await freePort();
        gws[via] = { port, gw: await startGateway(`
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
  workerThreads: 1
  tracing:
    otlpEndpoint: http://127.0.0.1:${rx.grpcPort}
    randomSampling: true${via === "lua" ? "\n    fields: {remove: [no.such.attribute]}" : ""}
binds:
- port: ${port}
  listeners:
  - name: front
    routes:
    - name: dead
      matches: [{path: {pathPrefix: /dead}}]
      backends: [{host: "127.0.0.1:${dead}"}]
    - name: direct
      matches: [{path: {pathPrefix: /direct}}]
      policies: {directResponse: {body: "nope", status: 418}}
    - name: up
      backends: [{host: "127.0.0.1:${up.port}"}]
`, { env: { OTEL_SERVICE_NAME: `plain-${via}` } }) };
      }
      const reqs = [
        { path: "/a/b?key=s3cr3t&x=1&token=t" },
        { path: "/fail/now", method: "DELETE" },
        { path: "/dead/x" },
        { path: "/direct" },
        { path: "/parent", headers: { traceparent: traceparent(hex(16), hex(8)), tracestate: "k=v" } },
      ];
      for (const via of ["c", "lua"]) {
        for (const q of reqs) {
          const r = await request({ port: gws[via].port, path: q.path, method: q.method || "GET",
                                    headers: q.headers || {}, timeout: 5000 });
          assert.ok(r.status > 0);
        }
      }
      const norm = (x) => {
        const a = { ...x.attributes };
        for (const k of ["trace.id", "span.id", "src.addr", "http.host"]) {
          assert.ok(k === "http.host" || x.kind !== KIND_SERVER || a[k], `${x.name}: ${k}`);
          delete a[k];
        }
        return { name: x.name, kind: x.kind, status: x.status, keys: Object.keys(a), attrs: a,
                 traceState: x.traceState, parent: x.parentSpanId !== "" };
      };
      const of = (via) => spansWhere(rx, (x) => x.resource["service.name"]?.value === `plain-${via}`, 8);
      const c = (await of("c")).map(norm), lua = (await of("lua")).map(norm);
      assert.equal(c.length, lua.length);
      const byName = (l) => [...l].sort((p, q) => (p.name + p.kind).localeCompare(q.name + q.kind));
      assert.deepEqual(byName(c), byName(lua));
      const a = byName(c).find((x) => x.name === "GET /a/b").attrs;
      assert.equal(a["http.path"].value, "/a/b?key=<redacted>&x=1&token=<redacted>");
    } finally {
      for (const g of Object.values(gws)) await g.gw.stop();
      await up.close();
    }
  });

  test("long list attributes stay arrays and do not hurt the worker", async () => {
    const port = await freePort();
    const service = "lunagate-lists";
    const list = "[" + Array.from({ length: 3000 }, (_, i) => `"s${i}"`).join(",") + "]";
    const gw = await startGateway(`
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
  workerThreads: 1
  tracing:
    otlpEndpoint: http://127.0.0.1:${rx.grpcPort}
    randomSampling: true
    fields:
      add:
        many: '${list}'
        ints: "[1, 2, 3]"
binds:
- port: ${port}
  listeners:
  - routes:
    - policies: {directResponse: {body: "ok", status: 200}}
`, { env: { OTEL_SERVICE_NAME: service } });
    try {
      for (let i = 0; i < 5; i++) {
        const r = await request({ port, path: "/list", timeout: 3000 });
        assert.equal(r.status, 200);
      }
      const spans = await spansWhere(rx, (x) => x.resource["service.name"]?.value === service, 5);
      assert.equal(spans.length, 5);
      const a = spans[0].attributes;
      assert.equal(spans[0].name, "GET /list");
      const many = strArray(a, "many");
      assert.equal(many.length, 3000);
      assert.equal(many[2999], "s2999");
      assert.equal(a.ints.type, "arrayValue");
      assert.deepEqual(a.ints.value.map((v) => [v.type, Number(v.value)]),
        [["intValue", 1], ["intValue", 2], ["intValue", 3]]);
    } finally {
      await gw.stop();
    }
  });

  test("with the collector down, requests succeed at full speed and drops are counted", async () => {
    const dead = await freePort();
    const mockPort = await freePort();
    const yaml = exampleConfig("jaeger", { endpoint: `http://127.0.0.1:${dead}`, mockPort,
      tracingExtra: "\n    batchSize: 2\n    queueSize: 4" });
    const gw = await startGateway(yaml);
    try {
      await mockChat(mockPort);                 // warm up
      const t0 = Date.now();
      const N = 40;
      for (let i = 0; i < N; i++) await mockChat(mockPort);
      const ms = Date.now() - t0;
      assert.ok(ms < 6000, `${N} requests took ${ms} ms with the collector down`);
      await eventually(async () => {
        const r = await request({ host: "127.0.0.1", port: Number(gw.stats.split(":")[1]), path: "/metrics" });
        const m = /^agentgateway_spans_dropped_total(?:\{[^}]*\})? (\d+)/m.exec(r.body);
        assert.ok(m && Number(m[1]) > 0, "spans_dropped counter: " + (m ? m[0] : "missing"));
      }, 5000, 100);
    } finally {
      await gw.stop();
    }
  });
});
