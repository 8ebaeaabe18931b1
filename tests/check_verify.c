/*
 * check_verify.c - kv_policy_load and kv_evidence_verify (tests/verify.sh
 * runs it with a SoftHSM token and a bare swtpm).
 *
 * Evidence comes from real backends: a software key, a SoftHSM key and a
 * swtpm key (certify and quote by the TPM's AK), certificates from vault
 * CAs (kv_ca_issue "device-identity", kv_ca_issue_pubkey "tpm-ak"). The
 * documents are made here from the design's format, with the library's
 * TPM primitives, so that mutated copies can be signed again by the
 * identity key: each negative case then fails the one check it is about
 * and not merely the proof of possession. The cases that do not depend on
 * a TPM's seeds are files under tests/evidence/ (MANIFEST); the others are
 * made fresh on every run (and written to $KV_EVIDENCE_OUT when it is set,
 * for inspection).
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "policy.h"
#include "testutil.h"
#ifdef KV_WITH_TPM
#include "tpm.h"
#endif

static const unsigned char NONCE[32] = "verifier nonce, 32 bytes long!!";
static const unsigned char OTHER_NONCE[32] = "another nonce, also 32 bytes!!!";

/* ---- helpers ------------------------------------------------------------------ */

static char *b64u(const unsigned char *p, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    int len;

    ck_assert_ptr_nonnull(out);
    len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    ck_assert_int_ge(len, 0);
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    while (len > 0 && out[len - 1] == '=')
        out[--len] = '\0';
    return out;
}

static void set_b64u(json_t *obj, const char *name, const unsigned char *p, size_t n)
{
    char *s = b64u(p, n);
    ck_assert_int_eq(json_object_set_new(obj, name, json_string(s)), 0);
    free(s);
}

static unsigned char *unb64u(const char *s, size_t *n)
{
    size_t len = strlen(s), pad = (4 - len % 4) % 4;
    char *tmp = malloc(len + pad + 1);
    unsigned char *out = malloc(len + 3);
    int got;

    for (size_t i = 0; i < len; i++)
        tmp[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    memset(tmp + len, '=', pad);
    got = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)(len + pad));
    ck_assert_int_ge(got, (int)pad);
    free(tmp);
    *n = (size_t)got - pad;
    return out;
}

/* Flip one bit of a base64url member at byte offset off (negative: from the end). */
static void flip(json_t *obj, const char *name, long off)
{
    size_t n;
    unsigned char *p = unb64u(json_string_value(json_object_get(obj, name)), &n);

    off = off < 0 ? (long)n + off : off;
    ck_assert(off >= 0 && (size_t)off < n);
    p[off] ^= 0x01;
    set_b64u(obj, name, p, n);
    free(p);
}

