-- plugins/providers/gemini.lua -- provider data: Google Gemini API (generativelanguage.googleapis.com)
-- Shape: see plugins/providers/openai.lua. Native generateContent / streamGenerateContent
-- (model in the path, key in x-goog-api-key) and the OpenAI-compatible endpoint under
-- /v1beta/openai (key as Bearer).
local M = {
    name = "gemini",
    identity = "gcp.gemini",
    config_key = "gemini",
    fields = { model = "string" },
    host = "generativelanguage.googleapis.com", port = 443, tls = true,
    base_path = "/v1beta",
    formats = {
        completions = "openai_chat", embeddings = "openai_embeddings",
        generateContent = "gemini", models = "models",
    },
    paths = {
        completions = "/openai/chat/completions", embeddings = "/openai/embeddings",
        models = "/openai/models",
    },
}

function M.path(_, route, model, streaming, base)
    if route == "generateContent" then
        return base .. "/models/" .. model .. (streaming and ":streamGenerateContent" or ":generateContent")
    end
    return base .. M.paths[route]
end

-- Native API routes (generateContent, countTokens passthrough, ...) take x-goog-api-key; the
-- OpenAI-compatible ones (completions, embeddings, models) take a Bearer token.
local OPENAI_COMPAT = { completions = true, embeddings = true, models = true }

function M.auth(key, up, _, route)
    if not OPENAI_COMPAT[route] then
        up.headers_set["x-goog-api-key"] = key
        up.headers_remove[#up.headers_remove + 1] = "authorization"
    else
        up.headers_set["authorization"] = "Bearer " .. key
    end
end

return M
