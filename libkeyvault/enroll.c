/*
 * enroll.c - AK enrollment by credential activation (TPM 2.0 Part 1,
 * "Credential Protection"; docs/enrollment.md).
 *
 * Device: kv_enroll_request (EK certificate, AK public area, device id),
 * kv_enroll_respond (TPM2_ActivateCredential through the backend).
 * Verifier, with no TPM: kv_enroll_challenge checks the EK certificate
 * against its anchors and the AK's attributes, then computes
 * TPM2_MakeCredential in software for the EK CERTIFICATE's key (never a key
 * the device merely asserts: Keylime CVE-2022-1053) and the AK's name;
 * kv_enroll_finish compares the answer with the pending challenge and has
 * the vault CA certify that same AK.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"

#ifdef KV_WITH_TPM
#include "../tpm/tpm.h"

#define DOC_MAX (256 * 1024)        /* bytes of a request, challenge or response */
#define BLOB_MAX (16 * 1024)        /* bytes of one decoded binary field */
#define CHAIN_MAX 8                 /* intermediate certificates in a request */
#define CRED_LEN 32                 /* the credential (the challenge's secret) */
#define TTL_DEFAULT 300
#define TTL_MAX 86400

/* ---- base64url and hex ------------------------------------------------------ */

/* base64url without padding, strictly: nothing else is accepted. */
static kv_rc b64u_decode(const kv_ctx *ctx, const char *field, const char *in,
                         unsigned char **out, size_t *outlen)
{
    size_t n = strlen(in), pad = (4 - n % 4) % 4;
    char *tmp = NULL;
    unsigned char *buf = NULL;
    int m;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (n == 0 || n % 4 == 1 || n > 4 * (BLOB_MAX / 3 + 1))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "%s: not base64url of 1 to %d bytes", field,
                BLOB_MAX);
    tmp = malloc(n + pad + 1);
    buf = malloc((n + pad) / 4 * 3 + 1);
    if (!tmp || !buf)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "%s: not base64url (character %zu)", field, i);
        tmp[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    memset(tmp + n, '=', pad);
    tmp[n + pad] = '\0';
    m = EVP_DecodeBlock(buf, (unsigned char *)tmp, (int)(n + pad));
    if (m < 0 || (size_t)m < pad)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "%s: not base64url", field);
    *outlen = (size_t)m - pad;
    if (*outlen == 0 || *outlen > BLOB_MAX)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "%s: 1 to %d bytes", field, BLOB_MAX);
    *out = buf;
    buf = NULL;
out:
    /* the field may be a credential: no copy of it stays in freed memory */
    if (tmp)
        OPENSSL_cleanse(tmp, n + pad + 1);
    free(tmp);
    if (buf)
        OPENSSL_cleanse(buf, (n + pad) / 4 * 3 + 1);
    free(buf);
    return rc;
}

static void hex_of(const unsigned char *in, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", in[i]);
}

static bool hex_valid(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

/* ---- the documents ------------------------------------------------------------ */

/* Parse a document of `format`, version 1, holding only the members named
 * in `members` (NULL-terminated; those before the first "?" required). */
static kv_rc doc_parse(const kv_ctx *ctx, const char *text, size_t len, const char *format,
                       const char *const *members, json_t **out)
{
    json_error_t err;
    json_t *doc = NULL, *v;
    const char *key;
    kv_rc rc = KV_OK;

    *out = NULL;
    if (len == 0 || len > DOC_MAX)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "the %s document must be 1 byte to %d KiB",
                        format, DOC_MAX / 1024);
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    /* jansson's text may quote the document (a response holds the
     * credential): only the position is reported */
    if (!doc)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the %s document is not a JSON object: it does not parse (line %d, column %d)",
                format, err.line, err.column);
    if (!json_is_object(doc))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the %s document is not a JSON object", format);
    v = json_object_get(doc, "format");
    if (!json_is_string(v) || strcmp(json_string_value(v), format) != 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "not a %s document (\"format\")", format);
    v = json_object_get(doc, "version");
    if (!json_is_integer(v) || json_integer_value(v) != 1)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "%s: only version 1 is understood", format);
    json_object_foreach(doc, key, v) {
        bool known = !strcmp(key, "format") || !strcmp(key, "version");
        for (size_t i = 0; !known && members[i]; i++)
            known = !strcmp(members[i] + (members[i][0] == '?'), key);
        if (!known)
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "%s: unknown member (not one of version 1's)",
                    format);
    }
    for (size_t i = 0; members[i]; i++)
        if (members[i][0] != '?' && !json_is_string(json_object_get(doc, members[i])))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "%s: \"%s\" is missing or not a string", format,
                    members[i]);
    *out = doc;
    doc = NULL;
out:
    json_decref(doc);
    return rc;
}

static kv_rc doc_blob(const kv_ctx *ctx, json_t *doc, const char *member, unsigned char **out,
                      size_t *len)
{
    return b64u_decode(ctx, member, json_string_value(json_object_get(doc, member)), out, len);
}

/* Wipe a string member in place before the document is released (jansson
 * keeps its own copy of every string: the credential must not stay in freed
 * memory). */
static void wipe_member(json_t *doc, const char *member)
{
    json_t *v = json_object_get(doc, member);

    if (json_is_string(v))
        OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
}

static kv_rc doc_dump(const kv_ctx *ctx, json_t *doc, char **out)
{
    *out = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_ENSURE_ASCII) : NULL;
    json_decref(doc);
    return *out ? KV_OK : kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
}

/* doc as text, for a document that carries a secret: json_dumps builds
 * the text in a buffer it grows and frees unwiped (jansson's strbuffer),
 * and copies it; json_dumpb writes only where it is told, here once to
 * size the text and once into the block that is handed out. */
static kv_rc doc_dump_secret(const kv_ctx *ctx, const json_t *doc, char **out)
{
    const size_t flags = JSON_INDENT(2) | JSON_ENSURE_ASCII;
    size_t n = json_dumpb(doc, NULL, 0, flags);
    char *s = n ? malloc(n + 1) : NULL;

    *out = NULL;
    if (!s)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (json_dumpb(doc, s, n, flags) != n) {
        kv_wipe(s, n);
        free(s);
        return kv_error(ctx, KV_ERR_NO_MEMORY, "cannot write the JSON document");
    }
    s[n] = '\0';
    *out = s;
    return KV_OK;
}

/* Set member to the base64url of data. */
static int set_b64u(json_t *doc, const char *member, const unsigned char *data, size_t len)
{
    char *s = kv_b64url_encode(data, len);
    int r = s ? json_object_set_new(doc, member, json_string(s)) : -1;

    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
    return r;
}

