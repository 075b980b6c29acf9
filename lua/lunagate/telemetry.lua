-- lunagate.telemetry -- one request record in, everything observability needs out: the
-- access-log line, the GenAI metric values, custom metric labels (config.metrics.fields.add)
-- and span attributes (config.tracing). Built once per worker state and configuration.
--
-- Capture on demand: `capture` tells the LLM layer whether any configured expression reads
-- the prompt or the completion; when none does, they are never kept.
local cel = require "lunagate.cel"
local context = require "lunagate.context"

local M = {}
M.__index = M

local function ordered_pairs_list(t)
    -- fields.add arrives as a map (YAML order is lost in Lua) or as a list of {name, src}
    local list = {}
    if type(t) ~= "table" then return list end
    if #t > 0 then
        for _, e in ipairs(t) do
            if type(e) == "table" then
                list[#list + 1] = { e[1] or e.name, e[2] or e.value or e.expression }
            end
        end
        return list
    end
    for k, v in pairs(t) do list[#list + 1] = { k, v } end
    table.sort(list, function(a, b) return a[1] < b[1] end)
    return list
end
M.ordered = ordered_pairs_list

local function add_refs(refs, fe)
    for k in pairs(fe and fe.refs or {}) do refs[k] = true end
end

local function needs(refs, path)
    if refs[path] then return true end
    -- a bare root ("llm" from toJson(llm)) means everything below it
    local root = path:match("^([^.]+)")
    return refs[root] == true
end

-- new(cfg) -> telemetry | nil, err ; cfg is the normalised configuration
function M.new(cfg)
    local conf = cfg.config or {}
    local t = setmetatable({ refs = {} }, M)

    -- access log
    local ok, accesslog = pcall(require, "lunagate.accesslog")
    if ok and type(accesslog) == "table" and accesslog.new then
        local logger, err = accesslog.new(conf.logging or {},
            { plugin_paths = conf.plugins and conf.plugins.paths })
        if not logger then return nil, "config.logging: " .. tostring(err) end
        t.logger = logger
        add_refs(t.refs, logger)
    end

    -- custom metric labels
    local mfields = conf.metrics and conf.metrics.fields and conf.metrics.fields.add
    if mfields then
        local list = ordered_pairs_list(mfields)
        local fe, err = cel.compile_fields(list)
        if not fe then return nil, "config.metrics.fields.add." .. tostring(err) end
        t.metric_fields, t.metric_names = fe, {}
        for i, e in ipairs(list) do t.metric_names[i] = e[1] end
        add_refs(t.refs, fe)
    end

    -- tracing
    local okt, tracing = pcall(require, "lunagate.tracing")
    if okt and type(tracing) == "table" and tracing.new and (conf.tracing or cfg.frontendPolicies
            and cfg.frontendPolicies.tracing) then
        local tr, err = tracing.new(conf.tracing or cfg.frontendPolicies.tracing)
        if not tr then return nil, "config.tracing: " .. tostring(err) end
        t.tracer = tr
        add_refs(t.refs, tr)
    end

    t.capture = { prompt = needs(t.refs, "llm.prompt"), completion = needs(t.refs, "llm.completion") }
    t.needs_headers = needs(t.refs, "request.headers") or needs(t.refs, "request")
    return t
end

local empty = {}

-- log(rec) -> line | nil, genai | nil, custom label values | nil, span attributes | nil
function M:log(rec)
    local act = nil
    local line
    if self.logger then
        line = self.logger:line(rec)
    end
    local custom
    if self.metric_fields then
        act = act or context.activation(rec)
        local vals = self.metric_fields:eval(act)
        local by = {}
        for _, e in ipairs(vals) do by[e[1]] = e[2] end
        custom = {}
        for i, name in ipairs(self.metric_names) do
            local v = by[name]
            if type(v) == "table" or v == nil then
                custom[i] = "unknown"
            else
                custom[i] = tostring(v)
            end
        end
    end
    local span
    if self.tracer and rec.sampled then
        local name, attrs, status = self.tracer:attributes(rec)
        span = { name = name, attrs = attrs, status = status }
    end
    return line, rec.llm or nil, custom, span
end

M.empty = empty
return M
