/* treadle.shared: shared dictionaries for Lua (ARCHITECTURE.md "Shared
 * dictionaries"), with ngx.shared.DICT's methods and return conventions
 * over bindings/common's store (shdict.h). A dict is process-wide, found by
 * name; each lua_State holds one object per dict, cached by name in a weak
 * table, so that every worker's state sees the same entries. No call
 * waits: each takes the dict's mutex once, for a lookup and its change,
 * and makes its Lua values after releasing it.
 *
 * The object is a table, as OpenResty's are, that holds its methods as
 * closures over a userdata (the reference, freed by its __gc; also at
 * [1]). `d:incr(k, 1)` then finds the method in the table itself, and the
 * method finds the dict in its upvalue and only checks that `self` is the
 * table it belongs to: in a counting loop, a userdata's metatable lookup
 * and type check were a third of each call.
 *
 * As in OpenResty, a bad key or value is a return value (nil, "nil key"),
 * since libraries written for ngx.shared test for it; arguments of the
 * wrong kind elsewhere (exptime, flags, incr's numbers) raise. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "ltreadle.h"
#include "shdict.h"

#define SHDICT_MT "treadle.shdict"      /* the dict tables' metatable */
#define REF_MT "treadle.shdict.ref"      /* the userdata's */
#define CACHE_KEY "treadle.shared.cache" /* registry: name -> dict table, weak */

/* The store's clock: treadle's (monotonic) in ms; + 1 as the store wants
 * it >= 1. */
static uint64_t clock_ms(void) { return treadle_now() / 1000000 + 1; }

/* What a dict table's methods close over. */
typedef struct {
  shd_dict_t *d;    /* a reference */
  const void *self; /* the table */
} ldict_t;

/* The dict of the method running; raises unless `self` is its table. */
static shd_dict_t *check_dict(lua_State *L) {
  const ldict_t *u = lua_touserdata(L, lua_upvalueindex(1));
  if (lua_topointer(L, 1) != u->self)
    luaL_typeerror(L, 1, SHDICT_MT);
  return u->d;
}

/* The key at idx (strings, and numbers as their string), or NULL with
 * OpenResty's message in *err. Other types raise. */
static const char *check_key(lua_State *L, int idx, size_t *klen, const char **err) {
  const char *key = lua_tolstring(L, idx, klen); /* NULL: not a string or number */
  if (key == NULL) {
    if (!lua_isnoneornil(L, idx))
      luaL_typeerror(L, idx, "string");
    *err = "nil key";
    return NULL;
  }
  *err = *klen == 0 ? "empty key" : *klen > SHD_KEY_MAX ? "key too long" : NULL;
  return *err == NULL ? key : NULL;
}

/* Seconds at idx (nil or absent: 0) as whole ms, a positive time below 1 ms
 * as 1 ms (so it does expire); raises for negative, NaN, non-numbers. */
static uint64_t check_exptime(lua_State *L, int idx, const char *what) {
  lua_Number s = luaL_optnumber(L, idx, 0);
  if (!(s >= 0))
    luaL_argerror(L, idx, lua_pushfstring(L, "%s must be >= 0 seconds", what));
  if (s == 0)
    return 0;
  if (s > 1e12) /* 31,000 years: never, in practice */
    s = 1e12;
  uint64_t ms = (uint64_t)(s * 1000);
  return ms == 0 ? 1 : ms;
}

/* The value at idx into *v; false for a type a dict cannot hold. */
static bool to_value(lua_State *L, int idx, shd_value_t *v) {
  memset(v, 0, sizeof *v);
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
  case LUA_TNONE:
    v->type = SHD_NIL;
    return true;
  case LUA_TBOOLEAN:
    v->type = SHD_BOOL;
    v->u.b = lua_toboolean(L, idx);
    return true;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      v->type = SHD_INT;
      v->u.i = lua_tointeger(L, idx);
    } else {
      v->type = SHD_NUM;
      v->u.n = lua_tonumber(L, idx);
    }
    return true;
  case LUA_TSTRING:
    v->type = SHD_STR;
    v->str = lua_tolstring(L, idx, &v->len);
    return true;
  default:
    return false;
  }
}

