-- A worker module for test_serve.lua: on multi_thread, worker 0 alone makes
-- a port-0 tcp.server and closes it (the other workers make none, so none
-- takes the port worker 0 hands on); returns the port it listened on.
return function(w)
  local treadle = require "treadle"
  if w ~= 0 then return true end
  local s = assert(treadle.tcp.server("127.0.0.1", 0, function() end))
  s:close()
  return s.port
end