static void utc_now(char out[21], long offset)
{
    time_t t = time(NULL) + offset;
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The proof of possession, as the design gives it: the identity key signs
 * "keyvault-evidence-pop-v1" || 0x00 || SHA-256(C). */
static void sign_pop(json_t *doc, kv_key *key)
{
    json_t *copy = json_copy(doc), *pop = json_object();
    unsigned char msg[25 + 32], sig[1024];
    size_t siglen = sizeof(sig);
    unsigned int mdlen = 32;
    kv_key_info info;
    char *c;

    json_object_del(copy, "pop");
    c = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    ck_assert_ptr_nonnull(c);
    memcpy(msg, "keyvault-evidence-pop-v1", 25);
    ck_assert_int_eq(EVP_Digest(c, strlen(c), msg + 25, &mdlen, EVP_sha256(), NULL), 1);
    ck_assert_rc(key->ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_rc(key->ctx, kv_sign(key, KV_ALG_DEFAULT, 0, msg, sizeof(msg), sig, &siglen), KV_OK);
    json_object_set_new(pop, "alg", json_string(kv_sign_alg_name(
                                        kv_type_desc_get(info.type)->default_alg)));
    set_b64u(pop, "signature", sig, siglen);
    json_object_set_new(doc, "pop", pop);
    free(c);
    json_decref(copy);
}

/* The evidence of key without its tpm section; `assurance` NULL: the key's own. */
static json_t *base_doc(kv_key *key, const unsigned char *nonce, const char *assurance)
{
    json_t *doc = json_object(), *k = json_object();
    unsigned char pub[1024];
    size_t publen = sizeof(pub);
    char created[21], *chain = NULL;
    kv_key_info info;

    ck_assert_rc(key->ctx, kv_key_get_info(key, &info), KV_OK);
    ck_assert_rc(key->ctx, kv_key_public_der(key, pub, &publen), KV_OK);
    utc_now(created, 0);
    json_object_set_new(doc, "format", json_string("keyvault-evidence"));
    json_object_set_new(doc, "version", json_integer(1));
    json_object_set_new(doc, "created", json_string(created));
    set_b64u(doc, "nonce", nonce, 32);
    json_object_set_new(doc, "assurance",
                        json_string(assurance ? assurance : kv_assurance_name(info.assurance)));
    json_object_set_new(k, "type", json_string(kv_key_type_name(info.type)));
    set_b64u(k, "public", pub, publen);
    if (kv_key_chain_pem(key, &chain) == KV_OK) {
        STACK_OF(X509) *sk = NULL;
        json_t *arr = json_array();
        ck_assert_rc(key->ctx, kv_chain_parse(key->ctx, "chain", KV_ERR_CORRUPT,
                                              (unsigned char *)chain, strlen(chain), &sk), KV_OK);
        for (int i = 0; i < sk_X509_num(sk); i++) {
            unsigned char *der = NULL;
            int n = i2d_X509(sk_X509_value(sk, i), &der);
            char *s = b64u(der, (size_t)n);
            json_array_append_new(arr, json_string(s));
            free(s);
            OPENSSL_free(der);
        }
        json_object_set_new(k, "chain", arr);
        sk_X509_pop_free(sk, X509_free);
        kv_string_free(chain);
    }
    json_object_set_new(doc, "key", k);
    return doc;
}

static char *dump(const json_t *doc, size_t *len)
{
    char *s = json_dumps(doc, JSON_COMPACT);
    ck_assert_ptr_nonnull(s);
    *len = strlen(s);
    return s;
}

/* kv_attest's document for key, parsed. */
static json_t *attest_doc(kv_key *key, const kv_attest_opts *opts)
{
    char *text = NULL;
    json_error_t err;
    json_t *doc;

    ck_assert_rc(key->ctx, kv_attest(key, NONCE, sizeof(NONCE), opts, &text), KV_OK);
    doc = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    ck_assert_msg(doc != NULL, "kv_attest's document does not parse: %s", err.text);
    kv_string_free(text);
    return doc;
}

/* Verify; returns the rc and leaves the verdict in *v. */
static kv_rc verify_doc(kv_ctx *ctx, const json_t *doc, const unsigned char *nonce,
                        const kv_policy *pol, kv_verdict **v)
{
    size_t len;
    char *s = dump(doc, &len);
    kv_rc rc = kv_evidence_verify(ctx, s, len, nonce, 32, pol, v);

    free(s);
    return rc;
}

static const kv_verdict_check *find_check(const kv_verdict *v, const char *name)
{
    for (size_t i = 0; v && i < v->count; i++)
        if (strcmp(v->checks[i].name, name) == 0)
            return &v->checks[i];
    return NULL;
}

static void print_verdict(const char *what, const kv_verdict *v)
{
    printf("  %s:\n", what);
    for (size_t i = 0; v && i < v->count; i++)
        printf("    %-20s %s %s\n", v->checks[i].name, v->checks[i].passed ? "ok  " : "FAIL",
               v->checks[i].detail);
}

static void assert_passes(kv_ctx *ctx, const json_t *doc, const kv_policy *pol,
                          kv_assurance want, const char *what)
{
    kv_verdict *v = NULL;
    kv_rc rc = verify_doc(ctx, doc, NONCE, pol, &v);

    if (rc != KV_OK)
        print_verdict(what, v);
    ck_assert_msg(rc == KV_OK, "%s: %s", what, kv_errmsg(ctx));
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(v->ok, 1);
    ck_assert_int_eq(v->assurance, want);
    for (size_t i = 0; i < v->count; i++)
        ck_assert_msg(v->checks[i].passed, "%s: %s", what, v->checks[i].name);
    kv_verdict_free(v);
}

/* The document must be refused with check `name` among the failed ones. */
static void assert_fails(kv_ctx *ctx, const char *doc, size_t len, const unsigned char *nonce,
                         const kv_policy *pol, const char *name, const char *what)
{
    kv_verdict *v = NULL;
    kv_rc rc = kv_evidence_verify(ctx, doc, len, nonce, 32, pol, &v);
    const kv_verdict_check *c = find_check(v, name);

    if (!c || c->passed)
        print_verdict(what, v);
    ck_assert_msg(rc == KV_ERR_EVIDENCE, "%s: expected KV_ERR_EVIDENCE, got %s", what,
                  kv_strerror(rc));
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(v->ok, 0);
    ck_assert_msg(c != NULL, "%s: check %s did not run", what, name);
    ck_assert_msg(!c->passed, "%s: check %s passed", what, name);
    ck_assert_msg(strstr(kv_errmsg(ctx), "failed") != NULL, "%s: %s", what, kv_errmsg(ctx));
    kv_verdict_free(v);
}

/* A policy file in the test's directory. */
static kv_policy *policy(kv_ctx *ctx, const char *text)
{
    char path[700];
    kv_policy *p = NULL;
    static int n;

    snprintf(path, sizeof(path), "%s/policy-%d.conf", tu_tmpdir(), n++);
    tu_write(path, text);
    ck_assert_rc(ctx, kv_policy_load(ctx, path, &p), KV_OK);
    return p;
}

/* ---- CAs in the vault ------------------------------------------------------------ */

/* A vault key NAME with a self-signed CA certificate, written to DIR/NAME.pem. */
static kv_key *make_ca(kv_ctx *ctx, const char *name)
{
    kv_key *ca = NULL;
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    char subj[100], path[700], *pem = NULL, uniq[KV_NAME_MAX + 1];

    /* unique: the CA's records live in the home directory, which outlives a test */
    snprintf(uniq, sizeof(uniq), "%s-%ld-%d", name, (long)getpid(), rand() % 100000);
    snprintf(subj, sizeof(subj), "CN=%s,O=Verifier Test", name);
    o.subject = subj;
    o.flags = KV_CERT_CA;
    o.days = 30;
    ck_assert_rc(ctx, kv_key_generate(ctx, uniq, KV_KEY_EC_P256, "software", &ca), KV_OK);
    ck_assert_rc(ctx, kv_cert_selfsign(ca, &o, &pem), KV_OK);
    ck_assert_rc(ctx, kv_key_store_cert(ca, (unsigned char *)pem, strlen(pem)), KV_OK);
    snprintf(path, sizeof(path), "%s/%s.pem", tu_tmpdir(), name);
    tu_write(path, pem);
    kv_string_free(pem);
    return ca;
}

/* The identity key's certificate from ca ("device-identity"), stored with it. */
static void certify_identity(kv_key *ca, kv_key *key, const char *cn)
{
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    char subj[100], *csr = NULL, *pem = NULL;

    snprintf(subj, sizeof(subj), "CN=%s,O=Fleet", cn);
    o.subject = subj;
    ck_assert_rc(key->ctx, kv_csr_create(key, &o, &csr), KV_OK);
    ck_assert_rc(ca->ctx, kv_ca_issue(ca, "device-identity", (unsigned char *)csr, strlen(csr),
                                      NULL, &pem), KV_OK);
    ck_assert_rc(key->ctx, kv_key_store_chain(key, (unsigned char *)pem, strlen(pem)), KV_OK);
    kv_string_free(csr);
    kv_string_free(pem);
}

/* An expired certificate for key, made by OpenSSL with a throwaway CA
 * written to DIR/expired-ca.pem, stored with the key. */
static void expired_identity(kv_key *key)
{
    EVP_PKEY *cakey = EVP_EC_gen("P-256");
    X509 *ca = X509_new(), *leaf = X509_new();
    X509_NAME *n = X509_NAME_new();
    BIO *b = BIO_new(BIO_s_mem());
    char path[700], *pem;
    FILE *f;

    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (unsigned char *)"Expired CA", -1, -1, 0);
    X509_set_version(ca, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
    X509_set_subject_name(ca, n);
    X509_set_issuer_name(ca, n);
    X509_gmtime_adj(X509_getm_notBefore(ca), -10L * 86400);
    X509_gmtime_adj(X509_getm_notAfter(ca), 10L * 86400);
    X509_set_pubkey(ca, cakey);
    {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints,
                                                "critical,CA:TRUE");
        X509_add_ext(ca, e, -1);
        X509_EXTENSION_free(e);
    }
    ck_assert_int_gt(X509_sign(ca, cakey, EVP_sha256()), 0);
    X509_set_version(leaf, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(leaf), 2);
    X509_NAME_free(n);
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (unsigned char *)"old device", -1, -1, 0);
    X509_set_subject_name(leaf, n);
    X509_set_issuer_name(leaf, X509_get_subject_name(ca));
    X509_gmtime_adj(X509_getm_notBefore(leaf), -5L * 86400);
    X509_gmtime_adj(X509_getm_notAfter(leaf), -1L * 86400);
    X509_set_pubkey(leaf, key->pub);
    ck_assert_int_gt(X509_sign(leaf, cakey, EVP_sha256()), 0);
    PEM_write_bio_X509(b, leaf);
    pem = kv_bio_text(b, NULL);
    ck_assert_rc(key->ctx, kv_key_store_chain(key, (unsigned char *)pem, strlen(pem)), KV_OK);
    free(pem);
    snprintf(path, sizeof(path), "%s/expired-ca.pem", tu_tmpdir());
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    PEM_write_X509(f, ca);
    fclose(f);
    BIO_free(b);
    X509_NAME_free(n);
    X509_free(ca);
    X509_free(leaf);
    EVP_PKEY_free(cakey);
}

