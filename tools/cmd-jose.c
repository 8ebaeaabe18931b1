/*
 * cmd-jose.c - keyvault jwk, jwks and jwt: a key's public JWK, a JWK set
 * for several keys, JWTs and RFC 7523 client assertions signed in the
 * vault, and JWT verification against a JWK set or a PEM public key.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define JWKS_MAX_KEYS 64

const char jwk_help[] =
    "usage: keyvault [-c CONF] jwk NAME|URI\n"
    "Print the key's public half as a JWK (RFC 7517): kty and the key's members,\n"
    "kid (the RFC 7638 thumbprint), alg (the alg a token signed by it carries)\n"
    "and use \"sig\".\n";

const char jwks_help[] =
    "usage: keyvault [-c CONF] jwks NAME|URI...\n"
    "Print a JWK set {\"keys\":[...]} of the keys' public JWKs (1 to 64 keys): what an\n"
    "authorization server is given to check the keys' client assertions.\n";

const char jwt_help[] =
    "usage: keyvault [-c CONF] jwt sign NAME|URI --claims FILE [--alg ALG] [--x5c]\n"
    "       keyvault [-c CONF] jwt sign NAME|URI --client-assertion --client-id ID\n"
    "                --aud URL [--ttl SECONDS] [--evidence FILE [--evidence-hash]]\n"
    "                [--alg ALG] [--x5c]\n"
    "       keyvault [-c CONF] jwt verify -|TOKEN (--jwks FILE | --pubkey PEM)\n"
    "                [--aud URL | --any-aud] [--iss ID] [--sub ID] [--skew SECONDS]\n"
    "                [--max-ttl SECONDS]\n"
    "jwt sign prints a JWT signed by the key, header {alg, kid, typ: \"JWT\"}: the\n"
    "claims of FILE (a JSON object; '-' is standard input), or an RFC 7523 client\n"
    "assertion for OAuth2 private_key_jwt: iss = sub = ID, aud = URL (the token\n"
    "endpoint), iat now, exp = iat + SECONDS (default 60, at most 3600) and a\n"
    "random jti. --evidence adds the key's evidence (keyvault attest) as the claim\n"
    "kv_evidence, or with --evidence-hash only its SHA-256 as kv_evidence_s256.\n"
    "--x5c puts the key's stored certificate chain in the header. --alg: the key's\n"
    "default (its JWK's alg: ES256, ES384, EdDSA by key type; for RSA PS256, or RS256\n"
    "when its policy allows only RS256) unless another is asked (RS256 of an RSA key).\n"
    "jwt verify checks a JWT with the keys of --jwks FILE (a JWK set or one JWK) or\n"
    "--pubkey PEM (one PEM public key): the signature with the alg the key pins, exp\n"
    "(required), nbf and iat with a clock skew (default 60 s; --skew 0 for none),\n"
    "the lifetime exp - iat against --max-ttl, the header typ (absent or JWT), and\n"
    "aud, iss and sub when asked. A token that carries an aud is refused without\n"
    "--aud URL, unless --any-aud. Give the token as '-' (read from standard input):\n"
    "a token on the command line shows in ps. Prints the claims when the token is\n"
    "valid; the reason on standard error when not. Exit status 0 when the token is\n"
    "valid, 1 when it is not (or it cannot be checked), 2 on a usage error.\n";

/* A whole file ("-": standard input) as a NUL-terminated string; NULL with
 * errno (EINVAL for a NUL byte inside). */
static char *read_text(const char *path)
{
    size_t len = 0;
    unsigned char *buf = read_all(path, &len);
    char *s;

    if (!buf)
        return NULL;
    if (memchr(buf, '\0', len)) {
        free(buf);
        errno = EINVAL;
        return NULL;
    }
    if (!(s = realloc(buf, len + 1))) {
        free(buf);
        errno = ENOMEM;
        return NULL;
    }
    s[len] = '\0';
    return s;
}

/* An option's number from min to max, else a usage error naming the option. */
static unsigned seconds(const char *cmd, const char *opt, const char *arg, unsigned long min,
                        unsigned long max)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v < min || v > max)
        die_usage(cmd, "%s must be a number from %lu to %lu", opt, min, max);
    return (unsigned)v;
}

