-- treadle.run and treadle.runtime: flavors, options, results, errors, worker
-- states on multi_thread, bad arguments.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("run", ...)
local CT = {"current_thread"}
local MT = {"multi_thread"}

T.case("run returns the main function's results", {outside = true, flavors = CT}, function()
  local r = H.pack(treadle.run(function() return 1, nil, "x", 2.5, {a = 1} end,
                               {flavor = "current_thread"}))
  H.eq(r.n, 5, "number of results")
  H.eq(r[1], 1); H.eq(r[2], nil); H.eq(r[3], "x"); H.eq(r[4], 2.5)
  H.eq(r[5].a, 1, "a table result")
  H.eq(select("#", treadle.run(function() end)), 0, "no results")
end)

T.case("current_thread is the default and runs in the caller's state and thread",
  {outside = true, flavors = CT}, function(ctx)
  local seen = {}
  local upvalue = 0
  treadle.run(function()
    upvalue = upvalue + 1
    seen.tid = treadle.thread_id()
    seen.worker = treadle.worker()
    _G.__treadle_test_global = "set in the task"
  end)
  H.eq(upvalue, 1, "the main function ran in this state")
  H.eq(_G.__treadle_test_global, "set in the task", "same globals")
  H.eq(seen.worker, 0, "worker() on current_thread")
  -- the main thread's id is the process id
  H.eq(seen.tid, ctx.pid, "thread_id() on current_thread is the caller's (main) thread")
end)

T.case("run with opts table and the options set to true", {outside = true, flavors = CT}, function()
  local v = treadle.run(function() treadle.sleep(0.001); return "ok" end,
    {flavor = "current_thread", enable_io = true, enable_time = true})
  H.eq(v, "ok")
end)

T.case("the main function's error is raised by run", {outside = true, flavors = CT}, function()
  H.raises("boom in main", treadle.run, function() error("boom in main") end)
  -- after an error the next run works
  H.eq(treadle.run(function() return 7 end), 7, "run after a failed run")
end)

T.case("run may be called again, many times", {outside = true, flavors = CT}, function()
  for i = 1, 200 do
    H.eq(treadle.run(function() treadle.yield(); return i end), i)
  end
end)

T.case("run inside a task raises (no nested runtimes on one thread)", {flavors = CT}, function()
  -- not in the spec in so many words: it must be an error, not a crash or a hang
  local ok, err = pcall(treadle.run, function() return 1 end)
  if ok then H.note("nested treadle.run inside a task was allowed")
  else H.eq(type(err), "string", "error message") end
end)

-- multi_thread: the entry is a module name --------------------------------

T.case("multi_thread run returns worker 0's results", {outside = true, flavors = MT, workers = 3}, function()
  local r = H.pack(treadle.run(H.module_name("mod_results"), {flavor = "multi_thread", workers = 3}))
  H.eq(r[1], 0, "worker index")
  H.eq(r[2], "worker0")
  H.eq(r[3], nil)
  H.eq(r[4], 2.5)
  H.eq(type(r[5]), "table", "a table copied back")
  H.eq(r[5].k, "v")
  H.same_table(r[5].list, {1, 2, 3})
  H.eq(r[6], 0, "treadle.worker() in worker 0's main")
end)

T.case("every worker runs main(i) in its own state and thread", {outside = true, flavors = MT, workers = 3}, function(ctx)
  local ids, threads = treadle.run(H.module_name("mod_ids"), {flavor = "multi_thread", workers = 3})
  H.eq(type(ids), "string", "report")
  local tids, n = {}, 0
  for w, wk, tid in ids:gmatch("(%d+):(%d+):(%d+)") do
    n = n + 1
    H.eq(tonumber(w), n - 1, "worker indexes 0..2 (" .. ids .. ")")
    H.eq(tonumber(wk), tonumber(w), "treadle.worker() == main's argument")
    H.ok(not tids[tid], "distinct thread ids: " .. ids)
    tids[tid] = true
  end
  H.eq(n, 3, "three workers reported (" .. ids .. ")")
  H.note("ids " .. ids .. "; " .. tostring(threads) .. " threads; pid " .. ctx.pid)
end)

T.case("multi_thread run: worker 0's error is raised", {outside = true, flavors = MT}, function()
  H.raises("boom from worker 0", treadle.run, H.module_name("mod_fail"),
           {flavor = "multi_thread", workers = 2})
end)

