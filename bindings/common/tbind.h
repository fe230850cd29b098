/* The layer both script bindings stand on (bindings/python, bindings/lua):
 * no Python and no Lua here, only treadle's C API.
 *
 * op.c      an operation: one C leaf future (sleep, signal, join, accept,
 *           connect, read, write, ...) that a script task waits on, with
 *           its lazy start, its poll, an optional deadline and its cleanup
 * stream.c  the TCP stream and listener as a script holds them: one reader
 *           at a time, writers queued in order, TCP_NODELAY on
 * root.c    the root future of a script's block_on: the main work, SIGINT
 *
 * A binding keeps what is its own: turning values into Python or Lua
 * objects, cancellation, and what joining a task means.
 *
 * Threads: an op is polled by its task, on whatever thread runs the task,
 * without the script's lock (GIL, lua_State); it is made and cleared by
 * the binding under that lock. A stream's flags are read and written only
 * under the binding's lock too. */
#ifndef TBIND_H
#define TBIND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "treadle.h"

/* What a read op reads at most into the thread's own buffer; a longer
 * read gets a heap buffer of its own. */
#define TB_READ_CHUNK 65536

/* --------------------------------------------------------------- streams */

/* A TCP stream as a script holds it. */
typedef struct tb_stream_s {
  treadle_tcp_stream_t *s;     /* NULL once freed */
  treadle_tls_t *tls;          /* set by tb_stream_start_tls: it owns s, and
                                  reads and writes go through it */
  treadle_mutex_t *write_lock; /* writers queue on it, first come first */
  bool reading;                /* a read op is in flight */
  bool closed;                 /* closed on this side: new ops fail */
} tb_stream_t;

/* Wraps a new stream (takes ownership of s, also on failure): turns
 * TCP_NODELAY on, as asyncio, Go and OpenResty do. 0 or TREADLE_ENOMEM. */
treadle_err_t tb_stream_init(tb_stream_t *st, treadle_tcp_stream_t *s);
/* Closes the socket: ops waiting on it end with TREADLE_ECLOSED and new
 * ones fail at once with it. Idempotent. */
void tb_stream_close(tb_stream_t *st);
/* Closes and frees what it holds (no op may use it). Idempotent. */
void tb_stream_free(tb_stream_t *st);
/* Puts a TLS stream of `c` over the connection (a client one verifying
 * `server_name`, which may be NULL when c does not verify; or a server
 * one): from then on read and write ops go through it, once the caller
 * ran treadle_tls_handshake_poll on st->tls to completion. No op may be
 * in flight. TREADLE_ECLOSED, TREADLE_EINVAL, TREADLE_ENOMEM,
 * TREADLE_ENOTLS (treadle_tls_client_new). */
treadle_err_t tb_stream_start_tls(tb_stream_t *st, treadle_tls_config_t *c,
                                  bool server, const char *server_name);

/* A TCP listener as a script holds it. */
typedef struct tb_listener_s {
  treadle_tcp_listener_t *l; /* NULL once freed */
  bool accepting;            /* an accept op is in flight */
  bool closed;
} tb_listener_t;

void tb_listener_init(tb_listener_t *ls, treadle_tcp_listener_t *l);
void tb_listener_close(tb_listener_t *ls);
void tb_listener_free(tb_listener_t *ls);

/* ------------------------------------------------------------------- ops */

typedef enum {
  TB_NONE,      /* nothing to wait for: ready at once */
  TB_YIELD,     /* ready after one turn behind the other ready tasks */
  TB_SLEEP,
  TB_SIGNAL,
  TB_JOIN,      /* a C join handle: a task or a blocking job */
  TB_WAIT,      /* a binding's own poll function (a Lua join, a channel) */
  TB_ACCEPT,
  TB_CONNECT,
  TB_READ,      /* up to `want` bytes into the op's buffer */
  TB_READ_INTO, /* up to `len` bytes into the caller's buffer */
  TB_WRITE,     /* all of a buffer, after the writers queued before it;
                   or, made by tb_op_shutdown, the write side's end */
  TB_FD_READ,   /* an async fd (or a plain read of an fd epoll refuses) */
  TB_FD_READABLE, /* until an async fd has input, which it leaves unread */
} tb_kind_t;

