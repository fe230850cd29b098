-- Quick start: sleep and spawn with treadle, on both runtime flavors.
--
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/hello.lua
--
-- treadle.run(fn) makes a runtime, runs fn as its main task and returns
-- fn's results. Inside a task, treadle.sleep(s) suspends the task (not the
-- thread) and treadle.spawn(fn, ...) starts another task; task:join()
-- gives its results. A task is a Lua coroutine: the code reads top to
-- bottom, with no callbacks.
--
-- On multi_thread every worker thread has a lua_State of its own, so the
-- entry is a module name that each worker `require`s: this file is also
-- that module (required, it returns its main function), and every worker
-- runs main(worker_index) at the same time, on its own thread. The run ends
-- when worker 0's main returns, as a process ends with its main thread (the
-- other workers' tasks are cancelled then), so worker 0 first waits until
-- the others say they are done, over the named channel "hello:done".
local treadle = require "treadle"

local WORKERS = 2

local function greet(name, seconds)
  treadle.sleep(seconds)
  return string.format("hello, %s (after %.0f ms, on worker %d)", name, seconds * 1000, treadle.worker())
end

local function main(worker)
  local tag = string.format("[worker %d]", worker or treadle.worker())
  local t0 = treadle.now()
  print(tag .. " hello")
  treadle.sleep(0.010)
  print(string.format("%s ... world, %.0f ms later", tag, (treadle.now() - t0) * 1000))

  -- three tasks sleep at the same time: together they take ~30 ms, not 60
  t0 = treadle.now()
  local tasks = {}
  for _, who in ipairs({{"ada", 30}, {"grace", 10}, {"linus", 20}}) do
    tasks[#tasks + 1] = treadle.spawn(greet, who[1], who[2] / 1000)
  end
  for _, t in ipairs(tasks) do print(tag .. "   " .. t:join()) end
  local took = (treadle.now() - t0) * 1000
  print(string.format("%s three sleeps of 30, 10 and 20 ms took %.0f ms together", tag, took))
  if worker ~= nil then -- multi_thread
    local done = treadle.channel(WORKERS, "hello:done")
    if worker ~= 0 then
      done:send(worker)
    else
      for _ = 2, WORKERS do done:recv() end
    end
  end
  return took
end

-- required as a module (by a multi_thread worker): hand over main
if select("#", ...) >= 2 and tostring(select(2, ...)):match("%.lua$") then
  return main
end

-- This file's folder goes first on package.path, which each multi_thread
-- worker's state takes from this one: the workers find it by its plain
-- name, whatever the working directory and however it was started.
package.path = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path

print("== current_thread")
local took = treadle.run(main, {flavor = "current_thread"})
print("== multi_thread, 2 workers (each runs main in its own lua_State)")
local took0 = treadle.run("hello", {flavor = "multi_thread", workers = WORKERS})
print(string.format("== done: %.0f ms on current_thread, %.0f ms on worker 0", took, took0))
