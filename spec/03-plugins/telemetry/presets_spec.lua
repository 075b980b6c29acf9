-- spec/03-plugins/telemetry/presets_spec.lua -- the tracing presets of plugins/telemetry/:
-- `preset: <name>` yields exactly what the guide's `fields.add` block for that backend yields,
-- on the same realistic OpenAI records; config/examples/tracing/*.yaml carry the guide's
-- config.yaml blocks verbatim.
local tracing = require "lunagate.tracing"
local openai_rec = require "cel.openai_rec"
local lyaml = require "lyaml"

local GUIDE = "/work/shared/seed/000_92474d8e96917231.txt"
local BACKENDS = { "jaeger", "langfuse", "phoenix", "openllmetry" }

local function read(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
end

local function example(name)
    local doc = lyaml.load(assert(read("config/examples/tracing/" .. name .. ".yaml")))
    return doc
end

-- the guide's four `config.yaml: |-` blocks of "Other tracing configurations", dedented
local function guide_blocks()
    local text = read(GUIDE)
    if not text then return nil end
    local out = {}
    for block in text:gmatch("config%.yaml: |%-\n(.-)```") do
        local indent = block:match("^( *)")
        local lines = {}
        for line in block:gmatch("([^\n]*)\n") do lines[#lines + 1] = line:sub(#indent + 1) end
        out[#out + 1] = table.concat(lines, "\n")
    end
    -- the first block belongs to "Configure agentgateway"; the tabs follow in this order
    local by = {}
    for i, name in ipairs(BACKENDS) do by[name] = out[#out - #BACKENDS + i] end
    return by
end

local function index(attrs)
    local by = {}
    for _, a in ipairs(attrs) do
        assert.is_nil(by[a[1]], "duplicate key " .. a[1])
        by[a[1]] = { a[2], a[3] }
    end
    return by
end

local function records()
    local streaming = openai_rec()
    streaming.llm.streaming = true
    streaming.llm.finish_reasons = { "length" }
    streaming.llm.completion = { "Bonjour", "Salut !" }
    local noparams = openai_rec()
    noparams.llm.params = nil
    noparams.llm.total_tokens = nil              -- computed from input + output
    local plain = openai_rec()
    plain.llm, plain.protocol = nil, "http"
    local failed = openai_rec()
    failed.status, failed.error = 503, "upstream unavailable"
    local extra = openai_rec()            -- a parameter only flatten(llm.params) reports
    extra.llm.params.reasoning_effort = "low"
    return { openai = openai_rec(), streaming = streaming, noparams = noparams, plain = plain,
             failed = failed, extra = extra }
end

describe("tracing presets", function()
    it("are helper modules: named after their file, versioned, with fields and no phases", function()
        for _, name in ipairs(tracing.PRESETS) do
            local p = assert(loadfile("plugins/telemetry/" .. name .. ".lua", "t"))()
            assert.equal(name, p.name)
            assert.is_string(p.version)
            assert.is_table(p.schema)
            assert.is_nil(p.priority, name .. ": presets are not chained plugins")
            assert.is_true(#p.fields > 0)
            for k, v in pairs(p) do
                assert.is_not_equal("function", type(v), name .. "." .. tostring(k))
            end
        end
    end)

    it("ship the guide's config.yaml blocks verbatim in config/examples/tracing", function()
        local blocks = guide_blocks()
        if not blocks then
            pending("the guide is not available at " .. GUIDE)
            return
        end
        for _, name in ipairs(BACKENDS) do
            local block = assert(blocks[name], name)
            local file = assert(read("config/examples/tracing/" .. name .. ".yaml"))
            assert.truthy(file:find(block, 1, true), name .. ": guide block not found verbatim")
            assert.same(lyaml.load(block).config, example(name).config)
        end
    end)

    for _, name in ipairs(BACKENDS) do
        it(name .. ": preset and guide block give identical spans", function()
            local guide = assert(tracing.new(example(name).config.tracing))
            local preset = assert(tracing.new({ preset = name }))
            for what, rec in pairs(records()) do
                local gname, gattrs, gstatus = guide:attributes(rec)
                local pname, pattrs, pstatus = preset:attributes(rec)
                assert.equal(gname, pname, what)
                assert.same(index(gattrs), index(pattrs), what)
                assert.equal(#gattrs, #pattrs, what)
                assert.same(gstatus, pstatus, what)
            end
            -- both capture prompts and completions only when the block reads them
            assert.equal(guide.refs["llm.prompt"], preset.refs["llm.prompt"])
            assert.equal(guide.refs["llm.completion"], preset.refs["llm.completion"])
        end)
    end

    it("jaeger: GenAI tags with the old usage names", function()
        local _, attrs = assert(tracing.new({ preset = "jaeger" })):attributes(openai_rec())
        local by = index(attrs)
        assert.same({ "chat", "string" }, by["gen_ai.operation.name"])
        assert.same({ "openai", "string" }, by["gen_ai.system"])
        assert.same({ 181, "int" }, by["gen_ai.usage.completion_tokens"])
        assert.same({ 39, "int" }, by["gen_ai.usage.prompt_tokens"])
        assert.is_nil(by["gen_ai.prompt"])
    end)

    it("langfuse: prompt and completion as JSON, parameters flattened", function()
        local t = assert(tracing.new({ preset = "langfuse" }))
        assert.is_true(t.refs["llm.prompt"])
        local name, attrs = t:attributes(openai_rec())
        assert.equal("POST /v1/chat/completions", name)
        local by = index(attrs)
        local cjson = require "cjson"
        assert.equal("string", by["gen_ai.prompt"][2])
        assert.same({ { role = "system", content = "You are a helpful assistant." },
                      { role = "user", content = "Say hello in French." } },
                    cjson.decode(by["gen_ai.prompt"][1]))
        assert.same({ { role = "assistant", content = "Bonjour !" } },
                    cjson.decode(by["gen_ai.completion"][1]))
        assert.same({ 0.7, "double" }, by["gen_ai.request.temperature"])
        assert.same({ 256, "int" }, by["gen_ai.request.max_tokens"])
        assert.same({ 42, "int" }, by["gen_ai.request.seed"])
        assert.same({ "gpt-4o-mini", "string" }, by["gen_ai.request.model"])
    end)

    it("phoenix: OpenInference keys, span named openai.chat", function()
        local name, attrs = assert(tracing.new({ preset = "phoenix" })):attributes(openai_rec())
        assert.equal("openai.chat", name)
        local by = index(attrs)
        assert.same({ "LLM", "string" }, by["openinference.span.kind"])
        assert.same({ "openai", "string" }, by["llm.system"])
        assert.same({ "system", "string" }, by["llm.input_messages.0.message.role"])
        assert.same({ "Say hello in French.", "string" }, by["llm.input_messages.1.message.content"])
        -- the guide's expression has no "message" level on the output side
        assert.same({ "assistant", "string" }, by["llm.output_messages.0.role"])
        assert.same({ "Bonjour !", "string" }, by["llm.output_messages.0.content"])
        assert.same({ 220, "int" }, by["llm.token_count.total"])
        assert.same({ 39, "int" }, by["llm.token_count.prompt"])
        assert.same({ 181, "int" }, by["llm.token_count.completion"])
    end)

    it("openllmetry: flattened gen_ai.prompt / gen_ai.completion and llm.is_streaming", function()
        local name, attrs = assert(tracing.new({ preset = "openllmetry" })):attributes(openai_rec())
        assert.equal("openai.chat", name)
        local by = index(attrs)
        assert.same({ "system", "string" }, by["gen_ai.prompt.0.role"])
        assert.same({ "Say hello in French.", "string" }, by["gen_ai.prompt.1.content"])
        assert.same({ "assistant", "string" }, by["gen_ai.completion.0.role"])
        assert.same({ "Bonjour !", "string" }, by["gen_ai.completion.0.content"])
        assert.same({ false, "bool" }, by["llm.is_streaming"])
        assert.same({ 1.0, "double" }, by["gen_ai.request.top_p"])
    end)

    it("otel-genai: semconv message JSON and '{operation} {model}' span names", function()
        local cjson = require "cjson"
        local t = assert(tracing.new({ preset = "otel-genai" }))
        local name, attrs = t:attributes(openai_rec())
        assert.equal("chat gpt-4o-mini", name)
        local by = index(attrs)
        local sys = "You are a helpful assistant."
        assert.same({ { role = "system", parts = { { type = "text", content = sys } } },
                      { role = "user", parts = { { type = "text", content = "Say hello in French." } } } },
                    cjson.decode(by["gen_ai.input.messages"][1]))
        assert.same({ { role = "assistant", finish_reason = "stop",
                        parts = { { type = "text", content = "Bonjour !" } } } },
                    cjson.decode(by["gen_ai.output.messages"][1]))
        assert.same({ "openai", "string" }, by["gen_ai.provider.name"])
        -- a plain HTTP request keeps the default name and no message keys
        local rec = openai_rec()
        rec.llm = nil
        local pname, pattrs = t:attributes(rec)
        assert.equal("POST /v1/chat/completions", pname)
        assert.is_nil(index(pattrs)["gen_ai.input.messages"])
    end)

    it("combine with fields.add, which comes after the preset", function()
        local t = assert(tracing.new({ preset = "jaeger", fields = { add = {
            ["gen_ai.system"] = '"override"', team = '"blue"' } } }))
        local _, attrs = t:attributes(openai_rec())
        local by = index(attrs)
        assert.same({ "override", "string" }, by["gen_ai.system"])
        assert.same({ "blue", "string" }, by.team)
        assert.equal("team", attrs[#attrs][1])
    end)
end)
