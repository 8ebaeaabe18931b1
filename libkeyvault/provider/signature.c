/*
 * signature.c - signatures of the keyvault provider: ECDSA, RSA (PKCS#1
 * v1.5 and PSS) and Ed25519. Signing hashes in software (the provider's own
 * library context, default provider) and sends the digest to kv_sign, one
 * backend call per signature; verification never reaches a backend: it runs
 * in software on the key's public half.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include "prov.h"

typedef enum { FAM_ECDSA, FAM_RSA, FAM_ED25519 } sig_family;

typedef struct sigctx {
    kvp_provctx *pc;
    sig_family fam;
    kvp_key *k;
    int signing;           /* 1: sign or digest-sign; 0: a verify context */
    int digest_op;         /* 1: digest-sign or digest-verify */
    /* signing state */
    EVP_MD *md;            /* the digest, in pc->publibctx; NULL: not set */
    EVP_MD_CTX *hash;      /* digest-sign of ECDSA and RSA: the running hash */
    int pad;               /* RSA: RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
    EVP_MD *mgf1;          /* RSA-PSS: MGF1 digest; NULL: the message digest */
    /* verifying: a software context on the public half */
    EVP_MD_CTX *vmd;       /* digest-verify (its EVP_PKEY_CTX is vpk) */
    EVP_PKEY_CTX *vpk;     /* verify, or vmd's */
} sigctx;

static sigctx *newctx(void *provctx, sig_family fam)
{
    sigctx *c = calloc(1, sizeof(*c));

    if (!c) {
        kvp_raise(provctx, KVP_R_INTERNAL, "out of memory");
        return NULL;
    }
    c->pc = provctx;
    c->fam = fam;
    c->pad = RSA_PKCS1_PADDING;
    return c;
}

static void *ecdsa_newctx(void *provctx, const char *propq)
{
    return newctx(provctx, FAM_ECDSA);
}

static void *rsa_newctx(void *provctx, const char *propq)
{
    return newctx(provctx, FAM_RSA);
}

static void *ed25519_newctx(void *provctx, const char *propq)
{
    return newctx(provctx, FAM_ED25519);
}

static void reset(sigctx *c)
{
    kvp_key_free(c->k);
    c->k = NULL;
    EVP_MD_free(c->md);
    c->md = NULL;
    EVP_MD_free(c->mgf1);
    c->mgf1 = NULL;
    EVP_MD_CTX_free(c->hash);
    c->hash = NULL;
    if (c->vmd)
        EVP_MD_CTX_free(c->vmd); /* frees vpk, its own */
    else
        EVP_PKEY_CTX_free(c->vpk);
    c->vmd = NULL;
    c->vpk = NULL;
    c->pad = RSA_PKCS1_PADDING;
}

static void freectx(void *vctx)
{
    sigctx *c = vctx;

    if (!c)
        return;
    reset(c);
    free(c);
}

static void *dupctx(void *vctx)
{
    sigctx *src = vctx, *c = newctx(src->pc, src->fam);

    if (!c)
        return NULL;
    c->signing = src->signing;
    c->digest_op = src->digest_op;
    c->pad = src->pad;
    if (src->k)
        c->k = kvp_key_up_ref(src->k);
    if ((src->md && !EVP_MD_up_ref(src->md)) || (src->mgf1 && !EVP_MD_up_ref(src->mgf1)))
        goto fail;
    c->md = src->md;
    c->mgf1 = src->mgf1;
    if (src->hash && (!(c->hash = EVP_MD_CTX_new()) || !EVP_MD_CTX_copy_ex(c->hash, src->hash)))
        goto fail;
    if (src->vmd) {
        if (!(c->vmd = EVP_MD_CTX_new()) || !EVP_MD_CTX_copy_ex(c->vmd, src->vmd))
            goto fail;
        c->vpk = EVP_MD_CTX_get_pkey_ctx(c->vmd);
    } else if (src->vpk && !(c->vpk = EVP_PKEY_CTX_dup(src->vpk))) {
        goto fail;
    }
    return c;
fail:
    kvp_raise(src->pc, KVP_R_INTERNAL, "cannot copy a signature context");
    freectx(c);
    return NULL;
}

/* ---- parameters ----------------------------------------------------------- */

static int set_digest(sigctx *c, EVP_MD **slot, const char *name)
{
    EVP_MD *md = EVP_MD_fetch(c->pc->publibctx, name, NULL);

    if (!md) {
        kvp_raise(c->pc, KVP_R_UNSUPPORTED, "digest '%s' is not available", name);
        return 0;
    }
    EVP_MD_free(*slot);
    *slot = md;
    return 1;
}

