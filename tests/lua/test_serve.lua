-- treadle.tcp.server / treadle.tcp.serve / treadle.workers, the RESP
-- example (examples/lua/resp_server.lua), and the HTTP example
-- (examples/lua/http_server.lua) on both flavors: keep-alive,
-- pipelining, the shared hit counter across 2 workers, 400s, a clean stop
-- on SIGTERM; a handler that raises (its connection closes, the server goes
-- on), a port in use, max_connections, bad arguments.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local tcp = treadle.tcp
local T = H.suite("serve", ...)

local function connect(port)
  local s = tcp.socket()
  s:settimeout(10000)
  H.eq(s:connect("127.0.0.1", port), 1, "connect")
  return s
end

-- a line server: answers "got LINE" per line; "boom" raises in the handler
local function line_handler(conn, srv)
  while true do
    local l = conn:receive("*l")
    if not l then return end
    if l == "boom" then error("handler boom") end
    if l == "stop" then srv:close() return end
    conn:send("got " .. l .. "\n")
  end
end

T.case("server: a task per connection, the cosocket API, close and wait", function()
  local srv <close> = assert(tcp.server("127.0.0.1", 0, line_handler))
  local host, port = srv:addr()
  H.eq(host, "127.0.0.1"); H.eq(port, srv.port)
  H.has(tostring(srv), "treadle.server (127.0.0.1:" .. port .. ", open)")
  local a, b = connect(port), connect(port)
  a:send("one\ntwo\n")
  b:send("three\n")
  H.eq(a:receive("*l"), "got one")
  H.eq(a:receive("*l"), "got two")
  H.eq(b:receive("*l"), "got three")
  H.eq(srv.accepted, 2); H.eq(srv.active, 2)
  a:close()
  H.wait_until(function() return srv.active == 1 end, 10, "the closed connection's task ends")
  srv:close()
  H.eq(srv:wait(), true, "wait returns once closed")
  H.eq(srv.active, 0, "close aborts the live connections")
  H.eq(H.pack(b:receive("*l"))[2], "closed", "their conns are closed")
  H.has(tostring(srv), "closed")
  srv:close() -- twice: nothing
  local s = tcp.socket()
  H.eq(s:connect("127.0.0.1", port), nil, "nobody listens any more")
end)

T.case("a handler that raises: its connection closes, the server goes on", function()
  local srv <close> = assert(tcp.server("127.0.0.1", 0, line_handler))
  local c = connect(srv.port)
  c:send("boom\n")
  local r = H.pack(c:receive("*l"))
  H.eq(r[1], nil); H.eq(r[2], "closed", "the failed handler's conn is closed")
  local d = connect(srv.port)
  d:send("after\n")
  H.eq(d:receive("*l"), "got after", "the server still serves")
  H.eq(srv.accepted, 2)
  H.wait_until(function() return srv.active == 1 end, 10, "the failed one is not active")
end)

