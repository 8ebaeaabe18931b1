/*
 * internal.h - structures shared by the core and the backends.
 *
 * Flow of every key operation: public function (key.c) -> argument checks
 * -> kv_policy_check (the one place where policy checks run) -> backend
 * ops. Backends trust their inputs and never call each other.
 */
#ifndef KV_INTERNAL_H
#define KV_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "keyvault.h"

#define KV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define KV_MAX_BACKENDS 8
#define KV_NAME_MAX 64

/* ---- errors (error.c) ------------------------------------------------- */

/* Start a public call on ctx: forget the previous call's detail. */
void kv_err_begin(const kv_ctx *ctx);
/*
 * KV_CALL_BEGIN(ctx), the first statement of a public function that does
 * work: kv_err_begin(ctx), and an OpenSSL error mark that is popped when
 * the function returns, so that a call leaves the thread's OpenSSL error
 * queue as it found it. What went wrong is in kv_errmsg; errors left on
 * the queue would be read by the caller's next SSL_get_error on that
 * thread as its own (SSL_get_error(3): the queue must be empty before a
 * TLS I/O call). A cleanup variable, so that no return path is missed.
 */
int kv_call_enter(const kv_ctx *ctx);
/* Drop the OpenSSL errors the current call raised, not the caller's (in
 * place of ERR_clear_error, which empties the caller's queue too). */
void kv_ossl_drop(void);
void kv_call_leave(int *scope);
#define KV_CALL_BEGIN(ctx)                                                                    \
    int kv_call_scope_ __attribute__((cleanup(kv_call_leave), unused)) = kv_call_enter(ctx)
/* Record the detail of a failure (only the first one of a call is kept)
 * and return rc, so that callers write `return kv_error(...)`. */
kv_rc kv_error(const kv_ctx *ctx, kv_rc rc, const char *fmt, ...) KV_PRINTF(3, 4);
/* The same with a raw backend code and its kind ("CK_RV", "TSS2_RC"). */
kv_rc kv_error_code(const kv_ctx *ctx, kv_rc rc, const char *kind, unsigned long code,
                    const char *fmt, ...) KV_PRINTF(5, 6);
/* The same, appending the first OpenSSL error of the queue (then cleared). */
kv_rc kv_error_ossl(const kv_ctx *ctx, kv_rc rc, const char *fmt, ...) KV_PRINTF(3, 4);
/* The same for a failed system call: rc from errno (ENOSPC -> KV_ERR_NO_SPACE,
 * EACCES -> KV_ERR_PERMISSION, ...), appending strerror(err). */
kv_rc kv_error_errno(const kv_ctx *ctx, int err, const char *fmt, ...) KV_PRINTF(3, 4);
/*
 * Speculative steps (an attempt that is retried after a reconnect, an
 * alternative that is tried and dropped): take a mark before the step and
 * rewind to it to drop the detail the step recorded. A detail recorded
 * before the mark is never dropped; only kv_err_begin, at a public entry
 * point, starts afresh.
 */
typedef struct kv_err_mark {
    bool set;   /* a detail was kept when the mark was taken */
} kv_err_mark;
kv_err_mark kv_err_mark_get(const kv_ctx *ctx);
void kv_err_rewind(const kv_ctx *ctx, kv_err_mark m);
/* Whether a detail was already recorded in this call. */
bool kv_err_is_set(const kv_ctx *ctx);
/* Put the recorded detail between prefix and suffix (a detail of rc's
 * kv_strerror when none was recorded), cutting the detail rather than the
 * suffix when it does not fit: for a caller that adds what it knows, such
 * as when the certificate a failed renewal keeps expires. */
void kv_err_frame(const kv_ctx *ctx, kv_rc rc, const char *prefix, const char *suffix);

/* Set rc in `var` with a message, and jump to the function's `out:` label. */
#define KV_FAIL(ctx, var, code, ...)                       \
    do {                                                   \
        (var) = kv_error((ctx), (code), __VA_ARGS__);      \
        goto out;                                          \
    } while (0)
/* The same, appending the first OpenSSL error of the queue (kv_error_ossl). */
#define KV_FAIL_OSSL(ctx, var, code, ...)                  \
    do {                                                   \
        (var) = kv_error_ossl((ctx), (code), __VA_ARGS__); \
        goto out;                                          \
    } while (0)
/* The same for a failed system call: the code comes from err (kv_error_errno). */
#define KV_FAIL_ERRNO(ctx, var, err, ...)                  \
    do {                                                   \
        (var) = kv_error_errno((ctx), (err), __VA_ARGS__); \
        goto out;                                          \
    } while (0)
/* Jump to `out:` when the kv_rc expression fails, keeping its code in var. */
#define KV_CHECK(var, expr)                                \
    do {                                                   \
        (var) = (expr);                                    \
        if ((var) != KV_OK)                                \
            goto out;                                      \
    } while (0)

/* ---- memory and files (mem.c) ----------------------------------------- */

void kv_wipe(void *p, size_t n);
/* Free a NUL-terminated secret after wiping it. Accepts NULL. */
void kv_secret_free(char *s);
char *kv_strdup(const char *s);
char *kv_asprintf(const char *fmt, ...) KV_PRINTF(1, 2);
/* What a memory BIO holds, as a new NUL-terminated string (its length in
 * *len when len is not NULL); NULL when out of memory. */
char *kv_bio_text(BIO *bio, size_t *len);
/* Create dir and missing parents with mode 0700. */
kv_rc kv_mkdir_p(const kv_ctx *ctx, const char *dir);
/*
 * Write data to dir/name atomically: a 0600 temporary file in dir, written,
 * fsynced, then renamed over name (replace) or hard-linked to it
 * (!replace: fails with KV_ERR_KEY_EXISTS if name exists). The directory is
 * fsynced. On failure nothing named `name` changes and the temporary file
 * is gone.
 */
kv_rc kv_write_file_atomic(const kv_ctx *ctx, const char *dir, const char *name,
                           const void *data, size_t len, bool replace);
/* Read a whole regular file (at most max bytes) into a NUL-terminated
 * buffer. Anything else (a FIFO, device, directory) fails at once with
 * KV_ERR_IO; it is never waited on. Free with kv_wipe + free when it may
 * hold a secret. */
kv_rc kv_read_file(const kv_ctx *ctx, const char *path, size_t max, char **out, size_t *len);
/* kv_read_file with stricter rules: */
#define KV_READ_STORE 1u   /* a file of a key store: a symbolic link or a file that is
                            * not regular is KV_ERR_CORRUPT; one owned by another user
                            * (not root) or writable by group or others KV_ERR_PERMISSION */
#define KV_READ_SECRET 2u  /* a secret: KV_ERR_PERMISSION when the file is owned by
                            * another user (not root) or open to group or others, or
                            * its directory fails kv_dir_check */
kv_rc kv_read_file_ex(const kv_ctx *ctx, const char *path, size_t max, unsigned flags,
                      char **out, size_t *len);
/* A directory that holds keys or secrets: KV_OK when it is owned by the
 * caller or root and not writable by group or others; KV_ERR_PERMISSION
 * naming it and the problem when not; KV_ERR_KEY_NOT_FOUND (nothing
 * recorded) when it does not exist. `what` names it in messages. */
kv_rc kv_dir_check(const kv_ctx *ctx, const char *dir, const char *what);
/* A database file (the CA record, the enrollment registry; `what` names it):
 * a regular file of this user or root, not a link, not writable by group
 * or others; with create, made 0600 when missing. */
kv_rc kv_db_file_check(const kv_ctx *ctx, const char *path, const char *what, bool create);
/* The size-query output pattern of the public API: buf NULL asks for the
 * size (*len = n); a buffer smaller than n is KV_ERR_BUFFER_TOO_SMALL with
 * *len = n; else data is copied and *len = n. `what` names the result. */
