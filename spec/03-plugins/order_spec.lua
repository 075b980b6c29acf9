-- spec/03-plugins/order_spec.lua -- pins the order of the bundled plugins (Kong's
-- plugins-order spec): every bundled plugin passes the contract check, documents its schema
-- fields, has a unique priority, and the resulting order is the one written below. Adding a
-- plugin means adding it here, at the place its priority gives it.
local fake = require "helpers.fake_lunagate"

-- Highest priority first.
local PINNED = {
    "json",
    "text",
}

local function bundled_plugins()
    local plugins = require "lunagate.plugins"
    local found = {}
    local p = assert(io.popen("find plugins -name '*.lua' | sort"))
    for file in p:lines() do
        local chunk = assert(loadfile(file, "t"))
        local ok, mod = pcall(chunk)
        -- modules without a priority are helpers (provider data, wire protocols), not plugins
        if ok and type(mod) == "table" and mod.priority ~= nil then
            found[#found + 1] = { file = file, mod = mod }
        elseif not ok then
            error(file .. ": " .. tostring(mod))
        end
    end
    p:close()
    for _, f in ipairs(found) do
        local good, err = plugins.check_contract(f.mod)
        assert(good, f.file .. ": " .. tostring(err))
    end
    return found
end

describe("bundled plugins", function()
    local found

    setup(function()
        fake.install()
        found = bundled_plugins()
    end)

    teardown(function()
        fake.uninstall()
    end)

    it("have unique priorities", function()
        local seen = {}
        for _, f in ipairs(found) do
            local other = seen[f.mod.priority]
            assert(other == nil, string.format("%s and %s share priority %d", f.file,
                tostring(other), f.mod.priority))
            seen[f.mod.priority] = f.file
        end
    end)

    it("document every schema field", function()
        local schema = require "lunagate.schema"
        for _, f in ipairs(found) do
            assert.same({}, schema.undocumented(f.mod.schema), f.file .. ": fields without description")
        end
    end)

    it("are named after their file", function()
        for _, f in ipairs(found) do
            local base = f.file:match("([^/]+)%.lua$")
            if base == "init" then
                base = f.file:match("([^/]+)/init%.lua$")
            end
            assert.equal(base, f.mod.name, f.file)
        end
    end)

    it("run in the pinned order", function()
        table.sort(found, function(a, b) return a.mod.priority > b.mod.priority end)
        local order = {}
        for i, f in ipairs(found) do
            order[i] = f.mod.name
        end
        assert.same(PINNED, order)
    end)
end)
