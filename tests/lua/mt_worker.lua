-- The worker module of the test harness: on multi_thread every worker state
-- `require`s it and calls the function it returns as main(worker_index).
-- The case to run comes from the process's command line (the harness starts
-- `lua5.4 tests/lua/test_X.lua --case NAME --flavor multi_thread --workers N`).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
return function(w)
  return H.worker_main(w)
end
