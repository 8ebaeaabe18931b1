/*
 * check_evidence.c - kv_attest and kv_attest_webauthn: the evidence
 * document's shape on each backend (software always; a SoftHSM token with
 * KV_EVIDENCE_P11_CONF and swtpm with KV_EVIDENCE_TPM_CONF, as
 * tests/attest.sh sets them), the proof of possession verified with OpenSSL
 * over the bytes docs/evidence.md names, the nonce bounds and options, the
 * TPM parts unmarshalled with tss2-mu and checked against each other, the
 * AK chain, the WebAuthn attestation object decoded with libcbor, and the
 * TPM commands one kv_attest sends after warm-up.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#ifdef KV_WITH_TPM
#include <cbor.h>
#include <tss2/tss2_mu.h>
#endif

#include "internal.h"
#include "testutil.h"

static const unsigned char NONCE[32] = "0123456789abcdef0123456789abcdef";

/* base64url without padding -> bytes (malloc'd); NULL when it is not that. */
static unsigned char *b64u_dec(const char *s, size_t *len)
{
    size_t n = strlen(s), pad = (4 - n % 4) % 4;
    char *t = malloc(n + pad + 1);
    unsigned char *out = malloc(n + 3);
    int m;

    ck_assert(t && out);
    ck_assert_msg(pad != 3 && !strpbrk(s, "+/="), "not base64url without padding: %s", s);
    for (size_t i = 0; i < n; i++)
        t[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    memset(t + n, '=', pad);
    t[n + pad] = '\0';
    m = EVP_DecodeBlock(out, (unsigned char *)t, (int)(n + pad));
    free(t);
    ck_assert_msg(m >= 0, "not base64url: %s", s);
    *len = (size_t)m - pad;
    return out;
}

static unsigned char *field(json_t *doc, const char *path, size_t *len)
{
    json_t *j = doc;
    char buf[128], *save = NULL;

    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = strtok_r(buf, ".", &save); p; p = strtok_r(NULL, ".", &save))
        j = json_object_get(j, p);
    ck_assert_msg(json_is_string(j), "evidence has no string %s", path);
    return b64u_dec(json_string_value(j), len);
}

static kv_key *gen(kv_ctx *ctx, const char *backend, kv_key_type type)
{
    static unsigned n;
    char name[64];
    kv_key *key = NULL;

    /* each test runs in a child of its own (Check's fork mode): the pid keeps names apart */
    snprintf(name, sizeof(name), "ev-%s-%ld-%u", kv_key_type_name(type), (long)getpid(), n++);
    ck_assert_rc(ctx, kv_key_generate(ctx, name, type, backend, &key), KV_OK);
    return key;
}

static json_t *attest(kv_key *key, const unsigned char *nonce, size_t len,
                      const kv_attest_opts *o)
{
    char *text = NULL;
    json_error_t err;
    json_t *doc;

    ck_assert_rc(key->ctx, kv_attest(key, nonce, len, o, &text), KV_OK);
    ck_assert_uint_le(strlen(text), 256 * 1024);
    doc = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    ck_assert_msg(doc, "evidence does not parse: %s", err.text);
    kv_string_free(text);
    return doc;
}

