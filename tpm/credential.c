/*
 * credential.c - the device's half of AK enrollment: the AK's public area
 * for the enrollment request, and TPM2_ActivateCredential with the EK made
 * from the TCG's standard template under the endorsement hierarchy (TCG EK
 * Credential Profile 2.0, templates L-1 RSA-2048 and L-2 ECC P-256). The EK
 * must be the key of the TPM's EK certificate: compared before use, flushed
 * after.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "tpm.h"

/* PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the EK templates' policy */
static const TPM2B_DIGEST ek_policy = {
    .size = 32,
    .buffer = { 0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc,
                0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52,
                0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa },
};

#define EK_ATTRS (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | \
                  TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY | \
                  TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT)

/* The EK template for the key type of the EK certificate. */
static kv_rc ek_template(const kv_ctx *ctx, const EVP_PKEY *cert_key, TPM2B_PUBLIC *t)
{
    TPMT_PUBLIC *p = &t->publicArea;
    kv_key_type type = kv_type_of_pkey(cert_key);

    memset(t, 0, sizeof(*t));
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = EK_ATTRS;
    p->authPolicy = ek_policy;
    if (type == KV_KEY_RSA_2048) {
        /* L-1: RSA-2048, AES-128-CFB, unique = 256 zero bytes */
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_AES;
        p->parameters.rsaDetail.symmetric.keyBits.aes = 128;
        p->parameters.rsaDetail.symmetric.mode.aes = TPM2_ALG_CFB;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = 2048;
        p->unique.rsa.size = 256;
    } else if (type == KV_KEY_EC_P256) {
        /* L-2: ECC P-256, AES-128-CFB, unique = two 32-byte zero coordinates */
        p->type = TPM2_ALG_ECC;
        p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
        p->parameters.eccDetail.symmetric.keyBits.aes = 128;
        p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        p->unique.ecc.x.size = 32;
        p->unique.ecc.y.size = 32;
    } else {
        return kv_error(ctx, KV_ERR_UNSUPPORTED,
                        "the EK certificate holds a %s key: enrollment takes an RSA-2048 (TCG "
                        "template L-1) or ECC P-256 (L-2) EK", kv_key_type_name(type));
    }
    return KV_OK;
}

struct activate_arg {
    struct tpm_key *ak;
    const TPM2B_PUBLIC *tmpl;
    const EVP_PKEY *cert_key;
    TPM2B_ID_OBJECT id;
    TPM2B_ENCRYPTED_SECRET secret;
    TPM2B_DIGEST *cred;
    bool ek_mismatch;
    const kv_ctx *ctx;
};

static TSS2_RC activate_step(struct tpm_conn *c, struct step *s, void *p)
{
    static const TPM2B_SENSITIVE_CREATE no_sensitive = { 0 };
    static const TPM2B_DATA no_outside = { 0 };
    static const TPML_PCR_SELECTION no_pcrs = { 0 };
    static const TPMT_SYM_DEF no_sym = { .algorithm = TPM2_ALG_NULL };
    struct activate_arg *a = p;
    ESYS_TR ek = ESYS_TR_NONE, policy = ESYS_TR_NONE, ak, auth;
    TPM2B_PUBLIC *ek_pub = NULL;
    EVP_PKEY *made = NULL;
    TSS2_RC rc;

    /* the credential comes back: the AK's authorisation in the salted
     * session, encrypting the response */
    rc = tpm_auth(c, s, &a->ak->obj, true, &auth);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "loading the attestation key";
    rc = tpm_obj_use(c, &a->ak->obj, &ak);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    a->ak->obj.pinned = true;
    s->cmd = "TPM2_CreatePrimary (endorsement key, TCG template)";
    do /* the EK needs an object slot beside the AK and its parent */
        rc = Esys_CreatePrimary(c->esys, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                ESYS_TR_NONE, &no_sensitive, a->tmpl, &no_outside, &no_pcrs, &ek,
                                &ek_pub, NULL, NULL, NULL);
    while (tpm_make_room(c, rc, &a->ak->obj));
    if (rc != TSS2_RC_SUCCESS)
        goto out;
    /* the credential is for the certified EK only: compare before use */
    if (tpm_public_to_pkey(NULL, &ek_pub->publicArea, &made) != KV_OK ||
        EVP_PKEY_eq(made, a->cert_key) != 1) {
        a->ek_mismatch = true;
        goto out;
    }
    s->cmd = "TPM2_StartAuthSession (policy, for the EK)";
    rc = Esys_StartAuthSession(c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                               ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &no_sym, TPM2_ALG_SHA256,
                               &policy);
    if (rc != TSS2_RC_SUCCESS) {
        policy = ESYS_TR_NONE;
        goto out;
    }
    rc = Esys_TRSess_SetAttributes(c->esys, policy, TPMA_SESSION_CONTINUESESSION, 0xff);
    if (rc != TSS2_RC_SUCCESS)
        goto out;
    s->cmd = "TPM2_PolicySecret (TPM_RH_ENDORSEMENT)";
    rc = Esys_PolicySecret(c->esys, ESYS_TR_RH_ENDORSEMENT, policy, ESYS_TR_PASSWORD,
                           ESYS_TR_NONE, ESYS_TR_NONE, NULL, NULL, NULL, 0, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS)
        goto out;
    s->cmd = "TPM2_ActivateCredential";
    rc = Esys_ActivateCredential(c->esys, ak, ek, auth, policy, ESYS_TR_NONE, &a->id,
                                 &a->secret, &a->cred);
    /* the credential came back decrypted into the response buffer and ESYS's
     * stack: wipe them now, before the flushes below reuse the buffer's
     * start and leave the rest of it */
    tpm_wipe_response(c);
out:
    a->ak->obj.pinned = false;
    if (policy != ESYS_TR_NONE)
        (void)Esys_FlushContext(c->esys, policy);
    if (ek != ESYS_TR_NONE)
        (void)Esys_FlushContext(c->esys, ek);
    Esys_Free(ek_pub);
    EVP_PKEY_free(made);
    return rc;
}

