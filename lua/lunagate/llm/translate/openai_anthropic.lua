-- lunagate/llm/translate/openai_anthropic.lua -- OpenAI chat-completions client <-> Anthropic backend
--
-- local T = require "lunagate.llm.translate.openai_anthropic"
-- T.request(openai_req, opts) -> anthropic_req | nil, err
--     opts = { model = override, default_max_tokens = 4096 }
--     system/developer messages -> `system`; max_completion_tokens|max_tokens -> max_tokens
--     (default 4096); stop -> stop_sequences; tools/tool_choice; tool calls and tool results;
--     image_url parts (data: URLs -> base64 source, others -> url source); user -> metadata.user_id.
-- T.response(anthropic_resp, opts) -> openai chat.completion table   (opts.created = unix s)
-- T.finish_reason(stop_reason) -> OpenAI finish_reason
-- T.usage(anthropic_usage) -> OpenAI usage table (prompt_tokens include cache read + creation)
-- T.stream(opts) -> translator; translator:feed(event) -> string of OpenAI SSE bytes ("" if none)
--     event = { event = name, data = json } from the Anthropic SSE stream. Emits a role chunk at
--     message_start, content / tool_call deltas, a finish_reason chunk at message_delta, and at
--     message_stop a usage chunk (choices: []) followed by "data: [DONE]". An `error` event
--     becomes `data: {"error": {...}}` followed by [DONE].
-- T.error_to_openai(status, anthropic_body) -> status, openai_error_table
-- T.error_to_anthropic(status, openai_body) -> status, anthropic_error_table
local U = require "lunagate.llm.util"
local sse = require "lunagate.llm.sse"

local T = {}

T.DEFAULT_MAX_TOKENS = 4096

local FINISH = {
    end_turn = "stop", stop_sequence = "stop", max_tokens = "length", tool_use = "tool_calls",
    pause_turn = "stop", refusal = "content_filter", model_context_window_exceeded = "length",
}

function T.finish_reason(r)
    if r == nil or r == U.null then return nil end
    return FINISH[r] or "stop"
end

local function image_part(p)
    local url = type(p.image_url) == "table" and p.image_url.url or p.image_url
    if type(url) ~= "string" then return nil end
    local mt, data = url:match("^data:([^;]+);base64,(.*)$")
    if mt then
        return { type = "image", source = { type = "base64", media_type = mt, data = data } }
    end
    return { type = "image", source = { type = "url", url = url } }
end

