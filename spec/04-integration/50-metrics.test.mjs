// 50-metrics.test.mjs -- the Prometheus endpoint of the real binary: a live scrape after mixed
// traffic passes `promtool check metrics`, and a parser written here (Prometheus text 0.0.4 and
// OpenMetrics 1.0) reads exact values: requests by status/route/reason, duration histogram
// counts and buckets, token usage of the mock provider, build_info, prefix, remove, custom
// labels from CEL, and exact totals from a two-worker run under concurrent load.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { ROOT, startGateway, upstream, request, freePort, eventually } from "../helpers/gateway.mjs";

const PROMTOOL = "/usr/bin/promtool";
const VERSION = fs.readFileSync(path.join(ROOT, "VERSION"), "utf8").trim();
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 80];
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
  67108864];

// ---------------------------------------------------------------------------------------------
// Exposition parser. parse(text, {openmetrics}) -> Map family name -> {name, type, help, unit,
// samples: [{name, labels: {..}, value}]}. Throws on anything malformed: unknown line shapes,
// bad label syntax or escapes, samples before their TYPE, samples not belonging to their family,
// duplicate series, a repeated family, and (OpenMetrics) a missing or misplaced `# EOF`.
const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(s, line) {
  if (s === "+Inf" || s === "Inf") return Infinity;
  if (s === "-Inf") return -Infinity;
  if (s === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`bad value "${s}" in: ${line}`);
  return Number(s);
}

function parseLabels(str, line) {
  // str starts right after "{"; returns [labels, rest after "}"]
  const labels = {};
  let i = 0;
  for (;;) {
    if (str[i] === "}") return [labels, str.slice(i + 1)];
    const eq = str.indexOf("=", i);
    if (eq < 0) throw new Error(`bad labels in: ${line}`);
    const name = str.slice(i, eq).trim();
    if (!LABEL_RE.test(name)) throw new Error(`bad label name "${name}" in: ${line}`);
    if (name in labels) throw new Error(`duplicate label "${name}" in: ${line}`);
    if (str[eq + 1] !== '"') throw new Error(`unquoted label value in: ${line}`);
    let j = eq + 2, v = "";
    for (;;) {
      const c = str[j];
      if (c === undefined) throw new Error(`unterminated label value in: ${line}`);
      if (c === "\\") {
        const n = str[j + 1];
        if (n === "\\") v += "\\";
        else if (n === '"') v += '"';
        else if (n === "n") v += "\n";
        else throw new Error(`bad escape \\${n} in: ${line}`);
        j += 2;
      } else if (c === '"') { j++; break; } else { v += c; j++; }
    }
    labels[name] = v;
    if (str[j] === ",") j++;
    else if (str[j] !== "}") throw new Error(`expected , or } in: ${line}`);
    i = j;
  }
}

const SUFFIXES = {
  counter: { prom: [""], om: ["_total", "_created"] },
  gauge: { prom: [""], om: [""] },
  histogram: { prom: ["_bucket", "_sum", "_count"], om: ["_bucket", "_sum", "_count", "_created"] },
  summary: { prom: ["", "_sum", "_count"], om: ["", "_sum", "_count", "_created"] },
  untyped: { prom: [""], om: [""] },
  unknown: { prom: [""], om: [""] },
  info: { prom: [], om: ["_info"] },
  stateset: { prom: [], om: [""] },
  gaugehistogram: { prom: [], om: ["_bucket", "_gsum", "_gcount"] },
};

