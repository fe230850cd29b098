-- treadle's Lua module on ../shared/bench/micro/lua/micro_lua.lua's
-- microbenchmarks: the same work and the same JSON fields, so that
-- bench/lua_compare.py can set them beside cqueues. current_thread flavor.
--
--   LUA_CPATH="build-release/bindings/lua/?.so;;" lua5.4 bench/lua_micro.lua [--multi] BENCH [N]
--
--   --multi: on multi_thread with 2 workers (as treadle-lua-multi2): every
--   worker requires this file as the module "lua_micro" in its own state,
--   and worker 0 runs the benchmark (Lua tasks stay on their worker).
--
--   spawn_many [N=200000]  the root task spawns N tasks that each decrement a
--                          shared counter; the last one signals the root
--                          (over a treadle.channel(1)); tasks_per_sec = N /
--                          time from the first spawn to the signal
--   ping_pong [N=100000]   task A sends a number on channel 1, task B sends it
--                          back + 1 on channel 2, N times; both are
--                          treadle.channel(1); round_trips_per_sec
--   timers [N=100000]      N tasks, each sleeps a pseudo-random 0-100 ms (µs
--                          granularity, the peers' xorshift64 sequence);
--                          wall_ms, overshoot_p50/p99/max_us, all_started_ms,
--                          last_wake_late_us
--   at_timers [N=100000]   timers with callback timers: N treadle.at(d, fn)
--                          (no task each; micro_lua.lua's luv timers do the
--                          same with uv.new_timer); the same fields, and
--                          timers_per_sec = N / wall
--   yield_many [Y=1000]    1000 tasks each treadle.yield() Y times; yields_per_sec
--
-- All work runs in a task (treadle.run's main task, or worker 0's main).
-- The clock is treadle.now() (monotonic). Prints one JSON line.
local treadle = require "treadle"

local MODULE = "lua_micro" -- the name a multi_thread worker requires this file by
local as_module = ... == MODULE
local args = {table.unpack(arg)}
local MULTI = args[1] == "--multi"
if MULTI then table.remove(args, 1) end
local BENCH = args[1]
local N = args[2] and tonumber(args[2]) or nil
if not BENCH then error("usage: lua_micro.lua [--multi] spawn_many|ping_pong|timers|yield_many [N]") end

local function json(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if a == "runtime" then return true elseif b == "runtime" then return false end
    if a == "bench" then return true elseif b == "bench" then return false end
    return a < b
  end)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "string" then v = '"' .. v .. '"'
    elseif math.type(v) == "float" then v = string.format("%.6g", v)
      if v:find("e") then v = string.format("%.1f", t[k]) end
    else v = tostring(v) end
    parts[#parts + 1] = '"' .. k .. '":' .. v
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function pct(sorted, p)
  local idx = math.floor(p / 100 * (#sorted - 1) + 0.5) + 1
  if idx > #sorted then idx = #sorted end
  return sorted[idx]
end

-- the peers' xorshift64 durations, 0..100000 µs
local function durations(n)
  local x = 0x9E3779B97F4A7C15
  local d = {}
  for i = 1, n do
    x = x ~ (x << 13)
    x = x ~ (x >> 7)
    x = x ~ (x << 17)
    local q = ((x >> 1) // 100001) << 1
    local r = x - q * 100001
    while math.ult(100000, r) do r = r - 100001 end
    d[i] = r
  end
  return d
end

local now, spawn = treadle.now, treadle.spawn
local out = {runtime = MULTI and "treadle-lua-multi2" or "treadle-lua-current",
             bench = BENCH, lua = _VERSION,
             flavor = MULTI and "multi_thread" or "current_thread"}

-- Runs the benchmark in the calling task; returns out.
local function body()
if BENCH == "spawn_many" then
  local n = N or 200000
  do
    local left = n
    local done = treadle.channel(1)
    local function task()
      left = left - 1
      if left == 0 then done:send(true) end
    end
    local t0 = now()
    for _ = 1, n do spawn(task) end
    done:recv()
    local s = now() - t0
    out.n, out.secs, out.tasks_per_sec = n, s, math.floor(n / s + 0.5)
  end
elseif BENCH == "yield_many" then
  local tasks, yields = 1000, N or 1000
  do
    local left, done = tasks, treadle.channel(1)
    local yield = treadle.yield
    local function task()
      for _ = 1, yields do yield() end
      left = left - 1
      if left == 0 then done:send(true) end
    end
    local t0 = now()
    for _ = 1, tasks do spawn(task) end
    done:recv()
    local s = now() - t0
    out.tasks, out.yields_per_task, out.secs = tasks, yields, s
    out.yields_per_sec = math.floor(tasks * yields / s + 0.5)
  end
elseif BENCH == "ping_pong" then
  local n = N or 100000
  do
    local c1, c2 = treadle.channel(1), treadle.channel(1)
    local t0 = now()
    spawn(function()
      while true do
        local v = c1:recv()
        if v < 0 then break end
        c2:send(v + 1)
      end
    end)
    local a = spawn(function()
      local v = 0
      for _ = 1, n do c1:send(v); v = c2:recv() end
      c1:send(-1)
      return v
    end)
    local result = a:join()
    local s = now() - t0
    assert(result == n)
    out.round_trips, out.secs = n, s
    out.round_trips_per_sec = math.floor(n / s + 0.5)
    out.ns_per_round_trip = s * 1e9 / n
  end
elseif BENCH == "timers" then
  local n = N or 100000
  local durs = durations(n)
  local maxd = 0
  for i = 1, n do if durs[i] > maxd then maxd = durs[i] end end
  local over, starts, wakes = {}, {}, {}
  local t0
  do
    local left, done = n, treadle.channel(1)
    local sleep = treadle.sleep
    t0 = now()
    for i = 1, n do
      spawn(function()
        local d = durs[i] / 1e6
        local st = now()
        sleep(d)
        local w = now()
        local o = (w - (st + d)) * 1e6
        over[i], starts[i], wakes[i] = (o > 0 and o or 0.0), st, w
        left = left - 1
        if left == 0 then done:send(true) end
      end)
    end
    done:recv()
  end
  local tend = now()
  local last, lastst = t0, t0
  for i = 1, n do
    if wakes[i] > last then last = wakes[i] end
    if starts[i] > lastst then lastst = starts[i] end
  end
  table.sort(over)
  out.n = n
  out.wall_ms = (tend - t0) * 1e3
  out.all_started_ms = (lastst - t0) * 1e3
  out.overshoot_p50_us = pct(over, 50)
  out.overshoot_p99_us = pct(over, 99)
  out.overshoot_max_us = over[#over]
  out.last_wake_late_us = (last - t0) * 1e6 - maxd
elseif BENCH == "at_timers" then
  local n = N or 100000
  local durs = durations(n)
  local maxd = 0
  for i = 1, n do if durs[i] > maxd then maxd = durs[i] end end
  local over, starts, wakes = {}, {}, {}
  local left, done = n, treadle.channel(1)
  local at = treadle.at
  local t0 = now()
  for i = 1, n do
    local d = durs[i] / 1e6
    local st = now()
    at(d, function()
      local w = now()
      local o = (w - (st + d)) * 1e6
      over[i], starts[i], wakes[i] = (o > 0 and o or 0.0), st, w
      left = left - 1
      if left == 0 then done:send(true) end
    end)
  end
  done:recv()
  local tend = now()
  local last, lastst = t0, t0
  for i = 1, n do
    if wakes[i] > last then last = wakes[i] end
    if starts[i] > lastst then lastst = starts[i] end
  end
  table.sort(over)
  out.n = n
  out.wall_ms = (tend - t0) * 1e3
  out.timers_per_sec = n / (tend - t0)
  out.all_started_ms = (lastst - t0) * 1e3
  out.overshoot_p50_us = pct(over, 50)
  out.overshoot_p99_us = pct(over, 99)
  out.overshoot_max_us = over[#over]
  out.last_wake_late_us = (last - t0) * 1e6 - maxd
else
  error("bench " .. BENCH .. " not available (spawn_many, ping_pong, timers, at_timers, yield_many)")
end
return out
end

if as_module then -- a multi_thread worker's state
  return function(worker) if worker == 0 then return body() end end
end
local ok, result
if MULTI then
  local dir = arg[0]:match("^(.*/)") or "./"
  package.path = dir .. "?.lua;" .. package.path
  ok, result = pcall(treadle.run, MODULE, {flavor = "multi_thread", workers = 2})
else
  ok, result = pcall(treadle.run, body, {flavor = "current_thread"})
end
if not ok then
  io.stderr:write(tostring(result), "\n")
  os.exit(2)
end
print(json(result))
