// 60-mcp.test.mjs -- the MCP gateway end to end: the real @modelcontextprotocol/sdk client
// through the real binary (LUNAGATE_BIN) to the real @modelcontextprotocol/server-everything.
// SPDX-License-Identifier: MIT
//
// server-everything runs twice (Streamable HTTP and legacy SSE, each with an LG_WHO marker in
// its environment so `get-env` tells which process answered) and as stdio children spawned by
// the gateway. One gateway process (one worker) serves five binds-style routes (Streamable
// HTTP target, SSE target behind the gateway's /sse, stdio target, two targets multiplexed,
// and mcpAuthorization denying `get-env`) plus the top-level `mcp:` front door, with JSON
// access logs and OTLP/HTTP tracing to a local receiver. A second gateway runs two workers
// (CPU_LIMIT=2, no workerThreads) and spreads one session over fresh connections. Two more
// pairs of gateway processes, identical apart from their ports, check that a session created
// on one replica is resumed by the other, with plain (base64url JSON) and AES-256-GCM
// (config.session.key) session ids.
//
// Progress is checked on the raw messages the transport delivers (see recordRaw).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import nodeHttp from "node:http";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { startGateway, freePort, request, eventually, sleep, ROOT } from "../helpers/gateway.mjs";
import { startOtlpReceiver } from "../helpers/otlp-receiver.mjs";

const EVERYTHING = path.join(ROOT,
  "spec/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
const LONG_TOOL = "trigger-long-running-operation";
const CALL_MS = 15000;          // per MCP request (SDK RequestOptions.timeout)
const T = { timeout: 60000 };   // per test

const children = [];            // server-everything processes we spawned
const gateways = [];            // every gateway process, stopped in after()
const clients = [];             // every SDK client, closed in after()

// ---- helpers ----

// Starts `node server-everything <mode>` on a free port; resolves once it accepts connections.
async function startEverything(mode, who) {
  const port = await freePort();
  const proc = spawn(process.execPath, [EVERYTHING, mode], {
    env: { ...process.env, PORT: String(port), LG_WHO: who },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  children.push(proc);
  await eventually(async () => {
    if (proc.exitCode !== null) throw new Error(`server-everything ${mode} exited: ${out}`);
    const r = await request({ port, method: "GET", path: "/nope", timeout: 1000 });
    assert.ok(r.status > 0);
  }, 15000, 100);
  return { port, proc, logs: () => out };
}

async function gateway(yaml, opts) {
  const gw = await startGateway(yaml, { readyTimeout: 15000, ...opts });
  gateways.push(gw);
  return gw;
}

// Every message the transport delivers, recorded synchronously: the SDK runs notification
// handlers a microtask later than response handlers, so a progress notification arriving
// in the same chunk as its result never reaches `onprogress`; the raw record still shows it.
function recordRaw(client, transport) {
  client.raw = [];
  const deliver = transport.onmessage;
  transport.onmessage = (m, extra) => { client.raw.push(m); return deliver(m, extra); };
}

function newClient(name = "lunagate-spec") {
  const c = new Client({ name, version: "1.0.0" }, { capabilities: {} });
  clients.push(c);
  return c;
}

async function connectHttp(port, extra = {}) {
  const client = newClient();
  const transport = new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`), extra);
  await client.connect(transport, { timeout: CALL_MS });
  recordRaw(client, transport);
  return { client, transport };
}

async function connectSse(port) {
  const client = newClient();
  const transport = new SSEClientTransport(new URL(`http://127.0.0.1:${port}/sse`));
  await client.connect(transport, { timeout: CALL_MS });
  recordRaw(client, transport);
  return { client, transport };
}

const text = (res) => {
  assert.ok(Array.isArray(res.content), JSON.stringify(res));
  return res.content.filter((c) => c.type === "text").map((c) => c.text).join("");
};

async function callTool(client, name, args = {}, opts = {}) {
  return client.callTool({ name, arguments: args }, undefined, { timeout: CALL_MS, ...opts });
}

async function toolNames(client) {
  const r = await client.listTools(undefined, { timeout: CALL_MS });
  return r.tools.map((t) => t.name);
}

// The common script for one target over one transport: list tools, echo, the long-running
// tool with progress notifications relayed, and `get-env` showing which server answered.
async function exercise(client, { prefix = "", who } = {}) {
  const names = await toolNames(client);
  for (const n of ["echo", LONG_TOOL, "get-env"]) assert.ok(names.includes(prefix + n), `${prefix + n} in ${names}`);

  const msg = "hello " + crypto.randomBytes(4).toString("hex");
  assert.equal(text(await callTool(client, prefix + "echo", { message: msg })), `Echo: ${msg}`);

  const progress = [];
  const mark = client.raw.length;
  const long = await callTool(client, prefix + LONG_TOOL, { duration: 0.6, steps: 3 },
    { onprogress: (p) => progress.push(p), resetTimeoutOnProgress: true });
  assert.match(text(long), /Long running operation completed\. Duration: 0\.6 seconds, Steps: 3\./);
  const raw = client.raw.slice(mark);
  const relayed = raw.filter((m) => m.method === "notifications/progress");
  assert.deepEqual(relayed.map((m) => [m.params.progress, m.params.total]), [[1, 3], [2, 3], [3, 3]],
    "three progress notifications relayed in order");
  const token = relayed[0].params.progressToken;
  assert.ok(relayed.every((m) => m.params.progressToken === token), "the client's progress token kept");
  const answer = raw.findIndex((m) => m.result && m.result.content);
  assert.ok(answer > raw.indexOf(relayed[2]), "progress before the result");
  assert.ok(progress.length >= 2, `onprogress called (${progress.length})`);
  assert.deepEqual(progress.map((p) => p.progress), [1, 2, 3].slice(0, progress.length));

  if (who) {
    const env = JSON.parse(text(await callTool(client, prefix + "get-env")));
    assert.equal(env.LG_WHO, who, "the call reached the expected server");
  }
}

// pids of the live processes whose ancestor is `root` and whose command line mentions the
// server-everything entry point
function everythingChildren(root) {
  const ppid = new Map();
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
      const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (after[0] === "Z") continue;     // zombie: already ended
      ppid.set(Number(d), Number(after[1]));
    } catch { /* gone */ }
  }
  const out = [];
  for (const [pid] of ppid) {
    let p = ppid.get(pid), depth = 0;
    while (p && p !== root && depth++ < 16) p = ppid.get(p);
    if (p !== root) continue;
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(EVERYTHING)) out.push(pid);
    } catch { /* gone */ }
  }
  return out.sort();
}

