/* tlsload: a closed-loop TLS echo load generator (OpenSSL, one thread,
 * level-triggered epoll), the TLS counterpart of ../shared/bench's
 * echoload, for bench/tls_compare.py (bench/README.md "TLS echo").
 *
 *     tlsload --port P [--host 127.0.0.1] [--conns 100] [--size 64]
 *             [--duration 5] [--warmup 1] [--requests N] [--name SNI]
 *             [--server-pid PID]
 *
 * It opens --conns TCP connections, runs every TLS handshake (no
 * certificate check: the server is ours, and a handshake's cost is not
 * what is measured), then each connection sends a --size-byte message,
 * waits for its whole echo, compares it byte for byte with what it sent
 * (each message is another window of a random pattern, so that a wrong,
 * repeated or crossed byte is caught) and sends the next: one message in
 * flight per connection. --warmup seconds go unmeasured, then --duration
 * seconds count the round trips that complete inside them; or, with
 * --requests N (for instruction counts), the run ends after N round trips
 * (no warm-up, --duration still bounds it).
 *
 * With --server-pid it reads that process's CPU time (user + system, all
 * threads, /proc/PID/stat) at the start and the end of the window:
 * server_cpu_secs, and server_cpu_pct of one core.
 *
 * Bounds: the host must be in 127.0.0.0/8; --conns <= 2000, --duration
 * <= 30, --warmup <= 10; an alarm kills it 45 s after the window should
 * have ended. It never reconnects. Connections end with RST (SO_LINGER 0),
 * without close_notify, so that no TIME_WAIT piles up.
 *
 * Output: one JSON line on stdout: conns, size, connected, secs,
 * requests, rps, p50_us, p99_us, mean_us, max_us, errors, mismatches,
 * client_cpu_pct, server_cpu_secs, server_cpu_pct, protocol, cipher. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 2000
#define MAX_SIZE 65536
#define PATTERN_LEN (1 << 20)
#define HIST_US 100000 /* 1 µs buckets up to 100 ms, then one more */

enum { HANDSHAKING, RUNNING, DEAD };

typedef struct {
  int fd;
  SSL *ssl;
  int state;
  size_t off;     /* the message's window in the pattern */
  size_t got;     /* echo bytes back so far */
  bool sent;      /* the message went out (SSL_write completed) */
  uint64_t t0_ns; /* when it went out */
  uint8_t *buf;   /* the echo, size bytes */
} conn_t;

static struct {
  const char *host, *name;
  int port, conns, server_pid;
  size_t size;
  double duration, warmup;
  long requests; /* > 0: stop after this many */
} opt = {"127.0.0.1", "localhost", 0, 100, 0, 64, 5, 1, 0};

static uint8_t *pattern;
static uint32_t hist[HIST_US + 1];
static uint64_t counted, hist_max_us;
static double sum_us;
static long errors, mismatches;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_self(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The server's CPU seconds (utime + stime, fields 14 and 15), or -1. */
static double cpu_of(int pid) {
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  char *p = strrchr(text, ')'); /* the name may hold spaces */
  unsigned long ut, st;
  if (p == NULL ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
             &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void die(const char *what) {
  fprintf(stderr, "tlsload: %s\n", what);
  exit(2);
}

static void conn_fail(conn_t *c, int ep, const char *why) {
  if (c->state == DEAD)
    return;
  fprintf(stderr, "tlsload: connection %d: %s\n", c->fd, why);
  ERR_clear_error();
  errors++;
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  c->state = DEAD;
}

/* Sends the next message: a new window of the pattern. */
static void send_next(conn_t *c, int ep) {
  c->off = (c->off + 4099) % (PATTERN_LEN - opt.size);
  c->got = 0;
  c->t0_ns = now_ns();
  size_t n;
  ERR_clear_error();
  /* A small record fits an idle socket's buffer; one that does not is
   * retried by take_echo with the same arguments. */
  int r = SSL_write_ex(c->ssl, pattern + c->off, opt.size, &n);
  c->sent = r == 1;
  if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_WRITE) {
    conn_fail(c, ep, "write failed");
  } else if (r != 1) { /* a full socket: wait until it takes more */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
}

static void record(uint64_t ns, bool in_window) {
  if (!in_window)
    return;
  uint64_t us = ns / 1000;
  hist[us < HIST_US ? us : HIST_US]++;
  if (us > hist_max_us)
    hist_max_us = us;
  sum_us += (double)us;
  counted++;
}

static uint64_t percentile(double q) {
  uint64_t want = (uint64_t)(q * (double)counted), seen = 0;
  for (size_t i = 0; i <= HIST_US; i++)
    if ((seen += hist[i]) > want)
      return i;
  return HIST_US;
}

/* Reads what came for c: the echo, checked. True when one completed. */
static bool take_echo(conn_t *c, int ep) {
  if (!c->sent) { /* a write that wanted to retry */
    size_t n;
    ERR_clear_error();
    int r = SSL_write_ex(c->ssl, pattern + c->off, opt.size, &n);
    if (r != 1) {
      if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_WRITE)
        conn_fail(c, ep, "write failed");
      return false;
    }
    c->sent = true;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
  for (;;) {
    size_t n;
    ERR_clear_error();
    int r = SSL_read_ex(c->ssl, c->buf + c->got, opt.size - c->got, &n);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e != SSL_ERROR_WANT_READ)
        conn_fail(c, ep,
                  e == SSL_ERROR_ZERO_RETURN ? "closed by the server"
                                             : "read failed");
      return false;
    }
    c->got += n;
    if (c->got == opt.size) {
      if (memcmp(c->buf, pattern + c->off, opt.size) != 0) {
        mismatches++;
        conn_fail(c, ep, "echo differs from what was sent");
      }
      return true;
    }
  }
}

/* Advances a handshake; true once done. */
static bool handshake(conn_t *c, int ep) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    c->state = RUNNING;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return true;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    struct epoll_event ev = {
        .events = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return false;
  }
  char why[256];
  snprintf(why, sizeof why, "handshake failed: %s",
           ERR_reason_error_string(ERR_peek_last_error()));
  conn_fail(c, ep, why);
  return false;
}

