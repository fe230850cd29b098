-- A RESP (redis protocol) server on treadle.tcp.serve: PING, SET, GET, DEL
-- on a Lua table, with pipelining:
--
--   lua5.4 examples/lua/resp_server.lua [PORT=6380]
--
-- Commands come as RESP arrays ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), as
-- redis-cli and redis-benchmark send them, or inline ("PING\r\n"). Each read takes whatever has
-- come (conn:receiveany), answers every whole command in it and sends the
-- answers in one write, so a pipeline of 16 commands costs one read and
-- one write. Another command gets "-ERR unknown command"; a request that
-- is not RESP gets "-ERR Protocol error" and the connection closes.
-- current_thread (the store is one worker's table); SIGINT or SIGTERM stops
-- it.
local treadle = require "treadle"

local find, sub, tonumber, concat, upper = string.find, string.sub, tonumber, table.concat, string.upper

local store = {}

local function run(args, n)
  local cmd = args[1]
  if cmd ~= "GET" and cmd ~= "SET" and cmd ~= "PING" then cmd = upper(cmd) end
  if cmd == "GET" and n == 2 then
    local v = store[args[2]]
    return v and "$" .. #v .. "\r\n" .. v .. "\r\n" or "$-1\r\n"
  elseif cmd == "SET" and n >= 3 then
    store[args[2]] = args[3]
    return "+OK\r\n"
  elseif cmd == "PING" then
    return n >= 2 and "$" .. #args[2] .. "\r\n" .. args[2] .. "\r\n" or "+PONG\r\n"
  elseif cmd == "DEL" and n >= 2 then
    local gone = 0
    for i = 2, n do
      if store[args[i]] ~= nil then store[args[i]] = nil; gone = gone + 1 end
    end
    return ":" .. gone .. "\r\n"
  end
  return "-ERR unknown command '" .. args[1] .. "'\r\n"
end

-- Parses one command at pos: returns the args, their count and the next
-- position; nil when the command is not whole yet; false when it is not RESP.
local function parse(buf, pos)
  local e = find(buf, "\r\n", pos, true)
  if not e then return nil end
  if sub(buf, pos, pos) ~= "*" then -- an inline command: "PING\r\n"
    local args, n = {}, 0
    for word in string.gmatch(sub(buf, pos, e - 1), "%S+") do n = n + 1; args[n] = word end
    if n == 0 then return false end
    return args, n, e + 2
  end
  local n = tonumber(sub(buf, pos + 1, e - 1))
  if not n or n < 1 or n > 1024 then return false end
  local args = {}
  pos = e + 2
  local size = #buf
  for i = 1, n do
    -- "$LEN\r\n" in one call: its end and the length
    local _, hend, len = find(buf, "^%$(%d+)\r\n", pos)
    if not hend then
      if pos > size or (sub(buf, pos, pos) == "$" and not find(buf, "\n", pos, true)) then
        return nil -- not here yet
      end
      return false
    end
    len = tonumber(len)
    if hend + len + 2 > size then return nil end
    args[i] = sub(buf, hend + 1, hend + len)
    pos = hend + len + 3
  end
  return args, n, pos
end

local function handle(conn)
  local buf = ""
  while true do
    local data = conn:receiveany(65536)
    if not data then return end
    buf = buf == "" and data or buf .. data
    local out, k, pos = {}, 0, 1
    while pos <= #buf do
      local args, n, nextpos = parse(buf, pos)
      if args == false then
        k = k + 1; out[k] = "-ERR Protocol error\r\n"
        conn:send(concat(out))
        return
      end
      if not args then break end
      k = k + 1; out[k] = run(args, n)
      pos = nextpos
    end
    buf = pos > #buf and "" or sub(buf, pos)
    if k > 0 and not conn:send(k == 1 and out[1] or concat(out)) then return end
  end
end

local port = tonumber(arg[1]) or 6380
treadle.run(function()
  local why, err = treadle.tcp.serve("127.0.0.1", port, handle)
  if not why then error("listen on 127.0.0.1:" .. port .. ": " .. tostring(err), 0) end
  io.stdout:write("stopped (", why, ")\n")
end)
