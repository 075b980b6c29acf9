-- mcp_logic.lua -- the MCP gateway logic (lua/lunagate/mcp) against the real
-- @modelcontextprotocol/server-everything over Streamable HTTP, legacy SSE and stdio.
-- SPDX-License-Identifier: MIT
--
-- Run by spec/02-c/mcp_driver.c (real lg.http, lg.process, lg.crypto_aead on libevent):
--   mcp_driver spec/04-integration/mcp_logic.lua HTTP_URL SSE_URL NODE EVERYTHING_JS
-- Prints one JSON line per check: {"name": ..., "ok": true|false, "detail": ...}, then
-- {"done": true}.

local lg = require "lunagate"
local mcp = require "lunagate.mcp"
local json = require "lunagate.mcp.json"

local HTTP_URL, SSE_URL, NODE, EVERYTHING = arg[1], arg[2], arg[3], arg[4]
local KEY = string.rep("0123456789abcdef", 4)

local function check(name, ok, detail)
    io.stdout:write(json.encode({ name = name, ok = ok and true or false,
                                  detail = detail ~= nil and tostring(detail) or nil }), "\n")
    io.stdout:flush()
end

-- A proxy-side `io` that records what the backend answers.
local function new_io()
    local r = { events = {}, chunks = {} }
    r.io = {
        respond = function(status, headers, body)
            r.status, r.headers, r.body = status, headers, body
        end,
        stream_start = function(status, headers)
            r.status, r.headers, r.streaming = status, headers, true
        end,
        stream_write = function(chunk)
            if r.closed_by_client then return nil, "client gone" end
            r.chunks[#r.chunks + 1] = chunk
            for data in chunk:gmatch("data: ([^\n]*)\n") do
                r.events[#r.events + 1] = json.decode(data)
            end
            if r.on_write then r.on_write(chunk) end
            return true
        end,
        stream_end = function() r.ended = true end,
    }
    return r
end

local function post(backend, body, sid, extra, rec)
    local r = new_io()
    rec = rec or {}
    local headers = { accept = "application/json, text/event-stream",
                      ["content-type"] = "application/json", ["mcp-session-id"] = sid }
    for k, v in pairs(extra or {}) do headers[k] = v end
    backend:handle({ method = "POST", path = "/mcp", headers = headers,
                     body = type(body) == "string" and body or json.encode(body) }, rec, r.io)
    r.rec = rec
    if r.body and r.body ~= "" then r.msg = json.decode(r.body) end
    if r.streaming then r.msg = r.events[#r.events] end
    return r
end

local function rpc(id, method, params)
    return { jsonrpc = "2.0", id = id, method = method, params = params or {} }
end

local INIT = { protocolVersion = "2025-06-18", capabilities = { sampling = {} },
               clientInfo = { name = "mcp-logic-test", version = "1.0" } }

local function names(list, field)
    local out = {}
    for _, t in ipairs(list or {}) do out[t[field or "name"]] = t end
    return out
end

local function initialize(backend)
    local r = post(backend, rpc(1, "initialize", INIT))
    local sid = r.headers and r.headers["mcp-session-id"]
    post(backend, { jsonrpc = "2.0", method = "notifications/initialized" }, sid)
    return sid, r
end

-- ---- A: one Streamable HTTP target, encrypted session ids ----
do
    local conf = { targets = { { name = "everything", mcp = { host = HTTP_URL } } } }
    local b1 = assert(mcp.new_backend(conf, nil, { lg = lg, session_key = KEY }))
    local sid, r = initialize(b1)
    check("http.initialize.status", r.status == 200, r.status)
    check("http.initialize.session", type(sid) == "string" and #sid > 20, sid)
    check("http.initialize.result", r.msg and r.msg.result and r.msg.result.serverInfo ~= nil,
          r.body)
    check("http.initialize.rec", r.rec.mcp.method == "initialize" and r.rec.protocol == "mcp"
          and r.rec.mcp.session_id == sid and r.rec.span_name == "initialize")
    local plain = require("lunagate.mcp.session").b64url_decode(sid)
    check("http.session.encrypted", plain and not plain:find("everything", 1, true))

    local t = post(b1, rpc(2, "tools/list"), sid)
    local tools = t.msg and t.msg.result and names(t.msg.result.tools)
    check("http.tools.list", tools and tools.echo and tools["get-sum"], t.body)
    check("http.tools.list.arrays", tools and tools.echo and
          getmetatable(tools.echo.inputSchema.required) == json.array_mt)

    local c = post(b1, rpc(3, "tools/call", { name = "echo", arguments = { message = "hi" } }), sid)
    local text = c.msg and c.msg.result and c.msg.result.content[1].text
    check("http.echo", text == "Echo: hi", text or c.body)
    check("http.echo.rec", c.rec.mcp.tool_name == "echo" and c.rec.mcp.target == "everything"
          and c.rec.mcp.resource_type == "tool" and c.rec.mcp.method == "tools/call")

    local p = post(b1, rpc(4, "tools/call", { name = "trigger-long-running-operation",
        arguments = { duration = 0.3, steps = 3 }, _meta = { progressToken = "tok1" } }), sid)
    local progress = 0
    for _, ev in ipairs(p.events) do
        if ev.method == "notifications/progress" and ev.params.progressToken == "tok1" then
            progress = progress + 1
        end
    end
    check("http.progress.streamed", p.streaming and progress == 3, progress)
    local last = p.events[#p.events]
    check("http.progress.result", last and last.id == 4 and last.result and
          last.result.content[1].text:find("completed") ~= nil, last and json.encode(last))

    -- a second replica resumes the session from its id alone
    local b2 = assert(mcp.new_backend(conf, nil, { lg = lg, session_key = KEY }))
    local c2 = post(b2, rpc(5, "tools/call", { name = "echo", arguments = { message = "again" } }),
                    sid)
    local t2 = c2.msg and c2.msg.result and c2.msg.result.content[1].text
    check("http.resume.second_replica", t2 == "Echo: again", t2 or c2.body)
    local b3 = assert(mcp.new_backend(conf, nil, { lg = lg, session_key = string.rep("f", 64) }))
    local c3 = post(b3, rpc(6, "tools/list"), sid)
    check("http.resume.wrong_key_404", c3.status == 404, c3.status)
    local c4 = post(b1, rpc(7, "tools/list"), nil)
    check("http.missing_session_400", c4.status == 400, c4.status)
    local bad = post(b1, "{not json", sid)
    check("http.parse_error", bad.status == 400 and bad.msg.error.code == -32700, bad.body)

    -- server stream: GET opens, we leave after the first keepalive-less wait
    local d = new_io()
    b1:handle({ method = "DELETE", path = "/mcp", headers = { ["mcp-session-id"] = sid } }, {}, d.io)
    check("http.delete", d.status == 200, d.status)
    local after = post(b1, rpc(8, "tools/call", { name = "echo", arguments = { message = "x" } }),
                       sid)
    check("http.after_delete_fails", after.msg and after.msg.error ~= nil, after.body)
end

-- ---- B: two targets (HTTP + stdio) multiplexed, with authorization ----
do
    local conf = { targets = {
        { name = "web", mcp = { host = HTTP_URL } },
        { name = "local", stdio = { cmd = NODE, args = { EVERYTHING, "stdio" } } },
    } }
    local policies = { mcpAuthorization = { rules = {
        { deny = 'mcp.tool.name == "get-sum" && mcp.tool.target == "web"' },
    } } }
    local b = assert(mcp.new_backend(conf, policies, { lg = lg, stderr = "null" }))
    local sid, r = initialize(b)
    check("mux.initialize", r.status == 200 and sid and r.msg.result.serverInfo.name == "lunagate",
          r.body)
    local t = post(b, rpc(2, "tools/list"), sid)
    local tools = t.msg and t.msg.result and names(t.msg.result.tools) or {}
    check("mux.tools.prefixed", tools.web_echo and tools.local_echo and not tools.echo, t.body)
    check("mux.tools.authz_filtered", tools["local_get-sum"] and not tools["web_get-sum"])
    local c = post(b, rpc(3, "tools/call", { name = "local_echo", arguments = { message = "s" } }),
                   sid, { traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" })
    local text = c.msg and c.msg.result and c.msg.result.content[1].text
    check("mux.stdio.echo", text == "Echo: s", text or c.body)
    check("mux.stdio.rec", c.rec.mcp.target == "local" and c.rec.mcp.tool_name == "echo")
    local w = post(b, rpc(4, "tools/call", { name = "web_echo", arguments = { message = "h" } }),
                   sid)
    local wt = w.msg and w.msg.result and w.msg.result.content[1].text
    check("mux.http.echo", wt == "Echo: h", wt or w.body)
    local d = post(b, rpc(5, "tools/call", { name = "web_get-sum", arguments = { a = 1, b = 2 } }),
                   sid)
    check("mux.authz.denied", d.msg and d.msg.error and d.msg.error.code == -32001, d.body)
    check("mux.authz.rec", d.rec.mcp.error_code == -32001)
    local s = post(b, rpc(6, "tools/call", { name = "local_get-sum", arguments = { a = 1, b = 2 } }),
                   sid)
    local st = s.msg and s.msg.result and s.msg.result.content[1].text
    check("mux.stdio.get_sum", st and st:find("3") ~= nil, st or s.body)
    local res = post(b, rpc(7, "resources/list"), sid)
    local uris = res.msg and res.msg.result and res.msg.result.resources or {}
    local first_web
    for _, it in ipairs(uris) do
        if it.uri:sub(1, 4) == "web+" and not first_web then first_web = it.uri end
    end
    check("mux.resources.prefixed", first_web ~= nil and #uris >= 2, #uris)
    if first_web then
        local rd = post(b, rpc(8, "resources/read", { uri = first_web }), sid)
        local cu = rd.msg and rd.msg.result and rd.msg.result.contents[1].uri
        check("mux.resources.read", cu == first_web, cu or rd.body)
    end
    local pl = post(b, rpc(9, "prompts/list"), sid)
    local prompts = pl.msg and pl.msg.result and names(pl.msg.result.prompts) or {}
    local any_local = false
    for n in pairs(prompts) do if n:find("^local_") then any_local = true end end
    check("mux.prompts.prefixed", any_local, pl.body)
    -- progress notifications from a stdio child reach the POST's SSE stream
    local p = post(b, rpc(11, "tools/call", { name = "local_trigger-long-running-operation",
        arguments = { duration = 0.3, steps = 3 }, _meta = { progressToken = 99 } }), sid)
    local progress = 0
    for _, ev in ipairs(p.events) do
        if ev.method == "notifications/progress" and ev.params.progressToken == 99 then
            progress = progress + 1
        end
    end
    local last = p.events[#p.events]
    check("mux.stdio.progress", progress == 3 and last and last.id == 11 and last.result ~= nil,
          progress)

    -- server-to-client requests (sampling) relayed with a routable id, answers routed back
    for _, target in ipairs({ "web", "local" }) do
        local sr = new_io()
        local got = lg.http.event()
        local done = false
        sr.on_write = function() got:set() end
        local co = coroutine.create(function()
            b:handle({ method = "POST", path = "/mcp", body = json.encode(rpc(20, "tools/call",
                { name = target .. "_trigger-sampling-request",
                  arguments = { prompt = "hello", maxTokens = 5 } })),
                headers = { accept = "application/json, text/event-stream",
                            ["mcp-session-id"] = sid } }, {}, sr.io)
            done = true
            got:set()
        end)
        coroutine.resume(co)
        local sreq
        for _ = 1, 50 do
            for _, ev in ipairs(sr.events) do
                if ev.method == "sampling/createMessage" then sreq = ev end
            end
            if sreq or done then break end
            got:wait(200)
        end
        check(target .. ".sampling.relayed", sreq and type(sreq.id) == "string"
              and sreq.id:find("^agw_" .. target .. "_") ~= nil, sreq and json.encode(sreq) or sr.body)
        if sreq then
            local a = post(b, { jsonrpc = "2.0", id = sreq.id, result = { role = "assistant",
                content = { type = "text", text = "sampled-" .. target }, model = "m",
                stopReason = "endTurn" } }, sid)
            check(target .. ".sampling.answer_202", a.status == 202, a.status)
        end
        for _ = 1, 50 do
            if done then break end
            got:wait(200)
        end
        local final = sr.events[#sr.events] or (sr.body and json.decode(sr.body))
        check(target .. ".sampling.result", final and final.id == 20 and final.result and
              json.encode(final.result):find("sampled-" .. target, 1, true) ~= nil,
              final and json.encode(final))
    end

    -- the GET stream carries server messages not tied to a request, from both targets
    local g = new_io()
    local gev = lg.http.event()
    local gdone = false
    g.on_write = function() gev:set() end
    local gco = coroutine.create(function()
        b:handle({ method = "GET", path = "/mcp", headers = { accept = "text/event-stream",
                                                              ["mcp-session-id"] = sid } }, {}, g.io)
        gdone = true
    end)
    coroutine.resume(gco)
    check("get.stream_open", g.status == 200 and g.streaming and
          g.headers["content-type"] == "text/event-stream", g.status)
    lg.http.sleep(300) -- the upstream GET of the HTTP target connects
    post(b, rpc(12, "tools/call", { name = "web_toggle-simulated-logging", arguments = {} }), sid)
    local logs = 0
    for _ = 1, 20 do
        logs = 0
        for _, ev in ipairs(g.events) do
            if ev.method == "notifications/message" then logs = logs + 1 end
        end
        if logs >= 1 then break end
        gev:wait(200)
    end
    check("get.http_target_messages", logs >= 1, json.encode(g.events))
    -- a stdio child has one stream: a notification while one request is in flight goes with
    -- that request's answer
    local lt = post(b, rpc(13, "tools/call", { name = "local_toggle-simulated-logging",
                                              arguments = {} }), sid)
    local on_post = 0
    for _, ev in ipairs(lt.events) do
        if ev.method == "notifications/message" then on_post = on_post + 1 end
    end
    check("stdio.notification_with_request", on_post == 1 and lt.msg.id == 13,
          json.encode(lt.events))
    post(b, rpc(14, "tools/call", { name = "local_toggle-simulated-logging", arguments = {} }), sid)
    post(b, rpc(15, "tools/call", { name = "web_toggle-simulated-logging", arguments = {} }), sid)

    local unknown = post(b, rpc(10, "tools/call", { name = "nosuch_echo" }), sid)
    check("mux.unknown_target", unknown.msg and unknown.msg.error ~= nil, unknown.body)
    local sess = b.sessions[sid]
    local pid = sess and sess.conns["local"].proc and sess.conns["local"].proc:pid()
    local del = new_io()
    b:handle({ method = "DELETE", path = "/mcp", headers = { ["mcp-session-id"] = sid } }, {},
             del.io)
    lg.http.sleep(300)
    local alive = pid and os.execute("kill -0 " .. pid .. " 2>/dev/null")
    check("mux.delete_kills_stdio", del.status == 200 and pid and not alive, pid)
    for _ = 1, 10 do
        if gdone then break end
        lg.http.sleep(100)
    end
    check("get.ends_with_session", gdone and g.ended)
end

-- ---- E: trace context reaches a stdio target in params._meta ----
do
    local script = [[
const rl = require('readline').createInterface({ input: process.stdin });
rl.on('line', (l) => {
  const m = JSON.parse(l);
  if (m.id === undefined) return;
  let result = {};
  if (m.method === 'initialize') {
    result = { protocolVersion: '2025-06-18', capabilities: { tools: {} },
               serverInfo: { name: 'meta-echo', version: '1' } };
  } else if (m.method === 'tools/call') {
    result = { content: [{ type: 'text', text: JSON.stringify(m.params._meta || null) }] };
  }
  process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, result }) + '\n');
});
]]
    local conf = { targets = { { name = "meta", stdio = { cmd = NODE, args = { "-e", script } } } } }
    local b = assert(mcp.new_backend(conf, nil, { lg = lg }))
    local sid = initialize(b)
    local tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    local c = post(b, rpc(2, "tools/call", { name = "x", _meta = { progressToken = 5 } }), sid, nil,
                   { traceparent = tp })
    local meta = c.msg and c.msg.result and json.decode(c.msg.result.content[1].text)
    check("stdio.trace_in_meta", meta and meta.traceparent == tp and meta.progressToken == 5,
          c.body)
    local ids = {}
    for _ = 1, 2 do
        local rec = { trace_id = string.rep("1", 32), span_id = string.rep("2", 16), sampled = true }
        local d = post(b, rpc(3, "tools/call", { name = "x" }), sid, nil, rec)
        local m = d.msg and d.msg.result and json.decode(d.msg.result.content[1].text)
        ids[#ids + 1] = m and m.traceparent
    end
    check("stdio.trace_from_ids", ids[1] == "00-" .. string.rep("1", 32) .. "-" ..
          string.rep("2", 16) .. "-01", ids[1])
    b:close()
end

-- ---- C: a legacy SSE upstream ----
do
    local conf = { targets = { { name = "old", sse = { host = SSE_URL } } } }
    local b = assert(mcp.new_backend(conf, nil, { lg = lg }))
    local sid, r = initialize(b)
    check("sse_upstream.initialize", r.status == 200 and sid ~= nil, r.body)
    local c = post(b, rpc(2, "tools/call", { name = "echo", arguments = { message = "legacy" } }),
                   sid)
    local text = c.msg and c.msg.result and c.msg.result.content[1].text
    check("sse_upstream.echo", text == "Echo: legacy", text or c.body)
    b:close()
end

-- ---- D: legacy SSE downstream (GET /sse + POST ?sessionId=) ----
do
    local conf = { targets = { { name = "everything", mcp = { host = HTTP_URL } } } }
    local b = assert(mcp.new_backend(conf, nil, { lg = lg }))
    local g = new_io()
    local got = lg.http.event()
    g.on_write = function() got:set() end
    local co = coroutine.create(function()
        b:handle({ method = "GET", path = "/sse", headers = { accept = "text/event-stream" } }, {},
                 g.io)
    end)
    coroutine.resume(co)
    local endpoint = g.chunks[1] and g.chunks[1]:match("event: endpoint\ndata: ([^\n]+)")
    check("sse_downstream.endpoint", endpoint and endpoint:find("^/sse%?sessionId=") ~= nil,
          g.chunks[1])
    local query = endpoint and endpoint:match("%?(.*)$")
    local function lpost(msg)
        local r = new_io()
        b:handle({ method = "POST", path = "/sse", query = query,
                   headers = { ["content-type"] = "application/json" }, body = json.encode(msg) },
                 {}, r.io)
        return r
    end
    local a = lpost(rpc(1, "initialize", INIT))
    check("sse_downstream.post_202", a.status == 202, a.status)
    lpost({ jsonrpc = "2.0", method = "notifications/initialized" })
    lpost(rpc(2, "tools/call", { name = "echo", arguments = { message = "down" } }))
    for _ = 1, 20 do
        if #g.events >= 2 then break end
        got:wait(200)
    end
    local e1, e2 = g.events[1], g.events[2]
    check("sse_downstream.initialize_event", e1 and e1.id == 1 and e1.result ~= nil,
          e1 and json.encode(e1))
    check("sse_downstream.echo_event", e2 and e2.id == 2 and e2.result and
          e2.result.content[1].text == "Echo: down", e2 and json.encode(e2))
    g.closed_by_client = true
    b:close()
end

io.stdout:write('{"done":true}\n')