local function content_blocks(c)
    if type(c) == "string" then return c end
    if type(c) ~= "table" then return "" end
    local out = {}
    for _, p in ipairs(c) do
        if type(p) == "table" then
            if p.type == "text" and type(p.text) == "string" then
                out[#out + 1] = { type = "text", text = p.text }
            elseif p.type == "image_url" then
                out[#out + 1] = image_part(p)
            end
        elseif type(p) == "string" then
            out[#out + 1] = { type = "text", text = p }
        end
    end
    return out
end

local function push(msgs, role, blocks)
    -- Anthropic needs alternating roles: merge consecutive messages of the same role.
    local last = msgs[#msgs]
    if type(blocks) == "string" then blocks = { { type = "text", text = blocks } } end
    if last and last.role == role then
        if type(last.content) == "string" then
            last.content = { { type = "text", text = last.content } }
        end
        for _, b in ipairs(blocks) do last.content[#last.content + 1] = b end
    else
        msgs[#msgs + 1] = { role = role, content = blocks }
    end
end

function T.request(req, opts)
    opts = opts or {}
    if type(req) ~= "table" then return nil, "request body must be a JSON object" end
    if type(req.messages) ~= "table" then return nil, "messages: expected an array" end
    local out = { model = opts.model or req.model, messages = {} }
    local system = {}
    for i, m in ipairs(req.messages) do
        if type(m) ~= "table" then return nil, "messages[" .. (i - 1) .. "]: expected an object" end
        local role = m.role
        if role == "system" or role == "developer" then
            system[#system + 1] = U.content_text(m.content)
        elseif role == "user" then
            push(out.messages, "user", content_blocks(m.content))
        elseif role == "assistant" then
            local blocks = {}
            local text = U.content_text(m.content)
            if text ~= "" then blocks[#blocks + 1] = { type = "text", text = text } end
            if type(m.tool_calls) == "table" then
                for _, tc in ipairs(m.tool_calls) do
                    local f = type(tc) == "table" and tc["function"] or {}
                    local input = type(f.arguments) == "string" and U.decode(f.arguments) or nil
                    if type(input) ~= "table" then input = {} end
                    if next(input) == nil then input = setmetatable({}, { __jsonobject = true }) end
                    blocks[#blocks + 1] = { type = "tool_use", id = tc.id, name = f.name, input = input }
                end
            end
            if #blocks == 0 then blocks[1] = { type = "text", text = "" } end
            push(out.messages, "assistant", blocks)
        elseif role == "tool" then
            push(out.messages, "user", { {
                type = "tool_result", tool_use_id = m.tool_call_id,
                content = U.content_text(m.content),
            } })
        else
            return nil, "messages[" .. (i - 1) .. "].role: unsupported role " .. tostring(role)
        end
    end
    if #system > 0 then out.system = table.concat(system, "\n\n") end
    out.max_tokens = U.int(req.max_completion_tokens) or U.int(req.max_tokens)
        or opts.default_max_tokens or T.DEFAULT_MAX_TOKENS
    if type(req.temperature) == "number" then out.temperature = req.temperature end
    if type(req.top_p) == "number" then out.top_p = req.top_p end
    if type(req.top_k) == "number" then out.top_k = req.top_k end
    if type(req.stop) == "string" then
        out.stop_sequences = { req.stop }
    elseif type(req.stop) == "table" and #req.stop > 0 then
        out.stop_sequences = req.stop
    end
    if req.stream == true then out.stream = true end
    if type(req.user) == "string" then out.metadata = { user_id = req.user } end
    if type(req.tools) == "table" and #req.tools > 0 then
        out.tools = {}
        for _, t in ipairs(req.tools) do
            local f = type(t) == "table" and t["function"]
            if type(f) == "table" then
                out.tools[#out.tools + 1] = {
                    name = f.name, description = f.description,
                    input_schema = type(f.parameters) == "table" and f.parameters
                        or { type = "object", properties = setmetatable({}, { __jsonobject = true }) },
                }
            end
        end
    end
    local tc = req.tool_choice
    if tc == "auto" then out.tool_choice = { type = "auto" }
    elseif tc == "required" then out.tool_choice = { type = "any" }
    elseif tc == "none" then out.tool_choice = { type = "none" }
    elseif type(tc) == "table" and type(tc["function"]) == "table" then
        out.tool_choice = { type = "tool", name = tc["function"].name }
    end
    if req.parallel_tool_calls == false and out.tool_choice then
        out.tool_choice.disable_parallel_tool_use = true
    end
    return out
end

-- Encodes a translated request: empty arrays in JSON schemas ("required": []) stay arrays.
function T.encode_request(areq)
    local s = U.encode(areq)
    s = s:gsub('"required":{}', '"required":[]'):gsub('"enum":{}', '"enum":[]')
    return s
end

function T.usage(u)
    if type(u) ~= "table" then return nil end
    local input = (U.int(u.input_tokens) or 0) + (U.int(u.cache_read_input_tokens) or 0)
        + (U.int(u.cache_creation_input_tokens) or 0)
    local output = U.int(u.output_tokens) or 0
    local r = { prompt_tokens = input, completion_tokens = output, total_tokens = input + output }
    if u.cache_read_input_tokens ~= nil and u.cache_read_input_tokens ~= U.null then
        r.prompt_tokens_details = { cached_tokens = U.int(u.cache_read_input_tokens) or 0 }
    end
    return r
end

function T.response(a, opts)
    opts = opts or {}
    local text, calls = {}, {}
    for _, b in ipairs(type(a.content) == "table" and a.content or {}) do
        if type(b) == "table" then
            if b.type == "text" then
                text[#text + 1] = b.text
            elseif b.type == "tool_use" then
                calls[#calls + 1] = {
                    id = b.id, type = "function",
                    ["function"] = { name = b.name, arguments = U.encode(b.input or {}) },
                }
            end
        end
    end
    local msg = { role = "assistant", content = table.concat(text) }
    if #calls > 0 then
        msg.tool_calls = calls
        if msg.content == "" then msg.content = U.null end
    end
    return {
        id = a.id, object = "chat.completion", created = opts.created or os.time(),
        model = a.model,
        choices = { { index = 0, message = msg, logprobs = U.null,
                      finish_reason = T.finish_reason(a.stop_reason) or U.null } },
        usage = T.usage(a.usage),
    }
end

-- ---- Streaming ----

local Stream = {}
Stream.__index = Stream

function T.stream(opts)
    opts = opts or {}
    return setmetatable({ created = opts.created or os.time(), id = nil, model = opts.model,
                          tool_index = -1, block_tool = {}, usage = {}, done = false }, Stream)
end

function Stream:chunk(choices, usage)
    local c = { id = self.id, object = "chat.completion.chunk", created = self.created,
                model = self.model, choices = choices }
    if usage then c.usage = usage end
    return sse.encode({ data = U.encode(c) })
end

local function choice(delta, finish)
    return { { index = 0, delta = delta, logprobs = U.null, finish_reason = finish or U.null } }
end

function Stream:feed(ev)
    if self.done or not ev or not ev.data then return "" end
    local obj = U.decode(ev.data)
    if type(obj) ~= "table" then return "" end
    local t = obj.type or ev.event
    if t == "message_start" then
        local m = type(obj.message) == "table" and obj.message or {}
        self.id = m.id
        self.model = m.model or self.model
        for k, v in pairs(type(m.usage) == "table" and m.usage or {}) do self.usage[k] = v end
        return self:chunk(choice({ role = "assistant", content = "" }))
    elseif t == "content_block_start" then
        local b = obj.content_block
        if type(b) == "table" and b.type == "tool_use" then
            self.tool_index = self.tool_index + 1
            self.block_tool[U.int(obj.index) or 0] = self.tool_index
            return self:chunk(choice({ tool_calls = { {
                index = self.tool_index, id = b.id, type = "function",
                ["function"] = { name = b.name, arguments = "" },
            } } }))
        end
    elseif t == "content_block_delta" then
        local d = obj.delta
        if type(d) ~= "table" then return "" end
        if d.type == "text_delta" then
            return self:chunk(choice({ content = d.text }))
        elseif d.type == "input_json_delta" then
            local ti = self.block_tool[U.int(obj.index) or 0] or 0
            return self:chunk(choice({ tool_calls = { {
                index = ti, ["function"] = { arguments = d.partial_json },
            } } }))
        end
    elseif t == "message_delta" then
        for k, v in pairs(type(obj.usage) == "table" and obj.usage or {}) do self.usage[k] = v end
        local reason = type(obj.delta) == "table" and T.finish_reason(obj.delta.stop_reason)
        return self:chunk(choice(setmetatable({}, { __jsonobject = true }), reason or "stop"))
    elseif t == "message_stop" then
        self.done = true
        return self:chunk(U.EMPTY_ARRAY, T.usage(self.usage)) .. "data: [DONE]\n\n"
    elseif t == "error" then
        self.done = true
        local e = type(obj.error) == "table" and obj.error or {}
        local _, body = T.error_to_openai(500, { type = "error", error = e })
        return sse.encode({ data = U.encode(body) }) .. "data: [DONE]\n\n"
    end
    return ""
end

-- ---- Errors ----

local A2O = {
    invalid_request_error = "invalid_request_error", authentication_error = "authentication_error",
    permission_error = "permission_error", not_found_error = "not_found_error",
    request_too_large = "invalid_request_error", rate_limit_error = "rate_limit_error",
    api_error = "server_error", overloaded_error = "server_error",
}

local O2A = {
    invalid_request_error = "invalid_request_error", authentication_error = "authentication_error",
    permission_error = "permission_error", not_found_error = "not_found_error",
    rate_limit_error = "rate_limit_error", insufficient_quota = "rate_limit_error",
    server_error = "api_error", requests = "rate_limit_error", tokens = "rate_limit_error",
}

local A_STATUS = { overloaded_error = 529 }

function T.error_to_openai(status, body)
    local e = type(body) == "table" and type(body.error) == "table" and body.error or {}
    local msg = type(e.message) == "string" and e.message
        or (type(body) == "string" and body) or "upstream error"
    local typ = A2O[e.type] or (status and status >= 500 and "server_error") or "invalid_request_error"
    local out_status = status
    if status == 529 then out_status = 503 end
    return out_status, { error = { message = msg, type = typ, param = U.null,
                                   code = type(e.type) == "string" and e.type or U.null } }
end

function T.error_to_anthropic(status, body)
    local e = type(body) == "table" and type(body.error) == "table" and body.error or {}
    local msg = type(e.message) == "string" and e.message
        or (type(body) == "string" and body) or "upstream error"
    local typ = O2A[e.type] or O2A[e.code]
    if not typ then
        local by_status = { [400] = "invalid_request_error", [401] = "authentication_error",
                            [403] = "permission_error", [404] = "not_found_error",
                            [413] = "request_too_large", [429] = "rate_limit_error" }
        typ = by_status[status] or (status and status >= 500 and "api_error") or "invalid_request_error"
    end
    return A_STATUS[typ] or status, { type = "error", error = { type = typ, message = msg } }
end

return T