static void push_value(lua_State *L, const shd_value_t *v) {
  switch (v->type) {
  case SHD_BOOL:
    lua_pushboolean(L, v->u.b);
    break;
  case SHD_INT:
    lua_pushinteger(L, v->u.i);
    break;
  case SHD_NUM:
    lua_pushnumber(L, v->u.n);
    break;
  case SHD_STR:
    lua_pushlstring(L, v->str, v->len);
    break;
  case SHD_NIL:
  case SHD_LIST: /* never read as a value */
    lua_pushnil(L);
    break;
  }
}

static int fail(lua_State *L, bool with_false, const char *err) {
  if (with_false)
    lua_pushboolean(L, 0);
  else
    lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

/* get and get_stale: the value, its flags (nil when 0), [stale]. */
static int get_helper(lua_State *L, bool want_stale) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  if (key == NULL)
    return fail(L, false, err);
  char small[512];
  char *buf = small;
  size_t cap = sizeof small;
  shd_value_t v;
  bool stale = false;
  for (;;) {
    shd_err_t rc = shd_get(d, key, klen, &v, buf, cap, want_stale ? &stale : NULL);
    if (rc == SHD_EISLIST)
      return fail(L, false, shd_strerror(rc));
    if (rc != SHD_OK) {
      lua_pushnil(L);
      return 1;
    }
    if (v.type != SHD_STR || v.str != NULL)
      break;
    /* A longer string than the buffer: a Lua-owned one (no leak if a
     * later push raises), and ask again, as it may have changed. */
    if (buf != small)
      lua_pop(L, 1);
    cap = v.len;
    buf = lua_newuserdatauv(L, cap, 0);
  }
  push_value(L, &v);
  if (!want_stale && v.flags == 0)
    return 1;
  if (v.flags != 0)
    lua_pushinteger(L, v.flags);
  else
    lua_pushnil(L);
  if (!want_stale)
    return 2;
  lua_pushboolean(L, stale);
  return 3;
}

/* lua: dict:get(key)
 * The value stored under key (nil, a boolean, a number or a string), and
 * its flags when they are not 0. An expired key reads as missing. The key
 * becomes the most recently used. Keys are strings (numbers become their
 * string) of 1 to 65535 bytes.
 * Returns: value [, flags]; nil when missing; nil, "value is a list" (see
 * dict:lpush); nil, "nil key" | "empty key" | "key too long" for such a key.
 * Errors: raises for a key of another type (a table, a boolean).
 * Example: local hits, flags = dict:get("hits") */
static int l_get(lua_State *L) { return get_helper(L, false); }

/* lua: dict:get_stale(key)
 * As dict:get, but also returns a value that has expired and not yet been
 * freed, and says whether it had.
 * Returns: value, flags (nil when 0), stale (a boolean); nil when missing.
 * Errors: as dict:get.
 * Example: local v, flags, stale = dict:get_stale("config") */
static int l_get_stale(lua_State *L) { return get_helper(L, true); }

/* set, safe_set, add, safe_add, replace: (key, value [, exptime [, flags]]) */
static int store_helper(lua_State *L, shd_op_t op) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  uint64_t ttl = check_exptime(L, 4, "exptime");
  lua_Integer flags = luaL_optinteger(L, 5, 0);
  luaL_argcheck(L, flags >= 0 && flags <= UINT32_MAX, 5, "flags must be in 0..4294967295");
  if (key == NULL)
    return fail(L, true, err);
  shd_value_t v;
  if (!to_value(L, 3, &v))
    return fail(L, true, "bad value type");
  v.flags = (uint32_t)flags;
  bool forcible;
  shd_err_t rc = shd_store(d, op, key, klen, &v, ttl, &forcible);
  lua_pushboolean(L, rc == SHD_OK);
  if (rc == SHD_OK)
    lua_pushnil(L);
  else
    lua_pushstring(L, shd_strerror(rc));
  lua_pushboolean(L, forcible);
  return 3;
}

/* lua: dict:set(key, value [, exptime [, flags]])
 * Stores value (nil, a boolean, a number or a string; nil deletes the key)
 * under key, with its flags (an integer in 0..2^32-1, default 0),
 * expiring after exptime seconds (0 or nil: never; millisecond
 * resolution). When the dict is full, the least recently used entries are
 * evicted to make room: forcible is then true. Integers stay integers.
 * Returns: true, nil, forcible; or false, "no memory" (larger than the whole
 * dict), "bad value type" (a table, a function) or a key's error.
 * Errors: raises for a negative or non-number exptime and for bad flags.
 * Example: local ok, err, forcible = dict:set("greeting", "hello", 60) */
static int l_set(lua_State *L) { return store_helper(L, SHD_SET); }

