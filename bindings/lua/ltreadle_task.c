/* Lua tasks and the ops they wait on (ARCHITECTURE.md "Lua").
 *
 * A task is a coroutine of its home's lua_State, driven by a treadle task
 * pinned to the home's worker. Its poll:
 * 1. If the coroutine waits on an op, poll the op's C leaf; PENDING means
 *    the leaf holds the task's waker.
 * 2. Push the op's results onto the coroutine and resume it. An op
 *    function first polls its leaf at once, so an op that is ready (a read
 *    with data waiting, a send with room) returns without yielding.
 * 3. A yield means a new op (or a plain coroutine.yield: run again soon);
 *    a return or an error finishes the task.
 * abort() sets a flag, clears the op the task waits on (so that the conn,
 * listener or stdin it read is free for another task at once) and wakes
 * the task; its next poll closes the coroutine (running its to-be-closed
 * variables) instead of resuming it. Abort runs on the task's own thread:
 * the tasks of a state never run at the same time. */
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ltreadle.h"

__thread ltask_t *lt_current;
__thread treadle_cx_t *lt_current_cx;

#define TASK_MT "treadle.task"
#define CHAN_MT "treadle.channel"

/* ------------------------------------------------------------ helpers */

int lt_fail(lua_State *L, treadle_err_t err) {
  lua_pushnil(L);
  lua_pushstring(L, treadle_strerror(err));
  lua_pushstring(L, treadle_err_name(err));
  return 3;
}

uint64_t lt_check_duration(lua_State *L, int idx) {
  lua_Number secs = luaL_checknumber(L, idx);
  uint64_t ns;
  if (treadle_duration_from_secs((double)secs, &ns) != 0)
    luaL_argerror(L, idx, "seconds must not be NaN");
  return ns;
}

ltask_t *lt_need_task(lua_State *L, const char *what) {
  ltask_t *t = lt_current;
  if (t == NULL)
    luaL_error(L, "%s needs a running treadle task (treadle.run, "
                  "rt:block_on or treadle.spawn)", what);
  if (t->co != L)
    luaL_error(L, "%s must run in the task's own coroutine, not in a "
                  "coroutine it resumed", what);
  /* An op whose results raised while being pushed (no memory) and whose
   * error the task caught: what it still holds goes now. */
  if (t->op.kind != LOP_NONE)
    lt_op_clear(t);
  return t;
}

/* ------------------------------------------------------------ channels */

/* A channel: a bounded FIFO of serialized values, shared between states.
 * Its waiters queue on two of the core's semaphores, first come first
 * served, and each item or free place wakes one of them:
 * 1. send: take a permit of `slots` (waiting while there is none), put the
 *    blob in the ring under mu, give a permit to `filled`.
 * 2. recv: take a permit of `filled`, take the oldest blob out under mu,
 *    give a permit to `slots`.
 * So the ring has room for every sender that holds a permit, and an item
 * for every receiver that holds one.
 * 3. close (ch:close()): sets `closed` under mu and closes both
 *    semaphores, which wakes every waiter with TREADLE_ECLOSED. A sender
 *    then fails; a receiver takes what is left in the ring under mu
 *    (permits no longer count), and once it is empty gets "closed". A
 *    receiver that held a permit from before the close may thus find the
 *    ring empty: chan_move says so.
 * A named channel holds one more reference, its own, while its ring holds
 * values (taken by the send that fills an empty ring, dropped by the
 * receive that empties it): a value sent on a handle that is then dropped
 * waits, findable by name, for the next handle of that name, as long as a
 * state has the module open (`module_states`); when the last one closes,
 * the values nobody can look up any more go (chan_drop_orphans). */
struct lchan_s {
  _Atomic long refs;
  pthread_mutex_t mu;
  size_t cap, len, head;   /* guarded by mu */
  bool closed;             /* guarded by mu */
  void **items;            /* ring of cap blobs; guarded by mu */
  treadle_semaphore_t *slots;  /* free places in the ring */
  treadle_semaphore_t *filled; /* items in the ring */
  char *name;              /* NULL, or its key in `named` */
  struct lchan_s *next;    /* on `named`; guarded by named_mu */
};

static pthread_mutex_t named_mu = PTHREAD_MUTEX_INITIALIZER;
static lchan_t *named;
static long module_states; /* states with the module open; guarded by named_mu */

/* Step 1 or 2 (with a permit), or step 3's receive (without, once the
 * semaphore said closed): 0, or TREADLE_ECLOSED when a send finds the
 * channel closed or a receive finds it closed and empty. */
static void chan_unref(lchan_t *ch);

static treadle_err_t chan_move(lchan_t *ch, bool send, void **blob) {
  treadle_err_t err = 0;
  bool emptied = false;
  pthread_mutex_lock(&ch->mu);
  if (send && !ch->closed) {
    if (ch->len == 0 && ch->name != NULL) /* the queued values' reference */
      /* Relaxed: the sender holds a reference, so refs is not 0. */
      atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
    ch->items[(ch->head + ch->len++) % ch->cap] = *blob;
    *blob = NULL;
  } else if (!send && ch->len > 0) {
    *blob = ch->items[ch->head];
    ch->head = (ch->head + 1) % ch->cap;
    ch->len--;
    emptied = ch->len == 0 && ch->name != NULL;
  } else {
    err = TREADLE_ECLOSED;
  }
  pthread_mutex_unlock(&ch->mu);
  if (err == 0)
    treadle_semaphore_release(send ? ch->filled : ch->slots, 1);
  if (emptied) /* never the last: the receiver holds one */
    chan_unref(ch);
  return err;
}

