-- A tiny test harness for treadle's Lua module: plain lua5.4, no busted.
--
-- A test file (tests/lua/test_*.lua) registers named cases and ends with
-- `return T.main()`:
--
--     package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
--                    .. "?.lua;" .. package.path
--     local H = require "harness"
--     local T = H.suite("tasks", ...)
--     T.case("join returns the results", function(ctx) ... end)
--     T.case("only here", {flavors = {"current_thread"}, timeout = 60}, function(ctx) ... end)
--     return T.main()
--
-- Run from the repository root:
--
--     LUA_CPATH="build/bindings/lua/?.so;;" lua5.4 tests/lua/test_tasks.lua [-v] [--inprocess] [PATTERN]
--
-- Every case runs once per flavor (current_thread and multi_thread unless the
-- case says otherwise), each in a child lua5.4 process of its own (under
-- `timeout`, so a crash or a hang fails that case alone and the others go
-- on). The file prints one line per case and flavor and exits non-zero if
-- any failed. In the child:
--   * a plain case runs inside the runtime: on current_thread as the main
--     function of treadle.run(fn, {flavor = "current_thread"}); on
--     multi_thread in the worker states, through the worker module
--     tests/lua/mt_worker.lua, which each worker `require`s; the case runs on
--     worker 0 (opts.on = N for worker N, opts.on = "all" for every worker;
--     ctx.worker / ctx.workers say which), and worker 0 waits for the other
--     workers that run it (its main's return ends the run);
--   * an `outside = true` case is called in the child's main state, with no
--     runtime around it (tests of treadle.run, treadle.runtime, Ctrl-C ...).
-- opts: flavors, workers (default 2), on, outside, run_opts (extra fields for
-- the run's opts table), timeout (seconds, default 30), skip (a reason).
--
-- PATTERN picks the cases whose "suite: case [flavor]" label contains it; -v
-- shows every child's output; --list lists the cases.
--
-- In-process mode (--inprocess, TREADLE_TEST_INPROCESS=1, or automatically
-- under valgrind, which would not see the children): every case runs in
-- this one process, one after the other; the worker states learn the case
-- from /tmp/treadle-lua-test-PID.case instead of the command line.
--
-- The parent sets LUA_PATH for the children (this folder first, so the worker
-- states find mt_worker.lua) and, when neither LUA_CPATH nor LUA_CPATH_5_4 is
-- set, LUA_CPATH to build/bindings/lua/?.so. TREADLE_SANITIZER=asan|tsan|...
-- relaxes memory bounds (and skips what such a build cannot do).

local H = {}
H.WORKER = "__treadle_worker__"
H.FLAVORS = {"current_thread", "multi_thread"}

local function dir_of(source)
  local d = source:match("^@(.*/)")
  return d or "./"
end

H.dir = dir_of(debug.getinfo(1, "S").source)            -- ".../tests/lua/"
H.root = (H.dir == "./" and "../../") or (H.dir .. "../../")
-- package.path as the environment made it (what a fresh worker state gets):
-- the test files put this folder first; take it off again.
H.base_path = package.path
do
  local prefix = H.dir .. "?.lua;"
  while H.base_path:sub(1, #prefix) == prefix do
    H.base_path = H.base_path:sub(#prefix + 1)
  end
end
H.sanitizer = os.getenv("TREADLE_SANITIZER") or ""
H.valgrind = (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil
-- TREADLE_TEST_SCALE (ctest sets it: 0.1 under valgrind, 0.3-0.5 under the
-- sanitizers) scales the big loops; H.slow stretches time bounds
H.scale = tonumber(os.getenv("TREADLE_TEST_SCALE") or "") or 1
H.slow = H.valgrind and 20 or (H.sanitizer ~= "" and 5 or 1)
function H.n(count, least)     -- a loop count, scaled
  return math.max(least or 1, math.floor(count * H.scale))
end

---------------------------------------------------------------------------
-- values and assertions

local function repr(v, depth)
  depth = depth or 0
  local t = type(v)
  if t == "string" then
    if #v > 60 then return string.format("%q...(%d bytes)", v:sub(1, 60), #v) end
    return string.format("%q", v)
  elseif t == "number" then
    if v ~= v then return "nan" end
    return math.type(v) == "integer" and string.format("%d", v) or string.format("%.17g", v)
  elseif t == "table" and depth < 3 then
    local parts, n = {}, 0
    for k, x in pairs(v) do
      n = n + 1
      if n > 12 then parts[#parts + 1] = "..."; break end
      parts[#parts + 1] = "[" .. repr(k, depth + 1) .. "]=" .. repr(x, depth + 1)
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return tostring(v)
end
H.repr = repr

function H.fail(msg, level)
  error(msg, (level or 1) + 1)
end

function H.ok(v, msg)
  if not v then error("assertion failed: " .. (msg or "expected a true value"), 2) end
  return v
end

local function same(a, b)
  if a ~= a and b ~= b then return true end   -- NaN
  return a == b and math.type(a) == math.type(b)
end

function H.eq(got, want, msg)
  if not same(got, want) then
    error(string.format("%s: expected %s, got %s", msg or "values differ",
      repr(want), repr(got)), 2)
  end
  return got
end

function H.deep_eq(a, b, seen)
  if type(a) ~= "table" or type(b) ~= "table" then return same(a, b) end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    if not H.deep_eq(v, b[k], seen) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

function H.same_table(got, want, msg)
  if not H.deep_eq(got, want) then
    error(string.format("%s: expected %s, got %s", msg or "tables differ",
      repr(want), repr(got)), 2)
  end
end

-- s contains the plain substring sub
function H.has(s, sub, msg)
  if type(s) ~= "string" or not s:find(sub, 1, true) then
    error(string.format("%s: expected %s to contain %q", msg or "no match",
      repr(s), sub), 2)
  end
  return s
end

-- fn(...) must raise; the message (tostring'd) must contain `sub` (plain) if
-- given. Returns the error value.
function H.raises(sub, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then
    error(string.format("expected an error%s, got none", sub and (" containing " .. repr(sub)) or ""), 2)
  end
  if sub and not tostring(err):find(sub, 1, true) then
    error(string.format("expected an error containing %q, got %s", sub, repr(err)), 2)
  end
  return err
end

-- fn(...) must raise a clear error: a non-empty string (a bad argument
-- mustn't crash, hang or pass). Returns the message.
function H.bad_arg(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then error("expected a bad-argument error, got none", 2) end
  if type(err) ~= "string" or #err == 0 then
    error("expected an error message (string), got " .. repr(err), 2)
  end
  return err
end

-- The number of values and the values themselves, for checks on nil holes.
function H.pack(...) return table.pack(...) end

function H.note(msg)
  io.stdout:write("NOTE ", tostring(msg):gsub("\n", " "), "\n")
  io.stdout:flush()
end

---------------------------------------------------------------------------
-- process helpers

function H.pid()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("l")
  f:close()
  return tonumber(s:match("^(%d+)"))
end

function H.nfds()
  local p = io.popen("ls /proc/" .. H.pid() .. "/fd | wc -l")
  local n = tonumber(p:read("a"))
  p:close()
  return (n or 1) - 1   -- minus the pipe to `ls` (popen's fd)
end

function H.rss_kib()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  for line in f:lines() do
    local v = line:match("^VmRSS:%s*(%d+)")
    if v then f:close() return tonumber(v) end
  end
  f:close()
  return nil
end

function H.threads()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  for line in f:lines() do
    local v = line:match("^Threads:%s*(%d+)")
    if v then f:close() return tonumber(v) end
  end
  f:close()
end

-- The process's command line (a list), from /proc: what `arg` would be in a
-- worker state that has no `arg`.
function H.cmdline()
  local f = assert(io.open("/proc/self/cmdline", "rb"))
  local s = f:read("a")
  f:close()
  local t = {}
  for part in s:gmatch("([^%z]*)%z") do t[#t + 1] = part end
  return t
end

function H.q(s)   -- shell quoting
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- wall clock in seconds (float) without treadle: `date`, ~2 ms per call
function H.wall()
  local p = io.popen("date +%s.%N")
  local v = tonumber(p:read("l"))
  p:close()
  return v
end

-- The lua interpreter that runs this file.
function H.lua()
  if arg then
    local i = -1
    while arg[i - 1] do i = i - 1 end
    if arg[i] then return arg[i] end
  end
  local c = H.cmdline()
  return c[1] or "lua5.4"
end

-- Environment for child lua5.4 processes (tests that start their own):
-- LUA_PATH with this folder and examples/lua, LUA_CPATH with the build.
function H.child_env()
  local function pre(var, val)
    local old = os.getenv(var .. "_5_4") and (var .. "_5_4") or var
    local cur = os.getenv(old)
    return string.format("%s=%s", old, H.q(val .. ";" .. (cur or ";")))
  end
  local parts = {pre("LUA_PATH", H.dir .. "?.lua;" .. H.root .. "examples/lua/?.lua")}
  if not os.getenv("LUA_CPATH") and not os.getenv("LUA_CPATH_5_4") then
    parts[#parts + 1] = "LUA_CPATH=" .. H.q(H.root .. "build/bindings/lua/?.so;;")
  end
  return table.concat(parts, " ")
end

-- The name under which a worker state finds tests/lua/NAME.lua: NAME when
-- its (environment-made) package.path has this folder, else the dotted path
-- from the working directory (the default path has ./?.lua).
function H.module_name(name)
  if package.searchpath(name, H.base_path) then return name end
  local d = H.dir:gsub("^%./", ""):gsub("/$", "")
  if d ~= "" and not d:find("^/") and not d:find("%.%.") then
    return d:gsub("/", ".") .. "." .. name
  end
  return name
end

---------------------------------------------------------------------------
-- helpers for code running inside a runtime (they need treadle)

local treadle_mod
local function T()
  treadle_mod = treadle_mod or require "treadle"
  return treadle_mod
end

-- Runs fn(...) under treadle.timeout(secs): returns fn's results or fails
-- with "did not finish within".
function H.within(secs, fn, ...)
  local r = table.pack(T().timeout(secs, fn, ...))
  if r[1] ~= true then
    error(string.format("did not finish within %g s (%s)", secs, repr(r[2])), 2)
  end
  return table.unpack(r, 2, r.n)
end

-- Waits (sleeping 1 ms at a time) until pred() is true; fails after secs.
function H.wait_until(pred, secs, what)
  local t = T()
  local deadline = t.now() + (secs or 5)
  while not pred() do
    if t.now() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    t.sleep(0.001)
  end
end

-- Lets other tasks run until they are parked in what they wait on.
function H.settle(n)
  local t = T()
  for _ = 1, (n or 5) do t.yield() end
  t.sleep(0.02)
  for _ = 1, (n or 5) do t.yield() end
end

-- A free TCP port on 127.0.0.1 (bound, read, closed).
function H.free_port()
  local l = assert(T().tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  l:close()
  return port
end

-- Reads from conn until `n` bytes came (or end of stream / error).
function H.read_n(conn, n)
  local parts, got = {}, 0
  while got < n do
    local s, err, errno = conn:read(n - got)
    if not s then
      error(string.format("read ended after %d of %d bytes: %s %s", got, n,
        tostring(err), tostring(errno)), 2)
    end
    parts[#parts + 1] = s
    got = got + #s
  end
  return table.concat(parts)
end

-- Reads until end of stream; returns everything.
function H.read_all(conn)
  local parts = {}
  while true do
    local s, err, errno = conn:read()
    if s == nil then
      if err ~= nil then error("read failed: " .. tostring(err) .. " " .. tostring(errno), 2) end
      return table.concat(parts)
    end
    parts[#parts + 1] = s
  end
end

-- A listener on 127.0.0.1:0 with an echo task per connection; returns the
-- listener, its port and the accept-loop task.
function H.echo_server()
  local t = T()
  local l = assert(t.tcp.bind("127.0.0.1", 0))
  local _, port = l:addr()
  local loop = t.spawn(function()
    while true do
      local c = l:accept()
      if not c then return end
      t.spawn(function()
        while true do
          local s = c:read(16384)
          if not s then break end
          if not c:write(s) then break end
        end
        c:close()
      end)
    end
  end)
  return l, port, loop
end

---------------------------------------------------------------------------
-- suites

local function merge(a, b)
  local t = {}
  for k, v in pairs(a or {}) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end

function H.load_suite(script)
  local chunk = assert(loadfile(script))
  return chunk(H.WORKER)
end

function H.suite(name, modarg)
  local S = {name = name, cases = {}, by_name = {}}

  function S.case(cname, opts, fn)
    if fn == nil then fn, opts = opts, {} end
    assert(type(fn) == "function", "case needs a function")
    assert(not S.by_name[cname], "duplicate case " .. cname)
    local c = {name = cname, fn = fn, opts = opts,
               flavors = opts.flavors or H.FLAVORS,
               workers = opts.workers or 2, timeout = opts.timeout or 30}
    S.cases[#S.cases + 1] = c
    S.by_name[cname] = c
    return c
  end

  function S.main()
    if modarg == H.WORKER then return S end
    return H.run_main(S)
  end

  return S
end

-- Case selection for the worker states in the in-process mode (no
-- --case on the command line): a file named after the process id.
local function case_file(suffix)
  return string.format("/tmp/treadle-lua-test-%d.%s", H.pid(), suffix)
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs one case on one flavor in this process; returns ok, error, ms.
function H.run_case(S, c, flavor, workers)
  local ctx = {flavor = flavor, worker = 0, workers = 1, suite = S.name,
               case = c.name, pid = H.pid()}
  local treadle = require "treadle"
  local t0 = treadle.now()
  local ok, err
  if c.opts.outside then
    ctx.workers = workers
    ok, err = xpcall(c.fn, debug.traceback, ctx)
  elseif flavor == "current_thread" then
    local r = table.pack(pcall(treadle.run, function()
      return xpcall(c.fn, debug.traceback, ctx)
    end, merge({flavor = "current_thread"}, c.opts.run_opts)))
    if not r[1] then ok, err = false, "treadle.run raised: " .. tostring(r[2])
    else ok, err = r[2], r[3] end
  else
    local r = table.pack(pcall(treadle.run, H.module_name("mt_worker"),
      merge({flavor = "multi_thread", workers = workers}, c.opts.run_opts)))
    if not r[1] then ok, err = false, "treadle.run raised: " .. tostring(r[2])
    else ok, err = r[2], r[3] end
  end
  return ok, err, (treadle.now() - t0) * 1000
end

-- the child: runs one case on one flavor, prints RESULT ok|fail|skip
local function run_child(S, cname, flavor, workers)
  local c = S.by_name[cname]
  if not c then
    io.stdout:write("RESULT fail no case named ", cname, "\n")
    os.exit(1)
  end
  if c.opts.skip then
    io.stdout:write("RESULT skip ", c.opts.skip, "\n")
    return true
  end
  local ok, err, ms = H.run_case(S, c, flavor, workers)
  if ok then
    io.stdout:write(string.format("RESULT ok %.0f ms\n", ms))
  else
    io.stdout:write("RESULT fail ", tostring(err), "\n")
  end
  io.stdout:flush()
  return ok
end
H.run_child = run_child

-- called by mt_worker.lua in every worker state
function H.worker_main(w)
  local cl = H.cmdline()
  local script, cname, workers
  for i = 1, #cl do
    if not script and cl[i]:match("%.lua$") and i > 1 then script = cl[i] end
    if cl[i] == "--case" then cname = cl[i + 1] end
    if cl[i] == "--workers" then workers = tonumber(cl[i + 1]) end
  end
  local inprocess = cname == nil
  if inprocess then     -- the in-process mode: the parent left a note
    local note = assert(read_file(case_file("case")), "no --case and no case file")
    script, cname, workers = note:match("^(.-)\n(.-)\n(%d+)")
    workers = tonumber(workers)
  end
  local S = H.load_suite(script)
  local c = S.by_name[cname]
  local on = c.opts.on or 0
  workers = workers or c.workers
  -- Worker 0's main returning ends the run and cancels the other workers'
  -- tasks: a worker that runs the case says when it is done, and worker 0
  -- waits for them before it returns.
  local done = T().channel(workers, "harness:done:" .. cname)
  local ok, err = true, nil
  if on == "all" or on == w then
    local ctx = {flavor = "multi_thread", worker = w, workers = workers,
                 suite = S.name, case = cname, pid = H.pid()}
    ok, err = xpcall(c.fn, debug.traceback, ctx)
    if not ok and w ~= 0 then
      local line = "RESULT fail [worker " .. w .. "] " .. tostring(err) .. "\n"
      if inprocess then
        local f = io.open(case_file("fail"), "a")
        if f then f:write(line); f:close() end
      else
        io.stdout:write(line)
        io.stdout:flush()
      end
    end
    if w ~= 0 then done:send(w) end
  end
  if w == 0 then
    local others = on == "all" and workers - 1 or (on ~= 0 and 1 or 0)
    for _ = 1, others do done:recv() end
  end
  return ok, err
end

-- Valgrind (the ctest wrapper of the valgrind preset) sees this process
-- only, not children: run the cases here, one after the other.
H.inprocess = os.getenv("TREADLE_TEST_INPROCESS") == "1" or
  (os.getenv("LD_PRELOAD") or ""):find("vgpreload", 1, true) ~= nil

local function print_result(label, status, why, notes)
  local first = (why or ""):match("^[^\n]*")
  if status == "ok" then
    io.stdout:write(string.format("ok   %s%s%s\n", label,
      first ~= "" and (" (" .. first .. ")") or "",
      notes and #notes > 0 and ("  -- " .. table.concat(notes, "; ")) or ""))
  elseif status == "skip" then
    io.stdout:write(string.format("skip %s: %s\n", label, first))
  else
    io.stdout:write(string.format("FAIL %s: %s\n", label, first))
  end
  io.stdout:flush()
end

-- all cases in this process (notes go straight to stdout)
local function run_inprocess(S, pattern, script)
  local passed, failed, skipped, failures = 0, 0, 0, {}
  for _, c in ipairs(S.cases) do
    for _, fl in ipairs(c.flavors) do
      local label = string.format("%s: %s [%s]", S.name, c.name, fl)
      if pattern and not label:find(pattern, 1, true) then goto next end
      if c.opts.skip then
        skipped = skipped + 1
        print_result(label, "skip", c.opts.skip)
        goto next
      end
      do
        write_file(case_file("case"), string.format("%s\n%s\n%d\n", script, c.name, c.workers))
        os.remove(case_file("fail"))
        local ok, err, ms = H.run_case(S, c, fl, c.workers)
        local wf = read_file(case_file("fail"))
        if ok and wf and wf ~= "" then ok, err = false, wf:gsub("^RESULT fail ", "") end
        collectgarbage()
        if ok then
          passed = passed + 1
          print_result(label, "ok", string.format("%.0f ms", ms))
        else
          failed = failed + 1
          failures[#failures + 1] = label
          print_result(label, "FAIL", tostring(err))
          for line in tostring(err):gmatch("[^\n]+") do io.stdout:write("     | ", line, "\n") end
        end
      end
      ::next::
    end
  end
  os.remove(case_file("case"))
  os.remove(case_file("fail"))
  return passed, failed, skipped, failures
end

-- every case in a child process of its own
function H.run_children(S, pattern, script, verbose)
  local env = H.child_env()
  local probe = io.popen(env .. " " .. H.q(H.lua()) .. " -e 'require \"treadle\"' 2>&1")
  local perr = probe:read("a")
  if not probe:close() then
    io.stdout:write("Bail out! require \"treadle\" failed: ", perr, "\n")
    os.exit(2)
  end
  local passed, failed, skipped, failures = 0, 0, 0, {}
  for _, c in ipairs(S.cases) do
    for _, fl in ipairs(c.flavors) do
      local label = string.format("%s: %s [%s]", S.name, c.name, fl)
      if pattern and not label:find(pattern, 1, true) then goto next end
      do
        local cmd = string.format("%s timeout -k 5 %d %s %s --case %s --flavor %s --workers %d 2>&1",
          env, math.ceil(c.timeout * H.slow), H.q(H.lua()), H.q(script), H.q(c.name), fl, c.workers)
        local p = io.popen(cmd)
        local out = p:read("a")
        local _, how, code = p:close()
        local result, notes, extra_fail = nil, {}, {}
        for line in out:gmatch("[^\n]*") do
          local r = line:match("^RESULT (.*)")
          if r then
            if r:match("^fail %[worker") then extra_fail[#extra_fail + 1] = r
            else result = r end
          end
          local n = line:match("^NOTE (.*)")
          if n then notes[#notes + 1] = n end
        end
        local status, why
        if how == "signal" then
          status, why = "FAIL", "killed by signal " .. tostring(code)
        elseif code == 124 or code == 137 then
          status, why = "FAIL", "timed out after " .. math.ceil(c.timeout * H.slow) .. " s"
        elseif type(code) == "number" and code > 128 and not result then
          status, why = "FAIL", "killed by signal " .. (code - 128) .. " (" ..
            (({[6] = "SIGABRT", [11] = "SIGSEGV", [7] = "SIGBUS", [8] = "SIGFPE"})[code - 128] or "?") .. ")"
        elseif #extra_fail > 0 then
          status, why = "FAIL", extra_fail[1]:gsub("^fail ", "")
        elseif result and result:match("^ok") then
          status, why = "ok", result:match("^ok%s*(.*)")
          if code ~= 0 then status, why = "FAIL", "exit code " .. tostring(code) .. " after RESULT ok" end
        elseif result and result:match("^skip") then
          status, why = "skip", result:match("^skip%s*(.*)")
        elseif result then
          status, why = "FAIL", result:gsub("^fail ", "")
        else
          status, why = "FAIL", "no result (exit " .. tostring(how) .. " " .. tostring(code) .. ")"
        end
        print_result(label, status, why, notes)
        if status == "ok" then passed = passed + 1
        elseif status == "skip" then skipped = skipped + 1
        else
          failed = failed + 1
          failures[#failures + 1] = label
        end
        if status == "FAIL" or verbose then
          local lines = {}
          for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
          for k = math.max(1, #lines - 40), #lines do io.stdout:write("     | ", lines[k], "\n") end
          io.stdout:flush()
        end
      end
      ::next::
    end
  end
  return passed, failed, skipped, failures
end

function H.run_main(S)
  local args = arg or {}
  local i, verbose, pattern = 1, false, nil
  local case, flavor, workers
  while args[i] do
    local a = args[i]
    if a == "--case" then case = args[i + 1]; i = i + 1
    elseif a == "--flavor" then flavor = args[i + 1]; i = i + 1
    elseif a == "--workers" then workers = tonumber(args[i + 1]); i = i + 1
    elseif a == "-v" then verbose = true
    elseif a == "--inprocess" then H.inprocess = true
    elseif a == "--list" then
      for _, c in ipairs(S.cases) do print(c.name) end
      return
    else pattern = a end
    i = i + 1
  end
  if case then
    local ok = run_child(S, case, flavor or "current_thread", workers or 2)
    if not ok then os.exit(1, true) end
    return
  end

  -- the parent
  local script = arg and arg[0]
  local passed, failed, skipped, failures
  if H.inprocess then
    io.stdout:write("(in-process mode: every case runs in this process)\n")
    passed, failed, skipped, failures = run_inprocess(S, pattern, script)
  else
    passed, failed, skipped, failures = H.run_children(S, pattern, script, verbose)
  end
  io.stdout:write(string.format("%s: %d passed, %d failed, %d skipped\n",
    S.name, passed, failed, skipped))
  if failed > 0 then
    io.stdout:write("failed: ", table.concat(failures, "; "), "\n")
    os.exit(1, true)     -- close the state first (valgrind's leak check)
  end
end

return H
