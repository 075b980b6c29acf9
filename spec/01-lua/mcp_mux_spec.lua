-- mcp_mux_spec.lua -- multiplexing names (prefixes, URIs, server request ids), list merging and
-- mcpAuthorization rule semantics
-- SPDX-License-Identifier: MIT
local mux = require "lunagate.mcp.mux"
local authz = require "lunagate.mcp.authz"
local json = require "lunagate.mcp.json"

describe("mcp.mux", function()
    local targets = { time = true, everything = true, ["my-srv"] = true }

    it("prefixes only when conditional sees several targets, or always", function()
        assert.is_false(mux.prefixing("conditional", 1))
        assert.is_true(mux.prefixing("conditional", 2))
        assert.is_true(mux.prefixing(nil, 3))
        assert.is_true(mux.prefixing("always", 1))
        assert.is_false(mux.prefixing("never", 5))
    end)

    it("splits tool and prompt names at the first underscore", function()
        assert.equal("time_get_current_time", mux.name("time", "get_current_time", true))
        assert.same({ "time", "get_current_time" },
                    { mux.split_name("time_get_current_time", targets, true) })
        assert.same({ "my-srv", "x" }, { mux.split_name("my-srv_x", targets, true) })
        assert.is_nil(mux.split_name("nosuch_tool", targets, true))
        assert.is_nil(mux.split_name("notool", targets, true))
        assert.same({ nil, "echo" }, { mux.split_name("echo", targets, false) })
    end)

    it("prefixes resource URIs with target+", function()
        assert.equal("everything+test://static/1", mux.uri("everything", "test://static/1", true))
        assert.same({ "everything", "test://a+b" }, { mux.split_uri("everything+test://a+b", targets, true) })
        assert.is_nil(mux.split_uri("other+test://x", targets, true))
        assert.equal("test://x", mux.uri("everything", "test://x", false))
    end)

    it("rewrites server request ids so answers route back", function()
        assert.equal("agw_time_n_5", mux.server_request_id("time", 5))
        assert.equal("agw_time_s_abc_def", mux.server_request_id("time", "abc_def"))
        assert.same({ "time", 5 }, { mux.parse_server_request_id("agw_time_n_5", targets) })
        assert.same({ "time", "abc_def" }, { mux.parse_server_request_id("agw_time_s_abc_def", targets) })
        assert.same({ "my-srv", 0 }, { mux.parse_server_request_id("agw_my-srv_n_0", targets) })
        assert.is_nil(mux.parse_server_request_id("agw_nope_n_1", targets))
        assert.is_nil(mux.parse_server_request_id(7, targets))
        assert.is_nil(mux.parse_server_request_id("agw_time_n_x", targets))
    end)

    local parts = {
        { target = "time", result = { tools = json.array{
            { name = "now", inputSchema = { required = json.array() } },
                                                          { name = "shared" } } } },
        { target = "everything", result = { tools = json.array{ { name = "echo" }, { name = "shared" } },
                                            nextCursor = "c2" } },
    }

    it("merges lists with prefixes without touching the originals", function()
        local r = mux.merge("tools/list", parts, true)
        local names = {}
        for i, t in ipairs(r.tools) do names[i] = t.name end
        assert.same({ "time_now", "time_shared", "everything_echo", "everything_shared" }, names)
        assert.equal("now", parts[1].result.tools[1].name)
        assert.is_nil(r.nextCursor) -- merged lists are complete
        assert.truthy(json.encode(r):find('"required":[]', 1, true))
    end)

    it("drops duplicates when not prefixing and keeps a single target's cursor", function()
        local r = mux.merge("tools/list", parts, false)
        assert.equal(3, #r.tools)
        local one = mux.merge("tools/list", { parts[2] }, false)
        assert.equal("c2", one.nextCursor)
    end)

    it("filters items through keep(kind, item, target, name)", function()
        local seen = {}
        local r = mux.merge("tools/list", parts, true, function(kind, _, target, name)
            seen[#seen + 1] = kind .. ":" .. target .. ":" .. name
            return name ~= "shared"
        end)
        assert.equal(2, #r.tools)
        assert.same({ "tool:time:now", "tool:time:shared", "tool:everything:echo",
                      "tool:everything:shared" }, seen)
        local res = mux.merge("resources/list", { { target = "t", result = {
            resources = { { uri = "file:///a", name = "a" } } } } }, true)
        assert.equal("t+file:///a", res.resources[1].uri)
        local tpl = mux.merge("resources/templates/list", { { target = "t", result = {
            resourceTemplates = { { uriTemplate = "x://{id}", name = "x" } } } } }, true)
        assert.equal("t+x://{id}", tpl.resourceTemplates[1].uriTemplate)
        assert.equal(0, #mux.merge("prompts/list", { { target = "t", result = {} } }, true).prompts)
    end)
end)

describe("mcp.authz", function()
    local function act(name, target, jwt)
        return authz.activation({ jwt = jwt }, authz.item_vars("tool", name, target, "tools/call", "s1"))
    end

    it("allows everything without rules", function()
        assert.is_true(assert(authz.compile(nil)):allowed(act("x", "t")))
        assert.is_true(assert(authz.compile({})):allowed(act("x", "t")))
    end)

    it("plain strings are allow rules; no match denies", function()
        local p = assert(authz.compile({ 'mcp.tool.name == "echo"', 'jwt.sub == "admin"' }))
        assert.is_true(p:allowed(act("echo", "t")))
        assert.is_false(p:allowed(act("add", "t")))
        assert.is_true(p:allowed(act("add", "t", { sub = "admin" })))
    end)

    it("deny wins, require must hold, deny-only allows the rest", function()
        local p = assert(authz.compile({ { deny = 'mcp.tool.name == "rm"' } }))
        assert.is_false(p:allowed(act("rm", "t")))
        assert.is_true(p:allowed(act("ls", "t")))
        local q = assert(authz.compile({ { require = 'jwt.sub == "alice"' }, 'true' }))
        assert.is_true(q:allowed(act("ls", "t", { sub = "alice" })))
        assert.is_false(q:allowed(act("ls", "t", { sub = "bob" })))
        local r = assert(authz.compile({ { allow = "true" }, { deny = 'mcp.tool.target == "prod"' } }))
        assert.is_false(r:allowed(act("ls", "prod")))
        assert.is_true(r:allowed(act("ls", "dev")))
    end)

    it("evaluation errors count as false", function()
        -- jwt.sub is missing: the require fails (deny); the deny does not fire (allow)
        assert.is_false(assert(authz.compile({ { require = 'jwt.sub == "a"' } })):allowed(act("x", "t")))
        assert.is_true(assert(authz.compile({ { deny = 'jwt.sub == "a"' } })):allowed(act("x", "t")))
        assert.is_false(assert(authz.compile({ 'jwt.nope.deeper == 1' })):allowed(act("x", "t")))
    end)

    it("exposes the agentgateway names (methodName, sessionId) and the brief's (method)", function()
        local p = assert(authz.compile({ 'mcp.methodName == "tools/call" && '
            .. 'mcp.method == "tools/call" && mcp.sessionId == "s1"' }))
        assert.is_true(p:allowed(act("x", "t")))
    end)

    it("reports bad rules with their index", function()
        local _, err = authz.compile({ "true", "1 +" })
        assert.truthy(err:find("^rules%[2%]"))
        _, err = authz.compile({ { allow = "true", deny = "false" } })
        assert.truthy(err:find("one of allow, deny, require"))
        _, err = authz.compile({ 42 })
        assert.truthy(err:find("rules%[1%]"))
    end)
end)