/* After an acquire: moves the blob (acq 0), or for a closed semaphore
 * sends nothing and receives what is left. */
static treadle_err_t chan_after(lchan_t *ch, bool send, void **blob,
                                treadle_err_t acq) {
  if (acq == TREADLE_ECLOSED && send)
    return TREADLE_ECLOSED;
  return chan_move(ch, send, blob);
}

/* Moves a blob in or out without waiting: 0, TREADLE_EAGAIN when it
 * would have to wait, TREADLE_ECLOSED. */
static treadle_err_t chan_try(lchan_t *ch, bool send, void **blob) {
  treadle_err_t acq =
      treadle_semaphore_try_acquire(send ? ch->slots : ch->filled, 1);
  if (acq == TREADLE_EAGAIN)
    return acq;
  return chan_after(ch, send, blob, acq);
}

/* A send's or receive's leaf (ud: the task's lop_t). */
static treadle_poll_t chan_wait(void *ud, treadle_cx_t *cx,
                                treadle_err_t *err) {
  lop_t *op = ud;
  lchan_t *ch = op->u.chan.ch;
  bool send = op->kind == LOP_SEND;
  if (treadle_semaphore_acquire_poll(send ? ch->slots : ch->filled, cx,
                                     &op->u.chan.w, 1, err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  *err = chan_after(ch, send, &op->u.chan.blob, *err);
  return TREADLE_READY;
}

static void chan_forget(void *ud) {
  lop_t *op = ud;
  treadle_waiter_drop(&op->u.chan.w); /* passes on a permit it was handed */
  free(op->u.chan.blob);
  op->u.chan.blob = NULL;
  chan_unref(op->u.chan.ch);
}

static void chan_unref(lchan_t *ch) {
  if (ch->name != NULL)
    pthread_mutex_lock(&named_mu);
  /* acq_rel: the last owner sees every other owner's writes. */
  bool last = atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_acq_rel) == 1;
  if (last && ch->name != NULL)
    for (lchan_t **p = &named; *p != NULL; p = &(*p)->next)
      if (*p == ch) {
        *p = ch->next;
        break;
      }
  if (ch->name != NULL)
    pthread_mutex_unlock(&named_mu);
  if (!last)
    return;
  for (size_t i = 0; i < ch->len; i++)
    free(ch->items[(ch->head + i) % ch->cap]);
  free(ch->items);
  free(ch->name);
  treadle_semaphore_unref(ch->slots);
  treadle_semaphore_unref(ch->filled);
  pthread_mutex_destroy(&ch->mu);
  free(ch);
}

/* lua: treadle.channel([capacity [, name]])
 * A bounded FIFO of plain values (nil, booleans, numbers, strings and tables
 * of those, copied) between tasks, also of different workers. capacity:
 * 1..16777216, default 1. Every call with the same name, in any worker's
 * state, gives the same channel; it lives while a handle to it does or a
 * value waits in it, so values sent on a handle that was then dropped
 * wait for the next treadle.channel of that name. Waiting senders and
 * receivers are served first come, first served; each value or free place
 * wakes one of them.
 * Returns: the channel (ch).
 * Errors: raises for a bad capacity, and for a name that exists with
 * another capacity than the one given.
 * Example: local ch = treadle.channel(16, "jobs") */
static int l_channel(lua_State *L) {
  bool cap_given = !lua_isnoneornil(L, 1);
  lua_Integer cap = luaL_optinteger(L, 1, 1);
  const char *name = luaL_optstring(L, 2, NULL);
  luaL_argcheck(L, cap >= 1 && cap <= (1 << 24), 1, "capacity must be in 1..16777216");
  lchan_t **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, CHAN_MT);
  lchan_t *ch = NULL;
  if (name != NULL) {
    pthread_mutex_lock(&named_mu);
    for (ch = named; ch != NULL && strcmp(ch->name, name) != 0; ch = ch->next)
      ;
    if (ch != NULL && cap_given && ch->cap != (size_t)cap) {
      size_t had = ch->cap;
      pthread_mutex_unlock(&named_mu);
      return luaL_error(L, "channel '%s' exists with capacity %d, not %d",
                        name, (int)had, (int)cap);
    }
    if (ch != NULL) /* Relaxed: named_mu orders it against the last unref. */
      atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
  }
  if (ch == NULL) {
    ch = calloc(1, sizeof *ch);
    void **items = ch != NULL ? calloc((size_t)cap, sizeof *items) : NULL;
    char *copy = name != NULL && ch != NULL ? strdup(name) : NULL;
    if (ch == NULL || items == NULL || (name != NULL && copy == NULL) ||
        treadle_semaphore_new((size_t)cap, &ch->slots) != 0 ||
        treadle_semaphore_new(0, &ch->filled) != 0) {
      if (name != NULL)
        pthread_mutex_unlock(&named_mu);
      if (ch != NULL) {
        treadle_semaphore_unref(ch->slots);
        treadle_semaphore_unref(ch->filled);
      }
      free(ch);
      free(items);
      free(copy);
      return luaL_error(L, "not enough memory");
    }
    atomic_init(&ch->refs, 1);
    pthread_mutex_init(&ch->mu, NULL);
    ch->cap = (size_t)cap;
    ch->items = items;
    ch->name = copy;
    if (name != NULL) {
      ch->next = named;
      named = ch;
    }
  }
  if (name != NULL)
    pthread_mutex_unlock(&named_mu);
  *ud = ch;
  return 1;
}

