/* A plain reference model of the shared dictionary (bindings/common/
 * shdict.c): an array in LRU order searched from end to end, following
 * shdict.h's rules, and a run of random operations on a real dict and the
 * model that compares every result, the free space, the entry count and
 * the key order. Shared by tests/c/test-shdict.c (choices from a seeded
 * generator) and tests/fuzz/fuzz_shdict.c (choices from the fuzzer's
 * input).
 *
 * The includer defines, before including it: cmocka's assert_* macros
 * (or look-alikes), `static uint64_t rng(void)` (the next choice) and
 * `static bool model_more(void)` (whether to go on). */
#ifndef TREADLE_TEST_SHDICT_MODEL_H
#define TREADLE_TEST_SHDICT_MODEL_H

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shdict.h"

static uint64_t rng(void);
static bool model_more(void);

/* The virtual clock every dict of this test reads. */
static _Atomic uint64_t vnow = 1;
static uint64_t vclock(void) {
  /* Relaxed: threads only need some recent value. */
  return atomic_load_explicit(&vnow, memory_order_relaxed);
}
static void set_now(uint64_t t) { atomic_store_explicit(&vnow, t, memory_order_relaxed); }

/* ------------------------------------------------------------ the model */

#define MAX_ENTRIES 512
#define MAX_STR 400
#define MAX_ITEMS 48  /* a model list's length: longer ones are not pushed to */
#define ITEM_STR 20

typedef struct {
  shd_type_t type; /* SHD_INT or SHD_STR */
  int64_t i;
  char s[ITEM_STR];
  size_t len;
} mitem_t;

typedef struct {
  char key[16];
  size_t klen;
  shd_type_t type;
  int64_t i;
  double n;
  bool b;
  char str[MAX_STR];
  size_t len;
  uint32_t flags;
  uint64_t expires;
  mitem_t items[MAX_ITEMS]; /* SHD_LIST: items[0] is the left end */
  size_t nitems;
} mentry_t;

typedef struct {
  size_t capacity, used;
  mentry_t e[MAX_ENTRIES]; /* e[0]: most recently used */
  size_t n;
} model_t;

static size_t icost(const mitem_t *it) {
  return SHD_NODE_OVERHEAD + (it->type == SHD_STR ? it->len : 0);
}
static size_t mcost(const mentry_t *e) {
  size_t c = SHD_ENTRY_OVERHEAD + e->klen + (e->type == SHD_STR ? e->len : 0);
  for (size_t k = 0; e->type == SHD_LIST && k < e->nitems; k++)
    c += icost(&e->items[k]);
  return c;
}
static bool mexpired(const mentry_t *e, uint64_t now) {
  return e->expires != 0 && e->expires <= now;
}
static int mfind(model_t *m, const char *key, size_t klen) {
  for (size_t i = 0; i < m->n; i++)
    if (m->e[i].klen == klen && memcmp(m->e[i].key, key, klen) == 0)
      return (int)i;
  return -1;
}
static void mremove(model_t *m, size_t i) {
  m->used -= mcost(&m->e[i]);
  memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof m->e[0]);
  m->n--;
}
static int mtouch(model_t *m, size_t i) {
  mentry_t e = m->e[i];
  memmove(&m->e[1], &m->e[0], i * sizeof m->e[0]);
  m->e[0] = e;
  return 0;
}
static void minsert(model_t *m, const mentry_t *e) {
  assert_true(m->n < MAX_ENTRIES);
  memmove(&m->e[1], &m->e[0], m->n * sizeof m->e[0]);
  m->e[0] = *e;
  m->n++;
  m->used += mcost(e);
}

/* shdict.c's put_locked, as the header states it. */
static shd_err_t mput(model_t *m, int old, const mentry_t *fresh, bool safe,
                      uint64_t now, bool *forcible) {
  size_t need = mcost(fresh);
  char oldkey[16];
  size_t oldklen = 0;
  if (old >= 0) {
    memcpy(oldkey, m->e[old].key, m->e[old].klen);
    oldklen = m->e[old].klen;
  }
  if (need > m->capacity)
    return SHD_ENOMEM;
  for (int k = 0; k < 2 && m->n > 0 && mexpired(&m->e[m->n - 1], now); k++)
    mremove(m, m->n - 1);
  old = old >= 0 ? mfind(m, oldkey, oldklen) : -1;
  size_t room = m->capacity - m->used + (old >= 0 ? mcost(&m->e[old]) : 0);
  if (need > room && safe) {
    for (int i = (int)m->n - 1; i >= 0 && need > room; i--)
      if (i != old && mexpired(&m->e[i], now)) {
        room += mcost(&m->e[i]);
        mremove(m, (size_t)i);
        if (old > i)
          old--;
      }
    if (need > room)
      return SHD_ENOMEM;
  }
  if (old >= 0)
    mremove(m, (size_t)old);
  while (m->capacity - m->used < need) {
    if (!mexpired(&m->e[m->n - 1], now))
      *forcible = true;
    mremove(m, m->n - 1);
  }
  minsert(m, fresh);
  return SHD_OK;
}

