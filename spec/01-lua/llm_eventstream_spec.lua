-- spec/01-lua/llm_eventstream_spec.lua -- lunagate.llm.eventstream: AWS event-stream framing
-- luacheck: max line length 160
local es = require "lunagate.llm.eventstream"
local cjson = require "cjson"

local FIXTURE = "spec/fixtures/providers/bedrock/converse/streams/basic.bin"

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local function decode_all(chunks)
    local d = es.decoder()
    local out = {}
    for _, c in ipairs(chunks) do
        local msgs, err = d:feed(c)
        if not msgs then return nil, err end
        for _, m in ipairs(msgs) do out[#out + 1] = m end
    end
    return out
end

describe("lunagate.llm.eventstream", function()
    it("computes the standard CRC-32 check value", function()
        assert.equal(0xCBF43926, es.crc32("123456789"))
        assert.equal(0, es.crc32(""))
    end)

    it("decodes a ConverseStream capture (CRCs written by zlib)", function()
        local msgs = assert(decode_all({ read(FIXTURE) }))
        local types = {}
        for i, m in ipairs(msgs) do
            types[i] = m.event
            assert.equal("event", m.message_type)
            assert.equal("application/json", m.headers[":content-type"])
            assert.is_table(cjson.decode(m.data))
        end
        assert.same({ "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop",
                      "messageStop", "metadata" }, types)
        assert.equal(" three songs.", cjson.decode(msgs[3].data).delta.text)
    end)

    it("decodes the same messages split at every byte boundary", function()
        local data = read(FIXTURE)
        local want = decode_all({ data })
        for i = 1, #data - 1 do
            local got = decode_all({ data:sub(1, i), data:sub(i + 1) })
            assert.same(want, got, "split at " .. i)
        end
    end)

    it("fails on a prelude CRC mismatch", function()
        local data = read(FIXTURE)
        local bad = data:sub(1, 9) .. string.char(data:byte(10) ~ 0xff) .. data:sub(11)
        local msgs, err = decode_all({ bad })
        assert.is_nil(msgs)
        assert.equal("eventstream: prelude crc mismatch", err)
    end)

    it("fails on a message CRC mismatch (corrupted payload)", function()
        local data = read(FIXTURE)
        local total = string.unpack(">I4", data)
        local pos = total - 6                    -- inside the first payload
        local bad = data:sub(1, pos - 1) .. string.char(data:byte(pos) ~ 0x01) .. data:sub(pos + 1)
        local d = es.decoder()
        local msgs, err = d:feed(bad)
        assert.is_nil(msgs)
        assert.equal("eventstream: message crc mismatch", err)
        assert.is_true(d.failed)
        assert.is_nil((d:feed("more")))
    end)

    it("rejects messages over the size cap and impossible lengths", function()
        local big = es.encode_event("contentBlockDelta", string.rep("x", 2000))
        local d = es.decoder({ max_bytes = 1000 })
        local msgs, err = d:feed(big)
        assert.is_nil(msgs)
        assert.matches("exceeds 1000 bytes", err)
        local prelude = string.pack(">I4I4", 8, 0)
        local bad = prelude .. string.pack(">I4", es.crc32(prelude)) .. "xxxx"
        local m2, err2 = es.decoder():feed(bad)
        assert.is_nil(m2)
        assert.equal("eventstream: bad lengths", err2)
    end)

    it("round-trips encode/decode and parses every header type", function()
        local m = es.encode({ { ":event-type", "x" }, { "k", "v" } }, "payload")
        local got = assert(decode_all({ m }))
        assert.equal("x", got[1].event)
        assert.equal("v", got[1].headers.k)
        assert.equal("payload", got[1].payload)
        -- hand-built headers: bool true/false, byte, int16, int32, int64, bytes, timestamp, uuid
        local h = string.pack(">s1B", "t", 0) .. string.pack(">s1B", "f", 1)
            .. string.pack(">s1Bi1", "b", 2, -3) .. string.pack(">s1Bi2", "s", 3, 300)
            .. string.pack(">s1Bi4", "i", 4, 70000) .. string.pack(">s1Bi8", "l", 5, 1 << 40)
            .. string.pack(">s1Bs2", "y", 6, "by") .. string.pack(">s1Bi8", "ts", 8, 1700000000000)
            .. string.pack(">s1B", "u", 9) .. string.rep("\1", 16)
        local total = 12 + #h + 4
        local prelude = string.pack(">I4I4", total, #h)
        local msg = prelude .. string.pack(">I4", es.crc32(prelude)) .. h
        msg = msg .. string.pack(">I4", es.crc32(msg))
        local r = assert(decode_all({ msg }))[1].headers
        assert.same({ t = true, f = false, b = -3, s = 300, i = 70000, l = 1 << 40, y = "by",
                      ts = 1700000000000, u = string.rep("\1", 16) }, r)
    end)

    it("reports exception messages with their type", function()
        local m = es.encode({ { ":exception-type", "throttlingException" },
                              { ":content-type", "application/json" },
                              { ":message-type", "exception" } }, '{"message":"slow down"}')
        local got = assert(decode_all({ m }))[1]
        assert.equal("exception", got.message_type)
        assert.equal("throttlingException", got.event)
    end)
end)
