-- A hit counter shared by every worker: a TCP server on multi_thread where
-- each worker listens on the same port (reuse_port) and answers each
-- connection with one line, "hit N (worker W)", N counted in one
-- treadle.shared dict that every worker's lua_State opens by name. Worker 0
-- then connects CONNS times itself, and prints the count, how the kernel
-- spread the connections over the workers, and the last visitor's key,
-- which expires 60 s after its visit:
--
--   lua5.4 examples/lua/hit_counter.lua [CONNS=100] [WORKERS=2]
--   100 hits, 100 counted by the workers (0:52 1:48); last visitor 127.0.0.1, remembered for 60 s more at most
--
-- (The split differs from run to run; the total does not.)
local treadle = require "treadle"

local CAP = 64 * 1024 -- bytes: a few keys of 64 bytes plus key and value each

local function settings()
  return tonumber(arg[1]) or 100, tonumber(arg[2]) or 2
end

-- answers one connection and counts it
local function serve(conn, hits, worker)
  local n = hits:incr("hits", 1, 0)            -- atomic across the workers
  hits:incr("worker:" .. worker, 1, 0)
  local host, port = conn:peer()
  hits:set("last_visitor", host .. ":" .. port, 60) -- forgotten after 60 s
  conn:write(string.format("hit %d (worker %d)\n", n, worker))
  conn:close()
end

local function worker_main(worker)
  local conns, workers = settings()
  local hits = treadle.shared.dict("hits", CAP) -- the same dict in every worker
  -- worker 0 binds first (port 0: the system picks) and puts the port in
  -- the dict; the others wait for it there
  local listener
  if worker == 0 then
    listener = assert(treadle.tcp.bind("127.0.0.1", 0, {reuse_port = true}))
    local _, port = listener:addr()
    hits:set("port", port)
  else
    while not hits:get("port") do treadle.sleep(0.001) end
    listener = assert(treadle.tcp.bind("127.0.0.1", hits:get("port"), {reuse_port = true}))
  end
  hits:incr("listening", 1, 0)
  local accept_loop = treadle.spawn(function()
    while true do
      local conn = listener:accept()
      if not conn then return end
      treadle.spawn(serve, conn, hits, worker)
    end
  end)
  if worker ~= 0 then
    while not hits:get("done") do treadle.sleep(0.005) end
    accept_loop:abort()
    listener:close()
    return
  end

  -- worker 0: the visitors, once every worker listens
  while hits:get("listening") < workers do treadle.sleep(0.001) end
  local port = hits:get("port")
  for _ = 1, conns do
    local c = assert(treadle.tcp.connect("127.0.0.1", port))
    local line = c:read(100)
    assert(line and line:match("^hit %d+ %(worker %d+%)\n$"), "bad answer " .. tostring(line))
    c:close()
  end
  hits:set("done", true)
  local split, counted = {}, 0
  for w = 0, workers - 1 do
    local n = hits:get("worker:" .. w) or 0
    counted = counted + n
    split[#split + 1] = w .. ":" .. n
  end
  local last = hits:get("last_visitor"):match("^[^:]+")
  print(string.format("%d hits, %d counted by the workers (%s); last visitor %s, remembered for %d s more at most",
    hits:get("hits"), counted, table.concat(split, " "), last, math.ceil(hits:ttl("last_visitor"))))
  accept_loop:abort()
  listener:close()
end

if ... == "hit_counter" then return worker_main end -- a worker's state

local _, workers = settings()
local dir = arg[0]:match("^(.*/)") or "./"
package.path = dir .. "?.lua;" .. package.path
treadle.run("hit_counter", {flavor = "multi_thread", workers = workers})
