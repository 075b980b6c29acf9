-- spec/helpers/fake_lunagate.lua -- an in-memory `lunagate` module for busted units
-- SPDX-License-Identifier: MIT
--
-- Usage in a spec (lpath includes ./spec/?.lua):
--   local fake = require "helpers.fake_lunagate"
--   local lg = fake.install()                  -- package.loaded.lunagate = lg
--   fake.begin("access", { method = "POST", path = "/v1/chat/completions",
--                          headers = { ["content-type"] = "application/json" }, body = "{}" })
--   ... call plugin.access(conf, fake.ctx) ...
--   assert.equal("x", fake.request.headers["x-added"]); assert.same({...}, fake.logs)
--   fake.uninstall()
--
-- Same surface and error rules as the C module (src/lapi*.c): wrong phase raises
-- "<fn>: not allowed in phase '<phase>'", runtime failures return nil, err. Differences: lg.re
-- uses Lua patterns, not PCRE (fine for literal words; use the C tests for regex semantics);
-- the clock is fake (fake.advance(seconds)); json encodes "/" as "\/" (lua-cjson).

local cjson = require "cjson.safe"

local M = {}

local ALL = { init = true, init_worker = true, access = true, header_filter = true,
              body_filter = true, log = true }
local REQ = { access = true, header_filter = true, body_filter = true, log = true }

local function check_phase(allowed, fname)
    if not allowed[M.phase] then
        error(string.format("%s: not allowed in phase '%s'", fname, M.phase), 3)
    end
end

local function argcheck(cond, n, fname, msg)
    if not cond then
        error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
    end
end

-- ---- pure-Lua SHA-256 / HMAC / base64 (slow, correct; for tests only) ----

local K = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}

local function rotr(x, n)
    return ((x >> n) | (x << (32 - n))) & 0xffffffff
end

local function sha256(msg)
    local h = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19 }
    local len = #msg
    msg = msg .. "\128" .. string.rep("\0", (55 - len) % 64) .. string.pack(">I8", len * 8)
    local w = {}
    for chunk = 1, #msg, 64 do
        for i = 0, 15 do
            w[i] = string.unpack(">I4", msg, chunk + i * 4)
        end
        for i = 16, 63 do
            local s0 = rotr(w[i - 15], 7) ~ rotr(w[i - 15], 18) ~ (w[i - 15] >> 3)
            local s1 = rotr(w[i - 2], 17) ~ rotr(w[i - 2], 19) ~ (w[i - 2] >> 10)
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & 0xffffffff
        end
        local a, b, c, d, e, f, g, hh = table.unpack(h)
        for i = 0, 63 do
            local S1 = rotr(e, 6) ~ rotr(e, 11) ~ rotr(e, 25)
            local ch = (e & f) ~ ((~e) & g)
            local t1 = (hh + S1 + ch + K[i + 1] + w[i]) & 0xffffffff
            local S0 = rotr(a, 2) ~ rotr(a, 13) ~ rotr(a, 22)
            local maj = (a & b) ~ (a & c) ~ (b & c)
            local t2 = (S0 + maj) & 0xffffffff
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & 0xffffffff, c, b, a, (t1 + t2) & 0xffffffff
        end
        local v = { a, b, c, d, e, f, g, hh }
        for i = 1, 8 do
            h[i] = (h[i] + v[i]) & 0xffffffff
        end
    end
    return string.pack(">I4I4I4I4I4I4I4I4", table.unpack(h))
