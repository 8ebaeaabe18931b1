/*
 * fuzz.c - the helpers every libFuzzer target in tests/fuzz/ links (fuzz.h).
 */
#include "config.h"

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#include <openssl/err.h>

#include "fuzz.h"

static char dir[256];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_dir(void)
{
    if (dir[0])
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fz_dir(void)
{
    if (!dir[0]) {
        /* $TMPDIR: a long run writes every input to a file here, and
         * ext4 flushes a file truncated and written again (auto_da_alloc),
         * so a tmpfs (/dev/shm) spares the disk and the fuzzer's time */
        const char *tmp = getenv("TMPDIR");
        if ((size_t)snprintf(dir, sizeof(dir), "%s/kvfuzz.XXXXXX",
                             tmp && *tmp ? tmp : "/tmp") >= sizeof(dir))
            abort();
        if (!mkdtemp(dir))
            abort();
        atexit(rm_dir);
    }
    return dir;
}

char *fz_path(char *buf, size_t len, const char *name)
{
    if ((size_t)snprintf(buf, len, "%s/%s", fz_dir(), name) >= len)
        abort();
    return buf;
}

void fz_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");

    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0)
        abort();
}

kv_ctx *fz_ctx(const char *backends, const char *extra)
{
    char conf[512], pass[512], store[512], home[512], text[4096];
    kv_ctx *ctx = NULL;

    /* tpm2-tss logs every TCTI that does not connect: quiet, for speed */
    setenv("TSS2_LOG", "all+none", 0);
    fz_path(pass, sizeof(pass), "pass");
    fz_write(pass, "fuzz store passphrase\n", 22);
    if (chmod(pass, 0600) != 0)
        abort();
    fz_path(store, sizeof(store), "store");
    fz_path(home, sizeof(home), "home");
    snprintf(text, sizeof(text),
             "[keyvault]\nbackends = %s\nhome = %s\n[software]\nstore = %s\n"
             "passphrase = file:%s\nkdf_iterations = 1000\n%s",
             backends ? backends : "software", home, store, pass, extra ? extra : "");
    fz_write(fz_path(conf, sizeof(conf), "kv.conf"), text, strlen(text));
    if (kv_ctx_new(&ctx, conf) != KV_OK) {
        fprintf(stderr, "fuzz: kv_ctx_new: %s\n", ctx ? kv_errmsg(ctx) : "no context");
        abort();
    }
    return ctx;
}

char *fz_str(const unsigned char *data, size_t size)
{
    char *s = malloc(size + 1);

    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void fz_split(const unsigned char *data, size_t size, const unsigned char **a, size_t *alen,
              const unsigned char **b, size_t *blen)
{
    const size_t seplen = sizeof(FZ_SEP) - 1;

    *a = data;
    *alen = size;
    *b = data + size;
    *blen = 0;
    for (size_t i = 0; i + seplen <= size; i++)
        if (!memcmp(data + i, FZ_SEP, seplen)) {
            *alen = i;
            *b = data + i + seplen;
            *blen = size - i - seplen;
            return;
        }
}

bool fz_seeding(void)
{
    return getenv("KV_FUZZ_SEED_DIR") != NULL;
}

void fz_seed(const char *name, const void *data, size_t len)
{
    const char *d = getenv("KV_FUZZ_SEED_DIR");
    char path[1024];

    if (!d)
        return;
    snprintf(path, sizeof(path), "%s/%s", d, name);
    fz_write(path, data, len);
}

void fz_seed1(const char *name, int byte, const void *data, size_t len)
{
    unsigned char *buf = malloc(len + 1);

    if (!buf)
        abort();
    buf[0] = (unsigned char)byte;
    memcpy(buf + 1, data, len);
    fz_seed(name, buf, len + 1);
    free(buf);
}

void fz_seed_texts(const char *const *texts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "seed-%02zu", i);
        fz_seed(name, texts[i], strlen(texts[i]));
    }
}

