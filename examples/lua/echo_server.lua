-- The seed's exercises 1 and 5: a TCP echo server, one task per
-- connection, on either runtime flavor. It is also the server of
-- bench/lua_compare.py.
--
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/echo_server.lua PORT [FLAVOR] [WORKERS]
--
-- FLAVOR: current_thread (the default) or multi_thread; WORKERS (default 2)
-- for multi_thread. Listens on 127.0.0.1:PORT (0 picks a port; the line
-- "listening on 127.0.0.1:PORT" says which).
--
-- The server itself is examples/lua/echo_worker.lua. On current_thread it
-- runs once, in this state. On multi_thread every worker thread has its own
-- lua_State that `require`s echo_worker, so each worker binds its own
-- listener on PORT with reuse_port and serves the connections the kernel
-- hands it (as OpenResty's workers do). SIGINT or SIGTERM stops it; it then
-- prints "served N connections; per worker: 0:A 1:B". (A SIGINT may also be
-- taken by treadle.run itself, which then raises "interrupted": this script
-- says so, with the count on current_thread, and exits 130.)
local treadle = require "treadle"

local port, flavor, workers = tonumber(arg[1]), arg[2] or "current_thread", tonumber(arg[3] or "2")
if not port or (flavor ~= "current_thread" and flavor ~= "multi_thread") or not workers or workers < 1 then
  io.stderr:write("usage: lua5.4 examples/lua/echo_server.lua PORT [current_thread|multi_thread] [WORKERS]\n")
  os.exit(2)
end

-- echo_worker.lua sits beside this script, whatever the working directory
-- and however the script was named: its folder goes first on package.path,
-- which each multi_thread worker's state takes from this one.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path

local ok, err
if flavor == "multi_thread" then
  ok, err = pcall(treadle.run, "echo_worker", {flavor = "multi_thread", workers = workers})
else
  local main = require "echo_worker"
  ok, err = pcall(treadle.run, function() return main(0) end, {flavor = "current_thread"})
end
if not ok then
  if tostring(err):find("interrupted", 1, true) then
    -- a SIGINT that treadle.run took itself, before worker 0's watcher could
    if flavor == "current_thread" and _G.echo_stats then
      io.stdout:write(string.format("interrupted; served %d connections; per worker: 0:%d\n",
        _G.echo_stats.served, _G.echo_stats.served))
    else
      io.stdout:write("interrupted (the per-worker counts went with the workers' states)\n")
    end
    os.exit(130)
  end
  io.stderr:write("echo_server: ", tostring(err), "\n")
  os.exit(1)
end
