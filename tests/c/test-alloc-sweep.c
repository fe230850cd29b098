/* Every allocation can fail (issue 17, TESTING.md "Allocation sweep").
 *
 * Each scenario builds a runtime, does one kind of work in one task and
 * frees the runtime. The sweep first runs it with alloc.c's counting hook
 * on, which says how many allocations a run makes (its allocation points),
 * then runs it again once for every k, failing the k-th allocation. Each
 * run must end with 0 (the failure was absorbed: a documented retry or
 * degrade) or TREADLE_ENOMEM, free every block it allocated (the
 * allocator's live count is back to zero), and give back every fd; ASan
 * and valgrind check the rest. A SIGALRM watchdog turns a hang into a
 * failure that names the scenario and k. The scenarios are in
 * scenario_util.c. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "scenario_util.h"
#ifdef TREADLE_TEST_TLS
#include <openssl/crypto.h>
#include <openssl/err.h>

#include "tls_certs.h"
#endif

/* ------------------------------------------------------------ the sweep */

typedef treadle_err_t (*scenario_fn)(treadle_runtime_t *rt);

static const char *hung_name = "";
static long hung_k;

static void on_alarm(int sig) {
  (void)sig;
  char msg[160];
  int n = snprintf(msg, sizeof msg, "alloc-sweep: %s hung failing allocation %ld\n",
                   hung_name, hung_k);
  if (write(2, msg, (size_t)n) < 0) {
  }
  _exit(3);
}

/* Builds a runtime of the flavor under test and runs the scenario on it;
 * the build's own failures count too. */
static treadle_err_t run_once(treadle_builder_t *b, scenario_fn f) {
  treadle_runtime_t *rt = NULL;
  treadle_err_t err = treadle_builder_build(b, &rt);
  if (err != 0) {
    assert_null(rt);
    return err;
  }
  err = f(rt);
  assert_int_equal(treadle_runtime_free(rt), 0);
  return err;
}

/* The sweep itself. Returns the allocation points of one clean run. */
static long sweep(const char *name, scenario_fn f) {
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_all(b), 0);
  int fds = test_open_fds();
  signal(SIGALRM, on_alarm);
  hung_name = name;
  hung_k = -1;

  long live = -1;
  alarm(60);
  treadle__alloc_count_start();
  assert_int_equal(run_once(b, f), 0);
  long points = treadle__alloc_count_stop(&live);
  assert_int_equal(live, 0);
  assert_true(points > 0);

  /* Under valgrind and the sanitizers (TREADLE_TEST_SCALE < 1) every
   * stride-th point: 1 / scale. */
  long stride = (long)(test_scale(1000) > 0 ? 1000 / test_scale(1000) : 1);
  long enomem = 0, absorbed = 0, swept = 0;
  for (long k = 0; k < points; k += stride) {
    swept++;
    hung_k = k;
    alarm(60);
    treadle__alloc_count_start();
    treadle__alloc_fail_after(k);
    treadle_err_t err = run_once(b, f);
    bool fired = treadle__alloc_fail_after(-1) < 0;
    /* A child freed while it runs is the process reaper's until it exits
     * (TESTING.md D9): its blocks come back then. */
    for (int i = 0; i < 5000 && treadle__alloc_count_live() != 0; i++)
      test_sleep_ms(1);
    treadle__alloc_count_stop(&live);
    if (err != 0 && err != TREADLE_ENOMEM)
      fprintf(stderr, "alloc-sweep: %s: failing allocation %ld gave %s\n", name,
              k, treadle_err_name(err));
    assert_true(err == 0 || err == TREADLE_ENOMEM);
    if (live != 0)
      fprintf(stderr, "alloc-sweep: %s: failing allocation %ld left %ld blocks\n",
              name, k, live);
    assert_int_equal(live, 0);
    assert_int_equal(test_open_fds(), fds);
    if (err == TREADLE_ENOMEM)
      enomem++;
    else if (fired)
      absorbed++;
  }
  alarm(0);
  treadle_builder_free(b);
  printf("alloc-sweep: %s (%s): %ld allocation points, %ld swept: %ld ENOMEM, "
         "%ld absorbed\n",
         name, test_flavor(), points, swept, enomem, absorbed);
  fflush(stdout);
  return points;
}

/* Every child this process started has been reaped (the reaper may still
 * hold a freed one for a moment). */
static void wait_children_gone(void) {
  for (int i = 0; i < 5000; i++) {
    if (waitpid(-1, NULL, WNOHANG) < 0)
      return;
    test_sleep_ms(1);
  }
  fail_msg("a child was left");
}

/* -------------------------------------------------------------- cases */

static void sweep_spawn_join(void **state) {
  (void)state;
  assert_true(sweep("spawn_join", scenario_spawn_join) > 5);
}

