-- The README's Lua quick start (examples/quickstart/quickstart.lua), run as
-- a newcomer runs it: plain, it prints the spawned task's result; with
-- --echo 0 it serves echo on 127.0.0.1 until SIGINT, then says "bye".
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local T = H.suite("quickstart", ...)
local SCRIPT = H.root .. "examples/quickstart/quickstart.lua"
local RESULT = "the spawned task slept 10 ms and returned 42"
local CT = {"current_thread"}

T.case("sleep and spawn", {outside = true, flavors = CT}, function()
  local p = io.popen(string.format("%s timeout -k 2 30 %s %s 2>&1", H.child_env(), H.q(H.lua()), H.q(SCRIPT)))
  local out = p:read("a")
  local _, how, code = p:close()
  H.ok(how == "exit" and code == 0, string.format("exit %s %s; output:\n%s", how, code, out))
  H.eq(out, RESULT .. "\n", "output")
end)

-- TSan holds a signal back until the thread that got it calls an
-- intercepted function (test_examples.lua).
local TSAN_SKIP = H.sanitizer == "tsan" and "TSan delays signals to parked threads" or nil

T.case("echo server until SIGINT", {outside = true, flavors = CT, skip = TSAN_SKIP}, function()
  -- the popen shell says its pid, then becomes the quick start
  local p = io.popen(string.format("echo $$; %s exec %s %s --echo 0 2>&1", H.child_env(),
    H.q(H.lua()), H.q(SCRIPT)))
  local pid = H.ok(tonumber(p:read("l")), "the quick start's pid")
  -- if it never stops, it is killed in 30 s (and this case fails)
  os.execute(string.format("(sleep 30; grep -qs quickstart /proc/%d/cmdline && kill -KILL %d) >/dev/null 2>&1 &", pid, pid))
  local lines = {p:read("l"), p:read("l")}
  H.eq(lines[1], RESULT, "first line")
  local port = tonumber((lines[2] or ""):match("^echo server on 127%.0%.0%.1:(%d+), Ctrl%-C stops it$"))
  if not port then
    os.execute("kill -KILL " .. pid)
    p:close()
    H.fail("no 'echo server on' line: " .. H.repr(lines[2]))
  end
  local treadle = require "treadle"
  local message = string.rep("hello, treadle\n", 100)
  local echoed = treadle.run(function()
    local conn <close> = assert(treadle.tcp.connect("127.0.0.1", port))
    assert(conn:write(message))
    return H.within(10, H.read_n, conn, #message)
  end)
  os.execute("kill -INT " .. pid)
  local rest = p:read("a")
  local _, how, code = p:close()
  H.eq(echoed, message, "echoed")
  H.ok(how == "exit" and code == 0, string.format("exit %s %s after SIGINT; output:\n%s", how, code, rest))
  H.eq(rest, "bye\n", "after SIGINT")
end)

return T.main()
