/*
 * audit.c - the audit log (docs/audit.md): one record per key use and
 * lifecycle event, handed to a callback, to syslog, and appended to a
 * hash-chained JSON Lines file that a vault key seals at intervals.
 *
 * The public entry points call kv_audit_event once, when they return. The
 * record is taken there (time, names, result) and queued; a thread of the
 * context writes the queue every flush_ms (or sooner once KV_AUDIT_BATCH
 * records wait) under an exclusive lock on the file: read the last
 * record's seq and hash, chain the batch on to it, write it with one
 * write(2), fdatasync, unlock. "flush = record" writes each record in the
 * calling thread before the call returns. Seals are made in the writer
 * with the thread's audit turned off, so the seal key's own open and sign
 * leave no record.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "internal.h"

#define KV_AUDIT_BATCH 1024          /* queued records that wake the writer early */
#define KV_AUDIT_QUEUE_MAX 65536     /* queued records beyond which callers write themselves */
#define KV_AUDIT_FLUSH_MS 200        /* default flush_ms: the loss window */
#define KV_AUDIT_SEAL_EVERY 1000     /* default seal_every */
#define KV_AUDIT_LINE_MAX 16384      /* bytes of one record in the file */
#define KV_AUDIT_DETAIL_MAX 256      /* bytes of a detail or message kept */
#define KV_AUDIT_TAIL_READ 65536     /* bytes read back from the end of the file */
#define KV_AUDIT_SEAL_RETRY 60       /* seconds before a seal key that failed to open is tried again */
#define KV_AUDIT_LOCK_WAIT_MS 10000  /* the longest wait for the file's lock (anyone who can open it can hold it) */
#define KV_AUDIT_TAIL_MAX (64L << 20) /* the most bytes kv_audit_tail reads back */
#define HEX_HASH 64

const struct kv_config_key kv_audit_config_keys[] = {
    { "file", 0 },     { "syslog", 0 },   { "seal_key", 0 },
    { "seal_every", 0 }, { "flush", 0 },  { "flush_ms", 0 },
    { NULL, 0 },
};

static const char *const op_names[] = {
    [KV_AUDIT_GENERATE] = "generate", [KV_AUDIT_OPEN] = "open",
    [KV_AUDIT_SIGN] = "sign",         [KV_AUDIT_ECDH] = "ecdh",
    [KV_AUDIT_ATTEST] = "attest",     [KV_AUDIT_ISSUE] = "issue",
    [KV_AUDIT_CERT_STORE] = "cert-store", [KV_AUDIT_ROTATE] = "rotate",
    [KV_AUDIT_RENEW] = "renew",       [KV_AUDIT_DESTROY] = "destroy",
    [KV_AUDIT_PRUNE] = "prune",
};

/* A record as the event took it, waiting for the writer. The strings
 * point into text[]. */
struct audit_ent {
    struct audit_ent *next;   /* the queue: a stack, newest first */
    struct timespec ts;
    kv_audit_op op;
    kv_rc rc;
    unsigned version;
    long pid;
    const char *name, *backend, *message, *detail;
    char text[];
};

/* A growing text buffer; `bad` once an allocation failed. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool bad;
};

/* The seconds of a time as text, kept while the second lasts. */
struct tcache {
    time_t sec;
    char text[24];   /* "2026-11-26T19:00:00" */
};

struct kv_audit {
    kv_ctx *ctx;
    /* the queue: callers push without a lock; the writer takes it whole */
    _Atomic(struct audit_ent *) head;
    atomic_size_t queued;
    pthread_mutex_t mu;       /* for cv: wakes the writer */
    pthread_cond_t cv;
    bool stop, thread_on;
    pthread_t thread;
    /* the file writer: one batch at a time in this process */
    pthread_mutex_t wmu;
    /* What the writer holds while it writes, kept here rather than in its
     * stack so that a child forked meanwhile can free it (after_fork):
     * changed only under fmu, which the fork handlers hold across fork().
     * The writer holds fmu while it turns records into lines (memory and
     * hashing) and while it frees them; not while the seal key opens or
     * signs (calls that may take other locks, or fork), nor while it
     * reads, writes or syncs the file or calls syslog, so fork() never
     * waits for a disk. */
    pthread_mutex_t fmu;
    struct audit_ent **batch; /* the records being written, oldest first */
    size_t nbatch;
    struct sbuf out;          /* their lines */
    json_t *seal_j;           /* the seal being made */
    char *seal_msg;           /* its text, while the seal key signs it */
    struct audit_ent *own;    /* flush = record: the callers' records being written */
    struct kv_audit *next;    /* the live audits, for the fork handlers */
    char *path;
    int fd;
    dev_t dev;
    ino_t ino;
    bool wrote;               /* this process appended records since its last seal */
    struct seal_made {        /* the seals of the batch being written: syslog'd once on disk */
        json_int_t seq;
        char hash[HEX_HASH + 1];
    } *made;
    size_t nmade, capmade;
    EVP_MD_CTX *mdctx;        /* the writer's SHA-256 */
    json_t *plain;            /* the writer's record without message or detail, its
                               * members' values replaced record by record */
    char line[KV_AUDIT_LINE_MAX]; /* the writer's dump of one record */
    char tail[4096 + 1];      /* the writer's read of the file's end (file_head), here
                               * rather than allocated: fmu is not held for it */
    struct tcache tc;         /* the writer's time of day */
    atomic_ulong dropped;     /* records lost to write errors */
    /* settings */
    bool syslog_on, each;     /* each: flush = record */
    long flush_ms, seal_every;
    char *seal_name;
    kv_key *seal_key;
    char seal_fp[HEX_HASH + 1]; /* its public key's SHA-256, taken as it opens */
    json_int_t seal_lost[2];  /* the first and last seq of seals not made (syslog is
                               * told once fmu is released) */
    size_t nseal_lost;
    time_t seal_failed;       /* when opening it last failed */
    /* the callback */
    kv_audit_fn fn;
    void *arg;
    /* the process */
    char exe_text[PATH_MAX];  /* the executable (/proc/self/exe) */
    long pid;
    unsigned long gen;        /* kv_fork_generation when pid was taken */
};

/* Set while this thread writes the log (the seal's sign) or runs the
 * callback: events then make no record. */
static _Thread_local bool in_audit;
static pthread_mutex_t fork_mu = PTHREAD_MUTEX_INITIALIZER;
/* every kv_audit of the process with a file, for the fork handlers */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct kv_audit *live;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static const char *result_name(kv_rc rc)
{
    switch (rc) {
    case KV_OK: return "ok";
    case KV_ERR_POLICY:
    case KV_ERR_HARDWARE_REQUIRED: return "denied";
    case KV_ERR_AUTH_FAILED:
    case KV_ERR_PIN_LOCKED: return "auth-failed";
    default: return "error";
    }
}

static const char *tc_seconds(struct tcache *tc, time_t sec)
{
    struct tm tm;

    if (tc->text[0] == '\0' || tc->sec != sec) {
        gmtime_r(&sec, &tm);
        strftime(tc->text, sizeof(tc->text), "%Y-%m-%dT%H:%M:%S", &tm);
        tc->sec = sec;
    }
    return tc->text;
}

