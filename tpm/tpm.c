/*
 * tpm.c - the TPM 2.0 backend: keys that never leave the TPM in the clear.
 *
 * [tpm]
 * tcti = device:/dev/tpmrm0 | tabrmd | swtpm:host=H,port=P | mssim:... | none
 *                           default: $KEYVAULT_TCTI, else /dev/tpmrm0 if present
 * keys = DIR                key files; default HOME/tpm
 * parent = 0x81000001       a persistent storage key to create keys under;
 *                           default: the owner storage primary (ECC P-256,
 *                           the template tpm2-openssl uses), made on connect
 * auth = file:PATH | env:VAR   auth value for the keys of this context
 * sessions = auto | always  auto (default): a salted HMAC session with
 *                           parameter encryption where it protects something
 *                           (ECDH, keys with an auth value, creating a key
 *                           with one), a password authorisation elsewhere;
 *                           always: every key use in the session
 *
 * A key is KEYS/NAME.pem, a TSS2 PRIVATE KEY (the TPM-wrapped blobs, usable
 * by tpm2-openssl and the kernel), and KEYS/NAME.json, its metadata, bound
 * to the key file by a MAC under a key from KEYS/.store-secret (meta.c,
 * filestore.c: the rules the store shares with the software backend).
 * URIs: tpm2:file=/path/NAME.pem, tpm2:handle=0x81000002 (persistent); keys
 * are created at either with kv_key_generate_at.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include "tpm.h"

#define TPM_KEY_FILE_MAX (16 * 1024)

static const kv_filestore tpm_fs = { "tpm", "tpm2:file=", KV_ASSURANCE_TPM };

static struct tpm_state *st(kv_backend *be)
{
    return be->state;
}


static kv_rc tpm_init(kv_backend *be)
{
    kv_ctx *ctx = be->ctx;
    const char *tcti = kv_config_get(ctx->cfg, "tpm", "tcti");
    const char *parent = kv_config_get(ctx->cfg, "tpm", "parent");
    const char *auth = kv_config_get(ctx->cfg, "tpm", "auth");
    const char *sessions = kv_config_get(ctx->cfg, "tpm", "sessions");
    struct tpm_state *s = calloc(1, sizeof(*s));
    kv_rc rc = KV_OK;

    if (!s)
        return kv_error(NULL, KV_ERR_NO_MEMORY, "out of memory");
    be->state = s;
    kv_mutex_init(&s->ak_lock);
    s->parent = TPM2_RH_OWNER;
    if (parent) {
        char *end;
        unsigned long h = strtoul(parent, &end, 0);
        if (*end || (h >> 24) != 0x81)
            KV_FAIL(NULL, rc, KV_ERR_CONFIG,
                    "[tpm] parent = '%s': expected a persistent handle such as 0x81000001", parent);
        s->parent = (TPM2_HANDLE)h;
    }
    if (sessions && strcmp(sessions, "auto") && strcmp(sessions, "always"))
        KV_FAIL(NULL, rc, KV_ERR_CONFIG, "[tpm] sessions: expected auto or always");
    s->sessions_always = sessions && !strcmp(sessions, "always");
    if (auth && !kv_secret_source_valid(auth))
        KV_FAIL(NULL, rc, KV_ERR_CONFIG, "[tpm] auth: expected file:PATH or env:VAR");
    s->auth_source = kv_strdup(auth);
    KV_CHECK(rc, kv_fs_dir_config(ctx, "tpm", "keys", "tpm", &s->dir));
    if (auth && !s->auth_source)
        KV_FAIL(NULL, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!tcti || !*tcti)
        tcti = getenv("KEYVAULT_TCTI");
    if ((!tcti || !*tcti) && access("/dev/tpmrm0", R_OK | W_OK) == 0)
        tcti = "device:/dev/tpmrm0";
    if (!tcti || !*tcti) {
        snprintf(be->why, sizeof(be->why),
                 "no TPM: no [tpm] tcti, no KEYVAULT_TCTI, no /dev/tpmrm0");
        be->available = false;
        return KV_OK;
    }
    if (!strcmp(tcti, "none")) {
        snprintf(be->why, sizeof(be->why), "disabled by [tpm] tcti = none");
        be->available = false;
        return KV_OK;
    }
    s->tcti = kv_strdup(tcti);
    if (!s->tcti)
        KV_FAIL(NULL, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, tpm_conn_get(NULL, s->tcti, s->parent, s->sessions_always, &s->conn));
    be->uri_ok = true;
out:
    return rc;
}

static void tpm_fini(kv_backend *be)
{
    struct tpm_state *s = st(be);

    if (!s)
        return;
    if (s->conn)
        tpm_ak_free(s);
    kv_mutex_destroy(&s->ak_lock);
    tpm_conn_put(s->conn, s->sessions_always);
    free(s->tcti);
    free(s->dir);
    free(s->auth_source);
    free(s);
    be->state = NULL;
}

/* ---- keys ------------------------------------------------------------------ */

kv_rc tpm_public_to_pkey(const kv_ctx *ctx, const TPMT_PUBLIC *pub, EVP_PKEY **out)
{
    OSSL_LIB_CTX *libctx = ctx ? ctx->libctx : NULL;
    EVP_PKEY_CTX *pctx = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    BIGNUM *n = NULL, *e = NULL;
    unsigned char pt[1 + 2 * TPM2_MAX_ECC_KEY_BYTES];
    kv_rc rc = KV_OK;

    *out = NULL;
    if (!bld)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (pub->type == TPM2_ALG_ECC) {
        const TPMS_ECC_POINT *p = &pub->unique.ecc;
        const char *group = pub->parameters.eccDetail.curveID == TPM2_ECC_NIST_P256   ? "P-256"
                            : pub->parameters.eccDetail.curveID == TPM2_ECC_NIST_P384 ? "P-384"
                                                                                     : NULL;
        if (!group || p->x.size != p->y.size || p->x.size > TPM2_MAX_ECC_KEY_BYTES)
            KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "TPM key on a curve libkeyvault does not use");
        pt[0] = 0x04;
        memcpy(pt + 1, p->x.buffer, p->x.size);
        memcpy(pt + 1 + p->x.size, p->y.buffer, p->y.size);
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt,
                                              1 + 2 * (size_t)p->x.size))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        pctx = EVP_PKEY_CTX_new_from_name(libctx, "EC", NULL);
    } else if (pub->type == TPM2_ALG_RSA) {
        n = BN_bin2bn(pub->unique.rsa.buffer, pub->unique.rsa.size, NULL);
        e = BN_new();
        if (!n || !e || !BN_set_word(e, pub->parameters.rsaDetail.exponent
                                            ? pub->parameters.rsaDetail.exponent : 65537) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        pctx = EVP_PKEY_CTX_new_from_name(libctx, "RSA", NULL);
    } else {
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "TPM key of algorithm 0x%04x", pub->type);
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    if (!pctx || !params || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1)
        rc = kv_error_ossl(ctx, KV_ERR_CORRUPT, "the TPM public key does not decode");
out:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return rc;
}

