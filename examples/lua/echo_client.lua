-- The client side: connects to an echo server, sends messages and checks
-- that every byte comes back.
--
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/echo_client.lua [PORT [CONNS [MESSAGES [SIZE]]]]
--
-- With PORT (not 0) it talks to the echo server there (echo_server.lua, or
-- any other on 127.0.0.1). Without one it first starts an echo server task
-- of its own on 127.0.0.1:0 in the same runtime, so the example runs alone.
-- CONNS tasks (default 10) each connect with treadle.tcp.connect, then
-- MESSAGES times (default 100) write a SIZE-byte message (default 1000;
-- conn:write sends all of it) and read until the whole echo is back,
-- comparing it with what was sent. Finally each shuts its write side down
-- and reads to the end of the stream, so the server sees a clean close.
-- Exit status 1 if any echo differed or any connection failed (a refused
-- connection is nil, "connection refused", "ECONNREFUSED").
local treadle = require "treadle"

local port = tonumber(arg[1] or "0")
local conns = tonumber(arg[2] or "10")
local messages = tonumber(arg[3] or "100")
local size = tonumber(arg[4] or "1000")
if not (port and conns and messages and size) then
  io.stderr:write("usage: lua5.4 examples/lua/echo_client.lua [PORT [CONNS [MESSAGES [SIZE]]]]\n")
  os.exit(2)
end

-- the self-contained mode's server
local function serve(listener)
  while true do
    local conn = listener:accept()
    if not conn then return end
    treadle.spawn(function()
      while true do
        local data = conn:read(16384)
        if not data then break end
        conn:write(data)
      end
      conn:close()
    end)
  end
end

-- reads exactly n bytes, or returns nil, why
local function read_n(conn, n)
  local parts, got = {}, 0
  while got < n do
    local data, err, errno = conn:read(n - got)
    if not data then return nil, err and (err .. " (" .. tostring(errno) .. ")") or "end of stream" end
    parts[#parts + 1] = data
    got = got + #data
  end
  return table.concat(parts)
end

local function client(i)
  local conn, err, errno = treadle.tcp.connect("127.0.0.1", port)
  if not conn then return false, string.format("connect: %s (%s)", err, errno) end
  local pattern = string.rep(string.format("%07d|", i), size // 8 + 1)
  for m = 1, messages do
    local off = (m * 13) % 8
    local msg = pattern:sub(1 + off, size + off)
    local ok, werr = conn:write(msg)
    if not ok then conn:close() return false, "write: " .. tostring(werr) end
    local back, rerr = read_n(conn, #msg)
    if back ~= msg then
      conn:close()
      return false, back and ("echo " .. m .. " differed") or ("read: " .. rerr)
    end
  end
  conn:shutdown()
  local rest = conn:read()
  conn:close()
  if rest ~= nil then return false, "data after shutdown" end
  return true
end

local ok_all = treadle.run(function()
  local listener, server
  if port == 0 then
    listener = assert(treadle.tcp.bind("127.0.0.1", 0))
    local _
    _, port = listener:addr()
    server = treadle.spawn(serve, listener)
    print("own echo server on 127.0.0.1:" .. port)
  end
  local t0 = treadle.now()
  local tasks = {}
  for i = 1, conns do tasks[i] = treadle.spawn(client, i) end
  local good = 0
  for i = 1, conns do
    local ok, why = tasks[i]:join()
    if ok then good = good + 1 else print(string.format("connection %d: %s", i, why)) end
  end
  local secs = treadle.now() - t0
  print(string.format("%d of %d connections ok; %d round trips of %d bytes in %.3f s (%.0f round trips/s)",
    good, conns, good * messages, size, secs, good * messages / secs))
  if server then server:abort(); listener:close() end
  return good == conns
end)
os.exit(ok_all and 0 or 1)
