-- config.lua -- schema, defaults, normalisation and error messages for the config file
-- SPDX-License-Identifier: MIT
--
-- Input: the tree and meta built by src/config.c (lg_config_push_yaml): nested tables with
-- YAML null as `M.null`, and meta[tbl] = { line, col, kind = "map"|"seq", keys = {...},
-- pos = { [key or index] = {line, col} } }. Output: the normalised table the C core reads
-- (see M.load). The schema is data: each section is a list of single-key field tables, as
-- in STYLE.md 2.7, checked by the small validator below; later issues add fields there.
--
-- Errors are one line, "FILE:LINE:COL: path: message", with zero-based indexes in the path
-- and the position of the offending key (or, for a missing key, of the table lacking it).
-- Regular expressions (route matches) are only checked for type here; the C core compiles
-- them with PCRE2 and reports syntax errors in the same "path: message" form.

local cjson = require "cjson"

local M = {}

-- YAML null: lightuserdata NULL, the same value as cjson.null.
M.null = cjson.null
local NULL = M.null

local MAX_BUFFER_SIZE = 2 * 1024 * 1024

-- ---- Positions and error messages ----

local ConfigError = {}
ConfigError.__index = ConfigError
ConfigError.__tostring = function(e) return e.msg end

local Ctx = {}
Ctx.__index = Ctx

local function new_ctx(file, meta, path, where)
    return setmetatable({ file = file, meta = meta or {}, path = path or "", where = where },
        Ctx)
end

