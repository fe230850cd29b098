/* udpload: a closed-loop UDP echo load generator (epoll, level-triggered),
 * the datagram counterpart of ../shared/bench's echoload.
 *
 *   udpload --port P [--host 127.0.0.1] [--conns N] [--size BYTES]
 *           [--duration S] [--warmup S] [--timeout-ms MS] [--threads 1|2]
 *           [--server-pid PID]
 *
 * --conns client sockets (default 64), each bound to its own port and
 * connected to the server, keep one --size-byte datagram (default 64) in
 * flight each: send it, wait for its echo, compare it byte for byte with
 * what was sent, record the round trip, send the next. A datagram whose
 * echo has not come back after --timeout-ms (default 200) is counted as
 * lost and sent again, unchanged; its round trip is then counted from the
 * first send, as the user would see it. Every datagram carries its
 * socket's number (with this run's random tag in the upper 16 bits) and
 * sequence number in its first 8 bytes and a window of a random pattern
 * chosen by both after them: an echo of an earlier datagram of the same
 * socket (a late echo of one sent again) is counted as `late` and dropped;
 * an echo of another run's datagram (one still in flight when an earlier
 * udpload closed a socket whose port this run was given again) is counted
 * as `stray` and dropped; any other difference is a mismatch.
 *
 * --warmup seconds (default 1) run unmeasured, then --duration seconds
 * (default 5) are measured: only round trips that end inside the window
 * count. --threads 2 splits the sockets over two epoll threads.
 *
 * Bounded as echoload: the target must be in 127.0.0.0/8, --conns <= 2000,
 * --duration <= 30, --warmup <= 10, and an alarm() ends the process 45 s
 * after the window should have closed.
 *
 * Output, one JSON line in echoload's shape: conns, size, threads, secs,
 * requests, rps (round trips per second, all sockets), p50_us p90_us p99_us
 * p999_us mean_us max_us (log-linear histogram, < 0.8% bucket error),
 * lost (timeouts in the window, each followed by a resend), late (echoes
 * of datagrams sent again, in the window), stray, mismatches, errors
 * (send or receive errors, such as ECONNREFUSED when nobody listens),
 * client_cpu_pct (this process, user + system, % of one core over the
 * window), server_cpu_pct (with --server-pid: that process's CPU over the
 * window, all threads, from /proc/PID/stat; null otherwise),
 * client_syscalls_per_rt (send, recv and epoll_wait calls this program
 * made per round trip in the window). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
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
#define MAX_DURATION 30.0
#define MAX_WARMUP 10.0
#define MAX_SIZE 65507 /* the largest IPv4 UDP payload */
#define MIN_SIZE 8     /* room for the socket and sequence numbers */
#define MAX_THREADS 2
#define PATTERN_SLACK 256

/* ----------------------------------------- latency histogram (µs) */

#define H_LINEAR 1024 /* exact buckets for 0..1023 µs */
#define H_SUB_BITS 7  /* 128 sub-buckets per power of two above */
#define H_SUB (1 << H_SUB_BITS)
#define H_MAX_EXP 36
#define H_BUCKETS (H_LINEAR + (H_MAX_EXP - 10) * H_SUB)

typedef struct {
  uint64_t count[H_BUCKETS];
  uint64_t n;
  double sum_us;
  uint64_t max_us;
} hist_t;

static int h_index(uint64_t us) {
  if (us < H_LINEAR)
    return (int)us;
  int e = 63 - __builtin_clzll(us);
  if (e >= H_MAX_EXP)
    return H_BUCKETS - 1;
  int sub = (int)((us >> (e - H_SUB_BITS)) & (H_SUB - 1));
  return H_LINEAR + (e - 10) * H_SUB + sub;
}

static double h_value(int idx) { /* a bucket's midpoint */
  if (idx < H_LINEAR)
    return (double)idx;
  int e = (idx - H_LINEAR) / H_SUB + 10;
  int sub = (idx - H_LINEAR) % H_SUB;
  double width = (double)(1ULL << (e - H_SUB_BITS));
  return (double)(1ULL << e) + sub * width + width / 2.0;
}

