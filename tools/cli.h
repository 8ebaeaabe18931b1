/*
 * cli.h - the keyvault command-line tool's shared helpers and its commands.
 * The tool sees the library through keyvault.h alone.
 */
#ifndef KV_CLI_H
#define KV_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#include "keyvault.h"

#define CLI_MAX_INPUT (64 * 1024 * 1024)

/* exit codes: 0 ok, 1 operation failed, 2 usage error */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

extern const char *prog;

/* A usage error for `cmd`, then exit 2. Never give it an argument's text:
 * any argument may be a secret typed in the wrong place. */
void die_usage(const char *cmd, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
/* Report the library's message for rc; returns EXIT_FAIL. */
int fail(const char *cmd, kv_ctx *ctx, kv_rc rc);
/* Report errno for `what` on `path`; returns EXIT_FAIL. */
int fail_sys(const char *cmd, const char *what, const char *path);
/* A whole file ("-": standard input), at most CLI_MAX_INPUT bytes; NULL with errno. */
unsigned char *read_all(const char *path, size_t *len);
/* Write a whole file ("-": standard output) with `mode` (0600 for secrets),
 * replacing a regular file atomically (cli.c); -1 with errno. */
int write_all(const char *path, const void *data, size_t len, mode_t mode);
/* Whether --help or -h is among the arguments. */
int want_help(int argc, char **argv);
/* Print j indented on standard output and release it. */
int print_json(json_t *j);
/* A time (seconds since the epoch) as ISO 8601 UTC in buf: "2026-11-26T19:00:00Z". */
const char *utc(int64_t t, char buf[32]);
/* Write DER (a certificate when cert, else a SubjectPublicKeyInfo) as PEM to out. */
int write_pem(const char *cmd, const char *out, const unsigned char *der, size_t len, int cert);

/* Commands kept in files of their own (cmd-*.c): the function and its
 * --help text, listed in keyvault.c's command table. */
/* cmd-attest.c: evidence and the AK's chain */
extern const char attest_help[];
int cmd_attest(kv_ctx *ctx, int argc, char **argv);
int cmd_tpm_ak_chain(kv_ctx *ctx, int argc, char **argv);
int cmd_enroll(kv_ctx *ctx, int argc, char **argv);
extern const char enroll_help[];
/* cmd-verify.c: checking evidence */
int cmd_verify_evidence(kv_ctx *ctx, int argc, char **argv);
extern const char verify_evidence_help[];
/* cmd-policy.c: key policies. keygen's options (getopt codes) fill a
 * kv_key_policy: policy_option returns 0 and sets *set for one of them. */
enum { POLICY_OPT_ALLOW = 1000, POLICY_OPT_ALGS, POLICY_OPT_NOT_BEFORE, POLICY_OPT_NOT_AFTER,
       POLICY_OPT_HARDWARE_ONLY };
int policy_option(int opt, char *arg, kv_key_policy *p, int *set);
int cmd_policy(kv_ctx *ctx, int argc, char **argv);
extern const char policy_help[];
/* cmd-renew.c: cert renew (one key, --all, --check) */
extern const char cert_renew_help[];
int cmd_cert_renew(kv_ctx *ctx, int argc, char **argv);

/* cmd-rotate.c: key versions, rotation, pruning */
extern const char rotate_help[], prune_help[], versions_help[];
int cmd_rotate(kv_ctx *ctx, int argc, char **argv);
int cmd_prune(kv_ctx *ctx, int argc, char **argv);
int cmd_versions(kv_ctx *ctx, int argc, char **argv);
/* The state of a listed key's version ("current", ... "unknown"). */
const char *list_version_state(kv_ctx *ctx, const kv_key_info *k);
/* cmd-audit.c: the audit log */
int cmd_audit(kv_ctx *ctx, int argc, char **argv);
extern const char audit_help[];
/* cmd-jose.c: JWK, JWK sets, JWTs and client assertions */
extern const char jwk_help[], jwks_help[], jwt_help[];
int cmd_jwk(kv_ctx *ctx, int argc, char **argv);
int cmd_jwks(kv_ctx *ctx, int argc, char **argv);
int cmd_jwt(kv_ctx *ctx, int argc, char **argv);

#endif