void fz_seed2(const char *name, const void *a, size_t alen, const void *b, size_t blen)
{
    unsigned char *buf = malloc(alen + blen + sizeof(FZ_SEP));

    if (!buf)
        abort();
    memcpy(buf, a, alen);
    memcpy(buf + alen, FZ_SEP, sizeof(FZ_SEP) - 1);
    memcpy(buf + alen + sizeof(FZ_SEP) - 1, b, blen);
    fz_seed(name, buf, alen + blen + sizeof(FZ_SEP) - 1);
    free(buf);
}

void fz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: fuzz target check failed: %s\n", file, line, what);
    abort();
}

#undef LLVMFuzzerTestOneInput
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* The caller's own error, queued before an input of odd length: it must
 * be all the queue holds afterwards, unmarked. */
#define FZ_SENTINEL 77

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *file = NULL, *func = NULL, *edata = NULL;
    unsigned long e, sentinel = 0;
    int line = 0, flags = 0;
    char what[512];

    ERR_clear_error();
    if (size & 1) {
        ERR_raise_data(ERR_LIB_USER, FZ_SENTINEL, "the caller's own error");
        sentinel = ERR_peek_error();
    }
    fz_test_one(data, size);
    if (sentinel) {
        FZ_ASSERT(ERR_peek_error() == sentinel, "the input took the caller's error off the queue");
        /* then anything above it is the library's */
        e = ERR_peek_last_error_all(&file, &line, &func, &edata, &flags);
        if (e != sentinel)
            ERR_get_error(); /* report e below */
        else
            FZ_ASSERT(ERR_pop_to_mark() == 0 && ERR_peek_error() == 0,
                      "the input left an error mark on the caller's error");
    }
    if ((e = ERR_peek_error_all(&file, &line, &func, &edata, &flags)) != 0) {
        snprintf(what, sizeof(what),
                 "the input left an OpenSSL error queued: %s (raised at %s:%d in %s)",
                 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?",
                 file ? file : "?", line, func ? func : "?");
        fz_fail(__FILE__, __LINE__, what);
    }
    return 0;
}

const char *fz_softhsm(void)
{
    static char section[1024];
    char conf[512], tokens[512], pin[512], text[1100], cmd[1200];

    fz_path(tokens, sizeof(tokens), "tokens");
    if (mkdir(tokens, 0700) != 0)
        abort();
    snprintf(text, sizeof(text), "directories.tokendir = %s\nobjectstore.backend = file\n",
             tokens);
    fz_write(fz_path(conf, sizeof(conf), "softhsm2.conf"), text, strlen(text));
    setenv("SOFTHSM2_CONF", conf, 1);
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label fuzz --so-pin 12345678 --pin 1234 "
             ">/dev/null");
    if (system(cmd) != 0)
        abort();
    fz_write(fz_path(pin, sizeof(pin), "pin"), "1234", 4);
    if (chmod(pin, 0600) != 0)
        abort();
    snprintf(section, sizeof(section),
             "[pkcs11]\nmodule = /usr/lib/softhsm/libsofthsm2.so\ntoken = fuzz\npin = file:%s\n",
             pin);
    return section;
}

kv_key *fz_key(kv_ctx *ctx, const char *name, kv_key_type type, const char *backend)
{
    kv_key *key = NULL;

    if (kv_key_generate(ctx, name, type, backend, &key) != KV_OK) {
        fprintf(stderr, "fuzz: kv_key_generate %s: %s\n", name, kv_errmsg(ctx));
        abort();
    }
    return key;
}

unsigned char *fz_pub(kv_key *key, size_t *len)
{
    unsigned char *buf;

    *len = 0;
    if (kv_key_public_der(key, NULL, len) != KV_OK || !(buf = malloc(*len)) ||
        kv_key_public_der(key, buf, len) != KV_OK)
        abort();
    return buf;
}

