/*
 * keyvault - command-line front end of libkeyvault.
 *
 * Thin by design: parse arguments, call the public API, print. Anything it
 * can do, a program linking libkeyvault can do too.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"

static const char *config_path;

/* ---- subcommands ---------------------------------------------------------- */

static const char keygen_help[] =
    "usage: keyvault [-c CONF] keygen NAME|URI [--type TYPE] [--backend B] [--allow USES]\n"
    "       [--algs ALGS] [--not-before TIME] [--not-after TIME] [--hardware-only]\n"
    "Create key NAME. TYPE: ec-p256 (default), ec-p384, rsa-2048, rsa-3072, ed25519.\n"
    "B: tpm, pkcs11 or software; default: the first available in the configured order\n"
    "that can hold TYPE. Or create the key at an explicit location (no configuration\n"
    "needed; --backend does not apply):\n"
    "  'pkcs11:token=T;object=NAME?module-path=M&pin-source=file:P'   a token key\n"
    "  tpm2:file=/abs/dir/NAME.pem   a TPM key file     tpm2:handle=0x81000010   a persistent one\n"
    "  file:/abs/dir/NAME.pem        a software key\n"
    "A policy stored with the key limits it (docs/policy.md; keyvault policy show NAME):\n"
    "  --allow sign,ecdh,attest,issue   its uses (default: all)\n"
    "  --algs ecdsa-sha256,...          its signature algorithms (default: any that fits)\n"
    "  --not-before TIME  --not-after TIME   YYYY-MM-DDTHH:MM:SSZ, @SECONDS or +30d\n"
    "  --hardware-only                  never made or opened in the software backend\n";

static int cmd_keygen(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "type", required_argument, NULL, 't' },
        { "backend", required_argument, NULL, 'b' },
        { "allow", required_argument, NULL, POLICY_OPT_ALLOW },
        { "algs", required_argument, NULL, POLICY_OPT_ALGS },
        { "not-before", required_argument, NULL, POLICY_OPT_NOT_BEFORE },
        { "not-after", required_argument, NULL, POLICY_OPT_NOT_AFTER },
        { "hardware-only", no_argument, NULL, POLICY_OPT_HARDWARE_ONLY },
        { NULL, 0, NULL, 0 },
    };
    kv_key_type type = KV_KEY_EC_P256;
    kv_key_policy policy = KV_KEY_POLICY_INIT;
    const char *backend = NULL;
    kv_key *key = NULL;
    kv_key_info info;
    kv_rc rc;
    int c, has_policy = 0, set;

    while ((c = getopt_long(argc, argv, "t:b:", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            type = kv_key_type_from_name(optarg);
            if (type == KV_KEY_UNKNOWN)
                die_usage("keygen", "unknown key type (ec-p256, ec-p384, rsa-2048, rsa-3072, "
                                    "ed25519)");
            break;
        case 'b':
            backend = optarg;
            break;
        default:
            if (policy_option(c, optarg, &policy, &set) != 0)
                die_usage("keygen", "bad option");
            has_policy |= set;
        }
    }
    if (optind != argc - 1)
        die_usage("keygen", "expected one key NAME or URI");
    if (strchr(argv[optind], ':') && backend)
        die_usage("keygen", "--backend does not apply to a URI: its scheme names the backend");
    rc = kv_key_generate_ex(ctx, argv[optind], type, backend, has_policy ? &policy : NULL, &key);
    if (rc != KV_OK)
        return fail("keygen", ctx, rc);
    rc = kv_key_get_info(key, &info);
    if (rc == KV_OK)
        printf("generated %s key '%s' in backend %s (assurance: %s)\n%s\n",
               kv_key_type_name(info.type), info.name, info.backend,
               kv_assurance_name(info.assurance), info.uri);
    kv_key_free(key);
    return rc == KV_OK ? EXIT_OK : fail("keygen", ctx, rc);
}

static json_t *info_json(const kv_key_info *k)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "name", k->name, "type",
                     kv_key_type_name(k->type), "backend", k->backend, "assurance",
                     kv_assurance_name(k->assurance), "uri", k->uri, "version",
                     (int)k->version);
}

static const char list_help[] =
    "usage: keyvault [-c CONF] list [--json]\n"
    "List the keys of every available backend: each version of a rotated key\n"
    "(NAME@N; version 1 is NAME) with its state (current, overlap, retired, pending,\n"
    "abandoned).\n";

static int cmd_list(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, { NULL, 0, NULL, 0 } };
    kv_key_list *list = NULL;
    int json = 0, c;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
        if (c != 'j')
            die_usage("list", "bad option");
        json = 1;
    }
    if (optind != argc)
        die_usage("list", "takes no arguments besides --json");
    rc = kv_list_keys(ctx, &list);
    if (rc != KV_OK)
        return fail("list", ctx, rc);
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < list->count; i++) {
            json_t *j = info_json(&list->keys[i]);
            if (j)
                json_object_set_new(j, "state",
                                    json_string(list_version_state(ctx, &list->keys[i])));
            json_array_append_new(arr, j);
        }
        kv_key_list_free(list);
        return print_json(arr);
    }
    for (size_t i = 0; i < list->count; i++) {
        const kv_key_info *k = &list->keys[i];
        printf("%-24s v%-3u %-9s %-9s %-9s %-9s %s\n", k->name, k->version,
               list_version_state(ctx, k), kv_key_type_name(k->type), k->backend,
               kv_assurance_name(k->assurance), k->uri);
    }
    kv_key_list_free(list);
    return EXIT_OK;
}

static int show_info(const kv_key_info *info, int json)
{
    if (json)
        return print_json(info_json(info));
    printf("name:      %s\ntype:      %s\nbackend:   %s\nassurance: %s\nuri:       %s\n"
           "version:   %u\n",
           info->name, kv_key_type_name(info->type), info->backend,
           kv_assurance_name(info->assurance), info->uri, info->version);
    return EXIT_OK;
}

static const char info_help[] =
    "usage: keyvault [-c CONF] info NAME|URI [--json]\n"
    "Show a key's type, backend, assurance level, URI and version.\n";

static int cmd_info(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, NULL, 'j' }, { NULL, 0, NULL, 0 } };
    kv_key *key = NULL;
    kv_key_info info;
    int json = 0, c, ret;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "j", opts, NULL)) != -1) {
        if (c != 'j')
            die_usage("info", "bad option");
        json = 1;
    }
    if (optind != argc - 1)
        die_usage("info", "expected one key NAME or URI");
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_key_get_info(key, &info);
    if (rc != KV_OK) {
        kv_key_free(key);
        return fail("info", ctx, rc);
    }
    ret = show_info(&info, json);
    kv_key_free(key);
    return ret;
}

static const char destroy_help[] =
    "usage: keyvault [-c CONF] destroy NAME|URI\n"
    "Delete a key from its backend. This cannot be undone.\n"
    "With no key of that name, remove what a destroy that failed part way left of it\n"
    "(a PKCS#11 public key object whose private key went).\n";