kv_rc kv_copy_out(const kv_ctx *ctx, const char *what, const void *data, size_t n,
                  unsigned char *buf, size_t *len);

/*
 * Read a secret from a source: "file:PATH" (first line, without its line
 * end) or "env:VAR". `what` names the secret in messages ("passphrase",
 * "PIN"); the secret itself never appears in one. Free with kv_secret_free.
 * A missing file is KV_ERR_KEY_NOT_FOUND so callers can create it.
 */
kv_rc kv_secret_read(const kv_ctx *ctx, const char *source, const char *what, char **out);
/* Whether source has one of the forms kv_secret_read takes. */
bool kv_secret_source_valid(const char *source);

/* ---- file-backed key stores (filestore.c, meta.c) -------------------- */

/* How one backend's keys look in a file store. */
typedef struct kv_filestore {
    const char *backend;      /* "software", "tpm": in metadata and lists */
    const char *uri_prefix;   /* "file:", "tpm2:file=": a key's URI is prefix + path */
    kv_assurance assurance;
} kv_filestore;

#define KV_MAC_KEY_LEN 32
typedef struct kv_list_builder kv_list_builder;

/* A backend's store directory, for its init: [section] key, else
 * HOME/sub; it must be absolute (KV_ERR_CONFIG). Errors are reported on
 * NULL, as init's are. */
kv_rc kv_fs_dir_config(const kv_ctx *ctx, const char *section, const char *key,
                       const char *sub, char **out);
/* DIR/NAME.pem (newly allocated). */
char *kv_fs_key_path(const char *dir, const char *name);
/* Whether DIR/NAME.pem exists (as anything: a link takes the name too):
 * KV_OK or KV_ERR_KEY_NOT_FOUND (nothing recorded); an untrusted store is
 * an error (kv_dir_check). */
kv_rc kv_fs_exists(const kv_ctx *ctx, const char *dir, const char *name);
/* Make the store directory (0700) if needed and check it (kv_dir_check). */
kv_rc kv_fs_prepare(const kv_ctx *ctx, const char *dir);
/* Read key file `path` of key `name`: its directory must pass kv_dir_check,
 * the file must be a regular file, not a link (KV_ERR_CORRUPT naming the
 * key); KV_ERR_KEY_NOT_FOUND, without a detail, when there is none (open
 * by name tries the next backend; open by URI names the file itself). */
kv_rc kv_fs_read_key(const kv_ctx *ctx, const char *path, const char *name, size_t max,
                     char **text, size_t *len);
/* An absolute path to a NAME.pem key file (from a URI) -> its valid NAME
 * and, when dir is not NULL, its directory (new string; "/" for the root).
 * KV_ERR_BAD_URI for anything else (relative, percent-encoded, not NAME.pem). */
kv_rc kv_fs_path_split(const kv_ctx *ctx, const char *path, char **dir,
                       char name[KV_NAME_MAX + 1]);
/* Add every DIR/NAME.pem to a list, type and version from its metadata
 * (unchecked; missing or damaged metadata lists as unknown, version 1). */
kv_rc kv_fs_list(const kv_ctx *ctx, const kv_filestore *fs, const char *dir,
                 kv_list_builder *lb);
/* Create a file of 32 random bytes (base64, one line, 0600) at an absolute
 * path, unless one exists (a racing creator's file is kept). */
kv_rc kv_secret_file_create(const kv_ctx *ctx, const char *path);
/* The metadata MAC key of a store from its secret file DIR/.store-secret
 * (made first when create; KV_ERR_CORRUPT when missing otherwise). */
kv_rc kv_fs_store_mac_key(const kv_ctx *ctx, const char *dir, bool create,
                          unsigned char out[KV_MAC_KEY_LEN]);
/* The same as a kv_mac_key_fn: arg is a key file's path; its directory's
 * secret is read, never made. */
kv_rc kv_fs_key_dir_mac_key(const kv_ctx *ctx, void *key_path,
                            unsigned char out[KV_MAC_KEY_LEN]);

/* HKDF-SHA256 of a secret into a metadata MAC key. */
kv_rc kv_meta_mac_key(const kv_ctx *ctx, const void *ikm, size_t len,
                      unsigned char out[KV_MAC_KEY_LEN]);
/* Write DIR/NAME.json (atomically, 0600): name, type, backend, version,
 * created, the SHA-256 of pub's SubjectPublicKeyInfo, the key's policy
 * (when not NULL), and an HMAC-SHA256 of all of it under mac_key. For a
 * new key only (its key file not there yet): a DIR/NAME.crt left by an
 * earlier key of the name (a destroy killed between its files) is removed
 * first, so the new key never starts with another key's certificate. */
kv_rc kv_meta_write(const kv_ctx *ctx, const char *dir, const char *name, kv_key_type type,
                    const char *backend, unsigned version, const EVP_PKEY *pub,
                    const kv_key_policy *policy, const unsigned char mac_key[KV_MAC_KEY_LEN]);
/* Fetch the MAC key a metadata check needs (called only when it does). */
typedef kv_rc (*kv_mac_key_fn)(const kv_ctx *ctx, void *arg,
                               unsigned char out[KV_MAC_KEY_LEN]);
/*
 * Check the metadata beside key file key_path against the key's name, its
 * backend and the public key the file holds: KV_ERR_CORRUPT naming the key
 * when the MAC does not verify, the metadata carries none, names another
 * key, or records another public key. Every key must have metadata, but
 * for a backend that opens foreign key files (store_dir not NULL: the TPM,
 * for tpm2-openssl's files) a key file the caller named outside store_dir,
 * in a directory without a KV_STORE_SECRET, may have none (version 1).
 * A type in the metadata must be the key file's. The policy it holds is
 * returned in *policy (NULL: none); a damaged one is KV_ERR_CORRUPT.
 */
/* The per-directory MAC secret of TPM key files (filestore.c). */
#define KV_STORE_SECRET ".store-secret"
kv_rc kv_meta_check(const kv_ctx *ctx, const char *store_dir, const char *key_path,
                    const char *name, const char *backend, const EVP_PKEY *pub,
                    kv_mac_key_fn mac_key, void *arg, unsigned *version,
                    kv_key_policy **policy);
/* Type and version from DIR/NAME.json, unchecked and quiet (for lists). */
void kv_meta_peek(const char *dir, const char *name, kv_key_type *type, unsigned *version);

/* DIR/NAME.pem -> DIR/NAME.EXT (newly allocated). */
char *kv_sibling_path(const char *key_path, const char *ext);
/* NAME.crt beside a key file: a certificate chain kept as a PEM bundle,
 * leaf first, written atomically; read back from a regular file of the
 * owner (KV_READ_STORE), KV_ERR_CORRUPT naming the key and the file when it
 * does not parse or its leaf does not hold pub, KV_ERR_KEY_NOT_FOUND when
 * there is none. The core checks the whole chain read again. */
kv_rc kv_cert_file_store(const kv_ctx *ctx, const char *key_path, const STACK_OF(X509) *chain);
kv_rc kv_cert_file_read(const kv_ctx *ctx, const char *key_path, const char *name,
                        const EVP_PKEY *pub, STACK_OF(X509) **chain);
/* Delete a key file and its NAME.json and NAME.crt. */
kv_rc kv_key_files_remove(const kv_ctx *ctx, const char *key_path);

/* ---- configuration (config.c) ----------------------------------------- */

typedef struct kv_config kv_config;
/* Parse an INI file. Errors name the file and line. */
kv_rc kv_config_load(const kv_ctx *ctx, const char *path, kv_config **out);
kv_config *kv_config_empty(void);
void kv_config_free(kv_config *cfg);
/* Value of key in [section], or NULL. */
const char *kv_config_get(const kv_config *cfg, const char *section, const char *key);
/* Key comparisons kv_config_load made (a test holds parsing to n log n). */
unsigned long kv_config_compares(const kv_config *cfg);