/* ---- TPM objects in software ----------------------------------------------------- */

/* The AK from its marshalled TPM2B_PUBLIC: one whole structure, a
 * restricted signing key (not a decryption key) that never left its TPM
 * and whose private part the TPM made; its name (nameAlg || H(publicArea))
 * in name[]. */
static kv_rc ak_parse(const kv_ctx *ctx, const unsigned char *buf, size_t len, TPM2B_PUBLIC *pub,
                      unsigned char *name, size_t *name_len)
{
    static const TPMA_OBJECT need = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT |
                                    TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                    TPMA_OBJECT_SENSITIVEDATAORIGIN;
    uint8_t area[sizeof(TPMT_PUBLIC)];
    size_t off = 0, alen = 0;
    const char *md;
    unsigned int mdlen = 0;
    TPMA_OBJECT a;

    memset(pub, 0, sizeof(*pub));
    if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, pub) != TSS2_RC_SUCCESS || off != len)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "the AK is not one marshalled TPM2B_PUBLIC");
    a = pub->publicArea.objectAttributes;
    if ((a & need) != need || (a & TPMA_OBJECT_DECRYPT))
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "the AK is not a restricted signing key fixed to its TPM "
                        "(objectAttributes 0x%08x lack%s%s%s%s%s%s)", (unsigned)a,
                        (a & TPMA_OBJECT_RESTRICTED) ? "" : " restricted",
                        (a & TPMA_OBJECT_SIGN_ENCRYPT) ? "" : " sign",
                        (a & TPMA_OBJECT_FIXEDTPM) ? "" : " fixedTPM",
                        (a & TPMA_OBJECT_FIXEDPARENT) ? "" : " fixedParent",
                        (a & TPMA_OBJECT_SENSITIVEDATAORIGIN) ? "" : " sensitiveDataOrigin",
                        (a & TPMA_OBJECT_DECRYPT) ? "; it may decrypt" : "");
    if (pub->publicArea.type != TPM2_ALG_ECC && pub->publicArea.type != TPM2_ALG_RSA)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "the AK is of algorithm 0x%04x, not ECC or RSA",
                        pub->publicArea.type);
    switch (pub->publicArea.nameAlg) {
    case TPM2_ALG_SHA256: md = "SHA256"; break;
    case TPM2_ALG_SHA384: md = "SHA384"; break;
    default:
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "the AK's name algorithm 0x%04x is not "
                        "SHA-256 or SHA-384", pub->publicArea.nameAlg);
    }
    if (Tss2_MU_TPMT_PUBLIC_Marshal(&pub->publicArea, area, sizeof(area), &alen) !=
        TSS2_RC_SUCCESS)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "the AK's public area does not marshal again");
    name[0] = (unsigned char)(pub->publicArea.nameAlg >> 8);
    name[1] = (unsigned char)pub->publicArea.nameAlg;
    if (EVP_Digest(area, alen, name + 2, &mdlen, kv_ctx_md(ctx, md), NULL) != 1)
        return kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot hash the AK's public area");
    *name_len = 2 + mdlen;
    return KV_OK;
}

/* KDFa (Part 1, 11.4.10.2): SP 800-108 counter mode with HMAC-SHA256, the
 * label followed by a zero byte, then the context and the length in bits. */
static kv_rc kdfa(const kv_ctx *ctx, const unsigned char *key, size_t keylen, const char *label,
                  const unsigned char *context, size_t clen, unsigned char *out, size_t outlen)
{
    EVP_KDF *kdf = EVP_KDF_fetch(ctx->libctx, "KBKDF", NULL);
    EVP_KDF_CTX *k = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[7], *p = params;
    int ok;

    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, (char *)"HMAC", 0);
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, (char *)"counter", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, keylen);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)label, strlen(label));
    if (clen)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)context, clen);
    *p = OSSL_PARAM_construct_end();
    ok = k && EVP_KDF_derive(k, out, outlen, params) == 1;
    EVP_KDF_CTX_free(k);
    EVP_KDF_free(kdf);
    return ok ? KV_OK : kv_error_ossl(ctx, KV_ERR_CRYPTO, "KDFa (%s) failed", label);
}

/* An EC key's coordinates, each field_len bytes. */
static kv_rc ec_xy(const kv_ctx *ctx, const EVP_PKEY *k, size_t field_len, unsigned char *x,
                   unsigned char *y)
{
    BIGNUM *bx = NULL, *by = NULL;
    int ok = EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &bx) == 1 &&
             EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &by) == 1 &&
             BN_bn2binpad(bx, x, (int)field_len) == (int)field_len &&
             BN_bn2binpad(by, y, (int)field_len) == (int)field_len;

    BN_free(bx);
    BN_free(by);
    return ok ? KV_OK : kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot read an EC point");
}

/* The seed protected to an ECC EK (Part 1, C.6.4): an ephemeral key on the
 * EK's curve, Z = the x coordinate of ECDH, seed = KDFe(SHA-256, Z,
 * "IDENTITY", ephemeral x, EK x); the secret is the ephemeral point. */
static kv_rc seed_ecc(const kv_ctx *ctx, EVP_PKEY *ek, unsigned char *seed, size_t seedlen,
                      TPM2B_ENCRYPTED_SECRET *enc)
{
    const kv_type_desc *t = kv_type_desc_get(kv_type_of_pkey(ek));
    EVP_PKEY *eph = NULL;
    EVP_PKEY_CTX *pc = NULL;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *k = NULL;
    TPMS_ECC_POINT pt = { 0 };
    unsigned char z[TPM2_MAX_ECC_KEY_BYTES], ekx[TPM2_MAX_ECC_KEY_BYTES],
        eky[TPM2_MAX_ECC_KEY_BYTES], info[9 + 2 * TPM2_MAX_ECC_KEY_BYTES];
    size_t zlen = sizeof(z), fl, off = 0;
    OSSL_PARAM params[4];
    kv_rc rc = KV_OK;

    if (!t || t->family != KV_FAMILY_EC || t->field_len > TPM2_MAX_ECC_KEY_BYTES)
        return kv_error(ctx, KV_ERR_UNSUPPORTED, "the EK is on a curve enrollment does not use");
    fl = t->field_len;
    if (!(eph = EVP_PKEY_Q_keygen(ctx->libctx, NULL, "EC", t->group)))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot make the ephemeral key");
    if (!(pc = EVP_PKEY_CTX_new_from_pkey(ctx->libctx, eph, NULL)) ||
        EVP_PKEY_derive_init(pc) != 1 || EVP_PKEY_derive_set_peer(pc, ek) != 1 ||
        EVP_PKEY_derive(pc, z, &zlen) != 1 || zlen != fl)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "ECDH with the EK failed");
    KV_CHECK(rc, ec_xy(ctx, eph, fl, pt.x.buffer, pt.y.buffer));
    pt.x.size = pt.y.size = (UINT16)fl;
    KV_CHECK(rc, ec_xy(ctx, ek, fl, ekx, eky));
    memcpy(info, "IDENTITY", 9); /* the terminating zero belongs to the label */
    memcpy(info + 9, pt.x.buffer, fl);
    memcpy(info + 9 + fl, ekx, fl);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, z, zlen);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 9 + 2 * fl);
    params[3] = OSSL_PARAM_construct_end();
    if (!(kdf = EVP_KDF_fetch(ctx->libctx, "SSKDF", NULL)) || !(k = EVP_KDF_CTX_new(kdf)) ||
        EVP_KDF_derive(k, seed, seedlen, params) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "KDFe failed");
    if (Tss2_MU_TPMS_ECC_POINT_Marshal(&pt, enc->secret, sizeof(enc->secret), &off) !=
        TSS2_RC_SUCCESS)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot marshal the ephemeral point");
    enc->size = (UINT16)off;
