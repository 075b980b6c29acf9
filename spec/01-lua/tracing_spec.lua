-- spec/01-lua/tracing_spec.lua -- lunagate.tracing: config.tracing validation, sampling,
-- span names, default attributes and their types, fields.add / remove, status, redaction

local tracing = require "lunagate.tracing"
local openai_rec = require "cel.openai_rec"

local function new(conf)
    return assert(tracing.new(conf))
end

local function err_of(conf)
    local t, err = tracing.new(conf)
    assert.is_nil(t)
    assert.is_string(err)
    return err
end

-- attrs -> { key = {value, kind} }, and the keys in order
local function index(attrs)
    local by, keys = {}, {}
    for i, a in ipairs(attrs) do
        assert.is_nil(by[a[1]], "duplicate key " .. a[1])
        by[a[1]] = { a[2], a[3] }
        keys[i] = a[1]
    end
    return by, keys
end

local function pos(keys, k)
    for i, x in ipairs(keys) do if x == k then return i end end
    return nil
end

describe("tracing.new", function()
    it("accepts the guide's four blocks", function()
        new({ otlpEndpoint = "http://jaeger-collector.jaeger.svc.cluster.local:4317",
              otlpProtocol = "grpc", randomSampling = true,
              fields = { add = { ["gen_ai.operation.name"] = '"chat"',
                                 ["gen_ai.system"] = "llm.provider" } } })
        new({ otlpEndpoint = "https://us.cloud.langfuse.com/api/public/otel",
              otlpProtocol = "http", headers = { Authorization = "Basic <base64-encoded-credentials>" },
              randomSampling = true, fields = { add = { ["gen_ai.request"] = "flatten(llm.params)" } } })
        new({ otlpEndpoint = "http://localhost:4317", randomSampling = true,
              fields = { add = { ["span.name"] = '"openai.chat"' } } })
    end)

    it("accepts batch options, presets and http/protobuf", function()
        local opts = assert(tracing.exporter_options({
            otlpEndpoint = "http://127.0.0.1:4318", otlpProtocol = "http/protobuf",
            batchSize = 64, batchInterval = "250ms", queueSize = 4096, path = "/otlp/v1/traces",
            headers = { ["x-b"] = "2", Authorization = "Basic abc" } }))
        assert.same({ endpoint = "http://127.0.0.1:4318", protocol = "http", path = "/otlp/v1/traces",
                      headers = { "Authorization: Basic abc", "x-b: 2" }, batch_size = 64,
                      batch_interval_ms = 250, queue_size = 4096, resources = {} }, opts)
        assert.equal(1000, tracing.exporter_options({ batchInterval = "1s" }).batch_interval_ms)
        assert.equal(20, tracing.exporter_options({ batchInterval = 20 }).batch_interval_ms)
        assert.equal("grpc", tracing.exporter_options({}).protocol)
        -- langfuse speaks OTLP/HTTP only: the preset makes it the default
        assert.equal("http", tracing.exporter_options({ preset = "langfuse" }).protocol)
        assert.equal("grpc",
            tracing.exporter_options({ preset = "langfuse", otlpProtocol = "grpc" }).protocol)
    end)

    it("resolves the exporter keys for the C core", function()
        local r = assert(tracing.resolve({ preset = "langfuse", batchInterval = "2s",
            otlpEndpoint = "http://127.0.0.1:4318/api/public/otel",
            headers = { Authorization = "Basic abc" }, randomSampling = true }))
        assert.equal("http", r.otlpProtocol)
        assert.equal(2000, r.batchInterval)
        assert.same({ Authorization = "Basic abc" }, r.headers)
        assert.equal("http://127.0.0.1:4318/api/public/otel", r.otlpEndpoint)
        assert.is_true(r.randomSampling)
        local h = assert(tracing.resolve({ host = "127.0.0.1:4317", protocol = "grpc" }))
        assert.equal("127.0.0.1:4317", h.otlpEndpoint)
        assert.equal("grpc", h.otlpProtocol)
        assert.is_nil(h.host)
        assert.is_nil(tracing.resolve({ otlpProtocol = "udp" }))
    end)

    it("rejects bad values with the key and a hint", function()
        assert.matches("unknown key 'otlpEndpont'.*did you mean 'otlpEndpoint'",
            err_of({ otlpEndpont = "x" }))
        assert.matches("^otlpProtocol: expected grpc, http", err_of({ otlpProtocol = "udp" }))
        assert.matches("^otlpEndpoint: unsupported scheme 'ftp'", err_of({ otlpEndpoint = "ftp://x" }))
        assert.matches("^randomSampling: expected a probability", err_of({ randomSampling = 1.5 }))
        assert.matches("^clientSampling: column", err_of({ clientSampling = "1 +" }))
        assert.matches("^randomSampling: a constant string", err_of({ randomSampling = '"yes"' }))
        assert.matches("^fields.add.x: column", err_of({ fields = { add = { x = "llm.(" } } }))
        assert.matches("^fields: unknown key 'ad'", err_of({ fields = { ad = {} } }))
        assert.matches("^fields.remove: expected a list", err_of({ fields = { remove = { a = 1 } } }))
        assert.matches("^batchSize: expected an integer between 1", err_of({ batchSize = 0 }))
        assert.matches("^batchInterval: expected a duration", err_of({ batchInterval = "soon" }))
        assert.matches("^queueSize: expected an integer", err_of({ queueSize = 1.5 }))
        assert.matches("^path: expected a path", err_of({ path = "v1/traces" }))
        assert.matches("unknown preset 'langfus'.*did you mean 'langfuse'", err_of({ preset = "langfus" }))
        assert.matches("^backend: not supported", err_of({ backend = "x" }))
    end)

    it("never puts a header value in an error", function()
        local err = err_of({ headers = { Authorization = "Basic c2VjcmV0\r\nx: y" } })
        assert.matches("^headers.Authorization: the value contains CR", err)
        assert.is_nil(err:find("c2VjcmV0", 1, true))
    end)

    it("collects the refs of every expression (capture on demand)", function()
        local t = new({ preset = "phoenix", randomSampling = 'request.headers["x-trace"] == "1"' })
        assert.is_true(t.refs["llm.prompt"])
        assert.is_true(t.refs["llm.completion"])
        assert.is_true(t.refs["request.headers"] or t.refs.request)
        local plain = new({ preset = "jaeger" })
        assert.is_nil(plain.refs["llm.prompt"])
        assert.is_nil(plain.refs["llm.completion"])
    end)
end)