static void time_text(const struct timespec *ts, char out[48])
{
    struct tcache tc = { 0, "" };

    snprintf(out, 48, "%s.%06dZ", tc_seconds(&tc, ts->tv_sec),
             (int)(ts->tv_nsec / 1000 % 1000000));
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static bool sha256_hex(const void *data, size_t len, char out[HEX_HASH + 1])
{
    unsigned char md[32];
    unsigned int mdlen = 0;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return false;
    hex(md, 32, out);
    return true;
}

/* The same with a digest context and a fetched SHA-256 (the writer's: no
 * fetch per record). */
static bool sha256_hex_with(EVP_MD_CTX *mc, const EVP_MD *md, const void *data, size_t len,
                            char out[HEX_HASH + 1])
{
    unsigned char h[32];
    unsigned int hlen = 0;

    if (!mc || EVP_DigestInit_ex2(mc, md, NULL) != 1 || EVP_DigestUpdate(mc, data, len) != 1 ||
        EVP_DigestFinal_ex(mc, h, &hlen) != 1 || hlen != 32)
        return false;
    hex(h, 32, out);
    return true;
}

/* ---- records ------------------------------------------------------------- */


static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->bad)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t c = (b->cap ? b->cap * 2 : 4096) + n + 1;
        char *q = realloc(b->p, c);
        if (!q) {
            b->bad = true;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* A string member: text that is not UTF-8 (which jansson refuses) is
 * recorded as such, never dropped silently. NULL is null. */
static json_t *text_value(const char *s)
{
    json_t *v;

    if (!s)
        return json_null();
    v = json_string(s);
    return v ? v : json_string("(not UTF-8)");
}

/* Member k of j set to the text s (null for NULL), the value replaced in
 * place when it is a string already, so that the member keeps its place. */
static bool set_text(json_t *j, const char *k, const char *s)
{
    json_t *v = json_object_get(j, k);

    if (s && json_is_string(v)) {
        if (strcmp(json_string_value(v), s) == 0 || json_string_set(v, s) == 0)
            return true;
        return json_string_set(v, "(not UTF-8)") == 0;
    }
    return json_object_set_new(j, k, text_value(s)) == 0;
}

static bool set_int(json_t *j, const char *k, json_int_t n)
{
    json_t *v = json_object_get(j, k);

    if (json_is_integer(v))
        return json_integer_set(v, n) == 0;
    return json_object_set_new(j, k, json_integer(n)) == 0;
}

/*
 * The record as a JSON object (a new reference), its members in the order
 * of docs/audit.md. With prev (the file): seq and prev too; without
 * (syslog): neither. The file holds jansson's compact dump of it
 * (JSON_PRESERVE_ORDER), which is what kv_audit_verify hashes again. The
 * writer's common record (a success without message or detail) reuses
 * one object, its values replaced: no allocation per record for it.
 */
static json_t *ent_json(struct kv_audit *a, const struct audit_ent *e, json_int_t seq,
                        const char *prev, struct tcache *tc)
{
    char t[48];
    bool reuse = prev && !e->message && !e->detail;
    json_t *j = reuse && a->plain ? a->plain : json_object();
    bool ok;

    if (!j)
        return NULL;
    snprintf(t, sizeof(t), "%s.%06dZ", tc_seconds(tc, e->ts.tv_sec),
             (int)(e->ts.tv_nsec / 1000 % 1000000));
    ok = set_text(j, "time", t) && (!prev || set_int(j, "seq", seq)) &&
         set_text(j, "key", e->name) && set_int(j, "version", e->version) &&
         set_text(j, "backend", e->backend) && set_text(j, "op", op_names[e->op]) &&
         set_text(j, "result", result_name(e->rc)) && set_int(j, "error", e->rc) &&
         (!e->message || set_text(j, "message", e->message)) &&
         (!e->detail || set_text(j, "detail", e->detail)) && set_int(j, "pid", e->pid) &&
         set_text(j, "exe", a->exe_text) && (!prev || set_text(j, "prev", prev));
    if (!ok) {
        if (j == a->plain)
            a->plain = NULL;
        json_decref(j);
        return NULL;
    }
    if (reuse && !a->plain)
        a->plain = j; /* the writer's reference; the caller gets its own below */
    return j == a->plain ? json_incref(j) : j;
}

static char *dump(const json_t *j)
{
    return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

/* Copy s (cut to max bytes at a character boundary, as valid UTF-8) to *p. */
static const char *put_text(char **p, const char *s, size_t max)
{
    size_t n;
    char *out = *p;

    if (!s || !*s)
        return NULL;
    n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    *p = out + n + 1;
    return out;
}

static size_t text_len(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    return (n > KV_AUDIT_DETAIL_MAX ? KV_AUDIT_DETAIL_MAX : n) + 1;
}

static struct audit_ent *ent_new(struct kv_audit *a, kv_audit_op op, const char *name,
                                 unsigned version, const char *backend, kv_rc rc,
                                 const char *detail, const char *message)
{
    struct audit_ent *e = malloc(sizeof(*e) + text_len(name) + text_len(backend) +
                                 text_len(detail) + text_len(message));
    char *p;

    if (!e)
        return NULL;
    clock_gettime(CLOCK_REALTIME, &e->ts);
    e->op = op;
    e->rc = rc;
    e->version = version;
    e->pid = a->pid;
    p = e->text;
    e->name = put_text(&p, name, KV_AUDIT_DETAIL_MAX);
    e->backend = put_text(&p, backend, KV_AUDIT_DETAIL_MAX);
    e->message = put_text(&p, message, KV_AUDIT_DETAIL_MAX);
    e->detail = put_text(&p, detail, KV_AUDIT_DETAIL_MAX);
    return e;
}

/* ---- the file ------------------------------------------------------------- */

/* Now plus KV_AUDIT_LOCK_WAIT_MS on clock: a writer's bound. */
static void lock_deadline(clockid_t clock, struct timespec *until)
{
    clock_gettime(clock, until);
    until->tv_sec += KV_AUDIT_LOCK_WAIT_MS / 1000;
}

/* flock(fd, op) (LOCK_SH or LOCK_EX), waiting until the deadline (NULL:
 * KV_AUDIT_LOCK_WAIT_MS from now): 0, or the errno (EWOULDBLOCK when
 * another process held it all along). */
static int lock_bounded(int fd, int op, const struct timespec *until)
{
    struct timespec end, now;

    if (!until)
        lock_deadline(CLOCK_MONOTONIC, &end);
    else
        end = *until;
    while (flock(fd, op | LOCK_NB) != 0) {
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK)
            return errno;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > end.tv_sec || (now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec))
            return EWOULDBLOCK;
        usleep(10 * 1000);
    }
    return 0;
}

/* Report a failure of the audit file on syslog (the records are lost).
 * Called without fmu. */
static void file_trouble(struct kv_audit *a, const char *what, int err, size_t lost)
{
    unsigned long all = atomic_fetch_add(&a->dropped, lost) + lost;

    syslog(LOG_AUTHPRIV | LOG_ERR, "libkeyvault audit: %s '%s': %s (%zu records lost, %lu in all)",
           what, a->path, err ? strerror(err) : "failed", lost, all);
}

static void seal_rotated(struct kv_audit *a, const struct timespec *until);

/* Open the file, or open it again when it was renamed or removed (log
 * rotation): the new file starts a new chain, and the old one, when this
 * process wrote to it since its last seal, gets its closing seal first. */
static int file_open(struct kv_audit *a, const struct timespec *until)
{
    struct stat st;

    if (a->fd >= 0) {
        if (stat(a->path, &st) == 0 && st.st_dev == a->dev && st.st_ino == a->ino)
            return S_ISREG(st.st_mode) && !(st.st_mode & 006) ? 0 : -1;
        if (a->wrote && a->seal_name)
            seal_rotated(a, until);
        a->wrote = false;
        close(a->fd);
        a->fd = -1;
    }
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (a->fd < 0)
        return errno;
    /* a file others may read or write, they may also lock for ever: -1
     * (checked before each batch: a chmod, or a rotation tool's create) */
    errno = 0;
    if (fstat(a->fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 006)) {
        int e = errno ? errno : S_ISREG(st.st_mode) ? -1 : EINVAL;
        close(a->fd);
        a->fd = -1;
        return e;
    }
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    return 0;
}

/* The chain's head, read under the lock: the last record's seq and hash
 * and whether it is a seal. A torn last line (a writer that died inside
 * its write, a full disk) is cut off first. Empty file: seq 0, prev zeros. */
static int file_head_in(struct kv_audit *a, off_t window, json_int_t *seq,
                        char prev[HEX_HASH + 1], bool *sealed)
{
    struct stat st;
    char *buf = NULL;
    off_t from;
    size_t len, start, end;
    json_t *j;
    int err = 0;

    *seq = 0;
    *sealed = false;
    memset(prev, '0', HEX_HASH);
    prev[HEX_HASH] = '\0';
    if (fstat(a->fd, &st) != 0)
        return errno;
    if (st.st_size == 0)
        return 0;
    from = st.st_size > window ? st.st_size - window : 0;
    len = (size_t)(st.st_size - from);
    /* a record's worth in the struct; a longer look (a torn record) is
     * allocated, a child forked meanwhile then leaking it */
    buf = len < sizeof(a->tail) ? a->tail : malloc(len + 1);
    if (!buf)
        return ENOMEM;
    if (pread(a->fd, buf, len, from) != (ssize_t)len) {
        err = errno ? errno : EIO;
        goto out;
    }
    end = len;
    if (buf[end - 1] != '\n') {
        /* torn: cut back to the last complete line */
        while (end > 0 && buf[end - 1] != '\n')
            end--;
        if (end == 0 && from > 0) {
            err = window < KV_AUDIT_TAIL_READ ? EAGAIN : EFBIG;
            goto out;
        }
        if (ftruncate(a->fd, from + (off_t)end) != 0) {
            err = errno;
            goto out;
        }
        syslog(LOG_AUTHPRIV | LOG_WARNING,
               "libkeyvault audit: '%s' ended inside a record: %zu bytes cut off", a->path,
               len - end);
        if (end == 0)
            goto out;
    }
    start = end - 1;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    if (start == 0 && from > 0) {
        err = window < KV_AUDIT_TAIL_READ ? EAGAIN : EFBIG;
        goto out;
    }
    j = json_loadb(buf + start, end - 1 - start, 0, NULL);
    {
        json_t *h = json_object_get(j, "hash"), *s = json_object_get(j, "seq");
        const char *op = json_string_value(json_object_get(j, "op"));
        if (json_is_string(h) && strlen(json_string_value(h)) == HEX_HASH)
            memcpy(prev, json_string_value(h), HEX_HASH);
        else if (!sha256_hex(buf + start, end - 1 - start, prev))
            err = EIO;
        /* a line that is not a record: chain on to its bytes (verify names it) */
        *seq = json_is_integer(s) ? json_integer_value(s) : 0;
        *sealed = op && !strcmp(op, "seal");
    }
    json_decref(j);
out:
    if (buf != a->tail)
        free(buf);
    return err;
}