T.case("multi_thread run: another worker's error", {outside = true, flavors = MT}, function()
  -- worker 0 returns and worker 1 raises at about the same time: the first
  -- of the two decides (issue 13's rule); no crash, no hang
  local ok, err = pcall(treadle.run, H.module_name("mod_fail1"), {flavor = "multi_thread", workers = 2})
  H.note(ok and ("returned " .. tostring(err)) or ("raised " .. tostring(err):sub(1, 80)))
end)

T.case("issue 13: when worker 0's main returns, the other workers' tasks are cancelled and run returns",
       {outside = true, flavors = MT, timeout = 20}, function()
  -- held here, so that what the workers' __close send outlives their states
  local closed = treadle.channel(8, "lifecycle:closed")
  local t0 = treadle.now()
  local r = H.pack(treadle.run(H.module_name("mod_lifecycle"), {flavor = "multi_thread", workers = 3}))
  local took = treadle.now() - t0
  H.eq(r.n, 1, "worker 0's results")
  H.eq(r[1], "worker 0 done")
  H.ok(took < 5 * H.slow, string.format("run returned promptly (%.3f s)", took))
  local got = {}
  for i = 1, 4 do
    local ok, what = pcall(closed.recv, closed) -- outside a task: must be there
    H.ok(ok, "to-be-closed variable " .. i .. " of 4 was closed: " .. tostring(what))
    got[i] = what
  end
  table.sort(got)
  H.same_table(got, {"1 main", "1 server", "2 main", "2 server"}, "closed")
end)

T.case("issue 13: an error in another worker's main ends the run at once and is raised",
       {outside = true, flavors = MT, timeout = 20}, function()
  local closed = treadle.channel(4, "fail1:closed")
  local err = H.raises("boom from worker 1", treadle.run, H.module_name("mod_fail1_waits"),
                       {flavor = "multi_thread", workers = 2})
  H.has(err, "stack traceback:", "with worker 1's traceback")
  H.eq(closed:recv(), "worker 0's main closed", "worker 0's main was cancelled, its <close> closed")
end)

T.case("multi_thread run: a module that is missing or returns no function", {outside = true, flavors = MT}, function()
  local err = H.raises(nil, treadle.run, "no_such_module_xyz", {flavor = "multi_thread", workers = 2})
  H.has(tostring(err), "no_such_module_xyz", "the error names the module")
  H.raises(nil, treadle.run, H.module_name("mod_notfunc"), {flavor = "multi_thread", workers = 2})
  -- and a later run still works
  H.eq(treadle.run(H.module_name("mod_results"), {flavor = "multi_thread", workers = 2}), 0)
end)

T.case("worker states get a copy of the script's arg", {outside = true, flavors = MT}, function()
  local a0, n, a1 = treadle.run(H.module_name("mod_arg"), {flavor = "multi_thread", workers = 2})
  H.eq(a0, arg[0], "arg[0]")
  H.eq(n, #arg, "#arg")
  H.eq(a1, arg[1], "arg[1]")
end)

T.case("multi_thread run with a function entry", {outside = true, flavors = MT}, function()
  -- the entry must be a module name on multi_thread: a function is a clear
  -- error (or, if the module chooses to allow it, it runs): never a crash
  local ok, err = pcall(treadle.run, function() return "fn" end, {flavor = "multi_thread", workers = 2})
  if ok then H.note("a function entry was accepted on multi_thread: " .. tostring(err))
  else H.eq(type(err), "string", "message"); H.note("raised: " .. err:sub(1, 100)) end
end)

T.case("multi_thread with 1 and 4 workers", {outside = true, flavors = MT}, function()
  for _, n in ipairs({1, 4}) do
    H.eq(treadle.run(H.module_name("mod_results"), {flavor = "multi_thread", workers = n}), 0,
         n .. " workers")
  end
end)

-- bad arguments ------------------------------------------------------------

T.case("run: bad arguments raise clear errors", {outside = true, flavors = CT}, function()
  local f = function() end
  H.bad_arg(treadle.run)
  H.bad_arg(treadle.run, 42)
  H.bad_arg(treadle.run, {})
  H.bad_arg(treadle.run, f, "current_thread")            -- opts not a table
  H.bad_arg(treadle.run, f, {flavor = "bogus"})
  H.bad_arg(treadle.run, f, {flavor = 42})
  H.bad_arg(treadle.run, "mod_results", {flavor = "multi_thread", workers = 0})
  H.bad_arg(treadle.run, "mod_results", {flavor = "multi_thread", workers = -1})
  H.bad_arg(treadle.run, "mod_results", {flavor = "multi_thread", workers = 1.5})
  H.bad_arg(treadle.run, "mod_results", {flavor = "multi_thread", workers = "many"})
  H.bad_arg(treadle.run, "mod_results", {flavor = "multi_thread", workers = 1e9})
  H.bad_arg(treadle.runtime, {flavor = "bogus"})
  H.bad_arg(treadle.runtime, "x")
  -- a run still works after all that
  H.eq(treadle.run(function() return "fine" end), "fine")
end)

-- treadle.runtime ------------------------------------------------------------

T.case("runtime: block_on with arguments, twice", {outside = true, flavors = CT}, function()
  local rt = treadle.runtime({flavor = "current_thread"})
  H.eq(select("#", rt:block_on(function(...) return ... end, 1, nil, 3)), 3, "arguments passed on")
  local a, b = rt:block_on(function(x, y) treadle.sleep(0.001); return y, x end, "x", "y")
  H.eq(a, "y"); H.eq(b, "x")
  H.eq(rt:block_on(function() return treadle.worker() end), 0)
  rt:shutdown()
end)

T.case("runtime: rt:spawn runs while block_on runs", {outside = true, flavors = CT}, function()
  local rt = treadle.runtime({flavor = "current_thread"})
  local log = {}
  local t = rt:spawn(function(x) log[#log + 1] = "spawned " .. x; return x * 2 end, 21)
  H.eq(#log, 0, "a spawned task does not run before block_on")
  local v = rt:block_on(function()
    H.wait_until(function() return #log == 1 end, 2, "the task spawned by rt:spawn")
    if type(t) == "userdata" then return t:join() end
    return 42
  end)
  H.eq(log[1], "spawned 21")
  H.eq(v, 42, "the task's result")
  rt:shutdown(1)
end)

T.case("runtime: errors in block_on are raised, the runtime goes on", {outside = true, flavors = CT}, function()
  local rt = treadle.runtime({flavor = "current_thread"})
  H.raises("oops", rt.block_on, rt, function() error("oops") end)
  H.eq(rt:block_on(function() return 5 end), 5)
  rt:shutdown()
end)

T.case("runtime: shutdown(timeout) with a task that never ends", {outside = true}, function(ctx)
  local rt = treadle.runtime({flavor = ctx.flavor, workers = 2})
  if ctx.flavor == "current_thread" then
    rt:spawn(function() treadle.sleep(math.huge) end)
    rt:block_on(function() treadle.sleep(0.01) end)
  else
    H.eq(rt:block_on(H.module_name("mod_results")), 0, "block_on(module) on multi_thread")
  end
  rt:shutdown(0.1)
  -- after shutdown: a clear error, no crash
  local ok, err = pcall(rt.block_on, rt, function() return 1 end)
  if ok then H.note("block_on after shutdown returned " .. tostring(err))
  else H.eq(type(err), "string", "block_on after shutdown raises a message") end
  rt:shutdown()   -- twice is harmless
end)

T.case("runtime: shutdown() with nothing left waits for nothing", {outside = true}, function(ctx)
  local rt = treadle.runtime({flavor = ctx.flavor, workers = 2})
  rt:shutdown()
  local rt2 = treadle.runtime({flavor = ctx.flavor, workers = 2})
  rt2:shutdown(0)
end)

T.case("runtime: spawned but never run, then shut down or dropped", {outside = true, flavors = CT}, function()
  local ran = false
  local rt = treadle.runtime({flavor = "current_thread"})
  rt:spawn(function() ran = true end)
  rt:shutdown(0.1)
  H.eq(ran, false, "the task never ran")
  local rt2 = treadle.runtime({flavor = "current_thread"})
  rt2:spawn(function() ran = true end)
  rt2 = nil
  collectgarbage(); collectgarbage()
end)

T.case("runtime: rt:spawn on multi_thread is a clear error", {outside = true, flavors = MT}, function()
  local rt = treadle.runtime({flavor = "multi_thread", workers = 2})
  H.bad_arg(rt.spawn, rt, function() end)
  rt:shutdown()
end)

T.case("runtime: bad arguments", {outside = true, flavors = CT}, function()
  local rt = treadle.runtime({flavor = "current_thread"})
  H.bad_arg(rt.block_on, rt, 42)
  H.bad_arg(rt.block_on, rt)
  H.bad_arg(rt.spawn, rt, "not a function")
  H.bad_arg(rt.shutdown, rt, "soon")
  H.bad_arg(rt.shutdown, rt, 0 / 0)
  H.bad_arg(rt.block_on, {}, function() end)     -- not a runtime
  rt:shutdown()
end)

T.case("options enable_time / enable_io can be false", {run_opts = {enable_io = false, enable_time = false}}, function()
  -- a runtime with no drivers still runs tasks, yields and channels
  local ch = treadle.channel(1)
  local t = treadle.spawn(function() ch:send("hi"); return "done" end)
  treadle.yield()
  H.eq(ch:recv(), "hi")
  H.eq(t:join(), "done")
end)

return T.main()