out:
    OPENSSL_cleanse(z, sizeof(z));
    EVP_KDF_CTX_free(k);
    EVP_KDF_free(kdf);
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(eph);
    return rc;
}

/* The seed protected to an RSA EK (Part 1, B.10.3): random, encrypted with
 * RSA-OAEP, SHA-256, label "IDENTITY" and its zero byte. */
static kv_rc seed_rsa(const kv_ctx *ctx, EVP_PKEY *ek, unsigned char *seed, size_t seedlen,
                      TPM2B_ENCRYPTED_SECRET *enc)
{
    EVP_PKEY_CTX *pc = NULL;
    unsigned char *label = OPENSSL_memdup("IDENTITY", 9);
    size_t n = sizeof(enc->secret);
    kv_rc rc = KV_OK;

    if (!label)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (RAND_bytes_ex(ctx->libctx, seed, seedlen, 0) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "no random seed");
    if (!(pc = EVP_PKEY_CTX_new_from_pkey(ctx->libctx, ek, NULL)) ||
        EVP_PKEY_encrypt_init(pc) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md_name(pc, "SHA256", NULL) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(pc, "SHA256", NULL) != 1 ||
        EVP_PKEY_CTX_set0_rsa_oaep_label(pc, label, 9) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot set up RSA-OAEP to the EK");
    label = NULL; /* the context owns it */
    if (EVP_PKEY_encrypt(pc, enc->secret, &n, seed, seedlen) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "RSA-OAEP encryption to the EK failed");
    enc->size = (UINT16)n;
out:
    OPENSSL_free(label);
    EVP_PKEY_CTX_free(pc);
    return rc;
}

kv_rc kv_credential_make(const kv_ctx *ctx, EVP_PKEY *ek, const unsigned char *name,
                         size_t name_len, const unsigned char *cred, size_t cred_len,
                         unsigned char **id_object, size_t *id_len, unsigned char **enc_secret,
                         size_t *secret_len)
{
    unsigned char seed[32], sym[16], hkey[32], iv[16] = { 0 };
    uint8_t plain[2 + sizeof(TPMU_HA)];
    TPM2B_ENCRYPTED_SECRET enc = { 0 };
    TPM2B_ID_OBJECT id = { 0 };
    TPM2B_DIGEST hmac = { .size = 32 };
    size_t plen = 0, off = 0, elen;
    uint8_t buf[sizeof(TPM2B_ENCRYPTED_SECRET) > sizeof(TPM2B_ID_OBJECT)
                    ? sizeof(TPM2B_ENCRYPTED_SECRET) : sizeof(TPM2B_ID_OBJECT)];
    TPM2B_DIGEST c = { 0 };
    EVP_CIPHER *aes = NULL;
    EVP_CIPHER_CTX *cc = NULL;
    unsigned char *mac_in = NULL;
    int outl = 0, fin = 0;
    kv_rc rc = KV_OK;

    *id_object = *enc_secret = NULL;
    if (cred_len == 0 || cred_len > 32 || name_len > sizeof(TPMU_NAME))
        return kv_error(ctx, KV_ERR_INVALID_ARG, "a credential is 1 to 32 bytes");
    /* the seed, protected to the EK the certificate holds */
    if (EVP_PKEY_is_a(ek, "RSA"))
        KV_CHECK(rc, seed_rsa(ctx, ek, seed, sizeof(seed), &enc));
    else if (EVP_PKEY_is_a(ek, "EC"))
        KV_CHECK(rc, seed_ecc(ctx, ek, seed, sizeof(seed), &enc));
    else
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "the EK is neither RSA nor ECC");
    /* the EK templates' symmetric algorithm: AES-128-CFB, name algorithm SHA-256 */
    KV_CHECK(rc, kdfa(ctx, seed, sizeof(seed), "STORAGE", name, name_len, sym, sizeof(sym)));
    KV_CHECK(rc, kdfa(ctx, seed, sizeof(seed), "INTEGRITY", NULL, 0, hkey, sizeof(hkey)));
    c.size = (UINT16)cred_len;
    memcpy(c.buffer, cred, cred_len);
    if (Tss2_MU_TPM2B_DIGEST_Marshal(&c, plain, sizeof(plain), &plen) != TSS2_RC_SUCCESS)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot marshal the credential");
    elen = plen;
    /* encIdentity after the outer HMAC, which is a TPM2B_DIGEST of 32 bytes */
    if (!(aes = EVP_CIPHER_fetch(ctx->libctx, "AES-128-CFB", NULL)) ||
        !(cc = EVP_CIPHER_CTX_new()) || EVP_EncryptInit_ex2(cc, aes, sym, iv, NULL) != 1 ||
        EVP_EncryptUpdate(cc, id.credential + 2 + 32, &outl, plain, (int)plen) != 1 ||
        EVP_EncryptFinal_ex(cc, id.credential + 2 + 32 + outl, &fin) != 1 ||
        (size_t)(outl + fin) != elen)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "AES-128-CFB of the credential failed");
    if (!(mac_in = OPENSSL_malloc(elen + name_len)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    memcpy(mac_in, id.credential + 2 + 32, elen);
    memcpy(mac_in + elen, name, name_len);
    if (!EVP_Q_mac(ctx->libctx, "HMAC", NULL, "SHA256", NULL, hkey, sizeof(hkey), mac_in,
                   elen + name_len, hmac.buffer, sizeof(hmac.buffer), NULL))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "the outer HMAC failed");
    if (Tss2_MU_TPM2B_DIGEST_Marshal(&hmac, id.credential, 2 + 32, &off) != TSS2_RC_SUCCESS)
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot marshal the outer HMAC");
    id.size = (UINT16)(2 + 32 + elen);
    off = 0;
    if (Tss2_MU_TPM2B_ID_OBJECT_Marshal(&id, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS ||
        !(*id_object = OPENSSL_memdup(buf, off)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "cannot marshal the credential blob");
    *id_len = off;
    off = 0;
    if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&enc, buf, sizeof(buf), &off) != TSS2_RC_SUCCESS ||
        !(*enc_secret = OPENSSL_memdup(buf, off)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "cannot marshal the encrypted seed");
    *secret_len = off;
out:
    OPENSSL_cleanse(seed, sizeof(seed));
    OPENSSL_cleanse(sym, sizeof(sym));
    OPENSSL_cleanse(hkey, sizeof(hkey));
    OPENSSL_cleanse(plain, sizeof(plain));
    OPENSSL_cleanse(&c, sizeof(c));
    OPENSSL_free(mac_in);
    EVP_CIPHER_CTX_free(cc);
    EVP_CIPHER_free(aes);
    if (rc != KV_OK) {
        OPENSSL_free(*id_object);
        *id_object = NULL;
        OPENSSL_free(*enc_secret);
        *enc_secret = NULL;
    }
    return rc;
}

/* Hex SHA-256 of a key's SubjectPublicKeyInfo. */
static kv_rc spki_hash(const kv_ctx *ctx, const EVP_PKEY *k, char hex[65])
{
    unsigned char *der = NULL, md[32];
    int n = i2d_PUBKEY(k, &der);
    unsigned int mdlen = 0;
    int ok = n > 0 && EVP_Digest(der, (size_t)n, md, &mdlen, kv_ctx_md(ctx, "SHA256"), NULL);

    OPENSSL_free(der);
    if (!ok)
        return kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot hash the EK's public key");
    hex_of(md, 32, hex);
    return KV_OK;
}

/* The backend that holds the AK (the TPM). */
static kv_backend *enroller(kv_ctx *ctx)
{
    for (size_t i = 0; i < ctx->nbackends; i++) {
        kv_backend *be = &ctx->backends[i];
        if (be->available && be->ops && be->ops->activate && be->ops->ak_public_area &&
            be->ops->ek_certs)
            return be;
    }
    kv_error(ctx, KV_ERR_BACKEND_UNAVAILABLE,
             "no available backend can enroll an AK: configure a TPM ([tpm] tcti or "
             "KEYVAULT_TCTI)");
    return NULL;
}

static const char *const request_members[] = { "device_id", "ak_public", "?ek_certs",
                                                "?ek_chain", NULL };
static const char *const challenge_members[] = { "challenge", "device_id", "ak_name", "expires",
                                                 "?credentials", NULL };
static const char *const response_members[] = { "challenge", "credential", NULL };

/* A document's array member of 1 to max entries. */
static kv_rc doc_array(const kv_ctx *ctx, json_t *doc, const char *member, size_t max,
                       json_t **out)
{
    *out = json_object_get(doc, member);
    if (!json_is_array(*out) || json_array_size(*out) == 0 || json_array_size(*out) > max)
        return kv_error(ctx, KV_ERR_BAD_INPUT, "\"%s\" is missing or not an array of 1 to %zu",
                        member, max);
    return KV_OK;
}

/* ---- device side ---------------------------------------------------------------------- */

kv_rc kv_enroll_request(kv_ctx *ctx, const char *device_id, char **request)
{
    kv_backend *be;
    unsigned char *ek[KV_EK_MAX] = { NULL }, *ak = NULL;
    size_t eklen[KV_EK_MAX], nek = 0, aklen = 0;
    const unsigned char *p;
    X509 *cert = NULL;
    char hash[65], dev[KV_DEVICE_ID_MAX + 1], *s;
    json_t *doc = NULL, *arr = NULL;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *request = NULL;
    if (device_id && !kv_device_id_valid(device_id))
        return kv_error(ctx, KV_ERR_INVALID_ARG,
                        "a device id is 1 to %d of A-Z a-z 0-9 . _ : @ -, not starting with -",
                        KV_DEVICE_ID_MAX);
    if (!(be = enroller(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    KV_CHECK(rc, kv_policy_check(ctx, be, NULL, KV_OP_ATTEST, "enroll", NULL));
    /* every EK certificate of the TPM: the verifier binds them all to the device */
    KV_CHECK(rc, be->ops->ek_certs(be, ek, eklen, &nek));
    KV_CHECK(rc, be->ops->ak_public_area(be, true, &ak, &aklen));
    p = ek[0];
    if (!(cert = d2i_X509(NULL, &p, (long)eklen[0])))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CORRUPT, "the TPM's EK certificate does not decode");
    KV_CHECK(rc, spki_hash(ctx, X509_get0_pubkey(cert), hash));
    snprintf(dev, sizeof(dev), "tpm-%.16s", hash);
    doc = json_pack("{s:s, s:i, s:s}", "format", "keyvault-enroll-request", "version", 1,
                    "device_id", device_id ? device_id : dev);
    if (!doc || !(arr = json_array()) || set_b64u(doc, "ak_public", ak, aklen) != 0)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < nek; i++) {
        if (!(s = kv_b64url_encode(ek[i], eklen[i])) ||
            json_array_append_new(arr, json_string(s)) != 0) {
            free(s);
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        }
        free(s);
    }
    if (json_object_set_new(doc, "ek_certs", arr) != 0) {
        arr = NULL;
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    }
    arr = NULL;
    rc = doc_dump(ctx, doc, request);
    doc = NULL;
out:
    json_decref(arr);
    json_decref(doc);
    X509_free(cert);
    for (size_t i = 0; i < nek; i++)
        OPENSSL_free(ek[i]);
    OPENSSL_free(ak);
    return rc;
}

kv_rc kv_tpm_activate_credential(kv_ctx *ctx, const unsigned char *id_object, size_t id_len,
                                 const unsigned char *enc_secret, size_t secret_len,
                                 unsigned char *buf, size_t *len)
{
    kv_backend *be;
    unsigned char cred[sizeof(TPMU_HA)];
    size_t n = sizeof(cred);
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    if (id_len == 0 || id_len > sizeof(TPM2B_ID_OBJECT) || secret_len == 0 ||
        secret_len > sizeof(TPM2B_ENCRYPTED_SECRET))
        return kv_error(ctx, KV_ERR_BAD_INPUT,
                        "the credential blob or the encrypted seed has an impossible size");
    if (!(be = enroller(ctx)))
        return KV_ERR_BACKEND_UNAVAILABLE;
    KV_CHECK(rc, kv_policy_check(ctx, be, NULL, KV_OP_ATTEST, "activate-credential", NULL));
    KV_CHECK(rc, be->ops->activate(be, NULL, 0, id_object, id_len, enc_secret, secret_len, cred,
                                   &n));
    rc = kv_copy_out(ctx, "the credential", cred, n, buf, len);
out:
    OPENSSL_cleanse(cred, sizeof(cred));
    if (rc != KV_OK && rc != KV_ERR_BUFFER_TOO_SMALL)
        *len = 0;
    return rc;
}

/* Activate one of the challenge's credentials with the EK whose key hashes
 * to its "ek_sha256", appending the credential to cred (*n bytes so far). */
static kv_rc activate_one(kv_ctx *ctx, kv_backend *be, json_t *entry, size_t i,
                          unsigned char *const ek[], const size_t eklen[], size_t nek,
                          unsigned char *cred, size_t *n, size_t size)
{
    static const char *const members[] = { "ek_sha256", "credential", "secret" };
    unsigned char *id = NULL, *sec = NULL;
    size_t idlen = 0, seclen = 0, got = size - *n, which = nek;
    const char *want;
    char hash[65];
    kv_rc rc = KV_OK;

    if (!json_is_object(entry) || json_object_size(entry) != 3)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "credentials[%zu] is not an object of ek_sha256, "
                "credential and secret", i);
    for (size_t m = 0; m < 3; m++)
        if (!json_is_string(json_object_get(entry, members[m])))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "credentials[%zu].%s is missing or not a string",
                    i, members[m]);
    want = json_string_value(json_object_get(entry, "ek_sha256"));
    KV_CHECK(rc, doc_blob(ctx, entry, "credential", &id, &idlen));
    KV_CHECK(rc, doc_blob(ctx, entry, "secret", &sec, &seclen));
    for (size_t k = 0; k < nek && which == nek; k++) {
        const unsigned char *p = ek[k];
        X509 *x = d2i_X509(NULL, &p, (long)eklen[k]);
        if (x && spki_hash(ctx, X509_get0_pubkey(x), hash) == KV_OK && !strcmp(hash, want))
            which = k;
        X509_free(x);
    }
    if (which == nek)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "credentials[%zu] is for an EK this TPM holds no certificate for", i);
    KV_CHECK(rc, be->ops->activate(be, ek[which], eklen[which], id, idlen, sec, seclen,
                                   cred + *n, &got));
    *n += got;
