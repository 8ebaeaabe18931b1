/*
 * pkcs11.c - the PKCS#11 backend: keys in any token, through p11-kit.
 *
 * [pkcs11]
 * module = softhsm2 | /path/to/module.so   p11-kit module name or path
 * token = LABEL | pkcs11:token=...;serial=...   which token keys are made on
 * serial = SERIAL                           (optional) to tell tokens apart
 * pin = file:PATH | env:VAR                 where the user PIN comes from
 * max_sessions = N                          session pool size (default 16,
 *                                           capped by the token's own limit)
 * init_args = TEXT                          C_Initialize pReserved of the module
 * allowed_modules = PATH, PATH              module paths a URI may load besides
 *                                           those p11-kit registers
 * allow_any_module = false | true           let a URI's module-path load anything
 *
 * Keys are named by CKA_LABEL; each pair shares a random CKA_ID. A key made
 * with a policy (docs/policy.md) has it in its native attributes (CKA_SIGN,
 * CKA_DERIVE, CKA_ALLOWED_MECHANISMS where the token takes it, and
 * CKA_MODIFIABLE false so that they stay) and, whole, in a private data
 * object with the key's label, CKA_APPLICATION "libkeyvault" and a value
 * naming the key's CKA_ID. Explicit
 * RFC 7512 URIs (parsed by p11-kit) open keys made by any tool, on any
 * token of any module (module-name=, module-path=, pin-source=, pin-value=).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <jansson.h>

#include "p11.h"

#define P11_DEFAULT_SESSIONS 16
#define P11_MAX_OTHERS 8
#define P11_ID_LEN 16

/*
 * A token opened by URI, kept for the context's life and found again by
 * what made it: the module (as given, or its resolved path), the token
 * attributes of the URI, the PIN (by its MAC: the token keeps the only
 * copy) and the PIN source. Only a token that connected is kept, so the
 * cap counts tokens in use, not failed attempts.
 */
struct p11_other {
    struct p11_token *tok;
    char *module_real;                     /* realpath of a module path, or NULL */
    char *match;                           /* the URI's token attributes, formatted */
    unsigned char pin_mac[32];             /* p11_pin_mac(NULL, pin) when has_pin */
    bool has_pin;
};

struct p11_state {
    struct p11_token *def;                 /* the configured token, or NULL */
    char *module;                          /* configured module */
    size_t maxsess;
    struct p11_rejected rejected;          /* PINs tokens refused, for every token here */
    kv_mutex lock;                         /* guards others */
    struct p11_other others[P11_MAX_OTHERS];
    size_t nothers;
};

struct p11_key {
    struct p11_token *tok;
    unsigned char id[128];
    CK_ULONG idlen;
    CK_KEY_TYPE ktype;
    kv_mutex lock;                         /* guards the cached handle */
    CK_OBJECT_HANDLE priv;
    unsigned long epoch;                   /* connection epoch of priv; 0: none */
};

static struct p11_state *st(kv_backend *be)
{
    return be->state;
}

/* ---- configuration -------------------------------------------------------- */

/* Token label/serial into a p11-kit URI used for matching. */
static kv_rc match_from_config(kv_backend *be, const char *token, const char *serial,
                               P11KitUri **out)
{
    P11KitUri *uri = p11_kit_uri_new();
    CK_TOKEN_INFO *ti;
    kv_rc rc = KV_OK;
    int r;

    *out = NULL;
    if (!uri)
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    if (token && !strncasecmp(token, "pkcs11:", 7)) {
        /* the value is not shown: a mistyped URI may hold a PIN */
        r = p11_kit_uri_parse(token, P11_KIT_URI_FOR_TOKEN, uri);
        if (r != P11_KIT_URI_OK)
            KV_FAIL(NULL, rc, KV_ERR_CONFIG, "[pkcs11] token: not a valid pkcs11: URI (%s)",
                    p11_kit_uri_message(r));
        if (p11_kit_uri_get_pin_value(uri))
            KV_FAIL(NULL, rc, KV_ERR_CONFIG,
                    "[pkcs11] token: the URI holds a pin-value; a PIN is never written in the "
                    "configuration itself: use pin = file:PATH or env:VAR");
    } else {
        ti = p11_kit_uri_get_token_info(uri);
        if (token) {
            if (strlen(token) > sizeof(ti->label))
                /* not shown: a URI mistyped past the check above may hold a PIN */
                KV_FAIL(NULL, rc, KV_ERR_CONFIG,
                        "[pkcs11] token: a label is at most 32 bytes, this one %zu (not shown)",
                        strlen(token));
            memset(ti->label, ' ', sizeof(ti->label));
            memcpy(ti->label, token, strlen(token));
        }
    }
    if (serial) {
        ti = p11_kit_uri_get_token_info(uri);
        if (strlen(serial) > sizeof(ti->serialNumber))
            KV_FAIL(NULL, rc, KV_ERR_CONFIG,
                    "[pkcs11] serial: at most 16 bytes, this one %zu (not shown)", strlen(serial));
        memset(ti->serialNumber, ' ', sizeof(ti->serialNumber));
        memcpy(ti->serialNumber, serial, strlen(serial));
    }
    *out = uri;
    uri = NULL;
out:
    p11_uri_free(uri);
    return rc;
}

static kv_rc p11_init(kv_backend *be)
{
    kv_ctx *ctx = be->ctx;
    const char *module = kv_config_get(ctx->cfg, "pkcs11", "module");
    const char *token = kv_config_get(ctx->cfg, "pkcs11", "token");
    const char *serial = kv_config_get(ctx->cfg, "pkcs11", "serial");
    const char *pin = kv_config_get(ctx->cfg, "pkcs11", "pin");
    struct p11_state *s = calloc(1, sizeof(*s));
    P11KitUri *match = NULL;
    long maxsess = 0;
    bool any_module = false;
    kv_rc rc;

    if (!s)
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    kv_mutex_init(&s->lock);
    p11_rejected_init(&s->rejected);
    be->state = s;
    be->uri_ok = true; /* a URI may name its own module */
    KV_CHECK(rc, kv_config_get_long(NULL, ctx->cfg, "pkcs11", "max_sessions",
                                    P11_DEFAULT_SESSIONS, 1, 1024, &maxsess));
    s->maxsess = (size_t)maxsess;
    /* read where modules load; checked here so a typo fails at kv_ctx_new */
    KV_CHECK(rc, kv_config_get_bool(NULL, ctx->cfg, "pkcs11", "allow_any_module", false,
                                    &any_module));
    if (pin && !kv_secret_source_valid(pin))
        KV_FAIL(NULL, rc, KV_ERR_CONFIG,
                "[pkcs11] pin: expected file:PATH or env:VAR (a PIN is never written in the "
                "configuration itself)");
    if (module && !(s->module = kv_strdup(module)))
        KV_FAIL(NULL, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!module || (!token && !serial)) {
        be->available = false;
        snprintf(be->why, sizeof(be->why), "no [pkcs11] module and token configured");
        return KV_OK;
    }
    KV_CHECK(rc, match_from_config(be, token, serial, &match));
    KV_CHECK(rc, p11_token_new(ctx, module, match, pin, NULL, s->maxsess, &s->rejected, &s->def));
    match = NULL;
out:
    p11_uri_free(match);
    return rc;
}

/* Free an entry of others, its token included. */
static void other_clear(struct p11_other *o)
{
    p11_token_free(o->tok);
    free(o->module_real);
    free(o->match);
    kv_wipe(o->pin_mac, sizeof(o->pin_mac));
    memset(o, 0, sizeof(*o));
}

static void p11_fini(kv_backend *be)
{
    struct p11_state *s = st(be);

    if (!s)
        return;
    p11_token_free(s->def);
    for (size_t i = 0; i < s->nothers; i++)
        other_clear(&s->others[i]);
    free(s->module);
    p11_rejected_fini(&s->rejected);
    kv_mutex_destroy(&s->lock);
    free(s);
    be->state = NULL;
}

/* ---- running a step on a session ---------------------------------------- */

/*
 * A step does its PKCS#11 calls on a session and returns the last CK_RV
 * (for the pool's bookkeeping); its own result goes to *rc. A step that
 * loses the session or finds a stale handle is run once more, on a fresh
 * connection: that is how a replugged token comes back.
 */
typedef CK_RV (*p11_step)(struct p11_token *tok, CK_SESSION_HANDLE h, void *arg, kv_rc *rc);

static kv_rc run_session(struct p11_token *tok, p11_step step, void *arg, bool rw)
{
    kv_err_mark mark = kv_err_mark_get(tok->ctx);

    for (int attempt = 0;; attempt++) {
        kv_rc rc;
        CK_RV rv;

        /* pool sessions are read-only; a write gets a read/write session of
         * its own, within the token's session limits (p11_rw_get) */
        if (rw) {
            struct p11_rw w;
            rc = p11_rw_get(tok, &w);
            rv = w.rv;
            if (rc == KV_OK) {
                rv = step(tok, w.h, arg, &rc);
                p11_rw_put(tok, &w, rv);
            }
        } else {
            struct p11_sess *s = NULL;
            rc = p11_session_get(tok, &s);
            if (rc != KV_OK)
                return rc;
            rv = step(tok, s->h, arg, &rc);
            p11_session_put(tok, s, rv);
        }
        if (rc == KV_OK || attempt > 0)
            return rc;
        if (!p11_rv_lost(rv) && rv != CKR_OBJECT_HANDLE_INVALID && rv != CKR_KEY_HANDLE_INVALID)
            return rc;
        kv_err_rewind(tok->ctx, mark); /* try again; report only the second outcome */
    }
}

static kv_rc run(struct p11_token *tok, p11_step step, void *arg)
{
    return run_session(tok, step, arg, false);
}

static kv_rc run_rw(struct p11_token *tok, p11_step step, void *arg)
{
    return run_session(tok, step, arg, true);
}

/* ---- objects -------------------------------------------------------------- */

/* End a search. When the module cannot, the search may still be active on
 * the session: the operation fails and the pool closes the session (the
 * next C_FindObjectsInit on it would meet CKR_OPERATION_ACTIVE). */
static CK_RV find_final(struct p11_token *tok, CK_SESSION_HANDLE h, kv_rc *rc)
{
    CK_RV rv = tok->fl->C_FindObjectsFinal(h);

    if (rv == CKR_OK)
        return CKR_OK;
    *rc = p11_fail(tok, "C_FindObjectsFinal", rv);
    return p11_rv_lost(rv) ? rv : P11_RV_SPOILED;
}

static CK_RV find(struct p11_token *tok, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                  CK_OBJECT_HANDLE *objs, CK_ULONG max, CK_ULONG *count, kv_rc *rc)
{
    CK_FUNCTION_LIST *f = tok->fl;
    CK_RV rv = f->C_FindObjectsInit(h, tmpl, n);

    *count = 0;
    if (rv != CKR_OK) {
        *rc = p11_fail(tok, "C_FindObjectsInit", rv);
        return rv;
    }
    rv = f->C_FindObjects(h, objs, max, count);
    if (rv != CKR_OK) {
        (void)f->C_FindObjectsFinal(h);
        *rc = p11_fail(tok, "C_FindObjects", rv);
        return rv;
    }
    return find_final(tok, h, rc);
}

/* The most objects one search takes: a token holding more for one
 * template (the private keys of a list) is refused, naming the count,
 * rather than read into an array without end. */
#define P11_FIND_MAX 100000
#define P11_FIND_CHUNK 256

/* Every object matching the template, in a new array: C_FindObjects is
 * called for P11_FIND_CHUNK at a time until it has no more, at most
 * P11_FIND_MAX (an error past that). */
static CK_RV find_all(struct p11_token *tok, CK_SESSION_HANDLE h, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                      CK_OBJECT_HANDLE **objs, CK_ULONG *count, kv_rc *rc)
{
    CK_FUNCTION_LIST *f = tok->fl;
    CK_ULONG cap = 0, got = 0;
    CK_RV rv = f->C_FindObjectsInit(h, tmpl, n);

    *objs = NULL;
    *count = 0;
    if (rv != CKR_OK) {
        *rc = p11_fail(tok, "C_FindObjectsInit", rv);
        return rv;
    }
    do {
        if (*count > P11_FIND_MAX) {
            *rc = kv_error(tok->ctx, KV_ERR_UNSUPPORTED,
                           "token '%s' holds more than %d objects matching one search: "
                           "libkeyvault reads at most %d", tok->label, P11_FIND_MAX,
                           P11_FIND_MAX);
            break;
        }
        if (*count == cap) {
            CK_OBJECT_HANDLE *more;
            /* the last chunk stops one past the bound: a search of exactly
             * P11_FIND_MAX ends, one more is refused, no more is read */
            CK_ULONG grow = P11_FIND_MAX + 1 - cap < P11_FIND_CHUNK ? P11_FIND_MAX + 1 - cap
                                                                      : P11_FIND_CHUNK;
            more = realloc(*objs, (cap + grow) * sizeof(**objs));
            if (!more) {
                *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
                break;
            }
            *objs = more;
            cap += grow;
        }
        rv = f->C_FindObjects(h, *objs + *count, cap - *count, &got);
        if (rv != CKR_OK) {
            *rc = p11_fail(tok, "C_FindObjects", rv);
        } else if (got > cap - *count) {
            *rc = kv_error(tok->ctx, KV_ERR_BACKEND,
                           "C_FindObjects on token '%s' answered %lu handles for room for %lu",
                           tok->label, (unsigned long)got, (unsigned long)(cap - *count));
            break;
        } else {
            *count += got;
        }
    } while (rv == CKR_OK && got > 0);
    if (rv == CKR_OK && *rc == KV_OK)
        rv = find_final(tok, h, rc);
    else
        (void)f->C_FindObjectsFinal(h);
    if (*rc != KV_OK) {
        free(*objs);
        *objs = NULL;
        *count = 0;
    }
    return rv;
}

/*
 * The most bytes get_attr takes for an attribute: the token sizes the buffer,
 * so a hostile one could ask for 4 GiB. A certificate (CKA_VALUE, also a
 * policy object's JSON) fits in 64 KiB; key fields are small: an RSA-8192
 * modulus is 1 KiB, an EC point or parameters well under 200 bytes, and
 * CKA_ID and CKA_LABEL are names.
 */
