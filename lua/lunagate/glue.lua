-- lunagate.glue -- what the C core asks a worker's Lua state: the LLM backend of each route
-- and the log phase (access-log line, GenAI metrics, span attributes).
--
-- Every function is called by src/hooks.c through lg_luart_pcall (traceback, budget). Per
-- request state lives in `reqs[id]`, keyed by an integer the C side allocates, so C never
-- has to hold Lua tables; M.release(id) drops it.
local llm = require "lunagate.llm"
local mcp_ok, mcp = pcall(require, "lunagate.mcp")

local M = {}

local NULL_SENTINEL = require("lunagate.config").null
local routes = {}      -- [route index + 1] = { route, listener, bind, backends = { [i] = backend|false } }
local reqs = {}        -- [id] = { ctx = llm ctx, rec = record, events = {...}, ev = next event }
local telemetry        -- lunagate.telemetry instance (access log, metrics, spans), if configured

local clock_fn
local function now_us()
    if clock_fn then return clock_fn() end
    local ok, lg = pcall(require, "lunagate")
    if ok and type(lg) == "table" and lg.time and lg.time.now_us then
        clock_fn = lg.time.now_us
        return clock_fn()
    end
    return math.floor(os.time() * 1000000)
end

local function merge(a, b)
    local out = {}
    for k, v in pairs(a or {}) do out[k] = v end
    for k, v in pairs(b or {}) do out[k] = v end
    return out
end

-- init(cfg) -> true | nil, err: builds the LLM backends of every route, in the order the C
-- core numbers routes (binds, listeners, routes as written).
function M.init(cfg)
    routes, reqs = {}, {}
    local capture = { prompt = false, completion = false }
    local ok, tel = pcall(require, "lunagate.telemetry")
    if ok and type(tel) == "table" and tel.new then
        local t, err = tel.new(cfg)
        if not t then return nil, err end
        telemetry = t
        capture = t.capture or capture
    else
        telemetry = nil
    end
    local idx = 0
    for bi, b in ipairs(cfg.binds or {}) do
        for li, l in ipairs(b.listeners or {}) do
            for ri, r in ipairs(l.routes or {}) do
                idx = idx + 1
                local entry = { route = r, listener = l, bind = b, backends = {} }
                for i, be in ipairs(r.backends or {}) do
                    if be.kind == "ai" then
                        local pol = merge(r.policies, be.policies)
                        local backend, err = llm.new_backend(be.ai, pol,
                            { clock = now_us, capture = capture })
                        if not backend then
                            return nil, string.format("binds[%d].listeners[%d].routes[%d].backends[%d].%s",
                                bi - 1, li - 1, ri - 1, i - 1, err)
                        end
                        entry.backends[i] = backend
                    elseif be.kind == "mcp" then
                        if not mcp_ok then return nil, "mcp: " .. tostring(mcp) end
                        local pol = merge(r.policies, be.policies)
                        local sconf = cfg.config and cfg.config.session or {}
                        local mconf = cfg.config and cfg.config.mcp or {}
                        local fwd
                        if type(pol.backendAuth) == "table" and pol.backendAuth.passthrough then
                            fwd = { "authorization" }
                        end
                        local backend, err = mcp.new_backend(be.mcp, pol, {
                            session_key = (sconf.key ~= nil and sconf.key ~= NULL_SENTINEL) and sconf.key
                                or os.getenv("SESSION_KEY"),
                            session_ttl = (function()
                                local d = mconf.sessionTtl
                                if type(d) == "number" then return d end
                                local okd, ms = pcall(require("lunagate.config").parse_duration, d)
                                return okd and type(ms) == "number" and ms / 1000 or nil
                            end)(),
                            activation = function(rec) return require("lunagate.context").activation(rec) end,
                            forward_headers = fwd,
                        })
                        if not backend then
                            return nil, string.format("binds[%d].listeners[%d].routes[%d].backends[%d].%s",
                                bi - 1, li - 1, ri - 1, i - 1, err)
                        end
                        entry.backends[i] = backend
                        entry.mcp = true
                    else
                        entry.backends[i] = false
                    end
                end
                routes[idx] = entry
            end
        end
    end
    return true
end

