// 11-lifecycle.test.mjs -- CLI, reload (SIGHUP, file change, ConfigMap symlink swap),
// drain on SIGTERM, management endpoints, TLS on both sides.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import https from "node:https";
import { execFileSync } from "node:child_process";
import { startGateway, upstream, request, freePort, sleep, eventually, runBin, tmpdir, fill, ROOT } from "../helpers/gateway.mjs";

const base = (port, body = "v1") => `
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 2}
binds:
- port: ${port}
  listeners:
  - routes:
    - policies: {directResponse: {body: "${body}", status: 200}}
`;

describe("command line", () => {
  test("-V, --version and -h", async () => {
    const v = await runBin(["-V"]);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^lunagate \d+\.\d+\.\d+\n$/);
    const j = await runBin(["--version"]);
    assert.equal(JSON.parse(j.stdout).version.split(".").length, 3);
    const h = await runBin(["-h"]);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /--validate-only/);
  });

  test("--validate-only accepts a good file and names the line of a bad key", async () => {
    const dir = tmpdir();
    const good = path.join(dir, "good.yaml");
    fs.writeFileSync(good, (await fill(base(3000))).text);
    const ok = await runBin(["-f", good, "--validate-only"]);
    assert.equal(ok.code, 0, ok.stderr);
    const bad = path.join(dir, "config.yaml");
    fs.writeFileSync(bad, "binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n      - hots: 127.0.0.1:1\n");
    const r = await runBin(["-f", bad, "--validate-only"]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stderr.trim().split("\n").length, 1, "one line");
    assert.match(r.stderr, /config\.yaml:6:9: binds\[0\]\.listeners\[0\]\.routes\[0\]\.backends\[0\]: unknown key 'hots' \(did you mean 'host'\?\)/);
  });

  test("-c inline, -f - from stdin, and both at once is an error", async () => {
    const inline = await runBin(["-c", (await fill(base(3000))).text, "--validate-only"]);
    assert.equal(inline.code, 0, inline.stderr);
    const stdin = await runBin(["-f", "-", "--validate-only"], (await fill(base(3000))).text);
    assert.equal(stdin.code, 0, stdin.stderr);
    const both = await runBin(["-f", "x", "-c", "y"]);
    assert.notEqual(both.code, 0);
    assert.match(both.stderr, /either -f or -c/);
    const missing = await runBin(["-f", "/nonexistent/file.yaml"]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /nonexistent/);
  });

  test("environment variables expand, $$ stays a dollar", async () => {
    const port = await freePort();
    const gw = await startGateway(base(port, "$GREETING $$5"), { env: { GREETING: "hello" } });
    try {
      assert.equal((await request({ port, path: "/" })).body, "hello $5");
    } finally { await gw.stop(); }
  });

  test("every file under config/ validates", async () => {
    const files = [];
    const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => {
      const p = path.join(d, e.name);
      if (e.isDirectory() && !["kubernetes", "grafana", "plugins"].includes(e.name)) walk(p);
      else if (/\.ya?ml$/.test(e.name)) files.push(p);
    });
    walk(path.join(ROOT, "config"));
    assert.ok(files.length >= 1);
    for (const f of files) {
      const r = await runBin(["-f", f, "--validate-only"], undefined, { OPENAI_API_KEY: "x", ANTHROPIC_API_KEY: "x", GEMINI_API_KEY: "x" });
      assert.equal(r.code, 0, `${f}: ${r.stderr}`);
    }
  });
});

