/*
 * crash-victim.c - the process tests/crashloop.sh kills with SIGKILL, and
 * the one that looks at what each kill left. Public API only.
 *
 * Victims loop over one operation until they are killed. Before each call
 * they write "begin WHAT" and after it returned KV_OK "ok WHAT" to stdout
 * with write(2) (no stdio buffer: a line on disk is a line the process
 * wrote), so the killer knows exactly what was acknowledged:
 *   crash-victim CONF generate BACKEND PREFIX FIRST [COUNT] [--cert]
 *       keys PREFIX-FIRST, PREFIX-FIRST+1, ... (P-256) in BACKEND; with
 *       --cert each gets a self-signed certificate stored with it
 *   crash-victim CONF rotate NAME [OVERLAP]
 *       rotations of NAME (overlap 1 h, kept): "ok NAME@V"; with OVERLAP
 *       (seconds) that overlap and no grace, so prune destroys them
 *   crash-victim CONF issue CA CSR OUTDIR
 *       certificates (tls-client) for the request CSR by the CA key CA:
 *       each is written to OUTDIR/N.pem before "ok N"
 *   crash-victim CONF destroy NAME...
 *   crash-victim CONF sign NAME
 *       signatures (the configuration's [audit] file records them)
 * A failed call prints "error WHAT: MESSAGE" and exits 1. Each victim
 * prints "ready" once its context (and for issue and sign, its key) is
 * open: the killer times its kill from there.
 *
 * The checker opens each NAME, signs "crashloop" and writes the public key
 * and the signature to DIR/NAME.pub and DIR/NAME.sig for openssl:
 *   crash-victim CONF check DIR [--regen] NAME...
 * one line per name: "signs NAME", "absent NAME" (KV_ERR_KEY_NOT_FOUND:
 * nothing opens) or "broken NAME: MESSAGE" (something opens but fails, or
 * the lookup fails otherwise). --regen: an absent NAME is generated again
 * (in the backend after "regen=" on the name: NAME=BACKEND) and must sign
 * and hold no certificate ("regen NAME" or "broken NAME: ..."), so nothing
 * a killed call left blocks the name or attaches to its next key.
 *   crash-victim CONF versions NAME
 * prints "current V", then "version V STATE" for each version.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keyvault.h"

static const unsigned char msg[] = "crashloop";

/* one line straight to fd 1 */
static void say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    for (int done = 0; done < n;) {
        ssize_t w = write(1, line + done, (size_t)(n - done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            exit(2);
        done += (int)w;
    }
}

static int fail(kv_ctx *ctx, const char *what, kv_rc rc)
{
    say("error %s: %s (%s)", what, kv_errmsg(ctx), kv_strerror(rc));
    return 1;
}

static kv_rc read_all(const char *path, unsigned char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;

    *out = NULL;
    if (!f)
        return KV_ERR_IO;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(*out = malloc((size_t)n + 1)) || fread(*out, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(*out);
        *out = NULL;
        return KV_ERR_IO;
    }
    fclose(f);
    *len = (size_t)n;
    return KV_OK;
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(data, 1, len, f) == len;

    if (f && fclose(f) != 0)
        ok = 0;
    return ok;
}

static kv_rc selfsign_store(kv_key *key, const char *name)
{
    kv_cert_opts o = KV_CERT_OPTS_INIT;
    char subject[160], *pem = NULL;
    kv_rc rc;

    snprintf(subject, sizeof(subject), "CN=%s", name);
    o.subject = subject;
    if ((rc = kv_cert_selfsign(key, &o, &pem)) == KV_OK)
        rc = kv_key_store_cert(key, (const unsigned char *)pem, strlen(pem));
    kv_string_free(pem);
    return rc;
}

static int do_generate(kv_ctx *ctx, int argc, char **argv)
{
    const char *backend = argv[0], *prefix = argv[1];
    long first = atol(argv[2]), count = -1;
    int cert = 0;
    char name[128];

    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--cert"))
            cert = 1;
        else
            count = atol(argv[i]);
    }
    for (long i = first; count < 0 || i < first + count; i++) {
        kv_key *key = NULL;
        kv_rc rc;

        snprintf(name, sizeof(name), "%s-%ld", prefix, i);
        say("begin %s", name);
        rc = kv_key_generate(ctx, name, KV_KEY_EC_P256, backend, cert ? &key : NULL);
        if (rc == KV_OK && cert)
            rc = selfsign_store(key, name);
        kv_key_free(key);
        if (rc != KV_OK)
            return fail(ctx, name, rc);
        say("ok %s", name);
    }
    return 0;
}

