-- treadle.select: channels (values, closed ones), sockets' readiness,
-- timeouts (none, zero, negative), list order, no value lost to a select
-- that took another item or was aborted, between workers, bad input.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("select", ...)
local MT_ALL = {flavors = {"multi_thread"}, on = "all", workers = 2}

-- A connected pair: the client socket and the server's side.
local function pair()
  local l = assert(treadle.tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local c = assert(treadle.tcp.connect("127.0.0.1", port))
  local s = assert(l:accept())
  l:close()
  return c, s
end

T.case("a ready channel answers at once, first in list order", function()
  local a, b = treadle.channel(2), treadle.channel(2)
  b:send("b1"); a:send("a1")
  local item, v = treadle.select({a, b})
  H.ok(item == a, "a is first in the list"); H.eq(v, "a1")
  item, v = treadle.select({a, b})
  H.ok(item == b, "then b"); H.eq(v, "b1")
  H.eq(#a + #b, 0)
end)

T.case("waits for a value sent later, on any of the channels", function()
  local a, b = treadle.channel(1), treadle.channel(1)
  local t = treadle.spawn(function() return table.pack(treadle.select({a, b})) end)
  H.settle()
  H.eq(t:done(), false, "select waits while both are empty")
  b:send({x = 1})
  local r = H.within(5, t.join, t)
  H.ok(r[1] == b, "b is the ready one"); H.same_table(r[2], {x = 1})
  H.eq(#a, 0)
end)

T.case("a value sent to a channel the select did not take stays there", function()
  local a, b = treadle.channel(1), treadle.channel(1)
  local t = treadle.spawn(function() return treadle.select({a, b}) end)
  H.settle()
  a:send(1); b:send(2)   -- both before the select runs again
  H.within(5, t.join, t)
  H.eq(#a + #b, 1, "one value taken, one left")
  local other = #a == 1 and a or b
  H.ok(other:try_recv() ~= nil)
end)

T.case("an aborted select loses no value", function()
  local ch = treadle.channel(1)
  local t = treadle.spawn(function() return treadle.select({ch}) end)
  local r = treadle.spawn(function() return ch:recv() end)
  H.settle()
  ch:send("v")  -- handed to the select's waiter, first in the queue ...
  t:abort()     -- ... which gives up before it runs: the receiver gets it
  H.eq(H.within(5, r.join, r), "v")
end)

T.case("timeouts: none ready, zero, negative, fractional", function()
  local ch = treadle.channel(1)
  H.same_table(H.pack(treadle.select({ch}, 0)), {n = 2, nil, "timeout"})
  H.same_table(H.pack(treadle.select({ch}, -1)), {n = 2, nil, "timeout"}, "negative is 0")
  H.same_table(H.pack(treadle.select({ch}, 0.01)), {n = 2, nil, "timeout"})
  H.same_table(H.pack(treadle.select({}, 0.01)), {n = 2, nil, "timeout"}, "no items: a sleep")
  ch:send(5)
  local item, v = treadle.select({ch}, 0)
  H.ok(item == ch, "a ready item wins over a zero timeout"); H.eq(v, 5)
end)

T.case("a closed channel: its values first, then nil, closed", function()
  local ch, other = treadle.channel(2), treadle.channel(1)
  ch:send("last"); ch:close()
  local item, v = treadle.select({other, ch})
  H.ok(item == ch); H.eq(v, "last")
  H.same_table(H.pack(treadle.select({other, ch})), {n = 3, ch, nil, "closed"})
  local t = treadle.spawn(function() return table.pack(treadle.select({other})) end)
  H.settle()
  other:close()
  H.same_table(H.within(5, t.join, t), {n = 3, other, nil, "closed"}, "close wakes a select")
end)

T.case("sockets: readable when bytes or the end come, none taken", function()
  local c, s = pair()
  local ch = treadle.channel(1)
  H.same_table(H.pack(treadle.select({ch, c}, 0)), {n = 2, nil, "timeout"}, "nothing yet")
  local t = treadle.spawn(function() return table.pack(treadle.select({ch, c})) end)
  H.settle()
  H.eq(t:done(), false)
  H.raises("busy", c.receive, c, 1)   -- the select holds the reader's slot
  assert(s:send("hello\n"))
  H.same_table(H.within(5, t.join, t), {n = 2, c, true})
  H.eq(c:receive("*l"), "hello", "the bytes are still there")
  assert(s:send("ab"))
  H.eq(c:receive(1), "a")
  H.same_table(H.pack(treadle.select({c}, 0)), {n = 2, c, true}, "buffered bytes: ready at once")
  H.eq(c:receive(1), "b")
  s:close()
  H.same_table(H.pack(treadle.select({c}, 5)), {n = 2, c, true}, "the end is ready too")
  H.same_table(H.pack(c:receive()), {n = 3, nil, "closed", ""})
  H.same_table(H.pack(treadle.select({c}, 5)), {n = 2, c, true}, "a closed socket answers at once")
  c:close()
end)

T.case("between workers: a value from worker 1 wakes a select on worker 0", MT_ALL, function(ctx)
  local ready = treadle.channel(1, "select-ready")
  local a, b = treadle.channel(1, "select-a"), treadle.channel(1, "select-b")
  if ctx.worker == 0 then
    ready:send(true)
    local item, v = H.within(5, treadle.select, {a, b})
    H.ok(item == b, "b"); H.eq(v, "from 1")
  else
    ready:recv()
    treadle.sleep(0.02)
    b:send("from 1")
  end
end)

T.case("bad input raises", function()
  local ch = treadle.channel(1)
  H.raises("table expected, got no value", treadle.select)
  H.raises("table expected, got treadle.channel", treadle.select, ch)
  H.raises("item 2 is number, not a channel or a socket", treadle.select, {ch, 42})
  H.raises("item 1 is table", treadle.select, {{}})
  local many = {}
  for i = 1, 65 do many[i] = ch end
  H.raises("at most 64 items", treadle.select, many)
  H.raises("no items and no timeout", treadle.select, {})
  H.raises("NaN", treadle.select, {ch}, 0 / 0)
  H.raises("number expected, got table", treadle.select, {ch}, {})
  local c, s = pair()
  H.raises("a socket is listed twice", treadle.select, {c, c}, 0)
  H.same_table(H.pack(treadle.select({c}, 0)), {n = 2, nil, "timeout"}, "and it is free again")
  local reader = treadle.spawn(function() return c:receive(1) end)
  H.settle()
  H.raises("socket busy reading", treadle.select, {c}, 0)
  reader:abort()
  s:close(); c:close()
  local released = treadle.channel(1)
  getmetatable(released).__close(released)
  H.raises("channel handle released", treadle.select, {released}, 0)
end)

T.case("outside a task it raises", {outside = true}, function()
  H.raises("needs a running treadle task", treadle.select, {treadle.channel(1)}, 0)
end)

return T.main()
