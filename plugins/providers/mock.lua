-- plugins/providers/mock.lua -- provider: answers locally, no network (demos, tests, `make run`)
--
-- Config: ai: { name: mock, provider: { mock: { model?, text?, tokenDelay?: "20ms" } } }
--   model       response model (default: the request model)
--   text        fixed reply text (default: 'Mock reply to: "<first 12 words of the last user
--               message>"' -- deterministic for a given request)
--   tokenDelay  delay between streamed tokens ("20ms", "1s", "500us"; default 0)
-- Speaks OpenAI chat completions (/v1/chat/completions), Anthropic Messages (/v1/messages) and
-- the model list (/v1/models; Anthropic shape when the request has anthropic-version).
-- Usage: input_tokens = ceil(prompt characters / 4) (all message text, system included, min 1);
-- the reply is split into tokens as whitespace-led words ("%s*%S+"), output_tokens = their
-- count; total = input + output. A streamed reply is returned as `events`, each
-- { delay_ms = ms after the previous event, chunk = SSE bytes }; the C side schedules them.
-- Shape: see plugins/providers/openai.lua; mock adds is_local and respond().
local U = require "lunagate.llm.util"
local sse = require "lunagate.llm.sse"
local crc32 = require("lunagate.llm.eventstream").crc32

local M = {
    name = "mock",
    identity = "mock",
    config_key = "mock",
    fields = { model = "string", text = "string", tokenDelay = "string" },
    is_local = true,
    host = "mock.invalid", port = 0, tls = false, base_path = "/v1",
    formats = { completions = "openai_chat", messages = "anthropic_messages", models = "models" },
    paths = { completions = "/chat/completions", messages = "/messages", models = "/models" },
}

-- "20ms" | "1s" | "500us" | "1m" | number (ms) -> milliseconds (number) | nil, err
function M.parse_duration(d)
    if d == nil then return 0 end
    if type(d) == "number" then return d end
    if type(d) ~= "string" then return nil, "expected a duration such as \"20ms\"" end
    local n, unit = d:match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
    n = tonumber(n)
    local mult = ({ ms = 1, s = 1000, us = 0.001, ["µs"] = 0.001, m = 60000, [""] = 1 })[unit or ""]
    if not n or not mult then return nil, "expected a duration such as \"20ms\"" end
    return n * mult
end

function M.check(pconf)
    local ok, err = M.parse_duration(pconf.tokenDelay)
    if not ok then return nil, "tokenDelay: " .. err end
    return true
end

local function prompt_texts(route, req)
    local texts, last_user = {}, nil
    if route == "messages" and req.system ~= nil then texts[#texts + 1] = U.content_text(req.system) end
    for _, m in ipairs(type(req.messages) == "table" and req.messages or {}) do
        if type(m) == "table" then
            local t = U.content_text(m.content)
            texts[#texts + 1] = t
            if m.role == "user" then last_user = t end
        end
    end
    return texts, last_user
end

function M.reply_text(pconf, last_user)
    if pconf.text then return pconf.text end
    local words = {}
    for w in (last_user or ""):gmatch("%S+") do
        words[#words + 1] = w
        if #words == 12 then break end
    end
    local summary = table.concat(words, " ")
    if #words == 12 and select(2, (last_user or ""):gsub("%S+", "")) > 12 then
        summary = summary .. " ..."
    end
    return 'Mock reply to: "' .. summary .. '"'
end

function M.tokens(text)
    local t = {}
    for piece in text:gmatch("%s*%S+") do t[#t + 1] = piece end
    return t
end

function M.usage_of(route, req, text)
    local texts = prompt_texts(route, req)
    local chars = 0
    for _, s in ipairs(texts) do chars = chars + (utf8.len(s) or #s) end
    local input = math.max(1, (chars + 3) // 4)
    local output = #M.tokens(text)
    return input, output
end

local JSON = { ["content-type"] = "application/json" }
local SSE = { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" }

-- Deterministic request digest (cjson key order depends on the per-process hash seed).
local function digest(req)
    local parts = {}
    for _, m in ipairs(type(req.messages) == "table" and req.messages or {}) do
        if type(m) == "table" then
            parts[#parts + 1] = tostring(m.role) .. ":" .. U.content_text(m.content)
        end
    end
    return crc32(table.concat(parts, "\n"))
end

local function ev(delay, data, name)
    return { delay_ms = delay, chunk = sse.encode({ event = name, data = data }) }
end

local function openai(pconf, req, model, streaming, now_s, delay)
    local _, last_user = prompt_texts("completions", req)
    local text = M.reply_text(pconf, last_user)
    local input, output = M.usage_of("completions", req, text)
    local id = string.format("chatcmpl-mock%08x", digest(req))
    local usage = { prompt_tokens = input, completion_tokens = output, total_tokens = input + output }
    if not streaming then
        return { status = 200, headers = JSON, body = U.encode({
            id = id, object = "chat.completion", created = now_s, model = model,
            choices = { { index = 0, message = { role = "assistant", content = text },
                          logprobs = U.null, finish_reason = "stop" } },
            usage = usage,
        }) }
    end
    local function chunk(delta, finish, u)
        return U.encode({ id = id, object = "chat.completion.chunk", created = now_s, model = model,
                          choices = u and U.EMPTY_ARRAY or { { index = 0, delta = delta,
                              logprobs = U.null, finish_reason = finish or U.null } },
                          usage = u })
    end
    local events = { ev(0, chunk({ role = "assistant", content = "" })) }
    for _, tok in ipairs(M.tokens(text)) do
        events[#events + 1] = ev(delay, chunk({ content = tok }))
    end
    events[#events + 1] = ev(0, chunk({}, "stop"))
    local so = req.stream_options
    if so == nil or (type(so) == "table" and so.include_usage == true) then
        events[#events + 1] = ev(0, chunk(nil, nil, usage))
    end
    events[#events + 1] = ev(0, "[DONE]")
    return { status = 200, headers = SSE, events = events }
end

local function anthropic(pconf, req, model, streaming, delay)
    local _, last_user = prompt_texts("messages", req)
    local text = M.reply_text(pconf, last_user)
    local input, output = M.usage_of("messages", req, text)
    local id = string.format("msg_mock%08x", digest(req))
    if not streaming then
        return { status = 200, headers = JSON, body = U.encode({
            id = id, type = "message", role = "assistant", model = model,
            content = { { type = "text", text = text } },
            stop_reason = "end_turn", stop_sequence = U.null,
            usage = { input_tokens = input, output_tokens = output,
                      cache_creation_input_tokens = 0, cache_read_input_tokens = 0 },
        }) }
    end
    local events = {
        ev(0, U.encode({ type = "message_start", message = {
            id = id, type = "message", role = "assistant", model = model, content = U.EMPTY_ARRAY,
            stop_reason = U.null, stop_sequence = U.null,
            usage = { input_tokens = input, output_tokens = 1,
                      cache_creation_input_tokens = 0, cache_read_input_tokens = 0 } } }),
            "message_start"),
        ev(0, U.encode({ type = "content_block_start", index = 0,
                         content_block = { type = "text", text = "" } }), "content_block_start"),
    }
    for _, tok in ipairs(M.tokens(text)) do
        events[#events + 1] = ev(delay, U.encode({ type = "content_block_delta", index = 0,
            delta = { type = "text_delta", text = tok } }), "content_block_delta")
    end
    events[#events + 1] = ev(0, U.encode({ type = "content_block_stop", index = 0 }), "content_block_stop")
    events[#events + 1] = ev(0, U.encode({ type = "message_delta",
        delta = { stop_reason = "end_turn", stop_sequence = U.null },
        usage = { output_tokens = output } }), "message_delta")
    events[#events + 1] = ev(0, U.encode({ type = "message_stop" }), "message_stop")
    return { status = 200, headers = SSE, events = events }
end

local function models(pconf, req_headers)
    local id = pconf.model or "mock"
    if req_headers and req_headers["anthropic-version"] then
        return { status = 200, headers = JSON, body = U.encode({
            data = { { type = "model", id = id, display_name = id, created_at = "2025-01-01T00:00:00Z" } },
            has_more = false, first_id = id, last_id = id }) }
    end
    return { status = 200, headers = JSON, body = U.encode({
        object = "list", data = { { id = id, object = "model", created = 0, owned_by = "lunagate" } } }) }
end

-- route: completions | messages | models; req: decoded body (nil for models);
-- info = { model, streaming, now_us, headers }. Returns { status, headers, body | events }.
function M.respond(pconf, route, req, info)
    local delay = M.parse_duration(pconf.tokenDelay) or 0
    local model = pconf.model or info.model
    local now_s = (info.now_us or os.time() * 1000000) // 1000000
    if route == "models" then return models(pconf, info.headers) end
    if route == "messages" then return anthropic(pconf, req, model, info.streaming, delay) end
    return openai(pconf, req, model, info.streaming, now_s, delay)
end

return M
