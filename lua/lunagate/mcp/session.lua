-- lunagate/mcp/session.lua -- mcp-session-id values that carry the upstream sessions
-- SPDX-License-Identifier: MIT
--
-- A session id encodes the per-target upstream session ids, so any replica can resume the
-- session (agentgateway's `{"s":[{"t":target,"s":sid,"b":addr}]}`; we add "v", the
-- negotiated protocol version, and "n", a random nonce that keeps ids unique):
--   plain:      base64url(JSON)
--   encrypted:  base64url(AES-256-GCM seal(key, JSON, aad = "mcp-session")), when
--               config `session.key` holds 64 hex digits (32 bytes)
--
--   local codec, err = session.codec{ key = "<hex>"|nil, aead = lg.crypto_aead|nil,
--                                     random = function(n) -> bytes }
--   codec:encode(state) -> id         state = { targets = { {name=, session=, addr=}, ... },
--                                               version = "2025-06-18" }
--   codec:decode(id)    -> state | nil, err
--   session.b64url_encode(s), session.b64url_decode(s) -> string | nil

local json = require "lunagate.mcp.json"

local session = {}

local AAD = "mcp-session"
local ALPHA = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local ENC, DEC = {}, {}
for i = 1, 64 do
    local c = ALPHA:sub(i, i)
    ENC[i - 1] = c
    DEC[c:byte()] = i - 1
end

function session.b64url_encode(s)
    local out, n = {}, 0
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local v = (a << 16) | ((b or 0) << 8) | (c or 0)
        n = n + 1
        out[n] = ENC[(v >> 18) & 63] .. ENC[(v >> 12) & 63] ..
                 (b and ENC[(v >> 6) & 63] or "") .. (c and ENC[v & 63] or "")
    end
    return table.concat(out)
end

function session.b64url_decode(s)
    if type(s) ~= "string" or #s % 4 == 1 then return nil end
    local out, n = {}, 0
    for i = 1, #s, 4 do
        local v, k = 0, 0
        for j = i, math.min(i + 3, #s) do
            local d = DEC[s:byte(j)]
            if not d then return nil end
            v = (v << 6) | d
            k = k + 1
        end
        v = v << (6 * (4 - k))
        local bytes = string.char((v >> 16) & 255, (v >> 8) & 255, v & 255)
        n = n + 1
        out[n] = bytes:sub(1, k - 1)
    end
    return table.concat(out)
end

local function unhex(h)
    if type(h) ~= "string" or #h ~= 64 or h:find("[^%x]") then return nil end
    return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

local Codec = {}
Codec.__index = Codec

function session.codec(opts)
    opts = opts or {}
    local c = setmetatable({ random = opts.random }, Codec)
    if opts.key ~= nil then
        c.key = unhex(opts.key)
        if not c.key then
            return nil, "session.key must be 64 hex digits (a 256-bit AES key)"
        end
        c.aead = opts.aead
        if not c.aead then
            return nil, "session.key is set but AES-GCM (lg.crypto_aead) is not available"
        end
    end
    return c
end

function Codec:encode(state)
    local s = json.array()
    for i, t in ipairs(state.targets or {}) do
        s[i] = { t = t.name, s = t.session, b = t.addr }
    end
    local doc = { s = s, v = state.version }
    if self.random then
        doc.n = session.b64url_encode(self.random(6))
    end
    local text = json.encode(doc)
    if self.key then
        local sealed = assert(self.aead.seal(self.key, text, AAD))
        return session.b64url_encode(sealed)
    end
    return session.b64url_encode(text)
end

function Codec:decode(id)
    if type(id) ~= "string" or id == "" or #id > 16384 then
        return nil, "invalid session id"
    end
    local raw = session.b64url_decode(id)
    if not raw then return nil, "invalid session id" end
    if self.key then
        local text, err = self.aead.open(self.key, raw, AAD)
        if not text then return nil, "invalid session id: " .. tostring(err) end
        raw = text
    end
    local doc = json.decode(raw)
    if type(doc) ~= "table" or type(doc.s) ~= "table" then
        return nil, "invalid session id"
    end
    local state = { targets = {}, version = type(doc.v) == "string" and doc.v or nil }
    for i, t in ipairs(doc.s) do
        if type(t) ~= "table" or type(t.t) ~= "string" then
            return nil, "invalid session id"
        end
        state.targets[i] = { name = t.t, session = type(t.s) == "string" and t.s or nil,
                             addr = type(t.b) == "string" and t.b or nil }
    end
    return state
end

return session