/* A key a configuration section accepts. Lists end with { NULL, 0 }. */
struct kv_config_key {
    const char *name;
    unsigned flags;
};
/* The value names where a secret is kept (file:PATH, env:VAR), never the
 * secret itself: anything else is refused without showing the value. */
#define KV_CFG_SECRET 0x1u
/* With KV_CFG_SECRET: "machine" and "machine:/PATH" are accepted too. */
#define KV_CFG_MACHINE 0x2u

/* A section a configuration may hold. keys NULL: a backend this build
 * leaves out; the section is accepted and its keys are not checked. */
struct kv_config_section {
    const char *name;
    const struct kv_config_key *keys;
};
/* Refuse an unknown section, an unknown key (naming the nearest known
 * one) and a secret written inline; errors name the file and line. */
kv_rc kv_config_check(const kv_ctx *ctx, const kv_config *cfg,
                      const struct kv_config_section *known, size_t nknown);
/* Boolean value ("true/false/yes/no/1/0/on/off"); def when absent. */
kv_rc kv_config_get_bool(const kv_ctx *ctx, const kv_config *cfg, const char *section,
                         const char *key, bool def, bool *out);
kv_rc kv_config_get_long(const kv_ctx *ctx, const kv_config *cfg, const char *section,
                         const char *key, long def, long min, long max, long *out);
/* The directory for libkeyvault's files: $KEYVAULT_HOME, else [keyvault]
 * home, else /var/lib/keyvault for root, else $XDG_DATA_HOME/keyvault or
 * ~/.local/share/keyvault (HOME, else the passwd entry's directory). With
 * none of these, KV_ERR_CONFIG asking for KEYVAULT_HOME (never /tmp). */
kv_rc kv_default_home(const kv_config *cfg, char **out);

/* ---- certificate chains (chain.c) ------------------------------------ */

#define KV_CHAIN_MAX 8                 /* certificates in a chain, leaf included */
#define KV_CERT_FILE_MAX (64 * 1024)   /* bytes of a chain, as given and as PEM */
/* Parse one PEM bundle of CERTIFICATE blocks (white space only around
 * them) or one DER certificate into a new stack. Failures are rc `bad`
 * naming `what` ("the chain", a file) and the certificate by position. */
kv_rc kv_chain_parse(const kv_ctx *ctx, const char *what, kv_rc bad, const unsigned char *data,
                     size_t len, STACK_OF(X509) **out);
/* The chain as a PEM bundle in a new NUL-terminated string (free). */
kv_rc kv_chain_pem(const kv_ctx *ctx, const STACK_OF(X509) *chain, char **pem, size_t *len);
#define KV_ANCHORS_FILE_MAX (1024 * 1024) /* bytes of a trust anchors file */
#define KV_ANCHORS_MAX 512                /* certificates in one */
/* Add the PEM certificates of a trust anchors file (a regular file of at
 * most KV_ANCHORS_FILE_MAX bytes, at most KV_ANCHORS_MAX certificates) to
 * store; *n their number. Failures are KV_ERR_CONFIG, the message led by
 * `what` (the setting that names the file). */
kv_rc kv_anchors_load(kv_ctx *ctx, const char *what, const char *path, X509_STORE *store, int *n);
/* Hold a chain against key `name` with public key pub: 1 to KV_CHAIN_MAX
 * certificates, the leaf's key is pub, each certificate's issuer is the
 * next one's subject and its signature verifies with the next one's key
 * (validity is not looked at). Failures are rc `bad`. */
kv_rc kv_chain_check(const kv_ctx *ctx, const STACK_OF(X509) *chain, const char *name,
                     const EVP_PKEY *pub, kv_rc bad);
/* The chain stored with key (leaf first), from its backend and checked
 * again: KV_ERR_KEY_NOT_FOUND (recorded) when there is none, KV_ERR_CORRUPT
 * when what is stored does not check out. */
kv_rc kv_chain_get(kv_key *key, STACK_OF(X509) **chain);
/* [x509] renew_threshold as a percentage (1-99), 0 when not set (2/3). */
kv_rc kv_renew_threshold(const kv_ctx *ctx, const kv_config *cfg, long *percent);

/* ---- algorithms (alg.c) ----------------------------------------------- */

typedef enum kv_family {
    KV_FAMILY_NONE = 0,
    KV_FAMILY_EC,
    KV_FAMILY_RSA,
    KV_FAMILY_ED25519,
} kv_family;

typedef enum kv_padding {
    KV_PAD_NONE = 0,
    KV_PAD_PSS,
    KV_PAD_PKCS1,
} kv_padding;

typedef struct kv_alg_desc {
    kv_sign_alg alg;
    const char *name;     /* "ecdsa-sha256" */
    kv_family family;
    kv_padding padding;
    const char *md;       /* OpenSSL digest name, NULL for Ed25519 */
    size_t mdlen;
} kv_alg_desc;

typedef struct kv_type_desc {
    kv_key_type type;
    const char *name;     /* "ec-p256" */
    kv_family family;
    const char *group;    /* OpenSSL group name for EC */
    unsigned bits;        /* RSA modulus bits, EC field bits */
    size_t field_len;     /* EC coordinate length in bytes */
    kv_sign_alg default_alg;
} kv_type_desc;

const kv_alg_desc *kv_alg_desc_get(kv_sign_alg alg);
const kv_type_desc *kv_type_desc_get(kv_key_type type);
/* Classify a public or private EVP_PKEY into one of the generated types
 * (KV_KEY_UNKNOWN for anything else). */
kv_key_type kv_type_of_pkey(const EVP_PKEY *pkey);
/* Whether an EC key names its curve (RFC 5480) rather than spelling out
 * explicit parameters. */
bool kv_pkey_named_curve(const EVP_PKEY *pkey);
/* The family of any EVP_PKEY (verification accepts any RSA size). */
kv_family kv_family_of_pkey(const EVP_PKEY *pkey);
/* Maximum signature size for a key and algorithm and flags. */
size_t kv_sig_max_len(const EVP_PKEY *pub, const kv_alg_desc *alg, unsigned flags);
/* Decode a public key given as DER SubjectPublicKeyInfo or PEM. */
kv_rc kv_pubkey_decode(const kv_ctx *ctx, const unsigned char *in, size_t len,
                       EVP_PKEY **out);
/*
 * Decode and validate an ECDH peer key for a key on `group`: DER SPKI, PEM
 * or a SEC1 point; it must be on that same named curve, on the curve and
 * not the point at infinity (EVP_PKEY_public_check_quick: both curves have
 * cofactor 1, so that is membership of the prime-order group).
 */
kv_rc kv_peer_decode(const kv_ctx *ctx, const char *group, const unsigned char *in,
                     size_t len, EVP_PKEY **out);
/* ECDSA r||s <-> DER. raw_len must be 2 * field_len. */
kv_rc kv_ecdsa_raw_to_der(const kv_ctx *ctx, const unsigned char *raw, size_t raw_len,
                          unsigned char **der, size_t *der_len);
kv_rc kv_ecdsa_der_to_raw(const kv_ctx *ctx, const unsigned char *der, size_t der_len,
                          size_t field_len, unsigned char *raw, size_t *raw_len);
/* The context's SHA-2 digest of that name ("SHA256", ...), fetched once. */
EVP_MD *kv_ctx_md(const kv_ctx *ctx, const char *name);
/* Hash in with the algorithm's digest. */
kv_rc kv_digest(kv_ctx *ctx, const kv_alg_desc *alg, const unsigned char *in, size_t len,
                unsigned char *md, size_t *mdlen);
/* Software verification with an EVP_PKEY (tbs is the digest except for
 * Ed25519, sig is DER for ECDSA). */
