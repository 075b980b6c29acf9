-- lunagate/llm/bedrock_converse.lua -- wire protocol: Amazon Bedrock Converse / ConverseStream
-- (/model/<modelId>/converse, /model/<modelId>/converse-stream; the stream is AWS event-stream,
-- decoded by lunagate/llm/eventstream.lua; parse_event receives one decoded message).
-- Interface: see lunagate/llm/openai_chat.lua. The response carries no model: response_model
-- is the request model. Input tokens include cache reads/writes (as for Anthropic).
local U = require "lunagate.llm.util"

local M = { name = "bedrock_converse", operation = "chat" }

local function strip(path)
    return ((path or ""):gsub("%?.*$", ""))
end

function M.matches(path)
    path = strip(path)
    return path:find("/model/.+/converse$") ~= nil or path:find("/model/.+/converse%-stream$") ~= nil
end

local function unescape(s)
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function M.path_model(path)
    local m = strip(path):match("/model/(.+)/converse%-stream$") or strip(path):match("/model/(.+)/converse$")
    return m and unescape(m)
end

function M.is_streaming(_, path)
    return strip(path):find("/converse%-stream$") ~= nil
end

local INF = {
    { "maxTokens", "max_tokens" }, { "temperature", "temperature" }, { "topP", "top_p" },
}

local function blocks_text(content)
    if type(content) ~= "table" then return "" end
    local out = {}
    for _, b in ipairs(content) do
        if type(b) == "table" and type(b.text) == "string" then out[#out + 1] = b.text end
    end
    return table.concat(out)
end

function M.parse_request(rec, req, ctx, path)
    local l = U.llm(rec)
    path = path or (ctx and ctx.path)
    l.operation = M.operation
    l.request_model = M.path_model(path) or U.str(req.modelId)
    l.streaming = M.is_streaming(req, path)
    l.params = U.params(req.inferenceConfig, INF)
    if U.capture_prompt(ctx) then
        local p = {}
        if type(req.system) == "table" then
            p[#p + 1] = { role = "system", content = blocks_text(req.system) }
        end
        if type(req.messages) == "table" then
            for _, m in ipairs(req.messages) do
                if type(m) == "table" then
                    p[#p + 1] = { role = U.str(m.role) or "user", content = blocks_text(m.content) }
                end
            end
        end
        l.prompt = p
    end
end

function M.prepare_request(req)
    return req, false
end

function M.extract_usage(u)
    if type(u) ~= "table" then return nil end
    local input = U.int(u.inputTokens)
    local read, write = U.int(u.cacheReadInputTokens), U.int(u.cacheWriteInputTokens)
    local r = {
        output_tokens = U.int(u.outputTokens), total_tokens = U.int(u.totalTokens),
        cached_input_tokens = read, cache_creation_input_tokens = write,
    }
    if input then r.input_tokens = input + (read or 0) + (write or 0) end
    return r, input
end

local function usage(rec, u)
    local r, raw = M.extract_usage(u)
    if r then
        U.set_usage(rec, r)
        if raw then rec.llm.provider_input_tokens = raw end
    end
end

function M.parse_response(rec, status, body, ctx)
    local l = U.llm(rec)
    if type(body) ~= "table" or (status and status >= 400) then return end
    l.response_model = l.response_model or l.request_model
    U.first_token(rec, ctx)
    if type(body.output) == "table" and type(body.output.message) == "table" then
        U.append_text(ctx, 0, blocks_text(body.output.message.content))
    end
    U.finish_reason(rec, 0, body.stopReason, ctx)
    usage(rec, body.usage)
end

function M.parse_event(rec, ev, ctx)
    if not ev or not ev.data or ev.data == "" then return end
    local l = U.llm(rec)
    if ev.message_type == "exception" or ev.message_type == "error" then
        if ctx then ctx.error = { type = ev.event, message = ev.data } end
        return
    end
    local obj = U.decode(ev.data)
    if type(obj) ~= "table" then return end
    local t = ev.event
    l.response_model = l.response_model or l.request_model
    if t == "contentBlockDelta" then
        U.first_token(rec, ctx)
        if type(obj.delta) == "table" then
            U.append_text(ctx, U.int(obj.contentBlockIndex) and 0 or 0, U.str(obj.delta.text))
        end
    elseif t == "messageStop" then
        U.finish_reason(rec, 0, obj.stopReason, ctx)
    elseif t == "metadata" then
        usage(rec, obj.usage)
        if ctx then ctx.done = true end
    end
end

function M.error_type(status)
    local T = { [400] = "ValidationException", [403] = "AccessDeniedException",
                [404] = "ResourceNotFoundException", [429] = "ThrottlingException",
                [503] = "ServiceUnavailableException" }
    return T[status] or (status and status >= 500 and "InternalServerException") or "ValidationException"
end

function M.error_body(_, message)
    return { message = message }
end

return M