static void sweep_timers(void **state) {
  (void)state;
  assert_true(sweep("timers", scenario_timers) > 3);
}

static void sweep_blocking_pool(void **state) {
  (void)state;
  assert_true(sweep("blocking_pool", scenario_blocking) > 5);
}

static void sweep_tcp_echo(void **state) {
  (void)state;
  assert_true(sweep("tcp_echo", scenario_tcp) > 5);
}

static void sweep_accept_loop(void **state) {
  (void)state;
  assert_true(sweep("accept_loop", scenario_accept_loop) > 5);
}

static void sweep_udp(void **state) {
  (void)state;
  assert_true(sweep("udp", scenario_udp) > 5);
}

static void sweep_process(void **state) {
  (void)state;
  assert_true(sweep("process", scenario_process) > 5);
  wait_children_gone();
}

static void sweep_dns(void **state) {
  (void)state;
  assert_true(sweep("dns", scenario_dns) > 5);
}

#ifdef TREADLE_TEST_TLS
/* OpenSSL's own allocations, which do not go through alloc.c: this
 * process gives OpenSSL allocation functions that count, and fail the
 * k-th on command (as alloc.c's hook does treadle's). They must be set
 * before OpenSSL's first allocation, hence the constructor. */
static _Atomic long ossl_calls;        /* allocations (and reallocs) so far */
static _Atomic long ossl_fail_at = -1; /* the one to fail, -1: none */
static _Atomic long ossl_live;         /* blocks OpenSSL holds */
static bool ossl_hooked;

/* Relaxed (all three): counters read by the main thread after the
 * runtime's threads were joined, which orders them. */
static bool ossl_fails_now(void) {
  long k = atomic_fetch_add_explicit(&ossl_calls, 1, memory_order_relaxed);
  return k == atomic_load_explicit(&ossl_fail_at, memory_order_relaxed);
}

static void *ossl_malloc(size_t n, const char *file, int line) {
  (void)file, (void)line;
  if (ossl_fails_now())
    return NULL;
  void *p = malloc(n);
  if (p != NULL)
    atomic_fetch_add_explicit(&ossl_live, 1, memory_order_relaxed);
  return p;
}

static void ossl_free(void *p, const char *file, int line) {
  (void)file, (void)line;
  if (p != NULL)
    atomic_fetch_sub_explicit(&ossl_live, 1, memory_order_relaxed);
  free(p);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line) {
  if (p == NULL)
    return ossl_malloc(n, file, line);
  if (n == 0) {
    ossl_free(p, file, line);
    return NULL;
  }
  return ossl_fails_now() ? NULL : realloc(p, n);
}

__attribute__((constructor)) static void ossl_hook(void) {
  ossl_hooked = CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) == 1;
}

/* After sweep_openssl, when the process ends: OpenSSL's exit cleanup (an
 * atexit handler) and treadle's (tls.c's destructor, default priority)
 * have run before this last destructor, and every block OpenSSL allocated
 * in the process must be back. */
static bool ossl_check_at_exit;

__attribute__((destructor(101))) static void ossl_check_left(void) {
  long left = atomic_load_explicit(&ossl_live, memory_order_relaxed);
  if (ossl_check_at_exit && left != 0) {
    fprintf(stderr, "alloc-sweep: openssl: %ld OpenSSL blocks never freed\n", left);
    _exit(1);
  }
}

static void use_test_certs(tls_certs_t *certs) {
  tls_certs_make(certs);
  scenario_tls_ca = certs->ca;
  scenario_tls_cert = certs->server;
  scenario_tls_key = certs->server_key;
}
#endif

/* Both ends of a TLS connection (scenario_tls), with the TLS tests'
 * certificates: treadle's allocations fail. */
static void sweep_tls(void **state) {
  (void)state;
#ifdef TREADLE_TEST_TLS
  tls_certs_t certs;
  use_test_certs(&certs);
  assert_true(sweep("tls", scenario_tls) > 5);
  tls_certs_remove(&certs);
#else
  skip(); /* built without TLS */
#endif
}

/* The same scenario, OpenSSL's allocations failing one at a time. A TLS
 * connection here makes some 250,000 of them: the configurations' (the
 * certificate, key and CA files) come first, the handshake's and the
 * records' last, and between them OpenSSL 3's decoders try every format
 * on the files, whose failures it absorbs (the next decoder is tried).
 * So the sweep fails OSSL_SWEEP_RUNS of them (scaled down under valgrind
 * and the sanitizers; TREADLE_SWEEP_RUNS=N asks for N), two thirds
 * evenly spaced over the first and the last OSSL_EDGE, a third over the
 * rest. Each run ends with 0 (absorbed), TREADLE_ENOMEM from the side
 * whose allocation failed, or what its peer then sees of that side's end
 * (the connection closed during the handshake, or the handshake or the
 * record layer failing). A failure in the client's chain building can
 * also be ETLSVERIFY: OpenSSL reports it as "unable to get local issuer
 * certificate", with nothing on its error queue (tls.c maps the
 * X509_V_ERR_OUT_OF_MEM it does report to ENOMEM). Nothing hangs, and
 * treadle's blocks and the fds come back. OpenSSL fills some caches
 * lazily (a run may leave a block it keeps), so its own blocks are
 * counted once, when the process ends (ossl_check_left). */
