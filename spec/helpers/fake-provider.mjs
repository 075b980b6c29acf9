// fake-provider.mjs -- a local HTTP server that speaks just enough of the OpenAI and Anthropic
// wire formats for the LLM integration specs. It records every request so a test can check what
// the gateway sent (auth headers, body rewrites, paths).
//
// Served (POST, any path ending in):
//   /chat/completions  OpenAI chat completions; `stream: true` answers SSE chunks, with a final
//                      usage chunk only when stream_options.include_usage is true (like OpenAI)
//   /responses         OpenAI Responses; streaming ends with response.completed carrying usage
//   /embeddings        OpenAI embeddings (usage: prompt_tokens, total_tokens)
//   /messages          Anthropic Messages; streaming: message_start (input usage), text deltas,
//                      message_delta (output usage), message_stop
// Anything else answers 404 with an OpenAI-shaped error.
//
// Deterministic answers: the reply text is FAKE_TEXT (or the `x-fake-text` request header); the
// usage is `x-fake-usage: <input>,<output>` if given, else DEFAULT_USAGE. The response model is
// the request model + "-fake" (so request and response model labels differ).
// Other request headers: `x-fake-delay: <ms>` between SSE events, `x-fake-split: 1` writes each
// event in two pieces, `x-fake-stream-error: 1` ends an Anthropic stream with an `error` event
// after two text deltas.
// Errors on demand: a request model "error-<status>" answers that status with a provider-shaped
// error body (OpenAI: {error: {message, type, code}}; Anthropic: {type: "error", error: {...}}).
import http from "node:http";
import zlib from "node:zlib";

export const FAKE_TEXT = "Hello from the fake provider";
export const DEFAULT_USAGE = { input: 21, output: 5 };

const words = (text) => text.match(/\s*\S+/g) || [];

function usageOf(headers) {
  const h = headers["x-fake-usage"];
  if (h) {
    const [input, output] = String(h).split(",").map(Number);
    return { input, output };
  }
  return { ...DEFAULT_USAGE };
}

// `x-fake-text` is URI-encoded so it can carry any UTF-8 text in a header
// `x-fake-repeat: N` repeats the text N times (space-separated) for large bodies.
function textOf(headers) {
  const t = headers["x-fake-text"] ? decodeURIComponent(String(headers["x-fake-text"])) : FAKE_TEXT;
  const n = Number(headers["x-fake-repeat"] || 1);
  return n > 1 ? Array(n).fill(t).join(" ") : t;
}

