-- treadle.tcp: bind, accept, addr, connect, read, write, shutdown, close,
-- peer; I/O failures as nil, message, errno; closing a connection another
-- task waits on; reuse_port across workers; bad arguments.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local tcp = treadle.tcp
local T = H.suite("tcp", ...)

-- a connected pair: client, server-side conn, listener
local function pair()
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local acc = treadle.spawn(function() return l:accept() end)
  local c = assert(tcp.connect("127.0.0.1", port))
  local s, peer = acc:join()
  H.ok(s, "accept returned a conn")
  return c, s, l, peer
end

-- pair(), with a task waiting to read the client side
local function pair_with_reader()
  local c, s, l = pair()
  local reader = treadle.spawn(function() return c:read() end)
  H.settle()
  H.eq(reader:done(), false, "the reader waits")
  return c, s, l, reader
end

T.case("bind, addr, connect, accept, peer", function()
  local l = assert(tcp.bind("127.0.0.1", 0))
  local host, port = l:addr()
  H.eq(host, "127.0.0.1", "listener host")
  H.eq(math.type(port), "integer", "port is an integer")
  H.ok(port > 0 and port < 65536, "a real port: " .. port)
  local acc = treadle.spawn(function() return l:accept() end)
  local c = assert(tcp.connect("127.0.0.1", port))
  local s, peer = acc:join()
  H.ok(s, "accepted")
  local ch, cp = c:addr()
  H.eq(ch, "127.0.0.1")
  H.eq(peer, "127.0.0.1:" .. cp, "accept's peer is the client's address")
  local ph, pp = c:peer()
  H.eq(ph, "127.0.0.1"); H.eq(pp, port, "client's peer is the listener's port")
  local sh, sp = s:addr()
  H.eq(sh, "127.0.0.1"); H.eq(sp, port, "server side's addr")
  local rh, rp = s:peer()
  H.eq(rh, "127.0.0.1"); H.eq(rp, cp, "server side's peer")
  c:close(); s:close(); l:close()
end)

