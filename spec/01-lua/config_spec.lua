-- config_spec.lua -- lunagate.config: validation, defaults, normalisation, error messages
-- SPDX-License-Identifier: MIT
--
-- Inputs are YAML text turned into tree + meta by `parse` below, which mirrors
-- src/config.c (same libyaml events, same positions) through lua-yaml's event parser;
-- busted cannot load the C module itself. spec/02-c/test_config.c runs the real C path.

local config = require "lunagate.config"
local yaml = require "yaml" -- lua-yaml, installed with busted (lua-cliargs depends on it)

local NULL = config.null
local FIX = "spec/fixtures/config/"

local function resolve(s)
    if s == "" or s == "~" or s == "null" or s == "Null" or s == "NULL" then
        return NULL
    elseif s == "true" or s == "True" or s == "TRUE" then
        return true
    elseif s == "false" or s == "False" or s == "FALSE" then
        return false
    elseif s:match("^[-+]?%d+$") then
        return math.tointeger(tonumber(s))
    elseif s:match("^[-+]?%d*%.?%d+[eE]?[-+]?%d*$") and tonumber(s) then
        return tonumber(s) + 0.0
    end
    return s
end

-- YAML text -> tree, meta (the shape lg_config_push_yaml produces).
local function parse(text)
    local meta = setmetatable({}, { __mode = "k" })
    local events = {}
    for ev in yaml.parser(text) do
        events[#events + 1] = ev
    end
    local i = 0
    local function nxt()
        i = i + 1
        return events[i]
    end
    local function pos(ev)
        return { ev.start_mark.line + 1, ev.start_mark.column + 1 }
    end
    local node
    node = function(ev)
        if ev.type == "SCALAR" then
            if ev.style == "PLAIN" then
                return resolve(ev.value)
            end
            return ev.value
        elseif ev.type == "MAPPING_START" then
            local t = {}
            local m = { line = ev.start_mark.line + 1, col = ev.start_mark.column + 1,
                        kind = "map", keys = {}, pos = {} }
            meta[t] = m
            while true do
                local k = nxt()
                if k.type == "MAPPING_END" then
                    break
                end
                t[k.value] = node(nxt())
                m.keys[#m.keys + 1] = k.value
                m.pos[k.value] = pos(k)
            end
            return t
        elseif ev.type == "SEQUENCE_START" then
            local t = {}
            local m = { line = ev.start_mark.line + 1, col = ev.start_mark.column + 1,
                        kind = "seq", pos = {} }
            meta[t] = m
            while true do
                local e = nxt()
                if e.type == "SEQUENCE_END" then
                    break
                end
                t[#t + 1] = node(e)
                m.pos[#t] = pos(e)
            end
            return t
        end
        error("spec helper: unsupported YAML event " .. ev.type)
    end
    local ev = nxt()
    while ev and (ev.type == "STREAM_START" or ev.type == "DOCUMENT_START") do
        ev = nxt()
    end
    if not ev or ev.type == "STREAM_END" then
        local t = {}
        meta[t] = { line = 1, col = 1, kind = "map", keys = {}, pos = {} }
        return t, meta
    end
    return node(ev), meta
end

local function load(text, filename)
    local tree, meta = parse(text)
    return config.load(tree, meta, filename or "config.yaml")
end

-- Loads `text` expecting an error; returns the message.
local function load_err(text)
    local conf, err = load(text)
    assert.is_nil(conf)
    assert.is_string(err)
    return err
end

-- A valid config around one route given as YAML lines (indented for the route item).
local function with_route(route)
    return "binds:\n- port: 3000\n  listeners:\n  - routes:\n" .. route
end

local function first_route(text)
    local conf, err = load(text)
    assert.is_nil(err)
    return conf.binds[1].listeners[1].routes[1]
end

describe("lunagate.config", function()
    describe("defaults", function()
        it("fills the config and frontendPolicies sections of an empty file", function()
            local conf = assert(load(""))
            assert.same({ statsAddr = "0.0.0.0:15020", readinessAddr = "0.0.0.0:15021",
                          adminAddr = "127.0.0.1:15000" }, conf.config)
            assert.same({ http = { maxBufferSize = 2097152 } }, conf.frontendPolicies)
            assert.same({}, conf.binds)
        end)

        it("treats a null document like an empty one", function()
            local conf = assert(config.load(NULL, {}, "c.yaml"))
            assert.same({}, conf.binds)
        end)

        it("normalises a minimal bind", function()
            local conf = assert(load(with_route("    - backends:\n      - host: 127.0.0.1:8080\n")))
            assert.same({ {
                port = 3000, key = "bind/3000",
                listeners = { {
                    name = "listener0", key = "bind/3000/listener0", hostname = "*",
                    protocol = "HTTP",
                    routes = { {
                        name = "route0", namespace = "default", key = "default/route0",
                        hostnames = {},
                        matches = { { path = { kind = "prefix", value = "/" }, headers = {},
                                      query = {} } },
                        policies = {},
                        backends = { { kind = "host", host = "127.0.0.1", port = 8080,
                                       address = "127.0.0.1:8080", name = "127.0.0.1:8080",
                                       weight = 1, policies = {} } },
                    } },
                } },
            } }, conf.binds)
        end)

        it("names listeners and routes by index", function()
            local conf = assert(load([[
binds:
- port: 3000
  listeners:
  - name: a
    routes:
    - name: x
      backends: [{host: "h:1"}]
  - routes:
    - backends: [{host: "h:1"}]
    - backends: [{host: "h:1"}]
      namespace: ns
      ruleName: rule
]]))
            local ls = conf.binds[1].listeners
            assert.equal("bind/3000/a", ls[1].key)
            assert.equal("default/x", ls[1].routes[1].key)
            assert.equal("listener1", ls[2].name)
            assert.equal("bind/3000/listener1", ls[2].key)
            assert.equal("route0", ls[2].routes[1].name)
            assert.equal("ns/route1", ls[2].routes[2].key)
            assert.equal("rule", ls[2].routes[2].ruleName)
        end)

        it("keeps later issues' sections as given", function()
            local conf = assert(load([[
config:
  tracing: {otlpEndpoint: "http://127.0.0.1:4317", randomSampling: true}
  logging: {format: json}
  metrics: {remove: [a]}
  plugins: {paths: [x]}
  session: {key: abc}
llm:
  models: [{name: smart, provider: openAI}]
]]))
            assert.same({ otlpEndpoint = "http://127.0.0.1:4317", randomSampling = true },
                conf.config.tracing)
            assert.same({ format = "json" }, conf.config.logging)
            assert.same({ remove = { "a" } }, conf.config.metrics)
            assert.same({ paths = { "x" } }, conf.config.plugins)
            assert.same({ key = "abc" }, conf.config.session)
            assert.equal("smart", conf.llm.models[1].name)
        end)

        it("turns the mcp: front door into a bind serving /mcp and /sse", function()
            local conf = assert(load([[
mcp:
  port: 3001
  targets: [{name: t, mcp: {host: "http://127.0.0.1:1/mcp"}}]
]]))
            assert.is_nil(conf.mcp)
            local b = conf.binds[1]
            assert.equal(3001, b.port)
            local r = b.listeners[1].routes[1]
            assert.equal("mcp", r.backends[1].kind)
            assert.equal("t", r.backends[1].mcp.targets[1].name)
            assert.same({ kind = "prefix", value = "/mcp" }, r.matches[1].path)
            assert.same({ kind = "prefix", value = "/sse" }, r.matches[2].path)
            local _, err = load("mcp:\n  prot: 3\n  targets: []\n")
            assert.matches("mcp: unknown key 'prot' %(did you mean 'port'%?%)", err)
        end)
    end)

    describe("agentgateway examples", function()
        it("loads binds-style traffic policies", function()
            local f = assert(io.open(FIX .. "agentgateway-traffic.yaml"))
            local text = f:read("a")
            f:close()
            local conf = assert(load(text, "agentgateway-traffic.yaml"))
            assert.equal(33554432, conf.frontendPolicies.http.maxBufferSize)
            local routes = conf.binds[1].listeners[1].routes
            assert.same({ "default/match-example", "default/policy-example",
                          "default/direct-response", "default/ip-rules" },
                { routes[1].key, routes[2].key, routes[3].key, routes[4].key })
            assert.same({ name = "param", kind = "exact", value = "hello" },
                routes[1].matches[1].query[1])
            local p = routes[2].policies
            assert.equal(100, p.cors.maxAge)
            assert.same({ attempts = 2, codes = { 429 } }, p.retry)
            assert.same({ requestTimeout = 1000 }, p.timeout)
            assert.same({ path = { full = "/new-path" }, authority = { full = "custom-host-header" } },
                p.urlRewrite)
            assert.equal(10, p.localRateLimit[1].maxTokens)
            assert.equal(0.5, p.requestMirror.percentage)
            assert.same({ status = 200, body = "hello!" }, routes[4].policies.directResponse)
            assert.is_string(routes[4].policies.authorization.rules[1])
            local mcp = conf.binds[2].listeners[1].routes[1].backends[1]
            assert.equal("mcp", mcp.kind)
            assert.equal("npx", mcp.mcp.targets[1].stdio.cmd)
        end)
    end)

    describe("config section", function()
        it("maps localhost to 127.0.0.1 and 'off' to false", function()
            local conf = assert(load("config:\n  adminAddr: localhost:15001\n"))
            assert.equal("127.0.0.1:15001", conf.config.adminAddr)
            conf = assert(load("config:\n  adminAddr: \"off\"\n  statsAddr: '[::1]:9'\n"))
            assert.is_false(conf.config.adminAddr)
            assert.equal("[::1]:9", conf.config.statsAddr)
        end)

        it("accepts workerThreads as an integer or auto", function()
            assert.equal(4, assert(load("config:\n  workerThreads: 4\n")).config.workerThreads)
            assert.is_nil(assert(load("config:\n  workerThreads: auto\n")).config.workerThreads)
            assert.equal("config.yaml:2:3: config.workerThreads: value 0 out of range (1..1024)",
                load_err("config:\n  workerThreads: 0\n"))
            assert.equal('config.yaml:2:3: config.workerThreads: expected integer or "auto", '
                .. "got boolean", load_err("config:\n  workerThreads: true\n"))
        end)

        it("rejects a bad address", function()
            assert.equal("config.yaml:2:3: config.statsAddr: bad address '15020' (expected "
                .. "ip:port, e.g. 127.0.0.1:15000)", load_err("config:\n  statsAddr: '15020'\n"))
        end)

        it("sets frontendPolicies.http.maxBufferSize", function()
            local conf = assert(load("frontendPolicies:\n  http:\n    maxBufferSize: 20971520\n"))
            assert.equal(20971520, conf.frontendPolicies.http.maxBufferSize)
            conf = assert(load("frontendPolicies:\n  tracing: {host: 'localhost:4317'}\n"))
            assert.equal(2097152, conf.frontendPolicies.http.maxBufferSize)
            assert.same({ host = "localhost:4317" }, conf.frontendPolicies.tracing)
        end)
    end)

    describe("error messages", function()
        it("names an unknown key with a suggestion (the issue's example)", function()
            local f = assert(io.open(FIX .. "unknown-key.yaml"))
            local text = f:read("a")
            f:close()
            assert.equal("config.yaml:14:9: binds[0].listeners[0].routes[0].backends[0]: "
                .. "unknown key 'hots' (did you mean 'host'?)", load_err(text))
        end)

        it("names an unknown key without a suggestion", function()
            assert.equal("config.yaml:3:3: config: unknown key 'zzzzz'",
                load_err("config:\n  statsAddr: 0.0.0.0:1\n  zzzzz: 1\n"))
            assert.equal("config.yaml:1:1: unknown key 'a\\nb'", load_err('"a\\nb": 1\n'))
        end)

        it("suggests at the top level and in config", function()
            assert.equal("config.yaml:1:1: unknown key 'bind' (did you mean 'binds'?)",
                load_err("bind: []\n"))
            assert.equal("config.yaml:2:3: config: unknown key 'statAddr' (did you mean "
                .. "'statsAddr'?)", load_err("config:\n  statAddr: 0.0.0.0:1\n"))
        end)

        it("reports wrong types", function()
            assert.equal("config.yaml:2:3: binds[0].port: expected integer, got string",
                load_err("binds:\n- port: '3000'\n  listeners: []\n"))
            assert.equal("config.yaml:3:3: binds[0].listeners: expected array, got object",
                load_err("binds:\n- port: 3000\n  listeners: {a: 1}\n"))
            assert.equal("config.yaml:1:1: binds: expected array, got string",
                load_err("binds: nope\n"))
            assert.equal("config.yaml:5:5: binds[0].listeners[0].hostname: expected string, "
                .. "got integer", load_err("binds:\n- port: 3000\n  listeners:\n  - name: a\n"
                .. "    hostname: 12\n"))
            assert.equal("config.yaml:2:3: binds[0].port: value 70000 out of range (1..65535)",
                load_err("binds:\n- port: 70000\n  listeners: []\n"))
        end)

        it("points a missing required key at the parent", function()
            assert.equal("config.yaml:2:3: binds[0]: missing required key 'port'",
                load_err("binds:\n- listeners: []\n"))
            assert.equal("config.yaml:2:3: binds[0]: missing required key 'listeners'",
                load_err("binds:\n- port: 1\n"))
        end)

        it("rejects a bad duration", function()
            assert.equal("config.yaml:8:11: binds[0].listeners[0].routes[0].policies.timeout."
                .. "requestTimeout: bad duration '10x' (expected e.g. \"10s\", \"100ms\", "
                .. "\"1m\", \"1.5s\")", load_err(with_route([[
    - backends: [{host: "h:1"}]
      policies:
        timeout:
          requestTimeout: 10x
]])))
            assert.equal("config.yaml:6:28: binds[0].listeners[0].routes[0].policies.timeout."
                .. "requestTimeout: expected duration string (e.g. \"10s\"), got integer",
                load_err(with_route([[
    - backends: [{host: "h:1"}]
      policies: {timeout: {requestTimeout: 10}}
]])))
        end)

        it("rejects a bad host:port", function()
            local msg = "bad host:port '%s' (expected addr:port, e.g. 127.0.0.1:8080 or [::1]:8080)"
            for _, bad in ipairs({ "127.0.0.1", "h:0", "h:65536", "::1:80", ":80", "h:x" }) do
                assert.equal("config.yaml:6:9: binds[0].listeners[0].routes[0].backends[0].host: "
                    .. msg:format(bad),
                    load_err(with_route("    - backends:\n      - host: '" .. bad .. "'\n")))
            end
            local b = first_route(with_route("    - backends:\n      - host: '[::1]:8080'\n"))
                .backends[1]
            assert.same({ "::1", 8080, "[::1]:8080" }, { b.host, b.port, b.address })
            b = first_route(with_route("    - backends:\n      - host: api.example.com:443\n"))
                .backends[1]
            assert.same({ "api.example.com", 443 }, { b.host, b.port })
        end)

        it("requires tls for HTTPS and readable files", function()
            assert.equal("config.yaml:4:5: binds[0].listeners[0]: tls (cert and key) is "
                .. "required when protocol is HTTPS",
                load_err("binds:\n- port: 443\n  listeners:\n  - protocol: HTTPS\n"))
            local err = load_err("binds:\n- port: 443\n  listeners:\n  - protocol: HTTPS\n"
                .. "    tls: {cert: /nonexistent/c.pem, key: " .. FIX .. "tls.key}\n")
            assert.matches("^config.yaml:5:11: binds%[0%]%.listeners%[0%]%.tls%.cert: cannot "
                .. "read file: /nonexistent/c%.pem: No such file or directory$", err)
            assert.equal("config.yaml:5:5: binds[0].listeners[0].tls: missing required key "
                .. "'key'", load_err("binds:\n- port: 443\n  listeners:\n  - protocol: HTTPS\n"
                .. "    tls: {cert: " .. FIX .. "tls.crt}\n"))
            local conf = assert(load("binds:\n- port: 443\n  listeners:\n  - protocol: HTTPS\n"
                .. "    tls: {cert: " .. FIX .. "tls.crt, key: " .. FIX .. "tls.key}\n"))
            local l = conf.binds[1].listeners[1]
            assert.equal("HTTPS", l.protocol)
            assert.same({ cert = FIX .. "tls.crt", key = FIX .. "tls.key" }, l.tls)
        end)

        it("rejects unsupported protocols and values with a hint", function()
            assert.equal("config.yaml:4:5: binds[0].listeners[0].protocol: protocol 'TCP' is "
                .. "not supported (supported: HTTP, HTTPS)",
                load_err("binds:\n- port: 1\n  listeners:\n  - protocol: TCP\n"))
            assert.equal("config.yaml:4:5: binds[0].listeners[0].protocol: expected one of: "
                .. "HTTP, HTTPS, got 'HTTPSS' (did you mean 'HTTPS'?)",
                load_err("binds:\n- port: 1\n  listeners:\n  - protocol: HTTPSS\n"))
        end)

        it("rejects duplicate route names within a listener", function()
            assert.equal("config.yaml:7:7: binds[0].listeners[0].routes[1]: duplicate route "
                .. "name 'a' (also used by routes[0])", load_err(with_route([[
    - name: a
      backends: [{host: "h:1"}]
    - name: a
      backends: [{host: "h:1"}]
]])))
            assert.equal("config.yaml:7:7: binds[0].listeners[0].routes[1]: duplicate route "
                .. "name 'route0' (also used by routes[0])", load_err(with_route([[
    - backends: [{host: "h:1"}]

    - name: route0
      backends: [{host: "h:1"}]
]])))
            -- same name in another namespace is fine
            assert(load(with_route([[
    - name: a
      backends: [{host: "h:1"}]
    - name: a
      namespace: other
      backends: [{host: "h:1"}]
]])))
        end)

        it("rejects duplicate listener names and bind ports", function()
            assert.equal("config.yaml:5:5: binds[0].listeners[1]: duplicate listener name 'l'",
                load_err("binds:\n- port: 1\n  listeners:\n  - name: l\n  - name: l\n"))
            assert.equal("config.yaml:3:3: binds[1]: duplicate port 1 (also used by binds[0])",
                load_err("binds:\n- {port: 1, listeners: []}\n- port: 1\n  listeners: []\n"))
        end)

        it("rejects unsupported agentgateway sections and null list items", function()
            assert.equal("config.yaml:1:1: services: services are not supported",
                load_err("services: []\n"))
            assert.equal("config.yaml:2:2: binds[0]: expected object, got null",
                load_err("binds:\n-\n"))
            assert.equal("config.yaml:2:3: frontendPolicies: unknown key 'htttp' (did you mean "
                .. "'http'?)", load_err("frontendPolicies:\n  htttp: {}\n"))
        end)

        it("treats null values as absent", function()
            local r = first_route(with_route("    - backends: [{host: 'h:1'}]\n      policies:\n"
                .. "      hostnames: ~\n      name:\n"))
            assert.same({}, r.policies)
            assert.same({}, r.hostnames)
            assert.equal("route0", r.name)
        end)

        it("rejects a route with neither backends nor directResponse", function()
            assert.equal("config.yaml:5:7: binds[0].listeners[0].routes[0]: route has neither "
                .. "backends nor a directResponse policy",
                load_err(with_route("    - name: r\n      hostnames: [a]\n")))
        end)

        it("checks backend kinds", function()
            assert.equal("config.yaml:6:9: binds[0].listeners[0].routes[0].backends[0]: backend "
                .. "needs one of 'host', 'ai' or 'mcp'",
                load_err(with_route("    - backends:\n      - weight: 2\n")))
            assert.equal("config.yaml:6:23: binds[0].listeners[0].routes[0].backends[0]: "
                .. "expected exactly one of host, ai, mcp, got both 'host' and 'mcp'",
                load_err(with_route("    - backends:\n      - {host: 'h:1', mcp: {}}\n")))
            assert.equal("config.yaml:6:9: binds[0].listeners[0].routes[0].backends[0].service: "
                .. "service backends are not supported",
                load_err(with_route("    - backends:\n      - service: {name: a, port: 1}\n")))
        end)

        it("keeps ai and mcp backends as given", function()
            local r = first_route(with_route([[
    - backends:
      - ai: {name: openai, provider: {openAI: {model: gpt}}}
        policies: {backendAuth: {key: sk-x}}
      - mcp: {targets: [{name: t, stdio: {cmd: x}}]}
        weight: 3
]]))
            assert.same({ kind = "ai", weight = 1, name = "openai",
                          ai = { name = "openai", provider = { openAI = { model = "gpt" } } },
                          policies = { backendAuth = { key = "sk-x" } } }, r.backends[1])
            assert.equal("mcp", r.backends[2].kind)
            assert.equal("default/route0/backend1", r.backends[2].name)
            assert.equal(3, r.backends[2].weight)
            assert.equal("t", r.backends[2].mcp.targets[1].name)
        end)
    end)

    describe("matches", function()
        it("normalises path, method, headers and query", function()
            local r = first_route(with_route([[
    - backends: [{host: "h:1"}]
      hostnames: ["*.example.com", a.b]
      matches:
      - path: {exact: /a}
        method: GET
        headers:
        - {name: X-Env, value: {exact: prod}}
        - {name: ":authority", value: {regex: "^a"}}
        query:
        - {name: Debug, value: {exact: "1"}}
      - path: {pathPrefix: /api}
      - path: {regex: "^/v[0-9]+"}
      - method: POST
]]))
            assert.same({ "*.example.com", "a.b" }, r.hostnames)
            assert.same({
                { path = { kind = "exact", value = "/a" }, method = "GET",
                  headers = { { name = "x-env", kind = "exact", value = "prod" },
                              { name = ":authority", kind = "regex", value = "^a" } },
                  query = { { name = "Debug", kind = "exact", value = "1" } } },
                { path = { kind = "prefix", value = "/api" }, headers = {}, query = {} },
                { path = { kind = "regex", value = "^/v[0-9]+" }, headers = {}, query = {} },
                { path = { kind = "prefix", value = "/" }, method = "POST", headers = {},
                  query = {} },
            }, r.matches)
        end)

        it("rejects two path kinds and unknown path keys", function()
            assert.equal("config.yaml:7:27: binds[0].listeners[0].routes[0].matches[0].path: "
                .. "expected exactly one of exact, pathPrefix, regex, got both 'exact' and "
                .. "'regex'", load_err(with_route([[
    - backends: [{host: "h:1"}]
      matches:
      - path: {exact: /a, regex: b}
]])))
            assert.equal("config.yaml:7:16: binds[0].listeners[0].routes[0].matches[0].path: "
                .. "unknown key 'prefix' (did you mean 'pathPrefix'?)", load_err(with_route([[
    - backends: [{host: "h:1"}]
      matches:
      - path: {prefix: /a}
]])))
            assert.equal("config.yaml:8:11: binds[0].listeners[0].routes[0].matches[0]."
                .. "headers[0]: missing required key 'value'", load_err(with_route([[
    - backends: [{host: "h:1"}]
      matches:
      - headers:
        - name: a
]])))
        end)
    end)

    describe("policies", function()
        local function policies(yaml_text)
            return first_route(with_route("    - backends: [{host: \"h:1\"}]\n      policies:\n"
                .. yaml_text)).policies
        end

        it("leaves unconfigured policies absent", function()
            assert.same({}, first_route(with_route("    - backends: [{host: 'h:1'}]\n"
                .. "      policies:\n")).policies)
        end)

        it("normalises header modifiers", function()
            local p = policies([[
        requestHeaderModifier:
          add: {X-A: "1", x-b: 2}
          set: {X-Set: v}
          remove: [X-Secret, Cookie]
        responseHeaderModifier:
          add:
          - {name: X-Out, value: o}
]])
            assert.same({
                add = { { name = "X-A", lname = "x-a", value = "1" },
                        { name = "x-b", lname = "x-b", value = "2" } },
                set = { { name = "X-Set", lname = "x-set", value = "v" } },
                remove = { "x-secret", "cookie" },
            }, p.requestHeaderModifier)
            assert.same({ add = { { name = "X-Out", lname = "x-out", value = "o" } } },
                p.responseHeaderModifier)
        end)

        it("rejects a bad header name and unknown modifier keys", function()
            assert.equal("config.yaml:8:17: binds[0].listeners[0].routes[0].policies."
                .. "requestHeaderModifier.add[\"a b\"]: invalid header name 'a b'", load_err(
                with_route("    - backends: [{host: \"h:1\"}]\n      policies:\n"
                    .. "        requestHeaderModifier:\n          add: {'a b': x}\n")))
            assert.equal("config.yaml:8:11: binds[0].listeners[0].routes[0].policies."
                .. "requestHeaderModifier: unknown key 'adds' (did you mean 'add'?)", load_err(
                with_route("    - backends: [{host: \"h:1\"}]\n      policies:\n"
                    .. "        requestHeaderModifier:\n          adds: {a: x}\n")))
        end)

        it("normalises urlRewrite", function()
            assert.same({ path = { prefix = "/v1" }, authority = { full = "api.x.com:443" } },
                policies("        urlRewrite: {path: {prefix: /v1}, authority: {full: "
                    .. "'api.x.com:443'}}\n").urlRewrite)
            assert.same({ path = { full = "/x" } },
                policies("        urlRewrite: {path: {full: /x}}\n").urlRewrite)
            assert.matches("urlRewrite.path: expected exactly one of full, prefix, got both",
                load_err(with_route("    - backends: [{host: \"h:1\"}]\n      policies:\n"
                    .. "        urlRewrite: {path: {full: /x, prefix: /y}}\n")), 1, true)
        end)

        it("normalises directResponse with defaults", function()
            local r = first_route(with_route("    - policies:\n        directResponse: "
                .. "{body: hi}\n"))
            assert.same({ status = 200, body = "hi" }, r.policies.directResponse)
            assert.same({}, r.backends)
            r = first_route(with_route("    - policies:\n        directResponse: {status: 404}\n"))
            assert.same({ status = 404, body = "" }, r.policies.directResponse)
            assert.matches("directResponse.status: value 99 out of range (100..599)",
                load_err(with_route("    - policies:\n        directResponse: {status: 99}\n")),
                1, true)
        end)

        it("turns timeouts into milliseconds", function()
            assert.same({ requestTimeout = 90000, backendRequestTimeout = 1500 },
                policies("        timeout: {requestTimeout: 1m30s, backendRequestTimeout: 1.5s}\n")
                    .timeout)
        end)

        it("normalises backendTLS", function()
            local p = policies("        backendTLS: {root: " .. FIX .. "tls.crt, hostname: "
                .. "api.x.com, insecure: false}\n")
            assert.same({ root = FIX .. "tls.crt", hostname = "api.x.com", insecure = false },
                p.backendTLS)
            assert.matches("policies.backendTLS.root: cannot read file: /nonexistent/ca.pem",
                load_err(with_route("    - backends: [{host: \"h:1\"}]\n      policies:\n"
                    .. "        backendTLS: {root: /nonexistent/ca.pem}\n")), 1, true)
            assert.matches("policies.backendTLS: cert and key must be set together",
                load_err(with_route("    - backends: [{host: \"h:1\"}]\n      policies:\n"
                    .. "        backendTLS: {cert: " .. FIX .. "tls.crt}\n")), 1, true)
        end)

        it("normalises retry with defaults", function()
            assert.same({ attempts = 1, codes = {} }, policies("        retry: {}\n").retry)
            assert.same({ attempts = 3, codes = { 429, 503 }, backoff = 250 },
                policies("        retry: {attempts: 3, codes: [429, 503], backoff: 250ms}\n")
                    .retry)
            assert.matches("policies.retry.codes[0]: value 42 out of range (100..599)",
                load_err(with_route("    - backends: [{host: \"h:1\"}]\n      policies:\n"
                    .. "        retry: {codes: [42]}\n")), 1, true)
        end)

        it("normalises cors with maxAge in seconds", function()
            assert.same({ allowCredentials = true, allowHeaders = { "content-type" },
                          allowMethods = { "GET", "POST" }, allowOrigins = { "*" },
                          exposeHeaders = { "Mcp-Session-Id" }, maxAge = 300 },
                policies([[
        cors:
          allowCredentials: true
          allowHeaders: [content-type]
          allowMethods: [GET, POST]
          allowOrigins: ["*"]
          exposeHeaders: [Mcp-Session-Id]
          maxAge: 5m
]]).cors)
            assert.same({ allowCredentials = false, allowHeaders = {}, allowMethods = {},
                          allowOrigins = {}, exposeHeaders = {} },
                policies("        cors: {}\n").cors)
        end)

        it("keeps plugins and later issues' policies as given", function()
            local p = policies([[
        plugins:
        - name: token-usage
          config: {label: team}
        ai: {routes: {"*": passthrough}}
        backendAuth: {key: secret}
        jwtAuth: {issuer: me}
]])
            assert.same({ { name = "token-usage", config = { label = "team" } } }, p.plugins)
            assert.same({ routes = { ["*"] = "passthrough" } }, p.ai)
            assert.same({ key = "secret" }, p.backendAuth)
            assert.same({ issuer = "me" }, p.jwtAuth)
        end)

        it("validates backend-level policies", function()
            local r = first_route(with_route([[
    - backends:
      - host: h:1
        policies:
          requestHeaderModifier: {set: {Host: x}}
          backendTLS: {hostname: x}
]]))
            assert.same({ requestHeaderModifier = { set = { { name = "Host", lname = "host",
                                                            value = "x" } } },
                          backendTLS = { hostname = "x" } }, r.backends[1].policies)
            assert.equal("config.yaml:8:11: binds[0].listeners[0].routes[0].backends[0]."
                .. "policies: unknown key 'timeout'", load_err(with_route([[
    - backends:
      - host: h:1
        policies:
          timeout: {requestTimeout: 1s}
]])))
        end)

        it("suggests policy names", function()
            assert.equal("config.yaml:7:9: binds[0].listeners[0].routes[0].policies: unknown "
                .. "key 'directRespons' (did you mean 'directResponse'?)", load_err(with_route(
                "    - backends: [{host: \"h:1\"}]\n      policies:\n        directRespons: {}\n")))
        end)
    end)

    describe("helpers", function()
        it("parses durations", function()
            local d = config.parse_duration
            assert.equal(10000, d("10s"))
            assert.equal(100, d("100ms"))
            assert.equal(60000, d("1m"))
            assert.equal(1500, d("1.5s"))
            assert.equal(90000, d("1m30s"))
            assert.equal(7200000, d("2h"))
            assert.equal(1, d("1000us"))
            assert.is_nil(d("10"))
            assert.is_nil(d(""))
            assert.is_nil(d("s"))
            assert.is_nil(d("10 parsecs"))
        end)

        it("suggests within edit distance 2", function()
            assert.equal("host", config.suggest("hots", { "weight", "host", "ai" }))
            assert.equal("host", config.suggest("HOST", { "host" }))
            assert.is_nil(config.suggest("zzzz", { "host", "weight" }))
        end)

        it("describes every schema field", function()
            local missing, seen = {}, {}
            local function walk(spec, path)
                if type(spec) ~= "table" or seen[spec] then
                    return
                end
                seen[spec] = true
                for _, f in ipairs(spec.fields or {}) do
                    local name, fs = next(f)
                    if not fs.description then
                        missing[#missing + 1] = path .. "." .. name
                    end
                    walk(fs, path .. "." .. name)
                end
                walk(spec.elements, path .. "[]")
            end
            walk(config.schema.root, "")
            assert.same({}, missing)
        end)

        it("validates a section schema on its own", function()
            local schema = { type = "record", fields = {
                { label = { type = "string", default = "team" } },
                { max = { type = "integer", between = { 1, 10 } } },
            } }
            assert.same({ label = "team", max = 3 }, config.validate(schema, { max = 3 }))
            local tree, meta = parse("plugin:\n  max: 11\n")
            local conf, err = config.validate(schema, tree.plugin, meta, "p.yaml",
                "routes[0].plugins[0].config")
            assert.is_nil(conf)
            assert.equal("p.yaml:2:3: routes[0].plugins[0].config.max: value 11 out of range "
                .. "(1..10)", err)
        end)
    end)
end)
