-- spec/03-plugins/providers/mock_spec.lua -- the local mock provider (no network)
-- luacheck: max line length 160
local cjson = require "cjson"
local llm = require "lunagate.llm"
local mock = require "providers.mock"
local sse = require "lunagate.llm.sse"

local T0 = 1700000000 * 1000000

local function backend(conf, capture)
    local clock = { now = T0 }
    local b = assert(llm.new_backend({ name = "mock", provider = { mock = conf or {} } }, nil,
        { clock = function() return clock.now end, capture = capture }))
    return b, clock
end

local function call(b, path, body, headers)
    local rec = { start_us = T0 }
    local ctx = b:on_request(rec, { method = "POST", path = path, headers = headers or {},
        body = body and cjson.encode(body) or "" })
    return ctx, rec
end

-- Plays a local answer through the response hooks, like the C side does.
local function play(b, ctx, clock, step_us)
    local r = ctx.respond
    b:on_response_headers(ctx, r.status, r.headers)
    local out = {}
    if r.events then
        for i, e in ipairs(r.events) do
            clock.now = clock.now + math.floor(e.delay_ms * 1000) + (step_us or 0)
            out[#out + 1] = b:on_body(ctx, e.chunk, i == #r.events)
        end
    else
        clock.now = clock.now + (step_us or 0)
        out[1] = b:on_body(ctx, r.body, true)
    end
    b:on_complete(ctx, clock.now)
    return table.concat(out)
end

local USER = "Explain the theory of relativity in simple words please, for a child of ten years old"
local CHAT = { model = "gpt-4o-mini", messages = {
    { role = "system", content = "You are kind." }, { role = "user", content = USER } } }

describe("mock provider", function()
    it("answers OpenAI chat completions locally with deterministic text and usage", function()
        local b, clock = backend(nil, { completion = true })
        local ctx, rec = call(b, "/v1/chat/completions", CHAT)
        assert.is_nil(ctx.upstream)
        assert.equal(200, ctx.respond.status)
        local body = cjson.decode(ctx.respond.body)
        local text = 'Mock reply to: "Explain the theory of relativity in simple words please, for a child ..."'
        assert.equal(text, body.choices[1].message.content)
        assert.equal("assistant", body.choices[1].message.role)
        assert.equal("stop", body.choices[1].finish_reason)
        assert.equal("chat.completion", body.object)
        assert.equal("gpt-4o-mini", body.model)
        -- input = ceil(chars / 4) over all messages; output = whitespace-led words of the reply
        local chars = #"You are kind." + #USER
        assert.equal((chars + 3) // 4, body.usage.prompt_tokens)
        assert.equal(#mock.tokens(text), body.usage.completion_tokens)
        assert.equal(16, body.usage.completion_tokens)
        assert.equal(body.usage.prompt_tokens + 16, body.usage.total_tokens)
        play(b, ctx, clock, 500)
        assert.equal("mock", rec.llm.provider)
        assert.equal((chars + 3) // 4, rec.llm.input_tokens)
        assert.equal(16, rec.llm.output_tokens)
        assert.equal("integer", math.type(rec.llm.total_tokens))
        assert.same({ text }, rec.llm.completion)
        assert.equal(body.id, rec.llm.response_id)
    end)

    it("is deterministic for the same request", function()
        local b = backend()
        local a = call(b, "/v1/chat/completions", CHAT).respond.body
        local c = call(b, "/v1/chat/completions", CHAT).respond.body
        assert.same(cjson.decode(a), cjson.decode(c))
        local other = call(b, "/v1/chat/completions", { model = "m", messages = { { role = "user", content = "hi" } } })
        assert.not_equal(cjson.decode(a).id, cjson.decode(other.respond.body).id)
        assert.equal('Mock reply to: "hi"', cjson.decode(other.respond.body).choices[1].message.content)
    end)

    it("streams OpenAI chunks with the configured per-token delay, usage and [DONE]", function()
        local b, clock = backend({ tokenDelay = "20ms" }, { completion = true })
        local ctx, rec = call(b, "/v1/chat/completions", { model = "m", stream = true,
            messages = { { role = "user", content = "one two three" } } })
        local r = ctx.respond
        assert.equal("text/event-stream", r.headers["content-type"])
        local text = 'Mock reply to: "one two three"'
        local ntok = #mock.tokens(text)
        assert.equal(ntok + 4, #r.events)               -- role, tokens, finish, usage, [DONE]
        assert.equal(0, r.events[1].delay_ms)
        for i = 2, ntok + 1 do assert.equal(20, r.events[i].delay_ms) end
        local raw = play(b, ctx, clock)
        local evs = assert(sse.decoder():feed(raw))
        assert.equal("[DONE]", evs[#evs].data)
        local usage = cjson.decode(evs[#evs - 1].data)
        assert.matches('"choices":%[%]', evs[#evs - 1].data)
        assert.equal(ntok, usage.usage.completion_tokens)
        local acc = {}
        for i = 2, ntok + 1 do acc[#acc + 1] = cjson.decode(evs[i].data).choices[1].delta.content end
        assert.equal(text, table.concat(acc))
        -- the record is filled by the same parser as a real upstream
        assert.same({ text }, rec.llm.completion)
        assert.equal(ntok, rec.llm.output_tokens)
        assert.equal(T0, rec.llm.first_token_us)        -- the role chunk is the first parsed chunk
        -- tpot = (end - first token) / (output - 1); tokens arrive 20 ms apart after the role chunk
        assert.near(0.020 * ntok / (ntok - 1), rec.llm.tpot, 1e-9)
        assert.is_true(rec.llm.streaming)
    end)

    it("omits the usage chunk only when the client opted out", function()
        local b = backend()
        local ctx = call(b, "/v1/chat/completions", { model = "m", stream = true,
            stream_options = { include_usage = false }, messages = { { role = "user", content = "x" } } })
        for _, e in ipairs(ctx.respond.events) do assert.is_nil(e.chunk:find('"usage"', 1, true)) end
    end)

    it("answers Anthropic Messages, streaming and not", function()
        local b, clock = backend({ model = "claude-mock" }, { completion = true })
        local req = { model = "claude-3-5-haiku", max_tokens = 100, system = "Be brief.",
                      messages = { { role = "user", content = { { type = "text", text = "Hello Claude" } } } } }
        local ctx, rec = call(b, "/v1/messages", req)
        local body = cjson.decode(ctx.respond.body)
        assert.equal("message", body.type)
        assert.equal("claude-mock", body.model)
        assert.equal('Mock reply to: "Hello Claude"', body.content[1].text)
        assert.equal("end_turn", body.stop_reason)
        assert.equal((#"Be brief." + #"Hello Claude" + 3) // 4, body.usage.input_tokens)
        play(b, ctx, clock)
        assert.equal("claude-mock", rec.llm.response_model)
        assert.equal("claude-mock", rec.llm.request_model)     -- `model` overrides, as for every provider
        req.stream = true
        local sctx, srec = call(b, "/v1/messages", req)
        local names = {}
        for _, e in ipairs(sctx.respond.events) do names[#names + 1] = e.chunk:match("^event: (%S+)") end
        assert.equal("message_start", names[1])
        assert.equal("message_stop", names[#names])
        play(b, sctx, clock)
        assert.equal(body.usage.output_tokens, srec.llm.output_tokens)
        assert.equal(body.usage.input_tokens, srec.llm.input_tokens)
        assert.same({ 'Mock reply to: "Hello Claude"' }, srec.llm.completion)
        assert.same({ "end_turn" }, srec.llm.finish_reasons)
    end)

    it("uses configured text and lists its model in both shapes", function()
        local b = backend({ text = "Fixed answer.", model = "demo" })
        local ctx = call(b, "/v1/chat/completions", CHAT)
        assert.equal("Fixed answer.", cjson.decode(ctx.respond.body).choices[1].message.content)
        assert.equal("demo", cjson.decode(ctx.respond.body).model)
        local m = call(b, "/v1/models", nil)
        assert.same({ object = "list", data = { { id = "demo", object = "model", created = 0, owned_by = "lunagate" } } },
            cjson.decode(m.respond.body))
        local a = call(b, "/v1/models", nil, { ["anthropic-version"] = "2023-06-01" })
        assert.equal("model", cjson.decode(a.respond.body).data[1].type)
    end)

    it("validates requests like a real provider", function()
        local b = backend()
        local ctx = call(b, "/v1/chat/completions", { messages = {} })
        assert.equal(400, ctx.respond.status)
        assert.equal("missing model", cjson.decode(ctx.respond.body).error.message)
        ctx = call(b, "/v1/embeddings", { model = "e", input = "x" })
        assert.equal(400, ctx.respond.status)
    end)

    it("parses token delays", function()
        assert.equal(20, mock.parse_duration("20ms"))
        assert.equal(1500, mock.parse_duration("1.5s"))
        assert.equal(0.5, mock.parse_duration("500us"))
        assert.equal(0, mock.parse_duration(nil))
        assert.is_nil((mock.parse_duration("soon")))
    end)
end)
