-- spec/03-plugins/providers/backends_spec.lua -- `ai:` backend config, routing, auth placement, errors
-- luacheck: max line length 160
local cjson = require "cjson"
local llm = require "lunagate.llm"

local CHAT = '{"model":"m","messages":[{"role":"user","content":"hi"}]}'

local function backend(provider, extra, policies, opts)
    local ai = { name = "b", provider = provider }
    for k, v in pairs(extra or {}) do ai[k] = v end
    opts = opts or {}
    opts.clock = opts.clock or function() return 1440000000 * 1000000 end
    return assert(llm.new_backend(ai, policies, opts))
end

local function request(b, path, body, headers)
    local rec = { start_us = 1 }
    local ctx = b:on_request(rec, { method = "POST", path = path or "/v1/chat/completions",
        headers = headers or { authorization = "Bearer client" }, body = body or CHAT })
    return ctx, rec
end

local function has(list, v)
    for _, x in ipairs(list) do if x == v then return true end end
    return false
end

describe("ai backend config", function()
    local function err_of(ai, pol)
        local b, err = llm.new_backend(ai, pol)
        assert.is_nil(b)
        return err
    end

    it("accepts every provider", function()
        for _, p in ipairs({
            { openAI = {} }, { anthropic = { model = "claude" } }, { gemini = {} },
            { vertex = { projectId = "p", region = "us-central1" } }, { bedrock = { region = "us-east-1" } },
            { azure = { resourceName = "r", resourceType = "foundry" } },
            { custom = { baseUrl = "https://api.groq.com/openai/v1" } }, { mock = { tokenDelay = "5ms" } },
        }) do
            assert.truthy(llm.new_backend({ name = "x", provider = p }))
        end
    end)

    it("reports errors with their config path", function()
        assert.equal("ai.name: required string", err_of({ provider = { openAI = {} } }))
        assert.matches("^ai%.provider: expected exactly one of: openAI, anthropic",
            err_of({ name = "x", provider = { openAI = {}, anthropic = {} } }))
        assert.matches("^ai%.provider: expected exactly one of", err_of({ name = "x", provider = { cohere = {} } }))
        assert.equal("ai.provider.openAI.modle: unknown field", err_of({ name = "x", provider = { openAI = { modle = "x" } } }))
        assert.equal("ai.provider.openAI.model: expected a string", err_of({ name = "x", provider = { openAI = { model = 1 } } }))
        assert.equal("ai.provider.vertex.projectId: required", err_of({ name = "x", provider = { vertex = {} } }))
        assert.equal("ai.provider.azure.resourceName: required", err_of({ name = "x", provider = { azure = {} } }))
        assert.matches("resourceType: expected one of: openAI, foundry, aiServices",
            err_of({ name = "x", provider = { azure = { resourceName = "r", resourceType = "x" } } }))
        assert.equal("ai.provider.custom: needs baseUrl or ai.hostOverride", err_of({ name = "x", provider = { custom = {} } }))
        assert.matches("^ai%.provider%.custom%.baseUrl", err_of({ name = "x", provider = { custom = { baseUrl = "ftp://x" } } }))
        assert.equal('ai.hostOverride: expected "host:port"', err_of({ name = "x", provider = { openAI = {} }, hostOverride = "nohost" }))
        assert.equal("ai.pathPrefix: expected a path starting with /", err_of({ name = "x", provider = { openAI = {} }, pathPrefix = "v1" }))
        assert.matches("^policies%.ai%.routes%./x: expected one of",
            err_of({ name = "x", provider = { openAI = {} } }, { ai = { routes = { ["/x"] = "chat" } } }))
        assert.matches("^ai%.provider%.mock%.tokenDelay", err_of({ name = "x", provider = { mock = { tokenDelay = "fast" } } }))
        assert.matches("^policies%.backendAuth%.key%.file",
            err_of({ name = "x", provider = { openAI = {} } }, { backendAuth = { key = { file = "/nonexistent/k" } } }))
    end)

    it("reads backendAuth.key from a file", function()
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        f:write("sk-from-file\n")
        f:close()
        local b = backend({ openAI = {} }, nil, { backendAuth = { key = { file = path } } })
        os.remove(path)
        assert.equal("Bearer sk-from-file", request(b).upstream.headers_set.authorization)
    end)
end)