/* The same, reading the end of the file: a record's worth first (records
 * are well under 4 KiB), then up to KV_AUDIT_TAIL_READ. */
static int file_head(struct kv_audit *a, json_int_t *seq, char prev[HEX_HASH + 1], bool *sealed)
{
    int err = file_head_in(a, (off_t)sizeof(a->tail) - 1, seq, prev, sealed);

    return err == EAGAIN ? file_head_in(a, KV_AUDIT_TAIL_READ, seq, prev, sealed) : err;
}

/* The record j gets its "hash" member, the SHA-256 of its compact dump as
 * it stands, and goes to b as one line. Sets prev to that hash. The member
 * is added to jansson's dump (whose last byte is the object's '}') rather
 * than by a second dump: it is the last member, and its value is hex.
 * *too_long (when given) is set for a record whose line would pass
 * KV_AUDIT_LINE_MAX, which verify refuses: b and prev are left as they were. */
static bool chain_json(struct kv_audit *a, json_t *j, char prev[HEX_HASH + 1], struct sbuf *b,
                       bool *too_long)
{
    static const char member[] = ",\"hash\":\"";
    char h[HEX_HASH + 1];
    size_t n = json_dumpb(j, a->line, sizeof(a->line), JSON_COMPACT | JSON_PRESERVE_ORDER);

    if (too_long)
        *too_long = n + sizeof(member) + HEX_HASH + 2 > sizeof(a->line);
    if (n < 2 || n + sizeof(member) + HEX_HASH + 2 > sizeof(a->line) || a->line[n - 1] != '}' ||
        !sha256_hex_with(a->mdctx, a->ctx->md_sha256, a->line, n, h))
        return false;
    sb_add(b, a->line, n - 1);
    sb_add(b, member, sizeof(member) - 1);
    sb_add(b, h, HEX_HASH);
    sb_add(b, "\"}\n", 3);
    memcpy(prev, h, sizeof(h));
    return !b->bad;
}

/* Open the seal key and take its public key's fingerprint, fmu not held:
 * both may take other locks (a token's, OpenSSL's fetches). A key that
 * cannot be opened (a wrong PIN) is tried again once a minute, not at
 * every seal: a token counts failed logins. */
static bool seal_key_open(struct kv_audit *a)
{
    time_t now = time(NULL);
    unsigned char *spki = NULL;
    kv_key *k = NULL;
    bool ok;
    int n;

    if (a->seal_key)
        return true;
    if (a->seal_failed && now - a->seal_failed < KV_AUDIT_SEAL_RETRY)
        return false;
    if (kv_key_open(a->ctx, a->seal_name, &k) != KV_OK) {
        a->seal_failed = now;
        syslog(LOG_AUTHPRIV | LOG_ERR,
               "libkeyvault audit: cannot open seal_key '%s' (no seals for %d s): %s",
               a->seal_name, KV_AUDIT_SEAL_RETRY, kv_errmsg(a->ctx));
        return false;
    }
    n = i2d_PUBKEY(k->pub, &spki);
    ok = n > 0 && sha256_hex(spki, (size_t)n, a->seal_fp);
    OPENSSL_free(spki);
    if (!ok) {
        a->seal_failed = now;
        syslog(LOG_AUTHPRIV | LOG_ERR,
               "libkeyvault audit: cannot read the public key of seal_key '%s'", a->seal_name);
        kv_key_free(k);
        return false;
    }
    a->seal_key = k;
    return true;
}

/* A seal record at seq: the seal key signs the record's dump without
 * "sig" and "hash" (which chains every record before it through prev).
 * Called with fmu held; released while the seal key opens and signs (and
 * while syslog hears of a failure), the record and its text then in
 * a->seal_j and a->seal_msg. */
static bool seal_line(struct kv_audit *a, json_int_t seq, char prev[HEX_HASH + 1],
                      struct sbuf *b)
{
    struct timespec ts;
    const kv_alg_desc *alg = NULL;
    unsigned char sig[1024], *b64 = NULL;
    size_t siglen = sizeof(sig), start;
    char t[48];
    bool ok = false, opened;
    kv_rc rc;

    if (!a->seal_key) {
        pthread_mutex_unlock(&a->fmu);
        opened = seal_key_open(a);
        pthread_mutex_lock(&a->fmu);
        if (!opened)
            return false;
    }
    if (kv_key_alg(a->seal_key, KV_ALG_DEFAULT, &alg) != KV_OK)
        goto out;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_text(&ts, t);
    a->seal_j = json_pack("{s:s, s:I, s:s, s:i, s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "time", t,
                          "seq", seq, "key", a->seal_key->name, "version",
                          (int)a->seal_key->version, "backend", a->seal_key->be->name, "op",
                          "seal", "alg", alg->name, "key_sha256", a->seal_fp, "pid",
                          (json_int_t)a->pid, "exe", a->exe_text, "prev", prev);
    if (!a->seal_j || !(a->seal_msg = dump(a->seal_j)))
        goto out;
    pthread_mutex_unlock(&a->fmu);
    rc = kv_sign(a->seal_key, alg->alg, 0, (const unsigned char *)a->seal_msg,
                 strlen(a->seal_msg), sig, &siglen);
    if (rc != KV_OK)
        syslog(LOG_AUTHPRIV | LOG_ERR, "libkeyvault audit: seal_key '%s' cannot sign: %s",
               a->seal_name, kv_errmsg(a->ctx));
    pthread_mutex_lock(&a->fmu);
    if (rc != KV_OK)
        goto out;
    if (!(b64 = malloc(4 * ((siglen + 2) / 3) + 1)))
        goto out;
    EVP_EncodeBlock(b64, sig, (int)siglen);
    if (json_object_set_new(a->seal_j, "sig", json_string((const char *)b64)) != 0)
        goto out;
    if (a->nmade == a->capmade) {
        size_t c = a->capmade ? a->capmade * 2 : 8;
        struct seal_made *m = realloc(a->made, c * sizeof(*m));
        if (!m)
            goto out;
        a->made = m;
        a->capmade = c;
    }
    start = b->len;
    ok = chain_json(a, a->seal_j, prev, b, NULL);
    if (!ok) {
        b->len = start;
    } else {
        a->made[a->nmade].seq = seq;
        memcpy(a->made[a->nmade++].hash, prev, HEX_HASH + 1);
    }
out:
    if (!ok && a->seal_j) {
        /* said to syslog by the caller, fmu released */
        if (a->nseal_lost++ == 0)
            a->seal_lost[0] = seq;
        a->seal_lost[1] = seq;
    }
    json_decref(a->seal_j);
    a->seal_j = NULL;
    free(a->seal_msg);
    a->seal_msg = NULL;
    free(b64);
    return ok;
}

/* Write b to the file (under its lock) and sync it; then each seal in it
 * goes to syslog with its seq and hash, the anchor kept outside the file
 * (docs/audit.md). n: the records in b, for the report of a failure. */