#define P11_ATTR_VALUE_MAX (64 * 1024)
#define P11_ATTR_FIELD_MAX (4 * 1024)

static const char *attr_name(CK_ATTRIBUTE_TYPE type)
{
    switch (type) {
    case CKA_VALUE: return "CKA_VALUE";
    case CKA_MODULUS: return "CKA_MODULUS";
    case CKA_PUBLIC_EXPONENT: return "CKA_PUBLIC_EXPONENT";
    case CKA_EC_PARAMS: return "CKA_EC_PARAMS";
    case CKA_EC_POINT: return "CKA_EC_POINT";
    case CKA_ID: return "CKA_ID";
    case CKA_LABEL: return "CKA_LABEL";
    case CKA_KEY_TYPE: return "CKA_KEY_TYPE";
    default: return "an attribute";
    }
}

/* Read one attribute into a new buffer, of at most the cap above. With
 * gone, an object destroyed meanwhile (CKR_OBJECT_HANDLE_INVALID) sets it
 * and is no error; without, it is one. */
static CK_RV get_attr_of(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                         CK_ATTRIBUTE_TYPE type, unsigned char **val, CK_ULONG *len, bool *gone,
                         kv_rc *rc)
{
    CK_ATTRIBUTE a = { type, NULL, 0 };
    CK_RV rv = tok->fl->C_GetAttributeValue(h, obj, &a, 1);
    CK_ULONG max = type == CKA_VALUE ? P11_ATTR_VALUE_MAX : P11_ATTR_FIELD_MAX;

    *val = NULL;
    *len = 0;
    if (gone && rv == CKR_OBJECT_HANDLE_INVALID) {
        *gone = true;
        return CKR_OK;
    }
    if (rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
        *rc = p11_fail(tok, "C_GetAttributeValue", rv != CKR_OK ? rv : CKR_ATTRIBUTE_TYPE_INVALID);
        return rv;
    }
    if (a.ulValueLen > max) {
        *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                       "token '%s': C_GetAttributeValue gives %s of %lu bytes (at most %lu)",
                       tok->label, attr_name(type), (unsigned long)a.ulValueLen,
                       (unsigned long)max);
        return CKR_OK;
    }
    a.pValue = malloc(a.ulValueLen ? a.ulValueLen : 1);
    if (!a.pValue) {
        *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
        return CKR_OK;
    }
    CK_ULONG asked = a.ulValueLen;
    rv = tok->fl->C_GetAttributeValue(h, obj, &a, 1);
    if (gone && rv == CKR_OBJECT_HANDLE_INVALID) {
        free(a.pValue);
        *gone = true;
        return CKR_OK;
    }
    if (rv != CKR_OK) {
        free(a.pValue);
        *rc = p11_fail(tok, "C_GetAttributeValue", rv);
        return rv;
    }
    if (a.ulValueLen > asked) {
        free(a.pValue);
        *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                       "token '%s': C_GetAttributeValue gives %s of %lu bytes in a buffer of %lu",
                       tok->label, attr_name(type), (unsigned long)a.ulValueLen,
                       (unsigned long)asked);
        return CKR_OK;
    }
    *val = a.pValue;
    *len = a.ulValueLen;
    return CKR_OK;
}

static CK_RV get_attr(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                      CK_ATTRIBUTE_TYPE type, unsigned char **val, CK_ULONG *len, kv_rc *rc)
{
    return get_attr_of(tok, h, obj, type, val, len, NULL, rc);
}

/* The bytes inside a DER OCTET STRING (CKA_EC_POINT), or the input as is
 * when a module returns the bare point. */
static unsigned char *unwrap_point(const unsigned char *in, CK_ULONG len, size_t *outlen)
{
    const unsigned char *p = in;
    ASN1_OCTET_STRING *os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)len);
    unsigned char *out;

    if (os && (CK_ULONG)(p - in) == len) {
        *outlen = (size_t)ASN1_STRING_length(os);
        out = OPENSSL_memdup(ASN1_STRING_get0_data(os), *outlen);
    } else {
        kv_ossl_drop();
        *outlen = len;
        out = OPENSSL_memdup(in, len);
    }
    ASN1_OCTET_STRING_free(os);
    return out;
}

/* OpenSSL group name of DER-encoded CKA_EC_PARAMS (a named curve OID). */
static int ec_params_nid(const unsigned char *der, CK_ULONG len)
{
    const unsigned char *p = der;
    ASN1_OBJECT *oid = d2i_ASN1_OBJECT(NULL, &p, (long)len);
    int nid = oid ? OBJ_obj2nid(oid) : NID_undef;

    ASN1_OBJECT_free(oid);
    kv_ossl_drop();
    return nid;
}

/* Build the public EVP_PKEY from a public key object's attributes. */
static CK_RV public_from_object(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                                CK_KEY_TYPE kt, EVP_PKEY **out, kv_rc *rc)
{
    kv_ctx *ctx = tok->ctx;
    unsigned char *a = NULL, *b = NULL, *pt = NULL;
    CK_ULONG alen = 0, blen = 0;
    size_t ptlen = 0;
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *pctx = NULL;
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *rsa = NULL;
    CK_RV rv;

    *out = NULL;
    if (kt == CKK_RSA) {
        if ((rv = get_attr(tok, h, obj, CKA_MODULUS, &a, &alen, rc)) != CKR_OK || *rc)
            goto out;
        if ((rv = get_attr(tok, h, obj, CKA_PUBLIC_EXPONENT, &b, &blen, rc)) != CKR_OK || *rc)
            goto out;
        n = BN_bin2bn(a, (int)alen, NULL);
        e = BN_bin2bn(b, (int)blen, NULL);
        bld = OSSL_PARAM_BLD_new();
        if (!n || !e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
            !(rsa = OSSL_PARAM_BLD_to_param(bld))) {
            *rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
            goto out;
        }
        pctx = EVP_PKEY_CTX_new_from_name(ctx->libctx, "RSA", NULL);
        if (!pctx || EVP_PKEY_fromdata_init(pctx) != 1 ||
            EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, rsa) != 1)
            *rc = kv_error_ossl(ctx, KV_ERR_CORRUPT, "token '%s': RSA public key is malformed",
                                tok->label);
        goto out;
    }
    if ((rv = get_attr(tok, h, obj, CKA_EC_PARAMS, &a, &alen, rc)) != CKR_OK || *rc)
        goto out;
    if ((rv = get_attr(tok, h, obj, CKA_EC_POINT, &b, &blen, rc)) != CKR_OK || *rc)
        goto out;
    pt = unwrap_point(b, blen, &ptlen);
    if (!pt) {
        *rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        goto out;
    }
    if (kt == CKK_EC_EDWARDS) {
        /* Ed25519: params are the id-Ed25519 OID or the string "edwards25519" */
        if (ptlen != 32) {
            *rc = kv_error(ctx, KV_ERR_UNSUPPORTED,
                           "token '%s': Edwards key of %zu bytes (only Ed25519 is used)",
                           tok->label, ptlen);
            goto out;
        }
        *out = EVP_PKEY_new_raw_public_key_ex(ctx->libctx, "ED25519", NULL, pt, ptlen);
        if (!*out)
            *rc = kv_error_ossl(ctx, KV_ERR_CORRUPT, "token '%s': Ed25519 key is malformed",
                                tok->label);
        goto out;
    }
    int nid = ec_params_nid(a, alen);
    const char *group = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
    if (!group) {
        *rc = kv_error(ctx, KV_ERR_UNSUPPORTED, "token '%s': EC key on an unnamed curve",
                       tok->label);
        goto out;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen);
    params[2] = OSSL_PARAM_construct_end();
    pctx = EVP_PKEY_CTX_new_from_name(ctx->libctx, "EC", NULL);
    if (!pctx || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
        *rc = kv_error_ossl(ctx, KV_ERR_CORRUPT, "token '%s': EC public key is malformed",
                            tok->label);
out:
    if (*rc != KV_OK && rv == CKR_OK && *out) {
        EVP_PKEY_free(*out);
        *out = NULL;
    }
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(rsa);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    OPENSSL_free(pt);
    free(a);
    free(b);
    return rv;
}

/* The public key in a certificate object, or NULL (recorded in *rc). */
static CK_RV public_from_cert(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                              EVP_PKEY **out, kv_rc *rc)
{
    unsigned char *der = NULL;
    CK_ULONG derlen = 0;
    CK_RV rv = get_attr(tok, h, obj, CKA_VALUE, &der, &derlen, rc);

    *out = NULL;
    if (rv == CKR_OK && *rc == KV_OK) {
        const unsigned char *p = der;
        X509 *x = d2i_X509(NULL, &p, (long)derlen);
        *out = x ? X509_get_pubkey(x) : NULL;
        if (!*out)
            *rc = kv_error_ossl(tok->ctx, KV_ERR_CORRUPT, "token '%s': certificate is malformed",
                                tok->label);
        X509_free(x);
    }
    free(der);
    return rv;
}

/*
 * The public key of a pair: its public key object, else the certificates
 * with the same CKA_ID. Anyone with a read/write session may add a public
 * object carrying a known CKA_ID, so a second public key object is refused
 * rather than one of them taken, and certificates are taken only when they
 * all hold one public key.
 */
static CK_RV find_public(struct p11_token *tok, CK_SESSION_HANDLE h, const unsigned char *id,
                         CK_ULONG idlen, CK_KEY_TYPE kt, const char *label, EVP_PKEY **out,
                         kv_rc *rc)
{
    CK_OBJECT_CLASS pub = CKO_PUBLIC_KEY, cert = CKO_CERTIFICATE;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &pub, sizeof(pub) },
        { CKA_ID, (void *)id, idlen },
    };
    CK_OBJECT_HANDLE objs[8];
    CK_ULONG count = 0;
    EVP_PKEY *other = NULL;
    CK_RV rv;

    *out = NULL;
    rv = find(tok, h, tmpl, 2, objs, 2, &count, rc);
    if (rv != CKR_OK)
        return rv;
    if (count == 2) {
        *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                       "private key '%s' on token '%s': more than one public key object "
                       "carries its CKA_ID; not choosing one", label ? label : "(unlabelled)",
                       tok->label);
        return CKR_OK;
    }
    if (count == 1)
        return public_from_object(tok, h, objs[0], kt, out, rc);
    tmpl[0].pValue = &cert;
    rv = find(tok, h, tmpl, 2, objs, 8, &count, rc);
    if (rv != CKR_OK)
        return rv;
    if (count == 0) {
        *rc = kv_error(tok->ctx, KV_ERR_UNSUPPORTED,
                       "token '%s': no public key object or certificate shares the private "
                       "key's CKA_ID; libkeyvault needs one of them", tok->label);
        return CKR_OK;
    }
    rv = public_from_cert(tok, h, objs[0], out, rc);
    for (CK_ULONG i = 1; i < count && rv == CKR_OK && *rc == KV_OK; i++) {
        rv = public_from_cert(tok, h, objs[i], &other, rc);
        if (rv == CKR_OK && *rc == KV_OK && EVP_PKEY_eq(*out, other) != 1)
            *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                           "private key '%s' on token '%s': certificates sharing its CKA_ID "
                           "hold different public keys; not choosing one",
                           label ? label : "(unlabelled)", tok->label);
        EVP_PKEY_free(other);
        other = NULL;
    }
    kv_ossl_drop(); /* EVP_PKEY_eq of two key types */
    if (rv != CKR_OK || *rc != KV_OK) {
        EVP_PKEY_free(*out);
        *out = NULL;
    }
    return rv;
}

/* An RFC 7512 URI naming exactly this private key, formatted by p11-kit. */
static char *key_uri(struct p11_token *tok, const char *label, const unsigned char *id,
                     CK_ULONG idlen, bool with_module)
{
    P11KitUri *u = p11_kit_uri_new();
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE a_cls = { CKA_CLASS, &cls, sizeof(cls) };
    CK_ATTRIBUTE a_id = { CKA_ID, (void *)id, idlen };
    CK_ATTRIBUTE a_label = { CKA_LABEL, (void *)label, label ? strlen(label) : 0 };
    CK_TOKEN_INFO *ti;
    char *s = NULL, *out;

    if (!u)
        return NULL;
    ti = p11_kit_uri_get_token_info(u);
    memcpy(ti->label, tok->info.label, sizeof(ti->label));
    memcpy(ti->serialNumber, tok->info.serialNumber, sizeof(ti->serialNumber));
    p11_kit_uri_set_attribute(u, &a_cls);
    p11_kit_uri_set_attribute(u, &a_id);
    if (label)
        p11_kit_uri_set_attribute(u, &a_label);
    if (with_module) {
        if (strchr(tok->module, '/'))
            p11_kit_uri_set_module_path(u, tok->module);
        else
            p11_kit_uri_set_module_name(u, tok->module);
    }
    if (p11_kit_uri_format(u, with_module ? P11_KIT_URI_FOR_OBJECT_ON_TOKEN_AND_MODULE
                                          : P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s) != P11_KIT_URI_OK)
        s = NULL;
    p11_uri_free(u);
    out = kv_strdup(s);
    free(s);
    return out;
}

static kv_key_type type_of(CK_KEY_TYPE kt, const EVP_PKEY *pub)
{
    (void)kt;
    return pub ? kv_type_of_pkey(pub) : KV_KEY_UNKNOWN;
}

struct open_arg {
    kv_backend *be;
    struct p11_token *tok;
    CK_ATTRIBUTE tmpl[4];
    CK_ULONG ntmpl;
    const char *what;   /* for messages: "named 'x'" or the URI */
    kv_key *key;
    bool exists_only;   /* only whether it exists */
    bool quiet;         /* not found is returned without a detail (open by name) */
    bool trusted_pub;   /* the pair was just made here: skip the public key check */
    bool skip_policy;   /* do not look for the key's policy object (a list) */
    /* the pair just made here: its handles, as C_GenerateKeyPair gave them
     * (CK_INVALID_HANDLE: search by the template) */
    CK_OBJECT_HANDLE made_priv, made_pub;
};

static CK_RV pub_check(struct p11_token *tok, CK_SESSION_HANDLE h, struct p11_key *k,
                       kv_key_type type, EVP_PKEY *pub, const char *label, kv_rc *rc);

