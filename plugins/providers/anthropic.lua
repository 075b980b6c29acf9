-- plugins/providers/anthropic.lua -- provider data: Anthropic (api.anthropic.com)
-- Shape: see plugins/providers/openai.lua. OpenAI chat clients are translated to Messages.
-- The key goes in x-api-key with anthropic-version (2023-06-01 unless the client sent one);
-- an OAuth token (sk-ant-oat...) goes in Authorization: Bearer instead.
local M = {
    name = "anthropic",
    identity = "anthropic",
    config_key = "anthropic",
    fields = { model = "string" },
    host = "api.anthropic.com", port = 443, tls = true,
    base_path = "/v1",
    formats = {
        completions = "anthropic_messages",        -- translated (openai_chat -> anthropic_messages)
        messages = "anthropic_messages", models = "models",
    },
    paths = { completions = "/messages", messages = "/messages", models = "/models" },
    version = "2023-06-01",
}

function M.auth(key, up, req_headers)
    if key:sub(1, 10) == "sk-ant-oat" then
        up.headers_set["authorization"] = "Bearer " .. key
    else
        up.headers_set["x-api-key"] = key
        up.headers_remove[#up.headers_remove + 1] = "authorization"
    end
    if not (req_headers and req_headers["anthropic-version"]) then
        up.headers_set["anthropic-version"] = M.version
    end
end

return M