out:
    free(id);
    free(sec);
    return rc;
}

kv_rc kv_enroll_respond(kv_ctx *ctx, const char *challenge, size_t len, char **response)
{
    kv_backend *be;
    json_t *doc = NULL, *resp = NULL, *creds, *entry;
    unsigned char *ek[KV_EK_MAX] = { NULL }, *ak = NULL, cred[KV_EK_MAX * 64];
    unsigned char name[2 + sizeof(TPMU_HA)];
    char name_hex[2 * sizeof(name) + 1];
    size_t eklen[KV_EK_MAX], nek = 0, aklen = 0, name_len = 0, n = 0, i;
    const char *cid;
    TPM2B_PUBLIC pub;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    *response = NULL;
    KV_CHECK(rc, doc_parse(ctx, challenge, len, "keyvault-enroll-challenge", challenge_members,
                           &doc));
    cid = json_string_value(json_object_get(doc, "challenge"));
    if (!hex_valid(cid, 32))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the challenge id is not 32 lowercase hex digits");
    if (!kv_device_id_valid(json_string_value(json_object_get(doc, "device_id"))))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "device_id: 1 to %d of A-Z a-z 0-9 . _ : @ -, not "
                "starting with -", KV_DEVICE_ID_MAX);
    KV_CHECK(rc, doc_array(ctx, doc, "credentials", KV_EK_MAX, &creds));
    if (!(be = enroller(ctx))) {
        rc = KV_ERR_BACKEND_UNAVAILABLE;
        goto out;
    }
    /* a challenge for another AK cannot be answered: say so before the TPM does */
    KV_CHECK(rc, be->ops->ak_public_area(be, true, &ak, &aklen));
    KV_CHECK(rc, ak_parse(ctx, ak, aklen, &pub, name, &name_len));
    hex_of(name, name_len, name_hex);
    if (strcmp(name_hex, json_string_value(json_object_get(doc, "ak_name"))) != 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT,
                "the challenge is for another AK than this TPM's (%.20s...)", name_hex);
    KV_CHECK(rc, kv_policy_check(ctx, be, NULL, KV_OP_ATTEST, "enroll", NULL));
    KV_CHECK(rc, be->ops->ek_certs(be, ek, eklen, &nek));
    /* one credential per EK certificate of the request: each proves this
     * TPM holds that EK */
    json_array_foreach(creds, i, entry)
        KV_CHECK(rc, activate_one(ctx, be, entry, i, ek, eklen, nek, cred, &n, sizeof(cred)));
    resp = json_pack("{s:s, s:i, s:s}", "format", "keyvault-enroll-response", "version", 1,
                     "challenge", cid);
    if (!resp || set_b64u(resp, "credential", cred, n) != 0)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, doc_dump_secret(ctx, resp, response));