kv_rc kv_verify_pkey(const kv_ctx *ctx, OSSL_LIB_CTX *libctx, EVP_PKEY *pub,
                     const kv_alg_desc *alg, const unsigned char *tbs, size_t tbslen,
                     const unsigned char *sig, size_t siglen);

/* ---- backends --------------------------------------------------------- */

typedef struct kv_backend kv_backend;
typedef struct kv_list_builder kv_list_builder;
struct kv_pcr_values;

/*
 * A backend fills in this table. Mandatory entries are marked; an optional
 * entry left NULL makes the core answer KV_ERR_UNSUPPORTED. Later features
 * (certify, quote, certificate objects) are added as optional entries at
 * the end.
 */
struct kv_backend_ops {
    const char *name;         /* "software", "pkcs11", "tpm" */
    const char *uri_scheme;   /* "file", "pkcs11", "tpm2" */
    kv_assurance assurance;
    /* The keys of its [name] section, for kv_config_check. */
    const struct kv_config_key *config_keys;
    unsigned caps;            /* KV_CAP_* */

    /* Mandatory. Read the configuration, set be->state. Return KV_OK with
     * be->available = false and be->why set when the backend is not usable
     * on this machine (no module configured, no TPM). */
    kv_rc (*init)(kv_backend *be);
    void (*fini)(kv_backend *be);

    /* Mandatory. Fill key->name, key->uri, key->type, key->pub and key->bk.
     * `name` is validated; `uri` is the explicit URI for open_uri. */
    kv_rc (*generate)(kv_backend *be, const char *name, kv_key_type type, kv_key *key);
    kv_rc (*open_name)(kv_backend *be, const char *name, kv_key *key);
    kv_rc (*open_uri)(kv_backend *be, const char *uri, kv_key *key);
    /* Mandatory. Whether a key with this name exists (no decryption, no login
     * if it can be avoided): KV_OK when it does, KV_ERR_KEY_NOT_FOUND when not,
     * quietly (not-found records no detail: generation's real cause must
     * stay the call's message). */
    kv_rc (*exists)(kv_backend *be, const char *name);
    kv_rc (*list)(kv_backend *be, kv_list_builder *lb);
    kv_rc (*destroy)(kv_backend *be, kv_key *key);
    void (*key_free)(kv_key *key);

    /* Sign tbs (the digest; the message for Ed25519). ECDSA output is DER. */
    kv_rc (*sign)(kv_key *key, const kv_alg_desc *alg, const unsigned char *tbs,
                  size_t tbslen, unsigned char *sig, size_t *siglen);
    /* ECDH with a validated peer on the key's curve: x coordinate, field
     * length bytes. */
    kv_rc (*ecdh)(kv_key *key, EVP_PKEY *peer, unsigned char *secret, size_t *len);
    /* Keep a certificate chain with the key, replacing an earlier one: leaf
     * first, 1 to KV_CHAIN_MAX certificates, checked by the core (the leaf
     * holds key->pub, each is issued by the next). Read it back as a new
     * stack, leaf first (KV_ERR_KEY_NOT_FOUND when there is none); the core
     * checks what comes back. */
    kv_rc (*chain_store)(kv_key *key, STACK_OF(X509) *chain);
    kv_rc (*chain_read)(kv_key *key, STACK_OF(X509) **chain);

    /* Attestation (a TPM): evidence is returned in OpenSSL-allocated
     * buffers inside a kv_attestation; pcr selections are parsed by the
     * backend; digests go through caller buffers checked by the core. */
    kv_rc (*ak_public)(kv_backend *be, EVP_PKEY **pub);
    kv_rc (*quote)(kv_backend *be, const char *pcrs, const unsigned char *nonce, size_t len,
                   kv_attestation *out);
    kv_rc (*certify)(kv_key *key, const unsigned char *nonce, size_t len, kv_attestation *out);
    kv_rc (*pcr_read)(kv_backend *be, const char *bank, unsigned index, unsigned char *digest,
                      size_t *len);
    kv_rc (*pcr_extend)(kv_backend *be, const char *bank, unsigned index,
                        const unsigned char *digest, size_t len);
    kv_rc (*ek_cert)(kv_backend *be, unsigned char **der, size_t *len);

    /* A counter the backend keeps (kv_ctx_backend_stat): KV_ERR_UNSUPPORTED,
     * recorded, for a name it does not know. */
    kv_rc (*stat)(kv_backend *be, const char *name, uint64_t *value);
    /* Optional. Create a key at an explicit location: `uri` has the
     * backend's scheme and names one new key (its name comes from the URI);
     * fill key as generate does. KV_ERR_KEY_EXISTS when a key is already
     * there. Left NULL: keys are made by name only. */
    kv_rc (*generate_uri)(kv_backend *be, const char *uri, kv_key_type type, kv_key *key);
    /* Optional. Whether keys of this type can live in this backend at all
     * (static knowledge, no I/O: a TPM 2.0 has no Ed25519). NULL: every
     * type; a token without the mechanism still says so when asked. */
    bool (*can_hold)(const kv_backend *be, kv_key_type type);
    /* Optional. Open a key from the bytes of a key file in the backend's
     * own format (the TPM: a TSS2 PRIVATE KEY), not from its store: fill
     * key as open_uri does, key->name and key->uri a description without
     * anything secret (kv_key_info shows no name), key->from_data set.
     * Left NULL: the core answers KV_ERR_UNSUPPORTED. */
    kv_rc (*open_data)(kv_backend *be, const unsigned char *data, size_t len, kv_key *key);

    /* Evidence (KV_CAP_ATTEST; evidence.c). A key's or the AK's public
     * area as the TPM marshals it: TPM2B_PUBLIC when sized, else
     * TPMT_PUBLIC, in an OpenSSL-allocated buffer. */
    kv_rc (*key_public_area)(kv_key *key, bool sized, unsigned char **buf, size_t *len);
    kv_rc (*ak_public_area)(kv_backend *be, bool sized, unsigned char **buf, size_t *len);
    /* The AK's certificate chain beside its key file (checked by the core
     * before it is stored and after it is read): KV_ERR_KEY_NOT_FOUND,
     * without a detail, when there is none. */
    kv_rc (*ak_chain_store)(kv_backend *be, const STACK_OF(X509) *chain);
    kv_rc (*ak_chain_read)(kv_backend *be, STACK_OF(X509) **chain);
    /* TPM2_Quote with the values of the PCRs it covers, read so that they
     * hash to the quote's PCR digest (values NULL: the quote alone). */
    kv_rc (*quote_pcrs)(kv_backend *be, const char *pcrs, const unsigned char *nonce,
                        size_t len, kv_attestation *out, struct kv_pcr_values *values);
    /* Enrollment (a TPM; tpm/credential.c; the AK's public area comes from
     * ak_public_area). TPM2_ActivateCredential: the EK made from its
     * standard template, checked to be the key of the TPM's EK certificate,
     * recovers the credential that id_object (TPM2B_ID_OBJECT) and
     * enc_secret (TPM2B_ENCRYPTED_SECRET), both marshalled, protect for the
     * AK; out has *len bytes (in/out). ek_cert (DER; NULL: the first the
     * TPM holds) is the EK certificate whose key the credential is for. */
    kv_rc (*activate)(kv_backend *be, const unsigned char *ek_cert, size_t ek_len,
                      const unsigned char *id_object, size_t id_len,
                      const unsigned char *enc_secret, size_t secret_len, unsigned char *out,
                      size_t *len);
    /* Every EK certificate the TPM holds (DER, at most KV_EK_MAX), in the
     * order ek_cert tries the NV indices; *n of them, each freed by the
     * caller with OPENSSL_free. */
    kv_rc (*ek_certs)(kv_backend *be, unsigned char *der[], size_t len[], size_t *n);

