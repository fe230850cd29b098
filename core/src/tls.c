/* TLS over any stream, with OpenSSL 3 (ARCHITECTURE.md "TLS").
 *
 * OpenSSL never sees a socket. Its BIOs (a custom method, `bio_*` below,
 * one BIO each way so that each keeps its own retry flags) are two byte
 * buffers of the TLS stream: `in`, ciphertext read from the stream and not
 * yet taken by OpenSSL, and `out`, ciphertext OpenSSL wrote and the stream
 * has not yet sent. The leaves move bytes between
 * those buffers and the stream with the stream's own leaves
 * (treadle_stream_read_poll fills `in`, treadle_stream_write_poll drains
 * `out`), so every system call, wake-up, readiness edge, coop budget,
 * ECLOSED and EFOREIGN rule is the stream's. A BIO read of an empty `in`
 * says "retry" (SSL_ERROR_WANT_READ); a BIO write always succeeds, since
 * `out` grows, so OpenSSL never waits to write. `in` holds one whole
 * record, and OpenSSL (reading ahead) takes all of it at once; `out`
 * grows to the largest flight written (a write's chunk of 64
 * KiB, plus a little) and keeps its size, so the steady state allocates
 * nothing beyond what OpenSSL does.
 *
 * Locking. An SSL object is used by one thread at a time, and a TLS
 * stream has one reading and one writing task, maybe on two workers: every
 * SSL call, every look at the buffers and every poll of the stream's
 * leaves happens under `mu`, a plain mutex that is never held while
 * waiting (the leaves do not block) and never while waking a task.
 *
 * The stream keeps one waker per direction (its registration's reader and
 * writer slots), and a poll that returns PENDING replaces the waker in the
 * slot it waited on. Each direction therefore has one side that owns it:
 * the read side (treadle_tls_read_poll) owns the stream's read slot, the
 * write side (write, write_all, shutdown) its write slot. A side that
 * needs the other direction borrows it by these rules (all under mu):
 *
 * 1. Handshake. One task polls it and nothing else runs (reads and writes
 *    answer ENOTCONN until it is done), so it uses both directions
 *    freely: run SSL_do_handshake, send all of `out`, and when OpenSSL
 *    wants to read, fill `in` once and run it again. The last flight
 *    (client Finished; the server's tickets) is sent before READY. On a
 *    failure the alert OpenSSL wrote is sent first, so that the peer
 *    learns why.
 * 2. Read. SSL_read first, so that data already decrypted, or already in
 *    `in`, is returned without waiting (skipped when `in` is empty and
 *    OpenSSL holds nothing: it could only want more). When it wants more: if
 * OpenSSL wrote something meanwhile (a TLS 1.3 KeyUpdate answer, an alert, a
 *    renegotiation message), send it (a read that must write), unless
 *    the write side is parked on the write slot (`w_parked_out`): that
 *    side sends all of `out` before it returns, and polling the slot would
 *    take its waker away. The read side does not wait for that send: if
 *    the socket is full its waker sits in the write slot too and the next
 *    read goes on with it (one try per call). A send that fails drops
 *    `out`, and so does everything after close_notify: the write side
 *    meets the error itself. Then it fills `in` from the stream
 *    (`r_parked_in` while PENDING).
 * 3. Write. Send all of `out` first (`w_parked_out` while PENDING: the
 *    read side then leaves `out` to us), then SSL_write one chunk, then
 *    send it; READY reports the chunk only once all of its ciphertext is
 *    in the socket, so that nothing a caller wrote is left in a buffer
 *    while it waits for an answer. The bytes SSL_write took and that were
 *    not yet reported (`w_taken`) are reported by the next poll, which
 *    must pass the same bytes.
 * 4. A write that must read (SSL_write wants to read: a renegotiation in
 *    progress). If the read side is parked on the read slot, the write
 *    side stores its waker in `w_wait_in` and returns PENDING; else it
 *    fills `in` itself, its waker stored in `w_wait_in` all the same,
 *    since a read that starts meanwhile takes the read slot.
 *    The read side wakes `w_wait_in` after every fill of `in` and when it
 *    returns READY, so the writer retries SSL_write, or fills `in` itself
 *    once the reader is gone. Close wakes it too. (treadle refuses
 *    renegotiation, SSL_OP_NO_RENEGOTIATION, and TLS 1.3 has none, so
 *    this step only serves a program that turns it on; OpenSSL then takes
 *    application data in the middle of a renegotiation only in SSL_read,
 *    so a writer that reads for itself copes only while the peer sends
 *    none.)
 * 5. Shutdown is a write: SSL_shutdown writes close_notify into `out`,
 *    which is sent as in step 3; then the stream's write side is shut
 *    down. Writes after it answer EPIPE.
 * 6. A fatal error (OpenSSL's SSL_ERROR_SSL, a closed connection during
 *    the handshake or without close_notify) is written once: the code,
 *    the message and the phase FAILED, published with a release store of
 *    `phase`. The getters read the phase with an acquire load and need no
 *    lock: what they return was written before OPEN or FAILED and never
 *    changes after.
 *
 * A side whose task gives up while parked (a cancelled task, a timeout)
 * leaves its flag set, and the other side waits for what only that
 * side's next call does (a read that defers a send, a write that waits
 * for a read): give up on a TLS stream by closing it.
 *
 * OpenSSL's error queue is per thread: it is cleared before each SSL call
 * and read right after it, on the same thread. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net.h"
#include "tls.h"

#ifdef TREADLE_HAVE_OPENSSL

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Room for one whole TLS 1.3 record and its header (2^14 + 256 bytes of
 * ciphertext, RFC 8446), so that one read of the stream can bring one;
 * OpenSSL takes what it needs from it piece by piece. */
#define IN_CAP 16896
/* The most plaintext one write encrypts: four full records. */
#define WRITE_CHUNK (4 * 16384)
#define MSG_LEN 256

struct treadle_tls_config_s {
  _Atomic uint32_t refs;
  _Atomic bool frozen; /* a TLS stream was made from it: setters refuse */
  bool server;         /* constant */
  /* Set by the setters before the configuration is frozen; read after. */
  bool verify;
  SSL_CTX *ctx;
  unsigned char *alpn; /* a server's list in wire form (length-prefixed) */
  size_t alpn_len;
  char errmsg[MSG_LEN]; /* why the last setter failed */
};

enum { HANDSHAKE, OPEN, FAILED };
/* Where the handshake is between polls (step 1). */
enum { HS_RUN, HS_NEED_IN, HS_DONE, HS_FAILING };

struct treadle_tls_s {
  /* Constant after new. */
  treadle_tls_config_t *cfg; /* holds a reference */
  treadle_stream_t *stream;  /* owned */
  bool server;
  char name[256]; /* a client's server name, "" for none */
  treadle__os_mutex_t mu;

  /* Written under mu before the release store of OPEN or FAILED to phase,
   * then constant (step 6). */
  _Atomic int phase;   /* HANDSHAKE, OPEN, FAILED */
  treadle_err_t fatal; /* FAILED's code */
  int version;
  long verify;
  char alpn[256]; /* "" for none */
  char sni[256];  /* a server's: the name the client sent, "" for none */
  char errmsg[MSG_LEN];

