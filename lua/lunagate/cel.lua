-- lunagate/cel.lua -- CEL (Common Expression Language) compiled to Lua closures
-- SPDX-License-Identifier: MIT
--
-- Expressions are parsed once (lunagate.cel.parser) and compiled into a tree of Lua closures
-- f(act) -> value; nothing is parsed per request.
--
-- Value model (shared with lunagate.cel.values):
--   CEL int     = Lua integer             CEL double = Lua float      CEL string = Lua string
--   CEL bool    = Lua boolean             CEL null   = cel.null (a unique sentinel table)
--   CEL uint    = {u=<64-bit pattern>} with a uint metatable (cel.uint(n) builds one)
--   CEL bytes   = {s=<string>} with a bytes metatable (cel.bytes(s))
--   CEL list    = Lua array; results carry a list metatable, but any plain table with t[1] ~= nil
--                 is read as a list, so the request record's arrays are used without copying
--   CEL map     = table with a map metatable (ordered keys), or a plain table whose t[1] is nil
--                 (string keys), or a lazy table whose metatable has __celtype = "map"
--   timestamp / duration = {s=, ns=} with their metatables; type values {name=}
--   flatten()/flatten_recursive() results = a box {v=, rec=} understood by compile_fields
-- Errors are values in CEL; here they are raised with error(msg, 0) and caught where CEL absorbs
-- them (&&, ||, ?:, all/exists, default, coalesce) and at the top of prog:eval.
--
-- API:
--   cel.compile(src [, opts]) -> prog | nil, err   err = "column N: message\n  <excerpt>\n  ^"
--       (sources spanning lines report "line L, column N: ..."); unknown functions are compile
--       errors unless opts.lenient (then runtime errors, as the conformance suite expects)
--   prog.refs -> set of variable names and dotted paths read, e.g. {llm=true, ["llm.prompt"]=true}
--   prog:eval(act) -> value | nil, err     act: table (or object with __index) of top-level vars
--   cel.compile_fields({{name, src}, ...}) -> fe | nil, "name: err"; fe.refs (union);
--   fe:eval(act) -> {{name, plain}, ...}   null/error results left out, flatten*() expanded into
--       name.sub / name.0 keys; the {name, plain} entries are read-only (shared across calls)
--   cel.to_plain(v [, null]), cel.null, cel.uint(n), cel.bytes(s), cel.list(t), cel.map(pairs),
--   cel.type_of(v); cel.functions / cel.methods (add f(x) / x.f() implementations);
--   cel.resolvers + cel.ACT_SRC (fast paths used by lunagate.context)

local V = require "lunagate.cel.values"
local parser = require "lunagate.cel.parser"
local stdlib = require "lunagate.cel.stdlib"
local T = require "lunagate.cel.time"
local regex = require "lunagate.cel.regex"

local mtype, getmetatable, setmetatable, type, pcall, error, rawget = math.type, getmetatable,
    setmetatable, type, pcall, error, rawget
local throw, typeof, eq, cmp = V.throw, V.typeof, V.eq, V.cmp
local UINT, BYTES, LIST, MAP, TS, DUR, FLAT, NULL = V.UINT, V.BYTES, V.LIST, V.MAP, V.TS, V.DUR,
    V.FLAT, V.NULL
local add_int, sub_int, mul_int, div_int, mod_int = V.add_int, V.sub_int, V.mul_int, V.div_int,
    V.mod_int
local GLOBAL, MEMBER = stdlib.GLOBAL, stdlib.MEMBER

local cel = {}

cel.null = V.null
cel.uint = V.uint
cel.bytes = V.bytes
cel.list = V.list
cel.map = V.map_from_pairs
cel.type_of = typeof
cel.functions, cel.methods = GLOBAL, MEMBER    -- extension points

-- Regex: PCRE2 through lunagate.re when the runtime provides it (re.compile(pat) -> handle,
-- re.find(handle, s) or handle:find(s) -> truthy on a match), else the Lua engine. The native
-- engine is chosen on first use, and only if it passes a probe; regexReplace always uses the Lua
-- engine.
local function native_regex()
    local ok, re = pcall(require, "lunagate.re")
    if not (ok and type(re) == "table" and type(re.compile) == "function") then return nil end
    local function finder(h)
        if type(re.find) == "function" then return function(s) return re.find(h, s) end end
        if type(re.match) == "function" then return function(s) return re.match(h, s) end end
        if type(h) ~= "string" and h.find then return function(s) return h:find(s) end end
        return nil
    end
    local probe_ok, good = pcall(function()
        local f = finder(re.compile("a+b"))
        return f and f("xaab") and not f("xb")
    end)
    if not (probe_ok and good) then return nil end
    local cache = {}
    return function(pat)
        local r = cache[pat]
        if r then return r end
        local okc, h, err = pcall(re.compile, pat)
        if not okc or not h then return nil, okc and err or h end
        local find = finder(h)
        local own = regex.compile(pat)
        r = {
            test = function(_, s) return find(s) and true or false end,
            replace = function(_, s, repl)
                if own then return own:replace(s, repl) end
                throw("regexReplace: unsupported pattern")
            end,
        }
        cache[pat] = r
        return r
    end
