-- lunagate/schema.lua -- plugin config schemas: validation, defaults, freezing (STYLE 2.7)
-- SPDX-License-Identifier: MIT
--
-- A schema is { fields = { { name = spec }, ... }, check = function(conf) -> true | nil, msg }.
-- A spec is a table with:
--   type         "string" | "number" | "integer" | "boolean" | "array" | "map" | "record" | "any"
--   required     true: the field must be present (after defaults)
--   default      value used when the field is absent (deep-copied)
--   description  one line for docs (required by house style; checked by the plugin order spec)
--   one_of       list of allowed values
--   between      { min, max } inclusive, for numbers
--   len_min, len_max  string length / array length bounds
--   match        Lua pattern a string must match
--   elements     spec of array items
--   keys, values specs of map keys and values
--   fields       for "record": nested field list
--   check        function(value) -> true | nil, msg (cross-field rule of a record or schema)
-- Errors are returned as a table { ["config.path"] = "message" }; arrays use config.list[1].

local M = {}

local TYPES = {
    string = true, number = true, integer = true, boolean = true,
    array = true, map = true, record = true, any = true,
}

local has_cjson, cjson = pcall(require, "cjson")
local NULL = has_cjson and cjson.null or nil

-- lua-cjson's null and the YAML loader's null (both lightuserdata NULL) count as absent.
local function absent(v)
    if v == nil or (NULL ~= nil and v == NULL) then
        return true
    end
    if type(v) == "userdata" then
        local s = tostring(v)
        return s == "userdata: (nil)" or s == "userdata: NULL" or s == "userdata: 0x0"
    end
    return false
end

local function deepcopy(v)
    if type(v) ~= "table" then
        return v
    end
    local t = {}
    for k, x in pairs(v) do
        t[k] = deepcopy(x)
    end
    return t
end
M.deepcopy = deepcopy

local function field_of(entry)
    local name, spec = next(entry)
    return name, spec
end

-- Checks that a schema is well formed. Returns true, or nil and a message.
function M.check_schema(schema)
    if type(schema) ~= "table" then
        return nil, "schema must be a table"
    end
    local fields = schema.fields or {}
    if type(fields) ~= "table" then
        return nil, "schema.fields must be a list"
    end
    local function check_spec(path, spec)
        if type(spec) ~= "table" then
            return nil, path .. ": field spec must be a table"
        end
        if not TYPES[spec.type] then
            return nil, string.format("%s: unknown type '%s'", path, tostring(spec.type))
        end
        if spec.type == "record" and spec.fields then
            for i, e in ipairs(spec.fields) do
                if type(e) ~= "table" then
                    return nil, string.format("%s.fields[%d]: expected { name = spec }", path, i)
                end
                local n, s = field_of(e)
                local ok, err = check_spec(path .. "." .. tostring(n), s)
                if not ok then
                    return nil, err
                end
            end
        end
        if spec.type == "array" and spec.elements then
            return check_spec(path .. "[]", spec.elements)
        end
        if spec.type == "map" then
            if spec.keys then
                local ok, err = check_spec(path .. ".<key>", spec.keys)
                if not ok then return nil, err end
            end
            if spec.values then
                return check_spec(path .. ".<value>", spec.values)
            end
        end
        return true
    end
    for i, e in ipairs(fields) do
        if type(e) ~= "table" or next(e) == nil or next(e, next(e)) ~= nil then
            return nil, string.format("schema.fields[%d]: expected { name = spec }", i)
        end
        local n, s = field_of(e)
        if type(n) ~= "string" then
            return nil, string.format("schema.fields[%d]: field name must be a string", i)
        end
        local ok, err = check_spec(n, s)
        if not ok then
            return nil, err
        end
    end
    if schema.check ~= nil and type(schema.check) ~= "function" then
        return nil, "schema.check must be a function"
    end
    return true
end

