-- Child process of test_sigint.lua: runs treadle.run (FLAVOR, MODE), says
-- "ready PID" once the run waits, and reports how the run ended.
--   lua5.4 tests/lua/sigint_child.lua current_thread|multi_thread sleep|io|tasks|close|block_on|after
-- "after": a run that returns, then a busy Lua loop (SIGINT must then reach
-- lua5.4's own handler again: "interrupted!").
local treadle = require "treadle"
local flavor, mode = arg[1] or "current_thread", arg[2] or "sleep"

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local p = f:read("l"):match("^(%d+)")
  f:close()
  return p
end

local function say(...)
  io.stdout:write(...)
  io.stdout:write("\n")
  io.stdout:flush()
end

local function main()
  if mode == "io" then
    local l = assert(treadle.tcp.bind("127.0.0.1", 0))
    local _, port = l:addr()
    local c = assert(treadle.tcp.connect("127.0.0.1", port))
    local s = assert(l:accept())
    treadle.spawn(function() return s:read() end)     -- waits forever
    treadle.spawn(function() return l:accept() end)   -- waits forever
    say("ready ", pid())
    return c:read()                                   -- waits forever
  elseif mode == "close" then
    treadle.spawn(function()
      local _ <close> = setmetatable({}, {__close = function() say("closed task") end})
      treadle.sleep(math.huge)
    end)
    local _ <close> = setmetatable({}, {__close = function() say("closed main") end})
    say("ready ", pid())
    treadle.sleep(math.huge)
  elseif mode == "tasks" then
    for i = 1, 1000 do treadle.spawn(treadle.sleep, i % 2 == 0 and math.huge or 3600) end
    say("ready ", pid())
    treadle.sleep(math.huge)
  else
    say("ready ", pid())
    treadle.sleep(math.huge)
  end
end

if mode == "after" then
  if flavor == "multi_thread" then
    say("first run: worker ", tostring(treadle.run("mod_results", {flavor = flavor, workers = 2})))
  else
    say("first run: ", tostring(treadle.run(function() treadle.sleep(0.001); return "returned" end)))
  end
  local ok, err = pcall(function()
    say("ready ", pid())
    local x = 0
    while true do x = x + 1 end
  end)
  say("caught ", tostring(err))
  return
end

local ok, err
if mode == "block_on" then
  local rt = treadle.runtime({flavor = "current_thread"})
  ok, err = pcall(rt.block_on, rt, main)
elseif flavor == "multi_thread" then
  ok, err = pcall(treadle.run, "mod_sleeper", {flavor = "multi_thread", workers = 2})
else
  ok, err = pcall(treadle.run, main, {flavor = flavor})
end
say("caught ", tostring(ok), " ", tostring(err))
-- the runtime is shut down cleanly: a new run works
local again = treadle.run(function() treadle.sleep(0.001); return "ok" end, {flavor = "current_thread"})
say("again ", tostring(again))