lchan_t *lt_to_chan(lua_State *L, int idx) {
  lchan_t **ud = luaL_testudata(L, idx, CHAN_MT);
  if (ud != NULL && *ud == NULL)
    luaL_error(L, "channel handle released (by <close> or __gc)");
  return ud != NULL ? *ud : NULL;
}

void lt_chan_ref(lchan_t *ch) {
  /* Relaxed: a new reference, taken from one the caller holds. */
  atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
}

void lt_chan_unref(lchan_t *ch) { chan_unref(ch); }

treadle_poll_t lt_chan_recv_poll(lchan_t *ch, treadle_cx_t *cx,
                                 treadle_waiter_t *w, void **blob,
                                 treadle_err_t *err) {
  if (treadle_semaphore_acquire_poll(ch->filled, cx, w, 1, err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  *err = chan_after(ch, false, blob, *err);
  return TREADLE_READY;
}

static lchan_t *check_chan(lua_State *L) {
  lchan_t **ud = luaL_checkudata(L, 1, CHAN_MT);
  if (*ud == NULL)
    luaL_error(L, "channel handle released (by <close> or __gc)");
  return *ud;
}

/* Makes t wait to send `blob` (taken) or to receive. */
static void chan_op(ltask_t *t, lopkind_t kind, lchan_t *ch, void *blob) {
  t->op.kind = kind;
  t->op.u.chan.ch = ch;
  t->op.u.chan.blob = blob;
  treadle_waiter_init(&t->op.u.chan.w);
  /* Relaxed: the op's reference, taken from one the caller holds. */
  atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
  tb_op_wait(&t->op.tb, chan_wait, chan_forget, &t->op);
}

/* lua: ch:send(v)
 * Sends a copy of v, waiting while the channel is full.
 * Returns: true.
 * Errors: raises for values that cannot be copied (functions, userdata,
 * tables nested deeper than 64), "send on a closed channel" (also for a
 * send waiting when the channel is closed) and, when it would have to
 * wait, outside a task.
 * Example: ch:send({id = 1, body = "hi"}) */
static int l_chan_send(lua_State *L) {
  lchan_t *ch = check_chan(L);
  luaL_checkany(L, 2);
  void *blob = lt_pack(L, 2);
  ltask_t *t = lt_current;
  treadle_err_t err = chan_try(ch, true, &blob);
  if (err == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (err == TREADLE_ECLOSED) {
    free(blob);
    return luaL_error(L, "send on a closed channel");
  }
  if (t == NULL || t->co != L) {
    free(blob);
    lt_need_task(L, "a send on a full channel");
  }
  chan_op(t, LOP_SEND, ch, blob);
  return lt_wait(L, t);
}

/* lua: ch:recv()
 * Waits for the next value. Once the channel is closed, the values left
 * in it are still received, then every receive answers nil, "closed".
 * Returns: the value, or nil, "closed".
 * Errors: raises when it would have to wait outside a task.
 * Example: local job = ch:recv() */
static int l_chan_recv(lua_State *L) {
  lchan_t *ch = check_chan(L);
  void *blob = NULL;
  treadle_err_t err = chan_try(ch, false, &blob);
  if (err == 0) {
    lt_unpack_free(L, blob);
    return 1;
  }
  if (err == TREADLE_ECLOSED) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  ltask_t *t = lt_need_task(L, "a receive on an empty channel");
  chan_op(t, LOP_RECV, ch, NULL);
  return lt_wait(L, t);
}

/* lua: ch:try_send(v)
 * Sends a copy of v if the channel has room now, never waiting (any
 * thread, in a task or not).
 * Returns: true, or false, "full" | "closed".
 * Errors: raises for values that cannot be copied (as ch:send).
 * Example: if not ch:try_send(job) then drop(job) end */
static int l_chan_try_send(lua_State *L) {
  lchan_t *ch = check_chan(L);
  luaL_checkany(L, 2);
  void *blob = lt_pack(L, 2);
  treadle_err_t err = chan_try(ch, true, &blob);
  free(blob); /* NULL once sent */
  lua_pushboolean(L, err == 0);
  if (err == 0)
    return 1;
  lua_pushstring(L, err == TREADLE_ECLOSED ? "closed" : "full");
  return 2;
}

/* lua: ch:try_recv()
 * Receives the next value if there is one now, never waiting.
 * Returns: the value, or nil, "empty" | "closed" ("closed" only once a
 * closed channel is drained).
 * Example: local v, err = ch:try_recv() */
static int l_chan_try_recv(lua_State *L) {
  lchan_t *ch = check_chan(L);
  void *blob = NULL;
  treadle_err_t err = chan_try(ch, false, &blob);
  if (err == 0) {
    lt_unpack_free(L, blob);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, err == TREADLE_ECLOSED ? "closed" : "empty");
  return 2;
}

/* lua: ch:close()
 * Closes the channel, for every handle of it in every worker (Go's
 * close): waiting and later senders raise "send on a closed channel";
 * receivers get the values still queued, then nil, "closed". Idempotent.
 * Dropping a handle (<close>, garbage) does not close the channel.
 * Returns: nothing.
 * Example: ch:close() */
static int l_chan_close(lua_State *L) {
  lchan_t *ch = check_chan(L);
  pthread_mutex_lock(&ch->mu);
  ch->closed = true;
  pthread_mutex_unlock(&ch->mu);
  treadle_semaphore_close(ch->slots);
  treadle_semaphore_close(ch->filled);
  return 0;
}

/* lua: ch:__len(), that is #ch
 * Returns: how many values are queued now.
 * Example: if #ch > 100 then treadle.sleep(0.01) end */
static int l_chan_len(lua_State *L) {
  lchan_t *ch = check_chan(L);
  pthread_mutex_lock(&ch->mu);
  size_t n = ch->len;
  pthread_mutex_unlock(&ch->mu);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int l_chan_gc(lua_State *L) {
  lchan_t **ud = luaL_checkudata(L, 1, CHAN_MT);
  if (*ud != NULL)
    chan_unref(*ud);
  *ud = NULL;
  return 0;
}

static int l_chan_tostring(lua_State *L) {
  lchan_t **ud = luaL_checkudata(L, 1, CHAN_MT);
  if (*ud == NULL)
    lua_pushliteral(L, "treadle.channel (closed)");
  else
    lua_pushfstring(L, "treadle.channel (%d/%d%s%s)", (int)(*ud)->len, (int)(*ud)->cap,
                    (*ud)->name ? " " : "", (*ud)->name ? (*ud)->name : "");
  return 1;
}

/* ----------------------------------------------------------------- ops */

treadle_poll_t lt_op_poll(ltask_t *t, treadle_cx_t *cx) {
  lop_t *op = &t->op;
  switch (op->kind) {
  case LOP_NONE:
    return TREADLE_READY;
  case LOP_LEAF:
  case LOP_JOIN:
  case LOP_SEND:
  case LOP_RECV:
  case LOP_OWN:
    return tb_op_poll(&op->tb, cx);
  }
  return TREADLE_READY;
}

/* Cancels c (abort, a timeout, a stopping worker); see the top. A task
 * that aborts itself runs, so it waits on nothing. */
static void task_cancel(ltask_t *c) {
  if (c->status != LT_RUNNING || c->cancel)
    return;
  c->cancel = true;
  lt_op_clear(c);
  if (c->waker != NULL)
    treadle_wake_by_ref(c->waker);
}

/* Pushes a copy of a finished task's outcome onto `to`, flag first. */
static int push_outcome(lua_State *to, ltask_t *c) {
  if (c->status == LT_CANCELLED) {
    lua_pushboolean(to, 0);
    lua_pushliteral(to, "cancelled");
    return 2;
  }
  int n = c->status == LT_OK ? c->nresults : 1;
  luaL_checkstack(to, n + 2, "join results");
  luaL_checkstack(c->co, n, "join results");
  lua_pushboolean(to, c->status == LT_OK);
  for (int i = 0; i < n; i++)
    lua_pushvalue(c->co, -n);
  lua_xmove(c->co, to, n);
  c->joined = true;
  return n + 1;
}

int lt_op_push(lua_State *co, ltask_t *t) {
  lop_t *op = &t->op;
  int n = 1;
  switch (op->kind) {
  case LOP_NONE:
    lua_pushboolean(co, 1);
    break;
  case LOP_LEAF:
    if (op->tb.kind == TB_SIGNAL) { /* true, or nil, message, errno name */
      lua_pushboolean(co, 1);
      if (op->tb.err != 0)
        n += lt_fail(co, op->tb.err);
      else
        lua_pushboolean(co, 1), n++;
    } else if (op->tb.kind != TB_SLEEP && op->tb.kind != TB_YIELD) {
      lua_pushboolean(co, 1);
      n += lt_net_push(co, t);
    } else if (op->tb.err != 0) { /* sleep without timers: raise */
      lua_pushboolean(co, 0);
      lua_pushstring(co, treadle_strerror(op->tb.err));
      n = 2;
    } else {
      lua_pushboolean(co, 1);
    }
    break;
  case LOP_OWN:
    lua_pushboolean(co, 1);
    n += op->u.own.push(co, t);
    break;
  case LOP_JOIN:
    if (op->tb.timed_out && op->tb.err != TREADLE_ETIMEDOUT) { /* no timers */
      task_cancel(op->u.join.child);
      lua_pushboolean(co, 0);
      lua_pushstring(co, treadle_strerror(op->tb.err));
      n = 2;
    } else if (op->tb.timed_out) {
      task_cancel(op->u.join.child);
      lua_pushboolean(co, 1);
      lua_pushnil(co);
      lua_pushliteral(co, "timeout");
      n = 3;
    } else if (op->u.join.is_timeout &&
               op->u.join.child->status == LT_OK) { /* timeout: true, ... */
      n = push_outcome(co, op->u.join.child);
      lua_pushboolean(co, 1);
      lua_insert(co, -n);
      n++;
    } else {
      n = push_outcome(co, op->u.join.child);
    }
    break;
  case LOP_SEND:
    lua_pushboolean(co, op->tb.err == 0);
    if (op->tb.err == 0)
      lua_pushboolean(co, 1);
    else
      lua_pushliteral(co, "send on a closed channel");
    n = 2;
    break;
  case LOP_RECV:
    lua_pushboolean(co, 1);
    if (op->tb.err != 0) {
      lua_pushnil(co);
      lua_pushliteral(co, "closed");
      n = 3;
      break;
    }
    void *blob = op->u.chan.blob;
    op->u.chan.blob = NULL;
    lt_unpack_free(co, blob);
    n = 2;
    break;
  }
  lt_op_clear(t);
  return n;
}

void lt_op_clear(ltask_t *t) {
  lop_t *op = &t->op;
  switch (op->kind) {
  case LOP_LEAF:
  case LOP_JOIN: /* child_forget */
  case LOP_SEND: /* chan_forget */
  case LOP_RECV:
    tb_op_clear(&op->tb);
    break;
  case LOP_OWN:
    tb_op_clear(&op->tb);
    if (op->u.own.done != NULL)
      op->u.own.done(op->u.own.ud);
    break;
  case LOP_NONE:
    break;
  }
  /* tb is TB_NONE again; each kind's maker sets its own member of u. */
  op->kind = LOP_NONE;
}

/* A join's leaf: READY once the child finished; until then the waiting
 * task is the child's joiner (one at a time: l_task_join checks). */
static treadle_poll_t child_done(void *ud, treadle_cx_t *cx,
                                 treadle_err_t *err) {
  ltask_t *c = ud;
  *err = 0;
  if (c->status != LT_RUNNING)
    return TREADLE_READY;
  if (c->joiner == NULL)
    c->joiner = treadle_waker_clone(treadle_cx_waker(cx));
  return TREADLE_PENDING;
}

static void child_forget(void *ud) {
  ltask_t *c = ud;
  treadle_waker_drop(c->joiner);
  c->joiner = NULL;
}

/* Makes t wait for c, for at most ns (TREADLE_FOREVER: no limit). */
static void wait_for_child(ltask_t *t, ltask_t *c, uint64_t ns,
                           bool is_timeout) {
  t->op.kind = LOP_JOIN;
  t->op.u.join.child = c;
  t->op.u.join.is_timeout = is_timeout;
  tb_op_wait(&t->op.tb, child_done, child_forget, c);
  tb_op_set_deadline(&t->op.tb, ns);
}

/* Returns an op's results to Lua: raises when the flag says so. */
static int op_return(lua_State *L, int n) {
  if (!lua_toboolean(L, -n)) {
    lua_settop(L, lua_gettop(L) - n + 2);
    return lua_error(L);
  }
  lua_remove(L, -n);
  return n - 1;
}

/* An op's results are pushed here, inside the resumed coroutine (the task
 * step resumes it with none), because pushing them may raise "not enough
 * memory": raised here, the error is the task's; raised from the step,
 * outside any protected call, it would unwind through the scheduler
 * (issue 17, the Lua allocation sweep). */
static int op_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; /* an op's yield resumes only with LUA_YIELD */
  (void)ctx;
  return op_return(L, lt_op_push(L, lt_current));
}

int lt_wait(lua_State *L, ltask_t *t) {
  if (lt_op_poll(t, lt_current_cx) == TREADLE_READY)
    return op_return(L, lt_op_push(L, t));
  t->push_in_k = true;
  return lua_yieldk(L, 0, 0, op_k);
}

/* --------------------------------------------------------------- tasks */

typedef struct {
  ltask_t *t;
} cstate_t;

static void check_thread(lhome_t *home) {
#ifndef NDEBUG
  if (!home->thread_known) {
    home->thread = pthread_self();
    home->thread_known = true;
  }
  if (!pthread_equal(home->thread, pthread_self())) {
    fprintf(stderr, "treadle: a lua_State was run by two threads\n");
    abort();
  }
#else
  (void)home;
#endif
}

/* A failed task's string error gets the coroutine's traceback, as lua.c's
 * message handler adds it: after an error the coroutine's stack stays as
 * it was where the error was raised. Other error values stay as they are
 * (a join raises the same object). */
static void add_traceback(lua_State *co) {
  if (lua_type(co, -1) != LUA_TSTRING)
    return;
  luaL_traceback(co, co, lua_tostring(co, -1), 0);
  lua_replace(co, -2);
}

/* Prints a failed task's error to stderr, once: when it ends with no task
 * waiting to join it (as OpenResty logs "lua entry thread aborted" at
 * once), or when its handle is collected after the task that waited went
 * away without the error. A join that takes it counts as the report. */
static void report_error(ltask_t *t) {
  if (t->status != LT_ERROR || t->joined || t->reported)
    return;
  t->reported = true;
  lua_State *co = t->co;
  if (lua_type(co, -1) == LUA_TSTRING) {
    fprintf(stderr, "treadle: a task failed and nobody joins it: %s\n",
            lua_tostring(co, -1));
    return;
  }
  lua_pushfstring(co, "(error object is a %s value)", luaL_typename(co, -1));
  luaL_traceback(co, co, lua_tostring(co, -1), 0);
  fprintf(stderr, "treadle: a task failed and nobody joins it: %s\n",
          lua_tostring(co, -1));
  lua_pop(co, 2);
}

/* The home's list of live tasks (its thread only). */
static void live_add(ltask_t *t) {
  lhome_t *home = t->home;
  t->live_next = home->tasks;
  t->live_prev = &home->tasks;
  if (home->tasks != NULL)
    home->tasks->live_prev = &t->live_next;
  home->tasks = t;
}

static void live_remove(ltask_t *t) {
  if (t->live_prev == NULL)
    return;
  *t->live_prev = t->live_next;
  if (t->live_next != NULL)
    t->live_next->live_prev = t->live_prev;
  t->live_next = NULL;
  t->live_prev = NULL;
  lhome_t *home = t->home;
  if (home->stopping && !home->stopped && home->tasks == NULL) {
    home->stopped = true;
    lt_home_stopped(home);
  }
}

void lt_home_stop(lhome_t *home) {
  if (home->stopping)
    return;
  home->stopping = true;
  for (ltask_t *t = home->tasks; t != NULL; t = t->live_next)
    task_cancel(t); /* takes none off the list: that is their next poll */
  if (home->tasks == NULL) {
    home->stopped = true;
    lt_home_stopped(home);
  }
}

/* On the home thread: the task is over; let go of what held it. */
static void finish(ltask_t *t, int status) {
  bool awaited = t->joiner != NULL;
  t->status = status;
  if (status == LT_ERROR)
    add_traceback(t->co);
  lt_op_clear(t);
  if (t->joiner != NULL) {
    treadle_wake(t->joiner);
    t->joiner = NULL;
  }
  treadle_waker_drop(t->waker);
  t->waker = NULL;
  if (t->on_done != NULL)
    t->on_done(t, t->on_done_ud); /* a worker's main: block_on takes it */
  if (!awaited)
    report_error(t);
  if (t->anchor != LUA_NOREF) {
    luaL_unref(t->home->L, LUA_REGISTRYINDEX, t->anchor);
    t->anchor = LUA_NOREF;
  }
  live_remove(t);
}

treadle_poll_t lt_task_step(ltask_t *t, treadle_cx_t *cx) {
  check_thread(t->home);
  if (t->waker == NULL)
    t->waker = treadle_waker_clone(treadle_cx_waker(cx));
  if (t->cancel) {
    lua_resetthread(t->co); /* runs its pending to-be-closed variables */
    finish(t, LT_CANCELLED);
    return TREADLE_READY;
  }
  int nargs;
  if (!t->started) {
    t->started = true;
    nargs = t->start_nargs;
  } else {
    if (lt_op_poll(t, cx) == TREADLE_PENDING)
      return TREADLE_PENDING;
    /* lt_wait's results are pushed by op_k, inside the coroutine; the
     * other yields' (a plain yield's boolean, a cosocket's absorb) cannot
     * raise. */
    nargs = t->push_in_k ? 0 : lt_op_push(t->co, t);
    t->push_in_k = false;
  }
  ltask_t *saved = lt_current;
  treadle_cx_t *saved_cx = lt_current_cx;
  lt_current = t;
  lt_current_cx = cx;
  int nres;
  int st = lua_resume(t->co, NULL, nargs, &nres);
  lt_current = saved;
  lt_current_cx = saved_cx;
  if (st == LUA_YIELD) {
    lua_pop(t->co, nres);
    if (t->op.kind == LOP_NONE) { /* a plain coroutine.yield() */
      t->op.kind = LOP_LEAF;
      tb_op_yield(&t->op.tb);
      tb_op_poll(&t->op.tb, cx); /* PENDING: asks for a turn */
    }
    /* An op yields only after its inline poll said PENDING: the leaf
     * holds our waker. */
    return TREADLE_PENDING;
  }
  if (st == LUA_OK) {
    t->nresults = nres;
    finish(t, LT_OK);
  } else {
    finish(t, LT_ERROR);
  }
  return TREADLE_READY;
}

static treadle_poll_t task_poll(treadle_cx_t *cx, void *state) {
  return lt_task_step(((cstate_t *)state)->t, cx);
}

void lt_task_drop(ltask_t *t) {
  if (t->status != LT_RUNNING)
    return;
  bool home_thread = !t->home->thread_known ||
                     pthread_equal(t->home->thread, pthread_self());
  t->status = LT_CANCELLED;
  lt_op_clear(t);
  /* Dropped while it waits (a runtime freed, SIGINT's shutdown): close
   * its to-be-closed variables as an abort would. */
  if (home_thread && t->co != NULL && lua_status(t->co) == LUA_YIELD)
    lua_resetthread(t->co);
  treadle_waker_drop(t->joiner);
  t->joiner = NULL;
  treadle_waker_drop(t->waker);
  t->waker = NULL;
  if (t->on_done != NULL)
    t->on_done(t, t->on_done_ud);
  if (home_thread && t->anchor != LUA_NOREF) /* else the state is closed next */
    luaL_unref(t->home->L, LUA_REGISTRYINDEX, t->anchor);
  t->anchor = LUA_NOREF;
  /* Off the home thread only once its worker has stopped: the list is
   * this thread's now. */
  live_remove(t);
}

/* Once: after READY (nothing left), or when the runtime drops the task. */
static void task_drop(void *state) { lt_task_drop(((cstate_t *)state)->t); }

void lt_task_live(ltask_t *t) {
  live_add(t);
  t->cancel = t->home->stopping;
}

void lt_task_cancel(ltask_t *t) { task_cancel(t); }

static const treadle_task_vtable_t task_vt = {.poll = task_poll, .drop = task_drop};

ltask_t *lt_spawn(lua_State *L, lhome_t *home, int idx, int nargs) {
  idx = lua_absindex(L, idx);
  luaL_checktype(L, idx, LUA_TFUNCTION);
  ltask_t *t = lua_newuserdatauv(L, sizeof *t, 1);
  memset(t, 0, sizeof *t);
  t->anchor = LUA_NOREF;
  t->home = home;
  luaL_setmetatable(L, TASK_MT);
  lua_State *co = lua_newthread(L);
  lua_setiuservalue(L, -2, 1); /* the task keeps its coroutine */
  t->co = co;
  lua_pushvalue(L, idx);
  for (int i = 1; i <= nargs; i++)
    lua_pushvalue(L, idx + i);
  lua_xmove(L, co, nargs + 1);
  t->start_nargs = nargs;
  lua_pushvalue(L, -1);
  t->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  cstate_t st = {t};
  treadle_spawn_opts_t opts = TREADLE_SPAWN_OPTS_INIT;
  opts.worker = home->worker;
  treadle_err_t err = treadle_spawn_with(home->h, &task_vt, &st, sizeof st, &opts, NULL);
  if (err != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, t->anchor);
    t->anchor = LUA_NOREF;
    t->status = LT_CANCELLED;
    luaL_error(L, "cannot spawn: %s", treadle_strerror(err));
  }
  live_add(t); /* it runs on this thread, after we return */
  t->cancel = home->stopping;
  return t;
}

/* lua: treadle.spawn(fn, ...)
 * Runs fn(...) as a new task (a coroutine) on the calling task's worker.
 * If fn raises and no task is waiting in task:join then, the error and its
 * traceback go to stderr at once ("treadle: a task failed and nobody joins
 * it: ..."), once; a join raises it all the same.
 * Returns: the task; it starts once the calling task waits or yields.
 * Errors: raises outside a task.
 * Example: local t = treadle.spawn(function(a, b) return a + b end, 1, 2) */
static int l_spawn(lua_State *L) {
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "treadle.spawn needs a running treadle task "
                         "(treadle.run or rt:block_on)");
  lt_spawn(L, home, 1, lua_gettop(L) - 1);
  return 1;
}

ltask_t *lt_check_task(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, TASK_MT);
}

