-- lunagate/mcp/json.lua -- JSON for relayed MCP messages: keeps arrays arrays
-- SPDX-License-Identifier: MIT
--
-- lua-cjson 2.1.0 decodes `[]` and `{}` to the same empty table, so a relayed tool schema
-- with `"required": []` would come back as `{}`. This codec marks every decoded array with
-- json.array_mt (empty ones included), decodes null to json.null, keeps integers integers,
-- and encodes tables carrying array_mt as arrays. Tables without it are arrays when they
-- have t[1], objects otherwise (so an empty plain table is `{}`).
--
--   json.decode(s) -> value | nil, err
--   json.encode(v) -> string               (raises on values JSON cannot hold)
--   json.array(t)  -> t with array_mt;  json.null;  json.is_array(t)

local json = {}

local byte, sub, find, char, concat, format = string.byte, string.sub, string.find, string.char,
    table.concat, string.format
local tointeger, mtype = math.tointeger, math.type
local utf8char = utf8.char

json.null = setmetatable({}, { __name = "json.null", __tostring = function() return "null" end })
json.array_mt = { __name = "json.array" }

function json.array(t)
    return setmetatable(t or {}, json.array_mt)
end

function json.is_array(t)
    return type(t) == "table" and (getmetatable(t) == json.array_mt or t[1] ~= nil)
end

-- ---- decoding ----

local ESC = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r",
              t = "\t" }

local decode_value

local function skip(s, i)
    local _, e = find(s, "^[ \t\r\n]*", i)
    return e + 1
end

local function perr(_, i, msg)
    error({ msg = format("%s at character %d", msg, i) }, 0)
end

local function decode_string(s, i)
    -- i points at the opening quote
    local j = i + 1
    local parts, n = nil, 0
    while true do
        local a, b = find(s, '["\\]', j)
        if not a then perr(s, i, "unterminated string") end
        local c = byte(s, a)
        if c == 34 then -- "
            if not parts then
                return sub(s, i + 1, a - 1), a + 1
            end
            n = n + 1; parts[n] = sub(s, j, a - 1)
            return concat(parts), a + 1
        end
        parts = parts or {}
        n = n + 1; parts[n] = sub(s, j, a - 1)
        local e = sub(s, a + 1, a + 1)
        if e == "u" then
            local hex = sub(s, a + 2, a + 5)
            local cp = tonumber(hex, 16)
            if not cp or #hex ~= 4 then perr(s, a, "bad unicode escape") end
            local nexti = a + 6
            if cp >= 0xD800 and cp <= 0xDBFF and sub(s, nexti, nexti + 1) == "\\u" then
                local lo = tonumber(sub(s, nexti + 2, nexti + 5), 16)
                if lo and lo >= 0xDC00 and lo <= 0xDFFF then
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                    nexti = nexti + 6
                end
            end
            n = n + 1; parts[n] = utf8char(cp)
            j = nexti
        else
            local r = ESC[e]
            if not r then perr(s, a, "bad escape") end
            n = n + 1; parts[n] = r
            j = a + 2
        end
        local _ = b
    end
end

