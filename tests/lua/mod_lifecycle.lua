-- Entry module for the multi_thread lifecycle test (issue 13), on 3
-- workers. Workers 1 and 2 each serve a listener from a task of their own;
-- worker 1's main then waits forever, worker 2's returns (its server goes
-- on). Each main and each server has a to-be-closed variable that says so
-- over the named channel "lifecycle:closed" when it is closed. Worker 0
-- connects to both servers once they are up and returns: that ends the
-- run.
local treadle = require "treadle"

local function closer(what)
  return setmetatable({}, {__close = function()
    treadle.channel(8, "lifecycle:closed"):send(what)
  end})
end

return function(w)
  local ready = treadle.channel(8, "lifecycle:ready")
  if w == 0 then
    for _ = 1, 2 do
      local port = ready:recv()
      local c = assert(treadle.tcp.connect("127.0.0.1", port))
      assert(c:read() == "served", "a server answers")
      c:close()
    end
    return "worker 0 done"
  end
  local main <close> = closer(w .. " main")
  local l = assert(treadle.tcp.bind("127.0.0.1", 0))
  treadle.spawn(function()
    local server <close> = closer(w .. " server")
    while true do
      local c = l:accept()
      if c then c:write("served"); c:close() end
    end
  end)
  ready:send(select(2, l:addr()))
  if w == 1 then treadle.sleep(math.huge) end
end