/* lua: dict:safe_set(key, value [, exptime [, flags]])
 * As dict:set, but never evicts a valid entry: when expired entries do not
 * make enough room, it fails and the old value stays.
 * Returns: true, nil, false; or false, "no memory", false; or as dict:set.
 * Errors: as dict:set.
 * Example: local ok, err = dict:safe_set("session:42", token, 3600) */
static int l_safe_set(lua_State *L) { return store_helper(L, SHD_SAFE_SET); }

/* lua: dict:add(key, value [, exptime [, flags]])
 * As dict:set, only when the key is missing (or expired).
 * Returns: true, nil, forcible; or false, "exists", false; or as dict:set.
 * Errors: as dict:set.
 * Example: if dict:add("lock", true, 5) then --[[ ours ]] end */
static int l_add(lua_State *L) { return store_helper(L, SHD_ADD); }

/* lua: dict:safe_add(key, value [, exptime [, flags]])
 * As dict:add, but never evicts a valid entry (as dict:safe_set).
 * Returns: true, nil, false; or false, "exists" | "no memory", false.
 * Errors: as dict:set.
 * Example: local ok, err = dict:safe_add("job:7", "queued") */
static int l_safe_add(lua_State *L) { return store_helper(L, SHD_SAFE_ADD); }

/* lua: dict:replace(key, value [, exptime [, flags]])
 * As dict:set, only when the key is there (and not expired).
 * Returns: true, nil, forcible; or false, "not found", false; or as dict:set.
 * Errors: as dict:set.
 * Example: dict:replace("config", new_text) */
static int l_replace(lua_State *L) { return store_helper(L, SHD_REPLACE); }

/* lua: dict:delete(key)
 * Removes key (dict:set(key, nil)).
 * Returns: true; or nil and a key's error.
 * Errors: as dict:get.
 * Example: dict:delete("session:42") */
static int l_delete(lua_State *L) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  if (key == NULL)
    return fail(L, false, err);
  shd_value_t nil = {.type = SHD_NIL};
  bool forcible;
  shd_store(d, SHD_SET, key, klen, &nil, 0, &forcible); /* cannot fail */
  lua_pushboolean(L, 1);
  return 1;
}

/* The number at idx (absent or nil: false): an integer when it has an
 * integer value (so 2.0 and "2" count as 2), else a float; raises for
 * anything else. One API call for an integer: incr's loop is what a
 * counter does. */
static bool opt_number(lua_State *L, int idx, int top, const char *what, shd_value_t *v) {
  if (idx > top)
    return false;
  int ok;
  v->u.i = lua_tointegerx(L, idx, &ok);
  if (ok) {
    v->type = SHD_INT;
    return true;
  }
  if (lua_isnil(L, idx))
    return false;
  v->type = SHD_NUM;
  v->u.n = lua_tonumberx(L, idx, &ok);
  if (!ok)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a number, not %s", what,
                                          luaL_typename(L, idx)));
  return true;
}

/* lua: dict:incr(key, value [, init [, init_ttl]])
 * Adds value (a number) to the number stored under key, atomically: from
 * every worker at once, no increment is lost. A missing (or expired) key is
 * "not found", unless init is given: then it is stored as init + value,
 * expiring after init_ttl seconds (default: never), evicting as dict:set
 * does. An existing key keeps its expiry. Integers stay integers unless
 * the sum overflows.
 * Returns: the new value, and with an init also nil and forcible; or nil,
 * "not found" | "not a number" (the value is not a number) | "no memory" |
 * a key's error.
 * Errors: raises when value or init is not a number, for a negative
 * init_ttl, and for an init_ttl without init.
 * Example: local hits = dict:incr("hits", 1, 0) */
