-- lunagate.dump -- the normalised configuration as JSON for the admin /config_dump
-- endpoint, with secrets redacted.
local cjson = require "cjson"

-- `key` is a secret under backendAuth (an API key) but a name elsewhere (route keys).
local SECRET_UNDER = { backendauth = { key = true } }
local SECRET_KEYS = {
    apikey = true, password = true, secret = true, token = true,
    authorization = true, ["x-api-key"] = true, ["api-key"] = true, cookie = true,
}

local function redact(v, seen, parent)
    if type(v) ~= "table" then
        if type(v) == "userdata" or type(v) == "function" or type(v) == "thread" then
            return nil
        end
        return v
    end
    if seen[v] then
        return nil
    end
    seen[v] = true
    local out = {}
    for k, val in pairs(v) do
        local lk = type(k) == "string" and k:lower() or nil
        local under = parent and SECRET_UNDER[parent]
        if lk and (SECRET_KEYS[lk] or (under and under[lk]) or lk:find("secret", 1, true)
                   or lk:find("password", 1, true)) then
            out[k] = "<redacted>"
        elseif lk == "headers" and type(val) == "table" and #val == 0 then
            local h = {}
            for hk in pairs(val) do
                h[hk] = "<redacted>"
            end
            out[k] = h
        else
            out[k] = redact(val, seen, lk or parent)
        end
    end
    seen[v] = nil
    return out
end

return function(cfg)
    local ok, s = pcall(cjson.encode, redact(cfg, {}))
    return ok and s or "{}"
end
