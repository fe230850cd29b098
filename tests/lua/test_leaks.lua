-- No leaks on the Lua side: collectgarbage("count") stays flat over 100,000
-- sleeps, 100,000 spawns, 2,000 connections (and timeouts, channel values,
-- channel closes and selects, blocking jobs, child processes),
-- measured after a warm-up; RSS and the number of open file descriptors
-- too. Bounds are generous: a leak of one table per iteration would be
-- megabytes. (The C side's leaks are valgrind's job.) TREADLE_TEST_SCALE
-- scales the counts (0.1 under valgrind).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("leaks", ...)

local LUA_SLACK_KIB = 256
-- (RSS means nothing under the sanitizers' shadow memory or valgrind)
local RSS_SLACK_KIB = (H.sanitizer ~= "" or H.valgrind) and math.huge or 8 * 1024

local function snapshot()
  collectgarbage("collect")
  collectgarbage("collect")
  return {lua = collectgarbage("count"), rss = H.rss_kib(), fds = H.nfds()}
end

local function check(what, n, before, after, rss_slack)
  local dl, dr, df = after.lua - before.lua, (after.rss or 0) - (before.rss or 0), after.fds - before.fds
  H.note(string.format("%s x%d: Lua %+.0f KiB (%.0f -> %.0f), RSS %+d KiB, fds %+d",
    what, n, dl, before.lua, after.lua, dr, df))
  H.ok(dl < LUA_SLACK_KIB, string.format("Lua heap grew %.0f KiB over %d %s", dl, n, what))
  local slack = RSS_SLACK_KIB == math.huge and math.huge or (rss_slack or RSS_SLACK_KIB)
  H.ok(dr < slack, string.format("RSS grew %d KiB over %d %s", dr, n, what))
  -- a descriptor open for a moment elsewhere in the process is not a leak:
  -- look again a few times before calling it one
  for _ = 1, 10 do
    if df <= 0 then break end
    if not pcall(treadle.sleep, 0.05) then os.execute("sleep 0.05") end -- outside a task
    df = H.nfds() - before.fds
  end
  H.ok(df <= 0, string.format("%d more file descriptors after %d %s", df, n, what))
end

-- runs body(n) once with n = warm (the warm-up), then measures it at n
local function measure(what, warm, n, body, rss_slack)
  body(warm)
  local before = snapshot()
  body(n)
  local after = snapshot()
  check(what, n, before, after, rss_slack)
end

T.case("100,000 sleeps", {timeout = 120}, function()
  local TASKS = 100
  measure("sleeps", H.n(10000, 100), H.n(100000, 1000), function(n)
    local per = n // TASKS
    local ts = {}
    for i = 1, TASKS do
      ts[i] = treadle.spawn(function()
        for k = 1, per do treadle.sleep(k % 2 == 0 and 0.0001 or 0) end
      end)
    end
    for i = 1, TASKS do ts[i]:join() end
  end)
end)

-- TSan keeps a shadow call stack that Lua's longjmp-based yields (from
-- uninstrumented liblua) never unwind: 100,000 of them overflow it.
local TSAN_SKIP = H.sanitizer == "tsan" and "TSan's shadow stack overflows on Lua's longjmp yields" or nil

T.case("100,000 spawns", {timeout = 120, skip = TSAN_SKIP}, function()
  -- RSS is glibc's high-water mark of the garbage that piles up between two
  -- collections, which moves with the collector's timing (two runs of this
  -- loop top out at +2 MiB alone, up to +9 MiB under a parallel ctest):
  -- the Lua heap, fds and valgrind are the checks here; RSS only catches a
  -- leak of whole tasks (100,000 x ~300 bytes = 30 MiB).
  measure("spawns", H.n(100000, 1000), H.n(100000, 1000), function(n)
    local done = 0
    local function work(x) treadle.yield(); done = done + 1; return x, {x} end
    local batch = {}
    for i = 1, n do
      local t = treadle.spawn(work, i)
      if i % 2 == 0 then batch[#batch + 1] = t end     -- the other half is never joined
      if #batch == 500 then
        for _, b in ipairs(batch) do b:join() end
        batch = {}
      end
    end
    for _, b in ipairs(batch) do b:join() end
    H.wait_until(function() return done == n end, 30, "every task to finish")
  end, 24 * 1024)
end)

