// 20-llm.test.mjs -- LLM backends end to end with the real `openai` SDK: the local mock
// provider, an OpenAI provider pointed at a fake server, auth placement, errors, access log,
// token metrics and many concurrent streams.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import fs from "node:fs";
import path from "node:path";
import { startGateway, freePort, request, eventually, runBin, ROOT } from "../helpers/gateway.mjs";
import { startFakeProvider, FAKE_TEXT, DEFAULT_USAGE } from "../helpers/fake-provider.mjs";

const SECRET = "sk-test-SECRET-7f3a9c21e0";
const CLIENT_KEY = "client-key-should-be-replaced";
const TOKEN_DELAY_MS = 20;

// Mock provider usage rules (plugins/providers/mock.lua): input = ceil(prompt chars / 4), min 1;
// output = whitespace-led words of the reply 'Mock reply to: "<first 12 words>"'.
function mockExpect(prompt) {
  const text = `Mock reply to: "${prompt.split(/\s+/).filter(Boolean).slice(0, 12).join(" ")}"`;
  const input = Math.max(1, Math.ceil([...prompt].length / 4));
  const output = (text.match(/\s*\S+/g) || []).length;
  return { text, input, output };
}

// parseMetrics(text) -> [{name, labels: {k: v}, value}]
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function pick(samples, name, want) {
  return samples.filter((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v));
}