/* ---- contexts on the three backends ------------------------------------------------- */

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static kv_ctx *token_ctx(void)
{
    char path[700];
    kv_ctx *ctx = NULL;
    const char *dir = env_or_null("KV_P11_DIR");

    ck_assert_msg(dir != NULL, "KV_P11_DIR is not set: run through tests/verify.sh");
    snprintf(path, sizeof(path), "%s/keyvault.conf", dir);
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

static kv_ctx *tpm_ctx(void)
{
    char path[700], text[2048];
    kv_ctx *ctx = NULL;
    const char *tcti = env_or_null("KV_TPM_TCTI");

    ck_assert_msg(tcti != NULL, "KV_TPM_TCTI is not set: run through tests/verify.sh");
    snprintf(path, sizeof(path), "%s/tpm.conf", tu_tmpdir());
    snprintf(text, sizeof(text), "[keyvault]\nbackends = tpm\n[tpm]\nkeys = %s/tpmkeys\n"
             "tcti = %s\n", tu_tmpdir(), tcti);
    tu_write(path, text);
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

/* A context for the verifier alone: its only backend, a TPM, is unreachable. */
static kv_ctx *verifier_ctx(void)
{
    char path[700];
    kv_ctx *ctx = NULL;

    snprintf(path, sizeof(path), "%s/verifier.conf", tu_tmpdir());
    tu_write(path, "[keyvault]\nbackends = tpm\n[tpm]\ntcti = swtpm:host=127.0.0.1,port=9\n");
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

/* A new P-256 key; names are made unique, since the token outlives a test. */
static kv_key *gen(kv_ctx *ctx, const char *name, const char *backend)
{
    kv_key *key = NULL;
    char uniq[KV_NAME_MAX + 1];

    snprintf(uniq, sizeof(uniq), "%s-%ld-%d", name, (long)getpid(), rand() % 100000);
    ck_assert_rc(ctx, kv_key_generate(ctx, uniq, KV_KEY_EC_P256, backend, &key), KV_OK);
    return key;
}

#ifdef KV_WITH_TPM
static kv_backend *tpm_be(kv_ctx *ctx)
{
    for (size_t i = 0; i < ctx->nbackends; i++)
        if (ctx->backends[i].ops && !strcmp(ctx->backends[i].ops->name, "tpm"))
            return &ctx->backends[i];
    ck_abort_msg("no tpm backend");
    return NULL;
}

static void set_public(json_t *obj, const char *name, const TPM2B_PUBLIC *pub)
{
    uint8_t buf[sizeof(TPM2B_PUBLIC)];
    size_t off = 0;

    ck_assert_int_eq(Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, sizeof(buf), &off), 0);
    set_b64u(obj, name, buf, off);
}

/* The tpm section for a TPM key: the AK (its chain when ak_pem is given),
 * the certify, and a quote of `pcrs` (a list of sha256 indices; NULL: none). */
static json_t *tpm_section(kv_key *key, const char *ak_pem, const unsigned *pcrs, size_t npcrs)
{
    kv_ctx *ctx = key->ctx;
    json_t *tpm = json_object(), *ak = json_object(), *cert = json_object();
    struct tpm_key *akk = NULL;
    kv_attestation *a = NULL;

    ck_assert_rc(ctx, tpm_ak_get(tpm_be(ctx), &akk), KV_OK);
    set_public(ak, "public", &akk->obj.pub);
    if (ak_pem) {
        STACK_OF(X509) *sk = NULL;
        json_t *arr = json_array();
        ck_assert_rc(ctx, kv_chain_parse(ctx, "AK chain", KV_ERR_CORRUPT,
                                         (const unsigned char *)ak_pem, strlen(ak_pem), &sk),
                     KV_OK);
        for (int i = 0; i < sk_X509_num(sk); i++) {
            unsigned char *der = NULL;
            int n = i2d_X509(sk_X509_value(sk, i), &der);
            char *s = b64u(der, (size_t)n);
            json_array_append_new(arr, json_string(s));
            free(s);
            OPENSSL_free(der);
        }
        json_object_set_new(ak, "chain", arr);
        sk_X509_pop_free(sk, X509_free);
    }
    json_object_set_new(tpm, "ak", ak);
    set_public(cert, "public", &((struct tpm_key *)key->bk)->obj.pub);
    ck_assert_rc(ctx, kv_key_certify(key, NONCE, sizeof(NONCE), &a), KV_OK);
    set_b64u(cert, "attest", a->attest, a->attest_len);
    set_b64u(cert, "signature", a->signature, a->signature_len);
    kv_attestation_free(a);
    json_object_set_new(tpm, "certify", cert);
    if (pcrs) {
        json_t *q = json_object(), *vals = json_object(), *banks = json_object();
        char sel[128] = "sha256:", idx[8];
        for (size_t i = 0; i < npcrs; i++)
            snprintf(sel + strlen(sel), sizeof(sel) - strlen(sel), "%s%u", i ? "," : "", pcrs[i]);
        ck_assert_rc(ctx, kv_tpm_quote(ctx, sel, NONCE, sizeof(NONCE), &a), KV_OK);
        set_b64u(q, "attest", a->attest, a->attest_len);
        set_b64u(q, "signature", a->signature, a->signature_len);
        kv_attestation_free(a);
        for (size_t i = 0; i < npcrs; i++) {
            unsigned char v[32];
            char hex[65];
            size_t len = sizeof(v);
            ck_assert_rc(ctx, kv_tpm_pcr_read(ctx, "sha256", pcrs[i], v, &len), KV_OK);
            for (size_t j = 0; j < 32; j++)
                snprintf(hex + 2 * j, 3, "%02x", v[j]);
            snprintf(idx, sizeof(idx), "%u", pcrs[i]);
            json_object_set_new(vals, idx, json_string(hex));
        }
        json_object_set_new(banks, "sha256", vals);
        json_object_set_new(q, "pcrs", banks);
        json_object_set_new(tpm, "quote", q);
    }
    return tpm;
}

/* The AK's certificate from the vault CA ca, profile tpm-ak (PEM chain). */
static char *ak_cert(kv_ctx *tpm, kv_key *ca)
{
    unsigned char der[512];
    size_t len = sizeof(der);
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    char *pem = NULL;

    ck_assert_rc(tpm, kv_tpm_ak_public(tpm, der, &len), KV_OK);
    o.tpm_manufacturer = "id:53544D20";
    o.tpm_model = "swtpm";
    o.tpm_version = "id:00020000";
    ck_assert_rc(ca->ctx, kv_ca_issue_pubkey(ca, "tpm-ak", der, len, &o, &pem), KV_OK);
    return pem;
}

/* The hex SHA-256 of the AK's SubjectPublicKeyInfo, for ak_pin. */
static void ak_pin(kv_ctx *tpm, char hex[65])
{
    unsigned char der[512], md[32];
    size_t len = sizeof(der);
    unsigned int n = 32;

    ck_assert_rc(tpm, kv_tpm_ak_public(tpm, der, &len), KV_OK);
    EVP_Digest(der, len, md, &n, EVP_sha256(), NULL);
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

static void pcr_hex(kv_ctx *tpm, unsigned index, char hex[65])
{
    unsigned char v[32];
    size_t len = sizeof(v);

    ck_assert_rc(tpm, kv_tpm_pcr_read(tpm, "sha256", index, v, &len), KV_OK);
    for (size_t j = 0; j < 32; j++)
        snprintf(hex + 2 * j, 3, "%02x", v[j]);
}
#endif

/* ---- policy files ------------------------------------------------------------------- */

START_TEST(policy_file)
{
    kv_ctx *ctx = tu_ctx(NULL);
    kv_key *ca = make_ca(ctx, "policy-ca");
    char path[700], text[2048];
    kv_policy *p = NULL;
    static const struct { const char *text, *want; } bad[] = {
        { "[evidence]\nassurance = tpm\n", "no way to trust an AK" },
        { "[evidence]\nassurance = gold\n", "expected tpm, token or software" },
        { "[evidence]\nassurance = software\nmax_age = 0\n", "max_age" },
        { "[evidence]\nassurance = software\nmax_age = 10x\n", "max_age" },
        { "[trust]\nak_pin = 00ff\n", "ak_pin" },
        { "[trust]\nanchors = missing.pem\n[evidence]\nassurance = software\n", "missing.pem" },
        { "[trust]\nregistry =\n", "registry is empty" },
        { "[evidence]\nassurance = software\n[pcrs]\n0 = 00\n", "no bank" },
        { "[evidence]\nassurance = software\n[pcrs]\nbank = md5\n0 = 00\n", "bank" },
        { "[evidence]\nassurance = software\n[pcrs]\nbank = sha256\n0 = 00\n", "64 hex" },
        { "[evidence]\nassurance = software\n[pcrs]\nbank = sha256\n24 = 00\n", "unknown key" },
        { "[evidence]\nassurance = software\nmax_agee = 3\n", "did you mean max_age" },
        { "[evidnce]\nassurance = software\n", "did you mean [evidence]" },
        { "[evidence]\nassurance = software\nassurance = tpm\n", "given twice" },
    };

    (void)ca;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(path, sizeof(path), "%s/bad-%zu.conf", tu_tmpdir(), i);
        tu_write(path, bad[i].text);
        ck_assert_rc(ctx, kv_policy_load(ctx, path, &p), KV_ERR_CONFIG);
        ck_assert_ptr_null(p);
        ck_assert_msg(strstr(kv_errmsg(ctx), bad[i].want) != NULL, "case %zu: %s", i,
                      kv_errmsg(ctx));
    }
    /* hostile anchors files: a FIFO (read, it would block for ever), one of
     * 2 MiB, one of 513 certificates (the CA's, repeated): refused at once */
    {
        static const struct { const char *file, *want; } hostile[] = {
            { "fifo.pem", "is a FIFO, not a regular file" },
            { "huge.pem", "larger than 1048576 bytes" },
            { "many.pem", "holds more than 512 certificates" },
        };
        snprintf(path, sizeof(path), "%s/fifo.pem", tu_tmpdir());
        ck_assert_int_eq(mkfifo(path, 0600), 0);
        ck_assert_int_eq(tu_sh("head -c 2097152 /dev/zero | tr '\\0' a >'%s/huge.pem'",
                               tu_tmpdir()), 0);
        snprintf(path, sizeof(path), "%s/many.pem", tu_tmpdir());
        ck_assert_int_eq(tu_sh("for i in $(seq 513); do cat '%s/policy-ca.pem'; done >'%s'",
                               tu_tmpdir(), path), 0);
        for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
            snprintf(text, sizeof(text), "[trust]\nanchors = %s\n[evidence]\n"
                     "assurance = software\n", hostile[i].file);
            snprintf(path, sizeof(path), "%s/hostile-%zu.conf", tu_tmpdir(), i);
            tu_write(path, text);
            ck_assert_rc(ctx, kv_policy_load(ctx, path, &p), KV_ERR_CONFIG);
            ck_assert_ptr_null(p);
            ck_assert_msg(strstr(kv_errmsg(ctx), hostile[i].want) != NULL &&
                          strstr(kv_errmsg(ctx), "[trust] anchors") != NULL, "%s: %s",
                          hostile[i].file, kv_errmsg(ctx));
        }
    }
    /* a good one: anchors relative to the policy's directory, pins listed, PCRs */
    snprintf(text, sizeof(text),
             "[trust]\nanchors = policy-ca.pem\nak_anchors = %s/policy-ca.pem\n"
             "ak_pin = %064d, %064d\n[evidence]\nassurance = tpm\nmax_age = 60\n"
             "[pcrs]\nbank = sha256\n7 = %064d\n0 = %064d\n", tu_tmpdir(), 1, 2, 7, 0);
    p = policy(ctx, text);
    ck_assert_ptr_nonnull(p->anchors);
    ck_assert_ptr_nonnull(p->ak_anchors);
    ck_assert_uint_eq(p->npins, 2);
    ck_assert_int_eq(p->floor, KV_ASSURANCE_TPM);
    ck_assert_int_eq(p->max_age, 60);
    ck_assert_uint_eq(p->npcrs, 2);
    ck_assert_uint_eq(p->pcrs[0].index, 0);
    ck_assert_uint_eq(p->pcrs[1].index, 7);
    ck_assert_str_eq(p->bank, "sha256");
    ck_assert_ptr_null(p->registry);
    kv_policy_free(p);
    /* a registry alone is a way to trust an AK; its path is the policy's relative */
    p = policy(ctx, "[trust]\nregistry = reg/enrolled.db\n");
    snprintf(path, sizeof(path), "%s/reg/enrolled.db", tu_tmpdir());
    ck_assert_str_eq(p->registry, path);
    kv_policy_free(p);
    kv_policy_free(NULL);
    kv_verdict_free(NULL);
    kv_key_free(ca);
    kv_ctx_free(ctx);
}
END_TEST

/* ---- good evidence from each backend -------------------------------------------------- */

START_TEST(software_and_token_evidence)
{
    kv_ctx *ctx = tu_ctx(NULL), *tok = token_ctx(), *ver = verifier_ctx();
    kv_key *ca = make_ca(ctx, "id-ca");
    kv_key *soft = gen(ctx, "soft-id", "software");
    kv_key *p11 = gen(tok, "token-id", "pkcs11");
    kv_policy *sw, *tk, *tp, *chained;
    char text[1024];
    json_t *ds, *dt;

    sw = policy(ver, "[evidence]\nassurance = software\n");
    tk = policy(ver, "[evidence]\nassurance = token\n");
    tp = policy(ver, "[trust]\nak_pin = 0000000000000000000000000000000000000000000000000000"
                     "000000000000\n[evidence]\nassurance = tpm\n");
    snprintf(text, sizeof(text), "[trust]\nanchors = %s/id-ca.pem\n[evidence]\n"
             "assurance = software\n", tu_tmpdir());
    chained = policy(ver, text);

    ds = base_doc(soft, NONCE, NULL);
    sign_pop(ds, soft);
    dt = base_doc(p11, NONCE, NULL);
    sign_pop(dt, p11);
    assert_passes(ver, ds, sw, KV_ASSURANCE_SOFTWARE, "software evidence, software floor");
    /* kv_attest's own documents */
    {
        json_t *a = attest_doc(soft, NULL);
        size_t len;
        char *s;
        assert_passes(ver, a, sw, KV_ASSURANCE_SOFTWARE, "kv_attest, software key");
        s = dump(a, &len);
        assert_fails(ver, s, len, NONCE, tp, "assurance", "kv_attest, software key, tpm floor");
        assert_fails(ver, s, len, OTHER_NONCE, sw, "nonce", "kv_attest, software key, replay");
        free(s);
        json_decref(a);
        /* the other key types' proofs of possession: Ed25519, RSA-PSS, ECDSA P-384 */
        {
            static const kv_key_type types[] = { KV_KEY_ED25519, KV_KEY_RSA_2048,
                                                 KV_KEY_EC_P384 };
            for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
                kv_key *k = NULL;
                char name[64];
                snprintf(name, sizeof(name), "soft-%s-%ld", kv_key_type_name(types[i]),
                         (long)getpid());
                ck_assert_rc(ctx, kv_key_generate(ctx, name, types[i], "software", &k), KV_OK);
                a = attest_doc(k, NULL);
                assert_passes(ver, a, sw, KV_ASSURANCE_SOFTWARE, kv_key_type_name(types[i]));
                /* the same document with pop.alg naming another algorithm */
                json_object_set_new(json_object_get(a, "pop"), "alg",
                                    json_string(types[i] == KV_KEY_EC_P384 ? "ecdsa-sha256"
                                                                           : "ecdsa-sha384"));
                s = dump(a, &len);
                assert_fails(ver, s, len, NONCE, sw, "pop", kv_key_type_name(types[i]));
                free(s);
                json_decref(a);
                kv_key_free(k);
            }
        }
        a = attest_doc(p11, NULL);
        assert_passes(ver, a, tk, KV_ASSURANCE_TOKEN, "kv_attest, token key");
        s = dump(a, &len);
        assert_fails(ver, s, len, NONCE, tp, "assurance", "kv_attest, token key, tpm floor");
        free(s);
        json_decref(a);
    }
    assert_passes(ver, dt, sw, KV_ASSURANCE_TOKEN, "token evidence, software floor");
    assert_passes(ver, dt, tk, KV_ASSURANCE_TOKEN, "token evidence, token floor");
    {
        size_t len;
        char *s = dump(ds, &len);
        assert_fails(ver, s, len, NONCE, tk, "assurance", "software evidence, token floor");
        assert_fails(ver, s, len, NONCE, tp, "assurance", "software evidence, tpm floor");
        free(s);
        s = dump(dt, &len);
        assert_fails(ver, s, len, NONCE, tp, "assurance", "token evidence, tpm floor");
        /* no chain, and the policy names anchors */
        assert_fails(ver, s, len, NONCE, chained, "key-chain", "token evidence without a chain");
        free(s);
    }
    /* with a certificate from the vault CA, the chain checks out */
    certify_identity(ca, p11, "token-device");
    json_decref(dt);
    dt = base_doc(p11, NONCE, NULL);
    ck_assert_ptr_nonnull(json_object_get(json_object_get(dt, "key"), "chain"));
    sign_pop(dt, p11);
    assert_passes(ver, dt, chained, KV_ASSURANCE_TOKEN, "token evidence with its chain");

    json_decref(ds);
    json_decref(dt);
    kv_policy_free(sw);
    kv_policy_free(tk);
    kv_policy_free(tp);
    kv_policy_free(chained);
    kv_key_free(ca);
    kv_key_free(soft);
    kv_key_free(p11);
    kv_ctx_free(ctx);
    kv_ctx_free(tok);
    kv_ctx_free(ver);
}
END_TEST