/* A signature setting as an int, from an integer or a name. */
static int param_choice(const OSSL_PARAM *p, const OSSL_ITEM *names, int *out)
{
    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
        for (; names->ptr; names++)
            if (strcmp(p->data, names->ptr) == 0) {
                *out = (int)names->id;
                return 1;
            }
        return 0;
    }
    return OSSL_PARAM_get_int(p, out);
}

static const OSSL_ITEM pad_names[] = {
    { RSA_PKCS1_PADDING, OSSL_PKEY_RSA_PAD_MODE_PKCSV15 },
    { RSA_PKCS1_PSS_PADDING, OSSL_PKEY_RSA_PAD_MODE_PSS },
    { RSA_NO_PADDING, OSSL_PKEY_RSA_PAD_MODE_NONE },
    { RSA_X931_PADDING, OSSL_PKEY_RSA_PAD_MODE_X931 },
    { 0, NULL },
};

static const OSSL_ITEM salt_names[] = {
    { (unsigned)RSA_PSS_SALTLEN_DIGEST, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST },
    { (unsigned)RSA_PSS_SALTLEN_MAX, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX },
    { (unsigned)RSA_PSS_SALTLEN_AUTO, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO },
    { 0, NULL },
};

/*
 * The salt a vault key signs with is the digest length (RFC 8446 4.2.3;
 * kv_sign's RSA-PSS). "digest" and a number equal to the digest length ask
 * for exactly that; "auto" leaves the choice to the signer (verifiers in
 * auto mode read it from the signature). "max" and other lengths are refused.
 */
static int check_salt(sigctx *c, const OSSL_PARAM *p)
{
    int salt = 0;
    const char *s = p->data_type == OSSL_PARAM_UTF8_STRING ? p->data : NULL;

    if (s && !param_choice(p, salt_names, &salt)) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        if (!*s || *end || v < 0 || v > 4096) {
            kvp_raise(c->pc, KVP_R_BAD_PARAM, "malformed PSS salt length");
            return 0;
        }
        salt = (int)v;
    } else if (!s && !OSSL_PARAM_get_int(p, &salt)) {
        kvp_raise(c->pc, KVP_R_BAD_PARAM, "malformed PSS salt length");
        return 0;
    }
    if (salt == RSA_PSS_SALTLEN_DIGEST || salt == RSA_PSS_SALTLEN_AUTO)
        return 1;
    if (salt >= 0 && c->md && salt == EVP_MD_get_size(c->md))
        return 1;
    if (salt == RSA_PSS_SALTLEN_MAX)
        kvp_raise(c->pc, KVP_R_UNSUPPORTED,
                  "PSS salt length 'max' is not offered: vault keys sign with a salt as long as "
                  "the digest");
    else
        kvp_raise(c->pc, KVP_R_UNSUPPORTED,
                  "PSS salt length %d is not offered: vault keys sign with a salt as long as the "
                  "digest (%d)", salt, c->md ? EVP_MD_get_size(c->md) : -1);
    return 0;
}

static int sign_set_params(sigctx *c, const OSSL_PARAM params[])
{
    const OSSL_PARAM *p;
    const char *s = NULL;
    int pad;

    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
    if (p) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || c->fam == FAM_ED25519 ||
            (c->hash && EVP_MD_CTX_get0_md(c->hash))) {
            kvp_raise(c->pc, KVP_R_BAD_PARAM, "the digest cannot be set here");
            return 0;
        }
        if (!set_digest(c, &c->md, s))
            return 0;
    }
    if (c->fam != FAM_RSA)
        return 1;
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
    if (p) {
        if (!param_choice(p, pad_names, &pad)) {
            kvp_raise(c->pc, KVP_R_BAD_PARAM, "malformed RSA padding mode");
            return 0;
        }
        if (pad != RSA_PKCS1_PADDING && pad != RSA_PKCS1_PSS_PADDING) {
            kvp_raise(c->pc, KVP_R_UNSUPPORTED,
                      "RSA padding mode %d is not offered: PKCS#1 v1.5 or PSS", pad);
            return 0;
        }
        c->pad = pad;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
    if (p && (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !set_digest(c, &c->mgf1, s)))
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
    if (p && !check_salt(c, p))
        return 0;
    return 1;
}

static int set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    sigctx *c = vctx;

    if (!params || !params[0].key)
        return 1;
    if (!c->signing)
        return c->vpk ? EVP_PKEY_CTX_set_params(c->vpk, params) : 0;
    return sign_set_params(c, params);
}

/* A verify context on the public half with this context's signing
 * settings: what OpenSSL's own implementation says about them (the
 * X.509 AlgorithmIdentifier above all). */
