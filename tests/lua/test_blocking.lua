-- treadle.blocking (Lua in a fresh state on the blocking pool) and
-- treadle.resolve: results and errors, the code kinds, bad input, cancelled
-- waiters (the job's results are dropped), several jobs at once.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("blocking", ...)

T.case("a function: arguments and results are copied", function()
  local a, b, c = treadle.blocking(function(x, t) return x * 2, t, {n = #t.list} end,
                                   21, {list = {1, 2, 3}, s = "str"})
  H.eq(a, 42)
  H.same_table(b, {list = {1, 2, 3}, s = "str"})
  H.same_table(c, {n = 3})
  H.same_table(H.pack(treadle.blocking(function(...) return ... end, nil, 1, nil)),
               {n = 3, nil, 1, nil}, "nils keep their places")
  H.same_table(H.pack(treadle.blocking(function() end)), {n = 0}, "no results")
end)

T.case("a function sees the new state's globals, not the caller's", function()
  CALLER_GLOBAL = "caller" -- luacheck: ignore
  H.eq(treadle.blocking(function() return CALLER_GLOBAL, type(string.format) end), nil)
  H.eq(select(2, treadle.blocking(function() return CALLER_GLOBAL, type(string.format) end)),
       "function", "the standard libraries are there")
  CALLER_GLOBAL = nil -- luacheck: ignore
end)

T.case("a module name: required in the new state, its function called", function()
  H.same_table(H.pack(treadle.blocking("mod_blocking_sum", 1, 2, 3.5)), {n = 2, 6.5, 3})
  H.raises("module 'no_such_module_x' not found", treadle.blocking, "no_such_module_x")
  H.raises("module 'mod_blocking_table' returned table, not a function",
           treadle.blocking, "mod_blocking_table")
end)

T.case("a chunk: the arguments are ...", function()
  H.same_table(H.pack(treadle.blocking("local a, b = ...; return b, a", "x", "y")),
               {n = 2, "y", "x"})
  H.raises("unexpected symbol", treadle.blocking, "return +")
  H.raises("attempt to perform arithmetic", treadle.blocking, "return {} + 1")
end)

T.case("errors come back with their message", function()
  H.raises("boom here", treadle.blocking, function() error("boom here") end)
  local ok, err = pcall(treadle.blocking, function() error({code = 1}) end)
  H.eq(ok, false)
  H.has(err, "not a string", "a non-string error object")
end)

T.case("bad input raises before anything runs", function()
  local up = 1
  H.raises("has an upvalue (up)", treadle.blocking, function() return up end)
  H.raises("a C function", treadle.blocking, print)
  H.raises("module name, function or chunk expected, got number", treadle.blocking, 42)
  H.raises("module name, function or chunk expected, got no value", treadle.blocking)
  H.raises("an argument: channel values must be", treadle.blocking, "return 1", print)
  H.raises("an argument: channel values must be", treadle.blocking, "return 1", {f = print})
  H.raises("a result: channel values must be", treadle.blocking, function() return print end)
  H.raises("a result: channel values must be", treadle.blocking,
           function() return coroutine.create(print) end)
end)

T.case("outside a task it raises", {outside = true}, function()
  H.raises("needs a running treadle task", treadle.blocking, "return 1")
  H.raises("needs a running treadle task", treadle.resolve, "localhost")
end)

T.case("jobs run at once on pool threads, each in its own state", function()
  local ts = {}
  for i = 1, 8 do
    ts[i] = treadle.spawn(function()
      return treadle.blocking(function(k)
        GLOBAL_SEEN = (GLOBAL_SEEN or 0) + k -- luacheck: ignore
        return GLOBAL_SEEN
      end, i)
    end)
  end
  for i = 1, 8 do H.eq(H.within(10, ts[i].join, ts[i]), i, "a fresh state per job") end
end)

T.case("a cancelled waiter: the job runs to its end, its results are dropped", function()
  local gate = treadle.channel(1, "blocking-gate")
  local done = treadle.channel(1, "blocking-done")
  local t = treadle.spawn(function()
    return treadle.blocking(function()
      local tr = require "treadle"
      local g, d = tr.channel(1, "blocking-gate"), tr.channel(1, "blocking-done")
      local t0 = os.time()
      while g:try_recv() == nil and os.time() - t0 < 20 do end
      d:try_send("job ended")
      return string.rep("x", 100000)
    end)
  end)
  H.settle()
  t:abort()
  H.raises("cancelled", t.join, t)
  gate:send("go")
  H.eq(H.within(20, done.recv, done), "job ended")
end)

T.case("a job that is the caller's to wait for, in a timeout", function()
  local ok, v = treadle.timeout(10, treadle.blocking, "return 7")
  H.eq(ok, true); H.eq(v, 7)
end)

T.case("resolve: numeric addresses and localhost", function()
  H.same_table(treadle.resolve("127.0.0.1"), {"127.0.0.1"})
  H.same_table(treadle.resolve("::1"), {"::1"})
  H.same_table(treadle.resolve("[::1]"), {"::1"})
  local l = assert(treadle.resolve("localhost"))
  H.ok(#l >= 1, "localhost has an address")
  local seen = {}
  for _, a in ipairs(l) do
    H.ok(a == "127.0.0.1" or a == "::1" or a:match("^127%."), "localhost is loopback: " .. a)
    H.ok(not seen[a], "no repeats"); seen[a] = true
  end
end)

T.case("resolve: a name that does not exist, bad input", function()
  local r, err, errno = treadle.resolve("no-such-host.invalid")
  H.eq(r, nil)
  H.eq(errno, "ENOHOST", "errno name (" .. tostring(err) .. ")")
  H.raises("an empty host", treadle.resolve, "")
  H.raises("an empty host, or one with a NUL byte", treadle.resolve, "a\0b")
  H.raises("string expected, got no value", treadle.resolve)
  H.raises("string expected, got table", treadle.resolve, {})
end)

T.case("resolve: a cancelled lookup", function()
  local t = treadle.spawn(treadle.resolve, "localhost")
  t:abort()
  H.raises("cancelled", t.join, t)
  H.ok(treadle.resolve("localhost"), "the next lookup works")
end)

return T.main()