static int do_rotate(kv_ctx *ctx, const char *name, const char *overlap)
{
    kv_rotate_opts o = KV_ROTATE_OPTS_INIT;

    o.overlap = 3600;
    o.flags = KV_ROTATE_KEEP;
    if (overlap) {
        o.overlap = atoi(overlap);
        o.grace = 0;
        o.flags = 0;
    }
    for (;;) {
        kv_key *key = NULL;
        kv_key_info info;
        kv_rc rc;

        say("begin %s", name);
        rc = kv_key_rotate(ctx, name, &o, &key);
        if (rc == KV_OK)
            rc = kv_key_get_info(key, &info);
        if (rc != KV_OK) {
            kv_key_free(key);
            return fail(ctx, name, rc);
        }
        say("ok %s@%u", name, info.version);
        kv_key_free(key);
    }
}

static int do_issue(kv_ctx *ctx, const char *ca_name, const char *csr_path, const char *outdir)
{
    unsigned char *csr = NULL;
    size_t csrlen = 0;
    kv_key *ca = NULL;
    char path[4096];
    kv_rc rc;
    int ret = 1;

    if (read_all(csr_path, &csr, &csrlen) != KV_OK) {
        say("error cannot read %s", csr_path);
        return 1;
    }
    if ((rc = kv_key_open(ctx, ca_name, &ca)) != KV_OK) {
        ret = fail(ctx, ca_name, rc);
        goto out;
    }
    say("ready");
    for (long i = 1;; i++) {
        char *pem = NULL;

        /* a number no earlier run of this directory used */
        snprintf(path, sizeof(path), "%s/%ld.pem", outdir, i);
        if (access(path, F_OK) == 0)
            continue;
        say("begin %ld", i);
        rc = kv_ca_issue(ca, "tls-client", csr, csrlen, NULL, &pem);
        if (rc != KV_OK) {
            ret = fail(ctx, "issue", rc);
            goto out;
        }
        if (!write_file(path, pem, strlen(pem))) {
            kv_string_free(pem);
            say("error cannot write %s", path);
            goto out;
        }
        kv_string_free(pem);
        say("ok %ld", i);
    }
out:
    kv_key_free(ca);
    free(csr);
    return ret;
}

static int do_destroy(kv_ctx *ctx, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        kv_rc rc;

        say("begin %s", argv[i]);
        if ((rc = kv_key_destroy(ctx, argv[i])) != KV_OK)
            return fail(ctx, argv[i], rc);
        say("ok %s", argv[i]);
    }
    return 0;
}

static int do_sign(kv_ctx *ctx, const char *name)
{
    unsigned char sig[1024];
    kv_key *key = NULL;
    kv_rc rc;

    if ((rc = kv_key_open(ctx, name, &key)) != KV_OK)
        return fail(ctx, name, rc);
    say("ready");
    for (long i = 1;; i++) {
        size_t len = sizeof(sig);

        say("begin %ld", i);
        if ((rc = kv_sign(key, KV_ALG_DEFAULT, 0, msg, sizeof(msg) - 1, sig, &len)) != KV_OK) {
            kv_key_free(key);
            return fail(ctx, name, rc);
        }
        say("ok %ld", i);
    }
}

/* NAME signs: its public key and signature to DIR for openssl */
static kv_rc sign_out(kv_ctx *ctx, const char *dir, const char *name, kv_key *key)
{
    unsigned char sig[1024];
    size_t len = sizeof(sig);
    char *pub = NULL, path[4096];
    kv_rc rc;

    (void)ctx;
    if ((rc = kv_sign(key, KV_ALG_DEFAULT, 0, msg, sizeof(msg) - 1, sig, &len)) != KV_OK ||
        (rc = kv_key_public_pem(key, &pub)) != KV_OK)
        return rc;
    snprintf(path, sizeof(path), "%s/%s.pub", dir, name);
    if (!write_file(path, pub, strlen(pub)))
        rc = KV_ERR_IO;
    snprintf(path, sizeof(path), "%s/%s.sig", dir, name);
    if (rc == KV_OK && !write_file(path, sig, len))
        rc = KV_ERR_IO;
    kv_string_free(pub);
    return rc;
}

