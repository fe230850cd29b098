-- The echo server's worker module (see echo_server.lua): every worker of a
-- multi_thread runtime `require`s this file in its own lua_State and calls
-- the function it returns as main(worker_index); on current_thread
-- echo_server.lua calls it once, as main(0), in its own state.
--
-- The settings (PORT FLAVOR WORKERS) come from `arg`: treadle gives every
-- worker state a copy of the script's.
--
-- Each worker binds 127.0.0.1:PORT itself (with reuse_port on
-- multi_thread, so the kernel spreads the connections over the workers'
-- listeners), accepts in a loop and runs one task per connection that reads
-- up to 16 KiB and writes it back. Worker 0 also waits for SIGINT and
-- SIGTERM (treadle.signal); on either it asks the other workers for their
-- counts over the named channel "echo:stop", collects them over
-- "echo:served", prints one line and returns:
--   served N connections; per worker: 0:A 1:B
-- Worker 0's return ends the run on every worker, as a process ends when
-- its main thread returns: the other workers' tasks (their connections'
-- too) are cancelled then.
local treadle = require "treadle"

local BUF = 16384

local function settings()
  local args = arg -- in a worker state, a copy of echo_server.lua's
  local flavor = args[2] or "current_thread"
  return tonumber(args[1]) or 0, flavor,
         flavor == "multi_thread" and (tonumber(args[3]) or 2) or 1
end

local function serve(conn)
  conn:set_nodelay(true) -- as the peers' servers do
  while true do
    local data = conn:read(BUF)
    if not data then break end
    if not conn:write(data) then break end
  end
  conn:close()
end

return function(worker)
  local port, flavor, workers = settings()
  local multi = flavor == "multi_thread"
  local portch = treadle.channel(workers, "echo:port")
  local ready = treadle.channel(workers, "echo:ready")
  local stopch = treadle.channel(workers, "echo:stop")
  local servedch = treadle.channel(workers, "echo:served")

  -- worker 0 binds first (PORT 0 picks a port) and tells the others which
  local listener, err
  if worker == 0 then
    listener, err = treadle.tcp.bind("127.0.0.1", port, {backlog = 4096, reuse_port = multi})
    if not listener then
      for _ = 2, workers do portch:send(false) end     -- the others give up too
      error("bind 127.0.0.1:" .. port .. ": " .. tostring(err), 0)
    end
    local _
    _, port = listener:addr()
    for _ = 2, workers do portch:send(port) end
  else
    port = portch:recv()
    if not port then return end
    listener, err = treadle.tcp.bind("127.0.0.1", port, {backlog = 4096, reuse_port = true})
    if not listener then
      ready:send("worker " .. worker .. ": bind: " .. tostring(err))
      return
    end
  end

  local served = 0
  -- kept in the state too: if SIGINT ends treadle.run itself ("interrupted")
  -- echo_server.lua can still say how many (current_thread only: a worker's
  -- state goes with its runtime)
  local stats = {served = 0, port = port}
  _G.echo_stats = stats
  local accept_loop = treadle.spawn(function()
    while true do
      local conn, aerr, ename = listener:accept()
      if conn then
        served = served + 1
        stats.served = served
        treadle.spawn(serve, conn)
      elseif aerr == nil or ename == "ECLOSED" then   -- closed by the signal watcher
        return
      else
        io.stderr:write("accept: ", tostring(aerr), "\n")   -- EMFILE and the like
        treadle.sleep(0.01)
      end
    end
  end)

  if worker ~= 0 then
    ready:send(true)
    stopch:recv()                 -- worker 0 asks for the count
    accept_loop:abort()
    listener:close()
    servedch:send({worker = worker, served = served})
    return                        -- worker 0's return ends the rest
  end

  -- worker 0: the signal watchers, then "listening" once everyone is bound
  local stop = treadle.channel(1)
  local watchers = {}
  for _, name in ipairs({"SIGINT", "SIGTERM"}) do
    watchers[#watchers + 1] = treadle.spawn(function()
      treadle.signal(name)
      stop:send(name)
    end)
  end
  for _ = 1, 10 do treadle.yield() end     -- let the watchers reach their wait
  for _ = 2, workers do
    local r = ready:recv()
    if r ~= true then
      for _, w in ipairs(watchers) do w:abort() end
      accept_loop:abort()
      listener:close()
      for _ = 2, workers do stopch:send("stop") end
      error(r, 0)
    end
  end
  local how = multi and (workers .. " workers") or "current_thread"
  io.stdout:write(string.format("listening on 127.0.0.1:%d (%s)\n", port, how))
  io.stdout:flush()

  local signame = stop:recv()
  io.stderr:write(signame, ": stopping\n")
  for _, w in ipairs(watchers) do w:abort() end
  accept_loop:abort()
  listener:close()
  for _ = 2, workers do stopch:send("stop") end
  local per = {[0] = served}
  local total = served
  for _ = 2, workers do
    local r = servedch:recv()
    per[r.worker] = r.served
    total = total + r.served
  end
  local parts = {}
  for w = 0, workers - 1 do parts[#parts + 1] = w .. ":" .. tostring(per[w]) end
  io.stdout:write(string.format("served %d connections; per worker: %s\n", total, table.concat(parts, " ")))
  io.stdout:flush()
  return total
end