#ifdef KV_WITH_TPM
START_TEST(tpm_evidence)
{
    kv_ctx *ctx = tu_ctx(NULL), *tpm = tpm_ctx(), *ver = verifier_ctx();
    kv_key *akca = make_ca(ctx, "ak-ca");
    kv_key *key = gen(tpm, "tpm-id", "tpm");
    static const unsigned pcrs[] = { 0, 1, 2, 3, 4, 5, 6, 7 };
    char *akpem = ak_cert(tpm, akca), pin[65], text[2048], p0[65], p7[65];
    kv_policy *by_ca, *by_pin, *sw;
    kv_verdict *v = NULL;
    json_t *doc;

    ak_pin(tpm, pin);
    pcr_hex(tpm, 0, p0);
    pcr_hex(tpm, 7, p7);
    snprintf(text, sizeof(text), "[trust]\nak_anchors = %s/ak-ca.pem\n[evidence]\n"
             "assurance = tpm\n[pcrs]\nbank = sha256\n0 = %s\n7 = %s\n", tu_tmpdir(), p0, p7);
    by_ca = policy(ver, text);
    snprintf(text, sizeof(text), "[trust]\nak_pin = %s\n[evidence]\nassurance = tpm\n", pin);
    by_pin = policy(ver, text);
    snprintf(text, sizeof(text), "[trust]\nak_pin = %s\n[evidence]\nassurance = software\n", pin);
    sw = policy(ver, text);

    doc = base_doc(key, NONCE, NULL);
    json_object_set_new(doc, "tpm", tpm_section(key, akpem, pcrs, 8));
    sign_pop(doc, key);
    assert_passes(ver, doc, by_ca, KV_ASSURANCE_TPM, "tpm evidence, AK certified");
    assert_passes(ver, doc, by_pin, KV_ASSURANCE_TPM, "tpm evidence, AK pinned");
    ck_assert_rc(ver, verify_doc(ver, doc, NONCE, by_ca, &v), KV_OK);
    /* every check of a TPM document ran, the AK's name is reported */
    {
        static const char *const names[] = {
            "format", "nonce", "age", "pop", "assurance", "tpm.ak-trusted", "tpm.magic",
            "tpm.attest-type", "tpm.ak-signature", "tpm.certified-name", "tpm.key-attributes",
            "tpm.quote-signature", "tpm.pcr-digest", "tpm.pcr-policy",
        };
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            ck_assert_msg(find_check(v, names[i]) != NULL, "%s did not run", names[i]);
        ck_assert_uint_eq(v->count, sizeof(names) / sizeof(names[0]));
        ck_assert_ptr_nonnull(v->ak_name);
        ck_assert_uint_eq(strlen(v->ak_name), 2 * 34);
        ck_assert(strncmp(v->ak_name, "000b", 4) == 0);
        ck_assert_ptr_nonnull(v->key_public);
    }
    kv_verdict_free(v);
    /* kv_attest's own document, the AK's chain kept with the AK */
    {
        kv_attest_opts o = { sizeof(o), "sha256:0-7", KV_ATTEST_NO_EVENT_LOG, NULL };
        json_t *a;
        ck_assert_rc(tpm, kv_tpm_ak_store_chain(tpm, akpem, strlen(akpem)), KV_OK);
        a = attest_doc(key, &o);
        assert_passes(ver, a, by_ca, KV_ASSURANCE_TPM, "kv_attest, TPM key, AK certified");
        assert_passes(ver, a, by_pin, KV_ASSURANCE_TPM, "kv_attest, TPM key, AK pinned");
        json_decref(a);
        o.flags |= KV_ATTEST_NO_QUOTE;
        a = attest_doc(key, &o);
        assert_passes(ver, a, by_pin, KV_ASSURANCE_TPM, "kv_attest, TPM key, no quote");
        json_decref(a);
    }
    /* a TPM key passes a lower floor too, with its own assurance; its claim
     * of tpm is still checked, so the policy must trust the AK */
    assert_passes(ver, doc, sw, KV_ASSURANCE_TPM, "tpm evidence, software floor");
    {
        kv_policy *no_ak = policy(ver, "[evidence]\nassurance = software\n");
        size_t len;
        char *s = dump(doc, &len);
        assert_fails(ver, s, len, NONCE, no_ak, "tpm.ak-trusted", "tpm evidence, no AK trust");
        free(s);
        kv_policy_free(no_ak);
    }
    /* without a quote: no PCR checks unless the policy expects values */
    json_object_del(json_object_get(doc, "tpm"), "quote");
    sign_pop(doc, key);
    assert_passes(ver, doc, by_pin, KV_ASSURANCE_TPM, "tpm evidence without a quote");
    {
        size_t len;
        char *s = dump(doc, &len);
        assert_fails(ver, s, len, NONCE, by_ca, "tpm.pcr-policy", "no quote, PCRs expected");
        free(s);
    }
    json_decref(doc);
    free(akpem);
    kv_policy_free(by_ca);
    kv_policy_free(by_pin);
    kv_policy_free(sw);
    kv_key_free(akca);
    kv_key_free(key);
    kv_ctx_free(ctx);
    kv_ctx_free(tpm);
    kv_ctx_free(ver);
}
END_TEST
#endif