static int l_incr(lua_State *L) {
  shd_dict_t *d = check_dict(L);
  int top = lua_gettop(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  shd_value_t delta, init;
  if (!opt_number(L, 3, top, "value", &delta))
    luaL_argerror(L, 3, "value must be a number, not nil");
  bool has_init = opt_number(L, 4, top, "init", &init);
  uint64_t init_ttl = 0;
  if (top >= 5 && !lua_isnil(L, 5)) {
    luaL_argcheck(L, has_init, 5, "init_ttl needs an init");
    init_ttl = check_exptime(L, 5, "init_ttl");
  }
  if (key == NULL)
    return fail(L, false, err);
  shd_value_t out;
  bool forcible;
  shd_err_t rc = shd_incr(d, key, klen, &delta, has_init ? &init : NULL, init_ttl,
                          &out, &forcible);
  if (rc != SHD_OK)
    return fail(L, false, shd_strerror(rc));
  push_value(L, &out);
  if (!has_init)
    return 1;
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

/* lpush and rpush */
static int push_helper(lua_State *L, bool left) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  if (key == NULL)
    return fail(L, false, err);
  shd_value_t v;
  if (!to_value(L, 3, &v) || (v.type != SHD_INT && v.type != SHD_NUM && v.type != SHD_STR))
    return fail(L, false, "bad value type");
  size_t len;
  shd_err_t rc = shd_push(d, key, klen, left, &v, &len);
  if (rc != SHD_OK)
    return fail(L, false, shd_strerror(rc));
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

/* lua: dict:lpush(key, value)
 * Puts value (a number or a string) at the head (left end) of the list
 * stored under key, making the list (never expiring) when the key is
 * missing or expired. Each item takes 40 bytes plus its string; when the
 * dict is full, the least recently used other entries are evicted.
 * Returns: the list's length; or nil, "value not a list" (the key holds
 * another value), "no memory" (the list alone fills the dict), "bad value
 * type" or a key's error.
 * Errors: raises for a key of another type (a table, a boolean).
 * Example: local n = dict:lpush("jobs", "resize:42") */
static int l_lpush(lua_State *L) { return push_helper(L, true); }

/* lua: dict:rpush(key, value)
 * As dict:lpush, at the tail (right end).
 * Returns: as dict:lpush.
 * Errors: as dict:lpush.
 * Example: dict:rpush("jobs", "resize:43") */
static int l_rpush(lua_State *L) { return push_helper(L, false); }

/* lpop and rpop */
static int pop_helper(lua_State *L, bool left) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  if (key == NULL)
    return fail(L, false, err);
  shd_value_t v;
  void *item;
  shd_err_t rc = shd_pop(d, key, klen, left, &v, &item);
  if (rc == SHD_ENOTFOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (rc != SHD_OK)
    return fail(L, false, shd_strerror(rc));
  /* The item is C memory: hold it in a box so that a failing push does
   * not lose it. */
  void **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = item;
  push_value(L, &v);
  *box = NULL;
  shd_item_free(item);
  return 1;
}

/* lua: dict:lpop(key)
 * Takes the item at the head (left end) of the list under key; the key
 * goes with its last item.
 * Returns: the item; nil when the key is missing or expired; or nil, "value
 * not a list" or a key's error.
 * Errors: as dict:get.
 * Example: local job = dict:lpop("jobs") */
static int l_lpop(lua_State *L) { return pop_helper(L, true); }

/* lua: dict:rpop(key)
 * As dict:lpop, at the tail (right end).
 * Returns: as dict:lpop.
 * Errors: as dict:get.
 * Example: local newest = dict:rpop("jobs") */
static int l_rpop(lua_State *L) { return pop_helper(L, false); }

/* lua: dict:llen(key)
 * The number of items of the list under key: 0 when the key is missing or
 * expired.
 * Returns: the length; or nil, "value not a list" or a key's error.
 * Errors: as dict:get.
 * Example: if dict:llen("jobs") > 1000 then --[[ shed load ]] end */
static int l_llen(lua_State *L) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  if (key == NULL)
    return fail(L, false, err);
  size_t len;
  shd_err_t rc = shd_llen(d, key, klen, &len);
  if (rc != SHD_OK)
    return fail(L, false, shd_strerror(rc));
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

/* lua: dict:expire(key, exptime)
 * Sets a key's expiry to exptime seconds from now (0: never), keeping its
 * value.
 * Returns: true; or nil, "not found" (missing or expired) | a key's error.
 * Errors: raises for a negative or non-number exptime.
 * Example: dict:expire("session:42", 300) */
static int l_expire(lua_State *L) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  luaL_checknumber(L, 3);
  uint64_t ttl = check_exptime(L, 3, "exptime");
  if (key == NULL)
    return fail(L, false, err);
  shd_err_t rc = shd_expire(d, key, klen, ttl);
  if (rc != SHD_OK)
    return fail(L, false, shd_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* lua: dict:ttl(key)
 * The seconds (millisecond resolution) until key expires; 0 when it never
 * does.
 * Returns: the seconds; or nil, "not found" (missing or expired) | a key's
 * error.
 * Errors: as dict:get.
 * Example: local left = dict:ttl("session:42") */
static int l_ttl(lua_State *L) {
  shd_dict_t *d = check_dict(L);
  size_t klen;
  const char *err;
  const char *key = check_key(L, 2, &klen, &err);
  if (key == NULL)
    return fail(L, false, err);
  uint64_t ms;
  shd_err_t rc = shd_ttl(d, key, klen, &ms);
  if (rc != SHD_OK)
    return fail(L, false, shd_strerror(rc));
  lua_pushnumber(L, (lua_Number)ms / 1000);
  return 1;
}

/* lua: dict:flush_all()
 * Marks every entry expired: get finds none, get_stale still finds them
 * until stores or dict:flush_expired free their memory.
 * Returns: nothing.
 * Example: dict:flush_all() */
static int l_flush_all(lua_State *L) {
  shd_flush_all(check_dict(L));
  return 0;
}

static size_t opt_max(lua_State *L, int idx, lua_Integer dflt) {
  lua_Integer max = luaL_optinteger(L, idx, dflt);
  luaL_argcheck(L, max >= 0, idx, "max must be >= 0 (0: no limit)");
  return (size_t)max;
}

/* lua: dict:flush_expired([max])
 * Frees up to max expired entries (0 or nil: all), least recently used
 * first.
 * Returns: how many it freed.
 * Errors: raises for a negative max.
 * Example: local freed = dict:flush_expired() */
static int l_flush_expired(lua_State *L) {
  shd_dict_t *d = check_dict(L);
  size_t max = opt_max(L, 2, 0);
  lua_pushinteger(L, (lua_Integer)shd_flush_expired(d, max));
  return 1;
}

/* lua: dict:get_keys([max])
 * The keys of the entries that have not expired, most recently used first,
 * up to max (default 1024; 0: all, which may hold the dict's mutex for
 * long on a big dict).
 * Returns: an array of the keys.
 * Errors: raises for a negative max.
 * Example: for _, k in ipairs(dict:get_keys(0)) do print(k) end */
static int l_get_keys(lua_State *L) {
  shd_dict_t *d = check_dict(L);
  size_t max = opt_max(L, 2, 1024);
  size_t count;
  shd_err_t err;
  void *block = shd_keys(d, max, &count, &err);
  if (err != SHD_OK)
    return luaL_error(L, "not enough memory");
  /* The block is C memory: a Lua allocation that fails must not lose it. */
  void **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = block;
  lua_createtable(L, (int)(count < 1000000 ? count : 1000000), 0);
  size_t pos = 0, klen;
  for (size_t i = 0; i < count; i++) {
    const char *k = shd_keys_next(block, &pos, &klen);
    lua_pushlstring(L, k, klen);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  *box = NULL;
  free(block);
  return 1;
}

/* lua: dict:capacity()
 * The dict's capacity in bytes, as made.
 * Returns: an integer.
 * Example: print(dict:capacity()) */
static int l_capacity(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)shd_capacity(check_dict(L)));
  return 1;
}

/* lua: dict:free_space()
 * The bytes not taken by entries. Each entry takes 64 bytes plus its key
 * and string value; expired entries count until they are freed.
 * Returns: an integer.
 * Example: if dict:free_space() < 4096 then dict:flush_expired() end */
static int l_free_space(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)shd_free_space(check_dict(L)));
  return 1;
}

