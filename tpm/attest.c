/*
 * attest.c - the TPM's attestation primitives: the attestation key (AK),
 * TPM2_Quote over PCRs, TPM2_Certify of a key, PCR read and extend, and the
 * EK certificate from its NV index. The evidence is the TPM's own bytes
 * (TPMS_ATTEST, TPMT_SIGNATURE) plus the signature as DER for OpenSSL.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "tpm.h"

#define AK_FILE ".attestation-key.pem" /* not a key name: never listed */

/* A restricted ECC P-256 signing key: it signs only what the TPM made
 * (quotes, certifications), never outside data, with ECDSA and SHA-256. */
static const TPM2B_PUBLIC ak_template = {
    .publicArea = {
        .type = TPM2_ALG_ECC,
        .nameAlg = TPM2_ALG_SHA256,
        .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                            TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                            TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT | TPMA_OBJECT_NODA,
        .parameters.eccDetail = {
            .symmetric = { .algorithm = TPM2_ALG_NULL },
            .scheme = { .scheme = TPM2_ALG_ECDSA, .details.ecdsa.hashAlg = TPM2_ALG_SHA256 },
            .curveID = TPM2_ECC_NIST_P256,
            .kdf = { .scheme = TPM2_ALG_NULL },
        },
    },
};

static struct tpm_state *st(kv_backend *be)
{
    return be->state;
}

void tpm_ak_free(struct tpm_state *s)
{
    if (!s->ak)
        return;
    tpm_obj_release(s->conn, &s->ak->obj);
    free(s->ak->path);
    free(s->ak);
    s->ak = NULL;
}

/* The AK: loaded from its file, or made and saved on first use. */
kv_rc tpm_ak_get(kv_backend *be, struct tpm_key **out)
{
    kv_ctx *ctx = be->ctx;
    struct tpm_state *s = st(be);
    struct tpm_key *ak = NULL;
    TPM2B_PUBLIC made_pub;
    TPM2B_PRIVATE made_priv;
    struct tpm_create_arg made = { &ak_template, NULL, &made_pub, &made_priv,
                                   "TPM2_Create (attestation key)" };
    char *path = NULL, *text = NULL, *pem = NULL;
    size_t len = 0, pemlen = 0;
    TPM2_HANDLE parent = 0;
    bool empty = true;
    kv_rc rc;

    /* ak_lock only guards s->ak: the AK is read or made without it (a TPM
     * command and a file write, which a fork in another thread must not
     * find a lock held across); two threads making one at once both make
     * it, the file's KV_ERR_KEY_EXISTS gives the second the first's, and
     * the first to publish wins */
    (void)kv_mutex_lock(&s->ak_lock); /* one pointer: never torn */
    *out = s->ak;
    kv_mutex_unlock(&s->ak_lock);
    if (*out)
        return KV_OK;
    path = kv_asprintf("%s/%s", s->dir, AK_FILE);
    ak = calloc(1, sizeof(*ak));
    if (!path || !ak)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    /* the AK file is a store file: no link, the directory private */
    KV_CHECK(rc, kv_fs_prepare(ctx, s->dir));
    kv_err_mark mark = kv_err_mark_get(ctx);
    rc = kv_read_file_ex(ctx, path, 16 * 1024, KV_READ_STORE, &text, &len);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_rewind(ctx, mark); /* none yet: make one */
        KV_CHECK(rc, tpm_run(ctx, s->conn, tpm_create_step, &made));
        KV_CHECK(rc, tpm_key_write(ctx, &made_pub, &made_priv, s->parent, true, &pem, &pemlen));
        rc = kv_write_file_atomic(ctx, s->dir, AK_FILE, pem, pemlen, false);
        if (rc == KV_ERR_KEY_EXISTS) {
            /* another process made one first: use theirs */
            kv_err_rewind(ctx, mark);
            rc = kv_read_file_ex(ctx, path, 16 * 1024, KV_READ_STORE, &text, &len);
        } else if (rc == KV_OK) {
            ak->obj.pub = made_pub;
            ak->obj.priv = made_priv;
        }
    }
    if (rc != KV_OK)
        goto out;
    if (text) {
        const TPMT_PUBLIC *p = &ak->obj.pub.publicArea, *t = &ak_template.publicArea;

        KV_CHECK(rc, tpm_key_read(ctx, text, len, path, &ak->obj.pub, &ak->obj.priv, &parent,
                                  &empty));
        /* evidence is checked against this key: it must be a restricted
         * signing key that never left this TPM, as made here, or any data
         * it signed could pass for a quote */
        if (p->type != t->type || p->objectAttributes != t->objectAttributes ||
            p->parameters.eccDetail.curveID != t->parameters.eccDetail.curveID ||
            p->parameters.eccDetail.scheme.scheme != t->parameters.eccDetail.scheme.scheme ||
            parent != s->parent || !empty)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "attestation key file '%s' does not hold a restricted ECDSA P-256 signing "
                    "key fixed to this TPM under this parent, as libkeyvault makes one; "
                    "refusing it", path);
    }
    ak->obj.handle = ESYS_TR_NONE;
    ak->obj.parent = &s->conn->srk;
    ak->path = path;
    path = NULL;
    (void)kv_mutex_lock(&s->ak_lock);
    if (!s->ak) {
        s->ak = ak;
        ak = NULL;
    }
    *out = s->ak;
    kv_mutex_unlock(&s->ak_lock);
