-- lunagate/cel/stdlib.lua -- CEL standard functions, the strings extension and agentgateway's extras
-- SPDX-License-Identifier: MIT
--
-- Two tables of implementations: GLOBAL[name](args...) for `f(x)` calls (names may be dotted
-- namespaces such as "base64.encode") and MEMBER[name](target, args...) for `x.f(...)` calls.
-- Each implementation checks its argument types and raises "no such overload" otherwise.
-- Macros (has, all, exists, exists_one, map, filter, default, coalesce, with) live in the compiler.

local V = require "lunagate.cel.values"
local T = require "lunagate.cel.time"
local codec = require "lunagate.cel.codec"

local mtype, getmetatable, type = math.type, getmetatable, type
local utf8_len, utf8_offset, utf8_char = utf8.len, utf8.offset, utf8.char
local throw, typeof = V.throw, V.typeof
local UINT, BYTES, TS, DUR = V.UINT, V.BYTES, V.TS, V.DUR

local GLOBAL, MEMBER = {}, {}
local S = { GLOBAL = GLOBAL, MEMBER = MEMBER }

local function overload(name, ...)
    local ts = {}
    for i = 1, select("#", ...) do ts[i] = typeof((select(i, ...))) end
    throw("no such overload: " .. name .. "(" .. table.concat(ts, ", ") .. ")")
end
S.overload = overload

local regex_impl          -- set by cel.lua: function(pattern) -> re object or nil, err

local function is_int(v) return mtype(v) == "integer" end

-- ---- size / conversions ----

local function size(v)
    local t = type(v)
    if t == "string" then return utf8_len(v) or #v end
    if t == "table" then
        local mt = getmetatable(v)
        if mt == BYTES then return #v.s end
        local ct = typeof(v)
        if ct == "list" then return #v end
        if ct == "map" then return V.map_size(v) end
    end
    overload("size", v)
end
GLOBAL.size, MEMBER.size = size, size

local function int_from_string(s)
    if not s:match("^[-+]?%d+$") then throw("cannot convert '" .. s .. "' to int") end
    local i = math.tointeger(tonumber(s))
    local digits = s:gsub("^[-+]?0*", "")
    if not i or #digits > 19 then throw("range error converting string to int") end
    if (s:sub(1, 1) == "-") ~= (i < 0) and i ~= 0 then throw("range error converting string to int") end
    return i
end

GLOBAL.int = function(v)
    local t = mtype(v)
    if t == "integer" then return v end
    if t == "float" then return V.f2i(v) end
    if type(v) == "string" then return int_from_string(v) end
    local mt = getmetatable(v)
    if mt == UINT then
        if v.u < 0 then throw("range error converting uint to int") end
        return v.u
    end
    if mt == TS then return v.s end
    overload("int", v)
end

local function uint_from_string(s)
    if not s:match("^%+?%d+$") then throw("cannot convert '" .. s .. "' to uint") end
    s = s:gsub("^%+", ""):gsub("^0+(%d)", "%1")
    local acc = 0
    for d in s:gmatch("%d") do
        local nacc = acc * 10 + tonumber(d)
        if math.ult(0x1999999999999999, acc) or math.ult(nacc, acc * 10) then
            throw("range error converting string to uint")
        end
        acc = nacc
    end
    return acc
end

GLOBAL.uint = function(v)
    local t = mtype(v)
    if t == "integer" then
        if v < 0 then throw("range error converting int to uint") end
        return V.uint(v)
    end
    if t == "float" then return V.uint(V.f2u(v)) end
    if type(v) == "string" then return V.uint(uint_from_string(v)) end
    if getmetatable(v) == UINT then return v end
    overload("uint", v)
end

local SPECIAL_DOUBLE = { inf = math.huge, ["+inf"] = math.huge, ["-inf"] = -math.huge,
                         infinity = math.huge, ["+infinity"] = math.huge, ["-infinity"] = -math.huge,
                         nan = 0 / 0, ["+nan"] = 0 / 0, ["-nan"] = 0 / 0 }
