-- A redis client session with OpenResty's lua-resty-redis, unchanged, on
-- treadle: `ngx = require "treadle.ngx"` gives the library its
-- ngx.socket.tcp (treadle's cosockets), and Debian's lua-nginx-redis
-- package installs it as nginx.redis (treadle.ngx puts Lua 5.1's library
-- folder on package.path).
--
--   scripts/setup.sh redis-server lua-nginx-redis
--   redis-server --port 6379 --save '' &
--   LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 examples/lua/redis_session.lua [PORT [WORKERS]]
--
-- Commands, a pipeline, pub/sub between two tasks, and the keep-alive
-- pool: each connection goes back with set_keepalive, and the next connect
-- to the same host and port takes it again (get_reused_times). With
-- WORKERS (default 1: current_thread) it runs on multi_thread, every worker
-- its own session with its own pool. Exit status 1 if anything failed.
ngx = require "treadle.ngx"  -- luacheck: ignore (the library reads the global)
local treadle = require "treadle"

local port = tonumber(arg and arg[1] or "6379")
local workers = tonumber(arg and arg[2] or "1")
if not (port and workers and workers >= 1) then
  io.stderr:write("usage: lua5.4 examples/lua/redis_session.lua [PORT [WORKERS]]\n")
  os.exit(2)
end

local function session(worker)
  local redis = require "nginx.redis"
  local say = function(fmt, ...) print(string.format("[worker %d] " .. fmt, worker, ...)) end
  local prefix = "treadle:example:" .. worker .. ":"

  local function client()
    local r = assert(redis:new())
    r:set_timeout(1000)                       -- connect, send and read: 1 s
    assert(r:connect("127.0.0.1", port))
    return r
  end

  -- commands
  local r = client()
  assert(r:set(prefix .. "greeting", "hello from treadle"))
  say("GET greeting -> %s", assert(r:get(prefix .. "greeting")))
  say("GET missing -> %s", r:get(prefix .. "missing") == ngx.null and "ngx.null" or "?")
  -- a pipeline: one write, then every reply
  r:init_pipeline()
  for i = 1, 5 do r:incr(prefix .. "counter") end
  r:get(prefix .. "counter")
  local replies = assert(r:commit_pipeline())
  say("pipeline of %d commands -> counter %s", #replies, replies[#replies])
  assert(r:del(prefix .. "greeting", prefix .. "counter"))

  -- pub/sub: a subscriber task and this task publishing
  local sub = client()
  assert(sub:subscribe(prefix .. "news"))
  local listener = treadle.spawn(function()
    local got = {}
    for _ = 1, 3 do got[#got + 1] = assert(sub:read_reply())[3] end
    sub:close()
    return table.concat(got, " ")
  end)
  for i = 1, 3 do assert(r:publish(prefix .. "news", "message" .. i)) end
  say("subscriber got: %s", listener:join())

  -- the keep-alive pool: the same connection, three times
  assert(r:set_keepalive(10000, 10))
  for _ = 1, 3 do
    local again = client()
    assert(again:ping())
    say("connect again: reused %d times", again:get_reused_times())
    assert(again:set_keepalive(10000, 10))
  end
  return true
end

local function main(worker)
  worker = worker or 0
  local ok, err = pcall(session, worker)
  if not ok then
    io.stderr:write(string.format("[worker %d] failed: %s\n", worker, tostring(err)))
    os.exit(1)
  end
  -- worker 0's return ends the run: it waits for the others' sessions
  local done = treadle.channel(workers, "redis_session:done")
  if worker ~= 0 then
    done:send(worker)
  else
    for _ = 2, workers do done:recv() end
  end
end

if ... == "redis_session" then   -- a worker state's require: its main
  return main
end
if workers == 1 then
  treadle.run(main)
else
  package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
  treadle.run("redis_session", {flavor = "multi_thread", workers = workers})
end
print("== done")
