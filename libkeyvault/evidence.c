/*
 * evidence.c - kv_attest: the evidence document of docs/evidence.md. The
 * key's public key and stored chain on every backend; for a TPM key the
 * AK's public area and chain, TPM2_Certify of the key and TPM2_Quote of the
 * PCRs with the values read and the firmware event log; then a
 * proof-of-possession signature by the key over the rest. JSON through
 * jansson, binary fields base64url without padding.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "internal.h"

#define EVIDENCE_NONCE_MIN 16
#define EVIDENCE_NONCE_MAX 64
#define EVIDENCE_MAX (256 * 1024)        /* bytes of a whole document */
#define EVENT_LOG_MAX (128 * 1024)       /* a larger event log is left out */
#define EVENT_LOG_PATH "/sys/kernel/security/tpm0/binary_bios_measurements"
#define POP_LABEL "keyvault-evidence-pop-v1" /* then 0x00, then SHA-256 of the document */
#define ATTEST_OPTS_MIN (offsetof(kv_attest_opts, flags) + sizeof(unsigned))
#define ATTEST_OPTS_MAX 4096
#define ATTEST_OPTS_LOG_END (offsetof(kv_attest_opts, event_log) + sizeof(const char *))

/* data as base64url without padding (RFC 4648 section 5), a new JSON string. */
static json_t *kv_json_b64u(const unsigned char *data, size_t len)
{
    char *s = kv_b64url_encode(data, len);
    json_t *j = s ? json_string(s) : NULL;

    free(s);
    return j;
}

/* obj[name] = val, whose reference is taken even when this fails (as
 * json_object_set_new does); KV_ERR_NO_MEMORY when val is NULL or the set fails. */
static kv_rc put(const kv_ctx *ctx, json_t *obj, const char *name, json_t *val)
{
    if (!val || json_object_set_new(obj, name, val) != 0)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory building the evidence ('%s')",
                        name);
    return KV_OK;
}

static kv_rc put_b64u(const kv_ctx *ctx, json_t *obj, const char *name,
                      const unsigned char *data, size_t len)
{
    return put(ctx, obj, name, kv_json_b64u(data, len));
}

/* A chain as an array of base64url DER certificates, leaf first. */
static kv_rc put_chain(const kv_ctx *ctx, json_t *obj, const STACK_OF(X509) *chain)
{
    json_t *arr = json_array();
    kv_rc rc = KV_OK;

    if (!arr)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < sk_X509_num(chain); i++) {
        unsigned char *der = NULL;
        int n = i2d_X509(sk_X509_value(chain, i), &der);
        if (n <= 0) {
            json_decref(arr);
            return kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot encode certificate %d of a chain", i);
        }
        if (json_array_append_new(arr, kv_json_b64u(der, (size_t)n)) != 0)
            rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        OPENSSL_free(der);
        if (rc != KV_OK) {
            json_decref(arr);
            return rc;
        }
    }
    return put(ctx, obj, "chain", arr);
}

static kv_rc read_opts(const kv_ctx *ctx, const kv_attest_opts *opts, kv_attest_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->size = sizeof(*o);
    if (!opts)
        return KV_OK;
    if (opts->size < ATTEST_OPTS_MIN || opts->size > ATTEST_OPTS_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_attest_opts.size is %zu, not %zu to %d: "
                        "initialise with KV_ATTEST_OPTS_INIT", opts->size, ATTEST_OPTS_MIN,
                        ATTEST_OPTS_MAX);
    for (size_t i = sizeof(*opts); i < opts->size; i++)
        if (((const unsigned char *)opts)[i])
            return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_attest_opts has fields this library "
                            "version does not know (size %zu, this version %zu)", opts->size,
                            sizeof(*opts));
    if (opts->flags & ~(KV_ATTEST_NO_QUOTE | KV_ATTEST_NO_EVENT_LOG))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown kv_attest_opts flags 0x%x",
                        opts->flags & ~(KV_ATTEST_NO_QUOTE | KV_ATTEST_NO_EVENT_LOG));
    o->pcrs = opts->pcrs;
    o->flags = opts->flags;
    if (opts->size >= ATTEST_OPTS_LOG_END)
        o->event_log = opts->event_log;
    return KV_OK;
}

