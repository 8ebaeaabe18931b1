/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz/ share: a scratch
 * directory, a software-only context, seed writing, input splitting.
 * Public API only (keyvault.h); the two targets that need more say why.
 */
#ifndef KV_FUZZ_H
#define KV_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <openssl/err.h>

#include "keyvault.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
/* A target's LLVMFuzzerTestOneInput is compiled as fz_test_one. fuzz.c's
 * LLVMFuzzerTestOneInput empties the thread's OpenSSL error queue (and
 * queues an error of its own before an input of odd length), calls it, and
 * fails when the input left anything else on that queue, took its error
 * off, or left an error mark on it: a library
 * call must not leave errors behind, since a TLS program's next
 * SSL_get_error on that thread would read them as its own (SSL_get_error
 * (3)). A target that calls OpenSSL itself drops what its own calls left
 * (FZ_OWN_OPENSSL). */
#define LLVMFuzzerTestOneInput fz_test_one
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
/* The value of expr, a target's own OpenSSL cross-check, with what the
 * check left on the error queue dropped: those errors are the target's. */
#define FZ_OWN_OPENSSL(expr) ((void)ERR_set_mark(), fz_own_openssl_end(expr))
static inline int fz_own_openssl_end(int value)
{
    ERR_pop_to_mark();
    return value;
}

/* The target's scratch directory (made once, removed at exit). */
const char *fz_dir(void);
/* fz_dir()/name in a static buffer of the caller's (at least 512 bytes). */
char *fz_path(char *buf, size_t len, const char *name);
/* Write len bytes to path (abort on failure). */
void fz_write(const char *path, const void *data, size_t len);
/* A context with the given backends (NULL: software) whose software
 * store is fz_dir()/store and home fz_dir()/home, with extra appended to
 * its configuration (may be NULL). Aborts on failure. */
kv_ctx *fz_ctx(const char *backends, const char *extra);
/* A SoftHSM token "fuzz" (user PIN 1234) in fz_dir(), SOFTHSM2_CONF set:
 * the [pkcs11] section that names it. */
const char *fz_softhsm(void);
/* A new key (abort on failure). */
kv_key *fz_key(kv_ctx *ctx, const char *name, kv_key_type type, const char *backend);
/* A CA key named name (P-256) with a self-signed CA certificate stored:
 * subject "CN=name,O=Fuzz". Aborts. */
kv_key *fz_ca(kv_ctx *ctx, const char *name);
/* The key's DER public key (malloc'd, *len its length); abort on failure. */
unsigned char *fz_pub(kv_key *key, size_t *len);
/* A copy of s with every "@D@" replaced by fz_dir() (free). */
char *fz_subst(const char *s);
/* A NUL-terminated copy of an input (free). */
char *fz_str(const unsigned char *data, size_t size);
/* The input split at the first "\n--8<--\n": part 1 and part 2 (part 2 is
 * empty without the separator). */
void fz_split(const unsigned char *data, size_t size, const unsigned char **a, size_t *alen,
              const unsigned char **b, size_t *blen);
#define FZ_SEP "\n--8<--\n"
/* Seed mode: KV_FUZZ_SEED_DIR set means LLVMFuzzerInitialize writes its
 * seed inputs there (fz_seed) and the program exits after it. */
bool fz_seeding(void);
void fz_seed(const char *name, const void *data, size_t len);
/* a seed of one leading byte (the call or key it is for), then data */
void fz_seed1(const char *name, int byte, const void *data, size_t len);
/* seeds seed-00, seed-01... from n texts */
void fz_seed_texts(const char *const *texts, size_t n);
/* a seed of two parts joined by FZ_SEP */
void fz_seed2(const char *name, const void *a, size_t alen, const void *b, size_t blen);
/* Key files that must be the same in the seeding run and the fuzzing runs
 * (a chain names its leaf's public key): fz_fixture_save copies the
 * software store and the lifecycle records to FIXTURES/tag/{store,lifecycle},
 * fz_fixture_load copies them back into fz_dir()/store, fz_dir()/home/lifecycle. FIXTURES is $KV_FUZZ_FIXTURES, else the source tree's
 * tests/fuzz/fixtures. Abort on failure. */
void fz_fixture_save(const char *tag);
void fz_fixture_load(const char *tag);
/* With KV_FUZZ_VERBOSE set: print what the call returned (for seeds). */
void fz_report(const char *call, kv_ctx *ctx, kv_rc rc);
/* Abort with a message when cond is false (an acceptance bug). */
#define FZ_ASSERT(cond, what)                                                                 \
    do {                                                                                      \
        if (!(cond))                                                                          \
            fz_fail(__FILE__, __LINE__, what);                                                \
    } while (0)
void fz_fail(const char *file, int line, const char *what);

#endif