static bool write_out(struct kv_audit *a, const struct sbuf *b, size_t n, const char *shown)
{
    size_t done = 0;

    while (done < b->len) {
        ssize_t w = write(a->fd, b->p + done, b->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            file_trouble(a, "cannot write", w < 0 ? errno : EIO, n);
            /* leave no torn record: the next writer would cut it anyway */
            if (done && ftruncate(a->fd, lseek(a->fd, 0, SEEK_END) - (off_t)done) != 0)
                file_trouble(a, "cannot cut a torn write from", errno, 0);
            a->nmade = 0;
            return false;
        }
        done += (size_t)w;
    }
    if (b->len && fdatasync(a->fd) != 0)
        file_trouble(a, "cannot sync", errno, 0);
    for (size_t i = 0; i < a->nmade; i++)
        syslog(LOG_AUTHPRIV | LOG_INFO, "libkeyvault audit: seal seq %lld hash %s file %s",
               (long long)a->made[i].seq, a->made[i].hash, shown ? shown : a->path);
    a->nmade = 0;
    return true;
}

/* A seal seal_line could not make, to syslog: after fmu is released. */
static void seal_lost_said(struct kv_audit *a)
{
    if (a->nseal_lost == 1)
        syslog(LOG_AUTHPRIV | LOG_ERR, "libkeyvault audit: no seal at seq %lld of '%s'",
               (long long)a->seal_lost[0], a->path);
    else if (a->nseal_lost > 1)
        syslog(LOG_AUTHPRIV | LOG_ERR,
               "libkeyvault audit: no seals at %zu seqs from %lld to %lld of '%s'",
               a->nseal_lost, (long long)a->seal_lost[0], (long long)a->seal_lost[1], a->path);
    a->nseal_lost = 0;
}

/* The closing seal of a file renamed or removed under the writer (a->fd
 * still open on it), made under its lock as file_write makes one. */
static void seal_rotated(struct kv_audit *a, const struct timespec *until)
{
    char fdpath[64], name[PATH_MAX];
    char prev[HEX_HASH + 1];
    json_int_t seq = 0;
    bool sealed = false, made;
    ssize_t len;
    int err;

    /* the name it has now, for the anchor's syslog line */
    snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", a->fd);
    len = readlink(fdpath, name, sizeof(name) - 1);
    name[len > 0 ? len : 0] = '\0';
    if ((err = lock_bounded(a->fd, LOCK_EX, until)) != 0) {
        file_trouble(a, err == EWOULDBLOCK ? "another process holds the lock (flock) of the rotated "
                     "file of" : "cannot lock the rotated file of", err, 0);
        return;
    }
    if (file_head(a, &seq, prev, &sealed) == 0 && !sealed && seq > 0) {
        pthread_mutex_lock(&a->fmu);
        made = seal_line(a, seq + 1, prev, &a->out);
        pthread_mutex_unlock(&a->fmu);
        if (made)
            (void)write_out(a, &a->out, 0, name[0] ? name : NULL);
    }
    pthread_mutex_lock(&a->fmu);
    a->nmade = 0;
    free(a->out.p);
    a->out = (struct sbuf){ NULL, 0, 0, false };
    pthread_mutex_unlock(&a->fmu);
    seal_lost_said(a);
    (void)flock(a->fd, LOCK_UN);
}

static bool seal_due(const struct kv_audit *a, json_int_t seq)
{
    return a->seal_name && a->seal_every > 0 && seq % a->seal_every == 0;
}

static struct audit_ent **queue_take(struct kv_audit *a, size_t *n, size_t *lost);
static void ents_free(struct audit_ent **q, size_t n);

/*
 * Append the records - the one given, or else the queue - (and the seals
 * that fall due among them, and one at the end when close is set and the
 * log does not end with one) under the file's lock, wmu held, by the
 * deadline. The queue is taken once the lock is held: a child forked while
 * the writer waits for it finds the records in the queue, and fork() does
 * not wait for the lock. Without the lock, what waits is lost (a caller's
 * own record it frees itself).
 */
static void write_locked(struct kv_audit *a, struct audit_ent *one, bool close_seal,
                         const struct timespec *until)
{
    char prev[HEX_HASH + 1];
    const char *what = NULL, *long_op = NULL;
    struct audit_ent **ents;
    json_int_t seq = 0;
    bool locked = false, sealed = false;
    size_t n, too_long_n = 0, oom_lost = 0;
    int err;

    if ((err = file_open(a, until)) != 0) {
        what = err < 0 ? "will not write to a log others may read or write (chmod o-rw)"
                       : "cannot open";
        err = err < 0 ? 0 : err;
    } else if ((err = lock_bounded(a->fd, LOCK_EX, until)) != 0) {
        what = err == EWOULDBLOCK ? "another process holds the lock (flock) of" : "cannot lock";
    } else {
        locked = true;
        if ((err = file_head(a, &seq, prev, &sealed)) != 0)
            what = "cannot read the end of";
    }
    /* fmu while the records become lines: memory and hashing, no call
     * that may wait or take another lock (the seal key's are made with it
     * released, and so are the write, the sync and syslog) */
    pthread_mutex_lock(&a->fmu);
    if (!one)
        a->batch = queue_take(a, &a->nbatch, &oom_lost);
    ents = one ? &one : a->batch;
    n = one ? 1 : a->nbatch;
    if (what || (n == 0 && !(close_seal && a->wrote && a->seal_name)))
        goto out;
    for (size_t i = 0; i < n; i++) {
        json_t *rec;
        bool ok, too_long = false;

        if (seal_due(a, seq + 1) && seal_line(a, seq + 1, prev, &a->out))
            seq++;
        rec = ent_json(a, ents[i], ++seq, prev, &a->tc);
        ok = rec && chain_json(a, rec, prev, &a->out, &too_long);
        json_decref(rec);
        if (!ok && rec && too_long) {
            /* that record alone is lost (verify would refuse its line) */
            too_long_n++;
            long_op = op_names[ents[i]->op];
            seq--;
            continue;
        }
        if (!ok) {
            what = "out of memory writing";
            err = ENOMEM;
            goto out;
        }
        sealed = false;
    }
    if (n)
        a->wrote = true;
    if (close_seal && a->wrote && !sealed && seq > 0 && a->seal_name &&
        seal_line(a, seq + 1, prev, &a->out))
        a->wrote = false;
    /* what a child forked now inherits stays as it is: a->out and the
     * batch change only under fmu */
    pthread_mutex_unlock(&a->fmu);
    (void)write_out(a, &a->out, n, NULL);
    pthread_mutex_lock(&a->fmu);
out:
    a->nmade = 0;
    ents_free(a->batch, a->nbatch);
    a->batch = NULL;
    a->nbatch = 0;
    free(a->out.p);
    a->out = (struct sbuf){ NULL, 0, 0, false };
    pthread_mutex_unlock(&a->fmu);
    if (locked)
        (void)flock(a->fd, LOCK_UN);
    if (what)
        file_trouble(a, what, err, n);
    if (oom_lost)
        file_trouble(a, "out of memory writing", ENOMEM, oom_lost);
    if (too_long_n) {
        unsigned long all = atomic_fetch_add(&a->dropped, too_long_n) + too_long_n;
        if (too_long_n == 1)
            syslog(LOG_AUTHPRIV | LOG_ERR,
                   "libkeyvault audit: a %s record longer than %d bytes dropped from '%s' "
                   "(1 record lost, %lu in all)", long_op, KV_AUDIT_LINE_MAX, a->path, all);
        else
            syslog(LOG_AUTHPRIV | LOG_ERR,
                   "libkeyvault audit: %zu records longer than %d bytes dropped from '%s', the "
                   "last a %s record (%zu records lost, %lu in all)", too_long_n,
                   KV_AUDIT_LINE_MAX, a->path, long_op, too_long_n, all);
    }
    seal_lost_said(a);
}

/* Lock wmu, waiting until the CLOCK_MONOTONIC deadline: 0 or ETIMEDOUT.
 * pthread_mutex_clocklock (glibc 2.30): a wall clock set forward or back
 * neither cuts the wait short nor stretches it. ThreadSanitizer (clang 14)
 * does not know clocklock, so its builds take timedlock on CLOCK_REALTIME,
 * which it does. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KV_AUDIT_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define KV_AUDIT_TSAN 1
#endif
static int wmu_lock_until(struct kv_audit *a, const struct timespec *until)
{
#if defined(KV_AUDIT_TSAN) || !defined(HAVE_PTHREAD_MUTEX_CLOCKLOCK)
    struct timespec now_mono, rt;
    long long left;

    clock_gettime(CLOCK_MONOTONIC, &now_mono);
    clock_gettime(CLOCK_REALTIME, &rt);
    left = (long long)(until->tv_sec - now_mono.tv_sec) * 1000000000LL +
           (until->tv_nsec - now_mono.tv_nsec);
    if (left < 0)
        left = 0;
    rt.tv_sec += (time_t)(left / 1000000000LL);
    rt.tv_nsec += (long)(left % 1000000000LL);
    if (rt.tv_nsec >= 1000000000L) {
        rt.tv_sec++;
        rt.tv_nsec -= 1000000000L;
    }
    return pthread_mutex_timedlock(&a->wmu, &rt);
#else
    return pthread_mutex_clocklock(&a->wmu, CLOCK_MONOTONIC, until);
#endif
}

/*
 * Write the one record, or else the queue (write_locked). The wait for wmu
 * (another thread of the process writing) and for the file's lock end
 * together, KV_AUDIT_LOCK_WAIT_MS after the call: when a lock held
 * elsewhere stops one writer, each caller waits its own bound once, not
 * one more for every thread before it. The calling thread's error detail
 * is kept: the seal key's calls would replace it.
 */