  /* Guarded by mu. */
  SSL *ssl;
  int hs;               /* HS_*: the handshake's place */
  treadle_err_t hs_err; /* HS_FAILING: the error to report */
  uint8_t *out;         /* ciphertext to send: [out_start, out_end) */
  size_t out_start, out_end, out_cap;
  bool out_nomem;       /* `out` could not grow: the SSL call fails ENOMEM */
  size_t in_start, in_end;    /* ciphertext not yet taken: in[in_start..] */
  bool in_eof;                /* the stream read the end: the BIO reports it */
  bool r_parked_in;           /* the read side waits on the read slot */
  bool w_parked_out;          /* the write side waits on the write slot */
  treadle_waker_t *w_wait_in; /* the write side, waiting for `in` */
  size_t w_taken;             /* plaintext SSL_write took, not yet reported */
  bool sent_close_notify;
  bool shut_wr;
  /* A client's newest session from the server (new_session), kept here
   * until treadle_tls_session makes the holder, then kept there. */
  SSL_SESSION *latest;
  treadle_tls_session_t *holder; /* holds a reference */
  bool reused; /* written before OPEN (step 6): the handshake resumed */
  uint8_t in[IN_CAP];
};

/* A client's session, shared by the connection it came from (which puts
 * each newer one in) and whoever resumes it. */
struct treadle_tls_session_s {
  _Atomic uint32_t refs;
  treadle_tls_config_t *cfg; /* the connection's: holds a reference */
  char name[256];            /* the connection's server name, "" for none */
  treadle__os_mutex_t mu;
  SSL_SESSION *sess; /* guarded by mu; NULL until the server gave one */
};

/* ------------------------------------------------------------ messages */

/* OpenSSL's reason for the last error on this thread's queue ("tlsv1
 * alert unknown ca"), or `fallback`; clears the queue. */
static void take_ssl_error(char *msg, size_t len, const char *prefix,
                           const char *fallback) {
  unsigned long e, last = 0;
  while ((e = ERR_get_error()) != 0)
    last = e;
  const char *reason = last != 0 ? ERR_reason_error_string(last) : NULL;
  char code[64];
  if (last != 0 && reason == NULL) {
    ERR_error_string_n(last, code, sizeof code);
    reason = code;
  }
  snprintf(msg, len, "%s%s", prefix, reason != NULL ? reason : fallback);
}

/* Empties this thread's error queue before an SSL call, so that
 * SSL_get_error is not misled by an error someone else left there (it
 * looks at the queue before anything else, even for a call that only ran
 * out of bytes or met close_notify, which add nothing to it).
 * ERR_clear_error walks and frees every slot of the queue: peek first. */
static void clear_errors(void) {
  if (treadle__unlikely(ERR_peek_error() != 0))
    ERR_clear_error();
}

static treadle_err_t config_fail(treadle_tls_config_t *c, treadle_err_t err,
                                 const char *what) {
  take_ssl_error(c->errmsg, sizeof c->errmsg, what, "failed");
  return err;
}

/* -------------------------------------------------------- the BIO method */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static size_t out_len(const treadle_tls_t *t) {
  return t->out_end - t->out_start;
}

/* OpenSSL takes ciphertext from `in`; empty, it is told to retry, or the
 * end once the stream ended. */
static int bio_read(BIO *b, char *data, size_t len, size_t *got) {
  treadle_tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  size_t have = t->in_end - t->in_start;
  *got = 0;
  if (have == 0) {
    if (!t->in_eof)
      BIO_set_retry_read(b);
    return 0;
  }
  if (len > have)
    len = have;
  memcpy(data, t->in + t->in_start, len);
  t->in_start += len;
  if (t->in_start == t->in_end)
    t->in_start = t->in_end = 0;
  *got = len;
  return 1;
}

/* OpenSSL's ciphertext goes to the end of `out`, which grows (doubling)
 * when it must; the bytes already sent make room first. */
static int bio_write(BIO *b, const char *data, size_t len, size_t *put) {
  treadle_tls_t *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  *put = 0;
  if (t->out_cap - t->out_end < len && t->out_start > 0) {
    memmove(t->out, t->out + t->out_start, out_len(t));
    t->out_end -= t->out_start;
    t->out_start = 0;
  }
  if (t->out_cap - t->out_end < len) {
    size_t cap = t->out_cap != 0 ? t->out_cap : 4096;
    while (cap - t->out_end < len)
      cap *= 2;
    uint8_t *grown = treadle__malloc(cap);
    if (grown == NULL) {
      t->out_nomem = true; /* ssl_failed reports it as TREADLE_ENOMEM */
      return 0;            /* no retry: OpenSSL fails the call */
    }
    if (t->out_end > 0)
      memcpy(grown, t->out, t->out_end);
    treadle__free(t->out);
    t->out = grown;
    t->out_cap = cap;
  }
  memcpy(t->out + t->out_end, data, len);
  t->out_end += len;
  *put = len;
  return 1;
}

/* OpenSSL asks several of these a record (flush, kTLS): the common ones
 * answer without looking at the TLS stream. */
static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  treadle_tls_t *t;
  switch (cmd) {
  case BIO_CTRL_FLUSH: /* the leaves send `out` */
    return 1;
  case BIO_CTRL_PENDING:
    t = BIO_get_data(b);
    return (long)(t->in_end - t->in_start);
  case BIO_CTRL_WPENDING:
    t = BIO_get_data(b);
    return (long)out_len(t);
  case BIO_CTRL_EOF:
    t = BIO_get_data(b);
    return t->in_eof && t->in_end == t->in_start;
  default:
    return 0;
  }
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static void bio_method_init(void) {
  BIO_METHOD *m =
      BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "treadle");
  if (m != NULL && BIO_meth_set_read_ex(m, bio_read) &&
      BIO_meth_set_write_ex(m, bio_write) && BIO_meth_set_ctrl(m, bio_ctrl) &&
      BIO_meth_set_create(m, bio_create))
    bio_method = m;
  else
    BIO_meth_free(m);
}

/* Frees the BIO method when treadle is unloaded (a script binding's
 * dlclose) or the process ends: once the library's static pointer to it is
 * gone, leak checkers would count it lost. Plain memory, so freeing it
 * after OpenSSL's own exit cleanup is still safe. */
__attribute__((destructor)) static void bio_method_fini(void) {
  BIO_meth_free(bio_method);
  bio_method = NULL;
}

/* ------------------------------------------------------- configurations */

