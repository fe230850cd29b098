/* Scenarios shared by the allocation sweep and the system-call fault
 * tests (scenario_util.c). Each builds nothing: it runs on `rt` (every
 * driver enabled) and returns 0, or the first error its task met. */
#ifndef TREADLE_TEST_SCENARIO_UTIL_H
#define TREADLE_TEST_SCENARIO_UTIL_H

#include "harness.h"

/* A byte was lost, added or changed on its way: never a valid outcome. */
#define SCENARIO_LOST (-EBADMSG)

/* Spawns three tasks (one named) and joins them, checking their outputs. */
treadle_err_t scenario_spawn_join(treadle_runtime_t *rt);
/* Two sleeps, one reset to an earlier deadline. */
treadle_err_t scenario_timers(treadle_runtime_t *rt);
/* Two blocking-pool jobs, joined from a task. */
treadle_err_t scenario_blocking(treadle_runtime_t *rt);
/* Binds, connects and accepts; the client sends SCENARIO_TCP_LEN pattern
 * bytes and shuts down, the server echoes them, the client checks every
 * byte and the end of stream. */
#define SCENARIO_TCP_LEN 100000
treadle_err_t scenario_tcp(treadle_runtime_t *rt);
/* Binds a listener and connects SCENARIO_CLIENTS clients at once; each
 * accepted stream gets its client's one byte; all are checked. */
#define SCENARIO_CLIENTS 8
treadle_err_t scenario_accept_loop(treadle_runtime_t *rt);
/* Two UDP sockets: one datagram from one to the other. */
treadle_err_t scenario_udp(treadle_runtime_t *rt);
/* sh -c 'echo hi' with stdout piped: reads "hi\n" to its end, waits for
 * exit 0. */
treadle_err_t scenario_process(treadle_runtime_t *rt);
/* Looks "localhost" up. */
treadle_err_t scenario_dns(treadle_runtime_t *rt);
/* TLS over loopback, both ends in one task: a server configuration with
 * scenario_tls_cert/key, a client one trusting scenario_tls_ca (set these
 * first: tls_certs.h makes the files), the handshake, "ping" to the server
 * and "pong" back, close_notify both ways and each end read. Without TLS
 * in the build: TREADLE_ENOTLS. */
extern const char *scenario_tls_ca, *scenario_tls_cert, *scenario_tls_key;
treadle_err_t scenario_tls(treadle_runtime_t *rt);

#endif
