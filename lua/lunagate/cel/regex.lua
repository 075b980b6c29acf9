-- lunagate/cel/regex.lua -- small backtracking regex engine for CEL matches()/regexReplace()
-- SPDX-License-Identifier: MIT
--
-- Covers the RE2 syntax commonly used in policies: literals, ., [classes] with ranges, negation
-- and [:posix:] names, \d \w \s \D \W \S \b \B \A \z, escapes (\n \t \x41 \x{263a}), groups
-- (capturing, (?:...), (?P<name>...)), alternation, anchors ^ $, quantifiers * + ? {m} {m,}
-- {m,n} with non-greedy variants, and the flags (?i) (?s) (?m) (?U). Matching works on code
-- points. No backreferences (RE2 has none). Compiled patterns are cached.
-- M.compile(pattern) -> re | nil, err ; re:find(s, init) -> start, end (byte offsets) , caps

local M = {}

local utf8_codes = utf8.codes

-- ---- Parser: pattern -> node tree ----

local function is_word(c)
    return (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) or c == 95
end
local function is_digit(c) return c >= 48 and c <= 57 end
local function is_space(c) return c == 32 or (c >= 9 and c <= 13) end

local POSIX = {
    alpha = function(c) return (c >= 65 and c <= 90) or (c >= 97 and c <= 122) end,
    digit = is_digit,
    alnum = function(c) return is_digit(c) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) end,
    space = is_space,
    upper = function(c) return c >= 65 and c <= 90 end,
    lower = function(c) return c >= 97 and c <= 122 end,
    punct = function(c)
        return (c >= 33 and c <= 47) or (c >= 58 and c <= 64) or (c >= 91 and c <= 96) or
            (c >= 123 and c <= 126)
    end,
    xdigit = function(c) return is_digit(c) or (c >= 65 and c <= 70) or (c >= 97 and c <= 102) end,
    word = is_word,
    blank = function(c) return c == 32 or c == 9 end,
    cntrl = function(c) return c < 32 or c == 127 end,
    print = function(c) return c >= 32 and c < 127 end,
    graph = function(c) return c > 32 and c < 127 end,
    ascii = function(c) return c < 128 end,
}

local CLASS_ESC = {
    d = is_digit, w = is_word, s = is_space,
    D = function(c) return not is_digit(c) end,
    W = function(c) return not is_word(c) end,
    S = function(c) return not is_space(c) end,
}
local CHAR_ESC = { n = 10, t = 9, r = 13, f = 12, v = 11, a = 7 }