/* A server's ALPN choice: the first of its protocols the client offers.
 * A client that offers some, none of them ours, is refused
 * (no_application_protocol, RFC 7301). */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl;
  treadle_tls_config_t *c = arg;
  if (c->alpn_len == 0)
    return SSL_TLSEXT_ERR_NOACK;
  unsigned char *sel = NULL;
  unsigned char sel_len = 0;
  if (SSL_select_next_proto(&sel, &sel_len, c->alpn, (unsigned)c->alpn_len, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  *outlen = sel_len;
  return SSL_TLSEXT_ERR_OK;
}

static void apply_verify(treadle_tls_config_t *c) {
  int mode = SSL_VERIFY_NONE;
  if (c->verify)
    mode = c->server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                     : SSL_VERIFY_PEER;
  SSL_CTX_set_verify(c->ctx, mode, NULL);
}

/* Keeps `sess` (a reference) as client t's newest session, in place of the
 * one kept before. Under t's mu. */
static void keep_session(treadle_tls_t *t, SSL_SESSION *sess) {
  if (t->holder != NULL) {
    treadle__os_mutex_lock(&t->holder->mu);
    SSL_SESSION *old = t->holder->sess;
    t->holder->sess = sess;
    treadle__os_mutex_unlock(&t->holder->mu);
    SSL_SESSION_free(old);
  } else {
    SSL_SESSION_free(t->latest);
    t->latest = sess;
  }
}

/* A client's server gave a session: at the end of a full TLS 1.2
 * handshake, or in a TLS 1.3 ticket after any handshake (read by
 * SSL_read). Runs inside an SSL call, so under the TLS stream's mu.
 * Returns 1: the reference OpenSSL passed is ours. */
static int new_session(SSL *ssl, SSL_SESSION *sess) {
  keep_session(SSL_get_app_data(ssl), sess);
  return 1;
}

treadle_err_t treadle_tls_config_new(treadle_tls_role_t role,
                                     treadle_tls_config_t **out) {
  if (out != NULL)
    *out = NULL;
  if (out == NULL || (role != TREADLE_TLS_CLIENT && role != TREADLE_TLS_SERVER))
    return TREADLE_EINVAL;
  if (!OPENSSL_init_ssl(0, NULL))
    return TREADLE_ENOMEM;
  treadle_tls_config_t *c = treadle__calloc(1, sizeof *c);
  if (c == NULL)
    return TREADLE_ENOMEM;
  c->server = role == TREADLE_TLS_SERVER;
  ERR_clear_error();
  c->ctx = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
  if (c->ctx == NULL) {
    ERR_clear_error();
    treadle__free(c);
    return TREADLE_ENOMEM;
  }
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION);
  /* A retried write may come from a moved buffer (write_all's). */
  SSL_CTX_set_mode(c->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* OpenSSL takes all of `in` at once instead of a record's header, then
   * its body: fewer BIO calls, and `in` is empty whenever OpenSSL has the
   * bytes (SSL_has_pending then says so, read_step). */
  SSL_CTX_set_read_ahead(c->ctx, 1);
  if (c->server) {
    SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select, c);
    /* Sessions resume from the server's cache or its tickets (both on by
     * default); a server that verifies clients needs a context name. */
    SSL_CTX_set_session_id_context(c->ctx, (const unsigned char *)"treadle", 7);
  } else {
    /* Each session the server gives comes to new_session, not to a cache
     * of OpenSSL's: treadle_tls_session hands it on. */
    SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_CLIENT |
                                               SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ctx, new_session);
    c->verify = true;
    /* A machine without a system store still gets a configuration: its
     * handshakes then fail verification, which says why. */
    SSL_CTX_set_default_verify_paths(c->ctx);
    ERR_clear_error();
  }
  apply_verify(c);
  atomic_init(&c->refs, 1);
  atomic_init(&c->frozen, false);
  *out = c;
  return 0;
}

