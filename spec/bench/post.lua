-- post.lua -- wrk script for the bench's `llm` scenario: POSTs a small OpenAI chat
-- completions request (non-streaming) on every request.
-- SPDX-License-Identifier: MIT
-- luacheck: globals wrk
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-client-key"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},'
    .. '{"role":"user","content":"Say hello in five words."}],"max_tokens":32,"temperature":0.2}'
