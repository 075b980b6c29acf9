-- lunagate/cel/codec.lua -- sha256, base64, JSON encode/decode for CEL values, uuid
-- SPDX-License-Identifier: MIT

local V = require "lunagate.cel.values"

local throw = V.throw
local sbyte, schar, sfmt = string.byte, string.char, string.format
local M = {}

-- ---- SHA-256 (FIPS 180-4), pure Lua 5.4 ----

local K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

local function rotr(x, n) return ((x >> n) | (x << (32 - n))) & 0xffffffff end

-- raw 32-byte digest of string msg
function M.sha256_raw(msg)
    local h0, h1, h2, h3 = 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a
    local h4, h5, h6, h7 = 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
    local len = #msg
    msg = msg .. "\128" .. string.rep("\0", (55 - len) % 64) .. string.pack(">I8", len * 8)
    local w = {}
    for chunk = 1, #msg, 64 do
        for i = 0, 15 do
            w[i] = string.unpack(">I4", msg, chunk + i * 4)
        end
        for i = 16, 63 do
            local a, b = w[i - 15], w[i - 2]
            local s0 = rotr(a, 7) ~ rotr(a, 18) ~ (a >> 3)
            local s1 = rotr(b, 17) ~ rotr(b, 19) ~ (b >> 10)
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & 0xffffffff
        end
        local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
        for i = 0, 63 do
            local S1 = rotr(e, 6) ~ rotr(e, 11) ~ rotr(e, 25)
            local ch = (e & f) ~ ((~e) & g)
            local t1 = (h + S1 + ch + K[i + 1] + w[i]) & 0xffffffff
            local S0 = rotr(a, 2) ~ rotr(a, 13) ~ rotr(a, 22)
            local maj = (a & b) ~ (a & c) ~ (b & c)
            local t2 = (S0 + maj) & 0xffffffff
            h, g, f, e, d, c, b, a = g, f, e, (d + t1) & 0xffffffff, c, b, a, (t1 + t2) & 0xffffffff
        end
        h0, h1 = (h0 + a) & 0xffffffff, (h1 + b) & 0xffffffff
        h2, h3 = (h2 + c) & 0xffffffff, (h3 + d) & 0xffffffff
        h4, h5 = (h4 + e) & 0xffffffff, (h5 + f) & 0xffffffff
        h6, h7 = (h6 + g) & 0xffffffff, (h7 + h) & 0xffffffff
    end
    return string.pack(">I4I4I4I4I4I4I4I4", h0, h1, h2, h3, h4, h5, h6, h7)
end

-- lg.crypto.sha256 (OpenSSL) when the runtime provides it; looked up on first use so that load
-- order does not matter. false = not available.
local native_sha256
local function find_native()
    local ok, lg = pcall(require, "lunagate")
    if ok and type(lg) == "table" and type(lg.crypto) == "table" and
        type(lg.crypto.sha256) == "function" then
        return lg.crypto.sha256
    end
    return false
end

function M.hex(s)
    return (s:gsub(".", function(c) return sfmt("%02x", sbyte(c)) end))
end

-- lowercase hex SHA-256 of s
function M.sha256_hex(s)
    if native_sha256 == nil then native_sha256 = find_native() end
    if native_sha256 then
        local d = native_sha256(s)
        if #d == 32 then return M.hex(d) end
        return d:lower()
    end
    return M.hex(M.sha256_raw(s))
end

-- ---- Base64 (RFC 4648, standard alphabet, padded) ----

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64DEC = {}
for i = 1, 64 do B64DEC[sbyte(B64, i)] = i - 1 end
B64DEC[sbyte("-")] = 62                       -- accept the URL-safe alphabet too
B64DEC[sbyte("_")] = 63

