-- spec/01-lua/cel_functions_spec.lua -- standard functions, strings extension, agentgateway extras

local cel = require "lunagate.cel"
local regex = require "lunagate.cel.regex"
local codec = require "lunagate.cel.codec"

local function eval(src, act)
    local prog, err = cel.compile(src)
    assert(prog, err)
    return prog:eval(act or {})
end

local function plain(src, act)
    local v, err = eval(src, act)
    assert(err == nil, err)
    return cel.to_plain(v)
end

describe("cel functions", function()
    describe("conversions", function()
        it("converts between scalar types", function()
            assert.equal(42, eval("int('42')"))
            assert.equal(-3, eval("int(-3.9)"))
            assert.equal(7, eval("int(7u)"))
            assert.equal(18446744073709551615.0, eval("double(18446744073709551615u)"))
            assert.equal("123.456", eval("string(123.456)"))
            assert.equal("18446744073709551615", eval("string(18446744073709551615u)"))
            assert.equal("abc", eval("string(b'abc')"))
            assert.equal("abc", plain("bytes('abc')"))
            assert.is_true(eval("bool('true')"))
            assert.equal(1.5, eval("double('1.5')"))
            assert.equal(300, plain("uint('300')"))
            local _, err = eval("uint(-1)")
            assert.matches("range error", err)
            _, err = eval("int('12x')")
            assert.matches("cannot convert", err)
            _, err = eval("string(b'\\xff')")
            assert.matches("invalid UTF%-8", err)
        end)

        it("answers type() and dyn()", function()
            assert.is_true(eval("type(1) == int && type('') == string && type([]) == list"))
            assert.is_true(eval("type({}) == map && type(null) == null_type && type(int) == type"))
            assert.equal(3, eval("dyn(3)"))
        end)
    end)

    describe("strings", function()
        it("contains / startsWith / endsWith / size", function()
            assert.is_true(eval("'hello'.contains('ell')"))
            assert.is_true(eval("'hello'.startsWith('he')"))
            assert.is_true(eval("'hello'.endsWith('lo')"))
            assert.is_true(eval("'hello'.endsWith('')"))
            assert.equal(5, eval("'hello'.size()"))
        end)

        it("implements the strings extension", function()
            assert.equal("hello", eval("'HeLLo'.lowerAscii()"))
            assert.equal("HELLO É", eval("'hello É'.upperAscii()"))
            assert.equal("x y", eval("'  x y \\t\\n'.trim()"))
            assert.same({ "a", "b", "c" }, plain("'a,b,c'.split(',')"))
            assert.same({ "a", "b,c" }, plain("'a,b,c'.split(',', 2)"))
            assert.same({ "π", "x" }, plain("'πx'.split('')"))
            assert.equal("a-b", eval("['a', 'b'].join('-')"))
            assert.equal("ab", eval("['a', 'b'].join()"))
            assert.equal("f00", eval("'foo'.replace('o', '0')"))
            assert.equal("f0o", eval("'foo'.replace('o', '0', 1)"))
            assert.equal("ell", eval("'hello'.substring(1, 4)"))
            assert.equal("llo", eval("'hello'.substring(2)"))
            assert.equal("é", eval("'café'.charAt(3)"))
            assert.equal("", eval("'abc'.charAt(3)"))
            assert.equal(2, eval("'hello'.indexOf('l')"))
            assert.equal(3, eval("'hello'.indexOf('l', 3)"))
            assert.equal(3, eval("'hello'.lastIndexOf('l')"))
            assert.equal(-1, eval("'hello'.indexOf('z')"))
            assert.equal("bar", eval("'foobar'.stripPrefix('foo')"))
            assert.equal("foo", eval("'foobar'.stripSuffix('bar')"))
            assert.equal("foobar", eval("'foobar'.stripPrefix('x')"))
            assert.equal("Bob is 42, 99.57%", eval("'%s is %d, %.2f%%'.format(['Bob', 42, 99.567])"))
            assert.equal("ff FF 10 101", eval("'%x %X %o %b'.format([255, 255, 8, 5])"))
            assert.equal('[1, "a"]', eval("'%s'.format([[1, 'a']])"))
            assert.equal('"a\\"b"', eval("strings.quote('a\"b')"))
            local _, err = eval("'%d'.format([])")
            assert.matches("out of range", err)
            _, err = eval("'abc'.substring(2, 1)")
            assert.matches("invalid substring range", err)
            _, err = eval("'abc'.charAt(9)")
            assert.matches("index out of range", err)
        end)
    end)

    describe("matches (regex engine)", function()
        local cases = {
            { "hubba", "ubb", true },
            { "grey", "^gr(a|e)y$", true },
            { "gray", "^gr[ae]y$", true },
            { "groy", "^gr[ae]y$", false },
            { "banana", "^ba(na)*$", true },
            { "abc123", "^[a-z]+\\d{3}$", true },
            { "abc12", "^[a-z]+\\d{3}$", false },
            { "aaa", "^a{2,3}$", true },
            { "aaaa", "^a{2,3}$", false },
            { "a1_", "^\\w+$", true },
            { "a b", "\\s", true },
            { "x.y", "x\\.y", true },
            { "xzy", "x\\.y", false },
            { "HeLLo", "(?i)^hello$", true },
            { "mañana", "a+ñ+a+", true },
            { "foo bar", "\\bbar\\b", true },
            { "foobar", "\\bbar\\b", false },
            { "line1\nline2", "(?m)^line2$", true },
            { "v1.2.3", "^v(\\d+)\\.(\\d+)\\.(\\d+)$", true },
            { "application/json; charset=utf-8", "^application/(json|[a-z]+\\+json)", true },
            { "", "", true },
            { "abc", "[^abc]", false },
            { "a-b", "[a\\-]+-?b", true },
            { "xyz", "[[:alpha:]]+", true },
        }
        for _, c in ipairs(cases) do
            it(string.format("%q matches %q -> %s", c[1], c[2], tostring(c[3])), function()
                assert.equal(c[3], eval("s.matches(p)", { s = c[1], p = c[2] }))
                assert.equal(c[3], eval("matches(s, p)", { s = c[1], p = c[2] }))
            end)
        end

        it("prefers the longest greedy match and supports non-greedy quantifiers", function()
            local re = assert(regex.compile("<(.+?)>"))
            assert.equal("[a][b]", re:replace("<a><b>", "[$1]"))
            re = assert(regex.compile("<(.+)>"))
            assert.equal("[a><b]", re:replace("<a><b>", "[$1]"))
        end)

        it("does not blow up on long subjects", function()
            local long = string.rep("a", 20000)
            assert.is_true(eval("s.matches('^a*$')", { s = long }))
            assert.is_true(eval("s.matches('(a|b)+')", { s = string.rep("ab", 500) }))
        end)

        it("stays fast on long subjects and bounds catastrophic backtracking", function()
            local big = string.rep("lorem ipsum dolor sit amet ", 400)
            local t0 = os.clock()
            assert.is_false(eval("s.matches('.*secret.*')", { s = big }))
            assert.is_true(eval("s.matches('.*dolor.*amet $')", { s = big }))
            assert.is_false(eval("s.matches('secret')", { s = big }))
            assert.is_true(os.clock() - t0 < 2)
            local _, err = eval("s.matches('(a+)+$')", { s = string.rep("a", 40) .. "!" })
            assert.matches("backtracking steps", err)
            -- the engine is usable again after hitting the budget
            assert.is_true(eval("'ab'.matches('a(b)')"))
        end)

        it("reports invalid patterns as errors", function()
            local _, err = eval("'a'.matches('(')")
            assert.matches("invalid regex", err)
            _, err = eval("'a'.matches('a**')")
            assert.matches("invalid regex", err)
            _, err = eval("'a'.matches('(a)\\\\1')")
            assert.matches("invalid regex", err)
        end)
    end)

    describe("agentgateway extras", function()
        it("regexReplace replaces every match with group references", function()
            assert.equal("h*ll* w*rld", eval("'hello world'.regexReplace('[aeiou]', '*')"))
            assert.equal("2024/01/31",
                eval("'31-01-2024'.regexReplace('(\\\\d+)-(\\\\d+)-(\\\\d+)', '$3/$2/$1')"))
            assert.equal("Bearer <redacted>",
                eval("'Bearer sk-abc123'.regexReplace('sk-[a-z0-9]+', '<redacted>')"))
            assert.equal("x-y", eval("'x_y'.regexReplace('(?P<sep>_)', '-')"))
            assert.equal("a$b", eval("'a.b'.regexReplace('\\\\.', '$$')"))
        end)

        it("flatten and flatten_recursive mark values for field expansion", function()
            assert.equal("flatten", cel.type_of(eval("flatten({'a': 1})")))
            assert.same({ a = 1 }, plain("flatten({'a': 1})"))
            assert.same({ { a = 1 } }, plain("flatten_recursive([{'a': 1}])"))
            assert.same({ { a = 1 } }, plain("flattenRecursive([{'a': 1}])"))
        end)

        it("json parses JSON text into CEL values", function()
            assert.equal(1, eval("json('{\"a\": 1}').a"))
            assert.equal("integer", math.type(eval("json('{\"a\": 1}').a")))
            assert.equal(2.5, eval("json('[1, 2.5]')[1]"))
            assert.equal("x", eval("json(b'{\"k\": [\"x\"]}').k[0]"))
            assert.equal(cel.null, eval("json('null')"))
            assert.equal("é😀", eval("json('\"\\\\u00e9\\\\ud83d\\\\ude00\"')"))
            local _, err = eval("json('{bad')")
            assert.matches("invalid JSON", err)
        end)

        it("toJson / to_json serialise CEL values", function()
            assert.equal('{"a":[1,2.5,true,null,"x"]}', eval("toJson({'a': [1, 2.5, true, null, 'x']})"))
            assert.equal('"q\\"uote"', eval("to_json('q\"uote')"))
            assert.equal('{"b":"YWJj"}', eval("toJson({'b': b'abc'})"))
            assert.equal("[1.0]", eval("toJson([1.0])"))
            assert.equal('{"max_tokens":256}', eval("toJson(p)", { p = { max_tokens = 256 } }))
        end)

        it("default falls back on errors and null", function()
            assert.equal("fb", eval("default(m.missing, 'fb')", { m = {} }))
            assert.equal("fb", eval("default(null, 'fb')"))
            assert.equal("v", eval("default(m.k, 'fb')", { m = { k = "v" } }))
            assert.equal("fb", eval("default(nosuchvar, 'fb')"))
        end)

        it("coalesce returns the first non-null, non-error argument", function()
            assert.equal(2, eval("coalesce(null, m.x, 2, 3)", { m = {} }))
            assert.equal(cel.null, eval("coalesce(null, m.x)", { m = {} }))
        end)

        it("with binds a value inside an expression", function()
            assert.equal(6, eval("(1 + 2).with(x, x * 2)"))
            assert.equal("a:b", eval("m.with(v, v.x + ':' + v.y)", { m = { x = "a", y = "b" } }))
        end)

        it("base64 encodes and decodes", function()
            assert.equal("aGVsbG8=", eval("base64.encode('hello')"))
            assert.equal("aGVsbG8=", eval("base64.encode(b'hello')"))
            assert.equal("aGk=", eval("base64Encode('hi')"))
            assert.equal("hello", plain("base64.decode('aGVsbG8=')"))
            assert.equal("hello", plain("base64Decode('aGVsbG8')"))
            assert.equal("bytes", cel.type_of(eval("base64.decode('aGk=')")))
            local _, err = eval("base64.decode('!!!')")
            assert.matches("invalid base64", err)
        end)

        it("sha256 hashes to lowercase hex", function()
            assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                eval("sha256.encode('')"))
            assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                eval("sha256.encode('abc')"))
            assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
                eval("sha256('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')"))
            -- multi-block message
            assert.equal(64, #codec.sha256_hex(string.rep("x", 1000)))
            assert.equal("41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3",
                codec.sha256_hex(string.rep("a", 1000)))
        end)

        it("random returns a double in [0, 1)", function()
            for _ = 1, 20 do
                local r = eval("random()")
                assert.equal("float", math.type(r))
                assert.is_true(r >= 0 and r < 1)
            end
        end)

        it("uuid returns distinct v4 UUIDs", function()
            local a, b = eval("uuid()"), eval("uuid()")
            assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", a)
            assert.not_equal(a, b)
        end)

        it("math.greatest / math.least and url encoding", function()
            assert.equal(3, eval("math.greatest(1, 3, 2)"))
            assert.equal(1, eval("math.least([3, 1, 2])"))
            assert.equal("a%20b%2Fc", eval("url.encode('a b/c')"))
            assert.equal("a b/c", eval("url.decode('a%20b%2Fc')"))
        end)

        it("fail raises an error", function()
            local _, err = eval("fail('nope')")
            assert.equal("nope", err)
        end)
    end)
end)
