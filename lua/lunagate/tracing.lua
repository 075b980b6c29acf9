-- lunagate/tracing.lua -- config.tracing: validation, sampling settings and span attributes
-- SPDX-License-Identifier: MIT
--
-- One tracer per worker state and configuration (built by lunagate.telemetry). The C core
-- decides sampling, keeps the ids and builds the lg_span_t; this module says what goes in it.
--
-- Config (agentgateway's legacy `config.tracing`; its `frontendPolicies.tracing` spelling is
-- accepted too: host, protocol, attributes, remove, filter, resources):
--   otlpEndpoint    http://h:4317 | https://... | grpc://h[:4317] | h:port
--   otlpProtocol    grpc (default) | http | http/protobuf
--   headers         { Name: value } sent with every export (values never logged)
--   path            OTLP/HTTP path (default: "/v1/traces" appended to the endpoint's path)
--   randomSampling  bool | 0..1 | CEL (bool or probability); requests without a traceparent;
--                   default false
--   clientSampling  same; requests with a traceparent; default true
--   fields          { add = { name: CEL }, remove = [name, ...] }
--   preset          jaeger | langfuse | phoenix | openllmetry | otel-genai
--                   (plugins/telemetry/<preset>.lua: its `fields` come before fields.add;
--                   its `defaults.otlpProtocol` applies when otlpProtocol is unset, so
--                   `preset: langfuse` exports OTLP/HTTP, the only protocol Langfuse takes)
--   batchSize       spans per export (1..65536, default 512)
--   batchInterval   "500ms" | "1s" | integer ms (1..60000, default 500)
--   queueSize       spans waiting for export (1..1048576, default 2048)
--
-- API:
--   tracing.new(tconf) -> tracer | nil, err       err is "key: message" (no header values)
--   tracing.exporter_options(tconf) -> opts | nil, err   what lg_otlp_start needs:
--       { endpoint = s|nil, protocol = "grpc"|"http", path = s|nil,
--         headers = { "Name: value", ... } (sorted by name), batch_size = n|nil,
--         batch_interval_ms = n|nil, queue_size = n|nil, resources = { k, v, k, v, ... } }
--   tracing.resolve(tconf) -> table | nil, err   tconf with otlpEndpoint, otlpProtocol, path,
--       headers, batchSize, queueSize, batchInterval (ms) resolved (for src/runtime.c)
--   tracing.probability(prog, rec) -> number in [0, 1]  (CEL sampling: bool -> 0/1, number
--       clamped, anything else or an error -> 0)
--   tracer.refs                   union of every CEL expression's refs (capture on demand)
--   tracer.preset                 preset name or nil
--   tracer:sampling() -> { random = p|nil, random_cel = prog|nil, client = p|nil,
--                          client_cel = prog|nil }   (exactly one of p / prog per side)
--   tracer:attributes(rec) -> name, attrs, status | nil (filter dropped the span)
--       attrs = { {key, value, kind}, ... }, kind "string" | "int" | "double" | "bool" |
--       "string[]" | "int[]"; maps and other lists are JSON strings; status is nil or
--       { code = "error", message = s } (rec.status >= 500 or rec.error). Entries are shared
--       between calls while their value stays the same: read-only. Raises on a non-table rec.
--   tracer:client_attributes(rec) -> name, attrs, status   the CLIENT span of the upstream call
--
-- Attribute order: access-log keys, MCP keys, GenAI semantic conventions, rec.fields (plugins'
-- lg.log.set_field), the preset's fields, then fields.add. A later key replaces an earlier one
-- of the same name (so `gen_ai.request: flatten(llm.params)` replaces the defaults), a key
-- named in fields.add or fields.remove suppresses the default, fields.remove removes
-- everything it names, and `span.name` names the span instead of being an attribute.
-- Secrets: http.path hides credential query parameters; an added string or container whose
-- key ends in, or whose expression names, a sensitive header (authorization, cookie, x-api-key,
-- ...) is "<redacted>"; any other added string has the request's credential values replaced.

local cel = require "lunagate.cel"
local context = require "lunagate.context"

local M = {}

local mtype, tointeger, type, pairs, ipairs, tostring, sfmt, concat =
    math.type, math.tointeger, type, pairs, ipairs, tostring, string.format, table.concat

M.PRESETS = { "jaeger", "langfuse", "phoenix", "openllmetry", "otel-genai" }
M.REDACTED = "<redacted>"

local SENSITIVE = { authorization = true, ["proxy-authorization"] = true, cookie = true,
                    ["set-cookie"] = true, ["x-api-key"] = true, ["api-key"] = true,
                    ["x-goog-api-key"] = true }

-- ---- JSON (for maps and mixed lists) ----

local json_encode
do
    local ok, al = pcall(require, "lunagate.accesslog")
    if ok and type(al) == "table" and al.json_encode then
        json_encode = al.json_encode
    else
        local cjson = require "cjson"
        json_encode = function(v) return (cjson.encode(v):gsub("\\/", "/")) end
    end
end

-- ---- config validation ----

local KEYS = {
    "otlpEndpoint", "otlpProtocol", "headers", "path", "randomSampling", "clientSampling",
    "fields", "preset", "batchSize", "batchInterval", "queueSize",
    -- frontendPolicies.tracing spelling
    "host", "protocol", "attributes", "remove", "filter", "resources",
}
local KEYSET = {}
for _, k in ipairs(KEYS) do KEYSET[k] = true end

local function distance(a, b)
    local la, lb = #a, #b
    if math.abs(la - lb) > 3 then return 99 end
    local prev = {}
    for j = 0, lb do prev[j] = j end
    for i = 1, la do
        local cur = { [0] = i }
        for j = 1, lb do
            local cost = a:sub(i, i):lower() == b:sub(j, j):lower() and 0 or 1
            cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        end
        prev = cur
    end
    return prev[lb]
end

local function suggest(k, list)
    local best, bd = nil, 3
    for _, c in ipairs(list) do
        local d = distance(k, c)
        if d < bd then best, bd = c, d end
    end
    return best and (" (did you mean '" .. best .. "'?)") or ""
end

local function is_list(t)
    if type(t) ~= "table" then return false end
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return n == #t
end

-- fields.add / attributes: a map (sorted by name: YAML order is not kept in Lua tables),
-- config.lua's pairs shape { {name=, value=}, ... } or a list of {name, src}.
local function add_list(add, what)
    if add == nil then return {} end
    if type(add) ~= "table" then return nil, what .. ": expected a map of name: CEL expression" end
    local out = {}
    if add[1] ~= nil then
        for i, e in ipairs(add) do
            local name = type(e) == "table" and (e.name or e[1]) or nil
            local src = type(e) == "table" and (e.value or e.expression or e[2]) or nil
            if type(name) ~= "string" or type(src) ~= "string" then
                return nil, sfmt("%s[%d]: expected name: CEL expression", what, i - 1)
            end
            out[#out + 1] = { name, src }
        end
        return out
    end
    local keys = {}
    for k in pairs(add) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        local v = add[k]
        if type(v) == "boolean" or type(v) == "number" then v = tostring(v) end
        if type(k) ~= "string" or type(v) ~= "string" then
            return nil, what .. "." .. tostring(k) .. ": expected a CEL expression (string)"
        end
        out[#out + 1] = { k, v }
    end
    return out
end

-- bool | number 0..1 | CEL string -> p | nil, prog | nil, err
local function sampling(v, what, dflt)
    if v == nil or type(v) == "userdata" or v == cel.null then return dflt end
    if type(v) == "boolean" then return v and 1.0 or 0.0 end
    if type(v) == "number" then
        if v ~= v or v < 0 or v > 1 then
            return nil, nil, what .. ": expected a probability between 0.0 and 1.0"
        end
        return v + 0.0
    end
    if type(v) ~= "string" then
        return nil, nil, what .. ": expected true, false, a probability (0.0-1.0) or a CEL expression"
    end
    local prog, err = cel.compile(v)
    if not prog then return nil, nil, what .. ": " .. err end
    local c = prog.const
    if c ~= nil then
        if type(c) == "boolean" then return c and 1.0 or 0.0 end
        if type(c) == "number" then
            if c ~= c or c < 0 or c > 1 then
                return nil, nil, what .. ": expected a probability between 0.0 and 1.0"
            end
            return c + 0.0
        end
        return nil, nil, what .. ": a constant " .. type(c) .. " is not a sampling decision"
    end
    return nil, prog
end

-- "500ms" | "1s" | "2m" | "250us" | integer ms -> ms | nil
local function duration_ms(v)
    if mtype(v) == "integer" then return v end
    if type(v) == "number" then return math.floor(v + 0.5) end
    if type(v) ~= "string" then return nil end
    local n, unit = v:match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
    n = tonumber(n)
    local mult = ({ ms = 1, s = 1000, m = 60000, us = 0.001, [""] = 1 })[unit or ""]
    if not n or not mult then return nil end
    return math.floor(n * mult + 0.5)
end

local function int_between(v, what, lo, hi)
    if v == nil then return nil end
    local i = tointeger(v)
    if type(v) == "string" then i = tointeger(tonumber(v)) end
    if not i or i < lo or i > hi then
        return nil, sfmt("%s: expected an integer between %d and %d", what, lo, hi)
    end
    return i
end

local PROTOCOLS = { grpc = "grpc", http = "http", ["http/protobuf"] = "http" }

local function check_endpoint(e, what)
    if type(e) ~= "string" or e == "" then
        return nil, what .. ": expected a URL such as http://localhost:4317"
    end
    if e:find("[%s%c]") then return nil, what .. ": the URL contains spaces or control bytes" end
    local scheme = e:match("^(%a[%w+.-]*)://")
    if scheme then
        scheme = scheme:lower()
        if scheme ~= "http" and scheme ~= "https" and scheme ~= "grpc" then
            return nil, what .. ": unsupported scheme '" .. scheme .. "' (expected http, https or grpc)"
        end
        if not e:match("^%a[%w+.-]*://[^/]+") then return nil, what .. ": the URL has no host" end
    elseif not e:match("^[%w.%-]+:%d+$") and not e:match("^%[[%x:]+%]:%d+$") then
        return nil, what .. ": expected a URL such as http://localhost:4317 or host:port"
    end
    return e
end

local function check_headers(h, what)
    if h == nil then return {} end
    if type(h) ~= "table" or (next(h) ~= nil and is_list(h)) then
        return nil, what .. ": expected a map of header name: value"
    end
    local names = {}
    for k in pairs(h) do names[#names + 1] = k end
    table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
    local out = {}
    for _, k in ipairs(names) do
        local v = h[k]
        if type(k) ~= "string" or not k:match("^[!#$%%&'*+%-.^_`|~%w]+$") then
            return nil, what .. ": bad header name '" .. tostring(k):gsub("[%c]", "?") .. "'"
        end
        if type(v) == "number" or type(v) == "boolean" then v = tostring(v) end
        if type(v) ~= "string" then
            return nil, what .. "." .. k .. ": expected a string value"
        end
        if v:find("[\r\n%z]") then
            return nil, what .. "." .. k .. ": the value contains CR, LF or NUL"
        end
        out[#out + 1] = k .. ": " .. v
    end
    return out
end

-- ---- presets ----

local preset_cache = {}

-- load_preset(name) -> plugin | nil, err. Presets live in plugins/telemetry/<name>.lua:
-- { name, version, schema, fields = { {name, CEL}, ... } [, defaults = { otlpProtocol = ...}] }
function M.load_preset(name)
    if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
        return nil, "preset: expected one of " .. concat(M.PRESETS, ", ")
    end
    local p = preset_cache[name]
    if p then return p end
    local file = package.searchpath("telemetry." .. name, package.path)
    if not file then
        return nil, "preset: unknown preset '" .. name .. "'" .. suggest(name, M.PRESETS)
            .. " (known: " .. concat(M.PRESETS, ", ") .. ")"
    end
    local chunk, err = loadfile(file, "t")
    if not chunk then return nil, "preset: " .. err end
    local ok, mod = pcall(chunk)
    if not ok then return nil, "preset: " .. file .. ": " .. tostring(mod) end
    if type(mod) ~= "table" or mod.name ~= name or type(mod.version) ~= "string"
        or type(mod.schema) ~= "table" or type(mod.fields) ~= "table" then
        return nil, "preset: " .. file .. ": expected { name = '" .. name
            .. "', version, schema, fields = { {name, CEL}, ... } }"
    end
    for i, f in ipairs(mod.fields) do
        if type(f) ~= "table" or type(f[1]) ~= "string" or type(f[2]) ~= "string" then
            return nil, sfmt("preset: %s: fields[%d]: expected {name, CEL}", file, i - 1)
        end
    end
    preset_cache[name] = mod
    return mod
end

-- ---- normalisation shared by new() and exporter_options() ----

local function normalise(t)
    if t == nil then t = {} end
    if type(t) ~= "table" then return nil, "expected a map" end
    -- YAML nulls (`headers:` with nothing under it) mean "not set"
    local copy = {}
    for k, v in pairs(t) do
        if type(v) ~= "userdata" then copy[k] = v end
    end
    t = copy
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
        if not KEYSET[k] then
            if k == "backend" or k == "service" or k == "policies" then
                return nil, k .. ": not supported (use otlpEndpoint or host)"
            end
            return nil, "unknown key '" .. k .. "'" .. suggest(k, KEYS)
        end
    end
    local c = {}
    local ep = t.otlpEndpoint
    if ep == nil and t.host ~= nil then ep = t.host end
    if ep ~= nil then
        local e, err = check_endpoint(ep, t.otlpEndpoint ~= nil and "otlpEndpoint" or "host")
        if not e then return nil, err end
        c.endpoint = e
    end
    local proto = t.otlpProtocol
    if proto == nil then proto = t.protocol end
    if proto ~= nil then
        local p = type(proto) == "string" and PROTOCOLS[proto:lower()]
        if not p then
            return nil, (t.otlpProtocol ~= nil and "otlpProtocol" or "protocol")
                .. ": expected grpc, http or http/protobuf"
        end
        c.protocol = p
    end
    if t.path ~= nil then
        if type(t.path) ~= "string" or t.path:sub(1, 1) ~= "/" or t.path:find("[%s%c]") then
            return nil, "path: expected a path starting with '/', e.g. /v1/traces"
        end
        c.path = t.path
    end
    local hs, herr = check_headers(t.headers, "headers")
    if not hs then return nil, herr end
    c.headers = hs
    local err
    c.batch_size, err = int_between(t.batchSize, "batchSize", 1, 65536)
    if err then return nil, err end
    c.queue_size, err = int_between(t.queueSize, "queueSize", 1, 1048576)
    if err then return nil, err end
    if t.batchInterval ~= nil then
        local ms = duration_ms(t.batchInterval)
        if not ms or ms < 1 or ms > 60000 then
            return nil, "batchInterval: expected a duration between 1ms and 60s, e.g. \"500ms\""
        end
        c.batch_interval_ms = ms
    end
    if t.preset ~= nil then
        local p, perr = M.load_preset(t.preset)
        if not p then return nil, perr end
        c.preset = p
        if c.protocol == nil and type(p.defaults) == "table" and p.defaults.otlpProtocol then
            c.protocol = PROTOCOLS[p.defaults.otlpProtocol]
        end
    end
    c.protocol = c.protocol or "grpc"
    -- fields
    local fields = t.fields
    if fields ~= nil and type(fields) ~= "table" then
        return nil, "fields: expected a map with add and remove"
    end
    fields = fields or {}
    for k in pairs(fields) do
        if k ~= "add" and k ~= "remove" then
            return nil, "fields: unknown key '" .. tostring(k) .. "' (expected add or remove)"
        end
    end
    local add, aerr = add_list(fields.add, "fields.add")
    if not add then return nil, aerr end
    if t.attributes ~= nil then
        local more, merr = add_list(t.attributes, "attributes")
        if not more then return nil, merr end
        for _, e in ipairs(more) do add[#add + 1] = e end
    end
    c.add = add
    local remove = {}
    for _, r in ipairs({ { fields.remove, "fields.remove" }, { t.remove, "remove" } }) do
        local list, what = r[1], r[2]
        if list ~= nil then
            if type(list) == "string" then list = { list } end
            if not is_list(list) then return nil, what .. ": expected a list of attribute names" end
            for i, name in ipairs(list) do
                if type(name) ~= "string" then
                    return nil, sfmt("%s[%d]: expected an attribute name", what, i - 1)
                end
                remove[name] = true
            end
        end
    end
    c.remove = remove
    if t.resources ~= nil then
        local res, rerr = add_list(t.resources, "resources")
        if not res then return nil, rerr end
        c.resources = res
    end
    return c
end

-- exporter_options(tconf) -> opts | nil, err (see the header)
function M.exporter_options(tconf)
    local c, err = normalise(tconf)
    if not c then return nil, err end
    local res = {}
    for _, e in ipairs(c.resources or {}) do
        local prog, perr = cel.compile(e[2])
        if not prog then return nil, "resources." .. e[1] .. ": " .. perr end
        local v = prog:eval({})
        v = cel.to_plain(v)
        if v ~= nil then
            res[#res + 1] = e[1]
            res[#res + 1] = type(v) == "table" and json_encode(v) or tostring(v)
        end
    end
    return {
        endpoint = c.endpoint, protocol = c.protocol, path = c.path, headers = c.headers,
        batch_size = c.batch_size, batch_interval_ms = c.batch_interval_ms,
        queue_size = c.queue_size, resources = res,
    }
end

-- resolve(tconf) -> table | nil, err: tconf with the exporter keys resolved, for C code that
-- reads the raw key names: otlpEndpoint (from `host` too), otlpProtocol ("grpc" | "http",
-- the preset's default when unset), path, headers (validated map), batchSize, queueSize and
-- batchInterval (integer ms). Other keys are copied as given.
function M.resolve(tconf)
    local c, err = normalise(tconf)
    if not c then return nil, err end
    local out = {}
    for k, v in pairs(tconf or {}) do out[k] = v end
    out.otlpEndpoint, out.otlpProtocol, out.path = c.endpoint, c.protocol, c.path
    out.host, out.protocol = nil, nil
    local headers = {}
    for _, h in ipairs(c.headers) do
        local name, value = h:match("^([^:]+): (.*)$")
        headers[name] = value
    end
    out.headers = headers
    out.batchSize, out.queueSize, out.batchInterval = c.batch_size, c.queue_size,
        c.batch_interval_ms
    return out
end

-- ---- sampling ----

-- probability(prog, rec) -> number in [0, 1]
function M.probability(prog, rec)
    if type(prog) == "number" then return prog end
    local act = context.activation(type(rec) == "table" and rec or {})
    local v = prog:eval(act)
    if v == true then return 1.0 end
    if type(v) == "number" then
        if v ~= v or v <= 0 then return 0.0 end
        if v >= 1 then return 1.0 end
        return v + 0.0
    end
    return 0.0
end

-- ---- tracer ----

local Tracer = {}
Tracer.__index = Tracer

function M.new(tconf)
    local c, err = normalise(tconf)
    if not c then return nil, err end
    local self = setmetatable({ refs = {}, remove = c.remove, suppress = {}, last = {},
                                hotkey = {}, nhot = 0 }, Tracer)
    local function add_refs(r)
        for k in pairs(r or {}) do self.refs[k] = true end
    end
    local rp, rprog, rerr = sampling(tconf and tconf.randomSampling, "randomSampling", 0.0)
    if rerr then return nil, rerr end
    local cp, cprog, cerr = sampling(tconf and tconf.clientSampling, "clientSampling", 1.0)
    if cerr then return nil, cerr end
    self.random, self.random_cel, self.client, self.client_cel = rp, rprog, cp, cprog
    if rprog then add_refs(rprog.refs) end
    if cprog then add_refs(cprog.refs) end
    if tconf and tconf.filter ~= nil then
        if type(tconf.filter) ~= "string" then return nil, "filter: expected a CEL expression" end
        local prog, ferr = cel.compile(tconf.filter)
        if not prog then return nil, "filter: " .. ferr end
        self.filter = prog
        add_refs(prog.refs)
    end
    if c.preset then
        self.preset = c.preset.name
        local fe, perr = cel.compile_fields(c.preset.fields)
        if not fe then return nil, "preset " .. c.preset.name .. ": fields." .. perr end
        self.preset_fields = fe
        add_refs(fe.refs)
        for _, f in ipairs(c.preset.fields) do self.suppress[f[1]] = true end
    end
    if #c.add > 0 then
        local fe, ferr = cel.compile_fields(c.add)
        if not fe then return nil, "fields.add." .. ferr end
        self.add = fe
        add_refs(fe.refs)
        -- an added field whose expression names a sensitive header is always redacted
        local hot = {}
        for _, e in ipairs(c.add) do
            local src = e[2]:lower()
            for h in pairs(SENSITIVE) do
                if src:find(h, 1, true) then hot[e[1]] = true end
            end
            self.suppress[e[1]] = true
        end
        self.hot = next(hot) and hot or nil
    end
    for k in pairs(c.remove) do self.suppress[k] = true end
    self.has_remove = next(c.remove) ~= nil
    return self
end

-- defaults_only() -> true when a span's attributes are exactly the defaults (no filter,
-- preset, fields.add or fields.remove): the C core then builds plain requests' spans itself
-- (src/runtime.c plain_span), the same attributes defaults() gives a record with no LLM,
-- MCP or plugin fields.
function Tracer:defaults_only()
    return not self.filter and not self.preset_fields and not self.add and not self.has_remove
        and next(self.suppress) == nil
end

function Tracer:sampling()
    return { random = self.random, random_cel = self.random_cel, client = self.client,
             client_cel = self.client_cel }
end

-- ---- attribute building ----

-- values -> {key, value, kind}; maps and other lists become JSON strings
local function typed(k, v)
    local t = type(v)
    if t == "string" then return { k, v, "string" } end
    if t == "boolean" then return { k, v, "bool" } end
    if t == "number" then
        if mtype(v) == "integer" then return { k, v, "int" } end
        if v ~= v or v == math.huge or v == -math.huge then return { k, tostring(v), "string" } end
        return { k, v, "double" }
    end
    if t ~= "table" then return nil end
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    if count == n then
        local strs, ints = true, true
        for i = 1, n do
            local e = v[i]
            if type(e) ~= "string" then strs = false end
            if mtype(e) ~= "integer" then ints = false end
        end
        if strs then
            local out = {}
            for i = 1, n do out[i] = v[i] end
            return { k, out, "string[]" }
        end
        if ints then
            local out = {}
            for i = 1, n do out[i] = v[i] end
            return { k, out, "int[]" }
        end
    end
    return { k, json_encode(v), "string" }
end
M.typed = typed

local function as_int(v)
    if mtype(v) == "integer" then return v end
    if type(v) == "number" then return tointeger(v) end
    if type(v) == "string" then return tointeger(tonumber(v)) end
    return nil
end

local function as_double(v)
    if type(v) == "number" then return v + 0.0 end
    return nil
end

local function strip_query(path)
    if type(path) ~= "string" then return nil end
    local q = path:find("?", 1, true)
    return q and path:sub(1, q - 1) or path
end

local redact = require "lunagate.redact"
local redact_path = redact.path
local function secrets_of(rec) return redact.secrets_of(rec, SENSITIVE) end
local function scrub(v, secrets, depth) return redact.scrub(v, secrets, SENSITIVE, depth) end

local VERSIONS = { ["HTTP/1.1"] = "1.1", ["HTTP/1.0"] = "1.0", ["HTTP/2"] = "2", ["HTTP/2.0"] = "2",
                   ["HTTP/3"] = "3" }

-- Entries are cached per key and reused while the value stays the same (gateway, route,
-- model, ...), so the {key, value, kind} entries a tracer returns are read-only.
local CACHE_MAX = 4096

local function entry(last, k, v, kind)
    local e = last[k]
    if e ~= nil and e[2] == v and e[3] == kind then return e end
    e = { k, v, kind }
    if type(v) ~= "table" then
        local n = last[0] or 0
        if n >= CACHE_MAX then
            for key in pairs(last) do last[key] = nil end
            n = 0
        end
        if last[k] == nil then n = n + 1 end
        last[k], last[0] = e, n
    end
    return e
end

-- state of the current defaults() call (one call at a time per Lua state)
local D_OUT, D_N, D_SUP, D_LAST

local function put(k, v, kind)
    if v == nil or D_SUP[k] then return end
    D_N = D_N + 1
    D_OUT[D_N] = entry(D_LAST, k, v, kind)
end
local function str(k, v) if type(v) == "string" then put(k, v, "string") end end
local function int(k, v) put(k, as_int(v), "int") end
local function dbl(k, v) put(k, as_double(v), "double") end

-- Appends the default attributes of rec to out (a list of {key, value, kind}).
local function defaults(out, rec, sup, last)
    D_OUT, D_N, D_SUP, D_LAST = out, #out, sup, last

    -- access-log keys
    str("gateway", rec.gateway)
    str("listener", rec.listener)
    str("route_rule", rec.route_rule)
    str("route", rec.route)
    str("endpoint", rec.endpoint)
    str("src.addr", rec.src_addr)
    str("http.method", rec.method)
    str("http.host", rec.host)
    if type(rec.path) == "string" then str("http.path", redact_path(rec.path)) end
    str("http.version", rec.version)
    int("http.status", rec.status)
    int("grpc.status", rec.grpc_status)
    str("trace.id", rec.trace_id)
    str("span.id", rec.span_id)
    local jwt = rec.jwt
    str("jwt.sub", type(jwt) == "table" and jwt.sub or rec.jwt_sub)
    str("protocol", rec.protocol)
    local retry = as_int(rec.retry_attempt)
    if retry and retry ~= 0 then int("retry.attempt", retry) end
    if rec.reason ~= "Upstream" then str("reason", rec.reason) end
    str("url.scheme", rec.scheme or "http")
    str("network.protocol.version", VERSIONS[rec.version])
    local status = as_int(rec.status)
    if status and status >= 500 then
        str("error.type", tostring(status))
    elseif rec.error ~= nil then
        str("error.type", "_OTHER")
    end

    -- MCP
    local mcp = rec.mcp
    if type(mcp) == "table" then
        str("mcp.method.name", mcp.method)
        str("mcp.target", mcp.target)
        str("mcp.resource.type", mcp.resource_type)
        str("mcp.resource.uri", mcp.resource_uri)
        str("gen_ai.tool.name", mcp.tool_name
            or (mcp.resource_type == "tool" and mcp.resource or nil))
        str("gen_ai.prompt.name", mcp.prompt_name
            or (mcp.resource_type == "prompt" and mcp.resource or nil))
        str("mcp.session.id", mcp.session_id)
        if mcp.error_code ~= nil then str("mcp.error.code", tostring(mcp.error_code)) end
        str("mcp.error.message", mcp.error_message)
        if mcp.method == "tools/call" and type(rec.llm) ~= "table" then
            str("gen_ai.operation.name", "execute_tool")
        end
    end

    -- GenAI semantic conventions
    local llm = rec.llm
    if type(llm) == "table" then
        str("gen_ai.operation.name", llm.operation or "chat")
        str("gen_ai.provider.name", llm.provider)
        str("gen_ai.system", llm.provider)
        str("gen_ai.request.model", llm.request_model)
        str("gen_ai.response.model", llm.response_model)
        str("gen_ai.response.id", llm.response_id)
        local fr = llm.finish_reasons
        if type(fr) == "table" and #fr > 0 then
            local list = {}
            for i = 1, #fr do list[i] = tostring(fr[i]) end
            put("gen_ai.response.finish_reasons", list, "string[]")
        end
        int("gen_ai.usage.input_tokens", llm.input_tokens)
        int("gen_ai.usage.cache_creation.input_tokens", llm.cache_creation_input_tokens)
        int("gen_ai.usage.cache_read.input_tokens", llm.cached_input_tokens)
        int("gen_ai.usage.output_tokens", llm.output_tokens)
        int("gen_ai.usage.reasoning.output_tokens", llm.reasoning_tokens)
        dbl("agw.ai.time_to_first_token", llm.ttft)
        dbl("agw.ai.time_per_output_token", llm.tpot)
        if llm.streaming == true then
            put("gen_ai.request.stream", true, "bool")
            dbl("gen_ai.response.time_to_first_chunk", llm.ttft)
        end
        local p = llm.params
        if type(p) == "table" then
            dbl("gen_ai.request.temperature", p.temperature)
            dbl("gen_ai.request.top_p", p.top_p)
            dbl("gen_ai.request.top_k", p.top_k)
            int("gen_ai.request.max_tokens", p.max_tokens or p.max_completion_tokens)
            dbl("gen_ai.request.frequency_penalty", p.frequency_penalty)
            dbl("gen_ai.request.presence_penalty", p.presence_penalty)
            int("gen_ai.request.seed", p.seed)
            local nc = as_int(p.n)
            if nc and nc ~= 1 then int("gen_ai.request.choice.count", nc) end
            local stop = p.stop
            if type(stop) == "string" then stop = { stop } end
            if type(stop) == "table" and #stop > 0 then
                local list = {}
                for i = 1, #stop do list[i] = tostring(stop[i]) end
                put("gen_ai.request.stop_sequences", list, "string[]")
            end
            int("gen_ai.embeddings.dimension.count", p.dimensions)
            if type(p.encoding_format) == "string" then
                put("gen_ai.request.encoding_formats", { p.encoding_format }, "string[]")
            end
        end
    end
    local n = D_N
    D_SUP, D_LAST = nil, nil
    return n
end

-- Appends CEL-evaluated entries; returns the span name if a `span.name` entry was seen.
-- True when added key k always prints "<redacted>": its last segment is a sensitive header
-- name (flatten(request.headers) -> h.authorization), or its expression (or, for name.sub
-- keys, its root field's) names one. Cached per key (bounded).
function Tracer:_hot(k)
    local c = self.hotkey[k]
    if c ~= nil then return c end
    local seg = (k:match("([^%.]+)$") or k):lower()
    c = SENSITIVE[seg] or false
    if not c and self.hot then
        for hk in pairs(self.hot) do
            if k == hk or k:sub(1, #hk + 1) == hk .. "." then c = true; break end
        end
    end
    if self.nhot >= CACHE_MAX then self.hotkey, self.nhot = {}, 0 end
    self.hotkey[k], self.nhot = c, self.nhot + 1
    return c
end

local SCALAR = { string = "string", boolean = "bool" }

-- Appends CEL-evaluated entries; returns the span name if a `span.name` entry was seen.
function Tracer:_append(out, list, rec, secrets, name)
    local last = self.last
    for i = 1, #list do
        local e = list[i]
        local k, v = e[1], e[2]
        if k == "span.name" then
            if type(v) == "string" then name = v end
        elseif v ~= nil then
            local tv = type(v)
            if tv == "string" or tv == "table" then
                if self:_hot(k) then
                    v = M.REDACTED
                else
                    local sec = secrets[1]
                    if sec == false then
                        sec = secrets_of(rec)
                        secrets[1] = sec
                    end
                    if #sec > 0 or tv == "table" then v = scrub(v, sec, 0) end
                end
            end
            local kind = SCALAR[type(v)]
            if kind == nil and mtype(v) == "integer" then kind = "int" end
            if kind == nil and mtype(v) == "float" and v == v and v ~= math.huge
                and v ~= -math.huge then
                kind = "double"
            end
            local a
            if kind then
                a = entry(last, k, v, kind)
            else
                a = typed(k, v)
            end
            if a then out[#out + 1] = a end
        end
    end
    return name
end

-- Default span name: the MCP method, else "<METHOD> <matched path>", else "unknown".
local function default_name(rec)
    local mcp = rec.mcp
    if type(mcp) == "table" and type(mcp.method) == "string" and mcp.method ~= "" then
        return mcp.method
    end
    local path = rec.route_path or rec.path_match or strip_query(rec.path)
    if type(rec.method) == "string" and type(path) == "string" then
        return rec.method .. " " .. path
    end
    return "unknown"
end
M.default_name = default_name

local function status_of(rec)
    local st = as_int(rec.status)
    if rec.error ~= nil or (st and st >= 500) then
        local msg = rec.error
        if type(msg) ~= "string" or msg == "" then
            msg = st and ("HTTP " .. st) or "error"
        end
        return { code = "error", message = msg }
    end
    return nil
end

-- Removes duplicate keys (the later entry wins, at its own position) and removed keys.
local function finish(out, ndef, remove)
    -- defaults (1..ndef) never repeat a key; only the appended entries can shadow
    local last = {}
    for i = ndef + 1, #out do last[out[i][1]] = i end
    local j = 0
    for i = 1, #out do
        local a = out[i]
        local k = a[1]
        local li = last[k]
        if (li == nil or li == i) and not remove[k] then
            j = j + 1
            out[j] = a
        end
    end
    for i = #out, j + 1, -1 do out[i] = nil end
    return out
end

-- attributes(rec) -> name, attrs, status | nil (see the header)
function Tracer:attributes(rec)
    if type(rec) ~= "table" then error("tracer:attributes: rec must be a table", 2) end
    local act
    if self.filter then
        act = context.activation(rec)
        if self.filter:eval(act) ~= true then return nil end
    end
    local out = {}
    local ndef = defaults(out, rec, self.suppress, self.last)
    local secrets = { false }
    local name = false
    -- plugins' lg.log.set_field values
    if type(rec.fields) == "table" then
        local list = {}
        for _, e in ipairs(rec.fields) do
            if type(e) == "table" and type(e[1]) == "string" and not self.suppress[e[1]] then
                list[#list + 1] = e
            end
        end
        name = self:_append(out, list, rec, secrets, name)
    end
    if self.preset_fields or self.add then
        act = act or context.activation(rec)
        if self.preset_fields then
            name = self:_append(out, self.preset_fields:eval(act), rec, secrets, name)
        end
        if self.add then
            name = self:_append(out, self.add:eval(act), rec, secrets, name)
        end
    end
    -- defaults never repeat a key: only appended entries and removals need the pass
    if #out > ndef or self.has_remove then finish(out, ndef, self.remove) end
    if self.remove["span.name"] then name = nil end
    return name or default_name(rec), out, status_of(rec)
end

-- client_attributes(rec) -> name, attrs, status: the CLIENT span of the primary upstream call
-- (agentgateway: "<METHOD> <host:port>", agentgateway.outbound.kind/subtype, http.*).
function Tracer.client_attributes(_, rec)
    local out = {}
    local method = rec.upstream_method or rec.method
    local ep = rec.endpoint or rec.backend
    local function add(k, v, kind) if v ~= nil then out[#out + 1] = { k, v, kind } end end
    add("agentgateway.outbound.kind", "Primary", "string")
    add("agentgateway.outbound.subtype", type(rec.llm) == "table" and "Llm"
        or (type(rec.mcp) == "table" and "Mcp" or "Http"), "string")
    add("http.method", type(method) == "string" and method or nil, "string")
    add("http.host", type(ep) == "string" and ep or nil, "string")
    local path = rec.upstream_path or rec.path
    add("http.path", type(path) == "string" and redact_path(path) or nil, "string")
    local st = as_int(rec.upstream_status or rec.status)
    add("http.status", st, "int")
    if type(ep) == "string" then
        local h, p = ep:match("^%[?([^%]]*)%]?:(%d+)$")
        add("server.address", h, "string")
        add("server.port", as_int(p), "int")
    end
    if st and st >= 500 then add("error.type", tostring(st), "string") end
    local name = (type(method) == "string" and method or "unknown") .. " "
        .. (type(ep) == "string" and ep or "unknown")
    local status
    if st and st >= 500 then status = { code = "error", message = "HTTP " .. st } end
    if rec.upstream_error then status = { code = "error", message = rec.upstream_error } end
    return name, out, status
end

return M
