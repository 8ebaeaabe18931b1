/*
 * check_audit.c - the audit log: records, sinks, the hash chain and its
 * seals, kv_audit_verify on damaged logs, threads and processes appending.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <time.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>
#include <check.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "internal.h"
#include "testutil.h"

#define DATA "known-signed-data-7f3a9c"   /* must never reach the log */
#define PASSPHRASE "test passphrase"       /* tu_config's passphrase */

static char log_path[700], conf_path[700];

/* syslog as the library calls it (the core archive is linked in, so these
 * take the place of libc's): the messages are kept here for the tests. */
static pthread_mutex_t sys_mu = PTHREAD_MUTEX_INITIALIZER;
static char sys_text[65536];
static size_t sys_len;

static void sys_keep(int pri, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void sys_keep(int pri, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&sys_mu);
    if (sys_len < sizeof(sys_text) - 1) {
        int n = snprintf(sys_text + sys_len, sizeof(sys_text) - sys_len, "<%d>", pri);
        if (n > 0 && (size_t)n < sizeof(sys_text) - sys_len)
            sys_len += (size_t)n;
        n = vsnprintf(sys_text + sys_len, sizeof(sys_text) - sys_len, fmt, ap);
        if (n > 0)
            sys_len += (size_t)n < sizeof(sys_text) - sys_len - 1 ? (size_t)n
                                                                  : sizeof(sys_text) - sys_len - 1;
        if (sys_len < sizeof(sys_text) - 1)
            sys_text[sys_len++] = '\n';
        sys_text[sys_len] = '\0';
    }
    pthread_mutex_unlock(&sys_mu);
}

void syslog(int pri, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    sys_keep(pri, fmt, ap);
    va_end(ap);
}