/* ---- the negative corpus ---------------------------------------------------------------- */

static unsigned corpus_count;

/* Keep a generated case for inspection, then check it. */
static void corpus_case(kv_ctx *ver, const char *name, const json_t *doc, const char *raw,
                        const unsigned char *nonce, const kv_policy *pol, const char *check)
{
    const char *keep = getenv("KV_EVIDENCE_OUT");
    char path[1024], *s;
    size_t len;
    FILE *f;

    s = raw ? strdup(raw) : dump(doc, &len);
    len = strlen(s);
    if (keep && *keep) {
        snprintf(path, sizeof(path), "%s/%s.json", keep, name);
        mkdir(keep, 0755);
        if ((f = fopen(path, "w"))) {
            fwrite(s, 1, len, f);
            fclose(f);
        }
    }
    assert_fails(ver, s, len, nonce, pol, check, name);
    printf("  rejected: %-34s %s\n", name, check);
    corpus_count++;
    free(s);
}

/* The static files: tests/evidence/MANIFEST lists "FILE CHECK WORDS" per
 * line, WORDS a piece of the failed check's detail. */
START_TEST(static_corpus)
{
    kv_ctx *ver = verifier_ctx();
    kv_policy *pol = policy(ver, "[evidence]\nassurance = software\n");
    char line[512], file[256], check[64], words[200], path[1024];
    unsigned n = 0;
    FILE *m = fopen(tu_srcpath("tests/evidence/MANIFEST"), "r");
    kv_verdict *v = NULL;

    ck_assert_ptr_nonnull(m);
    while (fgets(line, sizeof(line), m)) {
        unsigned char *doc;
        size_t len;
        FILE *f;
        struct stat st;
        if (line[0] == '#' || sscanf(line, "%255s %63s %199[^\n]", file, check, words) != 3)
            continue;
        snprintf(path, sizeof(path), "%s", tu_srcpath("tests/evidence/"));
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "%s", file);
        ck_assert_msg(stat(path, &st) == 0, "missing %s", path);
        doc = malloc((size_t)st.st_size + 1);
        f = fopen(path, "rb");
        ck_assert_ptr_nonnull(f);
        len = fread(doc, 1, (size_t)st.st_size, f);
        fclose(f);
        assert_fails(ver, (char *)doc, len, NONCE, pol, check, file);
        ck_assert_rc(ver, kv_evidence_verify(ver, (char *)doc, len, NONCE, 32, pol, &v),
                     KV_ERR_EVIDENCE);
        ck_assert_msg(strstr(find_check(v, check)->detail, words) != NULL, "%s: '%s' lacks '%s'",
                      file, find_check(v, check)->detail, words);
        /* nothing past the document's check ran */
        ck_assert_uint_eq(v->count, 1);
        kv_verdict_free(v);
        printf("  rejected: %-34s %s: %s\n", file, check, words);
        free(doc);
        n++;
    }
    fclose(m);
    /* oversized: made here rather than kept as a 256 KiB file */
    {
        size_t len = 256 * 1024 + 1;
        char *big = malloc(len);
        memset(big, ' ', len);
        big[0] = '{';
        big[len - 1] = '}';
        assert_fails(ver, big, len, NONCE, pol, "format", "oversized");
        ck_assert_rc(ver, kv_evidence_verify(ver, big, len, NONCE, 32, pol, &v), KV_ERR_EVIDENCE);
        ck_assert_ptr_nonnull(strstr(v->checks[0].detail, "more than 262144"));
        kv_verdict_free(v);
        free(big);
        printf("  rejected: %-34s format: more than 262144\n", "(oversized, 256 KiB + 1)");
        n++;
    }
    printf("static negative corpus: %u documents rejected with the check named\n", n);
    ck_assert_uint_ge(n, 19);
    /* no evidence at all; a nonce too short to be one */
    ck_assert_rc(ver, kv_evidence_verify(ver, "", 0, NONCE, 32, pol, &v), KV_ERR_EVIDENCE);
    ck_assert_str_eq(v->checks[0].name, "format");
    ck_assert_uint_eq(v->count, 1);
    kv_verdict_free(v);
    ck_assert_rc(ver, kv_evidence_verify(ver, "{}", 2, NONCE, 8, pol, &v), KV_ERR_INVALID_ARG);
    ck_assert_ptr_null(v);
    kv_policy_free(pol);
    kv_ctx_free(ver);
}
END_TEST