out:
    if (ak)
        free(ak->path);
    free(ak);
    free(path);
    free(text);
    free(pem);
    return rc;
}

kv_rc tpm_ak_public(kv_backend *be, EVP_PKEY **pub)
{
    struct tpm_key *ak;
    kv_rc rc = tpm_ak_get(be, &ak);

    if (rc != KV_OK)
        return rc;
    return tpm_public_to_pkey(be->ctx, &ak->obj.pub.publicArea, pub);
}

static TPMI_ALG_HASH bank_alg(const char *bank, size_t len, size_t *mdlen)
{
    static const struct { const char *name; TPMI_ALG_HASH alg; size_t mdlen; } banks[] = {
        { "sha1", TPM2_ALG_SHA1, 20 },
        { "sha256", TPM2_ALG_SHA256, 32 },
        { "sha384", TPM2_ALG_SHA384, 48 },
        { "sha512", TPM2_ALG_SHA512, 64 },
    };
    for (size_t i = 0; i < sizeof(banks) / sizeof(banks[0]); i++)
        if (strlen(banks[i].name) == len && !strncmp(banks[i].name, bank, len)) {
            if (mdlen)
                *mdlen = banks[i].mdlen;
            return banks[i].alg;
        }
    return TPM2_ALG_ERROR;
}

/* "sha256:0-7", "sha256:0,1,7", "sha1:0-3+sha256:0-7" */
static kv_rc parse_pcrs(const kv_ctx *ctx, const char *text, TPML_PCR_SELECTION *sel)
{
    const char *p = text;

    memset(sel, 0, sizeof(*sel));
    while (*p) {
        const char *colon = strchr(p, ':');
        TPMS_PCR_SELECTION *s;
        if (!colon || sel->count == TPM2_NUM_PCR_BANKS)
            goto bad;
        s = &sel->pcrSelections[sel->count++];
        s->hash = bank_alg(p, (size_t)(colon - p), NULL);
        if (s->hash == TPM2_ALG_ERROR)
            return kv_error(ctx, KV_ERR_INVALID_ARG, "PCR selection '%s': unknown bank '%.*s'",
                            text, (int)(colon - p), p);
        s->sizeofSelect = 3;
        p = colon + 1;
        for (;;) {
            char *end;
            unsigned long lo = strtoul(p, &end, 10), hi = lo;
            if (end == p)
                goto bad;
            if (*end == '-') {
                p = end + 1;
                hi = strtoul(p, &end, 10);
                if (end == p)
                    goto bad;
            }
            if (lo > hi || hi > 23)
                goto bad;
            for (unsigned long i = lo; i <= hi; i++)
                s->pcrSelect[i / 8] |= (BYTE)(1u << (i % 8));
            p = end;
            if (*p != ',')
                break;
            p++;
        }
        if (*p == '+')
            p++;
        else if (*p)
            goto bad;
    }
    if (sel->count == 0)
        goto bad;
    return KV_OK;
bad:
    return kv_error(ctx, KV_ERR_INVALID_ARG,
                    "PCR selection '%s': expected BANK:LIST[+BANK:LIST], e.g. sha256:0-7", text);
}

/* Whether der is the AK's ECDSA signature (SHA-256) over attest: checked
 * before evidence is returned, so that a response damaged on its way (no
 * response HMAC in a password session) or a fault in the TPM does not
 * come back as evidence no verifier accepts. */
static kv_rc check_evidence(const kv_ctx *ctx, const TPMT_PUBLIC *ak, const char *cmd,
                            const TPM2B_ATTEST *attest, const unsigned char *der, size_t derlen)
{
    EVP_PKEY *pub = NULL;
    EVP_MD_CTX *md = NULL;
    kv_rc rc;

    KV_CHECK(rc, tpm_public_to_pkey(ctx, ak, &pub));
    md = EVP_MD_CTX_new();
    if (!md || EVP_DigestVerifyInit_ex(md, NULL, "SHA256", ctx ? ctx->libctx : NULL, NULL, pub,
                                       NULL) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot check the AK's signature");
    if (EVP_DigestVerify(md, der, derlen, attest->attestationData, attest->size) != 1)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND,
                "%s failed: the attestation key's signature over what the TPM returned does "
                "not verify (a response damaged on its way, or a fault in the TPM); it is "
                "not returned", cmd);
out:
    kv_ossl_drop();
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pub);
    return rc;
}

