/* The actor of the synchronisation tests (sync_util.h). */
#include "sync_util.h"

static treadle_poll_t actor_poll(treadle_cx_t *cx, void *st) {
  actor_t *a = *(actor_t **)st;
  return a->fn(a, cx) ? TREADLE_READY : TREADLE_PENDING;
}

/* Runs when the task completes or is cancelled: gives up its waits. */
static void actor_drop(void *st) {
  actor_t *a = *(actor_t **)st;
  treadle_waiter_drop(&a->w);
  for (int i = 0; i < 4; i++)
    treadle_waiter_drop(&a->ws[i]);
  treadle_mpsc_tx_drop(a->tx);
  a->tx = NULL;
  treadle_mpsc_tx_drop(a->tx2);
  a->tx2 = NULL;
  treadle_mpsc_rx_drop(a->rx);
  a->rx = NULL;
}

const treadle_task_vtable_t actor_vt = {.poll = actor_poll, .drop = actor_drop};

void actor_init(actor_t *a, bool (*fn)(actor_t *, treadle_cx_t *), void *shared,
                int id) {
  memset(a, 0, sizeof *a);
  a->fn = fn;
  a->shared = shared;
  a->id = id;
  treadle_waiter_init(&a->w);
  for (int i = 0; i < 4; i++)
    treadle_waiter_init(&a->ws[i]);
}

treadle_join_t *spawn_actor(treadle_handle_t *h, actor_t *a) {
  treadle_join_t *j = NULL;
  assert_int_equal(treadle_spawn(h, &actor_vt, &a, sizeof a, &j), 0);
  return j;
}

void run_main_joining(actor_t *a, pthread_t *th, int n) {
  treadle_runtime_t *rt = test_runtime();
  assert_int_equal(treadle_runtime_block_on(rt, &actor_vt, &a, sizeof a, NULL),
                   0);
  for (int i = 0; i < n; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(treadle_runtime_free(rt), 0);
}

void run_main(actor_t *a) { run_main_joining(a, NULL, 0); }

void spawn_kids(actor_t *m, treadle_cx_t *cx, size_t n,
                bool (*fn)(actor_t *, treadle_cx_t *), void *shared) {
  m->kids = calloc(n, sizeof *m->kids);
  m->nkids = n;
  m->joined = 0;
  for (size_t i = 0; i < n; i++) {
    actor_init(&m->kids[i], fn, shared, (int)i);
    m->kids[i].join = spawn_actor(treadle_cx_handle(cx), &m->kids[i]);
  }
}

bool join_kids(actor_t *m, treadle_cx_t *cx) {
  while (m->joined < m->nkids) {
    actor_t *k = &m->kids[m->joined];
    treadle_err_t st;
    if (treadle_join_poll(k->join, cx, &st, NULL) == TREADLE_PENDING)
      return false;
    assert_int_equal(st, 0);
    treadle_join_detach(k->join);
    k->join = NULL;
    m->joined++;
  }
  return true;
}

void free_kids(actor_t *m) {
  free(m->kids);
  m->kids = NULL;
}

void note_registered(actor_t *a, _Atomic int *counter) {
  if (!a->registered) {
    a->registered = true;
    atomic_fetch_add(counter, 1);
  }
}