static int cmd_destroy(kv_ctx *ctx, int argc, char **argv)
{
    kv_key *key = NULL;
    kv_key_info info;
    int ret = EXIT_OK;
    kv_rc rc;

    if (argc != 2 || argv[1][0] == '-')
        die_usage("destroy", "expected one key NAME or URI");
    /* named in the output by what the library reports, not by argv[1] */
    rc = kv_key_open(ctx, argv[1], &key);
    if (rc == KV_ERR_KEY_NOT_FOUND) {
        /* no key: the library removes what a destroy that failed part way
         * left of it, or says there is no key of that name */
        rc = kv_key_destroy(ctx, argv[1]);
        if (rc == KV_OK)
            printf("destroyed what a failed destroy had left of that key\n");
        else
            ret = fail("destroy", ctx, rc);
        return ret;
    }
    if (rc == KV_OK)
        rc = kv_key_get_info(key, &info);
    if (rc == KV_OK)
        rc = kv_key_destroy(ctx, argv[1]);
    if (rc == KV_OK)
        printf("destroyed '%s' (%s)\n", info.name, info.uri);
    else
        ret = fail("destroy", ctx, rc);
    kv_key_free(key);
    return ret;
}

static const char pubkey_help[] =
    "usage: keyvault [-c CONF] pubkey NAME|URI [-o FILE]\n"
    "Write the public key as PEM SubjectPublicKeyInfo (standard output by default).\n";

static int cmd_pubkey(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = { { "out", required_argument, NULL, 'o' }, { NULL, 0, NULL, 0 } };
    const char *out = "-";
    kv_key *key = NULL;
    char *pem = NULL;
    kv_rc rc;
    int c, ret = EXIT_OK;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        if (c != 'o')
            die_usage("pubkey", "bad option");
        out = optarg;
    }
    if (optind != argc - 1)
        die_usage("pubkey", "expected one key NAME or URI");
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_key_public_pem(key, &pem);
    if (rc != KV_OK)
        ret = fail("pubkey", ctx, rc);
    else if (write_all(out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("pubkey", "write", out);
    kv_string_free(pem);
    kv_key_free(key);
    return ret;
}

static const char reference_help[] =
    "usage: keyvault [-c CONF] reference NAME|URI [--by-name] [-o FILE]\n"
    "       keyvault [-c CONF] reference --open FILE [--json]\n"
    "Write a key reference: a PEM \"KEYVAULT KEY REFERENCE\" naming the key, which a\n"
    "program reading its private key from a PEM file (nginx's ssl_certificate_key,\n"
    "curl --key, PEM_read_bio_PrivateKey) takes as the vault key once the keyvault\n"
    "OpenSSL provider is activated in its openssl.cnf (see docs/provider.md). The\n"
    "private key stays in its backend; the file holds no secret. It names the key by\n"
    "its explicit URI as 'info' shows it (a pin-value given here opens the key and\n"
    "is not written: the key is found again with the configured PIN), or with\n"
    "--by-name by its name, looked up again in the configured backends when the file\n"
    "is read (a key replaced under the same name is then picked up).\n"
    "--open FILE: open the key a reference file names, and show it as 'info' does;\n"
    "a reference carrying a pin-value is refused.\n";

static int cmd_reference(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "out", required_argument, NULL, 'o' }, { "by-name", no_argument, NULL, 'n' },
        { "open", required_argument, NULL, 'O' }, { "json", no_argument, NULL, 'j' },
        { NULL, 0, NULL, 0 },
    };
    const char *out = "-", *open_path = NULL;
    unsigned flags = 0;
    int c, json = 0, ret = EXIT_OK, have_out = 0;
    unsigned char *data = NULL;
    size_t len = 0;
    kv_key *key = NULL;
    kv_key_info info;
    char *pem = NULL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            have_out = 1;
            break;
        case 'n':
            flags |= KV_REF_BY_NAME;
            break;
        case 'O':
            open_path = optarg;
            break;
        case 'j':
            json = 1;
            break;
        default:
            die_usage("reference", "bad option");
        }
    }
    if (open_path) {
        if (optind != argc || flags || have_out)
            die_usage("reference", "--open FILE takes no key and no --by-name or -o");
        if (!(data = read_all(open_path, &len)))
            return fail_sys("reference", "read", open_path);
        rc = kv_key_open_reference(ctx, data, len, &key);
        free(data);
        if (rc == KV_OK)
            rc = kv_key_get_info(key, &info);
        ret = rc == KV_OK ? show_info(&info, json) : fail("reference", ctx, rc);
        kv_key_free(key);
        return ret;
    }
    if (json)
        die_usage("reference", "--json goes with --open");
    if (optind != argc - 1)
        die_usage("reference", "expected one key NAME or URI");
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_key_reference_pem(key, flags, &pem);
    if (rc != KV_OK)
        ret = fail("reference", ctx, rc);
    else if (write_all(out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("reference", "write", out);
    kv_string_free(pem);
    kv_key_free(key);
    return ret;
}

static int parse_alg(const char *cmd, const char *s)
{
    int alg = kv_sign_alg_from_name(s);

    if (alg < 0)
        die_usage(cmd, "unknown algorithm (ecdsa-sha256, ecdsa-sha384, ecdsa-sha512, "
                       "rsa-pss-sha256/384/512, rsa-pkcs1-sha256/384/512, ed25519)");
    return alg;
}

static const char sign_help[] =
    "usage: keyvault [-c CONF] sign NAME|URI -i FILE -o SIG [--alg ALG] [--raw] [--digest]\n"
    "Sign FILE ('-' for standard input). ECDSA signatures are DER, as\n"
    "'openssl dgst -verify' expects; --raw writes r||s instead. --digest: FILE\n"
    "holds the message digest, not the message. ALG: default, ecdsa-sha256,\n"
    "ecdsa-sha384, ecdsa-sha512, rsa-pss-sha256, rsa-pss-sha384, rsa-pss-sha512,\n"
    "rsa-pkcs1-sha256, rsa-pkcs1-sha384, rsa-pkcs1-sha512, ed25519.\n";

static int cmd_sign(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "in", required_argument, NULL, 'i' },  { "out", required_argument, NULL, 'o' },
        { "alg", required_argument, NULL, 'a' }, { "raw", no_argument, NULL, 'r' },
        { "digest", no_argument, NULL, 'd' },    { NULL, 0, NULL, 0 },
    };
    const char *in = NULL, *out = NULL;
    unsigned flags = 0;
    int alg = KV_ALG_DEFAULT, c, ret = EXIT_OK;
    unsigned char *msg = NULL, *sig = NULL;
    size_t msglen = 0, siglen = 0;
    kv_key *key = NULL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "i:o:a:", opts, NULL)) != -1) {
        switch (c) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'a': alg = parse_alg("sign", optarg); break;
        case 'r': flags |= KV_SIGN_RAW; break;
        case 'd': flags |= KV_SIGN_PREHASHED; break;
        default: die_usage("sign", "bad option");
        }
    }
    if (optind != argc - 1 || !in || !out)
        die_usage("sign", "expected NAME, -i FILE and -o SIG");
    msg = read_all(in, &msglen);
    if (!msg)
        return fail_sys("sign", "read", in);
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_sign(key, (kv_sign_alg)alg, flags, msg, msglen, NULL, &siglen);
    if (rc == KV_OK && !(sig = malloc(siglen)))
        rc = KV_ERR_NO_MEMORY;
    if (rc == KV_OK)
        rc = kv_sign(key, (kv_sign_alg)alg, flags, msg, msglen, sig, &siglen);
    if (rc != KV_OK)
        ret = fail("sign", ctx, rc);
    else if (write_all(out, sig, siglen, 0644) != 0)
        ret = fail_sys("sign", "write", out);
    free(msg);
    free(sig);
    kv_key_free(key);
    return ret;
}