static void mentry_from(mentry_t *e, const char *key, size_t klen, const shd_value_t *v,
                        uint64_t ttl, uint64_t now) {
  memset(e, 0, sizeof *e);
  memcpy(e->key, key, klen);
  e->klen = klen;
  e->type = v->type;
  e->i = v->type == SHD_INT ? v->u.i : 0;
  e->n = v->type == SHD_NUM ? v->u.n : 0;
  e->b = v->type == SHD_BOOL ? v->u.b : false;
  if (v->type == SHD_STR) {
    memcpy(e->str, v->str, v->len);
    e->len = v->len;
  }
  e->flags = v->flags;
  e->expires = ttl == 0 ? 0 : now + ttl;
}

static shd_err_t mstore(model_t *m, shd_op_t op, const char *key, size_t klen,
                        const shd_value_t *v, uint64_t ttl, uint64_t now, bool *forcible) {
  *forcible = false;
  int old = mfind(m, key, klen);
  bool valid = old >= 0 && !mexpired(&m->e[old], now);
  if ((op == SHD_ADD || op == SHD_SAFE_ADD) && valid)
    return SHD_EEXISTS;
  if (op == SHD_REPLACE && !valid)
    return SHD_ENOTFOUND;
  if (v->type == SHD_NIL) {
    if (old >= 0)
      mremove(m, (size_t)old);
    return SHD_OK;
  }
  mentry_t fresh;
  mentry_from(&fresh, key, klen, v, ttl, now);
  return mput(m, old, &fresh, op == SHD_SAFE_SET || op == SHD_SAFE_ADD, now, forcible);
}

static shd_value_t madd(shd_type_t at, int64_t ai, double an, const shd_value_t *b) {
  shd_value_t r = {.type = SHD_INT};
  if (at == SHD_INT && b->type == SHD_INT && !__builtin_add_overflow(ai, b->u.i, &r.u.i))
    return r;
  r.type = SHD_NUM;
  r.u.n = (at == SHD_INT ? (double)ai : an) + (b->type == SHD_INT ? (double)b->u.i : b->u.n);
  return r;
}

static shd_err_t mincr(model_t *m, const char *key, size_t klen, const shd_value_t *delta,
                       const shd_value_t *init, uint64_t ttl, uint64_t now,
                       shd_value_t *out, bool *forcible) {
  *forcible = false;
  int i = mfind(m, key, klen);
  if (i >= 0 && !mexpired(&m->e[i], now)) {
    mentry_t *e = &m->e[i];
    if (e->type != SHD_INT && e->type != SHD_NUM)
      return SHD_ENOTNUM;
    *out = madd(e->type, e->i, e->n, delta);
    e->type = out->type;
    e->i = out->type == SHD_INT ? out->u.i : 0;
    e->n = out->type == SHD_NUM ? out->u.n : 0;
    mtouch(m, (size_t)i);
    return SHD_OK;
  }
  if (init == NULL)
    return SHD_ENOTFOUND;
  *out = madd(init->type, init->type == SHD_INT ? init->u.i : 0,
              init->type == SHD_NUM ? init->u.n : 0, delta);
  mentry_t fresh;
  mentry_from(&fresh, key, klen, out, ttl, now);
  return mput(m, i, &fresh, false, now, forcible);
}

/* ------------------------------------------------------------ comparing */