/* The proof of possession over "keyvault-evidence-pop-v1" || 0 || SHA-256(C). */
static int pop_verifies(json_t *doc)
{
    json_t *copy = json_deep_copy(doc);
    const char *alg = json_string_value(json_object_get(json_object_get(doc, "pop"), "alg"));
    unsigned char msg[25 + 32], *sig, *der;
    const unsigned char *p;
    size_t siglen, derlen;
    unsigned int mdlen;
    char *c;
    EVP_PKEY *pub;
    EVP_MD_CTX *v = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    const char *md = NULL;
    int ok;

    ck_assert(copy && alg && v);
    json_object_del(copy, "pop");
    c = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    memcpy(msg, "keyvault-evidence-pop-v1", 25);
    ck_assert(EVP_Digest(c, strlen(c), msg + 25, &mdlen, EVP_sha256(), NULL) == 1);
    sig = field(doc, "pop.signature", &siglen);
    der = field(doc, "key.public", &derlen);
    p = der;
    pub = d2i_PUBKEY(NULL, &p, (long)derlen);
    ck_assert(pub);
    if (!strcmp(alg, "ecdsa-sha256") || !strcmp(alg, "rsa-pss-sha256"))
        md = "SHA256";
    else if (!strcmp(alg, "ecdsa-sha384"))
        md = "SHA384";
    else
        ck_assert_str_eq(alg, "ed25519");
    ck_assert(EVP_DigestVerifyInit_ex(v, &pctx, md, NULL, NULL, pub, NULL) == 1);
    if (!strcmp(alg, "rsa-pss-sha256")) {
        ck_assert(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
        ck_assert(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1);
    }
    ok = EVP_DigestVerify(v, sig, siglen, msg, sizeof(msg)) == 1;
    EVP_MD_CTX_free(v);
    EVP_PKEY_free(pub);
    free(sig);
    free(der);
    free(c);
    json_decref(copy);
    return ok;
}

/* What every document holds, whatever the backend. */
static void check_common(json_t *doc, kv_key *key, const char *assurance)
{
    unsigned char pub[2048], *got;
    size_t publen = sizeof(pub), len;
    const char *created = json_string_value(json_object_get(doc, "created"));
    int y, mo, d, h, mi, s;
    char z = 0;

    ck_assert_str_eq(json_string_value(json_object_get(doc, "format")), "keyvault-evidence");
    ck_assert(json_is_integer(json_object_get(doc, "version")));
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "version")), 1);
    ck_assert_msg(created && strlen(created) == 20 &&
                  sscanf(created, "%4d-%2d-%2dT%2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &s, &z) == 7 &&
                  z == 'Z', "created is not RFC 3339 UTC: %s", created ? created : "(none)");
    got = field(doc, "nonce", &len);
    ck_assert_uint_eq(len, sizeof(NONCE));
    ck_assert(!memcmp(got, NONCE, len));
    free(got);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "assurance")), assurance);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(doc, "key"), "type")),
                     kv_key_type_name(key->type));
    ck_assert_rc(NULL, kv_key_public_der(key, pub, &publen), KV_OK);
    got = field(doc, "key.public", &len);
    ck_assert_uint_eq(len, publen);
    ck_assert(!memcmp(got, pub, len));
    free(got);
    ck_assert_msg(pop_verifies(doc), "the proof of possession does not verify");
    /* only these members, and "tpm" only for TPM evidence */
    const char *known[] = { "format", "version", "created", "nonce", "assurance", "key", "tpm",
                            "pop" };
    const char *k;
    json_t *val;
    json_object_foreach(doc, k, val) {
        size_t i;
        for (i = 0; i < sizeof(known) / sizeof(known[0]) && strcmp(k, known[i]); i++)
            ;
        ck_assert_msg(i < sizeof(known) / sizeof(known[0]), "unknown member %s", k);
    }
    ck_assert(!json_object_get(doc, "tpm") == !!strcmp(assurance, "tpm"));
    (void)val;
}

/* The same document with "created" changed: the proof no longer verifies. */
static void check_pop_binds(json_t *doc)
{
    json_t *copy = json_deep_copy(doc);

    json_object_set_new(copy, "created", json_string("2000-01-01T00:00:00Z"));
    ck_assert_msg(!pop_verifies(copy), "the proof of possession verifies an edited document");
    json_decref(copy);
    copy = json_deep_copy(doc);
    json_object_set_new(copy, "assurance", json_string("tpm"));
    ck_assert(!pop_verifies(copy) || !strcmp(json_string_value(json_object_get(doc, "assurance")),
                                             "tpm"));
    json_decref(copy);
}