static kv_rc load_auth(kv_backend *be, TPM2B_AUTH *auth)
{
    char *secret = NULL;
    size_t n;
    kv_rc rc;

    memset(auth, 0, sizeof(*auth));
    if (!st(be)->auth_source)
        return KV_OK;
    rc = kv_secret_read(be->ctx, st(be)->auth_source, "TPM key auth value", &secret);
    if (rc == KV_ERR_KEY_NOT_FOUND)
        rc = kv_error(be->ctx, KV_ERR_CONFIG, "TPM auth source %s: file does not exist",
                      st(be)->auth_source);
    if (rc != KV_OK)
        return rc;
    n = strlen(secret);
    if (n > sizeof(auth->buffer)) {
        kv_secret_free(secret);
        return kv_error(be->ctx, KV_ERR_CONFIG, "TPM auth value longer than %zu bytes",
                        sizeof(auth->buffer));
    }
    memcpy(auth->buffer, secret, n);
    auth->size = (UINT16)n;
    kv_secret_free(secret);
    return KV_OK;
}

/* Forget the persistent parent of its own a key had (after the key). */
static void own_parent_free(struct tpm_conn *c, struct tpm_key *tk)
{
    if (!tk->own_parent)
        return;
    tpm_obj_release(c, tk->own_parent);
    free(tk->own_parent);
    tk->own_parent = NULL;
}

static void tpm_key_free(kv_key *key)
{
    struct tpm_key *tk = key->bk;

    tpm_obj_release(st(key->be)->conn, &tk->obj);
    own_parent_free(st(key->be)->conn, tk);
    kv_wipe(&tk->obj.auth, sizeof(tk->obj.auth));
    kv_wipe(&tk->obj.context, sizeof(tk->obj.context));
    free(tk->path);
    free(tk);
    key->bk = NULL;
}

/* Fill key from blobs; takes tk. */
static kv_rc fill_key(kv_backend *be, kv_key *key, const char *name, struct tpm_key *tk)
{
    kv_ctx *ctx = be->ctx;
    kv_rc rc;

    key->bk = tk;
    tk->obj.handle = ESYS_TR_NONE;
    if (!tk->obj.parent)
        tk->obj.parent = &st(be)->conn->srk;
    KV_CHECK(rc, tpm_public_to_pkey(ctx, &tk->obj.pub.publicArea, &key->pub));
    key->type = kv_type_of_pkey(key->pub);
    if (key->type == KV_KEY_UNKNOWN)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "TPM key '%s' is of a type libkeyvault does not use",
                name);
    key->name = kv_strdup(name);
    if (key->from_data) /* in no store: a description, which opens nothing */
        key->uri = kv_asprintf("(%s, parent 0x%08x)", name,
                               tk->own_parent ? tk->own_parent->persistent : st(be)->parent);
    else
        key->uri = tk->path ? kv_asprintf("tpm2:file=%s", tk->path)
                            : kv_asprintf("tpm2:handle=0x%08x", tk->obj.persistent);
    if (!key->name || !key->uri)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
out:
    return rc;
}

static kv_rc tpm_exists(kv_backend *be, const char *name)
{
    return kv_fs_exists(be->ctx, st(be)->dir, name);
}

/* DIR/NAME.json bound to the key's public key under the MAC key of the
 * directory's secret (DIR/.store-secret, made with the first key). */
static kv_rc meta_write(kv_backend *be, const char *dir, const char *name, kv_key_type type,
                        const TPM2B_PUBLIC *pub, const kv_key_policy *policy)
{
    unsigned char mac_key[KV_MAC_KEY_LEN];
    EVP_PKEY *pkey = NULL;
    kv_rc rc;

    KV_CHECK(rc, tpm_public_to_pkey(be->ctx, &pub->publicArea, &pkey));
    KV_CHECK(rc, kv_fs_store_mac_key(be->ctx, dir, true, mac_key));
    rc = kv_meta_write(be->ctx, dir, name, type, "tpm", 1, pkey, policy, mac_key);
out:
    kv_wipe(mac_key, sizeof(mac_key));
    EVP_PKEY_free(pkey);
    return rc;
}

TSS2_RC tpm_create_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct tpm_create_arg *a = p;
    TPM2B_SENSITIVE_CREATE sens = { 0 };
    TPM2B_DATA outside = { 0 };
    TPML_PCR_SELECTION pcrs = { 0 };
    TPM2B_PUBLIC *pub = NULL;
    TPM2B_PRIVATE *priv = NULL;
    ESYS_TR parent, auth;
    TSS2_RC rc;

    /* an auth value in inSensitive is a secret: encrypted in the session */
    rc = tpm_auth(c, s, NULL, a->auth && a->auth->size, &auth);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "loading the storage key";
    rc = tpm_obj_use(c, &c->srk, &parent);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    if (a->auth)
        sens.sensitive.userAuth = *a->auth;
    s->cmd = a->what ? a->what : "TPM2_Create";
    do /* TPM2_Create needs a free object slot: one more than the parent's */
        rc = Esys_Create(c->esys, parent, auth, ESYS_TR_NONE, ESYS_TR_NONE, &sens, a->tmpl,
                         &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
    while (tpm_make_room(c, rc, &c->srk));
    kv_wipe(&sens, sizeof(sens));
    if (rc == TSS2_RC_SUCCESS) {
        /* loaded once before it is kept: TPM2_Load checks the blobs'
         * integrity, which binds the public area to them, so a response
         * damaged on its way (a password session has no response HMAC)
         * fails here rather than as a key file that never loads */
        ESYS_TR h = ESYS_TR_NONE;

        s->cmd = "TPM2_Load (of the new key, to check TPM2_Create's response)";
        do
            rc = Esys_Load(c->esys, parent, auth, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &h);
        while (tpm_make_room(c, rc, &c->srk));
        if (rc == TSS2_RC_SUCCESS)
            (void)Esys_FlushContext(c->esys, h);
    }
    if (rc == TSS2_RC_SUCCESS) {
        *a->pub = *pub;
        *a->priv = *priv;
    }
    Esys_Free(pub);
    Esys_Free(priv);
    return rc;
}

