/*
 * tpm.h - the TPM 2.0 backend's shared structures: the process-wide
 * connection (one ESYS context per TCTI), the objects it keeps loaded, and
 * the TSS2 PRIVATE KEY file format.
 */
#ifndef KV_TPM_H
#define KV_TPM_H

#include <sys/types.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "internal.h"

/*
 * A TPM object the connection loads on demand: a key from its wrapped
 * blobs, or a persistent handle. Without a resource manager a TPM has few
 * transient slots (swtpm: 3), so the least recently used loaded object is
 * context-saved and flushed when a load needs room, and context-loaded
 * again when it is used next. All fields past `auth` belong to the
 * connection and are guarded by its lock.
 */
struct tpm_obj {
    TPM2B_PUBLIC pub;
    TPM2B_PRIVATE priv;
    TPM2_HANDLE persistent;     /* nonzero: a persistent handle, never loaded or flushed */
    bool is_primary;            /* the storage primary: made with CreatePrimary */
    bool pinned;                /* in use by the current command: not evicted */
    TPM2B_AUTH auth;            /* the object's auth value (wiped when freed) */

    struct tpm_obj *parent;
    ESYS_TR handle;             /* ESYS_TR_NONE when not loaded */
    unsigned long epoch;        /* connection epoch the handle / saved context belong to */
    bool saved;
    TPMS_CONTEXT context;       /* context-saved copy, when evicted */
    uint64_t last_use;
    struct tpm_obj *next;       /* the connection's list of objects */
    bool registered;
    uint64_t serial;            /* its entry in the shared table (struct tpm_shared) */
    unsigned char id[32];       /* what it is, for the shared table (tpm_obj_use) */
    bool id_set;
};

/*
 * Without a resource manager every process forked from the one that opened
 * the connection sees the same TPM objects, and the TPM has few slots. The
 * connection's creator maps this table shared before any fork; every
 * process takes its lock around its TPM commands and records there what it
 * loads, so that the others use a loaded key instead of loading it again,
 * evict each other's objects when the TPM is full, and notice when theirs
 * were evicted (docs/tpm.md, "Fork").
 */
#define TPM_SHARED_SLOTS 24
#define TPM_SHARED_TR_MAX 1024

struct tpm_shared_entry {
    TPM2_HANDLE handle;         /* 0: a free entry */
    bool session;
    uint64_t serial;            /* unique per load: a stale handle never matches */
    uint64_t owner;             /* the process that loaded it (tpm_conn.share_id) */
    pid_t pid;                  /* and its process id */
    uint64_t last_use;
    unsigned char id[32];       /* objects: SHA-256 of what was loaded */
    size_t trlen;               /* objects: Esys_TR_Serialize of the loader's handle */
    uint8_t tr[TPM_SHARED_TR_MAX];
};

struct tpm_shared {
    pthread_mutex_t lock;       /* robust, process-shared: held around TPM commands */
    bool initialized;           /* leftovers of earlier clients flushed */
    bool reconcile;             /* a process died holding the lock: the next one
                                 * flushes what the table does not record */
    uint64_t next_id, next_serial, tick;
    struct tpm_shared_entry e[TPM_SHARED_SLOTS];
};

/* A TCTI in front of the real one that counts the commands sent, and
 * remembers the last one's code (to name it when it fails). */
struct tpm_counting_tcti {
    TSS2_TCTI_CONTEXT_COMMON_V2 common;
    TSS2_TCTI_CONTEXT *inner;
    unsigned long *count;
    TPM2_CC last;               /* 0: none since tpm_run began its step */
};

