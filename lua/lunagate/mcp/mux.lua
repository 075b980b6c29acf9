-- lunagate/mcp/mux.lua -- multiplexing several MCP targets behind one session
-- SPDX-License-Identifier: MIT
--
-- Naming (agentgateway §8): with more than one target (prefixMode conditional) or with
-- prefixMode always, tool and prompt names become "<target>_<name>" (the first "_" splits)
-- and resource URIs "<target>+<uri>"; server-initiated request ids are rewritten to
-- "agw_<target>_n_<n>" (integer ids) or "agw_<target>_s_<s>" (string ids) so the client's
-- answer finds its way back.
--
--   mux.prefixing(mode, ntargets) -> bool
--   mux.name(target, name, prefix) / mux.split_name(name, targets, prefix) -> target, name | nil
--   mux.uri(target, uri, prefix)   / mux.split_uri(uri, targets, prefix)   -> target, uri | nil
--   mux.LISTS[method] = { key = "tools", field = "name", kind = "tool" } ...
--   mux.merge(method, parts, prefix, keep) -> result
--       parts = { {target=, result=}, ... } in target order; keep(kind, item, target,
--       original_name) -> bool filters items (authorization); duplicates dropped when not
--       prefixing
--   mux.server_request_id(target, id) -> string;  mux.parse_server_request_id(id, targets)
--       -> target, original_id | nil

local json = require "lunagate.mcp.json"

local mux = {}

mux.LISTS = {
    ["tools/list"] = { key = "tools", field = "name", kind = "tool" },
    ["prompts/list"] = { key = "prompts", field = "name", kind = "prompt" },
    ["resources/list"] = { key = "resources", field = "uri", kind = "resource" },
    ["resources/templates/list"] = { key = "resourceTemplates", field = "uriTemplate",
                                     kind = "resource" },
}

function mux.prefixing(mode, ntargets)
    if mode == "always" then return true end
    if mode == "never" then return false end
    return ntargets > 1
end

function mux.name(target, name, prefix)
    if not prefix then return name end
    return target .. "_" .. name
end

-- `targets` is a set (name -> anything). Without prefixing the caller resolves the target.
function mux.split_name(name, targets, prefix)
    if type(name) ~= "string" then return nil end
    if not prefix then return nil, name end
    local t, rest = name:match("^([^_]+)_(.+)$")
    if t and targets[t] then return t, rest end
    return nil
end

function mux.uri(target, uri, prefix)
    if not prefix or type(uri) ~= "string" then return uri end
    return target .. "+" .. uri
end

function mux.split_uri(uri, targets, prefix)
    if type(uri) ~= "string" then return nil end
    if not prefix then return nil, uri end
    local t, rest = uri:match("^([^+]+)%+(.+)$")
    if t and targets[t] then return t, rest end
    return nil
end

-- Rewrites one listed item for the client (a shallow copy: the original stays intact).
local function rename(desc, item, target, prefix)
    if not prefix then return item end
    local copy = {}
    for k, v in pairs(item) do copy[k] = v end
    if desc.field == "name" then
        copy.name = mux.name(target, item.name, true)
    else
        copy[desc.field] = mux.uri(target, item[desc.field], true)
    end
    return copy
end

function mux.merge(method, parts, prefix, keep)
    local desc = assert(mux.LISTS[method], "not a list method")
    local items, seen = json.array(), {}
    local out = {}
    for _, part in ipairs(parts) do
        local list = type(part.result) == "table" and part.result[desc.key]
        if type(list) == "table" then
            for _, item in ipairs(list) do
                local id = type(item) == "table" and item[desc.field]
                if id ~= nil and (not keep or keep(desc.kind, item, part.target, id)) then
                    local named = rename(desc, item, part.target, prefix)
                    local key = named[desc.field]
                    if prefix or not seen[key] then
                        seen[key] = true
                        items[#items + 1] = named
                    end
                end
            end
        end
        -- a single part keeps its pagination cursor; merged lists are complete
        if #parts == 1 and type(part.result) == "table" then
            out.nextCursor = part.result.nextCursor
            out._meta = part.result._meta
        end
    end
    out[desc.key] = items
    return out
end

function mux.server_request_id(target, id)
    if math.type(id) == "integer" then
        return "agw_" .. target .. "_n_" .. id
    end
    return "agw_" .. target .. "_s_" .. tostring(id)
end

function mux.parse_server_request_id(id, targets)
    if type(id) ~= "string" or id:sub(1, 4) ~= "agw_" then return nil end
    for t in pairs(targets) do
        local p = "agw_" .. t .. "_"
        if id:sub(1, #p) == p then
            local kind, rest = id:sub(#p + 1, #p + 2), id:sub(#p + 3)
            if kind == "n_" and math.tointeger(tonumber(rest)) then
                return t, math.tointeger(tonumber(rest))
            elseif kind == "s_" then
                return t, rest
            end
        end
    end
    return nil
end

return mux
