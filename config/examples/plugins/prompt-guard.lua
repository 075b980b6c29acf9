-- prompt-guard.lua -- rejects chat requests whose prompt matches a configured pattern.
-- Looks at messages[*].content (strings, or lists of {type = "text", text = ...} parts) and a
-- top-level "prompt" string in a JSON body, and answers 400 with an OpenAI-shaped error.
-- An example of a drop-in plugin (config/examples/custom-plugin.yaml); see README.md, "Plugins".
local lg = require "lunagate"

local plugin = {
    name = "prompt-guard",
    version = "1.0.0",
    priority = 2100,              -- high: reject before anything else spends work
    schema = {
        fields = {
            { patterns = { type = "array", required = true, len_min = 1,
                           elements = { type = "string" },
                           description = "PCRE patterns; a match anywhere rejects the request." } },
            { case_sensitive = { type = "boolean", default = false,
                                 description = "Match case-sensitively." } },
            { message = { type = "string", default = "the prompt was rejected by policy",
                          description = "Error message returned to the client." } },
            { count_dict = { type = "string",
                             description = "Optional lg.shared dictionary counting rejections." } },
        },
        check = function(conf)
            for i, p in ipairs(conf.patterns) do
                local _, err = lg.re.find("", p)
                if err then
                    return nil, "patterns: pattern " .. i .. ": " .. err
                end
            end
            return true
        end,
    },
}

-- Every text of the prompt, in order.
local function texts(body)
    local out = {}
    if type(body.prompt) == "string" then
        out[#out + 1] = body.prompt
    end
    if type(body.messages) == "table" then
        for _, m in ipairs(body.messages) do
            local c = type(m) == "table" and m.content
            if type(c) == "string" then
                out[#out + 1] = c
            elseif type(c) == "table" then
                for _, part in ipairs(c) do
                    if type(part) == "table" and type(part.text) == "string" then
                        out[#out + 1] = part.text
                    end
                end
            end
        end
    end
    return out
end

function plugin.access(conf)
    local raw = lg.request.get_body()
    if not raw or raw == "" then
        return
    end
    local body = lg.json.decode(raw)
    if type(body) ~= "table" then
        return -- not JSON: not a prompt this plugin understands
    end
    local flags = conf.case_sensitive and "" or "i"
    for _, text in ipairs(texts(body)) do
        for _, p in ipairs(conf.patterns) do
            if lg.re.find(text, p, flags) then
                lg.log.info("prompt rejected by pattern ", p)
                if conf.count_dict then
                    lg.shared[conf.count_dict]:incr("rejected", 1, 0)
                end
                return 400, { error = { message = conf.message, type = "invalid_request_error",
                                        param = "messages", code = "prompt_rejected" } }
            end
        end
    end
end

return plugin
