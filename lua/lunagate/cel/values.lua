-- lunagate/cel/values.lua -- the CEL value model: types, equality, ordering, arithmetic, errors
-- SPDX-License-Identifier: MIT
--
-- Value model (see also the header of lunagate/cel.lua):
--   int       Lua integer                    double  Lua float
--   uint      {u=<int64 bits>} with UINT mt  string  Lua string (UTF-8)
--   bool      Lua boolean                    bytes   {s=<string>} with BYTES mt
--   null      V.null (unique table, NULL mt)
--   list      Lua array (1-based) with LIST mt; a plain table with t[1] ~= nil is also a list
--   map       table with MAP mt: entries stored under their normalised Lua key (string, integer,
--             boolean) plus an ordered key list under the private key KEYS; a plain table without
--             metatable whose t[1] is nil is also a map (string keys, iterated in sorted order);
--             any table whose metatable has __celtype = "map" is a map (lazy context objects;
--             optional __celkeys(t) lists its keys)
--   type      {name=} with TYPE mt               timestamp {s=, ns=} TS mt   duration {s=, ns=} DUR mt
--   flatten   {v=, rec=bool} with FLAT mt (result of flatten()/flatten_recursive())
-- Errors are raised with error(msg, 0) where msg is a string; && || ?: and macros catch them.

local mtype, ult = math.type, math.ult
local getmetatable, setmetatable, type = getmetatable, setmetatable, type
local MININT = math.mininteger

local V = {}

local function throw(msg) error(msg, 0) end
V.throw = throw

local UINT = { __celtype = "uint" }
local BYTES = { __celtype = "bytes" }
local NULL = { __celtype = "null_type", __tostring = function() return "null" end }
local LIST = { __celtype = "list" }
local MAP = { __celtype = "map" }
local TYPE = { __celtype = "type" }
local TS = { __celtype = "google.protobuf.Timestamp" }
local DUR = { __celtype = "google.protobuf.Duration" }
local FLAT = { __celtype = "flatten" }
V.UINT, V.BYTES, V.NULL, V.LIST, V.MAP, V.TYPE, V.TS, V.DUR, V.FLAT =
    UINT, BYTES, NULL, LIST, MAP, TYPE, TS, DUR, FLAT

local KEYS = setmetatable({}, { __name = "cel.KEYS" })
V.KEYS = KEYS

V.null = setmetatable({}, NULL)

function V.uint(u) return setmetatable({ u = u }, UINT) end
function V.bytes(s) return setmetatable({ s = s }, BYTES) end
function V.list(t) return setmetatable(t, LIST) end
function V.ts(s, ns) return setmetatable({ s = s, ns = ns or 0 }, TS) end
function V.dur(s, ns) return setmetatable({ s = s, ns = ns or 0 }, DUR) end
function V.flat(v, rec) return setmetatable({ v = v, rec = rec }, FLAT) end

local type_cache = {}
local function ctype_value(name)
    local t = type_cache[name]
    if not t then t = setmetatable({ name = name }, TYPE); type_cache[name] = t end
    return t
end
V.type_value = ctype_value

-- CEL type name of a value
local function typeof(v)
    local t = type(v)
    if t == "number" then return mtype(v) == "integer" and "int" or "double" end
    if t == "string" then return "string" end
    if t == "boolean" then return "bool" end
    if t == "table" then
        local mt = getmetatable(v)
        if mt == nil then return v[1] ~= nil and "list" or "map" end
        return mt.__celtype or "map"
    end
    if t == "userdata" then return "null_type" end     -- cjson.null and similar sentinels
    throw("unsupported value of Lua type " .. t)
end
V.typeof = typeof

-- ---- Maps ----

-- Normalised Lua key for a CEL map key; numbers compare across int/uint/double.
local function norm_key(k)
    local t = type(k)
    if t == "string" or t == "boolean" then return k end
    if t == "number" then
        if mtype(k) == "integer" then return k end
        local i = math.tointeger(k)
        if i then return i end
        return nil            -- non-integral double: matches no key
    end
    local mt = getmetatable(k)
    if mt == UINT then
        if k.u >= 0 then return k.u end
        return "\0u" .. V.fmt_uint(k.u)
    end
    return nil
end
V.norm_key = norm_key

local function valid_key(k)
    local t = type(k)
    if t == "string" or t == "boolean" or (t == "number" and mtype(k) == "integer") then return true end
    return getmetatable(k) == UINT
end
V.valid_key = valid_key

