/* Quick start: a task that sleeps, spawned and joined for its result, and
 * with --echo PORT a TCP echo server on 127.0.0.1 until Ctrl-C (port 0 picks
 * one). A task is a poll function over its own state: the runtime polls it
 * again whenever what it waits on is ready, until it returns READY. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <treadle.h>

typedef struct { treadle_sleep_t nap; int step; } answer_t;

static treadle_poll_t answer(treadle_cx_t *cx, void *state) { /* 42, 10 ms later */
  answer_t *a = state;
  if (a->step++ == 0) treadle_sleep_init(&a->nap, 10 * TREADLE_NSEC_PER_MSEC);
  if (treadle_sleep_poll(&a->nap, cx, NULL) == TREADLE_PENDING) return TREADLE_PENDING;
  treadle_cx_set_output(cx, 0, (void *)(intptr_t)42);
  return TREADLE_READY;
}

typedef struct { treadle_tcp_stream_t *s; char buf[4096]; size_t n, done; } echo_t;

static treadle_poll_t echo(treadle_cx_t *cx, void *state) { /* one connection */
  echo_t *e = state;
  treadle_err_t err = 0;
  while (err == 0) {
    if (e->done < e->n) { /* write back what came in */
      if (treadle_tcp_write_all_poll(e->s, cx, e->buf, e->n, &e->done, &err) == TREADLE_PENDING) return TREADLE_PENDING;
    } else {
      if (treadle_tcp_read_poll(e->s, cx, e->buf, sizeof e->buf, &e->n, &err) == TREADLE_PENDING) return TREADLE_PENDING;
      if (e->n == 0) break; /* end of stream */
      e->done = 0;
    }
  }
  return TREADLE_READY;
}

static void echo_drop(void *state) { treadle_tcp_stream_free(((echo_t *)state)->s); }

static const treadle_task_vtable_t answer_vt = {.poll = answer};
static const treadle_task_vtable_t echo_vt = {.poll = echo, .drop = echo_drop};

typedef struct {
  int step, port;
  treadle_join_t *child;
  treadle_signal_t ctrl_c;
  treadle_tcp_listener_t *listener;
} main_t;

static treadle_poll_t main_task(treadle_cx_t *cx, void *state) { /* `step`: where it goes on */
  main_t *m = state;
  treadle_handle_t *h = treadle_cx_handle(cx);
  treadle_err_t err = 0;
  void *value;
  switch (m->step) {
  case 0:
    if ((err = treadle_spawn(h, &answer_vt, NULL, sizeof(answer_t), &m->child)) != 0) break;
    m->step = 1; /* fall through */
  case 1:
    if (treadle_join_poll(m->child, cx, &err, &value) == TREADLE_PENDING) return TREADLE_PENDING;
    treadle_join_detach(m->child);
    if (err != 0) break;
    printf("the spawned task slept 10 ms and returned %d\n", (int)(intptr_t)value);
    if (m->port < 0 || (err = treadle_signal_init(&m->ctrl_c, h, SIGINT)) != 0) break;
    m->step = 2; /* from here on main_drop drops ctrl_c and the listener */
    if ((err = treadle_tcp_bind(h, "127.0.0.1", m->port, NULL, &m->listener)) != 0) break;
    struct sockaddr_storage addr;
    char name[64];
    treadle_tcp_listener_addr(m->listener, &addr);
    treadle_sockaddr_format(&addr, name, sizeof name);
    printf("echo server on %s, Ctrl-C stops it\n", name); /* fall through */
  case 2:
    while (treadle_signal_poll(&m->ctrl_c, cx, &err) == TREADLE_PENDING) {
      treadle_tcp_stream_t *s;
      if (treadle_tcp_accept_poll(m->listener, cx, &s, NULL, &err) == TREADLE_PENDING) return TREADLE_PENDING;
      echo_t e = {.s = s};
      if (err == 0 && (err = treadle_spawn(h, &echo_vt, &e, sizeof e, NULL)) != 0) treadle_tcp_stream_free(s);
      if (err != 0) break;
    }
    if (err == 0) puts("bye");
  }
  treadle_cx_set_output(cx, err, NULL);
  return TREADLE_READY;
}

static void main_drop(void *state) {
  main_t *m = state;
  if (m->step == 2) { treadle_signal_drop(&m->ctrl_c); treadle_tcp_listener_free(m->listener); }
}

int main(int argc, char **argv) {
  main_t m = {.port = -1};
  if (argc == 3 && strcmp(argv[1], "--echo") == 0) m.port = atoi(argv[2]);
  else if (argc != 1) { fprintf(stderr, "usage: quickstart [--echo PORT]\n"); return 2; }
  setvbuf(stdout, NULL, _IOLBF, 0); /* each line reaches a pipe at once */
  static const treadle_task_vtable_t main_vt = {.poll = main_task, .drop = main_drop};
  treadle_runtime_t *rt;
  treadle_err_t err = treadle_runtime_new_current_thread(&rt);
  if (err == 0) {
    err = treadle_runtime_block_on(rt, &main_vt, &m, sizeof m, NULL);
    treadle_runtime_free(rt);
  }
  if (err != 0) fprintf(stderr, "quickstart: %s\n", treadle_strerror(err));
  return err != 0;
}
