// sse_streams.mjs -- many concurrent SSE streams through an LLM route: how much delay the
// gateway adds to each event's arrival, and its RSS. Issue target: 1,000 streams x 200 events,
// <= 5 ms added p99, RSS < 200 MB.
//   node spec/bench/sse_streams.mjs [streams] [events] [interval_ms]
// The upstream (a local OpenAI-style SSE server) stamps each event with its send time; the
// client computes arrival - send for the same events directly and through lunagate.
import http from "node:http";
import fs from "node:fs";
import { startGateway, freePort, sleep } from "../helpers/gateway.mjs";

const STREAMS = Number(process.argv[2] || 1000);
const EVENTS = Number(process.argv[3] || 200);
const INTERVAL = Number(process.argv[4] || 50);

const now = () => Number(process.hrtime.bigint() / 1000n); // µs, same clock on both sides

const upstream = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/event-stream" });
    let i = 0;
    const t = setInterval(() => {
      const chunk = { id: "c", object: "chat.completion.chunk", model: "m",
        choices: [{ index: 0, delta: { content: ` w${i}` }, finish_reason: null }], t: now() };
      res.write(`data: ${JSON.stringify(chunk)}\n\n`);
      if (++i === EVENTS) {
        clearInterval(t);
        res.write(`data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", model: "m", choices: [],
          usage: { prompt_tokens: 5, completion_tokens: EVENTS, total_tokens: EVENTS + 5 }, t: now() })}\n\n`);
        res.end("data: [DONE]\n\n");
      }
    }, INTERVAL);
    res.on("close", () => clearInterval(t));
  });
});

function stream(port, path, delays) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, method: "POST", agent: false,
      headers: { "content-type": "application/json" } }, (res) => {
      let buf = "";
      res.setEncoding("utf8");
      res.on("data", (d) => {
        const at = now();
        buf += d;
        let k;
        while ((k = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, k);
          buf = buf.slice(k + 2);
          const m = ev.match(/"t":(\d+)/);
          if (m) delays.push(at - Number(m[1]));
        }
      });
      res.on("end", resolve);
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(JSON.stringify({ model: "m", stream: true, messages: [{ role: "user", content: "hi" }] }));
  });
}

async function run(port, path) {
  const delays = [];
  const agentsDone = [];
  for (let i = 0; i < STREAMS; i++) {
    agentsDone.push(stream(port, path, delays));
    if (i % 100 === 99) await sleep(20); // ramp up
  }
  await Promise.all(agentsDone);
  delays.sort((a, b) => a - b);
  return { n: delays.length, p50: delays[Math.floor(delays.length * 0.5)] / 1000,
    p99: delays[Math.floor(delays.length * 0.99)] / 1000 };
}

await new Promise((r) => upstream.listen(0, "127.0.0.1", r));
const upPort = upstream.address().port;
const port = await freePort();
const gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1,
         logging: {level: warn}}
binds:
- port: ${port}
  listeners:
  - routes:
    - backends: [{ai: {name: openai, provider: {openAI: {}}, hostOverride: "127.0.0.1:${upPort}"}}]
      policies: {backendAuth: {key: bench}}
`);
const rss = () => Number((fs.readFileSync(`/proc/${gw.proc.pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/) || [])[1]) / 1024;
let peak = rss();
const sampler = setInterval(() => { peak = Math.max(peak, rss()); }, 200);
try {
  const direct = await run(upPort, "/v1/chat/completions");
  const via = await run(port, "/v1/chat/completions");
  console.log(`sse ${STREAMS} streams x ${EVENTS} events, ${INTERVAL} ms apart`);
  console.log(`  direct:   ${direct.n} events, arrival delay p50 ${direct.p50.toFixed(2)} ms, p99 ${direct.p99.toFixed(2)} ms`);
  console.log(`  lunagate: ${via.n} events, arrival delay p50 ${via.p50.toFixed(2)} ms, p99 ${via.p99.toFixed(2)} ms`);
  console.log(`  added p99: ${(via.p99 - direct.p99).toFixed(2)} ms (target <= 5 ms); gateway peak RSS ${peak.toFixed(1)} MB (target < 200 MB)`);
} finally {
  clearInterval(sampler);
  await gw.stop();
  upstream.close();
}
