-- lunagate/llm/sigv4.lua -- AWS Signature Version 4 request signing (header form)
--
-- local sigv4 = require "lunagate.llm.sigv4"
-- local hdrs = sigv4.sign({
--     method = "POST", host = "bedrock-runtime.us-east-1.amazonaws.com",
--     path = "/model/x/converse",          -- as sent on the wire (already percent-encoded)
--     query = "a=b" | nil, body = "..." | "",
--     region = "us-east-1", service = "bedrock",
--     access_key = ..., secret_key = ..., session_token = nil | "...",
--     time = <unix seconds>,               -- or amz_date = "20150830T123600Z"
--     headers = { ["content-type"] = "..." } | nil,   -- extra lowercase headers to sign
--     double_encode = true,                -- canonical URI re-encodes the path (all but S3)
-- })
-- -> { authorization = "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...",
--      ["x-amz-date"] = "...", ["x-amz-security-token"] = ... }  (headers to set)
-- sigv4.from_env() -> { access_key, secret_key, session_token, region } | nil, err
local sha = require "lunagate.llm.sha256"

local M = {}

local function uri_encode(s, keep_slash)
    return (s:gsub("[^%w%-%._~" .. (keep_slash and "/" or "") .. "]", function(c)
        return string.format("%%%02X", c:byte())
    end))
end

local function unescape(s)
    return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

function M.canonical_query(q)
    if not q or q == "" then return "" end
    local items = {}
    for pair in q:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=?(.*)$")
        items[#items + 1] = { uri_encode(unescape(k)), uri_encode(unescape(v)) }
    end
    table.sort(items, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[2] < b[2]
    end)
    local out = {}
    for i, kv in ipairs(items) do out[i] = kv[1] .. "=" .. kv[2] end
    return table.concat(out, "&")
end

function M.canonical_uri(path, double_encode)
    if path == nil or path == "" then return "/" end
    if double_encode == false then return path end
    return uri_encode(path, true)
end

-- The derived key only changes with the day, region and service: keep the last one.
local kcache = { id = nil, key = nil }

function M.signing_key(secret, date, region, service)
    local id = table.concat({ secret, date, region, service }, "\0")
    if kcache.id == id then return kcache.key end
    local k = sha.hmac_sha256("AWS4" .. secret, date)
    k = sha.hmac_sha256(k, region)
    k = sha.hmac_sha256(k, service)
    k = sha.hmac_sha256(k, "aws4_request")
    kcache.id, kcache.key = id, k
    return k
end

function M.sign(r)
    local amz_date = r.amz_date or os.date("!%Y%m%dT%H%M%SZ", r.time or os.time())
    local date = amz_date:sub(1, 8)
    local hdrs = {}
    for k, v in pairs(r.headers or {}) do hdrs[k:lower()] = v end
    hdrs.host = r.host
    hdrs["x-amz-date"] = amz_date
    if r.session_token then hdrs["x-amz-security-token"] = r.session_token end
    local names = {}
    for k in pairs(hdrs) do names[#names + 1] = k end
    table.sort(names)
    local canon_h = {}
    for i, k in ipairs(names) do
        local v = tostring(hdrs[k]):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " ")
        canon_h[i] = k .. ":" .. v .. "\n"
    end
    local signed = table.concat(names, ";")
    local creq = table.concat({
        r.method or "GET",
        M.canonical_uri(r.path, r.double_encode ~= false),
        M.canonical_query(r.query),
        table.concat(canon_h),
        signed,
        sha.hex(sha.sha256(r.body or "")),
    }, "\n")
    local scope = date .. "/" .. r.region .. "/" .. r.service .. "/aws4_request"
    local sts = "AWS4-HMAC-SHA256\n" .. amz_date .. "\n" .. scope .. "\n" .. sha.hex(sha.sha256(creq))
    local k = M.signing_key(r.secret_key, date, r.region, r.service)
    local sig = sha.hex(sha.hmac_sha256(k, sts))
    local out = {
        authorization = "AWS4-HMAC-SHA256 Credential=" .. r.access_key .. "/" .. scope
            .. ", SignedHeaders=" .. signed .. ", Signature=" .. sig,
        ["x-amz-date"] = amz_date,
    }
    if r.session_token then out["x-amz-security-token"] = r.session_token end
    return out, creq, sts
end

function M.from_env(getenv)
    getenv = getenv or os.getenv
    local ak, sk = getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
    if not ak or ak == "" or not sk or sk == "" then
        return nil, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"
    end
    local tok = getenv("AWS_SESSION_TOKEN")
    return { access_key = ak, secret_key = sk, session_token = (tok ~= "" and tok) or nil,
             region = getenv("AWS_REGION") or getenv("AWS_DEFAULT_REGION") }
end

M.uri_encode = uri_encode

return M