    /* Optional. Remove what a destroy that failed part way left of the key
     * `name` once the key itself was gone (a PKCS#11 public key whose
     * private key went): *removed objects; KV_OK with none when a key of
     * that name exists or nothing is left. */
    kv_rc (*purge)(kv_backend *be, const char *name, size_t *removed);
};

/* PCR values as read for a quote, in the quote's order (bank by bank as
 * selected, indices ascending). */
#define KV_PCR_VALUES_MAX (4 * 24)
struct kv_pcr_values {
    size_t count;
    struct {
        const char *bank;            /* "sha1", "sha256", "sha384", "sha512" */
        unsigned index;
        unsigned char digest[64];
        size_t len;
    } v[KV_PCR_VALUES_MAX];
};
/* The AK's stored chain from be (an attester), checked against the AK:
 * KV_ERR_KEY_NOT_FOUND without a detail when there is none (attest.c). */
kv_rc kv_tpm_ak_chain_get(kv_ctx *ctx, kv_backend *be, STACK_OF(X509) **chain);

/* Capabilities in kv_backend_ops.caps. */
#define KV_CAP_ATTEST (1u << 0) /* fills ak_public, quote, certify, pcr_read, pcr_extend, ek_cert */

struct kv_backend {
    const struct kv_backend_ops *ops;  /* NULL when the named backend is not built */
    kv_ctx *ctx;
    const char *name;                  /* as configured */
    void *state;
    bool available;                    /* usable for names and generation */
    bool uri_ok;                       /* explicit URIs work even when not available */
    char why[256];                     /* why not available */
};

struct kv_ctx {
    OSSL_LIB_CTX *libctx;     /* private library context: app config cannot reroute us */
    EVP_MD *md_sha256, *md_sha384, *md_sha512;
    kv_config *cfg;
    char *home;
    bool require_hardware;
    struct kv_ctx_policy *cpolicy;  /* the configuration's [policy]; NULL: none */
    size_t nbackends;
    kv_backend backends[KV_MAX_BACKENDS];
    struct kv_audit *audit;   /* NULL: no audit sink (audit.c) */
    struct kv_sweeps *sweeps; /* directories swept of stale temporary files (ctx.c) */
};

/* Whether the directory (dev, ino) is due a sweep of stale temporary files
 * at `now` (seconds): not when ctx recorded one less than `period` seconds
 * ago; when it is, the sweep is recorded. Always due without a ctx. */
bool kv_ctx_sweep_due(const kv_ctx *ctx, unsigned long long dev, unsigned long long ino,
                      long long now, long long period);

struct kv_key {
    kv_ctx *ctx;
    kv_backend *be;
    char *name;
    char *uri;
    kv_key_type type;
    unsigned version;
    EVP_PKEY *pub;            /* public half, for export and verification */
    void *bk;                 /* backend's own key state */
    atomic_uint extra_refs;   /* references beyond the opener's (kv_key_evp_pkey's
                               * EVP_PKEYs); kv_key_free drops one while any remain */
    bool from_data;           /* opened from a key file's bytes (open_data): in no
                               * store, so no name or URI that opens it again */
    kv_key_policy *policy;    /* the key's policy (owned); NULL: none. The core sets it
                               * before generate (the backend stores it with the key);
                               * open reports the stored one here */
    struct kv_lifecycle *lc;  /* its version's state (rotate.c); NULL: not versioned */
};

/* Append one key to a list being built (strings are copied). */
kv_rc kv_list_add(kv_list_builder *lb, const char *name, const char *backend,
                  const char *uri, kv_key_type type, kv_assurance assurance,
                  unsigned version);

/* Key names: 1-64 of [A-Za-z0-9._-], not starting with '.'. */
bool kv_name_valid(const char *name);
/* For messages about a file: or tpm2: URI: the length of its part before
 * any query ('?') or fragment ('#'), the only part a message may show. */
size_t kv_uri_shown_len(const char *uri);

/* Operations the policy hook sees. */
typedef enum kv_op {
    KV_OP_GENERATE,
    KV_OP_OPEN,
    KV_OP_DESTROY,
    KV_OP_SIGN,
    KV_OP_ECDH,
    KV_OP_ATTEST,
    KV_OP_ISSUE,     /* signing a certificate or CRL (x509.c); a request is KV_OP_SIGN */
} kv_op;
/*
 * The single dispatch check every key operation passes, before its backend
 * call: require_hardware, the context's [policy] (backends, keys, uses,
 * manage) and, with key (NULL for an operation on no key: a quote, a PCR),
 * the key's policy (key->policy: the use of op, the validity window,
 * hardware only, and alg, when not NULL, against its algorithms). For
 * KV_OP_GENERATE, key is the one being made (its policy set, nothing else).
 * name names the key (or the operation) in messages. Refusals are
 * KV_ERR_POLICY naming the rule (KV_ERR_HARDWARE_REQUIRED for
 * require_hardware).
 */
kv_rc kv_policy_check(kv_ctx *ctx, kv_backend *be, const kv_key *key, kv_op op,
                      const char *name, const kv_alg_desc *alg);

/* The signature algorithm alg (KV_ALG_DEFAULT: the key type's default)
 * for key, refused when it does not fit the key's family. */
kv_rc kv_key_alg(const kv_key *key, kv_sign_alg alg, const kv_alg_desc **out);
/* kv_sign without its entry work (no kv_err_begin, algorithm resolved):
 * the policy check for op, then the backend's sign. For the core's own
 * artefacts (x509.c). */
kv_rc kv_key_sign_op(kv_key *key, kv_op op, const kv_alg_desc *a, unsigned flags,
                     const unsigned char *in, size_t inlen, unsigned char *sig,
                     size_t *siglen);

/* ---- key and context policy (keypolicy.c) ----------------------------- */

struct json_t;
typedef struct kv_ctx_policy kv_ctx_policy;
/* The keys of [policy]. */
extern const struct kv_config_key kv_policy_config_keys[];
/* [policy] of cfg (errors reported on NULL, as kv_ctx_new's are). */
kv_rc kv_ctx_policy_load(const kv_config *cfg, kv_ctx_policy **out);
void kv_ctx_policy_free(kv_ctx_policy *p);
/* The context's rules for op on be (is_key: name is a key's name). */
kv_rc kv_ctx_policy_check(const kv_ctx *ctx, const kv_backend *be, kv_op op, const char *name,
                          bool is_key);
/* Whether the context limits the key names it may touch ([policy] keys). */
bool kv_ctx_policy_names_keys(const kv_ctx *ctx);
/* The key's own policy for op (nothing when key->policy is NULL). */
kv_rc kv_key_policy_check(const kv_key *key, kv_backend *be, kv_op op, const char *name,
                          const kv_alg_desc *alg);
/* The KV_USE_* bit op needs (0: none), a bit's name, and a set of bits or
 * algorithms as "sign, ecdh" text. */
unsigned kv_use_of_op(kv_op op);
const char *kv_use_name(unsigned bit);
void kv_uses_text(unsigned uses, char *buf, size_t len);
void kv_algs_text(uint32_t algs, char *buf, size_t len);
/* A caller's policy checked (KV_ERR_INVALID_ARG naming the field) against
 * a key of type, and copied into a new allocation. */
kv_rc kv_key_policy_copy(const kv_ctx *ctx, const kv_key_policy *in, kv_key_type type,
                         kv_key_policy **out);
/* The stored form (a new JSON object; NULL when out of memory) and back
 * (KV_ERR_CORRUPT naming `what` for anything but a policy object). */
struct json_t *kv_key_policy_json(const kv_key_policy *p);
kv_rc kv_key_policy_from_json(const kv_ctx *ctx, const char *what, const struct json_t *j,
                              kv_key_policy **out);
/* SHA-256 of the stored form with a domain prefix: what a TPM key made
 * with a policy carries as its authPolicy. */
kv_rc kv_key_policy_digest(const kv_ctx *ctx, const kv_key_policy *p, unsigned char md[32]);