export function parseExposition(text, { openmetrics = false } = {}) {
  const families = new Map();
  const seen = new Set();
  let current = null;
  const lines = text.split("\n");
  if (openmetrics) {
    // the last line is "# EOF" (optionally followed by one newline)
    if (lines[lines.length - 1] === "") lines.pop();
    if (lines.pop() !== "# EOF") throw new Error("OpenMetrics exposition does not end with # EOF");
    if (lines.includes("# EOF")) throw new Error("# EOF before the end");
  } else if (text.length && !text.endsWith("\n")) {
    throw new Error("text exposition does not end with a newline");
  }
  const family = (name) => {
    let f = families.get(name);
    if (!f) {
      f = { name, type: undefined, help: undefined, unit: undefined, samples: [] };
      families.set(name, f);
    }
    return f;
  };
  for (const line of lines) {
    if (line === "") {
      if (openmetrics) throw new Error("empty line in OpenMetrics exposition");
      continue;
    }
    if (line.startsWith("#")) {
      const m = line.match(/^# (HELP|TYPE|UNIT) (\S+)(?: (.*))?$/);
      if (!m) {
        if (openmetrics) throw new Error(`bad comment line: ${line}`);
        continue; // plain comments are allowed in 0.0.4
      }
      const [, kw, name, rest = ""] = m;
      if (!NAME_RE.test(name)) throw new Error(`bad metric name in: ${line}`);
      const f = family(name);
      if (current !== f && f.samples.length) throw new Error(`family ${name} is split: ${line}`);
      if (kw === "TYPE") {
        if (f.type) throw new Error(`second TYPE for ${name}`);
        if (!SUFFIXES[rest] || (!openmetrics && SUFFIXES[rest].prom.length === 0))
          throw new Error(`bad type "${rest}" in: ${line}`);
        f.type = rest;
      } else if (kw === "HELP") {
        if (f.help !== undefined) throw new Error(`second HELP for ${name}`);
        f.help = rest;
      } else {
        if (!openmetrics) throw new Error(`# UNIT in a 0.0.4 exposition: ${line}`);
        if (rest && !name.endsWith("_" + rest)) throw new Error(`unit ${rest} is not a suffix of ${name}`);
        f.unit = rest;
      }
      current = f;
      continue;
    }
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{|\s)(.*)$/);
    if (!m) throw new Error(`bad sample line: ${line}`);
    let [, name, sep, rest] = m;
    let labels = {};
    if (sep === "{") [labels, rest] = parseLabels(rest, line);
    rest = rest.replace(/^ /, "");
    if (openmetrics) rest = rest.split(" # ")[0]; // exemplar
    const parts = rest.trim().split(/\s+/);
    if (parts.length < 1 || parts.length > 2 || parts[0] === "") throw new Error(`bad sample line: ${line}`);
    const value = parseValue(parts[0], line);
    // which family: the current one, whose name plus one of the type's suffixes is `name`
    if (!current || !current.type) throw new Error(`sample before its TYPE: ${line}`);
    const sufs = SUFFIXES[current.type][openmetrics ? "om" : "prom"];
    if (!sufs.some((s) => current.name + s === name)) throw new Error(`sample ${name} outside family ${current.name}`);
    const key = name + JSON.stringify(Object.entries(labels).sort());
    if (seen.has(key)) throw new Error(`duplicate series: ${line}`);
    seen.add(key);
    if (current.type === "histogram" && name.endsWith("_bucket") && !("le" in labels))
      throw new Error(`bucket without le: ${line}`);
    current.samples.push({ name, labels, value });
  }
  for (const f of families.values()) if (!f.type && openmetrics) throw new Error(`family ${f.name} without TYPE`);
  return families;
}

// select(families, sampleName, match) -> samples whose labels include `match`
function select(fams, sampleName, match = {}) {
  const out = [];
  for (const f of fams.values())
    for (const s of f.samples)
      if (s.name === sampleName && Object.entries(match).every(([k, v]) => s.labels[k] === v)) out.push(s);
  return out;
}
function one(fams, sampleName, match) {
  const s = select(fams, sampleName, match);
  assert.equal(s.length, 1, `exactly one ${sampleName} ${JSON.stringify(match)}; got ${JSON.stringify(s)}`);
  return s[0].value;
}
const total = (fams, sampleName, match) => select(fams, sampleName, match).reduce((a, s) => a + s.value, 0);

