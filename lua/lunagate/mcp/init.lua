-- lunagate/mcp/init.lua -- the MCP gateway: sessions, multiplexing, authorization, relaying
-- SPDX-License-Identifier: MIT
--
-- Entry point for the proxy (one backend per configured `mcp:` backend, per worker state):
--
--   local mcp = require "lunagate.mcp"
--   local backend, err = mcp.new_backend(mcp_conf, policies, opts)
--       mcp_conf  the backend's `mcp:` table as configured: {targets = {...}, statefulMode,
--                 prefixMode, failureMode}; targets {name, mcp={host|host,port,path} |
--                 sse={host} | stdio={cmd, args, env, clearEnv}}
--       policies  route/backend policies table or nil; uses policies.mcpAuthorization.rules
--       opts      { lg = require "lunagate" (default), session_key = hex (config.session.key),
--                   session_ttl = seconds (config.mcp.sessionTtl, default 1800),
--                   timeout_ms = upstream request head timeout (default 60000),
--                   activation = function(rec) -> table of CEL variables (jwt, request, ...),
--                   connect = function(target, env) -> conn (tests; default upstream.connect),
--                   stderr = "inherit" | "null" (stdio children), clock = function() -> s,
--                   forward_headers = { "authorization", ... } client request headers copied
--                   to Streamable HTTP targets (backendAuth passthrough) }
--   backend:handle(req, rec, io)     -- runs inside a coroutine; may yield on I/O
--       req  { method = "POST", path = "/mcp", query = "a=b" | nil,
--              headers = { lowercase name = value }, body = "..." | nil }
--       rec  the request record; filled: rec.protocol = "mcp", rec.mcp = { method, session_id,
--            target, resource_type, resource, tool_name, prompt_name, resource_uri,
--            error_code, error_message }, rec.span_name (the MCP method), rec.status; GET and
--            DELETE carry no JSON-RPC method, so they leave method and span_name unset
--            rec.traceparent (or rec.trace_id/span_id/sampled) is read and forwarded upstream
--       io   provided by the proxy:
--            io.respond(status, headers, body)       one complete answer
--            io.stream_start(status, headers)        then io.stream_write(chunk) (may yield;
--            returning false, or nil plus an error, means the client left), io.stream_end()
--   backend:close()                  -- ends every session (kills stdio children)
--
-- Transports handled: Streamable HTTP on any path (POST JSON-RPC answered with JSON or an SSE
-- stream, GET server stream, DELETE ends the session), and the legacy SSE transport when the
-- path ends in "/sse" (GET opens the stream; its first event names "<path>?sessionId=<id>",
-- where clients POST and get 202 while answers arrive on the stream).
--
-- Coroutines: stdio/SSE targets and server streams run background coroutines started here;
-- they are resumed by the same resumer as request coroutines (lg_lapi_http_resume), which
-- must therefore accept coroutines the proxy did not start and ignore their results.

local json = require "lunagate.mcp.json"
local rpc = require "lunagate.mcp.jsonrpc"
local session = require "lunagate.mcp.session"
local mux = require "lunagate.mcp.mux"
local authz = require "lunagate.mcp.authz"
local upstream = require "lunagate.mcp.upstream"

local mcp = {}

local DEFAULT_VERSION = "2025-06-18"
local SWEEP_EVERY = 30
local MAX_QUEUE = 1000
local KEEPALIVE_MS = 15000

local Backend = {}
Backend.__index = Backend

-- ---- construction ----

local function check_targets(conf)
    if type(conf) ~= "table" then return nil, "mcp: expected a table" end
    local targets = conf.targets
    if type(targets) ~= "table" or #targets == 0 then
        return nil, "mcp.targets: at least one target is required"
    end
    local seen = {}
    for i, t in ipairs(targets) do
        local where = string.format("mcp.targets[%d]", i - 1)
        if type(t) ~= "table" or type(t.name) ~= "string" or t.name == "" then
            return nil, where .. ".name: required"
        end
        if seen[t.name] then return nil, where .. ".name: duplicate target '" .. t.name .. "'" end
        seen[t.name] = true
        local n = (t.mcp and 1 or 0) + (t.sse and 1 or 0) + (t.stdio and 1 or 0)
        if n ~= 1 then
            return nil, where .. ": expected exactly one of mcp, sse, stdio"
                .. (t.openapi and " (openapi targets are not supported)" or "")
        end
        if t.mcp or t.sse then
            local _, err = upstream.target_url(t.mcp or t.sse)
            if err then return nil, where .. (t.mcp and ".mcp: " or ".sse: ") .. err end
        elseif type(t.stdio) ~= "table" or type(t.stdio.cmd) ~= "string" then
            return nil, where .. ".stdio.cmd: required"
        end
    end
    return seen
