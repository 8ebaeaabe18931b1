/*
 * verify.c - kv_evidence_verify: the gateway's side of kv_attest.
 *
 * The document is parsed once ("format": jansson with duplicate keys
 * refused, every binary field base64url, every TPM structure unmarshalled
 * by tss2-mu with nothing left over), then every check runs and is listed
 * in the verdict, passed or not; the call succeeds only when all passed.
 * A check that cannot be made (its input is missing) fails: nothing is
 * ever assumed. Names of the checks are stable (docs/evidence.md).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509_vfy.h>
#ifdef KV_WITH_TPM
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>
#endif

#include "policy.h"
#ifdef KV_WITH_TPM
#include "../tpm/tpm.h"
#endif

#define EVIDENCE_MAX (256 * 1024)
#define NONCE_MIN 16
#define NONCE_MAX 64
#define POP_LABEL "keyvault-evidence-pop-v1"
#define OID_TCG_KP_AIK "2.23.133.8.3"

struct blob {
    unsigned char *p;
    size_t n;
};

/* What one verification has parsed and found. */
struct vstate {
    kv_ctx *ctx;
    const kv_policy *pol;
    kv_verdict *v;
    bool oom;
    json_t *doc;
    size_t doc_len;                /* the document's length in bytes */
    struct blob nonce;
    const char *created;
    kv_assurance claimed;
    kv_key_type type;
    EVP_PKEY *key;
    STACK_OF(X509) *chain;         /* key.chain; NULL when absent */
    const kv_alg_desc *pop_alg;
    struct blob pop_sig;
    bool tpm;                      /* a tpm section is present */
    bool quote;                    /* with a quote */
    json_t *pcrs;                  /* tpm.quote.pcrs (borrowed) */
    struct blob ak_pub, cert_pub, cert_attest, cert_sig, quote_attest, quote_sig;
    STACK_OF(X509) *ak_chain;      /* tpm.ak.chain; NULL when absent */
    EVP_PKEY *ak_key;              /* from the AK's public area */
    EVP_PKEY *cert_key;            /* from the certified public area */
#ifdef KV_WITH_TPM
    TPM2B_PUBLIC akp, certp;
    unsigned char ak_name[2 + EVP_MAX_MD_SIZE];  /* nameAlg || digest; ak_name_len 0: none */
    size_t ak_name_len;
    bool enrolled;                 /* in the policy's registry, not revoked */
    TPMS_ATTEST catt, qatt;
    TPMT_SIGNATURE csig, qsig;
#endif
};

/* ---- the verdict ----------------------------------------------------------- */

void kv_verdict_free(kv_verdict *verdict)
{
    if (!verdict)
        return;
    for (size_t i = 0; i < verdict->count; i++)
        free((char *)verdict->checks[i].detail);
    free(verdict->checks);
    free(verdict->key_public);
    free(verdict->ak_name);
    free(verdict->device_id);
    free(verdict);
}

/* List a check with its outcome. Out of memory is remembered and fails the call. */
static bool record(struct vstate *s, const char *name, bool passed, const char *fmt, ...)
    KV_PRINTF(4, 5);
static bool record(struct vstate *s, const char *name, bool passed, const char *fmt, ...)
{
    kv_verdict_check *c = realloc(s->v->checks, (s->v->count + 1) * sizeof(*c));
    char *detail = NULL;
    va_list ap;

    if (c) {
        s->v->checks = c;
        va_start(ap, fmt);
        if (vasprintf(&detail, fmt, ap) < 0)
            detail = NULL;
        va_end(ap);
    }
    if (!c || !detail) {
        s->oom = true;
        return passed;
    }
    c[s->v->count].name = name;
    c[s->v->count].passed = passed;
    c[s->v->count].detail = detail;
    s->v->count++;
    return passed;
}

/* The message a library helper recorded for its failure, then forgotten:
 * it goes into a check's detail, and the call's own message comes last. */
static void take_error(struct vstate *s, kv_err_mark m, char *buf, size_t len)
{
    snprintf(buf, len, "%s", kv_errmsg(s->ctx));
    kv_err_rewind(s->ctx, m);
}

/* ---- format: parsing --------------------------------------------------------- */

/* base64url without padding (RFC 4648 section 5), decoded by OpenSSL. */
static bool b64u_decode(const char *in, struct blob *out)
{
    size_t n = strlen(in), pad = (4 - n % 4) % 4;
    unsigned char *tmp;
    int got;

    out->p = NULL;
    out->n = 0;
    if (n % 4 == 1 || strspn(in, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789-_") != n)
        return false;
    if (!(tmp = malloc(n + pad + 1)) || !(out->p = malloc(n / 4 * 3 + 3))) {
        free(tmp);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : (unsigned char)in[i];
    memset(tmp + n, '=', pad);
    got = n ? EVP_DecodeBlock(out->p, tmp, (int)(n + pad)) : 0;
    free(tmp);
    if (got < 0 || (size_t)got < pad) {
        free(out->p);
        out->p = NULL;
        return false;
    }
    out->n = (size_t)got - pad;
    return true;
}

/* Whether any value in the tree is a real number (version 1 has none). */
static bool has_real(const json_t *j)
{
    const char *k;
    json_t *v;
    size_t i;

    if (json_is_real(j))
        return true;
    if (json_is_object(j)) {
        json_object_foreach((json_t *)j, k, v)
            if (has_real(v))
                return true;
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v)
            if (has_real(v))
                return true;
    }
    return false;
}

/* Refuse members of obj that are not in the NULL-terminated list. */
static bool only_members(const json_t *obj, const char *const *known, const char *where,
                         char *det, size_t len)
{
    const char *k;
    json_t *v;

    json_object_foreach((json_t *)obj, k, v) {
        size_t i;
        for (i = 0; known[i] && strcmp(known[i], k) != 0; i++)
            ;
        if (!known[i]) {
            /* the member's name is the sender's text: say only where and how long */
            snprintf(det, len, "%s has an unknown member (of %zu characters)", where, strlen(k));
            return false;
        }
    }
    return true;
}

/* A required string member. */
static const char *str_member(const json_t *obj, const char *name, const char *where, char *det,
                              size_t len)
{
    const json_t *j = json_object_get(obj, name);

    if (!json_is_string(j)) {
        snprintf(det, len, "%s.%s is %s", where, name, j ? "not a string" : "missing");
        return NULL;
    }
    return json_string_value(j);
}

/* A required base64url member, decoded. */
static bool b64u_member(const json_t *obj, const char *name, const char *where, struct blob *out,
                        char *det, size_t len)
{
    const char *t = str_member(obj, name, where, det, len);

    if (!t)
        return false;
    if (!b64u_decode(t, out) || out->n == 0) {
        snprintf(det, len, "%s.%s is not base64url without padding%s", where, name,
                 out->p ? " (empty)" : "");
        return false;
    }
    return true;
}

static const json_t *obj_member(const json_t *obj, const char *name, const char *where,
                                char *det, size_t len)
{
    const json_t *j = json_object_get(obj, name);

    if (!json_is_object(j))
        snprintf(det, len, "%s.%s is %s", where, name, j ? "not an object" : "missing");
    return json_is_object(j) ? j : NULL;
}

/* An optional "chain": 1 to KV_CHAIN_MAX DER certificates, leaf first. */
static bool chain_member(struct vstate *s, const json_t *obj, const char *where,
                         STACK_OF(X509) **out, char *det, size_t len)
{
    const json_t *arr = json_object_get(obj, "chain");
    const json_t *e;
    size_t i;

    *out = NULL;
    if (!arr)
        return true;
    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > KV_CHAIN_MAX) {
        snprintf(det, len, "%s.chain is not an array of 1 to %d certificates", where,
                 KV_CHAIN_MAX);
        return false;
    }
    if (!(*out = sk_X509_new_null())) {
        s->oom = true;
        return false;
    }
    json_array_foreach(arr, i, e) {
        struct blob der = { 0 };
        const unsigned char *p;
        X509 *x = NULL;
        if (!json_is_string(e) || !b64u_decode(json_string_value(e), &der) || der.n == 0) {
            free(der.p);
            snprintf(det, len, "%s.chain[%zu] is not base64url", where, i);
            return false;
        }
        p = der.p;
        x = d2i_X509(NULL, &p, (long)der.n);
        if (!x || p != der.p + der.n || !sk_X509_push(*out, x)) {
            X509_free(x);
            free(der.p);
            kv_ossl_drop();
            snprintf(det, len, "%s.chain[%zu] is not one DER certificate", where, i);
            return false;
        }
        free(der.p);
    }
    return true;
}

static bool rfc3339_time(const char *t, time_t *out)
{
    /* "YYYY-MM-DDTHH:MM:SSZ" -> ASN.1 GeneralizedTime "YYYYMMDDHHMMSSZ" for OpenSSL */
    static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";
    char gt[16];
    ASN1_TIME *a;
    struct tm tm;
    size_t j = 0;
    bool ok;

    if (strlen(t) != sizeof(shape) - 1)
        return false;
    for (size_t i = 0; shape[i]; i++) {
        if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != shape[i])
            return false;
        if (shape[i] == 'd')
            gt[j++] = t[i];
    }
    gt[j++] = 'Z';
    gt[j] = '\0';
    if (!(a = ASN1_TIME_new()))
        return false;
    ok = ASN1_TIME_set_string_X509(a, gt) == 1 && ASN1_TIME_to_tm(a, &tm) == 1;
    ASN1_TIME_free(a);
    if (ok)
        *out = timegm(&tm);
    return ok;
}

