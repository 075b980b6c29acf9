-- lunagate/mcp/upstream.lua -- connections to MCP targets: Streamable HTTP, legacy SSE, stdio
-- SPDX-License-Identifier: MIT
--
-- Every connection (one per target per session) has the same shape; all methods run in a
-- coroutine and may yield (lg.http, lg.process):
--   conn:initialize(params, ctx [, send_initialized]) -> result | nil, err
--   conn:request(msg, ctx) -> next() | nil, err, http_status
--        next() -> msg | nil, err: server messages for this request, the response last
--   conn:notify(msg, ctx) -> true | nil, err      (notifications and answers to server requests)
--   conn:listen() -> next() | nil, err            (server-initiated messages; HTTP targets only;
--                                                  stdio and SSE targets call env.on_unsolicited)
--   conn:close()
--   conn.session (upstream mcp-session-id, HTTP only), conn.version, conn.kind, conn.name
-- ctx = { traceparent = "00-...", headers = { name = value } (extra upstream headers) }
--
--   upstream.target_url(spec) -> url | nil, err   ({host = URL} or {host, port, path})
--   upstream.connect(target, env) -> conn | nil, err
--       target = { name=, mcp={...} | sse={...} | stdio={cmd=, args=, env=, clearEnv=} }
--       env = { http = lg.http, process = lg.process, timeout_ms =, on_unsolicited = fn(msg),
--               stderr = "inherit"|"null" }

local json = require "lunagate.mcp.json"
local rpc = require "lunagate.mcp.jsonrpc"
local channel = require "lunagate.mcp.channel"

local upstream = {}

local ACCEPT = "application/json, text/event-stream"

function upstream.target_url(spec)
    if type(spec) ~= "table" then return nil, "expected a table" end
    local host = spec.host
    if type(host) ~= "string" or host == "" then return nil, "host is required" end
    if host:find("^https?://") then
        if spec.path and not host:match("^https?://[^/]+(/.*)$") then
            return host .. spec.path
        end
        return host
    end
    local port = spec.port and (":" .. tostring(math.tointeger(spec.port) or spec.port)) or ""
    if host:find(":%d+$") then port = "" end
    local path = spec.path or "/mcp"
    if path:sub(1, 1) ~= "/" then path = "/" .. path end
    return "http://" .. host .. port .. path
end

local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return setmetatable(c, getmetatable(t))
end

-- Adds params._meta.traceparent (SEP-414) without touching the caller's message.
local function with_trace(msg, ctx)
    if not (ctx and ctx.traceparent) then return msg end
    local m = copy(msg)
    local params = type(msg.params) == "table" and copy(msg.params) or {}
    local meta = type(params._meta) == "table" and copy(params._meta) or {}
    meta.traceparent = ctx.traceparent
    if ctx.tracestate then meta.tracestate = ctx.tracestate end
    params._meta = meta
    m.params = params
    return m
end

