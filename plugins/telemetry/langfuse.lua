-- plugins/telemetry/langfuse.lua -- tracing preset: the guide's Langfuse `fields.add` block
-- SPDX-License-Identifier: MIT
--
-- `config.tracing.preset: langfuse` yields exactly the attributes of the guide's Langfuse
-- ConfigMap: prompt and completion (JSON strings, so Langfuse shows them as input/output),
-- usage under the names Langfuse maps to input/output, and the request parameters flattened
-- to gen_ai.request.<param> (Langfuse's model parameters). Langfuse takes OTLP/HTTP only, so
-- the preset makes `http` the default protocol; endpoint and the Basic auth header still come
-- from the config (otlpEndpoint: https://cloud.langfuse.com/api/public/otel).
-- A preset is a helper module, not a chained plugin: no priority, no phases.
return {
    name = "langfuse",
    version = "0.1.0",
    schema = { fields = {} },
    defaults = { otlpProtocol = "http" },
    fields = {
        { "gen_ai.operation.name", '"chat"' },
        { "gen_ai.system", "llm.provider" },
        { "gen_ai.prompt", "llm.prompt" },
        { "gen_ai.completion", 'llm.completion.map(c, {"role":"assistant", "content": c})' },
        { "gen_ai.usage.completion_tokens", "llm.output_tokens" },
        { "gen_ai.usage.prompt_tokens", "llm.input_tokens" },
        { "gen_ai.request.model", "llm.request_model" },
        { "gen_ai.response.model", "llm.response_model" },
        { "gen_ai.request", "flatten(llm.params)" },
    },
}