/* TPM 2.0 offers ECC (NIST P-256/P-384 here) and RSA keys, no Ed25519. */
static bool tpm_can_hold(const kv_backend *be, kv_key_type type)
{
    const kv_type_desc *t = kv_type_desc_get(type);

    (void)be;
    return t && t->family != KV_FAMILY_ED25519;
}

/* A new key's wrapped blobs (TPM2_Create under the storage key), with the
 * context's auth value. With a policy (docs/policy.md), the object
 * attributes say what it allows (SIGN_ENCRYPT only for sign, attest or
 * issue; DECRYPT only for ecdh), and its authPolicy is the policy's digest:
 * the TPM binds that to the key (it is part of the key's name), so the key
 * file alone says that a policy belongs to it, and no policy session can
 * ever satisfy it. */
static kv_rc create_blobs(kv_backend *be, kv_key_type type, const kv_key_policy *policy,
                          struct tpm_key **out)
{
    kv_ctx *ctx = be->ctx;
    const kv_type_desc *t = kv_type_desc_get(type);
    TPM2B_PUBLIC tmpl = { 0 };
    TPMT_PUBLIC *p = &tmpl.publicArea;
    struct tpm_key *tk = NULL;
    kv_rc rc;

    *out = NULL;
    if (!tpm_can_hold(be, type))
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "backend 'tpm' cannot hold %s keys (TPM 2.0 "
                        "has no Ed25519)", t->name);
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH;
    if (!policy || (policy->uses & (KV_USE_SIGN | KV_USE_ATTEST | KV_USE_ISSUE)))
        p->objectAttributes |= TPMA_OBJECT_SIGN_ENCRYPT;
    if (policy) {
        KV_CHECK(rc, kv_key_policy_digest(ctx, policy, p->authPolicy.buffer));
        p->authPolicy.size = 32;
    }
    if (t->family == KV_FAMILY_EC) {
        p->type = TPM2_ALG_ECC;
        if (!policy || (policy->uses & KV_USE_ECDH))
            p->objectAttributes |= TPMA_OBJECT_DECRYPT; /* for ECDH_ZGen */
        p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID = t->bits == 384 ? TPM2_ECC_NIST_P384 : TPM2_ECC_NIST_P256;
    } else {
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = (TPMI_RSA_KEY_BITS)t->bits;
    }
    tk = calloc(1, sizeof(*tk));
    if (!tk)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    tk->obj.handle = ESYS_TR_NONE;
    tk->obj.parent = &st(be)->conn->srk;
    KV_CHECK(rc, load_auth(be, &tk->obj.auth));
    /* dictionary-attack protection guards auth values; a key without one
     * has nothing to guard and must keep working while the TPM is in lockout */
    if (tk->obj.auth.size == 0)
        p->objectAttributes |= TPMA_OBJECT_NODA;
    {
        struct tpm_create_arg a = { &tmpl, &tk->obj.auth, &tk->obj.pub, &tk->obj.priv, NULL };
        KV_CHECK(rc, tpm_run(ctx, st(be)->conn, tpm_create_step, &a));
    }
    *out = tk;
    tk = NULL;
out:
    if (tk) {
        kv_wipe(&tk->obj.auth, sizeof(tk->obj.auth));
        free(tk);
    }
    return rc;
}

static void tpm_key_drop(struct tpm_key *tk)
{
    if (!tk)
        return;
    kv_wipe(&tk->obj.auth, sizeof(tk->obj.auth));
    free(tk->path);
    free(tk);
}

/* Create DIR/NAME.pem and DIR/NAME.json (the key directory, or a tpm2:file=
 * URI's directory). */
static kv_rc generate_in(kv_backend *be, const char *dir, const char *name, kv_key_type type,
                         kv_key *key)
{
    kv_ctx *ctx = be->ctx;
    struct tpm_key *tk = NULL;
    char *pem = NULL, *file = NULL;
    size_t pemlen = 0;
    kv_rc rc;

    KV_CHECK(rc, kv_fs_prepare(ctx, dir));
    KV_CHECK(rc, create_blobs(be, type, key->policy, &tk));
    KV_CHECK(rc, tpm_key_write(ctx, &tk->obj.pub, &tk->obj.priv, st(be)->parent,
                               tk->obj.auth.size == 0, &pem, &pemlen));
    file = kv_asprintf("%s.pem", name);
    tk->path = kv_fs_key_path(dir, name);
    if (!file || !tk->path)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    /* the metadata first, then the key file (linked, never replacing one):
     * a generation killed between the two leaves metadata without a key,
     * which takes no name (a key file without metadata would block it) */
    rc = kv_fs_exists(ctx, dir, name);
    if (rc == KV_OK)
        KV_FAIL(ctx, rc, KV_ERR_KEY_EXISTS, "key file '%s' already exists", tk->path);
    if (rc != KV_ERR_KEY_NOT_FOUND)
        goto out;
    KV_CHECK(rc, meta_write(be, dir, name, type, &tk->obj.pub, key->policy));
    rc = kv_write_file_atomic(ctx, dir, file, pem, pemlen, false);
    if (rc != KV_OK) {
        char *meta = kv_sibling_path(tk->path, "json");
        if (meta)
            (void)unlink(meta);
        free(meta);
        goto out;
    }
    rc = fill_key(be, key, name, tk);
    tk = NULL;
out:
    tpm_key_drop(tk);
    free(pem);
    free(file);
    return rc;
}

struct persist_arg {
    kv_ctx *ctx;
    struct tpm_obj *obj;
    TPM2_HANDLE handle;
    bool ours;                /* the handle holds the new key */
};

/* Whether the key at a->handle is the new key (a->ours): its public area
 * the same, unique point included. Absent (TPM_RC_HANDLE): not ours. */
