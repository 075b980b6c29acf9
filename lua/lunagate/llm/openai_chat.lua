-- lunagate/llm/openai_chat.lua -- wire protocol: OpenAI chat completions (/v1/chat/completions)
--
-- Interface shared by every wire protocol module (ctx: see lunagate/llm/util.lua):
--   M.name, M.operation
--   M.matches(path) -> bool
--   M.is_streaming(req_json[, path]) -> bool
--   M.parse_request(rec, req_json[, ctx])            fills rec.llm (prompt only if ctx.capture.prompt)
--   M.prepare_request(req_json, opts) -> body_table, changed   opts = { model = override }
--   M.parse_response(rec, status, body_json[, ctx])   non-streaming body
--   M.parse_event(rec, event[, ctx])                  one SSE event {event, data, id}
--   M.extract_usage(obj) -> usage table (normalized integers) | nil
--   M.error_body(status, message[, type]) -> table    error object in this protocol's shape
local U = require "lunagate.llm.util"

local M = { name = "openai_chat", operation = "chat" }

function M.matches(path)
    path = (path or ""):gsub("%?.*$", "")
    return path:sub(-17) == "/chat/completions" or path == "chat/completions"
end

function M.is_streaming(req)
    return type(req) == "table" and req.stream == true
end

local PARAMS = {
    { "temperature", "temperature" }, { "top_p", "top_p" }, { "max_tokens", "max_tokens" },
    { "max_completion_tokens", "max_tokens" }, { "frequency_penalty", "frequency_penalty" },
    { "presence_penalty", "presence_penalty" }, { "seed", "seed" }, { "n", "n" },
    { "reasoning_effort", "reasoning_effort" }, { "top_k", "top_k" },
}

function M.parse_request(rec, req, ctx)
    local l = U.llm(rec)
    l.operation = M.operation
    l.request_model = U.str(req.model)
    l.streaming = M.is_streaming(req)
    l.params = U.params(req, PARAMS)
    if U.capture_prompt(ctx) and type(req.messages) == "table" then
        local p = {}
        for _, m in ipairs(req.messages) do
            if type(m) == "table" then
                p[#p + 1] = { role = U.str(m.role) or "user", content = U.content_text(m.content) }
            end
        end
        l.prompt = p
    end
end

-- Returns the body table, whether it changed, and the change as a top-level patch
-- { set = { key = raw JSON } } that the caller can apply to the original text (U.patch_object).
function M.prepare_request(req, opts)
    local patch = { set = {} }
    local changed = false
    opts = opts or {}
    if opts.model and req.model ~= opts.model then
        req.model = opts.model
        patch.set.model = U.encode(opts.model)
        changed = true
    end
    if req.stream == true and req.stream_options == nil and opts.include_usage ~= false then
        req.stream_options = { include_usage = true }
        patch.set.stream_options = '{"include_usage":true}'
        changed = true
    end
    return req, changed, patch
end

function M.extract_usage(u)
    if type(u) ~= "table" then return nil end
    local pd = type(u.prompt_tokens_details) == "table" and u.prompt_tokens_details or {}
    local cd = type(u.completion_tokens_details) == "table" and u.completion_tokens_details or {}
    return {
        input_tokens = U.int(u.prompt_tokens),
        output_tokens = U.int(u.completion_tokens),
        total_tokens = U.int(u.total_tokens),
        cached_input_tokens = U.int(pd.cached_tokens),
        cache_creation_input_tokens = U.int(pd.cache_write_tokens),
        reasoning_tokens = U.int(cd.reasoning_tokens),
    }
end

function M.parse_response(rec, status, body, ctx)
    local l = U.llm(rec)
    if type(body) ~= "table" or (status and status >= 400) then return end
    l.response_model = U.str(body.model) or l.response_model
    l.response_id = U.str(body.id) or l.response_id
    U.first_token(rec, ctx)
    if type(body.choices) == "table" then
        for i, ch in ipairs(body.choices) do
            local idx = U.int(ch.index) or (i - 1)
            U.finish_reason(rec, idx, ch.finish_reason, ctx)
            if type(ch.message) == "table" then
                U.append_text(ctx, idx, U.content_text(ch.message.content))
            end
        end
    end
    local u = M.extract_usage(body.usage)
    if u then U.set_usage(rec, u) end
end

function M.parse_event(rec, ev, ctx)
    local data = ev and ev.data
    if not data or data == "" then return end
    if data == "[DONE]" then
        if ctx then ctx.done = true end
        return
    end
    local obj = U.decode(data)
    if type(obj) ~= "table" then return end
    local l = U.llm(rec)
    if obj.error ~= nil then
        if ctx then ctx.error = obj.error end
        return
    end
    if not l.response_model then l.response_model = U.str(obj.model) end
    if not l.response_id then l.response_id = U.str(obj.id) end
    if type(obj.choices) == "table" then
        for i, ch in ipairs(obj.choices) do
            local idx = U.int(ch.index) or (i - 1)
            U.first_token(rec, ctx)
            if type(ch.delta) == "table" then
                local c = ch.delta.content
                if type(c) == "string" then U.append_text(ctx, idx, c) end
            end
            U.finish_reason(rec, idx, ch.finish_reason, ctx)
        end
    end
    local u = M.extract_usage(obj.usage)
    if u then U.set_usage(rec, u) end
end

local TYPES = {
    [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
    [404] = "not_found_error", [429] = "rate_limit_error",
}

function M.error_type(status)
    return TYPES[status] or (status and status >= 500 and "server_error") or "invalid_request_error"
end

function M.error_body(status, message, etype)
    return { error = { message = message, type = etype or M.error_type(status),
                       param = U.null, code = U.null } }
end

return M
