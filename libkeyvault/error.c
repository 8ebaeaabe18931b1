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

/* public calls in progress on this thread (KV_CALL_BEGIN nests) */
static _Thread_local unsigned call_depth;

int kv_call_enter(const kv_ctx *ctx)
{
    kv_err_begin(ctx);
    call_depth++;
    /* no mark on an empty queue (OpenSSL marks an entry): popping then
     * empties the queue, which is again what the caller had */
    return ERR_set_mark();
}

void kv_ossl_drop(void)
{
    if (call_depth == 0) {
        /* outside a public call (a free function, a worker thread): no
         * mark of ours to stop at, and none may be left behind */
        ERR_clear_error();
        return;
    }
    /* down to the call's mark, then mark again for the rest of the call */
    ERR_pop_to_mark();
    (void)ERR_set_mark();
}

void kv_call_leave(int *scope)
{
    (void)scope;
    call_depth--;
    ERR_pop_to_mark();
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
    unsigned long e = ERR_peek_error();
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
