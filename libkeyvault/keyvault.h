/*
 * keyvault.h - the public API of libkeyvault
 *
 * libkeyvault keeps private keys inside PKCS#11 tokens, a TPM 2.0 or an
 * encrypted software store, and lets a program sign, derive ECDH secrets and
 * read public keys without ever holding the private key.
 *
 * Conventions
 *  - Every function that can fail returns a kv_rc; KV_OK (0) is success.
 *  - Objects are opaque and created through an "out" pointer; every *_free
 *    function accepts NULL.
 *  - Fixed-size outputs go to a caller buffer with an in/out length: a NULL
 *    buffer asks for the size. On failure the buffer is wiped and *len is 0.
 *  - Variable outputs are allocated by the library and freed (and wiped) by
 *    the matching kv_*_free function.
 *  - After a failure, kv_errmsg(ctx) describes what failed and why.
 *  - A call leaves the calling thread's OpenSSL error queue as it found it:
 *    the errors OpenSSL raised inside it are dropped (kv_errmsg has what
 *    they said), the caller's own stay, so that a TLS program's next
 *    SSL_get_error on the thread reads only its own. (OpenSSL keeps 16
 *    entries: a call that raises more pushes the caller's out. The *_free
 *    functions raise none but on exhausted memory.)
 *
 * Thread safety: a kv_ctx and the kv_key objects opened from it may be used
 * from many threads at once. Error details are kept per thread.
 */
#ifndef KEYVAULT_H
#define KEYVAULT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KV_API __attribute__((visibility("default")))
#define KV_WUR __attribute__((warn_unused_result))
#define KV_NONNULL(...) __attribute__((nonnull(__VA_ARGS__)))
#else
#define KV_API
#define KV_WUR
#define KV_NONNULL(...)
#endif

/* Result codes. Numbers are part of the ABI: never reused, never renumbered. */
typedef enum kv_rc {
    KV_OK = 0,                    /* 0: success */
    KV_ERR_INVALID_ARG = 1,       /* 1: a NULL or out-of-range argument */
    KV_ERR_NO_MEMORY = 2,         /* 2: allocation failed */
    KV_ERR_KEY_NOT_FOUND = 3,     /* 3: no key with that name or URI */
    KV_ERR_KEY_EXISTS = 4,        /* 4: a key with that name already exists */
    KV_ERR_BAD_URI = 5,           /* 5: malformed key name or URI */
    KV_ERR_UNSUPPORTED = 6,       /* 6: the backend or key cannot do this */
    KV_ERR_WRONG_KEY_TYPE = 7,    /* 7: the key's type does not fit the operation */
    KV_ERR_AUTH_FAILED = 8,       /* 8: wrong passphrase, PIN or auth value */
    KV_ERR_IO = 9,                /* 9: reading or writing a file failed */
    KV_ERR_NO_SPACE = 10,         /* 10: disk full or file size limit reached */
    KV_ERR_PERMISSION = 11,       /* 11: access refused: by the OS, or by policy (file modes, module allow-list) */
    KV_ERR_CONFIG = 12,           /* 12: the configuration is invalid */
    KV_ERR_BACKEND_UNAVAILABLE = 13, /* 13: backend not built, not configured or not reachable */
    KV_ERR_HARDWARE_REQUIRED = 14,   /* 14: require_hardware refuses a software key */
    KV_ERR_INVALID_PEER_KEY = 15, /* 15: ECDH peer key malformed, off-curve or wrong curve */
    KV_ERR_BAD_SIGNATURE = 16,    /* 16: the signature does not verify */
    KV_ERR_BUFFER_TOO_SMALL = 17, /* 17: the output buffer is too small; *len holds the need */
    KV_ERR_CRYPTO = 18,           /* 18: a cryptographic library call failed */
    KV_ERR_BACKEND = 19,          /* 19: the token or TPM reported an error; see kv_errmsg */
    KV_ERR_CORRUPT = 20,          /* 20: a stored key or metadata file is damaged */
    KV_ERR_BAD_INPUT = 21,        /* 21: malformed input data (digest length, signature encoding) */
    KV_ERR_TOKEN_NOT_PRESENT = 22,/* 22: the token or TPM is absent or was removed */
    KV_ERR_PIN_LOCKED = 23,       /* 23: the PIN or TPM is locked out after failed attempts */
    KV_ERR_EVIDENCE = 24,         /* 24: attestation evidence failed verification; see the verdict */
    KV_ERR_POLICY = 25,           /* 25: refused by the key's or the context's policy; kv_errmsg names the rule */
    KV_ERR_CLAIMS = 26,           /* 26: a token's claims fail a check (expired, not yet valid, aud, iss, sub, lifetime) */
} kv_rc;

/* Key types. */
typedef enum kv_key_type {
    KV_KEY_UNKNOWN = 0,
    KV_KEY_EC_P256 = 1,
    KV_KEY_EC_P384 = 2,
    KV_KEY_RSA_2048 = 3,
    KV_KEY_RSA_3072 = 4,
    KV_KEY_ED25519 = 5,
} kv_key_type;

/* How well a key is protected. A verifier may refuse KV_ASSURANCE_SOFTWARE. */
typedef enum kv_assurance {
    KV_ASSURANCE_UNKNOWN = 0,
    KV_ASSURANCE_SOFTWARE = 1, /* encrypted file, used in this process's memory */
    KV_ASSURANCE_TOKEN = 2,    /* PKCS#11 token: key never leaves the token */
    KV_ASSURANCE_TPM = 3,      /* TPM 2.0: key never leaves the TPM in the clear */
} kv_assurance;

/* Signature algorithms. KV_ALG_DEFAULT picks by key type: ECDSA with SHA-256
 * (P-256) or SHA-384 (P-384), RSA-PSS with SHA-256, Ed25519. */
typedef enum kv_sign_alg {
    KV_ALG_DEFAULT = 0,
    KV_ALG_ECDSA_SHA256 = 1,
    KV_ALG_ECDSA_SHA384 = 2,
    KV_ALG_ECDSA_SHA512 = 3,
    KV_ALG_RSA_PSS_SHA256 = 4,    /* MGF1 with the same hash, salt = hash length */
    KV_ALG_RSA_PSS_SHA384 = 5,
    KV_ALG_RSA_PSS_SHA512 = 6,
    KV_ALG_RSA_PKCS1_SHA256 = 7,  /* RSASSA-PKCS1-v1_5 */
    KV_ALG_RSA_PKCS1_SHA384 = 8,
    KV_ALG_RSA_PKCS1_SHA512 = 9,
    KV_ALG_ED25519 = 10,          /* pure Ed25519 (RFC 8032), signs the message itself */
} kv_sign_alg;

/* Flags for kv_sign and kv_verify. */
#define KV_SIGN_PREHASHED 0x1u /* input is the digest of the message, not the message */
#define KV_SIGN_RAW       0x2u /* ECDSA signature as r||s (IEEE P1363), not DER */

typedef struct kv_ctx kv_ctx;
typedef struct kv_key kv_key;

/* What is known about a key. Strings belong to the object they came from. */
typedef struct kv_key_info {
    const char *name;      /* key name (label); NULL for a key in no store
                            * (kv_key_open_tpm_file) */
    const char *backend;   /* "software", "pkcs11" or "tpm" */
    const char *uri;       /* explicit URI that opens exactly this key; for a key
                            * in no store, a description that opens nothing */
    kv_key_type type;
    kv_assurance assurance;
    unsigned version;      /* key version (1 for a key never rotated) */
} kv_key_info;

/* A list of keys from kv_list_keys. */
typedef struct kv_key_list {
    size_t count;
    kv_key_info *keys;
} kv_key_list;

/* ---- context ---------------------------------------------------------- */

/*
 * kv_ctx_new - create a context from a configuration file.
 * config_path: the file to read; NULL means $KEYVAULT_CONF, else
 * /etc/keyvault/keyvault.conf if it exists, else built-in defaults (a
 * software store under $KEYVAULT_HOME or the per-user data directory).
 * A named file that cannot be read or parsed is an error (KV_ERR_CONFIG,
 * KV_ERR_IO); *out is NULL then, and kv_errmsg(NULL) gives the detail.
 */
KV_API KV_WUR kv_rc kv_ctx_new(kv_ctx **out, const char *config_path) KV_NONNULL(1);

/* kv_ctx_free - close every backend and free the context. Keys opened from
 * ctx must be freed first. Accepts NULL. */
KV_API void kv_ctx_free(kv_ctx *ctx);

/*
 * kv_errmsg - the detail of the last failure on ctx in the calling thread:
 * one line naming what failed and why (for a backend error, the call and
 * its decoded code). Never NULL; "" when the last call succeeded. With
 * ctx NULL, the detail of the last failed kv_ctx_new in this thread.
 */
KV_API const char *kv_errmsg(const kv_ctx *ctx);

/*
 * kv_backend_code - the raw backend code behind the last failure on ctx in
 * the calling thread (a CK_RV, a TSS2_RC, an errno or an OpenSSL error
 * code), and its kind ("CK_RV", "TSS2_RC", "errno", "openssl", or "" when
 * there is none). Returns 0 when there is none. kind may be NULL.
 */
KV_API unsigned long kv_backend_code(const kv_ctx *ctx, const char **kind);

/* kv_strerror - a short fixed description of a result code. Never NULL. */
KV_API const char *kv_strerror(kv_rc rc);

/* kv_version - the library's version, "MAJOR.MINOR.PATCH" as released
 * (the one this program runs against, not the one it was built with).
 * Never NULL. */
KV_API const char *kv_version(void);

/*
 * kv_ctx_backend - describe the i-th configured backend, in order of
 * preference. *name is its name, *available 1 when it can be used, and
 * *why (may be NULL) says why not. KV_ERR_INVALID_ARG past the end.
 */
