-- plugins/providers/bedrock.lua -- provider data: Amazon Bedrock Runtime (Converse API)
-- Shape: see plugins/providers/openai.lua. Host bedrock-runtime.<region>.amazonaws.com, path
-- /model/<url-encoded model id>/converse[-stream]. Auth: backendAuth.key (a Bedrock API key)
-- as Bearer, otherwise SigV4 (service "bedrock") with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
-- AWS_SESSION_TOKEN; the region is the provider's `region`, else AWS_REGION.
local sigv4 = require "lunagate.llm.sigv4"

local M = {
    name = "bedrock",
    identity = "aws.bedrock",
    config_key = "bedrock",
    fields = { model = "string", region = "string", guardrailIdentifier = "string",
               guardrailVersion = "string" },
    port = 443, tls = true,
    formats = { converse = "bedrock_converse" },
    service = "bedrock",
    sign_without_key = true,     -- auth() runs without backendAuth.key (SigV4 from the environment)
}

local function region_of(pconf, getenv)
    return pconf.region or (getenv or os.getenv)("AWS_REGION") or "us-east-1"
end

function M.endpoint(pconf, getenv)
    return "bedrock-runtime." .. region_of(pconf, getenv) .. ".amazonaws.com", 443, true, ""
end

function M.path(_, _, model, streaming, base)
    return base .. "/model/" .. sigv4.uri_encode(model) .. (streaming and "/converse-stream" or "/converse")
end

-- key: Bedrock API key or nil. info = { pconf, method, body, now_us, getenv }
function M.auth(key, up, _, _, info)
    if key then
        up.headers_set["authorization"] = "Bearer " .. key
        return true
    end
    local cred, err = sigv4.from_env(info and info.getenv)
    if not cred then return nil, err end
    local path, query = up.path:match("^([^?]*)%??(.*)$")
    local h = sigv4.sign({
        method = info.method or "POST", host = up.host, path = path, query = query,
        body = up.body or "", region = region_of(info.pconf or {}, info.getenv),
        service = M.service, access_key = cred.access_key, secret_key = cred.secret_key,
        session_token = cred.session_token, time = (info.now_us or os.time() * 1000000) // 1000000,
    })
    for k, v in pairs(h) do up.headers_set[k] = v end
    return true
end

return M
