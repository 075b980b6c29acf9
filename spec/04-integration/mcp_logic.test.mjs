// mcp_logic.test.mjs -- the MCP gateway logic (lua/lunagate/mcp + lg.http, lg.process,
// lg.crypto_aead) against the real @modelcontextprotocol/server-everything over Streamable
// HTTP, legacy SSE and stdio.
// SPDX-License-Identifier: MIT
//
// Builds spec/02-c/mcp_driver.c against the archive next to LUNAGATE_BIN (build/ or
// build-asan/, with ASan+UBSan for the latter), starts server-everything twice
// (streamableHttp and sse, ephemeral ports), runs spec/04-integration/mcp_logic.lua in the
// driver and turns each JSON check line into a subtest. MCP_DRIVER_BIN overrides the build.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.LUNAGATE_BIN || path.join(ROOT, 'build/lunagate');
const ASAN = /build-asan/.test(BIN);
const EVERYTHING = path.join(ROOT,
  'spec/node_modules/@modelcontextprotocol/server-everything/dist/index.js');
let driver;
let driverDir = null;
const servers = [];

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function pkgFlags(kind) {
  const { stdout } = await run('pkg-config', [kind, 'lua5.4', 'libevent', 'libevent_openssl',
    'libevent_pthreads', 'yaml-0.1', 'libprotobuf-c', 'libcurl', 'openssl', 'libpcre2-8']);
  return stdout.trim().split(/\s+/).filter((f) => f && f !== '-llua5.4');
}

async function buildDriver() {
  if (process.env.MCP_DRIVER_BIN) return process.env.MCP_DRIVER_BIN;
  const archive = path.join(path.dirname(BIN), 'liblunagate.a');
  if (!fs.existsSync(archive)) throw new Error(`missing ${archive}: run make first`);
  driverDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lg-mcp-driver-'));
  const out = path.join(driverDir, 'mcp_driver');
  const { stdout: multiarch } = await run('gcc', ['-print-multiarch']);
  const libdir = `/usr/lib/${multiarch.trim()}`;
  const san = ASAN ? ['-O1', '-g', '-fsanitize=address,undefined', '-fno-omit-frame-pointer'] : ['-O2'];
  await run('cc', ['-std=c11', '-D_GNU_SOURCE', ...san, '-Wall', '-Wextra',
    '-Wno-unused-parameter', '-Isrc', ...(await pkgFlags('--cflags')), '-o', out,
    'spec/02-c/mcp_driver.c', archive, '-Wl,-E', `${libdir}/liblua5.4-cjson.a`,
    `${libdir}/liblua5.4.a`, ...(await pkgFlags('--libs')), '-lhttp_parser', '-lpthread',
    '-ldl', '-lm'], { cwd: ROOT, timeout: 120000 });
  return out;
}

// Starts server-everything with the given transport; resolves once it listens.
async function startEverything(transport) {
  const port = await freePort();
  const child = spawn(process.execPath, [EVERYTHING, transport], {
    env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  servers.push(child);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${transport} server did not start`)), 15000);
    let text = '';
    child.stderr.on('data', (d) => {
      text += d;
      if (/listening on port|running on port/i.test(text)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${transport} server exited with ${code}: ${text}`));
    });
  });
  return port;
}

let checks = [];
let driverResult = null;

before(async () => {
  driver = await buildDriver();
  const httpPort = await startEverything('streamableHttp');
  const ssePort = await startEverything('sse');
  try {
    const { stdout, stderr } = await run(driver, [
      'spec/04-integration/mcp_logic.lua', `http://127.0.0.1:${httpPort}/mcp`,
      `http://127.0.0.1:${ssePort}/sse`, process.execPath, EVERYTHING,
    ], {
      cwd: ROOT, timeout: 150000, maxBuffer: 32 << 20,
      env: { ...process.env, LG_DRIVER_TIMEOUT: '120',
             ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0' },
    });
    driverResult = { code: 0, stdout, stderr };
  } catch (e) {
    driverResult = { code: e.code ?? 1, stdout: e.stdout || '', stderr: e.stderr || String(e) };
  }
  checks = driverResult.stdout.split('\n').filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
});

after(() => {
  for (const s of servers) s.kill('SIGTERM');
  if (driverDir) fs.rmSync(driverDir, { recursive: true, force: true });
});

const EXPECTED = [
  'http.initialize.status', 'http.initialize.session', 'http.initialize.result',
  'http.initialize.rec', 'http.session.encrypted', 'http.tools.list', 'http.tools.list.arrays',
  'http.echo', 'http.echo.rec', 'http.progress.streamed', 'http.progress.result',
  'http.resume.second_replica', 'http.resume.wrong_key_404', 'http.missing_session_400',
  'http.parse_error', 'http.delete', 'http.after_delete_fails',
  'mux.initialize', 'mux.tools.prefixed', 'mux.tools.authz_filtered', 'mux.stdio.echo',
  'mux.stdio.rec', 'mux.http.echo', 'mux.authz.denied', 'mux.authz.rec', 'mux.stdio.get_sum',
  'mux.resources.prefixed', 'mux.resources.read', 'mux.prompts.prefixed', 'mux.stdio.progress',
  'web.sampling.relayed', 'web.sampling.answer_202', 'web.sampling.result',
  'local.sampling.relayed', 'local.sampling.answer_202', 'local.sampling.result',
  'get.stream_open', 'get.http_target_messages', 'stdio.notification_with_request',
  'mux.unknown_target', 'mux.delete_kills_stdio', 'get.ends_with_session',
  'stdio.trace_in_meta', 'stdio.trace_from_ids',
  'sse_upstream.initialize', 'sse_upstream.echo',
  'sse_downstream.endpoint', 'sse_downstream.post_202', 'sse_downstream.initialize_event',
  'sse_downstream.echo_event',
];

test('driver ran to the end without errors (and clean under ASan when built so)', () => {
  assert.equal(driverResult.code, 0, driverResult.stderr.slice(-4000));
  assert.ok(checks.some((c) => c.done), 'no {"done":true} line');
  assert.doesNotMatch(driverResult.stderr, /ERROR: (Address|Leak)Sanitizer|runtime error:/);
});

for (const name of EXPECTED) {
  test(`mcp: ${name}`, () => {
    const c = checks.find((x) => x.name === name);
    assert.ok(c, `check ${name} did not run`);
    assert.equal(c.ok, true, `${name}: ${c.detail ?? ''}`);
  });
}

test('every check the script ran passed', () => {
  const failed = checks.filter((c) => c.name && !c.ok);
  assert.deepEqual(failed, []);
});