void __syslog_chk(int pri, int flag, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void __syslog_chk(int pri, int flag, const char *fmt, ...)
{
    va_list ap;

    (void)flag;
    va_start(ap, fmt);
    sys_keep(pri, fmt, ap);
    va_end(ap);
}

static kv_ctx *audit_ctx(const char *extra)
{
    char text[2048];
    kv_ctx *ctx = NULL;

    snprintf(log_path, sizeof(log_path), "%s/audit.log", tu_tmpdir());
    snprintf(text, sizeof(text), "[audit]\nfile = %s\n%s", log_path, extra ? extra : "");
    snprintf(conf_path, sizeof(conf_path), "%s", tu_config(tu_tmpdir(), text));
    ck_assert_msg(kv_ctx_new(&ctx, conf_path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

/* A context on the test's software store with other settings. */
static kv_ctx *conf_ctx(const char *keyvault, const char *passfile)
{
    char text[2048], path[800];
    kv_ctx *ctx = NULL;

    snprintf(text, sizeof(text), "[keyvault]\nbackends = software\n%s\n[software]\n"
             "store = %s/soft\npassphrase = file:%s\nkdf_iterations = 1000\n", keyvault,
             tu_tmpdir(), passfile);
    snprintf(path, sizeof(path), "%s/other.conf", tu_tmpdir());
    tu_write(path, text);
    ck_assert_msg(kv_ctx_new(&ctx, path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

static void sign_n(kv_ctx *ctx, kv_key *key, int n)
{
    unsigned char sig[256];

    for (int i = 0; i < n; i++) {
        size_t len = sizeof(sig);
        ck_assert_rc(ctx, kv_sign(key, KV_ALG_DEFAULT, 0, (const unsigned char *)DATA,
                                  strlen(DATA), sig, &len), KV_OK);
    }
}

/* A log of 16 records sealed every 4 by key "seal", its public key in *pub. */
static void make_log(unsigned char **pub, size_t *publen)
{
    kv_ctx *ctx = audit_ctx("seal_key = seal\nseal_every = 4\n");
    kv_key *seal = NULL, *k = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, "seal", KV_KEY_EC_P256, NULL, &seal), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    sign_n(ctx, k, 10);
    if (pub) {
        *publen = 0;
        ck_assert_rc(ctx, kv_key_public_der(seal, NULL, publen), KV_OK);
        *pub = malloc(*publen);
        ck_assert_rc(ctx, kv_key_public_der(seal, *pub, publen), KV_OK);
    }
    kv_key_free(k);
    kv_key_free(seal);
    kv_ctx_free(ctx);
}

/* The log's lines (without their '\n'); *n of them. */
static char **read_lines(size_t *n)
{
    FILE *f = fopen(log_path, "r");
    char **lines = NULL, *buf = NULL;
    size_t cap = 0;
    ssize_t r;

    ck_assert_ptr_nonnull(f);
    *n = 0;
    while ((r = getline(&buf, &cap, f)) > 0) {
        lines = realloc(lines, (*n + 1) * sizeof(*lines));
        if (buf[r - 1] == '\n')
            buf[r - 1] = '\0';
        lines[(*n)++] = strdup(buf);
    }
    free(buf);
    fclose(f);
    return lines;
}

static void write_lines(char **lines, size_t n)
{
    FILE *f = fopen(log_path, "w");

    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++)
        if (lines[i])
            fprintf(f, "%s\n", lines[i]);
    fclose(f);
}

static void free_lines(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

/* Give a changed record a hash that fits its content again (as a forger
 * would): SHA-256 of the line without its ,"hash":"..." member. */
static char *rehash(const char *line)
{
    const char *h = strstr(line, ",\"hash\":\"");
    unsigned char md[32];
    unsigned int mdlen;
    char *body, *out, hex[65];

    ck_assert_ptr_nonnull(h);
    body = malloc((size_t)(h - line) + 2);
    memcpy(body, line, (size_t)(h - line));
    strcpy(body + (h - line), "}");
    EVP_Digest(body, strlen(body), md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    body[h - line] = '\0';
    out = malloc(strlen(body) + 80);
    sprintf(out, "%s,\"hash\":\"%s\"}", body, hex);
    free(body);
    return out;
}

static kv_rc verify(kv_ctx *ctx, const unsigned char *pub, size_t publen, unsigned flags,
                    kv_audit_report *rep)
{
    return kv_audit_verify(ctx, log_path, pub, publen, flags, NULL, 0, rep);
}

/* Which line a record of op is on (1-based, the n-th such), or 0. */
static size_t line_of(char **lines, size_t n, const char *op, int nth)
{
    char want[64];

    snprintf(want, sizeof(want), "\"op\":\"%s\"", op);
    for (size_t i = 0; i < n; i++)
        if (strstr(lines[i], want) && --nth == 0)
            return i + 1;
    return 0;
}

/* A log others came to read (a chmod, a rotation tool's `create 0644`)
 * after the context opened: the writer leaves it alone and tells syslog. */
START_TEST(writer_leaves_a_log_others_may_read)
{
    kv_ctx *ctx = audit_ctx("flush = record\n");
    kv_key *k = NULL;
    size_t before = 0, after = 0;
    char **lines;

    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    sign_n(ctx, k, 1);
    /* (read_lines sets the count: it is read only after the call returns) */
    lines = read_lines(&before);
    free_lines(lines, before);
    ck_assert_int_eq(chmod(log_path, 0644), 0);
    sign_n(ctx, k, 1);
    lines = read_lines(&after);
    free_lines(lines, after);
    ck_assert_uint_eq(after, before);
    ck_assert_ptr_nonnull(strstr(sys_text, "will not write to a log others may read or write"));
    ck_assert_int_eq(chmod(log_path, 0600), 0);
    sign_n(ctx, k, 1);
    lines = read_lines(&after);
    free_lines(lines, after);
    ck_assert_uint_gt(after, before);
    kv_key_free(k);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(clean_log_verifies_and_holds_no_secret)
{
    unsigned char *pub = NULL;
    size_t publen = 0, n;
    kv_audit_report rep;
    kv_ctx *ctx;
    char **lines;

    make_log(&pub, &publen);
    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, verify(ctx, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    lines = read_lines(&n);
    /* generate x2, open of nothing else, 10 signs, seals at seq 4, 8, 12, and one to close */
    ck_assert_uint_eq(rep.records, n);
    ck_assert_uint_eq(rep.bad_line, 0);
    ck_assert_uint_ge(rep.seals, 3);
    ck_assert_uint_eq(rep.unsealed, 0);
    ck_assert_uint_eq(rep.last_seal_line, n);
    /* the seal key's own open and signatures made no record (no recursion) */
    for (size_t i = 0; i < n; i++) {
        ck_assert_ptr_null(strstr(lines[i], "\"key\":\"seal\",\"version\":1,\"backend\":\"software\",\"op\":\"sign\""));
        ck_assert_ptr_null(strstr(lines[i], "\"key\":\"seal\",\"version\":1,\"backend\":\"software\",\"op\":\"open\""));
    }
    ck_assert_uint_eq(line_of(lines, n, "sign", 10) > 0, 1);
    ck_assert_uint_eq(line_of(lines, n, "sign", 11), 0);
    free_lines(lines, n);
    /* neither the signed data nor its digest (the passphrases: the next test) */
    ck_assert_int_eq(tu_sh("grep -q '%s' '%s'", DATA, log_path), 1);
    ck_assert_int_eq(tu_sh("d=$(printf %%s '%s' | openssl dgst -sha256 -r | cut -c1-64); "
                           "! grep -q \"$d\" '%s'", DATA, log_path), 0);
    /* without a public key: the chain alone */
    ck_assert_rc(ctx, verify(ctx, NULL, 0, 0, &rep), KV_OK);
    free(pub);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(passphrases_of_failed_and_good_opens_stay_out_of_the_log)
{
    kv_ctx *ctx = audit_ctx("flush = record\n"), *bad = NULL;
    kv_key *k = NULL;
    char text[2048], path[800], wrong[800];

    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    kv_key_free(k);
    k = NULL;
    ck_assert_rc(ctx, kv_key_open(ctx, "k", &k), KV_OK);
    sign_n(ctx, k, 1);
    kv_key_free(k);
    k = NULL;
    /* the same store and log, a wrong passphrase */
    snprintf(wrong, sizeof(wrong), "%s/wrongpass", tu_tmpdir());
    tu_write(wrong, "zebra kettle 5d1e\n");
    snprintf(text, sizeof(text), "[keyvault]\nbackends = software\n[software]\nstore = %s/soft\n"
             "passphrase = file:%s\nkdf_iterations = 1000\n[audit]\nfile = %s\n"
             "flush = record\n", tu_tmpdir(), wrong, log_path);
    snprintf(path, sizeof(path), "%s/wrong.conf", tu_tmpdir());
    tu_write(path, text);
    ck_assert_msg(kv_ctx_new(&bad, path) == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    ck_assert_rc(bad, kv_key_open(bad, "k", &k), KV_ERR_AUTH_FAILED);
    kv_ctx_free(bad);
    kv_ctx_free(ctx);
    /* the log holds the failed open (so the grep below looks at one) ... */
    ck_assert_int_eq(tu_sh("grep -q '\"key\":\"k\",.*\"op\":\"open\",\"result\":\"auth-failed\"' '%s'",
                           log_path), 0);
    ck_assert_int_eq(tu_sh("grep -q '\"op\":\"open\",\"result\":\"ok\"' '%s'", log_path), 0);
    /* ... and neither passphrase (nor a word of the wrong one; the words are
     * not hex, so no hash matches by chance) */
    ck_assert_int_eq(tu_sh("grep -q -e '%s' -e 'zebra' -e 'kettle' '%s'", PASSPHRASE,
                           log_path), 1);
}
END_TEST

/* Damage the clean log with fn, then check where verify fails. */
static void damaged(void (*fn)(char **lines, size_t n, size_t *bad), kv_rc want_rc,
                    const char *want_msg, unsigned flags)
{
    unsigned char *pub = NULL;
    size_t publen = 0, n, bad = 0;
    kv_audit_report rep;
    kv_ctx *ctx;
    char **lines;

    make_log(&pub, &publen);
    lines = read_lines(&n);
    fn(lines, n, &bad);
    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, verify(ctx, pub, publen, flags, &rep), want_rc);
    ck_assert_msg(strstr(kv_errmsg(ctx), want_msg), "message: %s", kv_errmsg(ctx));
    ck_assert_msg(rep.bad_line == bad, "bad line %llu, expected %zu: %s",
                  (unsigned long long)rep.bad_line, bad, kv_errmsg(ctx));
    free_lines(lines, n);
    free(pub);
    kv_ctx_free(ctx);
}

static void do_edit(char **lines, size_t n, size_t *bad)
{
    size_t i = line_of(lines, n, "sign", 3) - 1;
    char *p = strstr(lines[i], "\"op\":\"sign\"");

    memcpy(p, "\"op\":\"ecdh\"", 11);
    write_lines(lines, n);
    *bad = i + 1;
}

static void do_edit_rehash(char **lines, size_t n, size_t *bad)
{
    size_t i = line_of(lines, n, "sign", 3) - 1;
    char *p = strstr(lines[i], "\"op\":\"sign\"");

    memcpy(p, "\"op\":\"ecdh\"", 11);
    p = rehash(lines[i]);
    free(lines[i]);
    lines[i] = p;
    write_lines(lines, n);
    *bad = i + 1; /* found at the next record, whose prev no longer matches */
}

static void do_delete(char **lines, size_t n, size_t *bad)
{
    size_t i = line_of(lines, n, "sign", 3) - 1;

    free(lines[i]);
    lines[i] = NULL;
    write_lines(lines, n);
    *bad = i + 1; /* the record after it now stands at its line */
}

static void do_delete_head(char **lines, size_t n, size_t *bad)
{
    free(lines[0]);
    lines[0] = NULL;
    write_lines(lines, n);
    *bad = 1;
}

static void do_reorder(char **lines, size_t n, size_t *bad)
{
    size_t i = line_of(lines, n, "sign", 3) - 1;
    char *t = lines[i];

    lines[i] = lines[i + 1];
    lines[i + 1] = t;
    write_lines(lines, n);
    *bad = i + 1;
}

static void do_truncate_inside(char **lines, size_t n, size_t *bad)
{
    write_lines(lines, n);
    /* cut the last record in the middle */
    ck_assert_int_eq(tu_sh("truncate -s -40 '%s'", log_path), 0);
    *bad = n;
}

static void do_truncate_records(char **lines, size_t n, size_t *bad)
{
    /* drop the closing seal and the record before it: the tail is unsealed */
    write_lines(lines, n - 2);
    *bad = line_of(lines, n, "seal", 3) + 1;
}

static void do_bad_seal(char **lines, size_t n, size_t *bad)
{
    size_t i = line_of(lines, n, "seal", 2) - 1;
    char *p = strstr(lines[i], "\"sig\":\"") + 10, *q;

    *p = *p == 'A' ? 'B' : 'A'; /* one base64 digit of the signature */
    q = rehash(lines[i]);
    free(lines[i]);
    lines[i] = q;
    /* and the next record chained on to the new hash, so only the seal is wrong */
    q = strstr(lines[i], ",\"hash\":\"") + 9;
    {
        char h[65], *pp;
        memcpy(h, q, 64);
        h[64] = '\0';
        pp = strstr(lines[i + 1], "\"prev\":\"") + 8;
        memcpy(pp, h, 64);
        pp = rehash(lines[i + 1]);
        free(lines[i + 1]);
        lines[i + 1] = pp;
    }
    write_lines(lines, n);
    *bad = i + 1;
}

START_TEST(edited_record_fails_at_it)
{
    damaged(do_edit, KV_ERR_CORRUPT, "(edited)", 0);
}
END_TEST

START_TEST(edited_and_rehashed_fails_at_it)
{
    damaged(do_edit_rehash, KV_ERR_CORRUPT, "replaced, with a hash that fits", 0);
}
END_TEST

START_TEST(deleted_record_fails_at_its_place)
{
    damaged(do_delete, KV_ERR_CORRUPT, "missing (deleted)", 0);
}
END_TEST

START_TEST(deleted_head_fails_at_line_1)
{
    damaged(do_delete_head, KV_ERR_CORRUPT, "records 1 to 1 are missing", 0);
}
END_TEST

START_TEST(reordered_records_fail_at_the_first)
{
    damaged(do_reorder, KV_ERR_CORRUPT, "(records reordered)", 0);
}
END_TEST

START_TEST(truncated_inside_a_record_fails_at_it)
{
    damaged(do_truncate_inside, KV_ERR_CORRUPT, "(truncated)", 0);
}
END_TEST

/* a writer killed inside its write: verify names the torn record apart
 * from tampering, with the seq its complete records verify up to, and
 * reports those records as verified */
START_TEST(torn_record_is_named_with_the_last_complete_seq)
{
    unsigned char *pub = NULL;
    size_t publen = 0, n, bad = 0;
    kv_audit_report rep;
    kv_ctx *ctx;
    char **lines, want[96];

    make_log(&pub, &publen);
    lines = read_lines(&n);
    do_truncate_inside(lines, n, &bad);
    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, verify(ctx, NULL, 0, 0, &rep), KV_ERR_CORRUPT);
    snprintf(want, sizeof(want), "ends in a torn record after seq %zu: a write was cut", n - 1);
    ck_assert_msg(strstr(kv_errmsg(ctx), want), "message: %s", kv_errmsg(ctx));
    ck_assert_uint_eq(rep.bad_line, n);
    ck_assert_uint_eq(rep.records, n - 1);
    free_lines(lines, n);
    free(pub);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(truncated_records_fail_when_sealed_is_required)
{
    damaged(do_truncate_records, KV_ERR_CORRUPT, "does not end with a seal",
            KV_AUDIT_VERIFY_SEALED);
}
END_TEST

START_TEST(bad_seal_fails_at_it)
{
    damaged(do_bad_seal, KV_ERR_BAD_SIGNATURE, "does not verify", 0);
}
END_TEST

START_TEST(log_sealed_by_another_key_fails)
{
    kv_ctx *ctx;
    kv_key *other = NULL;
    unsigned char pub[200];
    size_t publen = sizeof(pub), n;
    kv_audit_report rep;
    char **lines;

    make_log(NULL, NULL);
    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, kv_key_generate(ctx, "other", KV_KEY_EC_P256, NULL, &other), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(other, pub, &publen), KV_OK);
    ck_assert_rc(ctx, verify(ctx, pub, publen, 0, &rep), KV_ERR_BAD_SIGNATURE);
    ck_assert_msg(strstr(kv_errmsg(ctx), "sealed by another key"), "%s", kv_errmsg(ctx));
    lines = read_lines(&n);
    ck_assert_uint_eq(rep.bad_line, line_of(lines, n, "seal", 1));
    /* a forger who copies the key's fingerprint still cannot sign */
    {
        size_t i = line_of(lines, n, "seal", 1) - 1;
        unsigned char *spki = NULL;
        unsigned char md[32];
        unsigned int mdlen;
        char hex[65], *p = strstr(lines[i], "\"key_sha256\":\"") + 14, *q;
        const unsigned char *pp = pub;
        EVP_PKEY *pk = d2i_PUBKEY(NULL, &pp, (long)publen);
        int len = i2d_PUBKEY(pk, &spki);
        EVP_Digest(spki, (size_t)len, md, &mdlen, EVP_sha256(), NULL);
        for (int b = 0; b < 32; b++)
            sprintf(hex + 2 * b, "%02x", md[b]);
        memcpy(p, hex, 64);
        q = rehash(lines[i]);
        free(lines[i]);
        lines[i] = q;
        write_lines(lines, i + 1);
        ck_assert_rc(ctx, verify(ctx, pub, publen, 0, &rep), KV_ERR_BAD_SIGNATURE);
        ck_assert_msg(strstr(kv_errmsg(ctx), "does not verify"), "%s", kv_errmsg(ctx));
        ck_assert_uint_eq(rep.bad_line, i + 1);
        OPENSSL_free(spki);
        EVP_PKEY_free(pk);
    }
    free_lines(lines, n);
    kv_key_free(other);
    kv_ctx_free(ctx);
}
END_TEST

/* The last seal of the clean log as an anchor; the log cut back to its
 * third seal (an earlier one). */
static kv_audit_anchor cut_to_earlier_seal(kv_ctx *ctx, const unsigned char *pub, size_t publen,
                                           size_t *cut)
{
    kv_audit_anchor an;
    kv_audit_report rep;
    size_t n;
    char **lines = read_lines(&n), want[100];

    ck_assert_rc(ctx, verify(ctx, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    /* the report's last seal is the file's last line */
    ck_assert_uint_eq(rep.last_seal_line, n);
    snprintf(want, sizeof(want), "\"seq\":%llu,", (unsigned long long)rep.last_seal_seq);
    ck_assert_ptr_nonnull(strstr(lines[n - 1], want));
    snprintf(want, sizeof(want), ",\"hash\":\"%s\"}", rep.last_seal_hash);
    ck_assert_ptr_nonnull(strstr(lines[n - 1], want));
    an.seq = rep.last_seal_seq;
    memcpy(an.hash, rep.last_seal_hash, sizeof(an.hash));
    *cut = line_of(lines, n, "seal", 3);
    ck_assert_uint_lt(*cut, n);
    write_lines(lines, *cut);
    free_lines(lines, n);
    return an;
}

/* A sealed log emptied: under its public key (or --sealed) that is no
 * proof, as a log of records without a seal is none. The audit fuzz target
 * found it accepted (tests/fuzz/regress/audit/empty-log-under-a-key). */
START_TEST(an_emptied_log_fails_under_its_key)
{
    unsigned char *pub = NULL;
    size_t publen = 0;
    kv_audit_report rep;
    kv_ctx *ctx;
    FILE *f;

    make_log(&pub, &publen);
    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, verify(ctx, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    ck_assert_ptr_nonnull(f = fopen(log_path, "w"));
    fclose(f);
    memset(&rep, 0, sizeof(rep));
    ck_assert_rc(ctx, verify(ctx, pub, publen, 0, &rep), KV_ERR_BAD_SIGNATURE);
    ck_assert_msg(strstr(kv_errmsg(ctx), "holds no record: no seal to check the key against"),
                  "%s", kv_errmsg(ctx));
    ck_assert_uint_eq(rep.records, 0);
    ck_assert_uint_eq(rep.bad_line, 1);
    ck_assert_rc(ctx, verify(ctx, NULL, 0, KV_AUDIT_VERIFY_SEALED, &rep), KV_ERR_CORRUPT);
    ck_assert_msg(strstr(kv_errmsg(ctx), "holds no record: the log does not end with a seal"),
                  "%s", kv_errmsg(ctx));
    /* the chain alone: an empty log is a log nothing was written to */
    ck_assert_rc(ctx, verify(ctx, NULL, 0, 0, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 0);
    ck_assert_uint_eq(rep.bad_line, 0);
    free(pub);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(cut_at_an_earlier_seal_fails_with_the_anchor)
{
    unsigned char *pub = NULL;
    size_t publen = 0, cut;
    kv_audit_report rep;
    kv_audit_anchor an, bad;
    kv_ctx *ctx;

    make_log(&pub, &publen);
    ctx = tu_ctx(NULL);
    an = cut_to_earlier_seal(ctx, pub, publen, &cut);
    /* the limit: without an anchor, a log cut at a seal is a shorter log */
    ck_assert_rc(ctx, verify(ctx, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, pub, publen, KV_AUDIT_VERIFY_SEALED, &an,
                                      1, &rep), KV_ERR_CORRUPT);
    ck_assert_msg(strstr(kv_errmsg(ctx), "before the anchored seal"), "%s", kv_errmsg(ctx));
    ck_assert_uint_eq(rep.bad_line, cut + 1);
    /* the same without a key: the anchor alone catches it */
    ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, NULL, 0, 0, &an, 1, &rep), KV_ERR_CORRUPT);
    /* an anchor that is not one */
    bad = an;
    bad.hash[10] = 'G';
    ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, pub, publen, 0, &bad, 1, &rep),
                 KV_ERR_INVALID_ARG);
    free(pub);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(cut_then_written_fails_with_the_anchor)
{
    unsigned char *pub = NULL;
    size_t publen = 0, cut, n;
    kv_audit_report rep;
    kv_audit_anchor an, early;
    kv_ctx *ctx, *w;
    kv_key *k = NULL;
    char **lines;

    make_log(&pub, &publen);
    ctx = tu_ctx(NULL);
    an = cut_to_earlier_seal(ctx, pub, publen, &cut);
    ck_assert_rc(ctx, verify(ctx, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    early.seq = rep.last_seal_seq;
    memcpy(early.hash, rep.last_seal_hash, sizeof(early.hash));
    /* a writer goes on from the cut: the chain is whole again, sealed by the right key */
    w = audit_ctx("seal_key = seal\nseal_every = 4\n");
    ck_assert_rc(w, kv_key_open(w, "k", &k), KV_OK);
    sign_n(w, k, 6);
    kv_key_free(k);
    kv_ctx_free(w);
    lines = read_lines(&n);
    ck_assert_uint_gt(n, cut + 5);
    free_lines(lines, n);
    ck_assert_rc(ctx, verify(ctx, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    ck_assert_uint_ge(rep.last_seal_seq, an.seq);
    ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, pub, publen, KV_AUDIT_VERIFY_SEALED, &an,
                                      1, &rep), KV_ERR_CORRUPT);
    ck_assert_msg(strstr(kv_errmsg(ctx), "the log was rewritten from before it"), "%s",
                  kv_errmsg(ctx));
    ck_assert_uint_eq(rep.bad_line, an.seq); /* seq n is at line n in a file written whole */
    /* the earlier seal, which the cut kept, is still there: both anchors, first one fails */
    {
        kv_audit_anchor both[2] = { early, an };
        ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, pub, publen, 0, both, 2, &rep),
                     KV_ERR_CORRUPT);
        ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, pub, publen, 0, both, 1, &rep),
                     KV_OK);
    }
    free(pub);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(every_seal_goes_to_syslog_as_an_anchor)
{
    size_t n, seals = 0;
    char **lines, want[1024];

    sys_len = 0;
    sys_text[0] = '\0';
    make_log(NULL, NULL);
    lines = read_lines(&n);
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(lines[i], 0, NULL);
        if (!strcmp(json_string_value(json_object_get(j, "op")), "seal")) {
            seals++;
            snprintf(want, sizeof(want), "<%d>libkeyvault audit: seal seq %lld hash %s file %s\n",
                     LOG_AUTHPRIV | LOG_INFO,
                     (long long)json_integer_value(json_object_get(j, "seq")),
                     json_string_value(json_object_get(j, "hash")), log_path);
            ck_assert_msg(strstr(sys_text, want), "not in syslog: %s", want);
        }
        json_decref(j);
    }
    ck_assert_uint_ge(seals, 4);
    free_lines(lines, n);
}
END_TEST

/* ---- threads and processes ------------------------------------------------- */

struct worker {
    kv_ctx *ctx;
    kv_key *key;
};

static void *sign_thread(void *p)
{
    struct worker *w = p;

    sign_n(w->ctx, w->key, 200);
    return NULL;
}

static size_t count_op(const char *op)
{
    size_t n, c = 0;
    char **lines = read_lines(&n), want[64];

    snprintf(want, sizeof(want), "\"op\":\"%s\"", op);
    for (size_t i = 0; i < n; i++)
        c += strstr(lines[i], want) != NULL;
    free_lines(lines, n);
    return c;
}

START_TEST(threads_and_processes_keep_the_chain)
{
    kv_ctx *ctx = audit_ctx("seal_key = seal\nseal_every = 50\nflush_ms = 5\n");
    kv_key *seal = NULL, *k = NULL;
    pthread_t th[8];
    struct worker w;
    pid_t kids[2];
    kv_audit_report rep;
    unsigned char pub[200];
    size_t publen = sizeof(pub);

    ck_assert_rc(ctx, kv_key_generate(ctx, "seal", KV_KEY_EC_P256, NULL, &seal), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(seal, pub, &publen), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    w.ctx = ctx;
    w.key = k;
    /* two processes: one with a context of its own, one going on with the
     * inherited one (a fork in the middle of a buffered run) */
    for (int p = 0; p < 2; p++) {
        kids[p] = fork();
        ck_assert_int_ge(kids[p], 0);
        if (kids[p] == 0) {
            kv_ctx *c = ctx;
            kv_key *kk = k;
            if (p == 0 && (kv_ctx_new(&c, conf_path) != KV_OK ||
                           kv_key_open(c, "k", &kk) != KV_OK))
                _exit(1);
            for (int t = 0; t < 4; t++) {
                struct worker cw = { c, kk };
                sign_thread(&cw);
            }
            kv_key_free(kk);
            kv_ctx_free(c);
            _exit(0);
        }
    }
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, sign_thread, &w);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int p = 0; p < 2; p++) {
        int st;
        ck_assert_int_eq(waitpid(kids[p], &st, 0), kids[p]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed", p);
    }
    kv_key_free(k);
    kv_key_free(seal);
    kv_ctx_free(ctx);
    ctx = tu_ctx(NULL);
    ck_assert_rc(ctx, verify(ctx, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    /* every record is there: 8 threads and 2 processes of 4 x 200 */
    ck_assert_uint_eq(count_op("sign"), 8 * 200 + 2 * 4 * 200);
    ck_assert_uint_ge(rep.seals, (8 * 200 + 2 * 4 * 200) / 50);
    kv_ctx_free(ctx);
}
END_TEST

/* ---- a lock held elsewhere, a fork meanwhile ---------------------------------- */

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The bytes this process has allocated (every arena, mmapped blocks too). */
static size_t heap_bytes(void)
{
    struct mallinfo2 m = mallinfo2();

    return m.uordblks + m.hblkhd;
}

/* Whether heap_bytes sees allocations: not under valgrind, whose malloc
 * mallinfo2 does not know. There its leak check of each child (its exit
 * status) is the measure, and the byte counts are not compared. */
static int heap_counted(void)
{
    size_t before = heap_bytes();
    void *p = malloc(1 << 16);
    int seen = heap_bytes() >= before + (1 << 16);

    free(p);
    return seen;
}

/* The log's lock, held as another process would (its own open file). */
static int hold_log_lock(void)
{
    int fd = open(log_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX), 0);
    return fd;
}

/* A child forked while the writer waits for the log's lock with a batch
 * to write (1024 records wake it) finds the batch and frees it: before the
 * fix the writer took it first, and in the child nothing could reach it
 * (a definite leak for valgrind). fork() itself does not wait for that
 * lock; the parent writes every record once the lock is free. */
START_TEST(a_fork_while_the_writer_waits_leaves_the_child_its_batch)
{
    kv_ctx *ctx = audit_ctx("flush_ms = 60000\n");
    char name[200];
    size_t before, queued;
    double t0, took;
    pid_t pid;
    int fd, st;

    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    fd = hold_log_lock();
    before = heap_bytes();
    for (int i = 0; i < 1024; i++)
        kv_audit_event(ctx, KV_AUDIT_SIGN, name, 1, "software", KV_OK, name);
    queued = heap_bytes() - before;
    usleep(300 * 1000);
    t0 = now_s();
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        size_t held = heap_bytes();
        kv_ctx_free(ctx);
        _exit(!heap_counted() || heap_bytes() + queued <= held ? 0 : 1);
    }
    took = now_s() - t0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "the child could not free the %zu bytes of records queued before the fork",
                  queued);
    ck_assert_msg(took < 5, "fork() waited %.1f s", took); /* the bug: 10 s */
    ck_assert_int_eq(flock(fd, LOCK_UN), 0);
    close(fd);
    kv_ctx_free(ctx);
    ck_assert_uint_eq(count_op("sign"), 1024);
}
END_TEST

struct waiting_caller {
    kv_ctx *ctx;
    const char *text;
    pthread_barrier_t ready, go;
    atomic_int delivered;     /* records the callback saw: their callers are past it */
};

static void count_delivered(void *arg, const kv_audit_record *r)
{
    struct waiting_caller *w = arg;

    (void)r;
    atomic_fetch_add(&w->delivered, 1);
}

static void *record_one(void *p)
{
    struct waiting_caller *w = p;

    /* what a thread allocates once (malloc's cache, the error slot) is
     * counted before the records */
    free(malloc(1));
    (void)kv_errmsg(w->ctx);
    pthread_barrier_wait(&w->ready);
    pthread_barrier_wait(&w->go);
    kv_audit_event(w->ctx, KV_AUDIT_SIGN, w->text, 1, "software", KV_OK, w->text);
    return NULL;
}

/* The bytes a child forked now frees with the context, and how long
 * fork() took. */
static size_t child_frees(kv_ctx *ctx, double *took)
{
    size_t freed = 0;
    double t0 = now_s();
    int p[2], st;
    pid_t pid;

    ck_assert_int_eq(pipe(p), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        size_t held = heap_bytes();
        kv_ctx_free(ctx);
        freed = held - heap_bytes();
        _exit(write(p[1], &freed, sizeof(freed)) == (ssize_t)sizeof(freed) ? 0 : 1);
    }
    *took = now_s() - t0;
    close(p[1]);
    ck_assert_int_eq(read(p[0], &freed, sizeof(freed)), (ssize_t)sizeof(freed));
    close(p[0]);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status 0x%x", st);
    return freed;
}

/* flush = record: callers wait in their own threads to write their own
 * records, the log locked by another process. A child forked meanwhile
 * frees each of those records with the context: at least their two
 * 256-byte texts each more than a child forked before they came (before
 * the fix only each caller's stack held them: a definite leak in the
 * child). fork() does not wait for them. */
START_TEST(a_fork_while_callers_wait_leaves_the_child_their_records)
{
    enum { CALLERS = 64 };
    kv_ctx *ctx = audit_ctx("flush = record\n");
    struct waiting_caller w;
    pthread_t th[CALLERS];
    char text[300];
    size_t alone, with_callers;
    double took;
    int fd;

    memset(text, 'w', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    w.ctx = ctx;
    w.text = text;
    atomic_init(&w.delivered, 0);
    ck_assert_rc(ctx, kv_audit_set_callback(ctx, count_delivered, &w), KV_OK);
    fd = hold_log_lock();
    pthread_barrier_init(&w.ready, NULL, CALLERS + 1);
    pthread_barrier_init(&w.go, NULL, CALLERS + 1);
    for (int i = 0; i < CALLERS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, record_one, &w), 0);
    pthread_barrier_wait(&w.ready);
    alone = child_frees(ctx, &took);
    pthread_barrier_wait(&w.go);
    /* every caller past the callback, then up to 5 s (well within the 10 s
     * they wait for the log's lock) for the last of them to put its record
     * on the list: a loaded machine may take more than a moment, and a
     * child that cannot free the records never frees enough */
    while (atomic_load(&w.delivered) < CALLERS)
        usleep(1000);
    double t_end = now_s() + 5;
    do {
        usleep(50 * 1000);
        with_callers = child_frees(ctx, &took);
        ck_assert_msg(took < 5, "fork() waited %.1f s", took);
    } while (heap_counted() && with_callers < alone + CALLERS * 2 * 256 && now_s() < t_end);
    ck_assert_msg(!heap_counted() || with_callers >= alone + CALLERS * 2 * 256,
                  "a child freed %zu bytes with %d callers waiting, %zu without", with_callers,
                  CALLERS, alone);
    ck_assert_int_eq(flock(fd, LOCK_UN), 0);
    close(fd);
    for (int i = 0; i < CALLERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&w.ready);
    pthread_barrier_destroy(&w.go);
    kv_ctx_free(ctx);
}
END_TEST

struct timed_signer {
    kv_key *key;
    kv_rc rc;
    double took;
};

static void *timed_sign(void *p)
{
    struct timed_signer *s = p;
    unsigned char sig[256];
    size_t len = sizeof(sig);
    double t0 = now_s();

    s->rc = kv_sign(s->key, KV_ALG_DEFAULT, 0, (const unsigned char *)DATA, strlen(DATA), sig,
                    &len);
    s->took = now_s() - t0;
    return NULL;
}

/* flush = record, the log locked by another process: a sign whose record
 * waits for that lock waits its 10 s once; a sign in another thread
 * meanwhile waits as long from its own start, not also for the first one
 * (before the fix: about 19 s, the first writer holding its mutex through
 * its wait). Both records are lost, and said so; then signs are written. */
START_TEST(a_lock_held_elsewhere_bounds_each_callers_wait)
{
    kv_ctx *ctx = audit_ctx("flush = record\n");
    kv_key *k = NULL;
    struct timed_signer first = { NULL, KV_OK, 0 }, second = { NULL, KV_OK, 0 };
    pthread_t th;
    int fd;

    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    first.key = second.key = k;
    fd = hold_log_lock();
    sys_len = 0;
    sys_text[0] = '\0';
    ck_assert_int_eq(pthread_create(&th, NULL, timed_sign, &first), 0);
    usleep(1000 * 1000);
    timed_sign(&second);
    pthread_join(th, NULL);
    ck_assert_int_eq(first.rc, KV_OK);
    ck_assert_int_eq(second.rc, KV_OK);
    /* each waits the 10 s bound; the bug made the second wait 19.5 s */
    ck_assert_msg(first.took < 15, "the first sign took %.1f s", first.took);
    ck_assert_msg(second.took < 15, "the second sign took %.1f s", second.took);
    ck_assert_ptr_nonnull(strstr(sys_text, "(1 records lost"));
    ck_assert_int_eq(flock(fd, LOCK_UN), 0);
    close(fd);
    sign_n(ctx, k, 1);
    ck_assert_uint_eq(count_op("sign"), 1);
    kv_key_free(k);
    kv_ctx_free(ctx);
}
END_TEST

/* Buffered, the log locked by another process: the writer thread waits
 * for the lock; a sign meanwhile returns at once, its record queued. */
START_TEST(a_lock_held_elsewhere_does_not_hold_up_buffered_signs)
{
    kv_ctx *ctx = audit_ctx("flush_ms = 5\n");
    kv_key *k = NULL;
    struct timed_signer s = { NULL, KV_OK, 0 };
    int fd;

    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    usleep(100 * 1000);
    fd = hold_log_lock();
    sign_n(ctx, k, 1);
    usleep(200 * 1000);
    s.key = k;
    timed_sign(&s);
    ck_assert_int_eq(s.rc, KV_OK);
    ck_assert_msg(s.took < 5, "a sign took %.1f s while the writer waited (10 s: it did)",
                  s.took);
    ck_assert_int_eq(flock(fd, LOCK_UN), 0);
    close(fd);
    kv_key_free(k);
    kv_ctx_free(ctx);
    ck_assert_uint_eq(count_op("sign"), 2);
}
END_TEST

/* ---- sinks, results, settings ------------------------------------------------ */

struct seen {
    int n;
    char op[32], result[32], key[80], message[256];
    kv_rc rc;
    long pid;
};

static void on_record(void *arg, const kv_audit_record *r)
{
    struct seen *s = arg;

    s->n++;
    snprintf(s->op, sizeof(s->op), "%s", r->op);
    snprintf(s->result, sizeof(s->result), "%s", r->result);
    snprintf(s->key, sizeof(s->key), "%s", r->key ? r->key : "(none)");
    snprintf(s->message, sizeof(s->message), "%s", r->message ? r->message : "");
    s->rc = r->rc;
    s->pid = r->pid;
    ck_assert_uint_eq(r->size, sizeof(*r));
    ck_assert_ptr_nonnull(strstr(r->exe, "check_audit"));
    ck_assert_int_eq(strlen(r->time), 27);
}

START_TEST(callback_sees_uses_denials_and_auth_failures)
{
    struct seen s = { 0 };
    kv_ctx *ctx = tu_ctx(NULL), *hw = NULL, *bad = NULL;
    kv_key *k = NULL;
    char pass[700];

    ck_assert_rc(ctx, kv_audit_set_callback(ctx, on_record, &s), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    ck_assert_int_eq(s.n, 1);
    ck_assert_str_eq(s.op, "generate");
    ck_assert_str_eq(s.result, "ok");
    sign_n(ctx, k, 1);
    ck_assert_str_eq(s.op, "sign");
    ck_assert_str_eq(s.key, "k");
    ck_assert_int_eq(s.pid, getpid());
    /* a denial by a rule of the context */
    snprintf(pass, sizeof(pass), "%s/pass", tu_tmpdir());
    hw = conf_ctx("require_hardware = true", pass);
    ck_assert_rc(hw, kv_audit_set_callback(hw, on_record, &s), KV_OK);
    kv_key_free(k);
    ck_assert_rc(hw, kv_key_open(hw, "k", &k), KV_ERR_HARDWARE_REQUIRED);
    ck_assert_str_eq(s.op, "open");
    ck_assert_str_eq(s.result, "denied");
    ck_assert_ptr_nonnull(strstr(s.message, "require_hardware"));
    /* a policy denial as the core reports it (KV_ERR_POLICY) */
    kv_audit_event(hw, KV_AUDIT_ECDH, "k", 2, "software", KV_ERR_POLICY, NULL);
    ck_assert_str_eq(s.result, "denied");
    ck_assert_int_eq(s.rc, KV_ERR_POLICY);
    kv_ctx_free(hw);
    /* a wrong passphrase */
    snprintf(pass, sizeof(pass), "%s/wrongpass", tu_tmpdir());
    tu_write(pass, "not the passphrase\n");
    bad = conf_ctx("", pass);
    ck_assert_rc(bad, kv_audit_set_callback(bad, on_record, &s), KV_OK);
    ck_assert_rc(bad, kv_key_open(bad, "k", &k), KV_ERR_AUTH_FAILED);
    ck_assert_str_eq(s.result, "auth-failed");
    ck_assert_str_eq(s.key, "k");
    ck_assert_ptr_null(strstr(s.message, "not the passphrase"));
    kv_ctx_free(bad);
    /* off again */
    ck_assert_rc(ctx, kv_audit_set_callback(ctx, NULL, NULL), KV_OK);
    s.n = 0;
    ck_assert_rc(ctx, kv_key_open(ctx, "k", &k), KV_OK);
    ck_assert_int_eq(s.n, 0);
    kv_key_free(k);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(file_records_failures_with_their_result)
{
    kv_ctx *ctx = audit_ctx("flush = record\n");
    kv_key *k = NULL;
    kv_audit_report rep;
    size_t n;
    char **lines;

    ck_assert_rc(ctx, kv_key_open(ctx, "nosuchkey", &k), KV_ERR_KEY_NOT_FOUND);
    kv_audit_event(ctx, KV_AUDIT_SIGN, "gw", 2, "pkcs11", KV_ERR_POLICY, NULL);
    kv_audit_event(ctx, KV_AUDIT_OPEN, "gw", 1, "pkcs11", KV_ERR_PIN_LOCKED, NULL);
    /* text that needs escaping, and bytes that are not UTF-8 */
    kv_audit_event(ctx, KV_AUDIT_ISSUE, "ca \"x\"\\", 1, NULL, KV_OK,
                   "\xc3\xa9t\xc3\xa9 \"q\" \\ \t\n/\x01");
    kv_audit_event(ctx, KV_AUDIT_ISSUE, "bad\xff", 1, NULL, KV_OK, NULL);
    /* flush = record: in the file before the call returns */
    lines = read_lines(&n);
    ck_assert_uint_eq(n, 5);
    /* each line is what jansson writes for it, and the escaped text reads back */
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(lines[i], JSON_REJECT_DUPLICATES, NULL);
        char *again = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        ck_assert_str_eq(again, lines[i]);
        if (i == 3) {
            ck_assert_str_eq(json_string_value(json_object_get(j, "key")), "ca \"x\"\\");
            ck_assert_str_eq(json_string_value(json_object_get(j, "detail")),
                             "\xc3\xa9t\xc3\xa9 \"q\" \\ \t\n/\x01");
        }
        if (i == 4)
            ck_assert_str_eq(json_string_value(json_object_get(j, "key")), "(not UTF-8)");
        free(again);
        json_decref(j);
    }
    ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, NULL, 0, 0, NULL, 0, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 5);
    ck_assert_ptr_nonnull(strstr(lines[0], "\"key\":\"nosuchkey\""));
    ck_assert_ptr_nonnull(strstr(lines[0], "\"result\":\"error\",\"error\":3,\"message\":"));
    ck_assert_ptr_nonnull(strstr(lines[1], "\"result\":\"denied\",\"error\":25"));
    ck_assert_ptr_nonnull(strstr(lines[2], "\"result\":\"auth-failed\",\"error\":23"));
    free_lines(lines, n);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(buffered_records_arrive_within_flush_ms)
{
    /* (syslog too: the record's other form is made; where it goes is the system's) */
    kv_ctx *ctx = audit_ctx("flush_ms = 50\nsyslog = true\n");
    kv_key *k = NULL;
    size_t n;
    char **lines;

    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    /* the flusher writes it without a flush or close from us: looked for
     * every 50 ms for up to 20 s (a loaded machine may not run the flusher
     * thread within 50 ms; a buffer that is never flushed fails) */
    lines = read_lines(&n);
    for (int i = 0; i < 400 && n == 0; i++) {
        free_lines(lines, n);
        usleep(50 * 1000);
        lines = read_lines(&n);
    }
    ck_assert_uint_eq(n, 1);
    free_lines(lines, n);
    kv_key_free(k);
    kv_ctx_free(ctx);
}
END_TEST

START_TEST(torn_tail_is_cut_and_rotation_starts_a_chain)
{
    kv_ctx *ctx = audit_ctx("flush = record\n"), *v = tu_ctx(NULL);
    kv_key *k = NULL;
    kv_audit_report rep;
    char moved[800];

    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    /* a writer that died inside its write */
    ck_assert_int_eq(tu_sh("printf '{\"time\":\"2026' >> '%s'", log_path), 0);
    ck_assert_rc(v, verify(v, NULL, 0, 0, &rep), KV_ERR_CORRUPT);
    sign_n(ctx, k, 2);
    ck_assert_rc(v, verify(v, NULL, 0, 0, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 3);
    /* a torn write longer than the first look back (4 KiB) */
    ck_assert_int_eq(tu_sh("head -c 5000 /dev/zero | tr '\\0' x >> '%s'", log_path), 0);
    sign_n(ctx, k, 1);
    ck_assert_rc(v, verify(v, NULL, 0, 0, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 4);
    /* rotated away: the next record starts a new file and chain */
    snprintf(moved, sizeof(moved), "%s.1", log_path);
    ck_assert_int_eq(rename(log_path, moved), 0);
    sign_n(ctx, k, 1);
    ck_assert_rc(v, verify(v, NULL, 0, 0, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 1);
    ck_assert_rc(v, kv_audit_verify(v, moved, NULL, 0, 0, NULL, 0, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 4);
    kv_key_free(k);
    kv_ctx_free(ctx);
    kv_ctx_free(v);
}
END_TEST

START_TEST(rotated_file_gets_its_closing_seal)
{
    kv_ctx *ctx = audit_ctx("seal_key = seal\nseal_every = 100\nflush = record\n"),
           *v = tu_ctx(NULL);
    kv_key *seal = NULL, *k = NULL;
    unsigned char pub[200];
    size_t publen = sizeof(pub);
    kv_audit_report rep;
    char moved[800];

    ck_assert_rc(ctx, kv_key_generate(ctx, "seal", KV_KEY_EC_P256, NULL, &seal), KV_OK);
    ck_assert_rc(ctx, kv_key_public_der(seal, pub, &publen), KV_OK);
    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    sign_n(ctx, k, 3);
    snprintf(moved, sizeof(moved), "%s.1", log_path);
    ck_assert_int_eq(rename(log_path, moved), 0);
    sign_n(ctx, k, 1);
    /* the old file ends with a seal made when the writer moved on */
    ck_assert_rc(v, kv_audit_verify(v, moved, pub, publen, KV_AUDIT_VERIFY_SEALED, NULL, 0,
                                    &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 6);
    ck_assert_uint_eq(rep.seals, 1);
    ck_assert_uint_eq(rep.last_seal_line, 6);
    /* the anchor names the file by the name it has now */
    {
        char want[1024];
        snprintf(want, sizeof(want), "seal seq 6 hash %s file %s\n", rep.last_seal_hash, moved);
        ck_assert_msg(strstr(sys_text, want), "not in syslog: %s", want);
    }
    kv_key_free(k);
    kv_key_free(seal);
    kv_ctx_free(ctx);
    /* and the new one, with its own chain and closing seal */
    ck_assert_rc(v, verify(v, pub, publen, KV_AUDIT_VERIFY_SEALED, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 2);
    kv_ctx_free(v);
}
END_TEST

START_TEST(hostile_lines_are_named)
{
    kv_ctx *ctx = audit_ctx("flush = record\n");
    kv_audit_report rep;
    char *big = malloc(40001);

    memset(big, 'x', 40000);
    big[40000] = '\0';
    kv_audit_event(ctx, KV_AUDIT_SIGN, "gw", 1, "software", KV_OK, NULL);
    {
        FILE *f = fopen(log_path, "a");
        fprintf(f, "%s\n", big);
        fclose(f);
    }
    ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, NULL, 0, 0, NULL, 0, &rep), KV_ERR_CORRUPT);
    ck_assert_uint_eq(rep.bad_line, 2);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "longer than"));
    /* a NUL inside a record, and text that is not JSON */
    ck_assert_int_eq(tu_sh("printf '{\"a\":\\000}\\n' > '%s'", log_path), 0);
    ck_assert_rc(ctx, kv_audit_verify(ctx, log_path, NULL, 0, 0, NULL, 0, &rep), KV_ERR_CORRUPT);
    ck_assert_uint_eq(rep.bad_line, 1);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(ctx), "not an audit record"));
    /* not a regular file: refused at once, never waited on */
    ck_assert_int_eq(tu_sh("mkfifo '%s.fifo'", log_path), 0);
    {
        char fifo[800];
        snprintf(fifo, sizeof(fifo), "%s.fifo", log_path);
        ck_assert_rc(ctx, kv_audit_verify(ctx, fifo, NULL, 0, 0, NULL, 0, &rep), KV_ERR_BAD_INPUT);
    }
    free(big);
    kv_ctx_free(ctx);
}
END_TEST

/* In the copy of this program with a long executable path: three records
 * in one batch, the middle one (its detail 256 control characters, each
 * written as 6) too long for a line. */
static int long_exe_child(const char *conf)
{
    char detail[257];
    kv_ctx *ctx = NULL;

    memset(detail, 1, 256);
    detail[256] = '\0';
    if (kv_ctx_new(&ctx, conf) != KV_OK)
        return 2;
    kv_audit_event(ctx, KV_AUDIT_SIGN, "a", 1, "software", KV_OK, NULL);
    kv_audit_event(ctx, KV_AUDIT_ISSUE, "b", 1, "software", KV_OK, detail);
    kv_audit_event(ctx, KV_AUDIT_SIGN, "c", 1, "software", KV_OK, NULL);
    kv_ctx_free(ctx);
    return strstr(sys_text, "libkeyvault audit: a issue record longer than 16384 bytes dropped")
               ? 0 : (fprintf(stderr, "syslog: %s\n", sys_text), 3);
}

START_TEST(a_record_too_long_is_dropped_alone)
{
    kv_ctx *ctx = audit_ctx("flush_ms = 60000\n"), *v;
    char path[4096], comp[251], buf[65536];
    kv_audit_report rep;
    size_t n;
    ssize_t r;
    int in, out, st;
    pid_t pid;
    char **lines;

    kv_ctx_free(ctx);
    /* the copy's path: 10 directories of 250 control characters (each
     * escaped as \u0001 in the record's exe), so that an ordinary record
     * stays under 16 KiB and one with a long detail does not */
    memset(comp, 1, 250);
    comp[250] = '\0';
    snprintf(path, sizeof(path), "%s", tu_tmpdir());
    for (int i = 0; i < 10; i++) {
        size_t len = strlen(path);
        snprintf(path + len, sizeof(path) - len, "/%s", comp);
        ck_assert_int_eq(mkdir(path, 0700), 0);
    }
    strcat(path, "/check_audit");
    in = open("/proc/self/exe", O_RDONLY);
    out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0700);
    ck_assert_int_ge(in, 0);
    ck_assert_int_ge(out, 0);
    while ((r = read(in, buf, sizeof(buf))) > 0)
        ck_assert_int_eq(write(out, buf, (size_t)r), r);
    close(in);
    close(out);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        execl(path, path, "--long-exe-child", conf_path, (char *)NULL);
        _exit(4);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status 0x%x", st);
    /* the other two records are there, chained: seq 1 and 2 */
    lines = read_lines(&n);
    ck_assert_uint_eq(n, 2);
    ck_assert_ptr_nonnull(strstr(lines[0], "\"seq\":1,\"key\":\"a\""));
    ck_assert_ptr_nonnull(strstr(lines[1], "\"seq\":2,\"key\":\"c\""));
    ck_assert_uint_gt(strlen(lines[0]), 14000);
    free_lines(lines, n);
    v = tu_ctx(NULL); /* (after the child: it writes the configuration again) */
    ck_assert_rc(v, verify(v, NULL, 0, 0, &rep), KV_OK);
    ck_assert_uint_eq(rep.records, 2);
    kv_ctx_free(v);
}
END_TEST

START_TEST(tail_returns_the_last_records)
{
    kv_ctx *ctx = audit_ctx("flush = record\n");
    kv_key *k = NULL;
    char *text = NULL;

    ck_assert_rc(ctx, kv_key_generate(ctx, "k", KV_KEY_EC_P256, NULL, &k), KV_OK);
    sign_n(ctx, k, 5);
    ck_assert_rc(ctx, kv_audit_tail(ctx, NULL, 2, &text), KV_OK);
    ck_assert_ptr_nonnull(strstr(text, "\"seq\":5,"));
    ck_assert_ptr_nonnull(strstr(text, "\"seq\":6,"));
    ck_assert_ptr_null(strstr(text, "\"seq\":4,"));
    kv_string_free(text);
    ck_assert_rc(ctx, kv_audit_tail(ctx, log_path, 100, &text), KV_OK);
    ck_assert_ptr_nonnull(strstr(text, "\"seq\":1,"));
    kv_string_free(text);
    ck_assert_rc(ctx, kv_audit_tail(ctx, log_path, 0, &text), KV_OK);
    ck_assert_str_eq(text, "");
    kv_string_free(text);
    kv_key_free(k);
    kv_ctx_free(ctx);
}
END_TEST

static kv_rc ctx_with(const char *audit)
{
    char text[1024], path[700];
    kv_ctx *ctx = NULL;
    kv_rc rc;

    snprintf(text, sizeof(text), "[keyvault]\nbackends = software\n[audit]\n%s", audit);
    snprintf(path, sizeof(path), "%s/c.conf", tu_tmpdir());
    tu_write(path, text);
    rc = kv_ctx_new(&ctx, path);
    kv_ctx_free(ctx);
    return rc;
}

START_TEST(settings_are_checked)
{
    char text[800];

    ck_assert_rc(NULL, ctx_with("file = relative.log\n"), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "absolute"));
    snprintf(text, sizeof(text), "file = %s/a.log\nflush = sometimes\n", tu_tmpdir());
    ck_assert_rc(NULL, ctx_with(text), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "'record' or 'buffered'"));
    ck_assert_rc(NULL, ctx_with("seal_key = s\n"), KV_ERR_CONFIG);
    snprintf(text, sizeof(text), "file = %s/a.log\nseal_key = ../x\n", tu_tmpdir());
    ck_assert_rc(NULL, ctx_with(text), KV_ERR_CONFIG);
    snprintf(text, sizeof(text), "file = %s/a.log\nflush_ms = 0\n", tu_tmpdir());
    ck_assert_rc(NULL, ctx_with(text), KV_ERR_CONFIG);
    snprintf(text, sizeof(text), "file = %s/a.log\nsealevery = 5\n", tu_tmpdir());
    ck_assert_rc(NULL, ctx_with(text), KV_ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(kv_errmsg(NULL), "seal_every"));
    snprintf(text, sizeof(text), "file = %s/a.log\nsyslog = yes\nflush = buffered\n",
             tu_tmpdir());
    ck_assert_rc(NULL, ctx_with(text), KV_OK);
    /* a log file others may write is refused */
    snprintf(text, sizeof(text), "%s/a.log", tu_tmpdir());
    chmod(text, 0622);
    snprintf(text, sizeof(text), "file = %s/a.log\n", tu_tmpdir());
    ck_assert_rc(NULL, ctx_with(text), KV_ERR_PERMISSION);
}
END_TEST

static Suite *audit_suite(void)
{
    Suite *s = suite_create("audit");
    TCase *tc = tcase_create("audit");
    TCase *procs = tcase_create("processes");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, clean_log_verifies_and_holds_no_secret);
    tcase_add_test(tc, passphrases_of_failed_and_good_opens_stay_out_of_the_log);
    tcase_add_test(tc, edited_record_fails_at_it);
    tcase_add_test(tc, edited_and_rehashed_fails_at_it);
    tcase_add_test(tc, deleted_record_fails_at_its_place);
    tcase_add_test(tc, deleted_head_fails_at_line_1);
    tcase_add_test(tc, reordered_records_fail_at_the_first);
    tcase_add_test(tc, truncated_inside_a_record_fails_at_it);
    tcase_add_test(tc, torn_record_is_named_with_the_last_complete_seq);
    tcase_add_test(tc, truncated_records_fail_when_sealed_is_required);
    tcase_add_test(tc, bad_seal_fails_at_it);
    tcase_add_test(tc, log_sealed_by_another_key_fails);
    tcase_add_test(tc, an_emptied_log_fails_under_its_key);
    tcase_add_test(tc, cut_at_an_earlier_seal_fails_with_the_anchor);
    tcase_add_test(tc, every_seal_goes_to_syslog_as_an_anchor);
    tcase_add_test(tc, cut_then_written_fails_with_the_anchor);
    tcase_add_test(tc, callback_sees_uses_denials_and_auth_failures);
    tcase_add_test(tc, file_records_failures_with_their_result);
    tcase_add_test(tc, buffered_records_arrive_within_flush_ms);
    tcase_add_test(tc, torn_tail_is_cut_and_rotation_starts_a_chain);
    tcase_add_test(tc, rotated_file_gets_its_closing_seal);
    tcase_add_test(tc, hostile_lines_are_named);
    tcase_add_test(tc, a_record_too_long_is_dropped_alone);
    tcase_add_test(tc, tail_returns_the_last_records);
    tcase_add_test(tc, settings_are_checked);
    tcase_add_test(tc, writer_leaves_a_log_others_may_read);
    tcase_add_test(tc, a_lock_held_elsewhere_bounds_each_callers_wait);
    tcase_add_test(tc, a_lock_held_elsewhere_does_not_hold_up_buffered_signs);
    suite_add_tcase(s, tc);
    /* tagged "fork": its children start threads after a fork from a threaded
     * parent, which ThreadSanitizer cannot follow ("dup thread with used
     * id"); tests/sanitizers.sh tsan leaves it out (CK_EXCLUDE_TAGS) */
    tcase_set_tags(procs, "fork");
    tcase_set_timeout(procs, 120);
    tcase_add_test(procs, threads_and_processes_keep_the_chain);
    tcase_add_test(procs, a_fork_while_the_writer_waits_leaves_the_child_its_batch);
    tcase_add_test(procs, a_fork_while_callers_wait_leaves_the_child_their_records);
    suite_add_tcase(s, procs);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--long-exe-child"))
        return long_exe_child(argv[2]);
    return tu_run(audit_suite());
}
