-- spec/01-lua/llm_protocols_spec.lua -- wire protocol modules: interface, timing, usage, helpers
-- luacheck: max line length 160
local cjson = require "cjson"
local llm = require "lunagate.llm"
local U = require "lunagate.llm.util"

local NAMES = { "openai_chat", "openai_responses", "openai_embeddings", "anthropic_messages",
                "gemini", "bedrock_converse" }

describe("wire protocol modules", function()
    it("all have the same interface", function()
        for _, n in ipairs(NAMES) do
            local m = llm.protocols[n]
            assert.equal(n, m.name)
            for _, f in ipairs({ "matches", "is_streaming", "parse_request", "prepare_request",
                                 "parse_response", "parse_event", "extract_usage", "error_body" }) do
                assert.is_function(m[f], n .. "." .. f)
            end
        end
    end)

    it("match their paths and only theirs", function()
        local paths = {
            openai_chat = "/v1/chat/completions?x=1",
            openai_responses = "/v1/responses",
            openai_embeddings = "/v1/embeddings",
            anthropic_messages = "/v1/messages",
            gemini = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            bedrock_converse = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
        }
        for n, p in pairs(paths) do
            for _, other in ipairs(NAMES) do
                assert.equal(n == other, llm.protocols[other].matches(p), other .. " on " .. p)
            end
        end
    end)

    it("detect streaming from the body or the path", function()
        assert.is_true(llm.protocols.openai_chat.is_streaming({ stream = true }))
        assert.is_false(llm.protocols.openai_chat.is_streaming({ stream = false }))
        assert.is_true(llm.protocols.gemini.is_streaming({}, "/v1beta/models/m:streamGenerateContent?alt=sse"))
        assert.is_false(llm.protocols.gemini.is_streaming({}, "/v1beta/models/m:generateContent"))
        assert.is_true(llm.protocols.bedrock_converse.is_streaming({}, "/model/m/converse-stream"))
        assert.equal("a:b/c", llm.protocols.bedrock_converse.path_model("/model/a%3Ab%2Fc/converse"))
    end)

    it("build errors in each client's shape", function()
        assert.same({ error = { message = "bad", type = "invalid_request_error", param = cjson.null, code = cjson.null } },
            llm.protocols.openai_chat.error_body(400, "bad"))
        assert.same({ type = "error", error = { type = "invalid_request_error", message = "bad" } },
            llm.protocols.anthropic_messages.error_body(400, "bad"))
        assert.same({ type = "error", error = { type = "api_error", message = "down" } },
            llm.protocols.anthropic_messages.error_body(502, "down"))
        assert.same({ error = { code = 400, message = "bad", status = "INVALID_ARGUMENT" } },
            llm.protocols.gemini.error_body(400, "bad"))
        assert.same({ message = "bad" }, llm.protocols.bedrock_converse.error_body(400, "bad"))
    end)

    it("keep prompt and completion only when captured", function()
        local rec = {}
        local req = { model = "m", messages = { { role = "user", content = "secret prompt" } } }
        llm.protocols.openai_chat.parse_request(rec, req, { capture = {} })
        assert.is_nil(rec.llm.prompt)
        local ctx = { capture = { completion = false } }
        llm.protocols.openai_chat.parse_response(rec, 200, { choices = { { index = 0,
            message = { content = "secret answer" }, finish_reason = "stop" } } }, ctx)
        U.finish(rec, ctx, 1)
        assert.is_nil(rec.llm.completion)
        llm.protocols.openai_chat.parse_request(rec, req, { capture = { prompt = true } })
        assert.same({ { role = "user", content = "secret prompt" } }, rec.llm.prompt)
    end)

    it("keep sampling parameters as floats and counts as integers", function()
        local rec = {}
        llm.protocols.openai_chat.parse_request(rec, cjson.decode(
            '{"model":"m","messages":[],"temperature":1,"max_tokens":100,"seed":7,"top_p":1}'))
        assert.equal("float", math.type(rec.llm.params.temperature))
        assert.equal("float", math.type(rec.llm.params.top_p))
        assert.equal("integer", math.type(rec.llm.params.max_tokens))
        assert.equal("integer", math.type(rec.llm.params.seed))
    end)

    it("turn decoded float usage into integers", function()
        local u = llm.protocols.openai_chat.extract_usage(cjson.decode(
            '{"prompt_tokens":10,"completion_tokens":5.0,"total_tokens":1.5e1}'))
        assert.equal("integer", math.type(u.input_tokens))
        assert.equal("integer", math.type(u.output_tokens))
        assert.equal(15, u.total_tokens)
        assert.equal("integer", math.type(u.total_tokens))
    end)

    it("normalize Anthropic input tokens to include cache reads and writes", function()
        local u, raw = llm.protocols.anthropic_messages.extract_usage({ input_tokens = 5,
            cache_read_input_tokens = 100, cache_creation_input_tokens = 20, output_tokens = 3 })
        assert.equal(125, u.input_tokens)
        assert.equal(128, u.total_tokens)
        assert.equal(5, raw.input)
    end)
end)

