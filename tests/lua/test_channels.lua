-- treadle.channel: send / recv within a worker and between workers (named
-- channels), capacity, the values that may be sent (copied) and the ones
-- that raise, aborts, bad arguments.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("channels", ...)
local MT_ALL = {flavors = {"multi_thread"}, on = "all", workers = 2}

T.case("send then recv, FIFO", function()
  local ch = treadle.channel(10)
  for i = 1, 10 do ch:send(i) end
  for i = 1, 10 do H.eq(ch:recv(), i) end
end)

T.case("recv waits while empty", function()
  local ch = treadle.channel(1)
  local t = treadle.spawn(function() return ch:recv() end)
  H.settle()
  H.eq(t:done(), false, "recv waits on an empty channel")
  ch:send("x")
  H.eq(H.within(2, t.join, t), "x")
end)

T.case("send waits while full", function()
  local ch = treadle.channel(2)
  ch:send(1); ch:send(2)
  local t = treadle.spawn(function() ch:send(3); return "sent" end)
  H.settle()
  H.eq(t:done(), false, "the third send waits on a full capacity-2 channel")
  H.eq(ch:recv(), 1)
  H.eq(H.within(2, t.join, t), "sent")
  H.eq(ch:recv(), 2); H.eq(ch:recv(), 3)
end)