local function parse(pat)
    local cps = {}
    for _, c in utf8_codes(pat) do cps[#cps + 1] = c end
    local pos, n = 1, #cps
    local ngroups = 0
    local names = {}
    local flags = { i = false, s = false, m = false, U = false }

    local function err(msg) error({ re_error = msg .. " at offset " .. pos }, 0) end
    local function peek() return cps[pos] end
    local function ch(c) return c and utf8.char(c) end

    local parse_alt

    local function parse_escape(in_class)
        pos = pos + 1                         -- skip backslash
        local c = cps[pos]
        if not c then err("trailing backslash") end
        pos = pos + 1
        local s = ch(c)
        if CLASS_ESC[s] then return { t = "set", fns = { CLASS_ESC[s] }, items = {} } end
        if CHAR_ESC[s] then return { t = "char", c = CHAR_ESC[s] } end
        if s == "x" then
            local hex
            if cps[pos] == 123 then          -- \x{...}
                local j = pos + 1
                while cps[j] and cps[j] ~= 125 do j = j + 1 end
                local t = {}
                for q = pos + 1, j - 1 do t[#t + 1] = ch(cps[q]) end
                hex = table.concat(t)
                pos = j + 1
            else
                hex = (ch(cps[pos]) or "") .. (ch(cps[pos + 1]) or "")
                pos = pos + 2
            end
            local v = tonumber(hex, 16)
            if not v then err("invalid \\x escape") end
            return { t = "char", c = v }
        end
        if not in_class then
            if s == "b" then return { t = "wordb", neg = false } end
            if s == "B" then return { t = "wordb", neg = true } end
            if s == "A" then return { t = "bot" } end
            if s == "z" then return { t = "eot" } end
        end
        if s == "p" or s == "P" then err("unicode classes are not supported") end
        if is_word(c) and not is_digit(c) then err("invalid escape \\" .. s) end
        if is_digit(c) then err("backreferences are not supported") end
        return { t = "char", c = c }
    end

    local function parse_class()
        pos = pos + 1                         -- skip [
        local node = { t = "set", items = {}, fns = {}, neg = false }
        if peek() == 94 then node.neg = true; pos = pos + 1 end
        local first = true
        while true do
            local c = peek()
            if c == nil then err("missing ]") end
            if c == 93 and not first then pos = pos + 1; break end
            first = false
            local lo
            if c == 91 and cps[pos + 1] == 58 then   -- [:name:]
                local j = pos + 2
                local t = {}
                while cps[j] and cps[j] ~= 58 do t[#t + 1] = ch(cps[j]); j = j + 1 end
                local name = table.concat(t)
                local neg = name:sub(1, 1) == "^"
                if neg then name = name:sub(2) end
                local f = POSIX[name]
                if not f or cps[j + 1] ~= 93 then err("invalid character class") end
                node.fns[#node.fns + 1] = neg and function(x) return not f(x) end or f
                pos = j + 2
            else
                if c == 92 then
                    local e = parse_escape(true)
                    if e.t == "set" then
                        node.fns[#node.fns + 1] = e.fns[1]
                    else
                        lo = e.c
                    end
                else
                    lo = c
                    pos = pos + 1
                end
                if lo then
                    local hi = lo
                    if peek() == 45 and cps[pos + 1] and cps[pos + 1] ~= 93 then
                        pos = pos + 1
                        if peek() == 92 then
                            local e = parse_escape(true)
                            if e.t ~= "char" then err("invalid class range") end
                            hi = e.c
                        else
                            hi = peek(); pos = pos + 1
                        end
                        if hi < lo then err("invalid class range") end
                    end
                    node.items[#node.items + 1] = { lo, hi }
                end
            end
        end
        return node
    end

    local function parse_atom()
        local c = peek()
        if c == 40 then                        -- (
            pos = pos + 1
            local idx, name
            if peek() == 63 then               -- (?
                pos = pos + 1
                local d = peek()
                if d == 80 or d == 60 then     -- (?P<name> or (?<name>
                    if d == 80 then pos = pos + 1 end
                    if peek() ~= 60 then err("invalid named group") end
                    pos = pos + 1
                    local t = {}
                    while peek() and peek() ~= 62 do t[#t + 1] = ch(peek()); pos = pos + 1 end
                    pos = pos + 1
                    name = table.concat(t)
                    ngroups = ngroups + 1
                    idx = ngroups
                    names[name] = idx
                else
                    -- flags: (?i) (?i:...) (?-i)
                    local on = true
                    local saved = { i = flags.i, s = flags.s, m = flags.m, U = flags.U }
                    while true do
                        local f = peek()
                        if f == nil then err("missing )") end
                        local fs = ch(f)
                        pos = pos + 1
                        if fs == "-" then on = false
                        elseif flags[fs] ~= nil then flags[fs] = on
                        elseif fs == ")" then return { t = "empty" }
                        elseif fs == ":" then
                            local inner = parse_alt()
                            if peek() ~= 41 then err("missing )") end
                            pos = pos + 1
                            flags.i, flags.s, flags.m, flags.U = saved.i, saved.s, saved.m, saved.U
                            return { t = "group", node = inner }
                        else err("invalid flag") end
                    end
                end
            else
                ngroups = ngroups + 1
                idx = ngroups
            end
            local inner = parse_alt()
            if peek() ~= 41 then err("missing )") end
            pos = pos + 1
            return { t = "group", idx = idx, node = inner }
        elseif c == 91 then
            local node = parse_class()
            node.icase = flags.i
            return node
        elseif c == 46 then
            pos = pos + 1
            return { t = "any", nl = flags.s }
        elseif c == 94 then
            pos = pos + 1
            return { t = flags.m and "bol" or "bot" }
        elseif c == 36 then
            pos = pos + 1
            return { t = flags.m and "eol" or "eot" }
        elseif c == 92 then
            local node = parse_escape(false)
            node.icase = flags.i
            return node
        elseif c == 42 or c == 43 or c == 63 then
            err("missing argument to repetition operator")
        else
            pos = pos + 1
            return { t = "char", c = c, icase = flags.i }
        end
    end

    local function parse_repeat()
        local atom = parse_atom()
        while true do
            local c = peek()
            local min, max
            if c == 42 then min, max = 0, nil; pos = pos + 1
            elseif c == 43 then min, max = 1, nil; pos = pos + 1
            elseif c == 63 then min, max = 0, 1; pos = pos + 1
            elseif c == 123 then
                -- {m}, {m,}, {m,n}; anything else is a literal {
                local j = pos + 1
                local t = {}
                while cps[j] and cps[j] ~= 125 do t[#t + 1] = ch(cps[j]); j = j + 1 end
                local body = table.concat(t)
                local a, comma, b = body:match("^(%d+)(,?)(%d*)$")
                if not a or not cps[j] then return atom end
                min = tonumber(a)
                if comma == "" then max = min elseif b ~= "" then max = tonumber(b) end
                if (max and max < min) or min > 1000 or (max and max > 1000) then
                    err("invalid repeat count")
                end
                pos = j + 1
            else
                return atom
            end
            if atom.t == "rep" then err("invalid nested repetition operator") end
            local greedy = not flags.U
            if peek() == 63 then greedy = not greedy; pos = pos + 1 end
            atom = { t = "rep", min = min, max = max, greedy = greedy, node = atom }
        end
    end

    local function parse_seq()
        local list = {}
        while true do
            local c = peek()
            if c == nil or c == 124 or c == 41 then break end
            list[#list + 1] = parse_repeat()
        end
        if #list == 1 then return list[1] end
        return { t = "seq", list = list }
    end

    parse_alt = function()
        local alts = { parse_seq() }
        while peek() == 124 do
            pos = pos + 1
            alts[#alts + 1] = parse_seq()
        end
        if #alts == 1 then return alts[1] end
        return { t = "alt", list = alts }
    end

    local root = parse_alt()
    if pos <= n then err("unexpected )") end
    return root, ngroups, names
end

-- ---- Compiler: node tree -> matcher closures m(i, k) over the current subject ----

local S, N, CAPS                             -- subject code points, length, capture positions

-- Backtracking can take exponential time on patterns such as (a+)+$; a step budget per search
-- turns that into an error instead of a stalled request (RE2 itself is linear time).
local MAX_STEPS = 300000
local steps = 0
local function too_complex()
    error("regex match exceeded " .. MAX_STEPS .. " backtracking steps", 0)
end

local function lower(c)
    if c >= 65 and c <= 90 then return c + 32 end
    return c
end

local function test_of(node)
    if node.t == "char" then
        local want = node.c
        if node.icase then
            want = lower(want)
            return function(c) return lower(c) == want end
        end
        return function(c) return c == want end
    elseif node.t == "any" then
        if node.nl then return function() return true end end
        return function(c) return c ~= 10 end
    elseif node.t == "set" then
        local items, fns, neg, icase = node.items, node.fns, node.neg, node.icase
        return function(c)
            local hit = false
            for i = 1, #items do
                local r = items[i]
                if c >= r[1] and c <= r[2] then hit = true; break end
                if icase then
                    local lc, uc = lower(c), c
                    if c >= 97 and c <= 122 then uc = c - 32 end
                    if (lc >= r[1] and lc <= r[2]) or (uc >= r[1] and uc <= r[2]) then
                        hit = true; break
                    end
                end
            end
            if not hit then
                for i = 1, #fns do
                    if fns[i](c) then hit = true; break end
                end
            end
            if neg then return not hit end
            return hit
        end
    end
    return nil
end

local compile_node

local function compile_rep(node)
    local min, max, greedy = node.min, node.max, node.greedy
    local test = test_of(node.node)
    if test then
        -- single-character repetition: iterate, no recursion per character
        return function(i, k)
            local j = i
            local limit = max and (i + max) or (N + 1)
            steps = steps + 1
            if steps > MAX_STEPS then too_complex() end
            if greedy then
                while j < limit and j <= N and test(S[j]) do j = j + 1 end
                while j - i >= min do
                    steps = steps + 1
                    if steps > MAX_STEPS then too_complex() end
                    local r = k(j)
                    if r then return r end
                    j = j - 1
                end
                return false
            end
            while j - i < min do
                if j > N or not test(S[j]) then return false end
                j = j + 1
            end
            while true do
                local r = k(j)
                if r then return r end
                if j >= limit or j > N or not test(S[j]) then return false end
                j = j + 1
            end
        end
    end
    local sub = compile_node(node.node)
    local function rep(i, k, count)
        steps = steps + 1
        if steps > MAX_STEPS then too_complex() end
        if count < min then
            return sub(i, function(j) return rep(j, k, count + 1) end)
        end
        if greedy then
            if max == nil or count < max then
                local r = sub(i, function(j)
                    if j == i then return false end
                    return rep(j, k, count + 1)
                end)
                if r then return r end
            end
            return k(i)
        end
        local r = k(i)
        if r then return r end
        if max == nil or count < max then
            return sub(i, function(j)
                if j == i then return false end
                return rep(j, k, count + 1)
            end)
        end
        return false
    end
    return function(i, k) return rep(i, k, 0) end
end

local function word_at(i) return i >= 1 and i <= N and is_word(S[i]) end

compile_node = function(node)
    local t = node.t
    local test = test_of(node)
    if test then
        return function(i, k)
            steps = steps + 1
            if steps > MAX_STEPS then too_complex() end
            if i <= N and test(S[i]) then return k(i + 1) end
            return false
        end
    elseif t == "empty" then
        return function(i, k) return k(i) end
    elseif t == "seq" then
        local ms = {}
        for i = 1, #node.list do ms[i] = compile_node(node.list[i]) end
        local cnt = #ms
        local function step(idx, i, k)
            if idx > cnt then return k(i) end
            return ms[idx](i, function(j) return step(idx + 1, j, k) end)
        end
        return function(i, k) return step(1, i, k) end
    elseif t == "alt" then
        local ms = {}
        for i = 1, #node.list do ms[i] = compile_node(node.list[i]) end
        return function(i, k)
            for a = 1, #ms do
                local r = ms[a](i, k)
                if r then return r end
            end
            return false
        end
    elseif t == "group" then
        local sub = compile_node(node.node)
        local idx = node.idx
        if not idx then return sub end
        local si, ei = 2 * idx - 1, 2 * idx
        return function(i, k)
            return sub(i, function(j)
                local os, oe = CAPS[si], CAPS[ei]
                CAPS[si], CAPS[ei] = i, j
                local r = k(j)
                if not r then CAPS[si], CAPS[ei] = os, oe end
                return r
            end)
        end
    elseif t == "rep" then
        return compile_rep(node)
    elseif t == "bot" then
        return function(i, k) if i == 1 then return k(i) end return false end
    elseif t == "eot" then
        return function(i, k) if i == N + 1 then return k(i) end return false end
    elseif t == "bol" then
        return function(i, k)
            if i == 1 or S[i - 1] == 10 then return k(i) end
            return false
        end
    elseif t == "eol" then
        return function(i, k)
            if i == N + 1 or S[i] == 10 then return k(i) end
            return false
        end
    elseif t == "wordb" then
        local neg = node.neg
        return function(i, k)
            local b = word_at(i - 1) ~= word_at(i)
            if b ~= neg then return k(i) end
            return false
        end
    end
    error("regex: unknown node " .. tostring(t))
end

local RE = {}
RE.__index = RE

local function final(i) return i end

-- Searches s (UTF-8) from code point index `from` (1-based); returns start cp index, end cp
-- index (exclusive), captures array, code point array.
function RE:exec(cps, from)
    S, N = cps, #cps
    steps = 0
    local first, dotstar = self.first, self.dotstar
    for start = from or 1, N + 1 do
        -- cheap start filters: a leading literal must be there; a leading .* only needs to
        -- start at the beginning of each line
        if first and S[start] ~= first then goto skip end
        if dotstar and start > 1 and S[start - 1] ~= 10 and start ~= from then goto skip end
        CAPS = {}
        local e = self.m(start, final)
        if e then
            local caps = CAPS
            S, CAPS = nil, nil
            return start, e, caps
        end
        if self.anchored then break end
        ::skip::
    end
    S, CAPS = nil, nil
    return nil
end

-- code points of s; a subject that is not valid UTF-8 (raw header bytes) is matched byte-wise
local function to_cps(s)
    local cps, n = {}, 0
    if utf8.len(s) then
        for _, c in utf8_codes(s) do n = n + 1; cps[n] = c end
    else
        for i = 1, #s do cps[i] = string.byte(s, i) end
    end
    return cps
end
M.to_cps = to_cps

local function guarded_exec(self, cps, from)
    local ok, a, b, c = pcall(self.exec, self, cps, from)
    if not ok then
        S, CAPS = nil, nil
        error(a, 0)
    end
    return a, b, c
end

function RE:test(s)
    return guarded_exec(self, to_cps(s), 1) ~= nil
end

local function cps_sub(cps, i, j, char)     -- code points i..j-1 as UTF-8 (or bytes)
    if j <= i then return "" end
    return (char or utf8.char)(table.unpack(cps, i, j - 1))
end

-- Replaces every match of the pattern in s; repl may use $1, ${1}, ${name} and $$.
function RE:replace(s, repl)
    local cps = to_cps(s)
    local char = not utf8.len(s) and string.char or utf8.char
    local out, pos = {}, 1
    local n = #cps
    local names = self.names
    while pos <= n + 1 do
        local st, e, caps = guarded_exec(self, cps, pos)
        if not st then break end
        out[#out + 1] = cps_sub(cps, pos, st, char)
        out[#out + 1] = (repl:gsub("%$(%$?)({?)([%w_]*)(}?)", function(dollar, ob, name, cb)
            if dollar == "$" then return "$" .. ob .. name .. cb end
            if (ob == "{") ~= (cb == "}") or name == "" then return nil end
            local idx = tonumber(name) or names[name]
            if idx == 0 then return cps_sub(cps, st, e, char) end
            if not idx or not caps[2 * idx - 1] then return "" end
            return cps_sub(cps, caps[2 * idx - 1], caps[2 * idx], char)
        end))
        if e == st then
            if st <= n then out[#out + 1] = char(cps[st]) end
            pos = e + 1
        else
            pos = e
        end
        if self.anchored then break end
    end
    if pos <= n then out[#out + 1] = cps_sub(cps, pos, n + 1, char) end
    return table.concat(out)
end

local cache, cache_n = {}, 0

function M.compile(pat)
    local re = cache[pat]
    if re then return re end
    if not utf8.len(pat) then return nil, "invalid UTF-8 in pattern" end
    local ok, root, ngroups, names = pcall(parse, pat)
    if not ok then
        if type(root) == "table" and root.re_error then return nil, root.re_error end
        error(root, 0)
    end
    local head = root
    while head.t == "seq" and head.list[1] do head = head.list[1] end
    while head.t == "group" do head = head.node end
    local first = head.t == "char" and not head.icase and head.c or nil
    local dotstar = head.t == "rep" and head.min == 0 and head.max == nil and head.node.t == "any"
        and not head.node.nl
    re = setmetatable({ m = compile_node(root), ngroups = ngroups, names = names,
                        first = first, dotstar = dotstar,
                        anchored = root.t == "bot" or (root.t == "seq" and root.list[1] ~= nil
                            and root.list[1].t == "bot") },
                      RE)
    if cache_n > 1000 then cache, cache_n = {}, 0 end
    cache[pat] = re
    cache_n = cache_n + 1
    return re
end

return M
