// 21-llm-anthropic.test.mjs -- Anthropic backends end to end: the real @anthropic-ai/sdk client
// against an `anthropic` provider (fake server) and the mock provider, and the real `openai`
// client translated to an Anthropic backend (request, response, SSE events, usage, errors).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { startGateway, freePort, request, eventually } from "../helpers/gateway.mjs";
import { startFakeProvider, FAKE_TEXT, DEFAULT_USAGE, TOOL_INPUT } from "../helpers/fake-provider.mjs";

const SECRET = "sk-ant-api03-SECRET-4b1d0e99";
const UTF8_TEXT = "Prix: 5€ — naïve ✓ café";
const CLIENT_KEY = "client-anthropic-key-replace-me";

function logLines(gw, re) {
  return gw.stdout().split("\n").filter((l) => l.includes("\trequest") && re.test(l)).map((raw) => {
    const fields = {};
    for (const m of raw.matchAll(/(?:^|\s)([a-z_.]+)=("(?:[^"\\]|\\.)*"|\S+)/g)) fields[m[1]] = m[2];
    return { raw, fields };
  });
}

const post = (port, path, body, headers = {}) =>
  request({ port, method: "POST", path, headers: { "content-type": "application/json", ...headers } },
    typeof body === "string" ? body : JSON.stringify(body));

describe("Anthropic backends", () => {
  let fake, gw, ports, deadPort;
  const anthropic = (port) =>
    new Anthropic({ baseURL: `http://127.0.0.1:${port}`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 15000 });
  const openai = (port) =>
    new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: CLIENT_KEY, maxRetries: 0, timeout: 15000 });

  before(async () => {
    fake = await startFakeProvider();
    ports = { anth: await freePort(), mock: await freePort(), dead: await freePort() };
    deadPort = await freePort();
    gw = await startGateway(`
config: {adminAddr: "{{ADMIN}}", readinessAddr: "{{READY}}", statsAddr: "{{STATS}}", workerThreads: 2}
binds:
- port: ${ports.anth}
  listeners:
  - routes:
    - backends:
      - ai:
          name: claude
          provider: {anthropic: {}}
          hostOverride: "127.0.0.1:${fake.port}"
          policies: {backendAuth: {key: "${SECRET}"}}
- port: ${ports.mock}
  listeners:
  - routes:
    - backends:
      - ai: {name: mock, provider: {mock: {text: "fixed mock reply here"}}}
- port: ${ports.dead}
  listeners:
  - routes:
    - backends:
      - ai:
          name: dead
          provider: {anthropic: {}}
          hostOverride: "127.0.0.1:${deadPort}"
          policies: {backendAuth: {key: "${SECRET}"}}
`);
  });

  after(async () => {
    if (gw) await gw.stop();
    if (fake) await fake.close();
  });

  describe("@anthropic-ai/sdk against an anthropic provider", () => {
    test("non-streaming: content, usage, x-api-key + anthropic-version, client key replaced", async () => {
      fake.clear();
      const m = await anthropic(ports.anth).messages.create({
        model: "claude-x", max_tokens: 100, messages: [{ role: "user", content: "hello" }],
      });
      assert.equal(m.type, "message");
      assert.equal(m.model, "claude-x-fake");
      assert.deepEqual(m.content, [{ type: "text", text: FAKE_TEXT }]);
      assert.equal(m.stop_reason, "end_turn");
      assert.equal(m.usage.input_tokens, DEFAULT_USAGE.input);
      assert.equal(m.usage.output_tokens, DEFAULT_USAGE.output);
      assert.equal(fake.seen.length, 1);
      const seen = fake.last();
      assert.equal(seen.url, "/v1/messages");
      assert.equal(seen.headers["x-api-key"], SECRET);
      // the SDK sends its own anthropic-version; the gateway keeps it
      assert.match(seen.headers["anthropic-version"], /^\d{4}-\d{2}-\d{2}$/);
      assert.equal(seen.headers.authorization, undefined);
      assert.equal(seen.json.model, "claude-x");
      assert.equal(seen.json.max_tokens, 100);
    });

    test("anthropic-version added when the client sent none", async () => {
      fake.clear();
      const r = await post(ports.anth, "/v1/messages",
        { model: "claude-raw", max_tokens: 10, messages: [{ role: "user", content: "hi" }] },
        { authorization: `Bearer ${CLIENT_KEY}` });
      assert.equal(r.status, 200);
      assert.equal(fake.last().headers["anthropic-version"], "2023-06-01");
      assert.equal(fake.last().headers["x-api-key"], SECRET);
      assert.equal(fake.last().headers.authorization, undefined);
      const r2 = await post(ports.anth, "/v1/messages",
        { model: "claude-raw", max_tokens: 10, messages: [{ role: "user", content: "hi" }] },
        { "x-api-key": CLIENT_KEY, "anthropic-version": "2024-01-01" });
      assert.equal(r2.status, 200);
      assert.equal(fake.last().headers["anthropic-version"], "2024-01-01");
      assert.equal(fake.last().headers["x-api-key"], SECRET);
    });

    test("streaming: text deltas and usage from message_start / message_delta", async () => {
      fake.clear();
      const stream = anthropic(ports.anth).messages.stream({
        model: "claude-stream", max_tokens: 100, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-usage": "33,9", "x-fake-split": "1" } });
      let text = "";
      stream.on("text", (t) => (text += t));
      const final = await stream.finalMessage();
      assert.equal(text, FAKE_TEXT);
      assert.equal(final.usage.input_tokens, 33);
      assert.equal(final.usage.output_tokens, 9);
      assert.equal(final.stop_reason, "end_turn");
      assert.equal(fake.last().json.stream, true);
      assert.equal(fake.last().headers["x-api-key"], SECRET);
      await eventually(() => {
        const l = logLines(gw, /llm\.request\.model=claude-stream /);
        assert.equal(l.length, 1);
        assert.equal(l[0].fields["llm.provider"], "anthropic");
        assert.equal(l[0].fields["llm.response.model"], "claude-stream-fake");
        assert.equal(l[0].fields["llm.request.tokens"], "33");
        assert.equal(l[0].fields["llm.response.tokens"], "9");
      });
    });

    test("streaming: UTF-8 split across reads; mid-stream error event reaches the SDK", async () => {
      const c = anthropic(ports.anth);
      const s = c.messages.stream({ model: "claude-utf8n", max_tokens: 100, messages: [{ role: "user", content: "hi" }] },
        { headers: { "x-fake-split": "1", "x-fake-text": encodeURIComponent(UTF8_TEXT) } });
      let text = "";
      s.on("text", (t) => (text += t));
      await s.finalMessage();
      assert.equal(text, UTF8_TEXT);
      const s2 = await c.messages.create({ model: "claude-midfail-n", max_tokens: 100, stream: true,
                                           messages: [{ role: "user", content: "hi" }] },
      { headers: { "x-fake-stream-error": "1" } });
      await assert.rejects((async () => { for await (const ev of s2) void ev; })(), (e) => {
        assert.ok(e instanceof Anthropic.APIError, `got ${e}`);
        assert.match(e.message, /Overloaded \(fake\)/);
        return true;
      });
    });

    test("invalid JSON / missing model -> 400 in Anthropic shape", async () => {
      fake.clear();
      const r = await post(ports.anth, "/v1/messages", "{oops");
      assert.equal(r.status, 400);
      const b = JSON.parse(r.body);
      assert.equal(b.type, "error");
      assert.equal(b.error.type, "invalid_request_error");
      assert.equal(typeof b.error.message, "string");
      await assert.rejects(
        anthropic(ports.anth).messages.create({ max_tokens: 5, messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.ok(e instanceof Anthropic.BadRequestError, `got ${e}`);
          assert.equal(e.status, 400);
          assert.equal(e.error.type, "error");
          assert.equal(e.error.error.type, "invalid_request_error");
          assert.match(e.error.error.message, /model/);
          return true;
        });
      assert.equal(fake.seen.length, 0);
    });

    test("provider error status and body passed through", async () => {
      await assert.rejects(
        anthropic(ports.anth).messages.create({ model: "error-429", max_tokens: 5,
                                                messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.ok(e instanceof Anthropic.RateLimitError, `got ${e}`);
          assert.equal(e.status, 429);
          assert.deepEqual(e.error, { type: "error",
            error: { type: "rate_limit_error", message: "fake provider error 429" } });
          return true;
        });
      const r = await post(ports.anth, "/v1/messages",
        { model: "error-529", max_tokens: 5, messages: [{ role: "user", content: "x" }] });
      assert.equal(r.status, 529);
      assert.equal(JSON.parse(r.body).error.type, "overloaded_error");
    });

    test("upstream unreachable -> 502 in Anthropic shape", async () => {
      await assert.rejects(
        anthropic(ports.dead).messages.create({ model: "claude-x", max_tokens: 5,
                                                messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.ok(e instanceof Anthropic.APIError, `got ${e}`);
          assert.equal(e.status, 502);
          assert.equal(e.error.type, "error");
          assert.equal(typeof e.error.error.message, "string");
          return true;
        });
    });
  });

  describe("@anthropic-ai/sdk against the mock provider", () => {
    test("non-streaming and streaming", async () => {
      const c = anthropic(ports.mock);
      const prompt = "abcdefghij";                 // 10 chars -> 3 input tokens
      const m = await c.messages.create({ model: "claude-mock", max_tokens: 50,
                                          messages: [{ role: "user", content: prompt }] });
      assert.equal(m.content[0].text, "fixed mock reply here");
      assert.equal(m.usage.input_tokens, 3);
      assert.equal(m.usage.output_tokens, 4);
      const s = c.messages.stream({ model: "claude-mock", max_tokens: 50,
                                    messages: [{ role: "user", content: prompt }] });
      let text = "";
      s.on("text", (t) => (text += t));
      const final = await s.finalMessage();
      assert.equal(text, "fixed mock reply here");
      assert.equal(final.usage.input_tokens, 3);
      assert.equal(final.usage.output_tokens, 4);
    });

    test("invalid JSON / missing model on /v1/messages -> 400 Anthropic shape", async () => {
      for (const body of ["{nope", JSON.stringify({ max_tokens: 5, messages: [{ role: "user", content: "x" }] })]) {
        const r = await post(ports.mock, "/v1/messages", body);
        assert.equal(r.status, 400, body);
        const b = JSON.parse(r.body);
        assert.equal(b.type, "error");
        assert.equal(b.error.type, "invalid_request_error");
        assert.equal(typeof b.error.message, "string");
      }
    });
  });

  describe("openai SDK translated to an anthropic backend", () => {
    test("non-streaming: request and response translated, usage mapped", async () => {
      fake.clear();
      const r = await openai(ports.anth).chat.completions.create({
        model: "claude-tr", max_tokens: 64, temperature: 0.2,
        messages: [{ role: "system", content: "be brief" }, { role: "user", content: "hello" }],
      });
      assert.equal(r.object, "chat.completion");
      assert.equal(r.choices[0].message.role, "assistant");
      assert.equal(r.choices[0].message.content, FAKE_TEXT);
      assert.equal(r.choices[0].finish_reason, "stop");
      assert.equal(r.model, "claude-tr-fake");
      assert.deepEqual(r.usage && { p: r.usage.prompt_tokens, c: r.usage.completion_tokens, t: r.usage.total_tokens },
        { p: DEFAULT_USAGE.input, c: DEFAULT_USAGE.output, t: DEFAULT_USAGE.input + DEFAULT_USAGE.output });
      const seen = fake.last();
      assert.equal(seen.url, "/v1/messages");
      assert.equal(seen.headers["x-api-key"], SECRET);
      assert.equal(seen.headers["anthropic-version"], "2023-06-01");
      assert.equal(seen.headers.authorization, undefined);
      assert.equal(seen.json.model, "claude-tr");
      assert.equal(seen.json.max_tokens, 64);
      assert.equal(seen.json.temperature, 0.2);
      const sys = typeof seen.json.system === "string" ? seen.json.system
        : (seen.json.system || []).map((b) => b.text).join("");
      assert.equal(sys, "be brief");
      assert.deepEqual(seen.json.messages.map((m) => m.role), ["user"]);
    });

    test("max_tokens filled in when the OpenAI client sent none", async () => {
      fake.clear();
      await openai(ports.anth).chat.completions.create({ model: "claude-tr", messages: [{ role: "user", content: "hi" }] });
      assert.equal(typeof fake.last().json.max_tokens, "number");
      assert.ok(fake.last().json.max_tokens > 0);
    });

    test("streaming: events translated to chunks, final usage chunk, [DONE]", async () => {
      fake.clear();
      const s = await openai(ports.anth).chat.completions.create({
        model: "claude-trs", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-usage": "17,6" } });
      let text = "", usage = null, finish = null, model = null;
      for await (const c of s) {
        assert.equal(c.object, "chat.completion.chunk");
        model = c.model;
        if (c.usage) usage = c.usage;
        for (const ch of c.choices || []) {
          if (ch.delta && ch.delta.content) text += ch.delta.content;
          if (ch.finish_reason) finish = ch.finish_reason;
        }
      }
      assert.equal(text, FAKE_TEXT);
      assert.equal(finish, "stop");
      assert.equal(model, "claude-trs-fake");
      assert.ok(usage, "no usage chunk");
      assert.equal(usage.prompt_tokens, 17);
      assert.equal(usage.completion_tokens, 6);
      assert.equal(usage.total_tokens, 23);
      assert.equal(fake.last().url, "/v1/messages");
      assert.equal(fake.last().json.stream, true);
      assert.equal(fake.last().json.stream_options, undefined, "OpenAI-only field sent to Anthropic");
      await eventually(() => {
        const l = logLines(gw, /llm\.request\.model=claude-trs /);
        assert.equal(l.length, 1);
        assert.equal(l[0].fields["llm.provider"], "anthropic");
        assert.equal(l[0].fields["llm.request.tokens"], "17");
        assert.equal(l[0].fields["llm.response.tokens"], "6");
      });
    });

    test("translated streaming with events split across reads, delivered incrementally", async () => {
      const s = await openai(ports.anth).chat.completions.create({
        model: "claude-split", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-split": "1", "x-fake-delay": "120", "x-fake-usage": "300,64" } });
      const t0 = Date.now();
      let text = "", usage = null, first = null;
      for await (const c of s) {
        if (c.usage) usage = c.usage;
        const d = c.choices[0]?.delta?.content;
        if (d) { text += d; if (first === null) first = Date.now() - t0; }
      }
      const total = Date.now() - t0;
      assert.equal(text, FAKE_TEXT);
      assert.equal(usage?.prompt_tokens, 300);
      assert.equal(usage?.completion_tokens, 64);
      assert.ok(first !== null && first < total - 400, `first content after ${first}ms of ${total}ms: buffered?`);
    });

    test("token metrics for the translated path carry anthropic labels", async () => {
      await eventually(() => assert.equal(logLines(gw, /llm\.request\.model=claude-split /).length, 1));
      const r = await request({ port: Number(gw.stats.split(":")[1]), path: "/metrics" });
      const lines = r.body.split("\n").filter((l) => l.startsWith("agentgateway_gen_ai_client_token_usage") &&
        l.includes('gen_ai_request_model="claude-split"'));
      const val = (type, suffix, le) => {
        const l = lines.filter((x) => x.startsWith("agentgateway_gen_ai_client_token_usage" + suffix + "{") &&
          x.includes(`gen_ai_token_type="${type}"`) && (le === undefined || x.includes(`le="${le}"`)));
        assert.equal(l.length, 1, `${type}${suffix} le=${le}: ${l.length} series`);
        assert.ok(l[0].includes('gen_ai_system="anthropic"'), l[0]);
        assert.ok(l[0].includes('gen_ai_response_model="claude-split-fake"'), l[0]);
        assert.ok(l[0].includes(`bind="bind/${ports.anth}"`), l[0]);
        return Number(l[0].split(" ").pop());
      };
      assert.equal(val("input", "_sum"), 300);
      assert.equal(val("input", "_count"), 1);
      assert.equal(val("input", "_bucket", "256"), 0);
      assert.equal(val("input", "_bucket", "1024"), 1);
      assert.equal(val("output", "_sum"), 64);
      assert.equal(val("output", "_bucket", "16"), 0);
      assert.equal(val("output", "_bucket", "64"), 1);
    });

    test("translated streaming keeps multi-byte UTF-8 split across reads intact", async () => {
      const s = await openai(ports.anth).chat.completions.create({
        model: "claude-utf8", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-split": "1", "x-fake-text": encodeURIComponent(UTF8_TEXT) } });
      let text = "";
      for await (const c of s) text += c.choices[0]?.delta?.content || "";
      assert.equal(text, UTF8_TEXT);
      const r = await openai(ports.anth).chat.completions.create({
        model: "claude-utf8", messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-text": encodeURIComponent(UTF8_TEXT) } });
      assert.equal(r.choices[0].message.content, UTF8_TEXT);
    });

    test("mid-stream Anthropic error event -> OpenAI error chunk the SDK raises", async () => {
      const s = await openai(ports.anth).chat.completions.create({
        model: "claude-midfail", stream: true, messages: [{ role: "user", content: "hello" }],
      }, { headers: { "x-fake-stream-error": "1" } });
      let text = "";
      await assert.rejects((async () => {
        for await (const c of s) text += c.choices[0]?.delta?.content || "";
      })(), (e) => {
        assert.ok(e instanceof OpenAI.APIError, `got ${e}`);
        assert.match(String(e.error?.message ?? e.message), /Overloaded \(fake\)/);
        return true;
      });
      assert.equal(text, "Hello from");
      const raw = await post(ports.anth, "/v1/chat/completions",
        { model: "claude-midfail", stream: true, messages: [{ role: "user", content: "hello" }] },
        { "x-fake-stream-error": "1" });
      assert.match(raw.body, /data: \[DONE\]\s*$/);
      assert.ok(!/event: error/.test(raw.body), "Anthropic error event leaked untranslated");
    });

    const TOOLS = [{ type: "function", function: { name: "get_weather", description: "Weather for a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];

    test("tool calls translated both ways (request tools and tool results, response tool_use)", async () => {
      fake.clear();
      const c = openai(ports.anth);
      const r = await c.chat.completions.create({
        model: "claude-tools", tools: TOOLS, messages: [{ role: "user", content: "weather in Paris?" }],
      }, { headers: { "x-fake-tool": "get_weather" } });
      const sent = fake.last().json;
      assert.equal(sent.tools.length, 1);
      assert.equal(sent.tools[0].name, "get_weather");
      assert.deepEqual(sent.tools[0].input_schema, TOOLS[0].function.parameters);
      assert.equal(r.choices[0].finish_reason, "tool_calls");
      const tc = r.choices[0].message.tool_calls;
      assert.equal(tc.length, 1);
      assert.equal(tc[0].id, "toolu_fake1");
      assert.equal(tc[0].type, "function");
      assert.equal(tc[0].function.name, "get_weather");
      assert.deepEqual(JSON.parse(tc[0].function.arguments), TOOL_INPUT);
      // second turn: the tool result goes back as a user tool_result block
      await c.chat.completions.create({
        model: "claude-tools", tools: TOOLS, messages: [
          { role: "user", content: "weather in Paris?" },
          { role: "assistant", content: null, tool_calls: tc },
          { role: "tool", tool_call_id: "toolu_fake1", content: "18C sunny" },
        ] });
      const m = fake.last().json.messages;
      assert.deepEqual(m.map((x) => x.role), ["user", "assistant", "user"]);
      const use = m[1].content.find((b) => b.type === "tool_use");
      assert.equal(use.id, "toolu_fake1");
      assert.deepEqual(use.input, TOOL_INPUT);
      const res = m[2].content.find((b) => b.type === "tool_result");
      assert.equal(res.tool_use_id, "toolu_fake1");
      const resText = typeof res.content === "string" ? res.content : res.content.map((b) => b.text).join("");
      assert.equal(resText, "18C sunny");
    });

    test("streamed tool call: tool_calls deltas reassemble to the arguments", async () => {
      const s = await openai(ports.anth).chat.completions.create({
        model: "claude-tools-s", stream: true, tools: TOOLS, messages: [{ role: "user", content: "weather?" }],
      }, { headers: { "x-fake-tool": "get_weather", "x-fake-usage": "50,20" } });
      let text = "", args = "", name = null, id = null, finish = null, usage = null;
      for await (const ch of s) {
        if (ch.usage) usage = ch.usage;
        const c0 = ch.choices[0];
        if (!c0) continue;
        text += c0.delta?.content || "";
        for (const t of c0.delta?.tool_calls || []) {
          assert.equal(t.index, 0);
          if (t.id) id = t.id;
          if (t.function?.name) name = t.function.name;
          args += t.function?.arguments || "";
        }
        if (c0.finish_reason) finish = c0.finish_reason;
      }
      assert.equal(text, "Let me check.");
      assert.equal(id, "toolu_fake1");
      assert.equal(name, "get_weather");
      assert.deepEqual(JSON.parse(args), TOOL_INPUT);
      assert.equal(finish, "tool_calls");
      assert.equal(usage?.prompt_tokens, 50);
      assert.equal(usage?.completion_tokens, 20);
    });

    test("raw translated SSE: data-only OpenAI chunks ending with [DONE]", async () => {
      const r = await post(ports.anth, "/v1/chat/completions",
        { model: "claude-raw-sse", stream: true, messages: [{ role: "user", content: "hello" }] });
      assert.equal(r.status, 200);
      assert.match(r.headers["content-type"], /text\/event-stream/);
      const events = r.body.split("\n\n").map((e) => e.trim()).filter(Boolean);
      assert.equal(events[events.length - 1], "data: [DONE]");
      for (const e of events) assert.match(e, /^data: /, `not an OpenAI SSE event: ${e}`);
      assert.ok(!/event: message_start|"type":"message_start"/.test(r.body), "Anthropic events leaked");
    });

    test("errors in OpenAI shape: invalid JSON, provider 429, 529 -> 503, unreachable 502", async () => {
      const r = await post(ports.anth, "/v1/chat/completions", "{bad json");
      assert.equal(r.status, 400);
      assert.equal(JSON.parse(r.body).error.type, "invalid_request_error");
      await assert.rejects(
        openai(ports.anth).chat.completions.create({ model: "error-429", messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.RateLimitError, `got ${e}`);
          assert.equal(e.status, 429);
          assert.match(e.error.message, /fake provider error 429/);
          return true;
        });
      const r2 = await post(ports.anth, "/v1/chat/completions",
        { model: "error-529", messages: [{ role: "user", content: "x" }] });
      assert.equal(r2.status, 503);
      assert.match(JSON.parse(r2.body).error.message, /fake provider error 529/);
      await assert.rejects(
        openai(ports.dead).chat.completions.create({ model: "claude-x", messages: [{ role: "user", content: "x" }] }),
        (e) => {
          assert.equal(e.status, 502);
          assert.equal(typeof e.error.message, "string");
          return true;
        });
    });

    test("keys never appear in the logs", () => {
      assert.ok(!gw.logs().includes(SECRET), "backend key leaked into the logs");
      assert.ok(!gw.logs().includes(CLIENT_KEY), "client key leaked into the logs");
      for (const s of fake.seen) assert.ok(!JSON.stringify(s.headers).includes(CLIENT_KEY), "client key forwarded");
    });
  });

  test("gateway stops cleanly: exit 0, no sanitizer or Lua error reports", async () => {
    const r = await gw.stop();
    assert.equal(r.code, 0, gw.stderr());
    assert.doesNotMatch(gw.stderr(), /AddressSanitizer|LeakSanitizer|runtime error:|stack traceback/, gw.stderr());
  });
});
