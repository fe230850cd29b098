-- Entry module: worker 1 raises after a moment; worker 0 would wait
-- forever (issue 13: an error in any worker's main ends the run).
local treadle = require "treadle"
return function(w)
  if w == 1 then
    treadle.sleep(0.02)
    error("boom from worker 1")
  end
  local guard <close> = setmetatable({}, {__close = function()
    treadle.channel(4, "fail1:closed"):send("worker 0's main closed")
  end})
  treadle.sleep(math.huge)
end