describe("auth placement", function()
    it("OpenAI, custom and Vertex use Authorization: Bearer", function()
        for _, p in ipairs({ { openAI = {} }, { custom = { baseUrl = "http://127.0.0.1:1/v1" } },
                             { vertex = { projectId = "p" } } }) do
            local up = request(backend(p, nil, { backendAuth = { key = "k1" } })).upstream
            assert.equal("Bearer k1", up.headers_set.authorization)
        end
    end)

    it("Anthropic uses x-api-key and anthropic-version, OAuth tokens use Bearer", function()
        local up = request(backend({ anthropic = {} }, nil, { backendAuth = { key = "sk-ant-api" } }), "/v1/messages",
            '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}').upstream
        assert.equal("sk-ant-api", up.headers_set["x-api-key"])
        assert.equal("2023-06-01", up.headers_set["anthropic-version"])
        assert.is_nil(up.headers_set.authorization)
        assert.is_true(has(up.headers_remove, "authorization"))
        -- a client-chosen anthropic-version is kept
        up = request(backend({ anthropic = {} }, nil, { backendAuth = { key = "sk-ant-api" } }), "/v1/messages",
            '{"model":"c","max_tokens":5,"messages":[]}', { ["anthropic-version"] = "2023-01-01" }).upstream
        assert.is_nil(up.headers_set["anthropic-version"])
        up = request(backend({ anthropic = {} }, nil, { backendAuth = { key = "sk-ant-oat01-abc" } }), "/v1/messages",
            '{"model":"c","max_tokens":5,"messages":[]}').upstream
        assert.equal("Bearer sk-ant-oat01-abc", up.headers_set.authorization)
        assert.is_nil(up.headers_set["x-api-key"])
    end)

    it("Gemini native uses x-goog-api-key, its OpenAI-compatible endpoint Bearer", function()
        local b = backend({ gemini = {} }, nil, { backendAuth = { key = "AIza" } })
        local up = request(b, "/v1beta/models/gemini-2.5-flash:generateContent", '{"contents":[]}').upstream
        assert.equal("AIza", up.headers_set["x-goog-api-key"])
        assert.is_nil(up.headers_set.authorization)
        up = request(b, "/v1/chat/completions").upstream
        assert.equal("Bearer AIza", up.headers_set.authorization)
        assert.equal("/v1beta/openai/chat/completions", up.path)
    end)

    it("Azure uses api-key", function()
        local up = request(backend({ azure = { resourceName = "r" } }, nil, { backendAuth = { key = "az" } })).upstream
        assert.equal("az", up.headers_set["api-key"])
        assert.equal("r.openai.azure.com", up.host)
        assert.equal("/openai/v1/chat/completions", up.path)
        up = request(backend({ azure = { resourceName = "r", resourceType = "aiServices" } })).upstream
        assert.equal("r.services.ai.azure.com", up.host)
    end)

    it("Bedrock signs with SigV4 from the AWS environment, or sends an API key as Bearer", function()
        local env = { AWS_ACCESS_KEY_ID = "AKID", AWS_SECRET_ACCESS_KEY = "secret", AWS_REGION = "eu-west-3" }
        local b = backend({ bedrock = {} }, nil, nil, { getenv = function(k) return env[k] end })
        local up = request(b, "/model/amazon.nova-lite-v1:0/converse", '{"messages":[]}').upstream
        assert.equal("bedrock-runtime.eu-west-3.amazonaws.com", up.host)   -- no region in config: AWS_REGION
        assert.matches("^AWS4%-HMAC%-SHA256 Credential=AKID/20150819/eu%-west%-3/bedrock/aws4_request, "
            .. "SignedHeaders=host;x%-amz%-date, Signature=%x+$", up.headers_set.authorization)
        assert.equal("20150819T160000Z", up.headers_set["x-amz-date"])
        assert.equal("/model/amazon.nova-lite-v1%3A0/converse", up.path)
        local k = backend({ bedrock = { region = "us-west-2" } }, nil, { backendAuth = { key = "bedrock-api-key" } })
        up = request(k, "/model/m/converse-stream", '{"messages":[]}').upstream
        assert.equal("Bearer bedrock-api-key", up.headers_set.authorization)
        assert.equal("bedrock-runtime.us-west-2.amazonaws.com", up.host)
        assert.equal("/model/m/converse-stream", up.path)
    end)

    it("Bedrock without credentials answers 500 without leaking anything", function()
        local b = backend({ bedrock = { region = "us-east-1" } }, nil, nil, { getenv = function() return nil end })
        local ctx = request(b, "/model/m/converse", '{"messages":[]}')
        assert.is_nil(ctx.upstream)
        assert.equal(500, ctx.respond.status)
        assert.matches("AWS_ACCESS_KEY_ID", cjson.decode(ctx.respond.body).message)
    end)

    it("leaves the client's credentials alone without backendAuth", function()
        local up = request(backend({ openAI = {} })).upstream
        assert.is_nil(up.headers_set.authorization)
        assert.is_false(has(up.headers_remove, "authorization"))
    end)

    it("always drops content-length and accept-encoding, sets host and content-type", function()
        local up = request(backend({ openAI = {} }, { hostOverride = "127.0.0.1:8081" })).upstream
        assert.is_true(has(up.headers_remove, "content-length"))
        assert.is_true(has(up.headers_remove, "accept-encoding"))
        assert.equal("127.0.0.1:8081", up.headers_set.host)
        assert.equal("application/json", up.headers_set["content-type"])
    end)
end)

