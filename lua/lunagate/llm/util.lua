-- lunagate/llm/util.lua -- helpers shared by the wire protocol modules
--
-- The per-request context `ctx` that protocol functions receive as their last argument:
--   ctx.capture = { prompt = bool, completion = bool }   -- what to keep on rec.llm
--   ctx.now     = function() -> integer wall-clock microseconds (injected clock)
--   ctx.text    = { [choice_index0] = { parts... } }      -- completion accumulation (internal)
-- Every function here tolerates ctx == nil (no capture, os.time clock).
-- plain "cjson" (the static build registers only luaopen_cjson); decode errors are caught
local cjson = require "cjson"

local U = {}

U.null = cjson.null

function U.default_now()
    return os.time() * 1000000
end

function U.now(ctx)
    if ctx and ctx.now then return ctx.now() end
    return U.default_now()
end

-- Integer from a JSON number (cjson decodes every number as a float).
function U.int(v)
    if type(v) ~= "number" then return nil end
    local i = math.tointeger(v)
    if i then return i end
    if v ~= v or v == math.huge or v == -math.huge then return nil end
    return math.floor(v)
end

function U.llm(rec)
    local l = rec.llm
    if not l then l = {}; rec.llm = l end
    return l
end

function U.decode(s)
    if type(s) ~= "string" then return nil, "body is not a string" end
    local ok, v = pcall(cjson.decode, s)
    if not ok then
        return nil, (tostring(v):gsub("^.-: ", "", 1))
    end
    if v == nil then return nil, "invalid JSON" end
    return v
end

-- A value that U.encode writes as [] (lua-cjson 2.1.0 writes an empty table as {}).
U.EMPTY_ARRAY = "\0lunagate-empty-array\0"

function U.encode(v)
    local ok, s = pcall(cjson.encode, v)
    if not ok then return nil, s end
    if s and s:find("\\u0000lunagate", 1, true) then
        s = s:gsub('"\\u0000lunagate%-empty%-array\\u0000"', "[]")
    end
    return s
end

-- ---- Top-level JSON object patching (keeps every other byte of the body as sent) ----

local function skip_ws(s, i)
    return s:find("[^ \t\r\n]", i)
end

local function skip_string(s, i)
    local j = i + 1
    while true do
        local q = s:find('["\\]', j)
        if not q then return nil end
        if s:byte(q) == 92 then j = q + 2 else return q + 1 end
    end
end