/* A binding's own leaf: READY sets *err (0 or a TREADLE_E* code). */
typedef treadle_poll_t (*tb_wait_fn)(void *ud, treadle_cx_t *cx,
                                     treadle_err_t *err);

typedef struct tb_op_s {
  tb_kind_t kind;
  bool started;      /* the leaf was set up (at the first poll) */
  bool ready;        /* polled READY: the outcome below is final */
  bool timed_out;    /* the deadline came first (err: TREADLE_ETIMEDOUT) */
  bool has_deadline, deadline_armed;
  treadle_err_t err; /* the outcome */
  uint64_t deadline_ns;     /* relative, armed at the first poll */
  treadle_sleep_t deadline; /* armed once started */
  union {
    struct { uint64_t ns; treadle_sleep_t s; } sleep;
    struct { int signum; treadle_signal_t s; } signal;
    struct { treadle_join_t *j; treadle_err_t status; void *value; } join;
    struct { tb_wait_fn poll; void (*clear)(void *ud); void *ud; } wait;
    struct { tb_listener_t *ls; treadle_tcp_stream_t *out;
             struct sockaddr_storage peer; } accept;
    struct { char *host; int port; treadle_tcp_connect_t c;
             treadle_tcp_stream_t *out; } connect;
    struct { tb_stream_t *st; size_t want, got; char *heap; } read;
    struct { tb_stream_t *st; char *buf; size_t len, got; } read_into;
    struct { tb_stream_t *st; const char *buf; size_t len, done;
             bool locked, queued, shutdown; treadle_waiter_t w; } write;
    struct { treadle_async_fd_t *afd; int fd; size_t want, got;
             char *heap; } fd_read;
    struct { treadle_async_fd_t *afd; } fd_readable;
  } u;
} tb_op_t;

/* Set once a signal op for SIGINT was made: a task handles Ctrl-C itself,
 * so block_on leaves it alone from then on (as Tokio's ctrl_c does). */
extern atomic_bool tb_sigint_taken;

/* Making an op: `op` is zeroed first. The ones that return an error leave
 * a TB_NONE op behind and need no clear. */
void tb_op_none(tb_op_t *op);
void tb_op_yield(tb_op_t *op);
void tb_op_sleep(tb_op_t *op, uint64_t ns);
/* TREADLE_EINVAL for a signal no task may wait for. */
treadle_err_t tb_op_signal(tb_op_t *op, int signum);
/* j is borrowed: the binding keeps it. READY leaves the task's status and
 * value in u.join (the binding owns the value). */
void tb_op_join(tb_op_t *op, treadle_join_t *j);
/* `clear` (may be NULL) runs at tb_op_clear, under the binding's lock. */
void tb_op_wait(tb_op_t *op, tb_wait_fn poll, void (*clear)(void *ud),
                void *ud);
/* TREADLE_ECLOSED once closed, TREADLE_EBUSY while another task accepts. */
treadle_err_t tb_op_accept(tb_op_t *op, tb_listener_t *ls);
/* Copies host: TREADLE_ENOMEM. */
treadle_err_t tb_op_connect(tb_op_t *op, const char *host, int port);
/* TREADLE_ECLOSED once closed (before EBUSY: a closed stream says so
 * whoever else reads it), TREADLE_EBUSY while another task reads. */
treadle_err_t tb_op_read(tb_op_t *op, tb_stream_t *st, size_t want);
treadle_err_t tb_op_read_into(tb_op_t *op, tb_stream_t *st, void *buf,
                              size_t len);
/* buf must stay valid and unchanged until the op is cleared.
 * TREADLE_ECLOSED once closed. */
treadle_err_t tb_op_write(tb_op_t *op, tb_stream_t *st, const void *buf,
                          size_t len);
/* Ends the write side once the writers queued before it are done: over TLS
 * close_notify then the socket's shutdown, else the socket's shutdown.
 * TREADLE_ECLOSED once closed. */