-- llm_request(id, route_index, backend_index, method, path, headers, body, start_us)
--   -> "upstream", host, port, tls, sni, method, path, headers_set, headers_remove, body
--    | "respond", status, headers, body | nil, has_events
function M.llm_request(id, ri, bi, method, path, headers, body, start_us)
    local entry = routes[ri + 1]
    local backend = entry and entry.backends[bi + 1]
    if not backend then
        return "respond", 500, { ["content-type"] = "application/json" },
            '{"error":{"message":"no LLM backend for this route","type":"internal_error"}}', false
    end
    local rec = { start_us = start_us }
    local ctx = backend:on_request(rec, { method = method, path = path, headers = headers, body = body })
    local st = { ctx = ctx, backend = backend, rec = rec }
    reqs[id] = st
    local up = ctx.upstream
    if up then
        return "upstream", up.host, up.port, up.tls and true or false, up.sni, up.method or method,
            up.path, up.headers_set or {}, up.headers_remove or {}, up.body
    end
    local resp = ctx.respond
    st["local"] = resp
    return "respond", resp.status or 200, resp.headers or {}, resp.body, resp.events ~= nil
end

-- native_plan(route_index, backend_index) -> the backend's plan for the C core's own chat
-- completions path (lunagate.llm Backend:native_plan), or nil
function M.native_plan(ri, bi)
    local entry = routes[ri + 1]
    local backend = entry and entry.backends[bi + 1]
    if not backend or entry.mcp then return nil end
    return backend:native_plan()
end

-- llm_headers(id, status, headers) -> headers_set | nil, headers_remove | nil, status | nil, rewrites
function M.llm_headers(id, status, headers)
    local st = reqs[id]
    if not st then return nil end
    local set, remove, status2 = st.backend:on_response_headers(st.ctx, status, headers)
    return set, remove, status2, st.ctx.translate and true or false
end

-- llm_body(id, chunk, eof) -> bytes to send now
function M.llm_body(id, chunk, eof)
    local st = reqs[id]
    if not st then return chunk end
    return st.backend:on_body(st.ctx, chunk or "", eof)
end

-- llm_local_body(id) -> bytes of a local (non-streaming) answer, fed through the same parser
function M.llm_local_body(id)
    local st = reqs[id]
    local resp = st and st["local"]
    if not resp then return "" end
    st.backend:on_response_headers(st.ctx, resp.status or 200, resp.headers or {})
    return st.backend:on_body(st.ctx, resp.body or "", true)
end

-- llm_next_event(id) -> delay_ms, bytes, last | nil  (local streaming answers)
function M.llm_next_event(id)
    local st = reqs[id]
    local resp = st and st["local"]
    if not resp or not resp.events then return nil end
    if not st.ev then
        st.ev = 0
        st.backend:on_response_headers(st.ctx, resp.status or 200, resp.headers or {})
    end
    st.ev = st.ev + 1
    local e = resp.events[st.ev]
    if not e then return nil end
    local last = st.ev == #resp.events
    return e.delay_ms or 0, st.backend:on_body(st.ctx, e.chunk or "", last), last
end

-- llm_peek_delay(id) -> delay in ms before the next local event (0 when none)
function M.llm_peek_delay(id)
    local st = reqs[id]
    local resp = st and st["local"]
    local e = resp and resp.events and resp.events[(st.ev or 0) + 1]
    return e and e.delay_ms or 0
end

-- openai_error(status, message) -> body: an error in the OpenAI shape, for requests on the
-- C core's own chat completions path (no glue state)
function M.openai_error(status, message)
    return llm.protocols.openai_chat.error_body and
        require("lunagate.llm.util").encode(llm.protocols.openai_chat.error_body(status, message))
end