/* ---- key policies ----------------------------------------------------------- */

#define P11_POLICY_APP "libkeyvault"
#define P11_POLICY_FORMAT "libkeyvault key policy 1"

/* Upper-case hex of a CKA_ID (out holds 2 * 128 + 1). */
static void id_hex(const unsigned char *id, CK_ULONG len, char *out)
{
    static const char digits[] = "0123456789ABCDEF";

    for (CK_ULONG i = 0; i < len; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * len] = '\0';
}

/* The libkeyvault policy data objects labelled `label` (a new array). */
static CK_RV policy_objects(struct p11_token *tok, CK_SESSION_HANDLE h, const char *label,
                            CK_OBJECT_HANDLE **objs, CK_ULONG *count, kv_rc *rc)
{
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_APPLICATION, (void *)P11_POLICY_APP, strlen(P11_POLICY_APP) },
        { CKA_LABEL, (void *)label, strlen(label) },
    };

    return find_all(tok, h, tmpl, 3, objs, count, rc);
}

/*
 * Which of the policy objects labelled `label` belongs to the key with this
 * CKA_ID: *found (CK_INVALID_HANDLE when none) and, with policy not NULL,
 * its policy decoded. Objects naming another CKA_ID are a killed
 * generation's leftovers and are passed over; an object that does not
 * decode, or two for one key, is KV_ERR_CORRUPT naming the key.
 */
static CK_RV policy_find(struct p11_token *tok, CK_SESSION_HANDLE h, const char *label,
                         const unsigned char *id, CK_ULONG idlen, CK_OBJECT_HANDLE *found,
                         kv_key_policy **policy, kv_rc *rc)
{
    CK_OBJECT_HANDLE *objs = NULL;
    CK_ULONG count = 0, len = 0;
    char hex[2 * 128 + 1], what[KV_NAME_MAX + 64];
    CK_RV rv;

    *found = CK_INVALID_HANDLE;
    id_hex(id, idlen, hex);
    snprintf(what, sizeof(what), "key '%s' on token '%s'", label, tok->label);
    rv = policy_objects(tok, h, label, &objs, &count, rc);
    for (CK_ULONG i = 0; rv == CKR_OK && *rc == KV_OK && i < count; i++) {
        unsigned char *val = NULL;
        const char *fmt = NULL, *kid = NULL;
        json_t *j = NULL, *jp = NULL;

        rv = get_attr(tok, h, objs[i], CKA_VALUE, &val, &len, rc);
        if (rv != CKR_OK || *rc != KV_OK)
            break;
        j = json_loadb((const char *)val, len, JSON_REJECT_DUPLICATES, NULL);
        free(val);
        if (!j || json_unpack(j, "{s:s, s:s, s:o !}", "format", &fmt, "key_id", &kid, "policy",
                              &jp) != 0 || strcmp(fmt, P11_POLICY_FORMAT) != 0) {
            *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                           "%s: a libkeyvault policy object with its label is damaged", what);
        } else if (strcmp(kid, hex) == 0) {
            if (*found != CK_INVALID_HANDLE)
                *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                               "%s: two libkeyvault policy objects name this key", what);
            *found = objs[i];
            if (*rc == KV_OK && policy)
                *rc = kv_key_policy_from_json(tok->ctx, what, jp, policy);
        }
        json_decref(j);
    }
    free(objs);
    if (*rc != KV_OK && policy) {
        free(*policy);
        *policy = NULL;
    }
    return rv;
}

/* Destroy every policy object labelled `label`, or (id not NULL) only the
 * one of the key with that CKA_ID. */
static CK_RV policy_destroy(struct p11_token *tok, CK_SESSION_HANDLE h, const char *label,
                            const unsigned char *id, CK_ULONG idlen, kv_rc *rc)
{
    CK_OBJECT_HANDLE *objs = NULL, one;
    CK_ULONG count = 0;
    CK_RV rv;

    if (id) {
        rv = policy_find(tok, h, label, id, idlen, &one, NULL, rc);
        if (rv != CKR_OK || *rc != KV_OK || one == CK_INVALID_HANDLE)
            return rv;
        rv = tok->fl->C_DestroyObject(h, one);
        if (rv != CKR_OK)
            *rc = p11_fail(tok, "C_DestroyObject (the key's policy object)", rv);
        return rv;
    }
    rv = policy_objects(tok, h, label, &objs, &count, rc);
    for (CK_ULONG i = 0; rv == CKR_OK && *rc == KV_OK && i < count; i++) {
        rv = tok->fl->C_DestroyObject(h, objs[i]);
        if (rv != CKR_OK)
            *rc = p11_fail(tok, "C_DestroyObject (a leftover policy object)", rv);
    }
    free(objs);
    return rv;
}

/* Make the policy object of the key to be made with this label and id. */
static CK_RV policy_create(struct p11_token *tok, CK_SESSION_HANDLE h, const char *label,
                           const unsigned char *id, CK_ULONG idlen, const kv_key_policy *policy,
                           CK_OBJECT_HANDLE *obj, kv_rc *rc)
{
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_BBOOL yes = CK_TRUE;
    char hex[2 * 128 + 1], *text = NULL;
    json_t *j;
    CK_RV rv = CKR_OK;

    id_hex(id, idlen, hex);
    j = json_pack("{s:s, s:s, s:o}", "format", P11_POLICY_FORMAT, "key_id", hex, "policy",
                  kv_key_policy_json(policy));
    text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!text) {
        *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
    } else {
        CK_ATTRIBUTE tmpl[] = {
            { CKA_CLASS, &cls, sizeof(cls) },
            { CKA_TOKEN, &yes, sizeof(yes) },
            { CKA_PRIVATE, &yes, sizeof(yes) },
            { CKA_LABEL, (void *)label, strlen(label) },
            { CKA_APPLICATION, (void *)P11_POLICY_APP, strlen(P11_POLICY_APP) },
            { CKA_VALUE, text, strlen(text) },
        };
        rv = tok->fl->C_CreateObject(h, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), obj);
        if (rv != CKR_OK)
            *rc = p11_fail(tok, "C_CreateObject (the key's policy object)", rv);
    }
    json_decref(j);
    free(text);
    return rv;
}

/* The mechanisms a policy allows a key of type t (CKA_ALLOWED_MECHANISMS). */
static CK_ULONG policy_mechs(const kv_key_policy *p, const kv_type_desc *t,
                             CK_MECHANISM_TYPE mechs[4])
{
    CK_ULONG n = 0;
    bool pss = !p->algs, pkcs1 = !p->algs;

    for (int a = 1; a <= KV_ALG_ED25519; a++)
        if (p->algs & (1u << a)) {
            const kv_alg_desc *d = kv_alg_desc_get((kv_sign_alg)a);
            pss |= d->padding == KV_PAD_PSS;
            pkcs1 |= d->padding == KV_PAD_PKCS1;
        }
    if (p->uses & (KV_USE_SIGN | KV_USE_ATTEST | KV_USE_ISSUE)) {
        if (t->family == KV_FAMILY_EC)
            mechs[n++] = CKM_ECDSA;
        else if (t->family == KV_FAMILY_ED25519)
            mechs[n++] = CKM_EDDSA;
        else {
            if (pss)
                mechs[n++] = CKM_RSA_PKCS_PSS;
            if (pkcs1)
                mechs[n++] = CKM_RSA_PKCS;
        }
    }
    if ((p->uses & KV_USE_ECDH) && t->family == KV_FAMILY_EC)
        mechs[n++] = CKM_ECDH1_DERIVE;
    return n;
}

/* Find exactly one private key matching the template; fill the kv_key. */
static CK_RV open_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct open_arg *a = p;
    CK_OBJECT_HANDLE objs[2];
    CK_ULONG count = 0, len = 0;
    unsigned char *label = NULL, *id = NULL, *kt = NULL;
    struct p11_key *k = NULL;
    EVP_PKEY *pub = NULL;
    CK_RV rv;

    if (a->made_priv != CK_INVALID_HANDLE) {
        objs[0] = a->made_priv;
        count = 1;
    } else if ((rv = find(tok, h, a->tmpl, a->ntmpl, objs, 2, &count, rc)) != CKR_OK) {
        return rv;
    }
    if (count == 0) {
        *rc = a->quiet ? KV_ERR_KEY_NOT_FOUND
                       : kv_error(tok->ctx, KV_ERR_KEY_NOT_FOUND, "no private key %s on token '%s'",
                                  a->what, tok->label);
        return CKR_OK;
    }
    if (count > 1) {
        *rc = kv_error(tok->ctx, KV_ERR_BAD_URI,
                       "more than one private key %s on token '%s': name it by URI with id=",
                       a->what, tok->label);
        return CKR_OK;
    }
    if (a->exists_only)
        return CKR_OK;
    if ((rv = get_attr(tok, h, objs[0], CKA_ID, &id, &len, rc)) != CKR_OK || *rc)
        goto out;
    k = calloc(1, sizeof(*k));
    if (!k || len > sizeof(k->id)) {
        *rc = kv_error(tok->ctx, k ? KV_ERR_UNSUPPORTED : KV_ERR_NO_MEMORY,
                       k ? "CKA_ID longer than %zu bytes" : "out of memory", sizeof(k->id));
        goto out;
    }
    memcpy(k->id, id, len);
    k->idlen = len;
    if ((rv = get_attr(tok, h, objs[0], CKA_KEY_TYPE, &kt, &len, rc)) != CKR_OK || *rc)
        goto out;
    if (len != sizeof(k->ktype)) {
        *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                       "token '%s': C_GetAttributeValue gives CKA_KEY_TYPE of %lu bytes, not %zu",
                       tok->label, (unsigned long)len, sizeof(k->ktype));
        goto out;
    }
    memcpy(&k->ktype, kt, sizeof(k->ktype));
    kv_err_mark mark = kv_err_mark_get(tok->ctx);
    rv = get_attr(tok, h, objs[0], CKA_LABEL, &label, &len, rc);
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE)
        goto out; /* the token failed: not a key without a label */
    if (rv != CKR_OK || *rc) {
        /* a key without a label: name it by its id */
        kv_err_rewind(tok->ctx, mark);
        *rc = KV_OK;
        rv = CKR_OK;
        free(label);
        label = NULL;
    } else {
        unsigned char *z = realloc(label, len + 1);
        if (!z) {
            *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
            goto out;
        }
        label = z;
        label[len] = '\0';
    }
    if (a->made_pub != CK_INVALID_HANDLE)
        rv = public_from_object(tok, h, a->made_pub, k->ktype, &pub, rc);
    else
        rv = find_public(tok, h, k->id, k->idlen, k->ktype, (char *)label, &pub, rc);
    if (rv != CKR_OK || *rc)
        goto out;
    a->key->type = type_of(k->ktype, pub);
    if (a->key->type == KV_KEY_UNKNOWN) {
        *rc = kv_error(tok->ctx, KV_ERR_UNSUPPORTED,
                       "private key %s on token '%s' is of a type libkeyvault does not use",
                       a->what, tok->label);
        goto out;
    }
    k->tok = tok;
    k->priv = objs[0];
    k->epoch = __atomic_load_n(&tok->epoch, __ATOMIC_ACQUIRE);
    kv_mutex_init(&k->lock);
    if (!a->trusted_pub) {
        rv = pub_check(tok, h, k, a->key->type, pub, (char *)label, rc);
        if (rv != CKR_OK || *rc) {
            kv_mutex_destroy(&k->lock);
            goto out;
        }
    }
    if (!a->skip_policy && label && !a->key->policy) {
        CK_OBJECT_HANDLE pobj;
        rv = policy_find(tok, h, (char *)label, k->id, k->idlen, &pobj, &a->key->policy, rc);
        if (rv != CKR_OK || *rc) {
            kv_mutex_destroy(&k->lock);
            goto out;
        }
    }
    a->key->pub = pub;
    pub = NULL;
    a->key->name = label ? kv_strdup((char *)label) : kv_strdup("(unlabelled)");
    a->key->uri = key_uri(tok, (char *)label, k->id, k->idlen, tok != st(a->be)->def);
    a->key->bk = k;
    k = NULL;
    if (!a->key->name || !a->key->uri)
        *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
out:
    EVP_PKEY_free(pub);
    free(k);
    free(label);
    free(id);
    free(kt);
    return rv;
}

static kv_rc need_default(kv_backend *be)
{
    if (!st(be)->def)
        return kv_error(be->ctx, KV_ERR_BACKEND_UNAVAILABLE, "pkcs11: %s", be->why);
    return KV_OK;
}

/* Find the private key labelled `name` on the configured token; with key
 * NULL, only whether it exists. Not found is quiet: the core names the key
 * when no backend has it. */
static kv_rc by_label(kv_backend *be, const char *name, kv_key *key)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    struct open_arg a = { .be = be, .tok = st(be)->def, .key = key, .exists_only = !key,
                          .quiet = true };
    char what[96];
    kv_rc rc = need_default(be);

    if (rc != KV_OK)
        return rc;
    snprintf(what, sizeof(what), "labelled '%s'", name);
    a.what = what;
    a.tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
    a.tmpl[1] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)name, strlen(name) };
    a.ntmpl = 2;
    return run(a.tok, open_step, &a);
}

static kv_rc p11_open_name(kv_backend *be, const char *name, kv_key *key)
{
    return by_label(be, name, key);
}

static kv_rc p11_exists(kv_backend *be, const char *name)
{
    kv_rc rc = by_label(be, name, NULL);

    return rc == KV_ERR_BAD_URI ? KV_OK : rc; /* more than one: it certainly exists */
}

#define P11_TOO_MANY "%s: more than %d PKCS#11 tokens (module, token and PIN) opened by URI"

/* Whether entry o was made for this module, token match, PIN and source. */
static bool other_is(const struct p11_other *o, const char *module, const char *real,
                     const char *match, const unsigned char *pin_mac, const char *src)
{
    const struct p11_token *t = o->tok;

    if (strcmp(t->module, module) && !(real && o->module_real && !strcmp(real, o->module_real)))
        return false;
    if (strcmp(o->match, match))
        return false;
    if ((src == NULL) != (t->pin_source == NULL) || (src && strcmp(src, t->pin_source)))
        return false;
    if ((pin_mac != NULL) != o->has_pin)
        return false;
    return !pin_mac || CRYPTO_memcmp(pin_mac, o->pin_mac, sizeof(o->pin_mac)) == 0;
}

