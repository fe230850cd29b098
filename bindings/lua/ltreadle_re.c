/* ngx.re for require "treadle.ngx": OpenResty's regex API (match, find,
 * gmatch, sub, gsub) over PCRE2, as OpenResty's over PCRE.
 *
 * A regex is compiled per call, or once per lua_State with the "o" option
 * (kept in a registry table keyed by options and pattern). The compiled
 * code and its match data live in a userdata whose __gc frees them, so an
 * error anywhere frees them too. Offsets are 1-based and inclusive in Lua,
 * as OpenResty's; an empty match moves the next search on by one
 * character (a UTF-8 one with "u"). */
#include <string.h>

#include "ltreadle.h"

#ifdef TREADLE_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#define RE_MT "treadle.regex"
#define RE_CACHE "treadle.regex.cache"

typedef struct {
  pcre2_code *code;
  pcre2_match_data *md;
  bool utf;
} lre_t;

static int re_gc(lua_State *L) {
  lre_t *r = luaL_checkudata(L, 1, RE_MT);
  pcre2_match_data_free(r->md);
  pcre2_code_free(r->code);
  r->md = NULL;
  r->code = NULL;
  return 0;
}

/* Options: "i" caseless, "m" multiline, "s" dotall, "x" extended, "u" UTF-8
 * (checked), "U" UTF-8 (unchecked), "a" anchored, "D" duplicate names;
 * "o" compile once, "j" (JIT) and "J" are accepted. */
static uint32_t parse_flags(lua_State *L, const char *opts, bool *once, bool *utf) {
  uint32_t f = 0;
  *once = *utf = false;
  for (const char *p = opts; *p; p++) {
    switch (*p) {
    case 'i': f |= PCRE2_CASELESS; break;
    case 'm': f |= PCRE2_MULTILINE; break;
    case 's': f |= PCRE2_DOTALL; break;
    case 'x': f |= PCRE2_EXTENDED; break;
    case 'u': f |= PCRE2_UTF; *utf = true; break;
    case 'U': f |= PCRE2_UTF | PCRE2_NO_UTF_CHECK; *utf = true; break;
    case 'a': f |= PCRE2_ANCHORED; break;
    case 'D': f |= PCRE2_DUPNAMES; break;
    case 'o': *once = true; break;
    case 'j': case 'J': break;
    default:
      luaL_error(L, "unknown flag \"%c\" (flags \"%s\")", *p, opts);
    }
  }
  return f;
}

/* The compiled regex (pushed), or NULL with nil, message pushed. */
static lre_t *compile(lua_State *L, int ridx, int oidx) {
  size_t rlen;
  const char *re = luaL_checklstring(L, ridx, &rlen);
  const char *opts = luaL_optstring(L, oidx, "");
  bool once, utf;
  uint32_t flags = parse_flags(L, opts, &once, &utf);
  if (once) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, RE_CACHE);
    lua_pushfstring(L, "%s/", opts);
    lua_pushvalue(L, ridx);
    lua_concat(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lua_remove(L, -2);
      return lua_touserdata(L, -1);
    }
    lua_pop(L, 1);
  }
  lre_t *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, RE_MT);
  int code;
  PCRE2_SIZE at;
  r->code = pcre2_compile((PCRE2_SPTR)re, rlen, flags, &code, &at, NULL);
  r->utf = utf;
  if (r->code == NULL) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(code, msg, sizeof msg);
    lua_pushnil(L);
    lua_pushfstring(L, "pcre2_compile() failed: %s in \"%s\" at \"%s\"", (const char *)msg,
                    re, re + (at < rlen ? at : rlen));
    return NULL;
  }
  r->md = pcre2_match_data_create_from_pattern(r->code, NULL);
  if (r->md == NULL)
    luaL_error(L, "not enough memory");
  if (once) { /* the cache table is below the new regex */
    lua_pushfstring(L, "%s/", opts);
    lua_pushvalue(L, ridx);
    lua_concat(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_remove(L, -2);
  }
  return r;
}

/* One search from byte `start`: the number of pairs set, 0 for no match,
 * or -1 with nil, message pushed. */
static int exec(lua_State *L, lre_t *r, const char *s, size_t len, size_t start,
                uint32_t flags) {
  int rc = pcre2_match(r->code, (PCRE2_SPTR)s, len, start, flags, r->md, NULL);
  if (rc == PCRE2_ERROR_NOMATCH)
    return 0;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    lua_pushnil(L);
    lua_pushfstring(L, "pcre2_match() failed: %s", (const char *)msg);
    return -1;
  }
  return rc;
}