// the histogram's buckets for one label set (labels without le), checked for shape
function histogram(fams, base, match) {
  const sums = select(fams, base + "_sum", match);
  assert.equal(sums.length, 1, `one ${base} series for ${JSON.stringify(match)}: ${JSON.stringify(sums)}`);
  const labels = sums[0].labels;
  const same = (s) => Object.keys(labels).length === Object.keys(s.labels).length - 1 &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v);
  const buckets = select(fams, base + "_bucket").filter(same)
    .map((s) => ({ le: parseValue(s.labels.le, s.labels.le), value: s.value }));
  const count = one(fams, base + "_count", labels);
  for (let i = 1; i < buckets.length; i++) {
    assert.ok(buckets[i].le > buckets[i - 1].le, `${base}: buckets in increasing le order`);
    assert.ok(buckets[i].value >= buckets[i - 1].value, `${base}: buckets are cumulative`);
  }
  assert.equal(buckets.at(-1).le, Infinity, `${base}: last bucket is +Inf`);
  assert.equal(buckets.at(-1).value, count, `${base}: +Inf bucket equals _count`);
  return { labels, buckets, count, sum: sums[0].value };
}

function promtool(text) {
  return new Promise((resolve) => {
    const p = spawn(PROMTOOL, ["check", "metrics"]);
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (out += d));
    p.on("exit", (code) => resolve({ code, out }));
    p.stdin.end(text);
  });
}

const statsPort = (gw) => Number(gw.stats.split(":")[1]);
async function scrape(gw, accept) {
  const r = await request({ port: statsPort(gw), path: "/metrics", headers: accept ? { accept } : {} });
  assert.equal(r.status, 200);
  return r;
}

// what plugins/providers/mock.lua reports: input = ceil(chars of all messages / 4) (min 1),
// output = whitespace-separated words of 'Mock reply to: "<first 12 words of last user msg>"'
function mockUsage(messages) {
  const chars = messages.reduce((a, m) => a + [...m.content].length, 0);
  const input = Math.max(1, Math.ceil(chars / 4));
  const last = [...messages].reverse().find((m) => m.role === "user")?.content ?? "";
  const words = last.split(/\s+/).filter(Boolean);
  let summary = words.slice(0, 12).join(" ");
  if (words.length > 12) summary += " ...";
  const reply = `Mock reply to: "${summary}"`;
  return { input, output: reply.split(/\s+/).filter(Boolean).length, reply };
}

function chat(port, body, headers = {}) {
  const s = JSON.stringify(body);
  return request({
    port, method: "POST", path: "/v1/chat/completions",
    headers: { "content-type": "application/json", "content-length": Buffer.byteLength(s), ...headers },
  }, s);
}

const PROMPTS = [
  [{ role: "user", content: "hello there friend" }],
  [{ role: "system", content: "You are terse." }, { role: "user", content: "Say hi" }],
  [{ role: "user", content: "x" }],
  [{ role: "user", content: "one two three four five six seven eight nine ten eleven twelve thirteen " +
    "fourteen and a long tail ".repeat(20) }],
];

