/* tls_echo_epoll: the TLS echo server that bench/tls_compare.py holds
 * treadle's examples/c/tls_echo_server against (bench/README.md "TLS
 * echo"): OpenSSL on bare epoll, one thread, non-blocking sockets, no
 * runtime.
 *
 *     tls_echo_epoll CERT KEY [PORT]
 *
 * Listens on 127.0.0.1:PORT (0, the default: any; printed as "listening
 * on 127.0.0.1:PORT") with the certificate chain CERT and the key KEY
 * (PEM), the same protocol settings as treadle's configurations (TLS 1.2
 * and up, no renegotiation) and echoes every connection's plaintext.
 *
 * It is written to be hard to beat on system calls: level-triggered
 * epoll, OpenSSL reading the socket itself with read-ahead (one read(2)
 * brings a whole record or more), and after each echo it goes back to
 * epoll_wait unless OpenSSL still holds bytes (SSL_has_pending), which
 * saves the read that would only say EAGAIN; a write the socket does not
 * take stops the reading until EPOLLOUT lets it finish. Each connection is
 * served until its close_notify (answered) or its end; SIGINT or SIGTERM
 * stops the server. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
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
#include <sys/socket.h>
#include <unistd.h>

#define BUF_LEN 16384

typedef struct {
  int fd;
  SSL *ssl;
  bool open;       /* the handshake is done */
  size_t pend_len; /* plaintext read and not yet written (buf) */
  uint8_t buf[BUF_LEN];
} conn_t;

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static void conn_close(conn_t *c, int ep) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  SSL_free(c->ssl);
  close(c->fd);
  free(c);
  ERR_clear_error();
}

static void want(conn_t *c, int ep, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Writes the pending plaintext: true once all of it went, false when the
 * socket is full (EPOLLOUT is then awaited) or the connection failed (it
 * is closed and freed then). */
static bool flush(conn_t *c, int ep) {
  size_t n;
  int r = SSL_write_ex(c->ssl, c->buf, c->pend_len, &n);
  if (r == 1) {
    c->pend_len = 0;
    return true;
  }
  if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE) {
    want(c, ep, EPOLLOUT);
    return false;
  }
  conn_close(c, ep);
  return false;
}

/* Everything that can be done for c now. */
static void serve(conn_t *c, int ep) {
  if (!c->open) {
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ)
        want(c, ep, EPOLLIN);
      else if (e == SSL_ERROR_WANT_WRITE)
        want(c, ep, EPOLLOUT);
      else
        conn_close(c, ep);
      return;
    }
    c->open = true;
    want(c, ep, EPOLLIN);
  }
  if (c->pend_len > 0) { /* EPOLLOUT: finish the write, then read again */
    if (!flush(c, ep))
      return;
    want(c, ep, EPOLLIN);
  }
  for (;;) {
    size_t n;
    int r = SSL_read_ex(c->ssl, c->buf, sizeof c->buf, &n);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ)
        return;
      if (e == SSL_ERROR_ZERO_RETURN) /* close_notify: answer it */
        SSL_shutdown(c->ssl);
      conn_close(c, ep);
      return;
    }
    c->pend_len = n;
    if (!flush(c, ep))
      return;
    if (!SSL_has_pending(c->ssl))
      return; /* level-triggered: epoll says when more comes */
  }
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s CERT KEY [PORT]\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL || !SSL_CTX_use_certificate_chain_file(ctx, argv[1]) ||
      !SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM)) {
    fprintf(stderr, "tls_echo_epoll: certificate: %s\n",
            ERR_reason_error_string(ERR_peek_last_error()));
    return 1;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(ctx, 1);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons(argc > 3 ? atoi(argv[3]) : 0)};
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  socklen_t alen = sizeof addr;
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(lfd, 1024) != 0 ||
      getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
    perror("tls_echo_epoll: listen");
    return 1;
  }
  printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
  fflush(stdout);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
  struct epoll_event evs[256];
  while (!stop) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c != NULL) {
        serve(c, ep);
        continue;
      }
      int fd;
      while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >=
             0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = calloc(1, sizeof *c);
        SSL *ssl = c != NULL ? SSL_new(ctx) : NULL;
        if (ssl == NULL) {
          free(c);
          close(fd);
          continue;
        }
        c->fd = fd;
        c->ssl = ssl;
        SSL_set_fd(ssl, fd);
        SSL_set_accept_state(ssl);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
      }
    }
  }
  printf("bye\n");
  close(ep);
  close(lfd);
  SSL_CTX_free(ctx);
  return 0;
}