treadle_tls_config_t *treadle_tls_config_ref(treadle_tls_config_t *c) {
  /* Relaxed: taking a reference needs one already held. */
  if (c != NULL)
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

void treadle_tls_config_unref(treadle_tls_config_t *c) {
  /* acq_rel: whoever frees has seen every other holder's use. */
  if (c == NULL ||
      atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  SSL_CTX_free(c->ctx);
  treadle__free(c->alpn);
  treadle__free(c);
}

/* What every setter checks first. */
static treadle_err_t setter_start(treadle_tls_config_t *c) {
  if (c == NULL)
    return TREADLE_EINVAL;
  /* acquire: pairs with the release in tls_new (a misuse, but a seen
   * one). */
  if (atomic_load_explicit(&c->frozen, memory_order_acquire))
    return TREADLE_EBUSY;
  c->errmsg[0] = '\0';
  return 0;
}

/* -errno if `path` cannot be read (as a directory when dir). */
static treadle_err_t check_path(const char *path, bool dir) {
  struct stat st;
  if (stat(path, &st) != 0)
    return -errno;
  if (dir != S_ISDIR(st.st_mode))
    return dir ? -ENOTDIR : -EISDIR;
  return access(path, dir ? R_OK | X_OK : R_OK) == 0 ? 0 : -errno;
}

treadle_err_t treadle_tls_config_set_verify(treadle_tls_config_t *c, bool on) {
  treadle_err_t err = setter_start(c);
  if (err != 0)
    return err;
  c->verify = on;
  apply_verify(c);
  return 0;
}

treadle_err_t treadle_tls_config_set_ca(treadle_tls_config_t *c,
                                        const char *file, const char *dir) {
  treadle_err_t err = setter_start(c);
  if (err != 0)
    return err;
  if (file == NULL && dir == NULL)
    return TREADLE_EINVAL;
  const char *bad = NULL;
  if (file != NULL && (err = check_path(file, false)) != 0)
    bad = file;
  else if (dir != NULL && (err = check_path(dir, true)) != 0)
    bad = dir;
  if (bad != NULL) {
    snprintf(c->errmsg, sizeof c->errmsg, "%s: %s", bad, treadle_strerror(err));
    return err;
  }
  ERR_clear_error();
  X509_STORE *store = X509_STORE_new();
  if (store == NULL)
    return config_fail(c, TREADLE_ENOMEM, "");
  if ((file != NULL && !X509_STORE_load_file(store, file)) ||
      (dir != NULL && !X509_STORE_load_path(store, dir))) {
    X509_STORE_free(store);
    return config_fail(c, TREADLE_ETLS, "cannot load the CA certificates: ");
  }
  SSL_CTX_set_cert_store(c->ctx, store); /* frees the old one */
  return 0;
}

/* Reads a certificate chain (PEM: the leaf, then its issuers). */
static treadle_err_t read_chain(treadle_tls_config_t *c, const char *file,
                                X509 **leaf, STACK_OF(X509) * *chain) {
  BIO *b = BIO_new_file(file, "r");
  if (b == NULL)
    return config_fail(c, TREADLE_ETLS, "cannot open the certificate: ");
  *leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
  *chain = sk_X509_new_null();
  treadle_err_t err = 0;
  if (*leaf == NULL) {
    err = config_fail(c, TREADLE_ETLS, "no certificate in the chain file: ");
  } else if (*chain == NULL) {
    err = config_fail(c, TREADLE_ENOMEM, "");
  } else {
    X509 *x;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
      if (!sk_X509_push(*chain, x)) {
        X509_free(x);
        err = config_fail(c, TREADLE_ENOMEM, "");
        break;
      }
    }
    /* The loop ends at the file's end: PEM_R_NO_START_LINE. */
    unsigned long e = ERR_peek_last_error();
    if (err == 0 && e != 0 &&
        !(ERR_GET_LIB(e) == ERR_LIB_PEM &&
          ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
      err = config_fail(c, TREADLE_ETLS, "bad certificate in the chain: ");
    ERR_clear_error();
  }
  BIO_free(b);
  if (err != 0) {
    X509_free(*leaf);
    sk_X509_pop_free(*chain, X509_free);
    *leaf = NULL;
    *chain = NULL;
  }
  return err;
}

treadle_err_t treadle_tls_config_set_cert(treadle_tls_config_t *c,
                                          const char *chain_file,
                                          const char *key_file) {
  treadle_err_t err = setter_start(c);
  if (err != 0)
    return err;
  if (chain_file == NULL || key_file == NULL)
    return TREADLE_EINVAL;
  const char *bad = NULL;
  if ((err = check_path(chain_file, false)) != 0)
    bad = chain_file;
  else if ((err = check_path(key_file, false)) != 0)
    bad = key_file;
  if (bad != NULL) {
    snprintf(c->errmsg, sizeof c->errmsg, "%s: %s", bad, treadle_strerror(err));
    return err;
  }
  ERR_clear_error();
  X509 *leaf;
  STACK_OF(X509) * chain;
  if ((err = read_chain(c, chain_file, &leaf, &chain)) != 0)
    return err;
  EVP_PKEY *key = NULL;
  BIO *b = BIO_new_file(key_file, "r");
  if (b != NULL)
    key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
  BIO_free(b);
  if (key == NULL) {
    err = config_fail(c, TREADLE_ETLS, "no private key in the key file: ");
  } else if (!X509_check_private_key(leaf, key)) {
    ERR_clear_error();
    snprintf(c->errmsg, sizeof c->errmsg,
             "the private key does not match the certificate");
    err = TREADLE_ETLS;
  } else if (!SSL_CTX_use_cert_and_key(c->ctx, leaf, key, chain, 1)) {
    err = config_fail(c, TREADLE_ETLS, "cannot use the certificate: ");
  }
  EVP_PKEY_free(key);
  X509_free(leaf);
  sk_X509_pop_free(chain, X509_free);
  return err;
}

treadle_err_t treadle_tls_config_set_alpn(treadle_tls_config_t *c,
                                          const char *const *protos,
                                          size_t count) {
  treadle_err_t err = setter_start(c);
  if (err != 0)
    return err;
  if (protos == NULL && count > 0)
    return TREADLE_EINVAL;
  size_t total = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n = protos[i] != NULL ? strlen(protos[i]) : 0;
    if (n == 0 || n > 255 || total + 1 + n > 65535)
      return TREADLE_EINVAL;
    total += 1 + n;
  }
  unsigned char *wire = NULL;
  if (total > 0 && (wire = treadle__malloc(total)) == NULL)
    return TREADLE_ENOMEM;
  size_t at = 0;
  for (size_t i = 0; i < count; i++) {
    size_t n = strlen(protos[i]);
    wire[at++] = (unsigned char)n;
    memcpy(wire + at, protos[i], n);
    at += n;
  }
  /* SSL_CTX_set_alpn_protos answers 0 on success. */
  if (!c->server && SSL_CTX_set_alpn_protos(c->ctx, wire, (unsigned)total)) {
    treadle__free(wire);
    return config_fail(c, TREADLE_ENOMEM, "");
  }
  treadle__free(c->alpn);
  c->alpn = wire;
  c->alpn_len = total;
  return 0;
}

treadle_err_t treadle_tls_config_set_min_version(treadle_tls_config_t *c,
                                                 int version) {
  treadle_err_t err = setter_start(c);
  if (err != 0)
    return err;
  if (version != TREADLE_TLS_VERSION_1_2 && version != TREADLE_TLS_VERSION_1_3)
    return TREADLE_EINVAL;
  SSL_CTX_set_min_proto_version(c->ctx, version);
  return 0;
}

const char *treadle_tls_config_error_message(const treadle_tls_config_t *c) {
  return c != NULL ? c->errmsg : "";
}

/* ----------------------------------------------------------- TLS streams */

static bool stream_closed(treadle_stream_t *s) {
  /* acquire: pairs with close's release, as treadle__source_enter. */
  return atomic_load_explicit(&s->src.users, memory_order_acquire) &
         TREADLE__SRC_CLOSED;
}

static bool is_ip(const char *name) {
  unsigned char addr[16];
  return inet_pton(AF_INET, name, addr) == 1 ||
         inet_pton(AF_INET6, name, addr) == 1;
}

static treadle_err_t tls_new(treadle_tls_config_t *c, treadle_stream_t *s,
                             bool server, const char *name,
                             treadle_tls_t **out) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || s == NULL || out == NULL || c->server != server)
    return TREADLE_EINVAL;
  size_t name_len = name != NULL ? strlen(name) : 0;
  if ((name != NULL && (name_len == 0 || name_len > 255)) ||
      (!server && name == NULL && c->verify))
    return TREADLE_EINVAL;
  if (stream_closed(s))
    return TREADLE_ECLOSED;
  pthread_once(&bio_once, bio_method_init);
  if (bio_method == NULL)
    return TREADLE_ENOMEM;
  treadle_tls_t *t = treadle__calloc(1, sizeof *t);
  if (t == NULL)
    return TREADLE_ENOMEM;
  ERR_clear_error();
  t->ssl = SSL_new(c->ctx);
  /* Two BIOs of one method: each keeps its own retry flags, so that a
   * write (which clears them) cannot hide that a read must wait. */
  BIO *rb = t->ssl != NULL ? BIO_new(bio_method) : NULL;
  BIO *wb = rb != NULL ? BIO_new(bio_method) : NULL;
  treadle_err_t err = wb != NULL ? 0 : TREADLE_ENOMEM;
  if (wb == NULL)
    BIO_free(rb);
  if (wb != NULL) {
    BIO_set_data(rb, t);
    BIO_set_data(wb, t);
    SSL_set_bio(t->ssl, rb, wb); /* the SSL owns them */
    SSL_set_app_data(t->ssl, t); /* for new_session */
    if (server) {
      SSL_set_accept_state(t->ssl);
    } else {
      SSL_set_connect_state(t->ssl);
      if (name != NULL) {
        memcpy(t->name, name, name_len + 1);
        /* An address is checked as one and never sent (RFC 6066). */
        bool ok =
            is_ip(name)
                ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name)
                : SSL_set_tlsext_host_name(t->ssl, name) &&
                      SSL_set1_host(t->ssl, name);
        if (!ok)
          err = TREADLE_EINVAL;
      }
    }
  }
  if (err != 0) {
    ERR_clear_error();
    SSL_free(t->ssl);
    treadle__free(t);
    return err;
  }
  treadle__os_mutex_init(&t->mu);
  atomic_init(&t->phase, HANDSHAKE);
  t->server = server;
  t->stream = s;
  t->cfg = treadle_tls_config_ref(c);
  /* release: pairs with the setters' acquire. */
  atomic_store_explicit(&c->frozen, true, memory_order_release);
  *out = t;
  return 0;
}

treadle_err_t treadle_tls_client_new(treadle_tls_config_t *c,
                                     treadle_stream_t *s,
                                     const char *server_name,
                                     treadle_tls_t **out) {
  return tls_new(c, s, false, server_name, out);
}

treadle_err_t treadle_tls_server_new(treadle_tls_config_t *c,
                                     treadle_stream_t *s, treadle_tls_t **out) {
  return tls_new(c, s, true, NULL, out);
}

/* Step 6: the first fatal error stays. Under mu. */
static treadle_err_t fail(treadle_tls_t *t, treadle_err_t err,
                          const char *text) {
  /* Relaxed: only mu's holder writes the phase. */
  int phase = atomic_load_explicit(&t->phase, memory_order_relaxed);
  if (phase == FAILED)
    return t->fatal;
  snprintf(t->errmsg, sizeof t->errmsg, "%s", text);
  if (phase == HANDSHAKE)
    t->verify = SSL_get_verify_result(t->ssl);
  t->fatal = err;
  /* release: the code, message and result above come with FAILED. */
  atomic_store_explicit(&t->phase, FAILED, memory_order_release);
  return err;
}

