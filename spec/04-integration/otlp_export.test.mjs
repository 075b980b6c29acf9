// otlp_export.test.mjs -- the real OTLP exporter (src/otlp.c) against an independent
// receiver: OTLP/gRPC and OTLP/HTTP, decoded with the OpenTelemetry JS protobuf root.
// SPDX-License-Identifier: MIT
//
// Drives spec/02-c/otlp_export_driver.c, built here with cc from the sources (with
// ASan+UBSan when LUNAGATE_BIN points into build-asan). OTLP_DRIVER_BIN overrides.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startOtlpReceiver } from '../helpers/otlp-receiver.mjs';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ASAN = /build-asan/.test(process.env.LUNAGATE_BIN || '');
let driver;
let driverDir = null; // temp build dir, removed after the run
let rx;

async function buildDriver() {
  if (process.env.OTLP_DRIVER_BIN) return process.env.OTLP_DRIVER_BIN;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lg-otlp-driver-'));
  driverDir = dir;
  const gen = path.join(dir, 'gen');
  fs.mkdirSync(gen);
  const protos = fs.readdirSync(path.join(ROOT, 'src/proto')).filter((f) => f.endsWith('.proto'));
  for (const p of protos) {
    await run('protoc-c', ['--proto_path=src/proto', `--c_out=${gen}`, `src/proto/${p}`], { cwd: ROOT });
  }
  const genC = fs.readdirSync(gen).filter((f) => f.endsWith('.c')).map((f) => path.join(gen, f));
  const out = path.join(dir, 'otlp_export_driver');
  const version = fs.existsSync(path.join(ROOT, 'VERSION'))
    ? fs.readFileSync(path.join(ROOT, 'VERSION'), 'utf8').trim() : '0.0.0';
  const san = ASAN ? ['-O1', '-g', '-fsanitize=address,undefined', '-fno-omit-frame-pointer'] : ['-O2'];
  await run('cc', ['-std=c11', '-D_GNU_SOURCE', ...san, '-Wall', '-Wextra', '-Wno-unused-parameter',
    `-DLG_VERSION="${version}"`, '-Isrc', `-I${gen}`, '-o', out,
    'spec/02-c/otlp_export_driver.c', 'src/otlp.c', 'src/trace.c', 'src/common.c', ...genC,
    '-lprotobuf-c', '-lcurl', '-lpthread'], { cwd: ROOT, timeout: 120000 });
  return out;
}

// Runs the driver; returns { stats, stderr, ms }. Never inherits OTEL_/OTLP_ variables
// from the test runner's environment.
async function drive(args, env = {}) {
  const clean = Object.fromEntries(Object.entries(process.env)
    .filter(([k]) => !/^(OTEL_|OTLP_|POD_|NODE_NAME)/.test(k)));
  const t0 = Date.now();
  const { stdout, stderr } = await run(driver, args, {
    env: { ...clean, ...env }, timeout: 30000, maxBuffer: 8 << 20,
  });
  const line = stdout.trim().split('\n').pop();
  return { stats: JSON.parse(line), stderr, ms: Date.now() - t0 };
}

async function deadPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

const RESOURCE_ENV = {
  OTEL_SERVICE_NAME: 'lunagate-it',
  OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=test,team=ai%20platform',
  POD_NAME: 'lunagate-6c9f-abcde',
  POD_NAMESPACE: 'gateways',
  NODE_NAME: 'node-7',
};