-- Builds a MAP from an ordered array of {key, value} pairs; duplicate keys are an error.
function V.map_from_pairs(pairs_)
    local m, keys = {}, {}
    for i = 1, #pairs_ do
        local k, v = pairs_[i][1], pairs_[i][2]
        if not valid_key(k) then throw("unsupported key type " .. typeof(k)) end
        local nk = norm_key(k)
        if m[nk] ~= nil then throw("Failed with repeated key") end
        m[nk] = v
        keys[#keys + 1] = k
    end
    m[KEYS] = keys
    return setmetatable(m, MAP)
end

-- Ordered array of the CEL keys of map m.
local function key_sort(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "boolean" then return (not a) and b end
    return a < b
end
function V.map_keys(m)
    local mt = getmetatable(m)
    if mt == MAP then return m[KEYS] end
    if mt and mt.__celkeys then return mt.__celkeys(m) end
    local keys = {}
    for k in pairs(m) do
        if k ~= KEYS then keys[#keys + 1] = k end
    end
    table.sort(keys, key_sort)
    return keys
end

-- Value of key k in map m, or nil.
function V.map_get(m, k)
    local nk = norm_key(k)
    if nk == nil then return nil end
    return m[nk]
end

function V.map_size(m)
    local mt = getmetatable(m)
    if mt == MAP then return #m[KEYS] end
    return #V.map_keys(m)
end

function V.list_size(l) return #l end

-- ---- Equality and ordering ----

local eq
-- compares numbers of any CEL numeric type; returns -1, 0, 1 or nil (NaN)
local function num_cmp(a, b)
    local ta, tb = type(a), type(b)
    if ta == "number" and tb == "number" then
        -- int against double compares as doubles, as cel-go does
        if mtype(a) ~= mtype(b) then a, b = a + 0.0, b + 0.0 end
        if a < b then return -1 elseif a > b then return 1 elseif a == b then return 0 end
        return nil
    end
    -- at least one uint
    local ua = ta == "table" and a.u
    local ub = tb == "table" and b.u
    if ua and ub then
        if ua == ub then return 0 end
        return ult(ua, ub) and -1 or 1
    end
    if ua then
        if ua < 0 then                       -- >= 2^63
            if b ~= b then return nil end
            if mtype(b) == "float" and b >= 18446744073709551616.0 then return -1 end
            if mtype(b) == "float" and b >= 9223372036854775808.0 then
                local fa = (ua >> 1) * 2.0 + (ua & 1)
                if fa < b then return -1 elseif fa > b then return 1 else return 0 end
            end
            return 1
        end
        if ua < b then return -1 elseif ua > b then return 1 elseif ua == b then return 0 end
        return nil
    end
    local r = num_cmp(b, a)
    return r and -r
end
V.num_cmp = num_cmp

local NUMERIC = { int = true, uint = true, double = true }

eq = function(a, b)
    if a == b then return a == a end       -- NaN ~= NaN; identical tables equal
    local ta, tb = typeof(a), typeof(b)
    if ta ~= tb then
        if NUMERIC[ta] and NUMERIC[tb] then return num_cmp(a, b) == 0 end
        return false
    end
    if ta == "null_type" then return true end
    if ta == "int" or ta == "double" or ta == "string" or ta == "bool" then
        return false
    end
    if ta == "uint" then return a.u == b.u end
    if ta == "bytes" then return a.s == b.s end
    if ta == "type" then return a.name == b.name end
    if ta == "google.protobuf.Timestamp" or ta == "google.protobuf.Duration" then
        return a.s == b.s and a.ns == b.ns
    end
    if ta == "list" then
        local n = #a
        if #b ~= n then return false end
        for i = 1, n do
            if not eq(a[i], b[i]) then return false end
        end
        return true
    end
    if ta == "map" then
        local ka = V.map_keys(a)
        if #ka ~= #V.map_keys(b) then return false end
        for i = 1, #ka do
            local vb = V.map_get(b, ka[i])
            if vb == nil or not eq(V.map_get(a, ka[i]), vb) then return false end
        end
        return true
    end
    return false
end
V.eq = eq

-- ordering: returns -1/0/1, or nil for NaN; raises "no such overload" for unordered types
function V.cmp(a, b, op)
    local ta, tb = type(a), type(b)
    if ta == "number" and tb == "number" then
        if mtype(a) ~= mtype(b) then a, b = a + 0.0, b + 0.0 end
        if a < b then return -1 elseif a > b then return 1 elseif a == b then return 0 end
        return nil
    end
    if ta == "string" and tb == "string" then
        if a < b then return -1 elseif a > b then return 1 end
        return 0
    end
    local ya, yb = typeof(a), typeof(b)
    if NUMERIC[ya] and NUMERIC[yb] then return num_cmp(a, b) end
    if ya == yb then
        if ya == "bool" then
            if a == b then return 0 end
            return a and 1 or -1
        end
        if ya == "bytes" then
            if a.s < b.s then return -1 elseif a.s > b.s then return 1 end
            return 0
        end
        if ya == "google.protobuf.Timestamp" or ya == "google.protobuf.Duration" then
            if a.s ~= b.s then return a.s < b.s and -1 or 1 end
            if a.ns ~= b.ns then return a.ns < b.ns and -1 or 1 end
            return 0
        end
    end
    throw("no such overload: " .. ya .. " " .. op .. " " .. yb)
end

-- ---- Arithmetic ----

local function overflow() throw("integer overflow") end
V.overflow = overflow

function V.add_int(a, b)
    local r = a + b
    if ((a ~ r) & (b ~ r)) < 0 then overflow() end
    return r
end
function V.sub_int(a, b)
    local r = a - b
    if ((a ~ b) & (a ~ r)) < 0 then overflow() end
    return r
end
function V.mul_int(a, b)
    if a == 0 or b == 0 then return 0 end
    if (a == -1 and b == MININT) or (b == -1 and a == MININT) then overflow() end
    local r = a * b
    if r // b ~= a or r % b ~= 0 then overflow() end
    return r
end
function V.div_int(a, b)
    if b == 0 then throw("divide by zero") end
    if b == -1 then
        if a == MININT then overflow() end
        return -a
    end
    local q = a // b
    if q < 0 and q * b ~= a then q = q + 1 end
    return q
end
function V.mod_int(a, b)
    if b == 0 then throw("modulus by zero") end
    if b == -1 then return 0 end
    return math.fmod(a, b)
end

-- unsigned helpers on 64-bit patterns
local function udiv(a, b)
    if b < 0 then return ult(a, b) and 0 or 1 end
    if a >= 0 then return a // b end
    local q = ((a >> 1) // b) << 1
    local r = a - q * b
    if not ult(r, b) then q = q + 1 end
    return q
end
V.udiv = udiv

function V.arith_uint(op, a, b)
    if op == "+" then
        local r = a + b
        if ult(r, a) then overflow() end
        return r
    elseif op == "-" then
        if ult(a, b) then overflow() end
        return a - b
    elseif op == "*" then
        if a == 0 or b == 0 then return 0 end
        local r = a * b
        if udiv(r, b) ~= a then overflow() end
        return r
    elseif op == "/" then
        if b == 0 then throw("divide by zero") end
        return udiv(a, b)
    else
        if b == 0 then throw("modulus by zero") end
        return a - udiv(a, b) * b
    end
end

-- uint as float
function V.u2f(u)
    if u >= 0 then return u + 0.0 end
    return (u >> 1) * 2.0 + (u & 1)
end

-- float -> int64 with range check
function V.f2i(f)
    if f ~= f or f >= 9223372036854775808.0 or f <= -9223372036854775808.0 then
        throw("range error converting double to int")
    end
    local i = math.tointeger(f >= 0 and math.floor(f) or math.ceil(f))
    return i
end
function V.f2u(f)
    if f ~= f or f < 0 or f >= 18446744073709551616.0 then
        throw("range error converting double to uint")
    end
    f = math.floor(f)
    if f < 9223372036854775808.0 then return math.tointeger(f) end
    return math.tointeger(f - 9223372036854775808.0) | MININT
end

-- ---- Formatting ----

-- Shortest representation of a double that round-trips, in the style of Go's %g / cel-go.
function V.fmt_double(d)
    if d ~= d then return "NaN" end
    if d == math.huge then return "+Inf" end
    if d == -math.huge then return "-Inf" end
    if d == 0 then return (1 / d < 0) and "-0" or "0" end
    local s
    for p = 1, 17 do
        s = string.format("%." .. p .. "g", d)
        if tonumber(s) == d then break end
    end
    -- Go uses exponent form only when exp < -4 || exp >= 21
    local mant, exp = s:match("^(-?[%d%.]+)e([-+]%d+)$")
    if mant then
        local e = tonumber(exp)
        if e >= -4 and e < 21 then
            s = string.format("%.17f", d)
            -- trim to shortest round-trip decimal
            for p = 0, 17 do
                local t = string.format("%." .. p .. "f", d)
                if tonumber(t) == d then s = t; break end
            end
        else
            s = mant .. "e" .. (e < 0 and "-" or "+") .. string.format("%02d", math.abs(e))
        end
    end
    return s
end

function V.fmt_uint(u)
    if u >= 0 then return tostring(u) end
    local q = udiv(u, 10)
    return tostring(q) .. tostring(u - q * 10)
end

return V