T.case("2,000 connections", {timeout = 120}, function()
  local l, port, loop = H.echo_server()
  measure("connections", H.n(200, 50), H.n(2000, 100), function(n)
    local BATCH = 50
    for b = 1, math.max(1, n // BATCH) do
      local ts = {}
      for i = 1, BATCH do
        ts[i] = treadle.spawn(function()
          local c = assert(treadle.tcp.connect("127.0.0.1", port))
          local msg = "hello " .. b .. "/" .. i
          assert(c:write(msg))
          assert(H.read_n(c, #msg) == msg)
          c:close()
        end)
      end
      for i = 1, BATCH do ts[i]:join() end
    end
    H.settle()       -- the server's tasks see end of stream and close
  end)
  loop:abort()
  l:close()
end)

-- Cosockets: line and count patterns, receiveuntil, read timeouts that fire,
-- and the keep-alive pool (a pool of 5 for 20 tasks: connections are reused,
-- evicted and made anew) leave nothing behind.
T.case("2,000 cosocket sessions through the pool", {timeout = 120}, function()
  local l = assert(treadle.tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local loop = treadle.spawn(function()
    while true do
      local c = l:accept()
      if not c then return end
      treadle.spawn(function()
        while true do
          local line = c:receive()
          if not line then break end
          c:send({line, "\r\n", #line, "--END--"})
        end
        c:close()
      end)
    end
  end)
  measure("cosocket sessions", H.n(200, 40), H.n(2000, 100), function(n)
    local TASKS = 20
    local ts = {}
    for i = 1, TASKS do
      ts[i] = treadle.spawn(function()
        for k = 1, n // TASKS do
          local s = treadle.tcp.socket()
          s:settimeout(1000)
          assert(s:connect("127.0.0.1", port))
          local msg = "hello " .. i .. "/" .. k
          assert(s:send(msg .. "\n"))
          assert(s:receive() == msg)
          assert(s:receiveuntil("--END--")() == tostring(#msg))
          if k % 10 == 0 then            -- a read timeout that fires
            s:settimeout(1)
            local _, err = s:receive(1)
            assert(err == "timeout", err)
            s:close()
          else
            assert(s:setkeepalive(10000, 5))
          end
        end
      end)
    end
    for i = 1, TASKS do ts[i]:join() end
    H.settle()
  end)
  loop:abort()
  l:close()
end)

T.case("20,000 timeouts, half of them expiring", {timeout = 120}, function()
  measure("timeouts", H.n(2000, 200), H.n(20000, 400), function(n)
    local ts = {}
    for i = 1, 100 do
      ts[i] = treadle.spawn(function()
        for k = 1, n // 100 do
          if k % 2 == 0 then treadle.timeout(0.0001, treadle.sleep, 1)
          else treadle.timeout(1, function() return k end) end
        end
      end)
    end
    for i = 1, 100 do ts[i]:join() end
  end)
end)

T.case("100,000 channel values, aborted waiters", {timeout = 120}, function()
  measure("channel values", H.n(10000, 100), H.n(100000, 1000), function(n)
    local ch = treadle.channel(16)
    local consumer = treadle.spawn(function()
      local sum = 0
      for _ = 1, n do sum = sum + ch:recv().v end
      return sum
    end)
    for i = 1, n do ch:send({v = i, s = "x"}) end
    H.eq(consumer:join(), n * (n + 1) // 2)
    for _ = 1, n // 100 do
      local t = treadle.spawn(function() return ch:recv() end)
      treadle.yield()
      t:abort()
      pcall(t.join, t)
    end
  end)
end)

T.case("issue 16: 20,000 closed channels, try_send/try_recv, selects", {timeout = 120}, function()
  measure("channel closes and selects", H.n(2000, 50), H.n(20000, 500), function(n)
    for i = 1, n do
      local a, b = treadle.channel(2), treadle.channel(1)
      a:try_send({i = i}); a:try_send("x"); b:try_send(i)
      a:close()
      local item, v = treadle.select({b, a}, 0)
      assert(item == b and v == i)
      assert(a:try_recv().i == i)
      if i % 10 == 0 then  -- a waiting select, aborted, and one woken by close
        local t = treadle.spawn(function() return treadle.select({b}) end)
        treadle.yield()
        t:abort()
        pcall(t.join, t)
        local w = treadle.spawn(function() return treadle.select({b}) end)
        treadle.yield()
        b:close()
        w:join()
      end
    end
  end)
end)

T.case("issue 16: 2,000 blocking jobs, some abandoned by their task", {timeout = 300}, function()
  measure("blocking jobs", H.n(200, 20), H.n(2000, 100), function(n)
    for i = 1, n do
      if i % 20 == 0 then
        local t = treadle.spawn(treadle.blocking, "return string.rep('x', 10000)")
        treadle.yield()
        t:abort()
        pcall(t.join, t)
      elseif i % 20 == 1 then
        assert(not pcall(treadle.blocking, "error('no')"))
      else
        local s, k = treadle.blocking(function(x) return x .. "!", {x} end, "v" .. i)
        assert(s == "v" .. i .. "!" and k[1] == "v" .. i)
      end
    end
  end)
end)

T.case("issue 16: 300 processes with pipes, some killed", {timeout = 300}, function()
  measure("processes", H.n(30, 5), H.n(300, 20), function(n)
    for i = 1, n do
      local p = assert(treadle.process.spawn{"cat", stderr = "pipe"})
      if i % 3 == 0 then
        p:kill("SIGKILL")
      else
        assert(p:write("line " .. i .. "\n"))
        assert(treadle.select({p}, 10) == p)
        assert(p:stdout_read_line() == "line " .. i)
        p:shutdown("stdin")
      end
      p:wait()
      local missing = treadle.process.spawn{"treadle-no-such-command"}
      assert(not missing or H.valgrind) -- valgrind: exec fails in the child
      if missing then missing:wait() end
    end
  end)
end)

T.case("1,000 runs", {outside = true, timeout = 120}, function(ctx)
  local function body(n)
    for i = 1, n do
      if ctx.flavor == "current_thread" then
        treadle.run(function() treadle.spawn(function() end); treadle.sleep(0); return i end)
      elseif i % 10 == 0 then     -- starting threads is slower: 1 in 10
        treadle.run(H.module_name("mod_results"), {flavor = "multi_thread", workers = 2})
      end
    end
  end
  measure("runs", H.n(100, 10), H.n(1000, 20), body)
  local th = H.threads()
  H.note("threads after the runs: " .. tostring(th))
  H.ok(th and th < 4, "threads left behind by 1,000 runs: " .. tostring(th))
end)

return T.main()