int lt_task_results(lua_State *L, ltask_t *t) {
  return op_return(L, push_outcome(L, t));
}

lhome_t *lt_home(lua_State *L) {
  (void)L; /* the running task's home, also from a coroutine it resumed */
  return lt_current != NULL ? lt_current->home : NULL;
}

/* lua: task:join()
 * Waits for the task to finish.
 * Returns: the task's results.
 * Errors: raises the task's error (a string error with the task's traceback
 * appended, as lua5.4 prints one; other values as they are), or
 * "cancelled" after task:abort();
 * raises when it would have to wait outside a task, from the task itself,
 * from another worker's state, or while another task joins it.
 * Example: local sum = t:join() */
static int l_task_join(lua_State *L) {
  ltask_t *c = lt_check_task(L, 1);
  if (c->status != LT_RUNNING) /* done: no need to wait, or a task */
    return op_return(L, push_outcome(L, c));
  ltask_t *t = lt_need_task(L, "join");
  if (c == t)
    return luaL_error(L, "a task cannot join itself");
  if (c->joiner != NULL)
    return luaL_error(L, "another task is already joining this task");
  if (c->home != t->home)
    return luaL_error(L, "a task can only be joined from its own worker's state");
  wait_for_child(t, c, TREADLE_FOREVER, false);
  lua_pushvalue(L, 1); /* keeps the child alive while we wait */
  return lt_wait(L, t);
}