static int l_ref_gc(lua_State *L) {
  ldict_t *u = luaL_checkudata(L, 1, REF_MT);
  shd_unref(u->d);
  u->d = NULL;
  return 0;
}

static int l_dict_tostring(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_rawgeti(L, 1, 1);
  const ldict_t *u = luaL_testudata(L, -1, REF_MT);
  if (u == NULL || u->d == NULL)
    return luaL_error(L, "not a treadle.shdict");
  lua_pushfstring(L, "treadle.shdict (%s, %I of %I bytes free)", shd_name(u->d),
                  (lua_Integer)shd_free_space(u->d), (lua_Integer)shd_capacity(u->d));
  return 1;
}

static const luaL_Reg dict_methods[] = {
    {"get", l_get},         {"get_stale", l_get_stale}, {"set", l_set},
    {"safe_set", l_safe_set}, {"add", l_add},         {"safe_add", l_safe_add},
    {"replace", l_replace}, {"delete", l_delete},     {"incr", l_incr},
    {"expire", l_expire},   {"ttl", l_ttl},           {"flush_all", l_flush_all},
    {"flush_expired", l_flush_expired}, {"get_keys", l_get_keys},
    {"capacity", l_capacity}, {"free_space", l_free_space}, {"lpush", l_lpush},
    {"rpush", l_rpush},     {"lpop", l_lpop},         {"rpop", l_rpop},
    {"llen", l_llen},       {NULL, NULL}};

