-- Cosockets (OpenResty's ngx.socket.tcp API): treadle.tcp.socket's
-- connect, send, receive ("*l", "*a", counts), receiveany, receiveuntil,
-- settimeout(s), setkeepalive, getreusedtimes, setoption, close; the same
-- patterns on accepted conns; treadle.udp.socket; OpenResty's error
-- strings; bad input.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local tcp = treadle.tcp
local T = H.suite("cosock", ...)

-- A server that runs handler(conn) for each connection it accepts; returns
-- its port, the listener and a table counting accepted connections.
local function server(handler)
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local stats = {accepted = 0}
  treadle.spawn(function()
    while true do
      local c = l:accept()
      if not c then return end
      stats.accepted = stats.accepted + 1
      treadle.spawn(handler, c)
    end
  end)
  return port, l, stats
end

-- A server that sends `data` and closes.
local function sender(data)
  return server(function(c) c:send(data); c:close() end)
end

local function connect(port)
  local s = tcp.socket()
  H.eq(s:connect("127.0.0.1", port), 1, "connect returns 1")
  return s
end

T.case("receive *l, l, counts, *a; CRs dropped", function()
  local port, l = sender("one\r\ntw\ro\nthree\n12345abc\nrest of it")
  local s = connect(port)
  H.eq(s:receive(), "one", "default *l")
  H.eq(s:receive("*l"), "two", "CR inside a line dropped")
  H.eq(s:receive("l"), "three")
  H.eq(s:receive(5), "12345", "a count")
  H.eq(s:receive(0), "", "zero bytes")
  H.eq(s:receive("2"), "ab", "a numeric string (lua-resty-memcached passes one)")
  H.eq(s:receive(2.0), "c\n", "an integral float count")
  H.eq(s:receive("*a"), "rest of it", "*a until the peer closes")
  local r = H.pack(s:receive())
  H.eq(r[1], nil); H.eq(r[2], "closed", "after the end: closed")
  l:close()
end)

T.case("receive at the end: nil, closed, partial; *a returns what came", function()
  local port, l = sender("no newline")
  local s = connect(port)
  local r = H.pack(s:receive("*l"))
  H.eq(r[1], nil); H.eq(r[2], "closed"); H.eq(r[3], "no newline", "partial")
  local port2 = sender("abc")
  s = connect(port2)
  r = H.pack(s:receive(10))
  H.eq(r[2], "closed"); H.eq(r[3], "abc", "partial of a count")
  local port3 = sender("")
  s = connect(port3)
  H.eq(s:receive("a"), "", "*a of an empty stream is an empty string")
  l:close()
end)

T.case("receive a 1 MiB count across many reads", function()
  local big = string.rep("0123456789abcdef", 65536)
  local port, l = sender(big)
  local s = connect(port)
  local got = s:receive(#big)
  H.ok(got == big, "1 MiB intact")
  l:close()
end)

T.case("receiveany", function()
  local port, l = server(function(c)
    c:send("hello")
    treadle.sleep(0.02)
    c:send("world")
    c:close()
  end)
  local s = connect(port)
  local a = s:receiveany(3)
  H.eq(a, "hel", "at most max")
  H.eq(s:receiveany(100), "lo", "what is buffered, without waiting")
  H.eq(s:receiveany(100), "world", "waits when nothing is there")
  local r = H.pack(s:receiveany(10))
  H.eq(r[2], "closed")
  H.bad_arg(s.receiveany, s, 0)
  H.bad_arg(s.receiveany, s, "x")
  l:close()
end)

T.case("receiveuntil: whole parts, inclusive, sizes, the end", function()
  local port, l = sender("a--b--xyz----c-")
  local s = connect(port)
  local reader = s:receiveuntil("--")
  H.eq(reader(), "a"); H.eq(reader(), "b"); H.eq(reader(), "xyz")
  H.eq(reader(), "", "two delimiters in a row: an empty part")
  local r = H.pack(reader())
  H.eq(r[1], nil); H.eq(r[2], "closed"); H.eq(r[3], "c-", "partial")
  -- inclusive
  port = sender("line1\r\nline2\r\n")
  s = connect(port)
  reader = s:receiveuntil("\r\n", {inclusive = true})
  H.eq(reader(), "line1\r\n"); H.eq(reader(), "line2\r\n")
  -- with a size: pieces, then nil at the delimiter, then the next part
  port = sender("0123456789--abc--")
  s = connect(port)
  reader = s:receiveuntil("--")
  local pieces = {}
  while true do
    local d, err = reader(4)
    if not d then H.eq(err, nil, "nil without an error at the delimiter"); break end
    H.ok(#d <= 4, "a piece of at most 4 bytes: " .. #d)
    pieces[#pieces + 1] = d
  end
  H.eq(table.concat(pieces), "0123456789")
  H.eq(reader(), "abc", "the next part")
  l:close()
end)

T.case("receiveuntil: a delimiter split across reads, and mixed with receive", function()
  local port, l = server(function(c)
    for _, piece in ipairs({"head", "er\r", "\n\r", "\nbody", "--X", "Y--", "Z"}) do
      c:send(piece)
      treadle.sleep(0.005)
    end
    c:close()
  end)
  local s = connect(port)
  local headers = s:receiveuntil("\r\n\r\n")
  H.eq(headers(), "header", "the delimiter came in three pieces")
  local parts = s:receiveuntil("--XY--")
  H.eq(s:receive(2), "bo", "receive between iterator calls")
  H.eq(parts(), "dy")
  H.eq(s:receive("*a"), "Z")
  l:close()
end)

T.case("accepted conns have the patterns too", function()
  local lines = {}
  local port, l = server(function(c)
    while true do
      local line, err = c:receive()
      if not line then lines.err = err; break end
      lines[#lines + 1] = line
      c:send({"echo: ", line, "\n"})
    end
  end)
  local s = connect(port)
  for i = 1, 3 do
    H.eq(s:send("line " .. i .. "\r\n"), #("line " .. i .. "\r\n"), "send returns the bytes")
    H.eq(s:receive(), "echo: line " .. i)
  end
  s:close()
  H.wait_until(function() return lines.err end, 5, "the server's receive to end")
  H.eq(lines.err, "closed")
  H.eq(#lines, 3)
  l:close()
end)

T.case("send: strings, numbers, booleans, nested arrays", function()
  local port, l = server(function(c)
    local all = c:receive("*a")
    c:close()
    lines_got = all  -- luacheck: ignore
  end)
  local s = connect(port)
  H.eq(s:send({"a", 1, {"b", {2.5, true}}, false}), #"a1b2.5truefalse")
  H.eq(s:send(42), 2)
  H.eq(s:send({}), 0, "an empty array sends nothing")
  H.raises("bad data type", s.send, s, {"a", {}, print})
  H.raises("bad data type", s.send, s, nil)
  local cyc = {}; cyc[1] = cyc
  H.raises("nested too deep", s.send, s, cyc)
  s:close()
  H.wait_until(function() return lines_got end, 5, "the server's *a")
  H.eq(lines_got, "a1b2.5truefalse42")
  l:close()
end)

T.case("read timeout: nil, timeout, partial; the connection stays usable", function()
  local port, l = server(function(c)
    c:send("part")
    c:receive()          -- waits for the client's go
    c:send("ial\n")
    c:receive()
  end)
  local s = connect(port)
  s:settimeout(50)
  local r = H.pack(s:receive())
  H.eq(r[1], nil); H.eq(r[2], "timeout"); H.eq(r[3], "part", "partial on timeout")
  H.eq(s:send("go\n"), 3, "still open after a timeout")
  H.eq(s:receive(), "ial")
  s:settimeouts(1000, 1000, 30)
  r = H.pack(s:receiveany(10))
  H.eq(r[2], "timeout", "settimeouts' read timeout")
  local reader = s:receiveuntil("END")
  r = H.pack(reader())
  H.eq(r[2], "timeout", "receiveuntil's timeout")
  s:close()
  l:close()
end)

T.case("connect errors: refused, timeout, unknown host; connect again", function()
  local s = tcp.socket()
  local r = H.pack(s:connect("127.0.0.1", H.free_port()))
  H.eq(r[1], nil); H.eq(r[2], "connection refused")
  -- a listener that never accepts, with a backlog of 1: once its queue is
  -- full the kernel drops new SYNs, and the connect timeout fires
  local full = assert(tcp.bind("127.0.0.1", 0, {backlog = 1}))
  local _, fport = full:addr()
  local held, timed_out = {}, false
  for _ = 1, 10 do
    local x = tcp.socket()
    x:settimeouts(30, 1000, 1000)
    local ok, err = x:connect("127.0.0.1", fport)
    held[#held + 1] = x
    if not ok then
      H.eq(err, "timeout", "the connect timeout")
      timed_out = true
      break
    end
  end
  H.ok(timed_out, "a connect to a full backlog timed out")
  for _, x in ipairs(held) do x:close() end
  full:close()
  r = H.pack(s:connect("no-such-host.invalid", 80))
  H.eq(r[2], "no-such-host.invalid could not be resolved")
  local port, l = sender("hi\n")
  H.eq(s:connect("127.0.0.1", port), 1, "the same object connects after failures")
  H.eq(s:receive(), "hi")
  H.eq(s:connect("localhost", port), 1, "connect again closes the first")
  H.eq(s:receive(), "hi")
  l:close()
end)

T.case("closed sockets answer closed", function()
  local s = tcp.socket()
  for _, f in ipairs({"receive", "send", "getreusedtimes", "close", "setkeepalive"}) do
    local r = H.pack(s[f](s, f == "send" and "x" or nil))
    H.eq(r[1], nil, f .. " on a new socket")
    H.eq(r[2], "closed", f)
  end
  local port, l = sender("x")
  s = connect(port)
  H.eq(s:close(), 1)
  H.eq(select(2, s:close()), "closed", "a second close")
  H.eq(select(2, s:receive()), "closed")
  H.eq(select(2, s:send("x")), "closed")
  H.eq(select(2, s:receiveany(1)), "closed")
  H.eq(select(2, s:receiveuntil("x")()), "closed")
  H.eq(select(2, s:setoption("keepalive", true)), "closed")
  l:close()
end)

T.case("close wakes a task waiting in receive with closed", function()
  local port, l = server(function(c) c:receive("*a") end)
  local s = connect(port)
  local w = treadle.spawn(function() return H.pack(s:receive()) end)
  H.settle()
  H.eq(w:done(), false)
  H.raises("socket busy reading", s.receive, s)
  s:close()
  local r = w:join()
  H.eq(r[1], nil); H.eq(r[2], "closed")
  l:close()
end)

T.case("keepalive pool: reuse, pool size, idle timeout, a peer that closed", function()
  local port, l, stats = server(function(c)
    while true do
      local line = c:receive()
      if not line then return end
      if line == "bye" then c:close(); return end
      c:send(line .. "\n")
    end
  end)
  local s = connect(port)
  H.eq(s:getreusedtimes(), 0, "a new connection")
  s:send("a\n"); H.eq(s:receive(), "a")
  H.eq(s:setkeepalive(10000, 2), 1)
  H.eq(select(2, s:receive()), "closed", "the object is closed once pooled")
  s = connect(port)
  H.eq(s:getreusedtimes(), 1, "from the pool")
  s:send("b\n"); H.eq(s:receive(), "b")
  H.eq(s:setkeepalive(), 1)
  s = connect(port)
  H.eq(s:getreusedtimes(), 2, "reused twice")
  -- the server counts a connection once its accept task ran
  local function accepted(n, what)
    H.wait_until(function() return stats.accepted >= n end, 5, what)
    H.settle()
    H.eq(stats.accepted, n, what)
  end
  accepted(1, "one connection so far")
  -- a pool of 2 keeps 2: three sockets in, the oldest is closed
  local a, b = connect(port), connect(port)
  for _, x in ipairs({s, a, b}) do H.eq(x:setkeepalive(10000, 2), 1) end
  accepted(3, "two new ones")
  local x, y, z = connect(port), connect(port), connect(port)
  H.eq(x:getreusedtimes() > 0 and y:getreusedtimes() > 0, true, "two from the pool")
  H.eq(z:getreusedtimes(), 0, "the third is new")
  x:close(); y:close(); z:close()
  -- an idle timeout
  s = connect(port)
  H.eq(s:setkeepalive(10, 5), 1)
  treadle.sleep(0.05)
  s = connect(port)
  H.eq(s:getreusedtimes(), 0, "idle past its timeout: closed, not reused")
  -- the peer closes a pooled connection: not handed out again
  s:send("bye\n")
  treadle.sleep(0.001)
  H.eq(s:setkeepalive(10000, 5), 1)
  accepted(6, "connections so far")
  treadle.sleep(0.05)
  s = connect(port)
  H.eq(s:getreusedtimes(), 0, "a connection its peer closed is not reused")
  accepted(7, "a new connection")
  s:close()
  -- a conn from treadle.tcp.connect pools under host:port too
  local c = assert(tcp.connect("127.0.0.1", port))
  H.eq(c:setkeepalive(), 1)
  s = connect(port)
  H.eq(s:getreusedtimes(), 1, "treadle.tcp.connect's conn came back from the pool")
  s:close()
  -- a pool name of one's own
  s = tcp.socket()
  H.eq(s:connect("127.0.0.1", port, {pool = "mine"}), 1)
  H.eq(s:setkeepalive(), 1)
  s = tcp.socket()
  s:connect("127.0.0.1", port)
  H.eq(s:getreusedtimes(), 0, "another pool")
  s:close()
  s = tcp.socket()
  s:connect("127.0.0.1", port, {pool = "mine"})
  H.eq(s:getreusedtimes(), 1, "the named pool")
  s:close()
  l:close()
end)

T.case("the pool closes an idle connection once its idle time is up", function()
  local ended = {}
  local port, l = server(function(c)
    local _, err = c:receive()
    ended[#ended + 1] = err
  end)
  local s = connect(port)
  H.eq(s:setkeepalive(20, 5), 1)
  local s2 = connect(port)
  H.eq(s2:getreusedtimes(), 1)
  H.eq(s2:setkeepalive(30000, 5), 1)       -- a later deadline: waits on
  local s3 = connect(port)
  H.eq(s3:getreusedtimes(), 2)
  H.eq(s3:setkeepalive(10, 5), 1)          -- an earlier one: the sweeper moves
  -- nobody touches the pool: the sweeper closes it, the server sees it
  H.wait_until(function() return #ended == 1 end, 5, "the server to see the close")
  H.eq(ended[1], "closed")
  s = connect(port)
  H.eq(s:getreusedtimes(), 0, "nothing left in the pool")
  s:close()
  l:close()
end)

T.case("setkeepalive refuses: bad pool size, unread data, busy, accepted conns", function()
  local accepted = {}
  local port, l = server(function(c)
    accepted[#accepted + 1] = c
    c:send("unasked\n")
    c:receive("*a")
  end)
  local s = connect(port)
  H.raises("pool_size", s.setkeepalive, s, 1000, 0)
  H.raises("pool_size", s.setkeepalive, s, 1000, -3)
  H.raises("bad argument", s.setkeepalive, s, -1)
  H.raises("bad argument", s.setkeepalive, s, "x")
  H.eq(s:receive(3), "una")
  H.eq(select(2, s:setkeepalive()), "unread data in buffer")
  H.eq(s:receive(), "sked")
  local w = treadle.spawn(function() return s:receive() end)
  H.settle()
  H.eq(select(2, s:setkeepalive()), "socket busy")
  s:close()
  w:join()
  H.wait_until(function() return accepted[1] end, 5, "accepted")
  H.eq(select(2, accepted[1]:setkeepalive()), "no pool for an accepted connection")
  l:close()
end)

T.case("bad arguments raise clear errors", function()
  local s = tcp.socket()
  H.bad_arg(s.connect, s)
  H.bad_arg(s.connect, s, "127.0.0.1")
  H.bad_arg(s.connect, s, "127.0.0.1", 0)
  H.bad_arg(s.connect, s, "127.0.0.1", 70000)
  H.bad_arg(s.connect, s, "127.0.0.1", 80, "opts")
  H.bad_arg(s.connect, s, "127.0.0.1", 80, {pool_size = 0})
  H.bad_arg(s.connect, s, "unix:")
  H.bad_arg(s.settimeout, s, -1)
  H.bad_arg(s.settimeout, s, 0 / 0)
  H.bad_arg(s.settimeout, s, 2 ^ 31)
  H.raises("expecting 3 timeouts, got 2", s.settimeouts, s, 1, 2)
  -- Not a number: 0, the default, as OpenResty's lua_tonumber reads it
  -- (lua-resty-redis-connector passes a table).
  H.eq(select("#", s:settimeout("x")), 0)
  H.eq(select("#", s:settimeout({})), 0)
  H.eq(select("#", s:settimeouts(nil, "500", {})), 0)
  H.bad_arg(s.receiveuntil, s, "")
  H.bad_arg(s.receiveuntil, s, {})
  H.bad_arg(s.receiveuntil, s, "x", {inclusive = "yes"})
  H.bad_arg(s.setoption, s, "nosuch", 1)
  H.bad_arg(s.setoption, s, "sndbuf", "big")
  local port, l = sender("x")
  s = connect(port)
  H.raises("bad pattern", s.receive, s, "*x")
  H.raises("bad pattern", s.receive, s, "line")
  H.raises("bad pattern", s.receive, s, -1)
  H.raises("bad pattern", s.receive, s, {})
  H.raises("bad size", s:receiveuntil("y"), 0)
  H.raises("bad argument", tcp.socket().connect, 1, "x", 1)
  s:close()
  l:close()
end)

T.case("setoption", function()
  local port, l = sender("x")
  local s = connect(port)
  for _, o in ipairs({{"keepalive", true}, {"reuseaddr", 1}, {"tcp-nodelay", false},
                      {"sndbuf", 65536}, {"rcvbuf", 65536}}) do
    H.eq(s:setoption(o[1], o[2]), true, o[1])
  end
  H.eq(s:nodelay(), false, "tcp-nodelay false reached the socket")
  s:close()
  l:close()
end)

T.case("unix: a path nobody listens on", function()
  local path = os.tmpname()
  os.remove(path)
  local s = tcp.socket()
  local r = H.pack(s:connect("unix:" .. path))
  H.eq(r[1], nil, "no socket there")
  H.eq(r[2], "no such file or directory")
end)

T.case("outside a task: raises", {outside = true, flavors = {"current_thread"}}, function()
  local s = tcp.socket()
  H.raises("needs a running treadle task", s.connect, s, "127.0.0.1", 80)
  H.raises("needs a running treadle task", s.setkeepalive, s)
end)

T.case("udp: bind, setpeername, send, receive, timeout, close", function()
  local a, b = treadle.udp.socket(), treadle.udp.socket()
  H.eq(select(2, a:send("x")), "closed", "send before setpeername")
  H.eq(select(2, a:receive()), "closed")
  H.eq(a:bind("127.0.0.1", 0), 1)
  local _, pa = a:getsockname()
  H.ok(pa > 0, "a port")
  H.eq(b:setpeername("127.0.0.1", pa), 1)
  H.eq(b:send({"pi", "ng"}), 1)
  local _, pb = b:getsockname()
  local data, host, port = a:receivefrom()
  H.eq(data, "ping"); H.eq(host, "127.0.0.1"); H.eq(port, pb, "receivefrom: the sender")
  H.eq(b:send("ping"), 1)
  H.eq(a:setpeername("127.0.0.1", pb), 1, "a keeps its bound port")
  H.eq(a:receive(), "ping")
  H.eq(a:send("pong"), 1)
  H.eq(b:receive(), "pong")
  -- a waiting receive, then the datagram
  local w = treadle.spawn(function() return b:receive() end)
  H.settle()
  H.raises("socket busy", b.receive, b)
  H.raises("socket busy", b.setpeername, b, "127.0.0.1", pa)
  H.eq(b:send("to a while b waits"), 1, "a send while a receive waits")
  H.eq(a:receive(), "to a while b waits")
  a:send("later")
  H.eq(w:join(), "later")
  b:settimeout(20)
  local r = H.pack(b:receive())
  H.eq(r[1], nil); H.eq(r[2], "timeout")
  a:send(string.rep("x", 100))
  r = H.pack(b:receive(10))
  H.eq(r[1], nil, "a datagram longer than size")
  H.ok(type(r[2]) == "string", "an error: " .. tostring(r[2]))
  -- close wakes a waiting receive
  b:settimeout(0)
  w = treadle.spawn(function() return H.pack(b:receive()) end)
  H.settle()
  H.eq(b:close(), 1)
  r = w:join()
  H.eq(r[2], "closed")
  H.eq(select(2, b:close()), "closed")
  a:close()
  H.bad_arg(b.setpeername, b, "127.0.0.1", 0)
  H.bad_arg(b.receive, b, 0)
  H.bad_arg(b.receive, b, 70000)
  H.bad_arg(b.settimeout, b, -5)
  H.bad_arg(b.send, b, print)
  H.bad_arg(b.bind, b, "127.0.0.1", -1)
  H.eq(select(2, b:setpeername("not an address", 9)) ~= nil, true, "a bad address: an error")
end)

return T.main()