KV_API KV_WUR kv_rc kv_ctx_backend(kv_ctx *ctx, size_t i, const char **name,
                                   int *available, const char **why) KV_NONNULL(1, 3, 4);

/*
 * kv_ctx_backend_stat - a counter kept by the backend named `backend` of
 * ctx, for benchmarks and tests. The TPM backend keeps "commands" (TPM
 * commands sent) and "session_commands" (those authorised in the salted
 * HMAC session), counted on its connection, which every context of the
 * process on the same TCTI shares. KV_ERR_INVALID_ARG when ctx has no such
 * backend, KV_ERR_BACKEND_UNAVAILABLE when it is not usable,
 * KV_ERR_UNSUPPORTED for a counter it does not keep. *value is 0 on failure.
 */
KV_API KV_WUR kv_rc kv_ctx_backend_stat(kv_ctx *ctx, const char *backend, const char *stat,
                                        uint64_t *value) KV_NONNULL(1, 2, 3, 4);

/* ---- keys ------------------------------------------------------------- */

/*
 * kv_key_generate - create a key NAME of the given type.
 * backend: "software", "pkcs11", "tpm", or NULL for the first available
 * backend in the configured order that can hold the type (a TPM holds no
 * Ed25519 key; a named backend that cannot gives KV_ERR_UNSUPPORTED).
 * Fails with KV_ERR_KEY_EXISTS when any backend already holds NAME; never
 * overwrites a key. Creation is atomic among processes and threads sharing
 * a home directory (a lock file there); on a token, a creator without that
 * lock can at worst make both creators fail, never leave two keys of one
 * name (see docs/design.md). When out is not NULL the new key is returned
 * open.
 * Names are 1-64 characters of [A-Za-z0-9._-], not starting with '.'.
 */
KV_API KV_WUR kv_rc kv_key_generate(kv_ctx *ctx, const char *name, kv_key_type type,
                                    const char *backend, kv_key **out) KV_NONNULL(1, 2);

/*
 * kv_key_generate_at - create a key of the given type at an explicit
 * location, without a configured token, key directory or store:
 *   pkcs11:token=T;object=NAME[;id=%xx..]?module-path=M&pin-value=P  (or
 *     module-name=, pin-source=; the key is labelled NAME on that token)
 *   tpm2:file=/abs/dir/NAME.pem      (a TSS2 PRIVATE KEY file)
 *   tpm2:handle=0x81xxxxxx           (a persistent key, 0x81000000-0x817fffff;
 *     made with the owner hierarchy's auth, which must be empty)
 *   file:/abs/dir/NAME.pem           (the software backend's key format,
 *     encrypted under the configured passphrase source)
 * Fails with KV_ERR_KEY_EXISTS when a key is already there (never
 * overwrites; names in other backends are not looked at), and with
 * KV_ERR_UNSUPPORTED when the backend cannot hold the type. When out is
 * not NULL the new key is returned open.
 */
KV_API KV_WUR kv_rc kv_key_generate_at(kv_ctx *ctx, const char *uri, kv_key_type type,
                                       kv_key **out) KV_NONNULL(1, 2);

/*
 * kv_key_open - open a key by NAME (searched in the configured backends, in
 * order) or by explicit URI: "pkcs11:..." (RFC 7512), "tpm2:..." or
 * "file:/path/to/key.pem" (a software store key file).
 */
KV_API KV_WUR kv_rc kv_key_open(kv_ctx *ctx, const char *ref, kv_key **out) KV_NONNULL(1, 2, 3);

/* kv_key_free - release an open key (the key itself stays). Accepts NULL. */
KV_API void kv_key_free(kv_key *key);

/* kv_key_destroy - delete the key named by ref (name or URI) from its
 * backend. Keys open elsewhere become unusable. */
KV_API KV_WUR kv_rc kv_key_destroy(kv_ctx *ctx, const char *ref) KV_NONNULL(1, 2);

/* kv_list_keys - every key in every available backend. Free with
 * kv_key_list_free. */
KV_API KV_WUR kv_rc kv_list_keys(kv_ctx *ctx, kv_key_list **out) KV_NONNULL(1, 2);

/* kv_key_list_free - free a list from kv_list_keys. Accepts NULL. */
KV_API void kv_key_list_free(kv_key_list *list);

/* kv_key_get_info - fill *info; strings stay valid while key is open. */
KV_API KV_WUR kv_rc kv_key_get_info(const kv_key *key, kv_key_info *info) KV_NONNULL(1, 2);

/*
 * kv_key_public_der - the public key as DER SubjectPublicKeyInfo.
 * buf NULL: *len receives the size needed.
 */
KV_API KV_WUR kv_rc kv_key_public_der(kv_key *key, unsigned char *buf, size_t *len)
    KV_NONNULL(1, 3);

/* kv_key_public_pem - the public key as a PEM "PUBLIC KEY" string, freed
 * with kv_string_free. */
KV_API KV_WUR kv_rc kv_key_public_pem(kv_key *key, char **pem) KV_NONNULL(1, 2);

/*
 * kv_key_store_cert - keep one X.509 certificate (DER or PEM) with the key:
 * a certificate object with the key's CKA_ID on a token, a NAME.crt file
 * beside a software or TPM key file. Its public key must be the key's own
 * (KV_ERR_BAD_INPUT otherwise). It replaces any chain stored earlier (it is
 * a chain of one: see kv_key_store_chain).
 */
KV_API KV_WUR kv_rc kv_key_store_cert(kv_key *key, const unsigned char *cert, size_t len)
    KV_NONNULL(1, 2);

/*
 * kv_key_cert_der - the certificate stored with the key (the leaf of its
 * chain), as DER. buf NULL: *len receives the size. KV_ERR_KEY_NOT_FOUND
 * when there is none.
 */
KV_API KV_WUR kv_rc kv_key_cert_der(kv_key *key, unsigned char *buf, size_t *len)
    KV_NONNULL(1, 3);

/*
 * kv_key_store_chain - keep a certificate chain with the key, replacing any
 * stored earlier: data is one PEM bundle of CERTIFICATE blocks, leaf first,
 * each certificate followed by its issuer (the root may be left out), or
 * one DER certificate; at most 8 certificates and 64 KiB. The leaf's public
 * key must be the key's, and each certificate's issuer name must be the
 * next one's subject with a signature that verifies under the next one's
 * key (validity dates are not checked). Anything else is KV_ERR_BAD_INPUT
 * naming the certificate by position, and nothing is stored. On a token
 * the leaf carries the key's CKA_ID and label and each issuer becomes a
 * certificate object of its own; beside a software or TPM key file the
 * chain is kept as NAME.crt, a PEM bundle.
 */
KV_API KV_WUR kv_rc kv_key_store_chain(kv_key *key, const unsigned char *data, size_t len)
    KV_NONNULL(1, 2);

/*
 * kv_key_chain_pem - the chain stored with the key as a PEM bundle, leaf
 * first, freed with kv_string_free. The chain read back is checked against
 * the key again: one whose leaf is not the key's, or out of order, is
 * KV_ERR_CORRUPT. KV_ERR_KEY_NOT_FOUND when there is none.
 */
KV_API KV_WUR kv_rc kv_key_chain_pem(kv_key *key, char **pem) KV_NONNULL(1, 2);

/* Facts about the certificate stored with a key (kv_key_cert_info). */
typedef struct kv_cert_info {
    char *subject;         /* RFC 4514 (X509_NAME_print_ex with XN_FLAG_RFC2253) */
    char *issuer;
    char *serial;          /* hex, upper case, no separators */
    size_t nsans;
    char **sans;           /* "dns:NAME", "ip:ADDR", "uri:URI", "email:ADDR",
                            * "dirname:RFC4514" ("othername:OID", "rid:OID") */
    int64_t not_before, not_after;  /* seconds since the epoch, UTC */
    int64_t renew_after;            /* when renewal becomes due */
    long days_left;                 /* whole days until not_after (negative when expired) */
    int renewal_due;                /* 1 once now >= renew_after */
    int expired;                    /* 1 once now > not_after */
    int is_ca;                      /* basicConstraints cA is TRUE */
    size_t chain_len;               /* certificates stored, leaf included */
} kv_cert_info;

/*
 * kv_key_cert_info - facts about the leaf certificate stored with the key,
 * in a new kv_cert_info freed with kv_cert_info_free. renew_after is
 * not_before plus the configured fraction of the lifetime ([x509]
 * renew_threshold, "67%"; 2/3 when not set), so an agent renews before
 * expiry rather than at it. KV_ERR_KEY_NOT_FOUND when there is no
 * certificate; KV_ERR_CORRUPT when the stored chain fails its checks.
 * Byte values outside printable ASCII in a SAN are written as \xHH.
 */
KV_API KV_WUR kv_rc kv_key_cert_info(kv_key *key, kv_cert_info **out) KV_NONNULL(1, 2);

/* kv_cert_info_free - free facts from kv_key_cert_info. Accepts NULL. */
KV_API void kv_cert_info_free(kv_cert_info *info);

/* kv_string_free - wipe and free a string the library returned. Accepts NULL. */
KV_API void kv_string_free(char *s);

/* ---- operations ------------------------------------------------------- */

/*
 * kv_sign - sign in with the private key, which never leaves its backend.
 * in: the message, or with KV_SIGN_PREHASHED its digest (length must match
 * the algorithm's hash; Ed25519 takes only messages). ECDSA signatures are
 * DER unless KV_SIGN_RAW asks for r||s. sig NULL: *siglen gets the maximum
 * size.
 */
KV_API KV_WUR kv_rc kv_sign(kv_key *key, kv_sign_alg alg, unsigned flags,
                            const unsigned char *in, size_t inlen,
                            unsigned char *sig, size_t *siglen) KV_NONNULL(1, 7);

