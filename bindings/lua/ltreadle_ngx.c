/* require "treadle.ngx": an `ngx` table on treadle, so that OpenResty's
 * pure-Lua libraries (lua-resty-redis, -memcached, ...) run outside nginx
 * (ARCHITECTURE.md "Lua"). The table itself is Lua (ngx.lua, built into
 * the module as ngx_lua.h); this file gives it what must be C: URI
 * escapes, base64, digests (OpenSSL's libcrypto), wall-clock time, the
 * worker count and ngx.null. Without OpenSSL at build time the digests
 * raise. Lua finds luaopen_treadle_ngx in treadle.so
 * through its all-in-one loader, so no second file is needed. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ltreadle.h"
#include "ngx_lua.h" /* static const unsigned char ngx_lua[]: ngx.lua */
#if defined TREADLE_HAVE_OPENSSL || defined TREADLE_HAVE_LIBCRYPTO
#include <openssl/evp.h>
#endif

int luaopen_treadle(lua_State *L);

static bool unreserved(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
         ch == '~';
}

/* lua: ngx.escape_uri(s)
 * Escapes s for a URI component: %XX for every byte but RFC 3986's
 * unreserved ones (letters, digits, "-", ".", "_", "~").
 * Returns: the escaped string.
 * Errors: raises for a non-string.
 * Example: ngx.escape_uri("a b/c") --> "a%20b%2Fc" */
static int l_escape_uri(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  static const char hex[] = "0123456789ABCDEF";
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n * 3);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (unreserved(ch)) {
      out[o++] = (char)ch;
    } else {
      out[o++] = '%';
      out[o++] = hex[ch >> 4];
      out[o++] = hex[ch & 15];
    }
  }
  luaL_pushresultsize(&b, o);
  return 1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* lua: ngx.unescape_uri(s)
 * Undoes %XX escapes and turns "+" into a space, as OpenResty's; a
 * malformed escape stays as it is.
 * Returns: the unescaped string.
 * Errors: raises for a non-string.
 * Example: ngx.unescape_uri("b%20r56+7") --> "b r56 7" */
static int l_unescape_uri(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
        (lo = hexval(s[i + 2])) >= 0) {
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = s[i] == '+' ? ' ' : s[i];
    }
  }
  luaL_pushresultsize(&b, o);
  return 1;
}

/* lua: ngx.encode_base64(s [, no_padding])
 * Base64 (RFC 4648's alphabet), without the "=" padding when no_padding.
 * Returns: the encoded string.
 * Errors: raises for a non-string.
 * Example: ngx.encode_base64("hello") --> "aGVsbG8=" */
static int l_encode_base64(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  bool no_pad = lua_toboolean(L, 2);
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, 4 * ((n + 2) / 3));
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                 (i + 2 < n ? s[i + 2] : 0);
    out[o++] = abc[v >> 18 & 63];
    out[o++] = abc[v >> 12 & 63];
    if (i + 1 < n)
      out[o++] = abc[v >> 6 & 63];
    else if (!no_pad)
      out[o++] = '=';
    if (i + 2 < n)
      out[o++] = abc[v & 63];
    else if (!no_pad)
      out[o++] = '=';
  }
  luaL_pushresultsize(&b, o);
  return 1;
}

static int b64val(char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* lua: ngx.decode_base64(s)
 * Decodes base64, with or without its padding.
 * Returns: the bytes, or nil when s is not base64.
 * Errors: raises for a non-string.
 * Example: ngx.decode_base64("aGVsbG8") --> "hello" */
static int l_decode_base64(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  while (n > 0 && s[n - 1] == '=')
    n--;
  if (n % 4 == 1) {
    lua_pushnil(L);
    return 1;
  }
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n * 3 / 4 + 3);
  size_t o = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val(s[i]);
    if (v < 0) {
      luaL_pushresultsize(&b, 0);
      lua_pop(L, 1);
      lua_pushnil(L);
      return 1;
    }
    acc = acc << 6 | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)(acc >> bits & 0xff);
    }
  }
  luaL_pushresultsize(&b, o);
  return 1;
}

#if defined TREADLE_HAVE_OPENSSL || defined TREADLE_HAVE_LIBCRYPTO
#define MD5 EVP_md5()
#define SHA1 EVP_sha1()
#define MAX_DIGEST EVP_MAX_MD_SIZE
/* A digest of s by `md` into out; its length. */
static unsigned digest(lua_State *L, const EVP_MD *md, unsigned char *out) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  unsigned len = 0;
  if (EVP_Digest(s, n, out, &len, md, NULL) != 1)
    luaL_error(L, "digest failed (OpenSSL)");
  return len;
}
#else
#define MD5 NULL
#define SHA1 NULL
#define MAX_DIGEST 64
static unsigned digest(lua_State *L, const void *md, unsigned char *out) {
  (void)md;
  (void)out;
  luaL_checkstring(L, 1);
  return (unsigned)luaL_error(L, "treadle was built without OpenSSL (Debian: libssl-dev): "
                                 "no ngx.md5, ngx.md5_bin, ngx.sha1_bin");
}
#endif

