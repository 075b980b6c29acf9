-- plugins/providers/custom.lua -- provider data: any OpenAI-compatible server (vLLM, Ollama, Groq, ...)
-- Shape: see plugins/providers/openai.lua.
-- Config: custom: { model?, providerOverride?, baseUrl?: "http://127.0.0.1:11434/v1",
--                   formats?: [{type: completions|messages|responses|embeddings, path?}] }
-- Without baseUrl the backend needs hostOverride (plain HTTP unless backendTLS is set).
-- Default formats: completions, responses, embeddings (+ models).
local M = {
    name = "custom",
    identity = "custom",
    config_key = "custom",
    fields = { model = "string", providerOverride = "string", baseUrl = "string", formats = "table" },
    base_path = "/v1",
    port = 80, tls = false,
    formats = {
        completions = "openai_chat", responses = "openai_responses",
        embeddings = "openai_embeddings", models = "models",
    },
    paths = {
        completions = "/chat/completions", responses = "/responses", embeddings = "/embeddings",
        messages = "/messages", models = "/models",
    },
    auth = "bearer",
}

local PROTO = {
    completions = "openai_chat", responses = "openai_responses", embeddings = "openai_embeddings",
    messages = "anthropic_messages",
}

function M.parse_base_url(url)
    local scheme, rest = url:match("^(https?)://(.+)$")
    if not scheme then return nil, "baseUrl: expected http:// or https:// URL" end
    local hostport, path = rest:match("^([^/]+)(.*)$")
    if not hostport then return nil, "baseUrl: missing host" end
    local host, port = hostport:match("^%[(.+)%]:(%d+)$")
    if not host then host, port = hostport:match("^([^:]+):(%d+)$") end
    if not host then host = hostport:match("^%[(.+)%]$") or hostport end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    path = path:gsub("/+$", "")
    return { host = host, port = port, tls = scheme == "https", base = path }
end

function M.check(pconf)
    if pconf.baseUrl then
        local b, err = M.parse_base_url(pconf.baseUrl)
        if not b then return nil, err end
    end
    if pconf.formats ~= nil then
        if type(pconf.formats) ~= "table" then return nil, "formats: expected a list" end
        for i, f in ipairs(pconf.formats) do
            if type(f) ~= "table" or not PROTO[f.type] then
                return nil, "formats[" .. i .. "].type: expected one of: "
                    .. "completions, messages, responses, embeddings"
            end
        end
    end
    return true
end

function M.identity_of(pconf)
    return pconf.providerOverride or M.identity
end

function M.endpoint(pconf)
    if pconf.baseUrl then
        local b = M.parse_base_url(pconf.baseUrl)
        return b.host, b.port, b.tls, b.base
    end
    return nil, 80, false, M.base_path
end

function M.formats_of(pconf)
    if not pconf.formats then return M.formats end
    local f = { models = "models" }
    for _, x in ipairs(pconf.formats) do f[x.type] = PROTO[x.type] end
    return f
end

function M.path(pconf, route, _, _, base)
    for _, f in ipairs(pconf.formats or {}) do
        if f.type == route and f.path then return f.path end
    end
    return base .. (M.paths[route] or "")
end

return M