/* The entry of others made for these, or NULL. Called with s->lock held. */
static struct p11_token *other_find(struct p11_state *s, const char *module, const char *real,
                                    const char *match, const unsigned char *pin_mac,
                                    const char *src)
{
    for (size_t i = 0; i < s->nothers; i++)
        if (other_is(&s->others[i], module, real, match, pin_mac, src))
            return s->others[i].tok;
    return NULL;
}

/* The token a URI names: the configured one when it matches, else one of
 * the others: found again when an earlier URI named the same module, token,
 * PIN and PIN source, else made, connected and kept. Takes ownership of
 * uri; `shown` names it in messages. */
static kv_rc token_for_uri(kv_backend *be, P11KitUri *uri, const char *shown,
                           struct p11_token **out)
{
    struct p11_state *s = st(be);
    const char *mpath = p11_kit_uri_get_module_path(uri);
    const char *mname = p11_kit_uri_get_module_name(uri);
    const char *module = mpath ? mpath : mname ? mname : s->module;
    const char *pin_source = p11_kit_uri_get_pin_source(uri);
    char *src = NULL, *pin = NULL, *match = NULL, *real = NULL;
    unsigned char mac[32];
    struct p11_token *tok = NULL;
    struct p11_sess *sess = NULL;
    bool full;
    kv_rc rc = KV_OK;

    *out = NULL;
    KV_CHECK(rc, p11_uri_take_pin(be->ctx, uri, &pin));
    if (!module)
        KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI,
                "%s names no module-name or module-path, and no [pkcs11] module is configured",
                shown);
    /* the configured token, when the URI asks for nothing else */
    if (s->def && !strcmp(module, s->module) && !pin && !pin_source) {
        KV_CHECK(rc, p11_session_get(s->def, &sess)); /* connect, to know its token info */
        int same = p11_kit_uri_match_token_info(uri, &s->def->info);
        p11_session_put(s->def, sess, CKR_OK);
        if (same) {
            *out = s->def;
            goto out;
        }
    }
    if (pin_source) {
        /* RFC 7512: pin-source is a URI; a bare path means a file. Only an
         * absolute path is taken, and a refused one is not shown: a PIN typed
         * there by mistake would otherwise come back in 'cannot open ...' */
        const char *path = !strncmp(pin_source, "file:", 5) ? pin_source + 5 : pin_source;
        if (path[0] != '/')
            KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI,
                    "%s: pin-source must be an absolute file path (file:/path or /path); "
                    "the value is not shown", shown);
        src = kv_asprintf("file:%s", path);
        if (!src)
            KV_FAIL(be->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    /* what tells tokens apart: the URI's token attributes (its query, the
     * PIN included, left out), the module, the PIN by its MAC */
    match = p11_uri_shown(uri, P11_KIT_URI_FOR_TOKEN);
    if (!match)
        KV_FAIL(be->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (strchr(module, '/'))
        real = realpath(module, NULL);
    if (pin)
        KV_CHECK(rc, p11_pin_mac(be->ctx, NULL, pin, mac));
    /* (an entry is counted only once whole: one a parent thread was adding
     * at fork() is not there for the child) */
    (void)kv_mutex_lock(&s->lock);
    *out = other_find(s, module, real, match, pin ? mac : NULL, src);
    full = s->nothers == P11_MAX_OTHERS;
    kv_mutex_unlock(&s->lock);
    if (*out)
        goto out;
    if (full) /* no login attempt for a token that could not be kept */
        KV_FAIL(be->ctx, rc, KV_ERR_UNSUPPORTED, P11_TOO_MANY, shown, P11_MAX_OTHERS);
    /* a new one: connected (and logged in) before it is kept, so a wrong
     * PIN or a missing token takes no place; s->rejected remembers a PIN
     * the token refused, for the next attempt */
    KV_CHECK(rc, p11_token_new(be->ctx, module, uri, src, pin, s->maxsess, &s->rejected, &tok));
    uri = NULL; /* the token's now */
    KV_CHECK(rc, p11_session_get(tok, &sess));
    p11_session_put(tok, sess, CKR_OK);
    (void)kv_mutex_lock(&s->lock);
    /* another thread may have kept the same one meanwhile */
    *out = other_find(s, module, real, match, pin ? mac : NULL, src);
    if (!*out && s->nothers == P11_MAX_OTHERS) {
        rc = kv_error(be->ctx, KV_ERR_UNSUPPORTED, P11_TOO_MANY, shown, P11_MAX_OTHERS);
    } else if (!*out) {
        struct p11_other *o = &s->others[s->nothers];
        o->tok = tok;
        o->module_real = real;
        o->match = match;
        o->has_pin = pin != NULL;
        if (pin)
            memcpy(o->pin_mac, mac, sizeof(mac));
        /* counted last: a child forked meanwhile sees it whole or not */
        __atomic_store_n(&s->nothers, s->nothers + 1, __ATOMIC_RELEASE);
        *out = tok;
        tok = NULL;
        real = match = NULL;
    }
    kv_mutex_unlock(&s->lock);
out:
    p11_token_free(tok);
    p11_uri_free(uri);
    kv_wipe(mac, sizeof(mac));
    kv_secret_free(pin);
    free(src);
    free(match);
    free(real);
    return rc;
}

/*
 * Parse the pkcs11: URI of a key (to open or to make): *out, and *shown, the
 * URI as messages show it (parsed, without its query: PIN, PIN source,
 * module; one that does not parse is not shown at all). A type= must be
 * private.
 */
static kv_rc parse_key_uri(kv_backend *be, const char *text, P11KitUri **out, char **shown)
{
    P11KitUri *uri = p11_kit_uri_new();
    CK_ATTRIBUTE *attr;
    kv_rc rc = KV_OK;
    int r;

    *out = NULL;
    *shown = NULL;
    if (!uri)
        return kv_error(be->ctx, KV_ERR_NO_MEMORY, "out of memory");
    r = p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, uri);
    if (r != P11_KIT_URI_OK)
        KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI, "not a valid pkcs11: URI: %s",
                p11_kit_uri_message(r));
    *shown = p11_uri_shown(uri, P11_KIT_URI_FOR_ANY);
    if (!*shown)
        KV_FAIL(be->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    attr = p11_kit_uri_get_attribute(uri, CKA_CLASS);
    if (attr && (attr->ulValueLen != sizeof(CK_OBJECT_CLASS) ||
                 *(CK_OBJECT_CLASS *)attr->pValue != CKO_PRIVATE_KEY))
        KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI, "%s does not name a private key (type=private)",
                *shown);
    *out = uri;
    uri = NULL;
out:
    p11_uri_free(uri);
    if (rc != KV_OK) {
        free(*shown);
        *shown = NULL;
    }
    return rc;
}

static kv_rc p11_open_uri(kv_backend *be, const char *text, kv_key *key)
{
    P11KitUri *uri = NULL;
    struct open_arg a = { .be = be, .key = key };
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    unsigned char idbuf[128], labelbuf[256];
    CK_ATTRIBUTE *attr;
    char *shown = NULL, *what = NULL;
    kv_rc rc;

    KV_CHECK(rc, parse_key_uri(be, text, &uri, &shown));
    what = kv_asprintf("matching %s", shown);
    if (!what)
        KV_FAIL(be->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    a.what = what;
    a.tmpl[a.ntmpl++] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
    /* copy the object attributes before the URI moves to the token; one
     * too long for that is refused, never left out of the search */
    if ((attr = p11_kit_uri_get_attribute(uri, CKA_ID))) {
        if (attr->ulValueLen > sizeof(idbuf))
            KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI, "%s: id= is %lu bytes, longer than %zu",
                    shown, (unsigned long)attr->ulValueLen, sizeof(idbuf));
        memcpy(idbuf, attr->pValue, attr->ulValueLen);
        a.tmpl[a.ntmpl++] = (CK_ATTRIBUTE){ CKA_ID, idbuf, attr->ulValueLen };
    }
    if ((attr = p11_kit_uri_get_attribute(uri, CKA_LABEL))) {
        if (attr->ulValueLen > sizeof(labelbuf))
            KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI, "%s: object= is %lu bytes, longer than %zu",
                    shown, (unsigned long)attr->ulValueLen, sizeof(labelbuf));
        memcpy(labelbuf, attr->pValue, attr->ulValueLen);
        a.tmpl[a.ntmpl++] = (CK_ATTRIBUTE){ CKA_LABEL, labelbuf, attr->ulValueLen };
    }
    if (a.ntmpl == 1)
        KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI, "%s names no object (object= or id=)", shown);
    rc = token_for_uri(be, uri, shown, &a.tok);
    uri = NULL; /* the token's now, or freed */
    if (rc == KV_OK)
        rc = run(a.tok, open_step, &a);
out:
    p11_uri_free(uri);
    free(shown);
    free(what);
    return rc;
}

/* ---- generate ------------------------------------------------------------- */

struct gen_arg {
    kv_backend *be;
    const char *name;
    kv_key_type type;
    kv_key *key;
    const unsigned char *id;   /* the CKA_ID to give the pair; NULL: random */
    size_t idlen;
};

/* How many private keys carry this attribute (a label or an id). */
static CK_RV count_private(struct p11_token *tok, CK_SESSION_HANDLE h, CK_ATTRIBUTE_TYPE type,
                           const void *val, size_t len, CK_ULONG *count, kv_rc *rc)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) }, { type, (void *)val, len } };
    CK_OBJECT_HANDLE objs[2];

    return find(tok, h, tmpl, 2, objs, 2, count, rc);
}

/*
 * Make the pair, atomically as far as a token allows: no private key may
 * carry the label (or the id) before, and after C_GenerateKeyPair ours
 * must be the only one with the label. A creator that finds another one
 * then (a process racing us without our lock: another home, another
 * machine on a shared token, another tool) destroys its own pair and
 * reports KV_ERR_KEY_EXISTS, so the token never keeps two keys of one name.
 */
/* Remove a pair just made, private key first (a public key left alone is
 * no key); false when the private key stays. */
static bool unmake(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE privh,
                   CK_OBJECT_HANDLE pubh)
{
    CK_RV rv = tok->fl->C_DestroyObject(h, privh);

    /* CKR_OBJECT_HANDLE_INVALID: gone already (another creator's purge) */
    if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
        return false;
    (void)tok->fl->C_DestroyObject(h, pubh);
    return true;
}

struct purge_arg {
    const char *name;
    size_t removed;
};
static CK_RV purge_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc);