T.case("echo round trips, small and 1 MiB", function()
  local l, port = H.echo_server()
  local c = assert(tcp.connect("127.0.0.1", port))
  for i = 1, 100 do
    local msg = "message " .. i
    H.eq(c:write(msg), true, "write returns true")
    H.eq(H.read_n(c, #msg), msg)
  end
  local big = string.rep("0123456789abcdef", 65536)      -- 1 MiB
  local w = treadle.spawn(function() return c:write(big) end)
  local back = H.read_n(c, #big)
  H.eq(w:join(), true, "the 1 MiB write")
  H.ok(back == big, "1 MiB echoed intact")
  -- binary data with zero bytes
  local bin = "\0\1\2\255\0" .. string.rep("\0", 1000)
  c:write(bin)
  H.ok(H.read_n(c, #bin) == bin, "zero bytes survive")
  c:close(); l:close()
end)

T.case("read(n) returns at most n bytes; default up to 65536", function()
  local c, s, l = pair()
  s:write(string.rep("x", 100))
  local got = c:read(10)
  H.ok(#got >= 1 and #got <= 10, "read(10) gave " .. #got .. " bytes")
  H.read_n(c, 100 - #got)
  s:write(string.rep("y", 200000))
  local total = 0
  while total < 200000 do
    local x = c:read()
    H.ok(x and #x <= 65536, "default read size: " .. (x and #x or "nil"))
    total = total + #x
  end
  H.eq(total, 200000)
  c:close(); s:close(); l:close()
end)

T.case("end of stream is a plain nil", function()
  local c, s, l = pair()
  s:write("last words")
  s:close()
  H.eq(H.read_all(c), "last words")
  local r = H.pack(c:read())
  H.eq(r[1], nil, "read at end of stream")
  H.eq(r[2], nil, "no message at end of stream")
  c:close(); l:close()
end)

T.case("shutdown closes the write side only", function()
  local c, s, l = pair()
  c:write("request")
  H.eq(select("#", c:shutdown()) >= 0, true)
  -- the server reads to end of stream, then answers on the still-open side
  H.eq(H.read_all(s), "request")
  s:write("response")
  s:close()
  H.eq(H.read_all(c), "response")
  c:close(); l:close()
end)

T.case("connection refused", function()
  local port = H.free_port()
  local c, err, errno = tcp.connect("127.0.0.1", port)
  H.eq(c, nil)
  H.eq(err, "connection refused")
  H.eq(errno, "ECONNREFUSED")
end)

T.case("address in use", function()
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local l2, err, errno = tcp.bind("127.0.0.1", port)
  H.eq(l2, nil)
  H.eq(type(err), "string")
  H.eq(errno, "EADDRINUSE", "errno (" .. tostring(err) .. ")")
  l:close()
end)

T.case("an address that is not ours", function()
  local l, err, errno = tcp.bind("192.0.2.1", 0)       -- TEST-NET-1
  H.eq(l, nil)
  H.eq(errno, "EADDRNOTAVAIL", "errno (" .. tostring(err) .. ")")
end)

T.case("bind options: backlog, reuse_port", function()
  local l = assert(tcp.bind("127.0.0.1", 0, {backlog = 16}))
  l:close()
  local a = assert(tcp.bind("127.0.0.1", 0, {reuse_port = true}))
  local _, port = a:addr()
  local b, err = tcp.bind("127.0.0.1", port, {reuse_port = true, backlog = 4096})
  H.ok(b, "a second reuse_port listener on the same port: " .. tostring(err))
  local _, pb = b:addr()
  H.eq(pb, port)
  a:close(); b:close()
  local l2 = assert(tcp.bind("127.0.0.1", 0, {}))
  l2:close()
end)

T.case("host names and odd hosts: a result or an error, no crash", function()
  for _, host in ipairs({"256.1.1.1", "not an address", "", "::1", "localhost"}) do
    local ok, l, err, errno = pcall(tcp.bind, host, 0)
    if ok and l then l:close() end
    H.note(string.format("bind(%q): %s", host, ok and (l and "ok" or (tostring(err) .. " " .. tostring(errno))) or ("raised " .. tostring(l):sub(1, 50))))
  end
  local ok, c, err = pcall(tcp.connect, "256.1.1.1", 80)
  H.ok(not ok or c == nil, "connect to 256.1.1.1 cannot succeed")
end)

T.case("closing a conn another task waits on in read (issue 13: the message says which side)", function()
  local c, s, l, reader = pair_with_reader()
  c:close()
  local r = H.pack(H.within(2, reader.join, reader))
  H.eq(r[1], nil)
  H.eq(r[2], "closed on this side (by a close call)")
  H.eq(r[3], "ECLOSED")
  s:close(); l:close()
end)

T.case("closing a conn another task waits on in write", function()
  local c, s, l = pair()
  -- fill the socket buffers: nobody reads s
  local big = string.rep("z", 16 * 1024 * 1024)
  local writer = treadle.spawn(function() return c:write(big) end)
  H.settle()
  H.eq(writer:done(), false, "the writer waits for buffer space")
  c:close()
  local r = H.pack(H.within(2, writer.join, writer))
  H.eq(r[1], nil, "write on a conn closed under it")
  H.note("write after close: " .. tostring(r[2]) .. " " .. tostring(r[3]))
  s:close(); l:close()
end)

T.case("closing a listener another task waits on in accept", function()
  local l = assert(tcp.bind("127.0.0.1", 0))
  local acc = treadle.spawn(function() return l:accept() end)
  H.settle()
  l:close()
  local ok, a, b, e = pcall(H.within, 2, acc.join, acc)
  H.ok(ok or not tostring(a):find("did not finish"), "accept woke when its listener closed: " .. tostring(a))
  if ok then H.eq(a, nil, "accept on a closed listener") end
  H.note("accept after close: " .. tostring(ok) .. " " .. tostring(a) .. " " .. tostring(b) .. " " .. tostring(e))
end)

T.case("use after close: an error result or a raise, never a crash", function()
  local c, s, l = pair()
  c:close()
  c:close()            -- twice is harmless
  for _, op in ipairs({function() return c:read() end, function() return c:write("x") end,
                       function() return c:shutdown() end, function() return c:peer() end,
                       function() return c:addr() end}) do
    local r = H.pack(pcall(op))
    H.ok(not r[1] or r[2] == nil or type(r[2]) == "string", "closed conn op: " .. H.repr(r))
  end
  local r = H.pack(c:read())
  if r[1] == nil then H.eq(r[3], "ECLOSED", "read on a closed conn") end
  l:close(); l:close()
  local ok, x = pcall(l.accept, l)
  H.ok(not ok or x == nil, "accept on a closed listener")
  s:close()
end)

T.case("abort a task waiting in read; the conn still works", function()
  local c, s, l, reader = pair_with_reader()
  reader:abort()
  H.raises("cancelled", reader.join, reader)
  s:write("after the abort")
  H.eq(H.read_n(c, 15), "after the abort", "no data lost to the aborted read")
  c:close(); s:close(); l:close()
end)

T.case("issue 13: right after abort() of the reader or acceptor, a new one goes ahead", function()
  local c, s, l, reader = pair_with_reader()
  reader:abort()
  -- the aborted task has not run since: its read must not hold the conn
  s:write("for the new reader")
  H.eq(H.read_n(c, 18), "for the new reader")
  H.raises("cancelled", reader.join, reader)
  local acc = treadle.spawn(function() return l:accept() end)
  H.settle()
  acc:abort()
  local _, port = l:addr()
  local client = treadle.spawn(tcp.connect, "127.0.0.1", port)
  local s2 = H.within(5, l.accept, l)
  H.ok(s2, "accepted right after the abort")
  H.raises("cancelled", acc.join, acc)
  client:join():close(); s2:close()
  c:close(); s:close(); l:close()
end)

T.case("issue 13: reading after close() while another task reads answers ECLOSED", function()
  local c, s, l, reader = pair_with_reader()
  c:close()
  -- the first reader has not run since the close: closed says so before busy
  local r = H.pack(c:read())
  H.eq(r[1], nil)
  H.eq(r[2], "closed on this side (by a close call)")
  H.eq(r[3], "ECLOSED")
  H.eq(H.within(2, reader.join, reader), nil, "the first reader ends too")
  s:close(); l:close()
end)

T.case("issue 13: writes of several tasks queue: each goes out whole, in call order", {timeout = 60}, function()
  local c, s, l = pair()
  local size = H.n(4 * 1024 * 1024, 256 * 1024) -- more than the socket buffers take
  local order, writers = {}, {}
  for i = 1, 4 do
    writers[i] = treadle.spawn(function()
      local letter = string.char(string.byte("a") + i - 1)
      order[#order + 1] = letter -- the call, with no wait before it
      return c:write(string.rep(letter, size))
    end)
  end
  local got = H.read_n(s, 4 * size)
  for i = 1, 4 do H.eq(writers[i]:join(), true, "write " .. i) end
  H.eq(#order, 4)
  for k = 1, 4 do
    local part = got:sub((k - 1) * size + 1, k * size)
    H.ok(part == string.rep(order[k], size),
         string.format("bytes %d..%d are write %d's (%s), whole: %s", (k - 1) * size + 1,
                       k * size, k, order[k], H.repr(part:sub(1, 8))))
  end
  c:close(); s:close(); l:close()
end)

T.case("abort a task waiting in accept; the listener still works", function()
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local acc = treadle.spawn(function() return l:accept() end)
  H.settle()
  acc:abort()
  H.raises("cancelled", acc.join, acc)
  local acc2 = treadle.spawn(function() return l:accept() end)
  local c = assert(tcp.connect("127.0.0.1", port))
  local s = H.within(2, acc2.join, acc2)
  H.ok(s, "accepted after the abort")
  c:close(); s:close(); l:close()
end)

T.case("writing to a conn the peer reset", function()
  local c, s, l = pair()
  s:close()
  local ok, err, errno
  for _ = 1, 200 do
    ok, err, errno = c:write(string.rep("x", 65536))
    if not ok then break end
    treadle.sleep(0.001)
  end
  H.eq(ok, nil, "a write fails at last")
  H.eq(type(err), "string")
  H.ok(type(errno) == "string" and errno:match("^E"), "errno name: " .. tostring(errno))
  H.note("write to a reset conn: " .. err .. " " .. errno)
  c:close(); l:close()
end)

T.case("<close> and __gc close connections", function()
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  do
    local c <close> = assert(tcp.connect("127.0.0.1", port))
    c:write("bye")
  end
  local s1 = assert(l:accept())
  H.eq(H.within(2, H.read_all, s1), "bye", "the <close> conn was closed")
  s1:close()
  -- a conn nobody holds is closed by the collector
  local function drop() local c = assert(tcp.connect("127.0.0.1", port)); c:write("gc") end
  drop()
  collectgarbage(); collectgarbage()
  local s2 = assert(l:accept())
  H.eq(H.within(2, H.read_all, s2), "gc", "the collected conn was closed")
  s2:close()
  l:close()
end)

T.case("200 concurrent connections", {timeout = 60}, function()
  local l, port = H.echo_server()
  local ts = {}
  for i = 1, 200 do
    ts[i] = treadle.spawn(function()
      local c = assert(tcp.connect("127.0.0.1", port))
      for k = 1, 5 do
        local msg = string.format("%d/%d %s", i, k, string.rep("p", i))
        c:write(msg)
        H.eq(H.read_n(c, #msg), msg)
      end
      c:close()
      return i
    end)
  end
  for i = 1, 200 do H.eq(ts[i]:join(), i) end
  l:close()
end)

T.case("reuse_port: every worker binds the port and serves", {flavors = {"multi_thread"}, on = "all", workers = 2}, function(ctx)
  local portch = treadle.channel(1, "rp:port")
  local boundch = treadle.channel(1, "rp:bound")
  local stopch = treadle.channel(1, "rp:stop")
  local l, port
  if ctx.worker == 0 then
    l = assert(tcp.bind("127.0.0.1", 0, {reuse_port = true}))
    local _
    _, port = l:addr()
    portch:send(port)
  else
    port = portch:recv()
    l = assert(tcp.bind("127.0.0.1", port, {reuse_port = true}))
  end
  local loop = treadle.spawn(function()
    while true do
      local c = l:accept()
      if not c then return end
      treadle.spawn(function()
        local s = c:read()
        if s then c:write(s .. " from worker " .. treadle.worker()) end
        c:close()
      end)
    end
  end)
  if ctx.worker == 0 then
    H.eq(H.within(5, boundch.recv, boundch), "bound")
    local by = {[0] = 0, [1] = 0}
    for _ = 1, 64 do
      local c = assert(tcp.connect("127.0.0.1", port))
      c:write("hello")
      local r = H.read_all(c)
      local w = tonumber(r:match("from worker (%d+)$"))
      H.ok(w, "answer: " .. r)
      by[w] = by[w] + 1
      c:close()
    end
    H.note(string.format("64 connections: worker 0 served %d, worker 1 %d", by[0], by[1]))
    H.ok(by[0] > 0 and by[1] > 0, "both workers served (" .. by[0] .. "/" .. by[1] .. ")")
    stopch:send("stop")
  else
    boundch:send("bound")
    H.eq(H.within(20, stopch.recv, stopch), "stop")
  end
  loop:abort()
  l:close()
end)

T.case("a connection between two workers", {flavors = {"multi_thread"}, on = "all", workers = 2}, function(ctx)
  local portch = treadle.channel(1, "x:port")
  if ctx.worker == 0 then
    local l = assert(tcp.bind("127.0.0.1", 0))
    local _, port = l:addr()
    portch:send(port)
    local s = assert(l:accept())
    for _ = 1, 100 do
      local m = s:read()
      if not m then break end
      s:write(m)
    end
    s:close(); l:close()
  else
    local port = portch:recv()
    local c = assert(tcp.connect("127.0.0.1", port))
    for i = 1, 100 do
      c:write("ping" .. i)
      H.eq(H.read_n(c, #("ping" .. i)), "ping" .. i)
    end
    c:close()
  end
end)

T.case("issue 13: a conn of one runtime used from another runtime's task answers EFOREIGN at once",
       {outside = true, flavors = {"current_thread"}}, function()
  local rt1 <close> = treadle.runtime()
  local rt2 <close> = treadle.runtime()
  local c, s, l = rt1:block_on(pair)
  -- rt1 is alive but not running: a wait on its driver would never end
  local r = H.pack(rt2:block_on(function() return H.within(5, c.read, c) end))
  H.eq(r[1], nil, "read")
  H.has(r[2], "the object belongs to another runtime", "read's message")
  H.eq(r[3], "EFOREIGN", "read's errno name")
  r = H.pack(rt2:block_on(function() return H.within(5, c.write, c, "x") end))
  H.eq(r[3], "EFOREIGN", "write's errno name")
  r = H.pack(rt2:block_on(function() return H.within(5, l.accept, l) end))
  H.eq(r[3], "EFOREIGN", "accept's errno name")
  -- the objects still work in their own runtime
  rt1:block_on(function()
    s:write("still mine")
    H.eq(H.read_n(c, 10), "still mine")
    c:close(); s:close(); l:close()
  end)
end)

T.case("issue 13: TCP_NODELAY is on for connected and accepted conns; conn:nodelay() says so", function()
  local c, s, l = pair()
  H.eq(c:nodelay(), true, "a connected conn")
  H.eq(s:nodelay(), true, "an accepted conn")
  H.eq(c:set_nodelay(false), true)
  H.eq(c:nodelay(), false, "after set_nodelay(false)")
  H.eq(s:nodelay(), true, "the other side keeps its own")
  H.eq(c:set_nodelay(true), true)
  H.eq(c:nodelay(), true, "after set_nodelay(true)")
  c:set_nodelay(false)
  c:set_nodelay()
  H.eq(c:nodelay(), true, "set_nodelay() turns it on")
  c:close(); s:close(); l:close()
end)

T.case("bind / connect: bad arguments", function()
  H.bad_arg(tcp.bind)
  -- (bind(nil, port) binds every address, 0.0.0.0: not tried here)
  H.bad_arg(tcp.bind, {}, 0)
  H.bad_arg(tcp.bind, "127.0.0.1")
  H.bad_arg(tcp.bind, "127.0.0.1", 70000)
  H.bad_arg(tcp.bind, "127.0.0.1", 65536)
  H.bad_arg(tcp.bind, "127.0.0.1", -1)
  H.bad_arg(tcp.bind, "127.0.0.1", "http")
  H.bad_arg(tcp.bind, "127.0.0.1", 1.5)
  H.bad_arg(tcp.bind, "127.0.0.1", 0 / 0)
  H.bad_arg(tcp.bind, "127.0.0.1", 0, "opts")
  H.bad_arg(tcp.bind, "127.0.0.1", 0, {backlog = "lots"})
  H.bad_arg(tcp.bind, "127.0.0.1", 0, {backlog = -5})
  H.bad_arg(tcp.connect)
  H.bad_arg(tcp.connect, "127.0.0.1")
  H.bad_arg(tcp.connect, "127.0.0.1", 65536)
  H.bad_arg(tcp.connect, "127.0.0.1", -1)
  H.bad_arg(tcp.connect, "127.0.0.1", "x")
  H.bad_arg(tcp.connect, nil, 80)
end)

T.case("conn and listener methods: bad arguments", function()
  local c, s, l = pair()
  H.bad_arg(c.read, c, "ten")
  H.bad_arg(c.read, c, -1)
  H.bad_arg(c.read, c, {})
  H.bad_arg(c.write, c)
  H.bad_arg(c.write, c, nil)
  H.bad_arg(c.write, c, {})
  H.bad_arg(c.write, c, function() end)
  H.bad_arg(c.read, l)             -- a listener is not a conn
  H.bad_arg(l.accept, c)           -- and a conn is not a listener
  H.bad_arg(l.accept, 42)
  H.bad_arg(c.close, "x")
  H.bad_arg(l.addr, nil)
  -- read(0): an empty string, an error, or a bad argument; no crash, no hang
  local ok, v = pcall(H.within, 1, c.read, c, 0)
  H.note("read(0): " .. tostring(ok) .. " " .. H.repr(v))
  -- still usable
  s:write("fine")
  H.eq(H.read_n(c, 4), "fine")
  c:close(); s:close(); l:close()
end)

return T.main()
