/* Throwaway certificates for the TLS tests, made at test time in a temp
 * directory (test_tmpdir) and removed afterwards:
 *
 *   ca.pem                the root every good chain ends at (trust it)
 *   server.pem/.key       "localhost" (DNS:localhost, IP:127.0.0.1),
 *                         issued by an intermediate CA: the file holds the
 *                         leaf, then the intermediate
 *   expired.pem           the same name and key, expired yesterday
 *   self.pem/.key         "localhost", self-signed
 *   client.pem/.key       "treadle client", for client authentication
 *   other.key             a key that matches no certificate
 *   garbage.pem           a PEM block that holds no certificate
 *   missing.pem           never made */
#ifndef TREADLE_TEST_TLS_CERTS_H
#define TREADLE_TEST_TLS_CERTS_H

#include "harness.h"

#define TLS_PATH_LEN 128

typedef struct {
  char dir[64];
  char ca[TLS_PATH_LEN];
  char server[TLS_PATH_LEN], server_key[TLS_PATH_LEN];
  char expired[TLS_PATH_LEN];
  char self[TLS_PATH_LEN], self_key[TLS_PATH_LEN];
  char client[TLS_PATH_LEN], client_key[TLS_PATH_LEN];
  char other_key[TLS_PATH_LEN];
  char garbage[TLS_PATH_LEN];
  char missing[TLS_PATH_LEN];
} tls_certs_t;

void tls_certs_make(tls_certs_t *c);
/* Removes every file and the directory (asserting that each was there). */
void tls_certs_remove(tls_certs_t *c);

#endif
