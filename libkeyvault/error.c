/*
 * error.c - result codes and per-thread error detail.
 *
 * The detail of a failure is kept per thread, tagged with the context it
 * belongs to, so that threads sharing a context never see each other's
 * messages. Only the first failure of a call is recorded: the innermost
 * layer knows best what went wrong.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>

#include "internal.h"

struct kv_err_state {
    const kv_ctx *ctx;
    bool set;
    unsigned long code;
    const char *kind;
    char msg[768];
};

static _Thread_local struct kv_err_state tls_err;

void kv_err_begin(const kv_ctx *ctx)
{
    tls_err.ctx = ctx;
    tls_err.set = false;
    tls_err.code = 0;
    tls_err.kind = "";
    tls_err.msg[0] = '\0';
}

/*
 * The OpenSSL error queue around public calls (KV_CALL_BEGIN). A call
 * that starts on an empty queue (the usual case) owns all of it: a drop
 * empties it, the message reads its oldest entry (the root cause), and the
 * end of the call empties it. A call that starts on the caller's errors
 * marks the newest of them: a drop pops to that mark and marks again, the
 * message reads the newest entry unless it is still the caller's, and the
 * end pops to the mark. Frames beyond KV_CALL_FRAMES deep are treated as
 * marked without a record of the caller's entry.
 */
#define KV_CALL_FRAMES 16

struct call_frame {
    bool marked;          /* the call began on the caller's errors */
    unsigned long code;   /* the caller's newest entry, to tell it from ours */
    const char *file;
    int line;
    const char *data;
};

static _Thread_local struct call_frame frames[KV_CALL_FRAMES];
static _Thread_local unsigned call_depth;

static struct call_frame *frame(void)
{
    return call_depth > 0 && call_depth <= KV_CALL_FRAMES ? &frames[call_depth - 1] : NULL;
}

int kv_call_enter(const kv_ctx *ctx)
{
    struct call_frame *f;
    int marked;

    kv_err_begin(ctx);
    /* a peek first drops entries OpenSSL flagged to be cleared (after a
     * successful RSA decryption), so the mark lands on a lasting one */
    (void)ERR_peek_last_error();
    marked = ERR_set_mark();
    call_depth++;
    if ((f = frame())) {
        f->marked = marked == 1;
        f->code = f->marked ? ERR_peek_last_error_all(&f->file, &f->line, NULL, &f->data, NULL)
                            : 0;
    }
    return marked;
}

void kv_ossl_drop(void)
{
    const struct call_frame *f = frame();

    if (call_depth == 0 || (f && !f->marked)) {
        /* outside a public call, or a call that owns the whole queue */
        ERR_clear_error();
        return;
    }
    /* down to the call's mark, then mark again for the rest of the call */
    ERR_pop_to_mark();
    (void)ERR_set_mark();
}

void kv_call_leave(int *scope)
{
    call_depth--;
    if (*scope == 1)
        ERR_pop_to_mark();
    else
        ERR_clear_error(); /* the queue was empty: exact, whatever marks were left */
}

/* The OpenSSL error that best says why the current call failed, or 0. */
static unsigned long call_error(void)
{
    const struct call_frame *f = frame();
    const char *file = NULL, *data = NULL;
    unsigned long e;
    int line = 0;

    if (call_depth == 0 || (f && !f->marked))
        return ERR_peek_error(); /* the queue is the call's: its root cause */
    /* the caller's errors lie under ours: the newest, if it is ours */
    e = ERR_peek_last_error_all(&file, &line, NULL, &data, NULL);
    if (f && e == f->code && file == f->file && line == f->line && data == f->data)
        return 0;
    return e;
}

kv_err_mark kv_err_mark_get(const kv_ctx *ctx)
{
    kv_err_mark m = { tls_err.ctx == ctx && tls_err.set };

    return m;
}

void kv_err_rewind(const kv_ctx *ctx, kv_err_mark m)
{
    /* first failure wins: if one was kept at the mark, nothing came after */
    if (m.set || tls_err.ctx != ctx || !tls_err.set)
        return;
    tls_err.set = false;
    tls_err.code = 0;
    tls_err.kind = "";
    tls_err.msg[0] = '\0';
}

bool kv_err_is_set(const kv_ctx *ctx)
{
    return tls_err.ctx == ctx && tls_err.set;
}

void kv_err_frame(const kv_ctx *ctx, kv_rc rc, const char *prefix, const char *suffix)
{
    char inner[sizeof(tls_err.msg)];
    size_t fixed = strlen(prefix) + strlen(suffix), room;

    if (tls_err.ctx == ctx && tls_err.set) {
        memcpy(inner, tls_err.msg, sizeof(inner));
    } else {
        snprintf(inner, sizeof(inner), "%s", kv_strerror(rc));
        tls_err.ctx = ctx;
        tls_err.set = true;
        tls_err.kind = "";
        tls_err.code = 0;
    }
    room = fixed < sizeof(tls_err.msg) - 1 ? sizeof(tls_err.msg) - 1 - fixed : 0;
    snprintf(tls_err.msg, sizeof(tls_err.msg), "%s%.*s%s", prefix, (int)room, inner, suffix);
}

