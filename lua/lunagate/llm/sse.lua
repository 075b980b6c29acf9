-- lunagate/llm/sse.lua -- incremental Server-Sent Events codec (decoder + encoder)
--
-- local sse = require "lunagate.llm.sse"
-- local dec = sse.decoder({ max_bytes = 1048576 })   -- cap on buffered bytes (default 1 MiB)
-- local events, err = dec:feed(chunk)   -- chunk: any byte string, split anywhere
--     events: array of { event = "name" | nil, data = "line1\nline2", id = "..." | nil }
--     err:    when the buffered partial line + pending data would exceed max_bytes the
--             decoder is marked failed (dec.failed = true) and every later feed returns
--             nil, "sse: event exceeds N bytes"; nothing grows past the cap.
-- local events = dec:finish()           -- end of stream: a pending event without its blank
--                                       -- line is dropped (per the HTML SSE spec).
-- sse.encode({ event=, data=, id= })    -- -> "event: x\ndata: ...\n\n"
--
-- Lines end with CRLF, LF or CR (a CR at a chunk end followed by LF in the next chunk counts
-- once). Lines starting with ":" are comments. "data:" lines are joined with "\n". An event
-- is dispatched on a blank line when it has at least one data line. "retry" is ignored.
local M = {}

M.DEFAULT_MAX_BYTES = 1024 * 1024

local Decoder = {}
Decoder.__index = Decoder

function M.decoder(opts)
    opts = opts or {}
    return setmetatable({
        buf = "", skip_lf = false, data = nil, data_len = 0, event = nil, id = nil,
        started = false, failed = false, err = nil,
        max_bytes = opts.max_bytes or M.DEFAULT_MAX_BYTES,
    }, Decoder)
end

local function fail(self)
    self.failed = true
    self.err = "sse: event exceeds " .. self.max_bytes .. " bytes"
    self.buf, self.data, self.data_len = "", nil, 0
    return nil, self.err
end

function Decoder:_line(line, out)
    if line == "" then
        if self.data then
            out[#out + 1] = { event = self.event, data = table.concat(self.data, "\n"), id = self.id }
        end
        self.data, self.data_len, self.event = nil, 0, nil
        return
    end
    if line:byte(1) == 58 then return end                 -- ":" comment
    local field, value
    local c = line:find(":", 1, true)
    if c then
        field = line:sub(1, c - 1)
        value = line:sub(c + 1)
        if value:byte(1) == 32 then value = value:sub(2) end
    else
        field, value = line, ""
    end
    if field == "data" then
        local d = self.data
        if not d then d = {}; self.data = d end
        d[#d + 1] = value
        self.data_len = self.data_len + #value + 1
    elseif field == "event" then
        self.event = value
    elseif field == "id" then
        if not value:find("\0", 1, true) then self.id = value end
    end
end

function Decoder:feed(chunk)
    if self.failed then return nil, self.err end
    local out = {}
    if chunk == nil or chunk == "" then return out end
    local buf = self.buf == "" and chunk or self.buf .. chunk
    local pos = 1
    if not self.started then
        self.started = true
        if buf:sub(1, 3) == "\239\187\191" then pos = 4 end
    end
    if self.skip_lf then
        self.skip_lf = false
        if buf:byte(pos) == 10 then pos = pos + 1 end
    end
    local n = #buf
    while true do
        local s = buf:find("[\r\n]", pos)
        if not s then break end
        local line = buf:sub(pos, s - 1)
        if buf:byte(s) == 13 then
            if s == n then
                self.skip_lf = true
                pos = s + 1
            elseif buf:byte(s + 1) == 10 then
                pos = s + 2
            else
                pos = s + 1
            end
        else
            pos = s + 1
        end
        self:_line(line, out)
        if self.data_len > self.max_bytes then return fail(self) end
    end
    self.buf = pos > n and "" or buf:sub(pos)
    if #self.buf + self.data_len > self.max_bytes then return fail(self) end
    return out
end

function Decoder:finish()
    if self.failed then return nil, self.err end
    self.buf, self.data, self.data_len, self.event = "", nil, 0, nil
    return {}
end

function M.encode(ev)
    local parts = {}
    if ev.event then parts[#parts + 1] = "event: " .. ev.event .. "\n" end
    if ev.id then parts[#parts + 1] = "id: " .. ev.id .. "\n" end
    local data = ev.data or ""
    for line in (data .. "\n"):gmatch("(.-)\r?\n") do
        parts[#parts + 1] = "data: " .. line .. "\n"
    end
    parts[#parts + 1] = "\n"
    return table.concat(parts)
end

return M
