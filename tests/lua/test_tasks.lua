-- treadle.spawn, task:join / abort / done, treadle.yield, treadle.worker,
-- treadle.thread_id: results, errors raised in tasks and joined, aborts,
-- pinning to the worker on multi_thread, bad arguments.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("tasks", ...)

T.case("join returns the results, nil holes included", function()
  local t = treadle.spawn(function() return 1, nil, "three", nil end)
  local r = H.pack(t:join())
  H.eq(r.n, 4, "number of results")
  H.eq(r[1], 1); H.eq(r[2], nil); H.eq(r[3], "three"); H.eq(r[4], nil)
  H.eq(select("#", treadle.spawn(function() end):join()), 0, "no results")
end)

T.case("spawn passes its arguments", function()
  local tbl = {}
  local t = treadle.spawn(function(a, b, c, d) return a + b, c, d end, 2, 3, "x", tbl)
  local s, c, d = t:join()
  H.eq(s, 5); H.eq(c, "x")
  H.ok(d == tbl, "a table argument is passed by reference within a state")
end)

T.case("a spawned task runs without being joined", function()
  local ran = false
  treadle.spawn(function() ran = true end)
  H.wait_until(function() return ran end, 2, "the unjoined task")
end)

T.case("tasks run concurrently: sleeps overlap", function()
  local t0 = treadle.now()
  local ts = {}
  for i = 1, 10 do ts[i] = treadle.spawn(function() treadle.sleep(0.05); return i end) end
  for i = 1, 10 do H.eq(ts[i]:join(), i) end
  local took = treadle.now() - t0
  H.ok(took < 0.4 * H.slow, string.format("ten 50 ms sleeps took %.3f s together", took))
end)