// logLines(gw, re) -> access log lines (stdout) matching re, as {raw, fields}
function logLines(gw, re) {
  return gw.stdout().split("\n").filter((l) => l.includes("\trequest") && re.test(l)).map((raw) => {
    const fields = {};
    for (const m of raw.matchAll(/(?:^|\s)([a-z_.]+)=("(?:[^"\\]|\\.)*"|\S+)/g)) fields[m[1]] = m[2];
    return { raw, fields };
  });
}

async function collect(stream) {
  let text = "", usage = null, chunks = 0, finish = null, model = null;
  for await (const c of stream) {
    chunks++;
    model = c.model;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices || []) {
      if (ch.delta && ch.delta.content) text += ch.delta.content;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  return { text, usage, chunks, finish, model };
}

describe("LLM backends with the openai SDK", () => {
  let fake, gw, ports, deadPort;
  const client = (port, extra = {}) =>
    new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 15000, ...extra });

  before(async () => {
    fake = await startFakeProvider();
    ports = { mock: await freePort(), slow: await freePort(), openai: await freePort(),
              override: await freePort(), dead: await freePort() };
    deadPort = await freePort();
    gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 2}
binds:
- port: ${ports.mock}
  listeners:
  - routes:
    - backends:
      - ai: {name: mock, provider: {mock: {}}}
- port: ${ports.slow}
  listeners:
  - routes:
    - backends:
      - ai: {name: slowmock, provider: {mock: {tokenDelay: "${TOKEN_DELAY_MS}ms"}}}
- port: ${ports.openai}
  listeners:
  - routes:
    - backends:
      - ai:
          name: openai
          provider: {openAI: {}}
          hostOverride: "127.0.0.1:${fake.port}"
          policies: {backendAuth: {key: "${SECRET}"}}
- port: ${ports.override}
  listeners:
  - routes:
    - backends:
      - ai:
          name: openai-override
          provider: {openAI: {model: gpt-override}}
          hostOverride: "127.0.0.1:${fake.port}"
          pathPrefix: /custom/v9
          policies: {backendAuth: {key: "${SECRET}"}}
- port: ${ports.dead}
  listeners:
  - routes:
    - backends:
      - ai:
          name: dead
          provider: {openAI: {}}
          hostOverride: "127.0.0.1:${deadPort}"
          policies: {backendAuth: {key: "${SECRET}"}}
`);
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  describe("mock provider", () => {
    test("non-streaming chat completion: content and usage", async () => {
      const prompt = "What is the capital of France?";
      const want = mockExpect(prompt);
      const r = await client(ports.mock).chat.completions.create({
        model: "gpt-4o-mini", messages: [{ role: "user", content: prompt }],
      });
      assert.equal(r.object, "chat.completion");
      assert.equal(r.model, "gpt-4o-mini");
      assert.equal(r.choices[0].message.content, want.text);
      assert.equal(r.choices[0].finish_reason, "stop");
      assert.deepEqual(r.usage, { prompt_tokens: want.input, completion_tokens: want.output,
                                  total_tokens: want.input + want.output });
    });

    test("streaming chat completion: deltas, finish reason, usage chunk", async () => {
      const prompt = "Stream me a short answer please";
      const want = mockExpect(prompt);
      const s = await client(ports.mock).chat.completions.create({
        model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: prompt }],
      });
      const got = await collect(s);
      assert.equal(got.text, want.text);
      assert.equal(got.finish, "stop");
      assert.deepEqual(got.usage, { prompt_tokens: want.input, completion_tokens: want.output,
                                    total_tokens: want.input + want.output });
    });

    test("raw SSE ends with data: [DONE]", async () => {
      const r = await request({ port: ports.mock, method: "POST", path: "/v1/chat/completions",
                                headers: { "content-type": "application/json" } },
      JSON.stringify({ model: "m", stream: true, messages: [{ role: "user", content: "hi" }] }));
      assert.equal(r.status, 200);
      assert.match(r.headers["content-type"], /text\/event-stream/);
      assert.match(r.body, /data: \[DONE\]\s*$/);
    });

    test("invalid JSON -> 400 OpenAI error object", async () => {
      const r = await request({ port: ports.mock, method: "POST", path: "/v1/chat/completions",
                                headers: { "content-type": "application/json" } }, "{not json");
      assert.equal(r.status, 400);
      const b = JSON.parse(r.body);
      assert.equal(typeof b.error, "object");
      assert.equal(b.error.type, "invalid_request_error");
      assert.equal(typeof b.error.message, "string");
    });

    test("missing model -> 400 OpenAI error through the SDK", async () => {
      await assert.rejects(
        client(ports.mock).chat.completions.create({ messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.BadRequestError, `got ${e}`);
          assert.equal(e.status, 400);
          assert.equal(e.type, "invalid_request_error");
          assert.match(e.error.message, /model/);
          return true;
        });
    });

    test("model list and client abort of a delayed mock stream", async () => {
      const list = await client(ports.mock).models.list();
      assert.ok(list.data.length >= 1);
      const ac = new AbortController();
      const s = await client(ports.slow).chat.completions.create({
        model: "gpt-mock-abort", stream: true, messages: [{ role: "user", content: "one two three four five six" }],
      }, { signal: ac.signal });
      try {
        for await (const c of s) { void c; ac.abort(); break; }
      } catch (e) { if (!/abort/i.test(String(e))) throw e; }
      const r = await client(ports.slow).chat.completions.create({
        model: "gpt-mock-after", messages: [{ role: "user", content: "still alive?" }] });
      assert.equal(r.choices[0].message.content, mockExpect("still alive?").text);
    });

    test("50 concurrent streams with a token delay all complete with correct usage", async () => {
      const c = client(ports.slow);
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 50 }, async (_, i) => {
        const prompt = `client number ${i} asks a question ${"x".repeat(i)}`;
        const s = await c.chat.completions.create({
          model: "gpt-conc", stream: true, messages: [{ role: "user", content: prompt }],
        });
        return { want: mockExpect(prompt), got: await collect(s) };
      }));
      const elapsed = Date.now() - started;
      for (const [i, { want, got }] of results.entries()) {
        assert.equal(got.text, want.text, `stream ${i} text`);
        assert.equal(got.finish, "stop", `stream ${i} finish`);
        assert.deepEqual(got.usage, { prompt_tokens: want.input, completion_tokens: want.output,
                                      total_tokens: want.input + want.output }, `stream ${i} usage`);
      }
      // Each reply has >= 6 tokens at 20 ms apiece: streams really were delayed, and ran
      // concurrently (50 sequential streams would take >= 6 s).
      assert.ok(elapsed >= 5 * TOKEN_DELAY_MS, `elapsed ${elapsed}ms`);
      assert.ok(elapsed < 6000, `elapsed ${elapsed}ms: streams did not run concurrently`);
      const wantIn = results.reduce((a, r) => a + r.want.input, 0);
      const wantOut = results.reduce((a, r) => a + r.want.output, 0);
      await eventually(() => assert.equal(logLines(gw, /llm\.request\.model=gpt-conc /).length, 50));
      const m = parseMetrics((await request({ port: Number(gw.stats.split(":")[1]), path: "/metrics" })).body);
      const sel = (type, suffix) => pick(m, "agentgateway_gen_ai_client_token_usage" + suffix,
        { gen_ai_token_type: type, gen_ai_system: "mock", gen_ai_request_model: "gpt-conc", gen_ai_response_model: "gpt-conc" });
      assert.equal(sel("input", "_count")[0]?.value, 50);
      assert.equal(sel("input", "_sum")[0]?.value, wantIn);
      assert.equal(sel("output", "_count")[0]?.value, 50);
      assert.equal(sel("output", "_sum")[0]?.value, wantOut);
    });
  });

  describe("openAI provider against a fake server", () => {
    test("non-streaming: content, usage, auth placement, path", async () => {
      fake.clear();
      const r = await client(ports.openai).chat.completions.create({
        model: "gpt-4o", messages: [{ role: "user", content: "hello" }], temperature: 0.5,
      });
      assert.equal(r.choices[0].message.content, FAKE_TEXT);
      assert.equal(r.model, "gpt-4o-fake");
      assert.deepEqual(r.usage, { prompt_tokens: DEFAULT_USAGE.input, completion_tokens: DEFAULT_USAGE.output,
                                  total_tokens: DEFAULT_USAGE.input + DEFAULT_USAGE.output });
      assert.equal(fake.seen.length, 1);
      const seen = fake.last();
      assert.equal(seen.method, "POST");
      assert.equal(seen.url, "/v1/chat/completions");
      assert.equal(seen.headers.authorization, `Bearer ${SECRET}`);
      assert.equal(seen.headers["x-api-key"], undefined);
      assert.equal(seen.json.model, "gpt-4o");
      assert.equal(seen.json.temperature, 0.5);
      assert.equal(seen.json.stream_options, undefined, "no stream_options on a non-streaming request");
      assert.doesNotMatch(seen.headers["accept-encoding"] || "", /gzip/, "gateway must read upstream bodies uncompressed");
    });

    test("streaming without stream_options: include_usage injected, usage reaches the client", async () => {
      fake.clear();
      const s = await client(ports.openai).chat.completions.create({
        model: "gpt-4o", stream: true, messages: [{ role: "user", content: "hello" }],
      });
      const got = await collect(s);
      assert.equal(got.text, FAKE_TEXT);
      assert.equal(got.finish, "stop");
      assert.deepEqual(fake.last().json.stream_options, { include_usage: true });
      assert.equal(fake.last().json.stream, true);
      assert.deepEqual(got.usage, { prompt_tokens: DEFAULT_USAGE.input, completion_tokens: DEFAULT_USAGE.output,
                                    total_tokens: DEFAULT_USAGE.input + DEFAULT_USAGE.output });
    });

    test("streaming with the client's own stream_options: left as sent", async () => {
      fake.clear();
      const s = await client(ports.openai).chat.completions.create({
        model: "gpt-4o", stream: true, stream_options: { include_usage: true },
        messages: [{ role: "user", content: "hello" }],
      });
      const got = await collect(s);
      assert.equal(got.text, FAKE_TEXT);
      assert.deepEqual(fake.last().json.stream_options, { include_usage: true });
      assert.equal(got.usage.completion_tokens, DEFAULT_USAGE.output);
    });

    test("SSE events split across reads: content and usage still right", async () => {
      fake.clear();
      const s = await client(ports.openai).chat.completions.create({
        model: "gpt-split", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-split": "1", "x-fake-usage": "70,5" } });
      const got = await collect(s);
      assert.equal(got.text, FAKE_TEXT);
      assert.equal(got.usage.prompt_tokens, 70);
      await eventually(() => {
        const l = logLines(gw, /llm\.request\.model=gpt-split /);
        assert.equal(l.length, 1);
        assert.equal(l[0].fields["llm.request.tokens"], "70");
        assert.equal(l[0].fields["llm.response.tokens"], "5");
      });
    });

    test("multi-byte UTF-8 split across reads passes through intact", async () => {
      const t = "Prix: 5€ — naïve ✓ café";
      const s = await client(ports.openai).chat.completions.create({
        model: "gpt-utf8", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-split": "1", "x-fake-text": encodeURIComponent(t) } });
      const got = await collect(s);
      assert.equal(got.text, t);
      assert.equal(got.usage.completion_tokens, DEFAULT_USAGE.output);
    });

    test("streaming is incremental: the first chunk arrives long before the last", async () => {
      const s = await client(ports.openai).chat.completions.create({
        model: "gpt-slow", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-delay": "150" } });
      const t0 = Date.now();
      let first = null, text = "";
      for await (const c of s) {
        const d = c.choices[0]?.delta?.content;
        if (d) { text += d; if (first === null) first = Date.now() - t0; }
      }
      const total = Date.now() - t0;
      assert.equal(text, FAKE_TEXT);
      // 5 words + role, stop, usage, [DONE] chunks at 150 ms: ~1.3 s in all
      assert.ok(total >= 900, `total ${total}ms`);
      assert.ok(first !== null && first < total - 500, `first content after ${first}ms of ${total}ms: buffered?`);
    });

    test("client abort mid-stream: upstream cancelled, gateway keeps serving, request logged", async () => {
      fake.clear();
      const ac = new AbortController();
      const s = await client(ports.openai).chat.completions.create({
        model: "gpt-abort", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-delay": "200" }, signal: ac.signal });
      let n = 0;
      try {
        for await (const c of s) { void c; if (++n === 2) { ac.abort(); break; } }
      } catch (e) { if (!/abort/i.test(String(e))) throw e; }
      assert.equal(n, 2);
      await eventually(() => assert.equal(fake.last().aborted, true, "upstream stream not cancelled"), 3000);
      await eventually(() => assert.equal(logLines(gw, /llm\.request\.model=gpt-abort /).length, 1), 3000);
      const r = await client(ports.openai).chat.completions.create({
        model: "gpt-after-abort", messages: [{ role: "user", content: "hello" }] });
      assert.equal(r.choices[0].message.content, FAKE_TEXT);
    });

    test("large non-streaming bodies: 2 MiB parsed for usage, 9 MiB (over the parse cap) still delivered", async () => {
      const c = client(ports.openai);
      const big = await c.chat.completions.create({ model: "gpt-big", messages: [{ role: "user", content: "x" }] },
        { headers: { "x-fake-text": "abcdefghi", "x-fake-repeat": "200000", "x-fake-usage": "11,200000" } });
      assert.equal(big.choices[0].message.content.length, 200000 * 10 - 1);
      await eventually(() => {
        const l = logLines(gw, /llm\.request\.model=gpt-big /);
        assert.equal(l.length, 1);
        assert.equal(l[0].fields["llm.response.tokens"], "200000");
      });
      const huge = await c.chat.completions.create({ model: "gpt-huge", messages: [{ role: "user", content: "x" }] },
        { headers: { "x-fake-text": "abcdefghi", "x-fake-repeat": String(900 * 1024), "x-fake-usage": "11,7" } });
      assert.equal(huge.choices[0].message.content.length, 900 * 1024 * 10 - 1);
      assert.equal(huge.usage.completion_tokens, 7);
    });

    test("model override and pathPrefix", async () => {
      fake.clear();
      const r = await client(ports.override).chat.completions.create({
        model: "client-model", messages: [{ role: "user", content: "hello" }],
      });
      assert.equal(r.choices[0].message.content, FAKE_TEXT);
      const seen = fake.last();
      assert.equal(seen.json.model, "gpt-override");
      assert.equal(seen.url, "/custom/v9/chat/completions");
      assert.equal(seen.headers.authorization, `Bearer ${SECRET}`);
    });

    test("Responses API, non-streaming and streaming usage", async () => {
      fake.clear();
      const c = client(ports.openai);
      const r = await c.responses.create({ model: "gpt-resp", input: "hello" });
      assert.equal(r.output_text, FAKE_TEXT);
      assert.equal(r.usage.input_tokens, DEFAULT_USAGE.input);
      assert.equal(fake.last().url, "/v1/responses");
      assert.equal(fake.last().headers.authorization, `Bearer ${SECRET}`);
      const s = await c.responses.create({ model: "gpt-resp-stream", input: "hello", stream: true },
        { headers: { "x-fake-usage": "40,7" } });
      let text = "", completed = null;
      for await (const ev of s) {
        if (ev.type === "response.output_text.delta") text += ev.delta;
        if (ev.type === "response.completed") completed = ev.response;
      }
      assert.equal(text, FAKE_TEXT);
      assert.equal(completed.usage.input_tokens, 40);
      assert.equal(completed.usage.output_tokens, 7);
      await eventually(() => {
        const l = logLines(gw, /llm\.request\.model=gpt-resp-stream /);
        assert.equal(l.length, 1);
        assert.equal(l[0].fields["llm.request.tokens"], "40");
        assert.equal(l[0].fields["llm.response.tokens"], "7");
        assert.equal(l[0].fields["llm.provider"], "openai");
      });
    });

    test("embeddings", async () => {
      fake.clear();
      const r = await client(ports.openai).embeddings.create({ model: "emb-model", input: ["a", "b"] },
        { headers: { "x-fake-usage": "12,0" } });
      assert.equal(r.data.length, 2);
      assert.deepEqual(r.data[0].embedding, [0.5, 0.25, 0.125]);
      assert.equal(r.usage.prompt_tokens, 12);
      assert.equal(fake.last().url, "/v1/embeddings");
      assert.equal(fake.last().headers.authorization, `Bearer ${SECRET}`);
      await eventually(() => {
        const l = logLines(gw, /llm\.request\.model=emb-model /);
        assert.equal(l.length, 1);
        assert.equal(l[0].fields["llm.request.tokens"], "12");
      });
    });

    test("invalid JSON and missing model -> 400 OpenAI shape, nothing sent upstream", async () => {
      fake.clear();
      const r = await request({ port: ports.openai, method: "POST", path: "/v1/chat/completions",
                                headers: { "content-type": "application/json" } }, "{\"model\": ");
      assert.equal(r.status, 400);
      assert.equal(JSON.parse(r.body).error.type, "invalid_request_error");
      const r2 = await request({ port: ports.openai, method: "POST", path: "/v1/chat/completions",
                                 headers: { "content-type": "application/json" } },
      JSON.stringify({ messages: [{ role: "user", content: "x" }] }));
      assert.equal(r2.status, 400);
      const b = JSON.parse(r2.body);
      assert.equal(b.error.type, "invalid_request_error");
      assert.match(b.error.message, /model/);
      assert.equal(fake.seen.length, 0);
    });

    test("provider error status and body passed through", async () => {
      await assert.rejects(
        client(ports.openai).chat.completions.create({ model: "error-429", messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.RateLimitError, `got ${e}`);
          assert.equal(e.status, 429);
          assert.equal(e.code, "fake_429");
          assert.equal(e.error.message, "fake provider error 429");
          return true;
        });
      const r = await request({ port: ports.openai, method: "POST", path: "/v1/chat/completions",
                                headers: { "content-type": "application/json" } },
      JSON.stringify({ model: "error-503", messages: [{ role: "user", content: "x" }] }));
      assert.equal(r.status, 503);
      assert.deepEqual(JSON.parse(r.body), { error: { message: "fake provider error 503",
        type: "invalid_request_error", param: null, code: "fake_503" } });
    });

    test("upstream unreachable -> 502 in OpenAI shape", async () => {
      await assert.rejects(
        client(ports.dead).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.APIError, `got ${e}`);
          assert.equal(e.status, 502);
          assert.equal(typeof e.error.message, "string");
          assert.ok(!e.error.message.includes(SECRET));
          return true;
        });
      const r = await request({ port: ports.dead, method: "POST", path: "/v1/chat/completions",
                                headers: { "content-type": "application/json" } },
      JSON.stringify({ model: "gpt-4o", stream: true, messages: [{ role: "user", content: "x" }] }));
      assert.equal(r.status, 502);
      assert.match(r.headers["content-type"], /application\/json/);
      assert.equal(typeof JSON.parse(r.body).error.message, "string");
    });

    test("access log lines and token metrics for a known request sequence", async () => {
      const c = client(ports.openai);
      const msgs = [{ role: "user", content: "count me" }];
      await c.chat.completions.create({ model: "metrics-model", messages: msgs }, { headers: { "x-fake-usage": "300,64" } });
      await c.chat.completions.create({ model: "metrics-model", messages: msgs }, { headers: { "x-fake-usage": "300,64" } });
      await collect(await c.chat.completions.create({ model: "metrics-model", messages: msgs, stream: true },
        { headers: { "x-fake-usage": "5,65" } }));

      const lines = await eventually(() => {
        const l = logLines(gw, /llm\.request\.model=metrics-model /);
        assert.equal(l.length, 3);
        return l;
      });
      const want = [["300", "64"], ["300", "64"], ["5", "65"]];
      for (const [i, l] of lines.entries()) {
        assert.equal(l.fields["llm.provider"], "openai", l.raw);
        assert.equal(l.fields["llm.request.model"], "metrics-model", l.raw);
        assert.equal(l.fields["llm.response.model"], "metrics-model-fake", l.raw);
        assert.equal(l.fields["llm.request.tokens"], want[i][0], l.raw);
        assert.equal(l.fields["llm.response.tokens"], want[i][1], l.raw);
        assert.equal(l.fields["http.status"], "200", l.raw);
        assert.equal(l.fields["http.path"], "/v1/chat/completions", l.raw);
        // the LLM keys in agentgateway's order, right before duration
        assert.match(l.raw, new RegExp(` http\\.status=200 llm\\.provider=openai llm\\.request\\.model=metrics-model ` +
          `llm\\.request\\.tokens=${want[i][0]} llm\\.response\\.model=metrics-model-fake ` +
          `llm\\.response\\.tokens=${want[i][1]} duration=\\d+ms$`), l.raw);
      }

      const r = await request({ host: "127.0.0.1", port: Number(gw.stats.split(":")[1]), path: "/metrics" });
      assert.equal(r.status, 200);
      const samples = parseMetrics(r.body);
      const base = { gen_ai_operation_name: "chat", gen_ai_system: "openai", gen_ai_request_model: "metrics-model",
                     gen_ai_response_model: "metrics-model-fake", bind: `bind/${ports.openai}` };
      const H = "agentgateway_gen_ai_client_token_usage";
      const one = (suffix, extra) => {
        const s = pick(samples, H + suffix, { ...base, ...extra });
        assert.equal(s.length, 1, `${suffix} ${JSON.stringify(extra)}: ${s.length} series`);
        return s[0].value;
      };
      assert.equal(one("_sum", { gen_ai_token_type: "input" }), 605);
      assert.equal(one("_count", { gen_ai_token_type: "input" }), 3);
      assert.equal(one("_sum", { gen_ai_token_type: "output" }), 193);
      assert.equal(one("_count", { gen_ai_token_type: "output" }), 3);
      // cumulative buckets: input 5, 300, 300; output 64 (le is inclusive), 64, 65
      const input = { 1: 0, 4: 0, 16: 1, 64: 1, 256: 1, 1024: 3, "+Inf": 3 };
      for (const [le, v] of Object.entries(input)) {
        assert.equal(one("_bucket", { gen_ai_token_type: "input", le: String(le) }), v, `input le=${le}`);
      }
      const output = { 16: 0, 64: 2, 256: 3, "+Inf": 3 };
      for (const [le, v] of Object.entries(output)) {
        assert.equal(one("_bucket", { gen_ai_token_type: "output", le: String(le) }), v, `output le=${le}`);
      }
    });

    test("keys never appear in the logs", async () => {
      assert.ok(fake.seen.length > 0);
      assert.ok(!gw.logs().includes(SECRET), "backend key leaked into the logs");
      assert.ok(!gw.logs().includes(CLIENT_KEY), "client key leaked into the logs");
      const dump = await request({ port: Number(gw.admin.split(":")[1]), path: "/config_dump" });
      assert.equal(dump.status, 200);
      assert.ok(!dump.body.includes(SECRET), "backend key in /config_dump");
      for (const s of fake.seen) {
        assert.ok(!JSON.stringify(s.headers).includes(CLIENT_KEY), "client key forwarded upstream");
      }
    });
  });

  test("gateway stops cleanly: exit 0, no sanitizer or Lua error reports", async () => {
    const r = await gw.stop();
    assert.equal(r.code, 0, gw.stderr());
    assert.doesNotMatch(gw.stderr(), /AddressSanitizer|LeakSanitizer|runtime error:|stack traceback/, gw.stderr());
  });
});

// The C core serves plain OpenAI chat completions itself (src/llmnative.c); the same backend
// behind `policies.ai.routes` goes through the Lua provider plugin. Both must send the same
// upstream request and produce the same log fields and GenAI metrics.
describe("chat completions: the C path and the Lua path agree", () => {
  let fake, gw, ports;
  before(async () => {
    fake = await startFakeProvider();
    ports = { c: await freePort(), lua: await freePort() };
    const backend = (name, extra = "") => `
      - ai:
          name: ${name}
          provider: {openAI: {}}
          hostOverride: "127.0.0.1:${fake.port}"
          policies: {backendAuth: {key: "${SECRET}"}${extra}}`;
    gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 1}
binds:
- port: ${ports.c}
  listeners:
  - routes:
    - name: viac
      backends:${backend("same")}
- port: ${ports.lua}
  listeners:
  - routes:
    - name: vialua
      backends:${backend("same", ', ai: {routes: {"/v1/chat/completions": completions}}')}
`);
  });
  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  const cases = [
    { name: "non-streaming", body: { model: "par-a", messages: [{ role: "user", content: "hi" }], temperature: 0.1 },
      headers: { "x-fake-usage": "300,64" } },
    { name: "streaming without stream_options",
      body: { model: "par-b", stream: true, messages: [{ role: "user", content: "hi" }] },
      headers: { "x-fake-usage": "12,9", "x-fake-split": "1" } },
    { name: "streaming with stream_options",
      body: { stream_options: { include_usage: true }, model: "par-c", stream: true, messages: [] },
      headers: { "x-fake-usage": "7,3" } },
    { name: "empty object patched", raw: '{"stream":true,"model":"par-d"}', headers: {} },
    { name: "escaped model", raw: '{"model":"par-\\u00e9\\"x","messages":[]}', headers: {} },
    { name: "provider error", body: { model: "error-429", messages: [] }, headers: {} },
  ];
  for (const k of cases) {
    test(k.name, async () => {
      const got = {};
      const count = (via) => logLines(gw, new RegExp(`route=\\S*via${via} `)).length;
      const before = { c: count("c"), lua: count("lua") };
      for (const via of ["c", "lua"]) {
        fake.clear();
        const r = await request({ port: ports[via], method: "POST", path: "/v1/chat/completions",
          headers: { "content-type": "application/json", authorization: `Bearer ${CLIENT_KEY}`, ...k.headers } },
        k.raw || JSON.stringify(k.body));
        const up = fake.last();
        const h = { ...up.headers };
        delete h["content-length"];
        got[via] = { status: r.status, body: r.body.replace(/"created":\d+/g, ""), upBody: up.body,
                     upUrl: up.url, upHeaders: h };
      }
      assert.deepEqual(got.c, got.lua);
      const line = (via) => eventually(() => {
        const l = logLines(gw, new RegExp(`route=\\S*via${via} `));
        assert.equal(l.length, before[via] + 1, `one new log line via ${via}`);
        return l[l.length - 1];
      });
      const llm = (l) => Object.fromEntries(Object.entries(l.fields).filter(([key]) => key.startsWith("llm.")));
      const lc = await line("c"), ll = await line("lua");
      assert.ok(Object.keys(llm(lc)).length >= 2, lc.raw);
      assert.deepEqual(llm(lc), llm(ll), `${lc.raw}\n${ll.raw}`);
    });
  }

  test("GenAI metrics match series by series", async () => {
    const r = await request({ host: "127.0.0.1", port: Number(gw.stats.split(":")[1]), path: "/metrics" });
    const all = parseMetrics(r.body);
    // every request of the C route took the C path, every one of the Lua route the Lua path
    const parsed = (p) => pick(all, "agentgateway_llm_requests_total", { parser: p }).map((s) => s.value);
    assert.deepEqual(parsed("c"), [cases.length]);
    assert.deepEqual(parsed("lua"), [cases.length]);
    const samples = all.filter((s) => s.name.startsWith("agentgateway_gen_ai_"));
    const key = (s, route) => s.name + JSON.stringify({ ...s.labels, route: undefined, bind: undefined, _r: route });
    const by = { c: new Map(), lua: new Map() };
    for (const s of samples) {
      const via = /viac/.test(s.labels.route || "") ? "c" : /vialua/.test(s.labels.route || "") ? "lua" : null;
      if (!via) continue;
      // durations differ run to run: compare their counts only
      if (/duration|time_to_first|time_per_output/.test(s.name) && !s.name.endsWith("_count")) continue;
      by[via].set(key(s), s.value);
    }
    assert.ok(by.c.size > 10, `series via C: ${by.c.size}`);
    for (const fam of ["gen_ai_client_token_usage_count", "gen_ai_server_request_duration_count",
      "gen_ai_server_time_to_first_token_count", "gen_ai_server_time_per_output_token_count"]) {
      assert.ok([...by.c.keys()].some((k) => k.startsWith(`agentgateway_${fam}{`)), `no ${fam} via C`);
    }
    assert.deepEqual([...by.c.entries()].sort(), [...by.lua.entries()].sort());
  });

  test("gateway stops cleanly: exit 0, no sanitizer or Lua error reports", async () => {
    const g = gw;
    gw = null;
    const r = await g.stop();
    assert.equal(r.code, 0, g.stderr());
    assert.doesNotMatch(g.stderr(), /AddressSanitizer|LeakSanitizer|runtime error:|stack traceback/, g.stderr());
  });
});

