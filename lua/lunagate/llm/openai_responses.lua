-- lunagate/llm/openai_responses.lua -- wire protocol: OpenAI Responses API (/v1/responses)
-- Interface: see lunagate/llm/openai_chat.lua.
local U = require "lunagate.llm.util"
local chat = require "lunagate.llm.openai_chat"

local M = { name = "openai_responses", operation = "chat" }

function M.matches(path)
    path = (path or ""):gsub("%?.*$", "")
    return path:sub(-10) == "/responses" or path:sub(-18) == "/responses/compact"
end

function M.is_streaming(req)
    return type(req) == "table" and req.stream == true
end

local PARAMS = {
    { "temperature", "temperature" }, { "top_p", "top_p" }, { "max_output_tokens", "max_tokens" },
    { "seed", "seed" },
}

function M.parse_request(rec, req, ctx)
    local l = U.llm(rec)
    l.operation = M.operation
    l.request_model = U.str(req.model)
    l.streaming = M.is_streaming(req)
    l.params = U.params(req, PARAMS)
    if type(req.reasoning) == "table" and type(req.reasoning.effort) == "string" then
        l.params = l.params or {}
        l.params.reasoning_effort = req.reasoning.effort
    end
    if U.capture_prompt(ctx) then
        local p = {}
        if type(req.instructions) == "string" then
            p[#p + 1] = { role = "system", content = req.instructions }
        end
        if type(req.input) == "string" then
            p[#p + 1] = { role = "user", content = req.input }
        elseif type(req.input) == "table" then
            for _, item in ipairs(req.input) do
                if type(item) == "table" and item.role then
                    p[#p + 1] = { role = U.str(item.role) or "user", content = U.content_text(item.content) }
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

function M.extract_usage(u)
    if type(u) ~= "table" then return nil end
    local id = type(u.input_tokens_details) == "table" and u.input_tokens_details or {}
    local od = type(u.output_tokens_details) == "table" and u.output_tokens_details or {}
    return {
        input_tokens = U.int(u.input_tokens),
        output_tokens = U.int(u.output_tokens),
        total_tokens = U.int(u.total_tokens),
        cached_input_tokens = U.int(id.cached_tokens),
        reasoning_tokens = U.int(od.reasoning_tokens),
    }
end

local function finish_of(resp)
    if resp.status == "completed" then return "stop" end
    if resp.status == "incomplete" then
        local r = type(resp.incomplete_details) == "table" and resp.incomplete_details.reason
        if r == "max_output_tokens" then return "length" end
        return U.str(r) or "incomplete"
    end
    return U.str(resp.status)
end

-- Applies a full response object (non-streaming body, or response.completed's `response`).
local function apply(rec, resp, ctx, collect_text)
    local l = U.llm(rec)
    l.response_model = U.str(resp.model) or l.response_model
    l.response_id = U.str(resp.id) or l.response_id
    if resp.status ~= "in_progress" and resp.status ~= "queued" then
        U.finish_reason(rec, 0, finish_of(resp), ctx)
    end
    if collect_text and type(resp.output) == "table" then
        for _, item in ipairs(resp.output) do
            if type(item) == "table" and item.type == "message" and type(item.content) == "table" then
                for _, c in ipairs(item.content) do
                    if type(c) == "table" and c.type == "output_text" then
                        U.append_text(ctx, 0, U.str(c.text))
                    end
                end
            end
        end
    end
    local u = M.extract_usage(resp.usage)
    if u then U.set_usage(rec, u) end
end

function M.parse_response(rec, status, body, ctx)
    U.llm(rec)
    if type(body) ~= "table" or (status and status >= 400) then return end
    U.first_token(rec, ctx)
    apply(rec, body, ctx, true)
end

function M.parse_event(rec, ev, ctx)
    local data = ev and ev.data
    if not data or data == "" or data == "[DONE]" then return end
    local obj = U.decode(data)
    if type(obj) ~= "table" then return end
    local t = U.str(obj.type) or ev.event
    local l = U.llm(rec)
    if t == "response.created" or t == "response.in_progress" then
        if type(obj.response) == "table" then
            l.response_model = l.response_model or U.str(obj.response.model)
            l.response_id = l.response_id or U.str(obj.response.id)
        end
    elseif t == "response.output_text.delta" then
        U.first_token(rec, ctx)
        U.append_text(ctx, 0, U.str(obj.delta))
    elseif t == "response.completed" or t == "response.incomplete" or t == "response.failed" then
        if type(obj.response) == "table" then apply(rec, obj.response, ctx, false) end
        if ctx then ctx.done = true end
    elseif t == "error" then
        if ctx then ctx.error = obj end
    elseif type(t) == "string" and t:find("delta", 1, true) then
        U.first_token(rec, ctx)
    end
end

M.error_type = chat.error_type
M.error_body = chat.error_body

return M