GLOBAL.double = function(v)
    local t = mtype(v)
    if t == "float" then return v end
    if t == "integer" then return v + 0.0 end
    if type(v) == "string" then
        local sp = SPECIAL_DOUBLE[v:lower()]
        if sp then return sp end
        if v:match("^[-+]?%d*%.?%d*[eE]?[-+]?%d*$") and v:match("%d") then
            local d = tonumber(v)
            if d then return d + 0.0 end
        end
        throw("cannot convert '" .. v .. "' to double")
    end
    if getmetatable(v) == UINT then return V.u2f(v.u) end
    overload("double", v)
end

GLOBAL.string = function(v)
    local t = type(v)
    if t == "string" then return v end
    if t == "number" then
        if mtype(v) == "integer" then return tostring(v) end
        return V.fmt_double(v)
    end
    if t == "boolean" then return v and "true" or "false" end
    local mt = getmetatable(v)
    if mt == UINT then return V.fmt_uint(v.u) end
    if mt == BYTES then
        if not utf8_len(v.s) then throw("invalid UTF-8 in bytes, cannot convert to string") end
        return v.s
    end
    if mt == TS then return T.format_ts(v) end
    if mt == DUR then return T.format_dur(v) end
    overload("string", v)
end

GLOBAL.bytes = function(v)
    if type(v) == "string" then return V.bytes(v) end
    if getmetatable(v) == BYTES then return v end
    overload("bytes", v)
end

local BOOLS = { ["1"] = true, t = true, ["true"] = true, TRUE = true, True = true,
                ["0"] = false, f = false, ["false"] = false, FALSE = false, False = false }
GLOBAL.bool = function(v)
    if type(v) == "boolean" then return v end
    if type(v) == "string" then
        local b = BOOLS[v]
        if b == nil then throw("cannot convert '" .. v .. "' to bool") end
        return b
    end
    overload("bool", v)
end

GLOBAL.dyn = function(v) return v end

GLOBAL.type = function(v) return V.type_value(typeof(v)) end

GLOBAL.duration = function(v)
    if type(v) == "string" then return T.parse_dur(v) end
    if getmetatable(v) == DUR then return v end
    if is_int(v) then return T.check_dur(v, 0) end
    overload("duration", v)
end

GLOBAL.timestamp = function(v)
    if type(v) == "string" then return T.parse_ts(v) end
    if is_int(v) then return T.check_ts(v, 0) end
    if getmetatable(v) == TS then return v end
    overload("timestamp", v)
end

for name, getter in pairs(T.getters) do
    MEMBER[name] = function(t, tz, extra)
        local mt = getmetatable(t)
        if extra ~= nil or (tz ~= nil and type(tz) ~= "string") then overload(name, t, tz) end
        if mt == TS or (mt == DUR and (name == "getHours" or name == "getMinutes" or
            name == "getSeconds" or name == "getMilliseconds")) then
            if mt == DUR and tz ~= nil then overload(name, t, tz) end
            return getter(t, tz)
        end
        overload(name, t)
    end
end

-- ---- strings ----

local function check2s(name, s, x)
    if type(s) ~= "string" or type(x) ~= "string" then overload(name, s, x) end
end

MEMBER.contains = function(s, x)
    check2s("contains", s, x)
    return s:find(x, 1, true) ~= nil
