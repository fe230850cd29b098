-- An HTTP/1.1 keep-alive server on treadle.tcp.serve:
--
--   lua5.4 examples/lua/http_server.lua [PORT=8080] [current_thread|multi_thread] [WORKERS=2]
--
-- GET / answers "Hello, World!" (the bytes of ../shared/bench's luv and
-- OpenResty peers: Content-Type text/plain, Content-Length 13); /hits
-- counts its own requests in a treadle.shared dict that every worker opens
-- by name ("hits 3 (worker 1)"). The request line and headers are read with
-- conn:receive("*l"), a body by its Content-Length; a request that is not
-- HTTP/1.x gets 400 and the connection closes. Connections stay open
-- (HTTP/1.1, or 1.0 with "Connection: keep-alive") and may pipeline.
-- SIGTERM or SIGINT stops it: every worker's serve returns, worker 0's main
-- prints "stopped (SIGTERM)" and its return ends the run.
local treadle = require "treadle"

local MODULE = "http_server" -- the name every worker requires this file by
local find, sub = string.find, string.sub

local BODY = "Hello, World!"
local HELLO = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " .. #BODY .. "\r\n\r\n" .. BODY
local BAD = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n" ..
            "Connection: close\r\n\r\nbad request\n"
local NOT_FOUND = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nnot found\n"

local function reply(text)
  return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " .. #text .. "\r\n\r\n" .. text
end

-- Reads the headers after the request line; returns the body's length and
-- whether to keep the connection open, or nil for a bad request (or a
-- connection that went away: then the send of the 400 fails, no harm).
-- Only three names matter, and all start with c or t: other lines are only
-- checked for their colon.
local function read_headers(conn, receive, keep_alive)
  local length = 0
  while true do
    local line = receive(conn, "*l")
    if not line then return nil end
    if line == "" then return length, keep_alive end
    local first = line:byte(1) | 32 -- lower case
    if first == 99 or first == 116 then -- c, t
      local name, value = line:match("^([%w-]+):[ \t]*(.-)[ \t]*$")
      if not name then return nil end
      name = name:lower()
      if name == "content-length" then
        length = value:match("^%d+$") and tonumber(value)
        if not length then return nil end
      elseif name == "connection" then
        value = value:lower()
        if value == "close" then keep_alive = false
        elseif value == "keep-alive" then keep_alive = true end
      elseif name == "transfer-encoding" then
        return nil -- chunked bodies: not in this example
      end
    elseif not find(line, ":", 2, true) then
      return nil
    end
  end
end

local function handle(conn, hits, worker)
  local receive, send = conn.receive, conn.send -- looked up once, not per call
  while true do
    local line = receive(conn, "*l")
    if not line then return end -- the client closed (or the read timed out)
    -- METHOD SP PATH SP HTTP/1.x, split with plain finds (a Lua pattern
    -- costs more here than the rest of the request)
    local sp1 = find(line, " ", 2, true)
    local sp2 = sp1 and find(line, " ", sp1 + 2, true)
    local version = sp2 and sub(line, sp2 + 1)
    if version ~= "HTTP/1.1" and version ~= "HTTP/1.0" then send(conn, BAD) return end
    local path = sub(line, sp1 + 1, sp2 - 1)
    local length, keep_alive = read_headers(conn, receive, version == "HTTP/1.1")
    if not length then send(conn, BAD) return end
    if length > 0 and not receive(conn, length) then return end
    local resp
    if path == "/" then
      resp = HELLO
    elseif path == "/hits" then
      resp = reply(string.format("hits %d (worker %d)\n", hits:incr("hits", 1, 0), worker))
    else
      resp = NOT_FOUND
    end
    if not send(conn, resp) or not keep_alive then return end
  end
end

local function main(worker)
  local port = tonumber(arg[1]) or 8080
  local hits = treadle.shared.dict("http_hits", 64 * 1024)
  local stopped_by, err = treadle.tcp.serve("127.0.0.1", port, function(conn)
    return handle(conn, hits, worker)
  end)
  if not stopped_by then error("listen on 127.0.0.1:" .. port .. ": " .. tostring(err), 0) end
  if worker == 0 then
    io.stdout:write("stopped (", stopped_by, ")\n")
    io.stdout:flush()
  end
end

if ... == MODULE then return main end -- a worker state requires this file

local flavor = arg[2] or "current_thread"
if flavor == "multi_thread" then
  -- every worker requires this file by name: from the folder it is in
  package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
  treadle.run(MODULE, {flavor = flavor, workers = tonumber(arg[3]) or 2})
else
  treadle.run(function() main(0) end)
end
