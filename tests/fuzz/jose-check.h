/*
 * jose-check.h - independent checks for the JOSE fuzz targets (jws.c,
 * jwk.c): what kv_jws_verify accepted is verified again with OpenSSL and
 * jansson alone, from the token's and the key set's text.
 */
#ifndef KV_FUZZ_JOSE_CHECK_H
#define KV_FUZZ_JOSE_CHECK_H

#include <stddef.h>

#include <openssl/evp.h>

#include "fuzz.h"

/* The compact JWS's signature verifies with OpenSSL under pk for the alg
 * its protected header names (a JSON object without duplicate members,
 * alg one of ES256, ES384, PS256, RS256, EdDSA; JWS r||s for ECDSA). */
int fzj_sig_ok(const char *jws, EVP_PKEY *pk);
/* The key set text (a JWK set, one JWK, or PEM public keys) holds pk:
 * some JWK in it, or some PEM block, is pk's public key as OpenSSL
 * compares them (EVP_PKEY_eq), and that JWK's alg and kid, when it has
 * them, are alg and kid (either NULL: not checked; a PEM key has neither);
 * JSON with duplicate members holds none. */
int fzj_set_holds(const char *keys, EVP_PKEY *pk, const char *alg, const char *kid);
/* The payload of a compact JWS, decoded (malloc'd, NUL-terminated), or NULL. */
char *fzj_payload(const char *jws);
/* base64url (no padding) of len bytes (malloc'd). */
char *fzj_b64url(const void *data, size_t len);
/* A compact JWS with the given header and payload texts and sig bytes
 * (malloc'd): for the negative seeds. */
char *fzj_token(const char *header, const char *payload, const void *sig, size_t siglen);

/* The JOSE targets' four keys, software, saved with the seeds in
 * fixtures/TAG (a token only fits the key that signed it): P-256, P-384,
 * RSA-2048, Ed25519. Seeding makes and saves them, a fuzzing run opens
 * them. pks[i] is keys[i]'s public key as OpenSSL parses its DER. */
#define FZJ_NKEYS 4
extern const char *const fzj_names[FZJ_NKEYS];
kv_ctx *fzj_keys(const char *tag, kv_key **keys, EVP_PKEY **pks);
/* The key's public key as PEM (malloc'd). */
char *fzj_pem(EVP_PKEY *pk);

#endif
