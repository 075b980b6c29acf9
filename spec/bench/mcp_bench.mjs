// mcp_bench.mjs -- tools/call round trip: directly to server-everything vs through lunagate.
// Prints p50/p99 of each and the added p50 (issue target: <= 0.5 ms).
//   node spec/bench/mcp_bench.mjs [calls]     (run from the repository root)
import { spawn } from "node:child_process";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { startGateway, freePort, eventually, request, ROOT } from "../helpers/gateway.mjs";

const N = Number(process.argv[2] || 300);
const server = path.join(ROOT, "spec/node_modules/@modelcontextprotocol/server-everything/dist/index.js");

async function measure(url) {
  const client = new Client({ name: "bench", version: "1" });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  for (let i = 0; i < 30; i++) await client.callTool({ name: "echo", arguments: { message: "warm" } });
  const t = [];
  for (let i = 0; i < N; i++) {
    const s = process.hrtime.bigint();
    await client.callTool({ name: "echo", arguments: { message: `m${i}` } });
    t.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  await client.close();
  t.sort((a, b) => a - b);
  return { p50: t[Math.floor(N * 0.5)], p99: t[Math.floor(N * 0.99)] };
}

const upPort = await freePort();
const srv = spawn(process.execPath, [server, "streamableHttp"], {
  env: { ...process.env, PORT: String(upPort) }, stdio: "ignore",
});
let gw;
try {
  await eventually(() => request({ port: upPort, path: "/mcp" }), 10000);
  const port = await freePort();
  gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", logging: {level: warn}}
binds:
- port: ${port}
  listeners:
  - routes:
    - backends:
      - mcp: {targets: [{name: everything, mcp: {host: "http://127.0.0.1:${upPort}/mcp"}}]}
`);
  // interleave to share the machine's noise
  const direct = [], via = [];
  for (let round = 0; round < 3; round++) {
    direct.push(await measure(`http://127.0.0.1:${upPort}/mcp`));
    via.push(await measure(`http://127.0.0.1:${port}/mcp`));
  }
  const best = (a, k) => Math.min(...a.map((x) => x[k]));
  const d50 = best(direct, "p50"), g50 = best(via, "p50");
  console.log(`mcp tools/call direct:   p50 ${d50.toFixed(3)} ms  p99 ${best(direct, "p99").toFixed(3)} ms`);
  console.log(`mcp tools/call lunagate: p50 ${g50.toFixed(3)} ms  p99 ${best(via, "p99").toFixed(3)} ms`);
  console.log(`mcp added p50: ${(g50 - d50).toFixed(3)} ms (target <= 0.5 ms)`);
} finally {
  await gw?.stop();
  srv.kill();
}