T.case("a handler stops its server (its second argument); serve returns 'closed'", function()
  local got = {}
  local srv = assert(tcp.server("127.0.0.1", 0, function(conn, s)
    got[#got + 1] = conn:receive("*l")
    s:close()
  end))
  local c = connect(srv.port)
  c:send("x\n")
  H.eq(srv:wait(), true)
  H.eq(got[1], "x", "the handler ran, then closed its server")
  c:close()
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  l:close()
  local t = treadle.spawn(tcp.serve, "127.0.0.1", port, line_handler, {signals = false, reuse_port = false})
  treadle.yield()
  local d = connect(port)
  d:send("stop\n")
  H.eq(H.within(10, t.join, t), "closed", "serve returns once its server is closed")
end)

T.case("serve returns on a signal, with its name", {flavors = {"current_thread"}}, function()
  local t = treadle.spawn(function()
    return tcp.serve("127.0.0.1", 0, line_handler, {signals = {"SIGUSR1"}})
  end)
  for _ = 1, 10 do treadle.yield() end -- the watcher reaches its wait
  os.execute("kill -USR1 " .. H.pid())
  H.eq(H.within(10, t.join, t), "SIGUSR1", "serve returns the signal's name")
end)

T.case("max_connections: the one beyond is closed at once", function()
  local hold = treadle.channel(1)
  local srv <close> = assert(tcp.server("127.0.0.1", 0, function(conn)
    conn:send("hi\n")
    hold:recv()
  end, {max_connections = 1}))
  local a = connect(srv.port)
  H.eq(a:receive("*l"), "hi")
  local b = connect(srv.port)
  H.eq(H.pack(b:receive("*l"))[2], "closed", "refused")
  H.eq(srv.refused, 1); H.eq(srv.accepted, 2); H.eq(srv.active, 1)
  hold:send(true)
end)

T.case("a port in use: nil, message, EADDRINUSE", function()
  local srv <close> = assert(tcp.server("127.0.0.1", 0, line_handler, {reuse_port = false}))
  local r = H.pack(tcp.server("127.0.0.1", srv.port, line_handler, {reuse_port = false}))
  H.eq(r[1], nil); H.eq(r[2], "address already in use"); H.eq(r[3], "EADDRINUSE")
  r = H.pack(tcp.serve("127.0.0.1", srv.port, line_handler, {reuse_port = false}))
  H.eq(r[3], "EADDRINUSE", "serve returns it too")
end)

T.case("bad arguments raise, naming the function", function(ctx)
  H.raises("bad argument #3 to 'treadle.tcp.server' (function expected, got nil)",
    tcp.server, "127.0.0.1", 0)
  H.raises("bad argument #3 to 'treadle.tcp.serve' (function expected, got string)",
    tcp.serve, "127.0.0.1", 0, "f")
  H.raises("bad argument #4 to 'treadle.tcp.server' (table expected, got number)",
    tcp.server, "127.0.0.1", 0, line_handler, 5)
  H.raises("max_connections must be a positive integer",
    tcp.server, "127.0.0.1", 0, line_handler, {max_connections = 0})
  H.raises("max_connections must be a positive integer",
    tcp.server, "127.0.0.1", 0, line_handler, {max_connections = 1.5})
  H.raises("bad argument #2 to 'treadle.tcp.server' (a port in 0..65535 expected, got x)",
    tcp.server, "127.0.0.1", "x", line_handler)
  H.raises("a port in 0..65535 expected", tcp.server, "127.0.0.1", 65536, line_handler)
  H.raises("backlog must be in 1..65535", tcp.server, "127.0.0.1", 0, line_handler, {backlog = 0})
  H.eq(treadle.workers(), ctx.workers, "treadle.workers")
end)

-- Worker 0 of a port-0 server hands its port to the other workers through
-- a named channel; here none takes it. Runtimes one after another in one
-- process used the same name, so the third found the channel full of
-- stale ports and waited forever (the harness's in-process mode, under
-- valgrind, hung so).
T.case("port-0 servers of worker 0 alone, runtime after runtime, never wait", {outside = true, flavors = {"multi_thread"}}, function()
  for i = 1, 4 do
    local port = treadle.run(H.module_name("mod_serve_port0"), {flavor = "multi_thread", workers = 2})
    H.ok(math.type(port) == "integer" and port > 0, "runtime " .. i .. " listened")
  end
end)

T.case("outside a task: raises", {outside = true, flavors = {"current_thread"}}, function()
  H.raises("needs a running treadle task", treadle.workers)
  H.raises("needs a running treadle task", tcp.server, "127.0.0.1", 0, line_handler)
end)

---------------------------------------------------------------------------
-- the HTTP example, as a child process

local HELLO = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"

-- reads one response: status line, headers, Content-Length body
local function response(s)
  local status, err = s:receive("*l")
  if not status then return nil, err end
  local headers, len = {status}, 0
  while true do
    local l = assert(s:receive("*l"))
    if l == "" then break end
    headers[#headers + 1] = l
    len = tonumber(l:match("^Content%-Length: (%d+)$")) or len
  end
  return status, assert(s:receive(len)), table.concat(headers, "\n")
end

local function start_http(flavor, workers)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 " .. H.q(dir)))
  local port = H.free_port()
  local cmd = string.format("%s %s %s %d %s %d", H.child_env(), H.q(H.lua()),
    H.q(H.root .. "examples/lua/http_server.lua"), port, flavor, workers)
  -- the shell waits for it and leaves its exit code
  -- rc: the shell creates the file before it writes the status, so a
  -- reader waits for a number, not for the file
  os.execute(string.format("(%s >%s/log 2>&1 & echo $! >%s/pid; wait $!; echo $? >%s/rc) >/dev/null 2>&1 &",
    cmd, H.q(dir), H.q(dir), H.q(dir)))
  local function read(name)
    local f = io.open(dir .. "/" .. name)
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
  end
  H.wait_until(function() return tonumber(read("pid") or "") end, 10, "the pid")
  local pid = tonumber(read("pid"))
  H.wait_until(function()
    local s = tcp.socket()
    s:settimeout(200)
    if s:connect("127.0.0.1", port) then s:close() return true end
    return tonumber(read("rc")) ~= nil
  end, 20, "the server listens")
  local function stop()
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    H.wait_until(function() return tonumber(read("rc")) ~= nil end, 20, "the server exits")
    local rc, log = tonumber(read("rc")), read("log")
    os.execute("rm -rf " .. H.q(dir))
    return rc, log
  end
  return port, stop, pid
end

-- As tests/lua/test_examples.lua: under TSan a SIGTERM to a process whose
-- workers are parked in futex() waits for a wake-up that never comes.
local TSAN_SKIP = H.sanitizer == "tsan" and "TSan delays signals to threads parked in futex()" or nil

for _, fl in ipairs({"current_thread", "multi_thread"}) do
  T.case("http_server.lua " .. fl .. ": keep-alive, pipelining, /hits, 400, SIGTERM",
         {flavors = {"current_thread"}, timeout = 60,
          skip = fl == "multi_thread" and TSAN_SKIP or nil}, function()
    local workers = fl == "multi_thread" and 2 or 1
    local port, stop = start_http(fl, workers)
    local ok, err = pcall(function()
      -- keep-alive: three requests one after the other on one connection
      local s = connect(port)
      for _ = 1, 3 do
        s:send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        local st, body, hdrs = response(s)
        H.eq(st .. "\r\n" .. hdrs:gsub("^[^\n]*\n", ""):gsub("\n", "\r\n") .. "\r\n\r\n" .. body, HELLO,
             "the peers' bytes")
      end
      -- pipelined: requests in one write, a body, answers in order
      s:send("GET / HTTP/1.1\r\n\r\nPOST /hits HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /nope HTTP/1.1\r\n\r\n")
      H.eq(select(2, response(s)), "Hello, World!")
      H.has(select(2, response(s)), "hits 1 (worker ")
      local st = response(s)
      H.eq(st, "HTTP/1.1 404 Not Found")
      s:close()
      -- the counter across workers: fresh connections spread over them
      local seen = {}
      for i = 2, 41 do
        local c = connect(port)
        c:send("GET /hits HTTP/1.1\r\nConnection: close\r\n\r\n")
        local _, body = response(c)
        local n, w = body:match("^hits (%d+) %(worker (%d+)%)")
        H.eq(tonumber(n), i, "one count for every worker")
        seen[w] = true
        H.eq(H.pack(c:receive("*l"))[2], "closed", "Connection: close")
        c:close()
      end
      if workers == 2 then H.ok(seen["0"] and seen["1"], "both workers answered /hits") end
      -- bad requests: 400 and the connection closes
      for _, bad in ipairs({"BLAH\r\n\r\n", "GET / HTTP/2.0\r\n\r\n",
                            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
                            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"}) do
        local c = connect(port)
        c:send(bad)
        H.eq(response(c), "HTTP/1.1 400 Bad Request", bad)
        H.eq(H.pack(c:receive("*l"))[2], "closed", "closed after the 400")
        c:close()
      end
      -- HTTP/1.0 closes unless asked to keep alive
      local c = connect(port)
      c:send("GET / HTTP/1.0\r\n\r\n")
      H.eq(select(2, response(c)), "Hello, World!")
      H.eq(H.pack(c:receive("*l"))[2], "closed", "1.0: closed")
    end)
    local rc, log = stop()
    if not ok then error(err, 0) end
    H.eq(rc, 0, "exit code after SIGTERM; log:\n" .. tostring(log))
    H.has(log, "stopped (SIGTERM)")
    H.ok(not log:find("failed"), "no handler failed: " .. log)
  end)
end

T.case("resp_server.lua: PING, SET, GET, DEL, pipelined, errors", {flavors = {"current_thread"}, timeout = 60}, function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 " .. H.q(dir)))
  local port = H.free_port()
  os.execute(string.format("(%s %s %s %d >%s/log 2>&1 & echo $! >%s/pid; wait $!; echo $? >%s/rc) >/dev/null 2>&1 &",
    H.child_env(), H.q(H.lua()), H.q(H.root .. "examples/lua/resp_server.lua"), port, H.q(dir), H.q(dir), H.q(dir)))
  local function read(name)
    local f = io.open(dir .. "/" .. name)
    if not f then return nil end
    local v = f:read("a")
    f:close()
    return v
  end
  H.wait_until(function() return tonumber(read("pid") or "") end, 10, "the pid")
  H.wait_until(function()
    local s = tcp.socket()
    s:settimeout(200)
    if s:connect("127.0.0.1", port) then s:close() return true end
  end, 20, "the server listens")
  local ok, err = pcall(function()
    local s = connect(port)
    s:send("PING\r\n")
    H.eq(s:receive("*l"), "+PONG", "inline")
    s:send("ping  hello \r\n")
    H.eq(s:receive("*l"), "$5", "inline with an argument, spaces around it")
    H.eq(s:receive("*l"), "hello")
    -- a pipeline in one write, answers in order
    s:send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" ..
           "*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n$1\r\nx\r\n*2\r\n$3\r\nget\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n")
    H.eq(s:receive("*l"), "+OK")
    H.eq(s:receive("*l"), "$5"); H.eq(s:receive("*l"), "hello")
    H.eq(s:receive("*l"), ":1", "one of two keys deleted")
    H.eq(s:receive("*l"), "$-1", "gone (a lower-case command)")
    H.eq(s:receive("*l"), "+PONG")
    -- a command split over two writes
    s:send("*2\r\n$3\r\nGE")
    treadle.sleep(0.01)
    s:send("T\r\n$1\r\nz\r\n")
    H.eq(s:receive("*l"), "$-1", "split command")
    s:send("*1\r\n$4\r\nNOPE\r\n")
    H.eq(s:receive("*l"), "-ERR unknown command 'NOPE'")
    s:send("*1\r\n#bad\r\n")
    H.eq(s:receive("*l"), "-ERR Protocol error")
    H.eq(H.pack(s:receive("*l"))[2], "closed", "closed after a protocol error")
    -- A bulk string whose declared length is not followed by CRLF: the
    -- commands before it are answered, then the error, then the close.
    for _, case in ipairs({
      {"*1\r\n$3\r\nPINGG\r\n", {}},
      {"*2\r\n$3\r\nGET\r\n$1\r\nkXY\r\n", {}},
      {"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nPING\r\n$1\r\nx\n\r", {"+PONG"}},
    }) do
      s = connect(port)
      s:send(case[1])
      for _, line in ipairs(case[2]) do H.eq(s:receive("*l"), line) end
      H.eq(s:receive("*l"), "-ERR Protocol error", "no CRLF after the payload: " .. case[1])
      H.eq(H.pack(s:receive("*l"))[2], "closed", "closed after it")
      s:close()
    end
  end)
  os.execute("kill -TERM " .. tonumber(read("pid")) .. " 2>/dev/null")
  H.wait_until(function() return tonumber(read("rc")) ~= nil end, 20, "the server exits")
  local rc, log = tonumber(read("rc")), read("log")
  os.execute("rm -rf " .. H.q(dir))
  if not ok then error(err, 0) end
  H.eq(rc, 0, "exit code; log: " .. tostring(log))
  H.has(log, "stopped (SIGTERM)")
end)

return T.main()
