-- The seed's exercise 4 in Lua terms: starting work on another worker.
--
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/remote_spawn.lua [WORKERS [JOBS]]
--
-- Lua values can't move between worker states, so a task can't be handed to
-- another worker as a closure. What can cross is a plain value over a
-- named channel (copied: nil, booleans, numbers, strings, tables of those).
-- So "spawning remotely" is sending a job description to the worker's own
-- spawner: every worker (this file is its own worker module) runs a loop on
-- its channel "jobs:<index>" that spawns a local task per job; the task
-- looks the job's function up by name in this file's JOBS table (the same
-- code is loaded in every state), runs it, and sends the result, with the
-- worker and thread it ran on, back over the named channel "results".
-- Worker 0 plays the client: it sends JOBS jobs (default 12) round-robin to
-- every worker, itself included, collects the results, checks that each ran
-- where it was sent, and returns. That ends the run, as a process ends when
-- its main thread returns: the spawners, which would wait for jobs forever,
-- are cancelled.
local treadle = require "treadle"

local JOBS = {
  fib = function(n)
    local a, b = 0, 1
    for _ = 1, n do a, b = b, a + b end
    return a
  end,
  sum = function(n)
    local s = 0
    for i = 1, n do s = s + i end
    return s
  end,
  nap = function(ms)
    treadle.sleep(ms / 1000)
    return "slept " .. ms .. " ms"
  end,
}

local function settings()
  -- a worker state gets a copy of the script's `arg`
  return tonumber(arg[1] or "3"), tonumber(arg[2] or "12")
end

-- a worker's spawner: one local task per job that arrives on jobs:<worker>
local function spawner(worker, results)
  local jobs = treadle.channel(16, "jobs:" .. worker)
  while true do
    local job = jobs:recv()
    treadle.spawn(function()
      local value = JOBS[job.fn](job.arg)
      results:send({id = job.id, value = value, worker = treadle.worker(),
                    thread = treadle.thread_id(), sent_to = job.to})
    end)
  end
end

local function main(worker)
  local workers, njobs = settings()
  local results = treadle.channel(64, "results")
  if worker ~= 0 then
    return spawner(worker, results) -- until worker 0 returns
  end
  treadle.spawn(spawner, worker, results)
  local names = {"fib", "sum", "nap"}
  -- one handle per worker's channel, made once instead of a lookup per
  -- send; a handle per send would lose nothing either: jobs queued on a
  -- named channel keep it, findable by name, until the worker's spawner
  -- takes them, even after every handle that sent them was collected
  local jobch = {}
  for w = 0, workers - 1 do jobch[w] = treadle.channel(16, "jobs:" .. w) end
  for i = 1, njobs do
    local to = (i - 1) % workers
    local fn = names[(i - 1) % #names + 1]
    local job = {id = i, fn = fn, arg = fn == "nap" and 5 * i or 10 * i, to = to}
    jobch[to]:send(job)                               -- the named channel of worker `to`
    print(string.format("worker 0 sent job %2d (%s %d) to worker %d", i, fn, job.arg, to))
  end
  local ok, threads = true, {}
  for _ = 1, njobs do
    local r = results:recv()
    threads[r.worker] = r.thread
    local where = r.worker == r.sent_to and "" or "   <-- ran elsewhere!"
    ok = ok and where == ""
    print(string.format("  job %2d ran on worker %d (thread %d): %s%s", r.id, r.worker, r.thread,
      tostring(r.value), where))
  end
  local distinct, seen = 0, {}
  for _, tid in pairs(threads) do if not seen[tid] then seen[tid] = true; distinct = distinct + 1 end end
  print(string.format("%d jobs on %d workers, %d distinct threads: %s", njobs, workers, distinct,
    ok and "every job ran where it was sent" or "MISMATCH"))
  return ok and distinct == math.min(workers, njobs)
end

if select("#", ...) >= 2 and tostring(select(2, ...)):match("%.lua$") then
  return main
end

-- This file's folder goes first on package.path, which each multi_thread
-- worker's state takes from this one: the workers find it by its plain
-- name, whatever the working directory and however it was started.
package.path = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path

local workers = settings()
local ok = treadle.run("remote_spawn", {flavor = "multi_thread", workers = workers})
os.exit(ok and 0 or 1)
