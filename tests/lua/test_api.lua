-- Every name of the Lua API (/tmp/spec/luaapi.md) exists, has the right
-- type, and every handle has __gc, __close and __tostring.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("api", ...)

local FUNCTIONS = {"run", "runtime", "spawn", "sleep", "yield", "now", "timeout",
                   "worker", "thread_id", "signal", "channel"}

T.case("module functions", {outside = true, flavors = {"current_thread"}}, function()
  H.eq(type(treadle), "table", "require returns a table")
  for _, name in ipairs(FUNCTIONS) do
    H.eq(type(treadle[name]), "function", "treadle." .. name)
  end
  H.eq(type(treadle.tcp), "table", "treadle.tcp")
  H.eq(type(treadle.tcp.bind), "function", "treadle.tcp.bind")
  H.eq(type(treadle.tcp.connect), "function", "treadle.tcp.connect")
  -- require twice gives the same table
  H.ok(require("treadle") == treadle, "require caches the module")
end)

-- a handle's metatable, when it is not protected, has the three metamethods;
-- either way tostring gives a name and `<close>` accepts it
local function check_handle(what, x, methods, no_gc)
  H.eq(type(x), "userdata", what .. " is a userdata")
  for _, m in ipairs(methods) do
    H.eq(type(x[m]), "function", what .. ":" .. m)
  end
  local s = tostring(x)
  H.eq(type(s), "string", "tostring(" .. what .. ")")
  H.ok(not s:match("^userdata: "), what .. " has __tostring (got " .. s .. ")")
  local mt = getmetatable(x)
  if type(mt) == "table" then
    if not no_gc then
      H.eq(type(mt.__gc), "function", what .. " __gc")
      H.eq(type(mt.__close), "function", what .. " __close")
    end
    H.eq(type(mt.__tostring), "function", what .. " __tostring")
  else
    H.note(what .. " metatable is protected (" .. tostring(mt) .. ")")
  end
  return s
end

