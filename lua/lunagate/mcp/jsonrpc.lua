-- lunagate/mcp/jsonrpc.lua -- JSON-RPC 2.0 messages: parse, validate, build
-- SPDX-License-Identifier: MIT
--
--   rpc.parse(body) -> msg, kind | nil, error_response_table
--       kind: "request" (method + id), "notification" (method, no id), "response" (id +
--       result or error); a batch (array) is rejected (MCP 2025-06-18 removed batching)
--   rpc.classify(msg) -> kind | nil, reason
--   rpc.request(id, method, params), rpc.notification(method, params),
--   rpc.result(id, result), rpc.error(id, code, message [, data])   -> message tables
--   rpc.encode(msg) -> string;  rpc.decode(s) -> msg | nil, err
--   rpc.PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR,
--   rpc.UNAUTHORIZED (-32001: a tool, prompt or resource denied by mcpAuthorization; the
--   exact code agentgateway sends was not verified), rpc.SERVER_ERROR

local json = require "lunagate.mcp.json"

local rpc = {
    PARSE_ERROR = -32700,
    INVALID_REQUEST = -32600,
    METHOD_NOT_FOUND = -32601,
    INVALID_PARAMS = -32602,
    INTERNAL_ERROR = -32603,
    SERVER_ERROR = -32000,
    UNAUTHORIZED = -32001,
}

rpc.null = json.null
rpc.encode = json.encode
rpc.decode = json.decode

local function valid_id(id)
    local t = type(id)
    return t == "string" or (t == "number" and math.type(id) == "integer")
end

function rpc.classify(msg)
    if type(msg) ~= "table" or json.is_array(msg) then
        return nil, "message must be a JSON object"
    end
    if msg.jsonrpc ~= "2.0" then
        return nil, "jsonrpc must be \"2.0\""
    end
    if msg.method ~= nil then
        if type(msg.method) ~= "string" or msg.method == "" then
            return nil, "method must be a non-empty string"
        end
        if msg.params ~= nil and type(msg.params) ~= "table" then
            return nil, "params must be an object or array"
        end
        if msg.id == nil then
            return "notification"
        end
        if not valid_id(msg.id) then
            return nil, "id must be a string or an integer"
        end
        return "request"
    end
    if msg.result ~= nil or msg.error ~= nil then
        if msg.result ~= nil and msg.error ~= nil then
            return nil, "a response has result or error, not both"
        end
        if not valid_id(msg.id) and msg.id ~= json.null then
            return nil, "response id must be a string or an integer"
        end
        if msg.error ~= nil and (type(msg.error) ~= "table" or
                                 math.type(msg.error.code) ~= "integer") then
            return nil, "error must be an object with an integer code"
        end
        return "response"
    end
    return nil, "not a request, notification or response"
end

function rpc.request(id, method, params)
    return { jsonrpc = "2.0", id = id, method = method, params = params }
end

function rpc.notification(method, params)
    return { jsonrpc = "2.0", method = method, params = params }
end

function rpc.result(id, result)
    return { jsonrpc = "2.0", id = id, result = result }
end

function rpc.error(id, code, message, data)
    return { jsonrpc = "2.0", id = id == nil and json.null or id,
             error = { code = code, message = message, data = data } }
end

function rpc.parse(body)
    if type(body) ~= "string" or body == "" then
        return nil, rpc.error(nil, rpc.PARSE_ERROR, "Parse error: empty body")
    end
    local msg, err = json.decode(body)
    if msg == nil then
        return nil, rpc.error(nil, rpc.PARSE_ERROR, "Parse error: " .. err)
    end
    if json.is_array(msg) then
        return nil, rpc.error(nil, rpc.INVALID_REQUEST, "Invalid Request: batches are not supported")
    end
    local kind, why = rpc.classify(msg)
    if not kind then
        local id = type(msg) == "table" and valid_id(msg.id) and msg.id or nil
        return nil, rpc.error(id, rpc.INVALID_REQUEST, "Invalid Request: " .. why)
    end
    return msg, kind
end

return rpc