describe("config/examples/llm-*.yaml", () => {
  const dir = path.join(ROOT, "config/examples");
  const files = fs.readdirSync(dir).filter((f) => /^llm-.*\.yaml$/.test(f));
  const env = { OPENAI_API_KEY: "sk-dummy-openai", ANTHROPIC_API_KEY: "sk-ant-dummy" };

  test("the four examples exist", () => {
    for (const f of ["llm-mock.yaml", "llm-openai.yaml", "llm-anthropic.yaml", "llm-openai-to-anthropic.yaml"]) {
      assert.ok(files.includes(f), `missing ${f}`);
    }
  });

  for (const f of files) {
    test(`${f} passes --validate-only`, async () => {
      const r = await runBin(["-f", path.join(dir, f), "--validate-only"], undefined, env);
      assert.equal(r.code, 0, r.stdout + r.stderr);
    });
  }

  test("llm-mock.yaml serves a chat completion and counts its tokens", async () => {
    const port = await freePort();
    const text = fs.readFileSync(path.join(dir, "llm-mock.yaml"), "utf8")
      .replace(/adminAddr: \S+/, 'adminAddr: "{{ADMIN}}"').replace(/readinessAddr: \S+/, 'readinessAddr: "{{READY}}"')
      .replace(/statsAddr: \S+/, 'statsAddr: "{{STATS}}"').replace(/port: 3000/, `port: ${port}`);
    const gw = await startGateway(text);
    try {
      const c = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "x", maxRetries: 0, timeout: 15000 });
      const want = mockExpect("Hello!");
      const r = await c.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "Hello!" }] });
      assert.equal(r.choices[0].message.content, want.text);
      assert.equal(r.usage.completion_tokens, want.output);
      // the worker records the request after its last byte is on the way: a scrape may come first
      await eventually(async () => {
        const m = await request({ port: Number(gw.stats.split(":")[1]), path: "/metrics" });
        const s = pick(parseMetrics(m.body), "agentgateway_gen_ai_client_token_usage_sum",
          { gen_ai_token_type: "output", gen_ai_system: "mock", gen_ai_request_model: "gpt-4o-mini" });
        assert.equal(s.length, 1);
        assert.equal(s[0].value, want.output);
      });
    } finally {
      await gw.stop();
    }
  });
});