#ifdef KV_WITH_TPM
/* Unmarshal a TPM structure that must fill the whole blob. */
#define UNMARSHAL_WHOLE(type)                                                        \
    static bool whole_##type(const struct blob *b, type *dst)                       \
    {                                                                                \
        size_t off = 0;                                                              \
        return Tss2_MU_##type##_Unmarshal(b->p, b->n, &off, dst) == TSS2_RC_SUCCESS && \
               off == b->n;                                                          \
    }
UNMARSHAL_WHOLE(TPM2B_PUBLIC)
UNMARSHAL_WHOLE(TPMS_ATTEST)
UNMARSHAL_WHOLE(TPMT_SIGNATURE)
#define UNMARSHAL(type, b, dst) whole_##type((b), (dst))

/* The key of ECC public area pub on the same curve as like's area, built on a
 * copy of like's group (EVP_PKEY_dup) with pub's point set in its place
 * (EVP_PKEY_set1_encoded_public_key: EC_POINT_oct2point, which checks the
 * coordinates and that the point is on the curve, as EVP_PKEY_fromdata does):
 * making a group again from its name costs about 0.2M instructions, copying
 * one a tenth of that. NULL when pub is not such an area or the point does
 * not decode. */
static EVP_PKEY *ecc_key_like(const TPMT_PUBLIC *pub, const TPMT_PUBLIC *like_pub,
                              const EVP_PKEY *like)
{
    const TPMS_ECC_POINT *p = &pub->unique.ecc;
    unsigned char pt[1 + 2 * TPM2_MAX_ECC_KEY_BYTES];
    EVP_PKEY *key;

    if (pub->type != TPM2_ALG_ECC || like_pub->type != TPM2_ALG_ECC ||
        pub->parameters.eccDetail.curveID != like_pub->parameters.eccDetail.curveID ||
        p->x.size != p->y.size || p->x.size > TPM2_MAX_ECC_KEY_BYTES ||
        !(key = EVP_PKEY_dup((EVP_PKEY *)like)))
        return NULL;
    pt[0] = 0x04;
    memcpy(pt + 1, p->x.buffer, p->x.size);
    memcpy(pt + 1 + p->x.size, p->y.buffer, p->y.size);
    if (EVP_PKEY_set1_encoded_public_key(key, pt, 1 + 2 * (size_t)p->x.size) != 1) {
        EVP_PKEY_free(key);  /* never like's point under pub's name */
        key = NULL;
    }
    kv_ossl_drop();
    return key;
}

/* A marshalled TPM2B_PUBLIC that fills its blob (its size field too), and
 * its key as an EVP_PKEY: on like's group when like (from like_pub) is an ECC
 * key on the same curve, else made from the area alone. */
static bool public_area(struct vstate *s, const struct blob *b, TPM2B_PUBLIC *pub,
                        EVP_PKEY **key, const TPMT_PUBLIC *like_pub, const EVP_PKEY *like,
                        const char *what, char *det, size_t len)
{
    kv_err_mark m = kv_err_mark_get(s->ctx);
    char why[256];

    if (!UNMARSHAL(TPM2B_PUBLIC, b, pub) || pub->size + 2u != b->n) {
        snprintf(det, len, "%s is not one TPM2B_PUBLIC", what);
        return false;
    }
    if (like && (*key = ecc_key_like(&pub->publicArea, like_pub, like)))
        return true;
    if (tpm_public_to_pkey(s->ctx, &pub->publicArea, key) != KV_OK) {
        take_error(s, m, why, sizeof(why));
        snprintf(det, len, "%s: %s", what, why);
        return false;
    }
    return true;
}