T.case("yield lets other ready tasks run", function()
  local log = {}
  local function worker(name)
    for i = 1, 3 do
      log[#log + 1] = name .. i
      treadle.yield()
    end
  end
  local a = treadle.spawn(worker, "a")
  local b = treadle.spawn(worker, "b")
  a:join(); b:join()
  H.eq(#log, 6)
  -- both made progress before either finished
  local pos = {}
  for i, v in ipairs(log) do pos[v] = i end
  H.ok(pos.b1 < pos.a3 and pos.a1 < pos.b3, "interleaved: " .. table.concat(log, " "))
end)

T.case("yield in the main task returns", function()
  for _ = 1, 1000 do treadle.yield() end
end)

T.case("an error raised in a task is raised by join", function()
  local t = treadle.spawn(function() error("boom in task") end)
  local err = H.raises("boom in task", t.join, t)
  H.has(tostring(err), "test_tasks.lua", "the error keeps its position")
  -- an error with level 0, a non-string error value
  local t2 = treadle.spawn(function() error("plain", 0) end)
  H.eq(select(2, pcall(t2.join, t2)):match("^[^\n]*"), "plain")
  local obj = {code = 7}
  local t3 = treadle.spawn(function() error(obj) end)
  local ok, e = pcall(t3.join, t3)
  H.eq(ok, false)
  H.ok(type(e) == "table" and e.code == 7, "a table error value comes through join: " .. H.repr(e))
end)

T.case("an error in a task nobody joins does not stop the others", function()
  treadle.spawn(function() error("unjoined failure") end)
  local t = treadle.spawn(function() treadle.sleep(0.01); return "still fine" end)
  H.settle()
  H.eq(t:join(), "still fine")
end)

-- Runs `script` (Lua source) in a child lua5.4; returns its stdout and
-- stderr together, and how many times `sub` occurs in them.
local function run_child(script, sub)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(script)
  f:close()
  local p = io.popen(string.format("%s timeout -k 2 30 %s %s 2>&1", H.child_env(),
                                   H.q(H.lua()), H.q(path)))
  local out = p:read("a")
  p:close()
  os.remove(path)
  local n = 0
  for _ in out:gmatch(sub:gsub("%p", "%%%0")) do n = n + 1 end
  return out, n
end

T.case("issue 13: an error in a task nobody joins is reported when it ends, with its traceback, once",
       {outside = true, flavors = {"current_thread"}}, function()
  local out, n = run_child([[
local treadle = require "treadle"
treadle.run(function()
  local function deep_in_the_task() error("boom nobody joins") end
  keep = treadle.spawn(function() deep_in_the_task() end) -- never collected here
  treadle.sleep(0.05)
  io.stderr:write("MARK the task has ended\n")
end)
keep = nil
collectgarbage(); collectgarbage()
io.stderr:write("MARK collected\n")
]], "boom nobody joins")
  H.eq(n, 1, "reported once; output:\n" .. out)
  local at = out:find("boom nobody joins", 1, true)
  local mark = out:find("MARK the task has ended", 1, true)
  H.ok(at and mark and at < mark, "reported when the task ended, not when collected:\n" .. out)
  local report = out:sub(at, mark - 1)
  H.has(report, "stack traceback:", "with the traceback")
  H.has(report, "deep_in_the_task", "the traceback shows where")
  -- a non-string error: reported as such, with the traceback
  out, n = run_child([[
local treadle = require "treadle"
treadle.run(function()
  treadle.spawn(function() error({code = 7}) end)
  treadle.sleep(0.05)
end)
]], "error object is a table value")
  H.eq(n, 1, "a table error reported once; output:\n" .. out)
  H.has(out, "stack traceback:")
end)

T.case("issue 13: an error a task already waits to join is not reported, join raises it with its traceback",
       {outside = true, flavors = {"current_thread"}}, function()
  local out, n = run_child([[
local treadle = require "treadle"
treadle.run(function()
  local t = treadle.spawn(function() treadle.sleep(0.01); error("boom for the joiner") end)
  local ok, err = pcall(t.join, t)
  io.stderr:write("JOINED ", tostring(ok), " ", err, "\nEND\n")
  -- nobody waited when it ended: reported then; a later join prints nothing
  -- more, nor does the collector
  local t2 = treadle.spawn(function() error("boom joined later") end)
  treadle.sleep(0.02)
  pcall(t2.join, t2)
  t2 = nil
  collectgarbage(); collectgarbage()
end)
]], "boom for the joiner")
  H.eq(n, 1, "only the joiner has it; output:\n" .. out)
  local joined = out:match("JOINED (.-)\nEND")
  H.ok(joined, "the joiner wrote it:\n" .. out)
  H.ok(joined:find("^false ") ~= nil, joined)
  H.has(joined, "stack traceback:", "join's error carries the traceback")
  local _, later = out:gsub("boom joined later", "")
  H.eq(later, 1, "a task that ended unjoined: reported once; output:\n" .. out)
end)

T.case("issue 13: join raises string errors with the task's traceback, other values as they are", function()
  local function where_it_failed() error("failed here") end
  local t = treadle.spawn(function() where_it_failed() end)
  local err = H.raises("failed here", t.join, t)
  H.has(err, "\nstack traceback:\n", "the traceback follows the message")
  H.has(err, "where_it_failed")
  local obj = setmetatable({}, {__tostring = function() return "an object" end})
  local t2 = treadle.spawn(function() error(obj) end)
  local ok, e = pcall(t2.join, t2)
  H.eq(ok, false)
  H.ok(rawequal(e, obj), "the same object comes through join")
  -- treadle.timeout raises fn's error the same way
  local ok3, e3 = pcall(treadle.timeout, 5, where_it_failed)
  H.eq(ok3, false)
  H.has(e3, "stack traceback:")
end)

T.case("errors from deep inside a task", function()
  local function rec(n) if n == 0 then error("deep") end return rec(n - 1) + 1 end
  local t = treadle.spawn(rec, 150)
  H.raises("deep", t.join, t)
  local t2 = treadle.spawn(function() local x = nil; return x.field end)
  H.raises("attempt to index", t2.join, t2)
end)

T.case("join twice", function()
  local t = treadle.spawn(function() return "once" end)
  H.eq(t:join(), "once")
  -- the spec does not say: the second join returns the results again or raises
  local ok, v = pcall(t.join, t)
  H.note("second join: " .. (ok and ("returned " .. tostring(v)) or ("raised " .. tostring(v))))
end)

T.case("abort a sleeping task: join raises cancelled", function()
  local after = false
  local t = treadle.spawn(function() treadle.sleep(10); after = true end)
  H.settle()
  H.eq(t:done(), false, "done() while it sleeps")
  t:abort()
  H.raises("cancelled", t.join, t)
  H.eq(t:done(), true, "done() after abort and join")
  treadle.sleep(0.02)
  H.eq(after, false, "the aborted task never went on")
end)

T.case("abort before the task ever ran", function()
  local ran = false
  local t = treadle.spawn(function() ran = true end)
  t:abort()
  H.raises("cancelled", t.join, t)
  H.eq(ran, false, "an aborted, never-started task does not run")
end)

T.case("abort a finished task, abort twice", function()
  local t = treadle.spawn(function() return "result" end)
  H.wait_until(function() return t:done() end, 2, "the task to finish")
  t:abort()
  t:abort()
  -- as Tokio: aborting a finished task changes nothing (cancelled would also
  -- be defensible; either way no crash)
  local ok, v = pcall(t.join, t)
  if not ok then H.has(tostring(v), "cancelled") end
  H.note("join after abort of a finished task: " .. (ok and ("returned " .. tostring(v)) or "raised cancelled"))
end)

T.case("abort a task that waits in join", function()
  local child = treadle.spawn(function() treadle.sleep(0.05); return "child" end)
  local waiter = treadle.spawn(function() return child:join() end)
  H.settle()
  waiter:abort()
  H.raises("cancelled", waiter.join, waiter)
  -- the child is not affected
  H.eq(child:join(), "child")
end)

T.case("a task aborts itself", function()
  local t
  t = treadle.spawn(function()
    treadle.yield()
    t:abort()
    treadle.yield()      -- the abort takes effect at the next wait at the latest
    treadle.sleep(0.01)
    return "not aborted"
  end)
  local ok, v = pcall(t.join, t)
  if ok then H.note("self-abort did not stop the task: " .. tostring(v))
  else H.has(tostring(v), "cancelled") end
end)

T.case("done() goes from false to true", function()
  local ch = treadle.channel(1)
  local t = treadle.spawn(function() return ch:recv() end)
  H.settle()
  H.eq(t:done(), false)
  ch:send("go")
  H.wait_until(function() return t:done() end, 2, "done()")
  H.eq(t:join(), "go")
end)

T.case("tasks spawn tasks, 10,000 in all", function()
  local count = 0
  local function leaf() count = count + 1 end
  local parents = {}
  for i = 1, 100 do
    parents[i] = treadle.spawn(function()
      local kids = {}
      for j = 1, 99 do kids[j] = treadle.spawn(leaf) end
      for j = 1, 99 do kids[j]:join() end
      count = count + 1
    end)
  end
  for i = 1, 100 do parents[i]:join() end
  H.eq(count, 10000)
end)

T.case("a plain coroutine inside a task", function()
  -- Lua coroutines keep working inside tasks
  local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1); return b * 2 end)
  H.eq(co(1), 2)
  H.eq(co(5), 10)
  -- a treadle wait inside a nested coroutine: an error or it works, never a crash
  local ok, err = pcall(function()
    local c = coroutine.wrap(function() treadle.sleep(0.001); return "slept in a coroutine" end)
    return c()
  end)
  H.note("sleep in a nested coroutine: " .. (ok and tostring(err) or ("error: " .. tostring(err):sub(1, 80))))
  -- the task still works afterwards
  treadle.sleep(0.001)
  local t = treadle.spawn(function() return 1 end)
  H.eq(t:join(), 1)
end)

