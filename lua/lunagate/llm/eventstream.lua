-- lunagate/llm/eventstream.lua -- AWS event-stream (application/vnd.amazon.eventstream) codec
--
-- Wire format of one message (all integers big-endian):
--   total_length u32 | headers_length u32 | prelude_crc u32 (CRC32 of the first 8 bytes)
--   headers (headers_length bytes) | payload | message_crc u32 (CRC32 of all preceding bytes)
-- A header is: name_len u8 | name | type u8 | value, with value types 0 true, 1 false, 2 byte,
-- 3 int16, 4 int32, 5 int64, 6 bytes (u16 len), 7 string (u16 len), 8 timestamp (int64 ms),
-- 9 uuid (16 bytes).
--
-- local es = require "lunagate.llm.eventstream"
-- local dec = es.decoder({ max_bytes = 1048576 })   -- largest accepted message (default 1 MiB)
-- local msgs, err = dec:feed(chunk)  -- array of { headers = {...}, payload = "...",
--                                    --   event = headers[":event-type"] or [":exception-type"],
--                                    --   message_type = headers[":message-type"], data = payload }
--     On a CRC mismatch or an impossible length the decoder fails for good (dec.failed) and
--     returns nil, err ("eventstream: prelude crc mismatch", ...).
-- es.encode(headers, payload) -> bytes   -- headers: ordered { {name, value}, ... } string values
-- es.crc32(s) -> integer
local M = {}

M.DEFAULT_MAX_BYTES = 1024 * 1024

local CRC = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if c & 1 == 1 then c = 0xedb88320 ~ (c >> 1) else c = c >> 1 end
    end
    CRC[i] = c
end

function M.crc32(s, crc)
    crc = (crc or 0) ~ 0xffffffff
    for i = 1, #s do
        crc = CRC[(crc ~ s:byte(i)) & 0xff] ~ (crc >> 8)
    end
    return crc ~ 0xffffffff
end
local crc32 = M.crc32

local function parse_headers(s, i, last)
    local h = {}
    while i <= last do
        local nlen = s:byte(i)
        if not nlen or i + nlen + 1 > last then return nil, "eventstream: truncated header" end
        local name = s:sub(i + 1, i + nlen)
        i = i + nlen + 1
        local t = s:byte(i)
        i = i + 1
        local v
        if t == 0 then v = true
        elseif t == 1 then v = false
        elseif t == 2 then v = string.unpack(">i1", s, i); i = i + 1
        elseif t == 3 then v = string.unpack(">i2", s, i); i = i + 2
        elseif t == 4 then v = string.unpack(">i4", s, i); i = i + 4
        elseif t == 5 or t == 8 then v = string.unpack(">i8", s, i); i = i + 8
        elseif t == 6 or t == 7 then
            local l = string.unpack(">I2", s, i)
            v = s:sub(i + 2, i + 1 + l)
            i = i + 2 + l
        elseif t == 9 then v = s:sub(i, i + 15); i = i + 16
        else
            return nil, "eventstream: bad header type " .. tostring(t)
        end
        if i > last + 1 then return nil, "eventstream: truncated header" end
        h[name] = v
    end
    return h
end

local Decoder = {}
Decoder.__index = Decoder

function M.decoder(opts)
    opts = opts or {}
    return setmetatable({ buf = "", failed = false, err = nil,
                          max_bytes = opts.max_bytes or M.DEFAULT_MAX_BYTES }, Decoder)
end

local function fail(self, err)
    self.failed, self.err, self.buf = true, err, ""
    return nil, err
end

function Decoder:feed(chunk)
    if self.failed then return nil, self.err end
    local out = {}
    local buf = self.buf .. (chunk or "")
    local pos = 1
    while #buf - pos + 1 >= 12 do
        local total, hlen, pcrc = string.unpack(">I4I4I4", buf, pos)
        if crc32(buf:sub(pos, pos + 7)) ~= pcrc then
            return fail(self, "eventstream: prelude crc mismatch")
        end
        if total < 16 or hlen > total - 16 then
            return fail(self, "eventstream: bad lengths")
        end
        if total > self.max_bytes then
            return fail(self, "eventstream: message exceeds " .. self.max_bytes .. " bytes")
        end
        if #buf - pos + 1 < total then break end
        local mcrc = string.unpack(">I4", buf, pos + total - 4)
        if crc32(buf:sub(pos, pos + total - 5)) ~= mcrc then
            return fail(self, "eventstream: message crc mismatch")
        end
        local headers, err = parse_headers(buf, pos + 12, pos + 11 + hlen)
        if not headers then return fail(self, err) end
        local payload = buf:sub(pos + 12 + hlen, pos + total - 5)
        out[#out + 1] = {
            headers = headers, payload = payload, data = payload,
            event = headers[":event-type"] or headers[":exception-type"],
            message_type = headers[":message-type"],
        }
        pos = pos + total
    end
    self.buf = buf:sub(pos)
    if #self.buf > self.max_bytes then
        return fail(self, "eventstream: message exceeds " .. self.max_bytes .. " bytes")
    end
    return out
end

function M.encode(headers, payload)
    local hb = {}
    for _, kv in ipairs(headers or {}) do
        local name, v = kv[1], tostring(kv[2])
        hb[#hb + 1] = string.pack(">s1B", name, 7) .. string.pack(">s2", v)
    end
    local h = table.concat(hb)
    payload = payload or ""
    local total = 12 + #h + #payload + 4
    local prelude = string.pack(">I4I4", total, #h)
    local msg = prelude .. string.pack(">I4", crc32(prelude)) .. h .. payload
    return msg .. string.pack(">I4", crc32(msg))
end

-- Convenience for Bedrock-style event messages.
function M.encode_event(event_type, payload)
    return M.encode({ { ":event-type", event_type }, { ":content-type", "application/json" },
                      { ":message-type", "event" } }, payload)
end

return M