/* ---- X.509 (x509.c) --------------------------------------------------- */

#define KV_X509_NAME_MAX 1024  /* characters in a subject string or one SAN */
#define KV_X509_NAME_ATTRS 32  /* attributes in a subject */

typedef enum kv_x509_kind {
    KV_X509_CERT = 0,
    KV_X509_REQ = 1,
    KV_X509_CRL = 2,
} kv_x509_kind;
/*
 * Sign an X509 or X509_REQ (everything but the signature set)
 * with a vault key: both algorithm fields from OpenSSL for alg
 * (KV_ALG_DEFAULT follows the key), the to-be-signed DER signed through
 * kv_key_sign_op under op, the signature set, and the whole object decoded
 * again and verified with key->pub before KV_OK.
 */
kv_rc kv_x509_sign(kv_key *key, kv_op op, kv_sign_alg alg, kv_x509_kind kind, void *obj);
/* The same for a CRL, which comes out as a new object (*out). */
kv_rc kv_x509_sign_crl(kv_key *key, kv_op op, kv_sign_alg alg, const X509_CRL *crl,
                       X509_CRL **out);
/* An RFC 4514 string ("CN=dev-42,O=Fleet": most specific RDN first, '+'
 * joins a multi-valued RDN, backslash escapes) -> a new X509_NAME. ""
 * gives the empty name. KV_ERR_BAD_INPUT naming the attribute for unknown
 * types, bad escapes, empty values, #hex values, values OpenSSL refuses
 * (too long for its type: CN 64, C 2) and more than KV_X509_NAME_MAX
 * characters or KV_X509_NAME_ATTRS attributes. */
kv_rc kv_x509_name_parse(const kv_ctx *ctx, const char *text, X509_NAME **out);
/* A name as RFC 4514 text (UTF-8 kept, controls escaped); free with free(). */
kv_rc kv_x509_name_text(const kv_ctx *ctx, const X509_NAME *name, char **out);
/* "dns:NAME", "ip:ADDR" (IPv4 or IPv6), "uri:SCHEME:...", "email:ADDR" ->
 * a new GENERAL_NAME, syntax checked (KV_ERR_BAD_INPUT naming the kind). */
kv_rc kv_x509_san_parse(const kv_ctx *ctx, const char *text, GENERAL_NAME **out);
/* Extensions to build. key_usage: bit n is KeyUsage bit n of RFC 5280
 * (1 << 0 digitalSignature ... 1 << 5 keyCertSign, 1 << 6 cRLSign). */
typedef struct kv_x509_ext_spec {
    int ca;                    /* -1: no basicConstraints; 0: CA:FALSE; 1: CA:TRUE (critical) */
    long path_len;             /* with ca == 1: pathLenConstraint, or -1 for none */
    unsigned key_usage;        /* 0: no keyUsage; else critical */
    const char *const *eku;    /* NULL-terminated OIDs or OpenSSL short names; NULL: none */
    GENERAL_NAMES *san;        /* NULL or empty: none */
    int san_critical;          /* required when the subject is empty (RFC 5280 4.2.1.6) */
} kv_x509_ext_spec;
/* The extensions of spec, for a certificate (X509_add_ext) or a request
 * (X509_REQ_add_extensions). */
kv_rc kv_x509_exts_build(const kv_ctx *ctx, const kv_x509_ext_spec *spec,
                         STACK_OF(X509_EXTENSION) **out);
/* subjectKeyIdentifier of x (SHA-1 of its key, RFC 5280 method 1) and
 * authorityKeyIdentifier from issuer (its SKI, else computed the same way;
 * issuer NULL: x is self-signed). The public key must be set. */
kv_rc kv_x509_add_key_ids(const kv_ctx *ctx, X509 *x, X509 *issuer);
/* The key identifier an authorityKeyIdentifier names for issuer: its
 * subjectKeyIdentifier, else SHA-1 of its key (RFC 5280 method 1). */
kv_rc kv_x509_issuer_key_id(const kv_ctx *ctx, X509 *issuer, ASN1_OCTET_STRING **out);
/* A random positive serial of up to 127 bits, never zero. */
kv_rc kv_x509_serial_random(const kv_ctx *ctx, ASN1_INTEGER **out);
kv_rc kv_x509_set_validity(const kv_ctx *ctx, X509 *x, time_t not_before, time_t not_after);

#define KV_X509_DAYS_DEFAULT 365
#define KV_X509_DAYS_MAX 36500     /* a hundred years */
#define KV_X509_SANS_MAX 64        /* subject alternative names in one request or certificate */
#define KV_X509_EKU_MAX 16         /* extended key usages */
/* What a kv_cert_opts is read for. */
typedef enum kv_x509_purpose {
    KV_X509_FOR_REQUEST,  /* a CSR: basicConstraints only with KV_CERT_CA, keyUsage only
                           * when asked; a NULL subject is the empty name */
    KV_X509_FOR_SELFSIGN, /* a self-signed certificate: a subject is required */
    KV_X509_FOR_ISSUE,    /* a certificate a CA issues for another key: a NULL subject
                           * leaves out->subject NULL (the CSR's or the profile's), an
                           * empty one needs no SAN from opts (a profile may add one),
                           * and the tpm_* fields are left to the caller */
} kv_x509_purpose;
/* kv_cert_opts checked and converted. */
typedef struct kv_x509_opts {
    X509_NAME *subject;          /* NULL only for KV_X509_FOR_ISSUE without a subject */
    kv_x509_ext_spec spec;       /* spec.san is owned here; spec.eku points into opts */
    const kv_alg_desc *alg;      /* the signer's algorithm, KV_ALG_DEFAULT resolved */
    unsigned days;               /* 1..KV_X509_DAYS_MAX */
} kv_x509_opts;
/*
 * Check opts and convert them for a request or certificate on subject_key
 * (its public key; the key usage default and the fit of the asked usages
 * follow its family), signed by signer (opts->alg must fit it). Refused,
 * naming what: opts NULL or shorter than the fields read, or longer with
 * unknown fields set (KV_ERR_INVALID_ARG); unknown KV_KU_ or KV_CERT_ bits,
 * keyCertSign or a path length without KV_CERT_CA, days over
 * KV_X509_DAYS_MAX (KV_ERR_INVALID_ARG); a key usage the key cannot have
 * and an algorithm of another family (KV_ERR_WRONG_KEY_TYPE); a malformed
 * subject, SAN or EKU (KV_ERR_BAD_INPUT). An empty subject needs a SAN,
 * which is then critical (RFC 5280 4.2.1.6). Free with kv_x509_opts_clear
 * (also after a failure).
 */
kv_rc kv_x509_opts_read(const kv_key *signer, const EVP_PKEY *subject_key,
                        const kv_cert_opts *opts, kv_x509_purpose purpose, kv_x509_opts *out);
void kv_x509_opts_clear(kv_x509_opts *o);
/* A GENERAL_NAME as the text kv_x509_san_parse takes ("dns:...", "ip:...",
 * "uri:...", "email:..."); NULL for other kinds, a string with a NUL in it,
 * or out of memory (ca.c). Free with free(). */
char *kv_x509_san_text(const GENERAL_NAME *g);

/* ---- the vault CA and renewal (ca.c, renew.c) ------------------------------ */

/* kv_ca_issue without its entry work (no kv_err_begin): lifetime, when not
 * 0, is the validity in seconds from now (opts->days then unused), still
 * never past the CA's own not-after. */
kv_rc kv_ca_issue_for(kv_key *ca, const char *profile, const unsigned char *csr,
                      size_t csrlen, const kv_cert_opts *opts, int64_t lifetime, char **pem);

/* ---- enrollment (enroll.c, registry.c) ---------------------------------- */

