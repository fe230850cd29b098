/* A UDP echo server, and its client.
 *
 *     udp_echo PORT                   serve on 127.0.0.1:PORT (0 picks one)
 *     udp_echo --client PORT [COUNT]  send COUNT datagrams (default 100)
 *
 * The server receives up to 32 datagrams at once (recvmmsg, through
 * treadle_dgram_recv_many_poll) and sends each back to its sender in one
 * batch (sendmmsg). A datagram longer than its 2 KiB buffer is reported
 * and echoed cut short. SIGINT or SIGTERM stops it: it says how many
 * datagrams it echoed, and "bye".
 *
 * The client connects its socket to the server (so an ICMP "port
 * unreachable" comes back as ECONNREFUSED), sends COUNT numbered datagrams
 * one at a time and checks each echo, retrying a lost one after 200 ms, and
 * says "COUNT/COUNT echoed". It exits 1 if any did not come back. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <treadle.h>

#define BATCH 32
#define ROOM 2048

/* ---------------------------------------------------------------- server */

typedef struct {
  treadle_dgram_t *sock;
  treadle_signal_t sigint, sigterm;
  treadle_dgram_msg_t msgs[BATCH];
  char bufs[BATCH][ROOM];
  size_t have, sent; /* datagrams received in this batch, and sent back */
  bool started;      /* msgs point into this copy of the state */
  unsigned long echoed;
} server_t;

