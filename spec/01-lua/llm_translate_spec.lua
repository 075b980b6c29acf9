-- spec/01-lua/llm_translate_spec.lua -- OpenAI chat client <-> Anthropic Messages backend
-- luacheck: max line length 160
local T = require "lunagate.llm.translate.openai_anthropic"
local sse = require "lunagate.llm.sse"
local cjson = require "cjson"

local function events_of(s)
    local out = {}
    for _, e in ipairs(assert(sse.decoder():feed(s))) do
        out[#out + 1] = e.data == "[DONE]" and "[DONE]" or cjson.decode(e.data)
    end
    return out
end

local function aev(obj)
    return { event = obj.type, data = cjson.encode(obj) }
end

describe("translate openai -> anthropic: request", function()
    it("moves system/developer messages to system and sets a default max_tokens", function()
        local a = assert(T.request({
            model = "gpt-4o",
            messages = {
                { role = "system", content = "rule one" },
                { role = "developer", content = { { type = "text", text = "rule two" } } },
                { role = "user", content = "hi" },
            },
        }, { model = "claude-x" }))
        assert.equal("claude-x", a.model)
        assert.equal("rule one\n\nrule two", a.system)
        assert.equal(T.DEFAULT_MAX_TOKENS, a.max_tokens)
        assert.same({ { role = "user", content = { { type = "text", text = "hi" } } } }, a.messages)
    end)

    it("maps max tokens, stop, sampling, user and stream", function()
        local a = T.request({ model = "m", messages = { { role = "user", content = "x" } },
                              max_tokens = 10, stop = { "a", "b" }, temperature = 0.1, top_p = 0.5,
                              user = "u1", stream = true })
        assert.equal(10, a.max_tokens)
        assert.same({ "a", "b" }, a.stop_sequences)
        assert.equal(0.1, a.temperature)
        assert.equal(0.5, a.top_p)
        assert.same({ user_id = "u1" }, a.metadata)
        assert.is_true(a.stream)
        local b = T.request({ model = "m", messages = { { role = "user", content = "x" } },
                              max_tokens = 10, max_completion_tokens = 20, stop = "s" })
        assert.equal(20, b.max_tokens)
        assert.same({ "s" }, b.stop_sequences)
    end)

    it("translates tools, tool_choice, tool calls and tool results", function()
        local a = T.request({
            model = "m",
            tools = { { type = "function", ["function"] = { name = "get_weather", description = "d",
                        parameters = { type = "object", properties = { city = { type = "string" } },
                                       required = { "city" } } } } },
            tool_choice = { type = "function", ["function"] = { name = "get_weather" } },
            messages = {
                { role = "user", content = "weather?" },
                { role = "assistant", content = cjson.null, tool_calls = { {
                    id = "call_1", type = "function",
                    ["function"] = { name = "get_weather", arguments = "{\"city\":\"Paris\"}" } } } },
                { role = "tool", tool_call_id = "call_1", content = "sunny" },
                { role = "user", content = "thanks" },
            },
        })
        assert.same({ { name = "get_weather", description = "d", input_schema = {
            type = "object", properties = { city = { type = "string" } }, required = { "city" } } } }, a.tools)
        assert.same({ type = "tool", name = "get_weather" }, a.tool_choice)
        assert.same({ type = "tool_use", id = "call_1", name = "get_weather", input = { city = "Paris" } },
            a.messages[2].content[1])
        -- the tool result and the next user turn merge into one user message (roles alternate)
        assert.equal(3, #a.messages)
        assert.same({ type = "tool_result", tool_use_id = "call_1", content = "sunny" }, a.messages[3].content[1])
        assert.same({ type = "text", text = "thanks" }, a.messages[3].content[2])
        for tc, want in pairs({ auto = "auto", required = "any", none = "none" }) do
            local r = T.request({ model = "m", messages = { { role = "user", content = "x" } }, tool_choice = tc })
            assert.equal(want, r.tool_choice.type)
        end
    end)

    it("keeps empty JSON-schema arrays as arrays when encoding", function()
        local a = T.request({ model = "m", messages = { { role = "user", content = "x" } },
            tools = { { type = "function", ["function"] = { name = "f",
                parameters = cjson.decode('{"type":"object","properties":{},"required":[]}') } } } })
        assert.matches('"required":%[%]', T.encode_request(a))
    end)

    it("translates image_url parts", function()
        local a = T.request({ model = "m", messages = { { role = "user", content = {
            { type = "text", text = "what is this" },
            { type = "image_url", image_url = { url = "data:image/png;base64,iVBORw0KGgo=" } },
            { type = "image_url", image_url = { url = "https://example.com/cat.jpg" } },
        } } } })
        assert.same({ type = "image", source = { type = "base64", media_type = "image/png", data = "iVBORw0KGgo=" } },
            a.messages[1].content[2])
        assert.same({ type = "image", source = { type = "url", url = "https://example.com/cat.jpg" } },
            a.messages[1].content[3])
    end)

    it("rejects malformed requests with a message", function()
        local r, err = T.request({ model = "m" })
        assert.is_nil(r)
        assert.matches("messages", err)
        r, err = T.request({ model = "m", messages = { { role = "wizard", content = "x" } } })
        assert.is_nil(r)
        assert.matches("unsupported role", err)
    end)
end)

describe("translate anthropic -> openai: response", function()
    it("maps content, tool use, stop reason and usage", function()
        local o = T.response({
            id = "msg_1", type = "message", role = "assistant", model = "claude-x",
            content = { { type = "text", text = "Let me check." },
                        { type = "tool_use", id = "toolu_1", name = "get_weather", input = { city = "Paris" } } },
            stop_reason = "tool_use",
            usage = { input_tokens = 10, cache_read_input_tokens = 5, cache_creation_input_tokens = 2, output_tokens = 7 },
        }, { created = 123 })
        assert.equal("chat.completion", o.object)
        assert.equal(123, o.created)
        assert.equal("msg_1", o.id)
        assert.equal("claude-x", o.model)
        local c = o.choices[1]
        assert.equal("tool_calls", c.finish_reason)
        assert.equal("Let me check.", c.message.content)
        assert.equal("get_weather", c.message.tool_calls[1]["function"].name)
        assert.same({ city = "Paris" }, cjson.decode(c.message.tool_calls[1]["function"].arguments))
        assert.same({ prompt_tokens = 17, completion_tokens = 7, total_tokens = 24,
                      prompt_tokens_details = { cached_tokens = 5 } }, o.usage)
        assert.equal("integer", math.type(o.usage.prompt_tokens))
    end)

    it("maps every stop reason", function()
        assert.equal("stop", T.finish_reason("end_turn"))
        assert.equal("stop", T.finish_reason("stop_sequence"))
        assert.equal("length", T.finish_reason("max_tokens"))
        assert.equal("tool_calls", T.finish_reason("tool_use"))
        assert.equal("content_filter", T.finish_reason("refusal"))
        assert.is_nil(T.finish_reason(cjson.null))
    end)
end)

describe("translate anthropic -> openai: streaming", function()
    local START = { type = "message_start", message = { id = "msg_s", type = "message", role = "assistant",
        content = {}, model = "claude-x", usage = { input_tokens = 12, cache_read_input_tokens = 3, output_tokens = 1 } } }

    it("emits role, content, finish, usage chunks and [DONE]", function()
        local tr = T.stream({ created = 5 })
        local out = {}
        for _, e in ipairs({ START,
            { type = "content_block_start", index = 0, content_block = { type = "text", text = "" } },
            { type = "ping" },
            { type = "content_block_delta", index = 0, delta = { type = "text_delta", text = "Hel" } },
            { type = "content_block_delta", index = 0, delta = { type = "text_delta", text = "lo" } },
            { type = "content_block_stop", index = 0 },
            { type = "message_delta", delta = { stop_reason = "end_turn" }, usage = { output_tokens = 4 } },
            { type = "message_stop" } }) do
            out[#out + 1] = tr:feed(aev(e))
        end
        local raw = table.concat(out)
        assert.matches('"choices":%[%]', raw)               -- the usage chunk has an empty array
        assert.equal("data: [DONE]\n\n", raw:sub(-14))
        local evs = events_of(raw)
        assert.equal(6, #evs)
        assert.same({ role = "assistant", content = "" }, evs[1].choices[1].delta)
        assert.equal("chat.completion.chunk", evs[1].object)
        assert.equal("msg_s", evs[1].id)
        assert.equal("claude-x", evs[1].model)
        assert.equal(5, evs[1].created)
        assert.equal("Hel", evs[2].choices[1].delta.content)
        assert.equal("lo", evs[3].choices[1].delta.content)
        assert.equal("stop", evs[4].choices[1].finish_reason)
        assert.same({ prompt_tokens = 15, completion_tokens = 4, total_tokens = 19,
                      prompt_tokens_details = { cached_tokens = 3 } }, evs[5].usage)
        assert.equal("[DONE]", evs[6])
        assert.equal("", tr:feed(aev({ type = "message_stop" })))    -- nothing after the end
    end)

    it("streams tool calls with their index, id, name and argument deltas", function()
        local tr = T.stream({ created = 1 })
        local raw = tr:feed(aev(START))
            .. tr:feed(aev({ type = "content_block_start", index = 1,
                             content_block = { type = "tool_use", id = "toolu_9", name = "calc", input = {} } }))
            .. tr:feed(aev({ type = "content_block_delta", index = 1,
                             delta = { type = "input_json_delta", partial_json = "{\"x\":" } }))
            .. tr:feed(aev({ type = "content_block_delta", index = 1,
                             delta = { type = "input_json_delta", partial_json = "1}" } }))
            .. tr:feed(aev({ type = "message_delta", delta = { stop_reason = "tool_use" }, usage = { output_tokens = 9 } }))
        local evs = events_of(raw)
        local tc = evs[2].choices[1].delta.tool_calls[1]
        assert.same({ index = 0, id = "toolu_9", type = "function", ["function"] = { name = "calc", arguments = "" } }, tc)
        assert.equal("{\"x\":", evs[3].choices[1].delta.tool_calls[1]["function"].arguments)
        assert.equal("1}", evs[4].choices[1].delta.tool_calls[1]["function"].arguments)
        assert.equal("tool_calls", evs[5].choices[1].finish_reason)
    end)

    it("turns an error event into an OpenAI error chunk and ends the stream", function()
        local tr = T.stream({})
        local raw = tr:feed(aev({ type = "error", error = { type = "overloaded_error", message = "Overloaded" } }))
        local evs = events_of(raw)
        assert.equal("Overloaded", evs[1].error.message)
        assert.equal("server_error", evs[1].error.type)
        assert.equal("[DONE]", evs[2])
    end)
end)

describe("translate errors both ways", function()
    it("maps Anthropic errors to OpenAI error objects", function()
        local cases = {
            { 400, "invalid_request_error", 400, "invalid_request_error" },
            { 401, "authentication_error", 401, "authentication_error" },
            { 403, "permission_error", 403, "permission_error" },
            { 404, "not_found_error", 404, "not_found_error" },
            { 413, "request_too_large", 413, "invalid_request_error" },
            { 429, "rate_limit_error", 429, "rate_limit_error" },
            { 500, "api_error", 500, "server_error" },
            { 529, "overloaded_error", 503, "server_error" },
        }
        for _, c in ipairs(cases) do
            local st, body = T.error_to_openai(c[1], { type = "error", error = { type = c[2], message = "m" } })
            assert.equal(c[3], st)
            assert.equal(c[4], body.error.type)
            assert.equal("m", body.error.message)
            assert.equal(c[2], body.error.code)
        end
        local st, body = T.error_to_openai(502, "<html>bad gateway</html>")
        assert.equal(502, st)
        assert.equal("server_error", body.error.type)
    end)

    it("maps OpenAI errors to Anthropic error objects", function()
        local st, body = T.error_to_anthropic(429, { error = { message = "slow", type = "requests", code = "rate_limit_exceeded" } })
        assert.equal(429, st)
        assert.same({ type = "error", error = { type = "rate_limit_error", message = "slow" } }, body)
        body = select(2, T.error_to_anthropic(401,
            { error = { message = "bad key", type = "invalid_request_error", code = "invalid_api_key" } }))
        assert.equal("invalid_request_error", body.error.type)
        body = select(2, T.error_to_anthropic(503, {}))
        assert.equal("api_error", body.error.type)
    end)

    it("round-trips an error type through both directions", function()
        for _, t in ipairs({ "invalid_request_error", "authentication_error", "permission_error",
                             "not_found_error", "rate_limit_error" }) do
            local st, o = T.error_to_openai(400, { type = "error", error = { type = t, message = "x" } })
            local _, a = T.error_to_anthropic(st, o)
            assert.equal(t, a.error.type)
        end
    end)
end)

describe("translate round trip", function()
    it("keeps the conversation text and usage through request and response", function()
        local oreq = { model = "gpt-4o", messages = { { role = "system", content = "S" }, { role = "user", content = "Q" } } }
        local areq = T.request(oreq, { model = "claude-x" })
        assert.equal("S", areq.system)
        assert.equal("Q", areq.messages[1].content[1].text)
        local ores = T.response({ id = "msg", model = "claude-x", content = { { type = "text", text = "A" } },
                                  stop_reason = "end_turn", usage = { input_tokens = 3, output_tokens = 1 } })
        assert.equal("A", ores.choices[1].message.content)
        assert.equal(4, ores.usage.total_tokens)
    end)
end)
