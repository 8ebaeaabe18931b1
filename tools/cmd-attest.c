/*
 * cmd-attest.c - `keyvault attest`: the evidence document of a key
 * (docs/evidence.md) or its WebAuthn registration; `keyvault tpm ak-chain`:
 * the attestation key's certificate chain.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "cli.h"

const char attest_help[] =
    "usage: keyvault [-c CONF] attest NAME|URI --nonce HEX [--pcrs SEL] [--no-quote]\n"
    "                [--no-event-log] [-o FILE]\n"
    "       keyvault [-c CONF] attest NAME|URI --nonce HEX --format webauthn --rp-id ID\n"
    "                [--origin URL] [-o FILE]\n"
    "Write the key's evidence document (JSON, docs/evidence.md): its public key and\n"
    "chain, its assurance, for a TPM key TPM2_Certify by the attestation key and\n"
    "TPM2_Quote of the PCRs SEL (default sha256:0-7), and a proof of possession.\n"
    "With --format webauthn, a TPM key's attestation as a WebAuthn registration\n"
    "(RegistrationResponseJSON: attestation object of fmt tpm, x5c the AK's chain\n"
    "from 'keyvault tpm ak-chain import', challenge the nonce).\n"
    "  --nonce HEX       the verifier's nonce (evidence: 16 to 64 bytes)\n"
    "  --no-quote        no platform attestation (quote, PCRs, event log)\n"
    "  --no-event-log    the quote without the firmware event log\n"
    "  --format F        evidence (default) or webauthn\n"
    "  --rp-id ID        the relying party's id (webauthn)\n"
    "  --origin URL      clientDataJSON's origin (webauthn; default https://ID)\n"
    "  -o FILE           output file (default: standard output)\n";

/* text and a line end as the whole of file out (0644) */
static int write_line(const char *out, const char *text)
{
    size_t len = strlen(text);
    char *line = malloc(len + 1);
    int r;

    if (!line)
        return -1;
    memcpy(line, text, len);
    line[len] = '\n';
    r = write_all(out, line, len + 1, 0644);
    free(line);
    return r;
}