describe("reload", () => {
  test("SIGHUP reloads; a bad file keeps the old config serving", async () => {
    const port = await freePort();
    const gw = await startGateway(base(port, "v1"));
    try {
      assert.equal((await request({ port, path: "/" })).body, "v1");
      fs.writeFileSync(gw.file, fs.readFileSync(gw.file, "utf8").replace('"v1"', '"v2"'));
      gw.proc.kill("SIGHUP");
      await eventually(async () => assert.equal((await request({ port, path: "/" })).body, "v2"));
      fs.writeFileSync(gw.file, "binds: [{port: nope}]\n");
      gw.proc.kill("SIGHUP");
      await eventually(() => assert.match(gw.logs(), /reload \(SIGHUP\) failed, keeping the running configuration/));
      assert.equal((await request({ port, path: "/" })).body, "v2");
    } finally { await gw.stop(); }
  });

  test("metrics follow a route renamed by a reload", async () => {
    const port = await freePort();
    const gw = await startGateway(base(port, "ok").replace("    - policies:", "    - name: before\n      policies:"));
    const stats = Number(gw.stats.split(":")[1]);
    const count = (m, route) => Number((m.match(new RegExp(
      `^agentgateway_requests_total\\{[^}]*route="default/${route}"[^}]*\\} (\\d+)`, "m")) || [])[1] || 0);
    try {
      let sent = 0;
      for (; sent < 3; sent++) assert.equal((await request({ port, path: "/" })).status, 200);
      fs.writeFileSync(gw.file, fs.readFileSync(gw.file, "utf8").replace("name: before", "name: after"));
      gw.proc.kill("SIGHUP");
      await eventually(async () => {
        assert.equal((await request({ port, path: "/" })).status, 200);
        sent++;
        assert.ok(count((await request({ port: stats, path: "/metrics" })).body, "after") > 0);
      });
      for (let i = 0; i < 3; i++, sent++) assert.equal((await request({ port, path: "/" })).status, 200);
      await eventually(async () => {
        const m = (await request({ port: stats, path: "/metrics" })).body;
        assert.ok(count(m, "before") >= 3 && count(m, "after") >= 4, m);
        assert.equal(count(m, "before") + count(m, "after"), sent);
      });
    } finally { await gw.stop(); }
  });

  test("a ConfigMap-style ..data symlink swap reloads under load with no failed request", async () => {
    const port = await freePort();
    const dir = tmpdir();
    const mk = (name, body) => {
      fs.mkdirSync(path.join(dir, name));
      fs.writeFileSync(path.join(dir, name, "config.yaml"), body);
    };
    // kubelet layout: config.yaml -> ..data/config.yaml, ..data -> ..2026_v1
    const ports = { a: await freePort(), r: await freePort(), s: await freePort() };
    const yaml = (b) => base(port, b).replace("{{ADMIN}}", `127.0.0.1:${ports.a}`).replace("{{READY}}", `127.0.0.1:${ports.r}`).replace("{{STATS}}", `127.0.0.1:${ports.s}`);
    mk("..2026_v1", yaml("one"));
    fs.symlinkSync("..2026_v1", path.join(dir, "..data"));
    fs.symlinkSync("..data/config.yaml", path.join(dir, "config.yaml"));
    const gw = await startGateway("", { file: path.join(dir, "config.yaml") });
    try {
      let failures = 0, seenTwo = false, stop = false;
      const load = (async () => {
        while (!stop) {
          const rs = await Promise.all(Array.from({ length: 8 }, () => request({ port, path: "/" }).catch(() => ({ status: 0 }))));
          for (const r of rs) {
            if (r.status !== 200) failures++;
            if (r.body === "two") seenTwo = true;
          }
        }
      })();
      try {
        await sleep(300);
        mk("..2026_v2", yaml("two"));
        fs.symlinkSync("..2026_v2", path.join(dir, "..data_tmp"));
        fs.renameSync(path.join(dir, "..data_tmp"), path.join(dir, "..data")); // atomic swap
        await eventually(() => assert.ok(seenTwo, "new config serving"), 15000);
      } finally {
        stop = true; // the load loop must end whatever happened
        await load;
      }
      assert.equal(failures, 0);
      assert.match(gw.logs(), /reloaded .* \(file changed\)/);
    } finally { await gw.stop(); }
  });

  test("a reload can add a listener port and remove another", async () => {
    const p1 = await freePort(), p2 = await freePort();
    const gw = await startGateway(base(p1, "first"));
    try {
      const text = fs.readFileSync(gw.file, "utf8").replace(`port: ${p1}`, `port: ${p2}`);
      fs.writeFileSync(gw.file, text);
      gw.proc.kill("SIGHUP");
      await eventually(async () => assert.equal((await request({ port: p2, path: "/" })).body, "first"));
      await eventually(async () => assert.equal(await request({ port: p1, path: "/" }).then(() => "open", () => "closed"), "closed"));
    } finally { await gw.stop(); }
  });
});