static void kv_err_vset(const kv_ctx *ctx, const char *kind, unsigned long code,
                        const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void kv_err_vset(const kv_ctx *ctx, const char *kind, unsigned long code,
                        const char *fmt, va_list ap)
{
    if (tls_err.ctx == ctx && tls_err.set)
        return;
    tls_err.ctx = ctx;
    tls_err.set = true;
    tls_err.kind = kind ? kind : "";
    tls_err.code = code;
    vsnprintf(tls_err.msg, sizeof(tls_err.msg), fmt, ap);
}

kv_rc kv_error(const kv_ctx *ctx, kv_rc rc, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    kv_err_vset(ctx, NULL, 0, fmt, ap);
    va_end(ap);
    return rc;
}

kv_rc kv_error_code(const kv_ctx *ctx, kv_rc rc, const char *kind, unsigned long code,
                    const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    kv_err_vset(ctx, kind, code, fmt, ap);
    va_end(ap);
    return rc;
}

kv_rc kv_error_ossl(const kv_ctx *ctx, kv_rc rc, const char *fmt, ...)
{
    char head[512], reason[256] = "no OpenSSL error recorded";
    unsigned long e = call_error();
    va_list ap;

    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    kv_ossl_drop();
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    return kv_error_code(ctx, rc, e ? "openssl" : "", e, "%s: %s", head, reason);
}

kv_rc kv_error_errno(const kv_ctx *ctx, int err, const char *fmt, ...)
{
    char head[512];
    kv_rc rc;
    va_list ap;

    switch (err) {
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
        rc = KV_ERR_NO_SPACE;
        break;
    case EACCES:
    case EPERM:
    case EROFS:
        rc = KV_ERR_PERMISSION;
        break;
    case ENOMEM:
        rc = KV_ERR_NO_MEMORY;
        break;
    default:
        rc = KV_ERR_IO;
        break;
    }
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    return kv_error_code(ctx, rc, "errno", (unsigned long)err, "%s: %s", head, strerror(err));
}

const char *kv_errmsg(const kv_ctx *ctx)
{
    if (tls_err.ctx != ctx || !tls_err.set)
        return "";
    return tls_err.msg;
}

unsigned long kv_backend_code(const kv_ctx *ctx, const char **kind)
{
    bool mine = tls_err.ctx == ctx && tls_err.set;

    if (kind)
        *kind = mine ? tls_err.kind : "";
    return mine ? tls_err.code : 0;
}

const char *kv_strerror(kv_rc rc)
{
    switch (rc) {
    case KV_OK: return "success";
    case KV_ERR_INVALID_ARG: return "invalid argument";
    case KV_ERR_NO_MEMORY: return "out of memory";
    case KV_ERR_KEY_NOT_FOUND: return "key not found";
    case KV_ERR_KEY_EXISTS: return "key already exists";
    case KV_ERR_BAD_URI: return "malformed key name or URI";
    case KV_ERR_UNSUPPORTED: return "operation not supported";
    case KV_ERR_WRONG_KEY_TYPE: return "wrong key type for this operation";
    case KV_ERR_AUTH_FAILED: return "authentication failed (wrong passphrase, PIN or auth value)";
    case KV_ERR_IO: return "input/output error";
    case KV_ERR_NO_SPACE: return "no space left (disk full or file size limit)";
    case KV_ERR_PERMISSION: return "permission denied";
    case KV_ERR_CONFIG: return "invalid configuration";
    case KV_ERR_BACKEND_UNAVAILABLE: return "backend unavailable";
    case KV_ERR_HARDWARE_REQUIRED: return "hardware key required by configuration";
    case KV_ERR_INVALID_PEER_KEY: return "invalid peer public key";
    case KV_ERR_BAD_SIGNATURE: return "signature does not verify";
    case KV_ERR_BUFFER_TOO_SMALL: return "output buffer too small";
    case KV_ERR_CRYPTO: return "cryptographic library failure";
    case KV_ERR_BACKEND: return "backend error";
    case KV_ERR_CORRUPT: return "stored key data is damaged";
    case KV_ERR_BAD_INPUT: return "malformed input";
    case KV_ERR_TOKEN_NOT_PRESENT: return "token or TPM not present";
    case KV_ERR_PIN_LOCKED: return "PIN or TPM locked out";
    case KV_ERR_EVIDENCE: return "evidence failed verification";
    case KV_ERR_POLICY: return "refused by policy";
    case KV_ERR_CLAIMS: return "token claims fail a check";
    }
    return "unknown error code";
}
