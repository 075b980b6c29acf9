-- lunagate/context.lua -- CEL activation built lazily from the request record (`rec`)
-- SPDX-License-Identifier: MIT
--
-- context.activation(rec) returns a table whose top-level CEL variables (request, response, llm,
-- mcp, source, backend, proxy, jwt, apiKey, basicAuth, env) are computed on first use and then
-- cached in the activation. Nested objects are lazy maps: a field is computed when an expression
-- reads it. A variable or field that the record does not have is absent, so CEL reports
-- "no such key" / "undeclared reference" and fields.add leaves the entry out.
-- `llm` answers to both spellings: the guide's snake_case (llm.request_model, llm.input_tokens)
-- and agentgateway's camelCase (llm.requestModel, llm.inputTokens). Token counts are CEL ints.

local cel = require "lunagate.cel"
local V = require "lunagate.cel.values"

local mtype, tointeger, rawget, rawset, setmetatable = math.type, math.tointeger, rawget,
    rawset, setmetatable

local M = {}

local SRC = cel.ACT_SRC         -- private key: the source table (cel reads rec through it)

local function int_of(v)
    if mtype(v) == "float" then return tointeger(v) or v end
    return v
end

local function sorted_keys(getters, t)
    local keys = {}
    for k in pairs(getters) do
        if t[k] ~= nil then keys[#keys + 1] = k end
    end
    table.sort(keys)
    return keys
end

-- Metatable for a lazy CEL map over a source value: getters[name](src) computes a field;
-- `listed` (optional) restricts which names iteration/toJson show.
local function lazy_map(getters, listed)
    local mt = { __celtype = "map" }
    mt.__index = function(t, k)
        local g = getters[k]
        if g == nil then return nil end
        local v = g(rawget(t, SRC))
        if v ~= nil then rawset(t, k, v) end
        return v
    end
    mt.__celkeys = function(t)
        if listed then
            local keys = {}
            for _, k in ipairs(listed) do
                if t[k] ~= nil then keys[#keys + 1] = k end
            end
            return keys
        end
        return sorted_keys(getters, t)
    end
    return mt
end
M.lazy_map = lazy_map

local function new(mt, src) return setmetatable({ [SRC] = src }, mt) end

-- ---- helpers over rec ----

local function split_target(path)
    if not path then return nil, nil end
    local q = path:find("?", 1, true)
    if q then return path:sub(1, q - 1), path:sub(q + 1) end
    return path, nil
end

local function split_hostport(addr)
    if type(addr) ~= "string" then return nil, nil end
    local h, p = addr:match("^%[(.*)%]:(%d+)$")
    if not h then h, p = addr:match("^([^:]*):(%d+)$") end
    if not h then return addr, nil end
    return h, tointeger(tonumber(p))
end

local function ts_of(us)
    if mtype(us) ~= "integer" then return nil end
    local t = cel.functions.timestamp(us // 1000000)        -- range-checked
    return V.ts(t.s, (us % 1000000) * 1000)
end

local function headers_of(h)
    if type(h) ~= "table" then return nil end
    return h
end

-- ---- request / response ----

local REQUEST = lazy_map({
    method = function(rec) return rec.method end,
    path = function(rec) return (split_target(rec.path)) end,
    pathAndQuery = function(rec) return rec.path end,
    host = function(rec) return rec.host end,
    scheme = function(rec) return rec.scheme or "http" end,
    version = function(rec) return rec.version end,
    headers = function(rec) return headers_of(rec.request_headers) or {} end,
    uri = function(rec)
        if not rec.path then return nil end
        if rec.path:find("^%a[%w+.-]*://") then return rec.path end
        return (rec.scheme or "http") .. "://" .. (rec.host or "") .. rec.path
    end,
    body = function(rec)
        local b = rec.request_body
        if type(b) == "string" then return cel.bytes(b) end
        return nil
    end,
    startTime = function(rec) return ts_of(rec.start_us) end,
    endTime = function(rec) return ts_of(rec.end_us) end,
})

local RESPONSE = lazy_map({
    code = function(rec) return rec.status end,
    status = function(rec) return rec.status end,
    headers = function(rec) return headers_of(rec.response_headers) or {} end,
    body = function(rec)
        local b = rec.response_body
        if type(b) == "string" then return cel.bytes(b) end
        return nil
    end,
})

-- ---- llm ----

local TOKEN = {
    input_tokens = true, output_tokens = true, total_tokens = true, cached_input_tokens = true,
    cache_creation_input_tokens = true, reasoning_tokens = true,
}
local ALIAS = {
    requestModel = "request_model", responseModel = "response_model", responseId = "response_id",
    inputTokens = "input_tokens", outputTokens = "output_tokens", totalTokens = "total_tokens",
    cachedInputTokens = "cached_input_tokens",
    cacheCreationInputTokens = "cache_creation_input_tokens",
    reasoningTokens = "reasoning_tokens", finishReasons = "finish_reasons",
    timeToFirstToken = "ttft", timePerOutputToken = "tpot", serviceTier = "service_tier",
    toolCalls = "tool_calls",
}
local INT_PARAMS = { max_tokens = true, max_completion_tokens = true, seed = true, n = true,
                     top_k = true, dimensions = true }

local function llm_get(t, k)
    local l = rawget(t, SRC)
    local sk = ALIAS[k] or k
    local v = l[sk]
    if v == nil then
        if sk == "total_tokens" then
            local i, o = l.input_tokens, l.output_tokens
            if i and o then v = int_of(i) + int_of(o) end
        elseif sk == "streaming" then
            v = false
        end
        if v == nil then return nil end
    end
    if TOKEN[sk] then
        return int_of(v)
    elseif sk == "params" and type(v) == "table" then
        local p = {}
        for pk, pv in pairs(v) do
            if INT_PARAMS[pk] then pv = int_of(pv) end
            p[pk] = pv
        end
        rawset(t, k, p)                       -- cached: it is a fresh table
        return p
    end
    return v                                  -- not cached: recomputing is cheaper than rehashing
end

local LLM_LISTED = { "provider", "operation", "requestModel", "responseModel", "responseId",
                     "streaming", "inputTokens", "outputTokens", "totalTokens",
                     "cachedInputTokens", "cacheCreationInputTokens", "reasoningTokens",
                     "finishReasons", "params", "prompt", "completion", "timeToFirstToken",
                     "timePerOutputToken" }
local LLM = {
    __celtype = "map",
    __index = llm_get,
    __celkeys = function(t)
        local keys = {}
        for _, k in ipairs(LLM_LISTED) do
            if t[k] ~= nil then keys[#keys + 1] = k end
        end
        return keys
    end,
}

-- ---- mcp ----

local function sub_map(fields)
    -- builds a small plain map, or nil when every field is absent
    local m, any = {}, false
    for k, v in pairs(fields) do
        if v ~= nil then m[k] = v; any = true end
    end
    return any and m or nil
end

local MCP = lazy_map({
    methodName = function(m) return m.method end,
    method = function(m) return m.method end,
    sessionId = function(m) return m.session_id end,
    session_id = function(m) return m.session_id end,
    tool = function(m)
        if not m.tool_name then return nil end
        return sub_map({ name = m.tool_name, target = m.target, arguments = m.tool_arguments,
                         result = m.tool_result, error = m.error_message })
    end,
    prompt = function(m)
        if not m.prompt_name then return nil end
        return sub_map({ name = m.prompt_name, target = m.target })
    end,
    resource = function(m)
        if not (m.resource or m.resource_uri) then return nil end
        return sub_map({ name = m.resource or m.resource_uri, uri = m.resource_uri,
                         type = m.resource_type, target = m.target })
    end,
    target = function(m) return m.target end,
    error = function(m)
        if not (m.error_code or m.error_message) then return nil end
        return sub_map({ code = int_of(m.error_code), message = m.error_message })
    end,
}, { "methodName", "sessionId", "tool", "prompt", "resource" })

-- ---- source / backend / proxy / env ----

local SOURCE = lazy_map({
    address = function(rec) return (split_hostport(rec.src_addr)) end,
    port = function(rec) local _, p = split_hostport(rec.src_addr); return p end,
})

local BACKEND_TYPE = { llm = "ai", mcp = "mcp", http = "service" }
local BACKEND = lazy_map({
    name = function(rec) return rec.backend end,
    type = function(rec) return BACKEND_TYPE[rec.protocol] or "unknown" end,
    protocol = function(rec) return rec.protocol or "http" end,
    endpoint = function(rec) return rec.endpoint end,
})

local function ns_name(s)
    if type(s) ~= "string" then return nil end
    local ns, name = s:match("^([^/]*)/(.*)$")
    return { namespace = ns or "", name = name or s }
end

local PROXY = lazy_map({
    bind = function(rec) return rec.bind end,
    gateway = function(rec) return ns_name(rec.gateway) end,
    listener = function(rec) return rec.listener and { name = rec.listener } or nil end,
    route = function(rec)
        local r = ns_name(rec.route)
        if r and rec.route_rule then r.rule = rec.route_rule end
        return r
    end,
})

local ENV_MT = {
    __celtype = "map",
    __index = function(_, k)
        if type(k) ~= "string" then return nil end
        if k == "podName" then return os.getenv("POD_NAME") or os.getenv("HOSTNAME") end
        if k == "namespace" then return os.getenv("POD_NAMESPACE") end
        if k == "gateway" then return os.getenv("GATEWAY") end
        return os.getenv(k)
    end,
    __celkeys = function() return {} end,
}
local ENV = setmetatable({}, ENV_MT)

-- ---- direct path resolvers (fast path for scalar fields; same results as the lazy maps) ----

local function llm_resolver(sk)
    local d = { "llm", sk, int = TOKEN[sk] or nil }
    if sk == "total_tokens" then
        d.default = function(l)
            local i, o = l.input_tokens, l.output_tokens
            if i and o then return int_of(i) + int_of(o) end
            return nil
        end
    elseif sk == "streaming" then
        d.default = function() return false end
    end
    return d
end
for _, sk in ipairs({ "provider", "operation", "request_model", "response_model", "response_id",
                      "streaming", "input_tokens", "output_tokens", "total_tokens",
                      "cached_input_tokens", "cache_creation_input_tokens", "reasoning_tokens",
                      "ttft", "tpot", "prompt", "completion" }) do
    cel.resolvers["llm." .. sk] = llm_resolver(sk)
end
for camel, sk in pairs(ALIAS) do
    if cel.resolvers["llm." .. sk] then cel.resolvers["llm." .. camel] = cel.resolvers["llm." .. sk] end
end
cel.resolvers["request.method"] = function(rec) return rec.method end
cel.resolvers["request.host"] = function(rec) return rec.host end
cel.resolvers["request.version"] = function(rec) return rec.version end
cel.resolvers["request.pathAndQuery"] = function(rec) return rec.path end
cel.resolvers["response.code"] = function(rec) return rec.status end
cel.resolvers["response.status"] = function(rec) return rec.status end

-- ---- activation ----

local VARS = {
    request = function(rec) return new(REQUEST, rec) end,
    response = function(rec)
        if rec.status == nil and rec.response_headers == nil then return nil end
        return new(RESPONSE, rec)
    end,
    llm = function(rec)
        if type(rec.llm) ~= "table" then return nil end
        return setmetatable({ [SRC] = rec.llm }, LLM)
    end,
    mcp = function(rec)
        if type(rec.mcp) ~= "table" then return nil end
        return new(MCP, rec.mcp)
    end,
    source = function(rec)
        if not rec.src_addr then return nil end
        return new(SOURCE, rec)
    end,
    backend = function(rec)
        if not rec.backend and not rec.protocol then return nil end
        return new(BACKEND, rec)
    end,
    proxy = function(rec) return new(PROXY, rec) end,
    jwt = function(rec) return type(rec.jwt) == "table" and rec.jwt or nil end,
    apiKey = function(rec) return type(rec.api_key) == "table" and rec.api_key or nil end,
    basicAuth = function(rec) return type(rec.basic_auth) == "table" and rec.basic_auth or nil end,
    env = function() return ENV end,
    metadata = function(rec) return type(rec.metadata) == "table" and rec.metadata or nil end,
}
M.variables = VARS

local ACT = {
    __index = function(t, k)
        local b = VARS[k]
        if b == nil then return nil end
        local v = b(rawget(t, SRC))
        if v ~= nil then rawset(t, k, v) end
        return v
    end,
}

-- Returns the CEL activation for request record `rec` (borrowed; read lazily, so fields filled
-- in later, e.g. by the log phase, are seen as long as they were not read before).
function M.activation(rec)
    if type(rec) ~= "table" then error("context.activation: rec must be a table", 2) end
    return setmetatable({ [SRC] = rec }, ACT)
end

return M