// Shared checks for the 2N spans one driver run exports.
function checkSpans(spans, n) {
  assert.equal(spans.length, n, 'every span arrived exactly once');
  const servers = spans.filter((s) => s.kind === 2);
  const clients = spans.filter((s) => s.kind === 3);
  assert.equal(servers.length, n / 2, 'SERVER spans');
  assert.equal(clients.length, n / 2, 'CLIENT spans');
  const byId = new Map(servers.map((s) => [s.spanId, s]));
  for (const s of servers) {
    assert.equal(s.name, 'POST /v1/chat/completions');
    assert.match(s.traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(s.traceId, '0'.repeat(32));
    assert.equal(s.parentSpanId, '00f067aa0ba902b7', 'server span keeps the remote parent');
    assert.equal(s.flags, 0x301, 'sampled, remote parent');
    assert.equal(s.traceState, 'rojo=00f067aa0ba902b7');
    assert.equal(s.end - s.start, 1500000n);
    const a = s.attributes;
    const i = Number(a['lunagate.index'].value);
    assert.deepEqual(a['gen_ai.request.model'], { type: 'stringValue', value: 'gpt-4o-mini' });
    assert.deepEqual(a['gen_ai.usage.input_tokens'], { type: 'intValue', value: BigInt(10 + i) },
      'ints stay intValue');
    assert.deepEqual(a['gen_ai.request.temperature'], { type: 'doubleValue', value: 0.25 });
    assert.equal(a['gen_ai.response.streaming'].type, 'boolValue');
    assert.equal(a['gen_ai.response.streaming'].value, i % 2 === 1);
    assert.deepEqual(a['gen_ai.response.finish_reasons'], {
      type: 'arrayValue',
      value: [{ type: 'stringValue', value: 'stop' }, { type: 'stringValue', value: 'length' }],
    }, 'string lists stay arrayValue');
    assert.deepEqual(a['lunagate.codes'], {
      type: 'arrayValue',
      value: [{ type: 'intValue', value: 200n }, { type: 'intValue', value: -1n },
        { type: 'intValue', value: 4294967296n }],
    }, 'int lists stay arrayValue of intValue');
    if (i % 5 === 4) {
      assert.equal(s.status && s.status.code, 2, 'error status');
      assert.equal(s.status.message, 'upstream timed out');
    } else {
      assert.ok(!s.status || !s.status.code, 'status unset');
    }
    assert.equal(s.scope && s.scope.name, 'lunagate');
  }
  for (const c of clients) {
    const parent = byId.get(c.parentSpanId);
    assert.ok(parent, `client span ${c.spanId} has its server span as parent`);
    assert.equal(c.traceId, parent.traceId, 'same trace');
    assert.match(c.name, /^POST 127\.0\.0\.1:\d+$/);
    assert.equal(c.flags, 0x101);
    assert.deepEqual(c.attributes['http.status'], { type: 'intValue', value: 200n });
  }
  const res = spans[0].resource;
  assert.deepEqual(res['service.name'], { type: 'stringValue', value: 'lunagate-it' });
  assert.equal(res['deployment.environment'].value, 'test');
  assert.equal(res['team'].value, 'ai platform');
  assert.equal(res['k8s.pod.name'].value, 'lunagate-6c9f-abcde');
  assert.equal(res['k8s.namespace.name'].value, 'gateways');
  assert.equal(res['k8s.node.name'].value, 'node-7');
}

before(async () => {
  driver = await buildDriver();
  rx = await startOtlpReceiver();
});

after(async () => {
  if (rx) await rx.close();
  if (driverDir) fs.rmSync(driverDir, { recursive: true, force: true });
});

const reset = () => { rx.requests.length = 0; rx.attempts.length = 0; rx.failNext(0); };

test('OTLP/gRPC: spans, kinds, parents, attribute types, resource, custom header', async () => {
  reset();
  const secret = 'grpc-secret-7f3a9';
  const { stats, stderr } = await drive(['--endpoint', `http://127.0.0.1:${rx.grpcPort}`,
    '--protocol', 'grpc', '--spans', '40', '--batch', '16', '--header', `X-Lunagate-Test: ${secret}`],
  RESOURCE_ENV);
  assert.equal(stats.exported, 40, `driver stats ${JSON.stringify(stats)}`);
  assert.equal(stats.dropped, 0);
  const spans = await rx.waitForSpans(40, 5000);
  checkSpans(spans, 40);
  assert.ok(rx.requests.length >= 3, 'batched by --batch 16');
  for (const r of rx.requests) {
    assert.equal(r.transport, 'grpc');
    assert.equal(r.error, null);
    assert.equal(r.headers['x-lunagate-test'], secret, 'custom header arrived as metadata');
  }
  assert.ok(!stderr.includes(secret), 'header value never logged');
});

test('OTLP/gRPC: grpc:// endpoint scheme is h2c with gRPC as default protocol', async () => {
  reset();
  const { stats } = await drive(['--endpoint', `grpc://127.0.0.1:${rx.grpcPort}`, '--spans', '4'],
    RESOURCE_ENV);
  assert.equal(stats.exported, 4);
  const spans = await rx.waitForSpans(4, 5000);
  assert.equal(spans.length, 4);
  assert.ok(rx.requests.every((r) => r.transport === 'grpc'));
});

test('OTLP/HTTP: base URL gets /v1/traces, protobuf body, Langfuse-style Basic auth', async () => {
  reset();
  const auth = 'Basic ' + Buffer.from('pk-lf-1234:sk-lf-5678').toString('base64');
  const { stats, stderr } = await drive(['--endpoint', `http://127.0.0.1:${rx.httpPort}/api/public/otel`,
    '--protocol', 'http', '--spans', '40', '--header', `Authorization: ${auth}`], RESOURCE_ENV);
  assert.equal(stats.exported, 40, `driver stats ${JSON.stringify(stats)}`);
  const spans = await rx.waitForSpans(40, 5000);
  checkSpans(spans, 40);
  for (const r of rx.requests) {
    assert.equal(r.transport, 'http');
    assert.equal(r.path, '/api/public/otel/v1/traces');
    assert.equal(r.contentType, 'application/x-protobuf');
    assert.equal(r.headers.authorization, auth, 'Authorization header arrived');
  }
  assert.ok(!stderr.includes('sk-lf-5678') && !stderr.includes(auth), 'secret never logged');
});

test('OTLP/HTTP: path option replaces the endpoint path', async () => {
  reset();
  const { stats } = await drive(['--endpoint', `http://127.0.0.1:${rx.httpPort}/ignored`,
    '--protocol', 'http', '--path', '/custom/traces', '--spans', '2']);
  assert.equal(stats.exported, 2);
  await rx.waitForSpans(2, 5000);
  assert.equal(rx.requests[0].path, '/custom/traces');
  assert.equal(rx.spans()[0].resource['service.name'].value, 'lunagate', 'default service.name');
});

test('retries: gRPC UNAVAILABLE is retried, the batch arrives once', async () => {
  reset();
  rx.failNext(1, { grpcCode: 14 });
  const { stats } = await drive(['--endpoint', `http://127.0.0.1:${rx.grpcPort}`, '--protocol', 'grpc',
    '--spans', '6', '--flush', '5000']);
  assert.equal(stats.exported, 6, JSON.stringify(stats));
  assert.equal(stats.batches, 2);
  assert.equal(rx.attempts.length, 2);
  assert.equal(rx.spans().length, 6);
});

test('retries: gRPC INVALID_ARGUMENT is not retried and counts drops', async () => {
  reset();
  rx.failNext(5, { grpcCode: 3 });
  const { stats } = await drive(['--endpoint', `http://127.0.0.1:${rx.grpcPort}`, '--protocol', 'grpc',
    '--spans', '6', '--flush', '3000']);
  rx.failNext(0);
  assert.equal(stats.exported, 0);
  assert.equal(stats.dropped_export, 6);
  assert.equal(rx.attempts.length, 1);
});

test('retries: HTTP 503 with Retry-After is honoured, 400 is not retried', async () => {
  reset();
  rx.failNext(1, { httpStatus: 503, retryAfter: '1' });
  const { stats } = await drive(['--endpoint', `http://127.0.0.1:${rx.httpPort}`, '--protocol', 'http',
    '--spans', '6', '--flush', '5000']);
  assert.equal(stats.exported, 6, JSON.stringify(stats));
  assert.equal(rx.attempts.length, 2);
  const gap = rx.attempts[1].at - rx.attempts[0].at;
  assert.ok(gap >= 900, `waited ${gap} ms for Retry-After: 1`);

  reset();
  rx.failNext(5, { httpStatus: 400 });
  const r2 = await drive(['--endpoint', `http://127.0.0.1:${rx.httpPort}`, '--protocol', 'http',
    '--spans', '6', '--flush', '3000']);
  rx.failNext(0);
  assert.equal(r2.stats.dropped_export, 6);
  assert.equal(rx.attempts.length, 1);
});

test('environment: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as-is, headers from env', async () => {
  reset();
  const { stats } = await drive(['--spans', '2'], {
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${rx.httpPort}/exact/path`,
    OTEL_EXPORTER_OTLP_HEADERS: 'x-env-key=abc%20def,x-other=1',
  });
  assert.equal(stats.exported, 2);
  await rx.waitForSpans(2, 5000);
  assert.equal(rx.requests[0].path, '/exact/path');
  assert.equal(rx.requests[0].headers['x-env-key'], 'abc def');
  assert.equal(rx.requests[0].headers['x-other'], '1');
});

test('environment: OTLP_ENDPOINT/OTLP_PROTOCOL override options, OTLP_HEADERS as JSON', async () => {
  reset();
  const { stats } = await drive(['--endpoint', 'http://127.0.0.1:1', '--protocol', 'http', '--spans', '2'], {
    OTLP_ENDPOINT: `grpc://127.0.0.1:${rx.grpcPort}`,
    OTLP_PROTOCOL: 'grpc',
    OTLP_HEADERS: '{"x-json-key": "v1"}',
  });
  assert.equal(stats.exported, 2);
  await rx.waitForSpans(2, 5000);
  assert.equal(rx.requests[0].transport, 'grpc');
  assert.equal(rx.requests[0].headers['x-json-key'], 'v1');
});

for (const protocol of ['grpc', 'http']) {
  test(`receiver down (${protocol}): submit stays fast, memory bounded by the queue, drops counted`, async () => {
    const port = await deadPort();
    const n = 20000;
    const { stats, ms } = await drive(['--endpoint', `http://127.0.0.1:${port}`, '--protocol', protocol,
      '--spans', String(n), '--queue', '256', '--batch', '64', '--interval', '50', '--flush', '300']);
    assert.equal(stats.exported, 0);
    assert.ok(stats.submit_us < (ASAN ? 3000000 : 500000), `submit loop took ${stats.submit_us} us`);
    assert.ok(stats.queued <= 256 + 64 * 2, `queue bound held: ${stats.queued} queued`);
    assert.ok(stats.dropped_queue >= n - 256 - 128, `drops counted: ${stats.dropped_queue}`);
    assert.equal(stats.dropped, n, 'every span is accounted as dropped');
    assert.ok(stats.stop_us < 1500000, `stop returned in ${stats.stop_us} us`);
    assert.ok(ms < 10000, `driver ran ${ms} ms`);
  });
}