/* Copy TPM evidence (from cmd, signed by ak) into the caller's kv_attestation. */
static kv_rc fill_evidence(const kv_ctx *ctx, const TPMT_PUBLIC *ak, const char *cmd,
                           const TPM2B_ATTEST *attest, const TPMT_SIGNATURE *sig,
                           kv_attestation *out)
{
    uint8_t buf[sizeof(TPMT_SIGNATURE)], raw[64];
    size_t off = 0, derlen = 0;
    unsigned char *der = NULL;
    const TPMS_SIGNATURE_ECC *e = &sig->signature.ecdsa;
    kv_rc rc;

    if (Tss2_MU_TPMT_SIGNATURE_Marshal(sig, buf, sizeof(buf), &off))
        return kv_error(ctx, KV_ERR_BACKEND, "cannot marshal the TPM signature");
    if (e->signatureR.size > 32 || e->signatureS.size > 32)
        return kv_error(ctx, KV_ERR_BACKEND, "the AK signature is not a P-256 ECDSA signature");
    memset(raw, 0, sizeof(raw));
    memcpy(raw + 32 - e->signatureR.size, e->signatureR.buffer, e->signatureR.size);
    memcpy(raw + 64 - e->signatureS.size, e->signatureS.buffer, e->signatureS.size);
    rc = kv_ecdsa_raw_to_der(ctx, raw, 64, &der, &derlen);
    if (rc == KV_OK)
        rc = check_evidence(ctx, ak, cmd, attest, der, derlen);
    if (rc != KV_OK) {
        OPENSSL_free(der);
        return rc;
    }
    out->attest = OPENSSL_memdup(attest->attestationData, attest->size);
    out->attest_len = attest->size;
    out->signature = OPENSSL_memdup(buf, off);
    out->signature_len = off;
    out->signature_der = der;
    out->signature_der_len = derlen;
    if (!out->attest || !out->signature)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    return KV_OK;
}

struct quote_arg {
    struct tpm_key *ak;
    struct tpm_key *key;      /* certify: the key certified */
    TPM2B_DATA nonce;
    TPML_PCR_SELECTION sel;
    TPM2B_ATTEST *attest;
    TPMT_SIGNATURE *sig;
};

static TSS2_RC quote_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct quote_arg *a = p;
    TPMT_SIG_SCHEME scheme = { .scheme = TPM2_ALG_NULL };
    ESYS_TR ak, auth;
    TSS2_RC rc;

    /* the nonce, the PCR selection and the quote are not secret */
    rc = tpm_auth(c, s, &a->ak->obj, false, &auth);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "loading the attestation key";
    rc = tpm_obj_use(c, &a->ak->obj, &ak);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "TPM2_Quote";
    return Esys_Quote(c->esys, ak, auth, ESYS_TR_NONE, ESYS_TR_NONE, &a->nonce, &scheme,
                      &a->sel, &a->attest, &a->sig);
}

static kv_rc copy_nonce(const kv_ctx *ctx, TPM2B_DATA *d, const unsigned char *nonce, size_t len)
{
    if (len > sizeof(d->buffer))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "nonce longer than %zu bytes", sizeof(d->buffer));
    d->size = (UINT16)len;
    memcpy(d->buffer, nonce, len);
    return KV_OK;
}

kv_rc tpm_quote(kv_backend *be, const char *pcrs, const unsigned char *nonce, size_t len,
                kv_attestation *out)
{
    return tpm_quote_pcrs(be, pcrs, nonce, len, out, NULL);
}

static TSS2_RC certify_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct quote_arg *a = p;
    TPMT_SIG_SCHEME scheme = { .scheme = TPM2_ALG_NULL };
    ESYS_TR ak, key, auth;
    TSS2_RC rc;

    /* the key's authorisation: in the session when it has an auth value */
    rc = tpm_auth(c, s, &a->key->obj, false, &auth);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    /* both must be loaded at once: pin the key while the AK loads */
    s->cmd = "loading the key";
    rc = tpm_obj_use(c, &a->key->obj, &key);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    a->key->obj.pinned = true;
    s->cmd = "loading the attestation key";
    rc = tpm_obj_use(c, &a->ak->obj, &ak);
    a->key->obj.pinned = false;
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = "TPM2_Certify";
    /* the AK's authorisation by (empty) password */
    return Esys_Certify(c->esys, key, ak, auth, ESYS_TR_PASSWORD, ESYS_TR_NONE, &a->nonce,
                        &scheme, &a->attest, &a->sig);
}

kv_rc tpm_certify(kv_key *key, const unsigned char *nonce, size_t len, kv_attestation *out)
{
    kv_ctx *ctx = key->ctx;
    struct quote_arg a = { 0 };
    kv_rc rc;

    a.key = key->bk;
    if (a.key->obj.persistent)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "certifying keys at persistent handles is not "
                        "offered; certify a key file");
    KV_CHECK(rc, copy_nonce(ctx, &a.nonce, nonce, len));
    KV_CHECK(rc, tpm_ak_get(key->be, &a.ak));
    KV_CHECK(rc, tpm_run(ctx, st(key->be)->conn, certify_step, &a));
    rc = fill_evidence(ctx, &a.ak->obj.pub.publicArea, "TPM2_Certify", a.attest, a.sig, out);
out:
    Esys_Free(a.attest);
    Esys_Free(a.sig);
    return rc;
}

struct pcr_arg {
    TPML_PCR_SELECTION sel;
    TPML_DIGEST *values;
    unsigned index;
    TPML_DIGEST_VALUES digests;
    /* extend: the PCR before the first attempt, and whether the extension
     * was sent (its response perhaps lost); the bank's digest */
    kv_ctx *ctx;
    const char *bank;
    TPM2B_DIGEST before;
    bool sent;
    EVP_MD *md;
};

