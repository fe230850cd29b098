/* What the tests reach inside a TLS stream (tls.c), to set up cases the
 * public API does not make: a TLS 1.3 KeyUpdate, a TLS 1.2 renegotiation.
 * Nothing here is public API. */
#ifndef TREADLE_TLS_H
#define TREADLE_TLS_H

#include "treadle.h"

/* The stream's OpenSSL SSL object (NULL without OpenSSL). Touch it only
 * while no task polls the TLS stream. */
void *treadle__tls_ssl(treadle_tls_t *t);
/* Ciphertext OpenSSL wrote and the stream has not sent yet, in bytes. */
size_t treadle__tls_unsent(treadle_tls_t *t);

#endif /* TREADLE_TLS_H */