end

do
    local impl
    stdlib.set_regex(function(pat)
        if impl == nil then impl = native_regex() or regex.compile end
        return impl(pat)
    end)
end

local TYPE_NAMES = {
    int = true, uint = true, double = true, bool = true, string = true, bytes = true, list = true,
    map = true, null_type = true, type = true,
    ["google.protobuf.Timestamp"] = true, ["google.protobuf.Duration"] = true,
}

local function nso(op, a, b)
    throw("no such overload: " .. typeof(a) .. " " .. op .. " " .. typeof(b))
end

-- ---- Operators ----

local function op_add(a, b)
    local ta, tb = mtype(a), mtype(b)
    if ta == "integer" and tb == "integer" then return add_int(a, b) end
    if ta == "float" and tb == "float" then return a + b end
    local sa, sb = type(a), type(b)
    if sa == "string" and sb == "string" then return a .. b end
    if sa == "table" and sb == "table" then
        local ma, mb = getmetatable(a), getmetatable(b)
        if ma == UINT and mb == UINT then return V.uint(V.arith_uint("+", a.u, b.u)) end
        if ma == BYTES and mb == BYTES then return V.bytes(a.s .. b.s) end
        if (ma == TS or ma == DUR) and (mb == TS or mb == DUR) then return T.add(a, b) end
        local ya, yb = typeof(a), typeof(b)
        if ya == "list" and yb == "list" then
            local r, n = {}, #a
            for i = 1, n do r[i] = a[i] end
            for i = 1, #b do r[n + i] = b[i] end
            return setmetatable(r, LIST)
        end
    end
    nso("+", a, b)
end

local function op_sub(a, b)
    local ta, tb = mtype(a), mtype(b)
    if ta == "integer" and tb == "integer" then return sub_int(a, b) end
    if ta == "float" and tb == "float" then return a - b end
    local ma, mb = getmetatable(a), getmetatable(b)
    if ma == UINT and mb == UINT and ma then return V.uint(V.arith_uint("-", a.u, b.u)) end
    if (ma == TS or ma == DUR) and (mb == TS or mb == DUR) then return T.sub(a, b) end
    nso("-", a, b)
end

local function arith(op, fint, ffloat)
    return function(a, b)
        local ta, tb = mtype(a), mtype(b)
        if ta == "integer" and tb == "integer" then return fint(a, b) end
        if ta == "float" and tb == "float" then
            if ffloat then return ffloat(a, b) end
            nso(op, a, b)
        end
        if getmetatable(a) == UINT and getmetatable(b) == UINT and type(a) == "table" then
            return V.uint(V.arith_uint(op, a.u, b.u))
        end
        nso(op, a, b)
    end
end
local op_mul = arith("*", mul_int, function(a, b) return a * b end)
local op_div = arith("/", div_int, function(a, b) return a / b end)
local op_mod = arith("%", mod_int, nil)

local function op_eq(a, b)
    if a == b then return a == a end
    local ta = type(a)
    if ta ~= "table" and ta == type(b) and ta ~= "number" then return false end
    return eq(a, b)
end

local function op_in(x, c)
    local ct = typeof(c)
    if ct == "list" then
        for i = 1, #c do
            if eq(x, c[i]) then return true end
        end
        return false
    elseif ct == "map" then
        return V.map_get(c, x) ~= nil
    end
    nso("in", x, c)
end

local BIN = {
    ["+"] = op_add, ["-"] = op_sub, ["*"] = op_mul, ["/"] = op_div, ["%"] = op_mod,
    ["=="] = op_eq,
    ["!="] = function(a, b) return not op_eq(a, b) end,
    ["<"] = function(a, b) return cmp(a, b, "<") == -1 end,
    ["<="] = function(a, b) local r = cmp(a, b, "<="); return r == -1 or r == 0 end,
    [">"] = function(a, b) return cmp(a, b, ">") == 1 end,
    [">="] = function(a, b) local r = cmp(a, b, ">="); return r == 1 or r == 0 end,
    ["in"] = op_in,
}

-- field selection x.f
local function select_field(x, f)
    if type(x) == "table" then
        local mt = getmetatable(x)
        if mt == nil or mt == MAP or mt.__celtype == "map" then
            local v = x[f]
            if v ~= nil then return v end
            throw("no such key: " .. f)
        end
        if mt == LIST then throw("no such key: " .. f) end
    end
    throw("type '" .. typeof(x) .. "' does not support field selection")