/* lua: task:abort()
 * Cancels the task: it stops at its next wait, its to-be-closed variables
 * are closed, and join raises "cancelled". What it waits on is let go of at
 * once: another task may read the conn it was reading right away. Does
 * nothing once it finished. A task in a `<close>` variable is aborted at the
 * end of its scope.
 * Returns: nothing. */
static int l_task_abort(lua_State *L) {
  task_cancel(lt_check_task(L, 1));
  return 0;
}

/* lua: task:done()
 * Returns: true once the task has finished, failed or been cancelled. */
static int l_task_done(lua_State *L) {
  lua_pushboolean(L, lt_check_task(L, 1)->status != LT_RUNNING);
  return 1;
}

static int l_task_gc(lua_State *L) {
  report_error(lt_check_task(L, 1));
  return 0;
}

static int l_task_tostring(lua_State *L) {
  static const char *names[] = {"running", "done", "failed", "cancelled"};
  ltask_t *t = lt_check_task(L, 1);
  lua_pushfstring(L, "treadle.task (%s, worker %d): %p", names[t->status],
                  t->home->worker, (void *)t);
  return 1;
}

/* ----------------------------------------------------------- functions */

/* lua: treadle.sleep(seconds)
 * Suspends the calling task for `seconds` (negative is 0; math.huge waits
 * until the task is aborted). Timers never fire early (1 ms ticks).
 * Returns: nothing.
 * Errors: raises outside a task, for NaN, and on a runtime without timers
 * (enable_time = false).
 * Example: treadle.sleep(0.25) */