// sse(req, res) -> send(data, event). With `x-fake-split: 1` each event is written in two
// pieces (cut inside the JSON) 5 ms apart, so the gateway sees events split across reads.
function sse(req, res, status = 200) {
  res.writeHead(status, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const split = req.headers["x-fake-split"] === "1";
  return (data, event) => {
    const ev = Buffer.from((event ? `event: ${event}\n` : "") + `data: ${data}\n\n`);
    if (!split) return res.write(ev);
    // cut at the byte level: a multi-byte UTF-8 character may be split between the writes
    let cut = Math.floor(ev.length / 2);
    const hi = ev.indexOf(0xe2);           // prefer cutting inside a 3-byte character if any
    if (hi > 0 && hi + 1 < ev.length) cut = hi + 1;
    res.write(ev.subarray(0, cut));
    setTimeout(() => { if (!res.destroyed) res.write(ev.subarray(cut)); }, 5);
  };
}

// per-request event spacing: `x-fake-delay: <ms>` overrides the server default
function delayOf(req, dflt) {
  const h = req.headers["x-fake-delay"];
  const d = h !== undefined ? Number(h) : dflt;
  return req.headers["x-fake-split"] === "1" ? Math.max(d, 15) : d;  // halves stay in order
}

// JSON answers are gzip-compressed when the request accepts gzip, as real providers do (the
// gateway must ask for identity to be able to read usage).
function json(res, status, obj) {
  let body = Buffer.from(JSON.stringify(obj));
  const headers = { "content-type": "application/json" };
  if (/\bgzip\b/.test(res.req.headers["accept-encoding"] || "")) {
    body = zlib.gzipSync(body);
    headers["content-encoding"] = "gzip";
  }
  headers["content-length"] = body.length;
  res.writeHead(status, headers);
  res.end(body);
}

export function openaiError(status, message) {
  return { error: { message, type: status === 429 ? "rate_limit_exceeded" : "invalid_request_error",
                    param: null, code: `fake_${status}` } };
}

export function anthropicError(status, message) {
  const type = { 400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error",
                 529: "overloaded_error" }[status] || "api_error";
  return { type: "error", error: { type, message } };
}

function errorStatus(model) {
  const m = /^error-(\d{3})$/.exec(model || "");
  return m ? Number(m[1]) : 0;
}

function chat(req, res, body, delay) {
  const u = usageOf(req.headers), text = textOf(req.headers);
  const model = `${body.model}-fake`, id = "chatcmpl-fake123", created = 1700000000;
  const usage = { prompt_tokens: u.input, completion_tokens: u.output, total_tokens: u.input + u.output };
  if (!body.stream) {
    return json(res, 200, {
      id, object: "chat.completion", created, model,
      choices: [{ index: 0, message: { role: "assistant", content: text }, logprobs: null, finish_reason: "stop" }],
      usage,
    });
  }
  const send = sse(req, res);
  const chunk = (delta, finish, usg) => JSON.stringify({
    id, object: "chat.completion.chunk", created, model,
    choices: usg ? [] : [{ index: 0, delta, logprobs: null, finish_reason: finish || null }],
    ...(usg ? { usage: usg } : {}),
  });
  const events = [chunk({ role: "assistant", content: "" })];
  for (const w of words(text)) events.push(chunk({ content: w }));
  events.push(chunk({}, "stop"));
  if (body.stream_options && body.stream_options.include_usage === true) events.push(chunk(null, null, usage));
  events.push("[DONE]");
  pump(res, events.map((e) => () => send(e)), delay);
}

function responses(req, res, body, delay) {
  const u = usageOf(req.headers), text = textOf(req.headers);
  const model = `${body.model}-fake`, id = "resp_fake123";
  const usage = { input_tokens: u.input, input_tokens_details: { cached_tokens: 0 }, output_tokens: u.output,
                  output_tokens_details: { reasoning_tokens: 0 }, total_tokens: u.input + u.output };
  const msg = { id: "msg_fake1", type: "message", status: "completed", role: "assistant",
                content: [{ type: "output_text", text, annotations: [] }] };
  const full = { id, object: "response", created_at: 1700000000, status: "completed", model,
                 output: [msg], usage };
  if (!body.stream) return json(res, 200, full);
  const send = sse(req, res);
  let seq = 0;
  const ev = (type, extra) => () => send(JSON.stringify({ type, sequence_number: seq++, ...extra }), type);
  const events = [ev("response.created", { response: { ...full, status: "in_progress", output: [], usage: null } })];
  for (const w of words(text)) {
    events.push(ev("response.output_text.delta", { item_id: "msg_fake1", output_index: 0, content_index: 0, delta: w }));
  }
  events.push(ev("response.completed", { response: full }));
  pump(res, events, delay);
}

function embeddings(req, res, body) {
  const u = usageOf(req.headers);
  const inputs = Array.isArray(body.input) ? body.input : [body.input];
  const floats = [0.5, 0.25, 0.125];   // exact in float32
  const vec = body.encoding_format === "base64"
    ? Buffer.from(new Float32Array(floats).buffer).toString("base64") : floats;
  json(res, 200, {
    object: "list", model: `${body.model}-fake`,
    data: inputs.map((_, i) => ({ object: "embedding", index: i, embedding: vec })),
    usage: { prompt_tokens: u.input, total_tokens: u.input },
  });
}

function messages(req, res, body, delay) {
  const u = usageOf(req.headers), text = textOf(req.headers);
  const model = `${body.model}-fake`, id = "msg_fake123";
  const tool = req.headers["x-fake-tool"];
  if (tool) return toolUse(req, res, body, model, u, String(tool), delay);
  if (!body.stream) {
    return json(res, 200, {
      id, type: "message", role: "assistant", model, content: [{ type: "text", text }],
      stop_reason: "end_turn", stop_sequence: null,
      usage: { input_tokens: u.input, output_tokens: u.output, cache_creation_input_tokens: 0,
               cache_read_input_tokens: 0 },
    });
  }
  const send = sse(req, res);
  const ev = (type, extra) => () => send(JSON.stringify({ type, ...extra }), type);
  const events = [
    ev("message_start", { message: { id, type: "message", role: "assistant", model, content: [],
      stop_reason: null, stop_sequence: null,
      usage: { input_tokens: u.input, output_tokens: 1, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 } } }),
    ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
    () => send(JSON.stringify({ type: "ping" }), "ping"),
  ];
  const ws = words(text);
  for (const [i, w] of ws.entries()) {
    events.push(ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: w } }));
    if (i === 1 && req.headers["x-fake-stream-error"] === "1") {
      // a mid-stream error event (Anthropic sends these e.g. when overloaded), then the end
      events.push(ev("error", { error: { type: "overloaded_error", message: "Overloaded (fake)" } }));
      return pump(res, events, delay);
    }
  }
  events.push(ev("content_block_stop", { index: 0 }));
  events.push(ev("message_delta", { delta: { stop_reason: "end_turn", stop_sequence: null },
                                    usage: { output_tokens: u.output } }));
  events.push(ev("message_stop", {}));
  pump(res, events, delay);
}