static void file_write(struct kv_audit *a, struct audit_ent *one, bool close_seal)
{
    kv_ctx *ctx = a->ctx;
    bool had = kv_err_is_set(ctx);
    char saved[768];
    const char *kind = "";
    unsigned long code = kv_backend_code(ctx, &kind);
    struct timespec until;

    if (!one && !atomic_load(&a->queued) && !(close_seal && a->wrote && a->seal_name))
        return;
    snprintf(saved, sizeof(saved), "%s", kv_errmsg(ctx));
    in_audit = true;
    lock_deadline(CLOCK_MONOTONIC, &until);
    if (wmu_lock_until(a, &until) == 0) {
        write_locked(a, one, close_seal, &until);
        pthread_mutex_unlock(&a->wmu);
    } else if (one) {
        /* another thread has waited as long for the file's lock (the queue
         * stays for it); this record is lost */
        file_trouble(a, "another thread of this process has waited for the lock (flock) of",
                     EWOULDBLOCK, 1);
    }
    in_audit = false;
    kv_err_begin(ctx);
    if (had)
        (void)kv_error_code(ctx, KV_OK, kind, code, "%s", saved);
}

static void list_free(struct audit_ent *e)
{
    while (e) {
        struct audit_ent *next = e->next;
        free(e);
        e = next;
    }
}

/* Take the whole queue, oldest first, as an array of *n records. Called
 * with fmu held: when the array cannot be had, the records are freed and
 * *lost counts them for the caller to report. */
static struct audit_ent **queue_take(struct kv_audit *a, size_t *n, size_t *lost)
{
    struct audit_ent *e = atomic_exchange(&a->head, NULL), **q;
    size_t count = 0;

    *n = 0;
    for (struct audit_ent *p = e; p; p = p->next)
        count++;
    if (!count)
        return NULL;
    atomic_fetch_sub(&a->queued, count);
    if (!(q = malloc(count * sizeof(*q)))) {
        *lost = count;
        list_free(e);
        return NULL;
    }
    for (size_t i = count; i > 0; e = e->next)
        q[--i] = e;
    *n = count;
    return q;
}

static void ents_free(struct audit_ent **q, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(q[i]);
    free(q);
}

static void *writer_main(void *p)
{
    struct kv_audit *a = p;

    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        struct timespec until;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += a->flush_ms / 1000;
        until.tv_nsec += (a->flush_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!a->stop && atomic_load(&a->queued) < KV_AUDIT_BATCH)
            if (pthread_cond_timedwait(&a->cv, &a->mu, &until) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&a->mu);
        file_write(a, NULL, false);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void writer_start(struct kv_audit *a)
{
    sigset_t all, old;

    if (!a->path || a->each || a->thread_on)
        return;
    /* the application's signals are not for the library's thread (a file
     * size limit then fails the write instead of killing the process) */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    a->thread_on = pthread_create(&a->thread, NULL, writer_main, a) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* In a child after fork(): the queue is the parent's to write, the writer
 * thread did not come along, and the file's open description (and its
 * lock) is shared with the parent: start afresh. */
static void after_fork(struct kv_audit *a)
{
    pthread_mutex_lock(&fork_mu);
    if (a->gen != kv_fork_generation()) {
        pthread_mutex_init(&a->mu, NULL);
        pthread_mutex_init(&a->wmu, NULL);
        pthread_cond_init(&a->cv, NULL);
        /* what the parent's writer held at the fork (the fork handlers
         * made it consistent): its thread is not here to free it */
        pthread_mutex_lock(&a->fmu);
        ents_free(a->batch, a->nbatch);
        a->batch = NULL;
        a->nbatch = 0;
        free(a->out.p);
        a->out = (struct sbuf){ NULL, 0, 0, false };
        json_decref(a->seal_j);
        a->seal_j = NULL;
        free(a->seal_msg);
        a->seal_msg = NULL;
        a->nmade = 0;
        list_free(a->own);
        a->own = NULL;
        a->nseal_lost = 0; /* the parent's to tell */
        pthread_mutex_unlock(&a->fmu);
        list_free(atomic_exchange(&a->head, NULL));
        atomic_store(&a->queued, 0);
        a->thread_on = false;
        a->stop = false;
        a->wrote = false;
        if (a->fd >= 0)
            close(a->fd); /* never unlock: the lock is the parent's too */
        a->fd = -1;
        a->pid = (long)getpid();
        writer_start(a);
        atomic_thread_fence(memory_order_release);
        a->gen = kv_fork_generation();
    }
    pthread_mutex_unlock(&fork_mu);
}

/* ---- the hook --------------------------------------------------------------- */

static void deliver(struct kv_audit *a, const struct audit_ent *e)
{
    char t[48];

    if (a->fn) {
        kv_audit_record r = { sizeof(r), NULL, NULL, 0, NULL, NULL, NULL, KV_OK, NULL, NULL,
                              0, NULL };
        time_text(&e->ts, t);
        r.time = t;
        r.key = e->name;
        r.version = e->version;
        r.backend = e->backend;
        r.op = op_names[e->op];
        r.result = result_name(e->rc);
        r.rc = e->rc;
        r.message = e->message;
        r.detail = e->detail;
        r.pid = e->pid;
        r.exe = a->exe_text;
        /* the callback runs inside the caller's call: it sees none of the
         * call's OpenSSL errors (its own SSL_get_error would read them),
         * and what it leaves is dropped when the call returns */
        kv_ossl_drop();
        in_audit = true;
        a->fn(a->arg, &r);
        in_audit = false;
    }
    if (a->syslog_on) {
        struct tcache tc = { 0, "" };
        json_t *rec = ent_json(a, e, 0, NULL, &tc);
        char *text = rec ? dump(rec) : NULL;

        if (text)
            syslog(LOG_AUTHPRIV | (e->rc == KV_OK ? LOG_INFO : LOG_NOTICE),
                   "libkeyvault audit: %s", text);
        free(text);
        json_decref(rec);
    }
}

/* flush = record: a caller's record on the list of those being written
 * (struct kv_audit's own, under fmu), and off it, freed. */
static void own_add(struct kv_audit *a, struct audit_ent *e)
{
    pthread_mutex_lock(&a->fmu);
    e->next = a->own;
    a->own = e;
    pthread_mutex_unlock(&a->fmu);
}

static void own_free(struct kv_audit *a, struct audit_ent *e)
{
    pthread_mutex_lock(&a->fmu);
    for (struct audit_ent **p = &a->own; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    free(e);
    pthread_mutex_unlock(&a->fmu);
}

void kv_audit_event(kv_ctx *ctx, kv_audit_op op, const char *name, unsigned version,
                    const char *backend, kv_rc rc, const char *detail)
{
    struct kv_audit *a;
    struct audit_ent *e;
    size_t n;

    if (!ctx || !(a = ctx->audit) || in_audit || (unsigned)op > KV_AUDIT_PRUNE)
        return;
    if (a->gen != kv_fork_generation())
        after_fork(a);
    e = ent_new(a, op, name, version, backend, rc, detail,
                rc != KV_OK ? kv_errmsg(ctx) : NULL);
    if (!e) {
        syslog(LOG_AUTHPRIV | LOG_ERR, "libkeyvault audit: out of memory: a record is lost");
        return;
    }
    deliver(a, e);
    if (a->each && a->path) {
        /* the caller's record while it is written, kept where a child
         * forked meanwhile frees it (not during the callback: one that
         * forks goes on with e in the child) */
        own_add(a, e);
        file_write(a, e, false);
        own_free(a, e);
        return;
    }
    if (!a->path) {
        free(e);
        return;
    }
    e->next = atomic_load(&a->head);
    while (!atomic_compare_exchange_weak(&a->head, &e->next, e))
        ;
    n = atomic_fetch_add(&a->queued, 1) + 1;
    if (n >= KV_AUDIT_QUEUE_MAX || !a->thread_on) {
        /* the writer cannot keep up (or did not start): write here */
        file_write(a, NULL, false);
    } else if (n == KV_AUDIT_BATCH) {
        pthread_mutex_lock(&a->mu);
        pthread_cond_signal(&a->cv);
        pthread_mutex_unlock(&a->mu);
    }
}

/* ---- the context ------------------------------------------------------------ */

/* fork(): a child gets every writer's state whole (struct kv_audit's fmu).
 * No thread holding fmu calls fork, takes live_mu or waits for anything
 * but memory (the seal key, the file and syslog are called without it),
 * so these never wait long and never deadlock, whichever thread forks, and
 * fork() waits neither for the file's lock nor for its sync. */
static void audit_prepare(void)
{
    /* fork_mu too: a grandchild forked while a child's after_fork frees
     * what it inherited would otherwise free it again */
    pthread_mutex_lock(&fork_mu);
    pthread_mutex_lock(&live_mu);
    for (struct kv_audit *a = live; a; a = a->next)
        pthread_mutex_lock(&a->fmu);
}

static void audit_forked(void)
{
    for (struct kv_audit *a = live; a; a = a->next)
        pthread_mutex_unlock(&a->fmu);
    pthread_mutex_unlock(&live_mu);
    pthread_mutex_unlock(&fork_mu);
}

static void install_atfork(void)
{
    (void)pthread_atfork(audit_prepare, audit_forked, audit_forked);
}

static void live_add(struct kv_audit *a)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&live_mu);
    a->next = live;
    live = a;
    pthread_mutex_unlock(&live_mu);
}