static bool tpm_section(struct vstate *s, const json_t *tpm, char *det, size_t len)
{
    static const char *const tpm_known[] = { "ak", "certify", "quote", NULL };
    static const char *const ak_known[] = { "public", "chain", NULL };
    static const char *const certify_known[] = { "public", "attest", "signature", NULL };
    static const char *const quote_known[] = { "attest", "signature", "pcrs", "event_log",
                                               NULL };
    const json_t *ak, *cert, *quote;

    if (!only_members(tpm, tpm_known, "tpm", det, len) ||
        !(ak = obj_member(tpm, "ak", "tpm", det, len)) ||
        !only_members(ak, ak_known, "tpm.ak", det, len) ||
        !b64u_member(ak, "public", "tpm.ak", &s->ak_pub, det, len) ||
        !chain_member(s, ak, "tpm.ak", &s->ak_chain, det, len) ||
        !(cert = obj_member(tpm, "certify", "tpm", det, len)) ||
        !only_members(cert, certify_known, "tpm.certify", det, len) ||
        !b64u_member(cert, "public", "tpm.certify", &s->cert_pub, det, len) ||
        !b64u_member(cert, "attest", "tpm.certify", &s->cert_attest, det, len) ||
        !b64u_member(cert, "signature", "tpm.certify", &s->cert_sig, det, len))
        return false;
    if (!public_area(s, &s->ak_pub, &s->akp, &s->ak_key, NULL, NULL, "tpm.ak.public", det,
                     len) ||
        !public_area(s, &s->cert_pub, &s->certp, &s->cert_key, &s->akp.publicArea, s->ak_key,
                     "tpm.certify.public", det, len))
        return false;
    if (!UNMARSHAL(TPMS_ATTEST, &s->cert_attest, &s->catt)) {
        snprintf(det, len, "tpm.certify.attest is not one TPMS_ATTEST");
        return false;
    }
    if (!UNMARSHAL(TPMT_SIGNATURE, &s->cert_sig, &s->csig)) {
        snprintf(det, len, "tpm.certify.signature is not one TPMT_SIGNATURE");
        return false;
    }
    if (!(quote = json_object_get(tpm, "quote")))
        return true;
    s->quote = true;
    if (!json_is_object(quote)) {
        snprintf(det, len, "tpm.quote is not an object");
        return false;
    }
    if (!only_members(quote, quote_known, "tpm.quote", det, len) ||
        !b64u_member(quote, "attest", "tpm.quote", &s->quote_attest, det, len) ||
        !b64u_member(quote, "signature", "tpm.quote", &s->quote_sig, det, len) ||
        !(s->pcrs = (json_t *)obj_member(quote, "pcrs", "tpm.quote", det, len)))
        return false;
    if (json_object_get(quote, "event_log")) {
        struct blob log = { 0 };
        bool ok = b64u_member(quote, "event_log", "tpm.quote", &log, det, len);
        free(log.p);
        if (!ok)
            return false;
    }
    if (!UNMARSHAL(TPMS_ATTEST, &s->quote_attest, &s->qatt)) {
        snprintf(det, len, "tpm.quote.attest is not one TPMS_ATTEST");
        return false;
    }
    if (!UNMARSHAL(TPMT_SIGNATURE, &s->quote_sig, &s->qsig)) {
        snprintf(det, len, "tpm.quote.signature is not one TPMT_SIGNATURE");
        return false;
    }
    /* the reported values: {bank: {"index": lowercase hex}} */
    const char *bank, *idx;
    json_t *vals, *val;
    json_object_foreach(s->pcrs, bank, vals) {
        size_t size = kv_pcr_bank_size(bank);
        if (!size || !json_is_object(vals)) {
            snprintf(det, len, "tpm.quote.pcrs has a bank that is not sha1, sha256, sha384 "
                     "or sha512 with an object of values");
            return false;
        }
        json_object_foreach(vals, idx, val) {
            const char *hex = json_string_value(val);
            size_t n = strlen(idx);
            if (n == 0 || n > 2 || strspn(idx, "0123456789") != n || (n == 2 && idx[0] == '0') ||
                atoi(idx) >= KV_POLICY_PCRS) {
                snprintf(det, len, "tpm.quote.pcrs.%s has an index that is not 0 to %d", bank,
                         KV_POLICY_PCRS - 1);
                return false;
            }
            if (!hex || strlen(hex) != 2 * size || strspn(hex, "0123456789abcdef") != 2 * size) {
                snprintf(det, len, "tpm.quote.pcrs.%s.%s is not %zu lowercase hex digits", bank,
                         idx, 2 * size);
                return false;
            }
        }
    }
    return true;
}
#endif

#ifdef KV_WITH_TPM
/* The DER SubjectPublicKeyInfo of an ECC public area (named curve,
 * uncompressed point), encoded by OpenSSL's X509_PUBKEY: i2d_PUBKEY would
 * go through the encoder machinery, which costs as much as a signature
 * check. NULL for another key type or curve. */
static unsigned char *ecc_spki(const TPMT_PUBLIC *pub, int *len)
{
    const TPMS_ECC_POINT *p = &pub->unique.ecc;
    TPMI_ECC_CURVE curve = pub->parameters.eccDetail.curveID;
    int nid = curve == TPM2_ECC_NIST_P256 ? NID_X9_62_prime256v1
              : curve == TPM2_ECC_NIST_P384 ? NID_secp384r1 : NID_undef;
    X509_PUBKEY *xp = NULL;
    unsigned char *pt = NULL, *der = NULL;
    size_t n = 1 + 2 * (size_t)p->x.size;

    *len = 0;
    if (pub->type != TPM2_ALG_ECC || nid == NID_undef || p->x.size != p->y.size ||
        !(xp = X509_PUBKEY_new()) || !(pt = OPENSSL_malloc(n)))
        goto out;
    pt[0] = 0x04;  /* uncompressed, as tpm_public_to_pkey decodes it */
    memcpy(pt + 1, p->x.buffer, p->x.size);
    memcpy(pt + 1 + p->x.size, p->y.buffer, p->y.size);
    if (X509_PUBKEY_set0_param(xp, OBJ_nid2obj(NID_X9_62_id_ecPublicKey), V_ASN1_OBJECT,
                               OBJ_nid2obj(nid), pt, (int)n) != 1)
        goto out;
    pt = NULL;  /* xp's now */
    if ((*len = i2d_X509_PUBKEY(xp, &der)) <= 0) {
        *len = 0;
        der = NULL;
    }
out:
    OPENSSL_free(pt);
    X509_PUBKEY_free(xp);
    kv_ossl_drop();
    return der;
}
#endif

/* key.public as an EVP key of key.type, kept for the verdict. For a tpm
 * document whose certified public area is an ECC key, the SubjectPublicKeyInfo
 * OpenSSL encodes from that area is compared byte for byte first: equal,
 * key.public is canonical DER of the very key already decoded from the area
 * (on its curve: EVP_PKEY_fromdata checks), and is not decoded twice. Any
 * other key.public is decoded and checked on its own (kv_pubkey_decode). */
static bool identity_key(struct vstate *s, struct blob *pub, char *det, size_t dlen)
{
    kv_err_mark m = kv_err_mark_get(s->ctx);
    kv_key_type pubtype;
    char why[256];
    bool same = false;

#ifdef KV_WITH_TPM
    if (s->tpm && s->cert_key) {
        int n;
        unsigned char *der = ecc_spki(&s->certp.publicArea, &n);
        same = der && (size_t)n == pub->n && memcmp(der, pub->p, pub->n) == 0;
        OPENSSL_free(der);
        if (same && EVP_PKEY_up_ref(s->cert_key) == 1)
            s->key = s->cert_key;
        else
            same = false;
    }
#endif
    if (!same && kv_pubkey_decode(s->ctx, pub->p, pub->n, &s->key) != KV_OK) {
        take_error(s, m, why, sizeof(why));
        snprintf(det, dlen, "key.public: %s", why);
        return false;
    }
    if ((pubtype = kv_type_of_pkey(s->key)) != s->type) {
        snprintf(det, dlen, "key.type is %s but key.public is a%s key", kv_key_type_name(s->type),
                 pubtype == KV_KEY_UNKNOWN ? "n unknown" : "nother");
        return false;
    }
    s->v->key_public = pub->p;
    s->v->key_public_len = pub->n;
    pub->p = NULL;
    return true;
}