describe("upstream endpoint and path", function()
    it("uses the provider defaults over TLS", function()
        local up = request(backend({ openAI = {} })).upstream
        assert.same({ "api.openai.com", 443, true, "api.openai.com", "/v1/chat/completions" },
            { up.host, up.port, up.tls, up.sni, up.path })
        up = request(backend({ anthropic = {} }), "/v1/messages", '{"model":"c","max_tokens":1,"messages":[]}').upstream
        assert.same({ "api.anthropic.com", 443, true, "/v1/messages" }, { up.host, up.port, up.tls, up.path })
    end)

    it("hostOverride is plain HTTP unless backendTLS is set", function()
        local up = request(backend({ openAI = {} }, { hostOverride = "127.0.0.1:9000" })).upstream
        assert.same({ "127.0.0.1", 9000, false }, { up.host, up.port, up.tls })
        up = request(backend({ openAI = {} }, { hostOverride = "llm.internal:8443" },
            { backendTLS = { hostname = "llm.example.com" } })).upstream
        assert.same({ "llm.internal", 8443, true, "llm.example.com" }, { up.host, up.port, up.tls, up.sni })
    end)

    it("pathPrefix replaces the provider base path, pathOverride the whole path", function()
        local up = request(backend({ openAI = {} }, { pathPrefix = "/openai/v1" })).upstream
        assert.equal("/openai/v1/chat/completions", up.path)
        up = request(backend({ openAI = {} }, { pathOverride = "/custom/chat" })).upstream
        assert.equal("/custom/chat", up.path)
        up = request(backend({ custom = { baseUrl = "http://127.0.0.1:11434/v1" } }), "/v1/embeddings",
            '{"model":"e","input":"x"}').upstream
        assert.same({ "127.0.0.1", 11434, false, "/v1/embeddings" }, { up.host, up.port, up.tls, up.path })
        up = request(backend({ custom = { baseUrl = "http://127.0.0.1:1", formats = { { type = "completions", path = "/generate" } } } })).upstream
        assert.equal("/generate", up.path)
    end)

    it("model override replaces the body model, the path model and the recorded model", function()
        local ctx, rec = request(backend({ openAI = { model = "gpt-4.1" } }))
        assert.equal("gpt-4.1", cjson.decode(ctx.upstream.body).model)
        assert.equal("gpt-4.1", rec.llm.request_model)
        ctx = request(backend({ gemini = { model = "gemini-2.5-pro" } }), "/v1beta/models/x:generateContent", '{"contents":[]}')
        assert.equal("/v1beta/models/gemini-2.5-pro:generateContent", ctx.upstream.path)
    end)

    it("keeps the request body bytes when nothing changes", function()
        local body = '{"model":"m",  "messages":[{"role":"user","content":"a/b"}], "tools":[]}'
        local ctx = request(backend({ openAI = {} }), nil, body)
        assert.equal(body, ctx.upstream.body)
        ctx = request(backend({ openAI = {} }), nil, body:gsub('"tools"', '"stream":true,"tools"'))
        assert.equal('{"stream_options":{"include_usage":true},"model":"m",  "messages":[{"role":"user","content":"a/b"}], "stream":true,"tools":[]}',
            ctx.upstream.body)
    end)
end)