static EVP_MD_CTX *software_twin(sigctx *c, EVP_PKEY_CTX **pctx)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    const char *md = c->md ? EVP_MD_get0_name(c->md) : NULL;

    if (!m || EVP_DigestVerifyInit_ex(m, pctx, md, c->pc->publibctx, NULL, c->k->pub, NULL) != 1)
        goto fail;
    if (c->fam == FAM_RSA && c->pad == RSA_PKCS1_PSS_PADDING &&
        (EVP_PKEY_CTX_set_rsa_padding(*pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(*pctx, RSA_PSS_SALTLEN_DIGEST) != 1 ||
         (c->mgf1 && EVP_PKEY_CTX_set_rsa_mgf1_md(*pctx, c->mgf1) != 1)))
        goto fail;
    return m;
fail:
    EVP_MD_CTX_free(m);
    return NULL;
}

static int get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    sigctx *c = vctx;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *m;
    int ok;

    if (!c->k)
        return 0;
    if (!c->signing)
        return c->vpk ? EVP_PKEY_CTX_get_params(c->vpk, params) : 0;
    m = software_twin(c, &pctx);
    ok = m && EVP_PKEY_CTX_get_params(pctx, params) == 1;
    EVP_MD_CTX_free(m);
    return ok;
}

static const OSSL_PARAM *ecdsa_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_END,
    };
    return params;
}

static const OSSL_PARAM *rsa_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_END,
    };
    return params;
}

static const OSSL_PARAM *ed25519_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = { OSSL_PARAM_END };
    return params;
}

static const OSSL_PARAM *gettable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = {
        OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
        OSSL_PARAM_END,
    };
    return params;
}

/* ---- init ----------------------------------------------------------------- */

static int init(sigctx *c, void *keydata, const char *mdname, int signing, int digest_op,
                const OSSL_PARAM params[])
{
    kvp_key *k = kvp_key_check(keydata);
    char defmd[64];

    reset(c);
    if (mdname && !mdname[0])
        mdname = NULL;
    c->signing = signing;
    c->digest_op = digest_op;
    if (!k) {
        kvp_raise(c->pc, KVP_R_BAD_PARAM, "not a keyvault key");
        return 0;
    }
    if (signing && !k->key) {
        kvp_raise(c->pc, KVP_R_NO_PRIVATE_KEY,
                  "cannot sign: this key object holds a public key only");
        return 0;
    }
    c->k = kvp_key_up_ref(k);
    if (c->fam == FAM_ED25519 && mdname) {
        kvp_raise(c->pc, KVP_R_UNSUPPORTED, "Ed25519 takes no digest (asked for %s)", mdname);
        return 0;
    }
    if (!signing) {
        /* verification: OpenSSL's own, on the public half */
        if (digest_op) {
            c->vmd = EVP_MD_CTX_new();
            if (!c->vmd || EVP_DigestVerifyInit_ex(c->vmd, &c->vpk, mdname, c->pc->publibctx,
                                                   NULL, k->pub, params) != 1)
                goto fail;
        } else {
            c->vpk = EVP_PKEY_CTX_new_from_pkey(c->pc->publibctx, k->pub, NULL);
            if (!c->vpk || EVP_PKEY_verify_init_ex(c->vpk, params) != 1)
                goto fail;
        }
        return 1;
    }
    if (digest_op && c->fam != FAM_ED25519) {
        if (!mdname) {
            if (EVP_PKEY_get_default_digest_name(k->pub, defmd, sizeof(defmd)) <= 0)
                goto fail;
            mdname = defmd;
        }
        if (!set_digest(c, &c->md, mdname))
            return 0;
        c->hash = EVP_MD_CTX_new();
        if (!c->hash || EVP_DigestInit_ex2(c->hash, c->md, NULL) != 1)
            goto fail;
    }
    return sign_set_params(c, params);
fail:
    kvp_raise(c->pc, KVP_R_INTERNAL, "cannot set up the %s context",
              signing ? "signing" : "verification");
    return 0;
}

static int sign_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
    return init(vctx, keydata, NULL, 1, 0, params);
}

static int verify_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
    return init(vctx, keydata, NULL, 0, 0, params);
}

static int digest_sign_init(void *vctx, const char *mdname, void *keydata,
                            const OSSL_PARAM params[])
{
    return init(vctx, keydata, mdname, 1, 1, params);
}

static int digest_verify_init(void *vctx, const char *mdname, void *keydata,
                              const OSSL_PARAM params[])
{
    return init(vctx, keydata, mdname, 0, 1, params);
}

/* ---- signing -------------------------------------------------------------- */