describe("tracer:sampling", function()
    it("defaults to random off, client on", function()
        assert.same({ random = 0.0, client = 1.0 }, new({}):sampling())
    end)

    it("takes bools, probabilities and constant CEL as numbers", function()
        assert.same({ random = 1.0, client = 0.0 },
            new({ randomSampling = true, clientSampling = false }):sampling())
        assert.same({ random = 0.25, client = 0.5 },
            new({ randomSampling = 0.25, clientSampling = "0.5" }):sampling())
        assert.equal(1.0, new({ randomSampling = "true" }):sampling().random)
    end)

    it("keeps a CEL expression as a program and evaluates it per request", function()
        local s = new({ randomSampling = 'request.headers["x-sample"] == "yes"',
                        clientSampling = 'request.path.startsWith("/half") ? 0.5 : 2.0' }):sampling()
        assert.is_nil(s.random)
        assert.is_table(s.random_cel)
        assert.equal(1.0, tracing.probability(s.random_cel, { request_headers = { ["x-sample"] = "yes" } }))
        assert.equal(0.0, tracing.probability(s.random_cel, { request_headers = {} }))
        assert.equal(0.5, tracing.probability(s.client_cel, { path = "/half/x" }))
        assert.equal(1.0, tracing.probability(s.client_cel, { path = "/full" }))   -- clamped
        assert.equal(0.0, tracing.probability(s.client_cel, {}))                    -- error -> 0
    end)
end)

