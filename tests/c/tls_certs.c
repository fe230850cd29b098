/* Throwaway certificates for the TLS tests (tls_certs.h), made with
 * libcrypto: P-256 keys (fast, even under valgrind), SHA-256 signatures. */
#define _GNU_SOURCE
#include "tls_certs.h"

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

static EVP_PKEY *new_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  assert_non_null(k);
  return k;
}

static void add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
  assert_non_null(e);
  assert_int_equal(X509_add_ext(x, e, -1), 1);
  X509_EXTENSION_free(e);
}

/* A certificate for `key` named `cn`, valid from `from_days` to
 * `to_days` (relative to now), signed by issuer (NULL: by itself). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer,
                       EVP_PKEY *issuer_key, bool ca, const char *san,
                       long from_days, long to_days, long serial) {
  X509 *x = X509_new();
  assert_non_null(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400);
  X509_set_pubkey(x, key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             (const unsigned char *)"treadle tests", -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x,
                       issuer != NULL ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
  add_ext(x, &ctx, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  add_ext(x, &ctx, NID_subject_key_identifier, "hash");
  if (issuer != NULL)
    add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
  if (ca) {
    add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature");
    add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
  }
  if (san != NULL)
    add_ext(x, &ctx, NID_subject_alt_name, san);
  assert_true(
      X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
  return x;
}

static void path(char *out, const char *dir, const char *file) {
  snprintf(out, TLS_PATH_LEN, "%s/%s", dir, file);
}

static void write_certs(const char *file, X509 *a, X509 *b) {
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  assert_int_equal(PEM_write_X509(f, a), 1);
  if (b != NULL)
    assert_int_equal(PEM_write_X509(f, b), 1);
  assert_int_equal(fclose(f), 0);
}

static void write_key(const char *file, EVP_PKEY *k) {
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
  assert_int_equal(fclose(f), 0);
}

#define SAN "DNS:localhost,IP:127.0.0.1"

void tls_certs_make(tls_certs_t *c) {
  memset(c, 0, sizeof *c);
  test_tmpdir(c->dir);
  EVP_PKEY *ca_key = new_key(), *inter_key = new_key(), *server_key = new_key(),
           *self_key = new_key(), *client_key = new_key(),
           *other_key = new_key();
  X509 *ca =
      make_cert(ca_key, "treadle test CA", NULL, NULL, true, NULL, -1, 30, 1);
  X509 *inter = make_cert(inter_key, "treadle test intermediate", ca, ca_key,
                          true, NULL, -1, 30, 2);
  X509 *server = make_cert(server_key, "localhost", inter, inter_key, false,
                           SAN, -1, 30, 3);
  X509 *expired = make_cert(server_key, "localhost", inter, inter_key, false,
                            SAN, -30, -1, 4);
  X509 *self =
      make_cert(self_key, "localhost", NULL, NULL, false, SAN, -1, 30, 5);
  X509 *client = make_cert(client_key, "treadle client", inter, inter_key,
                           false, NULL, -1, 30, 6);
  path(c->ca, c->dir, "ca.pem");
  path(c->server, c->dir, "server.pem");
  path(c->server_key, c->dir, "server.key");
  path(c->expired, c->dir, "expired.pem");
  path(c->self, c->dir, "self.pem");
  path(c->self_key, c->dir, "self.key");
  path(c->client, c->dir, "client.pem");
  path(c->client_key, c->dir, "client.key");
  path(c->other_key, c->dir, "other.key");
  path(c->garbage, c->dir, "garbage.pem");
  path(c->missing, c->dir, "missing.pem");
  write_certs(c->ca, ca, NULL);
  write_certs(c->server, server, inter); /* the chain: leaf, then issuer */
  write_key(c->server_key, server_key);
  write_certs(c->expired, expired, inter);
  write_certs(c->self, self, NULL);
  write_key(c->self_key, self_key);
  write_certs(c->client, client, inter);
  write_key(c->client_key, client_key);
  write_key(c->other_key, other_key);
  FILE *f = fopen(c->garbage, "w");
  assert_non_null(f);
  fputs("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
        "-----END CERTIFICATE-----\n",
        f);
  assert_int_equal(fclose(f), 0);
  X509 *certs[] = {ca, inter, server, expired, self, client};
  for (size_t i = 0; i < TEST_ARRAY_LEN(certs); i++)
    X509_free(certs[i]);
  EVP_PKEY *keys[] = {ca_key,   inter_key,  server_key,
                      self_key, client_key, other_key};
  for (size_t i = 0; i < TEST_ARRAY_LEN(keys); i++)
    EVP_PKEY_free(keys[i]);
}

void tls_certs_remove(tls_certs_t *c) {
  const char *files[] = {
      c->ca,       c->server, c->server_key, c->expired,   c->self,
      c->self_key, c->client, c->client_key, c->other_key, c->garbage};
  for (size_t i = 0; i < TEST_ARRAY_LEN(files); i++)
    assert_int_equal(unlink(files[i]), 0);
  assert_int_equal(rmdir(c->dir), 0);
}
