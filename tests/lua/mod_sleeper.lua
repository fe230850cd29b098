-- Entry module for the Ctrl-C test: every worker sleeps forever; worker 0
-- says "ready" first.
local treadle = require "treadle"
return function(w)
  if w == 0 then
    treadle.sleep(0.05)
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("l"):match("^(%d+)")
    f:close()
    io.stdout:write("ready ", pid, "\n")
    io.stdout:flush()
  end
  treadle.sleep(math.huge)
end