local function skip_value(s, i)
    local c = s:byte(i)
    if c == 34 then return skip_string(s, i) end
    if c == 123 or c == 91 then
        local depth, j = 0, i
        while true do
            local q = s:find('[%[%]{}"]', j)
            if not q then return nil end
            local b = s:byte(q)
            if b == 34 then
                j = skip_string(s, q)
                if not j then return nil end
            else
                if b == 123 or b == 91 then depth = depth + 1 else depth = depth - 1 end
                j = q + 1
                if depth == 0 then return j end
            end
        end
    end
    local e = s:find("[,}%]%s]", i)
    return e or (#s + 1)
end

-- Returns { open = index of "{", close = index of "}", members = { {key, kstart, vstart, vend} } }
-- (vend exclusive) for a JSON object text, or nil.
function U.scan_object(s)
    local i = skip_ws(s, 1)
    if not i or s:byte(i) ~= 123 then return nil end
    local r = { open = i, members = {} }
    i = skip_ws(s, i + 1)
    if not i then return nil end
    if s:byte(i) == 125 then r.close = i; return r end
    while true do
        if s:byte(i) ~= 34 then return nil end
        local kend = skip_string(s, i)
        if not kend then return nil end
        local kok, key = pcall(cjson.decode, s:sub(i, kend - 1))
        if not kok then return nil end
        local c = skip_ws(s, kend)
        if not c or s:byte(c) ~= 58 then return nil end
        local vs = skip_ws(s, c + 1)
        if not vs then return nil end
        local ve = skip_value(s, vs)
        if not ve then return nil end
        r.members[#r.members + 1] = { key = key, kstart = i, vstart = vs, vend = ve }
        local n = skip_ws(s, ve)
        if not n then return nil end
        local b = s:byte(n)
        if b == 125 then r.close = n; return r end
        if b ~= 44 then return nil end
        i = skip_ws(s, n + 1)
        if not i then return nil end
    end
end

-- Patches top-level members of JSON object text `s`: set = { key = raw_json_value },
-- remove = { key, ... }. New keys are inserted first. Returns the new text, or nil.
function U.patch_object(s, set, remove)
    local obj = U.scan_object(s)
    if not obj then return nil end
    local edits = {}                      -- { start, stop(exclusive), text }
    local seen = {}
    local rm = {}
    for _, k in ipairs(remove or {}) do rm[k] = true end
    local members = obj.members
    for idx, m in ipairs(members) do
        if rm[m.key] then
            local stop = m.vend
            local nxt = members[idx + 1]
            if nxt then stop = nxt.kstart
            elseif idx > 1 then
                -- last member: also drop the comma before it
                local prev = members[idx - 1]
                edits[#edits + 1] = { prev.vend, m.vend, "" }
                goto continue
            end
            edits[#edits + 1] = { m.kstart, stop, "" }
        elseif set and set[m.key] ~= nil then
            seen[m.key] = true
            edits[#edits + 1] = { m.vstart, m.vend, set[m.key] }
        end
        ::continue::
    end
    local ins = {}
    for k, v in pairs(set or {}) do
        if not seen[k] then ins[#ins + 1] = cjson.encode(k) .. ":" .. v end
    end
    table.sort(ins)
    local remaining = #members
    for _, e in ipairs(edits) do if e[3] == "" then remaining = remaining - 1 end end
    if #ins > 0 then
        local t = table.concat(ins, ",")
        if remaining > 0 then t = t .. "," end
        edits[#edits + 1] = { obj.open + 1, obj.open + 1, t }
    end
    table.sort(edits, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    local out, pos = {}, 1
    for _, e in ipairs(edits) do
        out[#out + 1] = s:sub(pos, e[1] - 1)
        out[#out + 1] = e[3]
        pos = e[2]
    end
    out[#out + 1] = s:sub(pos)
    return table.concat(out)
end

function U.str(v)
    if type(v) == "string" then return v end
    return nil
end

local INT_PARAMS = { max_tokens = true, seed = true, n = true, top_k = true, dimensions = true }

-- Copies request parameters: map = { {json_key, rec_key}, ... }; numbers/strings/bools only.
-- Counts (max_tokens, seed, n, top_k, dimensions) become integers; the rest stay floats.
function U.params(src, map)
    local p = {}
    local any = false
    if type(src) ~= "table" then return nil end
    for _, kv in ipairs(map) do
        local v = src[kv[1]]
        local t = type(v)
        if t == "number" then
            if INT_PARAMS[kv[2]] then p[kv[2]] = U.int(v) else p[kv[2]] = v + 0.0 end
            any = true
        elseif t == "string" or t == "boolean" then
            p[kv[2]] = v
            any = true
        end
    end
    return any and p or nil
end

-- Flattens OpenAI/Anthropic style content (string or array of parts) to text.
function U.content_text(c)
    if type(c) == "string" then return c end
    if type(c) ~= "table" then return "" end
    local out = {}
    for _, part in ipairs(c) do
        if type(part) == "string" then
            out[#out + 1] = part
        elseif type(part) == "table" then
            local t = part.text
            if type(t) == "string" then out[#out + 1] = t end
        end
    end
    return table.concat(out)
end

function U.capture_prompt(ctx)
    return ctx and ctx.capture and ctx.capture.prompt == true
end

function U.capture_completion(ctx)
    return ctx and ctx.capture and ctx.capture.completion == true
end

function U.first_token(rec, ctx)
    local l = U.llm(rec)
    if not l.first_token_us then l.first_token_us = U.now(ctx) end
end

function U.append_text(ctx, idx, text)
    if not ctx or type(text) ~= "string" or text == "" then return end
    local t = ctx.text
    if not t then t = {}; ctx.text = t end
    local parts = t[idx or 0]
    if not parts then parts = {}; t[idx or 0] = parts end
    parts[#parts + 1] = text
end

-- Appends a finish reason once per choice index.
function U.finish_reason(rec, idx, reason, ctx)
    if type(reason) ~= "string" then return end
    local l = U.llm(rec)
    if ctx then
        ctx.finish_seen = ctx.finish_seen or {}
        if ctx.finish_seen[idx or 0] then return end
        ctx.finish_seen[idx or 0] = true
    end
    l.finish_reasons = l.finish_reasons or {}
    l.finish_reasons[#l.finish_reasons + 1] = reason
end

-- Sets usage fields from already-normalized integers (nil leaves a field unchanged).
function U.set_usage(rec, u)
    local l = U.llm(rec)
    for _, k in ipairs({ "input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
                         "cache_creation_input_tokens", "reasoning_tokens" }) do
        local v = u[k]
        if v ~= nil then l[k] = v end
    end
    if l.total_tokens == nil and l.input_tokens and l.output_tokens then
        l.total_tokens = l.input_tokens + l.output_tokens
    end
end

-- Final bookkeeping: completion text and timings. end_us defaults to ctx.now().
function U.finish(rec, ctx, end_us)
    local l = rec.llm
    if not l then return end
    if ctx and ctx.text and U.capture_completion(ctx) then
        local comp = {}
        local max = -1
        for i in pairs(ctx.text) do if i > max then max = i end end
        for i = 0, max do
            comp[i + 1] = ctx.text[i] and table.concat(ctx.text[i]) or ""
        end
        l.completion = comp
    end
    end_us = end_us or rec.end_us or U.now(ctx)
    if l.first_token_us then
        if rec.start_us then
            l.ttft = (l.first_token_us - rec.start_us) / 1e6
        end
        local out = l.output_tokens
        if out and out > 1 and end_us >= l.first_token_us then
            l.tpot = (end_us - l.first_token_us) / 1e6 / (out - 1)
        end
    end
end

return U
