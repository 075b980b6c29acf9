-- spec/01-lua/schema_spec.lua -- lunagate.schema: validation, defaults, errors, freezing
local schema = require "lunagate.schema"

local S = {
    fields = {
        { provider = { type = "string", required = true, one_of = { "openai", "anthropic" },
                       description = "Wire protocol." } },
        { max_body = { type = "integer", default = 1024, between = { 1, 4096 }, description = "Bytes." } },
        { labels = { type = "map", keys = { type = "string" }, values = { type = "string" },
                     default = {}, description = "Extra labels." } },
        { tags = { type = "array", elements = { type = "string" }, description = "Tags." } },
        { limits = { type = "record", description = "Limits.", fields = {
            { rps = { type = "number", default = 10, description = "Requests per second." } },
        } } },
        { enabled = { type = "boolean", default = true, description = "On/off." } },
    },
    check = function(conf)
        if conf.provider == "anthropic" and conf.max_body > 2048 then
            return nil, "max_body: anthropic requests are limited to 2048"
        end
        return true
    end,
}

describe("lunagate.schema.validate", function()
    it("fills defaults and keeps given values", function()
        local conf = assert(schema.validate(S, { provider = "openai", tags = { "a" } }))
        assert.same({ provider = "openai", max_body = 1024, labels = {}, tags = { "a" },
                      enabled = true }, conf)
    end)

    it("does not modify its input", function()
        local input = { provider = "openai" }
        schema.validate(S, input)
        assert.same({ provider = "openai" }, input)
    end)

    it("converts integral numbers for integer fields", function()
        local conf = assert(schema.validate(S, { provider = "openai", max_body = 10.0 }))
        assert.equal("integer", math.type(conf.max_body))
    end)

    it("reports errors by config path", function()
        local conf, errs = schema.validate(S, {
            provider = "mistral", max_body = 1.5, labels = { a = 1 }, tags = { "x", 2 },
            limits = { rps = "fast" }, extra = true,
        })
        assert.is_nil(conf)
        assert.same({
            ["config.provider"] = "expected one of: openai, anthropic",
            ["config.max_body"] = "expected an integer",
            ["config.labels.a"] = "expected a string",
            ["config.tags[2]"] = "expected a string",
            ["config.limits.rps"] = "expected a number",
            ["config.extra"] = "unknown field",
        }, errs)
    end)

    it("requires required fields", function()
        local _, errs = schema.validate(S, {})
        assert.same({ ["config.provider"] = "required field missing" }, errs)
    end)

    it("checks ranges", function()
        local _, errs = schema.validate(S, { provider = "openai", max_body = 0 })
        assert.same({ ["config.max_body"] = "value should be between 1 and 4096" }, errs)
    end)

    it("runs the cross-field check and names the field", function()
        local _, errs = schema.validate(S, { provider = "anthropic", max_body = 4000 })
        assert.same({ ["config.max_body"] = "anthropic requests are limited to 2048" }, errs)
    end)

    it("treats a nil config as empty", function()
        local conf = assert(schema.validate({ fields = { { a = { type = "string", default = "x",
            description = "a" } } } }, nil))
        assert.same({ a = "x" }, conf)
    end)

    it("treats the JSON/YAML null as absent", function()
        local cjson = require "cjson"
        local conf = assert(schema.validate(S, { provider = "openai", max_body = cjson.null }))
        assert.equal(1024, conf.max_body)
    end)

    it("deep-copies defaults", function()
        local a = assert(schema.validate(S, { provider = "openai" }))
        a.labels.x = "y"
        local b = assert(schema.validate(S, { provider = "openai" }))
        assert.same({}, b.labels)
    end)

    it("raises on a non-table schema", function()
        assert.has_error(function() schema.validate(nil, {}) end,
            "bad argument #1 to 'validate' (schema table expected, got nil)")
    end)
end)

describe("lunagate.schema.check_schema", function()
    it("accepts a well-formed schema", function()
        assert.is_true(schema.check_schema(S))
    end)
    it("rejects unknown types and malformed fields", function()
        local ok, err = schema.check_schema({ fields = { { a = { type = "strnig" } } } })
        assert.is_nil(ok)
        assert.equal("a: unknown type 'strnig'", err)
        ok, err = schema.check_schema({ fields = { { a = { type = "string" }, b = {} } } })
        assert.is_nil(ok)
        assert.matches("expected { name = spec }", err, 1, true)
    end)
    it("lists undocumented fields", function()
        assert.same({ "b", "r.c" }, schema.undocumented({ fields = {
            { a = { type = "string", description = "A." } },
            { b = { type = "string" } },
            { r = { type = "record", description = "R.", fields = { { c = { type = "number" } } } } },
        } }))
    end)
end)

describe("lunagate.schema.freeze", function()
    it("gives a read-only view that still reads like a table", function()
        local f = schema.freeze({ a = 1, list = { "x", "y" }, nested = { b = 2 } })
        assert.equal(1, f.a)
        assert.equal(2, #f.list)
        assert.equal(2, f.nested.b)
        local n = 0
        for _ in pairs(f) do n = n + 1 end
        assert.equal(3, n)
        local seen = {}
        for i, v in ipairs(f.list) do seen[i] = v end
        assert.same({ "x", "y" }, seen)
        assert.has_error(function() f.a = 2 end)
        assert.has_error(function() f.nested.b = 3 end)
    end)
end)

describe("lunagate.schema.format_errors", function()
    it("sorts paths", function()
        assert.equal("config.a: x; config.b: y", schema.format_errors({ ["config.b"] = "y",
            ["config.a"] = "x" }))
    end)
end)