/*
 * TPM2_PCR_Read in the connection's salted session, used for audit: the
 * command has no handle to authorize and no sized parameter to encrypt,
 * so the session's encrypt and decrypt are off for it, and audit on. The
 * response then carries the TPM's HMAC, which tss2-esys checks: a response
 * damaged on its way (or forged on the bus) fails instead of coming back
 * as a PCR value, as it could without a session.
 */
static TSS2_RC pcr_read_checked(struct tpm_conn *c, struct step *s, const char *cmd,
                                const TPML_PCR_SELECTION *sel, UINT32 *update,
                                TPML_PCR_SELECTION **got, TPML_DIGEST **values)
{
    TPMA_SESSION old = 0;
    ESYS_TR sess;
    TSS2_RC rc = tpm_auth(c, s, NULL, true, &sess);

    if (rc != TSS2_RC_SUCCESS)
        return rc;
    s->cmd = cmd;
    rc = Esys_TRSess_GetAttributes(c->esys, sess, &old);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = Esys_TRSess_SetAttributes(c->esys, sess,
                                   TPMA_SESSION_CONTINUESESSION | TPMA_SESSION_AUDIT, 0xff);
    if (rc == TSS2_RC_SUCCESS)
        rc = Esys_PCR_Read(c->esys, sess, ESYS_TR_NONE, ESYS_TR_NONE, sel, update, got, values);
    (void)Esys_TRSess_SetAttributes(c->esys, sess, old, 0xff);
    return rc;
}

static TSS2_RC pcr_read_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct pcr_arg *a = p;

    Esys_Free(a->values); /* a second run (tpm_run reconnected) */
    a->values = NULL;
    return pcr_read_checked(c, s, "TPM2_PCR_Read", &a->sel, NULL, NULL, &a->values);
}

kv_rc tpm_pcr_read(kv_backend *be, const char *bank, unsigned index, unsigned char *digest,
                   size_t *len)
{
    kv_ctx *ctx = be->ctx;
    struct pcr_arg a = { 0 };
    size_t mdlen = 0;
    kv_rc rc;

    a.sel.count = 1;
    a.sel.pcrSelections[0].hash = bank_alg(bank, strlen(bank), &mdlen);
    if (a.sel.pcrSelections[0].hash == TPM2_ALG_ERROR)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown PCR bank '%s'", bank);
    a.sel.pcrSelections[0].sizeofSelect = 3;
    a.sel.pcrSelections[0].pcrSelect[index / 8] = (BYTE)(1u << (index % 8));
    if (*len < mdlen) {
        rc = kv_error(ctx, KV_ERR_BUFFER_TOO_SMALL, "a %s PCR needs %zu bytes, buffer has %zu",
                      bank, mdlen, *len);
        *len = mdlen;
        return rc;
    }
    KV_CHECK(rc, tpm_run(ctx, st(be)->conn, pcr_read_step, &a));
    if (!a.values || a.values->count != 1 || a.values->digests[0].size != mdlen)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "the TPM has no active %s bank for PCR %u", bank,
                index);
    memcpy(digest, a.values->digests[0].buffer, mdlen);
    *len = mdlen;
out:
    Esys_Free(a.values);
    return rc;
}

/* Whether PCR value v is before extended by the measurement in a. */
static bool extended_once(const struct pcr_arg *a, const TPM2B_DIGEST *v)
{
    unsigned char buf[2 * sizeof(a->before.buffer)], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t n = a->before.size;

    if (2 * n > sizeof(buf))
        return false;
    memcpy(buf, a->before.buffer, n);
    memcpy(buf + n, &a->digests.digests[0].digest, n);
    return EVP_Digest(buf, 2 * n, md, &mdlen, a->md, NULL) == 1 && mdlen == v->size &&
           !memcmp(md, v->buffer, mdlen);
}

/*
 * TPM2_PCR_Extend is not idempotent. When its response is lost the TPM
 * may or may not have extended, and tpm_run's second attempt must not
 * extend twice: the PCR is read before the first attempt, and again before
 * the second, which extends only when the PCR is still as it was (and
 * succeeds without a command when it holds the measurement once).
 */
static TSS2_RC pcr_extend_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct pcr_arg *a = p;
    TPML_DIGEST *v = NULL;
    bool done = false;
    TSS2_RC rc;

    rc = pcr_read_checked(c, s, "TPM2_PCR_Read (before TPM2_PCR_Extend)", &a->sel, NULL, NULL,
                          &v);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    if (!v || v->count != 1 || (int)v->digests[0].size != EVP_MD_get_size(a->md)) {
        s->rc = kv_error(a->ctx, KV_ERR_UNSUPPORTED, "the TPM has no active %s bank for PCR %u",
                         a->bank, a->index);
        done = true;
    } else if (!a->sent) {
        a->before = v->digests[0];
    } else if (extended_once(a, &v->digests[0])) {
        done = true; /* the lost response's extension took place */
    } else if (v->digests[0].size != a->before.size ||
               memcmp(v->digests[0].buffer, a->before.buffer, a->before.size)) {
        s->rc = kv_error(a->ctx, KV_ERR_BACKEND,
                         "TPM2_PCR_Extend failed: its response was lost, and PCR %u has "
                         "since changed otherwise than by this measurement (another "
                         "extension meanwhile); not extended again", a->index);
        done = true;
    }
    Esys_Free(v);
    if (done)
        return TSS2_RC_SUCCESS;
    a->sent = true;
    s->cmd = "TPM2_PCR_Extend";
    return Esys_PCR_Extend(c->esys, ESYS_TR_PCR0 + a->index, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, &a->digests);
}

