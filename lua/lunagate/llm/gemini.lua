-- lunagate/llm/gemini.lua -- wire protocol: Gemini native generateContent / streamGenerateContent
-- (also Vertex AI publishers/google models). Interface: see lunagate/llm/openai_chat.lua.
-- The model lives in the path: .../models/<model>:generateContent. is_streaming(req, path)
-- looks at the path. A streamGenerateContent response without ?alt=sse is one JSON array;
-- parse_response accepts it and applies each element as an event.
local U = require "lunagate.llm.util"

local M = { name = "gemini", operation = "chat" }

local function strip(path)
    return ((path or ""):gsub("%?.*$", ""))
end

function M.matches(path)
    path = strip(path)
    return path:find("/models/[^/]+:generateContent$") ~= nil
        or path:find("/models/[^/]+:streamGenerateContent$") ~= nil
end

function M.path_model(path)
    return strip(path):match("/models/([^/:]+):%a+$")
end

function M.is_streaming(_, path)
    return strip(path):find(":streamGenerateContent$") ~= nil
end

local GEN = {
    { "temperature", "temperature" }, { "topP", "top_p" }, { "topK", "top_k" },
    { "maxOutputTokens", "max_tokens" }, { "candidateCount", "n" }, { "seed", "seed" },
    { "presencePenalty", "presence_penalty" }, { "frequencyPenalty", "frequency_penalty" },
}

local function parts_text(c)
    if type(c) ~= "table" or type(c.parts) ~= "table" then return "" end
    local out = {}
    for _, p in ipairs(c.parts) do
        if type(p) == "table" and type(p.text) == "string" and not p.thought then out[#out + 1] = p.text end
    end
    return table.concat(out)
end

-- ctx.path (or the 4th argument) carries the request path for the model and streaming flag.
function M.parse_request(rec, req, ctx, path)
    local l = U.llm(rec)
    path = path or (ctx and ctx.path)
    l.operation = M.operation
    l.request_model = M.path_model(path) or U.str(req.model)
    l.streaming = M.is_streaming(req, path)
    l.params = U.params(req.generationConfig, GEN)
    if U.capture_prompt(ctx) then
        local p = {}
        local si = req.systemInstruction or req.system_instruction
        if type(si) == "table" then p[#p + 1] = { role = "system", content = parts_text(si) } end
        if type(req.contents) == "table" then
            for _, c in ipairs(req.contents) do
                if type(c) == "table" then
                    local role = c.role == "model" and "assistant" or (U.str(c.role) or "user")
                    p[#p + 1] = { role = role, content = parts_text(c) }
                end
            end
        end
        l.prompt = p
    end
end

-- opts.model rewrites the path model (the caller builds the path); the body is unchanged.
function M.prepare_request(req)
    return req, false
end

function M.extract_usage(u)
    if type(u) ~= "table" then return nil end
    local cand = U.int(u.candidatesTokenCount)
    local thoughts = U.int(u.thoughtsTokenCount)
    local out = cand
    if thoughts then out = (cand or 0) + thoughts end
    return {
        input_tokens = U.int(u.promptTokenCount),
        output_tokens = out,
        total_tokens = U.int(u.totalTokenCount),
        cached_input_tokens = U.int(u.cachedContentTokenCount),
        reasoning_tokens = thoughts,
    }
end

local function apply(rec, obj, ctx, streaming)
    local l = U.llm(rec)
    l.response_model = l.response_model or U.str(obj.modelVersion)
    l.response_id = l.response_id or U.str(obj.responseId)
    if type(obj.candidates) == "table" then
        for i, c in ipairs(obj.candidates) do
            local idx = U.int(c.index) or (i - 1)
            if streaming then U.first_token(rec, ctx) end
            U.append_text(ctx, idx, parts_text(c.content))
            U.finish_reason(rec, idx, c.finishReason, ctx)
        end
    end
    local u = M.extract_usage(obj.usageMetadata)
    if u then U.set_usage(rec, u) end
end

function M.parse_response(rec, status, body, ctx)
    U.llm(rec)
    if type(body) ~= "table" or (status and status >= 400) then return end
    if body[1] ~= nil then
        for _, obj in ipairs(body) do
            if type(obj) == "table" then apply(rec, obj, ctx, true) end
        end
        return
    end
    U.first_token(rec, ctx)
    apply(rec, body, ctx, false)
end

function M.parse_event(rec, ev, ctx)
    local data = ev and ev.data
    if not data or data == "" then return end
    local obj = U.decode(data)
    if type(obj) ~= "table" then return end
    if obj.error ~= nil then
        if ctx then ctx.error = obj.error end
        return
    end
    apply(rec, obj, ctx, true)
end

local STATUS = {
    [400] = "INVALID_ARGUMENT", [401] = "UNAUTHENTICATED", [403] = "PERMISSION_DENIED",
    [404] = "NOT_FOUND", [429] = "RESOURCE_EXHAUSTED", [500] = "INTERNAL", [503] = "UNAVAILABLE",
    [504] = "DEADLINE_EXCEEDED",
}

function M.error_type(status)
    return STATUS[status] or (status and status >= 500 and "INTERNAL") or "INVALID_ARGUMENT"
end

function M.error_body(status, message, etype)
    return { error = { code = status, message = message, status = etype or M.error_type(status) } }
end

return M