/* An SSL call failed with `e` (SSL_get_error): which error it is. Under
 * mu, on the thread that made the call. */
static treadle_err_t ssl_failed(treadle_tls_t *t, int e) {
  /* Relaxed: only mu's holder writes the phase. */
  bool hs = atomic_load_explicit(&t->phase, memory_order_relaxed) == HANDSHAKE;
  unsigned long last = ERR_peek_last_error();
  int reason = ERR_GET_LIB(last) == ERR_LIB_SSL ? ERR_GET_REASON(last) : 0;
  /* A verification that ran out of memory is no verdict on the chain. */
  bool verify_nomem = hs && reason == SSL_R_CERTIFICATE_VERIFY_FAILED &&
                      SSL_get_verify_result(t->ssl) == X509_V_ERR_OUT_OF_MEM;
  char text[MSG_LEN];
  treadle_err_t err;
  if (hs && reason == SSL_R_CERTIFICATE_VERIFY_FAILED && !verify_nomem) {
    snprintf(text, sizeof text, "certificate verify failed: %s",
             X509_verify_cert_error_string(SSL_get_verify_result(t->ssl)));
    err = TREADLE_ETLSVERIFY;
  } else if (hs && reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    snprintf(text, sizeof text, "the peer showed no certificate");
    err = TREADLE_ETLSVERIFY;
  } else if (t->out_nomem || verify_nomem ||
             ERR_GET_REASON(last) == ERR_R_MALLOC_FAILURE ||
             ERR_GET_REASON(ERR_peek_error()) == ERR_R_MALLOC_FAILURE) {
    snprintf(text, sizeof text, "out of memory");
    err = TREADLE_ENOMEM;
  } else if (t->in_eof && (e == SSL_ERROR_SYSCALL ||
                           reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
    snprintf(text, sizeof text,
             hs ? "the peer closed the connection during the handshake"
                : "the peer closed the connection without close_notify");
    err = TREADLE_ECONNRESET;
  } else {
    char why[64];
    snprintf(why, sizeof why, "OpenSSL failed without a reason (error %d)", e);
    take_ssl_error(text, sizeof text, "", why);
    err = hs ? TREADLE_ETLSHANDSHAKE : TREADLE_ETLS;
  }
  ERR_clear_error();
  return fail(t, err, text);
}

/* The stream failed under a TLS stream: during the handshake that ends it
 * (steps 1, 6); after it the error is the stream's and passes through. */
static treadle_err_t stream_failed(treadle_tls_t *t, treadle_err_t err) {
  /* Relaxed: only mu's holder writes the phase. */
  if (atomic_load_explicit(&t->phase, memory_order_relaxed) != HANDSHAKE)
    return err;
  char text[MSG_LEN];
  if (err == TREADLE_EPIPE || err == TREADLE_ECONNRESET) {
    /* Gone, one way or the other: as an end of stream would say. */
    snprintf(text, sizeof text,
             "the peer closed the connection during the handshake (%s)",
             treadle_strerror(err));
    err = TREADLE_ECONNRESET;
  } else {
    snprintf(text, sizeof text, "the stream failed during the handshake: %s",
             treadle_strerror(err));
  }
  return fail(t, err, text);
}

/* Sends `out` with the stream's write leaf until it is empty (READY, *err
 * = 0), the socket is full (PENDING: the task's waker is in the stream's
 * write slot) or the stream fails (READY, *err). Under mu. */
static treadle_poll_t flush_out(treadle_tls_t *t, treadle_cx_t *cx,
                                treadle_err_t *err) {
  if (t->shut_wr) /* after close_notify (a KeyUpdate answer): nowhere to go */
    t->out_start = t->out_end = 0;
  while (out_len(t) > 0) {
    size_t n;
    if (treadle_stream_write_poll(t->stream, cx, t->out + t->out_start,
                                  out_len(t), &n, err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    t->out_start += n;
    if (t->out_start == t->out_end)
      t->out_start = t->out_end = 0;
  }
  *err = 0;
  return TREADLE_READY;
}

/* One read of the stream's leaf into `in`: READY with bytes (or the end of
 * the stream: in_eof) and *err = 0, or the stream's error; PENDING with the
 * waker in the stream's read slot. Under mu. */
static treadle_poll_t fill_in(treadle_tls_t *t, treadle_cx_t *cx,
                              treadle_err_t *err) {
  if (t->in_start > 0) {
    memmove(t->in, t->in + t->in_start, t->in_end - t->in_start);
    t->in_end -= t->in_start;
    t->in_start = 0;
  }
  /* OpenSSL wants more only after it took all of `in` (bio_read). */
  TREADLE_ASSERT(t->in_end < IN_CAP);
  size_t n;
  if (treadle_stream_read_poll(t->stream, cx, t->in + t->in_end,
                               IN_CAP - t->in_end, &n, err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  if (*err == 0) {
    if (n == 0)
      t->in_eof = true;
    t->in_end += n;
  }
  return TREADLE_READY;
}

/* The checks every TLS leaf makes first, as treadle__leaf_start: EINVAL,
 * EFOREIGN, the coop budget, ECLOSED. True: go on. */
static bool tls_start(treadle_tls_t *t, treadle_cx_t *cx, bool bad,
                      treadle_poll_t *ret, treadle_err_t *err) {
  *ret = TREADLE_READY;
  if (t == NULL || bad) {
    *err = TREADLE_EINVAL;
    return false;
  }
  if (cx->task->sched->handle != t->stream->src.h) {
    *err = TREADLE_EFOREIGN;
    return false;
  }
  if (!treadle__cx_proceed(cx)) {
    *ret = TREADLE_PENDING;
    return false;
  }
  if (stream_closed(t->stream)) {
    *err = TREADLE_ECLOSED;
    return false;
  }
  return true;
}

/* Reads and writes need the handshake done: true if it is, else *err. */
static bool is_open(treadle_tls_t *t, treadle_err_t *err) {
  /* acquire: pairs with the release of OPEN or FAILED (step 6). */
  int phase = atomic_load_explicit(&t->phase, memory_order_acquire);
  if (treadle__likely(phase == OPEN))
    return true;
  *err = phase == FAILED ? t->fatal : TREADLE_ENOTCONN;
  return false;
}

/* What the handshake learned, published with OPEN (step 6). */
static void opened(treadle_tls_t *t) {
  const unsigned char *p = NULL;
  unsigned len = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &len);
  if (p != NULL && len > 0 && len < sizeof t->alpn) {
    memcpy(t->alpn, p, len);
    t->alpn[len] = '\0';
  }
  t->version = SSL_version(t->ssl);
  t->verify = SSL_get_verify_result(t->ssl);
  t->reused = SSL_session_reused(t->ssl) == 1;
  if (t->reused && !t->server) {
    /* A resumed TLS 1.2 handshake brings no new session (new_session is
     * not called): the one it resumed serves again. TLS 1.3's is spent,
     * and its tickets come later. */
    SSL_SESSION *sess = SSL_get1_session(t->ssl);
    if (sess != NULL && SSL_SESSION_is_resumable(sess))
      keep_session(t, sess);
    else
      SSL_SESSION_free(sess);
  }
  const char *sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  if (t->server && sni != NULL)
    snprintf(t->sni, sizeof t->sni, "%s", sni);
  /* release: the fields above come with OPEN. */
  atomic_store_explicit(&t->phase, OPEN, memory_order_release);
}

/* Step 1, under mu. */
static treadle_poll_t handshake(treadle_tls_t *t, treadle_cx_t *cx,
                                treadle_err_t *err) {
  for (;;) {
    if (t->hs == HS_RUN) {
      clear_errors();
      int r = SSL_do_handshake(t->ssl);
      int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_NONE) {
        t->hs = HS_DONE;
      } else if (e == SSL_ERROR_WANT_READ) {
        t->hs = HS_NEED_IN;
      } else if (e != SSL_ERROR_WANT_WRITE || out_len(t) == 0) {
        t->hs_err = ssl_failed(t, e);
        t->hs = HS_FAILING;
      } /* else WANT_WRITE: send `out`, then run again */
    }
    treadle_err_t serr;
    if (flush_out(t, cx, &serr) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (serr != 0 && t->hs != HS_FAILING) {
      t->hs_err = stream_failed(t, serr);
      t->hs = HS_FAILING;
    }
    switch (t->hs) {
    case HS_DONE:
      opened(t);
      *err = 0;
      return TREADLE_READY;
    case HS_FAILING:
      *err = t->hs_err; /* the alert went (or could not go) first */
      return TREADLE_READY;
    case HS_NEED_IN:
      if (fill_in(t, cx, &serr) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (serr != 0) {
        *err = stream_failed(t, serr);
        t->hs = HS_FAILING;
        return TREADLE_READY;
      }
      t->hs = HS_RUN;
      break;
    default:
      break;
    }
  }
}

treadle_poll_t treadle_tls_handshake_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                          treadle_err_t *err) {
  treadle_poll_t ret;
  if (!tls_start(t, cx, false, &ret, err))
    return ret;
  if (is_open(t, err)) {
    *err = 0;
    return TREADLE_READY;
  }
  treadle__os_mutex_lock(&t->mu);
  /* A handshake that failed earlier answers its error, once its alert
   * went out (HS_FAILING). */
  if (*err == TREADLE_ENOTCONN || t->hs == HS_FAILING)
    ret = handshake(t, cx, err);
  treadle__os_mutex_unlock(&t->mu);
  return ret;
}

/* Step 2, under mu. *wake: the write side, to wake after unlocking. */
static treadle_poll_t read_step(treadle_tls_t *t, treadle_cx_t *cx, void *buf,
                                size_t len, size_t *n, treadle_err_t *err,
                                treadle_waker_t **wake) {
  bool flushed = false;
  for (;;) {
    int e = SSL_ERROR_WANT_READ;
    /* With nothing in `in`, nothing buffered in OpenSSL (a partial
     * record, or records read ahead) and no close_notify received (which
     * every later SSL_read reports), SSL_read could only say WANT_READ:
     * go to the stream at once. That is every read that waits for the
     * peer's next record, and it saves a failing SSL_read each time. */
    if (t->in_end > t->in_start || t->in_eof || SSL_has_pending(t->ssl) ||
        (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN)) {
      clear_errors();
      int r = SSL_read_ex(t->ssl, buf, len, n);
      e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    }
    if (e == SSL_ERROR_NONE || e == SSL_ERROR_ZERO_RETURN) {
      *err = 0; /* *n = 0 at the peer's close_notify */
      break;
    }
    if (e != SSL_ERROR_WANT_READ) { /* WANT_WRITE too: `out` grows */
      *err = ssl_failed(t, e);
      break;
    }
    /* A read that must write: send what OpenSSL wrote, unless the write
     * side is parked on it; never wait for it. */
    if (out_len(t) > 0 && !t->w_parked_out && !flushed) {
      treadle_err_t werr;
      if (flush_out(t, cx, &werr) == TREADLE_READY && werr != 0)
        t->out_start = t->out_end = 0; /* the write side meets it too */
      flushed = true;
    }
    treadle_poll_t p = fill_in(t, cx, err);
    if (p == TREADLE_PENDING) {
      t->r_parked_in = true;
      return TREADLE_PENDING;
    }
    t->r_parked_in = false;
    if (t->w_wait_in != NULL) { /* step 4: new ciphertext for it */
      *wake = t->w_wait_in;
      t->w_wait_in = NULL;
    }
    if (*err != 0)
      break;
  }
  t->r_parked_in = false;
  if (*wake == NULL) { /* step 4: gone, so the writer reads itself */
    *wake = t->w_wait_in;
    t->w_wait_in = NULL;
  }
  if (*err != 0)
    *n = 0;
  return TREADLE_READY;
}

treadle_poll_t treadle_tls_read_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                     void *buf, size_t len, size_t *n,
                                     treadle_err_t *err) {
  treadle_poll_t ret;
  *n = 0;
  if (!tls_start(t, cx, buf == NULL && len > 0, &ret, err) || !is_open(t, err))
    return ret;
  if (len == 0) {
    *err = 0;
    return TREADLE_READY;
  }
  treadle_waker_t *wake = NULL;
  treadle__os_mutex_lock(&t->mu);
  ret = read_step(t, cx, buf, len, n, err, &wake);
  treadle__os_mutex_unlock(&t->mu);
  if (wake != NULL)
    treadle_wake(wake);
  return ret;
}

/* Step 4: SSL_write wants the peer's messages. Under mu. */
static treadle_poll_t write_needs_in(treadle_tls_t *t, treadle_cx_t *cx,
                                     treadle_err_t *err) {
  treadle_waker_t *mine = treadle_cx_waker(cx);
  if (t->w_wait_in != mine) {
    treadle_waker_drop(t->w_wait_in);
    t->w_wait_in = treadle_waker_clone(mine);
  }
  if (t->r_parked_in)
    return TREADLE_PENDING; /* the read side fills `in` and wakes us */
  if (fill_in(t, cx, err) == TREADLE_PENDING)
    return TREADLE_PENDING;
  treadle_waker_drop(t->w_wait_in);
  t->w_wait_in = NULL;
  return TREADLE_READY;
}

/* Step 3, under mu. */
static treadle_poll_t write_step(treadle_tls_t *t, treadle_cx_t *cx,
                                 const void *buf, size_t len, size_t *n,
                                 treadle_err_t *err) {
  for (;;) {
    if (flush_out(t, cx, err) == TREADLE_PENDING) {
      t->w_parked_out = true;
      return TREADLE_PENDING;
    }
    t->w_parked_out = false;
    if (*err != 0) {
      t->w_taken = 0;
      return TREADLE_READY;
    }
    if (t->w_taken > 0) {
      *n = t->w_taken;
      t->w_taken = 0;
      return TREADLE_READY;
    }
    size_t put = 0;
    clear_errors();
    int r =
        SSL_write_ex(t->ssl, buf, len < WRITE_CHUNK ? len : WRITE_CHUNK, &put);
    int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_NONE) {
      t->w_taken = put;
    } else if (e == SSL_ERROR_WANT_READ) {
      if (out_len(t) > 0)
        continue; /* what it wrote goes first */
      if (write_needs_in(t, cx, err) == TREADLE_PENDING)
        return TREADLE_PENDING;
      if (*err != 0)
        return TREADLE_READY;
    } else if (e != SSL_ERROR_WANT_WRITE || out_len(t) == 0) {
      *err = ssl_failed(t, e);
      return TREADLE_READY;
    }
  }
}

treadle_poll_t treadle_tls_write_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                      const void *buf, size_t len, size_t *n,
                                      treadle_err_t *err) {
  treadle_poll_t ret;
  *n = 0;
  if (!tls_start(t, cx, buf == NULL && len > 0, &ret, err) || !is_open(t, err))
    return ret;
  if (len == 0) {
    *err = 0;
    return TREADLE_READY;
  }
  treadle__os_mutex_lock(&t->mu);
  if (t->sent_close_notify) {
    *err = TREADLE_EPIPE;
    ret = TREADLE_READY;
  } else {
    ret = write_step(t, cx, buf, len, n, err);
  }
  treadle__os_mutex_unlock(&t->mu);
  return ret;
}

treadle_poll_t treadle_tls_write_all_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                          const void *buf, size_t len,
                                          size_t *done, treadle_err_t *err) {
  if (done == NULL || *done > len) {
    *err = TREADLE_EINVAL;
    return TREADLE_READY;
  }
  while (*done < len) {
    size_t n;
    if (treadle_tls_write_poll(t, cx, (const char *)buf + *done, len - *done,
                               &n, err) == TREADLE_PENDING)
      return TREADLE_PENDING;
    if (*err != 0)
      return TREADLE_READY;
    *done += n;
  }
  *err = t == NULL ? TREADLE_EINVAL : 0;
  return TREADLE_READY;
}

