-- treadle.shared: every dict method with ngx.shared.DICT's return values,
-- expiry (without timing bounds: a sleep never ends early, so an entry
-- with a 1 ms TTL has expired after a 5 ms sleep), LRU eviction, a full
-- dict, bad input, exact incr counts from 2 and 4 workers, and no leaks.
-- (The store itself is checked against a model by tests/c/test-shdict.c.)
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local H = require "harness"
local treadle = require "treadle"
local T = H.suite("shdict", ...)

local OVERHEAD = 64   -- what an entry costs beyond its key and string value

-- a dict of its own for each case (cases may share a process)
local serial = 0
local function fresh(cap, tag)
  serial = serial + 1
  local name = string.format("t-%s-%d-%d", tag or "d", H.pid(), serial)
  return treadle.shared.dict(name, cap or 65536), name
end

-- the three values a store returns
local function stored(ok, err, forcible)
  return {ok, err, forcible}
end

T.case("set and get every value type, with flags", function()
  local d = fresh()
  H.same_table(stored(d:set("i", 42)), {true, nil, false})
  H.eq(d:get("i"), 42)
  H.eq(math.type(d:get("i")), "integer", "integers stay integers")
  d:set("f", 1.5)
  H.eq(d:get("f"), 1.5)
  H.eq(math.type(d:get("f")), "float")
  d:set("t", true); d:set("no", false)
  H.eq(d:get("t"), true)
  H.eq(d:get("no"), false)
  d:set("s", "hello")
  H.eq(d:get("s"), "hello")
  local bin = "a\0b\255" .. string.rep("z", 3000)   -- longer than get's buffer
  d:set("bin", bin)
  H.eq(d:get("bin"), bin)
  d:set("empty", "")
  H.eq(d:get("empty"), "")
  H.eq(d:get("missing"), nil)
  H.eq(select("#", d:get("missing")), 1, "a missing key: one nil")
  -- flags: returned when not 0
  d:set("fl", "v", 0, 7)
  local v, fl = d:get("fl")
  H.eq(v, "v"); H.eq(fl, 7)
  H.eq(select("#", d:get("s")), 1, "no flags, one value")
  d:set("maxfl", 1, 0, 4294967295)
  H.eq(select(2, d:get("maxfl")), 4294967295)
  -- numbers as keys are their string
  d:set(12, "twelve")
  H.eq(d:get("12"), "twelve")
  H.eq(d:get(12), "twelve")
  -- set nil deletes
  d:set("s", nil)
  H.eq(d:get("s"), nil)
end)

T.case("add, safe_add, replace, delete", function()
  local d = fresh()
  H.same_table(stored(d:add("k", 1)), {true, nil, false})
  H.same_table(stored(d:add("k", 2)), {false, "exists", false})
  H.same_table(stored(d:safe_add("k", 2)), {false, "exists", false})
  H.eq(d:get("k"), 1, "add keeps the old value")
  H.same_table(stored(d:replace("k", 3)), {true, nil, false})
  H.eq(d:get("k"), 3)
  H.same_table(stored(d:replace("nope", 3)), {false, "not found", false})
  H.eq(d:get("nope"), nil)
  H.same_table(stored(d:safe_add("k2", "x")), {true, nil, false})
  H.same_table(stored(d:safe_set("k2", "y")), {true, nil, false})
  H.eq(d:get("k2"), "y")
  H.eq(d:delete("k"), true)
  H.eq(d:get("k"), nil)
  H.eq(d:delete("k"), true, "deleting a missing key is fine")
  H.same_table(stored(d:add("k", 4)), {true, nil, false}, "add after delete")
  -- an expired key counts as missing for add and replace
  d:set("e", "old", 0.001)
  treadle.sleep(0.005)
  H.same_table(stored(d:replace("e", "new")), {false, "not found", false})
  H.same_table(stored(d:add("e", "new")), {true, nil, false})
  H.eq(d:get("e"), "new")
end)