describe("tracer:attributes", function()
    it("puts access-log keys first, then GenAI semconv, with the right types", function()
        local name, attrs, status = new({}):attributes(openai_rec())
        assert.equal("POST /v1/chat/completions", name)
        assert.is_nil(status)
        local by, keys = index(attrs)
        assert.same({ "gateway", "listener", "route", "endpoint", "src.addr", "http.method",
                      "http.host", "http.path", "http.version", "http.status" },
                    { table.unpack(keys, 1, 10) })
        assert.same({ 200, "int" }, by["http.status"])
        assert.same({ "chat", "string" }, by["gen_ai.operation.name"])
        assert.same({ "openai", "string" }, by["gen_ai.provider.name"])
        assert.same({ "openai", "string" }, by["gen_ai.system"])
        assert.same({ "gpt-4o-mini", "string" }, by["gen_ai.request.model"])
        assert.same({ "gpt-4o-mini-2024-07-18", "string" }, by["gen_ai.response.model"])
        assert.same({ "chatcmpl-abc123", "string" }, by["gen_ai.response.id"])
        assert.same({ { "stop" }, "string[]" }, by["gen_ai.response.finish_reasons"])
        assert.same({ 39, "int" }, by["gen_ai.usage.input_tokens"])
        assert.same({ 181, "int" }, by["gen_ai.usage.output_tokens"])
        assert.equal("integer", math.type(by["gen_ai.usage.input_tokens"][1]))
        assert.same({ 0.7, "double" }, by["gen_ai.request.temperature"])
        assert.same({ 1.0, "double" }, by["gen_ai.request.top_p"])
        assert.equal("float", math.type(by["gen_ai.request.top_p"][1]))
        assert.same({ 256, "int" }, by["gen_ai.request.max_tokens"])
        assert.same({ 42, "int" }, by["gen_ai.request.seed"])
        assert.same({ "1.1", "string" }, by["network.protocol.version"])
        assert.is_nil(by.error)
        -- access-log keys before GenAI ones
        assert.truthy(pos(keys, "http.status") < pos(keys, "gen_ai.operation.name"))
        -- prompts and completions are opt-in
        for _, k in ipairs(keys) do
            assert.is_nil(k:find("prompt", 1, true), k)
            assert.is_nil(k:find("completion", 1, true), k)
        end
    end)

    it("turns float token counts from JSON into ints", function()
        local rec = openai_rec()
        rec.llm.input_tokens, rec.llm.params.max_tokens = 39.0, 256.0
        local by = index(select(2, new({}):attributes(rec)))
        assert.equal("integer", math.type(by["gen_ai.usage.input_tokens"][1]))
        assert.same({ 256, "int" }, by["gen_ai.request.max_tokens"])
    end)

    it("names the span from span.name, the MCP method or the matched path", function()
        local rec = openai_rec()
        assert.equal("chat gpt-4o-mini",
            (new({ fields = { add = { ["span.name"] = 'llm.operation + " " + llm.request_model' } } })
                :attributes(rec)))
        rec.route_path = "/v1/chat"
        assert.equal("POST /v1/chat", (new({}):attributes(rec)))
        local mrec = { method = "POST", path = "/mcp", status = 200,
                       mcp = { method = "tools/call", tool_name = "fetch", target = "everything" } }
        local name, attrs = new({}):attributes(mrec)
        assert.equal("tools/call", name)
        local by = index(attrs)
        assert.same({ "fetch", "string" }, by["gen_ai.tool.name"])
        assert.same({ "tools/call", "string" }, by["mcp.method.name"])
        assert.equal("unknown", (new({}):attributes({})))
        -- span.name is never an attribute
        local _, a2 = new({ fields = { add = { ["span.name"] = '"x"' } } }):attributes(openai_rec())
        assert.is_nil(index(a2)["span.name"])
    end)

    it("adds fields.add after the defaults, flattened, and replaces same-named defaults", function()
        local t = new({ fields = { add = {
            ["gen_ai.request"] = "flatten(llm.params)",
            ["team"] = 'request.headers["x-request-id"]',
            ["msgs"] = "llm.prompt",
            ["reasons"] = "llm.finish_reasons",
            ["nums"] = "[1, 2, 3]",
            ["gen_ai.provider.name"] = '"custom"',
            ["missing"] = "llm.nope",
        } } })
        local _, attrs = t:attributes(openai_rec())
        local by, keys = index(attrs)
        assert.same({ "custom", "string" }, by["gen_ai.provider.name"])
        assert.same({ 0.7, "double" }, by["gen_ai.request.temperature"])
        assert.same({ 256, "int" }, by["gen_ai.request.max_tokens"])
        assert.truthy(pos(keys, "gen_ai.request.temperature") > pos(keys, "gen_ai.usage.output_tokens"))
        assert.same({ "req-123", "string" }, by.team)
        assert.same({ { "stop" }, "string[]" }, by.reasons)
        assert.same({ { 1, 2, 3 }, "int[]" }, by.nums)
        assert.equal("string", by.msgs[2])
        assert.same({ { content = "You are a helpful assistant.", role = "system" },
                      { content = "Say hello in French.", role = "user" } },
                    require("cjson").decode(by.msgs[1]))
        assert.is_nil(by.missing)
        assert.is_nil(by["gen_ai.request"])
    end)

    it("removes what fields.remove names, defaults and added keys alike", function()
        local _, attrs = new({ fields = { add = { x = '"1"', y = '"2"' },
                                          remove = { "x", "http.host", "gen_ai.system" } } })
            :attributes(openai_rec())
        local by = index(attrs)
        assert.is_nil(by.x)
        assert.is_nil(by["http.host"])
        assert.is_nil(by["gen_ai.system"])
        assert.same({ "2", "string" }, by.y)
        assert.is_not_nil(by["gen_ai.provider.name"])
    end)

    it("returns an error status on 5xx and on errors, with error.type", function()
        local rec = openai_rec()
        rec.status, rec.error = 502, "upstream connect failed"
        local _, attrs, status = new({}):attributes(rec)
        assert.same({ code = "error", message = "upstream connect failed" }, status)
        assert.same({ "502", "string" }, index(attrs)["error.type"])
        rec.error = nil
        assert.same({ code = "error", message = "HTTP 502" }, select(3, new({}):attributes(rec)))
        rec.status = 404
        assert.is_nil(select(3, new({}):attributes(rec)))
        rec.status, rec.error = 200, "client disconnected"
        assert.same({ code = "error", message = "client disconnected" }, select(3, new({}):attributes(rec)))
    end)

    it("keeps secrets out of spans", function()
        local rec = openai_rec()
        rec.path = "/v1/chat/completions?key=AIzaSecretKey123&x=1"
        local t = new({ fields = { add = {
            auth = 'request.headers["authorization"]',
            h = "flatten(request.headers)",
            all = "toJson(request.headers)",
            echo = '"token is " + request.headers["authorization"].split(" ")[1]',
        } } })
        local _, attrs = t:attributes(rec)
        local by = index(attrs)
        assert.equal("<redacted>", by.auth[1])
        assert.equal("<redacted>", by["h.authorization"][1])
        assert.equal("req-123", by["h.x-request-id"][1])
        assert.equal("/v1/chat/completions?key=<redacted>&x=1", by["http.path"][1])
        for _, a in ipairs(attrs) do
            if type(a[2]) == "string" then
                assert.is_nil(a[2]:find("sk-secret", 1, true), a[1])
                assert.is_nil(a[2]:find("AIzaSecretKey123", 1, true), a[1])
            end
        end
    end)

    it("includes plugins' set_field values", function()
        local rec = openai_rec()
        rec.fields = { { "tenant", "blue" }, { "cost", 0.25 } }
        local by = index(select(2, new({}):attributes(rec)))
        assert.same({ "blue", "string" }, by.tenant)
        assert.same({ 0.25, "double" }, by.cost)
    end)

    it("drops the span when the frontendPolicies filter says so", function()
        local t = new({ host = "127.0.0.1:4317", attributes = { a = '"1"' },
                        filter = "response.code >= 400" })
        assert.is_nil(t:attributes(openai_rec()))
        local rec = openai_rec()
        rec.status = 429
        local _, attrs = t:attributes(rec)
        assert.same({ "1", "string" }, index(attrs).a)
    end)

    it("describes the upstream call as a CLIENT span", function()
        local rec = openai_rec()
        local name, attrs = new({}):client_attributes(rec)
        assert.equal("POST api.openai.com:443", name)
        local by = index(attrs)
        assert.same({ "Llm", "string" }, by["agentgateway.outbound.subtype"])
        assert.same({ 443, "int" }, by["server.port"])
        rec.status = 502
        local _, a2, status = new({}):client_attributes(rec)
        assert.same({ "502", "string" }, index(a2)["error.type"])
        assert.same({ code = "error", message = "HTTP 502" }, status)
    end)
end)