static CK_RV gen_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct gen_arg *a = p;
    const kv_type_desc *t = kv_type_desc_get(a->type);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = t->bits;
    CK_BYTE exp[] = { 0x01, 0x00, 0x01 };
    unsigned char rid[P11_ID_LEN], *params = NULL;
    const unsigned char *id = a->id ? a->id : rid;
    CK_ULONG idlen = a->id ? a->idlen : sizeof(rid);
    int plen = 0;
    CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    CK_OBJECT_HANDLE pubh, privh, polh = CK_INVALID_HANDLE;
    CK_ULONG npub = 0, npriv = 0, count = 0, nmechs = 0;
    CK_ATTRIBUTE pub[8], priv[12];
    CK_MECHANISM_TYPE mechs[4];
    kv_err_mark mark;
    const kv_key_policy *policy = a->key->policy;
    CK_BBOOL can_sign = !policy || (policy->uses & (KV_USE_SIGN | KV_USE_ATTEST | KV_USE_ISSUE));
    CK_BBOOL can_derive = !policy || (policy->uses & KV_USE_ECDH);
    CK_RV rv = CKR_OK;

    if (!a->id && RAND_bytes(rid, sizeof(rid)) != 1) {
        *rc = kv_error(tok->ctx, KV_ERR_CRYPTO, "random generator failed");
        return CKR_OK;
    }
    if (t->family == KV_FAMILY_EC || t->family == KV_FAMILY_ED25519) {
        int nid = t->family == KV_FAMILY_ED25519 ? NID_ED25519 : EC_curve_nist2nid(t->group);
        plen = i2d_ASN1_OBJECT(OBJ_nid2obj(nid), &params);
        if (plen <= 0) {
            *rc = kv_error_ossl(tok->ctx, KV_ERR_CRYPTO, "cannot encode the curve OID");
            return CKR_OK;
        }
        pub[npub++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, params, (CK_ULONG)plen };
        if (t->family == KV_FAMILY_ED25519)
            mech.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
    } else {
        mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
        pub[npub++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits, sizeof(bits) };
        pub[npub++] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, exp, sizeof(exp) };
    }
    rv = p11_mech_check(tok, h, mech.mechanism, CKF_GENERATE_KEY_PAIR, rc);
    if (rv != CKR_OK || *rc != KV_OK)
        goto out;
    rv = count_private(tok, h, CKA_LABEL, a->name, strlen(a->name), &count, rc);
    if (rv != CKR_OK || *rc != KV_OK)
        goto out;
    if (count > 0) {
        *rc = kv_error(tok->ctx, KV_ERR_KEY_EXISTS,
                       "a private key labelled '%s' already exists on token '%s'", a->name,
                       tok->label);
        goto out;
    }
    if (a->id) {
        rv = count_private(tok, h, CKA_ID, id, idlen, &count, rc);
        if (rv != CKR_OK || *rc != KV_OK)
            goto out;
        if (count > 0) {
            *rc = kv_error(tok->ctx, KV_ERR_KEY_EXISTS,
                           "a private key with the requested CKA_ID already exists on token '%s'",
                           tok->label);
            goto out;
        }
    }
    /* what a failed destroy of the name left (public key, certificates,
     * policy object), and a killed generation's policy object, which this
     * key would otherwise find */
    {
        struct purge_arg pa = { a->name, 0 };
        rv = purge_step(tok, h, &pa, rc);
        if (rv != CKR_OK || *rc != KV_OK)
            goto out;
    }
    /* the policy object comes first: a run killed after it leaves no key, and
     * one killed after the pair leaves the key with its policy */
    if (policy) {
        rv = policy_create(tok, h, a->name, id, idlen, policy, &polh, rc);
        if (rv != CKR_OK || *rc != KV_OK)
            goto out;
    }
    pub[npub++] = (CK_ATTRIBUTE){ CKA_TOKEN, &yes, sizeof(yes) };
    pub[npub++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &no, sizeof(no) };
    pub[npub++] = (CK_ATTRIBUTE){ CKA_VERIFY, &yes, sizeof(yes) };
    pub[npub++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)a->name, strlen(a->name) };
    pub[npub++] = (CK_ATTRIBUTE){ CKA_ID, (void *)id, idlen };
    priv[npriv++] = (CK_ATTRIBUTE){ CKA_TOKEN, &yes, sizeof(yes) };
    priv[npriv++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &yes, sizeof(yes) };
    priv[npriv++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &yes, sizeof(yes) };
    priv[npriv++] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, &no, sizeof(no) };
    priv[npriv++] = (CK_ATTRIBUTE){ CKA_SIGN, can_sign ? &yes : &no, sizeof(yes) };
    priv[npriv++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)a->name, strlen(a->name) };
    priv[npriv++] = (CK_ATTRIBUTE){ CKA_ID, (void *)id, idlen };
    if (t->family == KV_FAMILY_EC)
        priv[npriv++] = (CK_ATTRIBUTE){ CKA_DERIVE, can_derive ? &yes : &no, sizeof(yes) };
    if (policy) {
        priv[npriv++] = (CK_ATTRIBUTE){ CKA_MODIFIABLE, &no, sizeof(no) };
        nmechs = policy_mechs(policy, t, mechs);
        if (nmechs)
            priv[npriv++] = (CK_ATTRIBUTE){ CKA_ALLOWED_MECHANISMS, mechs,
                                            nmechs * sizeof(mechs[0]) };
    }
    rv = tok->fl->C_GenerateKeyPair(h, &mech, pub, npub, priv, npriv, &pubh, &privh);
    if (nmechs && (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
                   rv == CKR_TEMPLATE_INCONSISTENT)) {
        /* a token without CKA_ALLOWED_MECHANISMS (PKCS#11 2.40): the rest holds */
        rv = tok->fl->C_GenerateKeyPair(h, &mech, pub, npub, priv, npriv - 1, &pubh, &privh);
    }
    if (rv != CKR_OK) {
        *rc = p11_fail(tok, "C_GenerateKeyPair", rv);
        goto out;
    }
    rv = count_private(tok, h, CKA_LABEL, a->name, strlen(a->name), &count, rc);
    if (rv == CKR_OK && *rc == KV_OK && count > 1)
        *rc = kv_error(tok->ctx, KV_ERR_KEY_EXISTS,
                       "another private key labelled '%s' appeared on token '%s' while this "
                       "one was made: this one was removed", a->name, tok->label);
    if (rv != CKR_OK || *rc != KV_OK) {
        if (!unmake(tok, h, privh, pubh))
            polh = CK_INVALID_HANDLE;
        goto out;
    }
    {
        /* the pair as made, never found again by its CKA_ID: another
         * public object may carry the same one */
        struct open_arg o = { .be = a->be, .tok = tok, .key = a->key, .what = a->name,
                              .trusted_pub = true, .made_priv = privh, .made_pub = pubh };
        mark = kv_err_mark_get(tok->ctx);
        rv = open_step(tok, h, &o, rc);
    }
    if (rv == CKR_OBJECT_HANDLE_INVALID) {
        /* an object of the pair is gone since it was made: a creator racing
         * this one without its lock (another home) found the public key
         * before this private key existed and purged it as a destroyed
         * key's leftover (purge_step). That one makes the key; this one
         * loses, as when it finds the other's pair. (A policy object purged
         * so is not noticed here: docs/design.md.) */
        rv = CKR_OK;
        if (!unmake(tok, h, privh, pubh))
            polh = CK_INVALID_HANDLE;
        kv_err_rewind(tok->ctx, mark); /* this, not the failed read, is the outcome */
        *rc = kv_error(tok->ctx, KV_ERR_KEY_EXISTS,
                       "another creator of '%s' on token '%s' (one not sharing this "
                       "process's lock) removed part of this one's key pair while it was made: "
                       "this one was removed",
                       a->name, tok->label);
        goto out;
    }
    if (rv != CKR_OK || *rc != KV_OK) {
        /* a generation that reports failure leaves no key behind (were it
         * kept, the retry after a lost session would find it "existing");
         * if the token is gone the removal fails too, and the whole pair
         * stays with its policy */
        if (!unmake(tok, h, privh, pubh))
            polh = CK_INVALID_HANDLE;
        goto out;
    }
    polh = CK_INVALID_HANDLE; /* the pair stays: its policy object with it */
out:
    if (polh != CK_INVALID_HANDLE)
        (void)tok->fl->C_DestroyObject(h, polh);
    OPENSSL_free(params);
    return rv;
}

static kv_rc p11_generate(kv_backend *be, const char *name, kv_key_type type, kv_key *key)
{
    struct gen_arg a = { be, name, type, key, NULL, 0 };
    kv_rc rc = need_default(be);

    if (rc != KV_OK)
        return rc;
    return run_rw(st(be)->def, gen_step, &a);
}

/* pkcs11:token=T;object=NAME[;id=...][;type=private]?module-...&pin-...:
 * the key pair labelled NAME on that token. */
static kv_rc p11_generate_uri(kv_backend *be, const char *text, kv_key_type type, kv_key *key)
{
    P11KitUri *uri = NULL;
    struct gen_arg a = { .be = be, .type = type, .key = key };
    struct p11_token *tok = NULL;
    CK_ATTRIBUTE *attr;
    unsigned char idbuf[128];
    char name[KV_NAME_MAX + 1], *shown = NULL;
    kv_rc rc;

    KV_CHECK(rc, parse_key_uri(be, text, &uri, &shown));
    attr = p11_kit_uri_get_attribute(uri, CKA_LABEL);
    if (!attr || attr->ulValueLen == 0 || attr->ulValueLen > KV_NAME_MAX)
        KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI,
                "a new key's pkcs11: URI needs object=NAME, 1-%d characters", KV_NAME_MAX);
    memcpy(name, attr->pValue, attr->ulValueLen);
    name[attr->ulValueLen] = '\0';
    if (strlen(name) != attr->ulValueLen || !kv_name_valid(name))
        KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI,
                "the object= of a new key is not a valid key name: use 1-64 of A-Z a-z 0-9 "
                ". _ -, not starting with '.'");
    a.name = name;
    if ((attr = p11_kit_uri_get_attribute(uri, CKA_ID))) {
        if (attr->ulValueLen == 0 || attr->ulValueLen > sizeof(idbuf))
            KV_FAIL(be->ctx, rc, KV_ERR_BAD_URI, "id= of a new key: 1-%zu bytes",
                    sizeof(idbuf));
        memcpy(idbuf, attr->pValue, attr->ulValueLen);
        a.id = idbuf;
        a.idlen = attr->ulValueLen;
    }
    rc = token_for_uri(be, uri, shown, &tok);
    uri = NULL; /* token_for_uri took it */
    if (rc != KV_OK)
        goto out;
    rc = run_rw(tok, gen_step, &a);
out:
    p11_uri_free(uri);
    free(shown);
    return rc;
}

/* ---- list and destroy ---------------------------------------------------- */

struct list_arg {
    kv_backend *be;
    kv_list_builder *lb;
};

/* An object and its CKA_ID, for a list to pair keys without a search per
 * key. len > sizeof(id): none, or too long to be a key's. */
struct id_ref {
    CK_OBJECT_HANDLE obj;
    CK_ULONG len;
    unsigned char id[sizeof(((struct p11_key *)0)->id)];
};

static int id_cmp(const void *a, const void *b)
{
    const struct id_ref *x = a, *y = b;

    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->len > sizeof(x->id) ? 0 : memcmp(x->id, y->id, x->len);
}

/* The objects of class cls with their CKA_IDs, sorted by id: one search
 * and one C_GetAttributeValue per object. */
static CK_RV ids_of(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_CLASS cls,
                    struct id_ref **out, CK_ULONG *n, kv_rc *rc)
{
    CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) } };
    CK_OBJECT_HANDLE *objs = NULL;
    CK_ULONG count = 0;
    struct id_ref *r = NULL;
    CK_RV rv = find_all(tok, h, tmpl, 1, &objs, &count, rc);

    *out = NULL;
    *n = 0;
    if (rv != CKR_OK || *rc != KV_OK || count == 0)
        goto out;
    if (!(r = calloc(count, sizeof(*r)))) {
        *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
        goto out;
    }
    for (CK_ULONG i = 0; i < count; i++) {
        CK_ATTRIBUTE a = { CKA_ID, r[i].id, sizeof(r[i].id) };
        r[i].obj = objs[i];
        rv = tok->fl->C_GetAttributeValue(h, objs[i], &a, 1);
        /* CKR_OBJECT_HANDLE_INVALID: destroyed by another session since
         * the search; like an object without an id, it is left out */
        if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
            rv == CKR_BUFFER_TOO_SMALL || rv == CKR_OBJECT_HANDLE_INVALID) {
            rv = CKR_OK;
            a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
        }
        if (rv != CKR_OK) {
            *rc = p11_fail(tok, "C_GetAttributeValue (CKA_ID, in list)", rv);
            goto out;
        }
        r[i].len = a.ulValueLen <= sizeof(r[i].id) ? a.ulValueLen : sizeof(r[i].id) + 1;
    }
    qsort(r, count, sizeof(*r), id_cmp);
    *out = r;
    *n = count;
    r = NULL;
out:
    free(r);
    free(objs);
    return rv;
}

/* The private keys, each paired with the public key of its CKA_ID from
 * one search of all public keys: a list costs two searches and a few
 * attribute reads per key (it was two searches per key, each of which
 * SoftHSM answers by reading every object: O(N^2) for N keys). */
static CK_RV list_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct list_arg *a = p;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    struct id_ref *priv = NULL, *pubs = NULL;
    CK_ULONG np = 0, npub = 0;
    CK_RV rv = ids_of(tok, h, CKO_PRIVATE_KEY, &priv, &np, rc);

    if (rv == CKR_OK && *rc == KV_OK)
        rv = ids_of(tok, h, CKO_PUBLIC_KEY, &pubs, &npub, rc);
    for (CK_ULONG i = 0; rv == CKR_OK && *rc == KV_OK && i < np; i++) {
        kv_key key = { .ctx = tok->ctx };
        struct open_arg o = { .be = a->be, .tok = tok, .key = &key, .what = "in list",
                              .trusted_pub = true, .skip_policy = true,
                              .made_priv = priv[i].obj, .made_pub = CK_INVALID_HANDLE };
        struct id_ref *pub;

        /* no id, one too long, or one shared by two private keys: no URI
         * names it alone; leave it out */
        if (priv[i].len > sizeof(priv[i].id) || (i > 0 && !id_cmp(&priv[i - 1], &priv[i])) ||
            (i + 1 < np && !id_cmp(&priv[i], &priv[i + 1])))
            continue;
        pub = npub ? bsearch(&priv[i], pubs, npub, sizeof(*pubs), id_cmp) : NULL;
        if (pub) {
            /* two public keys with its id: not choosing one (find_public) */
            if ((pub > pubs && !id_cmp(pub - 1, pub)) ||
                (pub + 1 < pubs + npub && !id_cmp(pub, pub + 1)))
                continue;
            o.made_pub = pub->obj;
        }
        o.tmpl[0] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
        o.tmpl[1] = (CK_ATTRIBUTE){ CKA_ID, priv[i].id, priv[i].len };
        o.ntmpl = 2;
        kv_err_mark mark = kv_err_mark_get(tok->ctx);
        rv = open_step(tok, h, &o, rc);
        if (*rc == KV_ERR_UNSUPPORTED || *rc == KV_ERR_BAD_URI || *rc == KV_ERR_CORRUPT) {
            /* not a key we can use: leave it out of the list */
            kv_err_rewind(tok->ctx, mark);
            *rc = KV_OK;
        } else if (rv == CKR_OK && *rc == KV_OK) {
            *rc = kv_list_add(a->lb, key.name, "pkcs11", key.uri, key.type, KV_ASSURANCE_TOKEN, 1);
        }
        if (key.bk) {
            kv_mutex_destroy(&((struct p11_key *)key.bk)->lock);
            free(key.bk);
        }
        EVP_PKEY_free(key.pub);
        free(key.name);
        free(key.uri);
    }
    free(priv);
    free(pubs);
    return rv;
}

static kv_rc p11_list(kv_backend *be, kv_list_builder *lb)
{
    struct list_arg a = { be, lb };

    if (!st(be)->def)
        return KV_OK;
    return run(st(be)->def, list_step, &a);
}

static CK_RV destroy_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    kv_key *key = p;
    struct p11_key *k = key->bk;
    CK_OBJECT_CLASS priv = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = { { CKA_ID, k->id, k->idlen }, { CKA_CLASS, &priv, sizeof(priv) } };
    CK_OBJECT_HANDLE objs[8];
    CK_ULONG count = 0;
    CK_RV rv;

    /* the private key first: from then on there is no key, and what a
     * failure leaves (its public key, certificates, policy object) is
     * removed by p11_purge when the destroy is tried again, or by the next
     * generation of the name */
    rv = find(tok, h, tmpl, 2, objs, 8, &count, rc);
    for (CK_ULONG i = 0; rv == CKR_OK && *rc == KV_OK && i < count; i++) {
        rv = tok->fl->C_DestroyObject(h, objs[i]);
        if (rv != CKR_OK)
            *rc = p11_fail(tok, "C_DestroyObject (the private key)", rv);
    }
    if (rv != CKR_OK || *rc != KV_OK)
        return rv;
    /* then its public key and certificates sharing the CKA_ID */
    rv = find(tok, h, tmpl, 1, objs, 8, &count, rc);
    for (CK_ULONG i = 0; rv == CKR_OK && i < count; i++) {
        rv = tok->fl->C_DestroyObject(h, objs[i]);
        if (rv != CKR_OK)
            *rc = p11_fail(tok, "C_DestroyObject", rv);
    }
    /* its policy object last: the key never stays without it */
    if (rv == CKR_OK && *rc == KV_OK && key->policy)
        rv = policy_destroy(tok, h, key->name, k->id, k->idlen, rc);
    return rv;
}