static void h_add(hist_t *h, uint64_t us) {
  h->count[h_index(us)]++;
  h->n++;
  h->sum_us += (double)us;
  if (us > h->max_us)
    h->max_us = us;
}

static double h_pct(const hist_t *h, double p) {
  if (h->n == 0)
    return 0.0;
  uint64_t rank = (uint64_t)(p / 100.0 * (double)h->n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > h->n)
    rank = h->n;
  uint64_t acc = 0;
  for (int i = 0; i < H_BUCKETS; i++) {
    acc += h->count[i];
    if (acc >= rank)
      return h_value(i);
  }
  return (double)h->max_us;
}

/* ------------------------------------------------------- options */

static struct {
  char host[64];
  int port, conns, size, threads, server_pid;
  double duration, warmup, timeout_ms;
} opt = {"127.0.0.1", 0, 64, 64, 1, 0, 5.0, 1.0, 200.0};

/* ------------------------------------------------- sockets, threads */

typedef struct {
  int fd;
  uint32_t id, seq;
  uint64_t t_first; /* ns: when the datagram in flight was first sent */
  uint64_t t_last;  /* ns: when it was last sent (the timeout runs from it) */
} sock_t;

typedef struct {
  int epfd;
  sock_t *socks;
  int n;
  hist_t hist;
  uint64_t requests, lost, late, stray, mismatches, errors;
  uint64_t calls_in_window; /* send + recv + epoll_wait, in the window */
  unsigned char *rbuf, *sbuf;
} worker_t;

static unsigned char *pattern; /* opt.size + PATTERN_SLACK random bytes */
static uint64_t t_start, t_end; /* ns, the measured window */
static uint64_t timeout_ns;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg) {
  fprintf(stderr, "udpload: %s\n", msg);
  exit(2);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char m[] = "udpload: hard time limit hit, exiting\n";
  ssize_t r = write(2, m, sizeof m - 1);
  (void)r;
  _exit(3);
}

/* The datagram socket `id` sends as number `seq`: its numbers, then a
 * window of the pattern that depends on both. */
static void datagram(unsigned char *out, uint32_t id, uint32_t seq) {
  memcpy(out, &id, 4);
  memcpy(out + 4, &seq, 4);
  uint32_t off = (id * 131u + seq * 17u) % PATTERN_SLACK;
  memcpy(out + 8, pattern + off, (size_t)opt.size - 8);
}

static void send_current(worker_t *w, sock_t *s, uint64_t t) {
  datagram(w->sbuf, s->id, s->seq);
  s->t_last = t;
  if (t >= t_start && t < t_end)
    w->calls_in_window++;
  for (;;) {
    ssize_t n = send(s->fd, w->sbuf, (size_t)opt.size, 0);
    if (n == opt.size)
      return;
    if (n < 0 && errno == EINTR)
      continue;
    /* ECONNREFUSED (an ICMP error came back), ENOBUFS, EAGAIN: the
     * datagram is gone; its timeout sends it again. */
    w->errors++;
    return;
  }
}

