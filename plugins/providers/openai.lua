-- plugins/providers/openai.lua -- provider data: OpenAI (api.openai.com)
--
-- Provider module shape (read by lunagate/llm/init.lua):
--   name, identity (rec.llm.provider), config_key (key under `provider:` in the `ai:` backend)
--   fields = { allowed config keys = "string"|"table"|..., }, required = { keys }
--   host, port, tls, base_path          -- defaults (hostOverride / pathPrefix replace them)
--   endpoint(pconf) -> host, port, tls, base_path       (optional; computed defaults)
--   formats = { <client route type> = <upstream wire protocol module name> }
--   paths = { <route type> = suffix appended to base_path }
--   path(pconf, route, model, streaming, base) -> path   (optional; overrides `paths`)
--   auth = "bearer" | "x-api-key" | "x-goog-api-key" | "api-key" | "sigv4" | function
--   prepare_body(route, body_table, pconf, model) -> changed   (optional body tweaks)
return {
    name = "openai",
    identity = "openai",
    config_key = "openAI",
    fields = { model = "string", moderation = "table" },
    host = "api.openai.com", port = 443, tls = true,
    base_path = "/v1",
    formats = {
        completions = "openai_chat", responses = "openai_responses",
        embeddings = "openai_embeddings", models = "models",
    },
    paths = {
        completions = "/chat/completions", responses = "/responses",
        embeddings = "/embeddings", models = "/models",
    },
    auth = "bearer",
}