kv_rc tpm_activate(kv_backend *be, const unsigned char *ek_cert, size_t ek_len,
                   const unsigned char *id_object, size_t id_len,
                   const unsigned char *enc_secret, size_t secret_len, unsigned char *out,
                   size_t *len)
{
    kv_ctx *ctx = be->ctx;
    struct activate_arg a = { .ctx = ctx };
    TPM2B_PUBLIC tmpl;
    unsigned char *der = NULL;
    const unsigned char *p;
    size_t derlen = 0, off = 0;
    X509 *cert = NULL;
    EVP_PKEY *cert_key;
    kv_rc rc;

    if (Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(id_object, id_len, &off, &a.id) != TSS2_RC_SUCCESS ||
        off != id_len)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "the credential blob is not one marshalled TPM2B_ID_OBJECT");
    off = 0;
    if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(enc_secret, secret_len, &off, &a.secret) !=
            TSS2_RC_SUCCESS ||
        off != secret_len)
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "the encrypted seed is not one marshalled TPM2B_ENCRYPTED_SECRET");
    /* the EK the caller names (its certificate, one of this TPM's: the
     * template's key is compared with it), or the first the TPM holds */
    if (ek_cert) {
        p = ek_cert;
        derlen = ek_len;
    } else {
        KV_CHECK(rc, tpm_ek_cert(be, &der, &derlen));
        p = der;
    }
    if (!(cert = d2i_X509(NULL, &p, (long)derlen)) || !(cert_key = X509_get0_pubkey(cert)))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CORRUPT, "the EK certificate does not decode");
    KV_CHECK(rc, ek_template(ctx, cert_key, &tmpl));
    a.tmpl = &tmpl;
    a.cert_key = cert_key;
    KV_CHECK(rc, tpm_ak_get(be, &a.ak));
    KV_CHECK(rc, tpm_run(ctx, ((struct tpm_state *)be->state)->conn, activate_step, &a));
    if (a.ek_mismatch)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "the EK made from the TCG template is not the key of the TPM's EK "
                "certificate: refusing to activate a credential with it");
    if (!a.cred || a.cred->size == 0)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND, "TPM2_ActivateCredential returned no credential");
    if (*len < a.cred->size) {
        rc = kv_error(ctx, KV_ERR_BUFFER_TOO_SMALL, "the credential is %u bytes, the buffer %zu",
                      a.cred->size, *len);
        *len = a.cred->size;
        goto out;
    }
    memcpy(out, a.cred->buffer, a.cred->size);
    *len = a.cred->size;
out:
    if (a.cred) {
        OPENSSL_cleanse(a.cred, sizeof(*a.cred));
        Esys_Free(a.cred);
    }
    X509_free(cert);
    OPENSSL_free(der);
    return rc;
}