static bool parse(struct vstate *s, const char *evidence, size_t len, char *det, size_t dlen)
{
    static const char *const top_known[] = { "format", "version", "created", "nonce",
                                             "assurance", "key", "tpm", "pop", NULL };
    static const char *const key_known[] = { "type", "public", "chain", NULL };
    static const char *const pop_known[] = { "alg", "signature", NULL };
    json_error_t jerr;
    const json_t *j, *key, *pop;
    const char *t;
    struct blob pub = { 0 };
    int alg;
    bool ok = false;

    if (len > EVIDENCE_MAX) {
        snprintf(det, dlen, "the document is %zu bytes, more than %d", len, EVIDENCE_MAX);
        return false;
    }
    s->doc = json_loadb(evidence, len, JSON_REJECT_DUPLICATES, &jerr);
    s->doc_len = len;
    if (!s->doc) {
        /* jansson's text quotes the input: give only where it stopped */
        snprintf(det, dlen, "not a JSON document: %s at line %d, column %d",
                 json_error_code(&jerr) == json_error_duplicate_key ? "a member given twice"
                 : json_error_code(&jerr) == json_error_premature_end_of_input
                     ? "it ends early"
                     : "malformed",
                 jerr.line, jerr.column);
        return false;
    }
    if (!json_is_object(s->doc)) {
        snprintf(det, dlen, "the document is not a JSON object");
        return false;
    }
    if (has_real(s->doc)) {
        snprintf(det, dlen, "the document holds a real number (version 1 has none)");
        return false;
    }
    if (!(t = str_member(s->doc, "format", "document", det, dlen)))
        return false;
    if (strcmp(t, "keyvault-evidence") != 0) {
        snprintf(det, dlen, "format is not \"keyvault-evidence\"");
        return false;
    }
    j = json_object_get(s->doc, "version");
    if (!json_is_integer(j) || json_integer_value(j) != 1) {
        snprintf(det, dlen, "version is %s, not 1", json_is_integer(j) ? "another number"
                 : j ? "not a number" : "missing");
        return false;
    }
    if (!only_members(s->doc, top_known, "the document", det, dlen))
        return false;
    if (!(s->created = str_member(s->doc, "created", "document", det, dlen)))
        return false;
    if (!b64u_member(s->doc, "nonce", "document", &s->nonce, det, dlen))
        return false;
    if (s->nonce.n < NONCE_MIN || s->nonce.n > NONCE_MAX) {
        snprintf(det, dlen, "nonce is %zu bytes, not %d to %d", s->nonce.n, NONCE_MIN, NONCE_MAX);
        return false;
    }
    if (!(t = str_member(s->doc, "assurance", "document", det, dlen)))
        return false;
    s->claimed = strcmp(t, "tpm") == 0        ? KV_ASSURANCE_TPM
                 : strcmp(t, "token") == 0    ? KV_ASSURANCE_TOKEN
                 : strcmp(t, "software") == 0 ? KV_ASSURANCE_SOFTWARE
                                              : KV_ASSURANCE_UNKNOWN;
    if (s->claimed == KV_ASSURANCE_UNKNOWN) {
        snprintf(det, dlen, "assurance is not tpm, token or software");
        return false;
    }
    s->v->assurance = s->claimed;

    if (!(key = obj_member(s->doc, "key", "document", det, dlen)) ||
        !only_members(key, key_known, "key", det, dlen) ||
        !(t = str_member(key, "type", "key", det, dlen)))
        return false;
    if ((s->type = kv_key_type_from_name(t)) == KV_KEY_UNKNOWN) {
        snprintf(det, dlen, "key.type is not a key type of libkeyvault");
        return false;
    }
    if (!b64u_member(key, "public", "key", &pub, det, dlen))
        goto out;
    /* a tpm document's key is decoded with its tpm section (identity_key) */
    if (s->claimed != KV_ASSURANCE_TPM && !identity_key(s, &pub, det, dlen))
        goto out;
    if (!chain_member(s, key, "key", &s->chain, det, dlen))
        goto out;

    if (!(pop = obj_member(s->doc, "pop", "document", det, dlen)) ||
        !only_members(pop, pop_known, "pop", det, dlen) ||
        !(t = str_member(pop, "alg", "pop", det, dlen)))
        goto out;
    if ((alg = kv_sign_alg_from_name(t)) < 0 || !(s->pop_alg = kv_alg_desc_get((kv_sign_alg)alg))) {
        snprintf(det, dlen, "pop.alg is not a signature algorithm of libkeyvault");
        goto out;
    }
    if (!b64u_member(pop, "signature", "pop", &s->pop_sig, det, dlen))
        goto out;

    j = json_object_get(s->doc, "tpm");
    if (s->claimed == KV_ASSURANCE_TPM && !j) {
        snprintf(det, dlen, "assurance is tpm but the document has no tpm section");
        goto out;
    }
    if (s->claimed != KV_ASSURANCE_TPM && j) {
        snprintf(det, dlen, "a tpm section in a document whose assurance is %s",
                 kv_assurance_name(s->claimed));
        goto out;
    }
    if (j) {
        s->tpm = true;
        if (!json_is_object(j)) {
            snprintf(det, dlen, "tpm is not an object");
            goto out;
        }
#ifdef KV_WITH_TPM
        if (!tpm_section(s, j, det, dlen) || !identity_key(s, &pub, det, dlen))
            goto out;
#else
        snprintf(det, dlen, "this build of libkeyvault has no tpm2-tss to read a tpm section");
        goto out;
#endif
    }
    ok = true;
out:
    free(pub.p);
    return ok;
}

/* ---- the checks ------------------------------------------------------------ */

static bool blob_eq(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
    return an == bn && CRYPTO_memcmp(a, b, an) == 0;
}

static void check_nonce(struct vstate *s, const unsigned char *nonce, size_t len)
{
    if (!blob_eq(s->nonce.p, s->nonce.n, nonce, len)) {
        record(s, "nonce", false, "the document's nonce is not the one issued (a replay or "
               "another verifier's evidence)");
        return;
    }
#ifdef KV_WITH_TPM
    if (s->tpm && !blob_eq(s->catt.extraData.buffer, s->catt.extraData.size, nonce, len)) {
        record(s, "nonce", false, "the certify's qualifying data is not the nonce");
        return;
    }
    if (s->quote && !blob_eq(s->qatt.extraData.buffer, s->qatt.extraData.size, nonce, len)) {
        record(s, "nonce", false, "the quote's qualifying data is not the nonce");
        return;
    }
#endif
    record(s, "nonce", true, "the nonce issued%s", s->quote ? ", in the document, the certify "
           "and the quote" : s->tpm ? ", in the document and the certify" : "");
}

static void check_age(struct vstate *s, time_t now)
{
    time_t created;
    long long age;

    if (!rfc3339_time(s->created, &created)) {
        record(s, "age", false, "created is not a UTC time as YYYY-MM-DDTHH:MM:SSZ");
        return;
    }
    age = (long long)now - (long long)created;
    if (age < -KV_CLOCK_SKEW)
        record(s, "age", false, "created %lld s in the future (skew allowed: %d s)", -age,
               KV_CLOCK_SKEW);
    else if (age > s->pol->max_age + KV_CLOCK_SKEW)
        record(s, "age", false, "created %lld s ago; the policy's max_age is %ld s (+%d s skew)",
               age, s->pol->max_age, KV_CLOCK_SKEW);
    else
        record(s, "age", true, "created %lld s ago (max_age %ld s)", age, s->pol->max_age);
}

