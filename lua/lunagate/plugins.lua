-- lunagate/plugins.lua -- plugin discovery, contract checks and config validation
-- SPDX-License-Identifier: MIT
--
-- A plugin named N is looked up in each directory D of config.plugins.paths, then in the
-- bundled plugins/ folder, as D/N.lua, D/N/init.lua, then D/<group>/N.lua and
-- D/<group>/N/init.lua for the groups below. The first file found wins, so a user folder can
-- replace a bundled plugin. Every problem is reported as a load-time error naming the file
-- (and, for plugin configs, the config path), never as a per-request surprise.

local schema = require "lunagate.schema"

local M = {}

M.GROUPS = { "policies", "providers", "telemetry", "logging", "mcp" }

-- Phase functions, in call order.
M.PHASES = { "init_worker", "access", "header_filter", "body_filter", "log" }

-- Other function fields a plugin may carry (provider hooks); names starting with "_" are
-- free for helpers. Any other function-valued field is taken for a misspelt phase.
M.HOOKS = { parse_request = true, parse_response = true, parse_event = true, format = true }

local PHASE_SET = {}
for _, p in ipairs(M.PHASES) do
    PHASE_SET[p] = true
end
M.PHASE_SET = PHASE_SET

local function exists(path)
    local f = io.open(path, "r")
    if f then
        f:close()
        return true
    end
    return false
end