end
cel.select = select_field

local function has_field(x, f)
    if type(x) == "table" then
        local mt = getmetatable(x)
        if mt == nil or mt == MAP or mt.__celtype == "map" then
            if mt == nil and x[1] ~= nil then throw("invalid type for has(): list") end
            return x[f] ~= nil
        end
    end
    throw("invalid type for field presence test: " .. typeof(x))
end

local function index(x, i)
    local t = typeof(x)
    if t == "list" then
        local n
        local it = mtype(i)
        if it == "integer" then n = i
        elseif it == "float" then
            n = math.tointeger(i)
            if not n then throw("invalid list index " .. tostring(i)) end
        elseif getmetatable(i) == UINT then n = i.u
        else throw("no such overload: list[" .. typeof(i) .. "]") end
        local v = x[n + 1]
        if n < 0 or v == nil then throw("index out of bounds: " .. tostring(n)) end
        return v
    elseif t == "map" then
        if not (V.valid_key(i) or mtype(i) == "float") then
            throw("no such overload: map[" .. typeof(i) .. "]")
        end
        local v = V.map_get(x, i)
        if v == nil then
            throw("no such key: " .. (type(i) == "table" and typeof(i) or tostring(i)))
        end
        return v
    end
    throw("no such overload: " .. t .. "[" .. typeof(i) .. "]")
end

-- ---- Compiler ----

local compile

local function const(v) return function() return v end end