#define POP_JSON_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)

/* The proof of possession: "keyvault-evidence-pop-v1" || 0x00 || SHA-256(C),
 * C the document without "pop" as compact, sorted, ASCII JSON. */
static void check_pop(struct vstate *s)
{
    json_t *copy = json_copy(s->doc);
    char *c = NULL, why[256];
    size_t cap = s->doc_len ? s->doc_len : 1, clen;
    unsigned char msg[sizeof(POP_LABEL) + 32], md[EVP_MAX_MD_SIZE];
    size_t mdlen = sizeof(md), tbslen = 0;
    const unsigned char *tbs = md;
    unsigned int hlen = 32;
    kv_err_mark m = kv_err_mark_get(s->ctx);

    if (!copy || json_object_del(copy, "pop") != 0 || !(c = malloc(cap))) {
        s->oom = true;
        goto out;
    }
    /* into one buffer the size of the document (C is shorter unless escapes
     * grew it: then once more at the size json_dumpb asked for) */
    if ((clen = json_dumpb(copy, c, cap, POP_JSON_FLAGS)) > cap) {
        free(c);
        cap = clen;
        if (!(c = malloc(cap)))
            clen = 0;
        else
            clen = json_dumpb(copy, c, cap, POP_JSON_FLAGS);
    }
    if (clen == 0 || clen > cap) {
        s->oom = true;
        goto out;
    }
    memcpy(msg, POP_LABEL, sizeof(POP_LABEL));  /* with its NUL: the 0x00 separator */
    if (EVP_Digest(c, clen, msg + sizeof(POP_LABEL), &hlen, s->ctx->md_sha256, NULL) != 1) {
        record(s, "pop", false, "cannot hash the document");
        goto out;
    }
    if (kv_family_of_pkey(s->key) != s->pop_alg->family) {
        record(s, "pop", false, "pop.alg %s does not fit the %s key", s->pop_alg->name,
               kv_key_type_name(s->type));
        goto out;
    }
    /* Ed25519 signs the message itself, the others its digest */
    if (s->pop_alg->family == KV_FAMILY_ED25519) {
        tbs = msg;
        tbslen = sizeof(msg);
    } else if (kv_digest(s->ctx, s->pop_alg, msg, sizeof(msg), md, &mdlen) != KV_OK) {
        take_error(s, m, why, sizeof(why));
        record(s, "pop", false, "%s", why);
        goto out;
    }
    if (tbs == md)
        tbslen = mdlen;
    if (kv_verify_pkey(s->ctx, s->ctx->libctx, s->key, s->pop_alg, tbs, tbslen, s->pop_sig.p,
                       s->pop_sig.n) != KV_OK) {
        take_error(s, m, why, sizeof(why));
        record(s, "pop", false, "the identity key's %s signature over the document does not "
               "verify (%s)", s->pop_alg->name, why);
        goto out;
    }
    record(s, "pop", true, "%s signature by the identity key over the nonce and the document",
           s->pop_alg->name);
out:
    free(c);
    json_decref(copy);
}

/* Verify chain (leaf first) to the CAs of store at the current time;
 * partial chains: an intermediate named as an anchor is an anchor. */
static bool chain_verify(struct vstate *s, X509_STORE *store, STACK_OF(X509) *chain, char *det,
                         size_t len)
{
    X509_STORE_CTX *xs = X509_STORE_CTX_new_ex(s->ctx->libctx, NULL);
    STACK_OF(X509) *untrusted = NULL;
    bool ok = false;
    int err, depth;

    if (!xs || !(untrusted = sk_X509_dup(chain))) {
        s->oom = true;
        goto out;
    }
    (void)sk_X509_shift(untrusted);
    if (X509_STORE_CTX_init(xs, store, sk_X509_value(chain, 0), untrusted) != 1) {
        s->oom = true;
        goto out;
    }
    X509_STORE_CTX_set_flags(xs, X509_V_FLAG_PARTIAL_CHAIN);
    if (X509_verify_cert(xs) == 1) {
        ok = true;
        goto out;
    }
    err = X509_STORE_CTX_get_error(xs);
    depth = X509_STORE_CTX_get_error_depth(xs);
    snprintf(det, len, "certificate %d: %s", depth, X509_verify_cert_error_string(err));
out:
    kv_ossl_drop();
    sk_X509_free(untrusted);
    X509_STORE_CTX_free(xs);
    return ok;
}

static void check_key_chain(struct vstate *s)
{
    char det[256];

    if (!s->chain) {
        record(s, "key-chain", false, "the policy names anchors and the evidence carries no "
               "certificate chain for the identity key");
        return;
    }
    if (EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(s->chain, 0)), s->key) != 1) {
        kv_ossl_drop();
        record(s, "key-chain", false, "the chain's leaf certifies another key than key.public");
        return;
    }
    if (!chain_verify(s, s->pol->anchors, s->chain, det, sizeof(det))) {
        record(s, "key-chain", false, "the chain does not verify to the policy's anchors: %s",
               det);
        return;
    }
    record(s, "key-chain", true, "%d certificate(s) to the policy's anchors, valid now",
           sk_X509_num(s->chain));
}

static void check_assurance(struct vstate *s)
{
    if (s->claimed < s->pol->floor)
        record(s, "assurance", false, "the evidence claims %s; the policy's floor is %s",
               kv_assurance_name(s->claimed), kv_assurance_name(s->pol->floor));
    else
        record(s, "assurance", true, "%s, at or above the floor %s", kv_assurance_name(s->claimed),
               kv_assurance_name(s->pol->floor));
}

#ifdef KV_WITH_TPM
static void check_magic(struct vstate *s)
{
    if (s->catt.magic != TPM2_GENERATED_VALUE)
        record(s, "tpm.magic", false, "the certify's magic is 0x%08x, not TPM_GENERATED_VALUE",
               (unsigned)s->catt.magic);
    else if (s->quote && s->qatt.magic != TPM2_GENERATED_VALUE)
        record(s, "tpm.magic", false, "the quote's magic is 0x%08x, not TPM_GENERATED_VALUE",
               (unsigned)s->qatt.magic);
    else
        record(s, "tpm.magic", true, "TPM_GENERATED_VALUE");
}

static void check_attest_type(struct vstate *s)
{
    if (s->catt.type != TPM2_ST_ATTEST_CERTIFY)
        record(s, "tpm.attest-type", false, "the certify's attest type is 0x%04x, not "
               "TPM_ST_ATTEST_CERTIFY", (unsigned)s->catt.type);
    else if (s->quote && s->qatt.type != TPM2_ST_ATTEST_QUOTE)
        record(s, "tpm.attest-type", false, "the quote's attest type is 0x%04x, not "
               "TPM_ST_ATTEST_QUOTE", (unsigned)s->qatt.type);
    else
        record(s, "tpm.attest-type", true, "certify%s", s->quote ? " and quote" : "");
}