struct tpm_conn {
    char *tcti;                 /* TCTI configuration string */
    int refs;
    pthread_mutex_t lock;       /* held around ESYS calls only */
    unsigned long fork_gen;
    TSS2_TCTI_CONTEXT *tcti_ctx;
    bool tcti_inherited;        /* a forked child sharing its parent's transport */
    bool forked;                /* inherited through fork(): the family's TPM state */
    bool torn;                  /* forked while a parent's thread held lock (in a
                                 * command, or reconnecting) */
    bool finalizing;            /* esys and tcti_ctx being freed (disconnect_locked):
                                 * a child forked then never touches them */
    ESYS_CONTEXT *esys;
    bool connected;
    unsigned long epoch;        /* incremented at every (re)connect */
    ESYS_TR session;            /* salted HMAC session (started on first use), or ESYS_TR_NONE */
    int always_refs;            /* contexts with [tpm] sessions = always (under conns_lock) */
    struct tpm_obj srk;         /* the storage primary (or a persistent parent) */
    struct tpm_obj *objs;
    uint64_t tick;
    unsigned long commands;     /* TPM commands sent (counted at the TCTI) */
    unsigned long session_commands; /* of those, authorised in the salted session */
    struct tpm_counting_tcti counter;
    struct tpm_conn *next;
    struct tpm_shared *shared;  /* no resource manager: shared with forked children */
    uint64_t share_id;          /* this process's id in it */
    uint64_t session_serial;    /* the session's entry in it */
    bool reset_table;           /* the TPM went away: the table is stale */
};

struct step;

/* conn.c */
/* The connection for a TCTI string, shared by every context of the process.
 * always: the context has [tpm] sessions = always; while any context on
 * the connection has it, every key use runs in the salted session. Pass
 * the same value to tpm_conn_put. */
kv_rc tpm_conn_get(kv_ctx *ctx, const char *tcti, TPM2_HANDLE parent, bool always,
                   struct tpm_conn **out);
void tpm_conn_put(struct tpm_conn *c, bool always);
/* Lock the connection, connecting (or reconnecting after a fork or a lost
 * TPM) as needed. Every successful tpm_begin is paired with tpm_end. */
kv_rc tpm_begin(kv_ctx *ctx, struct tpm_conn *c);
/* Unlock; rc from the ESYS call tells whether the TPM went away. */
void tpm_end(struct tpm_conn *c, TSS2_RC rc);
/* Make sure obj is loaded (parent first), evicting others if the TPM is
 * full; *h is its handle for this call. Called between begin and end. */
TSS2_RC tpm_obj_use(struct tpm_conn *c, struct tpm_obj *obj, ESYS_TR *h);
/* When rc says the TPM has no room for an object: evict the least recently
 * used loaded object other than keep and return true (run the command
 * again); else false. Between tpm_begin and tpm_end. */
bool tpm_make_room(struct tpm_conn *c, TSS2_RC rc, const struct tpm_obj *keep);
/* Forget obj (flushing it if loaded); call before freeing it. */
void tpm_obj_release(struct tpm_conn *c, struct tpm_obj *obj);
/* After a command that returned a secret, right after the ESYS call: wipe
 * its response parameters where tss2-sys keeps them (ESYS writes a
 * decrypted response parameter back there, and it stays until a later
 * command overwrites it), and the stack the call used (see conn.c).
 * Between tpm_begin and tpm_end. */
void tpm_wipe_response(struct tpm_conn *c);
/*
 * The authorisation for a command that uses obj (NULL: the storage key, as
 * the parent of TPM2_Load and TPM2_Create). The salted HMAC session, started
 * on first use, when a parameter or the response carries a secret (`secret`:
 * ECDH, TPM2_Create with an auth value), when obj has an auth value (a
 * password session would send it in the clear), or when a context on the
 * connection has [tpm] sessions = always; else ESYS_TR_PASSWORD with the
 * empty password: one command, no session crypto (docs/tpm.md, threat
 * model). Call before loading obj: starting the session loads the storage
 * key, which may evict others. Between tpm_begin and tpm_end.
 */
TSS2_RC tpm_auth(struct tpm_conn *c, struct step *s, const struct tpm_obj *obj, bool secret,
                 ESYS_TR *auth);
/* Whether rc means the connection is gone (TPM restarted, socket closed). */
bool tpm_rc_lost(TSS2_RC rc);
/* Map a TSS2_RC to a kv_rc and record "CMD failed: decoded (0x...)". */
kv_rc tpm_fail(kv_ctx *ctx, const char *cmd, TSS2_RC rc);

/* What a step was doing (for messages) and a failure of its own. */
struct step {
    const char *cmd;
    kv_rc rc;
};
typedef TSS2_RC (*tpm_step)(struct tpm_conn *c, struct step *s, void *arg);
/* Run a step between tpm_begin and tpm_end; when the TPM went away
 * (restart, lost socket) connect again and run it once more. */
