-- spec/01-lua/cel_parser_spec.lua -- lexer, parser and syntax errors of lunagate.cel

local cel = require "lunagate.cel"

local function eval(src, act)
    local prog, err = cel.compile(src)
    assert(prog, err)
    return prog:eval(act or {})
end

describe("cel parser", function()
    it("reads every literal kind", function()
        assert.equal(42, eval("42"))
        assert.equal("integer", math.type(eval("0x2A")))
        assert.equal(42, eval("0x2A"))
        assert.equal(7, cel.to_plain(eval("7u")))
        assert.equal("uint", cel.type_of(eval("7U")))
        assert.equal(1.5, eval("1.5"))
        assert.equal("float", math.type(eval("1e3")))
        assert.equal(-9223372036854775807 - 1, eval("-9223372036854775808"))
        assert.equal("a'b", eval([['a\'b']]))
        assert.equal("tab\there", eval([["tab\there"]]))
        assert.equal("raw\\n", eval([[r'raw\n']]))
        assert.equal("multi\nline", eval("'''multi\nline'''"))
        assert.equal('x"y', eval([["""x"y"""]]))
        assert.equal("\u{263A}\u{1F431}", eval([['\u263A\U0001F431']]))
        assert.equal("ÿ", eval([['\xff']]))                  -- code point in strings
        assert.equal("\255", cel.to_plain(eval([[b'\xff']])))  -- byte in bytes
        assert.equal("\0\255", cel.to_plain(eval([[b'\000\377']])))
        assert.is_true(eval("true"))
        assert.equal(cel.null, eval("null"))
        assert.same({ 1, 2 }, cel.to_plain(eval("[1, 2,]")))
        assert.same({ a = 1 }, cel.to_plain(eval("{'a': 1}")))
    end)

    it("applies CEL operator precedence", function()
        assert.equal(7, eval("1 + 2 * 3"))
        assert.equal(9, eval("(1 + 2) * 3"))
        assert.equal(-1, eval("1 - 1 - 1"))
        assert.is_true(eval("1 < 2 == true"))
        assert.is_true(eval("true || false && false"))
        assert.equal("b", eval("false ? 'a' : true ? 'b' : 'c'"))
        assert.is_true(eval("!false && 2 in [1, 2]"))
        assert.equal(19, eval("--19"))
        assert.equal(2, eval("[1, [2]][1][0]"))
        assert.equal(1, eval("{'a': {'b': 1}}.a.b"))
        assert.equal(2, eval("{'k-1': 2}.`k-1`"))
    end)

    it("ignores comments and whitespace", function()
        assert.equal(3, eval("1 + // one\n 2 // two"))
        assert.equal(3, eval("\t1\r\n+\f2"))
    end)

    it("reports syntax errors with a column, an excerpt and a caret", function()
        local _
        local prog, err = cel.compile("llm.provider ==")
        assert.is_nil(prog)
        assert.equal("column 16: unexpected end of input\n  llm.provider ==\n                 ^", err)

        prog, err = cel.compile("a + (b * c")
        assert.is_nil(prog)
        assert.matches("^column 11: expected '%)'", err)

        prog, err = cel.compile("'unterminated")
        assert.is_nil(prog)
        assert.matches("^column 1: unterminated string literal\n  'unterminated\n  %^$", err)

        _, err = cel.compile("1 # 2")
        assert.matches("^column 3: unexpected character '#'", err)

        _, err = cel.compile("9223372036854775808")
        assert.matches("int literal out of range", err)

        assert.is_table(cel.compile("x.if")) -- reserved words may be field names
        _, err = cel.compile("if")
        assert.matches("reserved identifier 'if'", err)

        _, err = cel.compile("'bad \\q escape'")
        assert.matches("invalid escape sequence", err)
    end)

    it("counts the column in code points and reports the line", function()
        local _, err = cel.compile("'πέντε' +")
        assert.matches("^column 10:", err)
        _, err = cel.compile("1 +\n  * 2")
        assert.matches("^line 2, column 3: unexpected '%*'", err)
    end)

    it("rejects unknown functions at compile time", function()
        local prog, err = cel.compile("nosuchfn(1)")
        assert.is_nil(prog)
        assert.matches("undeclared function 'nosuchfn'", err)
        prog = cel.compile("nosuchfn(1) || true", { lenient = true })
        assert.is_true(prog:eval({}))
    end)

    it("rejects invalid macro forms", function()
        local _, err = cel.compile("has(a)")
        assert.matches("invalid argument to has%(%) macro", err)
        _, err = cel.compile("[1].all(1, true)")
        assert.matches("simple name", err)
    end)

    it("survives deep nesting with an error instead of a crash", function()
        local deep = string.rep("(", 400) .. "1" .. string.rep(")", 400)
        local prog, err = cel.compile(deep)
        assert.is_nil(prog)
        assert.matches("nested too deeply", err)
        assert.equal(1, eval(string.rep("(", 100) .. "1" .. string.rep(")", 100)))
    end)

    it("raises on API misuse", function()
        assert.has_error(function() cel.compile(42) end)
        assert.has_error(function() cel.compile_fields("x") end)
    end)
end)