static kv_rc p11_destroy(kv_backend *be, kv_key *key)
{
    struct p11_key *k = key->bk;

    (void)be;
    return run_rw(k->tok, destroy_step, key);
}

/* What a destroy that failed after the private key went leaves of key
 * `name`: public keys and certificates labelled `name` whose CKA_ID no
 * private key carries, and (no private key labelled `name` at all) its
 * policy objects. Nothing when a private key still carries the label. */
static CK_RV purge_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct purge_arg *a = p;
    static const CK_OBJECT_CLASS classes[] = { CKO_PUBLIC_KEY, CKO_CERTIFICATE };
    CK_OBJECT_HANDLE *objs = NULL;
    CK_ULONG count = 0, n = 0, npol = 0;
    CK_RV rv = count_private(tok, h, CKA_LABEL, a->name, strlen(a->name), &n, rc);

    a->removed = 0;   /* counted again if the step is run again */
    if (rv != CKR_OK || *rc != KV_OK || n > 0)
        return rv;
    for (size_t c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
        CK_OBJECT_CLASS cls = classes[c];
        CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) },
                                { CKA_LABEL, (void *)a->name, strlen(a->name) } };

        rv = find_all(tok, h, tmpl, 2, &objs, &count, rc);
        for (CK_ULONG i = 0; rv == CKR_OK && *rc == KV_OK && i < count; i++) {
            unsigned char *id = NULL;
            CK_ULONG idlen = 0;
            bool gone = false;

            /* CKR_OBJECT_HANDLE_INVALID: not an object to purge but one of
             * another creator racing this one without a shared lock, gone
             * since the search (it lost the name and removed its pair) or
             * not yet readable (session 15's CI: SoftHSM said so once,
             * check_pkcs11's creation_race_without_shared_home) */
            rv = get_attr_of(tok, h, objs[i], CKA_ID, &id, &idlen, &gone, rc);
            if (gone)
                continue;
            if (rv == CKR_OK && *rc == KV_OK)
                rv = count_private(tok, h, CKA_ID, id, idlen, &n, rc);
            free(id);
            if (rv != CKR_OK || *rc != KV_OK || n > 0)
                continue;   /* another key's (ids shared), or the loop ends */
            rv = tok->fl->C_DestroyObject(h, objs[i]);
            if (rv == CKR_OBJECT_HANDLE_INVALID)
                rv = CKR_OK;   /* gone meanwhile (above) */
            else if (rv != CKR_OK)
                *rc = p11_fail(tok, "C_DestroyObject (an object left of a destroyed key)", rv);
            else
                a->removed++;
        }
        free(objs);
        objs = NULL;
        if (rv != CKR_OK || *rc != KV_OK)
            return rv;
    }
    rv = policy_objects(tok, h, a->name, &objs, &npol, rc);
    free(objs);
    if (rv != CKR_OK || *rc != KV_OK)
        return rv;
    rv = policy_destroy(tok, h, a->name, NULL, 0, rc);
    if (rv == CKR_OK && *rc == KV_OK)
        a->removed += npol;
    return rv;
}

static kv_rc p11_purge(kv_backend *be, const char *name, size_t *removed)
{
    struct purge_arg a = { name, 0 };
    kv_rc rc;

    *removed = 0;
    if (!st(be)->def)
        return KV_OK;
    rc = run_rw(st(be)->def, purge_step, &a);
    if (rc == KV_OK)
        *removed = a.removed;
    return rc;
}

static void p11_key_free(kv_key *key)
{
    struct p11_key *k = key->bk;

    kv_mutex_destroy(&k->lock);
    free(k);
    key->bk = NULL;
}

/* ---- sign and ECDH -------------------------------------------------------- */

/* The private key's handle for this connection, searched again after a
 * reconnect (handles do not survive one). */
static CK_RV key_handle(struct p11_token *tok, CK_SESSION_HANDLE h, struct p11_key *k,
                        CK_OBJECT_HANDLE *obj, kv_rc *rc)
{
    unsigned long epoch = __atomic_load_n(&tok->epoch, __ATOMIC_ACQUIRE);
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_ID, k->id, k->idlen } };
    CK_ULONG count = 0;
    CK_RV rv;

    /* (in a forked child the connection is new, with a new epoch: a cache
     * a parent thread was updating at fork() is searched again anyway) */
    (void)kv_mutex_lock(&k->lock);
    bool fresh = k->epoch == epoch;
    *obj = k->priv;
    kv_mutex_unlock(&k->lock);
    if (fresh)
        return CKR_OK;
    rv = find(tok, h, tmpl, 2, obj, 1, &count, rc);
    if (rv != CKR_OK)
        return rv;
    if (count == 0) {
        *rc = kv_error(tok->ctx, KV_ERR_KEY_NOT_FOUND,
                       "the private key is no longer on token '%s' (destroyed?)", tok->label);
        return CKR_OK;
    }
    (void)kv_mutex_lock(&k->lock);
    k->priv = *obj;
    k->epoch = epoch;
    kv_mutex_unlock(&k->lock);
    return CKR_OK;
}

static void forget_handle(struct p11_key *k, CK_RV rv)
{
    if (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID) {
        (void)kv_mutex_lock(&k->lock);
        k->epoch = 0;
        kv_mutex_unlock(&k->lock);
    }
}

struct sign_arg {
    kv_key *key;
    const kv_alg_desc *alg;
    const unsigned char *tbs;
    size_t tbslen;
    unsigned char *sig;
    size_t *siglen;
};

static CK_MECHANISM_TYPE md_mech(const kv_alg_desc *alg)
{
    return alg->mdlen == 64 ? CKM_SHA512 : alg->mdlen == 48 ? CKM_SHA384 : CKM_SHA256;
}

static CK_RSA_PKCS_MGF_TYPE md_mgf(const kv_alg_desc *alg)
{
    return alg->mdlen == 64 ? CKG_MGF1_SHA512 : alg->mdlen == 48 ? CKG_MGF1_SHA384 : CKG_MGF1_SHA256;
}

/* DigestInfo for RSA PKCS#1 v1.5, DER-encoded by OpenSSL. */
static int digest_info(const kv_alg_desc *alg, const unsigned char *md, size_t mdlen,
                       unsigned char **out)
{
    X509_SIG *di = X509_SIG_new();
    X509_ALGOR *algor;
    ASN1_OCTET_STRING *digest;
    int n = -1;

    if (!di)
        return -1;
    X509_SIG_getm(di, &algor, &digest);
    if (X509_ALGOR_set0(algor, OBJ_nid2obj(OBJ_sn2nid(alg->md)), V_ASN1_NULL, NULL) == 1 &&
        ASN1_OCTET_STRING_set(digest, md, (int)mdlen) == 1)
        n = i2d_X509_SIG(di, out);
    X509_SIG_free(di);
    return n;
}

static CK_RV sign_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct sign_arg *a = p;
    struct p11_key *k = a->key->bk;
    const kv_type_desc *t = kv_type_desc_get(a->key->type);
    CK_RSA_PKCS_PSS_PARAMS pss = { md_mech(a->alg), md_mgf(a->alg), a->alg->mdlen };
    CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
    unsigned char raw[1024], *di = NULL, *der = NULL;
    const unsigned char *data = a->tbs;
    CK_ULONG datalen = a->tbslen, rawlen = sizeof(raw);
    CK_OBJECT_HANDLE obj;
    size_t derlen = 0;
    CK_RV rv;

    switch (a->alg->family) {
    case KV_FAMILY_RSA:
        if (a->alg->padding == KV_PAD_PSS) {
            mech = (CK_MECHANISM){ CKM_RSA_PKCS_PSS, &pss, sizeof(pss) };
        } else {
            int n = digest_info(a->alg, a->tbs, a->tbslen, &di);
            if (n <= 0) {
                *rc = kv_error_ossl(tok->ctx, KV_ERR_CRYPTO, "cannot encode a DigestInfo");
                return CKR_OK;
            }
            mech.mechanism = CKM_RSA_PKCS;
            data = di;
            datalen = (CK_ULONG)n;
        }
        break;
    case KV_FAMILY_ED25519:
        mech.mechanism = CKM_EDDSA;
        break;
    default:
        break;
    }
    rv = p11_mech_check(tok, h, mech.mechanism, CKF_SIGN, rc);
    if (rv != CKR_OK || *rc != KV_OK)
        goto out;
    rv = key_handle(tok, h, k, &obj, rc);
    if (rv != CKR_OK || *rc != KV_OK)
        goto out;
    rv = tok->fl->C_SignInit(h, &mech, obj);
    if (rv != CKR_OK) {
        forget_handle(k, rv);
        *rc = p11_fail(tok, "C_SignInit", rv);
        goto out;
    }
    rv = tok->fl->C_Sign(h, (CK_BYTE_PTR)data, datalen, raw, &rawlen);
    if (rv != CKR_OK) {
        forget_handle(k, rv);
        *rc = p11_fail(tok, "C_Sign", rv);
        /* a failed C_Sign ends the operation, but a module that leaves it
         * open would refuse the next C_SignInit on this session */
        if (!p11_rv_lost(rv) && rv != CKR_OBJECT_HANDLE_INVALID && rv != CKR_KEY_HANDLE_INVALID)
            rv = P11_RV_SPOILED;
        goto out;
    }
    if (a->alg->family == KV_FAMILY_EC) {
        if (rawlen != 2 * t->field_len) {
            *rc = kv_error(tok->ctx, KV_ERR_BACKEND,
                           "C_Sign on token '%s' returned a %lu-byte ECDSA signature, not %zu",
                           tok->label, (unsigned long)rawlen, 2 * t->field_len);
            goto out;
        }
        *rc = kv_ecdsa_raw_to_der(tok->ctx, raw, rawlen, &der, &derlen);
        if (*rc == KV_OK) {
            memcpy(a->sig, der, derlen);
            *a->siglen = derlen;
        }
    } else {
        memcpy(a->sig, raw, rawlen);
        *a->siglen = rawlen;
    }
out:
    OPENSSL_free(di);
    OPENSSL_free(der);
    return rv;
}

/* Read one attribute into a caller's buffer, quietly: false when the token
 * does not have it (a PKCS#11 3.0 attribute on an older module is no error). */
static bool attr_quiet(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                       CK_ATTRIBUTE_TYPE type, void *buf, CK_ULONG *len)
{
    CK_ATTRIBUTE a = { type, buf, *len };
    CK_RV rv = tok->fl->C_GetAttributeValue(h, obj, &a, 1);

    if (rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION || a.ulValueLen > *len)
        return false;
    *len = a.ulValueLen;
    return true;
}

static kv_rc p11_sign(kv_key *key, const kv_alg_desc *alg, const unsigned char *tbs,
                      size_t tbslen, unsigned char *sig, size_t *siglen)
{
    struct sign_arg a = { key, alg, tbs, tbslen, sig, siglen };
    struct p11_key *k = key->bk;

    return run(k->tok, sign_step, &a);
}

struct ecdh_arg {
    kv_key *key;
    unsigned char point[133];
    size_t pointlen;
    unsigned char *secret;
    size_t *len;
};

static CK_RV derive(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                    const unsigned char *pub, size_t publen, CK_ULONG field,
                    CK_OBJECT_HANDLE *out)
{
    CK_ECDH1_DERIVE_PARAMS params = { CKD_NULL, 0, NULL, publen, (CK_BYTE_PTR)pub };
    CK_MECHANISM mech = { CKM_ECDH1_DERIVE, &params, sizeof(params) };
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },      { CKA_KEY_TYPE, &kt, sizeof(kt) },
        { CKA_TOKEN, &no, sizeof(no) },        { CKA_SENSITIVE, &no, sizeof(no) },
        { CKA_EXTRACTABLE, &yes, sizeof(yes) }, { CKA_VALUE_LEN, &field, sizeof(field) },
    };

    return tok->fl->C_DeriveKey(h, &mech, obj, tmpl, 6, out);
}

static CK_RV ecdh_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct ecdh_arg *a = p;
    struct p11_key *k = a->key->bk;
    CK_ULONG field = kv_type_desc_get(a->key->type)->field_len;
    CK_OBJECT_HANDLE obj, secret = CK_INVALID_HANDLE;
    unsigned char *wrapped = NULL;
    int wlen = 0;
    CK_RV rv, drv;

    rv = p11_mech_check(tok, h, CKM_ECDH1_DERIVE, CKF_DERIVE, rc);
    if (rv != CKR_OK || *rc != KV_OK)
        return rv;
    rv = key_handle(tok, h, k, &obj, rc);
    if (rv != CKR_OK || *rc != KV_OK)
        return rv;
    /* modules differ: PKCS#11 asks for the raw point, some want it DER-wrapped */
    int form = __atomic_load_n(&tok->ecdh_point_form, __ATOMIC_RELAXED);
    if (form != 2) {
        rv = derive(tok, h, obj, a->point, a->pointlen, field, &secret);
        if (rv == CKR_OK && form == 0)
            __atomic_store_n(&tok->ecdh_point_form, 1, __ATOMIC_RELAXED);
    }
    if (form == 2 || (form == 0 && (rv == CKR_ARGUMENTS_BAD || rv == CKR_MECHANISM_PARAM_INVALID ||
                                    rv == CKR_DOMAIN_PARAMS_INVALID))) {
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        if (os && ASN1_OCTET_STRING_set(os, a->point, (int)a->pointlen) == 1)
            wlen = i2d_ASN1_OCTET_STRING(os, &wrapped);
        ASN1_OCTET_STRING_free(os);
        if (wlen <= 0) {
            *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
            return CKR_OK;
        }
        rv = derive(tok, h, obj, wrapped, (size_t)wlen, field, &secret);
        if (rv == CKR_OK)
            __atomic_store_n(&tok->ecdh_point_form, 2, __ATOMIC_RELAXED);
        OPENSSL_free(wrapped);
    }
    if (rv != CKR_OK) {
        forget_handle(k, rv);
        *rc = p11_fail(tok, "C_DeriveKey(CKM_ECDH1_DERIVE)", rv);
        return rv;
    }
    CK_ATTRIBUTE val = { CKA_VALUE, a->secret, *a->len };
    rv = tok->fl->C_GetAttributeValue(h, secret, &val, 1);
    drv = tok->fl->C_DestroyObject(h, secret);
    if (rv != CKR_OK) {
        *rc = p11_fail(tok, "C_GetAttributeValue(CKA_VALUE of the ECDH secret)", rv);
        return rv;
    }
    if (val.ulValueLen > *a->len) {
        *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                       "token '%s': C_GetAttributeValue gives an ECDH secret of %lu bytes in a "
                       "buffer of %zu", tok->label, (unsigned long)val.ulValueLen, *a->len);
        return drv == CKR_OK || p11_rv_lost(drv) ? CKR_OK : P11_RV_SPOILED;
    }
    *a->len = val.ulValueLen;
    /* a secret left in a session object: closing the session removes it */
    return drv == CKR_OK || p11_rv_lost(drv) ? CKR_OK : P11_RV_SPOILED;
}

