-- treadle.at and treadle.every (callback timers, ngx.timer): arguments and
-- premature, cancel (before and after firing, from the callback), a
-- callback that waits, errors printed and not fatal, coroutines reused
-- (not one per timer), premature runs at the end of a run on both flavors,
-- bad input.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("timers", ...)

T.case("at: fn(false, ...) once; pending, runs, tostring", function()
  local got = {}
  local t = treadle.at(0.005, function(premature, a, b, n)
    got[#got + 1] = {premature, a, b, n}
  end, "x", nil, 3)
  H.eq(t:pending(), true); H.eq(t:runs(), 0)
  H.has(tostring(t), "treadle.timer (at, pending, 0 runs)")
  H.wait_until(function() return #got == 1 end, 10, "the timer fires")
  H.same_table(got[1], {false, "x", nil, 3}, "premature false, the arguments (a nil too)")
  H.eq(t:pending(), false); H.eq(t:runs(), 1)
  H.has(tostring(t), "treadle.timer (at, done, 1 run)")
  H.settle(5)
  H.eq(#got, 1, "once")
  H.eq(t:cancel(), false, "cancelling a fired timer: false")
end)

T.case("at(0) runs soon; timers fire in deadline order", function()
  local order = {}
  treadle.at(0.02, function() order[#order + 1] = 3 end)
  treadle.at(0.01, function() order[#order + 1] = 2 end)
  treadle.at(0, function() order[#order + 1] = 1 end)
  H.wait_until(function() return #order == 3 end, 10, "all three")
  H.same_table(order, {1, 2, 3})
end)

T.case("cancel before firing: it never runs", function()
  local ran = 0
  local t = treadle.at(0.005, function() ran = ran + 1 end)
  H.eq(t:cancel(), true, "pending: true")
  H.eq(t:cancel(), false, "twice: false")
  H.eq(t:pending(), false)
  H.has(tostring(t), "cancelled")
  treadle.sleep(0.03)
  H.eq(ran, 0)
  local far = treadle.at(3600, function() ran = ran + 1 end)
  H.eq(far:cancel(), true, "a far timer ends now, not in an hour")
end)

T.case("every: runs until cancelled, also from its callback", function()
  local n, seen = 0, {}
  local e
  e = treadle.every(0.002, function(premature, tag)
    n = n + 1
    seen[#seen + 1] = {premature, tag}
    if n == 5 then H.eq(e:cancel(), true, "cancel from the callback") end
  end, "tick")
  H.wait_until(function() return n == 5 end, 10, "five runs")
  treadle.sleep(0.02)
  H.eq(n, 5, "no run after cancel")
  H.eq(e:runs(), 5); H.eq(e:pending(), false)
  H.same_table(seen[5], {false, "tick"})
  local m = 0
  local e2 = treadle.every(0.002, function() m = m + 1 end)
  H.wait_until(function() return m >= 2 end, 10, "runs")
  H.eq(e2:cancel(), true, "an every timer is pending between runs")
  local at_cancel = m
  treadle.sleep(0.02)
  H.eq(m, at_cancel, "cancelled from outside")
end)

T.case("a callback that waits runs as a task: sleep, channels, spawn", function()
  local ch = treadle.channel(1)
  local t = treadle.at(0, function()
    treadle.sleep(0.005)
    local child = treadle.spawn(function() return "child" end)
    ch:send(child:join() .. " ok")
  end)
  H.eq(H.within(10, ch.recv, ch), "child ok")
  H.wait_until(function() return not t:pending() end, 10, "over")
  -- every with a waiting callback: runs never overlap
  local active, max_active, runs = 0, 0, 0
  local e
  e = treadle.every(0.001, function()
    active = active + 1
    if active > max_active then max_active = active end
    treadle.sleep(0.005)
    active = active - 1
    runs = runs + 1
    if runs == 3 then e:cancel() end
  end)
  H.wait_until(function() return runs == 3 end, 10, "three runs")
  H.eq(max_active, 1, "one run at a time")
end)

T.case("callbacks that do not wait reuse coroutines: not one per timer", function()
  local cos, n = {}, 0
  local N = 200
  for i = 1, N do
    treadle.at(i * 0.0001, function()
      cos[coroutine.running()] = true
      n = n + 1
    end)
  end
  H.wait_until(function() return n == N end, 10, "all fired")
  local distinct = 0
  for _ in pairs(cos) do distinct = distinct + 1 end
  H.ok(distinct <= 2, "coroutines used by " .. N .. " timers: " .. distinct)
end)

T.case("a callback that raises is printed, not fatal; every goes on", {outside = true, flavors = {"current_thread"}}, function()
  local script = [[
    local treadle = require "treadle"
    treadle.run(function()
      local n = 0
      local e = treadle.every(0.002, function() n = n + 1; error("every boom " .. n) end)
      treadle.at(0, function() error("at boom") end)
      while n < 3 do treadle.sleep(0.001) end
      e:cancel()
      print("main goes on", n >= 3)
    end)
  ]]
  local p = io.popen(H.child_env() .. " " .. H.q(H.lua()) .. " -e " .. H.q(script) .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  H.ok(ok, "exit 0: " .. out)
  H.ok(out:find("treadle: a timer callback failed: [^\n]*:5: at boom"), "the at timer's error: " .. out)
  H.has(out, "every boom 1"); H.has(out, "every boom 2")
  H.has(out, "main goes on\ttrue")
  H.ok(not out:find("nobody joins", 1, true), "not reported as a task: " .. out)
end)

T.case("premature: the run ends with timers pending (both flavors)", {outside = true, flavors = {"current_thread"}}, function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 " .. H.q(dir)))
  local f = assert(io.open(dir .. "/premod.lua", "w"))
  f:write([[
    local treadle = require "treadle"
    return function(worker)
      treadle.at(3600, function(premature, w)
        -- one write per line: two workers print at once
        io.stdout:write(string.format("premature %s worker %d\n", premature, w))
        io.stdout:write(string.format("wait: %s\n", pcall(treadle.sleep, 0.01)))
      end, worker)
      treadle.every(3600, function(premature)
        io.stdout:write(string.format("every premature %s\n", premature))
      end)
      -- worker 0 returns (ending the run) once every worker has its timers
      local ready = treadle.channel(4, "premod:ready")
      if worker ~= 0 then ready:send(worker) return end
      for _ = 2, treadle.workers() do ready:recv() end
    end
  ]])
  f:close()
  local script = [[
    package.path = ... .. "/?.lua;" .. package.path
    local treadle = require "treadle"
    local fl = select(2, ...)
    if fl == "multi_thread" then
      treadle.run("premod", {flavor = fl, workers = 2})
    else
      treadle.run(function() require("premod")(0) end)
    end
    print("done")
  ]]
  for _, fl in ipairs({"current_thread", "multi_thread"}) do
    local sf = dir .. "/run.lua"
    local g = assert(io.open(sf, "w")); g:write(script); g:close()
    local p = io.popen(string.format("%s timeout 30 %s %s %s %s 2>&1", H.child_env(), H.q(H.lua()), H.q(sf), H.q(dir), fl))
    local out = p:read("a")
    local ok = p:close()
    H.ok(ok, fl .. ": exit 0: " .. out)
    H.has(out, "premature true worker 0", fl)
    H.has(out, "every premature true", fl)
    H.has(out, "wait: false", fl .. ": a premature callback cannot wait")
    if fl == "multi_thread" then H.has(out, "premature true worker 1", "worker 1's timer too") end
    H.has(out, "done", fl)
  end
  os.execute("rm -rf " .. H.q(dir))
end)

T.case("bad input raises", function()
  H.raises("bad argument #1 to 'treadle.at'", treadle.at, "soon", print)
  H.raises("bad argument #1 to 'treadle.at'", treadle.at, 0 / 0, print)
  H.raises("bad argument #2 to 'treadle.at' (function expected, got number)", treadle.at, 1, 2)
  H.raises("bad argument #2 to 'treadle.every' (function expected, got no value)", treadle.every, 1)
  H.raises("bad argument #1 to 'treadle.every' (interval must be > 0)", treadle.every, 0, print)
  H.raises("bad argument #1 to 'treadle.timer.cancel'", treadle.at(0, function() end).cancel, {})
end)

T.case("outside a task: raises", {outside = true, flavors = {"current_thread"}}, function()
  H.raises("treadle.at needs a running treadle task", treadle.at, 1, print)
  H.raises("treadle.every needs a running treadle task", treadle.every, 1, print)
end)

return T.main()
