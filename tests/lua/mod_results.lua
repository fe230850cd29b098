-- Entry module for tests of treadle.run / rt:block_on on multi_thread: every
-- worker returns its index and a few plain values; run returns worker 0's.
local treadle = require "treadle"
return function(w)
  return w, "worker" .. w, nil, 2.5, {k = "v", list = {1, 2, 3}}, treadle.worker()
end