-- llm_error(id, status, message) -> status, headers, body (in the client's API shape)
function M.llm_error(id, status, message)
    local st = reqs[id]
    if not st then return nil end
    return st.backend:on_error(st.ctx, status, message)
end

-- log(id, c) -> access-log line | nil, spans...: c holds what the C core knows of the request.
function M.log(id, c)
    local st = id and reqs[id]
    local rec = st and st.rec or {}
    for k, v in pairs(c) do
        if rec[k] == nil then rec[k] = v end
    end
    if st and st.backend then
        pcall(st.backend.on_complete, st.backend, st.ctx, rec.end_us)
    end
    if rec.llm then
        rec.protocol = "llm"
    end
    if telemetry then
        local line, genai, custom, span = telemetry:log(rec)
        return line, genai, custom, span, rec.mcp
    end
    return nil, rec.llm, nil, nil, rec.mcp
end

-- llm_log(id, end_us) -> rec.llm, for an LLM request whose log line the C core writes
function M.llm_log(id, end_us)
    local st = reqs[id]
    if not st or not st.backend then return nil end
    local rec = st.rec
    rec.end_us = end_us
    pcall(st.backend.on_complete, st.backend, st.ctx, end_us)
    return rec.llm
end

-- span(c) -> { name, attrs, status } for a plain traced request whose log line the C core
-- writes itself
function M.span(c)
    local tr = telemetry and telemetry.tracer
    if not tr then return nil end
    c.sampled = true
    local name, attrs, status = tr:attributes(c)
    if not name and not attrs then return nil end
    return { name = name, attrs = attrs, status = status }
end


function M.release(id)
    reqs[id] = nil
end

-- needs_headers() -> true when a configured expression reads request headers
function M.needs_headers()
    return telemetry and telemetry.needs_headers or false
end

-- user_log_code() -> true when the log format is a user plugin (it then runs under the
-- instruction budget like any plugin)
function M.user_log_code()
    local lg = telemetry and telemetry.logger
    return lg ~= nil and lg.format ~= "text" and lg.format ~= "json"
end

-- fast_log() -> 0: every request goes through log() in Lua; 1: plain requests may be
-- logged by the C core in the built-in text format; 2: same for json; 3: not logged at all.
-- The C formatter writes exactly what plugins/logging/{text,json}.lua write for a record
-- with no LLM, MCP or plugin fields (spec/04-integration/12-accesslog.test.mjs compares).
function M.fast_log()
    local t = telemetry
    if not t then return 0 end
    if t.metric_fields then return 0 end
    local lg = t.logger
    if not lg then return 3 end
    if not lg.enabled then return 3 end
    if lg.filter or lg.add or lg.suppress then return 0 end
    if lg.format == "text" then return 1 end
    if lg.format == "json" then return 2 end
    return 0
end

-- span_fast() -> true when plain requests' spans carry only the default attributes, which
-- the C core builds without calling span()
function M.span_fast()
    local tr = telemetry and telemetry.tracer
    return tr ~= nil and tr:defaults_only()
end

-- sampling() -> tracing enabled, random probability (-1: CEL), client probability
function M.sampling()
    local tr = telemetry and telemetry.tracer
    if not tr then return false, 0, 1 end
    local s = tr:sampling()
    M.random_cel, M.client_cel = s.random_cel, s.client_cel
    return true, s.random_cel and -1 or (s.random or 0), s.client_cel and -1 or (s.client or 1)
end

-- sample(method, path, headers, client) -> probability from the CEL randomSampling (or,
-- with client = true, clientSampling) expression
function M.sample(method, path, headers, client)
    local prog = client and M.client_cel or M.random_cel
    if not prog then return 0 end
    local context = require "lunagate.context"
    local v = prog:eval(context.activation({ method = method, path = path, request_headers = headers }))
    if v == true then return 1 end
    if type(v) == "number" then return v end
    return 0
end

-- mcp_handle(id, ri, bi, method, path, query, headers, body, io, start_us, tp) -- the body
-- of an MCP request's coroutine: runs backend:handle with the C-provided io object.
function M.mcp_handle(id, ri, bi, method, path, query, headers, body, io, start_us, traceparent)
    local entry = routes[ri + 1]
    local backend = entry and entry.backends[bi + 1]
    local rec = { start_us = start_us, protocol = "mcp", traceparent = traceparent }
    reqs[id] = { rec = rec, mcp = backend }
    if not backend then
        return io.respond(500, { ["content-type"] = "application/json" },
            '{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"no MCP backend"}}')
    end
    return backend:handle({ method = method, path = path, query = query, headers = headers, body = body },
        rec, io)
end



return M