/* The AK's ECDSA P-256 SHA-256 signature (a TPMT_SIGNATURE) over attest. */
static bool ak_verify(struct vstate *s, const struct blob *attest, const TPMT_SIGNATURE *sig,
                      char *det, size_t len)
{
    const TPMT_PUBLIC *ak = &s->akp.publicArea;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *sv = NULL;
    unsigned char *der = NULL, md[32];
    unsigned int mdlen = sizeof(md);
    int derlen;
    bool ok = false;
    kv_err_mark m = kv_err_mark_get(s->ctx);

    if (ak->type != TPM2_ALG_ECC || ak->parameters.eccDetail.curveID != TPM2_ECC_NIST_P256) {
        snprintf(det, len, "the AK is not an ECC P-256 key");
        goto out;
    }
    if (sig->sigAlg != TPM2_ALG_ECDSA || sig->signature.ecdsa.hash != TPM2_ALG_SHA256) {
        snprintf(det, len, "the signature is not ECDSA with SHA-256 (sigAlg 0x%04x)",
                 (unsigned)sig->sigAlg);
        goto out;
    }
    r = BN_bin2bn(sig->signature.ecdsa.signatureR.buffer, sig->signature.ecdsa.signatureR.size,
                  NULL);
    sv = BN_bin2bn(sig->signature.ecdsa.signatureS.buffer, sig->signature.ecdsa.signatureS.size,
                   NULL);
    if (!r || !sv || !(es = ECDSA_SIG_new()) || ECDSA_SIG_set0(es, r, sv) != 1) {
        s->oom = true;
        goto out;
    }
    r = sv = NULL;
    if ((derlen = i2d_ECDSA_SIG(es, &der)) <= 0 ||
        EVP_Digest(attest->p, attest->n, md, &mdlen, s->ctx->md_sha256, NULL) != 1) {
        snprintf(det, len, "cannot encode or hash for verification");
        goto out;
    }
    if (kv_verify_pkey(s->ctx, s->ctx->libctx, s->ak_key, kv_alg_desc_get(KV_ALG_ECDSA_SHA256),
                       md, mdlen, der, (size_t)derlen) != KV_OK) {
        char why[200];
        take_error(s, m, why, sizeof(why));
        snprintf(det, len, "the AK's signature does not verify (%s)", why);
        goto out;
    }
    ok = true;
out:
    kv_ossl_drop();
    BN_free(r);
    BN_free(sv);
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    return ok;
}

static void check_ak_signature(struct vstate *s)
{
    char det[320];

    if (ak_verify(s, &s->cert_attest, &s->csig, det, sizeof(det)))
        record(s, "tpm.ak-signature", true, "the AK signed the certify (ECDSA P-256 SHA-256)");
    else
        record(s, "tpm.ak-signature", false, "certify: %s", det);
}

static void check_quote_signature(struct vstate *s)
{
    char det[320];

    if (ak_verify(s, &s->quote_attest, &s->qsig, det, sizeof(det)))
        record(s, "tpm.quote-signature", true, "the AK signed the quote (ECDSA P-256 SHA-256)");
    else
        record(s, "tpm.quote-signature", false, "quote: %s", det);
}

static const char *tpm_hash_name(TPMI_ALG_HASH alg, size_t *size)
{
    switch (alg) {
    case TPM2_ALG_SHA1: *size = 20; return "sha1";
    case TPM2_ALG_SHA256: *size = 32; return "sha256";
    case TPM2_ALG_SHA384: *size = 48; return "sha384";
    case TPM2_ALG_SHA512: *size = 64; return "sha512";
    default: *size = 0; return NULL;
    }
}

/* The digest of a TPM hash algorithm (free it): the context's own, fetched
 * once, for SHA-256/384/512 (fetching costs about a third of a signature
 * check); SHA-1 is fetched here. NULL for another algorithm. */
static EVP_MD *tpm_md(struct vstate *s, TPMI_ALG_HASH alg, size_t *size)
{
    const char *hn = tpm_hash_name(alg, size);
    EVP_MD *md = alg == TPM2_ALG_SHA256   ? s->ctx->md_sha256
                 : alg == TPM2_ALG_SHA384 ? s->ctx->md_sha384
                 : alg == TPM2_ALG_SHA512 ? s->ctx->md_sha512
                                          : NULL;

    if (md)
        return EVP_MD_up_ref(md) == 1 ? md : NULL;
    return hn ? EVP_MD_fetch(s->ctx->libctx, hn, NULL) : NULL;
}

/* The TPM name of a marshalled TPM2B_PUBLIC: nameAlg || H(TPMT_PUBLIC). */
static bool tpm_name(struct vstate *s, const struct blob *pub, TPMI_ALG_HASH alg,
                     unsigned char *name, size_t *len)
{
    size_t size;
    EVP_MD *md;
    unsigned int n = 0;
    bool ok;

    if (!(md = tpm_md(s, alg, &size)))
        return false;
    name[0] = (unsigned char)(alg >> 8);
    name[1] = (unsigned char)alg;
    ok = EVP_Digest(pub->p + 2, pub->n - 2, name + 2, &n, md, NULL) == 1 && n == size;
    EVP_MD_free(md);
    *len = 2 + size;
    return ok;
}

static void check_certified_name(struct vstate *s)
{
    unsigned char name[2 + EVP_MAX_MD_SIZE];
    size_t n;
    const TPM2B_NAME *got = &s->catt.attested.certify.name;

    if (!tpm_name(s, &s->cert_pub, s->certp.publicArea.nameAlg, name, &n)) {
        record(s, "tpm.certified-name", false, "the certified key's nameAlg 0x%04x is not a "
               "hash the verifier knows", (unsigned)s->certp.publicArea.nameAlg);
        return;
    }
    if (s->catt.type != TPM2_ST_ATTEST_CERTIFY || !blob_eq(got->name, got->size, name, n)) {
        record(s, "tpm.certified-name", false, "the certify names another key than the public "
               "area in tpm.certify.public");
        return;
    }
    if (EVP_PKEY_eq(s->cert_key, s->key) != 1) {
        kv_ossl_drop();
        record(s, "tpm.certified-name", false, "the certified key is not key.public (the "
               "identity key is not the TPM key the AK certified)");
        return;
    }
    record(s, "tpm.certified-name", true, "the certify names the identity key's public area");
}

static void check_key_attributes(struct vstate *s)
{
    TPMA_OBJECT a = s->certp.publicArea.objectAttributes;
    const char *missing = !(a & TPMA_OBJECT_FIXEDTPM)              ? "fixedTPM is clear"
                          : !(a & TPMA_OBJECT_FIXEDPARENT)         ? "fixedParent is clear"
                          : !(a & TPMA_OBJECT_SENSITIVEDATAORIGIN) ? "sensitiveDataOrigin is clear"
                          : (a & TPMA_OBJECT_RESTRICTED)           ? "restricted is set"
                                                                   : NULL;

    if (missing)
        record(s, "tpm.key-attributes", false, "the certified key's %s (attributes 0x%08x)",
               missing, (unsigned)a);
    else
        record(s, "tpm.key-attributes", true, "fixedTPM, fixedParent, sensitiveDataOrigin, "
               "not restricted");
}

