/* What the TCP tests (test-tcp-*.c) share: listeners and connected pairs,
 * plain blocking peers, one-leaf tasks (connect, accept, connect and
 * accept at once, join all), and the echo server and clients that check
 * every byte. Names are the test files' own; nothing here is public. */
#ifndef TREADLE_TEST_NET_UTIL_H
#define TREADLE_TEST_NET_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "harness.h"

/* A check in a plain (non-test) thread: abort with the line. */
#define PLAIN_CHECK(c)                                                         \
  do {                                                                         \
    if (!(c)) {                                                                \
      fprintf(stderr, "%s:%d: %s (errno %d)\n", __FILE__, __LINE__, #c,        \
              errno);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* ------------------------------------------------------------ sockets */

/* The port of an address. */
int addr_port(const struct sockaddr_storage *a);
/* A listener on host, port 0; *port is the port it got. */
treadle_tcp_listener_t *listen_on(treadle_handle_t *h, const char *host,
                                  int *port);
/* A plain blocking socket connected to 127.0.0.1:port (with SO_RCVBUF
 * rcvbuf if > 0). */
int plain_connect(int port, int rcvbuf);
/* write(2) until all of buf is written (a plain thread's PLAIN_CHECK). */
void write_full(int fd, const void *buf, size_t len);
/* Byte i of the message of connection `id`. */
uint8_t pattern(unsigned id, size_t i);

/* -------------------------------------------------------------- tasks */

/* Joins every handle in `joins` (and detaches it), keeping each status
 * and, if values is not NULL, each output. */
void join_all(treadle_runtime_t *rt, treadle_join_t **joins,
              treadle_err_t *status, void **values, size_t n);

/* Connects a client to host:port and accepts it on `l` in one task (both
 * leaves polled by the same state machine). */
typedef struct {
  treadle_tcp_stream_t *client, *server;
  struct sockaddr_storage accept_peer;
} pair_out_t;

void make_pair(treadle_runtime_t *rt, treadle_tcp_listener_t *l,
               const char *host, int port, pair_out_t *out);

/* Connects; output: the status, and the stream (or NULL). */
typedef struct {
  const char *host;
  int port;
  treadle_tcp_connect_t conn;
  bool started;
} connect_task_t;

extern const treadle_task_vtable_t connect_task_vt;
/* A connect_task_vt task run on rt: its status, the stream in *out. */
treadle_err_t connect_to(treadle_runtime_t *rt, const char *host, int port,
                         treadle_tcp_stream_t **out);
/* drop_output for a task whose output is a stream. */
void stream_drop_output(void *v);

/* Accepts one connection on `l` in a task of rt; the stream. */
treadle_tcp_stream_t *accept_one(treadle_runtime_t *rt,
                                 treadle_tcp_listener_t *l);
/* A plain blocking socket (*fd, with SO_RCVBUF rcvbuf if > 0) connected to
 * the returned treadle stream. */
treadle_tcp_stream_t *plain_pair(treadle_runtime_t *rt, int rcvbuf, int *fd);

/* --------------------------------------------------------------- echo */

/* Echoes what it reads until end of stream, with write_poll (partial
 * writes), then closes. Output: its status, and the bytes echoed. */
typedef struct {
  treadle_tcp_stream_t *s;
  size_t have, sent;
  uint64_t total;
  uint8_t buf[16384];
} echo_t;

extern const treadle_task_vtable_t echo_vt;

/* Runs the echo of n connections on `rt` (which stays up): a server task
 * accepts them, an echo task each; client i sends sizes[i % nsizes]
 * pattern bytes (with writev in pieces when writev_all, or every other
 * round of sizes) and checks every byte that comes back. */
void echo_run_on(treadle_runtime_t *rt, const char *host, size_t n,
                 const size_t *sizes, size_t nsizes, bool writev_all);

/* Echoes `len` pattern bytes through a connected pair of streams of any
 * kind (TCP, Unix): an echo task on `server`, and a client task on
 * `client` that writes them (with writev in pieces when use_writev),
 * shuts its write side down, and checks every byte that comes back until
 * end of stream. Takes both streams. */
void echo_pair(treadle_runtime_t *rt, treadle_stream_t *client,
               treadle_stream_t *server, size_t len, bool use_writev);

#endif
