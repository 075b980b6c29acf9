-- lunagate/mcp/authz.lua -- mcpAuthorization rules (CEL) for tools, prompts and resources
-- SPDX-License-Identifier: MIT
--
-- Rules are CEL strings (an allow rule) or {allow=}, {deny=}, {require=} tables. Decision
-- (agentgateway src/http/authorization.rs): any deny true -> deny; any require not true ->
-- deny; any allow true -> allow; allow rules exist but none matched -> deny; otherwise allow.
-- An evaluation error counts as false.
--
--   local policy, err = authz.compile(rules)     -- nil rules: policy that allows everything
--   policy:allowed(activation) -> bool
--   authz.activation(base, mcp) -> table        -- base vars (jwt, request, ...) + mcp
--   authz.item_vars(kind, name, target, method, session_id) -> the `mcp` variable for one item:
--       { methodName=, method=, sessionId=, tool|prompt|resource = {name=, target=} }

local cel = require "lunagate.cel"

local authz = {}

local Policy = {}
Policy.__index = Policy

function authz.compile(rules)
    local p = setmetatable({ allow = {}, deny = {}, require = {}, empty = true }, Policy)
    if rules == nil then return p end
    if type(rules) ~= "table" then
        return nil, "rules: expected a list"
    end
    for i, r in ipairs(rules) do
        local kind, src
        if type(r) == "string" then
            kind, src = "allow", r
        elseif type(r) == "table" then
            for _, k in ipairs({ "allow", "deny", "require" }) do
                if r[k] ~= nil then
                    if kind then
                        return nil, string.format("rules[%d]: expected one of allow, deny, require", i)
                    end
                    kind, src = k, r[k]
                end
            end
        end
        if not kind or type(src) ~= "string" then
            return nil, string.format("rules[%d]: expected a CEL string or {allow|deny|require: CEL}", i)
        end
        local prog, err = cel.compile(src)
        if not prog then
            return nil, string.format("rules[%d]: %s", i, err)
        end
        local list = p[kind]
        list[#list + 1] = prog
        p.empty = false
    end
    return p
end

local function truthy(prog, act)
    local ok, v = pcall(prog.eval, prog, act)
    return ok and v == true
end

function Policy:allowed(act)
    if self.empty then return true end
    for _, prog in ipairs(self.deny) do
        if truthy(prog, act) then return false end
    end
    for _, prog in ipairs(self.require) do
        if not truthy(prog, act) then return false end
    end
    if #self.allow == 0 then return true end
    for _, prog in ipairs(self.allow) do
        if truthy(prog, act) then return true end
    end
    return false
end

function authz.item_vars(kind, name, target, method, session_id)
    local m = { methodName = method, method = method, sessionId = session_id }
    if kind then
        m[kind] = { name = name, target = target }
    end
    return m
end

function authz.activation(base, mcp)
    local act = { mcp = mcp }
    if type(base) ~= "table" then
        act.jwt = {}
        return act
    end
    if base.jwt == nil then act.jwt = {} end
    return setmetatable(act, { __index = base })
end

return authz