describe("drain and management", () => {
  test("SIGTERM lets in-flight requests finish and then exits 0", async () => {
    const up = await upstream((req, res) => setTimeout(() => res.end("finished"), 700));
    const port = await freePort();
    const gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
binds:
- port: ${port}
  listeners:
  - routes:
    - backends: [{host: 127.0.0.1:${up.port}}]
`);
    try {
      const inflight = request({ port, path: "/slow" });
      await sleep(150);
      gw.proc.kill("SIGTERM");
      const r = await inflight;
      assert.equal(r.status, 200);
      assert.equal(r.body, "finished");
      const exit = await gw.exited;
      assert.equal(exit.code, 0);
      await assert.rejects(request({ port, path: "/" }));
    } finally { await gw.stop().catch(() => {}); await up.close(); }
  });

  test("readiness, config_dump with secrets redacted, quitquitquit", async () => {
    const port = await freePort();
    const gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
binds:
- port: ${port}
  listeners:
  - routes:
    - backends: [{host: 127.0.0.1:1}]
      policies: {backendAuth: {key: sk-very-secret-123}}
`);
    const [h, p] = gw.ready.split(":");
    const ready = await request({ host: h, port: Number(p), path: "/healthz/ready" });
    assert.equal(ready.status, 200);
    assert.equal(ready.body, "ready\n");
    const [ah, ap] = gw.admin.split(":");
    const dump = await request({ host: ah, port: Number(ap), path: "/config_dump" });
    assert.equal(dump.status, 200);
    assert.ok(!dump.body.includes("sk-very-secret-123"), "key redacted");
    assert.equal(JSON.parse(dump.body).binds[0].port, port);
    const q = await request({ host: ah, port: Number(ap), path: "/quitquitquit", method: "POST" });
    assert.equal(q.status, 200);
    const exit = await gw.exited;
    assert.equal(exit.code, 0);
  });
});

describe("TLS", () => {
  test("HTTPS listener, and a TLS upstream verified against backendTLS.root", async () => {
    const dir = tmpdir();
    const key = path.join(dir, "key.pem"), cert = path.join(dir, "cert.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
      "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], { stdio: "ignore" });
    const tlsUp = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (req, res) => res.end(`tls upstream ${req.url}`));
    await new Promise((r) => tlsUp.listen(0, "127.0.0.1", r));
    const upPort = tlsUp.address().port;
    const port = await freePort();
    const gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
binds:
- port: ${port}
  listeners:
  - protocol: HTTPS
    tls: {cert: ${cert}, key: ${key}}
    routes:
    - matches: [{path: {pathPrefix: /good}}]
      backends:
      - host: 127.0.0.1:${upPort}
        policies: {backendTLS: {root: ${cert}, hostname: localhost}}
    - matches: [{path: {pathPrefix: /unverified}}]
      backends:
      - host: 127.0.0.1:${upPort}
        policies: {backendTLS: {hostname: localhost}}
`);
    const get = (p) => new Promise((resolve, reject) => {
      https.get({ host: "127.0.0.1", port, path: p, ca: fs.readFileSync(cert), servername: "localhost", agent: false }, (res) => {
        let b = "";
        res.on("data", (d) => (b += d));
        res.on("end", () => resolve({ status: res.statusCode, body: b }));
      }).on("error", reject);
    });
    try {
      const ok = await get("/good/x");
      assert.equal(ok.status, 200);
      assert.equal(ok.body, "tls upstream /good/x");
      const bad = await get("/unverified");
      assert.equal(bad.status, 502, "system roots do not trust a self-signed upstream");
      assert.match(JSON.parse(bad.body).error.message, /TLS|certificate|handshake/i);
    } finally {
      await gw.stop();
      tlsUp.close();
    }
  });
});