/*
 * kv_verify - verify a signature in software against a public key given as
 * DER SubjectPublicKeyInfo or PEM. KV_OK when valid, KV_ERR_BAD_SIGNATURE
 * when not. ECDSA signatures are DER (strict) unless KV_SIGN_RAW. ctx is
 * used for error details and may be NULL.
 */
KV_API KV_WUR kv_rc kv_verify(kv_ctx *ctx, const unsigned char *pub, size_t publen,
                              kv_sign_alg alg, unsigned flags,
                              const unsigned char *in, size_t inlen,
                              const unsigned char *sig, size_t siglen);

/*
 * kv_ecdh - ECDH with the key's private half. peer: the other side's public
 * key as DER SubjectPublicKeyInfo, PEM, or a SEC1 point (uncompressed or
 * compressed) on the key's curve. Invalid or off-curve points fail with
 * KV_ERR_INVALID_PEER_KEY. The shared secret is the x coordinate (32 or 48
 * bytes); secret NULL: *len gets the size.
 */
KV_API KV_WUR kv_rc kv_ecdh(kv_key *key, const unsigned char *peer, size_t peerlen,
                            unsigned char *secret, size_t *len) KV_NONNULL(1, 2, 5);

/*
 * kv_ecdh_hkdf - ECDH as kv_ecdh, then HKDF-SHA256 (RFC 5869) over the
 * shared secret with the given salt and info, writing outlen bytes
 * (1..8160) to out. The raw shared secret is wiped and never returned.
 */
KV_API KV_WUR kv_rc kv_ecdh_hkdf(kv_key *key, const unsigned char *peer, size_t peerlen,
                                 const unsigned char *salt, size_t saltlen,
                                 const unsigned char *info, size_t infolen,
                                 unsigned char *out, size_t outlen) KV_NONNULL(1, 2, 8);

/* ---- TPM attestation ---------------------------------------------------- */

/*
 * Evidence signed by the TPM's attestation key (AK): a TPMS_ATTEST structure
 * and its signature. Free with kv_attestation_free.
 */
typedef struct kv_attestation {
    unsigned char *attest;        /* TPMS_ATTEST as the TPM marshalled it: what was signed */
    size_t attest_len;
    unsigned char *signature;     /* TPMT_SIGNATURE, marshalled (tpm2_checkquote -s) */
    size_t signature_len;
    unsigned char *signature_der; /* the same ECDSA signature as DER (openssl dgst -verify) */
    size_t signature_der_len;
} kv_attestation;

/* kv_attestation_free - free evidence. Accepts NULL. */
KV_API void kv_attestation_free(kv_attestation *a);

/*
 * kv_tpm_ak_public - the attestation key's public key as DER
 * SubjectPublicKeyInfo (buf NULL: *len gets the size). The AK, a restricted
 * ECC P-256 signing key (ECDSA, SHA-256) under the storage key, is created on
 * first use and kept as a key file of the tpm backend.
 */
KV_API KV_WUR kv_rc kv_tpm_ak_public(kv_ctx *ctx, unsigned char *buf, size_t *len)
    KV_NONNULL(1, 3);

/*
 * kv_tpm_quote - TPM2_Quote by the AK over a PCR selection with a caller
 * nonce (1-64 bytes). pcrs: "sha256:0-7" (the default when NULL),
 * "sha256:0,1,7", "sha1:0-3+sha256:0-7".
 */
KV_API KV_WUR kv_rc kv_tpm_quote(kv_ctx *ctx, const char *pcrs, const unsigned char *nonce,
                                 size_t nonce_len, kv_attestation **out) KV_NONNULL(1, 3, 5);

/*
 * kv_key_certify - TPM2_Certify: the AK signs that `key` (a TPM key) lives
 * in this TPM, with its name, attributes and the caller's nonce (1-64 bytes).
 */
KV_API KV_WUR kv_rc kv_key_certify(kv_key *key, const unsigned char *nonce, size_t nonce_len,
                                   kv_attestation **out) KV_NONNULL(1, 2, 4);

/* kv_tpm_pcr_read - read PCR `index` of `bank` ("sha256", "sha1", "sha384";
 * NULL: sha256) into digest (*len: in buffer size, out digest size). */
KV_API KV_WUR kv_rc kv_tpm_pcr_read(kv_ctx *ctx, const char *bank, unsigned index,
                                    unsigned char *digest, size_t *len) KV_NONNULL(1, 4, 5);

/* kv_tpm_pcr_extend - extend PCR `index` of `bank` with a digest of that
 * bank's size (a measurement). */
KV_API KV_WUR kv_rc kv_tpm_pcr_extend(kv_ctx *ctx, const char *bank, unsigned index,
                                      const unsigned char *digest, size_t len)
    KV_NONNULL(1, 4);

/*
 * kv_tpm_ek_cert - the endorsement key certificate from its standard NV
 * index (ECC P-256 0x01c0000a, RSA-2048 0x01c00002, ECC P-384 0x01c00016:
 * the first present), DER. buf NULL: *len gets the size.
 * KV_ERR_KEY_NOT_FOUND when the TPM holds none.
 */
KV_API KV_WUR kv_rc kv_tpm_ek_cert(kv_ctx *ctx, unsigned char *buf, size_t *len)
    KV_NONNULL(1, 3);

/*
 * kv_tpm_ak_public_area - the attestation key's TPM2B_PUBLIC as the TPM
 * marshals it (what its name hashes), in a buffer freed with free().
 */
KV_API KV_WUR kv_rc kv_tpm_ak_public_area(kv_ctx *ctx, unsigned char **buf, size_t *len)
    KV_NONNULL(1, 2, 3);

/*
 * kv_tpm_ak_store_chain - keep the AK's certificate chain (PEM bundle or one
 * DER certificate, leaf first, 1-8 certificates) beside the AK's key file,
 * replacing an earlier one (0600, written atomically). The leaf must hold
 * the AK's public key and each certificate must be issued by the next
 * (KV_ERR_BAD_INPUT otherwise); validity dates are not checked.
 */
KV_API KV_WUR kv_rc kv_tpm_ak_store_chain(kv_ctx *ctx, const char *pem, size_t len)
    KV_NONNULL(1, 2);

/*
 * kv_tpm_ak_chain_pem - the AK's stored chain as a PEM bundle, leaf first,
 * freed with kv_string_free; checked again as kv_tpm_ak_store_chain does
 * (KV_ERR_CORRUPT when it fails). KV_ERR_KEY_NOT_FOUND when none is stored.
 */
KV_API KV_WUR kv_rc kv_tpm_ak_chain_pem(kv_ctx *ctx, char **pem) KV_NONNULL(1, 2);

/* ---- evidence (docs/evidence.md) ------------------------------------------ */

/* Flags of kv_attest_opts. */
#define KV_ATTEST_NO_QUOTE     0x1u  /* no platform attestation (TPM2_Quote, PCRs, event log) */
#define KV_ATTEST_NO_EVENT_LOG 0x2u  /* the quote without the firmware event log */

/* What kv_attest should gather. Initialise with KV_ATTEST_OPTS_INIT; fields
 * are only ever appended and read as far as `size` covers. */
typedef struct kv_attest_opts {
    size_t size;            /* sizeof(kv_attest_opts) */
    const char *pcrs;       /* PCR selection as kv_tpm_quote takes it; NULL: "sha256:0-7" */
    unsigned flags;         /* KV_ATTEST_* */
    const char *event_log;  /* NULL: /sys/kernel/security/tpm0/binary_bios_measurements */
} kv_attest_opts;

#define KV_ATTEST_OPTS_INIT { sizeof(kv_attest_opts), NULL, 0, NULL }

/*
 * kv_attest - the evidence document for key (docs/evidence.md): a JSON
 * text carrying the key's public key and stored chain, its assurance, for
 * a TPM key TPM2_Certify of it by the AK and TPM2_Quote of the PCRs (both
 * over the nonce) with the AK's public area and chain, and on every backend
 * a proof-of-possession signature by the key over the nonce and the rest of
 * the document. nonce: 16 to 64 bytes from the verifier. opts may be NULL.
 * *evidence is freed with kv_string_free.
 */
KV_API KV_WUR kv_rc kv_attest(kv_key *key, const unsigned char *nonce, size_t nonce_len,
                              const kv_attest_opts *opts, char **evidence)
    KV_NONNULL(1, 2, 5);

/* Flags of kv_webauthn_opts. */
#define KV_WEBAUTHN_SIG_TPMT 0x1u  /* attStmt.sig as a marshalled TPMT_SIGNATURE (step-ca)
                                    * rather than DER (WebAuthn) */

/* What the WebAuthn attestation object binds. Initialise with
 * KV_WEBAUTHN_OPTS_INIT; read as far as `size` covers. */
typedef struct kv_webauthn_opts {
    size_t size;                            /* sizeof(kv_webauthn_opts) */
    const char *rp_id;                      /* the relying party's id (authData's rpIdHash) */
    const unsigned char *client_data_hash;  /* 32 bytes: SHA-256 of the clientDataJSON; the
                                             * certified extraData is SHA-256(authData ||
                                             * client_data_hash) */
    const char *acme_key_authorization;     /* instead: ACME device-attest-01, extraData =
                                             * SHA-256 of this key authorization */
    const unsigned char *credential_id;     /* NULL: SHA-256 of the key's SubjectPublicKeyInfo */
    size_t credential_id_len;               /* 1-1023 bytes */
    unsigned flags;                         /* KV_WEBAUTHN_* */
} kv_webauthn_opts;

#define KV_WEBAUTHN_OPTS_INIT { sizeof(kv_webauthn_opts), NULL, NULL, NULL, NULL, 0, 0 }