out:
    wipe_member(resp, "credential");
    OPENSSL_cleanse(cred, sizeof(cred));
    json_decref(doc);
    json_decref(resp);
    for (i = 0; i < nek; i++)
        OPENSSL_free(ek[i]);
    OPENSSL_free(ak);
    return rc;
}

/* ---- verifier side ------------------------------------------------------------------- */

/* The request's EK certificates (1 to KV_EK_MAX, two with one key refused),
 * each verified against the anchors file (any certificate in it is an
 * anchor) with the request's intermediates; their DER concatenated in
 * *der, the hex SHA-256 of each one's key concatenated in hashes. */
static kv_rc ek_verify(kv_ctx *ctx, json_t *doc, const char *anchors, X509 *certs[],
                       size_t *ncerts, unsigned char **der, size_t *derlen,
                       char hashes[64 * KV_EK_MAX + 1])
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *sc = X509_STORE_CTX_new_ex(ctx->libctx, NULL);
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    json_t *chain = json_object_get(doc, "ek_chain"), *eks, *v;
    const unsigned char *p;
    unsigned char *b = NULL, *all = NULL;
    size_t i, n = 0, total = 0;
    int err, nanchors = 0;
    kv_rc rc = KV_OK;

    *ncerts = 0;
    *der = NULL;
    hashes[0] = '\0';
    if (!store || !sc || !untrusted)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    KV_CHECK(rc, doc_array(ctx, doc, "ek_certs", KV_EK_MAX, &eks));
    if (chain && (!json_is_array(chain) || json_array_size(chain) > CHAIN_MAX))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "ek_chain: an array of at most %d certificates",
                CHAIN_MAX);
    json_array_foreach(chain, i, v) {
        X509 *x;
        if (!json_is_string(v))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "ek_chain[%zu] is not a string", i);
        KV_CHECK(rc, b64u_decode(ctx, "ek_chain", json_string_value(v), &b, &n));
        p = b;
        x = d2i_X509(NULL, &p, (long)n);
        free(b);
        b = NULL;
        if (!x || !sk_X509_push(untrusted, x)) {
            X509_free(x);
            KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "ek_chain[%zu] is not a certificate", i);
        }
    }
    KV_CHECK(rc, kv_anchors_load(ctx, "EK trust anchors", anchors, store, &nanchors));
    if (nanchors == 0)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "EK trust anchors file '%s' holds no certificate",
                anchors);
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    json_array_foreach(eks, i, v) {
        X509 *cert;
        char h[65];
        unsigned char *grown;
        if (!json_is_string(v))
            KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "ek_certs[%zu] is not a string", i);
        KV_CHECK(rc, b64u_decode(ctx, "ek_certs", json_string_value(v), &b, &n));
        p = b;
        if (!(cert = d2i_X509(NULL, &p, (long)n)) || p != b + n) {
            X509_free(cert);
            KV_FAIL_OSSL(ctx, rc, KV_ERR_BAD_INPUT, "ek_certs[%zu] is not one DER certificate",
                         i);
        }
        certs[(*ncerts)++] = cert;
        X509_STORE_CTX_cleanup(sc);
        if (X509_STORE_CTX_init(sc, store, cert, untrusted) != 1)
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot set up the EK certificate's "
                         "verification");
        if (X509_verify_cert(sc) != 1) {
            err = X509_STORE_CTX_get_error(sc);
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                    "EK certificate %zu does not chain to the EK trust anchors in '%s': %s", i,
                    anchors, X509_verify_cert_error_string(err));
        }
        KV_CHECK(rc, spki_hash(ctx, X509_get0_pubkey(cert), h));
        for (size_t k = 0; k < i; k++)
            if (!strncmp(hashes + 64 * k, h, 64))
                KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "ek_certs[%zu] holds the key of "
                        "ek_certs[%zu] again", i, k);
        memcpy(hashes + 64 * i, h, 65);
        if (!(grown = realloc(all, total + n)))
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        all = grown;
        memcpy(all + total, b, n);
        total += n;
        free(b);
        b = NULL;
    }
    *der = all;
    *derlen = total;
    all = NULL;