describe("metrics after mixed traffic", () => {
  let up, gw, port, bytes, mixedScrape;
  const counts = { plain: 3, up503: 1, direct: 2, notFound: 4, llm: PROMPTS.length };
  const ALL = Object.values(counts).reduce((a, b) => a + b, 0);
  before(async () => {
    up = await upstream((req, res, rec) => {
      if (req.url === "/api/503") { res.statusCode = 503; return res.end("unavailable"); }
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ ok: true, url: req.url }));
    });
    port = await freePort();
    gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
binds:
- port: ${port}
  listeners:
  - routes:
    - name: direct
      matches: [{path: {exact: /direct}}]
      policies: {directResponse: {body: "direct body", status: 201}}
    - name: llm
      matches: [{path: {pathPrefix: /v1}}]
      backends:
      - ai: {name: mock, provider: {mock: {}}}
    - name: plain
      matches: [{path: {pathPrefix: /api}}]
      backends: [{host: 127.0.0.1:${up.port}}]
`);
    bytes = { plain: 0, up503: 0, direct: 0, notFound: 0, llm: 0 };
    const add = (k, r) => { bytes[k] += Buffer.byteLength(r.body); return r; };
    for (let i = 0; i < counts.plain; i++) assert.equal(add("plain", await request({ port, path: `/api/p${i}` })).status, 200);
    assert.equal(add("up503", await request({ port, path: "/api/503" })).status, 503);
    for (let i = 0; i < counts.direct; i++) assert.equal(add("direct", await request({ port, path: "/direct" })).status, 201);
    for (let i = 0; i < counts.notFound; i++) assert.equal(add("notFound", await request({ port, path: `/nope/${i}` })).status, 404);
    for (const messages of PROMPTS) {
      const r = add("llm", await chat(port, { model: "mock-model", messages }));
      assert.equal(r.status, 200, r.body);
      const want = mockUsage(messages);
      const u = JSON.parse(r.body).usage;
      assert.deepEqual([u.prompt_tokens, u.completion_tokens], [want.input, want.output], "mock usage rule");
    }
    // the access log lines are written when the record is complete; wait for all of them
    await eventually(() => {
      const n = (gw.logs().match(/\tinfo\trequest /g) || []).length;
      assert.equal(n, ALL, gw.logs());
    });
    mixedScrape = (await scrape(gw)).body;
  });
  after(async () => {
    await gw?.stop();
    await up?.close();
  });

  test("promtool check metrics passes on the live scrape", async () => {
    const r = await promtool(mixedScrape);
    assert.equal(r.code, 0, r.out);
  });

  test("the scrape is served as Prometheus text 0.0.4 on /metrics and /stats/prometheus", async () => {
    const r = await scrape(gw);
    assert.match(r.headers["content-type"], /^text\/plain; ?version=0\.0\.4/);
    parseExposition(r.body);
    const s = await request({ port: statsPort(gw), path: "/stats/prometheus" });
    assert.equal(s.status, 200);
    parseExposition(s.body);
    assert.ok(s.body.includes("agentgateway_requests_total"));
  });

  test("build_info carries the version", () => {
    const fams = parseExposition(mixedScrape);
    assert.equal(one(fams, "agentgateway_build_info", { tag: VERSION }), 1);
  });

  test("requests_total by status, route and reason", () => {
    const fams = parseExposition(mixedScrape);
    const bind = `bind/${port}`;
    const ids = { bind, gateway: "default/default", listener: "listener0" };
    const R = "agentgateway_requests_total";
    assert.equal(one(fams, R, { ...ids, route: "default/plain", status: "200", reason: "Upstream", method: "GET",
      protocol: "http", backend: `127.0.0.1:${up.port}` }), counts.plain);
    assert.equal(one(fams, R, { ...ids, route: "default/plain", status: "503", reason: "Upstream" }), counts.up503);
    assert.equal(one(fams, R, { ...ids, route: "default/direct", status: "201", reason: "DirectResponse",
      backend: "unknown" }), counts.direct);
    assert.equal(one(fams, R, { ...ids, route: "unknown", status: "404", reason: "NotFound" }), counts.notFound);
    assert.equal(one(fams, R, { ...ids, route: "default/llm", status: "200", method: "POST", protocol: "llm" }),
      counts.llm);
    assert.equal(total(fams, R), ALL, "nothing else was counted (scrapes are not requests)");
    const labels = Object.keys(select(fams, R)[0].labels);
    assert.deepEqual(labels, ["backend", "protocol", "method", "status", "reason", "bind", "gateway", "listener",
      "route", "route_rule"]);
  });

  test("request_duration_seconds: one observation per request, the reference buckets", () => {
    const fams = parseExposition(mixedScrape);
    const D = "agentgateway_request_duration_seconds";
    for (const [route, status, n] of [["default/plain", "200", counts.plain], ["default/plain", "503", counts.up503],
      ["default/direct", "201", counts.direct], ["unknown", "404", counts.notFound], ["default/llm", "200", counts.llm]]) {
      const h = histogram(fams, D, { route, status });
      assert.equal(h.count, n, `${route} ${status}`);
      assert.deepEqual(h.buckets.map((b) => b.le), [...DURATION_BUCKETS, Infinity]);
      assert.ok(h.sum > 0 && h.sum < 60 * n, `${route} sum ${h.sum}`);
    }
    assert.equal(total(fams, D + "_count"), ALL);
  });

  test("response_bytes_total equals the body bytes the client received", () => {
    const fams = parseExposition(mixedScrape);
    const B = "agentgateway_response_bytes_total";
    assert.equal(one(fams, B, { route: "default/direct" }), bytes.direct);
    assert.equal(one(fams, B, { route: "default/plain", status: "200" }), bytes.plain);
    assert.equal(one(fams, B, { route: "default/plain", status: "503" }), bytes.up503);
    assert.equal(one(fams, B, { route: "unknown" }), bytes.notFound);
    assert.equal(one(fams, B, { route: "default/llm" }), bytes.llm);
  });

  test("gen_ai_client_token_usage: per token type, exact sums, counts and buckets for the mock requests", () => {
    const fams = parseExposition(mixedScrape);
    const T = "agentgateway_gen_ai_client_token_usage";
    const usages = PROMPTS.map(mockUsage);
    const base = { gen_ai_operation_name: "chat", gen_ai_system: "mock", gen_ai_request_model: "mock-model",
      gen_ai_response_model: "mock-model", route: "default/llm", bind: `bind/${port}` };
    for (const type of ["input", "output"]) {
      const values = usages.map((u) => u[type]);
      const h = histogram(fams, T, { ...base, gen_ai_token_type: type });
      assert.equal(h.count, PROMPTS.length, type);
      assert.equal(h.sum, values.reduce((a, b) => a + b, 0), `${type} sum of ${values}`);
      assert.deepEqual(h.buckets.map((b) => b.le), [...TOKEN_BUCKETS, Infinity]);
      for (const b of h.buckets)
        assert.equal(b.value, values.filter((v) => v <= b.le).length, `${type} bucket le=${b.le} (values ${values})`);
    }
    // the mock reports no cache tokens: no series for them
    assert.equal(select(fams, T + "_count", { gen_ai_token_type: "input_cache_read" }).length, 0);
    assert.deepEqual(Object.keys(select(fams, T + "_count")[0].labels), ["gen_ai_token_type", "gen_ai_operation_name",
      "gen_ai_system", "gen_ai_request_model", "gen_ai_response_model", "bind", "gateway", "listener", "route",
      "route_rule"]);
    // the other GenAI histograms saw each LLM request once
    for (const g of ["gen_ai_server_request_duration", "gen_ai_server_time_to_first_token"])
      assert.equal(one(fams, `agentgateway_${g}_count`, base), PROMPTS.length, g);
  });

  test("a streamed mock request is counted with its usage", async () => {
    const messages = [{ role: "user", content: "stream me a short answer please" }];
    const r = await chat(port, { model: "mock-stream", stream: true, stream_options: { include_usage: true }, messages });
    assert.equal(r.status, 200);
    assert.match(r.body, /data: \[DONE\]/);
    const want = mockUsage(messages);
    await eventually(async () => {
      const fams = parseExposition((await scrape(gw)).body);
      const m = { gen_ai_request_model: "mock-stream", route: "default/llm" };
      assert.equal(one(fams, "agentgateway_gen_ai_client_token_usage_sum", { ...m, gen_ai_token_type: "input" }), want.input);
      assert.equal(one(fams, "agentgateway_gen_ai_client_token_usage_sum", { ...m, gen_ai_token_type: "output" }), want.output);
      assert.equal(one(fams, "agentgateway_gen_ai_server_time_per_output_token_count", m), 1);
    });
  });

  test("requests for different models on one route get their own GenAI series", async () => {
    const messages = [{ role: "user", content: "which model are you" }];
    for (const model of ["model-a", "model-b", "model-a"])
      assert.equal((await chat(port, { model, messages })).status, 200);
    await eventually(async () => {
      const fams = parseExposition((await scrape(gw)).body);
      for (const [model, n] of [["model-a", 2], ["model-b", 1]]) {
        const m = { gen_ai_request_model: model, gen_ai_response_model: model, route: "default/llm" };
        for (const type of ["input", "output"])
          assert.equal(one(fams, "agentgateway_gen_ai_client_token_usage_count", { ...m, gen_ai_token_type: type }), n);
        assert.equal(one(fams, "agentgateway_gen_ai_server_request_duration_count", m), n);
      }
    });
  });

  test("downstream_connections_total counts the client connections", async () => {
    const fams = parseExposition((await scrape(gw)).body);
    // every request above used its own connection (agent: false)
    assert.ok(total(fams, "agentgateway_downstream_connections_total") >= ALL,
      JSON.stringify(select(fams, "agentgateway_downstream_connections_total")));
  });

  test("OpenMetrics when the scraper asks for it, with the same values", async () => {
    const r = await scrape(gw, "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1");
    assert.match(r.headers["content-type"], /^application\/openmetrics-text; ?version=1\.0\.0/);
    assert.match(r.body, /\n# EOF\n?$/);
    const om = parseExposition(r.body, { openmetrics: true });
    const prom = parseExposition((await scrape(gw)).body);
    assert.equal(om.get("agentgateway_requests").type, "counter");
    assert.equal(om.get("agentgateway_request_duration_seconds").unit, "seconds");
    assert.equal(om.get("agentgateway_build").type, "info");
    assert.equal(one(om, "agentgateway_build_info", { tag: VERSION }), 1);
    for (const m of [{ route: "default/direct" }, { route: "unknown" }, { route: "default/plain", status: "200" }])
      assert.equal(one(om, "agentgateway_requests_total", m), one(prom, "agentgateway_requests_total", m));
    // a plain scraper still gets 0.0.4
    const plain = await scrape(gw, "text/plain");
    assert.match(plain.headers["content-type"], /^text\/plain; ?version=0\.0\.4/);
    assert.ok(!plain.body.includes("# EOF"));
  });
});

describe("metrics configuration", () => {
  let up;
  before(async () => { up = await upstream(); });
  after(async () => { await up?.close(); });

  async function run(configMetrics, fn) {
    const port = await freePort();
    const gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1,
  metrics: ${JSON.stringify(configMetrics)}}
binds:
- port: ${port}
  listeners:
  - routes:
    - name: llm
      matches: [{path: {pathPrefix: /v1}}]
      backends:
      - ai: {name: mock, provider: {mock: {}}}
    - name: plain
      backends: [{host: 127.0.0.1:${up.port}}]
`);
    try {
      await fn(gw, port);
    } finally {
      await gw.stop();
    }
  }

  test("config.metrics.prefix changes the prefix of every family", async () => {
    await run({ prefix: "lunagate_" }, async (gw, port) => {
      assert.equal((await request({ port, path: "/x" })).status, 200);
      await eventually(async () => {
        const body = (await scrape(gw)).body;
        const fams = parseExposition(body);
        assert.equal(one(fams, "lunagate_requests_total", { route: "default/plain" }), 1);
        assert.equal(one(fams, "lunagate_build_info", { tag: VERSION }), 1);
        for (const name of fams.keys()) assert.ok(name.startsWith("lunagate_"), name);
        assert.ok(!body.includes("agentgateway_"));
        assert.equal((await promtool(body)).code, 0);
      });
    });
  });

  test("config.metrics.remove drops families (bare, _total, prefixed and unit-suffixed names)", async () => {
    await run({ remove: ["response_bytes_total", "agentgateway_request_duration_seconds", "gen_ai_server_time_to_first_token",
      "downstream_connections"] }, async (gw, port) => {
      assert.equal((await request({ port, path: "/x" })).status, 200);
      assert.equal((await chat(port, { model: "m", messages: [{ role: "user", content: "hi" }] })).status, 200);
      await eventually(async () => {
        const body = (await scrape(gw)).body;
        const fams = parseExposition(body);
        assert.equal(one(fams, "agentgateway_requests_total", { route: "default/plain" }), 1);
        assert.equal(one(fams, "agentgateway_requests_total", { route: "default/llm" }), 1);
        for (const gone of ["agentgateway_response_bytes_total", "agentgateway_request_duration_seconds",
          "agentgateway_gen_ai_server_time_to_first_token", "agentgateway_downstream_connections_total"])
          assert.ok(!body.includes(gone), `${gone} is removed`);
        assert.ok(body.includes("agentgateway_gen_ai_client_token_usage_count"), "others stay");
      });
    });
  });

  test("config.metrics.fields.add adds a CEL label: its value, or unknown when missing", async () => {
    await run({ fields: { add: { user: 'request.headers["x-user"]' } } }, async (gw, port) => {
      assert.equal((await request({ port, path: "/a", headers: { "x-user": "alice" } })).status, 200);
      assert.equal((await request({ port, path: "/b", headers: { "x-user": "alice" } })).status, 200);
      assert.equal((await request({ port, path: "/c", headers: { "x-user": "bob" } })).status, 200);
      assert.equal((await request({ port, path: "/d" })).status, 200);
      assert.equal((await chat(port, { model: "m", messages: [{ role: "user", content: "hello" }] },
        { "x-user": "carol" })).status, 200);
      await eventually(async () => {
        const fams = parseExposition((await scrape(gw)).body);
        const R = "agentgateway_requests_total";
        assert.equal(Object.keys(select(fams, R)[0].labels).at(-1), "user", "custom label comes last");
        assert.equal(one(fams, R, { route: "default/plain", user: "unknown" }), 1, "no header -> unknown");
        assert.equal(one(fams, R, { route: "default/plain", user: "alice" }), 2);
        assert.equal(one(fams, R, { route: "default/plain", user: "bob" }), 1);
        assert.equal(one(fams, R, { route: "default/llm", user: "carol" }), 1);
        assert.equal(one(fams, "agentgateway_gen_ai_client_token_usage_count",
          { gen_ai_token_type: "input", user: "carol" }), 1);
      });
    });
  });
});