describe("policies.ai.routes", function()
    it("maps path suffixes to route types, longest first, with a * fallback", function()
        local b = backend({ openAI = {} }, nil, { ai = { routes = {
            ["/v1/chat/completions"] = "completions", ["/completions"] = "passthrough",
            ["/v1/embeddings"] = "embeddings", ["*"] = "passthrough" } } })
        assert.equal("completions", b:route_of("/v1/chat/completions?x=1"))
        assert.equal("passthrough", b:route_of("/v1/completions"))
        assert.equal("embeddings", b:route_of("/v1/embeddings"))
        assert.equal("passthrough", b:route_of("/v1/files"))
        local c = backend({ openAI = {} }, nil, { ai = { routes = { ["/x"] = "detect" } } })
        assert.equal("completions", c:route_of("/anything"))         -- no fallback: completions
        assert.equal("passthrough", c:route_of("/x"))                 -- detect found nothing
    end)

    it("without routes detects the wire format from the path", function()
        local b = backend({ openAI = {} })
        assert.equal("messages", b:route_of("/v1/messages"))
        assert.equal("anthropicTokenCount", b:route_of("/v1/messages/count_tokens"))
        assert.equal("responses", b:route_of("/v1/responses"))
        assert.equal("models", b:route_of("/v1/models"))
        assert.equal("generateContent", b:route_of("/v1beta/models/g:streamGenerateContent?alt=sse"))
        assert.equal("converse", b:route_of("/model/m/converse"))
        assert.equal("completions", b:route_of("/whatever"))
    end)

    it("passthrough forwards the request untouched apart from auth", function()
        local b = backend({ openAI = {} }, nil, { backendAuth = { key = "k" }, ai = { routes = { ["*"] = "passthrough" } } })
        local ctx, rec = request(b, "/v1/files?purpose=x", "not json")
        assert.equal("/v1/files?purpose=x", ctx.upstream.path)
        assert.equal("not json", ctx.upstream.body)
        assert.equal("Bearer k", ctx.upstream.headers_set.authorization)
        assert.equal("passthrough", rec.llm.operation)
        assert.equal("openai", rec.llm.provider)
        b:on_response_headers(ctx, 200, { ["content-type"] = "application/json" })
        assert.equal("abc", b:on_body(ctx, "abc", true))
    end)

    it("models goes to the provider's model list", function()
        local ctx = request(backend({ openAI = {} }, nil, { backendAuth = { key = "k" } }), "/v1/models", "")
        assert.equal("/v1/models", ctx.upstream.path)
        assert.equal("", ctx.upstream.body)
    end)
end)