kv_rc tpm_run(kv_ctx *ctx, struct tpm_conn *c, tpm_step fn, void *arg);

/* TPM2_Create under the storage key (tpm_run step): template and auth in,
 * the wrapped blobs out; `what` names the command in messages. */
struct tpm_create_arg {
    const TPM2B_PUBLIC *tmpl;
    const TPM2B_AUTH *auth;   /* NULL: no auth value */
    TPM2B_PUBLIC *pub;
    TPM2B_PRIVATE *priv;
    const char *what;
};
TSS2_RC tpm_create_step(struct tpm_conn *c, struct step *s, void *p);

/* tpm.c: the backend's state and keys, shared with attest.c */
struct tpm_state {
    char *tcti;
    char *dir;
    char *auth_source;
    TPM2_HANDLE parent;       /* TPM2_RH_OWNER or a persistent handle */
    bool sessions_always;     /* [tpm] sessions = always */
    struct tpm_conn *conn;
    kv_mutex ak_lock;         /* guards ak */
    struct tpm_key *ak;       /* the attestation key, once made or loaded */
};

struct tpm_key {
    struct tpm_obj obj;
    char *path;               /* key file; NULL for a persistent handle or a key
                               * opened from a file's bytes */
    struct tpm_obj *own_parent; /* a persistent parent the key file names other than
                               * the context's storage key; NULL: that one */
};

/* tss2pem.c: the TSS2 PRIVATE KEY format (tpm2-openssl, the kernel). */
kv_rc tpm_key_write(const kv_ctx *ctx, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
                    TPM2_HANDLE parent, bool empty_auth, char **pem, size_t *len);
kv_rc tpm_key_read(const kv_ctx *ctx, const char *pem, size_t len, const char *what,
                   TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv, TPM2_HANDLE *parent,
                   bool *empty_auth);

/* attest.c: the attestation entries of the ops table */
kv_rc tpm_ak_public(kv_backend *be, EVP_PKEY **pub);
kv_rc tpm_quote(kv_backend *be, const char *pcrs, const unsigned char *nonce, size_t len,
                kv_attestation *out);
kv_rc tpm_certify(kv_key *key, const unsigned char *nonce, size_t len, kv_attestation *out);
kv_rc tpm_pcr_read(kv_backend *be, const char *bank, unsigned index, unsigned char *digest,
                   size_t *len);
kv_rc tpm_pcr_extend(kv_backend *be, const char *bank, unsigned index,
                     const unsigned char *digest, size_t len);
kv_rc tpm_ek_cert(kv_backend *be, unsigned char **der, size_t *len);
kv_rc tpm_ek_certs(kv_backend *be, unsigned char *der[], size_t len[], size_t *n);
kv_rc tpm_key_public_area(kv_key *key, bool sized, unsigned char **buf, size_t *len);
kv_rc tpm_ak_public_area(kv_backend *be, bool sized, unsigned char **buf, size_t *len);
kv_rc tpm_ak_chain_store(kv_backend *be, const STACK_OF(X509) *chain);
kv_rc tpm_ak_chain_read(kv_backend *be, STACK_OF(X509) **chain);
/* TPM2_Quote; with values, the PCRs it covers read first, and both taken
 * again (up to four times) until the values hash to the quote's digest. */
kv_rc tpm_quote_pcrs(kv_backend *be, const char *pcrs, const unsigned char *nonce, size_t len,
                     kv_attestation *out, struct kv_pcr_values *values);
void tpm_ak_free(struct tpm_state *s);
/* The AK of this TPM: loaded from its key file, or made and saved on first use. */
kv_rc tpm_ak_get(kv_backend *be, struct tpm_key **out);

/* credential.c: enrollment (the AK's public area, TPM2_ActivateCredential) */
kv_rc tpm_activate(kv_backend *be, const unsigned char *ek_cert, size_t ek_len,
                   const unsigned char *id_object, size_t id_len,
                   const unsigned char *enc_secret, size_t secret_len, unsigned char *out,
                   size_t *len);

/* The public half of a TPM key as an EVP_PKEY. */
kv_rc tpm_public_to_pkey(const kv_ctx *ctx, const TPMT_PUBLIC *pub, EVP_PKEY **out);

#endif
