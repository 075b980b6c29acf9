-- spec/03-plugins/examples_spec.lua -- the example plugins of config/examples/plugins/
local fake = require "helpers.fake_lunagate"

local function load(name)
    return assert(loadfile("config/examples/plugins/" .. name .. ".lua", "t"))()
end

describe("example plugins", function()
    local lg, schema, plugins

    before_each(function()
        lg = fake.install()
        schema = require "lunagate.schema"
        plugins = require "lunagate.plugins"
    end)

    after_each(function()
        fake.uninstall()
    end)

    describe("request-hash", function()
        it("passes the contract and fills defaults", function()
            local p = load("request-hash")
            assert.is_true(plugins.check_contract(p))
            assert.same({ header = "x-request-hash", length = 64 }, schema.validate(p.schema, nil))
            local _, errs = schema.validate(p.schema, { header = "bad header" })
            assert.is_not_nil(errs["config.header"])
        end)

        it("adds the sha256 of method and path as a response header", function()
            local p = load("request-hash")
            local conf = assert(schema.validate(p.schema, { length = 16 }))
            fake.begin("access", { method = "POST", path = "/v1/chat/completions" })
            fake.call(p, "access", conf)
            fake.begin("header_filter", nil, { status = 200 })
            fake.call(p, "header_filter", conf)
            local want = lg.crypto.sha256_hex("POST /v1/chat/completions"):sub(1, 16)
            assert.equal(want, fake.response.headers["x-request-hash"])
            assert.equal(16, #want)
        end)
    end)

    describe("prompt-guard", function()
        local p, conf
        before_each(function()
            fake.declare("hits", 10)
            p = load("prompt-guard")
            conf = assert(schema.validate(p.schema, { patterns = { "secret" }, count_dict = "hits" }))
        end)

        it("requires at least one pattern", function()
            local _, errs = schema.validate(p.schema, {})
            assert.same({ ["config.patterns"] = "required field missing" }, errs)
            _, errs = schema.validate(p.schema, { patterns = {} })
            assert.same({ ["config.patterns"] = "length must be at least 1" }, errs)
        end)

        it("rejects a matching message with a 400 JSON error and counts it", function()
            fake.begin("access", { method = "POST", path = "/v1/chat/completions",
                body = '{"model":"m","messages":[{"role":"system","content":"be nice"},'
                    .. '{"role":"user","content":[{"type":"text","text":"tell me the SECRET"}]}]}' })
            local status, body = fake.call(p, "access", conf)
            assert.equal(400, status)
            assert.equal("prompt_rejected", body.error.code)
            assert.equal("invalid_request_error", body.error.type)
            assert.equal(1, lg.shared.hits:get("rejected"))
        end)

        it("honours case_sensitive", function()
            conf = assert(schema.validate(p.schema, { patterns = { "secret" }, case_sensitive = true }))
            fake.begin("access", { body = '{"messages":[{"role":"user","content":"SECRET"}]}' })
            assert.is_nil(fake.call(p, "access", conf))
        end)

        it("lets other requests through", function()
            fake.begin("access", { body = '{"messages":[{"role":"user","content":"hello"}]}' })
            assert.is_nil(fake.call(p, "access", conf))
            fake.begin("access", { body = "not json" })
            assert.is_nil(fake.call(p, "access", conf))
            fake.begin("access", { body = nil })
            assert.is_nil(fake.call(p, "access", conf))
        end)

        it("checks the legacy prompt field", function()
            fake.begin("access", { body = '{"prompt":"a secret plan"}' })
            assert.equal(400, (fake.call(p, "access", conf)))
        end)
    end)
end)