/* Pushes the captures table of the last match: [0] the whole match, [n]
 * the groups (false where a group did not take part), and named groups by
 * name. */
static void push_captures(lua_State *L, lre_t *r, const char *s) {
  uint32_t n;
  pcre2_pattern_info(r->code, PCRE2_INFO_CAPTURECOUNT, &n);
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
  uint32_t pairs = pcre2_get_ovector_count(r->md);
  lua_createtable(L, (int)n, 1);
  for (uint32_t i = 0; i <= n; i++) {
    if (i < pairs && ov[2 * i] != PCRE2_UNSET)
      lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
    else
      lua_pushboolean(L, 0);
    lua_rawseti(L, -2, (lua_Integer)i);
  }
  uint32_t names, entry;
  PCRE2_SPTR table;
  pcre2_pattern_info(r->code, PCRE2_INFO_NAMECOUNT, &names);
  pcre2_pattern_info(r->code, PCRE2_INFO_NAMEENTRYSIZE, &entry);
  pcre2_pattern_info(r->code, PCRE2_INFO_NAMETABLE, &table);
  for (uint32_t k = 0; k < names; k++) {
    PCRE2_SPTR e = table + k * entry;
    const char *name = (const char *)e + 2;
    lua_rawgeti(L, -1, e[0] << 8 | e[1]);
    if (lua_toboolean(L, -1)) { /* a duplicate name: the group that took part */
      lua_setfield(L, -2, name);
      continue;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, -1, name) == LUA_TNIL) {
      lua_pushboolean(L, 0);
      lua_setfield(L, -3, name);
    }
    lua_pop(L, 1);
  }
}

/* ctx.pos (1-based) as a byte offset, or 0. */
static size_t ctx_start(lua_State *L, int cidx, size_t len) {
  if (lua_isnoneornil(L, cidx))
    return 0;
  luaL_checktype(L, cidx, LUA_TTABLE);
  lua_getfield(L, cidx, "pos");
  lua_Integer pos = lua_isnil(L, -1) ? 1 : luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  if (pos < 1)
    pos = 1;
  return (size_t)pos - 1 > len ? len + 1 : (size_t)pos - 1;
}

static void ctx_set(lua_State *L, int cidx, size_t end) {
  if (lua_isnoneornil(L, cidx))
    return;
  lua_pushinteger(L, (lua_Integer)end + 1);
  lua_setfield(L, cidx, "pos");
}

/* lua: ngx.re.match(subject, regex [, options [, ctx]])
 * Matches a PCRE2 regex (OpenResty's options: "i", "m", "s", "x", "u", "a",
 * "D", "o" to compile once per worker; "j" is accepted) from ctx.pos
 * (1-based; ctx.pos is set after the match).
 * Returns: the captures table ([0] the match, [1]... the groups, false for
 * a group that took no part, named groups by name), nil for no match, or
 * nil, error for a bad regex.
 * Errors: raises for a non-string subject or regex and unknown options.
 * Example: local m = ngx.re.match("hello 1234", "([0-9])[0-9]+") -- m[0] "1234" */
static int l_re_match(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_settop(L, 4); /* the regex goes above the arguments */
  lre_t *r = compile(L, 2, 3);
  if (r == NULL)
    return 2;
  size_t start = ctx_start(L, 4, len);
  if (start > len) {
    lua_pushnil(L);
    return 1;
  }
  int rc = exec(L, r, s, len, start, 0);
  if (rc <= 0) {
    if (rc == 0)
      lua_pushnil(L);
    return rc == 0 ? 1 : 2;
  }
  ctx_set(L, 4, pcre2_get_ovector_pointer(r->md)[1]);
  push_captures(L, r, s);
  return 1;
}

/* lua: ngx.re.find(subject, regex [, options [, ctx [, nth]]])
 * As ngx.re.match, without a table.
 * Returns: the 1-based start and end of the match (or of capture nth), nil
 * for no match, or nil, nil, error for a bad regex.
 * Errors: as ngx.re.match.
 * Example: local from, to = ngx.re.find("hello 1234", "[0-9]+") -- 7, 10 */
