-- The examples in examples/lua run and say what they should: each is
-- started as a child lua5.4 (LUA_PATH with examples/lua, as the README's
-- command sets it), its output checked.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local T = H.suite("examples", ...)
local EX = H.root .. "examples/lua/"
local CT = {"current_thread"}

local function run(script, args, limit)
  local cmd = string.format("%s timeout -k 2 %d %s %s %s 2>&1", H.child_env(), limit or 30,
    H.q(H.lua()), H.q(EX .. script), args or "")
  local p = io.popen(cmd)
  local out = p:read("a")
  local _, how, code = p:close()
  return out, how, code
end

local function expect_ok(out, how, code)
  H.ok(how == "exit" and code == 0, string.format("exit %s %s; output:\n%s", how, code, out))
end

T.case("hello.lua", {outside = true, flavors = CT}, function()
  local out, how, code = run("hello.lua")
  expect_ok(out, how, code)
  H.has(out, "hello, ada (after 30 ms, on worker 0)")
  H.has(out, "[worker 1] hello", "worker 1 ran main too")
  H.has(out, "== done")
end)

T.case("missing_drivers.lua", {outside = true, flavors = CT}, function()
  local out, how, code = run("missing_drivers.lua")
  expect_ok(out, how, code)
  H.has(out, "[current_thread] enable_time = false: sleep(0.001) -> timers are disabled: build the runtime with enable_time")
  H.has(out, "[multi_thread] enable_io = false: bind(127.0.0.1:0) -> I/O is disabled: build the runtime with enable_io")
end)

T.case("thread_distribution.lua", {outside = true, flavors = CT}, function()
  local out, how, code = run("thread_distribution.lua", "40 2")
  expect_ok(out, how, code)
  H.has(out, "total 40 tasks, 0 moved between workers")
  H.note((out:match("overlap [%d.]+") or "?"))
end)

T.case("remote_spawn.lua", {outside = true, flavors = CT}, function()
  local out, how, code = run("remote_spawn.lua", "3 9")
  expect_ok(out, how, code)
  H.has(out, "9 jobs on 3 workers, 3 distinct threads: every job ran where it was sent")
end)

T.case("hit_counter.lua", {outside = true, flavors = CT}, function()
  for _, workers in ipairs({2, 4}) do
    local out, how, code = run("hit_counter.lua", "40 " .. workers)
    expect_ok(out, how, code)
    local split = H.has(out, "40 hits, 40 counted by the workers ("):match("%((.-)%)")
    local sum, n = 0, 0
    for w, c in split:gmatch("(%d+):(%d+)") do sum, n = sum + tonumber(c), n + 1 end
    H.eq(n, workers, "a count per worker")
    H.eq(sum, 40, "the workers' counts add up")
    H.has(out, "last visitor 127.0.0.1, remembered for")
  end
end)

T.case("process_pipeline.lua", {outside = true, flavors = CT}, function()
  local out, how, code = run("process_pipeline.lua", "200")
  expect_ok(out, how, code)
  H.has(out, "apple 200\nfig 200\npear 200\n", "uniq's counts, in sort's order")
  H.has(out, "sort: exit 0, uniq: exit 0 (600 lines in, 3 out)")
end)

T.case("echo_client.lua alone", {outside = true, flavors = CT}, function()
  local out, how, code = run("echo_client.lua", "0 20 50 3000")
  expect_ok(out, how, code)
  H.has(out, "20 of 20 connections ok")
end)

-- redis_session.lua against a redis-server of its own, on both flavors.
local NO_REDIS = not (H.which("redis-server") and H.have_file("/usr/share/lua/5.1/nginx/redis.lua")) and
  "redis-server or lua-nginx-redis missing (scripts/setup.sh redis-server lua-nginx-redis)" or nil
T.case("redis_session.lua", {flavors = CT, skip = NO_REDIS, timeout = 90}, function()
  local port, stop = H.start_daemon(function(p, dir)
    return string.format("exec redis-server --port %d --bind 127.0.0.1 --dir %s --save '' --daemonize no",
      p, H.q(dir))
  end)
  local ok, err = pcall(function()
    for _, workers in ipairs({1, 2}) do
      local out, how, code = run("redis_session.lua", port .. " " .. workers, 60)
      expect_ok(out, how, code)
      for w = 0, workers - 1 do
        H.has(out, "[worker " .. w .. "] GET greeting -> hello from treadle")
        H.has(out, "[worker " .. w .. "] pipeline of 6 commands -> counter 5")
        H.has(out, "[worker " .. w .. "] subscriber got: message1 message2 message3")
        H.has(out, "[worker " .. w .. "] connect again: reused 3 times")
      end
      H.has(out, "== done")
    end
  end)
  stop()
  assert(ok, err)
end)

local NO_WEBSOCKET = not H.have_file("/usr/share/lua/5.1/nginx/websocket/client.lua") and
  "lua-nginx-websocket missing (scripts/setup.sh lua-nginx-websocket)" or nil
T.case("websocket_echo.lua", {outside = true, flavors = CT, skip = NO_WEBSOCKET}, function()
  local out, how, code = run("websocket_echo.lua", "3")
  expect_ok(out, how, code)
  H.has(out, "text of 20 bytes -> text echoed\ntext of 210 bytes -> text echoed\n" ..
             "text of 70010 bytes -> text echoed\n", "each length encoding")
  H.has(out, "binary of 5 bytes -> binary echoed")
  H.has(out, "ping -> pong are you there")
  H.has(out, "close -> close 1000")
  H.has(out, "== done")
end)

