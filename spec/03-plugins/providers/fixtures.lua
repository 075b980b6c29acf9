-- spec/03-plugins/providers/fixtures.lua -- helpers for the table-driven provider fixture specs
-- luacheck: max line length 160
-- (not a spec itself). Fixtures live in spec/fixtures/providers/<provider>/<route>/:
--   backend.json        { ai, policies?, env?, path, stream_path?, request, stream_request? }
--   requests/NAME.json  client request body;  NAME.expected.json { llm, upstream }
--   responses/NAME.json upstream body (NAME error_<status>... = that status);
--                       NAME.expected.json { llm, client_body? }
--   streams/NAME.sse | NAME.bin   upstream stream;  NAME.expected.json { llm, client_events? }
-- Set LG_FIXTURE_WRITE=1 to (re)write missing expected files instead of comparing.
local cjson = require "cjson"
local llm = require "lunagate.llm"
local sse = require "lunagate.llm.sse"

local F = {}

F.ROOT = "spec/fixtures/providers"
F.START_US, F.FEED_US, F.END_US = 1000000, 2000000, 3000000

function F.read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

function F.exists(path)
    local f = io.open(path, "rb")
    if f then f:close() return true end
    return false
end

function F.list(dir, pattern)
    local out = {}
    local p = io.popen('ls -1 "' .. dir .. '" 2>/dev/null')
    for name in p:lines() do
        if name:match(pattern) and not name:match("%.expected%.json$") then out[#out + 1] = name end
    end
    p:close()
    table.sort(out)
    return out
end

function F.route_dirs()
    local out = {}
    for _, prov in ipairs(F.list(F.ROOT, "^[%w_%-]+$")) do
        for _, route in ipairs(F.list(F.ROOT .. "/" .. prov, "^[%w_%-]+$")) do
            local d = F.ROOT .. "/" .. prov .. "/" .. route
            if F.exists(d .. "/backend.json") then out[#out + 1] = { provider = prov, route = route, dir = d } end
        end
    end
    return out
end

-- Stable pretty JSON (sorted keys) for expected files.
local function pretty(v, ind)
    ind = ind or ""
    local t = type(v)
    if t == "table" then
        if v == cjson.null then return "null" end
        local n = #v
        local keys = {}
        for k in pairs(v) do keys[#keys + 1] = k end
        if n > 0 and #keys == n then
            local parts = {}
            for i = 1, n do parts[i] = ind .. "  " .. pretty(v[i], ind .. "  ") end
            return "[\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "]"
        end
        if #keys == 0 then return "{}" end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
        local parts = {}
        for _, k in ipairs(keys) do
            parts[#parts + 1] = ind .. "  " .. pretty(tostring(k)) .. ": " .. pretty(v[k], ind .. "  ")
        end
        return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
    elseif t == "number" and math.type(v) == "integer" then
        return tostring(v)
    elseif t == "string" then
        return (cjson.encode(v):gsub("\\/", "/"))
    end
    return cjson.encode(v)
end
F.pretty = pretty

-- Returns the decoded expected file, or writes `actual` there in write mode.
function F.expected(path, actual)
    if os.getenv("LG_FIXTURE_WRITE") == "1" and not F.exists(path) then
        local f = assert(io.open(path, "wb"))
        f:write(pretty(actual), "\n")
        f:close()
    end
    return cjson.decode(F.read(path))
end

-- A backend for a route dir, with a controllable clock.
function F.backend(dir)
    local conf = cjson.decode(F.read(dir .. "/backend.json"))
    local clock = { now = F.START_US }
    local env = conf.env or {}
    local b = assert(llm.new_backend(conf.ai, conf.policies, {
        clock = function() return clock.now end,
        capture = { prompt = true, completion = true },
        getenv = function(k) return env[k] end,
    }))
    return b, conf, clock
end

function F.new_request(b, _, clock, body_file, path)
    clock.now = F.START_US
    local rec = { start_us = F.START_US }
    local ctx = b:on_request(rec, {
        method = "POST", path = path, headers = { authorization = "Bearer client-key" },
        body = F.read(body_file),
    })
    return rec, ctx
end

-- Feeds `chunks` through the response hooks; returns the bytes sent to the client.
function F.respond(b, ctx, clock, status, content_type, chunks)
    clock.now = F.FEED_US
    b:on_response_headers(ctx, status, { ["content-type"] = content_type })
    local out = {}
    for i, c in ipairs(chunks) do out[#out + 1] = b:on_body(ctx, c, i == #chunks) end
    if #chunks == 0 then out[1] = b:on_body(ctx, "", true) end
    b:on_complete(ctx, F.END_US)
    return table.concat(out)
end

function F.sse_data(s)
    local d = sse.decoder()
    local evs = assert(d:feed(s))
    local out = {}
    for _, e in ipairs(evs) do
        out[#out + 1] = e.data == "[DONE]" and "[DONE]" or cjson.decode(e.data)
    end
    return out
end

-- JSON round trip so that actual values compare like the decoded expected file.
function F.plain(v)
    return cjson.decode(cjson.encode(v))
end

local COUNTS = { "input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
                 "cache_creation_input_tokens", "reasoning_tokens", "provider_input_tokens",
                 "first_token_us" }

-- Error message when a token count is not a Lua integer, else nil.
function F.non_integer(l)
    for _, k in ipairs(COUNTS) do
        if l[k] ~= nil and math.type(l[k]) ~= "integer" then return k .. " is " .. tostring(l[k]) end
    end
    return nil
end

return F
