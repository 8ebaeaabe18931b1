/*
 * testutil.h - helpers shared by the Check unit tests.
 */
#ifndef KV_TESTUTIL_H
#define KV_TESTUTIL_H

#include <pthread.h>
#include <stddef.h>
#include <check.h>

#include "keyvault.h"

/* A fresh directory under $TMPDIR, removed at exit of the test process. */
const char *tu_tmpdir(void);
/* Write text to path (0600). */
void tu_write(const char *path, const char *text);
/* Write a software-only config in dir (store dir/soft, passphrase file
 * dir/pass, fast KDF) plus `extra` lines; returns its path (static). */
const char *tu_config(const char *dir, const char *extra);
/* New context on tu_config(tu_tmpdir(), extra). */
kv_ctx *tu_ctx(const char *extra);
/* Run a shell command; returns its exit status. Output goes to the log. */
int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Hex decode ("" -> empty); caller frees. */
unsigned char *tu_unhex(const char *hex, size_t *len);
/* Path of a file in the source tree. */
const char *tu_srcpath(const char *rel);
/* Run a suite in Check's fork mode, print the totals; exit code for main. */
int tu_run(Suite *s);
/* Wait up to ms milliseconds for child pid to end: 1 and *status when it
 * did; else it is killed (SIGKILL) and reaped, and 0. For a test where a
 * child that hangs is the failure. */
int tu_wait_bounded(int pid, int ms, int *status);
/* Fork while another thread of this process holds lock (as a thread may be
 * inside the library when the application forks) and run child(arg) in
 * the child, which exits with its result. Returns the child's exit status,
 * or -1 when it did not end within ms milliseconds (it hung: killed) or
 * died of a signal. The lock is let go, and the thread joined, after. */
int tu_fork_while_held(pthread_mutex_t *lock, int (*child)(void *), void *arg, int ms);

/* Fail the test with the library's detail when rc is not what we expect.
 * expr is evaluated once. */
#define ck_assert_rc(ctx, expr, want)                                                   \
    do {                                                                                \
        kv_rc rc_got_ = (expr);                                                         \
        ck_assert_msg(rc_got_ == (want), "expected %s, got %s: %s", kv_strerror(want),  \
                      kv_strerror(rc_got_), kv_errmsg(ctx));                            \
    } while (0)

#endif