/*
 * kv_attest_webauthn - the key attestation of a TPM key as a WebAuthn
 * attestation object with fmt "tpm" (CBOR): authData (rpIdHash, flags UP
 * and AT, signCount 0, a zero AAGUID, the credential id and the key as a
 * COSE_Key), attStmt {ver "2.0", alg -7 (the AK's ES256), x5c (the AK's
 * stored chain, DER, leaf first), sig, certInfo (TPM2_Certify by the AK),
 * pubArea (the key's TPMT_PUBLIC)}. The AK needs a stored chain
 * (kv_tpm_ak_store_chain). Exactly one of client_data_hash and
 * acme_key_authorization. *obj is freed with free().
 */
KV_API KV_WUR kv_rc kv_attest_webauthn(kv_key *key, const kv_webauthn_opts *opts,
                                       unsigned char **obj, size_t *len)
    KV_NONNULL(1, 2, 3, 4);
/* ---- AK enrollment by credential activation (docs/enrollment.md) ---------- */

/*
 * kv_enroll_request - the device's enrollment request: a JSON document
 * (kv_string_free) with the TPM's EK certificate, the AK's public area
 * (TPM2B_PUBLIC, marshalled) and device_id (NULL: "tpm-" and the first 16
 * hex digits of the SHA-256 of the EK's public key). A device id is 1 to
 * 128 of A-Z a-z 0-9 . _ : @ -, not starting with '-'.
 */
KV_API KV_WUR kv_rc kv_enroll_request(kv_ctx *ctx, const char *device_id, char **request)
    KV_NONNULL(1, 3);

/*
 * kv_enroll_challenge - the verifier's answer to a request, made with no
 * TPM: the EK certificate must chain to a certificate in the PEM file
 * ek_anchors; the AK must be a restricted signing key with fixedTPM,
 * fixedParent and sensitiveDataOrigin; the registry (an SQLite file, made
 * when missing) must allow the device id for this EK. A random credential
 * is protected by TPM2_MakeCredential, computed in software for the EK
 * certificate's key and the AK's name, and recorded (its hash) as a
 * pending challenge for ttl seconds (0: 300, at most 86400). *challenge:
 * JSON (kv_string_free).
 */
KV_API KV_WUR kv_rc kv_enroll_challenge(kv_ctx *ctx, const char *request, size_t len,
                                        const char *ek_anchors, const char *registry,
                                        unsigned ttl, char **challenge)
    KV_NONNULL(1, 2, 4, 5, 7);

/*
 * kv_enroll_respond - the device recovers the challenge's credential with
 * TPM2_ActivateCredential (kv_tpm_activate_credential) and answers with it:
 * *response is JSON holding the credential (kv_string_free wipes it).
 */
KV_API KV_WUR kv_rc kv_enroll_respond(kv_ctx *ctx, const char *challenge, size_t len,
                                      char **response) KV_NONNULL(1, 2, 4);

/*
 * kv_enroll_finish - the verifier checks the response against its pending
 * challenge (used once, before it expires); when the credential matches,
 * the CA key `ca` issues the AK a certificate in profile "tpm-ak" (the
 * TPM's manufacturer, model and version from the EK certificate's SAN)
 * and the device is recorded in the registry. *ak_chain: the AK
 * certificate and the CA's chain, PEM (kv_string_free).
 * A device enrolled already gets a new AK only with KV_ENROLL_REPLACE in
 * flags (the old AK certificate is then revoked, reason superseded).
 * KV_ERR_AUTH_FAILED for a wrong credential; KV_ERR_KEY_NOT_FOUND for an
 * unknown or answered challenge; KV_ERR_PERMISSION for an expired one or
 * a device the registry refuses.
 */
#define KV_ENROLL_REPLACE 0x1u /* an enrolled device may replace its AK */
KV_API KV_WUR kv_rc kv_enroll_finish(kv_key *ca, const char *response, size_t len,
                                     const char *registry, unsigned flags, char **ak_chain)
    KV_NONNULL(1, 2, 4, 6);

/*
 * kv_tpm_activate_credential - TPM2_ActivateCredential with the TPM's AK
 * and its EK (made from the TCG template L-1 or L-2 and checked to be the
 * key of the TPM's EK certificate): id_object is a marshalled
 * TPM2B_ID_OBJECT, enc_secret a marshalled TPM2B_ENCRYPTED_SECRET (as
 * tpm2_makecredential writes them). The credential goes to buf (NULL:
 * *len gets the size, which is only known after activation: pass 64).
 */
KV_API KV_WUR kv_rc kv_tpm_activate_credential(kv_ctx *ctx, const unsigned char *id_object,
                                               size_t id_len, const unsigned char *enc_secret,
                                               size_t secret_len, unsigned char *buf,
                                               size_t *len) KV_NONNULL(1, 2, 4, 7);

/*
 * kv_registry_ak_status - look up an AK by its TPM name (nameAlg ||
 * digest, binary) in the registry file db: the device id it was enrolled
 * as (*device_id, free with kv_string_free) and whether that device is
 * revoked. KV_ERR_KEY_NOT_FOUND when the AK is not enrolled.
 */
KV_API KV_WUR kv_rc kv_registry_ak_status(kv_ctx *ctx, const char *db,
                                          const unsigned char *ak_name, size_t name_len,
                                          char **device_id, int *revoked)
    KV_NONNULL(1, 2, 3, 5, 6);

/* kv_registry_revoke - mark an enrolled device revoked (it fails
 * verification and cannot enroll again, through any EK of its TPM) and,
 * with ca (the CA key that issued its AK certificate; NULL: the registry
 * only), revoke that certificate in the CA's record (reason
 * privilegeWithdrawn); if that fails the registry is left unchanged.
 * KV_ERR_KEY_NOT_FOUND when it is not enrolled, KV_ERR_BAD_INPUT when it
 * is revoked already. */
KV_API KV_WUR kv_rc kv_registry_revoke(kv_ctx *ctx, const char *db, const char *device_id,
                                       kv_key *ca) KV_NONNULL(1, 2, 3);

/* kv_registry_allow - put device_id on the registry's allow-list (made
 * when missing). Once the list holds any id, only listed devices may
 * enroll. Adding an id twice is not an error. */
KV_API KV_WUR kv_rc kv_registry_allow(kv_ctx *ctx, const char *db, const char *device_id)
    KV_NONNULL(1, 2, 3);

/* kv_registry_list - the enrolled devices as a JSON array (kv_string_free)
 * of {device_id, ek_sha256, ak_name, ak_serial, enrolled, revoked}. */
KV_API KV_WUR kv_rc kv_registry_list(kv_ctx *ctx, const char *db, char **json)
    KV_NONNULL(1, 2, 3);

/* ---- X.509 ------------------------------------------------------------ */

/* KeyUsage bits (RFC 5280 4.2.1.3): bit n of the extension is 1 << n. */
#define KV_KU_DIGITAL_SIGNATURE 0x001u
#define KV_KU_NON_REPUDIATION   0x002u
#define KV_KU_KEY_ENCIPHERMENT  0x004u
#define KV_KU_DATA_ENCIPHERMENT 0x008u
#define KV_KU_KEY_AGREEMENT     0x010u
#define KV_KU_KEY_CERT_SIGN     0x020u
#define KV_KU_CRL_SIGN          0x040u

/* Flags of kv_cert_opts. */
#define KV_CERT_CA       0x1u  /* a CA certificate: basicConstraints CA:TRUE */
#define KV_CERT_PATH_LEN 0x2u  /* with KV_CERT_CA: path_len is the pathLenConstraint */

/*
 * What a certificate request or certificate should say. Initialise with
 * KV_CERT_OPTS_INIT (zero, with `size` set), then set what you need:
 * fields are only ever appended, and the library reads only those that
 * `size` covers. Strings are UTF-8 and copied; nothing is kept.
 */
typedef struct kv_cert_opts {
    size_t size;                 /* sizeof(kv_cert_opts) */
    const char *subject;         /* RFC 4514, most specific first: "CN=dev-42,O=Fleet" */
    const char *const *sans;     /* NULL-terminated: "dns:NAME", "ip:ADDR", "uri:URI",
                                  * "email:ADDR"; NULL for none */
    unsigned key_usage;          /* KV_KU_* bits; 0: the default for the key and purpose */
    const char *const *ext_key_usage; /* NULL-terminated: "serverAuth", "clientAuth",
                                  * "codeSigning", "emailProtection", "timeStamping",
                                  * "OCSPSigning" or a dotted OID; NULL for none */
    kv_sign_alg alg;             /* KV_ALG_DEFAULT follows the key: ECDSA with SHA-256
                                  * (P-256) or SHA-384 (P-384), RSA-PSS SHA-256, Ed25519 */
    unsigned days;               /* validity in days; 0: the default (365) */
    unsigned flags;              /* KV_CERT_* */
    unsigned path_len;           /* with KV_CERT_PATH_LEN */
    /* the TCG attestation-key profile ("tpm-ak"): the SAN directoryName's
     * values as the TCG EK credential profile writes them */
    const char *tpm_manufacturer; /* "id:53544D20" */
    const char *tpm_model;        /* "swtpm" */
    const char *tpm_version;      /* "id:00020000" */
} kv_cert_opts;

#define KV_CERT_OPTS_INIT { sizeof(kv_cert_opts), NULL, NULL, 0, NULL, KV_ALG_DEFAULT, 0, 0, 0, \
                            NULL, NULL, NULL }

/*
 * kv_csr_create - a PKCS#10 certificate request signed by key, as a PEM
 * "CERTIFICATE REQUEST" string freed with kv_string_free. It carries
 * opts->subject (NULL: the empty name, which then needs a SAN), and as
 * requested extensions the SANs, the key usage and EKU asked for (no
 * default key usage in a request) and, with KV_CERT_CA, basicConstraints
 * CA:TRUE. Signed with opts->alg (KV_ALG_DEFAULT follows the key;
 * KV_ALG_RSA_PKCS1_* for PKCS#1 v1.5). opts->days is checked, not used.
 * On failure *pem is NULL and kv_errmsg names what was refused.
 */