static void live_remove(struct kv_audit *a)
{
    pthread_mutex_lock(&live_mu);
    for (struct kv_audit **p = &live; *p; p = &(*p)->next)
        if (*p == a) {
            *p = a->next;
            break;
        }
    pthread_mutex_unlock(&live_mu);
}

/* Free the state (whatever audit_new got to), the writer stopped. */
static void audit_release(struct kv_audit *a)
{
    kv_key_free(a->seal_key);
    if (a->fd >= 0)
        close(a->fd);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->wmu);
    pthread_mutex_destroy(&a->fmu);
    pthread_cond_destroy(&a->cv);
    EVP_MD_CTX_free(a->mdctx);
    json_decref(a->plain);
    free(a->made);
    free(a->path);
    free(a->seal_name);
    free(a);
}

static struct kv_audit *audit_new(kv_ctx *ctx)
{
    struct kv_audit *a = calloc(1, sizeof(*a));
    ssize_t n;

    if (!a)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->wmu, NULL);
    pthread_mutex_init(&a->fmu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->ctx = ctx;
    a->fd = -1;
    a->pid = (long)getpid();
    a->gen = kv_fork_generation();
    n = readlink("/proc/self/exe", a->exe_text, sizeof(a->exe_text) - 1);
    a->exe_text[n > 0 ? n : 0] = '\0';
    a->mdctx = EVP_MD_CTX_new();
    if (!a->mdctx) {
        audit_release(a);
        return NULL;
    }
    return a;
}

kv_rc kv_audit_setup(kv_ctx *ctx)
{
    const kv_config *cfg = ctx->cfg;
    const char *file = kv_config_get(cfg, "audit", "file");
    const char *seal = kv_config_get(cfg, "audit", "seal_key");
    const char *flush = kv_config_get(cfg, "audit", "flush");
    struct kv_audit *a = NULL;
    bool sys = false;
    long every = 0, ms = 0;
    kv_rc rc;

    KV_CHECK(rc, kv_config_get_bool(ctx, cfg, "audit", "syslog", false, &sys));
    KV_CHECK(rc, kv_config_get_long(ctx, cfg, "audit", "seal_every", KV_AUDIT_SEAL_EVERY, 2,
                                    1000000000L, &every));
    KV_CHECK(rc, kv_config_get_long(ctx, cfg, "audit", "flush_ms", KV_AUDIT_FLUSH_MS, 1, 60000,
                                    &ms));
    if (!file && (seal || flush || kv_config_get(cfg, "audit", "seal_every") ||
                  kv_config_get(cfg, "audit", "flush_ms")))
        KV_FAIL(ctx, rc, KV_ERR_CONFIG,
                "[audit] seal_key, seal_every, flush and flush_ms apply to the audit file: "
                "set [audit] file");
    if (flush && strcmp(flush, "record") && strcmp(flush, "buffered"))
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "[audit] flush must be 'record' or 'buffered'");
    if (seal && !kv_name_valid(seal))
        KV_FAIL(ctx, rc, KV_ERR_CONFIG,
                "[audit] seal_key must be a key name (1-64 of A-Z a-z 0-9 . _ -)");
    if (file && file[0] != '/')
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "[audit] file must be an absolute path");
    if (!file && !sys)
        return KV_OK;
    if (file) {
        struct stat st;
        KV_CHECK(rc, kv_db_file_check(ctx, file, "audit log", true));
        /* whoever can open the file can hold its lock, and writers wait */
        if (stat(file, &st) == 0 && (st.st_mode & 004))
            KV_FAIL(ctx, rc, KV_ERR_PERMISSION,
                    "audit log '%s' is readable by others (mode %04o): anyone who can open it "
                    "can hold its lock; chmod o-r", file, (unsigned)(st.st_mode & 07777));
    }
    if (!(a = audit_new(ctx)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    a->syslog_on = sys;
    a->each = flush && !strcmp(flush, "record");
    a->flush_ms = ms;
    a->seal_every = every;
    if ((file && !(a->path = kv_strdup(file))) || (seal && !(a->seal_name = kv_strdup(seal))))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    ctx->audit = a;
    a = NULL;
    live_add(ctx->audit);
    writer_start(ctx->audit);
out:
    if (a)
        audit_release(a);
    return rc;
}

void kv_audit_free(kv_ctx *ctx)
{
    struct kv_audit *a = ctx->audit;

    if (!a)
        return;
    if (a->gen != kv_fork_generation())
        after_fork(a);
    pthread_mutex_lock(&a->mu);
    a->stop = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (a->thread_on)
        pthread_join(a->thread, NULL);
    if (a->path)
        file_write(a, NULL, true);
    else
        list_free(atomic_exchange(&a->head, NULL));
    live_remove(a);
    ctx->audit = NULL;
    audit_release(a);
}

kv_rc kv_audit_set_callback(kv_ctx *ctx, kv_audit_fn fn, void *arg)
{
    struct kv_audit *a = ctx->audit;

    KV_CALL_BEGIN(ctx);
    if (!a && fn) {
        if (!(a = audit_new(ctx)))
            return kv_error(ctx, KV_ERR_NO_MEMORY, "out of memory");
        ctx->audit = a;
    }
    if (a) {
        a->fn = fn;
        a->arg = arg;
    }
    return KV_OK;
}

/* ---- verification ------------------------------------------------------------ */

struct vstate {
    kv_ctx *ctx;
    const char *path;
    EVP_PKEY *pub;
    char pub_sha256[HEX_HASH + 1];
    char prev[HEX_HASH + 1];
    json_int_t seq;
    kv_audit_report *rep;
    const kv_audit_anchor *anchors;
    size_t nanchors;
    bool *anchor_seen;
    FILE *f;                  /* the log, opened and checked once */
    off_t limit;              /* its size when verify began: nothing after it is read */
    uint64_t bad_at;          /* the bad record's line when not the one being read */
};

/* One line of f (its '\n' included) into buf: its length, 0 at the end of
 * the file, -1 when longer than max bytes (the rest is left unread). At
 * most `left` bytes are read. */
static ssize_t read_line(FILE *f, char *buf, size_t max, off_t left)
{
    size_t n = 0;
    int c;

    while ((off_t)n < left && (c = getc_unlocked(f)) != EOF) {
        if (n == max)
            return -1;
        buf[n++] = (char)c;
        if (c == '\n')
            break;
    }
    return (ssize_t)n;
}

/* The line of the record with seq `want` at or after byte `from` and
 * before the limit, or 0; read on the log verify opened (never the name
 * again: a FIFO swapped in would block), which is left where it was. */
static uint64_t find_seq(const struct vstate *v, off_t from, uint64_t line, json_int_t want)
{
    char *buf = malloc(KV_AUDIT_LINE_MAX);
    off_t was = ftello(v->f), at = from;
    ssize_t n;
    uint64_t found = 0;

    if (!buf || was < 0 || fseeko(v->f, from, SEEK_SET) != 0)
        goto out;
    while (!found && at < v->limit &&
           (n = read_line(v->f, buf, KV_AUDIT_LINE_MAX, v->limit - at)) > 0) {
        json_t *j = json_loadb(buf, (size_t)n, 0, NULL);
        at += n;
        line++;
        if (json_integer_value(json_object_get(j, "seq")) == want)
            found = line;
        json_decref(j);
    }
out:
    if (was >= 0 && fseeko(v->f, was, SEEK_SET) != 0)
        found = 0;
    free(buf);
    return found;
}

/* With the last bytes `tail` of s (len bytes) cut, as a JSON object's text:
 * s[0 .. len - taillen) + "}" in *out (allocated). */
static char *cut_member(const char *s, size_t len, const char *tail, size_t *outlen)
{
    size_t t = strlen(tail);
    char *o;

    if (len < t + 2 || memcmp(s + len - t, tail, t) != 0)
        return NULL;
    if (!(o = malloc(len - t + 2)))
        return NULL;
    memcpy(o, s, len - t);
    o[len - t] = '}';
    o[len - t + 1] = '\0';
    *outlen = len - t + 1;
    return o;
}

static kv_rc check_seal(struct vstate *v, uint64_t line, json_t *j, const char *body,
                        size_t bodylen)
{
    kv_ctx *ctx = v->ctx;
    const char *sig = json_string_value(json_object_get(j, "sig"));
    const char *fp = json_string_value(json_object_get(j, "key_sha256"));
    const char *algname = json_string_value(json_object_get(j, "alg"));
    int alg = algname ? kv_sign_alg_from_name(algname) : -1;
    const kv_alg_desc *a = alg > 0 ? kv_alg_desc_get((kv_sign_alg)alg) : NULL;
    unsigned char *raw = NULL, md[64];
    char *tail = NULL, *msg = NULL;
    size_t msglen = 0, siglen, rawlen, mdlen = 0;
    kv_rc rc = KV_OK;
    int dec;

    if (!sig || !fp || !a || !*sig)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": a seal without a usable sig, alg or "
                "key_sha256", v->path, line);
    if (!v->pub)
        return KV_OK;
    if (strcmp(fp, v->pub_sha256) != 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE,
                "audit log '%s', line %" PRIu64 ": sealed by another key (key_sha256 %.16s..., "
                "the given key's is %.16s...)", v->path, line, fp, v->pub_sha256);
    siglen = strlen(sig);
    if (!(tail = kv_asprintf(",\"sig\":\"%s\"}", sig)) ||
        !(raw = malloc(siglen / 4 * 3 + 3)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (!(msg = cut_member(body, bodylen, tail, &msglen)))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": the seal's sig is not its last member",
                v->path, line);
    dec = siglen % 4 == 0 ? EVP_DecodeBlock(raw, (const unsigned char *)sig, (int)siglen) : -1;
    if (dec <= 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": the seal's sig is not base64", v->path, line);
    rawlen = (size_t)dec - (sig[siglen - 1] == '=') - (siglen > 1 && sig[siglen - 2] == '=');
    if (a->family == KV_FAMILY_ED25519) {
        rc = kv_verify_pkey(NULL, ctx->libctx, v->pub, a, (unsigned char *)msg, msglen, raw,
                            rawlen);
    } else {
        KV_CHECK(rc, kv_digest(ctx, a, (unsigned char *)msg, msglen, md, &mdlen));
        /* recorded on no context: the message below names the line */
        rc = kv_verify_pkey(NULL, ctx->libctx, v->pub, a, md, mdlen, raw, rawlen);
    }
    if (rc != KV_OK)
        KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE,
                "audit log '%s', line %" PRIu64 ": the seal's %s signature does not verify with "
                "the given key (the seal or a record it covers was changed)", v->path, line,
                a->name);
out:
    free(tail);
    free(msg);
    free(raw);
    return rc;
}