static const char verify_help[] =
    "usage: keyvault [-c CONF] verify (NAME|URI | --pubkey PEM) -i FILE -s SIG\n"
    "                [--alg ALG] [--raw] [--digest]\n"
    "Verify a signature in software. Exit status 0: valid; 1: not valid.\n";

static int cmd_verify(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "pubkey", required_argument, NULL, 'p' }, { "in", required_argument, NULL, 'i' },
        { "sig", required_argument, NULL, 's' },    { "alg", required_argument, NULL, 'a' },
        { "raw", no_argument, NULL, 'r' },          { "digest", no_argument, NULL, 'd' },
        { NULL, 0, NULL, 0 },
    };
    const char *pubfile = NULL, *in = NULL, *sigfile = NULL;
    unsigned char *pub = NULL, *msg = NULL, *sig = NULL;
    size_t publen = 0, msglen = 0, siglen = 0;
    unsigned flags = 0;
    int alg = KV_ALG_DEFAULT, c, ret = EXIT_FAIL;
    kv_key *key = NULL;
    kv_rc rc = KV_OK;

    while ((c = getopt_long(argc, argv, "p:i:s:a:", opts, NULL)) != -1) {
        switch (c) {
        case 'p': pubfile = optarg; break;
        case 'i': in = optarg; break;
        case 's': sigfile = optarg; break;
        case 'a': alg = parse_alg("verify", optarg); break;
        case 'r': flags |= KV_SIGN_RAW; break;
        case 'd': flags |= KV_SIGN_PREHASHED; break;
        default: die_usage("verify", "bad option");
        }
    }
    if (!in || !sigfile || (pubfile ? optind != argc : optind != argc - 1))
        die_usage("verify", "expected NAME or --pubkey PEM, -i FILE and -s SIG");
    if (!(msg = read_all(in, &msglen))) {
        ret = fail_sys("verify", "read", in);
        goto out;
    }
    if (!(sig = read_all(sigfile, &siglen))) {
        ret = fail_sys("verify", "read", sigfile);
        goto out;
    }
    if (pubfile) {
        if (!(pub = read_all(pubfile, &publen))) {
            ret = fail_sys("verify", "read", pubfile);
            goto out;
        }
    } else {
        rc = kv_key_open(ctx, argv[optind], &key);
        if (rc == KV_OK)
            rc = kv_key_public_der(key, NULL, &publen);
        if (rc == KV_OK && !(pub = malloc(publen)))
            rc = KV_ERR_NO_MEMORY;
        if (rc == KV_OK)
            rc = kv_key_public_der(key, pub, &publen);
        if (rc != KV_OK) {
            ret = fail("verify", ctx, rc);
            goto out;
        }
    }
    rc = kv_verify(ctx, pub, publen, (kv_sign_alg)alg, flags, msg, msglen, sig, siglen);
    if (rc != KV_OK) {
        ret = fail("verify", ctx, rc);
        goto out;
    }
    printf("signature valid\n");
    ret = EXIT_OK;
out:
    free(pub);
    free(msg);
    free(sig);
    kv_key_free(key);
    return ret;
}

static const char ecdh_help[] =
    "usage: keyvault [-c CONF] ecdh NAME|URI --peer PEM [-o FILE]\n"
    "                [--hkdf-info S] [--hkdf-salt HEX] [--length N]\n"
    "Derive the ECDH shared secret with the peer's public key (PEM or DER\n"
    "SubjectPublicKeyInfo). With --hkdf-info, --hkdf-salt or --length, the\n"
    "secret goes through HKDF-SHA256 and N bytes (default 32) come out.\n"
    "Without -o, the result is printed in hex; with -o it is written raw, to\n"
    "a file of mode 0600 (never through a link or a FIFO) or, with -o -, to\n"
    "standard output.\n";

static int cmd_ecdh(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "peer", required_argument, NULL, 'p' },      { "out", required_argument, NULL, 'o' },
        { "hkdf-info", required_argument, NULL, 'I' }, { "hkdf-salt", required_argument, NULL, 'S' },
        { "length", required_argument, NULL, 'n' },    { NULL, 0, NULL, 0 },
    };
    const char *peerfile = NULL, *out = NULL, *info = NULL, *salthex = NULL;
    unsigned char *peer = NULL, *salt = NULL, secret[8160];
    size_t peerlen = 0, len = sizeof(secret);
    long saltlen = 0, length = 0;
    int c, ret = EXIT_FAIL, hkdf = 0;
    kv_key *key = NULL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "p:o:", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'p': peerfile = optarg; break;
        case 'o': out = optarg; break;
        case 'I': info = optarg; hkdf = 1; break;
        case 'S': salthex = optarg; hkdf = 1; break;
        case 'n':
            length = strtol(optarg, &end, 10);
            if (*end || length < 1 || length > (long)sizeof(secret))
                die_usage("ecdh", "--length must be 1 to %zu", sizeof(secret));
            hkdf = 1;
            break;
        default: die_usage("ecdh", "bad option");
        }
    }
    if (optind != argc - 1 || !peerfile)
        die_usage("ecdh", "expected NAME and --peer PEM");
    if (salthex && *salthex && !(salt = OPENSSL_hexstr2buf(salthex, &saltlen)))
        die_usage("ecdh", "--hkdf-salt is not valid hex");
    if (!(peer = read_all(peerfile, &peerlen))) {
        ret = fail_sys("ecdh", "read", peerfile);
        goto out;
    }
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK && hkdf) {
        len = length ? (size_t)length : 32;
        rc = kv_ecdh_hkdf(key, peer, peerlen, salt, (size_t)saltlen,
                          (const unsigned char *)info, info ? strlen(info) : 0, secret, len);
    } else if (rc == KV_OK) {
        rc = kv_ecdh(key, peer, peerlen, secret, &len);
    }
    if (rc != KV_OK) {
        ret = fail("ecdh", ctx, rc);
        goto out;
    }
    if (out) {
        if (write_all(out, secret, len, 0600) != 0) {
            ret = fail_sys("ecdh", "write", out);
            goto out;
        }
    } else {
        for (size_t i = 0; i < len; i++)
            printf("%02x", secret[i]);
        printf("\n");
    }
    ret = EXIT_OK;
out:
    OPENSSL_cleanse(secret, sizeof(secret));
    OPENSSL_free(salt);
    free(peer);
    kv_key_free(key);
    return ret;
}

/* ---- certificate requests and self-signed certificates ------------------- */

static const struct {
    const char *name;
    unsigned bit;
} key_usages[] = {
    { "digitalSignature", KV_KU_DIGITAL_SIGNATURE }, { "nonRepudiation", KV_KU_NON_REPUDIATION },
    { "keyEncipherment", KV_KU_KEY_ENCIPHERMENT },   { "dataEncipherment", KV_KU_DATA_ENCIPHERMENT },
    { "keyAgreement", KV_KU_KEY_AGREEMENT },         { "keyCertSign", KV_KU_KEY_CERT_SIGN },
    { "cRLSign", KV_KU_CRL_SIGN },
};

