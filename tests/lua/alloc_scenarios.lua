-- Scenarios for the Lua allocation sweep (lua_alloc_sweep.c, TESTING.md
-- "Allocation sweep"): each runs on a current_thread runtime, whose one
-- lua_State is the sweep's, so every Lua allocation it makes goes through
-- the sweep's allocator. Each returns true when all of it worked; a failed
-- allocation must end it with a "not enough memory" error or a
-- nil, "no memory" return, nothing else. No task may wait on another
-- that can die of the failure without telling it: such a wait would hang
-- the scenario, not treadle (so the channel has room for every message,
-- and the server closes its sockets when it fails).
local treadle = require "treadle"

local function run(fn)
  return treadle.run(fn, {flavor = "current_thread"})
end

-- n bytes from conn, or an error with what read said
local function read_n(conn, n)
  local parts, got = {}, 0
  while got < n do
    local s, err = conn:read(n - got)
    if not s then error(err or "closed", 0) end
    parts[#parts + 1] = s
    got = got + #s
  end
  return table.concat(parts)
end

local S = {}

function S.spawn_join()
  return run(function()
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = treadle.spawn(function(x) return x * 2 end, i)
    end
    for i = 1, 3 do assert(tasks[i]:join() == i * 2) end
    return true
  end)
end

function S.channel()
  return run(function()
    local ch = treadle.channel(4)
    local t = treadle.spawn(function()
      local got = {}
      for _ = 1, 4 do got[#got + 1] = ch:recv().s end
      return table.concat(got, ",")
    end)
    treadle.sleep(0.001) -- the receiver waits first: its values arrive
    -- while it is parked, and are unpacked when it is resumed
    for i = 1, 4 do ch:send({n = i, s = "v" .. i}) end
    return t:join() ~= nil
  end)
end

function S.tcp()
  return run(function()
    local l = assert(treadle.tcp.bind("127.0.0.1", 0))
    local _, port = l:addr()
    local srv = treadle.spawn(function()
      local s
      local ok, err = pcall(function()
        s = assert(l:accept())
        local msg = read_n(s, 5)
        treadle.sleep(0.001) -- the client waits in read: its bytes come
        -- while it is parked, and are pushed when it is resumed
        assert(s:write(msg))
      end)
      if s then s:close() end
      if not ok then l:close(); error(err, 0) end
      return true
    end)
    local c
    local ok, err = pcall(function()
      c = assert(treadle.tcp.connect("127.0.0.1", port))
      assert(c:write("hello"))
      -- the server may die of the failure before it closes anything (its
      -- pcall not yet entered): read in slices, looking at it in between
      local back
      repeat
        local ok, got = treadle.timeout(0.05, read_n, c, 5)
        back = ok and got
      until back or srv:done()
      if back then assert(back == "hello", "lost bytes: " .. tostring(back)) end
    end)
    if c then c:close() end
    if not ok then srv:abort() end -- it may wait for a client that never came
    -- the server's memory error, if it had one, explains the client's
    local sok, serr = pcall(srv.join, srv)
    if not sok and tostring(serr):find("memory") then error(serr, 0) end
    if not ok then error(err, 0) end
    assert(sok, serr)
    l:close()
    return true
  end)
end

function S.shared_dict()
  return run(function()
    local d = treadle.shared.dict("alloc_sweep", 65536)
    for i = 1, 10 do
      local ok, err = d:set("k" .. i, string.rep("x", i * 10))
      if not ok then error(err) end
    end
    assert(d:get("k3") == string.rep("x", 30))
    return true
  end)
end

return S