static TSS2_RC persisted_is_ours(struct tpm_conn *c, struct persist_arg *a)
{
    uint8_t have[sizeof(TPMT_PUBLIC)], want[sizeof(TPMT_PUBLIC)];
    size_t nhave = 0, nwant = 0;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    TSS2_RC rc;

    a->ours = false;
    rc = Esys_TR_FromTPMPublic(c->esys, a->handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                               &tr);
    if ((rc & TPM2_RC_FMT1) && (rc & (TPM2_RC_FMT1 | 0x3f)) == TPM2_RC_HANDLE)
        return TSS2_RC_SUCCESS;
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_ReadPublic(c->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL,
                             NULL);
    if (rc == TSS2_RC_SUCCESS &&
        Tss2_MU_TPMT_PUBLIC_Marshal(&pub->publicArea, have, sizeof(have), &nhave) ==
            TSS2_RC_SUCCESS &&
        Tss2_MU_TPMT_PUBLIC_Marshal(&a->obj->pub.publicArea, want, sizeof(want), &nwant) ==
            TSS2_RC_SUCCESS)
        a->ours = nhave == nwant && !memcmp(have, want, nwant);
    Esys_Free(pub);
    if (tr != ESYS_TR_NONE)
        (void)Esys_TR_Close(c->esys, &tr);
    return rc;
}

static TSS2_RC persist_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct persist_arg *a = p;
    ESYS_TR h, out = ESYS_TR_NONE;
    TSS2_RC rc;

    s->cmd = "loading the new key";
    rc = tpm_obj_use(c, a->obj, &h);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "TPM2_EvictControl (owner hierarchy)";
    rc = Esys_EvictControl(c->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, a->handle, &out);
    if (rc == TSS2_RC_SUCCESS)
        (void)Esys_TR_Close(c->esys, &out);
    if (!(rc & TPM2_RC_FMT1) && (rc & 0xfff) == TPM2_RC_NV_DEFINED) {
        /* taken: by this very key when the response to an earlier attempt
         * was lost (the TPM ran it; tpm_run ran the step again) */
        s->cmd = "TPM2_ReadPublic (of the key at the persistent handle)";
        rc = persisted_is_ours(c, a);
        if (rc == TSS2_RC_SUCCESS && !a->ours)
            s->rc = kv_error(a->ctx, KV_ERR_KEY_EXISTS,
                             "persistent handle 0x%08x is already taken", a->handle);
        return rc;
    }
    return rc;
}

/* After TPM2_EvictControl failed on its way back (a response cut short or
 * damaged, once the TPM had run it): whether the handle holds the new key. */
static TSS2_RC persist_check_step(struct tpm_conn *c, struct step *s, void *p)
{
    s->cmd = "TPM2_ReadPublic (of the key at the persistent handle)";
    return persisted_is_ours(c, p);
}

/* A persistent handle in the owner range, 0x81000000-0x817fffff. */
static bool parse_handle(const char *s, TPM2_HANDLE *out)
{
    char *end;
    unsigned long h = strtoul(s, &end, 0);

    if (end == s || *end || (h >> 23) != (0x81000000UL >> 23))
        return false;
    *out = (TPM2_HANDLE)h;
    return true;
}

/* A new key made persistent at `handle` (TPM2_EvictControl with the owner
 * hierarchy's auth, empty as on most machines); no file is written. */
static kv_rc generate_persistent(kv_backend *be, TPM2_HANDLE handle, kv_key_type type,
                                 kv_key *key)
{
    struct tpm_key *tk = NULL, *pk = NULL;
    char name[KV_NAME_MAX + 1];
    kv_rc rc;

    if (key->policy)
        KV_FAIL(be->ctx, rc, KV_ERR_UNSUPPORTED,
                "a persistent TPM key has no metadata to keep a key policy in: make it at "
                "tpm2:file= or by name");
    KV_CHECK(rc, create_blobs(be, type, NULL, &tk));
    {
        struct persist_arg a = { be->ctx, &tk->obj, handle, false };
        kv_err_mark mark = kv_err_mark_get(be->ctx);

        rc = tpm_run(be->ctx, st(be)->conn, persist_step, &a);
        /* a response lost after the TPM made the key persistent: the key
         * is there, and is the result (else the error stands, and the
         * handle is free for a retry) */
        if (rc != KV_OK && rc != KV_ERR_KEY_EXISTS) {
            kv_rc check = tpm_run(be->ctx, st(be)->conn, persist_check_step, &a);
            if (check == KV_OK && a.ours) {
                kv_err_rewind(be->ctx, mark);
                rc = KV_OK;
            } else if (check != KV_OK) {
                /* the first failure's message stands (the first wins);
                 * whether the TPM ran the command is not known */
                char why[200];
                snprintf(why, sizeof(why),
                         "; persistent handle 0x%08x may hold the new key all the same (the "
                         "check after the failure failed too): read it (tpm2_readpublic -c "
                         "0x%08x) before a retry, and evict it if unwanted", handle, handle);
                kv_err_frame(be->ctx, rc, "", why);
            }
        }
    }
    tpm_obj_release(st(be)->conn, &tk->obj);
    if (rc != KV_OK)
        goto out;
    pk = calloc(1, sizeof(*pk));
    if (!pk)
        KV_FAIL(be->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    pk->obj.persistent = handle;
    pk->obj.pub = tk->obj.pub;
    pk->obj.auth = tk->obj.auth;
    snprintf(name, sizeof(name), "handle-0x%08x", handle);
    rc = fill_key(be, key, name, pk);
out:
    tpm_key_drop(tk);
    return rc;
}

static kv_rc tpm_generate(kv_backend *be, const char *name, kv_key_type type, kv_key *key)
{
    return generate_in(be, st(be)->dir, name, type, key);
}

/* tpm2:file=/abs/dir/NAME.pem (a new key file) or tpm2:handle=0x81xxxxxx (a
 * new persistent key). */
static kv_rc tpm_generate_uri(kv_backend *be, const char *uri, kv_key_type type, kv_key *key)
{
    TPM2_HANDLE handle;

    if (!be->available)
        return kv_error(be->ctx, KV_ERR_BACKEND_UNAVAILABLE, "backend 'tpm' is unavailable: %s",
                        be->why);
    /* below, uri holds no query: messages may show it */
    if (uri[kv_uri_shown_len(uri)])
        return kv_error(be->ctx, KV_ERR_BAD_URI,
                        "'%.*s...': tpm2: URIs take no query or fragment",
                        (int)kv_uri_shown_len(uri), uri);
    if (!strncmp(uri, "tpm2:file=", 10))
        return kv_fs_generate_at(be, uri + 10, type, key, generate_in);
    if (!strncmp(uri, "tpm2:handle=", 12) && parse_handle(uri + 12, &handle))
        return generate_persistent(be, handle, type, key);
    return kv_error(be->ctx, KV_ERR_BAD_URI,
                    "new TPM keys are made at tpm2:file=/absolute/path/NAME.pem or "
                    "tpm2:handle=0x81xxxxxx (owner persistent range)");
}

struct parent_arg {
    struct tpm_obj *obj;
    char cmd[80];
};

/* A persistent parent a key file names: present, and a storage key. */
static TSS2_RC parent_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct parent_arg *a = p;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR h;
    TSS2_RC rc;

    s->cmd = a->cmd;
    rc = tpm_obj_use(c, a->obj, &h);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_ReadPublic(c->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL,
                             NULL);
    if (rc == TSS2_RC_SUCCESS)
        a->obj->pub = *pub;
    Esys_Free(pub);
    return rc;
}

