-- spec/03-plugins/providers/fixtures_spec.lua -- every provider fixture through lunagate.llm
-- luacheck: max line length 160
-- (a new provider or wire format is covered by dropping a directory into spec/fixtures/providers)
local cjson = require "cjson"
local F = require "03-plugins.providers.fixtures"

local function upstream_view(up)
    if not up then return nil end
    local body = up.body ~= "" and cjson.decode(up.body) or nil
    return F.plain({ host = up.host, port = up.port, tls = up.tls, sni = up.sni, method = up.method,
                     path = up.path, headers_set = up.headers_set, headers_remove = up.headers_remove,
                     body = body })
end

local function chunks_of(s, split)
    if not split then return { s } end
    return { s:sub(1, split), s:sub(split + 1) }
end

for _, rd in ipairs(F.route_dirs()) do
    describe("provider fixtures " .. rd.provider .. "/" .. rd.route, function()
        local b, conf, clock = F.backend(rd.dir)

        for _, name in ipairs(F.list(rd.dir .. "/requests", "%.json$")) do
            it("request " .. name, function()
                local rec, ctx = F.new_request(b, conf, clock, rd.dir .. "/requests/" .. name, conf.path)
                local actual = { llm = F.plain(rec.llm), upstream = upstream_view(ctx.upstream) }
                if ctx.respond then actual.respond = F.plain({ status = ctx.respond.status }) end
                local exp = F.expected(rd.dir .. "/requests/" .. name:gsub("%.json$", ".expected.json"), actual)
                assert.same(exp, actual)
                assert.is_nil(F.non_integer(rec.llm))
                if ctx.upstream then
                    -- the client's own credential never reaches the provider when backendAuth is set
                    local hs = ctx.upstream.headers_set
                    if conf.policies and conf.policies.backendAuth then
                        assert.not_equal("Bearer client-key", hs.authorization)
                        local removed = table.concat(ctx.upstream.headers_remove, ",")
                        assert.truthy(removed:find("authorization", 1, true) or hs.authorization)
                    end
                    assert.truthy(table.concat(ctx.upstream.headers_remove, ","):find("content-length", 1, true))
                end
            end)
        end

        for _, name in ipairs(F.list(rd.dir .. "/responses", "%.json$")) do
            it("response " .. name, function()
                local status = tonumber(name:match("^error_(%d+)")) or 200
                local rec, ctx = F.new_request(b, conf, clock, rd.dir .. "/" .. conf.request, conf.path)
                assert.truthy(ctx.upstream)
                local body = F.read(rd.dir .. "/responses/" .. name)
                local out = F.respond(b, ctx, clock, status, "application/json", { body })
                local actual = { llm = F.plain(rec.llm) }
                if ctx.translate then
                    actual.client_body = cjson.decode(out)
                else
                    assert.equal(body, out)          -- passthrough: bytes unchanged
                end
                local exp = F.expected(rd.dir .. "/responses/" .. name:gsub("%.json$", ".expected.json"), actual)
                if exp.client_body and exp.client_body.created then
                    exp.client_body.created = actual.client_body.created
                end
                assert.same(exp, actual)
                assert.is_nil(F.non_integer(rec.llm))
                -- split delivery gives the same record
                if #body > 1 then
                    local rec2, ctx2 = F.new_request(b, conf, clock, rd.dir .. "/" .. conf.request, conf.path)
                    local half = #body // 2
                    local out2 = F.respond(b, ctx2, clock, status, "application/json",
                        { body:sub(1, half), body:sub(half + 1) })
                    assert.same(F.plain(rec.llm), F.plain(rec2.llm))
                    assert.equal(out, out2)
                end
            end)
        end

        local streams = F.list(rd.dir .. "/streams", "%.sse$")
        for _, n in ipairs(F.list(rd.dir .. "/streams", "%.bin$")) do streams[#streams + 1] = n end
        for _, name in ipairs(streams) do
            local is_bin = name:match("%.bin$")
            local ct = is_bin and "application/vnd.amazon.eventstream" or "text/event-stream"
            local path = conf.stream_path or conf.path
            local req = rd.dir .. "/" .. (conf.stream_request or conf.request)
            local data = F.read(rd.dir .. "/streams/" .. name)

            local function run(split)
                local rec, ctx = F.new_request(b, conf, clock, req, path)
                assert.truthy(ctx.upstream)
                local out = F.respond(b, ctx, clock, 200, ct, chunks_of(data, split))
                return rec, ctx, out
            end

            it("stream " .. name, function()
                local rec, ctx, out = run(nil)
                local actual = { llm = F.plain(rec.llm) }
                if ctx.translate then
                    actual.client_events = F.sse_data(out)
                else
                    assert.equal(data, out)
                end
                local exp = F.expected(rd.dir .. "/streams/" .. name:gsub("%.%a+$", ".expected.json"), actual)
                if exp.client_events then
                    for i, e in ipairs(exp.client_events) do
                        if type(e) == "table" and e.created then e.created = actual.client_events[i].created end
                    end
                end
                assert.same(exp, actual)
                assert.is_nil(F.non_integer(rec.llm))
                assert.is_true(rec.llm.streaming)
            end)

            -- every boundary in the first 1500 bytes, then every 7th (the codecs themselves are
            -- checked at every boundary in spec/01-lua/llm_{sse,eventstream}_spec.lua)
            it("stream " .. name .. " split at byte boundaries", function()
                local rec0, _, out0 = run(nil)
                local want = F.plain(rec0.llm)
                for split = 1, #data - 1, 1 do
                    if split > 1500 and split % 7 ~= 0 then goto next end
                    local rec, _, out = run(split)
                    local got = F.plain(rec.llm)
                    if not (pcall(assert.same, want, got)) or out ~= out0 then
                        error("split at byte " .. split .. " changed the result:\n"
                            .. cjson.encode(got) .. "\n" .. cjson.encode(want))
                    end
                    ::next::
                end
            end)
        end
    end)
end
