-- TLS on cosockets: sock:sslhandshake (a client, OpenResty's API) and
-- conn:sslhandshake_server, with a throwaway CA, a server certificate it
-- signed and a self-signed one, all made at test time with the `openssl`
-- command: an echo over TLS with every receive pattern, verification
-- (the CA file, a self-signed certificate, another host name, the
-- system's store), a peer that does not speak TLS or closes mid-way, a
-- handshake timeout, the keep-alive pool, closed sockets, bad arguments.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local tcp = treadle.tcp
local T = H.suite("cosock_tls", ...)

local skip = not H.which("openssl") and "no openssl command" or nil

-- Makes the certificates in a fresh folder; returns the paths and a
-- function that removes them.
local function make_certs()
  local dir = assert(io.popen("mktemp -d /tmp/treadle-tls-XXXXXX")):read("l")
  local function run(cmd)
    local ok = os.execute("cd " .. H.q(dir) .. " && " .. cmd .. " >/dev/null 2>&1")
    assert(ok, "openssl failed: " .. cmd)
  end
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  run("openssl req -x509 " .. ec .. " -keyout ca.key -out ca.pem -days 2" ..
      " -subj /CN=treadle-test-ca -addext basicConstraints=critical,CA:TRUE" ..
      " -addext keyUsage=critical,keyCertSign")
  run("openssl req " .. ec .. " -keyout srv.key -out srv.csr -subj /CN=localhost")
  local ext = assert(io.open(dir .. "/ext.cnf", "w"))
  ext:write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
  ext:close()
  run("openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial" ..
      " -out srv.pem -days 2 -extfile ext.cnf")
  run("openssl req -x509 " .. ec .. " -keyout self.key -out self.pem -days 2" ..
      " -subj /CN=localhost -addext subjectAltName=DNS:localhost")
  local c = {dir = dir}
  for _, n in ipairs({"ca.pem", "srv.pem", "srv.key", "self.pem", "self.key"}) do
    c[n:gsub("%.", "_")] = dir .. "/" .. n
  end
  c.cleanup = function() os.execute("rm -rf " .. H.q(dir)) end
  return c
end

-- A TLS server: runs handler(conn) after the handshake with cert and key
-- for each connection; returns its port, the listener and stats
-- (accepted, handshakes, failures and the last failure's message).
local function tls_server(cert, key, handler)
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local stats = {accepted = 0, handshakes = 0, failures = 0}
  treadle.spawn(function()
    while true do
      local c = l:accept()
      if not c then return end
      stats.accepted = stats.accepted + 1
      treadle.spawn(function()
        local ok, err = c:sslhandshake_server({cert = cert, key = key})
        if not ok then
          stats.failures, stats.err = stats.failures + 1, err
          return
        end
        stats.handshakes = stats.handshakes + 1
        handler(c)
      end)
    end
  end)
  return port, l, stats
end

-- Echoes lines back until the client closes; "sni" answers the name the
-- client sent.
local function echo_lines(c)
  while true do
    local line = c:receive("*l")
    if not line then c:close() return end
    if line == "sni" then line = tostring(c:sslinfo().server_name) end
    if line == "bye" then
      c:send("last words\r\nand the rest")
      c:close()
      return
    end
    c:send(line .. "\n")
  end
end

-- A plain server running handler(conn).
local function plain_server(handler)
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  treadle.spawn(function()
    while true do
      local c = l:accept()
      if not c then return end
      treadle.spawn(handler, c)
    end
  end)
  return port, l
end

local function connect(port)
  local s = tcp.socket()
  H.eq(s:connect("127.0.0.1", port), 1, "connect")
  return s
end

T.case("handshake, then an echo with every receive pattern", {skip = skip}, function()
  local certs = make_certs()
  H.eq(treadle.tls.set_ca_file(certs.ca_pem), true, "set_ca_file")
  local port, l, stats = tls_server(certs.srv_pem, certs.srv_key, echo_lines)
  local s = connect(port)
  local sess, err = s:sslhandshake(nil, "localhost", true)
  H.eq(err, nil, "no error")
  H.eq(type(sess), "userdata", "a session for reused_session nil")
  H.eq(s:sslhandshake(false, "localhost", true), true, "twice: true at once")
  local info = s:sslinfo()
  H.ok(info.version == "TLSv1.3" or info.version == "TLSv1.2", "a version")
  H.eq(info.server_name, "localhost")
  H.eq(info.peer_subject, "CN=localhost", "the server's certificate")
  H.eq(s:send("sni\n"), 4)
  H.eq(s:receive(), "localhost", "the server saw the SNI")
  H.eq(s:send("hello\r\n"), 7, "send returns the bytes")
  H.eq(s:receive("*l"), "hello", "receive *l over TLS")
  H.eq(s:send({"one", "\n", "two\n", 3, "\n"}), 10)
  H.eq(s:receive(4), "one\n", "a count")
  local reader = s:receiveuntil("\n")
  H.eq(reader(), "two", "receiveuntil")
  H.eq(s:receiveany(100), "3\n", "receiveany")
  s:settimeouts(60000, 60000, 50)
  local r = {s:receive("*l")}
  H.eq(r[2], "timeout", "a read timeout over TLS")
  H.eq(s:send("after the timeout\n"), 18, "the connection stays usable")
  H.eq(s:receive("*l"), "after the timeout")
  s:settimeout(0)
  local big = string.rep("x", 200000)
  H.eq(s:send(big .. "\n"), #big + 1, "a long line")
  H.eq(s:receive("*l"), big, "a long line comes back whole")
  s:send("bye\n")
  H.eq(s:receive("*l"), "last words")
  H.eq(s:receive("*a"), "and the rest", "*a to the end")
  H.eq(select(2, s:receive()), "closed")
  H.eq(stats.handshakes, 1)
  -- The session object is accepted back; verification off needs no name.
  s = connect(port)
  H.eq(type(s:sslhandshake(sess, nil, false)), "userdata", "reused_session passed back")
  H.eq(s:send("sni\n"), 4)
  H.eq(s:receive(), "nil", "no name, no SNI")
  H.eq(s:send("again\n"), 6)
  H.eq(s:receive(), "again")
  H.eq(s:close(), 1)
  -- The IP address in the certificate is checked as an address.
  s = connect(port)
  local ok, herr = s:sslhandshake(false, "127.0.0.1", true)
  H.eq(herr, nil, "an IP server name")
  H.eq(ok, true)
  s:close()
  l:close()
  certs.cleanup()
end)

-- A plain TCP proxy in front of port, for one client: bytes go both ways
-- as they come, except that while hold.on each piece from the server is
-- cut after 3 bytes (half a TLS record's header): it sends true on
-- hold.sent and forwards the rest once hold.go has a value.
local function proxy(port, hold)
  local l = assert(tcp.bind("127.0.0.1", 0))
  local _, pport = l:addr()
  treadle.spawn(function()
    local c = l:accept()
    l:close()
    local up = assert(tcp.connect("127.0.0.1", port))
    treadle.spawn(function()
      while true do
        local d = c:receiveany(65536)
        if not d or not up:send(d) then up:close() return end
      end
    end)
    while true do
      local d = up:receiveany(65536)
      if not d then c:close() return end
      if hold.on and #d > 3 then
        c:send(d:sub(1, 3))
        hold.sent:send(true)
        hold.go:recv()
        d = d:sub(4)
      end
      c:send(d)
    end
  end)
  return pport
end

T.case("select on a TLS socket: records, plaintext OpenSSL holds, half a record, the end",
       {skip = skip}, function()
  local certs = make_certs()
  assert(treadle.tls.set_ca_file(certs.ca_pem))
  -- Echoes lines; "big N" answers N bytes in one send, "quit" closes.
  local port, l = tls_server(certs.srv_pem, certs.srv_key, function(c)
    while true do
      local line = c:receive("*l")
      if not line or line == "quit" then c:close() return end
      local n = tonumber(line:match("^big (%d+)$"))
      c:send(n and string.rep("y", n) or line .. "\n")
    end
  end)
  local hold = {on = false, sent = treadle.channel(1), go = treadle.channel(1)}
  local s = connect(proxy(port, hold))
  H.eq(s:sslhandshake(false, "localhost", true), true)
  local ch = treadle.channel(1)
  H.same_table(H.pack(treadle.select({ch, s}, 0)), {n = 2, nil, "timeout"}, "nothing yet")
  local t = treadle.spawn(function() return table.pack(treadle.select({ch, s})) end)
  H.settle()
  H.eq(t:done(), false, "select waits")
  H.raises("busy", s.receive, s, 1)
  H.eq(s:send("hello\n"), 6)
  H.same_table(H.within(5, t.join, t), {n = 2, s, true}, "a record wakes it")
  H.eq(s:receive("*l"), "hello", "the bytes wait for receive")
  -- One record of 16000 bytes: a read takes the buffer's room of it and
  -- OpenSSL keeps the rest decrypted, with nothing left on the socket.
  H.eq(s:send("big 16000\n"), 10)
  H.eq(s:receive(100), string.rep("y", 100))
  local got = 100 + #s:receiveany(20000)
  H.ok(got < 16000, "the first read took part of the record: " .. got)
  H.same_table(H.pack(treadle.select({ch, s}, 10)), {n = 2, s, true},
               "plaintext inside OpenSSL is readable")
  H.eq(s:receive(16000 - got), string.rep("y", 16000 - got), "the rest of the record")
  H.same_table(H.pack(treadle.select({s}, 0)), {n = 2, nil, "timeout"}, "and then nothing")
  -- Half a record on the socket: readable for the socket, not for TLS.
  hold.on = true
  H.eq(s:send("half\n"), 5)
  hold.sent:recv() -- 3 bytes of the answer's record are in s's socket
  H.same_table(H.pack(treadle.select({ch, s}, 0.2)), {n = 2, nil, "timeout"},
               "half a record is not readable")
  hold.on = false
  hold.go:send(true)
  H.same_table(H.pack(treadle.select({ch, s}, 10)), {n = 2, s, true}, "the rest of it is")
  H.eq(s:receive("*l"), "half")
  -- The peer's close_notify is the end, readable, and receive says closed.
  H.eq(s:send("quit\n"), 5)
  H.same_table(H.pack(treadle.select({s}, 10)), {n = 2, s, true}, "the end")
  H.same_table(H.pack(s:receive()), {n = 3, nil, "closed", ""})
  s:close()
  H.same_table(H.pack(treadle.select({s}, 0)), {n = 2, s, true}, "closed: at once")
  -- Bad input: listed twice, read by another task, during the handshake.
  s = connect(port)
  H.eq(s:sslhandshake(false, "localhost", true), true)
  H.raises("a socket is listed twice", treadle.select, {s, s}, 0)
  H.same_table(H.pack(treadle.select({s}, 0)), {n = 2, nil, "timeout"}, "free again")
  local reader = treadle.spawn(function() return s:receive(1) end)
  H.settle()
  H.raises("socket busy reading", treadle.select, {s}, 0)
  reader:abort()
  s:close()
  local plain_port, pl = plain_server(function(c) c:receive("*a") end)
  s = connect(plain_port)
  local shaking = treadle.spawn(function() return s:sslhandshake(false, nil, false) end)
  H.settle()
  H.raises("socket busy reading", treadle.select, {s}, 0)
  s:close()
  H.eq(select(2, shaking:join()), "closed")
  pl:close()
  l:close()
  certs.cleanup()
end)

T.case("verification: self-signed, another host name, the system's store", {skip = skip}, function()
  local certs = make_certs()
  assert(treadle.tls.set_ca_file(certs.ca_pem))
  local port, l, stats = tls_server(certs.self_pem, certs.self_key, echo_lines)
  local s = connect(port)
  local ok, err = s:sslhandshake(false, "localhost", true)
  H.eq(ok, nil, "a self-signed certificate fails")
  H.has(err, "certificate verify failed: ", "OpenResty-like message")
  H.has(err, "self-signed", "says why")
  H.eq(select(2, s:receive()), "closed", "the failed socket is closed")
  H.eq(select(2, s:sslhandshake(false, "localhost", true)), "closed")
  -- Without verification the same server is fine.
  s = connect(port)
  H.eq(s:sslhandshake(false, "localhost", false), true, "verify off")
  H.eq(s:send("x\n"), 2)
  H.eq(s:receive(), "x")
  s:close()
  l:close()
  -- A certificate of our CA, for another name.
  local port2, l2 = tls_server(certs.srv_pem, certs.srv_key, echo_lines)
  s = connect(port2)
  ok, err = s:sslhandshake(false, "example.com", true)
  H.eq(ok, nil, "another host name fails")
  H.has(err, "certificate verify failed: ")
  H.has(err, "mismatch", "hostname mismatch")
  -- The system's store does not know our CA.
  H.eq(treadle.tls.set_ca_file(nil), true, "back to the system's store")
  s = connect(port2)
  ok, err = s:sslhandshake(false, "localhost", true)
  H.eq(ok, nil)
  H.has(err, "certificate verify failed: ", "unknown issuer")
  -- Verifying needs a name.
  s = connect(port2)
  ok, err = s:sslhandshake(false, nil, true)
  H.eq(ok, nil)
  H.eq(err, "no server name to verify the certificate against")
  s:close()
  H.ok(stats.failures >= 1, "the server saw the refusals")
  l2:close()
  certs.cleanup()
end)

-- How a TLS server's conn:read saw its client end: "clean" after the
-- client's close_notify, else the error's errno name (a truncation).
local function read_to_end(c)
  while true do
    local d, _, code = c:read()
    if not d then return code or "clean" end
  end
end

T.case("close and shutdown end the TLS stream with close_notify", {skip = skip}, function()
  local certs = make_certs()
  assert(treadle.tls.set_ca_file(certs.ca_pem))
  local ends = treadle.channel(4)
  local port, l = tls_server(certs.srv_pem, certs.srv_key, function(c)
    local how = read_to_end(c)
    ends:send(how)
    c:write("after your end: " .. how)
    c:close()
  end)
  -- sock:close() in a task sends close_notify: the server reads a clean end.
  local s = connect(port)
  H.eq(s:sslhandshake(false, "localhost", true), true)
  H.eq(s:send("x"), 1)
  H.eq(s:close(), 1, "close over TLS returns 1")
  H.eq(ends:recv(), "clean", "the server saw close_notify, not a truncation")
  H.eq(select(2, s:close()), "closed", "a second close")
  -- conn:shutdown() ends the write side only: the reply still comes back.
  s = connect(port)
  H.eq(s:sslhandshake(false, "localhost", true), true)
  H.eq(s:send("y"), 1)
  H.eq(s:shutdown(), true, "shutdown over TLS")
  H.eq(ends:recv(), "clean", "close_notify after the queued write")
  H.eq(s:receive("*a"), "after your end: clean", "reading goes on after shutdown")
  local ok, _, code = s:shutdown()
  H.eq(ok, nil, "a second shutdown fails")
  H.ok(code ~= nil, "with an errno name")
  s:close()
  -- Closed by the garbage collector or outside a task: no close_notify,
  -- the server reads a truncation (nothing hangs).
  s = connect(port)
  H.eq(s:sslhandshake(false, "localhost", true), true)
  s = nil
  collectgarbage()
  collectgarbage()
  H.ok(ends:recv() ~= "clean", "no close_notify from the collector")
  l:close()
  certs.cleanup()
end)

T.case("a peer that does not speak TLS, one that closes mid-way, a timeout", {skip = skip}, function()
  local certs = make_certs()
  local port, l = plain_server(function(c)
    c:receiveany(10)
    c:send("HTTP/1.0 400 Bad Request\r\n\r\n")
    c:close()
  end)
  local s = connect(port)
  H.same_table({s:sslhandshake(false, "localhost", false)}, {nil, "handshake failed"},
               "a plain text answer")
  H.eq(select(2, s:receive()), "closed")
  l:close()
  port, l = plain_server(function(c) c:receiveany(10) c:close() end)
  s = connect(port)
  H.same_table({s:sslhandshake(false, "localhost", false)}, {nil, "handshake failed"},
               "closed after the ClientHello")
  l:close()
  local hold = {}
  port, l = plain_server(function(c) hold[#hold + 1] = c c:receive("*a") end)
  s = connect(port)
  s:settimeouts(100, 60000, 60000)
  H.same_table({s:sslhandshake(false, "localhost", false)}, {nil, "timeout"},
               "the connect timeout bounds the handshake")
  H.eq(select(2, s:send("x")), "closed", "closed after it")
  for _, c in ipairs(hold) do c:close() end
  l:close()
  -- A TLS server whose client does not speak TLS.
  local port2, l2, stats = tls_server(certs.srv_pem, certs.srv_key, echo_lines)
  s = connect(port2)
  s:send("GET / HTTP/1.0\r\n\r\n")
  H.eq(select(2, s:receive("*a")), nil, "the server closes")
  H.wait_until(function() return stats.failures == 1 end, 10, "the server's failure")
  H.eq(stats.err, "handshake failed")
  l2:close()
  certs.cleanup()
end)

T.case("the keep-alive pool keeps a TLS connection and its TLS", {skip = skip}, function()
  local certs = make_certs()
  assert(treadle.tls.set_ca_file(certs.ca_pem))
  local port, l, stats = tls_server(certs.srv_pem, certs.srv_key, echo_lines)
  for i = 1, 3 do
    local s = tcp.socket()
    H.eq(s:connect("127.0.0.1", port, {pool = "tls"}), 1)
    H.eq(s:getreusedtimes(), i - 1, "reused times")
    H.eq(s:sslhandshake(false, "localhost", true), true, "handshake " .. i)
    H.eq(s:send("n" .. i .. "\n"), 3)
    H.eq(s:receive(), "n" .. i)
    H.eq(s:setkeepalive(10000, 5), 1, "pooled")
  end
  H.eq(stats.handshakes, 1, "one TLS handshake for three sessions")
  H.eq(stats.accepted, 1, "one connection")
  l:close()
  certs.cleanup()
end)

T.case("sessions resume: sslhandshake's session object passed back", {skip = skip}, function()
  local certs = make_certs()
  assert(treadle.tls.set_ca_file(certs.ca_pem))
  local seen = {} -- session_reused as the server saw each handshake
  local port, l, stats = tls_server(certs.srv_pem, certs.srv_key, function(c)
    seen[#seen + 1] = c:sslinfo().session_reused
    echo_lines(c)
  end)
  -- One connection: its session object and whether it resumed.
  local function session(sess, name, verify)
    local s = connect(port)
    local got, err = s:sslhandshake(sess, name, verify)
    H.eq(err, nil, "handshake")
    local reused = s:sslinfo().session_reused
    H.eq(s:send("x\n"), 2)
    H.eq(s:receive(), "x", "an echo (TLS 1.3's tickets come before it)")
    s:close()
    return got, reused
  end
  local first, reused = session(nil, "localhost", true)
  H.eq(type(first), "userdata", "a session object")
  H.eq(reused, false, "the first handshake is a full one")
  -- Each handshake returns its own connection's session: TLS 1.3 asks that
  -- a ticket serve one resumption, so each is passed on once.
  local second, third, fourth
  second, reused = session(first, "localhost", true)
  H.eq(reused, true, "passed back, it resumes")
  third, reused = session(second, "localhost", true)
  H.eq(reused, true, "the resumed connection's session resumes too")
  fourth, reused = session(third, "localhost", true)
  H.eq(reused, true)
  H.eq(select(2, session(fourth, "127.0.0.1", true)), false,
       "not offered for another server name: a full handshake")
  H.eq(select(2, session(fourth, "localhost", false)), false,
       "nor for another ssl_verify")
  H.eq(select(2, session(fourth, "localhost", true)), true,
       "offered to neither, it still resumes")
  H.same_table(seen, {false, true, true, true, false, false, true},
               "the server saw the same")
  H.eq(stats.handshakes, 7)
  -- false asks for no session object.
  local s = connect(port)
  H.eq(s:sslhandshake(false, "localhost", true), true, "false: true")
  s:close()
  -- A session object taken before its connection read anything fills
  -- when it reads (TLS 1.3's tickets come after the handshake), and
  -- outlives its connection.
  s = connect(port)
  local early = s:sslhandshake(nil, "localhost", true)
  local s2 = connect(port)
  H.eq(type(s2:sslhandshake(early, "localhost", true)), "userdata",
       "an empty session is no error")
  if s:sslinfo().version == "TLSv1.3" then
    H.eq(s2:sslinfo().session_reused, false, "TLS 1.3: no ticket yet, a full handshake")
  end
  s2:close()
  H.eq(s:send("y\n"), 2)
  H.eq(s:receive(), "y")
  s:close()
  H.eq(select(2, session(early, "localhost", true)), true,
       "after a read it resumes, its connection closed")
  -- Bad input: anything but nil, false or a session object.
  s = connect(port)
  for _, bad in ipairs({true, "session", 1, {}, io.stdout, treadle.channel(1), s}) do
    H.raises("bad reused_session: nil, false or a session from sslhandshake",
             s.sslhandshake, s, bad, "localhost", true)
  end
  H.eq(type(s:sslhandshake(nil, "localhost", true)), "userdata", "the socket is fine")
  s:close()
  first, second, third, fourth, early = nil, nil, nil, nil, nil
  collectgarbage()
  collectgarbage() -- the objects' __gc frees the sessions (ASan, valgrind)
  l:close()
  certs.cleanup()
end)

T.case("closed sockets, busy sockets and bad arguments", {skip = skip}, function()
  local s = tcp.socket()
  H.same_table({s:sslhandshake(false, "localhost", true)}, {nil, "closed"}, "never connected")
  H.same_table({s:sslinfo()}, {nil, "closed"})
  H.bad_arg(s.sslhandshake, s, 1)
  H.bad_arg(s.sslhandshake, s, true)
  H.bad_arg(s.sslhandshake, s, "session")
  H.bad_arg(s.sslhandshake, s, nil, 42)
  H.bad_arg(s.sslhandshake, s, nil, {})
  H.bad_arg(s.sslhandshake, s, nil, "x", "yes")
  H.bad_arg(s.sslhandshake, s, nil, "x", true, 1)
  H.bad_arg(s.sslhandshake_server, s)
  H.bad_arg(s.sslhandshake_server, s, {cert = "c.pem"})
  H.bad_arg(s.sslhandshake_server, s, {cert = 1, key = "k"})
  H.raises("bad argument", treadle.tls.set_ca_file, {})
  local ok, err = treadle.tls.set_ca_file("/nonexistent/ca.pem")
  H.eq(ok, nil, "a missing CA file")
  H.ok(type(err) == "string" and #err > 0, "says why: " .. tostring(err))
  local certs = make_certs()
  ok, err = treadle.tls.set_ca_file(certs.srv_key)
  H.eq(ok, nil, "a file with no certificate")
  -- A server with a key that does not match its certificate.
  local port, l = plain_server(function(c)
    local r = {c:sslhandshake_server({cert = certs.srv_pem, key = certs.self_key})}
    H.eq(r[1], nil, "a mismatched key")
    H.ok(type(r[2]) == "string", "says why")
    c:close()
  end)
  s = connect(port)
  H.same_table({s:sslhandshake(false, nil, false)}, {nil, "handshake failed"})
  l:close()
  -- A handshake on a socket another task reads raises.
  port, l = plain_server(function(c) c:receive("*a") end)
  s = connect(port)
  H.same_table({s:sslinfo()}, {nil, "not TLS"}, "a plain connection")
  local reading = false
  local reader = treadle.spawn(function() reading = true return s:receive("*a") end)
  H.wait_until(function() return reading end, 10, "the reader") -- then it waits
  H.raises("busy", s.sslhandshake, s, false, "localhost", false)
  s:close()
  reader:join()
  l:close()
  -- close during a handshake ends it with "closed".
  port, l = plain_server(function(c) c:receive("*a") end)
  s = connect(port)
  local shaking = false
  local hs = treadle.spawn(function()
    shaking = true
    return s:sslhandshake(false, nil, false)
  end)
  H.wait_until(function() return shaking end, 10, "the handshake")
  H.raises("busy", s.receive, s)
  H.raises("runs the handshake", s.sslhandshake, s, false, nil, false)
  H.eq(s:close(), 1)
  local r = {hs:join()}
  H.eq(r[1], nil); H.eq(r[2], "closed", "a handshake cut by close")
  -- A handshake whose task was aborted: the next one says it failed.
  s = connect(port)
  shaking = false
  hs = treadle.spawn(function()
    shaking = true
    return s:sslhandshake(false, nil, false)
  end)
  H.wait_until(function() return shaking end, 10, "the handshake")
  hs:abort()
  H.raises("cancelled", hs.join, hs)
  H.same_table({s:sslhandshake(false, nil, false)}, {nil, "handshake failed"},
               "after an aborted handshake")
  H.eq(select(2, s:receive()), "closed", "and the socket is closed")
  l:close()
  certs.cleanup()
end)

T.case("TLS sessions, good and failed, leave no fd behind", {skip = skip}, function()
  local certs = make_certs()
  assert(treadle.tls.set_ca_file(certs.ca_pem))
  local port, l, stats = tls_server(certs.srv_pem, certs.srv_key, echo_lines)
  local function session(i)
    local s = tcp.socket()
    assert(s:connect("127.0.0.1", port))
    local name = i % 3 == 0 and "example.com" or "localhost" -- every third fails
    local ok = s:sslhandshake(false, name, true)
    if ok then
      assert(s:send("x" .. i .. "\n"))
      assert(s:receive() == "x" .. i)
      s:close()
    end
    return ok
  end
  session(1) -- OpenSSL's own one-time allocations come first
  collectgarbage()
  local fds = H.nfds()
  local n, good = H.n(60, 12), 0
  for i = 1, n do
    if session(i) then good = good + 1 end
  end
  H.eq(good, n - n // 3, "two of three handshakes succeed")
  H.wait_until(function() return stats.accepted == n + 1 end, 10, "the server")
  collectgarbage()
  H.wait_until(function() collectgarbage() return H.nfds() <= fds end, 10,
               "the fds back to " .. fds)
  l:close()
  certs.cleanup()
end)

return T.main()