describe("request errors in the client's shape", function()
    it("invalid JSON is a 400 OpenAI error for chat clients", function()
        local ctx, rec = request(backend({ openAI = {} }), nil, "{not json")
        assert.is_nil(ctx.upstream)
        assert.equal(400, ctx.respond.status)
        local e = cjson.decode(ctx.respond.body).error
        assert.equal("invalid_request_error", e.type)
        assert.matches("^invalid JSON", e.message)
        assert.equal(e.message, rec.error)
        assert.equal(400, request(backend({ openAI = {} }), nil, "[1,2]").respond.status)
        assert.equal(400, request(backend({ openAI = {} }), nil, "[]").respond.status)
    end)

    it("a missing model is a 400 Anthropic error for Messages clients", function()
        local ctx = request(backend({ anthropic = {} }), "/v1/messages", '{"max_tokens":1,"messages":[]}')
        assert.equal(400, ctx.respond.status)
        assert.same({ type = "error", error = { type = "invalid_request_error", message = "missing model" } },
            cjson.decode(ctx.respond.body))
    end)

    it("an unsupported route or translation is a 400", function()
        local ctx = request(backend({ anthropic = {} }), "/v1/responses", '{"model":"m","input":"x"}')
        assert.equal(400, ctx.respond.status)
        assert.matches("does not support responses", cjson.decode(ctx.respond.body).error.message)
        ctx = request(backend({ openAI = {} }), "/v1/messages", '{"model":"m","max_tokens":1,"messages":[]}')
        assert.equal(400, ctx.respond.status)
        assert.equal("error", cjson.decode(ctx.respond.body).type)
    end)

    it("upstream failures become 502 in the client's shape without secrets", function()
        local b = backend({ anthropic = {} }, nil, { backendAuth = { key = "sk-ant-secret" } })
        local ctx = request(b, "/v1/messages", '{"model":"c","max_tokens":1,"messages":[]}')
        local st, hdrs, body = b:on_error(ctx, 502, "upstream connect failed")
        assert.equal(502, st)
        assert.equal("application/json", hdrs["content-type"])
        assert.same({ type = "error", error = { type = "api_error", message = "upstream connect failed" } }, cjson.decode(body))
        assert.is_nil(body:find("sk-ant-secret", 1, true))
        local ctx2 = request(b)
        local _, _, body2 = b:on_error(ctx2, 502, "upstream connect failed")
        assert.equal("server_error", cjson.decode(body2).error.type)
    end)

    it("provider errors pass through with their status and bytes", function()
        local b = backend({ openAI = {} })
        local ctx, rec = request(b)
        local body = '{"error":{"message":"Rate limit","type":"requests","code":"rate_limit_exceeded"}}'
        assert.is_nil(b:on_response_headers(ctx, 429, { ["content-type"] = "application/json" }))
        assert.equal(body, b:on_body(ctx, body, true))
        b:on_complete(ctx, 2)
        assert.is_nil(rec.llm.input_tokens)
    end)
end)

describe("response buffering", function()
    it("forwards non-streaming chunks immediately and stops parsing past the cap", function()
        local b = backend({ openAI = {} }, nil, nil, { max_response_bytes = 50 })
        local ctx, rec = request(b)
        b:on_response_headers(ctx, 200, { ["content-type"] = "application/json" })
        local body = '{"id":"x","model":"m","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2},"choices":[]}'
        assert.equal(body:sub(1, 40), b:on_body(ctx, body:sub(1, 40), false))
        assert.equal(body:sub(41), b:on_body(ctx, body:sub(41), true))
        b:on_complete(ctx, 2)
        assert.is_nil(rec.llm.input_tokens)
        assert.is_nil(ctx.buf)
    end)

    it("parses a Gemini streamGenerateContent JSON array (no alt=sse)", function()
        local b = backend({ gemini = {} })
        local ctx, rec = request(b, "/v1beta/models/g:streamGenerateContent", '{"contents":[]}')
        b:on_response_headers(ctx, 200, { ["content-type"] = "application/json" })
        b:on_body(ctx, '[{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"modelVersion":"g"},'
            .. '{"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"STOP"}],'
            .. '"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}]', true)
        b:on_complete(ctx, 2)
        assert.equal(5, rec.llm.total_tokens)
        assert.same({ "STOP" }, rec.llm.finish_reasons)
        assert.is_true(rec.llm.streaming)
    end)
end)

