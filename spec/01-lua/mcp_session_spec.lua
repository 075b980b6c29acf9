-- mcp_session_spec.lua -- mcp-session-id encoding (base64url JSON, or sealed with AES-GCM)
-- SPDX-License-Identifier: MIT
--
-- The real AES-256-GCM is exercised in spec/02-c/test_lapi_aead.c (same codec, real cipher);
-- here a stand-in AEAD (HMAC tag over a XOR stream) checks that the codec seals, verifies and
-- reports failures the same way.
local session = require "lunagate.mcp.session"
local fake = require "helpers.fake_lunagate"

describe("mcp.session", function()
    local lg
    setup(function() lg = fake.install() end)
    teardown(function() fake.uninstall() end)

    local function fake_aead()
        local function stream(key, nonce, n)
            local out = {}
            local i = 0
            while #table.concat(out) < n do
                i = i + 1
                out[#out + 1] = lg.crypto.hmac_sha256(key, nonce .. i)
            end
            return table.concat(out):sub(1, n)
        end
        local function xor(a, b)
            return (a:gsub("()(.)", function(i, c) return string.char(c:byte() ~ b:byte(i)) end))
        end
        return {
            seal = function(key, pt, aad)
                assert(#key == 32)
                local nonce = lg.crypto.random_bytes(12)
                local ct = xor(pt, stream(key, nonce, #pt))
                return nonce .. ct .. lg.crypto.hmac_sha256(key, aad .. nonce .. ct):sub(1, 16)
            end,
            open = function(key, blob, aad)
                if #blob < 28 then return nil, "authentication failed" end
                local nonce, ct, tag = blob:sub(1, 12), blob:sub(13, -17), blob:sub(-16)
                if lg.crypto.hmac_sha256(key, aad .. nonce .. ct):sub(1, 16) ~= tag then
                    return nil, "authentication failed"
                end
                return xor(ct, stream(key, nonce, #ct))
            end,
        }
    end

    local state = { targets = { { name = "time", session = "abc", addr = "http://h/mcp" },
                                { name = "everything" } }, version = "2025-06-18" }

    it("base64url round-trips every length and byte", function()
        for n = 0, 40 do
            local s = {}
            for i = 1, n do s[i] = string.char((i * 37 + n) % 256) end
            s = table.concat(s)
            local e = session.b64url_encode(s)
            assert.is_nil(e:find("[+/=]"))
            assert.equal(s, session.b64url_decode(e))
        end
        assert.is_nil(session.b64url_decode("a"))
        assert.is_nil(session.b64url_decode("ab*d"))
    end)

    it("encodes the upstream sessions as base64url JSON in plain mode", function()
        local c = assert(session.codec{})
        local id = c:encode(state)
        local doc = require("lunagate.mcp.json").decode(session.b64url_decode(id))
        assert.same({ t = "time", s = "abc", b = "http://h/mcp" }, doc.s[1])
        assert.same(state, c:decode(id))
    end)

    it("adds a random nonce so equal states give different ids", function()
        local c = assert(session.codec{ random = lg.crypto.random_bytes })
        assert.are_not.equal(c:encode(state), c:encode(state))
        assert.same(state, c:decode(c:encode(state)))
    end)

    it("seals with the key: round trip, opaque, tamper and wrong key detected", function()
        local aead = fake_aead()
        local c = assert(session.codec{ key = string.rep("0f", 32), aead = aead })
        local id = c:encode(state)
        assert.same(state, c:decode(id))
        assert.is_nil(session.b64url_decode(id):find("time", 1, true))
        local raw = session.b64url_decode(id)
        local flipped = raw:sub(1, 14) .. string.char(raw:byte(15) ~ 1) .. raw:sub(16)
        local s, err = c:decode(session.b64url_encode(flipped))
        assert.is_nil(s)
        assert.equal("invalid session id: authentication failed", err)
        local other = assert(session.codec{ key = string.rep("f0", 32), aead = aead })
        assert.is_nil(other:decode(id))
        assert.is_nil((assert(session.codec{})):decode(id))
    end)

    it("rejects bad keys and garbage ids", function()
        assert.is_nil(session.codec{ key = "abc", aead = fake_aead() })
        local _, err = session.codec{ key = string.rep("a", 64) }
        assert.truthy(err:find("not available"))
        local c = assert(session.codec{})
        for _, bad in ipairs({ "", "***", session.b64url_encode("not json"),
                               session.b64url_encode('{"s":5}'),
                               session.b64url_encode('{"s":[{"x":1}]}'), string.rep("A", 20000) }) do
            local s, e = c:decode(bad)
            assert.is_nil(s)
            assert.truthy(e:find("invalid session id", 1, true))
        end
    end)
end)
