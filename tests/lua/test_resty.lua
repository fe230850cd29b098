-- OpenResty's client libraries, unchanged, on treadle: Debian's
-- lua-nginx-redis (nginx.redis) and lua-nginx-memcached (nginx.memcached)
-- with `ngx = require "treadle.ngx"`, against a real redis-server and
-- memcached that each case starts on 127.0.0.1 (a free port, a temporary
-- folder of its own) and stops by its pid: commands, pipelines, pub/sub,
-- keep-alive reuse, timeouts; and lua-nginx-dns (nginx.dns.resolver)
-- against a DNS server of the test's own. Skipped where the packages are
-- missing (scripts/test.sh installs them).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
ngx = require "treadle.ngx"  -- luacheck: ignore (the libraries read the global)
local T = H.suite("resty", ...)

local have, REDIS, MEMCACHED = H.have_file, H.which("redis-server"), H.which("memcached")
local NO_REDIS = not (REDIS and have("/usr/share/lua/5.1/nginx/redis.lua")) and
  "redis-server or lua-nginx-redis missing (scripts/setup.sh redis-server lua-nginx-redis)" or nil
local NO_MEMCACHED = not (MEMCACHED and have("/usr/share/lua/5.1/nginx/memcached.lua")) and
  "memcached or lua-nginx-memcached missing (scripts/setup.sh memcached lua-nginx-memcached)" or nil

local start = H.start_daemon

local function start_redis()
  return start(function(port, dir)
    return string.format("exec %s --port %d --bind 127.0.0.1 --dir %s --save '' --appendonly no --daemonize no",
      REDIS, port, H.q(dir))
  end)
end

local function start_memcached()
  return start(function(port)
    -- memcached refuses to run as root unless told which user to be
    return string.format("exec %s -l 127.0.0.1 -p %d -U 0 -m 16 -u \"$(id -un)\"", MEMCACHED, port)
  end)
end

-- Runs body(port) with a server, stopping it however body ends.
local function with(starter, body)
  local port, stop = starter()
  local ok, err = xpcall(body, debug.traceback, port)
  stop()
  if not ok then error(err, 0) end
end

T.case("the ngx table: what the libraries need is there", {flavors = {"current_thread"}}, function()
  H.eq(type(ngx.socket.tcp), "function")
  H.eq(ngx.null, ngx.null)
  H.eq(type(unpack), "function", "Lua 5.1's unpack")
  H.has(package.path, "/usr/share/lua/5.1/?.lua", "the 5.1 library folder on package.path")
end)

T.case("redis: commands, errors, nil, hashes", {skip = NO_REDIS, timeout = 60}, function()
  local redis = require "nginx.redis"
  with(start_redis, function(port)
    local r = assert(redis:new())
    r:set_timeout(2000)
    H.eq(r:connect("127.0.0.1", port), 1)
    H.eq(r:set("dog", "an animal"), "OK")
    H.eq(r:get("dog"), "an animal")
    H.eq(r:get("cat"), ngx.null, "a missing key is ngx.null")
    H.eq(r:incr("n"), 1); H.eq(r:incr("n"), 2)
    H.eq(r:hmset("h", "a", "1", "b", "2"), "OK", "hmset goes through unpack")
    H.same_table(r:hmget("h", "a", "b", "c"), {"1", "2", ngx.null})
    local big = string.rep("x", 1024 * 1024)
    H.eq(r:set("big", big), "OK")
    H.ok(r:get("big") == big, "1 MiB bulk reply intact")
    local res, err = r:lpush("dog", "x")
    H.eq(res, false, "a redis error: false, message")
    H.has(err, "WRONGTYPE")
    H.same_table(r:mget("dog", "n"), {"an animal", "2"})
    H.eq(r:close(), 1)
  end)
end)

