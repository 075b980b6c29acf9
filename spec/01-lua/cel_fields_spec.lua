-- spec/01-lua/cel_fields_spec.lua -- the guide's fields.add blocks on a realistic OpenAI record,
-- compile_fields semantics and the lazily computed CEL variables of lunagate.context

local cel = require "lunagate.cel"
local context = require "lunagate.context"
local make_rec = require "cel.openai_rec"

-- evaluates a fields.add block and returns (ordered names, name -> value)
local function run(block, rec)
    local fe = assert(cel.compile_fields(block))
    local out = fe:eval(context.activation(rec or make_rec()))
    local names, byname = {}, {}
    for i, kv in ipairs(out) do
        names[i] = kv[1]
        byname[kv[1]] = kv[2]
    end
    return names, byname, fe
end

describe("cel fields.add from the guide", function()
    it("Jaeger block", function()
        local names, v, fe = run({
            { "gen_ai.operation.name", '"chat"' },
            { "gen_ai.system", "llm.provider" },
            { "gen_ai.request.model", "llm.request_model" },
            { "gen_ai.response.model", "llm.response_model" },
            { "gen_ai.usage.completion_tokens", "llm.output_tokens" },
            { "gen_ai.usage.prompt_tokens", "llm.input_tokens" },
        })
        assert.same({ "gen_ai.operation.name", "gen_ai.system", "gen_ai.request.model",
                      "gen_ai.response.model", "gen_ai.usage.completion_tokens",
                      "gen_ai.usage.prompt_tokens" }, names)
        assert.equal("chat", v["gen_ai.operation.name"])
        assert.equal("openai", v["gen_ai.system"])
        assert.equal("gpt-4o-mini", v["gen_ai.request.model"])
        assert.equal("gpt-4o-mini-2024-07-18", v["gen_ai.response.model"])
        assert.equal(181, v["gen_ai.usage.completion_tokens"])
        assert.equal("integer", math.type(v["gen_ai.usage.completion_tokens"]))
        assert.equal(39, v["gen_ai.usage.prompt_tokens"])
        assert.equal("integer", math.type(v["gen_ai.usage.prompt_tokens"]))
        assert.same({ llm = true, ["llm.provider"] = true, ["llm.request_model"] = true,
                      ["llm.response_model"] = true, ["llm.output_tokens"] = true,
                      ["llm.input_tokens"] = true }, fe.refs)
    end)

    it("Langfuse block", function()
        local names, v, fe = run({
            { "gen_ai.operation.name", '"chat"' },
            { "gen_ai.system", "llm.provider" },
            { "gen_ai.prompt", "llm.prompt" },
            { "gen_ai.completion", 'llm.completion.map(c, {"role":"assistant", "content": c})' },
            { "gen_ai.usage.completion_tokens", "llm.output_tokens" },
            { "gen_ai.usage.prompt_tokens", "llm.input_tokens" },
            { "gen_ai.request.model", "llm.request_model" },
            { "gen_ai.response.model", "llm.response_model" },
            { "gen_ai.request", "flatten(llm.params)" },
        })
        assert.same({
            { role = "system", content = "You are a helpful assistant." },
            { role = "user", content = "Say hello in French." },
        }, v["gen_ai.prompt"])
        assert.same({ { role = "assistant", content = "Bonjour !" } }, v["gen_ai.completion"])
        -- flatten(llm.params) expands one level into gen_ai.request.<param>
        assert.is_nil(v["gen_ai.request"])
        assert.equal(0.7, v["gen_ai.request.temperature"])
        assert.equal(1.0, v["gen_ai.request.top_p"])
        assert.equal("float", math.type(v["gen_ai.request.top_p"]))
        assert.equal(256, v["gen_ai.request.max_tokens"])
        assert.equal("integer", math.type(v["gen_ai.request.max_tokens"]))
        assert.equal(42, v["gen_ai.request.seed"])
        assert.equal("gen_ai.request.max_tokens", names[9])        -- params in key order, last
        assert.equal(12, #names)
        assert.is_true(fe.refs["llm.prompt"])
        assert.is_true(fe.refs["llm.completion"])
        assert.is_true(fe.refs["llm.params"])
    end)

    it("Phoenix (Arize) block", function()
        local names, v = run({
            { "span.name", '"openai.chat"' },
            { "openinference.span.kind", '"LLM"' },
            { "llm.system", "llm.provider" },
            { "llm.input_messages", 'flatten_recursive(llm.prompt.map(c, {"message": c}))' },
            { "llm.output_messages",
              'flatten_recursive(llm.completion.map(c, {"role":"assistant", "content": c}))' },
            { "llm.token_count.completion", "llm.output_tokens" },
            { "llm.token_count.prompt", "llm.input_tokens" },
            { "llm.token_count.total", "llm.total_tokens" },
        })
        assert.equal("openai.chat", v["span.name"])
        assert.equal("LLM", v["openinference.span.kind"])
        assert.equal("openai", v["llm.system"])
        assert.equal("system", v["llm.input_messages.0.message.role"])
        assert.equal("You are a helpful assistant.", v["llm.input_messages.0.message.content"])
        assert.equal("user", v["llm.input_messages.1.message.role"])
        assert.equal("Say hello in French.", v["llm.input_messages.1.message.content"])
        assert.equal("assistant", v["llm.output_messages.0.role"])
        assert.equal("Bonjour !", v["llm.output_messages.0.content"])
        assert.equal(220, v["llm.token_count.total"])
        assert.same({ "span.name", "openinference.span.kind", "llm.system",
                      "llm.input_messages.0.message.content", "llm.input_messages.0.message.role",
                      "llm.input_messages.1.message.content", "llm.input_messages.1.message.role",
                      "llm.output_messages.0.role", "llm.output_messages.0.content",
                      "llm.token_count.completion", "llm.token_count.prompt",
                      "llm.token_count.total" }, names)
    end)

    it("OpenLLMetry block", function()
        local _, v = run({
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
        })
        assert.equal("system", v["gen_ai.prompt.0.role"])
        assert.equal("Say hello in French.", v["gen_ai.prompt.1.content"])
        assert.equal("assistant", v["gen_ai.completion.0.role"])
        assert.equal("Bonjour !", v["gen_ai.completion.0.content"])
        assert.equal(0.7, v["gen_ai.request.temperature"])
        assert.equal(false, v["llm.is_streaming"])
        assert.equal("gpt-4o-mini", v["gen_ai.request.model"])
    end)

    it("leaves out null and error results (a non-LLM request)", function()
        local rec = make_rec()
        rec.llm = nil
        local names, v = run({
            { "gen_ai.operation.name", '"chat"' },
            { "gen_ai.system", "llm.provider" },
            { "gen_ai.request", "flatten(llm.params)" },
            { "nothing", "null" },
            { "path", "request.path" },
            { "nope", "request.nope" },
        }, rec)
        assert.same({ "gen_ai.operation.name", "path" }, names)
        assert.equal("/v1/chat/completions", v.path)
    end)

    it("leaves out missing LLM fields but keeps the others", function()
        local rec = make_rec()
        rec.llm.response_model = nil
        rec.llm.output_tokens = nil
        local names = run({
            { "a", "llm.response_model" },
            { "b", "llm.output_tokens" },
            { "c", "llm.input_tokens" },
            { "d", "llm.responseModel" },
        }, rec)
        assert.same({ "c" }, names)
    end)

    it("returns fresh values on every evaluation", function()
        local fe = assert(cel.compile_fields({
            { "m", "llm.request_model" }, { "t", "llm.input_tokens" }, { "c", '"chat"' },
            { "x", "llm.params.temperature" },
        }))
        local rec = make_rec()
        local first = fe:eval(context.activation(rec))
        assert.same({ { "m", "gpt-4o-mini" }, { "t", 39 }, { "c", "chat" }, { "x", 0.7 } }, first)
        rec = make_rec()
        rec.llm.request_model, rec.llm.input_tokens, rec.llm.params.temperature = "o3", 40, 1
        local second = fe:eval(context.activation(rec))
        assert.same({ { "m", "o3" }, { "t", 40 }, { "c", "chat" }, { "x", 1 } }, second)
        assert.equal("integer", math.type(second[4][2]))
        rec.llm.params.temperature = 1.0
        local third = fe:eval(context.activation(rec))
        assert.equal("float", math.type(third[4][2]))       -- 1 and 1.0 are not mixed up
        rec.llm.request_model = nil
        local fourth = fe:eval(context.activation(rec))
        assert.equal("t", fourth[1][1])
        assert.equal(3, #fourth)
        assert.same({ "m", "gpt-4o-mini" }, first[1])        -- earlier results are untouched
    end)

    it("reports compile errors with the field name", function()
        local fe, err = cel.compile_fields({ { "ok", "1" }, { "bad", "llm.provider ==" } })
        assert.is_nil(fe)
        assert.matches("^bad: column 16: unexpected end of input", err)
    end)

    it("expands flatten of lists and nested values", function()
        local _, v = run({
            { "l", "flatten(['a', 'b'])" },
            { "n", "flatten({'x': {'y': 1}})" },
            { "r", "flatten_recursive({'x': {'y': 1, 'z': [true]}})" },
            { "s", "flatten('scalar')" },
        })
        assert.equal("a", v["l.0"])
        assert.equal("b", v["l.1"])
        assert.same({ y = 1 }, v["n.x"])
        assert.equal(1, v["r.x.y"])
        assert.equal(true, v["r.x.z.0"])
        assert.equal("scalar", v.s)
    end)
end)

describe("context.activation", function()
    local act
    before_each(function() act = context.activation(make_rec()) end)

    local function ev(src)
        local prog = assert(cel.compile(src))
        return prog:eval(act)
    end

    it("exposes llm.* in both spellings with int token counts", function()
        assert.equal("gpt-4o-mini", ev("llm.request_model"))
        assert.equal("gpt-4o-mini", ev("llm.requestModel"))
        assert.equal("gpt-4o-mini-2024-07-18", ev("llm.responseModel"))
        assert.equal(39, ev("llm.inputTokens"))
        assert.equal(181, ev("llm.outputTokens"))
        assert.equal(220, ev("llm.totalTokens"))
        assert.equal(0, ev("llm.cachedInputTokens"))
        assert.equal(0, ev("llm.reasoningTokens"))
        assert.is_true(ev("type(llm.input_tokens) == int"))
        assert.is_true(ev("type(llm['inputTokens']) == int"))
        assert.equal("openai", ev("llm.provider"))
        assert.is_false(ev("llm.streaming"))
        assert.equal("Bonjour !", ev("llm.completion[0]"))
        assert.equal("user", ev("llm.prompt[1].role"))
        assert.equal(256, ev("llm.params.max_tokens"))
        assert.is_true(ev("has(llm.params.temperature) && !has(llm.params.stop)"))
        assert.is_true(ev("has(llm.requestModel)"))
    end)

    it("normalises float token counts and integer params to CEL ints", function()
        local rec = make_rec()
        rec.llm.input_tokens, rec.llm.total_tokens = 39.0, nil
        rec.llm.params.max_tokens = 256.0
        act = context.activation(rec)
        assert.equal("integer", math.type(ev("llm.input_tokens")))
        assert.equal(220, ev("llm.total_tokens"))           -- input + output
        assert.equal("integer", math.type(ev("llm.params.max_tokens")))
        assert.equal("integer", math.type(ev("llm['input_tokens']")))
    end)

    it("exposes request.* and response.*", function()
        assert.equal("POST", ev("request.method"))
        assert.equal("/v1/chat/completions", ev("request.path"))
        assert.equal("/v1/chat/completions?trace=1", ev("request.pathAndQuery"))
        assert.equal("localhost:3000", ev("request.host"))
        assert.equal("http", ev("request.scheme"))
        assert.equal("HTTP/1.1", ev("request.version"))
        assert.equal("http://localhost:3000/v1/chat/completions?trace=1", ev("request.uri"))
        assert.equal("OpenAI/JS 6.49.0", ev("request.headers['user-agent']"))
        assert.is_true(ev("'x-request-id' in request.headers"))
        assert.equal(200, ev("response.code"))
        assert.equal("req-123", ev("response.headers['x-request-id']"))
        assert.equal("2025-11-26T10:00:00.123456Z", cel.to_plain(ev("request.startTime")))
        local _, err = ev("request.body")
        assert.equal("no such key: body", err)
        local rec = make_rec()
        rec.request_body = '{"model":"gpt-4o-mini"}'
        act = context.activation(rec)
        assert.equal("gpt-4o-mini", ev("json(request.body).model"))
    end)

    it("exposes source, backend, proxy, env, jwt and apiKey", function()
        assert.equal("10.0.9.76", ev("source.address"))
        assert.equal(38655, ev("source.port"))
        assert.equal("api.openai.com:443", ev("backend.name"))
        assert.equal("ai", ev("backend.type"))
        assert.equal("llm", ev("backend.protocol"))
        assert.equal("route0", ev("proxy.route.name"))
        assert.equal("listener0", ev("proxy.listener.name"))
        assert.equal(os.getenv("HOME"), ev("env.HOME"))
        local _, err = ev("jwt.sub")
        assert.matches("undeclared reference to 'jwt", err)
        local rec = make_rec()
        rec.jwt = { sub = "alice", groups = { "admins" } }
        rec.api_key = { key = "<redacted>", name = "team-a" }
        rec.src_addr = "[::1]:59257"
        act = context.activation(rec)
        assert.equal("alice", ev("jwt.sub"))
        assert.is_true(ev("'admins' in jwt.groups"))
        assert.equal("team-a", ev("apiKey.name"))
        assert.equal("::1", ev("source.address"))
        assert.equal(59257, ev("source.port"))
    end)

    it("exposes mcp.*", function()
        local rec = make_rec()
        rec.llm, rec.protocol = nil, "mcp"
        rec.mcp = { method = "tools/call", session_id = "s1", target = "everything",
                    tool_name = "echo" }
        act = context.activation(rec)
        assert.equal("tools/call", ev("mcp.methodName"))
        assert.equal("tools/call", ev("mcp.method"))
        assert.equal("s1", ev("mcp.sessionId"))
        assert.equal("echo", ev("mcp.tool.name"))
        assert.equal("everything", ev("mcp.tool.target"))
        assert.equal("mcp", ev("backend.type"))
        assert.is_false(ev("has(mcp.prompt)"))
        local _, err = ev("llm.provider")
        assert.is_string(err)
    end)

    it("serialises lazy objects with toJson", function()
        local j = ev("toJson(source)")
        assert.equal('{"address":"10.0.9.76","port":38655}', j)
        assert.matches('"requestModel":"gpt%-4o%-mini"', ev("toJson(llm)"))
    end)

    it("reads the record lazily", function()
        local rec = make_rec()
        act = context.activation(rec)
        rec.llm.output_tokens = 7                    -- filled in after activation creation
        assert.equal(7, ev("llm.output_tokens"))
        assert.has_error(function() context.activation(nil) end)
    end)
end)
