-- plugins/providers/azure.lua -- provider data: Azure OpenAI / Azure AI Foundry
-- Shape: see plugins/providers/openai.lua. Host <resourceName>.openai.azure.com (resourceType
-- openAI) or <resourceName>.services.ai.azure.com (foundry, aiServices). apiVersion "v1"
-- (the default) uses /openai/v1/<op> with the model in the body; any other apiVersion uses
-- deployment paths /openai/deployments/<model>/<op>?api-version=<apiVersion>. Key: api-key.
local M = {
    name = "azure",
    identity = "azure",
    config_key = "azure",
    fields = { model = "string", resourceName = "string", resourceType = "string",
               apiVersion = "string", projectName = "string" },
    required = { "resourceName" },
    one_of = { resourceType = { "openAI", "foundry", "aiServices" } },
    port = 443, tls = true,
    formats = {
        completions = "openai_chat", responses = "openai_responses",
        embeddings = "openai_embeddings", models = "models",
    },
    ops = { completions = "/chat/completions", responses = "/responses",
            embeddings = "/embeddings", models = "/models" },
}

function M.endpoint(pconf)
    local suffix = (pconf.resourceType == "foundry" or pconf.resourceType == "aiServices")
        and ".services.ai.azure.com" or ".openai.azure.com"
    return pconf.resourceName .. suffix, 443, true, "/openai"
end

function M.path(pconf, route, model, _, base)
    local v = pconf.apiVersion or "v1"
    if v == "v1" or route == "models" or route == "responses" then
        return base .. "/v1" .. M.ops[route]
    end
    return base .. "/deployments/" .. model .. M.ops[route] .. "?api-version=" .. v
end

function M.auth(key, up)
    up.headers_set["api-key"] = key
    up.headers_remove[#up.headers_remove + 1] = "authorization"
end

return M