static treadle_poll_t server_poll(treadle_cx_t *cx, void *state) {
  server_t *s = state;
  treadle_err_t err;
  if (treadle_signal_poll(&s->sigint, cx, &err) == TREADLE_READY ||
      treadle_signal_poll(&s->sigterm, cx, &err) == TREADLE_READY) {
    treadle_cx_set_output(cx, 0, (void *)(uintptr_t)s->echoed);
    return TREADLE_READY;
  }
  for (;;) {
    while (s->sent < s->have) { /* echo what came, to whoever sent it */
      size_t k;
      if (treadle_dgram_send_many_poll(s->sock, cx, s->msgs + s->sent,
                                       s->have - s->sent, &k,
                                       &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0) { /* that datagram is lost; go on with the rest */
        fprintf(stderr, "send: %s\n", treadle_strerror(err));
        k = 1;
      } else {
        s->echoed += k;
      }
      s->sent += k;
    }
    /* Give the buffers their room back: all at the first poll (the task
     * has its own copy of the state, so the pointers are set here), then
     * those the last batch used. */
    for (size_t i = 0; i < (s->started ? s->have : BATCH); i++) {
      s->msgs[i].buf = s->bufs[i];
      s->msgs[i].len = ROOM;
    }
    s->started = true;
    s->have = s->sent = 0;
    size_t k;
    if (treadle_dgram_recv_many_poll(s->sock, cx, s->msgs, BATCH, &k, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    if (err == TREADLE_ECLOSED || err == TREADLE_ESHUTDOWN) {
      treadle_cx_set_output(cx, err, (void *)(uintptr_t)s->echoed);
      return TREADLE_READY;
    }
    if (err != 0) {
      fprintf(stderr, "recv: %s\n", treadle_strerror(err));
      continue;
    }
    for (size_t i = 0; i < k; i++) {
      if (s->msgs[i].truncated)
        fprintf(stderr, "a datagram of %zu bytes was cut to %d\n",
                s->msgs[i].n, ROOM);
      /* Send back what was kept, to the sender (msgs[i].addr). */
      s->msgs[i].len = s->msgs[i].truncated ? ROOM : s->msgs[i].n;
    }
    s->have = k;
    s->sent = 0;
  }
}

static void server_drop(void *state) {
  server_t *s = state;
  treadle_signal_drop(&s->sigint);
  treadle_signal_drop(&s->sigterm);
}

static const treadle_task_vtable_t server_vt = {.poll = server_poll,
                                                .drop = server_drop};

/* ---------------------------------------------------------------- client */

typedef struct {
  treadle_dgram_t *sock;
  unsigned count, next, ok, tries;
  char out[64], in[64];
  size_t out_len;
  bool sent;
  treadle_sleep_t wait;
} client_t;

/* Receives into c->in: the poll function treadle_timeout_poll wraps. */
static treadle_poll_t recv_echo(treadle_cx_t *cx, void *state) {
  client_t *c = state;
  size_t n;
  treadle_err_t err;
  if (treadle_dgram_recv_poll(c->sock, cx, c->in, sizeof c->in, &n, &err) ==
      TREADLE_PENDING)
    return TREADLE_PENDING;
  if (err == 0 && n == c->out_len && memcmp(c->in, c->out, n) == 0)
    c->ok++;
  else if (err != 0)
    fprintf(stderr, "recv: %s\n", treadle_strerror(err));
  return TREADLE_READY;
}

static treadle_poll_t client_poll(treadle_cx_t *cx, void *state) {
  client_t *c = state;
  treadle_err_t err;
  while (c->next < c->count) {
    if (!c->sent) {
      c->out_len = (size_t)snprintf(c->out, sizeof c->out, "datagram %u",
                                    c->next);
      size_t n;
      if (treadle_dgram_send_poll(c->sock, cx, c->out, c->out_len, &n,
                                  &err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (err != 0) {
        fprintf(stderr, "send: %s\n", treadle_strerror(err));
        break; /* ECONNREFUSED: nobody serves that port */
      }
      c->sent = true;
      treadle_sleep_drop(&c->wait);
      treadle_sleep_init(&c->wait, 200 * TREADLE_NSEC_PER_MSEC);
    }
    unsigned before = c->ok;
    if (treadle_timeout_poll(&c->wait, cx, recv_echo, c, &err) ==
        TREADLE_PENDING)
      return TREADLE_PENDING;
    c->sent = false;
    if (c->ok > before || ++c->tries == 3) { /* echoed, or given up on */
      c->tries = 0;
      c->next++;
    }
  }
  treadle_cx_set_output(cx, 0, (void *)(uintptr_t)c->ok);
  return TREADLE_READY;
}

static void client_drop(void *state) {
  treadle_sleep_drop(&((client_t *)state)->wait);
}

static const treadle_task_vtable_t client_vt = {.poll = client_poll,
                                                .drop = client_drop};

/* ------------------------------------------------------------------ main */

static int fail(const char *what, treadle_err_t err) {
  fprintf(stderr, "udp_echo: %s: %s\n", what, treadle_strerror(err));
  return 1;
}

static int serve(treadle_runtime_t *rt, int port) {
  treadle_handle_t *h = treadle_runtime_handle(rt);
  server_t *s = calloc(1, sizeof *s); /* the task copies it: 64 KiB */
  treadle_err_t err = treadle_udp_bind(h, "127.0.0.1", port, NULL, &s->sock);
  if (err != 0)
    return free(s), fail("bind", err);
  if ((err = treadle_signal_init(&s->sigint, h, SIGINT)) != 0 ||
      (err = treadle_signal_init(&s->sigterm, h, SIGTERM)) != 0) {
    treadle_dgram_free(s->sock);
    free(s);
    return fail("signal", err);
  }
  struct sockaddr_storage addr;
  char text[64];
  treadle_dgram_local_addr(s->sock, &addr);
  treadle_sockaddr_format(&addr, text, sizeof text);
  printf("listening on %s (udp)\n", text);
  fflush(stdout);
  treadle_dgram_t *sock = s->sock;
  void *echoed = NULL;
  err = treadle_runtime_block_on(rt, &server_vt, s, sizeof *s, &echoed);
  free(s); /* the task had its own copy */
  treadle_dgram_free(sock);
  printf("echoed %lu datagrams\n", (unsigned long)(uintptr_t)echoed);
  printf("bye\n");
  return err != 0;
}

int main(int argc, char **argv) {
  bool client = argc > 1 && strcmp(argv[1], "--client") == 0;
  if (argc < 2 + client) {
    fprintf(stderr,
            "usage: %s PORT\n       %s --client PORT [COUNT]\n", argv[0],
            argv[0]);
    return 2;
  }
  int port = atoi(argv[1 + client]);
  treadle_runtime_t *rt;
  treadle_err_t err = treadle_runtime_new_current_thread(&rt);
  if (err != 0)
    return fail("runtime", err);
  int status;
  if (!client) {
    status = serve(rt, port);
  } else {
    client_t c = {.count = argc > 3 ? (unsigned)atoi(argv[3]) : 100};
    err = treadle_udp_bind(treadle_runtime_handle(rt), "127.0.0.1", 0, NULL,
                           &c.sock);
    if (err == 0)
      err = treadle_udp_connect(c.sock, "127.0.0.1", port);
    if (err != 0) {
      treadle_dgram_free(c.sock);
      treadle_runtime_free(rt);
      return fail("connect", err);
    }
    treadle_dgram_t *sock = c.sock;
    void *ok = NULL;
    err = treadle_runtime_block_on(rt, &client_vt, &c, sizeof c, &ok);
    treadle_dgram_free(sock);
    printf("%u/%u echoed\n", (unsigned)(uintptr_t)ok, c.count);
    err = err != 0 ? err : (uintptr_t)ok == c.count ? 0 : TREADLE_EIO;
    status = err != 0;
  }
  return treadle_runtime_free(rt) != 0 || status;
}