static int do_check(kv_ctx *ctx, int argc, char **argv)
{
    const char *dir = argv[0];
    int regen = 0, bad = 0;

    for (int i = 1; i < argc; i++) {
        char name[256], *backend;
        kv_key *key = NULL;
        kv_rc rc;

        if (!strcmp(argv[i], "--regen")) {
            regen = 1;
            continue;
        }
        snprintf(name, sizeof(name), "%s", argv[i]);
        if ((backend = strchr(name, '=')))
            *backend++ = '\0';
        rc = kv_key_open(ctx, name, &key);
        if (rc == KV_OK)
            rc = sign_out(ctx, dir, name, key);
        if (rc == KV_OK) {
            say("signs %s", name);
        } else if (rc == KV_ERR_KEY_NOT_FOUND && !key) {
            if (!regen) {
                say("absent %s", name);
            } else if ((rc = kv_key_generate(ctx, name, KV_KEY_EC_P256, backend, &key)) !=
                           KV_OK ||
                       (rc = sign_out(ctx, dir, name, key)) != KV_OK) {
                say("broken %s: absent, and generating it again failed: %s", name,
                    kv_errmsg(ctx));
                bad++;
            } else {
                size_t len = 0;
                kv_rc crc = kv_key_cert_der(key, NULL, &len);
                if (crc != KV_ERR_KEY_NOT_FOUND) {
                    say("broken %s: generated again, it has a certificate already (%s: %s)",
                        name, kv_strerror(crc), kv_errmsg(ctx));
                    bad++;
                } else {
                    say("regen %s", name);
                }
            }
        } else {
            say("broken %s: %s (%s)", name, kv_errmsg(ctx), kv_strerror(rc));
            bad++;
        }
        kv_key_free(key);
    }
    return bad ? 1 : 0;
}

static int do_versions(kv_ctx *ctx, const char *name)
{
    kv_key_version_list *vl = NULL;
    kv_rc rc = kv_key_versions(ctx, name, &vl);

    if (rc != KV_OK)
        return fail(ctx, name, rc);
    say("current %u", vl->current);
    for (size_t i = 0; i < vl->count; i++)
        say("version %u %s", vl->versions[i].version,
            kv_version_state_name(vl->versions[i].state));
    kv_key_version_list_free(vl);
    return 0;
}

int main(int argc, char **argv)
{
    kv_ctx *ctx = NULL;
    const char *op;
    kv_rc rc;
    int ret = 2;

    if (argc < 4) {
        fprintf(stderr, "usage: crash-victim CONF generate|rotate|issue|destroy|sign|check|"
                        "versions ARGS...\n");
        return 2;
    }
    op = argv[2];
    if ((rc = kv_ctx_new(&ctx, argv[1])) != KV_OK) {
        say("error context: %s (%s)", ctx ? kv_errmsg(ctx) : "", kv_strerror(rc));
        kv_ctx_free(ctx);
        return 1;
    }
    if (!strcmp(op, "generate") || !strcmp(op, "rotate") || !strcmp(op, "destroy"))
        say("ready");
    if (!strcmp(op, "generate") && argc >= 6)
        ret = do_generate(ctx, argc - 3, argv + 3);
    else if (!strcmp(op, "rotate"))
        ret = do_rotate(ctx, argv[3], argc > 4 ? argv[4] : NULL);
    else if (!strcmp(op, "issue") && argc == 6)
        ret = do_issue(ctx, argv[3], argv[4], argv[5]);
    else if (!strcmp(op, "destroy"))
        ret = do_destroy(ctx, argc - 3, argv + 3);
    else if (!strcmp(op, "sign"))
        ret = do_sign(ctx, argv[3]);
    else if (!strcmp(op, "check"))
        ret = do_check(ctx, argc - 3, argv + 3);
    else if (!strcmp(op, "versions"))
        ret = do_versions(ctx, argv[3]);
    else
        fprintf(stderr, "crash-victim: unknown operation or arguments for '%s'\n", op);
    kv_ctx_free(ctx);
    return ret;
}
