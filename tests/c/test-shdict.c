/* The shared dictionary store (bindings/common/shdict.c) on a virtual
 * clock, against a plain reference model: an array in LRU order searched
 * from end to end, following shdict.h's rules. Random operations on a
 * small dict (so that it is full most of the time) compare every result,
 * the free space, the entry count and the key order. Then threads: exact
 * counts from concurrent incr, and a mixed load for TSan. */
#include "harness.h"
#include "shdict.h"

/* The virtual clock every dict of this test reads. */
static _Atomic uint64_t vnow = 1;
static uint64_t vclock(void) {
  /* Relaxed: threads only need some recent value. */
  return atomic_load_explicit(&vnow, memory_order_relaxed);
}
static void set_now(uint64_t t) { atomic_store_explicit(&vnow, t, memory_order_relaxed); }

static uint64_t rng_state;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

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
  case SHD_NUM:
    assert_true(v->u.n == e->n);
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
    v->u.i = rng() % 4 == 0 ? INT64_MAX - (int64_t)(rng() % 3) : (int64_t)(rng() % 100) - 50;
    break;
  case 4:
    v->type = SHD_NUM;
    v->u.n = (double)(rng() % 1000) / 8;
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

static void run_against_model(size_t capacity, int steps, uint64_t start) {
  static model_t m;
  memset(&m, 0, sizeof m);
  m.capacity = capacity;
  shd_dict_t *d = shd_new(capacity, vclock);
  assert_non_null(d);
  uint64_t now = start;
  set_now(now);
  char vbuf[MAX_STR], got[MAX_STR];
  for (int step = 0; step < steps; step++) {
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
        delta.u.i = (int64_t)(rng() % 10);
      else
        delta.u.n = 0.5;
      shd_value_t init = {.type = SHD_INT, .u.i = (int64_t)(rng() % 5)};
      shd_value_t *ip = op == 8 ? &init : NULL;
      shd_value_t mout;
      shd_err_t want = mincr(&m, key, klen, &delta, ip, ttl, now, &mout, &f2);
      assert_int_equal(shd_incr(d, key, klen, &delta, ip, ttl, &out, &f1), want);
      assert_int_equal(f1, f2);
      if (want == SHD_OK) {
        assert_int_equal(out.type, mout.type);
        assert_true(out.type == SHD_INT ? out.u.i == mout.u.i : out.u.n == mout.u.n);
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

static void matches_model_small(void **state) {
  (void)state;
  rng_state = 0x9e3779b97f4a7c15u;
  run_against_model(2048, (int)test_scale(200000), 1);
}

static void matches_model_roomy(void **state) {
  (void)state;
  rng_state = 0x243f6a8885a308d3u;
  run_against_model(64 * 1024, (int)test_scale(200000), 1000000);
}

static void matches_model_tiny(void **state) {
  (void)state; /* room for two or three entries: evictions all the time */
  rng_state = 0x13198a2e03707344u;
  run_against_model(200, (int)test_scale(100000), 5);
}

/* ------------------------------------------------------------ cases */

static void lru_eviction_order(void **state) {
  (void)state;
  /* four 100-byte entries fit in 400 bytes (64 + 2 + 34 each) */
  set_now(1);
  shd_dict_t *d = shd_new(400, vclock);
  char val[34] = {0};
  shd_value_t v = {.type = SHD_STR, .str = val, .len = sizeof val};
  bool forcible;
  const char *keys[] = {"k1", "k2", "k3", "k4"};
  for (int i = 0; i < 4; i++)
    assert_int_equal(shd_store(d, SHD_SET, keys[i], 2, &v, 0, &forcible), SHD_OK);
  assert_int_equal(shd_free_space(d), 0);
  shd_value_t out;
  char buf[64];
  assert_int_equal(shd_get(d, "k1", 2, &out, buf, sizeof buf, NULL), SHD_OK);
  /* LRU now k2: a safe_set fails and keeps everything, a set evicts k2 */
  assert_int_equal(shd_store(d, SHD_SAFE_SET, "k5", 2, &v, 0, &forcible), SHD_ENOMEM);
  assert_false(forcible);
  assert_int_equal(shd_count(d), 4);
  assert_int_equal(shd_store(d, SHD_SET, "k5", 2, &v, 0, &forcible), SHD_OK);
  assert_true(forcible);
  assert_int_equal(shd_get(d, "k2", 2, &out, buf, sizeof buf, NULL), SHD_ENOTFOUND);
  assert_int_equal(shd_get(d, "k3", 2, &out, buf, sizeof buf, NULL), SHD_OK);
  /* an expired entry makes room without forcing anything */
  assert_int_equal(shd_expire(d, "k4", 2, 5), SHD_OK);
  set_now(10);
  assert_int_equal(shd_store(d, SHD_SAFE_SET, "k6", 2, &v, 0, &forcible), SHD_OK);
  assert_false(forcible);
  assert_int_equal(shd_get(d, "k4", 2, &out, buf, sizeof buf, &forcible), SHD_ENOTFOUND);
  /* larger than the dict: no memory, even for set */
  char big[400];
  shd_value_t vb = {.type = SHD_STR, .str = big, .len = sizeof big};
  assert_int_equal(shd_store(d, SHD_SET, "kb", 2, &vb, 0, &forcible), SHD_ENOMEM);
  assert_int_equal(shd_count(d), 4);
  shd_unref(d);
}

static void names_and_references(void **state) {
  (void)state;
  shd_dict_t *a, *b;
  assert_null(shd_find("test-shdict-names"));
  assert_int_equal(shd_open("test-shdict-names", 0, vclock, &a), SHD_ENOTFOUND);
  assert_int_equal(shd_open("test-shdict-names", 1000, vclock, &a), SHD_OK);
  assert_int_equal(shd_open("test-shdict-names", 1000, vclock, &b), SHD_OK);
  assert_ptr_equal(a, b);
  assert_int_equal(shd_open("test-shdict-names", 999, vclock, &b), SHD_ECAPACITY);
  assert_null(b);
  b = shd_find("test-shdict-names");
  assert_ptr_equal(a, b);
  assert_string_equal(shd_name(b), "test-shdict-names");
  shd_value_t v = {.type = SHD_INT, .u.i = 7};
  bool forcible;
  assert_int_equal(shd_store(a, SHD_SET, "x", 1, &v, 0, &forcible), SHD_OK);
  shd_unref(a);
  shd_unref(b);
  b = shd_find("test-shdict-names");
  assert_non_null(b); /* one reference left */
  shd_unref(b);
  shd_unref(a); /* the last: gone, entries and all (valgrind, ASan) */
  assert_null(shd_find("test-shdict-names"));
  assert_null(shd_new(0, vclock));
  assert_string_equal(shd_strerror(SHD_ENOMEM), "no memory");
  assert_string_equal(shd_strerror(SHD_ENOTNUM), "not a number");
}

static void incr_rules(void **state) {
  (void)state;
  set_now(1);
  shd_dict_t *d = shd_new(4096, vclock);
  shd_value_t one = {.type = SHD_INT, .u.i = 1}, out;
  shd_value_t zero = {.type = SHD_INT, .u.i = 0};
  bool forcible;
  assert_int_equal(shd_incr(d, "n", 1, &one, NULL, 0, &out, &forcible), SHD_ENOTFOUND);
  assert_int_equal(shd_incr(d, "n", 1, &one, &zero, 10, &out, &forcible), SHD_OK);
  assert_true(out.type == SHD_INT && out.u.i == 1);
  uint64_t ms;
  set_now(4);
  assert_int_equal(shd_ttl(d, "n", 1, &ms), SHD_OK);
  assert_int_equal(ms, 7);
  /* an existing key keeps its TTL; init is ignored */
  set_now(5);
  assert_int_equal(shd_incr(d, "n", 1, &one, &zero, 100, &out, &forcible), SHD_OK);
  assert_true(out.u.i == 2);
  assert_int_equal(shd_ttl(d, "n", 1, &ms), SHD_OK);
  assert_int_equal(ms, 6);
  /* expired: init again */
  set_now(11);
  assert_int_equal(shd_incr(d, "n", 1, &one, &zero, 0, &out, &forcible), SHD_OK);
  assert_true(out.u.i == 1);
  shd_value_t s = {.type = SHD_STR, .str = "x", .len = 1};
  assert_int_equal(shd_store(d, SHD_SET, "s", 1, &s, 0, &forcible), SHD_OK);
  assert_int_equal(shd_incr(d, "s", 1, &one, &zero, 0, &out, &forcible), SHD_ENOTNUM);
  /* integer overflow turns into a double */
  shd_value_t max = {.type = SHD_INT, .u.i = INT64_MAX};
  assert_int_equal(shd_store(d, SHD_SET, "m", 1, &max, 0, &forcible), SHD_OK);
  assert_int_equal(shd_incr(d, "m", 1, &one, NULL, 0, &out, &forcible), SHD_OK);
  assert_int_equal(out.type, SHD_NUM);
  assert_true(out.u.n == 9223372036854775808.0);
  shd_value_t half = {.type = SHD_NUM, .u.n = 0.5};
  assert_int_equal(shd_incr(d, "n", 1, &half, NULL, 0, &out, &forcible), SHD_OK);
  assert_true(out.type == SHD_NUM && out.u.n == 1.5);
  shd_unref(d);
}

static void lists(void **state) {
  (void)state;
  set_now(1);
  /* the list's entry (64 + 1) and three items (40 + 8 each) fill 209 bytes */
  shd_dict_t *d = shd_new(209, vclock);
  shd_value_t v = {.type = SHD_STR, .str = "abcdefgh", .len = 8}, out;
  size_t len;
  assert_int_equal(shd_push(d, "l", 1, false, &v, &len), SHD_OK);
  assert_int_equal(len, 1);
  shd_value_t n = {.type = SHD_INT, .u.i = 5};
  assert_int_equal(shd_push(d, "l", 1, true, &v, &len), SHD_OK);
  assert_int_equal(shd_push(d, "l", 1, false, &v, &len), SHD_OK);
  assert_int_equal(len, 3);
  assert_int_equal(shd_free_space(d), 0);
  /* alone and full: the list is not evicted for its own item */
  assert_int_equal(shd_push(d, "l", 1, true, &n, &len), SHD_ENOMEM);
  assert_int_equal(shd_llen(d, "l", 1, &len), SHD_OK);
  assert_int_equal(len, 3);
  char buf[16];
  assert_int_equal(shd_get(d, "l", 1, &out, buf, sizeof buf, NULL), SHD_EISLIST);
  bool forcible;
  assert_int_equal(shd_incr(d, "l", 1, &n, NULL, 0, &out, &forcible), SHD_ENOTNUM);
  /* pops from both ends; the last one takes the key */
  void *item;
  for (int k = 0; k < 3; k++) {
    assert_int_equal(shd_pop(d, "l", 1, k % 2 == 0, &out, &item), SHD_OK);
    assert_int_equal(out.type, SHD_STR);
    assert_memory_equal(out.str, "abcdefgh", 8);
    shd_item_free(item);
  }
  assert_int_equal(shd_pop(d, "l", 1, true, &out, &item), SHD_ENOTFOUND);
  assert_null(item);
  assert_int_equal(shd_count(d), 0);
  assert_int_equal(shd_free_space(d), 209);
  /* another value is not a list; a set replaces a list, items and all */
  assert_int_equal(shd_store(d, SHD_SET, "s", 1, &n, 0, &forcible), SHD_OK);
  assert_int_equal(shd_push(d, "s", 1, true, &n, &len), SHD_ENOTLIST);
  assert_int_equal(shd_pop(d, "s", 1, true, &out, &item), SHD_ENOTLIST);
  assert_int_equal(shd_llen(d, "s", 1, &len), SHD_ENOTLIST);
  assert_int_equal(shd_push(d, "l", 1, true, &n, &len), SHD_OK);
  assert_int_equal(shd_store(d, SHD_SET, "l", 1, &n, 0, &forcible), SHD_OK);
  assert_int_equal(shd_get(d, "l", 1, &out, buf, sizeof buf, NULL), SHD_OK);
  assert_int_equal(shd_free_space(d), 209 - 2 * (SHD_ENTRY_OVERHEAD + 1));
  /* a list that expires goes as a whole (freed with its items: ASan) */
  assert_int_equal(shd_push(d, "e", 1, true, &v, &len), SHD_OK);
  assert_int_equal(shd_expire(d, "e", 1, 5), SHD_OK);
  set_now(10);
  assert_int_equal(shd_llen(d, "e", 1, &len), SHD_OK);
  assert_int_equal(len, 0);
  assert_int_equal(shd_flush_expired(d, 0), 1);
  assert_int_equal(shd_push(d, "e", 1, true, &v, &len), SHD_OK);
  shd_unref(d); /* with a list in it */
}

/* ------------------------------------------------------------ threads */

typedef struct {
  shd_dict_t *d;
  long n;
  int id;
} worker_arg_t;

static void *incr_worker(void *p) {
  worker_arg_t *a = p;
  shd_value_t one = {.type = SHD_INT, .u.i = 1}, zero = {.type = SHD_INT}, out;
  bool forcible;
  for (long i = 0; i < a->n; i++) {
    shd_err_t rc = shd_incr(a->d, "hits", 4, &one, &zero, 0, &out, &forcible);
    if (rc != SHD_OK)
      return (void *)1;
  }
  return NULL;
}

static void concurrent_incr_is_exact(void **state) {
  (void)state;
  shd_dict_t *d = shd_new(1 << 16, vclock);
  enum { THREADS = 4 };
  long n = (long)test_scale(200000);
  pthread_t th[THREADS];
  worker_arg_t args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (worker_arg_t){.d = d, .n = n, .id = i};
    assert_int_equal(pthread_create(&th[i], NULL, incr_worker, &args[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  shd_value_t out;
  char buf[8];
  assert_int_equal(shd_get(d, "hits", 4, &out, buf, sizeof buf, NULL), SHD_OK);
  assert_int_equal(out.type, SHD_INT);
  assert_int_equal(out.u.i, n * THREADS);
  shd_unref(d);
}

static void *mixed_worker(void *p) {
  worker_arg_t *a = p;
  uint64_t s = 0x9e3779b97f4a7c15u * (uint64_t)(a->id + 1);
  char key[16], val[200], buf[256];
  for (long i = 0; i < a->n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    size_t klen = (size_t)snprintf(key, sizeof key, "k%d", (int)(s % 64));
    if (i % 16 == 0) /* Relaxed: any order of the threads' ticks will do. */
      atomic_fetch_add_explicit(&vnow, 1, memory_order_relaxed);
    shd_value_t v = {.type = SHD_STR, .str = val, .len = s % sizeof val}, out;
    shd_value_t one = {.type = SHD_INT, .u.i = 1};
    bool forcible;
    uint64_t ms;
    size_t count;
    shd_err_t err;
    switch (s % 8) {
    case 0:
      shd_store(a->d, SHD_SET, key, klen, &v, s % 3, &forcible);
      break;
    case 1:
      shd_store(a->d, SHD_SAFE_ADD, key, klen, &v, 0, &forcible);
      break;
    case 2:
      shd_incr(a->d, key, klen, &one, &one, 2, &out, &forcible);
      break;
    case 3:
      shd_get(a->d, key, klen, &out, buf, sizeof buf, NULL);
      break;
    case 4:
      shd_ttl(a->d, key, klen, &ms);
      shd_expire(a->d, key, klen, 1);
      break;
    case 5:
      shd_flush_expired(a->d, 2);
      break;
    case 6:
      free(shd_keys(a->d, 8, &count, &err));
      break;
    default:
      shd_free_space(a->d);
    }
  }
  return NULL;
}

static void concurrent_mixed_load(void **state) {
  (void)state;
  shd_dict_t *d = shd_new(4096, vclock); /* small: evictions all the time */
  enum { THREADS = 4 };
  pthread_t th[THREADS];
  worker_arg_t args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (worker_arg_t){.d = d, .n = (long)test_scale(100000), .id = i};
    assert_int_equal(pthread_create(&th[i], NULL, mixed_worker, &args[i]), 0);
  }
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  assert_true(shd_free_space(d) <= 4096);
  shd_unref(d);
}

static const struct CMUnitTest tests[] = {
    TEST(matches_model_small),
    TEST(matches_model_roomy),
    TEST(matches_model_tiny),
    TEST(lru_eviction_order),
    TEST(names_and_references),
    TEST(incr_rules),
    TEST(lists),
    TEST(concurrent_incr_is_exact),
    TEST(concurrent_mixed_load),
};

TEST_MAIN(tests)
