-- treadle.process.spawn (ngx.pipe's API): pipes read with the buffered
-- patterns, writes, shutdown, wait's outcomes (exit codes, signals), kill,
-- timeouts, the options, and bad input: a command that does not exist, a
-- malformed table, reads after close.
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("process", ...)

local spawn = treadle.process.spawn

T.case("sort fed from Lua, read line by line", function()
  local p = assert(spawn{"sort"})
  H.ok(math.type(p:pid()) == "integer" and p:pid() > 0, "a pid")
  H.eq(p:write("pear\napple\nfig\n"), 15)
  H.eq(p:shutdown("stdin"), true)
  H.eq(p:stdout_read_line(), "apple")
  H.eq(p:stdout_read_line(), "fig")
  H.eq(p:stdout_read_line(), "pear")
  H.same_table(H.pack(p:stdout_read_line()), {n = 3, nil, "closed", ""})
  H.same_table(H.pack(p:wait()), {n = 3, true, "exit", 0})
  H.same_table(H.pack(p:wait()), {n = 3, true, "exit", 0}, "a second wait answers the same")
end)

T.case("read_all, read_bytes, read_any, partial lines, CR dropped", function()
  local p = assert(spawn{"printf", "one\r\ntwo\nthree-four-five", stdin = "null"})
  H.eq(p:stdout_read_line(), "one")
  H.eq(p:stdout_read_bytes(2), "tw")
  H.eq(p:stdout_read_bytes(0), "")
  H.eq(p:stdout_read_any(3), "o\nt")
  H.eq(p:stdout_read_all(), "hree-four-five")
  H.eq(p:stdout_read_all(), "", "at the end, read_all gives what is left: nothing")
  H.same_table(H.pack(p:stdout_read_bytes(1)), {n = 3, nil, "closed", ""})
  H.same_table(H.pack(p:stdout_read_any(1)), {n = 3, nil, "closed", ""})
  p:wait()
  local q = assert(spawn{"printf", "abc", stdin = "null"})
  H.same_table(H.pack(q:stdout_read_bytes(5)), {n = 3, nil, "closed", "abc"}, "partial bytes")
  q:wait()
end)

T.case("a big output through a small buffer, and a big input", function()
  local N = H.n(200000, 10000)
  local p = assert(spawn{"cat"})
  local writer = treadle.spawn(function()
    local ok = p:write(string.rep("0123456789\n", N))
    p:shutdown("stdin")
    return ok
  end)
  local lines, bytes = 0, 0
  while true do
    local line, err = p:stdout_read_line()
    if not line then H.eq(err, "closed"); break end
    H.eq(line, "0123456789")
    lines = lines + 1; bytes = bytes + #line + 1
  end
  H.eq(lines, N); H.eq(writer:join(), N * 11)
  H.eq((p:wait()), true)
end)

T.case("stderr pipe, exit codes, the environment, cwd", function()
  local p = assert(spawn{"sh", "-c", "echo out; echo err >&2; echo \"$TREADLE_X:$HOME:$(pwd)\"; exit 3",
                         stdin = "null", stderr = "pipe", cwd = "/tmp",
                         env = {TREADLE_X = "x1", HOME = false}})
  H.eq(p:stderr_read_line(), "err")
  H.eq(p:stdout_read_all(), "out\nx1::/tmp\n")
  H.same_table(H.pack(p:wait()), {n = 3, false, "exit", 3})
  local q = assert(spawn{"/usr/bin/env", clear_env = true, env = {A = 1}, stdin = "null"})
  H.eq(q:stdout_read_all(), "A=1\n", "clear_env empties the environment")
  q:wait()
end)

T.case("killed by a signal: wait says signal and its number", function()
  local p = assert(spawn{"sleep", "30", stdin = "null"})
  H.eq(p:kill("SIGTERM"), true)
  H.same_table(H.pack(p:wait()), {n = 3, false, "signal", 15})
  H.eq(p:kill(9), true, "a child that ended is not signalled, and that is no error")
  local q = assert(spawn{"sleep", "30", stdin = "null"})
  q:kill("KILL")
  H.same_table(H.pack(q:wait()), {n = 3, false, "signal", 9})
end)

-- Spawns a command that cannot start: nil, message, errno name. Valgrind
-- runs posix_spawn's clone as a fork, so there the failed exec's errno
-- never reaches the parent: the child exits 127 (or 99, valgrind's error
-- exit at the child's leak check), as after fork and exec.
local function spawn_failing(cmd)
  local r = H.pack(spawn(cmd))
  if H.valgrind and r[1] then
    local _, how, code = r[1]:wait()
    H.ok(how == "exit" and (code == 127 or code == 99), "under valgrind: exit " .. tostring(code))
    return nil
  end
  return r
end

T.case("a command that does not exist, a cwd that does not exist", function()
  local r = spawn_failing{"treadle-no-such-command"}
  if r then
    H.same_table(r, {n = 3, nil, "treadle-no-such-command: no such file or directory", "ENOENT"})
  end
  r = spawn_failing{"/nonexistent/prog"}
  if r then H.same_table(r, {n = 3, nil, "/nonexistent/prog: no such file or directory", "ENOENT"}) end
  r = spawn_failing{"true", cwd = "/nonexistent-dir-x"}
  if r then H.eq(r[1], nil); H.eq(r[3], "ENOENT", r[2]) end
end)

T.case("stderr = \"stdout\": both streams in stdout's pipe, in order (2>&1)", function()
  local p = assert(spawn{"/bin/sh", "-c", "echo out; echo err >&2; echo again", stderr = "stdout"})
  H.eq(p:stdout_read_all(), "out\nerr\nagain\n")
  H.raises("stderr is not a pipe", p.stderr_read_line, p)
  H.same_table(H.pack(p:wait()), {n = 3, true, "exit", 0})
end)

T.case("bad input raises", function()
  H.raises("table expected, got no value", spawn)
  H.raises("table expected, got string", spawn, "ls")
  H.raises("the command is empty", spawn, {})
  H.raises("command item 2 is table", spawn, {"ls", {}})
  H.raises("command item 1 is empty", spawn, {""})
  H.raises("holds a NUL byte", spawn, {"ls", "a\0b"})
  H.raises("unknown option 'stdn'", spawn, {"ls", stdn = "pipe"})
  H.raises("stdout must be \"pipe\"", spawn, {"ls", stdout = "pipes"})
  H.raises("stdin must be \"pipe\"", spawn, {"ls", stdin = 1})
  H.raises("stdout must be \"pipe\", \"null\" or", spawn, {"ls", stdout = "stdout"})
  H.raises("stderr must be \"pipe\", \"null\", \"stdout\"", spawn, {"ls", stderr = "stderr"})
  H.raises("cwd must be a string", spawn, {"ls", cwd = 1})
  H.raises("env must be a table", spawn, {"ls", env = "A=1"})
  H.raises("env: names are strings", spawn, {"ls", env = {A = {}}})
  H.raises("env: names are strings", spawn, {"ls", env = {"A=1"}})
  H.raises("env: names are strings", spawn, {"ls", env = {A = true}})
  local p = assert(spawn{"cat", stdout = "null"})
  H.raises("stdout is not a pipe", p.stdout_read_line, p)
  H.raises("stderr is not a pipe", p.stderr_read_all, p)
  H.raises("a negative size", p.stdout_read_bytes, p, -1)
  H.raises("max must be at least 1", p.stdout_read_any, p, 0)
  H.raises("number expected", p.stdout_read_bytes, p, "x")
  H.raises("string expected", p.write, p, {})
  H.raises("invalid option 'stdinn'", p.shutdown, p, "stdinn")
  H.raises("not a signal name", p.kill, p, "SIGNOPE")
  H.raises("a signal number is 0..64", p.kill, p, 99)
  H.raises("a timeout is 0", p.set_timeouts, p, -1)
  H.raises("number has no integer representation", p.set_timeouts, p, 1.5)
  H.bad_arg(p.wait, {})
  H.bad_arg(p.pid, "x")
  p:shutdown("stdin")
  H.same_table(H.pack(p:wait()), {n = 3, true, "exit", 0})
  local q = assert(spawn{"true", stdin = "null", stdout = "null"})
  H.raises("stdin is not a pipe", q.write, q, "x")
  H.same_table(H.pack(q:shutdown("stdin")), {n = 2, nil, "not a pipe"})
  q:wait()
end)

T.case("reads and writes after close say closed", function()
  local p = assert(spawn{"cat"})
  H.eq(p:write("x\n"), 2)
  H.eq(p:stdout_read_line(), "x")
  p:shutdown("stdout")
  H.same_table(H.pack(p:stdout_read_line()), {n = 3, nil, "closed", ""})
  p:shutdown("stdin")
  H.same_table(H.pack(p:write("y")), {n = 2, nil, "closed"})
  p:wait()
  -- a child that ended: writing to its stdin is "closed" (EPIPE, no SIGPIPE)
  local q = assert(spawn{"true"})
  q:wait()
  H.same_table(H.pack(q:write(string.rep("z", 200000))), {n = 2, nil, "closed"})
  -- the object itself closed
  local r = assert(spawn{"true", stdin = "null", stdout = "null"})
  r:wait()
  getmetatable(r).__close(r)
  H.raises("process object is closed", r.pid, r)
end)

T.case("timeouts: a read and a wait give up, the child runs on", function()
  local p = assert(spawn{"sleep", "30", stdin = "null"})
  p:set_timeouts(nil, 20, nil, 20)
  H.same_table(H.pack(p:stdout_read_line()), {n = 3, nil, "timeout", ""})
  H.same_table(H.pack(p:wait()), {n = 2, nil, "timeout"})
  p:kill("SIGKILL")
  p:set_timeouts(nil, nil, nil, 0)
  H.same_table(H.pack(p:wait()), {n = 3, false, "signal", 9})
end)

T.case("a reader, a writer and a waiter at once; busy pipes raise", function()
  local p = assert(spawn{"cat"})
  local reader = treadle.spawn(function() return p:stdout_read_line() end)
  local waiter = treadle.spawn(function() return p:wait() end)
  H.settle()
  H.raises("pipe busy reading", p.stdout_read_line, p)
  H.raises("another task waits", p.wait, p)
  H.eq(p:write("hello\n"), 6)
  H.eq(H.within(5, reader.join, reader), "hello")
  p:shutdown("stdin")
  H.eq(H.within(5, waiter.join, waiter), true)
end)

T.case("an aborted reader leaves the pipe usable", function()
  local p = assert(spawn{"cat"})
  local reader = treadle.spawn(function() return p:stdout_read_line() end)
  H.settle()
  reader:abort()
  H.raises("cancelled", reader.join, reader)
  p:write("after\n")
  H.eq(p:stdout_read_line(), "after")
  p:shutdown("stdin")
  p:wait()
end)

T.case("kill_on_drop: a collected process is killed, and reaped", function()
  local pid
  do
    local p = assert(spawn{"sleep", "30", stdin = "null", kill_on_drop = true})
    pid = p:pid()
  end
  collectgarbage(); collectgarbage()
  -- the runtime's reaper waits for it: kill -0 fails once it is gone
  H.wait_until(function() return not os.execute("kill -0 " .. pid .. " 2>/dev/null") end,
               10, "the dropped child is gone")
end)

T.case("outside a task: spawn raises", {outside = true}, function()
  H.raises("needs a running treadle task", spawn, {"true"})
end)

return T.main()