/* The reported value of PCR index in bank, decoded; false when absent. */
static bool reported_pcr(struct vstate *s, const char *bank, unsigned index, unsigned char *out,
                         size_t size)
{
    char key[4];
    const char *hex;
    size_t got = 0;

    snprintf(key, sizeof(key), "%u", index);
    hex = json_string_value(json_object_get(json_object_get(s->pcrs, bank), key));
    return hex && OPENSSL_hexstr2buf_ex(out, size, &got, hex, '\0') == 1 && got == size;
}

static void check_pcr_digest(struct vstate *s)
{
    const TPMS_QUOTE_INFO *q = &s->qatt.attested.quote;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_MD *md = NULL;
    unsigned char digest[EVP_MAX_MD_SIZE], val[KV_PCR_MAX_DIGEST];
    unsigned int dlen = 0;
    size_t size, reported = 0, selected = 0;
    const char *bank;
    json_t *vals;

    json_object_foreach(s->pcrs, bank, vals)
        reported += json_object_size(vals);
    /* the digest is made with the signing scheme's hash */
    if (s->qatt.type != TPM2_ST_ATTEST_QUOTE || s->qsig.sigAlg != TPM2_ALG_ECDSA ||
        !(md = tpm_md(s, s->qsig.signature.ecdsa.hash, &size)) || !mctx ||
        EVP_DigestInit_ex(mctx, md, NULL) != 1) {
        record(s, "tpm.pcr-digest", false, "the quote's digest cannot be recomputed (not a "
               "quote, or an unknown signing hash)");
        goto out;
    }
    for (UINT32 i = 0; i < q->pcrSelect.count && i < TPM2_NUM_PCR_BANKS; i++) {
        const TPMS_PCR_SELECTION *sel = &q->pcrSelect.pcrSelections[i];
        size_t vsize;
        const char *bn = tpm_hash_name(sel->hash, &vsize);
        if (!bn || !json_object_get(s->pcrs, bn)) {
            record(s, "tpm.pcr-digest", false, "the quote selects bank 0x%04x, whose values "
                   "are not reported", (unsigned)sel->hash);
            goto out;
        }
        for (unsigned b = 0; b < sel->sizeofSelect && b < TPM2_PCR_SELECT_MAX; b++)
            for (unsigned bit = 0; bit < 8; bit++) {
                unsigned index = b * 8 + bit;
                if (!(sel->pcrSelect[b] & (1u << bit)))
                    continue;
                if (!reported_pcr(s, bn, index, val, vsize)) {
                    record(s, "tpm.pcr-digest", false, "the quote selects %s PCR %u, whose "
                           "value is not reported", bn, index);
                    goto out;
                }
                selected++;
                if (EVP_DigestUpdate(mctx, val, vsize) != 1) {
                    s->oom = true;
                    goto out;
                }
            }
    }
    if (selected != reported) {
        record(s, "tpm.pcr-digest", false, "%zu PCR values are reported but the quote selects "
               "%zu", reported, selected);
        goto out;
    }
    if (EVP_DigestFinal_ex(mctx, digest, &dlen) != 1 ||
        !blob_eq(q->pcrDigest.buffer, q->pcrDigest.size, digest, dlen)) {
        record(s, "tpm.pcr-digest", false, "the reported PCR values do not hash to the quote's "
               "digest (values edited, or PCRs read at another time than quoted)");
        goto out;
    }
    record(s, "tpm.pcr-digest", true, "%zu reported PCR values hash to the quote's digest",
           reported);
out:
    EVP_MD_free(md);
    EVP_MD_CTX_free(mctx);
}

static bool ak_chain_trusted(struct vstate *s, char *det, size_t len)
{
    X509 *leaf;
    EXTENDED_KEY_USAGE *eku = NULL;
    ASN1_OBJECT *aik = NULL;
    bool found = false;
    char why[200];

    if (!s->ak_chain) {
        snprintf(det, len, "no AK certificate chain in the evidence");
        return false;
    }
    leaf = sk_X509_value(s->ak_chain, 0);
    if (EVP_PKEY_eq(X509_get0_pubkey(leaf), s->ak_key) != 1) {
        kv_ossl_drop();
        snprintf(det, len, "the AK certificate certifies another key than the AK");
        return false;
    }
    if ((eku = X509_get_ext_d2i(leaf, NID_ext_key_usage, NULL, NULL)) &&
        (aik = OBJ_txt2obj(OID_TCG_KP_AIK, 1)))
        for (int i = 0; i < sk_ASN1_OBJECT_num(eku) && !found; i++)
            found = OBJ_cmp(sk_ASN1_OBJECT_value(eku, i), aik) == 0;
    EXTENDED_KEY_USAGE_free(eku);
    ASN1_OBJECT_free(aik);
    kv_ossl_drop();
    if (!found) {
        snprintf(det, len, "the AK certificate lacks the tpm-ak extended key usage "
                 OID_TCG_KP_AIK);
        return false;
    }
    if (!chain_verify(s, s->pol->ak_anchors, s->ak_chain, why, sizeof(why))) {
        snprintf(det, len, "the AK chain does not verify to ak_anchors: %s", why);
        return false;
    }
    return true;
}

/* SHA-256 of the AK's SubjectPublicKeyInfo, as ak_pin gives it. */
static bool ak_spki_sha256(struct vstate *s, unsigned char pin[32])
{
    unsigned int plen = 32;
    int n;
    unsigned char *der = ecc_spki(&s->akp.publicArea, &n);
    bool ok = der && EVP_Digest(der, (size_t)n, pin, &plen, s->ctx->md_sha256, NULL) == 1;

    OPENSSL_free(der);
    return ok;
}

static void check_ak_trusted(struct vstate *s)
{
    TPMA_OBJECT a = s->akp.publicArea.objectAttributes;
    const TPMA_OBJECT need = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT |
                             TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                             TPMA_OBJECT_SENSITIVEDATAORIGIN;
    const TPMT_PUBLIC *ak = &s->akp.publicArea;
    unsigned char pin[32];
    char det[320] = "";
    size_t size;

    if ((a & need) != need || (a & TPMA_OBJECT_DECRYPT)) {
        record(s, "tpm.ak-trusted", false, "the AK is not a restricted signing key fixed to "
               "its TPM (attributes 0x%08x)", (unsigned)a);
        return;
    }
    /* what the signatures are checked as, and a name the verdict can report */
    if (ak->type != TPM2_ALG_ECC || ak->parameters.eccDetail.scheme.scheme != TPM2_ALG_ECDSA ||
        ak->parameters.eccDetail.scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256 ||
        ak->parameters.eccDetail.symmetric.algorithm != TPM2_ALG_NULL ||
        !tpm_hash_name(ak->nameAlg, &size)) {
        record(s, "tpm.ak-trusted", false, "the AK's public area is not an ECC key with the "
               "ECDSA SHA-256 scheme, no symmetric part and a known nameAlg");
        return;
    }
    if (s->pol->npins && !ak_spki_sha256(s, pin)) {
        record(s, "tpm.ak-trusted", false, "the AK's SubjectPublicKeyInfo cannot be encoded");
        return;
    }
    for (size_t i = 0; i < s->pol->npins; i++)
        if (CRYPTO_memcmp(pin, s->pol->pins[i], 32) == 0) {
            record(s, "tpm.ak-trusted", true, "the AK is pinned by the policy (ak_pin %zu)",
                   i + 1);
            return;
        }
    if (s->pol->ak_anchors) {
        if (ak_chain_trusted(s, det, sizeof(det))) {
            record(s, "tpm.ak-trusted", true, "the AK's tpm-ak certificate chains to "
                   "ak_anchors");
            return;
        }
    } else {
        snprintf(det, sizeof(det), "the policy has no ak_anchors");
    }
    if (s->enrolled) {
        record(s, "tpm.ak-trusted", true, "the AK is enrolled in the registry as device %s, "
               "not revoked", s->v->device_id);
        return;
    }
    record(s, "tpm.ak-trusted", false, "the AK is not pinned%s, %s, and %s",
           s->pol->npins ? "" : " (no ak_pin)", det,
           s->pol->registry ? "not enrolled and unrevoked in the registry"
                            : "the policy has no registry");
}