/* The PCR values as {"bank": {"index": "hex", ...}, ...}. */
static kv_rc put_pcrs(const kv_ctx *ctx, json_t *quote, const struct kv_pcr_values *v)
{
    json_t *pcrs = json_object();
    kv_rc rc;

    if (!pcrs)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < v->count; i++) {
        json_t *bank = json_object_get(pcrs, v->v[i].bank);
        char index[8], hex[2 * sizeof(v->v[i].digest) + 1];

        if (!bank) {
            if ((rc = put(ctx, pcrs, v->v[i].bank, json_object())) != KV_OK) {
                json_decref(pcrs);
                return rc;
            }
            bank = json_object_get(pcrs, v->v[i].bank);
        }
        for (size_t b = 0; b < v->v[i].len; b++)
            snprintf(hex + 2 * b, 3, "%02x", v->v[i].digest[b]);
        hex[2 * v->v[i].len] = '\0';
        snprintf(index, sizeof(index), "%u", v->v[i].index);
        if ((rc = put(ctx, bank, index, json_string(hex))) != KV_OK) {
            json_decref(pcrs);
            return rc;
        }
    }
    return put(ctx, quote, "pcrs", pcrs);
}

/* The firmware event log, when it can be read and is not too large; a
 * missing or unreadable one is left out without a detail. */
static kv_rc put_event_log(kv_ctx *ctx, json_t *quote, const char *path)
{
    kv_err_mark mark = kv_err_mark_get(ctx);
    char *log = NULL;
    size_t len = 0;
    kv_rc rc = kv_read_file(ctx, path, EVENT_LOG_MAX, &log, &len);

    if (rc != KV_OK) {
        kv_err_rewind(ctx, mark);
        return KV_OK;
    }
    rc = len ? put_b64u(ctx, quote, "event_log", (const unsigned char *)log, len) : KV_OK;
    free(log);
    return rc;
}