KV_API KV_WUR kv_rc kv_csr_create(kv_key *key, const kv_cert_opts *opts, char **pem)
    KV_NONNULL(1, 2, 3);

/*
 * kv_cert_selfsign - a self-signed X.509 v3 certificate for key, as a PEM
 * "CERTIFICATE" string freed with kv_string_free: issuer = subject
 * (required; "" only with a SAN, which is then critical), valid from 60 s
 * ago for opts->days (0: 365, at most 36500), a random 127-bit serial,
 * basicConstraints (critical; CA:TRUE with KV_CERT_CA), keyUsage (critical;
 * when opts->key_usage is 0: keyCertSign, cRLSign and digitalSignature for
 * a CA, else digitalSignature, plus keyEncipherment for RSA), the EKUs and
 * SANs asked for, and subject and authority key identifiers. The library
 * does not store it: kv_key_store_cert does.
 */
KV_API KV_WUR kv_rc kv_cert_selfsign(kv_key *key, const kv_cert_opts *opts, char **pem)
    KV_NONNULL(1, 2, 3);

/* ---- the vault CA ------------------------------------------------------ */

/* Revocation reasons: the CRLReason values of RFC 5280 5.3.1. */
typedef enum kv_revoke_reason {
    KV_REVOKE_UNSPECIFIED = 0,
    KV_REVOKE_KEY_COMPROMISE = 1,
    KV_REVOKE_CA_COMPROMISE = 2,
    KV_REVOKE_AFFILIATION_CHANGED = 3,
    KV_REVOKE_SUPERSEDED = 4,
    KV_REVOKE_CESSATION_OF_OPERATION = 5,
    KV_REVOKE_PRIVILEGE_WITHDRAWN = 9,
} kv_revoke_reason;

/*
 * kv_ca_issue - the CA key `ca` issues a certificate for a PKCS#10 request
 * (PEM or DER) under a profile: "tls-server", "tls-client",
 * "device-identity", "sub-ca" or "tpm-ak" (docs/x509.md, "The vault CA").
 * The CA's certificate is the one stored with `ca` (kv_key_store_cert): it
 * must hold ca's public key, be CA:TRUE with keyCertSign and be within its
 * validity. The request's signature is checked first (KV_ERR_BAD_SIGNATURE);
 * its subject is kept (tpm-ak: empty), its SANs re-checked and kept when
 * the profile allows their kind; a requested CA:TRUE, key usage or extended
 * key usage the profile does not grant is KV_ERR_BAD_INPUT; other requested
 * extensions are dropped. opts (may be NULL): days (0: 365, sub-ca 1825;
 * never past the CA's own not-after), alg, for sub-ca KV_CERT_CA |
 * KV_CERT_PATH_LEN with a path_len below the CA's, for tpm-ak the tpm_*
 * fields. Each certificate is recorded in HOME/ca/CA_NAME.db before it is
 * returned. *pem (kv_string_free): the certificate, then the chain stored
 * with the CA key without a self-signed root (ready for kv_key_store_chain).
 */
KV_API KV_WUR kv_rc kv_ca_issue(kv_key *ca, const char *profile, const unsigned char *csr,
                                size_t csrlen, const kv_cert_opts *opts, char **pem)
    KV_NONNULL(1, 2, 3, 6);

/*
 * kv_ca_issue_pubkey - kv_ca_issue for a bare public key (DER
 * SubjectPublicKeyInfo or PEM) with the subject and SANs from opts: for a
 * key that cannot sign a request, such as a TPM attestation key (profile
 * "tpm-ak", whose subject is empty and whose SAN holds opts' tpm_* values).
 */
KV_API KV_WUR kv_rc kv_ca_issue_pubkey(kv_key *ca, const char *profile,
                                       const unsigned char *pub, size_t publen,
                                       const kv_cert_opts *opts, char **pem)
    KV_NONNULL(1, 2, 3, 6);

/*
 * kv_ca_revoke - record the revocation of a certificate the CA issued,
 * by its serial number in hex ("openssl x509 -serial" prints it). An
 * unknown serial is KV_ERR_KEY_NOT_FOUND; one revoked before is
 * KV_ERR_BAD_INPUT saying when.
 */
KV_API KV_WUR kv_rc kv_ca_revoke(kv_key *ca, const char *serial_hex, kv_revoke_reason reason)
    KV_NONNULL(1, 2);

/*
 * kv_ca_crl - a CRL (v2, PEM in *pem, kv_string_free) signed by the CA key
 * listing every certificate it revoked, with its date and reason, valid
 * from now for `days` (0: 7), with the next cRLNumber. The CA's
 * certificate must allow cRLSign.
 */
KV_API KV_WUR kv_rc kv_ca_crl(kv_key *ca, unsigned days, char **pem) KV_NONNULL(1, 3);

/* ---- OpenSSL 3 ----------------------------------------------------------- */

/* OpenSSL's types by their struct tags, so this header needs no OpenSSL
 * header: struct evp_pkey_st is EVP_PKEY, struct ossl_lib_ctx_st is
 * OSSL_LIB_CTX, and so on. */
struct evp_pkey_st;
struct ossl_lib_ctx_st;
struct ossl_core_handle_st;
struct ossl_dispatch_st;

/*
 * kv_key_evp_pkey - an EVP_PKEY for the vault key, for any OpenSSL API that
 * takes a private key (SSL_CTX_use_PrivateKey, X509_sign, EVP_DigestSign,
 * EVP_PKEY_derive). Its private operations go to the key's backend through
 * the "keyvault" provider, which this call registers and loads in libctx
 * (NULL: OpenSSL's default library context) when it is not there yet; the
 * default provider stays available for everything else. Verification,
 * hashing and public-key work stay in software. Its private half cannot be
 * exported. The EVP_PKEY holds a reference of its own to key, so the caller
 * may kv_key_free(key) at once; the key's kv_ctx must outlive the EVP_PKEY.
 * Free *out with EVP_PKEY_free. Key types: EC P-256/P-384, RSA, Ed25519.
 */
KV_API KV_WUR kv_rc kv_key_evp_pkey(kv_key *key, struct ossl_lib_ctx_st *libctx,
                                    struct evp_pkey_st **out) KV_NONNULL(1, 3);

/*
 * kv_provider_init - the "keyvault" provider's entry point: what the module
 * keyvault.so's OSSL_provider_init calls, and what a program passes to
 * OSSL_PROVIDER_add_builtin to serve the provider from its own copy of the
 * library. Its kv_ctx comes from the provider parameter keyvault_conf (a
 * configuration file path, in the provider's section of openssl.cnf), else
 * from kv_ctx_new(NULL). Returns 1 on success, 0 on failure (OpenSSL's
 * convention for provider entry points).
 */
KV_API int kv_provider_init(const struct ossl_core_handle_st *handle,
                            const struct ossl_dispatch_st *in,
                            const struct ossl_dispatch_st **out, void **provctx);

/* ---- key references ---------------------------------------------------- */

/* Flags of kv_key_reference_pem. */
#define KV_REF_BY_NAME 0x1u /* the reference holds the key's name, not its URI */

/*
 * kv_key_reference_pem - a PEM "KEYVAULT KEY REFERENCE" naming the key, for
 * programs that read their private key from a PEM file through OpenSSL with
 * the keyvault provider activated (docs/provider.md). It holds DER
 * SEQUENCE { version INTEGER (1), ref UTF8String }: ref is the key's
 * explicit URI (kv_key_info.uri), or with KV_REF_BY_NAME its name (found
 * again in the configured backends, in order). Nothing secret: a pkcs11:
 * URI with a pin-value is refused (KV_ERR_BAD_URI). *pem is freed with
 * kv_string_free.
 */
KV_API KV_WUR kv_rc kv_key_reference_pem(kv_key *key, unsigned flags, char **pem)
    KV_NONNULL(1, 3);

/*
 * kv_key_open_reference - open the key a key reference names: data is PEM
 * text holding a "KEYVAULT KEY REFERENCE" block (blocks of other kinds before
 * it are passed over) or that block's DER, at most 64 KiB. The reference is
 * refused (KV_ERR_BAD_INPUT, KV_ERR_UNSUPPORTED for another version,
 * KV_ERR_BAD_URI for a pin-value) before any backend is asked; then as
 * kv_key_open.
 */
KV_API KV_WUR kv_rc kv_key_open_reference(kv_ctx *ctx, const unsigned char *data, size_t len,
                                          kv_key **out) KV_NONNULL(1, 2, 4);

/*
 * kv_key_open_tpm_file - open a TPM key from the bytes of a "TSS2 PRIVATE
 * KEY" PEM file (the TPM backend's key files, tpm2-openssl's,
 * tpm2-tss-engine's) or the DER of its block, at most 16 KiB, for a caller
 * handed the file's contents rather than its path (the keyvault OpenSSL
 * provider's decoder).
 * The key is in no store: kv_key_get_info gives it no name (NULL) and, as
 * its uri, a description that opens nothing; kv_key_reference_pem refuses
 * it. Its parent: 0x40000001 is the owner storage primary (tpm2-openssl's
 * template), 0x81xxxxxx that persistent key; its auth value: none with
 * emptyAuth TRUE, else the context's [tpm] auth (docs/tpm.md). Errors:
 * KV_ERR_BACKEND_UNAVAILABLE without a usable TPM backend, KV_ERR_CORRUPT
 * for bytes that do not parse or blobs that do not unmarshal,
 * KV_ERR_UNSUPPORTED for another key type, parent or a public area that is
 * not an EC/RSA signing key, KV_ERR_AUTH_FAILED when an auth value is
 * needed and none configured, then the TPM's (TPM2_Load, decoded).
 */