-- Raises a config error at `where` (default: this node's position) for `path` (default:
-- this node's path).
function Ctx:fail(msg, where, path)
    where = where or self.where or { 1, 1 }
    path = path or self.path
    local s
    if path == "" then
        s = string.format("%s:%d:%d: %s", self.file, where[1], where[2], msg)
    else
        s = string.format("%s:%d:%d: %s: %s", self.file, where[1], where[2], path, msg)
    end
    -- one line, whatever the offending key or value contains
    s = s:gsub("[\r\n]", { ["\r"] = "\\r", ["\n"] = "\\n" })
    error(setmetatable({ msg = s }, ConfigError), 0)
end

-- Position of `key` (a string, or a 1-based index) inside `tbl`, or this node's position.
function Ctx:pos_of(tbl, key)
    local m = type(tbl) == "table" and self.meta[tbl]
    local p = m and m.pos and m.pos[key]
    if p then
        return { p[1], p[2] }
    end
    return self.where
end

local function join(path, key)
    if type(key) == "number" then
        return path .. "[" .. (key - 1) .. "]"
    end
    if not key:match("^[%w_%-:]+$") then
        key = string.format("[%q]", key)
        return path .. key
    end
    return path == "" and key or (path .. "." .. key)
end

function Ctx:child(tbl, key)
    return setmetatable({ file = self.file, meta = self.meta, path = join(self.path, key),
                          where = self:pos_of(tbl, key) }, Ctx)
end

-- ---- Value helpers ----

local function is_null(v)
    return v == nil or v == NULL
end

local function kind_of(ctx, v)
    local m = ctx.meta[v]
    if m then
        return m.kind
    end
    if next(v) == nil then
        return "empty"
    end
    return rawget(v, 1) ~= nil and "seq" or "map"
end

local function typename(ctx, v)
    if v == NULL then
        return "null"
    end
    local t = type(v)
    if t == "number" then
        return math.type(v) == "integer" and "integer" or "number"
    elseif t == "table" then
        return kind_of(ctx, v) == "seq" and "array" or "object"
    end
    return t
end

local function is_map(ctx, v)
    if type(v) ~= "table" then
        return false
    end
    local k = kind_of(ctx, v)
    return k == "map" or k == "empty"
end

local function is_array(ctx, v)
    if type(v) ~= "table" then
        return false
    end
    local k = kind_of(ctx, v)
    return k == "seq" or k == "empty"
end

-- Keys of a mapping in document order (sorted when there is no meta).
local function keys_of(ctx, v)
    local m = ctx.meta[v]
    if m and m.keys then
        return m.keys
    end
    local ks = {}
    for k in pairs(v) do
        if type(k) == "string" then
            ks[#ks + 1] = k
        end
    end
    table.sort(ks)
    return ks
end

local function deep_copy(v)
    if type(v) ~= "table" then
        return v
    end
    local c = {}
    for k, x in pairs(v) do
        c[k] = deep_copy(x)
    end
    return c
end

-- Levenshtein distance, capped: returns a value > cap as soon as it is certain.
local function distance(a, b, cap)
    local la, lb = #a, #b
    if math.abs(la - lb) > cap then
        return cap + 1
    end
    local prev = {}
    for j = 0, lb do
        prev[j] = j
    end
    for i = 1, la do
        local cur = { [0] = i }
        local best = i
        local ca = a:sub(i, i)
        for j = 1, lb do
            local cost = (ca == b:sub(j, j)) and 0 or 1
            local v = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            cur[j] = v
            if v < best then
                best = v
            end
        end
        if best > cap then
            return cap + 1
        end
        prev = cur
    end
    return prev[lb]
end

-- Closest name within edit distance 2 (case-insensitive matches count as distance 0),
-- else a name containing the word.
local function suggest(word, names)
    local best, bestd = nil, 3
    local lw = word:lower()
    for _, n in ipairs(names) do
        local d = (n:lower() == lw) and 0 or distance(word, n, 2)
        if d < bestd then
            best, bestd = n, d
        end
    end
    if not best and #lw >= 4 then
        -- a part of a longer name: "prefix" -> "pathPrefix"
        for _, n in ipairs(names) do
            if n:lower():find(lw, 1, true) then
                return n
            end
        end
    end
    return best
end
M.suggest = suggest

-- Parses a duration ("10s", "100ms", "1m", "1.5s", "1m30s", "2h") into milliseconds.
local UNIT_MS = { ns = 1e-6, us = 1e-3, ["µs"] = 1e-3, ms = 1, s = 1000, m = 60000,
                  h = 3600000, d = 86400000 }

local function parse_duration(s)
    local total, pos, n = 0, 1, 0
    s = s:match("^%s*(.-)%s*$")
    if s == "" then
        return nil
    end
    while pos <= #s do
        local num, unit, nxt = s:match("^(%d*%.?%d+)%s*([%aµ]+)%s*()", pos)
        if not num then
            return nil
        end
        local mul = UNIT_MS[unit]
        if not mul then
            return nil
        end
        total = total + tonumber(num) * mul
        pos = nxt
        n = n + 1
    end
    if n == 0 then
        return nil
    end
    return math.floor(total + 0.5)
end
M.parse_duration = parse_duration

-- Parses "host:port" / "[v6]:port" into host (without brackets), port, and the
-- canonical "host:port" string; nil on a malformed value.
local function parse_hostport(s)
    local host, port = s:match("^%[([%x:%.]+)%]:(%d+)$")
    local v6 = host ~= nil
    if not host then
        host, port = s:match("^([^:%[%]%s/]+):(%d+)$")
    end
    if not host then
        return nil
    end
    port = math.tointeger(tonumber(port))
    if not port or port < 1 or port > 65535 then
        return nil
    end
    return host, port, v6 and ("[" .. host .. "]:" .. port) or (host .. ":" .. port)
end
M.parse_hostport = parse_hostport

-- ---- The validator ----

local validate -- forward

local function expected(ctx, what, v)
    ctx:fail("expected " .. what .. ", got " .. typename(ctx, v))
end

local checkers = {}

function checkers.any(_, v)
    return v
end

function checkers.table(_, v, ctx)
    if type(v) ~= "table" then
        expected(ctx, "object", v)
    end
    return v
end

function checkers.string(spec, v, ctx)
    if type(v) ~= "string" then
        expected(ctx, "string", v)
    end
    if spec.one_of then
        for _, o in ipairs(spec.one_of) do
            if o == v then
                return v
            end
        end
        local hint = suggest(v, spec.one_of)
        ctx:fail(string.format("expected one of: %s, got '%s'%s", table.concat(spec.one_of, ", "),
            v, hint and (" (did you mean '" .. hint .. "'?)") or ""))
    end
    if spec.nonempty and v == "" then
        ctx:fail("must not be empty")
    end
    return v
end

local function check_between(spec, v, ctx)
    local b = spec.between
    if b and (v < b[1] or (b[2] and v > b[2])) then
        if b[2] then
            ctx:fail(string.format("value %s out of range (%s..%s)", v, b[1], b[2]))
        end
        ctx:fail(string.format("value %s must be at least %s", v, b[1]))
    end
end

function checkers.integer(spec, v, ctx)
    local i = type(v) == "number" and math.tointeger(v)
    if not i then
        expected(ctx, "integer", v)
    end
    check_between(spec, i, ctx)
    return i
end

function checkers.number(spec, v, ctx)
    if type(v) ~= "number" then
        expected(ctx, "number", v)
    end
    check_between(spec, v, ctx)
    return v
end

function checkers.boolean(_, v, ctx)
    if type(v) ~= "boolean" then
        expected(ctx, "boolean", v)
    end
    return v
end

-- Durations become integer milliseconds (or whole seconds with unit = "s").
function checkers.duration(spec, v, ctx)
    if type(v) ~= "string" then
        expected(ctx, 'duration string (e.g. "10s")', v)
    end
    local ms = parse_duration(v)
    if not ms then
        ctx:fail(string.format("bad duration '%s' (expected e.g. \"10s\", \"100ms\", \"1m\", \"1.5s\")",
            v))
    end
    if spec.unit == "s" then
        return ms // 1000
    end
    return ms
end

-- A path to a file that must be readable now; the error names the path.
function checkers.file(_, v, ctx)
    if type(v) ~= "string" then
        expected(ctx, "file path string", v)
    end
    local f, err = io.open(v, "rb")
    if not f then
        ctx:fail("cannot read file: " .. tostring(err))
    end
    f:close()
    return v
end

function checkers.hostport(_, v, ctx)
    if type(v) ~= "string" then
        expected(ctx, "host:port string", v)
    end
    local host, port, canon = parse_hostport(v)
    if not host then
        ctx:fail(string.format("bad host:port '%s' (expected addr:port, e.g. 127.0.0.1:8080 or "
            .. "[::1]:8080)", v))
    end
    return { host = host, port = port, address = canon }
end

-- How a type is named in "expected X" messages.
local WHAT = { record = "object", pairs = "object", table = "object", custom = "value",
               any = "value", file = "file path string", hostport = "host:port string",
               duration = "duration string" }

function checkers.array(spec, v, ctx)
    if not is_array(ctx, v) then
        expected(ctx, "array", v)
    end
    local out = {}
    for i = 1, #v do
        local c = ctx:child(v, i)
        if v[i] == NULL then
            expected(c, WHAT[spec.elements.type] or spec.elements.type, v[i])
        end
        out[i] = validate(spec.elements, v[i], c)
    end
    if spec.min and #out < spec.min then
        ctx:fail(string.format("needs at least %d item%s", spec.min, spec.min == 1 and "" or "s"))
    end
    return out
end

-- A string -> value mapping, kept as an ordered list { {name=, value=}, ... }.
function checkers.pairs(spec, v, ctx)
    if not is_map(ctx, v) then
        expected(ctx, "object", v)
    end
    local out = {}
    for _, k in ipairs(keys_of(ctx, v)) do
        out[#out + 1] = { name = k, value = validate(spec.values, v[k], ctx:child(v, k)) }
    end
    return out
end

function checkers.unsupported(spec, _, ctx)
    ctx:fail(spec.message or "not supported")
end

function checkers.custom(spec, v, ctx)
    return spec.validate(v, ctx)
end

local function field_names(spec)
    if not spec.names then
        local names, by = {}, {}
        for _, f in ipairs(spec.fields) do
            local name, fs = next(f)
            names[#names + 1] = name
            by[name] = fs
        end
        spec.names, spec.by_name = names, by
    end
    return spec.names, spec.by_name
end

local function default_of(fs, ctx)
    if fs.default_fill then
        return validate(fs, {}, ctx)
    end
    if type(fs.default) == "function" then
        return fs.default()
    end
    return deep_copy(fs.default)
end

function checkers.record(spec, v, ctx)
    if not is_map(ctx, v) then
        expected(ctx, "object", v)
    end
    local names, by = field_names(spec)
    for _, k in ipairs(keys_of(ctx, v)) do
        if not by[k] then
            local hint = suggest(k, names)
            ctx:fail(string.format("unknown key '%s'%s", k,
                hint and (" (did you mean '" .. hint .. "'?)") or ""), ctx:pos_of(v, k))
        end
    end
    local out = {}
    for _, name in ipairs(names) do
        local fs = by[name]
        local val = v[name]
        if is_null(val) then
            if fs.required then
                ctx:fail("missing required key '" .. name .. "'")
            end
            if fs.default ~= nil or fs.default_fill then
                out[fs.rename or name] = default_of(fs, ctx:child(v, name))
            end
        else
            out[fs.rename or name] = validate(fs, val, ctx:child(v, name))
        end
    end
    if spec.check then
        out = spec.check(out, v, ctx) or out
    end
    return out
end

validate = function(spec, v, ctx)
    local f = checkers[spec.type]
    if not f then
        error("config schema: unknown type '" .. tostring(spec.type) .. "'", 2)
    end
    return f(spec, v, ctx)
end

-- ---- Schema helpers ----

local KEPT = "Kept as given; validated by the issue that implements it."

local function any(description)
    return { type = "any", description = description or KEPT }
end

-- A key agentgateway knows but lunagate does not implement: an error when present.
local function unsupported(message)
    return { type = "unsupported", description = "Not supported.", message = message }
end

-- A section that must be a table, kept as given.
local function section(description)
    return { type = "table", description = description or KEPT }
end

local function strings(description)
    return { type = "array", elements = { type = "string" }, default = {},
             description = description }
end

-- A record holding exactly one of `keys`; returns kind, value (validated with `vspec`).
local function exactly_one(keys, vspec_of)
    return function(v, ctx)
        if not is_map(ctx, v) then
            expected(ctx, "object", v)
        end
        local found
        for _, k in ipairs(keys_of(ctx, v)) do
            local known = false
            for _, n in ipairs(keys) do
                known = known or n == k
            end
            if not known then
                local hint = suggest(k, keys)
                ctx:fail(string.format("unknown key '%s'%s", k,
                    hint and (" (did you mean '" .. hint .. "'?)") or ""), ctx:pos_of(v, k))
            end
            if not is_null(v[k]) then
                if found then
                    ctx:fail("expected exactly one of " .. table.concat(keys, ", ")
                        .. ", got both '" .. found .. "' and '" .. k .. "'", ctx:pos_of(v, k))
                end
                found = k
            end
        end
        if not found then
            ctx:fail("expected exactly one of " .. table.concat(keys, ", "))
        end
        return found, validate(vspec_of(found), v[found], ctx:child(v, found))
    end
end

-- ---- Policies ----

local header_value = {
    type = "custom",
    validate = function(v, ctx)
        local t = type(v)
        if t == "string" then
            return v
        elseif t == "number" or t == "boolean" then
            return tostring(v)
        end
        expected(ctx, "string", v)
    end,
}

-- add/set: a {name: value} mapping (agentgateway) or a list of {name, value}.
local header_list = {
    type = "custom",
    validate = function(v, ctx)
        local list
        if is_array(ctx, v) and kind_of(ctx, v) == "seq" then
            list = validate({ type = "array", elements = {
                type = "record", fields = {
                    { name = { type = "string", required = true, nonempty = true } },
                    { value = { type = "custom", validate = header_value.validate,
                                required = true } },
                } } }, v, ctx)
        else
            list = checkers.pairs({ values = header_value }, v, ctx)
        end
        for i, h in ipairs(list) do
            if not h.name:match("^[!#$%%&'*+%-.^_`|~%w]+$") then
                ctx:child(v, is_array(ctx, v) and i or h.name):fail(
                    "invalid header name '" .. h.name .. "'")
            end
            h.lname = h.name:lower()
        end
        return list
    end,
}

local HEADER_MODIFIER = {
    type = "record",
    description = "Headers to add (appended), set (replaced) or remove.",
    fields = {
        { add = setmetatable({ description = "Headers appended: {name: value} or [{name, value}]." },
                             { __index = header_list }) },
        { set = setmetatable({ description = "Headers replaced: {name: value} or [{name, value}]." },
                             { __index = header_list }) },
        { remove = { type = "custom", description = "Header names removed (stored lowercase).",
                     validate = function(v, ctx)
            local names = validate(strings(), v, ctx)
            for i, n in ipairs(names) do
                names[i] = n:lower()
            end
            return names
        end } },
    },
}

local URL_REWRITE = {
    type = "record",
    description = "Rewrite the path (full or prefix) and/or the authority before forwarding.",
    fields = {
        { path = { type = "custom", description = "{full: /p} or {prefix: /p}.",
                   validate = function(v, ctx)
            local k, val = exactly_one({ "full", "prefix" },
                function() return { type = "string" } end)(v, ctx)
            return { [k] = val }
        end } },
        { authority = { type = "custom", description = "{full: host[:port]}, {host: h} or {port: n}.",
                        validate = function(v, ctx)
            local k, val = exactly_one({ "full", "host", "port" }, function(k)
                if k == "port" then
                    return { type = "integer", between = { 1, 65535 } }
                end
                return { type = "string", nonempty = true }
            end)(v, ctx)
            return { [k] = val }
        end } },
    },
}

local DIRECT_RESPONSE = {
    type = "record",
    description = "Answer the request directly instead of forwarding it.",
    fields = {
        { status = { type = "integer", default = 200, between = { 100, 599 },
                     description = "HTTP status." } },
        { body = { type = "string", default = "", description = "Response body." } },
    },
}

local TIMEOUT = {
    type = "record",
    description = "Request deadlines.",
    fields = {
        { requestTimeout = { type = "duration", description = "Whole request, in ms." } },
        { backendRequestTimeout = { type = "duration", description = "Each upstream try, in ms." } },
    },
}

local BACKEND_TLS = {
    type = "record",
    description = "TLS to the upstream.",
    fields = {
        { root = { type = "file", description = "CA bundle (PEM); default: system roots." } },
        { hostname = { type = "string", description = "SNI and verified name." } },
        { insecure = { type = "boolean", description = "Skip certificate verification." } },
        { insecureHost = { type = "boolean", description = "Skip hostname verification only." } },
        { cert = { type = "file", description = "Client certificate (PEM)." } },
        { key = { type = "file", description = "Client key (PEM)." } },
        { alpn = { type = "array", elements = { type = "string" }, description = "ALPN ids." } },
        { subjectAltNames = { type = "array", elements = { type = "string" },
                              description = "Accepted SANs instead of the host name." } },
    },
    check = function(out, _, ctx)
        if (out.cert == nil) ~= (out.key == nil) then
            ctx:fail("cert and key must be set together")
        end
    end,
}

local RETRY = {
    type = "record",
    description = "Retries of failed upstream attempts.",
    fields = {
        { attempts = { type = "integer", default = 1, between = { 1, 100 },
                       description = "Total attempts, the first one included." } },
        { codes = { type = "array", default = {},
                    elements = { type = "integer", between = { 100, 599 } },
                    description = "Response statuses that are retried." } },
        { backoff = { type = "duration", description = "Pause between attempts, in ms." } },
        { precondition = { type = "string", description = "CEL; retry only when true." } },
        { condition = { type = "string", description = "CEL; retry when true." } },
    },
}

local CORS = {
    type = "record",
    description = "Answers CORS preflights and adds CORS headers.",
    fields = {
        { allowCredentials = { type = "boolean", default = false,
                               description = "Access-Control-Allow-Credentials." } },
        { allowHeaders = strings("Access-Control-Allow-Headers.") },
        { allowMethods = strings("Access-Control-Allow-Methods.") },
        { allowOrigins = strings("Allowed origins; \"*\" allows any.") },
        { exposeHeaders = strings("Access-Control-Expose-Headers.") },
        { maxAge = { type = "duration", unit = "s", description = "Seconds." } },
    },
}

-- Route-level policies (agentgateway FilterOrPolicy). Those kept as given are validated
-- by the issue that implements them.
local ROUTE_POLICIES = {
    type = "record",
    fields = {
        { requestHeaderModifier = HEADER_MODIFIER },
        { responseHeaderModifier = HEADER_MODIFIER },
        { requestRedirect = any() },
        { urlRewrite = URL_REWRITE },
        { requestMirror = any() },
        { directResponse = DIRECT_RESPONSE },
        { cors = CORS },
        { mcpAuthorization = any() },
        { extMcp = any() },
        { authorization = any() },
        { mcpAuthentication = any() },
        { a2a = any() },
        { ai = any() },
        { backendTLS = BACKEND_TLS },
        { backendTunnel = any() },
        { backendAuth = any() },
        { localRateLimit = any() },
        { remoteRateLimit = any() },
        { jwtAuth = any() },
        { oidc = any() },
        { basicAuth = any() },
        { apiKey = any() },
        { extAuthz = any() },
        { extProc = any() },
        { transformations = any() },
        { csrf = any() },
        { timeout = TIMEOUT },
        { retry = RETRY },
        { delay = any() },
        { buffer = any() },
        { mcpGuardrails = any() },
        { plugins = any("lunagate plugin chain [{name, config}]; checked by the plugin loader.") },
    },
}

-- Backend-level policies (agentgateway LocalBackendPolicies).
local BACKEND_POLICIES = {
    type = "record",
    fields = {
        { requestHeaderModifier = HEADER_MODIFIER },
        { responseHeaderModifier = HEADER_MODIFIER },
        { backendTLS = BACKEND_TLS },
        { backendAuth = any() },
        { transformations = any() },
        { http = any() },
        { tcp = any() },
        { backendTunnel = any() },
        { requestRedirect = any() },
        { health = any() },
        { extAuthz = any() },
        { mcpAuthorization = any() },
        { extMcp = any() },
        { a2a = any() },
        { inferenceRouting = any() },
        { ai = any() },
        { plugins = any("lunagate plugin chain [{name, config}]; checked by the plugin loader.") },
    },
}

-- ---- binds -> listeners -> routes -> backends ----

local BACKEND_KINDS = { "host", "ai", "mcp" }

local BACKEND = {
    type = "record",
    fields = {
        { weight = { type = "integer", default = 1, between = { 0 },
                     description = "Share of traffic among the route's backends." } },
        { host = { type = "hostport", description = "addr:port of a plain HTTP upstream." } },
        { ai = { type = "table", description = "LLM backend; validated by the LLM issue." } },
        { mcp = { type = "table", description = "MCP backend; validated by the MCP issue." } },
        { service = unsupported("service backends are not supported") },
        { backend = unsupported("named backend references are not supported yet") },
        { dynamic = unsupported("dynamic backends are not supported") },
        { aws = unsupported("aws backends are not supported") },
        { routeGroup = unsupported("routeGroup backends are not supported") },
        { policies = { type = "record", fields = BACKEND_POLICIES.fields, default = {},
                       description = "Backend-level policies." } },
    },
    check = function(out, v, ctx)
        local kind
        for _, k in ipairs(BACKEND_KINDS) do
            if out[k] ~= nil then
                if kind then
                    ctx:fail("expected exactly one of host, ai, mcp, got both '" .. kind
                        .. "' and '" .. k .. "'", ctx:pos_of(v, k))
                end
                kind = k
            end
        end
        if not kind then
            ctx:fail("backend needs one of 'host', 'ai' or 'mcp'")
        end
        local b = { kind = kind, weight = out.weight, policies = out.policies }
        if kind == "host" then
            b.host, b.port, b.address = out.host.host, out.host.port, out.host.address
            b.name = b.address
        else
            b[kind] = out[kind]
            -- an AI provider's own name; otherwise the listener names it after its route
            b.name = type(out[kind].name) == "string" and out[kind].name or nil
        end
        return b
    end,
}

local VALUE_MATCH = function(v, ctx)
    local k, val = exactly_one({ "exact", "regex" },
        function() return { type = "string" } end)(v, ctx)
    return k, val
end

local function name_value_match(lower)
    return {
        type = "custom",
        validate = function(v, ctx)
            local r = validate({ type = "record", fields = {
                { name = { type = "string", required = true, nonempty = true } },
                { value = { type = "custom", required = true, validate = function(x, c)
                    local k, val = VALUE_MATCH(x, c)
                    return { kind = k, value = val }
                end } },
            } }, v, ctx)
            return { name = lower and r.name:lower() or r.name, kind = r.value.kind,
                     value = r.value.value }
        end,
    }
end

local PATH_KINDS = { exact = "exact", pathPrefix = "prefix", regex = "regex" }

local MATCH = {
    type = "record",
    fields = {
        { path = { type = "custom", description = "{exact|pathPrefix|regex: value}; default prefix /.",
                   validate = function(v, ctx)
            local k, val = exactly_one({ "exact", "pathPrefix", "regex" },
                function() return { type = "string" } end)(v, ctx)
            return { kind = PATH_KINDS[k], value = val }
        end, default = function() return { kind = "prefix", value = "/" } end } },
        { method = { type = "string", nonempty = true, description = "HTTP method; any if absent." } },
        { headers = { type = "array", elements = name_value_match(true), default = {},
                      description = "[{name, value: {exact|regex}}], all must match." } },
        { query = { type = "array", elements = name_value_match(false), default = {},
                    description = "[{name, value: {exact|regex}}], all must match." } },
    },
}

local ROUTE = {
    type = "record",
    fields = {
        { name = { type = "string", nonempty = true, description = "Default route<index>." } },
        { namespace = { type = "string", default = "default", nonempty = true,
                        description = "Route namespace (key = namespace/name)." } },
        { ruleName = { type = "string", description = "Rule name, for telemetry." } },
        { hostnames = strings("Host names (wildcards allowed); empty matches any.") },
        { matches = { type = "array", elements = MATCH, description = "OR of matches.",
                      default = function()
                          return { { path = { kind = "prefix", value = "/" },
                                     headers = {}, query = {} } }
                      end } },
        { policies = { type = "record", fields = ROUTE_POLICIES.fields, default = {},
                       description = "Route-level policies." } },
        { backends = { type = "array", elements = BACKEND, default = {},
                       description = "Upstreams, chosen by weight." } },
    },
    check = function(out, _, ctx)
        if #out.backends == 0 and not out.policies.directResponse then
            ctx:fail("route has neither backends nor a directResponse policy")
        end
    end,
}

local TLS_SERVER = {
    type = "record",
    fields = {
        { cert = { type = "file", required = true, description = "Certificate chain (PEM)." } },
        { key = { type = "file", required = true, description = "Private key (PEM)." } },
        { root = { type = "file", description = "Client CA (PEM) for mutual TLS." } },
        { cipherSuites = { type = "array", elements = { type = "string" },
                           description = "Cipher suite allowlist." } },
        { minTLSVersion = { type = "string", one_of = { "TLS_V1_2", "TLS_V1_3" },
                            description = "Lowest TLS version accepted." } },
        { maxTLSVersion = { type = "string", one_of = { "TLS_V1_2", "TLS_V1_3" },
                            description = "Highest TLS version accepted." } },
        { keyExchangeGroups = { type = "array", elements = { type = "string" },
                                description = "Key exchange groups." } },
    },
}

local LISTENER = {
    type = "record",
    fields = {
        { name = { type = "string", nonempty = true, description = "Default listener<index>." } },
        { namespace = { type = "string", description = "Listener namespace." } },
        { hostname = { type = "string", default = "*", nonempty = true,
                       description = "Host name served (wildcards allowed)." } },
        { protocol = { type = "custom", default = "HTTP", description = "HTTP or HTTPS.",
                       validate = function(v, ctx)
            v = checkers.string({}, v, ctx)
            if v == "TLS" or v == "TCP" or v == "HBONE" then
                ctx:fail("protocol '" .. v .. "' is not supported (supported: HTTP, HTTPS)")
            end
            return checkers.string({ one_of = { "HTTP", "HTTPS" } }, v, ctx)
        end } },
        { tls = setmetatable({ description = "Server certificate for HTTPS." },
                             { __index = TLS_SERVER }) },
        { routes = { type = "array", elements = ROUTE, default = {},
                     description = "HTTP routes, matched by the C core's precedence." } },
        { tcpRoutes = unsupported("tcpRoutes are not supported") },
        { policies = any("Gateway-level policies; validated by the issues that implement them.") },
    },
    check = function(out, v, ctx)
        if out.protocol == "HTTPS" and not out.tls then
            ctx:fail("tls (cert and key) is required when protocol is HTTPS")
        end
        local seen = {}
        local routes_raw = is_map(ctx, v) and v.routes
        for i, r in ipairs(out.routes) do
            r.name = r.name or ("route" .. (i - 1))
            r.key = r.namespace .. "/" .. r.name
            for j, b in ipairs(r.backends) do
                b.name = b.name or (r.key .. "/backend" .. (j - 1))
            end
            local id = r.key .. (r.ruleName and ("/" .. r.ruleName) or "")
            if seen[id] then
                local rc = ctx:child(v, "routes"):child(routes_raw, i)
                local raw = routes_raw[i]
                local where = is_map(rc, raw) and rc:pos_of(raw, "name") or rc.where
                rc:fail("duplicate route name '" .. r.name .. "' (also used by routes["
                    .. (seen[id] - 1) .. "])", where)
            end
            seen[id] = i
        end
    end,
}

local BIND = {
    type = "record",
    fields = {
        { port = { type = "integer", required = true, between = { 1, 65535 },
                   description = "TCP port listened on (all addresses)." } },
        { listeners = { type = "array", elements = LISTENER, required = true,
                        description = "Listeners sharing the port, told apart by hostname." } },
        { tunnelProtocol = { type = "string", one_of = { "Direct" },
                             description = "Only Direct is supported." } },
    },
    check = function(out, v, ctx)
        out.key = "bind/" .. out.port
        local seen = {}
        local raw = v.listeners
        for i, l in ipairs(out.listeners) do
            l.name = l.name or ("listener" .. (i - 1))
            l.key = out.key .. "/" .. l.name
            if seen[l.name] then
                local lc = ctx:child(v, "listeners"):child(raw, i)
                local where = is_map(lc, raw[i]) and lc:pos_of(raw[i], "name") or lc.where
                lc:fail("duplicate listener name '" .. l.name .. "'", where)
            end
            seen[l.name] = true
        end
    end,
}

-- ---- config: and frontendPolicies ----

-- A listen address: "ip:port", "[v6]:port", "localhost:port" (= 127.0.0.1), "unix:/path"
-- (kept as is), and "off" where allowed (-> false).
local function address(default, allow_off, description)
    return {
        type = "custom",
        default = default,
        description = description,
        validate = function(v, ctx)
            if type(v) ~= "string" then
                expected(ctx, "address string (ip:port)", v)
            end
            if allow_off and v == "off" then
                return false
            end
            if v:match("^unix:.") then
                return v
            end
            local host, port, canon = parse_hostport(v)
            if not host then
                ctx:fail("bad address '" .. v .. "' (expected ip:port, e.g. 127.0.0.1:15000)")
            end
            if host == "localhost" then
                return "127.0.0.1:" .. port
            end
            return canon
        end,
    }
end

local CONFIG = {
    type = "record",
    fields = {
        { statsAddr = address("0.0.0.0:15020", false, "Prometheus metrics listener.") },
        { readinessAddr = address("0.0.0.0:15021", false, "GET /healthz/ready listener.") },
        { adminAddr = address("127.0.0.1:15000", true, "Admin listener; \"off\" disables.") },
        { workerThreads = { type = "custom", validate = function(v, ctx)
            if v == "auto" then
                return nil
            end
            if type(v) == "string" and math.tointeger(tonumber(v)) then
                v = math.tointeger(tonumber(v))
            end
            if math.type(v) ~= "integer" then
                expected(ctx, 'integer or "auto"', v)
            end
            check_between({ between = { 1, 1024 } }, v, ctx)
            return v
        end, description = "Worker threads; absent or \"auto\" = one per CPU." } },
        -- The schemas of these four sections arrive with the issues that implement them;
        -- until then any table is accepted and kept as given.
        { tracing = section() },
        { logging = section() },
        { metrics = section() },
        { plugins = section() },
        { enableIpv6 = { type = "boolean", description = "Listen on IPv6 too." } },
        { dns = section() },
        { connectionTerminationDeadline = { type = "duration",
                                            description = "Drain deadline on shutdown, in ms." } },
        { connectionMinTerminationDeadline = { type = "duration",
                                               description = "Minimum drain time, in ms." } },
        { backend = section() },
        { hbone = section() },
        { session = section() },
        { mcp = section() },
        { sensitiveHeaders = { type = "array", elements = { type = "string" },
                               description = "Extra headers redacted in telemetry." } },
        { customFunctions = any() },
        { modelCatalog = any() },
        { database = any() },
        { storage = any() },
        { standardAttributes = any() },
        { histograms = { type = "string", one_of = { "classic", "native", "both" },
                         description = "Histogram exposition." } },
        { xdsAddress = any() },
        { xdsAuthToken = any() },
        { caAddress = any() },
        { caAuthToken = any() },
        { namespace = any() },
        { gateway = any() },
        { trustDomain = any() },
        { serviceAccount = any() },
        { clusterId = any() },
        { network = any() },
        { spiffe = any() },
    },
}

local FRONTEND_HTTP = {
    type = "record",
    fields = {
        { maxBufferSize = { type = "integer", default = MAX_BUFFER_SIZE, between = { 1 },
                            description = "Largest request body buffered, in bytes." } },
        { http1MaxHeaders = any() },
        { http1IdleTimeout = { type = "duration",
                               description = "Keep-alive client connections idle this long close (ms)." } },
        { http2WindowSize = any() },
        { http2ConnectionWindowSize = any() },
        { http2FrameSize = any() },
        { http2KeepaliveInterval = any() },
        { http2KeepaliveTimeout = any() },
    },
}

local FRONTEND = {
    type = "record",
    fields = {
        { http = { type = "record", fields = FRONTEND_HTTP.fields, default_fill = true,
                   description = "Incoming HTTP limits." } },
        { tls = section() },
        { tcp = section() },
        { networkAuthorization = section() },
        { networkExtAuthz = section() },
        { proxyProtocol = section() },
        { proxy = section() },
        { connect = section() },
        { accessLog = section() },
        { logging = section() },
        { tracing = section() },
    },
}

local ROOT = {
    type = "record",
    fields = {
        { config = { type = "record", fields = CONFIG.fields, default_fill = true,
                     description = "Process settings, read at startup." } },
        { binds = { type = "array", elements = BIND, default = {},
                    description = "Ports -> listeners -> routes -> backends." } },
        { frontendPolicies = { type = "record", fields = FRONTEND.fields, default_fill = true,
                               description = "Listener-level policies for every bind." } },
        -- agentgateway sections kept as given for the issues that implement them
        { llm = section() },
        { mcp = section() },
        { gateways = section() },
        { routes = section() },
        { backends = section() },
        { policies = section() },
        { ui = section() },
        { tcpRoutes = section() },
        { services = unsupported("services are not supported") },
        { workloads = unsupported("workloads are not supported") },
        { routeGroups = unsupported("routeGroups are not supported") },
    },
    check = function(out, v, ctx)
        local seen = {}
        for i, b in ipairs(out.binds) do
            if seen[b.port] then
                local bc = ctx:child(v, "binds"):child(v.binds, i)
                bc:fail("duplicate port " .. b.port .. " (also used by binds[" .. (seen[b.port] - 1)
                    .. "])", bc:pos_of(v.binds[i], "port"))
            end
            seen[b.port] = i
        end
    end,
}

M.schema = {
    root = ROOT, config = CONFIG, frontend = FRONTEND, bind = BIND, listener = LISTENER,
    route = ROUTE, match = MATCH, backend = BACKEND, route_policies = ROUTE_POLICIES,
    backend_policies = BACKEND_POLICIES,
}

-- ---- Entry points ----

-- Validates `value` against `spec` (a schema node as above). `meta` and `filename` give
-- positions for messages; `path` prefixes them. Returns the normalised value, or nil and
-- a one-line "FILE:LINE:COL: path: message".
function M.validate(spec, value, meta, filename, path, where)
    if type(spec) ~= "table" then
        error("bad argument #1 to 'validate' (schema table expected)", 2)
    end
    local m = meta and meta[value]
    local ctx = new_ctx(filename or "<config>", meta, path or "",
        where or (m and { m.line, m.col }) or { 1, 1 })
    local ok, res = pcall(validate, spec, value, ctx)
    if ok then
        return res
    end
    if getmetatable(res) == ConfigError then
        return nil, res.msg
    end
    error(res, 0)
end

-- agentgateway's `mcp:` front door: a port (default 3000) serving the MCP backend at /mcp
-- and /sse. It becomes one more bind, so everything downstream sees ordinary routes.
-- Returns a shallow copy of tree with the bind added, or nil when there is no front door.
local mcp_front_door
local MCP_FRONT_KEYS = { port = true, policies = true, targets = true, statefulMode = true,
                         prefixMode = true, failureMode = true, dnsRebindingProtection = true }

mcp_front_door = function(tree, meta, filename)
    local m = tree.mcp
    if m == nil or is_null(m) then return nil end
    local mm = meta[m] or {}
    if type(m) ~= "table" then
        return nil, string.format("%s:%d:%d: mcp: expected a mapping", filename,
            mm.line or 1, mm.col or 1)
    end
    for k in pairs(m) do
        if not MCP_FRONT_KEYS[k] then
            local pos = mm.pos and mm.pos[k] or { mm.line or 1, mm.col or 1 }
            local names = {}
            for n in pairs(MCP_FRONT_KEYS) do names[#names + 1] = n end
            local hint = M.suggest and M.suggest(k, names)
            return nil, string.format("%s:%d:%d: mcp: unknown key '%s'%s", filename, pos[1],
                pos[2], tostring(k), hint and (" (did you mean '" .. hint .. "'?)") or "")
        end
    end
    local backend = {}
    for k, v in pairs(m) do
        if k ~= "port" and k ~= "policies" then backend[k] = v end
    end
    meta[backend] = mm
    local copy = {}
    for k, v in pairs(tree) do copy[k] = v end
    local binds = {}
    if type(tree.binds) == "table" then
        for i, b in ipairs(tree.binds) do binds[i] = b end
        meta[binds] = meta[tree.binds]
    end
    binds[#binds + 1] = {
        port = m.port or 3000,
        listeners = { {
            name = "mcp",
            routes = { {
                name = "mcp",
                matches = { { path = { pathPrefix = "/mcp" } }, { path = { pathPrefix = "/sse" } } },
                policies = m.policies,
                backends = { { mcp = backend } },
            } },
        } },
    }
    copy.binds = binds
    copy.mcp = nil
    return copy
end

-- Validates and normalises the whole config tree. Returns the normalised table or
-- nil and a one-line error.
function M.load(tree, meta, filename)
    filename = filename or "<config>"
    meta = meta or {}
    if is_null(tree) then
        tree = {}
    end
    if type(tree) ~= "table" or not is_map(new_ctx(filename, meta), tree) then
        local ctx = new_ctx(filename, meta, "", { 1, 1 })
        return nil, string.format("%s:1:1: expected a mapping at the top level, got %s",
            filename, typename(ctx, tree))
    end
    local front, ferr = mcp_front_door(tree, meta, filename)
    if ferr then return nil, ferr end
    local out, err = M.validate(ROOT, front or tree, meta, filename, "", { 1, 1 })
    if out and front then out.mcp = nil end
    return out, err
end

return M