/*
 * The parent a TSS2 file names (docs/tpm.md): the context's own storage
 * key (the owner primary, 0x40000001, or [tpm] parent); another persistent
 * key 0x81xxxxxx, which must be in the TPM and be a storage key (it becomes
 * the key's own parent); anything else is refused.
 */
static kv_rc parent_for(kv_backend *be, TPM2_HANDLE parent, const char *what,
                        struct tpm_key *tk)
{
    kv_ctx *ctx = be->ctx;
    const TPMA_OBJECT storage = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    struct parent_arg a = { NULL, "" };
    kv_rc rc = KV_OK;

    if (parent == st(be)->parent)
        return KV_OK; /* the connection's storage key */
    if (parent == TPM2_RH_OWNER)
        return kv_error(ctx, KV_ERR_UNSUPPORTED,
                        "%s: the key's parent is the owner storage primary (0x40000001); this "
                        "context uses the persistent parent 0x%08x ([tpm] parent): open it in a "
                        "context without [tpm] parent", what, st(be)->parent);
    if ((parent >> 24) != 0x81)
        return kv_error(ctx, KV_ERR_UNSUPPORTED,
                        "%s: parent 0x%08x is neither the owner hierarchy (0x40000001) nor a "
                        "persistent key (0x81xxxxxx)", what, parent);
    a.obj = calloc(1, sizeof(*a.obj));
    if (!a.obj)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    a.obj->persistent = parent;
    a.obj->handle = ESYS_TR_NONE;
    tk->own_parent = a.obj;
    tk->obj.parent = a.obj;
    snprintf(a.cmd, sizeof(a.cmd), "reading the key's parent 0x%08x", parent);
    KV_CHECK(rc, tpm_run(ctx, st(be)->conn, parent_step, &a));
    if ((a.obj->pub.publicArea.objectAttributes & storage) != storage)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED,
                "%s: the key's parent 0x%08x is not a storage key (restricted, decrypt)", what,
                parent);
out:
    return rc;
}

/* An EC or RSA key that signs any digest, or an EC key for ECDH only (a
 * key policy's): not restricted (a restricted key signs only what the TPM
 * hashed itself). */
static kv_rc check_public(const kv_ctx *ctx, const TPMT_PUBLIC *p, const char *what)
{
    const TPMA_OBJECT usable = p->type == TPM2_ALG_ECC
                                   ? (TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_DECRYPT)
                                   : TPMA_OBJECT_SIGN_ENCRYPT;

    if (p->type != TPM2_ALG_ECC && p->type != TPM2_ALG_RSA)
        return kv_error(ctx, KV_ERR_UNSUPPORTED,
                        "%s: a TPM key of algorithm 0x%04x (libkeyvault uses EC and RSA keys)",
                        what, p->type);
    if (!(p->objectAttributes & usable) || (p->objectAttributes & TPMA_OBJECT_RESTRICTED))
        return kv_error(ctx, KV_ERR_UNSUPPORTED,
                        "%s: the TPM key is not an unrestricted signing key (nor an EC key "
                        "for ECDH; objectAttributes 0x%08x)", what, p->objectAttributes);
    return KV_OK;
}

/*
 * The policy of an opened TPM key (docs/policy.md). With one from its
 * metadata, the key's authPolicy must be that policy's digest (else the
 * metadata is not the key's: KV_ERR_CORRUPT). Without: a key carrying an
 * authPolicy is a policy key away from its metadata (or one bound to a
 * TPM policy, which libkeyvault cannot satisfy): KV_ERR_POLICY. Otherwise
 * the object attributes are its policy: no SIGN_ENCRYPT, no sign, attest
 * or issue; no DECRYPT on an EC key, no ecdh.
 */
static kv_rc key_policy_bind(kv_backend *be, kv_key *key, const TPMT_PUBLIC *p)
{
    kv_ctx *ctx = be->ctx;
    unsigned char md[32];
    unsigned uses = KV_USE_ALL;
    kv_rc rc;

    if (key->policy) {
        KV_CHECK(rc, kv_key_policy_digest(ctx, key->policy, md));
        if (p->authPolicy.size != sizeof(md) || CRYPTO_memcmp(p->authPolicy.buffer, md,
                                                              sizeof(md)) != 0)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "key '%s': the policy in its metadata is not the one the TPM key was made "
                    "with (its authPolicy differs): the metadata was swapped or altered",
                    key->name);
        return KV_OK;
    }
    if (p->authPolicy.size)
        KV_FAIL(ctx, rc, KV_ERR_POLICY,
                "policy of key '%s': the TPM key carries an authPolicy (a key policy kept in "
                "its metadata, NAME.json, which is not with this key file; or a TPM policy "
                "libkeyvault cannot satisfy): open it by name or by tpm2:file= in its store",
                key->name);
    if (!(p->objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT))
        uses &= ~(KV_USE_SIGN | KV_USE_ATTEST | KV_USE_ISSUE);
    if (p->type == TPM2_ALG_ECC && !(p->objectAttributes & TPMA_OBJECT_DECRYPT))
        uses &= ~KV_USE_ECDH;
    if (uses != KV_USE_ALL && p->type == TPM2_ALG_ECC) {
        key->policy = calloc(1, sizeof(*key->policy));
        if (!key->policy)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        key->policy->size = sizeof(*key->policy);
        key->policy->uses = uses;
    }
    rc = KV_OK;
out:
    return rc;
}

/* A key being opened that did not reach fill_key. Accepts NULL. */
static void tss2_key_drop(kv_backend *be, struct tpm_key *tk)
{
    if (!tk)
        return;
    own_parent_free(st(be)->conn, tk);
    tpm_key_drop(tk);
}

/* A key from the bytes of a TSS2 PRIVATE KEY (`what` names them in
 * messages): the blobs, the parent and auth rules of docs/tpm.md, the
 * public area an EC or RSA signing key. The blobs are not loaded yet. */