T.case("handles: task, channel, listener, conn", function(ctx)
  local t = treadle.spawn(function() return 1 end)
  local names = {}
  -- (the task's __gc and __close: a case of their own below)
  names[#names + 1] = check_handle("task", t, {"join", "abort", "done"}, true)
  t:join()
  local ch = treadle.channel(1)
  names[#names + 1] = check_handle("channel", ch, {"send", "recv"})
  local l = assert(treadle.tcp.bind("127.0.0.1", 0))
  names[#names + 1] = check_handle("listener", l, {"accept", "addr", "close"})
  local _, port = l:addr()
  local c = assert(treadle.tcp.connect("127.0.0.1", port))
  names[#names + 1] = check_handle("conn", c, {"read", "write", "shutdown", "close", "peer", "addr"})
  local s = assert(l:accept())
  s:close()
  c:close()
  l:close()
  if ctx.worker == 0 and ctx.flavor == "current_thread" then
    H.note(table.concat(names, " "))
  end
end)

T.case("task handles have __gc and __close", function()
  -- the issue: "Handles are userdata with __gc, __close and __tostring"
  local t = treadle.spawn(function() return 1 end)
  local mt = getmetatable(t)
  t:join()
  if type(mt) ~= "table" then H.note("protected metatable"); return end
  H.eq(type(mt.__close), "function", "task __close")
  H.eq(type(mt.__gc), "function", "task __gc")
end)

T.case("handles: runtime", {outside = true}, function(ctx)
  local rt = treadle.runtime({flavor = ctx.flavor, workers = 2})
  check_handle("runtime", rt, {"block_on", "spawn", "shutdown"})
  rt:shutdown()
end)

T.case("<close> works on every handle", function()
  local port
  do
    local ch <close> = treadle.channel(1)
    local l <close> = assert(treadle.tcp.bind("127.0.0.1", 0))
    local _
    _, port = l:addr()
    local c <close> = assert(treadle.tcp.connect("127.0.0.1", port))
    local s <close> = assert(l:accept())
  end
  -- the listener is closed: nothing listens on its port any more
  local c2, err, errno = treadle.tcp.connect("127.0.0.1", port)
  H.eq(c2, nil, "connect after the <close> listener went out of scope")
  H.eq(errno, "ECONNREFUSED", "errno (" .. tostring(err) .. ")")
end)

T.case("<close> on a task", function()
  local ok, err = pcall(function()
    local t <close> = treadle.spawn(function() treadle.sleep(math.huge) end)
  end)
  H.ok(ok, "a task in a <close> variable: " .. tostring(err))
end)

T.case("<close> runtime", {outside = true}, function(ctx)
  do
    local rt <close> = treadle.runtime({flavor = ctx.flavor, workers = 2})
    if ctx.flavor == "current_thread" then
      H.eq(rt:block_on(function(x) return x + 1 end, 41), 42, "block_on result")
    end
  end
  collectgarbage()
end)

T.case("worker and thread_id types", function()
  H.eq(math.type(treadle.worker()), "integer", "worker() is an integer")
  H.eq(math.type(treadle.thread_id()), "integer", "thread_id() is an integer")
  H.eq(math.type(treadle.now()), "float", "now() is a float")
end)

-- The NAME of "bad argument #N to 'NAME'" that fn(...) raises, and the error.
local function argname(fn, ...)
  local ok, err = pcall(fn, ...)
  H.eq(ok, false, "a bad argument raises")
  return tostring(err):match("bad argument #%d+ to '([^']*)'"), err
end

T.case("issue 13: argument errors name the function, called directly and through pcall", function()
  local l = assert(treadle.tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local acc = treadle.spawn(l.accept, l)
  local c = assert(treadle.tcp.connect("127.0.0.1", port))
  local s = acc:join()
  local ch = treadle.channel(1)
  local t = treadle.spawn(function() end)
  -- through pcall (no call site to name them): Lua looks in package.loaded
  for _, k in ipairs({
    {"treadle.tcp.connect", treadle.tcp.connect},
    {"treadle.tcp.connect", treadle.tcp.connect, "127.0.0.1", "x"},
    {"treadle.tcp.bind", treadle.tcp.bind, "127.0.0.1", 70000},
    {"treadle.conn.read", c.read, c, "ten"},
    {"treadle.conn.read", c.read, l},
    {"treadle.conn.write", c.write, c, {}},
    {"treadle.conn.set_nodelay", c.set_nodelay, 1},
    {"treadle.listener.accept", l.accept, 42},
    {"treadle.channel.send", ch.send, ch},
    {"treadle.task.join", t.join, 5},
    {"treadle.task.abort", t.abort, {}},
    {"treadle.sleep", treadle.sleep, "x"},
  }) do
    local name, err = argname(table.unpack(k, 2))
    H.eq(name, k[1], "through pcall: " .. tostring(err))
  end
  -- called directly: as the call site names them
  H.eq(argname(function() return c:read("ten") end), "read")
  H.eq(argname(function() return c:write({}) end), "write")
  H.eq(argname(function() return l.accept(42) end), "accept")
  H.eq(argname(function() return treadle.tcp.connect(nil, 80) end), "connect")
  H.eq(argname(function() return treadle.tcp.bind("127.0.0.1", -1) end), "bind")
  H.eq(argname(function() return ch:send() end), "send")
  c:close(); s:close(); l:close()
end)

T.case("issue 13: runtime methods' argument errors name them", {outside = true, flavors = {"current_thread"}}, function()
  local rt <close> = treadle.runtime()
  H.eq(argname(rt.shutdown, rt, "soon"), "treadle.runtime.shutdown")
  H.eq(argname(rt.block_on, rt, 42), "treadle.runtime.block_on")
  H.eq(argname(function() return rt:block_on(42) end), "block_on")
  H.eq(argname(treadle.runtime, {flavor = "x"}), "treadle.runtime")
end)

return T.main()