function M.b64encode(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = sbyte(s, i, i + 2)
        local n = (a << 16) | ((b or 0) << 8) | (c or 0)
        local q1, q2, q3, q4 = (n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63
        out[#out + 1] = B64:sub(q1 + 1, q1 + 1) .. B64:sub(q2 + 1, q2 + 1) ..
            (b and B64:sub(q3 + 1, q3 + 1) or "=") .. (c and B64:sub(q4 + 1, q4 + 1) or "=")
    end
    return table.concat(out)
end

function M.b64decode(s)
    s = s:gsub("[\r\n]", ""):gsub("=+$", "")
    if #s % 4 == 1 then throw("invalid base64 input") end
    local out = {}
    for i = 1, #s, 4 do
        local n, cnt = 0, 0
        for j = i, math.min(i + 3, #s) do
            local v = B64DEC[sbyte(s, j)]
            if not v then throw("invalid base64 input") end
            n = (n << 6) | v
            cnt = cnt + 1
        end
        n = n << (6 * (4 - cnt))
        local bytes = schar((n >> 16) & 255, (n >> 8) & 255, n & 255)
        out[#out + 1] = bytes:sub(1, cnt - 1)
    end
    return table.concat(out)
end

-- ---- JSON ----

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
              ["\r"] = "\\r", ["\t"] = "\\t" }
local function quote(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return ESC[c] or sfmt("\\u%04x", sbyte(c))
    end) .. '"'
end
M.json_quote = quote

local encode
encode = function(v, out, time)
    local t = V.typeof(v)
    if t == "string" then out[#out + 1] = quote(v)
    elseif t == "int" then out[#out + 1] = tostring(v)
    elseif t == "uint" then out[#out + 1] = V.fmt_uint(v.u)
    elseif t == "double" then
        if v ~= v or v == math.huge or v == -math.huge then
            out[#out + 1] = "null"
        elseif v == math.floor(v) and math.abs(v) < 1e15 then
            out[#out + 1] = sfmt("%.1f", v)
        else
            out[#out + 1] = sfmt("%.17g", v)
            for p = 1, 17 do
                local s = sfmt("%." .. p .. "g", v)
                if tonumber(s) == v then out[#out] = s; break end
            end
        end
    elseif t == "bool" then out[#out + 1] = v and "true" or "false"
    elseif t == "null_type" then out[#out + 1] = "null"
    elseif t == "bytes" then out[#out + 1] = quote(M.b64encode(v.s))
    elseif t == "list" then
        out[#out + 1] = "["
        for i = 1, #v do
            if i > 1 then out[#out + 1] = "," end
            encode(v[i], out, time)
        end
        out[#out + 1] = "]"
    elseif t == "map" then
        out[#out + 1] = "{"
        local keys = V.map_keys(v)
        for i = 1, #keys do
            local k = keys[i]
            if i > 1 then out[#out + 1] = "," end
            local ks = type(k) == "string" and k or (getmetatable(k) == V.UINT and V.fmt_uint(k.u))
                or tostring(k)
            out[#out + 1] = quote(ks)
            out[#out + 1] = ":"
            encode(V.map_get(v, k), out, time)
        end
        out[#out + 1] = "}"
    elseif t == "google.protobuf.Timestamp" then out[#out + 1] = quote(time.format_ts(v))
    elseif t == "google.protobuf.Duration" then out[#out + 1] = quote(time.format_dur(v))
    elseif t == "type" then out[#out + 1] = quote(v.name)
    elseif t == "flatten" then encode(v.v, out, time)
    else throw("cannot encode " .. t .. " as JSON") end
end

function M.json_encode(v, time)
    local out = {}
    encode(v, out, time)
    return table.concat(out)
end

-- Decodes JSON text into CEL values: objects -> MAP, arrays -> LIST, integral numbers without
-- fraction/exponent -> int (double when out of range), other numbers -> double, null -> null.
function M.json_decode(s)
    local pos = 1
    local function fail(msg) throw("invalid JSON: " .. msg .. " at offset " .. pos) end
    local function ws()
        pos = s:find("[^ \t\r\n]", pos) or #s + 1
    end
    local value
    local function str()
        pos = pos + 1
        local out = {}
        while true do
            local a, b = s:find('^[^"\\]+', pos)
            if a then out[#out + 1] = s:sub(a, b); pos = b + 1 end
            local c = s:sub(pos, pos)
            if c == '"' then pos = pos + 1; break end
            if c == "" then fail("unterminated string") end
            local e = s:sub(pos + 1, pos + 1)
            if e == "u" then
                local cp = tonumber(s:sub(pos + 2, pos + 5), 16)
                if not cp then fail("bad \\u escape") end
                pos = pos + 6
                if cp >= 0xD800 and cp <= 0xDBFF and s:sub(pos, pos + 1) == "\\u" then
                    local lo = tonumber(s:sub(pos + 2, pos + 5), 16)
                    if lo and lo >= 0xDC00 and lo <= 0xDFFF then
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                        pos = pos + 6
                    end
                end
                out[#out + 1] = utf8.char(cp)
            else
                local m = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
                             r = "\r", t = "\t" })[e]
                if not m then fail("bad escape") end
                out[#out + 1] = m
                pos = pos + 2
            end
        end
        return table.concat(out)
    end
    value = function()
        ws()
        local c = s:sub(pos, pos)
        if c == "{" then
            pos = pos + 1
            local entries = {}
            ws()
            if s:sub(pos, pos) == "}" then pos = pos + 1; return V.map_from_pairs(entries) end
            while true do
                ws()
                if s:sub(pos, pos) ~= '"' then fail("expected string key") end
                local k = str()
                ws()
                if s:sub(pos, pos) ~= ":" then fail("expected ':'") end
                pos = pos + 1
                local v = value()
                -- later duplicates win, as in serde_json
                local dup = false
                for i = 1, #entries do
                    if entries[i][1] == k then entries[i][2] = v; dup = true; break end
                end
                if not dup then entries[#entries + 1] = { k, v } end
                ws()
                local d = s:sub(pos, pos)
                pos = pos + 1
                if d == "}" then break end
                if d ~= "," then fail("expected ',' or '}'") end
            end
            return V.map_from_pairs(entries)
        elseif c == "[" then
            pos = pos + 1
            local list = {}
            ws()
            if s:sub(pos, pos) == "]" then pos = pos + 1; return V.list(list) end
            while true do
                list[#list + 1] = value()
                ws()
                local d = s:sub(pos, pos)
                pos = pos + 1
                if d == "]" then break end
                if d ~= "," then fail("expected ',' or ']'") end
            end
            return V.list(list)
        elseif c == '"' then
            return str()
        elseif s:find("^true", pos) then pos = pos + 4; return true
        elseif s:find("^false", pos) then pos = pos + 5; return false
        elseif s:find("^null", pos) then pos = pos + 4; return V.null
        else
            local a, b = s:find("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
            if not a then fail("unexpected character") end
            local text = s:sub(a, b)
            pos = b + 1
            if text:find("^-?%d+$") then
                local i = math.tointeger(tonumber(text))
                if i and #text < 20 then return i end
            end
            local n = tonumber(text)
            if not n then fail("bad number") end
            return n + 0.0
        end
    end
    local v = value()
    ws()
    if pos <= #s then fail("trailing characters") end
    return v
end

-- ---- UUID v4 ----

-- Random bytes come from lg.crypto.random_bytes (OpenSSL) when the runtime provides it, else
-- from math.random (Lua 5.4 seeds it randomly at startup; the global seed is left alone).
local random_bytes
function M.uuid()
    if random_bytes == nil then
        local ok, lg = pcall(require, "lunagate")
        random_bytes = ok and type(lg) == "table" and type(lg.crypto) == "table" and
            lg.crypto.random_bytes or false
    end
    local r = {}
    local raw = random_bytes and random_bytes(16)
    if type(raw) == "string" and #raw == 16 then
        r = { raw:byte(1, 16) }
    else
        for i = 1, 16 do r[i] = math.random(0, 255) end
    end
    r[7] = (r[7] & 0x0f) | 0x40
    r[9] = (r[9] & 0x3f) | 0x80
    return sfmt("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        table.unpack(r))
end

return M
