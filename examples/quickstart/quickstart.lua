-- Quick start: a task that sleeps, spawned and joined for its result, and
-- with --echo PORT a TCP echo server on 127.0.0.1 until Ctrl-C (port 0 picks
-- one). Functions run as treadle tasks (coroutines); waiting calls suspend
-- the task, not the thread.
local treadle = require "treadle"
io.stdout:setvbuf("line")

local function answer()
  treadle.sleep(0.01)
  return 42
end

local function echo(conn)               -- one task per connection
  local data = conn:read()              -- nil at the end of the stream
  while data do
    conn:write(data)
    data = conn:read()
  end
  conn:close()
end

local function serve(listener)
  print(string.format("echo server on %s:%d, Ctrl-C stops it", listener:addr()))
  while true do
    treadle.spawn(echo, assert(listener:accept()))
  end
end

local function main(port)
  local result = treadle.spawn(answer):join()
  print("the spawned task slept 10 ms and returned " .. result)
  if port then
    local listener = assert(treadle.tcp.bind("127.0.0.1", port))
    treadle.spawn(serve, listener)      -- starts once main waits below
    treadle.signal("SIGINT")
    print("bye")
  end
end

local port = arg[1] == "--echo" and assert(tonumber(arg[2]), "usage: quickstart.lua [--echo PORT]")
treadle.run(function() main(port) end)