/* Step 5, under mu. */
static treadle_poll_t shutdown_step(treadle_tls_t *t, treadle_cx_t *cx,
                                    treadle_err_t *err) {
  if (!t->sent_close_notify) {
    clear_errors();
    int r = SSL_shutdown(t->ssl);
    if (r < 0) {
      int e = SSL_get_error(t->ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        *err = ssl_failed(t, e);
        return TREADLE_READY;
      }
    }
    t->sent_close_notify = true;
  }
  if (flush_out(t, cx, err) == TREADLE_PENDING) {
    t->w_parked_out = true;
    return TREADLE_PENDING;
  }
  t->w_parked_out = false;
  if (*err == 0 && !t->shut_wr) {
    t->shut_wr = true;
    *err = treadle_stream_shutdown(t->stream);
    if (*err == TREADLE_ENOTCONN) /* the peer is gone already */
      *err = 0;
  }
  return TREADLE_READY;
}

treadle_poll_t treadle_tls_shutdown_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                         treadle_err_t *err) {
  treadle_poll_t ret;
  if (!tls_start(t, cx, false, &ret, err) || !is_open(t, err))
    return ret;
  treadle__os_mutex_lock(&t->mu);
  ret = shutdown_step(t, cx, err);
  treadle__os_mutex_unlock(&t->mu);
  return ret;
}