/* registry: the AK (by its name) enrolled by credential activation in the
 * policy's registry and its device not revoked. The registry is the
 * verifier's own file: its device id may be quoted. */
static void check_registry(struct vstate *s)
{
    kv_err_mark m = kv_err_mark_get(s->ctx);
    char *dev = NULL, why[256];
    int revoked = 0;
    kv_rc rc;

    if (!s->ak_name_len) {
        record(s, "registry", false, "the AK's nameAlg 0x%04x is not a hash the verifier "
               "knows: no name to look up", (unsigned)s->akp.publicArea.nameAlg);
        return;
    }
    rc = kv_registry_ak_status(s->ctx, s->pol->registry, s->ak_name, s->ak_name_len, &dev,
                               &revoked);
    if (rc == KV_ERR_NO_MEMORY) {
        kv_err_rewind(s->ctx, m);
        s->oom = true;
        return;
    }
    if (rc != KV_OK) {
        take_error(s, m, why, sizeof(why));
        record(s, "registry", false, "%s%s", rc == KV_ERR_KEY_NOT_FOUND ? "not enrolled: " : "",
               why);
        return;
    }
    s->v->device_id = dev;
    if (revoked) {
        record(s, "registry", false, "the AK is enrolled as device %s, which is revoked", dev);
        return;
    }
    s->enrolled = true;
    record(s, "registry", true, "the AK is enrolled as device %s, not revoked", dev);
}
#endif

/* Compare the reported values of the policy's bank with the expected ones. */
static void check_pcr_policy(struct vstate *s)
{
    const kv_policy *p = s->pol;

    if (!s->quote) {
        record(s, "tpm.pcr-policy", false, "the policy expects PCR values and the evidence "
               "carries no quote");
        return;
    }
#ifdef KV_WITH_TPM
    for (size_t i = 0; i < p->npcrs; i++) {
        unsigned char val[KV_PCR_MAX_DIGEST];
        if (!reported_pcr(s, p->bank, p->pcrs[i].index, val, p->pcr_len)) {
            record(s, "tpm.pcr-policy", false, "%s PCR %u is not in the quote", p->bank,
                   p->pcrs[i].index);
            return;
        }
        if (memcmp(val, p->pcrs[i].value, p->pcr_len) != 0) {
            record(s, "tpm.pcr-policy", false, "%s PCR %u differs from the policy's value",
                   p->bank, p->pcrs[i].index);
            return;
        }
    }
#endif
    record(s, "tpm.pcr-policy", true, "%zu %s PCR values as the policy expects", p->npcrs,
           p->bank);
}

static void set_ak_name(struct vstate *s)
{
#ifdef KV_WITH_TPM
    unsigned char name[2 + EVP_MAX_MD_SIZE];
    size_t n;
    char *hex;

    if (!tpm_name(s, &s->ak_pub, s->akp.publicArea.nameAlg, name, &n))
        return;
    memcpy(s->ak_name, name, n);
    s->ak_name_len = n;
    if (!(hex = malloc(2 * n + 1)) || OPENSSL_buf2hexstr_ex(hex, 2 * n + 1, NULL, name, n,
                                                            '\0') != 1) {
        free(hex);
        s->oom = true;
        return;
    }
    for (char *p = hex; *p; p++)
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
    s->v->ak_name = hex;
#endif
}

kv_rc kv_evidence_verify(kv_ctx *ctx, const char *evidence, size_t len,
                         const unsigned char *nonce, size_t nonce_len, const kv_policy *policy,
                         kv_verdict **verdict)
{
    struct vstate s = { 0 };
    char det[320] = "";
    bool parsed;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    *verdict = NULL;
    if (!evidence && len)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "kv_evidence_verify: no evidence but %zu bytes",
                        len);
    if (!nonce || nonce_len < NONCE_MIN || nonce_len > NONCE_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "the nonce must be %d to %d bytes, not %zu",
                        NONCE_MIN, NONCE_MAX, nonce_len);
    s.ctx = ctx;
    s.pol = policy;
    if (!(s.v = calloc(1, sizeof(*s.v))))
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");

    parsed = parse(&s, evidence ? evidence : "", len, det, sizeof(det));
    if (!record(&s, "format", parsed, "%s", parsed ? "a keyvault-evidence version 1 document" : det))
        goto done;
    check_nonce(&s, nonce, nonce_len);
    check_age(&s, time(NULL));
    check_pop(&s);
    if (policy->anchors)
        check_key_chain(&s);
    check_assurance(&s);
#ifdef KV_WITH_TPM
    if (s.tpm) {
        set_ak_name(&s);
        if (policy->registry)
            check_registry(&s);
        check_ak_trusted(&s);
        check_magic(&s);
        check_attest_type(&s);
        check_ak_signature(&s);
        check_certified_name(&s);
        check_key_attributes(&s);
        if (s.quote) {
            check_quote_signature(&s);
            check_pcr_digest(&s);
        }
    }
#endif
    if (policy->npcrs)
        check_pcr_policy(&s);
done:
    if (s.oom) {
        rc = kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory while verifying evidence");
    } else {
        const kv_verdict_check *first = NULL;
        size_t failed = 0;
        for (size_t i = 0; i < s.v->count; i++)
            if (!s.v->checks[i].passed && !failed++)
                first = &s.v->checks[i];
        s.v->ok = failed == 0;
        if (failed)
            rc = kv_error(ctx, KV_ERR_EVIDENCE, "evidence rejected: %s failed: %s%s", first->name,
                          first->detail, failed > 1 ? " (and other checks, see the verdict)" : "");
    }
    *verdict = s.v;
    s.v = NULL;
    json_decref(s.doc);
    free(s.nonce.p);
    free(s.pop_sig.p);
    free(s.ak_pub.p);
    free(s.cert_pub.p);
    free(s.cert_attest.p);
    free(s.cert_sig.p);
    free(s.quote_attest.p);
    free(s.quote_sig.p);
    sk_X509_pop_free(s.chain, X509_free);
    sk_X509_pop_free(s.ak_chain, X509_free);
    EVP_PKEY_free(s.key);
    EVP_PKEY_free(s.ak_key);
    EVP_PKEY_free(s.cert_key);
    return rc;
}