static kv_rc p11_ecdh(kv_key *key, EVP_PKEY *peer, unsigned char *secret, size_t *len)
{
    struct p11_key *k = key->bk;
    struct ecdh_arg a = { .key = key, .secret = secret, .len = len };
    const kv_type_desc *t = kv_type_desc_get(key->type);
    EC_GROUP *group = NULL;
    EC_POINT *pt = NULL;
    unsigned char enc[133];
    size_t enclen = 0;
    kv_rc rc = KV_OK;

    if (EVP_PKEY_get_octet_string_param(peer, OSSL_PKEY_PARAM_PUB_KEY, enc, sizeof(enc),
                                        &enclen) != 1)
        KV_FAIL(key->ctx, rc, KV_ERR_CRYPTO, "cannot read the peer point");
    if (enc[0] == 0x04 && enclen == 1 + 2 * t->field_len) {
        memcpy(a.point, enc, enclen);
        a.pointlen = enclen;
    } else {
        /* the token wants the uncompressed point, whatever form the peer sent */
        group = EC_GROUP_new_by_curve_name_ex(key->ctx->libctx, NULL, EC_curve_nist2nid(t->group));
        pt = group ? EC_POINT_new(group) : NULL;
        if (!pt || EC_POINT_oct2point(group, pt, enc, enclen, NULL) != 1 ||
            (a.pointlen = EC_POINT_point2oct(group, pt, POINT_CONVERSION_UNCOMPRESSED, a.point,
                                             sizeof(a.point), NULL)) == 0)
            KV_FAIL_OSSL(key->ctx, rc, KV_ERR_CRYPTO, "cannot encode the peer point");
    }
    rc = run(k->tok, ecdh_step, &a);
out:
    EC_POINT_free(pt);
    EC_GROUP_free(group);
    return rc;
}

/* An ECDH-only key's public key check (see pub_check): *match says whether
 * the token's ECDH of k with a fresh ephemeral key equals the software ECDH
 * of the ephemeral private key with pub. Both secrets are wiped. */
static CK_RV pub_check_ecdh(struct p11_token *tok, CK_SESSION_HANDLE h, kv_key *probe,
                            EVP_PKEY *pub, const char *label, int *match, kv_rc *rc)
{
    kv_ctx *ctx = tok->ctx;
    const kv_type_desc *t = kv_type_desc_get(probe->type);
    unsigned char mine[80], theirs[80];
    size_t minelen = sizeof(mine), theirslen = sizeof(theirs);
    struct ecdh_arg a = { .key = probe, .secret = mine, .len = &minelen };
    EVP_PKEY *eph = EVP_PKEY_Q_keygen(ctx->libctx, NULL, "EC", t->group);
    CK_RV rv = CKR_OK;
    kv_rc vrc;

    if (!eph || EVP_PKEY_get_octet_string_param(eph, OSSL_PKEY_PARAM_PUB_KEY, a.point,
                                                sizeof(a.point), &a.pointlen) != 1) {
        *rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot make an ephemeral %s key", t->group);
        goto out;
    }
    rv = ecdh_step(tok, h, &a, rc);
    if (rv != CKR_OK || *rc != KV_OK)
        goto out;
    /* reported on no context: a failure is this key's damage, said below */
    vrc = kv_soft_derive_pkey(NULL, ctx->libctx, eph, pub, theirs, &theirslen);
    if (vrc != KV_OK) {
        *rc = kv_error(ctx, vrc, "cannot check the public key of '%s' on token '%s': %s",
                       label ? label : "(unlabelled)", tok->label, kv_errmsg(NULL));
        goto out;
    }
    *match = minelen == theirslen && CRYPTO_memcmp(mine, theirs, minelen) == 0;
out:
    OPENSSL_cleanse(mine, sizeof(mine));
    OPENSSL_cleanse(theirs, sizeof(theirs));
    EVP_PKEY_free(eph);
    return rv;
}

/*
 * Whether pub (read from the public key object or certificate sharing the
 * private key's CKA_ID) belongs to the private key k. Compared with the
 * private object's own public attributes where the token offers them
 * (CKA_MODULUS of an RSA private key is standard; CKA_EC_POINT on an EC
 * private key is PKCS#11 3.0 and many modules lack it), else proven by a
 * signature of random bytes made with k and verified with pub; an EC key
 * that may not sign (CKA_SIGN false: an ECDH-only key) by an ECDH with a
 * fresh ephemeral key, done by the token with k and in software with pub.
 * An EC private key on another curve than pub (CKA_EC_PARAMS) is no match.
 */
static CK_RV pub_check(struct p11_token *tok, CK_SESSION_HANDLE h, struct p11_key *k,
                       kv_key_type type, EVP_PKEY *pub, const char *label, kv_rc *rc)
{
    kv_ctx *ctx = tok->ctx;
    const kv_type_desc *t = kv_type_desc_get(type);
    const kv_alg_desc *alg = kv_alg_desc_get(t->default_alg);
    unsigned char buf[1024], want[200], tbs[64], sig[1024];
    CK_ULONG len = sizeof(buf);
    size_t wantlen = 0, siglen = sizeof(sig), tbslen = alg->mdlen ? alg->mdlen : 32;
    CK_BBOOL can_sign = CK_TRUE;
    int match = -1; /* not known yet */
    CK_RV rv;
    kv_rc vrc;

    if (t->family == KV_FAMILY_RSA) {
        BIGNUM *n = NULL, *mine = NULL;
        if (attr_quiet(tok, h, k->priv, CKA_MODULUS, buf, &len) &&
            EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &n) == 1 &&
            (mine = BN_bin2bn(buf, (int)len, NULL)) != NULL)
            match = BN_cmp(mine, n) == 0;
        BN_free(mine);
        BN_free(n);
    } else {
        int nid = NID_undef;
        if (t->family == KV_FAMILY_EC && attr_quiet(tok, h, k->priv, CKA_EC_PARAMS, buf, &len))
            nid = ec_params_nid(buf, len);
        len = sizeof(buf);
        if (nid != NID_undef && nid != EC_curve_nist2nid(t->group)) {
            match = 0; /* a private key on another curve */
        } else if (attr_quiet(tok, h, k->priv, CKA_EC_POINT, buf, &len)) {
            size_t ptlen = 0;
            unsigned char *pt = unwrap_point(buf, len, &ptlen);
            if (pt && EVP_PKEY_get_octet_string_param(pub, OSSL_PKEY_PARAM_PUB_KEY, want,
                                                      sizeof(want), &wantlen) == 1)
                match = ptlen == wantlen && memcmp(pt, want, ptlen) == 0;
            OPENSSL_free(pt);
        }
    }
    kv_ossl_drop();
    if (match < 0) {
        kv_key probe = { .ctx = ctx, .type = type, .bk = k };
        struct sign_arg sa = { &probe, alg, tbs, tbslen, sig, &siglen };

        len = sizeof(can_sign);
        if (attr_quiet(tok, h, k->priv, CKA_SIGN, &can_sign, &len) &&
            len == sizeof(can_sign) && !can_sign) {
            if (t->family != KV_FAMILY_EC)
                return CKR_OK; /* RSA was compared by modulus; an Ed25519 key only signs */
            rv = pub_check_ecdh(tok, h, &probe, pub, label, &match, rc);
            if (rv != CKR_OK || *rc != KV_OK)
                return rv;
        } else {
            if (RAND_bytes(tbs, (int)tbslen) != 1) {
                *rc = kv_error(ctx, KV_ERR_CRYPTO, "random generator failed");
                return CKR_OK;
            }
            rv = sign_step(tok, h, &sa, rc);
            if (rv != CKR_OK || *rc != KV_OK)
                return rv;
            /* reported on no context: a mismatch is this key's damage, said below */
            vrc = kv_verify_pkey(NULL, ctx->libctx, pub, alg, tbs, tbslen, sig, siglen);
            if (vrc != KV_OK && vrc != KV_ERR_BAD_SIGNATURE) {
                *rc = kv_error(ctx, vrc, "cannot check the public key of '%s' on token '%s': %s",
                               label ? label : "(unlabelled)", tok->label, kv_errmsg(NULL));
                return CKR_OK;
            }
            match = vrc == KV_OK;
        }
    }
    if (!match)
        *rc = kv_error(ctx, KV_ERR_CORRUPT,
                       "private key '%s' on token '%s': the public key stored with it (same "
                       "CKA_ID) belongs to another key", label ? label : "(unlabelled)",
                       tok->label);
    return CKR_OK;
}

/* ---- certificates ------------------------------------------------------- */

/*
 * A key's chain on a token: the leaf is a certificate object with the key's
 * CKA_ID and label; each issuer is a certificate object of its own, with
 * CKA_CERTIFICATE_CATEGORY 2 (authority) where the token takes it, CKA_ID
 * the SHA-1 of its subjectPublicKey (RFC 5280's key identifier method 1)
 * and a label NAME-caN. An issuer already on the token (the same
 * CKA_VALUE) is used as it is, so keys issued by one CA share its object.
 * Reading follows the leaf's issuer name to a certificate object with that
 * CKA_SUBJECT whose key verifies the signature. No issuer ever carries the
 * key's CKA_ID: that would make it one of the key's certificates
 * (find_public).
 */

struct chain_arg {
    kv_key *key;
    STACK_OF(X509) *chain;     /* store: the checked chain; read: the result */
};

/* What a new certificate object is. */
struct cert_obj {
    const unsigned char *id;
    CK_ULONG idlen;
    const char *label;
    bool authority;            /* CKA_CERTIFICATE_CATEGORY 2 */
};

/* Create a certificate object from DER; *made gets its handle. Records
 * nothing: *unreadable says the DER could not be parsed. A token that
 * refuses CKA_CERTIFICATE_CATEGORY gets the object without it. */
static CK_RV cert_create(struct p11_token *tok, CK_SESSION_HANDLE h, const struct cert_obj *o,
                         const unsigned char *der, size_t len, CK_OBJECT_HANDLE *made,
                         bool *unreadable)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_ULONG category = 2;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    unsigned char *subj = NULL, *iss = NULL, *serial = NULL;
    int ls = x ? i2d_X509_NAME(X509_get_subject_name(x), &subj) : -1;
    int li = x ? i2d_X509_NAME(X509_get_issuer_name(x), &iss) : -1;
    int lsn = x ? i2d_ASN1_INTEGER(X509_get_serialNumber(x), &serial) : -1;
    CK_ULONG n;
    CK_RV rv = CKR_OK;

    *unreadable = ls <= 0 || li <= 0 || lsn <= 0;
    if (*unreadable) {
        kv_ossl_drop();
        goto out;
    }
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_CERTIFICATE_TYPE, &ct, sizeof(ct) },
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &no, sizeof(no) },
        { CKA_ID, (void *)o->id, o->idlen },
        { CKA_LABEL, (void *)o->label, strlen(o->label) },
        { CKA_SUBJECT, subj, (CK_ULONG)ls },
        { CKA_ISSUER, iss, (CK_ULONG)li },
        { CKA_SERIAL_NUMBER, serial, (CK_ULONG)lsn },
        { CKA_VALUE, (void *)der, len },
        { CKA_CERTIFICATE_CATEGORY, &category, sizeof(category) },
    };
    n = sizeof(tmpl) / sizeof(tmpl[0]);
    rv = tok->fl->C_CreateObject(h, tmpl, o->authority ? n : n - 1, made);
    if (o->authority && (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_VALUE_INVALID ||
                         rv == CKR_TEMPLATE_INCONSISTENT))
        rv = tok->fl->C_CreateObject(h, tmpl, n - 1, made);
out:
    OPENSSL_free(subj);
    OPENSSL_free(iss);
    OPENSSL_free(serial);
    X509_free(x);
    return rv;
}

/*
 * Store the leaf with a key, replacing the certificates with its CKA_ID.
 * The new object is made first, then the old ones go: never a moment
 * without one. A token that refuses a second object for the same name (NSS
 * softokn: same issuer and serial, or a label another subject uses) gets
 * the old ones deleted first; if the new one still cannot be made, the
 * first old one is put back. The same certificate again changes nothing.
 */