local function decode_number(s, i)
    local a, b = find(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not a then perr(s, i, "bad number") end
    local text = sub(s, a, b)
    local v
    if not find(text, "[.eE]") then
        v = tointeger(tonumber(text))
    end
    if v == nil then
        v = tonumber(text)
        if v == nil then perr(s, i, "bad number") end
    end
    return v, b + 1
end

local function decode_array(s, i, depth)
    local t, n = setmetatable({}, json.array_mt), 0
    i = skip(s, i + 1)
    if byte(s, i) == 93 then return t, i + 1 end
    while true do
        local v
        v, i = decode_value(s, i, depth)
        n = n + 1; t[n] = v
        i = skip(s, i)
        local c = byte(s, i)
        if c == 93 then return t, i + 1 end
        if c ~= 44 then perr(s, i, "expected ',' or ']'") end
        i = skip(s, i + 1)
    end
end

local function decode_object(s, i, depth)
    local t = {}
    i = skip(s, i + 1)
    if byte(s, i) == 125 then return t, i + 1 end
    while true do
        if byte(s, i) ~= 34 then perr(s, i, "expected string key") end
        local k
        k, i = decode_string(s, i)
        i = skip(s, i)
        if byte(s, i) ~= 58 then perr(s, i, "expected ':'") end
        local v
        v, i = decode_value(s, skip(s, i + 1), depth)
        t[k] = v
        i = skip(s, i)
        local c = byte(s, i)
        if c == 125 then return t, i + 1 end
        if c ~= 44 then perr(s, i, "expected ',' or '}'") end
        i = skip(s, i + 1)
    end
end

function decode_value(s, i, depth)
    if depth > 200 then perr(s, i, "too deeply nested") end
    local c = byte(s, i)
    if c == 123 then return decode_object(s, i, depth + 1) end
    if c == 91 then return decode_array(s, i, depth + 1) end
    if c == 34 then return decode_string(s, i) end
    if c == 116 and sub(s, i, i + 3) == "true" then return true, i + 4 end
    if c == 102 and sub(s, i, i + 4) == "false" then return false, i + 5 end
    if c == 110 and sub(s, i, i + 3) == "null" then return json.null, i + 4 end
    if c == 45 or (c and c >= 48 and c <= 57) then return decode_number(s, i) end
    perr(s, i, c and "unexpected character" or "unexpected end of input")
end

function json.decode(s)
    if type(s) ~= "string" then
        error("bad argument #1 to 'decode' (string expected, got " .. type(s) .. ")", 2)
    end
    local ok, v, i = pcall(decode_value, s, skip(s, 1), 0)
    if not ok then
        return nil, type(v) == "table" and v.msg or tostring(v)
    end
    i = skip(s, i)
    if i <= #s then
        return nil, format("trailing garbage at character %d", i)
    end
    return v
end

-- ---- encoding ----

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                  ["\r"] = "\\r", ["\t"] = "\\t" }
for c = 0, 31 do
    local ch = char(c)
    if not ESCAPES[ch] then ESCAPES[ch] = format("\\u%04x", c) end
end
ESCAPES["\127"] = "\\u007f"

local function encode_string(s)
    return '"' .. s:gsub('[%c"\\]', ESCAPES) .. '"'
end

local encode_value

local function encode_table(t, out, n, depth)
    if depth > 200 then error("json.encode: too deeply nested", 0) end
    local mt = getmetatable(t)
    if mt == json.array_mt or t[1] ~= nil then
        n = n + 1; out[n] = "["
        for i = 1, #t do
            if i > 1 then n = n + 1; out[n] = "," end
            n = encode_value(t[i], out, n, depth + 1)
        end
        n = n + 1; out[n] = "]"
        return n
    end
    n = n + 1; out[n] = "{"
    local first = true
    for k, v in pairs(t) do
        if type(k) == "string" then
            if not first then n = n + 1; out[n] = "," end
            first = false
            n = n + 1; out[n] = encode_string(k)
            n = n + 1; out[n] = ":"
            n = encode_value(v, out, n, depth + 1)
        end
    end
    n = n + 1; out[n] = "}"
    return n
end

function encode_value(v, out, n, depth)
    local tv = type(v)
    if tv == "string" then
        n = n + 1; out[n] = encode_string(v)
    elseif tv == "number" then
        if mtype(v) == "integer" then
            n = n + 1; out[n] = format("%d", v)
        elseif v ~= v or v == math.huge or v == -math.huge then
            n = n + 1; out[n] = "null"
        elseif v == math.floor(v) and math.abs(v) < 1e15 then
            n = n + 1; out[n] = format("%d", math.floor(v))
        else
            n = n + 1; out[n] = format("%.17g", v)
        end
    elseif tv == "boolean" then
        n = n + 1; out[n] = v and "true" or "false"
    elseif v == nil or v == json.null then
        n = n + 1; out[n] = "null"
    elseif tv == "table" then
        n = encode_table(v, out, n, depth)
    else
        n = n + 1; out[n] = "null" -- userdata sentinels (lg.json.null) and functions
    end
    return n
end

function json.encode(v)
    local out = {}
    local n = encode_value(v, out, 0, 0)
    return concat(out, "", 1, n)
end

return json
