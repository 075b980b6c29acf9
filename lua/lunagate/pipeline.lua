-- lunagate/pipeline.lua -- plugin chains per route, runtime options, and Lua phase runners
-- SPDX-License-Identifier: MIT
--
-- build() is what src/luart.c calls once per Lua state: it loads the plugins the config uses
-- (lunagate.plugins), and returns one chain per route that has plugins (global ones included,
-- highest priority first). luart.c then calls the phase functions itself, from C. The runners
-- at the bottom (M.access, M.body_filter, ...) follow the same rules in plain Lua, for unit
-- specs and for Lua code that wants to drive a chain.

local plugins = require "lunagate.plugins"

local M = {}

-- ---- Runtime options ----

local UNITS = {
    [""] = 1, b = 1,
    k = 1000, kb = 1000, ki = 1024, kib = 1024,
    m = 1000 ^ 2, mb = 1000 ^ 2, mi = 1024 ^ 2, mib = 1024 ^ 2,
    g = 1000 ^ 3, gb = 1000 ^ 3, gi = 1024 ^ 3, gib = 1024 ^ 3,
}

-- "128Mi", "64m", "1048576" or 1048576 -> bytes (integer), or nil.
function M.parse_size(v)
    if math.type(v) == "integer" then
        return v >= 0 and v or nil
    end
    if type(v) == "number" then
        return math.tointeger(v)
    end
    if type(v) ~= "string" then
        return nil
    end
    local num, unit = v:lower():match("^%s*(%d+%.?%d*)%s*(%a*)%s*$")
    local mult = unit and UNITS[unit]
    if not num or not mult then
        return nil
    end
    return math.tointeger(math.floor(tonumber(num) * mult))
end

-- Reads config.plugins.{budget, memoryLimit, shared}. Returns
--   { instructions = int, memory = bytes, shared = { [name] = { bytes = int, entries = int } } }
-- or nil and "config.plugins.<key>: message".
function M.options(config)
    local b = plugins.plugins_block(config)
    local out = { instructions = 10000000, memory = 128 * 1024 * 1024, shared = {} }
    if b == nil then
        return out
    end
    if type(b) ~= "table" then
        return nil, "config.plugins: expected a mapping"
    end
    local known = { paths = true, global = true, shared = true, budget = true, memoryLimit = true }
    for k in pairs(b) do
        if not known[k] then
            return nil, "config.plugins." .. tostring(k)
                .. ": unknown key (known: paths, global, shared, budget, memoryLimit)"
        end
    end
    if b.budget ~= nil then
        local ins = type(b.budget) == "table" and b.budget.instructions or b.budget
        ins = type(ins) == "number" and math.tointeger(ins) or nil
        if not ins then
            return nil, "config.plugins.budget.instructions: expected an integer"
        end
        if ins < 1000 then
            return nil, "config.plugins.budget.instructions: must be at least 1000"
        end
        out.instructions = ins
    end
    if b.memoryLimit ~= nil then
        local m = M.parse_size(b.memoryLimit)
        if not m then
            return nil, "config.plugins.memoryLimit: expected a size such as 134217728 or \"128Mi\""
        end
        if m < 4 * 1024 * 1024 then
            return nil, "config.plugins.memoryLimit: must be at least 4Mi"
        end
        out.memory = m
    end
    if b.shared ~= nil then
        if type(b.shared) ~= "table" then
            return nil, "config.plugins.shared: expected a mapping of name -> {size, maxEntries}"
        end
        for name, spec in pairs(b.shared) do
            local p = "config.plugins.shared." .. tostring(name)
            if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
                return nil, p .. ": dictionary names are identifiers (letters, digits, _)"
            end
            if type(spec) ~= "table" then
                spec = { size = spec }
            end
            for k in pairs(spec) do
                if k ~= "size" and k ~= "maxEntries" then
                    return nil, p .. "." .. tostring(k) .. ": unknown key (known: size, maxEntries)"
                end
            end
            local bytes = spec.size ~= nil and M.parse_size(spec.size) or 0
            if not bytes then
                return nil, p .. ".size: expected a size such as 1048576 or \"1Mi\""
            end
            local entries = spec.maxEntries or 0
            if math.type(entries) ~= "integer" or entries < 0 then
                return nil, p .. ".maxEntries: expected a non-negative integer"
            end
            if bytes == 0 and entries == 0 then
                bytes = 1024 * 1024
            end
            out.shared[name] = { bytes = bytes, entries = entries }
        end
    end
    return out
end

-- ---- Chains ----

local function sort_entries(entries)
    table.sort(entries, function(a, b) return a.record.priority > b.record.priority end)
end

