-- Shared-dict incr from several workers at once: every worker of a
-- multi_thread runtime calls d:incr("hits", 1, 0) N times on the same key
-- of one treadle.shared dict, as bench/shdict_nginx.conf.in's workers do
-- with ngx.shared.DICT:incr. The workers start together (a barrier in the
-- dict); the time is from the first worker's start to the last one's end
-- (treadle.now(), monotonic). Prints one JSON line: incr_per_sec = N x
-- workers / that time, and checks the count is exact.
--
--   LUA_CPATH="build-release/bindings/lua/?.so;;" lua5.4 bench/shdict_incr.lua [N=2000000] [WORKERS=2]
local treadle = require "treadle"

local MODULE = "shdict_incr" -- the name each worker state requires this file by
local CAP = 1 << 20

if ... == MODULE then -- a worker's state
  return function(w)
    local d = treadle.shared.dict("bench", CAP)
    local n, workers = d:get("n"), d:get("workers")
    d:incr("ready", 1, 0)
    while d:get("ready") < workers do treadle.yield() end
    local t0 = treadle.now()
    for _ = 1, n do d:incr("hits", 1, 0) end
    local t1 = treadle.now()
    d:set("t0:" .. w, t0)
    d:set("t1:" .. w, t1)
    d:incr("done", 1, 0)
    if w == 0 then -- worker 0's return ends the run: wait for the others
      while d:get("done") < workers do treadle.yield() end
    end
  end
end

local N = tonumber(arg[1] or "2000000")
local WORKERS = tonumber(arg[2] or "2")
local dir = arg[0]:match("^(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path

-- This state holds the dict while the workers run, and tells them N.
local d = treadle.shared.dict("bench", CAP)
d:set("n", N)
d:set("workers", WORKERS)
treadle.run(MODULE, {flavor = "multi_thread", workers = WORKERS})

local first, last = math.huge, -math.huge
for w = 0, WORKERS - 1 do
  first = math.min(first, d:get("t0:" .. w))
  last = math.max(last, d:get("t1:" .. w))
end
local hits = d:get("hits") or 0
if hits ~= N * WORKERS then
  io.stderr:write(string.format("hits %s, expected %d\n", tostring(hits), N * WORKERS))
  os.exit(1)
end
print(string.format('{"runtime":"treadle-lua-multi%d","bench":"shdict_incr","n":%d,"workers":%d,'
  .. '"secs":%.4f,"incr_per_sec":%.0f}', WORKERS, N, WORKERS, last - first,
  N * WORKERS / (last - first)))
