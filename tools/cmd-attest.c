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

#include "cli.h"

const char attest_help[] =
    "usage: keyvault [-c CONF] attest NAME|URI --nonce HEX [--pcrs SEL] [--no-quote]\n"
    "                [--no-event-log] [-o FILE]\n"
    "Write the key's evidence document (JSON, docs/evidence.md): its public key and\n"
    "chain, its assurance, for a TPM key TPM2_Certify by the attestation key and\n"
    "TPM2_Quote of the PCRs SEL (default sha256:0-7), and a proof of possession.\n"
    "  --nonce HEX       the verifier's nonce, 16 to 64 bytes\n"
    "  --no-quote        no platform attestation (quote, PCRs, event log)\n"
    "  --no-event-log    the quote without the firmware event log\n"
    "  -o FILE           output file (default: standard output)\n";

int cmd_attest(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "nonce", required_argument, NULL, 'n' },  { "pcrs", required_argument, NULL, 'p' },
        { "no-quote", no_argument, NULL, 'Q' },     { "no-event-log", no_argument, NULL, 'E' },
        { "out", required_argument, NULL, 'o' },    { NULL, 0, NULL, 0 },
    };
    kv_attest_opts o = KV_ATTEST_OPTS_INIT;
    const char *out = "-", *noncehex = NULL;
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
        default: die_usage("attest", "bad option");
        }
    }
    if (optind != argc - 1 || !noncehex)
        die_usage("attest", "expected one key NAME|URI and --nonce HEX");
    if (!(nonce = OPENSSL_hexstr2buf(noncehex, &noncelen)))
        die_usage("attest", "--nonce is not valid hex");
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_attest(key, nonce, (size_t)noncelen, &o, &evidence);
    if (rc != KV_OK) {
        ret = fail("attest", ctx, rc);
    } else {
        size_t len = strlen(evidence);
        evidence[len] = '\n'; /* the document with a line end; the NUL is not written */
        if (write_all(out, evidence, len + 1, 0644) != 0)
            ret = fail_sys("attest", "write", out);
        evidence[len] = '\0';
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