static void usage(void) {
  fprintf(stderr, "usage: tlsload --port P [--host 127.0.0.1] [--conns 100] "
                  "[--size 64] [--duration 5] [--warmup 1] [--requests N] "
                  "[--name SNI] [--server-pid PID]\n");
  exit(2);
}

static void parse(int argc, char **argv) {
  static const struct option longs[] = {
      {"host", 1, 0, 'h'},       {"port", 1, 0, 'p'},
      {"conns", 1, 0, 'c'},      {"size", 1, 0, 's'},
      {"duration", 1, 0, 'd'},   {"warmup", 1, 0, 'w'},
      {"requests", 1, 0, 'n'},   {"name", 1, 0, 'N'},
      {"server-pid", 1, 0, 'P'}, {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
    switch (ch) {
    case 'h':
      opt.host = optarg;
      break;
    case 'p':
      opt.port = atoi(optarg);
      break;
    case 'c':
      opt.conns = atoi(optarg);
      break;
    case 's':
      opt.size = strtoul(optarg, NULL, 10);
      break;
    case 'd':
      opt.duration = atof(optarg);
      break;
    case 'w':
      opt.warmup = atof(optarg);
      break;
    case 'n':
      opt.requests = atol(optarg);
      break;
    case 'N':
      opt.name = optarg;
      break;
    case 'P':
      opt.server_pid = atoi(optarg);
      break;
    default:
      usage();
    }
  }
  struct in_addr a;
  if (opt.port <= 0 || opt.port > 65535 ||
      inet_pton(AF_INET, opt.host, &a) != 1)
    usage();
  if ((ntohl(a.s_addr) >> 24) != 127)
    die("the host must be in 127.0.0.0/8");
  if (opt.conns < 1 || opt.conns > MAX_CONNS || opt.size < 1 ||
      opt.size > MAX_SIZE || opt.duration <= 0 || opt.duration > 30 ||
      opt.warmup < 0 || opt.warmup > 10 || opt.requests < 0)
    die("out of bounds: --conns 1..2000, --size 1..65536, --duration "
        "(0, 30], --warmup [0, 10]");
  if (opt.requests > 0)
    opt.warmup = 0;
}

int main(int argc, char **argv) {
  parse(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  alarm((unsigned)(20 + opt.warmup + opt.duration + 45));
  pattern = malloc(PATTERN_LEN);
  conn_t *conns = calloc((size_t)opt.conns, sizeof *conns);
  if (pattern == NULL || conns == NULL)
    die("out of memory");
  srand((unsigned)now_ns());
  for (size_t i = 0; i < PATTERN_LEN; i++)
    pattern[i] = (uint8_t)rand();

  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL)
    die("SSL_CTX_new failed");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_read_ahead(ctx, 1); /* one read(2) for a record, or more */
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(opt.port)};
  inet_pton(AF_INET, opt.host, &sa.sin_addr);

  /* Connect (blocking: loopback), then every handshake, before the clock. */
  int connected = 0, pending = 0;
  for (int i = 0; i < opt.conns; i++) {
    conn_t *c = &conns[i];
    c->state = DEAD;
    c->buf = malloc(opt.size);
    c->off = (size_t)rand() % (PATTERN_LEN - opt.size);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->buf == NULL || c->fd < 0 ||
        connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
      fprintf(stderr, "tlsload: connect: %s\n", strerror(errno));
      errors++;
      continue;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct linger lg = {1, 0}; /* RST at close: no TIME_WAIT */
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL)
      die("SSL_new failed");
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, opt.name);
    SSL_set_connect_state(c->ssl);
    c->state = HANDSHAKING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    connected++;
    pending++;
  }
  struct epoll_event evs[256];
  uint64_t hs_deadline = now_ns() + 20000000000ull;
  while (pending > 0 && now_ns() < hs_deadline) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c->state == HANDSHAKING && (handshake(c, ep) || c->state == DEAD))
        pending--;
    }
  }
  const char *protocol = "", *cipher = "";
  int running = 0;
  for (int i = 0; i < opt.conns; i++) {
    conn_t *c = &conns[i];
    if (c->state == HANDSHAKING)
      conn_fail(c, ep, "handshake timed out");
    if (c->state != RUNNING)
      continue;
    protocol = SSL_get_version(c->ssl);
    cipher = SSL_get_cipher_name(c->ssl);
    running++;
  }
  if (running == 0)
    die("no connection finished its handshake");

  /* The closed loop. */
  uint64_t start = now_ns();
  uint64_t win_start = start + (uint64_t)(opt.warmup * 1e9);
  uint64_t win_end = win_start + (uint64_t)(opt.duration * 1e9);
  bool in_window = opt.warmup == 0;
  double srv0 = 0, cli0 = 0;
  if (in_window) {
    srv0 = opt.server_pid > 0 ? cpu_of(opt.server_pid) : -1;
    cli0 = cpu_self();
  }
  for (int i = 0; i < opt.conns; i++)
    if (conns[i].state == RUNNING)
      send_next(&conns[i], ep);
  uint64_t t = start;
  for (;;) {
    t = now_ns();
    if (!in_window && t >= win_start) {
      in_window = true;
      win_start = t;
      win_end = t + (uint64_t)(opt.duration * 1e9);
      srv0 = opt.server_pid > 0 ? cpu_of(opt.server_pid) : -1;
      cli0 = cpu_self();
    }
    if (t >= win_end || (opt.requests > 0 && (long)counted >= opt.requests))
      break;
    int n = epoll_wait(ep, evs, 256, 10);
    if (n < 0 && errno != EINTR)
      die("epoll_wait");
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c->state != RUNNING)
        continue;
      if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) {
        conn_fail(c, ep, "reset");
        continue;
      }
      if (take_echo(c, ep)) {
        uint64_t done = now_ns();
        record(done - c->t0_ns, in_window && done < win_end);
        if (c->state == RUNNING)
          send_next(c, ep);
      }
    }
  }
  double secs = (double)(t - win_start) / 1e9;
  double srv1 = opt.server_pid > 0 ? cpu_of(opt.server_pid) : -1;
  double cli = cpu_self() - cli0;
  for (int i = 0; i < opt.conns; i++) {
    if (conns[i].ssl != NULL)
      SSL_free(conns[i].ssl);
    if (conns[i].fd >= 0)
      close(conns[i].fd);
    free(conns[i].buf);
  }
  char server[96] = "null";
  char server_pct[32] = "null";
  if (srv0 >= 0 && srv1 >= 0) {
    snprintf(server, sizeof server, "%.3f", srv1 - srv0);
    snprintf(server_pct, sizeof server_pct, "%.1f", 100 * (srv1 - srv0) / secs);
  }
  printf("{\"conns\":%d,\"size\":%zu,\"connected\":%d,\"secs\":%.3f,"
         "\"requests\":%llu,\"rps\":%.1f,\"p50_us\":%llu,\"p99_us\":%llu,"
         "\"mean_us\":%.1f,\"max_us\":%llu,\"errors\":%ld,"
         "\"mismatches\":%ld,\"client_cpu_pct\":%.1f,"
         "\"server_cpu_secs\":%s,\"server_cpu_pct\":%s,"
         "\"protocol\":\"%s\",\"cipher\":\"%s\"}\n",
         opt.conns, opt.size, connected, secs, (unsigned long long)counted,
         (double)counted / secs, (unsigned long long)percentile(0.5),
         (unsigned long long)percentile(0.99),
         counted ? sum_us / (double)counted : 0.0,
         (unsigned long long)hist_max_us, errors, mismatches, 100 * cli / secs,
         server, server_pct, protocol, cipher);
  SSL_CTX_free(ctx);
  close(ep);
  free(conns);
  free(pattern);
  return 0;
}