/* The "tpm" member: the AK, TPM2_Certify of the key, TPM2_Quote of the PCRs. */
static kv_rc put_tpm(kv_key *key, const unsigned char *nonce, size_t nonce_len,
                     const kv_attest_opts *o, json_t *doc)
{
    kv_ctx *ctx = key->ctx;
    kv_backend *be = key->be;
    json_t *tpm = json_object(), *ak = json_object(), *certify = json_object(), *quote = NULL;
    kv_attestation cert = { 0 }, q = { 0 };
    struct kv_pcr_values *values = NULL;
    STACK_OF(X509) *chain = NULL;
    unsigned char *area = NULL;
    size_t area_len = 0;
    kv_err_mark mark;
    kv_rc rc;

    if (!tpm || !ak || !certify)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!be->ops->key_public_area || !be->ops->ak_public_area || !be->ops->ak_chain_read ||
        !be->ops->quote_pcrs || !be->ops->certify)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "backend %s cannot attest key '%s'", be->name,
                key->name);
    /* the AK */
    KV_CHECK(rc, be->ops->ak_public_area(be, true, &area, &area_len));
    KV_CHECK(rc, put_b64u(ctx, ak, "public", area, area_len));
    OPENSSL_free(area);
    area = NULL;
    mark = kv_err_mark_get(ctx);
    rc = kv_tpm_ak_chain_get(ctx, be, &chain);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_rewind(ctx, mark); /* not enrolled: no chain */
        rc = KV_OK;
    } else if (rc == KV_OK) {
        KV_CHECK(rc, put_chain(ctx, ak, chain));
    }
    if (rc != KV_OK)
        goto out;
    rc = put(ctx, tpm, "ak", ak); /* taken, even when it fails */
    ak = NULL;
    if (rc != KV_OK)
        goto out;
    /* the key, certified by the AK over the nonce */
    KV_CHECK(rc, be->ops->certify(key, nonce, nonce_len, &cert));
    KV_CHECK(rc, be->ops->key_public_area(key, true, &area, &area_len));
    KV_CHECK(rc, put_b64u(ctx, certify, "public", area, area_len));
    KV_CHECK(rc, put_b64u(ctx, certify, "attest", cert.attest, cert.attest_len));
    KV_CHECK(rc, put_b64u(ctx, certify, "signature", cert.signature, cert.signature_len));
    rc = put(ctx, tpm, "certify", certify); /* taken, even when it fails */
    certify = NULL;
    if (rc != KV_OK)
        goto out;
    /* the platform: the PCRs quoted over the nonce */
    if (!(o->flags & KV_ATTEST_NO_QUOTE)) {
        if (!(quote = json_object()) || !(values = calloc(1, sizeof(*values))))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        KV_CHECK(rc, be->ops->quote_pcrs(be, o->pcrs ? o->pcrs : "sha256:0-7", nonce,
                                         nonce_len, &q, values));
        KV_CHECK(rc, put_b64u(ctx, quote, "attest", q.attest, q.attest_len));
        KV_CHECK(rc, put_b64u(ctx, quote, "signature", q.signature, q.signature_len));
        KV_CHECK(rc, put_pcrs(ctx, quote, values));
        if (!(o->flags & KV_ATTEST_NO_EVENT_LOG))
            KV_CHECK(rc, put_event_log(ctx, quote, o->event_log ? o->event_log
                                                                 : EVENT_LOG_PATH));
        rc = put(ctx, tpm, "quote", quote); /* taken, even when it fails */
        quote = NULL;
        if (rc != KV_OK)
            goto out;
    }
    rc = put(ctx, doc, "tpm", tpm);
    tpm = NULL;
out:
    json_decref(tpm);
    json_decref(ak);
    json_decref(certify);
    json_decref(quote);
    free(values);
    OPENSSL_free(area);
    OPENSSL_free(cert.attest);
    OPENSSL_free(cert.signature);
    OPENSSL_free(cert.signature_der);
    OPENSSL_free(q.attest);
    OPENSSL_free(q.signature);
    OPENSSL_free(q.signature_der);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* The "key" member: type, public key, stored chain if any. */
static kv_rc put_key(kv_key *key, json_t *doc)
{
    kv_ctx *ctx = key->ctx;
    json_t *k = json_object();
    STACK_OF(X509) *chain = NULL;
    unsigned char *der = NULL;
    kv_err_mark mark;
    int n;
    kv_rc rc;

    if (!k)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, put(ctx, k, "type", json_string(kv_key_type_name(key->type))));
    if ((n = i2d_PUBKEY(key->pub, &der)) <= 0)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the public key of '%s'", key->name);
    KV_CHECK(rc, put_b64u(ctx, k, "public", der, (size_t)n));
    /* a key without a chain, or a backend that keeps none: no "chain" */
    mark = kv_err_mark_get(ctx);
    rc = key->be->ops->chain_read ? kv_chain_get(key, &chain) : KV_ERR_KEY_NOT_FOUND;
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        kv_err_rewind(ctx, mark);
        rc = KV_OK;
    } else if (rc == KV_OK) {
        rc = put_chain(ctx, k, chain);
    }
    if (rc != KV_OK)
        goto out;
    rc = put(ctx, doc, "key", k);
    k = NULL;
out:
    json_decref(k);
    OPENSSL_free(der);
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

/* The "pop" member: the key's signature over
 * POP_LABEL || 0x00 || SHA-256(the document so far, canonical). */