end
MEMBER.startsWith = function(s, x)
    check2s("startsWith", s, x)
    return s:sub(1, #x) == x
end
MEMBER.endsWith = function(s, x)
    check2s("endsWith", s, x)
    return x == "" or s:sub(-#x) == x
end

local function matches(s, pat)
    check2s("matches", s, pat)
    local re, err = regex_impl(pat)
    if not re then throw("invalid regex '" .. pat .. "': " .. tostring(err)) end
    return re:test(s)
end
MEMBER.matches, GLOBAL.matches = matches, matches

MEMBER.lowerAscii = function(s)
    if type(s) ~= "string" then overload("lowerAscii", s) end
    return (s:gsub("%u", string.lower))
end
MEMBER.upperAscii = function(s)
    if type(s) ~= "string" then overload("upperAscii", s) end
    return (s:gsub("%l", string.upper))
end

-- Unicode White_Space code points, as cel-go's trim uses unicode.IsSpace
local WS = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true,
             [0x85] = true, [0xA0] = true, [0x1680] = true, [0x2028] = true, [0x2029] = true,
             [0x202F] = true, [0x205F] = true, [0x3000] = true }
for c = 0x2000, 0x200A do WS[c] = true end
MEMBER.trim = function(s)
    if type(s) ~= "string" then overload("trim", s) end
    local cps = { utf8.codepoint(s, 1, -1) }
    local i, j = 1, #cps
    while i <= j and WS[cps[i]] do i = i + 1 end
    while j >= i and WS[cps[j]] do j = j - 1 end
    if i > j then return "" end
    return utf8_char(table.unpack(cps, i, j))
end

MEMBER.split = function(s, sep, n)
    if type(s) ~= "string" or type(sep) ~= "string" or (n ~= nil and not is_int(n)) then
        overload("split", s, sep, n)
    end
    n = n or -1
    local out = {}
    if n == 0 then return V.list(out) end
    if sep == "" then
        for _, c in utf8.codes(s) do
            if n > 0 and #out == n - 1 then
                out[#out + 1] = s:sub(utf8_offset(s, #out + 1))
                return V.list(out)
            end
            out[#out + 1] = utf8_char(c)
        end
        return V.list(out)
    end
    local pos = 1
    while true do
        if n > 0 and #out == n - 1 then break end
        local a, b = s:find(sep, pos, true)
        if not a then break end
        out[#out + 1] = s:sub(pos, a - 1)
        pos = b + 1
    end
    out[#out + 1] = s:sub(pos)
    return V.list(out)
end

MEMBER.join = function(l, sep)
    if typeof(l) ~= "list" or (sep ~= nil and type(sep) ~= "string") then overload("join", l, sep) end
    for i = 1, #l do
        if type(l[i]) ~= "string" then overload("join", l, sep) end
    end
    return table.concat(l, sep or "")
end

MEMBER.replace = function(s, old, new, n)
    if type(s) ~= "string" or type(old) ~= "string" or type(new) ~= "string" or
        (n ~= nil and not is_int(n)) then
        overload("replace", s, old, new, n)
    end
    n = n or -1
    if n == 0 then return s end
    local out, pos, count = {}, 1, 0
    if old == "" then
        -- insert `new` before every code point and at the end, like Go's strings.Replace
        for p, c in utf8.codes(s) do
            if n >= 0 and count >= n then out[#out + 1] = s:sub(p); return table.concat(out) end
            out[#out + 1] = new
            out[#out + 1] = utf8_char(c)
            count = count + 1
        end
        if n < 0 or count < n then out[#out + 1] = new end
        return table.concat(out)
    end
    while n < 0 or count < n do
        local a, b = s:find(old, pos, true)
        if not a then break end
        out[#out + 1] = s:sub(pos, a - 1)
        out[#out + 1] = new
        pos = b + 1
        count = count + 1
    end
    out[#out + 1] = s:sub(pos)
    return table.concat(out)
end

-- byte offset of code point index i (0-based) in s, for 0 <= i <= len
local function cp_offset(s, i) return utf8_offset(s, i + 1) end

MEMBER.substring = function(s, i, j)
    if type(s) ~= "string" or not is_int(i) or (j ~= nil and not is_int(j)) then
        overload("substring", s, i, j)
    end
    local len = utf8_len(s)
    j = j or len
    if i < 0 or i > len then throw("index out of range: " .. i) end
    if j < 0 or j > len then throw("index out of range: " .. j) end
    if j < i then throw("invalid substring range. start: " .. i .. ", end: " .. j) end
    return s:sub(cp_offset(s, i), cp_offset(s, j) - 1)
end

MEMBER.charAt = function(s, i)
    if type(s) ~= "string" or not is_int(i) then overload("charAt", s, i) end
    local len = utf8_len(s)
    if i < 0 or i > len then throw("index out of range: " .. i) end
    if i == len then return "" end
    return s:sub(cp_offset(s, i), cp_offset(s, i + 1) - 1)
end

MEMBER.indexOf = function(s, sub, start)
    if type(s) ~= "string" or type(sub) ~= "string" or (start ~= nil and not is_int(start)) then
        overload("indexOf", s, sub, start)
    end
    local len = utf8_len(s)
    start = start or 0
    if start < 0 or start > len then throw("index out of range: " .. start) end
    local a = s:find(sub, cp_offset(s, start), true)
    if not a then return -1 end
    return utf8_len(s, 1, a - 1) or 0
end

MEMBER.lastIndexOf = function(s, sub, start)
    if type(s) ~= "string" or type(sub) ~= "string" or (start ~= nil and not is_int(start)) then
        overload("lastIndexOf", s, sub, start)
    end
    local len = utf8_len(s)
    start = start or len
    if start < 0 or start > len then throw("index out of range: " .. start) end
    -- last match beginning at code point <= start
    local limit = cp_offset(s, start)
    local best = -1
    local pos = 1
    while true do
        local a = s:find(sub, pos, true)
        if not a or a > limit then break end
        best = a
        pos = a + 1
    end
    if best < 0 then return -1 end
    return utf8_len(s, 1, best - 1) or 0
end

MEMBER.stripPrefix = function(s, p)
    check2s("stripPrefix", s, p)
    if s:sub(1, #p) == p then return s:sub(#p + 1) end
    return s
end
MEMBER.stripSuffix = function(s, p)
    check2s("stripSuffix", s, p)
    if p ~= "" and s:sub(-#p) == p then return s:sub(1, #s - #p) end
    return s
end
MEMBER.reverse = function(s)
    if type(s) ~= "string" then overload("reverse", s) end
    local cps = { utf8.codepoint(s, 1, -1) }
    local out = {}
    for i = #cps, 1, -1 do out[#out + 1] = utf8_char(cps[i]) end
    return table.concat(out)
end

-- cel-go strings extension format(): %s %d %f %e %x %X %o %b and %%, with optional precision
local function fmt_s(v)
    local t = typeof(v)
    if t == "string" then return v end
    if t == "list" then
        local parts = {}
        for i = 1, #v do
            local e = v[i]
            parts[i] = type(e) == "string" and string.format("%q", e) or fmt_s(e)
        end
        return "[" .. table.concat(parts, ", ") .. "]"
    end
    if t == "map" then return codec.json_encode(v, T) end
    if t == "null_type" then return "null" end
    if t == "type" then return v.name end
    if t == "bytes" then return v.s end
    return GLOBAL.string(v)
end

MEMBER.format = function(s, args)
    if type(s) ~= "string" or typeof(args) ~= "list" then overload("format", s, args) end
    local n = 0
    return (s:gsub("%%([%.%d]*)(.)", function(prec, verb)
        if verb == "%" then return "%" end
        n = n + 1
        local v = args[n]
        if v == nil then throw("format: index " .. (n - 1) .. " out of range") end
        local t = typeof(v)
        local p = tonumber(prec:match("%.(%d+)"))
        if verb == "s" then return fmt_s(v)
        elseif verb == "d" then
            if t == "int" then return tostring(v) end
            if t == "uint" then return V.fmt_uint(v.u) end
            if t == "double" and v ~= v then return "NaN" end
            throw("format: %d expects an integer, got " .. t)
        elseif verb == "f" or verb == "e" then
            local d
            if t == "double" or t == "int" then d = v + 0.0
            elseif t == "uint" then d = V.u2f(v.u)
            else throw("format: %" .. verb .. " expects a number, got " .. t) end
            if d ~= d then return "NaN" end
            if d == math.huge then return "Infinity" end
            if d == -math.huge then return "-Infinity" end
            return string.format("%." .. (p or 6) .. verb, d)
        elseif verb == "x" or verb == "X" or verb == "o" or verb == "b" then
            local i
            if t == "int" then i = v
            elseif t == "uint" then i = v.u
            elseif t == "string" or t == "bytes" then
                if verb == "o" or verb == "b" then throw("format: %" .. verb .. " expects an integer") end
                local str = t == "string" and v or v.s
                local h = codec.hex(str)
                return verb == "X" and h:upper() or h
            else throw("format: %" .. verb .. " expects an integer, got " .. t) end
            local neg = t == "int" and i < 0
            if neg then i = -i end
            local out
            if verb == "b" then
                local digits = {}
                repeat
                    digits[#digits + 1] = tostring(i & 1)
                    i = i >> 1
                until i == 0
                out = string.reverse(table.concat(digits))
            elseif verb == "o" then out = string.format("%o", i)
            else out = string.format("%" .. verb, i) end
            return (neg and "-" or "") .. out
        end
        throw("format: unsupported verb %" .. verb)
    end))
end

MEMBER.regexReplace = function(s, pat, repl)
    if type(s) ~= "string" or type(pat) ~= "string" or type(repl) ~= "string" then
        overload("regexReplace", s, pat, repl)
    end
    local re, err = regex_impl(pat)
    if not re then throw("invalid regex '" .. pat .. "': " .. tostring(err)) end
    return re:replace(s, repl)
end

-- ---- agentgateway extras ----

local function str_or_bytes(name, v)
    if type(v) == "string" then return v end
    if getmetatable(v) == BYTES then return v.s end
    overload(name, v)
end

GLOBAL.json = function(v) return codec.json_decode(str_or_bytes("json", v)) end
MEMBER.json = GLOBAL.json
local function to_json(v) return codec.json_encode(v, T) end
GLOBAL.toJson, GLOBAL.to_json, MEMBER.toJson, MEMBER.to_json = to_json, to_json, to_json, to_json

GLOBAL.flatten = function(v) return V.flat(v, false) end
local function flatten_rec(v) return V.flat(v, true) end
GLOBAL.flatten_recursive, GLOBAL.flattenRecursive = flatten_rec, flatten_rec

local function b64enc(v) return codec.b64encode(str_or_bytes("base64.encode", v)) end
local function b64dec(v) return V.bytes(codec.b64decode(str_or_bytes("base64.decode", v))) end
GLOBAL["base64.encode"], GLOBAL.base64Encode, MEMBER.base64Encode = b64enc, b64enc, b64enc
GLOBAL["base64.decode"], GLOBAL.base64Decode, MEMBER.base64Decode = b64dec, b64dec, b64dec

local function sha256(v) return codec.sha256_hex(str_or_bytes("sha256.encode", v)) end
GLOBAL["sha256.encode"], GLOBAL.sha256 = sha256, sha256

GLOBAL.random = function() return math.random() end
GLOBAL.uuid = function() return codec.uuid() end
GLOBAL["strings.quote"] = function(v)
    if type(v) ~= "string" then overload("strings.quote", v) end
    return codec.json_quote(v)
end
GLOBAL.fail = function(msg)
    throw(type(msg) == "string" and msg or "fail() called")
end

local function url_encode(v)
    local s = str_or_bytes("url.encode", v)
    return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end
local function url_decode(v)
    local s = str_or_bytes("url.decode", v)
    return (s:gsub("%+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
GLOBAL["url.encode"], GLOBAL["url.decode"] = url_encode, url_decode

-- math extension basics
local function numeric_list(name, ...)
    local args = { ... }
    if #args == 1 and typeof(args[1]) == "list" then args = args[1] end
    if #args == 0 then throw(name .. ": no arguments") end
    for i = 1, #args do
        local t = typeof(args[i])
        if t ~= "int" and t ~= "double" and t ~= "uint" then overload(name, args[i]) end
    end
    return args
end
GLOBAL["math.greatest"] = function(...)
    local args = numeric_list("math.greatest", ...)
    local best = args[1]
    for i = 2, #args do if V.num_cmp(args[i], best) == 1 then best = args[i] end end
    return best
end
GLOBAL["math.least"] = function(...)
    local args = numeric_list("math.least", ...)
    local best = args[1]
    for i = 2, #args do if V.num_cmp(args[i], best) == -1 then best = args[i] end end
    return best
end

function S.set_regex(fn) regex_impl = fn end

return S
