-- A WebSocket echo server and client with OpenResty's lua-resty-websocket,
-- unchanged, on treadle: Debian's lua-nginx-websocket installs it as
-- nginx.websocket.*; `ngx = require "treadle.ngx"` gives it ngx.socket.tcp
-- (treadle's cosockets), ngx.sha1_bin, ngx.encode_base64, ngx.re and the
-- byte buffers of `require "ffi"` that it masks frames in.
--
--   scripts/setup.sh lua-nginx-websocket
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/websocket_echo.lua [MESSAGES=3]
--
-- The server (treadle.tcp.server on 127.0.0.1, a port the system picks)
-- answers the opening handshake itself, as nginx would before a
-- content_by_lua handler, then echoes frames with the library's protocol
-- module (recv_frame/send_frame); the client is the library's
-- nginx.websocket.client: it connects, sends MESSAGES text frames of
-- growing size (masked, as a client must), a binary frame and a ping, and
-- closes. Exit status 1 if an echo differs.
ngx = require "treadle.ngx"  -- luacheck: ignore (the libraries read the global)
local treadle = require "treadle"

local messages = tonumber(arg and arg[1] or "3")
if not messages or messages < 1 then
  io.stderr:write("usage: lua5.4 examples/lua/websocket_echo.lua [MESSAGES]\n")
  os.exit(2)
end

local GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11" -- RFC 6455's
local MAX_PAYLOAD = 1 << 20

-- The opening handshake (RFC 6455 section 4.2): the request's headers,
-- then 101 with the key's accept value. Returns true, or nil and why.
local function handshake(conn)
  local request = conn:receive("*l")
  if not request or not request:match("^GET .* HTTP/1%.1$") then return nil, "not a GET" end
  local key
  while true do
    local line = conn:receive("*l")
    if not line then return nil, "closed" end
    if line == "" then break end
    local name, value = line:match("^([%w-]+):%s*(.-)%s*$")
    if name and name:lower() == "sec-websocket-key" then key = value end
  end
  if not key then
    conn:send("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    return nil, "no Sec-WebSocket-Key"
  end
  local accept = ngx.encode_base64(ngx.sha1_bin(key .. GUID))
  return conn:send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" ..
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: " .. accept .. "\r\n\r\n")
end

-- Echoes frames until the client's close, which it answers.
local function echo(conn)
  local proto = require "nginx.websocket.protocol"
  if not handshake(conn) then return end
  while true do
    -- a server must see masked frames (force_masking)
    local data, typ, err = proto.recv_frame(conn, MAX_PAYLOAD, true)
    if not data then
      print("server: " .. tostring(err))
      return
    end
    if typ == "close" then
      proto.send_frame(conn, true, 0x8, string.char(err >> 8, err & 0xff), MAX_PAYLOAD, false)
      return
    elseif typ == "ping" then
      proto.send_frame(conn, true, 0xa, data, MAX_PAYLOAD, false)
    elseif typ == "text" or typ == "binary" then
      proto.send_frame(conn, true, typ == "text" and 0x1 or 0x2, data, MAX_PAYLOAD, false)
    end
  end
end

local ok = treadle.run(function()
  local server = assert(treadle.tcp.server("127.0.0.1", 0, echo))
  local _, port = server:addr()
  local client = require "nginx.websocket.client"
  local ws = assert(client:new({timeout = 5000, max_payload_len = MAX_PAYLOAD}))
  assert(ws:connect("ws://127.0.0.1:" .. port .. "/echo"))
  local good = true
  -- payload lengths in each of the three encodings: 7 bits, 16, 64
  local sizes = {10, 200, 70000}
  for i = 1, messages do
    local text = string.format("message %d ", i) .. string.rep("x", sizes[(i - 1) % 3 + 1])
    assert(ws:send_text(text))
    local data, typ = ws:recv_frame()
    good = good and data == text and typ == "text"
    print(string.format("text of %d bytes -> %s %s", #text, typ, data == text and "echoed" or "DIFFERS"))
  end
  local bytes = string.char(0, 255, 13, 10, 128)
  assert(ws:send_binary(bytes))
  local data, typ, err = ws:recv_frame()
  good = good and data == bytes and typ == "binary"
  print("binary of 5 bytes -> " .. typ .. (data == bytes and " echoed" or " DIFFERS"))
  assert(ws:send_ping("are you there"))
  data, typ = ws:recv_frame()
  good = good and typ == "pong" and data == "are you there"
  print("ping -> " .. typ .. " " .. data)
  assert(ws:send_close(1000, "bye"))
  data, typ, err = ws:recv_frame()
  print("close -> " .. tostring(typ) .. " " .. tostring(err))
  good = good and typ == "close" and err == 1000
  ws:close()
  server:close()
  return good
end)
print(ok and "== done" or "== an echo differed")
os.exit(ok and 0 or 1)