static int l_re_find(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer nth = luaL_optinteger(L, 5, 0);
  luaL_argcheck(L, nth >= 0, 5, "nth must not be negative");
  lua_settop(L, 5);
  lre_t *r = compile(L, 2, 3);
  if (r == NULL) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 3;
  }
  size_t start = ctx_start(L, 4, len);
  if (start > len) {
    lua_pushnil(L);
    return 1;
  }
  int rc = exec(L, r, s, len, start, 0);
  if (rc <= 0) {
    if (rc == 0) {
      lua_pushnil(L);
      return 1;
    }
    lua_pushnil(L);
    lua_insert(L, -2);
    return 3;
  }
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
  ctx_set(L, 4, ov[1]);
  if ((uint32_t)nth >= pcre2_get_ovector_count(r->md) || ov[2 * nth] == PCRE2_UNSET) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)ov[2 * nth] + 1);
  lua_pushinteger(L, (lua_Integer)ov[2 * nth + 1]);
  return 2;
}

/* Where the search after a match ending at `end` starts, and its flags:
 * after an empty match, the same place but not empty there. */
static uint32_t next_flags(size_t from, size_t end) {
  return end == from ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
}

/* After an empty match that cannot be followed by a non-empty one at the
 * same place: one character on. */
static size_t step_char(const lre_t *r, const char *s, size_t len, size_t at) {
  at++;
  if (r->utf)
    while (at < len && ((unsigned char)s[at] & 0xc0) == 0x80)
      at++;
  return at;
}

/* The gmatch iterator: upvalues subject, regex userdata, position, flags
 * of the next search, done. */
static int gmatch_iter(lua_State *L) {
  size_t len;
  const char *s = lua_tolstring(L, lua_upvalueindex(1), &len);
  lre_t *r = lua_touserdata(L, lua_upvalueindex(2));
  size_t at = (size_t)lua_tointeger(L, lua_upvalueindex(3));
  uint32_t flags = (uint32_t)lua_tointeger(L, lua_upvalueindex(4));
  for (;;) {
    if (at > len) {
      lua_pushnil(L);
      return 1;
    }
    int rc = exec(L, r, s, len, at, flags);
    if (rc < 0)
      return 2;
    if (rc == 0 && flags != 0) { /* no non-empty match here: step on */
      at = step_char(r, s, len, at);
      flags = 0;
      continue;
    }
    if (rc == 0) {
      lua_pushinteger(L, (lua_Integer)len + 1);
      lua_replace(L, lua_upvalueindex(3));
      lua_pushnil(L);
      return 1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    lua_pushinteger(L, (lua_Integer)ov[1]);
    lua_replace(L, lua_upvalueindex(3));
    lua_pushinteger(L, next_flags(ov[0], ov[1]));
    lua_replace(L, lua_upvalueindex(4));
    push_captures(L, r, s);
    return 1;
  }
}

/* lua: ngx.re.gmatch(subject, regex [, options])
 * Returns: an iterator over the matches, each a captures table as
 * ngx.re.match's (nil after the last), or nil, error for a bad regex.
 * Errors: as ngx.re.match.
 * Example: for m in ngx.re.gmatch("a1b22", "[0-9]+") do print(m[0]) end */
static int l_re_gmatch(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_settop(L, 3);
  lre_t *r = compile(L, 2, 3);
  if (r == NULL)
    return 2;
  lua_pushvalue(L, 1);
  lua_insert(L, -2);
  lua_pushinteger(L, 0);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, gmatch_iter, 4);
  return 1;
}

/* Appends the replacement template's expansion: $0..$99, ${name}, $$. */
static void expand(lua_State *L, luaL_Buffer *b, lre_t *r, const char *s,
                   const char *tpl, size_t tlen) {
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
  uint32_t pairs = pcre2_get_ovector_count(r->md);
  for (size_t i = 0; i < tlen; i++) {
    if (tpl[i] != '$') {
      luaL_addchar(b, tpl[i]);
      continue;
    }
    if (++i >= tlen)
      luaL_error(L, "bad template: a \"$\" at the end");
    int group = -1;
    if (tpl[i] == '$') {
      luaL_addchar(b, '$');
      continue;
    } else if (tpl[i] >= '0' && tpl[i] <= '9') {
      group = tpl[i] - '0';
      if (i + 1 < tlen && tpl[i + 1] >= '0' && tpl[i + 1] <= '9')
        group = group * 10 + (tpl[++i] - '0');
    } else if (tpl[i] == '{') {
      const char *close = memchr(tpl + i, '}', tlen - i);
      if (close == NULL)
        luaL_error(L, "bad template: \"${\" without \"}\"");
      size_t nlen = (size_t)(close - tpl - i - 1);
      const char *name = tpl + i + 1;
      if (nlen > 0 && name[0] >= '0' && name[0] <= '9') {
        group = 0;
        for (size_t k = 0; k < nlen && group < 1000; k++)
          group = group * 10 + (name[k] - '0');
      } else {
        char nbuf[128];
        if (nlen >= sizeof nbuf)
          luaL_error(L, "bad template: a group name too long");
        memcpy(nbuf, name, nlen);
        nbuf[nlen] = '\0';
        group = pcre2_substring_number_from_name(r->code, (PCRE2_SPTR)nbuf);
        if (group < 0)
          luaL_error(L, "bad template: no group named \"%s\"", nbuf);
      }
      i = (size_t)(close - tpl);
    } else {
      luaL_error(L, "bad template: \"$%c\"", tpl[i]);
    }
    if ((uint32_t)group < pairs && ov[2 * group] != PCRE2_UNSET)
      luaL_addlstring(b, s + ov[2 * group], ov[2 * group + 1] - ov[2 * group]);
  }
}

