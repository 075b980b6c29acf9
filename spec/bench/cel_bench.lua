-- spec/bench/cel_bench.lua -- µs per evaluation of the guide's Jaeger fields.add block
-- SPDX-License-Identifier: MIT
-- Usage: lua5.4 spec/bench/cel_bench.lua [iterations]
-- Each iteration builds the activation for a fresh OpenAI request record and evaluates the six
-- attributes (gen_ai.operation.name ... gen_ai.usage.prompt_tokens) through cel.compile_fields.

local root = ((arg and arg[0] or ""):match("^(.*)/spec/bench/[^/]*$") or ".")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;"
    .. package.path

local cel = require "lunagate.cel"
local context = require "lunagate.context"
local make_rec = require "cel.openai_rec"

local JAEGER = {
    { "gen_ai.operation.name", '"chat"' },
    { "gen_ai.system", "llm.provider" },
    { "gen_ai.request.model", "llm.request_model" },
    { "gen_ai.response.model", "llm.response_model" },
    { "gen_ai.usage.completion_tokens", "llm.output_tokens" },
    { "gen_ai.usage.prompt_tokens", "llm.input_tokens" },
}

local fe = assert(cel.compile_fields(JAEGER))
local n = tonumber(arg and arg[1]) or 200000

-- records are prepared up front: the record belongs to the request, not to CEL
local recs = {}
for i = 1, 1000 do
    local rec = make_rec()
    -- token counts differ per request, as they do in real traffic
    rec.llm.input_tokens, rec.llm.output_tokens = 20 + i % 97, 100 + i % 389
    recs[i] = rec
end

local out = fe:eval(context.activation(recs[1]))
assert(#out == 6 and out[6][2] == recs[1].llm.input_tokens, "unexpected result")

local function run(iter)
    local t0 = os.clock()
    for i = 1, iter do
        local rec = recs[i % 1000 + 1]
        fe:eval(context.activation(rec))
    end
    return (os.clock() - t0) / iter * 1e6
end

run(n // 10)                                  -- warm up
local best = math.huge
for _ = 1, 3 do
    local us = run(n)
    if us < best then best = us end
end
print(string.format("cel jaeger block (6 fields, activation included): %.2f us/eval (best of 3 x %d)",
    best, n))

-- reference: the same output built by hand-written Lua (no CEL), to judge the machine's speed
local function by_hand(iter)
    local t0 = os.clock()
    for i = 1, iter do
        local l = recs[i % 1000 + 1].llm
        local _ = { { "gen_ai.operation.name", "chat" }, { "gen_ai.system", l.provider },
                    { "gen_ai.request.model", l.request_model },
                    { "gen_ai.response.model", l.response_model },
                    { "gen_ai.usage.completion_tokens", l.output_tokens },
                    { "gen_ai.usage.prompt_tokens", l.input_tokens } }
    end
    return (os.clock() - t0) / iter * 1e6
end
local ref = math.huge
for _ = 1, 3 do ref = math.min(ref, by_hand(n)) end
print(string.format("reference (same list built by hand, no CEL): %.2f us", ref))