/* kv_sign's algorithm for the context's settings and a digest of dlen bytes
 * (the digest's name picks it when set; else its length, for ECDSA). */
static int pick_alg(sigctx *c, size_t dlen, kv_sign_alg *alg)
{
    static const struct {
        sig_family fam;
        int pad;
        size_t len;
        kv_sign_alg alg;
    } algs[] = {
        { FAM_ECDSA, 0, 32, KV_ALG_ECDSA_SHA256 },
        { FAM_ECDSA, 0, 48, KV_ALG_ECDSA_SHA384 },
        { FAM_ECDSA, 0, 64, KV_ALG_ECDSA_SHA512 },
        { FAM_RSA, RSA_PKCS1_PADDING, 32, KV_ALG_RSA_PKCS1_SHA256 },
        { FAM_RSA, RSA_PKCS1_PADDING, 48, KV_ALG_RSA_PKCS1_SHA384 },
        { FAM_RSA, RSA_PKCS1_PADDING, 64, KV_ALG_RSA_PKCS1_SHA512 },
        { FAM_RSA, RSA_PKCS1_PSS_PADDING, 32, KV_ALG_RSA_PSS_SHA256 },
        { FAM_RSA, RSA_PKCS1_PSS_PADDING, 48, KV_ALG_RSA_PSS_SHA384 },
        { FAM_RSA, RSA_PKCS1_PSS_PADDING, 64, KV_ALG_RSA_PSS_SHA512 },
    };
    static const char *const sha2[] = { "SHA2-256", "SHA2-384", "SHA2-512" };
    const char *mdname = c->md ? EVP_MD_get0_name(c->md) : NULL;
    int pad = c->fam == FAM_RSA ? c->pad : 0;

    if (c->fam == FAM_ED25519) {
        *alg = KV_ALG_ED25519;
        return 1;
    }
    if (c->fam == FAM_RSA && !c->md) {
        kvp_raise(c->pc, KVP_R_UNSUPPORTED,
                  "RSA signing of a digest needs the digest named (OSSL_SIGNATURE_PARAM_DIGEST)");
        return 0;
    }
    if (c->md) {
        int known = 0;
        for (size_t i = 0; i < sizeof(sha2) / sizeof(sha2[0]); i++)
            known |= EVP_MD_is_a(c->md, sha2[i]);
        if (!known || (size_t)EVP_MD_get_size(c->md) != dlen) {
            kvp_raise(c->pc, KVP_R_UNSUPPORTED,
                      "digest %s is not offered by vault keys: SHA-256, SHA-384 or SHA-512",
                      mdname);
            return 0;
        }
    }
    if (pad == RSA_PKCS1_PSS_PADDING && c->mgf1 && !EVP_MD_is_a(c->mgf1, mdname)) {
        kvp_raise(c->pc, KVP_R_UNSUPPORTED,
                  "RSA-PSS with MGF1 over %s and digest %s: vault keys use one digest for both",
                  EVP_MD_get0_name(c->mgf1), mdname);
        return 0;
    }
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
        if (algs[i].fam == c->fam && algs[i].pad == pad && algs[i].len == dlen) {
            *alg = algs[i].alg;
            return 1;
        }
    kvp_raise(c->pc, KVP_R_UNSUPPORTED, "a %zu-byte digest is not one vault keys sign", dlen);
    return 0;
}

/* kv_sign into sig (sigsize bytes), through a buffer of kv_sign's maximum
 * when sig is smaller than that. */
static int vault_sign(sigctx *c, kv_sign_alg alg, unsigned flags, const unsigned char *in,
                      size_t inlen, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    unsigned char *buf = sig;
    size_t max = 0, len;
    kv_rc rc;

    rc = kv_sign(c->k->key, alg, flags, NULL, 0, NULL, &max);
    if (rc == KV_OK && max > sigsize && !(buf = malloc(max)))
        rc = KV_ERR_NO_MEMORY;
    len = max;
    if (rc == KV_OK)
        rc = kv_sign(c->k->key, alg, flags, in, inlen, buf, &len);
    if (rc != KV_OK) {
        kvp_raise_kv(c->pc, c->k->kv, rc, "kv_sign");
    } else if (len > sigsize) {
        kvp_raise(c->pc, KVP_R_BAD_PARAM, "signature buffer too small (%zu bytes, need %zu)",
                  sigsize, len);
        rc = KV_ERR_BUFFER_TOO_SMALL;
    } else {
        if (buf != sig)
            memcpy(sig, buf, len);
        *siglen = len;
    }
    if (buf != sig)
        free(buf);
    return rc == KV_OK;
}