/* A holder for a dict reference, pushed before the reference is taken:
 * making it may raise (no memory), which must not leak the reference
 * (issue 17, the Lua allocation sweep). Its __gc lets the reference go. */
static ldict_t *push_holder(lua_State *L) {
  ldict_t *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->d = NULL;
  u->self = NULL;
  luaL_setmetatable(L, REF_MT);
  return u;
}

/* Replaces the holder at the top (its reference taken) with this state's
 * table for its dict. */
static void push_dict(lua_State *L) {
  ldict_t *u = lua_touserdata(L, -1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, CACHE_KEY);
  if (lua_getfield(L, -1, shd_name(u->d)) == LUA_TTABLE) {
    shd_unref(u->d); /* the cached table holds one */
    u->d = NULL;
    lua_replace(L, -3);
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lua_createtable(L, 1, 21); /* holder, cache, t */
  u->self = lua_topointer(L, -1);
  lua_pushvalue(L, -3);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, -3);
  luaL_setfuncs(L, dict_methods, 1);
  luaL_setmetatable(L, SHDICT_MT);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, shd_name(u->d));
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* lua: treadle.shared.dict(name, capacity)
 * The shared dictionary called name, made with room for capacity bytes if
 * there is none (each entry takes 64 bytes plus its key and string value).
 * Every call with the same name, in any worker's state, gives the same
 * dict; within one state, the same object. It is process-wide and lives as
 * long as some state holds it. Its methods never wait: from every worker
 * at once each takes the dict's lock for one short lookup.
 * Returns: the dict.
 * Errors: raises for a name that is not a non-empty string, for a capacity
 * that is not a positive integer, and for a name that exists with another
 * capacity.
 * Example: local hits = treadle.shared.dict("hits", 1024 * 1024) */
static int l_shared_dict(lua_State *L) {
  size_t nlen;
  const char *name = luaL_checklstring(L, 1, &nlen);
  luaL_argcheck(L, nlen > 0, 1, "name must not be empty");
  lua_Integer cap = luaL_checkinteger(L, 2);
  luaL_argcheck(L, cap > 0, 2, "capacity must be a positive number of bytes");
  ldict_t *u = push_holder(L);
  shd_dict_t *d;
  shd_err_t rc = shd_open(name, (size_t)cap, clock_ms, &d);
  if (rc == SHD_OK)
    u->d = d;
  if (rc == SHD_ECAPACITY) {
    d = shd_find(name);
    size_t had = d != NULL ? shd_capacity(d) : 0;
    shd_unref(d);
    return luaL_error(L, "shared dict '%s' exists with capacity %I, not %I", name,
                      (lua_Integer)had, cap);
  }
  if (rc != SHD_OK)
    return luaL_error(L, "not enough memory");
  push_dict(L);
  return 1;
}

/* lua: treadle.shared.get(name)
 * The shared dictionary called name if some state made it with
 * treadle.shared.dict, else nil: what an `ngx.shared` table answers for
 * ngx.shared[name] (its __index can be this function).
 * Returns: the dict, or nil.
 * Errors: raises for a name that is not a string.
 * Example: local hits = treadle.shared.get("hits") */
static int l_shared_get(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  ldict_t *u = push_holder(L);
  if ((u->d = shd_find(name)) == NULL) {
    lua_pushnil(L);
    return 1;
  }
  push_dict(L);
  return 1;
}

static const luaL_Reg shared_functions[] = {
    {"dict", l_shared_dict}, {"get", l_shared_get}, {NULL, NULL}};

void lt_open_shdict(lua_State *L) {
  static const luaL_Reg none[] = {{NULL, NULL}};
  lt_new_class(L, REF_MT, none, l_ref_gc, NULL, NULL);
  lt_new_class(L, SHDICT_MT, none, NULL, NULL, l_dict_tostring);
  /* the per-state cache: weak values, so an unused dict is let go */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, CACHE_KEY);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  luaL_newlib(L, shared_functions);
  lt_name_table(L, "treadle.shared");
  lua_setfield(L, -2, "shared");
}