/* What csr and cert selfsign share: kv_cert_opts and where to write. */
struct cert_args {
    kv_cert_opts opts;
    const char **sans;   /* NULL-terminated; the strings are argv's */
    size_t nsans;
    const char **ekus;   /* NULL-terminated; the --eku lists split in place */
    size_t nekus;
    const char *out;
    const char *key;     /* NAME or URI */
};

/* Append s to a NULL-terminated array of n entries. */
static void push_str(const char *cmd, const char ***arr, size_t *n, const char *s)
{
    const char **a = realloc(*arr, (*n + 2) * sizeof(*a));

    if (!a) {
        fprintf(stderr, "%s %s: out of memory\n", prog, cmd);
        exit(EXIT_FAIL);
    }
    a[(*n)++] = s;
    a[*n] = NULL;
    *arr = a;
}

static unsigned parse_key_usage(const char *cmd, char *list)
{
    char *save = NULL;
    unsigned ku = 0;

    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof(key_usages) / sizeof(key_usages[0]); i++)
            if (strcasecmp(t, key_usages[i].name) == 0)
                bit = key_usages[i].bit;
        if (!bit)
            die_usage(cmd, "unknown key usage (digitalSignature, nonRepudiation, "
                           "keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, "
                           "cRLSign)");
        ku |= bit;
    }
    if (!ku)
        die_usage(cmd, "--key-usage needs at least one usage");
    return ku;
}

/* The library checks each name; here the list is only split. */
static void parse_eku(const char *cmd, char *list, struct cert_args *a)
{
    char *save = NULL;
    size_t before = a->nekus;

    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
        push_str(cmd, &a->ekus, &a->nekus, t);
    if (a->nekus == before)
        die_usage(cmd, "--eku needs at least one extended key usage");
}

static unsigned parse_uint(const char *cmd, const char *opt, const char *s, unsigned long min,
                           unsigned long max)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || errno || v < min || v > max)
        die_usage(cmd, "%s must be a number from %lu to %lu", opt, min, max);
    return (unsigned)v;
}

static void cert_args_parse(const char *cmd, int selfsign, int argc, char **argv,
                            struct cert_args *a)
{
    static const struct option opts[] = {
        { "subject", required_argument, NULL, 's' },   { "san", required_argument, NULL, 'S' },
        { "key-usage", required_argument, NULL, 'k' }, { "eku", required_argument, NULL, 'e' },
        { "alg", required_argument, NULL, 'a' },       { "out", required_argument, NULL, 'o' },
        { "days", required_argument, NULL, 'd' },      { "ca", no_argument, NULL, 'C' },
        { "path-len", required_argument, NULL, 'p' },  { NULL, 0, NULL, 0 },
    };
    const kv_cert_opts init = KV_CERT_OPTS_INIT;
    int c;

    memset(a, 0, sizeof(*a));
    a->opts = init;
    a->out = "-";
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        if (!selfsign && (c == 'd' || c == 'C' || c == 'p'))
            die_usage(cmd, "--days, --ca and --path-len are for certificates "
                           "('keyvault cert selfsign')");
        switch (c) {
        case 's':
            if (a->opts.subject)
                die_usage(cmd, "--subject given twice");
            a->opts.subject = optarg;
            break;
        case 'S': push_str(cmd, &a->sans, &a->nsans, optarg); break;
        case 'k': a->opts.key_usage |= parse_key_usage(cmd, optarg); break;
        case 'e': parse_eku(cmd, optarg, a); break;
        case 'a': a->opts.alg = (kv_sign_alg)parse_alg(cmd, optarg); break;
        case 'o': a->out = optarg; break;
        case 'd': a->opts.days = parse_uint(cmd, "--days", optarg, 1, 36500); break;
        case 'C': a->opts.flags |= KV_CERT_CA; break;
        case 'p':
            a->opts.path_len = parse_uint(cmd, "--path-len", optarg, 0, 255);
            a->opts.flags |= KV_CERT_PATH_LEN;
            break;
        default: die_usage(cmd, "bad option");
        }
    }
    if (optind != argc - 1)
        die_usage(cmd, "expected one key NAME or URI");
    if ((a->opts.flags & KV_CERT_PATH_LEN) && !(a->opts.flags & KV_CERT_CA))
        die_usage(cmd, "--path-len needs --ca");
    if (selfsign && !a->opts.subject)
        die_usage(cmd, "needs --subject (\"\" for an empty one, with a --san)");
    a->key = argv[optind];
    a->opts.sans = a->sans;
    a->opts.ext_key_usage = a->ekus;
}

static void cert_args_free(struct cert_args *a)
{
    free(a->ekus);
    free(a->sans);
}

static const char csr_help[] =
    "usage: keyvault [-c CONF] csr NAME|URI --subject DN [--san dns:NAME] [--san ip:ADDR]\n"
    "                [--san uri:URI] [--san email:ADDR] [--key-usage LIST] [--eku LIST]\n"
    "                [--alg ALG] [-o FILE]\n"
    "Write a PKCS#10 certificate request signed by the key (PEM, standard output\n"
    "by default). DN: RFC 4514, most specific first (\"CN=dev-42,O=Fleet\"); it may\n"
    "be left out, or \"\", when a --san is given. --san may be repeated. The SANs,\n"
    "--key-usage and --eku are asked for as requested extensions; the CA decides.\n"
    "LIST: comma-separated. Key usages: digitalSignature, nonRepudiation,\n"
    "keyEncipherment, dataEncipherment, keyAgreement, keyCertSign, cRLSign.\n"
    "Extended key usages: serverAuth, clientAuth, codeSigning, emailProtection,\n"
    "timeStamping, OCSPSigning or a dotted OID. ALG: as for sign (default: by the\n"
    "key's type; rsa-pkcs1-sha256 for PKCS#1 v1.5 on an RSA key).\n";