T.case("incr: init, init_ttl, floats, not a number", function()
  local d = fresh()
  H.same_table({d:incr("n", 1)}, {nil, "not found"})
  H.same_table({d:incr("n", 1, 0)}, {1, nil, false})
  H.same_table({d:incr("n", 5)}, {6})
  H.same_table({d:incr("n", -10, 100)}, {-4, nil, false}, "init is ignored when the key exists")
  H.eq(d:ttl("n"), 0.0, "no init_ttl: never expires")
  H.eq(d:incr("f", 0.5, 1), 1.5)
  H.eq(d:incr("f", 1), 2.5)
  H.eq(math.type(d:incr("n", 1)), "integer")
  d:set("big", math.maxinteger)
  local v = d:incr("big", 1)
  H.eq(math.type(v), "float", "integer overflow gives a float")
  H.eq(d:incr("str5", 1, 10, 100), 11)
  local ttl = d:ttl("str5")
  H.ok(ttl > 99 and ttl <= 100, "init_ttl 100 s: ttl " .. tostring(ttl))
  d:expire("str5", 50)
  H.eq(d:incr("str5", 1, 0, 1000), 12)
  H.ok(d:ttl("str5") <= 50, "an existing key keeps its TTL")
  d:set("s", "abc")
  H.same_table({d:incr("s", 1)}, {nil, "not a number"})
  H.same_table({d:incr("s", 1, 0)}, {nil, "not a number"})
  d:set("b", true)
  H.same_table({d:incr("b", 1)}, {nil, "not a number"})
  H.eq(d:incr("numstr", "2", "3"), 5, "numeric strings are numbers, as tonumber says")
  H.eq(math.type(d:incr("numstr", 1.0)), "integer", "a float with an integer value adds as one")
  H.eq(d:incr("numstr", 0.5), 6.5)
  -- an expired counter starts again from init
  d:set("exp", 100, 0.001)
  treadle.sleep(0.005)
  H.same_table({d:incr("exp", 1)}, {nil, "not found"})
  H.eq(d:incr("exp", 1, 0), 1)
end)

T.case("ttl and expire", function()
  local d = fresh()
  d:set("forever", 1)
  H.eq(d:ttl("forever"), 0.0)
  d:set("hour", 1, 3600)
  local t = d:ttl("hour")
  H.ok(t > 3599 and t <= 3600, "ttl of a 3600 s key: " .. tostring(t))
  H.eq(d:expire("hour", 0), true)
  H.eq(d:ttl("hour"), 0.0, "expire 0: never")
  H.eq(d:expire("forever", 10), true)
  t = d:ttl("forever")
  H.ok(t > 9 and t <= 10, "ttl after expire(10): " .. tostring(t))
  H.same_table({d:ttl("missing")}, {nil, "not found"})
  H.same_table({d:expire("missing", 1)}, {nil, "not found"})
  -- sub-millisecond TTLs still expire
  d:set("tiny", "x", 0.0001)
  treadle.sleep(0.005)
  H.eq(d:get("tiny"), nil)
  H.same_table({d:ttl("tiny")}, {nil, "not found"})
  H.same_table({d:expire("tiny", 5)}, {nil, "not found"}, "an expired key cannot be revived")
end)

T.case("expiry: get_stale sees expired values until they are freed", function()
  local d = fresh(65536)
  -- "live" first: a store frees expired entries at the LRU tail, and under
  -- valgrind "k" may have expired by the next store
  d:set("live", "w")
  d:set("k", "v", 0.001, 3)
  H.same_table({d:get_stale("live")}, {"w", nil, false})
  treadle.sleep(0.005)
  H.eq(d:get("k"), nil, "expired")
  H.same_table({d:get_stale("k")}, {"v", 3, true})
  H.eq(d:get_stale("missing"), nil)
  local before = d:free_space()
  H.eq(before, 65536 - 2 * OVERHEAD - 2 - 5, "an expired entry holds its memory")
  H.eq(d:flush_expired(), 1)
  H.eq(d:get_stale("k"), nil, "freed")
  H.eq(d:free_space(), before + OVERHEAD + 2, "and its memory came back")
end)

