-- spec/01-lua/cel_conformance_spec.lua -- runs the cel-spec conformance data through
-- spec/cel/conformance.lua (the runner is the source of truth; this keeps it in `make test`)

describe("cel conformance (spec/cel/testdata)", function()
    it("passes every in-scope case", function()
        local p = assert(io.popen("lua5.4 spec/cel/conformance.lua spec/cel/testdata/*.textproto 2>&1"))
        local out = p:read("a")
        local ok = p:close()
        local passed, failed = out:match("(%d+) passed, (%d+) failed")
        assert.is_not_nil(passed, out)
        assert.equal("0", failed, out)
        assert.is_true(tonumber(passed) >= 1000, out)
        assert.is_true(ok, out)
    end)

    it("keeps a reason for every skipped case", function()
        for line in io.lines("spec/cel/skip.txt") do
            if not line:match("^#") and line:match("%S") then
                assert.matches("^%S+/%S+/%S+%s+%S", line)
            end
        end
    end)

    it("reports failures and exits non-zero", function()
        local tmp = os.tmpname()
        local f = assert(io.open(tmp, "w"))
        f:write([[
name: "selftest"
section {
  name: "s"
  test { name: "good" expr: "1 + 1" value: { int64_value: 2 } }
  test { name: "bad" expr: "1 + 1" value: { int64_value: 3 } }
  test { name: "err" expr: "1 / 0" eval_error: { errors: { message: "divide by zero" } } }
}
]])
        f:close()
        local p = assert(io.popen("lua5.4 spec/cel/conformance.lua " .. tmp .. " 2>&1"))
        local out = p:read("a")
        local ok = p:close()
        os.remove(tmp)
        assert.matches("FAIL selftest/s/bad: got int 2, want int 3", out, 1, true)
        assert.matches("2 passed, 1 failed", out, 1, true)
        assert.is_falsy(ok)
    end)
end)