#define KV_DEVICE_ID_MAX 128
#define KV_EK_MAX 4               /* EK certificates in one enrollment request */
#define KV_SERIAL_HEX_MAX 64      /* hex digits of an AK certificate's serial */
/* Device ids: 1-128 of [A-Za-z0-9._:@-], not starting with '-'. */
bool kv_device_id_valid(const char *id);

/* A challenge the verifier waits on (the registry's pending table). */
typedef struct kv_pending {
    char id[33];                 /* hex of 16 random bytes */
    char secret_sha256[65];      /* hex SHA-256 of the credentials, concatenated */
    /* hex SHA-256 of each EK's SubjectPublicKeyInfo, concatenated in the
     * request's order (64 digits each, 1 to KV_EK_MAX) */
    char ek_sha256[64 * KV_EK_MAX + 1];
    unsigned char *ek_certs;     /* the EK certificates, DER, concatenated in that order */
    size_t ek_certs_len;
    unsigned char *ak_public;    /* TPM2B_PUBLIC, marshalled */
    size_t ak_public_len;
    char ak_name[2 * 66 + 1];    /* hex of nameAlg || H(publicArea) */
    char device_id[KV_DEVICE_ID_MAX + 1];
    int64_t expires;             /* seconds since the epoch */
} kv_pending;
void kv_pending_clear(kv_pending *p);

/* The registry of enrolled devices: an SQLite file, opened (made 0600 when
 * missing) with a write transaction begun; kv_registry_end commits when rc
 * is KV_OK, else rolls back, and frees r, returning the final rc. */
typedef struct kv_registry kv_registry;
kv_rc kv_registry_begin(const kv_ctx *ctx, const char *path, kv_registry **out);
kv_rc kv_registry_end(const kv_ctx *ctx, kv_registry *r, kv_rc rc);
/* May the TPM of the EKs `eks` (concatenated hex hashes, as in kv_pending)
 * enroll as device_id? KV_ERR_PERMISSION naming the reason when the device
 * is not on a non-empty allow-list, any EK is bound to another device id,
 * the device id to another TPM (none of these EKs), or the device is
 * revoked; and, when replace is 0, when the device is enrolled already
 * (replace < 0: not asked, at challenge time). */
kv_rc kv_registry_may_enroll(const kv_ctx *ctx, kv_registry *r, const char *eks,
                             const char *device_id, int replace);
/* Record a challenge; KV_ERR_PERMISSION when one of its EKs has 8 waiting. */
kv_rc kv_registry_pending_add(const kv_ctx *ctx, kv_registry *r, const kv_pending *p);
/* Take (read and delete) the pending challenge id: KV_ERR_KEY_NOT_FOUND when
 * there is none (never made, answered already). The caller commits the
 * deletion before it looks at the answer (one answer per challenge) and
 * checks p->expires itself. */
kv_rc kv_registry_pending_take(const kv_ctx *ctx, kv_registry *r, const char *id,
                               kv_pending *out);
/* Record (or renew) the enrollment of a device: ek_cert is its first EK's
 * certificate; every EK of p is bound to it. old_serial: the serial of the
 * AK certificate it replaces ("" when new). */
kv_rc kv_registry_record(const kv_ctx *ctx, kv_registry *r, const kv_pending *p,
                         const unsigned char *ek_cert, size_t ek_cert_len, const char *ak_serial,
                         int64_t now, char old_serial[KV_SERIAL_HEX_MAX + 1]);

/* A failed SQLite call on the database `kind` at path (the CA record, the
 * registry): recorded with its extended code, mapped to a kv_rc (full:
 * KV_ERR_NO_SPACE, corrupt or not a database: KV_ERR_CORRUPT, ...). */
struct sqlite3;
kv_rc kv_sqlite_error(const kv_ctx *ctx, struct sqlite3 *db, int src, const char *what,
                      const char *kind, const char *path);

/* A database of ours (registry.c): what its header and schema must be.
 * schema: the statements that make it (run on a new file, and in memory
 * to learn the shape a file must have). */
typedef struct kv_db_format {
    const char *kind;          /* "registry", "CA record": for messages */
    uint32_t application_id;   /* PRAGMA application_id */
    int user_version;          /* PRAGMA user_version */
    const char *schema;
} kv_db_format;

/* The work bound of a connection: each statement stops (SQLITE_INTERRUPT,
 * expired set) once it has run KV_DB_WORK_MS after kv_db_arm. */
#define KV_DB_WORK_MS 10000
typedef struct kv_db_guard {
    int64_t deadline_ms;
    int expired;
} kv_db_guard;

/* Open path (checked by kv_db_file_check first) for f, begin a transaction
 * (write: BEGIN IMMEDIATE, a new file given f's tables; else a read of an
 * existing one), and check it is ours: at most KV_DB_SIZE_MAX bytes,
 * f's application_id and user_version (or 0 and 0 with exactly f's
 * tables: a file made before they were set, stamped when written), the
 * schema exactly f's (no view, trigger or other table). Defensive mode,
 * untrusted schema, cell size checks, a busy timeout of busy_ms and g's
 * work bound are on before the first read. *out is NULL on failure. */
kv_rc kv_db_open(const kv_ctx *ctx, const char *path, const kv_db_format *f, bool write,
                 int busy_ms, kv_db_guard *g, struct sqlite3 **out);
/* Restart g's bound: before each statement. */
void kv_db_arm(kv_db_guard *g);
/* kv_sqlite_error, or the work bound's own message when g expired. */
kv_rc kv_db_error(const kv_ctx *ctx, struct sqlite3 *db, const kv_db_guard *g, int src,
                  const char *what, const char *kind, const char *path);

/* TPM2_MakeCredential in software (enroll.c; needs tpm2-tss): the
 * credential (1-32 bytes) protected to the EK ek (RSA: OAEP; ECC: ECDH and
 * KDFe; the EK templates' AES-128-CFB and SHA-256) for the object `name`:
 * the marshalled TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET, each
 * OPENSSL_malloc'd. */
kv_rc kv_credential_make(const kv_ctx *ctx, EVP_PKEY *ek, const unsigned char *name,
                         size_t name_len, const unsigned char *cred, size_t cred_len,
                         unsigned char **id_object, size_t *id_len, unsigned char **enc_secret,
                         size_t *secret_len);

/* Incremented in the child after fork(); backends compare it lazily. */
unsigned long kv_fork_generation(void);

/* A mutex that a forked child can take even when another thread of the
 * parent held it at fork() (that thread does not exist in the child): the
 * first kv_mutex_lock in a new fork generation makes the mutex again,
 * unheld, and returns true, so that the caller treats what it guards as
 * possibly half updated (a cache to reload, a pointer to check). Besides
 * that, a plain mutex. KV_MUTEX_INIT for static ones. */
typedef struct kv_mutex {
    pthread_mutex_t mu;
    atomic_ulong gen;         /* kv_fork_generation when last made */
} kv_mutex;
#define KV_MUTEX_INIT { PTHREAD_MUTEX_INITIALIZER, 0 }
void kv_mutex_init(kv_mutex *m);
bool kv_mutex_lock(kv_mutex *m);
void kv_mutex_unlock(kv_mutex *m);
/* Destroys it when made in this process (else there is nothing to free). */
void kv_mutex_destroy(kv_mutex *m);

extern const struct kv_backend_ops kv_soft_ops;
#ifdef KV_WITH_PKCS11
extern const struct kv_backend_ops kv_pkcs11_ops;
#endif
#ifdef KV_WITH_TPM
extern const struct kv_backend_ops kv_tpm_ops;
#endif

/* A file-backed backend's generate_uri (filestore.c): split the key file's
 * path and let generate make DIR/NAME.pem (and DIR/NAME.json). */
typedef kv_rc (*kv_file_generate_fn)(kv_backend *be, const char *dir, const char *name,
                                     kv_key_type type, kv_key *key);