// decodes a base64url string, or null when it is not valid base64url
function b64url(s) {
  if (typeof s !== "string" || !/^[A-Za-z0-9_-]+=*$/.test(s)) return null;
  return Buffer.from(s.replace(/=+$/, ""), "base64url");
}

function jsonOrNull(buf) {
  try { return JSON.parse(buf.toString("utf8")); } catch { return null; }
}

const streams = [];               // raw legacy SSE streams, destroyed in after()
const POST_HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream",
  "mcp-protocol-version": "2025-06-18" };

// One JSON-RPC request on a fresh connection (request() uses no agent) of a Streamable HTTP
// session; resolves {status, msg} with msg the answer carrying `id` (JSON or SSE body).
async function freshCall(port, sid, id, method, params) {
  const r = await request({ port, method: "POST", path: "/mcp", timeout: CALL_MS,
    headers: { ...POST_HEADERS, "mcp-session-id": sid } }, JSON.stringify({ jsonrpc: "2.0", id, method, params }));
  const msgs = (r.headers["content-type"] || "").startsWith("text/event-stream")
    ? r.body.split("\n").filter((l) => l.startsWith("data:")).map((l) => jsonOrNull(Buffer.from(l.slice(5))))
    : [jsonOrNull(Buffer.from(r.body))];
  return { status: r.status, msg: msgs.find((m) => m && m.id === id), body: r.body };
}

