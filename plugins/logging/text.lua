-- plugins/logging/text.lua -- the access-log line as agentgateway prints it:
--   <time>\tinfo\trequest key=value key=value ...
-- Defaults print bare (`duration=3804ms`, `llm.request.model=` for an empty model); values
-- marked quote (error, plugin fields, fields.add) and non-scalar values print JSON-encoded
-- (`error="upstream timed out"`, `team="a"`). Control bytes in bare values are escaped so a
-- line stays one line.
-- SPDX-License-Identifier: MIT
local al = require "lunagate.accesslog"

local json_encode, json_number = al.json_encode, al.json_number
local mtype, type, concat = math.type, type, table.concat

local ESC = {}
for i = 0, 31 do
    ESC[string.char(i)] = string.format("\\x%02x", i)
end
ESC["\n"], ESC["\r"], ESC["\t"], ESC["\127"] = "\\n", "\\r", "\\t", "\\x7f"

local plugin = {
    name = "text",
    version = "0.1.0",
    priority = 11,   -- format plugins are not chained; the number only keeps priorities unique
    schema = { fields = {} },
}

local find, gsub = string.find, string.gsub

local function bare(v, escape)
    local t = type(v)
    if t == "string" then
        if escape then v = gsub(v, "%c", ESC) end
        return v
    end
    if t == "number" then
        if mtype(v) == "integer" then return v end      -- table.concat prints it as %d
        return json_number(v)
    end
    if t == "boolean" then return v and "true" or "false" end
    return json_encode(v)
end

-- key -> " key=" (keys repeat on every line); bounded, since flatten() can make keys from
-- request data
local KEQ, nkeq = {}, 0

local function build(fields, meta, escape)
    local parts = { meta.time, "\t", meta.level, "\t", meta.scope }
    local n = 5
    for i = 1, #fields do
        local f = fields[i]
        local k, v = f[1], f[2]
        local kq = KEQ[k]
        if not kq then
            kq = " " .. k .. "="
            if nkeq >= 4096 then KEQ, nkeq = {}, 0 end
            KEQ[k], nkeq = kq, nkeq + 1
        end
        local tv = type(v)
        if f.quote then
            v = json_encode(v)
        elseif tv == "string" then
            if escape then v = gsub(v, "%c", ESC) end
        elseif tv ~= "number" or mtype(v) ~= "integer" then
            v = bare(v, escape)
        end
        parts[n + 1] = escape and gsub(kq, "%c", ESC) or kq
        parts[n + 2] = v
        n = n + 2
    end
    return concat(parts, "", 1, n)
end

-- fields: { {key, value [, quote = true]}, ... } (read-only); meta: { time =, level =, scope = }
function plugin.format(fields, _rec, meta)
    local line = build(fields, meta, false)
    -- two memchr-speed scans of the whole line instead of one pattern match per value; CR
    -- or LF would break the line, so then every control byte of a bare value is escaped
    if find(line, "\n", 1, true) or find(line, "\r", 1, true) then
        line = build(fields, meta, true)
    end
    return line
end

return plugin