static size_t max_size(sigctx *c)
{
    return (size_t)EVP_PKEY_get_size(c->k->pub);
}

static int sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                const unsigned char *tbs, size_t tbslen)
{
    sigctx *c = vctx;
    kv_sign_alg alg;

    if (!c->k || !c->signing)
        return 0;
    if (!sig) {
        *siglen = max_size(c);
        return 1;
    }
    if (c->fam == FAM_ED25519) {
        kvp_raise(c->pc, KVP_R_UNSUPPORTED, "Ed25519 signs messages: use EVP_DigestSign");
        return 0;
    }
    return pick_alg(c, tbslen, &alg) &&
           vault_sign(c, alg, KV_SIGN_PREHASHED, tbs, tbslen, sig, siglen, sigsize);
}

static int digest_sign_update(void *vctx, const unsigned char *data, size_t len)
{
    sigctx *c = vctx;

    if (!c->hash) {
        kvp_raise(c->pc, KVP_R_UNSUPPORTED, "this signature takes its message in one piece");
        return 0;
    }
    return EVP_DigestUpdate(c->hash, data, len);
}

static int digest_sign_final(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    sigctx *c = vctx;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    kv_sign_alg alg;
    int ok;

    if (!c->k || !c->hash)
        return 0;
    if (!sig) {
        *siglen = max_size(c);
        return 1;
    }
    if (EVP_DigestFinal_ex(c->hash, digest, &dlen) != 1) {
        kvp_raise(c->pc, KVP_R_INTERNAL, "the digest failed");
        return 0;
    }
    ok = pick_alg(c, dlen, &alg) &&
         vault_sign(c, alg, KV_SIGN_PREHASHED, digest, dlen, sig, siglen, sigsize);
    OPENSSL_cleanse(digest, sizeof(digest));
    return ok;
}

/* Ed25519: the message in one piece. */
static int digest_sign(void *vctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                       const unsigned char *tbs, size_t tbslen)
{
    sigctx *c = vctx;

    if (!c->k || !c->signing)
        return 0;
    if (!sig) {
        *siglen = max_size(c);
        return 1;
    }
    return vault_sign(c, KV_ALG_ED25519, 0, tbs, tbslen, sig, siglen, sigsize);
}

/* ---- verifying: in software ---------------------------------------------- */

static int verify(void *vctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs,
                  size_t tbslen)
{
    sigctx *c = vctx;

    return c->vpk && !c->vmd && EVP_PKEY_verify(c->vpk, sig, siglen, tbs, tbslen) == 1;
}

static int digest_verify_update(void *vctx, const unsigned char *data, size_t len)
{
    sigctx *c = vctx;

    return c->vmd && EVP_DigestVerifyUpdate(c->vmd, data, len) == 1;
}

static int digest_verify_final(void *vctx, const unsigned char *sig, size_t siglen)
{
    sigctx *c = vctx;

    return c->vmd && EVP_DigestVerifyFinal(c->vmd, sig, siglen) == 1;
}

static int digest_verify(void *vctx, const unsigned char *sig, size_t siglen,
                         const unsigned char *tbs, size_t tbslen)
{
    sigctx *c = vctx;

    return c->vmd && EVP_DigestVerify(c->vmd, sig, siglen, tbs, tbslen) == 1;
}

/* ---- dispatch ------------------------------------------------------------- */

#define SIG_COMMON(newfn, settablefn)                                                      \
    { OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))newfn },                                 \
    { OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))freectx },                              \
    { OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))dupctx },                                \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))digest_sign_init },            \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))digest_verify_init },        \
    { OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))set_ctx_params },                \
    { OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))settablefn },               \
    { OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))get_ctx_params },                \
    { OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))gettable }

#define SIG_PREHASHED                                                                      \
    { OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))sign_init },                          \
    { OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))sign },                                    \
    { OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))verify_init },                      \
    { OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))verify },                                \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))digest_sign_update },        \
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))digest_sign_final },          \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))digest_verify_update },    \
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))digest_verify_final }

const OSSL_DISPATCH kvp_ecdsa_functions[] = {
    SIG_COMMON(ecdsa_newctx, ecdsa_settable),
    SIG_PREHASHED,
    { 0, NULL },
};

const OSSL_DISPATCH kvp_rsa_sig_functions[] = {
    SIG_COMMON(rsa_newctx, rsa_settable),
    SIG_PREHASHED,
    { 0, NULL },
};

const OSSL_DISPATCH kvp_ed25519_sig_functions[] = {
    SIG_COMMON(ed25519_newctx, ed25519_settable),
    { OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))digest_sign },
    { OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))digest_verify },
    { 0, NULL },
};