T.case("redis: pipelines", {skip = NO_REDIS, timeout = 60}, function()
  local redis = require "nginx.redis"
  with(start_redis, function(port)
    local r = redis:new()
    assert(r:connect("127.0.0.1", port))
    r:init_pipeline()
    for i = 1, 100 do r:set("k" .. i, i) end
    for i = 1, 100 do r:get("k" .. i) end
    r:get("none")
    local res = assert(r:commit_pipeline())
    H.eq(#res, 201)
    for i = 1, 100 do H.eq(res[i], "OK"); H.eq(res[100 + i], tostring(i)) end
    H.eq(res[201], ngx.null)
    r:close()
  end)
end)

T.case("redis: pub/sub between two tasks", {skip = NO_REDIS, timeout = 60}, function()
  local redis = require "nginx.redis"
  with(start_redis, function(port)
    local sub = redis:new()
    assert(sub:connect("127.0.0.1", port))
    local res = assert(sub:subscribe("news"))
    H.same_table(res, {"subscribe", "news", 1})
    local got = {}
    local listener = treadle.spawn(function()
      for _ = 1, 3 do
        local m = assert(sub:read_reply())
        got[#got + 1] = m[3]
      end
    end)
    local pub = redis:new()
    assert(pub:connect("127.0.0.1", port))
    for i = 1, 3 do
      -- publish returns how many subscribers got it: wait for the first
      H.wait_until(function() return pub:publish("news", "m" .. i) == 1 end, 5, "a subscriber")
    end
    listener:join()
    H.same_table(got, {"m1", "m2", "m3"})
    H.same_table(sub:unsubscribe("news"), {"unsubscribe", "news", 0})
    sub:close(); pub:close()
  end)
end)

T.case("redis: keep-alive reuse", {skip = NO_REDIS, timeout = 60}, function()
  local redis = require "nginx.redis"
  with(start_redis, function(port)
    for i = 1, 5 do
      local r = redis:new()
      H.eq(r:connect("127.0.0.1", port), 1)
      H.eq(r:get_reused_times(), i - 1, "reused times")
      H.eq(r:set("x", i), "OK")
      H.eq(r:set_keepalive(10000, 10), 1)
    end
    -- the server saw one connection (and the readiness probe's)
    local r = redis:new()
    assert(r:connect("127.0.0.1", port))
    local info = r:info("stats")
    H.ok(r:get_reused_times() > 0, "getreusedtimes > 0")
    local total = tonumber(info:match("total_connections_received:(%d+)"))
    H.eq(total, 2, "one probe and one client connection")
    r:close()
  end)
end)

local NO_CONNECTOR = NO_REDIS or not have("/usr/share/lua/5.1/nginx/redis/connector.lua") and
  "lua-nginx-redis-connector missing (scripts/setup.sh lua-nginx-redis-connector)" or nil
T.case("redis-connector: a DSN with a database, the pool", {skip = NO_CONNECTOR, timeout = 60}, function()
  local connector = require "nginx.redis.connector"
  with(start_redis, function(port)
    local rc = assert(connector.new({connect_timeout = 2000, read_timeout = 2000}))
    local url = "redis://127.0.0.1:" .. port .. "/2"
    -- connector 0.06 gives the read timeout as sock:settimeout(itself):
    -- OpenResty reads a table as 0, the default, and so does treadle
    local r = assert(rc:connect({url = url}))
    H.eq(r:set("where", "db 2"), "OK")
    H.eq(rc:set_keepalive(r), 1, "back to the pool")
    r = assert(rc:connect({url = url}))
    H.eq(r:get_reused_times(), 1, "the pooled connection")
    H.eq(r:get("where"), "db 2")
    H.eq(r:select(0), "OK")
    H.eq(r:get("where"), ngx.null, "the DSN's database was selected")
    r:close()
    local bad, err = rc:connect({host = "127.0.0.1", port = 1})
    H.eq(bad, nil); H.eq(err, "connection refused")
  end)
end)

T.case("redis: a timeout", {skip = NO_REDIS, timeout = 60}, function()
  local redis = require "nginx.redis"
  with(start_redis, function(port)
    local r = redis:new()
    r:set_timeout(100)
    assert(r:connect("127.0.0.1", port))
    local res, err = r:blpop("empty-list", 5)   -- the server holds it 5 s
    H.eq(res, nil); H.eq(err, "timeout")
    r:close()
  end)
end)

T.case("memcached: set, get, add, incr, delete, keep-alive", {skip = NO_MEMCACHED, timeout = 60}, function()
  local memcached = require "nginx.memcached"
  with(start_memcached, function(port)
    local m = assert(memcached:new())
    m:set_timeout(2000)
    H.eq(m:connect("127.0.0.1", port), 1)
    H.eq(m:set("dog key", "an animal", 0, 7), 1, "a key with a space (escape_uri)")
    local v, flags = m:get("dog key")
    H.eq(v, "an animal"); H.eq(flags, "7")
    H.eq(m:get("cat"), nil, "a miss is nil")
    local ok, err = m:add("dog key", "again")
    H.eq(ok, nil); H.eq(err, "NOT_STORED")
    H.eq(m:set("n", 10), 1)
    H.eq(m:incr("n", 5), "15")
    H.eq(m:delete("n"), 1)
    local big = string.rep("y", 100000)
    H.eq(m:set("big", big), 1)
    H.ok(m:get("big") == big, "100 kB value intact")
    local res = m:get({"dog key", "big", "none"})
    H.eq(res["dog key"][1], "an animal", "a multi-get")
    H.eq(res.none, nil)
    H.ok(m:version():match("^%d"), "version")
    H.eq(m:set_keepalive(10000, 5), 1)
    m = memcached:new()
    assert(m:connect("127.0.0.1", port))
    H.eq(m:get_reused_times(), 1)
    m:close()
  end)
end)

-- lua-nginx-dns (nginx.dns.resolver) against a DNS server of the test's
-- own: a treadle UDP socket that answers one client's A queries with
-- 192.0.2.7.
local NO_DNS = not H.have_file("/usr/share/lua/5.1/nginx/dns/resolver.lua") and
  "lua-nginx-dns missing (scripts/setup.sh lua-nginx-dns)" or nil

local function dns_server(answer)
  local u = treadle.udp.socket()
  assert(u:bind("127.0.0.1", 0))
  local _, port = u:getsockname()
  local stats = {queries = 0}
  local task = treadle.spawn(function()
    while true do
      local q, host, qport = u:receivefrom()
      if not q then return end
      stats.queries = stats.queries + 1
      stats.name = q:sub(13):match("^(.-)%z")
      if answer then
        -- the header (the query's id, a response, one question, one
        -- answer), the question as asked, then an A record pointing at it
        local reply = q:sub(1, 2) .. "\x81\x80\0\1\0\1\0\0\0\0" .. q:sub(13) ..
          "\xc0\x0c\0\1\0\1\0\0\1\x2c\0\4\192\0\2\7"
        -- from the server's own port (the resolver's socket takes only
        -- that): connected to this client from now on, enough for a test
        assert(u:setpeername(host, qport))
        assert(u:send(reply))
      end
    end
  end)
  return port, stats, function() task:abort(); u:close() end
end

T.case("dns: the resolver asks a DNS server over UDP", {skip = NO_DNS, timeout = 60}, function()
  local resolver = require "nginx.dns.resolver"
  local port, stats, stop = dns_server(true)
  local r = assert(resolver:new{nameservers = {{"127.0.0.1", port}}, retrans = 2, timeout = 2000})
  local answers = assert(r:query("www.example.test", {qtype = r.TYPE_A}))
  H.eq(answers.errcode, nil)
  H.eq(answers[1].address, "192.0.2.7")
  H.eq(answers[1].name, "www.example.test")
  H.eq(answers[1].ttl, 300)
  H.eq(stats.queries, 1)
  H.eq(stats.name, "\3www\7example\4test", "the name as it went out")
  stop()
end)

T.case("dns: a server that does not answer times out", {skip = NO_DNS, timeout = 60}, function()
  local resolver = require "nginx.dns.resolver"
  local port, stats, stop = dns_server(false)
  local r = assert(resolver:new{nameservers = {{"127.0.0.1", port}}, retrans = 2, timeout = 50})
  local answers, err = r:query("www.example.test")
  H.eq(answers, nil)
  H.has(err, "timeout")
  H.eq(stats.queries, 2, "retrans = 2: asked twice")
  stop()
end)

return T.main()