static void check_value(const mentry_t *e, const shd_value_t *v) {
  assert_int_equal(v->type, e->type);
  assert_int_equal(v->flags, e->flags);
  switch (e->type) {
  case SHD_INT:
    assert_true(v->u.i == e->i);
    break;
  case SHD_NUM: /* the same bits: NaN and -0.0 too */
    assert_memory_equal(&v->u.n, &e->n, sizeof e->n);
    break;
  case SHD_BOOL:
    assert_int_equal(v->u.b, e->b);
    break;
  case SHD_STR:
    assert_int_equal(v->len, e->len);
    assert_memory_equal(v->str, e->str, e->len);
    break;
  case SHD_NIL:
  case SHD_LIST:
    break;
  }
}

/* lpush / rpush, as shd_push states it. */
static shd_err_t mpush(model_t *m, const char *key, size_t klen, bool left,
                       const mitem_t *it, uint64_t now, size_t *len) {
  int i = mfind(m, key, klen);
  if (i >= 0 && !mexpired(&m->e[i], now)) {
    if (m->e[i].type != SHD_LIST)
      return SHD_ENOTLIST;
    mtouch(m, (size_t)i);
    size_t need = icost(it);
    while (m->capacity - m->used < need) {
      if (m->n == 1)
        return SHD_ENOMEM;
      mremove(m, m->n - 1);
    }
    mentry_t *e = &m->e[0];
    if (left) {
      memmove(&e->items[1], &e->items[0], e->nitems * sizeof e->items[0]);
      e->items[0] = *it;
    } else {
      e->items[e->nitems] = *it;
    }
    e->nitems++;
    m->used += need;
    *len = e->nitems;
    return SHD_OK;
  }
  static mentry_t fresh;
  memset(&fresh, 0, sizeof fresh);
  memcpy(fresh.key, key, klen);
  fresh.klen = klen;
  fresh.type = SHD_LIST;
  fresh.items[0] = *it;
  fresh.nitems = 1;
  bool forcible = false;
  shd_err_t err = mput(m, i, &fresh, false, now, &forcible);
  if (err == SHD_OK)
    *len = 1;
  return err;
}

static shd_err_t mpop(model_t *m, const char *key, size_t klen, bool left, uint64_t now,
                      mitem_t *out) {
  int i = mfind(m, key, klen);
  if (i < 0 || mexpired(&m->e[i], now))
    return SHD_ENOTFOUND;
  mentry_t *e = &m->e[i];
  if (e->type != SHD_LIST)
    return SHD_ENOTLIST;
  *out = left ? e->items[0] : e->items[e->nitems - 1];
  if (left)
    memmove(&e->items[0], &e->items[1], (e->nitems - 1) * sizeof e->items[0]);
  e->nitems--;
  m->used -= icost(out);
  if (e->nitems == 0)
    mremove(m, (size_t)i);
  return SHD_OK;
}

static void check_all(shd_dict_t *d, model_t *m, uint64_t now) {
  assert_int_equal(shd_capacity(d), m->capacity); /* constant */
  assert_true(shd_free_space(d) <= m->capacity); /* never "negative" */
  assert_int_equal(shd_free_space(d), m->capacity - m->used);
  assert_int_equal(shd_count(d), m->n);
  size_t count;
  shd_err_t err;
  void *block = shd_keys(d, 0, &count, &err);
  assert_int_equal(err, SHD_OK);
  size_t pos = 0, j = 0;
  for (size_t i = 0; i < m->n; i++) {
    if (mexpired(&m->e[i], now))
      continue;
    size_t klen;
    const char *k = shd_keys_next(block, &pos, &klen);
    assert_int_equal(klen, m->e[i].klen);
    assert_memory_equal(k, m->e[i].key, klen);
    j++;
  }
  assert_int_equal(count, j);
  free(block);
}

/* Numbers at the edges: near the int64 limits (incr overflows into a
 * double there), infinities, NaN, -0.0. */
static int64_t edge_int(void) {
  int64_t d = (int64_t)(rng() % 3);
  return rng() % 2 ? INT64_MAX - d : INT64_MIN + d;
}
static double edge_double(void) {
  static const double edges[] = {INFINITY, -INFINITY, NAN, -0.0, 1e308, -1e308, 0x1p-1074};
  return edges[rng() % (sizeof edges / sizeof edges[0])];
}