static kv_rc put_pop(kv_key *key, json_t *doc)
{
    kv_ctx *ctx = key->ctx;
    const kv_alg_desc *alg = NULL;
    unsigned char msg[sizeof(POP_LABEL) + 32], *sig = NULL;
    unsigned int mdlen = 0;
    size_t siglen = 0;
    char *canon = NULL;
    json_t *pop = NULL;
    kv_rc rc;

    KV_CHECK(rc, kv_key_alg(key, KV_ALG_DEFAULT, &alg));
    canon = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    if (!canon)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    memcpy(msg, POP_LABEL, sizeof(POP_LABEL)); /* with its NUL: the 0x00 separator */
    if (EVP_Digest(canon, strlen(canon), msg + sizeof(POP_LABEL), &mdlen,
                   kv_ctx_md(ctx, "SHA256"), NULL) != 1 || mdlen != 32)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "SHA-256 of the evidence");
    siglen = kv_sig_max_len(key->pub, alg, 0);
    if (!(sig = malloc(siglen)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, kv_key_sign_op(key, KV_OP_ATTEST, alg, 0, msg, sizeof(msg), sig, &siglen));
    if (!(pop = json_object()))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, put(ctx, pop, "alg", json_string(kv_sign_alg_name(alg->alg))));
    KV_CHECK(rc, put_b64u(ctx, pop, "signature", sig, siglen));
    rc = put(ctx, doc, "pop", pop);
    pop = NULL;
out:
    json_decref(pop);
    free(sig);
    free(canon);
    return rc;
}

kv_rc kv_attest(kv_key *key, const unsigned char *nonce, size_t nonce_len,
                const kv_attest_opts *opts, char **evidence)
{
    kv_ctx *ctx = key->ctx;
    kv_assurance assurance = key->be->ops->assurance;
    kv_attest_opts o;
    json_t *doc = NULL;
    char created[32], *text = NULL;
    struct tm tm;
    time_t now = time(NULL);
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *evidence = NULL;
    if (nonce_len < EVIDENCE_NONCE_MIN || nonce_len > EVIDENCE_NONCE_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "the nonce must be %d to %d bytes, not %zu",
                        EVIDENCE_NONCE_MIN, EVIDENCE_NONCE_MAX, nonce_len);
    KV_CHECK(rc, read_opts(ctx, opts, &o));
    KV_CHECK(rc, kv_policy_check(ctx, key->be, key, KV_OP_ATTEST, key->name, NULL));
    KV_CHECK(rc, kv_version_check(key, KV_OP_ATTEST));
    if (!gmtime_r(&now, &tm) || !strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm))
        KV_FAIL(ctx, rc, KV_ERR_IO, "the system clock cannot be read as UTC");
    if (!(doc = json_object()))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, put(ctx, doc, "format", json_string("keyvault-evidence")));
    KV_CHECK(rc, put(ctx, doc, "version", json_integer(1)));
    KV_CHECK(rc, put(ctx, doc, "created", json_string(created)));
    KV_CHECK(rc, put_b64u(ctx, doc, "nonce", nonce, nonce_len));
    KV_CHECK(rc, put(ctx, doc, "assurance", json_string(kv_assurance_name(assurance))));
    KV_CHECK(rc, put_key(key, doc));
    if (assurance == KV_ASSURANCE_TPM)
        KV_CHECK(rc, put_tpm(key, nonce, nonce_len, &o, doc));
    KV_CHECK(rc, put_pop(key, doc));
    if (!(text = json_dumps(doc, JSON_INDENT(2))))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (strlen(text) > EVIDENCE_MAX)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "the evidence of '%s' is %zu bytes, more than the "
                "%d a verifier reads (a smaller PCR selection or KV_ATTEST_NO_EVENT_LOG)",
                key->name, strlen(text), EVIDENCE_MAX);
    *evidence = text;
    text = NULL;
out:
    kv_audit_event(ctx, KV_AUDIT_ATTEST, key->name, key->version, key->be->name, rc, "evidence");
    json_decref(doc);
    free(text);
    return rc;
}
