/* The I/O driver's edge-triggered readiness: reads of one byte that go back to
 * the scheduler with readiness left set, readiness raced by slow writers, and
 * a storm of signals without SA_RESTART during an echo. The harness checks
 * after every case that every fd was closed. No assertion depends on timing. */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/prctl.h>
#include <time.h>

#include "net_util.h"

/* -------------------------------------------------------- partial reads */

/* A peer thread writes `len` pattern bytes (at once or in small random
 * pieces) and keeps the connection open until the reader has them all: an
 * end of stream would be a fresh edge that hides a lost one. */
typedef struct {
  int fd;
  unsigned id;
  size_t len;
  bool chunked;
  _Atomic int done;
} trickle_t;

static void *trickle_thread(void *arg) {
  trickle_t *t = arg;
  uint8_t *msg = malloc(t->len);
  PLAIN_CHECK(msg != NULL);
  for (size_t i = 0; i < t->len; i++)
    msg[i] = pattern(t->id, i);
  unsigned seed = t->id + 1;
  for (size_t off = 0; off < t->len;) {
    size_t k = t->chunked ? 1 + (size_t)rand_r(&seed) % 100 : t->len - off;
    if (k > t->len - off)
      k = t->len - off;
    write_full(t->fd, msg + off, k);
    off += k;
  }
  free(msg);
  while (!atomic_load(&t->done))
    test_sleep_ms(1);
  close(t->fd);
  return NULL;
}

/* Reads one byte per read_poll and goes back to the scheduler (yield,
 * PENDING) every 5 bytes, with readiness left set in between. */
typedef struct {
  treadle_tcp_stream_t *s;
  trickle_t *t;
  size_t got;
  unsigned long yields;
} sip_t;