static int l_sleep(lua_State *L) {
  uint64_t ns = lt_check_duration(L, 1);
  ltask_t *t = lt_need_task(L, "treadle.sleep");
  t->op.kind = LOP_LEAF;
  tb_op_sleep(&t->op.tb, ns);
  return lt_wait(L, t);
}

/* lua: treadle.yield()
 * Lets the other ready tasks run, then goes on.
 * Returns: nothing.
 * Errors: raises outside a task. */
static int l_yield(lua_State *L) {
  ltask_t *t = lt_need_task(L, "treadle.yield");
  t->op.kind = LOP_LEAF;
  tb_op_yield(&t->op.tb);
  return lt_wait(L, t);
}

/* lua: treadle.now()
 * Returns: seconds of the monotonic clock (CLOCK_MONOTONIC) as a float, the
 * clock of every treadle deadline. Any time, in a task or not.
 * Example: local t0 = treadle.now() */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)treadle_now() / 1e9);
  return 1;
}

/* lua: treadle.worker()
 * Returns: the index of the worker running the calling task (0 on
 * current_thread).
 * Errors: raises outside a task. */
static int l_worker(lua_State *L) {
  lhome_t *home = lt_home(L);
  if (home == NULL)
    return luaL_error(L, "treadle.worker needs a running treadle task");
  lua_pushinteger(L, home->worker);
  return 1;
}

