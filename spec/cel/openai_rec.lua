-- spec/cel/openai_rec.lua -- a realistic request record for an OpenAI chat completion
-- SPDX-License-Identifier: MIT
-- Shared by spec/01-lua/cel_*_spec.lua and spec/bench/cel_bench.lua. Returns a fresh record on
-- each call (the activation caches per record).

return function()
    return {
        start_us = 1764151200123456, end_us = 1764151201927456, duration_ms = 1804,
        bind = "bind/3000", gateway = "default/default", listener = "listener0",
        route = "default/route0", backend = "api.openai.com:443", endpoint = "api.openai.com:443",
        src_addr = "10.0.9.76:38655",
        method = "POST", host = "localhost:3000", path = "/v1/chat/completions?trace=1",
        version = "HTTP/1.1", status = 200, reason = "Upstream", protocol = "llm",
        request_bytes = 312, response_bytes = 845,
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736", span_id = "00f067aa0ba902b7", sampled = true,
        request_headers = {
            ["content-type"] = "application/json", ["user-agent"] = "OpenAI/JS 6.49.0",
            ["x-request-id"] = "req-123", authorization = "Bearer sk-secret",
        },
        response_headers = { ["content-type"] = "application/json", ["x-request-id"] = "req-123" },
        llm = {
            provider = "openai", operation = "chat",
            request_model = "gpt-4o-mini", response_model = "gpt-4o-mini-2024-07-18",
            response_id = "chatcmpl-abc123", streaming = false,
            params = { temperature = 0.7, top_p = 1.0, max_tokens = 256, seed = 42 },
            prompt = {
                { role = "system", content = "You are a helpful assistant." },
                { role = "user", content = "Say hello in French." },
            },
            completion = { "Bonjour !" },
            input_tokens = 39, output_tokens = 181, total_tokens = 220,
            cached_input_tokens = 0, reasoning_tokens = 0, finish_reasons = { "stop" },
            first_token_us = 1764151200523456, ttft = 0.4, tpot = 0.0077,
        },
    }
end
