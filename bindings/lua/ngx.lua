-- require "treadle.ngx" (ltreadle_ngx.c runs this chunk with the treadle
-- module and the C helpers): an `ngx` table for OpenResty's pure-Lua
-- libraries. Called once per lua_State; require keeps the table.
local treadle, c = ...

-- Lua 5.1's unpack, which OpenResty's libraries take from the globals.
if unpack == nil then unpack = table.unpack end  -- luacheck: ignore
-- Debian installs them (lua-nginx-redis, lua-nginx-memcached, ...) for
-- Lua 5.1: /usr/share/lua/5.1/nginx/redis.lua is require "nginx.redis".
for _, dir in ipairs({"/usr/local/share/lua/5.1/", "/usr/share/lua/5.1/"}) do
  local entry = dir .. "?.lua;" .. dir .. "?/init.lua"
  if not package.path:find(dir, 1, true) then
    package.path = package.path .. ";" .. entry
  end
end

-- LuaJIT's require "table.new" and "table.clear", which OpenResty's
-- libraries take with pcall(require, ...).
package.preload["table.new"] = package.preload["table.new"] or function() return c.table.new end
package.preload["table.clear"] = package.preload["table.clear"] or function()
  return function(t)
    for k in next, t do t[k] = nil end
  end
end

-- require "ffi": LuaJIT's FFI as far as byte buffers (ltreadle_ffi.c),
-- which lua-nginx-websocket masks frames in; the rest raises.
package.preload.ffi = package.preload.ffi or function() return c.ffi end

-- LuaJIT's BitOp (require "bit"), which OpenResty's libraries use
-- (lua-resty-dns, ...): 32-bit operations on Lua 5.4's integers, results
-- signed as LuaJIT's.
package.preload.bit = package.preload.bit or function()
  local function tobit(x)
    x = math.tointeger(x) or math.floor(x)
    return ((x & 0xffffffff) ~ 0x80000000) - 0x80000000
  end
  local function fold(op, x, ...)
    local r = tobit(x)
    for i = 1, select("#", ...) do r = op(r, tobit((select(i, ...)))) end
    return tobit(r)
  end
  local bit = {tobit = tobit}
  function bit.bnot(x) return tobit(~tobit(x)) end
  function bit.band(...) return fold(function(a, b) return a & b end, ...) end
  function bit.bor(...) return fold(function(a, b) return a | b end, ...) end
  function bit.bxor(...) return fold(function(a, b) return a ~ b end, ...) end
  function bit.lshift(x, n) return tobit(tobit(x) << (tobit(n) & 31)) end
  function bit.rshift(x, n) return tobit((tobit(x) & 0xffffffff) >> (tobit(n) & 31)) end
  function bit.arshift(x, n) return tobit(tobit(x) >> (tobit(n) & 31) | (tobit(x) < 0 and ~(0xffffffff >> (tobit(n) & 31)) or 0)) end
  function bit.rol(x, n)
    x, n = tobit(x) & 0xffffffff, tobit(n) & 31
    return tobit(x << n | x >> (32 - n))
  end
  function bit.ror(x, n)
    x, n = tobit(x) & 0xffffffff, tobit(n) & 31
    return tobit(x >> n | x << (32 - n))
  end
  function bit.bswap(x)
    x = tobit(x) & 0xffffffff
    return tobit((x >> 24) | (x >> 8 & 0xff00) | (x << 8 & 0xff0000) | (x << 24))
  end
  function bit.tohex(x, n)
    n = n or 8
    local up = n < 0
    n = math.min(math.abs(n), 8)
    local s = string.format(up and "%08X" or "%08x", tobit(x) & 0xffffffff)
    return s:sub(9 - n)
  end
  return bit
end

local ngx = {}
ngx.null = c.null
ngx.OK, ngx.ERROR, ngx.AGAIN, ngx.DONE, ngx.DECLINED = 0, -1, -2, -4, -5
ngx.socket = {tcp = treadle.tcp.socket, udp = treadle.udp.socket}
ngx.socket.stream = ngx.socket.tcp
ngx.config = {subsystem = "stream", ngx_lua_version = 10025, debug = false,
              nginx_version = 1022001, prefix = function() return "./" end}

-- time: ngx.now is the wall clock with milliseconds, as OpenResty's cached
-- time (update_time has nothing to refresh here)
ngx.now = c.now
function ngx.time() return math.floor(c.now()) end
function ngx.update_time() end
function ngx.sleep(seconds) return treadle.sleep(seconds) end

-- log levels as nginx numbers them; ngx.log writes to stderr
local levels = {"STDERR", "EMERG", "ALERT", "CRIT", "ERR", "WARN", "NOTICE", "INFO", "DEBUG"}
for i, name in ipairs(levels) do ngx[name] = i - 1 end
function ngx.log(level, ...)
  if math.type(level) ~= "integer" or level < 0 or level > 8 then
    error("bad argument #1 to 'log' (bad log level)", 2)
  end
  local parts = table.pack(...)
  for i = 1, parts.n do
    local v = parts[i]
    parts[i] = v == nil and "nil" or v == c.null and "null" or tostring(v)
  end
  local info = debug.getinfo(2, "Sl")
  local where = info and (info.short_src .. ":" .. (info.currentline or 0) .. ": ") or ""
  io.stderr:write(string.format("[%s] %s%s\n", levels[level + 1]:lower(), where,
    table.concat(parts, "", 1, parts.n)))
end

-- light threads: tasks of this worker
ngx.thread = {}
function ngx.thread.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  return treadle.spawn(fn, ...)
end
-- Waits for the first of the threads to finish: true and its results, or
-- false and its error. Several: a watcher task joins each and says which
-- finished first on a channel; the others are then stopped.
local function joined(t)
  local r = table.pack(pcall(t.join, t))
  return table.unpack(r, 1, r.n)