// `x-fake-tool: <name>` makes an Anthropic answer a tool call: a short text block, then a
// tool_use block {id: "toolu_fake1", name, input: TOOL_INPUT}; stop_reason "tool_use". Streamed,
// the input arrives as input_json_delta pieces.
export const TOOL_INPUT = { city: "Paris", unit: "celsius" };

function toolUse(req, res, body, model, u, name, delay) {
  const id = "msg_faketool", usage = { input_tokens: u.input, output_tokens: u.output };
  const intro = "Let me check.";
  if (!body.stream) {
    return json(res, 200, {
      id, type: "message", role: "assistant", model,
      content: [{ type: "text", text: intro }, { type: "tool_use", id: "toolu_fake1", name, input: TOOL_INPUT }],
      stop_reason: "tool_use", stop_sequence: null, usage,
    });
  }
  const send = sse(req, res);
  const ev = (type, extra) => () => send(JSON.stringify({ type, ...extra }), type);
  const args = JSON.stringify(TOOL_INPUT);
  const cut = Math.floor(args.length / 2);
  pump(res, [
    ev("message_start", { message: { id, type: "message", role: "assistant", model, content: [],
      stop_reason: null, stop_sequence: null, usage: { input_tokens: u.input, output_tokens: 1 } } }),
    ev("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
    ev("content_block_delta", { index: 0, delta: { type: "text_delta", text: intro } }),
    ev("content_block_stop", { index: 0 }),
    ev("content_block_start", { index: 1, content_block: { type: "tool_use", id: "toolu_fake1", name, input: {} } }),
    ev("content_block_delta", { index: 1, delta: { type: "input_json_delta", partial_json: args.slice(0, cut) } }),
    ev("content_block_delta", { index: 1, delta: { type: "input_json_delta", partial_json: args.slice(cut) } }),
    ev("content_block_stop", { index: 1 }),
    ev("message_delta", { delta: { stop_reason: "tool_use", stop_sequence: null }, usage: { output_tokens: u.output } }),
    ev("message_stop", {}),
  ], delay);
}

// pump writes each event `delay` ms apart, then ends the response.
// A client that goes away early shows as `aborted: true` on the request's record.
function pump(res, events, delay) {
  let i = 0, closed = false;
  res.on("close", () => {
    closed = true;
    if (i < events.length && res.req.fakeRec) res.req.fakeRec.aborted = true;
  });
  const step = () => {
    if (closed) return;
    if (i === events.length) return res.end();
    events[i++]();
    if (delay > 0) setTimeout(step, delay);
    else step();
  };
  step();
}

// startFakeProvider({delay}) -> { port, url, seen, last(), clear(), close() }
// seen[] entries: { method, url, headers (lowercase), body (string), json (parsed or null),
// aborted (true when the stream was cut before its end) }.
export async function startFakeProvider(opts = {}) {
  const seen = [];
  const delay = opts.delay || 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      let parsed = null;
      try { parsed = JSON.parse(body); } catch { /* recorded as null */ }
      const rec = { method: req.method, url: req.url, headers: req.headers, body, json: parsed };
      seen.push(rec);
      req.fakeRec = rec;
      const path = req.url.split("?")[0];
      const isAnthropic = path.endsWith("/messages");
      const st = errorStatus(parsed && parsed.model);
      if (st) {
        const msg = `fake provider error ${st}`;
        return json(res, st, isAnthropic ? anthropicError(st, msg) : openaiError(st, msg));
      }
      if (req.method !== "POST" || !parsed) {
        return json(res, 404, isAnthropic ? anthropicError(404, "not found") : openaiError(404, "not found"));
      }
      const d = delayOf(req, delay);
      if (path.endsWith("/chat/completions")) return chat(req, res, parsed, d);
      if (path.endsWith("/responses")) return responses(req, res, parsed, d);
      if (path.endsWith("/embeddings")) return embeddings(req, res, parsed);
      if (isAnthropic) return messages(req, res, parsed, d);
      return json(res, 404, openaiError(404, `no route ${path}`));
    });
  });
  server.keepAliveTimeout = 30000;
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return {
    port, seen, server, url: `http://127.0.0.1:${port}`,
    last: () => seen[seen.length - 1],
    clear: () => { seen.length = 0; },
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(() => r()); }),
  };
}
