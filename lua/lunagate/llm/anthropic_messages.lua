-- lunagate/llm/anthropic_messages.lua -- wire protocol: Anthropic Messages (/v1/messages)
-- Interface: see lunagate/llm/openai_chat.lua.
--
-- Token normalization (agentgateway CacheTokenConvention): Anthropic's input_tokens excludes
-- cache reads and writes, so rec.llm.input_tokens = input + cache_read + cache_creation;
-- rec.llm.provider_input_tokens keeps the raw value.
local U = require "lunagate.llm.util"

local M = { name = "anthropic_messages", operation = "chat" }

function M.matches(path)
    path = (path or ""):gsub("%?.*$", "")
    return path:sub(-9) == "/messages"
end

function M.is_streaming(req)
    return type(req) == "table" and req.stream == true
end

local PARAMS = {
    { "temperature", "temperature" }, { "top_p", "top_p" }, { "top_k", "top_k" },
    { "max_tokens", "max_tokens" },
}

function M.parse_request(rec, req, ctx)
    local l = U.llm(rec)
    l.operation = M.operation
    l.request_model = U.str(req.model)
    l.streaming = M.is_streaming(req)
    l.params = U.params(req, PARAMS)
    if U.capture_prompt(ctx) then
        local p = {}
        if req.system ~= nil then
            p[#p + 1] = { role = "system", content = U.content_text(req.system) }
        end
        if type(req.messages) == "table" then
            for _, m in ipairs(req.messages) do
                if type(m) == "table" then
                    p[#p + 1] = { role = U.str(m.role) or "user", content = U.content_text(m.content) }
                end
            end
        end
        l.prompt = p
    end
end

function M.prepare_request(req, opts)
    if opts and opts.model and req.model ~= opts.model then
        req.model = opts.model
        return req, true, { set = { model = U.encode(opts.model) } }
    end
    return req, false, { set = {} }
end

-- raw: { input_tokens, cache_read_input_tokens, cache_creation_input_tokens, output_tokens }
function M.extract_usage(u, prev)
    if type(u) ~= "table" then return nil end
    prev = prev or {}
    local raw = {
        input = U.int(u.input_tokens) or prev.input,
        read = U.int(u.cache_read_input_tokens) or prev.read,
        write = U.int(u.cache_creation_input_tokens) or prev.write,
        output = U.int(u.output_tokens) or prev.output,
    }
    local usage = { output_tokens = raw.output, cached_input_tokens = raw.read,
                    cache_creation_input_tokens = raw.write }
    if raw.input then
        usage.input_tokens = raw.input + (raw.read or 0) + (raw.write or 0)
        if raw.output then usage.total_tokens = usage.input_tokens + raw.output end
    end
    return usage, raw
end

local function set(rec, u, raw)
    U.set_usage(rec, u)
    if raw.input then rec.llm.provider_input_tokens = raw.input end
    if u.total_tokens then rec.llm.total_tokens = u.total_tokens end
end

function M.parse_response(rec, status, body, ctx)
    local l = U.llm(rec)
    if type(body) ~= "table" or (status and status >= 400) then return end
    l.response_model = U.str(body.model) or l.response_model
    l.response_id = U.str(body.id) or l.response_id
    U.first_token(rec, ctx)
    U.finish_reason(rec, 0, body.stop_reason, ctx)
    if type(body.content) == "table" then
        for _, b in ipairs(body.content) do
            if type(b) == "table" and b.type == "text" then U.append_text(ctx, 0, U.str(b.text)) end
        end
    end
    local u, raw = M.extract_usage(body.usage)
    if u then set(rec, u, raw) end
end

function M.parse_event(rec, ev, ctx)
    local data = ev and ev.data
    if not data or data == "" then return end
    local obj = U.decode(data)
    if type(obj) ~= "table" then return end
    local t = U.str(obj.type) or ev.event
    local l = U.llm(rec)
    ctx = ctx or {}
    if t == "message_start" and type(obj.message) == "table" then
        local m = obj.message
        l.response_model = U.str(m.model) or l.response_model
        l.response_id = U.str(m.id) or l.response_id
        local u, raw = M.extract_usage(m.usage)
        if u then ctx.anthropic_raw = raw; set(rec, u, raw) end
    elseif t == "content_block_delta" then
        U.first_token(rec, ctx)
        local d = obj.delta
        if type(d) == "table" and d.type == "text_delta" then
            U.append_text(ctx, 0, U.str(d.text))
        end
    elseif t == "message_delta" then
        if type(obj.delta) == "table" then U.finish_reason(rec, 0, obj.delta.stop_reason, ctx) end
        local u, raw = M.extract_usage(obj.usage, ctx.anthropic_raw)
        if u then ctx.anthropic_raw = raw; set(rec, u, raw) end
    elseif t == "message_stop" then
        ctx.done = true
    elseif t == "error" then
        ctx.error = obj.error or obj
    end
end

local TYPES = {
    [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
    [404] = "not_found_error", [413] = "request_too_large", [429] = "rate_limit_error",
    [500] = "api_error", [529] = "overloaded_error",
}

function M.error_type(status)
    return TYPES[status] or (status and status >= 500 and "api_error") or "invalid_request_error"
end

function M.error_body(status, message, etype)
    return { type = "error", error = { type = etype or M.error_type(status), message = message } }
end

return M