#ifdef KV_WITH_TPM
START_TEST(generated_corpus)
{
    kv_ctx *ctx = tu_ctx(NULL), *tok = token_ctx(), *tpm = tpm_ctx(), *ver = verifier_ctx();
    kv_key *akca = make_ca(ctx, "ak-ca"), *other = make_ca(ctx, "other-ca");
    kv_key *idca = make_ca(ctx, "id-ca");
    kv_key *key = gen(tpm, "tpm-id", "tpm"), *key2 = gen(tpm, "tpm-other", "tpm");
    kv_key *soft = gen(ctx, "soft-id", "software"), *p11 = gen(tok, "token-id", "pkcs11");
    kv_key *expired = gen(ctx, "soft-expired", "software");
    kv_key *stranger = gen(ctx, "soft-stranger", "software");
    static const unsigned pcrs[] = { 0, 7, 23 };
    char *akpem = ak_cert(tpm, akca), *otherpem = ak_cert(tpm, other);
    char text[2048], p0[65], p7[65], p23[65], created[21];
    unsigned char meas[32] = "measured after the policy";
    kv_policy *pol, *untrusted_ak, *chained, *sw;
    json_t *good, *d, *t;

    pcr_hex(tpm, 0, p0);
    pcr_hex(tpm, 7, p7);
    pcr_hex(tpm, 23, p23);
    snprintf(text, sizeof(text), "[trust]\nak_anchors = %s/ak-ca.pem\n[evidence]\n"
             "assurance = tpm\nmax_age = 300\n[pcrs]\nbank = sha256\n0 = %s\n7 = %s\n23 = %s\n",
             tu_tmpdir(), p0, p7, p23);
    pol = policy(ver, text);
    snprintf(text, sizeof(text), "[trust]\nak_anchors = %s/other-ca.pem\n[evidence]\n"
             "assurance = tpm\n", tu_tmpdir());
    untrusted_ak = policy(ver, text);
    snprintf(text, sizeof(text), "[trust]\nanchors = %s/id-ca.pem\n[evidence]\n"
             "assurance = software\n", tu_tmpdir());
    chained = policy(ver, text);
    sw = policy(ver, "[evidence]\nassurance = software\n");

    good = base_doc(key, NONCE, NULL);
    json_object_set_new(good, "tpm", tpm_section(key, akpem, pcrs, 3));
    sign_pop(good, key);
    assert_passes(ver, good, pol, KV_ASSURANCE_TPM, "the good document");

    corpus_case(ver, "replay-wrong-nonce", good, NULL, OTHER_NONCE, pol, "nonce");
    /* kv_attest's own document, with one signed part changed */
    {
        kv_attest_opts o = { sizeof(o), "sha256:0,7,23", KV_ATTEST_NO_EVENT_LOG, NULL };
        ck_assert_rc(tpm, kv_tpm_ak_store_chain(tpm, akpem, strlen(akpem)), KV_OK);
        d = attest_doc(key, &o);
        assert_passes(ver, d, pol, KV_ASSURANCE_TPM, "kv_attest's document");
        flip(json_object_get(json_object_get(d, "tpm"), "certify"), "attest", -2);
        sign_pop(d, key);
        corpus_case(ver, "kv-attest-certify-bit-flipped", d, NULL, NONCE, pol,
                    "tpm.ak-signature");
        json_decref(d);
        d = attest_doc(key, &o);
        flip(json_object_get(d, "pop"), "signature", 10);
        corpus_case(ver, "kv-attest-pop-bit-flipped", d, NULL, NONCE, pol, "pop");
        json_decref(d);
    }

#define MUTATE(name, pol_, check, ...)                                                     \
    do {                                                                                   \
        d = json_deep_copy(good);                                                          \
        t = json_object_get(d, "tpm");                                                     \
        (void)t;                                                                           \
        __VA_ARGS__;                                                                       \
        corpus_case(ver, name, d, NULL, NONCE, pol_, check);                               \
        json_decref(d);                                                                    \
    } while (0)

    MUTATE("pop-bit-flipped", pol, "pop", flip(json_object_get(d, "pop"), "signature", -1));
    MUTATE("pcr-value-edited", pol, "tpm.pcr-digest", {
        json_t *vals = json_object_get(json_object_get(json_object_get(t, "quote"), "pcrs"),
                                       "sha256");
        char v[65];
        snprintf(v, sizeof(v), "%s", json_string_value(json_object_get(vals, "7")));
        v[0] = v[0] == '0' ? '1' : '0';
        json_object_set_new(vals, "7", json_string(v));
        sign_pop(d, key);
    });
    MUTATE("pcr-value-dropped", pol, "tpm.pcr-digest", {
        json_object_del(json_object_get(json_object_get(json_object_get(t, "quote"), "pcrs"),
                                        "sha256"), "23");
        sign_pop(d, key);
    });
    /* key.public as BER (a long-form length): the very key the AK certified, but not
     * the bytes of its SubjectPublicKeyInfo, so decoded on its own, and refused */
    MUTATE("tpm-key-public-ber", pol, "format", {
        json_t *k = json_object_get(d, "key");
        size_t n;
        unsigned char *p = unb64u(json_string_value(json_object_get(k, "public")), &n), *ber;
        ck_assert(n > 2 && n < 130 && p[0] == 0x30 && p[1] == n - 2);
        ck_assert_ptr_nonnull(ber = malloc(n + 1));
        ber[0] = 0x30;
        ber[1] = 0x81;
        memcpy(ber + 2, p + 1, n - 1);
        set_b64u(k, "public", ber, n + 1);
        sign_pop(d, key);
        free(p);
        free(ber);
    });
    /* one bit of each signed part, the proof of possession made again */
    {
        static const struct {
            const char *name, *part, *field;
            long off;
            const char *check;
        } flips[] = {
            { "certify-attest-bit-flipped", "certify", "attest", -1, "tpm.ak-signature" },
            { "certify-magic-bit-flipped", "certify", "attest", 3, "tpm.magic" },
            { "certify-signature-bit-flipped", "certify", "signature", -1, "tpm.ak-signature" },
            { "quote-attest-bit-flipped", "quote", "attest", 20, "tpm.quote-signature" },
            { "quote-signature-bit-flipped", "quote", "signature", -1, "tpm.quote-signature" },
        };
        for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++)
            MUTATE(flips[i].name, pol, flips[i].check, {
                flip(json_object_get(t, flips[i].part), flips[i].field, flips[i].off);
                sign_pop(d, key);
            });
    }
    MUTATE("quote-as-certify", pol, "tpm.attest-type", {
        json_t *q = json_object_get(t, "quote"), *c = json_object_get(t, "certify");
        json_object_set(c, "attest", json_object_get(q, "attest"));
        json_object_set(c, "signature", json_object_get(q, "signature"));
        sign_pop(d, key);
    });
    MUTATE("ak-public-of-another-key", pol, "tpm.ak-signature", {
        json_object_set(json_object_get(t, "ak"), "public",
                        json_object_get(json_object_get(t, "certify"), "public"));
        sign_pop(d, key);
    });
    MUTATE("certify-of-another-key", pol, "tpm.certified-name", {
        json_t *t2 = tpm_section(key2, akpem, NULL, 0);
        json_object_set(t, "certify", json_object_get(t2, "certify"));
        json_decref(t2);
        sign_pop(d, key);
    });
    MUTATE("created-an-hour-ago", pol, "age", {
        utc_now(created, -3600);
        json_object_set_new(d, "created", json_string(created));
        sign_pop(d, key);
    });
    MUTATE("created-in-the-future", pol, "age", {
        utc_now(created, 600);
        json_object_set_new(d, "created", json_string(created));
        sign_pop(d, key);
    });
    MUTATE("ak-chain-dropped", pol, "tpm.ak-trusted", {
        json_object_del(json_object_get(t, "ak"), "chain");
        sign_pop(d, key);
    });
    MUTATE("ak-chain-of-another-ak", pol, "tpm.ak-trusted", {
        char *stranger_pem = NULL;
        unsigned char der[512];
        size_t len = sizeof(der);
        kv_cert_opts o = KV_CERT_OPTS_INIT;
        json_t *t2;
        o.tpm_manufacturer = "id:53544D20";
        o.tpm_model = "swtpm";
        o.tpm_version = "id:00020000";
        ck_assert_rc(ctx, kv_key_public_der(stranger, der, &len), KV_OK);
        ck_assert_rc(ctx, kv_ca_issue_pubkey(akca, "tpm-ak", der, len, &o, &stranger_pem),
                     KV_OK);
        t2 = tpm_section(key, stranger_pem, NULL, 0);
        json_object_set(json_object_get(t, "ak"), "chain",
                        json_object_get(json_object_get(t2, "ak"), "chain"));
        json_decref(t2);
        kv_string_free(stranger_pem);
        sign_pop(d, key);
    });
    /* the AK certified by a CA the policy does not trust */
    {
        d = json_deep_copy(good);
        json_t *t2 = tpm_section(key, otherpem, NULL, 0);
        json_object_set(json_object_get(json_object_get(d, "tpm"), "ak"), "chain",
                        json_object_get(json_object_get(t2, "ak"), "chain"));
        json_decref(t2);
        sign_pop(d, key);
        corpus_case(ver, "ak-certified-by-another-ca", d, NULL, NONCE, pol, "tpm.ak-trusted");
        corpus_case(ver, "ak-not-trusted-by-policy", good, NULL, NONCE, untrusted_ak,
                    "tpm.ak-trusted");
        json_decref(d);
    }
    /* software and token keys presented as tpm, with a real TPM's tpm section */
    {
        kv_key *fakes[] = { soft, p11 };
        const char *names[] = { "software-key-as-tpm", "token-key-as-tpm" };
        for (size_t i = 0; i < 2; i++) {
            d = base_doc(fakes[i], NONCE, "tpm");
            json_object_set(d, "tpm", json_object_get(good, "tpm"));
            sign_pop(d, fakes[i]);
            corpus_case(ver, names[i], d, NULL, NONCE, pol, "tpm.certified-name");
            json_decref(d);
            d = base_doc(fakes[i], NONCE, "tpm");
            sign_pop(d, fakes[i]);
            corpus_case(ver, i ? "token-key-as-tpm-bare" : "software-key-as-tpm-bare", d, NULL,
                        NONCE, sw, "format");
            json_decref(d);
        }
    }
    /* the AK itself (restricted) as the identity key: certified by itself, its
     * pop copied from another document since a restricted key signs no such thing */
    {
        struct tpm_key *akk = NULL;
        kv_key fake = { 0 };
        unsigned char der[512];
        size_t len = sizeof(der);
        json_t *t2;
        ck_assert_rc(tpm, tpm_ak_get(tpm_be(tpm), &akk), KV_OK);
        fake.ctx = tpm;
        fake.be = tpm_be(tpm);
        fake.name = (char *)"attestation-key";
        fake.bk = akk;
        ck_assert_rc(tpm, kv_tpm_ak_public(tpm, der, &len), KV_OK);
        d = json_deep_copy(good);
        set_b64u(json_object_get(d, "key"), "public", der, len);
        t2 = tpm_section(&fake, akpem, NULL, 0);
        json_object_set(json_object_get(d, "tpm"), "certify", json_object_get(t2, "certify"));
        json_decref(t2);
        corpus_case(ver, "restricted-ak-as-identity-key", d, NULL, NONCE, pol,
                    "tpm.key-attributes");
        json_decref(d);
    }
    /* identity chains: expired, and from a CA the policy does not name */
    expired_identity(expired);
    d = base_doc(expired, NONCE, NULL);
    sign_pop(d, expired);
    snprintf(text, sizeof(text), "[trust]\nanchors = %s/expired-ca.pem\n[evidence]\n"
             "assurance = software\n", tu_tmpdir());
    {
        kv_policy *exp_pol = policy(ver, text);
        corpus_case(ver, "identity-chain-expired", d, NULL, NONCE, exp_pol, "key-chain");
        kv_policy_free(exp_pol);
    }
    json_decref(d);
    certify_identity(other, soft, "soft-device");
    d = base_doc(soft, NONCE, NULL);
    sign_pop(d, soft);
    corpus_case(ver, "identity-chain-untrusted", d, NULL, NONCE, chained, "key-chain");
    json_decref(d);
    /* a chain whose leaf is another key's certificate */
    certify_identity(idca, stranger, "stranger");
    d = base_doc(soft, NONCE, NULL);
    t = base_doc(stranger, NONCE, NULL);
    json_object_set(json_object_get(d, "key"), "chain",
                    json_object_get(json_object_get(t, "key"), "chain"));
    json_decref(t);
    sign_pop(d, soft);
    corpus_case(ver, "identity-chain-of-another-key", d, NULL, NONCE, chained, "key-chain");
    json_decref(d);

    /* a PCR extended after the policy was taken: fresh evidence, honest values */
    ck_assert_rc(tpm, kv_tpm_pcr_extend(tpm, "sha256", 23, meas, 32), KV_OK);
    d = base_doc(key, NONCE, NULL);
    json_object_set_new(d, "tpm", tpm_section(key, akpem, pcrs, 3));
    sign_pop(d, key);
    corpus_case(ver, "pcr-extended-after-policy", d, NULL, NONCE, pol, "tpm.pcr-policy");
    json_decref(d);

    printf("generated negative corpus: %u documents rejected with the check named\n",
           corpus_count);
    ck_assert_uint_ge(corpus_count, 25);
    json_decref(good);
    free(akpem);
    free(otherpem);
    kv_policy_free(pol);
    kv_policy_free(untrusted_ak);
    kv_policy_free(chained);
    kv_policy_free(sw);
    kv_key *keys[] = { akca, other, idca, key, key2, soft, p11, expired, stranger };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        kv_key_free(keys[i]);
    kv_ctx_free(ctx);
    kv_ctx_free(tok);
    kv_ctx_free(tpm);
    kv_ctx_free(ver);
}
END_TEST
#endif