treadle_err_t tb_op_shutdown(tb_op_t *op, tb_stream_t *st);
/* afd, or when it is NULL plain read(2)s of fd (never waiting). */
void tb_op_fd_read(tb_op_t *op, treadle_async_fd_t *afd, int fd, size_t want);
/* Waits until afd has input that a read would return at once (or its end,
 * or an error), and reads nothing: for a caller that reads the fd by its
 * own means (readline reads the terminal itself). READY is confirmed by
 * poll(2), so that even a blocking read of the same file does not block.
 * afd NULL: ready at once. */
void tb_op_fd_readable(tb_op_t *op, treadle_async_fd_t *afd);
/* Ends the op with TREADLE_ETIMEDOUT (timed_out set) if it is not ready
 * `ns` after its first poll; TREADLE_FOREVER: no deadline. */
void tb_op_set_deadline(tb_op_t *op, uint64_t ns);

/* Polls the op (no script lock): PENDING with the task's waker stored, or
 * READY with the outcome in err and u. Polling a ready op is READY. */
treadle_poll_t tb_op_poll(tb_op_t *op, treadle_cx_t *cx);
/* A ready read's bytes (u.read.got of them). Valid until the op is
 * cleared, or until another read polls on this thread unless kept. */
const char *tb_op_bytes(const tb_op_t *op);
/* Moves a ready read's bytes off the thread's buffer, for a binding that
 * finishes the op on another thread. TREADLE_ENOMEM fails the read. */
void tb_op_keep(tb_op_t *op);
/* A ready accept's or connect's stream, handed over (NULL after). */
treadle_tcp_stream_t *tb_op_take_stream(tb_op_t *op);
/* Releases what the op holds and leaves it TB_NONE (idempotent; under
 * the binding's lock: it may run a TB_WAIT clear). */
void tb_op_clear(tb_op_t *op);

/* ------------------------------------------------------------------ root */

/* What ended a wait of tb_root_poll. */
typedef enum {
  TB_ROOT_DONE,   /* main_poll said READY */
  TB_ROOT_SIGINT, /* a SIGINT was delivered */
  TB_ROOT_TICK,   /* 50 ms passed on a runtime that cannot watch signals */
  TB_ROOT_WAKE,   /* a byte on the wake fd (drained) */
} tb_root_event_t;

/* The root future of a binding's block_on: waits for the main work and,
 * when `watch` is set, for SIGINT; where signals cannot be watched (no
 * enable_io) and `tick` is set it wakes every 50 ms instead, so that the
 * caller may look for signals itself. A `wake` fd (the read end of a
 * pipe, e.g. Python's signal wakeup fd; the caller's, NULL: none) ends
 * the wait when a byte arrives. */
typedef struct tb_root_s {
  treadle_poll_t (*main_poll)(void *ud, treadle_cx_t *cx);
  void *ud;
  bool watch, tick;
  treadle_async_fd_t *wake;
  /* Private. */
  bool sig_armed, tick_armed;
  bool unwatched; /* neither signals nor ticks can be had: main only */
  treadle_signal_t sig;
  treadle_sleep_t tick_sleep;
} tb_root_t;

treadle_poll_t tb_root_poll(tb_root_t *r, treadle_cx_t *cx,
                            tb_root_event_t *ev);
void tb_root_drop(tb_root_t *r);
/* A task around a tb_root_t state, for treadle_runtime_block_on: its
 * output is TB_ROOT_DONE_OUT when the main work finished, TB_ROOT_WAKE_OUT
 * when the wake fd ended the wait, NULL when a SIGINT or a tick did. */
extern const treadle_task_vtable_t tb_root_vt;
#define TB_ROOT_DONE_OUT ((void *)1)
#define TB_ROOT_WAKE_OUT ((void *)2)
/* A wake fd for tb_root_t: registers a dup of `fd` (the caller's stays
 * its own) with the runtime of `h`. *out is NULL for fd < 0. Free it with
 * treadle_async_fd_free after the block_on that polled it. */
treadle_err_t tb_root_wake_open(treadle_handle_t *h, int fd,
                                treadle_async_fd_t **out);

#endif /* TBIND_H */