-- The repository's root as an absolute path.
local function abs_root()
  local p = io.popen("cd " .. H.q(H.root) .. " && pwd")
  local dir = p:read("l")
  p:close()
  return dir .. "/"
end

-- Issue 18: a multi_thread example started by its absolute path from
-- another folder, with no examples/lua on LUA_PATH, still finds its worker
-- module.
-- The module comes from LUA_CPATH where that is an absolute path (ctest
-- sets it to the preset's build): under the sanitizer presets the plain
-- build's module would not be instrumented, and TSan would report races it
-- cannot see the other side of.
local function elsewhere_env()
  local root = abs_root()
  local cpath = os.getenv("LUA_CPATH")
  if not cpath or cpath:sub(1, 1) ~= "/" then cpath = root .. "build/bindings/lua/?.so;;" end
  return string.format("cd /tmp && exec env -u LUA_PATH -u LUA_PATH_5_4 LUA_CPATH=%s",
    H.q(cpath)), root
end

for _, ex in ipairs({{"hello.lua", ""}, {"remote_spawn.lua", "3 9"},
                     {"missing_drivers.lua", ""}, {"thread_distribution.lua", "40 2"}}) do
  T.case(ex[1] .. " by its absolute path, from /tmp", {outside = true, flavors = CT}, function()
    local start, root = elsewhere_env()
    local p = io.popen(string.format("%s timeout -k 2 30 %s %s %s 2>&1", start, H.q(H.lua()),
      H.q(root .. "examples/lua/" .. ex[1]), ex[2]))
    local out = p:read("a")
    local _, how, code = p:close()
    expect_ok(out, how, code)
  end)
end

-- echo_server.lua in the background, echo_client.lua against it, then a
-- signal; the server's last line gives the split per worker. `elsewhere`:
-- start it as elsewhere_env says.
local function server_session(flavor, workers, sig, conns, elsewhere)
  -- the popen shell says its pid, then becomes the server (in the
  -- foreground: a background job of sh would start with SIGINT ignored)
  local start, script = H.child_env() .. " exec", EX .. "echo_server.lua"
  if elsewhere then
    local root
    start, root = elsewhere_env()
    script = root .. "examples/lua/echo_server.lua"
  end
  local cmd = string.format("echo $$; %s %s %s 0 %s %d 2>&1",
    start, H.q(H.lua()), H.q(script), flavor, workers)
  local p = io.popen(cmd)
  local pid = tonumber(p:read("l"))
  H.ok(pid, "server pid")
  local lines, port = {}, nil
  for _ = 1, 50 do
    local l = p:read("l")
    if not l then break end
    lines[#lines + 1] = l
    port = l:match("^listening on 127%.0%.0%.1:(%d+)")
    if port then break end
  end
  if not port then
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    p:close()
    H.fail("no 'listening' line:\n" .. table.concat(lines, "\n"))
  end
  local out, how, code = run("echo_client.lua", string.format("%s %d 20 4096", port, conns))
  os.execute(string.format("kill -%s %d", sig, pid))
  -- if it ignores the signal, it is killed in 10 s (and this case fails)
  os.execute(string.format("(sleep 10; grep -qs echo_server /proc/%d/cmdline && kill -KILL %d) >/dev/null 2>&1 &", pid, pid))
  local rest = p:read("a")
  p:close()
  expect_ok(out, how, code)
  H.has(out, conns .. " of " .. conns .. " connections ok")
  if rest:find("interrupted", 1, true) then
    H.note("treadle.run took the SIGINT itself: " .. rest:match("interrupted[^\n]*"))
  end
  local served, split = rest:match("served (%d+) connections; per worker: ([%d: ]+)")
  if not served and flavor == "multi_thread" and rest:find("interrupted", 1, true) then
    return nil, rest
  end
  H.ok(served, "the server's summary line:\n" .. rest)
  H.eq(tonumber(served), conns, "connections served")
  return split, rest
end

-- TSan holds a signal back until the thread that got it calls an
-- intercepted function; a worker parked in treadle's futex never does.
local TSAN_SKIP = H.sanitizer == "tsan" and "TSan delays signals to threads parked in futex()" or nil

for _, sig in ipairs({"TERM", "INT"}) do
  T.case("echo_server.lua current_thread, SIG" .. sig, {outside = true, flavors = CT, skip = TSAN_SKIP}, function()
    local split = server_session("current_thread", 1, sig, 10)
    H.eq(split, "0:10")
  end)
  T.case("echo_server.lua multi_thread 2 workers, SIG" .. sig, {outside = true, flavors = CT, skip = TSAN_SKIP}, function()
    local split = server_session("multi_thread", 2, sig, 40)
    if not split then return end      -- SIGINT taken by treadle.run (noted)
    local a, b = split:match("^0:(%d+) 1:(%d+)")
    H.ok(a and b, "split " .. split)
    H.eq(tonumber(a) + tonumber(b), 40, "split adds up")
    H.ok(tonumber(a) > 0 and tonumber(b) > 0, "both workers served: " .. split)
    H.note("split " .. split)
  end)
end

T.case("echo_server.lua multi_thread by its absolute path, from /tmp", {outside = true, flavors = CT, skip = TSAN_SKIP}, function()
  local split = server_session("multi_thread", 2, "TERM", 10, true)
  H.ok(split and split:match("^0:%d+ 1:%d+"), "split " .. tostring(split))
end)

T.case("echo_server.lua: bad usage", {outside = true, flavors = CT}, function()
  local out, how, code = run("echo_server.lua", "")
  H.eq(code, 2, "usage exit code: " .. out)
  H.has(out, "usage")
end)

return T.main()