static void on_readable(worker_t *w, sock_t *s) {
  uint64_t t = now_ns();
  if (t >= t_start && t < t_end)
    w->calls_in_window++;
  ssize_t n = recv(s->fd, w->rbuf, (size_t)opt.size + 1, 0);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR)
      w->errors++; /* ECONNREFUSED: the timeout resends */
    return;
  }
  uint32_t id = UINT32_MAX, seq = 0;
  if (n >= 8) {
    memcpy(&id, w->rbuf, 4);
    memcpy(&seq, w->rbuf + 4, 4);
  }
  if (n >= 8 && (id >> 16) != (s->id >> 16)) {
    w->stray++; /* another run's datagram: not this run's to check */
    return;
  }
  if (n == opt.size && id == s->id && seq != s->seq &&
      (uint32_t)(s->seq - seq) < 0x80000000u) {
    /* An earlier datagram's echo: check it all the same. */
    datagram(w->sbuf, id, seq);
    if (memcmp(w->rbuf, w->sbuf, (size_t)n) != 0)
      w->mismatches++;
    else if (t >= t_start && t < t_end)
      w->late++;
    return;
  }
  datagram(w->sbuf, s->id, s->seq);
  if (n != opt.size || memcmp(w->rbuf, w->sbuf, (size_t)n) != 0) {
    w->mismatches++; /* the datagram in flight stays; its timeout resends */
    return;
  }
  if (t >= t_start && t < t_end) {
    w->requests++;
    h_add(&w->hist, (t - s->t_first) / 1000);
  }
  s->seq++;
  if (t >= t_end)
    return; /* no new work after the window */
  s->t_first = t;
  send_current(w, s, t);
}

/* Resends every datagram whose echo is late by the timeout. */
static void check_timeouts(worker_t *w, uint64_t t) {
  for (int i = 0; i < w->n; i++) {
    sock_t *s = &w->socks[i];
    if (t - s->t_last >= timeout_ns) {
      if (s->t_first >= t_start && s->t_first < t_end)
        w->lost++;
      send_current(w, s, t);
    }
  }
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  struct epoll_event evs[256];
  uint64_t t = now_ns();
  for (int i = 0; i < w->n; i++) {
    w->socks[i].t_first = t;
    send_current(w, &w->socks[i], t);
  }
  /* Timeouts are checked every timeout / 4 (a sweep over this thread's
   * sockets), so a lost datagram is resent within 1.25 timeouts. */
  uint64_t sweep = timeout_ns / 4 > 0 ? timeout_ns / 4 : 1;
  uint64_t next_sweep = t + sweep;
  for (;;) {
    t = now_ns();
    if (t >= t_end)
      break;
    if (t >= next_sweep) {
      check_timeouts(w, t);
      next_sweep = t + sweep;
    }
    uint64_t until = next_sweep < t_end ? next_sweep : t_end;
    int to = (int)((until - t) / 1000000ULL) + 1;
    int n = epoll_wait(w->epfd, evs, 256, to);
    if (t >= t_start && t < t_end)
      w->calls_in_window++;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      perror("epoll_wait");
      break;
    }
    for (int i = 0; i < n; i++)
      on_readable(w, evs[i].data.ptr);
  }
  return NULL;
}

/* utime + stime of a process (all its threads), in clock ticks, or -1. */
static long long proc_cpu_ticks(int pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (p == NULL)
    return -1;
  unsigned long long ut = 0, st = 0;
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &ut, &st) != 2)
    return -1;
  return (long long)(ut + st);
}

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

typedef struct {
  double self0, self1;
  long long srv0, srv1;
} sample_t;

