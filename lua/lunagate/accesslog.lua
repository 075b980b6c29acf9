-- lunagate/accesslog.lua -- access-log lines from request records
-- SPDX-License-Identifier: MIT
--
-- One logger per config.logging. logger:line(rec) turns a request record into one line:
--   1. level: the line exists only when target "request" is enabled at info
--      (config.logging.level "info" | "info,request=off" | {"warn", "request=info"}; RUST_LOG
--      overrides it);
--   2. filter (CEL): the request is logged only when it evaluates to true (false, an error or a
--      non-bool drops it, as agentgateway's eval_bool does);
--   3. fields: the defaults below in the guide's order (agentgateway v0.9 "older layout"), a value
--      that is nil left out (an empty string is kept: `llm.request.model=`), then rec.fields
--      (plugins' lg.log.set_field), then fields.add (CEL) in config order. A key listed in
--      fields.add or fields.remove suppresses the default of the same name;
--   4. redaction: sensitive headers (authorization, proxy-authorization, cookie, set-cookie,
--      x-api-key, api-key, x-goog-api-key + config.sensitiveHeaders) never reach the line. An
--      added field whose expression names one of them, or whose key ends in one of them
--      (flatten(request.headers) -> h.authorization), prints "<redacted>" for a string or
--      container value; any other string that contains a sensitive header's value (or its
--      credential part, "Bearer <token>" -> <token>) has those bytes replaced by "<redacted>";
--      query parameters that carry keys (key, api_key, token, ...) print as "<redacted>" in
--      http.path;
--   5. format: plugin.format(fields, rec, meta) of the format plugin (bundled text/json, or a
--      user plugin found on the plugin paths), fields = { {key, value [, quote = true]}, ... },
--      meta = { time = "2025-09-12T18:23:54.661414Z", level = "info", scope = "request" }.
--      quote marks values that text mode prints JSON-encoded (error, rec.fields, fields.add).
-- The returned line has no trailing newline; lg_accesslog_write() adds it.
--
-- API:
--   accesslog.new(logging_conf [, opts]) -> logger | nil, err
--       logging_conf: config.logging (nil = defaults). opts: { dirs = {plugin dirs, searched
--       in order} | paths = {user dirs} + bundled = "<plugins dir>", sensitive_headers =
--       config.sensitiveHeaders, access_log = frontendPolicies.accessLog (its filter / add /
--       remove apply when config.logging has none), env = {LOG_FORMAT=, RUST_LOG=} (default
--       os.getenv) }
--   logger:line(rec [, act]) -> string | nil [, err]   act: CEL activation (default
--       lunagate.context.activation(rec), built only when filter or fields.add exist)
--   logger:fields(rec [, act]) -> fields | nil         step 1-4 only (for OTLP log export)
--   logger.enabled, logger.json (true when the format is "json": call
--       lg_accesslog_set_format(1)), logger.format (plugin name), logger.process_level
--       (LG_LOG_* for lg_log_level: -1 off, 0 error, 1 warn, 2 info, 3 debug)
--   accesslog.json_encode(v), accesslog.time(us), accesslog.parse_level(spec),
--   accesslog.REDACTED, accesslog.SENSITIVE_HEADERS

local M = {}

local mtype, tointeger, type, pairs, ipairs, tostring, concat, sfmt, floor =
    math.type, math.tointeger, type, pairs, ipairs, tostring, table.concat, string.format,
    math.floor

local redact = require "lunagate.redact"
M.REDACTED = redact.REDACTED
M.SENSITIVE_HEADERS = redact.SENSITIVE_HEADERS

-- ---- JSON encoding (numbers stay numbers, never in exponent notation) ----

-- Replaces bytes that are not valid UTF-8 with U+FFFD, so every line is valid JSON.
local function fix_utf8(s)
    local out, i, n = {}, 1, #s
    while i <= n do
        local ok, ch = pcall(utf8.codepoint, s, i)
        if ok then
            local c = utf8.char(ch)
            out[#out + 1] = c
            i = i + #c
        else
            out[#out + 1] = "\u{FFFD}"
            i = i + 1
        end
    end
    return concat(out)
end

-- lua-cjson escapes in C (fast) but writes "/" as "\/": put those back. A "\/" pair in its
-- output is always an escaped slash, since "/" itself never appears unescaped.
local cjson_encode = require("cjson").encode
local find, gsub = string.find, string.gsub

local function json_string(s)
    if not utf8.len(s) then s = fix_utf8(s) end
    s = cjson_encode(s)
    if find(s, "\\/", 1, true) then s = gsub(s, "\\/", "/") end
    return s
end

local function json_number(v)
    if mtype(v) == "integer" then return sfmt("%d", v) end
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == floor(v) then
        local i = tointeger(v)
        if i then return sfmt("%d", i) end
        return sfmt("%.0f", v)                  -- beyond 2^63: all digits, no exponent
    end
    local s
    for p = 15, 17 do
        s = sfmt("%." .. p .. "g", v)
        if tonumber(s) == v then break end
    end
    -- small magnitudes: the same shortest digits, written out in fixed notation
    local sign, int, frac, exp = s:match("^(-?)(%d)%.?(%d*)e([-+]%d+)$")
    if sign then
        exp = tonumber(exp)
        if exp < 0 then
            s = sign .. "0." .. string.rep("0", -exp - 1) .. int .. frac
        else
            s = sign .. int .. frac .. string.rep("0", exp - #frac)
        end
    end
    return s
end
M.json_number = json_number

local function encode(v, depth)
    local t = type(v)
    if t == "string" then return json_string(v) end
    if t == "number" then return json_number(v) end
    if t == "boolean" then return v and "true" or "false" end
    if t ~= "table" or depth > 32 then return "null" end
    local n = #v
    local count = 0
    for _ in pairs(v) do count = count + 1 end
    if count == n then                          -- a list (the empty table too)
        local out = {}
        for i = 1, n do out[i] = encode(v[i], depth + 1) end
        return "[" .. concat(out, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    local out = {}
    for i, k in ipairs(keys) do
        local x = v[k]
        if x == nil then x = v[tointeger(tonumber(k)) or k] end
        out[i] = json_string(k) .. ":" .. encode(x, depth + 1)
    end
    return "{" .. concat(out, ",") .. "}"
end

-- Encodes a plain Lua value as JSON: strings escaped (control bytes, invalid UTF-8 -> U+FFFD,
-- "/" left alone), integers and integral floats as integers, other floats in the shortest
-- round-tripping fixed notation, tables as arrays (1..n, empty too) or objects (sorted keys),
-- anything else (nil, functions, NaN) as null.
function M.json_encode(v)
    return encode(v, 0)
end
M.json_string = json_string

-- ---- Time ----

local last_sec, last_prefix
-- Microseconds since the epoch -> "2025-09-12T18:23:54.661414Z" (zero-padded micros).
function M.time(us)
    us = tointeger(us)
    if not us then
        local ok, lg = pcall(require, "lunagate")
        us = ok and type(lg) == "table" and type(lg.now) == "function"
            and tointeger(floor(lg.now() * 1e6)) or os.time() * 1000000
    end
    local sec = us // 1000000
    if sec ~= last_sec then
        last_prefix, last_sec = os.date("!%Y-%m-%dT%H:%M:%S", sec), sec
    end
    return sfmt("%s.%06dZ", last_prefix, us % 1000000)
end

-- ---- Level ----

local LEVELS = { off = -1, error = 0, warn = 1, info = 2, debug = 3, trace = 4 }

-- Parses "info" / "info,request=off" / {"warn", "request=info"} into the default level and a
-- map target -> level (numbers: off -1 .. trace 4). Returns nil, err on an unknown level.
function M.parse_level(spec)
    local default, targets = LEVELS.info, {}
    if spec == nil then return default, targets end
    local items = {}
    if type(spec) == "table" then
        for _, s in ipairs(spec) do items[#items + 1] = tostring(s) end
    elseif type(spec) == "string" then
        for s in spec:gmatch("[^,]+") do items[#items + 1] = s end
    else
        return nil, "config.logging.level: expected a string or a list of strings"
    end
    for _, item in ipairs(items) do
        item = item:match("^%s*(.-)%s*$")
        local target, lvl = item:match("^([^=]+)=(.*)$")
        local n = LEVELS[(lvl or item):lower()]
        if n == nil then
            return nil, "config.logging.level: unknown level '" .. (lvl or item)
                .. "' (expected off, error, warn, info, debug or trace)"
        end
        if target then targets[target] = n else default = n end
    end
    return default, targets
end

-- ---- Config helpers ----

-- fields.add as an ordered list of {name, src}: accepts config.lua's pairs shape
-- { {name=, value=}, ... }, a list of {name, src}, or a plain map (then sorted by name).
local function add_list(add)
    if add == nil then return {} end
    if type(add) ~= "table" then return nil, "config.logging.fields.add: expected a map" end
    local out = {}
    if add[1] ~= nil then
        for i, e in ipairs(add) do
            local name = type(e) == "table" and (e.name or e[1]) or nil
            local src = type(e) == "table" and (e.value or e.expr or e[2]) or nil
            if type(name) ~= "string" or type(src) ~= "string" then
                return nil, sfmt("config.logging.fields.add[%d]: expected name: CEL expression",
                                 i - 1)
            end
            out[#out + 1] = { name, src }
        end
        return out
    end
    local keys = {}
    for k in pairs(add) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        if type(k) ~= "string" or type(add[k]) ~= "string" then
            return nil, "config.logging.fields.add." .. tostring(k) .. ": expected a CEL string"
        end
        out[#out + 1] = { k, add[k] }
    end
    return out
end

local function plugin_dirs(opts)
    if type(opts.dirs) == "table" then return opts.dirs end
    local dirs = {}
    if type(opts.paths) == "table" then
        for _, p in ipairs(opts.paths) do dirs[#dirs + 1] = p end
    elseif type(opts.paths) == "string" then
        dirs[1] = opts.paths
    end
    local bundled = opts.bundled
    if not bundled then
        local f = package.searchpath("logging.text", package.path)
        bundled = f and f:match("^(.*)/logging/text%.lua$") or "plugins"
    end
    dirs[#dirs + 1] = bundled
    return dirs
end

-- Loads format plugin `name`. Returns the plugin, or nil and an error naming the file.
local function load_format(name, opts)
    local plugins = require "lunagate.plugins"
    if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
        return nil, "config.logging.format: bad format name '" .. tostring(name) .. "'"
    end
    local dirs = plugin_dirs(opts)
    local file, why = plugins.find(name, dirs)
    if not file then
        return nil, "config.logging.format: no format plugin '" .. name .. "' (" .. why .. ")"
    end
    local chunk, err = loadfile(file, "t")
    if not chunk then return nil, err end
    local ok, p = pcall(chunk)
    if not ok then return nil, file .. ": " .. tostring(p) end
    if type(p) ~= "table" or type(p.format) ~= "function" then
        return nil, file .. ": format plugin '" .. name .. "' has no format(fields, rec) function"
    end
    -- the shared contract (name, version, priority, schema); `format` is this kind's hook
    local copy = {}
    for k, v in pairs(p) do
        if k ~= "format" then copy[k] = v end
    end
    local good, msg = plugins.check_contract(copy)
    if not good then return nil, file .. ": " .. msg end
    if p.name ~= name then
        return nil, sfmt("%s: declares name '%s' but was loaded as '%s'", file, p.name, name)
    end
    return p
end

-- ---- Logger ----

local Logger = {}
Logger.__index = Logger

-- Returns a logger for `conf` (config.logging, borrowed), or nil and a config error.
function M.new(conf, opts)
    opts = opts or {}
    if conf ~= nil and type(conf) ~= "table" then
        return nil, "config.logging: expected a map"
    end
    -- YAML null (cjson.null) counts as absent
    local NULL = require("cjson").null
    local function nn(x) if x == NULL then return nil end return x end
    conf = conf or {}
    local cf = nn(conf.fields)
    conf = { level = nn(conf.level), format = nn(conf.format), filter = nn(conf.filter),
             fields = type(cf) == "table" and { add = nn(cf.add), remove = nn(cf.remove) } or cf }
    local getenv = opts.env and function(k) return opts.env[k] end or os.getenv
    local self = setmetatable({ last = {}, keyflag = {}, nkeyflag = 0 }, Logger)

    local default, targets = M.parse_level(getenv("RUST_LOG") or conf.level)
    if not default then return nil, targets end
    local req = targets.request or default
    self.enabled = req >= LEVELS.info
    self.process_level = math.min(default, 3)

    local format = conf.format or "text"
    local env_format = getenv("LOG_FORMAT")
    if env_format == "json" or env_format == "text" then format = env_format end
    local plugin, err = load_format(format, opts)
    if not plugin then return nil, err end
    self.format, self.plugin, self.json = format, plugin, format == "json"

    local sensitive = {}
    for _, h in ipairs(M.SENSITIVE_HEADERS) do sensitive[h] = true end
    if type(opts.sensitive_headers) == "table" then
        for _, h in ipairs(opts.sensitive_headers) do sensitive[tostring(h):lower()] = true end
    end
    self.sensitive = sensitive

    local fields = conf.fields or {}
    if type(fields) ~= "table" then return nil, "config.logging.fields: expected a map" end
    -- frontendPolicies.accessLog {filter, add, remove}: agentgateway's newer home of the same
    -- settings (config.logging's are migrated there); used when config.logging has none
    local fp = opts.access_log
    if type(fp) == "table" and conf.filter == nil and fields.add == nil
        and fields.remove == nil then
        conf = { level = conf.level, format = conf.format, filter = fp.filter }
        fields = { add = fp.add, remove = fp.remove }
    end
    local add, aerr = add_list(fields.add)
    if not add then return nil, aerr end
    local suppress = {}
    for _, e in ipairs(add) do suppress[e[1]] = true end
    if fields.remove ~= nil then
        if type(fields.remove) ~= "table" then
            return nil, "config.logging.fields.remove: expected a list of field names"
        end
        for _, k in ipairs(fields.remove) do suppress[tostring(k)] = true end
    end
    self.suppress = next(suppress) and suppress or nil

    if conf.filter ~= nil or #add > 0 then
        local ok, cel = pcall(require, "lunagate.cel")
        if not ok then return nil, "config.logging: CEL is not available: " .. tostring(cel) end
        if conf.filter ~= nil then
            if type(conf.filter) ~= "string" then
                return nil, "config.logging.filter: expected a CEL expression (string)"
            end
            local prog, perr = cel.compile(conf.filter)
            if not prog then return nil, "config.logging.filter: " .. perr end
            self.filter = prog
        end
        if #add > 0 then
            local fe, ferr = cel.compile_fields(add)
            if not fe then return nil, "config.logging.fields.add." .. ferr end
            self.add = fe
            -- fields whose expression names a sensitive header print "<redacted>"
            local hot = {}
            for _, e in ipairs(add) do
                local src = e[2]:lower()
                for h in pairs(sensitive) do
                    if src:find(h, 1, true) then hot[e[1]] = true end
                end
            end
            self.hot = next(hot) and hot or nil
        end
        self.context = require "lunagate.context"
    end
    return self
end

-- ---- Redaction ----

local secrets_of, scrub, redact_path = redact.secrets_of, redact.scrub, redact.path

-- True when added field `k` must print "<redacted>" for a string or container: its key ends
-- in a sensitive header name (flatten(request.headers) -> h.authorization), or its expression
-- (or, for name.sub keys, its root field's) names one. Cached per key (bounded).
function Logger:redacts(k)
    local c = self.keyflag[k]
    if c ~= nil then return c end
    local seg = (k:match("([^%.]+)$") or k):lower()
    c = self.sensitive[seg] or false
    local hot = self.hot
    if not c and hot then
        if hot[k] then
            c = true
        else
            for name in pairs(hot) do
                if k:sub(1, #name + 1) == name .. "." then
                    c = true
                    break
                end
            end
        end
    end
    if self.nkeyflag >= 4096 then self.keyflag, self.nkeyflag = {}, 0 end
    self.keyflag[k], self.nkeyflag = c, self.nkeyflag + 1
    return c
end

-- ---- Fields ----

-- Appends default field k = v unless v is nil or k is suppressed; returns the new count.
-- Entries are reused while a key keeps its value (gateway, route, model, ...), so they are
-- read-only for format plugins.
local function put(last, sup, out, n, k, v)
    if v == nil or (sup and sup[k]) then return n end
    local e = last[k]
    if e == nil or e[2] ~= v then
        e = { k, v }
        last[k] = e
    end
    n = n + 1
    out[n] = e
    return n
end

-- Returns the ordered fields of `rec` (steps 1-4 of the header), or nil when the request is
-- not logged.
function Logger:fields(rec, act)
    if not self.enabled then return nil end
    if (self.filter or self.add) and act == nil then act = self.context.activation(rec) end
    if self.filter then
        local v = self.filter:eval(act)
        if v ~= true then return nil end
    end

    local out, n, sup, last = {}, 0, self.suppress, self.last

    n = put(last, sup, out, n, "gateway", rec.gateway)
    n = put(last, sup, out, n, "listener", rec.listener)
    n = put(last, sup, out, n, "route_rule", rec.route_rule)
    n = put(last, sup, out, n, "route", rec.route)
    n = put(last, sup, out, n, "endpoint", rec.endpoint)
    n = put(last, sup, out, n, "src.addr", rec.src_addr)
    n = put(last, sup, out, n, "http.method", rec.method)
    n = put(last, sup, out, n, "http.host", rec.host)
    local path = rec.path
    if type(path) == "string" then path = redact_path(path) end
    n = put(last, sup, out, n, "http.path", path)
    n = put(last, sup, out, n, "http.version", rec.version)
    n = put(last, sup, out, n, "http.status", rec.status)
    n = put(last, sup, out, n, "grpc.status", rec.grpc_status)
    n = put(last, sup, out, n, "trace.id", rec.trace_id)
    n = put(last, sup, out, n, "span.id", rec.span_id)
    local jwt = rec.jwt
    n = put(last, sup, out, n, "jwt.sub", type(jwt) == "table" and jwt.sub or rec.jwt_sub)
    local a2a = rec.a2a
    if type(a2a) == "table" then n = put(last, sup, out, n, "a2a.method", a2a.method) end
    local mcp = rec.mcp
    if type(mcp) == "table" then
        n = put(last, sup, out, n, "mcp.method.name", mcp.method)
        n = put(last, sup, out, n, "mcp.target", mcp.target)
        n = put(last, sup, out, n, "mcp.tool", mcp.tool_name
            or (mcp.resource_type == "tool" and mcp.resource or nil))
        n = put(last, sup, out, n, "mcp.session.id", mcp.session_id)
    end
    local llm = rec.llm
    if type(llm) == "table" then
        n = put(last, sup, out, n, "llm.provider", llm.provider)
        n = put(last, sup, out, n, "llm.request.model", llm.request_model)
        n = put(last, sup, out, n, "llm.request.tokens", llm.input_tokens)
        n = put(last, sup, out, n, "llm.response.model", llm.response_model)
        n = put(last, sup, out, n, "llm.response.tokens", llm.output_tokens)
    end
    local retry = rec.retry_attempt
    if retry ~= nil and retry ~= 0 then n = put(last, sup, out, n, "retry.attempt", retry) end
    if rec.error ~= nil and not (sup and sup.error) then
        n = n + 1
        out[n] = { "error", rec.error, quote = true }
    end
    local dur = rec.duration_ms
    if dur == nil and mtype(rec.start_us) == "integer" and mtype(rec.end_us) == "integer" then
        dur = (rec.end_us - rec.start_us) // 1000
    end
    if dur ~= nil then
        n = put(last, sup, out, n, "duration", sfmt("%dms", tointeger(dur) or floor(dur)))
    end

    -- plugin fields and fields.add may carry anything: they are scrubbed
    local extra, added = rec.fields, nil
    if self.add then added = self.add:eval(act) end
    local secrets = false           -- computed on the first string that needs scrubbing
    local sensitive = self.sensitive
    for pass = 1, 2 do
        local list = pass == 1 and extra or added
        if type(list) == "table" then
            for i = 1, #list do
                local e = list[i]
                local k, v = e[1], e[2]
                if type(k) == "string" and v ~= nil and not (pass == 1 and sup and sup[k]) then
                    local tv = type(v)
                    if tv == "string" or tv == "table" then
                        if self:redacts(k) then
                            v = M.REDACTED
                        else
                            if not secrets then secrets = secrets_of(rec, sensitive) end
                            if #secrets > 0 or tv == "table" then
                                v = scrub(v, secrets, sensitive, 0)
                            end
                        end
                    end
                    n = n + 1
                    out[n] = { k, v, quote = true }
                end
            end
        end
    end
    return out
end

-- Returns the formatted line (no trailing newline), nil when the request is not logged, or
-- nil and an error when the format plugin fails.
function Logger:line(rec, act)
    local fields = self:fields(rec, act)
    if not fields then return nil end
    local meta = { time = M.time(rec.end_us), level = "info", scope = "request" }
    local ok, line = pcall(self.plugin.format, fields, rec, meta)
    if not ok then
        return nil, "format plugin '" .. self.format .. "': " .. tostring(line)
    end
    if type(line) ~= "string" then
        return nil, "format plugin '" .. self.format .. "': format() returned " .. type(line)
    end
    return line
end

return M