end

function mcp.new_backend(conf, policies, opts)
    opts = opts or {}
    local names, err = check_targets(conf)
    if not names then return nil, err end
    local mode = conf.prefixMode or "conditional"
    if mode ~= "conditional" and mode ~= "always" and mode ~= "never" then
        return nil, "mcp.prefixMode: expected one of conditional, always, never"
    end
    local lg = opts.lg
    if lg == nil then
        local ok, m = pcall(require, "lunagate")
        lg = ok and m or {}
    end
    local rules = type(policies) == "table" and type(policies.mcpAuthorization) == "table"
        and policies.mcpAuthorization.rules or nil
    local policy, perr = authz.compile(rules)
    if not policy then return nil, "mcpAuthorization." .. perr end
    local codec, cerr = session.codec{
        key = opts.session_key, aead = lg.crypto_aead,
        random = lg.crypto and lg.crypto.random_bytes or nil,
    }
    if not codec then return nil, "config.session.key: " .. cerr end
    local b = setmetatable({
        lg = lg, conf = conf, targets = conf.targets, names = names,
        prefix = mux.prefixing(mode, #conf.targets), prefix_mode = mode,
        stateless = conf.statefulMode == "stateless",
        fail_open = conf.failureMode == "failOpen",
        policy = policy, codec = codec, activation = opts.activation,
        connect = opts.connect or upstream.connect,
        ttl = opts.session_ttl or 1800, timeout_ms = opts.timeout_ms or 60000,
        stderr = opts.stderr, clock = opts.clock or os.time,
        forward_headers = opts.forward_headers,
        sessions = {}, legacy = {}, last_sweep = 0, ids = 0,
    }, Backend)
    b.by_name = {}
    for _, t in ipairs(conf.targets) do b.by_name[t.name] = t end
    return b
end

-- ---- helpers ----

local function traceparent(rec)
    if rec.traceparent then return rec.traceparent end
    if rec.trace_id and rec.span_id then
        return string.format("00-%s-%s-%s", rec.trace_id, rec.span_id,
                             rec.sampled == false and "00" or "01")
    end
end

local JSON_HDR = { ["content-type"] = "application/json" }

-- io.stream_write: a failure is `false` or `nil, err` (the client left); anything else is
-- success, so a writer that returns nothing works too.
local function swrite(io, chunk)
    local ok, err = io.stream_write(chunk)
    if ok == false or (ok == nil and err ~= nil) then return nil end
    return true
end

local function respond_json(io, status, msg, extra)
    local h = { ["content-type"] = "application/json" }
    for k, v in pairs(extra or {}) do h[k] = v end
    io.respond(status, h, json.encode(msg))
end

local function note_error(rec, msg)
    if type(msg) == "table" and type(msg.error) == "table" then
        rec.mcp.error_code = msg.error.code
        rec.mcp.error_message = msg.error.message
    end
end

function Backend:_next_id()
    self.ids = self.ids + 1
    return "agw-" .. self.ids
end

-- Client headers copied to HTTP targets (opts.forward_headers), kept beside the record rather
-- than in it so credentials never reach logs or spans.
local FORWARD = setmetatable({}, { __mode = "k" })

function Backend._ctx(_, rec)
    return { traceparent = traceparent(rec), headers = FORWARD[rec] }
end

function Backend:_allowed(kind, name, target, method, sid, rec)
    if self.policy.empty then return true end
    local base = self.activation and self.activation(rec) or nil
    if base == nil and rec and rec.jwt then base = { jwt = rec.jwt } end
    local act = authz.activation(base, authz.item_vars(kind, name, target, method, sid))
    return self.policy:allowed(act)
end

-- ---- sessions ----

function Backend:_env(sess)
    return {
        http = self.lg.http, process = self.lg.process, timeout_ms = self.timeout_ms,
        stderr = self.stderr,
        on_unsolicited = function(msg) sess:push(msg) end,
    }
end

local Session = {}
Session.__index = Session

function Session:push(item)
    if #self.queue < MAX_QUEUE then
        self.queue[#self.queue + 1] = item
    end
    if self.ev then
        local ev = self.ev
        self.ev = self.backend.lg.http.event()
        ev:set()
    end
end

function Backend:_new_session()
    local s = setmetatable({ backend = self, conns = {}, order = {}, queue = {},
                             last_used = self.clock() }, Session)
    s.ev = self.lg.http and self.lg.http.event and self.lg.http.event() or nil
    return s
end

function Backend:_open(sess, t)
    local conn, err = self.connect(t, self:_env(sess))
    if not conn then return nil, err end
    conn.target = t.name
    sess.conns[t.name] = conn
    sess.order[#sess.order + 1] = t.name
    -- server messages on the pending queue carry their origin
    return conn
end

function Backend:_close_session(sess)
    if sess.closed then return end
    sess.closed = true
    for _, name in ipairs(sess.order) do
        local c = sess.conns[name]
        if c then pcall(c.close, c) end
    end
    if sess.id then self.sessions[sess.id] = nil end
    if sess.ev then sess.ev:set() end
end

function Backend:_sweep(force)
    local now = self.clock()
    if not force and now - self.last_sweep < SWEEP_EVERY then return end
    self.last_sweep = now
    for id, s in pairs(self.sessions) do
        if now - s.last_used > self.ttl then
            self.sessions[id] = nil
            self:_close_session(s)
        end
    end
end

-- Idle sessions also expire while no request comes: a background coroutine sweeps every
-- SWEEP_EVERY seconds for as long as sessions exist.
function Backend:_start_reaper()
    local http = self.lg.http
    if self.reaping or not (http and http.sleep) then return end
    self.reaping = true
    local co = coroutine.create(function()
        while next(self.sessions) do
            http.sleep(SWEEP_EVERY * 1000)
            self:_sweep(true)
        end
        self.reaping = false
    end)
    coroutine.resume(co)
end

local function init_params(version)
    return { protocolVersion = version or DEFAULT_VERSION, capabilities = {},
             clientInfo = { name = "lunagate", version = "1" } }
end

-- Rebuilds a session from its id (another replica made it, or this one forgot it).
function Backend:_resume(id, rec)
    local state, err = self.codec:decode(id)
    if not state then return nil, err end
    local sess = self:_new_session()
    sess.id = id
    sess.version = state.version
    local ctx = self:_ctx(rec)
    for _, st in ipairs(state.targets) do
        local t = self.by_name[st.name]
        if t then
            local conn, cerr = self:_open(sess, t)
            if conn then
                if conn.kind == "mcp" then
                    conn.session = st.session
                    conn.version = state.version
                else
                    local _, ierr = conn:initialize(init_params(state.version), ctx, true)
                    if ierr and not self.fail_open then
                        self:_close_session(sess)
                        return nil, ierr
                    end
                end
            elseif not self.fail_open then
                self:_close_session(sess)
                return nil, cerr
            end
        end
    end
    self.sessions[id] = sess
    self:_start_reaper()
    return sess
end

-- The session for a non-initialize message. Returns sess or nil, http_status, message.
function Backend:_session(req, rec)
    local id = req.headers["mcp-session-id"]
    if self.stateless then
        local sess = self:_new_session()
        sess.ephemeral = true
        local ctx = self:_ctx(rec)
        for _, t in ipairs(self.targets) do
            local conn, err = self:_open(sess, t)
            local _, ierr
            if conn then _, ierr = conn:initialize(init_params(), ctx, true) end
            if (not conn or ierr) and not self.fail_open then
                self:_close_session(sess)
                return nil, 502, tostring(err or ierr)
            end
        end
        return sess
    end
    if not id or id == "" then
        return nil, 400, "Bad Request: mcp-session-id header is required"
    end
    rec.mcp.session_id = id
    local sess = self.sessions[id]
    if not sess then
        local err
        sess, err = self:_resume(id, rec)
        if not sess then return nil, 404, "Session not found: " .. tostring(err) end
    end
    sess.last_used = self.clock()
    return sess
end

-- ---- sinks: where the messages of one answer go ----

-- Streamable HTTP POST: JSON when the answer is one message, else an SSE stream.
local function http_sink(io, headers)
    local streaming = false
    local alive = true
    return function(msg, final)
        if not alive then return nil end
        if final and not streaming then
            local h = { ["content-type"] = "application/json" }
            for k, v in pairs(headers or {}) do h[k] = v end
            io.respond(200, h, json.encode(msg))
            return true
        end
        if not streaming then
            streaming = true
            local h = { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" }
            for k, v in pairs(headers or {}) do h[k] = v end
            io.stream_start(200, h)
        end
        local ok = swrite(io, "event: message\ndata: " .. json.encode(msg) .. "\n\n")
        if not ok then alive = false end
        if final or not ok then io.stream_end() end
        return ok and true or nil
    end
end

-- ---- relaying ----

function Backend:_outbound(target, m)
    -- a server message on its way to the client: ids and URIs made unambiguous
    if m.method ~= nil and m.id ~= nil then
        m.id = mux.server_request_id(target, m.id)
    end
    if self.prefix and m.method == "notifications/resources/updated" and type(m.params) == "table"
        and type(m.params.uri) == "string" then
        m.params.uri = mux.uri(target, m.params.uri, true)
    end
    return m
end

local function shallow(t)
    local c = {}
    for k, v in pairs(t or {}) do c[k] = v end
    return setmetatable(c, getmetatable(t))
end

-- Sends one request to one target and relays everything back through sink.
function Backend:_forward(sess, target, msg, rec, sink, fix_result)
    local conn = sess.conns[target]
    if not conn then
        local m = rpc.error(msg.id, rpc.INTERNAL_ERROR, "target " .. target .. " is unavailable")
        note_error(rec, m)
        return sink(m, true)
    end
    local nextm, err = conn:request(msg, self:_ctx(rec))
    if not nextm then
        local m = rpc.error(msg.id, rpc.INTERNAL_ERROR, tostring(err))
        note_error(rec, m)
        return sink(m, true)
    end
    while true do
        local m, e = nextm()
        if not m then
            local em = rpc.error(msg.id, rpc.INTERNAL_ERROR, tostring(e or "no response"))
            note_error(rec, em)
            return sink(em, true)
        end
        if m.method == nil and m.id ~= nil then
            if fix_result and m.result then fix_result(m.result) end
            if m.error then
                note_error(rec, m)
            elseif type(m.result) == "table" and m.result.isError == true then
                rec.mcp.error_code = "tool_error"
            end
            return sink(m, true)
        end
        if not sink(self:_outbound(target, m), false) then
            -- the client left: tell the target it can stop
            pcall(conn.notify, conn, rpc.notification("notifications/cancelled",
                { requestId = msg.id, reason = "client disconnected" }), self:_ctx(rec))
            return nil
        end
    end
end

-- One final response from one target (internal use: lists, lookups).
function Backend:_ask(sess, target, method, params, rec)
    local conn = sess.conns[target]
    if not conn then return nil, "target " .. target .. " is unavailable" end
    local id = self:_next_id()
    local nextm, err = conn:request(rpc.request(id, method, params), self:_ctx(rec))
    if not nextm then return nil, err end
    while true do
        local m, e = nextm()
        if not m then return nil, e or "no response" end
        if m.method == nil and m.id ~= nil then
            if m.error then return nil, tostring(m.error.message), m.error end
            return m.result
        end
        if m.method ~= nil then sess:push(self:_outbound(target, m)) end
    end
end

function Backend:_list(sess, msg, rec, sink)
    local method = msg.method
    local desc = mux.LISTS[method]
    rec.mcp.resource_type = desc.kind
    local parts = {}
    local single = #sess.order == 1
    for _, target in ipairs(sess.order) do
        local params = shallow(msg.params)
        if not single then params.cursor = nil end
        local result, err, eobj = self:_ask(sess, target, method, params, rec)
        if not result and single and eobj then
            local m = { jsonrpc = "2.0", id = msg.id, error = eobj }
            note_error(rec, m)
            return sink(m, true)
        end
        if result and not single then
            -- merged lists are complete: follow the target's pages
            local pages = 0
            while type(result.nextCursor) == "string" and pages < 50 do
                pages = pages + 1
                local more = self:_ask(sess, target, method, { cursor = result.nextCursor }, rec)
                if not more then break end
                local list = result[desc.key]
                for _, item in ipairs(more[desc.key] or {}) do list[#list + 1] = item end
                result.nextCursor = more.nextCursor
            end
            result.nextCursor = nil
        end
        if result then
            parts[#parts + 1] = { target = target, result = result }
        elseif not self.fail_open then
            local m = rpc.error(msg.id, rpc.INTERNAL_ERROR, target .. ": " .. tostring(err))
            note_error(rec, m)
            return sink(m, true)
        end
    end
    local sid = sess.id
    local merged = mux.merge(method, parts, self.prefix, function(kind, item, target, id)
        local name = desc.field == "name" and id or (item.name or id)
        return self:_allowed(kind, name, target, method, sid, rec)
    end)
    -- remember owners for prefixMode never
    sess.owners = sess.owners or {}
    for _, part in ipairs(parts) do
        for _, item in ipairs(part.result[desc.key] or {}) do
            if type(item) == "table" and item[desc.field] ~= nil then
                sess.owners[desc.kind .. ":" .. tostring(item[desc.field])] =
                    sess.owners[desc.kind .. ":" .. tostring(item[desc.field])] or part.target
            end
        end
    end
    return sink(rpc.result(msg.id, merged), true)
end

-- Finds the target of a tool/prompt name or resource URI.
function Backend:_route(sess, kind, key, rec)
    if #sess.order == 1 and not self.prefix then return sess.order[1], key end
    local split = kind == "resource" and mux.split_uri or mux.split_name
    if self.prefix then
        return split(key, self.names, true)
    end
    local owner = sess.owners and sess.owners[kind .. ":" .. tostring(key)]
    if not owner then
        local method = kind == "tool" and "tools/list" or kind == "prompt" and "prompts/list"
            or "resources/list"
        self:_list(sess, { id = self:_next_id(), method = method, params = {} }, rec,
                   function() return true end)
        owner = sess.owners and sess.owners[kind .. ":" .. tostring(key)]
    end
    if owner then return owner, key end
    return nil
end

local ROUTED = {
    ["tools/call"] = { kind = "tool", field = "name" },
    ["prompts/get"] = { kind = "prompt", field = "name" },
    ["resources/read"] = { kind = "resource", field = "uri" },
    ["resources/subscribe"] = { kind = "resource", field = "uri" },
    ["resources/unsubscribe"] = { kind = "resource", field = "uri" },
}

function Backend:_routed(sess, msg, rec, sink)
    local r = ROUTED[msg.method]
    local params = type(msg.params) == "table" and msg.params or {}
    local key = params[r.field]
    rec.mcp.resource_type = r.kind
    if type(key) ~= "string" then
        local m = rpc.error(msg.id, rpc.INVALID_PARAMS, "Invalid params: " .. r.field .. " is required")
        note_error(rec, m)
        return sink(m, true)
    end
    local target, inner = self:_route(sess, r.kind, key, rec)
    if not target then
        local m = rpc.error(msg.id, rpc.INVALID_PARAMS,
                            "Unknown " .. r.kind .. ": " .. key)
        note_error(rec, m)
        return sink(m, true)
    end
    rec.mcp.target = target
    rec.mcp.resource = inner
    if r.kind == "tool" then
        rec.mcp.tool_name = inner
    elseif r.kind == "prompt" then
        rec.mcp.prompt_name = inner
    else
        rec.mcp.resource_uri = inner
    end
    if not self:_allowed(r.kind, inner, target, msg.method, sess.id, rec) then
        local m = rpc.error(msg.id, rpc.UNAUTHORIZED,
                            "Unauthorized: " .. r.kind .. " '" .. key .. "' is not allowed")
        note_error(rec, m)
        return sink(m, true)
    end
    local out = shallow(msg)
    out.params = shallow(params)
    out.params[r.field] = inner
    local fix
    if msg.method == "resources/read" and self.prefix then
        fix = function(result)
            for _, c in ipairs(type(result.contents) == "table" and result.contents or {}) do
                if type(c) == "table" and type(c.uri) == "string" then
                    c.uri = mux.uri(target, c.uri, true)
                end
            end
        end
    end
    return self:_forward(sess, target, out, rec, sink, fix)
end

function Backend:_complete(sess, msg, rec, sink)
    local ref = type(msg.params) == "table" and msg.params.ref or nil
    if type(ref) ~= "table" then
        return sink(rpc.error(msg.id, rpc.INVALID_PARAMS, "Invalid params: ref is required"), true)
    end
    local kind = ref.type == "ref/prompt" and "prompt" or "resource"
    local key = kind == "prompt" and ref.name or ref.uri
    local target, inner = self:_route(sess, kind, key, rec)
    if not target then
        return sink(rpc.error(msg.id, rpc.INVALID_PARAMS, "Unknown reference: " .. tostring(key)), true)
    end
    rec.mcp.target = target
    local out = shallow(msg)
    out.params = shallow(msg.params)
    out.params.ref = shallow(ref)
    out.params.ref[kind == "prompt" and "name" or "uri"] = inner
    return self:_forward(sess, target, out, rec, sink)
end

function Backend:_request(sess, msg, rec, sink)
    local m = msg.method
    if m == "ping" then
        return sink(rpc.result(msg.id, {}), true)
    end
    if mux.LISTS[m] then
        return self:_list(sess, msg, rec, sink)
    end
    if ROUTED[m] then
        return self:_routed(sess, msg, rec, sink)
    end
    if m == "completion/complete" then
        return self:_complete(sess, msg, rec, sink)
    end
    if #sess.order == 1 then
        rec.mcp.target = sess.order[1]
        return self:_forward(sess, sess.order[1], msg, rec, sink)
    end
    if m == "logging/setLevel" then
        for _, t in ipairs(sess.order) do self:_ask(sess, t, m, msg.params, rec) end
        return sink(rpc.result(msg.id, {}), true)
    end
    local e = rpc.error(msg.id, rpc.METHOD_NOT_FOUND, "Method not found: " .. m)
    note_error(rec, e)
    return sink(e, true)
end

function Backend:_notify(sess, msg, rec)
    local ctx = self:_ctx(rec)
    for _, t in ipairs(sess.order) do
        local c = sess.conns[t]
        if c then c:notify(msg, ctx) end
    end
end

function Backend:_client_response(sess, msg, rec)
    local target, id = mux.parse_server_request_id(msg.id, self.names)
    if not target or not sess.conns[target] then return nil end
    rec.mcp.target = target
    local out = shallow(msg)
    out.id = id
    return sess.conns[target]:notify(out, self:_ctx(rec))
end

-- ---- initialize ----

local function merge_caps(results)
    local caps = {}
    for _, r in ipairs(results) do
        for k, v in pairs(type(r.capabilities) == "table" and r.capabilities or {}) do
            if type(v) == "table" and type(caps[k]) == "table" then
                for k2, v2 in pairs(v) do
                    if caps[k][k2] == nil then caps[k][k2] = v2 end
                end
            elseif caps[k] == nil then
                caps[k] = type(v) == "table" and shallow(v) or v
            end
        end
    end
    return caps
end

function Backend:_initialize(msg, rec)
    local sess = self:_new_session()
    local ctx = self:_ctx(rec)
    local results = {}
    for _, t in ipairs(self.targets) do
        local conn, err = self:_open(sess, t)
        local result
        if conn then result, err = conn:initialize(msg.params, ctx, false) end
        if result then
            results[#results + 1] = result
        elseif not self.fail_open then
            self:_close_session(sess)
            local m = rpc.error(msg.id, rpc.INTERNAL_ERROR,
                                "initialize " .. t.name .. ": " .. tostring(err))
            note_error(rec, m)
            return nil, m
        else
            if conn then pcall(conn.close, conn) end
            sess.conns[t.name] = nil
            for i, n in ipairs(sess.order) do
                if n == t.name then table.remove(sess.order, i) break end
            end
        end
    end
    if #results == 0 then
        local m = rpc.error(msg.id, rpc.INTERNAL_ERROR, "no MCP target is available")
        note_error(rec, m)
        return nil, m
    end
    local result
    if #self.targets == 1 then
        result = results[1]
    else
        local want = type(msg.params) == "table" and msg.params.protocolVersion or nil
        local version = results[1].protocolVersion
        for _, r in ipairs(results) do
            if r.protocolVersion == want then version = want end
        end
        result = {
            protocolVersion = version or DEFAULT_VERSION,
            capabilities = merge_caps(results),
            serverInfo = { name = "lunagate", version = tostring(self.lg.version or "0") },
        }
    end
    sess.version = result.protocolVersion
    local state = { targets = {}, version = sess.version }
    for _, name in ipairs(sess.order) do
        local c = sess.conns[name]
        state.targets[#state.targets + 1] = { name = name, session = c.session, addr = c.url }
    end
    sess.id = self.codec:encode(state)
    if not self.stateless then
        self.sessions[sess.id] = sess
        self:_start_reaper()
    end
    rec.mcp.session_id = sess.id
    return sess, rpc.result(msg.id, result)
end

-- ---- HTTP methods ----

function Backend:_post(req, rec, io)
    local msg, kind = rpc.parse(req.body)
    if not msg then
        note_error(rec, kind)
        rec.status = 400
        return respond_json(io, 400, kind)
    end
    rec.mcp.method = msg.method
    rec.span_name = msg.method
    if kind == "request" and msg.method == "initialize" then
        local sess, answer = self:_initialize(msg, rec)
        if not sess then return respond_json(io, 200, answer) end
        if self.stateless then self:_close_session(sess) end
        return respond_json(io, 200, answer, { ["mcp-session-id"] = sess.id })
    end
    local sess, status, why = self:_session(req, rec)
    if not sess then
        local e = rpc.error(kind == "request" and msg.id or nil,
                            status == 404 and rpc.INVALID_REQUEST or rpc.SERVER_ERROR, why)
        note_error(rec, e)
        rec.status = status
        return respond_json(io, status, e)
    end
    if kind == "notification" then
        self:_notify(sess, msg, rec)
        if sess.ephemeral then self:_close_session(sess) end
        return io.respond(202, {}, "")
    end
    if kind == "response" then
        self:_client_response(sess, msg, rec)
        return io.respond(202, {}, "")
    end
    self:_request(sess, msg, rec, http_sink(io))
    if sess.ephemeral then self:_close_session(sess) end
end

-- Starts (once per session) the background readers of targets' server streams.
function Backend:_listen_targets(sess, rec)
    sess.listening = sess.listening or {}
    for _, name in ipairs(sess.order) do
        local c = sess.conns[name]
        if c.kind == "mcp" and not sess.listening[name] then
            sess.listening[name] = true
            local co = coroutine.create(function()
                local nextm = c:listen(self:_ctx(rec))
                if not nextm then return end
                while not sess.closed do
                    local m = nextm()
                    if not m then break end
                    sess:push(self:_outbound(name, m))
                end
                sess.listening[name] = nil
            end)
            coroutine.resume(co)
        end
    end
end

local function accepts_sse(req)
    local a = req.headers["accept"]
    return a == nil or a:find("text/event-stream", 1, true) or a:find("*/*", 1, true)
end

-- Relays queued server messages to an open SSE stream until the client or session goes.
function Backend._pump_queue(_, sess, io, write)
    while not sess.closed do
        sess.last_used = sess.backend.clock()
        while #sess.queue > 0 do
            local m = table.remove(sess.queue, 1)
            if not write(m) then return end
        end
        local ok = sess.ev:wait(KEEPALIVE_MS)
        if not ok and #sess.queue == 0 then
            if not swrite(io, ": keepalive\n\n") then return end
        end
    end
end

function Backend:_get(req, rec, io)
    if not accepts_sse(req) then
        return io.respond(406, JSON_HDR, '{"error":"Accept must include text/event-stream"}')
    end
    if self.stateless then
        return io.respond(405, { allow = "POST" }, "")
    end
    local sess, status, why = self:_session(req, rec)
    if not sess then
        rec.status = status
        return respond_json(io, status, rpc.error(nil, rpc.SERVER_ERROR, why))
    end
    self:_listen_targets(sess, rec)
    io.stream_start(200, { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache",
                           ["mcp-session-id"] = sess.id })
    self:_pump_queue(sess, io, function(m)
        return swrite(io, "event: message\ndata: " .. json.encode(m) .. "\n\n")
    end)
    io.stream_end()
end

function Backend:_delete(req, rec, io)
    local id = req.headers["mcp-session-id"]
    if not id then
        return respond_json(io, 400, rpc.error(nil, rpc.SERVER_ERROR,
                                               "Bad Request: mcp-session-id header is required"))
    end
    rec.mcp.session_id = id
    local sess = self.sessions[id]
    if not sess then
        local state = self.codec:decode(id)
        if not state then
            return respond_json(io, 404, rpc.error(nil, rpc.INVALID_REQUEST, "Session not found"))
        end
        -- another replica's session: end the upstream HTTP sessions it names
        sess = self:_new_session()
        local env = self:_env(sess)
        for _, st in ipairs(state.targets) do
            local t = self.by_name[st.name]
            if t and t.mcp and st.session then
                local c = self.connect(t, env)
                if c then
                    c.session = st.session
                    c.version = state.version
                    pcall(c.close, c, self:_ctx(rec))
                end
            end
        end
        return io.respond(200, {}, "")
    end
    self:_close_session(sess)
    return io.respond(200, {}, "")
end

-- ---- legacy SSE transport (downstream) ----

function Backend:_legacy_get(req, _, io)
    local lg = self.lg
    local key = session.b64url_encode(lg.crypto and lg.crypto.random_bytes(18) or
                                      tostring(math.random()))
    local stream = { queue = {}, ev = lg.http.event(), closed = false }
    local holder = setmetatable({ backend = self, queue = stream.queue, ev = stream.ev },
                                Session)
    stream.holder = holder
    self.legacy[key] = stream
    io.stream_start(200, { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" })
    -- the endpoint is the same path, so it reaches this backend through the same route
    if not swrite(io, "event: endpoint\ndata: " .. req.path .. "?sessionId=" .. key .. "\n\n") then
        self.legacy[key] = nil
        return
    end
    -- messages for this client: answers pushed by POSTs and the session's server messages
    while not stream.closed do
        while #holder.queue > 0 do
            local m = table.remove(holder.queue, 1)
            if not swrite(io, "event: message\ndata: " .. json.encode(m) .. "\n\n") then
                stream.closed = true
                break
            end
        end
        if stream.closed then break end
        if stream.sess and stream.sess.closed then break end
        local ok = holder.ev:wait(KEEPALIVE_MS)
        if not ok and #holder.queue == 0 and not swrite(io, ": keepalive\n\n") then
            break
        end
    end
    self.legacy[key] = nil
    if stream.sess then self:_close_session(stream.sess) end
    io.stream_end()
end

function Backend:_legacy_post(req, rec, io, key)
    local stream = self.legacy[key]
    if not stream then
        return respond_json(io, 404, rpc.error(nil, rpc.INVALID_REQUEST, "Session not found"))
    end
    local msg, kind = rpc.parse(req.body)
    if not msg then
        note_error(rec, kind)
        return respond_json(io, 400, kind)
    end
    rec.mcp.method = msg.method
    rec.span_name = msg.method
    local holder = stream.holder
    local function sink(m) holder:push(m) return true end
    if kind == "request" and msg.method == "initialize" then
        local sess, answer = self:_initialize(msg, rec)
        if sess then
            stream.sess = sess
            -- server messages of the session go to this stream
            sess.push = function(_, m) holder:push(m) end
        end
        io.respond(202, {}, "Accepted")
        return sink(answer)
    end
    local sess = stream.sess
    if not sess then
        io.respond(202, {}, "Accepted")
        if kind == "request" then
            return sink(rpc.error(msg.id, rpc.INVALID_REQUEST, "initialize first"))
        end
        return
    end
    rec.mcp.session_id = sess.id
    sess.last_used = self.clock()
    local co = coroutine.create(function()
        if kind == "notification" then return self:_notify(sess, msg, rec) end
        if kind == "response" then return self:_client_response(sess, msg, rec) end
        return self:_request(sess, msg, rec, sink)
    end)
    coroutine.resume(co)
    io.respond(202, {}, "Accepted")
end

-- ---- entry points ----

function Backend:handle(req, rec, io)
    rec.protocol = "mcp"
    rec.mcp = rec.mcp or {}
    req.headers = req.headers or {}
    if self.forward_headers then
        local fwd
        for _, name in ipairs(self.forward_headers) do
            local v = req.headers[name]
            if v then
                fwd = fwd or {}
                fwd[name] = v
            end
        end
        FORWARD[rec] = fwd
    end
    self:_sweep()
    local method = req.method
    local path = req.path or "/"
    if path:find("/sse$") and method == "GET" then
        return self:_legacy_get(req, rec, io)
    end
    local key = req.query and req.query:match("sessionId=([%w%-_]+)")
    if method == "POST" and key and self.legacy[key] then
        return self:_legacy_post(req, rec, io, key)
    end
    if method == "POST" then return self:_post(req, rec, io) end
    if method == "GET" then return self:_get(req, rec, io) end
    if method == "DELETE" then return self:_delete(req, rec, io) end
    rec.status = 405
    io.respond(405, { allow = "GET, POST, DELETE" }, "")
end

function Backend:close()
    for _, s in pairs(self.sessions) do self:_close_session(s) end
    self.sessions = {}
end

return mcp
