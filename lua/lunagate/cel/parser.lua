-- lunagate/cel/parser.lua -- CEL lexer and recursive-descent parser producing a small AST
-- SPDX-License-Identifier: MIT
--
-- AST nodes are tables with a kind `k` and the 1-based source offset `pos`:
--   {k="lit", v=value}                 {k="ident", name=}        {k="select", x=, f=, test=bool}
--   {k="index", x=, i=}                {k="call", fn=, target=node|nil, args={...}}
--   {k="list", items={...}}            {k="map", entries={{key, value},...}}
--   {k="struct", name=, fields={{name, value},...}}
--   {k="cond", c=, a=, b=}             {k="and"/"or", l=, r=}     {k="not", x=}  {k="neg", x=}
--   {k="bin", op=, l=, r=}  (op: + - * / % == != < <= > >= in)
-- Literal values use the value model of lunagate.cel (see cel.lua); the parser receives the
-- constructors it needs (uint, bytes, null) from the runtime through parse(src, vals).

local utf8_char = utf8.char
local sbyte, ssub, sfind = string.byte, string.sub, string.find

local M = {}

local RESERVED = {
    ["as"] = true, ["break"] = true, ["const"] = true, ["continue"] = true, ["else"] = true,
    ["for"] = true, ["function"] = true, ["if"] = true, ["import"] = true, ["let"] = true,
    ["loop"] = true, ["package"] = true, ["namespace"] = true, ["return"] = true,
    ["var"] = true, ["void"] = true,
}

