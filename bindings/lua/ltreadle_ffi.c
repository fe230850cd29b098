/* require "ffi" after require "treadle.ngx": the part of LuaJIT's FFI that
 * OpenResty's pure-Lua libraries use as a byte buffer (lua-nginx-websocket
 * masks frames in a `char[?]`): ffi.typeof of a byte array type, ffi.new
 * of one, indexing it, ffi.string and ffi.sizeof. Anything else of the FFI
 * (cdef, C, cast, metatype, ...) raises at once, naming what is missing,
 * so that a library that needs the real FFI fails at load time with a
 * clear message. Unlike LuaJIT, an index out of range raises. */
#include <string.h>

#include "ltreadle.h"

#define CTYPE_MT "treadle.ffi.ctype"
#define BUF_MT "treadle.ffi.buffer"

/* The byte array types known, written without spaces, and whether their
 * elements are signed (C's char is signed on x86-64 Linux, as LuaJIT
 * reads it). */
static const struct {
  const char *name;
  bool is_signed;
} ctypes[] = {{"char[?]", true},         {"int8_t[?]", true},
              {"unsignedchar[?]", false}, {"uint8_t[?]", false},
              {NULL, false}};

typedef struct {
  size_t len;
  bool is_signed;
  unsigned char bytes[]; /* len of them */
} lbuf_t;

/* lua: ffi.typeof(ct)
 * The type of a byte array with its length given at ffi.new: ct is
 * "char[?]", "int8_t[?]", "unsigned char[?]" or "uint8_t[?]" (spaces
 * are ignored).
 * Returns: the type, for ffi.new.
 * Errors: raises for another type: treadle's ffi has byte buffers only.
 * Example: local buf_t = ffi.typeof("char[?]") */
static int l_typeof(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  char name[32]; /* s without its spaces */
  size_t n = 0;
  for (; *s != '\0' && n + 1 < sizeof name; s++)
    if (*s != ' ')
      name[n++] = *s;
  name[n] = '\0';
  for (int i = 0; *s == '\0' && ctypes[i].name != NULL; i++) {
    if (strcmp(name, ctypes[i].name) == 0) {
      int *idx = lua_newuserdatauv(L, sizeof *idx, 0);
      *idx = i;
      luaL_setmetatable(L, CTYPE_MT);
      return 1;
    }
  }
  return luaL_error(L, "ffi.typeof: treadle's ffi has byte buffers only "
                       "(\"char[?]\", \"uint8_t[?]\", ...), not \"%s\"",
                    lua_tostring(L, 1));
}

/* lua: ffi.new(ct, n)
 * A new zero-filled buffer of n bytes (0 <= n <= 2^31) of type ct
 * (ffi.typeof's, or its name). buf[i] reads byte i (0-based) as a number,
 * signed for char and int8_t; buf[i] = v stores v's low 8 bits; #buf is n.
 * Returns: the buffer.
 * Errors: raises for another type, a bad size, or initial values.
 * Example: local buf = ffi.new("char[?]", 16); buf[0] = 65 */
static int l_new(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_pushcfunction(L, l_typeof);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_replace(L, 1);
  }
  int t = *(int *)luaL_checkudata(L, 1, CTYPE_MT);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0 && n <= ((lua_Integer)1 << 31), 2,
                "the size must be 0..2^31");
  luaL_argcheck(L, lua_gettop(L) <= 2, 3,
                "treadle's ffi takes no initial values");
  lbuf_t *b = lua_newuserdatauv(L, sizeof *b + (size_t)n, 0);
  b->len = (size_t)n;
  b->is_signed = ctypes[t].is_signed;
  memset(b->bytes, 0, (size_t)n);
  luaL_setmetatable(L, BUF_MT);
  return 1;
}

static size_t check_index(lua_State *L, const lbuf_t *b) {
  int isnum;
  lua_Integer i = lua_tointegerx(L, 2, &isnum);
  if (!isnum)
    luaL_error(L, "a byte buffer is indexed by an integer, not %s",
               luaL_typename(L, 2));
  if (i < 0 || (lua_Unsigned)i >= b->len)
    luaL_error(L, "index %d out of the buffer's range 0..%d", (int)i,
               (int)b->len - 1);
  return (size_t)i;
}

static int buf_index(lua_State *L) {
  lbuf_t *b = luaL_checkudata(L, 1, BUF_MT);
  unsigned char v = b->bytes[check_index(L, b)];
  lua_pushinteger(L, b->is_signed ? (lua_Integer)(signed char)v : v);
  return 1;
}

static int buf_newindex(lua_State *L) {
  lbuf_t *b = luaL_checkudata(L, 1, BUF_MT);
  size_t i = check_index(L, b);
  lua_Integer v;
  if (lua_isinteger(L, 3))
    v = lua_tointeger(L, 3);
  else
    v = (lua_Integer)luaL_checknumber(L, 3); /* truncated, as a C cast */
  b->bytes[i] = (unsigned char)((lua_Unsigned)v & 0xff);
  return 0;
}

static int buf_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)((lbuf_t *)luaL_checkudata(L, 1, BUF_MT))->len);
  return 1;
}

/* lua: ffi.string(buf [, len])
 * The first len bytes of a buffer of ffi.new as a string; without len, the
 * bytes before the first zero byte.
 * Returns: the string.
 * Errors: raises for something other than a buffer, or a len outside
 * 0..#buf.
 * Example: local s = ffi.string(buf, 5) */
static int l_string(lua_State *L) {
  lbuf_t *b = luaL_checkudata(L, 1, BUF_MT);
  size_t n;
  if (lua_isnoneornil(L, 2)) {
    const unsigned char *z = memchr(b->bytes, 0, b->len);
    n = z != NULL ? (size_t)(z - b->bytes) : b->len;
  } else {
    lua_Integer len = luaL_checkinteger(L, 2);
    luaL_argcheck(L, len >= 0 && (lua_Unsigned)len <= b->len, 2,
                  "longer than the buffer");
    n = (size_t)len;
  }
  lua_pushlstring(L, (const char *)b->bytes, n);
  return 1;
}

/* lua: ffi.sizeof(buf)
 * Returns: the size in bytes of a buffer of ffi.new.
 * Errors: raises for something other than a buffer.
 * Example: print(ffi.sizeof(buf)) */
static int l_sizeof(lua_State *L) { return buf_len(L); }

/* Any other field of the module: what LuaJIT has and treadle does not. */
static int ffi_missing(lua_State *L) {
  return luaL_error(L, "ffi.%s is not supported: treadle's ffi (require "
                       "\"treadle.ngx\") has byte buffers only (typeof, new, "
                       "string, sizeof)",
                    lua_tostring(L, 2));
}

void lt_push_ffi(lua_State *L) {
  if (luaL_newmetatable(L, CTYPE_MT)) {
    lua_pushliteral(L, "treadle.ffi.ctype");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, BUF_MT)) {
    static const luaL_Reg buf_mt[] = {{"__index", buf_index},
                                      {"__newindex", buf_newindex},
                                      {"__len", buf_len}, {NULL, NULL}};
    luaL_setfuncs(L, buf_mt, 0);
  }
  lua_pop(L, 1);
  static const luaL_Reg ffi_fns[] = {{"typeof", l_typeof}, {"new", l_new},
                                     {"string", l_string}, {"sizeof", l_sizeof},
                                     {NULL, NULL}};
  luaL_newlib(L, ffi_fns);
  lua_newtable(L);
  lua_pushcfunction(L, ffi_missing);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}