static treadle_poll_t sip_poll(treadle_cx_t *cx, void *st) {
  sip_t *r = st;
  treadle_err_t err;
  size_t n;
  uint8_t b;
  while (r->got < r->t->len) {
    if (treadle_tcp_read_poll(r->s, cx, &b, 1, &n, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(n, 1);
    if (b != pattern(r->t->id, r->got))
      fail_msg("byte %zu is %u, not %u", r->got, b, pattern(r->t->id, r->got));
    r->got++;
    if (r->got % 5 == 0 && r->got < r->t->len) {
      r->yields++;
      treadle_cx_yield(cx);
      return TREADLE_PENDING;
    }
  }
  atomic_store(&r->t->done, 1);
  /* Then end of stream, and not one byte more. */
  if (treadle_tcp_read_poll(r->s, cx, &b, 1, &n, &err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  assert_int_equal(err, 0);
  assert_int_equal(n, 0);
  treadle_cx_set_output(cx, 0, (void *)(uintptr_t)r->yields);
  return TREADLE_READY;
}

static const treadle_task_vtable_t sip_vt = {.poll = sip_poll};

static void et_partial_read(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  for (unsigned rep = 0; rep < 2; rep++) {
    trickle_t t = {.id = rep, .len = 64 * 1024, .chunked = rep == 1};
    treadle_tcp_stream_t *s = plain_pair(rt, 0, &t.fd);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, trickle_thread, &t), 0);
    sip_t r = {.s = s, .t = &t};
    void *yields = NULL;
    assert_int_equal(
        treadle_runtime_block_on(rt, &sip_vt, &r, sizeof r, &yields), 0);
    pthread_join(th, NULL);
    assert_int_equal((uintptr_t)yields, (t.len - 1) / 5);
    treadle_tcp_stream_free(s);
  }
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------ readiness races */

/* Two plain threads write one byte at a time, 0-200 us apart, each into
 * its own connection; one task reads both, each until PENDING, in turn.
 * The writers hold their connection open until every byte arrived, so a
 * readiness bit cleared by a stale event would hang (ctest's timeout). */
typedef struct {
  int fd;
  unsigned id;
  size_t count;
  _Atomic int *done;
} dripper_t;

static void *dripper_thread(void *arg) {
  dripper_t *d = arg;
  unsigned seed = d->id * 7919u + 1;
  prctl(PR_SET_TIMERSLACK, 1000UL); /* sleeps of 1 us grain, not 50 */
  for (size_t i = 0; i < d->count; i++) {
    uint8_t b = pattern(d->id, i);
    write_full(d->fd, &b, 1);
    long us = rand_r(&seed) % 201;
    if (us > 0) {
      struct timespec ts = {0, us * 1000L};
      nanosleep(&ts, NULL);
    }
  }
  while (!atomic_load(d->done))
    test_sleep_ms(1);
  close(d->fd);
  return NULL;
}

typedef struct {
  treadle_tcp_stream_t *s[2];
  unsigned id[2];
  size_t want[2], got[2];
  _Atomic int *done;
  unsigned long pendings;
} alternate_t;

static treadle_poll_t alternate_poll(treadle_cx_t *cx, void *st) {
  alternate_t *a = st;
  for (;;) {
    bool progress = false;
    for (int k = 0; k < 2; k++) {
      while (a->got[k] < a->want[k]) {
        uint8_t buf[64];
        size_t n;
        treadle_err_t err;
        if (treadle_tcp_read_poll(a->s[k], cx, buf, sizeof buf, &n, &err) ==
            TREADLE_PENDING)
          break;
        assert_int_equal(err, 0);
        assert_true(n > 0 && a->got[k] + n <= a->want[k]);
        for (size_t i = 0; i < n; i++)
          if (buf[i] != pattern(a->id[k], a->got[k] + i))
            fail_msg("stream %d byte %zu is %u", k, a->got[k] + i, buf[i]);
        a->got[k] += n;
        progress = true;
      }
    }
    if (a->got[0] == a->want[0] && a->got[1] == a->want[1]) {
      atomic_store(a->done, 1);
      treadle_cx_set_output(cx, 0, (void *)(uintptr_t)a->pendings);
      return TREADLE_READY;
    }
    if (!progress) {
      a->pendings++;
      return TREADLE_PENDING;
    }
  }
}

static const treadle_task_vtable_t alternate_vt = {.poll = alternate_poll};

static void readiness_clear_race(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  size_t total = test_scale(20000);
  _Atomic int done = 0;
  dripper_t d[2];
  alternate_t a = {.done = &done};
  pthread_t th[2];
  for (int k = 0; k < 2; k++) {
    d[k] = (dripper_t){.id = 10u + (unsigned)k,
                       .count = k == 0 ? total / 2 : total - total / 2,
                       .done = &done};
    if (d[k].count == 0)
      d[k].count = 1;
    a.s[k] = plain_pair(rt, 0, &d[k].fd);
    a.id[k] = d[k].id;
    a.want[k] = d[k].count;
  }
  for (int k = 0; k < 2; k++)
    assert_int_equal(pthread_create(&th[k], NULL, dripper_thread, &d[k]), 0);
  void *pendings = NULL;
  assert_int_equal(
      treadle_runtime_block_on(rt, &alternate_vt, &a, sizeof a, &pendings), 0);
  for (int k = 0; k < 2; k++)
    pthread_join(th[k], NULL);
  fprintf(stderr, "%zu bytes, reader went back to wait %lu times\n",
          d[0].count + d[1].count, (unsigned long)(uintptr_t)pendings);
  /* The reader did wait for readiness (it is not a spin that got lucky). */
  assert_true((uintptr_t)pendings > 0);
  treadle_tcp_stream_free(a.s[0]);
  treadle_tcp_stream_free(a.s[1]);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ---------------------------------------------------------------- EINTR */

/* SIGUSR1 with a handler and no SA_RESTART, sent to every runtime thread
 * (and the block_on thread) every 50-100 us during an echo over 8
 * connections (connect and accept included): byte-exact, and no EINTR
 * reaches the API (echo_run_on asserts every status is 0). */
static _Atomic unsigned long usr1_seen;

static void usr1_handler(int sig) {
  (void)sig;
  atomic_fetch_add_explicit(&usr1_seen, 1, memory_order_relaxed);
}

typedef struct {
  pthread_mutex_t mu;
  pthread_t ids[64];
  int n, started;
} rt_threads_t;

static void storm_thread_start(void *ud) {
  rt_threads_t *t = ud;
  pthread_mutex_lock(&t->mu);
  if (t->n < (int)TEST_ARRAY_LEN(t->ids))
    t->ids[t->n++] = pthread_self();
  t->started++;
  pthread_mutex_unlock(&t->mu);
}

static void storm_thread_stop(void *ud) {
  rt_threads_t *t = ud;
  pthread_mutex_lock(&t->mu);
  for (int i = 0; i < t->n; i++)
    if (pthread_equal(t->ids[i], pthread_self())) {
      t->ids[i] = t->ids[--t->n];
      break;
    }
  pthread_mutex_unlock(&t->mu);
}

typedef struct {
  rt_threads_t *threads;
  pthread_t main_thread;
  unsigned long max_rounds, rounds, sent;
  _Atomic int stop;
} storm_t;

static void *storm_thread(void *arg) {
  storm_t *s = arg;
  unsigned seed = 12345;
  while (!atomic_load(&s->stop) && s->rounds < s->max_rounds) {
    /* Under the lock, so that no thread leaves meanwhile. */
    pthread_mutex_lock(&s->threads->mu);
    for (int i = 0; i < s->threads->n; i++)
      if (pthread_kill(s->threads->ids[i], SIGUSR1) == 0)
        s->sent++;
    pthread_mutex_unlock(&s->threads->mu);
    if (pthread_kill(s->main_thread, SIGUSR1) == 0)
      s->sent++;
    s->rounds++;
    struct timespec ts = {0, (50 + rand_r(&seed) % 51) * 1000L};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static void eintr_storm(void **state) {
  (void)state;
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = usr1_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: blocking calls fail with EINTR */
  assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
  atomic_store(&usr1_seen, 0);

  rt_threads_t threads;
  memset(&threads, 0, sizeof threads);
  pthread_mutex_init(&threads.mu, NULL);
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_all(b), 0);
  assert_int_equal(
      treadle_builder_on_thread_start(b, storm_thread_start, &threads), 0);
  assert_int_equal(
      treadle_builder_on_thread_stop(b, storm_thread_stop, &threads), 0);
  treadle_runtime_t *rt = NULL;
  assert_int_equal(treadle_builder_build(b, &rt), 0);
  treadle_builder_free(b);

  storm_t s = {.threads = &threads,
               .main_thread = pthread_self(),
               .max_rounds = 1000000};
  pthread_t killer;
  assert_int_equal(pthread_create(&killer, NULL, storm_thread, &s), 0);
  while (atomic_load(&usr1_seen) == 0)
    test_sleep_ms(1);

  const size_t sizes[] = {test_scale(1 << 20)};
  unsigned long before = atomic_load(&usr1_seen);
  unsigned long target = test_scale(500);
  unsigned reps = 0;
  do {
    echo_run_on(rt, "127.0.0.1", 8, sizes, 1, false);
    reps++;
  } while (atomic_load(&usr1_seen) - before < target && reps < 10);
  unsigned long during = atomic_load(&usr1_seen) - before;

  atomic_store(&s.stop, 1);
  pthread_join(killer, NULL);
  assert_int_equal(treadle_runtime_free(rt), 0);
  /* Every runtime thread ran its stop hook (none left to signal). */
  assert_int_equal(threads.n, 0);
  pthread_mutex_destroy(&threads.mu);
  assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
  fprintf(stderr,
          "%u echo rounds; %lu signals sent, %lu handled during the echo "
          "(%d runtime threads)\n",
          reps, s.sent, during, threads.started);
  assert_true(during > 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(et_partial_read),
    RT_TEST(readiness_clear_race),
    RT_TEST(eintr_storm),
};

TEST_MAIN(tests)