int cmd_jwk(kv_ctx *ctx, int argc, char **argv)
{
    kv_key *key = NULL;
    char *jwk = NULL;
    kv_rc rc;

    if (argc != 2 || argv[1][0] == '-')
        die_usage("jwk", "expected one key NAME or URI");
    rc = kv_key_open(ctx, argv[1], &key);
    if (rc == KV_OK)
        rc = kv_jwk_public(key, &jwk);
    if (rc == KV_OK)
        printf("%s\n", jwk);
    kv_string_free(jwk);
    kv_key_free(key);
    return rc == KV_OK ? EXIT_OK : fail("jwk", ctx, rc);
}

int cmd_jwks(kv_ctx *ctx, int argc, char **argv)
{
    kv_key *keys[JWKS_MAX_KEYS] = { NULL };
    size_t n = 0;
    char *jwks = NULL;
    kv_rc rc = KV_OK;

    if (argc < 2 || argc - 1 > JWKS_MAX_KEYS)
        die_usage("jwks", "expected 1 to %d key NAMEs or URIs", JWKS_MAX_KEYS);
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-')
            die_usage("jwks", "bad option");
    for (n = 0; n < (size_t)argc - 1 && rc == KV_OK; n++)
        rc = kv_key_open(ctx, argv[n + 1], &keys[n]);
    if (rc == KV_OK)
        rc = kv_jwks(keys, n, &jwks);
    if (rc == KV_OK)
        printf("%s\n", jwks);
    kv_string_free(jwks);
    for (size_t i = 0; i < n; i++)
        kv_key_free(keys[i]);
    return rc == KV_OK ? EXIT_OK : fail("jwks", ctx, rc);
}

static int jwt_sign(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "claims", required_argument, NULL, 'c' },
        { "client-assertion", no_argument, NULL, 'A' },
        { "client-id", required_argument, NULL, 'i' },
        { "aud", required_argument, NULL, 'a' },
        { "ttl", required_argument, NULL, 't' },
        { "evidence", required_argument, NULL, 'e' },
        { "evidence-hash", no_argument, NULL, 'H' },
        { "x5c", no_argument, NULL, 'x' },
        { "alg", required_argument, NULL, 'g' },
        { NULL, 0, NULL, 0 },
    };
    kv_client_assertion_opts ca = KV_CLIENT_ASSERTION_OPTS_INIT;
    const char *claims_file = NULL, *evidence_file = NULL;
    char *claims = NULL, *evidence = NULL, *jwt = NULL;
    int c, assertion = 0, ret = EXIT_FAIL;
    unsigned flags = 0;
    kv_key *key = NULL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': claims_file = optarg; break;
        case 'A': assertion = 1; break;
        case 'i': ca.client_id = optarg; break;
        case 'a': ca.aud = optarg; break;
        case 't': ca.ttl = seconds("jwt sign", "--ttl", optarg, 1, 3600); break;
        case 'e': evidence_file = optarg; break;
        case 'H': ca.flags |= KV_ASSERTION_EVIDENCE_HASH; break;
        case 'x': flags |= KV_JWS_X5C; break;
        case 'g': ca.alg = optarg; break;
        default: die_usage("jwt sign", "bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("jwt sign", "expected one key NAME or URI");
    if (assertion == !!claims_file)
        die_usage("jwt sign", "expected either --claims FILE or --client-assertion");
    if (!assertion && (ca.client_id || ca.aud || ca.ttl || evidence_file || ca.flags))
        die_usage("jwt sign", "--client-id, --aud, --ttl and --evidence go with --client-assertion");
    if (assertion && (!ca.client_id || !ca.aud))
        die_usage("jwt sign", "--client-assertion needs --client-id ID and --aud URL");
    if ((ca.flags & KV_ASSERTION_EVIDENCE_HASH) && !evidence_file)
        die_usage("jwt sign", "--evidence-hash needs --evidence FILE");
    if (claims_file && !(claims = read_text(claims_file))) {
        ret = fail_sys("jwt sign", "read", claims_file);
        goto out;
    }
    if (evidence_file && !(evidence = read_text(evidence_file))) {
        ret = fail_sys("jwt sign", "read", evidence_file);
        goto out;
    }
    rc = kv_key_open(ctx, argv[optind], &key);
    if (rc == KV_OK && assertion) {
        ca.evidence = evidence;
        ca.flags |= flags;
        rc = kv_jwt_client_assertion(key, &ca, &jwt);
    } else if (rc == KV_OK) {
        rc = kv_jwt_sign(key, ca.alg, claims, flags, &jwt);
    }
    if (rc != KV_OK) {
        ret = fail("jwt sign", ctx, rc);
        goto out;
    }
    printf("%s\n", jwt);
    ret = EXIT_OK;
out:
    kv_string_free(jwt);
    kv_key_free(key);
    free(claims);
    free(evidence);
    return ret;
}