T.case("coroutine.yield straight from a task", function()
  -- not an API call; treated as a yield (or an error), never a crash
  local t = treadle.spawn(function() coroutine.yield(); return "after" end)
  local ok, v = pcall(t.join, t)
  H.note("coroutine.yield in a task: " .. (ok and tostring(v) or ("error: " .. tostring(v):sub(1, 80))))
end)

T.case("worker() and thread_id() inside tasks", {on = "all"}, function(ctx)
  local w, tid = treadle.worker(), treadle.thread_id()
  H.eq(w, ctx.worker, "worker() in main")
  if ctx.flavor == "current_thread" then
    H.eq(tid, ctx.pid, "current_thread runs on the main thread")
  end
  local t = treadle.spawn(function() return treadle.worker(), treadle.thread_id() end)
  local w2, tid2 = t:join()
  H.eq(w2, w, "a spawned task stays on its worker")
  H.eq(tid2, tid, "and its thread")
end)

T.case("tasks never move between workers", {on = "all", workers = 2}, function(ctx)
  -- every worker spawns tasks that yield and sleep many times; each checks
  -- its worker and thread at every step
  local w, tid = treadle.worker(), treadle.thread_id()
  local ts = {}
  for i = 1, 200 do
    ts[i] = treadle.spawn(function()
      for k = 1, 20 do
        if k % 5 == 0 then treadle.sleep(0.0005) else treadle.yield() end
        if treadle.worker() ~= w or treadle.thread_id() ~= tid then
          error(string.format("task moved: worker %d -> %d, thread %d -> %d",
            w, treadle.worker(), tid, treadle.thread_id()))
        end
      end
      return true
    end)
  end
  for i = 1, 200 do ts[i]:join() end
end)

