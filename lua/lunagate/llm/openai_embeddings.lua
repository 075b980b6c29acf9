-- lunagate/llm/openai_embeddings.lua -- wire protocol: OpenAI embeddings (/v1/embeddings)
-- Interface: see lunagate/llm/openai_chat.lua. Never streams.
local U = require "lunagate.llm.util"
local chat = require "lunagate.llm.openai_chat"

local M = { name = "openai_embeddings", operation = "embeddings" }

function M.matches(path)
    path = (path or ""):gsub("%?.*$", "")
    return path:sub(-11) == "/embeddings"
end

function M.is_streaming()
    return false
end

local PARAMS = { { "dimensions", "dimensions" }, { "encoding_format", "encoding_format" } }

function M.parse_request(rec, req, ctx)
    local l = U.llm(rec)
    l.operation = M.operation
    l.request_model = U.str(req.model)
    l.streaming = false
    l.params = U.params(req, PARAMS)
    if U.capture_prompt(ctx) then
        local p = {}
        if type(req.input) == "string" then
            p[1] = { role = "user", content = req.input }
        elseif type(req.input) == "table" then
            for _, s in ipairs(req.input) do
                if type(s) == "string" then p[#p + 1] = { role = "user", content = s } end
            end
        end
        l.prompt = p
    end
end

M.prepare_request = require("lunagate.llm.openai_responses").prepare_request

function M.extract_usage(u)
    if type(u) ~= "table" then return nil end
    return { input_tokens = U.int(u.prompt_tokens), total_tokens = U.int(u.total_tokens) }
end

function M.parse_response(rec, status, body, ctx)
    local l = U.llm(rec)
    if type(body) ~= "table" or (status and status >= 400) then return end
    l.response_model = U.str(body.model) or l.response_model
    U.first_token(rec, ctx)
    local u = M.extract_usage(body.usage)
    if u then U.set_usage(rec, u) end
end

function M.parse_event()
end

M.error_type = chat.error_type
M.error_body = chat.error_body

return M
