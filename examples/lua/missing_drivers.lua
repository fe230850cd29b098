-- The seed's exercise 3: using a driver the runtime was built without.
--
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/missing_drivers.lua
--
-- A runtime made with enable_time = false has no timer driver, and one made
-- with enable_io = false has no I/O driver. Asking such a runtime to sleep,
-- or to bind a socket, is not a crash and not a hang: treadle.sleep raises
-- the C core's message ("timers are disabled: build the runtime with
-- enable_time"), and treadle.tcp.bind returns nil, "I/O is disabled: build
-- the runtime with enable_io", errno, as every I/O failure does. Both
-- flavors are checked (on multi_thread, in every worker's state: this file
-- is its own worker module). Exit status 0 when every case behaved.
local treadle = require "treadle"

local NO_TIME = "timers are disabled: build the runtime with enable_time"
local NO_IO = "I/O is disabled: build the runtime with enable_io"

-- tries both drivers; returns what happened to each
local function probe()
  local ok, err = pcall(treadle.sleep, 0.001)
  local slept = ok and "slept" or tostring(err)
  local l, msg, errno = treadle.tcp.bind("127.0.0.1", 0)
  local bound
  if l then l:close(); bound = "bound" else bound = tostring(msg) .. " (" .. tostring(errno) .. ")" end
  return slept, bound
end

if select("#", ...) >= 2 and tostring(select(2, ...)):match("%.lua$") then
  return function(worker) return probe() end      -- a worker's main
end

-- This file's folder goes first on package.path, which each multi_thread
-- worker's state takes from this one: the workers find it by its plain
-- name, whatever the working directory and however it was started.
package.path = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path

local good = true
for _, flavor in ipairs({"current_thread", "multi_thread"}) do
  for _, case in ipairs({{"enable_time", 1, NO_TIME}, {"enable_io", 2, NO_IO}}) do
    local opts = {flavor = flavor, workers = 2, [case[1]] = false}
    local entry = flavor == "multi_thread" and "missing_drivers" or probe
    local results = {treadle.run(entry, opts)}
    local got = results[case[2]]
    local other = results[3 - case[2]]
    local ok = got:find(case[3], 1, true) ~= nil and (other == "slept" or other == "bound")
    good = good and ok
    print(string.format("[%s] %s = false: %s -> %s%s", flavor, case[1],
      case[2] == 1 and "sleep(0.001)" or "bind(127.0.0.1:0)", got, ok and "" or "   <-- unexpected"))
  end
end
os.exit(good and 0 or 1)