static kv_rc tss2_to_key(kv_backend *be, const char *text, size_t len, const char *what,
                         struct tpm_key **out)
{
    kv_ctx *ctx = be->ctx;
    struct tpm_key *tk = calloc(1, sizeof(*tk));
    TPM2_HANDLE parent = 0;
    bool empty_auth = true;
    kv_rc rc;

    *out = NULL;
    if (!tk)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    tk->obj.handle = ESYS_TR_NONE;
    KV_CHECK(rc, tpm_key_read(ctx, text, len, what, &tk->obj.pub, &tk->obj.priv, &parent,
                              &empty_auth));
    KV_CHECK(rc, check_public(ctx, &tk->obj.pub.publicArea, what));
    KV_CHECK(rc, parent_for(be, parent, what, tk));
    if (!empty_auth) {
        KV_CHECK(rc, load_auth(be, &tk->obj.auth));
        if (tk->obj.auth.size == 0)
            KV_FAIL(ctx, rc, KV_ERR_AUTH_FAILED,
                    "%s: the TPM key has an auth value (emptyAuth is not TRUE), and this "
                    "context has none: set [tpm] auth = file:PATH or env:VAR to its source",
                    what);
    }
    *out = tk;
    tk = NULL;
out:
    tss2_key_drop(be, tk);
    return rc;
}

/* Open DIR/NAME.pem (path); its metadata is DIR/NAME.json. */
static kv_rc open_file(kv_backend *be, const char *name, char *path, kv_key *key)
{
    kv_ctx *ctx = be->ctx;
    struct tpm_key *tk = NULL;
    char *text = NULL;
    size_t len = 0;
    kv_rc rc;

    if (!path)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    rc = kv_fs_read_key(ctx, path, name, TPM_KEY_FILE_MAX, &text, &len);
    if (rc != KV_OK)
        goto out;
    KV_CHECK(rc, tss2_to_key(be, text, len, path, &tk));
    tk->path = path;
    path = NULL;
    rc = fill_key(be, key, name, tk);
    if (rc == KV_OK)
        rc = kv_meta_check(ctx, st(be)->dir, tk->path, name, "tpm", key->pub,
                           kv_fs_key_dir_mac_key, tk->path, &key->version, &key->policy);
    if (rc == KV_OK)
        rc = key_policy_bind(be, key, &tk->obj.pub.publicArea);
    tk = NULL;
out:
    tss2_key_drop(be, tk);
    free(text);
    free(path);
    return rc;
}

static kv_rc tpm_open_name(kv_backend *be, const char *name, kv_key *key)
{
    return open_file(be, name, kv_fs_key_path(st(be)->dir, name), key);
}

struct load_arg {
    struct tpm_obj *obj;
};

static TSS2_RC load_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct load_arg *a = p;
    ESYS_TR h;

    s->cmd = "TPM2_Load of the key file's blobs";
    return tpm_obj_use(c, a->obj, &h);
}

/* A TSS2 PRIVATE KEY handed over as bytes (kv_key_open_tpm_file): no path,
 * no metadata to check; loaded at once, so that blobs the TPM refuses
 * (another TPM's, another parent's, damaged) fail here with its code. */
static kv_rc tpm_open_data(kv_backend *be, const unsigned char *data, size_t len, kv_key *key)
{
    struct tpm_key *tk = NULL;
    kv_rc rc;

    if (!be->available && !be->uri_ok)
        return kv_error(be->ctx, KV_ERR_BACKEND_UNAVAILABLE, "backend 'tpm' is unavailable: %s",
                        be->why);
    KV_CHECK(rc, tss2_to_key(be, (const char *)data, len, "the TSS2 PRIVATE KEY data", &tk));
    {
        struct load_arg a = { &tk->obj };
        rc = fill_key(be, key, "TSS2 PRIVATE KEY data", tk);
        tk = NULL; /* key owns it now: kv_key_free releases it */
        if (rc == KV_OK)
            rc = key_policy_bind(be, key, &a.obj->pub.publicArea);
        if (rc == KV_OK)
            rc = tpm_run(be->ctx, st(be)->conn, load_step, &a);
    }
out:
    tss2_key_drop(be, tk);
    return rc;
}

struct readpub_arg {
    struct tpm_obj *obj;
};

static TSS2_RC readpub_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct readpub_arg *a = p;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR h;
    TSS2_RC rc;

    s->cmd = "reading the persistent key";
    rc = tpm_obj_use(c, a->obj, &h);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "TPM2_ReadPublic";
    rc = Esys_ReadPublic(c->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL, NULL);
    if (rc == TSS2_RC_SUCCESS)
        a->obj->pub = *pub;
    Esys_Free(pub);
    return rc;
}

static kv_rc tpm_open_uri(kv_backend *be, const char *uri, kv_key *key)
{
    kv_ctx *ctx = be->ctx;
    const char *rest = uri + 5;
    char name[KV_NAME_MAX + 1];
    kv_rc rc;

    if (!be->available)
        return kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE, "backend 'tpm' is unavailable: %s",
                        be->why);
    /* below, uri holds no query: messages may show it */
    if (uri[kv_uri_shown_len(uri)])
        return kv_error(ctx, KV_ERR_BAD_URI, "'%.*s...': tpm2: URIs take no query or fragment",
                        (int)kv_uri_shown_len(uri), uri);
    if (!strncmp(rest, "file=", 5))
        return kv_fs_open_at(be, rest + 5, key, open_file);
    if (!strncmp(rest, "handle=", 7)) {
        char *end;
        unsigned long h = strtoul(rest + 7, &end, 0);
        struct tpm_key *tk;
        if (*end || (h >> 24) != 0x81)
            return kv_error(ctx, KV_ERR_BAD_URI,
                            "tpm2:handle= expects a persistent handle, 0x81xxxxxx");
        tk = calloc(1, sizeof(*tk));
        if (!tk)
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        tk->obj.persistent = (TPM2_HANDLE)h;
        tk->obj.handle = ESYS_TR_NONE;
        rc = load_auth(be, &tk->obj.auth);
        if (rc == KV_OK) {
            struct readpub_arg a = { &tk->obj };
            rc = tpm_run(ctx, st(be)->conn, readpub_step, &a);
        }
        if (rc != KV_OK) {
            tpm_obj_release(st(be)->conn, &tk->obj);
            kv_wipe(&tk->obj.auth, sizeof(tk->obj.auth));
            free(tk);
            return rc;
        }
        snprintf(name, sizeof(name), "handle-0x%08lx", h);
        rc = fill_key(be, key, name, tk);
        return rc == KV_OK ? key_policy_bind(be, key, &tk->obj.pub.publicArea) : rc;
    }
    return kv_error(ctx, KV_ERR_BAD_URI,
                    "a tpm2: URI is tpm2:file=/path/NAME.pem or tpm2:handle=0x81xxxxxx");
}