static void sleep_until(uint64_t t_ns) {
  uint64_t t = now_ns();
  if (t >= t_ns)
    return;
  uint64_t d = t_ns - t;
  struct timespec ts = {(time_t)(d / 1000000000ULL),
                        (long)(d % 1000000000ULL)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* A sleeping thread samples the CPU counters at the window's edges. */
static void *sampler_main(void *arg) {
  sample_t *s = arg;
  sleep_until(t_start);
  s->self0 = self_cpu_s();
  if (opt.server_pid > 0)
    s->srv0 = proc_cpu_ticks(opt.server_pid);
  sleep_until(t_end);
  s->self1 = self_cpu_s();
  if (opt.server_pid > 0)
    s->srv1 = proc_cpu_ticks(opt.server_pid);
  return NULL;
}

static void usage(void) {
  fprintf(stderr,
          "usage: udpload --port P [--host 127.0.0.1] [--conns N<=2000]\n"
          "               [--size BYTES] [--duration S<=30] [--warmup S<=10]\n"
          "               [--timeout-ms MS] [--threads 1|2] [--server-pid PID]\n");
  exit(2);
}

int main(int argc, char **argv) {
  static struct option lo[] = {{"host", required_argument, 0, 'h'},
                               {"port", required_argument, 0, 'p'},
                               {"conns", required_argument, 0, 'c'},
                               {"size", required_argument, 0, 's'},
                               {"duration", required_argument, 0, 'd'},
                               {"warmup", required_argument, 0, 'w'},
                               {"timeout-ms", required_argument, 0, 'T'},
                               {"threads", required_argument, 0, 't'},
                               {"server-pid", required_argument, 0, 'P'},
                               {"help", no_argument, 0, '?'},
                               {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (ch) {
    case 'h': snprintf(opt.host, sizeof opt.host, "%s", optarg); break;
    case 'p': opt.port = atoi(optarg); break;
    case 'c': opt.conns = atoi(optarg); break;
    case 's': opt.size = atoi(optarg); break;
    case 'd': opt.duration = atof(optarg); break;
    case 'w': opt.warmup = atof(optarg); break;
    case 'T': opt.timeout_ms = atof(optarg); break;
    case 't': opt.threads = atoi(optarg); break;
    case 'P': opt.server_pid = atoi(optarg); break;
    default: usage();
    }
  }
  if (opt.port <= 0 || opt.port > 65535)
    usage();
  if (opt.conns < 1 || opt.conns > MAX_CONNS)
    die("--conns must be 1..2000");
  if (opt.size < MIN_SIZE || opt.size > MAX_SIZE)
    die("--size must be 8..65507");
  if (!(opt.duration > 0 && opt.duration <= MAX_DURATION))
    die("--duration must be in (0, 30]");
  if (!(opt.warmup >= 0 && opt.warmup <= MAX_WARMUP))
    die("--warmup must be in [0, 10]");
  if (!(opt.timeout_ms >= 1 && opt.timeout_ms <= 10000))
    die("--timeout-ms must be in [1, 10000]");
  if (opt.threads < 1 || opt.threads > MAX_THREADS)
    die("--threads must be 1 or 2");
  if (opt.threads > opt.conns)
    opt.threads = opt.conns;
  timeout_ns = (uint64_t)(opt.timeout_ms * 1e6);

  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)opt.port)};
  if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1)
    die("--host must be a numeric IPv4 address");
  if ((ntohl(sa.sin_addr.s_addr) >> 24) != 127)
    die("refusing a target outside 127.0.0.0/8");

  signal(SIGALRM, on_alarm);
  alarm((unsigned)(opt.warmup + opt.duration + 45.0));

  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t need = (rlim_t)opt.conns + 64;
  if (rl.rlim_cur < need) {
    rl.rlim_cur = need;
    if (rl.rlim_max < need)
      rl.rlim_max = need; /* needs privilege */
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
      die("cannot raise RLIMIT_NOFILE");
  }

  pattern = malloc((size_t)opt.size + PATTERN_SLACK);
  if (pattern == NULL)
    die("out of memory");
  uint64_t x = 0x2545F4914F6CDD1DULL;
  for (int i = 0; i < opt.size + PATTERN_SLACK; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    pattern[i] = (unsigned char)(x >> 24);
  }

  /* This run's tag: never 0, and different from the last run's. */
  uint64_t seed = now_ns() ^ (uint64_t)getpid() * 2654435761u;
  uint32_t run_tag = (uint32_t)(seed >> 8) & 0xffff;
  if (run_tag == 0)
    run_tag = 1;
  worker_t *ws = calloc(MAX_THREADS, sizeof *ws); /* big: the histograms */
  sock_t *all = calloc((size_t)opt.conns, sizeof *all);
  if (ws == NULL || all == NULL)
    die("out of memory");
  int per = opt.conns / opt.threads, extra = opt.conns % opt.threads, base = 0;
  for (int t = 0; t < opt.threads; t++) {
    worker_t *w = &ws[t];
    w->socks = all + base;
    w->n = per + (t < extra ? 1 : 0);
    base += w->n;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->rbuf = malloc((size_t)opt.size + 1);
    w->sbuf = malloc((size_t)opt.size);
    if (w->epfd < 0 || w->rbuf == NULL || w->sbuf == NULL)
      die("epoll_create1 or out of memory");
    for (int i = 0; i < w->n; i++) {
      sock_t *s = &w->socks[i];
      s->id = run_tag << 16 | (uint32_t)(s - all);
      s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (s->fd < 0)
        die("socket");
      /* connect(): the socket receives only from the server, send() needs
       * no address, and an ICMP error comes back as ECONNREFUSED. */
      if (connect(s->fd, (const struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
      struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
      if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0)
        die("epoll_ctl");
    }
  }

  uint64_t t0 = now_ns();
  t_start = t0 + (uint64_t)(opt.warmup * 1e9);
  t_end = t_start + (uint64_t)(opt.duration * 1e9);

  pthread_t th[MAX_THREADS];
  for (int t = 1; t < opt.threads; t++)
    if (pthread_create(&th[t], NULL, worker_main, &ws[t]) != 0)
      die("pthread_create");
  sample_t smp = {0, 0, -1, -1};
  pthread_t sampler;
  if (pthread_create(&sampler, NULL, sampler_main, &smp) != 0)
    die("pthread_create");
  worker_main(&ws[0]);
  for (int t = 1; t < opt.threads; t++)
    pthread_join(th[t], NULL);
  pthread_join(sampler, NULL);

  hist_t *h = calloc(1, sizeof *h);
  if (h == NULL)
    die("out of memory");
  uint64_t requests = 0, lost = 0, late = 0, stray = 0, mismatches = 0,
           errors = 0, calls = 0;
  for (int t = 0; t < opt.threads; t++) {
    worker_t *w = &ws[t];
    for (int i = 0; i < H_BUCKETS; i++)
      h->count[i] += w->hist.count[i];
    h->n += w->hist.n;
    h->sum_us += w->hist.sum_us;
    if (w->hist.max_us > h->max_us)
      h->max_us = w->hist.max_us;
    requests += w->requests;
    lost += w->lost;
    late += w->late;
    stray += w->stray;
    mismatches += w->mismatches;
    errors += w->errors;
    calls += w->calls_in_window;
    for (int i = 0; i < w->n; i++)
      close(w->socks[i].fd);
    close(w->epfd);
  }
  double secs = (double)(t_end - t_start) / 1e9;
  double tick = (double)sysconf(_SC_CLK_TCK);
  double cli_cpu = 100.0 * (smp.self1 - smp.self0) / secs;
  char srv[64] = "null";
  if (smp.srv0 >= 0 && smp.srv1 >= 0)
    snprintf(srv, sizeof srv, "%.1f",
             100.0 * (double)(smp.srv1 - smp.srv0) / tick / secs);
  printf("{\"conns\":%d,\"size\":%d,\"threads\":%d,\"secs\":%.3f,"
         "\"requests\":%llu,\"rps\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
         "\"p99_us\":%.1f,\"p999_us\":%.1f,\"mean_us\":%.1f,\"max_us\":%llu,"
         "\"lost\":%llu,\"late\":%llu,\"stray\":%llu,\"mismatches\":%llu,"
         "\"errors\":%llu,"
         "\"client_cpu_pct\":%.1f,\"server_cpu_pct\":%s,"
         "\"client_syscalls_per_rt\":%.2f}\n",
         opt.conns, opt.size, opt.threads, secs, (unsigned long long)requests,
         (double)requests / secs, h_pct(h, 50), h_pct(h, 90), h_pct(h, 99),
         h_pct(h, 99.9), h->n ? h->sum_us / (double)h->n : 0.0,
         (unsigned long long)h->max_us, (unsigned long long)lost,
         (unsigned long long)late, (unsigned long long)stray,
         (unsigned long long)mismatches,
         (unsigned long long)errors, cli_cpu, srv,
         requests ? (double)calls / (double)requests : 0.0);
  return 0;
}