/* -------------------------------------------------------------- getters */

/* The phase, for a getter (step 6). */
static int phase_of(treadle_tls_t *t) {
  /* acquire: pairs with the release of OPEN or FAILED. */
  return atomic_load_explicit(&t->phase, memory_order_acquire);
}

const char *treadle_tls_alpn(treadle_tls_t *t) {
  return t != NULL && phase_of(t) == OPEN && t->alpn[0] != '\0' ? t->alpn
                                                                : NULL;
}

int treadle_tls_version(treadle_tls_t *t) {
  if (t == NULL)
    return TREADLE_EINVAL;
  return phase_of(t) == OPEN ? t->version : TREADLE_ENOTCONN;
}

const char *treadle_tls_server_name(treadle_tls_t *t) {
  if (t == NULL)
    return NULL;
  if (!t->server)
    return t->name[0] != '\0' ? t->name : NULL;
  return phase_of(t) == OPEN && t->sni[0] != '\0' ? t->sni : NULL;
}

int treadle_tls_peer_subject(treadle_tls_t *t, char *buf, size_t len) {
  if (t == NULL || (buf == NULL && len > 0))
    return TREADLE_EINVAL;
  if (phase_of(t) != OPEN)
    return TREADLE_ENOTCONN;
  int ret = 0;
  treadle__os_mutex_lock(&t->mu);
  X509 *peer = SSL_get0_peer_certificate(t->ssl);
  BIO *m = peer != NULL ? BIO_new(BIO_s_mem()) : NULL;
  char *text = NULL;
  if (m != NULL && X509_NAME_print_ex(m, X509_get_subject_name(peer), 0,
                                      XN_FLAG_RFC2253) >= 0) {
    long l = BIO_get_mem_data(m, &text);
    ret = l > 0 && l < INT_MAX ? (int)l : 0;
  } else if (peer != NULL) {
    ret = TREADLE_ENOMEM;
  }
  if (len > 0) {
    size_t k = ret > 0 && text != NULL ? (size_t)ret : 0;
    if (k >= len)
      k = len - 1;
    if (k > 0)
      memcpy(buf, text, k);
    buf[k] = '\0';
  }
  BIO_free(m);
  ERR_clear_error();
  treadle__os_mutex_unlock(&t->mu);
  return ret;
}

long treadle_tls_verify_result(treadle_tls_t *t) {
  if (t == NULL)
    return TREADLE_EINVAL;
  return phase_of(t) != HANDSHAKE ? t->verify : TREADLE_ENOTCONN;
}

const char *treadle_tls_error_message(treadle_tls_t *t) {
  return t != NULL && phase_of(t) == FAILED ? t->errmsg : "";
}

treadle_stream_t *treadle_tls_stream(treadle_tls_t *t) {
  return t != NULL ? t->stream : NULL;
}

void treadle_tls_close(treadle_tls_t *t) {
  if (t == NULL)
    return;
  treadle_stream_close(t->stream);
  /* A writer waiting for the read side is in no slot of the stream. */
  treadle__os_mutex_lock(&t->mu);
  treadle_waker_t *w = t->w_wait_in;
  t->w_wait_in = NULL;
  treadle__os_mutex_unlock(&t->mu);
  if (w != NULL)
    treadle_wake(w);
}

void treadle_tls_free(treadle_tls_t *t) {
  if (t == NULL)
    return;
  treadle_stream_free(t->stream);
  SSL_free(t->ssl); /* and its BIO */
  SSL_SESSION_free(t->latest);
  treadle_tls_session_free(t->holder);
  treadle__free(t->out);
  treadle_waker_drop(t->w_wait_in);
  treadle_tls_config_unref(t->cfg);
  treadle__os_mutex_destroy(&t->mu);
  treadle__free(t);
}

treadle_tls_session_t *treadle_tls_session(treadle_tls_t *t) {
  if (t == NULL || t->server)
    return NULL;
  treadle__os_mutex_lock(&t->mu);
  treadle_tls_session_t *h = t->holder;
  if (h == NULL && (h = treadle__calloc(1, sizeof *h)) != NULL) {
    atomic_init(&h->refs, 1); /* the connection's */
    h->cfg = treadle_tls_config_ref(t->cfg);
    memcpy(h->name, t->name, sizeof h->name);
    treadle__os_mutex_init(&h->mu);
    h->sess = t->latest; /* new_session puts the next ones in h */
    t->latest = NULL;
    t->holder = h;
  }
  /* Relaxed: taking a reference needs one already held (the connection's,
   * under mu). */
  if (h != NULL)
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
  treadle__os_mutex_unlock(&t->mu);
  return h;
}

