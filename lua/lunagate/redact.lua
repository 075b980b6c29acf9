-- lunagate.redact -- what must never leave the gateway: credential headers, credential
-- query parameters, and any copy of their values inside other strings. Shared by the access
-- log and the span attributes (the C log formatter in src/runtime.c applies the same query
-- parameter list).
-- SPDX-License-Identifier: MIT
local M = {}

M.REDACTED = "<redacted>"
M.SENSITIVE_HEADERS = { "authorization", "proxy-authorization", "cookie", "set-cookie",
                        "x-api-key", "api-key", "x-goog-api-key" }
M.SENSITIVE = {}
for _, h in ipairs(M.SENSITIVE_HEADERS) do M.SENSITIVE[h] = true end
-- query parameters whose values are credentials
M.SECRET_PARAMS = { key = true, api_key = true, apikey = true, ["api-key"] = true,
                    ["x-api-key"] = true, ["x-goog-api-key"] = true, access_token = true,
                    token = true, client_secret = true, password = true, sig = true }
local SECRET_PARAMS = M.SECRET_PARAMS

local function pattern_escape(s)
    return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- http.path with credential query parameters replaced.
function M.path(path)
    local q = path:find("?", 1, true)
    if not q then return path end
    local query = path:sub(q + 1):gsub("([^=&]+)=([^&#]*)", function(k)
        if SECRET_PARAMS[k:lower()] then return k .. "=" .. M.REDACTED end
        return nil
    end)
    return path:sub(1, q) .. query
end

-- The strings to hide for one sensitive header value: the value and its credential parts
-- ("Bearer <token>" -> <token>, "a=<v>; b=<w>" -> <v>, <w>), longest first so a token inside a
-- longer value is replaced by the longer match. Cached per value (values repeat per client).
local TOKENS, ntokens = {}, 0

function M.tokens_of(v)
    local out = TOKENS[v]
    if out then return out end
    out = { v }
    for tok in v:gmatch("[^%s,;]+") do
        if #tok >= 8 and tok ~= v then out[#out + 1] = tok end
        local val = tok:match("=(.+)$")
        if val and #val >= 8 then out[#out + 1] = val end
    end
    table.sort(out, function(a, b) return #a > #b end)
    if ntokens >= 1024 then TOKENS, ntokens = {}, 0 end
    TOKENS[v], ntokens = out, ntokens + 1
    return out
end

-- The secret strings of `rec` (longest first): sensitive header values and their credential
-- parts, and the values of credential query parameters. `sensitive` is a set of lowercase
-- header names (default M.SENSITIVE).
function M.secrets_of(rec, sensitive)
    sensitive = sensitive or M.SENSITIVE
    local out, lists = {}, 0
    for _, hs in ipairs({ rec.request_headers, rec.response_headers }) do
        if type(hs) == "table" then
            for name, v in pairs(hs) do
                -- the record's header names are lowercase (contract); others are lowered
                if type(name) == "string" and type(v) == "string" and #v > 0
                    and (sensitive[name] or (name:find("%u") and sensitive[name:lower()])) then
                    local toks = M.tokens_of(v)
                    if lists == 0 then
                        out = toks          -- the common case: one credential header, no copy
                    else
                        if lists == 1 then out = { table.unpack(out) } end
                        for i = 1, #toks do out[#out + 1] = toks[i] end
                    end
                    lists = lists + 1
                end
            end
        end
    end
    local path = rec.path
    if type(path) == "string" and path:find("?", 1, true) then
        for k, v in path:gmatch("[?&]([^=&]+)=([^&#]*)") do
            if SECRET_PARAMS[k:lower()] and #v >= 4 then
                if lists <= 1 then out = { table.unpack(out) } end
                out[#out + 1] = v
                lists = 2
            end
        end
    end
    if lists > 1 then table.sort(out, function(a, b) return #a > #b end) end
    return out
end

-- `v` with every secret replaced; tables are copied, and keys naming a sensitive header get
-- M.REDACTED whatever their value.
function M.scrub(v, secrets, sensitive, depth)
    sensitive = sensitive or M.SENSITIVE
    depth = depth or 0
    local t = type(v)
    if t == "string" then
        for i = 1, #secrets do
            local s = secrets[i]
            if v:find(s, 1, true) then v = v:gsub(pattern_escape(s), M.REDACTED) end
        end
        return v
    end
    if t ~= "table" or depth > 32 then return v end
    local out = {}
    for k, x in pairs(v) do
        if type(k) == "string" and sensitive[k:lower()] then
            out[k] = M.REDACTED
        else
            out[k] = M.scrub(x, secrets, sensitive, depth + 1)
        end
    end
    return out
end

return M