describe("translated responses (OpenAI client, Anthropic backend)", function()
    it("sends 503 for Anthropic's 529 and an OpenAI error body", function()
        local b = backend({ anthropic = {} }, nil, { backendAuth = { key = "k" } })
        local ctx = request(b)
        assert.is_true(ctx.translate)
        local hs, hr, st = b:on_response_headers(ctx, 529, { ["content-type"] = "application/json" })
        assert.equal(503, st)
        assert.equal("application/json", hs["content-type"])
        assert.same({ "content-length" }, hr)
        assert.equal("", b:on_body(ctx, '{"type":"error","error":', false))
        local out = b:on_body(ctx, '{"type":"overloaded_error","message":"Overloaded"}}', true)
        assert.same({ message = "Overloaded", type = "server_error", code = "overloaded_error", param = cjson.null },
            cjson.decode(out).error)
    end)

    it("closes a translated stream with [DONE] even when message_stop never comes", function()
        local b = backend({ anthropic = {} })
        local ctx = request(b, nil, '{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}')
        local hs = b:on_response_headers(ctx, 200, { ["content-type"] = "text/event-stream" })
        assert.equal("text/event-stream", hs["content-type"])
        local out = b:on_body(ctx, 'event: message_start\ndata: {"type":"message_start","message":'
            .. '{"id":"m1","model":"c","usage":{"input_tokens":1,"output_tokens":1}}}\n\n', false)
        assert.matches('"role":"assistant"', out)
        assert.equal("data: [DONE]\n\n", b:on_body(ctx, "", true))
    end)
end)

describe("ai backend config, more", function()
    it("rejects provider groups explicitly", function()
        local b, err = llm.new_backend({ groups = { { providers = {} } } })
        assert.is_nil(b)
        assert.equal("ai.groups: provider groups are not supported yet", err)
    end)

    it("merges ai.policies with the backend policies, the latter winning", function()
        local b = assert(llm.new_backend({ name = "x", provider = { openAI = {} },
            policies = { backendAuth = { key = "inner" }, ai = { routes = { ["*"] = "passthrough" } } } },
            { backendAuth = { key = "outer" } }))
        local ctx = request(b, "/v1/anything")
        assert.equal("Bearer outer", ctx.upstream.headers_set.authorization)
        assert.equal("passthrough", ctx.rec.llm.operation)
    end)
end)

describe("native passthrough routes", function()
    it("forward Gemini countTokens with x-goog-api-key and Anthropic count_tokens with x-api-key", function()
        local g = backend({ gemini = {} }, nil, { backendAuth = { key = "AIza" } })
        local ctx = request(g, "/v1beta/models/gemini-2.5-flash:countTokens", '{"contents":[]}')
        assert.equal("/v1beta/models/gemini-2.5-flash:countTokens", ctx.upstream.path)
        assert.equal("AIza", ctx.upstream.headers_set["x-goog-api-key"])
        assert.equal("geminiCountTokens", ctx.rec.llm.operation)
        local a = backend({ anthropic = {} }, nil, { backendAuth = { key = "sk-ant" } })
        ctx = request(a, "/v1/messages/count_tokens", '{"model":"c","messages":[]}')
        assert.equal("/v1/messages/count_tokens", ctx.upstream.path)
        assert.equal("sk-ant", ctx.upstream.headers_set["x-api-key"])
    end)
end)