void treadle_tls_session_free(treadle_tls_session_t *s) {
  /* acq_rel: whoever frees has seen every other holder's use. */
  if (s == NULL ||
      atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
    return;
  SSL_SESSION_free(s->sess);
  treadle_tls_config_unref(s->cfg);
  treadle__os_mutex_destroy(&s->mu);
  treadle__free(s);
}

treadle_err_t treadle_tls_set_session(treadle_tls_t *t,
                                      treadle_tls_session_t *s) {
  if (t == NULL || s == NULL || t->server)
    return TREADLE_EINVAL;
  treadle_err_t err = 0;
  treadle__os_mutex_lock(&t->mu);
  if (!SSL_in_before(t->ssl) || phase_of(t) != HANDSHAKE) {
    err = TREADLE_EBUSY;
  } else if (s->cfg == t->cfg && strcmp(s->name, t->name) == 0) {
    /* Only where this connection would verify the same way: a session
     * skips the certificate, so one of a configuration that does not
     * verify, or of another name, must not stand in for it. */
    treadle__os_mutex_lock(&s->mu);
    SSL_SESSION *sess = s->sess;
    if (sess != NULL && SSL_SESSION_is_resumable(sess))
      SSL_SESSION_up_ref(sess);
    else
      sess = NULL;
    treadle__os_mutex_unlock(&s->mu);
    if (sess != NULL) {
      clear_errors();
      if (!SSL_set_session(t->ssl, sess))
        err = TREADLE_ENOMEM;
      ERR_clear_error();
      SSL_SESSION_free(sess); /* the SSL took its own reference */
    }
  }
  treadle__os_mutex_unlock(&t->mu);
  return err;
}

int treadle_tls_session_reused(treadle_tls_t *t) {
  if (t == NULL)
    return TREADLE_EINVAL;
  return phase_of(t) == OPEN ? t->reused : TREADLE_ENOTCONN;
}

void *treadle__tls_ssl(treadle_tls_t *t) { return t->ssl; }

size_t treadle__tls_unsent(treadle_tls_t *t) {
  treadle__os_mutex_lock(&t->mu);
  size_t n = out_len(t);
  treadle__os_mutex_unlock(&t->mu);
  return n;
}

#else /* !TREADLE_HAVE_OPENSSL: every function says TREADLE_ENOTLS. */

void *treadle__tls_ssl(treadle_tls_t *t) {
  (void)t;
  return NULL;
}

size_t treadle__tls_unsent(treadle_tls_t *t) {
  (void)t;
  return 0;
}

treadle_err_t treadle_tls_config_new(treadle_tls_role_t role,
                                     treadle_tls_config_t **out) {
  (void)role;
  if (out != NULL)
    *out = NULL;
  return TREADLE_ENOTLS;
}

treadle_tls_config_t *treadle_tls_config_ref(treadle_tls_config_t *c) {
  return c;
}

void treadle_tls_config_unref(treadle_tls_config_t *c) { (void)c; }

treadle_err_t treadle_tls_config_set_verify(treadle_tls_config_t *c, bool on) {
  (void)c;
  (void)on;
  return TREADLE_ENOTLS;
}

treadle_err_t treadle_tls_config_set_ca(treadle_tls_config_t *c,
                                        const char *file, const char *dir) {
  (void)c;
  (void)file;
  (void)dir;
  return TREADLE_ENOTLS;
}

treadle_err_t treadle_tls_config_set_cert(treadle_tls_config_t *c,
                                          const char *chain_file,
                                          const char *key_file) {
  (void)c;
  (void)chain_file;
  (void)key_file;
  return TREADLE_ENOTLS;
}

treadle_err_t treadle_tls_config_set_alpn(treadle_tls_config_t *c,
                                          const char *const *protos,
                                          size_t count) {
  (void)c;
  (void)protos;
  (void)count;
  return TREADLE_ENOTLS;
}

treadle_err_t treadle_tls_config_set_min_version(treadle_tls_config_t *c,
                                                 int version) {
  (void)c;
  (void)version;
  return TREADLE_ENOTLS;
}

const char *treadle_tls_config_error_message(const treadle_tls_config_t *c) {
  (void)c;
  return "TLS support is not built in";
}

treadle_err_t treadle_tls_client_new(treadle_tls_config_t *c,
                                     treadle_stream_t *s,
                                     const char *server_name,
                                     treadle_tls_t **out) {
  (void)c;
  (void)s;
  (void)server_name;
  if (out != NULL)
    *out = NULL;
  return TREADLE_ENOTLS;
}

treadle_err_t treadle_tls_server_new(treadle_tls_config_t *c,
                                     treadle_stream_t *s, treadle_tls_t **out) {
  return treadle_tls_client_new(c, s, NULL, out);
}

treadle_poll_t treadle_tls_handshake_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                          treadle_err_t *err) {
  (void)t;
  (void)cx;
  *err = TREADLE_ENOTLS;
  return TREADLE_READY;
}

treadle_poll_t treadle_tls_read_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                     void *buf, size_t len, size_t *n,
                                     treadle_err_t *err) {
  (void)buf;
  (void)len;
  *n = 0;
  return treadle_tls_handshake_poll(t, cx, err);
}

treadle_poll_t treadle_tls_write_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                      const void *buf, size_t len, size_t *n,
                                      treadle_err_t *err) {
  (void)buf;
  (void)len;
  *n = 0;
  return treadle_tls_handshake_poll(t, cx, err);
}

treadle_poll_t treadle_tls_write_all_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                          const void *buf, size_t len,
                                          size_t *done, treadle_err_t *err) {
  (void)buf;
  (void)len;
  (void)done;
  return treadle_tls_handshake_poll(t, cx, err);
}

treadle_poll_t treadle_tls_shutdown_poll(treadle_tls_t *t, treadle_cx_t *cx,
                                         treadle_err_t *err) {
  return treadle_tls_handshake_poll(t, cx, err);
}

const char *treadle_tls_alpn(treadle_tls_t *t) {
  (void)t;
  return NULL;
}

int treadle_tls_version(treadle_tls_t *t) {
  (void)t;
  return TREADLE_ENOTLS;
}

const char *treadle_tls_server_name(treadle_tls_t *t) {
  (void)t;
  return NULL;
}

int treadle_tls_peer_subject(treadle_tls_t *t, char *buf, size_t len) {
  (void)t;
  if (buf != NULL && len > 0)
    buf[0] = '\0';
  return TREADLE_ENOTLS;
}

long treadle_tls_verify_result(treadle_tls_t *t) {
  (void)t;
  return TREADLE_ENOTLS;
}

const char *treadle_tls_error_message(treadle_tls_t *t) {
  (void)t;
  return "TLS support is not built in";
}

treadle_stream_t *treadle_tls_stream(treadle_tls_t *t) {
  (void)t;
  return NULL;
}

void treadle_tls_close(treadle_tls_t *t) { (void)t; }

void treadle_tls_free(treadle_tls_t *t) { (void)t; }

treadle_tls_session_t *treadle_tls_session(treadle_tls_t *t) {
  (void)t;
  return NULL;
}

void treadle_tls_session_free(treadle_tls_session_t *s) { (void)s; }

treadle_err_t treadle_tls_set_session(treadle_tls_t *t,
                                      treadle_tls_session_t *s) {
  (void)t;
  (void)s;
  return TREADLE_ENOTLS;
}

int treadle_tls_session_reused(treadle_tls_t *t) {
  (void)t;
  return TREADLE_ENOTLS;
}

#endif /* TREADLE_HAVE_OPENSSL */
