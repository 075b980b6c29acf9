-- spec/cel/conformance.lua -- runs cel-spec "simple" conformance files against lunagate.cel
-- SPDX-License-Identifier: MIT
--
-- Usage: lua5.4 spec/cel/conformance.lua FILE.textproto...
--        (no FILE: every spec/cel/testdata/*.textproto)
-- Prints one line per failed case and ends with "N passed, N failed, N skipped"; exits 1 on
-- failures. Cases named in spec/cel/skip.txt ("file/section/test  reason") are skipped.
-- The text-format protobuf reader below handles the subset those files use.

local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = script_dir .. "/../../lua/?.lua;" .. script_dir .. "/../../lua/?/init.lua;"
    .. package.path

local cel = require "lunagate.cel"

-- ---- textproto reader ----

local function unescape(s)
    local out = {}
    local i = 1
    while i <= #s do
        local c = s:sub(i, i)
        if c ~= "\\" then
            out[#out + 1] = c
            i = i + 1
        else
            local e = s:sub(i + 1, i + 1)
            local simple = { n = "\n", t = "\t", r = "\r", a = "\a", b = "\b", f = "\f", v = "\v",
                             ["\\"] = "\\", ["'"] = "'", ['"'] = '"', ["?"] = "?" }
            if simple[e] then
                out[#out + 1] = simple[e]; i = i + 2
            elseif e:match("[0-7]") then
                local o = s:match("^[0-7][0-7]?[0-7]?", i + 1)
                out[#out + 1] = string.char(tonumber(o, 8) & 255); i = i + 1 + #o
            elseif e == "x" or e == "X" then
                local h = s:match("^%x%x?", i + 2)
                out[#out + 1] = string.char(tonumber(h, 16)); i = i + 2 + #h
            elseif e == "u" then
                out[#out + 1] = utf8.char(tonumber(s:sub(i + 2, i + 5), 16)); i = i + 6
            elseif e == "U" then
                out[#out + 1] = utf8.char(tonumber(s:sub(i + 2, i + 9), 16)); i = i + 10
            else
                error("bad escape \\" .. e)
            end
        end
    end
    return table.concat(out)
end

local function tokenize(text)
    local toks = {}
    local i, n = 1, #text
    while i <= n do
        local c = text:sub(i, i)
        if c:match("%s") then
            i = i + 1
        elseif c == "#" then
            i = (text:find("\n", i, true) or n) + 1
        elseif c == "{" or c == "}" or c == ":" or c == "," or c == ";" or c == "<" or c == ">" then
            toks[#toks + 1] = { t = c }
            i = i + 1
        elseif c == "[" then
            local j = text:find("]", i, true)
            toks[#toks + 1] = { t = "ext", v = text:sub(i + 1, j - 1) }
            i = j + 1
        elseif c == '"' or c == "'" then
            local j = i + 1
            while true do
                local d = text:sub(j, j)
                if d == "\\" then j = j + 2
                elseif d == c then break
                elseif d == "" then error("unterminated string")
                else j = j + 1 end
            end
            local s = unescape(text:sub(i + 1, j - 1))
            local last = toks[#toks]
            if last and last.t == "str" then last.v = last.v .. s      -- adjacent concatenation
            else toks[#toks + 1] = { t = "str", v = s } end
            i = j + 1
        else
            local w = text:match("^[%w_%.%-%+]+", i)
            if not w then error("unexpected character '" .. c .. "'") end
            toks[#toks + 1] = { t = "word", v = w }
            i = i + #w
        end
    end
    return toks
end

-- message = array of {name=, value=} where value is a string/word token or a nested message
local function parse_textproto(text)
    local toks = tokenize(text)
    local p = 1
    local function message(close)
        local fields = {}
        while true do
            local t = toks[p]
            if t == nil then
                if close then error("unexpected end of textproto") end
                return fields
            end
            if t.t == close then p = p + 1; return fields end
            if t.t == "," or t.t == ";" then
                p = p + 1
            else
                local name = t.v
                p = p + 1
                if toks[p].t == ":" then p = p + 1 end
                local v = toks[p]
                if v.t == "{" or v.t == "<" then
                    p = p + 1
                    fields[#fields + 1] = { name = name, value = message(v.t == "{" and "}" or ">") }
                elseif v.t == "ext" then
                    error("unexpected extension")
                else
                    p = p + 1
                    fields[#fields + 1] = { name = name, value = v }
                end
            end
        end
    end
    return message(nil)
end

local function get(msg, name)
    for _, f in ipairs(msg) do
        if f.name == name then return f.value end
    end
    return nil
end
local function get_all(msg, name)
    local out = {}
    for _, f in ipairs(msg) do
        if f.name == name then out[#out + 1] = f.value end
    end
    return out
end
local function scalar(v) return type(v) == "table" and v.v or nil end

-- ---- cel.expr.Value -> CEL value ----

local Unsupported = {}

-- type values: evaluate the type name as an expression
local function eval_type(name)
    local p = assert(cel.compile(name))
    return assert(p:eval({}))
end

local function parse_uint(text)
    local acc = 0
    for d in text:gmatch("%d") do acc = acc * 10 + tonumber(d) end
    return acc
end

local function to_value(msg)
    local f = msg[1]
    if not f then return cel.null end          -- empty Value: treat as null
    local name, v = f.name, f.value
    local s = scalar(v)
    if name == "null_value" then return cel.null
    elseif name == "bool_value" then return s == "true"
    elseif name == "int64_value" then
        if s == "-9223372036854775808" then return math.mininteger end
        return math.tointeger(tonumber(s))
    elseif name == "uint64_value" then return cel.uint(parse_uint(s))
    elseif name == "double_value" then
        local l = s:lower()
        if l == "inf" or l == "infinity" then return math.huge end
        if l == "-inf" or l == "-infinity" then return -math.huge end
        if l == "nan" then return 0 / 0 end
        return tonumber(s) + 0.0
    elseif name == "string_value" then return s
    elseif name == "bytes_value" then return cel.bytes(s)
    elseif name == "list_value" then
        local out = {}
        for _, e in ipairs(get_all(v, "values")) do out[#out + 1] = to_value(e) end
        return cel.list(out)
    elseif name == "map_value" then
        local pairs_ = {}
        for _, e in ipairs(get_all(v, "entries")) do
            pairs_[#pairs_ + 1] = { to_value(get(e, "key")), to_value(get(e, "value")) }
        end
        return cel.map(pairs_)
    elseif name == "type_value" then
        return eval_type(s)
    end
    error(Unsupported)
end

-- ---- comparison ----

local function same(a, b)
    local ta, tb = cel.type_of(a), cel.type_of(b)
    if ta ~= tb then return false end
    if ta == "double" then
        if a ~= a and b ~= b then return true end
        return a == b
    end
    if ta == "list" then
        if #a ~= #b then return false end
        for i = 1, #a do if not same(a[i], b[i]) then return false end end
        return true
    end
    if ta == "map" then
        local pa, pb = cel.to_plain(a), cel.to_plain(b)
        local ka = 0
        for _ in pairs(pa) do ka = ka + 1 end
        local kb = 0
        for _ in pairs(pb) do kb = kb + 1 end
        if ka ~= kb then return false end
        -- compare with CEL equality per key, but keys must have the same types
        local ok, r = pcall(function()
            local p = assert(cel.compile("a == b"))
            return p:eval({ a = a, b = b })
        end)
        return ok and r == true
    end
    local p = assert(cel.compile("a == b"))
    return p:eval({ a = a, b = b }) == true
end

local function show(v)
    local ok, s = pcall(function()
        local t = cel.type_of(v)
        if t == "string" then return string.format("%q", v) end
        if t == "bytes" then return "b" .. string.format("%q", v.s) end
        if t == "uint" then return cel.to_plain(v) .. "u" end
        if t == "list" or t == "map" then
            local cj = require "cjson"
            return t .. " " .. cj.encode(cel.to_plain(v))
        end
        return t .. " " .. tostring(cel.to_plain(v))
    end)
    return ok and s or tostring(v)
end

-- ---- runner ----

local function load_skips()
    local skips = {}
    local f = io.open(script_dir .. "/skip.txt", "r")
    if not f then return skips end
    for line in f:lines() do
        local name = line:match("^([^#%s]+)")
        if name then skips[name] = line:match("^%S+%s+(.*)$") or "" end
    end
    f:close()
    return skips
end

local files = {}
local fallback = false
for i = 1, #arg do
    local fh = io.open(arg[i], "r")
    if fh then
        fh:close()
        files[#files + 1] = arg[i]
    elseif arg[i]:find("*", 1, true) then
        fallback = true          -- an unexpanded glob: the shared directory is not there
    else
        files[#files + 1] = arg[i]
    end
end
if #files == 0 or (fallback and #files == 0) then
    local p = io.popen("ls " .. script_dir .. "/testdata/*.textproto 2>/dev/null")
    for line in p:lines() do files[#files + 1] = line end
    p:close()
end

local skips = load_skips()
local passed, failed, skipped = 0, 0, 0
local verbose = os.getenv("CEL_VERBOSE")

for _, path in ipairs(files) do
    local fh = assert(io.open(path, "r"))
    local text = fh:read("a")
    fh:close()
    local ok, file = pcall(parse_textproto, text)
    if not ok then
        print(path .. ": cannot parse textproto: " .. tostring(file))
        failed = failed + 1
        goto next_file
    end
    do
        local fname = scalar(get(file, "name")) or path
        for _, section in ipairs(get_all(file, "section")) do
            local sname = scalar(get(section, "name"))
            for _, test in ipairs(get_all(section, "test")) do
                local tname = scalar(get(test, "name"))
                local full = fname .. "/" .. sname .. "/" .. tname
                if skips[full] then
                    skipped = skipped + 1
                    goto continue
                end
                do
                    local expr = scalar(get(test, "expr"))
                    local fail
                    local ok2, err2 = pcall(function()
                        local act = {}
                        for _, b in ipairs(get_all(test, "bindings")) do
                            local key = scalar(get(b, "key"))
                            local ev = get(b, "value")
                            act[key] = to_value(get(ev, "value"))
                        end
                        local want_value = get(test, "value")
                        local typed = get(test, "typed_result")
                        if typed then want_value = get(typed, "result") end
                        local want_err = get(test, "eval_error") or get(test, "any_eval_errors")
                        local prog, cerr = cel.compile(expr, { lenient = true })
                        if not prog then
                            fail = "compile error: " .. cerr:gsub("\n", " | ")
                            return
                        end
                        local v, err = prog:eval(act)
                        if want_err then
                            if not err then fail = "expected error, got " .. show(v) end
                        elseif want_value then
                            if err then
                                fail = "unexpected error: " .. err
                            else
                                local want = to_value(want_value)
                                if not same(v, want) then
                                    fail = "got " .. show(v) .. ", want " .. show(want)
                                end
                            end
                        elseif err then
                            -- no matcher: the default expectation is `true`
                            fail = "unexpected error: " .. err
                        elseif v ~= true then
                            fail = "got " .. show(v) .. ", want true"
                        end
                    end)
                    if not ok2 then
                        if err2 == Unsupported then fail = "unsupported expected value"
                        else fail = "runner error: " .. tostring(err2) end
                    end
                    if fail then
                        failed = failed + 1
                        print("FAIL " .. full .. ": " .. fail .. (verbose and ("  [" .. expr .. "]") or ""))
                    else
                        passed = passed + 1
                    end
                end
                ::continue::
            end
        end
    end
    ::next_file::
end

print(string.format("%d passed, %d failed, %d skipped", passed, failed, skipped))
os.exit(failed == 0 and 0 or 1)