-- Formats "column N: message\n  <excerpt>\n  ^" for an offset into src.
local function syntax_error(src, pos, msg)
    local line_start, line_no = 1, 1
    for i = 1, math.min(pos - 1, #src) do
        if sbyte(src, i) == 10 then line_start, line_no = i + 1, line_no + 1 end
    end
    local line_end = sfind(src, "\n", line_start, true)
    local line = ssub(src, line_start, (line_end or #src + 1) - 1)
    -- column counts code points, as users see them
    local col = (utf8.len(ssub(src, line_start, pos - 1)) or (pos - line_start)) + 1
    local excerpt, caret = line, col
    if #line > 60 then                      -- keep the excerpt short around the column
        local from = math.max(1, pos - line_start + 1 - 30)
        excerpt = ssub(line, from, from + 59)
        caret = (utf8.len(ssub(line, from, pos - line_start)) or (pos - line_start - from + 1)) + 1
    end
    local where = line_no > 1 and ("line " .. line_no .. ", column " .. col) or ("column " .. col)
    error({ cel_syntax = where .. ": " .. msg .. "\n  " .. excerpt .. "\n  "
            .. string.rep(" ", caret - 1) .. "^" }, 0)
end

-- ---- Lexer ----

local function is_digit(c) return c and c >= 48 and c <= 57 end
local function is_hex(c)
    return c and ((c >= 48 and c <= 57) or (c >= 65 and c <= 70) or (c >= 97 and c <= 102))
end
local function is_ident_start(c)
    return c and ((c >= 65 and c <= 90) or (c >= 97 and c <= 122) or c == 95)
end
local function is_ident(c) return is_ident_start(c) or is_digit(c) end

local SIMPLE_ESC = {
    [97] = "\a", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t",
    [118] = "\v", [92] = "\\", [63] = "?", [34] = '"', [39] = "'", [96] = "`",
}

-- Decodes a quoted literal starting at i (after any prefix). Returns value string, next index.
local function lex_string(src, i, raw, is_bytes)
    local q = sbyte(src, i)
    local triple = sbyte(src, i + 1) == q and sbyte(src, i + 2) == q
    local start = i
    i = i + (triple and 3 or 1)
    local out, n = {}, 0
    while true do
        local c = sbyte(src, i)
        if c == nil then syntax_error(src, start, "unterminated string literal") end
        if c == q and (not triple or (sbyte(src, i + 1) == q and sbyte(src, i + 2) == q)) then
            i = i + (triple and 3 or 1)
            break
        end
        if not triple and (c == 10 or c == 13) then
            syntax_error(src, start, "unterminated string literal")
        end
        if c == 92 and not raw then
            local e = sbyte(src, i + 1)
            if e and SIMPLE_ESC[e] then
                n = n + 1; out[n] = SIMPLE_ESC[e]; i = i + 2
            elseif e == 120 or e == 88 then      -- \xHH
                local h = ssub(src, i + 2, i + 3)
                if not (is_hex(sbyte(h, 1)) and is_hex(sbyte(h, 2))) then
                    syntax_error(src, i, "invalid \\x escape")
                end
                local v = tonumber(h, 16)
                n = n + 1; out[n] = is_bytes and string.char(v) or utf8_char(v); i = i + 4
            elseif e == 117 or e == 85 then      -- \uHHHH \UHHHHHHHH
                if is_bytes then syntax_error(src, i, "unicode escape in bytes literal") end
                local len = e == 117 and 4 or 8
                local h = ssub(src, i + 2, i + 1 + len)
                if #h ~= len or not h:match("^%x+$") then
                    syntax_error(src, i, "invalid unicode escape")
                end
                local v = tonumber(h, 16)
                if v > 0x10FFFF or (v >= 0xD800 and v <= 0xDFFF) then
                    syntax_error(src, i, "invalid unicode code point")
                end
                n = n + 1; out[n] = utf8_char(v); i = i + 2 + len
            elseif e and e >= 48 and e <= 51 then -- octal \OOO
                local o = ssub(src, i + 1, i + 3)
                if not o:match("^[0-7][0-7][0-7]$") then syntax_error(src, i, "invalid octal escape") end
                local v = tonumber(o, 8)
                n = n + 1; out[n] = is_bytes and string.char(v) or utf8_char(v); i = i + 4
            else
                syntax_error(src, i, "invalid escape sequence")
            end
        elseif c == 13 and triple then           -- normalise CRLF / CR inside triple quotes
            n = n + 1; out[n] = "\n"
            i = i + (sbyte(src, i + 1) == 10 and 2 or 1)
        else
            n = n + 1; out[n] = string.char(c); i = i + 1
        end
    end
    local s = table.concat(out)
    if not is_bytes and not utf8.len(s) then syntax_error(src, start, "invalid UTF-8 in string") end
    return s, i
end

-- Token: {t=type, v=value, pos=offset}. Types: "int","uint","double","string","bytes","ident",
-- "eof", or the operator text itself.
local function tokenize(src)
    local toks, n = {}, 0
    local i, len = 1, #src
    local function push(t, v, pos) n = n + 1; toks[n] = { t = t, v = v, pos = pos } end
    while true do
        local c = sbyte(src, i)
        -- whitespace and comments
        while c == 32 or c == 9 or c == 10 or c == 13 or c == 12 or
            (c == 47 and sbyte(src, i + 1) == 47) do
            if c == 47 then
                local e = sfind(src, "\n", i, true)
                i = e and e + 1 or len + 1
            else
                i = i + 1
            end
            c = sbyte(src, i)
        end
        if c == nil then push("eof", nil, i); break end
        local start = i
        if is_digit(c) or (c == 46 and is_digit(sbyte(src, i + 1))) then
            if c == 48 and (sbyte(src, i + 1) == 120 or sbyte(src, i + 1) == 88) then
                local j = i + 2
                while is_hex(sbyte(src, j)) do j = j + 1 end
                if j == i + 2 then syntax_error(src, i, "invalid hex literal") end
                local digits = ssub(src, i + 2, j - 1)
                local suf = sbyte(src, j)
                if suf == 117 or suf == 85 then
                    if #digits:gsub("^0+", "") > 16 then syntax_error(src, i, "uint literal out of range") end
                    push("uint", math.tointeger(tonumber(digits, 16)) or 0, start); i = j + 1
                else
                    local v = #digits:gsub("^0+", "") <= 16 and math.tointeger(tonumber(digits, 16))
                    if not v or v < 0 then
                        if digits:gsub("^0+", ""):lower() == "8000000000000000" then
                            push("int_min", nil, start); i = j; goto next
                        end
                        syntax_error(src, i, "int literal out of range")
                    end
                    push("int", v, start); i = j
                end
            else
                local j = i
                while is_digit(sbyte(src, j)) do j = j + 1 end
                local is_float = false
                if sbyte(src, j) == 46 and is_digit(sbyte(src, j + 1)) then
                    is_float = true
                    j = j + 1
                    while is_digit(sbyte(src, j)) do j = j + 1 end
                end
                local e = sbyte(src, j)
                if e == 101 or e == 69 then
                    local k = j + 1
                    if sbyte(src, k) == 43 or sbyte(src, k) == 45 then k = k + 1 end
                    if is_digit(sbyte(src, k)) then
                        while is_digit(sbyte(src, k)) do k = k + 1 end
                        j = k
                        is_float = true
                    end
                end
                local text = ssub(src, i, j - 1)
                if is_float then
                    push("double", tonumber(text) + 0.0, start); i = j
                else
                    local suf = sbyte(src, j)
                    if suf == 117 or suf == 85 then
                        local v = math.tointeger(tonumber(text))
                        local ok = v and v >= 0
                        if not ok then
                            -- 2^63 .. 2^64-1: parse digit by digit with wraparound check
                            local acc, over = 0, false
                            for d in text:gmatch("%d") do
                                local nacc = acc * 10 + tonumber(d)
                                if math.ult(nacc, acc) or
                                    (acc ~= 0 and math.ult(0x1999999999999999, acc)) then
                                    over = true
                                end
                                acc = nacc
                            end
                            if over then syntax_error(src, i, "uint literal out of range") end
                            v = acc
                        end
                        push("uint", v, start); i = j + 1
                    else
                        local v = math.tointeger(tonumber(text))
                        if not v or #text > 19 then
                            if text:gsub("^0+", "") == "9223372036854775808" then
                                push("int_min", nil, start); i = j; goto next
                            end
                            syntax_error(src, i, "int literal out of range")
                        end
                        push("int", v, start); i = j
                    end
                end
            end
        elseif c == 34 or c == 39 then
            local s; s, i = lex_string(src, i, false, false); push("string", s, start)
        elseif is_ident_start(c) then
            local j = i
            while is_ident(sbyte(src, j)) do j = j + 1 end
            local word = ssub(src, i, j - 1)
            local nc = sbyte(src, j)
            local lw = word:lower()
            if (lw == "r" or lw == "b" or lw == "rb" or lw == "br") and (nc == 34 or nc == 39) then
                local raw = lw:find("r", 1, true) ~= nil
                local isb = lw:find("b", 1, true) ~= nil
                local s; s, i = lex_string(src, j, raw, isb)
                if isb then push("bytes", s, start) else push("string", s, start) end
            else
                push("ident", word, start); i = j
            end
        elseif c == 96 then                      -- `quoted.field-name`
            local e = sfind(src, "`", i + 1, true)
            if not e or e == i + 1 then syntax_error(src, i, "unterminated quoted identifier") end
            local name = ssub(src, i + 1, e - 1)
            if not name:match("^[%w_%.%-/ ]+$") then syntax_error(src, i, "invalid quoted identifier") end
            push("qident", name, start); i = e + 1
        else
            local two = ssub(src, i, i + 1)
            if two == "==" or two == "!=" or two == "<=" or two == ">=" or two == "&&" or two == "||" then
                push(two, nil, start); i = i + 2
            elseif sfind("+-*/%<>!?:.,()[]{}", string.char(c), 1, true) then
                push(string.char(c), nil, start); i = i + 1
            else
                local ok, cp = pcall(utf8.codepoint, src, i)
                local shown = ok and utf8.char(cp) or string.format("\\x%02x", c)
                syntax_error(src, i, "unexpected character '" .. shown .. "'")
            end
        end
        ::next::
    end
    return toks
end

-- ---- Parser ----

local MAX_DEPTH = 250

function M.parse(src, vals)
    local toks = tokenize(src)
    local p = 1
    local depth = 0
    local tok = toks[1]

    local function advance() p = p + 1; tok = toks[p] end
    local function fail(msg, t) syntax_error(src, (t or tok).pos, msg) end
    local function describe(t)
        if t.t == "eof" then return "end of input" end
        if t.t == "ident" then return "'" .. t.v .. "'" end
        if t.t == "int" or t.t == "uint" or t.t == "double" or t.t == "string" or t.t == "bytes" then
            return "literal"
        end
        return "'" .. t.t .. "'"
    end
    local function expect(t, what)
        if tok.t ~= t then fail("expected " .. (what or ("'" .. t .. "'")) .. ", found " .. describe(tok)) end
        local cur = tok
        advance()
        return cur
    end
    local function enter()
        depth = depth + 1
        if depth > MAX_DEPTH then fail("expression nested too deeply") end
    end

    local expr

    local function args_until(close)
        local list = {}
        if tok.t ~= close then
            while true do
                list[#list + 1] = expr()
                if tok.t ~= "," then break end
                advance()
                if tok.t == close then break end     -- trailing comma
            end
        end
        expect(close)
        return list
    end

    local function primary()
        local t = tok
        local tt = t.t
        if tt == "int" then advance(); return { k = "lit", v = t.v, pos = t.pos }
        elseif tt == "int_min" then fail("int literal out of range")
        elseif tt == "uint" then advance(); return { k = "lit", v = vals.uint(t.v), pos = t.pos }
        elseif tt == "double" then advance(); return { k = "lit", v = t.v, pos = t.pos }
        elseif tt == "string" then advance(); return { k = "lit", v = t.v, pos = t.pos }
        elseif tt == "bytes" then advance(); return { k = "lit", v = vals.bytes(t.v), pos = t.pos }
        elseif tt == "(" then
            advance()
            local e = expr()
            expect(")")
            return e
        elseif tt == "[" then
            advance()
            return { k = "list", items = args_until("]"), pos = t.pos }
        elseif tt == "{" then
            advance()
            local entries = {}
            if tok.t ~= "}" then
                while true do
                    local key = expr()
                    expect(":")
                    entries[#entries + 1] = { key, expr() }
                    if tok.t ~= "," then break end
                    advance()
                    if tok.t == "}" then break end
                end
            end
            expect("}")
            return { k = "map", entries = entries, pos = t.pos }
        elseif tt == "." or tt == "ident" then
            local leading = false
            if tt == "." then leading = true; advance() end
            local id = expect("ident", "identifier")
            local name = id.v
            if RESERVED[name] or name == "in" then fail("reserved identifier '" .. name .. "'", id) end
            if tok.t == "(" then
                advance()
                return { k = "call", fn = name, args = args_until(")"), pos = id.pos }
            end
            if name == "true" and not leading then return { k = "lit", v = true, pos = id.pos } end
            if name == "false" and not leading then return { k = "lit", v = false, pos = id.pos } end
            if name == "null" and not leading then return { k = "lit", v = vals.null, pos = id.pos } end
            return { k = "ident", name = name, pos = id.pos, leading = leading }
        else
            fail("unexpected " .. describe(t))
        end
    end

    -- dotted name of a select chain made only of identifiers, or nil
    local function qualified_name(n)
        if n.k == "ident" then return n.name end
        if n.k == "select" and not n.test then
            local q = qualified_name(n.x)
            return q and (q .. "." .. n.f)
        end
        return nil
    end

    local function member()
        local e = primary()
        while true do
            local tt = tok.t
            if tt == "." then
                local dot = tok
                advance()
                local id
                if tok.t == "qident" then
                    id = tok; advance()
                    e = { k = "select", x = e, f = id.v, pos = dot.pos }
                else
                    id = expect("ident", "field name")
                    if tok.t == "(" then
                        advance()
                        e = { k = "call", fn = id.v, target = e, args = args_until(")"), pos = id.pos }
                    else
                        e = { k = "select", x = e, f = id.v, pos = dot.pos }
                    end
                end
            elseif tt == "[" then
                local br = tok
                advance()
                local i = expr()
                expect("]")
                e = { k = "index", x = e, i = i, pos = br.pos }
            elseif tt == "{" and qualified_name(e) then
                local br = tok
                advance()
                local fields = {}
                if tok.t ~= "}" then
                    while true do
                        local f = expect("ident", "field name")
                        expect(":")
                        fields[#fields + 1] = { f.v, expr() }
                        if tok.t ~= "," then break end
                        advance()
                        if tok.t == "}" then break end
                    end
                end
                expect("}")
                e = { k = "struct", name = qualified_name(e), fields = fields, pos = br.pos }
            else
                return e
            end
        end
    end

    local function unary()
        local t = tok
        if t.t == "!" then
            enter()
            advance()
            local e = { k = "not", x = unary(), pos = t.pos }
            depth = depth - 1
            return e
        elseif t.t == "-" then
            enter()
            advance()
            local e
            local nt = tok
            if nt.t == "int_min" then
                advance()
                e = { k = "lit", v = math.mininteger, pos = t.pos }
                -- allow member access on the folded literal, e.g. -9223372036854775808.x
            elseif nt.t == "int" and toks[p + 1].t ~= "." and toks[p + 1].t ~= "[" then
                advance()
                e = { k = "lit", v = -nt.v, pos = t.pos }
            elseif nt.t == "double" and toks[p + 1].t ~= "." and toks[p + 1].t ~= "[" then
                advance()
                e = { k = "lit", v = -nt.v, pos = t.pos }
            else
                e = { k = "neg", x = unary(), pos = t.pos }
            end
            depth = depth - 1
            return e
        end
        return member()
    end

    local MUL = { ["*"] = true, ["/"] = true, ["%"] = true }
    local ADD = { ["+"] = true, ["-"] = true }
    local REL = { ["<"] = true, ["<="] = true, [">"] = true, [">="] = true, ["=="] = true, ["!="] = true }

    local function multiplication()
        local e = unary()
        while MUL[tok.t] do
            local op = tok; advance()
            e = { k = "bin", op = op.t, l = e, r = unary(), pos = op.pos }
        end
        return e
    end
    local function addition()
        local e = multiplication()
        while ADD[tok.t] do
            local op = tok; advance()
            e = { k = "bin", op = op.t, l = e, r = multiplication(), pos = op.pos }
        end
        return e
    end
    local function relation()
        local e = addition()
        while REL[tok.t] or (tok.t == "ident" and tok.v == "in") do
            local op = tok; advance()
            e = { k = "bin", op = op.t == "ident" and "in" or op.t, l = e, r = addition(), pos = op.pos }
        end
        return e
    end
    local function conj()
        local e = relation()
        while tok.t == "&&" do
            local op = tok; advance()
            e = { k = "and", l = e, r = relation(), pos = op.pos }
        end
        return e
    end
    local function disj()
        local e = conj()
        while tok.t == "||" do
            local op = tok; advance()
            e = { k = "or", l = e, r = conj(), pos = op.pos }
        end
        return e
    end
    expr = function()
        enter()
        local e = disj()
        if tok.t == "?" then
            local q = tok
            advance()
            local a = disj()
            expect(":")
            local b = expr()
            e = { k = "cond", c = e, a = a, b = b, pos = q.pos }
        end
        depth = depth - 1
        return e
    end

    local ast = expr()
    if tok.t ~= "eof" then fail("unexpected " .. describe(tok)) end
    return ast
end

M.syntax_error = syntax_error

return M
