-- spec/03-plugins/logging/text_spec.lua -- the bundled text format plugin on its own
local plugin = require "logging.text"
local plugins = require "lunagate.plugins"

local META = { time = "2025-09-12T18:23:54.661414Z", level = "info", scope = "request" }

describe("logging/text", function()
    it("has the plugin shape (name, version, priority, schema) and format()", function()
        local copy = {}
        for k, v in pairs(plugin) do
            if k ~= "format" then copy[k] = v end
        end
        assert.is_true(plugins.check_contract(copy))
        assert.equal("text", plugin.name)
        assert.equal("function", type(plugin.format))
    end)

    it("writes <time>\\t<level>\\t<scope> then key=value pairs", function()
        assert.equal("2025-09-12T18:23:54.661414Z\tinfo\trequest",
                     plugin.format({}, {}, META))
        assert.equal("2025-09-12T18:23:54.661414Z\tinfo\trequest http.status=200 "
            .. "llm.request.model= duration=3804ms",
            plugin.format({ { "http.status", 200 }, { "llm.request.model", "" },
                            { "duration", "3804ms" } }, {}, META))
    end)

    it("prints defaults bare and quoted fields JSON-encoded", function()
        local line = plugin.format({
            { "http.path", "/a b" },
            { "error", 'said "no"', quote = true },
            { "team", "blue", quote = true },
            { "n", 3, quote = true },
            { "f", 0.25 },
            { "ok", false },
            { "list", { 1, "x" } },
            { "map", { a = 1 }, quote = true },
        }, {}, META)
        assert.equal(META.time .. '\tinfo\trequest http.path=/a b error="said \\"no\\"" '
            .. 'team="blue" n=3 f=0.25 ok=false list=[1,"x"] map={"a":1}', line)
    end)

    it("escapes control bytes in bare values so the line stays one line", function()
        local line = plugin.format({ { "http.host", "a\nb\tc\1" } }, {}, META)
        assert.equal(META.time .. "\tinfo\trequest http.host=a\\nb\\tc\\x01", line)
    end)
end)
