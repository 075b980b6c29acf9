-- plugins/telemetry/phoenix.lua -- tracing preset: the guide's Phoenix (Arize) `fields.add`
-- block, OpenInference conventions
-- SPDX-License-Identifier: MIT
--
-- `config.tracing.preset: phoenix` yields exactly the attributes of the guide's Phoenix
-- ConfigMap: span named "openai.chat", openinference.span.kind=LLM, llm.system, the
-- messages flattened to llm.input_messages.<i>.message.role|content and
-- llm.output_messages.<i>.message.role|content (zero-based), and llm.token_count.*.
-- A preset is a helper module, not a chained plugin: no priority, no phases.
return {
    name = "phoenix",
    version = "0.1.0",
    schema = { fields = {} },
    defaults = { otlpProtocol = "grpc" },
    fields = {
        { "span.name", '"openai.chat"' },
        { "openinference.span.kind", '"LLM"' },
        { "llm.system", "llm.provider" },
        { "llm.input_messages", 'flatten_recursive(llm.prompt.map(c, {"message": c}))' },
        { "llm.output_messages",
          'flatten_recursive(llm.completion.map(c, {"role":"assistant", "content": c}))' },
        { "llm.token_count.completion", "llm.output_tokens" },
        { "llm.token_count.prompt", "llm.input_tokens" },
        { "llm.token_count.total", "llm.total_tokens" },
    },
}
