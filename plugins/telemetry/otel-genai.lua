-- plugins/telemetry/otel-genai.lua -- tracing preset: OpenTelemetry GenAI semantic
-- conventions (v1.41) with the opt-in message content
-- SPDX-License-Identifier: MIT
--
-- The default span attributes already carry the GenAI keys (gen_ai.operation.name,
-- gen_ai.provider.name, models, response id, finish reasons, usage, request parameters).
-- This preset adds what the conventions leave opt-in, as JSON strings in the schema of
-- gen-ai-input-messages.json / gen-ai-output-messages.json:
--   gen_ai.input.messages   [{"role":..., "parts":[{"type":"text","content":...}]}, ...]
--   gen_ai.output.messages  [{"role":"assistant", "parts":[...], "finish_reason":...}, ...]
-- and names LLM spans "{gen_ai.operation.name} {gen_ai.request.model}" (e.g. "chat gpt-4o").
-- Reading llm.prompt / llm.completion turns their capture on. A request without an LLM
-- backend keeps the default name and attributes (the expressions fail and are left out).
-- A preset is a helper module, not a chained plugin: no priority, no phases.
return {
    name = "otel-genai",
    version = "0.1.0",
    schema = { fields = {} },
    defaults = { otlpProtocol = "grpc" },
    fields = {
        { "span.name", 'llm.operation + " " + llm.request_model' },
        { "gen_ai.input.messages",
          'toJson(llm.prompt.map(m, {"role": m.role, "parts": [{"type": "text", "content": m.content}]}))' },
        { "gen_ai.output.messages",
          'toJson(llm.completion.map(c, {"role": "assistant", "parts": [{"type": "text", "content": c}], '
              .. '"finish_reason": default(llm.finish_reasons[0], "stop")}))' },
    },
}