static kv_rc check_line(struct vstate *v, uint64_t line, char *s, size_t len, off_t next)
{
    kv_ctx *ctx = v->ctx;
    json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *seqj = json_object_get(j, "seq");
    const char *hash = json_string_value(json_object_get(j, "hash"));
    const char *prev = json_string_value(json_object_get(j, "prev"));
    const char *op = json_string_value(json_object_get(j, "op"));
    char *tail = NULL, *body = NULL, h[HEX_HASH + 1];
    size_t bodylen = 0;
    json_int_t seq;
    kv_rc rc = KV_OK;

    if (!json_is_object(j) || !json_is_integer(seqj) || !hash || !prev || !op)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": not an audit record (JSON with seq, op, prev "
                "and hash)", v->path, line);
    seq = json_integer_value(seqj);
    if (strlen(hash) != HEX_HASH || !(tail = kv_asprintf(",\"hash\":\"%s\"}", hash)))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT, "audit log '%s', line %" PRIu64 ": a malformed hash",
                v->path, line);
    if (!(body = cut_member(s, len, tail, &bodylen)))
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": the hash is not the record's last member",
                v->path, line);
    if (!sha256_hex(body, bodylen, h))
        KV_FAIL(ctx, rc, KV_ERR_CRYPTO, "SHA-256 failed");
    if (strcmp(h, hash) != 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 " (seq %lld): the record does not match its "
                "hash (edited)", v->path, line, (long long)seq);
    if (seq != v->seq + 1) {
        uint64_t at = seq > v->seq + 1 ? find_seq(v, next, line, v->seq + 1) : 0;
        if (at)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "audit log '%s', line %" PRIu64 ": seq %lld where %lld was expected; "
                    "seq %lld is at line %" PRIu64 " (records reordered)", v->path, line,
                    (long long)seq, (long long)(v->seq + 1), (long long)(v->seq + 1), at);
        if (seq > v->seq + 1)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "audit log '%s', line %" PRIu64 ": seq %lld where %lld was expected: "
                    "records %lld to %lld are missing (deleted)", v->path, line,
                    (long long)seq, (long long)(v->seq + 1), (long long)(v->seq + 1),
                    (long long)(seq - 1));
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": seq %lld after seq %lld (records reordered "
                "or repeated)", v->path, line, (long long)seq, (long long)v->seq);
    }
    if (strcmp(prev, v->prev) != 0 && line == 1)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line 1: prev is not zero: the log does not start a chain",
                v->path);
    if (strcmp(prev, v->prev) != 0) {
        /* the record before was changed and given a hash that fits it (or this
         * one's prev with it): the earlier line is the first bad one */
        v->bad_at = line - 1;
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 " (seq %lld): replaced, with a hash that fits "
                "its new text: line %" PRIu64 "'s prev is not its hash (one of the two lines "
                "was changed)", v->path, line - 1, (long long)v->seq, line);
    }
    for (size_t i = 0; i < v->nanchors; i++) {
        const kv_audit_anchor *an = &v->anchors[i];
        if (an->seq != (uint64_t)seq)
            continue;
        if (strcmp(op, "seal") != 0 || strcmp(an->hash, hash) != 0)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "audit log '%s', line %" PRIu64 " (seq %lld): not the anchored seal "
                    "%" PRIu64 ":%.16s... (%s): the log was rewritten from before it", v->path,
                    line, (long long)seq, an->seq, an->hash,
                    strcmp(op, "seal") ? "not a seal" : "another hash");
        v->anchor_seen[i] = true;
    }
    if (!strcmp(op, "seal")) {
        KV_CHECK(rc, check_seal(v, line, j, body, bodylen));
        v->rep->seals++;
        v->rep->last_seal_line = line;
        v->rep->last_seal_seq = (uint64_t)seq;
        memcpy(v->rep->last_seal_hash, hash, HEX_HASH + 1);
        v->rep->unsealed = 0;
    } else {
        v->rep->unsealed++;
    }
    memcpy(v->prev, hash, HEX_HASH + 1);
    v->seq = seq;
    v->rep->records++;
out:
    json_decref(j);
    free(tail);
    free(body);
    return rc;
}

/* An anchor as the CLI or a caller gives it: seq 1 or more, 64 lower-case
 * hex digits. */
static bool anchor_valid(const kv_audit_anchor *an)
{
    if (an->seq == 0 || an->seq > INT64_MAX || strnlen(an->hash, HEX_HASH + 1) != HEX_HASH)
        return false;
    for (size_t i = 0; i < HEX_HASH; i++)
        if (!strchr("0123456789abcdef", an->hash[i]) || an->hash[i] == '\0')
            return false;
    return true;
}

