-- bench-noop-c.lua -- a plugin that implements every request phase and does nothing; the
-- bench's `plugins` scenario chains three of these to measure the plugin machinery's cost.
-- SPDX-License-Identifier: MIT

return {
    name = "bench-noop-c",
    version = "1.0.0",
    priority = 1003,
    schema = { fields = {} },

    access = function(conf, ctx) -- luacheck: no unused args
    end,

    header_filter = function(conf, ctx) -- luacheck: no unused args
    end,

    body_filter = function(conf, ctx, chunk, eof) -- luacheck: no unused args
        return chunk
    end,

    log = function(conf, ctx) -- luacheck: no unused args
    end,
}
