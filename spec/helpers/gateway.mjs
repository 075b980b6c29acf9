// gateway.mjs -- start the real lunagate binary on a temporary config and talk to it.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import http from "node:http";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.LUNAGATE_BIN || path.join(ROOT, "build/lunagate");

// freePort() -> a TCP port nothing listens on right now (bind 0, read, close).
// Ports come from 20000-32000, below Linux's ephemeral range (32768+), so an outgoing
// connection of a test can never take a port between freePort() and the gateway's bind.
const usedPorts = new Set();
export async function freePort() {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (usedPorts.has(port)) continue;
    const ok = await new Promise((resolve) => {
      const s = net.createServer();
      s.unref();
      s.on("error", () => resolve(false));
      s.listen(port, "0.0.0.0", () => s.close(() => resolve(true)));
    });
    if (ok) { usedPorts.add(port); return port; }
  }
}

// fill(yaml) replaces {{ADMIN}}, {{READY}}, {{STATS}} with free loopback addresses.
export async function fill(yaml) {
  const admin = await freePort(), ready = await freePort(), stats = await freePort();
  return {
    admin, ready, stats,
    text: yaml.replaceAll("{{ADMIN}}", `127.0.0.1:${admin}`).replaceAll("{{READY}}", `127.0.0.1:${ready}`)
      .replaceAll("{{STATS}}", `127.0.0.1:${stats}`),
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// eventually(fn, ms): retries fn until it stops throwing or the time is up.
export async function eventually(fn, ms = 5000, step = 50) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > until) throw e;
      await sleep(step);
    }
  }
}

export function tmpdir(prefix = "lunagate-") {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// startGateway(yaml, opts) starts the binary with `-f <tmp>/config.yaml`. `yaml` may use
// the placeholders {{ADMIN}}, {{READY}}, {{STATS}} which become free loopback addresses.
// Resolves once /healthz/ready answers 200. Returns a handle with stop(), logs() and the
// addresses.
export async function startGateway(yaml, opts = {}) {
  const dir = opts.dir || tmpdir();
  let { admin, ready, stats, text } = await fill(yaml);
  if (opts.file) {
    // an existing file: find its addresses
    const t = fs.readFileSync(opts.file, "utf8");
    const grab = (k) => Number((t.match(new RegExp(k + ':\\s*"?127\\.0\\.0\\.1:(\\d+)')) || [])[1]);
    admin = grab("adminAddr") || admin; ready = grab("readinessAddr") || ready; stats = grab("statsAddr") || stats;
  }
  const file = opts.file || path.join(dir, "config.yaml");
  if (!opts.file) fs.writeFileSync(file, text);
  const args = opts.args || ["-f", file];
  const proc = spawn(BIN, args, {
    env: { ...process.env, ...(opts.env || {}) },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "", err = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (err += d));
  const exited = new Promise((r) => proc.on("exit", (code, sig) => r({ code, sig })));
  const gw = {
    proc, dir, file, exited,
    admin: `127.0.0.1:${admin}`, ready: `127.0.0.1:${ready}`, stats: `127.0.0.1:${stats}`,
    stdout: () => out, stderr: () => err, logs: () => out + err,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const r = await Promise.race([exited, sleep(10000).then(() => null)]);
      if (!r) { proc.kill("SIGKILL"); await exited; throw new Error("gateway did not stop in 10s"); }
      return r;
    },
  };
  if (opts.noWait) return gw;
  try {
    await eventually(async () => {
      if (proc.exitCode !== null) throw new Error("exited early");
      const r = await request({ port: ready, path: "/healthz/ready" });
      if (r.status !== 200) throw new Error("not ready");
    }, opts.readyTimeout || 8000);
  } catch (e) {
    proc.kill("SIGKILL");
    throw new Error(`gateway did not become ready: ${e.message}\n--- logs ---\n${out}${err}`);
  }
  return gw;
}

// request(opts): a plain http.request that resolves {status, headers, body}.
export function request(opts, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", agent: false, ...opts }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (opts.timeout) req.setTimeout(opts.timeout, () => req.destroy(new Error("timeout")));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// upstream(handler): an HTTP server on a free port; records requests.
export async function upstream(handler) {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const rec = { method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() };
      seen.push(rec);
      if (handler) return handler(req, res, rec);
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ ok: true, url: req.url }));
    });
  });
  server.keepAliveTimeout = 30000;
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    port, seen, server,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}

// raw(port, bytes): writes raw bytes, resolves with everything read until close or `ms`.
export function raw(port, bytes, ms = 2000) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    let data = "";
    const t = setTimeout(() => { s.destroy(); resolve(data); }, ms);
    s.on("data", (d) => (data += d));
    s.on("close", () => { clearTimeout(t); resolve(data); });
    s.on("error", () => { clearTimeout(t); resolve(data); });
    s.write(bytes);
  });
}

// runBin(args, input) -> {code, stdout, stderr}
export function runBin(args, input, env = {}) {
  return new Promise((resolve) => {
    const p = spawn(BIN, args, { env: { ...process.env, ...env } });
    let stdout = "", stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("exit", (code) => resolve({ code, stdout, stderr }));
    if (input !== undefined) p.stdin.end(input);
    else p.stdin.end();
  });
}