/* lua: treadle.thread_id()
 * Returns: the calling thread's operating-system id (gettid). */
static int l_thread_id(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)syscall(SYS_gettid));
  return 1;
}

/* lua: treadle.timeout(seconds, fn, ...)
 * Runs fn(...) as a task of this worker for at most `seconds`; then aborts
 * it.
 * Returns: true and fn's results, or nil, "timeout".
 * Errors: raises fn's error; raises outside a task and on a runtime without
 * timers.
 * Example: local ok, msg = treadle.timeout(0.1, treadle.sleep, 1) */
static int l_timeout(lua_State *L) {
  uint64_t ns = lt_check_duration(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  ltask_t *t = lt_need_task(L, "treadle.timeout");
  ltask_t *c = lt_spawn(L, t->home, 2, lua_gettop(L) - 2);
  wait_for_child(t, c, ns, true);
  return lt_wait(L, t);
}

/* lua: treadle.signal(name)
 * Waits for the next delivery of a Unix signal: "SIGINT", "SIGTERM",
 * "SIGHUP", "SIGUSR1", "SIGCHLD", ... (any standard signal a program may
 * catch, also without SIG: "TERM"). Every waiting task sees every delivery.
 * A task waiting for SIGINT handles Ctrl-C itself: treadle.run then no
 * longer raises "interrupted".
 * Returns: true, or nil, message, errno name (ENOIO on a runtime without
 * enable_io).
 * Errors: raises for other names and outside a task.
 * Example: treadle.signal("SIGTERM") */
static int l_signal(lua_State *L) {
  int signum = treadle_signal_from_name(luaL_checkstring(L, 1));
  if (signum < 0)
    return luaL_argerror(L, 1, "not a signal treadle can wait for "
                               "(SIGINT, SIGTERM, SIGHUP, SIGUSR1, ...)");
  ltask_t *t = lt_need_task(L, "treadle.signal");
  t->op.kind = LOP_LEAF;
  tb_op_signal(&t->op.tb, signum); /* checked above: cannot fail */
  return lt_wait(L, t);
}

static const luaL_Reg task_methods[] = {
    {"join", l_task_join}, {"abort", l_task_abort}, {"done", l_task_done}, {NULL, NULL}};
static const luaL_Reg chan_methods[] = {
    {"send", l_chan_send}, {"recv", l_chan_recv},
    {"try_send", l_chan_try_send}, {"try_recv", l_chan_try_recv},
    {"close", l_chan_close}, {NULL, NULL}};
static const luaL_Reg functions[] = {
    {"spawn", l_spawn},   {"sleep", l_sleep},       {"yield", l_yield},
    {"now", l_now},       {"timeout", l_timeout},   {"worker", l_worker},
    {"thread_id", l_thread_id}, {"signal", l_signal}, {"channel", l_channel},
    {NULL, NULL}};

void lt_name_table(lua_State *L, const char *name) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

void lt_new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction gc, lua_CFunction close, lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lt_name_table(L, name);
  lua_setfield(L, -2, "__index");
  const struct { const char *key; lua_CFunction fn; } meta[] = {
      {"__gc", gc}, {"__close", close}, {"__tostring", tostring}};
  for (size_t i = 0; i < sizeof meta / sizeof meta[0]; i++)
    if (meta[i].fn != NULL) {
      lua_pushcfunction(L, meta[i].fn);
      lua_setfield(L, -2, meta[i].key);
    }
  lua_pop(L, 1);
}

