-- The seed's exercise 2: how a multi_thread runtime spreads work over its
-- worker threads.
--
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/thread_distribution.lua [TASKS [WORKERS]]
--
-- In Lua, every worker thread has its own lua_State, and a task belongs to
-- the state that spawned it: tasks never move between workers (a Lua value
-- can't cross states). So spreading is explicit, as in OpenResty: every
-- worker runs this file's main (the file is its own worker module) and
-- spawns its share of TASKS (default 100) tasks. Each task does some CPU
-- work, yields, does more, and records its worker (treadle.worker()) and OS
-- thread (treadle.thread_id()) before and after the yield. The workers send
-- their tallies to worker 0 over the named channel "dist"; worker 0 prints
-- them. Because the states are separate, the workers' Lua code really runs
-- in parallel: "busy" adds up the wall time the tasks spent in their CPU
-- work and "overlap" is that over the whole run's wall time: how many
-- workers ran Lua at once. With more workers than cores the system
-- time-slices them, so overlap can pass the core count while each task's
-- busy time stretches.
local treadle = require "treadle"

local function settings()
  -- a worker state gets a copy of the script's `arg`
  return tonumber(arg[1] or "100"), tonumber(arg[2] or "4")
end

local function busy(n)
  local x = 1
  for _ = 1, n do x = (x * 1103515245 + 12345) % 4294967296 end
  return x
end

local function job()
  local w0, tid0 = treadle.worker(), treadle.thread_id()
  local t0 = treadle.now()
  busy(200000)
  local spent = treadle.now() - t0
  treadle.yield()
  t0 = treadle.now()
  busy(200000)
  spent = spent + treadle.now() - t0
  return w0, tid0, treadle.worker(), treadle.thread_id(), spent
end

local function main(worker)
  local tasks, workers = settings()
  local mine = tasks // workers + (worker < tasks % workers and 1 or 0)
  local dist = treadle.channel(workers, "dist")
  local start = treadle.channel(workers, "dist:start")
  local go = treadle.channel(workers, "dist:go")
  -- start together: worker 0 waits until everyone is there
  if worker == 0 then
    for _ = 2, workers do start:recv() end
    for _ = 2, workers do go:send(true) end
  else
    start:send(worker)
    go:recv()
  end
  local t0 = treadle.now()
  local handles = {}
  for i = 1, mine do handles[i] = treadle.spawn(job) end
  local r = {worker = worker, tasks = mine, moved = 0, busy = 0, tid = treadle.thread_id()}
  for i = 1, mine do
    local w0, tid0, w1, tid1, spent = handles[i]:join()
    if w0 ~= worker or w1 ~= worker or tid0 ~= r.tid or tid1 ~= r.tid then r.moved = r.moved + 1 end
    r.busy = r.busy + spent
  end
  r.secs = treadle.now() - t0
  if worker ~= 0 then
    dist:send(r)
    return
  end
  local all = {[0] = r}
  for _ = 2, workers do
    local x = dist:recv()
    all[x.worker] = x
  end
  local total, moved, busy_sum, wall = 0, 0, 0, 0
  print(string.format("%d tasks on %d workers:", tasks, workers))
  for w = 0, workers - 1 do
    local x = all[w]
    print(string.format("  worker %d (thread %d): %3d tasks, %.3f s busy in %.3f s, %d moved",
      w, x.tid, x.tasks, x.busy, x.secs, x.moved))
    total, moved, busy_sum = total + x.tasks, moved + x.moved, busy_sum + x.busy
    if x.secs > wall then wall = x.secs end
  end
  print(string.format("total %d tasks, %d moved between workers; %.3f s busy in %.3f s: overlap %.2f",
    total, moved, busy_sum, wall, busy_sum / wall))
  return total, moved
end

-- required as a module (by a worker): hand over main
if select("#", ...) >= 2 and tostring(select(2, ...)):match("%.lua$") then
  return main
end

-- This file's folder goes first on package.path, which each multi_thread
-- worker's state takes from this one: the workers find it by its plain
-- name, whatever the working directory and however it was started.
package.path = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path

local tasks, workers = settings()
local total, moved = treadle.run("thread_distribution", {flavor = "multi_thread", workers = workers})
os.exit((total == tasks and moved == 0) and 0 or 1)
