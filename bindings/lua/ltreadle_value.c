/* Channel values (ARCHITECTURE.md "Lua"): a plain Lua value serialized
 * into one malloc'd blob in one lua_State and rebuilt in another.
 *
 * 1. What is copied: nil, booleans, integers and floats (each keeps its
 *    subtype), strings (any bytes), and tables of those, keys included,
 *    nested at most 64 deep (a cycle fails there). Anything else raises.
 *    Metatables are not copied; tables are read raw.
 * 2. The blob: a tag byte per value ('n', 't', 'f', 'i' + lua_Integer,
 *    'd' + lua_Number, 's' + size_t length + bytes, '{' key value ... '}').
 *    It is only ever read by lt_unpack, in this process.
 * 3. Packing runs under lua_pcall with the blob owned by the caller's C
 *    frame, so whatever raises inside (a bad value, too deep, no memory)
 *    frees the partial blob instead of leaking it.
 * tests/fuzz/fuzz_lua_value.c copies random value trees between two states
 * and compares them. */
#include <stdlib.h>
#include <string.h>

#include "ltreadle.h"

typedef struct { char *p; size_t len, cap; } blob_t;

/* Appends n bytes; raises "not enough memory" (b->p stays the caller's to
 * free). */
static void blob_put(lua_State *L, blob_t *b, const void *src, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
      luaL_error(L, "not enough memory");
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, src, n);
  b->len += n;
}

/* Step 2: serializes the value at idx. */
static void pack(lua_State *L, blob_t *b, int idx, int depth) {
  char tag;
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    blob_put(L, b, "n", 1);
    return;
  case LUA_TBOOLEAN:
    blob_put(L, b, lua_toboolean(L, idx) ? "t" : "f", 1);
    return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      lua_Integer i = lua_tointeger(L, idx);
      blob_put(L, b, "i", 1);
      blob_put(L, b, &i, sizeof i);
    } else {
      lua_Number d = lua_tonumber(L, idx);
      blob_put(L, b, "d", 1);
      blob_put(L, b, &d, sizeof d);
    }
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    blob_put(L, b, "s", 1);
    blob_put(L, b, &n, sizeof n);
    blob_put(L, b, s, n);
    return;
  }
  case LUA_TTABLE:
    if (depth >= 64)
      luaL_error(L, "channel value: tables nested too deep (or a cycle)");
    luaL_checkstack(L, 3, "channel value");
    tag = '{';
    blob_put(L, b, &tag, 1);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      pack(L, b, -2, depth + 1);
      pack(L, b, -1, depth + 1);
      lua_pop(L, 1);
    }
    blob_put(L, b, "}", 1);
    return;
  default:
    luaL_error(L, "channel values must be nil, booleans, numbers, strings "
                  "or tables of those, not %s", luaL_typename(L, idx));
  }
}

static const char *unpack(lua_State *L, const char *p) {
  luaL_checkstack(L, 3, "channel value");
  switch (*p++) {
  case 'n': lua_pushnil(L); return p;
  case 't': lua_pushboolean(L, 1); return p;
  case 'f': lua_pushboolean(L, 0); return p;
  case 'i': { lua_Integer i; memcpy(&i, p, sizeof i); lua_pushinteger(L, i); return p + sizeof i; }
  case 'd': { lua_Number d; memcpy(&d, p, sizeof d); lua_pushnumber(L, d); return p + sizeof d; }
  case 's': { size_t n; memcpy(&n, p, sizeof n); p += sizeof n; lua_pushlstring(L, p, n); return p + n; }
  default: /* '{' */
    lua_newtable(L);
    while (*p != '}') {
      p = unpack(L, p);
      p = unpack(L, p);
      lua_rawset(L, -3);
    }
    return p + 1;
  }
}

/* Step 3: (blob_t *, value). */
static int pack_protected(lua_State *L) {
  pack(L, lua_touserdata(L, 1), 2, 0);
  return 0;
}

void *lt_pack_protected(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  blob_t b = {0};
  lua_pushcfunction(L, pack_protected);
  lua_pushlightuserdata(L, &b);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

void *lt_pack(lua_State *L, int idx) {
  void *blob = lt_pack_protected(L, idx);
  if (blob == NULL)
    lua_error(L); /* the message is on top */
  return blob;
}

void lt_unpack(lua_State *L, const void *blob) { unpack(L, blob); }

static int unpack_protected(lua_State *L) {
  unpack(L, lua_touserdata(L, 1));
  return 1;
}

void lt_unpack_free(lua_State *L, void *blob) {
  lua_pushcfunction(L, unpack_protected);
  lua_pushlightuserdata(L, blob);
  int st = lua_pcall(L, 1, 1, 0);
  free(blob);
  if (st != LUA_OK)
    lua_error(L);
}
