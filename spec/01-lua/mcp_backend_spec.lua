-- mcp_backend_spec.lua -- lunagate.mcp backend:handle over fake target connections: sessions,
-- routing, prefixing, authorization, relaying, errors and the request record
-- SPDX-License-Identifier: MIT
--
-- Targets are in-memory connections (opts.connect); the real transports are covered by
-- spec/04-integration/mcp_logic.test.mjs against server-everything.
local mcp = require "lunagate.mcp"
local json = require "lunagate.mcp.json"
local fake = require "helpers.fake_lunagate"

local Fake = {}
Fake.__index = Fake

-- A target named `name` with tools `tools`; `script` optionally lists server messages sent
-- before the response of a tools/call.
local function new_fake(name, registry, tools, script)
    local c = setmetatable({ name = name, kind = "mcp", log = {}, tools = tools or { "echo" },
                             script = script, notified = {} }, Fake)
    registry[#registry + 1] = c
    return c
end

function Fake:initialize(params)
    if self.fail then return nil, "boom" end
    self.session = self.session or ("up-" .. self.name)
    self.init_params = params
    return { protocolVersion = params and params.protocolVersion or "2025-06-18",
             capabilities = { tools = { listChanged = true }, [self.name] = {} },
             serverInfo = { name = "srv-" .. self.name } }
end

function Fake:request(msg, ctx)
    self.log[#self.log + 1] = msg
    self.last_ctx = ctx
    local out = {}
    local p = msg.params or {}
    local result
    if msg.method == "tools/list" then
        local list = json.array()
        for _, t in ipairs(self.tools) do
            list[#list + 1] = { name = t, inputSchema = { type = "object", required = json.array() } }
        end
        result = { tools = list }
    elseif msg.method == "tools/call" then
        for _, m in ipairs(self.script or {}) do out[#out + 1] = m end
        result = { content = { { type = "text", text = self.name .. ":" .. p.name } } }
    elseif msg.method == "resources/list" then
        result = { resources = { { uri = "file:///" .. self.name, name = self.name } } }
    elseif msg.method == "resources/read" then
        result = { contents = { { uri = p.uri, text = "data" } } }
    elseif msg.method == "prompts/list" then
        result = { prompts = { { name = "greet" } } }
    else
        out[#out + 1] = { jsonrpc = "2.0", id = msg.id, error = { code = -32601, message = "nope" } }
    end
    if result then out[#out + 1] = { jsonrpc = "2.0", id = msg.id, result = result } end
    local i = 0
    return function()
        i = i + 1
        return out[i]
    end
end

function Fake:notify(msg)
    self.notified[#self.notified + 1] = msg
    return true
end

function Fake:close() self.closed = true end

local function new_io()
    local r = { events = {} }
    r.io = {
        respond = function(status, headers, body) r.status, r.headers, r.body = status, headers, body end,
        stream_start = function(status, headers) r.status, r.headers, r.streaming = status, headers, true end,
        stream_write = function(chunk)
            for data in chunk:gmatch("data: ([^\n]*)\n") do r.events[#r.events + 1] = json.decode(data) end
            return true
        end,
        stream_end = function() r.ended = true end,
    }
    return r
end

local function call(b, method, body, sid, extra_rec)
    local r = new_io()
    local rec = extra_rec or {}
    b:handle({ method = method, path = "/mcp",
               headers = { ["mcp-session-id"] = sid, accept = "application/json, text/event-stream" },
               body = body and (type(body) == "string" and body or json.encode(body)) }, rec, r.io)
    r.rec = rec
    if r.body and r.body ~= "" then r.msg = json.decode(r.body) end
    if r.streaming then r.msg = r.events[#r.events] end
    return r
end

local function rpc(id, method, params)
    return { jsonrpc = "2.0", id = id, method = method, params = params or {} }
end

local INIT = { protocolVersion = "2025-06-18", capabilities = {}, clientInfo = { name = "t", version = "1" } }

describe("mcp backend", function()
    local lg
    setup(function() lg = fake.install() end)
    teardown(function() fake.uninstall() end)

    local function backend(targets, policies, opts, registry)
        registry = registry or {}
        opts = opts or {}
        opts.lg = lg
        opts.connect = opts.connect or function(t)
            return new_fake(t.name, registry, (opts.tools or {})[t.name], (opts.scripts or {})[t.name])
        end
        local conf = { targets = {} }
        for i, n in ipairs(targets) do
            conf.targets[i] = { name = n, mcp = { host = "http://127.0.0.1:1/mcp" } }
        end
        for k, v in pairs(opts.conf or {}) do conf[k] = v end
        return assert(mcp.new_backend(conf, policies, opts)), registry
    end

    local function session(b)
        local r = call(b, "POST", rpc(1, "initialize", INIT))
        assert.equal(200, r.status)
        return r.headers["mcp-session-id"], r
    end

    it("validates its configuration", function()
        local bad = {
            { {}, "at least one target" },
            { { targets = { { name = "a" } } }, "exactly one of mcp, sse, stdio" },
            { { targets = { { name = "a", mcp = { host = "h" } },
                            { name = "a", stdio = { cmd = "x" } } } }, "duplicate" },
            { { targets = { { name = "a", stdio = {} } } }, "stdio.cmd" },
            { { targets = { { name = "a", openapi = {} } } }, "openapi" },
            { { targets = { { name = "a", mcp = { host = "h" } } }, prefixMode = "sometimes" },
              "prefixMode" },
        }
        for _, c in ipairs(bad) do
            local b, err = mcp.new_backend(c[1], nil, { lg = lg })
            assert.is_nil(b)
            assert.truthy(err:find(c[2], 1, true), err)
        end
        local _, err = mcp.new_backend({ targets = { { name = "a", mcp = { host = "h" } } } },
            { mcpAuthorization = { rules = { "1 +" } } }, { lg = lg })
        assert.truthy(err:find("mcpAuthorization.rules[1]", 1, true), err)
        _, err = mcp.new_backend({ targets = { { name = "a", mcp = { host = "h" } } } }, nil,
                                 { lg = lg, session_key = "zz" })
        assert.truthy(err:find("session.key", 1, true), err)
    end)

    it("single target: passes initialize through, no prefixes, fills the record", function()
        local b, reg = backend({ "only" })
        local sid, r = session(b)
        assert.equal("srv-only", r.msg.result.serverInfo.name)
        assert.same(INIT, reg[1].init_params)
        assert.equal("initialize", r.rec.mcp.method)
        assert.equal(sid, r.rec.mcp.session_id)
        assert.equal("mcp", r.rec.protocol)
        local l = call(b, "POST", rpc(2, "tools/list"), sid)
        assert.equal("echo", l.msg.result.tools[1].name)
        assert.truthy(l.body:find('"required":[]', 1, true))
        local c = call(b, "POST", rpc(3, "tools/call", { name = "echo", arguments = {} }), sid,
                       { trace_id = string.rep("a", 32), span_id = string.rep("b", 16), sampled = true })
        assert.equal("only:echo", c.msg.result.content[1].text)
        assert.same({ method = "tools/call", session_id = sid, target = "only", resource_type = "tool",
                      resource = "echo", tool_name = "echo" }, c.rec.mcp)
        assert.equal("tools/call", c.rec.span_name)
        assert.equal("00-" .. string.rep("a", 32) .. "-" .. string.rep("b", 16) .. "-01",
                     reg[1].last_ctx.traceparent)
        assert.equal(3, reg[1].log[#reg[1].log].id) -- the client's id goes upstream as is
    end)

    it("several targets: prefixed names and URIs, calls routed back unprefixed", function()
        local b, reg = backend({ "a", "b" }, nil, { tools = { a = { "echo", "x" }, b = { "echo" } } })
        local sid, r = session(b)
        assert.equal("lunagate", r.msg.result.serverInfo.name)
        assert.same({}, r.msg.result.capabilities.a)
        assert.same({}, r.msg.result.capabilities.b)
        local l = call(b, "POST", rpc(2, "tools/list"), sid)
        local names = {}
        for i, t in ipairs(l.msg.result.tools) do names[i] = t.name end
        assert.same({ "a_echo", "a_x", "b_echo" }, names)
        local c = call(b, "POST", rpc(3, "tools/call", { name = "b_echo" }), sid)
        assert.equal("b:echo", c.msg.result.content[1].text)
        assert.equal("echo", reg[2].log[#reg[2].log].params.name)
        assert.equal("b", c.rec.mcp.target)
        local res = call(b, "POST", rpc(4, "resources/list"), sid)
        assert.equal("a+file:///a", res.msg.result.resources[1].uri)
        local rd = call(b, "POST", rpc(5, "resources/read", { uri = "b+file:///b" }), sid)
        assert.equal("b+file:///b", rd.msg.result.contents[1].uri)
        assert.equal("file:///b", reg[2].log[#reg[2].log].params.uri)
        assert.equal("file:///b", rd.rec.mcp.resource_uri)
        local u = call(b, "POST", rpc(6, "tools/call", { name = "zz_echo" }), sid)
        assert.equal(-32602, u.msg.error.code)
        local m = call(b, "POST", rpc(7, "nosuch/method"), sid)
        assert.equal(-32601, m.msg.error.code)
        local p = call(b, "POST", rpc(8, "ping"), sid)
        assert.same({}, p.msg.result)
    end)

    it("prefixMode never: plain names, duplicates dropped, calls routed by owner", function()
        local b, reg = backend({ "a", "b" }, nil, { conf = { prefixMode = "never" },
                                                   tools = { a = { "echo" }, b = { "echo", "only_b" } } })
        local sid = session(b)
        local l = call(b, "POST", rpc(2, "tools/list"), sid)
        assert.equal(2, #l.msg.result.tools)
        local c = call(b, "POST", rpc(3, "tools/call", { name = "only_b" }), sid)
        assert.equal("b:only_b", c.msg.result.content[1].text)
        assert.equal(0, #reg[1].log - 1) -- only the list reached a
    end)

    it("mcpAuthorization filters lists and denies calls with a JSON-RPC error", function()
        local policies = { mcpAuthorization = { rules = {
            { deny = 'mcp.tool.name == "x"' },
            { require = 'jwt.sub == "alice" || mcp.tool.target == "a"' },
        } } }
        local b, reg = backend({ "a", "b" }, policies, {
            tools = { a = { "echo", "x" }, b = { "echo" } },
            activation = function(rec) return { jwt = rec.jwt or {} } end,
        })
        local sid = session(b)
        local l = call(b, "POST", rpc(2, "tools/list"), sid)
        local names = {}
        for i, t in ipairs(l.msg.result.tools) do names[i] = t.name end
        assert.same({ "a_echo" }, names)
        local d = call(b, "POST", rpc(3, "tools/call", { name = "a_x" }), sid)
        assert.equal(-32001, d.msg.error.code)
        assert.equal(-32001, d.rec.mcp.error_code)
        assert.equal(0, #reg[1].log - 1) -- never reached the target
        local bob = call(b, "POST", rpc(4, "tools/call", { name = "b_echo" }), sid)
        assert.equal(-32001, bob.msg.error.code)
        local alice = call(b, "POST", rpc(5, "tools/call", { name = "b_echo" }), sid,
                           { jwt = { sub = "alice" } })
        assert.equal("b:echo", alice.msg.result.content[1].text)
        local l2 = call(b, "POST", rpc(6, "tools/list"), sid, { jwt = { sub = "alice" } })
        assert.equal(2, #l2.msg.result.tools)
    end)

    it("relays server messages as SSE and routes the client's answers back", function()
        local script = {
            { jsonrpc = "2.0", method = "notifications/progress",
              params = { progressToken = 1, progress = 1 } },
            { jsonrpc = "2.0", id = 5, method = "sampling/createMessage", params = {} },
        }
        local b, reg = backend({ "a", "b" }, nil, { scripts = { b = script } })
        local sid = session(b)
        local c = call(b, "POST", rpc(3, "tools/call", { name = "b_echo" }), sid)
        assert.is_true(c.streaming)
        assert.equal("text/event-stream", c.headers["content-type"])
        assert.equal(3, #c.events)
        assert.equal("notifications/progress", c.events[1].method)
        assert.equal("agw_b_n_5", c.events[2].id)
        assert.equal(3, c.events[3].id)
        assert.is_true(c.ended)
        local a = call(b, "POST", { jsonrpc = "2.0", id = "agw_b_n_5", result = { ok = true } }, sid)
        assert.equal(202, a.status)
        assert.equal(5, reg[2].notified[1].id)
        assert.equal(0, #reg[1].notified)
        local n = call(b, "POST", { jsonrpc = "2.0", method = "notifications/initialized" }, sid)
        assert.equal(202, n.status)
        assert.equal("notifications/initialized", reg[1].notified[1].method)
        assert.equal("notifications/initialized", reg[2].notified[2].method)
    end)

    it("sessions: required, unknown ids are 404, another replica resumes from the id", function()
        local b = backend({ "a" })
        local sid = session(b)
        local none = call(b, "POST", rpc(2, "tools/list"), nil)
        assert.equal(400, none.status)
        local bad = call(b, "POST", rpc(2, "tools/list"), "garbage!")
        assert.equal(404, bad.status)
        assert.equal(2, bad.msg.id)
        local b2, reg2 = backend({ "a" })
        local r = call(b2, "POST", rpc(3, "tools/call", { name = "echo" }), sid)
        assert.equal("a:echo", r.msg.result.content[1].text)
        assert.equal("up-a", reg2[1].session) -- the upstream session came from the id
        assert.equal(sid, r.rec.mcp.session_id)
    end)

    it("DELETE closes the upstream sessions; idle sessions expire", function()
        local now = 1000
        local b, reg = backend({ "a", "b" }, nil, { clock = function() return now end, session_ttl = 60 })
        local sid = session(b)
        local d = call(b, "DELETE", nil, sid)
        assert.equal(200, d.status)
        assert.is_true(reg[1].closed and reg[2].closed)
        assert.is_nil(b.sessions[sid])
        local sid2 = session(b)
        now = now + 61
        call(b, "POST", rpc(9, "ping"), nil) -- any request sweeps
        assert.is_nil(b.sessions[sid2])
        assert.is_true(reg[3].closed and reg[4].closed)
        assert.equal(405, call(b, "PUT", nil, sid2).status)
    end)

    it("failClosed fails initialize, failOpen skips the broken target", function()
        local function failing(reg)
            return function(t)
                local c = new_fake(t.name, reg)
                c.fail = t.name == "b"
                return c
            end
        end
        local reg = {}
        local b = backend({ "a", "b" }, nil, { connect = failing(reg) }, reg)
        local r = call(b, "POST", rpc(1, "initialize", INIT))
        assert.equal(-32603, r.msg.error.code)
        assert.truthy(r.msg.error.message:find("initialize b", 1, true))
        assert.is_true(reg[1].closed)
        local reg2 = {}
        local b2 = backend({ "a", "b" }, nil,
                           { connect = failing(reg2), conf = { failureMode = "failOpen" } }, reg2)
        local sid = session(b2)
        local l = call(b2, "POST", rpc(2, "tools/list"), sid)
        assert.equal("a_echo", l.msg.result.tools[1].name)
        assert.equal(1, #l.msg.result.tools)
    end)

    it("copies forward_headers to targets without putting them in the record", function()
        local b, reg = backend({ "a" }, nil, { forward_headers = { "authorization" } })
        local r = new_io()
        local rec = {}
        b:handle({ method = "POST", path = "/mcp", body = json.encode(rpc(1, "initialize", INIT)),
                   headers = { authorization = "Bearer s3cret", accept = "application/json" } },
                 rec, r.io)
        local sid = r.headers["mcp-session-id"]
        local r2 = new_io()
        local rec2 = {}
        b:handle({ method = "POST", path = "/mcp", body = json.encode(rpc(2, "tools/list")),
                   headers = { authorization = "Bearer s3cret", ["mcp-session-id"] = sid } },
                 rec2, r2.io)
        assert.same({ authorization = "Bearer s3cret" }, reg[1].last_ctx.headers)
        local function has_secret(t, depth)
            for _, v in pairs(t) do
                if v == "Bearer s3cret" then return true end
                if type(v) == "table" and depth < 4 and has_secret(v, depth + 1) then return true end
            end
            return false
        end
        assert.is_false(has_secret(rec, 0))
        assert.is_false(has_secret(rec2, 0))
    end)

    it("stateless mode opens and closes upstream sessions per request", function()
        local b, reg = backend({ "a" }, nil, { conf = { statefulMode = "stateless" } })
        local r = call(b, "POST", rpc(1, "initialize", INIT))
        assert.equal(200, r.status)
        assert.is_true(reg[1].closed)
        local l = call(b, "POST", rpc(2, "tools/list"), nil)
        assert.equal("echo", l.msg.result.tools[1].name)
        assert.equal(2, #reg)
        assert.is_true(reg[2].closed)
        assert.is_nil(next(b.sessions))
        assert.equal(405, call(b, "GET", nil, nil).status)
    end)

    it("answers malformed bodies with JSON-RPC errors", function()
        local b = backend({ "a" })
        local r = call(b, "POST", "{nope")
        assert.equal(400, r.status)
        assert.equal(-32700, r.msg.error.code)
        assert.equal(-32700, r.rec.mcp.error_code)
        local r2 = call(b, "POST", '{"jsonrpc":"1.0","id":1,"method":"x"}')
        assert.equal(-32600, r2.msg.error.code)
    end)
end)