static int push_hex(lua_State *L, const unsigned char *d, unsigned len) {
  static const char hex[] = "0123456789abcdef";
  char out[2 * MAX_DIGEST];
  for (unsigned i = 0; i < len; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  lua_pushlstring(L, out, 2 * len);
  return 1;
}

/* lua: ngx.md5(s)
 * Returns: the MD5 digest of s in lowercase hex (OpenSSL).
 * Example: ngx.md5("") --> "d41d8cd98f00b204e9800998ecf8427e" */
static int l_md5(lua_State *L) {
  unsigned char d[MAX_DIGEST];
  return push_hex(L, d, digest(L, MD5, d));
}

/* lua: ngx.md5_bin(s)
 * Returns: the MD5 digest of s, 16 bytes. */
static int l_md5_bin(lua_State *L) {
  unsigned char d[MAX_DIGEST];
  unsigned len = digest(L, MD5, d);
  lua_pushlstring(L, (const char *)d, len);
  return 1;
}

/* lua: ngx.sha1_bin(s)
 * Returns: the SHA-1 digest of s, 20 bytes (OpenSSL). */
static int l_sha1_bin(lua_State *L) {
  unsigned char d[MAX_DIGEST];
  unsigned len = digest(L, SHA1, d);
  lua_pushlstring(L, (const char *)d, len);
  return 1;
}

/* lua: ngx.now()
 * Returns: wall-clock seconds since the epoch with milliseconds, as
 * OpenResty's (ngx.time() is the same in whole seconds; ngx.update_time()
 * has no cache to refresh). For deadlines use treadle.now(), the monotonic
 * clock. */
static int l_wall_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)(ts.tv_nsec / 1000000) / 1000.0);
  return 1;
}

/* lua: ngx.worker.count()
 * Returns: the number of workers of the runtime running the calling task
 * (1 on current_thread, and outside a task); ngx.worker.id() is
 * treadle.worker(). */
static int l_worker_count(lua_State *L) {
  lhome_t *home = lt_home(L);
  lua_pushinteger(L, home != NULL ? lt_home_workers(home) : 1);
  return 1;
}

/* lua: table.new(narr, nrec)
 * LuaJIT's require "table.new" (after require "treadle.ngx"): a new table
 * with room for narr array items and nrec other fields.
 * Returns: the empty table.
 * Errors: raises for sizes that are not integers 0..2^31-1.
 * Example: local t = require "table.new"(100, 0) */
static int l_table_new(lua_State *L) {
  lua_Integer narr = luaL_checkinteger(L, 1), nrec = luaL_checkinteger(L, 2);
  luaL_argcheck(L, narr >= 0 && narr <= INT32_MAX, 1, "out of range");
  luaL_argcheck(L, nrec >= 0 && nrec <= INT32_MAX, 2, "out of range");
  lua_createtable(L, (int)narr, (int)nrec);
  return 1;
}

static const luaL_Reg ngx_c[] = {
    {"escape_uri", l_escape_uri},       {"unescape_uri", l_unescape_uri},
    {"encode_base64", l_encode_base64}, {"decode_base64", l_decode_base64},
    {"md5", l_md5},                     {"md5_bin", l_md5_bin},
    {"sha1_bin", l_sha1_bin},           {"now", l_wall_now},
    {"count", l_worker_count},   {NULL, NULL}};
static const luaL_Reg table_c[] = {{"new", l_table_new}, {NULL, NULL}};

/* lua: require "treadle.ngx"
 * An `ngx` table for OpenResty's pure-Lua libraries outside nginx:
 * ngx.socket.tcp and ngx.socket.udp (treadle.tcp.socket, treadle.udp.socket),
 * ngx.null, ngx.sleep, ngx.now, ngx.time, ngx.update_time, ngx.log with
 * ngx.STDERR .. ngx.DEBUG, ngx.thread.spawn/wait/kill, ngx.timer.at/every,
 * ngx.worker.id/count, ngx.escape_uri/unescape_uri,
 * ngx.encode_base64/decode_base64, ngx.md5/md5_bin/sha1_bin. It also sets
 * Lua 5.1's global `unpack` where it is missing, gives `require "bit"`
 * (LuaJIT's BitOp on Lua 5.4 integers) and puts the Lua 5.1
 * library folders (/usr/share/lua/5.1, where Debian's lua-nginx-* packages
 * install nginx.redis, nginx.memcached, ...) at the end of package.path.
 * ngx.re.match/find/gmatch/sub/gsub over PCRE2, and ngx.shared.NAME, the
 * shared dictionary treadle.shared.dict made under NAME (nil if none).
 * Cosockets do TLS with sock:sslhandshake.
 * Returns: the ngx table (the same one on every require of a state).
 * Example: ngx = require "treadle.ngx"; local redis = require "nginx.redis" */
__attribute__((visibility("default"))) int luaopen_treadle_ngx(lua_State *L) {
  luaL_requiref(L, "treadle", luaopen_treadle, 0);
  if (luaL_loadbuffer(L, (const char *)ngx_lua, sizeof ngx_lua, "=treadle.ngx") != LUA_OK)
    return lua_error(L);
  lua_insert(L, -2);
  luaL_newlib(L, ngx_c);
  lt_push_re(L);
  lua_setfield(L, -2, "re");
  lt_push_ffi(L);
  lua_setfield(L, -2, "ffi");
  luaL_newlib(L, table_c);
  lua_setfield(L, -2, "table");
  lua_pushlightuserdata(L, NULL); /* ngx.null, as OpenResty's */
  lua_setfield(L, -2, "null");
  lua_call(L, 2, 1);
  return 1;
}