kv_rc kv_fs_generate_at(kv_backend *be, const char *path, kv_key_type type, kv_key *key,
                        kv_file_generate_fn generate);
/* A file-backed backend's open by URI: split the key file's path, let open
 * read PATH (it takes the path string), and name the file when there is none. */
typedef kv_rc (*kv_file_open_fn)(kv_backend *be, const char *name, char *path, kv_key *key);
kv_rc kv_fs_open_at(kv_backend *be, const char *path, kv_key *key, kv_file_open_fn open);

/* Software backend helpers, also used by tests on keys they make. */
kv_rc kv_soft_sign_pkey(const kv_ctx *ctx, OSSL_LIB_CTX *libctx, EVP_PKEY *pkey,
                        const kv_alg_desc *alg, const unsigned char *tbs, size_t tbslen,
                        unsigned char *sig, size_t *siglen);
kv_rc kv_soft_derive_pkey(const kv_ctx *ctx, OSSL_LIB_CTX *libctx, EVP_PKEY *priv,
                          EVP_PKEY *peer, unsigned char *secret, size_t *len);


/* ---- versions and rotation (rotate.c; docs/lifecycle.md) -------------- */

struct kv_lifecycle;
struct json_t;
/* The name a backend keeps a version under: NAME (kv_name_valid) for
 * version 1, NAME@N for N >= 2 (no leading zero), at most KV_NAME_MAX. */
bool kv_backend_name_valid(const char *name);
/* The version a backend name carries: N of NAME@N, else 1. */
unsigned kv_backend_name_version(const char *name);
/* An open by name: NAME (the current version) or NAME@N checked against
 * HOME/lifecycle/NAME.json; bname is the backend name to open and *lc the
 * state to hand to kv_version_attach (freed by it). KV_ERR_BAD_URI for an
 * invalid name, KV_ERR_KEY_NOT_FOUND for a version the record lacks,
 * KV_ERR_CORRUPT for a record that does not authenticate. */
kv_rc kv_version_resolve(kv_ctx *ctx, const char *ref, char bname[KV_NAME_MAX + 1],
                         struct kv_lifecycle **lc);
/* The backend the record names (NULL when the key has no record). */
const char *kv_version_backend(const struct kv_lifecycle *lc);
/* After an open: bind the key to its version's state (*lc from
 * kv_version_resolve, or NULL for an open by URI, matched by public key),
 * set key->version. Takes *lc. KV_ERR_CORRUPT when the backend key is not
 * the one the record names. */
kv_rc kv_version_attach(kv_key *key, struct kv_lifecycle **lc);
void kv_lifecycle_free(struct kv_lifecycle *lc);
/* The version-state check at the sign, ECDH, attest and issue dispatch:
 * KV_ERR_POLICY for a retired or abandoned version, naming it and when it
 * retired. Looks at the record file (a stat) at most once a second. */
kv_rc kv_version_check(kv_key *key, kv_op op);
/* For generation: KV_ERR_KEY_EXISTS when NAME has a lifecycle record. */
kv_rc kv_version_name_free(kv_ctx *ctx, const char *name);
/* kv_key_destroy of an open key: ref NAME with a record destroys every
 * version and the record; NAME@N one version that is not current. The
 * caller holds the home's creation lock (kv_home_lock) since before the
 * open. */
kv_rc kv_version_destroy(kv_ctx *ctx, const char *ref, kv_key *key);
/* Make (or remake, when a killed run left one) the next version of NAME
 * in NAME's backend with the current version's type and policy, not yet
 * current; returned open. */
kv_rc kv_rotate_prepare(kv_ctx *ctx, const char *name, kv_key **pending);
/* Commit: pending becomes current; the previous current enters overlap. */
kv_rc kv_rotate_commit(kv_ctx *ctx, kv_key *pending, const kv_rotate_opts *opts);
/* The home's creation lock (key.c), and a bare key for a backend to fill. */
kv_rc kv_home_lock(kv_ctx *ctx, int *fd);
void kv_home_unlock(int fd);
kv_key *kv_key_new(kv_ctx *ctx, kv_backend *be);
/* meta.c: hex SHA-256 of pub's SubjectPublicKeyInfo, and the hex
 * HMAC-SHA256 of a JSON object without its "mac" member, prefix first. */
kv_rc kv_meta_pub_sha256(const kv_ctx *ctx, const EVP_PKEY *pub, char hex[65]);
kv_rc kv_json_mac(const kv_ctx *ctx, struct json_t *obj, const char *prefix,
                  const unsigned char key[KV_MAC_KEY_LEN], char hex[65]);
/* ---- the audit log (audit.c) ------------------------------------------ */

typedef enum kv_audit_op { KV_AUDIT_GENERATE, KV_AUDIT_OPEN, KV_AUDIT_SIGN, KV_AUDIT_ECDH,
    KV_AUDIT_ATTEST, KV_AUDIT_ISSUE, KV_AUDIT_CERT_STORE, KV_AUDIT_ROTATE, KV_AUDIT_RENEW,
    KV_AUDIT_DESTROY, KV_AUDIT_PRUNE } kv_audit_op;
/* One record: key name (NULL when none), its version, backend, operation,
 * result (rc: KV_ERR_POLICY is a denial, KV_ERR_AUTH_FAILED/PIN_LOCKED a
 * login failure), optional detail (never secret, never data). A failure's
 * kv_errmsg goes in the record too. Costs one branch without a sink; never
 * fails the caller's operation. */
void kv_audit_event(kv_ctx *ctx, kv_audit_op op, const char *name, unsigned version,
                    const char *backend, kv_rc rc, const char *detail);
/* The [audit] section's keys, for the configuration check. */
extern const struct kv_config_key kv_audit_config_keys[];
/* Read [audit] and start the sinks it names (kv_ctx_new, after the backends). */
kv_rc kv_audit_setup(kv_ctx *ctx);
/* Write what is queued (and a closing seal), stop the writer (kv_ctx_free,
 * before the backends go). */
void kv_audit_free(kv_ctx *ctx);

/* ---- JOSE (jose.c; for jwt.c) ------------------------------------------ */

/* base64url without padding in a new string (free); NULL when out of memory. */
char *kv_b64url_encode(const unsigned char *in, size_t len);
/* Strict base64url: only [A-Za-z0-9_-], no '=', length % 4 != 1, unused
 * bits of the last character zero. *out (free) holds *outlen bytes and a
 * NUL after them. KV_ERR_BAD_INPUT naming `what` otherwise. */
kv_rc kv_b64url_decode(const kv_ctx *ctx, const char *what, const char *in, size_t len,
                       unsigned char **out, size_t *outlen);
/* len bytes of text as one JSON object, duplicate members refused:
 * KV_ERR_BAD_INPUT naming `what` and the reason (never quoting the text). */
kv_rc kv_jose_parse_object(const kv_ctx *ctx, const char *what, const char *text, size_t len,
                           struct json_t **out);
/* The RFC 7638 thumbprint of one JWK's key, imported with every check
 * kv_jws_verify makes (for tests and tools that hold a JWK, not a key). */
kv_rc kv_jose_jwk_thumbprint(const kv_ctx *ctx, const char *jwk, size_t len, char **kid);
/* ---- JWTs (jwt.c) ------------------------------------------------------ */

/* The claims of a client assertion issued at now, as compact JSON in *out
 * (kv_secret_free): the checks and the claims of kv_jwt_client_assertion. */
kv_rc kv_jwt_assertion_claims(const kv_ctx *ctx, const kv_client_assertion_opts *opts,
                              long long now, char **out);
/* kv_jwt_verify's checks of a verified payload (len bytes) under o (complete,
 * size already checked). */
kv_rc kv_jwt_check_claims(const kv_ctx *ctx, const char *payload, size_t len,
                          const kv_jwt_verify_opts *o);

#endif /* KV_INTERNAL_H */