-- Returns {
--   plugins = { { name, file, module, priority, index, conf = conf of first attachment } },
--   chains  = { { { index, name, module, conf }, ... } },   -- highest priority first
--   routes  = { [route.key] = chain number, [listener.key .. "/" .. route.key] = chain number },
--   default = chain number of the global plugins alone, or nil,
-- } or nil and an error message naming the plugin file and config path.
function M.build(config, opts)
    local reg, err = plugins.load(config, opts)
    if not reg then
        return nil, err
    end
    local chains, routes = {}, {}
    local function entry(b)
        return { index = b.record.index, name = b.record.name, module = b.record.module,
                 conf = b.conf }
    end
    local function add_chain(bound)
        sort_entries(bound)
        local c = {}
        for i, b in ipairs(bound) do
            c[i] = entry(b)
        end
        chains[#chains + 1] = c
        return #chains
    end
    local default
    if #reg.global > 0 then
        local copy = {}
        for i, b in ipairs(reg.global) do
            copy[i] = b
        end
        default = add_chain(copy)
    end
    for _, r in ipairs(reg.routes) do
        local id = default
        if #r.entries > 0 then
            -- a route's own attachment replaces a global one of the same plugin
            local own = {}
            for _, b in ipairs(r.entries) do
                own[b.record.name] = true
            end
            local bound = {}
            for _, b in ipairs(reg.global) do
                if not own[b.record.name] then
                    bound[#bound + 1] = b
                end
            end
            local seen = {}
            for _, b in ipairs(r.entries) do
                if seen[b.record.name] then
                    return nil, string.format("%s: plugin '%s' attached twice", b.path, b.record.name)
                end
                seen[b.record.name] = true
                bound[#bound + 1] = b
            end
            id = add_chain(bound)
        end
        local key = r.route.key or r.route.name
        if id and key then
            if routes[key] == nil then
                routes[key] = id
            end
            if r.listener and r.listener.key then
                routes[r.listener.key .. "/" .. key] = id
            end
        end
    end
    -- init_worker gets the conf of each plugin's first attachment
    local first = {}
    for _, b in ipairs(reg.global) do
        first[b.record.name] = first[b.record.name] or b.conf
    end
    for _, r in ipairs(reg.routes) do
        for _, b in ipairs(r.entries) do
            first[b.record.name] = first[b.record.name] or b.conf
        end
    end
    local list = {}
    for i, rec in ipairs(reg.list) do
        list[i] = { name = rec.name, file = rec.file, module = rec.module, priority = rec.priority,
                    index = rec.index, conf = first[rec.name] }
    end
    return { plugins = list, chains = chains, routes = routes, default = default }
end

-- ---- Lua phase runners (same semantics as luart.c) ----
-- Errors raise "plugin=<name> phase=<phase>: <message>".

local states = setmetatable({}, { __mode = "k" }) -- ctx -> { [plugin index] = ctx.plugin }

local function call(e, phase, ctx, ...)
    local st = states[ctx]
    if not st then
        st = {}
        states[ctx] = st
    end
    st[e.index] = st[e.index] or {}
    ctx.plugin = st[e.index]
    local res = table.pack(pcall(e.module[phase], e.conf, ctx, ...))
    ctx.plugin = nil
    if not res[1] then
        error(string.format("plugin=%s phase=%s: %s", e.name, phase, tostring(res[2])), 0)
    end
    return table.unpack(res, 2, res.n)
end

-- Runs access; returns status, body, headers when a plugin answered, else nothing.
function M.access(chain, ctx)
    for _, e in ipairs(chain) do
        if e.module.access then
            local status, body, headers = call(e, "access", ctx)
            if status ~= nil then
                if math.type(status) ~= "integer" or status < 100 or status > 599 then
                    error(string.format("plugin=%s phase=access: bad status %s", e.name,
                        tostring(status)), 0)
                end
                return status, body, headers
            end
        end
    end
end

function M.header_filter(chain, ctx)
    for _, e in ipairs(chain) do
        if e.module.header_filter then
            call(e, "header_filter", ctx)
        end
    end
end

-- Returns the chunk to send (possibly replaced), or nil when a plugin dropped it.
-- A plugin returning nothing leaves it as is; returning nil or "" drops it.
function M.body_filter(chain, ctx, chunk, eof)
    local dropped = false
    for _, e in ipairs(chain) do
        if e.module.body_filter then
            if dropped and not eof then
                break
            end
            local res = table.pack(call(e, "body_filter", ctx, dropped and "" or chunk, eof))
            if res.n > 0 then
                local v = res[1]
                if type(v) == "string" and v ~= "" then
                    chunk, dropped = v, false
                elseif v == nil or v == false or v == "" then
                    dropped = true
                else
                    error(string.format("plugin=%s phase=body_filter: returned a %s", e.name,
                        type(v)), 0)
                end
            end
        end
    end
    if dropped then
        return nil
    end
    return chunk
end

function M.log(chain, ctx)
    local first_err
    for _, e in ipairs(chain) do
        if e.module.log then
            local ok, err = pcall(call, e, "log", ctx)
            first_err = first_err or (not ok and err or nil)
        end
    end
    if first_err then
        error(first_err, 0)
    end
end

return M
