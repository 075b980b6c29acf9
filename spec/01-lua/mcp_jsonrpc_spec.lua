-- mcp_jsonrpc_spec.lua -- lunagate.mcp.json (array-preserving codec) and lunagate.mcp.jsonrpc
-- SPDX-License-Identifier: MIT
local json = require "lunagate.mcp.json"
local rpc = require "lunagate.mcp.jsonrpc"

describe("mcp.json", function()
    it("keeps empty and non-empty arrays arrays through a round trip", function()
        local src = '{"required":[],"list":[1,2],"obj":{},"n":null}'
        local v = assert(json.decode(src))
        assert.equal(json.array_mt, getmetatable(v.required))
        assert.equal(json.null, v.n)
        local back = json.decode(json.encode(v))
        assert.equal(json.array_mt, getmetatable(back.required))
        assert.equal(0, #back.required)
        assert.equal("table", type(back.obj))
        assert.is_nil(getmetatable(back.obj))
        assert.truthy(json.encode(v):find('"required":[]', 1, true))
        assert.truthy(json.encode(v):find('"obj":{}', 1, true))
        assert.truthy(json.encode(v):find('"n":null', 1, true))
    end)

    it("decodes integers as integers and keeps floats", function()
        local v = json.decode('{"a":3,"b":2.5,"c":-7,"d":1e3,"big":9007199254740993}')
        assert.equal("integer", math.type(v.a))
        assert.equal("float", math.type(v.b))
        assert.equal(-7, v.c)
        assert.equal(1000, v.d)
        assert.equal(9007199254740993, v.big)
        assert.equal('{"x":9007199254740993}', json.encode({ x = v.big }))
    end)

    it("handles escapes and unicode, including surrogate pairs", function()
        local v = json.decode('"a\\n\\"b\\u00e9\\ud83d\\ude00/\\/"')
        assert.equal('a\n"b\xc3\xa9\xf0\x9f\x98\x80//', v)
        assert.equal('"a\\n\\"b\xc3\xa9\xf0\x9f\x98\x80//"', json.encode(v))
        assert.equal('"\\u0001"', json.encode("\1"))
    end)

    it("reports malformed input with a position", function()
        for _, bad in ipairs({ "", "{", "[1,", '{"a" 1}', "tru", "[1] x", '"open', "01x" }) do
            local v, err = json.decode(bad)
            assert.is_nil(v)
            assert.is_string(err)
        end
        local _, err = json.decode('{"a":}')
        assert.truthy(err:find("character 6", 1, true))
    end)

    it("rejects absurd nesting instead of overflowing the stack", function()
        local v, err = json.decode(string.rep("[", 500) .. string.rep("]", 500))
        assert.is_nil(v)
        assert.truthy(err:find("nested"))
    end)
end)

describe("mcp.jsonrpc", function()
    it("classifies requests, notifications and responses", function()
        local m, kind = rpc.parse('{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
        assert.equal("request", kind)
        assert.equal("tools/list", m.method)
        assert.equal("notification", select(2, rpc.parse('{"jsonrpc":"2.0","method":"x"}')))
        assert.equal("response", select(2, rpc.parse('{"jsonrpc":"2.0","id":"a","result":{}}')))
        assert.equal("response",
            select(2, rpc.parse('{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"m"}}')))
    end)

    it("answers parse errors with -32700 and a null id", function()
        local m, err = rpc.parse("{oops")
        assert.is_nil(m)
        assert.equal(-32700, err.error.code)
        assert.equal(json.null, err.id)
        assert.truthy(json.encode(err):find('"id":null', 1, true))
    end)

    it("answers invalid requests with -32600, keeping a usable id", function()
        local cases = {
            { '{"id":1,"method":"x"}', "jsonrpc" },
            { '{"jsonrpc":"2.0","id":1,"method":""}', "method" },
            { '{"jsonrpc":"2.0","id":1.5,"method":"x"}', "id must be" },
            { '{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}', "params" },
            { '{"jsonrpc":"2.0","id":1}', "not a request" },
            { '{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1}}', "not both" },
            { '[{"jsonrpc":"2.0","id":1,"method":"x"}]', "batches" },
            { '"just a string"', "object" },
        }
        for _, c in ipairs(cases) do
            local m, err = rpc.parse(c[1])
            assert.is_nil(m, c[1])
            assert.equal(-32600, err.error.code, c[1])
            assert.truthy(err.error.message:find(c[2], 1, true), err.error.message)
        end
        local _, err = rpc.parse('{"jsonrpc":"2.0","id":7,"method":"x","params":3}')
        assert.equal(7, err.id)
    end)

    it("builds messages", function()
        assert.same({ jsonrpc = "2.0", id = 1, result = { ok = true } }, rpc.result(1, { ok = true }))
        local e = rpc.error(3, rpc.UNAUTHORIZED, "no", { why = 1 })
        assert.same({ code = -32001, message = "no", data = { why = 1 } }, e.error)
        assert.equal("notification", rpc.classify(rpc.notification("notifications/initialized")))
        assert.equal("request", rpc.classify(rpc.request("agw-1", "ping")))
    end)
end)