describe("token timing", function()
    -- feeds OpenAI chunks one by one, with the clock advancing 10 ms per event
    local function run(chunks)
        local t = 1000000
        local b = assert(llm.new_backend({ name = "o", provider = { openAI = {} } }, nil,
            { clock = function() return t end }))
        local rec = { start_us = 1000000 }
        local ctx = b:on_request(rec, { method = "POST", path = "/v1/chat/completions", headers = {},
            body = '{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}' })
        t = 1100000                                -- headers arrive at +100 ms
        b:on_response_headers(ctx, 200, { ["content-type"] = "text/event-stream" })
        for _, c in ipairs(chunks) do
            t = t + 10000
            b:on_body(ctx, "data: " .. cjson.encode(c) .. "\n\n", false)
        end
        t = t + 10000
        b:on_body(ctx, "data: [DONE]\n\n", true)
        b:on_complete(ctx, t)
        return rec, t
    end

    local function chunk(content, usage)
        return { id = "c", model = "m", choices = usage and {} or { { index = 0, delta = { content = content } } },
                 usage = usage }
    end

    it("takes the first token from the first chunk and computes ttft and tpot", function()
        local rec, end_us = run({ chunk("a"), chunk("b"), chunk("c"),
            chunk(nil, { prompt_tokens = 1, completion_tokens = 3, total_tokens = 4 }) })
        assert.equal(1110000, rec.llm.first_token_us)
        assert.near(0.11, rec.llm.ttft, 1e-9)
        assert.near((end_us - 1110000) / 1e6 / 2, rec.llm.tpot, 1e-9)
        assert.equal(3, rec.llm.output_tokens)
    end)

    it("leaves tpot unset with a single output token", function()
        local rec = run({ chunk("a"), chunk(nil, { prompt_tokens = 1, completion_tokens = 1, total_tokens = 2 }) })
        assert.is_nil(rec.llm.tpot)
        assert.is_number(rec.llm.ttft)
    end)

    it("uses the first content_block_delta for Anthropic streams", function()
        local rec = {}
        local t = 0
        local ctx = { now = function() return t end }
        local A = llm.protocols.anthropic_messages
        t = 5
        A.parse_event(rec, { event = "message_start", data = '{"type":"message_start",'
            .. '"message":{"id":"i","model":"m","usage":{"input_tokens":1,"output_tokens":1}}}' }, ctx)
        t = 7
        A.parse_event(rec, { event = "ping", data = '{"type":"ping"}' }, ctx)
        assert.is_nil(rec.llm.first_token_us)
        t = 9
        A.parse_event(rec, { event = "content_block_delta", data = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}' }, ctx)
        assert.equal(9, rec.llm.first_token_us)
    end)
end)

describe("lunagate.llm.util.patch_object", function()
    it("replaces, inserts and removes top-level members and keeps the rest byte for byte", function()
        local s = '{"model": "a", "messages":[{"model":"nested","x":"}]\\""}], "n": 1.50}'
        assert.equal('{"stream_options":{"include_usage":true},"model": "b", "messages":[{"model":"nested","x":"}]\\""}], "n": 1.50}',
            U.patch_object(s, { model = '"b"', stream_options = '{"include_usage":true}' }))
        assert.equal('{"messages":[{"model":"nested","x":"}]\\""}], "n": 1.50}', U.patch_object(s, nil, { "model" }))
        assert.equal('{"model": "a", "messages":[{"model":"nested","x":"}]\\""}]}', U.patch_object(s, nil, { "n" }))
        assert.equal('{"k":1}', U.patch_object('{}', { k = "1" }))
        assert.is_nil(U.patch_object('[1,2]', { k = "1" }))
        assert.is_nil(U.patch_object('{"a":', { k = "1" }))
    end)
end)