kv_rc tpm_pcr_extend(kv_backend *be, const char *bank, unsigned index,
                     const unsigned char *digest, size_t len)
{
    kv_ctx *ctx = be->ctx;
    struct pcr_arg a = { .index = index, .ctx = ctx, .bank = bank };
    size_t mdlen = 0;
    kv_rc rc;

    a.digests.count = 1;
    a.digests.digests[0].hashAlg = bank_alg(bank, strlen(bank), &mdlen);
    if (a.digests.digests[0].hashAlg == TPM2_ALG_ERROR)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown PCR bank '%s'", bank);
    if (len != mdlen)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "a %s measurement is %zu bytes, not %zu", bank,
                        mdlen, len);
    memcpy(&a.digests.digests[0].digest, digest, len);
    a.sel.count = 1;
    a.sel.pcrSelections[0].hash = a.digests.digests[0].hashAlg;
    a.sel.pcrSelections[0].sizeofSelect = 3;
    a.sel.pcrSelections[0].pcrSelect[index / 8] = (BYTE)(1u << (index % 8));
    a.md = EVP_MD_fetch(ctx->libctx, bank, NULL);
    if (!a.md)
        return kv_error_ossl(ctx, KV_ERR_CRYPTO, "the %s digest is not available", bank);
    rc = tpm_run(ctx, st(be)->conn, pcr_extend_step, &a);
    EVP_MD_free(a.md);
    return rc;
}

/* An EK certificate is about 1.5 KiB; an NV index claiming more than this
 * is refused before anything is allocated or read. */
#define EK_CERT_MAX 16384

struct ek_arg {
    kv_ctx *ctx;
    TPM2_HANDLE index;
    unsigned char *data;
    size_t len;
    bool absent;
};

static TSS2_RC ek_read_in(struct tpm_conn *c, struct step *s, struct ek_arg *a, ESYS_TR sess);

static TSS2_RC ek_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct ek_arg *a = p;
    ESYS_TR sess;
    TSS2_RC rc;

    /* read in the salted session, its response HMAC checked: a response
     * damaged on its way (a password read has no HMAC) must not pass for
     * the certificate. Response encryption only: NV_ReadPublic and NV_Read
     * have no command parameter to decrypt. */
    rc = tpm_auth(c, s, NULL, true, &sess);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = Esys_TRSess_SetAttributes(c->esys, sess, 0, TPMA_SESSION_DECRYPT);
    if (rc != TSS2_RC_SUCCESS)
        return rc;
    rc = ek_read_in(c, s, a, sess);
    (void)Esys_TRSess_SetAttributes(c->esys, sess, TPMA_SESSION_DECRYPT, TPMA_SESSION_DECRYPT);
    return rc;
}

