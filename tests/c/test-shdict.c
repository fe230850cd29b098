/* The shared dictionary store (bindings/common/shdict.c) on a virtual
 * clock, against a plain reference model (shdict_model.h: an array in LRU
 * order searched from end to end, following shdict.h's rules). Random
 * operations on a small dict (so that it is full most of the time) compare
 * every result, the free space, the entry count and the key order. Then
 * threads: exact counts from concurrent incr, and a mixed load for TSan. */
#include "harness.h"
#include "shdict.h"

static uint64_t rng_state;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static bool model_more(void) { return true; }

#include "shdict_model.h"

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
