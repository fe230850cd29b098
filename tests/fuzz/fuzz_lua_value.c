/* libFuzzer target: the Lua channel value copier (bindings/lua/
 * ltreadle_value.c; docs/TESTING.md "Fuzzing").
 *
 * The input is a program for a little stack machine that builds a value in
 * one lua_State: push nil, a boolean, an integer, a float (any bits: NaN,
 * -0.0, infinities), a string of the next bytes, a new table; set a field
 * of a table below (keys of every kind, tables included); nest; make a
 * cycle; push a function (which cannot be copied); wrap the top in up to
 * 70 levels of tables. The value on top is
 * packed, unpacked into a second state, and both are compared through a
 * canonical text (tables: their entries' texts, sorted), so the order
 * lua_next walks a table in does not matter. A value that must be refused
 * (a function anywhere, tables deeper than 64, a cycle) must give an error
 * and no blob; anything else must come out equal. LeakSanitizer checks
 * that a refused value leaves no partial blob behind. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltreadle.h"

static void check(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_lua_value: %s\n", what);
    abort();
  }
}

/* ------------------------------------------------------ canonical text */

typedef struct {
  char *p;
  size_t len, cap;
} text_t;

static void put(text_t *t, const void *src, size_t n) {
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 64;
    while (cap < t->len + n + 1)
      cap *= 2;
    char *p = realloc(t->p, cap);
    check(p != NULL, "out of memory");
    t->p = p;
    t->cap = cap;
  }
  memcpy(t->p + t->len, src, n);
  t->len += n;
  t->p[t->len] = '\0';
}

static int cmp_entries(const void *a, const void *b) {
  const text_t *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->p, y->p, n);
  return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* The canonical text of the value at idx (a tree: no cycles here). */
static void canon(lua_State *L, int idx, text_t *out) {
  idx = lua_absindex(L, idx);
  char buf[64];
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    put(out, "n", 1);
    return;
  case LUA_TBOOLEAN:
    put(out, lua_toboolean(L, idx) ? "t" : "f", 1);
    return;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      int n = snprintf(buf, sizeof buf, "i%lld", (long long)lua_tointeger(L, idx));
      put(out, buf, (size_t)n);
    } else {
      lua_Number d = lua_tonumber(L, idx);
      uint64_t bits;
      memcpy(&bits, &d, sizeof bits);
      int n = snprintf(buf, sizeof buf, "d%016llx", (unsigned long long)bits);
      put(out, buf, (size_t)n);
    }
    return;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    int k = snprintf(buf, sizeof buf, "s%zu:", n);
    put(out, buf, (size_t)k);
    put(out, s, n);
    return;
  }
  case LUA_TTABLE: {
    size_t count = 0, cap = 8;
    text_t *entries = calloc(cap, sizeof *entries);
    check(entries != NULL, "out of memory");
    luaL_checkstack(L, 3, "canon");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      if (count == cap) {
        cap *= 2;
        entries = realloc(entries, cap * sizeof *entries);
        check(entries != NULL, "out of memory");
      }
      text_t e = {0};
      canon(L, -2, &e);
      put(&e, "=", 1);
      canon(L, -1, &e);
      entries[count++] = e;
      lua_pop(L, 1);
    }
    qsort(entries, count, sizeof *entries, cmp_entries);
    put(out, "{", 1);
    for (size_t i = 0; i < count; i++) {
      int k = snprintf(buf, sizeof buf, "%zu:", entries[i].len);
      put(out, buf, (size_t)k);
      put(out, entries[i].p, entries[i].len);
      free(entries[i].p);
    }
    put(out, "}", 1);
    free(entries);
    return;
  }
  default:
    check(false, "canon: a value that should not have been copied");
  }
}

/* ------------------------------------------------------------ builder */

typedef struct {
  const uint8_t *p;
  size_t n;
} input_t;

static uint64_t take(input_t *in, unsigned bytes) {
  uint64_t v = 0;
  for (unsigned i = 0; i < bytes && in->n > 0; i++, in->p++, in->n--)
    v = v << 8 | *in->p;
  return v;
}