-- Candidate files for `name` in `dir`, in search order.
function M.candidates(dir, name)
    local c = { dir .. "/" .. name .. ".lua", dir .. "/" .. name .. "/init.lua" }
    for _, g in ipairs(M.GROUPS) do
        c[#c + 1] = dir .. "/" .. g .. "/" .. name .. ".lua"
        c[#c + 1] = dir .. "/" .. g .. "/" .. name .. "/init.lua"
    end
    return c
end

-- Returns the file defining plugin `name`, or nil and the list of directories searched.
function M.find(name, dirs)
    if type(name) ~= "string" or not name:match("^[%w_%-%.]+$") or name:find("%.%.") then
        return nil, "bad plugin name '" .. tostring(name) .. "'"
    end
    for _, d in ipairs(dirs) do
        for _, f in ipairs(M.candidates(d, name)) do
            if exists(f) then
                return f
            end
        end
    end
    return nil, "searched " .. table.concat(dirs, ", ")
end

-- Checks the plugin contract. Returns true, or nil and a message (without the file name).
function M.check_contract(p)
    if type(p) ~= "table" then
        return nil, "a plugin must return a table (got " .. type(p) .. ")"
    end
    if type(p.name) ~= "string" or p.name == "" then
        return nil, "missing name (a non-empty string)"
    end
    if type(p.version) ~= "string" or p.version == "" then
        return nil, "plugin '" .. p.name .. "': missing version (a string such as \"1.0.0\")"
    end
    if math.type(p.priority) ~= "integer" then
        return nil, "plugin '" .. p.name .. "': priority must be an integer (got "
            .. (type(p.priority) == "number" and tostring(p.priority) or type(p.priority)) .. ")"
    end
    if type(p.schema) ~= "table" then
        return nil, "plugin '" .. p.name .. "': missing schema (a table, { fields = {} } for none)"
    end
    local ok, err = schema.check_schema(p.schema)
    if not ok then
        return nil, "plugin '" .. p.name .. "': bad schema: " .. err
    end
    local keys = {}
    for k in pairs(p) do
        keys[#keys + 1] = tostring(k)
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
        local v = p[k]
        if PHASE_SET[k] then
            if type(v) ~= "function" then
                return nil, "plugin '" .. p.name .. "': phase '" .. k .. "' must be a function"
            end
        elseif type(v) == "function" and not M.HOOKS[k] and k:sub(1, 1) ~= "_" then
            return nil, "plugin '" .. p.name .. "': unknown phase '" .. k .. "' (known: "
                .. table.concat(M.PHASES, ", ") .. ")"
        end
    end
    return true
end

-- Loads and checks one plugin file. Returns the plugin table, or nil and "FILE: message".
function M.load_file(path, expected_name)
    local chunk, err = loadfile(path, "t")
    if not chunk then
        return nil, err
    end
    local ok, p = pcall(chunk)
    if not ok then
        return nil, path .. ": " .. tostring(p)
    end
    local good, msg = M.check_contract(p)
    if not good then
        return nil, path .. ": " .. msg
    end
    if expected_name and p.name ~= expected_name then
        return nil, string.format("%s: declares name '%s' but was loaded as '%s'", path, p.name,
            expected_name)
    end
    return p
end

local function plugins_block(config)
    local c = type(config) == "table" and type(config.config) == "table" and config.config or {}
    local b = c.plugins
    if b == nil and type(config) == "table" then
        b = config.plugins
    end
    return b
end
M.plugins_block = plugins_block

local function is_list(t)
    if type(t) ~= "table" then
        return false
    end
    local n = 0
    for k in pairs(t) do
        if math.type(k) ~= "integer" then
            return false
        end
        n = n + 1
    end
    return n == #t
end

-- Search directories: config.plugins.paths (relative ones resolved against opts.config_dir),
-- then opts.bundled.
function M.search_dirs(config, opts)
    opts = opts or {}
    local dirs = {}
    local b = plugins_block(config)
    local paths = type(b) == "table" and b.paths or nil
    if paths ~= nil then
        if type(paths) == "string" then
            paths = { paths }
        end
        if not is_list(paths) then
            return nil, "config.plugins.paths: expected a list of directories"
        end
        for i, p in ipairs(paths) do
            if type(p) ~= "string" or p == "" then
                return nil, string.format("config.plugins.paths[%d]: expected a directory name", i - 1)
            end
            p = p:gsub("/+$", "")
            if p:sub(1, 1) ~= "/" and opts.config_dir and opts.config_dir ~= "" then
                p = opts.config_dir .. "/" .. p
            end
            dirs[#dirs + 1] = p
        end
    end
    if opts.bundled then
        dirs[#dirs + 1] = opts.bundled
    end
    return dirs
end

-- Every attachment in the config: { list = {{name=, config=, path=}}, route = route or nil }.
-- Returns { global = {...}, routes = { { route = r, listener = l, entries = {...} } } } or
-- nil, err for a malformed list.
function M.attachments(config)
    local function read(list, path)
        if list == nil then
            return {}
        end
        if not is_list(list) then
            return nil, path .. ": expected a list of {name, config}"
        end
        local out = {}
        for i, a in ipairs(list) do
            local p = string.format("%s[%d]", path, i - 1)
            if type(a) ~= "table" then
                return nil, p .. ": expected {name, config}"
            end
            if type(a.name) ~= "string" then
                return nil, p .. ".name: required (the plugin name)"
            end
            for k in pairs(a) do
                if k ~= "name" and k ~= "config" then
                    return nil, p .. "." .. tostring(k) .. ": unknown key (expected name, config)"
                end
            end
            out[#out + 1] = { name = a.name, config = a.config, path = p }
        end
        return out
    end
    local b = plugins_block(config)
    if b ~= nil and type(b) ~= "table" then
        return nil, "config.plugins: expected a mapping"
    end
    local global, err = read(b and b.global, "config.plugins.global")
    if not global then
        return nil, err
    end
    local routes = {}
    for bi, bind in ipairs(type(config) == "table" and config.binds or {}) do
        for li, l in ipairs(bind.listeners or {}) do
            for ri, r in ipairs(l.routes or {}) do
                local pol = r.policies
                local path = string.format("binds[%d].listeners[%d].routes[%d].policies.plugins",
                    bi - 1, li - 1, ri - 1)
                local entries, e2 = read(type(pol) == "table" and pol.plugins or nil, path)
                if not entries then
                    return nil, e2
                end
                routes[#routes + 1] = { route = r, listener = l, entries = entries }
            end
        end
    end
    return { global = global, routes = routes }
end

-- Loads every plugin the config uses, validates each attachment's config, and returns
--   { list = { plugin records sorted by priority, highest first },
--     by_name = { [name] = record },
--     global = { {record=, conf=} }, routes = { {route=, listener=, entries = {{record=, conf=}}} } }
-- where a record is { name, file, module, priority, index }. Or nil and an error message.
function M.load(config, opts)
    local dirs, err = M.search_dirs(config, opts)
    if not dirs then
        return nil, err
    end
    local att
    att, err = M.attachments(config)
    if not att then
        return nil, err
    end
    if opts and opts.set_package_path then
        -- user folders first, so a plugin can require its own helper modules
        local extra = {}
        for i = 1, #dirs - (opts.bundled and 1 or 0) do
            extra[#extra + 1] = dirs[i] .. "/?.lua;" .. dirs[i] .. "/?/init.lua"
        end
        if #extra > 0 then
            package.path = table.concat(extra, ";") .. ";" .. package.path
        end
    end
    local by_name, list = {}, {}
    local function get(a)
        local rec = by_name[a.name]
        if rec then
            return rec
        end
        local file, why = M.find(a.name, dirs)
        if not file then
            return nil, string.format("%s: unknown plugin '%s' (%s)", a.path, a.name, why)
        end
        local p, e = M.load_file(file, a.name)
        if not p then
            return nil, e
        end
        rec = { name = p.name, file = file, module = p, priority = p.priority }
        by_name[a.name] = rec
        list[#list + 1] = rec
        return rec
    end
    local function bind(a)
        local rec, e = get(a)
        if not rec then
            return nil, e
        end
        local conf, errs = schema.validate(rec.module.schema, a.config)
        if not conf then
            local parts = {}
            local keys = {}
            for k in pairs(errs) do
                keys[#keys + 1] = k
            end
            table.sort(keys)
            for _, k in ipairs(keys) do
                parts[#parts + 1] = a.path .. "." .. k .. ": " .. tostring(errs[k])
            end
            return nil, rec.file .. ": " .. table.concat(parts, "; ")
        end
        return { record = rec, conf = schema.freeze(conf), path = a.path }
    end
    local out = { global = {}, routes = {} }
    for _, a in ipairs(att.global) do
        local b, e = bind(a)
        if not b then
            return nil, e
        end
        out.global[#out.global + 1] = b
    end
    for _, r in ipairs(att.routes) do
        local entries = {}
        for _, a in ipairs(r.entries) do
            local b, e = bind(a)
            if not b then
                return nil, e
            end
            entries[#entries + 1] = b
        end
        out.routes[#out.routes + 1] = { route = r.route, listener = r.listener, entries = entries }
    end
    table.sort(list, function(a, b) return a.priority > b.priority end)
    for i = 2, #list do
        if list[i].priority == list[i - 1].priority then
            return nil, string.format("%s: plugin '%s' has priority %d, already used by '%s' (%s);"
                .. " priorities must be unique", list[i].file, list[i].name, list[i].priority,
                list[i - 1].name, list[i - 1].file)
        end
    end
    for i, rec in ipairs(list) do
        rec.index = i
    end
    out.list, out.by_name = list, by_name
    return out
end

return M