T.case("multi_thread: the workers run on distinct threads", {flavors = {"multi_thread"}, on = "all", workers = 2}, function(ctx)
  local ch = treadle.channel(4, "tids")
  if ctx.worker == 1 then
    ch:send(treadle.thread_id())
  else
    local other = H.within(5, ch.recv, ch)
    H.ok(other ~= treadle.thread_id(), "worker 0 and 1 share a thread")
  end
end)

T.case("spawn, join, abort, done: bad arguments", function()
  H.bad_arg(treadle.spawn)
  H.bad_arg(treadle.spawn, 42)
  H.bad_arg(treadle.spawn, "not a function")
  H.bad_arg(treadle.spawn, {})
  local t = treadle.spawn(function() return 1 end)
  H.bad_arg(t.join, 42)
  H.bad_arg(t.join, {})
  H.bad_arg(t.abort, "x")
  H.bad_arg(t.done, nil)
  local ch = treadle.channel(1)
  H.bad_arg(t.join, ch)          -- another handle type
  H.eq(t:join(), 1, "the task is fine after the bad calls")
end)

T.case("outside a runtime: spawn, sleep, yield raise", {outside = true, flavors = {"current_thread"}}, function()
  H.bad_arg(treadle.spawn, function() end)
  H.bad_arg(treadle.sleep, 0.001)
  H.bad_arg(treadle.yield)
  H.bad_arg(treadle.timeout, 1, function() end)
  H.bad_arg(treadle.signal, "SIGUSR1")
  -- channel operations need a task to wait in: recv on an empty channel
  -- outside a task must raise (not block the process)
  local ok, ch = pcall(treadle.channel, 1)
  if ok then H.bad_arg(ch.recv, ch) end
  -- worker() outside a runtime: an error or a value, no crash
  local okw, w = pcall(treadle.worker)
  H.note("worker() outside a runtime: " .. tostring(okw) .. " " .. tostring(w))
  local okn, now = pcall(treadle.now)
  H.note("now() outside a runtime: " .. tostring(okn) .. " " .. tostring(now))
end)

T.case("a task handle outlives its runtime", {outside = true, flavors = {"current_thread"}}, function()
  local t = treadle.run(function()
    return treadle.spawn(function() treadle.sleep(math.huge) end)
  end)
  -- the runtime is gone; the handle must not crash
  local ok = pcall(t.done, t)
  local ok2 = pcall(t.abort, t)
  local ok3, err = pcall(t.join, t)
  H.note(string.format("done %s abort %s join %s %s", ok, ok2, ok3, tostring(err):sub(1, 60)))
  t = nil
  collectgarbage(); collectgarbage()
end)

return T.main()