KV_API KV_WUR kv_rc kv_key_open_tpm_file(kv_ctx *ctx, const unsigned char *data, size_t len,
                                         kv_key **out) KV_NONNULL(1, 2, 4);

/* ---- names ------------------------------------------------------------ */

/* kv_key_type_name / kv_key_type_from_name: "ec-p256", "ec-p384", "rsa-2048",
 * "rsa-3072", "ed25519". from_name returns KV_KEY_UNKNOWN for other text. */
KV_API const char *kv_key_type_name(kv_key_type type);
KV_API kv_key_type kv_key_type_from_name(const char *name);

/* kv_sign_alg_name / kv_sign_alg_from_name: "ecdsa-sha256", "rsa-pss-sha256",
 * "rsa-pkcs1-sha256", "ed25519", ... ; "default" for KV_ALG_DEFAULT.
 * from_name returns -1 for unknown text. */
KV_API const char *kv_sign_alg_name(kv_sign_alg alg);
KV_API int kv_sign_alg_from_name(const char *name);

/* kv_assurance_name: "software", "token", "tpm" or "unknown". */
KV_API const char *kv_assurance_name(kv_assurance a);

/* ---- verifying evidence (gateway side; no key store or TPM needed) ------ */

/* A verification policy: trust anchors, AK trust, assurance floor, maximum
 * age and expected PCR values (see docs/evidence.md, "Verification"). */
typedef struct kv_policy kv_policy;

/*
 * kv_policy_load - read a policy file (the INI syntax of keyvault.conf):
 * [trust] anchors, ak_anchors, ak_pin, registry; [evidence] assurance, max_age;
 * [pcrs] bank and expected values by index. Certificate files named in it
 * are read now; relative paths are taken from the policy file's directory.
 * KV_ERR_CONFIG naming the file, line and key for anything wrong, among
 * them a floor of tpm with no way to trust an AK. Free with kv_policy_free.
 */
KV_API KV_WUR kv_rc kv_policy_load(kv_ctx *ctx, const char *path, kv_policy **out)
    KV_NONNULL(1, 2, 3);

/* kv_policy_free - free a policy. Accepts NULL. */
KV_API void kv_policy_free(kv_policy *policy);

/* One check of a verification: its stable name ("format", "nonce", "pop",
 * "tpm.ak-signature", ...), whether it passed, and what was found. */
typedef struct kv_verdict_check {
    const char *name;
    int passed;
    const char *detail;
} kv_verdict_check;

/* The outcome of kv_evidence_verify. Strings and buffers belong to it. */
typedef struct kv_verdict {
    int ok;                       /* 1 only when every check passed */
    kv_assurance assurance;       /* what the evidence claims (proven when ok) */
    unsigned char *key_public;    /* the identity key, DER SubjectPublicKeyInfo; NULL if unread */
    size_t key_public_len;
    char *ak_name;                /* the AK's TPM name in hex, NULL without a tpm section */
    char *device_id;              /* the device the registry enrolled the AK as, or NULL */
    size_t count;                 /* checks that ran, in the order they ran */
    kv_verdict_check *checks;
} kv_verdict;

/*
 * kv_evidence_verify - check an evidence document (kv_attest's output)
 * against the nonce the verifier issued (16 to 64 bytes) and a policy.
 * Returns KV_OK only when every check passed; KV_ERR_EVIDENCE when one or
 * more failed, kv_errmsg naming the first; *verdict lists every check that
 * ran either way (NULL only for KV_ERR_INVALID_ARG and KV_ERR_NO_MEMORY).
 * Needs no backend: a context made for verifying only works. Free the
 * verdict with kv_verdict_free.
 */
KV_API KV_WUR kv_rc kv_evidence_verify(kv_ctx *ctx, const char *evidence, size_t len,
                                       const unsigned char *nonce, size_t nonce_len,
                                       const kv_policy *policy, kv_verdict **verdict)
    KV_NONNULL(1, 6, 7);

/* kv_verdict_free - free a verdict. Accepts NULL. */
KV_API void kv_verdict_free(kv_verdict *verdict);

/* ---- key policy ------------------------------------------------------- */

/* Uses a key policy may allow (kv_key_policy.uses). */
#define KV_USE_SIGN   0x1u  /* kv_sign, CSRs, self-signed certificates, the provider's signatures */
#define KV_USE_ECDH   0x2u  /* kv_ecdh, kv_ecdh_hkdf */
#define KV_USE_ATTEST 0x4u  /* kv_attest, kv_attest_webauthn, kv_key_certify */
#define KV_USE_ISSUE  0x8u  /* certificates and CRLs signed as a CA (kv_ca_*) */
#define KV_USE_ALL    0xfu
/* Flags of kv_key_policy. */
#define KV_POLICY_HARDWARE_ONLY 0x1u  /* software is not acceptable: never made or opened in
                                       * the software backend */
/* What a key may be used for, fixed when it is made and stored with it
 * (docs/policy.md). */
typedef struct kv_key_policy {
    size_t size;          /* sizeof(kv_key_policy) */
    unsigned uses;        /* KV_USE_* bits */
    uint32_t algs;        /* bit (1u << alg) per allowed kv_sign_alg (algorithm and hash);
                           * 0: every algorithm that fits the key */
    int64_t not_before;   /* seconds since the epoch; 0: none */
    int64_t not_after;    /* 0: none */
    unsigned flags;       /* KV_POLICY_* */
} kv_key_policy;
#define KV_KEY_POLICY_INIT { sizeof(kv_key_policy), KV_USE_ALL, 0, 0, 0, 0 }

/*
 * kv_key_generate_ex - kv_key_generate with a policy stored with the key.
 * name_or_uri: a key name (backend as for kv_key_generate), or a URI as
 * kv_key_generate_at takes (backend must be NULL then). policy NULL: no
 * policy, as kv_key_generate. The policy is checked (KV_ERR_INVALID_ARG
 * naming the field: unknown bits, uses 0, algorithms that do not fit the
 * type, not_after before not_before or in the past) and stored where the
 * backend keeps it (docs/policy.md); a key is never left without it.
 * KV_ERR_POLICY when the context's [policy] or the policy itself refuses
 * the generation (KV_POLICY_HARDWARE_ONLY in the software backend).
 */
KV_API KV_WUR kv_rc kv_key_generate_ex(kv_ctx *ctx, const char *name_or_uri, kv_key_type type,
                                       const char *backend, const kv_key_policy *policy,
                                       kv_key **out) KV_NONNULL(1, 2);

/*
 * kv_key_get_policy - the policy stored with key. A key without one gives
 * KV_KEY_POLICY_INIT's values. out->size must be set by the caller (at
 * least the size of the fields up to flags: KV_ERR_INVALID_ARG otherwise);
 * it is left as given.
 */
KV_API KV_WUR kv_rc kv_key_get_policy(const kv_key *key, kv_key_policy *out) KV_NONNULL(1, 2);
/* ---- versions and rotation (docs/lifecycle.md) ------------------------ */

/*
 * A key name NAME opens the current version of the key; NAME@N opens
 * version N (NAME@1 is the key as first generated). Rotation makes version
 * N+1 in the same backend, makes it current and keeps the previous current
 * version usable for an overlap, after which it is retired: its public key
 * stays readable, signing, ECDH, attestation and issuing with it are
 * refused with KV_ERR_POLICY.
 */
typedef enum kv_version_state {
    KV_VERSION_CURRENT = 0,   /* what NAME opens: every operation */
    KV_VERSION_OVERLAP = 1,   /* the previous current version until its retire_at */
    KV_VERSION_RETIRED = 2,   /* public key only */
    KV_VERSION_PENDING = 3,   /* made by a rotation that has not committed (yet) */
    KV_VERSION_ABANDONED = 4, /* left by an interrupted rotation; never current */
} kv_version_state;

/* Options of kv_key_rotate. */
typedef struct kv_rotate_opts {
    size_t size;      /* sizeof(kv_rotate_opts) */
    int64_t overlap;  /* seconds the previous version keeps working; -1: the
                       * configuration's [lifecycle] overlap (default 7 days) */
    int64_t grace;    /* seconds after retirement until kv_key_prune destroys a
                       * version; -1: [lifecycle] grace (default: kept) */
    unsigned flags;   /* KV_ROTATE_* */
} kv_rotate_opts;
/* Flags of kv_rotate_opts. */
#define KV_ROTATE_KEEP 0x1u /* never destroy the previous version (grace is not read) */
#define KV_ROTATE_OPTS_INIT { sizeof(kv_rotate_opts), -1, -1, 0 }

/* One version of a key (kv_key_versions). Times are seconds since the
 * epoch, 0 when there is none. */
typedef struct kv_key_version {
    unsigned version;
    kv_version_state state;   /* as of the call: an overlap past retire_at is retired */
    const char *name;         /* what opens exactly this version: "gw" or "gw@2" */
    int64_t created;
    int64_t activated;        /* when it became current */
    int64_t retire_at;        /* overlap: when it retires; retired: when it did */
    int64_t destroy_at;       /* when kv_key_prune may destroy it */
} kv_key_version;

/* Every version of one key, oldest first. */
typedef struct kv_key_version_list {
    const char *name;         /* the key's name */
    const char *backend;
    unsigned current;         /* the current version */
    size_t count;
    kv_key_version *versions;
} kv_key_version_list;

/*
 * kv_key_rotate - make a new version of key `name` (a name, not a URI nor
 * NAME@N) in its backend, with the current version's type, and make it
 * current; the previous current version enters its overlap. Runs under
 * the home's creation lock. A rotation that fails or is killed part-way
 * leaves the previous version current and usable, and running it again
 * finishes it. opts NULL: KV_ROTATE_OPTS_INIT. *out (when out is not NULL)
 * is the new version, open.
 */
