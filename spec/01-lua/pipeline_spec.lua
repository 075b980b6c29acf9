-- spec/01-lua/pipeline_spec.lua -- lunagate.pipeline: options, chains, Lua phase runners
local fake = require "helpers.fake_lunagate"

local tmp

local function write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

describe("lunagate.pipeline", function()
    local pipeline

    setup(function()
        fake.install()
        pipeline = require "lunagate.pipeline"
        tmp = os.tmpname()
        os.remove(tmp)
        os.execute("mkdir -p '" .. tmp .. "'")
        write(tmp .. "/hi.lua", [[
local lg = require "lunagate"
return { name = "hi", version = "1", priority = 300, schema = { fields = {
    { who = { type = "string", default = "hi", description = "Who." } } } },
  access = function(conf, ctx) ctx.order = (ctx.order or "") .. conf.who .. ";"; ctx.plugin.n = 1 end,
  body_filter = function(conf, ctx, chunk, eof)
    if chunk == "drop" then return nil end
    if chunk == "same" then return end
    return chunk .. "+" .. conf.who
  end,
  log = function(conf, ctx) error("log boom") end,
}
]])
        write(tmp .. "/lo.lua", [[
return { name = "lo", version = "1", priority = 100, schema = { fields = {} },
  access = function(conf, ctx)
    ctx.order = (ctx.order or "") .. "lo;"
    if ctx.plugin.n then error("ctx.plugin is shared") end
    if ctx.deny then return 403, { error = "no" } end
    if ctx.fail then error("lo failed") end
  end,
  body_filter = function(conf, ctx, chunk, eof) return chunk:upper() end,
  log = function(conf, ctx) ctx.logged = true end,
}
]])
    end)

    teardown(function()
        os.execute("rm -rf '" .. tmp .. "'")
        fake.uninstall()
    end)

    local function config(global, r1, r2)
        return {
            config = { plugins = { paths = { tmp }, global = global } },
            binds = { { key = "bind/1", listeners = { { key = "bind/1/listener0", routes = {
                { key = "default/r1", policies = { plugins = r1 } },
                { key = "default/r2", policies = { plugins = r2 } },
            } } } } },
        }
    end

    describe("options", function()
        it("has defaults", function()
            assert.same({ instructions = 10000000, memory = 128 * 1024 * 1024, shared = {} },
                pipeline.options({}))
        end)
        it("reads budget, memory limit and shared dictionaries", function()
            local o = assert(pipeline.options({ config = { plugins = {
                budget = { instructions = 5000 }, memoryLimit = "64Mi",
                shared = { limits = { size = "1m" }, hits = { maxEntries = 100 }, plain = {} },
            } } }))
            assert.same({ instructions = 5000, memory = 64 * 1024 * 1024, shared = {
                limits = { bytes = 1000000, entries = 0 }, hits = { bytes = 0, entries = 100 },
                plain = { bytes = 1024 * 1024, entries = 0 },
            } }, o)
        end)
        it("reports bad values with their path", function()
            local _, err = pipeline.options({ config = { plugins = { memoryLimit = "lots" } } })
            assert.matches("^config%.plugins%.memoryLimit: ", err)
            _, err = pipeline.options({ config = { plugins = { budget = { instructions = 1.5 } } } })
            assert.equal("config.plugins.budget.instructions: expected an integer", err)
            _, err = pipeline.options({ config = { plugins = { shared = { ["bad-name"] = {} } } } })
            assert.matches("^config%.plugins%.shared%.bad%-name: ", err)
            _, err = pipeline.options({ config = { plugins = { budgte = 1 } } })
            assert.matches("^config%.plugins%.budgte: unknown key", err)
        end)
        it("parses sizes", function()
            assert.equal(1024, pipeline.parse_size("1Ki"))
            assert.equal(1500000, pipeline.parse_size("1.5m"))
            assert.equal(42, pipeline.parse_size(42))
            assert.is_nil(pipeline.parse_size("12 parsecs"))
        end)
    end)

    describe("build", function()
        it("makes one chain per route with plugins, global ones included, by priority", function()
            local res = assert(pipeline.build(config({ { name = "lo" } }, { { name = "hi" } }, nil), {}))
            assert.equal(2, #res.chains)
            assert.equal(1, res.default)
            assert.equal(2, res.routes["default/r1"])
            assert.equal(2, res.routes["bind/1/listener0/default/r1"])
            assert.equal(1, res.routes["default/r2"])
            local names = {}
            for i, e in ipairs(res.chains[2]) do names[i] = e.name end
            assert.same({ "hi", "lo" }, names)
            assert.same({ "hi", "lo" }, { res.plugins[1].name, res.plugins[2].name })
        end)

        it("lets a route attachment replace the global one", function()
            local res = assert(pipeline.build(config({ { name = "hi", config = { who = "global" } } },
                { { name = "hi", config = { who = "route" } } }), {}))
            assert.equal(1, #res.chains[2])
            assert.equal("route", res.chains[2][1].conf.who)
            assert.equal("global", res.plugins[1].conf.who)
        end)

        it("has no chain for routes without plugins when nothing is global", function()
            local res = assert(pipeline.build(config(nil, nil, { { name = "lo" } }), {}))
            assert.is_nil(res.default)
            assert.is_nil(res.routes["default/r1"])
            assert.equal(1, res.routes["default/r2"])
        end)

        it("rejects a plugin attached twice to one route", function()
            local res, err = pipeline.build(config(nil, { { name = "lo" }, { name = "lo" } }), {})
            assert.is_nil(res)
            assert.matches("attached twice", err)
        end)
    end)

    describe("runners", function()
        local chain
        before_each(function()
            chain = assert(pipeline.build(config(nil, { { name = "lo" }, { name = "hi" } }), {})).chains[1]
        end)

        it("runs access in priority order with per-plugin ctx.plugin", function()
            local ctx = {}
            assert.is_nil(pipeline.access(chain, ctx))
            assert.equal("hi;lo;", ctx.order)
        end)

        it("stops at a plugin's answer", function()
            local status, body = pipeline.access(chain, { deny = true })
            assert.equal(403, status)
            assert.same({ error = "no" }, body)
        end)

        it("names the failing plugin and phase", function()
            assert.has_error(function() pipeline.access(chain, { fail = true }) end)
            local ok, err = pcall(pipeline.access, chain, { fail = true })
            assert.is_false(ok)
            assert.matches("^plugin=lo phase=access: ", err)
        end)

        it("passes chunks through body filters: replace, keep, drop", function()
            assert.equal("ABC+HI", pipeline.body_filter(chain, {}, "abc", false))
            assert.equal("SAME", pipeline.body_filter(chain, {}, "same", false))
            assert.is_nil(pipeline.body_filter(chain, {}, "drop", false))
        end)

        it("runs every log function even when one fails", function()
            local ctx = {}
            local ok, err = pcall(pipeline.log, chain, ctx)
            assert.is_false(ok)
            assert.matches("plugin=hi phase=log: ", err)
            assert.is_true(ctx.logged)
        end)
    end)
end)