T.case("issue 13: waiting receivers are served in order, one value each", function()
  local ch = treadle.channel(4)
  local got = {}
  local ts = {}
  for i = 1, 3 do
    ts[i] = treadle.spawn(function() local v = ch:recv(); got[#got + 1] = {i, v} end)
    H.settle()   -- so that they wait in the order 1, 2, 3
  end
  ch:send("a")
  H.settle()
  H.eq(#got, 1, "one value wakes one receiver")
  ch:send("b"); ch:send("c")
  for i = 1, 3 do H.within(2, ts[i].join, ts[i]) end
  H.eq(got[1][1], 1); H.eq(got[1][2], "a")
  H.eq(got[2][1], 2); H.eq(got[2][2], "b")
  H.eq(got[3][1], 3); H.eq(got[3][2], "c")
end)

T.case("issue 13: an aborted receiver passes its value on", function()
  local ch = treadle.channel(1)
  local first = treadle.spawn(function() return ch:recv() end)
  H.settle()
  local second = treadle.spawn(function() return ch:recv() end)
  H.settle()
  ch:send("x")           -- handed to the first waiter...
  first:abort()          -- ...which gives up before it runs
  H.eq(H.within(2, second.join, second), "x", "the second receiver gets it")
end)

T.case("issue 13: a named channel keeps its capacity, and says so", function()
  local name = "cap-" .. tostring(math.random(1 << 30))
  local a = treadle.channel(1, name)
  H.raises("exists with capacity 1, not 100", treadle.channel, 100, name)
  local b = treadle.channel(nil, name)   -- no capacity given: the same one
  local c = treadle.channel(1, name)
  a:send("v")
  H.eq(b:recv(), "v")
  c:send("w")
  H.eq(a:recv(), "w")
end)

T.case("many producers and consumers", function()
  local ch = treadle.channel(3)
  local got, sum = 0, 0
  local consumers = {}
  for c = 1, 4 do
    consumers[c] = treadle.spawn(function()
      while true do
        local v = ch:recv()
        if v == false then return end
        got = got + 1; sum = sum + v
      end
    end)
  end
  local producers = {}
  for p = 1, 5 do
    producers[p] = treadle.spawn(function() for i = 1, 200 do ch:send(i) end end)
  end
  for p = 1, 5 do producers[p]:join() end
  for _ = 1, 4 do ch:send(false) end
  for c = 1, 4 do consumers[c]:join() end
  H.eq(got, 1000); H.eq(sum, 5 * 200 * 201 // 2)
end)

T.case("plain values arrive as sent", function()
  local ch = treadle.channel(64)
  local values = {
    true, false, 0, 1, -1, math.maxinteger, math.mininteger, 1.5, -0.0, 1e308,
    math.huge, -math.huge, "", "text", "with\0zero", string.rep("big", 100000),
    {}, {1, 2, 3}, {a = 1, b = {c = {d = "deep"}}}, {[1] = "x", [3] = "hole", k = true},
    {[true] = 1, [2.5] = "float key", [-1] = "neg"}, {{}, {{}}},
  }
  for _, v in ipairs(values) do
    ch:send(v)
    local r = ch:recv()
    H.ok(H.deep_eq(r, v), "round trip of " .. H.repr(v) .. " gave " .. H.repr(r))
    H.eq(math.type(r), math.type(v), "number subtype of " .. H.repr(v))
  end
  ch:send(nil)
  local r = H.pack(ch:recv())
  H.eq(r[1], nil, "nil is a value")
  ch:send(0 / 0)
  local nan = ch:recv()
  H.ok(nan ~= nan, "NaN arrives as NaN")
end)

T.case("tables are copied", function()
  local ch = treadle.channel(2)
  local t = {x = 1, inner = {y = 2}}
  ch:send(t)
  t.x = 100
  t.inner.y = 200
  local r = ch:recv()
  H.eq(r.x, 1, "a change after send is not seen")
  H.eq(r.inner.y, 2, "nor a nested one")
  H.ok(r ~= t, "recv gives a copy")
  -- a table sent twice arrives as two tables
  local shared = {1}
  ch:send({a = shared, b = shared})
  local r2 = ch:recv()
  H.eq(r2.a[1], 1); H.eq(r2.b[1], 1)
end)

T.case("non-plain values raise; the channel goes on", function()
  local ch = treadle.channel(4)
  local task = treadle.spawn(function() end)
  local bad = {
    {"a function", function() end},
    {"a C function", print},
    {"a coroutine", coroutine.create(function() end)},
    {"a task", task},
    {"a channel", ch},
    {"a file", io.stdout},
    {"a table holding a function", {f = function() end}},
    {"a table with a function key", {[print] = 1}},
    {"a nested table holding a coroutine", {{{coroutine.create(print)}}}},
  }
  for _, case in ipairs(bad) do
    local err = H.bad_arg(ch.send, ch, case[2])
    if case[1] == "a function" then H.note("send(function): " .. err:sub(1, 90)) end
  end
  -- nothing was half-sent
  ch:send("after")
  H.eq(ch:recv(), "after", "the failed sends left nothing behind")
  task:join()
end)

T.case("a table that contains itself", function()
  local ch = treadle.channel(1)
  local cyc = {}
  cyc.self = cyc
  local ok, err = pcall(ch.send, ch, cyc)
  if ok then
    local r = ch:recv()
    H.note("a cyclic table was sent: " .. tostring(r and r.self == r))
  else
    H.eq(type(err), "string", "a cyclic table raises a message")
    H.note("cyclic table: " .. err:sub(1, 80))
  end
  -- very deep nesting: an error or a copy, never a C stack overflow
  local deep = {}
  local cur = deep
  for _ = 1, 100000 do cur.n = {}; cur = cur.n end
  local ok2, err2 = pcall(ch.send, ch, deep)
  if ok2 then ch:recv() end
  H.note("100,000-deep table: " .. (ok2 and "sent" or ("raised " .. tostring(err2):sub(1, 60))))
end)

T.case("a table with a metatable", function()
  local ch = treadle.channel(1)
  local ok, err = pcall(ch.send, ch, setmetatable({v = 1}, {__index = function() return 0 end}))
  if ok then
    local r = ch:recv()
    H.eq(r.v, 1)
    H.note("metatable " .. (getmetatable(r) and "kept" or "dropped"))
  else
    H.note("a table with a metatable raises: " .. tostring(err):sub(1, 60))
  end
end)

T.case("abort a task waiting in recv; no value is lost", function()
  local ch = treadle.channel(1)
  local t = treadle.spawn(function() return ch:recv() end)
  H.settle()
  t:abort()
  H.raises("cancelled", t.join, t)
  ch:send("kept")
  H.eq(ch:recv(), "kept", "the aborted receiver took nothing")
end)

T.case("abort a task waiting in send", function()
  local ch = treadle.channel(1)
  ch:send("first")
  local t = treadle.spawn(function() ch:send("second") end)
  H.settle()
  t:abort()
  H.raises("cancelled", t.join, t)
  H.eq(ch:recv(), "first")
  -- the aborted send did not go through
  local r = H.pack(treadle.timeout(0.05, ch.recv, ch))
  H.eq(r[1], nil, "the aborted send left nothing: " .. H.repr(r[2]))
  ch:send("third")
  H.eq(ch:recv(), "third")
end)

T.case("a named channel is one channel in a state", function()
  local a = treadle.channel(4, "same name")
  local b = treadle.channel(4, "same name")
  a:send("through a")
  H.eq(H.within(1, b.recv, b), "through a")
  local c = treadle.channel(4, "another name")
  c:send(1)
  local r = H.pack(treadle.timeout(0.02, a.recv, a))
  H.eq(r[1], nil, "different names are different channels")
  H.eq(c:recv(), 1)
end)

T.case("issue 17: values queued in a named channel outlive its handles", function()
  local name = "orphan-" .. tostring(math.random(1 << 30))
  do
    local h = treadle.channel(4, name)
    h:send("kept"); h:send({n = 2})
  end
  collectgarbage(); collectgarbage()   -- the only handle is gone
  local ch = treadle.channel(nil, name)
  H.eq(#ch, 2, "the values wait for the next handle of the name")
  H.eq(ch:recv(), "kept")
  H.same_table(ch:recv(), {n = 2})
  ch = nil
  collectgarbage(); collectgarbage()   -- empty and unheld: it is gone
  local fresh = treadle.channel(8, name)
  H.eq(#fresh, 0)
  H.eq(fresh:try_send(1) and fresh:try_send(2) and fresh:try_send(3), true,
       "a new channel of capacity 8, not the old one of 4")
end)

T.case("issue 17: a handle per send, dropped, loses no value between workers", MT_ALL, function(ctx)
  local ready = treadle.channel(1, "orphan-w2w-ready")
  if ctx.worker == 1 then
    for i = 1, 3 do
      treadle.channel(4, "orphan-w2w"):send(i)
      collectgarbage(); collectgarbage()
    end
    ready:send(true)
  else
    H.within(5, ready.recv, ready)
    local ch = treadle.channel(4, "orphan-w2w")
    for i = 1, 3 do H.eq(H.within(2, ch.recv, ch), i) end
  end
end)

T.case("channels between workers: 10,000 values in order", MT_ALL, function(ctx)
  local ch = treadle.channel(16, "w2w:numbers")
  local N = 10000
  if ctx.worker == 1 then
    for i = 1, N do ch:send(i) end
    ch:send({done = true, from = treadle.worker()})
  else
    for i = 1, N do
      local v = ch:recv()
      if v ~= i then error("expected " .. i .. ", got " .. H.repr(v)) end
    end
    local last = H.within(5, ch.recv, ch)
    H.same_table(last, {done = true, from = 1})
  end
end)

T.case("channels between workers: tables and strings are copied", MT_ALL, function(ctx)
  local to0 = treadle.channel(1, "w2w:to0")
  local to1 = treadle.channel(1, "w2w:to1")
  if ctx.worker == 1 then
    local t = {name = "from 1", list = {1, 2, {3}}, big = string.rep("b", 100000), flag = false}
    to0:send(t)
    t.name = "changed"
    local back = to1:recv()
    H.eq(back.name, "from 1 and back", "the reply")
    H.eq(#back.big, 100000)
  else
    local t = H.within(5, to0.recv, to0)
    H.eq(t.name, "from 1"); H.same_table(t.list, {1, 2, {3}}); H.eq(t.flag, false)
    t.name = t.name .. " and back"
    to1:send(t)
  end
end)

T.case("channels between workers: ping-pong", MT_ALL, function(ctx)
  local ping = treadle.channel(1, "pp:ping")
  local pong = treadle.channel(1, "pp:pong")
  local N = 5000
  if ctx.worker == 0 then
    local t0 = treadle.now()
    local v = 0
    for _ = 1, N do ping:send(v); v = pong:recv() end
    ping:send(-1)
    H.eq(v, N)
    H.note(string.format("%d cross-worker round trips in %.3f s", N, treadle.now() - t0))
  else
    while true do
      local v = ping:recv()
      if v < 0 then break end
      pong:send(v + 1)
    end
  end
end)

T.case("channels between workers: non-plain values raise", MT_ALL, function(ctx)
  local ch = treadle.channel(2, "w2w:bad")
  if ctx.worker == 1 then
    H.bad_arg(ch.send, ch, function() end)
    H.bad_arg(ch.send, ch, {co = coroutine.create(print)})
    ch:send("only this")
  else
    H.eq(H.within(5, ch.recv, ch), "only this")
  end
end)

T.case("channels between workers: many senders on both workers", MT_ALL, function(ctx)
  local ch = treadle.channel(8, "w2w:many")
  local res = treadle.channel(2, "w2w:many:result")
  local senders = {}
  for s = 1, 10 do
    senders[s] = treadle.spawn(function() for i = 1, 100 do ch:send(i) end end)
  end
  if ctx.worker == 0 then
    local sum = 0
    for _ = 1, 2 * 10 * 100 do sum = sum + ch:recv() end
    H.eq(sum, 2 * 10 * 5050)
    res:send("done")
  end
  for s = 1, 10 do senders[s]:join() end
  if ctx.worker == 1 then H.eq(H.within(10, res.recv, res), "done") end
end)

T.case("channel: bad arguments", function()
  H.bad_arg(treadle.channel, "big")
  H.bad_arg(treadle.channel, -1)
  H.bad_arg(treadle.channel, 1.5)
  H.bad_arg(treadle.channel, 0 / 0)
  H.bad_arg(treadle.channel, {})
  H.bad_arg(treadle.channel, 1, {})
  local ok, err = pcall(treadle.channel)
  H.note("channel() with no capacity: " .. (ok and "allowed" or err:sub(1, 60)))
  local ok0, err0 = pcall(treadle.channel, 0)
  H.note("channel(0): " .. (ok0 and "allowed" or err0:sub(1, 60)))
  local ch = treadle.channel(1)
  H.bad_arg(ch.send, 42, 1)
  H.bad_arg(ch.recv, "x")
  local l = assert(treadle.tcp.bind("127.0.0.1", 0))
  H.bad_arg(ch.recv, l)
  l:close()
end)

T.case("dropping a channel with values and waiters", function()
  do
    local ch = treadle.channel(4)
    ch:send({1, 2}); ch:send("x")
  end
  collectgarbage(); collectgarbage()
  local ch2 = treadle.channel(1)
  local t = treadle.spawn(function() return ch2:recv() end)
  H.settle()
  t:abort()
  ch2 = nil
  collectgarbage(); collectgarbage()
  H.raises("cancelled", t.join, t)
end)

T.case("issue 16: close: receivers drain, then nil, closed; senders raise", function()
  local ch = treadle.channel(4)
  ch:send(1); ch:send(nil); ch:send("three")
  H.eq(#ch, 3, "#ch counts the queued values")
  ch:close()
  ch:close()   -- idempotent
  H.raises("send on a closed channel", ch.send, ch, 4)
  H.same_table(H.pack(ch:try_send(4)), {n = 2, false, "closed"})
  H.eq(ch:recv(), 1)
  H.same_table(H.pack(ch:recv()), {n = 1, nil}, "a nil value is one nil")
  H.eq(ch:try_recv(), "three")
  H.eq(#ch, 0)
  H.same_table(H.pack(ch:recv()), {n = 2, nil, "closed"})
  H.same_table(H.pack(ch:try_recv()), {n = 2, nil, "closed"})
  H.same_table(H.pack(ch:recv()), {n = 2, nil, "closed"}, "and again")
end)

T.case("issue 16: close wakes waiting receivers and senders", function()
  local ch = treadle.channel(1)
  local r1 = treadle.spawn(function() return table.pack(ch:recv()) end)
  local r2 = treadle.spawn(function() return table.pack(ch:recv()) end)
  H.settle()
  H.eq(r1:done(), false)
  ch:close()
  H.same_table(H.within(2, r1.join, r1), {n = 2, nil, "closed"})
  H.same_table(H.within(2, r2.join, r2), {n = 2, nil, "closed"})
  local full = treadle.channel(1)
  full:send("a")
  local s = treadle.spawn(function() return full:send("b") end)
  H.settle()
  H.eq(s:done(), false, "the send waits on a full channel")
  full:close()
  H.raises("send on a closed channel", H.within, 2, s.join, s)
  H.eq(full:recv(), "a", "the value sent before the close stays")
  H.same_table(H.pack(full:recv()), {n = 2, nil, "closed"})
end)

T.case("issue 16: close from another worker wakes this one", MT_ALL, function(ctx)
  -- each worker holds both named channels while the other may use them
  local ready = treadle.channel(1, "close-across-ready")
  local ch = treadle.channel(1, "close-across")
  if ctx.worker == 0 then
    ready:send(true)
    H.same_table(H.pack(H.within(5, ch.recv, ch)), {n = 2, nil, "closed"})
  else
    ready:recv()
    ch:close()
  end
end)

T.case("issue 16: try_send, try_recv, #ch never wait", function()
  local ch = treadle.channel(2)
  H.same_table(H.pack(ch:try_recv()), {n = 2, nil, "empty"})
  H.eq(ch:try_send("a"), true)
  H.eq(ch:try_send({x = {1}}), true)
  H.same_table(H.pack(ch:try_send("c")), {n = 2, false, "full"})
  H.eq(#ch, 2)
  H.eq(ch:try_recv(), "a")
  H.same_table(ch:try_recv(), {x = {1}})
  H.eq(#ch, 0)
  H.raises("channel values must be", ch.try_send, ch, print)
  H.eq(#ch, 0, "a value that cannot be copied is not sent")
  H.bad_arg(ch.try_send, 42, 1)
  H.bad_arg(ch.try_recv, "x")
  H.bad_arg(ch.close, {})
  H.raises("bad argument #2", ch.try_send, ch)
  -- a waiting receiver gets a try_send's value
  local r = treadle.spawn(function() return ch:recv() end)
  H.settle()
  H.eq(ch:try_send("w"), true)
  H.eq(H.within(2, r.join, r), "w")
end)

T.case("issue 16: a released handle says so", function()
  local ch = treadle.channel(1)
  getmetatable(ch).__close(ch)
  H.raises("channel handle released", ch.try_send, ch, 1)
  H.raises("channel handle released", function() return #ch end)
end)

T.case("issue 16: try_* and close outside a task", {outside = true}, function()
  local ch = treadle.channel(1)
  H.eq(ch:try_send(1), true)
  H.eq(ch:try_recv(), 1)
  ch:close()
  H.same_table(H.pack(ch:recv()), {n = 2, nil, "closed"}, "recv of a closed channel needs no task")
end)

return T.main()
