-- plugins/providers/vertex.lua -- provider data: Google Vertex AI ({region}-aiplatform.googleapis.com)
-- Shape: see plugins/providers/openai.lua. Gemini models natively (publishers/google) or through
-- the OpenAI-compatible endpoint (endpoints/openapi); Claude models through Anthropic Messages
-- (publishers/anthropic ... :rawPredict / :streamRawPredict, body gets anthropic_version and
-- loses `model`). backendAuth.key is an OAuth access token sent as Bearer.
local M = {
    name = "vertex",
    identity = "gcp.vertex_ai",
    config_key = "vertex",
    fields = { model = "string", region = "string", projectId = "string" },
    required = { "projectId" },
    port = 443, tls = true,
    formats = {
        completions = "openai_chat", generateContent = "gemini", messages = "anthropic_messages",
    },
    auth = "bearer",
    anthropic_version = "vertex-2023-10-16",
}

function M.endpoint(pconf)
    local region = pconf.region or "global"
    local host = region == "global" and "aiplatform.googleapis.com"
        or (region .. "-aiplatform.googleapis.com")
    return host, 443, true, "/v1/projects/" .. pconf.projectId .. "/locations/" .. region
end

function M.path(_, route, model, streaming, base)
    if route == "generateContent" then
        return base .. "/publishers/google/models/" .. model
            .. (streaming and ":streamGenerateContent" or ":generateContent")
    elseif route == "messages" then
        return base .. "/publishers/anthropic/models/" .. model
            .. (streaming and ":streamRawPredict" or ":rawPredict")
    end
    return base .. "/endpoints/openapi/chat/completions"
end

function M.prepare_body(route, body)
    if route == "messages" then
        body.model = nil
        if body.anthropic_version == nil then body.anthropic_version = M.anthropic_version end
        return true
    end
    return false
end

return M
