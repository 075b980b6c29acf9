-- lunagate/mcp/channel.lua -- one JSON-RPC message stream shared by many requests
-- SPDX-License-Identifier: MIT
--
-- stdio children and legacy SSE servers answer every request on one stream. A channel owns
-- a background pump coroutine that reads that stream and sorts messages: a response goes to
-- the request with its id; notifications/progress goes to the request whose progressToken it
-- carries; any other server message (notification, server-to-client request) goes to the only
-- request in flight, or, with none or several in flight, to the unsolicited queue the GET
-- stream drains. Waiters sleep on an lg.http.event that the pump sets after each message.
--
-- The pump is resumed by the event loop like any coroutine waiting in lg.* I/O, so the
-- resumer installed by the proxy must accept coroutines it did not start.
--
--   local ch = channel.new{ read = fn() -> line | nil, err, write = fn(line) -> true | nil, err,
--                           http = lg.http, on_unsolicited = fn(msg) | nil, name = "target" }
--   ch:start()
--   ch:request(msg [, timeout_ms]) -> next() | nil, err    next() -> msg | nil, err: the
--       server messages for this request, the final response last
--   ch:send(msg) -> true | nil, err       (notifications and answers to server requests)
--   ch:close()

local json = require "lunagate.mcp.json"

local channel = {}

local Ch = {}
Ch.__index = Ch

local function idkey(id)
    return (math.type(id) == "integer" and "n:" or "s:") .. tostring(id)
end

function channel.new(o)
    return setmetatable({
        read = o.read, write = o.write, http = o.http, name = o.name or "target",
        on_unsolicited = o.on_unsolicited,
        pending = {}, npending = 0, ev = o.http.event(), closed = nil,
    }, Ch)
end

function Ch:_wake()
    local ev = self.ev
    self.ev = self.http.event()
    ev:set()
end

function Ch:_dispatch(msg)
    if type(msg) ~= "table" then return end
    if msg.method == nil and msg.id ~= nil then
        local p = self.pending[idkey(msg.id)]
        if p then
            p.tail = p.tail + 1
            p.inbox[p.tail] = msg
            p.done = true
        end
        return
    end
    local target
    if msg.method == "notifications/progress" and type(msg.params) == "table" then
        local tok = msg.params.progressToken
        for _, p in pairs(self.pending) do
            if tok ~= nil and p.token == tok then target = p break end
        end
    end
    if not target and self.npending == 1 and msg.method ~= "notifications/progress" then
        target = next(self.pending) and select(2, next(self.pending))
    end
    if target then
        target.tail = target.tail + 1
        target.inbox[target.tail] = msg
    elseif self.on_unsolicited then
        self.on_unsolicited(msg)
    end
end

function Ch:start()
    if self.pump then return end
    self.pump = coroutine.create(function()
        while not self.closed do
            local line, err = self.read()
            if not line then
                self.closed = err or "closed"
                break
            end
            local msg = json.decode(line)
            if msg then self:_dispatch(msg) end
            self:_wake()
        end
        self:_wake()
    end)
    local ok, err = coroutine.resume(self.pump)
    if not ok then
        self.closed = "pump failed: " .. tostring(err)
    end
end

function Ch:send(msg)
    if self.closed then return nil, self.name .. ": " .. self.closed end
    return self.write(json.encode(msg))
end

function Ch:request(msg, timeout_ms)
    if self.closed then return nil, self.name .. ": " .. self.closed end
    local key = idkey(msg.id)
    if self.pending[key] then return nil, "duplicate request id " .. tostring(msg.id) end
    local meta = type(msg.params) == "table" and msg.params._meta
    local p = { inbox = {}, head = 1, tail = 0, token = type(meta) == "table" and meta.progressToken or nil }
    self.pending[key] = p
    self.npending = self.npending + 1
    local ok, err = self.write(json.encode(msg))
    if not ok then
        self.pending[key] = nil
        self.npending = self.npending - 1
        return nil, err
    end
    local deadline = timeout_ms and timeout_ms > 0 and (os.time() + timeout_ms / 1000) or nil
    local finished = false
    local function finish()
        if not finished then
            finished = true
            self.pending[key] = nil
            self.npending = self.npending - 1
        end
    end
    return function()
        while true do
            local m = p.inbox[p.head]
            if m then
                p.inbox[p.head] = nil
                p.head = p.head + 1
                if m.method == nil and m.id ~= nil then finish() end
                return m
            end
            if finished then return nil end
            if self.closed then
                finish()
                return nil, self.name .. ": " .. self.closed
            end
            if deadline and os.time() > deadline then
                finish()
                return nil, self.name .. ": request timed out"
            end
            self.ev:wait(1000)
        end
    end
end

function Ch:close()
    self.closed = self.closed or "closed"
    self:_wake()
end

return channel