#define OSSL_SWEEP_RUNS 300
#define OSSL_EDGE 8192

static void sweep_openssl(void **state) {
  (void)state;
#ifdef TREADLE_TEST_TLS
  assert_true(ossl_hooked); /* the constructor came before OpenSSL's first allocation */
  tls_certs_t certs;
  use_test_certs(&certs);
  treadle_builder_t *b = test_builder();
  assert_int_equal(treadle_builder_enable_all(b), 0);
  signal(SIGALRM, on_alarm);
  hung_name = "openssl";
  hung_k = -1;
  alarm(60);
  /* A first run initializes OpenSSL's tables; the second counts. */
  assert_int_equal(run_once(b, scenario_tls), 0);
  int fds = test_open_fds();
  long calls0 = atomic_load_explicit(&ossl_calls, memory_order_relaxed);
  assert_int_equal(run_once(b, scenario_tls), 0);
  long points = atomic_load_explicit(&ossl_calls, memory_order_relaxed) - calls0;
  assert_true(points > 100);

  const char *asked = getenv("TREADLE_SWEEP_RUNS");
  long runs = asked != NULL ? atol(asked) : (long)test_scale(OSSL_SWEEP_RUNS);
  if (runs < 3)
    runs = 3;
  long edge_from = points - OSSL_EDGE, middle = edge_from - OSSL_EDGE;
  assert_true(middle > 0);
  long edge_stride = 2 * OSSL_EDGE / (2 * runs / 3) + 1;
  long middle_stride = middle / (runs / 3) + 1;
  static const treadle_err_t outcomes[] = {0, TREADLE_ENOMEM, TREADLE_ECONNRESET,
                                           TREADLE_ETLSHANDSHAKE, TREADLE_ETLS,
                                           TREADLE_ETLSVERIFY};
  long outcome[6] = {0};
  long swept = 0;
  for (long k = 0; k < points;
       k += k < OSSL_EDGE || k >= edge_from ? edge_stride : middle_stride) {
    swept++;
    hung_k = k;
    alarm(60);
    long start = atomic_load_explicit(&ossl_calls, memory_order_relaxed);
    atomic_store_explicit(&ossl_fail_at, start + k, memory_order_relaxed);
    treadle__alloc_count_start();
    treadle_err_t err = run_once(b, scenario_tls);
    atomic_store_explicit(&ossl_fail_at, -1, memory_order_relaxed);
    long live = -1;
    treadle__alloc_count_stop(&live);
    int i = 5;
    while (i >= 0 && outcomes[i] != err)
      i--;
    if (i < 0 || live != 0)
      fprintf(stderr, "alloc-sweep: openssl: failing allocation %ld gave %s, "
              "left %ld blocks\n", k, treadle_err_name(err), live);
    assert_true(i >= 0);
    assert_int_equal(live, 0);
    assert_int_equal(test_open_fds(), fds);
    outcome[i]++;
  }
  alarm(0);
  treadle_builder_free(b);
  tls_certs_remove(&certs);
  printf("alloc-sweep: openssl (%s): %ld OpenSSL allocation points, %ld swept: "
         "%ld absorbed, %ld ENOMEM, %ld ECONNRESET, %ld ETLSHANDSHAKE, %ld ETLS, "
         "%ld ETLSVERIFY\n",
         test_flavor(), points, swept, outcome[0], outcome[1], outcome[2],
         outcome[3], outcome[4], outcome[5]);
  fflush(stdout);
  assert_true(outcome[0] < swept); /* the first allocation's failure, at least, is not absorbed */
  ossl_check_at_exit = true;
#else
  skip(); /* built without TLS */
#endif
}

static const struct CMUnitTest tests[] = {
    RT_TEST(sweep_spawn_join),
    RT_TEST(sweep_timers),
    RT_TEST(sweep_blocking_pool),
    RT_TEST(sweep_tcp_echo),
    RT_TEST(sweep_accept_loop),
    RT_TEST(sweep_udp),
    RT_TEST(sweep_process),
    RT_TEST(sweep_dns),
    RT_TEST(sweep_tls),
    RT_TEST(sweep_openssl),
};

TEST_MAIN(tests)
