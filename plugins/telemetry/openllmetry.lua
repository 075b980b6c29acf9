-- plugins/telemetry/openllmetry.lua -- tracing preset: the guide's OpenLLMetry (Traceloop)
-- `fields.add` block, legacy flattened conventions
-- SPDX-License-Identifier: MIT
--
-- `config.tracing.preset: openllmetry` yields exactly the attributes of the guide's
-- OpenLLMetry ConfigMap: span named "openai.chat", gen_ai.prompt.<i>.role|content,
-- gen_ai.completion.<i>.role|content, gen_ai.request.<param>, usage and llm.is_streaming.
-- A preset is a helper module, not a chained plugin: no priority, no phases.
return {
    name = "openllmetry",
    version = "0.1.0",
    schema = { fields = {} },
    defaults = { otlpProtocol = "grpc" },
    fields = {
        { "span.name", '"openai.chat"' },
        { "gen_ai.operation.name", '"chat"' },
        { "gen_ai.system", "llm.provider" },
        { "gen_ai.prompt", "flatten_recursive(llm.prompt)" },
        { "gen_ai.completion",
          'flatten_recursive(llm.completion.map(c, {"role":"assistant", "content": c}))' },
        { "gen_ai.usage.completion_tokens", "llm.output_tokens" },
        { "gen_ai.usage.prompt_tokens", "llm.input_tokens" },
        { "gen_ai.request.model", "llm.request_model" },
        { "gen_ai.response.model", "llm.response_model" },
        { "gen_ai.request", "flatten(llm.params)" },
        { "llm.is_streaming", "llm.streaming" },
    },
}
