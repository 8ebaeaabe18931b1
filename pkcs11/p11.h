/*
 * p11.h - the PKCS#11 backend's shared structures: tokens, the session
 * pool, and CK_RV decoding.
 */
#ifndef KV_P11_H
#define KV_P11_H

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include "internal.h"

#define P11_MAX_MECHS 24
#define P11_MAX_REJECTED 32

/*
 * The PINs tokens rejected, shared by every token of one context (the
 * configured one and those opened by URI), so that a second open of the
 * same token, through whichever URI or PIN source, finds the memory. Each
 * entry is an HMAC-SHA256, under a per-process random key, of the token's
 * identity (label, manufacturer, model, serial) and the PIN: never the PIN.
 * The oldest entry makes room for a new one.
 */
struct p11_rejected {
    kv_mutex lock;
    unsigned char mac[P11_MAX_REJECTED][32];
    size_t n, next;
};

/* A session of the pool. A session belongs to the connection epoch it was
 * opened in; after a reconnect, old ones are forgotten when handed back. */
struct p11_sess {
    CK_SESSION_HANDLE h;
    unsigned long epoch;
    bool open;
    bool busy;
};

struct p11_mech {
    CK_MECHANISM_TYPE type;
    CK_RV rv;                 /* of C_GetMechanismInfo */
    CK_MECHANISM_INFO info;
};

/*
 * One token in one module. Found by label and/or serial (never by slot
 * alone: slot ids change across replugs). The lock guards the pool and
 * the connection state; it is never held across C_Sign or C_DeriveKey.
 */
struct p11_token {
    kv_ctx *ctx;
    char *module;             /* p11-kit module name, or a path */
    CK_FUNCTION_LIST *fl;
    CK_FUNCTION_LIST **all;   /* when loaded by name: the list to release */
    char *init_reserved;      /* CK_C_INITIALIZE_ARGS.pReserved, or NULL */
    P11KitUri *match;         /* token attributes to match (label, serial, ...) */
    char *pin_source;         /* file:PATH, env:VAR, or NULL */
    char *pin;                /* PIN from a URI's pin-value, wiped at free */
    struct p11_rejected *rejected; /* the context's rejected PINs (not owned) */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool initialized;         /* module initialized in this process */
    unsigned long fork_gen;
    bool connected;
    unsigned long epoch;      /* incremented at every (re)connect */
    CK_SLOT_ID slot;
    char label[33], serial[17];
    CK_TOKEN_INFO info;
    struct p11_sess *sess;
    size_t maxsess;
    size_t limit;             /* ulMaxSessionCount: pool and writes together; 0 none */
    size_t rwlimit;           /* ulMaxRwSessionCount; 0 none */
    size_t nrw;               /* read/write sessions open for writes (p11_rw_get) */
    size_t wroom;             /* writes waiting for room under limit */
    struct p11_mech mechs[P11_MAX_MECHS];
    size_t nmechs;
    int ecdh_point_form;      /* 0 unknown, 1 raw point, 2 DER OCTET STRING */
    struct p11_token *fork_next; /* every token of the process (session.c's fork handler) */
};

/* session.c */
const char *p11_rv_name(CK_RV rv);
const char *p11_mech_name(CK_MECHANISM_TYPE m);
/* Map a CK_RV to a kv_rc and record "FUNC on token 'L' failed: CKR_X (text)". */
kv_rc p11_fail(struct p11_token *tok, const char *func, CK_RV rv);
/* Whether rv means the connection is gone (replug, module restart). */
bool p11_rv_lost(CK_RV rv);
/* What a step returns, in place of a CK_RV, when its session may hold
 * something the next user must not meet: a search that C_FindObjectsFinal
 * could not end, a signing operation a failed C_Sign may have left open, an
 * ECDH secret object C_DestroyObject could not remove. p11_session_put
 * closes that session (its session objects go with it) instead of pooling
 * it. A vendor-defined value, never a module's own. */
#define P11_RV_SPOILED (CKR_VENDOR_DEFINED | 0x6b7673UL)

kv_rc p11_token_new(kv_ctx *ctx, const char *module, P11KitUri *match, const char *pin_source,
                    const char *pin, size_t maxsess, struct p11_rejected *rejected,
                    struct p11_token **out);
void p11_token_free(struct p11_token *tok);
/* Take a logged-in session (connecting, reconnecting or re-initialising
 * after fork as needed); give it back with p11_session_put and the CK_RV of
 * what was done with it. */
kv_rc p11_session_get(struct p11_token *tok, struct p11_sess **s);
void p11_session_put(struct p11_token *tok, struct p11_sess *s, CK_RV rv);

/* A read/write session for one write, opened beside the pool (a pool
 * session is read-only) and closed by p11_rw_put. */
struct p11_rw {
    CK_SESSION_HANDLE h;
    unsigned long epoch;
    CK_RV rv;                 /* when p11_rw_get fails: C_OpenSession's CK_RV, or CKR_OK */
};
/* Open a logged-in read/write session, within the token's session limits:
 * it waits while every session the token allows is in use, and makes room
 * by closing an idle pool session (on a token that allows one session, the
 * write has the token alone). Give it back with p11_rw_put and the CK_RV of
 * what was done with it. */
kv_rc p11_rw_get(struct p11_token *tok, struct p11_rw *w);
void p11_rw_put(struct p11_token *tok, struct p11_rw *w, CK_RV rv);
/* Whether the token offers mechanism m with flag (CKF_SIGN, ...): *rc is
 * KV_OK, or KV_ERR_UNSUPPORTED "not offered by this token", or the failure
 * of C_GetMechanismInfo itself. Returns that call's CK_RV when it says the
 * token or the login is lost (the step returns it, so the pool is dropped
 * and the call tried again), CKR_OK otherwise. Only definite answers are
 * kept; a failed query is asked again next time. */
CK_RV p11_mech_check(struct p11_token *tok, CK_SESSION_HANDLE h, CK_MECHANISM_TYPE m,
                     CK_FLAGS flag, kv_rc *rc);
/* Human-readable name of the token for messages ("label" or the module). */
const char *p11_token_name(const struct p11_token *tok);

void p11_rejected_init(struct p11_rejected *r);
/* Wipes the entries. */
void p11_rejected_fini(struct p11_rejected *r);
/* HMAC-SHA256 of pin under the per-process key: with ti, bound to that
 * token's identity (what struct p11_rejected keeps); with ti NULL, of the
 * PIN alone, to tell two PINs apart without keeping a second copy. */
kv_rc p11_pin_mac(kv_ctx *ctx, const CK_TOKEN_INFO *ti, const char *pin, unsigned char mac[32]);

/* Free a parsed URI after wiping the PIN p11-kit keeps in it (p11-kit frees
 * it without a wipe). Every P11KitUri is freed through this. Accepts NULL. */
void p11_uri_free(P11KitUri *uri);
/* Take the PIN out of a parsed URI: *pin receives a copy (NULL when the URI
 * has none; free it with kv_secret_free) and the URI's own copy is wiped in
 * place and dropped. */
kv_rc p11_uri_take_pin(kv_ctx *ctx, P11KitUri *uri, char **pin);
/* For messages: uri formatted by p11-kit from its path attributes only
 * (those of `type`: P11_KIT_URI_FOR_ANY for token, slot, module
 * information, object, id and type), never with pin-value, pin-source,
 * module-name, module-path or a vendor query attribute. A new string
 * (free), or NULL when out of memory. */
char *p11_uri_shown(P11KitUri *uri, P11KitUriType type);

#endif
