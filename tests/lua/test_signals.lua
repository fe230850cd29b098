-- treadle.signal(name): waits for the next delivery of SIGUSR1, SIGUSR2,
-- SIGHUP, SIGTERM (sent to this process with kill(1); the pid comes from
-- /proc/self/stat, since Lua has no getpid), bad names, aborts.
-- A signal is only ever sent while a task waits for it: with no handler in
-- place, SIGUSR1 / SIGHUP / SIGTERM would end the process.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("signals", ...)
-- ThreadSanitizer holds an asynchronous signal back until the thread that
-- got it calls an intercepted function: signals are skipped there.
local SKIP = H.sanitizer == "tsan" and "TSan delays asynchronous signals" or nil

local function kill(sig, pid)
  local ok = os.execute(string.format("kill -%s %d", sig, pid))
  H.ok(ok, "kill -" .. sig)
end

-- a task waits for `name`; once it waits, the signal is sent; it must wake
local function roundtrip(name, ctx)
  local t = treadle.spawn(function() return treadle.signal(name) end)
  H.settle()
  H.eq(t:done(), false, name .. ": the waiter waits")
  kill(name:sub(4), ctx.pid)
  H.within(5, t.join, t)
end

for _, name in ipairs({"SIGUSR1", "SIGUSR2", "SIGHUP", "SIGTERM"}) do
  T.case(name .. " wakes treadle.signal", {skip = SKIP}, function(ctx)
    roundtrip(name, ctx)
  end)
end

T.case("SIGUSR1 three times in a row", {skip = SKIP}, function(ctx)
  for _ = 1, 3 do roundtrip("SIGUSR1", ctx) end
end)

T.case("two tasks wait for SIGUSR1", {skip = SKIP}, function(ctx)
  -- "waits for the next delivery": both are waiting when it comes, so both
  -- should wake (as Tokio's signal streams do); at least one must
  local a = treadle.spawn(function() treadle.signal("SIGUSR1"); return "a" end)
  local b = treadle.spawn(function() treadle.signal("SIGUSR1"); return "b" end)
  H.settle()
  kill("USR1", ctx.pid)
  H.wait_until(function() return a:done() or b:done() end, 5, "a waiter to wake")
  treadle.sleep(0.05)
  local both = a:done() and b:done()
  H.note(both and "both waiters woke" or "only one waiter woke")
  H.ok(both, "every task waiting when the signal came wakes")
end)

T.case("a signal to a waiter on another worker", {flavors = {"multi_thread"}, on = "all", workers = 2, skip = SKIP}, function(ctx)
  local ready = treadle.channel(1, "sig:ready")
  local done = treadle.channel(1, "sig:done")
  if ctx.worker == 1 then
    local t = treadle.spawn(function() treadle.signal("SIGUSR2"); return treadle.worker() end)
    H.settle()
    ready:send("waiting")
    local w = H.within(5, t.join, t)
    done:send(w)
  else
    H.eq(H.within(5, ready.recv, ready), "waiting")
    treadle.sleep(0.01)
    kill("USR2", ctx.pid)
    H.eq(H.within(5, done.recv, done), 1, "the waiter on worker 1 woke there")
  end
end)

T.case("abort a task waiting for a signal", {skip = SKIP}, function(ctx)
  local t = treadle.spawn(function() treadle.signal("SIGUSR1") end)
  H.settle()
  t:abort()
  H.raises("cancelled", t.join, t)
  -- a new waiter still gets the next one
  roundtrip("SIGUSR1", ctx)
end)

T.case("timeout around a signal wait", {skip = SKIP}, function()
  H.same_table({treadle.timeout(0.02, treadle.signal, "SIGUSR2")}, {nil, "timeout"})
end)

T.case("signal: bad names raise", function()
  -- (the module also takes "USR1" without the SIG: not tried, it would wait)
  for _, bad in ipairs({"SIGFOO", "sigusr1", "", "SIGKILL", "SIGSTOP", "SIGSEGV", "SIG"}) do
    H.bad_arg(treadle.signal, bad)
  end
  H.bad_arg(treadle.signal)
  H.bad_arg(treadle.signal, {})
  local ok, err = pcall(H.within, 0.05, treadle.signal, 10)
  H.note("signal(10): " .. (ok and "waited" or tostring(err):sub(1, 60)))
end)

T.case("signal with enable_io = false", {run_opts = {enable_io = false}}, function()
  -- signals ride on the I/O driver: an error (or a wait), never a crash
  local ok, a, b = pcall(treadle.timeout, 0.05, treadle.signal, "SIGUSR1")
  H.note("signal without I/O: " .. tostring(ok) .. " " .. tostring(a) .. " " .. tostring(b))
end)

return T.main()