/* The last state with the module closed: no handle is left, so the named
 * channels still listed hold only their values' reference; each drops it
 * (and its values). */
static void chan_drop_orphans(void) {
  for (;;) {
    lchan_t *ch = NULL;
    pthread_mutex_lock(&named_mu);
    for (lchan_t *c = module_states == 0 ? named : NULL; c != NULL && ch == NULL;
         c = c->next) {
      pthread_mutex_lock(&c->mu);
      if (c->len > 0) { /* empties it: the values' reference is ours */
        ch = c;
        for (; c->len > 0; c->len--) {
          free(c->items[c->head]);
          c->head = (c->head + 1) % c->cap;
        }
      }
      pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&named_mu);
    if (ch == NULL)
      return;
    chan_unref(ch); /* the values' reference */
  }
}

/* __gc of the sentinel each state's module keeps in its registry. */
static int module_closed_gc(lua_State *L) {
  (void)L;
  pthread_mutex_lock(&named_mu);
  bool last = --module_states == 0;
  pthread_mutex_unlock(&named_mu);
  if (last)
    chan_drop_orphans();
  return 0;
}

void lt_open_task(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, "treadle.module_open") == LUA_TNIL) {
    lua_newuserdatauv(L, 1, 0); /* once per state: closed with it */
    lua_newtable(L);
    lua_pushcfunction(L, module_closed_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "treadle.module_open");
    pthread_mutex_lock(&named_mu);
    module_states++;
    pthread_mutex_unlock(&named_mu);
  }
  lua_pop(L, 1);
  /* local t <close>: the task is aborted at the end of the scope */
  lt_new_class(L, TASK_MT, task_methods, l_task_gc, l_task_abort, l_task_tostring);
  lt_new_class(L, CHAN_MT, chan_methods, l_chan_gc, l_chan_gc, l_chan_tostring);
  luaL_getmetatable(L, CHAN_MT);
  lua_pushcfunction(L, l_chan_len);
  lua_setfield(L, -2, "__len");
  lua_pop(L, 1);
  luaL_setfuncs(L, functions, 0);
}