START_TEST(test_software_documents)
{
    static const kv_key_type types[] = { KV_KEY_EC_P256, KV_KEY_EC_P384, KV_KEY_RSA_2048,
                                         KV_KEY_ED25519 };
    static const char *algs[] = { "ecdsa-sha256", "ecdsa-sha384", "rsa-pss-sha256", "ed25519" };
    kv_ctx *ctx = tu_ctx(NULL);

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        kv_key *key = gen(ctx, "software", types[i]);
        json_t *doc = attest(key, NONCE, sizeof(NONCE), NULL);

        check_common(doc, key, "software");
        check_pop_binds(doc);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(doc, "pop"), "alg")),
                         algs[i]);
        ck_assert(!json_object_get(json_object_get(doc, "key"), "chain"));
        json_decref(doc);
        kv_key_free(key);
    }
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(test_nonce_and_options)
{
    unsigned char big[65] = { 0 };
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = gen(ctx, "software", KV_KEY_EC_P256);
    kv_attest_opts o = KV_ATTEST_OPTS_INIT;
    struct { kv_attest_opts o; unsigned char extra[8]; } longer;
    char *text = NULL;
    json_t *doc;

    ck_assert_rc(ctx, kv_attest(key, big, 15, NULL, &text), KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(text);
    ck_assert(strstr(kv_errmsg(ctx), "16 to 64 bytes"));
    ck_assert_rc(ctx, kv_attest(key, big, 65, NULL, &text), KV_ERR_INVALID_ARG);
    ck_assert_rc(ctx, kv_attest(key, big, 0, NULL, &text), KV_ERR_INVALID_ARG);
    ck_assert_rc(ctx, kv_attest(key, big, 16, NULL, &text), KV_OK);
    kv_string_free(text);
    ck_assert_rc(ctx, kv_attest(key, big, 64, &o, &text), KV_OK);
    doc = json_loads(text, 0, NULL);
    kv_string_free(text);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "nonce")),
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    json_decref(doc);
    o.size = 4;
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &o, &text), KV_ERR_INVALID_ARG);
    o.size = sizeof(o);
    o.flags = 0x100;
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &o, &text), KV_ERR_INVALID_ARG);
    memset(&longer, 0, sizeof(longer));
    longer.o.size = sizeof(longer);
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &longer.o, &text), KV_OK);
    kv_string_free(text);
    longer.extra[3] = 1;
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &longer.o, &text), KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(text);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(test_key_chain)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *key = gen(ctx, "software", KV_KEY_EC_P256);
    kv_cert_opts co = KV_CERT_OPTS_INIT;
    unsigned char cert[4096], *got;
    size_t certlen = sizeof(cert), len;
    char *pem = NULL;
    json_t *doc, *chain;

    co.subject = "CN=evidence test";
    ck_assert_rc(ctx, kv_cert_selfsign(key, &co, &pem), KV_OK);
    ck_assert_rc(ctx, kv_key_store_chain(key, (unsigned char *)pem, strlen(pem)), KV_OK);
    ck_assert_rc(ctx, kv_key_cert_der(key, cert, &certlen), KV_OK);
    doc = attest(key, NONCE, sizeof(NONCE), NULL);
    check_common(doc, key, "software");
    chain = json_object_get(json_object_get(doc, "key"), "chain");
    ck_assert(json_is_array(chain) && json_array_size(chain) == 1);
    got = b64u_dec(json_string_value(json_array_get(chain, 0)), &len);
    ck_assert_uint_eq(len, certlen);
    ck_assert(!memcmp(got, cert, len));
    free(got);
    json_decref(doc);
    kv_string_free(pem);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(test_token_document)
{
    const char *conf = getenv("KV_EVIDENCE_P11_CONF");
    kv_ctx *ctx = NULL;
    kv_key *key;
    json_t *doc;

    if (!conf)
        return; /* tests/attest.sh runs this part against SoftHSM */
    ck_assert_rc(NULL, kv_ctx_new(&ctx, conf), KV_OK);
    key = gen(ctx, "pkcs11", KV_KEY_EC_P256);
    doc = attest(key, NONCE, sizeof(NONCE), NULL);
    check_common(doc, key, "token");
    check_pop_binds(doc);
    json_decref(doc);
    kv_key_free(key);
    key = gen(ctx, "pkcs11", KV_KEY_RSA_2048);
    doc = attest(key, NONCE, sizeof(NONCE), NULL);
    check_common(doc, key, "token");
    json_decref(doc);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

#ifdef KV_WITH_TPM
static kv_ctx *tpm_ctx(void)
{
    const char *conf = getenv("KV_EVIDENCE_TPM_CONF");
    kv_ctx *ctx = NULL;

    if (!conf)
        return NULL; /* tests/attest.sh runs the TPM part against swtpm */
    ck_assert_rc(NULL, kv_ctx_new(&ctx, conf), KV_OK);
    return ctx;
}

static void unmarshal_attest(json_t *doc, const char *path, TPMS_ATTEST *a)
{
    size_t len, off = 0;
    unsigned char *buf = field(doc, path, &len);

    ck_assert_int_eq(Tss2_MU_TPMS_ATTEST_Unmarshal(buf, len, &off, a), TSS2_RC_SUCCESS);
    ck_assert_uint_eq(off, len);
    free(buf);
    ck_assert_uint_eq(a->magic, TPM2_GENERATED_VALUE);
    ck_assert_uint_eq(a->extraData.size, sizeof(NONCE));
    ck_assert(!memcmp(a->extraData.buffer, NONCE, sizeof(NONCE)));
}

/* The AK's ECDSA signature (TPMT_SIGNATURE) over attest, checked with OpenSSL. */
static int ak_signed(json_t *doc, const char *attest_path, const char *sig_path,
                     EVP_PKEY *ak)
{
    size_t alen, slen, off = 0;
    unsigned char *att = field(doc, attest_path, &alen), *s = field(doc, sig_path, &slen);
    unsigned char *der = NULL;
    TPMT_SIGNATURE sig;
    ECDSA_SIG *es = ECDSA_SIG_new();
    EVP_MD_CTX *v = EVP_MD_CTX_new();
    int derlen, ok;

    ck_assert_int_eq(Tss2_MU_TPMT_SIGNATURE_Unmarshal(s, slen, &off, &sig), TSS2_RC_SUCCESS);
    ck_assert_uint_eq(sig.sigAlg, TPM2_ALG_ECDSA);
    ck_assert(ECDSA_SIG_set0(es, BN_bin2bn(sig.signature.ecdsa.signatureR.buffer,
                                           sig.signature.ecdsa.signatureR.size, NULL),
                             BN_bin2bn(sig.signature.ecdsa.signatureS.buffer,
                                       sig.signature.ecdsa.signatureS.size, NULL)) == 1);
    derlen = i2d_ECDSA_SIG(es, &der);
    ck_assert(EVP_DigestVerifyInit(v, NULL, EVP_sha256(), NULL, ak) == 1);
    ok = EVP_DigestVerify(v, der, (size_t)derlen, att, alen) == 1;
    EVP_MD_CTX_free(v);
    ECDSA_SIG_free(es);
    OPENSSL_free(der);
    free(att);
    free(s);
    return ok;
}

static EVP_PKEY *ak_pkey(kv_ctx *ctx)
{
    unsigned char der[512];
    const unsigned char *p = der;
    size_t len = sizeof(der);
    EVP_PKEY *pk;

    ck_assert_rc(ctx, kv_tpm_ak_public(ctx, der, &len), KV_OK);
    pk = d2i_PUBKEY(NULL, &p, (long)len);
    ck_assert(pk);
    return pk;
}

/* The TPM member checked part by part. */
static void check_tpm(kv_ctx *ctx, json_t *doc, bool quote, unsigned npcrs)
{
    json_t *tpm = json_object_get(doc, "tpm");
    unsigned char *area, *pub, name[34], *akarea = NULL;
    size_t len, publen, akarealen = 0;
    unsigned int mdlen;
    TPMS_ATTEST a;
    EVP_PKEY *ak = ak_pkey(ctx);

    ck_assert(tpm);
    /* the AK as kv_tpm_ak_public_area gives it */
    ck_assert_rc(ctx, kv_tpm_ak_public_area(ctx, &akarea, &akarealen), KV_OK);
    area = field(doc, "tpm.ak.public", &len);
    ck_assert_uint_eq(len, akarealen);
    ck_assert(!memcmp(area, akarea, len));
    free(area);
    free(akarea);
    /* certify: the key's name over its public area, signed by the AK */
    unmarshal_attest(doc, "tpm.certify.attest", &a);
    ck_assert_uint_eq(a.type, TPM2_ST_ATTEST_CERTIFY);
    area = field(doc, "tpm.certify.public", &len);
    ck_assert_uint_ge(len, 2);
    ck_assert_uint_eq((size_t)((area[0] << 8) | area[1]), len - 2);
    name[0] = 0x00;
    name[1] = 0x0b;
    ck_assert(EVP_Digest(area + 2, len - 2, name + 2, &mdlen, EVP_sha256(), NULL) == 1);
    ck_assert_uint_eq(a.attested.certify.name.size, sizeof(name));
    ck_assert(!memcmp(a.attested.certify.name.name, name, sizeof(name)));
    /* the certified public area holds key.public */
    {
        TPM2B_PUBLIC tp = { 0 };
        size_t off = 0;
        ck_assert_int_eq(Tss2_MU_TPM2B_PUBLIC_Unmarshal(area, len, &off, &tp), TSS2_RC_SUCCESS);
        pub = field(doc, "key.public", &publen);
        const unsigned char *p = pub;
        EVP_PKEY *kp = d2i_PUBKEY(NULL, &p, (long)publen);
        BIGNUM *x = NULL, *u;
        ck_assert(kp);
        if (tp.publicArea.type == TPM2_ALG_ECC) {
            ck_assert(EVP_PKEY_get_bn_param(kp, "qx", &x) == 1);
            u = BN_bin2bn(tp.publicArea.unique.ecc.x.buffer, tp.publicArea.unique.ecc.x.size,
                          NULL);
        } else {
            ck_assert(EVP_PKEY_get_bn_param(kp, "n", &x) == 1);
            u = BN_bin2bn(tp.publicArea.unique.rsa.buffer, tp.publicArea.unique.rsa.size, NULL);
        }
        ck_assert(u && BN_cmp(x, u) == 0);
        BN_free(u);
        BN_free(x);
        EVP_PKEY_free(kp);
        free(pub);
    }
    free(area);
    ck_assert_msg(ak_signed(doc, "tpm.certify.attest", "tpm.certify.signature", ak),
                  "the certify signature does not verify with the AK");
    /* quote: the values hash to its PCR digest */
    json_t *q = json_object_get(tpm, "quote");
    ck_assert(!q == !quote);
    if (quote) {
        json_t *bank = json_object_get(json_object_get(q, "pcrs"), "sha256");
        unsigned char md[32];
        EVP_MD_CTX *h = EVP_MD_CTX_new();

        unmarshal_attest(doc, "tpm.quote.attest", &a);
        ck_assert_uint_eq(a.type, TPM2_ST_ATTEST_QUOTE);
        ck_assert_uint_eq(json_object_size(bank), npcrs);
        ck_assert(EVP_DigestInit(h, EVP_sha256()) == 1);
        for (unsigned i = 0; i < npcrs; i++) {
            char idx[4];
            long dl;
            unsigned char *d;
            snprintf(idx, sizeof(idx), "%u", i);
            const char *hex = json_string_value(json_object_get(bank, idx));
            ck_assert_msg(hex && strlen(hex) == 64 && strspn(hex, "0123456789abcdef") == 64,
                          "PCR %u is not 64 lowercase hex digits", i);
            d = OPENSSL_hexstr2buf(hex, &dl);
            ck_assert(EVP_DigestUpdate(h, d, (size_t)dl) == 1);
            OPENSSL_free(d);
        }
        ck_assert(EVP_DigestFinal(h, md, &mdlen) == 1);
        EVP_MD_CTX_free(h);
        ck_assert_uint_eq(a.attested.quote.pcrDigest.size, 32);
        ck_assert(!memcmp(a.attested.quote.pcrDigest.buffer, md, 32));
        ck_assert_msg(ak_signed(doc, "tpm.quote.attest", "tpm.quote.signature", ak),
                      "the quote signature does not verify with the AK");
    }
    EVP_PKEY_free(ak);
}

START_TEST(test_tpm_documents)
{
    kv_ctx *ctx = tpm_ctx();
    kv_attest_opts o = KV_ATTEST_OPTS_INIT;
    char logpath[600], *big;
    FILE *f;

    if (!ctx)
        return;
    for (int i = 0; i < 2; i++) {
        kv_key *key = gen(ctx, "tpm", i ? KV_KEY_RSA_2048 : KV_KEY_EC_P256);
        json_t *doc = attest(key, NONCE, sizeof(NONCE), NULL);
        check_common(doc, key, "tpm");
        check_pop_binds(doc);
        check_tpm(ctx, doc, true, 8);
        ck_assert(!json_object_get(json_object_get(json_object_get(doc, "tpm"), "ak"), "chain"));
        json_decref(doc);
        kv_key_free(key);
    }
    kv_key *key = gen(ctx, "tpm", KV_KEY_EC_P256);
    /* no quote */
    o.flags = KV_ATTEST_NO_QUOTE;
    json_t *doc = attest(key, NONCE, sizeof(NONCE), &o);
    check_tpm(ctx, doc, false, 0);
    json_decref(doc);
    /* twelve PCRs: more than one TPM2_PCR_Read holds */
    o.flags = 0;
    o.pcrs = "sha256:0-11";
    doc = attest(key, NONCE, sizeof(NONCE), &o);
    check_tpm(ctx, doc, true, 12);
    json_decref(doc);
    /* an event log file: carried as it is; left out when asked or too large */
    snprintf(logpath, sizeof(logpath), "%s/event-log", tu_tmpdir());
    tu_write(logpath, "\x01\x02 event log bytes");
    o.pcrs = NULL;
    o.event_log = logpath;
    doc = attest(key, NONCE, sizeof(NONCE), &o);
    size_t len;
    unsigned char *log = field(doc, "tpm.quote.event_log", &len);
    ck_assert_uint_eq(len, 18);
    ck_assert(!memcmp(log, "\x01\x02 event log bytes", len));
    free(log);
    json_decref(doc);
    o.flags = KV_ATTEST_NO_EVENT_LOG;
    doc = attest(key, NONCE, sizeof(NONCE), &o);
    ck_assert(!json_object_get(json_object_get(json_object_get(doc, "tpm"), "quote"),
                               "event_log"));
    json_decref(doc);
    big = malloc(200 * 1024);
    memset(big, 'x', 200 * 1024 - 1);
    big[200 * 1024 - 1] = '\0';
    ck_assert((f = fopen(logpath, "w")) && fputs(big, f) >= 0 && fclose(f) == 0);
    free(big);
    o.flags = 0;
    doc = attest(key, NONCE, sizeof(NONCE), &o);
    ck_assert(!json_object_get(json_object_get(json_object_get(doc, "tpm"), "quote"),
                               "event_log"));
    json_decref(doc);
    /* the values are the TPM's: PCR 16 extended, then quoted */
    {
        unsigned char before[32], m[32], both[64], want[32], *got;
        size_t blen = sizeof(before);
        long glen = 0;
        unsigned int wl;
        memset(m, 0xa5, sizeof(m));
        ck_assert_rc(ctx, kv_tpm_pcr_read(ctx, "sha256", 16, before, &blen), KV_OK);
        ck_assert_rc(ctx, kv_tpm_pcr_extend(ctx, "sha256", 16, m, sizeof(m)), KV_OK);
        memcpy(both, before, 32);
        memcpy(both + 32, m, 32);
        ck_assert(EVP_Digest(both, 64, want, &wl, EVP_sha256(), NULL) == 1);
        o.event_log = NULL;
        o.flags = KV_ATTEST_NO_EVENT_LOG;
        o.pcrs = "sha256:16";
        doc = attest(key, NONCE, sizeof(NONCE), &o);
        const char *hex = json_string_value(json_object_get(json_object_get(json_object_get(
            json_object_get(json_object_get(doc, "tpm"), "quote"), "pcrs"), "sha256"), "16"));
        ck_assert(hex);
        got = OPENSSL_hexstr2buf(hex, &glen);
        ck_assert(got && glen == 32 && !memcmp(got, want, 32));
        OPENSSL_free(got);
        json_decref(doc);
    }
    /* a bad PCR selection is the caller's error */
    o.event_log = NULL;
    o.pcrs = "sha256:0-30";
    char *text = NULL;
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &o, &text), KV_ERR_INVALID_ARG);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* TPM commands one kv_attest sends once the AK and the key are loaded. */
START_TEST(test_tpm_commands)
{
    kv_ctx *ctx = tpm_ctx();
    kv_attest_opts o = KV_ATTEST_OPTS_INIT;
    uint64_t before, after;
    char *text = NULL;

    if (!ctx)
        return;
    kv_key *key = gen(ctx, "tpm", KV_KEY_EC_P256);
    o.flags = KV_ATTEST_NO_EVENT_LOG;
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &o, &text), KV_OK);
    kv_string_free(text);
    ck_assert_rc(ctx, kv_ctx_backend_stat(ctx, "tpm", "commands", &before), KV_OK);
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &o, &text), KV_OK);
    kv_string_free(text);
    ck_assert_rc(ctx, kv_ctx_backend_stat(ctx, "tpm", "commands", &after), KV_OK);
    printf("TPM commands per kv_attest after warm-up (sha256:0-7): %llu "
           "(TPM2_Certify, TPM2_PCR_Read, TPM2_Quote, TPM2_Sign)\n",
           (unsigned long long)(after - before));
    ck_assert_uint_eq(after - before, 4);
    o.flags |= KV_ATTEST_NO_QUOTE;
    ck_assert_rc(ctx, kv_ctx_backend_stat(ctx, "tpm", "commands", &before), KV_OK);
    ck_assert_rc(ctx, kv_attest(key, NONCE, sizeof(NONCE), &o, &text), KV_OK);
    kv_string_free(text);
    ck_assert_rc(ctx, kv_ctx_backend_stat(ctx, "tpm", "commands", &after), KV_OK);
    ck_assert_uint_eq(after - before, 2);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST

/* A CBOR map's value for a text key. */
static cbor_item_t *cbor_get(cbor_item_t *map, const char *k)
{
    struct cbor_pair *pairs = cbor_map_handle(map);

    for (size_t i = 0; i < cbor_map_size(map); i++)
        if (cbor_isa_string(pairs[i].key) && cbor_string_length(pairs[i].key) == strlen(k) &&
            !memcmp(cbor_string_handle(pairs[i].key), k, strlen(k)))
            return pairs[i].value;
    return NULL;
}

static cbor_item_t *decode_attobj(const unsigned char *obj, size_t len)
{
    struct cbor_load_result res;
    cbor_item_t *top = cbor_load(obj, len, &res);

    ck_assert_msg(top && res.error.code == CBOR_ERR_NONE && res.read == len,
                  "the attestation object is not one CBOR item");
    ck_assert(cbor_isa_map(top) && cbor_map_size(top) == 3);
    ck_assert(cbor_get(top, "fmt") && cbor_string_length(cbor_get(top, "fmt")) == 3 &&
              !memcmp(cbor_string_handle(cbor_get(top, "fmt")), "tpm", 3));
    return top;
}

START_TEST(test_tpm_ak_chain_and_webauthn)
{
    kv_ctx *ctx = tpm_ctx();
    kv_cert_opts co = KV_CERT_OPTS_INIT;
    kv_webauthn_opts wo = KV_WEBAUTHN_OPTS_INIT;
    unsigned char akder[512], cdh[32], *obj = NULL, ad_cdh[4096], extra[32];
    size_t akderlen = sizeof(akder), objlen = 0;
    unsigned int mdlen;
    char *ca_pem = NULL, *ak_pem = NULL, *other_pem = NULL, *got = NULL;
    kv_key *ca, *key, *soft;
    json_t *doc;

    if (!ctx)
        return;
    key = gen(ctx, "tpm", KV_KEY_EC_P256);
    memset(cdh, 0x5a, sizeof(cdh));
    wo.rp_id = "example.org";
    wo.client_data_hash = cdh;
    /* not enrolled: no chain, so no x5c */
    ck_assert_rc(ctx, kv_tpm_ak_chain_pem(ctx, &got), KV_ERR_KEY_NOT_FOUND);
    ck_assert_rc(ctx, kv_attest_webauthn(key, &wo, &obj, &objlen), KV_ERR_KEY_NOT_FOUND);
    ck_assert(strstr(kv_errmsg(ctx), "kv_tpm_ak_store_chain"));
    /* the vault CA issues the AK a tpm-ak certificate */
    ca = gen(ctx, "software", KV_KEY_EC_P256);
    co.subject = "CN=evidence AK CA";
    co.flags = KV_CERT_CA;
    ck_assert_rc(ctx, kv_cert_selfsign(ca, &co, &ca_pem), KV_OK);
    ck_assert_rc(ctx, kv_key_store_chain(ca, (unsigned char *)ca_pem, strlen(ca_pem)), KV_OK);
    ck_assert_rc(ctx, kv_tpm_ak_public(ctx, akder, &akderlen), KV_OK);
    kv_cert_opts ao = KV_CERT_OPTS_INIT;
    ao.tpm_manufacturer = "id:49424d00";
    ao.tpm_model = "swtpm";
    ao.tpm_version = "id:20191023";
    ck_assert_rc(ctx, kv_ca_issue_pubkey(ca, "tpm-ak", akder, akderlen, &ao, &ak_pem), KV_OK);
    /* a certificate for another key is refused */
    ck_assert_rc(ctx, kv_tpm_ak_store_chain(ctx, ca_pem, strlen(ca_pem)), KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_tpm_ak_store_chain(ctx, "junk", 4), KV_ERR_BAD_INPUT);
    ck_assert_rc(ctx, kv_tpm_ak_store_chain(ctx, ak_pem, strlen(ak_pem)), KV_OK);
    ck_assert_rc(ctx, kv_tpm_ak_chain_pem(ctx, &got), KV_OK);
    ck_assert_str_eq(got, ak_pem);
    kv_string_free(got);
    /* the evidence carries it */
    doc = attest(key, NONCE, sizeof(NONCE), NULL);
    ck_assert_uint_eq(json_array_size(json_object_get(
                          json_object_get(json_object_get(doc, "tpm"), "ak"), "chain")), 1);
    json_decref(doc);

    /* the WebAuthn object: authData, certInfo over SHA-256(authData || cdh), x5c */
    ck_assert_rc(ctx, kv_attest_webauthn(key, &wo, &obj, &objlen), KV_OK);
    cbor_item_t *top = decode_attobj(obj, objlen);
    cbor_item_t *stmt = cbor_get(top, "attStmt"), *ad = cbor_get(top, "authData");
    ck_assert(stmt && ad && cbor_isa_bytestring(ad));
    ck_assert(cbor_isa_map(stmt) && cbor_map_size(stmt) == 6);
    ck_assert(cbor_string_length(cbor_get(stmt, "ver")) == 3);
    ck_assert(cbor_isa_negint(cbor_get(stmt, "alg")) && cbor_get_int(cbor_get(stmt, "alg")) == 6);
    ck_assert(cbor_array_size(cbor_get(stmt, "x5c")) == 1);
    size_t adlen = cbor_bytestring_length(ad);
    const unsigned char *adp = cbor_bytestring_handle(ad);
    ck_assert_uint_ge(adlen, 55 + 32);
    ck_assert(EVP_Digest("example.org", 11, extra, &mdlen, EVP_sha256(), NULL) == 1);
    ck_assert(!memcmp(adp, extra, 32));
    ck_assert_uint_eq(adp[32], 0x41);
    ck_assert_uint_eq((adp[53] << 8) | adp[54], 32);
    memcpy(ad_cdh, adp, adlen);
    memcpy(ad_cdh + adlen, cdh, 32);
    ck_assert(EVP_Digest(ad_cdh, adlen + 32, extra, &mdlen, EVP_sha256(), NULL) == 1);
    cbor_item_t *ci = cbor_get(stmt, "certInfo");
    TPMS_ATTEST a;
    size_t off = 0;
    ck_assert_int_eq(Tss2_MU_TPMS_ATTEST_Unmarshal(cbor_bytestring_handle(ci),
                                                   cbor_bytestring_length(ci), &off, &a),
                     TSS2_RC_SUCCESS);
    ck_assert_uint_eq(a.type, TPM2_ST_ATTEST_CERTIFY);
    ck_assert_uint_eq(a.extraData.size, 32);
    ck_assert(!memcmp(a.extraData.buffer, extra, 32));
    cbor_item_t *sig = cbor_get(stmt, "sig");
    ck_assert(cbor_bytestring_handle(sig)[0] == 0x30); /* DER */
    cbor_decref(&top);
    free(obj);

    /* ACME: extraData = SHA-256(key authorization); sig as TPMT_SIGNATURE */
    wo.client_data_hash = NULL;
    wo.acme_key_authorization = "token.thumbprint";
    wo.flags = KV_WEBAUTHN_SIG_TPMT;
    ck_assert_rc(ctx, kv_attest_webauthn(key, &wo, &obj, &objlen), KV_OK);
    top = decode_attobj(obj, objlen);
    stmt = cbor_get(top, "attStmt");
    ci = cbor_get(stmt, "certInfo");
    off = 0;
    ck_assert_int_eq(Tss2_MU_TPMS_ATTEST_Unmarshal(cbor_bytestring_handle(ci),
                                                   cbor_bytestring_length(ci), &off, &a),
                     TSS2_RC_SUCCESS);
    ck_assert(EVP_Digest("token.thumbprint", 16, extra, &mdlen, EVP_sha256(), NULL) == 1);
    ck_assert(!memcmp(a.extraData.buffer, extra, 32));
    sig = cbor_get(stmt, "sig");
    ck_assert(cbor_bytestring_handle(sig)[0] == 0x00 && cbor_bytestring_handle(sig)[1] == 0x18);
    cbor_decref(&top);
    free(obj);

    /* refused: both or neither hash, no rp id, a software key */
    wo.client_data_hash = cdh;
    ck_assert_rc(ctx, kv_attest_webauthn(key, &wo, &obj, &objlen), KV_ERR_INVALID_ARG);
    wo.acme_key_authorization = NULL;
    wo.rp_id = NULL;
    ck_assert_rc(ctx, kv_attest_webauthn(key, &wo, &obj, &objlen), KV_ERR_INVALID_ARG);
    wo.rp_id = "example.org";
    soft = gen(ctx, "software", KV_KEY_EC_P256);
    ck_assert_rc(ctx, kv_attest_webauthn(soft, &wo, &obj, &objlen), KV_ERR_UNSUPPORTED);
    ck_assert_ptr_null(obj);
    ck_assert_uint_eq(objlen, 0);
    kv_key_free(soft);
    (void)other_pem;
    kv_string_free(ca_pem);
    kv_string_free(ak_pem);
    kv_key_free(ca);
    kv_key_free(key);
    kv_ctx_free(ctx);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("evidence");
    TCase *tc = tcase_create("evidence");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_software_documents);
    tcase_add_test(tc, test_nonce_and_options);
    tcase_add_test(tc, test_key_chain);
    tcase_add_test(tc, test_token_document);
#ifdef KV_WITH_TPM
    tcase_add_test(tc, test_tpm_documents);
    tcase_add_test(tc, test_tpm_commands);
    tcase_add_test(tc, test_tpm_ak_chain_and_webauthn);
#endif
    suite_add_tcase(s, tc);
    return tu_run(s);
}