KV_API KV_WUR kv_rc kv_key_rotate(kv_ctx *ctx, const char *name, const kv_rotate_opts *opts,
                                  kv_key **out) KV_NONNULL(1, 2);

/*
 * kv_key_versions - the versions of key `name` and their states. A key
 * never rotated has one version, current. Free with kv_key_version_list_free.
 */
KV_API KV_WUR kv_rc kv_key_versions(kv_ctx *ctx, const char *name, kv_key_version_list **out)
    KV_NONNULL(1, 2, 3);

/* kv_key_version_list_free - free a version list. Accepts NULL. */
KV_API void kv_key_version_list_free(kv_key_version_list *list);

/* kv_version_state_name - "current", "overlap", "retired", "pending",
 * "abandoned"; "unknown" for anything else. Never NULL. */
KV_API const char *kv_version_state_name(kv_version_state state);

/*
 * kv_key_prune - destroy the versions of key `name` that are retired and
 * past their destroy_at, and the ones interrupted rotations abandoned.
 * *destroyed (when not NULL) is how many were destroyed.
 */
KV_API KV_WUR kv_rc kv_key_prune(kv_ctx *ctx, const char *name, unsigned *destroyed)
    KV_NONNULL(1, 2);

/* ---- certificate renewal ------------------------------------------------- */

/* Flags of kv_renew_opts. */
#define KV_RENEW_FORCE  0x1u  /* renew even when renewal is not due yet */
#define KV_RENEW_ROTATE 0x2u  /* a new key version gets the new certificate */

/* How kv_cert_renew renews. Initialise with KV_RENEW_OPTS_INIT; fields are
 * only ever appended, and the library reads only those `size` covers. */
typedef struct kv_renew_opts {
    size_t size;           /* sizeof(kv_renew_opts) */
    unsigned flags;        /* KV_RENEW_* */
    const char *profile;   /* the CA profile (kv_ca_issue); NULL: from the old
                            * certificate (CA:TRUE: sub-ca; extended key usage
                            * serverAuth and clientAuth: device-identity,
                            * serverAuth: tls-server, clientAuth: tls-client) */
    int64_t lifetime;      /* seconds from now to the new not-after; 0: the old
                            * certificate's (its not-after minus its not-before,
                            * less the minute every certificate starts early) */
    const kv_rotate_opts *rotate; /* with KV_RENEW_ROTATE: the overlap and grace
                            * of the version it replaces (NULL: the config's) */
} kv_renew_opts;
#define KV_RENEW_OPTS_INIT { sizeof(kv_renew_opts), 0, NULL, 0, NULL }

/*
 * kv_cert_renew - renew the certificate stored with key `name` (a name or
 * URI, as kv_key_open takes) through the vault CA `ca`, once renewal is due
 * (kv_key_cert_info's renewal_due, [x509] renew_threshold) or with
 * KV_RENEW_FORCE. Not due and not forced: KV_OK with *pem NULL, nothing
 * done. Else a request signed by the key keeps the old certificate's
 * subject, subject alternative names and extended key usages (and for a
 * CA its path length), `ca` issues it (kv_ca_issue, recorded in its
 * record), the new certificate is checked to keep them, and the new chain
 * replaces the old one with the key (kv_key_store_chain); *pem
 * (kv_string_free) is that chain, leaf first. With KV_RENEW_ROTATE the
 * request comes from a new version of the key, which gets the chain and
 * only then becomes current. A failure leaves the old chain (and version)
 * in force, and kv_errmsg says when the old certificate expires.
 * KV_ERR_KEY_NOT_FOUND when the key has no certificate.
 */
KV_API KV_WUR kv_rc kv_cert_renew(kv_ctx *ctx, const char *name, kv_key *ca,
                                  const kv_renew_opts *opts, char **pem)
    KV_NONNULL(1, 2, 3, 5);
/* ---- the audit log (docs/audit.md) ----------------------------------- */

/* One audit record as the callback sees it. Strings are valid during the
 * call only. */
typedef struct kv_audit_record {
    size_t size;            /* sizeof(kv_audit_record): later fields are added at the end */
    const char *time;       /* RFC 3339, UTC, microseconds: "2026-11-26T19:00:00.123456Z" */
    const char *key;        /* the key's name; NULL when the call had none */
    unsigned version;       /* the key's version; 0 when not known */
    const char *backend;    /* "software", "pkcs11", "tpm"; NULL when not known */
    const char *op;         /* "generate", "open", "sign", "ecdh", "attest", "issue",
                             * "cert-store", "rotate", "renew", "destroy", "prune" */
    const char *result;     /* "ok", "denied" (a policy), "auth-failed" (PIN, passphrase,
                             * auth value), "error" */
    kv_rc rc;               /* the call's result code */
    const char *message;    /* kv_errmsg of a failure; NULL on success */
    const char *detail;     /* what kind of use ("certificate request", ...); or NULL */
    long pid;
    const char *exe;        /* the executable (/proc/self/exe) */
} kv_audit_record;

typedef void (*kv_audit_fn)(void *arg, const kv_audit_record *rec);

/*
 * kv_audit_set_callback - call fn(arg, record) for every audit record of
 * ctx, in the thread that made the call, after it (fn NULL: stop). Set it
 * before ctx is shared between threads. Calls fn makes into libkeyvault
 * make no records. Works with or without an [audit] section. fn runs
 * before the call returns: the call's OpenSSL errors are off the queue by
 * then, and any fn leaves are dropped with the call's.
 */
KV_API KV_WUR kv_rc kv_audit_set_callback(kv_ctx *ctx, kv_audit_fn fn, void *arg)
    KV_NONNULL(1);

/* What kv_audit_verify found. */
typedef struct kv_audit_report {
    uint64_t records;         /* records that verified, seals included */
    uint64_t seals;           /* seals among them */
    uint64_t bad_line;        /* the first bad record's line (1: the first); 0 when none */
    uint64_t last_seal_line;  /* the last seal's line; 0 when none */
    uint64_t unsealed;        /* records after the last seal */
    uint64_t last_seal_seq;   /* the last seal's seq; 0 when none */
    char last_seal_hash[65];  /* the last seal's hash (64 hex digits); "" when none: with
                               * last_seal_seq, an anchor to keep outside the file */
} kv_audit_report;

/* kv_audit_verify flag: a log whose last record is not a seal fails (an
 * empty one too). */
#define KV_AUDIT_VERIFY_SEALED 0x1u

/* A seal known from outside the file (the syslog line each seal writes, or
 * an earlier verify's last seal): the file must hold a seal with this seq
 * and this hash. */
typedef struct kv_audit_anchor {
    uint64_t seq;
    char hash[65];            /* 64 hex digits, lower case */
} kv_audit_anchor;

/*
 * kv_audit_verify - check an audit log file: every record's hash, the
 * chain of prev hashes and seq numbers from the first record, and, with a
 * public key (DER or PEM; NULL: seals are not checked), every seal's
 * signature. KV_OK when all of it holds; else KV_ERR_CORRUPT (a record
 * edited, deleted, reordered, a truncated tail, an anchor the file does not
 * hold) or KV_ERR_BAD_SIGNATURE (a seal that does not verify, sealed by
 * another key, no seal at all: an empty file too), with rep->bad_line and
 * kv_errmsg naming the first bad record. anchors (nanchors of them; NULL, 0: none) are seals the
 * file must hold: without one, records cut from the end at an earlier seal,
 * or cut and written again, cannot be told from a shorter log. Without a
 * public key only the chain is proved: whoever can write the file can make
 * it pass. Checks what the file holds when the call starts; writers may go
 * on appending.
 */
KV_API KV_WUR kv_rc kv_audit_verify(kv_ctx *ctx, const char *path, const unsigned char *pub,
                                    size_t publen, unsigned flags,
                                    const kv_audit_anchor *anchors, size_t nanchors,
                                    kv_audit_report *rep)
    KV_NONNULL(1, 2, 8);

/*
 * kv_audit_tail - the last `count` records of an audit log (path NULL: the
 * configured [audit] file) as JSON Lines in *out (kv_string_free).
 */
KV_API KV_WUR kv_rc kv_audit_tail(kv_ctx *ctx, const char *path, size_t count, char **out)
    KV_NONNULL(1, 4);

/* ---- JOSE: JWK and compact JWS (RFC 7515, 7517, 7638; docs/jose.md) ---- */

/* Flags for kv_jws_sign (and kv_jwt_sign). */
#define KV_JWS_X5C    0x1u  /* put the stored chain in the protected header as x5c */
#define KV_JWS_NO_KID 0x2u  /* leave kid out (default: kid = RFC 7638 thumbprint) */

/*
 * kv_jwk_public - the key's public half as one JWK (RFC 7517) in a new
 * string (kv_string_free): EC {kty, crv, x, y} with x and y padded to the
 * field size, RSA {kty, n, e}, Ed25519 {kty:"OKP", crv, x}, each with kid
 * (the RFC 7638 thumbprint), alg and use "sig". alg is the one JWS alg
 * the key may use, which a verifier then pins: ES256 (P-256), ES384 (P-384),
 * EdDSA, and for RSA PS256 or RS256 when the key's policy allows only that
 * one; an RSA key allowed both gets no alg, so that either verifies.
 * KV_ERR_POLICY when the key's policy allows none of the JWS algs of its
 * type (a P-256 key whose policy excludes ecdsa-sha256, say).
 */
KV_API KV_WUR kv_rc kv_jwk_public(kv_key *key, char **json) KV_NONNULL(1, 2);

/* kv_jwk_thumbprint - the RFC 7638 thumbprint of the key's public JWK:
 * base64url of the SHA-256 of its required members, in a new string. */
KV_API KV_WUR kv_rc kv_jwk_thumbprint(kv_key *key, char **kid) KV_NONNULL(1, 2);