out:
    free(b);
    free(all);
    sk_X509_pop_free(untrusted, X509_free);
    X509_STORE_CTX_free(sc);
    X509_STORE_free(store);
    if (rc != KV_OK) {
        for (i = 0; i < *ncerts; i++)
            X509_free(certs[i]);
        *ncerts = 0;
    }
    return rc;
}

kv_rc kv_enroll_challenge(kv_ctx *ctx, const char *request, size_t len, const char *ek_anchors,
                          const char *registry, unsigned ttl, char **challenge)
{
    json_t *doc = NULL, *out_doc = NULL, *arr = NULL, *o;
    kv_pending pend;
    kv_registry *reg = NULL;
    X509 *ek[KV_EK_MAX];
    TPM2B_PUBLIC akpub;
    unsigned char *ak = NULL, *ekder = NULL, *id = NULL, *sec = NULL;
    unsigned char name[2 + sizeof(TPMU_HA)], cred[KV_EK_MAX * CRED_LEN], rnd[16], md[32];
    size_t aklen = 0, ekdlen = 0, name_len = 0, idlen = 0, seclen = 0, nek = 0;
    const char *dev;
    EVP_PKEY *akkey = NULL;
    char expires[32], hex[65];
    time_t exp;
    struct tm tm;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    memset(&pend, 0, sizeof(pend));
    *challenge = NULL;
    if (ttl > TTL_MAX)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "a challenge lives at most %d s", TTL_MAX);
    KV_CHECK(rc, doc_parse(ctx, request, len, "keyvault-enroll-request", request_members, &doc));
    dev = json_string_value(json_object_get(doc, "device_id"));
    if (!kv_device_id_valid(dev))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "device_id: 1 to %d of A-Z a-z 0-9 . _ : @ -, not "
                "starting with -", KV_DEVICE_ID_MAX);
    /* the EKs: the certificates' keys, checked against the anchors */
    KV_CHECK(rc, ek_verify(ctx, doc, ek_anchors, ek, &nek, &ekder, &ekdlen, pend.ek_sha256));
    for (size_t i = 0; i < nek; i++) {
        kv_key_type t = kv_type_of_pkey(X509_get0_pubkey(ek[i]));
        if (t != KV_KEY_RSA_2048 && t != KV_KEY_EC_P256)
            KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED,
                    "EK certificate %zu holds a %s key: enrollment takes RSA-2048 or ECC P-256 "
                    "EKs (TCG templates L-1, L-2)", i, kv_key_type_name(t));
    }
    KV_CHECK(rc, doc_blob(ctx, doc, "ak_public", &ak, &aklen));
    KV_CHECK(rc, ak_parse(ctx, ak, aklen, &akpub, name, &name_len));
    /* its key must decode (a point on its curve): the CA certifies it at the end */
    KV_CHECK(rc, tpm_public_to_pkey(ctx, &akpub.publicArea, &akkey));
    KV_CHECK(rc, kv_registry_begin(ctx, registry, &reg));
    KV_CHECK(rc, kv_registry_may_enroll(ctx, reg, pend.ek_sha256, dev, -1));
    /* one credential per EK, each protected to the certified key for this
     * AK's name: the answer proves the TPM holds every EK it presented */
    if (RAND_bytes_ex(ctx->libctx, cred, nek * CRED_LEN, 0) != 1 ||
        RAND_bytes_ex(ctx->libctx, rnd, sizeof(rnd), 0) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "no random credential");
    if (!(arr = json_array()))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < nek; i++) {
        KV_CHECK(rc, kv_credential_make(ctx, X509_get0_pubkey(ek[i]), name, name_len,
                                        cred + i * CRED_LEN, CRED_LEN, &id, &idlen, &sec,
                                        &seclen));
        snprintf(hex, sizeof(hex), "%.64s", pend.ek_sha256 + 64 * i);
        if (!(o = json_pack("{s:s}", "ek_sha256", hex)) || json_array_append_new(arr, o) != 0 ||
            set_b64u(o, "credential", id, idlen) != 0 || set_b64u(o, "secret", sec, seclen) != 0)
            KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
        OPENSSL_free(id);
        OPENSSL_free(sec);
        id = sec = NULL;
    }
    if (EVP_Q_digest(ctx->libctx, "SHA256", NULL, cred, nek * CRED_LEN, md, NULL) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot hash the credentials");
    hex_of(rnd, sizeof(rnd), pend.id);
    hex_of(md, sizeof(md), pend.secret_sha256);
    hex_of(name, name_len, pend.ak_name);
    snprintf(pend.device_id, sizeof(pend.device_id), "%s", dev);
    pend.ek_certs = ekder;
    pend.ek_certs_len = ekdlen;
    pend.ak_public = ak;
    pend.ak_public_len = aklen;
    exp = time(NULL) + (ttl ? ttl : TTL_DEFAULT);
    pend.expires = (int64_t)exp;
    KV_CHECK(rc, kv_registry_pending_add(ctx, reg, &pend));
    if (!gmtime_r(&exp, &tm) || !strftime(expires, sizeof(expires), "%Y-%m-%dT%H:%M:%SZ", &tm))
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot format the expiry time");
    /* the device id, so the device can see (and check) what it enrolls as */
    out_doc = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:o}", "format",
                        "keyvault-enroll-challenge", "version", 1, "challenge", pend.id,
                        "device_id", dev, "ak_name", pend.ak_name, "expires", expires,
                        "credentials", arr);
    arr = NULL;
    if (!out_doc)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    rc = doc_dump(ctx, out_doc, challenge);
    out_doc = NULL;