/* data as base64url without padding, a new JSON string */
static json_t *b64u(const unsigned char *data, size_t len)
{
    unsigned char *out = len < 0x10000000 ? malloc(4 * ((len + 2) / 3) + 1) : NULL;
    json_t *j;
    int n;

    if (!out)
        return NULL;
    n = EVP_EncodeBlock(out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    j = json_stringn((const char *)out, (size_t)(n > 0 ? n : 0));
    free(out);
    return j;
}

/* The WebAuthn RegistrationResponseJSON of key for the nonce as challenge. */
static int webauthn(kv_ctx *ctx, kv_key *key, const unsigned char *nonce, size_t noncelen,
                    const char *rp_id, const char *origin, const char *out)
{
    kv_webauthn_opts o = KV_WEBAUTHN_OPTS_INIT;
    unsigned char spki[2048], cred[32], cdh[32], *obj = NULL;
    size_t spkilen = sizeof(spki), objlen = 0;
    char *origin_alloc = NULL, *cdj = NULL, *text = NULL;
    json_t *client = NULL, *resp = NULL;
    int ret = EXIT_FAIL;
    kv_rc rc;

    if (!origin) {
        size_t n = strlen(rp_id) + sizeof("https://");
        if (!(origin = origin_alloc = malloc(n)))
            goto out;
        snprintf(origin_alloc, n, "https://%s", rp_id);
    }
    /* the credential id: SHA-256 of the key's SubjectPublicKeyInfo, as the
     * library's default, so that id and rawId can name it */
    rc = kv_key_public_der(key, spki, &spkilen);
    if (rc != KV_OK) {
        ret = fail("attest", ctx, rc);
        goto out;
    }
    client = json_pack("{s:s, s:o, s:s, s:b}", "type", "webauthn.create", "challenge",
                       b64u(nonce, noncelen), "origin", origin, "crossOrigin", 0);
    if (!client || !(cdj = json_dumps(client, JSON_COMPACT)) ||
        !SHA256((const unsigned char *)cdj, strlen(cdj), cdh) ||
        !SHA256(spki, spkilen, cred)) {
        fprintf(stderr, "%s attest: cannot build the client data\n", prog);
        goto out;
    }
    o.rp_id = rp_id;
    o.client_data_hash = cdh;
    o.credential_id = cred;
    o.credential_id_len = sizeof(cred);
    rc = kv_attest_webauthn(key, &o, &obj, &objlen);
    if (rc != KV_OK) {
        ret = fail("attest", ctx, rc);
        goto out;
    }
    resp = json_pack("{s:o, s:o, s:s, s:{s:o, s:o, s:[s]}, s:{}, s:s}", "id",
                     b64u(cred, sizeof(cred)), "rawId", b64u(cred, sizeof(cred)), "type",
                     "public-key", "response", "clientDataJSON",
                     b64u((const unsigned char *)cdj, strlen(cdj)), "attestationObject",
                     b64u(obj, objlen), "transports", "internal", "clientExtensionResults",
                     "authenticatorAttachment", "platform");
    if (!resp || !(text = json_dumps(resp, JSON_INDENT(2)))) {
        fprintf(stderr, "%s attest: cannot build the registration response\n", prog);
        goto out;
    }
    if (write_line(out, text) != 0)
        ret = fail_sys("attest", "write", out);
    else
        ret = EXIT_OK;
out:
    json_decref(client);
    json_decref(resp);
    free(origin_alloc);
    free(cdj);
    free(text);
    free(obj);
    return ret;
}

int cmd_attest(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "nonce", required_argument, NULL, 'n' },  { "pcrs", required_argument, NULL, 'p' },
        { "no-quote", no_argument, NULL, 'Q' },     { "no-event-log", no_argument, NULL, 'E' },
        { "out", required_argument, NULL, 'o' },    { "format", required_argument, NULL, 'f' },
        { "rp-id", required_argument, NULL, 'r' },  { "origin", required_argument, NULL, 'O' },
        { NULL, 0, NULL, 0 },
    };
    kv_attest_opts o = KV_ATTEST_OPTS_INIT;
    const char *out = "-", *noncehex = NULL, *rp_id = NULL, *origin = NULL;
    int web = 0;
    unsigned char *nonce = NULL;
    long noncelen = 0;
    char *evidence = NULL;
    kv_key *key = NULL;
    int c, ret = EXIT_OK;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "n:p:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'n': noncehex = optarg; break;
        case 'p': o.pcrs = optarg; break;
        case 'Q': o.flags |= KV_ATTEST_NO_QUOTE; break;
        case 'E': o.flags |= KV_ATTEST_NO_EVENT_LOG; break;
        case 'o': out = optarg; break;
        case 'f':
            if (strcmp(optarg, "evidence") && strcmp(optarg, "webauthn"))
                die_usage("attest", "--format is evidence or webauthn");
            web = optarg[0] == 'w';
            break;
        case 'r': rp_id = optarg; break;
        case 'O': origin = optarg; break;
        default: die_usage("attest", "bad option");
        }
    }
    if (optind != argc - 1 || !noncehex)
        die_usage("attest", "expected one key NAME|URI and --nonce HEX");
    if (web != !!rp_id || (origin && !web))
        die_usage("attest", "--format webauthn goes with --rp-id ID (and --origin URL)");
    if (!(nonce = OPENSSL_hexstr2buf(noncehex, &noncelen)))
        die_usage("attest", "--nonce is not valid hex");
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK && web) {
        ret = webauthn(ctx, key, nonce, (size_t)noncelen, rp_id, origin, out);
        kv_key_free(key);
        OPENSSL_free(nonce);
        return ret;
    }
    if (rc == KV_OK)
        rc = kv_attest(key, nonce, (size_t)noncelen, &o, &evidence);
    if (rc != KV_OK) {
        ret = fail("attest", ctx, rc);
    } else {
        if (write_line(out, evidence) != 0)
            ret = fail_sys("attest", "write", out);
    }
    kv_string_free(evidence);
    kv_key_free(key);
    OPENSSL_free(nonce);
    return ret;
}

/* keyvault tpm ak-chain import FILE | show [-o FILE] */
int cmd_tpm_ak_chain(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "out", required_argument, NULL, 'o' }, { NULL, 0, NULL, 0 },
    };
    const char *out = "-", *sub;
    unsigned char *data = NULL;
    size_t len = 0;
    char *pem = NULL;
    int c, ret = EXIT_OK;
    kv_rc rc;

    if (argc < 2)
        die_usage("tpm", "ak-chain expects import FILE or show");
    sub = argv[1];
    argc--;
    argv++;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        default: die_usage("tpm", "bad option");
        }
    }
    if (!strcmp(sub, "import")) {
        if (optind != argc - 1)
            die_usage("tpm", "ak-chain import expects one FILE (PEM bundle, leaf first)");
        if (!(data = read_all(argv[optind], &len)))
            return fail_sys("tpm", "read", argv[optind]);
        rc = kv_tpm_ak_store_chain(ctx, (const char *)data, len);
        if (rc != KV_OK)
            ret = fail("tpm", ctx, rc);
        free(data);
        return ret;
    }
    if (strcmp(sub, "show") || optind != argc)
        die_usage("tpm", "ak-chain expects import FILE or show [-o FILE]");
    rc = kv_tpm_ak_chain_pem(ctx, &pem);
    if (rc != KV_OK)
        ret = fail("tpm", ctx, rc);
    else if (write_all(out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("tpm", "write", out);
    kv_string_free(pem);
    return ret;
}
