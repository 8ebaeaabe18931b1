/*
 * keyexch.c - ECDH of the keyvault provider over kv_ecdh: the peer's public
 * key (whatever provider it came from, imported into ours as a public-only
 * object) is handed over as DER SubjectPublicKeyInfo; the shared secret is
 * the x coordinate, as OpenSSL's own ECDH gives it.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include "prov.h"

typedef struct exchctx {
    kvp_provctx *pc;
    kvp_key *k;
    kvp_key *peer;
} exchctx;

static void *ecdh_newctx(void *provctx)
{
    exchctx *c = calloc(1, sizeof(*c));

    if (!c)
        kvp_raise(provctx, KVP_R_INTERNAL, "out of memory");
    else
        c->pc = provctx;
    return c;
}

static void ecdh_freectx(void *vctx)
{
    exchctx *c = vctx;

    if (!c)
        return;
    kvp_key_free(c->k);
    kvp_key_free(c->peer);
    free(c);
}

static void *ecdh_dupctx(void *vctx)
{
    exchctx *src = vctx, *c = ecdh_newctx(src->pc);

    if (!c)
        return NULL;
    c->k = src->k ? kvp_key_up_ref(src->k) : NULL;
    c->peer = src->peer ? kvp_key_up_ref(src->peer) : NULL;
    return c;
}

static int ecdh_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    exchctx *c = vctx;

    if (params && params[0].key) {
        /* no cofactor mode, KDF or padding: the plain shared x coordinate */
        kvp_raise(c->pc, KVP_R_UNSUPPORTED, "ECDH parameter '%s' is not offered by vault keys",
                  params[0].key);
        return 0;
    }
    return 1;
}

static const OSSL_PARAM *ecdh_settable(void *vctx, void *provctx)
{
    static const OSSL_PARAM params[] = { OSSL_PARAM_END };
    return params;
}

static int ecdh_init(void *vctx, void *keydata, const OSSL_PARAM params[])
{
    exchctx *c = vctx;
    kvp_key *k = kvp_key_check(keydata);

    kvp_key_free(c->k);
    c->k = NULL;
    if (!k || !k->key) {
        kvp_raise(c->pc, KVP_R_NO_PRIVATE_KEY,
                  "cannot derive: this key object holds a public key only");
        return 0;
    }
    c->k = kvp_key_up_ref(k);
    return ecdh_set_ctx_params(c, params);
}

static int ecdh_set_peer(void *vctx, void *peerdata)
{
    exchctx *c = vctx;
    kvp_key *peer = kvp_key_check(peerdata);

    if (!peer) {
        kvp_raise(c->pc, KVP_R_BAD_PARAM, "the peer is not an EC public key");
        return 0;
    }
    kvp_key_free(c->peer);
    c->peer = kvp_key_up_ref(peer);
    return 1;
}

static int ecdh_derive(void *vctx, unsigned char *secret, size_t *secretlen, size_t outlen)
{
    exchctx *c = vctx;
    unsigned char *der = NULL, buf[66];
    size_t len = sizeof(buf);
    int derlen, ok = 0;
    kv_rc rc;

    if (!c->k || !c->peer) {
        kvp_raise(c->pc, KVP_R_BAD_PARAM, "ECDH needs the key and the peer's key first");
        return 0;
    }
    if (!secret) {
        *secretlen = (size_t)(EVP_PKEY_get_bits(c->k->pub) + 7) / 8;
        return 1;
    }
    derlen = i2d_PUBKEY(c->peer->pub, &der);
    if (derlen <= 0) {
        kvp_raise(c->pc, KVP_R_INTERNAL, "the peer's public key does not encode");
        return 0;
    }
    rc = kv_ecdh(c->k->key, der, (size_t)derlen, buf, &len);
    if (rc != KV_OK) {
        kvp_raise_kv(c->pc, c->k->kv, rc, "kv_ecdh");
    } else if (len > outlen) {
        kvp_raise(c->pc, KVP_R_BAD_PARAM, "ECDH output buffer too small (%zu bytes, need %zu)",
                  outlen, len);
    } else {
        memcpy(secret, buf, len);
        *secretlen = len;
        ok = 1;
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    OPENSSL_free(der);
    return ok;
}

const OSSL_DISPATCH kvp_ecdh_functions[] = {
    { OSSL_FUNC_KEYEXCH_NEWCTX, (void (*)(void))ecdh_newctx },
    { OSSL_FUNC_KEYEXCH_FREECTX, (void (*)(void))ecdh_freectx },
    { OSSL_FUNC_KEYEXCH_DUPCTX, (void (*)(void))ecdh_dupctx },
    { OSSL_FUNC_KEYEXCH_INIT, (void (*)(void))ecdh_init },
    { OSSL_FUNC_KEYEXCH_SET_PEER, (void (*)(void))ecdh_set_peer },
    { OSSL_FUNC_KEYEXCH_DERIVE, (void (*)(void))ecdh_derive },
    { OSSL_FUNC_KEYEXCH_SET_CTX_PARAMS, (void (*)(void))ecdh_set_ctx_params },
    { OSSL_FUNC_KEYEXCH_SETTABLE_CTX_PARAMS, (void (*)(void))ecdh_settable },
    { 0, NULL },
};