/* kv_jwks - a JWK set {"keys":[...]} of n keys' kv_jwk_public, in a new
 * string (kv_string_free). n must be 1 to 64, no key NULL, and no key in
 * the set twice (same thumbprint): KV_ERR_INVALID_ARG naming both
 * positions. Errors go to the first non-NULL key's context. */
KV_API KV_WUR kv_rc kv_jwks(kv_key *const *keys, size_t n, char **json) KV_NONNULL(1, 3);

/*
 * kv_jws_sign - a compact JWS (RFC 7515) of payload signed by key, in a
 * new string (kv_string_free). alg: "ES256" (P-256), "ES384" (P-384),
 * "PS256" or "RS256" (RSA), "EdDSA" (Ed25519), or NULL for the key's
 * default (the JWK's alg); any other pairing is KV_ERR_BAD_INPUT.
 * header_json: NULL or a JSON object of further protected header members
 * (typ, cty, ...; it may not carry jwk, jku, x5u or crit, nor an alg other
 * than alg). The header gets alg, then kid = the key's thumbprint unless
 * KV_JWS_NO_KID or header_json has a kid, and with KV_JWS_X5C the stored
 * chain as x5c. The signature is one kv_sign (the key's policy and audit
 * apply); ECDSA signatures are raw r||s as JWS requires.
 */
KV_API KV_WUR kv_rc kv_jws_sign(kv_key *key, const char *alg, const char *header_json,
                                const unsigned char *payload, size_t len, unsigned flags,
                                char **jws) KV_NONNULL(1, 7);

/* Options of kv_jws_verify. */
typedef struct kv_jws_verify_opts {
    size_t size;        /* sizeof(kv_jws_verify_opts) */
    size_t max_len;     /* 0: 64 KiB; a longer token is refused before any parsing */
    unsigned flags;     /* none yet; must be 0 */
} kv_jws_verify_opts;
#define KV_JWS_VERIFY_OPTS_INIT { sizeof(kv_jws_verify_opts), 0, 0 }

/*
 * kv_jws_verify - verify a compact JWS with keys the caller trusts: keys is
 * the text of a JWK set {"keys":[...]}, one JWK, or exactly one PEM
 * "PUBLIC KEY" block (nothing but whitespace around it; EC on a named
 * curve). The key is chosen by the token's kid (a JWK without kid is known
 * by its thumbprint; keys may share a kid, RFC 7517 4.5, and then only
 * those usable for the header's alg count: more than one is refused; a
 * token without kid needs a set of exactly one usable key),
 * never from the token; the alg must be the one the key pins (its JWK alg,
 * else by type: ES256 for P-256, ES384 for P-384, EdDSA for Ed25519, PS256
 * or RS256 for RSA of at least 2048 bits). none, HS*, a header with jwk,
 * jku, x5u or crit, duplicate members, bad base64url and a token over
 * max_len are KV_ERR_BAD_INPUT (the key set text has its own limit,
 * 256 KiB); a signature that does not verify (or has
 * the wrong length) is KV_ERR_BAD_SIGNATURE. kv_errmsg names the reason.
 * On success *payload (may be NULL: not wanted) is the payload,
 * NUL-terminated (*plen, may be NULL, excludes the NUL), and *header_json
 * (may be NULL) the protected header as compact JSON; both are freed with
 * kv_string_free. ctx is used for error details and may be NULL.
 */
KV_API KV_WUR kv_rc kv_jws_verify(kv_ctx *ctx, const char *jws, const char *keys,
                                  const kv_jws_verify_opts *opts, char **header_json,
                                  unsigned char **payload, size_t *plen) KV_NONNULL(2, 3);
/* ---- JWT and OAuth2 client assertions (RFC 7519, 7523; docs/jose.md) --- */

/*
 * kv_jwt_sign - a JWT: the JSON object claims_json (written again compact;
 * duplicate members refused) signed by key as kv_jws_sign does with alg
 * (NULL: the key's default, the alg of its JWK; for RSA PS256, or RS256
 * when its policy allows only RS256), protected header {alg, kid,
 * typ:"JWT"}. flags: KV_JWS_X5C, KV_JWS_NO_KID. *jwt is freed with
 * kv_string_free.
 */
KV_API KV_WUR kv_rc kv_jwt_sign(kv_key *key, const char *alg /* NULL: the key's */,
                                const char *claims_json, unsigned flags, char **jwt)
    KV_NONNULL(1, 3, 5);

/* Options of kv_jwt_client_assertion. */
typedef struct kv_client_assertion_opts {
    size_t size;              /* sizeof(kv_client_assertion_opts) */
    const char *client_id;    /* iss and sub; 1 to 2048 bytes of UTF-8 */
    const char *aud;          /* the token endpoint URL; 1 to 2048 bytes of UTF-8 */
    unsigned ttl;             /* seconds from iat to exp; 0: 60; at most 3600 */
    const char *evidence;     /* NULL, or kv_attest evidence JSON (an object) */
    unsigned flags;           /* KV_JWS_X5C, KV_ASSERTION_EVIDENCE_HASH */
    const char *alg;          /* NULL: the key's default (PS256 for RSA); "RS256" for an
                               * authorization server that takes only that */
} kv_client_assertion_opts;
#define KV_CLIENT_ASSERTION_OPTS_INIT { sizeof(kv_client_assertion_opts), NULL, NULL, 0, NULL, 0, NULL }
/* Carry the evidence as "kv_evidence_s256" (base64url SHA-256 of its bytes
 * as given) instead of the object itself ("kv_evidence"). */
#define KV_ASSERTION_EVIDENCE_HASH 0x100u

/*
 * kv_jwt_client_assertion - an RFC 7523 client assertion for the OAuth2
 * private_key_jwt client authentication: claims iss = sub = client_id,
 * aud, iat = now, exp = iat + ttl, jti = 16 random bytes in base64url,
 * plus the evidence when given; header {alg, kid, typ:"JWT"}, alg as
 * kv_jws_sign takes it (opts->alg, NULL: the key's default). *jwt is
 * freed with kv_string_free. KV_ERR_INVALID_ARG for missing or overlong
 * ids, a ttl over 3600, unknown flags; KV_ERR_BAD_INPUT for evidence that
 * is not a JSON object; else as kv_jws_sign.
 */
KV_API KV_WUR kv_rc kv_jwt_client_assertion(kv_key *key, const kv_client_assertion_opts *opts,
                                            char **jwt) KV_NONNULL(1, 2, 3);

/* Flags of kv_jwt_verify_opts. */
#define KV_JWT_NO_SKEW      0x1u /* no clock-skew allowance at all */
#define KV_JWT_ALLOW_NO_EXP 0x2u /* accept a token without exp (required by default) */
#define KV_JWT_ANY_AUD      0x4u /* aud NULL: accept a token that carries an aud (refused by default) */

/* Options of kv_jwt_verify. */
typedef struct kv_jwt_verify_opts {
    size_t size;              /* sizeof(kv_jwt_verify_opts) */
    const char *aud;          /* required audience (the string, or a member of the aud array); NULL: not checked */
    const char *iss;          /* required issuer; NULL: not checked */
    const char *sub;          /* required subject; NULL: not checked */
    long long now;            /* the time to check against; 0: time(NULL) */
    unsigned skew;            /* clock-skew allowance in seconds; 0: 60 (KV_JWT_NO_SKEW for none) */
    unsigned max_ttl;         /* 0: no limit; else exp - iat (exp - now without iat) must not exceed it */
    size_t max_len;           /* 0: 64 KiB; a longer token is refused before any parsing */
    unsigned flags;           /* KV_JWT_NO_SKEW, KV_JWT_ALLOW_NO_EXP, KV_JWT_ANY_AUD */
    const char *typ;          /* required header typ (case-insensitive); NULL: absent, "JWT" or
                               * "application/jwt" */
} kv_jwt_verify_opts;
#define KV_JWT_VERIFY_OPTS_INIT { sizeof(kv_jwt_verify_opts), NULL, NULL, NULL, 0, 0, 0, 0, 0, NULL }

/*
 * kv_jwt_verify - verify a JWT as kv_jws_verify does (keys: a JWK set, one
 * JWK or a PEM public key; the alg pinned by the key), then its claims,
 * which must be a JSON object: exp is required (unless
 * KV_JWT_ALLOW_NO_EXP) and the token is valid while now < exp + skew;
 * before nbf - skew it is not yet valid, an iat after now + skew is refused;
 * exp, nbf and iat must be numbers from 0 to year 9999; then max_ttl, aud,
 * iss and sub as opts asks (opts NULL: the defaults). With opts->aud NULL a
 * token that carries an aud is refused (RFC 7519 4.1.3: it is meant for
 * someone) unless KV_JWT_ANY_AUD. The header typ must be opts->typ, or with
 * typ NULL absent or "JWT" (RFC 8725 3.11; a token of another type, say
 * "at+jwt", is not taken for this one). A claim or typ that fails is
 * KV_ERR_CLAIMS, claims that are not a JSON object KV_ERR_BAD_INPUT, the
 * rest as kv_jws_verify; kv_errmsg names the reason ("token expired at
 * 2026-11-26T21:00:00Z (now ..., skew 60 s)", "aud 'x' does not match
 * 'https://as/token'"). On success *claims_json (may be NULL: not wanted)
 * is the payload, freed with kv_string_free. ctx is used for error details
 * and may be NULL (kv_errmsg(NULL) then).
 */
KV_API KV_WUR kv_rc kv_jwt_verify(kv_ctx *ctx, const char *jwt, const char *keys,
                                  const kv_jwt_verify_opts *opts, char **claims_json)
    KV_NONNULL(2, 3);

#ifdef __cplusplus
}
#endif
#endif /* KEYVAULT_H */
