-- spec/01-lua/plugins_spec.lua -- lunagate.plugins: discovery, contract checks, config validation
local fake = require "helpers.fake_lunagate"

local tmp

local function write(path, text)
    os.execute("mkdir -p '" .. path:match("^(.*)/[^/]*$") .. "'")
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

local function plugin_src(name, priority, extra)
    return string.format([[
local lg = require "lunagate"
return { name = %q, version = "1.0.0", priority = %s,
  schema = { fields = { { tag = { type = "string", default = "d", description = "t" } } } },
  access = function(conf, ctx) ctx.tag = conf.tag end, %s }
]], name, tostring(priority), extra or "")
end

local function cfg(global, routes)
    return {
        config = { plugins = { paths = { tmp .. "/user" }, global = global } },
        binds = { { key = "bind/1", listeners = { { key = "bind/1/l0", routes = routes or {} } } } },
    }
end

describe("lunagate.plugins", function()
    local plugins

    setup(function()
        fake.install()
        plugins = require "lunagate.plugins"
        tmp = os.tmpname()
        os.remove(tmp)
        os.execute("mkdir -p '" .. tmp .. "/user' '" .. tmp .. "/bundled/policies'")
        write(tmp .. "/bundled/policies/alpha.lua", plugin_src("alpha", 100))
        write(tmp .. "/bundled/policies/beta.lua", plugin_src("beta", 200))
        write(tmp .. "/user/beta.lua", plugin_src("beta", 250))
        write(tmp .. "/user/gamma/init.lua", plugin_src("gamma", 300))
    end)

    teardown(function()
        os.execute("rm -rf '" .. tmp .. "'")
        fake.uninstall()
    end)

    local opts = function() return { bundled = tmp .. "/bundled" } end

    it("finds user plugins before bundled ones, in groups and folders", function()
        local dirs = { tmp .. "/user", tmp .. "/bundled" }
        assert.equal(tmp .. "/user/beta.lua", plugins.find("beta", dirs))
        assert.equal(tmp .. "/bundled/policies/alpha.lua", plugins.find("alpha", dirs))
        assert.equal(tmp .. "/user/gamma/init.lua", plugins.find("gamma", dirs))
        local f, why = plugins.find("nope", dirs)
        assert.is_nil(f)
        assert.matches("searched", why)
        assert.is_nil(plugins.find("../etc/passwd", dirs))
    end)

    it("checks the contract", function()
        local base = function()
            return { name = "x", version = "1", priority = 1, schema = { fields = {} } }
        end
        assert.is_true(plugins.check_contract(base()))
        local p = base(); p.version = nil
        assert.matches("missing version", select(2, plugins.check_contract(p)))
        p = base(); p.priority = "1"
        assert.matches("priority must be an integer", select(2, plugins.check_contract(p)))
        p = base(); p.schema = nil
        assert.matches("missing schema", select(2, plugins.check_contract(p)))
        p = base(); p.header_filtre = function() end
        assert.matches("unknown phase 'header_filtre'", select(2, plugins.check_contract(p)))
        p = base(); p.access = true
        assert.matches("phase 'access' must be a function", select(2, plugins.check_contract(p)))
        p = base(); p._helper = function() end; p.parse_request = function() end
        assert.is_true(plugins.check_contract(p))
        p = base(); p.schema = { fields = { { a = { type = "nope" } } } }
        assert.matches("bad schema: a: unknown type 'nope'", select(2, plugins.check_contract(p)))
    end)

    it("loads the plugins a config uses, validated and sorted by priority", function()
        local reg = assert(plugins.load(cfg({ { name = "alpha", config = { tag = "g" } } }, {
            { key = "default/r", policies = { plugins = { { name = "beta" }, { name = "gamma" } } } },
        }), opts()))
        local names = {}
        for i, r in ipairs(reg.list) do names[i] = r.name .. ":" .. r.priority end
        assert.same({ "gamma:300", "beta:250", "alpha:100" }, names)
        assert.equal("g", reg.global[1].conf.tag)
        assert.equal("d", reg.routes[1].entries[1].conf.tag)
        assert.has_error(function() reg.global[1].conf.tag = "x" end)
    end)

    it("names the file and config path of a bad plugin config", function()
        local reg, err = plugins.load(cfg(nil, {
            { key = "default/r", policies = { plugins = {
                { name = "alpha", config = { tag = 5, x = 1 } } } } },
        }), opts())
        assert.is_nil(reg)
        assert.equal(tmp .. "/bundled/policies/alpha.lua: "
            .. "binds[0].listeners[0].routes[0].policies.plugins[0].config.tag: expected a string; "
            .. "binds[0].listeners[0].routes[0].policies.plugins[0].config.x: unknown field", err)
    end)

    it("reports unknown plugins with the config path", function()
        local reg, err = plugins.load(cfg({ { name = "ghost" } }), opts())
        assert.is_nil(reg)
        assert.matches("^config%.plugins%.global%[0%]: unknown plugin 'ghost'", err)
    end)

    it("rejects malformed attachments", function()
        local _, err = plugins.load(cfg({ { config = {} } }), opts())
        assert.equal("config.plugins.global[0].name: required (the plugin name)", err)
        _, err = plugins.load(cfg({ { name = "alpha", conf = {} } }), opts())
        assert.equal("config.plugins.global[0].conf: unknown key (expected name, config)", err)
    end)

    it("rejects duplicate priorities", function()
        write(tmp .. "/user/delta.lua", plugin_src("delta", 100))
        local reg, err = plugins.load(cfg({ { name = "alpha" }, { name = "delta" } }), opts())
        assert.is_nil(reg)
        assert.matches("priorities must be unique", err)
        assert.matches("delta", err)
        assert.matches("alpha", err)
    end)

    it("names the file of a plugin that fails to load", function()
        write(tmp .. "/user/broken.lua", "return { name = 'broken' ")
        local _, err = plugins.load(cfg({ { name = "broken" } }), opts())
        assert.matches(tmp .. "/user/broken.lua:", err, 1, true)
        write(tmp .. "/user/raises.lua", "error('no way')")
        _, err = plugins.load(cfg({ { name = "raises" } }), opts())
        assert.matches(tmp .. "/user/raises.lua: ", err, 1, true)
        assert.matches("no way", err)
        write(tmp .. "/user/misnamed.lua", plugin_src("other", 1))
        _, err = plugins.load(cfg({ { name = "misnamed" } }), opts())
        assert.matches("declares name 'other' but was loaded as 'misnamed'", err)
    end)

    it("resolves relative paths against the config folder", function()
        local dirs = plugins.search_dirs({ config = { plugins = { paths = { "plug", "/abs/" } } } },
            { config_dir = "/etc/lg", bundled = "/b" })
        assert.same({ "/etc/lg/plug", "/abs", "/b" }, dirs)
    end)
end)