static kv_rc tpm_list(kv_backend *be, kv_list_builder *lb)
{
    return kv_fs_list(be->ctx, &tpm_fs, st(be)->dir, lb);
}

static kv_rc tpm_destroy(kv_backend *be, kv_key *key)
{
    struct tpm_key *tk = key->bk;

    if (!tk->path)
        return kv_error(be->ctx, KV_ERR_UNSUPPORTED,
                        "persistent TPM keys are removed by the TPM owner (tpm2_evictcontrol)");
    /* the wrapped blob is the key: without the file it cannot be loaded again */
    return kv_key_files_remove(be->ctx, tk->path);
}

/* A key at a persistent handle has no file to keep a chain beside. */
static kv_rc no_chain_file(kv_key *key)
{
    if (key->from_data)
        return kv_error(key->ctx, KV_ERR_UNSUPPORTED,
                        "the key was opened from a TSS2 PRIVATE KEY's bytes: certificate chains "
                        "are kept beside key files (NAME.crt), and it has none");
    return kv_error(key->ctx, KV_ERR_UNSUPPORTED,
                    "key '%s' is a persistent TPM key (tpm2:handle=...): certificate chains "
                    "are kept beside key files (NAME.crt), and it has none", key->name);
}

static kv_rc tpm_chain_store(kv_key *key, STACK_OF(X509) *chain)
{
    struct tpm_key *tk = key->bk;

    if (!tk->path)
        return no_chain_file(key);
    return kv_cert_file_store(key->ctx, tk->path, chain);
}

static kv_rc tpm_chain_read(kv_key *key, STACK_OF(X509) **chain)
{
    struct tpm_key *tk = key->bk;

    if (!tk->path)
        return no_chain_file(key);
    return kv_cert_file_read(key->ctx, tk->path, key->name, key->pub, chain);
}

/* ---- sign and ECDH ---------------------------------------------------------- */

struct sign_arg {
    kv_key *key;
    const kv_alg_desc *alg;
    const unsigned char *tbs;
    size_t tbslen;
    TPMT_SIGNATURE *sig;
};

static TPMI_ALG_HASH tpm_hash(const kv_alg_desc *alg)
{
    return alg->mdlen == 64 ? TPM2_ALG_SHA512 : alg->mdlen == 48 ? TPM2_ALG_SHA384
                                                                 : TPM2_ALG_SHA256;
}

static TSS2_RC sign_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct sign_arg *a = p;
    struct tpm_key *tk = a->key->bk;
    TPMT_SIG_SCHEME scheme = { .details.any.hashAlg = tpm_hash(a->alg) };
    TPMT_TK_HASHCHECK check = { .tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL };
    TPM2B_DIGEST digest = { .size = (UINT16)a->tbslen };
    TPMT_SIGNATURE *sig = NULL;
    ESYS_TR h, auth;
    TSS2_RC rc;

    scheme.scheme = a->alg->family == KV_FAMILY_EC     ? TPM2_ALG_ECDSA
                    : a->alg->padding == KV_PAD_PSS    ? TPM2_ALG_RSAPSS
                                                       : TPM2_ALG_RSASSA;
    memcpy(digest.buffer, a->tbs, a->tbslen);
    /* digest and signature are not secret: an empty-auth key signs in a
     * password session, one command without session crypto */
    rc = tpm_auth(c, s, &tk->obj, false, &auth);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "loading the key";
    rc = tpm_obj_use(c, &tk->obj, &h);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "TPM2_Sign";
    rc = Esys_Sign(c->esys, h, auth, ESYS_TR_NONE, ESYS_TR_NONE, &digest, &scheme, &check,
                   &sig);
    if (rc == TSS2_RC_SUCCESS)
        *a->sig = *sig;
    Esys_Free(sig);
    return rc;
}

/*
 * The TPM's signature, checked against the key before it is returned: a
 * response damaged on its way (a password session has no response HMAC to
 * catch it) or a fault in the TPM must not pass for the key's signature.
 * RSA-PSS with any salt length: TPMs differ in the one they use.
 */