/* sub (all = false) and gsub. */
static int substitute(lua_State *L, bool all) {
  size_t len, tlen = 0;
  const char *s = luaL_checklstring(L, 1, &len);
  int rtype = lua_type(L, 3);
  luaL_argcheck(L, rtype == LUA_TSTRING || rtype == LUA_TNUMBER || rtype == LUA_TFUNCTION,
                3, "the replacement must be a string or a function");
  const char *tpl = rtype != LUA_TFUNCTION ? lua_tolstring(L, 3, &tlen) : NULL;
  lua_settop(L, 4);
  lre_t *r = compile(L, 2, 4);
  if (r == NULL) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 3;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t at = 0, copied = 0;
  uint32_t flags = 0;
  lua_Integer n = 0;
  while (at <= len) {
    int rc = exec(L, r, s, len, at, flags);
    if (rc < 0) { /* nil, nil, message; the buffer goes with the stack */
      lua_pushnil(L);
      lua_insert(L, -2);
      return 3;
    }
    if (rc == 0 && flags != 0) {
      at = step_char(r, s, len, at);
      flags = 0;
      continue;
    }
    if (rc == 0)
      break;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    size_t from = ov[0], end = ov[1];
    luaL_addlstring(&b, s + copied, from - copied);
    if (tpl != NULL) {
      expand(L, &b, r, s, tpl, tlen);
    } else {
      lua_pushvalue(L, 3);
      push_captures(L, r, s);
      lua_call(L, 1, 1);
      if (!lua_isstring(L, -1))
        luaL_error(L, "the replacement function returned %s, not a string",
                   luaL_typename(L, -1));
      luaL_addvalue(&b);
    }
    copied = end;
    n++;
    if (!all)
      break;
    at = end;
    flags = next_flags(from, end);
  }
  if (copied < len)
    luaL_addlstring(&b, s + copied, len - copied);
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

/* lua: ngx.re.sub(subject, regex, replace [, options])
 * Replaces the first match: replace is a template ($0 the match, $1..$99
 * or ${1} the groups, ${name} a named group, $$ a dollar) or a function
 * given the captures table and returning the replacement.
 * Returns: the new string and the number of replacements (0 or 1), or nil,
 * nil, error for a bad regex.
 * Errors: raises for a bad template, a bad replace argument, and as
 * ngx.re.match.
 * Example: local s = ngx.re.sub("hello world", "(o)", "[$1]") -- "hell[o] world" */
static int l_re_sub(lua_State *L) { return substitute(L, false); }

/* lua: ngx.re.gsub(subject, regex, replace [, options])
 * Replaces every match, as ngx.re.sub.
 * Returns: the new string and the number of replacements, or nil, nil,
 * error for a bad regex.
 * Errors: as ngx.re.sub.
 * Example: local s, n = ngx.re.gsub("a1b22", "[0-9]", "#") -- "a#b##", 3 */
static int l_re_gsub(lua_State *L) { return substitute(L, true); }

#else /* built without PCRE2: every ngx.re function raises */
static int no_pcre2(lua_State *L) {
  return luaL_error(L, "treadle was built without PCRE2 (Debian: libpcre2-dev): no ngx.re");
}
#define l_re_match no_pcre2
#define l_re_find no_pcre2
#define l_re_gmatch no_pcre2
#define l_re_sub no_pcre2
#define l_re_gsub no_pcre2
#define re_gc no_pcre2
#define RE_MT "treadle.regex"
#endif

static const luaL_Reg re_functions[] = {
    {"match", l_re_match}, {"find", l_re_find}, {"gmatch", l_re_gmatch},
    {"sub", l_re_sub},     {"gsub", l_re_gsub}, {NULL, NULL}};

/* Pushes the ngx.re table. */
void lt_push_re(lua_State *L) {
  if (luaL_newmetatable(L, RE_MT)) {
    lua_pushcfunction(L, re_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, re_functions);
}