local function read_all(h)
    local parts = {}
    while true do
        local c, err = h:read()
        if not c then
            h:close()
            if err then return nil, err end
            return table.concat(parts)
        end
        parts[#parts + 1] = type(c) == "table" and c.data or c
    end
end

local function is_response(m, id)
    return type(m) == "table" and m.method == nil and m.id ~= nil and (id == nil or m.id == id)
end

local function initialize(conn, params, ctx, send_initialized)
    conn._ids = (conn._ids or 0) + 1
    local id = "agw-init-" .. conn._ids
    local nextm, err = conn:request(rpc.request(id, "initialize", params), ctx)
    if not nextm then return nil, err end
    while true do
        local m, e = nextm()
        if not m then return nil, e or "no answer to initialize" end
        if is_response(m, id) then
            if m.error then
                return nil, "initialize failed: " .. tostring(m.error.message)
            end
            if type(m.result) == "table" then conn.version = m.result.protocolVersion end
            if send_initialized then
                conn:notify(rpc.notification("notifications/initialized"), ctx)
            end
            return m.result
        end
    end
end

-- ---- Streamable HTTP ----

local Http = {}
Http.__index = Http
Http.initialize = initialize

function Http:_headers(ctx, accept)
    local h = { accept = accept or ACCEPT }
    if self.session then h["mcp-session-id"] = self.session end
    if self.version then h["mcp-protocol-version"] = self.version end
    if ctx then
        if ctx.traceparent then h.traceparent = ctx.traceparent end
        for k, v in pairs(ctx.headers or {}) do h[k] = v end
    end
    return h
end

function Http:_post(msg, ctx)
    local h = self:_headers(ctx)
    h["content-type"] = "application/json"
    return self.http.stream{ method = "POST", url = self.url, headers = h,
                             body = json.encode(msg), timeout_ms = self.timeout_ms }
end

local function http_error(h, what)
    local body = read_all(h) or ""
    return nil, string.format("%s: HTTP %d %s", what, h.status, body:sub(1, 200)), h.status
end

function Http:request(msg, ctx)
    local h, err = self:_post(msg, ctx)
    if not h then return nil, self.name .. ": " .. err end
    if h.status >= 400 then return http_error(h, self.name) end
    local sid = h.headers["mcp-session-id"]
    if sid and sid ~= "" then self.session = sid end
    if not h.sse then
        local body, e = read_all(h)
        if not body then return nil, self.name .. ": " .. e end
        local m, derr = json.decode(body)
        if type(m) ~= "table" then
            return nil, self.name .. ": bad JSON from upstream: " .. tostring(derr)
        end
        local done = false
        return function()
            if done then return nil end
            done = true
            return m
        end
    end
    local done = false
    return function()
        if done then return nil end
        while true do
            local ev, e = h:read()
            if not ev then
                done = true
                h:close()
                return nil, self.name .. ": " .. (e or "stream ended before the response")
            end
            if (ev.event == "message" or ev.event == nil) and ev.data ~= "" then
                local m = json.decode(ev.data)
                if type(m) == "table" then
                    if is_response(m, msg.id) then
                        done = true
                        h:close()
                    end
                    return m
                end
            end
        end
    end
end

function Http:notify(msg, ctx)
    local h, err = self:_post(msg, ctx)
    if not h then return nil, self.name .. ": " .. err end
    if h.status >= 400 then return http_error(h, self.name) end
    read_all(h)
    return true
end

function Http:listen(ctx)
    local h, err = self.http.stream{ method = "GET", url = self.url,
                                     headers = self:_headers(ctx, "text/event-stream") }
    if not h then return nil, err end
    if h.status >= 400 or not h.sse then
        h:close()
        return nil, "no server stream (HTTP " .. h.status .. ")", h.status
    end
    self._listen = h
    return function()
        while true do
            local ev, e = h:read()
            if not ev then return nil, e end
            if (ev.event == "message" or ev.event == nil) and ev.data ~= "" then
                local m = json.decode(ev.data)
                if type(m) == "table" then return m end
            end
        end
    end
end

function Http:close(ctx)
    if self._listen then
        self._listen:close()
        self._listen = nil
    end
    if self.session then
        local r = self.http.request{ method = "DELETE", url = self.url,
                                     headers = self:_headers(ctx), timeout_ms = 5000 }
        self.session = nil
        return r ~= nil
    end
    return true
end

-- ---- channel-based targets: stdio and legacy SSE ----

local Chan = {}
Chan.__index = Chan
Chan.initialize = initialize

function Chan:request(msg, ctx)
    if self.kind == "stdio" then msg = with_trace(msg, ctx) end
    return self.ch:request(msg, self.timeout_ms)
end

function Chan:notify(msg, ctx)
    if self.kind == "stdio" then msg = with_trace(msg, ctx) end
    return self.ch:send(msg)
end

function Chan.listen()
    return nil, "server messages arrive through on_unsolicited"
end

function Chan:close()
    if self.ch then self.ch:close() end
    if self.proc then
        self.proc:kill()
        self.proc = nil
    end
    if self.stream then
        self.stream:close()
        self.stream = nil
    end
    return true
end

local function start_stdio(t, env)
    local spec = t.stdio
    if type(spec) ~= "table" or type(spec.cmd) ~= "string" then
        return nil, "stdio.cmd is required"
    end
    if not env.process then return nil, "lg.process is not available" end
    local p, err = env.process.spawn{ cmd = spec.cmd, args = spec.args or {}, env = spec.env,
                                      clear_env = spec.clearEnv or spec.clear_env,
                                      stderr = env.stderr }
    if not p then return nil, err end
    local conn = setmetatable({ name = t.name, kind = "stdio", proc = p, http = env.http,
                                timeout_ms = env.timeout_ms }, Chan)
    conn.ch = channel.new{
        name = t.name, http = env.http, on_unsolicited = env.on_unsolicited,
        read = function() return p:read_line() end,
        write = function(line) return p:write(line) end,
    }
    conn.ch:start()
    return conn
end

local function resolve(base, ref)
    if ref:find("^https?://") then return ref end
    local origin = base:match("^(https?://[^/]+)")
    if ref:sub(1, 1) == "/" then return origin .. ref end
    return (base:gsub("[^/]*$", "")) .. ref
end

local function start_sse(t, env)
    local url, err = upstream.target_url(t.sse)
    if not url then return nil, "sse: " .. err end
    local h, e = env.http.stream{ method = "GET", url = url,
                                  headers = { accept = "text/event-stream" } }
    if not h then return nil, t.name .. ": " .. e end
    if h.status >= 400 or not h.sse then
        h:close()
        return nil, t.name .. ": SSE endpoint answered HTTP " .. h.status
    end
    local endpoint
    while not endpoint do
        local ev, re = h:read(env.timeout_ms or 30000)
        if not ev then
            h:close()
            return nil, t.name .. ": no endpoint event: " .. tostring(re or "stream ended")
        end
        if ev.event == "endpoint" then endpoint = resolve(url, ev.data) end
    end
    local conn = setmetatable({ name = t.name, kind = "sse", stream = h, http = env.http,
                                endpoint = endpoint, timeout_ms = env.timeout_ms }, Chan)
    conn.ch = channel.new{
        name = t.name, http = env.http, on_unsolicited = env.on_unsolicited,
        read = function()
            while true do
                local ev, re = h:read()
                if not ev then return nil, re or "stream ended" end
                if ev.event == "message" and ev.data ~= "" then return ev.data end
            end
        end,
        write = function(line)
            local r, we = env.http.request{ method = "POST", url = endpoint, body = line,
                                            headers = { ["content-type"] = "application/json" } }
            if not r then return nil, we end
            if r.status >= 300 then return nil, "HTTP " .. r.status end
            return true
        end,
    }
    conn.ch:start()
    return conn
end

function upstream.connect(t, env)
    if t.mcp then
        local url, err = upstream.target_url(t.mcp)
        if not url then return nil, "mcp: " .. err end
        return setmetatable({ name = t.name, kind = "mcp", url = url, http = env.http,
                              timeout_ms = env.timeout_ms }, Http)
    elseif t.stdio then
        return start_stdio(t, env)
    elseif t.sse then
        return start_sse(t, env)
    end
    return nil, "target " .. tostring(t.name) .. ": expected one of mcp, sse, stdio"
end

return upstream