T.case("flush_all and flush_expired(max)", function()
  local d = fresh(65536)
  for i = 1, 10 do d:set("k" .. i, i) end
  local used = 65536 - d:free_space()
  H.eq(used, 10 * OVERHEAD + 9 * 2 + 3)
  d:flush_all()
  for i = 1, 10 do H.eq(d:get("k" .. i), nil) end
  H.same_table({d:get_stale("k3")}, {3, nil, true})
  H.eq(#d:get_keys(0), 0, "get_keys skips expired keys")
  H.eq(65536 - d:free_space(), used, "flush_all frees nothing yet")
  H.eq(d:flush_expired(3), 3)
  H.eq(d:flush_expired(0), 7)
  H.eq(d:flush_expired(), 0)
  H.eq(d:free_space(), 65536)
  -- a store after flush_all works as on an empty dict
  H.same_table(stored(d:add("k1", "again")), {true, nil, false})
end)

T.case("get_keys: most recent first, max", function()
  local d = fresh(1 << 20)
  for i = 1, 2000 do d:set("k" .. i, i) end
  local keys = d:get_keys()
  H.eq(#keys, 1024, "default max 1024")
  H.eq(keys[1], "k2000")
  H.eq(keys[1024], "k977")
  H.eq(#d:get_keys(0), 2000, "0: all")
  d:get("k5")
  H.same_table(d:get_keys(2), {"k5", "k2000"}, "get makes a key the most recent")
  d:set("k7", 1, 0.001)
  treadle.sleep(0.005)
  local all = d:get_keys(0)
  H.eq(#all, 1999)
  for _, k in ipairs(all) do H.ok(k ~= "k7", "no expired key") end
  H.same_table(fresh():get_keys(), {}, "an empty dict")
end)

T.case("lists: lpush, rpush, lpop, rpop, llen", function()
  local d = fresh(65536)
  H.eq(d:llen("q"), 0, "a missing list is empty")
  H.eq(d:lpop("q"), nil)
  H.eq(d:rpush("q", "b"), 1)
  H.eq(d:rpush("q", 3), 2)
  H.eq(d:lpush("q", "a"), 3)
  H.eq(d:rpush("q", 4.5), 4)
  H.eq(d:llen("q"), 4)
  H.eq(d:free_space(), 65536 - OVERHEAD - 1 - 4 * 40 - 2, "items cost 40 bytes and their string")
  H.same_table({d:get("q")}, {nil, "value is a list"})
  H.same_table({d:incr("q", 1)}, {nil, "not a number"})
  H.eq(d:lpop("q"), "a")
  H.eq(d:rpop("q"), 4.5)
  H.eq(math.type(d:rpop("q")), "integer")
  H.eq(d:lpop("q"), "b")
  H.eq(d:lpop("q"), nil, "the last pop took the key")
  H.eq(d:free_space(), 65536)
  -- another value is not a list; set replaces a list
  d:set("s", "str")
  H.same_table({d:lpush("s", 1)}, {nil, "value not a list"})
  H.same_table({d:lpop("s")}, {nil, "value not a list"})
  H.same_table({d:llen("s")}, {nil, "value not a list"})
  d:rpush("l", 1)
  d:set("l", "now a string")
  H.eq(d:get("l"), "now a string")
  -- values: numbers and strings only
  H.same_table({d:lpush("l2", {})}, {nil, "bad value type"})
  H.same_table({d:lpush("l2", true)}, {nil, "bad value type"})
  H.same_table({d:rpush("l2", nil)}, {nil, "bad value type"})
  H.same_table({d:lpush(nil, 1)}, {nil, "nil key"})
  H.same_table({d:llen("")}, {nil, "empty key"})
  H.has(H.bad_arg(d.lpop, d, {}), "string expected")
  -- a list expires as a whole
  d:rpush("e", "x")
  d:expire("e", 0.001)
  treadle.sleep(0.005)
  H.eq(d:llen("e"), 0)
  H.eq(d:rpush("e", "y"), 1, "a new list in its place")
  -- a list alone in a full dict does not evict itself
  local small = fresh(64 + 1 + 3 * 40, "small")
  for i = 1, 3 do H.eq(small:rpush("k", i), i) end
  H.same_table({small:rpush("k", 4)}, {nil, "no memory"})
  H.eq(small:llen("k"), 3)
end)

T.case("capacity and free_space count keys, values and 64 bytes each", function()
  local d = fresh(10000)
  H.eq(d:capacity(), 10000)
  H.eq(d:free_space(), 10000)
  d:set("abc", "12345")
  H.eq(d:free_space(), 10000 - OVERHEAD - 3 - 5)
  d:set("abc", 7)          -- numbers and booleans cost nothing beyond the entry
  H.eq(d:free_space(), 10000 - OVERHEAD - 3)
  d:delete("abc")
  H.eq(d:free_space(), 10000)
  H.has(tostring(d), "treadle.shdict (")
  H.has(tostring(d), "10000 of 10000 bytes free")
end)

-- four entries of exactly 100 bytes fill a 400-byte dict
local function full_dict()
  local d = fresh(400, "full")
  local v = string.rep("v", 100 - OVERHEAD - 2)
  for i = 1, 4 do H.same_table(stored(d:set("k" .. i, v)), {true, nil, false}) end
  H.eq(d:free_space(), 0)
  return d, v
end

T.case("LRU eviction: the least recently used go first", function()
  local d, v = full_dict()
  d:get("k1")                  -- least recent first: k2 k3 k4 k1
  H.same_table({d:incr("k3", 1, 0)}, {nil, "not a number"}) -- touches nothing
  H.same_table(stored(d:set("k5", v)), {true, nil, true}, "set evicts: forcible")
  H.eq(d:get("k2"), nil, "k2 was the least recently used")
  H.eq(d:get("k1"), v)         -- now k3 k4 k5 k1
  H.same_table(stored(d:set("k6", v)), {true, nil, true})
  H.eq(d:get("k3"), nil, "then k3")
  for _, k in ipairs({"k4", "k5", "k1", "k6"}) do H.eq(d:get(k), v, k .. " stays") end
  H.same_table(d:get_keys(), {"k6", "k1", "k5", "k4"}, "most recent first")
end)

T.case("a full dict: safe_set and safe_add fail, set evicts", function()
  local d, v = full_dict()
  H.same_table(stored(d:safe_set("k5", v)), {false, "no memory", false})
  H.same_table(stored(d:safe_add("k5", v)), {false, "no memory", false})
  for i = 1, 4 do H.eq(d:get("k" .. i), v, "nothing evicted by safe ops") end
  -- replacing with a value of the same size fits in place
  H.same_table(stored(d:safe_set("k1", v:upper())), {true, nil, false})
  -- a bigger value does not, and the old one stays
  H.same_table(stored(d:safe_set("k1", v .. "x")), {false, "no memory", false})
  H.eq(d:get("k1"), v:upper())
  -- an expired entry makes room for a safe store, not forcibly
  d:expire("k2", 0.001)
  treadle.sleep(0.005)
  H.same_table(stored(d:safe_set("k5", v)), {true, nil, false})
  H.eq(d:get_stale("k2"), nil, "the expired entry was freed")
  -- set evicts, forcibly
  H.same_table(stored(d:set("k6", v)), {true, nil, true})
  H.eq(#d:get_keys(0), 4)
  -- incr with init on a full dict evicts too
  local n, err, forcible = d:incr("counter", 1, 0)
  H.eq(n, 1); H.eq(err, nil); H.eq(forcible, true)
  -- larger than the whole dict: no memory, even for set
  H.same_table(stored(d:set("huge", string.rep("x", 400))), {false, "no memory", false})
  H.eq(d:get("counter"), 1, "a failed set evicts nothing")
end)

T.case("same name, same dict; treadle.shared.get", function()
  local d, name = fresh(5000)
  H.ok(treadle.shared.dict(name, 5000) == d, "the same object in one state")
  H.ok(treadle.shared.get(name) == d, "shared.get finds it")
  H.eq(treadle.shared.get(name .. "-none"), nil)
  H.raises("exists with capacity 5000, not 6000", treadle.shared.dict, name, 6000)
  d:set("x", 1)
  H.eq(treadle.shared.get(name):get("x"), 1)
end)

T.case("workers share a dict", {flavors = {"multi_thread"}, on = "all", workers = 2}, function(ctx)
  local d = treadle.shared.dict("t-share-" .. ctx.pid, 10000)
  d:set("w" .. ctx.worker, ctx.worker * 10)
  local done = treadle.channel(2, "t-share-done-" .. ctx.pid)
  done:send(ctx.worker)
  if ctx.worker == 0 then
    done:recv(); done:recv()
    H.eq(d:get("w0"), 0)
    H.eq(d:get("w1"), 10, "worker 1's key, seen by worker 0")
    H.ok(treadle.shared.get("t-share-" .. ctx.pid) == d)
  end
end)

T.case("get while another worker rewrites the value: always a whole value",
  {flavors = {"multi_thread"}, on = "all", workers = 2, timeout = 120}, function(ctx)
  local d = treadle.shared.dict("t-rewrite-" .. ctx.pid, 1 << 20)
  local rounds = H.n(20000, 500)
  -- each value says its own length in its first 5 bytes; lengths cross
  -- get's 512-byte buffer both ways
  local function value(i)
    local len = 6 + (i * 7919) % 3000
    return string.format("%05d", len) .. string.rep("x", len - 5)
  end
  local done = treadle.channel(2, "t-rewrite-done-" .. ctx.pid)
  if ctx.worker == 1 then
    for i = 1, rounds do
      d:set("v", value(i))
      if i % 100 == 0 then treadle.yield() end
    end
    done:send(true)
    return
  end
  d:set("v", value(0))
  local seen = 0
  repeat
    local v = d:get("v")
    local len = tonumber(v:sub(1, 5))
    if len ~= #v or v:find("[^x]", 6) then error("a torn value of " .. #v .. " bytes") end
    seen = seen + 1
    if seen % 100 == 0 then treadle.yield() end
  until seen >= rounds
  done:recv()
  H.ok(seen >= rounds)
end)

T.case("a list as a queue between workers: every item once, in order",
  {flavors = {"multi_thread"}, on = "all", workers = 2, timeout = 120}, function(ctx)
  local d = treadle.shared.dict("t-queue-" .. ctx.pid, 1 << 20)
  local n = H.n(20000, 500)
  if ctx.worker == 1 then
    for i = 1, n do
      while not d:rpush("q", i) do treadle.yield() end   -- full: wait for the consumer
      if i % 50 == 0 then treadle.yield() end
    end
    return
  end
  local want = 1
  while want <= n do
    local v = d:lpop("q")
    if v then
      if v ~= want then error(string.format("got %s, expected %d", tostring(v), want)) end
      want = want + 1
    else
      treadle.yield()
    end
  end
  H.eq(d:llen("q"), 0)
end)

-- every worker adds n to one key, yielding now and then; the total is exact
local function hammer(ctx, n)
  local name = "t-hammer-" .. ctx.pid
  local d = treadle.shared.dict(name, 4096)
  for i = 1, n do
    local v, err = d:incr("hits", 1, 0)
    if not v then error("incr failed: " .. tostring(err)) end
    if i % 1000 == 0 then treadle.yield() end
  end
  local done = treadle.channel(ctx.workers, name .. "-done")
  if ctx.worker ~= 0 then
    done:send(true)
  else
    for _ = 1, ctx.workers - 1 do done:recv() end
    H.eq(d:get("hits"), n * ctx.workers, "every increment counted")
  end
end

T.case("2 workers hammering incr: the count is exact",
  {flavors = {"multi_thread"}, on = "all", workers = 2, timeout = 120}, function(ctx)
  hammer(ctx, H.n(200000, 2000))
end)

T.case("4 workers hammering incr: the count is exact",
  {flavors = {"multi_thread"}, on = "all", workers = 4, timeout = 120}, function(ctx)
  hammer(ctx, H.n(100000, 2000))
end)

T.case("tasks of one worker share it too", function()
  local d = fresh()
  local ts = {}
  for i = 1, 10 do
    ts[i] = treadle.spawn(function()
      for _ = 1, 100 do d:incr("c", 1, 0); treadle.yield() end
    end)
  end
  for i = 1, 10 do ts[i]:join() end
  H.eq(d:get("c"), 1000)
end)

T.case("bad input: clear errors", function()
  local d = fresh(1 << 20)
  -- treadle.shared.dict
  H.has(H.bad_arg(treadle.shared.dict), "bad argument #1 to 'treadle.shared.dict'")
  H.has(H.bad_arg(treadle.shared.dict, "", 100), "name must not be empty")
  H.has(H.bad_arg(treadle.shared.dict, {}, 100), "string expected")
  H.has(H.bad_arg(treadle.shared.dict, "t-bad"), "number expected")
  H.has(H.bad_arg(treadle.shared.dict, "t-bad", 0), "capacity must be a positive")
  H.has(H.bad_arg(treadle.shared.dict, "t-bad", -5), "capacity must be a positive")
  H.has(H.bad_arg(treadle.shared.dict, "t-bad", 1.5), "number has no integer representation")
  H.has(H.bad_arg(treadle.shared.dict, "t-bad", "lots"), "number expected")
  H.eq(treadle.shared.get("t-bad"), nil, "no dict made by a failed call")
  H.has(H.bad_arg(treadle.shared.get, nil), "string expected")
  -- keys: OpenResty's returns for nil, empty and long keys; other types raise
  for _, m in ipairs({"get", "get_stale", "delete", "ttl"}) do
    H.same_table({d[m](d, nil)}, {nil, "nil key"}, m)
    H.same_table({d[m](d, "")}, {nil, "empty key"}, m)
    H.same_table({d[m](d, string.rep("k", 65536))}, {nil, "key too long"}, m)
    H.has(H.bad_arg(d[m], d, {}), "string expected, got table")
    H.has(H.bad_arg(d[m], d, true), "string expected, got boolean")
  end
  H.same_table({d:set(nil, 1)}, {false, "nil key"})
  H.same_table({d:add("", 1)}, {false, "empty key"})
  H.same_table({d:incr(nil, 1)}, {nil, "nil key"})
  H.same_table({d:expire(nil, 1)}, {nil, "nil key"})
  H.eq(d:set(string.rep("k", 65535), 1), true, "65535 bytes is the longest key")
  -- values
  H.same_table({d:set("k", {})}, {false, "bad value type"})
  H.same_table({d:safe_set("k", print)}, {false, "bad value type"})
  H.same_table({d:add("k", coroutine.create(print))}, {false, "bad value type"})
  H.eq(d:get("k"), nil, "nothing stored")
  -- exptime and flags
  H.has(H.bad_arg(d.set, d, "k", 1, -1), "exptime must be >= 0")
  H.has(H.bad_arg(d.set, d, "k", 1, 0 / 0), "exptime must be >= 0")
  H.has(H.bad_arg(d.set, d, "k", 1, "soon"), "number expected")
  H.has(H.bad_arg(d.set, d, "k", 1, 0, -1), "flags must be in")
  H.has(H.bad_arg(d.set, d, "k", 1, 0, 1 << 32), "flags must be in")
  H.has(H.bad_arg(d.set, d, "k", 1, 0, 1.5), "number has no integer representation")
  H.has(H.bad_arg(d.expire, d, "k"), "number expected")
  H.has(H.bad_arg(d.expire, d, "k", -2), "exptime must be >= 0")
  -- incr
  d:set("n", 1)
  H.has(H.bad_arg(d.incr, d, "n"), "value must be a number, not nil")
  H.has(H.bad_arg(d.incr, d, "n", "abc"), "value must be a number, not string")
  H.has(H.bad_arg(d.incr, d, "n", {}), "value must be a number, not table")
  H.has(H.bad_arg(d.incr, d, "n", 1, "x"), "init must be a number")
  H.has(H.bad_arg(d.incr, d, "n", 1, nil, 5), "init_ttl needs an init")
  H.has(H.bad_arg(d.incr, d, "n", 1, 0, -1), "init_ttl must be >= 0")
  H.eq(d:get("n"), 1, "no failed call changed it")
  -- max
  H.has(H.bad_arg(d.flush_expired, d, -1), "max must be >= 0")
  H.has(H.bad_arg(d.get_keys, d, -1), "max must be >= 0")
  H.has(H.bad_arg(d.get_keys, d, "all"), "number expected")
  -- a method called on something that is not a dict
  H.has(H.bad_arg(d.get, {}, "k"), "treadle.shdict expected")
  H.has(H.bad_arg(d.capacity), "treadle.shdict expected")
  H.has(H.bad_arg(d.incr, "d", "k", 1), "treadle.shdict expected")
end)

T.case("nothing leaks: the Lua heap stays flat; a dict goes with its last state",
  {timeout = 120}, function()
  local name
  local function work(n)
    local d
    d, name = fresh(8192, "leak")
    local big = string.rep("x", 1000)
    for i = 1, n do
      d:set("k" .. (i % 50), i % 3 == 0 and big or i, i % 7 == 0 and 0.001 or 0)
      d:get("k" .. ((i * 7) % 50))
      d:get_stale("k" .. (i % 13))
      d:incr("c" .. (i % 5), 1, 0)
      if i % 100 == 0 then d:get_keys(0); d:flush_expired(5) end
      if i % 1000 == 0 then d:flush_all() end
    end
  end
  work(H.n(2000, 200))
  collectgarbage(); collectgarbage()
  local before = collectgarbage("count")
  work(H.n(50000, 2000))
  collectgarbage(); collectgarbage()
  local grew = collectgarbage("count") - before
  H.note(string.format("Lua heap %+.0f KiB", grew))
  H.ok(grew < 256, string.format("the Lua heap grew %.0f KiB", grew))
  -- the dict's last holder was this state's userdata, collected above
  H.eq(treadle.shared.get(name), nil, "the dict was freed with its last reference")
end)

return T.main()