end

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function hmac_sha256(key, data)
    if #key > 64 then
        key = sha256(key)
    end
    key = key .. string.rep("\0", 64 - #key)
    local ipad = key:gsub(".", function(c) return string.char(c:byte() ~ 0x36) end)
    local opad = key:gsub(".", function(c) return string.char(c:byte() ~ 0x5c) end)
    return sha256(opad .. sha256(ipad .. data))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64encode(s, url)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = (a << 16) | ((b or 0) << 8) | (c or 0)
        local q = {}
        for j = 1, 4 do
            local idx = (n >> (6 * (4 - j))) & 63
            q[j] = B64:sub(idx + 1, idx + 1)
        end
        if not b then q[3] = "=" end
        if not c then q[4] = "=" end
        out[#out + 1] = table.concat(q)
    end
    local r = table.concat(out)
    if url then
        r = r:gsub("=+$", ""):gsub("[+/]", { ["+"] = "-", ["/"] = "_" })
    end
    return r
end

local function b64decode(s)
    s = s:gsub("=+$", ""):gsub("[-_]", { ["-"] = "+", ["_"] = "/" })
    if s:find("[^%w+/]") or #s % 4 == 1 then
        return nil, "invalid base64"
    end
    local out, acc, bits = {}, 0, 0
    for i = 1, #s do
        acc = (acc << 6) | (B64:find(s:sub(i, i), 1, true) - 1)
        bits = bits + 6
        if bits >= 8 then
            bits = bits - 8
            out[#out + 1] = string.char((acc >> bits) & 0xff)
        end
    end
    return table.concat(out)
end

-- ---- json with integers kept ----

local function integerize(v)
    if type(v) == "number" and math.type(v) == "float" and v == math.floor(v)
        and math.abs(v) <= 2 ^ 53 then
        return math.tointeger(v)
    end
    if type(v) == "table" then
        for k, x in pairs(v) do
            v[k] = integerize(x)
        end
    end
    return v
end

-- ---- building the module ----

local function lower_headers(h)
    local out = {}
    for k, v in pairs(h or {}) do
        out[k:lower()] = v
    end
    return out
end

function M.build()
    local lg = { version = "0.0.0-fake", worker_id = 0 }

    lg.log = {}
    for _, lvl in ipairs({ "err", "warn", "info", "debug" }) do
        lg.log[lvl] = function(...)
            local parts = table.pack(...)
            for i = 1, parts.n do
                parts[i] = tostring(parts[i])
            end
            M.logs[#M.logs + 1] = { level = lvl, msg = table.concat(parts, "", 1, parts.n),
                                    plugin = M.plugin }
        end
    end
    function lg.log.set_field(k, v)
        argcheck(type(k) == "string", 1, "set_field", "string expected, got " .. type(k))
        check_phase(REQ, "set_field")
        M.rec.fields = M.rec.fields or {}
        for _, kv in ipairs(M.rec.fields) do
            if kv[1] == k then
                kv[2] = v
                return
            end
        end
        M.rec.fields[#M.rec.fields + 1] = { k, v }
    end

    lg.time = {
        now = function() return M.clock end,
        now_us = function() return math.floor(M.clock * 1e6) end,
        monotonic = function() return M.mono end,
        monotonic_us = function() return math.floor(M.mono * 1e6) end,
        format = function(us)
            us = us or math.floor(M.clock * 1e6)
            return os.date("!%Y-%m-%dT%H:%M:%S", us // 1000000) .. string.format(".%06dZ", us % 1000000)
        end,
    }
    lg.now = lg.time.now

    lg.json = {
        null = cjson.null,
        empty_array = cjson.empty_array or setmetatable({}, { __name = "empty_array" }),
        array_mt = cjson.array_mt or {},
        decode = function(s)
            argcheck(type(s) == "string", 1, "decode", "string expected, got " .. type(s))
            local v, err = cjson.decode(s)
            if v == nil and err then
                return nil, err
            end
            return integerize(v)
        end,
        encode = function(v)
            return cjson.encode(v)
        end,
    }

    lg.crypto = {
        sha256 = sha256,
        sha256_hex = function(s) return hex(sha256(s)) end,
        hmac_sha256 = hmac_sha256,
        hmac_sha256_hex = function(k, d) return hex(hmac_sha256(k, d)) end,
        hex = hex,
        base64_encode = b64encode,
        base64_decode = b64decode,
        random_bytes = function(n)
            local t = {}
            for i = 1, n do
                t[i] = string.char(math.random(0, 255))
            end
            return table.concat(t)
        end,
        random_hex = function(n) return hex(lg.crypto.random_bytes(n)) end,
    }

    -- Lua-pattern approximation of lg.re (see the header note)
    local function prep(s, pat, flags)
        if flags and flags:find("i") then
            return s:lower(), pat:lower()
        end
        return s, pat
    end
    lg.re = {
        match = function(s, pat, flags, init)
            local s2, p2 = prep(s, pat, flags)
            local r = table.pack(s2:find(p2, init))
            if not r[1] then
                return nil
            end
            local m = { [0] = s:sub(r[1], r[2]) }
            for i = 3, r.n do
                m[i - 2] = r[i]
            end
            return m
        end,
        find = function(s, pat, flags, init)
            local s2, p2 = prep(s, pat, flags)
            local a, b = s2:find(p2, init)
            return a, b
        end,
        gsub = function(s, pat, repl)
            if type(repl) == "string" then
                repl = repl:gsub("%$(%d)", "%%%1")
            end
            return s:gsub(pat, repl)
        end,
        split = function(s, pat)
            local out, pos = {}, 1
            while true do
                local a, b = s:find(pat, pos)
                if not a or b < a then
                    break
                end
                out[#out + 1] = s:sub(pos, a - 1)
                pos = b + 1
            end
            out[#out + 1] = s:sub(pos)
            return out
        end,
    }

    -- shared dictionaries: fake.declare(name, max_entries)
    lg.shared = setmetatable({}, {
        __index = function(_, name)
            error("lg.shared." .. tostring(name)
                .. ": no such dictionary (declare it under config.plugins.shared)", 2)
        end,
    })

    lg.metrics = {
        counter = function(name, help, labels)
            local c = { name = name, help = help, labels = labels, values = {} }
            function c:inc(n, lv)
                local k = table.concat(lv or {}, ",")
                self.values[k] = (self.values[k] or 0) + (n or 1)
            end
            M.metrics[name] = c
            return c
        end,
        histogram = function(name, help, labels, buckets)
            local h = { name = name, help = help, labels = labels, buckets = buckets, observed = {} }
            function h:observe(v, lv)
                self.observed[#self.observed + 1] = { v, lv }
            end
            M.metrics[name] = h
            return h
        end,
    }

    -- request / response, backed by fake.request and fake.response
    local R = {}
    R.get_method = function() check_phase(REQ, "get_method") return M.request.method end
    R.get_path = function() check_phase(REQ, "get_path") return M.request.path end
    R.get_query = function() check_phase(REQ, "get_query") return M.request.query end
    R.get_header = function(name)
        argcheck(type(name) == "string", 1, "get_header", "string expected, got " .. type(name))
        check_phase(REQ, "get_header")
        return M.request.headers[name:lower()]
    end
    R.get_headers = function() check_phase(REQ, "get_headers") return M.request.headers end
    R.set_header = function(name, value)
        argcheck(type(name) == "string", 1, "set_header", "string expected, got " .. type(name))
        check_phase({ access = true }, "set_header")
        M.request.headers[name:lower()] = value ~= nil and tostring(value) or nil
    end
    R.clear_header = function(name)
        check_phase({ access = true }, "clear_header")
        M.request.headers[name:lower()] = nil
    end
    R.set_path = function(p) check_phase({ access = true }, "set_path") M.request.path = p end
    R.set_method = function(m) check_phase({ access = true }, "set_method") M.request.method = m end
    R.get_body = function() check_phase(REQ, "get_body") return M.request.body end
    R.set_body = function(b)
        argcheck(type(b) == "string", 1, "set_body", "string expected, got " .. type(b))
        check_phase({ access = true }, "set_body")
        M.request.body = b
    end
    R.get_json = function()
        check_phase(REQ, "get_json")
        if not M.request.body or M.request.body == "" then
            return nil, "no body"
        end
        return lg.json.decode(M.request.body)
    end
    R.set_json = function(t)
        check_phase({ access = true }, "set_json")
        local s, err = lg.json.encode(t)
        if not s then
            return nil, err
        end
        M.request.body = s
        return true
    end
    lg.request = R

    local S = {}
    S.get_status = function() check_phase(REQ, "get_status") return M.response.status end
    S.set_status = function(s)
        check_phase({ access = true, header_filter = true }, "set_status")
        M.response.status = s
    end
    S.get_header = function(name)
        check_phase({ header_filter = true, body_filter = true, log = true }, "get_header")
        return M.response.headers[name:lower()]
    end
    S.get_headers = function() return M.response.headers end
    S.set_header = function(name, value)
        argcheck(type(name) == "string", 1, "set_header", "string expected, got " .. type(name))
        check_phase({ access = true, header_filter = true }, "set_header")
        M.response.headers[name:lower()] = value ~= nil and tostring(value) or nil
    end
    S.clear_header = function(name)
        check_phase({ access = true, header_filter = true }, "clear_header")
        M.response.headers[name:lower()] = nil
    end
    S.exit = function(status, body, headers)
        argcheck(math.type(status) == "integer", 1, "exit", "integer expected")
        check_phase({ access = true }, "exit")
        M.exited = { status = status, body = body, headers = headers }
        error(M.EXIT, 0)
    end
    lg.response = S

    lg.phase = function() return M.phase end
    lg.plugin_name = function() return M.plugin end
    setmetatable(lg, {
        __index = function(_, k)
            if k == "ctx" then
                return REQ[M.phase] and M.ctx or nil
            end
        end,
    })
    lg.schema = require "lunagate.schema"
    return lg
end

M.EXIT = setmetatable({}, { __tostring = function() return "lunagate exit" end })

-- Declares a shared dictionary (max_entries 0 = unlimited).
function M.declare(name, max_entries)
    local d = { data = {}, max = max_entries or 0 }
    local function live(k)
        local e = d.data[k]
        if e and e.exp and e.exp <= M.mono then
            d.data[k] = nil
            return nil
        end
        return e
    end
    local function count()
        local n = 0
        for k in pairs(d.data) do
            if live(k) then n = n + 1 end
        end
        return n
    end
    local function store(k, v, ttl)
        if not live(k) and d.max > 0 and count() >= d.max then
            return false, "no memory"
        end
        d.data[k] = { v = v, exp = ttl and ttl > 0 and M.mono + ttl or nil }
        return true
    end
    function d.get(_, k) local e = live(k) return e and e.v end
    function d.set(_, k, v, ttl)
        if v == nil then d.data[k] = nil return true end
        return store(k, v, ttl)
    end
    function d.add(_, k, v, ttl)
        if live(k) then return false, "exists" end
        return store(k, v, ttl)
    end
    function d.incr(_, k, n, init, ttl)
        local e = live(k)
        if not e then
            if init == nil then return nil, "not found" end
            local ok, err = store(k, init + n, ttl)
            if not ok then return nil, err end
            return init + n
        end
        if type(e.v) ~= "number" then return nil, "not a number" end
        e.v = e.v + n
        return e.v
    end
    function d.delete(_, k) d.data[k] = nil return true end
    function d.ttl(_, k)
        local e = live(k)
        if not e then return nil end
        return e.exp and (e.exp - M.mono) or 0
    end
    function d.flush_all() d.data = {} end
    function d.count() return count() end
    rawset(M.lg.shared, name, d)
    return d
end

-- Resets all state; returns the module table.
function M.reset()
    M.logs, M.metrics, M.rec = {}, {}, {}
    M.phase, M.plugin, M.exited = "init", nil, nil
    M.clock, M.mono = 1700000000.0, 1000.0
    M.ctx = {}
    M.request = { method = "GET", path = "/", headers = {}, body = nil }
    M.response = { status = 200, headers = {} }
    M.lg = M.build()
    return M.lg
end

-- Installs the fake as `lunagate`; returns it.
function M.install()
    M.saved = package.loaded["lunagate"]
    local lg = M.reset()
    package.loaded["lunagate"] = lg
    return lg
end

function M.uninstall()
    package.loaded["lunagate"] = M.saved
end

-- Starts a phase for a request: fake.begin("access", {method=, path=, headers=, body=}).
function M.begin(phase, request, response)
    assert(ALL[phase], "unknown phase " .. tostring(phase))
    M.phase = phase
    if request then
        M.request = { method = request.method or "GET", path = request.path or "/",
                      query = request.query, headers = lower_headers(request.headers),
                      body = request.body }
    end
    if response then
        M.response = { status = response.status or 200, headers = lower_headers(response.headers) }
    end
    return M.ctx
end

-- Calls plugin[phase](conf, ctx, ...) like luart does: returns the results, or
-- "exit", status, body, headers when the plugin called lg.response.exit.
function M.call(plugin, phase, conf, ...)
    M.begin(phase)
    M.plugin = plugin.name
    M.ctx.plugin = M.ctx.plugin or {}
    local res = table.pack(pcall(plugin[phase], conf, M.ctx, ...))
    M.plugin = nil
    if not res[1] then
        if res[2] == M.EXIT then
            return "exit", M.exited.status, M.exited.body, M.exited.headers
        end
        error(res[2], 0)
    end
    return table.unpack(res, 2, res.n)
end

-- Advances both clocks.
function M.advance(seconds)
    M.clock = M.clock + seconds
    M.mono = M.mono + seconds
end

M.reset()
return M
