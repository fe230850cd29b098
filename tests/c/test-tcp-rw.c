/* Reading and writing TCP streams: echo of many sizes over many connections at
 * once (every byte checked, IPv4 and IPv6), writev, half-close, huge and zero
 * lengths, the cooperative budget in a read loop, and partial writes to a slow
 * peer. The harness checks after every case that every fd was closed. No
 * assertion depends on timing. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <linux/sockios.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "net_util.h"

/* ----------------------------------------------------------------- echo */

static void echo_run(const char *host, size_t n, const size_t *sizes,
                     size_t nsizes, bool writev_all) {
  treadle_runtime_t *rt = test_runtime();
  echo_run_on(rt, host, n, sizes, nsizes, writev_all);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static void echo_many_sizes_many_connections(void **state) {
  (void)state;
  size_t big = test_scale(1 << 20);
  const size_t sizes[] = {1, 100, 4096, 65536, big};
  echo_run("127.0.0.1", test_scale(64), sizes, TEST_ARRAY_LEN(sizes), false);
}

static void echo_over_ipv6(void **state) {
  (void)state;
  if (!test_have_ipv6()) {
    fprintf(stderr, "no IPv6 loopback: skipped\n");
    return;
  }
  const size_t sizes[] = {7, 300000};
  echo_run("::1", test_scale(8), sizes, TEST_ARRAY_LEN(sizes), false);
}

/* --------------------------------------------------------------- writev */

/* writev: many small buffers (and empty ones) arrive as one stream, in
 * order; more than IOV_MAX buffers are refused. */
typedef struct {
  treadle_tcp_stream_t *client, *server;
  size_t total, wdone, rdone;
  bool checked_limit;
  uint8_t data[64 * 65 / 2];
  uint8_t rbuf[4096];
} gather_t;

/* Piece k (0..64) has k bytes; the iovecs from wdone on, empty ones
 * included. */
static int gather_iov(gather_t *g, struct iovec *iov) {
  size_t off = 0;
  int n = 0;
  for (size_t k = 0; k <= 64; k++) {
    size_t lo = off, hi = off + k;
    off = hi;
    if (hi < g->wdone || (hi == g->wdone && k != 0))
      continue;
    if (lo < g->wdone)
      lo = g->wdone;
    iov[n].iov_base = g->data + lo;
    iov[n].iov_len = hi - lo;
    n++;
  }
  return n;
}

static treadle_poll_t gather_poll(treadle_cx_t *cx, void *st) {
  gather_t *g = st;
  treadle_err_t err;
  size_t n;
  if (!g->checked_limit) {
    struct iovec *many = calloc(IOV_MAX + 1, sizeof *many);
    for (int i = 0; i <= IOV_MAX; i++) {
      many[i].iov_base = g->data;
      many[i].iov_len = 1;
    }
    assert_int_equal(
        treadle_tcp_writev_poll(g->client, cx, many, IOV_MAX + 1, &n, &err),
        TREADLE_READY);
    assert_int_equal(err, TREADLE_EINVAL);
    free(many);
    g->checked_limit = true;
  }
  while (g->wdone < g->total) {
    struct iovec iov[65];
    int cnt = gather_iov(g, iov);
    assert_true(cnt > 0);
    if (treadle_tcp_writev_poll(g->client, cx, iov, cnt, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_true(n > 0 && n <= g->total - g->wdone);
    g->wdone += n;
  }
  while (g->rdone < g->total) {
    if (treadle_tcp_read_poll(g->server, cx, g->rbuf, sizeof g->rbuf, &n,
                              &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_true(n > 0 && g->rdone + n <= g->total);
    assert_memory_equal(g->rbuf, g->data + g->rdone, n);
    g->rdone += n;
  }
  return TREADLE_READY;
}

static void writev_gathers_buffers(void **state) {
  (void)state;
  /* Echo where every client writes with writev, in uneven pieces. */
  const size_t sizes[] = {3, 1000, 200000};
  echo_run("127.0.0.1", test_scale(6), sizes, TEST_ARRAY_LEN(sizes), true);

  /* 65 pieces of 0..64 bytes, in one go. */
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  pair_out_t p;
  make_pair(rt, l, "127.0.0.1", port, &p);
  gather_t *g = calloc(1, sizeof *g);
  g->client = p.client;
  g->server = p.server;
  size_t off = 0;
  for (int k = 0; k <= 64; k++)
    for (int b = 0; b < k; b++)
      g->data[off++] = (uint8_t)(k * 3 + b);
  g->total = off;
  assert_int_equal(g->total, sizeof g->data);
  static const treadle_task_vtable_t vt = {.poll = gather_poll};
  assert_int_equal(treadle_runtime_block_on(rt, &vt, g, sizeof *g, NULL), 0);
  free(g);
  treadle_tcp_stream_free(p.client);
  treadle_tcp_stream_free(p.server);
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------------ half-close */

typedef struct {
  treadle_tcp_stream_t *client, *server;
  int step;
  size_t done, got;
  char buf[64];
} half_t;

static treadle_poll_t half_poll(treadle_cx_t *cx, void *st) {
  half_t *h = st;
  treadle_err_t err;
  size_t n;
  static const char reply[] = "pong after eof";
  switch (h->step) {
  case 0:
    if (treadle_tcp_write_all_poll(h->client, cx, "ping", 4, &h->done, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(h->done, 4);
    assert_int_equal(treadle_tcp_shutdown(h->client), 0);
    /* Writing after shutdown: EPIPE, and no SIGPIPE. */
    assert_int_equal(treadle_tcp_write_poll(h->client, cx, "x", 1, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, TREADLE_EPIPE);
    h->step = 1;
    /* fall through */
  case 1:
    for (;;) {
      if (treadle_tcp_read_poll(h->server, cx, h->buf + h->got,
                                sizeof h->buf - h->got, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      if (n == 0)
        break;
      h->got += n;
    }
    assert_int_equal(h->got, 4);
    assert_memory_equal(h->buf, "ping", 4);
    /* End of stream stays end of stream. */
    assert_int_equal(
        treadle_tcp_read_poll(h->server, cx, h->buf, sizeof h->buf, &n, &err),
        TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    h->step = 2;
    h->done = 0;
    /* fall through */
  case 2:
    /* The server read end of stream and can still write. */
    if (treadle_tcp_write_all_poll(h->server, cx, reply, sizeof reply - 1,
                                   &h->done, &err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(treadle_tcp_shutdown(h->server), 0);
    h->step = 3;
    h->got = 0;
    /* fall through */
  case 3:
    for (;;) {
      if (treadle_tcp_read_poll(h->client, cx, h->buf + h->got,
                                sizeof h->buf - h->got, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      if (n == 0)
        break;
      h->got += n;
    }
    assert_int_equal(h->got, sizeof reply - 1);
    assert_memory_equal(h->buf, reply, sizeof reply - 1);
    /* A read of 0 bytes is READY with 0 at once. */
    assert_int_equal(treadle_tcp_read_poll(h->client, cx, h->buf, 0, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    return TREADLE_READY;
  }
  return TREADLE_READY;
}

static void half_close(void **state) {
  (void)state;
  signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  for (unsigned rep = 0; rep < 3; rep++) {
    pair_out_t p;
    make_pair(rt, l, "127.0.0.1", port, &p);
    half_t h = {.client = p.client, .server = p.server};
    static const treadle_task_vtable_t vt = {.poll = half_poll};
    assert_int_equal(RUN(rt, &vt, h), 0);
    treadle_tcp_stream_free(p.client);
    treadle_tcp_stream_free(p.server);
  }
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* -------------------------------------------------------------- lengths */

/* Lengths at the edges: SIZE_MAX and SSIZE_MAX are clamped (to what one
 * system call moves), 0 is READY with nothing and is not end of stream,
 * and writev lengths past 2 GiB (or wrapping around) are refused before
 * any system call. */
#define HUGE_REGION ((size_t)1 << 31)

typedef struct {
  treadle_tcp_stream_t *client, *server;
  uint8_t *big; /* HUGE_REGION bytes, reserved but untouched */
  int step;
  size_t done, got;
  uint8_t buf[16];
} huge_t;

static void huge_writev_refused(huge_t *h, treadle_cx_t *cx, size_t len0,
                                size_t len1, int cnt) {
  struct iovec iov[2] = {{h->buf, len0}, {h->buf, len1}};
  size_t n = 99;
  treadle_err_t err = 1;
  assert_int_equal(treadle_tcp_writev_poll(h->client, cx, iov, cnt, &n, &err),
                   TREADLE_READY);
  assert_int_equal(err, TREADLE_EINVAL);
  assert_int_equal(n, 0);
}

static treadle_poll_t huge_poll(treadle_cx_t *cx, void *st) {
  huge_t *h = st;
  treadle_err_t err;
  size_t n;
  switch (h->step) {
  case 0:
    if (treadle_tcp_write_all_poll(h->client, cx, "hello", 5, &h->done, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    h->step = 1;
    h->got = 0;
    /* fall through */
  case 1:
    while (h->got < 5) {
      n = 99;
      err = 1;
      if (treadle_tcp_read_poll(h->server, cx, h->big + h->got, SIZE_MAX, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      assert_true(n > 0 && h->got + n <= 5);
      h->got += n;
    }
    assert_memory_equal(h->big, "hello", 5);
    /* len 0, with nothing to read: READY with 0 at once. */
    n = 99;
    err = 1;
    assert_int_equal(treadle_tcp_read_poll(h->server, cx, h->buf, 0, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    n = 99;
    err = 1;
    assert_int_equal(treadle_tcp_read_poll(h->server, cx, NULL, 0, &n, &err),
                     TREADLE_READY);
    assert_int_equal(err, 0);
    assert_int_equal(n, 0);
    /* writev over 2 GiB from a 16-byte buffer: refused, nothing sent. */
    huge_writev_refused(h, cx, (size_t)1 << 31, 0, 1);
    huge_writev_refused(h, cx, (size_t)1 << 30, (size_t)1 << 30, 2);
    huge_writev_refused(h, cx, SIZE_MAX, 1, 2);
    huge_writev_refused(h, cx, 1, SIZE_MAX, 2);
    huge_writev_refused(h, cx, SIZE_MAX / 2 + 1, SIZE_MAX / 2 + 1, 2);
    h->step = 2;
    h->done = 0;
    /* fall through */
  case 2: {
    /* The stream still works: "wor" + "ld!" in one writev. */
    struct iovec iov[2] = {{(void *)"wor", 3}, {(void *)"ld!", 3}};
    while (h->done < 6) {
      struct iovec rest[2];
      int cnt = 0;
      for (int k = 0; k < 2; k++) {
        size_t lo = (size_t)k * 3;
        if (h->done >= lo + 3)
          continue;
        size_t skip = h->done > lo ? h->done - lo : 0;
        rest[cnt].iov_base = (char *)iov[k].iov_base + skip;
        rest[cnt].iov_len = 3 - skip;
        cnt++;
      }
      if (treadle_tcp_writev_poll(h->client, cx, rest, cnt, &n, &err) ==
          TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      assert_true(n > 0 && h->done + n <= 6);
      h->done += n;
    }
    assert_int_equal(treadle_tcp_shutdown(h->client), 0);
    h->step = 3;
  }
    /* fall through */
  case 3:
    /* len 1: exactly one byte. */
    n = 99;
    if (treadle_tcp_read_poll(h->server, cx, h->buf, 1, &n, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    assert_int_equal(err, 0);
    assert_int_equal(n, 1);
    assert_int_equal(h->buf[0], 'w');
    h->step = 4;
    h->got = 0;
    /* fall through */
  case 4:
    /* SSIZE_MAX: the rest, then end of stream; none of the refused
     * writevs sent a byte. */
    for (;;) {
      if (treadle_tcp_read_poll(h->server, cx, h->big + h->got, SSIZE_MAX, &n,
                                &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      assert_int_equal(err, 0);
      if (n == 0)
        break;
      assert_true(h->got + n <= 5);
      h->got += n;
    }
    assert_int_equal(h->got, 5);
    assert_memory_equal(h->big, "orld!", 5);
    return TREADLE_READY;
  }
  return TREADLE_READY;
}

static void huge_read_len(void **state) {
  (void)state;
  /* A buffer as long as one call may fill (2 GiB), reserved but never
   * touched past the few bytes that arrive, so that no tool sees a read
   * into memory that is not there. */
  uint8_t *big = mmap(NULL, HUGE_REGION, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  assert_true(big != MAP_FAILED);
  treadle_runtime_t *rt = test_runtime();
  int port;
  treadle_tcp_listener_t *l =
      listen_on(treadle_runtime_handle(rt), "127.0.0.1", &port);
  pair_out_t p;
  make_pair(rt, l, "127.0.0.1", port, &p);
  huge_t h = {.client = p.client, .server = p.server, .big = big};
  static const treadle_task_vtable_t vt = {.poll = huge_poll};
  assert_int_equal(RUN(rt, &vt, h), 0);
  treadle_tcp_stream_free(p.client);
  treadle_tcp_stream_free(p.server);
  treadle_tcp_listener_free(l);
  assert_int_equal(treadle_runtime_free(rt), 0);
  munmap(big, HUGE_REGION);
}

/* ---------------------------------------------------------- coop budget */

/* Counts its polls, yielding each time, until *stop is set. */
typedef struct {
  _Atomic unsigned long *count;
  _Atomic int *stop;
} spinner_t;

static treadle_poll_t spinner_poll(treadle_cx_t *cx, void *st) {
  spinner_t *s = st;
  if (atomic_load(s->stop))
    return TREADLE_READY;
  atomic_fetch_add(s->count, 1);
  treadle_cx_yield(cx);
  return TREADLE_PENDING;
}

static const treadle_task_vtable_t spinner_vt = {.poll = spinner_poll};

/* The cooperative budget in I/O: a reader that reads 1 byte at a time
 * from a socket whose data is all there never sees EAGAIN, and its loop
 * never returns PENDING itself; the budget (128 ready leaves per poll)
 * must make it yield, so a spinner spawned before it keeps running. */
typedef struct {
  treadle_tcp_stream_t *s;
  size_t total, queued; /* queued: bytes already in the socket */
  size_t got;
  _Atomic unsigned long *count;
  _Atomic int *stop;
  unsigned long at_first, at_queued, yields;
} gulp_t;

static treadle_poll_t gulp_poll(treadle_cx_t *cx, void *st) {
  gulp_t *g = st;
  for (;;) {
    uint8_t b;
    size_t n;
    treadle_err_t err;
    if (treadle_tcp_read_poll(g->s, cx, &b, 1, &n, &err) == TREADLE_PENDING) {
      if (g->got > 0 && g->got < g->queued)
        g->yields++; /* the data is there: only the budget says PENDING */
      return TREADLE_PENDING;
    }
    assert_int_equal(err, 0);
    if (n == 0)
      break;
    if (b != pattern(7, g->got))
      fail_msg("byte %zu is %u", g->got, b);
    if (g->got == 0)
      g->at_first = atomic_load(g->count);
    g->got++;
    if (g->got == g->queued)
      g->at_queued = atomic_load(g->count);
  }
  assert_int_equal(g->got, g->total);
  atomic_store(g->stop, 1);
  return TREADLE_READY;
}

static void gulp_drop_output(void *v) { free(v); }

static treadle_poll_t gulp_wrap_poll(treadle_cx_t *cx, void *st) {
  if (gulp_poll(cx, st) == TREADLE_PENDING)
    return TREADLE_PENDING;
  gulp_t *copy = malloc(sizeof *copy);
  memcpy(copy, st, sizeof *copy);
  treadle_cx_set_output(cx, 0, copy);
  return TREADLE_READY;
}

static const treadle_task_vtable_t gulp_vt = {.poll = gulp_wrap_poll,
                                              .drop_output = gulp_drop_output};

static void coop_budget_io(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  int fd;
  treadle_tcp_stream_t *s = plain_pair(rt, 0, &fd);
  /* Write up to 1 MiB, 4 KiB at a time, for as long as the kernel hands
   * every byte to the receiver at once (nothing left unsent, SIOCOUTQNSD):
   * on loopback the receive window admits some tens of KiB. */
  size_t target = test_scale(1 << 20), written = 0, unsent = 0;
  assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  uint8_t chunk[4096];
  while (written < target && unsent == 0) {
    size_t k =
        target - written < sizeof chunk ? target - written : sizeof chunk;
    for (size_t i = 0; i < k; i++)
      chunk[i] = pattern(7, written + i);
    ssize_t r = write(fd, chunk, k);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0 && errno == EAGAIN)
      break;
    assert_true(r > 0);
    written += (size_t)r;
    int q = 0;
    for (int i = 0; i < 20; i++) {
      assert_int_equal(ioctl(fd, SIOCOUTQNSD, &q), 0);
      if (q == 0)
        break;
      test_sleep_ms(1);
    }
    unsent = (size_t)q;
  }
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  size_t queued = written - unsent;
  fprintf(stderr, "%zu bytes written, %zu of them in the receiver's queue\n",
          written, queued);
  assert_true(queued >= 4096);

  _Atomic unsigned long count = 0;
  _Atomic int stop = 0;
  spinner_t sp = {.count = &count, .stop = &stop};
  gulp_t g = {.s = s,
              .total = written,
              .queued = queued,
              .count = &count,
              .stop = &stop};
  treadle_join_t *joins[2];
  treadle_err_t status[2];
  void *values[2];
  assert_int_equal(treadle_spawn(h, &spinner_vt, &sp, sizeof sp, &joins[0]), 0);
  assert_int_equal(treadle_spawn(h, &gulp_vt, &g, sizeof g, &joins[1]), 0);
  join_all(rt, joins, status, values, 2);
  assert_int_equal(status[0], 0);
  assert_int_equal(status[1], 0);
  gulp_t *out = values[1];
  fprintf(stderr,
          "reader yielded %lu times over %zu queued bytes; the spinner ran %lu "
          "times meanwhile (%lu in all)\n",
          out->yields, queued, out->at_queued - out->at_first,
          atomic_load(&count));
  /* The budget made the reader yield... */
  assert_true(out->yields >= 2);
  /* ...and, where the two share one worker, let the spinner run. (On mt4
   * the spinner may sit on a worker of its own, running or not.) */
  if (strcmp(test_flavor(), "mt4") != 0)
    assert_true(out->at_queued - out->at_first >= 2);
  free(out);
  close(fd);
  treadle_tcp_stream_free(s);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

/* ------------------------------------------------------- partial writes */

/* write_all of 4 MiB (scaled, but never less than the kernel's largest
 * send buffer plus 1 MiB, so that the socket must fill) to a peer with a
 * 4 KiB SO_RCVBUF. The peer reads nothing until the writer has stalled
 * part-way (or finished), then reads 1 KiB and sleeps 1 ms for its first
 * reads, then reads fast. A spinner runs alongside. Every byte arrives,
 * in order, with the same checksum. */
static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211u;
  return h;
}

#define FNV_INIT 14695981039346656037u

/* The third field of /proc/sys/net/ipv4/tcp_wmem, or 4 MiB. */
static size_t tcp_wmem_max(void) {
  FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
  unsigned long lo, def, hi;
  size_t r = 4u << 20;
  if (f != NULL) {
    if (fscanf(f, "%lu %lu %lu", &lo, &def, &hi) == 3)
      r = hi;
    fclose(f);
  }
  return r;
}

typedef struct {
  int fd;
  unsigned id;
  size_t slow_reads;
  _Atomic int *go; /* set once the writer stalled or finished */
  size_t got, bad_at;
  uint64_t sum;
} slow_reader_t;

static void *slow_reader_thread(void *arg) {
  slow_reader_t *r = arg;
  uint8_t *buf = malloc(65536);
  PLAIN_CHECK(buf != NULL);
  r->sum = FNV_INIT;
  r->bad_at = SIZE_MAX;
  while (!atomic_load(r->go))
    test_sleep_ms(1);
  for (size_t reads = 0;; reads++) {
    bool slow = reads < r->slow_reads;
    ssize_t n = read(r->fd, buf, slow ? 1024 : 65536);
    if (n < 0 && errno == EINTR)
      continue;
    PLAIN_CHECK(n >= 0);
    if (n == 0)
      break;
    for (ssize_t i = 0; i < n && r->bad_at == SIZE_MAX; i++)
      if (buf[i] != pattern(r->id, r->got + (size_t)i))
        r->bad_at = r->got + (size_t)i;
    r->sum = fnv1a(r->sum, buf, (size_t)n);
    r->got += (size_t)n;
    if (slow)
      test_sleep_ms(1);
  }
  free(buf);
  close(r->fd);
  return NULL;
}

typedef struct {
  treadle_tcp_stream_t *s;
  const uint8_t *msg;
  size_t len, done;
  unsigned long stalls; /* PENDING with part of the message out */
  _Atomic int *stop, *go;
} pour_t;

static treadle_poll_t pour_poll(treadle_cx_t *cx, void *st) {
  pour_t *p = st;
  treadle_err_t err;
  if (treadle_tcp_write_all_poll(p->s, cx, p->msg, p->len, &p->done, &err) ==
      TREADLE_PENDING) {
    if (p->done > 0 && p->done < p->len) {
      p->stalls++;
      atomic_store(p->go, 1);
    }
    return TREADLE_PENDING;
  }
  assert_int_equal(err, 0);
  assert_int_equal(p->done, p->len);
  assert_int_equal(treadle_tcp_shutdown(p->s), 0);
  atomic_store(p->go, 1);
  atomic_store(p->stop, 1);
  treadle_cx_set_output(cx, 0, (void *)(uintptr_t)p->stalls);
  return TREADLE_READY;
}

static const treadle_task_vtable_t pour_vt = {.poll = pour_poll};

static void partial_write_small_rcvbuf(void **state) {
  (void)state;
  treadle_runtime_t *rt = test_runtime();
  treadle_handle_t *h = treadle_runtime_handle(rt);
  _Atomic int go = 0, stop = 0;
  slow_reader_t r = {.id = 42, .slow_reads = test_scale(200), .go = &go};
  treadle_tcp_stream_t *s = plain_pair(rt, 4096, &r.fd);
  size_t len = test_scale(4 << 20), floor_len = tcp_wmem_max() + (1 << 20);
  if (len < floor_len)
    len = floor_len;
  uint8_t *msg = malloc(len);
  for (size_t i = 0; i < len; i++)
    msg[i] = pattern(r.id, i);
  uint64_t want = fnv1a(FNV_INIT, msg, len);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, slow_reader_thread, &r), 0);
  _Atomic unsigned long count = 0;
  spinner_t sp = {.count = &count, .stop = &stop};
  pour_t p = {.s = s, .msg = msg, .len = len, .stop = &stop, .go = &go};
  treadle_join_t *joins[2];
  treadle_err_t status[2];
  void *values[2];
  assert_int_equal(treadle_spawn(h, &spinner_vt, &sp, sizeof sp, &joins[0]), 0);
  assert_int_equal(treadle_spawn(h, &pour_vt, &p, sizeof p, &joins[1]), 0);
  join_all(rt, joins, status, values, 2);
  pthread_join(th, NULL);
  unsigned long stalls = (unsigned long)(uintptr_t)values[1];
  fprintf(stderr,
          "%zu bytes: the writer stalled part-way %lu times, the spinner ran "
          "%lu times\n",
          len, stalls, atomic_load(&count));
  assert_int_equal(status[0], 0);
  assert_int_equal(status[1], 0);
  if (r.bad_at != SIZE_MAX)
    fail_msg("byte %zu differs", r.bad_at);
  assert_int_equal(r.got, len);
  assert_true(r.sum == want);
  /* More than the send buffer holds, with nobody reading: the socket
   * filled part-way through, so partial writes were resumed. */
  assert_true(stalls >= 1);
  /* With one worker, the spinner (spawned first) ran again while the
   * writer waited for room. */
  if (strcmp(test_flavor(), "mt4") != 0)
    assert_true(atomic_load(&count) >= 2);
  free(msg);
  treadle_tcp_stream_free(s);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

static const struct CMUnitTest tests[] = {
    RT_TEST(echo_many_sizes_many_connections),
    RT_TEST(echo_over_ipv6),
    RT_TEST(writev_gathers_buffers),
    RT_TEST(half_close),
    RT_TEST(huge_read_len),
    RT_TEST(coop_budget_io),
    RT_TEST(partial_write_small_rcvbuf),
};

TEST_MAIN(tests)