static int cmd_csr(kv_ctx *ctx, int argc, char **argv)
{
    struct cert_args a;
    kv_key *key = NULL;
    char *pem = NULL;
    int ret = EXIT_OK;
    kv_rc rc;

    cert_args_parse("csr", 0, argc, argv, &a);
    rc = kv_key_open(ctx, a.key, &key);
    if (rc == KV_OK)
        rc = kv_csr_create(key, &a.opts, &pem);
    if (rc != KV_OK)
        ret = fail("csr", ctx, rc);
    else if (write_all(a.out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("csr", "write", a.out);
    kv_string_free(pem);
    kv_key_free(key);
    cert_args_free(&a);
    return ret;
}

/* keyvault cert selfsign NAME ...: argv[0] is "selfsign". */
static int cmd_cert_selfsign(kv_ctx *ctx, int argc, char **argv)
{
    struct cert_args a;
    kv_key *key = NULL;
    kv_key_info info;
    char *pem = NULL;
    int ret = EXIT_OK;
    kv_rc rc;

    cert_args_parse("cert selfsign", 1, argc, argv, &a);
    rc = kv_key_open(ctx, a.key, &key);
    if (rc == KV_OK)
        rc = kv_cert_selfsign(key, &a.opts, &pem);
    if (rc == KV_OK)
        rc = kv_key_store_cert(key, (const unsigned char *)pem, strlen(pem));
    if (rc == KV_OK)
        rc = kv_key_get_info(key, &info);
    if (rc != KV_OK)
        ret = fail("cert selfsign", ctx, rc);
    else if (write_all(a.out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("cert selfsign", "write", a.out);
    else if (strcmp(a.out, "-") != 0)
        printf("stored a self-signed certificate with '%s'\n", info.name);
    kv_string_free(pem);
    kv_key_free(key);
    cert_args_free(&a);
    return ret;
}

static const char cert_help[] =
    "usage: keyvault [-c CONF] cert NAME|URI [-o FILE]\n"
    "       keyvault [-c CONF] cert import NAME|URI FILE\n"
    "       keyvault [-c CONF] cert show NAME|URI [--json]\n"
    "cert NAME writes the certificate chain stored with the key as PEM, leaf\n"
    "first (standard output by default). cert import stores FILE with the key,\n"
    "replacing an earlier chain: one PEM bundle of certificates, leaf first,\n"
    "each followed by its issuer, or one DER certificate; the leaf must be the\n"
    "key's, each certificate issued by the next (at most 8). cert NAME --import\n"
    "FILE does the same. cert show prints the leaf's subject, issuer, serial,\n"
    "SANs, validity, days left and whether renewal is due ([x509]\n"
    "renew_threshold, 2/3 of the lifetime by default).\n"
    "\n"
    "usage: keyvault [-c CONF] cert selfsign NAME|URI --subject DN [--san ...]\n"
    "                [--days N] [--ca] [--path-len N] [--key-usage LIST] [--eku LIST]\n"
    "                [--alg ALG] [-o FILE]\n"
    "Make a self-signed X.509 v3 certificate with the key, store it with the key\n"
    "(replacing an earlier one) and write it as PEM (standard output by default).\n"
    "Valid from a minute ago for N days (default 365, at most 36500); a random\n"
    "127-bit serial; basicConstraints CA:FALSE, or CA:TRUE with --ca (and\n"
    "pathLenConstraint N with --path-len); keyUsage by default digitalSignature\n"
    "(plus keyEncipherment for RSA), keyCertSign, cRLSign and digitalSignature\n"
    "with --ca; subject and authority key identifiers. DN, --san, LIST and ALG\n"
    "as for 'keyvault csr'; the DN may not be empty (it is the issuer too).\n"
    "A key named import, show, selfsign or renew is reached by its URI here.\n";

/* Store the chain in file with the key ref. */
static int cert_import(kv_ctx *ctx, const char *ref, const char *file)
{
    unsigned char *data = NULL;
    kv_key *key = NULL;
    kv_key_info info;
    size_t len = 0;
    int ret = EXIT_FAIL;
    kv_rc rc;

    if (!(data = read_all(file, &len)))
        return fail_sys("cert", "read", file);
    rc = kv_key_open(ctx, ref, &key);
    if (rc == KV_OK)
        rc = kv_key_store_chain(key, data, len);
    if (rc == KV_OK)
        rc = kv_key_get_info(key, &info);
    if (rc == KV_OK) {
        printf("stored the certificate chain with '%s'\n", info.name);
        ret = EXIT_OK;
    } else {
        ret = fail("cert", ctx, rc);
    }
    free(data);
    kv_key_free(key);
    return ret;
}

/* cert import NAME FILE (argv[0] is "import"). */
static int cmd_cert_import(kv_ctx *ctx, int argc, char **argv)
{
    if (argc != 3 || argv[1][0] == '-' || (argv[2][0] == '-' && argv[2][1] != '\0'))
        die_usage("cert", "import expects a key NAME or URI and a FILE");
    return cert_import(ctx, argv[1], argv[2]);
}

static int print_cert_info(const kv_cert_info *ci, int json)
{
    char b[32];

    if (json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:[], s:I, s:I, s:I, s:I, s:b, s:b, s:b, s:I}",
                              "subject", ci->subject, "issuer", ci->issuer, "serial",
                              ci->serial, "sans", "not_before", (json_int_t)ci->not_before,
                              "not_after", (json_int_t)ci->not_after, "renew_after",
                              (json_int_t)ci->renew_after, "days_left",
                              (json_int_t)ci->days_left, "renewal_due", ci->renewal_due,
                              "expired", ci->expired, "is_ca", ci->is_ca, "chain_len",
                              (json_int_t)ci->chain_len);
        for (size_t i = 0; j && i < ci->nsans; i++)
            if (json_array_append_new(json_object_get(j, "sans"), json_string(ci->sans[i])))
                break;
        return print_json(j);
    }
    printf("subject:     %s\nissuer:      %s\nserial:      %s\n", ci->subject, ci->issuer,
           ci->serial);
    for (size_t i = 0; i < ci->nsans; i++)
        printf("san:         %s\n", ci->sans[i]);
    printf("not before:  %s\n", utc(ci->not_before, b));
    printf("not after:   %s\n", utc(ci->not_after, b));
    printf("days left:   %ld\n", ci->days_left);
    printf("renew after: %s\n", utc(ci->renew_after, b));
    printf("renewal due: %s\nexpired:     %s\nca:          %s\nchain:       %zu certificate%s\n",
           ci->renewal_due ? "yes" : "no", ci->expired ? "yes" : "no", ci->is_ca ? "yes" : "no",
           ci->chain_len, ci->chain_len == 1 ? "" : "s");
    return EXIT_OK;
}

/* cert show NAME [--json] (argv[0] is "show"). */
static int cmd_cert_show(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'j' }, { NULL, 0, NULL, 0 },
    };
    kv_cert_info *ci = NULL;
    kv_key *key = NULL;
    int c, json = 0, ret;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c != 'j')
            die_usage("cert", "bad option");
        json = 1;
    }
    if (optind != argc - 1)
        die_usage("cert", "show expects one key NAME or URI");
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_key_cert_info(key, &ci);
    ret = rc == KV_OK ? print_cert_info(ci, json) : fail("cert", ctx, rc);
    kv_cert_info_free(ci);
    kv_key_free(key);
    return ret;
}

