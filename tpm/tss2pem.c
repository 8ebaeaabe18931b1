/*
 * tss2pem.c - TPM key files in the "TSS2 PRIVATE KEY" PEM format that
 * tpm2-openssl, tpm2-tss-engine and the Linux kernel read:
 *
 *   TPMKey ::= SEQUENCE {
 *       type        OBJECT IDENTIFIER,      -- 2.23.133.10.1.3, loadable key
 *       emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
 *       parent      INTEGER,                -- 0x40000001: the owner storage primary
 *       pubkey      OCTET STRING,           -- TPM2B_PUBLIC, marshalled
 *       privkey     OCTET STRING }          -- TPM2B_PRIVATE, marshalled
 *
 * The DER comes from OpenSSL's ASN.1 templates and the TPM structures from
 * tss2-mu; nothing here encodes by hand.
 */
#include "config.h"

#include <string.h>
#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "tpm.h"

#define TSS2_PEM_NAME "TSS2 PRIVATE KEY"
#define OID_LOADABLE_KEY "2.23.133.10.1.3"

typedef struct {
    ASN1_OBJECT *type;
    ASN1_BOOLEAN empty_auth;
    ASN1_INTEGER *parent;
    ASN1_OCTET_STRING *pubkey;
    ASN1_OCTET_STRING *privkey;
} KV_TPMKEY;

DECLARE_ASN1_FUNCTIONS(KV_TPMKEY)

ASN1_SEQUENCE(KV_TPMKEY) = {
    ASN1_SIMPLE(KV_TPMKEY, type, ASN1_OBJECT),
    ASN1_EXP_OPT(KV_TPMKEY, empty_auth, ASN1_BOOLEAN, 0),
    ASN1_SIMPLE(KV_TPMKEY, parent, ASN1_INTEGER),
    ASN1_SIMPLE(KV_TPMKEY, pubkey, ASN1_OCTET_STRING),
    ASN1_SIMPLE(KV_TPMKEY, privkey, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(KV_TPMKEY)

IMPLEMENT_ASN1_FUNCTIONS(KV_TPMKEY)

kv_rc tpm_key_write(const kv_ctx *ctx, const TPM2B_PUBLIC *pub, const TPM2B_PRIVATE *priv,
                    TPM2_HANDLE parent, bool empty_auth, char **pem, size_t *len)
{
    uint8_t pubbuf[sizeof(TPM2B_PUBLIC)], privbuf[sizeof(TPM2B_PRIVATE)];
    size_t publen = 0, privlen = 0;
    KV_TPMKEY *k = KV_TPMKEY_new();
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;
    kv_rc rc = KV_OK;

    *pem = NULL;
    if (!k || !bio)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, pubbuf, sizeof(pubbuf), &publen) ||
        Tss2_MU_TPM2B_PRIVATE_Marshal(priv, privbuf, sizeof(privbuf), &privlen))
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "cannot marshal the TPM key blobs");
    k->type = OBJ_txt2obj(OID_LOADABLE_KEY, 1);
    k->empty_auth = empty_auth ? 0xff : -1; /* -1: absent (the field is optional) */
    if (!k->type || !ASN1_INTEGER_set_uint64(k->parent, parent) ||
        !ASN1_OCTET_STRING_set(k->pubkey, pubbuf, (int)publen) ||
        !ASN1_OCTET_STRING_set(k->privkey, privbuf, (int)privlen) ||
        !PEM_ASN1_write_bio((i2d_of_void *)i2d_KV_TPMKEY, TSS2_PEM_NAME, bio, k, NULL, NULL, 0,
                            NULL, NULL))
        KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode a TSS2 PRIVATE KEY");
    n = BIO_get_mem_data(bio, &data);
    *pem = malloc((size_t)n + 1);
    if (!*pem)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    memcpy(*pem, data, (size_t)n);
    (*pem)[n] = '\0';
    *len = (size_t)n;
out:
    BIO_free(bio);
    KV_TPMKEY_free(k);
    return rc;
}

/* pem: the PEM text, or the DER of its block. */
kv_rc tpm_key_read(const kv_ctx *ctx, const char *pem, size_t len, const char *what,
                   TPM2B_PUBLIC *pub, TPM2B_PRIVATE *priv, TPM2_HANDLE *parent,
                   bool *empty_auth)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    unsigned char *der = NULL;
    const unsigned char *p;
    long derlen = 0;
    char *name = NULL, *header = NULL, oid[64];
    KV_TPMKEY *k = NULL;
    uint64_t par = 0;
    kv_rc rc = KV_OK;

    if (!bio)
        return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
    if (len > 0 && (unsigned char)pem[0] == 0x30) { /* a DER SEQUENCE: the block's content */
        p = (const unsigned char *)pem;
        derlen = (long)len;
    } else if (!PEM_read_bio(bio, &name, &header, &der, &derlen) ||
               strcmp(name, TSS2_PEM_NAME) != 0) {
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "%s is not a TSS2 PRIVATE KEY PEM file", what);
    } else {
        p = der;
    }
    const unsigned char *start = p;
    k = d2i_KV_TPMKEY(NULL, &p, derlen);
    if (!k || p != start + derlen)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "%s: malformed TSS2 PRIVATE KEY", what);
    if (!OBJ_obj2txt(oid, sizeof(oid), k->type, 1) || strcmp(oid, OID_LOADABLE_KEY) != 0)
        KV_FAIL(ctx, rc, KV_ERR_UNSUPPORTED, "%s: TSS2 key of type %s (only loadable keys, %s)",
                what, oid, OID_LOADABLE_KEY);
    if (!ASN1_INTEGER_get_uint64(&par, k->parent) || par > UINT32_MAX)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "%s: bad parent handle", what);
    *parent = par ? (TPM2_HANDLE)par : TPM2_RH_OWNER;
    *empty_auth = k->empty_auth > 0;
    memset(pub, 0, sizeof(*pub));
    memset(priv, 0, sizeof(*priv));
    /* each blob whole: nothing short, nothing left over */
    size_t puboff = 0, privoff = 0;
    if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(ASN1_STRING_get0_data(k->pubkey),
                                       (size_t)ASN1_STRING_length(k->pubkey), &puboff, pub) ||
        Tss2_MU_TPM2B_PRIVATE_Unmarshal(ASN1_STRING_get0_data(k->privkey),
                                        (size_t)ASN1_STRING_length(k->privkey), &privoff, priv) ||
        puboff != (size_t)ASN1_STRING_length(k->pubkey) ||
        privoff != (size_t)ASN1_STRING_length(k->privkey))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "%s: the TPM key blobs do not unmarshal", what);
out:
    kv_ossl_drop();
    KV_TPMKEY_free(k);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    BIO_free(bio);
    return rc;
}