static CK_RV leaf_store(struct p11_token *tok, CK_SESSION_HANDLE h, kv_key *key,
                        const unsigned char *der, size_t dlen, kv_rc *rc)
{
    struct p11_key *k = key->bk;
    struct cert_obj o = { k->id, k->idlen, key->name, false };
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE find_tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_ID, k->id, k->idlen } };
    CK_OBJECT_HANDLE old[8], created = CK_INVALID_HANDLE, same = CK_INVALID_HANDLE;
    CK_ULONG nold = 0;
    unsigned char *first = NULL;
    CK_ULONG firstlen = 0;
    CK_RV rv;

    rv = find(tok, h, find_tmpl, 2, old, 8, &nold, rc);
    if (rv != CKR_OK)
        return rv;
    for (CK_ULONG i = 0; i < nold; i++) {
        unsigned char *val = NULL;
        CK_ULONG len = 0;
        rv = get_attr(tok, h, old[i], CKA_VALUE, &val, &len, rc);
        if (rv != CKR_OK || *rc != KV_OK)
            goto out;
        if (same == CK_INVALID_HANDLE && len == dlen && !memcmp(val, der, len))
            same = old[i];
        if (i == 0) {
            first = val;
            firstlen = len;
        } else {
            free(val);
        }
    }
    if (same == CK_INVALID_HANDLE) {
        bool unreadable = false, kept = false;
        rv = cert_create(tok, h, &o, der, dlen, &created, &unreadable);
        if (rv != CKR_OK && !unreadable && nold > 0) {
            /* the token refuses it beside the old ones: delete, then create */
            for (CK_ULONG i = 0; i < nold; i++)
                (void)tok->fl->C_DestroyObject(h, old[i]);
            nold = 0;
            rv = cert_create(tok, h, &o, der, dlen, &created, &unreadable);
            if (rv != CKR_OK) {
                CK_OBJECT_HANDLE back;
                bool bad = false;
                kept = cert_create(tok, h, &o, first, firstlen, &back, &bad) == CKR_OK;
            }
        }
        if (unreadable) {
            *rc = kv_error(tok->ctx, KV_ERR_BAD_INPUT, "cannot read the certificate's names");
            goto out;
        }
        if (rv != CKR_OK) {
            *rc = p11_fail(tok, kept ? "C_CreateObject(certificate; the earlier one was put back)"
                                     : "C_CreateObject(certificate)", rv);
            goto out;
        }
    }
    /* the old ones, except the one kept and the one just made */
    for (CK_ULONG i = 0; i < nold; i++)
        if (old[i] != same && old[i] != created)
            (void)tok->fl->C_DestroyObject(h, old[i]);
out:
    free(first);
    return rv;
}

/* The key identifier of x: SHA-1 of its subjectPublicKey bits. */
static bool cert_ski(const X509 *x, unsigned char ski[SHA_DIGEST_LENGTH])
{
    const ASN1_BIT_STRING *bits = X509_get0_pubkey_bitstr(x);

    return bits && EVP_Q_digest(NULL, "SHA1", NULL, ASN1_STRING_get0_data(bits),
                                (size_t)ASN1_STRING_length(bits), ski, NULL) == 1;
}

/*
 * Put issuer certificate pos (1-based, 2 and up) on the token unless an
 * object with the same value is there; *made is set when this call made
 * it (so that a failure later can take it away again).
 */
static CK_RV issuer_store(struct p11_token *tok, CK_SESSION_HANDLE h, kv_key *key, int pos,
                          const unsigned char *der, size_t len, CK_OBJECT_HANDLE *made,
                          kv_rc *rc)
{
    struct p11_key *k = key->bk;
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_VALUE, (void *)der, len } };
    unsigned char ski[SHA_DIGEST_LENGTH];
    char label[KV_NAME_MAX + 32];
    struct cert_obj o = { ski, sizeof(ski), label, true };
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    CK_OBJECT_HANDLE obj;
    CK_ULONG count = 0;
    bool unreadable = false;
    CK_RV rv = CKR_OK;

    *made = CK_INVALID_HANDLE;
    if (!x || !cert_ski(x, ski)) {
        *rc = kv_error_ossl(tok->ctx, KV_ERR_CRYPTO,
                            "cannot compute the key identifier of certificate %d", pos);
        goto out;
    }
    if (k->idlen == sizeof(ski) && !memcmp(k->id, ski, sizeof(ski))) {
        *rc = kv_error(tok->ctx, KV_ERR_BAD_INPUT,
                       "certificate %d of the chain would carry the CKA_ID of key '%s' on "
                       "token '%s' (the key's CKA_ID is that certificate's key identifier)",
                       pos, key->name, tok->label);
        goto out;
    }
    rv = find(tok, h, tmpl, 2, &obj, 1, &count, rc);
    if (rv != CKR_OK || *rc != KV_OK || count > 0)
        goto out;
    snprintf(label, sizeof(label), "%s-ca%d", key->name, pos - 1);
    rv = cert_create(tok, h, &o, der, len, made, &unreadable);
    if (rv != CKR_OK && !unreadable) {
        /* a token that keeps each label to one subject (NSS softokn) and
         * holds this one for the issuer of an earlier chain: a label of
         * this subject's own */
        snprintf(label, sizeof(label), "%s-ca%d-%08lx", key->name, pos - 1,
                 X509_NAME_hash_ex(X509_get_subject_name(x), NULL, NULL, NULL));
        rv = cert_create(tok, h, &o, der, len, made, &unreadable);
    }
    if (unreadable)
        *rc = kv_error(tok->ctx, KV_ERR_BAD_INPUT, "cannot read the names of certificate %d",
                       pos);
    else if (rv != CKR_OK)
        *rc = p11_fail(tok, "C_CreateObject(issuer certificate)", rv);
    if (rv != CKR_OK || *rc != KV_OK)
        *made = CK_INVALID_HANDLE;
out:
    X509_free(x);
    return rv;
}

/* The issuers first, so that a leaf is never there without them; the leaf
 * last. Issuers this call made go again when a later step fails. */
static CK_RV chain_store_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct chain_arg *a = p;
    int n = sk_X509_num(a->chain), nmade = 0, len;
    CK_OBJECT_HANDLE made[KV_CHAIN_MAX];
    unsigned char *der = NULL;
    CK_RV rv = CKR_OK;

    for (int i = 1; i < n && rv == CKR_OK && *rc == KV_OK; i++) {
        len = i2d_X509(sk_X509_value(a->chain, i), &der);
        if (len <= 0) {
            *rc = kv_error_ossl(tok->ctx, KV_ERR_CRYPTO, "cannot encode certificate %d", i + 1);
            break;
        }
        rv = issuer_store(tok, h, a->key, i + 1, der, (size_t)len, &made[nmade], rc);
        if (made[nmade] != CK_INVALID_HANDLE)
            nmade++;
        OPENSSL_free(der);
        der = NULL;
    }
    if (rv == CKR_OK && *rc == KV_OK) {
        len = i2d_X509(sk_X509_value(a->chain, 0), &der);
        if (len <= 0)
            *rc = kv_error_ossl(tok->ctx, KV_ERR_CRYPTO, "cannot encode certificate 1");
        else
            rv = leaf_store(tok, h, a->key, der, (size_t)len, rc);
        OPENSSL_free(der);
    }
    if (*rc != KV_OK)
        for (int i = 0; i < nmade; i++)
            (void)tok->fl->C_DestroyObject(h, made[i]);
    return rv;
}

static kv_rc p11_chain_store(kv_key *key, STACK_OF(X509) *chain)
{
    struct chain_arg a = { key, chain };

    return run_rw(((struct p11_key *)key->bk)->tok, chain_store_step, &a);
}

/* A certificate object's value as an X509, or NULL (recorded in *rc). */
/* The certificate in a certificate object; *out NULL, with nothing
 * recorded, when it holds none (a candidate passed over). */
static CK_RV cert_object(struct p11_token *tok, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj,
                         X509 **out, kv_rc *rc)
{
    unsigned char *val = NULL;
    CK_ULONG len = 0;
    CK_RV rv = get_attr(tok, h, obj, CKA_VALUE, &val, &len, rc);
    const unsigned char *p = val;

    *out = NULL;
    if (rv == CKR_OK && *rc == KV_OK) {
        *out = d2i_X509(NULL, &p, (long)len);
        if (*out && p != val + len) {
            X509_free(*out);
            *out = NULL;
        }
        kv_ossl_drop();
    }
    free(val);
    return rv;
}

/* The issuer of x among the token's certificates: CKA_SUBJECT is x's issuer
 * name and the key verifies x's signature; the key's own certificates
 * (CKA_ID = id) are passed over. *out NULL when the token has none. */
static CK_RV issuer_find(struct p11_token *tok, CK_SESSION_HANDLE h, const struct p11_key *k,
                         X509 *x, X509 **out, kv_rc *rc)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    unsigned char *name = NULL;
    int nlen = i2d_X509_NAME(X509_get_issuer_name(x), &name);
    CK_OBJECT_HANDLE *objs = NULL;
    CK_ULONG count = 0;
    CK_RV rv = CKR_OK;

    *out = NULL;
    if (nlen <= 0) {
        *rc = kv_error_ossl(tok->ctx, KV_ERR_CORRUPT, "cannot encode a certificate's issuer");
        return CKR_OK;
    }
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_SUBJECT, name, (CK_ULONG)nlen },
    };
    rv = find_all(tok, h, tmpl, 2, &objs, &count, rc);
    for (CK_ULONG i = 0; rv == CKR_OK && *rc == KV_OK && i < count && !*out; i++) {
        unsigned char id[sizeof(k->id)];
        CK_ULONG idlen = sizeof(id);
        X509 *cand = NULL;

        /* an ID too long for the buffer is not the key's */
        if (attr_quiet(tok, h, objs[i], CKA_ID, id, &idlen) && idlen == k->idlen &&
            !memcmp(id, k->id, idlen))
            continue;
        /* an object holding no certificate is not the issuer: it must not
         * break the chains of every key under that CA */
        rv = cert_object(tok, h, objs[i], &cand, rc);
        if (cand && X509_get0_pubkey(cand) && X509_verify(x, X509_get0_pubkey(cand)) == 1)
            *out = cand;
        else
            X509_free(cand);
        kv_ossl_drop();
    }
    free(objs);
    OPENSSL_free(name);
    return rv;
}

/* The leaf among the certificate objects with the key's CKA_ID: one that
 * holds the key's public key, the latest not-after first (another tool may
 * have left an old one, or one of another key, under the same ID). With
 * none that does, the first readable one, which the core then refuses. */
static CK_RV leaf_find(struct p11_token *tok, CK_SESSION_HANDLE h, const kv_key *key,
                       X509 **out, kv_rc *rc)
{
    struct p11_key *k = key->bk;
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_ID, k->id, k->idlen } };
    CK_OBJECT_HANDLE *objs = NULL;
    CK_ULONG count = 0;
    X509 *best = NULL, *first = NULL;
    CK_RV rv = find_all(tok, h, tmpl, 2, &objs, &count, rc);

    *out = NULL;
    for (CK_ULONG i = 0; rv == CKR_OK && *rc == KV_OK && i < count; i++) {
        X509 *x = NULL;
        rv = cert_object(tok, h, objs[i], &x, rc);
        if (!x)
            continue;
        if (EVP_PKEY_eq(X509_get0_pubkey(x), key->pub) == 1 &&
            (!best || ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(best)) > 0)) {
            X509_free(best);
            best = x;
        } else if (!first) {
            first = x;
        } else {
            X509_free(x);
        }
        kv_ossl_drop();
    }
    if (rv == CKR_OK && *rc == KV_OK) {
        if (count == 0)
            *rc = kv_error(tok->ctx, KV_ERR_KEY_NOT_FOUND,
                           "no certificate with the CKA_ID of '%s' on token '%s'", key->name,
                           tok->label);
        else if (!best && !first)
            *rc = kv_error(tok->ctx, KV_ERR_CORRUPT,
                           "token '%s': no certificate object with the CKA_ID of '%s' holds an "
                           "X.509 certificate", tok->label, key->name);
    }
    *out = best ? best : first;
    if (best)
        X509_free(first);
    if (*rc != KV_OK) {
        X509_free(*out);
        *out = NULL;
    }
    free(objs);
    return rv;
}

static CK_RV chain_read_step(struct p11_token *tok, CK_SESSION_HANDLE h, void *p, kv_rc *rc)
{
    struct chain_arg *a = p;
    struct p11_key *k = a->key->bk;
    X509 *x = NULL, *up = NULL;
    CK_RV rv;

    a->chain = sk_X509_new_null();
    if (!a->chain) {
        *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
        return CKR_OK;
    }
    rv = leaf_find(tok, h, a->key, &x, rc);
    while (x) {
        /* cross-certified CAs can lead back to a certificate already taken */
        for (int i = 0; x && i < sk_X509_num(a->chain); i++)
            if (X509_cmp(x, sk_X509_value(a->chain, i)) == 0) {
                X509_free(x);
                x = NULL;
            }
        if (!x)
            break;
        if (!sk_X509_push(a->chain, x)) {
            X509_free(x);
            *rc = kv_error(tok->ctx, KV_ERR_NO_MEMORY, "out of memory");
            break;
        }
        /* up to a self-issued certificate, a missing issuer, a loop, or the cap */
        if (sk_X509_num(a->chain) == KV_CHAIN_MAX ||
            X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0)
            break;
        rv = issuer_find(tok, h, k, x, &up, rc);
        if (rv != CKR_OK || *rc != KV_OK)
            break;
        x = up;
        up = NULL;
    }
    if (rv != CKR_OK || *rc != KV_OK) {
        sk_X509_pop_free(a->chain, X509_free);
        a->chain = NULL;
    }
    return rv;
}

static kv_rc p11_chain_read(kv_key *key, STACK_OF(X509) **chain)
{
    struct chain_arg a = { key, NULL };
    kv_rc rc = run(((struct p11_key *)key->bk)->tok, chain_read_step, &a);

    *chain = a.chain;
    return rc;
}

/* The keys of [pkcs11] (keyvault.conf(5)). */
static const struct kv_config_key p11_config_keys[] = {
    { "module", 0 },
    { "token", 0 },
    { "serial", 0 },
    { "pin", KV_CFG_SECRET },
    { "max_sessions", 0 },
    { "init_args", 0 },
    { "allowed_modules", 0 },
    { "allow_any_module", 0 },
    { NULL, 0 },
};

const struct kv_backend_ops kv_pkcs11_ops = {
    .name = "pkcs11",
    .uri_scheme = "pkcs11",
    .assurance = KV_ASSURANCE_TOKEN,
    .config_keys = p11_config_keys,
    .init = p11_init,
    .fini = p11_fini,
    .generate = p11_generate,
    .generate_uri = p11_generate_uri,
    .open_name = p11_open_name,
    .open_uri = p11_open_uri,
    .exists = p11_exists,
    .list = p11_list,
    .destroy = p11_destroy,
    .purge = p11_purge,
    .key_free = p11_key_free,
    .sign = p11_sign,
    .ecdh = p11_ecdh,
    .chain_store = p11_chain_store,
    .chain_read = p11_chain_read,
};