#ifdef KV_WITH_TPM
static bool other_than_pop_failed(const kv_verdict *v)
{
    for (size_t i = 0; i < v->count; i++)
        if (!v->checks[i].passed && strcmp(v->checks[i].name, "pop") != 0)
            return true;
    return false;
}

/* Random damage to every binary part of a real TPM document (seeded, so a
 * failure repeats): never accepted, never a crash (run under ASan by the
 * suite's sanitized build). Bytes are changed, cut or appended. */
START_TEST(random_damage)
{
    kv_ctx *ctx = tu_ctx(NULL), *tpm = tpm_ctx(), *ver = verifier_ctx();
    kv_key *akca = make_ca(ctx, "ak-ca"), *key = gen(tpm, "tpm-id", "tpm");
    char *akpem = ak_cert(tpm, akca), text[1024];
    kv_attest_opts o = { sizeof(o), "sha256:0-7", KV_ATTEST_NO_EVENT_LOG, NULL };
    static const char *const parts[][2] = {
        { "ak", "public" },          { "certify", "public" }, { "certify", "attest" },
        { "certify", "signature" }, { "quote", "attest" },   { "quote", "signature" },
    };
    kv_policy *pol;
    json_t *good;
    unsigned runs = 0, same_key = 0;
    TPM2B_PUBLIC good_ak = { 0 };

    snprintf(text, sizeof(text), "[trust]\nak_anchors = %s/ak-ca.pem\n[evidence]\n"
             "assurance = tpm\n", tu_tmpdir());
    pol = policy(ver, text);
    ck_assert_rc(tpm, kv_tpm_ak_store_chain(tpm, akpem, strlen(akpem)), KV_OK);
    good = attest_doc(key, &o);
    assert_passes(ver, good, pol, KV_ASSURANCE_TPM, "the good document");
    {
        size_t n, off = 0;
        unsigned char *b = unb64u(json_string_value(json_object_get(
                               json_object_get(json_object_get(good, "tpm"), "ak"), "public")),
                                  &n);
        ck_assert_int_eq(Tss2_MU_TPM2B_PUBLIC_Unmarshal(b, n, &off, &good_ak), 0);
        free(b);
    }
    srand(20261126);
    for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]); p++)
        for (int i = 0; i < 150; i++) {
            json_t *d = json_deep_copy(good);
            json_t *obj = json_object_get(json_object_get(d, "tpm"), parts[p][0]);
            size_t n, len;
            unsigned char *b = unb64u(json_string_value(json_object_get(obj, parts[p][1])), &n);
            unsigned char *grown = realloc(b, n + 16);
            kv_verdict *v = NULL;
            char *doc;
            ck_assert_ptr_nonnull(grown);
            b = grown;
            switch (i % 3) {
            case 0: /* a few bytes changed */
                for (int k = 0; k < 1 + rand() % 4; k++)
                    b[rand() % n] ^= (unsigned char)(1 + rand() % 255);
                break;
            case 1: /* cut short */
                n = (size_t)rand() % n;
                if (n == 0)
                    n = 1;
                break;
            default: /* bytes appended, or the first byte changed */
                if (rand() % 2) {
                    memset(b + n, rand() & 0xff, 16);
                    n += 1 + (size_t)rand() % 16;
                } else {
                    b[0] ^= 0x40; /* a size field, or the magic, changed */
                }
            }
            set_b64u(obj, parts[p][1], b, n);
            doc = dump(d, &len);
            /* the proof of possession is not made again (a TPM signature per
             * case is slow under sanitizers): the checks are independent, so
             * the damage must be caught by a check other than pop */
            ck_assert_rc(ver, kv_evidence_verify(ver, doc, len, NONCE, 32, pol, &v),
                         KV_ERR_EVIDENCE);
            if (!other_than_pop_failed(v)) {
                /* nothing signs the AK's public area: its trust rests on its key
                 * (pin, certificate). A change that keeps the key and the
                 * attributes checked may pass; any other may not. */
                TPM2B_PUBLIC ak = { 0 };
                size_t off = 0;
                const TPMT_PUBLIC *a = &ak.publicArea, *g = &good_ak.publicArea;
                ck_assert_msg(p == 0 && Tss2_MU_TPM2B_PUBLIC_Unmarshal(b, n, &off, &ak) == 0 &&
                                  a->type == TPM2_ALG_ECC && a->parameters.eccDetail.curveID ==
                                  g->parameters.eccDetail.curveID &&
                                  a->unique.ecc.x.size == g->unique.ecc.x.size &&
                                  !memcmp(a->unique.ecc.x.buffer, g->unique.ecc.x.buffer, 32) &&
                                  !memcmp(a->unique.ecc.y.buffer, g->unique.ecc.y.buffer, 32) &&
                                  (a->objectAttributes & TPMA_OBJECT_RESTRICTED) &&
                                  (a->objectAttributes & TPMA_OBJECT_FIXEDTPM),
                              "%s.%s damage %d caught by pop alone", parts[p][0], parts[p][1], i);
                same_key++;
            }
            ck_assert_int_eq(v->ok, 0);
            kv_verdict_free(v);
            free(doc);
            free(b);
            json_decref(d);
            runs++;
        }
    printf("random damage: %u damaged documents, each refused by a check other than pop "
           "but %u whose AK public area kept its key and attributes\n", runs, same_key);
    json_decref(good);
    free(akpem);
    kv_policy_free(pol);
    kv_key_free(akca);
    kv_key_free(key);
    kv_ctx_free(ctx);
    kv_ctx_free(tpm);
    kv_ctx_free(ver);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("verify");
    TCase *tc = tcase_create("verify");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, policy_file);
    tcase_add_test(tc, static_corpus);
    tcase_add_test(tc, software_and_token_evidence);
#ifdef KV_WITH_TPM
    tcase_add_test(tc, tpm_evidence);
    tcase_add_test(tc, generated_corpus);
    tcase_add_test(tc, random_damage);
#endif
    suite_add_tcase(s, tc);
    return tu_run(s);
}
