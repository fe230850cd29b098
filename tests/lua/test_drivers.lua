-- Missing drivers (the seed's exercise 3): a runtime built with
-- enable_time = false raises the C core's message when a task sleeps; one
-- built with enable_io = false returns nil, message, errno from bind and
-- connect. Not a crash, not a hang; the rest of the runtime works.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("drivers", ...)
local NO_TIME = "timers are disabled: build the runtime with enable_time"
local NO_IO = "I/O is disabled: build the runtime with enable_io"

T.case("enable_time = false: sleep raises", {run_opts = {enable_time = false}, on = "all"}, function()
  local err = H.raises(NO_TIME, treadle.sleep, 0.001)
  H.raises(NO_TIME, treadle.sleep, 0)
  H.raises(NO_TIME, treadle.sleep, math.huge)
  -- a task that sleeps: its join raises the same
  local t = treadle.spawn(function() treadle.sleep(1) end)
  H.raises(NO_TIME, t.join, t)
  -- the rest works: yield, now, spawn, channels, I/O
  treadle.yield()
  H.eq(math.type(treadle.now()), "float")
  local l = assert(treadle.tcp.bind("127.0.0.1", 0))
  l:close()
  H.note(err:sub(1, 100))
end)

T.case("enable_time = false: timeout", {run_opts = {enable_time = false}}, function()
  -- timeout needs the timer too: its error (or fn's results when fn never
  -- waits), not a hang, and not "timeout" for a fn that returned at once
  local ok, a, b = pcall(treadle.timeout, 1, function() return 1 end)
  if ok then
    H.eq(a, true, "timeout(1, fn) without timers, fn returning at once: " .. H.repr(a) .. " " .. H.repr(b))
    H.eq(b, 1)
  else
    H.has(tostring(a), NO_TIME)
  end
  local ok2, c = pcall(treadle.timeout, 1, treadle.sleep, 1)
  if ok2 then H.note("timeout(1, sleep) without timers returned " .. tostring(c))
  else H.has(tostring(c), NO_TIME) end
end)

T.case("enable_io = false: bind and connect fail with the message", {run_opts = {enable_io = false}, on = "all"}, function()
  local r = H.pack(treadle.tcp.bind("127.0.0.1", 0))
  H.eq(r[1], nil, "bind without I/O")
  H.eq(r[2], NO_IO)
  H.eq(type(r[3]), "string", "an errno name: " .. tostring(r[3]))
  local c = H.pack(treadle.tcp.connect("127.0.0.1", 9))
  H.eq(c[1], nil, "connect without I/O")
  H.eq(c[2], NO_IO)
  -- timers still work
  treadle.sleep(0.001)
  H.note("bind: " .. tostring(r[2]) .. " " .. tostring(r[3]))
end)

T.case("both off", {run_opts = {enable_io = false, enable_time = false}}, function()
  H.raises(NO_TIME, treadle.sleep, 0.001)
  H.eq(select(2, treadle.tcp.bind("127.0.0.1", 0)), NO_IO)
  local t = treadle.spawn(function() return "tasks still run" end)
  H.eq(t:join(), "tasks still run")
end)

T.case("runtime(opts) with a driver off", {outside = true, flavors = {"current_thread"}}, function()
  local rt = treadle.runtime({flavor = "current_thread", enable_time = false})
  H.raises(NO_TIME, rt.block_on, rt, function() treadle.sleep(0.001) end)
  H.eq(rt:block_on(function() return "after" end), "after")
  rt:shutdown()
end)

return T.main()
