-- spec/03-plugins/logging/json_spec.lua -- the bundled JSON format plugin on its own
local plugin = require "logging.json"
local plugins = require "lunagate.plugins"
local cjson = require "cjson"

local META = { time = "2025-09-12T18:23:54.661414Z", level = "info", scope = "request" }

describe("logging/json", function()
    it("has the plugin shape (name, version, priority, schema) and format()", function()
        local copy = {}
        for k, v in pairs(plugin) do
            if k ~= "format" then copy[k] = v end
        end
        assert.is_true(plugins.check_contract(copy))
        assert.equal("json", plugin.name)
    end)

    it("writes one object: level, time, scope, then the fields in order", function()
        local line = plugin.format({ { "gateway", "default/default" }, { "http.status", 200 },
                                     { "duration", "12ms" } }, {}, META)
        assert.equal('{"level":"info","time":"2025-09-12T18:23:54.661414Z","scope":"request",'
            .. '"gateway":"default/default","http.status":200,"duration":"12ms"}', line)
        local obj = cjson.decode(line)
        assert.equal(200, math.tointeger(obj["http.status"]))
    end)

    it("keeps numbers numeric without exponents, nests tables, escapes strings", function()
        local line = plugin.format({
            { "i", 39 }, { "f", 0.7 }, { "whole", 3.0 }, { "tiny", 2.5e-8 }, { "big", 1e21 },
            { "b", true }, { "t", { role = "user", content = "hi\n" }, quote = true },
            { "l", { "a", "b" } }, { "s", 'q"\\/' }, { "u", "\xc3\x28" },
        }, {}, META)
        assert.is_nil(line:find("[eE][-+]%d"))
        assert.is_nil(line:find("\n", 1, true))
        assert.truthy(line:find('"i":39,"f":0.7,"whole":3,"tiny":0.000000025,'
            .. '"big":1000000000000000000000,"b":true,', 1, true))
        local obj = cjson.decode(line)
        assert.same({ role = "user", content = "hi\n" }, obj.t)
        assert.same({ "a", "b" }, obj.l)
        assert.equal('q"\\/', obj.s)
        assert.equal("\u{FFFD}(", obj.u)
    end)

    it("never repeats a key", function()
        local line = plugin.format({ { "level", "x" }, { "a", 1 }, { "a", 2 } }, {}, META)
        local obj = cjson.decode(line)
        assert.equal("info", obj.level)
        assert.equal(1, math.tointeger(obj.a))
        local n = 0
        for _ in line:gmatch('"a":') do n = n + 1 end
        assert.equal(1, n)
    end)
end)