out:
    rc = kv_registry_end(ctx, reg, rc);
    if (rc != KV_OK && *challenge) {
        kv_string_free(*challenge);
        *challenge = NULL;
    }
    OPENSSL_cleanse(cred, sizeof(cred));
    json_decref(doc);
    json_decref(arr);
    json_decref(out_doc);
    EVP_PKEY_free(akkey);
    for (size_t i = 0; i < nek; i++)
        X509_free(ek[i]);
    free(ekder);
    free(ak);
    OPENSSL_free(id);
    OPENSSL_free(sec);
    return rc;
}

/* The TCG directoryName values (manufacturer, model, version) of an EK
 * certificate's SAN, each only when well formed; NULL otherwise. */
static void ek_tpm_ids(X509 *ek, char *vals[3])
{
    static const char *const oids[] = { "2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3" };
    GENERAL_NAMES *sans = X509_get_ext_d2i(ek, NID_subject_alt_name, NULL, NULL);

    vals[0] = vals[1] = vals[2] = NULL;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DIRNAME)
            continue;
        for (int e = 0; e < X509_NAME_entry_count(g->d.directoryName); e++) {
            X509_NAME_ENTRY *ne = X509_NAME_get_entry(g->d.directoryName, e);
            char oid[32];
            unsigned char *utf = NULL;
            int n;
            OBJ_obj2txt(oid, sizeof(oid), X509_NAME_ENTRY_get_object(ne), 1);
            for (int k = 0; k < 3; k++) {
                if (strcmp(oid, oids[k]) != 0 || vals[k])
                    continue;
                n = ASN1_STRING_to_UTF8(&utf, X509_NAME_ENTRY_get_data(ne));
                if (n > 0 && n <= 64 && strlen((char *)utf) == (size_t)n)
                    vals[k] = kv_strdup((char *)utf);
                OPENSSL_free(utf);
                utf = NULL;
            }
        }
    }
    GENERAL_NAMES_free(sans);
}

/* Hex of the first certificate's serial in a PEM bundle. */
static kv_rc pem_serial(const kv_ctx *ctx, const char *pem, char *hex, size_t size)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIGNUM *bn = x ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
    char *h = bn ? BN_bn2hex(bn) : NULL;
    kv_rc rc = KV_OK;

    if (!h || strlen(h) >= size)
        rc = kv_error_ossl(ctx, KV_ERR_CRYPTO, "cannot read the AK certificate's serial");
    else
        for (size_t i = 0; (hex[i] = (char)(h[i] >= 'A' && h[i] <= 'F' ? h[i] + 32 : h[i])); i++)
            ;
    OPENSSL_free(h);
    BN_free(bn);
    X509_free(x);
    BIO_free(b);
    return rc;
}