-- Fields without a description, as a list of paths (for the house-style spec).
function M.undocumented(schema, prefix, out)
    out = out or {}
    for _, e in ipairs(schema.fields or {}) do
        local n, s = field_of(e)
        local p = prefix and (prefix .. "." .. n) or n
        if type(s) == "table" then
            if type(s.description) ~= "string" or s.description == "" then
                out[#out + 1] = p
            end
            if s.type == "record" and s.fields then
                M.undocumented(s, p, out)
            end
        end
    end
    return out
end

local function list(t)
    local parts = {}
    for i, v in ipairs(t) do
        parts[i] = tostring(v)
    end
    return table.concat(parts, ", ")
end

local validate_value

local function validate_fields(fields, value, path, errs)
    local out = {}
    local known = {}
    for _, e in ipairs(fields) do
        local name, spec = field_of(e)
        known[name] = true
        local v = value[name]
        local p = path .. "." .. name
        if absent(v) then
            if spec.default ~= nil then
                v = deepcopy(spec.default)
            elseif spec.type == "record" and spec.fields and spec.required then
                v = {}
            end
        end
        if absent(v) then
            if spec.required then
                errs[p] = "required field missing"
            end
        else
            out[name] = validate_value(spec, v, p, errs)
        end
    end
    for k in pairs(value) do
        if not known[k] then
            errs[path .. "." .. tostring(k)] = "unknown field"
        end
    end
    return out
end

local function is_array(t)
    local n = 0
    for k in pairs(t) do
        if math.type(k) ~= "integer" or k < 1 then
            return false
        end
        n = n + 1
    end
    return n == #t
end

validate_value = function(spec, v, path, errs)
    local t = spec.type
    local ok = true
    if t == "string" then
        ok = type(v) == "string"
    elseif t == "number" then
        ok = type(v) == "number"
    elseif t == "integer" then
        if type(v) == "number" and math.tointeger(v) then
            v = math.tointeger(v)
        else
            ok = false
        end
    elseif t == "boolean" then
        ok = type(v) == "boolean"
    elseif t == "array" then
        ok = type(v) == "table" and is_array(v)
    elseif t == "map" or t == "record" then
        ok = type(v) == "table"
    end
    if not ok then
        errs[path] = "expected " .. (t == "integer" and "an integer" or t == "array" and "an array"
            or ("a " .. t))
        return v
    end
    if spec.one_of then
        local found = false
        for _, x in ipairs(spec.one_of) do
            if x == v then
                found = true
                break
            end
        end
        if not found then
            errs[path] = "expected one of: " .. list(spec.one_of)
            return v
        end
    end
    if spec.between and type(v) == "number" then
        local lo, hi = spec.between[1], spec.between[2]
        if (lo and v < lo) or (hi and v > hi) then
            errs[path] = string.format("value should be between %s and %s", tostring(lo),
                tostring(hi))
            return v
        end
    end
    if spec.match and type(v) == "string" and not v:find(spec.match) then
        errs[path] = "does not match pattern " .. spec.match
        return v
    end
    local len = (type(v) == "string" or type(v) == "table") and #v or nil
    if len and spec.len_min and len < spec.len_min then
        errs[path] = "length must be at least " .. spec.len_min
        return v
    end
    if len and spec.len_max and len > spec.len_max then
        errs[path] = "length must be at most " .. spec.len_max
        return v
    end
    if t == "array" then
        local out = {}
        for i, x in ipairs(v) do
            out[i] = spec.elements and validate_value(spec.elements, x, path .. "[" .. i .. "]", errs)
                or deepcopy(x)
        end
        v = out
    elseif t == "map" then
        local out = {}
        for k, x in pairs(v) do
            local p = path .. "." .. tostring(k)
            if spec.keys then
                k = validate_value(spec.keys, k, p, errs)
            end
            out[k] = spec.values and validate_value(spec.values, x, p, errs) or deepcopy(x)
        end
        v = out
    elseif t == "record" then
        v = spec.fields and validate_fields(spec.fields, v, path, errs) or deepcopy(v)
    elseif t == "any" then
        v = deepcopy(v)
    end
    if spec.check then
        local good, msg = spec.check(v)
        if not good then
            errs[path] = msg or "invalid value"
        end
    end
    return v
end

-- lg.schema.validate(schema, conf) -> normalised conf | nil, { ["config.path"] = "message" }
-- Fills defaults, converts integral numbers for "integer" fields, rejects unknown fields, then
-- runs schema.check(conf) on the result. `conf` is not modified. Misuse (a schema that is not
-- a table) raises.
function M.validate(schema, conf)
    if type(schema) ~= "table" then
        error("bad argument #1 to 'validate' (schema table expected, got " .. type(schema) .. ")", 2)
    end
    if absent(conf) then
        conf = {}
    end
    local errs = {}
    if type(conf) ~= "table" then
        return nil, { config = "expected a table" }
    end
    local out = validate_fields(schema.fields or {}, conf, "config", errs)
    if next(errs) == nil and schema.check then
        local ok, msg = schema.check(out)
        if not ok then
            -- "field: message" names the field; anything else belongs to the whole config
            local f, m = tostring(msg):match("^([%w_%.%[%]]+): (.*)$")
            if f then
                errs["config." .. f] = m
            else
                errs.config = msg or "invalid config"
            end
        end
    end
    if next(errs) ~= nil then
        return nil, errs
    end
    return out
end

-- Formats an error table as "config.a: msg; config.b: msg" in a stable (sorted) order.
function M.format_errors(errs)
    local keys = {}
    for k in pairs(errs) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do
        parts[i] = k .. ": " .. tostring(errs[k])
    end
    return table.concat(parts, "; ")
end

-- Returns a read-only view of `t` (deep): reading works as usual (pairs, ipairs, #), writing
-- raises "attempt to modify a frozen config". M.thaw(view) gives the underlying table.
local frozen = setmetatable({}, { __mode = "k" })

function M.freeze(t)
    if type(t) ~= "table" or frozen[t] then
        return t
    end
    for k, v in pairs(t) do
        if type(v) == "table" then
            t[k] = M.freeze(v)
        end
    end
    local proxy = setmetatable({}, {
        __index = t,
        __newindex = function(_, k)
            error("attempt to modify a frozen config (key '" .. tostring(k) .. "')", 2)
        end,
        __pairs = function()
            return next, t, nil
        end,
        __len = function()
            return #t
        end,
        __metatable = "frozen",
    })
    frozen[proxy] = t
    return proxy
end

function M.thaw(view)
    return frozen[view] or view
end

return M