kv_rc kv_audit_verify(kv_ctx *ctx, const char *path, const unsigned char *pub, size_t publen,
                      unsigned flags, const kv_audit_anchor *anchors, size_t nanchors,
                      kv_audit_report *rep)
{
    struct vstate v = { .ctx = ctx, .path = path, .rep = rep, .anchors = anchors,
                        .nanchors = anchors ? nanchors : 0 };
    unsigned char *spki = NULL;
    char *buf = malloc(KV_AUDIT_LINE_MAX);
    uint64_t line = 0;
    off_t limit, at = 0;
    struct stat st;
    FILE *f = NULL;
    ssize_t n;
    kv_rc rc = KV_OK;
    int len, err, fd = -1;

    KV_CALL_BEGIN(ctx);
    memset(rep, 0, sizeof(*rep));
    memset(v.prev, '0', HEX_HASH);
    if (!buf)
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (flags & ~KV_AUDIT_VERIFY_SEALED)
        KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG, "unknown flags 0x%x", flags);
    for (size_t i = 0; i < v.nanchors; i++)
        if (!anchor_valid(&anchors[i]))
            KV_FAIL(ctx, rc, KV_ERR_INVALID_ARG,
                    "anchor %zu: a seal's seq (1 or more) and its hash (64 lower-case hex "
                    "digits) expected", i + 1);
    if (v.nanchors && !(v.anchor_seen = calloc(v.nanchors, sizeof(bool))))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (pub) {
        KV_CHECK(rc, kv_pubkey_decode(ctx, pub, publen, &v.pub));
        if ((len = i2d_PUBKEY(v.pub, &spki)) <= 0 || !sha256_hex(spki, (size_t)len, v.pub_sha256))
            KV_FAIL_OSSL(ctx, rc, KV_ERR_CRYPTO, "cannot encode the public key");
    }
    /* never wait on a FIFO or a device */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot open audit log '%s'", path);
    if (!(f = fdopen(fd, "r")))
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot open audit log '%s'", path);
    fd = -1;
    if (fstat(fileno(f), &st) != 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot examine audit log '%s'", path);
    if (!S_ISREG(st.st_mode))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "audit log '%s' is not a regular file", path);
    /* what is there now: writers append whole batches under LOCK_EX */
    if ((err = lock_bounded(fileno(f), LOCK_SH, NULL)) == EWOULDBLOCK)
        KV_FAIL(ctx, rc, KV_ERR_IO,
                "audit log '%s': another process has held its lock (flock) for %d s; giving up",
                path, KV_AUDIT_LOCK_WAIT_MS / 1000);
    if (err != 0)
        KV_FAIL_ERRNO(ctx, rc, err, "cannot lock audit log '%s'", path);
    if (fstat(fileno(f), &st) != 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot examine audit log '%s'", path);
    (void)flock(fileno(f), LOCK_UN);
    limit = st.st_size;
    v.f = f;
    v.limit = limit;
    while (at < limit && (n = read_line(f, buf, KV_AUDIT_LINE_MAX, limit - at)) != 0) {
        line++;
        if (n < 0)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "audit log '%s', line %" PRIu64 ": longer than %d bytes", path, line,
                    KV_AUDIT_LINE_MAX);
        at += n;
        if (buf[n - 1] != '\n')
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "audit log '%s', line %" PRIu64 ": the log ends in a torn record after "
                    "seq %lld: a write was cut (truncated); the records before it verify",
                    path, line, (long long)v.seq);
        KV_CHECK(rc, check_line(&v, line, buf, (size_t)n - 1, at));
    }
    if (ferror(f))
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot read audit log '%s'", path);
    for (size_t i = 0; i < v.nanchors; i++) {
        if (v.anchor_seen[i])
            continue;
        line++; /* where the anchored seal would be */
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": the log ends at seq %lld, before the anchored "
                "seal %" PRIu64 ":%.16s... (records cut from its end)", path, line,
                (long long)v.seq, anchors[i].seq, anchors[i].hash);
    }
    /* an empty file is no exception: under a public key it proves nothing
     * (a sealed log emptied would pass), and it does not end with a seal */
    if (rep->records == 0)
        line = 1; /* where the first record would be */
    if (pub && rep->records == 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE,
                "audit log '%s' holds no record: no seal to check the key against", path);
    if (pub && rep->seals == 0)
        KV_FAIL(ctx, rc, KV_ERR_BAD_SIGNATURE,
                "audit log '%s': no seal in %" PRIu64 " records: nothing to check the key against",
                path, rep->records);
    if ((flags & KV_AUDIT_VERIFY_SEALED) && rep->records == 0)
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s' holds no record: the log does not end with a seal", path);
    if ((flags & KV_AUDIT_VERIFY_SEALED) && rep->unsealed > 0) {
        uint64_t last = line;
        line = last - rep->unsealed + 1; /* the first record no seal covers */
        KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                "audit log '%s', line %" PRIu64 ": the last %" PRIu64 " records (lines %" PRIu64
                " to %" PRIu64 ") follow the last seal: the log does not end with a seal", path,
                line, rep->unsealed, line, last);
    }
    line = 0;
out:
    if (rc != KV_OK)
        rep->bad_line = v.bad_at ? v.bad_at : line;
    if (fd >= 0)
        close(fd);
    if (f)
        fclose(f);
    free(buf);
    free(v.anchor_seen);
    OPENSSL_free(spki);
    EVP_PKEY_free(v.pub);
    return rc;
}

kv_rc kv_audit_tail(kv_ctx *ctx, const char *path, size_t count, char **out)
{
    const char *p = path ? path : kv_config_get(ctx->cfg, "audit", "file");
    char *buf = NULL;
    size_t lines = 0, len = 0;
    off_t size, from, stop, window, after = -1;
    bool capped;
    struct stat st;
    int fd = -1;
    kv_rc rc = KV_OK;

    KV_CALL_BEGIN(ctx);
    *out = NULL;
    if (!p)
        KV_FAIL(ctx, rc, KV_ERR_CONFIG, "no audit log: give a file or set [audit] file");
    if ((fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot open audit log '%s'", p);
    if (fstat(fd, &st) != 0)
        KV_FAIL_ERRNO(ctx, rc, errno, "cannot examine audit log '%s'", p);
    if (!S_ISREG(st.st_mode))
        KV_FAIL(ctx, rc, KV_ERR_BAD_INPUT, "audit log '%s' is not a regular file", p);
    size = st.st_size;
    /* count lines of a record's most bytes each, and at most KV_AUDIT_TAIL_MAX */
    capped = count > (size_t)(KV_AUDIT_TAIL_MAX / KV_AUDIT_LINE_MAX);
    window = capped ? KV_AUDIT_TAIL_MAX : (off_t)count * KV_AUDIT_LINE_MAX;
    stop = size > window ? size - window : 0;
    /* back from the end, a block at a time, to the start of the count-th last line */
    for (from = size; from > stop && lines < count;) {
        off_t b = from - stop > KV_AUDIT_TAIL_READ ? from - KV_AUDIT_TAIL_READ : stop;
        char blk[KV_AUDIT_TAIL_READ];
        ssize_t r = pread(fd, blk, (size_t)(from - b), b);
        if (r != from - b)
            KV_FAIL_ERRNO(ctx, rc, r < 0 ? errno : EIO, "cannot read audit log '%s'", p);
        for (ssize_t i = r - 1; i >= 0; i--)
            if (blk[i] == '\n' && b + i + 1 < size) {
                after = b + i + 1;
                if (++lines >= count)
                    break;
            }
        from = lines < count ? b : after;
    }
    if (lines < count && from > 0) {
        /* the window ran out before the start of the file: a line longer
         * than a record can be, or (count over KV_AUDIT_TAIL_MAX / line
         * max) as many lines as fit */
        if (after < 0 || !capped)
            KV_FAIL(ctx, rc, KV_ERR_CORRUPT,
                    "audit log '%s': fewer than %zu lines in its last %lld bytes: a line "
                    "longer than a record (%d bytes) is no audit record", p, count,
                    (long long)window, KV_AUDIT_LINE_MAX);
        from = after;
    }
    len = (size_t)(size - from);
    if (!(buf = malloc(len + 1)))
        KV_FAIL(ctx, rc, KV_ERR_NO_MEMORY, "out of memory");
    if (pread(fd, buf, len, from) != (ssize_t)len)
        KV_FAIL_ERRNO(ctx, rc, errno ? errno : EIO, "cannot read audit log '%s'", p);
    /* complete lines only: a writer may be inside its write */
    while (len > 0 && buf[len - 1] != '\n')
        len--;
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}