describe("metrics with two workers", () => {
  test("200 concurrent requests give exact totals", async () => {
    const up = await upstream();
    const port = await freePort();
    const gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 2}
binds:
- port: ${port}
  listeners:
  - routes:
    - name: direct
      matches: [{path: {exact: /direct}}]
      policies: {directResponse: {body: "d", status: 200}}
    - name: plain
      backends: [{host: 127.0.0.1:${up.port}}]
`);
    try {
      const N = 200;
      const results = await Promise.all(Array.from({ length: N }, (_, i) =>
        request({ port, path: i % 2 ? "/direct" : `/p/${i}`, timeout: 20000 })));
      assert.equal(results.filter((r) => r.status === 200).length, N);
      assert.equal(up.seen.length, N / 2);
      await eventually(async () => {
        const fams = parseExposition((await scrape(gw)).body);
        assert.equal(one(fams, "agentgateway_requests_total", { route: "default/plain" }), N / 2);
        assert.equal(one(fams, "agentgateway_requests_total", { route: "default/direct" }), N / 2);
        assert.equal(total(fams, "agentgateway_requests_total"), N);
        assert.equal(total(fams, "agentgateway_request_duration_seconds_count"), N);
        assert.equal(one(fams, "agentgateway_response_bytes_total", { route: "default/direct" }), N / 2);
      });
      // both workers took part (the access log names no worker; the process log at start does)
      assert.match(gw.logs(), /2 workers/);
    } finally {
      await gw.stop();
      await up.close();
    }
  });
});
