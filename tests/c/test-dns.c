/* Host name lookups (issue 14 item 4): names resolve on the blocking pool,
 * numeric addresses at once, a name that does not exist says ENOHOST, bad
 * input is EINVAL, and a lookup dropped before its job ran or while it runs
 * leaves nothing behind (the harness checks threads and fds, ASan and
 * valgrind the memory). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"

/* One lookup, run by a task; the results go to the test's thread. */
typedef struct {
  const char *host;
  int port;
  treadle_lookup_t lk;
  bool started;
  int polls;
  treadle_err_t *err;
  treadle_addrs_t **out;
  int *polls_out;
  treadle_err_t *again; /* if set: a poll after READY says this */
} lookup_task_t;

static treadle_poll_t lookup_poll(treadle_cx_t *cx, void *st) {
  lookup_task_t *t = st;
  if (!t->started) {
    t->started = true;
    *t->err = treadle_lookup_host_init(&t->lk, treadle_cx_handle(cx), t->host,
                                       t->port);
    if (*t->err != 0)
      return TREADLE_READY;
  }
  t->polls++;
  if (treadle_lookup_host_poll(&t->lk, cx, t->out, t->err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  *t->polls_out = t->polls;
  if (t->again != NULL) {
    treadle_addrs_t *more = (treadle_addrs_t *)1;
    treadle_lookup_host_poll(&t->lk, cx, &more, t->again);
    if (more != NULL)
      *t->again = 1; /* must have been cleared */
  }
  return TREADLE_READY;
}

static void lookup_drop(void *st) {
  treadle_lookup_host_drop(&((lookup_task_t *)st)->lk);
}

static const treadle_task_vtable_t lookup_vt = {.poll = lookup_poll,
                                                .drop = lookup_drop};

static treadle_err_t lookup(treadle_runtime_t *rt, const char *host, int port,
                            treadle_addrs_t **out, int *polls) {
  treadle_err_t err = 1;
  int n = 0;
  lookup_task_t t = {
      .host = host, .port = port, .err = &err, .out = out, .polls_out = &n};
  assert_int_equal(RUN(rt, &lookup_vt, t), 0);
  if (polls != NULL)
    *polls = n;
  return err;
}

static bool has_addr(const treadle_addrs_t *a, const char *want, int port) {
  for (size_t i = 0; i < treadle_addrs_count(a); i++) {
    char host[TREADLE_HOST_LEN];
    if (treadle_sockaddr_host(treadle_addrs_get(a, i), host) == port &&
        strcmp(host, want) == 0)
      return true;
  }
  return false;
}

static void names_resolve_on_the_pool(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_addrs_t *a = NULL;
  assert_int_equal(lookup(rt, "localhost", 8080, &a, NULL), 0);
  assert_true(treadle_addrs_count(a) >= 1);
  assert_true(has_addr(a, "127.0.0.1", 8080) || has_addr(a, "::1", 8080));
  /* No repeats: getaddrinfo's per-socktype copies are folded. */
  for (size_t i = 0; i < treadle_addrs_count(a); i++)
    for (size_t j = i + 1; j < treadle_addrs_count(a); j++)
      assert_memory_not_equal(treadle_addrs_get(a, i), treadle_addrs_get(a, j),
                              sizeof(struct sockaddr_storage));
  assert_null(treadle_addrs_get(a, treadle_addrs_count(a)));
  treadle_addrs_free(a);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void numeric_addresses_are_ready_at_once(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  const struct {
    const char *host, *want;
  } cases[] = {{"10.0.0.7", "10.0.0.7"},
               {"::1", "::1"},
               {"[fe80::1]", "fe80::1"}};
  for (size_t i = 0; i < TEST_ARRAY_LEN(cases); i++) {
    treadle_addrs_t *a = NULL;
    int polls = 0;
    assert_int_equal(lookup(rt, cases[i].host, 53, &a, &polls), 0);
    assert_int_equal(polls, 1); /* no job to wait for */
    assert_int_equal(treadle_addrs_count(a), 1);
    assert_true(has_addr(a, cases[i].want, 53));
    treadle_addrs_free(a);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void unknown_names_say_enohost(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_addrs_t *a = (treadle_addrs_t *)1;
  /* .invalid never resolves (RFC 6761). */
  assert_int_equal(lookup(rt, "no-such-host.invalid", 80, &a, NULL),
                   TREADLE_ENOHOST);
  assert_null(a);
  assert_string_equal(treadle_err_name(TREADLE_ENOHOST), "ENOHOST");
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void bad_input_is_einval(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  treadle_lookup_t lk;
  assert_int_equal(treadle_lookup_host_init(NULL, h, "localhost", 1),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_lookup_host_init(&lk, NULL, "localhost", 1),
                   TREADLE_EINVAL);
  treadle_lookup_host_drop(&lk); /* zeroed by the failed init: a no-op */
  assert_int_equal(treadle_lookup_host_init(&lk, h, NULL, 1), TREADLE_EINVAL);
  assert_int_equal(treadle_lookup_host_init(&lk, h, "", 1), TREADLE_EINVAL);
  assert_int_equal(treadle_lookup_host_init(&lk, h, "localhost", -1),
                   TREADLE_EINVAL);
  assert_int_equal(treadle_lookup_host_init(&lk, h, "localhost", 65536),
                   TREADLE_EINVAL);
  treadle_lookup_host_drop(NULL);
  assert_int_equal(treadle_addrs_count(NULL), 0);
  assert_null(treadle_addrs_get(NULL, 0));
  treadle_addrs_free(NULL);
  /* A lookup polled again after READY. */
  treadle_err_t err = 1, again = 0;
  treadle_addrs_t *a = NULL;
  lookup_task_t t = {.host = "127.0.0.1", .port = 1, .err = &err, .out = &a,
                     .polls_out = &(int){0}, .again = &again};
  assert_int_equal(RUN(rt, &lookup_vt, t), 0);
  assert_int_equal(err, 0);
  assert_int_equal(again, TREADLE_EINVAL);
  treadle_addrs_free(a);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* Drops: one lookup whose job is still queued (the only blocking thread is
 * busy), one dropped right after its job started. */
typedef struct {
  treadle_lookup_t lk;
  const char *host;
  treadle_err_t *init_err;
  treadle_poll_t *first;
} drop_task_t;

static treadle_poll_t drop_poll(treadle_cx_t *cx, void *st) {
  drop_task_t *t = st;
  *t->init_err = treadle_lookup_host_init(&t->lk, treadle_cx_handle(cx),
                                          t->host, 80);
  treadle_addrs_t *a = NULL;
  treadle_err_t err;
  *t->first = treadle_lookup_host_poll(&t->lk, cx, &a, &err);
  treadle_addrs_free(a);
  treadle_lookup_host_drop(&t->lk); /* cancels, whatever the job's state */
  treadle_lookup_host_drop(&t->lk); /* idempotent */
  return TREADLE_READY;
}

typedef struct {
  _Atomic int *release;
} hold_t;

static treadle_err_t hold_run(void *st, void **value) {
  (void)value;
  hold_t *h = st;
  while (!atomic_load(h->release))
    test_sleep_ms(1);
  return 0;
}

static const treadle_blocking_vtable_t hold_vt = {.run = hold_run};

static void dropped_lookups_leave_nothing(void **state) {
  (void)state;
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_all(b), 0);
  assert_int_equal(treadle_builder_max_blocking_threads(b, 1), 0);
  treadle_runtime_t *rt = NULL;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);
  _Atomic int release = 0;
  hold_t hold = {&release};
  treadle_join_t *held;
  assert_int_equal(treadle_spawn_blocking(treadle_runtime_handle(rt),
                                          &hold_vt, &hold, sizeof hold, &held),
                   0);
  static const treadle_task_vtable_t vt = {.poll = drop_poll};
  treadle_err_t init_err = 1;
  treadle_poll_t first = TREADLE_READY;
  drop_task_t queued = {.host = "localhost", .init_err = &init_err,
                        .first = &first};
  assert_int_equal(RUN(rt, &vt, queued), 0);
  assert_int_equal(init_err, 0);
  assert_int_equal(first, TREADLE_PENDING); /* queued behind `hold` */
  atomic_store(&release, 1);
  assert_int_equal(treadle_join_wait(held, NULL), 0);
  treadle_join_detach(held);
  drop_task_t started = {.host = "localhost", .init_err = &init_err,
                         .first = &first};
  assert_int_equal(RUN(rt, &vt, started), 0);
  assert_int_equal(init_err, 0);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(names_resolve_on_the_pool),
    RT_TEST(numeric_addresses_are_ready_at_once),
    RT_TEST(unknown_names_say_enohost),
    RT_TEST(bad_input_is_einval),
    RT_TEST(dropped_lookups_leave_nothing),
};

TEST_MAIN(tests)