end
function ngx.thread.wait(...)
  local n = select("#", ...)
  if n == 0 then error("bad argument #1 to 'wait' (at least one thread expected)", 2) end
  local threads = {...}
  for i = 1, n do
    if type(threads[i]) ~= "userdata" or not pcall(threads[i].done, threads[i]) then
      error("bad argument #" .. i .. " to 'wait' (a thread expected)", 2)
    end
  end
  for i = 1, n do
    if threads[i]:done() then return joined(threads[i]) end
  end
  if n == 1 then return joined(threads[1]) end
  local first, outcome = treadle.channel(1), nil
  local watchers = {}
  for i = 1, n do
    watchers[i] = treadle.spawn(function()
      local r = table.pack(joined(threads[i]))
      if outcome == nil then outcome = r; first:send(i) end
    end)
  end
  first:recv()
  for i = 1, n do watchers[i]:abort() end
  return table.unpack(outcome, 1, outcome.n)
end
function ngx.thread.kill(t)
  if type(t) ~= "userdata" or not pcall(t.done, t) then
    error("bad argument #1 to 'kill' (a thread expected)", 2)
  end
  if t:done() then return nil, "already terminated" end
  t:abort()
  return true
end

-- timers: treadle.at and treadle.every (callback timers: no task while
-- they wait); fn(premature, ...); an error is printed to stderr and an
-- every timer goes on, as OpenResty logs it
ngx.timer = {}
local function check_timer(delay, fn)
  if type(delay) ~= "number" or delay ~= delay or delay < 0 then
    error("bad argument #1 (delay must be a number >= 0)", 3)
  end
  if type(fn) ~= "function" then
    error("bad argument #2 (function expected, got " .. type(fn) .. ")", 3)
  end
end
function ngx.timer.at(delay, fn, ...)
  check_timer(delay, fn)
  treadle.at(delay, fn, ...)
  return true
end
function ngx.timer.every(interval, fn, ...)
  check_timer(interval, fn)
  if interval == 0 then error("bad argument #1 to 'every' (interval must be > 0)", 2) end
  treadle.every(interval, fn, ...)
  return true
end

ngx.worker = {}
function ngx.worker.id() return treadle.worker() end
ngx.worker.count = c.count
function ngx.worker.exiting() return false end
function ngx.worker.pid()
  local f = io.open("/proc/self/stat")
  local pid = f and tonumber(f:read("l"):match("^(%d+)"))
  if f then f:close() end
  return pid
end

-- require "ngx.pipe" (lua-resty-core's): spawn(args, opts) over
-- treadle.process.spawn, whose objects have ngx.pipe's methods. args: an
-- array of strings, or one string that /bin/sh -c runs. opts:
-- merge_stderr, buffer_size (checked; the buffers grow as needed),
-- environ ({"NAME=value", ...}: the whole environment), write_timeout,
-- stdout_read_timeout, stderr_read_timeout, wait_timeout (ms).
local function merged() return nil, "merged to stdout" end
local merged_methods = {stderr_read_line = merged, stderr_read_all = merged,
                        stderr_read_bytes = merged, stderr_read_any = merged}
local function pipe_spawn(args, opts)
  local cmd
  if type(args) == "string" then
    cmd = {"/bin/sh", "-c", args}
  elseif type(args) == "table" then
    cmd = table.move(args, 1, #args, 1, {})
  else
    error("bad args arg: table expected, got " .. type(args), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad opts arg: table expected, got " .. type(opts), 2)
  end
  opts = opts or {}
  if opts.buffer_size ~= nil and (math.type(opts.buffer_size) ~= "integer" or opts.buffer_size <= 0) then
    error("bad buffer_size option", 2)
  end
  if opts.environ ~= nil then
    if type(opts.environ) ~= "table" then error("bad environ option: table expected", 2) end
    cmd.env, cmd.clear_env = {}, true
    for i, kv in ipairs(opts.environ) do
      local k, v
      if type(kv) == "string" then k, v = kv:match("^([^=]+)=(.*)$") end
      if not k then error("bad value at index " .. i .. " of environ option", 2) end
      cmd.env[k] = v
    end
  end
  cmd.stdin, cmd.stdout = "pipe", "pipe"
  cmd.stderr = opts.merge_stderr and "stdout" or "pipe"
  local proc, err = treadle.process.spawn(cmd)
  if not proc then return nil, err end
  proc:set_timeouts(opts.write_timeout, opts.stdout_read_timeout,
                    opts.stderr_read_timeout, opts.wait_timeout)
  if not opts.merge_stderr then return proc end
  -- stderr's reads answer as OpenResty's do for a merged stderr.
  return setmetatable({}, {__index = function(_, name)
    return merged_methods[name] or function(_, ...) return proc[name](proc, ...) end
  end})
end
package.preload["ngx.pipe"] = function() return {_VERSION = "0.1", spawn = pipe_spawn} end

ngx.escape_uri = c.escape_uri
ngx.unescape_uri = c.unescape_uri
ngx.encode_base64 = c.encode_base64
ngx.decode_base64 = c.decode_base64
ngx.md5 = c.md5
ngx.md5_bin = c.md5_bin
ngx.sha1_bin = c.sha1_bin
ngx.re = c.re
-- ngx.shared.NAME: the shared dictionary of that name (treadle.shared.dict
-- made it, in any worker's state), or nil, as nginx's lua_shared_dict.
ngx.shared = setmetatable({}, {__index = function(_, name)
  return treadle.shared.get(name)
end})

return ngx