char *fz_subst(const char *s)
{
    size_t dlen = strlen(fz_dir()), n = 0;
    char *out, *o;

    for (const char *p = s; (p = strstr(p, "@D@")); p += 3)
        n++;
    out = malloc(strlen(s) + n * dlen + 1);
    if (!out)
        abort();
    for (o = out; *s;) {
        if (!strncmp(s, "@D@", 3)) {
            memcpy(o, fz_dir(), dlen);
            o += dlen;
            s += 3;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

kv_key *fz_ca(kv_ctx *ctx, const char *name)
{
    kv_cert_opts opts = KV_CERT_OPTS_INIT;
    kv_key *ca = fz_key(ctx, name, KV_KEY_EC_P256, "software");
    char subject[128], *pem = NULL;

    snprintf(subject, sizeof(subject), "CN=%s,O=Fuzz", name);
    opts.subject = subject;
    opts.flags = KV_CERT_CA;
    opts.days = 3650;
    if (kv_cert_selfsign(ca, &opts, &pem) != KV_OK ||
        kv_key_store_cert(ca, (const unsigned char *)pem, strlen(pem)) != KV_OK) {
        fprintf(stderr, "fuzz: CA %s: %s\n", name, kv_errmsg(ctx));
        abort();
    }
    kv_string_free(pem);
    return ca;
}

void fz_report(const char *call, kv_ctx *ctx, kv_rc rc)
{
    if (getenv("KV_FUZZ_VERBOSE"))
        fprintf(stderr, "%s: %s%s%s\n", call, kv_strerror(rc), rc && ctx ? ": " : "",
                rc && ctx ? kv_errmsg(ctx) : "");
}

static void copy_dir(const char *src, const char *dst)
{
    DIR *d = opendir(src);
    struct dirent *e;

    if (!d || (mkdir(dst, 0700) != 0 && errno != EEXIST))
        abort();
    while ((e = readdir(d))) {
        char from[1024], to[1024], buf[65536];
        FILE *in, *out;
        size_t n;
        if (e->d_type != DT_REG)
            continue;
        snprintf(from, sizeof(from), "%s/%s", src, e->d_name);
        snprintf(to, sizeof(to), "%s/%s", dst, e->d_name);
        if (!(in = fopen(from, "r")) || !(out = fopen(to, "w")))
            abort();
        while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
            if (fwrite(buf, 1, n, out) != n)
                abort();
        if (fclose(in) != 0 || fclose(out) != 0 || chmod(to, 0600) != 0)
            abort();
    }
    closedir(d);
}

static const char *fixtures(void)
{
    const char *d = getenv("KV_FUZZ_FIXTURES");

    return d ? d : KV_FUZZ_SRCDIR "/tests/fuzz/fixtures";
}

/* the fixture's parts: the software store and the lifecycle records */
static const char *const fixture_dirs[][2] = { { "store", "store" },
                                               { "home/lifecycle", "lifecycle" } };

void fz_fixture_save(const char *tag)
{
    char src[512], dst[1024];

    snprintf(dst, sizeof(dst), "%s/%s", fixtures(), tag);
    if (mkdir(dst, 0700) != 0 && errno != EEXIST)
        abort();
    for (size_t i = 0; i < 2; i++) {
        struct stat sb;
        fz_path(src, sizeof(src), fixture_dirs[i][0]);
        if (stat(src, &sb) != 0)
            continue;
        snprintf(dst, sizeof(dst), "%s/%s/%s", fixtures(), tag, fixture_dirs[i][1]);
        copy_dir(src, dst);
    }
}

void fz_fixture_load(const char *tag)
{
    char src[1024], dst[512];

    if (mkdir(fz_path(dst, sizeof(dst), "home"), 0700) != 0 && errno != EEXIST)
        abort();
    for (size_t i = 0; i < 2; i++) {
        struct stat sb;
        snprintf(src, sizeof(src), "%s/%s/%s", fixtures(), tag, fixture_dirs[i][1]);
        if (stat(src, &sb) != 0)
            continue;
        copy_dir(src, fz_path(dst, sizeof(dst), fixture_dirs[i][0]));
    }
}