-- dotted name of an identifier-only select chain, plus its parts
local function chain_parts(n, out)
    if n.k == "ident" then
        out[#out + 1] = n.name
        return true
    end
    if n.k == "select" and not n.test and chain_parts(n.x, out) then
        out[#out + 1] = n.f
        return true
    end
    return false
end

local function add_refs(refs, parts)
    local path = parts[1]
    refs[path] = true
    for i = 2, #parts do
        path = path .. "." .. parts[i]
        refs[path] = true
    end
end

-- Path resolvers (registered by lunagate.context): an activation that keeps its source record
-- under the key cel.ACT_SRC gets dotted paths such as "llm.provider" read straight from the
-- record by resolvers[path](src) -> value | nil, without building intermediate objects. A
-- resolver may also be a descriptor {k1, k2, int=bool, default=function(src[k1])}: the value is
-- src[k1][k2] (integral floats become ints when int is set; default() fills a missing field).
local ACT_SRC = setmetatable({}, { __name = "cel.ACT_SRC" })
local resolvers = {}
cel.ACT_SRC, cel.resolvers = ACT_SRC, resolvers

local compile_qualified_generic

-- Compiles a select chain rooted at a free identifier with longest-prefix name resolution.
local function compile_qualified(parts, cx)
    local generic = compile_qualified_generic(parts, cx)
    local n = #parts
    local path, best, best_i = parts[1], nil, nil
    for i = 2, n do
        path = path .. "." .. parts[i]
        if resolvers[path] then best, best_i = resolvers[path], i end
    end
    if not best then return generic end
    local missing_msg = "no such key: " .. parts[best_i]    -- built once: errors are common
    if best_i == n and type(best) == "table" then
        -- descriptor {k1, k2[, int=true]}: value is src[k1][k2] (ints normalised when int=true)
        local k1, k2, as_int = best[1], best[2], best.int
        return function(act)
            local src = act[ACT_SRC]
            if src == nil then return generic(act) end
            local o = src[k1]
            if o == nil then throw(missing_msg) end
            local v = o[k2]
            if v == nil then
                local dflt = best.default
                if dflt then v = dflt(o) end
                if v == nil then throw(missing_msg) end
            end
            if as_int and mtype(v) == "float" then v = math.tointeger(v) or v end
            return v
        end
    end
    if type(best) == "table" then
        local k1, k2 = best[1], best[2]
        local f = best
        best = function(src)
            local o = src[k1]
            if o == nil then return nil end
            local v = o[k2]
            if v == nil and f.default then v = f.default(o) end
            return v
        end
    end
    if best_i == n then
        return function(act)
            local src = act[ACT_SRC]
            if src == nil then return generic(act) end
            local v = best(src)
            if v == nil then throw(missing_msg) end
            return v
        end
    end
    return function(act)
        local src = act[ACT_SRC]
        if src == nil then return generic(act) end
        local v = best(src)
        if v == nil then throw(missing_msg) end
        for j = best_i + 1, n do v = select_field(v, parts[j]) end
        return v
    end
end

compile_qualified_generic = function(parts, cx)
    add_refs(cx.refs, parts)
    local n = #parts
    local root = parts[1]
    local candidates = {}
    local name = root
    for i = 1, n do
        if i > 1 then name = name .. "." .. parts[i] end
        candidates[i] = name
    end
    local function undeclared()
        if TYPE_NAMES[candidates[n]] then return V.type_value(candidates[n]) end
        for i = n - 1, 1, -1 do
            if TYPE_NAMES[candidates[i]] then
                -- e.g. `int.x`: a type has no fields
                throw("type does not support field selection")
            end
        end
        throw("undeclared reference to '" .. candidates[n] .. "'")
    end
    if n == 1 then
        return function(act)
            local v = act[root]
            if v == nil then return undeclared() end
            return v
        end
    end
    if n == 2 then
        local full, f = candidates[2], parts[2]
        return function(act)
            local v = act[root]
            if v ~= nil then
                local w = rawget(act, full)
                if w ~= nil then return w end
                return select_field(v, f)
            end
            v = rawget(act, full)
            if v == nil then return undeclared() end
            return v
        end
    end
    return function(act)
        for i = n, 1, -1 do
            local v
            if i == 1 then v = act[root] else v = rawget(act, candidates[i]) end
            if v ~= nil then
                for j = i + 1, n do v = select_field(v, parts[j]) end
                return v
            end
        end
        return undeclared()
    end
end

local function compile_args(args, cx)
    local fs = {}
    for i = 1, #args do fs[i] = compile(args[i], cx) end
    return fs
end

-- builds a closure calling fn with target (optional) and compiled args
local function call_closure(fn, target, fs)
    local n = #fs
    if target then
        if n == 0 then return function(act) return fn(target(act)) end end
        local a1 = fs[1]
        if n == 1 then return function(act) return fn(target(act), a1(act)) end end
        local a2 = fs[2]
        if n == 2 then return function(act) return fn(target(act), a1(act), a2(act)) end end
        local a3 = fs[3]
        if n == 3 then return function(act) return fn(target(act), a1(act), a2(act), a3(act)) end end
        return function(act)
            local vals = {}
            for i = 1, n do vals[i] = fs[i](act) end
            return fn(target(act), table.unpack(vals, 1, n))
        end
    end
    if n == 0 then return function() return fn() end end
    local a1 = fs[1]
    if n == 1 then return function(act) return fn(a1(act)) end end
    local a2 = fs[2]
    if n == 2 then return function(act) return fn(a1(act), a2(act)) end end
    return function(act)
        local vals = {}
        for i = 1, n do vals[i] = fs[i](act) end
        return fn(table.unpack(vals, 1, n))
    end
end

local function iter_var(node, cx)
    if node.k ~= "ident" then
        parser.syntax_error(cx.src, node.pos, "argument must be a simple name")
    end
    return node.name
end

-- iteration domain of a comprehension: list elements, or map keys
local function range_of(v, macro)
    local t = typeof(v)
    if t == "list" then return v end
    if t == "map" then return V.map_keys(v) end
    throw("no such overload: " .. t .. "." .. macro .. "()")
end

-- compiles `body` with `name` bound to a fresh slot; returns slot, closure
local function with_var(name, body, cx)
    local slot = {}
    local saved = cx.scope[name]
    cx.scope[name] = slot
    local f = compile(body, cx)
    cx.scope[name] = saved
    return slot, f
end

local MACROS = {}
local WRAPPERS

MACROS.all = function(node, cx, target)
    local var = iter_var(node.args[1], cx)
    local slot, pred = with_var(var, node.args[2], cx)
    return function(act)
        local items = range_of(target(act), "all")
        local err
        for i = 1, #items do
            slot[1] = items[i]
            local ok, r = pcall(pred, act)
            if ok and r == false then slot[1] = nil; return false end
            if not ok then err = err or r
            elseif r ~= true then err = err or "no such overload: non-bool predicate" end
        end
        slot[1] = nil                       -- do not keep request data alive
        if err then error(err, 0) end
        return true
    end
end

MACROS.exists = function(node, cx, target)
    local var = iter_var(node.args[1], cx)
    local slot, pred = with_var(var, node.args[2], cx)
    return function(act)
        local items = range_of(target(act), "exists")
        local err
        for i = 1, #items do
            slot[1] = items[i]
            local ok, r = pcall(pred, act)
            if ok and r == true then slot[1] = nil; return true end
            if not ok then err = err or r
            elseif r ~= false then err = err or "no such overload: non-bool predicate" end
        end
        slot[1] = nil
        if err then error(err, 0) end
        return false
    end
end

MACROS.exists_one = function(node, cx, target)
    local var = iter_var(node.args[1], cx)
    local slot, pred = with_var(var, node.args[2], cx)
    return function(act)
        local items = range_of(target(act), "exists_one")
        local count = 0
        for i = 1, #items do
            slot[1] = items[i]
            local r = pred(act)
            if r == true then count = count + 1
            elseif r ~= false then throw("no such overload: non-bool predicate") end
        end
        slot[1] = nil
        return count == 1
    end
end
MACROS.existsOne = MACROS.exists_one

MACROS.map = function(node, cx, target)
    local var = iter_var(node.args[1], cx)
    local slot = {}
    local saved = cx.scope[var]
    cx.scope[var] = slot
    local filter, fn
    if #node.args == 3 then
        filter = compile(node.args[2], cx)
        fn = compile(node.args[3], cx)
    else
        fn = compile(node.args[2], cx)
    end
    cx.scope[var] = saved
    return function(act)
        local items = range_of(target(act), "map")
        local out, n = {}, 0
        for i = 1, #items do
            slot[1] = items[i]
            local keep = true
            if filter then
                keep = filter(act)
                if type(keep) ~= "boolean" then throw("no such overload: non-bool filter") end
            end
            if keep then
                n = n + 1
                out[n] = fn(act)
            end
        end
        slot[1] = nil
        return setmetatable(out, LIST)
    end
end

MACROS.filter = function(node, cx, target)
    local var = iter_var(node.args[1], cx)
    local slot, pred = with_var(var, node.args[2], cx)
    return function(act)
        local items = range_of(target(act), "filter")
        local out, n = {}, 0
        for i = 1, #items do
            local it = items[i]
            slot[1] = it
            local r = pred(act)
            if r == true then n = n + 1; out[n] = it
            elseif r ~= false then throw("no such overload: non-bool predicate") end
        end
        slot[1] = nil
        return setmetatable(out, LIST)
    end
end

-- agentgateway: x.with(v, expr) binds v to x inside expr
MACROS.with = function(node, cx, target)
    local var = iter_var(node.args[1], cx)
    local slot, body = with_var(var, node.args[2], cx)
    return function(act)
        slot[1] = target(act)
        local v = body(act)
        slot[1] = nil
        return v
    end
end

local MACRO_ARITY = { all = 2, exists = 2, exists_one = 2, existsOne = 2, filter = 2, with = 2 }

local function compile_call(node, cx)
    local fn, args, tnode = node.fn, node.args, node.target
    if not tnode then
        if fn == "has" then
            local a = args[1]
            if #args ~= 1 or a.k ~= "select" then
                parser.syntax_error(cx.src, node.pos, "invalid argument to has() macro")
            end
            local parts = {}
            if chain_parts(a.x, parts) and not cx.scope[parts[1]] then
                parts[#parts + 1] = a.f
                add_refs(cx.refs, parts)
            end
            local x, f = compile(a.x, cx), a.f
            return function(act) return has_field(x(act), f) end
        elseif fn == "default" and #args == 2 then
            local a, b = compile(args[1], cx), compile(args[2], cx)
            return function(act)
                local ok, v = pcall(a, act)
                if ok and v ~= nil and v ~= V.null then return v end
                return b(act)
            end
        elseif fn == "coalesce" then
            local fs = compile_args(args, cx)
            return function(act)
                for i = 1, #fs do
                    local ok, v = pcall(fs[i], act)
                    if ok and v ~= nil and v ~= V.null then return v end
                end
                return V.null
            end
        end
        local impl = GLOBAL[fn]
        if not impl then
            if cx.lenient then
                return function() throw("unknown function '" .. fn .. "'") end
            end
            parser.syntax_error(cx.src, node.pos, "undeclared function '" .. fn .. "'")
        end
        return call_closure(impl, nil, compile_args(args, cx))
    end
    -- receiver-style macros
    local m = MACROS[fn]
    if m and ((fn == "map" and (#args == 2 or #args == 3)) or MACRO_ARITY[fn] == #args) then
        return m(node, cx, compile(tnode, cx))
    end
    -- namespaced global functions: base64.encode(x), math.greatest(a, b), ...
    local parts = {}
    if chain_parts(tnode, parts) and not cx.scope[parts[1]] then
        local qname = table.concat(parts, ".") .. "." .. fn
        if GLOBAL[qname] then return call_closure(GLOBAL[qname], nil, compile_args(args, cx)) end
    end
    local impl = MEMBER[fn]
    if not impl then
        if cx.lenient then
            local t = compile(tnode, cx)
            return function(act) t(act); throw("unknown function '" .. fn .. "'") end
        end
        parser.syntax_error(cx.src, node.pos, "undeclared function '" .. fn .. "'")
    end
    return call_closure(impl, compile(tnode, cx), compile_args(args, cx))
end

local function wrapper(ctype, zero, check)
    return { zero = zero, conv = function(v)
        if typeof(v) ~= ctype then throw("no such overload: wrapper of " .. ctype) end
        return check and check(v) or v
    end }
end
WRAPPERS = {
    ["google.protobuf.BoolValue"] = wrapper("bool", false),
    ["google.protobuf.BytesValue"] = wrapper("bytes", V.bytes("")),
    ["google.protobuf.StringValue"] = wrapper("string", ""),
    ["google.protobuf.DoubleValue"] = wrapper("double", 0.0),
    ["google.protobuf.FloatValue"] = wrapper("double", 0.0, function(v)
        if v ~= v or v == math.huge or v == -math.huge then return v end
        return (string.unpack("f", string.pack("f", v)))
    end),
    ["google.protobuf.Int64Value"] = wrapper("int", 0),
    ["google.protobuf.Int32Value"] = wrapper("int", 0, function(v)
        if v < -2147483648 or v > 2147483647 then throw("integer overflow") end
        return v
    end),
    ["google.protobuf.UInt64Value"] = wrapper("uint", V.uint(0)),
    ["google.protobuf.UInt32Value"] = wrapper("uint", V.uint(0), function(v)
        if v.u < 0 or v.u > 4294967295 then throw("integer overflow") end
        return v
    end),
}

local function to_bool(v, what)
    if v == true or v == false then return v end
    throw("no such overload: " .. what .. " on " .. typeof(v))
end

compile = function(node, cx)
    local k = node.k
    if k == "lit" then
        return const(node.v)
    elseif k == "ident" then
        local slot = cx.scope[node.name]
        if slot and not node.leading then return function() return slot[1] end end
        return compile_qualified({ node.name }, cx)
    elseif k == "select" then
        local parts = {}
        if chain_parts(node, parts) then
            local slot = cx.scope[parts[1]]
            if not slot then return compile_qualified(parts, cx) end
        end
        local x, f = compile(node.x, cx), node.f
        return function(act) return select_field(x(act), f) end
    elseif k == "index" then
        local x, i = compile(node.x, cx), compile(node.i, cx)
        return function(act) return index(x(act), i(act)) end
    elseif k == "call" then
        return compile_call(node, cx)
    elseif k == "list" then
        local fs = compile_args(node.items, cx)
        local n = #fs
        return function(act)
            local out = {}
            for i = 1, n do out[i] = fs[i](act) end
            return setmetatable(out, LIST)
        end
    elseif k == "map" then
        local ks, vs = {}, {}
        for i, e in ipairs(node.entries) do
            ks[i] = compile(e[1], cx)
            vs[i] = compile(e[2], cx)
        end
        local n = #ks
        return function(act)
            local pairs_ = {}
            for i = 1, n do pairs_[i] = { ks[i](act), vs[i](act) } end
            return V.map_from_pairs(pairs_)
        end
    elseif k == "struct" then
        local name = node.name:gsub("^%.", "")
        local wrap = WRAPPERS[name]
        if wrap and #node.fields <= 1 and (not node.fields[1] or node.fields[1][1] == "value") then
            -- well-known wrapper types are their unwrapped value
            local vf = node.fields[1] and compile(node.fields[1][2], cx)
            return function(act)
                if not vf then return wrap.zero end
                return wrap.conv(vf(act))
            end
        end
        return function() throw("unsupported message type '" .. name .. "'") end
    elseif k == "cond" then
        local c, a, b = compile(node.c, cx), compile(node.a, cx), compile(node.b, cx)
        return function(act)
            local v = c(act)
            if v == true then return a(act) end
            if v == false then return b(act) end
            throw("no such overload: ternary condition of type " .. typeof(v))
        end
    elseif k == "and" or k == "or" then
        -- a chain a && b && c is one n-ary node: operands run in a loop, so long chains do not
        -- nest pcalls (C stack) and errors are absorbed by any deciding operand
        local operands = {}
        local function collect(n)
            if n.k == k then collect(n.l); collect(n.r)
            else operands[#operands + 1] = compile(n, cx) end
        end
        collect(node)
        local short = k == "or"                 -- value that decides the result
        local cnt = #operands
        if cnt == 2 then
            local l, r = operands[1], operands[2]
            return function(act)
                local okl, lv = pcall(l, act)
                if okl and lv == short then return short end
                local okr, rv = pcall(r, act)
                if okr and rv == short then return short end
                if not okl then error(lv, 0) end
                if not okr then error(rv, 0) end
                if type(lv) ~= "boolean" or type(rv) ~= "boolean" then
                    throw("no such overload: logical operator on non-bool")
                end
                return not short
            end
        end
        return function(act)
            local err
            for i = 1, cnt do
                local ok, v = pcall(operands[i], act)
                if ok and v == short then return short end
                if not ok then err = err or v
                elseif type(v) ~= "boolean" then
                    err = err or "no such overload: logical operator on non-bool"
                end
            end
            if err then error(err, 0) end
            return not short
        end
    elseif k == "not" then
        local x = compile(node.x, cx)
        return function(act) return not to_bool(x(act), "!") end
    elseif k == "neg" then
        local x = compile(node.x, cx)
        return function(act)
            local v = x(act)
            local t = mtype(v)
            if t == "integer" then
                if v == math.mininteger then V.overflow() end
                return -v
            end
            if t == "float" then return -v end
            throw("no such overload: -" .. typeof(v))
        end
    elseif k == "bin" then
        local l, r = compile(node.l, cx), compile(node.r, cx)
        local op = node.op
        local f = BIN[op]
        if op == "==" then
            return function(act)
                local a, b = l(act), r(act)
                if a == b then return a == a end
                local ta = type(a)
                if ta ~= "table" and ta == type(b) and ta ~= "number" then return false end
                return eq(a, b)
            end
        elseif op == "+" then
            return function(act)
                local a, b = l(act), r(act)
                if mtype(a) == "integer" and mtype(b) == "integer" then return add_int(a, b) end
                return op_add(a, b)
            end
        end
        return function(act) return f(l(act), r(act)) end
    end
    error("cel: unknown AST node " .. tostring(k))
end

-- ---- Public API ----

local Prog = {}
Prog.__index = Prog

-- Evaluates the program against an activation (table of top-level variables).
-- Returns the CEL value, or nil and an error message.
-- activations that are not tables (userdata with __index) are wrapped once per evaluation
local function as_table(act)
    if act == nil then return {} end
    return setmetatable({}, { __index = function(_, k) return act[k] end })
end

function Prog:eval(act)
    if type(act) ~= "table" then act = as_table(act) end
    local ok, v = pcall(self.fn, act)
    if ok then return v end
    if type(v) ~= "string" then v = tostring(v) end
    return nil, v
end

-- Compiles src. opts.lenient: unknown functions become runtime errors instead of compile errors.
function cel.compile(src, opts)
    if type(src) ~= "string" then error("cel.compile: expression must be a string", 2) end
    local ok, ast = pcall(parser.parse, src, V)
    if not ok then
        if type(ast) == "table" and ast.cel_syntax then return nil, ast.cel_syntax end
        error(ast, 0)
    end
    local cx = { src = src, scope = {}, refs = {}, lenient = opts and opts.lenient }
    local ok2, fn = pcall(compile, ast, cx)
    if not ok2 then
        if type(fn) == "table" and fn.cel_syntax then return nil, fn.cel_syntax end
        error(fn, 0)
    end
    -- hints for compile_fields: a scalar literal, or a path with a record resolver descriptor
    local konst, direct
    if ast.k == "lit" and type(ast.v) ~= "table" then konst = ast.v end
    local parts = {}
    if chain_parts(ast, parts) and #parts >= 2 then
        local d = resolvers[table.concat(parts, ".")]
        if type(d) == "table" then
            direct = { d[1], d[2], int = d.int, default = d.default,
                       msg = "no such key: " .. parts[#parts] }
        end
    end
    return setmetatable({ fn = fn, refs = cx.refs, src = src, const = konst, direct = direct },
                        Prog)
end

-- CEL value -> plain Lua value (see header). `null` replaces CEL null inside containers
-- (default nil).
local function to_plain(v, null)
    local t = type(v)
    if t ~= "table" then return v end
    local mt = getmetatable(v)
    if mt == NULL then return null end
    if mt == UINT then
        if v.u < 0 then return V.u2f(v.u) end
        return v.u
    end
    if mt == BYTES then return v.s end
    if mt == TS then return T.format_ts(v) end
    if mt == DUR then return T.format_dur(v) end
    if mt == FLAT then return to_plain(v.v, null) end
    if mt == V.TYPE then return v.name end
    local ct = typeof(v)
    if ct == "list" then
        local out = {}
        for i = 1, #v do out[i] = to_plain(v[i], null) end
        return out
    end
    local out = {}
    local keys = V.map_keys(v)
    for i = 1, #keys do
        local key = keys[i]
        local pk = to_plain(key)
        if pk ~= nil then out[pk] = to_plain(V.map_get(v, key), null) end
    end
    return out
end
cel.to_plain = to_plain

-- ---- fields.add evaluation ----

local function key_text(k)
    if type(k) == "string" then return k end
    if getmetatable(k) == UINT then return V.fmt_uint(k.u) end
    return tostring(k)
end

-- Appends {name, plain} entries for v; containers expand one level (rec=false) or to leaves.
local function expand(out, name, v, rec)
    local ct = typeof(v)
    if ct == "list" then
        for i = 1, #v do
            local e = v[i]
            if e ~= V.null then
                if rec then expand(out, name .. "." .. (i - 1), e, true)
                else out[#out + 1] = { name .. "." .. (i - 1), to_plain(e) } end
            end
        end
    elseif ct == "map" then
        local keys = V.map_keys(v)
        for i = 1, #keys do
            local e = V.map_get(v, keys[i])
            if e ~= V.null then
                local sub = name .. "." .. key_text(keys[i])
                if rec then expand(out, sub, e, true)
                else out[#out + 1] = { sub, to_plain(e) } end
            end
        end
    elseif ct == "flatten" then
        expand(out, name, v.v, rec or v.rec)
    elseif v ~= V.null then
        out[#out + 1] = { name, to_plain(v) }
    end
end

local Fields = {}
Fields.__index = Fields

-- Evaluates every field; returns an ordered list of {name, plain_value}. Fields whose value is
-- null or an error are left out; flatten()/flatten_recursive() results expand into name.sub keys.
local NULLV = V.null

-- progress of the current Fields:eval (evaluation never nests, so module state is safe)
local done_i, done_n = 0, 0

-- evaluates fields from..n into out; raises on the first error (caller resumes after it).
-- last[i] keeps the previous scalar entry of field i: an unchanged string or boolean (a
-- constant, the same provider or model) reuses that entry instead of allocating a new one.
local function run_fields(out, fe, act, from, n)
    local names, fns, last, lastnum, kind, aux = fe.names, fe.fns, fe.last, fe.lastnum, fe.kind,
        fe.aux
    local cnt = done_n
    local src = act[ACT_SRC]
    for i = from, n do
        local v
        local k = kind[i]
        if k == 1 then
            v = aux[i]                                  -- constant
        elseif k == 2 and src ~= nil then
            -- direct record path (same result as the compiled closure, one call less)
            local d = aux[i]
            local o = src[d[1]]
            if o == nil then error(d.msg, 0) end
            v = o[d[2]]
            if v == nil then
                local dflt = d.default
                if dflt then v = dflt(o) end
                if v == nil then error(d.msg, 0) end
            end
            if d.int and mtype(v) == "float" then v = math.tointeger(v) or v end
        else
            v = fns[i](act)
        end
        local e = last[i]
        if e ~= nil and e[2] == v and not lastnum[i] then
            -- same string/boolean as last time: reuse the entry (no type checks, no allocation)
            cnt = cnt + 1
            out[cnt] = e
        elseif v ~= NULLV then
            local tv = type(v)
            if tv ~= "table" then
                cnt = cnt + 1
                e = { names[i], v }
                last[i] = e
                lastnum[i] = tv == "number"   -- 1 == 1.0 in Lua: numbers are never reused
                out[cnt] = e
            elseif getmetatable(v) == FLAT then
                expand(out, names[i], v.v, v.rec)
                cnt = #out
            else
                cnt = cnt + 1
                out[cnt] = { names[i], to_plain(v) }
            end
        end
        done_i, done_n = i, cnt
    end
end

-- Evaluates every field; returns an ordered list of {name, plain_value}. Fields whose value is
-- null or an error are left out; flatten()/flatten_recursive() results expand into name.sub keys.
-- The returned list is the caller's, but its {name, value} entries are read-only: scalar entries
-- are shared between calls while the value stays the same.
-- One pcall covers all fields unless one fails; evaluation then resumes after the failed field.
function Fields:eval(act)
    local n = self.n
    -- constructors with nils pre-size the array part
    local out = n <= 8 and { nil, nil, nil, nil, nil, nil, nil, nil } or {}
    if type(act) ~= "table" then act = as_table(act) end
    done_i, done_n = 0, 0
    while true do
        local ok = pcall(run_fields, out, self, act, done_i + 1, n)
        if ok then break end
        done_i = done_i + 1                     -- skip the field that raised
        if done_i >= n then break end
    end
    return out
end

-- list: ordered { {name, src}, ... }. Returns an evaluator, or nil and "name: error".
function cel.compile_fields(list)
    if type(list) ~= "table" then error("cel.compile_fields: list expected", 2) end
    local fe = setmetatable({ names = {}, fns = {}, progs = {}, refs = {}, last = {}, lastnum = {},
                              kind = {}, aux = {}, n = 0 }, Fields)
    for i, item in ipairs(list) do
        local name, src = item[1], item[2]
        if type(name) ~= "string" or type(src) ~= "string" then
            error("cel.compile_fields: entry " .. i .. " must be {name, src}", 2)
        end
        local prog, err = cel.compile(src)
        if not prog then return nil, name .. ": " .. err end
        fe.names[i], fe.fns[i], fe.progs[i] = name, prog.fn, prog
        if prog.const ~= nil then
            fe.kind[i], fe.aux[i] = 1, prog.const
        elseif prog.direct then
            fe.kind[i], fe.aux[i] = 2, prog.direct
        else
            fe.kind[i] = 0
        end
        fe.n = i
        for r in pairs(prog.refs) do fe.refs[r] = true end
    end
    return fe
end

return cel
