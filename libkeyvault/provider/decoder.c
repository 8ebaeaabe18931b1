/*
 * decoder.c - the keyvault provider's decoder for PEM "KEYVAULT KEY
 * REFERENCE" files (kv_key_reference_pem, `keyvault reference`), so that a
 * program reading its private key from a PEM file (PEM_read_bio_PrivateKey,
 * SSL_CTX_use_PrivateKey_file: nginx, curl, Python's ssl) gets the vault key
 * once the provider is activated in its openssl.cnf.
 *
 * Only that PEM type is ours: any other PEM block is passed over, and an
 * input without our block leaves this decoder empty-handed, so ordinary
 * keys keep going to the default provider's decoders whatever the provider
 * order. The reference itself (its DER, version and ref, no pin-value) is
 * checked and opened by kv_key_open_reference in the provider's kv_ctx; the
 * key goes to our key management as an OSSL_OBJECT_PARAM_REFERENCE.
 *
 * TSS2 PRIVATE KEY files are not decoded here: the public API opens a TPM
 * key file by its path only (tpm2:file=), and a decoder is handed bytes.
 */
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>

#include "prov.h"

#define KEYREF_PEM_NAME "KEYVAULT KEY REFERENCE"
/* what kv_key_open_reference takes */
#define DEC_MAX_INPUT (64 * 1024)

static void *dec_newctx(void *provctx)
{
    return provctx; /* no state of its own: the provider context serves */
}

static void dec_freectx(void *vctx)
{
    (void)vctx;
}

static int dec_does_selection(void *provctx, int selection)
{
    (void)provctx;
    /* a key, or anything; never domain parameters alone */
    return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0;
}

/* The whole input, NUL-terminated, when it holds the first line of a
 * KEYVAULT KEY REFERENCE block (ours: kv_key_open_reference reads the PEM,
 * passing over blocks of other kinds); NULL when it does not (not ours).
 * It is read whole, at most one byte past what kv_key_open_reference takes
 * (so that a longer input is refused there, not cut here). (OpenSSL 3.0's
 * file: store loader hands decoders fragments of a file: a reference read
 * through it, as by `openssl pkey -in FILE`, is not found whole here;
 * docs/provider.md.) */
static char *read_reference(BIO *in, size_t *len)
{
    char *buf = OPENSSL_malloc(DEC_MAX_INPUT + 2);
    size_t used = 0;

    *len = 0;
    if (!buf)
        return NULL;
    while (used < DEC_MAX_INPUT + 1) {
        size_t n = 0;
        if (!BIO_read_ex(in, buf + used, DEC_MAX_INPUT + 1 - used, &n) || n == 0)
            break;
        used += n;
    }
    buf[used] = '\0';
    if (!strstr(buf, "-----BEGIN " KEYREF_PEM_NAME "-----")) {
        OPENSSL_free(buf);
        return NULL;
    }
    *len = used;
    return buf;
}

static int dec_decode(void *vctx, OSSL_CORE_BIO *cin, int selection, OSSL_CALLBACK *data_cb,
                      void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    kvp_provctx *pc = vctx;
    BIO *in = NULL;
    char *text = NULL;
    size_t len = 0;
    kv_ctx *kv = NULL;
    kv_key *key = NULL;
    kvp_key *k = NULL;
    const char *type;
    int objtype = OSSL_OBJECT_PKEY, ok = 0;
    OSSL_PARAM params[4];
    kv_rc rc;

    (void)selection; /* checked by does_selection */
    (void)pw_cb;     /* PINs and passphrases come from the vault's configuration */
    (void)pw_cbarg;
    if (!(in = BIO_new_from_core_bio(pc->publibctx, cin))) {
        kvp_raise(pc, KVP_R_INTERNAL, "decoder: cannot read the input (no core BIO)");
        goto out;
    }
    ERR_set_mark(); /* a failed read is the next decoder's business */
    text = read_reference(in, &len);
    ERR_pop_to_mark();
    if (!text) { /* not ours: empty-handed, the next decoder tries */
        ok = 1;
        goto out;
    }
    /* ours from here: a failure is an error the caller sees */
    if (kvp_provctx_kv(pc, &kv) != KV_OK) /* raised */
        goto out;
    rc = kv_key_open_reference(kv, (const unsigned char *)text, len, &key);
    if (rc != KV_OK) {
        kvp_raise_kv(pc, kv, rc, "decoder: cannot open the key a " KEYREF_PEM_NAME " names");
        goto out;
    }
    if (!(k = kvp_key_from_vault(pc, kv, key, 1))) /* raised; key freed */
        goto out;
    if (!(type = kvp_key_type_name(k))) {
        kvp_raise(pc, KVP_R_UNSUPPORTED, "decoder: the key is of a type the provider does not offer");
        goto out;
    }
    params[0] = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &objtype);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE, (char *)type, 0);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &k, sizeof(k));
    params[3] = OSSL_PARAM_construct_end();
    /* keymgmt's load takes a reference of its own */
    ok = data_cb(params, data_cbarg);
out:
    kvp_key_free(k);
    OPENSSL_free(text);
    BIO_free(in);
    return ok;
}

static const OSSL_DISPATCH decoder_functions[] = {
    { OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))dec_newctx },
    { OSSL_FUNC_DECODER_FREECTX, (void (*)(void))dec_freectx },
    { OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))dec_does_selection },
    { OSSL_FUNC_DECODER_DECODE, (void (*)(void))dec_decode },
    { 0, NULL },
};

/* One entry per key management name, as OpenSSL picks decoders by the key
 * types it may end in; whichever runs first hands out the key, of whatever
 * type it is (the object's data type names our key management for it). */
#define DEC_PROPS KVP_PROPS ",input=pem"
const OSSL_ALGORITHM kvp_decoder_algs[] = {
    { "EC", DEC_PROPS, decoder_functions, "keyvault: PEM " KEYREF_PEM_NAME },
    { "RSA", DEC_PROPS, decoder_functions, "keyvault: PEM " KEYREF_PEM_NAME },
    { "ED25519", DEC_PROPS, decoder_functions, "keyvault: PEM " KEYREF_PEM_NAME },
    { NULL, NULL, NULL, NULL },
};
