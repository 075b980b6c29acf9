-- plugins/logging/json.lua -- the access-log line as one JSON object:
--   {"level":"info","time":"...","scope":"request","gateway":"...",...}
-- Keys in the same order as the text format; numbers stay numbers (integers without ".0",
-- floats never in exponent notation), strings are strings (`"duration":"3804ms"`, as
-- agentgateway writes it), CEL maps and lists stay nested JSON.
-- SPDX-License-Identifier: MIT
local al = require "lunagate.accesslog"

local json_encode, json_string = al.json_encode, al.json_string
local concat = table.concat

local plugin = {
    name = "json",
    version = "0.1.0",
    priority = 12,   -- format plugins are not chained; the number only keeps priorities unique
    schema = { fields = {} },
}

-- key -> ',"key":' (keys repeat on every line); bounded, since flatten() can make keys from
-- request data
local KEYS, LASTV, nkeys = {}, {}, 0
local mtype, type = math.type, type

-- fields: { {key, value [, quote = true]}, ... } (read-only); meta: { time =, level =, scope = }
function plugin.format(fields, _rec, meta)
    local parts = { '{"level":' .. json_string(meta.level) .. ',"time":' .. json_string(meta.time)
                    .. ',"scope":' .. json_string(meta.scope) }
    local n = 1
    local seen = { level = true, time = true, scope = true }
    for i = 1, #fields do
        local f = fields[i]
        local k = f[1]
        if not seen[k] then              -- duplicate keys would make the object ambiguous
            seen[k] = true
            local ek = KEYS[k]
            if not ek then
                ek = "," .. json_string(k) .. ":"
                if nkeys >= 4096 then KEYS, LASTV, nkeys = {}, {}, 0 end
                KEYS[k], nkeys = ek, nkeys + 1
            end
            local v = f[2]
            local tv = type(v)
            if tv == "string" then
                -- gateway, route, method, model... repeat: reuse the last encoding of this key
                local c = LASTV[k]
                if c and c[1] == v then
                    v = c[2]
                else
                    local e = json_string(v)
                    LASTV[k] = { v, e }
                    v = e
                end
            elseif tv ~= "number" or mtype(v) ~= "integer" then
                v = json_encode(v)
            end
            n = n + 1
            parts[n] = ek .. v
        end
    end
    parts[n + 1] = "}"
    return concat(parts, "", 1, n + 1)
end

return plugin
