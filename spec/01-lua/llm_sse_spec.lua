-- spec/01-lua/llm_sse_spec.lua -- lunagate.llm.sse: incremental SSE decoding
-- luacheck: max line length 160
local sse = require "lunagate.llm.sse"

local function decode_all(chunks, opts)
    local d = sse.decoder(opts)
    local out = {}
    for _, c in ipairs(chunks) do
        local evs, err = d:feed(c)
        if not evs then return nil, err end
        for _, e in ipairs(evs) do out[#out + 1] = e end
    end
    return out
end

local MIXED = table.concat({
    ": this is a comment\n",
    "event: first\n",
    "data: hello\n",
    "\n",
    "data: line one\r\n",
    "data:line two\r\n",
    "id: 7\r\n",
    "\r\n",
    "event: third\r",
    "data: {\"a\": 1}\r",
    "\r",
    "retry: 100\n",
    "data\n",
    "\n",
    "event: ignored-no-data\n",
    "\n",
    "data: last\n\n",
})

local WANT = {
    { event = "first", data = "hello" },
    { data = "line one\nline two", id = "7" },
    { event = "third", data = "{\"a\": 1}", id = "7" },
    { data = "", id = "7" },
    { data = "last", id = "7" },
}

describe("lunagate.llm.sse decoder", function()
    it("decodes events, multi-line data, comments, ids and all line endings", function()
        assert.same(WANT, decode_all({ MIXED }))
    end)

    it("gives the same events when split at every byte boundary", function()
        for i = 1, #MIXED - 1 do
            local got = decode_all({ MIXED:sub(1, i), MIXED:sub(i + 1) })
            assert.same(WANT, got, "split at " .. i)
        end
    end)

    it("gives the same events when fed one byte at a time", function()
        local chunks = {}
        for i = 1, #MIXED do chunks[i] = MIXED:sub(i, i) end
        assert.same(WANT, decode_all(chunks))
    end)

    it("gives the same events split at every pair of boundaries (CRLF across chunks)", function()
        local s = "data: a\r\n\r\ndata: b\r\rdata: c\n\n"
        local want = decode_all({ s })
        assert.same({ { data = "a" }, { data = "b" }, { data = "c" } }, want)
        for i = 1, #s - 2 do
            for j = i + 1, #s - 1 do
                assert.same(want, decode_all({ s:sub(1, i), s:sub(i + 1, j), s:sub(j + 1) }))
            end
        end
    end)

    it("strips a leading byte order mark and one space after the colon only", function()
        assert.same({ { data = "  x" } }, decode_all({ "\239\187\191data:   x\n\n" }))
    end)

    it("does not dispatch an event without its blank line", function()
        local d = sse.decoder()
        assert.same({}, d:feed("data: partial\n"))
        assert.same({}, d:finish())
    end)

    it("marks the stream failed instead of buffering past the cap", function()
        local d = sse.decoder({ max_bytes = 64 })
        assert.same({}, d:feed("data: " .. string.rep("x", 40)))
        local evs, err = d:feed(string.rep("y", 40))
        assert.is_nil(evs)
        assert.matches("exceeds 64 bytes", err)
        assert.is_true(d.failed)
        local again, err2 = d:feed("\n\n")
        assert.is_nil(again)
        assert.equal(err, err2)
    end)

    it("counts accumulated data lines against the cap", function()
        local d = sse.decoder({ max_bytes = 100 })
        local evs, err
        for _ = 1, 20 do
            evs, err = d:feed("data: 0123456789\n")
            if not evs then break end
        end
        assert.is_nil(evs)
        assert.matches("exceeds", err)
    end)

    it("uses a 1 MiB default cap", function()
        assert.equal(1024 * 1024, sse.decoder().max_bytes)
    end)

    it("encodes events that decode back to themselves", function()
        local ev = { event = "message_delta", data = "{\"x\":1}\nsecond line", id = "3" }
        assert.same({ ev }, decode_all({ sse.encode(ev) }))
    end)
end)