static int jwt_verify(kv_ctx *ctx, int argc, char **argv)
{
    static const struct option opts[] = {
        { "jwks", required_argument, NULL, 'j' },  { "pubkey", required_argument, NULL, 'p' },
        { "aud", required_argument, NULL, 'a' },   { "iss", required_argument, NULL, 'i' },
        { "sub", required_argument, NULL, 's' },   { "skew", required_argument, NULL, 'k' },
        { "max-ttl", required_argument, NULL, 'm' }, { "any-aud", no_argument, NULL, 'y' },
        { NULL, 0, NULL, 0 },
    };
    kv_jwt_verify_opts vo = KV_JWT_VERIFY_OPTS_INIT;
    const char *keys_file = NULL, *p;
    char *keys = NULL, *token = NULL, *claims = NULL;
    int c, nkeys = 0, pem = 0, ret = EXIT_FAIL;
    kv_rc rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
        case 'p': keys_file = optarg; nkeys++; pem = c == 'p'; break;
        case 'y': vo.flags |= KV_JWT_ANY_AUD; break;
        case 'a': vo.aud = optarg; break;
        case 'i': vo.iss = optarg; break;
        case 's': vo.sub = optarg; break;
        case 'k':
            vo.skew = seconds("jwt verify", "--skew", optarg, 0, 3600);
            if (vo.skew == 0)
                vo.flags |= KV_JWT_NO_SKEW;
            break;
        case 'm': vo.max_ttl = seconds("jwt verify", "--max-ttl", optarg, 1, 31536000); break;
        default: die_usage("jwt verify", "bad option");
        }
    }
    if (optind != argc - 1)
        die_usage("jwt verify", "expected one TOKEN (or '-' to read it from standard input)");
    if (nkeys != 1)
        die_usage("jwt verify", "expected one of --jwks FILE or --pubkey PEM");
    if (vo.aud && (vo.flags & KV_JWT_ANY_AUD))
        die_usage("jwt verify", "--aud and --any-aud exclude each other");
    if (!(keys = read_text(keys_file))) {
        ret = fail_sys("jwt verify", "read", keys_file);
        goto out;
    }
    /* each option takes its own kind of key text; the library takes both */
    for (p = keys; *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'; p++)
        ;
    if (pem != (strncmp(p, "-----BEGIN ", 11) == 0)) {
        fprintf(stderr, "%s jwt verify: %s '%s' is not %s%s\n", prog, pem ? "--pubkey" : "--jwks",
                keys_file, pem ? "a PEM public key" : "a JWK set or a JWK",
                pem ? " (a JWK set or JWK goes with --jwks)"
                    : *p == '-' ? " (a PEM public key goes with --pubkey)" : "");
        ret = EXIT_USAGE;
        goto out;
    }
    if (strcmp(argv[optind], "-") == 0) {
        if (!(token = read_text("-"))) {
            ret = fail_sys("jwt verify", "read", "standard input");
            goto out;
        }
        /* the token without its line end: whitespace inside stays, for the
         * library to refuse */
        size_t n = strlen(token);
        while (n > 0 && strchr(" \t\r\n", token[n - 1]))
            token[--n] = '\0';
    } else if (!(token = strdup(argv[optind]))) {
        goto out;
    }
    rc = kv_jwt_verify(ctx, token, keys, &vo, &claims);
    if (rc != KV_OK) {
        ret = fail("jwt verify", ctx, rc);
        goto out;
    }
    printf("%s\n", claims);
    ret = EXIT_OK;
out:
    kv_string_free(claims);
    free(token);
    free(keys);
    return ret;
}

int cmd_jwt(kv_ctx *ctx, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "sign") == 0)
        return jwt_sign(ctx, argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return jwt_verify(ctx, argc - 1, argv + 1);
    die_usage("jwt", "expected 'sign' or 'verify'");
}