/* cert NAME [-o FILE] [--import FILE]: write or store the chain. */
static int cmd_cert_chain(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "import", required_argument, NULL, 'i' }, { "out", required_argument, NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    const char *import = NULL, *out = "-";
    char *pem = NULL;
    kv_key *key = NULL;
    int c, ret = EXIT_FAIL;
    kv_rc rc;

    if (argc > 1 && !strcmp(argv[1], "selfsign"))
        return cmd_cert_selfsign(ctx, argc - 1, argv + 1);
    while ((c = getopt_long(argc, argv, "i:o:", opts, NULL)) != -1) {
        switch (c) {
        case 'i': import = optarg; break;
        case 'o': out = optarg; break;
        default: die_usage("cert", "bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("cert", "expected one key NAME or URI");
    if (import)
        return cert_import(ctx, argv[optind], import);
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK)
        rc = kv_key_chain_pem(key, &pem);
    if (rc == KV_OK)
        ret = write_all(out, pem, strlen(pem), 0644) == 0 ? EXIT_OK
                                                          : fail_sys("cert", "write", out);
    else
        ret = fail("cert", ctx, rc);
    kv_string_free(pem);
    kv_key_free(key);
    return ret;
}

/* cert WORD ...: the subcommands by their first word, else cert NAME. */
static int cmd_cert(kv_ctx *ctx, int argc, char **argv)
{
    static const struct cert_word {
        const char *word;
        int (*fn)(kv_ctx *, int, char **);
    } words[] = {
        { "import", cmd_cert_import },
        { "show", cmd_cert_show },
        { "selfsign", cmd_cert_selfsign },
        { "renew", cmd_cert_renew },
    };

    for (size_t i = 0; argc > 1 && i < sizeof(words) / sizeof(words[0]); i++)
        if (!strcmp(argv[1], words[i].word))
            return words[i].fn(ctx, argc - 1, argv + 1);
    return cmd_cert_chain(ctx, argc, argv);
}

static const char tpm_help[] =
    "usage: keyvault [-c CONF] tpm COMMAND ...\n"
    "  ak [-o FILE]                         the attestation key's public key (PEM)\n"
    "  ek-cert [-o FILE]                    the endorsement key certificate (PEM)\n"
    "  quote --nonce HEX [--pcrs SEL] -m ATTEST -s SIG [--sig-der FILE]\n"
    "                                       TPM2_Quote (SEL: sha256:0-7 by default)\n"
    "  certify NAME|URI --nonce HEX -m ATTEST -s SIG [--sig-der FILE]\n"
    "                                       TPM2_Certify of a TPM key by the AK\n"
    "  pcr-read INDEX [--bank sha256]       print a PCR in hex\n"
    "  pcr-extend INDEX --digest HEX [--bank sha256]\n"
    "  ak-chain import FILE                 keep the AK's certificate chain (PEM, leaf first)\n"
    "  ak-chain show [-o FILE]              print it\n"
    "ATTEST is the TPMS_ATTEST, SIG the TPMT_SIGNATURE (tpm2_checkquote reads\n"
    "both), --sig-der the signature as DER for 'openssl dgst -verify'.\n";

static int write_evidence(kv_attestation *a, const char *m, const char *sig, const char *der)
{
    if (write_all(m, a->attest, a->attest_len, 0644) != 0)
        return fail_sys("tpm", "write", m);
    if (write_all(sig, a->signature, a->signature_len, 0644) != 0)
        return fail_sys("tpm", "write", sig);
    if (der && write_all(der, a->signature_der, a->signature_der_len, 0644) != 0)
        return fail_sys("tpm", "write", der);
    return EXIT_OK;
}

static int cmd_tpm(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "out", required_argument, NULL, 'o' },   { "nonce", required_argument, NULL, 'n' },
        { "pcrs", required_argument, NULL, 'p' },  { "message", required_argument, NULL, 'm' },
        { "sig", required_argument, NULL, 's' },   { "sig-der", required_argument, NULL, 'd' },
        { "bank", required_argument, NULL, 'b' },  { "digest", required_argument, NULL, 'g' },
        { NULL, 0, NULL, 0 },
    };
    const char *out = "-", *noncehex = NULL, *pcrs = NULL, *m = NULL, *sig = NULL, *der = NULL;
    const char *bank = "sha256", *digesthex = NULL, *sub;
    unsigned char *nonce = NULL, *digest = NULL, buf[8192];
    long noncelen = 0, digestlen = 0;
    size_t len = sizeof(buf);
    kv_attestation *ev = NULL;
    kv_key *key = NULL;
    int c, ret = EXIT_FAIL;
    kv_rc rc = KV_OK;

    if (argc < 2)
        die_usage("tpm", "expected a command: ak, ek-cert, quote, certify, pcr-read, pcr-extend");
    if (!strcmp(argv[1], "ak-chain"))
        return cmd_tpm_ak_chain(ctx, argc - 1, argv + 1);
    sub = argv[1];
    argc--;
    argv++;
    while ((c = getopt_long(argc, argv, "o:n:p:m:s:d:b:g:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'n': noncehex = optarg; break;
        case 'p': pcrs = optarg; break;
        case 'm': m = optarg; break;
        case 's': sig = optarg; break;
        case 'd': der = optarg; break;
        case 'b': bank = optarg; break;
        case 'g': digesthex = optarg; break;
        default: die_usage("tpm", "bad option");
        }
    }
    if (noncehex && !(nonce = OPENSSL_hexstr2buf(noncehex, &noncelen)))
        die_usage("tpm", "--nonce is not valid hex");
    if (digesthex && !(digest = OPENSSL_hexstr2buf(digesthex, &digestlen)))
        die_usage("tpm", "--digest is not valid hex");
    if (!strcmp(sub, "ak") || !strcmp(sub, "ek-cert")) {
        int cert = sub[0] == 'e';
        rc = cert ? kv_tpm_ek_cert(ctx, buf, &len) : kv_tpm_ak_public(ctx, buf, &len);
        if (rc == KV_OK)
            ret = write_pem("tpm", out, buf, len, cert);
    } else if (!strcmp(sub, "quote") || !strcmp(sub, "certify")) {
        int certify = sub[0] == 'c';
        if (!nonce || !m || !sig || (certify ? optind != argc - 1 : optind != argc))
            die_usage("tpm", "%s needs %s--nonce HEX, -m ATTEST and -s SIG", sub,
                      certify ? "NAME, " : "");
        if (certify) {
            rc = kv_key_open(ctx, argv[optind], &key);
            if (rc == KV_OK)
                rc = kv_key_certify(key, nonce, (size_t)noncelen, &ev);
        } else {
            rc = kv_tpm_quote(ctx, pcrs, nonce, (size_t)noncelen, &ev);
        }
        if (rc == KV_OK)
            ret = write_evidence(ev, m, sig, der);
    } else if (!strcmp(sub, "pcr-read") || !strcmp(sub, "pcr-extend")) {
        char *end;
        unsigned long index = optind == argc - 1 ? strtoul(argv[optind], &end, 10) : 99;
        if (index > 23 || *end)
            die_usage("tpm", "%s needs a PCR INDEX from 0 to 23", sub);
        if (sub[4] == 'r') {
            rc = kv_tpm_pcr_read(ctx, bank, (unsigned)index, buf, &len);
            if (rc == KV_OK) {
                for (size_t i = 0; i < len; i++)
                    printf("%02x", buf[i]);
                printf("\n");
                ret = EXIT_OK;
            }
        } else {
            if (!digest)
                die_usage("tpm", "pcr-extend needs --digest HEX");
            rc = kv_tpm_pcr_extend(ctx, bank, (unsigned)index, digest, (size_t)digestlen);
            ret = rc == KV_OK ? EXIT_OK : EXIT_FAIL;
        }
    } else {
        die_usage("tpm", "unknown command (ak, ek-cert, quote, certify, pcr-read, pcr-extend)");
    }
    if (rc != KV_OK)
        ret = fail("tpm", ctx, rc);
    kv_attestation_free(ev);
    kv_key_free(key);
    OPENSSL_free(nonce);
    OPENSSL_free(digest);
    return ret;
}

static const char backends_help[] =
    "usage: keyvault [-c CONF] backends\n"
    "Show the configured backends in order of preference and whether each is usable.\n";

static int cmd_backends(kv_ctx *ctx, int argc, char **argv)
{
    const char *name, *why;
    int available;

    if (argc != 1)
        die_usage("backends", "takes no arguments");
    for (size_t i = 0; kv_ctx_backend(ctx, i, &name, &available, &why) == KV_OK; i++)
        printf("%-9s %s%s%s\n", name, available ? "available" : "unavailable",
               available ? "" : ": ", why);
    return EXIT_OK;
}

static const char ca_help[] =
    "usage: keyvault [-c CONF] ca COMMAND CA_NAME ...\n"
    "The key CA_NAME, with its CA certificate stored with it ('cert selfsign --ca',\n"
    "or 'cert --import' of one issued to it), acts as a CA; what it issues and\n"
    "revokes is recorded in HOME/ca/CA_NAME.db.\n"
    "  sign CA_NAME --csr FILE --profile PROFILE [--days N] [--alg ALG] [-o FILE]\n"
    "  sign CA_NAME --pubkey PEM [--subject DN] [--san ...] --profile PROFILE [--days N]\n"
    "       [--tpm-manufacturer ID --tpm-model MODEL --tpm-version VERSION] [-o FILE]\n"
    "      Issue a certificate for a PKCS#10 request (PEM or DER; its signature is\n"
    "      checked, its extensions filtered by the profile) or for a bare public key\n"
    "      (subject and SANs given here). PROFILE: tls-server, tls-client,\n"
    "      device-identity, sub-ca, tpm-ak (the TCG attestation-key profile: empty\n"
    "      subject, the TPM named in the SAN, e.g. --tpm-manufacturer id:53544D20\n"
    "      --tpm-model swtpm --tpm-version id:00020000). N: days of validity\n"
    "      (default 365, sub-ca 1825; never past the CA's own). Writes the\n"
    "      certificate, then the CA's when that is not self-signed (PEM, standard\n"
    "      output by default). --path-len N: a sub-CA's path length.\n"
    "  revoke CA_NAME --serial HEX [--reason R]\n"
    "      Record a revocation. R: unspecified (default), keyCompromise,\n"
    "      cACompromise, affiliationChanged, superseded, cessationOfOperation,\n"
    "      privilegeWithdrawn.\n"
    "  crl CA_NAME [--days N] -o FILE\n"
    "      Write a CRL of every revoked certificate, valid for N days (default 7).\n";

static const struct {
    const char *name;
    kv_revoke_reason reason;
} revoke_reasons[] = {
    { "unspecified", KV_REVOKE_UNSPECIFIED },
    { "keyCompromise", KV_REVOKE_KEY_COMPROMISE },
    { "cACompromise", KV_REVOKE_CA_COMPROMISE },
    { "affiliationChanged", KV_REVOKE_AFFILIATION_CHANGED },
    { "superseded", KV_REVOKE_SUPERSEDED },
    { "cessationOfOperation", KV_REVOKE_CESSATION_OF_OPERATION },
    { "privilegeWithdrawn", KV_REVOKE_PRIVILEGE_WITHDRAWN },
};

static int cmd_ca_sign(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "csr", required_argument, NULL, 'r' },     { "pubkey", required_argument, NULL, 'P' },
        { "profile", required_argument, NULL, 'f' }, { "days", required_argument, NULL, 'd' },
        { "subject", required_argument, NULL, 's' }, { "san", required_argument, NULL, 'S' },
        { "alg", required_argument, NULL, 'a' },     { "out", required_argument, NULL, 'o' },
        { "path-len", required_argument, NULL, 'p' },
        { "tpm-manufacturer", required_argument, NULL, 'M' },
        { "tpm-model", required_argument, NULL, 'm' },
        { "tpm-version", required_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    const char *csrfile = NULL, *pubfile = NULL, *profile = NULL, *out = "-";
    const char **sans = NULL;
    size_t nsans = 0, len = 0;
    unsigned char *data = NULL;
    kv_key *ca = NULL;
    char *pem = NULL;
    int c, ret = EXIT_OK;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'r': csrfile = optarg; break;
        case 'P': pubfile = optarg; break;
        case 'f': profile = optarg; break;
        case 'd': o.days = parse_uint("ca", "--days", optarg, 1, 36500); break;
        case 's': o.subject = optarg; break;
        case 'S': push_str("ca", &sans, &nsans, optarg); break;
        case 'a': o.alg = (kv_sign_alg)parse_alg("ca", optarg); break;
        case 'o': out = optarg; break;
        case 'p':
            o.path_len = parse_uint("ca", "--path-len", optarg, 0, 255);
            o.flags |= KV_CERT_CA | KV_CERT_PATH_LEN;
            break;
        case 'M': o.tpm_manufacturer = optarg; break;
        case 'm': o.tpm_model = optarg; break;
        case 'V': o.tpm_version = optarg; break;
        default: die_usage("ca", "bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("ca", "sign expects one CA_NAME");
    if (!profile)
        die_usage("ca", "sign needs --profile (tls-server, tls-client, device-identity, "
                        "sub-ca, tpm-ak)");
    if (!csrfile == !pubfile)
        die_usage("ca", "sign needs one of --csr FILE and --pubkey PEM");
    if (csrfile && (o.subject || nsans))
        die_usage("ca", "--subject and --san go with --pubkey: a request carries its own");
    o.sans = sans;
    if (!(data = read_all(csrfile ? csrfile : pubfile, &len))) {
        free(sans);
        return fail_sys("ca", "read", csrfile ? csrfile : pubfile);
    }
    rc = kv_key_open(ctx, argv[optind], &ca);
    if (rc == KV_OK)
        rc = csrfile ? kv_ca_issue(ca, profile, data, len, &o, &pem)
                     : kv_ca_issue_pubkey(ca, profile, data, len, &o, &pem);
    if (rc != KV_OK)
        ret = fail("ca", ctx, rc);
    else if (write_all(out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("ca", "write", out);
    kv_string_free(pem);
    kv_key_free(ca);
    free(data);
    free(sans);
    return ret;
}

static int cmd_ca_revoke(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "serial", required_argument, NULL, 's' }, { "reason", required_argument, NULL, 'r' },
        { NULL, 0, NULL, 0 },
    };
    const char *serial = NULL;
    size_t reason = 0;
    kv_key *ca = NULL;
    int c;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': serial = optarg; break;
        case 'r':
            for (reason = 0; reason < sizeof(revoke_reasons) / sizeof(revoke_reasons[0]);
                 reason++)
                if (!strcmp(optarg, revoke_reasons[reason].name))
                    break;
            if (reason == sizeof(revoke_reasons) / sizeof(revoke_reasons[0]))
                die_usage("ca", "unknown --reason (unspecified, keyCompromise, cACompromise, "
                                "affiliationChanged, superseded, cessationOfOperation, "
                                "privilegeWithdrawn)");
            break;
        default: die_usage("ca", "bad option");
        }
    }
    if (optind != argc - 1 || !serial)
        die_usage("ca", "revoke expects one CA_NAME and --serial HEX");
    rc = kv_key_open(ctx, argv[optind], &ca);
    if (rc == KV_OK)
        rc = kv_ca_revoke(ca, serial, revoke_reasons[reason].reason);
    kv_key_free(ca);
    if (rc != KV_OK)
        return fail("ca", ctx, rc);
    printf("revoked (%s)\n", revoke_reasons[reason].name);
    return EXIT_OK;
}