static void random_value(shd_value_t *v, char *buf) {
  memset(v, 0, sizeof *v);
  switch (rng() % 8) {
  case 0:
    v->type = SHD_NIL;
    break;
  case 1:
    v->type = SHD_BOOL;
    v->u.b = rng() % 2;
    break;
  case 2:
  case 3:
    v->type = SHD_INT;
    v->u.i = rng() % 4 == 0 ? edge_int() : (int64_t)(rng() % 100) - 50;
    break;
  case 4:
    v->type = SHD_NUM;
    v->u.n = rng() % 8 == 0 ? edge_double() : (double)(rng() % 1000) / 8;
    break;
  default:
    v->type = SHD_STR;
    v->len = rng() % 4 == 0 ? rng() % MAX_STR : rng() % 24;
    for (size_t i = 0; i < v->len; i++)
      buf[i] = (char)rng();
    v->str = buf;
  }
  v->flags = rng() % 3 == 0 ? (uint32_t)rng() : 0;
}

/* Runs up to `steps` operations (while model_more() says so), each chosen
 * by rng(), on a dict of this capacity whose clock starts at `start`, and
 * on the model; compares every result. */
static void run_against_model(size_t capacity, long steps, uint64_t start) {
  static model_t m; /* big: static, and only its header reset */
  m.n = m.used = 0;
  m.capacity = capacity;
  shd_dict_t *d = shd_new(capacity, vclock);
  assert_non_null(d);
  uint64_t now = start;
  set_now(now);
  char vbuf[MAX_STR], got[MAX_STR];
  for (long step = 0; step < steps && model_more(); step++) {
    char key[16];
    size_t klen = (size_t)snprintf(key, sizeof key, "k%d", (int)(rng() % 40));
    uint64_t ttl = rng() % 3 == 0 ? 1 + rng() % 50 : 0;
    shd_value_t v, mv, out;
    bool f1, f2, st1, st2;
    uint64_t ms1, ms2;
    unsigned op = (unsigned)(rng() % 20);
    switch (op) {
    case 0:
    case 1: { /* get, get_stale */
      bool want = op == 1;
      int i = mfind(&m, key, klen);
      bool found = i >= 0 && (want || !mexpired(&m.e[i], now));
      bool list = found && m.e[i].type == SHD_LIST;
      shd_err_t rc = shd_get(d, key, klen, &out, got, sizeof got, want ? &st1 : NULL);
      assert_int_equal(rc, list ? SHD_EISLIST : found ? SHD_OK : SHD_ENOTFOUND);
      if (found && !list) {
        check_value(&m.e[i], &out);
        if (want)
          assert_int_equal(st1, mexpired(&m.e[i], now));
        mtouch(&m, (size_t)i);
      }
      break;
    }
    case 2:
    case 3:
    case 4:
    case 5:
    case 6: { /* the five stores */
      static const shd_op_t ops[] = {SHD_SET, SHD_SAFE_SET, SHD_ADD, SHD_SAFE_ADD, SHD_REPLACE};
      shd_op_t sop = ops[op - 2];
      random_value(&v, vbuf);
      mv = v;
      shd_err_t want = mstore(&m, sop, key, klen, &mv, ttl, now, &f2);
      assert_int_equal(shd_store(d, sop, key, klen, &v, ttl, &f1), want);
      assert_int_equal(f1, f2);
      break;
    }
    case 7:
    case 8: { /* incr, with an init half the time */
      shd_value_t delta = {.type = rng() % 4 ? SHD_INT : SHD_NUM};
      if (delta.type == SHD_INT)
        delta.u.i = rng() % 8 == 0 ? edge_int() : (int64_t)(rng() % 10);
      else
        delta.u.n = rng() % 8 == 0 ? edge_double() : 0.5;
      shd_value_t init = {.type = SHD_INT, .u.i = (int64_t)(rng() % 5)};
      if (rng() % 8 == 0) /* an init at an edge, or a double */
        init = rng() % 2 ? (shd_value_t){.type = SHD_INT, .u.i = edge_int()}
                         : (shd_value_t){.type = SHD_NUM, .u.n = edge_double()};
      shd_value_t *ip = op == 8 ? &init : NULL;
      shd_value_t mout;
      shd_err_t want = mincr(&m, key, klen, &delta, ip, ttl, now, &mout, &f2);
      assert_int_equal(shd_incr(d, key, klen, &delta, ip, ttl, &out, &f1), want);
      assert_int_equal(f1, f2);
      if (want == SHD_OK) {
        assert_int_equal(out.type, mout.type);
        if (out.type == SHD_INT)
          assert_true(out.u.i == mout.u.i);
        else
          assert_memory_equal(&out.u.n, &mout.u.n, sizeof out.u.n);
      }
      break;
    }
    case 9: { /* ttl */
      int i = mfind(&m, key, klen);
      bool found = i >= 0 && !mexpired(&m.e[i], now);
      assert_int_equal(shd_ttl(d, key, klen, &ms1), found ? SHD_OK : SHD_ENOTFOUND);
      if (found) {
        ms2 = m.e[i].expires == 0 ? 0 : m.e[i].expires - now;
        assert_int_equal(ms1, ms2);
      }
      break;
    }
    case 10: { /* expire */
      int i = mfind(&m, key, klen);
      bool found = i >= 0 && !mexpired(&m.e[i], now);
      assert_int_equal(shd_expire(d, key, klen, ttl), found ? SHD_OK : SHD_ENOTFOUND);
      if (found)
        m.e[i].expires = ttl == 0 ? 0 : now + ttl;
      break;
    }
    case 11: /* the clock moves on */
      now += rng() % 20;
      set_now(now);
      break;
    case 12: { /* flush_expired */
      size_t max = rng() % 4, n = 0;
      for (int i = (int)m.n - 1; i >= 0 && (max == 0 || n < max); i--)
        if (mexpired(&m.e[i], now)) {
          mremove(&m, (size_t)i);
          n++;
        }
      assert_int_equal(shd_flush_expired(d, max), n);
      break;
    }
    case 13: /* flush_all, rarely */
      if (rng() % 20 == 0) {
        shd_flush_all(d);
        for (size_t i = 0; i < m.n; i++)
          m.e[i].expires = 1;
      }
      break;
    case 16:
    case 17: { /* lpush, rpush */
      int i = mfind(&m, key, klen);
      if (i >= 0 && m.e[i].type == SHD_LIST && m.e[i].nitems == MAX_ITEMS)
        break; /* the model's limit */
      mitem_t it = {.type = rng() % 2 ? SHD_INT : SHD_STR, .i = (int64_t)(rng() % 1000)};
      if (it.type == SHD_STR) {
        it.len = rng() % ITEM_STR;
        for (size_t k = 0; k < it.len; k++)
          it.s[k] = (char)rng();
      }
      shd_value_t iv = {.type = it.type, .u.i = it.i, .str = it.s, .len = it.len};
      size_t n1 = 0, n2 = 0;
      shd_err_t want = mpush(&m, key, klen, op == 16, &it, now, &n2);
      assert_int_equal(shd_push(d, key, klen, op == 16, &iv, &n1), want);
      if (want == SHD_OK)
        assert_int_equal(n1, n2);
      break;
    }
    case 18: { /* lpop, rpop */
      bool left = rng() % 2;
      mitem_t it;
      void *item;
      shd_err_t want = mpop(&m, key, klen, left, now, &it);
      assert_int_equal(shd_pop(d, key, klen, left, &out, &item), want);
      if (want == SHD_OK) {
        assert_int_equal(out.type, it.type);
        if (it.type == SHD_INT)
          assert_true(out.u.i == it.i);
        else {
          assert_int_equal(out.len, it.len);
          assert_memory_equal(out.str, it.s, it.len);
        }
        shd_item_free(item);
      } else {
        assert_null(item);
      }
      break;
    }
    case 19: { /* llen */
      int i = mfind(&m, key, klen);
      bool valid = i >= 0 && !mexpired(&m.e[i], now);
      size_t n1;
      shd_err_t want = valid && m.e[i].type != SHD_LIST ? SHD_ENOTLIST : SHD_OK;
      assert_int_equal(shd_llen(d, key, klen, &n1), want);
      if (want == SHD_OK)
        assert_int_equal(n1, valid ? m.e[i].nitems : 0);
      break;
    }
    default: { /* keys, limited */
      size_t max = 1 + rng() % 5, count;
      shd_err_t err;
      void *block = shd_keys(d, max, &count, &err);
      size_t j = 0, pos = 0, kl;
      for (size_t i = 0; i < m.n && j < max; i++)
        if (!mexpired(&m.e[i], now)) {
          const char *k = shd_keys_next(block, &pos, &kl);
          assert_int_equal(kl, m.e[i].klen);
          assert_memory_equal(k, m.e[i].key, kl);
          j++;
        }
      assert_int_equal(count, j);
      free(block);
    }
    }
    (void)st2;
    if (step % 16 == 0)
      check_all(d, &m, now);
  }
  check_all(d, &m, now);
  shd_unref(d);
}

#endif