static TSS2_RC ek_read_in(struct tpm_conn *c, struct step *s, struct ek_arg *a, ESYS_TR sess)
{
    TPM2B_NV_PUBLIC *pub = NULL;
    ESYS_TR nv = ESYS_TR_NONE;
    TSS2_RC rc;

    /* a second run (tpm_run reconnected) starts afresh */
    OPENSSL_free(a->data);
    a->data = NULL;
    a->len = 0;
    a->absent = false;
    s->cmd = "looking up the EK certificate NV index";
    rc = Esys_TR_FromTPMPublic(c->esys, a->index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv);
    if (rc != TSS2_RC_SUCCESS) {
        /* absent when the TPM says there is no such index (TPM_RC_HANDLE);
         * anything else - a lost connection, a damaged response, a TPM
         * failure - is the failure, not the answer "no certificate" */
        if ((rc & TSS2_RC_LAYER_MASK) != TSS2_TPM_RC_LAYER || !(rc & TPM2_RC_FMT1) ||
            (rc & (TPM2_RC_FMT1 | 0x3f)) != TPM2_RC_HANDLE)
            return rc;
        a->absent = true;
        return TSS2_RC_SUCCESS;
    }
    s->cmd = "TPM2_NV_ReadPublic";
    rc = Esys_NV_ReadPublic(c->esys, nv, sess, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
    if (rc == TSS2_RC_SUCCESS) {
        OPENSSL_free(a->data); /* an earlier attempt's */
        a->len = pub->nvPublic.dataSize;
        if (a->len > EK_CERT_MAX)
            s->rc = kv_error(a->ctx, KV_ERR_CORRUPT,
                             "NV index 0x%08x holds %zu bytes; an EK certificate is at most %d",
                             a->index, a->len, EK_CERT_MAX);
        else if (!(a->data = OPENSSL_malloc(a->len ? a->len : 1)))
            s->rc = kv_error(a->ctx, KV_ERR_NO_MEMORY, "out of memory");
    }
    for (size_t off = 0; rc == TSS2_RC_SUCCESS && s->rc == KV_OK && off < a->len;) {
        TPM2B_MAX_NV_BUFFER *chunk = NULL;
        UINT16 n = (UINT16)(a->len - off > 512 ? 512 : a->len - off);
        s->cmd = "TPM2_NV_Read (EK certificate)";
        rc = Esys_NV_Read(c->esys, nv, nv, ESYS_TR_PASSWORD, sess, ESYS_TR_NONE, n, (UINT16)off,
                          &chunk);
        /* exactly what was asked: more would overflow the buffer, less
         * (one byte at a time) would take up to 65535 reads */
        if (rc == TSS2_RC_SUCCESS && chunk->size != n)
            s->rc = kv_error(a->ctx, KV_ERR_CORRUPT,
                             "TPM2_NV_Read of NV index 0x%08x at offset %zu answered %u bytes "
                             "where %u were asked", a->index, off, (unsigned)chunk->size,
                             (unsigned)n);
        else if (rc == TSS2_RC_SUCCESS)
            memcpy(a->data + off, chunk->buffer, n);
        off += n;
        Esys_Free(chunk);
    }
    Esys_Free(pub);
    (void)Esys_TR_Close(c->esys, &nv);
    return rc;
}

static const TPM2_HANDLE ek_indices[] = { 0x01c0000a, 0x01c00002, 0x01c00016 };

/* The EK certificate at one NV index, as DER without the index's padding;
 * *der NULL when the index is not defined. */
static kv_rc ek_read(kv_backend *be, TPM2_HANDLE index, unsigned char **der, size_t *len)
{
    kv_ctx *ctx = be->ctx;
    struct ek_arg a = { .ctx = ctx, .index = index };
    const unsigned char *p;
    X509 *x;
    int n;
    kv_rc rc = tpm_run(ctx, st(be)->conn, ek_step, &a);

    *der = NULL;
    if (rc != KV_OK || a.absent) {
        OPENSSL_free(a.data);
        return rc;
    }
    /* the index may be larger than the certificate: keep the DER only */
    p = a.data;
    x = d2i_X509(NULL, &p, (long)a.len);
    n = x ? i2d_X509(x, der) : -1;
    X509_free(x);
    OPENSSL_free(a.data);
    if (n <= 0)
        return kv_error_ossl(ctx, KV_ERR_CORRUPT,
                             "NV index 0x%08x does not hold an X.509 certificate", index);
    *len = (size_t)n;
    return KV_OK;
}

kv_rc tpm_ek_cert(kv_backend *be, unsigned char **der, size_t *len)
{
    kv_rc rc;

    for (size_t i = 0; i < sizeof(ek_indices) / sizeof(ek_indices[0]); i++)
        if ((rc = ek_read(be, ek_indices[i], der, len)) != KV_OK || *der)
            return rc;
    return kv_error(be->ctx, KV_ERR_KEY_NOT_FOUND,
                    "the TPM holds no EK certificate at 0x01c0000a, 0x01c00002 or 0x01c00016");
}

/* The EK certificates enrollment can use: the low range, templates L-2
 * (ECC P-256) and L-1 (RSA-2048); the high-range P-384 one at 0x01c00016
 * has no template enrollment recreates, and the verifier refuses it. */
kv_rc tpm_ek_certs(kv_backend *be, unsigned char *der[], size_t len[], size_t *n)
{
    kv_rc rc = KV_OK;

    *n = 0;
    for (size_t i = 0; i < 2 && *n < KV_EK_MAX; i++) {
        if ((rc = ek_read(be, ek_indices[i], &der[*n], &len[*n])) != KV_OK)
            break;
        if (der[*n])
            (*n)++;
    }
    if (rc == KV_OK && *n == 0)
        rc = kv_error(be->ctx, KV_ERR_KEY_NOT_FOUND, "the TPM holds no EK certificate at "
                      "0x01c0000a (ECC P-256) or 0x01c00002 (RSA-2048)");
    if (rc != KV_OK) {
        for (size_t i = 0; i < *n; i++)
            OPENSSL_free(der[i]);
        *n = 0;
    }
    return rc;
}

/* ---- evidence (libkeyvault/evidence.c) ------------------------------------ */

static kv_rc marshal_public(const kv_ctx *ctx, const TPM2B_PUBLIC *pub, bool sized,
                            unsigned char **buf, size_t *len)
{
    uint8_t tmp[sizeof(TPM2B_PUBLIC)];
    size_t off = 0;
    TSS2_RC trc = sized ? Tss2_MU_TPM2B_PUBLIC_Marshal(pub, tmp, sizeof(tmp), &off)
                        : Tss2_MU_TPMT_PUBLIC_Marshal(&pub->publicArea, tmp, sizeof(tmp), &off);

    *buf = NULL;
    if (trc != TSS2_RC_SUCCESS)
        return kv_error_code(ctx, KV_ERR_BACKEND, "TSS2_RC", trc,
                             "cannot marshal a TPM public area: %s", Tss2_RC_Decode(trc));
    if (!(*buf = OPENSSL_memdup(tmp, off)))
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    *len = off;
    return KV_OK;
}

kv_rc tpm_key_public_area(kv_key *key, bool sized, unsigned char **buf, size_t *len)
{
    struct tpm_key *tk = key->bk;

    return marshal_public(key->ctx, &tk->obj.pub, sized, buf, len);
}

kv_rc tpm_ak_public_area(kv_backend *be, bool sized, unsigned char **buf, size_t *len)
{
    struct tpm_key *ak;
    kv_rc rc = tpm_ak_get(be, &ak);

    if (rc != KV_OK)
        return rc;
    return marshal_public(be->ctx, &ak->obj.pub, sized, buf, len);
}

kv_rc tpm_ak_chain_store(kv_backend *be, const STACK_OF(X509) *chain)
{
    struct tpm_key *ak;
    kv_rc rc = tpm_ak_get(be, &ak);

    if (rc != KV_OK)
        return rc;
    return kv_cert_file_store(be->ctx, ak->path, chain);
}

kv_rc tpm_ak_chain_read(kv_backend *be, STACK_OF(X509) **chain)
{
    struct tpm_key *ak;
    EVP_PKEY *pub = NULL;
    char *crt = NULL;
    struct stat sb;
    kv_rc rc;

    *chain = NULL;
    KV_CHECK(rc, tpm_ak_get(be, &ak));
    if (!(crt = kv_sibling_path(ak->path, "crt")))
        KV_FAIL(be->ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (lstat(crt, &sb) != 0 && errno == ENOENT) {
        rc = KV_ERR_KEY_NOT_FOUND; /* not enrolled: quietly */
        goto out;
    }
    KV_CHECK(rc, tpm_public_to_pkey(be->ctx, &ak->obj.pub.publicArea, &pub));
    rc = kv_cert_file_read(be->ctx, ak->path, "the attestation key", pub, chain);
out:
    EVP_PKEY_free(pub);
    free(crt);
    return rc;
}

/* The PCRs of sel not yet in got: sel minus got, bank by bank. */
static bool pcr_sel_minus(TPML_PCR_SELECTION *sel, const TPML_PCR_SELECTION *got)
{
    bool left = false;

    for (UINT32 i = 0; i < sel->count; i++) {
        for (UINT32 j = 0; j < got->count; j++)
            if (got->pcrSelections[j].hash == sel->pcrSelections[i].hash)
                for (int b = 0; b < 3; b++)
                    sel->pcrSelections[i].pcrSelect[b] &= (BYTE)~got->pcrSelections[j].pcrSelect[b];
        for (int b = 0; b < 3; b++)
            left |= sel->pcrSelections[i].pcrSelect[b] != 0;
    }
    return left;
}

static const char *bank_name(TPMI_ALG_HASH alg, size_t *mdlen)
{
    switch (alg) {
    case TPM2_ALG_SHA1: *mdlen = 20; return "sha1";
    case TPM2_ALG_SHA256: *mdlen = 32; return "sha256";
    case TPM2_ALG_SHA384: *mdlen = 48; return "sha384";
    case TPM2_ALG_SHA512: *mdlen = 64; return "sha512";
    default: *mdlen = 0; return NULL;
    }
}

struct pcrs_arg {
    TPML_PCR_SELECTION want;      /* what is still to be read */
    TPML_PCR_SELECTION *got;      /* what the last TPM2_PCR_Read returned */
    TPML_DIGEST *values;
    UINT32 update;                /* the PCR update counter of the first read */
    bool moved;                   /* a PCR changed between two reads */
};

static TSS2_RC pcrs_read_step(struct tpm_conn *c, struct step *s, void *p)
{
    struct pcrs_arg *a = p;
    UINT32 update = 0;
    TSS2_RC rc;

    rc = pcr_read_checked(c, s, "TPM2_PCR_Read", &a->want, &update, &a->got, &a->values);
    if (rc == TSS2_RC_SUCCESS && a->update != update && a->update != UINT32_MAX)
        a->moved = true;
    if (a->update == UINT32_MAX)
        a->update = update;
    return rc;
}

/* Read every PCR of sel into values, in the TPM's order: a TPM returns at
 * most 8 digests per TPM2_PCR_Read, so larger selections take more. */
static kv_rc read_pcrs(kv_backend *be, const TPML_PCR_SELECTION *sel,
                       struct kv_pcr_values *values, bool *moved)
{
    kv_ctx *ctx = be->ctx;
    struct pcrs_arg a = { .want = *sel, .update = UINT32_MAX };
    struct kv_pcr_values got = { 0 }; /* as returned, laid out in the selection's order below */
    kv_rc rc = KV_OK;

    values->count = 0;
    for (int round = 0; round < 24 * TPM2_NUM_PCR_BANKS; round++) {
        size_t k = 0;
        KV_CHECK(rc, tpm_run(ctx, st(be)->conn, pcrs_read_step, &a));
        for (UINT32 i = 0; a.got && i < a.got->count; i++) {
            const TPMS_PCR_SELECTION *g = &a.got->pcrSelections[i];
            size_t mdlen;
            const char *name = bank_name(g->hash, &mdlen);
            for (unsigned pcr = 0; pcr < 24 && pcr / 8 < g->sizeofSelect; pcr++) {
                if (!(g->pcrSelect[pcr / 8] & (1u << (pcr % 8))))
                    continue;
                if (!name || k >= a.values->count || a.values->digests[k].size != mdlen ||
                    got.count == KV_PCR_VALUES_MAX)
                    KV_FAIL(ctx, rc, KV_ERR_BACKEND,
                            "TPM2_PCR_Read returned digests that do not fit its selection");
                got.v[got.count].bank = name;
                got.v[got.count].index = pcr;
                got.v[got.count].len = mdlen;
                memcpy(got.v[got.count].digest, a.values->digests[k].buffer, mdlen);
                got.count++;
                k++;
            }
        }
        if (k == 0) {
            char what[64] = "";
            for (UINT32 i = 0; i < a.want.count; i++) {
                size_t mdlen;
                const char *name = bank_name(a.want.pcrSelections[i].hash, &mdlen);
                if (name && (a.want.pcrSelections[i].pcrSelect[0] |
                             a.want.pcrSelections[i].pcrSelect[1] |
                             a.want.pcrSelections[i].pcrSelect[2])) {
                    snprintf(what, sizeof(what), "%s", name);
                    break;
                }
            }
            KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "the TPM has no active %s PCR bank", what);
        }
        bool left = pcr_sel_minus(&a.want, a.got);
        Esys_Free(a.got);
        Esys_Free(a.values);
        a.got = NULL;
        a.values = NULL;
        if (!left)
            break;
    }
    /* the selection's order: bank by bank as selected, indices ascending */
    for (UINT32 i = 0; i < sel->count; i++) {
        size_t mdlen;
        const char *name = bank_name(sel->pcrSelections[i].hash, &mdlen);
        for (unsigned pcr = 0; pcr < 24; pcr++) {
            if (!(sel->pcrSelections[i].pcrSelect[pcr / 8] & (1u << (pcr % 8))))
                continue;
            size_t j;
            for (j = 0; j < got.count; j++)
                if (got.v[j].bank == name && got.v[j].index == pcr)
                    break;
            if (j == got.count || values->count == KV_PCR_VALUES_MAX)
                KV_FAIL(ctx, rc, KV_ERR_BACKEND, "TPM2_PCR_Read did not return %s PCR %u",
                        name, pcr);
            values->v[values->count++] = got.v[j];
        }
    }
    *moved = a.moved;
out:
    Esys_Free(a.got);
    Esys_Free(a.values);
    return rc;
}

/* Whether the quote's PCR digest is the hash of values (the quote's own
 * selection order). */
static kv_rc quote_matches(const kv_ctx *ctx, const TPM2B_ATTEST *attest,
                           const struct kv_pcr_values *values, bool *match)
{
    TPMS_ATTEST a;
    size_t off = 0;
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    TSS2_RC trc;
    kv_rc rc = KV_OK;

    *match = false;
    if (!h)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    trc = Tss2_MU_TPMS_ATTEST_Unmarshal(attest->attestationData, attest->size, &off, &a);
    if (trc != TSS2_RC_SUCCESS || a.type != TPM2_ST_ATTEST_QUOTE)
        KV_FAIL(ctx, rc, KV_ERR_BACKEND, "the TPM's quote does not unmarshal as a TPMS_ATTEST "
                "of a quote");
    /* the AK signs with SHA-256: the PCR digest is SHA-256 */
    if (EVP_DigestInit_ex(h, kv_ctx_md(ctx, "SHA256"), NULL) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "SHA-256 of the PCR values");
    for (size_t i = 0; i < values->count; i++)
        if (EVP_DigestUpdate(h, values->v[i].digest, values->v[i].len) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "SHA-256 of the PCR values");
    if (EVP_DigestFinal_ex(h, md, &mdlen) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "SHA-256 of the PCR values");
    *match = a.attested.quote.pcrDigest.size == mdlen &&
             !memcmp(a.attested.quote.pcrDigest.buffer, md, mdlen);
out:
    EVP_MD_CTX_free(h);
    return rc;
}

kv_rc tpm_quote_pcrs(kv_backend *be, const char *pcrs, const unsigned char *nonce, size_t len,
                     kv_attestation *out, struct kv_pcr_values *values)
{
    kv_ctx *ctx = be->ctx;
    struct quote_arg a = { 0 };
    kv_rc rc;

    KV_CHECK(rc, parse_pcrs(ctx, pcrs, &a.sel));
    KV_CHECK(rc, copy_nonce(ctx, &a.nonce, nonce, len));
    KV_CHECK(rc, tpm_ak_get(be, &a.ak));
    /* read, then quote: when a PCR is extended in between, the quote's
     * digest no longer matches the values and both are taken again */
    for (int attempt = 0;; attempt++) {
        bool moved = false, match = true;
        if (values)
            KV_CHECK(rc, read_pcrs(be, &a.sel, values, &moved));
        KV_CHECK(rc, tpm_run(ctx, st(be)->conn, quote_step, &a));
        if (values)
            KV_CHECK(rc, quote_matches(ctx, a.attest, values, &match));
        if (match && !moved)
            break;
        if (attempt == 3)
            KV_FAIL(ctx, rc, KV_ERR_BACKEND, "the PCRs kept changing while they were quoted "
                    "(4 attempts)");
        Esys_Free(a.attest);
        Esys_Free(a.sig);
        a.attest = NULL;
        a.sig = NULL;
    }
    rc = fill_evidence(ctx, &a.ak->obj.pub.publicArea, "TPM2_Quote", a.attest, a.sig, out);
out:
    Esys_Free(a.attest);
    Esys_Free(a.sig);
    return rc;
}