static kv_rc check_signature(kv_key *key, const kv_alg_desc *alg, const unsigned char *tbs,
                             size_t tbslen, const unsigned char *sig, size_t siglen)
{
    kv_ctx *ctx = key->ctx;
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(ctx->libctx, key->pub, NULL);
    EVP_MD *md = EVP_MD_fetch(ctx->libctx, alg->md, NULL);
    kv_rc rc = KV_OK;

    if (!pctx || !md || EVP_PKEY_verify_init(pctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(pctx, md) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot check the TPM's %s signature", alg->name);
    if (alg->padding == KV_PAD_PSS &&
        (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot check the TPM's %s signature", alg->name);
    if (alg->padding == KV_PAD_PKCS1 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot check the TPM's %s signature", alg->name);
    if (EVP_PKEY_verify(pctx, sig, siglen, tbs, tbslen) != 1)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND,
                "TPM2_Sign failed: the %s signature the TPM returned does not verify with the "
                "public key of '%s' (a response damaged on its way, or a fault in the TPM); "
                "it is not returned", alg->name, key->name);
out:
    kv_ossl_drop();
    EVP_PKEY_CTX_free(pctx);
    EVP_MD_free(md);
    return rc;
}

static kv_rc tpm_sign(kv_key *key, const kv_alg_desc *alg, const unsigned char *tbs,
                      size_t tbslen, unsigned char *sig, size_t *siglen)
{
    kv_ctx *ctx = key->ctx;
    const kv_type_desc *t = kv_type_desc_get(key->type);
    TPMT_SIGNATURE ts;
    struct sign_arg a = { key, alg, tbs, tbslen, &ts };
    unsigned char raw[2 * TPM2_MAX_ECC_KEY_BYTES], *der = NULL;
    size_t derlen = 0;
    kv_rc rc;

    KV_CHECK(rc, tpm_run(ctx, st(key->be)->conn, sign_step, &a));
    if (alg->family == KV_FAMILY_EC) {
        const TPMS_SIGNATURE_ECC *e = &ts.signature.ecdsa;
        size_t f = t->field_len;
        if (e->signatureR.size > f || e->signatureS.size > f)
            KV_FAIL(ctx, rc, KV_ERR_BACKEND, "TPM2_Sign returned an oversized ECDSA signature");
        /* r and s as fixed-width big-endian numbers, then DER by OpenSSL */
        memset(raw, 0, 2 * f);
        memcpy(raw + f - e->signatureR.size, e->signatureR.buffer, e->signatureR.size);
        memcpy(raw + 2 * f - e->signatureS.size, e->signatureS.buffer, e->signatureS.size);
        KV_CHECK(rc, kv_ecdsa_raw_to_der(ctx, raw, 2 * f, &der, &derlen));
        KV_CHECK(rc, check_signature(key, alg, tbs, tbslen, der, derlen));
        memcpy(sig, der, derlen);
        *siglen = derlen;
    } else {
        const TPM2B_PUBLIC_KEY_RSA *r = &ts.signature.rsassa.sig;
        if (r->size > *siglen)
            KV_FAIL(ctx, rc, KV_ERR_BACKEND, "TPM2_Sign returned an oversized RSA signature");
        KV_CHECK(rc, check_signature(key, alg, tbs, tbslen, r->buffer, r->size));
        memcpy(sig, r->buffer, r->size);
        *siglen = r->size;
    }
out:
    OPENSSL_free(der);
    return rc;
}

struct ecdh_arg {
    kv_key *key;
    TPM2B_ECC_POINT in;
    TPM2B_ECC_POINT out;
};

static TSS2_RC ecdh_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct ecdh_arg *a = p;
    struct tpm_key *tk = a->key->bk;
    TPM2B_ECC_POINT *z = NULL;
    ESYS_TR h, auth;
    TSS2_RC rc;

    /* the shared secret comes back over the bus: response encryption */
    rc = tpm_auth(c, s, &tk->obj, true, &auth);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "loading the key";
    rc = tpm_obj_use(c, &tk->obj, &h);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "TPM2_ECDH_ZGen";
    rc = Esys_ECDH_ZGen(c->esys, h, auth, ESYS_TR_NONE, ESYS_TR_NONE, &a->in, &z);
    if (rc == TSS2_RC_SUCCESS)
        a->out = *z;
    if (z) {
        kv_wipe(z, sizeof(*z));
        Esys_Free(z);
    }
    tpm_wipe_response(c);
    return rc;
}

static kv_rc tpm_ecdh(kv_key *key, EVP_PKEY *peer, unsigned char *secret, size_t *len)
{
    kv_ctx *ctx = key->ctx;
    size_t f = kv_type_desc_get(key->type)->field_len;
    struct ecdh_arg a = { .key = key };
    BIGNUM *x = NULL, *y = NULL;
    kv_rc rc;

    /* the peer was validated by the core; the TPM takes its coordinates */
    if (EVP_PKEY_get_bn_param(peer, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
        EVP_PKEY_get_bn_param(peer, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
        BN_bn2binpad(x, a.in.point.x.buffer, (int)f) < 0 ||
        BN_bn2binpad(y, a.in.point.y.buffer, (int)f) < 0)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot read the peer point");
    a.in.point.x.size = a.in.point.y.size = (UINT16)f;
    KV_CHECK(rc, tpm_run(ctx, st(key->be)->conn, ecdh_step, &a));
    if (a.out.point.x.size > f)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND, "TPM2_ECDH_ZGen returned an oversized point");
    memset(secret, 0, f - a.out.point.x.size);
    memcpy(secret + f - a.out.point.x.size, a.out.point.x.buffer, a.out.point.x.size);
    *len = f;
out:
    kv_wipe(&a.out, sizeof(a.out));
    BN_free(x);
    BN_free(y);
    return rc;
}

static kv_rc tpm_stat(kv_backend *be, const char *name, uint64_t *value)
{
    struct tpm_conn *c = st(be)->conn;

    if (!c)
        return kv_error(be->ctx, KV_ERR_BACKEND_UNAVAILABLE, "backend 'tpm' is unavailable: %s",
                        be->why);
    if (!strcmp(name, "commands"))
        *value = __atomic_load_n(&c->commands, __ATOMIC_RELAXED);
    else if (!strcmp(name, "session_commands"))
        *value = __atomic_load_n(&c->session_commands, __ATOMIC_RELAXED);
    else
        return kv_error(be->ctx, KV_ERR_UNSUPPORTED,
                        "the TPM backend counts 'commands' and 'session_commands' only");
    return KV_OK;
}

/* The keys of [tpm] (keyvault.conf(5)). */
static const struct kv_config_key tpm_config_keys[] = {
    { "tcti", 0 },
    { "keys", 0 },
    { "parent", 0 },
    { "auth", KV_CFG_SECRET },
    { "sessions", 0 },
    { NULL, 0 },
};

const struct kv_backend_ops kv_tpm_ops = {
    .name = "tpm",
    .uri_scheme = "tpm2",
    .assurance = KV_ASSURANCE_TPM,
    .config_keys = tpm_config_keys,
    .caps = KV_CAP_ATTEST,
    .init = tpm_init,
    .fini = tpm_fini,
    .generate = tpm_generate,
    .generate_uri = tpm_generate_uri,
    .can_hold = tpm_can_hold,
    .open_name = tpm_open_name,
    .open_uri = tpm_open_uri,
    .exists = tpm_exists,
    .list = tpm_list,
    .destroy = tpm_destroy,
    .key_free = tpm_key_free,
    .sign = tpm_sign,
    .ecdh = tpm_ecdh,
    .chain_store = tpm_chain_store,
    .chain_read = tpm_chain_read,
    .ak_public = tpm_ak_public,
    .quote = tpm_quote,
    .certify = tpm_certify,
    .pcr_read = tpm_pcr_read,
    .pcr_extend = tpm_pcr_extend,
    .ek_cert = tpm_ek_cert,
    .activate = tpm_activate,
    .ek_certs = tpm_ek_certs,
    .stat = tpm_stat,
    .open_data = tpm_open_data,
    .key_public_area = tpm_key_public_area,
    .ak_public_area = tpm_ak_public_area,
    .ak_chain_store = tpm_ak_chain_store,
    .ak_chain_read = tpm_ak_chain_read,
    .quote_pcrs = tpm_quote_pcrs,
};