// A legacy SSE client by hand: GET /sse on its own connection, POSTs on fresh ones.
async function openLegacy(port) {
  const messages = [];
  let endpoint = null, buf = "";
  const req = nodeHttp.get({ host: "127.0.0.1", port, path: "/sse", agent: false,
    headers: { accept: "text/event-stream" } }, (res) => {
    res.setEncoding("utf8");
    res.on("data", (d) => {
      buf += d;
      for (let i; (i = buf.indexOf("\n\n")) >= 0;) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const type = (ev.match(/^event: (.*)$/m) || [])[1];
        const data = ev.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (type === "endpoint") endpoint = data;
        else if (type === "message") messages.push(JSON.parse(data));
      }
    });
  });
  req.on("error", () => {});
  streams.push(req);
  await eventually(() => assert.ok(endpoint, "endpoint event"), 5000);
  const post = (o) => request({ port, method: "POST", path: endpoint, timeout: CALL_MS,
    headers: { "content-type": "application/json" } }, JSON.stringify(o));
  const answer = (id) => eventually(() => {
    const m = messages.find((x) => x.id === id);
    assert.ok(m, `answer ${id} on the stream`);
    return m;
  }, CALL_MS, 20);
  return { endpoint, messages, post, answer, close: () => req.destroy() };
}

// access-log objects (JSON format) printed by a gateway so far
function accessLines(gw) {
  return gw.stdout().split("\n").filter((l) => l.startsWith("{")).map((l) => {
    try { return JSON.parse(l); } catch { return null; }
  }).filter((o) => o && o.scope === "request");
}

const mcpBackend = (targets) => `
    - backends:
      - mcp:
          targets:
${targets.map((t) => "          - " + t).join("\n")}`;

// ---- fixtures ----

let http, sse, rx, gw;
const P = {};

before(async () => {
  [http, sse, rx] = await Promise.all([
    startEverything("streamableHttp", "http"),
    startEverything("sse", "sse"),
    startOtlpReceiver({ grpc: false, http: true }),
  ]);
  for (const k of ["http", "sse", "stdio", "mux", "authz", "front"]) P[k] = await freePort();
  const HTTP_T = `{name: everything, mcp: {host: "http://127.0.0.1:${http.port}/mcp"}}`;
  const SSE_T = `{name: legacy, sse: {host: "http://127.0.0.1:${sse.port}/sse"}}`;
  const STDIO_T = `{name: local, stdio: {cmd: "${process.execPath}", args: ["${EVERYTHING}"], env: {LG_WHO: stdio}}}`;
  const yaml = `
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
  workerThreads: 1
  logging: {format: json}
  tracing: {otlpEndpoint: "http://127.0.0.1:${rx.httpPort}", otlpProtocol: http, randomSampling: true}
mcp:
  port: ${P.front}
  targets:
  - ${HTTP_T}
binds:
- port: ${P.http}
  listeners:
  - routes:${mcpBackend([HTTP_T])}
- port: ${P.sse}
  listeners:
  - routes:${mcpBackend([SSE_T])}
- port: ${P.stdio}
  listeners:
  - routes:${mcpBackend([STDIO_T])}
- port: ${P.mux}
  listeners:
  - routes:${mcpBackend([`{name: web, mcp: {host: "http://127.0.0.1:${http.port}/mcp"}}`,
    `{name: old, sse: {host: "http://127.0.0.1:${sse.port}/sse"}}`])}
- port: ${P.authz}
  listeners:
  - routes:
    - policies:
        mcpAuthorization:
          rules:
          - deny: 'mcp.tool.name == "get-env"'
      backends:
      - mcp:
          targets:
          - ${HTTP_T}
`;
  gw = await gateway(yaml);
});

after(async () => {
  for (const c of clients) await Promise.race([c.close().catch(() => {}), sleep(2000)]);
  for (const r of streams) r.destroy();
  for (const g of gateways) await g.stop().catch(() => g.proc.kill("SIGKILL"));
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  await rx?.close();
});

// ---- tests ----