static int cmd_ca_crl(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "days", required_argument, NULL, 'd' }, { "out", required_argument, NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    const char *out = NULL;
    unsigned days = 0;
    kv_key *ca = NULL;
    char *pem = NULL;
    int c, ret = EXIT_OK;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'd': days = parse_uint("ca", "--days", optarg, 1, 36500); break;
        case 'o': out = optarg; break;
        default: die_usage("ca", "bad option");
        }
    }
    if (optind != argc - 1 || !out)
        die_usage("ca", "crl expects one CA_NAME and -o FILE");
    rc = kv_key_open(ctx, argv[optind], &ca);
    if (rc == KV_OK)
        rc = kv_ca_crl(ca, days, &pem);
    if (rc != KV_OK)
        ret = fail("ca", ctx, rc);
    else if (write_all(out, pem, strlen(pem), 0644) != 0)
        ret = fail_sys("ca", "write", out);
    kv_string_free(pem);
    kv_key_free(ca);
    return ret;
}

static int cmd_ca(kv_ctx *ctx, int argc, char **argv)
{
    if (argc < 2)
        die_usage("ca", "expected a command: sign, revoke, crl");
    if (!strcmp(argv[1], "sign"))
        return cmd_ca_sign(ctx, argc - 1, argv + 1);
    if (!strcmp(argv[1], "revoke"))
        return cmd_ca_revoke(ctx, argc - 1, argv + 1);
    if (!strcmp(argv[1], "crl"))
        return cmd_ca_crl(ctx, argc - 1, argv + 1);
    die_usage("ca", "unknown command (sign, revoke, crl)");
}

