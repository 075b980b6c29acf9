-- request-hash.lua -- adds x-request-hash: sha256 of "<METHOD> <path>" to every response.
-- An example of a drop-in plugin (config/examples/custom-plugin.yaml); see README.md, "Plugins".
local lg = require "lunagate"

local plugin = {
    name = "request-hash",
    version = "1.0.0",
    priority = 15,                -- low: runs after policy plugins
    schema = {
        fields = {
            { header = { type = "string", default = "x-request-hash", match = "^[%w%-]+$",
                         description = "Response header that carries the hash." } },
            { length = { type = "integer", default = 64, between = { 8, 64 },
                         description = "Hex digits kept (64 = the whole SHA-256)." } },
        },
    },
}

function plugin.access(conf, ctx)
    local method, path = lg.request.get_method(), lg.request.get_path()
    ctx.plugin.hash = lg.crypto.sha256_hex(method .. " " .. path):sub(1, conf.length)
end

function plugin.header_filter(conf, ctx)
    if ctx.plugin.hash then
        lg.response.set_header(conf.header, ctx.plugin.hash)
    end
end

return plugin