kv_rc kv_enroll_finish(kv_key *ca, const char *response, size_t len, const char *registry,
                       unsigned flags, char **ak_chain)
{
    kv_ctx *ctx = ca->ctx;
    json_t *doc = NULL;
    kv_registry *reg = NULL;
    kv_pending pend;
    unsigned char *cred = NULL, md[32], name[2 + sizeof(TPMU_HA)], *spki = NULL;
    size_t credlen = 0, name_len = 0, neks = 0, first_len = 0;
    char md_hex[65], name_hex[2 * sizeof(name) + 1], serial[80] = "", old[KV_SERIAL_HEX_MAX + 1] = "",
        hashes[64 * KV_EK_MAX + 1], *ids[3] = { NULL, NULL, NULL };
    const char *cid;
    const unsigned char *p;
    TPM2B_PUBLIC akpub;
    EVP_PKEY *akkey = NULL;
    X509 *ek = NULL;
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    bool issued = false;
    int n;
    kv_rc rc;

    KV_CALL_BEGIN(ctx);
    memset(&pend, 0, sizeof(pend));
    *ak_chain = NULL;
    if (flags & ~KV_ENROLL_REPLACE)
        return kv_error(ctx, KV_ERR_INVALID_ARG, "unknown flags 0x%x", flags & ~KV_ENROLL_REPLACE);
    KV_CHECK(rc, doc_parse(ctx, response, len, "keyvault-enroll-response", response_members,
                           &doc));
    cid = json_string_value(json_object_get(doc, "challenge"));
    if (!hex_valid(cid, 32))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "the challenge id is not 32 lowercase hex digits");
    KV_CHECK(rc, doc_blob(ctx, doc, "credential", &cred, &credlen));
    /* one answer per challenge: the challenge is gone before the answer is looked at */
    KV_CHECK(rc, kv_registry_begin(ctx, registry, &reg));
    rc = kv_registry_pending_take(ctx, reg, cid, &pend);
    rc = kv_registry_end(ctx, reg, rc);
    reg = NULL;
    if (rc != KV_OK)
        goto out;
    if (pend.expires < (int64_t)time(NULL))
        KV_FAIL(ctx, rc, KV_ERR_PERMISSION, "challenge %s expired %lld s ago: ask for a new one",
                cid, (long long)((int64_t)time(NULL) - pend.expires));
    if (EVP_Q_digest(ctx->libctx, "SHA256", NULL, cred, credlen, md, NULL) != 1)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot hash the credential");
    hex_of(md, sizeof(md), md_hex);
    if (CRYPTO_memcmp(md_hex, pend.secret_sha256, 64) != 0)
        KV_FAIL(ctx, rc, KV_ERR_AUTH_FAILED,
                "the credentials of challenge %s do not match: the device did not activate them "
                "all (another TPM or another AK); the challenge is spent", cid);
    /* what the registry holds is checked again: the AK certified is the
     * one whose name the credential was bound to */
    KV_CHECK(rc, ak_parse(ctx, pend.ak_public, pend.ak_public_len, &akpub, name, &name_len));
    hex_of(name, name_len, name_hex);
    if (strcmp(name_hex, pend.ak_name) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "registry '%s' is damaged: challenge %s's AK does not have the recorded name",
                registry, cid);
    /* and the EKs bound are the ones the credentials were made for */
    hashes[0] = '\0';
    for (p = pend.ek_certs; p < pend.ek_certs + pend.ek_certs_len; neks++) {
        const unsigned char *at = p;
        X509 *x = neks < KV_EK_MAX ? d2i_X509(NULL, &p, (long)(pend.ek_certs + pend.ek_certs_len - p))
                                   : NULL;
        if (!x || spki_hash(ctx, X509_get0_pubkey(x), hashes + 64 * neks) != KV_OK) {
            X509_free(x);
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: challenge %s's EK "
                         "certificates do not decode", registry, cid);
        }
        if (neks == 0) {
            ek = x;
            first_len = (size_t)(p - at);
        } else {
            X509_free(x);
        }
    }
    if (strcmp(hashes, pend.ek_sha256) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "registry '%s' is damaged: challenge %s's EK "
                "certificates are not the recorded EKs", registry, cid);
    KV_CHECK(rc, tpm_public_to_pkey(ctx, &akpub.publicArea, &akkey));
    if ((n = i2d_PUBKEY(akkey, &spki)) <= 0)
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the AK's public key");
    /* the registry's verdict first (in one transaction with the record):
     * no certificate for a device it refuses */
    KV_CHECK(rc, kv_registry_begin(ctx, registry, &reg));
    KV_CHECK(rc, kv_registry_may_enroll(ctx, reg, pend.ek_sha256, pend.device_id,
                                        (flags & KV_ENROLL_REPLACE) ? 1 : 0));
    /* the TPM as its (first) EK certificate names it; documented defaults otherwise */
    ek_tpm_ids(ek, ids);
    opts.tpm_manufacturer = ids[0] ? ids[0] : "id:00000000";
    opts.tpm_model = ids[1] ? ids[1] : "unknown";
    opts.tpm_version = ids[2] ? ids[2] : "id:00000000";
    KV_CHECK(rc, kv_ca_issue_pubkey(ca, "tpm-ak", spki, (size_t)n, &opts, ak_chain));
    issued = true;
    KV_CHECK(rc, pem_serial(ctx, *ak_chain, serial, sizeof(serial)));
    KV_CHECK(rc, kv_registry_record(ctx, reg, &pend, pend.ek_certs, first_len, serial,
                                    (int64_t)time(NULL), old));
    /* the AK it replaces is no longer vouched for */
    if (old[0] && strcmp(old, serial) != 0) {
        rc = kv_ca_revoke(ca, old, KV_REVOKE_SUPERSEDED);
        if (rc == KV_ERR_BAD_INPUT || rc == KV_ERR_KEY_NOT_FOUND) {
            /* revoked already, or issued by another CA key: nothing to withdraw here */
            kv_err_begin(ctx);
            rc = KV_OK;
        }
    }
out:
    rc = kv_registry_end(ctx, reg, rc);
    if (rc != KV_OK && issued && serial[0]) {
        /* issued but not recorded: withdraw it, keeping the first failure's message */
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", kv_errmsg(ctx));
        bool revoked = kv_ca_revoke(ca, serial, KV_REVOKE_CESSATION_OF_OPERATION) == KV_OK;
        kv_err_begin(ctx);
        kv_error(ctx, rc, "%s (AK certificate %s %s)", msg, serial,
                 revoked ? "revoked" : "NOT revoked: revoke it by hand");
    }
    if (rc != KV_OK && *ak_chain) {
        kv_string_free(*ak_chain);
        *ak_chain = NULL;
    }
    if (cred)
        OPENSSL_cleanse(cred, credlen);
    free(cred);
    for (int i = 0; i < 3; i++)
        free(ids[i]);
    OPENSSL_free(spki);
    EVP_PKEY_free(akkey);
    X509_free(ek);
    kv_pending_clear(&pend);
    wipe_member(doc, "credential");
    json_decref(doc);
    return rc;
}

#else /* !KV_WITH_TPM */

static kv_rc no_tpm(kv_ctx *ctx)
{
    KV_CALL_BEGIN(ctx);
    return kv_error(ctx, KV_ERR_UNSUPPORTED,
                    "AK enrollment needs tpm2-tss: this libkeyvault was built without the TPM");
}

kv_rc kv_enroll_request(kv_ctx *ctx, const char *device_id, char **request)
{
    (void)device_id;
    *request = NULL;
    return no_tpm(ctx);
}

kv_rc kv_enroll_challenge(kv_ctx *ctx, const char *request, size_t len, const char *ek_anchors,
                          const char *registry, unsigned ttl, char **challenge)
{
    (void)request, (void)len, (void)ek_anchors, (void)registry, (void)ttl;
    *challenge = NULL;
    return no_tpm(ctx);
}

kv_rc kv_enroll_respond(kv_ctx *ctx, const char *challenge, size_t len, char **response)
{
    (void)challenge, (void)len;
    *response = NULL;
    return no_tpm(ctx);
}

kv_rc kv_enroll_finish(kv_key *ca, const char *response, size_t len, const char *registry,
                       unsigned flags, char **ak_chain)
{
    (void)response, (void)len, (void)registry, (void)flags;
    *ak_chain = NULL;
    return no_tpm(ca->ctx);
}

kv_rc kv_tpm_activate_credential(kv_ctx *ctx, const unsigned char *id_object, size_t id_len,
                                 const unsigned char *enc_secret, size_t secret_len,
                                 unsigned char *buf, size_t *len)
{
    (void)id_object, (void)id_len, (void)enc_secret, (void)secret_len, (void)buf;
    *len = 0;
    return no_tpm(ctx);
}

#endif
