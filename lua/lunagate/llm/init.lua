-- lunagate/llm/init.lua -- LLM backends: the entry the C core calls for `ai:` backends
--
-- ---- Interface -------------------------------------------------------------------------------
--
-- local llm = require "lunagate.llm"
--
-- llm.new_backend(ai_conf, policies, opts) -> backend | nil, err
--     Called at config load/reload. ai_conf is the `ai:` table of a backend
--     ({ name, provider = { <one of openAI|anthropic|gemini|vertex|bedrock|azure|custom|mock> = {...} },
--        hostOverride?, pathOverride?, pathPrefix?, policies? }); `policies` is the backend's
--     policies table, merged key by key over ai_conf.policies: backendAuth.key (string or
--     {file = path}),
--     backendTLS (its presence turns TLS on for hostOverride; .hostname sets SNI),
--     ai.routes (path suffix -> completions|messages|responses|embeddings|models|passthrough|
--     detect|...; "*" is the fallback).
--     opts (all optional): clock = function() -> integer wall-clock microseconds;
--       capture = { prompt = bool, completion = bool } (what CEL/telemetry needs kept);
--       max_response_bytes (buffer cap for non-streaming bodies, default 8 MiB);
--       sse_max_bytes (SSE / event-stream buffer cap, default 1 MiB); getenv (for AWS_*).
--     err is "ai.<path>: message" (e.g. "ai.provider: expected exactly one of: ...").
--     Provider data modules are loaded with require("providers.<name>") (then
--     "plugins.providers.<name>"), so the plugins/ directory must be on package.path.
--
-- backend:on_request(rec, req) -> ctx
--     req = { method, path (with query), headers (lowercase keys), body (string or nil),
--             capture? (overrides opts.capture for this request) }
--     Fills rec.protocol = "llm" and rec.llm (provider, operation, request_model, streaming,
--     params, prompt). Returns the per-request context; keep it and pass it to the calls below.
--     Exactly one of these is set:
--       ctx.upstream = { host, port, tls (bool), sni, method, path (with query),
--                        headers_set = { name = value }, headers_remove = { name, ... },
--                        body (string) }
--         Apply headers_remove, then headers_set, to the client's headers; send `body` with a
--         fresh Content-Length (content-length and accept-encoding are always in
--         headers_remove: the gateway must read upstream bodies uncompressed).
--       ctx.respond = { status, headers = { name = value }, body = string | nil,
--                       events = { { delay_ms = number, chunk = string }, ... } | nil }
--         A local answer (request errors in the client's API shape, the mock provider). When
--         `events` is set, write each chunk delay_ms after the previous one (SSE). Feed the
--         answer through the same hooks as an upstream response (below), so the record gets
--         filled the same way.
--     ctx.rec is the record; ctx.route the resolved route type; ctx.streaming; ctx.translate
--     (true for an OpenAI client on an Anthropic backend). Other ctx fields are private.
--
-- backend:on_response_headers(ctx, status, headers) -> headers_set | nil, headers_remove | nil,
--                                                       status | nil
--     headers: lowercase-keyed. Returns header changes for the client response (a translated
--     body changes length: content-length is removed, send chunked or close-delimited) and,
--     rarely, a different status to send (translated Anthropic 529 -> 503).
--
-- backend:on_body(ctx, chunk, eof) -> out (string)
--     Every response body chunk in order (chunk may be "" with eof = true). Returns the bytes
--     to send to the client now ("" = nothing yet). Unchanged for passthrough; translated for
--     an OpenAI client on an Anthropic backend. Non-streaming bodies are copied into a buffer
--     (up to max_response_bytes) and parsed at eof; SSE / AWS event-stream are parsed event by
--     event. Parsing never fails the request: a bad body just leaves usage unset.
--
-- backend:on_error(ctx, status, message) -> status, headers, body
--     An error body in the client's API shape, e.g. upstream unreachable -> 502. `message`
--     must not contain secrets.
--
-- backend:on_complete(ctx[, end_us])
--     After the last byte (or on abort). Sets rec.llm.completion (when captured), ttft and
--     tpot; end_us defaults to rec.end_us, then opts.clock().
--
-- backend:route_of(path) -> route type ("completions", "messages", "passthrough", ...)
--
-- llm.protocols  -- wire protocol modules by name; llm.route_types -- accepted route types
-- llm.detect(path) -> route type | nil   (path-based wire format detection)
--
-- Routing: with policies.ai.routes, the longest matching path suffix wins, then "*", then
-- "completions" (agentgateway). Without routes the wire format is detected from the path
-- (/chat/completions, /messages, /responses, /embeddings, /models, Gemini
-- models/*:generateContent, Bedrock /model/*/converse), falling back to completions.
-- Upstream format per provider: plugins/providers/<p>.lua `formats`; the only translation is
-- OpenAI chat -> Anthropic Messages (others answer 400 "translation ... is not supported").
-- Threading: a backend is read-only after new_backend and may serve many requests of one
-- lua_State; all per-request state lives in ctx.
-- -----------------------------------------------------------------------------------------------
-- luacheck: ignore 212/self
local U = require "lunagate.llm.util"
local sse = require "lunagate.llm.sse"
local eventstream = require "lunagate.llm.eventstream"
local translate = require "lunagate.llm.translate.openai_anthropic"

local llm = {}

local PROTOCOLS = {
    openai_chat = require "lunagate.llm.openai_chat",
    openai_responses = require "lunagate.llm.openai_responses",
    openai_embeddings = require "lunagate.llm.openai_embeddings",
    anthropic_messages = require "lunagate.llm.anthropic_messages",
    gemini = require "lunagate.llm.gemini",
    bedrock_converse = require "lunagate.llm.bedrock_converse",
}
llm.protocols = PROTOCOLS

-- client route type -> the wire protocol the client speaks
local CLIENT = {
    completions = "openai_chat", messages = "anthropic_messages", responses = "openai_responses",
    embeddings = "openai_embeddings", generateContent = "gemini", converse = "bedrock_converse",
}

local ROUTE_TYPES = {
    completions = true, messages = true, models = true, passthrough = true, detect = true,
    responses = true, embeddings = true, realtime = true, anthropicTokenCount = true,
    generateContent = true, geminiCountTokens = true, rerank = true, converse = true,
}
llm.route_types = ROUTE_TYPES

-- `provider:` config key -> module name under plugins/providers/
local PROVIDER_KEYS = {
    openAI = "openai", openai = "openai", anthropic = "anthropic", gemini = "gemini",
    vertex = "vertex", bedrock = "bedrock", azure = "azure", custom = "custom", mock = "mock",
}
local PROVIDER_LIST = "openAI, anthropic, gemini, vertex, bedrock, azure, custom, mock"

local DEFAULT_MAX_RESPONSE = 8 * 1024 * 1024

local function load_provider(name)
    local ok, mod = pcall(require, "providers." .. name)
    if ok then return mod end
    local ok2, mod2 = pcall(require, "plugins.providers." .. name)
    if ok2 then return mod2 end
    return nil, mod
end

local function default_clock()
    local ok, lg = pcall(require, "lunagate")
    if ok and type(lg) == "table" and type(lg.time) == "table" and type(lg.time.now_us) == "function" then
        return lg.time.now_us
    end
    return U.default_now
end

local function strip_query(p)
    return (p or ""):match("^[^?]*")
end

local function query_of(p)
    return (p or ""):match("%?(.*)$")
end

-- Path-based detection of the client's wire protocol (used without ai.routes and for "detect").
local function detect(path)
    local p = strip_query(path)
    if PROTOCOLS.gemini.matches(p) then return "generateContent" end
    if p:find(":countTokens$") then return "geminiCountTokens" end
    if PROTOCOLS.bedrock_converse.matches(p) then return "converse" end
    if p:find("/messages/count_tokens$") then return "anthropicTokenCount" end
    if PROTOCOLS.anthropic_messages.matches(p) then return "messages" end
    if PROTOCOLS.openai_responses.matches(p) then return "responses" end
    if PROTOCOLS.openai_embeddings.matches(p) then return "embeddings" end
    if PROTOCOLS.openai_chat.matches(p) then return "completions" end
    if p:sub(-7) == "/models" or p == "/models" then return "models" end
    return nil
end
llm.detect = detect

-- ---- Config validation ----

local function check_type(v, want)
    if want == "table" then return type(v) == "table" end
    if want == "string" then return type(v) == "string" end
    if want == "number" then return type(v) == "number" end
    if want == "boolean" then return type(v) == "boolean" end
    return true
end

local function read_key(k)
    if k == nil then return nil end
    if type(k) == "string" then return k end
    if type(k) == "table" and type(k.file) == "string" then
        local f, err = io.open(k.file, "rb")
        if not f then return nil, "policies.backendAuth.key.file: " .. tostring(err) end
        local s = f:read("a")
        f:close()
        return (s:gsub("%s+$", ""))
    end
    return nil, "policies.backendAuth.key: expected a string or {file: path}"
end

local function parse_host_port(s)
    if type(s) ~= "string" then return nil end
    local h, p = s:match("^%[(.+)%]:(%d+)$")
    if not h then h, p = s:match("^([^:]+):(%d+)$") end
    if not h then return nil end
    p = tonumber(p)
    if not p or p < 1 or p > 65535 then return nil end
    return h, p
end

local Backend = {}
Backend.__index = Backend

function llm.new_backend(ai, policies, opts)
    opts = opts or {}
    if type(ai) ~= "table" then return nil, "ai: expected a table" end
    if ai.groups ~= nil then return nil, "ai.groups: provider groups are not supported yet" end
    if type(ai.name) ~= "string" or ai.name == "" then return nil, "ai.name: required string" end
    if type(ai.provider) ~= "table" then
        return nil, "ai.provider: expected exactly one of: " .. PROVIDER_LIST
    end
    local pkey, pconf
    for k, v in pairs(ai.provider) do
        if pkey or not PROVIDER_KEYS[k] then
            return nil, "ai.provider: expected exactly one of: " .. PROVIDER_LIST
        end
        pkey, pconf = k, v
    end
    if not pkey then return nil, "ai.provider: expected exactly one of: " .. PROVIDER_LIST end
    if pconf == U.null or pconf == nil then pconf = {} end
    if type(pconf) ~= "table" then return nil, "ai.provider." .. pkey .. ": expected a table" end
    local prov, lerr = load_provider(PROVIDER_KEYS[pkey])
    if not prov then return nil, "ai.provider." .. pkey .. ": cannot load provider: " .. tostring(lerr) end
    local ppath = "ai.provider." .. pkey
    for k, v in pairs(pconf) do
        local want = prov.fields[k]
        if not want then return nil, ppath .. "." .. tostring(k) .. ": unknown field" end
        if not check_type(v, want) then return nil, ppath .. "." .. k .. ": expected a " .. want end
    end
    for _, k in ipairs(prov.required or {}) do
        if pconf[k] == nil then return nil, ppath .. "." .. k .. ": required" end
    end
    for k, allowed in pairs(prov.one_of or {}) do
        if pconf[k] ~= nil then
            local ok = false
            for _, a in ipairs(allowed) do if a == pconf[k] then ok = true end end
            if not ok then
                return nil, ppath .. "." .. k .. ": expected one of: " .. table.concat(allowed, ", ")
            end
        end
    end
    if prov.check then
        local ok, err = prov.check(pconf)
        if not ok then return nil, ppath .. "." .. err end
    end
    for _, k in ipairs({ "pathOverride", "pathPrefix" }) do
        local v = ai[k]
        if v ~= nil and (type(v) ~= "string" or v:sub(1, 1) ~= "/") then
            return nil, "ai." .. k .. ": expected a path starting with /"
        end
    end

    if policies ~= nil and type(policies) ~= "table" then return nil, "policies: expected a table" end
    if ai.policies ~= nil and type(ai.policies) ~= "table" then
        return nil, "ai.policies: expected a table"
    end
    do  -- the backend's own policies (argument) win key by key over ai.policies
        local merged = {}
        for k, v in pairs(ai.policies or {}) do merged[k] = v end
        for k, v in pairs(policies or {}) do merged[k] = v end
        policies = merged
    end
    local b = setmetatable({
        name = ai.name, provider = prov, provider_key = pkey, pconf = pconf,
        identity = prov.identity_of and prov.identity_of(pconf) or prov.identity,
        model = pconf.model, path_override = ai.pathOverride,
        clock = opts.clock or default_clock(),
        capture = opts.capture or {},
        max_response = opts.max_response_bytes or DEFAULT_MAX_RESPONSE,
        sse_max = opts.sse_max_bytes or sse.DEFAULT_MAX_BYTES,
        getenv = opts.getenv or os.getenv,
        formats = prov.formats_of and prov.formats_of(pconf) or prov.formats,
    }, Backend)

    -- endpoint
    local host, port, tls, base
    if prov.endpoint then
        host, port, tls, base = prov.endpoint(pconf, opts.getenv or os.getenv)
    else
        host, port, tls, base = prov.host, prov.port, prov.tls, prov.base_path
    end
    if ai.hostOverride ~= nil then
        local h, p = parse_host_port(ai.hostOverride)
        if not h then return nil, "ai.hostOverride: expected \"host:port\"" end
        host, port, tls = h, p, policies.backendTLS ~= nil
    end
    if not host and not prov.is_local then
        return nil, ppath .. ": needs baseUrl or ai.hostOverride"
    end
    b.host, b.port, b.tls = host, port, tls
    b.base = ai.pathPrefix or base or ""
    b.sni = host
    if type(policies.backendTLS) == "table" and type(policies.backendTLS.hostname) == "string" then
        b.sni = policies.backendTLS.hostname
    end

    -- auth
    local ba = policies.backendAuth
    if ba ~= nil then
        if type(ba) ~= "table" then return nil, "policies.backendAuth: expected a table" end
        local key, kerr = read_key(ba.key)
        if kerr then return nil, kerr end
        b.key = key
    end

    -- routes
    local ai_pol = policies.ai
    if ai_pol ~= nil and type(ai_pol) ~= "table" then return nil, "policies.ai: expected a table" end
    if ai_pol and ai_pol.routes ~= nil then
        if type(ai_pol.routes) ~= "table" then return nil, "policies.ai.routes: expected a map" end
        local routes = {}
        for suffix, rtype in pairs(ai_pol.routes) do
            if type(suffix) ~= "string" or not ROUTE_TYPES[rtype] then
                return nil, "policies.ai.routes." .. tostring(suffix) .. ": expected one of: "
                    .. "completions, messages, responses, embeddings, models, passthrough, detect, "
                    .. "anthropicTokenCount, generateContent, geminiCountTokens, rerank, realtime"
            end
            if suffix == "*" then b.route_fallback = rtype
            else routes[#routes + 1] = { suffix = suffix, type = rtype } end
        end
        table.sort(routes, function(x, y)
            if #x.suffix ~= #y.suffix then return #x.suffix > #y.suffix end
            return x.suffix < y.suffix
        end)
        b.routes = routes
    end
    return b
end

-- ---- Per request ----

function Backend:route_of(path)
    local p = strip_query(path)
    local r
    if self.routes then
        for _, x in ipairs(self.routes) do
            if p:sub(-#x.suffix) == x.suffix then r = x.type; break end
        end
        r = r or self.route_fallback or "completions"
    else
        r = detect(p) or "completions"
    end
    if r == "detect" then r = detect(p) or "passthrough" end
    return r
end

local function local_error(ctx, status, message, proto)
    local rec = ctx.rec
    proto = proto or PROTOCOLS[ctx.client_proto or "openai_chat"] or PROTOCOLS.openai_chat
    ctx.respond = { status = status, headers = { ["content-type"] = "application/json" },
                    body = U.encode(proto.error_body(status, message)) }
    ctx.mode = "none"
    ctx.local_error = true
    if rec.error == nil then rec.error = message end
    return ctx
end

local function host_header(host, port, tls)
    if (tls and port == 443) or (not tls and port == 80) then return host end
    if host:find(":", 1, true) then host = "[" .. host .. "]" end
    return host .. ":" .. port
end

function Backend:new_upstream(req, path, body)
    local up = {
        host = self.host, port = self.port, tls = self.tls and true or false, sni = self.sni,
        method = req.method or "POST", path = path,
        headers_set = { host = host_header(self.host, self.port, self.tls) },
        headers_remove = { "content-length", "accept-encoding" },
        body = body or "",
    }
    if body and body ~= "" then up.headers_set["content-type"] = "application/json" end
    return up
end

function Backend:apply_auth(ctx, up, req, route)
    if not self.key and not self.provider.sign_without_key then
        return true
    end
    if self.key then
        local hr = up.headers_remove
        hr[#hr + 1] = "authorization"
        hr[#hr + 1] = "x-api-key"
        hr[#hr + 1] = "api-key"
        hr[#hr + 1] = "x-goog-api-key"
    end
    local auth = self.provider.auth or "bearer"
    if type(auth) == "function" then
        local ok, err = auth(self.key, up, req.headers, route, {
            pconf = self.pconf, method = up.method, now_us = ctx.now(), getenv = self.getenv,
        })
        if ok == nil and err then return nil, err end
        return true
    end
    if auth == "bearer" then
        up.headers_set["authorization"] = "Bearer " .. self.key
    else
        up.headers_set[auth] = self.key
    end
    return true
end

function Backend:upstream_path(route, model, streaming, client_path)
    local q = query_of(client_path)
    local p
    if self.path_override then
        p = self.path_override
    elseif self.provider.path then
        p = self.provider.path(self.pconf, route, model, streaming, self.base)
    else
        p = self.base .. (self.provider.paths[route] or "")
    end
    -- native Google / AWS paths keep the client's query (?alt=sse, ...)
    if q and q ~= "" and (route == "generateContent" or route == "converse") then
        p = p .. (p:find("?", 1, true) and "&" or "?") .. q
    end
    return p
end

-- native_plan() -> table | nil: what the C core needs to serve this backend's OpenAI chat
-- completions requests itself (src/llmnative.c), when nothing about them needs Lua: the
-- upstream speaks openai_chat, the path, auth header and body do not depend on the request
-- beyond what the C scanner reads, and no prompt or completion is captured. nil otherwise;
-- the C core then calls on_request and friends as for every other request.
function Backend:native_plan()
    local prov = self.provider
    if prov.is_local or self.routes or self.model or prov.prepare_body or prov.path
            or self.path_override or self.formats.completions ~= "openai_chat"
            or self.capture.prompt or self.capture.completion or not self.host then
        return nil
    end
    local auth = prov.auth or "bearer"
    local auth_name, auth_value
    if self.key then
        if auth == "bearer" then
            auth_name, auth_value = "authorization", "Bearer " .. self.key
        elseif type(auth) == "string" and auth ~= "sigv4" then
            auth_name, auth_value = auth, self.key
        else
            return nil
        end
    elseif prov.sign_without_key then
        return nil
    end
    return {
        host = self.host, port = self.port, tls = self.tls and true or false, sni = self.sni,
        path = self.base .. (prov.paths.completions or ""),
        host_header = host_header(self.host, self.port, self.tls),
        auth_name = auth_name, auth_value = auth_value,
        provider = self.identity,
    }
end

function Backend:on_request(rec, req)
    local now = self.clock
    local ctx = {
        rec = rec, now = now, capture = req.capture or self.capture, path = req.path,
        mode = "none",
    }
    rec.protocol = "llm"
    local l = U.llm(rec)
    l.provider = self.identity
    local route = self:route_of(req.path)
    ctx.route = route
    ctx.client_proto = CLIENT[route]

    -- routes without parsing
    if route == "models" then
        l.operation = "models"
        if self.provider.is_local then
            ctx.respond = self.provider.respond(self.pconf, "models", nil,
                { headers = req.headers, now_us = now() })
            return ctx
        end
        if not self.formats.models then
            return local_error(ctx, 404, "provider " .. self.provider.name .. " has no model list")
        end
        ctx.upstream = self:new_upstream({ method = req.method or "GET" },
            self:upstream_path("models", nil, false, req.path), nil)
        local ok, err = self:apply_auth(ctx, ctx.upstream, req, route)
        if not ok then ctx.upstream = nil; return local_error(ctx, 500, err) end
        return ctx
    end
    if not ctx.client_proto then               -- passthrough and unparsed route types
        l.operation = route == "passthrough" and "passthrough" or route
        if self.provider.is_local then
            return local_error(ctx, 404, "the mock provider does not serve " .. strip_query(req.path))
        end
        ctx.upstream = self:new_upstream(req, self.path_override or req.path, req.body)
        ctx.upstream.headers_set["content-type"] = nil
        local ok, err = self:apply_auth(ctx, ctx.upstream, req, route)
        if not ok then ctx.upstream = nil; return local_error(ctx, 500, err) end
        return ctx
    end

    local client = PROTOCOLS[ctx.client_proto]
    local up_name = self.formats[route]
    if not up_name or up_name == "models" then
        return local_error(ctx, 400, "provider " .. self.provider.name .. " does not support "
            .. route .. " requests", client)
    end
    if up_name ~= ctx.client_proto
            and not (ctx.client_proto == "openai_chat" and up_name == "anthropic_messages") then
        return local_error(ctx, 400, "translation from " .. ctx.client_proto .. " to " .. up_name
            .. " is not supported", client)
    end
    ctx.translate = up_name ~= ctx.client_proto
    ctx.up_proto = up_name

    local body_s = req.body or ""
    local body, derr = U.decode(body_s)
    if type(body) ~= "table" or (body[1] ~= nil) or body_s:match("^%s*%[") then
        return local_error(ctx, 400, "invalid JSON in request body"
            .. (derr and (": " .. derr) or ": expected an object"), client)
    end
    client.parse_request(rec, body, ctx)
    local model = self.model or l.request_model
    if type(model) ~= "string" or model == "" then
        return local_error(ctx, 400, "missing model", client)
    end
    l.request_model = model
    local streaming = l.streaming and true or false
    ctx.streaming = streaming

    if self.provider.is_local then
        ctx.respond = self.provider.respond(self.pconf, route, body,
            { model = model, streaming = streaming, now_us = now(), headers = req.headers })
        return ctx
    end

    -- build the upstream body
    local out
    if ctx.translate then
        local areq, terr = translate.request(body, { model = model })
        if not areq then return local_error(ctx, 400, terr, client) end
        if self.provider.prepare_body then self.provider.prepare_body("messages", areq, self.pconf, model) end
        out = translate.encode_request(areq)
        ctx.translator = streaming and translate.stream({ created = now() // 1000000, model = model })
    else
        local up = PROTOCOLS[up_name]
        local override = (self.model and route ~= "generateContent" and route ~= "converse") and model or nil
        local _, changed, patch = up.prepare_request(body, { model = override })
        patch = patch or { set = {} }
        local remove
        if self.provider.prepare_body then
            local pb = {}
            local pchanged = self.provider.prepare_body(route, pb, self.pconf, model)
            if pchanged then
                -- provider tweaks are expressed on an empty table: set keys become patches,
                -- and `model` is dropped when the provider removed it (vertex rawPredict)
                for k, v in pairs(pb) do patch.set[k] = U.encode(v) end
                remove = { "model" }
                patch.set.model = nil
                changed = true
            end
        end
        if changed then
            out = U.patch_object(body_s, patch.set, remove) or U.encode(body)
        else
            out = body_s
        end
    end
    local upath = self:upstream_path(route, model, streaming, req.path)
    ctx.upstream = self:new_upstream(req, upath, out)
    ctx.upstream.method = "POST"
    local ok, err = self:apply_auth(ctx, ctx.upstream, req, route)
    if not ok then ctx.upstream = nil; return local_error(ctx, 500, err, client) end
    return ctx
end

function Backend:on_response_headers(ctx, status, headers)
    ctx.status = status
    if ctx.local_error or not ctx.up_proto then     -- errors we made, passthrough, model lists
        ctx.mode = "none"
        return nil
    end
    ctx.proto = PROTOCOLS[ctx.up_proto]
    local ct = (headers and headers["content-type"] or ""):lower()
    if ct:find("text/event-stream", 1, true) then
        ctx.mode = "sse"
        ctx.decoder = sse.decoder({ max_bytes = self.sse_max })
    elseif ct:find("application/vnd.amazon.eventstream", 1, true) then
        ctx.mode = "eventstream"
        ctx.decoder = eventstream.decoder({ max_bytes = self.sse_max })
    else
        ctx.mode = "buffer"
        ctx.buf = {}
        ctx.buf_len = 0
    end
    if ctx.translate then
        local hs = { ["content-type"] = ctx.mode == "sse" and "text/event-stream" or "application/json" }
        -- Anthropic's 529 (overloaded) has no OpenAI equivalent: clients expect 503
        return hs, { "content-length" }, status == 529 and 503 or nil
    end
    return nil
end

local function translate_buffered(ctx, body_s)
    local status = ctx.status or 200
    local obj = U.decode(body_s)
    if status >= 400 then
        local _, e = translate.error_to_openai(status, obj or body_s)
        return U.encode(e)
    end
    if type(obj) ~= "table" then
        return U.encode(PROTOCOLS.openai_chat.error_body(502, "invalid JSON from upstream"))
    end
    return U.encode(translate.response(obj, { created = ctx.now() // 1000000 }))
end

function Backend:on_body(ctx, chunk, eof)
    chunk = chunk or ""
    local mode = ctx.mode
    local rec = ctx.rec
    if mode == "none" then return chunk end
    if mode == "buffer" then
        if not ctx.overflow then
            ctx.buf_len = ctx.buf_len + #chunk
            if ctx.buf_len > self.max_response then
                ctx.overflow = true
                if ctx.translate then
                    -- cannot translate what we cannot hold: send the raw bytes on
                    local raw = table.concat(ctx.buf) .. chunk
                    ctx.buf = nil
                    return raw
                end
                ctx.buf = nil
            else
                ctx.buf[#ctx.buf + 1] = chunk
            end
        end
        if ctx.overflow then return chunk end
        if eof then
            local body_s = table.concat(ctx.buf)
            ctx.buf = nil
            ctx.parsed = true
            local obj = U.decode(body_s)
            if obj ~= nil then ctx.proto.parse_response(rec, ctx.status or 200, obj, ctx) end
            if ctx.translate then return translate_buffered(ctx, body_s) end
            return chunk
        end
        return ctx.translate and "" or chunk
    end
    -- sse / eventstream
    local events, err = ctx.decoder:feed(chunk)
    if not events then
        if not ctx.parse_error then
            ctx.parse_error = err
        end
        return chunk
    end
    local out = ctx.translate and ctx.translator and {} or nil
    for _, ev in ipairs(events) do
        ctx.proto.parse_event(rec, ev, ctx)
        if out then out[#out + 1] = ctx.translator:feed(ev) end
    end
    if out then
        if eof and not ctx.translator.done then
            out[#out + 1] = "data: [DONE]\n\n"
            ctx.translator.done = true
        end
        return table.concat(out)
    end
    return chunk
end

function Backend:on_error(ctx, status, message)
    local proto = PROTOCOLS[ctx and ctx.client_proto or "openai_chat"] or PROTOCOLS.openai_chat
    if ctx and ctx.rec and ctx.rec.error == nil then ctx.rec.error = message end
    return status, { ["content-type"] = "application/json" },
        U.encode(proto.error_body(status, message))
end

function Backend:on_complete(ctx, end_us)
    local rec = ctx.rec
    if ctx.mode == "buffer" and not ctx.parsed and ctx.buf and #ctx.buf > 0 then
        local obj = U.decode(table.concat(ctx.buf))
        if obj ~= nil then ctx.proto.parse_response(rec, ctx.status or 200, obj, ctx) end
        ctx.parsed = true
    end
    if ctx.error and rec.error == nil then
        local e = ctx.error
        rec.error = type(e) == "table" and (U.str(e.message) or U.str(e.type)) or tostring(e)
    end
    U.finish(rec, ctx, end_us or rec.end_us or ctx.now())
end

return llm
