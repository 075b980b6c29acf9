-- plugins/telemetry/jaeger.lua -- tracing preset: the guide's Jaeger `fields.add` block
-- SPDX-License-Identifier: MIT
--
-- `config.tracing.preset: jaeger` yields exactly the attributes of the guide's Jaeger
-- ConfigMap (GenAI keys as Jaeger tags, including the pre-1.28 usage names
-- gen_ai.usage.prompt_tokens / completion_tokens that older dashboards query).
-- A preset is a helper module, not a chained plugin: no priority, no phases.
return {
    name = "jaeger",
    version = "0.1.0",
    schema = { fields = {} },
    defaults = { otlpProtocol = "grpc" },
    fields = {
        { "gen_ai.operation.name", '"chat"' },
        { "gen_ai.system", "llm.provider" },
        { "gen_ai.request.model", "llm.request_model" },
        { "gen_ai.response.model", "llm.response_model" },
        { "gen_ai.usage.completion_tokens", "llm.output_tokens" },
        { "gen_ai.usage.prompt_tokens", "llm.input_tokens" },
    },
}