struct command {
    const char *name;
    int (*fn)(kv_ctx *, int, char **);
    const char *help;
};

static const struct command commands[] = {
    { "keygen", cmd_keygen, keygen_help },    { "list", cmd_list, list_help },
    { "info", cmd_info, info_help },          { "destroy", cmd_destroy, destroy_help },
    { "pubkey", cmd_pubkey, pubkey_help },    { "sign", cmd_sign, sign_help },
    { "verify", cmd_verify, verify_help },    { "ecdh", cmd_ecdh, ecdh_help },
    { "cert", cmd_cert, cert_help },          { "backends", cmd_backends, backends_help },
    { "tpm", cmd_tpm, tpm_help },
    { "csr", cmd_csr, csr_help },
    { "ca", cmd_ca, ca_help },
    { "reference", cmd_reference, reference_help },
    { "attest", cmd_attest, attest_help },
    { "enroll", cmd_enroll, enroll_help },
    { "verify-evidence", cmd_verify_evidence, verify_evidence_help },
    { "policy", cmd_policy, policy_help },
    { "rotate", cmd_rotate, rotate_help },    { "prune", cmd_prune, prune_help },
    { "versions", cmd_versions, versions_help },
    { "audit", cmd_audit, audit_help },
    { "jwk", cmd_jwk, jwk_help },             { "jwks", cmd_jwks, jwks_help },
    { "jwt", cmd_jwt, jwt_help },
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keyvault [-c CONF] COMMAND [ARGS]\n"
            "Keys in PKCS#11 tokens, a TPM 2.0 or an encrypted software store.\n\n"
            "commands:\n"
            "  keygen NAME|URI  create a key\n"
            "  list             list keys\n"
            "  info NAME        show a key\n"
            "  destroy NAME     delete a key\n"
            "  pubkey NAME      export the public key (PEM)\n"
            "  sign NAME        sign a file\n"
            "  verify NAME      verify a signature\n"
            "  ecdh NAME        derive an ECDH shared secret\n"
            "  cert NAME        the key's certificate chain: import, show, write, selfsign, renew\n"
            "  csr NAME         write a certificate request (PKCS#10) signed by the key\n"
            "  ca ...           a CA in the vault: sign, revoke, crl\n"
            "  reference NAME   write a key reference PEM for OpenSSL programs\n"
            "  tpm ...          TPM attestation: ak, ek-cert, quote, certify, PCRs\n"
            "  attest NAME      write the key's evidence document\n"
            "  enroll ...       AK enrollment: request, challenge, respond, finish, revoke, list\n"
            "  verify-evidence FILE  check an evidence document against a nonce and policy\n"
            "  policy show NAME  the policy stored with a key\n"
            "  backends         show the configured backends\n"
            "  rotate NAME      make a new version of a key current\n"
            "  prune NAME       destroy retired versions past their grace\n"
            "  versions NAME    show a key's versions and their states\n"
            "  audit ...        the audit log: verify FILE, tail\n"
            "  jwk NAME         the key's public JWK\n"
            "  jwks NAME...     a JWK set of the keys' public JWKs\n"
            "  jwt ...          JWTs and OAuth2 client assertions: sign, verify\n\n"
            "-c CONF: configuration file (default $KEYVAULT_CONF, then\n"
            "/etc/keyvault/keyvault.conf, then built-in defaults).\n"
            "-o FILE: '-' is standard output. A new file, or a regular file there,\n"
            "is replaced whole (written beside it, flushed, renamed over it), so a\n"
            "failed write leaves the old file as it was; where that cannot be done (a\n"
            "directory you may not write), the file is written in place. It keeps its\n"
            "mode (a secret's is 0600). A symbolic link, a device or\n"
            "a FIFO is written through, but never with a secret (ecdh, enroll\n"
            "respond): a secret goes to a file of its own, mode 0600, or to '-'.\n"
            "'keyvault COMMAND --help' describes each command; 'keyvault --version'\n"
            "prints the library's version.\n");
}

int main(int argc, char **argv)
{
    const struct command *cmd = NULL;
    kv_ctx *ctx = NULL;
    int argi = 1, ret;
    kv_rc rc;

    /* a file size limit must fail the write (KV_ERR_NO_SPACE), not kill us
     * halfway through it */
    signal(SIGXFSZ, SIG_IGN);
    if (argi < argc && (!strcmp(argv[argi], "-c") || !strcmp(argv[argi], "--config"))) {
        if (argi + 1 >= argc) {
            fprintf(stderr, "%s: -c needs a configuration file\n", prog);
            return EXIT_USAGE;
        }
        config_path = argv[argi + 1];
        argi += 2;
    }
    if (argi >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[argi], "--help") || !strcmp(argv[argi], "-h") ||
        !strcmp(argv[argi], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[argi], "--version")) {
        printf("keyvault (libkeyvault) %s\n", kv_version());
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(commands[i].name, argv[argi]))
            cmd = &commands[i];
    if (!cmd) {
        fprintf(stderr, "%s: unknown command (see '%s --help')\n", prog, prog);
        return EXIT_USAGE;
    }
    if (want_help(argc - argi, argv + argi)) {
        fputs(cmd->help, stdout);
        if (cmd->fn == cmd_cert) /* cert renew's text is kept with it, in cmd-renew.c */
            printf("\n%s", cert_renew_help);
        return EXIT_OK;
    }
    rc = kv_ctx_new(&ctx, config_path);
    if (rc != KV_OK) {
        const char *msg = kv_errmsg(NULL);
        fprintf(stderr, "%s: %s\n", prog, *msg ? msg : kv_strerror(rc));
        return EXIT_FAIL;
    }
    optind = 1;
    opterr = 0; /* getopt would echo a bad option, whatever it holds: "bad option" instead */
    ret = cmd->fn(ctx, argc - argi, argv + argi);
    kv_ctx_free(ctx);
    return ret;
}
