-- A RESP (redis protocol) server on treadle.tcp.serve: PING, SET, GET, DEL
-- on a Lua table, with pipelining:
--
--   lua5.4 examples/lua/resp_server.lua [PORT=6380]
--
-- Commands come as RESP arrays ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), as
-- redis-cli and redis-benchmark send them, or inline ("PING\r\n"). Each
-- read takes whatever has come (conn:receiveany), answers every whole
-- command in it and sends the answers in one write, so a pipeline of 16
-- commands costs one read and one write. A command costs a few
-- string.find and string.sub calls and no new table: its arguments go into
-- one table per connection, reused. Another command gets "-ERR unknown
-- command"; a request that is not RESP (a bulk string whose length is
-- not followed by CRLF included) gets "-ERR Protocol error" and the
-- connection closes. current_thread (the store is one worker's table);
-- SIGINT or SIGTERM stops it.
local treadle = require "treadle"

local byte, find, sub, tonumber, concat, upper = string.byte, string.find, string.sub, tonumber, table.concat, string.upper

local store = {}

-- "$5\r\n", the head of a bulk string, made once per length (up to 4096:
-- the table stays small whatever lengths clients use)
local heads = setmetatable({}, {__index = function(t, len)
  local head = "$" .. len .. "\r\n"
  if len <= 4096 then t[len] = head end
  return head
end})

local function run(args, n)
  local cmd = args[1]
  if cmd ~= "GET" and cmd ~= "SET" and cmd ~= "PING" then cmd = upper(cmd) end
  if cmd == "GET" and n == 2 then
    local v = store[args[2]]
    return v and heads[#v] .. v .. "\r\n" or "$-1\r\n"
  elseif cmd == "SET" and n >= 3 then
    store[args[2]] = args[3]
    return "+OK\r\n"
  elseif cmd == "PING" then
    return n >= 2 and heads[#args[2]] .. args[2] .. "\r\n" or "+PONG\r\n"
  elseif cmd == "DEL" and n >= 2 then
    local gone = 0
    for i = 2, n do
      if store[args[i]] ~= nil then store[args[i]] = nil; gone = gone + 1 end
    end
    return ":" .. gone .. "\r\n"
  end
  return "-ERR unknown command '" .. args[1] .. "'\r\n"
end

-- Parses one command at pos into args (the connection's table, reused):
-- returns the count and the next position; nil when the command is not
-- whole yet; false when it is not RESP.
local function parse(buf, pos, args)
  local e = find(buf, "\r\n", pos, true)
  if not e then return nil end
  if byte(buf, pos) ~= 42 then -- not "*": an inline command, "PING\r\n"
    local n, s, f = 0, find(buf, "%S+", pos)
    while s and s < e do
      n = n + 1; args[n] = sub(buf, s, f)
      s, f = find(buf, "%S+", f + 1)
    end
    if n == 0 then return false end
    return n, e + 2
  end
  local n = tonumber(sub(buf, pos + 1, e - 1))
  if not n or n < 1 or n > 1024 then return false end
  pos = e + 2
  local size = #buf
  for i = 1, n do
    -- "$LEN\r\n" in one call: its end and the length
    local _, hend, len = find(buf, "^%$(%d+)\r\n", pos)
    if not hend then
      if pos > size or (byte(buf, pos) == 36 and not find(buf, "\n", pos, true)) then
        return nil -- not here yet
      end
      return false
    end
    len = tonumber(len)
    if hend + len + 2 > size then return nil end
    local cr, lf = byte(buf, hend + len + 1, hend + len + 2)
    if cr ~= 13 or lf ~= 10 then return false end -- the payload's CRLF
    args[i] = sub(buf, hend + 1, hend + len)
    pos = hend + len + 3
  end
  return n, pos
end

local function handle(conn)
  local buf, args, out = "", {}, {}
  while true do
    local data = conn:receiveany(65536)
    if not data then return end
    buf = buf == "" and data or buf .. data
    local k, pos, size = 0, 1, #buf
    while pos <= size do
      local n, nextpos = parse(buf, pos, args)
      if n == false then
        k = k + 1; out[k] = "-ERR Protocol error\r\n"
        conn:send(concat(out, "", 1, k))
        return
      end
      if not n then break end
      k = k + 1; out[k] = run(args, n)
      pos = nextpos
    end
    buf = pos > size and "" or sub(buf, pos)
    if k > 0 and not conn:send(k == 1 and out[1] or concat(out, "", 1, k)) then return end
  end
end

local port = tonumber(arg[1]) or 6380
treadle.run(function()
  local why, err = treadle.tcp.serve("127.0.0.1", port, handle)
  if not why then error("listen on 127.0.0.1:" .. port .. ": " .. tostring(err), 0) end
  io.stdout:write("stopped (", why, ")\n")
end)