describe("Streamable HTTP target", () => {
  let sessionId;

  test("initialize, list, echo, long-running tool with progress, DELETE ends the session", T, async () => {
    const { client, transport } = await connectHttp(P.http);
    sessionId = transport.sessionId;
    assert.ok(sessionId, "mcp-session-id returned by initialize");
    assert.equal(client.getServerVersion()?.name, "mcp-servers/everything");
    assert.ok(client.getServerCapabilities()?.tools, "tools capability passed through");

    // the plain id is base64url JSON carrying the upstream session
    const state = jsonOrNull(b64url(sessionId) || Buffer.alloc(0));
    assert.ok(state && Array.isArray(state.s), `plain session id decodes to {"s":[...]}: ${sessionId}`);
    assert.equal(state.s[0].t, "everything");
    assert.ok(state.s[0].s, "upstream session id inside");

    await exercise(client, { who: "http" });

    await transport.terminateSession();          // DELETE with the session id
    await client.close();
    const r = await request({ port: P.http, method: "POST", path: "/mcp", timeout: 5000,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream",
        "mcp-session-id": sessionId, "mcp-protocol-version": "2025-06-18" } },
      JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list", params: {} }));
    assert.ok(r.status === 404 || /"error"/.test(r.body),
      `a request on the ended session fails (got ${r.status} ${r.body.slice(0, 200)})`);
  });

  test("a request without a session is refused; GET opens the server stream", T, async () => {
    const r = await request({ port: P.http, method: "POST", path: "/mcp", timeout: 5000,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" } },
      JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/list", params: {} }));
    assert.ok(r.status >= 400, `no session: ${r.status} ${r.body}`);

    // the SDK opens GET /mcp after initialize; a notification from the server on that
    // stream (logging) proves the stream is relayed
    const { client } = await connectHttp(P.http);
    const logs = [];
    client.setNotificationHandler(
      (await import("@modelcontextprotocol/sdk/types.js")).LoggingMessageNotificationSchema,
      (n) => logs.push(n));
    await callTool(client, "toggle-simulated-logging");
    await eventually(() => assert.ok(logs.length >= 1, "a logging notification arrived"), 15000, 100);
    await callTool(client, "toggle-simulated-logging");
    await client.close();
  });
});

describe("connections", () => {
  test("Connection: close requests answered after upstream I/O release their sockets", T, async () => {
    const up = await startEverything("streamableHttp", "fd");
    const port = await freePort();
    const gw = await gateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
binds:
- port: ${port}
  listeners:
  - routes:
    - backends: [{mcp: {targets: [{name: everything, mcp: {host: "http://127.0.0.1:${up.port}/mcp"}}]}}]
`);
    const fds = () => fs.readdirSync(`/proc/${gw.proc.pid}/fd`).length;
    const init = () => request({ port, method: "POST", path: "/mcp", timeout: 10000,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream", connection: "close" } },
      JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize",
        params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "fd", version: "1" } } }));
    assert.equal((await init()).status, 200);
    await sleep(300);
    const before = fds();
    for (let i = 0; i < 20; i++) assert.equal((await init()).status, 200);
    // each initialize opened a client connection answered from a resumed coroutine
    await eventually(() => assert.ok(fds() <= before + 3, `fds ${before} -> ${fds()}`), 5000);
  });
});

describe("legacy SSE on both sides", () => {
  test("SSEClientTransport to /sse with an sse: target", T, async () => {
    const connected = () => (sse.logs().match(/Client Connected/g) || []).length;
    const before = connected();
    const { client, transport } = await connectSse(P.sse);
    assert.ok(transport._endpoint, "endpoint event received");
    assert.equal(transport._endpoint.pathname, "/sse");
    assert.ok(transport._endpoint.searchParams.get("sessionId"), "sessionId in the endpoint URL");
    assert.equal(client.getServerVersion()?.name, "mcp-servers/everything");
    await exercise(client, { who: "sse" });
    assert.equal(connected() - before, 1, "one upstream SSE stream for the session");
    await client.close();
  });

  // transports are independent on the two sides
  test("SSE client to a Streamable HTTP target", T, async () => {
    const { client } = await connectSse(P.http);
    await exercise(client, { who: "http" });
    await client.close();
  });

  test("Streamable HTTP client to an SSE target", T, async () => {
    const { client, transport } = await connectHttp(P.sse);
    await exercise(client, { who: "sse" });
    await transport.terminateSession();
    await client.close();
  });
});

describe("the mcp: front door", () => {
  test("Streamable HTTP at /mcp", T, async () => {
    const { client, transport } = await connectHttp(P.front);
    assert.ok(transport.sessionId);
    await exercise(client, { who: "http" });
    await transport.terminateSession();
    await client.close();
  });

  test("legacy SSE at /sse", T, async () => {
    const { client } = await connectSse(P.front);
    await exercise(client, { who: "http" });
    await client.close();
  });

  test("other paths are not MCP", T, async () => {
    const r = await request({ port: P.front, method: "POST", path: "/other", timeout: 5000,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream" } },
      JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} }));
    assert.equal(r.status, 404, r.body);
  });
});

describe("stdio target", () => {
  test("a child per session, env passed, ended with the session", T, async () => {
    const pid = gw.proc.pid;
    const before = everythingChildren(pid);
    const { client, transport } = await connectHttp(P.stdio);
    assert.ok(transport.sessionId, "session id");
    const spawned = everythingChildren(pid).filter((p) => !before.includes(p));
    assert.equal(spawned.length, 1, `one child spawned for the session (${spawned})`);
    await exercise(client, { who: "stdio" });

    // a second session gets its own child
    const second = await connectHttp(P.stdio);
    const two = everythingChildren(pid).filter((p) => !before.includes(p));
    assert.equal(two.length, 2, `a second child for the second session (${two})`);
    assert.equal(text(await callTool(second.client, "echo", { message: "2nd" })), "Echo: 2nd");

    await transport.terminateSession();
    await client.close();
    await eventually(() => assert.deepEqual(everythingChildren(pid).filter((p) => spawned.includes(p)), [],
      "the first session's child ended"), 10000, 100);
    assert.equal(everythingChildren(pid).filter((p) => !before.includes(p)).length, 1,
      "the second session's child is still running");
    assert.equal(text(await callTool(second.client, "echo", { message: "still" })), "Echo: still");

    await second.transport.terminateSession();
    await second.client.close();
    await eventually(() => assert.deepEqual(everythingChildren(pid).filter((p) => !before.includes(p)), [],
      "every child of the test ended"), 10000, 100);
  });
});

describe("two targets multiplexed", () => {
  test("tools are prefixed <target>_ and calls go back to their target", T, async () => {
    const { client, transport } = await connectHttp(P.mux);
    const state = jsonOrNull(b64url(transport.sessionId) || Buffer.alloc(0));
    assert.deepEqual(state?.s?.map((x) => x.t).sort(), ["old", "web"], "both upstream sessions in the id");

    const names = await toolNames(client);
    assert.ok(names.includes("web_echo") && names.includes("old_echo"), String(names));
    assert.ok(!names.includes("echo"), "no unprefixed names");
    assert.ok(names.every((n) => n.startsWith("web_") || n.startsWith("old_")), String(names));
    assert.equal(names.filter((n) => n.startsWith("web_")).length, names.filter((n) => n.startsWith("old_")).length);

    await exercise(client, { prefix: "web_", who: "http" });
    await exercise(client, { prefix: "old_", who: "sse" });

    // an unknown prefix is an error, not a crash
    await assert.rejects(callTool(client, "nope_echo", { message: "x" }));

    await transport.terminateSession();
    await client.close();
  });
});

describe("mcpAuthorization", () => {
  test("a denied tool is filtered from the list and its call answered with a JSON-RPC error", T, async () => {
    const { client, transport } = await connectHttp(P.authz);
    const names = await toolNames(client);
    assert.ok(names.includes("echo"), String(names));
    assert.ok(!names.includes("get-env"), `get-env filtered: ${names}`);
    assert.equal(text(await callTool(client, "echo", { message: "allowed" })), "Echo: allowed");

    // the SDK turns a JSON-RPC error into a rejected McpError carrying the code
    const err = await callTool(client, "get-env").then(() => null, (e) => e);
    assert.ok(err, "the call to get-env failed");
    assert.equal(typeof err.code, "number", `JSON-RPC error code (${err})`);
    assert.doesNotMatch(String(err.message), /LG_WHO/, "no environment leaked");

    // the same on the wire: a JSON-RPC error object, not a tool result
    const r = await request({ port: P.authz, method: "POST", path: "/mcp", timeout: 5000,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream",
        "mcp-session-id": transport.sessionId, "mcp-protocol-version": "2025-06-18" } },
      JSON.stringify({ jsonrpc: "2.0", id: 42, method: "tools/call", params: { name: "get-env", arguments: {} } }));
    const body = r.headers["content-type"]?.startsWith("text/event-stream")
      ? r.body.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("") : r.body;
    const msg = JSON.parse(body);
    assert.equal(msg.id, 42);
    assert.equal(msg.result, undefined, body);
    assert.equal(typeof msg.error?.code, "number", body);

    await transport.terminateSession();
    await client.close();
  });
});

describe("MCP telemetry", () => {
  test("access log keys, agentgateway_mcp_requests_total and a tools/call span", T, async () => {
    // a fixed client traceparent marks this test's spans
    const traceId = crypto.randomBytes(16).toString("hex"), parent = crypto.randomBytes(8).toString("hex");
    const { client, transport } = await connectHttp(P.http,
      { requestInit: { headers: { traceparent: `00-${traceId}-${parent}-01` } } });
    const sid = transport.sessionId;
    const msg = "telemetry-" + crypto.randomBytes(3).toString("hex");
    assert.equal(text(await callTool(client, "echo", { message: msg })), `Echo: ${msg}`);

    // access log
    const line = await eventually(() => {
      const l = accessLines(gw).find((o) => o["mcp.method.name"] === "tools/call" && o["mcp.session.id"] === sid);
      assert.ok(l, "a tools/call access log line for the session:\n" + gw.stdout().slice(-3000));
      return l;
    }, 5000);
    // DESIGN.md's access log layout (agentgateway <= v0.9 keys): mcp.tool names the tool
    const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k]]));
    assert.deepEqual(pick(line, ["http.method", "http.status", "mcp.method.name", "mcp.target", "mcp.tool",
      "mcp.session.id"]), { "http.method": "POST", "http.status": 200, "mcp.method.name": "tools/call",
      "mcp.target": "everything", "mcp.tool": "echo", "mcp.session.id": sid }, JSON.stringify(line));
    const init = accessLines(gw).find((o) => o["mcp.method.name"] === "initialize" && o["mcp.session.id"] === sid);
    assert.ok(init, "initialize is logged with the session it created");

    // metric
    const m = await request({ host: gw.stats.split(":")[0], port: Number(gw.stats.split(":")[1]),
      path: "/metrics", timeout: 5000 });
    assert.equal(m.status, 200);
    const series = m.body.split("\n").filter((l) => l.startsWith("agentgateway_mcp_requests_total{"));
    const call = series.find((l) => /method="tools\/call"/.test(l) && /resource="echo"/.test(l)
      && /server="everything"/.test(l) && /resource_type="tool"/.test(l));
    assert.ok(call, "tools/call echo series:\n" + series.join("\n"));
    assert.ok(Number(call.split(" ").pop()) >= 1, call);
    assert.ok(series.some((l) => /method="initialize"/.test(l)), "initialize counted");

    // span
    const until = Date.now() + 10000;
    let span;
    while (!span && Date.now() < until) {
      span = rx.spans().find((s) => s.traceId === traceId && s.name === "tools/call");
      if (!span) await sleep(100);
    }
    const names = rx.spans().filter((s) => s.traceId === traceId).map((s) => s.name);
    assert.ok(span, `a span named tools/call in the client's trace (span names seen: ${names})`);
    assert.equal(span.parentSpanId, parent, "child of the client's traceparent");
    const a = Object.fromEntries(Object.entries(span.attributes).map(([k, v]) => [k, v.value]));
    assert.deepEqual(pick(a, ["mcp.method.name", "mcp.session.id", "mcp.target", "gen_ai.tool.name"]),
      { "mcp.method.name": "tools/call", "mcp.session.id": sid, "mcp.target": "everything",
        "gen_ai.tool.name": "echo" }, "MCP attributes on the span: " + JSON.stringify(a, (k, v) => (typeof v === "bigint" ? String(v) : v)));
    assert.equal(span.kind, 2, "SERVER span");

    await transport.terminateSession();
    await client.close();
  });
});

// ---- several workers ----

// The default worker count is the number of CPUs (CPU_LIMIT overrides it). Connections are
// spread over the workers by the kernel, so one client's requests reach different workers:
// state that only one worker holds (stdio children, SSE upstream streams, legacy SSE client
// streams) must still serve the whole session.
describe("with two worker threads", () => {
  let gw2;
  const Q = {};
  before(async () => {
    for (const k of ["stdio", "sse", "ssetarget"]) Q[k] = await freePort();
    gw2 = await gateway(`
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
binds:
- port: ${Q.stdio}
  listeners:
  - routes:${mcpBackend([`{name: local, stdio: {cmd: "${process.execPath}", args: ["${EVERYTHING}"], env: {LG_WHO: stdio}}}`])}
- port: ${Q.sse}
  listeners:
  - routes:${mcpBackend([`{name: everything, mcp: {host: "http://127.0.0.1:${http.port}/mcp"}}`])}
- port: ${Q.ssetarget}
  listeners:
  - routes:${mcpBackend([`{name: legacy, sse: {host: "http://127.0.0.1:${sse.port}/sse"}}`])}
`, { env: { CPU_LIMIT: "2" } });
    assert.match(gw2.logs(), /started: 2 workers/);
  });

  test("stdio target: one child per session, whichever worker a request reaches", T, async () => {
    const pid = gw2.proc.pid;
    const before = everythingChildren(pid);
    const { client, transport } = await connectHttp(Q.stdio);
    await exercise(client, { who: "stdio" });
    // eight requests on eight fresh connections: both workers see the session
    for (let i = 0; i < 8; i++) {
      const r = await freshCall(Q.stdio, transport.sessionId, 100 + i, "tools/call",
        { name: "echo", arguments: { message: `fresh ${i}` } });
      assert.equal(r.msg?.result?.content?.[0]?.text, `Echo: fresh ${i}`, `${r.status} ${r.body.slice(0, 300)}`);
    }
    const spawned = everythingChildren(pid).filter((p) => !before.includes(p));
    assert.equal(spawned.length, 1, `one child for the session (${spawned})`);
    await transport.terminateSession();
    await client.close();
    await eventually(() => assert.deepEqual(everythingChildren(pid).filter((p) => !before.includes(p)), [],
      "the child ended with the session"), 10000, 100);
  });

  test("legacy SSE client: the stream and the POSTs on different connections", T, async () => {
    const l = await openLegacy(Q.sse);
    const init = await l.post({ jsonrpc: "2.0", id: 1, method: "initialize", params: {
      protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } } });
    assert.equal(init.status, 202, init.body);
    assert.ok((await l.answer(1)).result?.serverInfo, "initialize answered on the stream");
    assert.equal((await l.post({ jsonrpc: "2.0", method: "notifications/initialized" })).status, 202);
    for (let i = 0; i < 8; i++) {
      const r = await l.post({ jsonrpc: "2.0", id: 10 + i, method: "tools/call",
        params: { name: "echo", arguments: { message: `fresh ${i}` } } });
      assert.equal(r.status, 202, `POST ${i}: ${r.status} ${r.body}`);
      const m = await l.answer(10 + i);
      assert.equal(m.result?.content?.[0]?.text, `Echo: fresh ${i}`, JSON.stringify(m));
    }
    l.close();
  });

  test("sse: target: the upstream stream serves every request of the session", T, async () => {
    const connected = () => (sse.logs().match(/Client Connected/g) || []).length;
    const before = connected();
    const { client, transport } = await connectHttp(Q.ssetarget);
    await exercise(client, { who: "sse" });
    for (let i = 0; i < 8; i++) {
      const r = await freshCall(Q.ssetarget, transport.sessionId, 100 + i, "tools/call",
        { name: "echo", arguments: { message: `fresh ${i}` } });
      assert.equal(r.msg?.result?.content?.[0]?.text, `Echo: fresh ${i}`, `${r.status} ${r.body.slice(0, 300)}`);
    }
    assert.equal(connected() - before, 1, "one upstream SSE stream for the session");
    await transport.terminateSession();
    await client.close();
  });
});

// ---- resumption by another replica ----

async function replicaPair(extraConfig, n = 2) {
  const [pa, pb] = [await freePort(), await freePort()];
  const conf = (port) => `
config:
  adminAddr: "{{ADMIN}}"
  readinessAddr: "{{READY}}"
  statsAddr: "{{STATS}}"
  workerThreads: 1
${extraConfig}
binds:
- port: ${port}
  listeners:
  - routes:${mcpBackend([`{name: everything, mcp: {host: "http://127.0.0.1:${http.port}/mcp"}}`])}
`;
  const [a, b] = await Promise.all([gateway(conf(pa)), n > 1 ? gateway(conf(pb)) : null]);
  return { a, b, pa, pb };
}

// creates a session on replica A, resumes it on replica B with the SDK (a transport given
// the session id skips initialize), and checks both replicas keep serving it
async function resumeAcross(pa, pb) {
  const first = await connectHttp(pa);
  const sid = first.transport.sessionId;
  assert.ok(sid);
  assert.equal(text(await callTool(first.client, "echo", { message: "on A" })), "Echo: on A");

  const second = await connectHttp(pb, { sessionId: sid });
  assert.equal(second.transport.sessionId, sid);
  assert.equal(text(await callTool(second.client, "echo", { message: "on B" })), "Echo: on B");
  assert.ok((await toolNames(second.client)).includes("echo"));
  const mark = second.client.raw.length;
  await callTool(second.client, LONG_TOOL, { duration: 0.3, steps: 2 }, { onprogress: () => {} });
  assert.equal(second.client.raw.slice(mark).filter((m) => m.method === "notifications/progress").length, 2,
    "progress relayed on the resumed session");
  assert.equal(text(await callTool(first.client, "echo", { message: "A again" })), "Echo: A again");
  return { first, second, sid };
}

describe("session resumed by a second gateway process", () => {
  test("plain ids (base64url JSON)", T, async () => {
    const { pa, pb } = await replicaPair("");
    const { first, second, sid } = await resumeAcross(pa, pb);
    const state = jsonOrNull(b64url(sid) || Buffer.alloc(0));
    assert.ok(state?.s?.[0]?.s, "readable upstream session in the plain id");
    await second.transport.terminateSession();
    await Promise.all([first.client.close(), second.client.close()]);
  });

  test("AES-256-GCM ids with config.session.key", T, async () => {
    const key = crypto.randomBytes(32).toString("hex");
    const { pa, pb } = await replicaPair(`  session: {key: "${key}"}`);
    const { first, second, sid } = await resumeAcross(pa, pb);

    const raw = b64url(sid);
    assert.ok(raw, "the id is base64url");
    assert.equal(jsonOrNull(raw), null, "the encrypted id is not readable JSON");
    assert.ok(!raw.toString("latin1").includes('"s"'), "no JSON inside");
    assert.ok(!/everything/.test(raw.toString("latin1")), "target name not visible");
    assert.ok(raw.length >= 12 + 16 + 20, "room for a nonce, a tag and the sealed state");

    // a replica with another key cannot resume it
    const other = await replicaPair(`  session: {key: "${crypto.randomBytes(32).toString("hex")}"}`, 1);
    const r = await request({ port: other.pa, method: "POST", path: "/mcp", timeout: 5000,
      headers: { "content-type": "application/json", accept: "application/json, text/event-stream",
        "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18" } },
      JSON.stringify({ jsonrpc: "2.0", id: 3, method: "tools/call", params: { name: "echo", arguments: { message: "x" } } }));
    assert.ok(r.status >= 400 || /"error"/.test(r.body), `wrong key refused: ${r.status} ${r.body.slice(0, 200)}`);
    assert.doesNotMatch(r.body, /Echo: x/);
    await other.a.stop();

    await second.transport.terminateSession();
    await Promise.all([first.client.close(), second.client.close()]);
  });
});
