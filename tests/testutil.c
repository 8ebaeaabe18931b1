/*
 * testutil.c - helpers shared by the Check unit tests.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "testutil.h"

static char tmpdir[512];
static pid_t tmp_owner;

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    chmod(path, 0700);
    remove(path);
    return 0;
}

static void cleanup(void)
{
    if (tmpdir[0] && getpid() == tmp_owner)
        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *tu_tmpdir(void)
{
    const char *base = getenv("TMPDIR");

    /* one directory per test: Check forks a process per test */
    if (tmpdir[0] && tmp_owner == getpid())
        return tmpdir;
    snprintf(tmpdir, sizeof(tmpdir), "%s/kvtest.XXXXXX", base && *base ? base : "/tmp");
    ck_assert_msg(mkdtemp(tmpdir) != NULL, "mkdtemp failed");
    chmod(tmpdir, 0755); /* readable by the unprivileged user of permission tests */
    tmp_owner = getpid();
    atexit(cleanup);
    return tmpdir;
}

void tu_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
}

const char *tu_config(const char *dir, const char *extra)
{
    static char path[600];
    char pass[600], text[4096];

    snprintf(pass, sizeof(pass), "%s/pass", dir);
    tu_write(pass, "test passphrase\n");
    snprintf(path, sizeof(path), "%s/keyvault.conf", dir);
    snprintf(text, sizeof(text),
             "[keyvault]\nbackends = software\n\n[software]\nstore = %s/soft\n"
             "passphrase = file:%s\nkdf_iterations = 1000\n%s\n",
             dir, pass, extra ? extra : "");
    tu_write(path, text);
    return path;
}

kv_ctx *tu_ctx(const char *extra)
{
    kv_ctx *ctx = NULL;
    kv_rc rc = kv_ctx_new(&ctx, tu_config(tu_tmpdir(), extra));

    ck_assert_msg(rc == KV_OK, "kv_ctx_new: %s", kv_errmsg(NULL));
    return ctx;
}

int tu_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    fflush(NULL);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

unsigned char *tu_unhex(const char *hex, size_t *len)
{
    long n = 0;
    unsigned char *buf;

    if (hex[0] == '\0') {
        *len = 0;
        return OPENSSL_zalloc(1);
    }
    buf = OPENSSL_hexstr2buf(hex, &n);
    ck_assert_msg(buf != NULL, "bad hex in test vector");
    *len = (size_t)n;
    return buf;
}

const char *tu_srcpath(const char *rel)
{
    static char path[1024];
    const char *src = getenv("KV_SRCDIR");

    snprintf(path, sizeof(path), "%s/%s", src && *src ? src : KV_SRCDIR, rel);
    return path;
}

static char home[512];
static pid_t home_owner;

static void home_cleanup(void)
{
    if (home[0] && getpid() == home_owner)
        nftw(home, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    const char *base = getenv("TMPDIR");
    int failed;

    /* key creation locks HOME/.create.lock: keep it out of the system's
     * home (/var/lib/keyvault for root) unless the caller chose one */
    if (!getenv("KEYVAULT_HOME")) {
        snprintf(home, sizeof(home), "%s/kvhome.XXXXXX", base && *base ? base : "/tmp");
        if (mkdtemp(home)) {
            home_owner = getpid();
            setenv("KEYVAULT_HOME", home, 1);
            atexit(home_cleanup);
        } else {
            home[0] = '\0';
        }
    }

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

int tu_wait_bounded(int pid, int ms, int *status)
{
    pid_t done = 0;

    for (int waited = 0; waited < ms && (done = waitpid(pid, status, WNOHANG)) == 0; waited += 10)
        usleep(10000);
    if (done == pid)
        return 1;
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return 0;
}

struct holder {
    pthread_mutex_t *lock;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int held, release;
};

static void *hold(void *arg)
{
    struct holder *h = arg;

    pthread_mutex_lock(h->lock);
    pthread_mutex_lock(&h->mu);
    h->held = 1;
    pthread_cond_signal(&h->cv);
    while (!h->release)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_unlock(h->lock);
    return NULL;
}

int tu_fork_while_held(pthread_mutex_t *lock, int (*child)(void *), void *arg, int ms)
{
    struct holder h = { .lock = lock };
    pthread_t th;
    pid_t pid;
    int st = 0, ended;

    pthread_mutex_init(&h.mu, NULL);
    pthread_cond_init(&h.cv, NULL);
    ck_assert_int_eq(pthread_create(&th, NULL, hold, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (!h.held)
        pthread_cond_wait(&h.cv, &h.mu);
    pthread_mutex_unlock(&h.mu);
    pid = fork();
    if (pid == 0)
        _exit(child(arg));
    /* no assertion until the holder is gone: it uses this frame */
    ended = pid > 0 && tu_wait_bounded(pid, ms, &st);
    pthread_mutex_lock(&h.mu);
    h.release = 1;
    pthread_cond_signal(&h.cv);
    pthread_mutex_unlock(&h.mu);
    pthread_join(th, NULL);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    ck_assert_msg(pid > 0, "fork failed");
    return ended && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
