-- lunagate/cel/time.lua -- CEL timestamps and durations: parsing, formatting, arithmetic, getters
-- SPDX-License-Identifier: MIT

local V = require "lunagate.cel.values"

local throw = V.throw
local T = {}

local MIN_TS = -62135596800            -- 0001-01-01T00:00:00Z
local MAX_TS = 253402300799            -- 9999-12-31T23:59:59Z
local MAX_DUR = 315576000000           -- 10000 years in seconds

-- days since 1970-01-01 for a civil date (Howard Hinnant's algorithm)
local function days_from_civil(y, m, d)
    y = m <= 2 and y - 1 or y
    local era = (y >= 0 and y or y - 399) // 400
    local yoe = y - era * 400
    local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
    local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
end
local function civil_from_days(z)
    z = z + 719468
    local era = (z >= 0 and z or z - 146096) // 146097
    local doe = z - era * 146097
    local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    local y = yoe + era * 400
    local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    local mp = (5 * doy + 2) // 153
    local d = doy - (153 * mp + 2) // 5 + 1
    local m = mp + (mp < 10 and 3 or -9)
    return m <= 2 and y + 1 or y, m, d
end
T.days_from_civil, T.civil_from_days = days_from_civil, civil_from_days

local function check_ts(s, ns)
    if s < MIN_TS or s > MAX_TS then throw("timestamp out of range") end
    return V.ts(s, ns)
end
T.check_ts = check_ts

local function norm(s, ns)
    if ns >= 1000000000 or ns <= -1000000000 then
        s = s + ns // 1000000000
        ns = ns % 1000000000
    end
    return s, ns
end

local function check_dur(s, ns)
    -- keep ns the same sign as s
    if s > 0 and ns < 0 then s, ns = s - 1, ns + 1000000000
    elseif s < 0 and ns > 0 then s, ns = s + 1, ns - 1000000000 end
    if s > MAX_DUR or s < -MAX_DUR then throw("duration out of range") end
    return V.dur(s, ns)
end
T.check_dur = check_dur

-- RFC 3339 text -> timestamp
function T.parse_ts(str)
    local y, mo, d, h, mi, sec, rest =
        str:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$")
    if not y then throw("invalid timestamp '" .. str .. "'") end
    y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
    if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then
        throw("invalid timestamp '" .. str .. "'")
    end
    local ns = 0
    local frac, tz = rest:match("^%.(%d+)(.*)$")
    if frac then
        ns = math.tointeger(tonumber((frac .. "000000000"):sub(1, 9)))
        rest = tz
    end
    local off = 0
    if rest ~= "Z" and rest ~= "z" then
        local sign, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
        if not sign then throw("invalid timestamp '" .. str .. "'") end
        off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
    end
    local s = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off
    return check_ts(math.tointeger(s), ns)
end

local function frac_str(ns)
    if ns == 0 then return "" end
    return "." .. (string.format("%09d", ns):gsub("0+$", ""))
end

function T.format_ts(t)
    local days = t.s // 86400
    local secs = t.s % 86400
    local y, m, d = civil_from_days(days)
    return string.format("%04d-%02d-%02dT%02d:%02d:%02d", y, m, d, secs // 3600, secs % 3600 // 60,
        secs % 60) .. frac_str(t.ns) .. "Z"
end

local UNITS = { ns = 1, us = 1000, ["µs"] = 1000, ["μs"] = 1000, ms = 1000000, s = 1000000000,
                m = 60000000000, h = 3600000000000 }

-- Go-style duration text ("1h2m3.5s", "-100ms") -> duration
function T.parse_dur(str)
    local s = str
    local neg = false
    local c = s:sub(1, 1)
    if c == "-" or c == "+" then neg = c == "-"; s = s:sub(2) end
    if s == "0" then return V.dur(0, 0) end
    if s == "" then throw("invalid duration '" .. str .. "'") end
    local total_s, total_ns = 0, 0
    while s ~= "" do
        local num, frac, unit, rest = s:match("^(%d*)%.?(%d*)([a-zµμ]+)(.*)$")
        if not num or (num == "" and frac == "") or not UNITS[unit] then
            throw("invalid duration '" .. str .. "'")
        end
        local mult = UNITS[unit]
        local whole = tonumber(num ~= "" and num or "0")
        if whole > 1e15 then throw("duration out of range") end
        -- whole units in ns may overflow int64, so split into seconds and nanoseconds
        local ws = whole * mult // 1000000000
        local wns = whole * mult % 1000000000
        total_s, total_ns = total_s + ws, total_ns + wns
        if frac ~= "" then
            local fns = math.floor(tonumber("0." .. frac) * mult + 0.5)
            total_s = total_s + fns // 1000000000
            total_ns = total_ns + fns % 1000000000
        end
        s = rest
    end
    total_s, total_ns = norm(math.tointeger(total_s), math.tointeger(total_ns))
    if neg then total_s, total_ns = -total_s, -total_ns end
    return check_dur(total_s, total_ns)
end

function T.format_dur(d)
    local s, ns = d.s, d.ns
    local neg = s < 0 or ns < 0
    if neg then s, ns = -s, -ns end
    return (neg and "-" or "") .. tostring(s) .. frac_str(ns) .. "s"
end

function T.add(a, b)                     -- ts+dur, dur+ts, dur+dur
    local ta, tb = getmetatable(a), getmetatable(b)
    local s, ns = norm(a.s + b.s, a.ns + b.ns)
    if ta == V.TS or tb == V.TS then
        if ta == tb then throw("no such overload: timestamp + timestamp") end
        if ns < 0 then s, ns = s - 1, ns + 1000000000 end
        return check_ts(s, ns)
    end
    return check_dur(s, ns)
end

function T.sub(a, b)
    local ta, tb = getmetatable(a), getmetatable(b)
    local s, ns = norm(a.s - b.s, a.ns - b.ns)
    if ta == V.TS and tb == V.DUR then
        if ns < 0 then s, ns = s - 1, ns + 1000000000 end
        return check_ts(s, ns)
    end
    if ta == tb then return check_dur(s, ns) end
    throw("no such overload: duration - timestamp")
end

-- timezone offset in seconds for "UTC", "Z", "+05:30", "-0800"; other names are unsupported
local function tz_offset(tz)
    if tz == nil or tz == "UTC" or tz == "Z" or tz == "GMT" or tz == "Etc/UTC" then return 0 end
    local sign, h, m = tz:match("^([+-]?)(%d%d?):?(%d%d)$")
    if not h then throw("unsupported time zone '" .. tz .. "'") end
    local off = tonumber(h) * 3600 + tonumber(m) * 60
    return sign == "-" and -off or off
end

local function parts(t, tz)
    local s = t.s + tz_offset(tz)
    local days = s // 86400
    local y, m, d = civil_from_days(days)
    return s, days, y, m, d
end

T.getters = {
    getFullYear = function(t, tz) local _, _, y = parts(t, tz); return y end,
    getMonth = function(t, tz) local _, _, _, m = parts(t, tz); return m - 1 end,
    getDate = function(t, tz) local _, _, _, _, d = parts(t, tz); return d end,
    getDayOfMonth = function(t, tz) local _, _, _, _, d = parts(t, tz); return d - 1 end,
    getDayOfYear = function(t, tz)
        local _, days, y = parts(t, tz)
        return days - days_from_civil(y, 1, 1)
    end,
    getDayOfWeek = function(t, tz) local _, days = parts(t, tz); return (days + 4) % 7 end,
    getHours = function(t, tz)
        if getmetatable(t) == V.DUR then return (t.s + t.ns // 1000000000) // 3600 end
        local s = parts(t, tz); return s % 86400 // 3600
    end,
    getMinutes = function(t, tz)
        if getmetatable(t) == V.DUR then return t.s // 60 end
        local s = parts(t, tz); return s % 3600 // 60
    end,
    getSeconds = function(t, tz)
        if getmetatable(t) == V.DUR then return t.s end
        local s = parts(t, tz); return s % 60
    end,
    getMilliseconds = function(t) return t.ns // 1000000 end,
}

return T