#define MAX_STACK 100

/* Runs the program; leaves the value it built on top. */
static void build(lua_State *L, input_t *in) {
  int base = lua_gettop(L);
  lua_checkstack(L, MAX_STACK + 10);
  while (in->n > 0) {
    int depth = lua_gettop(L) - base;
    uint8_t op = (uint8_t)take(in, 1);
    switch (op % 12) {
    case 0: lua_pushnil(L); break;
    case 1: lua_pushboolean(L, op & 0x10); break;
    case 2: lua_pushinteger(L, (lua_Integer)take(in, 8)); break;
    case 3: lua_pushinteger(L, (lua_Integer)(int8_t)take(in, 1)); break;
    case 4: {
      uint64_t bits = take(in, 8);
      lua_Number d;
      memcpy(&d, &bits, sizeof d);
      lua_pushnumber(L, d);
      break;
    }
    case 5: lua_pushnumber(L, (lua_Number)(int8_t)take(in, 1) / 2); break;
    case 6: { /* a string of the next k bytes */
      size_t k = (size_t)take(in, 1) % 40;
      if (k > in->n)
        k = in->n;
      lua_pushlstring(L, (const char *)in->p, k);
      in->p += k;
      in->n -= k;
      break;
    }
    case 7: lua_newtable(L); break;
    case 8:
    case 9: /* t[k] = v for the top three: t k v (if t is a table) */
      if (depth >= 3 && lua_istable(L, -3) && !lua_isnil(L, -2) &&
          !(lua_type(L, -2) == LUA_TNUMBER && !lua_isinteger(L, -2) &&
            isnan(lua_tonumber(L, -2)))) {
        lua_rawset(L, -3);
      } else if (depth >= 1) {
        lua_pop(L, 1);
      }
      break;
    case 10: /* nest: wrap the top in a table of depth k */
      if (depth >= 1) {
        int k = 1 + (int)(take(in, 1) % 70);
        for (int i = 0; i < k; i++) {
          lua_createtable(L, 1, 0);
          lua_insert(L, -2);
          lua_rawseti(L, -2, 1);
        }
      }
      break;
    default:
      if (op & 0x10) { /* a cycle: t.self = t */
        if (depth >= 1 && lua_istable(L, -1)) {
          lua_pushvalue(L, -1);
          lua_setfield(L, -2, "self");
        }
      } else {
        lua_pushcfunction(L, lua_gettop);
      }
      break;
    }
    if (lua_gettop(L) - base >= MAX_STACK)
      lua_settop(L, base + MAX_STACK / 2);
  }
  /* The value on top is the one to copy. */
  if (lua_gettop(L) == base)
    lua_pushnil(L);
  lua_copy(L, -1, base + 1);
  lua_settop(L, base + 1);
}

/* Whether pack must accept the value at idx: only plain values, and
 * tables of them no deeper than 64 (a cycle is too deep). */
static bool copyable(lua_State *L, int idx, int level) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING)
    return true;
  if (t != LUA_TTABLE || level >= 64)
    return false;
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 3, "copyable");
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (!copyable(L, -2, level + 1) || !copyable(L, -1, level + 1)) {
      lua_pop(L, 2);
      return false;
    }
    lua_pop(L, 1);
  }
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *from = luaL_newstate(), *to = luaL_newstate();
  check(from != NULL && to != NULL, "luaL_newstate");
  input_t in = {data, size};
  build(from, &in);
  bool ok = copyable(from, -1, 0);
  void *blob = lt_pack_protected(from, -1);
  if (!ok) {
    check(blob == NULL, "packed a value that must be refused");
    check(lua_isstring(from, -1), "no error message");
  } else {
    check(blob != NULL, "refused a plain value");
    lt_unpack(to, blob);
    free(blob);
    text_t a = {0}, b = {0};
    canon(from, -1, &a);
    canon(to, -1, &b);
    check(a.len == b.len && memcmp(a.p, b.p, a.len) == 0,
          "the copy differs from the value");
    free(a.p);
    free(b.p);
  }
  lua_close(from);
  lua_close(to);
  return 0;
}
